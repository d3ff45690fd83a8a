"""Reading a score file back: the table of scores, the top frames, their images."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import select as _select
from ..io import pff
from ..io.hdf5 import open_h5
from .layout import _ROW_COLUMNS, FORMAT, ScoreError

__all__ = ["read_scores", "top_k", "top_distinct", "frames_of", "unusable_files"]

# ----------------------------------------------------------------------------------
# Reading scores back


def _check_scores(h5, path) -> None:
    if h5.attrs.get("format") != FORMAT:
        raise ScoreError(
            f"{path} is not a phbook score file (format {h5.attrs.get('format')!r}, "
            f"expected {FORMAT!r}); phbook score writes them"
        )


def _files_table(h5) -> pd.DataFrame:
    g = h5["files"]
    return pd.DataFrame(
        {
            "name": g["name"][:].astype(str),
            "run": g["run"][:].astype(str),
            "dome": g["dome"][:].astype(str),
            "module": g["module"][:],
            "pe_threshold": g["pe_threshold"][:],
            "n_scored": g["n_scored"][:],
        }
    )


def _rows_frame(h5, sel, files: pd.DataFrame) -> pd.DataFrame:
    cols = {name: h5[name][sel] for name in _ROW_COLUMNS}
    fi = cols.pop("file_index")
    idx = np.where(fi >= 0, fi, len(files))  # -1 (a name not in the table): blank
    blank = {"name": "", "run": "", "dome": "", "module": -1, "pe_threshold": np.nan}
    ext = pd.concat([files, pd.DataFrame([blank])], ignore_index=True)
    df = pd.DataFrame({"score": cols.pop("score")})
    df["file"] = ext["name"].to_numpy()[idx]
    df["offset"] = cols.pop("offset")
    df["row"] = cols.pop("row")
    df["time"] = cols.pop("time")
    df["label"] = cols.pop("label").astype(str)
    for name, values in cols.items():
        df[name] = values
    for name in ("run", "dome", "module", "pe_threshold"):
        df[name] = ext[name].to_numpy()[idx]
    df["file_index"] = fi
    return df


def read_scores(
    path: str | os.PathLike, rows: slice | np.ndarray | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``(table, attrs)`` of a score file: one row per frame (all, or ``rows``), with
    its file name, run, dome and module joined from the files table."""

    with open_h5(path, "a phbook score file") as h5:
        _check_scores(h5, path)
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in h5.attrs.items()}
        files = _files_table(h5)
        sel: Any = slice(None) if rows is None else rows
        if isinstance(sel, np.ndarray):
            order = np.argsort(sel)
            df = _rows_frame(h5, np.sort(sel), files)
            df = df.iloc[np.argsort(order)].reset_index(drop=True)
        else:
            df = _rows_frame(h5, sel, files)
    return df, attrs


def top_k(path: str | os.PathLike, k: int = 50, chunk_rows: int = 1 << 20) -> pd.DataFrame:
    """The ``k`` highest-scoring frames of a score file, highest first, with their
    file, offset, row and time; read in chunks, so memory is bounded by ``chunk_rows``."""

    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    best_s = np.empty(0, np.float32)
    best_i = np.empty(0, np.int64)
    with open_h5(path, "a phbook score file") as h5:
        _check_scores(h5, path)
        n = h5["score"].shape[0]
        for a in range(0, n, chunk_rows):
            s = h5["score"][a : a + chunk_rows]
            s = np.where(np.isfinite(s), s, -np.inf)
            best_s = np.concatenate([best_s, s])
            best_i = np.concatenate([best_i, np.arange(a, a + len(s))])
            if len(best_s) > k:
                keep = np.argpartition(-best_s, k - 1)[:k]
                best_s, best_i = best_s[keep], best_i[keep]
    order = np.lexsort((best_i, -best_s))
    rows = best_i[order]
    df, _ = read_scores(path, rows)
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    df.insert(1, "score_row", rows)
    return df


def frames_of(path: str | os.PathLike, table: pd.DataFrame) -> np.ndarray:
    """The raw images of rows of a score table (e.g. from :func:`top_k`), read back
    from the source: the selection's rows, or the PFF files at their offsets."""

    with open_h5(path, "a phbook score file") as h5:
        _check_scores(h5, path)
        attrs = dict(h5.attrs)
    kind, source, root = attrs["source_kind"], attrs["source"], attrs["root"]
    dp = str(attrs["dp"])
    prod = pff.data_product(dp)
    if kind == "h5":
        if not os.path.exists(source):
            raise FileNotFoundError(f"the source selection {source} of {path} is gone")
        images, _, meta = _select.load(source, table["row"].to_numpy())
        _check_same_frames(
            path,
            source,
            table["row"].to_numpy(),
            "row",
            meta["time"].to_numpy(np.float64),
            meta["quabo"].to_numpy(np.int64),
            table,
            np.arange(len(table)),
        )
        return images
    out = np.empty((len(table), *prod.shape), prod.pixel_dtype)
    names = table["file"].astype(str).to_numpy()
    offsets = table["offset"].to_numpy(np.int64)
    for name in np.unique(names):
        rows = np.flatnonzero(names == name)
        file = Path(root) / name
        if not file.exists():
            raise FileNotFoundError(f"{file} (listed in {path}) does not exist")
        got, time, quabo = _read_at(file, dp, offsets[rows])
        _check_same_frames(path, file, offsets[rows], "byte", time, quabo, table, rows)
        out[rows] = got
    return out


