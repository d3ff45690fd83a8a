"""The supervised ceiling as a detector: a CNN trained with labels (chapter 9).

:class:`SupervisedCNNDetector` has the :class:`phbook.detectors.Detector` interface
(``anomaly_score`` higher = more anomalous, so it enters every table and figure of
the benchmark like the others) but, unlike every other detector of the book, its
``fit(X, y)`` needs labels: ``y`` is 1 (or a class name other than ``"normal"``) for
anomalous frames. It is the row that says how much an unsupervised method leaves on
the table; it must be trained on a labelled set *separate* from the test set.
"""

from __future__ import annotations

import numpy as np

from .. import train
from ..arrays import as_images
from ..models.supervised import FrameClassifier
from .base import _TorchBase

__all__ = ["SupervisedCNNDetector"]


def _labels(y, n: int) -> np.ndarray:
    if y is None:
        raise ValueError(
            "SupervisedCNNDetector needs labels: fit(X, y), y = 1 for anomalous frames"
        )
    y = np.asarray(y)
    if y.dtype.kind in "USO":
        y = (y.astype(str) != "normal").astype(np.float32)
    y = np.asarray(y, dtype=np.float32).ravel()
    if len(y) != n:
        raise ValueError(f"y has {len(y)} labels for {n} frames")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y must hold 0 (normal) and 1 (anomalous), or class names")
    if y.min() == y.max():
        raise ValueError("y must hold both normal and anomalous frames")
    return y


class SupervisedCNNDetector(_TorchBase):
    """A :class:`phbook.models.supervised.FrameClassifier` trained on labelled frames.

    ``transform`` (e.g. :class:`phbook.transforms.AsinhStretch`) is applied to the
    frames before the network, so the detector takes ADC like the benchmark's
    others. The score is the classifier's logit. ``model_kwargs`` go to the
    classifier, ``fit_kwargs`` to :func:`phbook.train.fit` (``epochs``,
    ``batch_size``, ``lr``); ``seed`` fixes the weights and the batch order.
    """

    def __init__(
        self,
        transform=None,
        *,
        model_kwargs: dict | None = None,
        fit_kwargs: dict | None = None,
        seed: int = 0,
        batch_size: int = 4096,
        device=None,
        contamination: float = 0.01,
    ):
        super().__init__(contamination)
        self.transform = transform
        self.model_kwargs = model_kwargs
        self.fit_kwargs = fit_kwargs
        self.seed = seed
        self.batch_size = batch_size
        self.device = device

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return x if self.transform is None else self.transform(x)

    def fit(self, X, y=None):
        """Train on frames ``X`` with labels ``y`` (required; see the class doc)."""
        self._y = _labels(y, len(as_images(X)))
        try:
            return super().fit(X)
        finally:
            del self._y

    def _fit(self, x):
        import torch

        self._check_single_channel(x)
        y = self._y
        pos_weight = float((y == 0).sum() / (y == 1).sum())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed))
            model = FrameClassifier(
                x.shape[2:], pos_weight=pos_weight, **(self.model_kwargs or {})
            )
        kwargs = {"device": self._device(), "seed": int(self.seed), "progress": False}
        kwargs.update(self.fit_kwargs or {})
        xt = np.ascontiguousarray(self._apply(x), dtype=np.float32)
        self.history_ = train.fit(model, (xt, y), **kwargs)
        self.model_ = model.to(self._device()).eval()

    def _anomaly_score(self, x):
        return self._batched(self.model_, np.asarray(self._apply(x), dtype=np.float32))
