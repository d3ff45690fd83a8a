"""Chapter 9's comparisons beyond the book's own detectors: PyOD side by side, a
supervised ceiling, where each detector stops seeing, injected faults in real frames,
and a check that scores do not depend on how the frames were chunked.

Built on :mod:`phbook.studies.benchmark` (same data, same metrics, same tables):

* :func:`pyod_specs`: PyOD's detectors (the ones a reader would pick first) as
  benchmark rows of family ``pyod``, on the same arrays as phbook's: the asinh stretch
  of the pulse heights (:class:`phbook.transforms.AsinhStretch`), flattened to 256
  features per frame; PyOD's deep detectors then standardise each feature themselves
  (their ``preprocessing=True`` default).
* :func:`add_supervised`: the supervised ceiling: a small CNN
  (:class:`phbook.detectors.supervised.SupervisedCNNDetector`) trained *with labels*
  on a separate labelled set of the same classes (another simulation seed), scored on
  the same test set; family ``supervised``.
* :func:`auc_by_strength`: ROC-AUC of each detector per anomaly class and strength
  bin against all normal test frames.
* :func:`inject_faults` / :func:`real_injection_auc`: real frames with faults put in
  by hand (flashes of 1 and 2x2 pixels, a hot pixel, a dead row, a dead MAROC chip),
  scored by the detectors trained on simulation.
* :func:`chunk_invariance`: each detector scores the same frames in chunks of
  several sizes, in threads of several workers, and the scores are compared bit for
  bit.
* :func:`residual_score_table`: why reconstruction detectors miss what they miss:
  the same trained model scored by the mean, the maximum and tails of its squared
  pixel residuals, per class and per injected fault.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from .. import config, datasets, metrics, transforms
from ..detectors import Detector, PyODDetector, SupervisedCNNDetector, Transformed
from . import benchmark

__all__ = [
    "PYOD_FAMILY",
    "SUPERVISED",
    "FAULTS",
    "pyod_specs",
    "phbook_detectors",
    "phbook_fusions",
    "labelled_set",
    "add_supervised",
    "auc_by_strength",
    "inject_faults",
    "real_injection_auc",
    "chunk_invariance",
    "RESIDUAL_SCORES",
    "residual_scores",
    "residual_score_table",
]

PYOD_FAMILY = "pyod"
SUPERVISED = "Supervised CNN"
_NOT_PHBOOK = (PYOD_FAMILY, "supervised", "fusion")

# Sizes of these studies: sizes("sidebyside") in phbook/sizes.json. PyOD's deep
# detectors keep PyOD's defaults except the number of epochs in the quick profile
# (its default 30-100 epochs of batches of 32 would take minutes).


def _stretched(det: Detector) -> Transformed:
    return Transformed(det, transforms.AsinhStretch())


def pyod_specs(size: config.Sizes | None = None) -> list[benchmark.DetectorSpec]:
    """PyOD's detectors as benchmark rows (``"PyOD <name>"``, family ``pyod``) on the
    asinh-stretched frames, each with PyOD's defaults (``size.pyod_params`` overrides
    a few, stated in the profile's sizes)."""
    size = size or config.sizes("sidebyside")
    deterministic = {"LOF", "KNN", "ECOD", "COPOD", "OCSVM"}
    specs = []
    for name in size.pyod:
        params = dict(size.pyod_params.get(name, {}))

        def build(seed, name=name, params=params):
            return _stretched(PyODDetector(name, params=params or None, seed=seed))

        specs.append(
            benchmark.DetectorSpec(
                f"PyOD {name}",
                PYOD_FAMILY,
                build,
                max_seeds=1 if name in deterministic else None,
            )
        )
    return specs


def phbook_detectors(result: benchmark.BenchmarkResult) -> list[str]:
    """The book's own detectors of ``result`` (no PyOD, supervised or fusion rows)."""
    return [d for d in result.detectors if result.families[d] not in _NOT_PHBOOK]


def phbook_fusions(result: benchmark.BenchmarkResult) -> dict:
    """:data:`phbook.studies.benchmark.FUSIONS` with "Fusion all" restricted to the book's
    own detectors (PyOD and the supervised ceiling are comparisons, not members)."""
    return {**benchmark.FUSIONS, "Fusion all": (tuple(phbook_detectors(result)), "fisher")}


