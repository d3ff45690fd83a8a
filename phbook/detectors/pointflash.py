"""Light in one pixel that its neighbours do not share: point flashes and hot pixels.

Optical SETI looks for nanosecond pulses from a point in the sky. PANOSETI's optics put
such a pulse into one pixel, or a few, with nothing around it (the simulator's
``point_source`` class); a pixel that fires on its own (``hot_pixel``) looks the same.
A Cherenkov shower is an ellipse wider than a pixel, so its brightest pixel has bright
neighbours. A score over the whole frame dilutes one pixel among 256; this detector
looks at each pixel against its own neighbourhood.

:class:`PointFlash` computes, for every pixel, its excess over the mean of its 8
neighbours in units of the Poisson-like noise of that mean,
``(x - m) / sqrt(max(m, 0) + noise_floor)`` (ADC; where a neighbour lies outside the
quabo the nearest pixel inside stands in for it, so a shower that leaves the frame at a
bright edge pixel is not taken for a point), and takes the largest over the frame.
From normal frames it learns the distribution of that largest excess; the score is
``-log10`` of its tail probability (empirical up to the 90th percentile of the normal
frames, an exponential tail fitted to their excesses above it), on the same scale as
:class:`~phbook.detectors.ReadoutFaults`.

A pulse that lands where two or four pixels meet shares its light between them, and
then each lit pixel has a bright neighbour: the single-pixel excess above sees it
weakly. ``PointFlash(block=(2, 2))`` looks for that footprint instead: for every
block of ``rows x columns`` pixels, the excess of its *weakest* pixel over the light
expected there from the ring of pixels around the block, in the same noise units. The
weakest pixel, not the block's mean, because a single bright pixel raises a block's
mean as much as light shared by all four does; only a flash that lights every pixel of
the block lifts its weakest one. ``block=(1, 1)`` (the default) is the single-pixel
excess.

The light expected in the block is the ring's mean, plus ``slope`` times the amount by
which the ring is brighter than the next ring out (never less than the ring's mean): a
shower's core sits on a slope of light that rises towards it, and continuing that rise
into the block expects a bright core where a flat background expects none. A flash on
a flat background loses nothing, except on the quabo's edge: there the block's own
pixels stand in for missing ring pixels (as for the ring alone, see the class), for
more of the ring than of the next ring out, so a flash touching the edge makes a rise
of its own and loses some excess (a 150 ADC per pixel 2x2 flash on 16 ADC sky: 29.4
inside with or without the slope; 17.5 and 14.7 on an edge, 9.3 and 7.8 in a corner,
without and with it), in the direction of the deliberate edge penalty.

``slope=None`` (the default) takes the value chosen on simulation for the footprint, 0
for one pixel and 1 for a larger block. On chapter 9's simulated normal frames with a
600 ADC flash shared by a random 2x2 block (three draws) slopes 0, 0.25, 0.5, 0.75, 1,
1.5 and 2 gave ROC-AUC 0.957, 0.967, 0.973, 0.975, 0.975, 0.973 and 0.970; for one
pixel the simulated ``point_source`` class gave 0.954, 0.945 and 0.906 for slopes 0,
0.5 and 1 (its light spreads into the neighbours, which is itself a slope). Two-pixel
blocks agree with the default: the same flash shared by a 1 x 2 (2 x 1) block gave
0.987, 0.992, 0.992 (0.986, 0.992, 0.993) for slopes 0, 0.5 and 1. On the 88 real
frames, which played no part in choosing the slope, the 2x2 check with slope 1 reaches
0.973 / 0.975 / 0.986 on the same fault (seeds 0-2; 0.958 / 0.973 / 0.971 without the
slope) and ranks the 4 speckled frames first, where without it three bright showers
outranked them. The idea of looking at the light around the block did come from seeing
those showers at the top of the real ranking, so it is not blind to the real frames.
The block's rule itself (weakest pixel, not mean) was chosen on the real frames
(single-pixel excess 0.62, block mean over its ring 0.90, weakest pixel 0.96 on the
shared flash) and confirmed on simulation (weakest pixel 0.956-0.958 against block mean
0.893-0.896; the ring's mean beats its brightest pixel, 0.956 against 0.847), and
``tests/test_pointflash.py`` checks both choices on simulated frames. A block check
sees little else: a point source that lands in one pixel lights no whole 2x2 block,
which is why the benchmark runs both footprints.
"""

