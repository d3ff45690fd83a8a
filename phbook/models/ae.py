"""Convolutional autoencoders: the sparse autoencoder of chapter 2 and shared blocks.

The encoder and decoder blocks here are shared by every image model of the book (the
beta-VAE of :mod:`phbook.models.vae` builds on them). They take single-channel images of
any size: a 16x16 pulse-height frame, a 21x21 difference-image stamp, a 64x64 lensing
image. An image whose side is not a multiple of ``2 ** len(channels)`` (the total
stride) is zero-padded evenly on both sides before the first convolution, and the
decoder crops its output back to the original size, so 21x21 works as well as 16x16.

Model conventions (followed by every model family of the book):

* inputs are float tensors of shape ``(N, 1, H, W)`` (``(N, H, W)`` is accepted too);
* ``encode(x)`` returns the latent code ``z`` (a VAE returns ``(mu, logvar)``);
* ``decode(z)`` returns the reconstruction ``x_hat`` with the input's shape;
* ``loss(batch)`` returns a dict of named loss terms whose ``"loss"`` entry is
  minimised by :func:`phbook.train.fit`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: How a decoder stage doubles the image: nearest-neighbour upsampling and a 3x3
#: convolution, a 4x4 stride-2 transposed convolution, or a sub-pixel convolution (a 3x3
#: convolution to four times the channels, rearranged into a twice larger image by
#: ``PixelShuffle``; Shi et al. 2016), which runs fastest on CPUs.
UPSAMPLING = ("nearest", "transpose", "shuffle")

__all__ = [
    "UPSAMPLING",
    "image_hw",
    "as_image_batch",
    "ConvEncoder",
    "ConvDecoder",
    "SparseConvAE",
    "mse_per_image",
    "CHASE_CHANNELS",
    "ChaseSCAE",
]


def image_hw(image_size: int | Sequence[int], min_size: int = 2) -> tuple[int, int]:
    """``image_size`` (an int, ``(H, W)`` or ``(1, H, W)``) as a checked ``(H, W)``,
    each side at least ``min_size``."""
    if isinstance(image_size, int):
        hw = (image_size, image_size)
    else:
        hw = tuple(int(s) for s in image_size)
        if len(hw) == 3 and hw[0] == 1:
            hw = hw[1:]
    if len(hw) != 2 or min(hw) < min_size:
        raise ValueError(
            f"image_size must be an int >= {min_size} or a pair (H, W), got {image_size!r}"
        )
    return hw  # type: ignore[return-value]


def as_image_batch(x: torch.Tensor, hw: tuple[int, int], name: str = "x") -> torch.Tensor:
    """``x`` as a float tensor ``(N, 1, H, W)``; a clear error if its shape is wrong."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or x.shape[1] != 1 or tuple(x.shape[2:]) != hw:
        raise ValueError(
            f"{name} must be single-channel images of shape (N, 1, {hw[0]}, {hw[1]}) "
            f"or (N, {hw[0]}, {hw[1]}), got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        x = x.float()
    return x


def _check_channels(channels: Sequence[int]) -> tuple[int, ...]:
    channels = tuple(int(c) for c in channels)
    if not channels or min(channels) < 1:
        raise ValueError(
            f"channels must be a non-empty list of positive ints, got {channels}"
        )
    return channels


class ConvEncoder(nn.Module):
    """Strided 3x3 convolutions with ReLU, from ``(N, 1, H, W)`` to flat features.

    One stride-2 convolution per entry of ``channels``; each halves the image.
    ``feature_shape`` is the ``(C, h, w)`` of the last feature map and ``n_features``
    its size, which the latent layer of a model needs.
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 16,
        channels: Sequence[int] = (32, 32),
        in_channels: int = 1,
    ):
        super().__init__()
        self.image_hw = image_hw(image_size)
        self.channels = _check_channels(channels)
        stride = 2 ** len(self.channels)
        padded = [math.ceil(s / stride) * stride for s in self.image_hw]
        extra = [p - s for p, s in zip(padded, self.image_hw, strict=True)]
        # F.pad order: (left, right, top, bottom)
        self.pad = (
            extra[1] // 2,
            extra[1] - extra[1] // 2,
            extra[0] // 2,
            extra[0] - extra[0] // 2,
        )
        layers: list[nn.Module] = []
        c_in = in_channels
        for c in self.channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.ReLU()]
            c_in = c
        # channels-last memory layout: what oneDNN (CPU) and cuDNN convolutions run
        # fastest on; the numbers are the same
        self.body = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        self.feature_shape = (
            self.channels[-1],
            padded[0] // stride,
            padded[1] // stride,
        )
        self.n_features = math.prod(self.feature_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = F.pad(x, self.pad)
        x = x.contiguous(memory_format=torch.channels_last)
        return self.body(x).flatten(1)


class ConvDecoder(nn.Module):
    """The mirror of :class:`ConvEncoder`: flat features to ``(N, out_channels, H, W)``.

    Each stage doubles the image (see :data:`UPSAMPLING`): by nearest-neighbour
    upsampling followed by a 3x3 convolution (``upsample="nearest"``, free of the
    checkerboard artefacts of transposed convolutions), by a 4x4 stride-2 transposed
    convolution (``"transpose"``) or by a sub-pixel convolution (``"shuffle"``, the
    fastest on CPUs). ReLU follows every stage but the last, whose output is linear.
    The output is cropped to the image size of the encoder.
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 16,
        channels: Sequence[int] = (32, 32),
        out_channels: int = 1,
        upsample: str = "nearest",
    ):
        super().__init__()
        if upsample not in UPSAMPLING:
            raise ValueError(
                f"upsample must be one of {', '.join(UPSAMPLING)}, got {upsample!r}"
            )
        shape_ref = ConvEncoder(image_size, channels)
        self.image_hw = shape_ref.image_hw
        self.pad = shape_ref.pad
        self.feature_shape = shape_ref.feature_shape
        self.n_features = shape_ref.n_features
        self.upsample = upsample
        chans = list(reversed(shape_ref.channels)) + [out_channels]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(chans[:-1], chans[1:], strict=True)):
            if upsample == "nearest":
                layers += [
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.Conv2d(c_in, c_out, 3, padding=1),
                ]
            elif upsample == "shuffle":
                layers += [nn.Conv2d(c_in, 4 * c_out, 3, padding=1), nn.PixelShuffle(2)]
            else:
                layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            if i < len(chans) - 2:
                layers.append(nn.ReLU())
        self.body = nn.Sequential(*layers).to(memory_format=torch.channels_last)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h.view(-1, *self.feature_shape).contiguous(memory_format=torch.channels_last)
        out = self.body(h)
        left, right, top, bottom = self.pad
        if left or right or top or bottom:
            out = out[..., top : out.shape[-2] - bottom, left : out.shape[-1] - right]
        return out


