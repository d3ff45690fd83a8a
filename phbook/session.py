"""What every chapter does first: seed, pick the device, set the plotting style."""

from __future__ import annotations

from dataclasses import dataclass

from . import config, style
from ._version import __version__

__all__ = ["Session", "setup"]


@dataclass(frozen=True)
class Session:
    """What :func:`setup` chose: printed once at the top of every chapter."""

    profile: str
    device: object
    seed: int
    torch_version: str
    threads: int = 1

    def __str__(self) -> str:
        return (
            f"phbook {__version__} | profile {self.profile} | device {self.device} | "
            f"seed {self.seed} | torch {self.torch_version} | "
            f"{self.threads} CPU thread{'s' if self.threads != 1 else ''}"
        )


def setup(
    seed: int = 0,
    *,
    device: str | None = None,
    threads: int | None = None,
    quiet: bool = False,
) -> Session:
    """Seed every generator, pick the device and the CPU threads, set the plot style.

    Every chapter calls this once in its first cell. ``threads`` (default
    ``PHBOOK_THREADS``, else 1) is torch's CPU thread count: the book's small models
    train about as fast on one thread as on two on an idle machine, and many times
    faster on a busy one (see :func:`phbook.config.threads`).
    """
    import matplotlib as mpl
    import torch

    config.seed_everything(seed)
    dev = config.device(device)
    n_threads = config.use_threads(threads)
    mpl.rcParams.update(style.RC_PARAMS)
    session = Session(config.profile(), dev, seed, torch.__version__, n_threads)
    if not quiet:
        print(session)
    return session
