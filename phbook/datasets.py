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

from . import config, transforms
from .sim import galaxies, panoseti

__all__ = [
    "PHBenchmark",
    "ph_benchmark",
    "BenchmarkData",
    "ph_benchmark_data",
    "GalaxyBenchmark",
    "galaxy_benchmark",
]


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
        """A sentence a reader can read (the chapters show it), not a constructor."""
        counts = dict(zip(*np.unique(self.classes_test, return_counts=True), strict=False))
        test = ", ".join(f"{k} {int(v)}" for k, v in counts.items())
        contamination = self.info.get("contamination") or 0.0
        threshold = self.info.get("pe_threshold")
        if isinstance(threshold, (int, float, np.number)):
            threshold = f"{float(threshold):.3g} PE"
        elif threshold is None:
            threshold = "not recorded"
        return (
            f"simulated PANOSETI benchmark: {len(self.x_train)} training frames "
            f"({contamination:.0%} contamination), {len(self.x_test)} test frames "
            f"({test}); trigger threshold {threshold}"
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
    pe_threshold: float | None = None,
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
    not change when the test set is made larger. ``pe_threshold`` defaults to the
    calibrated instrument's (:class:`phbook.sim.panoseti.Instrument`).
    """
    if pe_threshold is None:
        pe_threshold = panoseti.Instrument().pe_threshold
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


@dataclass(frozen=True, repr=False)
class BenchmarkData:
    """The benchmark as chapters 0 and 2-4 train on it: stretched, shaped, split.

    ``x_train`` and ``x_test`` are the stretched frames as ``(N, 1, H, W)`` float32
    (what the networks take); ``x_val`` is the first ``val_fraction`` of the training
    frames, kept for validation, and ``x_fit`` the rest. ``raw`` is the
    :class:`PHBenchmark` in ADC counts (``raw.x_train``, ``raw.strength_test``, ...).
    """

    raw: PHBenchmark
    stretch: object
    x_train: np.ndarray
    x_test: np.ndarray
    x_fit: np.ndarray
    x_val: np.ndarray

    @property
    def classes(self) -> np.ndarray:
        """The class name of every test frame (``"normal"`` or an anomaly class)."""
        return self.raw.classes_test

    @property
    def labels(self) -> np.ndarray:
        """0 for normal test frames, 1 for anomalies."""
        return self.raw.labels_test

    def __repr__(self) -> str:
        return (
            f"simulated PANOSETI benchmark, {type(self.stretch).__name__}: "
            f"{len(self.x_fit)} training + {len(self.x_val)} validation frames, "
            f"{len(self.x_test)} test frames of {self.x_test.shape[-2]}x"
            f"{self.x_test.shape[-1]} pixels"
        )


def ph_benchmark_data(
    size,
    *,
    stretch=None,
    val_fraction: float = 0.1,
    seed: int = 0,
    contamination: float = 0.0,
) -> BenchmarkData:
    """:func:`ph_benchmark` with the sizes of a chapter, stretched and split.

    ``size`` is a chapter's :func:`phbook.config.sizes` (or a mapping) with
    ``n_train``, ``n_test_normal`` and ``n_test_per_class``, or with ``n_train`` and
    ``n_test`` (then a tenth of ``n_test`` per anomaly class). ``stretch`` maps ADC
    counts to network inputs (default :class:`phbook.transforms.AsinhStretch`).
    The validation frames are the first ``val_fraction`` of the training set.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    keys = set(size)
    if {"n_test_normal", "n_test_per_class"} <= keys:
        n_normal, n_per_class = size["n_test_normal"], size["n_test_per_class"]
    elif "n_test" in keys:
        n_normal, n_per_class = size["n_test"], size["n_test"] // 10
    else:
        raise ValueError(
            "size must name n_train and n_test_normal + n_test_per_class (or n_test); "
            f"got {sorted(keys)}"
        )
    raw = ph_benchmark(
        n_train=size["n_train"],
        n_test_normal=n_normal,
        n_test_per_class=n_per_class,
        seed=seed,
        contamination=contamination,
    )
    stretch = transforms.AsinhStretch() if stretch is None else stretch
    x_train = np.asarray(stretch(raw.x_train), dtype=np.float32)[:, None]
    x_test = np.asarray(stretch(raw.x_test), dtype=np.float32)[:, None]
    n_val = int(len(x_train) * val_fraction)
    return BenchmarkData(raw, stretch, x_train, x_test, x_train[n_val:], x_train[:n_val])


@dataclass
class GalaxyBenchmark:
    """Simulated galaxy stamps (:mod:`phbook.sim.galaxies`): training and test sets.

    ``x_*`` are float32 stamps (n, H, W) in units of each stamp's sky noise (the
    simulated electrons divided by ``noise_sigma``), so that 1 is one standard
    deviation of the sky. ``classes_test`` names the class of every test stamp,
    ``groups_test`` its group (``normal``, ``merger``, ``pipeline``) and
    ``params_test`` holds the simulated parameters. The training set is unlabelled:
    its classes (``classes_train``) are for checking only.
    """

    x_train: np.ndarray
    classes_train: np.ndarray
    x_test: np.ndarray
    classes_test: np.ndarray
    groups_test: np.ndarray
    params_test: object
    info: dict = field(default_factory=dict)

    @property
    def labels_test(self) -> np.ndarray:
        """1 for every anomaly (merger or pipeline error), 0 for ordinary galaxies."""
        return (self.groups_test != "normal").astype(np.int8)

    def __repr__(self) -> str:
        counts = dict(zip(*np.unique(self.classes_test, return_counts=True), strict=False))
        test = ", ".join(f"{k} {int(v)}" for k, v in counts.items())
        h, w = self.x_test.shape[1:3]
        return (
            f"simulated galaxy survey: {len(self.x_train)} training stamps, "
            f"{len(self.x_test)} test stamps ({test}) of {h}x{w} pixels"
        )


def galaxy_benchmark(
    n_train: int,
    n_test: int,
    *,
    seed: int = 0,
    train_fractions: dict | None = None,
    test_fractions: dict | None = None,
    size: int = 48,
) -> GalaxyBenchmark:
    """The book's simulated galaxy survey: a training set and a labelled test set.

    The training set holds ``n_train`` stamps of ``train_fractions`` (default: only
    ordinary galaxies; pass e.g. :data:`phbook.sim.galaxies.DEFAULT_FRACTIONS` to
    train on a contaminated survey, as a search of real images does); the test set
    ``n_test`` stamps of ``test_fractions`` (default: the simulator's mix, 80%
    ordinary galaxies, 12% mergers, 8% pipeline errors). Both are simulated once and
    cached by :func:`phbook.sim.galaxies.load_or_simulate`; the two sets have
    different seeds, so they share no galaxy.
    """
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    train = galaxies.load_or_simulate(
        int(n_train),
        seed=int(seed),
        fractions=train_fractions or {"normal": 1.0},
        size=size,
    )
    test = galaxies.load_or_simulate(
        int(n_test), seed=int(seed) + 1, fractions=test_fractions, size=size
    )

    def in_sigma(data):
        sigma = data.params["noise_sigma"].to_numpy(np.float32)[:, None, None]
        return (data.images / sigma).astype(np.float32)

    return GalaxyBenchmark(
        x_train=in_sigma(train),
        classes_train=train.classes,
        x_test=in_sigma(test),
        classes_test=test.classes,
        groups_test=test.params["group"].to_numpy().astype(str),
        params_test=test.params,
        info={
            "n_train": int(n_train),
            "n_test": int(n_test),
            "seed": int(seed),
            "size": int(size),
            "units": "sky noise sigma",
            "simulated": True,
        },
    )
