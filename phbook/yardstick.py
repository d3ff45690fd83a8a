"""The yardstick: the statistics by which simulated and real pulse-height frames compare.

A simulator "looks real" when the frames it makes and the frames a telescope records
give the same numbers under the same measurement. This module is that measurement,
applied identically to any set of 16 x 16 pulse-height frames in ADC, real or simulated:

* **Cleaning.** Picture pixels above 150 ADC, plus boundary pixels above 75 ADC that
  touch a picture pixel (4-neighbours). A frame with fewer than 3 cleaned pixels does
  not *survive* cleaning and has no Hillas parameters.
* **Hillas moments** of the cleaned, amplitude-weighted image on the pixel grid
  (0.3125 deg, :func:`phbook.hillas.parameters`): ``size`` (sum, ADC), ``length`` and
  ``width`` (square roots of the covariance eigenvalues, deg), ``n_pixels``.
* **Per frame:** ``max`` and ``median`` (ADC), ``neg_fraction`` (fraction of negative
  pixels).
* **Per set:** ``survive_fraction`` (frames that survive cleaning) and
  ``speckled_fraction`` (frames whose median exceeds 300 ADC, the whole-quabo artifact of
  real data). Speckled frames are counted, then left out of every other statistic.

Each per-frame statistic is summarised by its p10 / p50 / p90. :func:`compare` applies
the pass/fail rule used to judge the simulator: a simulated value passes when it lies
within the larger of a relative tolerance of the real value (10 % for p50, 20 % for p10
and p90; 0.02 absolute for fractions) and two bootstrap standard deviations of the real
value (88 real frames are few, so their own quantiles are uncertain).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import hillas

__all__ = [
    "PICTURE_ADC",
    "BOUNDARY_ADC",
    "MIN_PIXELS",
    "SPECKLED_MEDIAN_ADC",
    "FRAME_STATS",
    "QUANTILES",
    "clean",
    "frame_statistics",
    "shower_parameters",
    "summarize",
    "bootstrap_sd",
    "compare",
    "Comparison",
]

PICTURE_ADC = 150.0  #: picture threshold of the cleaning (ADC)
BOUNDARY_ADC = 75.0  #: boundary threshold of the cleaning (ADC)
MIN_PIXELS = 3  #: a frame needs this many cleaned pixels to have Hillas parameters
SPECKLED_MEDIAN_ADC = 300.0  #: a frame whose median exceeds this is "speckled"
#: the per-frame statistics, in the order of the report
FRAME_STATS = ("max", "median", "neg_fraction", "size", "length", "width", "n_pixels")
#: the per-set fractions
SET_STATS = ("survive_fraction", "speckled_fraction")
QUANTILES = (10, 50, 90)
_HILLAS = ("size", "length", "width", "n_pixels")
#: relative tolerance of each quantile; fractions use an absolute tolerance instead
REL_TOL = {10: 0.20, 50: 0.10, 90: 0.20}
ABS_TOL_FRACTION = 0.02


def _frames(frames) -> np.ndarray:
    """``frames`` as an (n, H, W) array (one (H, W) frame becomes a stack of one)."""
    x = np.asarray(frames)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"frames must have shape (n, H, W), got {x.shape}")
    return x


def _neighbour4(mask: np.ndarray) -> np.ndarray:
    out = np.zeros_like(mask)
    out[:, 1:, :] |= mask[:, :-1, :]
    out[:, :-1, :] |= mask[:, 1:, :]
    out[:, :, 1:] |= mask[:, :, :-1]
    out[:, :, :-1] |= mask[:, :, 1:]
    return out


def clean(
    frames, picture: float = PICTURE_ADC, boundary: float = BOUNDARY_ADC
) -> np.ndarray:
    """Mask (n, H, W) of the cleaned pixels: picture pixels and the boundary pixels
    that touch one (4-neighbours)."""
    x = _frames(frames)
    if boundary > picture:
        raise ValueError(f"boundary ({boundary}) must not exceed picture ({picture})")
    pic = x > picture
    return pic | ((x > boundary) & _neighbour4(pic))


def frame_statistics(frames, chunk: int = 65536) -> pd.DataFrame:
    """The yardstick's statistics of every frame, one row per frame.

    Columns: ``max``, ``median``, ``neg_fraction``, ``speckled`` (bool), ``survives``
    (bool: at least 3 cleaned pixels), and the Hillas ``size``, ``length``, ``width``,
    ``n_pixels`` (NaN for frames that do not survive). Works in chunks, so any number
    of frames fits in memory.
    """
    x = _frames(frames)
    parts = []
    for start in range(0, len(x), chunk):
        parts.append(_stats_chunk(x[start : start + chunk]))
    if not parts:
        cols = ["max", "median", "neg_fraction", "speckled", "survives", *_HILLAS]
        return pd.DataFrame({c: np.zeros(0) for c in cols})
    return pd.concat(parts, ignore_index=True)


def shower_parameters(frames, quabo=None) -> pd.DataFrame:
    """Every Hillas parameter (:func:`phbook.hillas.parameters`, ``distance`` from the
    module centre when ``quabo`` is given) of the frames the yardstick measures: its
    cleaning, frames that survive it and are not speckled. One row per such frame,
    indexed by the frame's position in ``frames``; its ``size``, ``length``, ``width``
    and ``n_pixels`` equal :func:`frame_statistics`'s for those frames."""
    x = _frames(frames)
    if quabo is not None and np.shape(quabo) != (len(x),):
        raise ValueError(
            f"quabo must give one quabo per frame ({len(x)}), got shape {np.shape(quabo)}"
        )
    mask = clean(x)
    keep = (mask.reshape(len(x), -1).sum(axis=1) >= MIN_PIXELS) & (
        np.median(x.reshape(len(x), -1), axis=1) <= SPECKLED_MEDIAN_ADC
    )
    index = np.flatnonzero(keep)
    h = hillas.parameters(
        x[index], None if quabo is None else np.asarray(quabo)[index], mask=mask[index]
    )
    h.index = index
    return h


