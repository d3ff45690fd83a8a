"""Scoring as a Dask computation, on many processes or machines.

:func:`phbook.score.score_dask` (``phbook score --workers N`` or
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
resume after an interruption. This module only sends the parts out and brings the
results back; the driver (:mod:`phbook.score.run`) journals them.
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

from .. import modelfile
from .journal import _write_npz, chunk_name
from .layout import ScoreError
from .parts import score_part
from .plan import Part

__all__ = [
    "local_cluster",
    "client_for",
    "model_bytes",
    "n_workers",
    "scored_parts",
    "warm_up",
]


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
        # the scheduler's HTTP server (health routes) still starts without a
        # dashboard, on port 8787 unless told otherwise; a free port of this
        # machine only avoids "Port 8787 is already in use" beside another cluster
        scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
        silence_logs=logging.ERROR,
    )
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


@contextlib.contextmanager
def client_for(client: Any, scheduler: str | None, workers: int | None) -> Iterator[Any]:
    """``client`` itself, a client of the scheduler at ``scheduler``, or one of a
    ``LocalCluster`` of ``workers`` processes (closed on exit)."""
    if workers is not None and int(workers) < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
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
    with local_cluster(2 if workers is None else int(workers)) as c:
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
        model = modelfile.loads(data, name=f"model {sha256[:12]}")
        _WORKER_MODELS.clear()
        _WORKER_MODELS[sha256] = model
    return model


def _part_task(
    part: Part,
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
    for k, result in score_part(
        part,
        model,
        chunk_frames=chunk_frames,
        strict=strict,
        label_width=label_width,
        file_lookup=file_lookup,
        resume=resume,
    ):
        if direct:
            path = os.path.join(journal_dir, chunk_name(part.index, k))
            _write_npz(Path(path), result)
            out.append((k, len(result["score"])))
        else:
            out.append((k, result))
    return part.index, out


def model_bytes(model: Any) -> bytes:
    """The bytes of a loaded model's file, to send to the workers (checked unchanged)."""
    if model.path is None:
        raise ValueError("Dask scoring needs a model loaded from a file")
    with open(model.path, "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != model.sha256:
        raise ScoreError(f"{model.path} changed while scoring; score again")
    return data


def n_workers(client: Any) -> int:
    """The number of workers of a Dask client (at least 1)."""
    return max(1, len(client.scheduler_info().get("workers", {})))


def scored_parts(
    client: Any,
    parts: list[Part],
    model: Any,
    data: bytes,
    state: dict[int, dict[str, Any]],
    *,
    chunk_frames: int,
    strict: bool,
    label_width: int,
    file_lookup: dict[str, int],
    journal_dir: Path,
) -> Iterator[tuple[int, list[tuple[int, Any]]]]:
    """Score ``parts`` as Dask tasks on ``client``; yields ``(part index, chunks)`` as
    parts finish, a chunk being ``(chunk number, result)`` or, when the worker wrote
    it to the journal itself, ``(chunk number, frames)``.

    At most two tasks per worker are in flight, so the results waiting here stay few.
    Closing the generator (an interruption) cancels the tasks still running.
    """
    from dask.distributed import as_completed

    [model_future] = client.scatter([data], broadcast=True, hash=False)
    window = 2 * n_workers(client)
    queue = list(parts)
    running = as_completed()

    def submit(part):
        running.add(
            client.submit(
                _part_task,
                part,
                model_future,
                model.sha256,
                chunk_frames,
                strict,
                label_width,
                file_lookup,
                state[part.index]["resume"],
                str(journal_dir.resolve()),
                key=f"phbook-score-{model.sha256[:8]}-{part.index}-{time.time_ns()}",
                pure=False,
            )
        )

    for part in queue[:window]:
        submit(part)
    queue = queue[window:]
    try:
        for future in running:
            yield future.result()
            del future
            if queue:
                submit(queue.pop(0))
    except BaseException:
        for f in running.futures:
            f.cancel()
        raise


def _import_scoring() -> bool:
    # Dask sends this function by reference: a worker imports this module to run it,
    # and with it phbook's scoring modules and PyTorch.
    return True


def warm_up(client: Any) -> None:
    """Import PyTorch and phbook's scoring modules in every worker of ``client`` now,
    so that timings of the first tasks do not include them."""
    client.run(_import_scoring)
