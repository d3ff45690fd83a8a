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
    "typical_members",
    "PROTOCOL_METHODS",
    "NONLINEAR_METHODS",
    "neighbour_mse_ratio",
    "dnmse",
    "neighbour_label_fraction",
    "protocol_detectors",
    "ProtocolResult",
    "latent_classifier",
    "run_protocol",
    "protocol_sets",
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
    """Negative log-likelihood of each code under the mixture: an anomaly score."""
    return -gmm.score_samples(_codes(z))


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
    elif kind == "tied":
        y = diff @ chol
    elif kind == "diag":
        y = diff * chol[None, :, :]
    elif kind == "spherical":
        y = diff * chol[None, :, None]
    else:  # pragma: no cover - scikit-learn knows no other kind
        raise ValueError(f"unknown covariance_type {kind!r}")
    return (y**2).sum(-1)


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


# ---------------------------------------------------------------------------------
# Chapter 11: the CHASE protocol of Huijse et al. (latent codes of transient
# candidates, compared by the DNMSE of latent neighbours and by a small classifier)

#: The four latent methods of the protocol, in the order the book shows them.
PROTOCOL_METHODS = ("sparse AE", "VAE", "IncrementalPCA", "dictionary")
#: The nonlinear ones (the paper's claim: they beat the linear ones).
NONLINEAR_METHODS = ("sparse AE", "VAE")


