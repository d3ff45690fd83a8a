"""The strong-lensing simulator: physics against lenstronomy, symmetry, noise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("lenstronomy")

from phbook.sim import dataset, lensing  # noqa: E402

# Small, fast sets: 1 worker, coarse ray shooting where the test allows it.
FAST = {"workers": 1, "progress": False}


@pytest.fixture(scope="module")
def mixed():
    """A small noisy set of the three classes, with its noiseless twin."""
    noisy = lensing.simulate(24, seed=7, **FAST)
    clean = lensing.simulate(24, seed=7, noise=False, **FAST)
    return noisy, clean


def test_instrument_numbers_are_lenstronomys_euclid_vis():
    from lenstronomy.SimulationAPI.ObservationConfig.Euclid import Euclid

    band = Euclid(band="VIS", psf_type="GAUSSIAN", coadd_years=6).kwargs_single_band()
    ours = lensing.EUCLID_VIS
    assert ours["pixel_scale"] == band["pixel_scale"]
    assert ours["psf_fwhm"] == band["seeing"]
    assert ours["exposure_time"] == band["exposure_time"]
    assert ours["num_exposures"] == band["num_exposures"]
    assert ours["read_noise"] == band["read_noise"]
    assert ours["sky_brightness"] == band["sky_brightness"]
    assert ours["zero_point"] == band["magnitude_zero_point"]


def test_point_mass_deflection_matches_lenstronomy():
    from lenstronomy.LensModel.lens_model import LensModel

    rng = np.random.default_rng(0)
    x, y = rng.uniform(-3, 3, (2, 500))
    cx, cy = rng.uniform(-2, 2, (2, 7))
    theta = rng.uniform(0.01, 0.3, 7)
    ax, ay = lensing.point_mass_alpha(x, y, cx, cy, theta)
    kwargs = [
        {"theta_E": t, "center_x": a, "center_y": b}
        for t, a, b in zip(theta, cx, cy, strict=True)
    ]
    ref_x, ref_y = LensModel(["POINT_MASS"] * 7).alpha(x, y, kwargs)
    np.testing.assert_allclose(ax, ref_x, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ay, ref_y, rtol=1e-10, atol=1e-12)


def test_images_match_lenstronomys_image_model():
    """The batched renderer gives lenstronomy's own images (counts, orientation)."""
    data = lensing.simulate(6, seed=3, noise=False, **FAST)
    assert set(data.classes) == set(lensing.CLASSES)
    for i in range(len(data)):
        ref = lensing.reference_image(data, i)
        np.testing.assert_allclose(data.images[i], ref, atol=1e-3 * ref.max())
        assert data.images[i].sum() == pytest.approx(ref.sum(), rel=1e-3)


def test_point_mass_einstein_radius_encloses_its_mass():
    from astropy.cosmology import FlatLambdaCDM
    from lenstronomy.Cosmo.lens_cosmo import LensCosmo

    lens_cosmo = LensCosmo(0.5, 1.0, cosmo=FlatLambdaCDM(H0=70, Om0=0.3))
    mass = np.array([1e8, 1e9, 1e10])
    theta = lensing.point_mass_theta_E(mass, lens_cosmo.sigma_crit_angle)
    np.testing.assert_allclose(lens_cosmo.mass_in_theta_E(theta), mass, rtol=1e-10)
    # a 1e10 solar-mass subhalo at z=0.5 has an Einstein radius of ~0.17 arcsec
    assert 0.12 < theta[2] < 0.22


def test_class_counts_and_substructure_bookkeeping(mixed):
    noisy, _ = mixed
    counts = pd.Series(noisy.classes).value_counts()
    assert counts.to_dict() == {"normal": 8, "cdm": 8, "vortex": 8}
    p, subs = noisy.params, noisy.tables["subhalos"]
    normal, cdm, vortex = (noisy.classes == c for c in lensing.CLASSES)
    np.testing.assert_array_equal(noisy.labels, (~normal).astype(int))
    # normal lenses carry no substructure at all
    assert (p.loc[normal, ["n_sub", "vortex_mass", "f_sub"]] == 0).all().all()
    assert (p.loc[normal, "perturbation_snr"] == 0).all()
    # CDM lenses: the subhalo table matches the counts, masses lie in the set range
    per_image = np.bincount(subs["image"], minlength=len(p))
    np.testing.assert_array_equal(per_image, p["n_sub"].to_numpy())
    assert (p.loc[cdm, "n_sub"] > 0).all() and (p.loc[~cdm, "n_sub"] == 0).all()
    low, high = lensing.DEFAULT_SETTINGS["sub_mass_range"]
    assert subs["mass"].between(low, high).all()
    np.testing.assert_allclose(
        np.bincount(subs["image"], weights=subs["mass"], minlength=len(p)),
        p["sub_mass_total"],
    )
    # vortices: the mass fraction and length lie in their ranges; no subhalos
    lo, hi = lensing.DEFAULT_SETTINGS["vortex_mass_fraction_range"]
    frac = p.loc[vortex, "vortex_mass"] / p.loc[vortex, "mass_E"]
    assert frac.between(lo, hi).all()
    assert (p.loc[~vortex, "vortex_mass"] == 0).all()
    length = p.loc[vortex, "vortex_length"] / p.loc[vortex, "theta_E"]
    assert length.between(*lensing.DEFAULT_SETTINGS["vortex_length_range"]).all()
    # the substructure changes every anomalous image, but only a little
    snr = p["perturbation_snr"]
    assert (snr[~normal] > 1).all()
    assert (snr[~normal] < p.loc[~normal, "arc_snr"]).all()


