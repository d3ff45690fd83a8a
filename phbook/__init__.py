"""phbook: unsupervised anomaly detection in astronomical images.

The helper package of the executable book. Its modules follow the book:

* ``phbook.io.pff``      the PANOSETI file format (PFF)
* ``phbook.sim``         simulators (PANOSETI pulse heights, lensing, transients, galaxies)
* ``phbook.select``      data selection from an archive to HDF5
* ``phbook.models``      one file per model family (ae, vae, gan, flows, pixelcnn)
* ``phbook.train``       the one training loop (``phbook.train_ddp``: on several GPUs)
* ``phbook.detectors``   the scoring API (scikit-learn conventions), one module per
                         family
* ``phbook.latent``      latent spaces: PCA, Gaussian mixtures
* ``phbook.metrics``     ROC-AUC, average precision, TPR at fixed FPR
* ``phbook.plotting``    galleries, ROC curves, score histograms
* ``phbook.modelfile``   model files: a trained detector, its normalisation, its data
* ``phbook.trainfile``   a model file trained on a selection (``phbook train``)
* ``phbook.score``       out-of-core scoring of whole archives, with resume, in one
                         process or on a Dask cluster
* ``phbook.studies``     a chapter's whole experiment, shared with its bench script
* ``phbook.summary``     what a file or folder holds (``phbook inspect``)
* ``phbook.cli``         the ``phbook`` command
* ``phbook.config``      profile, device, seed and data folder; ``sizes.json``: the
                         chapters' sizes
* ``phbook.session``     :func:`setup`, the first call of every chapter
"""

from __future__ import annotations

from ._version import __version__
from .session import Session, setup

__all__ = ["__version__", "Session", "setup"]
