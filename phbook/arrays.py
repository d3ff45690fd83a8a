"""Small array helpers shared by the detectors and the latent-space tools.

:func:`as_images` turns what a reader passes (a NumPy array or a torch tensor of
shape ``(N, H, W)`` or ``(N, C, H, W)``) into the float32 ``(N, C, H, W)`` stack every
detector works on; :func:`batched` applies a torch function to a large stack in
batches, so that memory stays bounded whatever its size.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import config

__all__ = ["as_images", "batched"]


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


def batched(fn: Callable, x, batch_size: int = 4096, device=None) -> np.ndarray:
    """Apply a torch function to ``x`` in batches on ``device``; returns a NumPy array.

    ``fn`` maps a float32 tensor batch (on ``device``) to one value per sample (the
    result has shape ``(N,)``) or one vector per sample (``(N, d)``). Used by
    the deep detectors so that scoring memory stays bounded whatever the size of ``x``.
    """
    import torch

    dev = config.device() if device is None else torch.device(device)
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = torch.as_tensor(x[start : start + batch_size], dtype=torch.float32).to(dev)
            out.append(fn(xb).detach().float().cpu().numpy().reshape(len(xb), -1))
    if not out:
        return np.empty(0)
    arr = np.concatenate(out, axis=0)
    # one value per sample -> (N,); a vector per sample (a latent code) -> (N, d)
    return arr[:, 0] if arr.shape[1] == 1 else arr
