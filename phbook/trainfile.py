"""Train a detector on a selection and write its model file: what ``phbook train`` does.

:func:`train` reads a selection (:mod:`phbook.select`), normalises its frames, holds
out a validation set, fits a detector family of :mod:`phbook.modelfile` and writes the
model file with a summary of the training data. Under ``torchrun`` it joins the process
group first, so the same call trains on several GPUs (:mod:`phbook.train_ddp`).
:func:`prepare` does everything up to the fit and returns a :class:`Training` that says
what it will do, for a caller that wants to print that before the long part.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import config, modelfile, train_ddp, transforms
from . import select as _select
from .io import writing

__all__ = ["Training", "TrainReport", "prepare", "train"]


@dataclass
class TrainReport:
    """What a training run did (the model file holds it too, under ``training``)."""

    out: str
    family: str
    n_frames: int  #: frames the detector was fitted on
    n_val: int  #: frames held out for validation
    processes: int
    seconds: float
    score_quantiles: dict[str, float]  #: of the training scores (a random subset)
    threshold: float
    contamination: float

    def __str__(self) -> str:
        q = self.score_quantiles
        return (
            f"trained in {self.seconds:.1f} s; training scores: median {q['50%']:.4g}, "
            f"99% {q['99%']:.4g}; threshold {self.threshold:.4g} (contamination "
            f"{self.contamination:g}) -> {self.out}"
        )


@dataclass
class Training:
    """A training run ready to go (from :func:`prepare`); :meth:`run` fits and saves."""

    family: modelfile.Family
    detector: Any
    x_fit: np.ndarray
    n_val: int
    fit_kwargs: dict[str, Any]
    stretch: Any
    out: Path
    selection: Path
    attrs: dict[str, Any]
    labels: np.ndarray
    pe_thresholds: list[float]
    seed: int
    contamination: float
    device: str | None = None
    rank: int = 0
    world: int = 1

    def __str__(self) -> str:
        dev = config.device(self.device) if not self.world > 1 else "per rank"
        return (
            f"training {self.family.name} on {len(self.x_fit):,} frames"
            + (f" ({self.n_val:,} for validation)" if self.n_val else "")
            + (f" with {self.world} processes (DDP)" if self.world > 1 else "")
            + f", device {dev}"
        )

    def run(self) -> TrainReport | None:
        """Fit the detector and write the model file; ``None`` on ranks other than 0
        of a DDP launch (rank 0 writes the file)."""
        det, x_fit = self.detector, self.x_fit
        t0 = time.perf_counter()
        det.fit(x_fit)
        seconds = time.perf_counter() - t0
        if self.rank != 0:
            return None
        train_scores = det.anomaly_score(x_fit[:50_000])  # a summary: a random subset
        q = np.quantile(train_scores, [0.5, 0.9, 0.99, 0.999])
        quantiles = {"50%": float(q[0]), "90%": float(q[1]), "99%": float(q[2])}
        quantiles["99.9%"] = float(q[3])
        uniq, counts = np.unique(self.labels, return_counts=True)
        history = getattr(det, "history_", None)
        attrs = self.attrs
        training = {
            "source": os.path.abspath(self.selection),
            "source_format": attrs.get("format"),
            "archive": attrs.get("archive"),
            "query": attrs.get("query"),
            "selection_seed": attrs.get("seed"),
            "population": attrs.get("population"),
            "n_frames": int(len(x_fit)),
            "n_val": int(self.n_val),
            "labels": dict(zip(uniq.tolist(), counts.tolist(), strict=True)),
            "pe_thresholds": self.pe_thresholds,
            "seed": int(self.seed),
            "settings": {
                k: v
                for k, v in self.fit_kwargs.items()
                if k in ("epochs", "batch_size", "lr", "patience")
            },
            "processes": int(self.world),
            "seconds": round(seconds, 3),
            "score_quantiles": quantiles,
        }
        if history is not None and len(history):
            last = history.iloc[-1]
            training["history"] = {
                k: float(last[k])
                for k in history.columns
                if k.startswith(("train_", "val_"))
            }
            training["epochs_run"] = int(len(history))
        modelfile.save(
            self.out,
            det,
            self.family.name,
            dp=str(attrs.get("dp", "ph256")),
            normalisation=self.stretch,
            training=training,
        )
        self.out.with_name(self.out.name + ".ckpt").unlink(missing_ok=True)
        return TrainReport(
            str(self.out),
            self.family.name,
            int(len(x_fit)),
            int(self.n_val),
            int(self.world),
            seconds,
            quantiles,
            -float(det.offset_),
            float(self.contamination),
        )


def _params(fam: modelfile.Family, params: dict[str, Any] | None) -> dict[str, Any]:
    """The family's defaults updated with ``params``; a clear error for a stranger."""
    out = fam.defaults()
    unknown = sorted(set(params or {}) - set(out))
    if unknown:
        raise ValueError(
            f"{', '.join(unknown)}: not an option of model {fam.name!r} (its options: "
            f"{', '.join(sorted(out)) or 'none'})"
        )
    out.update(params or {})
    return out


