import hashlib
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp

from phbook.sim import calibration as C
from phbook.sim import night_sky
from phbook.sim import panoseti as P

INST = P.Instrument()
SHARP = P.Instrument(trigger_spread=0.0)  # the trigger as a sharp threshold
POP = P.ShowerPopulation()


def test_frames_have_the_documented_layout():
    f = P.simulate(500, seed=1, anomaly_fraction=0.2)
    assert f.adc.shape == (500, 16, 16) and f.adc.dtype == np.int16
    assert f.classes.shape == (500,) and set(f.classes) <= {P.NORMAL, *P.ANOMALY_CLASSES}
    assert np.isnan(f.strength[f.classes == P.NORMAL]).all()
    anomalous = f.strength[f.classes != P.NORMAL]
    assert len(anomalous) > 50 and ((anomalous >= 0) & (anomalous <= 1)).all()
    assert set(np.unique(f.quabo)) <= {0, 1, 2, 3}


def test_seed_makes_runs_repeatable():
    a, b, c = (P.simulate(300, seed=s, anomaly_fraction=0.1) for s in (4, 4, 5))
    assert np.array_equal(a.adc, b.adc) and np.array_equal(a.classes, b.classes)
    assert not np.array_equal(a.adc, c.adc)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_every_frame_satisfies_its_trigger(k):
    f = P.simulate(400, seed=2, trigger_pixels=k, pe_threshold=8.0, instrument=SHARP)
    above = f.adc > 8.0 * INST.adc_per_pe
    assert above.any(axis=(1, 2)).all()
    if k > 1:
        padded = np.pad(above, ((0, 0), (1, 1), (1, 1)))
        count = sum(
            padded[:, 1 + dr : 17 + dr, 1 + dc : 17 + dc]
            for dr in (-1, 0, 1)
            for dc in (-1, 0, 1)
            if (dr, dc) != (0, 0)
        )
        assert (above & (count >= k - 1)).any(axis=(1, 2)).all()


def test_trigger_logic_on_hand_made_frames():
    inst2 = P.Instrument(trigger_pixels=2)
    frames = np.zeros((3, 16, 16), np.float32)
    frames[0, 5, 5] = 1000  # one pixel: triggers 1-pixel logic only
    frames[1, 5, 5] = frames[1, 6, 6] = 1000  # diagonal neighbours: a pair
    frames[2, 5, 5] = frames[2, 9, 9] = 1000  # two separate pixels: no pair
    assert P.triggered(frames, INST).tolist() == [True, True, True]
    assert P.triggered(frames, inst2).tolist() == [False, True, False]


def test_no_frame_without_a_trigger_in_higher_thresholds():
    low = P.simulate(2000, seed=3, pe_threshold=8.0, instrument=SHARP)
    high = P.simulate(2000, seed=3, pe_threshold=15.0, instrument=SHARP)
    assert np.median(high.adc.max(axis=(1, 2))) > np.median(low.adc.max(axis=(1, 2)))
    assert (high.adc.max(axis=(1, 2)) > 15 * SHARP.adc_per_pe).all()


def test_dark_pixels_match_direct_sampling():
    """The table sampler (and its exact tail) against Poisson + Gaussian drawn directly."""
    rng = np.random.default_rng(0)
    adc = P.digitize(np.zeros((1500, 16, 16), np.float32), 0, INST, rng)
    pedestal, _ = P._quabo_terms(INST)
    counts = rng.poisson(INST.nsb_pe, adc.shape).astype(np.float32)
    direct = np.floor(P._pixel_charge(counts, INST, rng) + pedestal[0] + 0.5)
    assert ks_2samp(adc.ravel(), direct.ravel()).pvalue > 1e-3
    assert abs(adc.mean() - direct.mean()) < 0.1
    # the far tail: as many values beyond the table's last quantile as expected
    t = float(night_sky.background_quantiles(INST)[-1])
    frac = np.mean(adc - pedestal[0] > t + 1)
    expected = float(night_sky.dark_pixel_sf(t + 1, INST))
    assert frac == pytest.approx(expected, rel=0.5, abs=2e-5)


def test_background_tail_draws_are_exact():
    rng = np.random.default_rng(1)
    t = float(night_sky.background_quantiles(INST)[-1])
    tail = night_sky.background_tail(np.full(4000, t), INST, rng)
    assert (tail > t).all()
    counts = rng.poisson(INST.nsb_pe, 40_000_000).astype(np.float32)
    direct = P._pixel_charge(counts, INST, rng)
    direct = direct[direct > t]
    assert len(direct) > 150
    assert ks_2samp(tail, direct).pvalue > 1e-3


