"""Writing frames in the DAQ's fixed-width format."""

from __future__ import annotations

import os
from typing import IO, Any

import numpy as np

from .format import DataProduct, data_product
from .layout import _canonical_layout
from .names import parse_filename

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
    :func:`empty_headers`); values outside their field's range (:data:`FIELD_RANGES`,
    e.g. a quabo number above 3) raise. A ``pkt_nsec`` of 1e9 or more is written with
    10 characters, as the DAQ's ``printf("%9u")`` does; when only some frames have
    one, their sizes differ and the result is the 1-D array of all the bytes.
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
    pixels = _as_pixels(images, prod, len(headers)).reshape(len(headers), -1)
    pixels = pixels.view(np.uint8)
    # a pkt_nsec of 1e9 or more takes 10 characters, as printf("%9u") prints it
    nsec = np.asarray(headers["pkt_nsec"], dtype=np.int64).reshape(len(headers), -1)
    wide = ((nsec >= 1_000_000_000) << np.arange(nsec.shape[1])).sum(axis=1)
    keys = np.unique(wide)
    if len(keys) <= 1:
        layout = _canonical_layout(prod.name, int(keys[0]) if len(keys) else 0)
        out = np.empty((len(headers), layout.frame_size), dtype=np.uint8)
        out[:, : len(layout.template)] = layout.encode(headers)
        out[:, len(layout.template) :] = pixels
        return out
    layouts = {int(k): _canonical_layout(prod.name, int(k)) for k in keys}
    sizes = np.array([layouts[int(k)].frame_size for k in wide], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    out = np.empty(int(sizes.sum()), dtype=np.uint8)
    for k, layout in layouts.items():
        rows = np.flatnonzero(wide == k)
        hl = len(layout.template)
        frame = np.empty((len(rows), layout.frame_size), dtype=np.uint8)
        frame[:, :hl] = layout.encode(headers[rows])
        frame[:, hl:] = pixels[rows]
        out[starts[rows, None] + np.arange(layout.frame_size)] = frame
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