def labelled_set(
    size: config.Sizes | None = None, seed: int = 0, strength=(0.0, 1.0)
) -> datasets.PHBenchmark:
    """The supervised ceiling's training set: labelled normal and anomalous frames of
    the benchmark's classes from another simulation seed (``1000 + seed``), never
    the benchmark's test frames. Its ``x_test`` / ``classes_test`` hold the frames."""
    size = size or config.sizes("sidebyside")
    return datasets.ph_benchmark(
        0,
        size.labelled_normal,
        size.labelled_per_class,
        seed=1000 + int(seed),
        strength=strength,
    )


def _append_rows(result, name, family, space, seed, scores, calib, fit_s, fit_cpu, per_s):
    report = metrics.per_class_report(scores, result.classes)
    rows = [
        {
            "profile": result.profile,
            "detector": name,
            "family": family,
            "seed": seed,
            "class": cls,
            "n": int(r["n"]),
            **{m: float(r[m]) for m in benchmark.METRICS},
            "fit_s": fit_s,
            "fit_cpu_s": fit_cpu,
            "score_frames_per_s": per_s,
        }
        for cls, r in report.iterrows()
    ]
    result.table = pd.concat([result.table, pd.DataFrame(rows)], ignore_index=True)
    result.scores[name, seed] = np.asarray(scores, dtype=np.float64)
    result.calibration[name, seed] = np.asarray(calib, dtype=np.float64)
    result.families[name] = family
    result.spaces[name] = space


def add_supervised(
    result: benchmark.BenchmarkResult,
    data: datasets.PHBenchmark,
    size: config.Sizes | None = None,
    *,
    calibration_fraction: float = 0.1,
    log: Callable[[str], None] | None = None,
) -> benchmark.BenchmarkResult:
    """Train the supervised CNN for each seed of ``result`` on :func:`labelled_set`
    and add its test scores as the row :data:`SUPERVISED` (family ``supervised``)."""
    size = size or config.sizes("sidebyside")
    log = log or (lambda msg: None)
    x_test = np.asarray(data.x_test, dtype=np.float32)
    x_train = np.asarray(data.x_train, dtype=np.float32)
    x_cal = x_train[: max(1, int(round(calibration_fraction * len(x_train))))]
    for seed in result.seeds:
        lab = labelled_set(size, seed)
        config.seed_everything(seed)
        det = SupervisedCNNDetector(
            transforms.AsinhStretch(),
            fit_kwargs={
                "epochs": size.supervised_epochs,
                "batch_size": size.supervised_batch_size,
                "lr": 2e-3,
            },
            seed=seed,
        )
        t0, c0 = time.perf_counter(), time.process_time()
        det.fit(lab.x_test, lab.classes_test)
        fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
        t0 = time.perf_counter()
        s = det.anomaly_score(x_test)
        per_s = len(x_test) / (time.perf_counter() - t0)
        calib = det.anomaly_score(x_cal)
        _append_rows(
            result, SUPERVISED, "supervised", "pixel", seed, s, calib, fit_s, fit_cpu, per_s
        )
        result.fitted.setdefault(SUPERVISED, det)
        auc = metrics.roc_auc((result.classes != metrics.NORMAL).astype(int), s)
        log(
            f"{SUPERVISED:16s} seed {seed}: fit {fit_s:6.1f} s on {len(lab.x_test)} "
            f"labelled frames (seed {1000 + seed}), AUC (all) {auc:.3f}"
        )
    return result


def auc_by_strength(
    result: benchmark.BenchmarkResult,
    strength: np.ndarray,
    bins: int = 4,
    detectors: Sequence[str] | None = None,
) -> pd.DataFrame:
    """ROC-AUC per detector, anomaly class (and ``all``) and strength bin, against all
    normal test frames, mean over the seeds each detector ran.

    Strength bins are equal-width on [0, 1] (the simulator's faint-to-bright scale).
    Tidy columns: detector, family, class, bin, strength (bin centre), n, auc.
    """
    strength = np.asarray(strength, dtype=np.float64)
    classes = result.classes
    normal = classes == metrics.NORMAL
    edges = np.linspace(0.0, 1.0, int(bins) + 1)
    which = np.clip(np.digitize(strength, edges[1:-1]), 0, bins - 1)
    names = list(detectors or result.detectors)
    groups = ["all", *sorted(set(classes[~normal]))]
    rows = []
    for name in names:
        runs = [s for (n, _), s in result.scores.items() if n == name]
        for cls in groups:
            in_cls = ~normal if cls == "all" else classes == cls
            for b in range(int(bins)):
                pos = in_cls & (which == b) & ~normal
                if not pos.any():
                    continue
                keep = pos | normal
                y = pos[keep].astype(int)
                aucs = [metrics.roc_auc(y, s[keep]) for s in runs]
                rows.append(
                    {
                        "detector": name,
                        "family": result.families[name],
                        "class": cls,
                        "bin": b,
                        "strength": 0.5 * (edges[b] + edges[b + 1]),
                        "n": int(pos.sum()),
                        "auc": float(np.mean(aucs)),
                    }
                )
    return pd.DataFrame(rows)


