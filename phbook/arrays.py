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
from .noise import SCORE_BLOCK

__all__ = ["as_images", "batched"]


def as_images(X, name: str = "X") -> np.ndarray:
    """``X`` as a float32 array of shape (N, C, H, W); (N, H, W) gains a channel axis.

    NaN or infinite pixels (or values beyond float32's range) are an error naming the
    first such image: a detector would otherwise score it NaN, which sorts and
    thresholds as if it were normal."""
    if hasattr(X, "detach"):
        X = X.detach().cpu().numpy()
    x = np.asarray(X)
    if x.dtype.kind == "b":
        raise TypeError(
            f"{name} is a boolean array (a mask?), not images: pass the pixel values"
        )
    if x.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold numbers, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(
            f"{name} must be images of shape (N, H, W) or (N, C, H, W), got shape {x.shape}"
        )
    if len(x) == 0:
        raise ValueError(f"{name} holds no images")
    out = np.ascontiguousarray(x, dtype=np.float32)
    if out.dtype.kind == "f" and x.dtype.kind == "f":
        finite = np.isfinite(out).reshape(len(out), -1).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise ValueError(
                f"{name}: image {int(bad[0])} holds NaN or infinite pixels (or values "
                f"beyond float32's range), and {len(bad) - 1} more image(s) do: drop or "
                "repair them before fitting or scoring"
            )
    return out


def batched(
    fn: Callable, x, batch_size: int = 4096, device=None, block: int | None = None
) -> np.ndarray:
    """Apply a torch function to ``x`` in batches on ``device``; returns a NumPy array.

    ``fn`` maps a float32 tensor batch (on ``device``) to one value per sample (the
    result has shape ``(N,)``) or one vector per sample (``(N, d)``). Used by
    the deep detectors so that scoring memory stays bounded whatever the size of ``x``.

    ``fn`` always sees blocks of exactly ``block`` frames (default
    :data:`phbook.noise.SCORE_BLOCK`; the last block is padded with zero frames whose
    results are dropped): a matrix product's last bit can depend on how many rows it
    is computed on, and this way a frame's result does not depend on the chunk or
    batch size it was scored in. ``batch_size`` is rounded up to a whole number of
    blocks.
    """
    import torch

    dev = config.device() if device is None else torch.device(device)
    block = SCORE_BLOCK if block is None else int(block)
    step = max(1, -(-int(batch_size) // block)) * block
    out = []
    with torch.no_grad():
        for start in range(0, len(x), step):
            xs = torch.as_tensor(x[start : start + step], dtype=torch.float32)
            for b in range(0, len(xs), block):
                xb = xs[b : b + block]
                n = len(xb)
                if n < block:
                    pad = xb.new_zeros((block - n, *xb.shape[1:]))
                    xb = torch.cat([xb, pad])
                res = fn(xb.to(dev)).detach().float().cpu().numpy()
                out.append(res.reshape(block, -1)[:n])
    if not out:
        return np.empty(0)
    arr = np.concatenate(out, axis=0)
    # one value per sample -> (N,); a vector per sample (a latent code) -> (N, d)
    return arr[:, 0] if arr.shape[1] == 1 else arr
