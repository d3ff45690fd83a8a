"""Shared fixtures: a private data folder per test session, the quick profile."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# PHBOOK_REAL_DATA (as in phbook.config.real_data_dir) overrides ../shared/data/panoseti
REAL_DATA = Path(
    os.environ.get("PHBOOK_REAL_DATA") or ROOT.parent / "shared" / "data" / "panoseti"
)
REAL_PH256 = REAL_DATA / "start_2025-08-02T05:31:36Z.dp_ph256.bpp_2.module_254.seqno_0.pff"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """Tests write generated data under a temporary folder, in the quick profile."""
    data = tmp_path_factory.getbasetemp() / "phbook-data"
    monkeypatch.setenv("PHBOOK_DATA", str(data))
    monkeypatch.setenv("PHBOOK_PROFILE", os.environ.get("PHBOOK_PROFILE", "quick"))
    monkeypatch.setenv("PHBOOK_PROGRESS", "0")
    monkeypatch.delenv("PHBOOK_DEVICE", raising=False)


@pytest.fixture
def real_ph256() -> Path:
    """The real 88-frame ph256 sample; the test is skipped when it is absent."""
    if not REAL_PH256.exists():
        pytest.skip(f"real PANOSETI sample not found at {REAL_PH256} (../shared absent)")
    return REAL_PH256
