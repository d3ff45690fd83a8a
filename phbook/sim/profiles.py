"""Light profiles and detector effects shared by the image simulators, vectorised.

Every function takes pixel coordinates and per-object parameters that broadcast, so a
whole batch of stamps (parameters of shape (N, 1, 1) against a grid of shape (H, W)) is
drawn in one call.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import gamma as gamma_fn
from scipy.special import gammaincinv

__all__ = ["moffat", "sersic", "sersic_b", "pixel_grid", "bin_pixels", "saturate"]


def moffat(
    x: ArrayLike,
    y: ArrayLike,
    x0: ArrayLike,
    y0: ArrayLike,
    fwhm: ArrayLike,
    beta: float,
    flux: ArrayLike = 1.0,
) -> np.ndarray:
    """A Moffat PSF of total ``flux`` centred on ``(x0, y0)``, evaluated at ``x, y``.

    ``I(r) = flux (beta - 1) / (pi alpha^2) (1 + r^2 / alpha^2)^-beta`` with
    ``alpha = fwhm / (2 sqrt(2^(1/beta) - 1))``: the seeing profile of ground-based
    telescopes (Moffat 1969), with wider wings than a Gaussian.
    """
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    r2 = (x - x0) ** 2 + (y - y0) ** 2
    return flux * (beta - 1.0) / (np.pi * alpha**2) * (1.0 + r2 / alpha**2) ** (-beta)


def sersic_b(n: ArrayLike) -> np.ndarray:
    """``b_n`` of the Sersic profile: half the light is inside r_e."""
    return gammaincinv(2.0 * np.asarray(n, dtype=float), 0.5)


def sersic(
    x: ArrayLike,
    y: ArrayLike,
    x0: ArrayLike,
    y0: ArrayLike,
    flux: ArrayLike,
    r_e: ArrayLike,
    n: ArrayLike,
    q: ArrayLike,
    phi: ArrayLike,
) -> np.ndarray:
    """An elliptical Sersic profile of total ``flux`` (surface brightness per pixel^2).

    ``I(r) = I_e exp(-b_n ((r / r_e)^(1/n) - 1))`` with the elliptical radius
    ``r = sqrt(x'^2 + (y'/q)^2)`` along the major axis (position angle ``phi``,
    counter-clockwise from the x axis, axis ratio ``q``), the convention of astropy's
    ``Sersic2D``; ``I_e`` follows from the total flux
    ``2 pi q n r_e^2 I_e e^b_n b_n^-2n Gamma(2n)``.
    """
    b = sersic_b(n)
    dx, dy = x - x0, y - y0
    u = dx * np.cos(phi) + dy * np.sin(phi)
    v = -dx * np.sin(phi) + dy * np.cos(phi)
    r = np.sqrt(u**2 + (v / q) ** 2)
    total = 2 * np.pi * q * n * r_e**2 * np.exp(b) * b ** (-2 * n) * gamma_fn(2 * n)
    return flux / total * np.exp(-b * ((r / r_e) ** (1.0 / n) - 1.0))


def pixel_grid(size: int, supersampling: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel centres ``(x, y)`` of a size x size stamp, in pixel units.

    Pixel ``i`` spans ``i - 0.5 .. i + 0.5``; arrays of shape
    (size * supersampling, size * supersampling), ``x`` along columns.
    """
    c = (np.arange(size * supersampling) + 0.5) / supersampling - 0.5
    return np.meshgrid(c, c, indexing="xy")


def bin_pixels(img: np.ndarray, supersampling: int) -> np.ndarray:
    """Mean over supersampling x supersampling blocks of the last two axes."""
    if supersampling == 1:
        return img
    *lead, h, w = img.shape
    s = supersampling
    return img.reshape(*lead, h // s, s, w // s, s).mean(axis=(-3, -1))


def saturate(img: np.ndarray, full: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Clip images (N, H, W) at the full well ``full`` and bleed the excess charge.

    ``full`` is a number or one value per image. The charge above the full well in a
    column spreads up and down from the clipped pixels, filling ``excess / full``
    further pixels to the full well, as in a CCD. Returns the image and the number of
    clipped pixels per image.
    """
    full = np.broadcast_to(np.asarray(full, dtype=float), (img.shape[0],))
    over = img > full[:, None, None]
    count = over.sum(axis=(1, 2))
    if not count.any():
        return img, count
    img = img.copy()
    for i in np.flatnonzero(count):
        excess = np.clip(img[i] - full[i], 0, None).sum(axis=0)  # per column
        img[i] = np.minimum(img[i], full[i])
        for x in np.flatnonzero(excess > 0):
            clipped = np.flatnonzero(over[i, :, x])
            n_bleed = int(excess[x] // full[i])
            lo = max(clipped.min() - (n_bleed + 1) // 2, 0)
            hi = min(clipped.max() + n_bleed // 2 + 1, img.shape[1])
            img[i, lo:hi, x] = full[i]
    return img, count
