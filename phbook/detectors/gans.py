"""GAN-based detectors and the adversarial autoencoder (chapters 5 and 6): f-AnoGAN,
AnoGAN, the simultaneously trained encoder GAN and the AAE."""

from __future__ import annotations

import numpy as np

from .. import train as training
from ..models import gan as G
from ..models.aae import AdversarialAutoencoder
from ..models.gan import (
    IziFEncoder,
    SimultaneousEncoderGAN,
    anogan_search,
    residual_and_feature,
    weighted_score,
)
from .base import _TorchBase

__all__ = [
    "FAnoGANDetector",
    "AnoGANDetector",
    "SimultaneousEncoderGANDetector",
    "AAEDetector",
]


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
        kwargs = {"device": self._device(), "seed": self.seed, **fit_kwargs}
        if self.name:
            model, history = training.load_or_train(
                f"{self.name}-{suffix}", model, x, **kwargs
            )
        else:
            history = training.fit(model, x, **kwargs)
        return model.eval(), history

    def _build_gan(self, x: np.ndarray):
        """The WGAN-GP of :func:`phbook.models.gan.WGANGP`, trained (or the given one)."""
        import copy

        import torch

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

    def _train_izif(self, x: np.ndarray, generator, critic, init=None, tune=False):
        """f-AnoGAN's encoder for a fixed generator and critic, trained by izi_f; with
        ``tune``, izi_f again from ``init`` with the generator learning too
        (``tune_epochs`` at ``tune_lr``)."""
        import copy

        import torch

        torch.manual_seed(self.seed + (2 if tune else 1))
        encoder = (
            copy.deepcopy(init)
            if init is not None
            else G.Encoder(x.shape[2:], generator.latent_dim, self.channels)
        )
        wrapper = G.IziFEncoder(
            encoder,
            copy.deepcopy(generator),
            copy.deepcopy(critic),
            kappa=self.kappa,
            train_generator=tune,
        )
        # the checkpoint name carries a fingerprint of the GAN it was trained against
        # (and, when tuning, of the encoder it starts from)
        tag = f"izif-{_state_hash(generator)}{_state_hash(critic)}"
        if tune:
            tag = f"tune-{_state_hash(generator)}{_state_hash(critic)}{_state_hash(init)}"
        return self._train(
            tag,
            wrapper,
            x,
            epochs=self.tune_epochs if tune else self.encoder_epochs,
            batch_size=self.batch_size,
            lr=self.tune_lr if tune else self.encoder_lr,
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
    tune_epochs, tune_lr
        After izi_f, ``tune_epochs`` more epochs of the same objective in which the
        generator learns too, at ``tune_lr`` (the critic stays fixed; 0: Schlegl et
        al.'s f-AnoGAN as published). A WGAN's generator covers the bulk of the
        training images but not all of them, and a normal image it cannot generate
        reconstructs badly however good the encoder is; tuning lets the generator
        follow the images the encoder maps to it. ``gan_`` stays the GAN as trained.
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
        tune_epochs: int = 0,
        tune_lr: float = 1e-4,
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
        self.tune_epochs = tune_epochs
        self.tune_lr = tune_lr
        self.gan = gan
        self.name = name
        self.seed = seed
        self.device = device
        self.score_batch_size = score_batch_size

    def _fit(self, x):
        self._check_single_channel(x)
        if self.kappa < 0:
            raise ValueError(f"kappa must be non-negative, got {self.kappa}")
        if isinstance(self.tune_epochs, bool) or not (
            isinstance(self.tune_epochs, (int, np.integer)) and self.tune_epochs >= 0
        ):
            raise ValueError(
                f"tune_epochs must be an integer >= 0, got {self.tune_epochs!r}"
            )
        if self.tune_epochs > 0 and not self.tune_lr > 0:
            raise ValueError(f"tune_lr must be positive, got {self.tune_lr!r}")
        self.gan_, self.history_ = self._build_gan(x)
        self.izif_, self.encoder_history_ = self._train_izif(
            x, self.gan_.generator, self.gan_.critic
        )
        self.tune_history_ = None
        if self.tune_epochs > 0:
            self.izif_, self.tune_history_ = self._train_izif(
                x, self.izif_.generator, self.izif_.critic, self.izif_.encoder, tune=True
            )
        self.encoder_ = self.izif_.encoder

    def _reconstruct(self, xb):
        return self.izif_.reconstruct(xb)

    def _anomaly_score(self, x):
        return self._batched(self.izif_.score, x)

    def score_terms(self, X) -> dict[str, np.ndarray]:
        """The two terms of the score per image: ``residual`` and ``feature`` (MSEs)."""
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
        if self.offset_sample < 1:
            raise ValueError(f"offset_sample must be at least 1, got {self.offset_sample}")
        x = self._training_images(X)
        self._fit(x)
        rng = np.random.default_rng(self.seed)
        pick = rng.choice(len(x), min(len(x), self.offset_sample), replace=False)
        self.offset_ = float(
            np.quantile(self.score_samples(x[np.sort(pick)]), self.contamination)
        )
        return self

    def _fit(self, x):
        self._check_single_channel(x)
        weighted_score(0.0, 0.0, self.lam)  # checks lam
        if self.n_steps < 0:
            raise ValueError(f"n_steps must be non-negative, got {self.n_steps}")
        self.gan_, self.history_ = self._build_gan(x)

    def search(self, X) -> dict[str, np.ndarray]:
        """The latent search of each image: ``z``, ``x_hat``, ``residual``,
        ``feature`` and ``score`` as NumPy arrays."""
        import torch

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

        self._check_single_channel(x)
        self._check_score()
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
    ``architecture``: the GANs' networks (``"gan"``) or the book's convolutional
    autoencoder (``"conv"``); see :mod:`phbook.models.aae`.
    """

    scores = ("recon", "prior_nll")

    def __init__(
        self,
        latent_dim: int = 16,
        channels=None,
        *,
        adv_weight: float = 1.0,
        hidden: int = 128,
        architecture: str = "gan",
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
        self.architecture = architecture
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

        self._check_single_channel(x)
        self._check_score()
        torch.manual_seed(self.seed)
        model = AdversarialAutoencoder(
            x.shape[2:],
            self.latent_dim,
            self.channels,
            hidden=self.hidden,
            adv_weight=self.adv_weight,
            architecture=self.architecture,
        )
        self.model_, self.history_ = self._train(
            "aae" if self.architecture == "gan" else f"aae-{self.architecture}",
            model,
            x,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
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
