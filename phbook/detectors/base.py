"""The detectors' common ground: the :class:`Detector` API, the torch base class,
score fusion and input transformations."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin

from .. import config
from ..arrays import as_images, batched
from ..pvalues import log_p_values

__all__ = [
    "Detector",
    "ScoreFusion",
    "Transformed",
    "empirical_p_values",
    "fuse_scores",
]


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


def adc_frames(x: np.ndarray, transform=None) -> np.ndarray:
    """Single-channel frames (N, H, W) in ADC from images (N, 1, H, W) or (N, H, W),
    undoing ``transform`` (a normalisation applied to them) if given. Pulse heights are
    integer ADC counts, so the inverse is rounded: that undoes its float round-off."""
    if x.ndim == 4 and x.shape[1] != 1:
        raise ValueError(
            f"pulse-height detectors take single-channel frames, got {x.shape[1]} channels"
        )
    img = x[:, 0] if x.ndim == 4 else x
    if transform is not None:
        img = np.rint(transform.inverse(img))
    return img


class Detector(OutlierMixin, BaseEstimator):
    """Base class: subclasses implement ``_fit(x)`` and ``_anomaly_score(x)``.

    Both receive float32 arrays of shape (N, C, H, W). ``_anomaly_score`` returns one
    number per image, higher for more anomalous images.
    """

    def _check_score(self) -> None:
        """Raise a clear error when ``score`` is not one of the class's ``scores``."""
        if self.score not in self.scores:
            raise ValueError(
                f"score={self.score!r} is not a score of {type(self).__name__}; "
                f"valid values: {', '.join(self.scores)}"
            )

    def __init__(self, contamination: float = 0.01):
        self.contamination = contamination

    # -- what subclasses implement
    def _fit(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def _anomaly_score(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- the public API
    def _training_images(self, X) -> np.ndarray:
        """``X`` as images after the checks every ``fit`` makes (contamination, at
        least 2 images); sets ``image_shape_``. For subclasses that override ``fit``."""
        if not 0 <= self.contamination < 0.5:
            raise ValueError(
                f"contamination must lie in [0, 0.5), got {self.contamination}"
            )
        x = as_images(X)
        if len(x) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 training images to learn what "
                f"normal looks like, got {len(x)}"
            )
        self.image_shape_ = tuple(x.shape[1:])
        return x

    def fit(self, X, y=None):
        """Learn what normal images look like from ``X`` (``y`` is ignored)."""
        x = self._training_images(X)
        self._fit(x)
        train_scores = self.score_samples(x)
        if not np.isfinite(train_scores).all():
            n_bad = int((~np.isfinite(train_scores)).sum())
            raise ValueError(
                f"{type(self).__name__}: {n_bad} of {len(x)} training images got a NaN "
                "or infinite score, so no alert threshold can be set (a model that "
                "diverged, or images it cannot describe)"
            )
        self.offset_ = float(np.quantile(train_scores, self.contamination))
        return self

    def _checked(self, X) -> np.ndarray:
        if not hasattr(self, "image_shape_"):
            raise RuntimeError(
                f"{type(self).__name__} is not fitted yet; call fit(X) first"
            )
        x = as_images(X)
        if tuple(x.shape[1:]) != self.image_shape_:
            raise ValueError(
                f"{type(self).__name__} was fitted on images of shape {self.image_shape_}"
                f" (C, H, W), got {tuple(x.shape[1:])}"
            )
        return x

    def anomaly_score(self, X) -> np.ndarray:
        """One score per image, **higher = more anomalous**."""
        scores = np.asarray(self._anomaly_score(self._checked(X)), dtype=np.float64)
        return scores.reshape(-1)

    def score_samples(self, X) -> np.ndarray:
        """One score per image, **higher = more normal** (scikit-learn's convention)."""
        return -self.anomaly_score(X)

    def decision_function(self, X) -> np.ndarray:
        """``score_samples(X) - offset_``: negative values are outliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """+1 for inliers, -1 for outliers."""
        return np.where(self.decision_function(X) >= 0, 1, -1)


class _TorchBase(Detector):
    """What every detector built on torch models shares: the device, the channel
    check and scoring in batches of ``self.<_score_batch_attr>`` images."""

    _score_batch_attr = "batch_size"

    def _device(self):
        import torch

        return config.device() if self.device is None else torch.device(self.device)

    def _check_single_channel(self, x: np.ndarray) -> None:
        if x.shape[1] != 1:
            raise ValueError(
                f"{type(self).__name__} takes single-channel images, got {x.shape[1]} "
                "channels"
            )

    def _batched(self, fn, x: np.ndarray) -> np.ndarray:
        """``fn`` on batches of ``x`` without gradients (see :func:`batched`)."""
        size = getattr(self, self._score_batch_attr)
        if int(size) != size or size < 1:
            raise ValueError(
                f"{self._score_batch_attr} must be a positive integer, got {size!r}"
            )
        return batched(fn, x, batch_size=int(size), device=self._device())


# ------------------------------------------------------------------------ score fusion


def empirical_p_values(reference, scores) -> np.ndarray:
    """``(#{reference >= s} + 1) / (n + 1)`` for each score ``s``: its empirical
    p-value against normal reference scores. A step function: :class:`ScoreFusion`
    and :func:`fuse_scores` use its continuous version
    (:func:`phbook.pvalues.p_values`), equal to it at the reference scores, so that
    fused scores do not tie."""
    ref = np.sort(np.asarray(reference, dtype=np.float64).ravel())
    if ref.size == 0:
        raise ValueError("reference scores are empty")
    s = np.asarray(scores, dtype=np.float64).ravel()
    above = ref.size - np.searchsorted(ref, s, side="left")
    return (above + 1) / (ref.size + 1)


def fuse_scores(
    references: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    method: str = "fisher",
) -> np.ndarray:
    """Fuse detectors from their scores, as :class:`ScoreFusion` does: Fisher's
    ``sum -log p`` or rank averaging ``mean(1 - p)`` of the continuous p-values
    (:func:`phbook.pvalues.log_p_values`) against each detector's normal
    ``references``."""
    if method not in ("fisher", "mean_rank"):
        raise ValueError(f"method must be 'fisher' or 'mean_rank', got {method!r}")
    if len(references) != len(scores) or not scores:
        raise ValueError("give one reference per score array, and at least one")
    logp = np.column_stack(
        [log_p_values(r, s) for r, s in zip(references, scores, strict=True)]
    )
    return -logp.sum(axis=1) if method == "fisher" else (1 - np.exp(logp)).mean(axis=1)


class ScoreFusion(Detector):
    """Combine detectors whose scores live on different scales.

    Each detector's score is turned into an empirical p-value against its scores on the
    training frames, ``p = (#{training scores >= s} + 1) / (n + 1)``: the fraction of
    normal frames at least as odd, made continuous (:mod:`phbook.pvalues`:
    interpolated between training scores, an exponential tail beyond the largest)
    so that fused scores do not tie. Then ``method="fisher"`` sums ``-log p`` over the
    detectors (Fisher's method: a frame odd for several detectors at once scores high)
    and ``method="mean_rank"`` averages ``1 - p`` (rank averaging). The detectors are fitted
    on the same frames; pass already fitted detectors with ``refit=False``.
    """

    def __init__(
        self,
        detectors=(),
        method: str = "fisher",
        refit: bool = True,
        contamination: float = 0.01,
    ):
        super().__init__(contamination)
        self.detectors = detectors
        self.method = method
        self.refit = refit

    def _fit(self, x):
        if self.method not in ("fisher", "mean_rank"):
            raise ValueError(f"method must be 'fisher' or 'mean_rank', got {self.method!r}")
        if not self.detectors:
            raise ValueError("ScoreFusion needs at least one detector")
        self.reference_ = []
        for det in self.detectors:
            if self.refit:
                det.fit(x)
            self.reference_.append(np.sort(det.anomaly_score(x)))

    def log_p_values(self, x) -> np.ndarray:
        """(n, n_detectors) ``log p`` of each frame under each detector: continuous
        and calibrated (:func:`phbook.pvalues.log_p_values`), so frames odder than
        every training frame still rank by how much odder (no ties at the top)."""
        x = self._checked(x)
        return np.column_stack(
            [
                log_p_values(ref, det.anomaly_score(x))
                for det, ref in zip(self.detectors, self.reference_, strict=True)
            ]
        )

    def p_values(self, x) -> np.ndarray:
        """(n, n_detectors) p-values of each frame under each detector."""
        return np.exp(self.log_p_values(x))

    def _anomaly_score(self, x):
        scores = [det.anomaly_score(x) for det in self.detectors]
        return fuse_scores(self.reference_, scores, self.method)


# ------------------------------------------------------------ input transformations


class Transformed(Detector):
    """A detector that sees ``transform(X)`` instead of ``X``.

    The benchmark of chapter 9 feeds one stack of pulse heights (ADC) to every
    detector; those that learn on normalised images get
    ``Transformed(det, transforms.AsinhStretch())``, so a physics cut on ADC, a
    PixelCNN on integer ADC and an autoencoder on stretched images take the same
    input and can be fused by :class:`ScoreFusion`. The fitted inner detector is
    ``detector_`` (a copy: the argument is left untouched).
    """

    def __init__(self, detector=None, transform=None, contamination: float = 0.01):
        super().__init__(contamination)
        self.detector = detector
        self.transform = transform

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return x if self.transform is None else self.transform(x)

    def _fit(self, x):
        from sklearn.base import clone

        if self.detector is None:
            raise ValueError("Transformed needs a detector")
        try:
            self.detector_ = clone(self.detector)
        except (TypeError, RuntimeError):  # holds objects clone cannot copy
            import copy

            self.detector_ = copy.deepcopy(self.detector)
        self.detector_.fit(self._apply(x))

    def _anomaly_score(self, x):
        return self.detector_.anomaly_score(self._apply(x))