def _stats_chunk(x: np.ndarray) -> pd.DataFrame:
    n = len(x)
    flat = x.reshape(n, -1)
    mask = clean(x)
    n_pix = mask.reshape(n, -1).sum(axis=1)
    survives = n_pix >= MIN_PIXELS
    h = hillas.parameters(x, mask=mask)
    nan = np.where(survives, 1.0, np.nan)
    median = np.median(flat, axis=1).astype(np.float64)
    return pd.DataFrame(
        {
            "max": flat.max(axis=1).astype(np.float64),
            "median": median,
            "neg_fraction": (flat < 0).mean(axis=1),
            "speckled": median > SPECKLED_MEDIAN_ADC,
            "survives": survives,
            "size": h["size"].to_numpy() * nan,
            "length": h["length"].to_numpy() * nan,
            "width": h["width"].to_numpy() * nan,
            "n_pixels": n_pix * nan,
        }
    )


def _summary_arrays(stats: pd.DataFrame, index: np.ndarray | None = None) -> np.ndarray:
    """The yardstick's values as one vector (layout of :func:`summary_index`)."""
    speck = stats["speckled"].to_numpy()
    surv = stats["survives"].to_numpy()
    cols = {c: stats[c].to_numpy(np.float64) for c in FRAME_STATS}
    if index is not None:
        speck, surv = speck[index], surv[index]
        cols = {c: v[index] for c, v in cols.items()}
    ordinary = ~speck
    out = []
    for c in FRAME_STATS:
        v = cols[c][ordinary]
        v = v[np.isfinite(v)]
        out.extend(np.percentile(v, QUANTILES) if len(v) else [np.nan] * len(QUANTILES))
    n_ord = int(ordinary.sum())
    out.append(surv[ordinary].mean() if n_ord else np.nan)
    out.append(speck.mean() if len(speck) else np.nan)
    return np.asarray(out, np.float64)


def summary_index() -> pd.MultiIndex:
    """Index of the yardstick's summary: (statistic, quantile) rows; fractions get
    quantile ``"-"``."""
    rows = [(c, f"p{q}") for c in FRAME_STATS for q in QUANTILES]
    rows += [(c, "-") for c in SET_STATS]
    return pd.MultiIndex.from_tuples(rows, names=["statistic", "quantile"])


