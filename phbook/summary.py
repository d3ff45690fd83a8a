"""What a path holds, as plain values: PFF data (a file, a run folder or an archive),
a selection, a score file or a model file (``phbook inspect``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import modelfile
from . import score as _score
from . import select as _select
from .io import archive as _archive
from .io.archive import utc_iso

__all__ = ["inspect_path"]


def _inspect_pff(path: Path, scan: bool, progress: bool | None) -> dict[str, Any]:
    kind, root, table = _archive.source_files(path)
    out: dict[str, Any] = {
        "kind": "file" if kind == "pff" else "archive",
        "path": str(path),
        "runs": int(table["run"].nunique()),
        "files": len(table),
        "bytes": int(table["size"].sum()),
        "frames_from_sizes": int(table["n_frames"].sum()),
        "products": {
            dp: {"files": int(len(g)), "frames": int(g["n_frames"].sum())}
            for dp, g in table.groupby("dp")
        },
        "modules": sorted(int(m) for m in table["module"].unique()),
        "domes": sorted(d for d in table["dome"].unique() if d),
        "pe_thresholds": sorted(
            float(t) for t in table["pe_threshold"].unique() if np.isfinite(t)
        ),
        "run_types": sorted(str(t) for t in table["run_type"].dropna().unique()),
        "simulated": bool(table["has_truth"].any()),
        "unreadable_first_frame": [
            {"file": r.file, "error": r.error}
            for r in table.itertuples(index=False)
            if getattr(r, "error", "")
        ],
    }
    if kind == "archive":
        summary = _archive.Archive(path).summary()
        out["run_table"] = summary.to_dict(orient="records") if len(summary) else []
    if scan:
        out["scan"] = _archive.scan_files(table, progress)
    return out


def _inspect_h5(path: Path) -> dict[str, Any]:
    with h5py.File(path, "r") as h5:
        fmt = h5.attrs.get("format")
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in h5.attrs.items()}
        if fmt == _select.FORMAT:
            n = h5["images"].shape[0]
            labels, counts = np.unique(h5["labels"][:].astype(str), return_counts=True)
            t = h5["meta/time"][:]
            return {
                "kind": "selection",
                "path": str(path),
                "frames": int(n),
                "image_shape": list(h5["images"].shape[1:]),
                "attrs": {k: v for k, v in attrs.items() if k != "query"},
                "query": json.loads(attrs.get("query", "{}")),
                "labels": dict(zip(labels.tolist(), counts.tolist(), strict=True)),
                "modules": sorted(int(m) for m in np.unique(h5["meta/module"][:])),
                "time_start": utc_iso(np.nanmin(t)) if np.isfinite(t).any() else None,
                "time_end": utc_iso(np.nanmax(t)) if np.isfinite(t).any() else None,
            }
        if fmt == _score.FORMAT:
            s = h5["score"][:]
            q = np.quantile(s, [0.5, 0.99, 0.999]) if len(s) else [np.nan] * 3
            attrs.pop("training", None)
            return {
                "kind": "scores",
                "path": str(path),
                "frames": int(len(s)),
                "attrs": attrs,
                "score_quantiles": {
                    "50%": float(q[0]),
                    "99%": float(q[1]),
                    "99.9%": float(q[2]),
                },
                "above_threshold": int(np.count_nonzero(s > attrs["threshold"])),
                "damaged_stretches": int(h5["damage/offset"].shape[0]),
            }
    raise ValueError(
        f"{path}: an HDF5 file but neither a phbook selection nor a score file "
        f"(format {fmt!r})"
    )


def _inspect_model(path: Path) -> dict[str, Any]:
    m = modelfile.load(path, device="cpu")
    return {
        "kind": "model",
        "path": str(path),
        "family": m.family,
        "params": m.params,
        "dp": m.dp,
        "image_shape": list(m.image_shape),
        "normalisation": m.normalisation,
        "threshold": -float(m.detector.offset_),
        "contamination": float(m.detector.contamination),
        "training": m.training,
        "created": m.created,
        "phbook_version": m.phbook_version,
        "sha256": m.sha256,
    }


def inspect_path(
    path: str | os.PathLike, *, scan: bool = True, progress: bool | None = None
) -> dict[str, Any]:
    """A summary (plain values) of a PFF file, run folder or archive, a selection or
    score file, or a model file. ``scan`` reads every frame of PFF data for the quabos,
    time span and damaged frames; without it only names, sizes and first headers."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    if p.is_file() and p.suffix.lower() in (".h5", ".hdf5", ".hdf"):
        return _inspect_h5(p)
    if p.is_file() and p.suffix.lower() == ".pt":
        return _inspect_model(p)
    return _inspect_pff(p, scan, progress)
