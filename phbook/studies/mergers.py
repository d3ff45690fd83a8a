"""Chapter 12's merger search, summarised as the galaxy lecture did.

The lecture's table gives the *percentage of inconsistent images* per sample (all
mergers, pre-mergers, post-mergers) for a WGAN score and for k-means. The lecture does
not say where "inconsistent" begins; the book's definition
(:func:`inconsistent_percentages`): an image is inconsistent with the ordinary galaxies
when its anomaly score exceeds the ``quantile`` (95%) of the scores of the ordinary
galaxies of the same survey, i.e. at a 5% false-alarm rate on ordinary galaxies.

:func:`merger_scores` trains chapter 12's f-AnoGAN (the WGAN-GP score) and k-means with
the chapter's sizes and checkpoint names, so ``bench/case_studies.py`` measures the same
numbers the chapter shows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import datasets, detectors, transforms

__all__ = [
    "LECTURE_INCONSISTENT",
    "SAMPLES",
    "inconsistent_percentages",
    "merger_scores",
]

#: The lecture's percentages of inconsistent images (real survey images, its networks).
LECTURE_INCONSISTENT = {
    "WGAN": {"all": 46.0, "pre-merger": 86.0, "post-merger": 45.0},
    "k-means": {"all": 8.0, "pre-merger": 74.0, "post-merger": 9.0},
}

#: The samples of the table: the simulator's merger classes in each.
SAMPLES = {
    "all": ("merger_pre", "merger", "merger_post"),
    "pre-merger": ("merger_pre",),
    "post-merger": ("merger_post",),
}


def inconsistent_percentages(
    scores: dict, classes, normal: str = "normal", quantile: float = 0.95
) -> pd.DataFrame:
    """Per sample (rows, :data:`SAMPLES`) and detector (columns), the percentage of
    images whose anomaly score exceeds the ``quantile`` of the ordinary galaxies'.

    ``scores`` maps detector names to anomaly scores (higher = more anomalous), one per
    image of ``classes`` (the simulator's class names; ``normal`` is the ordinary one).
    """
    classes = np.asarray(classes)
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    is_normal = classes == normal
    if not is_normal.any():
        raise ValueError(f"no image of class {normal!r} to set the threshold")
    out = {}
    for name, s in scores.items():
        s = np.asarray(s, dtype=np.float64).ravel()
        if len(s) != len(classes):
            raise ValueError(f"{name}: {len(s)} scores for {len(classes)} images")
        threshold = np.quantile(s[is_normal], quantile)
        col = {}
        for sample, members in SAMPLES.items():
            mask = np.isin(classes, members)
            col[sample] = (
                100.0 * float((s[mask] > threshold).mean()) if mask.any() else np.nan
            )
        out[name] = col
    return pd.DataFrame(out).loc[list(SAMPLES)]


def merger_scores(size, seed: int = 0) -> tuple[dict, np.ndarray]:
    """Chapter 12's f-AnoGAN (WGAN-GP) and k-means scores of its test survey.

    ``size`` is ``phbook.config.sizes("galaxies")``. Returns ``(scores, classes)``;
    the checkpoint names are the chapter's, so a run after the chapter loads them.
    """
    data = datasets.galaxy_benchmark(size.n_train, size.n_test, seed=seed)
    stretch = transforms.AsinhStretch(softening=3.0, x_max=3000.0)
    x_train = stretch(data.x_train)[:, None]
    x_test = stretch(data.x_test)[:, None]
    fanogan = detectors.FAnoGANDetector(
        latent_dim=size.latent_dim,
        epochs=size.epochs,
        encoder_epochs=size.encoder_epochs,
        batch_size=size.batch_size,
        name="ch12-fanogan",
    ).fit(x_train)
    terms = fanogan.score_terms(x_test)
    kmeans = detectors.KMeansDetector(
        n_clusters=size.n_clusters, n_components=size.n_components
    ).fit(x_train)
    scores = {
        "f-AnoGAN": terms["residual"] + fanogan.kappa * terms["feature"],
        "k-means": kmeans.anomaly_score(x_test),
    }
    return scores, np.asarray(data.classes_test)
