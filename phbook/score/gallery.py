"""The image gallery of the most anomalous frames (``phbook top -o``).

Each panel is titled with the frame's rank and score, its file (start time and
sequence number of a PANOSETI name), byte offset, module and quabo, and UTC time, so
that two frames of different files never read alike and each can be found again in
the raw data. Drawn on a bare ``Figure`` (no pyplot): called from Python or a
notebook it leaves the session's matplotlib backend, and its open figures, as they
were.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .. import plotting
from ..io import pff, writing
from ..io.archive import utc_iso

__all__ = ["draw_gallery", "file_label"]


def file_label(file: str, width: int = 26) -> str:
    """A short label of a frame's file for a gallery panel: its start time and
    sequence number for a PANOSETI name (module and quabo are shown beside it), else
    the name cut around its middle."""
    name = Path(file).name
    try:
        parts = pff.parse_filename(name)
        return f"{parts.start:%Y-%m-%dT%H:%M:%S} s{parts.seqno}"
    except pff.PFFError:
        pass
    if len(name) <= width:
        return name
    keep = (width - 1) // 2
    return name[:keep] + "~" + name[-(width - 1 - keep) :]


def draw_gallery(
    table: pd.DataFrame,
    images: np.ndarray,
    path: str | os.PathLike,
    *,
    title: str,
    ncols: int = 10,
    dpi: int = 120,
    then: str = "",
) -> Path:
    """Write the gallery of the frames of ``table`` (rows of
    :func:`~phbook.score.top_k` or :func:`~phbook.score.top_distinct`, whose
    ``copies`` column, when present, is shown) and their ``images`` to ``path``, in
    the format its suffix names (PNG by default), whole or not at all."""
    copies = table["copies"] if "copies" in table else pd.Series(1, index=table.index)
    titles = [
        f"#{r.rank} {r.score:.3g}"
        + (f" x{n}" if n > 1 else "")
        + f"\n{file_label(str(r.file))}\n@{r.offset} m{r.module} q{r.quabo}"
        + f"\n{utc_iso(r.time)[11:23]}"
        for r, n in zip(table.itertuples(index=False), copies, strict=True)
    ]
    fig = plotting.show_images(
        images,
        titles=titles,
        ncols=ncols,
        size=1.9,
        suptitle=title,
        title_fontsize=6,
        layout="constrained",
        pyplot=False,
    )
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    with writing.atomic_write(path, then) as f:
        fig.savefig(f, format=fmt, dpi=dpi, bbox_inches="tight")
    return path
