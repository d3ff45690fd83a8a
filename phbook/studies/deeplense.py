"""The DeepLense-like regime of chapter 10: the paper's four networks where they work.

Alexander et al. :cite:`alexander2020decoding` measured a restricted Boltzmann
machine, a deep convolutional autoencoder (DCAE), a convolutional VAE and an
adversarial autoencoder (AAE) on DeepLense simulations whose macro lens and source
population are fixed (DeepLenseSim Model I). On the book's default lenses, whose macro
model varies in thirteen parameters, the four sit near chance. This study trains the
same four on ``phbook.sim.lensing.simulate(..., regime="deeplense")`` and returns
their ROC-AUCs beside the paper's. The VAE follows the paper's schedule:
reconstruction only for ``vae_delay`` epochs, then the KL weight ramped from 0 to 1
over ``vae_warmup`` epochs (:class:`phbook.models.vae.BetaVAE`'s ``kl_delay`` and
``kl_warmup``). The AAE is the convolutional autoencoder itself plus a latent
discriminator (:class:`phbook.models.aae.AdversarialAutoencoder` with
``architecture="conv"``), trained as long and as fast as the autoencoder, so the two
differ by the adversary (and by the scale of the squared error, summed over pixels by
the AAE and averaged by the autoencoder, which Adam hardly notices), the comparison the
paper makes. Every network, the VAE included, trains for the same ``epochs`` (one
size for all): with fewer for the autoencoders, they were still learning and the
comparison measured training length. Every network is scored by its reconstruction
error, as in the paper's code
(github.com/DeepLense-Unsupervised/unsupervised-lensing keeps a reconstruction loss per
model).

A single training run's ROC-AUC moves with the seed (weights and batch order):
``run(seed=...)`` trains every network with another seed, and ``bench/case_studies.py``
averages three.

Used by chapter 10 and by ``bench/case_studies.py`` (``deeplense_regime_auc``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import config, detectors, metrics, transforms
from ..lensfit import sky_variance
from ..sim import lensing

__all__ = ["PAPER", "MODELS", "DeepLenseResult", "paper_models", "run"]

#: ROC-AUCs of Alexander et al. (2020) on their simulations: (fixed, varying) redshift.
PAPER = {
    "RBM": (0.515, 0.509),
    "conv AE": (0.730, 0.670),
    "conv VAE": (0.899, 0.735),
    "AAE": (0.932, 0.769),
}
#: The paper's ordering, worst to best.
MODELS = tuple(PAPER)


@dataclass
class DeepLenseResult:
    """Test sets, scores, AUCs and CPU seconds of one run of :func:`run`."""

    test: dict
    scores: dict
    auc: pd.DataFrame
    seconds: dict = field(default_factory=dict)

    def ordered(self, redshift: str = "fixed") -> bool:
        """Whether the AUCs follow the paper's ordering RBM < DCAE < CVAE < AAE."""
        values = self.auc.loc[list(MODELS), f"ours, {redshift}"].to_numpy()
        return bool(np.all(np.diff(values) > 0))


