"""Compiled inner loops of the PANOSETI simulator (numba).

The physics lives in :mod:`phbook.sim.panoseti`; these kernels only make it fast. Two
things cannot be expressed efficiently with whole-array NumPy operations:

* rendering a shower ellipse only in the pixels it reaches (most showers light a few
  dozen of the 256 pixels), and
* deciding whether a frame triggers from its lit pixels *before* paying for the
  night-sky background of the 200-odd dark pixels: a frame whose lit pixels stay below
  threshold triggers only if a dark pixel fluctuates above it, an event whose
  probability is known exactly; such frames are kept with that probability, with one
  dark pixel drawn from its tail above threshold.

Random numbers are generated in bulk by the caller from its NumPy generator (one
call per batch instead of one per draw) and consumed in order, so runs are
reproducible. Draws from the far tail of the night-sky distribution (which
need SciPy's special functions) are flagged and filled in by the caller.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_NPIX = 256
_SIDE = 16


@numba.njit(cache=True)
def render_ellipses(ly, lx, sl2, sw2, c, s, norm, fine, out):
    """Add Gaussian ellipses to ``out`` (m, 16, 16), each within +-4 sigma of its centre.

    ``ly, lx`` are centroids in quabo pixel coordinates; ``sl2, sw2`` the variances along
    the axes (pixel variance already added); ``fine`` ellipses are sampled 2 x 2 times per
    pixel (``norm`` already divided by 4 for them).
    """
    m = ly.shape[0]
    for i in range(m):
        a = c[i] * c[i] / sl2[i] + s[i] * s[i] / sw2[i]
        b = c[i] * s[i] * (1.0 / sl2[i] - 1.0 / sw2[i])
        cc = s[i] * s[i] / sl2[i] + c[i] * c[i] / sw2[i]
        reach = 4.0 * math.sqrt(max(sl2[i], sw2[i])) + 0.5
        r0 = max(0, int(math.floor(ly[i] - reach)))
        r1 = min(_SIDE, int(math.ceil(ly[i] + reach)) + 1)
        c0 = max(0, int(math.floor(lx[i] - reach)))
        c1 = min(_SIDE, int(math.ceil(lx[i] + reach)) + 1)
        for r in range(r0, r1):
            for col in range(c0, c1):
                if fine[i]:
                    acc = 0.0
                    for sy in (0.25, 0.75):
                        dy = r + sy - ly[i]
                        for sx in (0.25, 0.75):
                            dx = col + sx - lx[i]
                            q = a * dx * dx + 2.0 * b * dx * dy + cc * dy * dy
                            if q < 60.0:
                                acc += math.exp(-0.5 * q)
                    out[i, r, col] += norm[i] * acc
                else:
                    dy = r + 0.5 - ly[i]
                    dx = col + 0.5 - lx[i]
                    q = a * dx * dx + 2.0 * b * dx * dy + cc * dy * dy
                    if q < 60.0:
                        out[i, r, col] += norm[i] * math.exp(-0.5 * q)


@numba.njit(cache=True)
def _poisson(lam, uniforms, pos):
    """A Poisson(lam) draw by inversion (lam <= 30) from ``uniforms[pos]``; (k, new pos).

    Larger means, which only the brightest shower cores reach, use numba's generator.
    """
    if lam > 30.0:
        return np.random.poisson(lam), pos
    u = uniforms[pos]
    p = math.exp(-lam)
    cdf = p
    k = 0
    while u > cdf and k < 200:
        k += 1
        p *= lam / k
        cdf += p
    return k, pos + 1


@numba.njit(cache=True)
def digitize(
    pe,  # (m, 256) float32 expected signal photoelectrons
    quabo,  # (m,) int: which quabo's calibration applies
    hot,  # (m, 256) float32 extra ADC (hot pixels) or shape (1, 1) when unused
    uniforms,  # (U,) float64 uniform draws in [0, 1), consumed in order
    normals,  # (V,) float32 standard normal draws, consumed in order
    seed,  # int: seeds numba's generator (for the rare Poisson means above 30)
    table,  # (M,) float32 quantiles of a dark pixel's charge (before pedestal)
    pedestal,  # (4, 256) float32 pedestal + residual offset per pixel
    ceiling,  # (4, 256) float32 ADC ceiling (4095 - baseline) per pixel
    p_exceed,  # (4, 256) float64 P(a dark pixel records more than the threshold)
    log_quiet,  # (4, 256) float64 log(1 - p_exceed)
    thr,  # float: trigger threshold (ADC); a pixel fires when its value > thr
    gain,  # ADC per photoelectron
    spe2,  # (gain * single-PE resolution)^2
    noise2,  # electronic noise variance
    nsb,  # mean night-sky photoelectrons per pixel
    lit_min,  # pixels expecting more signal PE than this are drawn exactly
    skip_untriggered,  # drop frames in which no pixel can exceed thr
    out,  # (m, 256) float32 output, rows [0, kept) filled
    tail_row,  # (T,) int32: rows of flagged tail draws
    tail_pix,  # (T,) int32: pixels of flagged tail draws
    tail_t,  # (T,) float64: the draw must exceed this charge (ADC, before pedestal)
    keep_index,  # (m,) int32: which input frame each output row came from
):
    """Digitise frames; return (kept frames, flagged tail draws, input frames processed).

    Random numbers come from the ``uniforms`` and ``normals`` buffers (generated in bulk
    by the caller, far faster than one call per draw). Each pixel takes at most one
    uniform (a Poisson inversion or a table index) and each lit pixel one normal, so the
    kernel checks before each frame that the buffers suffice and otherwise returns, and
    the caller continues with fresh buffers. Flagged pixels hold NaN in ``out``; the
    caller replaces them by exact draws of a dark pixel's charge above ``tail_t``, then
    adds the pedestal, clips and rounds.
    """
    np.random.seed(seed)
    m = pe.shape[0]
    big = table.shape[0]
    use_hot = hot.shape[1] == _NPIX
    lit = np.zeros(_NPIX, np.bool_)
    kept = 0
    n_tail = 0
    iu = 0  # next uniform
    jn = 0  # next normal
    cut = math.floor(thr) + 0.5  # a value rounds above thr when it reaches this
    for i in range(m):
        n_lit = 0
        for p in range(_NPIX):
            if pe[i, p] > lit_min or (use_hot and hot[i, p] != 0.0):
                n_lit += 1
        if (
            iu + _NPIX + 2 > uniforms.shape[0]
            or jn + n_lit > normals.shape[0]
            or n_tail + _NPIX > tail_row.shape[0]
        ):
            return kept, n_tail, i  # buffers low: the caller continues from frame i
        q = quabo[i]
        row = out[kept]
        any_above = False
        log_none = 0.0
        for p in range(_NPIX):
            lam = pe[i, p]
            extra = hot[i, p] if use_hot else 0.0
            if lam > lit_min or extra != 0.0:
                k, iu = _poisson(lam + nsb, uniforms, iu)
                v = gain * k + math.sqrt(noise2 + spe2 * k) * normals[jn]
                jn += 1
                v = min(v + pedestal[q, p] + extra, ceiling[q, p])
                v = math.floor(v + 0.5)
                row[p] = v
                lit[p] = True
                if v > thr:
                    any_above = True
            else:
                lit[p] = False
                log_none += log_quiet[q, p]
        forced = -1
        if not any_above and skip_untriggered:
            # Only a dark pixel fluctuating above threshold can trigger this frame.
            p_any = -math.expm1(log_none)
            u = uniforms[iu]
            iu += 1
            if u >= p_any:
                continue
            total = 0.0
            for p in range(_NPIX):
                if not lit[p]:
                    total += p_exceed[q, p]
            u = uniforms[iu] * total
            iu += 1
            acc = 0.0
            for p in range(_NPIX):
                if not lit[p]:
                    acc += p_exceed[q, p]
                    forced = p
                    if acc >= u:
                        break
        for p in range(_NPIX):
            if lit[p]:
                continue
            if p == forced:
                row[p] = np.nan
                tail_row[n_tail] = kept
                tail_pix[n_tail] = p
                tail_t[n_tail] = cut - pedestal[q, p]
                n_tail += 1
                continue
            j = int(uniforms[iu] * big)
            iu += 1
            if j >= big - 1:  # the top bin: an exact draw from the far tail
                row[p] = np.nan
                tail_row[n_tail] = kept
                tail_pix[n_tail] = p
                tail_t[n_tail] = table[big - 1]
                n_tail += 1
                continue
            v = min(table[j] + pedestal[q, p], ceiling[q, p])
            row[p] = math.floor(v + 0.5)
        keep_index[kept] = i
        kept += 1
    return kept, n_tail, m
