"""Scores from the tail of a reconstruction residual, for any reconstruction detector.

A reconstruction detector's default score decides what it can see. The mean squared
residual over all pixels dilutes a fault of a few pixels by their share of the frame;
the largest single-pixel residual sees a bright pixel but misses a dead row whose
sixteen pixels are each a little off. :class:`ResidualScore` scores an already trained
model (any detector with ``reconstruct``: autoencoders, the beta-VAE, the AAE, f-AnoGAN,
the flow VAE) by the mean of its ``k`` largest squared pixel residuals: ``k = 1`` is the
maximum, ``k`` = all pixels the mean, and a small ``k`` in between adds up a compact
anomaly without being set by one noisy pixel. Chapter 9 measures each choice on the same
trained models (:func:`phbook.studies.sidebyside.residual_score_table`).
"""

from __future__ import annotations

import numpy as np

from .base import Detector

__all__ = ["ResidualScore"]


class ResidualScore(Detector):
    """Mean of the ``k`` largest squared residuals of ``detector.reconstruct(X)``.

    ``detector`` is used as it is when already fitted (``refit=False``, the default:
    ``fit`` then only sets the threshold); with ``refit=True`` a copy is fitted first.
    """

    def __init__(self, detector=None, k: int = 4, refit: bool = False, contamination=0.01):
        super().__init__(contamination)
        self.detector = detector
        self.k = k
        self.refit = refit

    def __sklearn_clone__(self):
        # a clone keeps the trained model it scores (scikit-learn's clone would
        # replace it by an unfitted copy, e.g. inside detectors.Transformed)
        import copy

        return copy.copy(self)

    def _fit(self, x):
        import copy

        if self.detector is None or not hasattr(self.detector, "reconstruct"):
            raise ValueError("ResidualScore needs a detector with a reconstruct method")
        if int(self.k) != self.k or self.k < 1:
            raise ValueError(f"k must be a positive integer, got {self.k!r}")
        if self.refit:
            self.detector_ = copy.deepcopy(self.detector).fit(x)
        elif not hasattr(self.detector, "image_shape_"):
            raise ValueError("the detector is not fitted; fit it or pass refit=True")
        else:
            self.detector_ = self.detector

    def _anomaly_score(self, x):
        rec = np.asarray(self.detector_.reconstruct(x), dtype=np.float32)
        err = ((x - rec.reshape(x.shape)) ** 2).reshape(len(x), -1)
        k = min(int(self.k), err.shape[1])
        top = np.partition(err, err.shape[1] - k, axis=1)[:, -k:]
        return top.astype(np.float64).mean(axis=1)
