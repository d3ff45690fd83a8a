"""Fast checks of the book's sources (the full check is the no-execution build)."""

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent

#: The first cell of every chapter. The install URL is the one place the repository is
#: named, ``repository.url`` in ``_config.yml`` (also the book's repository button);
#: ``python tests/test_book.py`` rewrites every chapter's first cell from it.
SETUP_CELL = """\
# Setup: install phbook if missing (Colab), then seed, device and style.
try:
    import phbook
except ImportError:
    %pip install -q "phbook[lensing] @ git+{url}"
    import phbook
session = phbook.setup(seed=0)"""


def setup_cell() -> str:
    """The setup cell with the repository URL of ``_config.yml``."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    return SETUP_CELL.format(url=config["repository"]["url"])


def test_bibliography_parses_and_has_no_duplicate_keys():
    from pybtex.database import parse_file

    bib = parse_file(ROOT / "references.bib")
    text = (ROOT / "references.bib").read_text()
    keys = re.findall(r"^@\w+\{([^,]+),", text, flags=re.M)
    assert len(keys) == len(set(keys)), "duplicate bibliography keys"
    assert set(keys) == set(bib.entries)


def toc_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part["chapters"]]
    return files


def test_every_toc_entry_exists_and_every_notebook_is_listed():
    listed = set(toc_files())
    for name in listed:
        assert any((ROOT / f"{name}{ext}").exists() for ext in (".md", ".ipynb")), name
    for nb in (ROOT / "book").glob("*.ipynb"):
        assert f"book/{nb.stem}" in listed, f"{nb.name} is not in _toc.yml"


@pytest.mark.parametrize(
    "nb", sorted((ROOT / "book").glob("*.ipynb")), ids=lambda p: p.name
)
def test_notebooks_are_stripped_and_start_with_the_setup_cell(nb):
    cells = json.loads(nb.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert not any(c.get("outputs") for c in code), "commit notebooks without outputs"
    first = "".join(code[0]["source"])
    assert first == setup_cell(), "run `python tests/test_book.py` to rewrite it"
    assert "hide-input" in code[0]["metadata"].get("tags", [])
    cited = re.findall(
        r"\{cite[:a-z]*\}`([^`]+)`",
        "".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown"),
    )
    bib = (ROOT / "references.bib").read_text()
    for group in cited:
        for key in group.split(","):
            assert re.search(rf"^@\w+\{{{re.escape(key.strip())},", bib, flags=re.M), key


def test_every_chapter_asserts_a_claim():
    """Each chapter has a hidden cell (tagged remove-cell) that asserts a key claim."""
    for nb in sorted((ROOT / "book").glob("[0-9]*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        hidden = [
            "".join(c["source"])
            for c in cells
            if c["cell_type"] == "code"
            and "remove-cell" in (tags := c["metadata"].get("tags", []))
            and not GRADED_TEST_TAGS & set(tags)
        ]
        assert any(re.search(r"^\s*assert\b", h, flags=re.M) for h in hidden), nb.name


#: Test cells of graded exercises; they call a solution that only exists in a markdown
#: dropdown, so neither nbval nor the book build may execute them.
GRADED_TEST_TAGS = {"tests-public", "tests-hidden"}


@pytest.mark.parametrize(
    "nb", sorted((ROOT / "book").glob("*.ipynb")), ids=lambda p: p.name
)
def test_graded_test_cells_are_neither_shown_nor_executed(nb):
    """``skip-execution`` (nbclient, used by the book build), ``nbval-skip`` (nbval) and
    ``remove-cell`` (the rendered book) on every graded test cell: without the first,
    the full build stops at the first one (NameError on the exercise's function)."""
    for c in json.loads(nb.read_text())["cells"]:
        tags = set(c["metadata"].get("tags", []))
        if c["cell_type"] == "code" and GRADED_TEST_TAGS & tags:
            missing = {"remove-cell", "nbval-skip", "skip-execution"} - tags
            assert not missing, f"{nb.name}: graded test cell without {sorted(missing)}"


if __name__ == "__main__":  # rewrite every chapter's setup cell from _config.yml
    import nbformat

    for path in sorted((ROOT / "book").glob("*.ipynb")):
        book = nbformat.read(path, as_version=4)
        first = next(c for c in book.cells if c.cell_type == "code")
        if first.source != setup_cell():
            first.source = setup_cell()
            nbformat.write(book, path)
            print("rewrote", path.name)


def test_book_times_reads_the_execution_records(tmp_path, capsys):
    import importlib.util
    import pickle
    import types

    spec = importlib.util.spec_from_file_location(
        "book_times", ROOT / "tools" / "book_times.py"
    )
    book_times = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(book_times)
    env = types.SimpleNamespace(
        nb_metadata={
            "book/00_quickstart": {
                "exec_data": {
                    "mtime": 0.0,
                    "runtime": 12.5,
                    "method": "cache",
                    "succeeded": True,
                }
            },
            "book/03_beta_vae": {
                "exec_data": {
                    "mtime": 0.0,
                    "runtime": 80.0,
                    "method": "cache",
                    "succeeded": True,
                }
            },
            "intro": {},
        }
    )
    (tmp_path / ".doctrees").mkdir()
    with (tmp_path / ".doctrees" / "environment.pickle").open("wb") as f:
        pickle.dump(env, f)
    assert book_times.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "book/00_quickstart" in out and "12.5" in out and "92.5" in out
    assert "intro" not in out


def _tool(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_execute_book_plans_every_chapter_once_chains_in_order_longest_first():
    ex = _tool("execute_book")
    docs = ex.chapters()
    assert docs and all((ROOT / f"{d}.ipynb").exists() for d in docs)
    named = {d for chain in ex.CHAINS for d in chain} | set(ex.ALONE)
    assert named <= set(docs), "CHAINS / ALONE name a chapter the book does not have"
    assert set(ex.EXPECTED_SECONDS) == set(docs)

    chains, alone = ex.plan(docs, lambda d: ex.EXPECTED_SECONDS[d])
    flat = [d for c in chains for d in c] + alone
    assert sorted(flat) == sorted(docs)
    assert alone == [d for d in docs if d in ex.ALONE]
    for chain in ex.CHAINS:
        kept = next(c for c in chains if chain[0] in c)
        assert kept == list(chain)
    costs = [sum(ex.EXPECTED_SECONDS[d] for d in c) for c in chains]
    assert costs == sorted(costs, reverse=True)

    # a chain with chapters already cached keeps the rest, in order
    chains, _ = ex.plan(["book/03b_vqvae", "book/02_autoencoders"], lambda d: 1.0)
    assert chains == [["book/02_autoencoders", "book/03b_vqvae"]]


def test_execute_book_caches_a_notebook_the_way_the_build_finds_it(tmp_path):
    import nbformat

    ex = _tool("execute_book")
    path = tmp_path / "chapter.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nb.cells = [nbformat.v4.new_code_cell("print(6 * 7)")]
    nbformat.write(nb, path)
    bad = tmp_path / "broken.ipynb"
    nb.cells = [nbformat.v4.new_code_cell("raise ValueError('no frames')")]
    nbformat.write(nb, bad)

    cache = ex.Cache(tmp_path / ".jupyter_cache")
    assert not cache.is_cached(path)
    _, text, seconds, error = ex._execute(str(path), 120)
    assert error is None and seconds > 0
    cache.store(path, text, seconds, error)
    assert cache.is_cached(path)
    # what myst-nb does when it builds: match the source notebook, merge the outputs
    _, merged = cache.cache.merge_match_into_notebook(nbformat.read(path, as_version=4))
    assert merged.cells[0].outputs[0]["text"] == "42\n"
    assert cache.last_seconds() == {str(path): seconds}

    _, text, _, error = ex._execute(str(bad), 120)
    assert text is None and "no frames" in error
    cache.store(bad, text, 1.0, error)
    assert not cache.is_cached(bad)


def test_execute_book_drops_chapters_cached_by_another_phbook(tmp_path, monkeypatch):
    import nbformat

    ex = _tool("execute_book")
    src = tmp_path / "src"
    (src / "phbook").mkdir(parents=True)
    (src / "phbook" / "model.py").write_text("SCALE = 1\n")
    (src / "pyproject.toml").write_text("[project]\n")
    first = ex.source_hash(src)
    assert ex.source_hash(src) == first  # the same files, the same hash
    (src / "phbook" / "model.py").write_text("SCALE = 2\n")
    second = ex.source_hash(src)
    assert second != first
    (src / "phbook" / "__pycache__").mkdir()
    (src / "phbook" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\0")
    assert ex.source_hash(src) == second  # compiled files do not count

    path = tmp_path / "chapter.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nb.cells = [nbformat.v4.new_code_cell("print(6 * 7)")]
    nbformat.write(nb, path)
    cache = ex.Cache(tmp_path / "cache")
    _, text, seconds, error = ex._execute(str(path), 120)
    # a cache that does not say which phbook ran it counts as stale
    cache.store(path, text, seconds, error)
    assert cache.source() is None
    assert cache.drop_stale(first) == 1 and not cache.is_cached(path)
    assert cache.source() == first
    # run with this source: kept while the source stays, dropped once it changes
    cache.store(path, text, seconds, error)
    assert cache.drop_stale(first) == 0 and cache.is_cached(path)
    assert cache.drop_stale(second) == 1 and not cache.is_cached(path)
    assert ex.Cache(tmp_path / "cache").source() == second
