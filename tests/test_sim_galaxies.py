"""The galaxy simulator: Sersic profiles, noise, mergers and pipeline errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from phbook.sim import dataset, galaxies, profiles

FAST = {"progress": False}


@pytest.fixture(scope="module")
def pair():
    """Noisy and noiseless stamps (same seed), 24 of every class."""
    kw = {"fractions": dict.fromkeys(galaxies.CLASSES, 1.0), **FAST}
    noisy = galaxies.simulate(192, seed=4, **kw)
    clean = galaxies.simulate(192, seed=4, noise=False, **kw)
    return noisy, clean


def test_sersic_matches_astropy_and_holds_its_flux():
    from astropy.modeling.functional_models import Sersic2D

    c = np.linspace(-60, 60, 1201)
    x, y = np.meshgrid(c, c)
    r_e, n, q, phi = 5.0, 2.5, 0.6, 0.4
    img = profiles.sersic(x, y, 1.0, -2.0, 1000.0, r_e, n, q, phi)
    ref = Sersic2D(amplitude=1, r_eff=r_e, n=n, x_0=1.0, y_0=-2.0, ellip=1 - q, theta=phi)
    np.testing.assert_allclose(img / img.max(), ref(x, y) / ref(x, y).max(), rtol=1e-8)
    # total flux (the n=2.5 wings beyond 60 px hold a fraction of a percent)
    assert img.sum() * (c[1] - c[0]) ** 2 == pytest.approx(1000.0, rel=5e-3)
    # half of the light of a round profile lies inside r_e
    round_ = profiles.sersic(x, y, 0.0, 0.0, 1.0, r_e, n, 1.0, 0.0)
    inside = round_[np.hypot(x, y) < r_e].sum() / round_.sum()
    assert inside == pytest.approx(0.5, abs=0.01)


def test_noise_has_the_stated_statistics(pair):
    noisy, clean = pair
    p = noisy.params
    s = galaxies.DEFAULT_SETTINGS
    ok = np.isin(noisy.classes, ["normal", *galaxies.MERGER_CLASSES])
    residual = noisy.images[ok].astype(np.float64) - clean.images[ok]
    sky = p["sky"].to_numpy()[ok][:, None, None]
    var = clean.images[ok] + sky + s["read_noise"] ** 2
    z = residual / np.sqrt(var)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    # sky noise: sigma of ~134 e- for a 20.5 mag/arcsec^2 sky
    assert p["noise_sigma"].iloc[0] == pytest.approx(np.sqrt(sky[0, 0, 0] + 100.0))
    assert 120 < p["noise_sigma"].iloc[0] < 150
    # galaxies are brighter than the sky noise: Poisson noise grows on them
    bright = clean.images[ok] > sky
    assert bright.sum() > 200
    assert residual[bright].var() > 1.8 * residual[clean.images[ok] < 0.01 * sky].var()


def _asymmetry(img, x0, y0):
    """Rotational asymmetry about (x0, y0): sum |I - I rotated by 180| / sum |I|."""
    from scipy.ndimage import rotate, shift

    h, w = img.shape
    centred = shift(img, ((h - 1) / 2 - y0, (w - 1) / 2 - x0), order=1)
    rotated = rotate(centred, 180, reshape=False, order=1)
    return np.abs(centred - rotated).sum() / np.abs(centred).sum()


def test_mergers_are_asymmetric_and_ordinary_galaxies_are_not(pair):
    _, clean = pair
    p = clean.params
    single = np.flatnonzero((clean.classes == "normal") & (p["companion_mag"] == 0))
    assert len(single) >= 10
    asym = {
        name: np.median(
            [
                _asymmetry(clean.images[i], p["x0"][i], p["y0"][i])
                for i in np.flatnonzero(clean.classes == name)
            ]
        )
        for name in galaxies.MERGER_CLASSES
    }
    normal = np.median(
        [_asymmetry(clean.images[i], p["x0"][i], p["y0"][i]) for i in single]
    )
    assert normal < 0.05
    for name, value in asym.items():
        assert value > 2 * normal, name
    # light in tidal features lies in the stated ranges; none in ordinary galaxies
    s = galaxies.DEFAULT_SETTINGS
    f = p["feature_fraction"]
    assert f[clean.classes == "merger"].between(*s["tail_fraction_merger"]).all()
    assert f[clean.classes == "merger_pre"].between(*s["tail_fraction_pre"]).all()
    assert f[clean.classes == "merger_post"].between(*s["shell_fraction"]).all()
    assert (f[~np.isin(clean.classes, galaxies.MERGER_CLASSES)] == 0).all()
    # shells: 2-4 per remnant
    assert p.loc[clean.classes == "merger_post", "n_shells"].between(2, 4).all()


def test_pairs_have_two_nuclei_at_their_separation(pair):
    _, clean = pair
    p = clean.params
    for i in np.flatnonzero(clean.classes == "merger_pre"):
        img = clean.images[i]
        xs, ys = p["x0"][i], p["y0"][i]
        xc, yc = p["companion_x"][i], p["companion_y"][i]
        if not (0 <= xc < 48 and 0 <= yc < 48):
            continue
        sep_px = np.hypot(xc - xs, yc - ys)
        assert sep_px * 0.168 == pytest.approx(p["companion_sep"][i])
        assert 0 <= p["companion_mag"][i] - p["mag"][i] <= 1.5
        # the companion side is brighter than the opposite side of the main galaxy
        xm, ym = 2 * xs - xc, 2 * ys - yc
        if 0 <= xm < 48 and 0 <= ym < 48:
            companion = img[int(round(yc)), int(round(xc))]
            mirror = img[int(round(ym)), int(round(xm))]
            assert companion > 1.5 * mirror


def test_pipeline_errors_have_their_signatures(pair):
    noisy, clean = pair
    p = noisy.params
    s = galaxies.DEFAULT_SETTINGS
    zeros = (noisy.images == 0).mean(axis=(1, 2))
    cls = noisy.classes
    # no exact zeros and no saturation in astrophysical stamps: noise everywhere
    astro = np.isin(cls, ["normal", *galaxies.MERGER_CLASSES])
    assert (zeros[astro] < 0.01).all()
    assert (p.loc[astro, "saturated_pixels"] == 0).all()
    # masks and edges: a blank region of the stated size, exactly zero
    np.testing.assert_allclose(
        zeros[~astro & (p["blank_fraction"] > 0)],
        p.loc[~astro & (p["blank_fraction"] > 0), "blank_fraction"],
        atol=0.01,
    )
    masked = cls == "masked"
    assert (p.loc[masked, "blank_fraction"] > 0).all()
    assert (p.loc[masked, "blank_fraction"] <= p.loc[masked, "mask_area"] + 0.02).all()
    edge = cls == "edge_cut"
    np.testing.assert_allclose(
        p.loc[edge, "blank_fraction"], p.loc[edge, "edge_cut"], atol=0.06
    )
    for i in np.flatnonzero(edge):  # the blank region touches its side of the stamp
        blank = noisy.images[i] == 0
        side = int(p["edge_side"][i])
        border = {0: blank[:, 0], 1: blank[:, -1], 2: blank[0], 3: blank[-1]}[side]
        assert border.mean() > 0.9
    # saturation: a bright nucleus, or a bright star inside the stamp, is clipped at
    # the full well; stars just outside the stamp still throw in their halo and spikes
    inside = p["star_x"].between(0, 47) & p["star_y"].between(0, 47)
    for k in (cls == "saturated", (cls == "bright_star") & inside):
        assert k.sum() >= 5
        assert (p.loc[k, "saturated_pixels"] > 0).all()
        top = noisy.images[k].max(axis=(1, 2)) + p.loc[k, "sky"].to_numpy()
        np.testing.assert_allclose(top, s["saturation"], rtol=1e-5)
    k = np.flatnonzero(cls == "bright_star")
    assert (p["star_mag"][k] < p["mag"][k] - 1).all()
    light = clean.images[k].sum(axis=(1, 2))
    galaxy = 10 ** (-0.4 * (p["mag"].to_numpy()[k] - s["zero_point"]))
    assert (light > 1.2 * galaxy).all()


def test_same_seed_same_stamps_whatever_the_workers(monkeypatch):
    monkeypatch.setattr(dataset, "CHUNK_SIZE", 10)
    kw = {"fractions": dict.fromkeys(galaxies.CLASSES, 1.0), **FAST}
    one = galaxies.simulate(24, seed=8, workers=1, **kw)
    two = galaxies.simulate(24, seed=8, workers=2, **kw)
    np.testing.assert_array_equal(one.images, two.images)
    pd.testing.assert_frame_equal(one.params, two.params)


def test_cached_set_round_trips_and_labels(monkeypatch):
    first = galaxies.load_or_simulate(20, seed=3, **FAST)
    monkeypatch.setattr(galaxies, "simulate", None)
    again = galaxies.load_or_simulate(20, seed=3, **FAST)
    np.testing.assert_array_equal(first.images, again.images)
    pd.testing.assert_frame_equal(first.params, again.params)
    np.testing.assert_array_equal(again.labels, (again.classes != "normal").astype(int))
    assert set(again.params["group"]) <= {"normal", "merger", "pipeline"}


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n": 0}, "n"),
        ({"n": 3, "size": 16}, "size"),
        ({"n": 3, "fractions": {"ring": 1}}, "fractions"),
        ({"n": 3, "settings": {"mag_range": (22.0, 18.0)}}, "mag_range"),
        ({"n": 3, "seed": 1.5}, "seed"),
    ],
)
def test_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        galaxies.simulate(**kwargs, **FAST)
