"""Reading frames: the fast template path, the general path and resynchronisation."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .format import (
    _MAX_HEADER,
    CLOCKS_DISAGREE,
    DATA_PRODUCTS,
    ClockWarning,
    Damage,
    DataProduct,
    PFFError,
    PFFFrameSizeError,
    PFFHeaderError,
    PFFNameError,
    PFFTruncatedError,
    data_product,
)
from .frames import Frames
from .layout import _derive_layout, _header_record, _Layout
from .names import PFFName, parse_filename

# ----------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class FileInfo:
    """What the first frame of a file says about the rest (see :func:`scan_file`)."""

    path: str
    dp: str
    size: int  #: file size in bytes
    frame_size: int  #: size of the first frame
    fixed: bool  #: every frame sits at i * frame_size (checked on a sample; fast path)
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
        self.prod = data_product(dp) if dp is not None else identify(path)[1]
        self.strict = strict
        self.f = open(self.path, "rb")
        self.size = os.fstat(self.f.fileno()).st_size
        self.layout: _Layout | None = None
        self.block_frames = block_frames
        # frames checked per block: small after a misfit, doubling while all fit, so
        # a file with frequent damage is not re-read block after block
        self._block = 16
        self._buf = np.empty(0, dtype=np.uint8)
        self.damage: list[Damage] = []
        self._reported = 0
        self._memo: tuple[int, Any] | None = None

    def close(self) -> None:
        self.f.close()

    def _pread(self, offset: int, n: int) -> bytes:
        return os.pread(self.f.fileno(), max(0, n), offset)

    # --- general path -----------------------------------------------------------
    def parse_one(
        self, offset: int, derive: bool = True
    ) -> tuple[np.ndarray, np.ndarray, int, _Layout | None]:
        """Header record, image, end offset and layout of the frame at ``offset``
        (the layout only with ``derive``: probing for frames needs none).

        Raises a PFFError subclass describing the damage at ``offset``.
        """
        if self._memo is not None and self._memo[0] == offset:
            rec, pix, end, raw, leaves = self._memo[1]  # probed already
            layout = _derive_layout(raw, leaves, self.prod) if derive else None
            return rec, pix, end, layout
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
        self._memo = (offset, (rec, pix, frame_end, raw, leaves))
        layout = _derive_layout(raw, leaves, prod) if derive else None
        return rec, pix, frame_end, layout

    def _parses(self, offset: int) -> bool:
        """A whole frame starts at ``offset``: a valid header, ``*`` and the image.

        What follows it is not required to be a header, so an intact frame just before
        a damaged stretch is found too; a frame cut short is caught by
        :meth:`check_next` when it is read.
        """
        try:
            self.parse_one(offset, derive=False)
        except PFFError:
            return False
        return True

    def find_next_frame(self, start: int, stop: int | None = None) -> int | None:
        """Offset of the next good frame at or after ``start`` (before ``stop``)."""
        window = 1 << 20
        stop = self.size if stop is None else min(stop, self.size)
        pos = start
        while pos < stop:
            chunk = self._pread(pos, min(window, stop - pos) + 1)
            i = chunk.find(b"{")
            while 0 <= i < min(window, stop - pos, len(chunk)):
                if chunk[i + 1 : i + 2] in (b" ", b"\n", b'"') and self._parses(pos + i):
                    return pos + i
                i = chunk.find(b"{", i + 1)
            pos += window
        return None

    def check_next(self, offset: int, end: int) -> None:
        """Raise PFFFrameSizeError for the frame at ``offset`` if it is cut short.

        Its size is right when the byte at its ``end`` starts a header or is the end of
        the file. Otherwise, when a good frame starts inside it, its image runs into
        that frame (bytes of it were lost) and it is damaged. If none does, the frame is
        whole and what follows it is damage of its own (inserted bytes, or a damaged
        next frame): the frame is kept, and the reader reports the stretch after it.
        """
        if end >= self.size:
            return
        nxt = self._pread(end, 1)
        if nxt == b"{" and self._parses(end):
            return  # (a "{" inside the next header, where bytes were cut, is not one)
        found = self.find_next_frame(offset + 1, end)
        if found is None:
            return
        expected = end - offset
        raise PFFFrameSizeError(
            f"a good header starts at byte {found}, inside this frame: it is "
            f"{found - offset} bytes, but a {self.prod.name} frame with its header is "
            f"{expected} bytes ({self.prod.shape[0]}x{self.prod.shape[1]} pixels x "
            f"{self.prod.bpp} byte(s)); bytes of it are missing",
            self.path,
            offset,
        )

    def _after_frame(self, last: int, pos: int, stop: int, exc: PFFError) -> PFFError:
        """The error for bytes that follow a whole frame where a header should be."""
        if exc.offset != pos or self._pread(pos, 1) == b"{":
            return exc  # a header that starts right but is damaged
        fs = pos - last
        n = stop - pos
        if n % fs == 0:
            return exc  # whole frames whose headers are damaged
        upto = (
            "the end of the file"
            if stop >= self.size
            else f"the next good header at byte {stop}"
        )
        return PFFFrameSizeError(
            f"expected the next header or the end of the file, found {n} unexpected "
            f"byte(s) up to {upto}: bytes inserted after the frame at byte {last}, "
            "or that frame is "
            f"{fs + n} bytes where a {self.prod.name} frame with its header is {fs} "
            "(then its pixels are shifted)",
            self.path,
            pos,
        )

    # --- the loop -----------------------------------------------------------------
    def frames(
        self, offset: int = 0, max_frames: int | None = None, chunk_frames: int = 65536
    ) -> Iterator[Frames]:
        """Yield chunks of good frames from ``offset``; raise or skip at damage."""
        prod = self.prod
        # no more frames than the bytes left can hold (a frame is at least its image,
        # "*" and a 4-byte header), nor than asked for: small reads stay cheap
        room = (self.size - offset) // (prod.image_bytes + 5) + 1
        cap = int(min(chunk_frames, room, max_frames if max_frames is not None else room))
        cap = max(cap, 1)
        limit = max_frames if max_frames is not None else np.inf
        pending: PFFError | None = None
        last: int | None = None  # offset of the good frame that ends at pos
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
                        self._block,
                        cap - n,
                        limit - total,
                        (self.size - pos) // fs,
                    )
                )
                if k > 0:
                    trailing = pos + k * fs < self.size
                    nbytes = k * fs
                    if self._buf.size < nbytes:
                        self._buf = np.empty(nbytes, dtype=np.uint8)
                    buf = self._buf[:nbytes]
                    self.f.seek(pos)
                    if self.f.readinto(memoryview(buf)) != nbytes:
                        raise OSError(f"{self.path}: short read at byte {pos}")
                    block = buf.reshape(k, fs)
                    good, values = lay.check(block)
                    # A frame is taken here only when the frame after it fits the
                    # template too (or it ends the file): the one before a misfit goes
                    # to the general path, which checks that nothing was cut from it;
                    # the last of a block is checked again with the next block.
                    all_good = bool(good.all())
                    self._block = (
                        min(2 * self._block, self.block_frames) if all_good else 16
                    )
                    if all_good:
                        j = k - 1 if trailing else k
                    else:
                        j = max(int(np.argmin(good)) - 1, 0)
                    if j > 0:
                        sl = slice(n, n + j)
                        lay.store(values[:j], headers[sl])
                        images[sl] = (
                            block[:j, len(lay.template) :]
                            .view(prod.pixel_dtype)
                            .reshape(j, *prod.shape)
                        )
                        offsets[sl] = pos + fs * np.arange(j)
                        last = pos + (j - 1) * fs
                        n += j
                        total += j
                        pos += j * fs
                    if j == k or (all_good and j > 0):
                        continue
            # general path: one frame at pos
            try:
                rec, pix, end, layout = self.parse_one(pos)
                self.check_next(pos, end)
            except PFFError as exc:
                resume = self.find_next_frame(pos + 1)
                stop = resume if resume is not None else self.size
                if last is not None and isinstance(exc, PFFHeaderError):
                    exc = self._after_frame(last, pos, stop, exc)
                if self.strict:
                    pending = exc
                    break
                self.damage.append(Damage(self.path, pos, exc.kind, exc.detail, stop - pos))
                pos = stop
                last = None
                self.layout = None
                continue
            last = pos
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
    prod = identify(path, dp)[1]
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
        fixed = layout is not None and _aligned(reader, layout, reader.size // fs)
        return FileInfo(
            reader.path,
            reader.prod.name,
            reader.size,
            fs,
            fixed,
            reader.size // fs,
            reader.size % fs,
        )
    finally:
        reader.close()


#: Frames :func:`scan_file` checks at their fixed-width offsets, the last among them.
_ALIGNMENT_SAMPLES = 16


def _aligned(reader: _Reader, layout: _Layout, n_frames: int) -> bool:
    """Whether frames spread through the file, up to the last whole one, start where a
    fixed width puts them (``i * frame_size``) and fit the first header's template.

    A file whose headers change width (a ``pkt_nsec`` of 1e9 or more prints one
    character more), or that holds inserted or missing bytes, fails: its frames are
    then counted and read by a scan, which resynchronises, so that frame ``i`` means
    the same frame to every reader. A frame damaged in place (its bytes changed, its
    size not) is not a shift: each sample is a run of three frames, and one of them
    at its place is enough.
    """
    if n_frames <= 1:
        return True
    fs = layout.frame_size
    run = min(3, n_frames)
    k = min(_ALIGNMENT_SAMPLES, n_frames)
    starts = np.unique(np.linspace(0, n_frames - run, k).round().astype(np.int64))
    for a in starts:
        got = reader._pread(int(a) * fs, run * fs)
        if len(got) != run * fs:
            return False
        block = np.frombuffer(got, np.uint8).reshape(run, fs)
        if not layout.check(block.copy())[0].any():
            return False
    return True


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
    for part in np.split(np.arange(idx.size), bounds):
        sel = idx[part]
        lo, hi = int(sel[0]), int(sel[-1]) + 1
        # a wanted frame is taken when the frame after it fits the template too (or
        # it ends the file); others go through the general path
        buf = np.frombuffer(reader._pread(lo * fs, (hi - lo + 1) * fs), dtype=np.uint8)
        m = buf.size // fs
        rows = sel - lo
        whole = buf[: m * fs].reshape(m, fs)
        check = np.unique(np.concatenate([rows, rows + 1]))
        check = check[check < m]
        ok = np.zeros(m + 1, dtype=bool)
        ok_check, values_check = layout.check(whole[check])
        ok[check] = ok_check
        block = whole[rows]
        values = values_check[np.searchsorted(check, rows)]
        good = ok[rows] & (ok[rows + 1] | ((lo + rows + 1) * fs == reader.size))
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


def list_damage(path: str | os.PathLike, dp: str | None = None) -> list[Damage]:
    """Every damaged stretch of a file: path, byte offset, length and kind.

    What ``phbook inspect --damage`` prints; the same stretches a ``strict=False`` read
    skips (the frames on both sides of each are read).
    """
    damage: list[Damage] = []
    for chunk in iter_chunks(path, 1 << 16, dp=dp, strict=False):
        damage.extend(chunk.damage)
    return damage


def identify(
    path: str | os.PathLike, dp: str | None = None
) -> tuple[PFFName | None, DataProduct]:
    """The parts of a file's name and the product it is read as: one rule, used by
    every reader and command.

    The product is ``dp`` when given (``--dp``), else the one in the file name. A
    ``.pff`` file whose name does not follow the PANOSETI scheme is read when its
    product is given, or when its first frame tells it unambiguously (a one-quabo
    header is ``ph256``; a four-quabo header with a 1,024-byte image is ``img8``);
    otherwise :class:`PFFNameError` says what is wrong with the name and what to do.
    """
    try:
        name = parse_filename(path)
    except PFFNameError as exc:
        if not os.fspath(path).endswith(".pff"):
            raise
        if dp is not None:
            return None, data_product(dp)
        sniffed = _sniff_product(path)
        if sniffed is None:
            raise PFFNameError(
                f"{exc.detail}; its first frame does not tell its product either: "
                "rename it start_<time>.dp_<product>.bpp_<n>.module_<id>.seqno_<k>.pff "
                "or give the product (--dp)",
                path=path,
            ) from None
        return None, sniffed
    return name, data_product(dp) if dp is not None else name.product


def _sniff_product(path: str | os.PathLike) -> DataProduct | None:
    """The product of a file from its first frame, where that is unambiguous."""
    try:
        with open(path, "rb") as f:
            head = f.read(_MAX_HEADER + 4096)
    except OSError:
        return None
    end = head.find(b"\n\n*")
    if not head.startswith(b"{") or end < 0:
        return None
    try:
        parsed = json.loads(head[:end])
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(parsed, dict):
        return None
    if "quabo_num" in parsed:
        return DATA_PRODUCTS["ph256"]
    if "quabo_0" in parsed:
        image = end + 3
        after = head[image + 1024 : image + 1025]
        if after == b"{" or (not after and os.path.getsize(path) == image + 1024):
            return DATA_PRODUCTS["img8"]
    return None
