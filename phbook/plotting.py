"""Figures of the book: image galleries, loss curves, ROC curves, score histograms.

Every function draws on a matplotlib ``Axes`` or returns a ``Figure`` and never calls
``plt.show()``, so that a chapter decides how to display it.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

from .style import IMAGE_CMAP, RC_PARAMS


def use_style() -> None:
    """The book's matplotlib style: readable fonts, tight layouts, one colour map."""
    mpl.rcParams.update(RC_PARAMS)


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
    title_fontsize: float = 7,
    layout: str | None = None,
    pyplot: bool = True,
    symmetric: bool = False,
):
    """A gallery of single-channel images, each with its own colour scale by default.

    ``symmetric=True`` centres each panel's own scale on zero (limits -m and +m, with
    m the panel's largest absolute value), so a diverging colour map shows zero as its
    middle colour: for signed images such as differences.

    ``shared_scale=True`` (or explicit ``vmin``/``vmax``) puts every panel on one scale,
    which is what to use when comparing brightness across images. ``layout=
    "constrained"`` makes room for titles of several lines (they then never overlap
    the row above). ``pyplot=False`` draws on a bare :class:`matplotlib.figure.Figure`
    that pyplot never sees: for code that only saves the figure (``phbook top -o``),
    it neither selects a backend nor shows the figure in a notebook.
    """
    images = _as_numpy_images(x)
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    figsize = (size * ncols, size * nrows + (0.3 if suptitle else 0))
    if pyplot:
        fig, axes = plt.subplots(
            nrows, ncols, figsize=figsize, squeeze=False, layout=layout
        )
    else:
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, layout=layout)
        axes = fig.subplots(nrows, ncols, squeeze=False)
    if shared_scale and vmin is None and vmax is None:
        vmin, vmax = float(np.min(images)), float(np.max(images))
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        lo, hi = vmin, vmax
        if symmetric and vmin is None and vmax is None:
            hi = float(np.max(np.abs(images[i]))) or 1.0
            lo = -hi
        im = ax.imshow(images[i], cmap=cmap or IMAGE_CMAP, vmin=lo, vmax=hi)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=title_fontsize)
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


# ------------------------------------------------- detector evaluation (chapters 2-4)


def _binary_labels(labels, normal: str = "normal") -> np.ndarray:
    """0/1 labels from 0/1 values or from class names (``normal`` -> 0)."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "USO":
        return (labels.astype(str) != normal).astype(int)
    return labels.astype(int)


def plot_roc(
    scores,
    labels,
    *,
    ax=None,
    log_fpr: bool = True,
    fpr_marks: Sequence[float] = (1e-3, 1e-2),
    normal: str = "normal",
):
    """ROC curves of one or several detectors; the legend gives each ROC-AUC.

    ``scores`` is an array of anomaly scores (higher = more anomalous) or a dict
    ``{name: scores}``; ``labels`` are 0/1 or class names (``normal`` is the negative
    class). A log false-positive axis shows the low-FPR end where alert thresholds
    live; dotted lines mark the FPRs of ``fpr_marks``.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    if ax is None:
        _, ax = plt.subplots(figsize=(4.6, 4.0))
    y = _binary_labels(labels, normal)
    named = scores if isinstance(scores, dict) else {"detector": scores}
    for name, s in named.items():
        s = np.asarray(s, dtype=np.float64)
        fpr, tpr, _ = roc_curve(y, s)
        auc = roc_auc_score(y, s)
        if log_fpr:
            keep = fpr > 0
            fpr, tpr = fpr[keep], tpr[keep]
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})", lw=1.4)
    n_neg = int((y == 0).sum())
    if log_fpr:
        ax.set_xscale("log")
        ax.set_xlim(max(1.0 / max(n_neg, 1), 1e-5), 1)
    else:
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
    for f in fpr_marks:
        ax.axvline(f, color="0.6", lw=0.7, ls=":")
    ax.set_xlabel("false-positive rate (normal frames flagged)")
    ax.set_ylabel("true-positive rate (anomalies found)")
    ax.set_ylim(0, 1.01)
    ax.legend(fontsize=7, loc="lower right")
    return ax


