"""Reading frames: the fast template path, the general path and resynchronisation."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .format import (
    _MAX_HEADER,
    CLOCKS_DISAGREE,
    ClockWarning,
    Damage,
    PFFError,
    PFFFrameSizeError,
    PFFHeaderError,
    PFFTruncatedError,
    data_product,
)
from .frames import Frames
from .layout import _derive_layout, _header_record, _Layout
from .names import parse_filename

# ----------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class FileInfo:
    """What the first frame of a file says about the rest (see :func:`scan_file`)."""

    path: str
    dp: str
    size: int  #: file size in bytes
    frame_size: int  #: size of the first frame
    fixed: bool  #: the first header is a fixed-width template (fast path)
    n_frames: int  #: ``size // frame_size`` for fixed-width files (an estimate otherwise)
    tail_bytes: int  #: bytes after the last whole frame (a truncated last frame)


class _Reader:
    """Reads the frames of one file from a byte offset on, fast path first.

    A frame is accepted only when the byte after it starts a header (``{``) or is the
    end of the file, so a frame of the wrong size is caught at that frame.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        dp: str | None,
        strict: bool,
        block_frames: int = 4096,
    ):
        self.path = os.fspath(path)
        self.prod = data_product(dp) if dp is not None else parse_filename(path).product
        self.strict = strict
        self.f = open(self.path, "rb")
        self.size = os.fstat(self.f.fileno()).st_size
        self.layout: _Layout | None = None
        self.block_frames = block_frames
        self._buf = np.empty(0, dtype=np.uint8)
        self.damage: list[Damage] = []
        self._reported = 0

    def close(self) -> None:
        self.f.close()

    def _pread(self, offset: int, n: int) -> bytes:
        return os.pread(self.f.fileno(), max(0, n), offset)

    # --- general path -----------------------------------------------------------
    def parse_one(self, offset: int) -> tuple[np.ndarray, np.ndarray, int, _Layout | None]:
        """Header record, image, end offset and layout of the frame at ``offset``.

        Raises a PFFError subclass describing the damage at ``offset``.
        """
        prod = self.prod
        head = self._pread(offset, 4096)
        end = head.find(b"\n\n")
        if end < 0 and len(head) == 4096:
            head = self._pread(offset, _MAX_HEADER)
            end = head.find(b"\n\n")
        if not head:
            raise PFFTruncatedError("no frame here (end of file)", self.path, offset)
        if head[:1] != b"{":
            raise PFFHeaderError(
                f"expected a header starting with '{{', found byte {head[:1]!r}",
                self.path,
                offset,
            )
        if end < 0:
            if len(head) >= _MAX_HEADER:
                raise PFFHeaderError(
                    f"no header end (two newlines) within {_MAX_HEADER} bytes",
                    self.path,
                    offset,
                )
            raise PFFTruncatedError(
                f"the file ends (at byte {self.size}) inside the header that starts here",
                self.path,
                offset,
            )
        raw = head[:end]
        try:
            parsed = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PFFHeaderError(
                f"header is not valid JSON: {exc}", self.path, offset
            ) from None
        try:
            rec, leaves = _header_record(parsed, prod)
        except ValueError as exc:
            raise PFFHeaderError(str(exc), self.path, offset) from None
        star = offset + end + 2
        frame_end = star + 1 + prod.image_bytes
        if frame_end > self.size:
            raise PFFTruncatedError(
                f"the file ends at byte {self.size} inside the frame that starts here, "
                f"which needs {frame_end - offset} bytes ({prod.name}: "
                f"{prod.image_bytes}-byte image)",
                self.path,
                offset,
            )
        block = self._pread(star, 1 + prod.image_bytes)
        if block[:1] != b"*":
            raise PFFFrameSizeError(
                f"expected the image marker '*' right after the header, at byte {star},"
                f" found {block[:1]!r}",
                self.path,
                offset,
            )
        pix = np.frombuffer(block, dtype=prod.pixel_dtype, offset=1).reshape(prod.shape)
        return rec, pix, frame_end, _derive_layout(raw, leaves, prod)

    def _parses(self, offset: int) -> bool:
        """A whole frame starts at ``offset`` and is followed by a header or the end."""
        try:
            _, _, end, _ = self.parse_one(offset)
        except PFFError:
            return False
        return end >= self.size or self._pread(end, 1) == b"{"

    def find_next_frame(self, start: int) -> int | None:
        """Offset of the next good frame at or after ``start``, or None."""
        window = 1 << 20
        pos = start
        while pos < self.size:
            chunk = self._pread(pos, window + 1)
            i = chunk.find(b"{")
            while 0 <= i < min(window, len(chunk)):
                if chunk[i + 1 : i + 2] in (b" ", b"\n", b'"') and self._parses(pos + i):
                    return pos + i
                i = chunk.find(b"{", i + 1)
            pos += window
        return None

    def check_next(self, offset: int, end: int) -> None:
        """Raise PFFFrameSizeError for the frame at ``offset`` if its size is wrong.

        Its size is right when the byte at its ``end`` starts a header or is the end of
        the file. Otherwise the next good frame is searched for: if it starts a whole
        number of frame sizes after ``end`` (or there is none), the frame is taken as
        whole and the damage as the next frame's; if not, this frame is too long or too
        short.
        """
        if end >= self.size:
            return
        nxt = self._pread(end, 1)
        if nxt == b"{":
            return
        found = self.find_next_frame(offset + 1)
        expected = end - offset
        if found is None or (found > end and (found - end) % expected == 0):
            return
        raise PFFFrameSizeError(
            f"expected the next header or the end of the file at byte {end}, found "
            f"byte {nxt!r}: this frame is {found - offset} bytes (the next good header "
            f"starts at byte {found}) but a {self.prod.name} frame with its header is "
            f"{expected} bytes ({self.prod.shape[0]}x{self.prod.shape[1]} pixels x "
            f"{self.prod.bpp} byte(s))",
            self.path,
            offset,
        )

    # --- the loop -----------------------------------------------------------------
    def frames(
        self, offset: int = 0, max_frames: int | None = None, chunk_frames: int = 65536
    ) -> Iterator[Frames]:
        """Yield chunks of good frames from ``offset``; raise or skip at damage."""
        prod = self.prod
        cap = chunk_frames
        brace = ord("{")
        limit = max_frames if max_frames is not None else np.inf
        pending: PFFError | None = None
        n = total = 0
        pos = offset

        def alloc():
            return (
                np.empty((cap, *prod.shape), prod.pixel_dtype),
                np.zeros(cap, prod.header_dtype),
                np.empty(cap, np.int64),
            )

        images, headers, offsets = alloc()

        def flush() -> Frames:
            out = Frames(
                images[:n],
                headers[:n],
                offsets[:n],
                prod.name,
                self.path,
                self.damage[self._reported :],
            )
            self._reported = len(self.damage)
            return out

        while pos < self.size and total < limit:
            if n == cap:
                yield flush()
                images, headers, offsets = alloc()
                n = 0
            lay = self.layout
            if lay is not None:
                fs = lay.frame_size
                k = int(
                    min(
                        self.block_frames,
                        cap - n,
                        limit - total,
                        (self.size - pos) // fs,
                    )
                )
                if k > 0:
                    trailing = pos + k * fs < self.size
                    nbytes = k * fs + trailing
                    if self._buf.size < nbytes:
                        self._buf = np.empty(nbytes, dtype=np.uint8)
                    buf = self._buf[:nbytes]
                    self.f.seek(pos)
                    if self.f.readinto(memoryview(buf)) != nbytes:
                        raise OSError(f"{self.path}: short read at byte {pos}")
                    block = buf[: k * fs].reshape(k, fs)
                    good, values = lay.check(block)
                    if good.all():
                        j = k
                        if trailing and buf[k * fs] != brace:
                            j = k - 1  # the last frame may be too short or long
                    else:
                        j = int(np.argmin(good))
                        if j > 0 and block[j, 0] != brace:
                            j -= 1
                    if j > 0:
                        sl = slice(n, n + j)
                        lay.store(values[:j], headers[sl])
                        images[sl] = (
                            block[:j, len(lay.template) :]
                            .view(prod.pixel_dtype)
                            .reshape(j, *prod.shape)
                        )
                        offsets[sl] = pos + fs * np.arange(j)
                        n += j
                        total += j
                        pos += j * fs
                    if j == k:
                        continue
            # general path: one frame at pos
            try:
                rec, pix, end, layout = self.parse_one(pos)
                self.check_next(pos, end)
            except PFFError as exc:
                if self.strict:
                    pending = exc
                    break
                resume = self.find_next_frame(pos + 1)
                stop = resume if resume is not None else self.size
                self.damage.append(Damage(self.path, pos, exc.kind, exc.detail, stop - pos))
                pos = stop
                self.layout = None
                continue
            headers[n] = rec[0]
            images[n] = pix
            offsets[n] = pos
            n += 1
            total += 1
            pos = end
            self.layout = layout
        if n or pending is None:
            yield flush()
        if pending is not None:
            raise pending


