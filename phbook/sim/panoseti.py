"""A physically grounded, vectorised simulator of PANOSETI pulse-height (PH) frames.

A PANOSETI module images about 10 x 10 degrees of sky on 32 x 32 silicon photomultiplier
pixels of 0.3125 deg, read out by four *quabos* of 16 x 16 pixels. In pulse-height mode a
quabo records one 16 x 16 frame of peak pulse heights whenever one of its pixels exceeds a
threshold in photoelectrons (PE). Most triggers are Cherenkov flashes of cosmic-ray air
showers. This module simulates them step by step, in PE first and then in ADC:

1. **Air showers** as Hillas ellipses: a 2-D Gaussian light distribution of total *size*
   (PE, power-law spectrum), *length* and *width* (deg), orientation and centroid anywhere
   on or near the module, so that many showers are cut by the quabo edge.
2. **Night-sky background** (NSB): Poisson photoelectrons in every pixel.
3. **Photo-detection and electronics**: Poisson statistics of the signal, single-PE gain
   spread, ADC gain (ADC per PE), the positive *pedestal* of peak detection (the maximum of
   a noisy waveform sits above its baseline), Gaussian electronic noise.
4. **Baseline subtraction and saturation**: the 12-bit ADC saturates at 4095 counts
   before the on-board baseline (about 720 ADC per pixel) is subtracted, so bright pixels
   clip near 3300-3400 ADC; results are signed int16.
5. **The trigger**: a frame exists only if a pixel exceeds the PE threshold (optionally 2
   or 3 neighbouring pixels, the next-neighbour logic of Cherenkov telescopes).

The defaults of :class:`Instrument` and :class:`ShowerPopulation` are a fit to the real
88-frame sample (:mod:`phbook.sim.calibration`, judged by :mod:`phbook.yardstick`),
stored beside this module in ``panoseti_calibrated.json``. Real-run settings are
available too: thresholds from 1.5 to 15 PE, per-pixel baselines from a
``quabo_ph_baseline`` JSON file, per-quabo pedestal offsets and gains, and a slow
pedestal drift. Rare **anomaly classes**, each with a *strength* in
[0, 1] from faint (hard to see) to bright, are simulated for evaluation:

``speckled``       whole-quabo granular frames (an instrumental artifact seen in real data)
``hot_pixel``      one pixel firing on its own (a noisy or light-leaking pixel)
``dead_pixels``    pixels stuck at a constant value, in an ordinary shower frame
``point_source``   a compact optical pulse with the shape of the point-spread function
                   (the signal optical SETI looks for)
``streak``         a straight line of light (meteor, satellite glint, aircraft)
``muon_arc``       part of a muon's Cherenkov ring (radius about 1.2 deg)
``pileup``         two showers in the same frame

and four failure modes of the data acquisition, not in the default mix:

``dead_maroc``     a MAROC readout chip (64 channels) reads its baseline: from 16 of
                   its channels (faint) to all 64, in readout order, placed by the
                   board's channel-to-pixel map (:mod:`phbook.sim.maroc`)
``dead_line``      a dead row or column segment, 4 (faint) to 16 pixels long
``pedestal_jump``  a frame recorded after the pedestal of its quabo jumped by 15 (faint)
                   to 300 ADC
``stuck_frame``    1 (faint) to 4 chips' pixels repeat the values of an earlier frame
                   (at strength 1 the whole frame is a repeat, which no single-frame
                   detector can see)

All frames are simulated, not observed; the data chapter compares them with real frames.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import erf

from . import _ph_kernels as _kernels
from . import maroc as _maroc
from . import night_sky
from .baselines import BASELINE_RANGE, read_baselines

#: Bumped whenever the frames of a seed change, so that cached datasets are rebuilt
#: (4: the same distributions as 3, its random numbers drawn in another order).
SIMULATOR_VERSION = 4
PIXEL_DEG = 0.3125  #: angular size of a pixel (deg)
QUABO_PIX = 16  #: a quabo is 16 x 16 pixels
MODULE_PIX = 32  #: a module is 2 x 2 quabos
NORMAL = "normal"
ANOMALY_CLASSES = (
    "speckled",
    "hot_pixel",
    "dead_pixels",
    "point_source",
    "streak",
    "muon_arc",
    "pileup",
)
#: Failure modes of the data acquisition seen in real runs, also labelled classes with a
#: strength; not in the default mix of :func:`simulate` (ask for them by name).
DAQ_FAILURE_CLASSES = (
    "dead_maroc",
    "dead_line",
    "pedestal_jump",
    "stuck_frame",
)
ALL_CLASSES = ANOMALY_CLASSES + DAQ_FAILURE_CLASSES

__all__ = [
    "SIMULATOR_VERSION",
    "PIXEL_DEG",
    "QUABO_PIX",
    "MODULE_PIX",
    "NORMAL",
    "ANOMALY_CLASSES",
    "DAQ_FAILURE_CLASSES",
    "ALL_CLASSES",
    "CALIBRATED_FILE",
    "PE_THRESHOLD_RANGE",
    "read_baselines",
    "Instrument",
    "ShowerPopulation",
    "PHFrames",
    "simulate",
    "simulate_normal",
    "simulate_anomalies",
    "quabo_offset",
    "shower_pe",
    "digitize",
    "triggered",
]


#: The calibrated defaults: the fit of the free parameters to the 88 real frames of
#: module 254 (``phbook.sim.calibration.fit_default()`` remakes this file).
CALIBRATED_FILE = Path(__file__).with_name("panoseti_calibrated.json")


# a stripped install without the file falls back to the literal defaults
_CAL = json.loads(CALIBRATED_FILE.read_text()) if CALIBRATED_FILE.exists() else {}


def _cal(group: str, key: str, default):
    value = _CAL.get(group, {}).get(key, default)
    return tuple(value) if isinstance(value, list) else value


#: Trigger thresholds (PE) the simulator accepts: below one photoelectron every pixel
#: fires on noise; PANOSETI runs use 1.5-15 PE.
PE_THRESHOLD_RANGE = (1.0, 100.0)


@dataclass(frozen=True)
class Instrument:
    """Detector and electronics of one module; defaults fitted to the real sample.

    Besides the shared electronics, the settings of real runs: per-quabo pedestal
    offsets (ADC; tens of ADC when on-board baseline subtraction is stale or off), a
    slow pedestal drift over a run (ADC from its first to its last frame), relative
    gains of the four quabos, and per-pixel baselines read from a
    ``quabo_ph_baseline`` JSON file (``baseline_file``; its quabos ``baseline_quabos``).
    Values outside the physical range raise ``ValueError``.
    """

    adc_per_pe: float = _cal("instrument", "adc_per_pe", 16.0)  #: ADC per photoelectron
    pe_threshold: float = _cal(
        "instrument", "pe_threshold", 11.5
    )  #: trigger threshold (PE)
    trigger_pixels: int = 1  #: 1, 2 or 3 neighbouring pixels above threshold
    nsb_pe: float = _cal("instrument", "nsb_pe", 0.28)  #: night-sky PE per pixel per frame
    #: mean bias of peak detection above the baseline (ADC)
    pedestal_adc: float = _cal("instrument", "pedestal_adc", 14.0)
    noise_adc: float = _cal("instrument", "noise_adc", 8.2)  #: electronic noise sd (ADC)
    spe_resolution: float = 0.4  #: relative spread of the single-PE charge
    pixel_offset_adc: float = 2.0  #: spread of per-pixel residual baseline offsets (ADC)
    baseline_adc: float = 720.0  #: mean on-board baseline (ADC)
    baseline_spread_adc: float = 25.0  #: pixel-to-pixel spread of the baseline (ADC)
    adc_max: int = 4095  #: 12-bit ADC ceiling, before baseline subtraction
    #: pedestal offset of each quabo (ADC), added to every pixel it records
    quabo_pedestal_adc: tuple[float, float, float, float] = _cal(
        "instrument", "quabo_pedestal_adc", (0.0, 0.0, 0.0, 0.0)
    )
    #: relative response (gain x photo-detection efficiency) of each quabo
    quabo_gain: tuple[float, float, float, float] = _cal(
        "instrument", "quabo_gain", (1.0, 1.0, 1.0, 1.0)
    )
    #: relative spread of the trigger threshold against the recorded pulse height (the
    #: discriminator sees the fast-shaped pulse, the ADC the slow-shaped one): a frame
    #: whose brightest pixel records x ADC triggers with probability
    #: Phi((x - threshold) / (spread * threshold)); 0 is a sharp threshold
    trigger_spread: float = _cal("instrument", "trigger_spread", 0.0)
    #: slow pedestal drift over a run: ADC added to the last frame (linear in time)
    pedestal_drift_adc: float = 0.0
    #: a ``quabo_ph_baseline`` JSON file of per-pixel baselines (ADC), or None
    baseline_file: str | None = None
    baseline_quabos: tuple[int, int, int, int] = (0, 1, 2, 3)  #: its quabos to use

    def __post_init__(self):
        if self.trigger_pixels not in (1, 2, 3):
            raise ValueError(f"trigger_pixels must be 1, 2 or 3, got {self.trigger_pixels}")
        lo, hi = PE_THRESHOLD_RANGE
        if not lo <= self.pe_threshold <= hi:
            raise ValueError(
                f"pe_threshold {self.pe_threshold} PE is outside the physical range "
                f"[{lo}, {hi}] PE"
            )
        if self.adc_per_pe <= 0:
            raise ValueError(f"adc_per_pe must be positive, got {self.adc_per_pe}")
        if not 0 <= self.trigger_spread <= 0.3:
            raise ValueError(
                f"trigger_spread must lie in [0, 0.3], got {self.trigger_spread}"
            )
        for name in ("nsb_pe", "noise_adc", "spe_resolution", "pixel_offset_adc"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        if not BASELINE_RANGE[0] < self.baseline_adc < BASELINE_RANGE[1]:
            raise ValueError(
                f"baseline_adc {self.baseline_adc} is outside the ADC range "
                f"{BASELINE_RANGE}"
            )
        if len(self.quabo_pedestal_adc) != 4 or len(self.quabo_gain) != 4:
            raise ValueError("quabo_pedestal_adc and quabo_gain need 4 values (quabos 0-3)")
        if any(g <= 0 for g in self.quabo_gain):
            raise ValueError(f"quabo_gain must be positive, got {self.quabo_gain}")
        object.__setattr__(
            self, "quabo_pedestal_adc", tuple(map(float, self.quabo_pedestal_adc))
        )
        object.__setattr__(self, "quabo_gain", tuple(map(float, self.quabo_gain)))
        object.__setattr__(self, "baseline_quabos", tuple(map(int, self.baseline_quabos)))
        if self.baseline_file is not None:
            object.__setattr__(self, "baseline_file", str(self.baseline_file))
            read_baselines(self.baseline_file, self.baseline_quabos)  # fail early

    @property
    def threshold_adc(self) -> float:
        """The trigger threshold in ADC counts above the baseline."""
        return self.pe_threshold * self.adc_per_pe


@dataclass(frozen=True)
class ShowerPopulation:
    """The population of Cherenkov air-shower images (before the trigger).

    Intrinsic lengths and widths are larger than the measured Hillas values because
    cleaning removes the faint tails. The defaults are the fit to the 88 real frames
    (:mod:`phbook.sim.calibration`): simulated frames, cleaned and measured by
    :mod:`phbook.yardstick`, reproduce the real frames' size, length, width and pixel
    count quantiles.
    """

    #: differential spectral index of the size (PE), dN/dS ~ S^-index
    size_index: float = _cal("population", "size_index", 2.3)
    #: smallest simulated size (PE); fainter showers never trigger
    size_min_pe: float = _cal("population", "size_min_pe", 40.0)
    size_max_pe: float = _cal("population", "size_max_pe", 2.0e4)
    #: median intrinsic length (deg) at size 100 PE
    length_deg: float = _cal("population", "length_deg", 0.55)
    #: log-normal spread of the length
    length_log_sigma: float = _cal("population", "length_log_sigma", 0.35)
    #: length grows as size**slope
    length_size_slope: float = _cal("population", "length_size_slope", 0.12)
    #: width / length at size 100 PE, uniform range
    width_ratio: tuple[float, float] = _cal("population", "width_ratio", (0.4, 0.8))
    #: width grows as size**slope (None: as the length)
    width_size_slope: float | None = _cal("population", "width_size_slope", None)
    #: centroids uniform within +-this of the module centre
    field_half_width_deg: float = _cal("population", "field_half_width_deg", 6.5)

    def __post_init__(self):
        if not 0 < self.size_min_pe < self.size_max_pe:
            raise ValueError(
                f"need 0 < size_min_pe < size_max_pe, got {self.size_min_pe}, "
                f"{self.size_max_pe}"
            )
        if self.size_index <= 1:
            raise ValueError(f"size_index must exceed 1, got {self.size_index}")
        lo, hi = self.width_ratio
        if not 0 < lo <= hi:
            raise ValueError(
                f"width_ratio must satisfy 0 < lo <= hi, got {self.width_ratio}"
            )
        if self.length_deg <= 0 or self.length_log_sigma < 0:
            raise ValueError("length_deg must be positive and length_log_sigma >= 0")
        object.__setattr__(self, "width_ratio", (float(lo), float(hi)))


@dataclass
class PHFrames:
    """Simulated pulse-height frames and their truth."""

    adc: np.ndarray  #: (n, 16, 16) int16 baseline-subtracted pulse heights (ADC)
    classes: np.ndarray  #: (n,) str: "normal" or an anomaly class
    strength: np.ndarray  #: (n,) float32 anomaly strength in [0, 1]; NaN for normal frames
    quabo: np.ndarray  #: (n,) uint8: which quabo (0-3) of the module recorded the frame

    def __len__(self) -> int:
        return len(self.adc)

    def __getitem__(self, idx) -> PHFrames:
        return PHFrames(
            self.adc[idx], self.classes[idx], self.strength[idx], self.quabo[idx]
        )

    @staticmethod
    def concatenate(parts: list[PHFrames]) -> PHFrames:
        return PHFrames(
            np.concatenate([p.adc for p in parts]),
            np.concatenate([p.classes for p in parts]),
            np.concatenate([p.strength for p in parts]),
            np.concatenate([p.quabo for p in parts]),
        )


# --------------------------------------------------------------------------- geometry


def quabo_offset(quabo) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) offset in module pixels of quabo 0-3: 0 1 on the top row, 2 3 below.

    This layout is this package's convention; a real module's quabo placement is recorded
    in its configuration.
    """
    q = np.asarray(quabo)
    if np.any((q < 0) | (q > 3)):
        raise ValueError("quabo numbers must be 0-3")
    return (q // 2) * QUABO_PIX, (q % 2) * QUABO_PIX


_PIX = np.arange(QUABO_PIX, dtype=np.float32) + 0.5  # pixel centres, in pixels
_BOX_VAR = np.float32(1.0 / 12.0)  # variance of a uniform pixel: integrates the light


#: Ellipses narrower than this (pixels) are integrated over pixels with 2 x 2 samples.
_FINE_SIGMA = 0.55
_SUB_BOX_VAR = np.float32(1.0 / 48.0)  # variance of a uniform half-pixel


def _gaussian_ellipse(cy, cx, sig_l, sig_w, psi, total, offset_r=0.0, offset_c=0.0):
    """PE expected in each quabo pixel from 2-D Gaussians, (n,) parameters -> (n, 16, 16).

    ``cy, cx`` are centroids in the coordinates of a grid whose pixel (0, 0) starts at
    (offset_r, offset_c). The light is integrated over each pixel: the Gaussian is
    convolved with the pixel (approximated by adding the pixel's variance, 1/12, to both
    axes) and sampled at pixel centres, which is within 2 % of the exact pixel integral
    for spots wider than 0.55 pixel. Narrower spots are sampled 2 x 2 times per pixel
    with the half-pixel variance (1/48) instead, exact to about 1e-3. Each ellipse is
    evaluated only within 4 standard deviations of its centre (> 99.9 % of its light).
    """
    f64 = np.float64
    n = np.shape(total)[0]
    sig_l = np.asarray(sig_l, f64).reshape(n)
    sig_w = np.asarray(sig_w, f64).reshape(n)
    fine = np.minimum(sig_l, sig_w) < _FINE_SIGMA
    box = np.where(fine, float(_SUB_BOX_VAR), float(_BOX_VAR))
    sl2 = sig_l**2 + box
    sw2 = sig_w**2 + box
    psi = np.asarray(psi, f64).reshape(n)
    ly = np.asarray(cy, f64).reshape(n) - np.broadcast_to(np.asarray(offset_r, f64), (n,))
    lx = np.asarray(cx, f64).reshape(n) - np.broadcast_to(np.asarray(offset_c, f64), (n,))
    norm = np.asarray(total, f64).reshape(n) / (2 * np.pi) / np.sqrt(sl2 * sw2)
    norm = np.where(fine, norm / 4, norm)  # four samples per pixel
    out = np.zeros((n, QUABO_PIX, QUABO_PIX), np.float32)
    _kernels.render_ellipses(ly, lx, sl2, sw2, np.cos(psi), np.sin(psi), norm, fine, out)
    return out


def _sample_showers(n: int, rng: np.random.Generator, pop: ShowerPopulation) -> dict:
    """``n`` shower parameters: size (PE), length, width (px), psi, centroid (module px)."""
    a = 1.0 - pop.size_index
    lo, hi = pop.size_min_pe**a, pop.size_max_pe**a
    size = (lo + rng.random(n) * (hi - lo)) ** (1.0 / a)
    length_px = (pop.length_deg / PIXEL_DEG) * (size / 100.0) ** pop.length_size_slope
    length_px = length_px * np.exp(pop.length_log_sigma * rng.standard_normal(n))
    width_px = length_px * rng.uniform(*pop.width_ratio, n)
    if pop.width_size_slope is not None:
        width_px *= (size / 100.0) ** (pop.width_size_slope - pop.length_size_slope)
    half = pop.field_half_width_deg / PIXEL_DEG
    centre = MODULE_PIX / 2
    return {
        "size": size.astype(np.float32),
        "length": length_px.astype(np.float32),
        "width": width_px.astype(np.float32),
        "psi": rng.uniform(0, np.pi, n).astype(np.float32),
        "cy": (centre + rng.uniform(-half, half, n)).astype(np.float32),
        "cx": (centre + rng.uniform(-half, half, n)).astype(np.float32),
    }


def shower_pe(params: dict, quabo, inst: Instrument | None = None) -> np.ndarray:
    """Expected shower PE in each pixel of the given quabo(s): (n, 16, 16) float32.

    With ``inst``, each quabo's light is scaled by its relative gain ``quabo_gain``.
    """
    q = np.broadcast_to(np.asarray(quabo), params["size"].shape)
    row0, col0 = quabo_offset(q)
    total = params["size"]
    if inst is not None and inst.quabo_gain != (1.0, 1.0, 1.0, 1.0):
        total = total * np.asarray(inst.quabo_gain, np.float32)[q]
    return _gaussian_ellipse(
        params["cy"],
        params["cx"],
        params["length"],
        params["width"],
        params["psi"],
        total,
        row0,
        col0,
    )


# ------------------------------------------------------------------------ electronics


@lru_cache(maxsize=16)
def _fixed_pattern(inst: Instrument, seed: int = 20240725) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel baselines and residual offsets of the 4 quabos: (4, 16, 16) each.

    Fixed for an instrument (the same seed every call), like a real module's calibration.
    """
    rng = np.random.default_rng(seed)
    baseline = np.rint(
        inst.baseline_adc + inst.baseline_spread_adc * rng.standard_normal((4, 16, 16))
    )
    if inst.baseline_file is not None:
        baseline = read_baselines(inst.baseline_file, inst.baseline_quabos)
    offset = inst.pixel_offset_adc * rng.standard_normal((4, 16, 16))
    return baseline.astype(np.float32), offset.astype(np.float32)


def _normal(shape, rng: np.random.Generator) -> np.ndarray:
    """Standard normal float32 draws, from torch's faster generator seeded by ``rng``."""
    import torch

    gen = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
    out = torch.empty(shape, dtype=torch.float32)
    out.normal_(generator=gen)
    return out.numpy()


def _pixel_charge(
    counts: np.ndarray, inst: Instrument, rng: np.random.Generator
) -> np.ndarray:
    """ADC (before pedestal and offsets) of pixels with ``counts`` photoelectrons."""
    f32 = np.float32
    sigma = np.sqrt(
        f32(inst.noise_adc**2) + f32((inst.adc_per_pe * inst.spe_resolution) ** 2) * counts
    )
    return f32(inst.adc_per_pe) * counts + sigma * _normal(counts.shape, rng)


@lru_cache(maxsize=16)
def _quabo_terms(inst: Instrument) -> tuple[np.ndarray, np.ndarray]:
    """Per quabo: pedestal plus pixel offsets, and the ADC ceiling; (4, 16, 16) each."""
    baseline, offset = _fixed_pattern(inst)
    quabo = np.asarray(inst.quabo_pedestal_adc, np.float32)[:, None, None]
    pedestal = offset + np.float32(inst.pedestal_adc) + quabo
    return pedestal.astype(np.float32), np.float32(inst.adc_max) - baseline


@lru_cache(maxsize=16)
def _exceed_probability(inst: Instrument) -> np.ndarray:
    """P(a dark pixel records a value above the trigger threshold), (4, 256) float64."""
    pedestal, _ = _quabo_terms(inst)
    cut = np.floor(inst.threshold_adc) + 0.5
    return night_sky.dark_pixel_sf(cut - pedestal.reshape(4, 256).astype(np.float64), inst)


@lru_cache(maxsize=16)
def _soft_trigger_tables(inst: Instrument, target_adc: float, spread_adc: float):
    """:func:`night_sky.soft_trigger_tables` for ``inst``'s pedestals (cached)."""
    pedestal, ceiling = _quabo_terms(inst)
    return night_sky.soft_trigger_tables(inst, pedestal, ceiling, target_adc, spread_adc)


def _digitize(pe, quabo, inst, rng, hot_adc=None, skip_untriggered=False, soft=None):
    """Run the compiled digitiser over ``pe`` (n, 16, 16).

    Returns (adc, index of kept frames, decided): with ``soft`` = (threshold ADC,
    spread ADC), ``inst`` holding the lower threshold down to which frames are
    digitised, the kernel keeps frames by the soft trigger and ``decided`` says which
    frames it decided; the others (kept by a dark pixel above ``inst``'s threshold)
    are left to the caller.
    """
    n = len(pe)
    pe = np.ascontiguousarray(pe, np.float32).reshape(n, 256)
    q = np.broadcast_to(np.asarray(quabo, np.int64).reshape(-1), (n,))
    q = np.ascontiguousarray(q)
    hot = (
        np.ascontiguousarray(hot_adc, np.float32).reshape(n, 256)
        if hot_adc is not None
        else np.zeros((1, 1), np.float32)
    )
    pedestal, ceiling = _quabo_terms(inst)
    table = night_sky.background_quantiles(inst)
    p_exceed = _exceed_probability(inst)
    if soft is not None:
        soft_accept, log_none, x0, dx, log_sf = _soft_trigger_tables(inst, *soft)
    else:
        soft_accept, log_none = np.zeros(0), np.zeros((4, 1))
        x0, dx, log_sf = 0.0, 1.0, np.zeros(1)
    out = np.empty((n, 256), np.float32)
    keep = np.empty(n, np.int32)
    decided = np.empty(n, np.bool_)
    size = n // 8 + 512
    tail_row = np.empty(size, np.int32)
    tail_pix = np.empty(size, np.int32)
    tail_t = np.empty(size, np.float64)
    tail_extra = np.empty(size, np.float64)
    used = np.zeros(4, np.int64)
    done, kept = 0, 0
    gain = float(inst.adc_per_pe)
    spe2 = float((inst.adc_per_pe * inst.spe_resolution) ** 2)
    draws = _kernels.DrawBuffers(rng, _normal)
    while done < n:
        k, n_tail, processed = _kernels.digitize(
            pe[done:],
            q[done:],
            hot[done:] if hot_adc is not None else hot,
            *draws.views(),
            int(rng.integers(2**31 - 1)),
            table,
            pedestal.reshape(4, 256),
            ceiling.reshape(4, 256),
            p_exceed,
            np.log1p(-p_exceed),
            float(inst.threshold_adc),
            gain,
            spe2,
            1e-2,
            skip_untriggered,
            soft_accept,
            log_none,
            x0,
            dx,
            log_sf,
            out[kept:],
            tail_row,
            tail_pix,
            tail_t,
            tail_extra,
            keep[kept:],
            decided[kept:],
            used,
        )
        draws.consume(used)
        if n_tail:
            rows = tail_row[:n_tail] + kept
            pix = tail_pix[:n_tail]
            charge = night_sky.background_tail(tail_t[:n_tail], inst, rng)
            qq = q[done + keep[rows]]
            value = np.minimum(
                charge + tail_extra[:n_tail] + pedestal.reshape(4, 256)[qq, pix],
                ceiling.reshape(4, 256)[qq, pix],
            )
            out[rows, pix] = np.floor(value + 0.5)
        keep[kept : kept + k] += done
        kept += k
        done += processed
    return out[:kept].reshape(kept, 16, 16), keep[:kept], decided[:kept]


def digitize(
    pe: np.ndarray,
    quabo,
    inst: Instrument,
    rng: np.random.Generator,
    hot_adc: np.ndarray | None = None,
) -> np.ndarray:
    """Expected signal PE (n, 16, 16) -> baseline-subtracted pulse heights (ADC).

    Every pixel's charge is electronic noise plus one Gaussian pulse (the single-PE
    resolution) per photoelectron: its noise-and-sky part comes from the exact
    distribution of a dark pixel (an inverse-CDF table, exact draws beyond its last
    bin), and pixels expecting more than 0.01 signal PE add Poisson(signal)
    photoelectrons (the sum is Poisson(signal + sky) photoelectrons, as it must be).
    Then the peak-detection pedestal and per-pixel offsets
    are added, the value is clipped at the ADC ceiling (4095 before baseline subtraction)
    and rounded: the ADC records integers, returned as float32. ``hot_adc`` (n, 16, 16),
    if given, adds a pixel-level excess in ADC before clipping.
    """
    adc, _, _ = _digitize(pe, quabo, inst, rng, hot_adc)
    return adc


_NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def triggered(adc: np.ndarray, inst: Instrument) -> np.ndarray:
    """Which frames trigger: (n,) bool.

    With ``trigger_pixels`` k > 1 a frame needs a pixel above threshold with at least
    k - 1 of its 8 neighbours also above threshold, i.e. a connected group of k pixels.
    """
    above = adc > inst.threshold_adc
    if inst.trigger_pixels == 1:
        return above.any(axis=(1, 2))
    padded = np.pad(above, ((0, 0), (1, 1), (1, 1)))
    count = np.zeros(above.shape, dtype=np.int8)
    for dr, dc in _NEIGHBOURS:
        count += padded[:, 1 + dr : 17 + dr, 1 + dc : 17 + dc]
    return (above & (count >= inst.trigger_pixels - 1)).any(axis=(1, 2))


def _to_int16(adc: np.ndarray) -> np.ndarray:
    """Round to integer ADC counts (the values lie far inside the int16 range)."""
    return np.rint(adc).astype(np.int16)


# ------------------------------------------------------------------------ normal frames


def simulate_normal(
    n: int,
    rng: np.random.Generator,
    inst: Instrument,
    pop: ShowerPopulation,
    batch: int = 16384,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` triggered shower frames: (adc (n, 16, 16) int16, quabo (n,) uint8), shuffled.

    Showers are thrown on the module; each of the four quabos whose pixels see light is
    digitised and kept if it triggers, so a shower crossing a quabo boundary can give two
    frames, each cut at the edge, as in real data.
    """
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative whole number, got {n}")
    if n == 0:
        return np.zeros((0, 16, 16), np.int16), np.zeros(0, np.uint8)
    out_adc, out_q, have = [], [], 0
    soft = inst.trigger_spread > 0
    if soft:  # digitise down to 3 spreads below threshold, then accept softly
        from scipy.special import ndtr

        target = inst
        low = max(PE_THRESHOLD_RANGE[0], inst.pe_threshold * (1 - 3 * inst.trigger_spread))
        inst = replace(inst, pe_threshold=low, trigger_spread=0.0)
        soft_terms = (target.threshold_adc, target.trigger_spread * target.threshold_adc)
    else:
        soft_terms = None
    # PE a pixel needs to have any real chance to trigger: well below threshold
    # (frames whose brightest pixel expects less trigger in ~0.1 % of cases or fewer).
    reach = 0.3 * inst.pe_threshold
    showers, thrown = min(batch, max(1024, n + n // 4)), 0
    while have < n:
        if thrown:  # size the next batch by the frames per shower seen so far
            per_shower = max(have / thrown, 1e-3)
            showers = int(min(batch, max(1024, 1.1 * (n - have) / per_shower)))
        thrown += showers
        p = _sample_showers(showers, rng, pop)
        # Upper bound of the PE any pixel of a quabo receives: the ellipse's peak,
        # attenuated along its major axis by the centroid's distance to the quabo.
        major2 = p["length"] ** 2 + _BOX_VAR
        peak = p["size"] / (2 * np.pi * np.sqrt(major2 * (p["width"] ** 2 + _BOX_VAR)))
        quabos, idx = [], []
        for q in range(4):
            r0, c0 = quabo_offset(q)
            dr = np.maximum(np.maximum(r0 + 0.5 - p["cy"], p["cy"] - (r0 + 15.5)), 0)
            dc = np.maximum(np.maximum(c0 + 0.5 - p["cx"], p["cx"] - (c0 + 15.5)), 0)
            bound = peak * np.exp(-0.5 * (dr * dr + dc * dc) / major2)
            cand = np.nonzero(bound > reach)[0]
            idx.append(cand)
            quabos.append(np.full(len(cand), q, np.uint8))
        idx = np.concatenate(idx)
        qs = np.concatenate(quabos)
        if len(idx) == 0:
            continue
        pe = shower_pe({k: v[idx] for k, v in p.items()}, qs, inst)
        adc, kept, decided = _digitize(
            pe, qs, inst, rng, skip_untriggered=True, soft=soft_terms
        )
        trig = triggered(adc, inst)
        if soft and not decided.all():  # kept by a dark pixel: decided here
            thr = target.threshold_adc
            top = adc[~decided].max(axis=(1, 2))
            p_trig = ndtr((top - thr) / (target.trigger_spread * thr))
            trig[~decided] &= rng.random(len(top)) < p_trig
        out_adc.append(_to_int16(adc[trig]))
        out_q.append(qs[kept][trig])
        have += int(trig.sum())
    adc = np.concatenate(out_adc)
    q = np.concatenate(out_q)
    order = rng.permutation(len(adc))[:n]
    return adc[order], q[order]


# --------------------------------------------------------------------- anomaly classes


def _log_interp(s, lo, hi):
    return lo * (hi / lo) ** np.asarray(s)


def _line_pe(n, rng, y0, x0, angle, length, width, pe_per_px, arc=None):
    """PE of straight segments (or circular arcs when ``arc`` is given) on the quabo grid.

    Built by summing small Gaussians along the curve (one per 0.5 px at most), integrated
    over pixels with 2 x 2 sub-pixel samples as in the shower images.
    """
    steps = 41
    t = np.linspace(-0.5, 0.5, steps, dtype=np.float32)[None, :]
    if arc is None:
        ys = y0[:, None] + np.sin(angle)[:, None] * length[:, None] * t
        xs = x0[:, None] + np.cos(angle)[:, None] * length[:, None] * t
        seg = length / (steps - 1)
    else:
        radius, extent = arc
        phi = angle[:, None] + extent[:, None] * t
        ys = y0[:, None] + radius[:, None] * np.sin(phi)
        xs = x0[:, None] + radius[:, None] * np.cos(phi)
        seg = radius * extent / (steps - 1)
    sub = (np.arange(2 * QUABO_PIX, dtype=np.float32) + 0.5) / 2  # sub-pixel centres
    w2 = (width**2 + _SUB_BOX_VAR)[:, None, None, None]
    out = np.zeros((n, 2 * QUABO_PIX, 2 * QUABO_PIX), np.float32)
    for k in range(steps):  # accumulate one point at a time: bounded memory
        dy = sub[None, :, None] - ys[:, k, None, None]
        dx = sub[None, None, :] - xs[:, k, None, None]
        amp = (pe_per_px * seg)[:, None, None] / (8 * np.pi * w2[:, :, :, 0])
        out += amp * np.exp(-0.5 * (dy * dy + dx * dx) / w2[:, :, :, 0])
    return out.reshape(n, QUABO_PIX, 2, QUABO_PIX, 2).sum(axis=(2, 4))


def _anomaly_pe(
    cls: str,
    s: np.ndarray,
    rng: np.random.Generator,
    inst: Instrument,
    pop: ShowerPopulation,
    quabo: np.ndarray,
) -> dict[str, Any]:
    """Expected PE maps (and pixel-level overrides) of ``len(s)`` frames of ``cls``."""
    n = len(s)
    thr = inst.pe_threshold
    f32 = np.float32
    zeros = np.zeros((n, 16, 16), f32)
    if cls == "point_source":
        # Gaussian PSF of sigma 0.35-0.5 px; the peak pixel goes from just above threshold
        # (strength 0) to 8x threshold (strength 1).
        sig = rng.uniform(0.35, 0.5, n).astype(f32)
        cy, cx = rng.uniform(1, 15, n), rng.uniform(1, 15, n)
        # fraction of the light in the central pixel of a spot centred on it
        peak_frac = erf(0.5 / (np.sqrt(2) * sig)) ** 2
        total = _log_interp(s, 1.0, 8.0) * thr / peak_frac
        pe = _gaussian_ellipse(cy, cx, sig, sig, np.zeros(n), total)
        return {"pe": pe}
    if cls == "streak":
        # Length 3 px (faint) to 20 px (crossing the quabo); light per pixel of track from
        # 0.8x to 4x threshold.
        length = (3 + 17 * s).astype(f32)
        ppx = (_log_interp(s, 0.8, 4.0) * thr).astype(f32)
        width = rng.uniform(0.3, 0.5, n).astype(f32)
        y0, x0 = rng.uniform(2, 14, n).astype(f32), rng.uniform(2, 14, n).astype(f32)
        ang = rng.uniform(0, np.pi, n).astype(f32)
        return {"pe": _line_pe(n, rng, y0, x0, ang, length, width, ppx * 2.5 * width)}
    if cls == "muon_arc":
        # Cherenkov ring of a local muon: radius 1.1-1.3 deg; arc 60-360 deg of it.
        radius = (rng.uniform(1.1, 1.3, n) / PIXEL_DEG).astype(f32)
        extent = np.deg2rad(60 + 300 * s).astype(f32)
        ppx = (_log_interp(s, 0.7, 2.5) * thr).astype(f32)
        width = rng.uniform(0.3, 0.45, n).astype(f32)
        yc, xc = rng.uniform(3, 13, n).astype(f32), rng.uniform(3, 13, n).astype(f32)
        ang = rng.uniform(0, 2 * np.pi, n).astype(f32)
        return {
            "pe": _line_pe(
                n, rng, yc, xc, ang, radius, width, ppx * 2.5 * width, arc=(radius, extent)
            )
        }
    if cls == "pileup":
        # Two showers in one quabo; the second has 15% (faint) to 100% of the first's size.
        p1 = _sample_showers(n, rng, pop)
        p2 = _sample_showers(n, rng, pop)
        r0, c0 = quabo_offset(quabo)
        for p in (p1, p2):
            p["cy"] = (r0 + rng.uniform(3, 13, n)).astype(f32)
            p["cx"] = (c0 + rng.uniform(3, 13, n)).astype(f32)
            p["size"] = np.maximum(p["size"], 3 * thr).astype(f32)
        p2["size"] = (p1["size"] * (0.15 + 0.85 * s)).astype(f32)
        return {"pe": shower_pe(p1, quabo, inst) + shower_pe(p2, quabo, inst)}
    if cls == "hot_pixel":
        # One pixel firing on its own: from 1.05x threshold to 20x threshold (ADC).
        hot = zeros.copy()
        r, c = rng.integers(0, 16, n), rng.integers(0, 16, n)
        hot[np.arange(n), r, c] = _log_interp(s, 1.05, 20.0) * inst.threshold_adc
        return {"pe": zeros, "hot_adc": hot}
    if cls in DAQ_FAILURE_CLASSES:
        return {"pe": None}
    if cls == "dead_pixels":
        # An ordinary shower frame with 1 (faint) to 40 pixels stuck at a constant value
        # near zero, scattered over the quabo.
        return {"pe": None, "dead": (1 + np.floor(39 * s**1.5)).astype(int)}
    if cls == "speckled":
        # Whole-quabo granular frame: each pixel an independent Gamma(k = 5) draw around a
        # level from 120 ADC (faint) to 1300 ADC (as in the real sample, 650-1230 ADC).
        return {"pe": zeros, "speckle": _log_interp(s, 120.0, 1300.0).astype(f32)}
    raise ValueError(f"unknown anomaly class {cls!r}; valid: {', '.join(ALL_CLASSES)}")


def _dead_reading(k: int, rng: np.random.Generator) -> np.ndarray:
    """What a dead channel records: its baseline, about zero after subtraction, with
    neither the peak-detection pedestal nor noise."""
    return rng.uniform(-3, 3, k).astype(np.float32)


def _daq_failure(cls, adc, q, s, rng, inst, pop) -> np.ndarray:
    """Apply a failure mode of strength ``s`` to ordinary frames ``adc`` (m, 16, 16)."""
    m = len(adc)
    if cls == "dead_maroc":
        chip = rng.integers(0, _maroc.N_CHIPS, m)
        n_dead = np.rint(16 + 48 * s).astype(int)
        start = rng.integers(0, _maroc.N_CHANNELS, m)
        for i in range(m):
            ch = (start[i] + np.arange(n_dead[i])) % _maroc.N_CHANNELS
            r, c = _maroc.chip_pixels(int(q[i]), int(chip[i]), ch)
            adc[i, r, c] = _dead_reading(len(r), rng)
    elif cls == "dead_line":
        length = np.rint(4 + 12 * s).astype(int)
        for i in range(m):
            line = rng.integers(0, 16)
            first = rng.integers(0, 16 - length[i] + 1)
            seg = slice(first, first + length[i])
            if rng.random() < 0.5:
                adc[i, line, seg] = _dead_reading(length[i], rng)
            else:
                adc[i, seg, line] = _dead_reading(length[i], rng)
    elif cls == "pedestal_jump":
        jump = _log_interp(s, 15.0, 300.0).astype(np.float32)
        ceiling = _quabo_terms(inst)[1][q]
        adc = np.minimum(adc + jump[:, None, None], ceiling)
    elif cls == "stuck_frame":
        earlier, _ = simulate_normal(m, rng, inst, pop)
        n_chips = np.rint(1 + 3 * s).astype(int)
        for i in range(m):
            for chip in rng.permutation(_maroc.N_CHIPS)[: n_chips[i]]:
                r, c = _maroc.chip_pixels(int(q[i]), int(chip))
                adc[i, r, c] = earlier[i, r, c]
    return adc


def simulate_anomalies(
    cls: str,
    n: int,
    rng: np.random.Generator,
    inst: Instrument,
    pop: ShowerPopulation,
    strength=(0.0, 1.0),
) -> PHFrames:
    """``n`` triggered frames of anomaly class ``cls``, strengths uniform in ``strength``.

    Frames that do not trigger are drawn again (with a new strength), as the real
    instrument would never have recorded them.
    """
    lo, hi = (
        (float(strength), float(strength))
        if np.isscalar(strength)
        else map(float, strength)
    )
    if not 0 <= lo <= hi <= 1:
        raise ValueError(f"strength must lie in [0, 1], got {strength}")
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative whole number, got {n}")
    if n == 0:
        return PHFrames(
            np.zeros((0, 16, 16), np.int16),
            np.zeros(0, str),
            np.zeros(0, np.float32),
            np.zeros(0, np.uint8),
        )
    parts_adc, parts_s, parts_q, have, tries = [], [], [], 0, 0
    while have < n:
        tries += 1
        if tries > 200:
            raise RuntimeError(f"could not simulate triggering {cls} frames at {strength}")
        m = max(64, int(1.3 * (n - have)))
        s = rng.uniform(lo, hi, m).astype(np.float32)
        q = rng.integers(0, 4, m).astype(np.uint8)
        spec = _anomaly_pe(cls, s, rng, inst, pop, q)
        if cls == "dead_pixels":
            adc, q = simulate_normal(m, rng, inst, pop)
            adc = adc.astype(np.float32)
            rows = np.arange(m)
            for i in range(int(spec["dead"].max())):
                use = spec["dead"] > i
                r, c = rng.integers(0, 16, m), rng.integers(0, 16, m)
                # A dead channel reads its baseline: about zero after subtraction, with
                # neither the peak-detection pedestal nor noise.
                adc[rows[use], r[use], c[use]] = rng.uniform(-3, 3, int(use.sum()))
        elif cls in DAQ_FAILURE_CLASSES:
            adc, q = simulate_normal(m, rng, inst, pop)
            adc = _daq_failure(cls, adc.astype(np.float32), q, s, rng, inst, pop)
        elif cls == "speckled":
            level = spec["speckle"][:, None, None]
            adc = level * rng.gamma(5.0, 1 / 5.0, (m, 16, 16)).astype(np.float32)
            adc = adc + inst.noise_adc * _normal((m, 16, 16), rng)
            adc = np.rint(np.minimum(adc, _quabo_terms(inst)[1][q]))
        else:
            adc = digitize(spec["pe"], q, inst, rng, hot_adc=spec.get("hot_adc"))
        trig = triggered(adc, inst)
        parts_adc.append(adc[trig])
        parts_s.append(s[trig])
        parts_q.append(q[trig])
        have += int(trig.sum())
    adc = np.concatenate(parts_adc)[:n]
    return PHFrames(
        _to_int16(adc),
        np.full(n, cls, dtype=object).astype(str),
        np.concatenate(parts_s)[:n],
        np.concatenate(parts_q)[:n],
    )


def simulate(
    n: int,
    *,
    seed: int | np.random.Generator | None = None,
    pe_threshold: float | None = None,
    trigger_pixels: int | None = None,
    anomaly_fraction: float = 0.0,
    anomaly_classes: tuple[str, ...] | None = None,
    strength: float | tuple[float, float] = (0.0, 1.0),
    instrument: Instrument | None = None,
    population: ShowerPopulation | None = None,
) -> PHFrames:
    """Simulate ``n`` triggered pulse-height frames of one module, in random order.

    A fraction ``anomaly_fraction`` of the frames belongs to ``anomaly_classes`` (all seven
    by default, in equal shares), with strengths uniform in ``strength``; the rest are air
    showers. ``pe_threshold`` and ``trigger_pixels``, when given, override those of
    ``instrument`` (by default the calibrated :class:`Instrument`). The failure modes
    :data:`DAQ_FAILURE_CLASSES` join the mix when named in ``anomaly_classes``. The
    instrument's ``pedestal_drift_adc`` shifts the frames' pedestal linearly over the
    run (frame order is time order); the drift is applied after the trigger.
    """
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative whole number, got {n}")
    if not 0 <= anomaly_fraction <= 1:
        raise ValueError(f"anomaly_fraction must lie in [0, 1], got {anomaly_fraction}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    inst = instrument or Instrument()
    if pe_threshold is not None:
        inst = replace(inst, pe_threshold=pe_threshold)
    if trigger_pixels is not None:
        inst = replace(inst, trigger_pixels=trigger_pixels)
    pop = population or ShowerPopulation()
    classes = tuple(anomaly_classes) if anomaly_classes is not None else ANOMALY_CLASSES
    unknown = [c for c in classes if c not in ALL_CLASSES]
    if unknown:
        raise ValueError(
            f"unknown anomaly classes {unknown}; valid: {', '.join(ALL_CLASSES)}"
        )
    twice = sorted({c for c in classes if classes.count(c) > 1})
    if twice:
        raise ValueError(f"anomaly_classes names {', '.join(twice)} more than once")
    n = int(n)
    n_anom = (
        int(rng.binomial(n, anomaly_fraction))
        if 0 < anomaly_fraction < 1
        else (n if anomaly_fraction == 1 else 0)
    )
    if n_anom and not classes:
        raise ValueError("anomaly_fraction > 0 needs at least one anomaly class")
    parts = []
    if n - n_anom:
        adc, q = simulate_normal(n - n_anom, rng, inst, pop)
        parts.append(
            PHFrames(
                adc,
                np.full(len(adc), NORMAL).astype(str),
                np.full(len(adc), np.nan, np.float32),
                q,
            )
        )
    if n_anom:
        per_class = rng.multinomial(n_anom, [1 / len(classes)] * len(classes))
        for cls, k in zip(classes, per_class, strict=False):
            if k:
                parts.append(simulate_anomalies(cls, int(k), rng, inst, pop, strength))
    if not parts:
        return PHFrames(
            np.zeros((0, 16, 16), np.int16),
            np.zeros(0, str),
            np.zeros(0, np.float32),
            np.zeros(0, np.uint8),
        )
    width = max(len(NORMAL), *map(len, ALL_CLASSES))
    if len(parts) == 1 and not n_anom:  # normal frames only: already shuffled
        frames = parts[0]
    else:
        frames = PHFrames.concatenate(parts)
        frames = frames[rng.permutation(len(frames))]
    frames.classes = frames.classes.astype(f"<U{width}")
    if inst.pedestal_drift_adc and len(frames) > 1:
        drift = inst.pedestal_drift_adc * np.linspace(0.0, 1.0, len(frames))
        ceiling = _quabo_terms(inst)[1][frames.quabo]
        shifted = np.minimum(frames.adc + np.rint(drift)[:, None, None], ceiling)
        frames.adc = np.rint(shifted).astype(np.int16)
    return frames
