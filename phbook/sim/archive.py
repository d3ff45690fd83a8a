"""A simulated PANOSETI observing archive, written as real PFF files in the real layout.

The archive imitates the Lick Observatory setup: two domes, Astrograph and Barnard, each
with PANOSETI modules observing in coincidence. Every run is a folder
``obs_Lick.start_<time>.runtype_sci-data.pffd`` with its ``data_config.json``
(pulse-height threshold in PE, trigger mode), ``obs_config.json`` (domes and the IP
addresses of their modules, from which module IDs follow) and one ``ph256`` PFF file
per module, split into ``seqno`` files at a maximum size, plus ``run_complete``. Because
it is laid out like real data, :class:`phbook.io.archive.Archive` and
:mod:`phbook.select` read it exactly as they read a real archive.

Frames of a module arrive as a Poisson process at a rate of 0.1-1 Hz (the event rates
PANOSETI reports); their headers carry a White Rabbit time (``pkt_tai``, ``pkt_nsec``)
and a host time (``tv_sec``, ``tv_usec``) a fraction of a millisecond to a few
milliseconds later, which is consistent with the White Rabbit rule of
:func:`phbook.io.pff.frame_times`; about 1% of frames carry the ``pkt_nsec = 999999999``
placeholder the DAQ writes for invalid nanoseconds, as real files do. ``pkt_num`` counts
the packets of each quabo modulo 2**16 (a 16-bit field of the quabo packet).

The pixels come from a *frame source*, by default the pulse-height simulator
:func:`phbook.sim.panoseti.simulate`, called with each run's threshold and trigger mode.
PFF files carry no labels, so the simulation truth (class and strength of every frame)
goes to a sidecar ``<file>.pff.truth.npz`` next to each file
(:func:`phbook.io.archive.write_truth`).

The archive is written into a temporary folder renamed at the end, so an interrupted
write never leaves a half archive under the final name; ``phbook_archive.json`` at its
root records how it was made, so ``exist_ok=True`` reuses a matching archive.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from .. import __version__
from .. import config as _config
from ..io import archive as _archive
from ..io import pff
from .panoseti import simulate

__all__ = [
    "LICK_DOMES",
    "LICK_SITES",
    "MANIFEST",
    "PooledSource",
    "RunSpec",
    "plan_archive",
    "write_run",
    "write_archive",
    "default_source",
]

#: The modules of each Lick dome in the simulated archive (IP of the first quabo);
#: module IDs 1 and 254 (Astrograph), 3 and 4 (Barnard).
LICK_DOMES: dict[str, tuple[str, ...]] = {
    "astrograph": ("192.168.0.4", "192.168.3.248"),
    "barnard": ("192.168.0.12", "192.168.0.16"),
}
#: Dome coordinates as in the PANOSETI Lick configuration.
LICK_SITES: dict[str, dict[str, float]] = {
    "astrograph": {"obslat": 37.3425, "obslon": -121.63777, "obsalt": 1283},
    "barnard": {"obslat": 37.339166, "obslon": -121.64416, "obsalt": 1239},
}
MANIFEST = "phbook_archive.json"
_NS = 1_000_000_000
_RUN_PATTERN = (  # (threshold in PE, domes) of successive runs
    (11.5, ("astrograph", "barnard")),
    (11.5, ("astrograph", "barnard")),
    (11.5, ("astrograph",)),
    (7.5, ("astrograph", "barnard")),
    (11.5, ("astrograph", "barnard")),
    (15.0, ("barnard",)),
)


@dataclass
class RunSpec:
    """One simulated run: when, which modules, how many frames, at which threshold."""

    start: float  #: Unix time of the run start (s)
    pe_threshold: float = 11.5
    domes: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(LICK_DOMES))
    frames_per_module: Sequence[int] = (1000,)
    rates_hz: Sequence[float] = (0.5,)  #: event rate of each module
    trigger_pixels: int = 1
    run_type: str = "sci-data"
    observatory: str = "Lick"
    wr_offset_s: int = 0  #: White Rabbit clock error; != 0 gives CLOCKS_DISAGREE frames
    placeholder_fraction: float = 0.01

    def modules(self) -> list[tuple[str, str]]:
        """(dome, ip_addr) of every module, in obs_config order."""
        return [(d, ip) for d, ips in self.domes.items() for ip in ips]

    @property
    def n_frames(self) -> int:
        return int(sum(self.frames_per_module))

    @property
    def folder_name(self) -> str:
        return pff.format_run_name(self.observatory, self.start, self.run_type)


def default_source(n: int, **kwargs):
    """The pulse-height simulator :func:`phbook.sim.panoseti.simulate`."""
    return simulate(n, **kwargs)


class PooledSource:
    """A fast frame source that resamples pools of frames made once by ``source``.

    For archives whose size matters more than the uniqueness of every frame, such as
    I/O benchmarks with millions of frames: the first call for a run's threshold, trigger
    mode and anomaly fraction simulates ``pool_size`` frames with ``source`` (default
    :func:`phbook.sim.panoseti.simulate`); every call then draws frames from that pool
    with replacement, so each pooled frame appears about ``n / pool_size`` times. The
    pixels, classes and quabos are the simulator's; only their variety is limited.
    """

    def __init__(
        self, pool_size: int = 50_000, source: Callable | None = None, seed: int = 0
    ):
        if pool_size < 1:
            raise ValueError(f"pool_size must be positive, got {pool_size}")
        self.pool_size, self.source, self.seed = int(pool_size), source, int(seed)
        self._pools: dict[tuple, Any] = {}

    def __repr__(self) -> str:
        inner = self.source or default_source
        name = (
            f"{getattr(inner, '__module__', '?')}.{getattr(inner, '__qualname__', inner)}"
        )
        return f"PooledSource(pool_size={self.pool_size}, source={name}, seed={self.seed})"

    def __call__(
        self,
        n: int,
        *,
        seed: int = 0,
        pe_threshold: float = 11.5,
        trigger_pixels: int = 1,
        anomaly_fraction: float = 0.01,
    ):
        key = (float(pe_threshold), int(trigger_pixels), float(anomaly_fraction))
        if key not in self._pools:
            make = self.source or default_source
            pool = make(
                self.pool_size,
                seed=_child_seed(
                    self.seed, int(round(key[0] * 1000)), key[1], int(round(key[2] * 1e6))
                ),
                pe_threshold=key[0],
                trigger_pixels=key[1],
                anomaly_fraction=key[2],
            )
            adc, classes, strength, quabo = _check_source_output(pool, self.pool_size)
            self._pools[key] = (adc, classes, strength, quabo)
        adc, classes, strength, quabo = self._pools[key]
        idx = np.random.default_rng(seed).integers(0, self.pool_size, n)
        return SimpleNamespace(
            adc=adc[idx], classes=classes[idx], strength=strength[idx], quabo=quabo[idx]
        )


def plan_archive(
    n_frames: int,
    seed: int = 0,
    *,
    frames_per_run: int = 60_000,
    min_runs: int = 6,
    start: str = "2024-07-01T04:00:00Z",
) -> list[RunSpec]:
    """Runs of an archive of ``n_frames`` frames in all.

    Runs follow a pattern of six: mostly 11.5 PE with both domes, one at 7.5 PE, one at
    15 PE, and two with one dome only. A run holds at most ``frames_per_run`` frames
    (about one night at the simulated rates), one run per night.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    rng = np.random.default_rng(seed)
    n_runs = max(min_runs, math.ceil(n_frames / frames_per_run))
    n_runs = min(n_runs, n_frames)
    per_run = np.full(n_runs, n_frames // n_runs)
    per_run[: n_frames % n_runs] += 1
    t0 = pff.parse_time(start).timestamp()
    runs = []
    for i in range(n_runs):
        thr, domes = _RUN_PATTERN[i % len(_RUN_PATTERN)]
        modules = {d: LICK_DOMES[d] for d in domes}
        n_mod = sum(len(v) for v in modules.values())
        rates = rng.uniform(0.1, 1.0, n_mod)
        counts = np.floor(per_run[i] * rates / rates.sum()).astype(int)
        counts[np.argsort(-rates)[: per_run[i] - counts.sum()]] += 1
        jitter = int(rng.integers(0, 3600))
        runs.append(
            RunSpec(
                start=float(t0 + 86400 * i + jitter),
                pe_threshold=thr,
                domes=modules,
                frames_per_module=counts.tolist(),
                rates_hz=rates.round(4).tolist(),
            )
        )
    return runs


def _child_seed(seed: int, *keys: int) -> int:
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def _check_source_output(
    out: Any, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        adc, classes = np.asarray(out.adc), np.asarray(out.classes)
        strength, quabo = np.asarray(out.strength), np.asarray(out.quabo)
    except AttributeError as exc:
        raise TypeError(
            f"the frame source must return an object with adc, classes, strength and "
            f"quabo ({exc})"
        ) from None
    if adc.shape != (n, 16, 16):
        raise ValueError(
            f"frame source returned adc of shape {adc.shape}, expected ({n}, 16, 16)"
        )
    for name, a in (("classes", classes), ("strength", strength), ("quabo", quabo)):
        if a.shape != (n,):
            raise ValueError(
                f"frame source returned {name} of shape {a.shape}, expected ({n},)"
            )
    if quabo.size and (quabo.min() < 0 or quabo.max() > 3):
        raise ValueError("frame source returned quabo numbers outside 0-3")
    return adc, classes.astype(str), strength.astype(np.float32), quabo.astype(np.uint8)


class _ModuleWriter:
    """Writes one module's frames into seqno files of at most ``max_frames`` frames."""

    def __init__(self, folder: Path, module: int, max_frames: int):
        self.folder, self.module, self.max_frames = folder, module, max_frames
        self.seqno = 0
        self.f = None
        self.path: Path | None = None
        self.in_file = 0
        self.classes: list[np.ndarray] = []
        self.strength: list[np.ndarray] = []

    def _close(self) -> None:
        if self.f is not None:
            self.f.close()
            _archive.write_truth(
                self.path, np.concatenate(self.classes), np.concatenate(self.strength)
            )
            self.f, self.classes, self.strength = None, [], []
            self.seqno += 1

    def write(
        self,
        data: np.ndarray,
        times_ns: np.ndarray,
        classes: np.ndarray,
        strength: np.ndarray,
    ) -> None:
        i = 0
        while i < len(data):
            if self.f is None:
                start = float(times_ns[i] // _NS)
                name = pff.format_filename(start, "ph256", self.module, self.seqno)
                self.path = self.folder / name
                self.f = open(self.path, "wb")
                self.in_file = 0
            k = min(len(data) - i, self.max_frames - self.in_file)
            self.f.write(data[i : i + k].data)
            self.classes.append(classes[i : i + k])
            self.strength.append(strength[i : i + k])
            self.in_file += k
            i += k
            if self.in_file >= self.max_frames:
                self._close()

    def close(self) -> None:
        self._close()


def write_run(
    parent: str | os.PathLike,
    spec: RunSpec,
    *,
    seed: int = 0,
    run_index: int = 0,
    source: Callable | None = None,
    anomaly_fraction: float = 0.01,
    max_file_mb: float = 64.0,
    chunk_frames: int = 65536,
    progress: Any = None,
) -> Path:
    """Write one run folder under ``parent``; returns its path."""
    source = source or default_source
    modules = spec.modules()
    if len(spec.frames_per_module) != len(modules) or len(spec.rates_hz) != len(modules):
        raise ValueError(
            f"run {spec.folder_name}: {len(modules)} modules but "
            f"{len(spec.frames_per_module)} frame counts and {len(spec.rates_hz)} rates"
        )
    folder = Path(parent) / spec.folder_name
    folder.mkdir(parents=True)
    sites = {d: LICK_SITES[d] for d in spec.domes if d in LICK_SITES}
    with open(folder / _archive.OBS_CONFIG, "w") as f:
        json.dump(
            _archive.obs_config_dict(spec.observatory, spec.domes, sites), f, indent=4
        )
    with open(folder / _archive.DATA_CONFIG, "w") as f:
        json.dump(
            _archive.data_config_dict(
                spec.run_type,
                spec.pe_threshold,
                trigger_pixels=spec.trigger_pixels,
                max_file_size_mb=max_file_mb,
            ),
            f,
            indent=2,
        )
    frame_size = pff.DATA_PRODUCTS["ph256"].frame_size
    max_frames = max(1, int(max_file_mb * 1024 * 1024) // frame_size)
    for m, ((_, ip), n_m, rate) in enumerate(
        zip(modules, spec.frames_per_module, spec.rates_hz, strict=True)
    ):
        module_id = _archive.ip_addr_to_module_id(ip)
        rng = np.random.default_rng(_child_seed(seed, run_index, m))
        writer = _ModuleWriter(folder, module_id, max_frames)
        t_ns = int(spec.start * _NS) + int(rng.integers(0, 2 * _NS))
        pkt_num = rng.integers(0, 1 << 16, size=4)
        done = 0
        chunk = 0
        try:
            while done < n_m:
                k = min(chunk_frames, n_m - done)
                out = source(
                    k,
                    seed=_child_seed(seed, run_index, m, chunk + 1),
                    pe_threshold=spec.pe_threshold,
                    trigger_pixels=spec.trigger_pixels,
                    anomaly_fraction=anomaly_fraction,
                )
                adc, classes, strength, quabo = _check_source_output(out, k)
                gaps = rng.exponential(1.0 / rate, k)
                times = t_ns + np.cumsum(
                    np.maximum(1, np.round(gaps * _NS)).astype(np.int64)
                )
                t_ns = int(times[-1])
                headers = _headers(times, quabo, pkt_num, rng, spec)
                writer.write(
                    pff.encode_frames(adc, headers, "ph256"), times, classes, strength
                )
                done += k
                chunk += 1
                if progress is not None:
                    progress.update(k)
        finally:
            writer.close()
    (folder / _archive.RUN_COMPLETE).touch()
    return folder


def _headers(
    times_ns: np.ndarray,
    quabo: np.ndarray,
    pkt_num: np.ndarray,
    rng: np.random.Generator,
    spec: RunSpec,
) -> np.ndarray:
    """ph256 headers of frames at WR times ``times_ns``; advances ``pkt_num``."""
    n = len(times_ns)
    h = pff.empty_headers(n, "ph256")
    h["quabo_num"] = quabo
    # packet counter of each quabo: consecutive per quabo, 16 bits
    onehot = quabo[:, None] == np.arange(4)
    rank = np.cumsum(onehot, axis=0)[np.arange(n), quabo] - 1
    h["pkt_num"] = (pkt_num[quabo] + rank) % (1 << 16)
    pkt_num += onehot.sum(axis=0)
    pkt_num %= 1 << 16
    wr_sec = times_ns // _NS
    nsec = times_ns % _NS
    h["pkt_tai"] = (wr_sec + 37 + spec.wr_offset_s) % 1024
    h["pkt_nsec"] = np.where(
        rng.random(n) < spec.placeholder_fraction, pff.NSEC_PLACEHOLDER_VALUE, nsec
    )
    host = times_ns + rng.integers(50_000, 3_000_000, n)  # 0.05-3 ms later
    h["tv_sec"] = host // _NS
    h["tv_usec"] = (host % _NS) // 1000
    return h


def _describe(source: Callable) -> str:
    if hasattr(source, "__qualname__"):  # a function
        return f"{getattr(source, '__module__', '?')}.{source.__qualname__}"
    return repr(source)


def _manifest(
    n_frames: int,
    runs: list[RunSpec],
    seed: int,
    source: Callable,
    anomaly_fraction: float,
    max_file_mb: float,
) -> dict:
    return {
        "generator": "phbook.sim.archive",
        "phbook_version": __version__,
        "n_frames": int(n_frames),
        "seed": int(seed),
        "source": _describe(source),
        "anomaly_fraction": float(anomaly_fraction),
        "max_file_mb": float(max_file_mb),
        "runs": [
            asdict(r) | {"domes": {k: list(v) for k, v in r.domes.items()}} for r in runs
        ],
    }


def write_archive(
    root: str | os.PathLike,
    n_frames: int | None = None,
    *,
    runs: Sequence[RunSpec] | None = None,
    seed: int = 0,
    source: Callable | None = None,
    anomaly_fraction: float = 0.01,
    max_file_mb: float = 64.0,
    exist_ok: bool = False,
    overwrite: bool = False,
    chunk_frames: int = 65536,
    progress: bool | None = None,
) -> _archive.Archive:
    """Write a simulated archive of ``n_frames`` frames (planned by
    :func:`plan_archive`) or of the given ``runs``; returns it as an
    :class:`~phbook.io.archive.Archive`.

    ``source(n, seed=, pe_threshold=, trigger_pixels=, anomaly_fraction=)`` makes the
    frames (default :func:`phbook.sim.panoseti.simulate`). With ``exist_ok`` an archive
    already at ``root`` made with the same parameters is returned as it is;
    ``overwrite`` replaces whatever is there.
    """
    root = Path(root)
    source = source or default_source
    if runs is None:
        if n_frames is None:
            raise ValueError("give n_frames or runs")
        runs = plan_archive(n_frames, seed)
    runs = list(runs)
    total = sum(r.n_frames for r in runs)
    manifest = _manifest(total, runs, seed, source, anomaly_fraction, max_file_mb)
    if root.exists():
        existing = root / MANIFEST
        if exist_ok and existing.exists():
            with open(existing) as f:
                old = json.load(f)
            old.pop("created", None)
            old.pop("seconds", None)
            if old == json.loads(json.dumps(manifest)):
                return _archive.Archive(root)
        if not overwrite:
            raise FileExistsError(
                f"{root} exists and is not an archive written with these parameters; "
                "pass overwrite=True to replace it"
            )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f"{root.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    show = _config.show_progress() if progress is None else progress
    t0 = time.perf_counter()
    try:
        from tqdm.auto import tqdm

        with tqdm(
            total=total, unit="frame", desc="writing archive", disable=not show
        ) as bar:
            for i, spec in enumerate(runs):
                write_run(
                    tmp,
                    spec,
                    seed=seed,
                    run_index=i,
                    source=source,
                    anomaly_fraction=anomaly_fraction,
                    max_file_mb=max_file_mb,
                    chunk_frames=chunk_frames,
                    progress=bar,
                )
        manifest["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        manifest["seconds"] = round(time.perf_counter() - t0, 2)
        with open(tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=1)
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _archive.Archive(root)
