"""Chapter 6's contamination study: detectors trained on data with unlabelled anomalies.

Chapter 6 and ``bench/gan.py`` train the same detectors, with the same settings and
checkpoint names, at each contamination level of :data:`LEVELS` (the fraction of
training frames that are anomalies, from :func:`phbook.datasets.ph_benchmark`), so a
bench run after the chapter loads its models instead of training them again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import detectors

__all__ = ["LEVELS", "level_tag", "make_detectors"]

#: The contamination levels of the study.
LEVELS = (0.0, 0.01, 0.05, 0.10)


def level_tag(contamination: float) -> str:
    """The checkpoint tag of a level: ``c00``, ``c01``, ``c05``, ``c10``."""
    return f"c{round(contamination * 100):02d}"


def make_detectors(size: Mapping[str, Any], contamination: float) -> dict:
    """The study's detectors for one level, unfitted, by name: f-AnoGAN, the
    simultaneous-encoder GAN, the AAE, and the autoencoder and beta-VAE of chapters 2
    and 3. ``size`` is ``phbook.config.sizes("contamination")``."""
    tag = level_tag(contamination)
    gans = {
        "epochs": size["epochs"],
        "batch_size": size["batch_size"],
        "encoder_epochs": size["encoder_epochs"],
    }
    fit = {"epochs": size["ae_epochs"], "batch_size": 128}
    return {
        "f-AnoGAN": detectors.FAnoGANDetector(**gans, name=f"ch6-fanogan-{tag}"),
        "simultaneous-encoder GAN": detectors.SimultaneousEncoderGANDetector(
            **gans, name=f"ch6-simenc-{tag}"
        ),
        "AAE": detectors.AAEDetector(
            epochs=size["aae_epochs"], batch_size=128, name=f"ch6-aae-{tag}"
        ),
        "AE": detectors.AutoencoderDetector(fit_kwargs=fit, name=f"ch6-ae-{tag}"),
        "beta-VAE": detectors.VAEDetector(fit_kwargs=fit, name=f"ch6-vae-{tag}"),
    }
