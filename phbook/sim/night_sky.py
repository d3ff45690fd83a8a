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
    "soft_trigger_tables",
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


def soft_trigger_tables(inst, pedestal, ceiling, target_adc: float, spread_adc: float):
    """Tables with which the kernel decides a soft trigger before drawing dark pixels.

    ``soft_accept[v]``: P(kept | frame maximum v ADC) = Phi((v - target) / spread) for
    v = 0 .. A - 1, A where it reaches 1 to double precision (``target_adc`` and
    ``spread_adc`` are the soft trigger's threshold and spread, ADC); a dark pixel's
    log P(charge > x) on a grid of 0.05 ADC; and, per quabo, log P(no pixel of the
    quabo, lit or dark, records v or more from the sky alone), the bound the kernel
    thins with. ``pedestal`` and ``ceiling`` (4, 256) are each pixel's pedestal and
    ADC ceiling.
    """
    from scipy.special import ndtr

    n_acc = int(np.ceil(target_adc + 9.0 * spread_adc)) + 2
    soft_accept = ndtr((np.arange(n_acc) - target_adc) / spread_adc)
    pedestal = np.asarray(pedestal, np.float64).reshape(4, 256)
    ceiling = np.asarray(ceiling, np.float64).reshape(4, 256)
    x0 = -12.0 * max(inst.noise_adc, 1.0)
    x1 = n_acc + max(0.0, -float(pedestal.min())) + 1.0
    dx = 0.05
    grid = x0 + dx * np.arange(int(np.ceil((x1 - x0) / dx)) + 2)
    log_sf = np.maximum(np.log(np.maximum(dark_pixel_sf(grid, inst), 1e-320)), -745.0)
    v = np.arange(n_acc, dtype=np.float64)
    charge = v[None, None, :] - 0.5 - pedestal[:, :, None]  # (4, 256, A)
    sf = np.exp(np.interp((charge - x0) / dx, np.arange(len(grid)), log_sf))
    sf[(charge - x0) / dx >= len(grid) - 1] = 0.0
    sf[ceiling[:, :, None] < v[None, None, :] - 0.5] = 0.0
    log_none = np.log1p(-np.minimum(sf, 1 - 1e-16)).sum(axis=1)
    return soft_accept, np.ascontiguousarray(log_none), x0, dx, log_sf
