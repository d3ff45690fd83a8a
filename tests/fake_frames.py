"""A small, fast stand-in for the pulse-height simulator, for archive/selection tests.

It has the simulator's signature and output fields (``adc``, ``classes``, ``strength``,
``quabo``) and is deterministic in its seed, so tests can regenerate what was written.
"""

from __future__ import annotations

import types

import numpy as np

CLASSES = ("normal", "speckle", "track")


def fake_source(
    n: int,
    seed: int = 0,
    pe_threshold: float = 11.5,
    trigger_pixels: int = 1,
    anomaly_fraction: float = 0.01,
):
    rng = np.random.default_rng(seed)
    adc = rng.normal(0, 10, (n, 16, 16)).round().astype(np.int16)
    adc[:, 8, 8] += np.int16(round(16 * pe_threshold))  # threshold leaves a trace
    u = rng.random(n)
    classes = np.where(
        u < anomaly_fraction / 2,
        "speckle",
        np.where(u < anomaly_fraction, "track", "normal"),
    )
    strength = np.where(classes == "normal", np.nan, rng.random(n)).astype(np.float32)
    quabo = rng.integers(0, 4, n).astype(np.uint8)
    return types.SimpleNamespace(adc=adc, classes=classes, strength=strength, quabo=quabo)
