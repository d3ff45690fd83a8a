"""Generative adversarial networks for single-channel images, and their anomaly scores.

Chapters 5 and 6 of the book. Everything the chapters teach is written out here:

* the losses: the original (DCGAN) discriminator and generator losses, saturating and
  non-saturating (:func:`discriminator_loss`, :func:`generator_loss`), the Wasserstein
  critic and generator losses (:func:`wasserstein_critic_loss`,
  :func:`wasserstein_generator_loss`) and the gradient penalty of WGAN-GP
  (:func:`gradient_penalty`);
* the models: :class:`GAN` (any generator and critic; ``loss="wgan-gp"`` or
  ``"dcgan"``), with :func:`DCGAN` and :func:`WGANGP` building convolutional networks
  for an image size; all train through :func:`phbook.train.fit` with two optimisers and
  ``n_critic`` critic steps per generator step (:meth:`GAN.training_step`);
* AnoGAN's latent search (:func:`anogan_search`), f-AnoGAN's izi_f encoder training
  (:func:`izif_loss`, :class:`IziFEncoder`) and one-pass score (:func:`fanogan_score`);
* the GAN whose encoder is trained *with* the generator (:class:`SimultaneousEncoderGAN`).

Conventions (shared with the other model families of the book): images are float
tensors ``(N, 1, H, W)``; the latent prior is a standard normal ``N(0, I)``; the
generator's output is linear (no ``tanh``), because the book's asinh-stretched images
are not bounded in ``[-1, 1]`` by construction.

**The weighting of the two score terms.** AnoGAN scores an image ``x`` whose best match
is ``G(z)`` with a *residual* term ``R`` (pixels) and a *discrimination* term ``D``
(the critic's features ``f``). This module defines, once, as Schlegl et al. (2017) do,

``A(x) = (1 - lam) * R(x) + lam * D(x)``

so ``lam`` weights the **critic-feature** term (:func:`weighted_score`). Zenati et al.
(2018) write the same score as ``alpha * L_G + (1 - alpha) * L_D`` with ``alpha`` on the
*reconstruction* term: their ``alpha`` is our ``1 - lam``. f-AnoGAN (Schlegl et al.
2019) writes ``R + kappa * D``; it ranks images exactly as ``lam = kappa / (1 + kappa)``
(:func:`kappa_to_lam`). Here ``R`` and ``D`` are *means* over pixels and features (mean
absolute values for AnoGAN, mean squares for f-AnoGAN), so ``lam`` and ``kappa`` do not
depend on the image size; Schlegl et al. (2017) used sums.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import ae as _ae

__all__ = [
    "image_hw",
    "default_channels",
    "ConvFeatures",
    "Critic",
    "Encoder",
    "Generator",
    "discriminator_loss",
    "generator_loss",
    "wasserstein_critic_loss",
    "wasserstein_generator_loss",
    "gradient_penalty",
    "GAN",
    "DCGAN",
    "WGANGP",
    "weighted_score",
    "kappa_to_lam",
    "residual_and_feature",
    "anogan_search",
    "izif_loss",
    "fanogan_score",
    "IziFEncoder",
    "SimultaneousEncoderGAN",
    "freeze",
]

LOSSES = ("wgan-gp", "dcgan")
NORMS = ("none", "batch", "layer")


# --------------------------------------------------------------------- architecture


def image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``image_size`` (an int, ``(H, W)`` or ``(1, H, W)``) as a checked ``(H, W)``;
    the GANs need sides of at least 4 pixels."""
    return _ae.image_hw(image_size, min_size=4)


def default_channels(image_size, base: int = 16, max_channels: int = 256) -> tuple:
    """Channels of the downsampling stages for an image size: one stage per halving.

    The image is halved until its shorter side is 4 to 7 pixels: 16x16 and 21x21 get
    2 stages, 32x32 and 48x48 get 3, 64x64 gets 4. Channels double at every stage.
    """
    h, w = image_hw(image_size)
    stages = max(1, int(math.floor(math.log2(min(h, w) / 4))))
    return tuple(min(max_channels, base * 2**i) for i in range(stages))


