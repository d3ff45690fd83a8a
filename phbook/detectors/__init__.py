"""One scoring API for every anomaly detector of the book.

Detectors follow scikit-learn's outlier-detection convention (as PyOD does), so they drop
into scikit-learn's metrics, pipelines and model selection:

``fit(X)``
    Learn what normal images look like from (mostly) normal, unlabelled images.
``score_samples(X)``
    **Higher means more normal**, as in scikit-learn's ``IsolationForest``.
``decision_function(X)``
    ``score_samples(X) - offset_``: negative for outliers. ``offset_`` is the
    ``contamination`` quantile of the training scores, so that fraction of the training
    set falls below zero.
``predict(X)``
    +1 for inliers, -1 for outliers.
``anomaly_score(X)``
    ``-score_samples(X)``: **higher means more anomalous**; what :mod:`phbook.metrics`
    and the book's ROC curves take.

``X`` is a stack of images: shape ``(N, H, W)`` for single-channel images (PANOSETI
frames, difference-image stamps, lensing images) or ``(N, C, H, W)``, as a NumPy array or
a torch tensor. Single-channel astronomical images are first-class.

One module per family, like :mod:`phbook.models` and the tests:

* :mod:`~phbook.detectors.base`          :class:`Detector`, the torch base, score fusion,
  input transformations
* :mod:`~phbook.detectors.classic`       PCA, dictionary learning, isolation forest, LOF,
  k-means, the Hillas box cut
* :mod:`~phbook.detectors.autoencoders`  autoencoder and beta-VAE (chapters 2-4)
* :mod:`~phbook.detectors.gans`          f-AnoGAN, AnoGAN, encoder GAN, AAE (chapters 5-6)
* :mod:`~phbook.detectors.likelihood`    PixelCNN, RealNVP, flow VAE (chapters 7-8)
* :mod:`~phbook.detectors.vqvae`         VQ-VAE: reconstruction and code-map prior
  (chapter 3b)
* :mod:`~phbook.detectors.ffjord`        flow VAE with an FFJORD flow, FFJORD frame
  density (chapter 7)
* :mod:`~phbook.detectors.lensing`       RBM and the smooth-lens fit (chapter 10)
* :mod:`~phbook.detectors.pyod_detectors` any PyOD / scikit-learn detector (chapter 9)
* :mod:`~phbook.detectors.supervised`    the supervised ceiling, a CNN (chapter 9)
* :mod:`~phbook.detectors.residual`      tail-of-residual scores of any trained model
* :mod:`~phbook.detectors.readout`       dead rows, columns and MAROC quarters, pedestal
  jumps: a check of the readout (chapter 9)
* :mod:`~phbook.detectors.pointflash`    a pixel far brighter than its neighbours: point
  flashes (optical SETI's signal) and hot pixels (chapter 9)
"""

from __future__ import annotations

from ..arrays import as_images, batched
from .autoencoders import AutoencoderDetector, DeepDetector, VAEDetector
from .base import (
    Detector,
    ScoreFusion,
    Transformed,
    empirical_p_values,
    fuse_scores,
)
from .classic import (
    DictionaryLearningDetector,
    HillasCut,
    IncrementalPCADetector,
    IsolationForestDetector,
    KMeansDetector,
    LOFDetector,
    PCAReconstruction,
)
from .ffjord import FFJORDDensityDetector, FFJORDVAEDetector
from .gans import (
    AAEDetector,
    AnoGANDetector,
    FAnoGANDetector,
    SimultaneousEncoderGANDetector,
)
from .lensing import RBMDetector, SmoothLensDetector
from .likelihood import FlowVAEDetector, ImageFlowDetector, PixelCNNDetector
from .pointflash import PointFlash
from .pyod_detectors import PYOD_MODELS, PyODDetector, make_pyod
from .readout import ReadoutFaults
from .residual import ResidualScore
from .supervised import SupervisedCNNDetector
from .vqvae import VQVAEDetector

__all__ = [
    "as_images",
    "Detector",
    "PCAReconstruction",
    "IsolationForestDetector",
    "LOFDetector",
    "IncrementalPCADetector",
    "DictionaryLearningDetector",
    "DeepDetector",
    "AutoencoderDetector",
    "VAEDetector",
    "batched",
    "FAnoGANDetector",
    "AnoGANDetector",
    "SimultaneousEncoderGANDetector",
    "AAEDetector",
    "HillasCut",
    "ReadoutFaults",
    "PointFlash",
    "ScoreFusion",
    "PixelCNNDetector",
    "ImageFlowDetector",
    "FlowVAEDetector",
    "Transformed",
    "PyODDetector",
    "PYOD_MODELS",
    "make_pyod",
    "SupervisedCNNDetector",
    "ResidualScore",
    "RBMDetector",
    "KMeansDetector",
    "SmoothLensDetector",
    "empirical_p_values",
    "fuse_scores",
    "VQVAEDetector",
    "FFJORDVAEDetector",
    "FFJORDDensityDetector",
]
