"""phbook: unsupervised anomaly detection in astronomical images.

The helper package of the executable book. Its modules follow the book:

* ``phbook.io.pff``      the PANOSETI file format (PFF)
* ``phbook.sim``         simulators (PANOSETI pulse heights, lensing, transients, galaxies)
* ``phbook.select``      data selection from an archive to HDF5
* ``phbook.models``      one file per model family (ae, vae, gan, flows, pixelcnn)
* ``phbook.train``       the one training loop (``phbook.train_ddp``: on several GPUs)
* ``phbook.detectors``   the scoring API (scikit-learn conventions)
* ``phbook.latent``      latent spaces: PCA, Gaussian mixtures
* ``phbook.metrics``     ROC-AUC, average precision, TPR at fixed FPR
* ``phbook.plotting``    galleries, ROC curves, score histograms
* ``phbook.modelfile``   model files: a trained detector, its normalisation, its data
* ``phbook.trainfile``   a model file trained on a selection (``phbook train``)
* ``phbook.score``       out-of-core scoring of whole archives, with resume, in one
                         process or on a Dask cluster
* ``phbook.summary``     what a file or folder holds (``phbook inspect``)
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

    def __str__(self) -> str:
        return (
            f"phbook {__version__} | profile {self.profile} | device {self.device} | "
            f"seed {self.seed} | torch {self.torch_version}"
        )


def setup(seed: int = 0, *, device: str | None = None, quiet: bool = False) -> Session:
    """Seed every generator, pick the device and set the plotting style.

    Every chapter calls this once in its first cell.
    """
    import torch

    from . import config, plotting

    config.seed_everything(seed)
    dev = config.device(device)
    plotting.use_style()
    session = Session(config.profile(), dev, seed, torch.__version__)
    if not quiet:
        print(session)
    return session
