"""Autoencoder detectors (chapters 2-4): reconstruction and latent-space scores of the
sparse convolutional autoencoder and the beta-VAE."""

from __future__ import annotations

import inspect
import numbers

import numpy as np

from .. import latent
from .. import train as training
from ..models.ae import SparseConvAE
from ..models.vae import BetaVAE, kl_divergence, reconstruction_error, reparameterize
from ..noise import frame_normal
from .base import _TorchBase

__all__ = ["DeepDetector", "AutoencoderDetector", "VAEDetector"]


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
        that a mean over all pixels dilutes); ``"recon_top4"`` the mean of the four
        largest squared pixel errors (a tail of the residual: a compact anomaly of a
        few pixels counts in full, one noisy pixel less; chapter 9 measures it above
        ``"recon_max"`` for the beta-VAE); ``"latent_nll"`` the negative
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
    scores: tuple[str, ...] = (
        "recon",
        "recon_max",
        "recon_top4",
        "latent_nll",
        "latent_dist",
    )
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
        self._check_score()
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
            self.gmm_selection_ = latent.select_gmm(
                self._encode(x), self.gmm_components, max_samples=self.gmm_max_samples
            )
            self.gmm_ = self.gmm_selection_.best

    # -- what the model gives
    def _encode(self, x: np.ndarray) -> np.ndarray:
        return latent.encode(
            self.model_, x, batch_size=self.batch_size, device=self._device()
        )

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

    def _score_recon_top4(self, xb):
        err = (xb - self._reconstruct(xb)).pow(2).flatten(1)
        return err.topk(min(4, err.shape[1]), dim=1).values.mean(1)

    def _anomaly_score(self, x):
        if self.score == "latent_nll":
            return latent.gmm_nll(self.gmm_, self._encode(x))
        if self.score == "latent_dist":
            return latent.nearest_component_distance(self.gmm_, self._encode(x))
        return self._batched(getattr(self, f"_score_{self.score}"), x)


class AutoencoderDetector(DeepDetector):
    """The sparse convolutional autoencoder (:class:`phbook.models.ae.SparseConvAE`)
    as a detector; scores: ``"recon"``, ``"latent_nll"``, ``"latent_dist"``."""

    model_class = SparseConvAE


def _is_number(value) -> bool:
    """A real number, not a boolean (``True`` is an ``int`` to Python)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


class VAEDetector(DeepDetector):
    """The beta-VAE (:class:`phbook.models.vae.BetaVAE`) as a detector.

    Scores (``score=``), each higher for more anomalous images:

    ``"recon"``, ``"recon_max"``, ``"recon_top4"``
        mean (or largest pixel, or mean of the four largest) squared error of the
        reconstruction decoded from ``mu`` (deterministic);
    ``"elbo"``
        the negative ELBO of the model as trained: its loss ``recon + beta * kl`` is
        ``beta`` times the negative ELBO of a Gaussian decoder of pixel variance
        ``beta / 2`` (chapter 3), so the score is the expected sum of squared errors
        over ``n_samples`` posterior samples divided by ``beta``, plus the KL
        divergence (an upper bound on the negative log-likelihood, up to a constant;
        a model trained with ``beta = 0`` has none, and the score refuses it).
        ``elbo_beta`` replaces the model's ``beta`` in that division (``1``: the
        form of earlier versions, a decoder variance of 1/2, which model files
        written before the option keep, so that their stored thresholds still
        apply; a model that does not train on ``recon + beta * kl``, such as
        :class:`~phbook.models.vae.ChaseCVAE`, needs it);
    ``"kl"``
        the KL divergence of the posterior from the prior: how far the encoder has to
        move the code to describe the image;
    ``"latent_nll"``, ``"latent_dist"``
        as in :class:`DeepDetector`, on the posterior means.
    """

    model_class = BetaVAE
    scores = (
        "recon",
        "recon_max",
        "recon_top4",
        "elbo",
        "kl",
        "latent_nll",
        "latent_dist",
    )

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
        elbo_beta: float | None = None,
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
        self.elbo_beta = elbo_beta

    @property
    def elbo_scale(self) -> float:
        """The ``beta`` that divides the squared error in the ``"elbo"`` score:
        ``elbo_beta``, else the model's own."""
        return self._elbo_scale(type(self.model_), getattr(self.model_, "beta", None))

    def _check_elbo_beta(self) -> None:
        value = self.elbo_beta
        if value is None:
            return
        if not _is_number(value):
            raise TypeError(f"elbo_beta must be a number or None, got {value!r}")
        if not (np.isfinite(value) and value > 0):
            raise ValueError(
                "elbo_beta must be a positive number (the decoder's pixel variance is "
                f"elbo_beta / 2), got {value}"
            )

    def _elbo_scale(self, model_type: type, model_beta) -> float:
        self._check_elbo_beta()
        if not (isinstance(model_type, type) and issubclass(model_type, BetaVAE)):
            raise ValueError(
                "score='elbo' is the bound of a BetaVAE's Gaussian decoder; got a "
                f"{getattr(model_type, '__name__', model_type)} (a FlowVAE has its own "
                "FlowVAEDetector)"
            )
        if self.elbo_beta is not None:
            return float(self.elbo_beta)
        if model_type.loss is not BetaVAE.loss:
            raise ValueError(
                f"{model_type.__name__} does not train on recon + beta * kl, so its "
                "beta is no decoder variance: give elbo_beta for score='elbo'"
            )
        if not (_is_number(model_beta) and np.isfinite(model_beta) and model_beta > 0):
            raise ValueError(
                "score='elbo' needs a model trained with beta > 0 (the decoder's pixel "
                f"variance is beta / 2); this model's beta is {model_beta!r}"
            )
        return float(model_beta)

    def _fit(self, x):
        # refuse a bad elbo_beta, or an ELBO the model does not have, before training
        self._check_elbo_beta()
        if self.score == "elbo":
            if self.model is not None:
                kind, beta = type(self.model), getattr(self.model, "beta", None)
            else:
                kind = self.model_class
                default = inspect.signature(kind).parameters["beta"].default
                beta = (self.model_kwargs or {}).get("beta", default)
            self._elbo_scale(kind, beta)
        super()._fit(x)

    def _reconstruct(self, xb):
        return self.model_.decode(self.model_.encode(xb)[0])

    def _score_kl(self, xb):
        return kl_divergence(*self.model_.encode(xb))

    def _anomaly_score(self, x):
        n = self.n_samples
        if self.score == "elbo":
            if int(n) != n or n < 1:
                raise ValueError(f"n_samples must be at least 1, got {n}")
            self.elbo_scale  # noqa: B018 (refuses a model without an ELBO)
        return super()._anomaly_score(x)

    def _score_elbo(self, xb):
        mu, logvar = self.model_.encode(xb)
        # each frame's draws are a function of the frame and the seed alone
        # (phbook.noise): its score does not depend on its neighbours in the batch
        eps = frame_normal(xb, (int(self.n_samples), mu.shape[1]), self.seed)
        recon = 0.0
        for j in range(int(self.n_samples)):
            z = reparameterize(mu, logvar, eps=eps[:, j])
            recon = recon + reconstruction_error(xb, self.model_.decode(z))
        return recon / (self.n_samples * self.elbo_scale) + kl_divergence(mu, logvar)
