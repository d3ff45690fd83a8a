"""Ready-made simulated datasets, generated once and cached as HDF5.

Chapters call these functions instead of simulating by hand, so that every chapter of the
book (and every benchmark) sees the same data for the same seed, and a second run of a
chapter reads the data from the cache in ``phbook.config.data_dir()`` instead of
simulating it again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from . import config
from .sim import panoseti

__all__ = ["PHBenchmark", "ph_benchmark"]


@dataclass
class PHBenchmark:
    """A simulated PANOSETI training set and a labelled held-out test set.

    ``x_*`` are int16 baseline-subtracted pulse heights (ADC) of shape (n, 16, 16).
    ``classes_train`` is "normal" except for the unlabelled contamination (which a real
    training set would contain and a detector must not be told about); ``classes_test``
    and ``strength_test`` (0 = faint .. 1 = bright, NaN for normal frames) are the truth
    used to evaluate detectors.
    """

    x_train: np.ndarray
    classes_train: np.ndarray
    quabo_train: np.ndarray
    x_test: np.ndarray
    classes_test: np.ndarray
    strength_test: np.ndarray
    quabo_test: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def labels_test(self) -> np.ndarray:
        """1 for anomalies, 0 for normal frames (as :mod:`phbook.metrics` expects)."""
        return (self.classes_test != panoseti.NORMAL).astype(np.int8)

    def __repr__(self) -> str:
        counts = dict(zip(*np.unique(self.classes_test, return_counts=True), strict=False))
        return (
            f"PHBenchmark(train={len(self.x_train)}, test={len(self.x_test)} "
            f"{ {str(k): int(v) for k, v in counts.items()} }, "
            f"pe_threshold={self.info.get('pe_threshold')}, "
            f"contamination={self.info.get('contamination')})"
        )


_FIELDS = (
    "x_train",
    "classes_train",
    "quabo_train",
    "x_test",
    "classes_test",
    "strength_test",
    "quabo_test",
)


def _cache_path(name: str, params: dict) -> Path:
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    folder = config.data_dir() / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}-{key}.h5"


def _write(path: Path, data: PHBenchmark) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with h5py.File(tmp, "w") as f:
        for name in _FIELDS:
            value = getattr(data, name)
            if value.dtype.kind == "U":
                value = value.astype("S")
            f.create_dataset(
                name,
                data=value,
                compression="lzf",
                chunks=(min(len(value), 8192),) + value.shape[1:] if len(value) else None,
            )
        f.attrs["info"] = json.dumps(data.info)
    os.replace(tmp, path)


def _read(path: Path) -> PHBenchmark:
    with h5py.File(path, "r") as f:
        values = {}
        for name in _FIELDS:
            v = f[name][...]
            values[name] = v.astype(str) if v.dtype.kind == "S" else v
        info = json.loads(f.attrs["info"])
    return PHBenchmark(**values, info=info)


def ph_benchmark(
    n_train: int,
    n_test_normal: int,
    n_test_per_class: int,
    *,
    seed: int = 0,
    contamination: float = 0.0,
    pe_threshold: float = 11.5,
    classes: tuple[str, ...] = panoseti.ANOMALY_CLASSES,
    strength: tuple[float, float] = (0.0, 1.0),
    cache: bool = True,
) -> PHBenchmark:
    """The book's simulated PANOSETI benchmark: normal training frames and a test set.

    The training set holds ``n_train`` frames, of which a fraction ``contamination`` are
    anomalies of ``classes`` (unlabelled, as in real life). The test set holds
    ``n_test_normal`` normal frames and ``n_test_per_class`` frames of each anomaly class,
    with strengths uniform in ``strength`` (faint to bright), so that no detector finds
    everything. Each part has its own random stream, so the training set of a seed does
    not change when the test set is made larger.
    """
    for name, value in (
        ("n_train", n_train),
        ("n_test_normal", n_test_normal),
        ("n_test_per_class", n_test_per_class),
    ):
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    params = {
        "n_train": int(n_train),
        "n_test_normal": int(n_test_normal),
        "n_test_per_class": int(n_test_per_class),
        "seed": int(seed),
        "contamination": float(contamination),
        "pe_threshold": float(pe_threshold),
        "classes": list(classes),
        "strength": list(map(float, strength)),
        "simulator": panoseti.SIMULATOR_VERSION,
    }
    path = _cache_path("ph_benchmark", params)
    if cache and path.exists():
        try:
            return _read(path)
        except (OSError, KeyError, ValueError):
            path.unlink(missing_ok=True)  # a damaged cache file is simply rebuilt

    streams = np.random.SeedSequence([int(seed), 7919]).spawn(2 + len(classes))
    train = panoseti.simulate(
        n_train,
        seed=np.random.default_rng(streams[0]),
        pe_threshold=pe_threshold,
        anomaly_fraction=contamination,
        anomaly_classes=classes,
        strength=strength,
    )
    parts = [
        panoseti.simulate(
            n_test_normal, seed=np.random.default_rng(streams[1]), pe_threshold=pe_threshold
        )
    ]
    inst = panoseti.Instrument(pe_threshold=pe_threshold)
    pop = panoseti.ShowerPopulation()
    for cls, stream in zip(classes, streams[2:], strict=False):
        parts.append(
            panoseti.simulate_anomalies(
                cls, n_test_per_class, np.random.default_rng(stream), inst, pop, strength
            )
        )
    test = panoseti.PHFrames.concatenate(parts)
    width = max(map(len, (panoseti.NORMAL, *panoseti.ANOMALY_CLASSES)))
    data = PHBenchmark(
        x_train=train.adc,
        classes_train=train.classes.astype(f"<U{width}"),
        quabo_train=train.quabo,
        x_test=test.adc,
        classes_test=test.classes.astype(f"<U{width}"),
        strength_test=test.strength.astype(np.float32),
        quabo_test=test.quabo,
        info={**params, "simulated": True},
    )
    if cache:
        _write(path, data)
    return data
