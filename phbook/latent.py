"""Latent spaces: encode a data set, look at it in 3D, cluster it, score it.

The recipe of chapter 4, after the PANOSETI beta-VAE study: encode every image to its
latent code (the posterior mean ``mu`` of a VAE, the code ``z`` of an autoencoder),
reduce the codes to 3D with PCA to look at them, fit Gaussian mixtures over a range of
component counts and keep the one with the lowest Bayesian information criterion (BIC),
show typical images of each component, and score anomalies by how unlikely their codes
are under the mixture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import logsumexp
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from .arrays import as_images, batched

__all__ = [
    "encode",
    "pca_3d",
    "GMMSelection",
    "select_gmm",
    "gmm_nll",
    "nearest_component_distance",
    "sample_gmm",
    "typical_members",
    "neighbour_label_fraction",
]


def encode(model, x, batch_size: int = 4096, device=None) -> np.ndarray:
    """Latent codes ``(N, latent_dim)`` of images ``x``, computed in batches.

    For a model whose ``encode`` returns ``(mu, logvar)`` (a VAE) the code is ``mu``,
    the posterior mean; otherwise it is what ``encode`` returns.
    """
    x = as_images(x)

    def fn(xb):
        out = model.encode(xb)
        return out[0] if isinstance(out, (tuple, list)) else out

    dev = _model_device(model) if device is None else device
    was_training = model.training
    model.eval()
    try:
        z = batched(fn, x, batch_size=batch_size, device=dev)
    finally:
        model.train(was_training)
    return z.reshape(len(x), -1)


def _model_device(model):
    try:
        return next(model.parameters()).device
    except StopIteration:
        return None


def pca_3d(z, pca: PCA | None = None) -> tuple[np.ndarray, PCA]:
    """Latent codes projected on their first three principal components.

    Pass the ``pca`` fitted on training codes to project other codes into the same
    axes. Returns ``(z3, pca)``; ``pca.explained_variance_ratio_`` says how much of the
    latent variance the three axes keep.
    """
    z = _codes(z)
    if pca is None:
        if z.shape[1] < 3:
            raise ValueError(f"z has {z.shape[1]} dimensions; PCA to 3D needs at least 3")
        pca = PCA(n_components=3, random_state=0).fit(z)
    return pca.transform(z), pca


def _codes(z, name: str = "z") -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or len(z) == 0:
        raise ValueError(f"{name} must be latent codes of shape (N, d), got {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError(
            f"{name} holds {int((~np.isfinite(z)).sum())} NaN or infinite values"
        )
    return z


@dataclass
class GMMSelection:
    """Gaussian mixtures fitted over a range of component counts, the best by BIC."""

    n_components: np.ndarray  # the counts tried
    bic: np.ndarray  # BIC of each (lower is better)
    models: list  # the fitted GaussianMixture of each count
    best_index: int

    @property
    def best(self) -> GaussianMixture:
        """The mixture with the lowest BIC."""
        return self.models[self.best_index]

    @property
    def best_n(self) -> int:
        """Its number of components."""
        return int(self.n_components[self.best_index])

    def table(self) -> pd.DataFrame:
        """BIC against the number of components, as a table."""
        return pd.DataFrame({"n_components": self.n_components, "bic": self.bic})


def select_gmm(
    z,
    n_components: Sequence[int] = tuple(range(1, 11)),
    covariance_type: str = "full",
    n_init: int = 1,
    max_samples: int | None = 20000,
    random_state: int = 0,
    reg_covar: float = 1e-5,
) -> GMMSelection:
    """Fit a Gaussian mixture for each count in ``n_components``; keep the lowest BIC.

    BIC = -2 log L + p log N penalises the p free parameters of a mixture, so it picks
    the number of clusters the data support rather than the most that fit. At most
    ``max_samples`` codes (a random subset) are used, which keeps the fits fast on large
    data sets; ``None`` uses all.
    """
    z = _codes(z)
    counts = np.asarray(sorted({int(k) for k in n_components}))
    if len(counts) == 0 or counts[0] < 1:
        raise ValueError(f"n_components must be positive counts, got {list(n_components)}")
    if counts[-1] > len(z):
        raise ValueError(f"{counts[-1]} components asked for but only {len(z)} codes given")
    if max_samples is not None and len(z) > max_samples:
        rng = np.random.default_rng(random_state)
        z = z[rng.choice(len(z), max_samples, replace=False)]
    models, bic = [], []
    for k in counts:
        gmm = GaussianMixture(
            n_components=int(k),
            covariance_type=covariance_type,
            n_init=n_init,
            random_state=random_state,
            reg_covar=reg_covar,
        ).fit(z)
        models.append(gmm)
        bic.append(gmm.bic(z))
    bic = np.asarray(bic)
    return GMMSelection(counts, bic, models, int(np.argmin(bic)))


def gmm_nll(gmm: GaussianMixture, z) -> np.ndarray:
    """Negative log-likelihood of each code under the mixture: an anomaly score.

    The same number as ``-gmm.score_samples(z)`` (to rounding), computed row by row
    without matrix products, so that a code's score does not depend on which other
    codes are scored with it: BLAS picks its kernels by the number of rows, and
    scikit-learn's ``score_samples`` moved in the 16th digit with the chunk size.
    """
    z = _codes(z)
    d = gmm.means_.shape[1]
    log_det = _log_det_precision_cholesky(gmm)  # (K,)
    log_prob = -0.5 * (d * np.log(2 * np.pi) + _distances_sq(gmm, z)) + log_det
    return -logsumexp(log_prob + np.log(gmm.weights_), axis=1)


def _log_det_precision_cholesky(gmm: GaussianMixture) -> np.ndarray:
    """log det of each component's precision Cholesky factor: (K,)."""
    chol, kind = gmm.precisions_cholesky_, gmm.covariance_type
    n_comp, d = gmm.means_.shape
    if kind == "full":
        return np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(1)
    if kind == "tied":
        return np.full(n_comp, np.log(np.diag(chol)).sum())
    if kind == "diag":
        return np.log(chol).sum(1)
    if kind == "spherical":
        return d * np.log(chol)
    raise ValueError(f"unknown covariance_type {kind!r}")  # pragma: no cover


