"""PANOSETI run folders and archives: configuration files, file tables, frame metadata.

An observing archive is a folder of *run folders*, one per observing run::

    archive/
      obs_Lick.start_2024-07-25T04:34:06Z.runtype_sci-data.pffd/
        data_config.json     run type, pulse-height threshold (PE), trigger mode
        obs_config.json      domes and their modules
        start_2024-07-25T04:34:07Z.dp_ph256.bpp_2.module_1.seqno_0.pff
        start_2024-07-25T06:12:40Z.dp_ph256.bpp_2.module_1.seqno_1.pff
        ...
        run_complete         written when the run ended normally

The module of a file is in its name; its dome comes from ``obs_config.json``, where
every module is listed under its dome with the IP address of its first quabo. The module
ID is derived from that address with the rule of the PANOSETI control software
(``ip_addr_to_module_id`` in ``util/config_file.py`` of panoseti/panoseti)::

    module_id = ((256 * octet3 + octet4) >> 2) & 255

e.g. ``192.168.3.248`` is module 254 and ``192.168.0.12`` module 3 (a module's four
quabos have consecutive addresses, so the two lowest bits are dropped).

A folder that is not a run folder but holds ``.pff`` files directly (a few sample files
copied out of their run) is read as a run without configuration: its run type, threshold
and domes are unknown (``None``, NaN, ``""``).

Simulated archives (:mod:`phbook.sim.archive`) also write a *truth sidecar* next to
every PFF file, ``<file>.pff.truth.npz``, with the simulation's class and strength of
every frame (:func:`read_truth`); real archives have none, and their labels are
``"unknown"``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .. import config
from . import pff

__all__ = [
    "OBS_CONFIG",
    "DATA_CONFIG",
    "RUN_COMPLETE",
    "TRUTH_SUFFIX",
    "UNKNOWN_LABEL",
    "ConfigError",
    "ip_addr_to_module_id",
    "ModuleConfig",
    "ObsConfig",
    "DataConfig",
    "read_obs_config",
    "read_data_config",
    "obs_config_dict",
    "data_config_dict",
    "Run",
    "Archive",
    "frame_meta",
    "truth_path",
    "write_truth",
    "read_truth",
    "truth_class_names",
    "source_files",
    "scan_files",
    "utc_iso",
]

OBS_CONFIG = "obs_config.json"
DATA_CONFIG = "data_config.json"
RUN_COMPLETE = "run_complete"
TRUTH_SUFFIX = ".truth.npz"
#: The label of frames without simulation truth (real data).
UNKNOWN_LABEL = "unknown"


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and key."""


# ----------------------------------------------------------------------------------
# Configuration files


def ip_addr_to_module_id(ip_addr: str) -> int:
    """PANOSETI module ID of a module from the IP address of its first quabo.

    ``((256 * octet3 + octet4) >> 2) & 255``: bits 2-9 of the address, the rule of
    ``ip_addr_to_module_id`` in the PANOSETI control software.
    """
    try:
        octets = ipaddress.IPv4Address(str(ip_addr).strip()).packed
    except ValueError:
        raise ValueError(f"{ip_addr!r} is not an IPv4 address") from None
    return ((256 * octets[2] + octets[3]) >> 2) & 255


@dataclass(frozen=True)
class ModuleConfig:
    """One module of ``obs_config.json``: its ID (from the IP address) and dome."""

    id: int
    ip_addr: str
    dome: str
    name: str = ""


@dataclass(frozen=True)
class ObsConfig:
    """The domes and modules of a run (``obs_config.json``)."""

    name: str
    domes: tuple[str, ...]
    modules: tuple[ModuleConfig, ...]
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    def dome_of(self, module_id: int) -> str | None:
        """The dome of a module ID, or None when the module is not listed."""
        for m in self.modules:
            if m.id == module_id:
                return m.dome
        return None


def _load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None


