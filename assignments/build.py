"""Build every chapter's autograded assignment and check that its tests can fail.

``python -m assignments [--out _build/assignments] [--end-to-end 03_beta_vae]
[book/NN_name.ipynb ...]``

For each chapter with graded exercises it writes an otter master notebook and runs
otter assign (student notebook without solutions and hidden tests, autograder bundle).
Then it executes two notebooks per chapter and runs otter's own test files on them:

* the solution notebook (``autograder/``): every test of every question must pass;
* the unanswered student notebook (``student/``): every hidden test must fail.

It checks that no hidden test and no solution line reached the student folder, and
grades one chapter end to end as an instructor would, with ``otter run`` and the
autograder zip on the student's and the solution notebook (a kernel each), which must
agree with the in-process results. The last line printed is a JSON object with the
counts of these checks.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat

from . import generate

ROOT = Path(__file__).resolve().parent.parent


def otter_bin() -> str:
    """The otter command of the running interpreter's environment."""
    exe = Path(sys.executable).parent / "otter"
    return str(exe) if exe.exists() else "otter"


def assign_chapter(chapter: Path, out: Path) -> tuple[Path, list[generate.Question]]:
    """Write the master notebook of ``chapter`` and run otter assign into ``out/<stem>``."""
    qs = generate.questions(chapter)
    name = chapter.stem
    dest = out / name
    if dest.exists():
        shutil.rmtree(dest)
    master_dir = out / "_masters"
    master_dir.mkdir(parents=True, exist_ok=True)
    master = master_dir / f"{name}.ipynb"
    nb = generate.master_notebook(
        name, generate.chapter_title(chapter), qs, f"book/{chapter.name}"
    )
    nbformat.write(nb, master)
    from otter.assign import main as otter_assign  # changes directory: not thread-safe

    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        otter_assign(str(master), str(dest), no_run_tests=True, no_pdfs=True)
    return dest, qs


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("PHBOOK_PROFILE", "quick")
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
        )
    return r


def autograder_zip(dest: Path) -> Path:
    """The autograder bundle otter assign wrote for one chapter."""
    zips = sorted((dest / "autograder").glob("*-autograder_*.zip"))
    if not zips:
        raise FileNotFoundError(f"no autograder zip in {dest / 'autograder'}")
    return zips[-1]


def grade(
    notebook: Path, zip_path: Path, workdir: Path
) -> dict[str, dict[str, list[bool]]]:
    """Grade ``notebook`` with ``otter run``: per question, the pass flags of its
    public and hidden test cases."""
    workdir.mkdir(parents=True, exist_ok=True)
    sub = workdir / notebook.name
    shutil.copy(notebook, sub)
    _run(  # -p writes results.pkl (per test case) into the working directory
        [
            otter_bin(),
            "run",
            "--no-logo",
            "-p",
            "-a",
            str(zip_path.resolve()),
            "-o",
            str(workdir.resolve()),
            str(sub.resolve()),
        ],
        cwd=workdir,
    )
    import dill  # otter's own pickler: results.pkl holds otter.test_files.GradingResults

    with open(workdir / "results.pkl", "rb") as f:
        results = dill.load(f)
    out: dict[str, dict[str, list[bool]]] = {}
    for q, test_file in results.results.items():
        flags: dict[str, list[bool]] = {"public": [], "hidden": []}
        for case in test_file.test_case_results:
            kind = "hidden" if case.test_case.hidden else "public"
            flags[kind].append(bool(case.passed))
        out[q] = flags
    return out


def leaks(dest: Path, qs: list[generate.Question]) -> list[str]:
    """Hidden tests or solution lines found anywhere in the student folder."""
    text = "\n".join(
        p.read_text(errors="ignore") for p in (dest / "student").rglob("*") if p.is_file()
    )
    found = []
    for q in qs:
        for t in q.hidden:
            lines = [
                ln.strip() for ln in t.splitlines() if ln.strip() and "import" not in ln
            ]
            if lines and all(ln in text for ln in lines):
                found.append(f"{q.name}: hidden test")
        for ln in generate.solution_lines(q.solution):
            if ln in text:
                found.append(f"{q.name}: solution line {ln!r}")
    return found


