"""Likelihood detectors (chapters 7 and 8): the exact log-likelihood of a PixelCNN,
a RealNVP image flow or a flow VAE as an anomaly score."""

from __future__ import annotations

import numpy as np

from .. import train as training
from ..arrays import as_images
from ..models.flows import FlowVAE
from ..models.pixelcnn import IndependentPixels, PixelCNN
from ..models.realnvp import RealNVP
from ..noise import frame_normal, frame_uniform
from .base import _TorchBase

__all__ = ["PixelCNNDetector", "ImageFlowDetector", "FlowVAEDetector"]


# ------------------------------------------------ likelihood detectors (chapters 7-8)


class _TorchLikelihoodDetector(_TorchBase):
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

    def _build(self, factory):
        """``factory()`` with torch's generator seeded by ``self.seed``: the initial
        weights do not depend on what ran before (the global generator is restored)."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(getattr(self, "seed", 0)))
            return factory()

    def _train(self, model, x, name: str | None, fit_kwargs: dict | None, x_val=None):
        kwargs = {"device": self._device(), **(fit_kwargs or {})}
        if x_val is not None and "x_val" not in kwargs:
            kwargs["x_val"] = x_val
        if name:
            model, history = training.load_or_train(name, model, x, **kwargs)
        else:
            history = training.fit(model, x, **kwargs)
        return model.to(self._device()).eval(), history


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
        _check_integer_images(x)
        if int(self.n_samples) != self.n_samples or self.n_samples < 1:
            raise ValueError(
                f"n_samples must be a positive integer, got {self.n_samples!r}"
            )
        k = int(self.n_samples)

        def bpp(xb):
            # per-frame dequantisation noise (phbook.noise): batch-independent scores
            u = frame_uniform(xb, (k, *xb.shape[1:]), self.seed).transpose(0, 1)
            return self.model_.bits_per_pixel(xb, k, noise=u)

        return self._batched(bpp, x)


class FlowVAEDetector(_TorchLikelihoodDetector):
    """A VAE with latent normalizing flows (:class:`phbook.models.flows.FlowVAE`).

    ``X`` holds normalised images (e.g. :class:`phbook.transforms.AsinhStretch` of the
    pulse heights). Scores, higher = more anomalous:

    ``"iwae"``
        minus the importance-weighted bound on ``log p(x)`` with ``n_samples`` draws
        from the flow posterior (the tightest of the three);
    ``"elbo"``
        minus the ELBO (KL weight 1, under the model's decoder: the learnt variance by
        default; with ``decoder="base"`` a variance of 1/2, which is
        ``VAEDetector(score="elbo", elbo_beta=1)``), averaged over ``n_samples`` draws;
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
        self._check_score()
        self._check_single_channel(x)
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
        k = int(self.n_samples if n_samples is None else n_samples)
        if k < 1:
            raise ValueError(f"n_samples must be a positive integer, got {k!r}")

        def bounds(xb):
            # per-frame posterior draws (phbook.noise): batch-independent scores
            d = self.model_.latent_dim
            eps = frame_normal(xb, (k, d), self.seed).transpose(0, 1)
            b = self.model_.log_likelihood_bounds(xb, k, eps=eps)
            return torch.stack([b["elbo"], b["iwae"]], 1)

        both = self._batched(bounds, x).reshape(len(x), 2).astype(np.float64)
        return {"elbo": both[:, 0], "iwae": both[:, 1]}

    def reconstruct(self, X) -> np.ndarray:
        """Reconstructions from ``mu`` pushed through the flows, ``(N, 1, H, W)``."""
        x = self._checked(X)
        flat = self._batched(lambda xb: self._reconstruct(xb).flatten(1), x)
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