def plot_score_hist(
    scores,
    classes,
    *,
    ax=None,
    bins: int = 60,
    normal: str = "normal",
    log_x: bool = True,
    order: Sequence[str] | None = None,
):
    """Histograms of anomaly scores, one outline per class, the normal class filled.

    Each histogram shows the fraction of its class in each bin (it sums to 1), so
    rare classes remain visible beside the many normal frames. ``log_x`` spaces the
    bins logarithmically (reconstruction errors span decades); non-positive scores
    fall back to linear bins. Fractions, not densities: on logarithmic bins a density
    divides by the bin's width, which flattens a class whose scores lie a decade
    above the rest to nearly nothing.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 3.4))
    scores = np.asarray(scores, dtype=np.float64).ravel()
    classes = np.asarray(classes).astype(str).ravel()
    if len(scores) != len(classes):
        raise ValueError(f"{len(scores)} scores but {len(classes)} class names")
    names = list(order) if order is not None else [normal] + sorted(set(classes) - {normal})
    finite = scores[np.isfinite(scores)]
    use_log = log_x and finite.size and finite.min() > 0
    if use_log:
        edges = np.geomspace(finite.min(), finite.max(), bins + 1)
        ax.set_xscale("log")
        # over a decade or two, label 1, 2 and 5 times each power of ten
        decades = np.log10(finite.max() / finite.min())
        subs = (1.0, 2.0, 5.0) if decades < 2.5 else (1.0,)
        ax.xaxis.set_major_locator(mpl.ticker.LogLocator(subs=subs))
        ax.xaxis.set_major_formatter(mpl.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(mpl.ticker.NullFormatter())
    else:
        edges = np.linspace(finite.min(), finite.max(), bins + 1)
    for name in names:
        sel = classes == name
        if not sel.any():
            continue
        weights = np.full(int(sel.sum()), 1.0 / sel.sum())
        if name == normal:
            ax.hist(
                scores[sel],
                bins=edges,
                weights=weights,
                color="0.75",
                label=f"{name} ({sel.sum()})",
            )
        else:
            ax.hist(
                scores[sel],
                bins=edges,
                weights=weights,
                histtype="step",
                lw=1.3,
                label=f"{name} ({sel.sum()})",
            )
    ax.set_xlabel("anomaly score (higher = more anomalous)")
    ax.set_ylabel("fraction of the class per bin")
    ax.legend(fontsize=7, ncol=2)
    return ax


def plot_bic(selection, *, ax=None):
    """BIC against the number of mixture components, the chosen count marked."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 3.0))
    ax.plot(selection.n_components, selection.bic, "o-", ms=4)
    ax.plot(
        [selection.best_n],
        [selection.bic[selection.best_index]],
        "o",
        ms=10,
        mfc="none",
        mec="C3",
        label=f"lowest BIC: {selection.best_n} components",
    )
    ax.set_xlabel("number of Gaussian components")
    ax.set_ylabel("BIC (lower is better)")
    ax.legend(fontsize=8)
    return ax


def plot_latent_3d(
    z3,
    labels=None,
    *,
    ax=None,
    s: float = 3,
    alpha: float = 0.6,
    title: str | None = None,
    max_points: int = 5000,
    seed: int = 0,
    legend_title: str | None = None,
    cmap: str | None = None,
):
    """A 3D scatter plot of latent codes reduced to three dimensions.

    ``labels`` colour the points: mixture components (ints) or class names (strings).
    The legend is titled ``legend_title``, by default "mixture component" for integer
    labels. At most ``max_points`` random points are drawn so the figure stays light.
    The colours cycle through the ten default colours, or through the colours of the
    qualitative map ``cmap`` (``"tab20"``: twenty labels without a repeat).
    """
    z3 = np.asarray(z3)
    if z3.ndim != 2 or z3.shape[1] != 3:
        raise ValueError(f"z3 must have shape (N, 3), got {z3.shape}")
    if ax is None:
        fig = plt.figure(figsize=(4.6, 4.2))
        ax = fig.add_subplot(projection="3d")
    idx = np.arange(len(z3))
    if len(idx) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(len(z3), max_points, False))
    if labels is None:
        ax.scatter(*z3[idx].T, s=s, alpha=alpha)
    else:
        labels = np.asarray(labels)
        for i, name in enumerate(_unique_in_order(labels)):
            sel = idx[labels[idx] == name]
            if cmap is None:
                color = f"C{i % 10}"
            else:
                colours = plt.get_cmap(cmap)
                color = colours(i % getattr(colours, "N", 256))
            ax.scatter(*z3[sel].T, s=s, alpha=alpha, color=color, label=str(name))
        if legend_title is None and np.issubdtype(labels.dtype, np.integer):
            legend_title = "mixture component"
        ax.legend(
            fontsize=7,
            markerscale=3,
            loc="upper left",
            title=legend_title,
            title_fontsize=7,
        )
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_zlabel("PC 3")
    if title:
        ax.set_title(title)
    return ax