from __future__ import annotations

import numbers
import operator

import numpy as np

from .base import Detector, adc_frames

__all__ = ["PointFlash", "local_excess", "excess_map", "brightest_block"]

_TAIL_QUANTILE = 0.9
# frames per pass: at 16 x 16 about 470 MiB of working arrays, 630 MiB with a slope
_CHUNK = 65536


def _block(block) -> tuple[int, int]:
    """``(rows, columns)`` of a footprint given as a pair of integers or as ``"2x2"``."""
    if isinstance(block, str):
        parts = block.lower().replace(" ", "").split("x")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ValueError(f"block must look like '2x2' (rows x columns), got {block!r}")
        h, w = (int(p) for p in parts)
    else:
        try:
            h, w = block
            if isinstance(h, bool) or isinstance(w, bool):
                raise TypeError
            h, w = operator.index(h), operator.index(w)  # integers only: 2.7 is refused
        except (TypeError, ValueError):
            raise ValueError(
                f"block must be two integers (rows, columns) or 'RxC', got {block!r}"
            ) from None
    if h < 1 or w < 1:
        raise ValueError(f"block must be at least 1 x 1 pixels, got {h} x {w}")
    return h, w


def _window_sum(p: np.ndarray, h: int, w: int) -> np.ndarray:
    """Sums of every ``h x w`` window of ``p`` (N, H, W): (N, H - h + 1, W - w + 1),
    by two 1-D passes."""
    rows = sum(p[:, i : p.shape[1] - h + 1 + i] for i in range(h))
    return sum(rows[:, :, j : p.shape[2] - w + 1 + j] for j in range(w))


def _slope(slope) -> float:
    """The weight of the ring's rise: a finite real number >= 0 (not a string or a
    boolean)."""
    if not isinstance(slope, numbers.Real) or isinstance(slope, (bool, np.bool_)):
        raise ValueError(f"slope must be a number >= 0, got {slope!r}")
    value = float(slope)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"slope must be a finite number >= 0, got {slope!r}")
    return value


def excess_map(
    images: np.ndarray, noise_floor: float = 10.0, block=(1, 1), slope: float = 0.0
) -> np.ndarray:
    """The excess of every block of a frame over the light expected there, in noise
    units: ``(N, H - rows + 1, W - columns + 1)`` for frames ``(N, H, W)`` (or
    ``(N, 1, H, W)``) in ADC, baseline subtracted. Entry ``[k, r, c]`` is the block whose
    top-left pixel is ``(r, c)``: ``(x - m) / sqrt(max(m, 0) + noise_floor)`` with ``x``
    the block's weakest pixel and ``m`` the light expected in the block: the mean of the
    ring of pixels around it (8 for one pixel, 12 for a 2x2 block), plus ``slope`` times
    the amount by which that ring is brighter than the next ring out (16 pixels for one
    pixel, 20 for a 2x2 block; nothing is added where the ring is the darker). A position
    outside the frame is read at the nearest pixel inside.
    """
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3 or min(x.shape[1:]) < 2:
        raise ValueError(f"frames must have shape (N, H, W) with H, W >= 2, got {x.shape}")
    if not noise_floor > 0:
        raise ValueError(f"noise_floor must be positive, got {noise_floor}")
    h, w = _block(block)
    slope = _slope(slope)
    if h > x.shape[1] or w > x.shape[2]:
        raise ValueError(f"a {h} x {w} block does not fit in {x.shape[1:]} frames")
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
    # the block's weakest pixel, and the box around it less the block
    nh, nw = x.shape[1] - h + 1, x.shape[2] - w + 1
    weakest = x[:, :nh, :nw]
    for i in range(h):
        for j in range(w):
            if i or j:
                weakest = np.minimum(weakest, x[:, i : i + nh, j : j + nw])
    inner = _window_sum(x, h, w)
    box = _window_sum(p, h + 2, w + 2)
    expected = (box - inner) / float((h + 2) * (w + 2) - h * w)
    if slope:
        # the next ring out, and the rise from it to the ring carried into the block
        p2 = np.pad(x, ((0, 0), (2, 2), (2, 2)), mode="edge")
        outer = (_window_sum(p2, h + 4, w + 4) - box) / float(
            (h + 4) * (w + 4) - (h + 2) * (w + 2)
        )
        expected = expected + np.float32(slope) * np.maximum(expected - outer, 0.0)
    return (weakest - expected) / np.sqrt(
        np.maximum(expected, 0.0) + np.float32(noise_floor)
    )


