"""A progressively grown WGAN-GP with a ClusterGAN-style encoder (chapter 10).

The seed proposal's model: a Wasserstein GAN with gradient penalty whose generator and
critic grow during training (Karras et al. 2018, "pGAN"), with an encoder that maps
images back to the latent space in the manner of ClusterGAN (Mukherjee et al. 2019),
trained either *with* the generator (the cycle term of Berg et al. 2019 is added to the
generator's objective) or *afterwards* against the frozen generator (f-AnoGAN's izi_f
stage, :class:`phbook.models.gan.IziFEncoder`).

* The **latent code** is ClusterGAN's: a continuous part ``z_n ~ N(0, sigma^2 I)``
  followed by a one-hot categorical part ``z_c`` of ``n_clusters`` classes
  (:func:`cluster_prior`).
* **Progressive growing**: the generator starts from a 4x4 map and each of its
  ``len(channels)`` stages doubles it (4 -> 8 -> 16 -> 32 for three stages); the
  critic mirrors it. Training starts at the coarsest output (8x8), and each finer
  resolution is faded in: the new stage's output is blended with the upsampled output
  of the previous one, ``alpha * new + (1 - alpha) * up(old)``, with ``alpha`` rising
  from 0 to 1 (:func:`grow_schedule`). Real images are average-pooled to the resolution
  of the moment.
* The **encoder** (:class:`ClusterEncoder`) always sees full-size images (smaller ones
  are upsampled first) and returns ``[z_n_hat, softmax(logits)]``, a code the
  generator accepts. Trained with the generator, it minimises ClusterGAN's
  ``beta_n * ||z_n - E_n(G(z))||^2 + beta_c * CE(E_c(G(z)), c)``, and generator and
  encoder together minimise the cycle term ``||G(z) - G(E(G(z)))||_1``
  (:func:`cycle_loss`).

The anomaly score is f-AnoGAN's, residual plus critic-feature residual between ``x``
and ``G(E(x))`` (:func:`phbook.models.gan.fanogan_score`); :meth:`ProgressiveCritic.
features` is the critic's last hidden layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .gan import GAN, wasserstein_generator_loss

__all__ = [
    "START",
    "cluster_prior",
    "grow_schedule",
    "cycle_loss",
    "ProgressiveGenerator",
    "ProgressiveCritic",
    "ClusterEncoder",
    "ProgressiveEncoderGAN",
]

#: Side of the generator's first feature map.
START = 4


def cluster_prior(
    n: int,
    n_continuous: int,
    n_clusters: int,
    sigma: float = 0.1,
    device=None,
    generator=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ClusterGAN's prior: ``n`` codes ``[z_n, onehot(c)]`` and their classes ``c``.

    ``z_n ~ N(0, sigma^2 I)`` of ``n_continuous`` dimensions (ClusterGAN's sigma is
    0.1, which keeps the clusters apart), ``c`` uniform over ``n_clusters``.
    """
    zn = sigma * torch.randn(n, n_continuous, device=device, generator=generator)
    c = torch.randint(0, n_clusters, (n,), device=device, generator=generator)
    return torch.cat([zn, F.one_hot(c, n_clusters).to(zn)], dim=1), c


def grow_schedule(progress: float, n_stages: int) -> tuple[int, float]:
    """The stage and fade-in ``alpha`` at a fraction ``progress`` of training.

    Training is cut into ``2 * n_stages - 1`` equal phases: the coarsest stage alone,
    then for every finer stage a fade-in (``alpha`` from 0 to 1) and a stable phase.
    Stage ``s`` outputs images of side ``START * 2 ** (s + 1)``.
    """
    if n_stages < 1:
        raise ValueError(f"n_stages must be at least 1, got {n_stages}")
    n_phases = 2 * n_stages - 1
    pos = min(max(float(progress), 0.0), 1.0) * n_phases
    phase = min(int(pos), n_phases - 1)
    if phase == 0:
        return 0, 1.0
    stage = (phase + 1) // 2
    alpha = pos - phase if phase % 2 == 1 else 1.0
    return stage, float(min(alpha, 1.0))