def _images_flat(x, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim < 2 or len(arr) == 0:
        raise ValueError(f"{name} must be a non-empty stack of images, got {arr.shape}")
    return arr.reshape(len(arr), -1)


def neighbour_mse_ratio(
    x_query, z_query, x_pool, z_pool, k: int = 10, exclude_self: bool = False
) -> np.ndarray:
    """Per query: pixel MSE to its ``k`` latent nearest neighbours over the mean MSE
    to every image of the pool.

    ``x_*`` are images (any shape after the first axis) and ``z_*`` their latent codes.
    The neighbours are found in latent space (Euclidean), the MSE is measured in pixel
    space. A ratio below 1 means the code puts images that look alike next to each
    other; 1 is what random neighbours give. ``exclude_self`` drops a query's own
    entry when the queries are part of the pool (the nearest code at distance 0).
    """
    from sklearn.neighbors import NearestNeighbors

    xq, xp = _images_flat(x_query, "x_query"), _images_flat(x_pool, "x_pool")
    zq, zp = _codes(z_query, "z_query"), _codes(z_pool, "z_pool")
    if len(xq) != len(zq) or len(xp) != len(zp):
        raise ValueError(
            f"images and codes differ in number: x_query {len(xq)}, z_query {len(zq)}, "
            f"x_pool {len(xp)}, z_pool {len(zp)}"
        )
    if xq.shape[1] != xp.shape[1] or zq.shape[1] != zp.shape[1]:
        raise ValueError("queries and pool differ in image size or latent size")
    k_total = k + int(exclude_self)
    if not 1 <= k_total <= len(xp):
        raise ValueError(f"k={k} must lie in [1, {len(xp) - int(exclude_self)}]")
    nn = NearestNeighbors(n_neighbors=k_total).fit(zp)
    dist, idx = nn.kneighbors(zq)
    if exclude_self:
        # drop the first neighbour at distance 0 (the query itself) where there is one
        keep = np.ones_like(idx, dtype=bool)
        self_hit = dist[:, 0] == 0
        keep[self_hit, 0] = False
        keep[~self_hit, -1] = False
        idx = idx[keep].reshape(len(idx), k)
    near = ((xq[:, None, :] - xp[idx]) ** 2).mean(axis=2).mean(axis=1)
    # mean over the pool of |a - b|^2 / P, exactly, without the (Q, M) matrix
    p = xq.shape[1]
    mean_b = xp.mean(axis=0)
    mean_b2 = (xp**2).sum(axis=1).mean()
    every = ((xq**2).sum(axis=1) + mean_b2 - 2 * xq @ mean_b) / p
    return near / np.where(every > 0, every, np.nan)


def dnmse(
    x_query, z_query, x_pool, z_pool, k: int = 10, exclude_self: bool = False
) -> float:
    """Discrimination normalised MSE: the mean of :func:`neighbour_mse_ratio`.

    Our reading of Huijse et al.'s figure of merit: for each labelled real transient
    (the queries), the mean squared pixel difference to its ``k`` nearest candidates
    in latent space, normalised by its mean squared difference to all candidates,
    averaged over the queries. Lower is better; 1 is a code that knows nothing.
    """
    return float(
        np.nanmean(neighbour_mse_ratio(x_query, z_query, x_pool, z_pool, k, exclude_self))
    )


def neighbour_label_fraction(z_query, z_pool, labels_pool, k: int = 10) -> np.ndarray:
    """Per query, the fraction of its ``k`` latent nearest neighbours with label 1."""
    from sklearn.neighbors import NearestNeighbors

    zq, zp = _codes(z_query, "z_query"), _codes(z_pool, "z_pool")
    labels = np.asarray(labels_pool).astype(int).ravel()
    if len(labels) != len(zp):
        raise ValueError(f"{len(labels)} labels for {len(zp)} pool codes")
    idx = NearestNeighbors(n_neighbors=k).fit(zp).kneighbors(zq, return_distance=False)
    return labels[idx].mean(axis=1)


def protocol_detectors(
    latent_dim: int = 21,
    *,
    epochs: int = 10,
    vae_epochs: int | None = None,
    batch_size: int = 256,
    lr: float = 2e-3,
    l1: float = 0.005 / (0.5 * 21 * 21),
    beta: float = 0.05,
    kl_warmup: int = 3,
    n_nonzero: int = 5,
    dict_epochs: int = 3,
    name: str | None = None,
    seed: int = 0,
) -> dict:
    """The four unfitted detectors of the CHASE protocol, all with ``latent_dim`` codes.

    ``sparse AE``: :class:`~phbook.detectors.AutoencoderDetector` with an L1 penalty
    ``l1`` on its latent weights (default: the paper's 0.005 on a loss of half the
    *summed* squared error of a 21 x 21 stamp, rescaled to our per-pixel mean);
    ``VAE``: :class:`~phbook.detectors.VAEDetector` with KL weight ``beta`` annealed
    over ``kl_warmup`` epochs; ``IncrementalPCA`` and ``dictionary`` (sparse coding
    with at most ``n_nonzero`` atoms, learnt on mini-batches). ``name`` prefixes the
    checkpoint names of the two networks (``None``: no checkpoint).
    """
    from . import detectors

    fit = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed}
    vae_fit = dict(fit, epochs=vae_epochs or epochs)
    return {
        "sparse AE": detectors.AutoencoderDetector(
            model_kwargs={"latent_dim": latent_dim, "l1": l1},
            fit_kwargs=fit,
            name=f"{name}-sparse-ae" if name else None,
        ),
        "VAE": detectors.VAEDetector(
            model_kwargs={"latent_dim": latent_dim, "beta": beta, "kl_warmup": kl_warmup},
            fit_kwargs=vae_fit,
            name=f"{name}-vae" if name else None,
        ),
        "IncrementalPCA": detectors.IncrementalPCADetector(
            n_components=latent_dim, batch_size=max(batch_size, 4 * latent_dim)
        ),
        "dictionary": detectors.DictionaryLearningDetector(
            n_components=latent_dim,
            n_nonzero=min(n_nonzero, latent_dim),
            alpha=1.0,
            batch_size=batch_size,
            max_iter=dict_epochs,
            random_state=seed,
        ),
    }


@dataclass
class ProtocolResult:
    """What :func:`run_protocol` computed, per latent method."""

    detectors: dict  # method -> fitted detector
    codes: dict  # method -> {"pool", "labelled", "test"} latent codes
    labelled_index: np.ndarray  # rows of the labelled set the classifier was fitted on
    dnmse: dict  # method -> DNMSE of the labelled real transients
    neighbour_real: dict  # method -> mean fraction of real neighbours (needs y_pool)
    probabilities: dict  # method -> P(real) of each test stamp (higher = real)
    auc: dict  # method -> ROC-AUC of the classifier on the test stamps
    roc: dict  # method -> (fpr, tpr)
    y_test: np.ndarray
    k: int

    def table(self) -> pd.DataFrame:
        """One row per method: DNMSE, real fraction of the neighbours, MLP ROC-AUC."""
        rows = {
            m: {
                "DNMSE": self.dnmse[m],
                "real neighbours": self.neighbour_real.get(m, np.nan),
                "MLP ROC-AUC": self.auc[m],
            }
            for m in self.detectors
        }
        return pd.DataFrame(rows).T

    def best_nonlinear_auc(self) -> float:
        """The best classifier ROC-AUC of the nonlinear methods."""
        return max(self.auc[m] for m in NONLINEAR_METHODS if m in self.auc)