def local_excess(
    images: np.ndarray, noise_floor: float = 10.0, block=(1, 1), slope: float = 0.0
) -> np.ndarray:
    """Per frame, the largest excess of a pixel over the mean of its 8 neighbours,
    ``(x - m) / sqrt(max(m, 0) + noise_floor)``, for frames ``(N, H, W)`` (or
    ``(N, 1, H, W)``) in ADC, baseline subtracted: a 16 x 16 quabo, a 32 x 32 module.
    A neighbour outside the frame is the nearest pixel inside.

    ``block=(rows, columns)`` (or ``"2x2"``) generalises the pixel to a block: ``x`` is
    then the block's weakest pixel and ``m`` the mean of the ring of pixels around the
    block (12 for a 2x2 block); ``(1, 1)`` is the single pixel above. ``slope`` adds
    the ring's rise over the next ring out to ``m`` (:func:`excess_map`). The largest
    of :func:`excess_map`.
    """
    z = excess_map(images, noise_floor, block, slope)
    return z.reshape(len(z), -1).max(axis=1)


def brightest_block(
    images: np.ndarray, noise_floor: float = 10.0, block=(1, 1), slope: float = 0.0
):
    """Where each frame's largest excess sits: ``(row, column, excess)`` arrays, the
    top-left pixel of the block (or the pixel) that :func:`local_excess` reports, so a
    flagged frame can be shown with the block that flagged it."""
    z = excess_map(images, noise_floor, block, slope)
    flat = z.reshape(len(z), -1)
    best = flat.argmax(axis=1)
    row, col = np.unravel_index(best, z.shape[1:])
    return row, col, flat[np.arange(len(z)), best]


