"""The book's plotting style as plain values (no matplotlib import, so that
``import phbook`` stays fast): :func:`phbook.setup` and
:func:`phbook.plotting.use_style` apply it."""

from __future__ import annotations

__all__ = ["IMAGE_CMAP", "RC_PARAMS"]

#: The colour map of single-channel images throughout the book.
IMAGE_CMAP = "magma"

#: matplotlib settings: readable fonts, tight layouts, one colour map.
RC_PARAMS = {
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "figure.figsize": (6.4, 4.0),
    "figure.constrained_layout.use": True,
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "image.cmap": IMAGE_CMAP,
    "image.interpolation": "nearest",
    "legend.frameon": False,
}
