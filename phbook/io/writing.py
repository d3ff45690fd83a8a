"""Writing output files whole or not at all, with one clear error when the disk fails.

Every file phbook writes (selections, score files and their journals, galleries and
tables) goes through here:

- :func:`atomic_write` writes under a temporary name in the same folder and renames
  when complete; on any failure the temporary file is removed, so nothing half
  written is left behind.
- :func:`h5_create` does the same for HDF5 files. A failed HDF5 file is *not* closed
  the ordinary way: HDF5 flushes its metadata on close, and flushing to a full disk
  makes it raise from inside its close (and, in some versions, crash the process).
  Its bytes are freed first (the file is truncated to nothing), then it is closed with
  every error ignored and removed: :func:`discard_h5`.
- Failures become a :class:`WriteError`: an ``OSError`` whose message names the path,
  the cause (disk full, read-only file system, vanished folder, no permission) and what
  to do about it.

:func:`before_write` is called before each write with the path about to be written;
it does nothing, and exists so that tests can make the disk fail at any write
(``monkeypatch.setattr(writing, "before_write", ...)``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "WriteError",
    "write_error",
    "atomic_write",
    "h5_create",
    "discard_h5",
    "before_write",
    "reserve",
    "temp_path",
    "exclusive",
    "LockedError",
    "check_output",
]

_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space there (or write elsewhere with -o)",
    errno.EDQUOT: "the disk quota is used up: free some space (or write elsewhere)",
    errno.EROFS: "the file system is read-only: write elsewhere (-o)",
    errno.EACCES: "no permission to write there: write elsewhere (-o) or fix it",
    errno.EPERM: "no permission to write there: write elsewhere (-o) or fix it",
    errno.ENOENT: "its folder no longer exists: recreate it or write elsewhere (-o)",
    errno.ENOTDIR: "a part of the path is not a folder: write elsewhere (-o)",
}


class WriteError(OSError):
    """An output could not be written; the message names the path and what to do."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


def write_error(path: str | os.PathLike, exc: BaseException, then: str = "") -> WriteError:
    """A :class:`WriteError` for ``exc`` raised while writing ``path``; ``then`` says
    what happens after the cause is fixed (e.g. that the run resumes)."""
    if isinstance(exc, WriteError):
        return exc
    code = getattr(exc, "errno", None)
    if code is None:  # HDF5 reports a failed write as RuntimeError with the errno
        text = str(exc)
        for c in _ADVICE:
            if f"errno = {c}," in text:
                code = c
                break
    cause = os.strerror(code) if code else str(exc).splitlines()[0][:200]
    todo = _ADVICE.get(code, "check the disk and the path")
    text = f"cannot write {path}: {cause}; {todo}"
    if then:
        text += f"; {then}"
    err = WriteError(text)
    err.errno = code or errno.EIO
    err.filename = os.fspath(path)
    return err


def before_write(path: str | os.PathLike) -> None:
    """Called before every write of this module's users (a seam for fault tests)."""


#: Space kept free on top of what a write needs (HDF5 adds metadata and flushes
#: caches later than the data is handed to it).
MARGIN = 1 << 20


def reserve(path: str | os.PathLike, nbytes: int, then: str = "") -> None:
    """Raise :class:`WriteError` (disk full) unless the disk of ``path`` has room for
    ``nbytes`` more (twice that, plus :data:`MARGIN`, to be safe).

    Called before handing data to HDF5, which must never meet a full disk itself (see
    :func:`discard_h5`); a write failing anyway is still caught and reported.
    """
    before_write(path)
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # the write itself will say what is wrong
    if free < 2 * nbytes + MARGIN:
        raise write_error(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), then)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(
    path: str | os.PathLike,
    inputs: dict[str, str | os.PathLike | None] | None = None,
    *,
    overwrite: bool = False,
    probe: bool = False,
    then: str = "",
) -> Path:
    """Refuse an output before any work is done on it: ``path`` must not be one of
    ``inputs`` (``{what: path}``; an input is never replaced, even with
    ``overwrite``), must not exist unless ``overwrite``, and with ``probe`` its folder
    must take a file (a temporary one is written and removed), so that a long job
    does not learn at its end that it cannot save. Returns ``path`` as a ``Path``."""
    out = Path(path)
    for what, src in (inputs or {}).items():
        if src is not None and (
            _same_file(out, Path(src)) or out.resolve() == Path(src).resolve()
        ):
            raise ValueError(
                f"{out} is the {what} this command reads: writing it would destroy "
                "its input; choose another output path"
            )
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    if out.is_dir():
        raise IsADirectoryError(f"{out} is a folder: give a file name for the output")
    if probe:
        folder = out.parent
        try:
            before_write(out)
            folder.mkdir(parents=True, exist_ok=True)
            tmp = temp_path(out)
            with open(tmp, "wb"):
                pass
            tmp.unlink()
        except OSError as exc:
            raise write_error(out, exc, then) from None
    return out