def test_triggers_from_dark_pixels_happen_at_the_exact_rate():
    """With no signal at all a frame triggers only through sky fluctuations; the
    simulator's shortcut must keep frames at exactly that rate."""
    inst = P.Instrument(pe_threshold=4.0)  # low enough for sky-only triggers
    n = 40_000
    rng = np.random.default_rng(5)
    adc, kept, _ = P._digitize(
        np.zeros((n, 16, 16), np.float32), 0, inst, rng, skip_untriggered=True
    )
    expected = 1 - np.prod(1 - P._exceed_probability(inst)[0])
    assert len(kept) / n == pytest.approx(expected, rel=0.1)
    assert P.triggered(adc, inst).all()
    full = P.digitize(np.zeros((n, 16, 16), np.float32), 0, inst, rng)
    assert P.triggered(full, inst).mean() == pytest.approx(expected, rel=0.1)


def brute_force_pe(size, sig_l, sig_w, psi, cy, cx, sub=16):
    """Pixel integrals of a Gaussian by dense sub-pixel sampling (the reference)."""
    t = (np.arange(16 * sub) + 0.5) / sub
    yy, xx = np.meshgrid(t - cy, t - cx, indexing="ij")
    u = xx * np.cos(psi) + yy * np.sin(psi)
    v = -xx * np.sin(psi) + yy * np.cos(psi)
    g = np.exp(-0.5 * (u**2 / sig_l**2 + v**2 / sig_w**2)) / (2 * np.pi * sig_l * sig_w)
    return size * g.reshape(16, sub, 16, sub).sum(axis=(1, 3)) / sub**2


@pytest.mark.parametrize(
    "sig_l, sig_w, psi",
    [(0.3, 0.3, 0.0), (0.45, 0.35, 1.0), (1.8, 0.9, 0.7), (3.0, 1.2, 2.2)],
)
def test_ellipses_are_integrated_over_pixels(sig_l, sig_w, psi):
    p = {
        k: np.array([v], np.float32)
        for k, v in dict(
            size=500, length=sig_l, width=sig_w, psi=psi, cy=7.3, cx=8.6
        ).items()
    }
    pe = P.shower_pe(p, np.zeros(1, np.uint8))[0]
    ref = brute_force_pe(500, sig_l, sig_w, psi, 7.3, 8.6)
    assert pe.sum() == pytest.approx(ref.sum(), rel=2e-3)
    assert np.abs(pe - ref).max() < 0.02 * ref.max()


def test_saturation_clips_at_the_adc_ceiling():
    pe = np.full((4, 16, 16), 5000.0, np.float32)  # far beyond 4095 ADC
    adc = P.digitize(pe, np.arange(4), INST, np.random.default_rng(0))
    baseline, _ = P._fixed_pattern(INST)
    np.testing.assert_array_equal(adc, INST.adc_max - baseline)


def test_noise_only_pixels_match_the_instrument_settings():
    adc = P.digitize(
        np.zeros((4000, 16, 16), np.float32), 0, INST, np.random.default_rng(3)
    )
    mean = INST.pedestal_adc + INST.quabo_pedestal_adc[0] + INST.adc_per_pe * INST.nsb_pe
    assert adc.mean() == pytest.approx(mean, abs=0.3)
    var = (
        INST.noise_adc**2
        + (INST.adc_per_pe * INST.spe_resolution) ** 2 * INST.nsb_pe
        + INST.adc_per_pe**2 * INST.nsb_pe
        + INST.pixel_offset_adc**2
    )
    assert adc.var() == pytest.approx(var, rel=0.05)


@pytest.mark.parametrize("cls", P.ANOMALY_CLASSES)
def test_each_anomaly_class_triggers_and_has_its_signature(cls):
    rng = np.random.default_rng(4)
    faint = P.simulate_anomalies(cls, 200, rng, INST, POP, strength=(0.0, 0.1))
    bright = P.simulate_anomalies(cls, 200, rng, INST, POP, strength=(0.9, 1.0))
    for f in (faint, bright):
        assert (f.classes == cls).all()
        assert P.triggered(f.adc.astype(np.float32), INST).all()
    med = lambda f: np.median(np.median(f.adc, axis=(1, 2)))  # noqa: E731
    lit = lambda f: np.median((f.adc > 100).sum(axis=(1, 2)))  # noqa: E731
    if cls == "speckled":
        assert med(faint) > 60 and med(bright) > 600
    elif cls == "hot_pixel":
        assert lit(faint) <= 2
        assert np.median(bright.adc.max(axis=(1, 2))) > 5 * INST.threshold_adc
    elif cls == "dead_pixels":
        near_zero = lambda f: np.median((np.abs(f.adc) <= 3).sum(axis=(1, 2)))  # noqa: E731
        assert near_zero(bright) > near_zero(faint) + 15
    elif cls in ("streak", "muon_arc"):
        assert lit(bright) > 2 * lit(faint)
    elif cls == "point_source":
        assert lit(faint) <= 4
        assert np.median(bright.adc.max(axis=(1, 2))) > 3 * np.median(
            faint.adc.max(axis=(1, 2))
        )
    elif cls == "pileup":
        assert lit(bright) >= lit(faint)


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="trigger_pixels"):
        P.simulate(10, trigger_pixels=4)
    with pytest.raises(ValueError, match="unknown anomaly classes"):
        P.simulate(10, anomaly_fraction=0.5, anomaly_classes=("ufo",))
    with pytest.raises(ValueError, match="anomaly_fraction"):
        P.simulate(10, anomaly_fraction=2)
    with pytest.raises(ValueError, match="strength"):
        P.simulate_anomalies("streak", 5, np.random.default_rng(), INST, POP, (0.5, 2))
    with pytest.raises(ValueError, match="quabo"):
        P.quabo_offset(7)


