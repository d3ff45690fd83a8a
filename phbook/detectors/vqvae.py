"""The VQ-VAE detector (chapter 3b): reconstruction error from discrete codes, and
the surprise of the code map under a PixelCNN prior over codes."""

from __future__ import annotations

import numpy as np
import torch

from ..models.vqvae import VQVAE, CodePrior, perplexity
from .likelihood import _TorchLikelihoodDetector

__all__ = ["VQVAEDetector"]


class VQVAEDetector(_TorchLikelihoodDetector):
    """A VQ-VAE (:class:`phbook.models.vqvae.VQVAE`) with a PixelCNN prior over its
    code maps (:class:`phbook.models.vqvae.CodePrior`).

    ``X`` holds normalised images (e.g. :class:`phbook.transforms.AsinhStretch` of the
    pulse heights). Scores, higher = more anomalous:

    ``"recon"``, ``"recon_max"``
        mean (or largest pixel) squared error of the reconstruction from the codes;
    ``"prior"``
        ``-log p(code map)`` under the prior (nats): a frame whose codes are rare, or
        come in an arrangement normal frames never show, scores high;
    ``"prior_max"``
        the largest ``-log p(k_i | k_<i)`` of one position: a compact anomaly changes
        few codes, whose surprise a sum over the map dilutes.

    ``model_kwargs`` go to the VQ-VAE (``n_codes``, ``code_dim``, ``channels``, ...),
    ``prior_kwargs`` to the prior (``channels``, ``n_layers``); ``fit_kwargs`` and
    ``prior_fit_kwargs`` to :func:`phbook.train.fit`. With ``name`` both models are
    trained through :func:`phbook.train.load_or_train` (the prior as
    ``name + "-prior"``). ``seed`` fixes the initial weights.
    """

    scores = ("recon", "recon_max", "prior", "prior_max")

    def __init__(
        self,
        score: str = "recon",
        *,
        seed: int = 0,
        model_kwargs: dict | None = None,
        prior_kwargs: dict | None = None,
        fit_kwargs: dict | None = None,
        prior_fit_kwargs: dict | None = None,
        name: str | None = None,
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
        self.score = score
        self.seed = seed
        self.prior_kwargs = prior_kwargs
        self.prior_fit_kwargs = prior_fit_kwargs

    def _fit(self, x):
        self._check_score()
        self._check_single_channel(x)
        model = self._build(
            lambda: VQVAE(image_size=x.shape[2:], **(self.model_kwargs or {}))
        )
        self.model_, self.history_ = self._train(model, x, self.name, self.fit_kwargs)
        codes = self._codes(x)
        self.perplexity_ = self._perplexity(codes)
        prior = self._build(
            lambda: CodePrior(
                self.model_.n_codes, self.model_.code_hw, **(self.prior_kwargs or {})
            )
        )
        name = f"{self.name}-prior" if self.name else None
        self.prior_, self.prior_history_ = self._train(
            prior, codes, name, self.prior_fit_kwargs
        )

    def _perplexity(self, codes: np.ndarray) -> float:
        return float(perplexity(torch.as_tensor(codes), self.model_.n_codes))

    # -- what the model gives
    def _codes(self, x: np.ndarray) -> np.ndarray:
        h, w = self.model_.code_hw
        flat = self._batched(lambda xb: self.model_.codes(xb).flatten(1).float(), x)
        return flat.reshape(len(x), h, w).round().astype(np.int64)

    def codes(self, X) -> np.ndarray:
        """The code map of each image: integers ``(N, h, w)`` into the codebook."""
        return self._codes(self._checked(X))

    def perplexity(self, X) -> float:
        """Perplexity of the codes used by ``X``: the effective number of codes."""
        return self._perplexity(self.codes(X))

    def reconstruct(self, X) -> np.ndarray:
        """The reconstruction of each image from its codes, ``(N, 1, H, W)``."""
        x = self._checked(X)
        flat = self._batched(lambda xb: self.model_(xb).flatten(1), x)
        return flat.reshape(x.shape).astype(np.float32)

    def code_surprise(self, X) -> np.ndarray:
        """``-log p(k_i | k_<i)`` of every position of every code map, ``(N, h, w)``."""
        codes = self.codes(X)
        dev = self._device()
        out = []
        with torch.no_grad():
            for start in range(0, len(codes), self.batch_size):
                kb = torch.as_tensor(codes[start : start + self.batch_size]).to(dev)
                out.append(-self.prior_.log_prob_codes(kb).double().cpu().numpy())
        return np.concatenate(out)

    def score_parts(self, X) -> dict[str, np.ndarray]:
        """Every score of :attr:`scores` for each image (higher = more anomalous)."""
        x = self._checked(X)
        err = self._batched(lambda xb: (self.model_(xb) - xb).pow(2).flatten(1), x)
        err = err.reshape(len(x), -1)
        surprise = self.code_surprise(x).reshape(len(x), -1)
        return {
            "recon": err.mean(1),
            "recon_max": err.max(1),
            "prior": surprise.sum(1),
            "prior_max": surprise.max(1),
        }

    def _anomaly_score(self, x):
        if self.score in ("prior", "prior_max"):
            s = self.code_surprise(x).reshape(len(x), -1)
            return s.sum(1) if self.score == "prior" else s.max(1)
        err = self._batched(lambda xb: (self.model_(xb) - xb).pow(2).flatten(1), x)
        err = err.reshape(len(x), -1)
        return err.mean(1) if self.score == "recon" else err.max(1)
