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
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import LocalOutlierFactor

__all__ = [
    "as_images",
    "Detector",
    "PCAReconstruction",
    "IsolationForestDetector",
    "LOFDetector",
    "batched",
    "HillasCut",
    "ScoreFusion",
    "PixelCNNDetector",
    "ImageFlowDetector",
    "FlowVAEDetector",
]


def as_images(X, name: str = "X") -> np.ndarray:
    """``X`` as a float32 array of shape (N, C, H, W); (N, H, W) gains a channel axis."""
    if hasattr(X, "detach"):
        X = X.detach().cpu().numpy()
    x = np.asarray(X)
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(
            f"{name} must be images of shape (N, H, W) or (N, C, H, W), got shape {x.shape}"
        )
    if len(x) == 0:
        raise ValueError(f"{name} holds no images")
    return np.ascontiguousarray(x, dtype=np.float32)


class Detector(OutlierMixin, BaseEstimator):
    """Base class: subclasses implement ``_fit(x)`` and ``_anomaly_score(x)``.

    Both receive float32 arrays of shape (N, C, H, W). ``_anomaly_score`` returns one
    number per image, higher for more anomalous images.
    """

    def __init__(self, contamination: float = 0.01):
        self.contamination = contamination

    # -- what subclasses implement
    def _fit(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def _anomaly_score(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- the public API
    def fit(self, X, y=None):
        """Learn what normal images look like from ``X`` (``y`` is ignored)."""
        if not 0 <= self.contamination < 0.5:
            raise ValueError(
                f"contamination must lie in [0, 0.5), got {self.contamination}"
            )
        x = as_images(X)
        self.image_shape_ = tuple(x.shape[1:])
        self._fit(x)
        self.offset_ = float(np.quantile(self.score_samples(x), self.contamination))
        return self

    def _checked(self, X) -> np.ndarray:
        if not hasattr(self, "image_shape_"):
            raise RuntimeError(
                f"{type(self).__name__} is not fitted yet; call fit(X) first"
            )
        x = as_images(X)
        if tuple(x.shape[1:]) != self.image_shape_:
            raise ValueError(
                f"{type(self).__name__} was fitted on images of shape {self.image_shape_}"
                f" (C, H, W), got {tuple(x.shape[1:])}"
            )
        return x

    def anomaly_score(self, X) -> np.ndarray:
        """One score per image, **higher = more anomalous**."""
        scores = np.asarray(self._anomaly_score(self._checked(X)), dtype=np.float64)
        return scores.reshape(-1)

    def score_samples(self, X) -> np.ndarray:
        """One score per image, **higher = more normal** (scikit-learn's convention)."""
        return -self.anomaly_score(X)

    def decision_function(self, X) -> np.ndarray:
        """``score_samples(X) - offset_``: negative values are outliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """+1 for inliers, -1 for outliers."""
        return np.where(self.decision_function(X) >= 0, 1, -1)


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


class PCAReconstruction(Detector):
    """Mean squared error of the reconstruction from ``n_components`` components."""

    def __init__(self, n_components: int = 32, contamination: float = 0.01):
        super().__init__(contamination)
        self.n_components = n_components

    def _fit(self, x):
        flat = _flat(x)
        k = min(self.n_components, flat.shape[0], flat.shape[1])
        self.pca_ = PCA(n_components=k, svd_solver="auto", random_state=0).fit(flat)

    def _anomaly_score(self, x):
        flat = _flat(x)
        recon = self.pca_.inverse_transform(self.pca_.transform(flat))
        return ((flat - recon) ** 2).mean(axis=1)


class _SklearnFlat(Detector):
    """A scikit-learn outlier detector applied to flattened images."""

    def _make(self):
        raise NotImplementedError

    def _fit(self, x):
        self.model_ = self._make().fit(_flat(x))

    def _anomaly_score(self, x):
        return -self.model_.score_samples(_flat(x))


class IsolationForestDetector(_SklearnFlat):
    """scikit-learn's ``IsolationForest`` on flattened images."""

    def __init__(
        self,
        n_estimators: int = 200,
        max_samples="auto",
        contamination: float = 0.01,
        random_state: int = 0,
        n_jobs=None,
    ):
        super().__init__(contamination)
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _make(self):
        return IsolationForest(
            n_estimators=self.n_estimators,
            max_samples=self.max_samples,
            random_state=self.random_state,
            n_jobs=self.n_jobs,
        )


class LOFDetector(_SklearnFlat):
    """scikit-learn's ``LocalOutlierFactor`` (novelty mode) on flattened images."""

    def __init__(self, n_neighbors: int = 20, contamination: float = 0.01, n_jobs=None):
        super().__init__(contamination)
        self.n_neighbors = n_neighbors
        self.n_jobs = n_jobs

    def _make(self):
        return LocalOutlierFactor(
            n_neighbors=self.n_neighbors, novelty=True, n_jobs=self.n_jobs
        )


def batched(fn: Callable, x, batch_size: int = 4096, device=None) -> np.ndarray:
    """Apply a torch function to ``x`` in batches on ``device``; returns a NumPy array.

    ``fn`` maps a float32 tensor batch (on ``device``) to one value per sample. Used by
    the deep detectors so that scoring memory stays bounded whatever the size of ``x``.
    """
    import torch

    from . import config

    dev = config.device() if device is None else torch.device(device)
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = torch.as_tensor(x[start : start + batch_size], dtype=torch.float32).to(dev)
            out.append(fn(xb).detach().float().cpu().numpy().reshape(len(xb), -1))
    return np.concatenate(out, axis=0).squeeze(-1) if out else np.empty(0)


# ------------------------------------------------------------------ physics baseline


class HillasCut(Detector):
    """The rule a Cherenkov astronomer writes first: a box cut on image parameters.

    From the training frames it learns, for each feature below, the range holding all but
    ``tail`` of them at each end; a frame's anomaly score is how far (in units of the
    feature's inter-quartile range) it lies outside the furthest box edge, plus a small
    term for its distance from the medians, which orders the frames inside the box.

    Features (from :func:`phbook.hillas.parameters` after tail-cut cleaning, on
    images in ADC): the frame median (noise level), log peak, log size, number of
    cleaned pixels, length, width, width/length, concentration, and the number of
    separate islands in the cleaned image. Pass images in ADC (``transform`` undoes a
    normalisation applied to them first, rounding back to integer ADC counts).
    """

    FEATURES = (
        "median",
        "log_peak",
        "log_size",
        "n_pixels",
        "length",
        "width",
        "elongation",
        "concentration",
        "islands",
    )

    def __init__(self, tail: float = 0.005, transform=None, contamination: float = 0.01):
        super().__init__(contamination)
        self.tail = tail
        self.transform = transform

    def features(self, x: np.ndarray) -> np.ndarray:
        """(n, 9) feature matrix of images (N, 1, H, W) or (N, H, W)."""
        from scipy import ndimage

        from . import hillas

        img = x[:, 0] if x.ndim == 4 else x
        if self.transform is not None:
            # pulse heights are integer ADC counts: undo float round-off of the inverse
            img = np.rint(self.transform.inverse(img))
        h = hillas.parameters(img)
        mask = hillas.tailcuts(img)
        structure = np.zeros((3, 3, 3), bool)
        structure[1] = ndimage.generate_binary_structure(2, 2)  # no links across frames
        labels, _ = ndimage.label(mask, structure=structure)
        flat = labels.reshape(len(img), -1)
        islands = np.array([len(np.unique(row[row > 0])) for row in flat])
        size = h["size"].to_numpy()
        length = np.nan_to_num(h["length"].to_numpy())
        width = np.nan_to_num(h["width"].to_numpy())
        return np.column_stack(
            [
                np.median(img.reshape(len(img), -1), axis=1),
                np.log10(np.maximum(h["peak"].to_numpy(), 1.0)),
                np.log10(np.maximum(size, 1.0)),
                h["n_pixels"].to_numpy(),
                length,
                width,
                np.where(length > 0, width / np.where(length > 0, length, 1), 0.0),
                np.nan_to_num(h["concentration"].to_numpy()),
                islands,
            ]
        ).astype(np.float64)

    def _fit(self, x):
        if not 0 < self.tail < 0.5:
            raise ValueError(f"tail must lie in (0, 0.5), got {self.tail}")
        f = self.features(x)
        self.low_ = np.quantile(f, self.tail, axis=0)
        self.high_ = np.quantile(f, 1 - self.tail, axis=0)
        self.median_ = np.median(f, axis=0)
        q1, q3 = np.quantile(f, [0.25, 0.75], axis=0)
        self.scale_ = np.where(q3 > q1, q3 - q1, np.maximum(self.high_ - self.low_, 1.0))

    def _anomaly_score(self, x):
        f = self.features(x)
        outside = np.maximum(self.low_ - f, 0) + np.maximum(f - self.high_, 0)
        cut = (outside / self.scale_).max(axis=1)
        inside = np.abs(f - self.median_) / self.scale_
        return cut + 1e-3 * inside.mean(axis=1)


# ------------------------------------------------------------------------ score fusion


class ScoreFusion(Detector):
    """Combine detectors whose scores live on different scales.

    Each detector's score is turned into an empirical p-value against its scores on the
    training frames, ``p = (#{training scores >= s} + 1) / (n + 1)``: the fraction of
    normal frames at least as odd. Then ``method="fisher"`` sums ``-log p`` over the
    detectors (Fisher's method: a frame odd for several detectors at once scores high)
    and ``method="mean_rank"`` averages ``1 - p`` (rank averaging). The detectors are fitted
    on the same frames; pass already fitted detectors with ``refit=False``.
    """

    def __init__(
        self,
        detectors=(),
        method: str = "fisher",
        refit: bool = True,
        contamination: float = 0.01,
    ):
        super().__init__(contamination)
        self.detectors = detectors
        self.method = method
        self.refit = refit

    def _fit(self, x):
        if self.method not in ("fisher", "mean_rank"):
            raise ValueError(f"method must be 'fisher' or 'mean_rank', got {self.method!r}")
        if not self.detectors:
            raise ValueError("ScoreFusion needs at least one detector")
        self.reference_ = []
        for det in self.detectors:
            if self.refit:
                det.fit(x)
            self.reference_.append(np.sort(det.anomaly_score(x)))

    def p_values(self, x) -> np.ndarray:
        """(n, n_detectors) empirical p-values of each frame under each detector."""
        out = []
        for det, ref in zip(self.detectors, self.reference_, strict=True):
            s = det.anomaly_score(x)
            above = len(ref) - np.searchsorted(ref, s, side="left")
            out.append((above + 1) / (len(ref) + 1))
        return np.column_stack(out)

    def _anomaly_score(self, x):
        p = self.p_values(x)
        if self.method == "fisher":
            return -np.log(p).sum(axis=1)
        return (1 - p).mean(axis=1)


# ------------------------------------------------ likelihood detectors (chapters 7-8)


class _TorchLikelihoodDetector(Detector):
    """Shared plumbing of the likelihood detectors: build, train (or load), score.

    ``model_kwargs`` go to the model's constructor (the image size is taken from the
    training images), ``fit_kwargs`` to :func:`phbook.train.fit` (``epochs``,
    ``batch_size``, ``lr``, ...). With ``name`` the model is trained through
    :func:`phbook.train.load_or_train` under that checkpoint name, so a second ``fit``
    on the same data loads it instead.
    """

    def __init__(
        self,
        *,
        model_kwargs: dict | None = None,
        fit_kwargs: dict | None = None,
        name: str | None = None,
        batch_size: int = 1024,
        device=None,
        contamination: float = 0.01,
    ):
        super().__init__(contamination)
        self.model_kwargs = model_kwargs
        self.fit_kwargs = fit_kwargs
        self.name = name
        self.batch_size = batch_size
        self.device = device

    def _device(self):
        import torch

        from . import config

        return config.device() if self.device is None else torch.device(self.device)

    def _build(self, factory):
        """``factory()`` with torch's generator seeded by ``self.seed``: the initial
        weights do not depend on what ran before (the global generator is restored)."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(getattr(self, "seed", 0)))
            return factory()

    def _train(self, model, x, name: str | None, fit_kwargs: dict | None, x_val=None):
        from . import train as training

        kwargs = {"device": self._device(), **(fit_kwargs or {})}
        if x_val is not None and "x_val" not in kwargs:
            kwargs["x_val"] = x_val
        if name:
            model, history = training.load_or_train(name, model, x, **kwargs)
        else:
            history = training.fit(model, x, **kwargs)
        return model.to(self._device()).eval(), history

    def _batched(self, fn, x):
        if int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise ValueError(
                f"batch_size must be a positive integer, got {self.batch_size!r}"
            )
        return batched(fn, x, batch_size=self.batch_size, device=self._device())

    def _batched_rows(self, fn, x) -> np.ndarray:
        """Like ``_batched`` for functions returning several values per image."""
        import torch

        dev = self._device()
        out = []
        with torch.no_grad():
            for start in range(0, len(x), self.batch_size):
                xb = torch.as_tensor(x[start : start + self.batch_size]).to(dev)
                out.append(fn(xb).double().cpu().numpy().reshape(len(xb), -1))
        return np.concatenate(out)


def _check_integer_images(x: np.ndarray, name: str = "X") -> None:
    if not np.array_equal(x, np.round(x)):
        raise ValueError(
            f"{name} must hold integer values (ADC counts) for a discretised likelihood; "
            "pass raw pulse heights, not normalised images, or use "
            "likelihood='continuous'"
        )


class PixelCNNDetector(_TorchLikelihoodDetector):
    """The exact likelihood of a gated PixelCNN as an anomaly score (chapter 8).

    ``X`` holds integer pulse heights (ADC) for the default discretised likelihood
    (``model_kwargs={"likelihood": "continuous"}`` for real-valued images).
    Raw likelihoods favour *simple* images (a frame of pure noise can be more probable
    than any ordinary shower), so ``corrected`` chooses the score:

    ``False``
        ``-log2 p(x) / P``: bits per pixel under the PixelCNN;
    ``"ratio"``
        the likelihood ratio against a background model,
        ``(log2 p_bg(x) - log2 p(x)) / P``, with ``p_bg`` the
        :class:`~phbook.models.pixelcnn.IndependentPixels` model: every pixel
        independent (it knows the pixel statistics, not how pixels go together), so the
        ratio keeps what the PixelCNN knows about shapes and cancels simplicity;
    ``"combined"`` (or ``True``)
        both tests at once, by Fisher's method as in :class:`ScoreFusion`:
        ``-log p_raw - log p_ratio``, with ``p`` the empirical p-value of each score
        among held-out normal training frames, ``(#{reference >= s} + 1) / (n + 1)``.
        A frame is flagged when either test, or both, find it odd.

    A fraction ``calibration_fraction`` of the training images is held out: the
    models' validation set and the reference of the p-values. The background model is
    checkpointed as ``name + "-background"``. ``seed`` fixes the initial weights.
    """

    corrections = (False, "ratio", "combined", True)

    def __init__(
        self,
        *,
        model_kwargs: dict | None = None,
        fit_kwargs: dict | None = None,
        name: str | None = None,
        corrected: bool | str = False,
        background_kwargs: dict | None = None,
        background_fit_kwargs: dict | None = None,
        calibration_fraction: float = 0.1,
        seed: int = 0,
        batch_size: int = 1024,
        device=None,
        contamination: float = 0.01,
    ):
        super().__init__(
            model_kwargs=model_kwargs,
            fit_kwargs=fit_kwargs,
            name=name,
            batch_size=batch_size,
            device=device,
            contamination=contamination,
        )
        self.corrected = corrected
        self.background_kwargs = background_kwargs
        self.background_fit_kwargs = background_fit_kwargs
        self.calibration_fraction = calibration_fraction
        self.seed = seed

    def _fit(self, x):
        from .models.pixelcnn import IndependentPixels, PixelCNN

        if self.corrected not in self.corrections:
            raise ValueError(
                f"corrected={self.corrected!r} is not valid; use False, 'ratio' or "
                "'combined' (True)"
            )
        if not 0 < self.calibration_fraction < 0.5:
            raise ValueError(
                "calibration_fraction must lie in (0, 0.5), got "
                f"{self.calibration_fraction}"
            )
        kwargs = {
            "in_channels": x.shape[1],
            "image_size": x.shape[2:],
            **(self.model_kwargs or {}),
        }
        if kwargs.get("likelihood", "discretized") == "discretized":
            _check_integer_images(x)
        n_cal = max(1, int(round(self.calibration_fraction * len(x))))
        if len(x) - n_cal < 1:
            raise ValueError(f"X holds {len(x)} images: too few to train and calibrate")
        x_cal, x_fit = x[:n_cal], x[n_cal:]
        self.model_, self.history_ = self._train(
            self._build(lambda: PixelCNN(**kwargs)),
            x_fit,
            self.name,
            self.fit_kwargs,
            x_cal,
        )
        shared = {
            k: v
            for k, v in kwargs.items()
            if k not in ("channels", "n_layers", "kernel_size")
        }
        # the background model is a table of per-pixel mixtures: cheap, so it gets
        # enough steps (about 400) whatever the size of the training set
        steps_per_epoch = max(1, len(x_fit) // 256)
        bg_fit = {
            "epochs": max(10, -(-400 // steps_per_epoch)),
            "batch_size": 256,
            "lr": 3e-2,
            **(self.background_fit_kwargs or {}),
        }
        self.background_, self.background_history_ = self._train(
            self._build(
                lambda: IndependentPixels(**{**shared, **(self.background_kwargs or {})})
            ),
            x_fit,
            f"{self.name}-background" if self.name else None,
            bg_fit,
            x_cal,
        )
        parts = self.score_parts(x_cal, _checked=False)
        self.reference_ = {k: np.sort(parts[k]) for k in ("bits_per_pixel", "ratio")}

    def _bpp(self, model, x):
        return self._batched(lambda xb: model.bits_per_pixel(xb), x)

    def score_parts(self, X, _checked: bool = True) -> dict[str, np.ndarray]:
        """Every score at once: ``bits_per_pixel`` under the PixelCNN,
        ``background_bits_per_pixel``, ``ratio`` and (once fitted) ``combined``."""
        x = self._checked(X) if _checked else as_images(X)
        if self.model_.likelihood == "discretized":
            _check_integer_images(x)
        bpp = self._bpp(self.model_, x)
        bg = self._bpp(self.background_, x)
        parts = {"bits_per_pixel": bpp, "background_bits_per_pixel": bg, "ratio": bpp - bg}
        if hasattr(self, "reference_"):
            combined = np.zeros(len(x))
            for key, ref in self.reference_.items():
                above = len(ref) - np.searchsorted(ref, parts[key], side="left")
                combined -= np.log((above + 1) / (len(ref) + 1))
            parts["combined"] = combined
        return parts

    def log_prob(self, X) -> np.ndarray:
        """``log p(x)`` of each image under the PixelCNN (nats; exact)."""
        x = self._checked(X)
        return self._batched(lambda xb: self.model_.log_prob(xb), x)

    def _anomaly_score(self, x):
        parts = self.score_parts(x, _checked=False)
        key = {False: "bits_per_pixel", "ratio": "ratio"}.get(self.corrected, "combined")
        return parts[key]


class ImageFlowDetector(_TorchLikelihoodDetector):
    """Bits per pixel under the image flow :class:`phbook.models.realnvp.RealNVP`.

    ``X`` holds integer pulse heights (ADC). The score is ``-log2`` of the
    importance-weighted dequantisation bound on ``P(x)`` with ``n_samples`` uniform
    draws (fixed by ``seed``, so repeated calls agree), per pixel: higher = less
    probable = more anomalous. ``seed`` also fixes the initial weights.
    """

    def __init__(
        self,
        *,
        model_kwargs: dict | None = None,
        fit_kwargs: dict | None = None,
        name: str | None = None,
        n_samples: int = 4,
        seed: int = 0,
        val_fraction: float = 0.1,
        batch_size: int = 1024,
        device=None,
        contamination: float = 0.01,
    ):
        super().__init__(
            model_kwargs=model_kwargs,
            fit_kwargs=fit_kwargs,
            name=name,
            batch_size=batch_size,
            device=device,
            contamination=contamination,
        )
        self.n_samples = n_samples
        self.seed = seed
        self.val_fraction = val_fraction

    def _fit(self, x):
        from .models.realnvp import RealNVP

        _check_integer_images(x)
        if not 0 <= self.val_fraction < 0.5:
            raise ValueError(f"val_fraction must lie in [0, 0.5), got {self.val_fraction}")
        kwargs = {
            "in_channels": x.shape[1],
            "image_size": x.shape[2:],
            **(self.model_kwargs or {}),
        }
        n_val = int(round(self.val_fraction * len(x)))
        x_val = x[:n_val] if n_val else None
        self.model_, self.history_ = self._train(
            self._build(lambda: RealNVP(**kwargs)),
            x[n_val:],
            self.name,
            self.fit_kwargs,
            x_val,
        )

    def bits_per_pixel(self, X) -> np.ndarray:
        """The score: ``-log2 P(x)`` bound per pixel value, per image."""
        return self.anomaly_score(X)

    def _anomaly_score(self, x):
        import torch

        _check_integer_images(x)
        if int(self.n_samples) != self.n_samples or self.n_samples < 1:
            raise ValueError(
                f"n_samples must be a positive integer, got {self.n_samples!r}"
            )
        gen = torch.Generator(device=self._device()).manual_seed(self.seed)
        return self._batched(
            lambda xb: self.model_.bits_per_pixel(xb, self.n_samples, gen), x
        )


class FlowVAEDetector(_TorchLikelihoodDetector):
    """A VAE with latent normalizing flows (:class:`phbook.models.flows.FlowVAE`).

    ``X`` holds normalised images (e.g. :class:`phbook.transforms.AsinhStretch` of the
    pulse heights). Scores, higher = more anomalous:

    ``"iwae"``
        minus the importance-weighted bound on ``log p(x)`` with ``n_samples`` draws
        from the flow posterior (the tightest of the three);
    ``"elbo"``
        minus the ELBO (``beta = 1``), averaged over ``n_samples`` draws;
    ``"recon"``
        mean squared error of the reconstruction decoded from ``mu`` pushed through the
        flows (one deterministic code per image).

    ``flow`` and ``n_flows`` choose the flows (``"none"``: the plain beta-VAE);
    ``model_kwargs`` go to :class:`~phbook.models.flows.FlowVAE` (``latent_dim``,
    ``beta``, ``kl_warmup``, ``context_dim``, ``flow_kwargs``, ``decoder``, ...).
    ``seed`` fixes the initial weights and the posterior draws of the scores.
    """

    scores = ("iwae", "elbo", "recon")

    def __init__(
        self,
        flow: str = "planar",
        n_flows: int = 4,
        *,
        score: str = "iwae",
        n_samples: int = 16,
        seed: int = 0,
        model_kwargs: dict | None = None,
        fit_kwargs: dict | None = None,
        name: str | None = None,
        val_fraction: float = 0.1,
        batch_size: int = 1024,
        device=None,
        contamination: float = 0.01,
    ):
        super().__init__(
            model_kwargs=model_kwargs,
            fit_kwargs=fit_kwargs,
            name=name,
            batch_size=batch_size,
            device=device,
            contamination=contamination,
        )
        self.flow = flow
        self.n_flows = n_flows
        self.score = score
        self.n_samples = n_samples
        self.seed = seed
        self.val_fraction = val_fraction

    def _fit(self, x):
        from .models.flows import FlowVAE

        if self.score not in self.scores:
            raise ValueError(
                f"score={self.score!r} is not a score of FlowVAEDetector; valid values: "
                + ", ".join(self.scores)
            )
        if x.shape[1] != 1:
            raise ValueError(
                f"FlowVAEDetector takes single-channel images, got {x.shape[1]}"
            )
        if not 0 <= self.val_fraction < 0.5:
            raise ValueError(f"val_fraction must lie in [0, 0.5), got {self.val_fraction}")
        model = self._build(
            lambda: FlowVAE(
                image_size=x.shape[2:],
                flow=self.flow,
                n_flows=self.n_flows,
                **(self.model_kwargs or {}),
            )
        )
        n_val = int(round(self.val_fraction * len(x)))
        x_val = x[:n_val] if n_val else None
        self.model_, self.history_ = self._train(
            model, x[n_val:], self.name, self.fit_kwargs, x_val
        )

    def log_likelihood_bounds(
        self, X, n_samples: int | None = None
    ) -> dict[str, np.ndarray]:
        """The ELBO and IWAE bounds on ``log p(x)`` of each image (nats)."""
        import torch

        x = self._checked(X)
        k = self.n_samples if n_samples is None else n_samples
        dev = self._device()
        gen = torch.Generator(device=dev).manual_seed(self.seed)
        out = {"elbo": [], "iwae": []}
        with torch.no_grad():
            for start in range(0, len(x), self.batch_size):
                xb = torch.as_tensor(x[start : start + self.batch_size]).to(dev)
                for key, v in self.model_.log_likelihood_bounds(xb, k, gen).items():
                    out[key].append(v.double().cpu().numpy())
        return {key: np.concatenate(v) for key, v in out.items()}

    def reconstruct(self, X) -> np.ndarray:
        """Reconstructions from ``mu`` pushed through the flows, ``(N, 1, H, W)``."""
        x = self._checked(X)
        flat = self._batched_rows(lambda xb: self._reconstruct(xb), x)
        return flat.reshape(x.shape).astype(np.float32)

    def _reconstruct(self, xb):
        mu, _, ctx = self.model_._encode(xb)
        zk, _ = self.model_.flows(mu, ctx)
        return self.model_.decode(zk)

    def _anomaly_score(self, x):
        if self.score == "recon":
            return self._batched(
                lambda xb: (xb - self._reconstruct(xb)).pow(2).flatten(1).mean(1), x
            )
        return -self.log_likelihood_bounds(x)[self.score]
