"""One simulated observing run, written as real PFF files: what ``phbook simulate`` does.

The run folder has the real layout (``obs_<observatory>.start_<time>.runtype_<type>.pffd``
with ``data_config.json``, ``obs_config.json``, ``ph256`` files per module and
``run_complete``; see :mod:`phbook.sim.archive`), so every tool that reads real runs reads
it. The simulation truth goes beside the files: the per-file sidecars of
:mod:`phbook.io.archive` and one ``labels.csv`` at the run's root with the file, frame
number, byte offset, quabo, class and strength of every frame.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..io import archive as _archive
from ..io import pff
from . import archive as sim_archive
from . import calibration
from . import panoseti as P

__all__ = ["LABELS", "simulate_run"]

LABELS = "labels.csv"  #: the run's label file
_DEFAULT_START = "2025-08-02T05:31:36Z"


def simulate_run(
    out: str | Path,
    n: int,
    *,
    seed: int = 0,
    pe_threshold: float | None = None,
    trigger_pixels: int = 1,
    domes: tuple[str, ...] = ("astrograph",),
    modules_per_dome: int = 1,
    baseline_file: str | Path | None = None,
    anomaly_fraction: float = 0.0,
    anomaly_classes: tuple[str, ...] | None = None,
    params: str | Path | None = None,
    start: str = _DEFAULT_START,
    rate_hz: float = 0.5,
    progress: Any = None,
) -> dict[str, Any]:
    """Simulate ``n`` frames of one run into a run folder under ``out``.

    The instrument and shower population are the calibrated defaults, or those of the
    parameter file ``params`` (written by ``phbook calibrate``); ``pe_threshold`` and
    ``baseline_file`` override them. The frames are split evenly over
    ``modules_per_dome`` modules of each of the Lick ``domes``. Returns a summary: the
    run folder, files, frame and class counts.
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    unknown = [d for d in domes if d not in sim_archive.LICK_DOMES]
    if unknown:
        raise ValueError(
            f"unknown dome(s) {unknown}; valid: {', '.join(sim_archive.LICK_DOMES)}"
        )
    if not 1 <= modules_per_dome <= 2:
        raise ValueError(f"modules_per_dome must be 1 or 2, got {modules_per_dome}")
    if not 0 <= anomaly_fraction <= 1:
        raise ValueError(f"anomaly_fraction must lie in [0, 1], got {anomaly_fraction}")
    inst, pop = (
        calibration.load_parameters(params)
        if params is not None
        else (P.Instrument(), P.ShowerPopulation())
    )
    changes: dict[str, Any] = {"trigger_pixels": trigger_pixels}
    if pe_threshold is not None:
        changes["pe_threshold"] = float(pe_threshold)
    if baseline_file is not None:
        changes["baseline_file"] = str(baseline_file)
    inst = replace(inst, **changes)  # validates the ranges
    classes = tuple(anomaly_classes) if anomaly_classes else None
    bad = [c for c in classes or () if c not in P.ALL_CLASSES]
    if bad:
        raise ValueError(
            f"unknown anomaly classes {bad}; valid: {', '.join(P.ALL_CLASSES)}"
        )
    dome_map = {d: sim_archive.LICK_DOMES[d][:modules_per_dome] for d in domes}
    n_mod = sum(len(v) for v in dome_map.values())
    per = [n // n_mod + (1 if i < n % n_mod else 0) for i in range(n_mod)]
    t0 = pff.parse_time(start).replace(tzinfo=timezone.utc)
    spec = sim_archive.RunSpec(
        start=t0.timestamp(),
        pe_threshold=inst.pe_threshold,
        domes=dome_map,
        frames_per_module=per,
        rates_hz=[rate_hz] * n_mod,
        trigger_pixels=trigger_pixels,
    )

    def source(k, *, seed, pe_threshold, trigger_pixels, anomaly_fraction):
        return P.simulate(
            k,
            seed=seed,
            instrument=inst,
            population=pop,
            anomaly_fraction=anomaly_fraction,
            anomaly_classes=classes,
        )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    folder = sim_archive.write_run(
        out,
        spec,
        seed=seed,
        source=source,
        anomaly_fraction=anomaly_fraction,
        progress=progress,
    )
    counts: dict[str, int] = {}
    frame_size = pff.DATA_PRODUCTS["ph256"].frame_size
    files = sorted(folder.glob("*.pff"))
    with open(folder / LABELS, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "frame", "byte_offset", "quabo", "class", "strength"])
        for path in files:
            labels, strength = _archive.read_truth(path)
            quabo = pff.read_frames(path, warn=False).quabo
            for i, (c, s, q) in enumerate(zip(labels, strength, quabo, strict=True)):
                w.writerow(
                    [
                        path.name,
                        i,
                        i * frame_size,
                        int(q),
                        c,
                        "" if np.isnan(s) else f"{s:.4f}",
                    ]
                )
                counts[str(c)] = counts.get(str(c), 0) + 1
    return {
        "run": folder,
        "files": [p.name for p in files],
        "n_frames": int(sum(per)),
        "classes": counts,
        "pe_threshold": inst.pe_threshold,
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
