"""Select training data from a PANOSETI archive into one HDF5 file.

A selection is a :class:`Query` (run type, pulse-height threshold, domes, modules, data
product) and a number of frames ``n`` drawn **uniformly at random, without
replacement, from every frame that matches**, the *population*, which may be far larger
than memory:

1. The population is counted from file sizes alone (every frame of a fixed-width PFF
   file has the same size), without reading a frame.
2. How many frames come from each file follows the multivariate hypergeometric
   distribution, which is exactly the per-file count of a uniform draw of ``n`` from the
   whole population; the frames within a file are then a uniform draw of that many.
3. Only the chosen frames are read, file by file and window by window, and written in
   chunks; memory stays bounded by the chunk sizes, not by the archive.

The output is written to a temporary name and renamed when complete, so an interrupted
selection never leaves a half file under the final name. Its layout (read it with
:func:`load`)::

    images        (N, 16, 16) int16 (the product's shape and pixel type), chunked, gzip
    labels        (N,) class names: the simulation truth where the archive has it,
                  "unknown" for real data
    meta/         run, dome, module, quabo, pe_threshold, time, time_flags, file,
                  offset, strength (one column each, N rows)
    attrs         query (JSON), seed, population, n_requested, n_selected, n_damaged,
                  population_files, created, phbook_version, archive, dp, format

Strings (labels, run, dome, file) are fixed-length ASCII bytes, which any HDF5 reader
opens; :func:`load` decodes them. ``file`` is relative to the archive root, ``offset``
is the frame's byte offset in it, ``time`` is Unix seconds (see
:func:`phbook.io.pff.frame_times`, whose flags are in ``time_flags``).

Frames are stored in archive order (run, module, seqno, offset), so shuffle before
training on a prefix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import __version__
from . import config as _config
from .io import archive as _archive
from .io import pff, writing
from .io.hdf5 import open_h5

#: What to do once a failed write is fixed.
RERUN = "then run the same command again"

__all__ = ["Query", "FORMAT", "population", "draw", "select", "load", "read_attrs"]

FORMAT = "phbook-selection-1"
_META_COLUMNS = (
    "run",
    "dome",
    "module",
    "quabo",
    "pe_threshold",
    "time",
    "time_flags",
    "file",
    "offset",
    "strength",
)


@dataclass(frozen=True)
class Query:
    """Which frames of an archive form the population.

    ``run_type``: e.g. ``"sci-data"`` (None: any). ``pe_threshold``: the run's
    pulse-height threshold in photoelectrons, one value or a sequence of values (None:
    any); ``pe_range``: ``(low, high)``, inclusive, instead. ``domes``: keep frames of
    modules in these domes (case ignored; None: all). ``min_domes``: keep runs in which
    modules of at least this many domes recorded frames of the product (2 = the
    coincidence runs with both Lick domes; the default 0 keeps runs whose domes are
    unknown, e.g. loose real files). ``modules``: module IDs to keep (None: all).
    ``dp``: the data product.
    """

    run_type: str | None = "sci-data"
    pe_threshold: float | tuple[float, ...] | None = None
    pe_range: tuple[float, float] | None = None
    domes: tuple[str, ...] | None = None
    min_domes: int = 0
    modules: tuple[int, ...] | None = None
    dp: str = "ph256"

    def __post_init__(self):
        pff.data_product(self.dp)
        if isinstance(self.domes, str):
            object.__setattr__(self, "domes", (self.domes,))
        if self.domes is not None:
            object.__setattr__(self, "domes", tuple(str(d) for d in self.domes))
        if self.modules is not None:
            object.__setattr__(self, "modules", tuple(int(m) for m in self.modules))
        thr = self.pe_threshold
        if thr is not None and not isinstance(thr, (int, float)):
            object.__setattr__(self, "pe_threshold", tuple(float(t) for t in thr))
        if self.pe_range is not None:
            lo, hi = (float(x) for x in self.pe_range)
            if lo > hi:
                raise ValueError(f"pe_range low {lo} is above high {hi}")
            object.__setattr__(self, "pe_range", (lo, hi))
        if self.min_domes < 0:
            raise ValueError(f"min_domes must be >= 0, got {self.min_domes}")

    def to_json(self) -> str:
        """The query as JSON (stored in the ``query`` attribute of a selection)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Query:
        d = json.loads(text)
        for key in ("domes", "modules", "pe_threshold", "pe_range"):
            if isinstance(d.get(key), list):
                d[key] = tuple(d[key])
        return cls(**d)

    def _threshold_mask(self, thr: pd.Series) -> np.ndarray:
        vals = thr.to_numpy(dtype=float)
        keep = np.ones(len(vals), dtype=bool)
        t = self.pe_threshold
        if t is not None:
            want = np.atleast_1d(np.asarray(t, dtype=float))
            keep &= np.isclose(vals[:, None], want[None, :], rtol=0, atol=1e-6).any(1)
        if self.pe_range is not None:
            lo, hi = self.pe_range
            keep &= (vals >= lo - 1e-9) & (vals <= hi + 1e-9)
        return keep

    def explain(self, files: pd.DataFrame) -> str:
        """Which condition of the query removed the last frames of ``files`` (an
        :meth:`Archive.files` table), as the option that set it and what the data
        holds instead, e.g. ``--min-domes 2: these runs have 1 dome``; "" when the
        query keeps frames."""

        def frames(df):
            return int(df["n_frames"].sum())

        def values(col, df, fmt=str):
            vals = sorted({fmt(v) for v in df[col] if not _missing(v)})
            return ", ".join(map(str, vals)) if vals else "none recorded"

        df = files
        steps = [
            (
                lambda d: d[d["dp"] == self.dp],
                f"--dp {self.dp}",
                lambda d: f"the files hold {values('dp', d)}",
            ),
            (
                lambda d: d if self.run_type is None else d[d["run_type"] == self.run_type],
                f"--run-type {self.run_type}",
                lambda d: (
                    (
                        f"these runs are of type {values('run_type', d)}"
                        if _known(d["run_type"])
                        else "these files have no run type (no data_config.json)"
                    )
                    + "; --run-type any takes every run"
                ),
            ),
            (
                lambda d: d[self._threshold_mask(d["pe_threshold"])],
                "--pe-threshold "
                + " ".join(f"{t:g}" for t in np.atleast_1d(self.pe_threshold or []))
                if self.pe_range is None
                else f"--pe-range {self.pe_range[0]:g} {self.pe_range[1]:g}",
                lambda d: (
                    "these runs have thresholds "
                    f"{values('pe_threshold', d, lambda v: f'{float(v):g}')} PE"
                    if _known(d["pe_threshold"])
                    else "these files have no threshold (no data_config.json)"
                ),
            ),
            (
                lambda d: d[d["n_domes"] >= self.min_domes],
                f"--min-domes {self.min_domes}",
                lambda d: (
                    f"these runs have {values('n_domes', d, int)} dome(s) with frames"
                ),
            ),
            (
                lambda d: (
                    d
                    if self.domes is None
                    else d[d["dome"].str.lower().isin({x.lower() for x in self.domes})]
                ),
                f"--domes {' '.join(self.domes or ())}",
                lambda d: f"the modules are in domes {values('dome', d)}",
            ),
            (
                lambda d: d if self.modules is None else d[d["module"].isin(self.modules)],
                f"--modules {' '.join(map(str, self.modules or ()))}",
                lambda d: f"the modules are {values('module', d, int)}",
            ),
        ]
        if not len(df):
            return "the archive holds no PFF files"
        for keep, option, holds in steps:
            after = keep(df)
            if frames(after) == 0 and frames(df) > 0:
                return f"{option}: {holds(df)}"
            df = after
        return "" if frames(df) else "the files hold no frames"

    def filter(self, files: pd.DataFrame) -> pd.DataFrame:
        """The rows of an :meth:`Archive.files` table that the query keeps."""
        df = files[files["dp"] == self.dp]
        if self.run_type is not None:
            df = df[df["run_type"] == self.run_type]
        df = df[self._threshold_mask(df["pe_threshold"])]
        df = df[df["n_domes"] >= self.min_domes]
        if self.domes is not None:
            want = {d.lower() for d in self.domes}
            df = df[df["dome"].str.lower().isin(want)]
        if self.modules is not None:
            df = df[df["module"].isin(self.modules)]
        return df.reset_index(drop=True)


