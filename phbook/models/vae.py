"""The beta-VAE of chapter 3, with its loss written out term by term.

The loss of one image ``x`` with reconstruction ``x_hat`` and approximate posterior
``q(z|x) = N(mu, diag(exp(logvar)))`` is

``loss = recon + beta * kl + l1``

* ``recon = sum over pixels (x - x_hat)^2``: the negative log-likelihood of a Gaussian
  decoder with fixed variance 1/2, up to a constant (:func:`reconstruction_error`);
* ``kl = KL(q(z|x) || N(0, I))`` in closed form (:func:`kl_divergence`);
* ``l1 = l1_weight * sum |w|`` over the model's weights (:func:`l1_penalty`).

With ``beta = 1`` and no L1 term, ``recon + kl`` is the negative evidence lower bound
(ELBO) of that decoder. For any ``beta > 0``, ``recon + beta * kl`` is ``beta`` times the
negative ELBO of a Gaussian decoder of variance ``beta / 2`` (up to a constant), the
bound that ``VAEDetector(score="elbo")`` reports. Each term is a separate function so
that the book can show it and the tests can check it against hand-computed values and
:func:`torch.distributions.kl_divergence`.

KL annealing (``kl_warmup`` epochs) raises the weight of the KL term linearly from 0 to
``beta`` at the start of training, through the ``on_epoch_start`` hook of
:func:`phbook.train.fit`. Without it, a large ``beta`` can push every posterior onto the
prior before the decoder has learnt to use the code: the latent collapses (KL near 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .ae import ConvDecoder, ConvEncoder, as_image_batch, image_hw

#: The book's small, medium and large beta for asinh-stretched 16x16 PANOSETI frames
#: (chapters 3 and 4). With the squared-error reconstruction, sigma_x^2 = beta / 2 is the
#: pixel noise variance the decoder assumes; the stretched frames' noise variance is
#: about 0.007, so the medium beta is near the matched value and the others a decade
#: either side.
BETAS = {"small": 0.003, "medium": 0.03, "large": 0.3}
#: The weight of the L1 penalty on all weights of the book's VAEs.
L1_WEIGHT = 1e-5
#: A beta near the collapse threshold (chapter 3): trained without a KL warm-up the
#: posterior collapses onto the prior, with the warm-up it keeps active units (chapter 3's
#: ``collapse_*`` sizes: a few thousand frames, 30 epochs, a 20-epoch warm-up).
BETA_COLLAPSE = 1.0

__all__ = [
    "BETAS",
    "L1_WEIGHT",
    "BETA_COLLAPSE",
    "reconstruction_error",
    "kl_divergence",
    "l1_penalty",
    "reparameterize",
    "beta_vae_loss",
    "active_units",
    "BetaVAE",
    "ChaseCVAE",
]


def reconstruction_error(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Sum of squared errors over the pixels of each image, shape ``(N,)``."""
    if x.shape != x_hat.shape:
        raise ValueError(
            f"x {tuple(x.shape)} and x_hat {tuple(x_hat.shape)} differ in shape"
        )
    return (x - x_hat).pow(2).flatten(1).sum(1)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, diag(exp(logvar))) || N(0, I))`` of each sample, shape ``(N,)``.

    Closed form, summed over latent dimensions:
    ``0.5 * sum(mu^2 + exp(logvar) - 1 - logvar)``.
    """
    if mu.shape != logvar.shape:
        raise ValueError(f"mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} differ")
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def l1_penalty(module: nn.Module, include_bias: bool = False) -> torch.Tensor:
    """``sum |w|`` over the weights of ``module`` (biases too if ``include_bias``).

    Weights are the parameters with two or more dimensions (convolution kernels, linear
    layer matrices); biases are the one-dimensional ones.
    """
    params = [p for p in module.parameters() if include_bias or p.dim() > 1]
    if not params:
        return torch.zeros(())
    return torch.stack([p.abs().sum() for p in params]).sum()


def reparameterize(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    generator: torch.Generator | None = None,
    eps: torch.Tensor | None = None,
) -> torch.Tensor:
    """A sample ``z = mu + exp(logvar / 2) * eps``, ``eps ~ N(0, I)``, differentiable in
    ``mu`` and ``logvar`` (the reparameterisation trick). ``eps`` (shape of ``mu``)
    gives the draws, e.g. per-frame ones from :func:`phbook.noise.frame_normal`."""
    if eps is None:
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def beta_vae_loss(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    beta: float,
    l1: torch.Tensor | float = 0.0,
) -> dict[str, torch.Tensor]:
    """The batch-mean loss terms: ``loss = recon + beta * kl + l1``.

    ``l1`` is the already weighted weight penalty (a tensor or 0).
    """
    recon = reconstruction_error(x, x_hat).mean()
    kl = kl_divergence(mu, logvar).mean()
    l1 = torch.as_tensor(l1, dtype=recon.dtype, device=recon.device)
    return {"loss": recon + beta * kl + l1, "recon": recon, "kl": kl, "l1": l1}


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> int:
    """How many latent dimensions the encoder uses: variance of ``mu`` over the data
    above ``threshold`` (Burda et al.'s *active units*). Collapsed dimensions give the
    same ``mu`` for every image."""
    mu = torch.as_tensor(mu)
    if mu.dim() != 2 or len(mu) < 2:
        raise ValueError(f"mu must be (N >= 2, latent_dim), got {tuple(mu.shape)}")
    return int((mu.float().var(0) > threshold).sum())


class BetaVAE(nn.Module):
    """A convolutional beta-VAE for single-channel images of any size.

    Encoder: strided 3x3 convolutions (``channels``) with ReLU, then a linear layer to
    ``mu`` and ``logvar`` (``latent_dim`` each). Decoder: a linear layer and ReLU, then
    4x4 stride-2 transposed convolutions (``upsample="transpose"``, the default, cheap)
    or nearest-neighbour upsampling and 3x3 convolutions, and a linear output layer.

    ``beta`` weights the KL term, ``l1_weight`` the L1 penalty on all weights, and
    ``kl_warmup`` (epochs) anneals the KL weight from 0 to ``beta``, after ``kl_delay``
    epochs of reconstruction only (the schedule of Alexander et al.'s VAE for lenses).
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 16,
        latent_dim: int = 32,
        beta: float = 1.0,
        channels: Sequence[int] = (16, 32),
        l1_weight: float = 0.0,
        kl_warmup: int = 0,
        upsample: str = "transpose",
        kl_delay: int = 0,
    ):
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be at least 1, got {latent_dim}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if l1_weight < 0:
            raise ValueError(f"l1_weight must be >= 0, got {l1_weight}")
        if kl_warmup < 0:
            raise ValueError(f"kl_warmup must be >= 0 epochs, got {kl_warmup}")
        if kl_delay < 0:
            raise ValueError(f"kl_delay must be >= 0 epochs, got {kl_delay}")
        self.image_hw = image_hw(image_size)
        self.latent_dim = int(latent_dim)
        self.beta = float(beta)
        self.l1_weight = float(l1_weight)
        self.kl_warmup = int(kl_warmup)
        self.kl_delay = int(kl_delay)
        self.hparams = {
            "image_size": list(self.image_hw),
            "latent_dim": self.latent_dim,
            "beta": self.beta,
            "channels": list(channels),
            "l1_weight": self.l1_weight,
            "kl_warmup": self.kl_warmup,
            "upsample": upsample,
        }
        if self.kl_delay:  # only when used: older saved models keep their hparams
            self.hparams["kl_delay"] = self.kl_delay
        self.encoder = ConvEncoder(self.image_hw, channels)
        self.to_latent = nn.Linear(self.encoder.n_features, 2 * self.latent_dim)
        self.from_latent = nn.Linear(self.latent_dim, self.encoder.n_features)
        self.decoder = ConvDecoder(self.image_hw, channels, upsample=upsample)
        #: the KL weight of the current epoch (``beta`` once the warm-up is over)
        self.kl_weight = 0.0 if (self.kl_warmup or self.kl_delay) else self.beta

    # -- the model
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of ``q(z|x)``, each ``(N, latent_dim)``."""
        h = self.to_latent(self.encoder(as_image_batch(x, self.image_hw)))
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(N, 1, H, W)`` from latent codes ``z``."""
        return self.decoder(F.relu(self.from_latent(z)))

    def forward(self, x: torch.Tensor):
        """``(x_hat, mu, logvar)``: a posterior sample decoded, and the posterior."""
        mu, logvar = self.encode(x)
        return self.decode(reparameterize(mu, logvar)), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images decoded from ``z ~ N(0, I)``: synthetic data."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        dev = next(self.parameters()).device
        z = torch.randn((n, self.latent_dim), generator=generator, device=dev)
        return self.decode(z)

    # -- training
    @property
    def schedule_epochs(self) -> int:
        """Epochs trained with a KL weight below ``beta`` (the delay and the warm-up):
        never restored as the best epoch by :func:`phbook.train.fit`."""
        return self.kl_delay + self.kl_warmup

    def on_epoch_start(self, state) -> None:
        """KL annealing: weight 0 for ``kl_delay`` epochs, then
        ``beta * min(1, (epoch - kl_delay) / kl_warmup)``."""
        epoch = state.epoch - self.kl_delay
        if epoch < 0:
            self.kl_weight = 0.0
        elif self.kl_warmup:
            self.kl_weight = self.beta * min(1.0, epoch / self.kl_warmup)
        else:
            self.kl_weight = self.beta

    def loss(self, batch) -> dict[str, torch.Tensor]:
        """Named loss terms of a batch (batch means): ``loss = recon + w * kl + l1``,
        with ``w`` the current KL weight; also logs ``w`` as ``kl_weight``."""
        x = as_image_batch(batch, self.image_hw, "batch")
        x_hat, mu, logvar = self(x)
        l1 = self.l1_weight * l1_penalty(self) if self.l1_weight else 0.0
        terms = beta_vae_loss(x, x_hat, mu, logvar, self.kl_weight, l1)
        terms["kl_weight"] = torch.tensor(self.kl_weight)
        return terms


class ChaseCVAE(BetaVAE):
    """The convolutional VAE (CVAE) of Huijse et al. (2018), as published.

    The encoder and decoder of :class:`phbook.models.ae.ChaseSCAE` (three 3x3 stride-2
    convolutions of 32 filters, nearest-neighbour upsampling, linear output), with two
    linear fully connected layers for ``mu`` and ``logvar`` after the last convolution,
    a sampling layer, no L1 penalty, NAdam, and KL annealing. The reconstruction term is
    the squared error over ``2 sigma^2`` plus ``P/2 log sigma^2``, a Gaussian decoder
    whose pixel variance ``sigma^2`` is fitted to the data (the study's public code
    learns it; here it is the batch's mean squared error, its maximum-likelihood
    value): with a fixed ``sigma^2`` the KL weight 1 would stand for a noise level of
    the book's choosing. KL annealing: the KL weight rises linearly from 0 to
    ``beta`` = 1 over ``kl_warmup`` epochs (``kl_warmup=0``: the full ELBO from the
    first step, which can let the posterior collapse onto the prior). The validation
    loss is always the full negative ELBO (KL weight ``beta``), so that early stopping
    compares epochs on one scale.
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 21,
        latent_dim: int = 21,
        kl_warmup: int = 10,
        beta: float = 1.0,
        channels: Sequence[int] = (32, 32, 32),
    ):
        super().__init__(
            image_size,
            latent_dim,
            beta=beta,
            channels=channels,
            l1_weight=0.0,
            kl_warmup=kl_warmup,
            upsample="nearest",
        )
        del self.to_latent
        self.fc_mu = nn.Linear(self.encoder.n_features, self.latent_dim)
        self.fc_logvar = nn.Linear(self.encoder.n_features, self.latent_dim)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of ``q(z|x)`` from the two linear layers."""
        h = self.encoder(as_image_batch(x, self.image_hw))
        return self.fc_mu(h), self.fc_logvar(h)

    @staticmethod
    def nll(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """Per image, the Gaussian negative log-likelihood of ``x`` given ``x_hat`` (nats,
        without the constant ``P/2 log 2 pi``): the squared error over ``2 sigma^2``
        plus ``P/2 log sigma^2``, with the pixel variance ``sigma^2`` at its maximum-
        likelihood value, the batch's mean squared error (held constant in the
        gradient; Rybkin et al.'s optimal-sigma VAE)."""
        se = reconstruction_error(x, x_hat)
        n_pix = x[0].numel()
        sigma2 = (se.mean() / n_pix).detach().clamp_min(1e-6)
        return 0.5 * se / sigma2 + 0.5 * n_pix * torch.log(sigma2)

    def _terms(self, batch, weight: float) -> dict[str, torch.Tensor]:
        x = as_image_batch(batch, self.image_hw, "batch")
        x_hat, mu, logvar = self(x)
        nll = self.nll(x, x_hat).mean()
        kl = kl_divergence(mu, logvar).mean()
        mse = (x - x_hat).pow(2).mean()
        return {"loss": nll + weight * kl, "nll": nll, "kl": kl, "mse": mse}

    def loss(self, batch) -> dict[str, torch.Tensor]:
        """``loss = nll + w * kl`` with ``w`` the annealed KL weight (also logged as
        ``kl_weight``), and the pixel MSE for reference."""
        terms = self._terms(batch, self.kl_weight)
        terms["kl_weight"] = torch.tensor(self.kl_weight)
        return terms

    def validation_loss(self, batch) -> dict[str, torch.Tensor]:
        """The loss terms with the full KL weight ``beta`` (the negative ELBO)."""
        return self._terms(batch, self.beta)

    def configure_optimizers(self, lr: float, weight_decay: float):
        """NAdam, the paper's optimiser (used by :func:`phbook.train.fit`)."""
        return torch.optim.NAdam(self.parameters(), lr=lr, weight_decay=weight_decay)
