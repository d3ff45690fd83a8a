"""Output hygiene of the executed chapters, checked while nbval runs them.

nbval executes every code cell of a chapter (``make notebooks``). After each
cell, the hook below reads the outputs nbval collected and fails the cell when
a reader would see something broken: anything written to stderr (warnings,
progress bars left on), a traceback, raw ``$...$`` maths or ``{cite}`` roles
in text output, or the bare ``repr`` of an object (``<Figure size ...>``,
``PHBenchmark(...)``, ``<... object at 0x...>``). Cells tagged ``remove-cell``
or ``remove-output`` are not shown to readers and are not checked. No second
execution is needed.
"""

from __future__ import annotations

import re

import pytest

HIDDEN_TAGS = {"remove-cell", "remove-output"}
REPR_PATTERNS = [
    re.compile(r"<Figure size"),
    re.compile(r"<(matplotlib|mpl_toolkits)[.\w]*"),
    re.compile(r"<Axes[\w:]*[:(]"),
    re.compile(r"\bobject at 0x[0-9a-f]+"),
    re.compile(r"^\s*\[?<[A-Za-z_][\w.]*\b[^>]*>\]?\s*$", re.S),
    # a dataclass repr: PHBenchmark(x_train=...
    re.compile(r"^\s*[A-Z]\w*\((\w+=)", re.S),
]
MATH = re.compile(r"(?<![\\\w])\$[^$\n]+\$")
CITE = re.compile(r"\{cite[:a-z]*\}")
WARNING = re.compile(r"\b\w*Warning\b:")


def problems(outputs) -> list[str]:
    """What a reader would see wrong in one cell's outputs (none: [])."""
    found = []
    for out in outputs or []:
        kind = out.get("output_type")
        if kind == "error":
            found.append(
                f"a traceback ({out.get('ename')}: {out.get('evalue')})"
            )
        elif kind == "stream":
            text = out.get("text", "")
            if out.get("name") == "stderr" and text.strip():
                found.append(f"stderr output: {text.strip()[:200]!r}")
            else:
                found += _text_problems(text, "printed text")
        elif kind in ("display_data", "execute_result"):
            data = out.get("data", {})
            plain = data.get("text/plain", "")
            if isinstance(plain, list):
                plain = "".join(plain)
            rich = set(data) - {"text/plain"}
            if "text/markdown" in data:
                md = data["text/markdown"]
                md = "".join(md) if isinstance(md, list) else md
                if CITE.search(md):
                    found.append(
                        f"a raw {{cite}} role in Markdown output: {md[:120]!r}"
                    )
            if not rich:
                for pattern in REPR_PATTERNS:
                    if pattern.search(plain):
                        found.append(
                            f"an object repr, not content: {plain[:120]!r}"
                        )
                        break
                found += _text_problems(plain, "text output")
    return found


def _text_problems(text: str, where: str) -> list[str]:
    found = []
    if WARNING.search(text):
        found.append(f"a warning in {where}: {text.strip()[:200]!r}")
    if MATH.search(text):
        found.append(
            f"raw $...$ maths in {where}: {MATH.search(text).group(0)!r}"
        )
    if CITE.search(text):
        found.append(f"a raw {{cite}} role in {where}")
    return found


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.when != "call" or report.outcome != "passed":
        return
    cell = getattr(item, "cell", None)
    outputs = getattr(item, "test_outputs", None)
    if cell is None or outputs is None:
        return
    tags = set(cell.get("metadata", {}).get("tags", []))
    if tags & HIDDEN_TAGS:
        return
    if cell.get("source", "").rstrip().endswith(";"):
        # IPython hides a result whose line ends with ";". nbval runs
        # cells without storing history, which defeats that check; the build
        # hides it.
        outputs = [
            o for o in outputs if o.get("output_type") != "execute_result"
        ]
    found = problems(outputs)
    if found:
        report.outcome = "failed"
        report.longrepr = (
            f"{item.name}: output a reader would see is not clean:\n- "
            + "\n- ".join(found)
            + "\n\nCell source:\n"
            + cell.get("source", "")
        )