def read_obs_config(path: str | os.PathLike) -> ObsConfig:
    """Read ``obs_config.json``: ``{"name", "domes": [{"name", "modules": [{"ip_addr",
    ...}]}]}``; module IDs come from :func:`ip_addr_to_module_id`.

    Dome names are kept as written (PANOSETI writes them in lower case, e.g.
    ``astrograph``); comparisons elsewhere ignore case.
    """
    path = Path(path)
    raw = _load_json(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("domes"), list):
        raise ConfigError(f"{path}: expected an object with a list 'domes'")
    domes, modules, seen = [], [], {}
    for i, dome in enumerate(raw["domes"]):
        if not isinstance(dome, dict) or not isinstance(dome.get("modules"), list):
            raise ConfigError(f"{path}: domes[{i}] lacks a list 'modules'")
        dname = str(dome.get("name", f"dome{i}"))
        domes.append(dname)
        for j, mod in enumerate(dome["modules"]):
            where = f"{path}: domes[{i}].modules[{j}]"
            if not isinstance(mod, dict) or "ip_addr" not in mod:
                raise ConfigError(f"{where} lacks 'ip_addr'")
            try:
                mid = ip_addr_to_module_id(mod["ip_addr"])
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            if mid in seen:
                raise ConfigError(
                    f"{where}: module ID {mid} (ip_addr {mod['ip_addr']}) is also "
                    f"{seen[mid]}"
                )
            seen[mid] = f"ip_addr {mod['ip_addr']}"
            modules.append(
                ModuleConfig(mid, str(mod["ip_addr"]), dname, str(mod.get("name", "")))
            )
    return ObsConfig(str(raw.get("name", "")), tuple(domes), tuple(modules), raw)


@dataclass(frozen=True)
class DataConfig:
    """What ``data_config.json`` says about a run's pulse-height data."""

    run_type: str | None
    pe_threshold: float  #: pulse-height trigger threshold in photoelectrons (NaN: none)
    two_pixel_trigger: bool
    three_pixel_trigger: bool
    gain: float
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def trigger_pixels(self) -> int:
        """Pixels that must pass the threshold together: 1, 2 or 3."""
        return 3 if self.three_pixel_trigger else 2 if self.two_pixel_trigger else 1