def _known(col: pd.Series) -> bool:
    return bool(col.map(lambda v: not _missing(v)).any())


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or v == ""


def _as_query(query: Query | dict | None) -> Query:
    if query is None:
        return Query()
    if isinstance(query, Query):
        return query
    if isinstance(query, dict):
        return Query(**query)
    raise TypeError(f"query must be a Query or a dict, got {type(query).__name__}")


def population(
    archive: _archive.Archive | str | os.PathLike,
    query: Query | dict | None = None,
    *,
    strict: bool = True,
) -> pd.DataFrame:
    """The files of the population with their frame counts (``n_frames``).

    Files that are not fixed-width (not written by the DAQ, or whose first frame is
    damaged) are counted by a scan, which raises at damage when ``strict``. Empty
    files are dropped.
    """
    if not isinstance(archive, _archive.Archive):
        archive = _archive.Archive(archive)
    q = _as_query(query)
    df = q.filter(archive.files())
    for i in np.flatnonzero(~df["fixed"].to_numpy(dtype=bool)):
        path = df.at[i, "path"]
        chunks = pff.iter_chunks(path, 1 << 16, dp=q.dp, strict=strict)
        df.at[i, "n_frames"] = sum(len(c) for c in chunks)
    return df[df["n_frames"] > 0].reset_index(drop=True)


