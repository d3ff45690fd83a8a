"""An image-space normalizing flow (RealNVP / Glow style) with dequantisation.

Where the VAE of chapter 7 only *bounds* the likelihood of an image, a flow on the
pixels themselves gives it exactly. The flow maps an image ``v`` to a code ``z`` of the
same size through invertible layers, each with a cheap log-determinant:

``ActNorm``
    a per-channel affine map, initialised from the first batch so that its output has
    zero mean and unit variance (Glow, Kingma and Dhariwal 2018);
``Invertible1x1Conv``
    a learnt ``C x C`` matrix applied at every pixel, a generalised channel permutation
    (Glow); ``log|det| = H W log|det W|``;
``AffineCoupling``
    half of the values (a checkerboard of pixels, or half of the channels) pass
    unchanged and set a scale and shift for the other half (RealNVP, Dinh et al. 2017):
    ``y_b = x_b * exp(s(x_a)) + t(x_a)``, ``log|det| = sum s``; the networks ``s`` and
    ``t`` need not be invertible;
``squeeze``
    every 2 x 2 block of pixels becomes 4 channels (a permutation, ``log|det| = 0``);
    half of the channels are then *factored out* to the prior (the multi-scale split).

``log p(v) = log N(z; 0, I) + sum of the layers' log|det|``.

Pulse heights are integers (ADC counts); a continuous density on integers is
meaningless (it can grow without bound on the integer points). *Dequantisation* adds
uniform noise, ``v = x + u - 1/2`` with ``u ~ U(0, 1)``, filling each integer's bin
``[x - 1/2, x + 1/2)``; then ``log P(x) >= E_u log p(v)`` (Theis et al. 2016), and an
average over ``k`` draws inside the logarithm tightens the bound like the IWAE bound.
The values reach the flow through the asinh stretch, whose log-derivative is added, so
``log p`` is a density in ADC units and ``-log2 P(x) / P`` is in bits per pixel of the
integer ADC value, comparable with the PixelCNN of chapter 8.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ActNorm",
    "Invertible1x1Conv",
    "AffineCoupling",
    "squeeze",
    "unsqueeze",
    "checkerboard",
    "RealNVP",
]

_LOG_2PI = math.log(2.0 * math.pi)


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W) -> (N, 4C, H/2, W/2)``: each 2 x 2 block becomes 4 channels."""
    n, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"squeeze needs even height and width, got {(h, w)}")
    x = x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(n, 4 * c, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`squeeze`."""
    n, c, h, w = x.shape
    x = x.view(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(n, c // 4, 2 * h, 2 * w)


def checkerboard(h: int, w: int, parity: int = 0) -> torch.Tensor:
    """A ``(1, 1, h, w)`` mask of ones where ``(row + column) % 2 == parity``."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return ((rows + cols) % 2 == parity).float()[None, None]


class ActNorm(nn.Module):
    """``y = (x + bias) * exp(log_scale)`` per channel; data-dependent initialisation."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std))
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not bool(self.initialized) and self.training and len(x) > 1:
            self._initialize(x)
        y = (x + self.bias) * torch.exp(self.log_scale)
        logdet = self.log_scale.sum() * x.shape[2] * x.shape[3]
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(-self.log_scale) - self.bias


class Invertible1x1Conv(nn.Module):
    """A learnt invertible ``C x C`` matrix applied at every pixel (Glow)."""

    def __init__(self, channels: int):
        super().__init__()
        w = torch.linalg.qr(torch.randn(channels, channels))[0]  # a random rotation
        self.weight = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = F.conv2d(x, self.weight[:, :, None, None])
        logdet = torch.linalg.slogdet(self.weight)[1] * x.shape[2] * x.shape[3]
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return F.conv2d(y, torch.linalg.inv(self.weight)[:, :, None, None])


class _CouplingNet(nn.Module):
    """The (not necessarily invertible) network that gives ``s`` and ``t``."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, 2 * out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)  # every coupling starts as the identity
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self.net(x).chunk(2, dim=1)
        return s, t


class AffineCoupling(nn.Module):
    """``y_b = x_b * exp(s(x_a)) + t(x_a)``, ``y_a = x_a`` (RealNVP).

    ``mask="checkerboard"`` splits the pixels of each channel in a checkerboard
    (``parity`` 0 or 1 says which half passes unchanged); ``mask="channel"`` splits the
    channels in two halves (``parity`` 1 swaps them). ``s`` is bounded,
    ``s = scale * tanh(.)``, which keeps training stable.
    """

    def __init__(
        self, channels: int, hidden: int = 32, mask: str = "checkerboard", parity: int = 0
    ):
        super().__init__()
        if mask not in ("checkerboard", "channel"):
            raise ValueError(f"mask must be 'checkerboard' or 'channel', got {mask!r}")
        if mask == "channel" and channels < 2:
            raise ValueError("a channel coupling needs at least 2 channels")
        self.mask, self.parity, self.channels = mask, int(parity) % 2, int(channels)
        if mask == "checkerboard":
            # the unchanged pixels (and the mask itself, for position) go in
            self.net = _CouplingNet(channels + 1, channels, hidden)
        else:
            self.half = channels // 2  # the channels that pass unchanged
            self.net = _CouplingNet(self.half, channels - self.half, hidden)
        self.scale = nn.Parameter(torch.ones(1))

    def _st(self, x_a, m=None):
        inp = x_a if m is None else torch.cat([x_a, m.expand(len(x_a), -1, -1, -1)], 1)
        s, t = self.net(inp)
        return self.scale * torch.tanh(s), t

    def _split(self, x):
        if self.parity == 0:
            return x[:, : self.half], x[:, self.half :]
        return x[:, self.channels - self.half :], x[:, : self.channels - self.half]

    def _join(self, a, b):
        return torch.cat([a, b], 1) if self.parity == 0 else torch.cat([b, a], 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mask == "checkerboard":
            m = checkerboard(x.shape[2], x.shape[3], self.parity).to(x)
            s, t = self._st(x * m, m)
            s, t = s * (1 - m), t * (1 - m)
            return x * torch.exp(s) + t, s.flatten(1).sum(1)
        a, b = self._split(x)
        s, t = self._st(a)
        return self._join(a, b * torch.exp(s) + t), s.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        if self.mask == "checkerboard":
            m = checkerboard(y.shape[2], y.shape[3], self.parity).to(y)
            s, t = self._st(y * m, m)
            s, t = s * (1 - m), t * (1 - m)
            return (y - t) * torch.exp(-s)
        a, b = self._split(y)
        s, t = self._st(a)
        return self._join(a, (b - t) * torch.exp(-s))


class _Sequence(nn.Module):
    def __init__(self, layers: Sequence[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y):
        for layer in reversed(self.layers):
            y = layer.inverse(y)
        return y


class RealNVP(nn.Module):
    """A multi-scale RealNVP/Glow flow for single-channel integer images.

    Scale 1 (``C x H x W``): ``n_checker`` checkerboard couplings, each after an
    actnorm. Then ``squeeze`` to ``4C x H/2 x W/2`` and ``n_steps`` Glow steps
    (actnorm, invertible 1x1 convolution, channel coupling); half of the channels are
    factored out to the prior; ``squeeze`` again and ``n_steps`` more steps. The image
    side must be divisible by 4.

    Integer images (ADC) are dequantised and stretched as the module docstring says;
    ``softening`` and ``x_max`` set the stretch.
    """

    def __init__(
        self,
        in_channels: int = 1,
        hidden: int = 32,
        n_checker: int = 4,
        n_steps: int = 4,
        softening: float = 16.0,
        x_max: float = 3400.0,
        image_size: int | Sequence[int] = 16,
    ):
        super().__init__()
        hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(hw) != 2 or hw[0] % 4 or hw[1] % 4:
            raise ValueError(
                f"image_size must have sides divisible by 4, got {image_size!r}"
            )
        for name, value in (
            ("in_channels", in_channels),
            ("hidden", hidden),
            ("n_checker", n_checker),
            ("n_steps", n_steps),
        ):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if softening <= 0 or x_max <= 0:
            raise ValueError(
                f"softening and x_max must be positive, got {softening}, {x_max}"
            )
        self.in_channels = int(in_channels)
        self.image_size = (int(hw[0]), int(hw[1]))
        self.softening, self.x_max = float(softening), float(x_max)
        self._scale = math.asinh(self.x_max / self.softening)
        self.hparams = {
            "in_channels": self.in_channels,
            "hidden": int(hidden),
            "n_checker": int(n_checker),
            "n_steps": int(n_steps),
            "softening": self.softening,
            "x_max": self.x_max,
            "image_size": list(self.image_size),
        }
        c = self.in_channels
        scale1 = []
        for i in range(n_checker):
            scale1 += [ActNorm(c), AffineCoupling(c, hidden, "checkerboard", i)]
        self.scale1 = _Sequence(scale1)
        self.scale2 = self._glow_steps(4 * c, hidden, n_steps)
        self.c_out = 4 * c - 2 * c  # channels that stay after the split
        self.scale3 = self._glow_steps(4 * self.c_out, hidden, n_steps)

    @staticmethod
    def _glow_steps(channels: int, hidden: int, n: int) -> _Sequence:
        layers: list[nn.Module] = []
        for i in range(n):
            layers += [
                ActNorm(channels),
                Invertible1x1Conv(channels),
                AffineCoupling(channels, hidden, "channel", i),
            ]
        return _Sequence(layers)

    # -- the stretch and dequantisation
    def stretch(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``y = asinh(v / s) / asinh(x_max / s)`` and ``sum log|dy/dv|`` per image."""
        y = torch.asinh(v / self.softening) / self._scale
        log_dy = -math.log(self._scale) - 0.5 * torch.log(self.softening**2 + v.pow(2))
        return y, log_dy.flatten(1).sum(1)

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch tensor, got {type(x).__name__}")
        if x.dim() == 3 and self.in_channels == 1:
            x = x.unsqueeze(1)
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.in_channels, *self.image_size):
            raise ValueError(
                f"x must be images of shape (N, {self.in_channels}, {self.image_size[0]}, "
                f"{self.image_size[1]}), got {tuple(x.shape)}"
            )
        return x if x.is_floating_point() else x.float()

    # -- the flow
    def flow(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stretched images -> ``(z_split, z_out, logdet)``: the two parts of the code."""
        h, logdet = self.scale1(y)
        h, ld = self.scale2(squeeze(h))
        logdet = logdet + ld
        z_split, h = (
            h[:, : 4 * self.in_channels - self.c_out],
            h[:, 4 * self.in_channels - self.c_out :],
        )
        z_out, ld = self.scale3(squeeze(h))
        return z_split, z_out, logdet + ld

    def inverse(self, z_split: torch.Tensor, z_out: torch.Tensor) -> torch.Tensor:
        """The codes back to stretched images (the inverse of :meth:`flow`)."""
        h = unsqueeze(self.scale3.inverse(z_out))
        h = torch.cat([z_split, h], 1)
        return self.scale1.inverse(unsqueeze(self.scale2.inverse(h)))

    def log_density(self, v: torch.Tensor) -> torch.Tensor:
        """``log p(v)`` of continuous (dequantised) images in ADC units, ``(N,)``."""
        y, log_dy = self.stretch(v)
        z_split, z_out, logdet = self.flow(y)
        prior = -0.5 * (z_split.pow(2) + _LOG_2PI).flatten(1).sum(1)
        prior = prior - 0.5 * (z_out.pow(2) + _LOG_2PI).flatten(1).sum(1)
        return prior + logdet + log_dy

    def log_prob(
        self,
        x: torch.Tensor,
        n_samples: int = 1,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """A lower bound on ``log P(x)`` of integer images (nats), ``(N,)``.

        ``log (1/k) sum_j p(x + u_j - 1/2)`` over ``k = n_samples`` uniform draws
        ``u_j``: a stochastic lower bound that tightens as ``k`` grows. ``noise``
        (``(k, *x.shape)``, in [0, 1)) gives the draws, e.g. per-frame ones
        (:func:`phbook.noise.frame_uniform`).
        """
        if int(n_samples) != n_samples or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        x = self._inputs(x).round()
        if noise is not None and tuple(noise.shape) != (int(n_samples), *x.shape):
            raise ValueError(
                f"noise must have shape {(int(n_samples), *x.shape)}, "
                f"got {tuple(noise.shape)}"
            )
        logs = []
        for j in range(int(n_samples)):
            if noise is None:
                u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            else:
                u = noise[j]
            logs.append(self.log_density(x + u - 0.5))
        return torch.logsumexp(torch.stack(logs), 0) - math.log(n_samples)

    def bits_per_pixel(
        self, x: torch.Tensor, n_samples: int = 1, generator=None, noise=None
    ) -> torch.Tensor:
        """``-log2 P(x)`` (its bound) per pixel value, per image (``noise``: as in
        :meth:`log_prob`)."""
        n_values = self.in_channels * self.image_size[0] * self.image_size[1]
        return -self.log_prob(x, n_samples, generator, noise) / (n_values * math.log(2.0))

    def loss(self, batch) -> dict[str, torch.Tensor]:
        """Bits per pixel of the dequantised batch (one uniform draw per image)."""
        bpp = self.bits_per_pixel(batch).mean()
        return {"loss": bpp, "bits_per_pixel": bpp}

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        """``n`` integer images (ADC): ``z ~ N(0, T^2 I)`` through the inverse flow."""
        if int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        dev = next(self.parameters()).device
        h, w = self.image_size
        c_split = 4 * self.in_channels - self.c_out
        z_split = temperature * torch.randn(
            int(n), c_split, h // 2, w // 2, generator=generator, device=dev
        )
        z_out = temperature * torch.randn(
            int(n), 4 * self.c_out, h // 4, w // 4, generator=generator, device=dev
        )
        y = self.inverse(z_split, z_out).clamp(-2.0, 2.0)
        return (self.softening * torch.sinh(y * self._scale)).round()