def execute(notebook: Path) -> dict:
    """Run the code cells of ``notebook`` in a fresh namespace, as a kernel would (IPython
    syntax translated; a failing cell does not stop the rest, as in otter's grading).
    ``grader.check`` cells are skipped: the checks run otter's test files directly."""
    from IPython.core.inputtransformer2 import TransformerManager

    tm = TransformerManager()
    nb = nbformat.read(notebook, as_version=4)
    ns: dict = {"__name__": "__main__"}
    cwd = os.getcwd()
    for cell in nb.cells:
        if cell.cell_type != "code" or cell.source.lstrip().startswith("grader."):
            continue
        try:
            os.chdir(notebook.parent)
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(tm.transform_cell(cell.source), str(notebook), "exec"), ns)
        except Exception:  # noqa: BLE001 - an unanswered question may raise
            pass
        finally:
            os.chdir(cwd)
    return ns


def run_tests(ns: dict, tests_dir: Path) -> dict[str, dict[str, list[bool]]]:
    """Otter's test files of ``tests_dir`` run on the namespace ``ns``: per question,
    the pass flags of its public and hidden test cases."""
    from otter.test_files import OKTestFile

    out = {}
    for path in sorted(tests_dir.glob("*.py")):
        tf = OKTestFile.from_file(str(path))
        with contextlib.redirect_stdout(io.StringIO()):
            tf.run(ns)
        flags: dict[str, list[bool]] = {"public": [], "hidden": []}
        for case in tf.test_case_results:
            flags["hidden" if case.test_case.hidden else "public"].append(bool(case.passed))
        out[path.stem] = flags
    return out


def tally(name: str, qs: list[generate.Question], sol: dict, blank: dict) -> list[dict]:
    """One row per question: test counts and the two checks."""
    rows = []
    for q in qs:
        s, b = sol.get(q.name), blank.get(q.name)
        rows.append(
            {
                "chapter": name,
                "question": q.name,
                "public": len(q.public),
                "hidden": len(q.hidden),
                "pass_on_solution": s is not None
                and len(s["public"]) == len(q.public)
                and len(s["hidden"]) == len(q.hidden)
                and all(s["public"] + s["hidden"]),
                # every hidden test fails on the unanswered notebook
                "fail_on_blank": b is not None
                and len(b["hidden"]) == len(q.hidden)
                and not any(b["hidden"]),
            }
        )
    return rows


def check_chapter(dest: Path, qs: list[generate.Question]) -> dict:
    """Run the solution and the blank student notebook against every test."""
    t0 = time.perf_counter()
    name = dest.name
    tests = dest / "autograder" / "tests"
    sol = run_tests(execute(dest / "autograder" / f"{name}.ipynb"), tests)
    blank = run_tests(execute(dest / "student" / f"{name}.ipynb"), tests)
    return {
        "chapter": name,
        "rows": tally(name, qs, sol, blank),
        "flags": {"solution": sol, "blank": blank},
        "leaks": leaks(dest, qs),
        "seconds": time.perf_counter() - t0,
    }


def end_to_end(dest: Path, expected: dict) -> bool:
    """Grade the student's and the solution notebook of one chapter with ``otter run``
    and its autograder zip; True when otter agrees with the in-process checks."""
    z = autograder_zip(dest)
    work = dest.parent / "_checks" / dest.name
    shutil.rmtree(work, ignore_errors=True)
    jobs = {
        "blank": dest / "student" / f"{dest.name}.ipynb",
        "solution": dest / "autograder" / f"{dest.name}.ipynb",
    }
    with ThreadPoolExecutor(2) as pool:
        got = dict(
            zip(jobs, pool.map(lambda k: grade(jobs[k], z, work / k), jobs), strict=True)
        )
    shutil.rmtree(work.parent, ignore_errors=True)
    return got == expected


