"""Training with PyTorch's DistributedDataParallel, beside the one training loop.

:func:`phbook.train.fit` runs under DistributedDataParallel when it is called in every
process of a ``torchrun`` launch after :func:`init_ddp`; ``phbook train`` does both::

    torchrun --nproc_per_node 4 -m phbook train selection.h5 --model beta-vae -o model.pt

:func:`init_ddp` picks the NCCL backend with GPUs and gloo on CPUs (which is how the
tests check it, with two CPU processes).
"""

from __future__ import annotations

import os

from . import config

__all__ = ["init_ddp", "ddp_device", "is_main_process", "cleanup_ddp", "in_torchrun"]


def in_torchrun() -> bool:
    """True in a process started by ``torchrun`` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def ddp_device():
    """This process's device under DDP: ``cuda:LOCAL_RANK`` with GPUs, else the CPU
    (``PHBOOK_DEVICE`` still wins when set)."""
    import torch

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
