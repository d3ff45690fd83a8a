"""Faults of the readout, not of the sky: a block of pixels that reads its baseline.

A PANOSETI quabo is read by four MAROC chips, each of one 8 x 8 quarter of the sensor.
A dead chip, a dead row or column of the readout, or a board whose baseline has jumped,
leaves a frame whose shower (if any) looks ordinary but whose *quiet* pixels do not:
a whole group of them sits at 0 ADC (the baseline, after subtraction) while the rest of
the frame reads the night sky's pedestal. A detector that scores a frame by its worst
pixels, or by a mean residual over 256 pixels, averages such a group away or sees it
only when the frame is otherwise dark. This one looks at groups directly.

:class:`ReadoutFaults` counts, in each row, column and 8 x 8 quarter of a frame, the
pixels that read the baseline (within ``window`` ADC of 0). Night-sky pixels of a working
readout sit at their pedestal, a dozen ADC above 0 with a noise of a few counts, and
shower pixels far above it, so a working group holds a pixel or two near 0 at most;
a dead group holds nearly all of its pixels there. From normal frames the detector
learns how often a pixel reads near 0 (``p_near_``); a group's evidence is the
binomial tail probability of its count, and the frame's score is the largest
-log10 of it over its 36 groups. A second term scores the frame's median against
the normal frames' (a pedestal jump or a "speckled" frame moves it; a slow drift with
the sky's brightness is tolerated), as -log10 of a two-sided normal tail probability,
so both terms are on one scale; the score is the larger of the two.
"""

from __future__ import annotations

import numpy as np

from .base import Detector, adc_frames

__all__ = ["ReadoutFaults", "group_counts", "GROUP_SIZES"]

_SIDE = 16


def group_counts(images: np.ndarray, window: float) -> tuple[np.ndarray, np.ndarray]:
    """(frame median (n,), pixels within ``window`` of 0 in each group (n, 36)).

    Groups, in order: the 16 rows, the 16 columns (16 pixels each), the four 8 x 8
    quarters (64 pixels: top left, top right, bottom left, bottom right).
    """
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 4:
        x = x[:, 0]
    if x.ndim != 3 or x.shape[1:] != (_SIDE, _SIDE):
        raise ValueError(f"frames must have shape (N, 16, 16), got {x.shape}")
    n = len(x)
    frame = np.median(x.reshape(n, -1), axis=1)
    near = np.abs(x) <= window
    rows = near.sum(axis=2)
    cols = near.sum(axis=1)
    quarters = near.reshape(n, 2, 8, 2, 8).sum(axis=(2, 4)).reshape(n, 4)
    return frame, np.concatenate([rows, cols, quarters], axis=1)


#: pixels in each of the 36 groups of :func:`group_counts`
GROUP_SIZES = np.r_[np.full(32, 16), np.full(4, 64)]


class ReadoutFaults(Detector):
    """Dead rows, columns and MAROC quarters, and pedestal jumps (module docstring).

    ``window`` (ADC): a pixel within this of 0 reads the baseline (a dead channel
    reads it to within the ADC's own noise of a count or two). ``min_p``: the
    smallest rate of such pixels assumed for a working readout (simulated frames put
    4.5 % of pixels within 2 ADC of 0; real pixels with low pedestals get there more
    often). Both were set on the 84 ordinary real frames of ``../shared/data/panoseti``:
    with a 4 ADC window 4 of them (4.8 %) scored above the 1 % threshold set on
    simulated frames; with these defaults 0 or 1 of them, depending on the simulated
    frames it was trained and thresholded on (chapter 9).
    ``level_tolerance``: the fraction of the normal frames' median pedestal by which
    a frame's median may drift before it counts (it sets the level term's scale when
    that is wider than the normal frames' own spread). Frames in ADC, baseline
    subtracted, 16 x 16 (``transform``, if given, is undone first, as for
    :class:`~phbook.detectors.HillasCut`).
    """

    def __init__(
        self,
        window: float = 2.0,
        min_p: float = 0.05,
        level_tolerance: float = 0.25,
        transform=None,
        contamination: float = 0.01,
    ):
        super().__init__(contamination)
        self.window = window
        self.min_p = min_p
        self.level_tolerance = level_tolerance
        self.transform = transform

    def _fit(self, x):
        from scipy.stats import binom

        if not self.window > 0:
            raise ValueError(f"window must be positive, got {self.window}")
        if not 0 < self.min_p < 1:
            raise ValueError(f"min_p must lie in (0, 1), got {self.min_p}")
        if not self.level_tolerance >= 0:
            raise ValueError(
                f"level_tolerance must be 0 or more, got {self.level_tolerance}"
            )
        frame, counts = group_counts(adc_frames(x, self.transform), self.window)
        rate = counts[:, :32].sum() / (32 * 16 * len(counts))
        self.p_near_ = float(max(rate, self.min_p))
        # -log10 P(count >= k) for k = 0..64, for groups of 16 and of 64 pixels
        k = np.arange(65)
        self.log_tail_ = np.stack(
            [-binom.logsf(k - 1, size, self.p_near_) / np.log(10) for size in (16, 64)]
        )
        self.median_ = float(np.median(frame))
        mad = float(np.median(np.abs(frame - self.median_)))
        # the pedestal follows the sky's brightness through a night (the real sample's
        # frame medians: 13 to 22 ADC, p10 to p90), so drifts of a quarter of it are
        # tolerated; a jump of tens of ADC, or a speckled frame, is not
        self.median_scale_ = max(
            1.4826 * mad, self.level_tolerance * abs(self.median_), 1.0
        )

    def _anomaly_score(self, x):
        from scipy.stats import norm

        frame, counts = group_counts(adc_frames(x, self.transform), self.window)
        which = (GROUP_SIZES == 64).astype(int)
        groups = self.log_tail_[which[None, :], counts].max(axis=1)
        z = np.abs(frame - self.median_) / self.median_scale_
        level = -(np.log(2.0) + norm.logsf(z)) / np.log(10)
        return np.maximum(groups, level)
