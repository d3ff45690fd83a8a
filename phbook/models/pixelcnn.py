"""Autoregressive image models of chapter 8: masked convolutions and the gated PixelCNN.

An autoregressive model writes the density of an image of ``P`` pixels, in raster order
(row by row, left to right), as a product of one-pixel conditionals:

``log p(x) = sum_i log p(x_i | x_1, ..., x_(i-1))``

which is *exact*: no bound, no sampling. A PixelCNN (van den Oord et al. 2016) computes
all ``P`` conditionals in one pass with convolutions masked so that the output at pixel
``i`` never sees pixels ``i, i+1, ...``. Stacking plain masked convolutions leaves a
*blind spot* (pixels above and to the right that the receptive field never reaches);
the gated PixelCNN splits the network into a *vertical stack* (every row above) and a
*horizontal stack* (the current row, to the left), which removes it.

Likelihoods (``likelihood=``):

``"discretized"``
    for integer data such as pulse heights in ADC counts: a mixture of logistics in the
    asinh-stretched space (:class:`phbook.transforms.AsinhStretch`), integrated over
    each integer's bin ``[n - 1/2, n + 1/2]`` (the discretised logistic mixture of
    PixelCNN++, Salimans et al. 2017, with bins of equal width in ADC rather than in
    the network's units). The two end bins of ``value_range`` extend to infinity, so
    the probabilities of all integers sum to one; ``log p(x)`` is then a true
    log-probability and ``-log2 p(x) / P`` is in *bits per pixel*.
``"continuous"``
    for real-valued images (e.g. normalised galaxy stamps): a mixture of logistics
    density on the values as given. ``log p(x)`` is then a log-density, which depends
    on the units of ``x``.

Several channels are modelled as conditionally independent given the previous pixels
(all channels of every earlier pixel); one channel is the book's usual case.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "PixelDensity",
    "IndependentPixels",
    "MaskedConv2d",
    "PlainPixelCNN",
    "VerticalStackConv2d",
    "HorizontalStackConv2d",
    "GatedLayer",
    "PixelCNN",
    "LIKELIHOODS",
    "receptive_field",
    "discretized_logistic_mixture_logp",
    "logistic_mixture_logp",
]

LIKELIHOODS = ("discretized", "continuous")
_EDGE = 1e4  # stands for +-infinity at the end bins, in logistic units of the stretch


# ---------------------------------------------------------------------------- masks


class _MaskedConv(nn.Conv2d):
    """A 2-D convolution whose kernel is multiplied by a fixed 0/1 mask.

    ``anchor`` is the kernel position that sits on the output pixel (row, column); the
    input is zero-padded so that the output has the input's size. Kernels that are
    zero below or right of the anchor are cropped away by the subclasses, which saves
    their arithmetic.
    """

    def __init__(self, in_channels, out_channels, mask, anchor, dilation=1):
        kh, kw = mask.shape
        super().__init__(in_channels, out_channels, (kh, kw), dilation=dilation)
        self.register_buffer("mask", mask.float()[None, None].clone())
        ar, ac = anchor
        d = dilation
        # F.pad order: (left, right, top, bottom)
        self._pad = (d * ac, d * (kw - 1 - ac), d * ar, d * (kh - 1 - ar))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            F.pad(x, self._pad), self.weight * self.mask, self.bias, dilation=self.dilation
        )


def _check_kernel(kernel_size: int) -> int:
    if int(kernel_size) != kernel_size or kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd integer >= 3, got {kernel_size!r}")
    return int(kernel_size)


class MaskedConv2d(_MaskedConv):
    """The masked convolution of the original PixelCNN.

    The ``k x k`` kernel keeps the rows above the centre and, on the centre row, the
    columns left of the centre; type ``"A"`` (first layer) drops the centre itself so
    that a pixel never sees its own value, type ``"B"`` (later layers) keeps it.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, mask_type: str
    ):
        k = _check_kernel(kernel_size)
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        mask = torch.ones(k // 2 + 1, k)  # rows below the centre are cropped
        mask[k // 2, k // 2 + (mask_type == "B") :] = 0
        super().__init__(in_channels, out_channels, mask, (k // 2, k // 2))
        self.mask_type = mask_type


class PlainPixelCNN(nn.Module):
    """A stack of plain masked convolutions (one type A, then type B), ReLU between.

    Kept to show the *blind spot*: the receptive field of the last layer misses a wedge
    of pixels above and to the right of the current one (see :func:`receptive_field`).
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 16,
        n_layers: int = 4,
        kernel_size: int = 3,
    ):
        super().__init__()
        layers: list[nn.Module] = [MaskedConv2d(in_channels, channels, kernel_size, "A")]
        for _ in range(n_layers - 1):
            layers += [nn.ReLU(), MaskedConv2d(channels, channels, kernel_size, "B")]
        self.net = nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last layer's features: what the output at each pixel may depend on."""
        return self.net(x)


class VerticalStackConv2d(_MaskedConv):
    """The vertical stack's convolution: the ``k x k`` kernel keeps the rows above the
    centre, and the centre row too except in the first layer (``first=True``).

    Its output at row ``r`` therefore depends only on rows above ``r`` of the image,
    however many layers are stacked: no blind spot, and no look at the current row.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        first: bool,
        dilation: int = 1,
    ):
        k = _check_kernel(kernel_size)
        mask = torch.ones(k // 2 + 1, k)  # rows below the centre are cropped
        if first:
            mask[k // 2] = 0
        super().__init__(in_channels, out_channels, mask, (k // 2, k // 2), dilation)


class HorizontalStackConv2d(_MaskedConv):
    """The horizontal stack's convolution: a ``1 x k`` kernel on the current row that
    keeps the columns left of the centre, and the centre except in the first layer."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        first: bool,
        dilation: int = 1,
    ):
        k = _check_kernel(kernel_size)
        mask = torch.ones(1, k // 2 + 1)  # columns right of the centre are cropped
        if first:
            mask[0, k // 2] = 0
        super().__init__(in_channels, out_channels, mask, (0, k // 2), dilation)


class GatedLayer(nn.Module):
    """One gated PixelCNN layer: ``tanh(a) * sigmoid(b)`` in both stacks.

    The vertical stack's features feed the horizontal stack at the same position (they
    only depend on rows above); the horizontal stack has a residual connection, except
    in the first layer, whose input is the image itself (a residual there would let a
    pixel see its own value).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        first: bool = False,
        in_channels: int | None = None,
        dilation: int = 1,
    ):
        super().__init__()
        c_in = channels if in_channels is None else in_channels
        self.first = bool(first)
        self.v_conv = VerticalStackConv2d(c_in, 2 * channels, kernel_size, first, dilation)
        self.h_conv = HorizontalStackConv2d(
            c_in, 2 * channels, kernel_size, first, dilation
        )
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = nn.Conv2d(channels, channels, 1)

    @staticmethod
    def gate(a: torch.Tensor) -> torch.Tensor:
        value, gate = a.chunk(2, dim=1)
        return torch.tanh(value) * torch.sigmoid(gate)

    def forward(
        self, v: torch.Tensor, h: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        v_feat = self.v_conv(v)
        h_new = self.h_out(self.gate(self.h_conv(h) + self.v_to_h(v_feat)))
        if not self.first:
            h_new = h_new + h
        return self.gate(v_feat), h_new


# ----------------------------------------------------------------------- likelihoods


def _log1mexp(d: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(d))`` for ``d < 0``, accurate near 0 and for large ``|d|``."""
    return torch.where(
        d > -math.log(2.0), torch.log(-torch.expm1(d)), torch.log1p(-torch.exp(d))
    )


def _log_logistic_bin(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``log(sigmoid(b) - sigmoid(a))`` for ``a < b`` (standardised bin edges).

    Stable everywhere: it works on the side of the logistic where the bin lies (the
    upper tail uses ``sigmoid(-a) - sigmoid(-b)``), in log space, with
    ``log sigmoid(a) - log sigmoid(b) = (a - b) - (softplus(a) - softplus(b))``, and
    uses ``pdf(midpoint) * (b - a)`` for bins narrower than 1e-3 (where that rule is
    accurate to about 1e-7 and the difference of CDFs is not).
    """
    upper = (a + b) > 0
    lo = torch.where(upper, -b, a)
    hi = torch.where(upper, -a, b)
    width = hi - lo
    narrow = width < 1e-3
    d = -width - (F.softplus(lo) - F.softplus(hi))  # log sigmoid(lo) - log sigmoid(hi)
    exact = F.logsigmoid(hi) + _log1mexp(torch.where(narrow, torch.full_like(d, -1.0), d))
    mid = 0.5 * (lo + hi)
    approx = F.logsigmoid(mid) + F.logsigmoid(-mid) + torch.log(width.clamp_min(1e-30))
    return torch.where(narrow, approx, exact)


def discretized_logistic_mixture_logp(
    y_lo: torch.Tensor,
    y_hi: torch.Tensor,
    logits: torch.Tensor,
    means: torch.Tensor,
    log_scales: torch.Tensor,
) -> torch.Tensor:
    """``log P(y in [y_lo, y_hi])`` under a mixture of logistics, per element.

    ``y_lo``, ``y_hi``: ``(...)``; ``logits``, ``means``, ``log_scales``: ``(..., K)``.
    Use ``-inf``/``+inf`` (or very large values) for the open end bins.
    """
    inv = torch.exp(-log_scales)
    a = ((y_lo.unsqueeze(-1) - means) * inv).clamp(-_EDGE * 1e3, _EDGE * 1e3)
    b = ((y_hi.unsqueeze(-1) - means) * inv).clamp(-_EDGE * 1e3, _EDGE * 1e3)
    return torch.logsumexp(F.log_softmax(logits, -1) + _log_logistic_bin(a, b), -1)


def logistic_mixture_logp(
    y: torch.Tensor, logits: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """``log p(y)`` of a mixture of logistics density, per element (continuous)."""
    t = (y.unsqueeze(-1) - means) * torch.exp(-log_scales)
    log_pdf = F.logsigmoid(t) + F.logsigmoid(-t) - log_scales
    return torch.logsumexp(F.log_softmax(logits, -1) + log_pdf, -1)


# ---------------------------------------------------------------------------- model


class PixelDensity(nn.Module):
    """What every per-pixel mixture model here shares: inputs, likelihood, sampling.

    Subclasses implement ``forward(x) -> (logits, means, log_scales)``, each
    ``(N, C, H, W, n_mixtures)``, where the parameters of pixel ``i`` depend only on the
    pixels before ``i``; the rest (``log_prob``, ``bits_per_pixel``, ``loss``,
    ``sample``) follows. The arguments are those of :class:`PixelCNN`.
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_mixtures: int = 5,
        likelihood: str = "discretized",
        value_range: tuple[int, int] = (-128, 4095),
        softening: float = 16.0,
        x_max: float = 3400.0,
        image_size: int | Sequence[int] = 16,
    ):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        for name, value in (("in_channels", in_channels), ("n_mixtures", n_mixtures)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        lo, hi = (int(v) for v in value_range)
        if lo >= hi or lo != value_range[0] or hi != value_range[1]:
            raise ValueError(
                f"value_range must be two integers (low < high), got {value_range!r}"
            )
        if softening <= 0 or x_max <= 0:
            raise ValueError(
                f"softening and x_max must be positive, got {softening}, {x_max}"
            )
        hw = (
            (image_size, image_size)
            if isinstance(image_size, int)
            else tuple(int(s) for s in image_size)
        )
        if len(hw) != 2 or min(hw) < 1:
            raise ValueError(f"image_size must be an int or (H, W), got {image_size!r}")
        self.in_channels = int(in_channels)
        self.n_mixtures = int(n_mixtures)
        self.likelihood = likelihood
        self.value_range = (lo, hi)
        self.softening = float(softening)
        self.x_max = float(x_max)
        self.image_size = hw
        self._scale = math.asinh(self.x_max / self.softening)
        self.hparams = {
            "in_channels": self.in_channels,
            "n_mixtures": self.n_mixtures,
            "likelihood": likelihood,
            "value_range": list(self.value_range),
            "softening": self.softening,
            "x_max": self.x_max,
            "image_size": list(hw),
        }

    def _split_params(self, out: torch.Tensor):
        """``(N, C * 3 * K, H, W)`` -> ``(logits, means, log_scales)``."""
        n, _, hh, ww = out.shape
        out = out.view(n, self.in_channels, 3, self.n_mixtures, hh, ww)
        logits, means, log_scales = out.permute(0, 1, 2, 4, 5, 3).unbind(2)
        return logits, means, log_scales.clamp(min=-12.0, max=4.0)

    # -- data in and out of the network's units
    def stretch(self, x: torch.Tensor) -> torch.Tensor:
        """ADC -> network units (``asinh(x / softening) / asinh(x_max / softening)``)."""
        return torch.asinh(x / self.softening) / self._scale

    def unstretch(self, y: torch.Tensor) -> torch.Tensor:
        """Network units -> ADC."""
        return self.softening * torch.sinh(y * self._scale)

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch tensor, got {type(x).__name__}")
        if x.dim() == 3 and self.in_channels == 1:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must be images of shape (N, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        return x if x.is_floating_point() else x.float()

    # -- likelihood
    def _bins(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self.value_range
        n = x.round().clamp(lo, hi)
        y_lo = torch.where(n <= lo, torch.full_like(n, -_EDGE), self.stretch(n - 0.5))
        y_hi = torch.where(n >= hi, torch.full_like(n, _EDGE), self.stretch(n + 0.5))
        return y_lo, y_hi

    def log_prob_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x_i | x_<i)`` of every pixel (nats), shape ``(N, C, H, W)``."""
        x = self._inputs(x)
        logits, means, log_scales = self(x)
        if self.likelihood == "discretized":
            y_lo, y_hi = self._bins(x)
            return discretized_logistic_mixture_logp(y_lo, y_hi, logits, means, log_scales)
        return logistic_mixture_logp(x, logits, means, log_scales)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x) = sum_i log p(x_i | x_<i)`` of each image (nats), ``(N,)``."""
        return self.log_prob_pixels(x).flatten(1).sum(1)

    def bits_per_pixel(self, x: torch.Tensor) -> torch.Tensor:
        """``-log2 p(x)`` divided by the number of pixel values, per image."""
        lp = self.log_prob_pixels(x)
        return -lp.flatten(1).mean(1) / math.log(2.0)

    def loss(self, batch) -> dict[str, torch.Tensor]:
        """Mean negative log-likelihood of the batch, in bits per pixel."""
        bpp = self.bits_per_pixel(batch).mean()
        return {"loss": bpp, "bits_per_pixel": bpp}

    # -- sampling
    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        image_size: int | Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Draw ``n`` images pixel by pixel, in raster order (``H * W`` passes).

        Integer values (ADC) for the discretised likelihood, real values otherwise.
        """
        if int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if image_size is None:
            hh, ww = self.image_size
        else:
            hh, ww = (image_size, image_size) if isinstance(image_size, int) else image_size
        dev = next(self.parameters()).device
        x = torch.zeros(int(n), self.in_channels, hh, ww, device=dev)
        for r in range(hh):
            for c in range(ww):
                logits, means, log_scales = self(x)
                logits, means, log_scales = (
                    t[:, :, r, c] for t in (logits, means, log_scales)
                )
                u = torch.rand(logits.shape, generator=generator, device=dev)
                k = (logits - torch.log(-torch.log(u.clamp(1e-12, 1 - 1e-7)))).argmax(
                    -1, keepdim=True
                )
                mu = means.gather(-1, k).squeeze(-1)
                s = log_scales.gather(-1, k).squeeze(-1).exp()
                u = torch.rand(mu.shape, generator=generator, device=dev).clamp(
                    1e-6, 1 - 1e-6
                )
                y = mu + s * (torch.log(u) - torch.log1p(-u))
                if self.likelihood == "discretized":
                    lo, hi = self.value_range
                    y = self.unstretch(y.clamp(-2.0, 2.0)).round().clamp(lo, hi)
                x[:, :, r, c] = y
        return x


class IndependentPixels(PixelDensity):
    """Every pixel independent, with its own learnt mixture: ``p(x) = prod_i p_i(x_i)``.

    The simplest image model of chapter 8, and the *background* of its likelihood
    ratio: it knows how bright each pixel tends to be, but nothing about how pixels
    go together. Images must have the size ``image_size``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_mixtures: int = 5,
        likelihood: str = "discretized",
        value_range: tuple[int, int] = (-128, 4095),
        softening: float = 16.0,
        x_max: float = 3400.0,
        image_size: int | Sequence[int] = 16,
    ):
        super().__init__(
            in_channels, n_mixtures, likelihood, value_range, softening, x_max, image_size
        )
        hh, ww = self.image_size
        table = torch.zeros(1, self.in_channels * 3 * self.n_mixtures, hh, ww)
        table.normal_(0.0, 0.1)
        self.table = nn.Parameter(table)

    def forward(self, x: torch.Tensor):
        x = self._inputs(x)
        if tuple(x.shape[2:]) != self.image_size:
            raise ValueError(
                f"IndependentPixels models images of size {self.image_size}, "
                f"got {tuple(x.shape[2:])}"
            )
        return self._split_params(self.table.expand(len(x), -1, -1, -1))


class PixelCNN(PixelDensity):
    """A gated PixelCNN with a logistic-mixture likelihood, for images of any size.

    Parameters
    ----------
    in_channels
        Image channels (1 for pulse-height frames).
    channels, n_layers, kernel_size
        Width and depth of the gated stacks; ``kernel_size`` (odd) sets how fast the
        receptive field grows (``kernel_size // 2`` rows and columns per layer).
    n_mixtures
        Logistic components per pixel.
    likelihood
        ``"discretized"`` (integer data, bits per pixel of the integer value) or
        ``"continuous"`` (real-valued data); see the module docstring.
    value_range
        ``(lowest, highest)`` integer of the discretised likelihood; values beyond fall
        in the end bins, which extend to infinity.
    softening, x_max
        The asinh stretch through which integer data reach the network, and in whose
        space the logistics live (as :class:`phbook.transforms.AsinhStretch`).
    image_size
        ``(H, W)`` of the images :meth:`sample` draws (log-probabilities work on any
        size).
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 32,
        n_layers: int = 6,
        kernel_size: int = 5,
        n_mixtures: int = 5,
        likelihood: str = "discretized",
        value_range: tuple[int, int] = (-128, 4095),
        softening: float = 16.0,
        x_max: float = 3400.0,
        image_size: int | Sequence[int] = 16,
    ):
        super().__init__(
            in_channels, n_mixtures, likelihood, value_range, softening, x_max, image_size
        )
        for name, value in (("channels", channels), ("n_layers", n_layers)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        k = _check_kernel(kernel_size)
        self.hparams.update(
            {"channels": int(channels), "n_layers": int(n_layers), "kernel_size": k}
        )
        self.layers = nn.ModuleList(
            [GatedLayer(channels, k, first=True, in_channels=self.in_channels)]
            + [GatedLayer(channels, k) for _ in range(n_layers - 1)]
        )
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(),
            nn.Conv2d(channels, self.in_channels * 3 * self.n_mixtures, 1),
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The horizontal stack's last features, ``(N, channels, H, W)``."""
        x = self._inputs(x)
        y = self.stretch(x) if self.likelihood == "discretized" else x
        v = h = y
        for layer in self.layers:
            v, h = layer(v, h)
        return h

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mixture parameters of every pixel's conditional: ``(logits, means,
        log_scales)``, each ``(N, C, H, W, n_mixtures)``."""
        return self._split_params(self.head(self.features(x)))


# ------------------------------------------------------------------ receptive field


def receptive_field(
    features,
    image_size: int | Sequence[int],
    pixel: tuple[int, int],
    in_channels: int = 1,
    n_probes: int = 4,
) -> torch.Tensor:
    """Which input pixels the output at ``pixel`` depends on: ``(H, W)`` booleans.

    ``features`` maps images ``(B, C, H, W)`` to features ``(B, F, H, W)`` (e.g.
    ``model.features``). The gradient of the features at ``pixel`` with respect to a
    random input is non-zero where the network looks; ``n_probes`` random inputs are
    combined, so that a ReLU that happens to be off does not hide a connection.
    """
    hh, ww = (image_size, image_size) if isinstance(image_size, int) else image_size
    r, c = pixel
    if not (0 <= r < hh and 0 <= c < ww):
        raise ValueError(f"pixel {pixel} lies outside the image of size {(hh, ww)}")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_probes, in_channels, hh, ww, generator=g).requires_grad_(True)
    out = features(x)
    out[:, :, r, c].sum().backward()
    return (x.grad.abs().sum((0, 1)) > 0).cpu()
