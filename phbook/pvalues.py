"""Calibrated, continuous p-values of anomaly scores against normal reference scores.

Fusing detectors (:class:`phbook.detectors.ScoreFusion`, chapter 9) needs their scores
on one scale: the p-value of a score, the fraction of normal frames at least as odd.
The plain empirical p-value ``(#{reference >= s} + 1) / (n + 1)`` is a step function:
every frame odder than all ``n`` reference frames gets the same ``1 / (n + 1)``, so
the most anomalous frames of a fusion tie exactly where the ranking matters most.

:func:`log_p_values` is continuous and strictly decreasing in the score:

* inside the reference range the count ``#{reference >= s}`` is interpolated linearly
  between neighbouring distinct reference scores (equal to the empirical count at each
  of them, tied scores included);
* beyond the largest reference score, ``p`` falls exponentially with the excess, at
  the scale of the excesses of the ``tail`` largest reference scores over the next
  one (the maximum-likelihood scale of an exponential tail; Pickands 1975): ``log p
  = log(2 / (n + 1)) - (s - max) / scale``, computed in logs so it never underflows.

The values stay close to calibrated (uniform for normal frames inside the range) and
rank every distinct score differently.
"""

from __future__ import annotations

import numpy as np

__all__ = ["log_p_values", "p_values"]


def _tail_scale(ref: np.ndarray, tail: int) -> float:
    k = int(min(max(tail, 1), len(ref) - 1))
    if k < 1:
        return 1.0
    top = ref[-k:] - ref[-k - 1]
    scale = float(np.mean(top))
    if not np.isfinite(scale) or scale <= 0:
        spread = float(ref[-1] - ref[0])
        scale = spread / len(ref) if spread > 0 else 1.0
    return scale


def log_p_values(reference, scores, tail: int | None = None) -> np.ndarray:
    """``log p`` of each score against the normal ``reference`` scores (module doc).

    ``tail``: how many of the largest reference scores set the exponential tail's
    scale (default: 5% of them, at least 10).
    """
    ref = np.sort(np.asarray(reference, dtype=np.float64).ravel())
    if ref.size == 0:
        raise ValueError("reference scores are empty")
    if not np.all(np.isfinite(ref)):
        raise ValueError("reference scores must be finite")
    s = np.asarray(scores, dtype=np.float64).ravel()
    n = ref.size
    if tail is None:
        tail = max(10, int(np.ceil(0.05 * n)))
    # continuous count of reference scores >= s: the empirical count at each distinct
    # reference score (tied scores counted whole), linear between them, n below
    values, first = np.unique(ref, return_index=True)
    above = np.interp(s, values, (n - first).astype(np.float64), left=float(n))
    out = np.log((above + 1.0) / (n + 1.0))
    beyond = s > ref[-1]
    if beyond.any():
        scale = _tail_scale(ref, tail)
        out[beyond] = np.log(2.0 / (n + 1.0)) - (s[beyond] - ref[-1]) / scale
    out[np.isnan(s)] = 0.0  # no evidence: p = 1
    return out


def p_values(reference, scores, tail: int | None = None) -> np.ndarray:
    """``exp(log_p_values(...))``: p-values in (0, 1] (tiny ones may round to 0)."""
    return np.exp(log_p_values(reference, scores, tail))
