"""Shared fixtures: a private data folder per test session, the quick profile."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from phbook import config

ROOT = Path(__file__).resolve().parent.parent
# The shipped sample in data/panoseti, unless PHBOOK_REAL_DATA points elsewhere
# (the lookup of phbook.config.real_data_file).


def real_file(name: str) -> Path:
    """A real sample file, or skip the test saying where it was looked for."""
    try:
        return config.real_data_file(name)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """Tests write generated data under a temporary folder, in the quick profile."""
    data = tmp_path_factory.getbasetemp() / "phbook-data"
    monkeypatch.setenv("PHBOOK_DATA", str(data))
    monkeypatch.setenv("PHBOOK_PROFILE", os.environ.get("PHBOOK_PROFILE", "quick"))
    monkeypatch.setenv("PHBOOK_PROGRESS", "0")
    monkeypatch.delenv("PHBOOK_DEVICE", raising=False)


@pytest.fixture
def real_data_file():
    """``real_data_file(name)``: a real sample file, or skip saying where it was sought."""
    return real_file


@pytest.fixture
def real_ph256() -> Path:
    """The real 88-frame ph256 sample; the test is skipped when it is absent."""
    return real_file(config.REAL_PH256_NAME)