def temp_path(path: str | os.PathLike) -> Path:
    """A temporary name beside ``path``, unique to this process and moment."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{time.monotonic_ns()}.tmp")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, then: str = "") -> Iterator[IO[bytes]]:
    """An open binary file whose content becomes ``path`` only when the block ends
    without error (written to a temporary file, synced and renamed)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        before_write(path)
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        before_write(path)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise write_error(path, exc, then) from None
        raise


def discard_h5(h5: Any, path: str | os.PathLike) -> None:
    """Close a failed HDF5 file without letting HDF5 flush into a full disk, and
    remove it. Never raises.

    HDF5 writes its cached metadata and raw data when a file (or any object in it) is
    closed; into a full disk those writes fail inside the library, and h5py 3 / HDF5
    1.14 then crash the process (segmentation fault) while freeing the objects. So the
    file's descriptor is pointed at ``/dev/null`` first: the last writes go nowhere,
    the close succeeds, and the half-written file is deleted.
    """
    with contextlib.suppress(OSError):
        os.truncate(path, 0)  # free its space at once
    with contextlib.suppress(Exception):
        fd = h5.id.get_vfd_handle()
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, int(fd))
        os.close(null)
    with contextlib.suppress(Exception):
        h5.close()
    with contextlib.suppress(OSError):
        os.unlink(path)


@contextlib.contextmanager
def h5_create(path: str | os.PathLike, then: str = "") -> Iterator[Any]:
    """A new HDF5 file (h5py) that becomes ``path`` only when the block ends without
    error; otherwise it is discarded (:func:`discard_h5`) and a write failure raised
    as :class:`WriteError`."""
    import h5py

    path = Path(path)
    tmp = temp_path(path)
    try:
        before_write(path)
        h5 = h5py.File(tmp, "w")
    except (OSError, RuntimeError) as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise write_error(path, exc, then) from None
    try:
        yield h5
        reserve(path, 0)
        h5.flush()
    except BaseException as exc:
        discard_h5(h5, tmp)
        if isinstance(exc, (OSError, RuntimeError)):
            raise write_error(path, exc, then) from None
        raise
    try:
        h5.close()
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        discard_h5(h5, tmp)
        raise write_error(path, exc, then) from None


class LockedError(OSError):
    """Another process is writing the same output."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, what: str = "phbook") -> Iterator[Path]:
    """Hold ``<path>.lock`` (holding this process's id and host) while the block runs,
    so that a second writer of ``path`` refuses instead of interleaving.

    A lock left by a process that no longer runs on this host is stale: it is taken
    over. A lock of another host cannot be checked and is respected; the message says
    how to remove it when that run is known to be dead.
    """
    path = Path(path)
    lock = path.with_name(path.name + ".lock")
    me = f"{os.getpid()} {os.uname().nodename}\n"
    for _ in range(3):
        try:
            before_write(lock)
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                pid_text, _, host = lock.read_text().partition(" ")
                pid, host = int(pid_text), host.strip()
            except (OSError, ValueError):
                pid, host = -1, ""
            here = host == os.uname().nodename
            if pid > 0 and (not here or _alive(pid)):
                where = f"process {pid}" + ("" if here else f" on {host}")
                raise LockedError(
                    f"{path} is being written by another {what} ({where}, lock "
                    f"{lock}); wait for it to finish, or stop it; if it is dead, "
                    f"delete {lock}"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()  # stale: its process is gone
            continue
        except OSError as exc:
            raise write_error(lock, exc) from None
        try:
            os.write(fd, me.encode())
        finally:
            os.close(fd)
        break
    else:
        raise LockedError(f"{lock}: cannot take the lock of {path}; delete it if stale")
    try:
        yield lock
    finally:
        with contextlib.suppress(OSError):
            if lock.read_text() == me:
                lock.unlink()
