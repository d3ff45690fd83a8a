"""Classical baselines: PCA and dictionary reconstruction, isolation forest, LOF,
k-means, and the physicist's box cut on Hillas parameters."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA, IncrementalPCA, MiniBatchDictionaryLearning
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import LocalOutlierFactor

from .. import hillas
from ..arrays import as_images
from .base import Detector, _flat, adc_frames

__all__ = [
    "PCAReconstruction",
    "IsolationForestDetector",
    "LOFDetector",
    "IncrementalPCADetector",
    "DictionaryLearningDetector",
    "HillasCut",
    "KMeansDetector",
]


class PCAReconstruction(Detector):
    """Mean squared error of the reconstruction from ``n_components`` components."""

    def __init__(self, n_components: int = 32, contamination: float = 0.01):
        super().__init__(contamination)
        self.n_components = n_components

    def _fit(self, x):
        flat = _flat(x)
        k = min(self.n_components, flat.shape[1])
        if flat.shape[0] <= k:
            # k components pass through any k frames exactly: every training error
            # would be 0 and the alert threshold meaningless
            raise ValueError(
                f"PCA with {k} components needs more than {k} training frames, got "
                f"{flat.shape[0]}: select more frames or use fewer components "
                "(--n-components)"
            )
        self.pca_ = PCA(n_components=k, svd_solver="auto", random_state=0).fit(flat)

    def _anomaly_score(self, x):
        # float64: a float32 product's last bit depends on how BLAS blocks the rows
        # and on memory alignment, so the same frame scored in another chunk (a resumed
        # `phbook score`) could differ by one unit in the last place
        flat = _flat(x).astype(np.float64)
        recon = self.pca_.inverse_transform(self.pca_.transform(flat))
        return ((flat - recon) ** 2).mean(axis=1).astype(np.float32)


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


# ------------------------------------------------------------- dictionary baselines


class IncrementalPCADetector(Detector):
    """Reconstruction error from scikit-learn's ``IncrementalPCA``, fitted on mini-batches.

    The linear baseline of the CHASE autoencoder study: the same projection as
    :class:`PCAReconstruction`, but learnt ``batch_size`` images at a time, so memory
    stays bounded however many images there are.
    """

    def __init__(
        self, n_components: int = 32, batch_size: int = 1024, contamination: float = 0.01
    ):
        super().__init__(contamination)
        self.n_components = n_components
        self.batch_size = batch_size

    def _fit(self, x):
        flat = _flat(x)
        k = min(self.n_components, flat.shape[1])
        if k > min(self.batch_size, len(flat)):
            raise ValueError(
                f"n_components={k} needs batch_size and the number of images to be at "
                f"least {k}; got batch_size={self.batch_size}, {len(flat)} images"
            )
        self.pca_ = IncrementalPCA(n_components=k)
        for start in range(0, len(flat), self.batch_size):
            chunk = flat[start : start + self.batch_size]
            if len(chunk) >= k:  # a last batch smaller than k cannot be used
                self.pca_.partial_fit(chunk)

    def transform(self, X) -> np.ndarray:
        """The principal-component coefficients (the latent code) of each image."""
        flat = _flat(self._checked(X))  # says 'not fitted' before pca_ is read
        return self.pca_.transform(flat)

    def _anomaly_score(self, x):
        # float64: a float32 product's last bit depends on how BLAS blocks the rows
        # and on memory alignment, so the same frame scored in another chunk (a resumed
        # `phbook score`) could differ by one unit in the last place
        flat = _flat(x).astype(np.float64)
        recon = self.pca_.inverse_transform(self.pca_.transform(flat))
        return ((flat - recon) ** 2).mean(axis=1).astype(np.float32)


class DictionaryLearningDetector(Detector):
    """Reconstruction error from a sparse code over a learnt dictionary.

    scikit-learn's ``MiniBatchDictionaryLearning`` learns ``n_components`` atoms from
    mini-batches; each image is then coded with at most ``n_nonzero`` atoms by
    orthogonal matching pursuit, and scored by the mean squared error of the sparse
    reconstruction ``code @ atoms``. ``alpha`` is the L1 weight of the learning.
    """

    def __init__(
        self,
        n_components: int = 32,
        alpha: float = 0.1,
        n_nonzero: int = 8,
        batch_size: int = 256,
        max_iter: int = 5,
        random_state: int = 0,
        contamination: float = 0.01,
    ):
        super().__init__(contamination)
        self.n_components = n_components
        self.alpha = alpha
        self.n_nonzero = n_nonzero
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.random_state = random_state

    def _fit(self, x):
        if not 1 <= self.n_nonzero <= self.n_components:
            raise ValueError(
                f"n_nonzero must lie in [1, n_components={self.n_components}], "
                f"got {self.n_nonzero}"
            )
        self.dict_ = MiniBatchDictionaryLearning(
            n_components=self.n_components,
            alpha=self.alpha,
            batch_size=self.batch_size,
            max_iter=self.max_iter,
            random_state=self.random_state,
            transform_algorithm="omp",
            transform_n_nonzero_coefs=self.n_nonzero,
        ).fit(_flat(x))

    def transform(self, X) -> np.ndarray:
        """The sparse code (at most ``n_nonzero`` non-zeros) of each image."""
        flat = _flat(self._checked(X))  # says 'not fitted' before dict_ is read
        return self.dict_.transform(flat)

    def _anomaly_score(self, x):
        flat = _flat(x)
        recon = self.dict_.transform(flat) @ self.dict_.components_
        return ((flat - recon) ** 2).mean(axis=1)


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

        img = adc_frames(x, self.transform)
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


# ----------------------------------------------------------------------------------
# Clustering baseline (chapter 12)


class KMeansDetector(Detector):
    """Distance to the nearest k-means centroid: the clustering baseline of chapter 12.

    Images are flattened and, when ``n_components`` is set, projected on their first
    principal components (fitted on the training images; the distance is then
    measured in that subspace and ignores what the components leave out). k-means
    with ``n_clusters`` centroids is fitted on the result. The anomaly score of an
    image is its Euclidean distance to the nearest centroid (higher = further from
    every typical image); ``score_samples`` is its negative, as in scikit-learn.

    Parameters
    ----------
    n_clusters
        Number of centroids (at most the number of training images).
    n_components
        Principal components kept before clustering; ``None`` clusters the pixels.
    n_init, random_state
        Restarts and seed of scikit-learn's ``KMeans``.
    """

    def __init__(
        self,
        n_clusters: int = 8,
        n_components: int | None = 32,
        *,
        n_init: int = 4,
        random_state: int = 0,
        contamination: float = 0.01,
    ):
        super().__init__(contamination)
        self.n_clusters = n_clusters
        self.n_components = n_components
        self.n_init = n_init
        self.random_state = random_state

    def _fit(self, x):
        from sklearn.cluster import KMeans

        flat = _flat(x)
        if int(self.n_clusters) != self.n_clusters or not 1 <= self.n_clusters <= len(x):
            raise ValueError(
                f"n_clusters must be an integer from 1 to the {len(x)} training "
                f"images, got {self.n_clusters!r}"
            )
        if self.n_components is not None:
            if int(self.n_components) != self.n_components or self.n_components < 1:
                raise ValueError(
                    "n_components must be a positive integer or None, got "
                    f"{self.n_components!r}"
                )
            k = min(int(self.n_components), flat.shape[0], flat.shape[1])
            self.pca_ = PCA(n_components=k, random_state=self.random_state).fit(flat)
        else:
            self.pca_ = None
        self.kmeans_ = KMeans(
            n_clusters=int(self.n_clusters),
            n_init=self.n_init,
            random_state=self.random_state,
        ).fit(self.transform(x))
        self.cluster_centers_ = self.kmeans_.cluster_centers_

    def transform(self, X) -> np.ndarray:
        """The features that are clustered: PCA coefficients or flattened pixels."""
        if not hasattr(self, "pca_"):
            raise RuntimeError("KMeansDetector is not fitted yet; call fit(X) first")
        flat = _flat(as_images(X)).astype(np.float64)
        pca = self.pca_
        return pca.transform(flat) if pca is not None else flat

    def predict_cluster(self, X) -> np.ndarray:
        """Index of the nearest centroid of each image."""
        return self.kmeans_.predict(self.transform(self._checked(X)))

    def _anomaly_score(self, x):
        # KMeans.transform gives the distance to every centroid
        return self.kmeans_.transform(self.transform(x)).min(axis=1)
