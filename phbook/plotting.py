"""Figures of the book: image galleries, loss curves, ROC curves, score histograms.

Every function draws on a matplotlib ``Axes`` or returns a ``Figure`` and never calls
``plt.show()``, so that a chapter decides how to display it.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

#: The colour map of single-channel images throughout the book.
IMAGE_CMAP = "magma"


def use_style() -> None:
    """The book's matplotlib style: readable fonts, tight layouts, one colour map."""
    mpl.rcParams.update(
        {
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
    )


def _as_numpy_images(x) -> np.ndarray:
    """(N, H, W) float array from NumPy or torch images (N, H, W) or (N, 1, H, W)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise ValueError(f"expected single-channel images (N, 1, H, W), got {x.shape}")
        x = x[:, 0]
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(
            f"expected images of shape (N, H, W) or (N, 1, H, W), got {x.shape}"
        )
    return x


def show_images(
    x,
    titles: Sequence[str] | None = None,
    *,
    ncols: int = 8,
    size: float = 1.3,
    cmap: str | None = None,
    shared_scale: bool = False,
    vmin: float | None = None,
    vmax: float | None = None,
    suptitle: str | None = None,
    colorbar: bool = False,
):
    """A gallery of single-channel images, each with its own colour scale by default.

    ``shared_scale=True`` (or explicit ``vmin``/``vmax``) puts every panel on one scale,
    which is what to use when comparing brightness across images.
    """
    images = _as_numpy_images(x)
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(size * ncols, size * nrows + (0.3 if suptitle else 0)),
        squeeze=False,
    )
    if shared_scale and vmin is None and vmax is None:
        vmin, vmax = float(np.min(images)), float(np.max(images))
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        im = ax.imshow(images[i], cmap=cmap or IMAGE_CMAP, vmin=vmin, vmax=vmax)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=7)
        if colorbar:
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def plot_history(history, *, ax=None, columns: Sequence[str] | None = None, logy=False):
    """Training and validation curves from the table :func:`phbook.train.fit` returns."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    if columns is None:
        columns = [c for c in history.columns if c.startswith(("train_", "val_"))]
    for col in columns:
        style = "--" if col.startswith("val_") else "-"
        ax.plot(history["epoch"], history[col], style, label=col)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if logy:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    return ax


def show_classes(
    x,
    classes: Sequence[str],
    *,
    per_class: int = 6,
    order: Sequence[str] | None = None,
    size: float = 1.2,
    cmap: str | None = None,
    transform=None,
    seed: int | None = 0,
):
    """One row of example images per class, the class name at the left of its row.

    ``x`` holds the images (N, H, W) and ``classes`` one name per image (e.g. a
    simulated set's ``images`` and ``classes``). ``order`` picks and orders the rows
    (default: order of first appearance); ``per_class`` images are drawn at random
    with ``seed`` (``None``: the first ones). ``transform`` is applied to each image
    before display (e.g. ``np.arcsinh`` for a high dynamic range). Each panel has its
    own colour scale; the images are shown with the origin at the lower left.
    """
    images = _as_numpy_images(x)
    names = np.asarray(classes).astype(str)
    if len(names) != len(images):
        raise ValueError(f"{len(images)} images but {len(names)} class names")
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    rows = list(dict.fromkeys(names)) if order is None else [str(c) for c in order]
    missing = [c for c in rows if c not in set(names)]
    if missing:
        raise ValueError(f"order names classes with no images: {missing}")
    rng = np.random.default_rng(seed) if seed is not None else None
    figsize = (size * per_class, size * len(rows))
    fig, axes = plt.subplots(len(rows), per_class, figsize=figsize, squeeze=False)
    for r, name in enumerate(rows):
        idx = np.flatnonzero(names == name)
        if rng is not None:
            idx = rng.permutation(idx)
        idx = idx[:per_class]
        for j, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(idx):
                ax.axis("off")
                continue
            img = images[idx[j]] if transform is None else transform(images[idx[j]])
            ax.imshow(img, cmap=cmap or IMAGE_CMAP, origin="lower")
        axes[r, 0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    return fig
