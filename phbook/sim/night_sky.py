"""The night-sky background of a dark pixel: the charge distribution of a PANOSETI pixel
that sees only the sky, and exact draws from it.

A pixel that sees no shower collects k ~ Poisson(nsb_pe) photoelectrons; given k its
charge is Gaussian (gain * k, noise^2 + (gain * spe_resolution)^2 * k). The simulator
(:mod:`phbook.sim.panoseti`) draws most dark pixels from an inverse-CDF table of this
mixture (:func:`background_quantiles`) and the rare ones beyond the table's last bin, or
forced above the trigger threshold, exactly (:func:`background_tail`).

``inst`` is a :class:`phbook.sim.panoseti.Instrument` (its ``nsb_pe``, ``noise_adc``,
``adc_per_pe`` and ``spe_resolution`` are read).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = [
    "TABLE_SIZE",
    "dark_pixel_components",
    "dark_pixel_sf",
    "background_quantiles",
    "background_tail",
]

#: entries of the inverse-CDF table of a dark pixel's charge
TABLE_SIZE = 2**16


@lru_cache(maxsize=16)
def dark_pixel_components(inst):
    """Weights, means and sds of the Gaussian mixture that is a dark pixel's charge.

    A pixel that sees only the night sky collects k ~ Poisson(nsb_pe) photoelectrons;
    its charge is Gaussian given k, with mean gain * k and variance
    noise^2 + (gain * spe_resolution)^2 * k.
    """
    from scipy.stats import poisson

    lam = inst.nsb_pe
    k = np.arange(int(lam + 10 * np.sqrt(lam) + 12))
    sd = np.sqrt(inst.noise_adc**2 + (inst.adc_per_pe * inst.spe_resolution) ** 2 * k)
    out = poisson.pmf(k, lam), inst.adc_per_pe * k, sd
    for a in out:
        a.flags.writeable = False  # cached: shared by every call with this instrument
    return out


def dark_pixel_sf(t, inst) -> np.ndarray:
    """P(charge > t) of a dark pixel, for an array of thresholds ``t`` (ADC)."""
    from scipy.special import ndtr

    w, mean, sd = dark_pixel_components(inst)
    t = np.asarray(t, np.float64)[..., None]
    return (w * ndtr(-(t - mean) / sd)).sum(axis=-1)


@lru_cache(maxsize=16)
def background_quantiles(inst) -> np.ndarray:
    """Quantiles of a dark pixel's charge at probabilities (i + 0.5) / M, i < M.

    The mixture's CDF is evaluated exactly on a fine grid and inverted; drawing a uniform
    index into this table is inverse-CDF sampling with one random number per pixel.
    """
    from scipy.special import ndtr

    w, mean, sd = dark_pixel_components(inst)
    # a grid step of about 0.005 ADC: far below the ADC's integer rounding
    x = np.linspace(-12 * inst.noise_adc, mean[-1] + 12 * sd[-1], 100_001)
    cdf = np.zeros_like(x)
    for wk, mk, sk in zip(w, mean, sd, strict=True):
        if wk > 1e-15:
            cdf += wk * ndtr((x - mk) / sk)
    p = (np.arange(TABLE_SIZE) + 0.5) / TABLE_SIZE
    return np.interp(p, cdf, x).astype(np.float32)


def background_tail(t, inst, rng: np.random.Generator) -> np.ndarray:
    """Exact draws of a dark pixel's charge conditioned on exceeding ``t`` (one per entry).

    The photoelectron count k is drawn from P(k | charge > t), proportional to
    Pois(k) P(N(gain k, sd_k) > t); the charge from the Gaussian truncated below at t,
    by inverting its upper-tail CDF (stable far into the tail).

    All entries are drawn at once. The random stream is the one of drawing, for each
    distinct ``t`` in increasing order, ``rng.choice`` of the counts and then one uniform
    per entry, so the frames of a seed do not depend on how this is computed.
    """
    from scipy.special import ndtr, ndtri

    t = np.atleast_1d(np.asarray(t, np.float64))
    out = np.empty(len(t), np.float32)
    if len(t) == 0:
        return out
    w, mean, sd = dark_pixel_components(inst)
    values, group, counts = np.unique(t, return_inverse=True, return_counts=True)
    upper = ndtr(-(values[:, None] - mean) / sd)  # (G, K): P(charge > t | k)
    weight = w * upper
    p = weight / weight.sum(axis=1, keepdims=True)
    cdf = np.cumsum(p, axis=1)
    cdf /= cdf[:, -1:]
    # entries in the order the per-value loop took them: by value, then by position
    order = np.argsort(group, kind="stable")
    start = np.cumsum(counts) - counts  # first entry of each group in ``order``
    rank = np.arange(len(t)) - np.repeat(start, counts)
    g = group[order]
    draws = rng.random(2 * len(t))
    first = 2 * start[g] + rank  # the group's choice() draws, then its uniforms
    pick = (cdf[g] <= draws[first][:, None]).sum(axis=1)  # searchsorted, side="right"
    u = 1.0 - draws[first + counts[g]]  # in (0, 1]
    z = -ndtri(u * upper[g, pick])  # standard-normal value above (t - mean) / sd
    out[order] = mean[pick] + sd[pick] * z
    return out
