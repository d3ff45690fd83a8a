"""The PANOSETI file format (PFF): read, write and name pulse-height and image files.

A PFF file is a sequence of frames. Each frame is a header block, JSON text that
starts with ``{`` and ends with two newlines, followed by an image block, one byte ``*``
and the raw little-endian pixels::

    { "quabo_num": 3, "pkt_num":       5124, ... "tv_usec": 985339}\\n\\n*<512 bytes>

The data acquisition software prints every header with fixed-width ``printf`` fields, so
in practice all frames of a file have the same size (636 bytes for ``ph256``). This
module reads such files through a *fast path*: a block of frames is viewed as a 2-D byte
array, the fixed text of every header is checked against a template in a few vectorised
comparisons and the digits of every field are decoded at once, with no per-frame JSON
parsing. Any frame the template does not fit goes through the *general path*, which
parses its JSON and finds its image block by reading the file, so files whose headers
change width, or that are damaged, are read correctly too.

Data products (the ``dp_`` part of a file name):

========  ========  ===========  ======================================================
product   image     pixel type   header
========  ========  ===========  ======================================================
ph256     16 x 16   int16        one quabo: ``quabo_num, pkt_num, pkt_tai, pkt_nsec,
                                 tv_sec, tv_usec``
ph1024    32 x 32   int16        four sub-objects ``quabo_0`` ... ``quabo_3``, each with
                                 ``pkt_num, pkt_tai, pkt_nsec, tv_sec, tv_usec``
img16     32 x 32   uint16       as ph1024
img8      32 x 32   uint8        as ph1024
========  ========  ===========  ======================================================

Pulse-height pixels are baseline-subtracted and therefore **signed**: noise sits near 0
with negative values, which a reader that takes the bytes as ``uint16`` sees wrapped to
about 65535. This module reads them as ``int16``, so the wrap never happens.

Frame times follow the White Rabbit (WR) rule of the PANOSETI software
(``wr_to_unix`` in ``util/pff.py`` of the panoseti/panoseti repository): the header
holds only the low 10 bits of the WR (TAI) second, ``pkt_tai``, its nanoseconds
``pkt_nsec`` and the host's Unix clock ``tv_sec``/``tv_usec``. With
``d = (tv_sec - pkt_tai + 37) % 1024``, ``d == 0`` gives ``tv_sec + pkt_nsec/1e9``,
``d == 1`` gives ``tv_sec - 1 + ...`` and ``d == 1023`` gives ``tv_sec + 1 + ...``; any
other ``d`` means the two clocks disagree.
See :func:`frame_times` for what is returned then.

Damaged files raise a :class:`PFFError` subclass that names the file and the byte
offset of the damage; the frames before it are kept (``error.frames``). With
``strict=False`` damaged stretches are skipped, counted and reported instead.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Any

import numpy as np

__all__ = [
    "DATA_PRODUCTS",
    "DataProduct",
    "PFFError",
    "PFFNameError",
    "PFFHeaderError",
    "PFFTruncatedError",
    "PFFFrameSizeError",
    "ClockWarning",
    "Damage",
    "Frames",
    "PFFName",
    "RunName",
    "CLOCKS_DISAGREE",
    "NSEC_PLACEHOLDER",
    "NO_PACKET",
    "NSEC_PLACEHOLDER_VALUE",
    "parse_filename",
    "format_filename",
    "parse_run_name",
    "format_run_name",
    "parse_time",
    "data_product",
    "wr_to_unix",
    "frame_times",
    "empty_headers",
    "encode_frames",
    "write_frames",
    "read_frames",
    "read_frames_at",
    "iter_chunks",
    "scan_file",
    "FileInfo",
]

# ----------------------------------------------------------------------------------
# Data products


@dataclass(frozen=True)
class DataProduct:
    """What a data product (``ph256``, ``ph1024``, ``img16``, ``img8``) holds."""

    name: str
    shape: tuple[int, int]
    pixel_dtype: np.dtype
    quabos: int  # 1: a one-quabo header (ph256); 4: four quabo sub-objects

    @property
    def bpp(self) -> int:
        """Bytes per pixel, as in the ``bpp_`` part of a file name."""
        return self.pixel_dtype.itemsize

    @property
    def image_bytes(self) -> int:
        """Bytes of one image block after its ``*`` marker."""
        return self.shape[0] * self.shape[1] * self.bpp

    @property
    def header_dtype(self) -> np.dtype:
        """The numpy structured dtype holding this product's header fields."""
        return _PH256_HEADER if self.quabos == 1 else _QUAD_HEADER

    @property
    def frame_size(self) -> int:
        """Bytes of one frame written with the DAQ's fixed-width header format."""
        return _canonical_layout(self.name).frame_size