def _check_channels(channels) -> tuple[int, ...]:
    channels = tuple(int(c) for c in channels)
    if not channels or min(channels) < 1:
        raise ValueError(
            f"channels must be a non-empty list of positive ints, got {channels}"
        )
    return channels


def _padding(hw: tuple[int, int], stages: int) -> tuple[tuple[int, int], tuple]:
    """Padded size (a multiple of ``2**stages``) and the F.pad tuple to get there."""
    stride = 2**stages
    padded = tuple(math.ceil(s / stride) * stride for s in hw)
    dh, dw = padded[0] - hw[0], padded[1] - hw[1]
    return padded, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    return nn.Identity()


class ConvFeatures(nn.Module):
    """Strided 3x3 convolutions with LeakyReLU: ``(N, 1, H, W)`` -> flat features.

    The backbone of the critic and of the encoders. Each entry of ``channels`` is one
    stride-2 stage that halves the image; an image whose sides are not multiples of
    ``2 ** len(channels)`` is zero-padded evenly first (21x21 -> 24x24).
    ``norm`` is ``"none"`` (the WGAN-GP critic: a batch norm would make each image's
    score depend on the rest of the batch, which the gradient penalty forbids),
    ``"layer"`` or ``"batch"`` (the DCGAN discriminator).
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 16,
        channels: Sequence[int] | None = None,
        norm: str = "none",
    ):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.image_hw = image_hw(image_size)
        self.channels = _check_channels(channels or default_channels(self.image_hw))
        padded, self.pad = _padding(self.image_hw, len(self.channels))
        layers: list[nn.Module] = []
        c_in = 1
        for i, c in enumerate(self.channels):
            layers.append(nn.Conv2d(c_in, c, 3, stride=2, padding=1))
            if i > 0:  # no normalisation on the first layer (as in DCGAN)
                layers.append(_norm(norm, c))
            layers.append(nn.LeakyReLU(0.2))
            c_in = c
        self.body = nn.Sequential(*layers)
        stride = 2 ** len(self.channels)
        self.feature_shape = (self.channels[-1], padded[0] // stride, padded[1] // stride)
        self.n_features = math.prod(self.feature_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = F.pad(x, self.pad)
        return self.body(x).flatten(1)


class Critic(nn.Module):
    """Image -> one real number: the WGAN critic, or the DCGAN discriminator's logit.

    :meth:`features` is the last hidden layer, the ``f(x)`` of AnoGAN's and f-AnoGAN's
    feature (discrimination) term.
    """

    def __init__(self, image_size=16, channels=None, norm: str = "none"):
        super().__init__()
        self.body = ConvFeatures(image_size, channels, norm)
        self.image_hw = self.body.image_hw
        self.head = nn.Linear(self.body.n_features, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The critic's last hidden layer, ``(N, n_features)``."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).squeeze(1)


class Encoder(nn.Module):
    """Image -> latent code ``z`` (f-AnoGAN's encoder, the AAE's encoder)."""

    def __init__(self, image_size=16, latent_dim: int = 32, channels=None, norm="none"):
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be at least 1, got {latent_dim}")
        self.body = ConvFeatures(image_size, channels, norm)
        self.image_hw = self.body.image_hw
        self.latent_dim = int(latent_dim)
        self.head = nn.Linear(self.body.n_features, self.latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class Generator(nn.Module):
    """Latent code ``z`` -> image ``(N, 1, H, W)``, the mirror of :class:`ConvFeatures`.

    A linear layer makes a small feature map; each stage doubles it with a 3x3
    convolution to four times the channels followed by a pixel shuffle (sub-pixel
    convolution), which is free of the checkerboard artefacts of transposed
    convolutions and several times faster than them on a CPU. The output is cropped to
    ``image_size``. ``channels`` lists the stages from fine to coarse, as for
    :class:`ConvFeatures`, so that ``Generator(s, z, c)`` mirrors ``Critic(s, c)``.
    """

    def __init__(
        self,
        image_size=16,
        latent_dim: int = 32,
        channels=None,
        norm: str = "none",
    ):
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be at least 1, got {latent_dim}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.image_hw = image_hw(image_size)
        self.latent_dim = int(latent_dim)
        self.channels = _check_channels(channels or default_channels(self.image_hw))
        padded, pad = _padding(self.image_hw, len(self.channels))
        self.crop = (pad[2], pad[2] + self.image_hw[0], pad[0], pad[0] + self.image_hw[1])
        stride = 2 ** len(self.channels)
        coarse = tuple(reversed(self.channels))
        self.start_shape = (coarse[0], padded[0] // stride, padded[1] // stride)
        self.fc = nn.Sequential(
            nn.Linear(self.latent_dim, math.prod(self.start_shape)),
            nn.BatchNorm1d(math.prod(self.start_shape))
            if norm == "batch"
            else nn.Identity(),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        outs = coarse[1:] + (1,)
        for c_in, c_out in zip(coarse, outs, strict=True):
            layers += [nn.Conv2d(c_in, 4 * c_out, 3, padding=1), nn.PixelShuffle(2)]
            if c_out != 1:
                layers += [_norm(norm, c_out), nn.ReLU()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(
                f"z must have shape (N, {self.latent_dim}), got {tuple(z.shape)}"
            )
        h = self.fc(z).view(-1, *self.start_shape)
        x = self.body(h)
        t, b, left, right = self.crop
        return x[:, :, t:b, left:right]


def freeze(module: nn.Module) -> nn.Module:
    """Turn off the gradients of ``module``'s parameters (in place) and return it."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class _requires_grad:
    """Context manager: parameters of ``module`` get ``requires_grad=flag`` inside."""

    def __init__(self, module: nn.Module, flag: bool):
        self.params = list(module.parameters())
        self.flag = flag

    def __enter__(self):
        self.saved = [p.requires_grad for p in self.params]
        for p in self.params:
            p.requires_grad_(self.flag)

    def __exit__(self, *exc):
        for p, s in zip(self.params, self.saved, strict=True):
            p.requires_grad_(s)


