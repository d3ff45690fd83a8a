"""Chapter 6's contamination study: detectors trained on data with unlabelled anomalies.

Chapter 6 and ``bench/gan.py`` train the same detectors, with the same settings and
checkpoint names, at each contamination level of :data:`LEVELS` (the fraction of
training frames that are anomalies, from :func:`phbook.datasets.ph_benchmark`), so a
bench run after the chapter loads its models instead of training them again.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from .. import datasets, detectors
from . import beta_vaes

__all__ = ["LEVELS", "level_tag", "make_detectors", "AE_L1", "noise_matched_beta"]

#: the autoencoder's L1 penalty: chapter 2's choice (its default, the paper's 0.005,
#: switches most of the code off on these frames)
AE_L1 = 1e-5

#: The contamination levels of the study.
LEVELS = (0.0, 0.01, 0.05, 0.10)


def level_tag(contamination: float) -> str:
    """The checkpoint tag of a level: ``c00``, ``c01``, ``c05``, ``c10``."""
    return f"c{round(contamination * 100):02d}"


@functools.lru_cache(maxsize=8)
def _noise_matched_beta(n_train: int, n_test_normal: int, n_test_per_class: int) -> float:
    data = datasets.ph_benchmark_data(
        {
            "n_train": n_train,
            "n_test_normal": n_test_normal,
            "n_test_per_class": n_test_per_class,
        },
        seed=0,
    )
    return beta_vaes.book_betas(beta_vaes.noise_variance(data.x_fit, data.x_val))["medium"]


def noise_matched_beta(size: Mapping[str, Any]) -> float:
    """Chapter 3's noise-matched beta (its "medium" beta-VAE), estimated on the clean
    training frames of the study (the same at every level, so every level trains the
    same model)."""
    return _noise_matched_beta(
        int(size["n_train"]), int(size["n_test_normal"]), int(size["n_test_per_class"])
    )


def make_detectors(size: Mapping[str, Any], contamination: float) -> dict:
    """The study's detectors for one level, unfitted, by name: f-AnoGAN, the
    simultaneous-encoder GAN, the AAE, and the autoencoder and beta-VAE of chapters 2
    and 3 with those chapters' settings (the AE's L1 penalty :data:`AE_L1`; the
    noise-matched beta with a KL warm-up over the first third of the epochs).
    ``size`` is ``phbook.config.sizes("contamination")``."""
    tag = level_tag(contamination)
    gans = {
        "epochs": size["epochs"],
        "batch_size": size["batch_size"],
        "encoder_epochs": size["encoder_epochs"],
    }
    fit = {"epochs": size["ae_epochs"], "batch_size": 128}
    warmup = max(1, int(size["ae_epochs"]) // 3)
    vae = beta_vaes.make_vae(noise_matched_beta(size), kl_warmup=warmup)
    return {
        "f-AnoGAN": detectors.FAnoGANDetector(**gans, name=f"ch6-fanogan-{tag}"),
        "simultaneous-encoder GAN": detectors.SimultaneousEncoderGANDetector(
            **gans, name=f"ch6-simenc-{tag}"
        ),
        "AAE": detectors.AAEDetector(
            epochs=size["aae_epochs"], batch_size=128, name=f"ch6-aae-{tag}"
        ),
        "AE": detectors.AutoencoderDetector(
            model_kwargs={"latent_dim": 32, "l1": AE_L1},
            fit_kwargs=fit,
            name=f"ch6-ae-l1e-5-{tag}",
        ),
        "beta-VAE": detectors.VAEDetector(
            vae, fit_kwargs=fit, name=f"ch6-vae-matched-{tag}"
        ),
    }
