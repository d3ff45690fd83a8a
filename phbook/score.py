"""Out-of-core scoring: any number of frames, in chunks, with bounded memory and resume.

``score(model, source, out)`` scores every frame of a *source* with a model file
(:mod:`phbook.modelfile`) and writes one anomaly score per frame, with where the frame
came from, to the HDF5 file ``out``. The source is a PFF file, a run folder, an archive
of run folders, or an HDF5 selection (:mod:`phbook.select`).

How it stays within memory and survives interruption:

1. **A plan.** The source is cut into *parts*: byte ranges of PFF files (a file larger
   than ``part_frames`` frames is split, so even one 4 GB file is worked on in pieces)
   or row ranges of a selection. Counting uses file sizes only, no frame is read.
2. **Chunks.** A part is streamed ``chunk_frames`` frames at a time
   (:func:`phbook.io.pff.iter_chunks`), normalised and scored; memory is bounded by the
   chunk size whatever the size of the archive.
3. **A journal.** Each scored chunk is appended to a journal folder beside the output,
   ``<out>.journal/``, as one small ``.npz`` file written under a temporary name and
   renamed, so a chunk is either wholly there or not at all. An interrupted run (Ctrl-C,
   a killed job, a lost machine) started again with the same model and source resumes
   after the last chunk it finished and skips everything already scored.
4. **The output.** When every part is done, the journal is copied, in archive order and
   chunk by chunk, into a temporary HDF5 file that is then renamed to ``out``: the output
   file is never left half written, and it exists only when it is complete.

Damaged frames are skipped and listed (``strict=False``, the default here: one bad byte
should not cost a night of scoring) or stop the run (``strict=True``), with the file and
byte offset in the message; either way the chunks scored before stay in the journal.

The output layout (read it with :func:`read_scores` and :func:`top_k`)::

    score          (N,) float32 anomaly score, higher = more anomalous
    file_index     (N,) int32, row of files/ the frame came from
    offset         (N,) int64 byte offset of the frame in its PFF file
    row            (N,) int64 row in the source selection (-1 for PFF sources)
    time           (N,) float64 Unix time of the frame (phbook.io.pff.frame_times)
    time_flags     (N,) uint8
    quabo          (N,) int8
    label          (N,) bytes: simulation truth where the archive has it, else "unknown"
    strength       (N,) float32 simulated anomaly strength (NaN: normal or unknown)
    files/         name (relative to the source root), run, dome, module, pe_threshold,
                   n_scored: one row per PFF file
    damage/        file_index, offset, kind, skipped_bytes, message
    attrs          format, model, model_sha256, family, dp, source, source_kind, root,
                   n_scored, n_damaged, threshold, strict, chunk_frames, seconds, ...

Frames are in plan order (file by file, offset by offset), whatever order the parts
were scored in (see :mod:`phbook.distributed` for scoring on several machines).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import __version__
from . import config as _config
from .io import archive as _archive
from .io import pff

__all__ = [
    "FORMAT",
    "Part",
    "Plan",
    "ScoreReport",
    "ScoreError",
    "plan_source",
    "source_files",
    "score",
    "score_part",
    "read_scores",
    "top_k",
    "top_distinct",
    "frames_of",
    "peak_rss_mb",
    "journal_path",
]

FORMAT = "phbook-scores-1"
JOURNAL_FORMAT = "phbook-score-journal-1"
_ROW_COLUMNS = (
    "score",
    "file_index",
    "offset",
    "row",
    "time",
    "time_flags",
    "quabo",
    "label",
    "strength",
)
_ROW_DTYPES = {
    "score": np.float32,
    "file_index": np.int32,
    "offset": np.int64,
    "row": np.int64,
    "time": np.float64,
    "time_flags": np.uint8,
    "quabo": np.int8,
    "strength": np.float32,
}
_DAMAGE_COLUMNS = ("file_index", "offset", "kind", "skipped_bytes", "message")


class ScoreError(ValueError):
    """A source, output or journal that cannot be used; the message says which."""


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (``VmHWM`` of /proc, where present).

    ``ru_maxrss`` is the fallback; on Linux it may include the parent's resident size at
    fork time, which ``VmHWM`` does not.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if os.uname().sysname == "Darwin" else rss / 1024


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


def _single_file_table(path: Path, dp: str | None) -> pd.DataFrame:
    """The files-table row of one PFF file (its run's configuration when it has one)."""
    try:
        name = pff.parse_filename(path)
        module, file_dp = name.module, name.dp
    except pff.PFFNameError:
        if dp is None:
            raise
        module, file_dp = -1, dp
    run = None
    if path.parent.name.endswith(".pffd"):
        try:
            run = _archive.Run(path.parent)
        except (pff.PFFNameError, _archive.ConfigError):
            run = None
    try:
        info = pff.scan_file(path, file_dp)
        fs, fixed, n = info.frame_size, info.fixed, info.n_frames
    except pff.PFFError:  # the first frame is damaged: counted by reading
        fs, fixed, n = 0, False, 0
    dome = run.obs_config.dome_of(module) if run and run.obs_config else None
    n_domes = 0
    if run is not None and run.obs_config is not None:
        domes = {
            run.obs_config.dome_of(n.module) for n, _ in run.pff_files() if n.dp == file_dp
        }
        n_domes = len(domes - {None})
    return pd.DataFrame(
        [
            {
                "file": path.name,
                "run": run.name if run else "",
                "run_type": run.run_type if run else None,
                "n_domes": n_domes,
                "dome": dome or "",
                "module": module,
                "dp": file_dp,
                "pe_threshold": run.pe_threshold if run else float("nan"),
                "path": str(path),
                "size": path.stat().st_size,
                "frame_size": fs,
                "n_frames": n,
                "fixed": fixed,
                "has_truth": _archive.truth_path(path).exists(),
            }
        ]
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


def source_files(
    source: str | os.PathLike, dp: str | None = None
) -> tuple[str, Path, pd.DataFrame]:
    """``(kind, root, files)`` of a PFF file (kind ``"pff"``) or a folder of runs
    (``"archive"``): the :meth:`phbook.io.archive.Archive.files` table, file names
    relative to ``root``. ``dp`` names the product of a file whose name does not."""
    src = Path(source)
    if not src.exists():
        raise FileNotFoundError(
            f"{src} does not exist (expected a .pff file, a folder of runs or an HDF5 "
            "selection)"
        )
    if src.is_file():
        if not src.name.endswith(".pff"):
            raise ScoreError(f"{src}: not a .pff file, a folder or an HDF5 selection")
        return "pff", src.parent, _single_file_table(src, dp)
    table = _archive.Archive(src).files()
    if not len(table):
        raise ScoreError(f"{src}: no .pff files found in it or its run folders")
    return "archive", src, table


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
    from . import select as _select

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
    kind, root, table = source_files(src, dp)
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
    from .modelfile import ModelFileError

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

    from . import select as _select

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
            from .modelfile import ModelFileError

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
    )


# ----------------------------------------------------------------------------------
# Reading a part


def _next_good_frame(path: str, dp: str, pos: int) -> int | None:
    frames = pff.read_frames(
        path, dp=dp, offset=pos, max_frames=1, strict=False, warn=False
    )
    return int(frames.offsets[0]) if len(frames) else None


def _byte_at(path: str, pos: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(pos)
        return f.read(1)


def _iter_pff_part(
    part: Part, chunk_frames: int, strict: bool, resume_offset: int | None = None
) -> Iterator[pff.Frames]:
    """Chunks of the good frames of a PFF part (offsets in ``[start, stop)``).

    ``resume_offset`` is the offset of the last frame already scored: reading starts
    there and drops that frame. A part that starts where no frame starts (only after
    damage that shifted the frames of a file) begins at the next good frame: the part
    before it reads past its end and reports that stretch.
    """
    path, dp = part.path, part.dp
    fs = part.frame_size or pff.data_product(dp).frame_size
    stop = part.stop if part.stop >= 0 else None
    if resume_offset is not None:
        pos, skip = int(resume_offset), True
    else:
        pos, skip = part.start, False
        if pos > 0 and _byte_at(path, pos) != b"{":
            nxt = _next_good_frame(path, dp, pos)
            if nxt is None or (stop is not None and nxt >= stop):
                return
            pos = nxt
    while True:
        budget = None if stop is None else max(1, -(-(stop - pos) // fs)) + skip
        got, last = 0, None
        for chunk in pff.iter_chunks(
            path, chunk_frames, dp=dp, strict=strict, offset=pos, max_frames=budget
        ):
            got += len(chunk)
            damage = list(chunk.damage)
            if skip and len(chunk):
                if int(chunk.offsets[0]) != pos:
                    raise ScoreError(
                        f"{path}: the journal says a frame starts at byte {pos}, but the "
                        "file has changed since; score it again from scratch"
                    )
                chunk, skip = chunk[1:], False
            finished = False
            if stop is not None:
                damage = [d for d in damage if d.offset < stop]
                keep = chunk.offsets < stop
                if not keep.all():
                    chunk, finished = chunk[keep], True
            chunk.damage = damage
            if len(chunk):
                last = int(chunk.offsets[-1])
            if len(chunk) or damage:
                yield chunk
            if finished:
                return
        if stop is None or got < budget or last is None:
            return  # end of file (or of what the reader could find)
        pos, skip = last, True


def _iter_h5_part(
    part: Part, chunk_frames: int, resume_row: int | None = None
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    import h5py

    start = part.start if resume_row is None else int(resume_row) + 1
    with h5py.File(part.path, "r") as h5:
        meta = h5["meta"]
        for a in range(start, part.stop, chunk_frames):
            b = min(part.stop, a + chunk_frames)
            cols = {
                "images": h5["images"][a:b],
                "label": h5["labels"][a:b],
                "file": meta["file"][a:b],
            }
            for name in ("offset", "time", "time_flags", "quabo", "strength"):
                cols[name] = meta[name][a:b]
            yield a, cols


# ----------------------------------------------------------------------------------
# Scoring a part


def _truth(part: Part) -> tuple[np.ndarray, np.ndarray] | None:
    if not part.has_truth:
        return None
    return _archive.read_truth(part.path)


def _damage_columns(part: Part, damage: list[pff.Damage]) -> dict[str, np.ndarray]:
    return {
        "damage_file_index": np.full(len(damage), part.file_index, np.int32),
        "damage_offset": np.array([d.offset for d in damage], np.int64),
        "damage_kind": np.array([d.kind for d in damage], dtype="S16").reshape(-1),
        "damage_skipped_bytes": np.array([d.skipped_bytes for d in damage], np.int64),
        "damage_message": np.array(
            [d.message.encode("utf-8", "replace")[:400] for d in damage], dtype="S400"
        ).reshape(-1),
    }


def score_part(
    part: Part,
    model: Any,
    *,
    chunk_frames: int = 65536,
    strict: bool = False,
    label_width: int = 16,
    file_lookup: dict[str, int] | None = None,
    resume: dict[str, int] | None = None,
    on_chunk: Callable[[int, dict[str, np.ndarray]], None] | None = None,
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Score one part chunk by chunk; yields ``(chunk_number, result)``.

    ``model`` is a loaded :class:`phbook.modelfile.ModelFile`. A result is a dict of
    equal-length arrays (the output columns of the module docstring) plus ``damage_*``
    arrays for the damage found while reading it. ``resume`` (``{"chunk": k, "offset":
    o}`` or ``{"chunk": k, "row": r}``) continues after chunk ``k - 1``, whose last
    frame was at ``o`` (row ``r``).
    """
    resume = resume or {}
    k = int(resume.get("chunk", 0))
    width = f"S{max(1, label_width)}"
    if part.kind == "h5":
        lookup = file_lookup or {}
        for a, cols in _iter_h5_part(part, chunk_frames, resume.get("row")):
            images = cols["images"]
            model.check(part.dp, images.shape[1:], part.path)
            n = len(images)
            names = cols["file"]
            uniq, inv = np.unique(names, return_inverse=True)
            index = np.array([lookup.get(u.decode(), -1) for u in uniq], np.int32)
            result = {
                "score": model.score(images),
                "file_index": index[inv].astype(np.int32),
                "offset": cols["offset"].astype(np.int64),
                "row": np.arange(a, a + n, dtype=np.int64),
                "time": cols["time"].astype(np.float64),
                "time_flags": cols["time_flags"].astype(np.uint8),
                "quabo": cols["quabo"].astype(np.int8),
                "label": cols["label"].astype(width),
                "strength": cols["strength"].astype(np.float32),
                **_damage_columns(part, []),
            }
            yield k, result
            k += 1
        return
    truth = _truth(part)
    fs = part.frame_size or pff.data_product(part.dp).frame_size
    for frames in _iter_pff_part(part, chunk_frames, strict, resume.get("offset")):
        n = len(frames)
        model.check(part.dp, frames.images.shape[1:], part.path)
        label = np.full(n, _archive.UNKNOWN_LABEL, dtype=width)
        strength = np.full(n, np.nan, np.float32)
        if truth is not None and n:
            idx = frames.offsets // fs
            ok = idx < len(truth[0])
            label[ok] = truth[0][idx[ok]].astype(width)
            strength[ok] = truth[1][idx[ok]]
        result = {
            "score": model.score(frames.images),
            "file_index": np.full(n, part.file_index, np.int32),
            "offset": frames.offsets.astype(np.int64),
            "row": np.full(n, -1, np.int64),
            "time": frames.time.astype(np.float64),
            "time_flags": frames.time_flags.astype(np.uint8),
            "quabo": frames.quabo.astype(np.int8),
            "label": label,
            "strength": strength,
            **_damage_columns(part, frames.damage),
        }
        yield k, result
        k += 1


# ----------------------------------------------------------------------------------
# The journal


def journal_path(out: str | os.PathLike) -> Path:
    """The journal folder of an output file: ``<out>.journal``."""
    out = Path(out)
    return out.with_name(out.name + ".journal")


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` whole or not at all (a temporary file renamed; two
    processes writing the same chunk do not collide)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{time.monotonic_ns()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class _Journal:
    """The scored chunks of an unfinished run, one ``.npz`` file per chunk."""

    def __init__(self, out: Path, manifest: dict[str, Any], overwrite: bool):
        self.dir = journal_path(out)
        self.manifest = manifest
        path = self.dir / "manifest.json"
        if self.dir.exists() and overwrite:
            shutil.rmtree(self.dir)
        if self.dir.exists():
            try:
                old = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ScoreError(
                    f"{self.dir}: the journal of an earlier run cannot be read ({exc}); "
                    "delete it or pass overwrite=True (--overwrite) to start again"
                ) from None
            changed = [k for k in manifest if k != "seconds" and old.get(k) != manifest[k]]
            if changed:
                raise ScoreError(
                    f"{self.dir}: an unfinished run with another {', '.join(changed)} "
                    "is in the way; pass overwrite=True (--overwrite) to discard it, or "
                    "resume it with the same model, source and options"
                )
            self.manifest["seconds"] = float(old.get("seconds", 0.0))
        else:
            self.dir.mkdir(parents=True)
            self.manifest.setdefault("seconds", 0.0)
            self.save_manifest()
        for tmp in self.dir.glob("*.tmp"):
            tmp.unlink()

    def save_manifest(self) -> None:
        tmp = self.dir / "manifest.json.tmp"
        tmp.write_text(json.dumps(self.manifest, indent=1))
        os.replace(tmp, self.dir / "manifest.json")

    def chunk_path(self, part: int, chunk: int) -> Path:
        return self.dir / chunk_name(part, chunk)

    def done_path(self, part: int) -> Path:
        return self.dir / f"p{part:07d}.done"

    def state(self, parts: list[Part]) -> dict[int, dict[str, Any]]:
        """Per part: done, chunks, frames, and where to resume."""
        chunks: dict[int, list[Path]] = {}
        done = set()
        for p in self.dir.iterdir():
            name = p.name
            if name.startswith("p") and name.endswith(".npz"):
                chunks.setdefault(int(name[1:8]), []).append(p)
            elif name.startswith("p") and name.endswith(".done"):
                done.add(int(name[1:8]))
        out = {}
        for part in parts:
            files = sorted(chunks.get(part.index, []))
            info: dict[str, Any] = {
                "done": part.index in done,
                "chunks": files,
                "frames": 0,
                "resume": None,
            }
            if files:
                n = 0
                for f in files:
                    with _open_npz(f) as z:
                        n += len(z["score"])
                info["frames"] = n
                if not info["done"]:
                    with _open_npz(files[-1]) as z:
                        resume: dict[str, int] = {"chunk": len(files)}
                        if len(z["score"]):
                            if part.kind == "h5":
                                resume["row"] = int(z["row"][-1])
                            else:
                                resume["offset"] = int(z["offset"][-1])
                        elif part.kind == "pff" and len(files) > 1:
                            # an empty chunk (damage only): use the one before it
                            for f in reversed(files[:-1]):
                                with _open_npz(f) as zz:
                                    if len(zz["offset"]):
                                        resume["offset"] = int(zz["offset"][-1])
                                        break
                        info["resume"] = resume
            out[part.index] = info
        return out

    def write(self, part: int, chunk: int, result: dict[str, np.ndarray]) -> None:
        _write_npz(self.chunk_path(part, chunk), result)

    def finish_part(self, part: int) -> None:
        path = self.done_path(part)
        path.with_name(path.name + ".tmp").write_text("done")
        os.replace(path.with_name(path.name + ".tmp"), path)


def chunk_name(part: int, chunk: int) -> str:
    """The journal file name of a scored chunk."""
    return f"p{part:07d}.c{chunk:06d}.npz"


def _open_npz(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - name the file
        raise ScoreError(
            f"{path}: a journal chunk cannot be read ({exc}); delete it (the run resumes "
            "before it) or pass --overwrite to start again"
        ) from None


# ----------------------------------------------------------------------------------
# Writing the output


class _Output:
    """Writes the output from the journal, in plan order, while scoring goes on.

    Parts are copied as soon as they and every part before them are done, into a
    temporary HDF5 file that :meth:`finish` renames to ``out``; until then, and after
    an interruption (:meth:`abort` deletes it), the journal is all there is.
    """

    def __init__(self, plan: Plan, journal: _Journal, out: Path):
        import h5py

        self.plan, self.journal, self.out = plan, journal, out
        self.tmp = out.with_name(f".{out.name}.merging")
        self.tmp.unlink(missing_ok=True)
        self.next = 0  # position in plan.parts of the next part to copy
        self.n = self.n_dmg = 0
        self.per_file = np.zeros(max(1, len(plan.files)), np.int64)
        self.h5 = h5py.File(self.tmp, "w")
        gz = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
        self.ds = {}
        for name in _ROW_COLUMNS:
            dt = f"S{plan.label_width}" if name == "label" else _ROW_DTYPES[name]
            kw = {} if name == "score" else gz  # scores hardly compress
            self.ds[name] = self.h5.create_dataset(
                name, (0,), dt, chunks=(1 << 16,), maxshape=(None,), **kw
            )
        g = self.h5.create_group("damage")
        dtypes = {
            "file_index": np.int32,
            "offset": np.int64,
            "kind": "S16",
            "skipped_bytes": np.int64,
            "message": "S400",
        }
        self.dmg = {
            name: g.create_dataset(name, (0,), dt, maxshape=(None,), chunks=(256,))
            for name, dt in dtypes.items()
        }

    def _append(self, path: Path) -> None:
        with _open_npz(path) as z:
            k = len(z["score"])
            if k:
                for name in _ROW_COLUMNS:
                    self.ds[name].resize((self.n + k,))
                    self.ds[name][self.n : self.n + k] = z[name]
                fi = z["file_index"]
                fi = fi[fi >= 0]
                m = len(self.per_file)
                self.per_file += np.bincount(fi, minlength=m)[:m]
                self.n += k
            m = len(z["damage_offset"])
            if m:
                for name in _DAMAGE_COLUMNS:
                    self.dmg[name].resize((self.n_dmg + m,))
                    self.dmg[name][self.n_dmg : self.n_dmg + m] = z[f"damage_{name}"]
                self.n_dmg += m

    def advance(self, done: set[int]) -> None:
        """Copy the parts that are done and follow only done parts."""
        parts = self.plan.parts
        while self.next < len(parts) and parts[self.next].index in done:
            index = parts[self.next].index
            for path in sorted(self.journal.dir.glob(f"p{index:07d}.c*.npz")):
                self._append(path)
            self.next += 1

    def finish(self, attrs: dict[str, Any]) -> int:
        """Write the files table and attributes, close, rename; frames written."""
        if self.next != len(self.plan.parts):
            raise RuntimeError("the output was finished before every part was copied")
        fg = self.h5.create_group("files")
        files = self.plan.files
        for name in ("name", "run", "dome"):
            values = files[name].astype(str).str.encode("utf-8").to_numpy()
            width = max([1, *(len(v) for v in values)])
            fg.create_dataset(name, data=np.array(values, dtype=f"S{width}"))
        fg.create_dataset("module", data=files["module"].to_numpy(np.int16))
        fg.create_dataset("pe_threshold", data=files["pe_threshold"].to_numpy(np.float32))
        fg.create_dataset("n_scored", data=self.per_file[: len(files)])
        self.h5.attrs.update(
            {**attrs, "n_scored": self.n, "n_damaged": self.n_dmg, "n_files": len(files)}
        )
        self.h5.close()
        os.replace(self.tmp, self.out)
        return self.n

    def abort(self) -> None:
        """Close and delete the temporary file (the journal keeps everything)."""
        try:
            self.h5.close()
        finally:
            self.tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------
# The driver


@dataclass
class ScoreReport:
    """What a scoring run did (``phbook score --report`` writes it as JSON)."""

    out: str
    n_scored: int
    n_damaged: int
    n_files: int
    n_parts: int
    resumed_frames: int  #: frames found already scored in the journal
    seconds: float  #: wall time of this call
    frames_per_s: float  #: frames scored by this call per second of it
    peak_rss_mb: float  #: of this process (a Dask run's workers are not included)
    workers: int = 1
    already_complete: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _manifest(plan: Plan, model: Any) -> dict[str, Any]:
    """What identifies a run; the chunk size and strictness may change on resumption."""
    return {
        "format": JOURNAL_FORMAT,
        "model_sha256": model.sha256,
        "plan": plan.signature(),
    }


def _attrs(plan: Plan, model: Any, chunk_frames: int, strict: bool, seconds: float) -> dict:
    threshold = -float(model.detector.offset_)
    return {
        "format": FORMAT,
        "model": os.path.abspath(model.path or ""),
        "model_sha256": model.sha256,
        "family": model.family,
        "dp": plan.dp,
        "source": os.path.abspath(plan.source),
        "source_kind": plan.kind,
        "root": os.path.abspath(plan.root) if plan.root else "",
        "query": plan.query,
        "threshold": threshold,
        "contamination": float(model.detector.contamination),
        "strict": bool(strict),
        "chunk_frames": int(chunk_frames),
        "seconds": float(seconds),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "phbook_version": __version__,
        "training": json.dumps(model.training, sort_keys=True),
    }


def _load_model(model: Any, device=None):
    from . import modelfile

    if isinstance(model, modelfile.ModelFile):
        return model
    return modelfile.load(model, device=device)


def _already_done(out: Path, model: Any, plan: Plan) -> bool:
    import h5py

    try:
        with h5py.File(out, "r") as h5:
            return (
                h5.attrs.get("format") == FORMAT
                and h5.attrs.get("model_sha256") == model.sha256
                and h5.attrs.get("source") == os.path.abspath(plan.source)
                and h5.attrs.get("query", "") == plan.query
            )
    except OSError:
        return False


def score(
    model: Any,
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    query: Any = None,
    chunk_frames: int = 65536,
    part_frames: int = 1 << 20,
    strict: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    device=None,
    client: Any = None,
    workers: int | None = None,
    scheduler: str | None = None,
) -> ScoreReport:
    """Score every frame of ``source`` with ``model`` (a model file path or a loaded
    :class:`~phbook.modelfile.ModelFile`) into the HDF5 file ``out``.

    Resumes an interrupted run of the same model, source and options (see the module
    docstring); returns at once when ``out`` already holds the scores of this model and
    source. ``overwrite`` discards both. ``client``, ``workers`` or ``scheduler`` run the
    parts as a Dask computation (:func:`phbook.distributed.score_dask`); by default
    everything runs in this process.
    """
    import h5py

    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be at least 1, got {chunk_frames}")
    t0 = time.perf_counter()
    out = Path(out)
    model = _load_model(model, device)
    plan = plan_source(source, dp=model.dp, query=query, part_frames=part_frames)
    model.check(plan.dp, plan.image_shape, str(source))
    if out.exists():
        if not overwrite and _already_done(out, model, plan):
            # a journal left by a run stopped between writing the output and
            # deleting its journal is of no further use
            shutil.rmtree(journal_path(out), ignore_errors=True)
            with h5py.File(out, "r") as h5:
                attrs = dict(h5.attrs)
            return ScoreReport(
                str(out),
                int(attrs["n_scored"]),
                int(attrs["n_damaged"]),
                int(attrs["n_files"]),
                len(plan.parts),
                int(attrs["n_scored"]),
                time.perf_counter() - t0,
                0.0,
                peak_rss_mb(),
                already_complete=True,
            )
        if not overwrite:
            raise FileExistsError(
                f"{out} exists and holds other scores; pass overwrite=True (--overwrite) "
                "to replace it"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    journal = _Journal(out, _manifest(plan, model), overwrite)
    state = journal.state(plan.parts)
    resumed = sum(s["frames"] for s in state.values())
    done = {i for i, st in state.items() if st["done"]}
    show = _config.show_progress() if progress is None else progress
    n_workers = 1
    output = _Output(plan, journal, out)
    try:
        output.advance(done)
        try:
            if client is not None or workers is not None or scheduler is not None:
                from . import distributed

                done_now, n_workers = distributed._score_parts(
                    plan,
                    model,
                    journal,
                    state,
                    output,
                    done,
                    chunk_frames=chunk_frames,
                    strict=strict,
                    show=show,
                    client=client,
                    workers=workers,
                    scheduler=scheduler,
                )
            else:
                done_now = _score_parts_here(
                    plan, model, journal, state, output, done, chunk_frames, strict, show
                )
        finally:
            journal.manifest["seconds"] += time.perf_counter() - t0
            journal.save_manifest()
        output.advance(done)
        attrs = _attrs(plan, model, chunk_frames, strict, journal.manifest["seconds"])
        n = output.finish(attrs)
    except BaseException:
        output.abort()
        raise
    shutil.rmtree(journal.dir, ignore_errors=True)
    with h5py.File(out, "r") as h5:
        n_dmg, n_files = int(h5.attrs["n_damaged"]), int(h5.attrs["n_files"])
    if n_dmg:
        warnings.warn(
            f"{source}: skipped {n_dmg} damaged stretch(es); they are listed in the "
            f"damage/ group of {out}",
            stacklevel=2,
        )
    wall = time.perf_counter() - t0
    return ScoreReport(
        str(out),
        n,
        n_dmg,
        n_files,
        len(plan.parts),
        resumed,
        wall,
        done_now / max(wall, 1e-9),
        peak_rss_mb(),
        n_workers,
    )


def _score_parts_here(
    plan: Plan,
    model: Any,
    journal: _Journal,
    state: dict[int, dict[str, Any]],
    output: _Output,
    done: set[int],
    chunk_frames: int,
    strict: bool,
    show: bool,
) -> int:
    """Score the unfinished parts in this process, journalling chunk by chunk."""
    from tqdm.auto import tqdm

    done_now = 0
    resumed = sum(s["frames"] for s in state.values())
    total = max(plan.n_frames, resumed)
    with tqdm(
        total=total,
        initial=resumed,
        unit="frame",
        desc="scoring",
        disable=not show,
        smoothing=0.1,
    ) as bar:
        for part in plan.parts:
            if part.index in done:
                continue
            for k, result in score_part(
                part,
                model,
                chunk_frames=chunk_frames,
                strict=strict,
                label_width=plan.label_width,
                file_lookup=plan.file_lookup,
                resume=state[part.index]["resume"],
            ):
                journal.write(part.index, k, result)
                m = len(result["score"])
                done_now += m
                bar.update(m)
            journal.finish_part(part.index)
            done.add(part.index)
            output.advance(done)
    return done_now


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
    import h5py

    with h5py.File(path, "r") as h5:
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
    import h5py

    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    best_s = np.empty(0, np.float32)
    best_i = np.empty(0, np.int64)
    with h5py.File(path, "r") as h5:
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
    import h5py

    with h5py.File(path, "r") as h5:
        _check_scores(h5, path)
        attrs = dict(h5.attrs)
    kind, source, root = attrs["source_kind"], attrs["source"], attrs["root"]
    dp = str(attrs["dp"])
    prod = pff.data_product(dp)
    if kind == "h5":
        from . import select as _select

        if not os.path.exists(source):
            raise FileNotFoundError(f"the source selection {source} of {path} is gone")
        images, _, _ = _select.load(source, table["row"].to_numpy())
        return images
    out = np.empty((len(table), *prod.shape), prod.pixel_dtype)
    names = table["file"].astype(str).to_numpy()
    offsets = table["offset"].to_numpy(np.int64)
    for name in np.unique(names):
        rows = np.flatnonzero(names == name)
        file = Path(root) / name
        if not file.exists():
            raise FileNotFoundError(f"{file} (listed in {path}) does not exist")
        got = _read_at(file, dp, offsets[rows])
        out[rows] = got
    return out


def _read_at(file: Path, dp: str, offsets: np.ndarray) -> np.ndarray:
    """Images of the frames at byte ``offsets`` of one PFF file (in that order)."""
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
                return frames.images[pos]
    images = []
    for offset in offsets:  # frames after damage that shifted them: one by one
        frames = pff.read_frames(
            file, dp=dp, offset=int(offset), max_frames=1, strict=True, warn=False
        )
        if not len(frames) or int(frames.offsets[0]) != int(offset):
            raise ScoreError(f"{file}: no frame at byte {offset}; the file has changed")
        images.append(frames.images[0])
    return np.stack(images)


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
    import h5py

    with h5py.File(path, "r") as h5:
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