def prepare(
    selection: str | os.PathLike,
    family: str,
    out: str | os.PathLike,
    *,
    params: dict[str, Any] | None = None,
    max_frames: int | None = None,
    val_fraction: float = 0.1,
    contamination: float = 0.01,
    stretch: str = "asinh",
    softening: float = 16.0,
    x_max: float = 3400.0,
    seed: int = 0,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    rank: int = 0,
    world: int = 1,
) -> Training:
    """Read and normalise the frames of ``selection`` and build the detector of
    ``family`` with ``params`` (its options; the rest keep their defaults), ready to
    be fitted on a random order of the frames, the first ``val_fraction`` of them held
    out for validation (neural networks). ``stretch`` is ``"asinh"`` (``softening``
    ADC) or ``"linear"``, ``x_max`` the pixel value mapped to 1; a family with its own
    normalisation ignores them. ``rank``/``world`` describe a DDP launch."""
    fam = modelfile.family(family)
    params = _params(fam, params)
    if not fam.trains:  # a bad option (--block 2, --slope -1) before the frames are read
        fam.build({**params, "contamination": contamination}, {})
    # refused now, not after the training: an input as the output, an existing file,
    # a folder that takes no file
    out = writing.check_output(
        out, {"selection": selection}, overwrite=overwrite, probe=rank == 0
    )
    sel = Path(selection)
    if not sel.exists():
        raise FileNotFoundError(f"{sel} does not exist (make one with phbook select)")
    attrs = _select.read_attrs(sel)
    if attrs.get("format") != _select.FORMAT:
        raise ValueError(
            f"{sel} is not a phbook selection (format {attrs.get('format')!r})"
        )
    images, labels, meta = _select.load(sel)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    if max_frames is not None:
        if max_frames < 1:
            raise ValueError(f"--max-frames must be positive, got {max_frames}")
        order = order[:max_frames]
    images, labels = images[order], labels[order]
    if fam.normalisation is not None:  # the family takes its own
        norm = modelfile.normaliser({"kind": fam.normalisation})
    elif stretch == "asinh":
        norm = transforms.AsinhStretch(softening, x_max)
    else:
        norm = transforms.LinearScale(x_max)
    x = norm(images)[:, None]
    config.seed_everything(seed)
    fit_kwargs: dict[str, Any] = {}
    n_val = 0
    if fam.trains:
        n_val = int(round(val_fraction * len(x)))
        if not 0 <= val_fraction < 1:
            raise ValueError(f"--val-fraction must lie in [0, 1), got {val_fraction}")
        fit_kwargs = {
            "epochs": int(params.pop("epochs")),
            "batch_size": int(params.pop("batch_size")),
            "lr": float(params.pop("lr")),
            "seed": seed,
            "checkpoint": out.with_name(out.name + ".ckpt"),
            "progress": progress,
        }
        patience = int(params.pop("patience"))
        if n_val:
            fit_kwargs["x_val"] = x[:n_val]
            if patience > 0:
                fit_kwargs["patience"] = patience
        if world > 1:
            fit_kwargs["distributed"] = True
        if device:
            fit_kwargs["device"] = device
    params["contamination"] = contamination
    det = fam.build(params, fit_kwargs)
    if device and hasattr(det, "device"):
        det.device = device
    return Training(
        fam,
        det,
        x[n_val:],
        n_val,
        fit_kwargs,
        norm,
        out,
        sel,
        attrs,
        labels,
        sorted(float(t) for t in np.unique(meta["pe_threshold"])),
        seed,
        contamination,
        device,
        rank,
        world,
    )


def train(
    selection: str | os.PathLike,
    family: str,
    out: str | os.PathLike,
    *,
    announce: Callable[[Training], None] | None = None,
    **kwargs: Any,
) -> TrainReport | None:
    """Train ``family`` on ``selection`` and write the model file ``out`` (arguments of
    :func:`prepare`); returns what was done (``None`` on DDP ranks other than 0).

    Launched by ``torchrun``, every process joins the process group and trains its
    share (DistributedDataParallel); rank 0 writes the file. ``announce`` is called
    with the prepared :class:`Training` before the fit, on rank 0.
    """
    fam = modelfile.family(family)
    rank, world = 0, 1
    if train_ddp.in_torchrun():
        if not fam.trains:
            raise ValueError(
                f"model {fam.name!r} is not trained with the neural-network loop; run it "
                "without torchrun"
            )
        rank, world = train_ddp.init_ddp()
    try:
        job = prepare(selection, family, out, rank=rank, world=world, **kwargs)
        if announce is not None and rank == 0:
            announce(job)
        return job.run()
    finally:
        train_ddp.cleanup_ddp()
