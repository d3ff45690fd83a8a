"""Per-pixel pulse-height baselines of PANOSETI quabos, from ``quabo_ph_baseline`` files.

Each quabo subtracts a per-pixel baseline (about 650-900 ADC) on board before it
records pulse heights; the DAQ writes the baselines it measured to
``quabo_ph_baseline.json``. The simulator uses them for the ADC ceiling of each pixel.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["BASELINE_RANGE", "read_baselines"]

#: On-board baselines (ADC) the 12-bit ADC can hold.
BASELINE_RANGE = (0.0, 4095.0)


@lru_cache(maxsize=8)
def read_baselines(path: str, quabos: tuple[int, ...] = (0, 1, 2, 3)) -> np.ndarray:
    """Per-pixel baselines (4, 16, 16) float32 from a ``quabo_ph_baseline`` JSON file.

    The file holds ``{"date": ..., "quabos": [{"uid": ..., "coefs": [256 ADC]}, ...]}``;
    ``quabos`` picks which of its entries are quabos 0-3 of the module (a file with fewer
    entries is cycled). Values outside the ADC range raise ``ValueError``.
    """
    try:
        data = json.loads(Path(path).read_text())
        entries = data["quabos"]
        coefs = [np.asarray(e["coefs"], np.float64) for e in entries]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a quabo_ph_baseline JSON file ({exc})") from None
    if not coefs:
        raise ValueError(f"{path}: no quabos in the baseline file")
    for i, c in enumerate(coefs):
        if c.shape != (256,):
            raise ValueError(f"{path}: quabo entry {i} has {c.size} coefs, expected 256")
        bad = np.flatnonzero((c <= BASELINE_RANGE[0]) | (c >= BASELINE_RANGE[1]))
        if len(bad):
            raise ValueError(
                f"{path}: quabo entry {i} pixel {bad[0]} baseline {c[bad[0]]} is outside "
                f"the ADC range {BASELINE_RANGE}"
            )
    out = np.stack([coefs[q % len(coefs)] for q in quabos]).reshape(4, 16, 16)
    return out.astype(np.float32)
