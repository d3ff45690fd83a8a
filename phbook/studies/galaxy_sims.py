"""Chapter 12's two generative studies of the galaxy lecture, on simulated galaxies.

1. **Simulation against observation** (:func:`likelihood_comparison`): a PixelCNN
   trained on one "observed" population gives ``p(x)`` to galaxies of two simulator
   settings that differ the way the lecture's Illustris/TNG images with and without
   radiative transfer differ (:data:`phbook.sim.galaxies.POST_PROCESSED`: dust lanes
   and star-forming clumps, against the smooth stellar light alone). The simulator
   whose likelihood distribution lies closer to that of held-out observed galaxies
   is the more realistic one.
2. **Generation** (:func:`generate`): a VAE trained on noiseless galaxy images draws
   new ones, shown without and with the survey's noise added, and judged by simple
   morphology statistics (:func:`morphology`) against the training galaxies (the
   lecture's fake COSMOS/Euclid galaxies).

Images are in units of the sky noise (``image / noise_sigma``), the ordinary
galaxies only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.mixture import GaussianMixture

from .. import latent, train, transforms
from ..arrays import batched
from ..models.pixelcnn import PixelCNN
from ..models.vae import BetaVAE
from ..sim import galaxies

__all__ = [
    "POPULATIONS",
    "OBSERVED",
    "OBSERVED_TRAIN",
    "in_sigma",
    "population",
    "LikelihoodComparison",
    "likelihood_comparison",
    "morphology",
    "morphology_distance",
    "Generation",
    "generate",
]

#: The simulated stand-in for observed galaxies (the post-processed setting, own
#: seeds): its training and held-out populations. Every population here is simulated.
OBSERVED_TRAIN = "stand-in 'observed' (simulated, train)"
OBSERVED = "stand-in 'observed' (simulated, held out)"
#: The populations of the likelihood study: name -> (seed, simulator settings).
POPULATIONS = {
    OBSERVED_TRAIN: (21, galaxies.POST_PROCESSED),
    OBSERVED: (22, galaxies.POST_PROCESSED),
    "simulated, post-processed": (23, galaxies.POST_PROCESSED),
    "simulated, stellar light only": (24, {}),
}


def in_sigma(data) -> np.ndarray:
    """Stamps of a simulated set in units of their sky noise, float32 (N, H, W)."""
    sigma = data.params["noise_sigma"].to_numpy(np.float32)[:, None, None]
    return (data.images / sigma).astype(np.float32)


def population(name: str, n: int) -> np.ndarray:
    """``n`` ordinary galaxies of the population ``name`` (:data:`POPULATIONS`), in
    sky-noise units, cached on disk."""
    if name not in POPULATIONS:
        raise ValueError(f"unknown population {name!r}; known: {list(POPULATIONS)}")
    seed, settings = POPULATIONS[name]
    data = galaxies.load_or_simulate(
        n, seed=seed, fractions={"normal": 1}, settings=settings, progress=False
    )
    return in_sigma(data)


@dataclass
class LikelihoodComparison:
    """What :func:`likelihood_comparison` computed."""

    model: PixelCNN  # trained on the stand-in observed galaxies
    history: pd.DataFrame  # its training history
    bits: dict  # population -> bits per pixel of each galaxy (lower = more likely)

    def table(self) -> pd.DataFrame:
        """Per evaluated population: mean and spread of the bits per pixel, and the
        Kolmogorov-Smirnov distance of its distribution to the held-out observed one."""
        from scipy.stats import ks_2samp

        ref = self.bits[OBSERVED]
        rows = {}
        for name, b in self.bits.items():
            rows[name] = {
                "mean bits/pixel": float(np.mean(b)),
                "std": float(np.std(b)),
                "KS distance to 'observed'": float(ks_2samp(b, ref).statistic),
            }
        return pd.DataFrame(rows).T

    def closer(self) -> str:
        """The simulated population whose likelihoods lie closer to the observed."""
        t = self.table()
        sims = [n for n in t.index if n.startswith("simulated")]
        return str(t.loc[sims, "KS distance to 'observed'"].idxmin())


def likelihood_comparison(
    n_train: int,
    n_eval: int,
    *,
    bin: int = 2,
    channels: int = 16,
    n_layers: int = 4,
    epochs: int = 1,
    name: str | None = "ch12-sim-vs-obs",
    seed: int = 0,
) -> LikelihoodComparison:
    """Train a PixelCNN on ``n_train`` observed galaxies and score ``n_eval`` galaxies
    of each other population (:data:`POPULATIONS`) in bits per pixel.

    The stamps are binned by ``bin`` and asinh-stretched as in chapter 12's PixelCNN,
    and the model is trained as there: a tenth of the observed galaxies is held out,
    and the epoch with the lowest loss on them is kept. Only the raw likelihood is
    needed, so there is no background model and no detector threshold. ``seed``
    fixes the initial weights and the order of the batches.
    """
    import torch

    stretch = transforms.AsinhStretch(softening=3.0, x_max=3000.0)

    def prepare(x):
        return stretch(transforms.rebin(x, bin))[:, None]

    x = prepare(population(OBSERVED_TRAIN, n_train))
    n_val = max(1, round(0.1 * len(x)))  # held out: the best epoch's loss
    with torch.random.fork_rng(devices=[]):  # the initial weights depend on seed only
        torch.manual_seed(seed)
        model = PixelCNN(
            1,
            channels,
            n_layers,
            kernel_size=3,
            likelihood="continuous",
            image_size=x.shape[2:],
        )
    fit_kwargs = dict(x_val=x[:n_val], epochs=epochs, batch_size=64, lr=3e-3, seed=seed)
    if name is None:
        history = train.fit(model, x[n_val:], **fit_kwargs)
    else:
        model, history = train.load_or_train(name, model, x[n_val:], **fit_kwargs)
    model.eval()
    # scored in blocks of 64 stamps, which stay in the CPU's cache
    bits = {
        p: batched(model.bits_per_pixel, prepare(population(p, n_eval)), block=64)
        for p in POPULATIONS
        if p != OBSERVED_TRAIN
    }
    return LikelihoodComparison(model, history, bits)


# ----------------------------------------------------------------------- morphology


def morphology(x) -> pd.DataFrame:
    """Simple morphology statistics of centred galaxy stamps ``(N, H, W)``.

    Measured about the stamp centre, within the largest inscribed circle, after
    subtracting the median of the pixels outside 80% of its radius (the sky):
    ``flux`` (sum), ``r50`` (pixels, half-light radius from the curve of growth),
    ``concentration`` ``5 log10(r80 / r20)``, ``asymmetry`` ``sum |x - R180 x| /
    (2 sum |x|)`` (without a background correction, so noise raises it, as in a real
    survey), ``ellipticity`` ``1 - b/a`` from the second moments of the positive
    pixels, and ``background rms`` of the pixels outside 80% of that radius.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise ValueError(f"x must be square stamps (N, H, W), got {x.shape}")
    n, h, _ = x.shape
    c = (h - 1) / 2.0
    yy, xx = np.mgrid[:h, :h]
    r = np.hypot(xx - c, yy - c)
    rmax = h / 2.0
    outer = r > 0.8 * rmax
    background_rms = x[:, outer].std(axis=1)
    # the sky level, from the median of the outer pixels, is subtracted first
    x = x - np.median(x[:, outer], axis=1)[:, None, None]
    inside = r <= rmax
    radii = np.arange(1, int(rmax) + 1)
    grow = np.stack([(x * (r <= k)).sum(axis=(1, 2)) for k in radii], axis=1)
    total = grow[:, -1]
    frac = grow / np.where(total > 0, total, np.nan)[:, None]

    def radius(f):
        out = np.full(n, np.nan)
        for i in range(n):
            above = np.flatnonzero(frac[i] >= f)
            if len(above):
                j = above[0]
                if j == 0:
                    out[i] = radii[0] * f / max(frac[i, 0], 1e-9)
                else:
                    f0, f1 = frac[i, j - 1], frac[i, j]
                    out[i] = radii[j - 1] + (f - f0) / max(f1 - f0, 1e-9)
        return out

    r20, r50, r80 = radius(0.2), radius(0.5), radius(0.8)
    xin = x * inside
    asym = np.abs(xin - xin[:, ::-1, ::-1]).sum(axis=(1, 2)) / (
        2 * np.abs(xin).sum(axis=(1, 2))
    )
    w = np.clip(xin, 0, None)
    wsum = w.sum(axis=(1, 2))
    mx = (w * xx).sum(axis=(1, 2)) / wsum
    my = (w * yy).sum(axis=(1, 2)) / wsum
    dx, dy = xx[None] - mx[:, None, None], yy[None] - my[:, None, None]
    qxx = (w * dx**2).sum(axis=(1, 2)) / wsum
    qyy = (w * dy**2).sum(axis=(1, 2)) / wsum
    qxy = (w * dx * dy).sum(axis=(1, 2)) / wsum
    tr, det = qxx + qyy, qxx * qyy - qxy**2
    disc = np.sqrt(np.maximum(tr**2 / 4 - det, 0))
    lam1, lam2 = tr / 2 + disc, np.maximum(tr / 2 - disc, 0)
    ell = 1 - np.sqrt(lam2 / lam1)
    return pd.DataFrame(
        {
            "flux": total,
            "r50": r50,
            "concentration": 5 * np.log10(r80 / r20),
            "asymmetry": asym,
            "ellipticity": ell,
            "background rms": background_rms,
        }
    )


