"""The book's three beta-VAEs, as the PANOSETI pulse-height seed study trained them.

Chapter 3 trains them, chapter 4 studies their latent spaces and ``bench/vae.py``
scores with them: all three get them from :func:`load_or_train`, under the same checkpoint
names, so a model trained once is loaded everywhere else.

The three betas sit around the *noise-matched* value. With the squared-error
reconstruction, ``recon + beta * KL`` is ``beta`` times the negative ELBO (up to a
constant) of a decoder whose pixels carry Gaussian noise of variance
``sigma_x^2 = beta / 2``; the beta that matches the
noise of the data is ``2 sigma_x^2`` (:func:`noise_matched_beta`). The small and large
betas are :data:`BETA_FACTOR` below and above it. All three train with the KL warm-up
(chapter 3 shows why), so all three keep an informative latent space.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA

from .. import train
from ..datasets import BenchmarkData
from ..models import vae as V

__all__ = [
    "BETA_FACTOR",
    "BetaVAEs",
    "noise_variance",
    "noise_matched_beta",
    "book_betas",
    "make_vae",
    "load_or_train",
    "COLLAPSED_KL",
    "CollapseRuns",
    "warmup_vs_collapse",
]

#: the small and large betas are this factor below and above the noise-matched one
BETA_FACTOR = 4.0


def noise_variance(x_fit: np.ndarray, x_val: np.ndarray, n_components: int = 64) -> float:
    """The pixel noise variance of the frames: PCA's residual on held-out frames.

    ``n_components`` principal components of ``x_fit`` hold the showers' structure; what
    they leave of a validation frame is mostly noise. The mean squared residual per
    pixel, divided by the fraction ``(P - k) / P`` of dimensions it lives in, estimates
    the per-pixel noise variance.
    """
    a = np.asarray(x_fit, dtype=np.float64).reshape(len(x_fit), -1)
    b = np.asarray(x_val, dtype=np.float64).reshape(len(x_val), -1)
    n_pixels = a.shape[1]
    if not 0 < n_components < n_pixels:
        raise ValueError(f"n_components must be in (0, {n_pixels}), got {n_components}")
    pca = PCA(n_components=n_components, random_state=0).fit(a)
    residual = b - pca.inverse_transform(pca.transform(b))
    return float((residual**2).mean() * n_pixels / (n_pixels - n_components))


def noise_matched_beta(noise_var: float) -> float:
    """``beta = 2 sigma_x^2``: the KL weight of a decoder that assumes the data's noise."""
    return 2.0 * float(noise_var)


def book_betas(noise_var: float) -> dict[str, float]:
    """The small, medium and large beta: matched, and :data:`BETA_FACTOR` either side
    (two significant digits, so that a tiny change in the noise estimate keeps them)."""
    matched = noise_matched_beta(noise_var)

    def round2(v: float) -> float:
        return float(f"{v:.2g}")

    return {
        "small": round2(matched / BETA_FACTOR),
        "medium": round2(matched),
        "large": round2(matched * BETA_FACTOR),
    }


def make_vae(beta: float, kl_warmup: int = 0) -> V.BetaVAE:
    """The book's beta-VAE for 16x16 frames: 32 latent dimensions, a small L1 penalty."""
    return V.BetaVAE(
        image_size=16, latent_dim=32, beta=beta, l1_weight=V.L1_WEIGHT, kl_warmup=kl_warmup
    )


@dataclass
class BetaVAEs:
    """The three trained models with their betas, loss histories and noise estimate."""

    noise_var: float
    betas: dict[str, float]
    models: dict[str, V.BetaVAE]
    histories: dict[str, pd.DataFrame]

    def __repr__(self) -> str:
        return "beta-VAEs " + ", ".join(f"{n} (beta {b:g})" for n, b in self.betas.items())


