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

    def __str__(self) -> str:
        return (
            f"phbook {__version__} | profile {self.profile} | device {self.device} | "
            f"seed {self.seed} | torch {self.torch_version}"
        )


def setup(seed: int = 0, *, device: str | None = None, quiet: bool = False) -> Session:
    """Seed every generator, pick the device and set the plotting style.

    Every chapter calls this once in its first cell.
    """
    import matplotlib as mpl
    import torch

    config.seed_everything(seed)
    dev = config.device(device)
    mpl.rcParams.update(style.RC_PARAMS)
    session = Session(config.profile(), dev, seed, torch.__version__)
    if not quiet:
        print(session)
    return session