def _unique_in_order(values) -> list:
    """Distinct values in order of first appearance (sorted when they are numbers)."""
    values = np.asarray(values)
    if values.dtype.kind in "iuf":
        return sorted(np.unique(values).tolist())
    seen: dict = {}
    for v in values.tolist():
        seen.setdefault(v, None)
    return list(seen)


def show_cluster_gallery(
    x,
    members: dict,
    *,
    counts: dict | None = None,
    size: float = 1.0,
    shared_scale: bool = True,
    suptitle: str | None = None,
):
    """Typical images of each cluster: one row per cluster, most typical first.

    ``members`` maps a cluster to image indices (e.g. from
    :func:`phbook.latent.typical_members`); ``counts`` (cluster -> size) labels rows.
    """
    images = _as_numpy_images(x)
    rows = [k for k in members if len(members[k])]
    if not rows:
        raise ValueError("members holds no images")
    ncols = max(len(members[k]) for k in rows)
    fig, axes = plt.subplots(
        len(rows), ncols, figsize=(size * ncols, size * len(rows)), squeeze=False
    )
    vmin = vmax = None
    if shared_scale:
        chosen = np.concatenate([images[members[k]] for k in rows])
        vmin, vmax = float(chosen.min()), float(chosen.max())
    for r, k in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(members[k]):
                ax.imshow(images[members[k][c]], vmin=vmin, vmax=vmax)
            else:
                ax.axis("off")
        label = f"cluster {k}"
        if counts is not None and k in counts:
            label += f"\n{counts[k]} frames"
        axes[r, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def show_reconstructions(
    x,
    recons: dict,
    *,
    titles: Sequence[str] | None = None,
    residual: bool = True,
    size: float = 1.1,
):
    """Images (top row), each model's reconstruction and, if ``residual``, the
    residual ``x - x_hat`` below it; one column per image.

    Images and reconstructions share one colour scale per column; residuals use a
    diverging map centred on zero, so structure the model missed stands out.
    """
    images = _as_numpy_images(x)
    rows: list[tuple[str, np.ndarray, str]] = [("input", images, "image")]
    for name, r in recons.items():
        r = _as_numpy_images(r)
        if r.shape != images.shape:
            raise ValueError(
                f"reconstruction {name!r} has shape {r.shape}, images {images.shape}"
            )
        rows.append((name, r, "image"))
        if residual:
            rows.append((f"{name}\nresidual", images - r, "residual"))
    n = len(images)
    fig, axes = plt.subplots(
        len(rows), n, figsize=(size * n, size * len(rows)), squeeze=False
    )
    lo = images.reshape(n, -1).min(1)
    hi = images.reshape(n, -1).max(1)
    res = [r for _, r, kind in rows if kind == "residual"]
    rmax = np.abs(np.stack(res)).reshape(len(res), n, -1).max(axis=(0, 2)) if res else None
    for i, (name, arr, kind) in enumerate(rows):
        for j in range(n):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if kind == "image":
                ax.imshow(arr[j], vmin=lo[j], vmax=hi[j])
            else:
                ax.imshow(arr[j], cmap="RdBu_r", vmin=-rmax[j], vmax=rmax[j])
            if i == 0 and titles is not None:
                ax.set_title(str(titles[j]), fontsize=7)
        axes[i, 0].set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    return fig


def compare_histograms(
    data: dict,
    *,
    ax=None,
    bins: int = 50,
    log_x: bool = False,
    logy: bool = False,
    xlabel: str = "",
    range_: tuple[float, float] | None = None,
):
    """Overlaid normalised histograms of one quantity in several samples (e.g. the
    Hillas length of training frames and of generated frames)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.0, 3.0))
    arrays = {k: np.asarray(v, dtype=np.float64).ravel() for k, v in data.items()}
    arrays = {k: v[np.isfinite(v)] for k, v in arrays.items()}
    allv = np.concatenate([v for v in arrays.values() if v.size])
    if allv.size == 0:
        raise ValueError("no finite values to plot")
    lo, hi = range_ if range_ is not None else (allv.min(), allv.max())
    if log_x:
        lo = max(lo, allv[allv > 0].min() if (allv > 0).any() else 1e-12)
        edges = np.geomspace(lo, hi, bins + 1)
        ax.set_xscale("log")
    else:
        edges = np.linspace(lo, hi, bins + 1)
    for i, (name, v) in enumerate(arrays.items()):
        style = (
            {"histtype": "stepfilled", "alpha": 0.35}
            if i == 0
            else {"histtype": "step", "lw": 1.4}
        )
        ax.hist(v, bins=edges, density=True, label=name, color=f"C{i}", **style)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    return ax


def plot_auc_vs_strength(table, *, ax=None, title: str | None = None):
    """ROC-AUC against anomaly strength, one line per class (from
    :func:`phbook.metrics.auc_by_strength`); 0.5 is chance."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.6, 3.2))
    for i, (name, row) in enumerate(table.iterrows()):
        ax.plot(
            table.columns.astype(float),
            row.values,
            "o-",
            ms=3,
            lw=1.2,
            color=f"C{i % 10}",
            label=str(name),
        )
    ax.axhline(0.5, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("anomaly strength (0 = faint, 1 = bright)")
    ax.set_ylabel("ROC-AUC against normal frames")
    low = np.nanmin(table.to_numpy()) if table.size else 0.5
    ax.set_ylim(min(0.3, np.floor(low * 10) / 10), 1.01)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    return ax


def show_source(obj):
    """The source code of a ``phbook`` function or class, as a highlighted code block.

    Chapters show the package's code this way instead of retyping it, so the code the
    reader sees is the code that runs.
    """
    import inspect

    from IPython.display import Markdown

    return Markdown(f"```python\n{inspect.getsource(obj).rstrip()}\n```")


def show_residuals(
    x,
    x_hat,
    titles: Sequence[str] | None = None,
    *,
    size: float = 1.3,
    cmap: str | None = None,
    residual_cmap: str = "RdBu_r",
    row_labels: Sequence[str] = ("image", "best match", "residual"),
    residual_limit: float | None = None,
):
    """Images, their reconstructions (or best generated matches) and the residuals.

    The layout of the anomaly-detection papers in astronomy: one column per image,
    rows *image*, *best match* and *residual* ``x - x_hat``. An image and its match
    share one colour scale, so brightness can be compared; residuals use a diverging
    map centred on zero with one symmetric scale for the whole row, so a large residual
    stands out wherever it is. ``residual_limit`` fixes that scale at
    ``+-residual_limit`` (larger residuals saturate), which shows faint residuals
    beside a strong one; default: the largest residual.
    """
    images, matches = _as_numpy_images(x), _as_numpy_images(x_hat)
    if images.shape != matches.shape:
        raise ValueError(
            f"x {images.shape} and x_hat {matches.shape} must have the same shape"
        )
    residuals = images - matches
    n = len(images)
    if residual_limit is not None and not residual_limit > 0:
        raise ValueError(f"residual_limit must be > 0, got {residual_limit!r}")
    limit = residual_limit or float(np.abs(residuals).max()) or 1.0
    fig, axes = plt.subplots(3, n, figsize=(size * n + 0.8, size * 3), squeeze=False)
    for j in range(n):
        vmin = float(min(images[j].min(), matches[j].min()))
        vmax = float(max(images[j].max(), matches[j].max()))
        for i, (img, kw) in enumerate(
            (
                (images[j], {"cmap": cmap or IMAGE_CMAP, "vmin": vmin, "vmax": vmax}),
                (matches[j], {"cmap": cmap or IMAGE_CMAP, "vmin": vmin, "vmax": vmax}),
                (residuals[j], {"cmap": residual_cmap, "vmin": -limit, "vmax": limit}),
            )
        ):
            ax = axes[i, j]
            im = ax.imshow(img, **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(row_labels[i], fontsize=8)
        if titles is not None:
            axes[0, j].set_title(str(titles[j]), fontsize=7)
    fig.colorbar(im, ax=axes[2, :].tolist(), fraction=0.02, pad=0.01, label="residual")
    return fig


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
    vmin: float | None = None,
    vmax: float | None = None,
):
    """One row of example images per class, the class name at the left of its row.

    ``x`` holds the images (N, H, W) and ``classes`` one name per image (e.g. a
    simulated set's ``images`` and ``classes``). ``order`` picks and orders the rows
    (default: order of first appearance); ``per_class`` images are drawn at random
    with ``seed`` (``None``: the first ones). ``transform`` is applied to each image
    before display (e.g. ``np.arcsinh`` for a high dynamic range). Each panel has its
    own colour scale unless ``vmin``/``vmax`` fix one for all (e.g. -1 and 1 for
    stamps scaled to [-1, 1] with a diverging colour map); the images are shown with
    the origin at the lower left.
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
            ax.imshow(img, cmap=cmap or IMAGE_CMAP, origin="lower", vmin=vmin, vmax=vmax)
        axes[r, 0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    return fig


def show_top_k(
    x,
    scores: dict,
    k: int = 8,
    *,
    labels: Sequence[str] | None = None,
    highlight: Sequence[int] = (),
    size: float = 0.9,
    cmap: str | None = None,
):
    """The ``k`` most anomalous images of each detector, one row per detector.

    ``scores`` is ``{detector name: anomaly scores}`` (higher = more anomalous) of the
    images ``x``; each panel is titled with the image's rank and, when given, its entry
    of ``labels`` (e.g. its class, or its frame number). Images whose index is in
    ``highlight`` get a cyan frame (e.g. known artefacts). Each panel has its own
    colour scale.
    """
    images = _as_numpy_images(x)
    if not scores:
        raise ValueError("scores is empty: give {detector name: anomaly scores}")
    k = max(1, min(int(k), len(images)))
    marked = set(int(i) for i in highlight)
    fig, axes = plt.subplots(
        len(scores), k, figsize=(size * k + 1.2, size * len(scores) + 0.2), squeeze=False
    )
    for row, (name, s) in zip(axes, scores.items(), strict=True):
        s = np.asarray(s, dtype=np.float64).ravel()
        if len(s) != len(images):
            raise ValueError(f"{name}: {len(s)} scores for {len(images)} images")
        order = np.argsort(-s, kind="stable")[:k]
        for rank, (ax, i) in enumerate(zip(row, order, strict=False), start=1):
            ax.imshow(images[i], cmap=cmap or IMAGE_CMAP)
            ax.set_xticks([])
            ax.set_yticks([])
            title = f"{rank}" + (f" {labels[i]}" if labels is not None else "")
            ax.set_title(title, fontsize=6)
            if i in marked:
                for spine in ax.spines.values():
                    spine.set_visible(True)
                    spine.set_color("cyan")
                    spine.set_linewidth(2.5)
        row[0].set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    return fig


def plot_top_k_recall(curves, *, ax=None, n_total: int | None = None, label="mergers"):
    """Recall in the top ``k`` against ``k``, one line per detector, chance dashed.

    ``curves`` maps detector names to the series of :func:`phbook.metrics.top_k_recall`
    (index ``k``). With ``n_total`` (the number of ranked images), the recall of a
    random ranking, ``k / n_total``, is drawn for comparison. ``label`` names what is
    recovered, for the axis label.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 3.6))
    if not curves:
        raise ValueError("curves is empty: give {detector name: top_k_recall series}")
    k_max = 1
    for name, series in curves.items():
        ks = np.asarray(series.index, dtype=float)
        ax.plot(ks, np.asarray(series, dtype=float), lw=1.6, label=name)
        k_max = max(k_max, int(ks.max()))
    if n_total is not None:
        ks = np.linspace(0, k_max, 50)
        ax.plot(ks, np.minimum(ks / n_total, 1), "k:", lw=1, label="random ranking")
    ax.set_xlabel("k (images inspected, most anomalous first)")
    ax.set_ylabel(f"fraction of {label} in the top k")
    ax.set_xlim(0, k_max)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    return ax
