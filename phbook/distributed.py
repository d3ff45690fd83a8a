"""More than one process: scoring as a Dask computation, training with DDP on GPUs.

**Scoring with Dask.** :func:`score_dask` (``phbook score --workers N`` or
``--scheduler ADDRESS``) is :func:`phbook.score.score` with its parts, byte ranges of
PFF files or row ranges of a selection, computed as Dask tasks. By default the tasks run
on an embedded ``LocalCluster`` of worker processes on this machine; given the address of
a running scheduler (``tcp://host:8786``) they run on that cluster, for example one
started on a Slurm allocation with ``dask-jobqueue``::

    from dask_jobqueue import SLURMCluster
    cluster = SLURMCluster(cores=16, processes=16, memory="64GB", walltime="02:00:00")
    cluster.scale(jobs=8)          # 8 nodes, 128 worker processes
    print(cluster.scheduler_address)   # give this to phbook score --scheduler

The workers read the archive themselves, so it must be on a file system they all see
(the shared file system of a cluster); the model file travels to them through Dask, and
their results (a few tens of bytes per frame) come back to this process, which journals
them part by part and writes the output exactly as a one-process run does, with the same
resume after an interruption.

**Training with DDP.** :func:`phbook.train.fit` runs under PyTorch's
DistributedDataParallel when it is called in every process of a ``torchrun`` launch after
:func:`init_ddp`; ``phbook train`` does both::

    torchrun --nproc_per_node 4 -m phbook train selection.h5 --model beta-vae -o model.pt

:func:`init_ddp` picks the NCCL backend with GPUs and gloo on CPUs (which is how the
tests check it, with two CPU processes).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import score as _score

__all__ = [
    "score_dask",
    "local_cluster",
    "warm_up",
    "init_ddp",
    "ddp_device",
    "is_main_process",
    "cleanup_ddp",
    "in_torchrun",
]


# ----------------------------------------------------------------------------------
# Dask


@contextlib.contextmanager
def local_cluster(
    workers: int = 2, *, threads_per_worker: int = 1, processes: bool = True
) -> Iterator[Any]:
    """A Dask ``Client`` on an embedded ``LocalCluster`` of ``workers`` worker
    processes (threads when ``processes=False``); closed on exit."""
    from dask.distributed import Client, LocalCluster

    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=threads_per_worker,
        processes=processes,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


@contextlib.contextmanager
def _client(client: Any, scheduler: str | None, workers: int | None) -> Iterator[Any]:
    if client is not None:
        yield client
        return
    if scheduler is not None:
        from dask.distributed import Client

        try:
            c = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(
                f"cannot reach the Dask scheduler at {scheduler!r} ({exc}); start one "
                "(dask scheduler, or a dask-jobqueue cluster) and give its address"
            ) from None
        with c:
            yield c
        return
    with local_cluster(workers or 2) as c:
        yield c


#: How long to wait for a Dask scheduler given by address.
CONNECT_TIMEOUT = "20s"
#: Workers that see the journal folder write their chunks there (False: they always
#: send the results back to the client, which writes them).
WORKERS_WRITE_JOURNAL = True

_WORKER_MODELS: dict[str, Any] = {}


def _worker_model(data: bytes, sha256: str) -> Any:
    """The model of a scoring task, loaded once per worker process."""
    model = _WORKER_MODELS.get(sha256)
    if model is None:
        try:
            from dask.distributed import get_worker

            threads = get_worker().state.nthreads
        except (ImportError, ValueError, AttributeError):
            threads = 1
        import torch

        torch.set_num_threads(max(1, int(threads)))
        from . import modelfile

        model = modelfile.loads(data, name=f"model {sha256[:12]}")
        _WORKER_MODELS.clear()
        _WORKER_MODELS[sha256] = model
    return model


def _part_task(
    part: _score.Part,
    model_data: bytes,
    sha256: str,
    chunk_frames: int,
    strict: bool,
    label_width: int,
    file_lookup: dict[str, int],
    resume: dict[str, int] | None,
    journal_dir: str | None,
) -> tuple[int, list[tuple[int, Any]]]:
    """One Dask task: score one part (what a worker runs).

    When the worker sees the journal folder (a file system shared with the client, as
    on one machine or on a cluster), it writes each scored chunk there itself and
    returns only the chunk numbers and frame counts; otherwise it returns the results.
    """
    model = _worker_model(model_data, sha256)
    direct = (
        WORKERS_WRITE_JOURNAL and journal_dir is not None and os.path.isdir(journal_dir)
    )
    out: list[tuple[int, Any]] = []
    for k, result in _score.score_part(
        part,
        model,
        chunk_frames=chunk_frames,
        strict=strict,
        label_width=label_width,
        file_lookup=file_lookup,
        resume=resume,
    ):
        if direct:
            path = os.path.join(journal_dir, _score.chunk_name(part.index, k))
            _score._write_npz(Path(path), result)
            out.append((k, len(result["score"])))
        else:
            out.append((k, result))
    return part.index, out


def _score_parts(
    plan: _score.Plan,
    model: Any,
    journal: Any,
    state: dict[int, dict[str, Any]],
    output: Any,
    done: set[int],
    *,
    chunk_frames: int,
    strict: bool,
    show: bool,
    client: Any = None,
    workers: int | None = None,
    scheduler: str | None = None,
) -> tuple[int, int]:
    """Score the unfinished parts of ``plan`` as Dask tasks; journal each finished part.

    At most two tasks per worker are in flight, so the results waiting here stay few.
    Returns (frames scored, number of workers).
    """
    from dask.distributed import as_completed
    from tqdm.auto import tqdm

    if model.path is None:
        raise ValueError("Dask scoring needs a model loaded from a file")
    with open(model.path, "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != model.sha256:
        raise _score.ScoreError(f"{model.path} changed while scoring; score again")
    todo = [p for p in plan.parts if p.index not in done]
    resumed = sum(s["frames"] for s in state.values())
    done_now = 0
    with _client(client, scheduler, workers) as c:
        n_workers = max(1, len(c.scheduler_info().get("workers", {})))
        [model_future] = c.scatter([data], broadcast=True, hash=False)
        window = 2 * n_workers
        queue = list(todo)
        running = as_completed()

        def submit(part):
            running.add(
                c.submit(
                    _part_task,
                    part,
                    model_future,
                    model.sha256,
                    chunk_frames,
                    strict,
                    plan.label_width,
                    plan.file_lookup,
                    state[part.index]["resume"],
                    str(journal.dir.resolve()),
                    key=f"phbook-score-{model.sha256[:8]}-{part.index}-{time.time_ns()}",
                    pure=False,
                )
            )

        for part in queue[:window]:
            submit(part)
        queue = queue[window:]
        total = max(plan.n_frames, resumed)
        with tqdm(
            total=total,
            initial=resumed,
            unit="frame",
            desc="scoring (dask)",
            disable=not show,
            smoothing=0.1,
        ) as bar:
            try:
                for future in running:
                    index, results = future.result()
                    for k, result in results:
                        if isinstance(result, dict):  # the worker could not write it
                            journal.write(index, k, result)
                            result = len(result["score"])
                        done_now += result
                        bar.update(result)
                    journal.finish_part(index)
                    done.add(index)
                    output.advance(done)  # copy what is ready while workers score
                    del future
                    if queue:
                        submit(queue.pop(0))
            except BaseException:
                for f in running.futures:
                    f.cancel()
                raise
    return done_now, n_workers


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
) -> _score.ScoreReport:
    """:func:`phbook.score.score` as a Dask computation: on ``client``, on the cluster
    of ``scheduler`` (an address), or on an embedded ``LocalCluster`` of ``workers``
    processes. Parts default to 262,144 frames, so that a few large files still give
    every worker something to do."""
    if client is None and scheduler is None and workers is None:
        workers = 2
    return _score.score(
        model,
        source,
        out,
        client=client,
        scheduler=scheduler,
        workers=workers,
        part_frames=part_frames,
        **kwargs,
    )


# ----------------------------------------------------------------------------------
# DistributedDataParallel


def in_torchrun() -> bool:
    """True in a process started by ``torchrun`` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def ddp_device():
    """This process's device under DDP: ``cuda:LOCAL_RANK`` with GPUs, else the CPU
    (``PHBOOK_DEVICE`` still wins when set)."""
    import torch

    from . import config

    if os.environ.get("PHBOOK_DEVICE", "").strip():
        return config.device()
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def init_ddp(backend: str | None = None, timeout_s: float = 600) -> tuple[int, int]:
    """Join the process group of a ``torchrun`` launch; returns (rank, world size).

    ``backend`` defaults to NCCL when the process has a GPU and gloo otherwise. Does
    nothing (and returns (0, 1)) outside torchrun; safe to call twice.
    """
    import datetime

    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if not in_torchrun():
        return 0, 1
    dev = ddp_device()
    if backend is None:
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size()


def is_main_process() -> bool:
    """Rank 0 of a process group, or the only process."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def cleanup_ddp() -> None:
    """Leave the process group, if any."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _import_scoring() -> bool:
    import importlib

    for name in ("torch", "phbook.modelfile", "phbook.score"):
        importlib.import_module(name)
    return True


def warm_up(client: Any) -> None:
    """Import PyTorch and phbook's scoring modules in every worker of ``client`` now,
    so that timings of the first tasks do not include them."""
    client.run(_import_scoring)
