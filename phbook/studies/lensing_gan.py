"""Chapter 10's contamination study on lenses: the seed proposal's GAN.

A progressively grown WGAN-GP with a ClusterGAN encoder
(:class:`phbook.models.pgan.ProgressiveEncoderGAN`) is trained on simulated smooth
lenses of which a fraction (:data:`LEVELS`) has been replaced by lenses with
substructure (CDM subhalos or a vortex, in equal numbers), in two variants:

``"with encoder"``
    the encoder is trained with the generator (ClusterGAN's latent losses and the
    cycle term ``||G(z) - G(E(G(z)))||_1``), then refined on the real training images
    by f-AnoGAN's izi_f objective;
``"without encoder"``
    the plain progressive WGAN-GP, then a fresh encoder trained by izi_f against the
    frozen generator and critic (f-AnoGAN's two stages).

Both score a test image with f-AnoGAN's ``MSE(x, G(E(x))) + kappa * MSE(f(x),
f(G(E(x))))``; the izi_f stage has the same length in both, so the variants differ
only in whether the encoder was trained with the generator. Images are the chapter's
64x64 lenses, asinh-stretched and binned 2x2 to 32x32. Chapter 10 and
``bench/case_studies.py`` call :func:`run_study` with the same names, so a bench run
after the chapter loads its trained networks.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import lensfit, metrics, transforms
from .. import train as training
from ..models import gan as G
from ..models.pgan import ProgressiveEncoderGAN
from ..sim import lensing

__all__ = [
    "LEVELS",
    "VARIANTS",
    "bin2",
    "chapter_stretch",
    "lens_data",
    "contaminated",
    "train_variant",
    "run_study",
    "summary",
    "drops",
    "verdict",
    "plot_study",
    "VARIANT_LABELS",
]

#: Fractions of substructure lenses in the training set.
LEVELS = (0.0, 0.01, 0.05, 0.10, 0.20)
#: The two ways of training the encoder.
VARIANTS = ("with encoder", "without encoder")
#: What each variant means, for figure legends: both have an encoder; they differ in
#: when it is trained.
VARIANT_LABELS = {
    "with encoder": "encoder trained with the GAN",
    "without encoder": "encoder trained after it (f-AnoGAN)",
}


def bin2(x: np.ndarray) -> np.ndarray:
    """Mean over 2x2 pixel blocks: ``(N, 1, H, W)`` or ``(N, H, W)`` ->
    ``(N, 1, H/2, W/2)``."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    n, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"image sides must be even, got {h}x{w}")
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5)).astype(np.float32)


def chapter_stretch(normal_images: np.ndarray) -> transforms.AsinhStretch:
    """Chapter 10's asinh stretch: softening at the sky noise of the training images
    (:func:`phbook.lensfit.sky_variance`), 5000 e- mapped to 1."""
    sky = float(lensfit.sky_variance(normal_images))
    return transforms.AsinhStretch(softening=float(np.sqrt(sky)), x_max=5000.0)