def latent_classifier(hidden: int = 32, seed: int = 0):
    """An MLP with one hidden layer on standardised latent codes (a scikit-learn
    pipeline), the supervised read-out of the protocol."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(),
        MLPClassifier(
            hidden_layer_sizes=(hidden,),
            alpha=1e-3,
            max_iter=2000,
            early_stopping=False,
            random_state=seed,
        ),
    )


def run_protocol(
    x_pool,
    x_labelled,
    y_labelled,
    x_test,
    y_test,
    *,
    n_labelled: int | None = None,
    y_pool=None,
    methods: dict | None = None,
    k: int = 10,
    hidden: int = 32,
    seed: int = 0,
    **detector_kwargs,
) -> ProtocolResult:
    """The CHASE protocol of Huijse et al. on stamps already scaled to [-1, 1].

    1. Fit each latent method (``methods``, default :func:`protocol_detectors` with
       ``detector_kwargs``) on the unlabelled candidates ``x_pool``.
    2. Draw ``n_labelled`` stamps of the labelled set (stratified; default all of it):
       the only labels the protocol uses.
    3. DNMSE (:func:`dnmse`) of the real transients among them against the pool.
    4. Fit an MLP with one hidden layer (:func:`latent_classifier`) on their codes and
       labels (1 = real transient), and score the held-out ``x_test``: ``P(real)``,
       its ROC curve and ROC-AUC against ``y_test``.
    ``y_pool`` (optional, never used for fitting) adds the fraction of real
    transients among the latent neighbours of the labelled reals.
    """
    from sklearn import metrics as skm
    from sklearn.model_selection import train_test_split

    y_labelled = np.asarray(y_labelled).astype(int).ravel()
    y_test = np.asarray(y_test).astype(int).ravel()
    if len(y_labelled) != len(x_labelled) or len(y_test) != len(x_test):
        raise ValueError("labels and images differ in number (labelled or test set)")
    n_all = len(y_labelled)
    n = n_all if n_labelled is None else int(n_labelled)
    if not 2 <= n <= n_all:
        raise ValueError(f"n_labelled={n_labelled} must lie in [2, {n_all}]")
    index = np.arange(n_all)
    if n < n_all:
        index, _ = train_test_split(
            index, train_size=n, stratify=y_labelled, random_state=seed
        )
        index = np.sort(index)
    y_fit = y_labelled[index]
    if y_fit.min() == y_fit.max():
        raise ValueError("the labelled subset needs both real (1) and artifact (0) stamps")
    methods = (
        protocol_detectors(seed=seed, **detector_kwargs) if methods is None else methods
    )
    fitted, codes, dn, real_nn, prob, auc, roc = {}, {}, {}, {}, {}, {}, {}
    x_lab = np.asarray(x_labelled)[index]
    reals = x_lab[y_fit == 1]
    for name, det in methods.items():
        det.fit(x_pool)
        fitted[name] = det
        c = {
            "pool": det.transform(x_pool),
            "labelled": det.transform(x_lab),
            "test": det.transform(x_test),
        }
        codes[name] = c
        z_reals = c["labelled"][y_fit == 1]
        dn[name] = dnmse(reals, z_reals, x_pool, c["pool"], k=k)
        if y_pool is not None:
            real_nn[name] = float(
                neighbour_label_fraction(z_reals, c["pool"], y_pool, k=k).mean()
            )
        clf = latent_classifier(hidden, seed).fit(c["labelled"], y_fit)
        prob[name] = clf.predict_proba(c["test"])[:, 1]
        auc[name] = float(skm.roc_auc_score(y_test, prob[name]))
        fpr, tpr, _ = skm.roc_curve(y_test, prob[name])
        roc[name] = (fpr, tpr)
    return ProtocolResult(fitted, codes, index, dn, real_nn, prob, auc, roc, y_test, int(k))


def protocol_sets(n_pool: int, n_labelled_set: int, n_test: int, seed: int = 0) -> dict:
    """The three simulated sets of the protocol (:mod:`phbook.sim.transients`,
    default mix of 20% real transients), cached on disk, with independent seeds:
    ``"pool"`` (the unlabelled candidates), ``"labelled"`` and ``"test"``."""
    from .sim import transients

    return {
        name: transients.load_or_simulate(n, seed=seed + i + 1, progress=False)
        for i, (name, n) in enumerate(
            (("pool", n_pool), ("labelled", n_labelled_set), ("test", n_test))
        )
    }
