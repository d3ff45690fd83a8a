"""Per-frame random numbers that a frame determines: deterministic Monte Carlo scores.

A Monte Carlo score (a VAE's ELBO, an importance-weighted bound, a dequantised flow
likelihood) averages over random draws. Drawn from one generator shared by a batch,
a frame's draws depend on which frames came before it in the batch, so its score
changes with the chunk size, the batch size, the order of the frames and the number
of workers. Here every frame gets its own draws, computed from a 64-bit key that is
a hash of the frame's bytes and a seed (a counter-based generator: draw ``j`` of
frame ``x`` is ``mix(key(x), j)``). The same frame always gets the same draws,
wherever and with whatever neighbours it is scored.

:func:`frame_keys` hashes frames; :func:`frame_uniform` and :func:`frame_normal` give
``(N, *shape)`` uniform and standard normal draws per frame (torch tensors on the
frames' device). The hash and the mixing are SplitMix64 (Steele, Lea & Flood 2014),
vectorised in NumPy; normals come from the Box-Muller transform.

:data:`SCORE_BLOCK` is the other half of determinism: floating-point results of a
matrix product can differ in the last bit with the number of rows it is computed
on, so :func:`phbook.detectors.batched` always runs a network on blocks of exactly
``SCORE_BLOCK`` frames (the last one padded), whatever the chunk or batch size.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SCORE_BLOCK", "NOISE_SCHEME", "frame_keys", "frame_uniform", "frame_normal"]

#: frames per network evaluation when scoring (see :func:`phbook.detectors.batched`)
SCORE_BLOCK = 512
#: the name of this scheme, recorded beside scores (a change would change the scores)
NOISE_SCHEME = "splitmix64-frame-hash-1"

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, elementwise on uint64 (wrapping arithmetic)."""
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def frame_keys(x, seed: int = 0) -> np.ndarray:
    """A 64-bit key per frame (uint64, ``(N,)``): a hash of the frame's float32 bytes
    and ``seed``. ``x`` is ``(N, ...)``, a NumPy array or a torch tensor."""
    a = _as_numpy(x)
    if a.ndim < 1 or len(a) == 0:
        raise ValueError(f"x must hold at least one frame, got shape {a.shape}")
    words = a.reshape(len(a), -1).view(np.uint32).astype(np.uint64)
    pos = np.arange(1, words.shape[1] + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = _mix(words + pos * _GOLDEN).sum(axis=1, dtype=np.uint64)
        return _mix(h ^ _mix(np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF) + _GOLDEN))


def _uniform53(keys: np.ndarray, n: int, stream: int) -> np.ndarray:
    """``(N, n)`` float64 uniforms in [0, 1) from the keys, draws ``stream*n ...``."""
    j = np.arange(n, dtype=np.uint64) + np.uint64(stream * n + 1)
    with np.errstate(over="ignore"):
        bits = _mix(keys[:, None] + j[None, :] * _GOLDEN)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _to_torch(values: np.ndarray, like):
    import torch

    return torch.as_tensor(values, dtype=like.dtype, device=like.device)


def frame_uniform(x, shape: tuple[int, ...], seed: int = 0):
    """Uniform draws in [0, 1), ``(N, *shape)``, that frame ``x[i]`` alone determines
    (a torch tensor with the dtype and device of ``x``)."""
    n = int(np.prod(shape))
    u = _uniform53(frame_keys(x, seed), n, 0).reshape((len(x), *shape))
    return _to_torch(u, x)


def frame_normal(x, shape: tuple[int, ...], seed: int = 0):
    """Standard normal draws, ``(N, *shape)``, that frame ``x[i]`` alone determines
    (Box-Muller on two independent uniform streams; a torch tensor like ``x``)."""
    n = int(np.prod(shape))
    keys = frame_keys(x, seed)
    u1, u2 = _uniform53(keys, n, 0), _uniform53(keys, n, 1)
    z = np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
    return _to_torch(z.reshape((len(x), *shape)), x)
