"""The adversarial autoencoder (Makhzani et al. 2015) of chapters 6 and 10.

An autoencoder whose codes are pushed towards a prior ``p(z) = N(0, I)`` by an
adversary instead of a KL term: a small *latent discriminator* learns to tell prior
samples from the encoder's codes, and the encoder learns to fool it. Where the
beta-VAE's KL term pulls every code towards the origin individually, the adversary only
asks that the codes *as a population* look like prior draws.

Each call of :meth:`AdversarialAutoencoder.training_step` (one batch) does the two
phases of Makhzani et al.: a **regularisation** phase that updates the latent
discriminator (prior draws are "real", codes are "fake"), then a **reconstruction**
phase that updates encoder and decoder on

``loss = SSE(x, decoder(encoder(x))) + adv_weight * (-log D(encoder(x)))``

(the sum of squared pixel errors per image, averaged over the batch, plus the
non-saturating generator loss of :func:`phbook.models.gan.generator_loss` on the
codes). Folding the encoder's adversarial update into the reconstruction update is the
usual simplification; with ``adv_weight = 0`` the model is a plain autoencoder.

Two choices of networks (``architecture``):

* ``"gan"`` (the default): those of :mod:`phbook.models.gan` (:class:`~phbook.models.gan.
  Encoder`, and :class:`~phbook.models.gan.Generator` as the decoder) with Adam's betas
  ``(0.5, 0.999)`` as for GANs. Chapters 6 and 9 use it on PANOSETI frames.
* ``"conv"``: the convolutional autoencoder of :mod:`phbook.models.ae` itself
  (:class:`~phbook.models.ae.SparseConvAE` without its L1 penalty: strided convolutions,
  a linear latent layer, a nearest-neighbour upsampling decoder) with Adam's default
  betas ``(0.9, 0.999)``. The AAE is then exactly the book's convolutional autoencoder
  plus a latent discriminator, the comparison Alexander et al. (2020) make between their
  DCAE and AAE; chapter 10's DeepLense-like regime uses it.

Every image size the encoders take works: 16x16 PANOSETI frames, 21x21 stamps, 64x64
lensing images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .ae import SparseConvAE
from .gan import (
    Encoder,
    Generator,
    _requires_grad,
    discriminator_loss,
    generator_loss,
    image_hw,
)

__all__ = ["ARCHITECTURES", "LatentDiscriminator", "AdversarialAutoencoder"]

#: The encoder and decoder an :class:`AdversarialAutoencoder` can be built from, and the
#: Adam betas each trains with by default.
ARCHITECTURES = {"gan": (0.5, 0.999), "conv": (0.9, 0.999)}


class LatentDiscriminator(nn.Module):
    """A small MLP: latent code -> logit that the code is a prior draw."""

    def __init__(self, latent_dim: int, hidden: int = 128):
        super().__init__()
        if latent_dim < 1 or hidden < 1:
            raise ValueError(
                f"latent_dim and hidden must be positive, got {latent_dim} and {hidden}"
            )
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(1)


class AdversarialAutoencoder(nn.Module):
    """Convolutional encoder and decoder with an adversarially matched latent prior.

    Parameters
    ----------
    image_size
        ``H`` (square) or ``(H, W)``: 16, 21, 32, 48, 64, ...
    latent_dim
        Size of the code ``z``.
    channels
        Channels of the encoder's stride-2 stages (the decoder mirrors them); default
        from :func:`phbook.models.gan.default_channels` (``"gan"``) or ``(32, 32)``
        (``"conv"``).
    hidden
        Width of the latent discriminator.
    adv_weight
        Weight of the adversarial term against the per-image sum of squared errors.
    architecture
        ``"gan"`` or ``"conv"`` (see the module's docstring).
    betas
        Adam's betas for both optimisers; default by ``architecture``
        (:data:`ARCHITECTURES`).
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 16,
        latent_dim: int = 16,
        channels: Sequence[int] | None = None,
        *,
        hidden: int = 128,
        adv_weight: float = 1.0,
        architecture: str = "gan",
        betas: tuple[float, float] | None = None,
    ):
        super().__init__()
        if adv_weight < 0:
            raise ValueError(f"adv_weight must be non-negative, got {adv_weight}")
        if architecture not in ARCHITECTURES:
            raise ValueError(
                f"architecture must be one of {', '.join(ARCHITECTURES)}, "
                f"got {architecture!r}"
            )
        self.image_hw = image_hw(image_size)
        self.latent_dim = int(latent_dim)
        self.architecture = architecture
        if architecture == "gan":
            self.encoder = Encoder(self.image_hw, latent_dim, channels)
            self.decoder = Generator(self.image_hw, latent_dim, channels, norm="none")
        else:
            ae = SparseConvAE(self.image_hw, latent_dim, channels or (32, 32), l1=0.0)
            # the conv AE's halves: image -> features -> linear code, and back
            self.encoder = nn.Sequential(ae.encoder, ae.to_latent)
            self.decoder = nn.Sequential(ae.from_latent, nn.ReLU(), ae.decoder)
        self.discriminator = LatentDiscriminator(latent_dim, hidden)
        self.adv_weight = float(adv_weight)
        self.betas = tuple(ARCHITECTURES[architecture] if betas is None else betas)
        # what a checkpoint must agree on beyond the tensors' shapes
        self.hparams = {
            "image_size": list(self.image_hw),
            "latent_dim": self.latent_dim,
            "architecture": architecture,
            "hidden": int(hidden),
            "adv_weight": self.adv_weight,
            "betas": [float(b) for b in self.betas],
        }

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code ``z`` of each image, ``(N, latent_dim)``."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The image of each code, ``(N, 1, H, W)``."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    # -- the protocol of phbook.train.fit
    def configure_optimizers(self, lr: float, weight_decay: float = 0.0) -> dict:
        """``"autoencoder"`` (encoder and decoder) and ``"discriminator"``."""
        ae = list(self.encoder.parameters()) + list(self.decoder.parameters())
        return {
            "autoencoder": torch.optim.Adam(
                ae, lr=lr, betas=self.betas, weight_decay=weight_decay
            ),
            "discriminator": torch.optim.Adam(
                self.discriminator.parameters(),
                lr=lr,
                betas=self.betas,
                weight_decay=weight_decay,
            ),
        }

    def _prior(self, n: int, device) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, device=device)

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The reconstruction-phase terms (also the validation loss)."""
        z = self.encoder(x)
        sse = (x - self.decoder(z)).pow(2).flatten(1).sum(1).mean()
        adv = generator_loss(self.discriminator(z))
        return {"loss": sse + self.adv_weight * adv, "sse": sse, "adv": adv}

    def training_step(self, x, optimizers, state) -> dict[str, torch.Tensor]:
        """Regularisation phase (latent discriminator), then reconstruction phase."""
        with torch.no_grad():
            z_codes = self.encoder(x)
        d_loss = discriminator_loss(
            self.discriminator(self._prior(len(x), x.device)),
            self.discriminator(z_codes),
        )
        opt = optimizers["discriminator"]
        opt.zero_grad(set_to_none=True)
        d_loss.backward()
        opt.step()

        opt = optimizers["autoencoder"]
        opt.zero_grad(set_to_none=True)
        with _requires_grad(self.discriminator, False):
            terms = self.loss(x)
        terms["loss"].backward()
        opt.step()
        return {**{k: v.detach() for k, v in terms.items()}, "d_loss": d_loss.detach()}

    @torch.no_grad()
    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
        """Mean squared error of each image's reconstruction, ``(N,)``."""
        return (x - self(x)).pow(2).flatten(1).mean(1)
