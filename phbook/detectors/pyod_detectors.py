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

__all__ = ["PyODDetector", "PYOD_MODELS", "make_pyod", "SCALINGS", "TRANSDUCTIVE"]

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


#: PyOD detectors that score a batch against the training set *and the batch itself*
#: (their ``decision_function`` rebuilds its empirical distributions from both), so
#: that a frame's score would depend on the frames scored with it.
TRANSDUCTIVE = ("ECOD", "COPOD")


class _TailScores:
    """ECOD's and COPOD's scores of each frame as PyOD gives them to a batch of one.

    PyOD's ``decision_function`` of ECOD (Li et al. 2022) and COPOD (Li et al. 2020)
    builds per-feature empirical CDFs, and the sign of each feature's skewness, from
    the training rows *plus every row it is asked to score*. Here each frame is scored
    against the training rows plus that frame alone: in feature ``j`` its left tail
    ``(#{t_j <= x_j} + 1) / (n + 1)`` and its right tail ``(#{t_j >= x_j} + 1) /
    (n + 1)``, the skewness of the ``n + 1`` values from the training set's sums of
    powers, then PyOD's combination of ``-log`` tails. A frame's score is then a
    function of the frame and the training set alone, whatever the chunk, the order
    or the number of workers, and equals PyOD's for that frame scored alone.
    """

    def __init__(self, kind: str, features: np.ndarray):
        if kind not in TRANSDUCTIVE:
            raise ValueError(f"kind must be one of {TRANSDUCTIVE}, got {kind!r}")
        f = np.asarray(features, dtype=np.float64)
        self.kind = kind
        self.n = len(f)
        self.sorted = np.sort(f, axis=0)
        self.mean = f.mean(0)
        d = f - self.mean  # central sums: the skewness of n + 1 values, stably
        self.s2, self.s3 = (d**2).sum(0), (d**3).sum(0)

    def _skew_sign(self, f: np.ndarray) -> np.ndarray:
        n1 = self.n + 1
        y = f - self.mean  # the new value, from the training mean
        shift = y / n1  # the mean of the n + 1 values moves by this much
        # central moments of the n + 1 values about their own mean
        m2 = (self.s2 + n1 * self.n * shift**2) / n1
        m3 = (self.s3 - 3 * shift * self.s2 - self.n * shift**3 + (y - shift) ** 3) / n1
        with np.errstate(divide="ignore", invalid="ignore"):
            skew = np.nan_to_num(m3 / m2**1.5)
        return np.sign(skew)

    def scores(self, f: np.ndarray) -> np.ndarray:
        # C order: the sums over a row then add in the same order, whatever the input
        f = np.ascontiguousarray(f, dtype=np.float64)
        n1 = self.n + 1
        below = np.empty(f.shape, dtype=np.int64)
        above = np.empty(f.shape, dtype=np.int64)
        for j in range(f.shape[1]):
            col = self.sorted[:, j]
            below[:, j] = np.searchsorted(col, f[:, j], side="right")
            above[:, j] = self.n - np.searchsorted(col, f[:, j], side="left")
        u_l = -np.log((below + 1) / n1)
        u_r = -np.log((above + 1) / n1)
        sk = self._skew_sign(f)
        u_skew = u_l * -1 * np.sign(sk - 1) + u_r * np.sign(sk + 1)
        if self.kind == "ECOD":
            o = np.maximum(u_skew, np.maximum(u_l, u_r))
        else:
            o = np.maximum(u_skew, (u_l + u_r) / 2)
        return o.sum(axis=1)


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

    PyOD's ECOD and COPOD (:data:`TRANSDUCTIVE`) score a batch against itself as well
    as the training set, so the same frame scored in another chunk would get another
    score; the wrapper scores each frame as PyOD scores a batch of that one frame
    (:class:`_TailScores`), so that ``phbook score`` gives the same scores whatever
    ``--chunk-frames`` and the number of workers.
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
        features = self._features(x)
        est.fit(features)
        self.estimator_ = est
        self.tails_ = (
            _TailScores(type(est).__name__, features)
            if _is_pyod(est) and type(est).__name__ in TRANSDUCTIVE
            else None
        )
        if self.keep_training_frames:
            self.x_train_ = np.array(x, dtype=np.float32)

    def _anomaly_score(self, x):
        f = self._features(x)
        tails = getattr(self, "tails_", None)  # None: fitted before tails_ existed
        if tails is not None and self.sign_ == "anomaly":
            # each frame as PyOD scores it alone, not against the batch it came in
            return tails.scores(f)
        if self.sign_ == "anomaly":
            if _is_pyod(self.estimator_) and hasattr(self.estimator_, "model"):
                # PyOD's deep detectors may draw noise when scoring (its VAE does):
                # a fixed seed per call makes repeated calls agree; the draws still
                # depend on the batch (PyOD's scheme, not phbook.noise)
                import torch

                # and they run their network on batches of ``batch_size`` rows, the
                # last one shorter: padded to whole batches, every frame is computed
                # in a batch of the same size, so its bits do not depend on the chunk
                n = len(f)
                bs = int(getattr(self.estimator_, "batch_size", 0) or 0)
                if bs > 0 and n % bs:
                    f = np.concatenate([f, np.zeros((bs - n % bs, f.shape[1]))])
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(int(self.seed))
                    s = self.estimator_.decision_function(f)
                return np.asarray(s, dtype=np.float64)[:n]
            return np.asarray(self.estimator_.decision_function(f), dtype=np.float64)
        if hasattr(self.estimator_, "score_samples"):
            return -np.asarray(self.estimator_.score_samples(f), dtype=np.float64)
        return -np.asarray(self.estimator_.decision_function(f), dtype=np.float64)

    @property
    def name_(self) -> str:
        """The estimator's class name (e.g. ``"KNN"``)."""
        est = self.estimator
        return est if isinstance(est, str) else type(est).__name__