def test_substructure_is_a_small_perturbation_of_the_same_lens(mixed):
    noisy, clean = mixed
    smooth = lensing.render_noiseless(noisy, smooth=True)
    normal = noisy.classes == "normal"
    # re-rendering reproduces the noiseless images; smooth == image for normal lenses
    np.testing.assert_allclose(lensing.render_noiseless(noisy), clean.images, rtol=1e-5)
    np.testing.assert_allclose(smooth[normal], clean.images[normal], rtol=1e-5)
    diff = np.abs(clean.images - smooth).sum(axis=(1, 2))
    total = clean.images.sum(axis=(1, 2))
    rel = diff[~normal] / total[~normal]
    assert (rel > 1e-3).all()  # there is a perturbation ...
    assert np.median(rel) < 0.5  # ... and the arc is still the arc


def _circular_settings():
    return {
        "lens_q_range": (1.0, 1.0),
        "shear_range": (0.0, 0.0),
        "lens_center_max": 0.0,
        "source_q_range": (1.0, 1.0),
        "source_offset_max": 0.0,
    }


def test_circular_lens_is_symmetric_under_rotations_and_flips():
    img = lensing.simulate(
        1,
        seed=3,
        fractions={"normal": 1},
        noise=False,
        settings=_circular_settings(),
        **FAST,
    ).images[0]
    assert img.max() > 0
    scale = img.max()
    for transformed in (np.rot90(img), np.flipud(img), np.fliplr(img), img.T):
        np.testing.assert_allclose(transformed, img, atol=1e-5 * scale)
    # an Einstein ring: bright at theta_E, dark at the centre
    assert img[31:33, 31:33].max() < 0.05 * scale


def test_elliptical_lens_follows_its_orientation():
    """Axis-aligned lens, shear and source: mirror symmetric; rotated by 90 degrees:
    the image rotates by 90 degrees."""
    base = lensing.simulate(1, seed=4, fractions={"normal": 1}, noise=False, **FAST)
    p = base.params
    p.loc[0, ["lens_x", "lens_y", "source_x", "source_y"]] = 0.0
    p.loc[0, ["lens_e1", "lens_e2", "gamma1", "gamma2"]] = [0.15, 0.0, 0.04, 0.0]
    p.loc[0, ["source_e1", "source_e2"]] = [0.1, 0.0]
    img = lensing.render_noiseless(base)[0]
    scale = img.max()
    np.testing.assert_allclose(np.flipud(img), img, atol=1e-5 * scale)
    np.testing.assert_allclose(np.fliplr(img), img, atol=1e-5 * scale)
    # not symmetric under a 90 degree rotation: the lens is elliptical
    assert np.abs(np.rot90(img) - img).max() > 0.05 * scale
    # rotate the scene by +90 degrees, (x, y) -> (-y, x): the source at (0.1, 0) moves
    # to (0, 0.1) and every e1, e2 (position angle + 90 degrees) changes sign
    p.loc[0, ["source_x", "source_y"]] = [0.1, 0.0]
    original = lensing.render_noiseless(base)[0]
    p.loc[0, ["source_x", "source_y"]] = [0.0, 0.1]
    p.loc[0, ["lens_e1", "gamma1", "source_e1"]] *= -1
    rotated = lensing.render_noiseless(base)[0]
    assert np.abs(rotated - original).max() > 0.05 * scale
    # rows are y and columns x (both ascending), so the counter-clockwise rotation of
    # the scene is a clockwise rotation of the array as numpy prints it
    np.testing.assert_allclose(np.rot90(original, k=-1), rotated, atol=1e-5 * scale)


def test_noise_is_added_with_the_stated_statistics(mixed):
    noisy, clean = mixed
    s = lensing.DEFAULT_SETTINGS
    meta = noisy.meta
    exposure = s["exposure_time"] * s["num_exposures"]
    sky = 10 ** (-0.4 * (s["sky_brightness"] - s["zero_point"])) * exposure
    sky *= meta["pixel_scale"] ** 2
    read_var = s["num_exposures"] * s["read_noise"] ** 2
    residual = noisy.images.astype(np.float64) - clean.images
    assert np.abs(residual).mean() > 1.0  # the noise is really there
    z = residual / np.sqrt(clean.images + sky + read_var)
    assert abs(z.mean()) < 0.02
    assert abs(z.std() - 1) < 0.02
    # on the arcs, the Poisson noise of the source dominates: variance grows with flux
    bright = clean.images > sky
    assert bright.sum() > 500
    ratio = residual[bright].var() / (clean.images[bright] + sky + read_var).mean()
    assert 0.9 < ratio < 1.1
    faint_var = residual[clean.images < 0.01 * sky].var()
    assert residual[bright].var() > 1.5 * faint_var
    # empty sky: standard deviation sqrt(sky + read noise^2) (~26 e- for Euclid VIS)
    corner = residual[:, :6, :6]
    assert abs(corner.std() / np.sqrt(sky + read_var) - 1) < 0.08
    assert abs(corner.mean()) < 3 * np.sqrt(sky + read_var) / np.sqrt(corner.size)


