"""One scoring API for every anomaly detector of the book.

Detectors follow scikit-learn's outlier-detection convention (as PyOD does), so they drop
into scikit-learn's metrics, pipelines and model selection:

``fit(X)``
    Learn what normal images look like from (mostly) normal, unlabelled images.
``score_samples(X)``
    **Higher means more normal**, as in scikit-learn's ``IsolationForest``.
``decision_function(X)``
    ``score_samples(X) - offset_``: negative for outliers. ``offset_`` is the
    ``contamination`` quantile of the training scores, so that fraction of the training
    set falls below zero.
``predict(X)``
    +1 for inliers, -1 for outliers.
``anomaly_score(X)``
    ``-score_samples(X)``: **higher means more anomalous**; what :mod:`phbook.metrics`
    and the book's ROC curves take.

``X`` is a stack of images: shape ``(N, H, W)`` for single-channel images (PANOSETI
frames, difference-image stamps, lensing images) or ``(N, C, H, W)``, as a NumPy array or
a torch tensor. Single-channel astronomical images are first-class.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import LocalOutlierFactor

__all__ = [
    "as_images",
    "Detector",
    "PCAReconstruction",
    "IsolationForestDetector",
    "LOFDetector",
    "batched",
    "HillasCut",
    "ScoreFusion",
]


def as_images(X, name: str = "X") -> np.ndarray:
    """``X`` as a float32 array of shape (N, C, H, W); (N, H, W) gains a channel axis."""
    if hasattr(X, "detach"):
        X = X.detach().cpu().numpy()
    x = np.asarray(X)
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(
            f"{name} must be images of shape (N, H, W) or (N, C, H, W), got shape {x.shape}"
        )
    if len(x) == 0:
        raise ValueError(f"{name} holds no images")
    return np.ascontiguousarray(x, dtype=np.float32)


class Detector(OutlierMixin, BaseEstimator):
    """Base class: subclasses implement ``_fit(x)`` and ``_anomaly_score(x)``.

    Both receive float32 arrays of shape (N, C, H, W). ``_anomaly_score`` returns one
    number per image, higher for more anomalous images.
    """

    def __init__(self, contamination: float = 0.01):
        self.contamination = contamination

    # -- what subclasses implement
    def _fit(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def _anomaly_score(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- the public API
    def fit(self, X, y=None):
        """Learn what normal images look like from ``X`` (``y`` is ignored)."""
        if not 0 <= self.contamination < 0.5:
            raise ValueError(
                f"contamination must lie in [0, 0.5), got {self.contamination}"
            )
        x = as_images(X)
        self.image_shape_ = tuple(x.shape[1:])
        self._fit(x)
        self.offset_ = float(np.quantile(self.score_samples(x), self.contamination))
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


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


class PCAReconstruction(Detector):
    """Mean squared error of the reconstruction from ``n_components`` components."""

    def __init__(self, n_components: int = 32, contamination: float = 0.01):
        super().__init__(contamination)
        self.n_components = n_components

    def _fit(self, x):
        flat = _flat(x)
        k = min(self.n_components, flat.shape[0], flat.shape[1])
        self.pca_ = PCA(n_components=k, svd_solver="auto", random_state=0).fit(flat)

    def _anomaly_score(self, x):
        flat = _flat(x)
        recon = self.pca_.inverse_transform(self.pca_.transform(flat))
        return ((flat - recon) ** 2).mean(axis=1)


class _SklearnFlat(Detector):
    """A scikit-learn outlier detector applied to flattened images."""

    def _make(self):
        raise NotImplementedError

    def _fit(self, x):
        self.model_ = self._make().fit(_flat(x))

    def _anomaly_score(self, x):
        return -self.model_.score_samples(_flat(x))


class IsolationForestDetector(_SklearnFlat):
    """scikit-learn's ``IsolationForest`` on flattened images."""

    def __init__(
        self,
        n_estimators: int = 200,
        max_samples="auto",
        contamination: float = 0.01,
        random_state: int = 0,
        n_jobs=None,
    ):
        super().__init__(contamination)
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _make(self):
        return IsolationForest(
            n_estimators=self.n_estimators,
            max_samples=self.max_samples,
            random_state=self.random_state,
            n_jobs=self.n_jobs,
        )


class LOFDetector(_SklearnFlat):
    """scikit-learn's ``LocalOutlierFactor`` (novelty mode) on flattened images."""

    def __init__(self, n_neighbors: int = 20, contamination: float = 0.01, n_jobs=None):
        super().__init__(contamination)
        self.n_neighbors = n_neighbors
        self.n_jobs = n_jobs

    def _make(self):
        return LocalOutlierFactor(
            n_neighbors=self.n_neighbors, novelty=True, n_jobs=self.n_jobs
        )