def read_data_config(path: str | os.PathLike) -> DataConfig:
    """Read ``data_config.json`` (``run_type``, ``gain``, ``pulse_height.pe_threshold``,
    ``two_pixel_trigger``, ``three_pixel_trigger``). A run without pulse-height data
    has ``pe_threshold`` NaN."""
    path = Path(path)
    raw = _load_json(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    ph = raw.get("pulse_height") or {}
    if not isinstance(ph, dict):
        raise ConfigError(f"{path}: 'pulse_height' is not an object")
    try:
        thr = float(ph["pe_threshold"]) if "pe_threshold" in ph else float("nan")
        gain = float(raw["gain"]) if "gain" in raw else float("nan")
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: pe_threshold or gain is not a number: {exc}") from None
    return DataConfig(
        raw.get("run_type"),
        thr,
        bool(ph.get("two_pixel_trigger", 0)),
        bool(ph.get("three_pixel_trigger", 0)),
        gain,
        raw,
    )


def obs_config_dict(
    name: str,
    domes: dict[str, Sequence[dict | str]],
    sites: dict[str, dict] | None = None,
) -> dict:
    """An ``obs_config.json`` object in the PANOSETI layout.

    ``domes`` maps a dome name to its modules, each an IP address or a dict with at
    least ``ip_addr`` (other keys, e.g. ``azimuth``, are kept). ``sites`` optionally
    gives each dome's ``obslat``/``obslon``/``obsalt``.
    """
    out = {"name": name, "domes": []}
    for dname, mods in domes.items():
        dome: dict[str, Any] = {"name": dname}
        dome.update((sites or {}).get(dname, {}))
        dome["modules"] = [m if isinstance(m, dict) else {"ip_addr": m} for m in mods]
        for m in dome["modules"]:
            ip_addr_to_module_id(m["ip_addr"])  # validate
        out["domes"].append(dome)
    return out


def data_config_dict(
    run_type: str,
    pe_threshold: float,
    *,
    trigger_pixels: int = 1,
    gain: float = 60,
    max_file_size_mb: float = 4000,
) -> dict:
    """A ``data_config.json`` object of a pulse-height run, in the PANOSETI layout."""
    if trigger_pixels not in (1, 2, 3):
        raise ValueError(f"trigger_pixels must be 1, 2 or 3, got {trigger_pixels}")
    return {
        "run_type": run_type,
        "gain": gain,
        "pulse_height": {
            "pe_threshold": pe_threshold,
            "two_pixel_trigger": int(trigger_pixels == 2),
            "three_pixel_trigger": int(trigger_pixels == 3),
        },
        "max_file_size_mb": max_file_size_mb,
    }


# ----------------------------------------------------------------------------------
# Truth sidecars (simulated archives only)


def truth_path(pff_path: str | os.PathLike) -> Path:
    """Path of the truth sidecar of a PFF file: ``<file>.pff.truth.npz``."""
    return Path(os.fspath(pff_path) + TRUTH_SUFFIX)


def write_truth(
    pff_path: str | os.PathLike,
    classes: Sequence[str] | np.ndarray,
    strength: np.ndarray,
) -> Path:
    """Write the simulation truth of every frame of a PFF file, in file order.

    The sidecar holds ``class_names`` (str), ``class_codes`` (one small integer per
    frame, an index into ``class_names``) and ``strength`` (float32, NaN for normal
    frames): compact, so a selection reads the labels of millions of frames cheaply.
    """
    classes = np.asarray(classes).astype(str)
    strength = np.asarray(strength, dtype=np.float32)
    if classes.shape != strength.shape or classes.ndim != 1:
        raise ValueError(
            f"classes {classes.shape} and strength {strength.shape} must be equal 1-D"
        )
    names, codes = np.unique(classes, return_inverse=True)
    ctype = np.uint8 if len(names) <= 256 else np.uint16
    path = truth_path(pff_path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, class_names=names, class_codes=codes.astype(ctype), strength=strength)
    os.replace(tmp, path)
    return path


def read_truth(
    pff_path: str | os.PathLike,
    indices: np.ndarray | None = None,
    n_frames: int | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """(classes, strength) of a PFF file's frames from its truth sidecar, or None.

    ``indices`` picks frames (default all); ``n_frames``, when given, must equal the
    sidecar's length (a mismatch raises, naming the file).
    """
    path = truth_path(pff_path)
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        names = z["class_names"]
        codes = z["class_codes"]
        strength = z["strength"]
    if n_frames is not None and len(codes) != n_frames:
        raise ValueError(
            f"{path}: truth for {len(codes)} frames but the PFF file has {n_frames}"
        )
    if indices is not None:
        codes, strength = codes[indices], strength[indices]
    return names[codes], strength


def truth_class_names(pff_path: str | os.PathLike) -> list[str]:
    """The class names in a truth sidecar (empty when there is none)."""
    path = truth_path(pff_path)
    if not path.exists():
        return []
    with np.load(path, allow_pickle=False) as z:
        return [str(s) for s in z["class_names"]]


# ----------------------------------------------------------------------------------
# Runs and archives


class Run:
    """One run folder (or a plain folder of ``.pff`` files, a run without configs)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"run folder {self.path} does not exist")
        self.name = self.path.name
        self.run_name: pff.RunName | None = None
        if self.name.endswith(".pffd"):
            self.run_name = pff.parse_run_name(self.name)
        dc, oc = self.path / DATA_CONFIG, self.path / OBS_CONFIG
        self.data_config = read_data_config(dc) if dc.exists() else None
        self.obs_config = read_obs_config(oc) if oc.exists() else None
        self.complete = (self.path / RUN_COMPLETE).exists()

    def __repr__(self) -> str:
        return (
            f"Run({self.name}, run_type={self.run_type}, "
            f"pe_threshold={self.pe_threshold}, domes={self.domes})"
        )

    @property
    def run_type(self) -> str | None:
        """From ``data_config.json``, else from the folder name."""
        if self.data_config is not None and self.data_config.run_type:
            return self.data_config.run_type
        return self.run_name.run_type if self.run_name else None

    @property
    def pe_threshold(self) -> float:
        return self.data_config.pe_threshold if self.data_config else float("nan")

    @property
    def trigger_pixels(self) -> int:
        return self.data_config.trigger_pixels if self.data_config else 0

    @property
    def domes(self) -> tuple[str, ...]:
        """Domes with at least one module in ``obs_config.json``."""
        if self.obs_config is None:
            return ()
        return tuple(dict.fromkeys(m.dome for m in self.obs_config.modules))

    def pff_files(self) -> list[tuple[pff.PFFName, Path]]:
        """The PFF files of the run with their parsed names, by module, product, seqno.

        A ``.pff`` file whose name does not parse raises :class:`pff.PFFNameError`
        naming it.
        """
        out = []
        for p in self.path.iterdir():
            if p.name.endswith(".pff") and p.is_file():
                try:
                    out.append((pff.parse_filename(p.name), p))
                except pff.PFFNameError as exc:
                    raise pff.PFFNameError(exc.detail, path=p) from None
        out.sort(key=lambda t: (t[0].module, t[0].dp, t[0].seqno, t[1].name))
        return out


_FILE_COLUMNS = [
    "run",
    "observatory",
    "run_start",
    "run_type",
    "pe_threshold",
    "trigger_pixels",
    "n_domes",
    "dome",
    "module",
    "dp",
    "seqno",
    "start",
    "file",
    "path",
    "size",
    "frame_size",
    "n_frames",
    "fixed",
    "has_truth",
    "error",
]


def _file_row(
    root: Path, path: Path, name: pff.PFFName | None, run: Run | None, dp: str
) -> dict[str, Any]:
    """The files-table row of one PFF file (``name`` None: a name that does not parse,
    of product ``dp``); ``n_domes`` is left for the table to count."""
    dome = run.obs_config.dome_of(name.module) if run and run.obs_config and name else None
    try:
        info = pff.scan_file(path, dp)
        error = ""
    except pff.PFFError as exc:  # the first frame is damaged
        size = path.stat().st_size
        info = pff.FileInfo(str(path), dp, size, 0, False, 0, size)
        error = str(exc)
    return {
        "run": run.name if run else "",
        "observatory": run.run_name.observatory if run and run.run_name else "",
        "run_start": run.run_name.start if run and run.run_name else pd.NaT,
        "run_type": run.run_type if run else None,
        "pe_threshold": run.pe_threshold if run else float("nan"),
        "trigger_pixels": run.trigger_pixels if run else 0,
        "n_domes": 0,
        "dome": dome or "",
        "module": name.module if name else -1,
        "dp": dp,
        "seqno": name.seqno if name else -1,
        "start": name.start if name else pd.NaT,
        "file": path.relative_to(root).as_posix(),
        "path": str(path),
        "size": info.size,
        "frame_size": info.frame_size,
        "n_frames": info.n_frames,
        "fixed": info.fixed,
        "has_truth": truth_path(path).exists(),
        "error": error,
    }


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    return df.astype(
        {
            "module": int,
            "seqno": int,
            "size": np.int64,
            "n_frames": np.int64,
            "frame_size": np.int64,
            "trigger_pixels": int,
            "pe_threshold": float,
        }
    )


class Archive:
    """PANOSETI data, real or simulated: a folder of run folders, one run folder, or
    one ``.pff`` file (the *source* of every command).

    ``Archive(path).files()`` is a table of every PFF file with its run's type,
    threshold and domes, and the file's frame count from its size (no frame is read);
    :meth:`iter_frames` streams frames with per-frame metadata. For a single file,
    ``root`` is its folder and ``dp`` names its product when its name does not.
    """

    def __init__(self, root: str | os.PathLike, dp: str | None = None):
        path = Path(root)
        self.file: Path | None = None
        self.dp = dp
        if path.is_file():
            if not path.name.endswith(".pff"):
                raise ValueError(f"{path}: not a .pff file or a folder of runs")
            self.file, path = path, path.parent
        self.root = path
        if not self.root.is_dir():
            raise FileNotFoundError(f"archive folder {self.root} does not exist")
        self._runs: list[Run] | None = None
        self._files: pd.DataFrame | None = None

    @property
    def kind(self) -> str:
        """``"pff"`` for a single file, ``"archive"`` for a folder."""
        return "archive" if self.file is None else "pff"

    def __repr__(self) -> str:
        return f"Archive({str(self.root)!r}, {len(self.runs)} run(s))"

    @property
    def runs(self) -> list[Run]:
        """Run folders (``*.pffd``) anywhere under the root, by start time; plus the
        root itself when it holds ``.pff`` files directly (for a single file: its run
        folder, if it is in one)."""
        if self._runs is None and self.file is not None:
            self._runs = []
            if self.root.name.endswith(".pffd"):
                try:
                    self._runs = [Run(self.root)]
                except (pff.PFFNameError, ConfigError):
                    pass
        if self._runs is None:
            runs = []
            # run folders linked into an archive are followed (each real folder once:
            # a link that points back up the tree would otherwise loop)
            seen: set[str] = set()
            for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
                real = os.path.realpath(dirpath)
                if real in seen:
                    dirnames[:] = []
                    continue
                seen.add(real)
                dirnames.sort()
                here = Path(dirpath)
                if here.name.endswith(".pffd"):
                    runs.append(Run(here))
                    dirnames[:] = []  # do not descend into a run
                elif any(f.endswith(".pff") for f in filenames):
                    runs.append(Run(here))
            runs.sort(
                key=lambda r: (
                    r.run_name.start.timestamp() if r.run_name else float("-inf"),
                    r.name,
                )
            )
            self._runs = runs
        return self._runs

    def files(self, dp: str | None = None) -> pd.DataFrame:
        """One row per PFF file (of product ``dp``, default all), in run, module,
        seqno order.

        ``n_frames`` is ``size // frame_size`` from the first header (fixed-width files;
        ``fixed`` False marks files that need a scan to count, ``error`` says why when
        the first frame is damaged); ``n_domes`` counts the
        domes whose modules have files of the same product in the run; ``dome`` is
        ``""`` for a module missing from ``obs_config.json``.
        """
        if self._files is None:
            if self.file is not None:
                df = self._one_file()
            else:
                rows = [
                    _file_row(self.root, path, name, run, name.dp)
                    for run in self.runs
                    for name, path in run.pff_files()
                ]
                df = pd.DataFrame(rows, columns=_FILE_COLUMNS)
                if len(df):
                    known = df[df["dome"] != ""]
                    nd = known.groupby(["run", "dp"])["dome"].nunique()
                    key = pd.MultiIndex.from_frame(df[["run", "dp"]])
                    df["n_domes"] = nd.reindex(key).fillna(0).astype(int).to_numpy()
                    df = _typed(df)
            self._files = df
        df = self._files
        if dp is not None:
            pff.data_product(dp)
            df = df[df["dp"] == dp]
        return df.reset_index(drop=True)

    def _one_file(self) -> pd.DataFrame:
        """The table of a single-file source: its row, with the domes of its run."""
        # the one file-name rule of every command (phbook.io.pff.identify): the name,
        # else the product given, else the product the first frame tells
        try:
            name, prod = pff.identify(self.file)
        except pff.PFFNameError:
            if self.dp is None:
                raise
            name, prod = None, pff.data_product(self.dp)
        dp = prod.name
        run = self.runs[0] if self.runs else None
        row = _file_row(self.root, self.file, name, run, dp)
        if run is not None and run.obs_config is not None:
            domes = {
                run.obs_config.dome_of(n.module) for n, _ in run.pff_files() if n.dp == dp
            }
            row["n_domes"] = len(domes - {None})
        return _typed(pd.DataFrame([row], columns=_FILE_COLUMNS))

    def summary(self) -> pd.DataFrame:
        """Frames per run: run type, threshold, domes, modules, files and frames."""
        df = self.files()
        if not len(df):
            return pd.DataFrame()
        return (
            df.groupby(["run", "dp"], sort=False)
            .agg(
                run_type=("run_type", "first"),
                pe_threshold=("pe_threshold", "first"),
                domes=("dome", lambda s: ",".join(sorted(set(s) - {""}))),
                modules=("module", "nunique"),
                files=("file", "size"),
                n_frames=("n_frames", "sum"),
            )
            .reset_index()
        )

    def iter_frames(
        self,
        files: pd.DataFrame | None = None,
        *,
        dp: str = "ph256",
        chunk_frames: int = 65536,
        strict: bool = True,
        labels: bool = True,
    ) -> Iterator[tuple[pff.Frames, pd.DataFrame]]:
        """Stream ``(frames, meta)`` chunks over the files of the archive (or the rows
        of ``files``, a subset of :meth:`files`); see :func:`frame_meta`."""
        table = self.files(dp) if files is None else files
        for row in table.itertuples(index=False):
            first = 0
            for frames in pff.iter_chunks(row.path, chunk_frames, dp=row.dp, strict=strict):
                idx = None
                if labels and row.fixed:
                    idx = frames.offsets // row.frame_size
                elif labels:
                    idx = np.arange(first, first + len(frames))
                yield frames, frame_meta(frames, row._asdict(), idx if labels else None)
                first += len(frames)


def frame_meta(
    frames: pff.Frames,
    file_row: dict[str, Any],
    truth_indices: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per-frame metadata of frames of one file: run, dome, module, quabo,
    pe_threshold, time (Unix s), time_flags, file, offset, and, where a truth sidecar
    exists, label and strength (else ``"unknown"`` and NaN)."""
    n = len(frames)
    meta = pd.DataFrame(
        {
            "run": np.full(n, file_row["run"], dtype=object),
            "dome": np.full(n, file_row["dome"], dtype=object),
            "module": np.full(n, int(file_row["module"]), dtype=np.int16),
            "quabo": frames.quabo,
            "pe_threshold": np.full(n, file_row["pe_threshold"], dtype=np.float32),
            "time": frames.time,
            "time_flags": frames.time_flags,
            "file": np.full(n, file_row["file"], dtype=object),
            "offset": frames.offsets.astype(np.int64),
        }
    )
    labels = np.full(n, UNKNOWN_LABEL, dtype=object)
    strength = np.full(n, np.nan, dtype=np.float32)
    if truth_indices is not None and file_row.get("has_truth"):
        truth = read_truth(file_row["path"], truth_indices)
        if truth is not None:
            labels, strength = truth[0].astype(object), truth[1]
    meta["label"] = labels
    meta["strength"] = strength
    return meta


# ----------------------------------------------------------------------------------
# A source: what the commands read PFF data from


def source_files(
    source: str | os.PathLike, dp: str | None = None
) -> tuple[str, Path, pd.DataFrame]:
    """``(kind, root, files)`` of a source, one ``.pff`` file (kind ``"pff"``) or a
    folder of runs (``"archive"``): the :meth:`Archive.files` table, file names
    relative to ``root``. ``dp`` names the product of a file whose name does not."""
    src = Path(source)
    if not src.exists():
        raise FileNotFoundError(
            f"{src} does not exist (expected a .pff file, a folder of runs or an HDF5 "
            "selection)"
        )
    if src.is_file() and not src.name.endswith(".pff"):
        raise ValueError(f"{src}: not a .pff file, a folder or an HDF5 selection")
    archive = Archive(src, dp=dp)
    table = archive.files()
    if not len(table):
        raise ValueError(f"{src}: no .pff files found in it or its run folders")
    return archive.kind, archive.root, table


def utc_iso(t: float | None) -> str:
    """A Unix time as ISO 8601 UTC with milliseconds (``"?"`` when unknown)."""
    if t is None or not np.isfinite(t):
        return "?"
    return (
        datetime.fromtimestamp(float(t), tz=timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def scan_files(table: pd.DataFrame, progress: bool | None = None) -> dict[str, Any]:
    """Read every frame of the files of ``table`` (a :meth:`Archive.files` table):
    frames, quabos, time span (UTC), time flags and damaged stretches (the first 20
    listed with file and byte offset). Memory is bounded by one chunk."""
    show = config.show_progress() if progress is None else progress
    t0 = time.perf_counter()
    n = 0
    quabos: set[int] = set()
    tmin, tmax = np.inf, -np.inf
    flags = {"clocks_disagree": 0, "nsec_placeholder": 0, "no_packet": 0}
    damage: list[dict[str, Any]] = []
    n_damage = damaged_bytes = 0
    per_file = []
    total = int(table["size"].sum())
    with tqdm(
        total=total, unit="B", unit_scale=True, desc="reading", disable=not show
    ) as bar:
        for row in table.itertuples(index=False):
            got = 0
            for chunk in pff.iter_chunks(row.path, 65536, dp=row.dp, strict=False):
                got += len(chunk)
                if len(chunk):
                    quabos.update(np.unique(chunk.quabo).tolist())
                    t = chunk.time
                    if np.isfinite(t).any():
                        tmin, tmax = min(tmin, np.nanmin(t)), max(tmax, np.nanmax(t))
                    f = chunk.time_flags
                    flags["clocks_disagree"] += int(
                        np.count_nonzero(f & pff.CLOCKS_DISAGREE)
                    )
                    flags["nsec_placeholder"] += int(
                        np.count_nonzero(f & pff.NSEC_PLACEHOLDER)
                    )
                    flags["no_packet"] += int(np.count_nonzero(f & pff.NO_PACKET))
                for d in chunk.damage:
                    n_damage += 1
                    damaged_bytes += d.skipped_bytes
                    if len(damage) < 20:
                        damage.append(
                            {
                                "file": row.file,
                                "offset": d.offset,
                                "kind": d.kind,
                                "skipped_bytes": d.skipped_bytes,
                                "message": d.message,
                            }
                        )
            n += got
            per_file.append(got)
            bar.update(int(row.size))
    return {
        "frames": n,
        "quabos": sorted(int(q) for q in quabos if q >= 0),
        "time_start": utc_iso(tmin) if np.isfinite(tmin) else None,
        "time_end": utc_iso(tmax) if np.isfinite(tmax) else None,
        "span_s": float(tmax - tmin) if np.isfinite(tmin) else None,
        "damaged_stretches": n_damage,
        "damaged_bytes": int(damaged_bytes),
        "damage": damage,
        "time_flags": flags,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def damage_list(source: str | os.PathLike, dp: str | None = None) -> list[pff.Damage]:
    """Every damaged stretch of every PFF file of a source (a file, a run folder or an
    archive), in file order: file, byte offset, length and kind
    (``phbook inspect --damage``)."""
    _, _, table = source_files(source, dp)
    out: list[pff.Damage] = []
    for row in table.itertuples(index=False):
        out.extend(pff.list_damage(row.path, row.dp))
    return out
