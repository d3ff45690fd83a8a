"""The FFJORD detector (chapter 7): the flow VAE with a continuous normalizing flow
as its posterior flow, scored by its likelihood bounds."""

from __future__ import annotations

from ..models.ffjord import FFJORDVAE
from .likelihood import FlowVAEDetector

__all__ = ["FFJORDVAEDetector"]


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
        if self.score not in self.scores:
            raise ValueError(
                f"score={self.score!r} is not a score of FFJORDVAEDetector; valid "
                "values: " + ", ".join(self.scores)
            )
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
