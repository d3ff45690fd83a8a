"""Why the beta-VAE loses to LOF on chapter 9's benchmark: a measurement.

Run ``PHBOOK_PROFILE=quick .venv/bin/python bench/deep_diagnosis.py``.

The beta-VAE's loss is the summed squared error plus ``beta`` times the KL divergence:
a Gaussian decoder of fixed variance ``sigma^2 = 1 / 2`` per pixel (at ``beta = 1``)
in asinh-stretched units. When the pixels' real noise is far below that, the KL term
outweighs what the reconstruction gains from using a latent dimension, so the encoder
switches most of them off (posterior collapse) and the reconstruction is blurred:
every frame looks alike, and a residual score cannot tell anomalies apart. The script
trains the benchmark's VAE with several ``beta`` (the same epochs and data), and
prints, for each, the active latent units, the training frames' mean squared error
per pixel (the noise level the decoder reaches), and the ROC-AUC of several scores of
the same model on the simulated test set and on the real frames with injected faults
(:func:`phbook.studies.sidebyside.inject_faults`). The last line is one JSON object:
``{"beta": {"active_units", "pixel_mse", "auc": {score: auc}, "faults": {...}}}``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from phbook import config, detectors, metrics, transforms  # noqa: E402
from phbook.models.vae import active_units  # noqa: E402
from phbook.studies import benchmark, sidebyside  # noqa: E402

BETAS = (1.0, 0.1, 0.01)


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main() -> dict:
    size = config.sizes("benchmark")
    say(f"profile {config.profile()}, load average {os.getloadavg()[0]:.1f}")
    data = benchmark.load_data(size)
    x_train = np.asarray(data.x_train, dtype=np.float32)
    x_fit = x_train[int(round(0.1 * len(x_train))) :]
    x_test = np.asarray(data.x_test, dtype=np.float32)
    labels = (np.asarray(data.classes_test) != "normal").astype(int)
    frames = benchmark.real_frames()
    faulted = sidebyside.inject_faults(frames.images) if frames is not None else {}
    stretch = transforms.AsinhStretch()
    out = {}
    for beta in BETAS:
        config.seed_everything(0)
        t0 = time.perf_counter()
        det = detectors.Transformed(
            detectors.VAEDetector(
                model_kwargs={"latent_dim": 32, "beta": beta},
                fit_kwargs={
                    "epochs": size.vae_epochs,
                    "batch_size": size.batch_size,
                    "lr": 2e-3,
                    "seed": 0,
                },
                score="recon_max",
            ),
            stretch,
        ).fit(x_fit)
        fit_s = time.perf_counter() - t0
        inner = det.detector_
        with torch.no_grad():
            mu = inner.transform(stretch(x_fit[:2000]))
        units = active_units(torch.as_tensor(mu))
        res_fit = sidebyside.residual_scores(det, x_fit[:2000])
        res = sidebyside.residual_scores(det, x_test)
        aucs = {k: metrics.roc_auc(labels, v) for k, v in res.items()}
        inner.score, inner.n_samples = "elbo", 4
        aucs["elbo"] = metrics.roc_auc(labels, det.anomaly_score(x_test))
        faults = {}
        if frames is not None:
            clean = sidebyside.residual_scores(det, frames.images)
            for f, fr in faulted.items():
                bad = sidebyside.residual_scores(det, fr)
                y = np.r_[np.zeros(len(fr)), np.ones(len(fr))]
                faults[f] = {
                    k: round(metrics.roc_auc(y, np.r_[clean[k], bad[k]]), 4)
                    for k in ("mean", "max", "top16")
                }
        out[str(beta)] = {
            "active_units": units,
            "pixel_mse": round(float(res_fit["mean"].mean()), 5),
            "fit_s": round(fit_s, 1),
            "auc": {k: round(v, 4) for k, v in aucs.items()},
            "faults": faults,
        }
        say(
            f"beta {beta:g}: {units}/32 active units, training MSE per pixel "
            f"{out[str(beta)]['pixel_mse']:.4f}, AUC "
            + ", ".join(f"{k} {v:.3f}" for k, v in aucs.items())
        )
        for f, v in faults.items():
            say(f"    {f:11s} " + ", ".join(f"{k} {a:.3f}" for k, a in v.items()))
    return out


if __name__ == "__main__":
    print(json.dumps(main()), flush=True)
