"""What every case-study simulator returns, how it is cached and run in parallel.

A simulator (:mod:`phbook.sim.lensing`, :mod:`phbook.sim.transients`,
:mod:`phbook.sim.galaxies`) returns a :class:`SimulatedSet`: the images, one class name
per image, the physical parameters of every image and a ``meta`` dictionary with the
settings and units. Its ``load_or_simulate`` function keeps the set in an HDF5 file
under :func:`phbook.config.data_dir` whose name is a hash of every setting and the seed,
so a chapter can ask for the same set again at no cost.

Randomness is drawn from generators seeded by ``(seed, stream, chunk)``, never by the
worker, so a set is the same whatever the number of worker processes.

Worker processes start from a server process (``forkserver``; ``spawn`` where that is
missing), so a *script* that simulates with ``workers > 1`` must guard its main code
with ``if __name__ == "__main__":``, as for any Python multiprocessing. Notebooks need
nothing. The workers are kept for the next call; :func:`shutdown_pool` stops them.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__, config

__all__ = [
    "SimulatedSet",
    "CHUNK_SIZE",
    "class_plan",
    "resolve_settings",
    "cache_path",
    "load_or_simulate",
    "read_hdf5",
    "write_hdf5",
    "run_chunks",
    "shutdown_pool",
]

#: Images per chunk of work. Fixed (not tied to the number of workers) so that the
#: random numbers of every image do not depend on how the work is split.
CHUNK_SIZE = 256

#: Bump when a simulator's output changes for the same settings: old caches are unused.
CACHE_FORMAT = "phbook-simset-1"


@dataclass
class SimulatedSet:
    """Simulated images with their class names and physical parameters.

    ``images``
        float32 array of shape (N, H, W).
    ``classes``
        (N,) array of class names (str). The simulator's ``NORMAL_CLASSES`` are the
        classes the book treats as normal; every other class is an anomaly.
    ``params``
        pandas DataFrame with one row per image: the physical parameters (units in
        ``meta["units"]``).
    ``meta``
        the simulator's name, the seed and every setting, units and notes.
    ``tables``
        further tables keyed by name (e.g. the lensing subhalos, one row per subhalo
        with its image index in the column ``image``).

    It unpacks as ``images, classes, params = simulated_set``.
    """

    images: np.ndarray
    classes: np.ndarray
    params: pd.DataFrame
    meta: dict = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    normal_classes: tuple[str, ...] = ("normal",)

    def __post_init__(self):
        self.classes = np.asarray(self.classes).astype(str)
        if self.images.ndim != 3:
            raise ValueError(f"images must be (N, H, W), got shape {self.images.shape}")
        if not (len(self.images) == len(self.classes) == len(self.params)):
            raise ValueError(
                f"{len(self.images)} images, {len(self.classes)} class names and "
                f"{len(self.params)} parameter rows differ in number"
            )
        self.normal_classes = tuple(self.normal_classes)

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator:
        return iter((self.images, self.classes, self.params))

    @property
    def labels(self) -> np.ndarray:
        """(N,) int array: 1 for an anomaly, 0 for a normal image (for the metrics)."""
        return (~np.isin(self.classes, self.normal_classes)).astype(np.int64)

    @property
    def report_classes(self) -> np.ndarray:
        """Class names with every normal class renamed ``"normal"``.

        What :func:`phbook.metrics.per_class_report` expects when a simulator has
        several normal sub-classes (the artifacts of :mod:`phbook.sim.transients`).
        """
        return np.where(self.labels == 0, "normal", self.classes)

    def subset(self, index) -> SimulatedSet:
        """The images selected by ``index`` (a boolean mask or integer indices).

        Rows of ``tables`` with an ``image`` column follow their images (renumbered).
        """
        idx = np.arange(len(self))[index]
        tables = {}
        for name, table in self.tables.items():
            if "image" in table:
                new = np.full(len(self), -1)
                new[idx] = np.arange(len(idx))
                keep = new[table["image"].to_numpy()] >= 0
                sub = table[keep].copy()
                sub["image"] = new[sub["image"].to_numpy()]
                tables[name] = sub.reset_index(drop=True)
            else:
                tables[name] = table
        return SimulatedSet(
            self.images[idx],
            self.classes[idx],
            self.params.iloc[idx].reset_index(drop=True),
            dict(self.meta),
            tables,
            self.normal_classes,
        )

    def __repr__(self) -> str:
        counts = pd.Series(self.classes).value_counts().to_dict()
        return (
            f"SimulatedSet({self.meta.get('simulator', '?')}: {len(self)} images "
            f"of shape {tuple(self.images.shape[1:])}, classes {counts})"
        )


# --------------------------------------------------------------------- planning


def class_plan(
    n: int,
    fractions: Mapping[str, float],
    known: Sequence[str],
    rng: np.random.Generator,
) -> np.ndarray:
    """``n`` class names in random order, in the proportions of ``fractions``.

    ``fractions`` maps class names (each one of ``known``) to non-negative weights that
    are normalised to sum to one. Counts are rounded by largest remainder, so they are
    exact (e.g. 1/3 each of 9 images gives 3, 3 and 3).
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(fractions, Mapping) or not fractions:
        raise ValueError(f"fractions must be a non-empty mapping, got {fractions!r}")
    unknown = [k for k in fractions if k not in known]
    if unknown:
        raise ValueError(
            f"fractions names unknown classes {unknown}; known classes: {list(known)}"
        )
    weights = np.array([float(v) for v in fractions.values()])
    if not np.all(np.isfinite(weights)) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(
            f"fractions must be non-negative numbers with a positive sum, got {fractions}"
        )
    share = weights / weights.sum() * n
    counts = np.floor(share).astype(int)
    rest = n - counts.sum()
    order = np.argsort(-(share - counts), kind="stable")
    counts[order[:rest]] += 1
    classes = np.repeat(np.array(list(fractions), dtype=object), counts)
    return rng.permutation(classes).astype(str)


