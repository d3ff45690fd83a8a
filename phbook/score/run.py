"""The driver: plan, journal, score the parts here or on Dask, write the output."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .. import __version__, modelfile
from .. import config as _config
from ..io import writing
from ..noise import NOISE_SCHEME, SCORE_BLOCK
from . import distributed
from .journal import _Journal, journal_path
from .layout import FORMAT, JOURNAL_FORMAT
from .output import _Output
from .parts import score_part
from .plan import Plan, plan_source

__all__ = ["ScoreReport", "score", "score_dask", "peak_rss_mb"]


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (``VmHWM`` of /proc, where present).

    ``ru_maxrss`` is the fallback; on Linux it may include the parent's resident size at
    fork time, which ``VmHWM`` does not.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if os.uname().sysname == "Darwin" else rss / 1024


# ----------------------------------------------------------------------------------
# The driver


@dataclass
class ScoreReport:
    """What a scoring run did (``phbook score --report`` writes it as JSON)."""

    out: str
    n_scored: int
    n_damaged: int
    n_files: int
    n_parts: int
    resumed_frames: int  #: frames found already scored in the journal
    seconds: float  #: wall time of this call
    frames_per_s: float  #: frames scored by this call per second of it
    peak_rss_mb: float  #: of this process (a Dask run's workers are not included)
    workers: int = 1
    already_complete: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _scoring_options(model: Any) -> dict[str, Any]:
    """What, besides the model file, could change a frame's score: the device type
    (GPU and CPU arithmetic differ in the last bits), the per-frame noise scheme and
    block size of :mod:`phbook.noise`, and the torch version. The chunk size is not
    among them: a frame's score does not depend on it (tests/test_deterministic_scores)."""
    import torch

    det = model.detector
    dev = det._device() if hasattr(det, "_device") else torch.device("cpu")
    return {
        "device": torch.device(dev).type,
        "noise": NOISE_SCHEME,
        "score_block": int(SCORE_BLOCK),
        "torch": str(torch.__version__),
    }


def _manifest(plan: Plan, model: Any) -> dict[str, Any]:
    """What identifies a run; the chunk size and strictness may change on resumption,
    the scoring options (:func:`_scoring_options`) may not."""
    return {
        "format": JOURNAL_FORMAT,
        "model_sha256": model.sha256,
        "plan": plan.signature(),
        "scoring": _scoring_options(model),
    }


def _attrs(plan: Plan, model: Any, chunk_frames: int, strict: bool, seconds: float) -> dict:
    threshold = -float(model.detector.offset_)
    return {
        "format": FORMAT,
        "model": os.path.abspath(model.path or ""),
        "model_sha256": model.sha256,
        "family": model.family,
        "dp": plan.dp,
        "source": os.path.abspath(plan.source),
        "source_kind": plan.kind,
        "root": os.path.abspath(plan.root) if plan.root else "",
        "query": plan.query,
        "plan": _plan_json(plan),
        "threshold": threshold,
        "contamination": float(model.detector.contamination),
        "strict": bool(strict),
        "chunk_frames": int(chunk_frames),
        "seconds": float(seconds),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "phbook_version": __version__,
        "training": json.dumps(model.training, sort_keys=True),
    }


def _load_model(model: Any, device=None):
    if isinstance(model, modelfile.ModelFile):
        return model
    return modelfile.load(model, device=device)


def _plan_json(plan: Plan) -> str:
    return json.dumps(plan.signature(), sort_keys=True)