def _warn_clocks(frames: Frames) -> None:
    if len(frames) == 0:
        return
    bad = int(np.count_nonzero(frames.time_flags & CLOCKS_DISAGREE))
    if bad:
        warnings.warn(
            f"{frames.path}: White Rabbit and host clocks disagree by more than 1 s in "
            f"{bad} of {len(frames)} frames; their times are the host clock "
            "(flag CLOCKS_DISAGREE)",
            ClockWarning,
            stacklevel=3,
        )


def _warn_damage(path: str, damage: list[Damage]) -> None:
    if damage:
        skipped = sum(d.skipped_bytes for d in damage)
        warnings.warn(
            f"{path}: skipped {len(damage)} damaged stretch(es), {skipped} bytes; "
            f"the first at byte {damage[0].offset}: {damage[0].message}",
            stacklevel=3,
        )


def iter_chunks(
    path: str | os.PathLike,
    chunk_frames: int = 65536,
    *,
    dp: str | None = None,
    strict: bool = True,
    offset: int = 0,
    max_frames: int | None = None,
) -> Iterator[Frames]:
    """Stream the frames of a PFF file in chunks of at most ``chunk_frames``.

    Memory stays bounded by the chunk size whatever the file size. ``dp`` defaults to
    the product in the file name. At damage, ``strict=True`` first yields the good
    frames read before it, then raises a :class:`PFFError` naming the file and byte
    offset; ``strict=False`` skips to the next good frame and lists what it skipped in
    the ``damage`` attribute of the chunks.
    """
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be at least 1, got {chunk_frames}")
    reader = _Reader(path, dp, strict)
    try:
        yield from reader.frames(offset, max_frames, chunk_frames)
    finally:
        reader.close()