def draw(
    counts: Sequence[int] | np.ndarray, n: int, seed: int | np.random.Generator = 0
) -> list[np.ndarray]:
    """Sorted frame indices to take from each file: a uniform random ``n``-subset of
    all ``sum(counts)`` frames, without replacement, in memory O(n + max(counts))."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if n < 0 or n > total:
        raise ValueError(f"cannot draw n={n} frames from a population of {total}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if len(counts) == 0:
        return []
    per_file = rng.multivariate_hypergeometric(counts, n, method="marginals")
    return [
        np.sort(rng.choice(int(c), size=int(k), replace=False))
        if k
        else np.empty(0, np.int64)
        for c, k in zip(counts, per_file, strict=True)
    ]


class _Buffer:
    """Accumulates selected frames and writes them to HDF5 in whole chunks."""

    def __init__(
        self,
        h5,
        n: int,
        prod: pff.DataProduct,
        str_lens: dict[str, int],
        chunk: int,
        buffer_frames: int,
        out: str | os.PathLike | None = None,
    ):
        self.h5, self.n, self.prod = h5, n, prod
        self.out = out if out is not None else h5.filename
        self.written = 0
        self.parts: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        self.pending = 0
        self.buffer_frames = buffer_frames
        c = max(1, min(chunk, n))
        kw = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
        h5.create_dataset(
            "images",
            (n, *prod.shape),
            prod.pixel_dtype,
            chunks=(c, *prod.shape),
            maxshape=(None, *prod.shape),
            **kw,
        )
        h5.create_dataset(
            "labels", (n,), f"S{str_lens['label']}", chunks=(c,), maxshape=(None,), **kw
        )
        g = h5.create_group("meta")
        dtypes = {
            "run": f"S{str_lens['run']}",
            "dome": f"S{str_lens['dome']}",
            "module": np.int16,
            "quabo": np.int8,
            "pe_threshold": np.float32,
            "time": np.float64,
            "time_flags": np.uint8,
            "file": f"S{str_lens['file']}",
            "offset": np.int64,
            "strength": np.float32,
        }
        for name in _META_COLUMNS:
            g.create_dataset(name, (n,), dtypes[name], chunks=(c,), maxshape=(None,), **kw)

    def add(self, images: np.ndarray, cols: dict[str, np.ndarray]) -> None:
        self.parts.append((images, cols))
        self.pending += len(images)
        if self.pending >= self.buffer_frames:
            self.flush()

    def flush(self) -> None:
        if not self.parts:
            return
        images = np.concatenate([p[0] for p in self.parts])
        k = len(images)
        # HDF5 must not meet a full disk (it may crash): check the room first
        writing.reserve(self.out, images.nbytes + 64 * k, RERUN)
        sl = slice(self.written, self.written + k)
        self.h5["images"][sl] = images
        self.h5["labels"][sl] = np.concatenate([p[1]["label"] for p in self.parts])
        for name in _META_COLUMNS:
            self.h5["meta"][name][sl] = np.concatenate([p[1][name] for p in self.parts])
        self.written += k
        self.parts, self.pending = [], 0

    def finish(self) -> None:
        self.flush()
        if self.written != self.n:
            self.h5["images"].resize(self.written, axis=0)
            self.h5["labels"].resize((self.written,))
            for name in _META_COLUMNS:
                self.h5["meta"][name].resize((self.written,))


def _enc(values, width: int) -> np.ndarray:
    return np.asarray(values, dtype=object).astype(str).astype(f"S{width}")


def select(
    archive: _archive.Archive | str | os.PathLike,
    out: str | os.PathLike,
    n: int | None,
    query: Query | dict | None = None,
    *,
    seed: int = 0,
    strict: bool = True,
    overwrite: bool = False,
    chunk_frames: int = 1024,
    buffer_frames: int = 16384,
    progress: bool | None = None,
) -> Path:
    """Draw ``n`` frames uniformly at random from the query's population and write
    them to the HDF5 file ``out`` (layout in the module docstring); returns its path.
    ``n=None`` takes the whole population. An empty population raises naming the
    condition of the query that removed its last frames.

    Reproducible: the same archive, query, ``n`` and ``seed`` select the same frames.
    ``strict=True`` raises at a damaged chosen frame (naming file and offset) and
    leaves no output; ``strict=False`` skips it and counts it in the ``n_damaged``
    attribute (the file then has fewer than ``n`` frames).
    """
    from tqdm.auto import tqdm

    if not isinstance(archive, _archive.Archive):
        archive = _archive.Archive(archive)
    out = Path(out)
    # one PFF file is never the output, even with overwrite
    writing.check_output(out, {"PFF file": archive.file}, overwrite=overwrite)
    q = _as_query(query)
    prod = pff.data_product(q.dp)
    pop = population(archive, q, strict=strict)
    total = int(pop["n_frames"].sum())
    if total == 0:
        why = q.explain(archive.files()) or "no frames could be read"
        raise ValueError(f"the query selects no frames of {archive.root}: {why}")
    if n is None:
        n = total  # the whole population
    if n > total:
        raise ValueError(
            f"the query selects {total:,} frames in {len(pop)} file(s) of "
            f"{archive.root}; cannot draw -n {n:,} (-n all takes them all)"
        )
    picks = draw(pop["n_frames"].to_numpy(), n, seed)
    labels = {_archive.UNKNOWN_LABEL}
    for row, idx in zip(pop.itertuples(index=False), picks, strict=True):
        if len(idx) and row.has_truth:
            labels.update(_archive.truth_class_names(row.path))
    lens = {
        "label": max(map(len, labels)),
        "run": max([1, *pop["run"].map(len)]),
        "dome": max([1, *pop["dome"].map(len)]),
        "file": max([1, *pop["file"].map(len)]),
    }
    try:
        writing.before_write(out.parent)
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise writing.write_error(out.parent, exc, RERUN) from None
    show = _config.show_progress() if progress is None else progress
    lost = 0  # chosen frames found damaged when read (fixed-width files only)
    with writing.h5_create(out, RERUN) as h5:
        buf = _Buffer(h5, n, prod, lens, chunk_frames, buffer_frames, out)
        with tqdm(total=n, unit="frame", desc="selecting", disable=not show) as bar:
            for row, idx in zip(pop.itertuples(index=False), picks, strict=True):
                if not len(idx):
                    continue
                frames, kept = _read_chosen(row, idx, prod, strict)
                lost += len(idx) - len(frames)
                meta = _archive.frame_meta(
                    frames, row._asdict(), kept if row.has_truth else None
                )
                cols = {
                    "label": _enc(meta["label"], lens["label"]),
                    "run": _enc(meta["run"], lens["run"]),
                    "dome": _enc(meta["dome"], lens["dome"]),
                    "file": _enc(meta["file"], lens["file"]),
                }
                for name in (
                    "module",
                    "quabo",
                    "pe_threshold",
                    "time",
                    "time_flags",
                    "offset",
                    "strength",
                ):
                    cols[name] = meta[name].to_numpy()
                buf.add(frames.images, cols)
                bar.update(len(idx))
        buf.finish()
        h5.attrs.update(
            {
                "format": FORMAT,
                "query": q.to_json(),
                "seed": int(seed),
                "population": total,
                "n_requested": int(n),
                "n_selected": int(buf.written),
                "n_damaged": int(lost),
                "population_files": len(pop),
                "archive": str(archive.root),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "phbook_version": __version__,
                "dp": prod.name,
            }
        )
    return out


def _read_chosen(
    row: Any, idx: np.ndarray, prod: pff.DataProduct, strict: bool
) -> tuple[pff.Frames, np.ndarray]:
    """Frames ``idx`` of the file of ``row`` and the indices actually read (a
    damaged chosen frame of a fixed-width file is left out unless ``strict``; files
    that are not fixed-width were counted by a scan that skipped their damage)."""
    info = pff.FileInfo(
        row.path,
        row.dp,
        int(row.size),
        int(row.frame_size),
        bool(row.fixed),
        int(row.n_frames),
        int(row.size) - int(row.n_frames) * int(row.frame_size),
    )
    frames = pff.read_frames_at(row.path, idx, dp=prod.name, info=info, strict=strict)
    if len(frames) == len(idx):
        return frames, idx
    kept = frames.offsets // info.frame_size if info.fixed else idx[: len(frames)]
    return frames, kept


def read_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """The attributes of a selection file (``query`` parsed from JSON)."""

    with open_h5(path, "a phbook selection file") as h5:
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in h5.attrs.items()}
    if attrs.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a phbook selection (format {attrs.get('format')!r}, expected "
            f"{FORMAT!r}); phbook select writes them"
        )
    if "query" in attrs:
        attrs["query"] = json.loads(attrs["query"])
    return attrs


def load(
    path: str | os.PathLike, rows: slice | Sequence[int] | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """``(images, labels, meta)`` of a selection file, all rows or ``rows`` of them.

    ``images`` keeps the stored pixel type (int16 pulse heights); ``labels`` are str;
    ``meta`` is a DataFrame of the ``meta/`` columns.
    """

    path = Path(path)
    with open_h5(path, "a phbook selection file") as h5:
        if h5.attrs.get("format") != FORMAT:
            raise ValueError(
                f"{path} is not a phbook selection file (format "
                f"{h5.attrs.get('format')!r}, expected {FORMAT!r})"
            )
        n = h5["images"].shape[0]
        order = None
        if rows is None:
            sel: Any = slice(None)
        elif isinstance(rows, slice):
            sel = rows
        else:
            r = np.asarray(rows, dtype=np.int64)
            if r.ndim != 1:
                raise ValueError("rows must be a slice or a 1-D sequence of indices")
            r = np.where(r < 0, r + n, r)
            if r.size and (r.min() < 0 or r.max() >= n):
                raise IndexError(f"rows out of range for {n} frames in {path}")
            sel, order = np.unique(r, return_inverse=True)
        images = h5["images"][sel]
        labels = h5["labels"][sel].astype(str)
        meta = {}
        for name in h5["meta"]:
            col = h5["meta"][name][sel]
            meta[name] = col.astype(str) if col.dtype.kind == "S" else col
    if order is not None:
        images, labels = images[order], labels[order]
        meta = {k: v[order] for k, v in meta.items()}
    cols = [c for c in _META_COLUMNS if c in meta] + [
        c for c in meta if c not in _META_COLUMNS
    ]
    return images, labels, pd.DataFrame({c: meta[c] for c in cols})
