"""Shared fixtures: a private data folder per test session, the quick profile, and
simulated normal PANOSETI frames for the detectors that need no training."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
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


@pytest.fixture(scope="session")
def sim_normal_adc() -> np.ndarray:
    """3,000 simulated normal frames (seed 1), int16 ADC: a training set."""
    from phbook.sim import panoseti

    frames = panoseti.simulate(3000, seed=1, anomaly_fraction=0).adc
    frames.flags.writeable = False  # shared by the session: nobody may edit it
    return frames


@pytest.fixture(scope="session")
def sim_test_adc() -> np.ndarray:
    """1,500 other simulated normal frames (seed 2), float32 ADC: a held-out set."""
    from phbook.sim import panoseti

    frames = panoseti.simulate(1500, seed=2, anomaly_fraction=0).adc.astype(np.float32)
    frames.flags.writeable = False
    return frames