def resolve_settings(defaults: Mapping[str, Any], overrides: Mapping | None) -> dict:
    """``defaults`` updated by ``overrides``; an unknown key is an error naming it."""
    settings = dict(defaults)
    if overrides:
        unknown = sorted(set(overrides) - set(defaults))
        if unknown:
            raise ValueError(
                f"settings has unknown keys {unknown}; valid keys: {sorted(defaults)}"
            )
        for key, value in overrides.items():
            default = defaults[key]
            if isinstance(default, tuple):
                value = tuple(float(v) for v in value)
                if len(value) != len(default):
                    raise ValueError(
                        f"settings[{key!r}] must have {len(default)} numbers, got {value}"
                    )
                if len(value) == 2 and value[0] > value[1]:
                    raise ValueError(f"settings[{key!r}] range {value} has low > high")
            elif isinstance(default, (int, float)) and not isinstance(default, bool):
                value = type(default)(value)
            settings[key] = value
    return settings


def rng_for(seed: int, stream: int, chunk: int = 0) -> np.random.Generator:
    """The generator of one stream (parameters, noise, ...) and chunk of a set."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), stream, chunk]))


def check_seed(seed) -> int:
    """``seed`` as an int; anything but a non-negative integer is an error naming it."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


# -------------------------------------------------------------------- parallelism


def default_workers() -> int:
    """The CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


#: Modules the worker processes import before their first task (the simulators and
#: lenstronomy); a module that is not installed is skipped.
PRELOAD = (
    "phbook.sim.lensing",
    "phbook.sim.transients",
    "phbook.sim.galaxies",
    "lenstronomy.LensModel.lens_model",
    "lenstronomy.LightModel.light_model",
)

_POOL: dict[str, Any] = {"workers": 0, "executor": None}


def _context():
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        # workers fork from a server that imported the simulators once
        ctx.set_forkserver_preload(list(PRELOAD))
        return ctx
    return multiprocessing.get_context("spawn")


def _executor(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes, kept for the next call (started once)."""
    if _POOL["executor"] is None or _POOL["workers"] != workers:
        shutdown_pool()
        _POOL["executor"] = ProcessPoolExecutor(workers, mp_context=_context())
        _POOL["workers"] = workers
    return _POOL["executor"]


def shutdown_pool() -> None:
    """Stop the worker processes kept between calls (also done at exit)."""
    executor = _POOL["executor"]
    _POOL["executor"], _POOL["workers"] = None, 0
    if executor is not None:
        executor.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown_pool)


def run_chunks(
    fn: Callable[[dict], dict],
    tasks: Sequence[dict],
    *,
    workers: int | None,
    desc: str,
    sizes: Sequence[int],
    progress: bool | None = None,
) -> list[dict]:
    """``[fn(task) for task in tasks]``, in a process pool when ``workers > 1``.

    ``fn`` must be a module-level function (it is pickled). The pool is kept for the
    next call (its processes have imported lenstronomy and compiled their kernels);
    :func:`shutdown_pool` stops it. A tqdm bar counts the ``sizes`` (images per task)
    as tasks finish; ``progress=None`` follows :func:`phbook.config.show_progress`.
    """
    from tqdm.auto import tqdm

    if workers is None:
        workers = default_workers()
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)):
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}")
    if workers < 1:
        raise ValueError(f"workers must be a positive integer or None, got {workers}")
    workers = min(int(workers), len(tasks))
    show = config.show_progress() if progress is None else bool(progress)
    bar = tqdm(total=int(sum(sizes)), desc=desc, unit="img", disable=not show)
    results: list[dict | None] = [None] * len(tasks)
    try:
        if workers <= 1:
            for i, task in enumerate(tasks):
                results[i] = fn(task)
                bar.update(sizes[i])
        else:
            pool = _executor(workers)
            try:
                futures = {pool.submit(fn, task): i for i, task in enumerate(tasks)}
                for future in as_completed(futures):
                    i = futures[future]
                    results[i] = future.result()
                    bar.update(sizes[i])
            except BaseException:
                shutdown_pool()  # a broken or interrupted pool is not reused
                raise
    finally:
        bar.close()
    return results  # type: ignore[return-value]