# Frames of fixed settings and seeds, as hashes: the simulator's speed-ups must leave
# every frame bit for bit as it was (simulator version 4; version 4 draws its random
# numbers in another order than 3, from the same distributions). Made where torch
# generates normal numbers with its AVX512 kernels; another CPU may round them
# differently.
_REFERENCE = {
    "mixed": "a4033a8a8e55910c98c3cdbb7d0caa8cbf7921654716b8e3ffa1e97877ef8646",
    "low_threshold": "8f6e28db7bb213654ab562bf4426bad77a3e48438576308d5609d18981341178",
}


def _frames_hash(frames) -> str:
    digest = hashlib.sha256()
    for a in (frames.adc, frames.quabo, frames.strength, frames.classes.astype("U16")):
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def test_fixed_seed_frames_are_unchanged():
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        pytest.skip("reference hashes were made with torch's AVX512 kernels")
    inst, pop = C.first_version_settings()  # explicit settings, not the stored fit
    pop = replace(pop, field_half_width_deg=6.5)
    inst = replace(
        inst, quabo_pedestal_adc=(3.0, -2.0, 0.5, 10.0), quabo_gain=(1.0, 0.9, 1.1, 1.0)
    )
    mixed = P.simulate(
        3000,
        seed=42,
        instrument=inst,
        population=pop,
        anomaly_fraction=0.2,
        anomaly_classes=P.ALL_CLASSES,
    )
    low = P.simulate(
        3000,
        seed=7,
        instrument=replace(inst, trigger_spread=0.0, pe_threshold=3.0),
        population=pop,
    )
    assert _frames_hash(mixed) == _REFERENCE["mixed"]
    assert _frames_hash(low) == _REFERENCE["low_threshold"]


@pytest.mark.parametrize("pe_threshold", [2.0, 9.96])
def test_soft_trigger_in_the_kernel_keeps_frames_as_the_definition_does(pe_threshold):
    """The digitiser decides the soft trigger before drawing dark pixels (and thins
    with a bound); the frames it keeps must be those of the definition: digitise
    everything, keep a frame with probability Phi((max - threshold) / spread)."""
    from scipy.special import ndtr

    target = replace(INST, pe_threshold=pe_threshold)
    spread = target.trigger_spread * target.threshold_adc
    low = replace(
        target,
        pe_threshold=max(1.0, pe_threshold * (1 - 3 * target.trigger_spread)),
        trigger_spread=0.0,
    )
    rng = np.random.default_rng(11)
    n = 30_000
    showers = P._sample_showers(n, rng, POP)
    showers["cy"] = rng.uniform(2, 14, n)
    showers["cx"] = rng.uniform(2, 14, n)
    pe = P.shower_pe(showers, np.zeros(n, np.uint8), low)
    pe *= np.float32(pe_threshold / 9.96)  # the same range of brightness per threshold
    adc, kept, decided = P._digitize(
        pe, 0, low, rng, skip_untriggered=True, soft=(target.threshold_adc, spread)
    )
    trig = P.triggered(adc, low)
    top = adc.max(axis=(1, 2))
    p = ndtr((top[~decided] - target.threshold_adc) / spread)
    trig[~decided] &= rng.random(len(p)) < p
    fast = top[trig]
    full = P.digitize(pe, 0, low, rng)
    top_full = full.max(axis=(1, 2))
    keep = P.triggered(full, low) & (
        rng.random(n) < ndtr((top_full - target.threshold_adc) / spread)
    )
    reference = top_full[keep]
    sd = np.sqrt(keep.mean() * (1 - keep.mean()) / n)
    assert abs(len(fast) - len(reference)) / n < 4 * np.sqrt(2) * sd
    assert ks_2samp(fast, reference).pvalue > 1e-3