def _already_done(out: Path, model: Any, plan: Plan) -> bool | str:
    """True when ``out`` holds this model's scores of this source as it is now; a
    message saying what changed when it holds this model's scores of this source
    path as it was (files added, removed or resized, a selection drawn again);
    False otherwise."""
    import h5py

    try:
        with h5py.File(out, "r") as h5:
            same = (
                h5.attrs.get("format") == FORMAT
                and h5.attrs.get("model_sha256") == model.sha256
                and h5.attrs.get("source") == os.path.abspath(plan.source)
                and h5.attrs.get("query", "") == plan.query
            )
            if not same:
                return False
            recorded = h5.attrs.get("plan")
            if recorded == _plan_json(plan):
                return True
            if recorded is None:
                return (
                    f"{out} holds this model's scores of {plan.source}, written by an "
                    "older phbook that did not record the source's files, so whether "
                    "the source has changed since cannot be told"
                )
            return (
                f"{out} holds this model's scores of {plan.source} as it was when "
                "they were written, and the source has changed since (files "
                "added, removed or resized, or the selection drawn again)"
            )
    except OSError:
        return False


def score(
    model: Any,
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    query: Any = None,
    chunk_frames: int = 65536,
    part_frames: int = 1 << 20,
    strict: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    device=None,
    client: Any = None,
    workers: int | None = None,
    scheduler: str | None = None,
) -> ScoreReport:
    """Score every frame of ``source`` with ``model`` (a model file path or a loaded
    :class:`~phbook.modelfile.ModelFile`) into the HDF5 file ``out``.

    Resumes an interrupted run of the same model, source and options (see the module
    docstring); returns at once when ``out`` already holds the scores of this model and
    source. ``overwrite`` discards both. ``client``, ``workers`` or ``scheduler`` run the
    parts as a Dask computation (:func:`score_dask`); by default
    everything runs in this process.
    """
    import h5py

    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be at least 1, got {chunk_frames}")
    t0 = time.perf_counter()
    model = _load_model(model, device)
    # the input check only: an existing output is a resumption, or this model's
    # finished scores, or refused below
    out = writing.check_output(
        out, {"source": source, "model file": model.path}, overwrite=True
    )
    plan = plan_source(source, dp=model.dp, query=query, part_frames=part_frames)
    model.check(plan.dp, plan.image_shape, str(source))
    if out.exists():
        done = False if overwrite else _already_done(out, model, plan)
        if isinstance(done, str):
            raise FileExistsError(
                f"{done}; pass overwrite=True (--overwrite) to score it again"
            )
        if done:
            # a journal left by a run stopped between writing the output and
            # deleting its journal is of no further use
            shutil.rmtree(journal_path(out), ignore_errors=True)
            with h5py.File(out, "r") as h5:
                attrs = dict(h5.attrs)
            return ScoreReport(
                str(out),
                int(attrs["n_scored"]),
                int(attrs["n_damaged"]),
                int(attrs["n_files"]),
                len(plan.parts),
                int(attrs["n_scored"]),
                time.perf_counter() - t0,
                0.0,
                peak_rss_mb(),
                already_complete=True,
            )
        if not overwrite:
            raise FileExistsError(
                f"{out} exists and holds other scores; pass overwrite=True (--overwrite) "
                "to replace it"
            )
    try:
        writing.before_write(out.parent)
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise writing.write_error(out.parent, exc) from None
    with writing.exclusive(out, "phbook score"):
        return _score_locked(
            model,
            plan,
            source,
            out,
            overwrite,
            chunk_frames,
            strict,
            progress,
            client,
            workers,
            scheduler,
            t0,
        )


