"""phbook: unsupervised anomaly detection in astronomical images.

The helper package of the executable book. Its modules follow the book:

* ``phbook.io.pff``      the PANOSETI file format (PFF)
* ``phbook.sim``         simulators (PANOSETI pulse heights, lensing, transients, galaxies)
* ``phbook.select``      data selection from an archive to HDF5
* ``phbook.models``      one file per model family (ae, vae, gan, flows, pixelcnn)
* ``phbook.train``       the one training loop
* ``phbook.detectors``   the scoring API (scikit-learn conventions)
* ``phbook.latent``      latent spaces: PCA, Gaussian mixtures
* ``phbook.metrics``     ROC-AUC, average precision, TPR at fixed FPR
* ``phbook.plotting``    galleries, ROC curves, score histograms
* ``phbook.modelfile``   model files: a trained detector, its normalisation, its data
* ``phbook.score``       out-of-core scoring of whole archives, with resume
* ``phbook.distributed`` Dask scoring on many processes or machines; DDP training
* ``phbook.cli``         the ``phbook`` command
* ``phbook.config``      profile, device, seed and data folder
"""

from __future__ import annotations

from dataclasses import dataclass

__version__ = "0.1.0"


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
    import torch

    from . import config, plotting

    config.seed_everything(seed)
    dev = config.device(device)
    n_threads = config.use_threads(threads)
    plotting.use_style()
    session = Session(config.profile(), dev, seed, torch.__version__, n_threads)
    if not quiet:
        print(session)
    return session
