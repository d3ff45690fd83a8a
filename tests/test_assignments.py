"""The assignment generator: markup parsing, otter master notebooks, and every graded
question's tests (pass on the reference solution, fail on the unanswered stub)."""

import re
from pathlib import Path

import nbformat
import pytest

from assignments import generate

BOOK = Path(__file__).resolve().parent.parent / "book"
CHAPTERS = sorted(p for p in BOOK.glob("[0-9]*.ipynb") if not p.name.startswith("00"))


def _blank(solution: str) -> str:
    """What otter assign leaves for the student: the answer replaced by ``...``."""
    return re.sub(
        r"( *)# BEGIN SOLUTION\n.*?# END SOLUTION", r"\1...", solution, flags=re.S
    )


def _passes(code: str, namespace: dict) -> bool:
    try:
        exec(compile(code, "<test>", "exec"), dict(namespace))
    except Exception:
        return False
    return True


def _notebook(md: str, tests: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(md)] + [
        nbformat.v4.new_code_cell(src, metadata={"tags": ["remove-cell", tag]})
        for tag, src in tests
    ]
    return nb


MD = """```{exercise} Double it
:label: t-q-double

Write `double(x)`, see {eq}`t-eq`.
```

````{solution} t-q-double
:class: dropdown

```python
def double(x):
    # BEGIN SOLUTION
    return 2 * x
    # END SOLUTION
```
````"""


def test_markup_is_parsed(tmp_path):
    path = tmp_path / "01_t.ipynb"
    nbformat.write(
        _notebook(
            MD,
            [
                ("tests-public", "assert double(1) == 2"),
                ("tests-hidden", "assert double(-3) == -6"),
            ],
        ),
        path,
    )
    (q,) = generate.questions(path)
    assert (q.label, q.name, q.title) == ("t-q-double", "t_q_double", "Double it")
    assert q.public == ["assert double(1) == 2"] and q.hidden == ["assert double(-3) == -6"]
    assert "return 2 * x" in q.solution and q.points == 2
    assert generate.solution_lines(q.solution) == ["return 2 * x"]
    assert "`t-eq` (in the chapter)" in generate.plain_markdown(q.prompt)
    master = generate.master_notebook("01_t", "1 T", [q], "book/01_t.ipynb")
    raw = [c.source for c in master.cells if c.cell_type == "raw"]
    assert raw[0].startswith("# ASSIGNMENT CONFIG") and "name: 01_t" in raw[0]
    assert "# BEGIN QUESTION\nname: t_q_double\npoints: 2" in raw
    code = [c.source for c in master.cells if c.cell_type == "code"]
    assert "# HIDDEN\nassert double(-3) == -6" in code


def test_ungraded_solution_is_ignored_and_missing_hidden_test_is_an_error(tmp_path):
    path = tmp_path / "01_t.ipynb"
    nbformat.write(
        _notebook(
            MD.replace("# BEGIN SOLUTION\n", "").replace("    # END SOLUTION\n", ""), []
        ),
        path,
    )
    assert generate.questions(path) == []
    nbformat.write(_notebook(MD, [("tests-public", "assert double(1) == 2")]), path)
    with pytest.raises(generate.MarkupError, match="t-q-double has no hidden test"):
        generate.questions(path)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_questions_pass_on_solution_and_fail_blank(chapter):
    qs = generate.questions(chapter)
    assert len(qs) >= 2, f"{chapter.name}: fewer than two graded questions"
    for q in qs:
        assert q.public and q.hidden, q.label
        solved: dict = {}
        exec(compile(q.solution, q.label, "exec"), solved)
        for test in q.public + q.hidden:
            assert _passes(test, solved), f"{q.label}: a test fails on the solution"
        blank: dict = {}
        exec(compile(_blank(q.solution), q.label, "exec"), blank)
        for test in q.hidden:
            assert not _passes(test, blank), f"{q.label}: a hidden test passes on the blank"


def test_build_catches_a_test_that_cannot_fail(tmp_path):
    """otter assign on a small chapter: the good question passes both checks; a hidden
    test that also passes on the blank is caught; nothing hidden reaches student/."""
    from assignments import build

    bad = MD.replace("t-q-double", "t-q-weak").replace("Double it", "Weak")
    nb = _notebook(
        MD,
        [
            ("tests-public", "assert double(1) == 2"),
            ("tests-hidden", "assert double(-3) == -6"),
        ],
    )
    nb.cells += _notebook(bad, [("tests-hidden", "assert True")]).cells
    chapter = tmp_path / "01_t.ipynb"
    nbformat.write(nb, chapter)
    dest, qs = build.assign_chapter(chapter, tmp_path / "out")
    result = build.check_chapter(dest, qs)
    rows = {r["question"]: r for r in result["rows"]}
    assert rows["t_q_double"]["pass_on_solution"] and rows["t_q_double"]["fail_on_blank"]
    assert rows["t_q_weak"]["pass_on_solution"] and not rows["t_q_weak"]["fail_on_blank"]
    assert result["leaks"] == []
    student = (dest / "student" / "01_t.ipynb").read_text()
    assert "return 2 * x" not in student and "double(-3)" not in student
    assert (dest / "student" / "tests" / "t_q_double.py").exists()
    assert list((dest / "autograder").glob("01_t-autograder_*.zip"))