# ---------------------------------------------------------------------------- losses


def discriminator_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor
) -> torch.Tensor:
    """The original GAN discriminator loss, ``-E[log D(x)] - E[log(1 - D(G(z)))]``.

    ``D = sigmoid(logit)``; written with ``softplus`` (``-log sigmoid(l) = softplus(-l)``
    and ``-log(1 - sigmoid(l)) = softplus(l)``), which is exact and never overflows.
    """
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor, saturating: bool = False) -> torch.Tensor:
    """The generator's loss in the original GAN.

    ``saturating=True``: the minimax loss ``E[log(1 - D(G(z)))]``, whose gradient
    vanishes when the discriminator confidently rejects the fakes (early in training).
    Default: the non-saturating ``-E[log D(G(z))]`` of Goodfellow et al. (2014), the
    same fixed point with strong gradients where the fakes are rejected.
    """
    if saturating:
        return -F.softplus(fake_logits).mean()
    return F.softplus(-fake_logits).mean()


def wasserstein_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor):
    """``E[f(G(z))] - E[f(x)]``: minus the critic's estimate of the Wasserstein distance."""
    return fake_scores.mean() - real_scores.mean()


def wasserstein_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """``-E[f(G(z))]``: the generator moves its samples up the critic's slope."""
    return -fake_scores.mean()