def test_same_seed_same_images_whatever_the_workers(monkeypatch):
    monkeypatch.setattr(dataset, "CHUNK_SIZE", 5)
    kw = {"fractions": {"cdm": 1, "vortex": 1}, "supersampling": 1, "progress": False}
    one = lensing.simulate(12, seed=11, workers=1, **kw)
    two = lensing.simulate(12, seed=11, workers=2, **kw)
    np.testing.assert_array_equal(one.images, two.images)
    pd.testing.assert_frame_equal(one.params, two.params)
    other = lensing.simulate(12, seed=12, workers=1, **kw)
    assert not np.allclose(other.images, one.images)


def test_varying_redshift_set_changes_einstein_radii_physically():
    from astropy.cosmology import FlatLambdaCDM
    from lenstronomy.Cosmo.lens_cosmo import LensCosmo

    d = lensing.simulate(
        16, seed=5, redshift="varying", supersampling=1, noise=False, **FAST
    )
    p = d.params
    s = lensing.DEFAULT_SETTINGS
    assert p["z_lens"].between(*s["z_lens_range"]).all()
    assert p["z_source"].between(*s["z_source_range"]).all()
    assert p["z_lens"].std() > 0.05
    cosmo = FlatLambdaCDM(H0=s["H0"], Om0=s["Om0"])
    for _, row in p.head(4).iterrows():
        lc = LensCosmo(row["z_lens"], row["z_source"], cosmo=cosmo)
        assert row["theta_E"] == pytest.approx(lc.sis_sigma_v2theta_E(row["sigma_v"]))
    fixed = lensing.simulate(4, seed=5, supersampling=1, noise=False, **FAST).params
    assert (fixed["z_lens"] == 0.5).all() and (fixed["z_source"] == 1.0).all()


def test_150_pixel_images_cover_the_same_field():
    d = lensing.simulate(2, seed=1, num_pix=150, supersampling=1, noise=False, **FAST)
    assert d.images.shape == (2, 150, 150) and d.images.dtype == np.float32
    assert d.meta["pixel_scale"] == pytest.approx(64 * 0.101 / 150)


def test_nfw_subhalos_lens_less_than_point_masses_of_the_same_mass():
    kw = {"fractions": {"cdm": 1}, "noise": False, "supersampling": 1, **FAST}
    point = lensing.simulate(6, seed=2, **kw)
    nfw = lensing.simulate(6, seed=2, subhalo_profile="nfw", **kw)
    pd.testing.assert_series_equal(
        point.params["sub_mass_total"], nfw.params["sub_mass_total"]
    )
    assert (nfw.params["perturbation_snr"] > 0).all()
    assert (
        nfw.params["perturbation_snr"].median() < point.params["perturbation_snr"].median()
    )


def test_cached_set_is_read_back_without_simulating_again(monkeypatch):
    kw = {"seed": 2, "supersampling": 1, **FAST}
    first = lensing.load_or_simulate(6, **kw)

    def boom(**_):
        raise AssertionError("simulated again instead of reading the cache")

    monkeypatch.setattr(lensing, "simulate", boom)
    again = lensing.load_or_simulate(6, **kw)
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.classes, again.classes)
    pd.testing.assert_frame_equal(first.params, again.params)
    pd.testing.assert_frame_equal(first.tables["subhalos"], again.tables["subhalos"])
    assert again.meta["settings"]["sub_mass_range"] == list(
        lensing.DEFAULT_SETTINGS["sub_mass_range"]
    )
    with pytest.raises(AssertionError, match="simulated again"):
        lensing.load_or_simulate(6, **kw, settings={"n_sub_mean": 5})


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n": 0}, "n"),
        ({"n": 3, "seed": -1}, "seed"),
        ({"n": 3, "fractions": {"wdm": 1}}, "fractions"),
        ({"n": 3, "redshift": "random"}, "redshift"),
        ({"n": 3, "num_pix": 8}, "num_pix"),
        ({"n": 3, "subhalo_profile": "sis"}, "subhalo_profile"),
        ({"n": 3, "settings": {"n_subhalos": 3}}, "settings"),
        ({"n": 3, "settings": {"sigma_v_range": (300, 200)}}, "sigma_v_range"),
    ],
)
def test_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        lensing.simulate(**kwargs, **FAST)