def cycle_loss(generator: nn.Module, encoder: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The seed proposal's cycle term ``mean |G(z) - G(E(G(z)))|`` (L1 per pixel)."""
    fake = generator(z)
    return (fake - generator(encoder(fake))).abs().mean()


class _Progressive(nn.Module):
    """Shared state of the growing networks: the current stage and fade-in alpha."""

    def __init__(self, channels: Sequence[int]):
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels must be positive ints, got {self.channels}")
        self.n_stages = len(self.channels)
        self.image_side = START * 2**self.n_stages
        self.grow(self.n_stages - 1, 1.0)

    def grow(self, stage: int, alpha: float = 1.0) -> None:
        """Set the stage (0 = coarsest) and the fade-in weight of its newest layer."""
        if not 0 <= stage < self.n_stages:
            raise ValueError(f"stage must be in [0, {self.n_stages}), got {stage}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        self.stage, self.alpha = int(stage), float(alpha)

    @property
    def side(self) -> int:
        """Side of the images at the current stage."""
        return START * 2 ** (self.stage + 1)


class ProgressiveGenerator(_Progressive):
    """``z`` -> image ``(N, 1, s, s)`` with ``s`` set by the current stage.

    ``channels[i]`` is the width of stage ``i`` (coarse to fine); each stage is a
    nearest-neighbour upsampling and two 3x3 convolutions with LeakyReLU, and has its
    own 1x1 ``to_image`` convolution (pGAN's "toRGB").
    """

    def __init__(self, latent_dim: int, channels: Sequence[int] = (32, 16, 8)):
        super().__init__(channels)
        self.latent_dim = int(latent_dim)
        c0 = self.channels[0]
        self.fc = nn.Sequential(
            nn.Linear(self.latent_dim, c0 * START * START), nn.LeakyReLU(0.2)
        )
        blocks, to_image, c_in = [], [], c0
        for c in self.channels:
            blocks.append(
                nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.Conv2d(c_in, c, 3, padding=1),
                    nn.LeakyReLU(0.2),
                    nn.Conv2d(c, c, 3, padding=1),
                    nn.LeakyReLU(0.2),
                )
            )
            to_image.append(nn.Conv2d(c, 1, 1))
            c_in = c
        self.blocks = nn.ModuleList(blocks)
        self.to_image = nn.ModuleList(to_image)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(
                f"z must have shape (N, {self.latent_dim}), got {tuple(z.shape)}"
            )
        h = self.fc(z).view(-1, self.channels[0], START, START)
        prev = h
        for i in range(self.stage + 1):
            prev, h = h, self.blocks[i](h)
        out = self.to_image[self.stage](h)
        if self.stage > 0 and self.alpha < 1.0:
            old = F.interpolate(
                self.to_image[self.stage - 1](prev), scale_factor=2, mode="nearest"
            )
            out = self.alpha * out + (1.0 - self.alpha) * old
        return out


class ProgressiveCritic(_Progressive):
    """Image ``(N, 1, s, s)`` at the current stage's side -> one WGAN score.

    The mirror of :class:`ProgressiveGenerator`: a 1x1 ``from_image`` convolution per
    stage, then per stage two 3x3 convolutions and a 2x2 average pooling, down to a
    4x4 map whose flattened values are :meth:`features`. No normalisation (the
    gradient penalty is per image).
    """

    def __init__(self, channels: Sequence[int] = (32, 16, 8)):
        super().__init__(channels)
        blocks, from_image = [], []
        for i, c in enumerate(self.channels):
            c_out = self.channels[max(i - 1, 0)]
            from_image.append(nn.Sequential(nn.Conv2d(1, c, 1), nn.LeakyReLU(0.2)))
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(c, c, 3, padding=1),
                    nn.LeakyReLU(0.2),
                    nn.Conv2d(c, c_out, 3, padding=1),
                    nn.LeakyReLU(0.2),
                    nn.AvgPool2d(2),
                )
            )
        self.blocks = nn.ModuleList(blocks)
        self.from_image = nn.ModuleList(from_image)
        self.n_features = self.channels[0] * START * START
        self.head = nn.Linear(self.n_features, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer, ``(N, channels[0] * 16)``."""
        if x.shape[-1] != self.side or x.shape[-2] != self.side:
            raise ValueError(
                f"images must be {self.side}x{self.side} at stage {self.stage}, "
                f"got {tuple(x.shape)}"
            )
        s = self.stage
        h = self.blocks[s](self.from_image[s](x))
        if s > 0 and self.alpha < 1.0:
            old = self.from_image[s - 1](F.avg_pool2d(x, 2))
            h = self.alpha * h + (1.0 - self.alpha) * old
        for i in range(s - 1, -1, -1):
            h = self.blocks[i](h)
        return h.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


class ClusterEncoder(nn.Module):
    """Image -> ClusterGAN code ``[z_n_hat, softmax(logits)]`` (:meth:`split` gives
    ``z_n_hat`` and the logits). Images smaller than ``image_side`` are upsampled
    (nearest neighbour) first, so one encoder serves every stage."""

    def __init__(
        self,
        n_continuous: int,
        n_clusters: int,
        image_side: int = 32,
        channels: Sequence[int] = (8, 16, 32),
    ):
        super().__init__()
        self.n_continuous, self.n_clusters = int(n_continuous), int(n_clusters)
        self.latent_dim = self.n_continuous + self.n_clusters
        self.image_side = int(image_side)
        layers, c_in, side = [], 1, self.image_side
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c_in, side = c, (side + 1) // 2
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(c_in * side * side, self.latent_dim)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[-1] != self.image_side:
            x = F.interpolate(x, size=(self.image_side, self.image_side), mode="nearest")
        out = self.head(self.body(x))
        return out[:, : self.n_continuous], out[:, self.n_continuous :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zn, logits = self.split(x)
        return torch.cat([zn, torch.softmax(logits, dim=1)], dim=1)


class ProgressiveEncoderGAN(GAN):
    """WGAN-GP with progressive growing and a ClusterGAN encoder, trained by
    :func:`phbook.train.fit`.

    ``simultaneous=True``: at each generator step generator and encoder also minimise
    ``enc_weight * cycle_loss + beta_n * MSE(z_n, E_n(G(z))) + beta_c * CE(E_c(G(z)),
    c)``. ``simultaneous=False``: the plain progressive WGAN-GP (the encoder is built
    but not trained here; f-AnoGAN's izi_f stage trains it afterwards). The stage and
    fade-in follow :func:`grow_schedule` of the training progress; after training,
    :meth:`grow_full` sets the full resolution.
    """

    def __init__(
        self,
        n_continuous: int = 8,
        n_clusters: int = 4,
        channels: Sequence[int] = (32, 16, 8),
        *,
        simultaneous: bool = True,
        sigma: float = 0.1,
        enc_weight: float = 1.0,
        beta_n: float = 10.0,
        beta_c: float = 1.0,
        n_critic: int = 5,
        gp_weight: float = 10.0,
        betas: tuple[float, float] = (0.5, 0.9),
    ):
        latent_dim = int(n_continuous) + int(n_clusters)
        generator = ProgressiveGenerator(latent_dim, channels)
        super().__init__(
            generator,
            ProgressiveCritic(channels),
            latent_dim,
            loss="wgan-gp",
            n_critic=n_critic,
            gp_weight=gp_weight,
            betas=betas,
        )
        self.encoder = ClusterEncoder(
            n_continuous, n_clusters, generator.image_side, tuple(reversed(channels))
        )
        self.n_continuous, self.n_clusters = int(n_continuous), int(n_clusters)
        self.simultaneous = bool(simultaneous)
        self.sigma, self.enc_weight = float(sigma), float(enc_weight)
        self.beta_n, self.beta_c = float(beta_n), float(beta_c)
        self._last = None
        self.hparams = {
            "simultaneous": self.simultaneous,
            "sigma": self.sigma,
            "enc_weight": self.enc_weight,
            "beta_n": self.beta_n,
            "beta_c": self.beta_c,
            "n_critic": self.n_critic,
            "gp_weight": self.gp_weight,
        }

    def grow(self, stage: int, alpha: float = 1.0) -> None:
        self.generator.grow(stage, alpha)
        self.critic.grow(stage, alpha)

    def grow_full(self) -> ProgressiveEncoderGAN:
        """Full resolution, no fade (the model after training)."""
        self.grow(self.generator.n_stages - 1, 1.0)
        return self

    def sample_z(self, n: int, device=None, generator=None) -> torch.Tensor:
        dev = device if device is not None else next(self.parameters()).device
        z, _ = cluster_prior(
            n, self.n_continuous, self.n_clusters, self.sigma, dev, generator
        )
        return z

    def _generator_parameters(self):
        params = list(self.generator.parameters())
        return params + list(self.encoder.parameters()) if self.simultaneous else params

    def encoder_terms(self, n: int, device) -> dict[str, torch.Tensor]:
        """ClusterGAN's latent losses and the cycle term on ``n`` fresh codes."""
        z, c = cluster_prior(n, self.n_continuous, self.n_clusters, self.sigma, device)
        fake = self.generator(z)
        zn_hat, logits = self.encoder.split(fake)
        z_hat = torch.cat([zn_hat, torch.softmax(logits, dim=1)], dim=1)
        cycle = (fake - self.generator(z_hat)).abs().mean()
        zn_loss = (zn_hat - z[:, : self.n_continuous]).pow(2).mean()
        zc_loss = F.cross_entropy(logits, c)
        return {"fake": fake, "cycle": cycle, "zn": zn_loss, "zc": zc_loss}

    def generator_step_loss(self, n: int, device) -> dict[str, torch.Tensor]:
        if not self.simultaneous:
            return super().generator_step_loss(n, device)
        t = self.encoder_terms(n, device)
        adv = wasserstein_generator_loss(self.critic(t["fake"]))
        enc = self.enc_weight * t["cycle"] + self.beta_n * t["zn"] + self.beta_c * t["zc"]
        return {"loss": adv + enc, "enc_cycle": t["cycle"].detach()}

    def _after_generator_step(self, g_terms) -> None:
        if "enc_cycle" in g_terms:
            self._last = g_terms["enc_cycle"]

    def training_step(self, x, optimizers, state) -> dict[str, torch.Tensor]:
        """Grow to the schedule's stage, pool the real images to its side, then one
        WGAN-GP critic step (and a generator step every ``n_critic``-th)."""
        self.grow(*grow_schedule(state.progress, self.generator.n_stages))
        factor = x.shape[-1] // self.generator.side
        if factor > 1:
            x = F.avg_pool2d(x, factor)
        terms = super().training_step(x, optimizers, state)
        terms["stage"] = torch.tensor(float(self.generator.stage))
        if self.simultaneous:
            if self._last is None:  # before the first generator step: measure it
                with torch.no_grad():
                    self._last = self.encoder_terms(len(x), x.device)["cycle"]
            terms["enc_cycle"] = self._last
        return terms

    def validation_loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        factor = x.shape[-1] // self.generator.side
        return super().validation_loss(F.avg_pool2d(x, factor) if factor > 1 else x)
