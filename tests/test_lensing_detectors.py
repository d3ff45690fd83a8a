"""The detectors of chapter 10: the RBM baseline, the smooth-lens fit, 64x64 models."""

import numpy as np
import pytest
import torch

from phbook import detectors, lensfit, metrics
from phbook.models.aae import AdversarialAutoencoder
from phbook.models.ae import SparseConvAE
from phbook.models.vae import BetaVAE
from phbook.sim import lensing


def rings(n=300, seed=0, size=16):
    """Normal: a noisy ring of random radius; anomalies: the ring with a bright spot."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    r = np.hypot(yy, xx)
    radius = rng.uniform(4, 5, (n, 1, 1))
    x = np.exp(-((r - radius) ** 2) / 1.5) + 0.05 * rng.standard_normal((n, size, size))
    odd = x[: n // 5].copy()
    odd[:, 2:5, 2:5] += 1.0
    return x.astype(np.float32), odd.astype(np.float32)


def test_rbm_free_energy_matches_sklearn_and_sign_convention():
    normal, odd = rings()
    det = detectors.RBMDetector(n_components=16, n_iter=5, random_state=0).fit(normal)
    v = det.scale(normal)
    assert v.shape == (300, 256) and v.min() >= 0 and v.max() <= 1
    # scikit-learn's own (private) free energy of the same fitted RBM
    np.testing.assert_allclose(
        det.free_energy(normal), det.rbm_._free_energy(v), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(det.anomaly_score(odd), -det.score_samples(odd))
    assert det.anomaly_score(odd).shape == (60,)
    assert np.mean(det.decision_function(normal) < 0) == pytest.approx(0.01, abs=0.01)


def test_rbm_separates_rings_with_a_bright_spot():
    normal, _ = rings()
    test, odd = rings(200, seed=1)
    det = detectors.RBMDetector(
        n_components=32, learning_rate=0.05, n_iter=20, random_state=0
    ).fit(normal)
    scores = np.r_[det.anomaly_score(test), det.anomaly_score(odd)]
    labels = np.r_[np.zeros(len(test)), np.ones(len(odd))]
    assert metrics.roc_auc(labels, scores) > 0.9


def test_rbm_rejects_constant_images_and_bad_quantiles():
    with pytest.raises(ValueError, match="constant"):
        detectors.RBMDetector().fit(np.zeros((10, 8, 8)))
    with pytest.raises(ValueError, match="clip_quantiles"):
        detectors.RBMDetector(clip_quantiles=(0.9, 0.1)).fit(rings(20)[0])


@pytest.mark.parametrize(
    "model",
    [
        lambda: SparseConvAE(64, latent_dim=8, channels=(4, 8, 8, 8)),
        lambda: BetaVAE(64, latent_dim=8, channels=(4, 8, 8, 8)),
        lambda: AdversarialAutoencoder(64, latent_dim=8, channels=(4, 8, 8, 8)),
    ],
)
def test_models_take_64x64_single_channel_images(model):
    m = model()
    x = torch.randn(3, 1, 64, 64)
    out = m(x)
    x_hat = out[0] if isinstance(out, tuple) else out
    assert x_hat.shape == (3, 1, 64, 64)
    assert torch.isfinite(m.loss(x)["loss"])


@pytest.fixture(scope="module")
def smooth_set():
    return lensing.simulate(
        12, seed=3, fractions={"normal": 1}, noise=False, workers=1, progress=False
    )


def test_renderer_reproduces_the_simulator(smooth_set):
    renderer = lensfit.SmoothLensRenderer(
        64, smooth_set.meta["pixel_scale"], supersampling=2
    )
    p = torch.tensor(
        smooth_set.params[list(lensfit.PARAMS)].to_numpy(), dtype=torch.float32
    )
    with torch.no_grad():
        unit = renderer(p).numpy()
    img = smooth_set.images
    amp = (unit * img).sum((1, 2)) / (unit**2).sum((1, 2))
    resid = img - amp[:, None, None] * unit
    # within one part in 10^4 of the peak: far below the noise (about 25 e- of sky)
    assert np.abs(resid).max() < 1e-4 * img.max()


def test_levenberg_marquardt_converges_where_adam_stops_short(smooth_set):
    """From a start off by a few per cent of every parameter's range, 15 LM iterations
    bring chi^2 of noiseless smooth lenses close to zero and recover the parameters;
    the same number of Adam steps does not."""
    renderer = lensfit.SmoothLensRenderer(
        64, smooth_set.meta["pixel_scale"], supersampling=2
    )
    truth = smooth_set.params[list(lensfit.PARAMS)].to_numpy()
    width = np.array([hi - lo for lo, hi in lensfit.BOUNDS.values()])
    rng = np.random.default_rng(0)
    start = truth + 0.02 * width * rng.uniform(-1, 1, truth.shape)
    data = smooth_set.images[:6]
    var = 600.0 + np.maximum(data, 0)  # the noise of sky + source counts
    adam = lensfit.fit_smooth_lens(renderer, data, var, start[:6, None], steps=15, lr=0.01)
    lm = lensfit.levenberg_marquardt(renderer, data, var, start[:6], iterations=15)
    n_pix = data[0].size
    assert np.all(lm["chi2"] < adam["chi2"])
    assert np.median(lm["chi2"]) < 0.01 * n_pix  # far below the noise: converged
    # Einstein radius and source position to a small fraction of a pixel (0.1")
    for name in ("theta_E", "source_x", "source_y"):
        i = lensfit.PARAMS.index(name)
        assert np.median(np.abs(lm["params"][:, i] - truth[:6, i])) < 0.01
    # the polish inside fit_smooth_lens only ever improves a fit
    both = lensfit.fit_smooth_lens(
        renderer, data, var, start[:6, None], steps=15, lr=0.01, polish=15
    )
    assert np.all(both["chi2"] <= adam["chi2"] + 1e-3)
    assert np.median(both["chi2"]) < 0.01 * n_pix


def test_coherent_score_is_zero_for_white_noise_and_finds_a_faint_coherent_residual():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((400, 32, 32))
    arc = np.zeros(noise.shape, bool)
    arc[:, 8:24, 8:24] = True
    white = lensfit.coherent_score(noise, arc, smoothing=1.5, grow=2)
    n_pix = np.count_nonzero(arc[0]) + 2 * 4 * 16 + 4 * 3  # grown by 2 (corners cut)
    # mean 0 within its error (the smoothed pixels are correlated: a few x sqrt(2 n))
    assert abs(white.mean()) < 4 * white.std() / np.sqrt(len(white))
    assert white.std() > np.sqrt(2 * n_pix)
    # a residual of 1 sigma per pixel over a 4 x 4 patch: a chi^2 of 16, lost in the
    # noise of some 400 pixels summed one by one, but coherent, which the filter adds up
    bumped = noise.copy()
    bumped[:, 14:18, 14:18] += 1.0
    plain = ((bumped**2 - 1) * arc).sum((1, 2))
    coherent = lensfit.coherent_score(bumped, arc, smoothing=1.5, grow=2)
    labels = np.r_[np.zeros(400), np.ones(400)]
    auc_plain = metrics.roc_auc(labels, np.r_[((noise**2 - 1) * arc).sum((1, 2)), plain])
    auc_coherent = metrics.roc_auc(labels, np.r_[white, coherent])
    assert auc_coherent > auc_plain + 0.1
    with pytest.raises(ValueError, match="smoothing"):
        lensfit.coherent_score(noise, arc, smoothing=0)


def test_smooth_fit_finds_the_smooth_lens_and_flags_substructure():
    lib = lensing.simulate(200, seed=4, fractions={"normal": 1}, workers=1, progress=False)
    test = lensing.simulate(
        20,
        seed=5,
        fractions={"normal": 1, "cdm": 1},
        settings={"sub_mass_range": (5e9, 2e10)},  # strong substructure: must separate
        workers=1,
        progress=False,
    )
    det = detectors.SmoothLensDetector(
        lib, n_starts=2, steps=50, polish=5, calibration_size=4
    ).fit(lib.images[:40])
    assert det.renderer_.supersampling == lib.meta["supersampling"]
    assert det.sky_variance_ == pytest.approx(
        lensing.DEFAULT_SETTINGS["num_exposures"] * 4.2**2 + 538.6, rel=0.1
    )
    fitted = det.fit_images(test.images)
    assert fitted["model"].shape == (20, 64, 64) and len(fitted["params"]) == 20
    normal = test.classes == "normal"
    # smooth lenses are fitted to the noise: mean chi^2 per pixel near 1
    chi2_pix = (fitted["residual"] ** 2).mean((1, 2))
    assert np.median(chi2_pix[normal]) == pytest.approx(1.0, abs=0.1)
    assert metrics.roc_auc(test.labels, det.scores_of(fitted)) > 0.75
    np.testing.assert_allclose(
        det.anomaly_score(test.images[:4]), det.scores_of(fitted)[:4], rtol=1e-4
    )
    # the coarse Adam search (one ray per pixel) ends, after the polish, where a
    # search at the library's supersampling does
    assert det.search_renderer_.supersampling == 1 < det.renderer_.supersampling
    fine = detectors.SmoothLensDetector(
        lib, n_starts=2, steps=50, polish=5, calibration_size=4, search_supersampling=None
    ).fit(lib.images[:40])
    assert fine.search_renderer_ is None
    fitted_fine = fine.fit_images(test.images[:6])
    smooth = normal[:6]  # a smooth lens has one basin; substructure may find others
    assert smooth.sum() >= 2
    np.testing.assert_allclose(
        fitted_fine["chi2"][smooth], fitted["chi2"][:6][smooth], atol=0.01 * 64 * 64
    )


def test_smooth_fit_needs_a_smooth_library():
    x = np.zeros((4, 64, 64), np.float32)
    with pytest.raises(ValueError, match="library"):
        detectors.SmoothLensDetector().fit(x)
    mixed = lensing.simulate(6, seed=1, workers=1, progress=False)
    with pytest.raises(ValueError, match="smooth lenses only"):
        detectors.SmoothLensDetector(mixed).fit(mixed.images)
    smooth = lensing.simulate(4, seed=1, fractions={"normal": 1}, workers=1, progress=False)
    with pytest.raises(ValueError, match="polish"):
        detectors.SmoothLensDetector(smooth, n_starts=1, polish=-1).fit(smooth.images)
    with pytest.raises(ValueError, match="smoothing"):
        detectors.SmoothLensDetector(smooth, n_starts=1, smoothing=-1).fit(smooth.images)
    with pytest.raises(ValueError, match="supersampling"):
        detectors.SmoothLensDetector(smooth, n_starts=1, supersampling=5).fit(smooth.images)
    with pytest.raises(ValueError, match="search_supersampling"):
        detectors.SmoothLensDetector(smooth, n_starts=1, search_supersampling=0).fit(
            smooth.images
        )


def test_the_deflection_depends_on_the_lens_parameters_alone():
    # the Levenberg-Marquardt Jacobian reuses one deflection for every step in a
    # source parameter: that is exact only if the source parameters leave it alone
    from phbook.lensfit import PARAMS, SmoothLensRenderer

    renderer = SmoothLensRenderer(32, 0.2, 0.3, supersampling=2)
    p = torch.tensor(
        [[1.2, 0.1, -0.05, 0.02, -0.03, 0.04, 0.01, 0.1, -0.2, 0.3, 1.5, 0.1, 0.05]]
    )
    assert p.shape[1] == len(PARAMS)
    q = p.clone()
    q[:, renderer.n_lens_params :] += 0.05  # every source parameter moves
    ax, ay = renderer.deflection(p)
    for a, b in zip(renderer.deflection(q), (ax, ay), strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(renderer.render(q, ax, ay), renderer(q))
    moved = p.clone()
    moved[:, 0] += 0.05  # a lens parameter moves the deflection
    assert not torch.allclose(renderer.deflection(moved)[0], ax)


def test_levenberg_marquardt_matches_a_jacobian_of_full_renders():
    # one iteration with the deflection reused for the source parameters lands where
    # an iteration that renders every perturbed image in full does
    from phbook.lensfit import PARAMS, SmoothLensRenderer, levenberg_marquardt

    class FullRenders(SmoothLensRenderer):
        def render(self, p, ax, ay):  # ignore the shared deflection
            return super().render(p, *self.deflection(p))

    fast = SmoothLensRenderer(24, 0.25, 0.3, supersampling=2)
    slow = FullRenders(24, 0.25, 0.3, supersampling=2)
    rng = np.random.default_rng(1)
    truth = np.array(
        [[1.1, 0.1, -0.05, 0.02, -0.03, 0.04, 0.01, 0.1, -0.2, 0.3, 1.5, 0.1, 0.05]] * 3
    )
    truth[:, 7:9] += rng.normal(0, 0.1, (3, 2))
    data = 50 * fast(torch.as_tensor(truth, dtype=torch.float32)).numpy()
    data = data + rng.normal(0, 1, data.shape).astype(np.float32)
    start = truth + rng.normal(0, 0.02, truth.shape)
    var = np.ones_like(data)
    a = levenberg_marquardt(fast, data, var, start, iterations=2)
    b = levenberg_marquardt(slow, data, var, start, iterations=2)
    assert len(PARAMS) == start.shape[1]
    np.testing.assert_array_equal(a["params"], b["params"])
    np.testing.assert_array_equal(a["chi2"], b["chi2"])


def test_search_renderer_must_draw_the_same_images():
    from phbook.lensfit import SmoothLensRenderer, fit_smooth_lens

    fine = SmoothLensRenderer(16, 0.2, 0.3, supersampling=2)
    other = SmoothLensRenderer(16, 0.25, 0.3, supersampling=1)
    x = np.ones((1, 16, 16), np.float32)
    starts = np.zeros((1, 1, 13))
    with pytest.raises(ValueError, match="search_renderer"):
        fit_smooth_lens(fine, x, x, starts, steps=1, search_renderer=other)