def paper_models(
    size, redshift: str, noise_floor: float, seed: int = 0, regime: str = "deeplense"
) -> tuple:
    """``(stretch, models)``: the four models of Alexander et al., sized by ``size``
    (``config.sizes("deeplense")``) and seeded by ``seed``, and the transform of the
    images they see; ``regime`` (of the lenses they will see) enters only the names of
    their checkpoints.

    The images go through a square-root stretch (:class:`phbook.transforms.
    SqrtStretch`, ``noise_floor`` the sky and read-noise variance in counts), which
    gives every pixel the same noise variance ``sigma2``: a squared error is then a
    chi-square. The VAE's decoder is a Gaussian of that variance, so its loss is
    ``recon / (2 sigma2) + w * KL`` with the KL weight ``w`` ramped from 0 to 1, which
    is ``recon + w * beta * KL`` with ``beta = 2 sigma2`` (the form
    :class:`phbook.models.vae.BetaVAE` takes). The RBM scales the images to [0, 1].
    """
    common = {"epochs": size.epochs, "batch_size": size.batch_size, "seed": seed}
    arch = {"latent_dim": size.latent_dim, "channels": size.channels}
    # the DeepLense regime keeps its historical names; any other gets its own
    tag = (
        f"{redshift}-seed{seed}"
        if regime == "deeplense"
        else f"{regime}-{redshift}-seed{seed}"
    )
    stretch = transforms.SqrtStretch(noise_floor, x_max=5000.0)
    beta = 2.0 * stretch.noise_variance
    return stretch, {
        "RBM": detectors.RBMDetector(
            n_components=size.rbm_components, n_iter=size.rbm_iter, random_state=seed
        ),
        "conv AE": detectors.AutoencoderDetector(
            model_kwargs={**arch, "l1": 0.0},
            fit_kwargs=common,
            name=f"deeplense-ae-{tag}",
        ),
        "conv VAE": detectors.VAEDetector(
            model_kwargs={
                **arch,
                "beta": beta,
                "kl_delay": size.vae_delay,
                "kl_warmup": size.vae_warmup,
            },
            fit_kwargs=common,
            name=f"deeplense-vae-{tag}",
            score="recon",
        ),
        "AAE": detectors.AAEDetector(
            size.latent_dim,
            size.channels,
            epochs=size.epochs,
            batch_size=size.batch_size,
            adv_weight=size.aae_adv_weight,
            architecture="conv",
            name=f"deeplense-aae-{tag}",
            seed=seed,
        ),
    }


def run(
    redshifts=None,
    profile: str | None = None,
    progress: bool | None = False,
    seed: int = 0,
    regime: str = "deeplense",
) -> DeepLenseResult:
    """Simulate the DeepLense-like sets, train the four models, score the test sets.

    ``redshifts``: the redshift sets to run (default: the profile's ``redshifts``);
    ``seed``: the seed of every network's weights and batch order (the data stay the
    same); ``regime``: the lenses (:func:`phbook.sim.lensing.simulate`'s), by default
    the DeepLense-like ones; ``"default"`` trains and scores the same networks, the
    same way, on the chapter's varied lenses (the control of chapter 10).

    Training sets hold smooth lenses only (``n_train``); test sets equal thirds of
    normal, cdm and vortex lenses (``n_test``), all simulated and cached.
    """
    import torch

    size = config.sizes("deeplense", profile)
    redshifts = tuple(size.redshifts if redshifts is None else redshifts)
    test, scores, seconds, rows = {}, {}, {}, {m: {"model": m} for m in MODELS}
    for redshift in redshifts:
        kw = {
            "redshift": redshift,
            "regime": regime,
            "num_pix": size.num_pix,
            "progress": progress,
        }
        train = lensing.load_or_simulate(
            size.n_train, seed=21, fractions={"normal": 1}, **kw
        )
        test[redshift] = lensing.load_or_simulate(size.n_test, seed=22, **kw)
        floor = float(sky_variance(train.images))
        stretch, models = paper_models(size, redshift, floor, seed, regime)
        x_train, x_test = stretch(train.images), stretch(test[redshift].images)
        scores[redshift] = {}
        for name, det in models.items():
            start = time.process_time()
            # each network's initial weights depend on the seed alone, not on what
            # ran before it in this process (and the caller's generator is left alone)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                det.fit(x_train)
            scores[redshift][name] = det.anomaly_score(x_test)
            seconds[redshift, name] = time.process_time() - start
            rows[name][f"ours, {redshift}"] = metrics.roc_auc(
                test[redshift].labels, scores[redshift][name]
            )
    for name in MODELS:
        for i, redshift in enumerate(("fixed", "varying")):
            if redshift in redshifts:
                rows[name][f"paper, {redshift}"] = PAPER[name][i]
    auc = pd.DataFrame(list(rows.values())).set_index("model")
    return DeepLenseResult(test, scores, auc, seconds)
