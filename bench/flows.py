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

* the VQ-VAE of chapter 3b: codebook perplexity of the training codes, ROC-AUC of its
  best score (reconstruction or code-map prior) beside the beta-VAE of chapter 3;
* FFJORD (the flow VAE with a continuous normalizing flow, chapter 7): the largest
  difference between its integrated log-determinant and a brute-force Jacobian's on
  held-out codes, its negative bounds, ROC-AUC, and function evaluations per solve;
  and FFJORD as a density of whole frames (nats per pixel, ROC-AUC, NFE).

The models use the checkpoint names of the chapters, so after the chapters have run the
benchmark loads them (their stored training speed is reported). The last line is one
JSON object with ``pixelcnn_bits_per_pixel``, ``pixelcnn_auc``,
``pixelcnn_auc_corrected``, ``best_flow_auc``, ``vqvae_perplexity``,
``vqvae_codebook_size``, ``vqvae_auc``, ``beta_vae_auc``, ``ffjord_logdet_abs_error``,
``ffjord_auc``, ``ffjord_nfe`` and ``profile``.

    PHBOOK_PROFILE=quick .venv/bin/python bench/flows.py
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import torch

from phbook import config, datasets, detectors, metrics, train, transforms
from phbook.models import ffjord, flows
from phbook.models import vae as V


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


def ffjord_frames(size, ds) -> dict:
    """FFJORD as a density of whole frames (256 dimensions): AUC, NFE, speed."""
    stretch = transforms.AsinhStretch()
    x_train = stretch(ds.x_train)[:, None]
    x_test = stretch(ds.x_test)[:, None]
    normal = ds.classes_test == "normal"
    det = detectors.FFJORDDensityDetector(
        hidden=size.ffjord_hidden,
        tol=size.ffjord_tol,
        fit_kwargs={"epochs": size.flow_epochs, "batch_size": 128, "lr": 1e-3},
        name="bench-ffjord-frames",
    ).fit(x_train)
    t0 = time.perf_counter()
    nats = det.anomaly_score(x_test)
    score_s = time.perf_counter() - t0
    out = {
        "ffjord_frame_auc": metrics.roc_auc(ds.labels_test, nats),
        "ffjord_frame_nats_per_pixel": float(nats[normal].mean()),
        "ffjord_frame_nfe": det.nfe_,
        "ffjord_frame_images_per_s": _speed(det.history_),
        "ffjord_frame_score_images_per_s": len(x_test) / score_s,
    }
    _log(
        f"[ffjord frames] {out['ffjord_frame_nats_per_pixel']:.3f} nats/pixel "
        f"(stretched frames), AUC {out['ffjord_frame_auc']:.3f}, NFE "
        f"{out['ffjord_frame_nfe']}, scoring {out['ffjord_frame_score_images_per_s']:.0f}"
        " frames/s"
    )
    return out


