"""The FFJORD detectors (chapter 7): the flow VAE with a continuous normalizing flow
as its posterior flow, scored by its likelihood bounds, and FFJORD as a density of
whole frames."""

from __future__ import annotations

import numpy as np

from ..models.ffjord import CNF, FFJORDVAE
from .likelihood import FlowVAEDetector, _TorchLikelihoodDetector

__all__ = ["FFJORDVAEDetector", "FFJORDDensityDetector"]


class FFJORDVAEDetector(FlowVAEDetector):
    """The flow VAE of chapter 7 with an FFJORD posterior flow
    (:class:`phbook.models.ffjord.FFJORDVAE`): scores ``"iwae"``, ``"elbo"``,
    ``"recon"`` as in :class:`~phbook.detectors.FlowVAEDetector`, with the exact
    trace in the bounds.

    ``model_kwargs`` go to :class:`~phbook.models.ffjord.FFJORDVAE` (``latent_dim``,
    ``beta``, ``kl_warmup``, ``context_dim``, ``cnf_kwargs``, ...). ``nfe_`` is the
    number of function evaluations of the flow's last solve.
    """

    def __init__(
        self,
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
            flow="ffjord",
            n_flows=1,
            score=score,
            n_samples=n_samples,
            seed=seed,
            model_kwargs=model_kwargs,
            fit_kwargs=fit_kwargs,
            name=name,
            val_fraction=val_fraction,
            batch_size=batch_size,
            device=device,
            contamination=contamination,
        )

    def _fit(self, x):
        self._check_score()
        self._check_single_channel(x)
        if not 0 <= self.val_fraction < 0.5:
            raise ValueError(f"val_fraction must lie in [0, 0.5), got {self.val_fraction}")
        model = self._build(
            lambda: FFJORDVAE(image_size=x.shape[2:], **(self.model_kwargs or {}))
        )
        n_val = int(round(self.val_fraction * len(x)))
        x_val = x[:n_val] if n_val else None
        self.model_, self.history_ = self._train(
            model, x[n_val:], self.name, self.fit_kwargs, x_val
        )

    @property
    def nfe_(self) -> int:
        return int(self.model_.nfe)


class FFJORDDensityDetector(_TorchLikelihoodDetector):
    """FFJORD as a density of whole frames: a :class:`~phbook.models.ffjord.CNF` on
    the ``H * W`` pixel values of each (normalised) frame, with a standard normal base.

    Each pixel is standardised by its training mean and standard deviation before
    the flow (and ``log p(x)`` corrected for it). The score is ``-log p(x) / (H W)``,
    nats per pixel of the frames as given (a density, which depends on their units),
    higher = more anomalous. Training uses
    Hutchinson's trace estimator, scoring the exact trace: ``H * W`` backward passes
    per function evaluation, which is what makes this slow. ``hidden``, ``tol`` set
    the dynamics network and the solver tolerances; ``nfe_`` is the number of
    function evaluations of the last solve.
    """

    def __init__(
        self,
        *,
        hidden: tuple[int, ...] = (64, 64),
        tol: float = 1e-4,
        seed: int = 0,
        fit_kwargs: dict | None = None,
        name: str | None = None,
        batch_size: int = 256,
        device=None,
        contamination: float = 0.01,
    ):
        super().__init__(
            fit_kwargs=fit_kwargs,
            name=name,
            batch_size=batch_size,
            device=device,
            contamination=contamination,
        )
        self.hidden = hidden
        self.tol = tol
        self.seed = seed

    def _fit(self, x):
        self._check_single_channel(x)
        flat = x.reshape(len(x), -1)
        # each pixel standardised by its training mean and standard deviation, so that
        # the flow starts near its N(0, I) base; log p(x) accounts for the scaling
        self.mean_ = flat.mean(0)
        self.std_ = flat.std(0) + 1e-3
        model = self._build(
            lambda: CNF(
                flat.shape[1], hidden=tuple(self.hidden), rtol=self.tol, atol=self.tol
            )
        )
        self.model_, self.history_ = self._train(
            model, (flat - self.mean_) / self.std_, self.name, self.fit_kwargs
        )

    def log_prob(self, X) -> np.ndarray:
        """``log p(x)`` of each frame (nats), with the exact trace."""
        return self._log_prob(self._checked(X))

    def _log_prob(self, x: np.ndarray) -> np.ndarray:
        u = (x.reshape(len(x), -1) - self.mean_) / self.std_
        log_scale = float(np.log(self.std_).sum())
        return self._batched(self.model_.log_prob, u) - log_scale

    def _anomaly_score(self, x):
        return -self._log_prob(x) / x[0].size

    @property
    def nfe_(self) -> int:
        return int(self.model_.nfe)