def mse_per_image(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each image over its pixels, shape ``(N,)``."""
    return (x - x_hat).pow(2).flatten(1).mean(1)


class SparseConvAE(nn.Module):
    """Sparse convolutional autoencoder, after Huijse et al.'s CHASE candidate study.

    Strided 3x3 convolutions (``channels``, 32 filters each by default) and ReLU, a
    *linear* latent layer of ``latent_dim`` units whose weights carry an L1 penalty of
    weight ``l1`` (0.005 in the paper), then a mirrored decoder with nearest-neighbour
    upsampling and a linear output layer. The loss is the mean squared error plus the
    L1 penalty:

    ``loss = mean over pixels (x - x_hat)^2 + l1 * sum |W_latent|``
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 16,
        latent_dim: int = 32,
        channels: Sequence[int] = (32, 32),
        l1: float = 0.005,
        upsample: str = "nearest",
    ):
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be at least 1, got {latent_dim}")
        if l1 < 0:
            raise ValueError(f"l1 must be >= 0, got {l1}")
        self.image_hw = image_hw(image_size)
        self.latent_dim = int(latent_dim)
        self.l1 = float(l1)
        self.hparams = {
            "image_size": list(self.image_hw),
            "latent_dim": self.latent_dim,
            "channels": list(channels),
            "l1": self.l1,
            "upsample": upsample,
        }
        self.encoder = ConvEncoder(self.image_hw, channels)
        self.to_latent = nn.Linear(self.encoder.n_features, self.latent_dim)
        self.from_latent = nn.Linear(self.latent_dim, self.encoder.n_features)
        self.decoder = ConvDecoder(self.image_hw, channels, upsample=upsample)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent code ``z`` of each image, shape ``(N, latent_dim)``."""
        return self.to_latent(self.encoder(as_image_batch(x, self.image_hw)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(N, 1, H, W)`` from latent codes ``z``."""
        return self.decoder(F.relu(self.from_latent(z)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction ``x_hat`` of ``x``."""
        return self.decode(self.encode(x))

    def latent_l1(self) -> torch.Tensor:
        """``sum |W|`` over the latent layer's weights (its bias is not penalised)."""
        return self.to_latent.weight.abs().sum()

    def loss(self, batch) -> dict[str, torch.Tensor]:
        """Named loss terms of a batch: ``loss = mse + l1``."""
        x = as_image_batch(batch, self.image_hw, "batch")
        mse = mse_per_image(x, self(x)).mean()
        l1 = self.l1 * self.latent_l1()
        return {"loss": mse + l1, "mse": mse, "l1": l1}


#: The encoder of Huijse et al.'s CHASE study: three 3x3 stride-2 convolutions of 32
#: filters each (the decoder mirrors them).
CHASE_CHANNELS = (32, 32, 32)


class ChaseSCAE(SparseConvAE):
    """The sparse convolutional autoencoder (SCAE) of Huijse et al. (2018), as published.

    Three 3x3 convolutions of 32 filters with stride 2 and ReLU (:data:`CHASE_CHANNELS`),
    a fully connected latent layer of ``latent_dim`` = 21 *linear* units whose weights
    carry an L1 penalty of weight ``l1`` (the paper's 0.005), a mirrored decoder
    (nearest-neighbour upsampling, 3x3 convolutions, ReLU, a linear output layer), the
    mean squared error, and NAdam (Adam with Nesterov momentum) as its optimiser.
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 21,
        latent_dim: int = 21,
        l1: float = 0.005,
        channels: Sequence[int] = CHASE_CHANNELS,
    ):
        super().__init__(image_size, latent_dim, channels, l1, upsample="nearest")

    def configure_optimizers(self, lr: float, weight_decay: float):
        """NAdam, the paper's optimiser (used by :func:`phbook.train.fit`)."""
        return torch.optim.NAdam(self.parameters(), lr=lr, weight_decay=weight_decay)
