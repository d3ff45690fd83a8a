"""The plan of a scoring run: the source cut into parts (byte ranges of PFF files or
row ranges of a selection), counted from file sizes without reading a frame."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import select as _select
from ..errors import ModelFileError
from ..io import archive as _archive
from ..io import pff
from .layout import ScoreError

__all__ = ["Part", "Plan", "plan_source"]

# ----------------------------------------------------------------------------------
# The plan


@dataclass(frozen=True)
class Part:
    """One unit of work: a byte range of a PFF file or a row range of a selection.

    A PFF part owns the good frames whose first byte lies in ``[start, stop)``
    (``stop = -1``: to the end of the file); a selection part owns rows
    ``[start, stop)``.
    """

    index: int
    kind: str  #: "pff" or "h5"
    path: str
    file_index: int  #: row of the files table (PFF parts); -1 for selection parts
    start: int
    stop: int
    frame_size: int  #: bytes per frame of a fixed-width file (0: unknown)
    n_frames: int  #: frames expected (from sizes; damaged files may hold fewer)
    dp: str
    has_truth: bool = False


@dataclass
class Plan:
    """What will be scored: the parts in order, and the table of files they come from."""

    source: str
    kind: str  #: "pff" (one file), "archive" (a folder) or "h5" (a selection)
    root: str  #: file names in the files table are relative to this folder
    dp: str
    files: pd.DataFrame  #: name, run, dome, module, pe_threshold (+ path, size)
    parts: list[Part]
    label_width: int
    query: str = ""
    file_lookup: dict[str, int] = field(default_factory=dict, repr=False)
    #: what tells one drawing of a selection from another written to the same path
    #: (its creation time, seed, query and counts); empty for PFF sources, whose file
    #: names and sizes are in the signature
    identity: str = ""

    @property
    def n_frames(self) -> int:
        return int(sum(p.n_frames for p in self.parts))

    @property
    def image_shape(self) -> tuple[int, int]:
        return pff.data_product(self.dp).shape

    def signature(self) -> dict[str, Any]:
        """What must not change between an interrupted run and its resumption."""
        sizes = self.files["size"].astype(int).tolist() if "size" in self.files else []
        return {
            "source": os.path.abspath(self.source),
            "kind": self.kind,
            "dp": self.dp,
            "files": self.files["name"].tolist(),
            "sizes": sizes,
            "parts": [[p.file_index, p.start, p.stop] for p in self.parts],
            "query": self.query,
            "identity": self.identity,
        }


def _file_rows(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "name": table["file"].astype(str).to_numpy(),
            "run": table["run"].astype(str).to_numpy(),
            "dome": table["dome"].astype(str).to_numpy(),
            "module": table["module"].astype(int).to_numpy(),
            "pe_threshold": table["pe_threshold"].astype(float).to_numpy(),
            "path": table["path"].astype(str).to_numpy(),
            "size": table["size"].astype(np.int64).to_numpy(),
            "frame_size": table["frame_size"].astype(np.int64).to_numpy(),
            "n_frames": table["n_frames"].astype(np.int64).to_numpy(),
            "fixed": table["fixed"].astype(bool).to_numpy(),
            "has_truth": table["has_truth"].astype(bool).to_numpy(),
        }
    )


def _pff_parts(files: pd.DataFrame, dp: str, part_frames: int) -> list[Part]:
    prod = pff.data_product(dp)
    parts: list[Part] = []
    for i, f in enumerate(files.itertuples(index=False)):
        if f.size == 0:
            continue
        if f.fixed and f.frame_size > 0:
            n = int(f.n_frames) + (1 if f.size % f.frame_size else 0)
            for a in range(0, max(n, 1), part_frames):
                b = min(n, a + part_frames)
                stop = -1 if b >= n else b * int(f.frame_size)
                parts.append(
                    Part(
                        len(parts),
                        "pff",
                        f.path,
                        i,
                        a * int(f.frame_size),
                        stop,
                        int(f.frame_size),
                        b - a,
                        dp,
                        bool(f.has_truth),
                    )
                )
        else:  # not fixed-width (or damaged at its start): one part, read to the end
            parts.append(
                Part(
                    len(parts),
                    "pff",
                    f.path,
                    i,
                    0,
                    -1,
                    0,
                    int(f.size) // prod.frame_size,
                    dp,
                    bool(f.has_truth),
                )
            )
    return parts


def _label_width(files: pd.DataFrame) -> int:
    names = {_archive.UNKNOWN_LABEL}
    for path in files.loc[files["has_truth"], "path"]:
        names.update(_archive.truth_class_names(path))
    return max(map(len, names))


def _is_selection(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in (".h5", ".hdf5", ".hdf")


def plan_source(
    source: str | os.PathLike,
    *,
    dp: str | None = None,
    query: Any = None,
    part_frames: int = 1 << 20,
) -> Plan:
    """The plan of scoring ``source``: a PFF file, a run folder or archive, or an HDF5
    selection. ``dp`` keeps files of that product (default: the only one present);
    ``query`` (a :class:`phbook.select.Query` or dict) keeps the runs it selects."""
    if part_frames < 1:
        raise ValueError(f"part_frames must be at least 1, got {part_frames}")
    src = Path(source)
    if _is_selection(src):
        if query is not None:
            raise ScoreError(
                f"{src}: a query selects runs of an archive, not rows of an "
                "HDF5 selection; score the archive instead"
            )
        return _plan_selection(src, dp, part_frames)
    kind, root, table = _archive.source_files(src, dp)
    counts = table["dp"].value_counts().to_dict()
    if dp is None:
        if len(counts) > 1:
            raise ScoreError(
                f"{src} holds several data products ({_counts(counts)}); say which"
            )
        dp = next(iter(counts))
    if dp not in counts:
        _mismatch(src, dp, counts)
    qtext = ""
    if query is not None:
        q = _select._as_query(query)
        if q.dp != dp:
            raise ScoreError(f"the query asks for {q.dp} frames but the model takes {dp}")
        table = q.filter(table)
        qtext = q.to_json()
        if not len(table):
            raise ScoreError(f"{src}: no file matches the query {qtext}")
    else:
        table = table[table["dp"] == dp].reset_index(drop=True)
    files = _file_rows(table)
    parts = _pff_parts(files, dp, part_frames)
    return Plan(str(src), kind, str(root), dp, files, parts, _label_width(files), qtext)


def _counts(counts: dict) -> str:
    return ", ".join(f"{k} ({v} file{'s' if v != 1 else ''})" for k, v in counts.items())


def _mismatch(src: Path, dp: str, counts: dict) -> None:
    prod = pff.data_product(dp)
    held = ", ".join(
        f"{k} frames of {pff.data_product(k).shape[0]}x{pff.data_product(k).shape[1]} "
        f"pixels ({v} file{'s' if v != 1 else ''})"
        for k, v in counts.items()
    )
    raise ModelFileError(
        f"the model takes {dp} frames of {prod.shape[0]}x{prod.shape[1]} pixels, but "
        f"{src} holds {held}; train a model on frames of that product to score them"
    )


def _plan_selection(src: Path, dp: str | None, part_frames: int) -> Plan:
    import h5py

    with h5py.File(src, "r") as h5:
        fmt = h5.attrs.get("format")
        if fmt != _select.FORMAT or "images" not in h5:
            raise ScoreError(
                f"{src} is not a phbook selection file (format {fmt!r}, expected "
                f"{_select.FORMAT!r}); phbook select writes them"
            )
        sel_dp = str(h5.attrs.get("dp", "ph256"))
        shape = tuple(h5["images"].shape[1:])
        if dp is not None and (sel_dp != dp or shape != pff.data_product(dp).shape):
            prod = pff.data_product(dp)
            raise ModelFileError(
                f"the model takes {dp} frames of {prod.shape[0]}x{prod.shape[1]} pixels; "
                f"{src} holds {sel_dp} frames of {shape[0]}x{shape[1]} pixels"
            )
        n = int(h5["images"].shape[0])
        meta = h5["meta"]
        first: dict[str, int] = {}
        cols = {k: [] for k in ("name", "run", "dome", "module", "pe_threshold")}
        step = 1 << 18
        for a in range(0, n, step):
            names = meta["file"][a : a + step]
            uniq, idx = np.unique(names, return_index=True)
            new = [
                (u, i) for u, i in zip(uniq, idx, strict=True) if u.decode() not in first
            ]
            for u, i in new:
                first[u.decode()] = len(first)
                r = a + int(i)
                cols["name"].append(u.decode())
                cols["run"].append(meta["run"][r].decode())
                cols["dome"].append(meta["dome"][r].decode())
                cols["module"].append(int(meta["module"][r]))
                cols["pe_threshold"].append(float(meta["pe_threshold"][r]))
        label_width = int(h5["labels"].dtype.itemsize)
        archive_root = str(h5.attrs.get("archive", ""))
        query = str(h5.attrs.get("query", ""))
        identity = json.dumps(
            {
                k: (v.item() if hasattr(v, "item") else str(v))
                for k in ("created", "seed", "query", "population", "n_selected")
                if (v := h5.attrs.get(k)) is not None
            },
            sort_keys=True,
        )
    files = pd.DataFrame(cols)
    files["size"] = 0
    parts = [
        Part(
            k,
            "h5",
            str(src),
            -1,
            a,
            min(n, a + part_frames),
            0,
            min(n, a + part_frames) - a,
            sel_dp,
        )
        for k, a in enumerate(range(0, n, part_frames))
    ]
    return Plan(
        str(src),
        "h5",
        archive_root,
        sel_dp,
        files,
        parts,
        max(label_width, len(_archive.UNKNOWN_LABEL)),
        query,
        first,
        identity,
    )
