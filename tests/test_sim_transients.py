"""The transient-candidate simulator: stamp scaling, noise, and every class's shape."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from phbook.sim import dataset, profiles, transients

FAST = {"progress": False}


@pytest.fixture(scope="module")
def raw_pair():
    """Noisy and noiseless stamps in electrons (same seed), 40 of every class."""
    fractions = dict.fromkeys(transients.CLASSES, 1.0)
    kw = {"fractions": fractions, "scaled": False, **FAST}
    noisy = transients.simulate(320, seed=3, **kw)
    clean = transients.simulate(320, seed=3, noise=False, **kw)
    return noisy, clean


def test_scale_stamps_maps_each_stamp_into_minus_one_one():
    rng = np.random.default_rng(0)
    x = rng.normal(100.0, 20.0, (50, 21, 21)) * rng.uniform(0.1, 10, (50, 1, 1))
    y = transients.scale_stamps(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert y.min() >= -1 and y.max() <= 1
    np.testing.assert_allclose(np.abs(y).max(axis=(1, 2)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.median(y.reshape(50, -1), axis=1), 0.0, atol=1e-6)
    # only the shape of a stamp matters: a x + b with a > 0 scales to the same stamp
    np.testing.assert_allclose(transients.scale_stamps(3.0 * x - 7.0), y, atol=1e-6)
    np.testing.assert_array_equal(transients.scale_stamps(np.full((2, 5, 5), 4.0)), 0.0)
    assert transients.scale_stamps(x[0]).shape == (21, 21)
    with pytest.raises(ValueError, match="x must be stamps"):
        transients.scale_stamps(x[:, :, :, None])


def test_simulated_stamps_are_scaled_by_default():
    d = transients.simulate(64, seed=1, **FAST)
    assert d.images.shape == (64, 21, 21) and d.images.dtype == np.float32
    assert d.images.min() >= -1 and d.images.max() <= 1
    np.testing.assert_allclose(np.abs(d.images).max(axis=(1, 2)), 1.0, rtol=1e-6)


def test_moffat_is_normalised_and_has_its_fwhm():
    from astropy.modeling.functional_models import Moffat2D

    c = np.linspace(-40, 40, 1601)
    x, y = np.meshgrid(c, c)
    fwhm, beta = 3.0, 2.5
    img = transients.moffat(x, y, 0.0, 0.0, fwhm, beta, flux=5.0)
    assert img.sum() * (c[1] - c[0]) ** 2 == pytest.approx(5.0, rel=2e-3)
    peak = transients.moffat(0.0, 0.0, 0.0, 0.0, fwhm, beta, 1.0)
    half = transients.moffat(fwhm / 2, 0.0, 0.0, 0.0, fwhm, beta, 1.0)
    assert half / peak == pytest.approx(0.5)
    gamma = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    ref = Moffat2D(amplitude=1.0, x_0=0.0, y_0=0.0, gamma=gamma, alpha=beta)(x, y)
    np.testing.assert_allclose(img / img.max(), ref / ref.max(), rtol=1e-10)


def test_labels_mark_the_real_transients_as_the_anomalies(raw_pair):
    noisy, _ = raw_pair
    real = np.isin(noisy.classes, transients.REAL_CLASSES)
    np.testing.assert_array_equal(noisy.labels, real.astype(int))
    np.testing.assert_array_equal(noisy.params["real"], real)
    assert set(noisy.report_classes[~real]) == {"normal"}
    assert set(noisy.report_classes[real]) == set(transients.REAL_CLASSES)
    assert (noisy.params.loc[real, "kind"] == "real").all()
    counts = pd.Series(noisy.classes).value_counts()
    assert (counts == 40).all() and len(counts) == len(transients.CLASSES)


def test_difference_noise_has_the_stated_statistics(raw_pair):
    noisy, clean = raw_pair
    p = noisy.params
    residual = noisy.images.astype(np.float64) - clean.images
    sigma = p["noise_sigma"].to_numpy()[:, None, None]
    # empty sky (hot-pixel stamps away from the hot pixel): sky + reference + read noise
    hot = np.flatnonzero(noisy.classes == "hot_pixel")
    z = residual[hot] / sigma[hot]
    empty = np.ones((21, 21), bool)
    empty[8:13, 8:13] = False
    assert abs(z[:, empty].std() - 1) < 0.03
    assert abs(z[:, empty].mean()) < 0.03
    # on a host-less supernova the Poisson noise of the new source adds to it
    sn = np.flatnonzero((noisy.classes == "supernova") & (p["host_flux"] == 0))
    assert len(sn) >= 5
    var = sigma[sn] ** 2 + clean.images[sn]
    assert abs((residual[sn] / np.sqrt(var)).std() - 1) < 0.05
    core = residual[sn][:, 9:12, 9:12]
    assert core.var() > 1.2 * residual[hot][:, empty].var() * (
        (sigma[sn] ** 2).mean() / (sigma[hot] ** 2).mean()
    )


def _centroid(img):
    w = np.clip(img, 0, None)
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    return (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()


def _elongation(img):
    w = np.clip(img, 0, None)
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    cx, cy = _centroid(img)
    cov = np.cov(np.stack([xx.ravel() - cx, yy.ravel() - cy]), aweights=w.ravel())
    ev = np.linalg.eigvalsh(cov)
    return np.sqrt(ev[1] / ev[0])


def test_real_transients_are_point_sources_where_they_should_be(raw_pair):
    noisy, clean = raw_pair
    p = noisy.params
    for i in np.flatnonzero(noisy.classes == "supernova"):
        diff = clean.images[i]
        assert diff.min() >= -1e-6  # only new flux
        cx, cy = _centroid(diff)
        assert abs(cx - p["x0"][i]) < 0.5 and abs(cy - p["y0"][i]) < 0.5
        assert 0.75 < diff.sum() / p["flux"][i] <= 1.0001  # the PSF wings leave the stamp
    fading = (noisy.classes == "variable_star") & (p["sign"] < 0)
    brightening = (noisy.classes == "variable_star") & (p["sign"] > 0)
    assert fading.sum() >= 3 and brightening.sum() >= 3
    assert (clean.images[fading].sum(axis=(1, 2)) < 0).all()
    assert (clean.images[brightening].sum(axis=(1, 2)) > 0).all()
    ast = np.flatnonzero(noisy.classes == "asteroid")
    long = ast[p["trail_length"].to_numpy()[ast] > 2 * p["fwhm"].to_numpy()[ast]]
    sn = np.flatnonzero(noisy.classes == "supernova")
    assert len(long) >= 3
    assert min(_elongation(clean.images[i]) for i in long) > 1.15
    assert max(_elongation(clean.images[i]) for i in sn) < 1.05


def test_artifacts_have_their_shapes(raw_pair):
    noisy, clean = raw_pair
    p = noisy.params
    sigma = p["noise_sigma"].to_numpy()
    amp = p["snr"].to_numpy() * sigma
    # dipoles: a positive and a negative lobe of similar size
    for i in np.flatnonzero(noisy.classes == "dipole"):
        d = clean.images[i]
        assert d.max() > 0.2 * np.abs(d).max() and d.min() < -0.2 * np.abs(d).max()
        assert abs(d.sum()) < 0.5 * np.abs(d).sum()
    # hot pixels: one or two pixels, nothing else
    for i in np.flatnonzero(noisy.classes == "hot_pixel"):
        d = clean.images[i]
        assert np.count_nonzero(d) == p["hot_pixels"][i]
        assert d.max() == pytest.approx(amp[i])
    # cosmic rays: sharp, no PSF wings: nothing beyond the track
    yy, xx = np.mgrid[:21, :21]
    for i in np.flatnonzero(noisy.classes == "cosmic_ray"):
        d = clean.images[i]
        ang = p["trail_angle"][i]
        u = (xx - p["x0"][i]) * np.cos(ang) + (yy - p["y0"][i]) * np.sin(ang)
        v = -(xx - p["x0"][i]) * np.sin(ang) + (yy - p["y0"][i]) * np.cos(ang)
        along = np.clip(np.abs(u) - p["cosmic_length"][i] / 2, 0, None)
        far = np.hypot(v, along) > 6 * p["cosmic_width"][i] + 1.5
        assert np.abs(d[far]).max() < 1e-6 * d.max()
        assert d.max() == pytest.approx(amp[i], rel=1e-6)
    # CCD defects: one constant offset on a column or row segment
    for i in np.flatnonzero(noisy.classes == "ccd_defect"):
        d = clean.images[i]
        rows, cols = np.nonzero(d)
        values = d[rows, cols]
        np.testing.assert_allclose(values, p["defect_sign"][i] * amp[i])
        line = cols if p["defect_axis"][i] == 0 else rows
        assert len(np.unique(line)) <= p["defect_width"][i]
    # saturated stars: clipped science pixels, a negative core, a bleed trail
    sat = np.flatnonzero(noisy.classes == "saturated_star")
    assert (p["saturated_pixels"].to_numpy()[sat] > 0).all()
    assert (p["saturated_pixels"].to_numpy()[noisy.classes != "saturated_star"] == 0).all()
    for i in sat:
        d = clean.images[i]
        x0, y0 = int(round(p["x0"][i])), int(round(p["y0"][i]))
        assert d[y0, x0] < 0 and d.min() < -0.5 * np.abs(d).max()


def test_saturation_clips_and_bleeds_the_excess_along_the_column():
    img = np.zeros((1, 21, 21))
    img[0, 10, 10] = 5.5  # 4.5 full wells of excess in one pixel, full well 1
    img[0, 10, 11] = 0.5
    out, count = profiles.saturate(img, np.array([1.0]))
    assert count.tolist() == [1]
    column = out[0, :, 10]
    assert column.max() == 1.0
    np.testing.assert_array_equal(np.flatnonzero(column == 1.0), np.arange(8, 13))
    assert out[0, 10, 11] == 0.5  # unsaturated pixels are untouched
    assert out.sum() <= img.sum()


def test_same_seed_same_stamps_whatever_the_workers(monkeypatch):
    monkeypatch.setattr(dataset, "CHUNK_SIZE", 16)
    one = transients.simulate(40, seed=5, workers=1, **FAST)
    two = transients.simulate(40, seed=5, workers=2, **FAST)
    np.testing.assert_array_equal(one.images, two.images)
    pd.testing.assert_frame_equal(one.params, two.params)
    assert not np.array_equal(transients.simulate(40, seed=6, **FAST).images, one.images)


def test_cached_set_round_trips(monkeypatch):
    first = transients.load_or_simulate(30, seed=2, **FAST)
    monkeypatch.setattr(transients, "simulate", None)  # would fail if called
    again = transients.load_or_simulate(30, seed=2, **FAST)
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.labels, again.labels)
    pd.testing.assert_frame_equal(first.params, again.params)
    assert again.normal_classes == transients.NORMAL_CLASSES


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n": -2}, "n"),
        ({"n": 4, "size": 20}, "size"),
        ({"n": 4, "fractions": {"supernova": -1}}, "fractions"),
        ({"n": 4, "fractions": {"kilonova": 1}}, "fractions"),
        ({"n": 4, "settings": {"fwhm": 3}}, "settings"),
        ({"n": 4, "workers": 0}, "workers"),
    ],
)
def test_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        transients.simulate(**kwargs, **FAST)