def _check_same_frames(path, source, where, unit, time, quabo, table, rows) -> None:
    """Raise unless the frames read back have the time and quabo the score file
    recorded for them (a source replaced or redrawn since it was scored)."""
    want_t = table["time"].to_numpy(np.float64)[rows]
    want_q = table["quabo"].to_numpy(np.int64)[rows]
    moved = ~((time == want_t) | (np.isnan(time) & np.isnan(want_t)))
    moved |= quabo != want_q
    if moved.any():
        i = int(np.flatnonzero(moved)[0])
        raise ScoreError(
            f"{source}: the frame at {unit} {int(where[i])} is not the one {path} "
            f"scored there (time {time[i]!r} against {want_t[i]!r}, quabo "
            f"{int(quabo[i])} against {int(want_q[i])}): the source has changed since "
            "it was scored; score it again"
        )


def _read_at(
    file: Path, dp: str, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images, times and quabos of the frames at byte ``offsets`` of one PFF file
    (in that order)."""
    try:
        info = pff.scan_file(file, dp)
    except pff.PFFError:
        info = None
    if info is not None and info.fixed and not (offsets % info.frame_size).any():
        frames = pff.read_frames_at(
            file, offsets // info.frame_size, dp=dp, info=info, strict=False
        )
        if len(frames) == len(np.unique(offsets)):
            pos = np.searchsorted(frames.offsets, offsets)
            if (frames.offsets[pos] == offsets).all():
                return frames.images[pos], frames.time[pos], frames.quabo[pos]
    images, times, quabos = [], [], []
    for offset in offsets:  # frames after damage that shifted them: one by one
        frames = pff.read_frames(
            file, dp=dp, offset=int(offset), max_frames=1, strict=True, warn=False
        )
        if not len(frames) or int(frames.offsets[0]) != int(offset):
            raise ScoreError(f"{file}: no frame at byte {offset}; the file has changed")
        images.append(frames.images[0])
        times.append(frames.time[0])
        quabos.append(frames.quabo[0])
    return np.stack(images), np.asarray(times, np.float64), np.asarray(quabos, np.int64)


def top_distinct(
    path: str | os.PathLike, k: int = 50, chunk_rows: int = 1 << 20
) -> tuple[pd.DataFrame, np.ndarray]:
    """The ``k`` highest-scoring frames whose pixels differ from every higher one, with
    their images; column ``copies`` counts the frames with the same pixels among those
    examined (a lower bound).

    Identical frames occur in simulated archives that resample a pool of frames
    (:class:`phbook.sim.archive.PooledSource`), and in real data when a frame was
    written twice.
    """

    with open_h5(path, "a phbook score file") as h5:
        _check_scores(h5, path)
        n = int(h5["score"].shape[0])
    m = min(n, 4 * k)
    while True:
        table = top_k(path, m, chunk_rows)
        images = frames_of(path, table)
        keys = [img.tobytes() for img in images]
        first: dict[bytes, int] = {}
        copies: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            first.setdefault(key, i)
            copies[key] = copies.get(key, 0) + 1
        rows = sorted(first.values())
        if len(rows) >= k or m >= n:
            break
        m = min(n, 4 * m)
    rows = rows[:k]
    out = table.iloc[rows].reset_index(drop=True)
    out["copies"] = [copies[keys[i]] for i in rows]
    out["rank"] = np.arange(1, len(out) + 1)
    return out, images[rows]


def unusable_files(path: str | os.PathLike) -> list[tuple[str, str]]:
    """``(file, why)`` of every file of a score file from which no frame was scored:
    the first damage found in it (a header that is not the product's, bytes that are
    no frame at all, ...), or that it is empty."""
    with open_h5(path, "a phbook score file") as h5:
        _check_scores(h5, path)
        files = _files_table(h5)
        root = str(h5.attrs.get("root", ""))
        dmg = h5["damage"]
        d_file = dmg["file_index"][:]
        d_off = dmg["offset"][:]
        d_msg = dmg["message"][:].astype(str)
        d_len = dmg["skipped_bytes"][:]
    out = []
    for i, row in files.iterrows():
        if row["n_scored"]:
            continue
        hit = np.flatnonzero(d_file == i)
        file = os.path.join(root, row["name"]) if root else row["name"]
        if hit.size:
            j = hit[0]
            more = f" ({hit.size} damaged stretches)" if hit.size > 1 else ""
            why = f"at byte {d_off[j]}: {d_msg[j]}{more}"
            if hit.size == 1 and d_off[j] == 0:
                why += f"; all {d_len[j]:,} bytes are unreadable"
        elif os.path.exists(file) and os.path.getsize(file) == 0:
            why = "the file is empty (0 bytes)"
        else:
            why = "no frames"
        out.append((file, why))
    return out
