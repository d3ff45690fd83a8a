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
from sklearn.decomposition import PCA, IncrementalPCA, MiniBatchDictionaryLearning
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import LocalOutlierFactor

from .noise import SCORE_BLOCK, frame_normal, frame_uniform
from .pvalues import log_p_values

__all__ = [
    "as_images",
    "Detector",
    "PCAReconstruction",
    "IsolationForestDetector",
    "LOFDetector",
    "IncrementalPCADetector",
    "DictionaryLearningDetector",
    "DeepDetector",
    "AutoencoderDetector",
    "VAEDetector",
    "batched",
    "FAnoGANDetector",
    "AnoGANDetector",
    "SimultaneousEncoderGANDetector",
    "AAEDetector",
    "HillasCut",
    "ScoreFusion",
    "PixelCNNDetector",
    "ImageFlowDetector",
    "FlowVAEDetector",
    "Transformed",
    "RBMDetector",
    "KMeansDetector",
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


def batched(
    fn: Callable, x, batch_size: int = 4096, device=None, block: int | None = None
) -> np.ndarray:
    """Apply a torch function to ``x`` in batches on ``device``; returns a NumPy array.

    ``fn`` maps a float32 tensor batch (on ``device``) to one value per sample (the
    result has shape ``(N,)``) or one vector per sample (``(N, d)``). Used by
    the deep detectors so that scoring memory stays bounded whatever the size of ``x``.

    ``fn`` always sees blocks of exactly ``block`` frames (default
    :data:`phbook.noise.SCORE_BLOCK`; the last block is padded with zero frames whose
    results are dropped): a matrix product's last bit can depend on how many rows it
    is computed on, and this way a frame's result does not depend on the chunk or
    batch size it was scored in. ``batch_size`` is rounded up to a whole number of
    blocks.
    """
    import torch

    from . import config

    dev = config.device() if device is None else torch.device(device)
    block = SCORE_BLOCK if block is None else int(block)
    step = max(1, -(-int(batch_size) // block)) * block
    out = []
    with torch.no_grad():
        for start in range(0, len(x), step):
            xs = torch.as_tensor(x[start : start + step], dtype=torch.float32)
            for b in range(0, len(xs), block):
                xb = xs[b : b + block]
                n = len(xb)
                if n < block:
                    pad = xb.new_zeros((block - n, *xb.shape[1:]))
                    xb = torch.cat([xb, pad])
                res = fn(xb.to(dev)).detach().float().cpu().numpy()
                out.append(res.reshape(block, -1)[:n])
    if not out:
        return np.empty(0)
    arr = np.concatenate(out, axis=0)
    # one value per sample -> (N,); a vector per sample (a latent code) -> (N, d)
    return arr[:, 0] if arr.shape[1] == 1 else arr


class _TorchBase(Detector):
    """What every detector built on torch models shares: the device, the channel
    check and scoring in batches of ``self.<_score_batch_attr>`` images."""

    _score_batch_attr = "batch_size"

    def _device(self):
        import torch

        from . import config

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
        return self.pca_.transform(_flat(self._checked(X)))

    def _anomaly_score(self, x):
        flat = _flat(x)
        recon = self.pca_.inverse_transform(self.pca_.transform(flat))
        return ((flat - recon) ** 2).mean(axis=1)


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
        return self.dict_.transform(_flat(self._checked(X)))

    def _anomaly_score(self, x):
        flat = _flat(x)
        recon = self.dict_.transform(flat) @ self.dict_.components_
        return ((flat - recon) ** 2).mean(axis=1)


# ---------------------------------------------------------------------- deep models


class DeepDetector(_TorchBase):
    """Base of the detectors built on a torch model; subclasses set ``model_class``.

    Parameters
    ----------
    model
        A model instance to train (a copy is trained; the argument is left untouched),
        or ``None`` to build ``model_class(image_size=(H, W), **model_kwargs)`` from the
        shape of the training images.
    model_kwargs
        Constructor arguments of ``model_class`` when ``model`` is None.
    fit_kwargs
        Arguments of :func:`phbook.train.fit` (``epochs``, ``batch_size``, ``lr``,
        ``x_val``, ...).
    name
        When given, the model is trained through :func:`phbook.train.load_or_train`
        under this checkpoint name, so a second ``fit`` on the same data loads it.
    train
        ``False`` uses ``model`` as it is (already trained): ``fit`` then only sets
        the threshold (and fits the latent mixture of the latent scores).
    score
        Which anomaly score: one of :attr:`scores`. ``"recon"`` is the mean squared
        error of the reconstruction (sensitive to extended anomalies); ``"recon_max"``
        the largest squared error of a single pixel (sensitive to compact anomalies
        that a mean over all pixels dilutes); ``"latent_nll"`` the negative
        log-likelihood of
        the latent code under a Gaussian mixture fitted to the training codes (number
        of components chosen by BIC among ``gmm_components``); ``"latent_dist"`` the
        Mahalanobis distance of the code to the nearest mixture component. The
        mixture is fitted to at most ``gmm_max_samples`` training codes.
    batch_size
        Images per scoring batch (memory stays bounded).
    device
        Where to train and score; default :func:`phbook.config.device`.
    """

    model_class: type | None = None
    scores: tuple[str, ...] = ("recon", "recon_max", "latent_nll", "latent_dist")
    latent_scores = ("latent_nll", "latent_dist")

    def __init__(
        self,
        model=None,
        *,
        model_kwargs: dict | None = None,
        fit_kwargs: dict | None = None,
        name: str | None = None,
        train: bool = True,
        score: str = "recon",
        gmm_components=tuple(range(1, 11)),
        gmm_max_samples: int | None = 20000,
        batch_size: int = 4096,
        device=None,
        contamination: float = 0.01,
    ):
        super().__init__(contamination)
        self.model = model
        self.model_kwargs = model_kwargs
        self.fit_kwargs = fit_kwargs
        self.name = name
        self.train = train
        self.score = score
        self.gmm_components = gmm_components
        self.gmm_max_samples = gmm_max_samples
        self.batch_size = batch_size
        self.device = device

    # -- building and training
    def _build(self, x: np.ndarray):
        import copy

        if self.model is not None:
            if self.model_kwargs:
                raise ValueError("give either model or model_kwargs, not both")
            return copy.deepcopy(self.model)
        if self.model_class is None:
            raise TypeError(f"{type(self).__name__} has no model_class; pass model=...")
        return self.model_class(image_size=x.shape[2:], **(self.model_kwargs or {}))

    def _fit(self, x):
        from . import train as training

        if self.score not in self.scores:
            raise ValueError(
                f"score={self.score!r} is not a score of {type(self).__name__}; "
                f"valid values: {', '.join(self.scores)}"
            )
        self._check_single_channel(x)
        if not self.train and self.model is None:
            raise ValueError("train=False needs a trained model (model=...)")
        if not self.train and self.fit_kwargs:
            raise ValueError("fit_kwargs are unused with train=False; leave them out")
        dev = self._device()
        model = self._build(x)
        self.history_ = None
        if self.train:
            kwargs = {"device": dev, **(self.fit_kwargs or {})}
            if self.name:
                model, self.history_ = training.load_or_train(self.name, model, x, **kwargs)
            else:
                self.history_ = training.fit(model, x, **kwargs)
        self.model_ = model.to(dev).eval()
        if self.score in self.latent_scores:
            from . import latent

            self.gmm_selection_ = latent.select_gmm(
                self._encode(x), self.gmm_components, max_samples=self.gmm_max_samples
            )
            self.gmm_ = self.gmm_selection_.best

    # -- what the model gives
    def _encode(self, x: np.ndarray) -> np.ndarray:
        from .latent import encode

        return encode(self.model_, x, batch_size=self.batch_size, device=self._device())

    def transform(self, X) -> np.ndarray:
        """The latent code of each image (``mu`` for a VAE): ``(N, latent_dim)``."""
        return self._encode(self._checked(X))

    def reconstruct(self, X) -> np.ndarray:
        """The model's reconstruction of each image, shape ``(N, 1, H, W)``."""
        x = self._checked(X)
        flat = self._batched(lambda xb: self._reconstruct(xb).flatten(1), x)
        return flat.reshape(x.shape)

    def _reconstruct(self, xb):
        return self.model_(xb)

    def _score_recon(self, xb):
        return (xb - self._reconstruct(xb)).pow(2).flatten(1).mean(1)

    def _score_recon_max(self, xb):
        return (xb - self._reconstruct(xb)).pow(2).flatten(1).amax(1)

    def _anomaly_score(self, x):
        from . import latent

        if self.score == "latent_nll":
            return latent.gmm_nll(self.gmm_, self._encode(x))
        if self.score == "latent_dist":
            return latent.nearest_component_distance(self.gmm_, self._encode(x))
        return self._batched(getattr(self, f"_score_{self.score}"), x)


def _sparse_ae():
    from .models.ae import SparseConvAE

    return SparseConvAE


def _beta_vae():
    from .models.vae import BetaVAE

    return BetaVAE


class _LazyModelClass:
    """Resolve the model class on first use, so importing detectors needs no torch."""

    def __init__(self, getter):
        self.getter = getter

    def __get__(self, obj, owner):
        return self.getter()


class AutoencoderDetector(DeepDetector):
    """The sparse convolutional autoencoder (:class:`phbook.models.ae.SparseConvAE`)
    as a detector; scores: ``"recon"``, ``"latent_nll"``, ``"latent_dist"``."""

    model_class = _LazyModelClass(_sparse_ae)


class VAEDetector(DeepDetector):
    """The beta-VAE (:class:`phbook.models.vae.BetaVAE`) as a detector.

    Scores (``score=``), each higher for more anomalous images:

    ``"recon"``, ``"recon_max"``
        mean (or largest pixel) squared error of the reconstruction decoded from
        ``mu`` (deterministic);
    ``"elbo"``
        the negative ELBO with ``beta = 1``: the expected sum of squared errors over
        ``n_samples`` posterior samples plus the KL divergence (an upper bound on the
        negative log-likelihood, up to a constant);
    ``"kl"``
        the KL divergence of the posterior from the prior: how far the encoder has to
        move the code to describe the image;
    ``"latent_nll"``, ``"latent_dist"``
        as in :class:`DeepDetector`, on the posterior means.
    """

    model_class = _LazyModelClass(_beta_vae)
    scores = ("recon", "recon_max", "elbo", "kl", "latent_nll", "latent_dist")

    def __init__(
        self,
        model=None,
        *,
        model_kwargs: dict | None = None,
        fit_kwargs: dict | None = None,
        name: str | None = None,
        train: bool = True,
        score: str = "recon",
        n_samples: int = 8,
        seed: int = 0,
        gmm_components=tuple(range(1, 11)),
        gmm_max_samples: int | None = 20000,
        batch_size: int = 4096,
        device=None,
        contamination: float = 0.01,
    ):
        super().__init__(
            model,
            model_kwargs=model_kwargs,
            fit_kwargs=fit_kwargs,
            name=name,
            train=train,
            score=score,
            gmm_components=gmm_components,
            gmm_max_samples=gmm_max_samples,
            batch_size=batch_size,
            device=device,
            contamination=contamination,
        )
        self.n_samples = n_samples
        self.seed = seed

    def _reconstruct(self, xb):
        return self.model_.decode(self.model_.encode(xb)[0])

    def _score_kl(self, xb):
        from .models.vae import kl_divergence

        return kl_divergence(*self.model_.encode(xb))

    def _anomaly_score(self, x):
        if self.score == "elbo" and (
            int(self.n_samples) != self.n_samples or self.n_samples < 1
        ):
            raise ValueError(f"n_samples must be at least 1, got {self.n_samples}")
        return super()._anomaly_score(x)

    def _score_elbo(self, xb):
        from .models.vae import kl_divergence, reconstruction_error, reparameterize

        mu, logvar = self.model_.encode(xb)
        # each frame's draws are a function of the frame and the seed alone
        # (phbook.noise): its score does not depend on its neighbours in the batch
        eps = frame_normal(xb, (int(self.n_samples), mu.shape[1]), self.seed)
        recon = 0.0
        for j in range(int(self.n_samples)):
            z = reparameterize(mu, logvar, eps=eps[:, j])
            recon = recon + reconstruction_error(xb, self.model_.decode(z))
        return recon / self.n_samples + kl_divergence(mu, logvar)


# ----------------------------------------------------------------------------------
# GAN-based detectors and the adversarial autoencoder (chapters 5 and 6)


def _state_hash(module) -> str:
    """A short fingerprint of a module's weights, to name checkpoints that depend on it."""
    import hashlib

    h = hashlib.sha1()
    for key, value in module.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:10]


class _TorchDetector(_TorchBase):
    """Shared machinery of the deep detectors below: device, seeds, checkpoints.

    ``name`` (optional) names the checkpoints in :func:`phbook.train.load_or_train`,
    so a second ``fit`` with the same data and settings loads the trained networks
    instead of training them again. ``seed`` seeds the initial weights and the
    training run, so two fits with the same seed give the same detector.
    """

    _score_batch_attr = "score_batch_size"

    def _train(self, suffix: str, model, x, **fit_kwargs):
        """Train ``model`` on ``x`` (through a checkpoint when ``name`` is set)."""
        from . import train

        kwargs = {"device": self._device(), "seed": self.seed, **fit_kwargs}
        if self.name:
            model, history = train.load_or_train(
                f"{self.name}-{suffix}", model, x, **kwargs
            )
        else:
            history = train.fit(model, x, **kwargs)
        return model.eval(), history

    def _build_gan(self, x: np.ndarray):
        """The WGAN-GP of :func:`phbook.models.gan.WGANGP`, trained (or the given one)."""
        import copy

        import torch

        from .models import gan as G

        if self.gan is not None:
            return copy.deepcopy(self.gan).to(self._device()).eval(), None
        torch.manual_seed(self.seed)
        model = G.WGANGP(
            x.shape[2:],
            self.latent_dim,
            self.channels,
            n_critic=self.n_critic,
            gp_weight=self.gp_weight,
        )
        return self._train(
            "wgangp", model, x, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr
        )

    def _train_izif(self, x: np.ndarray, generator, critic, init=None):
        """f-AnoGAN's encoder for a fixed generator and critic, trained by izi_f."""
        import copy

        import torch

        from .models import gan as G

        torch.manual_seed(self.seed + 1)
        encoder = (
            copy.deepcopy(init)
            if init is not None
            else G.Encoder(x.shape[2:], generator.latent_dim, self.channels)
        )
        wrapper = G.IziFEncoder(
            encoder, copy.deepcopy(generator), copy.deepcopy(critic), kappa=self.kappa
        )
        # the checkpoint name carries a fingerprint of the GAN it was trained against
        tag = f"izif-{_state_hash(generator)}{_state_hash(critic)}"
        return self._train(
            tag,
            wrapper,
            x,
            epochs=self.encoder_epochs,
            batch_size=self.batch_size,
            lr=self.encoder_lr,
        )

    def reconstruct(self, X) -> np.ndarray:
        """The model's best match of each image, shape ``(N, 1, H, W)``."""
        x = self._checked(X)
        flat = self._batched(lambda xb: self._reconstruct(xb).flatten(1), x)
        return flat.reshape(x.shape)


class FAnoGANDetector(_TorchDetector):
    """f-AnoGAN (Schlegl et al. 2019): a WGAN-GP, then an encoder trained by izi_f.

    Score (higher = more anomalous), one forward pass per image:
    ``MSE(x, G(E(x))) + kappa * MSE(f(x), f(G(E(x))))`` with ``f`` the critic's last
    hidden layer (:func:`phbook.models.gan.fanogan_score`). In the weighting of
    :func:`phbook.models.gan.weighted_score` this is ``lam = kappa / (1 + kappa)``.

    Parameters
    ----------
    latent_dim, channels
        The networks of :mod:`phbook.models.gan` (``channels=None``: by image size).
    n_critic, gp_weight
        WGAN-GP's critic steps per generator step and gradient-penalty weight.
    epochs, batch_size, lr
        Training of the GAN (and ``batch_size`` of the encoder).
    encoder_epochs, encoder_lr
        Training of the encoder by izi_f (the GAN is fixed then).
    kappa
        Weight of the critic-feature term (Schlegl et al. 2019 use 1).
    gan
        A trained :class:`phbook.models.gan.GAN` to use instead of training one (a copy
        is kept); only the encoder is then trained.
    name
        Checkpoint name prefix: ``{name}-wgangp`` and ``{name}-izif-<GAN fingerprint>``.
    seed, device, score_batch_size
        Seed of weights and training; torch device; images per scoring batch (about
        1000 is fastest on a CPU, where larger batches fall out of the cache).
    """

    def __init__(
        self,
        latent_dim: int = 32,
        channels=None,
        *,
        n_critic: int = 5,
        gp_weight: float = 10.0,
        epochs: int = 20,
        batch_size: int = 64,
        lr: float = 5e-4,
        encoder_epochs: int = 10,
        encoder_lr: float = 1e-3,
        kappa: float = 1.0,
        gan=None,
        name: str | None = None,
        seed: int = 0,
        device=None,
        score_batch_size: int = 1024,
        contamination: float = 0.01,
    ):
        super().__init__(contamination)
        self.latent_dim = latent_dim
        self.channels = channels
        self.n_critic = n_critic
        self.gp_weight = gp_weight
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.encoder_epochs = encoder_epochs
        self.encoder_lr = encoder_lr
        self.kappa = kappa
        self.gan = gan
        self.name = name
        self.seed = seed
        self.device = device
        self.score_batch_size = score_batch_size

    def _fit(self, x):
        self._check_single_channel(x)
        if self.kappa < 0:
            raise ValueError(f"kappa must be non-negative, got {self.kappa}")
        self.gan_, self.history_ = self._build_gan(x)
        self.izif_, self.encoder_history_ = self._train_izif(
            x, self.gan_.generator, self.gan_.critic
        )
        self.encoder_ = self.izif_.encoder

    def _reconstruct(self, xb):
        return self.izif_.reconstruct(xb)

    def _anomaly_score(self, x):
        return self._batched(self.izif_.score, x)

    def score_terms(self, X) -> dict[str, np.ndarray]:
        """The two terms of the score per image: ``residual`` and ``feature`` (MSEs)."""
        from .models.gan import residual_and_feature

        x = self._checked(X)

        def both(xb):
            r, d = residual_and_feature(xb, self.izif_.reconstruct(xb), self.izif_.critic)
            return _stack_columns(r, d)

        out = self._batched(both, x)
        return {"residual": out[:, 0], "feature": out[:, 1]}


def _stack_columns(*columns):
    """Stack per-sample torch vectors as the columns of an ``(N, k)`` tensor."""
    import torch

    return torch.stack(columns, dim=1)


class AnoGANDetector(_TorchDetector):
    """AnoGAN (Schlegl et al. 2017): score by searching the GAN's latent space.

    Each image's best match ``G(z)`` is found by ``n_steps`` Adam steps on ``z``
    (:func:`phbook.models.gan.anogan_search`); the score is
    ``(1 - lam) * R + lam * D`` with ``R`` the mean absolute pixel residual and ``D``
    the mean absolute difference of critic features: ``lam`` weights the **feature**
    term, as in Schlegl et al. (2017). Scoring is iterative and hundreds of times
    slower than :class:`FAnoGANDetector`; ``offset_sample`` training images (not all)
    are scored in ``fit`` to set the threshold ``offset_``.

    The GAN is a WGAN-GP trained as in :class:`FAnoGANDetector` (same parameters and
    same checkpoint ``{name}-wgangp``, so the two detectors can share one GAN), or the
    trained ``gan`` given.
    """

    def __init__(
        self,
        latent_dim: int = 32,
        channels=None,
        *,
        n_critic: int = 5,
        gp_weight: float = 10.0,
        epochs: int = 20,
        batch_size: int = 64,
        lr: float = 5e-4,
        lam: float = 0.1,
        n_steps: int = 100,
        z_lr: float = 0.05,
        offset_sample: int = 1000,
        gan=None,
        name: str | None = None,
        seed: int = 0,
        device=None,
        score_batch_size: int = 1024,
        contamination: float = 0.01,
    ):
        super().__init__(contamination)
        self.latent_dim = latent_dim
        self.channels = channels
        self.n_critic = n_critic
        self.gp_weight = gp_weight
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lam = lam
        self.n_steps = n_steps
        self.z_lr = z_lr
        self.offset_sample = offset_sample
        self.gan = gan
        self.name = name
        self.seed = seed
        self.device = device
        self.score_batch_size = score_batch_size

    def fit(self, X, y=None):
        """Train (or take) the GAN; the threshold comes from a training subsample."""
        if not 0 <= self.contamination < 0.5:
            raise ValueError(
                f"contamination must lie in [0, 0.5), got {self.contamination}"
            )
        if self.offset_sample < 1:
            raise ValueError(f"offset_sample must be at least 1, got {self.offset_sample}")
        x = as_images(X)
        self.image_shape_ = tuple(x.shape[1:])
        self._fit(x)
        rng = np.random.default_rng(self.seed)
        pick = rng.choice(len(x), min(len(x), self.offset_sample), replace=False)
        self.offset_ = float(
            np.quantile(self.score_samples(x[np.sort(pick)]), self.contamination)
        )
        return self

    def _fit(self, x):
        from .models.gan import weighted_score

        self._check_single_channel(x)
        weighted_score(0.0, 0.0, self.lam)  # checks lam
        if self.n_steps < 0:
            raise ValueError(f"n_steps must be non-negative, got {self.n_steps}")
        self.gan_, self.history_ = self._build_gan(x)

    def search(self, X) -> dict[str, np.ndarray]:
        """The latent search of each image: ``z``, ``x_hat``, ``residual``,
        ``feature`` and ``score`` as NumPy arrays."""
        import torch

        from .models.gan import anogan_search

        x = self._checked(X)
        dev = self._device()
        parts: dict[str, list] = {}
        for i, start in enumerate(range(0, len(x), self.score_batch_size)):
            xb = torch.as_tensor(x[start : start + self.score_batch_size]).to(dev)
            out = anogan_search(
                self.gan_.generator,
                self.gan_.critic,
                xb,
                lam=self.lam,
                n_steps=self.n_steps,
                lr=self.z_lr,
                seed=self.seed + i,
            )
            for k in ("z", "x_hat", "residual", "feature", "score"):
                parts.setdefault(k, []).append(out[k].cpu().numpy())
        return {k: np.concatenate(v) for k, v in parts.items()}

    def _anomaly_score(self, x):
        return self.search(x)["score"]

    def reconstruct(self, X) -> np.ndarray:
        """``G(z)`` at the end of each image's latent search, ``(N, 1, H, W)``."""
        return self.search(X)["x_hat"]


class SimultaneousEncoderGANDetector(_TorchDetector):
    """A WGAN-GP trained together with its encoder (after Berg et al. 2019).

    Generator and encoder also minimise ``enc_weight * mean |G(z) - G(E(G(z)))|``
    during GAN training (:class:`phbook.models.gan.SimultaneousEncoderGAN`). Then, if
    ``encoder_epochs > 0``, a copy of the encoder is refined on the real images with
    f-AnoGAN's izi_f objective (the GAN fixed).

    ``score``:

    ``"izif"``
        f-AnoGAN's score ``MSE(x, G(E(x))) + kappa * MSE(f(x), f(G(E(x))))`` with the
        refined encoder (the jointly trained one when ``encoder_epochs = 0``);
    ``"latent_norm"``
        ``||E(x)||_2`` with the jointly trained encoder: the cue Berg et al. found in
        the "stratified" latent space.
    """

    scores = ("izif", "latent_norm")

    def __init__(
        self,
        latent_dim: int = 32,
        channels=None,
        *,
        enc_weight: float = 1.0,
        n_critic: int = 5,
        gp_weight: float = 10.0,
        epochs: int = 20,
        batch_size: int = 64,
        lr: float = 5e-4,
        encoder_epochs: int = 10,
        encoder_lr: float = 1e-3,
        kappa: float = 1.0,
        score: str = "izif",
        name: str | None = None,
        seed: int = 0,
        device=None,
        score_batch_size: int = 1024,
        contamination: float = 0.01,
    ):
        super().__init__(contamination)
        self.latent_dim = latent_dim
        self.channels = channels
        self.enc_weight = enc_weight
        self.n_critic = n_critic
        self.gp_weight = gp_weight
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.encoder_epochs = encoder_epochs
        self.encoder_lr = encoder_lr
        self.kappa = kappa
        self.score = score
        self.name = name
        self.seed = seed
        self.device = device
        self.score_batch_size = score_batch_size

    def _fit(self, x):
        import torch

        from .models.gan import IziFEncoder, SimultaneousEncoderGAN

        self._check_single_channel(x)
        if self.score not in self.scores:
            raise ValueError(
                f"score={self.score!r} is not a score of {type(self).__name__}; "
                f"valid values: {', '.join(self.scores)}"
            )
        torch.manual_seed(self.seed)
        model = SimultaneousEncoderGAN.build(
            x.shape[2:],
            self.latent_dim,
            self.channels,
            enc_weight=self.enc_weight,
            n_critic=self.n_critic,
            gp_weight=self.gp_weight,
        )
        self.gan_, self.history_ = self._train(
            "simenc", model, x, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr
        )
        self.encoder_history_ = None
        if self.encoder_epochs > 0:
            self.izif_, self.encoder_history_ = self._train_izif(
                x, self.gan_.generator, self.gan_.critic, init=self.gan_.encoder
            )
        else:
            self.izif_ = IziFEncoder(
                self.gan_.encoder, self.gan_.generator, self.gan_.critic, self.kappa
            ).eval()

    def transform(self, X) -> np.ndarray:
        """The jointly trained encoder's code of each image, ``(N, latent_dim)``."""
        x = self._checked(X)
        return self._batched(self.gan_.encoder, x)

    def _reconstruct(self, xb):
        return self.izif_.reconstruct(xb)

    def _anomaly_score(self, x):
        if self.score == "latent_norm":
            return self._batched(lambda xb: self.gan_.encoder(xb).norm(dim=1), x)
        return self._batched(self.izif_.score, x)


class AAEDetector(_TorchDetector):
    """The adversarial autoencoder (:class:`phbook.models.aae.AdversarialAutoencoder`).

    ``score``: ``"recon"``, the mean squared reconstruction error (the score of
    Alexander et al. 2020 for lensing images), or ``"prior_nll"``, ``||z||^2 / 2``,
    the negative log-density of the code under the ``N(0, I)`` prior, up to a constant.
    """

    scores = ("recon", "prior_nll")

    def __init__(
        self,
        latent_dim: int = 16,
        channels=None,
        *,
        adv_weight: float = 1.0,
        hidden: int = 128,
        epochs: int = 20,
        batch_size: int = 128,
        lr: float = 1e-3,
        score: str = "recon",
        name: str | None = None,
        seed: int = 0,
        device=None,
        score_batch_size: int = 1024,
        contamination: float = 0.01,
    ):
        super().__init__(contamination)
        self.latent_dim = latent_dim
        self.channels = channels
        self.adv_weight = adv_weight
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.score = score
        self.name = name
        self.seed = seed
        self.device = device
        self.score_batch_size = score_batch_size

    def _fit(self, x):
        import torch

        from .models.aae import AdversarialAutoencoder

        self._check_single_channel(x)
        if self.score not in self.scores:
            raise ValueError(
                f"score={self.score!r} is not a score of {type(self).__name__}; "
                f"valid values: {', '.join(self.scores)}"
            )
        torch.manual_seed(self.seed)
        model = AdversarialAutoencoder(
            x.shape[2:],
            self.latent_dim,
            self.channels,
            hidden=self.hidden,
            adv_weight=self.adv_weight,
        )
        self.model_, self.history_ = self._train(
            "aae", model, x, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr
        )

    def transform(self, X) -> np.ndarray:
        """The code of each image, ``(N, latent_dim)``."""
        return self._batched(self.model_.encode, self._checked(X))

    def _reconstruct(self, xb):
        return self.model_(xb)

    def _anomaly_score(self, x):
        if self.score == "prior_nll":
            return self._batched(lambda xb: 0.5 * self.model_.encode(xb).pow(2).sum(1), x)
        return self._batched(self.model_.reconstruction_error, x)


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

    Each detector's score is turned into a p-value against its scores on the
    training frames, ``p = (#{training scores >= s} + 1) / (n + 1)``: the fraction of
    normal frames at least as odd, made continuous (interpolated between training
    scores, an exponential tail beyond the largest; :mod:`phbook.pvalues`) so that
    fused scores do not tie. Then ``method="fisher"`` sums ``-log p`` over the
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
        logp = self.log_p_values(x)
        if self.method == "fisher":
            return -logp.sum(axis=1)
        return (1 - np.exp(logp)).mean(axis=1)


# ------------------------------------------------ likelihood detectors (chapters 7-8)


class _TorchLikelihoodDetector(_TorchBase):
    """Shared plumbing of the likelihood detectors: build, train (or load), score.

    ``model_kwargs`` go to the model's constructor (the image size is taken from the
    training images), ``fit_kwargs`` to :func:`phbook.train.fit` (``epochs``,
    ``batch_size``, ``lr``, ...). With ``name`` the model is trained through
    :func:`phbook.train.load_or_train` under that checkpoint name, so a second ``fit``
    on the same data loads it instead.
    """

    def __init__(
        self,
        *,
        model_kwargs: dict | None = None,
        fit_kwargs: dict | None = None,
        name: str | None = None,
        batch_size: int = 1024,
        device=None,
        contamination: float = 0.01,
    ):
        super().__init__(contamination)
        self.model_kwargs = model_kwargs
        self.fit_kwargs = fit_kwargs
        self.name = name
        self.batch_size = batch_size
        self.device = device

    def _build(self, factory):
        """``factory()`` with torch's generator seeded by ``self.seed``: the initial
        weights do not depend on what ran before (the global generator is restored)."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(getattr(self, "seed", 0)))
            return factory()

    def _train(self, model, x, name: str | None, fit_kwargs: dict | None, x_val=None):
        from . import train as training

        kwargs = {"device": self._device(), **(fit_kwargs or {})}
        if x_val is not None and "x_val" not in kwargs:
            kwargs["x_val"] = x_val
        if name:
            model, history = training.load_or_train(name, model, x, **kwargs)
        else:
            history = training.fit(model, x, **kwargs)
        return model.to(self._device()).eval(), history


def _check_integer_images(x: np.ndarray, name: str = "X") -> None:
    if not np.array_equal(x, np.round(x)):
        raise ValueError(
            f"{name} must hold integer values (ADC counts) for a discretised likelihood; "
            "pass raw pulse heights, not normalised images, or use "
            "likelihood='continuous'"
        )


class PixelCNNDetector(_TorchLikelihoodDetector):
    """The exact likelihood of a gated PixelCNN as an anomaly score (chapter 8).

    ``X`` holds integer pulse heights (ADC) for the default discretised likelihood
    (``model_kwargs={"likelihood": "continuous"}`` for real-valued images).
    Raw likelihoods favour *simple* images (a frame of pure noise can be more probable
    than any ordinary shower), so ``corrected`` chooses the score:

    ``False``
        ``-log2 p(x) / P``: bits per pixel under the PixelCNN;
    ``"ratio"``
        the likelihood ratio against a background model,
        ``(log2 p_bg(x) - log2 p(x)) / P``, with ``p_bg`` the
        :class:`~phbook.models.pixelcnn.IndependentPixels` model: every pixel
        independent (it knows the pixel statistics, not how pixels go together), so the
        ratio keeps what the PixelCNN knows about shapes and cancels simplicity;
    ``"combined"`` (or ``True``)
        both tests at once, by Fisher's method as in :class:`ScoreFusion`:
        ``-log p_raw - log p_ratio``, with ``p`` the empirical p-value of each score
        among held-out normal training frames, ``(#{reference >= s} + 1) / (n + 1)``.
        A frame is flagged when either test, or both, find it odd.

    A fraction ``calibration_fraction`` of the training images is held out: the
    models' validation set and the reference of the p-values. The background model is
    checkpointed as ``name + "-background"``. ``seed`` fixes the initial weights.
    """

    corrections = (False, "ratio", "combined", True)

    def __init__(
        self,
        *,
        model_kwargs: dict | None = None,
        fit_kwargs: dict | None = None,
        name: str | None = None,
        corrected: bool | str = False,
        background_kwargs: dict | None = None,
        background_fit_kwargs: dict | None = None,
        calibration_fraction: float = 0.1,
        seed: int = 0,
        batch_size: int = 1024,
        device=None,
        contamination: float = 0.01,
    ):
        super().__init__(
            model_kwargs=model_kwargs,
            fit_kwargs=fit_kwargs,
            name=name,
            batch_size=batch_size,
            device=device,
            contamination=contamination,
        )
        self.corrected = corrected
        self.background_kwargs = background_kwargs
        self.background_fit_kwargs = background_fit_kwargs
        self.calibration_fraction = calibration_fraction
        self.seed = seed

    def _fit(self, x):
        from .models.pixelcnn import IndependentPixels, PixelCNN

        if self.corrected not in self.corrections:
            raise ValueError(
                f"corrected={self.corrected!r} is not valid; use False, 'ratio' or "
                "'combined' (True)"
            )
        if not 0 < self.calibration_fraction < 0.5:
            raise ValueError(
                "calibration_fraction must lie in (0, 0.5), got "
                f"{self.calibration_fraction}"
            )
        kwargs = {
            "in_channels": x.shape[1],
            "image_size": x.shape[2:],
            **(self.model_kwargs or {}),
        }
        if kwargs.get("likelihood", "discretized") == "discretized":
            _check_integer_images(x)
        n_cal = max(1, int(round(self.calibration_fraction * len(x))))
        if len(x) - n_cal < 1:
            raise ValueError(f"X holds {len(x)} images: too few to train and calibrate")
        x_cal, x_fit = x[:n_cal], x[n_cal:]
        self.model_, self.history_ = self._train(
            self._build(lambda: PixelCNN(**kwargs)),
            x_fit,
            self.name,
            self.fit_kwargs,
            x_cal,
        )
        shared = {
            k: v
            for k, v in kwargs.items()
            if k not in ("channels", "n_layers", "kernel_size")
        }
        # the background model is a table of per-pixel mixtures: cheap, so it gets
        # enough steps (about 400) whatever the size of the training set
        steps_per_epoch = max(1, len(x_fit) // 256)
        bg_fit = {
            "epochs": max(10, -(-400 // steps_per_epoch)),
            "batch_size": 256,
            "lr": 3e-2,
            **(self.background_fit_kwargs or {}),
        }
        self.background_, self.background_history_ = self._train(
            self._build(
                lambda: IndependentPixels(**{**shared, **(self.background_kwargs or {})})
            ),
            x_fit,
            f"{self.name}-background" if self.name else None,
            bg_fit,
            x_cal,
        )
        parts = self.score_parts(x_cal, _checked=False)
        self.reference_ = {k: np.sort(parts[k]) for k in ("bits_per_pixel", "ratio")}

    def _bpp(self, model, x):
        return self._batched(lambda xb: model.bits_per_pixel(xb), x)

    def score_parts(self, X, _checked: bool = True) -> dict[str, np.ndarray]:
        """Every score at once: ``bits_per_pixel`` under the PixelCNN,
        ``background_bits_per_pixel``, ``ratio`` and (once fitted) ``combined``."""
        x = self._checked(X) if _checked else as_images(X)
        if self.model_.likelihood == "discretized":
            _check_integer_images(x)
        bpp = self._bpp(self.model_, x)
        bg = self._bpp(self.background_, x)
        parts = {"bits_per_pixel": bpp, "background_bits_per_pixel": bg, "ratio": bpp - bg}
        if hasattr(self, "reference_"):
            combined = np.zeros(len(x))
            for key, ref in self.reference_.items():
                above = len(ref) - np.searchsorted(ref, parts[key], side="left")
                combined -= np.log((above + 1) / (len(ref) + 1))
            parts["combined"] = combined
        return parts

    def log_prob(self, X) -> np.ndarray:
        """``log p(x)`` of each image under the PixelCNN (nats; exact)."""
        x = self._checked(X)
        return self._batched(lambda xb: self.model_.log_prob(xb), x)

    def _anomaly_score(self, x):
        parts = self.score_parts(x, _checked=False)
        key = {False: "bits_per_pixel", "ratio": "ratio"}.get(self.corrected, "combined")
        return parts[key]


class ImageFlowDetector(_TorchLikelihoodDetector):
    """Bits per pixel under the image flow :class:`phbook.models.realnvp.RealNVP`.

    ``X`` holds integer pulse heights (ADC). The score is ``-log2`` of the
    importance-weighted dequantisation bound on ``P(x)`` with ``n_samples`` uniform
    draws (fixed by ``seed``, so repeated calls agree), per pixel: higher = less
    probable = more anomalous. ``seed`` also fixes the initial weights.
    """

    def __init__(
        self,
        *,
        model_kwargs: dict | None = None,
        fit_kwargs: dict | None = None,
        name: str | None = None,
        n_samples: int = 4,
        seed: int = 0,
        val_fraction: float = 0.1,
        batch_size: int = 1024,
        device=None,
        contamination: float = 0.01,
    ):
        super().__init__(
            model_kwargs=model_kwargs,
            fit_kwargs=fit_kwargs,
            name=name,
            batch_size=batch_size,
            device=device,
            contamination=contamination,
        )
        self.n_samples = n_samples
        self.seed = seed
        self.val_fraction = val_fraction

    def _fit(self, x):
        from .models.realnvp import RealNVP

        _check_integer_images(x)
        if not 0 <= self.val_fraction < 0.5:
            raise ValueError(f"val_fraction must lie in [0, 0.5), got {self.val_fraction}")
        kwargs = {
            "in_channels": x.shape[1],
            "image_size": x.shape[2:],
            **(self.model_kwargs or {}),
        }
        n_val = int(round(self.val_fraction * len(x)))
        x_val = x[:n_val] if n_val else None
        self.model_, self.history_ = self._train(
            self._build(lambda: RealNVP(**kwargs)),
            x[n_val:],
            self.name,
            self.fit_kwargs,
            x_val,
        )

    def bits_per_pixel(self, X) -> np.ndarray:
        """The score: ``-log2 P(x)`` bound per pixel value, per image."""
        return self.anomaly_score(X)

    def _anomaly_score(self, x):

        _check_integer_images(x)
        if int(self.n_samples) != self.n_samples or self.n_samples < 1:
            raise ValueError(
                f"n_samples must be a positive integer, got {self.n_samples!r}"
            )
        k = int(self.n_samples)

        def bpp(xb):
            # per-frame dequantisation noise (phbook.noise): batch-independent scores
            u = frame_uniform(xb, (k, *xb.shape[1:]), self.seed).transpose(0, 1)
            return self.model_.bits_per_pixel(xb, k, noise=u)

        return self._batched(bpp, x)


class FlowVAEDetector(_TorchLikelihoodDetector):
    """A VAE with latent normalizing flows (:class:`phbook.models.flows.FlowVAE`).

    ``X`` holds normalised images (e.g. :class:`phbook.transforms.AsinhStretch` of the
    pulse heights). Scores, higher = more anomalous:

    ``"iwae"``
        minus the importance-weighted bound on ``log p(x)`` with ``n_samples`` draws
        from the flow posterior (the tightest of the three);
    ``"elbo"``
        minus the ELBO (``beta = 1``), averaged over ``n_samples`` draws;
    ``"recon"``
        mean squared error of the reconstruction decoded from ``mu`` pushed through the
        flows (one deterministic code per image).

    ``flow`` and ``n_flows`` choose the flows (``"none"``: the plain beta-VAE);
    ``model_kwargs`` go to :class:`~phbook.models.flows.FlowVAE` (``latent_dim``,
    ``beta``, ``kl_warmup``, ``context_dim``, ``flow_kwargs``, ``decoder``, ...).
    ``seed`` fixes the initial weights and the posterior draws of the scores.
    """

    scores = ("iwae", "elbo", "recon")

    def __init__(
        self,
        flow: str = "planar",
        n_flows: int = 4,
        *,
        score: str = "iwae",
        n_samples: int = 16,
        seed: int = 0,
        model_kwargs: dict | None = None,
        fit_kwargs: dict | None = None,
        name: str | None = None,
        val_fraction: float = 0.1,
        batch_size: int = 1024,
        device=None,
        contamination: float = 0.01,
    ):
        super().__init__(
            model_kwargs=model_kwargs,
            fit_kwargs=fit_kwargs,
            name=name,
            batch_size=batch_size,
            device=device,
            contamination=contamination,
        )
        self.flow = flow
        self.n_flows = n_flows
        self.score = score
        self.n_samples = n_samples
        self.seed = seed
        self.val_fraction = val_fraction

    def _fit(self, x):
        from .models.flows import FlowVAE

        if self.score not in self.scores:
            raise ValueError(
                f"score={self.score!r} is not a score of FlowVAEDetector; valid values: "
                + ", ".join(self.scores)
            )
        self._check_single_channel(x)
        if not 0 <= self.val_fraction < 0.5:
            raise ValueError(f"val_fraction must lie in [0, 0.5), got {self.val_fraction}")
        model = self._build(
            lambda: FlowVAE(
                image_size=x.shape[2:],
                flow=self.flow,
                n_flows=self.n_flows,
                **(self.model_kwargs or {}),
            )
        )
        n_val = int(round(self.val_fraction * len(x)))
        x_val = x[:n_val] if n_val else None
        self.model_, self.history_ = self._train(
            model, x[n_val:], self.name, self.fit_kwargs, x_val
        )

    def log_likelihood_bounds(
        self, X, n_samples: int | None = None
    ) -> dict[str, np.ndarray]:
        """The ELBO and IWAE bounds on ``log p(x)`` of each image (nats)."""
        import torch

        x = self._checked(X)
        k = int(self.n_samples if n_samples is None else n_samples)
        if k < 1:
            raise ValueError(f"n_samples must be a positive integer, got {k!r}")

        def bounds(xb):
            # per-frame posterior draws (phbook.noise): batch-independent scores
            d = self.model_.latent_dim
            eps = frame_normal(xb, (k, d), self.seed).transpose(0, 1)
            b = self.model_.log_likelihood_bounds(xb, k, eps=eps)
            return torch.stack([b["elbo"], b["iwae"]], 1)

        both = self._batched(bounds, x).reshape(len(x), 2).astype(np.float64)
        return {"elbo": both[:, 0], "iwae": both[:, 1]}

    def reconstruct(self, X) -> np.ndarray:
        """Reconstructions from ``mu`` pushed through the flows, ``(N, 1, H, W)``."""
        x = self._checked(X)
        flat = self._batched(lambda xb: self._reconstruct(xb).flatten(1), x)
        return flat.reshape(x.shape).astype(np.float32)

    def _reconstruct(self, xb):
        mu, _, ctx = self.model_._encode(xb)
        zk, _ = self.model_.flows(mu, ctx)
        return self.model_.decode(zk)

    def _anomaly_score(self, x):
        if self.score == "recon":
            return self._batched(
                lambda xb: (xb - self._reconstruct(xb)).pow(2).flatten(1).mean(1), x
            )
        return -self.log_likelihood_bounds(x)[self.score]


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


# ------------------------------------------------------------------- lensing (ch. 10)


class RBMDetector(Detector):
    """A Bernoulli restricted Boltzmann machine scored by its free energy.

    The RBM baseline of Alexander et al. (2020) for lensing images: scikit-learn's
    ``BernoulliRBM`` (``n_components`` hidden units, persistent contrastive
    divergence) learns ``p(v)`` of images scaled to ``[0, 1]``. The anomaly score is the
    free energy

    ``F(v) = -b . v - sum_j softplus(c_j + W_j . v)``,

    ``-log p(v)`` up to the (unknown, constant) log partition function, so higher is
    less probable. Images are scaled by ``(x - lo) / (hi - lo)``, clipped to
    ``[0, 1]``, with ``lo`` and ``hi`` the ``clip_quantiles`` of the training pixels.
    """

    def __init__(
        self,
        n_components: int = 256,
        learning_rate: float = 0.01,
        n_iter: int = 10,
        batch_size: int = 64,
        clip_quantiles: tuple[float, float] = (0.001, 0.999),
        random_state: int = 0,
        contamination: float = 0.01,
    ):
        super().__init__(contamination)
        self.n_components = n_components
        self.learning_rate = learning_rate
        self.n_iter = n_iter
        self.batch_size = batch_size
        self.clip_quantiles = clip_quantiles
        self.random_state = random_state

    def scale(self, X) -> np.ndarray:
        """Flattened images scaled to ``[0, 1]`` as the RBM sees them."""
        flat = _flat(self._checked(X) if hasattr(self, "lo_") else as_images(X))
        return np.clip((flat - self.lo_) / (self.hi_ - self.lo_), 0.0, 1.0)

    def _fit(self, x):
        from sklearn.neural_network import BernoulliRBM

        q_lo, q_hi = self.clip_quantiles
        if not 0 <= q_lo < q_hi <= 1:
            raise ValueError(
                f"clip_quantiles must satisfy 0 <= low < high <= 1, got "
                f"{self.clip_quantiles}"
            )
        flat = _flat(x)
        self.lo_, self.hi_ = (float(v) for v in np.quantile(flat, [q_lo, q_hi]))
        if self.hi_ <= self.lo_:
            raise ValueError("X is constant: the RBM needs images with some contrast")
        self.rbm_ = BernoulliRBM(
            n_components=self.n_components,
            learning_rate=self.learning_rate,
            n_iter=self.n_iter,
            batch_size=self.batch_size,
            random_state=self.random_state,
        ).fit(np.clip((flat - self.lo_) / (self.hi_ - self.lo_), 0.0, 1.0))

    def free_energy(self, X) -> np.ndarray:
        """``F(v)`` of each image (the anomaly score)."""
        v = self.scale(X)
        hidden = v @ self.rbm_.components_.T + self.rbm_.intercept_hidden_
        return -(v @ self.rbm_.intercept_visible_) - np.logaddexp(0, hidden).sum(1)

    def _anomaly_score(self, x):
        return self.free_energy(x)


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
        flat = _flat(as_images(X)).astype(np.float64)
        pca = getattr(self, "pca_", None)
        return pca.transform(flat) if pca is not None else flat

    def predict_cluster(self, X) -> np.ndarray:
        """Index of the nearest centroid of each image."""
        return self.kmeans_.predict(self.transform(self._checked(X)))

    def _anomaly_score(self, x):
        # KMeans.transform gives the distance to every centroid
        return self.kmeans_.transform(self.transform(x)).min(axis=1)
