"""Any scikit-learn or PyOD detector as a :class:`phbook.detectors.Detector`.

PyOD (Zhao, Nasrullah & Li 2019) is what a reader reaches for first, so the book
runs its detectors beside its own on the same arrays (chapter 9). PyOD detectors
take tables, not images: :class:`PyODDetector` flattens each ``(C, H, W)`` image
into a row of ``C*H*W`` features (row-major: channel, then row, then column), can
scale the features, and converts the estimator's sign convention to phbook's:

* PyOD: ``decision_function`` is **higher for more anomalous** samples;
* scikit-learn (``IsolationForest``, ``LocalOutlierFactor(novelty=True)``, ...):
  ``score_samples`` is **higher for more normal** samples.

``anomaly_score`` of the wrapper is higher for more anomalous images either way, so
the wrapped detector joins :class:`~phbook.detectors.ScoreFusion`,
:mod:`phbook.alerts` thresholds, the benchmark and (family ``pyod``, see
:mod:`phbook.modelfile`) ``phbook train`` / ``phbook score``.

:func:`make_pyod` builds a PyOD detector by class name (``"KNN"``, ``"LOF"``,
``"ECOD"``, ``"IForest"``, ``"AutoEncoder"``, ...) with phbook-friendly defaults
(quiet, seeded, the number of features for ``DeepSVDD``).
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from .base import Detector

__all__ = ["PyODDetector", "PYOD_MODELS", "make_pyod", "SCALINGS"]

#: PyOD detectors by the class name users know, and the module that holds each.
PYOD_MODELS: dict[str, str] = {
    "IForest": "pyod.models.iforest",
    "LOF": "pyod.models.lof",
    "KNN": "pyod.models.knn",
    "ECOD": "pyod.models.ecod",
    "COPOD": "pyod.models.copod",
    "OCSVM": "pyod.models.ocsvm",
    "HBOS": "pyod.models.hbos",
    "PCA": "pyod.models.pca",
    "AutoEncoder": "pyod.models.auto_encoder",
    "VAE": "pyod.models.vae",
    "DeepSVDD": "pyod.models.deep_svdd",
}

#: Feature scalings of :class:`PyODDetector` (fitted on the training images).
SCALINGS = ("none", "standard", "robust")

_QUIET = {"verbose": 0}
_SEEDED = {"IForest", "AutoEncoder", "VAE", "DeepSVDD"}


def make_pyod(name: str, n_features: int | None = None, seed: int = 0, **params) -> Any:
    """An unfitted PyOD detector by class name (one of :data:`PYOD_MODELS`).

    Deep PyOD detectors are made quiet and seeded with ``seed`` (also
    ``IForest``'s ``random_state``); ``DeepSVDD`` needs ``n_features``. Other keyword
    arguments go to the constructor unchanged (PyOD's own defaults otherwise).
    """
    if name not in PYOD_MODELS:
        raise ValueError(f"unknown PyOD detector {name!r}; known: {sorted(PYOD_MODELS)}")
    cls = getattr(importlib.import_module(PYOD_MODELS[name]), name)
    kwargs: dict[str, Any] = {}
    if name in ("AutoEncoder", "VAE", "DeepSVDD"):
        kwargs.update(_QUIET)
    if name in _SEEDED:
        kwargs["random_state"] = int(seed)
    if name == "DeepSVDD":
        if n_features is None:
            raise ValueError("DeepSVDD needs n_features (pixels per image)")
        kwargs["n_features"] = int(n_features)
    kwargs.update(params)
    return cls(**kwargs)


def _is_pyod(est) -> bool:
    return type(est).__module__.startswith("pyod.")


class PyODDetector(Detector):
    """A scikit-learn/PyOD-style estimator on flattened images.

    Parameters
    ----------
    estimator
        An unfitted estimator with ``fit(X)`` and ``decision_function(X)`` (PyOD) or
        ``score_samples(X)`` (scikit-learn), or a name of :data:`PYOD_MODELS`
        (built by :func:`make_pyod` with ``params`` and ``seed``). A copy is fitted.
    scale
        ``"none"``: the features as given (e.g. ADC, or an asinh stretch applied
        before by :class:`~phbook.detectors.Transformed`); ``"standard"``: each pixel
        centred and divided by its standard deviation over the training images;
        ``"robust"``: median and interquartile range instead.
    sign
        ``"auto"``: PyOD estimators score anomalies high (``decision_function``), others
        follow scikit-learn (``score_samples`` high for normal samples);
        ``"anomaly"`` / ``"normality"`` force one reading of ``decision_function`` /
        ``score_samples``.
    keep_training_frames
        Keep the training images as ``x_train_`` (a model file stores them and
        refits on loading, since PyOD's fitted objects are not plain arrays).
    """

    def __init__(
        self,
        estimator: Any = None,
        *,
        scale: str = "none",
        sign: str = "auto",
        params: dict | None = None,
        seed: int = 0,
        keep_training_frames: bool = False,
        contamination: float = 0.01,
    ):
        super().__init__(contamination)
        self.estimator = estimator
        self.scale = scale
        self.sign = sign
        self.params = params
        self.seed = seed
        self.keep_training_frames = keep_training_frames

    def _features(self, x: np.ndarray) -> np.ndarray:
        f = x.reshape(len(x), -1).astype(np.float64)
        if self.scale == "none":
            return f
        return (f - self.center_) / self.scale_

    def _fit(self, x):
        import copy

        if self.scale not in SCALINGS:
            raise ValueError(f"scale must be one of {SCALINGS}, got {self.scale!r}")
        if self.sign not in ("auto", "anomaly", "normality"):
            raise ValueError(
                f"sign must be 'auto', 'anomaly' or 'normality', got {self.sign!r}"
            )
        f = x.reshape(len(x), -1).astype(np.float64)
        if self.scale == "standard":
            self.center_, spread = f.mean(0), f.std(0)
        elif self.scale == "robust":
            q1, self.center_, q3 = np.percentile(f, [25, 50, 75], axis=0)
            spread = q3 - q1
        if self.scale != "none":
            # a pixel that never varies in training keeps unit scale
            self.scale_ = np.where(spread > 0, spread, 1.0)
        if self.estimator is None:
            raise ValueError("PyODDetector needs an estimator (an object or a name)")
        if isinstance(self.estimator, str):
            est = make_pyod(
                self.estimator, f.shape[1], seed=self.seed, **(self.params or {})
            )
        else:
            if self.params:
                raise ValueError("params go with an estimator given by name only")
            est = copy.deepcopy(self.estimator)
        if self.sign == "auto":
            self.sign_ = "anomaly" if _is_pyod(est) else "normality"
        else:
            self.sign_ = self.sign
        est.fit(self._features(x))
        self.estimator_ = est
        if self.keep_training_frames:
            self.x_train_ = np.array(x, dtype=np.float32)

    def _anomaly_score(self, x):
        f = self._features(x)
        if self.sign_ == "anomaly":
            if _is_pyod(self.estimator_) and hasattr(self.estimator_, "model"):
                # PyOD's deep detectors may draw noise when scoring (its VAE does):
                # a fixed seed per call makes repeated calls agree; the draws still
                # depend on the batch (PyOD's scheme, not phbook.noise)
                import torch

                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(int(self.seed))
                    s = self.estimator_.decision_function(f)
                return np.asarray(s, dtype=np.float64)
            return np.asarray(self.estimator_.decision_function(f), dtype=np.float64)
        if hasattr(self.estimator_, "score_samples"):
            return -np.asarray(self.estimator_.score_samples(f), dtype=np.float64)
        return -np.asarray(self.estimator_.decision_function(f), dtype=np.float64)

    @property
    def name_(self) -> str:
        """The estimator's class name (e.g. ``"KNN"``)."""
        est = self.estimator
        return est if isinstance(est, str) else type(est).__name__