def _score_locked(
    model,
    plan,
    source,
    out,
    overwrite,
    chunk_frames,
    strict,
    progress,
    client,
    workers,
    scheduler,
    t0,
) -> ScoreReport:
    """:func:`score` once the output is locked against a second writer."""
    import h5py

    journal = _Journal(out, _manifest(plan, model), overwrite)
    state = journal.state(plan.parts)
    resumed = sum(s["frames"] for s in state.values())
    done = {i for i, st in state.items() if st["done"]}
    show = _config.show_progress() if progress is None else progress
    n_workers = 1
    output = _Output(plan, journal, out)
    try:
        output.advance(done)
        try:
            common = dict(chunk_frames=chunk_frames, strict=strict)
            todo = [p for p in plan.parts if p.index not in done]
            if client is not None or workers is not None or scheduler is not None:
                data = distributed.model_bytes(model)
                with distributed.client_for(client, scheduler, workers) as c:
                    n_workers = distributed.n_workers(c)
                    scored = distributed.scored_parts(
                        c,
                        todo,
                        model,
                        data,
                        state,
                        label_width=plan.label_width,
                        file_lookup=plan.file_lookup,
                        journal_dir=journal.dir,
                        **common,
                    )
                    done_now = _journal_parts(
                        plan, journal, state, output, done, scored, show, "scoring (dask)"
                    )
            else:
                scored = (
                    (
                        part.index,
                        score_part(
                            part,
                            model,
                            label_width=plan.label_width,
                            file_lookup=plan.file_lookup,
                            resume=state[part.index]["resume"],
                            **common,
                        ),
                    )
                    for part in todo
                )
                done_now = _journal_parts(
                    plan, journal, state, output, done, scored, show, "scoring"
                )
        finally:
            journal.manifest["seconds"] += time.perf_counter() - t0
            with contextlib.suppress(OSError):  # a failed write is reported already
                journal.save_manifest()
        output.advance(done)
        attrs = _attrs(plan, model, chunk_frames, strict, journal.manifest["seconds"])
        n = output.finish(attrs)
    except BaseException:
        output.abort()
        raise
    shutil.rmtree(journal.dir, ignore_errors=True)
    with h5py.File(out, "r") as h5:
        n_dmg, n_files = int(h5.attrs["n_damaged"]), int(h5.attrs["n_files"])
    if n_dmg:
        warnings.warn(
            f"{source}: skipped {n_dmg} damaged stretch(es); they are listed in the "
            f"damage/ group of {out}",
            stacklevel=2,
        )
    wall = time.perf_counter() - t0
    return ScoreReport(
        str(out),
        n,
        n_dmg,
        n_files,
        len(plan.parts),
        resumed,
        wall,
        done_now / max(wall, 1e-9),
        peak_rss_mb(),
        n_workers,
    )


def _journal_parts(
    plan: Plan,
    journal: _Journal,
    state: dict[int, dict[str, Any]],
    output: _Output,
    done: set[int],
    scored: Iterator[tuple[int, Iterable[tuple[int, Any]]]],
    show: bool,
    desc: str,
) -> int:
    """Journal the parts of ``scored`` as they finish, chunk by chunk, and copy to the
    output what is ready; returns the frames scored. ``scored`` yields ``(part index,
    chunks)``, a chunk being ``(chunk number, result)``, or ``(chunk number, frames)``
    for a chunk already written to the journal (by a Dask worker)."""
    done_now = 0
    resumed = sum(s["frames"] for s in state.values())
    total = max(plan.n_frames, resumed)
    with (
        contextlib.closing(scored),
        tqdm(
            total=total,
            initial=resumed,
            unit="frame",
            desc=desc,
            disable=not show,
            smoothing=0.1,
        ) as bar,
    ):
        for index, chunks in scored:
            for k, result in chunks:
                if isinstance(result, dict):
                    journal.write(index, k, result)
                    result = len(result["score"])
                done_now += result
                bar.update(result)
            journal.finish_part(index)
            done.add(index)
            output.advance(done)
    return done_now


def score_dask(
    model: Any,
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    workers: int | None = 2,
    scheduler: str | None = None,
    client: Any = None,
    part_frames: int = 1 << 18,
    **kwargs: Any,
) -> ScoreReport:
    """:func:`score` as a Dask computation: on ``client``, on the cluster
    of ``scheduler`` (an address), or on an embedded ``LocalCluster`` of ``workers``
    processes. Parts default to 262,144 frames, so that a few large files still give
    every worker something to do."""
    if client is None and scheduler is None and workers is None:
        workers = 2
    return score(
        model,
        source,
        out,
        client=client,
        scheduler=scheduler,
        workers=workers,
        part_frames=part_frames,
        **kwargs,
    )