_PH256_HEADER = np.dtype(
    [
        ("quabo_num", "u1"),
        ("pkt_num", "<u4"),
        ("pkt_tai", "<u2"),
        ("pkt_nsec", "<u4"),
        ("tv_sec", "<i8"),
        ("tv_usec", "<i4"),
    ]
)
_QUABO_FIELDS = ("pkt_num", "pkt_tai", "pkt_nsec", "tv_sec", "tv_usec")
_QUAD_HEADER = np.dtype([(name, _PH256_HEADER[name], (4,)) for name in _QUABO_FIELDS])

#: The data products of PANOSETI files, by the name used in file names.
DATA_PRODUCTS: dict[str, DataProduct] = {
    "ph256": DataProduct("ph256", (16, 16), np.dtype("<i2"), 1),
    "ph1024": DataProduct("ph1024", (32, 32), np.dtype("<i2"), 4),
    "img16": DataProduct("img16", (32, 32), np.dtype("<u2"), 4),
    "img8": DataProduct("img8", (32, 32), np.dtype("u1"), 4),
}

#: ``pkt_nsec`` value the DAQ writes when the packet's nanoseconds were invalid (it
#: clamps anything above 999,999,999 to it).
NSEC_PLACEHOLDER_VALUE = 999_999_999

#: Bits of :attr:`Frames.time_flags`.
CLOCKS_DISAGREE = 1  #: the WR and host clocks differ by more than a second
NSEC_PLACEHOLDER = 2  #: ``pkt_nsec`` is the 999999999 placeholder
NO_PACKET = 4  #: four-quabo header in which no quabo has a packet (all zero)

_MAX_HEADER = 1 << 16  # a header longer than this is taken as corrupt


def data_product(dp: str | DataProduct) -> DataProduct:
    """The :class:`DataProduct` named ``dp``; a clear error for an unknown name."""
    if isinstance(dp, DataProduct):
        return dp
    try:
        return DATA_PRODUCTS[str(dp)]
    except KeyError:
        raise ValueError(
            f"unknown data product {dp!r}; known products: {', '.join(DATA_PRODUCTS)}"
        ) from None


# ----------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class Damage:
    """One damaged stretch of a file, skipped by a ``strict=False`` read."""

    path: str
    offset: int  #: byte offset where the damage starts
    kind: str  #: ``truncated``, ``header`` or ``frame_size``
    message: str
    skipped_bytes: int  #: bytes skipped before the next good frame (or the file end)


class PFFError(ValueError):
    """A PFF file could not be read; names the file and the byte offset.

    ``frames`` holds the good frames read before the damage (a :class:`Frames`,
    possibly empty) when the error comes from :func:`read_frames`.
    """

    kind = "pff"

    def __init__(
        self,
        message: str,
        path: str | os.PathLike | None = None,
        offset: int | None = None,
    ):
        self.path = None if path is None else str(path)
        self.offset = offset
        self.frames: Frames | None = None
        where = ""
        if path is not None:
            where = f"{path}"
            if offset is not None:
                where += f" at byte {offset}"
            where += ": "
        super().__init__(where + message)
        self.detail = message


class PFFNameError(PFFError):
    """A file or run-folder name that does not follow the PANOSETI naming scheme."""

    kind = "name"


class PFFHeaderError(PFFError):
    """A header block that is not the JSON of the file's data product."""

    kind = "header"


class PFFTruncatedError(PFFError):
    """The file ends inside a frame."""

    kind = "truncated"


class PFFFrameSizeError(PFFError):
    """A frame is not the size its data product implies."""

    kind = "frame_size"


class ClockWarning(UserWarning):
    """Frames whose White Rabbit and host clocks disagree (see :func:`frame_times`)."""


# ----------------------------------------------------------------------------------
# Names of files and run folders

_TIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2})([:_-])(\d{2})\5(\d{2})(?:\.\d+)?(Z|[+-]00:?00)?$"
)


def parse_time(text: str) -> datetime:
    """Parse a start time as written in PANOSETI names (UTC).

    Three spellings occur: ``2024-07-25T04:34:46Z`` (the DAQ), ``2024-07-25T04_34_46Z``
    and ``2024-07-25T04-34-46Z`` (copies made for file systems that forbid ``:``).
    """
    m = _TIME_RE.match(text)
    if m is None:
        raise ValueError(
            f"{text!r} is not a start time like 2024-07-25T04:34:46Z "
            "(':' may also be written '_' or '-')"
        )
    y, mo, d, h, _, mi, s, _ = m.groups()
    try:
        return datetime(
            int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=timezone.utc
        )
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid time: {exc}") from None


