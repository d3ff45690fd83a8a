"""Read the graded exercises of a chapter and write an otter-grader master notebook.

Markup in a chapter (see CONTRIBUTING.md): one markdown cell holds the exercise and
its solution, the solution's code in a ``python`` fence with otter's
``# BEGIN SOLUTION`` / ``# END SOLUTION`` around the answer::

    ```{exercise} Title
    :label: vae-q-kl
    ...
    ```

    ````{solution} vae-q-kl
    :class: dropdown

    ```python
    def kl_gaussian(mu, logvar):
        # BEGIN SOLUTION
        ...
        # END SOLUTION
    ```
    ````

It is followed by one code cell per test case, tagged ``tests-public`` or
``tests-hidden`` (plus ``remove-cell``, ``nbval-skip`` and ``skip-execution``: the book
neither shows nor runs them; the solution they call is not executed by the book). The book shows the solution in a dropdown (``make student`` drops it);
otter assign removes the solutions and the hidden tests from the student notebook.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

SOLUTION_TAG = "solution"
PUBLIC_TAG = "tests-public"
HIDDEN_TAG = "tests-hidden"

_EXERCISE = re.compile(
    r"```\{exercise\}\s*(?P<title>[^\n]*)\n(?P<opts>(?::[^\n]*\n)*)(?P<body>.*?)\n```",
    re.S,
)
_LABEL = re.compile(r":label:\s*(\S+)")
_SOLUTION = re.compile(
    r"````\{solution\}\s*(?P<label>\S+)\n(?::[^\n]*\n)*\s*```python\n(?P<code>.*?)\n```\s*\n````",
    re.S,
)
_ROLE = re.compile(r"\{(?:eq|doc|ref|numref|func|class|mod|meth|attr|cite)\}`([^`]*)`")


class MarkupError(ValueError):
    """A graded exercise whose markup is incomplete (names the notebook and label)."""


@dataclass
class Question:
    """One graded exercise: prompt, reference solution and test cases."""

    label: str
    title: str
    prompt: str
    solution: str
    public: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The otter question name: the label as a Python identifier."""
        return re.sub(r"\W", "_", self.label)

    @property
    def points(self) -> int:
        """One point per test case."""
        return len(self.public) + len(self.hidden)


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _exercises(nb) -> dict[str, tuple[str, str]]:
    """All ``{exercise}`` blocks of a notebook: label -> (title, body)."""
    found = {}
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for m in _EXERCISE.finditer(cell.source):
            label = _LABEL.search(m.group("opts"))
            if label:
                found[label.group(1)] = (m.group("title").strip(), m.group("body").strip())
    return found


def questions(path: str | Path) -> list[Question]:
    """The graded exercises of the chapter notebook ``path``, in order."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    exercises = _exercises(nb)
    out: list[Question] = []
    cells = nb.cells
    for i, cell in enumerate(cells):
        if cell.cell_type != "markdown":
            continue
        graded = [
            m
            for m in _SOLUTION.finditer(cell.source)
            if "# BEGIN SOLUTION" in m.group("code")
        ]
        if len(graded) > 1:
            raise MarkupError(
                f"{path}: one graded solution per markdown cell, found {len(graded)}"
            )
        if not graded:
            continue
        label, code = graded[0].group("label"), graded[0].group("code")
        if label not in exercises:
            raise MarkupError(f"{path}: solution of unknown exercise label {label!r}")
        public, hidden = [], []
        for test in cells[i + 1 :]:
            tags = _tags(test)
            if test.cell_type != "code" or not ({PUBLIC_TAG, HIDDEN_TAG} & set(tags)):
                break
            (hidden if HIDDEN_TAG in tags else public).append(test.source)
        if not hidden:
            raise MarkupError(f"{path}: graded exercise {label} has no hidden test")
        title, body = exercises[label]
        out.append(Question(label, title, body, code, public, hidden))
    return out


def plain_markdown(text: str) -> str:
    """MyST roles as plain Markdown that Jupyter and Colab render."""
    return _ROLE.sub(lambda m: f"`{m.group(1)}` (in the chapter)", text)


def chapter_title(path: str | Path) -> str:
    """The ``# N Title`` heading of a chapter, without the hashes."""
    nb = nbformat.read(Path(path), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", cell.source, re.M)
            if m:
                return m.group(1).strip()
    return Path(path).stem


SETUP = """\
# Setup: install phbook and otter-grader if missing (Colab), then seed and device.
try:
    import otter
    import phbook
except ImportError:
    %pip install -q otter-grader "phbook[lensing] @ git+https://github.com/phbook/phbook"
    import otter
    import phbook
session = phbook.setup(seed=0, quiet=True)
import numpy as np
import torch
grader = otter.Notebook("{name}.ipynb")"""


def _raw(text: str):
    return nbformat.v4.new_raw_cell(text)


def master_notebook(
    name: str, title: str, qs: list[Question], source: str
) -> nbformat.NotebookNode:
    """An otter-assign master notebook for one chapter's graded questions."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    cells = [
        _raw(
            "# ASSIGNMENT CONFIG\n"
            f"name: {name}\n"
            "init_cell: false\n"
            "check_all_cell: true\n"
            "export_cell: false\n"
            "run_tests: false\n"
            "solutions_pdf: false\n"
            "tests:\n"
            "  files: true\n"
            "generate:\n"
            "  pdf: false\n"
            "  show_stdout: true\n"
        ),
        nbformat.v4.new_markdown_cell(
            f"# Assignment: {title}\n\n"
            f"Graded questions from the chapter *{title}* of *Unsupervised anomaly "
            f"detection in astronomical images* (`{source}`). Fill in each `...`, then "
            "run the check cell below it: `grader.check(...)` runs the public tests. "
            "Your grade also uses hidden tests, so a passing check is necessary, not "
            "sufficient. Every question runs in a few seconds on a CPU."
        ),
        nbformat.v4.new_code_cell(SETUP.format(name=name)),
    ]
    for k, q in enumerate(qs, 1):
        cells.append(_raw(f"# BEGIN QUESTION\nname: {q.name}\npoints: {q.points}"))
        cells.append(
            nbformat.v4.new_markdown_cell(
                f"## Question {k}: {q.title}\n\n{plain_markdown(q.prompt)}"
            )
        )
        cells.append(_raw("# BEGIN SOLUTION"))
        cells.append(nbformat.v4.new_code_cell(q.solution))
        cells.append(_raw("# END SOLUTION"))
        cells.append(_raw("# BEGIN TESTS"))
        for t in q.public:
            cells.append(nbformat.v4.new_code_cell(t))
        for t in q.hidden:
            cells.append(nbformat.v4.new_code_cell("# HIDDEN\n" + t))
        cells.append(_raw("# END TESTS"))
        cells.append(_raw("# END QUESTION"))
    nb.cells = cells
    return nb


def solution_lines(source: str) -> list[str]:
    """The stripped code lines between ``# BEGIN SOLUTION`` and ``# END SOLUTION``
    that a student notebook must not contain."""
    out, inside = [], False
    for line in source.splitlines():
        s = line.strip()
        if s.startswith("# BEGIN SOLUTION"):
            inside = True
        elif s.startswith("# END SOLUTION"):
            inside = False
        elif inside and s and s not in ("...",):
            out.append(s)
    return out
