"""Opening HDF5 files for reading with errors that name the file.

h5py's own messages ("file signature not found", "object 'labels' doesn't exist")
name no file; a command reading several files then leaves the reader guessing.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from typing import Any

__all__ = ["H5ReadError", "open_h5"]


class H5ReadError(ValueError):
    """An HDF5 file that cannot be read as what it should be; names the file."""


@contextlib.contextmanager
def open_h5(path: str | os.PathLike, what: str = "an HDF5 file") -> Iterator[Any]:
    """``h5py.File(path, "r")``; a file that is not HDF5, or lacks a member the block
    reads (a damaged or foreign file, a forged format attribute), raises
    :class:`H5ReadError` naming ``path`` and ``what`` it should be."""
    import h5py

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        reason = str(exc).split("(", 1)[-1].rstrip(")") if "(" in str(exc) else str(exc)
        raise H5ReadError(f"{path}: not readable as {what} ({reason})") from None
    try:
        with h5:
            yield h5
    except KeyError as exc:
        missing = str(exc.args[0] if exc.args else exc)
        named = re.search(r"object '([^']+)' doesn't exist", missing)
        missing = repr(named.group(1)) if named else missing
        raise H5ReadError(
            f"{path}: not {what}, or a damaged one: it lacks {missing}"
        ) from None