README = """# Autograded assignments

Built by `make assignments` from the book's chapters: every chapter's graded exercises
(an `{{exercise}}` with its `{{solution}}` code and tagged test cells) become one
[otter-grader](https://otter-grader.readthedocs.io) assignment. The exercises, their
solutions and their tests live in the chapter notebooks, so the book and the
assignments cannot drift apart.

| chapter | questions | public tests | hidden tests |
|---|---|---|---|
{table}

Each `<chapter>/` folder holds

- `student/`: what to hand out, the notebook `<chapter>.ipynb` and its `tests/` folder
  of public tests (`grader.check("question")` runs them). Solutions and hidden tests
  are **removed**, not hidden. It runs on a CPU in seconds. Its first cell installs
  `phbook` and `otter-grader` when they are missing, so it also runs in Colab: upload
  the `tests/` folder beside the notebook (Colab's *Files* pane) first.
- `autograder/<chapter>.ipynb`: the solution notebook;
  `autograder/<chapter>-autograder_*.zip`: the autograder bundle with every test,
  hidden ones included.

## Grade locally (one command)

Collect the submitted notebooks in a folder and run, for each of them:

    otter run -a {example}/autograder/{example}-autograder_*.zip -o results/ \\
        submission.ipynb

(`results/results.json` holds the score of every test case). With Docker installed,
`otter grade -a <zip> -p submissions/ -o results/` grades a whole folder (zip or
notebook files) at once and writes `final_grades.csv`.

## Upload to a learning platform

- **Gradescope**: create a *Programming Assignment* and upload the autograder zip as
  its autograder ("Zip file upload"); students submit their `.ipynb`.
- **Canvas, Moodle or any LMS**: collect the notebooks as file submissions, grade them
  with `otter grade` (above) and import `final_grades.csv` into the gradebook.
- **Colab**: share the student notebook; it installs what it needs in its first cell.

Rebuild after editing a chapter: `make assignments` (it also re-checks that every
solution passes all its tests and that the unanswered notebook fails every hidden test).
"""


def write_readme(out: Path, tallies: list[dict]) -> Path:
    """The instructor's README of the whole assignment build."""
    lines = []
    for t in tallies:
        rows = t["rows"]
        lines.append(
            f"| {t['chapter']} | {len(rows)} | {sum(r['public'] for r in rows)} | "
            f"{sum(r['hidden'] for r in rows)} |"
        )
    example = tallies[0]["chapter"] if tallies else "03_beta_vae"
    path = out / "README.md"
    path.write_text(README.format(table="\n".join(lines), example=example))
    return path


def chapters(book: Path = ROOT / "book") -> list[Path]:
    """The chapter notebooks that hold graded exercises."""
    return [p for p in sorted(book.glob("[0-9]*.ipynb")) if generate.questions(p)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m assignments", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "chapters", nargs="*", type=Path, help="chapter notebooks (default: all graded)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "assignments")
    parser.add_argument(
        "--end-to-end",
        default="03_beta_vae",
        help="chapter graded with otter run and its autograder zip (default 03_beta_vae)",
    )
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    todo = args.chapters or chapters()
    args.out.mkdir(parents=True, exist_ok=True)
    built = [assign_chapter(c, args.out) for c in todo]
    tallies = [check_chapter(dest, qs) for dest, qs in built]
    write_readme(args.out, tallies)
    e2e = args.end_to_end if args.end_to_end in [t["chapter"] for t in tallies] else None
    e2e = e2e or tallies[0]["chapter"]
    (t_e2e,) = [t for t in tallies if t["chapter"] == e2e]
    e2e_ok = end_to_end(args.out / e2e, t_e2e["flags"])
    print(
        f"otter run on {e2e} (student and solution notebooks): "
        f"{'agrees' if e2e_ok else 'DISAGREES'} with the checks"
    )
    rows = [r for t in tallies for r in t["rows"]]
    print(
        f"{'question':<28} {'public':>6} {'hidden':>6}  fails on blank  passes on solution"
    )
    for r in rows:
        print(
            f"{r['question']:<28} {r['public']:>6} {r['hidden']:>6}  "
            f"{'yes' if r['fail_on_blank'] else 'NO':<14}  "
            f"{'yes' if r['pass_on_solution'] else 'NO'}"
        )
    leaked = [f"{t['chapter']}: {x}" for t in tallies for x in t["leaks"]]
    for x in leaked:
        print("LEAK", x)
    summary = {
        "chapters": len(tallies),
        "questions": len(rows),
        "public_tests": sum(r["public"] for r in rows),
        "hidden_tests": sum(r["hidden"] for r in rows),
        "fail_on_blank": sum(r["fail_on_blank"] for r in rows),
        "pass_on_solution": sum(r["pass_on_solution"] for r in rows),
        "leaks": len(leaked),
        "end_to_end": e2e if e2e_ok else None,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    ok = (
        summary["fail_on_blank"] == summary["pass_on_solution"] == len(rows)
        and not leaked
        and e2e_ok
        and all(len(t["rows"]) >= 2 for t in tallies)
    )
    print(f"wrote {args.out}/<chapter>/student, autograder and {args.out}/README.md")
    print(json.dumps(summary))
    return 0 if ok else 1
