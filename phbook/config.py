"""The one place that knows the run profile, the device, the seed and the data folder.

Chapters never read environment variables: they ask this module.

* ``PHBOOK_PROFILE``: ``quick`` (tests and CI: small sizes, seconds per chapter) or
  ``full`` (the rendered book: sizes that give results worth reading). Default ``full``.
* ``PHBOOK_DEVICE``: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``. Default: CUDA when
  available, else the CPU.
* ``PHBOOK_DATA``: where generated data, checkpoints and caches go. Default: the
  ``.phbook_cache`` folder of the source checkout (git ignores it), or
  ``~/.cache/phbook`` when the package is installed elsewhere.
* ``PHBOOK_PROGRESS``: ``1`` or ``0`` forces progress bars on or off.
* ``PHBOOK_THREADS``: CPU threads for torch (see :func:`threads`). Default 1.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROFILES = ("quick", "full")
DEVICE_CHOICES = ("cpu", "cuda", "cuda:N", "mps")

#: Every chapter's sizes, by chapter name and profile, are data: ``sizes.json`` beside
#: this module (package data). A chapter asks ``sizes("autoencoders")`` and gets an
#: object whose attributes are these numbers. Quick sizes keep each chapter well under
#: two minutes on 2 CPU cores; full sizes give the rendered book results worth reading.
SIZES_FILE = Path(__file__).with_name("sizes.json")


def read_sizes_file(path: str | os.PathLike = SIZES_FILE) -> dict[str, Any]:
    """The sizes file as it is: ``about``, ``shared`` (chapters that share one
    simulated benchmark and the sizes they must agree on) and ``chapters``."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _tuples(values: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


_SIZES: dict[str, dict[str, dict[str, Any]]] = {
    chapter: {name: _tuples(entry[name]) for name in PROFILES}
    for chapter, entry in read_sizes_file()["chapters"].items()
}


class ConfigError(ValueError):
    """A bad profile, device or size name; the message lists the valid values."""


def profile() -> str:
    """The active profile, ``quick`` or ``full`` (from ``PHBOOK_PROFILE``)."""
    value = os.environ.get("PHBOOK_PROFILE", "full").strip().lower() or "full"
    if value not in PROFILES:
        raise ConfigError(
            f"PHBOOK_PROFILE={value!r} is not a profile; valid values: "
            + ", ".join(PROFILES)
        )
    return value


class Sizes(Mapping):
    """Read-only mapping of a chapter's sizes that also allows attribute access."""

    def __init__(self, values: dict[str, Any]):
        self._values = dict(values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(
                f"no size {key!r}; this chapter has: {', '.join(self._values)}"
            ) from None

    def __repr__(self) -> str:
        return f"Sizes({self._values})"

    def _repr_markdown_(self) -> str:
        """How a notebook shows the sizes: one line of ``name`` = value pairs."""

        def fmt(v: Any) -> str:
            if isinstance(v, int) and not isinstance(v, bool):
                return f"{v:,}"
            if isinstance(v, (list, tuple)):
                return "[" + ", ".join(fmt(x) for x in v) + "]"
            return str(v)

        return "Sizes: " + "; ".join(f"`{k}` = {fmt(v)}" for k, v in self._values.items())


def sizes(chapter: str, profile_name: str | None = None) -> Sizes:
    """The sizes (numbers of images, epochs, ...) of ``chapter`` in the active profile."""
    if chapter not in _SIZES:
        raise ConfigError(
            f"no sizes for chapter {chapter!r}; known chapters: {', '.join(sorted(_SIZES))}"
        )
    name = profile_name or profile()
    if name not in PROFILES:
        raise ConfigError(f"profile {name!r} unknown; valid values: {', '.join(PROFILES)}")
    return Sizes(dict(_SIZES[chapter][name]))


def register_sizes(chapter: str, quick: dict[str, Any], full: dict[str, Any]) -> None:
    """Add or replace a chapter's sizes (for code outside the package, e.g. a course)."""
    if set(quick) != set(full):
        raise ConfigError(
            f"quick and full sizes of {chapter!r} must name the same keys: "
            f"{sorted(quick)} vs {sorted(full)}"
        )
    _SIZES[chapter] = {"quick": dict(quick), "full": dict(full)}


def device(name: str | None = None):
    """The torch device to use: ``name``, else ``PHBOOK_DEVICE``, else CUDA if present."""
    import torch

    value = (name or os.environ.get("PHBOOK_DEVICE", "")).strip().lower()
    if not value:
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    valid = f"valid values: {', '.join(DEVICE_CHOICES)}"
    if value == "cpu":
        return torch.device("cpu")
    if value == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ConfigError("device 'mps' was asked for but is not available here")
        return torch.device("mps")
    if value == "cuda" or value.startswith("cuda:"):
        index = value.partition(":")[2]
        if index and not index.isdigit():
            raise ConfigError(f"device {value!r} is not valid; {valid}")
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {value!r} was asked for but CUDA is not available here; "
                "use 'cpu' or unset PHBOOK_DEVICE"
            )
        if index and int(index) >= torch.cuda.device_count():
            raise ConfigError(
                f"device {value!r} asked for, but only {torch.cuda.device_count()} "
                "CUDA device(s) exist"
            )
        return torch.device(value)
    raise ConfigError(f"device {value!r} is not a device; {valid}")


