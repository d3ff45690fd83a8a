"""Benchmarks of the GAN-based detectors of chapters 5 and 6.

Run ``python bench/gan.py`` (``PHBOOK_PROFILE=quick`` for small sizes; the sizes are
chapter 6's, ``phbook.config.sizes("contamination")``, and the checkpoint names are the
chapter's, so a bench run after the chapter loads its models). It prints what it
measures as it goes and, as its last line, one JSON object:

``fanogan_score_frames_per_s``
    frames per second scored by :class:`phbook.detectors.FAnoGANDetector` (one forward
    pass of encoder, generator and critic), wall clock with every core torch uses;
    median of repeats after a warm-up. ``fanogan_score_frames_per_cpu_s`` is the same
    per CPU-second of the process, which stays meaningful on a shared machine.
``anogan_score_frames_per_s``
    the same for :class:`phbook.detectors.AnoGANDetector` (``n_steps`` gradient steps
    of latent search per frame) on the same GAN, measured in the same run.
``auc_drop_fanogan_0_to_10`` / ``auc_drop_simenc_0_to_10``
    ROC-AUC (all anomaly classes against normal frames, simulated held-out set) of
    f-AnoGAN and of the simultaneous-encoder GAN trained on clean data minus the AUC
    when 10 % of the training frames are (unlabelled) anomalies. Positive = damage.

It also prints the per-class ROC-AUC of every GAN-based detector trained on clean data
and the AUC at every contamination level (``auc_by_contamination`` in the JSON).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from phbook import config, datasets, detectors, metrics, transforms  # noqa: E402
from phbook.studies import contamination  # noqa: E402

LEVELS = contamination.LEVELS
REPEATS = {"quick": 3, "full": 5}
SPEED_FRAMES = {"quick": 20_000, "full": 100_000}
ANOGAN_FRAMES = {"quick": 128, "full": 512}
ANOGAN_STEPS = 100


def log(msg: str) -> None:
    print(msg, flush=True)


def median_time(fn, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn()`` over ``repeats`` runs after a warm-up."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def main() -> dict:
    profile = config.profile()
    size = config.sizes("contamination")
    config.seed_everything(0)
    stretch = transforms.AsinhStretch()
    log(
        f"bench/gan.py | profile {profile} | device {config.device()} | "
        f"torch threads {torch.get_num_threads()} | sizes {dict(size)}"
    )
    result: dict = {"profile": profile}
    aucs: dict[str, dict[str, float]] = {}
    fitted = {}
    for c in LEVELS:
        ds = datasets.ph_benchmark(
            size.n_train,
            size.n_test_normal,
            size.n_test_per_class,
            seed=0,
            contamination=c,
        )
        x, x_test = stretch(ds.x_train)[:, None], stretch(ds.x_test)[:, None]
        for label, det in contamination.make_detectors(size, c).items():
            t0 = time.perf_counter()
            det.fit(x)
            variants = {label: None}
            if isinstance(det, detectors.SimultaneousEncoderGANDetector):
                variants[f"{label}, ||E(x)||"] = "latent_norm"
            for name, score in variants.items():
                if score is not None:
                    det = detectors.SimultaneousEncoderGANDetector(
                        **{**det.get_params(), "score": score}
                    ).fit(x)  # loads the checkpoints just written
                auc = metrics.roc_auc(ds.labels_test, det.anomaly_score(x_test))
                aucs.setdefault(name, {})[f"{c:.2f}"] = round(auc, 4)
                log(
                    f"contamination {c:4.0%} | {name:34s} | AUC {auc:.3f} | "
                    f"fit+score {time.perf_counter() - t0:6.1f} s"
                )
                if c == 0.0:
                    fitted[name] = det
        if c == 0.0:
            clean, clean_x, clean_test = ds, x, x_test

    # AnoGAN on the clean f-AnoGAN's GAN; per-class AUCs of every GAN-based detector
    fan = fitted["f-AnoGAN"]
    ano = detectors.AnoGANDetector(
        gan=fan.gan_, n_steps=ANOGAN_STEPS, offset_sample=256, seed=0
    ).fit(clean_x)
    rng = np.random.default_rng(0)
    sub = np.sort(rng.choice(len(clean_test), min(len(clean_test), 1400), replace=False))
    log(
        f"per-class ROC-AUC on the clean simulated held-out set "
        f"(AnoGAN on a random {len(sub)}-frame subset, {ANOGAN_STEPS} steps):"
    )
    tables = {}
    for label, det in {**fitted, "AnoGAN": ano}.items():
        sel = sub if label == "AnoGAN" else slice(None)
        report = metrics.per_class_report(
            det.anomaly_score(clean_test[sel]), clean.classes_test[sel]
        )
        tables[label] = report["auc"].round(4).to_dict()
        log(f"  {label:38s} " + " ".join(f"{k}={v:.3f}" for k, v in tables[label].items()))

    # scoring speed
    n = SPEED_FRAMES[profile]
    frames = np.resize(clean_test, (n,) + clean_test.shape[1:])
    wall, cpu = median_time(lambda: fan.anomaly_score(frames), REPEATS[profile])
    result["fanogan_score_frames_per_s"] = round(n / wall)
    result["fanogan_score_frames_per_cpu_s"] = round(n / cpu)
    log(
        f"f-AnoGAN scoring: {n / wall:,.0f} frames/s wall, {n / cpu:,.0f} per CPU-second "
        f"({n} frames, median of {REPEATS[profile]})"
    )
    m = ANOGAN_FRAMES[profile]
    wall, cpu = median_time(lambda: ano.anomaly_score(frames[:m]), 3)
    result["anogan_score_frames_per_s"] = round(m / wall, 1)
    result["anogan_score_frames_per_cpu_s"] = round(m / cpu, 1)
    log(
        f"AnoGAN scoring ({ANOGAN_STEPS} steps): {m / wall:,.1f} frames/s wall, "
        f"{m / cpu:,.1f} per CPU-second ({m} frames)"
    )

    drop_f = aucs["f-AnoGAN"]["0.00"] - aucs["f-AnoGAN"]["0.10"]
    drop_s = (
        aucs["simultaneous-encoder GAN"]["0.00"] - aucs["simultaneous-encoder GAN"]["0.10"]
    )
    result["auc_drop_fanogan_0_to_10"] = round(drop_f, 4)
    result["auc_drop_simenc_0_to_10"] = round(drop_s, 4)
    log(
        f"AUC drop from 0 % to 10 % contamination: f-AnoGAN {drop_f:+.3f}, "
        f"simultaneous-encoder GAN {drop_s:+.3f}"
    )
    result["auc_by_contamination"] = aucs
    result["per_class_auc_clean"] = tables
    return result


if __name__ == "__main__":
    if "OMP_NUM_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    print(json.dumps(main()))