def nearest_component_distance(gmm: GaussianMixture, z, metric: str = "mahalanobis"):
    """Distance of each code to the nearest mixture component: an anomaly score.

    ``metric="mahalanobis"`` measures it in each component's own covariance (so a code
    two standard deviations out along a narrow direction is as far as one two standard
    deviations out along a wide one); ``"euclidean"`` ignores the covariances.
    """
    z = _codes(z)
    if metric not in ("mahalanobis", "euclidean"):
        raise ValueError(f"metric must be 'mahalanobis' or 'euclidean', got {metric!r}")
    d2 = _distances_sq(gmm, z, metric)
    return np.sqrt(np.maximum(d2.min(axis=1), 0.0))


def _distances_sq(
    gmm: GaussianMixture, z: np.ndarray, metric: str = "mahalanobis", chunk: int = 8192
) -> np.ndarray:
    """Squared distances (N, K) of codes to the component means, in chunks of rows so
    that memory stays bounded."""
    out = np.empty((len(z), gmm.n_components))
    for start in range(0, len(z), chunk):
        diff = z[start : start + chunk, None, :] - gmm.means_[None, :, :]  # (n, K, d)
        if metric == "euclidean":
            out[start : start + chunk] = (diff**2).sum(-1)
        else:
            out[start : start + chunk] = _mahalanobis_sq(gmm, diff)
    return out


def _mahalanobis_sq(gmm: GaussianMixture, diff: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distances (n, K), from the precisions' Cholesky factors."""
    chol = gmm.precisions_cholesky_
    n_comp, d = gmm.means_.shape
    kind = gmm.covariance_type
    if kind == "full":
        y = np.einsum("nkd,kde->nke", diff, chol)
    elif kind == "tied":  # einsum, not a matrix product: rows independent of the batch
        y = np.einsum("nkd,de->nke", diff, chol)
    elif kind == "diag":
        y = diff * chol[None, :, :]
    elif kind == "spherical":
        y = diff * chol[None, :, None]
    else:  # pragma: no cover - scikit-learn knows no other kind
        raise ValueError(f"unknown covariance_type {kind!r}")
    return (y**2).sum(-1)


def sample_gmm(gmm: GaussianMixture, n: int, seed: int = 0) -> np.ndarray:
    """``n`` codes drawn from the fitted mixture, in random order: ``(n, d)``.

    Unlike ``GaussianMixture.sample`` the draws are not sorted by component, and each
    component is sampled through the Cholesky factor of its covariance (which the fit
    has already shown to exist), not through numpy's SVD-based ``multivariate_normal``,
    which warns that a covariance is "not positive-semidefinite" when latent dimensions
    the model does not use leave it nearly singular.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    n_comp, d = gmm.means_.shape
    comp = rng.choice(n_comp, size=n, p=gmm.weights_ / gmm.weights_.sum())
    eps = rng.standard_normal((n, d))
    cov, kind = gmm.covariances_, gmm.covariance_type
    if kind == "full":
        factors = np.linalg.cholesky(cov)[comp]  # (n, d, d)
        step = np.einsum("nde,ne->nd", factors, eps)
    elif kind == "tied":
        step = np.einsum("de,ne->nd", np.linalg.cholesky(cov), eps)
    elif kind == "diag":
        step = np.sqrt(cov)[comp] * eps
    elif kind == "spherical":
        step = np.sqrt(cov)[comp, None] * eps
    else:  # pragma: no cover - scikit-learn knows no other kind
        raise ValueError(f"unknown covariance_type {kind!r}")
    return gmm.means_[comp] + step


def typical_members(gmm: GaussianMixture, z, n: int = 8) -> dict[int, np.ndarray]:
    """For each component, the indices of the ``n`` codes assigned to it that lie
    closest to its mean (in its own covariance): the typical images of that cluster,
    most typical first. A component that no code is assigned to gets no indices."""
    z = _codes(z)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    labels = gmm.predict(z)
    d2 = _distances_sq(gmm, z)
    out = {}
    for k in range(gmm.n_components):
        idx = np.flatnonzero(labels == k)
        out[k] = idx[np.argsort(d2[idx, k])[:n]]
    return out


def neighbour_label_fraction(z_query, z_pool, labels_pool, k: int = 10) -> np.ndarray:
    """Per query, the fraction of its ``k`` latent nearest neighbours (Euclidean) in
    the pool with label 1: how often a code's neighbours share a class."""
    from sklearn.neighbors import NearestNeighbors

    zq, zp = _codes(z_query, "z_query"), _codes(z_pool, "z_pool")
    labels = np.asarray(labels_pool).astype(int).ravel()
    if len(labels) != len(zp):
        raise ValueError(f"{len(labels)} labels for {len(zp)} pool codes")
    if not 1 <= k <= len(zp):
        raise ValueError(f"k={k} must lie in [1, {len(zp)}]")
    idx = NearestNeighbors(n_neighbors=k).fit(zp).kneighbors(zq, return_distance=False)
    return labels[idx].mean(axis=1)
