"""The VQ-VAE of chapter 3b: discrete latent codes and a PixelCNN prior over them.

A VQ-VAE (van den Oord et al. 2017; Razavi et al. 2019) replaces the Gaussian code of a
VAE by a *map of discrete codes*. The encoder gives a feature map ``z_e`` of shape
``(N, D, h, w)``; every ``D``-vector of it is replaced by the nearest of ``K`` codebook
vectors ``e_1, ..., e_K`` (the *quantisation*)

``k(i) = argmin_k ||z_e(i) - e_k||^2``,   ``z_q(i) = e_(k(i))``

and the decoder sees ``z_q``. The argmin has no gradient; the *straight-through
estimator* copies the decoder's gradient at ``z_q`` onto ``z_e``
(``z_q = z_e + stopgrad(z_q - z_e)`` in the forward pass). The loss of an image is

``loss = recon + ||stopgrad(z_e) - e||^2 + beta ||z_e - stopgrad(e)||^2``

the reconstruction error, the *codebook loss* (moves the codes toward the encoder's
outputs) and the *commitment loss* (keeps the encoder near its codes; ``beta`` = 0.25 in
the paper). The codes start on encoder outputs of the first training batch. With
``ema=True`` the codebook loss is replaced by an exponential moving
average (EMA) of the encoder outputs assigned to each code (the paper's appendix):

``N_k <- g N_k + (1 - g) n_k``,   ``m_k <- g m_k + (1 - g) sum_(i: k(i) = k) z_e(i)``,
``e_k = m_k / N_k``

with ``n_k`` the number of vectors of the batch assigned to code ``k`` and ``N_k``
Laplace-smoothed. A code that no vector chooses for long (``N_k`` below
``dead_threshold`` times the mean count) is *dead*: it is re-seeded at a random
encoder output of the batch,
so that the codebook stays in use. How much of it is in use is measured by the
*perplexity* ``exp(-sum_k p_k log p_k)`` of the code frequencies ``p_k``: ``K`` when
every code is used equally often, 1 when one code takes all.

The prior :class:`CodePrior` is a gated PixelCNN over the code map (the masked layers of
:mod:`phbook.models.pixelcnn`) with a categorical output over the ``K`` codes per
position: ``log p(k) = sum_i log p(k_i | k_<i)`` is an exact log-probability of the
code map, normalised over all ``K^(h w)`` maps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .ae import as_image_batch, image_hw
from .pixelcnn import GatedLayer

__all__ = [
    "VectorQuantizer",
    "perplexity",
    "VQVAE",
    "CodePrior",
]


def perplexity(indices: torch.Tensor, n_codes: int) -> torch.Tensor:
    """``exp(entropy)`` of the code frequencies in ``indices`` (any shape): the
    effective number of codes in use, between 1 and ``n_codes``."""
    counts = torch.bincount(indices.reshape(-1), minlength=n_codes).float()
    p = counts / counts.sum().clamp_min(1.0)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


class VectorQuantizer(nn.Module):
    """A codebook of ``n_codes`` vectors of size ``code_dim``, and the quantisation.

    ``forward(z_e)`` takes a feature map ``(N, D, h, w)`` (or vectors ``(N, D)``) and
    returns a dict: ``z_q`` (straight-through: its gradient flows to ``z_e``),
    ``indices`` (``(N, h, w)``), ``codebook_loss``, ``commitment_loss`` (batch means of
    the squared distance per element) and ``perplexity``.

    Parameters
    ----------
    n_codes, code_dim
        ``K`` and ``D``.
    commitment
        ``beta``, the weight of the commitment loss (returned weighted in ``loss``).
    ema, decay, eps
        Update the codebook by an exponential moving average with decay ``g = decay``
        (and Laplace smoothing ``eps``) instead of the codebook loss.
    dead_threshold
        Codes whose smoothed count ``N_k`` falls below this fraction of the mean
        count are re-seeded at random encoder outputs of the current batch during
        training (0 disables it).
    """

    def __init__(
        self,
        n_codes: int = 32,
        code_dim: int = 16,
        commitment: float = 0.25,
        ema: bool = True,
        decay: float = 0.99,
        eps: float = 1e-5,
        dead_threshold: float = 0.03,
    ):
        super().__init__()
        for name, value in (("n_codes", n_codes), ("code_dim", code_dim)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must lie in (0, 1), got {decay}")
        if commitment < 0 or dead_threshold < 0:
            raise ValueError("commitment and dead_threshold must be >= 0")
        self.n_codes, self.code_dim = int(n_codes), int(code_dim)
        self.commitment = float(commitment)
        self.ema, self.decay, self.eps = bool(ema), float(decay), float(eps)
        self.dead_threshold = float(dead_threshold)
        init = torch.randn(self.n_codes, self.code_dim) / math.sqrt(self.code_dim)
        if self.ema:
            self.register_buffer("codebook", init.clone())
            self.register_buffer("code_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        # the smoothed count of vectors per code (kept in both modes: dead codes)
        self.register_buffer("cluster_size", torch.ones(self.n_codes))
        #: codes re-seeded so far (a running count, for the chapter's figure)
        self.register_buffer("n_reseeded", torch.zeros((), dtype=torch.long))
        # set on the first training batch, whose encoder outputs seed the codebook
        self.register_buffer("initialized", torch.tensor(False))

    # -- the quantisation
    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code of each row of ``flat`` ``(M, D)``."""
        e = self.codebook
        d2 = flat.pow(2).sum(1, keepdim=True) - 2.0 * flat @ e.t() + e.pow(2).sum(1)
        return d2.argmin(1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors of an index map ``(N, h, w)`` as a feature map ``(N, D, h, w)``."""
        return F.embedding(indices, self.codebook).permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def _flatten(z_e: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        if z_e.dim() == 2:
            return z_e, (z_e.shape[0],)
        if z_e.dim() != 4:
            raise ValueError(f"z_e must be (N, D, h, w) or (N, D), got {tuple(z_e.shape)}")
        n, d, h, w = z_e.shape
        return z_e.permute(0, 2, 3, 1).reshape(-1, d), (n, h, w)

    def forward(self, z_e: torch.Tensor) -> dict[str, torch.Tensor]:
        if z_e.shape[1] != self.code_dim:
            raise ValueError(
                f"z_e has {z_e.shape[1]} channels, the codebook {self.code_dim}"
            )
        flat, shape = self._flatten(z_e)
        if self.training and not bool(self.initialized):
            self.init_from(flat.detach())
        idx = self.nearest(flat.detach())
        if self.training:
            self.count_update(idx)
            if self.ema:
                self.ema_update(flat.detach(), idx)
        e = self.codebook[idx]  # after the update, as in the paper's algorithm
        if self.training and self.dead_threshold > 0:
            e = e.clone()
            self.reseed_dead(flat.detach())
        codebook_loss = (flat.detach() - e).pow(2).mean()
        commitment_loss = (flat - e.detach()).pow(2).mean()
        q = flat + (e - flat).detach()  # straight-through
        if z_e.dim() == 4:
            n, h, w = shape
            q = q.view(n, h, w, -1).permute(0, 3, 1, 2)
        indices = idx.view(shape)
        weighted = self.commitment * commitment_loss
        if not self.ema:
            weighted = weighted + codebook_loss
        return {
            "z_q": q,
            "indices": indices,
            "codebook_loss": codebook_loss,
            "commitment_loss": commitment_loss,
            "loss": weighted,
            "perplexity": perplexity(idx, self.n_codes),
        }

    # -- the EMA update and dead codes
    @torch.no_grad()
    def init_from(self, flat: torch.Tensor, generator=None) -> None:
        """Put the codes on random rows of ``flat`` (the first batch's encoder
        outputs), so that none starts far from the data, where it would never be
        chosen."""
        pick = torch.randint(
            len(flat), (self.n_codes,), generator=generator, device=flat.device
        )
        self.codebook.copy_(flat[pick])
        if self.ema:
            self.code_sum.copy_(flat[pick] * self.cluster_size[:, None])
        self.initialized.fill_(True)

    @torch.no_grad()
    def count_update(self, idx: torch.Tensor) -> None:
        """``N_k <- g N_k + (1 - g) n_k``: the smoothed count of each code's use."""
        n_k = torch.bincount(idx, minlength=self.n_codes).type_as(self.cluster_size)
        self.cluster_size.mul_(self.decay).add_(n_k, alpha=1 - self.decay)

    @torch.no_grad()
    def ema_update(self, flat: torch.Tensor, idx: torch.Tensor) -> None:
        """One EMA step of the codebook from the batch's vectors ``flat`` ``(M, D)``
        assigned to codes ``idx`` (after :meth:`count_update` of the same batch):
        ``m_k <- g m_k + (1 - g) sum_k``, ``e_k = m_k / N_k`` (Laplace-smoothed)."""
        g = self.decay
        onehot = F.one_hot(idx, self.n_codes).type_as(flat)  # (M, K)
        self.code_sum.mul_(g).add_(onehot.t() @ flat, alpha=1 - g)
        total = self.cluster_size.sum()
        smoothed = (
            (self.cluster_size + self.eps) / (total + self.n_codes * self.eps) * total
        )
        self.codebook.copy_(self.code_sum / smoothed.unsqueeze(1))

    def dead_codes(self) -> torch.Tensor:
        """Indices of the codes used less than ``dead_threshold`` times the mean count."""
        limit = self.dead_threshold * self.cluster_size.mean()
        return (self.cluster_size < limit).nonzero().flatten()

    @torch.no_grad()
    def reseed_dead(self, flat: torch.Tensor, generator=None) -> torch.Tensor:
        """Move the dead codes onto random rows of ``flat`` (encoder outputs) and give
        them the mean count; returns their indices."""
        dead = self.dead_codes()
        if len(dead) == 0 or len(flat) == 0:
            return dead
        pick = torch.randint(
            len(flat), (len(dead),), generator=generator, device=flat.device
        )
        mean = self.cluster_size.mean()
        self.codebook[dead] = flat[pick].to(self.codebook.dtype)
        self.cluster_size[dead] = mean
        if self.ema:
            self.code_sum[dead] = flat[pick] * mean
        self.n_reseeded += len(dead)
        return dead


class VQVAE(nn.Module):
    """A convolutional VQ-VAE for single-channel images.

    The encoder halves the image ``n_down`` times (3x3 stride-2 convolutions, ReLU),
    then a 1x1 convolution gives ``code_dim`` channels: a 16x16 frame becomes an 8x8
    map of codes with ``n_down=1``. The decoder mirrors it with 4x4 transposed
    convolutions. ``loss = recon + quantiser loss``, where ``recon`` is the mean
    squared error per pixel (what the quantiser's losses are measured in too).
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 16,
        n_codes: int = 32,
        code_dim: int = 16,
        channels: int = 32,
        n_down: int = 1,
        commitment: float = 0.25,
        ema: bool = True,
        decay: float = 0.99,
        dead_threshold: float = 0.03,
    ):
        super().__init__()
        self.image_hw = image_hw(image_size)
        if int(n_down) != n_down or n_down < 1:
            raise ValueError(f"n_down must be a positive integer, got {n_down!r}")
        stride = 2**n_down
        if any(s % stride for s in self.image_hw):
            raise ValueError(
                f"image sides {self.image_hw} must be multiples of 2**n_down = {stride}"
            )
        self.code_hw = tuple(s // stride for s in self.image_hw)
        self.hparams = {
            "image_size": list(self.image_hw),
            "n_codes": int(n_codes),
            "code_dim": int(code_dim),
            "channels": int(channels),
            "n_down": int(n_down),
            "commitment": float(commitment),
            "ema": bool(ema),
            "decay": float(decay),
            "dead_threshold": float(dead_threshold),
        }
        enc: list[nn.Module] = []
        c_in = 1
        for _ in range(n_down):
            enc += [nn.Conv2d(c_in, channels, 3, stride=2, padding=1), nn.ReLU()]
            c_in = channels
        enc += [
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, code_dim, 1),
        ]
        self.encoder = nn.Sequential(*enc)
        self.quantizer = VectorQuantizer(
            n_codes, code_dim, commitment, ema, decay, dead_threshold=dead_threshold
        )
        dec: list[nn.Module] = [nn.Conv2d(code_dim, channels, 3, padding=1), nn.ReLU()]
        for _ in range(n_down):
            dec += [nn.ConvTranspose2d(channels, channels, 4, 2, 1), nn.ReLU()]
        dec += [nn.Conv2d(channels, 1, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    @property
    def n_codes(self) -> int:
        return self.quantizer.n_codes

    # -- the model
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The continuous encoder output ``z_e``, ``(N, code_dim, h, w)``."""
        return self.encoder(as_image_batch(x, self.image_hw))

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The code map of each image: indices ``(N, h, w)`` into the codebook."""
        z_e = self.encode(x)
        flat, (n, h, w) = VectorQuantizer._flatten(z_e)
        return self.quantizer.nearest(flat).view(n, h, w)

    def decode_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Images from code maps ``(N, h, w)``."""
        return self.decoder(self.quantizer.lookup(indices))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction ``x_hat`` (``(N, 1, H, W)``)."""
        return self.decoder(self.quantizer(self.encode(x))["z_q"])

    # -- training
    def loss(self, batch) -> dict[str, torch.Tensor]:
        """``loss = recon + [codebook] + beta * commitment`` (batch means); logs the
        perplexity of the batch's codes."""
        x = as_image_batch(batch, self.image_hw, "batch")
        q = self.quantizer(self.encode(x))
        x_hat = self.decoder(q["z_q"])
        recon = (x_hat - x).pow(2).mean()
        return {
            "loss": recon + q["loss"],
            "recon": recon,
            "codebook": q["codebook_loss"],
            "commitment": q["commitment_loss"],
            "perplexity": q["perplexity"].detach(),
        }


class CodePrior(nn.Module):
    """An autoregressive prior over code maps: a gated PixelCNN with a categorical
    output (``n_codes`` logits per position).

    Codes enter through an embedding of ``channels`` values; the first gated layer is
    masked so that position ``i`` sees only the codes before it (raster order), which
    makes ``sum_i log softmax(logits_i)[k_i]`` an exact, normalised log-probability.
    ``code_hw`` is the map size :meth:`sample` draws.
    """

    def __init__(
        self,
        n_codes: int = 32,
        code_hw: int | Sequence[int] = 8,
        channels: int = 32,
        n_layers: int = 4,
        kernel_size: int = 3,
    ):
        super().__init__()
        if int(n_codes) != n_codes or n_codes < 2:
            raise ValueError(f"n_codes must be an integer >= 2, got {n_codes!r}")
        self.n_codes = int(n_codes)
        self.code_hw = image_hw(code_hw, min_size=1)
        self.hparams = {
            "n_codes": self.n_codes,
            "code_hw": list(self.code_hw),
            "channels": int(channels),
            "n_layers": int(n_layers),
            "kernel_size": int(kernel_size),
        }
        self.embed = nn.Embedding(self.n_codes, channels)
        self.layers = nn.ModuleList(
            [GatedLayer(channels, kernel_size, first=True)]
            + [GatedLayer(channels, kernel_size) for _ in range(n_layers - 1)]
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, self.n_codes, 1))

    def _check(self, indices: torch.Tensor) -> torch.Tensor:
        if not isinstance(indices, torch.Tensor) or indices.dim() != 3:
            raise ValueError("indices must be a tensor of code maps (N, h, w)")
        if indices.is_floating_point():
            indices = indices.round().long()
        if int(indices.min()) < 0 or int(indices.max()) >= self.n_codes:
            raise ValueError(f"code indices must lie in [0, {self.n_codes})")
        return indices.long()

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, n_codes, h, w)`` of each position's code given the earlier ones."""
        indices = self._check(indices)
        v = h = self.embed(indices).permute(0, 3, 1, 2)
        for layer in self.layers:
            v, h = layer(v, h)
        return self.head(h)

    def log_prob_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """``log p(k_i | k_<i)`` of every position (nats), ``(N, h, w)``."""
        indices = self._check(indices)
        logp = F.log_softmax(self(indices), dim=1)
        return logp.gather(1, indices.unsqueeze(1)).squeeze(1)

    def log_prob(self, indices: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(code map)`` of each map (nats), ``(N,)``."""
        return self.log_prob_codes(indices).flatten(1).sum(1)

    def loss(self, batch) -> dict[str, torch.Tensor]:
        """Mean negative log-likelihood in bits per code."""
        bits = -self.log_prob_codes(batch).mean() / math.log(2.0)
        return {"loss": bits, "bits_per_code": bits}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` code maps drawn position by position (``h * w`` passes)."""
        if int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        dev = self.embed.weight.device
        hh, ww = self.code_hw
        k = torch.zeros(int(n), hh, ww, dtype=torch.long, device=dev)
        for r in range(hh):
            for c in range(ww):
                probs = F.softmax(self(k)[:, :, r, c], dim=1)
                k[:, r, c] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return k
