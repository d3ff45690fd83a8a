"""Benchmark of chapters 7-8: latent flows in the VAE, the image flow, the PixelCNN.

Prints, as it goes:

* one row per latent flow type (none, planar, the three Sylvester forms, IAF, ConvFlow)
  at equal flow length: negative ELBO and negative IWAE bound on held-out normal frames
  (nats, asinh-normalised frames, Gaussian decoder of variance 1/2), ROC-AUC per anomaly
  class of the IWAE score, and training images per second (median over the epochs
  after the first);
* the image flow (RealNVP): bits per pixel of the integer ADC value (dequantised bound)
  on held-out normal frames and its ROC-AUC;
* the PixelCNN: exact bits per pixel of the integer ADC value on held-out normal frames,
  ROC-AUC of the raw likelihood and of the corrected (combined) score.

The models use the checkpoint names of the chapters, so after the chapters have run the
benchmark loads them (their stored training speed is reported). The last line is one
JSON object with ``pixelcnn_bits_per_pixel``, ``pixelcnn_auc``,
``pixelcnn_auc_corrected``, ``best_flow_auc`` and ``profile``.

    PHBOOK_PROFILE=quick .venv/bin/python bench/flows.py
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd

from phbook import config, datasets, detectors, metrics, transforms
from phbook.models import flows


def _log(msg: str) -> None:
    print(msg, flush=True)


def _speed(history: pd.DataFrame) -> float:
    """Training images per second: median over the epochs after the first (warm-up)."""
    values = history["images_per_s"].to_numpy()
    return float(np.median(values[1:] if len(values) > 1 else values))


def flow_table(size, ds) -> pd.DataFrame:
    """Train (or load) the flow VAE of every flow type; one row per type."""
    stretch = transforms.AsinhStretch()
    x_train = stretch(ds.x_train)[:, None]
    x_test = stretch(ds.x_test)[:, None]
    normal = ds.classes_test == "normal"
    rows = []
    for kind in flows.FLOW_TYPES:
        t0 = time.perf_counter()
        det = detectors.FlowVAEDetector(
            flow=kind,
            n_flows=size.n_flows,
            n_samples=size.iwae_samples,
            model_kwargs={
                "latent_dim": size.latent_dim,
                "beta": size.beta,
                "kl_warmup": size.kl_warmup,
            },
            fit_kwargs={"epochs": size.epochs, "batch_size": size.batch_size, "lr": 1e-3},
            name=f"ch07-flowvae-{kind}",
        ).fit(x_train)
        bounds = det.log_likelihood_bounds(x_test)
        report = metrics.per_class_report(-bounds["iwae"], ds.classes_test)
        row = {
            "flow": kind,
            "neg_elbo": float(-bounds["elbo"][normal].mean()),
            "neg_iwae": float(-bounds["iwae"][normal].mean()),
            "images_per_s": _speed(det.history_),
        }
        row.update({f"auc_{c}": float(v) for c, v in report["auc"].items()})
        rows.append(row)
        _log(
            f"[flows] {kind:22s} -ELBO {row['neg_elbo']:9.3f}  -IWAE {row['neg_iwae']:9.3f}"
            f"  AUC(all) {row['auc_all']:.3f}  {row['images_per_s']:8.0f} img/s"
            f"  ({time.perf_counter() - t0:.0f} s)"
        )
    return pd.DataFrame(rows).set_index("flow")


def image_flow(size, ds) -> dict:
    """Train (or load) the image flow; bits per pixel and AUC."""
    det = detectors.ImageFlowDetector(
        model_kwargs={"hidden": size.flow_hidden, "n_checker": 4, "n_steps": 4},
        fit_kwargs={"epochs": size.flow_epochs, "batch_size": 64, "lr": 1e-3},
        name="ch07-realnvp",
    ).fit(ds.x_train)
    bpp = det.anomaly_score(ds.x_test)
    normal = ds.classes_test == "normal"
    out = {
        "realnvp_bits_per_pixel": float(bpp[normal].mean()),
        "realnvp_auc": metrics.roc_auc(ds.labels_test, bpp),
        "realnvp_images_per_s": _speed(det.history_),
    }
    _log(
        f"[image flow] {out['realnvp_bits_per_pixel']:.3f} bits/pixel (bound), "
        f"AUC {out['realnvp_auc']:.3f}, {out['realnvp_images_per_s']:.0f} img/s"
    )
    return out


def pixelcnn(size, ds) -> dict:
    """Train (or load) the PixelCNN of chapter 8; bits per pixel and AUCs."""
    det = detectors.PixelCNNDetector(
        model_kwargs={
            "channels": size.channels,
            "n_layers": size.n_layers,
            "kernel_size": 3,
            "n_mixtures": 5,
        },
        fit_kwargs={"epochs": size.epochs, "batch_size": size.batch_size, "lr": 3e-3},
        name="ch08-pixelcnn",
        corrected="combined",
    ).fit(ds.x_train)
    parts = det.score_parts(ds.x_test)
    normal = ds.classes_test == "normal"
    raw = metrics.per_class_report(parts["bits_per_pixel"], ds.classes_test)["auc"]
    ratio = metrics.per_class_report(parts["ratio"], ds.classes_test)["auc"]
    comb = metrics.per_class_report(parts["combined"], ds.classes_test)["auc"]
    _log("[pixelcnn] ROC-AUC per class (raw, likelihood ratio, combined):")
    _log(pd.DataFrame({"raw": raw, "ratio": ratio, "combined": comb}).round(3).to_string())
    out = {
        "pixelcnn_bits_per_pixel": float(parts["bits_per_pixel"][normal].mean()),
        "pixelcnn_auc": float(raw["all"]),
        "pixelcnn_auc_ratio": float(ratio["all"]),
        "pixelcnn_auc_corrected": float(comb["all"]),
        "pixelcnn_images_per_s": _speed(det.history_),
    }
    _log(
        f"[pixelcnn] {out['pixelcnn_bits_per_pixel']:.3f} bits/pixel (exact), AUC raw "
        f"{out['pixelcnn_auc']:.3f} -> corrected {out['pixelcnn_auc_corrected']:.3f}"
    )
    return out


def main() -> None:
    config.seed_everything(0)
    prof = config.profile()
    _log(f"[bench/flows] profile {prof}, device {config.device()}")
    size7, size8 = config.sizes("flows"), config.sizes("pixelcnn")
    ds7 = datasets.ph_benchmark(
        size7.n_train, size7.n_test_normal, size7.n_test_per_class, seed=0
    )
    ds8 = datasets.ph_benchmark(
        size8.n_train, size8.n_test_normal, size8.n_test_per_class, seed=0
    )
    result: dict = {"profile": prof}
    result.update(pixelcnn(size8, ds8))
    table = flow_table(size7, ds7)
    _log("[flows] table (negative bounds in nats per frame; AUC of the IWAE score):")
    _log(table.round(3).to_string())
    result.update(image_flow(size7, ds7))
    best = table["auc_all"].drop("none")
    result["best_flow"] = str(best.idxmax())
    result["best_flow_auc"] = float(best.max())
    result["no_flow_auc"] = float(table.loc["none", "auc_all"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