def chunk_slices(n: int, size: int | None = None) -> list[slice]:
    """Consecutive slices of at most ``size`` (default :data:`CHUNK_SIZE`) images."""
    size = CHUNK_SIZE if size is None else int(size)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


# ------------------------------------------------------------------------ cache


def _jsonable(value):
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def cache_key(simulator: str, description: Mapping[str, Any]) -> str:
    """A hex digest of the simulator name and everything that determines its output."""
    text = json.dumps(
        {"format": CACHE_FORMAT, "simulator": simulator, **_jsonable(description)},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def cache_path(simulator: str, description: Mapping[str, Any]) -> Path:
    """Where the set described by ``description`` is cached."""
    folder = config.data_dir() / "simulations"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{simulator}-{cache_key(simulator, description)[:20]}.h5"


def write_hdf5(path: str | os.PathLike, data: SimulatedSet, key: str = "") -> None:
    """Write ``data`` to ``path`` atomically (a temporary file, then renamed)."""
    import h5py

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    str_dt = h5py.string_dtype()
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = CACHE_FORMAT
            f.attrs["key"] = key
            f.attrs["meta"] = json.dumps(_jsonable(data.meta))
            f.attrs["normal_classes"] = json.dumps(list(data.normal_classes))
            f.attrs["phbook_version"] = __version__
            f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            f.create_dataset(
                "images",
                data=data.images,
                chunks=(min(len(data), 64), *data.images.shape[1:]),
            )
            f.create_dataset("classes", data=data.classes.astype(object), dtype=str_dt)
            for group_name, table in {
                "params": data.params,
                **{f"tables/{k}": v for k, v in data.tables.items()},
            }.items():
                group = f.create_group(group_name)
                group.attrs["columns"] = json.dumps(list(table.columns))
                for col in table.columns:
                    values = table[col].to_numpy()
                    if values.dtype.kind in "OUS":
                        group.create_dataset(
                            col, data=values.astype(str).astype(object), dtype=str_dt
                        )
                    else:
                        group.create_dataset(col, data=values)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _read_table(group) -> pd.DataFrame:
    columns = json.loads(group.attrs["columns"])
    data = {}
    for col in columns:
        ds = group[col]
        data[col] = ds.asstr()[...] if ds.dtype.kind == "O" else ds[...]
    return pd.DataFrame(data, columns=columns)


def read_hdf5(path: str | os.PathLike) -> SimulatedSet:
    """Read a set written by :func:`write_hdf5`; a bad file is an error naming it."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != CACHE_FORMAT:
                raise ValueError(f"not a {CACHE_FORMAT} file")
            images = f["images"][...]
            classes = f["classes"].asstr()[...]
            params = _read_table(f["params"])
            tables = {}
            if "tables" in f:
                for name in f["tables"]:
                    tables[name] = _read_table(f["tables"][name])
            meta = json.loads(f.attrs["meta"])
            normal = tuple(json.loads(f.attrs["normal_classes"]))
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - the message must name the file
        raise ValueError(f"{path}: not a readable phbook simulation file ({exc})") from exc
    return SimulatedSet(images, classes, params, meta, tables, normal)


def load_or_simulate(
    simulator: str,
    simulate: Callable[..., SimulatedSet],
    description: Mapping[str, Any],
    kwargs: Mapping[str, Any],
    *,
    refresh: bool = False,
) -> SimulatedSet:
    """The cached set of ``description``, or ``simulate(**kwargs)``, then cached.

    ``description`` holds everything that determines the images (n, seed, settings);
    ``kwargs`` may add what does not (workers, progress).
    """
    path = cache_path(simulator, description)
    if path.exists() and not refresh:
        try:
            return read_hdf5(path)
        except ValueError:
            path.unlink()  # a broken cache file (e.g. a crash mid-write): regenerate
    data = simulate(**kwargs)
    write_hdf5(path, data, key=cache_key(simulator, description))
    return data
