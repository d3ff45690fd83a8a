"""One part of a plan, read and scored chunk by chunk."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..io import archive as _archive
from ..io import pff
from .layout import ScoreError
from .plan import Part

__all__ = ["score_part"]

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