#: The faults :func:`inject_faults` puts into real frames.
FAULTS = ("flash_1px", "flash_2x2", "hot_pixel", "dead_row", "dead_maroc")


def inject_faults(
    images,
    seed: int = 0,
    flash_adc: float = 600.0,
    hot_adc: float = 3300.0,
    dead_noise_adc: float = 2.0,
) -> dict[str, np.ndarray]:
    """Copies of real frames (ADC, baseline subtracted), each with one fault.

    ``flash_1px``: ``flash_adc`` added to one random pixel (a bright point flash);
    ``flash_2x2``: the same light shared by a random 2x2 block; ``hot_pixel``: one
    pixel (the same in every frame) reads ``hot_adc``, near the ADC ceiling;
    ``dead_row``: a random row of 16 pixels reads its baseline (0 ADC after
    subtraction, plus Gaussian noise of ``dead_noise_adc``); ``dead_maroc``: a random
    8x8 quarter reads its baseline (a MAROC chip reads one quarter of the sensor;
    which quarter depends on the quabo's rotation). Returns ``{fault: (N, 16, 16)
    int16}`` in the order of :data:`FAULTS`.
    """
    x = np.asarray(images)
    if x.ndim != 3 or x.shape[1:] != (16, 16):
        raise ValueError(f"images must have shape (N, 16, 16), got {x.shape}")
    rng = np.random.default_rng(seed)
    n = len(x)
    base = x.astype(np.float64)
    out = {}
    r, c = rng.integers(0, 16, n), rng.integers(0, 16, n)
    f = base.copy()
    f[np.arange(n), r, c] += flash_adc
    out["flash_1px"] = f
    r2, c2 = rng.integers(0, 15, n), rng.integers(0, 15, n)
    f = base.copy()
    for dr in (0, 1):
        for dc in (0, 1):
            f[np.arange(n), r2 + dr, c2 + dc] += flash_adc / 4
    out["flash_2x2"] = f
    f = base.copy()
    hr, hc = rng.integers(0, 16, 2)
    f[:, hr, hc] = hot_adc
    out["hot_pixel"] = f
    f = base.copy()
    rows = rng.integers(0, 16, n)
    f[np.arange(n), rows, :] = rng.normal(0.0, dead_noise_adc, (n, 16))
    out["dead_row"] = f
    f = base.copy()
    quarter = rng.integers(0, 4, n)
    for i, q in enumerate(quarter):
        a, b = 8 * (q // 2), 8 * (q % 2)
        f[i, a : a + 8, b : b + 8] = rng.normal(0.0, dead_noise_adc, (8, 8))
    out["dead_maroc"] = f
    return {k: np.clip(np.round(v), -32768, 32767).astype(np.int16) for k, v in out.items()}


def real_injection_auc(
    scores_of: Callable[[np.ndarray], dict[str, np.ndarray]],
    images,
    seed: int = 0,
) -> pd.DataFrame:
    """ROC-AUC of each detector separating each fault's frames from the same real
    frames without it (``scores_of(frames) -> {detector: anomaly scores}``, e.g.
    ``lambda x: benchmark.score_frames(result, x)``). Rows: detectors; columns:
    :data:`FAULTS`."""
    clean = scores_of(np.asarray(images))
    faulted = inject_faults(images, seed)
    table = {}
    for fault, frames in faulted.items():
        s = scores_of(frames)
        y = np.r_[np.zeros(len(frames)), np.ones(len(frames))]
        table[fault] = {
            name: metrics.roc_auc(y, np.r_[clean[name], s[name]]) for name in clean
        }
    return pd.DataFrame(table)


def chunk_invariance(
    fitted: dict[str, Detector],
    x,
    chunk_sizes: Sequence[int] = (97, 1000),
    workers: Sequence[int] = (1, 2),
    *,
    rtol: float = 0.0,
) -> pd.DataFrame:
    """Score ``x`` with each detector in one call, then in chunks of each size spread
    over a pool of each number of worker threads, and compare bit for bit.

    One row per detector: ``identical`` (every way gave the same bits), the largest
    relative difference seen (``inf`` after a failure), ``moved`` (some way that ran
    changed a score by more than ``rtol``, relative: a change within ``rtol`` is
    rounding, not a batch-dependent score) and ``failure``: the error of a detector
    that could not be scored from several threads at once (PyOD's ECOD called directly,
    for one, keeps the frames it scores as state), which counts as not identical but
    not as moved.
    """
    x = np.asarray(x, dtype=np.float32)
    rows = []
    for name, det in fitted.items():
        ref = det.anomaly_score(x)
        same, worst, ran_worst, failure = True, 0.0, 0.0, ""
        for chunk in chunk_sizes:
            parts = [x[a : a + chunk] for a in range(0, len(x), chunk)]
            for w in workers:
                try:
                    with ThreadPoolExecutor(max_workers=int(w)) as pool:
                        got = np.concatenate(list(pool.map(det.anomaly_score, parts)))
                except Exception as exc:  # noqa: BLE001 - reported in the table
                    same, worst = False, float("inf")
                    failure = f"{w} threads: {type(exc).__name__}: {exc}"[:200]
                    continue
                eq = np.array_equal(got, ref)
                same &= eq
                if not eq:
                    scale = np.maximum(np.abs(ref), 1e-12)
                    diff = float(np.max(np.abs(got - ref) / scale))
                    worst, ran_worst = max(worst, diff), max(ran_worst, diff)
        rows.append(
            {
                "detector": name,
                "identical": bool(same),
                "max_rel_diff": worst,
                "moved": bool(ran_worst > rtol),
                "failure": failure,
            }
        )
    return pd.DataFrame(rows).set_index("detector")


#: Pixel-residual scores compared by :func:`residual_scores`: the mean squared error
#: over all pixels, the largest single-pixel error, and the mean of the ``k`` largest
#: (a tail of the residual: a fault of ``k`` pixels adds its whole weight to it).
RESIDUAL_SCORES = ("mean", "max", "top4", "top16", "top64")


def residual_scores(det: Detector, images) -> dict[str, np.ndarray] | None:
    """The :data:`RESIDUAL_SCORES` of a fitted reconstruction detector (a
    :class:`~phbook.detectors.Transformed` whose inner detector has ``reconstruct``)
    on ``images`` (ADC), from one reconstruction; None for other detectors."""
    inner = getattr(det, "detector_", None)
    if inner is None or not hasattr(inner, "reconstruct"):
        return None
    xs = np.asarray(det._apply(np.asarray(images, dtype=np.float32)), dtype=np.float32)
    rec = np.asarray(inner.reconstruct(xs), dtype=np.float32).reshape(len(xs), -1)
    r = np.sort((xs.reshape(len(xs), -1) - rec) ** 2, axis=1)[:, ::-1]
    return {
        "mean": r.mean(1),
        "max": r[:, 0],
        "top4": r[:, :4].mean(1),
        "top16": r[:, :16].mean(1),
        "top64": r[:, :64].mean(1),
    }


def residual_score_table(
    result: benchmark.BenchmarkResult, data: datasets.PHBenchmark, real=None
) -> pd.DataFrame:
    """Overall and per-class ROC-AUC of each :data:`RESIDUAL_SCORES` variant of each
    reconstruction detector of ``result`` (its first seed's model, not retrained),
    and, with ``real`` frames, the AUC on each injected fault (:func:`inject_faults`).
    Rows: (detector, score); columns: ``all``, the classes, then the faults."""
    x_test = np.asarray(data.x_test, dtype=np.float32)
    classes = result.classes
    normal = classes == metrics.NORMAL
    faulted = inject_faults(real) if real is not None else {}
    rows = {}
    for name, det in result.fitted.items():
        if result.spaces.get(name) != "pixel":
            continue  # a latent-space score of a model already in the table
        test = residual_scores(det, x_test)
        if test is None:
            continue
        clean = residual_scores(det, real) if real is not None else None
        bad = {f: residual_scores(det, fr) for f, fr in faulted.items()}
        for v in RESIDUAL_SCORES:
            s = test[v]
            row = {"all": metrics.roc_auc((~normal).astype(int), s)}
            for cls in sorted(set(classes[~normal])):
                keep = normal | (classes == cls)
                row[cls] = metrics.roc_auc((classes[keep] == cls).astype(int), s[keep])
            for f in faulted:
                y = np.r_[np.zeros(len(real)), np.ones(len(real))]
                row[f] = metrics.roc_auc(y, np.r_[clean[v], bad[f][v]])
            rows[name, v] = row
    out = pd.DataFrame(rows).T
    out.index.names = ["detector", "score"]
    return out