def summarize(frames_or_stats) -> pd.Series:
    """p10 / p50 / p90 of each per-frame statistic (speckled frames left out) and the
    per-set fractions, as a Series indexed by (statistic, quantile).

    ``survive_fraction`` is the fraction of the non-speckled frames that survive
    cleaning; ``speckled_fraction`` is over all frames.
    """
    stats = (
        frames_or_stats
        if isinstance(frames_or_stats, pd.DataFrame)
        else frame_statistics(frames_or_stats)
    )
    return pd.Series(_summary_arrays(stats), index=summary_index(), name="value")


def bootstrap_sd(stats: pd.DataFrame, n_boot: int = 300, seed: int = 0) -> pd.Series:
    """Bootstrap standard deviation of every summary value (frames resampled with
    replacement, the whole yardstick recomputed each time)."""
    rng = np.random.default_rng(seed)
    n = len(stats)
    draws = np.array([_summary_arrays(stats, rng.integers(0, n, n)) for _ in range(n_boot)])
    return pd.Series(
        np.nanstd(draws, axis=0, ddof=1), index=summary_index(), name="boot_sd"
    )


def tolerance(real: pd.Series, boot: pd.Series) -> pd.Series:
    """Allowed |simulated - real| of each summary value under the pass/fail rule."""
    tol = []
    for (stat, q), value in real.items():
        if stat in SET_STATS or stat == "neg_fraction":
            rel = ABS_TOL_FRACTION
        else:
            rel = REL_TOL[int(q[1:])] * abs(value)
        tol.append(max(rel, 2 * boot[(stat, q)]))
    return pd.Series(tol, index=real.index, name="tolerance")


@dataclass
class Comparison:
    """Real and simulated yardstick values side by side, with the pass/fail rule.

    ``table`` has columns ``real``, ``simulated``, ``boot_sd`` (of the real value),
    ``tolerance``, ``z`` (difference in units of the tolerance) and ``pass`` (None for
    rows outside the rule, see :func:`compare`).
    """

    table: pd.DataFrame
    n_real: int
    n_simulated: int

    @property
    def failures(self) -> int:
        """How many judged rows fail the rule."""
        judged = self.table["pass"].dropna()
        return int((~judged.astype(bool)).sum())

    @property
    def distance(self) -> float:
        """Root-mean-square of ``z`` over the judged rows (0 = identical)."""
        judged = self.table["pass"].notna()
        return float(np.sqrt(np.mean(self.table.loc[judged, "z"] ** 2)))

    def __str__(self) -> str:
        t = self.table.copy()
        t["pass"] = t["pass"].map({True: "pass", False: "FAIL"}).fillna("n/a")
        with pd.option_context("display.width", 120, "display.precision", 3):
            body = t.to_string()
        return (
            f"{self.n_real} real vs {self.n_simulated} simulated frames: "
            f"{self.failures} of {int(self.table['pass'].notna().sum())} values fail, "
            f"distance {self.distance:.3f}\n{body}"
        )


def compare(
    real,
    simulated,
    *,
    n_boot: int = 300,
    seed: int = 0,
    judge_speckled: bool = False,
) -> Comparison:
    """Apply the yardstick to ``real`` and ``simulated`` frames (or their
    :func:`frame_statistics`) and judge every value.

    ``speckled_fraction`` is the rate of an anomaly class, set by the simulation's
    anomaly fraction rather than by the calibration, so it is shown but not judged
    unless ``judge_speckled``.
    """
    rs = real if isinstance(real, pd.DataFrame) else frame_statistics(real)
    ss = simulated if isinstance(simulated, pd.DataFrame) else frame_statistics(simulated)
    r = summarize(rs)
    s = summarize(ss)
    boot = bootstrap_sd(rs, n_boot=n_boot, seed=seed)
    tol = tolerance(r, boot)
    z = (s - r) / tol
    ok = (z.abs() <= 1.0).astype(object)
    if not judge_speckled:
        ok[("speckled_fraction", "-")] = None
    table = pd.DataFrame(
        {"real": r, "simulated": s, "boot_sd": boot, "tolerance": tol, "z": z, "pass": ok}
    )
    return Comparison(table, len(rs), len(ss))