def morphology_distance(a: pd.DataFrame, b: pd.DataFrame) -> pd.Series:
    """Per statistic, the Kolmogorov-Smirnov distance between two samples' values."""
    from scipy.stats import ks_2samp

    return pd.Series(
        {k: float(ks_2samp(a[k].dropna(), b[k].dropna()).statistic) for k in a.columns}
    )


@dataclass
class Generation:
    """What :func:`generate` computed."""

    model: BetaVAE
    history: pd.DataFrame
    x_train: np.ndarray  # the survey images of the training galaxies (sky-noise units)
    samples: np.ndarray  # decoded means of z ~ N(0, I) (sky-noise units)
    noisy: np.ndarray  # the same with the survey's noise added
    stats: dict  # "training", "generated", "generated + noise" -> morphology table

    def distances(self) -> pd.DataFrame:
        """KS distance of each generated sample's statistics to the training ones."""
        ref = self.stats["training"]
        return pd.DataFrame(
            {
                k: morphology_distance(v, ref)
                for k, v in self.stats.items()
                if k != "training"
            }
        )


def generate(
    n_train: int,
    n_generate: int,
    *,
    epochs: int = 10,
    latent_dim: int = 16,
    batch_size: int = 64,
    n_components: int = 10,
    name: str | None = "ch12-vae-generate",
    seed: int = 0,
) -> Generation:
    """Train a VAE on ``n_train`` ordinary (default-simulator) galaxy models and draw
    ``n_generate`` new ones, without and with the survey's noise.

    As the lecture's fake survey galaxies were made, the VAE
    (:class:`phbook.models.vae.BetaVAE`) learns the galaxies *without* noise (the
    simulator's expected images, in sky-noise units, asinh-stretched as chapter 12's
    f-AnoGAN sees them), and the survey's sky noise (one unit per pixel) is added to
    its samples afterwards. The samples are decoded codes drawn from a Gaussian
    mixture of ``n_components`` fitted to the training codes (chapter 4's recipe),
    un-stretched to sky-noise units; both are compared with the *noisy* survey images
    of the same training galaxies. The KL weight ``beta = 2 sigma_y^2`` is that of a
    pixel noise ``sigma_y`` of the stretched sky noise (chapter 3).
    """
    import torch

    stretch = transforms.AsinhStretch(softening=3.0, x_max=3000.0)
    kw = dict(seed=31, fractions={"normal": 1}, progress=False)
    clean = galaxies.load_or_simulate(n_train, noise=False, **kw)
    survey = galaxies.load_or_simulate(n_train, **kw)  # the same galaxies, noisy
    x_clean, x = in_sigma(clean), in_sigma(survey)
    sigma_y = 1.0 / (stretch.softening * stretch._scale)  # slope of the stretch at 0
    model = BetaVAE(
        x.shape[-1],
        latent_dim=latent_dim,
        beta=2.0 * sigma_y**2,
        channels=(16, 32, 64),
        kl_warmup=max(1, epochs // 4),
    )
    fit_kwargs = dict(epochs=epochs, batch_size=batch_size, lr=2e-3, seed=seed)
    y = stretch(x_clean)
    if name is None:
        history = train.fit(model, y, progress=False, **fit_kwargs)
        model.eval()
    else:
        model, history = train.load_or_train(name, model, y, progress=False, **fit_kwargs)
    # codes drawn from a Gaussian mixture fitted to the training galaxies' posterior
    # means (the aggregate posterior), not from the prior N(0, I): a VAE whose KL
    # term is small leaves regions of the prior that decode to no galaxy
    model = model.cpu().eval()
    mu = latent.encode(model, y[:, None], device="cpu")
    # EM to convergence: sklearn's default of 100 iterations stopped short on the
    # full profile's 16-dimensional codes (a ConvergenceWarning in the book)
    gmm = GaussianMixture(
        n_components, covariance_type="full", max_iter=500, random_state=seed
    )
    z = latent.sample_gmm(gmm.fit(mu.astype(np.float64)), n_generate, seed=seed)
    with torch.no_grad():
        y_gen = model.decode(torch.as_tensor(z, dtype=torch.float32))[:, 0].numpy()
    samples = stretch.inverse(y_gen)
    rng = np.random.default_rng(seed)
    noisy = samples + rng.standard_normal(samples.shape).astype(np.float32)
    stats = {
        "training": morphology(x[:n_generate]),
        "generated": morphology(samples),
        "generated + noise": morphology(noisy),
    }
    return Generation(model, history, x, samples, noisy, stats)
