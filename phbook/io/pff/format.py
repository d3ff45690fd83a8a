"""The data products of PFF files, their header fields and the reader's errors."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

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
        return len(_canonical_text(self)) + 3 + self.image_bytes


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
NSEC_INVALID = 8  #: ``pkt_nsec`` is 1e9 or more: not a nanosecond count

#: Values a header field can take (inclusive); a header outside them is damaged. The
#: quabo number is 0-3 (four quabos per module), ``pkt_tai`` holds the low 10 bits of
#: the White Rabbit second and ``tv_usec`` the microseconds of ``gettimeofday``.
#: ``pkt_nsec`` may reach 4294967295 (a printf ``%9u`` of a value of 1e9 or more prints
#: 10 digits, and newer DAQ versions format it ``%10d``); values of 1e9 and above are
#: read, and flagged :data:`NSEC_INVALID` by :func:`frame_times`.
FIELD_RANGES: dict[str, tuple[int, int]] = {
    "quabo_num": (0, 3),
    "pkt_num": (0, 2**32 - 1),
    "pkt_tai": (0, 1023),
    "pkt_nsec": (0, 2**32 - 1),
    "tv_usec": (0, 999_999),
}

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

    @property
    def length(self) -> int:
        """Bytes of the damaged stretch (those skipped)."""
        return self.skipped_bytes


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
        self.frames: Any = None  # the Frames read before the damage (set by readers)
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
# The header text as the DAQ prints it

_C_FORMAT = (
    ("pkt_num", 10),
    ("pkt_tai", 4),
    ("pkt_nsec", 9),
    ("tv_sec", 10),
    ("tv_usec", 6),
)


def _canonical_text(prod: DataProduct, values: dict | None = None, wide: int = 0) -> bytes:
    """Header text exactly as the PANOSETI DAQ prints it (hashpipe output thread).

    Bit ``q`` of ``wide`` (bit 0 for a one-quabo header) widens quabo ``q``'s
    ``pkt_nsec`` to 10 characters, as ``printf("%9u")`` prints a value of 1e9 or more.
    """
    values = values or {}

    def body(q: int | None) -> str:
        parts = []
        for name, w in _C_FORMAT:
            if name == "pkt_nsec" and wide >> (q or 0) & 1:
                w += 1
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