def _format_time(t: datetime | float, sep: str = ":") -> str:
    if not isinstance(t, datetime):
        t = datetime.fromtimestamp(float(t), tz=timezone.utc)
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    t = t.astimezone(timezone.utc)
    if sep not in (":", "_", "-"):
        raise ValueError(f"time separator must be ':', '_' or '-', got {sep!r}")
    return t.strftime(f"%Y-%m-%dT%H{sep}%M{sep}%SZ")


def _split_pairs(stem: str, what: str, name: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for piece in stem.split("."):
        key, sep, value = piece.partition("_")
        if not sep or not key or not value:
            raise PFFNameError(
                f"{what} name component {piece!r} is not key_value", path=name
            )
        if key in pairs:
            raise PFFNameError(f"{what} name repeats the key {key!r}", path=name)
        pairs[key] = value
    return pairs


@dataclass(frozen=True)
class PFFName:
    """The parts of a PFF file name, e.g.
    ``start_2025-08-02T05:31:36Z.dp_ph256.bpp_2.module_254.seqno_0.pff``."""

    start: datetime
    dp: str
    bpp: int
    module: int
    seqno: int
    dome: int | None = None  #: older DAQ versions wrote a ``dome_<n>`` part

    @property
    def product(self) -> DataProduct:
        return DATA_PRODUCTS[self.dp]


def parse_filename(name: str | os.PathLike) -> PFFName:
    """Parse a PFF file name (the folder part of a path is ignored).

    Raises :class:`PFFNameError` naming the file when a part is missing or malformed,
    the data product is unknown or its bytes per pixel do not match the product.
    """
    base = os.path.basename(os.fspath(name))
    if not base.endswith(".pff"):
        raise PFFNameError("a PFF file name must end with .pff", path=base)
    pairs = _split_pairs(base[:-4], "file", base)
    missing = [k for k in ("start", "dp", "bpp", "module", "seqno") if k not in pairs]
    if missing:
        raise PFFNameError(
            f"file name lacks {', '.join(missing)} (expected "
            "start_<time>.dp_<product>.bpp_<n>.module_<id>.seqno_<k>.pff)",
            path=base,
        )
    unknown = sorted(set(pairs) - {"start", "dp", "bpp", "module", "seqno", "dome"})
    if unknown:
        raise PFFNameError(f"unknown file name key(s): {', '.join(unknown)}", path=base)
    try:
        start = parse_time(pairs["start"])
    except ValueError as exc:
        raise PFFNameError(str(exc), path=base) from None
    if pairs["dp"] not in DATA_PRODUCTS:
        raise PFFNameError(
            f"unknown data product dp_{pairs['dp']}; known: {', '.join(DATA_PRODUCTS)}",
            path=base,
        )
    ints = {}
    for key in ("bpp", "module", "seqno", "dome"):
        if key in pairs:
            if not pairs[key].isdigit():
                raise PFFNameError(
                    f"{key}_{pairs[key]} is not a non-negative integer", path=base
                )
            ints[key] = int(pairs[key])
    dp = DATA_PRODUCTS[pairs["dp"]]
    if ints["bpp"] != dp.bpp:
        raise PFFNameError(
            f"bpp_{ints['bpp']} does not match dp_{dp.name}, which has {dp.bpp} "
            "byte(s) per pixel",
            path=base,
        )
    return PFFName(
        start, dp.name, ints["bpp"], ints["module"], ints["seqno"], ints.get("dome")
    )


def format_filename(
    start: datetime | float,
    dp: str,
    module: int,
    seqno: int = 0,
    *,
    time_sep: str = ":",
) -> str:
    """The PFF file name the DAQ writes for these parts (``time_sep`` picks the
    spelling of the time: ``:``, ``_`` or ``-``)."""
    prod = data_product(dp)
    return (
        f"start_{_format_time(start, time_sep)}.dp_{prod.name}.bpp_{prod.bpp}"
        f".module_{int(module)}.seqno_{int(seqno)}.pff"
    )


@dataclass(frozen=True)
class RunName:
    """The parts of a run folder name,
    ``obs_<observatory>.start_<time>.runtype_<type>.pffd``."""

    observatory: str
    start: datetime
    run_type: str


def parse_run_name(name: str | os.PathLike) -> RunName:
    """Parse a run folder name; :class:`PFFNameError` when it breaks the scheme."""
    base = os.path.basename(os.path.normpath(os.fspath(name)))
    if not base.endswith(".pffd"):
        raise PFFNameError("a run folder name must end with .pffd", path=base)
    pairs = _split_pairs(base[:-5], "run folder", base)
    missing = [k for k in ("obs", "start", "runtype") if k not in pairs]
    if missing:
        raise PFFNameError(
            f"run folder name lacks {', '.join(missing)} (expected "
            "obs_<observatory>.start_<time>.runtype_<type>.pffd)",
            path=base,
        )
    try:
        start = parse_time(pairs["start"])
    except ValueError as exc:
        raise PFFNameError(str(exc), path=base) from None
    return RunName(pairs["obs"], start, pairs["runtype"])


def format_run_name(
    observatory: str, start: datetime | float, run_type: str, *, time_sep: str = ":"
) -> str:
    """The run folder name the DAQ writes."""
    for what, value in (("observatory", observatory), ("run_type", run_type)):
        if "." in value or not value:
            raise ValueError(f"{what} {value!r} must be non-empty and contain no '.'")
    start_text = _format_time(start, time_sep)
    return f"obs_{observatory}.start_{start_text}.runtype_{run_type}.pffd"


# ----------------------------------------------------------------------------------
# Times


def wr_to_unix(pkt_tai, pkt_nsec, tv_sec):
    """White Rabbit packet time in Unix seconds (float64); NaN where clocks disagree.

    Vectorised form of the rule in the PANOSETI software (see the module docstring).
    float64 resolves about 0.2 microseconds at today's Unix times; the raw header fields
    keep the full nanosecond resolution.
    """
    pkt_tai = np.asarray(pkt_tai, dtype=np.int64)
    tv_sec = np.asarray(tv_sec, dtype=np.int64)
    nsec = np.asarray(pkt_nsec, dtype=np.float64) * 1e-9
    d = (tv_sec - pkt_tai + 37) % 1024
    sec = np.where(d == 1, tv_sec - 1, np.where(d == 1023, tv_sec + 1, tv_sec))
    ok = (d == 0) | (d == 1) | (d == 1023)
    return np.where(ok, sec + nsec, np.nan)


def frame_times(headers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unix time (float64 seconds) and flags of every frame from its header fields.

    The time is the White Rabbit time where the rule resolves it and ``pkt_nsec`` is a
    real value. Otherwise it is the host clock ``tv_sec + tv_usec/1e6`` (accurate to
    about a millisecond) and ``flags`` says why: :data:`CLOCKS_DISAGREE` (the WR and
    host seconds differ by more than one: reported, never guessed at) and/or
    :data:`NSEC_PLACEHOLDER` (``pkt_nsec`` is 999999999, which the DAQ writes when the
    nanoseconds were invalid). For four-quabo headers the first quabo with a packet
    (``tv_sec > 0``) is used; :data:`NO_PACKET` marks frames without any (time NaN).
    """
    headers = np.asarray(headers)
    names = headers.dtype.names or ()
    if "quabo_num" in names:
        tai, nsec = headers["pkt_tai"], headers["pkt_nsec"]
        sec, usec = headers["tv_sec"], headers["tv_usec"]
        missing = np.zeros(len(headers), dtype=bool)
    else:
        have = headers["tv_sec"] > 0
        q = np.argmax(have, axis=1)
        rows = np.arange(len(headers))
        tai, nsec = headers["pkt_tai"][rows, q], headers["pkt_nsec"][rows, q]
        sec, usec = headers["tv_sec"][rows, q], headers["tv_usec"][rows, q]
        missing = ~have.any(axis=1)
    sec = sec.astype(np.int64)
    d = (sec - tai.astype(np.int64) + 37) % 1024
    ok = (d == 0) | (d == 1) | (d == 1023)
    placeholder = nsec == NSEC_PLACEHOLDER_VALUE
    wr_sec = sec - (d == 1) + (d == 1023)
    host = sec + usec * 1e-6
    t = np.where(ok & ~placeholder, wr_sec + nsec * 1e-9, host)
    flags = (
        np.where(ok, 0, CLOCKS_DISAGREE)
        | np.where(placeholder, NSEC_PLACEHOLDER, 0)
        | np.where(missing, NO_PACKET, 0)
    ).astype(np.uint8)
    t = np.where(missing, np.nan, t)
    return t, flags


# ----------------------------------------------------------------------------------
# Frames


@dataclass
class Frames:
    """Frames read from (or to be written to) one PFF file.

    ``images`` is ``(n, H, W)`` in the product's pixel type (``int16`` for pulse
    heights); ``headers`` is a numpy structured array of the raw header fields
    (:attr:`DataProduct.header_dtype`); ``offsets`` are the byte offsets of the frames
    in the file; ``time``/``time_flags`` come from :func:`frame_times`. ``damage`` lists
    what a ``strict=False`` read skipped.
    """

    images: np.ndarray
    headers: np.ndarray
    offsets: np.ndarray
    dp: str
    path: str | None = None
    damage: list[Damage] = field(default_factory=list)
    _time: np.ndarray | None = field(default=None, repr=False)
    _flags: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        name = os.path.basename(self.path) if self.path else "memory"
        return (
            f"Frames({len(self)} x {self.dp} {tuple(self.images.shape[1:])} from "
            f"{name}, {len(self.damage)} damaged stretch(es) skipped)"
        )

    def _times(self) -> None:
        if self._time is None:
            self._time, self._flags = frame_times(self.headers)

    @property
    def time(self) -> np.ndarray:
        """Unix time of every frame, float64 seconds (see :func:`frame_times`)."""
        self._times()
        return self._time

    @property
    def time_flags(self) -> np.ndarray:
        """Bit flags of :attr:`time`: :data:`CLOCKS_DISAGREE`, :data:`NSEC_PLACEHOLDER`,
        :data:`NO_PACKET`."""
        self._times()
        return self._flags

    @property
    def quabo(self) -> np.ndarray:
        """Quabo (0-3) of every frame for ``ph256``; -1 for four-quabo products."""
        if "quabo_num" in (self.headers.dtype.names or ()):
            return self.headers["quabo_num"].astype(np.int8)
        return np.full(len(self), -1, dtype=np.int8)

    @property
    def n_damaged(self) -> int:
        """Damaged stretches skipped by a ``strict=False`` read."""
        return len(self.damage)

    def __getitem__(self, index) -> Frames:
        if isinstance(index, (int, np.integer)):
            i = int(index) + (len(self) if index < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"frame {int(index)} out of range for {len(self)}")
            index = slice(i, i + 1)
        out = Frames(
            self.images[index],
            self.headers[index],
            self.offsets[index],
            self.dp,
            self.path,
            list(self.damage),
        )
        if self._time is not None:
            out._time, out._flags = self._time[index], self._flags[index]
        return out

    @classmethod
    def empty(cls, dp: str, path: str | None = None) -> Frames:
        prod = data_product(dp)
        return cls(
            np.empty((0, *prod.shape), prod.pixel_dtype),
            np.empty(0, prod.header_dtype),
            np.empty(0, np.int64),
            prod.name,
            path,
        )

    @classmethod
    def concat(cls, parts: Sequence[Frames]) -> Frames:
        """One :class:`Frames` from several (of the same product)."""
        parts = list(parts)
        if not parts:
            raise ValueError("concat needs at least one Frames")
        dps = {p.dp for p in parts}
        if len(dps) > 1:
            raise ValueError(f"cannot concatenate frames of products {sorted(dps)}")
        paths = {p.path for p in parts}
        damage = [d for p in parts for d in p.damage]
        return cls(
            np.concatenate([p.images for p in parts]),
            np.concatenate([p.headers for p in parts]),
            np.concatenate([p.offsets for p in parts]),
            parts[0].dp,
            parts[0].path if len(paths) == 1 else None,
            list(dict.fromkeys(damage)),
        )


def empty_headers(n: int, dp: str) -> np.ndarray:
    """A zero-filled header array for ``n`` frames of product ``dp`` (for writers)."""
    return np.zeros(n, dtype=data_product(dp).header_dtype)


# ----------------------------------------------------------------------------------
# Header layouts: the fixed-width text of one header, as a template


_NUM_RE = re.compile(rb'(?<=": )( *-?\d+)(?=[,}])')
_C_FORMAT = (
    ("pkt_num", 10),
    ("pkt_tai", 4),
    ("pkt_nsec", 9),
    ("tv_sec", 10),
    ("tv_usec", 6),
)


@dataclass(frozen=True, eq=False)
class _Layout:
    """Byte template of a fixed-width header (plus ``\\n\\n*``) and its numbers.

    ``spans`` are (start, width, field, quabo) of every number; ``quabo`` is None for a
    one-quabo header. The fast path accepts a frame when all bytes outside the spans
    equal the template and every span is blank-padded decimal digits.
    """

    dp: DataProduct
    template: bytes  # header + b"\n\n*"
    spans: tuple[tuple[int, int, str, int | None], ...]

    def __post_init__(self):
        n = len(self.template)
        fixed = np.ones(n, dtype=bool)
        for s, w, _, _ in self.spans:
            fixed[s : s + w] = False
        tmpl = np.frombuffer(self.template, dtype=np.uint8)
        cols = np.concatenate([np.arange(s, s + w) for s, w, _, _ in self.spans])
        place = np.concatenate(
            [10.0 ** np.arange(w - 1, -1, -1) for _, w, _, _ in self.spans]
        )
        P = np.zeros((len(cols), len(self.spans)))
        j = 0
        within = np.ones(max(len(cols) - 1, 0), dtype=bool)
        last = []
        for f, (_, w, _, _) in enumerate(self.spans):
            P[j : j + w, f] = place[j : j + w]
            if j > 0:
                within[j - 1] = False
            j += w
            last.append(j - 1)
        # Compare fixed bytes word by word where the frame size allows it.
        fs = self.frame_size
        wsize = 4 if fs % 4 == 0 else (2 if fs % 2 == 0 else 1)
        nw = -(-n // wsize)
        pad = nw * wsize - n
        mask = np.concatenate([fixed, np.zeros(pad, bool)]).astype(np.uint8) * 255
        expect = np.concatenate([tmpl, np.zeros(pad, np.uint8)]) & mask
        wdt = np.dtype(f"<u{wsize}")
        wmask, wexpect = mask.view(wdt), expect.view(wdt)
        wsel = np.flatnonzero(wmask)
        object.__setattr__(self, "_wsel", wsel)
        object.__setattr__(self, "_wmask", wmask[wsel, None])
        object.__setattr__(self, "_wexpect", wexpect[wsel, None])
        object.__setattr__(self, "_wdt", wdt)
        object.__setattr__(self, "_nw", nw)
        object.__setattr__(self, "_cols", cols)
        object.__setattr__(self, "_place", P)
        pairs = np.nonzero(within)[0]
        starts = np.cumsum([0] + [w for _, w, _, _ in self.spans])[:-1]
        object.__setattr__(self, "_pairs", pairs)
        object.__setattr__(self, "_pair_at_start", np.isin(pairs, starts))
        object.__setattr__(self, "_pair_prev", np.maximum(pairs - 1, 0))
        object.__setattr__(self, "_last", np.asarray(last))
        object.__setattr__(self, "_colplace", place)
        object.__setattr__(
            self,
            "_colspan",
            np.repeat(np.arange(len(self.spans)), [w for _, w, _, _ in self.spans]),
        )
        object.__setattr__(self, "_tmpl", tmpl)

    @property
    def header_len(self) -> int:
        return len(self.template) - 3

    @property
    def frame_size(self) -> int:
        return len(self.template) + self.dp.image_bytes

    # --- reading -----------------------------------------------------------------
    def check(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(good, values) for a (k, frame_size) uint8 block of frames."""
        # fixed bytes, word by word; laid out (word, frame) so that the reduction
        # runs along the frames, which numpy vectorises
        words = block.view(self._wdt)[:, : self._nw].T[self._wsel]
        words ^= self._wexpect
        words &= self._wmask
        bad = np.bitwise_or.reduce(words, axis=0) != 0
        c = block[:, self._cols]
        d = (c | 16) - 48  # blank (32) -> 0, digits -> 0..9; only 33..41 also <= 9
        isdig = c >= 48
        bad |= ((d > 9) | (~isdig & (c != 32))).any(axis=1)
        if len(self._pairs):
            p = self._pairs
            nxt = isdig[:, p + 1]
            # a blank after a digit inside one number
            bad |= (isdig[:, p] & ~nxt).any(axis=1)
            # a leading zero (JSON forbids "007")
            first = self._pair_at_start | ~isdig[:, self._pair_prev]
            bad |= ((c[:, p] == 48) & nxt & first).any(axis=1)
        bad |= ~isdig[:, self._last].all(axis=1)  # every number has a last digit
        values = (d.astype(np.float64) @ self._place).astype(np.int64)
        return ~bad, values

    def store(self, values: np.ndarray, out: np.ndarray) -> None:
        """Put span values (k, n_spans) into a structured header array ``out`` (k,)."""
        for j, (_, _, name, q) in enumerate(self.spans):
            if q is None:
                out[name] = values[:, j]
            else:
                out[name][:, q] = values[:, j]

    # --- writing -----------------------------------------------------------------
    def encode(self, headers: np.ndarray) -> np.ndarray:
        """(n, len(template)) uint8 header bytes for a structured header array."""
        n = len(headers)
        vals = np.empty((n, len(self.spans)), dtype=np.int64)
        for j, (_, w, name, q) in enumerate(self.spans):
            v = headers[name] if q is None else headers[name][:, q]
            v = np.asarray(v, dtype=np.int64)
            bad = (v < 0) | (v >= 10**w)
            if bad.any():
                i = int(np.argmax(bad))
                label = name if q is None else f"quabo_{q}.{name}"
                raise ValueError(
                    f"header field {label} of frame {i} is {int(v[i])}, which does not "
                    f"fit the {w}-character field of the {self.dp.name} header "
                    f"(0 to {10**w - 1})"
                )
            vals[:, j] = v
        cols = vals[:, self._colspan]
        place = self._colplace.astype(np.int64)
        digits = (cols // place) % 10 + 48
        blank = (cols < place) & (place > 1)
        chars = np.where(blank, 32, digits).astype(np.uint8)
        out = np.empty((n, len(self.template)), dtype=np.uint8)
        out[:] = self._tmpl
        out[:, self._cols] = chars
        return out


def _flatten(obj: Any, prefix: tuple = ()) -> list[tuple[tuple, Any]]:
    if isinstance(obj, dict):
        out = []
        for k, v in obj.items():
            out += _flatten(v, prefix + (k,))
        return out
    return [(prefix, obj)]


def _header_record(parsed: Any, prod: DataProduct) -> tuple[np.ndarray, list]:
    """One structured header record from parsed JSON; also (field, quabo) per leaf.

    Raises ValueError with the reason when the JSON is not this product's header.
    """
    if not isinstance(parsed, dict):
        raise ValueError("the header is not a JSON object")
    rec = np.zeros(1, dtype=prod.header_dtype)
    leaves: list[tuple[str, int | None]] = []
    if prod.quabos == 1:
        if any(k.startswith("quabo_") and k != "quabo_num" for k in parsed):
            raise ValueError(
                f"four-quabo header (keys {', '.join(parsed)}) in a {prod.name} file, "
                f"whose frames hold one quabo: frames are not {prod.name} frames"
            )
        need = ("quabo_num",) + _QUABO_FIELDS
        missing = [k for k in need if k not in parsed]
        if missing:
            raise ValueError(f"the header lacks {', '.join(missing)}")
        for path, value in _flatten(parsed):
            name = path[0]
            if len(path) == 1 and name in need:
                _set_field(rec, name, None, value)
                leaves.append((name, None))
            else:
                leaves.append((".".join(path), -1))
    else:
        if "quabo_num" in parsed:
            raise ValueError(
                f"one-quabo (ph256) header in a {prod.name} file, whose frames hold "
                f"four quabos: frames are not {prod.name} frames"
            )
        subs = [f"quabo_{i}" for i in range(4)]
        if not any(s in parsed for s in subs):
            raise ValueError(f"the header has none of {', '.join(subs)}")
        for path, value in _flatten(parsed):
            if len(path) == 2 and path[0] in subs and path[1] in _QUABO_FIELDS:
                q = int(path[0][-1])
                _set_field(rec, path[1], q, value)
                leaves.append((path[1], q))
            else:
                leaves.append((".".join(path), -1))
    return rec, leaves


def _set_field(rec: np.ndarray, name: str, q: int | None, value: Any) -> None:
    label = name if q is None else f"quabo_{q}.{name}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"header field {label} is {value!r}, not an integer")
    dt = rec.dtype[name].base if q is not None else rec.dtype[name]
    info = np.iinfo(dt)
    if not info.min <= value <= info.max:
        raise ValueError(f"header field {label} = {value} is out of range for {dt}")
    if q is None:
        rec[name] = value
    else:
        rec[name][0, q] = value


def _derive_layout(raw: bytes, leaves: list, prod: DataProduct) -> _Layout | None:
    """The template of a header whose numbers are fixed-width, or None."""
    spans = []
    matches = list(_NUM_RE.finditer(raw))
    if len(matches) != len(leaves):
        return None
    for m, (name, q) in zip(matches, leaves, strict=True):
        if q == -1 or b"-" in m.group(1):
            return None  # extra keys or negative numbers: general path only
        spans.append((m.start(1), m.end(1) - m.start(1), name, q))
    if len(spans) != (6 if prod.quabos == 1 else 20):
        return None
    return _Layout(prod, raw + b"\n\n*", tuple(spans))


_CANONICAL: dict[str, _Layout] = {}


def _canonical_text(prod: DataProduct, values: dict | None = None) -> bytes:
    """Header text exactly as the PANOSETI DAQ prints it (hashpipe output thread)."""
    values = values or {}

    def body(q: int | None) -> str:
        parts = []
        for name, w in _C_FORMAT:
            v = values.get((name, q), 0)
            parts.append(f'"{name}": {v:{w}d}')
        return ", ".join(parts) + "}"

    if prod.quabos == 1:
        return (
            f'{{ "quabo_num": {values.get(("quabo_num", None), 0):1d}, ' + body(None)
        ).encode()
    lines = []
    for q in range(4):
        lines.append(f'   "quabo_{q}": {{ ' + body(q) + (", " if q < 3 else "") + "\n")
    return ("{\n" + "".join(lines) + "}").encode()


def _canonical_layout(dp: str) -> _Layout:
    if dp not in _CANONICAL:
        prod = DATA_PRODUCTS[dp]
        raw = _canonical_text(prod)
        _, leaves = _header_record(json.loads(raw), prod)
        layout = _derive_layout(raw, leaves, prod)
        assert layout is not None
        _CANONICAL[dp] = layout
    return _CANONICAL[dp]


# ----------------------------------------------------------------------------------
# Writing


def _as_pixels(images: Any, prod: DataProduct, n: int | None = None) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 2 and images.shape == prod.shape:
        images = images[None]
    if images.ndim != 3 or images.shape[1:] != prod.shape:
        raise ValueError(
            f"images must have shape (n, {prod.shape[0]}, {prod.shape[1]}) for "
            f"{prod.name}, got {images.shape}"
        )
    if n is not None and len(images) != n:
        raise ValueError(f"{len(images)} images but {n} headers")
    pd_ = prod.pixel_dtype
    if images.dtype.kind in "iu" and images.dtype.itemsize == pd_.itemsize:
        # same width: keep the bytes (a uint16 view of signed pulse heights included)
        little = images.dtype.newbyteorder("<")
        return np.ascontiguousarray(images, dtype=little).view(pd_)
    if images.dtype.kind not in "iuf":
        raise ValueError(f"images of dtype {images.dtype} cannot be written as pixels")
    info = np.iinfo(pd_)
    lo, hi = (images.min(), images.max()) if images.size else (0, 0)
    if lo < info.min or hi > info.max:
        raise ValueError(
            f"pixel values {lo}..{hi} do not fit {prod.name} pixels ({pd_}, "
            f"{info.min}..{info.max})"
        )
    if images.dtype.kind == "f" and not np.array_equal(images, np.round(images)):
        raise ValueError("images hold non-integer values; round them first")
    return images.astype(pd_)


def encode_frames(images: Any, headers: np.ndarray, dp: str) -> np.ndarray:
    """The bytes of frames in the DAQ's fixed-width format, as an (n, frame_size) array.

    ``headers`` is a structured array of :attr:`DataProduct.header_dtype` (see
    :func:`empty_headers`); values that do not fit their printf field width raise.
    """
    prod = data_product(dp)
    headers = np.asarray(headers)
    if headers.dtype != prod.header_dtype:
        try:
            headers = headers.astype(prod.header_dtype)
        except (TypeError, ValueError):
            raise ValueError(
                f"headers must be a structured array of dtype {prod.header_dtype}, "
                f"got {headers.dtype}"
            ) from None
    pixels = _as_pixels(images, prod, len(headers))
    layout = _canonical_layout(prod.name)
    out = np.empty((len(headers), layout.frame_size), dtype=np.uint8)
    out[:, : len(layout.template)] = layout.encode(headers)
    out[:, len(layout.template) :] = pixels.reshape(len(headers), -1).view(np.uint8)
    return out


def write_frames(
    path_or_file: str | os.PathLike | IO[bytes],
    images: Any,
    headers: np.ndarray,
    dp: str | None = None,
    *,
    append: bool = False,
) -> int:
    """Write frames to a PFF file in the DAQ's format; returns the bytes written.

    ``dp`` defaults to the product in the file name. ``path_or_file`` may be an open
    binary file (then ``append`` is ignored). Reading the result with
    :func:`read_frames` gives back the same images and headers, and a file read and
    written again is identical byte for byte.
    """
    if dp is None:
        if not isinstance(path_or_file, (str, os.PathLike)):
            raise ValueError("dp is required when writing to an open file")
        dp = parse_filename(path_or_file).dp
    data = encode_frames(images, headers, dp)
    if isinstance(path_or_file, (str, os.PathLike)):
        with open(path_or_file, "ab" if append else "wb") as f:
            f.write(data.data)
    else:
        path_or_file.write(data.data)
    return data.size


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
