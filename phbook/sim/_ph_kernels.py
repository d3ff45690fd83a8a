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

A pixel's charge is a sum of independent parts: electronic noise, one Gaussian
(gain, (gain * spe resolution)^2) per photoelectron, and the photoelectrons are the
night sky's, Poisson(nsb), plus the signal's, Poisson(signal). So every pixel draws its
noise-plus-sky charge from the dark pixel's inverse-CDF table (one 16-bit index), and a
lit pixel adds its signal photoelectrons: Poisson(signal) counts, which for the faint
wings of an image (most lit pixels) are mostly 0, decided without an exponential.

Random numbers are generated in bulk by the caller from its NumPy generator (one
call per buffer instead of one per draw) and consumed in order, so runs are
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

    Along a row of samples the Gaussian is exp(-q/2) with q quadratic in x, so the ratio
    of neighbouring samples changes by a constant factor from one sample to the next:
    each row costs three exponentials (its largest sample, where it starts, and the
    ratios on either side) and two multiplications per sample.
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
        if r1 <= r0 or c1 <= c0:
            continue
        ns = 2 if fine[i] else 1
        step = 1.0 / ns
        n_x = ns * (c1 - c0)
        decay = math.exp(-a * step * step)  # ratio of successive ratios
        x_first = c0 - lx[i] + 0.5 * step  # first sample's x offset from the centre
        w = norm[i]
        for r in range(r0, r1):
            for sub in range(ns):
                dy = r + (sub + 0.5) * step - ly[i]
                # the row's largest sample: nearest to x = -b dy / a
                k0 = int(math.floor((-b * dy / a - x_first) / step + 0.5))
                k0 = min(max(k0, 0), n_x - 1)
                x = x_first + k0 * step
                e0 = math.exp(-0.5 * (a * x * x + 2.0 * b * x * dy + cc * dy * dy))
                out[i, r, c0 + k0 // ns] += w * e0
                e = e0  # forward
                ratio = math.exp(
                    -0.5 * (a * (2.0 * x * step + step * step) + 2.0 * b * dy * step)
                )
                for k in range(k0 + 1, n_x):
                    e *= ratio
                    ratio *= decay
                    out[i, r, c0 + k // ns] += w * e
                e = e0  # backward
                ratio = math.exp(
                    -0.5 * (a * (step * step - 2.0 * x * step) - 2.0 * b * dy * step)
                )
                for k in range(k0 - 1, -1, -1):
                    e *= ratio
                    ratio *= decay
                    out[i, r, c0 + k // ns] += w * e


@numba.njit(cache=True)
def _signal_pe(lam, u):
    """Poisson(lam) signal photoelectrons by inversion from one uniform ``u``.

    Most lit pixels are the faint wings of an image, where k = 0 is decided without
    an exponential: u <= 1 - lam implies u <= exp(-lam). Means above 30, which only
    the brightest shower cores reach, use numba's generator (constant time).
    """
    if lam > 30.0:
        return np.random.poisson(lam)
    if u <= 1.0 - lam:
        return 0
    p = math.exp(-lam)
    cdf = p
    k = 0
    while u > cdf and k < 200:
        k += 1
        p *= lam / k
        cdf += p
    return k


@numba.njit(cache=True)
def _dark_sf(charge, sf_x0, sf_dx, log_sf):
    """P(a dark pixel's charge > ``charge``), interpolated in log from a fine grid."""
    x = (charge - sf_x0) / sf_dx
    if x <= 0.0:
        return math.exp(log_sf[0])
    last = log_sf.shape[0] - 1
    if x >= last:
        return 0.0
    i = int(x)
    f = x - i
    return math.exp(log_sf[i] + f * (log_sf[i + 1] - log_sf[i]))


#: random numbers a frame may take at most, per buffer (checked before each frame)
FRAME_DRAWS = _NPIX + 4


@numba.njit(cache=True)
def digitize(
    pe,  # (m, 256) float32 expected signal photoelectrons
    quabo,  # (m,) int: which quabo's calibration applies
    hot,  # (m, 256) float32 extra ADC (hot pixels) or shape (1, 1) when unused
    index16,  # (I,) uint16 uniform table indices, one per pixel
    bits32,  # (B,) uint32 uniform integers: a lit pixel's signal uniform is bits / 2**32
    uniforms,  # (U,) float64 uniform draws in [0, 1), for the trigger decisions
    normals,  # (V,) float32 standard normal draws
    seed,  # int: seeds numba's generator (for the rare Poisson means above 30)
    table,  # (2**16,) float32 quantiles of a dark pixel's charge (before pedestal)
    pedestal,  # (4, 256) float32 pedestal + residual offset per pixel
    ceiling,  # (4, 256) float32 ADC ceiling (4095 - baseline) per pixel
    p_exceed,  # (4, 256) float64 P(a dark pixel records more than the threshold)
    log_quiet,  # (4, 256) float64 log(1 - p_exceed)
    thr,  # float: trigger threshold (ADC); a pixel fires when its value > thr
    gain,  # ADC per photoelectron
    spe2,  # (gain * single-PE resolution)^2
    lit_min,  # pixels expecting more signal PE than this draw signal photoelectrons
    skip_untriggered,  # drop frames in which no pixel can exceed thr
    soft_accept,  # (A,) float64 P(soft trigger | frame maximum v), v = 0..A-1; (0,): off
    log_none,  # (4, A) float64 log P(no pixel of the quabo records v or more)
    sf_x0,  # float: first charge of the ``log_sf`` grid
    sf_dx,  # float: its step
    log_sf,  # (G,) float64 log P(dark pixel charge > x) on that grid
    out,  # (m, 256) float32 output, rows [0, kept) filled
    tail_row,  # (T,) int32: rows of flagged tail draws
    tail_pix,  # (T,) int32: pixels of flagged tail draws
    tail_t,  # (T,) float64: the draw must exceed this charge (ADC, before pedestal)
    tail_extra,  # (T,) float64: charge to add to the draw (signal, hot pixel)
    keep_index,  # (m,) int32: which input frame each output row came from
    decided,  # (m,) bool: the soft trigger was decided here (else the caller decides)
    used,  # (4,) int64 out: index16, bits32, uniforms, normals consumed
):
    """Digitise frames; return (kept frames, flagged tail draws, input frames processed).

    Random numbers come from four buffers generated in bulk by the caller (far faster
    than one call per draw) and consumed in order; ``used`` reports how many of each.
    A frame takes at most ``FRAME_DRAWS`` from each, so before each frame the kernel
    checks that the buffers (and the tail buffers) suffice and otherwise returns; the
    caller continues from the frame it reports. Flagged pixels (a draw beyond the
    table's last bin, or a dark pixel forced above a threshold) hold NaN in ``out``;
    the caller replaces them by exact draws of a dark pixel's charge above ``tail_t``,
    adds ``tail_extra`` and the pedestal, clips and rounds.

    The soft trigger (``soft_accept`` given): a frame whose largest value is v is
    kept with probability soft_accept[v]. It is decided here, before the dark pixels
    are drawn, so that the frames it rejects cost only their lit pixels. With a uniform
    u, a frame is kept at once when u < soft_accept[max of its lit pixels]; otherwise
    it is kept only if a dark pixel reaches the smallest value V with
    soft_accept[V] > u, an event of known probability: a bound over all pixels of the
    quabo (``log_none``) rejects almost all such frames in one step (thinning), the
    rest are decided by the exact probability over the dark pixels, and a kept frame
    has one dark pixel drawn from its tail above V (as the hard trigger does). Frames
    whose lit pixels stay below ``thr``, or hold a flagged draw, are left to the
    caller (``decided`` False).
    """
    np.random.seed(seed)
    m = pe.shape[0]
    big = table.shape[0]
    use_hot = hot.shape[1] == _NPIX
    soft = soft_accept.shape[0] > 0
    n_acc = soft_accept.shape[0]
    spe = math.sqrt(spe2)
    lit = np.zeros(_NPIX, np.bool_)
    kept = 0
    n_tail = 0
    ji = 0  # next table index
    je = 0  # next 32-bit uniform
    iu = 0  # next uniform
    jn = 0  # next normal
    cut = math.floor(thr) + 0.5  # a value rounds above thr when it reaches this
    for i in range(m):
        if (
            ji + FRAME_DRAWS > index16.shape[0]
            or je + FRAME_DRAWS > bits32.shape[0]
            or iu + FRAME_DRAWS > uniforms.shape[0]
            or jn + FRAME_DRAWS > normals.shape[0]
            or n_tail + _NPIX > tail_row.shape[0]
        ):
            break  # buffers low: the caller continues from frame i
        q = quabo[i]
        row = out[kept]
        top = -1e30  # largest value of the lit pixels (a lower bound where flagged)
        lit_tail = False
        log_dark = 0.0
        first_tail = n_tail
        for p in range(_NPIX):
            lam = pe[i, p]
            extra = hot[i, p] if use_hot else 0.0
            if lam > lit_min or extra != 0.0:
                lit[p] = True
                k = _signal_pe(lam, (bits32[je] + 0.5) * 2.3283064365386963e-10)
                je += 1
                if k > 0:
                    extra += gain * k + spe * math.sqrt(k) * normals[jn]
                    jn += 1
                j = index16[ji]
                ji += 1
                if j >= big - 1:  # the top bin: an exact draw from the far tail
                    row[p] = np.nan
                    tail_row[n_tail] = kept
                    tail_pix[n_tail] = p
                    tail_t[n_tail] = table[big - 1]
                    tail_extra[n_tail] = extra
                    n_tail += 1
                    lit_tail = True
                    v = math.floor(
                        min(table[big - 1] + pedestal[q, p] + extra, ceiling[q, p]) + 0.5
                    )
                else:
                    v = min(table[j] + pedestal[q, p] + extra, ceiling[q, p])
                    v = math.floor(v + 0.5)
                    row[p] = v
                if v > top:
                    top = v
            else:
                lit[p] = False
                log_dark += log_quiet[q, p]
        forced = -1
        forced_t = 0.0
        is_decided = True
        if lit_tail:
            is_decided = not soft  # the caller sees the final values and decides
        elif top <= thr and skip_untriggered:
            # Only a dark pixel fluctuating above threshold can trigger this frame.
            u = uniforms[iu]
            iu += 1
            if -math.expm1(log_dark) <= u:
                n_tail = first_tail
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
            forced_t = cut - pedestal[q, forced]
            is_decided = not soft
        elif soft:
            u = uniforms[iu]
            iu += 1
            j = int(top) if top > 0.0 else 0
            if j < n_acc - 1 and u >= soft_accept[j]:
                # kept only if a dark pixel reaches V = min{v: soft_accept[v] > u}
                lo, hi = j + 1, n_acc - 1
                while lo < hi:
                    mid = (lo + hi) // 2
                    if soft_accept[mid] > u:
                        hi = mid
                    else:
                        lo = mid + 1
                big_v = lo
                w = uniforms[iu]
                iu += 1
                if w >= -math.expm1(log_none[q, big_v]):
                    continue  # beyond the bound over all pixels: rejected
                log_no = 0.0
                weights = 0.0
                for p in range(_NPIX):
                    if not lit[p] and ceiling[q, p] >= big_v - 0.5:
                        s = _dark_sf(big_v - 0.5 - pedestal[q, p], sf_x0, sf_dx, log_sf)
                        log_no += math.log1p(-min(s, 1.0 - 1e-16))
                        weights += s
                if w >= -math.expm1(log_no):
                    continue
                # keep it, with one dark pixel (chosen by its odds) at V or above
                u2 = uniforms[iu] * weights
                iu += 1
                acc = 0.0
                for p in range(_NPIX):
                    if not lit[p] and ceiling[q, p] >= big_v - 0.5:
                        acc += _dark_sf(big_v - 0.5 - pedestal[q, p], sf_x0, sf_dx, log_sf)
                        forced = p
                        if acc >= u2:
                            break
                forced_t = big_v - 0.5 - pedestal[q, forced]
        for p in range(_NPIX):
            if lit[p]:
                continue
            if p == forced:
                row[p] = np.nan
                tail_row[n_tail] = kept
                tail_pix[n_tail] = p
                tail_t[n_tail] = forced_t
                tail_extra[n_tail] = 0.0
                n_tail += 1
                continue
            j = index16[ji]
            ji += 1
            if j >= big - 1:  # the top bin: an exact draw from the far tail
                row[p] = np.nan
                tail_row[n_tail] = kept
                tail_pix[n_tail] = p
                tail_t[n_tail] = table[big - 1]
                tail_extra[n_tail] = 0.0
                n_tail += 1
                continue
            v = min(table[j] + pedestal[q, p], ceiling[q, p])
            row[p] = math.floor(v + 0.5)
        keep_index[kept] = i
        decided[kept] = is_decided
        kept += 1
    else:
        i = m
    used[0] = ji
    used[1] = je
    used[2] = iu
    used[3] = jn
    return kept, n_tail, i


class DrawBuffers:
    """The random numbers the compiled digitiser consumes, drawn in bulk from ``rng``.

    Four cache-sized buffers (16-bit table indices and 32-bit integers, both views of
    the generator's raw 64-bit output; uniforms; normals);
    the kernel reports how many of each it used, and a buffer is drawn afresh (its few
    leftovers dropped) once fewer than a frame's worth remain, so a seed always gives
    the same frames.
    """

    SIZES = (2**20, 2**17, 2**17, 2**16)

    def __init__(self, rng: np.random.Generator, normal):
        self.rng, self.normal = rng, normal  # normal(size, rng): float32 normals
        self.buffers = [None] * 4
        self.pos = [0] * 4

    def _draw(self, which: int) -> np.ndarray:
        size, rng = self.SIZES[which], self.rng
        if which == 0:  # the table has 2**16 entries
            return rng.bit_generator.random_raw(size // 4).view(np.uint16)
        if which == 1:
            return rng.bit_generator.random_raw(size // 2).view(np.uint32)
        if which == 2:
            return rng.random(size)
        return self.normal(size, rng)

    def views(self) -> list[np.ndarray]:
        for w in range(4):
            buf = self.buffers[w]
            if buf is None or len(buf) - self.pos[w] < FRAME_DRAWS:
                self.buffers[w], self.pos[w] = self._draw(w), 0
        return [b[p:] for b, p in zip(self.buffers, self.pos, strict=True)]

    def consume(self, used: np.ndarray) -> None:
        for w in range(4):
            self.pos[w] += int(used[w])
