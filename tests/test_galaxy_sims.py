"""Chapter 12: post-processed galaxies and morphology (phbook.studies.galaxy_sims)."""

import numpy as np
import pandas as pd
import pytest

from phbook.sim import galaxies
from phbook.studies import galaxy_sims


def _gauss(n, size=48, sigma=3.0, q=1.0, amp=100.0):
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    img = amp * np.exp(-0.5 * ((xx - c) ** 2 + ((yy - c) / q) ** 2) / sigma**2)
    return np.repeat(img[None], n, axis=0)


def test_morphology_of_known_profiles():
    m = galaxy_sims.morphology(_gauss(2))
    # a circular Gaussian: r50 = sigma sqrt(2 ln 2), no asymmetry, round
    assert m["r50"].iloc[0] == pytest.approx(3.0 * np.sqrt(2 * np.log(2)), rel=0.05)
    assert m["asymmetry"].iloc[0] == pytest.approx(0.0, abs=1e-9)
    assert m["ellipticity"].iloc[0] == pytest.approx(0.0, abs=1e-6)
    # r80/r20 of a Gaussian: sqrt(ln 5 / ln 1.25)
    c = 5 * np.log10(np.sqrt(np.log(5) / np.log(1.25)))
    assert m["concentration"].iloc[0] == pytest.approx(c, rel=0.05)
    flat = galaxy_sims.morphology(_gauss(1, q=0.5))
    assert flat["ellipticity"].iloc[0] == pytest.approx(0.5, abs=0.03)
    # noise raises the asymmetry and the background rms, the sky level is removed
    rng = np.random.default_rng(0)
    noisy = galaxy_sims.morphology(_gauss(50) + 5.0 + rng.standard_normal((50, 48, 48)))
    assert (noisy["asymmetry"] > 0.01).all()
    assert noisy["background rms"].mean() == pytest.approx(1.0, abs=0.05)
    assert noisy["r50"].mean() == pytest.approx(m["r50"].iloc[0], rel=0.1)
    with pytest.raises(ValueError, match="square stamps"):
        galaxy_sims.morphology(np.zeros((2, 10, 12)))


def test_morphology_distance_is_zero_for_equal_samples():
    m = galaxy_sims.morphology(_gauss(5))
    d = galaxy_sims.morphology_distance(m, m)
    assert isinstance(d, pd.Series) and (d == 0).all()


def test_post_processing_changes_the_light_and_nothing_else():
    plain = galaxies.simulate(16, seed=5, fractions={"normal": 1}, noise=False)
    post = galaxies.simulate(
        16, seed=5, fractions={"normal": 1}, noise=False, settings=galaxies.POST_PROCESSED
    )
    keep = ["x0", "y0", "mag", "r_e", "n", "q", "phi", "fwhm"]
    pd.testing.assert_frame_equal(plain.params[keep], post.params[keep])
    assert (plain.params["dust_tau"] == 0).all()
    assert (plain.params["clump_fraction"] == 0).all()
    touched = (post.params["dust_tau"] > 0) | (post.params["clump_fraction"] > 0)
    assert touched.sum() >= 8
    diff = np.abs(post.images - plain.images).sum(axis=(1, 2))
    assert (diff[~touched.to_numpy()] == 0).all()
    assert (diff[touched.to_numpy()] > 0).all()
    # a dust lane absorbs light: less flux where only dust was applied
    dust_only = (post.params["dust_tau"] > 0) & (post.params["clump_fraction"] == 0)
    if dust_only.any():
        k = dust_only.to_numpy()
        assert (post.images[k].sum(axis=(1, 2)) < plain.images[k].sum(axis=(1, 2))).all()
