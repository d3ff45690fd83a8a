"""From anomaly scores to alerts: thresholds set by a false-alarm rate per hour.

An observatory does not think in false-positive *fractions* but in false alarms per
hour of observing, which someone has to look at. A module that triggers at ``r`` frames
per second produces ``3600 r`` frames an hour; a threshold that lets through a fraction
``f`` of normal frames raises

.. math:: \\text{false alarms per hour} = 3600\\, r\\, f .

So a budget of ``A`` false alarms per hour needs ``f = A / (3600 r)``: at 0.3 Hz and one
alarm an hour, about 1 normal frame in 1080 may pass, i.e. the threshold is the
99.9074 % quantile of the scores of normal frames. Estimating such a quantile needs many
more normal frames than ``1/f``; the functions here say when there are too few.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "allowed_fraction",
    "false_alarms_per_hour",
    "threshold_for_rate",
    "AlertThreshold",
    "detection_rates",
]

SECONDS_PER_HOUR = 3600.0


def _check_rate(trigger_rate_hz: float) -> None:
    if not np.isfinite(trigger_rate_hz) or trigger_rate_hz <= 0:
        raise ValueError(f"trigger_rate_hz must be positive, got {trigger_rate_hz}")


def allowed_fraction(alarms_per_hour: float, trigger_rate_hz: float) -> float:
    """Fraction of normal frames a threshold may let through for the alarm budget."""
    _check_rate(trigger_rate_hz)
    if not np.isfinite(alarms_per_hour) or alarms_per_hour < 0:
        raise ValueError(
            f"alarms_per_hour must be a non-negative number, got {alarms_per_hour}"
        )
    return min(1.0, alarms_per_hour / (SECONDS_PER_HOUR * trigger_rate_hz))


def false_alarms_per_hour(normal_scores, threshold: float, trigger_rate_hz: float) -> float:
    """Expected false alarms per hour: the fraction of normal scores above ``threshold``
    times the frames recorded per hour."""
    _check_rate(trigger_rate_hz)
    s = _finite(normal_scores, "normal_scores")
    return float(np.mean(s > threshold) * SECONDS_PER_HOUR * trigger_rate_hz)


def _finite(scores, name: str) -> np.ndarray:
    """Scores as float64, refusing NaN (never above a threshold: an unscored frame
    would pass for a normal one) and an empty array."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError(f"{name} is empty")
    if np.isnan(s).any():
        raise ValueError(f"{name}: {int(np.isnan(s).sum())} scores are NaN")
    return s


@dataclass(frozen=True)
class AlertThreshold:
    """A threshold on anomaly scores (higher = more anomalous) and how it was chosen."""

    threshold: float
    alarms_per_hour: float  #: the budget asked for
    expected_alarms_per_hour: float  #: what the threshold gives on the normal scores
    allowed_fraction: float  #: fraction of normal frames allowed through
    n_normal: int  #: normal scores the quantile was estimated from
    resolved: bool  #: False when n_normal is too small to resolve the fraction

    def __str__(self) -> str:
        note = "" if self.resolved else " (too few normal frames to resolve this rate)"
        return (
            f"threshold {self.threshold:.4g}: {self.expected_alarms_per_hour:.3g} false "
            f"alarms/hour for a budget of {self.alarms_per_hour:g}{note}"
        )


def threshold_for_rate(
    normal_scores, alarms_per_hour: float, trigger_rate_hz: float, min_expected: float = 10
) -> AlertThreshold:
    """The lowest threshold whose false-alarm rate on ``normal_scores`` fits the budget.

    ``resolved`` is False when fewer than ``min_expected`` normal frames would exceed the
    threshold, so the false-alarm rate is poorly known (with none, the threshold is just
    above the highest normal score and the true rate could be anything below the budget).
    """
    s = np.sort(np.asarray(normal_scores, dtype=np.float64).ravel())
    if s.size == 0:
        raise ValueError("normal_scores is empty")
    if not np.isfinite(s).all():
        raise ValueError("normal_scores contain NaN or infinite values")
    f = allowed_fraction(alarms_per_hour, trigger_rate_hz)
    k = int(np.floor(f * s.size))  # normal frames allowed above the threshold
    if k >= s.size:
        threshold = float(np.nextafter(s[0], -np.inf))
    else:
        threshold = float(s[s.size - 1 - k])  # scores strictly above it: at most k
    expected = false_alarms_per_hour(s, threshold, trigger_rate_hz)
    return AlertThreshold(
        threshold=threshold,
        alarms_per_hour=float(alarms_per_hour),
        expected_alarms_per_hour=expected,
        allowed_fraction=f,
        n_normal=int(s.size),
        resolved=bool(f * s.size >= min_expected),
    )


def detection_rates(scores, classes, threshold: float, normal: str = "normal") -> pd.Series:
    """Fraction of each anomaly class scoring above ``threshold`` (and of normal frames)."""
    scores = _finite(scores, "scores")
    classes = np.asarray(classes).astype(str).ravel()
    if scores.shape != classes.shape:
        raise ValueError(f"{scores.size} scores but {classes.size} class names")
    names = [c for c in pd.unique(classes) if c != normal] + [normal]
    rates = {
        c: float(np.mean(scores[classes == c] > threshold))
        for c in names
        if np.any(classes == c)
    }
    return pd.Series(rates, name="detected fraction")