def batched(fn: Callable, x, batch_size: int = 4096, device=None) -> np.ndarray:
    """Apply a torch function to ``x`` in batches on ``device``; returns a NumPy array.

    ``fn`` maps a float32 tensor batch (on ``device``) to one value per sample. Used by
    the deep detectors so that scoring memory stays bounded whatever the size of ``x``.
    """
    import torch

    from . import config

    dev = config.device() if device is None else torch.device(device)
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = torch.as_tensor(x[start : start + batch_size], dtype=torch.float32).to(dev)
            out.append(fn(xb).detach().float().cpu().numpy().reshape(len(xb), -1))
    return np.concatenate(out, axis=0).squeeze(-1) if out else np.empty(0)


# ------------------------------------------------------------------ physics baseline


class HillasCut(Detector):
    """The rule a Cherenkov astronomer writes first: a box cut on image parameters.

    From the training frames it learns, for each feature below, the range holding all but
    ``tail`` of them at each end; a frame's anomaly score is how far (in units of the
    feature's inter-quartile range) it lies outside the furthest box edge, plus a small
    term for its distance from the medians, which orders the frames inside the box.

    Features (from :func:`phbook.hillas.parameters` after tail-cut cleaning, on
    images in ADC): the frame median (noise level), log peak, log size, number of
    cleaned pixels, length, width, width/length, concentration, and the number of
    separate islands in the cleaned image. Pass images in ADC (``transform`` undoes a
    normalisation applied to them first, rounding back to integer ADC counts).
    """

    FEATURES = (
        "median",
        "log_peak",
        "log_size",
        "n_pixels",
        "length",
        "width",
        "elongation",
        "concentration",
        "islands",
    )

    def __init__(self, tail: float = 0.005, transform=None, contamination: float = 0.01):
        super().__init__(contamination)
        self.tail = tail
        self.transform = transform

    def features(self, x: np.ndarray) -> np.ndarray:
        """(n, 9) feature matrix of images (N, 1, H, W) or (N, H, W)."""
        from scipy import ndimage

        from . import hillas

        img = x[:, 0] if x.ndim == 4 else x
        if self.transform is not None:
            # pulse heights are integer ADC counts: undo float round-off of the inverse
            img = np.rint(self.transform.inverse(img))
        h = hillas.parameters(img)
        mask = hillas.tailcuts(img)
        structure = np.zeros((3, 3, 3), bool)
        structure[1] = ndimage.generate_binary_structure(2, 2)  # no links across frames
        labels, _ = ndimage.label(mask, structure=structure)
        flat = labels.reshape(len(img), -1)
        islands = np.array([len(np.unique(row[row > 0])) for row in flat])
        size = h["size"].to_numpy()
        length = np.nan_to_num(h["length"].to_numpy())
        width = np.nan_to_num(h["width"].to_numpy())
        return np.column_stack(
            [
                np.median(img.reshape(len(img), -1), axis=1),
                np.log10(np.maximum(h["peak"].to_numpy(), 1.0)),
                np.log10(np.maximum(size, 1.0)),
                h["n_pixels"].to_numpy(),
                length,
                width,
                np.where(length > 0, width / np.where(length > 0, length, 1), 0.0),
                np.nan_to_num(h["concentration"].to_numpy()),
                islands,
            ]
        ).astype(np.float64)

    def _fit(self, x):
        if not 0 < self.tail < 0.5:
            raise ValueError(f"tail must lie in (0, 0.5), got {self.tail}")
        f = self.features(x)
        self.low_ = np.quantile(f, self.tail, axis=0)
        self.high_ = np.quantile(f, 1 - self.tail, axis=0)
        self.median_ = np.median(f, axis=0)
        q1, q3 = np.quantile(f, [0.25, 0.75], axis=0)
        self.scale_ = np.where(q3 > q1, q3 - q1, np.maximum(self.high_ - self.low_, 1.0))

    def _anomaly_score(self, x):
        f = self.features(x)
        outside = np.maximum(self.low_ - f, 0) + np.maximum(f - self.high_, 0)
        cut = (outside / self.scale_).max(axis=1)
        inside = np.abs(f - self.median_) / self.scale_
        return cut + 1e-3 * inside.mean(axis=1)


# ------------------------------------------------------------------------ score fusion


class ScoreFusion(Detector):
    """Combine detectors whose scores live on different scales.

    Each detector's score is turned into an empirical p-value against its scores on the
    training frames, ``p = (#{training scores >= s} + 1) / (n + 1)``: the fraction of
    normal frames at least as odd. Then ``method="fisher"`` sums ``-log p`` over the
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

    def p_values(self, x) -> np.ndarray:
        """(n, n_detectors) empirical p-values of each frame under each detector."""
        out = []
        for det, ref in zip(self.detectors, self.reference_, strict=True):
            s = det.anomaly_score(x)
            above = len(ref) - np.searchsorted(ref, s, side="left")
            out.append((above + 1) / (len(ref) + 1))
        return np.column_stack(out)

    def _anomaly_score(self, x):
        p = self.p_values(x)
        if self.method == "fisher":
            return -np.log(p).sum(axis=1)
        return (1 - p).mean(axis=1)
