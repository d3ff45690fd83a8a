"""Small deterministic models for the DDP test: one trained through ``loss`` (wrapped
by DistributedDataParallel) and one with its own ``training_step`` (gradients averaged
by the optimiser wrapper)."""

from __future__ import annotations

import torch
from torch import nn

EPOCHS, BATCH = 3, 32


def data(n: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 6, 6, generator=g)


class LinearAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(36, 4)
        self.dec = nn.Linear(4, 36)

    def loss(self, x):
        x_hat = self.dec(torch.tanh(self.enc(x.flatten(1))))
        mse = ((x_hat - x.flatten(1)) ** 2).mean()
        return {"loss": mse, "mse": mse}


class TwoStepAE(LinearAE):
    """Updates the decoder, then the encoder, with two optimisers (like a GAN)."""

    def configure_optimizers(self, lr, weight_decay):
        return {
            "dec": torch.optim.SGD(self.dec.parameters(), lr=lr),
            "enc": torch.optim.SGD(self.enc.parameters(), lr=lr),
        }

    def training_step(self, x, optimizers, state):
        for name in ("dec", "enc"):
            opt = optimizers[name]
            opt.zero_grad()
            loss = self.loss(x)["loss"]
            loss.backward()
            opt.step()
        return {"loss": loss.detach()}


def make_models() -> dict[str, nn.Module]:
    torch.manual_seed(7)
    return {"ddp": LinearAE(), "steps": TwoStepAE()}
