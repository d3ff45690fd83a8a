"""Hillas parameters: the moments of a cleaned Cherenkov image.

Hillas (1985) described an air-shower image by the first and second moments of its light
after *cleaning* away pixels that hold only night-sky noise. The size (total light),
length and width (the standard deviations along the major and minor axes), orientation
and distance of the centroid from the camera centre are still the first thing a
Cherenkov astronomer computes, and the first anomaly cut one writes.

Cleaning uses the two-level *tail cuts* of Cherenkov telescopes: a pixel survives if it is
above the picture threshold and has a neighbour above the boundary threshold, or is above
the boundary threshold and has a neighbour above the picture threshold.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .sim.panoseti import MODULE_PIX, PIXEL_DEG, quabo_offset

__all__ = ["tailcuts", "parameters", "PICTURE_ADC", "BOUNDARY_ADC"]

#: Default cleaning thresholds (ADC): about 6 and 3 photoelectrons at 16 ADC per PE.
PICTURE_ADC = 96.0
BOUNDARY_ADC = 48.0

_NEIGHBOURS4 = [(-1, 0), (1, 0), (0, -1), (0, 1)]


def _neighbour_any(mask: np.ndarray) -> np.ndarray:
    """Whether any of a pixel's 4 direct neighbours is set: (n, H, W) bool."""
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)))
    h, w = mask.shape[1:]
    out = np.zeros_like(mask)
    for dr, dc in _NEIGHBOURS4:
        out |= padded[:, 1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]
    return out


def tailcuts(
    images, picture: float = PICTURE_ADC, boundary: float = BOUNDARY_ADC
) -> np.ndarray:
    """Boolean mask (n, H, W) of the pixels that survive two-level tail-cut cleaning."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"images must have shape (n, H, W), got {x.shape}")
    if boundary > picture:
        raise ValueError(f"boundary ({boundary}) must not exceed picture ({picture})")
    pic = x > picture
    bnd = x > boundary
    return (pic & _neighbour_any(bnd)) | (bnd & _neighbour_any(pic))


def parameters(
    images,
    quabo=None,
    *,
    picture: float = PICTURE_ADC,
    boundary: float = BOUNDARY_ADC,
    mask: np.ndarray | None = None,
) -> pd.DataFrame:
    """Hillas parameters of each image, one row per image.

    Columns: ``size`` (sum of cleaned pixels, ADC), ``n_pixels``, ``peak`` (brightest
    pixel, ADC), ``cog_row``/``cog_col`` (centroid, pixels), ``length``/``width`` (deg),
    ``psi`` (orientation of the major axis, rad), ``distance`` (deg from the module centre
    when ``quabo`` is given, else from the image centre), ``leakage`` (fraction of the size
    in the outermost pixel ring: a shower cut by the edge has a large leakage),
    ``concentration`` (fraction of the size in the brightest pixel). Images with no
    pixel surviving cleaning get NaN geometry and size 0. ``mask`` (n, H, W), if given,
    replaces the tail-cut cleaning (e.g. :func:`phbook.yardstick.clean`).
    """
    x = np.asarray(images, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if mask is None:
        mask = tailcuts(x, picture, boundary)
    elif np.shape(mask) != x.shape:
        raise ValueError(
            f"mask must have the images' shape {x.shape}, got {np.shape(mask)}"
        )
    w = np.where(mask, x, 0.0)
    n, h, wd = x.shape
    rows = np.arange(h) + 0.5
    cols = np.arange(wd) + 0.5
    size = w.sum(axis=(1, 2))
    ok = size > 0
    safe = np.where(ok, size, 1.0)
    wr = w.sum(axis=2)  # (n, h)
    wc = w.sum(axis=1)  # (n, w)
    mr = (wr * rows).sum(1) / safe
    mc = (wc * cols).sum(1) / safe
    dr = rows[None, :, None] - mr[:, None, None]
    dc = cols[None, None, :] - mc[:, None, None]
    srr = (w * dr * dr).sum(axis=(1, 2)) / safe
    scc = (w * dc * dc).sum(axis=(1, 2)) / safe
    src = (w * dr * dc).sum(axis=(1, 2)) / safe
    # eigenvalues of [[scc, src], [src, srr]] (x = column, y = row)
    tr = scc + srr
    det = np.sqrt(np.maximum((scc - srr) ** 2 / 4 + src**2, 0))
    l1 = np.maximum(tr / 2 + det, 0)
    l2 = np.maximum(tr / 2 - det, 0)
    psi = 0.5 * np.arctan2(2 * src, scc - srr)
    if quabo is not None:
        r0, c0 = quabo_offset(np.broadcast_to(np.asarray(quabo), (n,)))
        centre = MODULE_PIX / 2
        dist = np.hypot(mr + r0 - centre, mc + c0 - centre)
    else:
        dist = np.hypot(mr - h / 2, mc - wd / 2)
    border = np.zeros((h, wd), bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    leak = (w * border).sum(axis=(1, 2)) / safe
    peak = x.reshape(n, -1).max(axis=1)
    conc = w.reshape(n, -1).max(axis=1) / safe
    nan = np.where(ok, 1.0, np.nan)
    return pd.DataFrame(
        {
            "size": size,
            "n_pixels": mask.sum(axis=(1, 2)),
            "peak": peak,
            "cog_row": mr * nan,
            "cog_col": mc * nan,
            "length": np.sqrt(l1) * PIXEL_DEG * nan,
            "width": np.sqrt(l2) * PIXEL_DEG * nan,
            "psi": psi * nan,
            "distance": dist * PIXEL_DEG * nan,
            "leakage": leak * nan,
            "concentration": conc * nan,
        }
    )