def read_frames(
    path: str | os.PathLike,
    *,
    dp: str | None = None,
    strict: bool = True,
    offset: int = 0,
    max_frames: int | None = None,
    warn: bool = True,
) -> Frames:
    """All frames of a PFF file (or ``max_frames`` of them from byte ``offset``).

    On damage with ``strict=True`` the :class:`PFFError` raised carries the frames read
    before it as ``error.frames``; with ``strict=False`` damaged stretches are skipped
    and listed in ``frames.damage``. Warns (:class:`ClockWarning`) when frames' clocks
    disagree.
    """
    parts: list[Frames] = []
    prod = data_product(dp) if dp is not None else parse_filename(path).product
    try:
        for chunk in iter_chunks(
            path,
            1 << 16,
            dp=prod.name,
            strict=strict,
            offset=offset,
            max_frames=max_frames,
        ):
            parts.append(chunk)
    except PFFError as exc:
        exc.frames = (
            Frames.concat(parts) if parts else Frames.empty(prod.name, os.fspath(path))
        )
        raise
    out = Frames.concat(parts) if parts else Frames.empty(prod.name, os.fspath(path))
    out.path = os.fspath(path)
    if warn:
        _warn_clocks(out)
        _warn_damage(out.path, out.damage)
    return out


def scan_file(path: str | os.PathLike, dp: str | None = None) -> FileInfo:
    """Frame size and count of a file from its first header and its size (cheap).

    For fixed-width files (every file the DAQ writes) ``n_frames = size // frame_size``
    without reading further; ``tail_bytes`` is non-zero for a truncated last frame.
    """
    reader = _Reader(path, dp, strict=True)
    try:
        if reader.size == 0:
            return FileInfo(reader.path, reader.prod.name, 0, 0, True, 0, 0)
        _, _, end, layout = reader.parse_one(0)
        fs = end
        return FileInfo(
            reader.path,
            reader.prod.name,
            reader.size,
            fs,
            layout is not None,
            reader.size // fs,
            reader.size % fs,
        )
    finally:
        reader.close()