def lens_data(
    size: Mapping[str, Any],
    normal_images: np.ndarray,
    stretch,
    *,
    redshift: str = "fixed",
    seed: int = 21,
    simulate_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """The study's images, stretched and binned to 32x32.

    ``normal``: the chapter's smooth training lenses (``normal_images``);
    ``substructure``: a pool of ``size["n_sub"]`` simulated lenses, half with CDM
    subhalos, half with a vortex (seed ``seed``); ``x_test``, ``y_test``:
    ``size["n_test"]`` simulated test lenses in thirds (seed ``seed + 1``) and their
    labels (1 = substructure). The simulations are cached
    (:func:`phbook.sim.lensing.load_or_simulate`, which also gets
    ``simulate_kwargs``, e.g. another simulator regime's ``settings``; the normal
    images must then come from the same regime).
    """
    extra = dict(simulate_kwargs or {})
    sub = lensing.load_or_simulate(
        int(size["n_sub"]),
        seed=seed,
        fractions={"cdm": 1, "vortex": 1},
        redshift=redshift,
        progress=False,
        **extra,
    )
    test = lensing.load_or_simulate(
        int(size["n_test"]), seed=seed + 1, redshift=redshift, progress=False, **extra
    )
    return {
        "normal": bin2(stretch(normal_images)),
        "substructure": bin2(stretch(sub.images)),
        "x_test": bin2(stretch(test.images)),
        "y_test": np.asarray(test.labels),
        "test_classes": np.asarray(test.classes),
    }


def contaminated(
    normal: np.ndarray, substructure: np.ndarray, fraction: float, n: int
) -> np.ndarray:
    """A training set of ``n`` images of which ``round(fraction * n)`` have
    substructure: the first images of each pool, so the sets are nested by level."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must lie in [0, 1), got {fraction}")
    k = int(round(fraction * n))
    if n - k > len(normal) or k > len(substructure):
        raise ValueError(
            f"{n - k} normal and {k} substructure images asked, pools hold "
            f"{len(normal)} and {len(substructure)}"
        )
    return np.concatenate([normal[: n - k], substructure[:k]]).astype(np.float32)


def _tag(fraction: float) -> str:
    return f"c{round(fraction * 100):02d}"


def train_variant(
    x: np.ndarray,
    size: Mapping[str, Any],
    *,
    simultaneous: bool,
    seed: int,
    name: str | None = None,
) -> G.IziFEncoder:
    """Train one variant on ``x`` (32x32 images) and return its izi_f scorer.

    ``size`` holds ``n_continuous``, ``n_clusters``, ``channels``, ``epochs``,
    ``encoder_epochs``, ``batch_size``, ``lr``, ``encoder_lr``, ``n_critic`` and
    ``kappa``. With ``name``, both stages go through :func:`phbook.train.load_or_train`
    checkpoints (``{name}-gan`` and ``{name}-izif``).
    """
    torch.manual_seed(seed)
    model = ProgressiveEncoderGAN(
        size["n_continuous"],
        size["n_clusters"],
        tuple(size["channels"]),
        simultaneous=simultaneous,
        n_critic=size["n_critic"],
    )
    if model.generator.image_side != x.shape[-1]:
        raise ValueError(
            f"channels {size['channels']} make {model.generator.image_side}-pixel "
            f"images, the data are {x.shape[-1]} pixels"
        )
    gan_kw = {"epochs": size["epochs"], "batch_size": size["batch_size"]}
    gan_kw.update(lr=size["lr"], seed=seed, progress=False)
    _fit(model, x, None if name is None else f"{name}-gan", gan_kw)
    model.grow_full().eval()
    torch.manual_seed(seed + 1)
    encoder = copy.deepcopy(model.encoder)
    if not simultaneous:  # f-AnoGAN: a fresh encoder, trained only by izi_f
        for layer in encoder.modules():
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
    izif = G.IziFEncoder(
        encoder, copy.deepcopy(model.generator), copy.deepcopy(model.critic), size["kappa"]
    )
    enc_kw = {"epochs": size["encoder_epochs"], "batch_size": size["batch_size"]}
    enc_kw.update(lr=size["encoder_lr"], seed=seed + 1, progress=False)
    _fit(izif, x, None if name is None else f"{name}-izif", enc_kw)
    return izif.eval()


def _fit(model, x, name, kwargs) -> None:
    if name is None:
        training.fit(model, x, **kwargs)
    else:
        training.load_or_train(name, model, x, **kwargs)


def _score(izif: G.IziFEncoder, x: np.ndarray, batch: int = 512) -> np.ndarray:
    with torch.no_grad():
        parts = [
            izif.score(torch.from_numpy(x[i : i + batch])).numpy()
            for i in range(0, len(x), batch)
        ]
    return np.concatenate(parts)


def _latent_norm(izif: G.IziFEncoder, x: np.ndarray, batch: int = 512) -> np.ndarray:
    """Berg et al.'s cue: the norm of an image's continuous code ``z_n`` under the
    scorer's encoder (:meth:`phbook.models.pgan.ClusterEncoder.split`)."""
    with torch.no_grad():
        parts = [
            izif.encoder.split(torch.from_numpy(x[i : i + batch]))[0].norm(dim=1).numpy()
            for i in range(0, len(x), batch)
        ]
    return np.concatenate(parts)


def run_study(
    normal: np.ndarray,
    substructure: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    size: Mapping[str, Any],
    *,
    levels: Sequence[float] = LEVELS,
    seeds: Sequence[int] | None = None,
    name: str | None = "ch10-pgan",
) -> pd.DataFrame:
    """ROC-AUC of both variants at every level and seed: one row each, with columns
    ``variant``, ``fraction``, ``seed``, ``auc`` (the izi_f residual), ``auc_norm``
    (Berg et al.'s cue, the norm of the code :func:`_latent_norm`) and ``cpu_s``
    (training and scoring).

    ``normal`` and ``substructure`` are the pools of 32x32 training images, ``x_test``
    and ``y_test`` the test images and their labels (1 = substructure). ``seeds``
    defaults to ``range(size["n_seeds"])``.
    """
    seeds = list(range(int(size["n_seeds"]))) if seeds is None else list(seeds)
    rows = []
    for fraction in levels:
        x = contaminated(normal, substructure, fraction, int(size["n_train"]))
        for variant in VARIANTS:
            simultaneous = variant == VARIANTS[0]
            for seed in seeds:
                t0 = time.process_time()
                tag = None
                if name is not None:
                    kind = "sim" if simultaneous else "post"
                    tag = f"{name}-{kind}-{_tag(fraction)}-s{seed}"
                izif = train_variant(
                    x, size, simultaneous=simultaneous, seed=seed, name=tag
                )
                auc = metrics.roc_auc(y_test, _score(izif, x_test))
                auc_norm = metrics.roc_auc(y_test, _latent_norm(izif, x_test))
                rows.append(
                    {
                        "variant": variant,
                        "fraction": float(fraction),
                        "seed": int(seed),
                        "auc": float(auc),
                        "auc_norm": float(auc_norm),
                        "cpu_s": time.process_time() - t0,
                    }
                )
    return pd.DataFrame(rows)


def summary(results: pd.DataFrame, value: str = "auc") -> pd.DataFrame:
    """Mean and standard deviation (over seeds) of the AUC per level and variant
    (columns named by :data:`VARIANT_LABELS`: both variants have an encoder);
    ``value="auc_norm"`` for the latent norm's."""
    table = results.pivot_table(
        index="fraction", columns="variant", values=value, aggfunc=["mean", "std"]
    )
    table = table.rename(columns=VARIANT_LABELS, level="variant")
    table.index = [f"{f:.0%}" for f in table.index]
    table.index.name = "substructure in training"
    return table


def drops(results: pd.DataFrame, high: float = 0.10, value: str = "auc") -> pd.DataFrame:
    """Per variant: the AUC lost from 0 to ``high`` contamination, seed by seed
    (``AUC(0) - AUC(high)`` of the same seed), as its mean and standard deviation;
    ``value="auc_norm"`` for the latent norm's."""
    out = {}
    for variant, part in results.groupby("variant"):
        wide = part.pivot(index="seed", columns="fraction", values=value)
        per_seed = wide[0.0] - wide[high]
        out[variant] = {
            "mean": float(per_seed.mean()),
            "sd": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else math.nan,
            "n_seeds": int(len(per_seed)),
        }
    return pd.DataFrame(out).T.loc[list(VARIANTS)]


def verdict(drop: pd.DataFrame) -> tuple[bool, str]:
    """Is the drop smaller with simultaneous encoder training, beyond the scatter?

    The rule: the difference of the mean drops (without minus with) must exceed the
    seed-to-seed scatter of that difference, ``sqrt(sd_with^2 + sd_without^2)``, the
    standard deviation of a difference of one seed's drops. Returns the answer and a
    sentence saying it with the numbers.
    """
    w, wo = drop.loc["with encoder"], drop.loc["without encoder"]
    diff = wo["mean"] - w["mean"]
    scatter = math.sqrt(w["sd"] ** 2 + wo["sd"] ** 2)
    holds = bool(np.isfinite(scatter) and diff > scatter)
    numbers = (
        f"the AUC lost from 0 to 10% substructure is {w['mean']:+.3f} "
        f"(sd {w['sd']:.3f}) with simultaneous encoder training and "
        f"{wo['mean']:+.3f} (sd {wo['sd']:.3f}) without, over "
        f"{int(w['n_seeds'])} seeds: a difference of {diff:+.3f} against a "
        f"seed-to-seed scatter of {scatter:.3f}"
    )
    if holds:
        text = (
            f"On these lenses {numbers}, so training the encoder with the generator "
            "does make the GAN lose less to contamination, beyond the scatter."
        )
    elif round(diff, 3) > 0:  # a difference that shows at the printed precision
        text = (
            f"On these lenses {numbers}. The drop is smaller with simultaneous "
            "encoder training, but not beyond the seed-to-seed scatter: this study "
            "does not show the effect."
        )
    else:
        text = (
            f"On these lenses {numbers}. The drop is not smaller with simultaneous "
            "encoder training: this study does not show the effect."
        )
    return holds, text.replace("-0.000", "0.000").replace("+0.000", "0.000")


def plot_study(results: pd.DataFrame, ax=None):
    """AUC against contamination, mean +- sd over seeds, one line per variant."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4))
    for i, variant in enumerate(VARIANTS):
        part = results[results["variant"] == variant]
        stats = part.groupby("fraction")["auc"].agg(["mean", "std"])
        shift = (i - 0.5) * 0.003  # a small offset keeps the error bars apart
        ax.errorbar(
            100 * (stats.index + shift),
            stats["mean"],
            yerr=stats["std"].fillna(0.0),
            marker="o",
            capsize=3,
            label=VARIANT_LABELS[variant],
        )
    ax.axhline(0.5, color="0.6", lw=0.8, ls="--")
    ax.set_xlabel("substructure lenses in training (%)")
    ax.set_ylabel("ROC-AUC (mean $\\pm$ sd over seeds)")
    # below the axes: inside, the labels would cover error bars
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    return ax