#: the thread count chosen by :func:`use_threads` in this process (None: not yet)
_threads_in_use: int | None = None


def threads(n: int | None = None) -> int:
    """How many CPU threads torch should use: ``n``, else ``PHBOOK_THREADS``, else 1.

    The book's models are small (16x16 frames, a few hundred thousand weights): one
    thread does a training step almost as fast as two on an idle machine, and on a
    machine with anything else running, two OpenMP threads spin and wait on each other
    and training slows down about tenfold (measured in the README's "Threads" table).
    So one thread is the default; set ``PHBOOK_THREADS`` (or ``setup(threads=...)``)
    to use more cores for bigger models on an idle machine.
    """
    if n is None:
        env = os.environ.get("PHBOOK_THREADS", "").strip()
        if not env:
            return 1
        try:
            n = int(env)
        except ValueError:
            raise ConfigError(f"PHBOOK_THREADS={env!r} is not a whole number") from None
        source = "PHBOOK_THREADS"
    else:
        source = "threads"
    if int(n) < 1:
        raise ConfigError(f"{source} must be at least 1, got {n}")
    return int(n)


def use_threads(n: int | None = None) -> int:
    """Set torch's CPU thread count to :func:`threads` ``(n)`` and return it."""
    import torch

    global _threads_in_use
    k = threads(n)
    if torch.get_num_threads() != k:
        torch.set_num_threads(k)
    _threads_in_use = k
    return k


def threads_chosen() -> bool:
    """Whether :func:`use_threads` has run in this process (``setup`` calls it)."""
    return _threads_in_use is not None


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so that a run can be repeated."""
    import numpy as np  # here, not at the top: 'import phbook' (the command) stays light
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _source_root() -> Path | None:
    root = Path(__file__).resolve().parent.parent
    return root if (root / "_config.yml").exists() and (root / "phbook").is_dir() else None


def data_dir() -> Path:
    """The folder for generated data, checkpoints and caches (created when missing)."""
    env = os.environ.get("PHBOOK_DATA", "").strip()
    if env:
        path = Path(env).expanduser()
    else:
        root = _source_root()
        path = root / ".phbook_cache" if root else Path.home() / ".cache" / "phbook"
    path.mkdir(parents=True, exist_ok=True)
    return path


def checkpoint_dir() -> Path:
    """Where trained models of the active profile are kept."""
    path = data_dir() / "checkpoints" / profile()
    path.mkdir(parents=True, exist_ok=True)
    return path


#: The real ph256 sample shipped in ``data/panoseti`` (panoseti/pypff, MIT).
REAL_PH256_NAME = "start_2025-08-02T05:31:36Z.dp_ph256.bpp_2.module_254.seqno_0.pff"


#: where a non-editable install puts the shipped real sample, below ``sys.prefix``
INSTALLED_DATA = Path("share", "phbook", "data", "panoseti")


def _real_data_candidates() -> list[Path]:
    """Folders that may hold real PANOSETI files, most preferred first."""
    env = os.environ.get("PHBOOK_REAL_DATA", "").strip()
    candidates = [Path(env).expanduser()] if env else []
    root = _source_root()
    if root is not None:
        candidates += [
            root / "data" / "panoseti",  # shipped with the book (MIT sample)
            root.parent / "shared" / "data" / "panoseti",
            root / "shared" / "data" / "panoseti",
        ]
    # a wheel (pip install, Colab) installs data/panoseti as data files under the
    # environment's prefix: [tool.setuptools.data-files] in pyproject.toml
    candidates.append(Path(sys.prefix) / INSTALLED_DATA)
    return candidates


def real_data_dir() -> Path | None:
    """The folder of real PANOSETI sample files, or None when it is absent.

    ``PHBOOK_REAL_DATA`` names it; otherwise the ``data/panoseti`` folder the book ships
    (the 88-frame ph256 sample of panoseti/pypff), then ``../shared/data/panoseti``.
    """
    for path in _real_data_candidates():
        if path.is_dir() and any(path.glob("*.pff")):
            return path
    return None


def real_data_file(name: str) -> Path:
    """One real sample file by name, looked up in every real-data folder in turn.

    The shipped sample lives in ``data/panoseti``; files whose licence does not allow
    shipping (the Lick run configuration and baselines of panoseti/panoseti_grpc) are
    read from ``../shared/data/panoseti`` where present. Raises FileNotFoundError naming
    every folder searched when the file is nowhere.
    """
    candidates = _real_data_candidates()
    for folder in candidates:
        if (folder / name).is_file():
            return folder / name
    where = ", ".join(str(c) for c in candidates) or "(no source checkout)"
    raise FileNotFoundError(
        f"real data file {name} not found in {where}; it is not shipped with phbook "
        "(set PHBOOK_REAL_DATA to a folder holding it)"
    )


def show_progress() -> bool:
    """Whether long work shows a progress bar: ``PHBOOK_PROGRESS``, else if interactive."""
    env = os.environ.get("PHBOOK_PROGRESS", "").strip()
    if env in ("0", "1"):
        return env == "1"
    if "ipykernel" in sys.modules:
        return True
    return sys.stderr.isatty()