def load_or_train(data: BenchmarkData, size, *, lr: float = 2e-3, names=None) -> BetaVAEs:
    """Train (or load) the book's three beta-VAEs on ``data.x_fit``.

    ``size`` gives ``epochs``, ``batch_size`` and ``kl_warmup`` (chapter 3's
    :func:`phbook.config.sizes`). The checkpoints are ``book-vae-small``, ``-medium``
    and ``-large``; the best epoch is chosen after the warm-up (see :mod:`phbook.train`).
    ``names`` (e.g. ``["medium"]``) loads or trains only those models; ``betas`` still
    lists all three.
    """
    noise_var = noise_variance(data.x_fit, data.x_val)
    betas = book_betas(noise_var)
    wanted = list(betas) if names is None else list(names)
    unknown = set(wanted) - set(betas)
    if unknown:
        raise ValueError(f"unknown names {sorted(unknown)}; choose from {list(betas)}")
    models, histories = {}, {}
    for name in wanted:
        beta = betas[name]
        models[name], histories[name] = train.load_or_train(
            f"book-vae-{name}",
            make_vae(beta, kl_warmup=size["kl_warmup"]),
            data.x_fit,
            x_val=data.x_val,
            epochs=size["epochs"],
            batch_size=size["batch_size"],
            lr=lr,
        )
    return BetaVAEs(noise_var, betas, models, histories)


#: a run has collapsed when its validation KL is below this (nats) or no unit is active
COLLAPSED_KL = 0.01


@dataclass
class CollapseRuns:
    """:func:`warmup_vs_collapse`: one row per run in ``table`` (``schedule``, ``seed``,
    ``KL (nats)`` and ``active units`` on the validation frames, ``val recon``,
    ``kept code``) and the loss history of each run, keyed ``(schedule, seed)``."""

    beta: float
    warmup: int
    table: pd.DataFrame
    histories: dict

    def kept(self, schedule: str) -> int:
        """How many runs of ``schedule`` (``"no warm-up"`` or ``"warm-up"``) kept a code."""
        return int(self.table.loc[self.table["schedule"] == schedule, "kept code"].sum())

    def summary(self) -> pd.DataFrame:
        """Per schedule: runs, runs that kept a code, mean KL and mean active units."""
        g = self.table.groupby("schedule", sort=False)
        return pd.DataFrame(
            {
                "runs": g.size(),
                "kept a code": g["kept code"].sum(),
                "mean KL (nats)": g["KL (nats)"].mean(),
                "mean active units": g["active units"].mean(),
            }
        )


def warmup_vs_collapse(
    x_train: np.ndarray,
    x_val: np.ndarray,
    size,
    *,
    beta: float = V.BETA_COLLAPSE,
    seeds=None,
    lr: float = 2e-3,
) -> CollapseRuns:
    """Train :func:`make_vae` at ``beta`` without and with the KL warm-up, once per seed.

    ``size`` (chapter 3's :func:`phbook.config.sizes`) gives ``collapse_n_train``
    frames of ``x_train``, ``collapse_epochs``, ``collapse_warmup`` (epochs),
    ``collapse_seeds`` (unless ``seeds`` is given) and ``batch_size``. The seed sets the
    initial weights and the batch order, so each pair of runs starts from the same
    network. Near the collapse threshold the outcome of one run is a matter of chance;
    several seeds show how the warm-up shifts the odds. Checkpoints
    ``vae-threshold-<schedule>-beta<beta>-seed<seed>``.
    """
    seeds = list(size["collapse_seeds"] if seeds is None else seeds)
    if not seeds:
        raise ValueError("give at least one seed")
    warmup = int(size["collapse_warmup"])
    x = x_train[: size["collapse_n_train"]]
    rows, histories = [], {}
    for seed in seeds:
        for schedule, kl_warmup in (("no warm-up", 0), ("warm-up", warmup)):
            torch.manual_seed(seed)
            model, history = train.load_or_train(
                f"vae-threshold-{'annealed' if kl_warmup else 'plain'}"
                f"-beta{beta:g}-seed{seed}",
                make_vae(beta, kl_warmup=kl_warmup),
                x,
                x_val=x_val,
                epochs=size["collapse_epochs"],
                batch_size=size["batch_size"],
                lr=lr,
                seed=seed,
            )
            dev = next(model.parameters()).device
            with torch.no_grad():
                mu, logvar = model.encode(torch.as_tensor(x_val).to(dev))
            kl = float(V.kl_divergence(mu, logvar).mean())
            units = V.active_units(mu.cpu())
            rows.append(
                {
                    "schedule": schedule,
                    "seed": seed,
                    "KL (nats)": kl,
                    "active units": units,
                    "val recon": float(history["val_recon"].iloc[-1]),
                    "kept code": kl >= COLLAPSED_KL and units > 0,
                }
            )
            histories[schedule, seed] = history
    return CollapseRuns(float(beta), warmup, pd.DataFrame(rows), histories)
