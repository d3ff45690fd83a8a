"""Invertible normalisations from detector units to the numbers a network sees.

Pulse-height frames span three decades: electronic noise of about 8 ADC, single
photoelectrons of 16 ADC, shower cores of hundreds to thousands of ADC, and saturation
near 3400 ADC. A network trained on raw ADC (or on a linear rescaling) spends its whole
loss on the few brightest pixels and ignores the faint structure where most anomalies
hide. The inverse hyperbolic sine is linear around zero (noise, negative values) and
logarithmic for bright pixels, keeps the sign, and is exactly invertible, which is what
astronomers use to display such images (Lupton et al. 1999):

.. math::  y = \\operatorname{asinh}(x / s) / \\operatorname{asinh}(x_{\\max} / s)

with softening ``s`` (one photoelectron, 16 ADC) and ``x_max`` the saturation level, so
that a saturated pixel maps to 1.

A *global* transform, the same for every frame, is deliberate: a per-frame normalisation
(dividing each frame by its own maximum) would erase the overall brightness that makes a
speckled whole-quabo frame stand out.
"""

from __future__ import annotations

import numpy as np

__all__ = ["AsinhStretch", "SqrtStretch", "LinearScale", "rebin"]


def _as_float(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


class AsinhStretch:
    """``y = asinh(x / softening) / asinh(x_max / softening)``, and its inverse.

    Works on NumPy arrays or torch tensors of any shape; returns float32 NumPy arrays.
    """

    def __init__(self, softening: float = 16.0, x_max: float = 3400.0):
        if not (0 < softening < np.inf and 0 < x_max < np.inf):  # NaN fails too
            raise ValueError(
                f"softening and x_max must be positive and finite, got {softening} and "
                f"{x_max}"
            )
        self.softening = float(softening)
        self.x_max = float(x_max)
        self._scale = float(np.arcsinh(self.x_max / self.softening))

    def __call__(self, x) -> np.ndarray:
        return self.forward(x)

    def forward(self, x) -> np.ndarray:
        """Detector units (ADC) -> normalised values (about -0.15 to 1)."""
        x = _as_float(x)
        return (
            np.arcsinh(x / np.float32(self.softening)) / np.float32(self._scale)
        ).astype(np.float32)

    def inverse(self, y) -> np.ndarray:
        """Normalised values -> detector units (ADC)."""
        y = _as_float(y)
        return (np.float32(self.softening) * np.sinh(y * np.float32(self._scale))).astype(
            np.float32
        )

    def __repr__(self) -> str:
        return f"AsinhStretch(softening={self.softening}, x_max={self.x_max})"


class SqrtStretch:
    """``y = (sqrt(x + v) - sqrt(v)) / (sqrt(x_max + v) - sqrt(v))``: a variance-
    stabilising stretch for counts with Poisson noise on top of a noise floor ``v``.
    Counts below ``-v`` (noise dips deeper than the floor) map to ``y`` of ``x = -v``,
    so the inverse gives them back as ``-v``: the stretch is not invertible there.

    When a pixel's variance is its expected counts plus ``v`` (sky, read noise), the
    noise of ``sqrt(x + v)`` is 1/2 whatever the brightness (Anscombe's transform), so
    a squared error in ``y`` weighs every pixel by its signal-to-noise ratio, as a
    chi-square does. ``noise_variance`` is the pixel noise variance in ``y``. Works on
    NumPy arrays or torch tensors; returns float32 NumPy arrays.
    """

    def __init__(self, noise_floor: float, x_max: float = 5000.0):
        if not (0 < noise_floor < np.inf and 0 < x_max < np.inf):  # NaN fails too
            raise ValueError(
                f"noise_floor and x_max must be positive and finite, got {noise_floor} "
                f"and {x_max}"
            )
        self.noise_floor = float(noise_floor)
        self.x_max = float(x_max)
        root = np.sqrt(self.noise_floor)
        self._scale = float(np.sqrt(self.x_max + self.noise_floor) - root)
        self._root = float(root)
        #: the pixel noise variance of the stretched images
        self.noise_variance = 0.25 / self._scale**2

    def __call__(self, x) -> np.ndarray:
        return self.forward(x)

    def forward(self, x) -> np.ndarray:
        """Counts (sky subtracted) -> stretched values (0 for the sky, 1 at x_max)."""
        x = _as_float(x)
        root = np.sqrt(np.clip(x + np.float32(self.noise_floor), 0.0, None))
        return ((root - np.float32(self._root)) / np.float32(self._scale)).astype(
            np.float32
        )

    def inverse(self, y) -> np.ndarray:
        """Stretched values -> counts."""
        y = _as_float(y)
        root = y * np.float32(self._scale) + np.float32(self._root)
        return (root**2 - np.float32(self.noise_floor)).astype(np.float32)

    def __repr__(self) -> str:
        return f"SqrtStretch(noise_floor={self.noise_floor}, x_max={self.x_max})"


class LinearScale:
    """``y = x / scale``: the plain alternative, for comparison."""

    def __init__(self, scale: float = 3400.0):
        if not 0 < scale < np.inf:  # NaN fails too
            raise ValueError(f"scale must be positive and finite, got {scale}")
        self.scale = float(scale)

    def __call__(self, x) -> np.ndarray:
        return self.forward(x)

    def forward(self, x) -> np.ndarray:
        return _as_float(x) / np.float32(self.scale)

    def inverse(self, y) -> np.ndarray:
        return _as_float(y) * np.float32(self.scale)

    def __repr__(self) -> str:
        return f"LinearScale(scale={self.scale})"


def rebin(x, factor: int) -> np.ndarray:
    """Sum ``factor`` x ``factor`` blocks of pixels, divided by ``factor``.

    For images in units of their (uncorrelated) pixel noise, the binned images keep a
    noise of one: the sum of ``factor**2`` unit-noise pixels has a standard deviation
    of ``factor``. The last two axes are binned; trailing rows and columns that do not
    fill a block are dropped.
    """
    x = _as_float(x)
    if int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    f = int(factor)
    if x.ndim < 2 or min(x.shape[-2:]) < f:
        raise ValueError(f"x of shape {x.shape} has no {f} x {f} block to bin")
    *lead, h, w = x.shape
    x = x[..., : h - h % f, : w - w % f]
    blocks = x.reshape(*lead, h // f, f, w // f, f)
    return (blocks.sum(axis=(-3, -1)) / np.float32(f)).astype(np.float32)