class PointFlash(Detector):
    """A pixel far brighter than its neighbours (module docstring).

    ``noise_floor`` (ADC) is added to the neighbours' mean under the square root, so a
    dark neighbourhood's noise is not taken as zero. The default was chosen on
    simulated frames, not on the real sample: on chapter 9's simulated test set
    (``point_source`` against normal frames; so its AUCs there are not blind to this
    choice) floors of 5, 10, 20 and 40 ADC gave ROC-AUC 0.957, 0.954, 0.948 and 0.937,
    and on an independent simulation (normal frames of seed 31, anomalies of seed 32)
    2.5 to 40 ADC gave 0.962 to 0.943 on point sources and 0.995 to 0.990 on hot
    pixels. Ten ADC sits within 0.003 of the best and keeps the noise of a nearly dark
    neighbourhood from being taken as a few ADC.

    On the quabo's edge the nearest pixels stand in for missing neighbours, and a pixel
    itself stands in for some of its own (three of eight at a corner), so a flash on
    the edge scores lower than the same flash inside (about a fifth at a corner):
    deliberately, since showers that leave the frame are brightest at the edge.
    Frames in ADC, baseline subtracted, any size (``transform``, if given, is undone
    first, as for :class:`~phbook.detectors.HillasCut`); NaN or infinite pixels are an
    error. ``block`` (``(rows, columns)`` or ``"2x2"``) looks for light shared by a block
    of pixels instead of one pixel (module docstring); on the edge the nearest pixels
    inside stand in for the missing ring as they do for a pixel's neighbours, so a block
    in a corner, five of whose twelve ring values are its own pixels, scores lower.
    ``slope`` (a number >= 0, or ``None`` for the footprint's default: 0 for one pixel,
    1 for a block) carries the ring's rise over the next ring out into the light
    expected in the block (module docstring); :attr:`ring_slope` is the value used.
    """

    def __init__(
        self,
        noise_floor: float = 10.0,
        transform=None,
        contamination=0.01,
        block=(1, 1),
        slope: float | None = None,
    ):
        super().__init__(contamination)
        self.noise_floor = noise_floor
        self.transform = transform
        _block(block)  # a bad footprint or slope is refused here, not after a fit
        if slope is not None:
            _slope(slope)
        # as given (scikit-learn's clone and set_params expect it)
        self.block = block
        self.slope = slope

    @property
    def footprint(self) -> tuple[int, int]:
        """``(rows, columns)`` of the block looked at: ``(1, 1)`` is one pixel."""
        return _block(self.block)

    @property
    def ring_slope(self) -> float:
        """The ``slope`` used: as given, or the footprint's default (chosen on
        simulation: 0 for one pixel, 1 for a larger block; module docstring)."""
        if self.slope is not None:
            return _slope(self.slope)
        return 0.0 if self.footprint == (1, 1) else 1.0

    def _excess(self, x) -> np.ndarray:
        """:func:`local_excess` of ADC frames, in chunks (bounded memory)."""
        img = adc_frames(x, self.transform)
        out = np.empty(len(img), np.float64)
        for start in range(0, len(img), _CHUNK):
            part = np.asarray(img[start : start + _CHUNK], dtype=np.float32)
            if not np.isfinite(part).all():
                bad = start + int(np.flatnonzero(~np.isfinite(part).all(axis=(1, 2)))[0])
                raise ValueError(
                    f"frame {bad} holds NaN or infinite pixels: PointFlash scores "
                    "pulse heights in ADC"
                )
            out[start : start + _CHUNK] = local_excess(
                part, self.noise_floor, self.footprint, self.ring_slope
            )
        return out

    def _fit(self, x):
        t = self._excess(x)
        if len(t) < 20:
            raise ValueError(
                "PointFlash needs at least 20 normal frames to learn its tail, "
                f"got {len(t)}"
            )
        self.sorted_ = np.sort(t)
        self.tail_start_ = float(np.quantile(t, _TAIL_QUANTILE))
        # the body's tail probability where the exponential tail takes over, so the
        # two join without a step
        self.tail_mass_ = float(self._body(np.array([self.tail_start_]))[0])
        above = t[t > self.tail_start_] - self.tail_start_
        # mean excess over the 90th percentile: the scale of an exponential tail
        self.tail_scale_ = float(max(above.mean() if len(above) else 0.0, 1e-3))

    def _body(self, t: np.ndarray) -> np.ndarray:
        """(normal frames with an excess >= t, plus 1) / (normal frames, plus 1)."""
        n = len(self.sorted_)
        return 1.0 - np.searchsorted(self.sorted_, t, side="left") / (n + 1.0)

    def _anomaly_score(self, x):
        t = self._excess(x)
        # -log10 p: empirical up to the 90th percentile, an exponential tail above it
        # (in logs, so that no excess is too large to score)
        tail = -np.log10(self.tail_mass_) + (t - self.tail_start_) / (
            self.tail_scale_ * np.log(10.0)
        )
        score = np.where(t > self.tail_start_, tail, -np.log10(self._body(t)))
        # a continuous tie-break for frames in one step of the empirical body
        return score + 1e-9 * t
