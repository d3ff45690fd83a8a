"""The chapters' sizes file (phbook/sizes.json): complete, consistent, shipped."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from phbook import config

ROOT = Path(__file__).resolve().parent.parent
SIZES = config.read_sizes_file()
CHAPTERS = SIZES["chapters"]


@pytest.mark.parametrize("chapter", sorted(CHAPTERS))
def test_every_chapter_has_both_profiles_with_the_same_keys(chapter):
    entry = CHAPTERS[chapter]
    assert set(entry) - {"about"} == set(config.PROFILES)
    quick, full = entry["quick"], entry["full"]
    assert list(quick) == list(full), f"{chapter}: quick and full name other sizes"
    for key in quick:
        both = (type(quick[key]), type(full[key]))
        assert (
            quick[key] is None
            or full[key] is None
            or both[0] is both[1]
            or (set(both) == {int, float})
        ), f"{chapter}.{key}: {quick[key]!r} (quick) vs {full[key]!r} (full)"
    for profile in config.PROFILES:  # what a chapter gets: the file's numbers
        got = dict(config.sizes(chapter, profile))
        want = {
            k: tuple(v) if isinstance(v, list) else v for k, v in entry[profile].items()
        }
        assert got == want


@pytest.mark.parametrize("name", sorted(SIZES["shared"]))
def test_chapters_sharing_a_benchmark_share_its_sizes(name):
    shared = SIZES["shared"][name]
    assert len(shared["chapters"]) > 1
    for profile in config.PROFILES:
        first, *others = shared["chapters"]
        want = {k: CHAPTERS[first][profile][k] for k in shared["keys"]}
        for chapter in others:
            got = {k: CHAPTERS[chapter][profile][k] for k in shared["keys"]}
            assert got == want, f"{name}: {chapter} ({profile}) differs from {first}"


def test_every_chapter_notebook_asks_for_known_sizes():
    """Each sizes("...") a chapter or benchmark script asks for is in the file."""
    asked = {}
    for path in [*ROOT.glob("book/*.ipynb"), *ROOT.glob("bench/*.py")]:
        names = set(re.findall(r'sizes\(\\?"([a-z_]+)\\?"', path.read_text()))
        asked[path.name] = names
        assert names <= set(CHAPTERS), f"{path.name} asks for {names - set(CHAPTERS)}"
    assert any(asked.values())


def test_the_sizes_file_ships_with_the_package():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = project["tool"]["setuptools"]["package-data"]["phbook"]
    assert config.SIZES_FILE.name in data
    assert config.SIZES_FILE.parent == Path(config.__file__).parent