def gradient_penalty(
    critic: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    eps: torch.Tensor | None = None,
) -> torch.Tensor:
    """The WGAN-GP penalty ``E[(||grad f(x_t)||_2 - 1)^2]`` (Gulrajani et al. 2017).

    ``x_t = eps * real + (1 - eps) * fake`` with one ``eps ~ U[0, 1]`` per sample (pass
    ``eps``, shape ``(N,)``, to fix it). The penalty keeps the critic close to
    1-Lipschitz along the lines between real and generated samples, which is where the
    Wasserstein distance's optimal critic has gradient norm 1. The graph is kept
    (``create_graph=True``) so that the penalty itself can be minimised.
    """
    if real.shape != fake.shape:
        raise ValueError(
            f"real {tuple(real.shape)} and fake {tuple(fake.shape)} differ in shape"
        )
    n = len(real)
    shape = (n,) + (1,) * (real.dim() - 1)
    if eps is None:
        eps = torch.rand(shape, device=real.device, dtype=real.dtype)
    else:
        if eps.numel() != n:
            raise ValueError(
                f"eps must hold one number per sample ({n}), got {eps.numel()}"
            )
        eps = eps.to(real).reshape(shape)
    x_t = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    scores = critic(x_t)
    (grad,) = torch.autograd.grad(scores.sum(), x_t, create_graph=True)
    # a tiny floor keeps the square root differentiable where the gradient is zero
    norm = torch.sqrt(grad.flatten(1).pow(2).sum(1) + 1e-12)
    return (norm - 1).pow(2).mean()


# ----------------------------------------------------------------------------- GAN