def vqvae(size) -> dict:
    """Train (or load) the VQ-VAE of chapter 3b and chapter 3's medium beta-VAE."""
    ds = datasets.ph_benchmark(
        size.n_train, size.n_test_normal, size.n_test_per_class, seed=0
    )
    stretch = transforms.AsinhStretch()
    x_train = stretch(ds.x_train)[:, None]
    x_test = stretch(ds.x_test)[:, None]
    det = detectors.VQVAEDetector(
        model_kwargs={
            "n_codes": size.n_codes,
            "code_dim": size.code_dim,
            "channels": size.channels,
        },
        prior_kwargs={"channels": size.prior_channels, "n_layers": size.prior_layers},
        fit_kwargs={"epochs": size.epochs, "batch_size": size.batch_size, "lr": 2e-3},
        prior_fit_kwargs={
            "epochs": size.prior_epochs,
            "batch_size": size.batch_size,
            "lr": 3e-3,
        },
        name="ch03b-vqvae",
    ).fit(x_train)
    parts = det.score_parts(x_test)
    auc = {k: metrics.roc_auc(ds.labels_test, v) for k, v in parts.items()}
    _log("[vqvae] ROC-AUC per score: " + ", ".join(f"{k} {v:.3f}" for k, v in auc.items()))
    # chapter 3's medium beta-VAE, same data, same checkpoint
    size3 = config.sizes("beta_vae")
    n_val = len(x_train) // 10
    vae = V.BetaVAE(
        image_size=16, latent_dim=32, beta=V.BETAS["medium"], l1_weight=V.L1_WEIGHT
    )
    vae, _ = train.load_or_train(
        "vae-beta-medium",
        vae,
        x_train[n_val:],
        x_val=x_train[:n_val],
        epochs=size3.epochs,
        batch_size=size3.batch_size,
        lr=2e-3,
    )
    vae_auc = {}
    for score in ("recon", "recon_max", "elbo", "kl"):
        vdet = detectors.VAEDetector(vae, train=False, score=score, n_samples=4)
        vdet.fit(x_train[n_val:])
        vae_auc[score] = metrics.roc_auc(ds.labels_test, vdet.anomaly_score(x_test))
    best, best_vae = max(auc, key=auc.get), max(vae_auc, key=vae_auc.get)
    out = {
        "vqvae_perplexity": float(det.perplexity_),
        "vqvae_codebook_size": int(size.n_codes),
        "vqvae_auc": float(auc[best]),
        "vqvae_best_score": best,
        "vqvae_auc_recon": float(auc["recon"]),
        "vqvae_auc_prior": float(auc["prior"]),
        "vqvae_images_per_s": _speed(det.history_),
        "beta_vae_auc": float(vae_auc[best_vae]),
        "beta_vae_best_score": best_vae,
    }
    _log(
        f"[vqvae] perplexity {out['vqvae_perplexity']:.1f} of {size.n_codes} codes; "
        f"best AUC {out['vqvae_auc']:.3f} ({best}) vs beta-VAE "
        f"{out['beta_vae_auc']:.3f} ({best_vae})"
    )
    return out


def ffjord_vae(size, ds) -> dict:
    """Train (or load) the FFJORD flow VAE of chapter 7; log-det check, AUC, NFE."""
    stretch = transforms.AsinhStretch()
    x_train = stretch(ds.x_train)[:, None]
    x_test = stretch(ds.x_test)[:, None]
    normal = ds.classes_test == "normal"
    tol = size.ffjord_tol
    det = detectors.FFJORDVAEDetector(
        n_samples=size.iwae_samples,
        model_kwargs={
            "latent_dim": size.latent_dim,
            "beta": size.beta,
            "kl_warmup": size.kl_warmup,
            "cnf_kwargs": {"hidden": size.ffjord_hidden, "rtol": tol, "atol": tol},
        },
        fit_kwargs={"epochs": size.epochs, "batch_size": size.batch_size, "lr": 1e-3},
        name="ch07-flowvae-ffjord",
    ).fit(x_train)
    t0 = time.perf_counter()
    bounds = det.log_likelihood_bounds(x_test)
    score_s = time.perf_counter() - t0
    nfe = det.nfe_
    model = det.model_
    with torch.no_grad():
        xb = torch.as_tensor(x_test[normal][:8]).to(next(model.parameters()).device)
        mu, _, ctx = model.encode_with_context(xb)
    check = ffjord.logdet_check(model.flows, mu, ctx)
    out = {
        "ffjord_logdet_abs_error": float(check["abs_error"]),
        "ffjord_auc": metrics.roc_auc(ds.labels_test, -bounds["iwae"]),
        "ffjord_neg_iwae": float(-bounds["iwae"][normal].mean()),
        "ffjord_nats_per_pixel": float(-bounds["iwae"][normal].mean()) / x_test[0].size,
        "ffjord_nfe": int(nfe),
        "ffjord_train_nfe": float(det.history_["train_nfe"].median()),
        "ffjord_images_per_s": _speed(det.history_),
        "ffjord_score_images_per_s": len(x_test) / score_s,
    }
    _log(
        f"[ffjord] log-det error {out['ffjord_logdet_abs_error']:.2e} nats, AUC "
        f"{out['ffjord_auc']:.3f}, NFE {nfe} per solve (training median "
        f"{out['ffjord_train_nfe']:.0f}), {out['ffjord_images_per_s']:.0f} img/s"
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
    result.update(ffjord_vae(size7, ds7))
    result.update(ffjord_frames(size7, ds7))
    result.update(vqvae(config.sizes("vqvae")))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