def read_frames_at(
    path: str | os.PathLike,
    indices: Iterable[int],
    *,
    dp: str | None = None,
    info: FileInfo | None = None,
    strict: bool = True,
    window_frames: int = 8192,
) -> Frames:
    """The frames with the given indices (0-based, in file order) of one file.

    Fixed-width files are read by offset (frame ``i`` at ``i * frame_size``), window by
    window, touching only windows that hold a wanted frame; each wanted frame is checked
    against the header template and must be followed by a header or the end of the
    file. A wanted frame that fails goes through the general path; if it is damaged,
    ``strict=True`` raises (``error.frames`` holds the wanted frames before it) and
    ``strict=False`` drops it and lists it in ``frames.damage``. Other files are
    scanned. Frames come back sorted by index.
    """
    idx = np.unique(
        np.fromiter(indices, dtype=np.int64)
        if not isinstance(indices, np.ndarray)
        else indices.astype(np.int64)
    )
    info = info or scan_file(path, dp)
    prod = data_product(info.dp)
    if idx.size == 0:
        return Frames.empty(prod.name, info.path)
    if idx[0] < 0:
        raise IndexError(f"{path}: negative frame index {int(idx[0])}")
    layout = None
    if info.fixed:
        if idx[-1] >= info.n_frames:
            raise IndexError(
                f"{path}: frame index {int(idx[-1])} is beyond its {info.n_frames} frames"
            )
        reader = _Reader(path, prod.name, strict)
        try:
            layout = reader.parse_one(0)[3]
            if layout is not None and layout.frame_size == info.frame_size:
                return _read_fixed(reader, layout, idx, window_frames)
        finally:
            reader.close()
    # general path: scan the file, keep the wanted frames
    parts = []
    seen = 0
    try:
        for chunk in iter_chunks(path, 1 << 16, dp=prod.name, strict=strict):
            m = len(chunk)
            want = idx[(idx >= seen) & (idx < seen + m)] - seen
            if want.size:
                part = chunk[want]
                part.damage = list(chunk.damage)
                parts.append(part)
            seen += m
            if seen > idx[-1]:
                break
    except PFFError as exc:
        exc.frames = Frames.concat(parts) if parts else Frames.empty(prod.name, info.path)
        raise
    if seen <= idx[-1]:
        raise IndexError(
            f"{path}: frame index {int(idx[-1])} is beyond its {seen} good frames"
        )
    return Frames.concat(parts)


def _read_fixed(
    reader: _Reader, layout: _Layout, idx: np.ndarray, window_frames: int
) -> Frames:
    prod = reader.prod
    fs = layout.frame_size
    hl = len(layout.template)
    images = np.empty((idx.size, *prod.shape), prod.pixel_dtype)
    headers = np.zeros(idx.size, prod.header_dtype)
    keep = np.ones(idx.size, dtype=bool)
    damage: list[Damage] = []
    win = idx // window_frames
    bounds = np.flatnonzero(np.diff(win)) + 1
    brace = ord("{")
    for part in np.split(np.arange(idx.size), bounds):
        sel = idx[part]
        lo, hi = int(sel[0]), int(sel[-1]) + 1
        want = (hi - lo) * fs + 1
        buf = np.frombuffer(reader._pread(lo * fs, want), dtype=np.uint8)
        rows = sel - lo
        block = buf[: (hi - lo) * fs].reshape(hi - lo, fs)[rows]
        good, values = layout.check(block)
        nxt = (rows + 1) * fs
        inside = nxt < buf.size
        good &= np.where(
            inside,
            buf[np.minimum(nxt, buf.size - 1)] == brace,
            lo * fs + nxt >= reader.size,
        )
        got = np.zeros(int(good.sum()), prod.header_dtype)
        layout.store(values[good], got)
        headers[part[good]] = got
        images[part[good]] = (
            block[good, hl:].view(prod.pixel_dtype).reshape(-1, *prod.shape)
        )
        for j in np.flatnonzero(~good):
            i = part[j]
            off = int(idx[i]) * fs
            try:
                rec, pix, end, _ = reader.parse_one(off)
                reader.check_next(off, end)
            except PFFError as exc:
                if reader.strict:
                    done = np.arange(idx.size) < i
                    m = keep & done
                    exc.frames = Frames(
                        images[m],
                        headers[m],
                        idx[m] * fs,
                        prod.name,
                        reader.path,
                        damage,
                    )
                    raise
                keep[i] = False
                damage.append(Damage(reader.path, off, exc.kind, exc.detail, fs))
                continue
            headers[i] = rec[0]
            images[i] = pix
    return Frames(
        images[keep], headers[keep], idx[keep] * fs, prod.name, reader.path, damage
    )