class GAN(nn.Module):
    """A generator and a critic trained against each other by :func:`phbook.train.fit`.

    Parameters
    ----------
    generator, critic
        Any modules: ``generator(z)`` with ``z`` of shape ``(N, latent_dim)``, and
        ``critic(x)`` giving one number per sample (the DCGAN logit or WGAN score).
    loss
        ``"wgan-gp"``: Wasserstein losses with the gradient penalty of weight
        ``gp_weight`` (Gulrajani et al. 2017); ``"dcgan"``: the original losses with
        the non-saturating generator loss (``saturating=True`` for the minimax one).
    n_critic
        Critic steps per generator step. Each call of :meth:`training_step` (one batch
        of real images) is one critic step; the generator steps after every
        ``n_critic``-th.
    betas
        Adam's betas; ``None`` picks ``(0.0, 0.9)`` for WGAN-GP (as Gulrajani et al.)
        and ``(0.5, 0.999)`` for DCGAN (as Radford et al.). :func:`WGANGP` uses
        ``(0.5, 0.9)``, which trained faster on the book's frames.
    """

    def __init__(
        self,
        generator: nn.Module,
        critic: nn.Module,
        latent_dim: int,
        *,
        loss: str = "wgan-gp",
        n_critic: int = 5,
        gp_weight: float = 10.0,
        saturating: bool = False,
        betas: tuple[float, float] | None = None,
    ):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if n_critic < 1:
            raise ValueError(f"n_critic must be at least 1, got {n_critic}")
        if gp_weight < 0:
            raise ValueError(f"gp_weight must be non-negative, got {gp_weight}")
        self.generator = generator
        self.critic = critic
        self.latent_dim = int(latent_dim)
        self.loss_type = loss
        self.n_critic = int(n_critic)
        self.gp_weight = float(gp_weight)
        self.saturating = bool(saturating)
        if betas is None:
            betas = (0.0, 0.9) if loss == "wgan-gp" else (0.5, 0.999)
        self.betas = tuple(betas)

    # -- sampling
    def sample_z(self, n: int, device=None, generator=None) -> torch.Tensor:
        """``n`` codes from the prior ``N(0, I)``."""
        dev = device if device is not None else next(self.parameters()).device
        return torch.randn(n, self.latent_dim, device=dev, generator=generator)

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None) -> torch.Tensor:
        """``n`` generated images (in eval mode); ``seed`` makes them repeatable."""
        dev = next(self.parameters()).device
        gen = torch.Generator(device=dev).manual_seed(seed) if seed is not None else None
        was = self.generator.training
        self.generator.eval()
        x = self.generator(self.sample_z(n, dev, gen))
        self.generator.train(was)
        return x

    # -- the protocol of phbook.train.fit
    def _generator_parameters(self):
        return list(self.generator.parameters())

    def configure_optimizers(self, lr: float, weight_decay: float = 0.0) -> dict:
        """Two Adam optimisers: ``"critic"`` and ``"generator"``."""
        return {
            "critic": torch.optim.Adam(
                self.critic.parameters(), lr=lr, betas=self.betas, weight_decay=weight_decay
            ),
            "generator": torch.optim.Adam(
                self._generator_parameters(),
                lr=lr,
                betas=self.betas,
                weight_decay=weight_decay,
            ),
        }

    def critic_loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The critic's loss terms on a batch of real images and as many fakes."""
        with torch.no_grad():
            fake = self.generator(self.sample_z(len(x), x.device))
        real_s, fake_s = self.critic(x), self.critic(fake)
        if self.loss_type == "dcgan":
            loss = discriminator_loss(real_s, fake_s)
            return {
                "loss": loss,
                "d_real": torch.sigmoid(real_s).mean().detach(),
                "d_fake": torch.sigmoid(fake_s).mean().detach(),
                "g_loss": generator_loss(fake_s, self.saturating).detach(),
            }
        w = (real_s.mean() - fake_s.mean()).detach()
        terms = {"wasserstein": w, "g_loss": wasserstein_generator_loss(fake_s).detach()}
        loss = wasserstein_critic_loss(real_s, fake_s)
        if self.gp_weight > 0:
            gp = gradient_penalty(self.critic, x, fake)
            loss = loss + self.gp_weight * gp
            terms["gp"] = gp.detach()
        return {"loss": loss, **terms}

    def generator_step_loss(self, n: int, device) -> dict[str, torch.Tensor]:
        """The generator's loss on ``n`` fresh samples (critic parameters frozen)."""
        fake_s = self.critic(self.generator(self.sample_z(n, device)))
        if self.loss_type == "dcgan":
            return {"loss": generator_loss(fake_s, self.saturating)}
        return {"loss": wasserstein_generator_loss(fake_s)}

    def training_step(self, x, optimizers, state) -> dict[str, torch.Tensor]:
        """One critic step on ``x``; one generator step after every ``n_critic``-th."""
        terms = self.critic_loss(x)
        opt = optimizers["critic"]
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        if (state.step + 1) % self.n_critic == 0:
            opt = optimizers["generator"]
            opt.zero_grad(set_to_none=True)
            with _requires_grad(self.critic, False):
                g_terms = self.generator_step_loss(len(x), x.device)
            g_terms["loss"].backward()
            opt.step()
            self._after_generator_step(g_terms)
        return {k: v.detach() for k, v in terms.items()}

    def _after_generator_step(self, g_terms) -> None:
        """Hook for subclasses (logging of extra generator-step terms)."""

    @torch.no_grad()
    def validation_loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Held-out terms without the penalty: the critic's Wasserstein estimate (WGAN),
        or the discriminator loss (DCGAN), on held-out real images and fresh fakes."""
        fake = self.generator(self.sample_z(len(x), x.device))
        real_s, fake_s = self.critic(x), self.critic(fake)
        if self.loss_type == "dcgan":
            return {"loss": discriminator_loss(real_s, fake_s)}
        w = real_s.mean() - fake_s.mean()
        return {"loss": -w, "wasserstein": w}


def DCGAN(
    image_size=16,
    latent_dim: int = 32,
    channels: Sequence[int] | None = None,
    *,
    saturating: bool = False,
    n_critic: int = 1,
) -> GAN:
    """A convolutional GAN with the original losses (Radford et al. 2016).

    Batch norm in generator and discriminator (not on the discriminator's first layer),
    LeakyReLU in the discriminator, Adam with ``beta1 = 0.5``.
    """
    return GAN(
        Generator(image_size, latent_dim, channels, norm="batch"),
        Critic(image_size, channels, norm="batch"),
        latent_dim,
        loss="dcgan",
        n_critic=n_critic,
        saturating=saturating,
    )


def WGANGP(
    image_size=16,
    latent_dim: int = 32,
    channels: Sequence[int] | None = None,
    *,
    n_critic: int = 5,
    gp_weight: float = 10.0,
    critic_norm: str = "none",
    betas: tuple[float, float] = (0.5, 0.9),
) -> GAN:
    """A convolutional Wasserstein GAN with gradient penalty (Gulrajani et al. 2017).

    ``n_critic = 5`` critic steps per generator step and ``gp_weight = 10`` as in the
    paper; no batch norm in the critic (``critic_norm="layer"`` is the alternative the
    paper suggests). The generator has no batch norm either: on the book's frames it
    gave cleaner samples, and a generator without batch statistics behaves the same in
    training and in scoring. Adam's betas: ``betas`` (default ``(0.5, 0.9)``).
    """
    return GAN(
        Generator(image_size, latent_dim, channels, norm="none"),
        Critic(image_size, channels, norm=critic_norm),
        latent_dim,
        loss="wgan-gp",
        n_critic=n_critic,
        gp_weight=gp_weight,
        betas=betas,
    )


# -------------------------------------------------------------------- anomaly scores


def weighted_score(residual, feature, lam: float):
    """``(1 - lam) * residual + lam * feature``: AnoGAN's score (Schlegl et al. 2017).

    ``lam`` weights the **critic-feature** (discrimination) term: ``lam = 0`` is the
    pixel residual alone, ``lam = 1`` the feature term alone. Zenati et al. (2018)
    weight the other term: their ``alpha`` is ``1 - lam``.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must lie in [0, 1], got {lam}")
    return (1.0 - lam) * residual + lam * feature


def kappa_to_lam(kappa: float) -> float:
    """The ``lam`` of :func:`weighted_score` that ranks images as ``R + kappa * D`` does.

    ``R + kappa * D = (1 + kappa) * ((1 - lam) * R + lam * D)`` with
    ``lam = kappa / (1 + kappa)``: the same ranking, scaled by ``1 + kappa``.
    """
    if kappa < 0:
        raise ValueError(f"kappa must be non-negative, got {kappa}")
    return kappa / (1.0 + kappa)


def residual_and_feature(
    x: torch.Tensor, x_hat: torch.Tensor, critic: Critic, p: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image residual and feature terms between images and their matches.

    ``p = 2``: mean squared differences (f-AnoGAN); ``p = 1``: mean absolute
    differences (AnoGAN). Both ``x`` and ``x_hat`` go through the critic in one batch.
    """
    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p}")
    n = len(x)
    feats = critic.features(torch.cat([x, x_hat]))
    diff_x = (x - x_hat).flatten(1)
    diff_f = feats[:n] - feats[n:]
    if p == 1:
        return diff_x.abs().mean(1), diff_f.abs().mean(1)
    return diff_x.pow(2).mean(1), diff_f.pow(2).mean(1)


def anogan_search(
    generator: nn.Module,
    critic: Critic,
    x: torch.Tensor,
    *,
    lam: float = 0.1,
    n_steps: int = 100,
    lr: float = 0.05,
    z0: torch.Tensor | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """AnoGAN's latent search (Schlegl et al. 2017): the ``z`` whose ``G(z)`` best
    matches each image, found by ``n_steps`` gradient steps (Adam) on ``z``.

    The loss of image ``x`` is :func:`weighted_score` of the mean absolute pixel
    residual and the mean absolute critic-feature difference, and the anomaly score is
    the same quantity at the last ``z``. A whole batch is searched at once: each image
    has its own ``z`` and its own loss, and Adam's update is element-wise, so the
    images do not influence each other. ``z0`` starts the search (default: ``N(0, I)``
    draws from a generator seeded with ``seed``, so scores are repeatable).

    Returns a dict with ``z``, ``x_hat``, ``residual``, ``feature`` and ``score``
    (each ``(N,)`` or ``(N, ...)``, detached) and ``history``, each image's loss
    before every step, shape ``(n_steps, N)``.
    """
    if n_steps < 0:
        raise ValueError(f"n_steps must be non-negative, got {n_steps}")
    weighted_score(0.0, 0.0, lam)  # checks lam
    latent_dim = generator.latent_dim
    if z0 is None:
        gen = torch.Generator(device=x.device).manual_seed(seed)
        z0 = torch.randn(len(x), latent_dim, device=x.device, generator=gen)
    elif z0.shape != (len(x), latent_dim):
        raise ValueError(
            f"z0 must have shape ({len(x)}, {latent_dim}), got {tuple(z0.shape)}"
        )
    modes = (generator.training, critic.training)
    generator.eval()
    critic.eval()
    z = z0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    history = []
    try:
        with _requires_grad(generator, False), _requires_grad(critic, False):
            for _ in range(n_steps):
                r, d = residual_and_feature(x, generator(z), critic, p=1)
                loss = weighted_score(r, d, lam)
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                opt.step()
                history.append(loss.detach())
            with torch.no_grad():
                x_hat = generator(z)
                r, d = residual_and_feature(x, x_hat, critic, p=1)
    finally:
        generator.train(modes[0])
        critic.train(modes[1])
    return {
        "z": z.detach(),
        "x_hat": x_hat,
        "residual": r,
        "feature": d,
        "score": weighted_score(r, d, lam),
        "history": torch.stack(history) if history else torch.empty(0, len(x)),
    }


def izif_loss(
    x: torch.Tensor,
    encoder: nn.Module,
    generator: nn.Module,
    critic: Critic,
    kappa: float = 1.0,
) -> dict[str, torch.Tensor]:
    """f-AnoGAN's izi_f objective (Schlegl et al. 2019), averaged over the batch.

    ``MSE(x, G(E(x))) + kappa * MSE(f(x), f(G(E(x))))``: image -> code -> image, with
    the residual measured in pixels and in the critic's features ``f``. The generator
    and critic are fixed; only the encoder learns.
    """
    r, d = residual_and_feature(x, generator(encoder(x)), critic, p=2)
    return {"loss": (r + kappa * d).mean(), "residual": r.mean(), "feature": d.mean()}


def fanogan_score(
    x: torch.Tensor,
    encoder: nn.Module,
    generator: nn.Module,
    critic: Critic,
    kappa: float = 1.0,
) -> torch.Tensor:
    """f-AnoGAN's anomaly score of each image, in one forward pass:
    ``MSE(x, G(E(x))) + kappa * MSE(f(x), f(G(E(x))))``, shape ``(N,)``."""
    with torch.no_grad():
        r, d = residual_and_feature(x, generator(encoder(x)), critic, p=2)
    return r + kappa * d


class IziFEncoder(nn.Module):
    """f-AnoGAN's second stage: an encoder trained by izi_f against a fixed GAN.

    Plugs into :func:`phbook.train.fit` through :meth:`loss`. The generator and critic
    are frozen and stay in eval mode even while the encoder trains (their batch-norm
    statistics must not move), so only the encoder's parameters reach the optimiser.

    ``train_generator=True`` lets the generator learn too (the critic stays frozen):
    the same izi_f objective then also moves ``G`` towards the training images, so
    that a normal image's reconstruction is no longer confined to what the GAN learnt
    to generate (:class:`phbook.detectors.FAnoGANDetector`'s ``tune_epochs``).
    """

    def __init__(
        self,
        encoder: nn.Module,
        generator: nn.Module,
        critic: Critic,
        kappa: float = 1.0,
        train_generator: bool = False,
    ):
        super().__init__()
        if kappa < 0:
            raise ValueError(f"kappa must be non-negative, got {kappa}")
        self.encoder = encoder
        self.train_generator = bool(train_generator)
        if self.train_generator:
            for p in generator.parameters():  # a copy of a frozen one: thaw it
                p.requires_grad_(True)
            self.generator = generator
        else:
            self.generator = freeze(generator)
        self.critic = freeze(critic)
        self.kappa = float(kappa)
        self.train()

    def train(self, mode: bool = True):
        super().train(mode)
        self.generator.eval()
        self.critic.eval()
        return self

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return izif_loss(x, self.encoder, self.generator, self.critic, self.kappa)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """:func:`fanogan_score` of each image (higher = more anomalous)."""
        return fanogan_score(x, self.encoder, self.generator, self.critic, self.kappa)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``G(E(x))``: the generated image that best matches ``x``."""
        return self.generator(self.encoder(x))


class SimultaneousEncoderGAN(GAN):
    """A WGAN-GP whose encoder is trained *with* the generator (after Berg et al. 2019).

    At every generator step the encoder maps the fresh fakes back to the latent space
    and the generator and encoder together also minimise the cycle term

    ``L_enc = mean |G(z) - G(E(G(z)))|``   (an L1 norm per pixel)

    weighted by ``enc_weight``. The term asks ``G`` to keep its images recognisable
    from the encoder's code, which orders ("stratifies") the latent space: modes the
    generator learns from a few contaminating anomalies are pushed to codes of large
    norm, away from the bulk of normal images near the origin. The encoder only ever
    sees generated images here; f-AnoGAN's izi_f stage can refine it on real images
    afterwards (:class:`IziFEncoder` with this model's parts).
    """

    def __init__(
        self,
        generator: nn.Module,
        critic: nn.Module,
        encoder: nn.Module,
        latent_dim: int,
        *,
        enc_weight: float = 1.0,
        n_critic: int = 5,
        gp_weight: float = 10.0,
        betas: tuple[float, float] | None = None,
    ):
        super().__init__(
            generator,
            critic,
            latent_dim,
            loss="wgan-gp",
            n_critic=n_critic,
            gp_weight=gp_weight,
            betas=betas,
        )
        if enc_weight < 0:
            raise ValueError(f"enc_weight must be non-negative, got {enc_weight}")
        self.encoder = encoder
        self.enc_weight = float(enc_weight)
        self._last_enc = None

    @classmethod
    def build(
        cls,
        image_size=16,
        latent_dim: int = 32,
        channels: Sequence[int] | None = None,
        **kwargs,
    ) -> SimultaneousEncoderGAN:
        """The convolutional version for ``image_size`` (as :func:`WGANGP`)."""
        kwargs.setdefault("betas", (0.5, 0.9))
        return cls(
            Generator(image_size, latent_dim, channels, norm="none"),
            Critic(image_size, channels, norm="none"),
            Encoder(image_size, latent_dim, channels),
            latent_dim,
            **kwargs,
        )

    def _generator_parameters(self):
        return list(self.generator.parameters()) + list(self.encoder.parameters())

    def generator_step_loss(self, n: int, device) -> dict[str, torch.Tensor]:
        fake = self.generator(self.sample_z(n, device))
        adv = wasserstein_generator_loss(self.critic(fake))
        cycle = (fake - self.generator(self.encoder(fake))).abs().mean()
        return {"loss": adv + self.enc_weight * cycle, "enc_cycle": cycle.detach()}

    def _after_generator_step(self, g_terms) -> None:
        self._last_enc = g_terms["enc_cycle"]

    def training_step(self, x, optimizers, state) -> dict[str, torch.Tensor]:
        terms = super().training_step(x, optimizers, state)
        if self._last_enc is None:  # before the first generator step: measure it
            with torch.no_grad():
                fake = self.generator(self.sample_z(len(x), x.device))
                cycle = (fake - self.generator(self.encoder(fake))).abs().mean()
            self._last_enc = cycle
        terms["enc_cycle"] = self._last_enc
        return terms
