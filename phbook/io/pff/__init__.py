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

from .format import (
    CLOCKS_DISAGREE,
    DATA_PRODUCTS,
    FIELD_RANGES,
    NO_PACKET,
    NSEC_INVALID,
    NSEC_PLACEHOLDER,
    NSEC_PLACEHOLDER_VALUE,
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
from .frames import Frames, empty_headers
from .layout import _canonical_layout, _Layout  # noqa: F401 (tests, benchmarks)
from .names import (
    PFFName,
    RunName,
    format_filename,
    format_run_name,
    parse_filename,
    parse_run_name,
    parse_time,
)
from .read import (
    FileInfo,
    _Reader,  # noqa: F401 (tests patch it)
    identify,
    iter_chunks,
    list_damage,
    read_frames,
    read_frames_at,
    scan_file,
)
from .times import frame_times, wr_to_unix
from .write import encode_frames, write_frames

# the module layout: format (products, errors), names, times, frames, layout
# (header templates and validation), write, read (fast path, resync, damage)
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
    "NSEC_INVALID",
    "FIELD_RANGES",
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
    "list_damage",
    "identify",
    "FileInfo",
]
