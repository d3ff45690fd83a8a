"""The point-flash check: one pixel far brighter than its neighbours."""

import numpy as np
import pytest

from phbook import metrics
from phbook.detectors import PointFlash
from phbook.detectors.pointflash import local_excess
from phbook.sim import panoseti as P


@pytest.fixture(scope="module")
def fitted(sim_normal_adc):
    return PointFlash().fit(sim_normal_adc)


def test_local_excess_is_a_pixel_against_the_mean_of_its_neighbours():
    x = np.full((2, 16, 16), 16.0, np.float32)
    x[0, 5, 7] = 16.0 + 90.0  # an interior pixel
    x[1, 0, 0] = 16.0 + 90.0  # a corner: 5 neighbours are missing, 3 of them next to it
    z = local_excess(x, noise_floor=20.0)
    interior = 90.0 / np.sqrt(16.0 + 20.0)
    corner_mean = (3 * 106.0 + 5 * 16.0) / 8  # the nearest pixel stands in
    corner = (106.0 - corner_mean) / np.sqrt(corner_mean + 20.0)
    np.testing.assert_allclose(z, [interior, corner], rtol=1e-5)
    # a flat frame has no excess anywhere; a uniform offset changes only the noise
    assert local_excess(np.full((1, 16, 16), 50.0), 10.0)[0] == 0.0


def test_a_point_flash_or_a_hot_pixel_stands_out_of_showers(fitted, sim_test_adc):
    rng = np.random.default_rng(3)
    n = len(sim_test_adc)
    flashed = sim_test_adc.copy()
    flashed[np.arange(n), rng.integers(0, 16, n), rng.integers(0, 16, n)] += 600
    y = np.r_[np.zeros(n), np.ones(n)]
    normal = fitted.anomaly_score(sim_test_adc)
    assert metrics.roc_auc(y, np.r_[normal, fitted.anomaly_score(flashed)]) > 0.97
    # the simulator's own classes: bright point sources and hot pixels
    sim = P.simulate(
        400, seed=5, anomaly_fraction=1.0, anomaly_classes=("point_source", "hot_pixel")
    )
    bright = sim.strength >= 0.5
    s = fitted.anomaly_score(sim.adc[bright])
    yb = np.r_[np.zeros(n), np.ones(len(s))]
    assert metrics.roc_auc(yb, np.r_[normal, s]) > 0.97


def test_scores_are_tail_probabilities_of_normal_frames(fitted, sim_test_adc):
    s = fitted.anomaly_score(sim_test_adc)
    # -log10 p: about 1 % of held-out normal frames score above 2, few above 4
    assert 0.003 < np.mean(s > 2) < 0.03
    assert np.mean(s > 4) < 0.003
    assert np.all(np.diff(s[np.argsort(local_excess(sim_test_adc))]) >= 0)


def test_scores_do_not_depend_on_the_batch(fitted, sim_test_adc):
    whole = fitted.anomaly_score(sim_test_adc)
    parts = np.concatenate(
        [fitted.anomaly_score(c) for c in np.array_split(sim_test_adc, 7)]
    )
    assert np.array_equal(whole, parts)


def test_the_tail_joins_the_body_and_never_overflows(fitted):
    t0 = fitted.tail_start_
    below, above = fitted._body(np.array([t0]))[0], fitted.tail_mass_
    assert below == above  # no step where the exponential tail takes over
    x = np.full((3, 16, 16), 16.0, np.float32)
    x[1, 8, 8] += 3000.0
    x[2, 8, 8] += 30000.0  # far past where exp() underflows
    s = fitted.anomaly_score(x)
    assert np.isfinite(s).all() and s[0] < s[1] < s[2]


def test_nan_pixels_are_an_error(fitted, sim_test_adc):
    bad = sim_test_adc[:5].copy()
    bad[3, 2, 2] = np.nan
    with pytest.raises(ValueError, match="image 3 holds NaN"):
        fitted.anomaly_score(bad)
    with pytest.raises(ValueError, match="image 3 holds NaN"):
        PointFlash().fit(np.concatenate([bad, sim_test_adc[:30]]))


def test_bad_arguments_are_clear(sim_test_adc):
    with pytest.raises(ValueError, match="noise_floor"):
        PointFlash(noise_floor=0).fit(sim_test_adc)
    with pytest.raises(ValueError, match="at least 20"):
        PointFlash().fit(sim_test_adc[:5])
    with pytest.raises(ValueError, match="H, W >= 2"):
        local_excess(np.zeros((3, 1, 8)))
    with pytest.raises(ValueError, match="H, W >= 2"):
        local_excess(np.zeros((3, 2, 8, 8)))  # two channels


def test_any_frame_size_works_a_module_of_four_quabos():
    x = np.full((1, 32, 32), 16.0, np.float32)
    x[0, 20, 30] += 90.0
    np.testing.assert_allclose(local_excess(x, 20.0), [90.0 / np.sqrt(36.0)], rtol=1e-6)


def test_a_block_is_its_weakest_pixel_against_the_ring_around_it():
    x = np.full((3, 16, 16), 16.0, np.float32)
    x[0, 5:7, 8:10] += 150.0  # light shared by four pixels
    x[1, 5, 8] += 600.0  # the same light in one pixel
    x[2, 5:7, 8:10] += [[150.0, 150.0], [150.0, 40.0]]  # one pixel of the four dim
    z = local_excess(x, noise_floor=20.0, block="2x2")
    shared = 150.0 / np.sqrt(16.0 + 20.0)  # the ring of 12 is the flat sky
    np.testing.assert_allclose(z[0], shared, rtol=1e-5)
    # one bright pixel lights no whole block: its best block is the pixel and three
    # dark ones, whose weakest pixel sits at or below its ring
    assert z[1] <= 0.0
    np.testing.assert_allclose(z[2], 40.0 / np.sqrt(36.0), rtol=1e-5)
    # (1, 1) is the single-pixel excess, whichever way the block is written
    for frames in (x, np.random.default_rng(0).poisson(20, (5, 16, 16))):
        np.testing.assert_array_equal(
            local_excess(frames, 10.0), local_excess(frames, 10.0, block=(1, 1))
        )
    np.testing.assert_array_equal(
        local_excess(x, 20.0, block=(2, 2)), local_excess(x, 20.0, block="2X2")
    )


def _shared_flash(frames, seed: int, corners: tuple[int, int]) -> np.ndarray:
    """Copies of ``frames`` with 150 ADC added to each pixel of a random 2x2 block whose
    top-left pixel lies in ``range(*corners)`` along both axes."""
    rng = np.random.default_rng(seed)
    n = len(frames)
    out = np.asarray(frames, np.float32).copy()
    r, c = rng.integers(*corners, n), rng.integers(*corners, n)
    for dr in (0, 1):
        for dc in (0, 1):
            out[np.arange(n), r + dr, c + dc] += 150.0
    return out


def test_a_flash_shared_by_four_pixels_is_seen_by_the_block_not_the_pixel(
    sim_normal_adc, sim_test_adc
):
    n = len(sim_test_adc)
    shared = _shared_flash(sim_test_adc, seed=4, corners=(1, 14))
    y = np.r_[np.zeros(n), np.ones(n)]
    block = PointFlash(block=(2, 2)).fit(sim_normal_adc)
    pixel = PointFlash().fit(sim_normal_adc)

    def auc(det):
        return metrics.roc_auc(
            y, np.r_[det.anomaly_score(sim_test_adc), det.anomaly_score(shared)]
        )

    assert auc(block) > 0.97
    assert auc(block) > auc(pixel) + 0.05


def test_bad_blocks_are_clear():
    for bad in ("2", "2x", "axb", (0, 2), (2,), "1x1x1", (2.7, 2), (True, 2), 2):
        with pytest.raises(ValueError, match="block"):
            PointFlash(block=bad)
    with pytest.raises(ValueError, match="does not fit"):
        local_excess(np.zeros((1, 4, 4)), block=(5, 1))


def _excess_by_hand(x, h, w, floor, slope=0.0):
    """The block excess pixel by pixel: the ring is the (h+2) x (w+2) box around the
    block less the block, the next ring out the (h+4) x (w+4) box less that box, a
    position outside the frame read at the nearest pixel; the light expected in the
    block is the ring's mean plus ``slope`` times its rise over the next ring."""
    n, H, W = x.shape

    def ring_mean(r, c, k):
        values = []
        for i in range(r - k, r + h + k):
            for j in range(c - k, c + w + k):
                if r - k + 1 <= i < r + h + k - 1 and c - k + 1 <= j < c + w + k - 1:
                    continue
                values.append(x[:, min(max(i, 0), H - 1), min(max(j, 0), W - 1)])
        return np.mean(values, axis=0)

    best = np.full(n, -np.inf)
    for r in range(H - h + 1):
        for c in range(W - w + 1):
            m = ring_mean(r, c, 1)
            if slope:
                m = m + slope * np.maximum(m - ring_mean(r, c, 2), 0)
            weakest = x[:, r : r + h, c : c + w].reshape(n, -1).min(axis=1)
            best = np.maximum(best, (weakest - m) / np.sqrt(np.maximum(m, 0) + floor))
    return best


@pytest.mark.parametrize("slope", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("block", [(1, 1), (1, 2), (2, 1), (2, 2), (3, 2)])
def test_the_block_excess_is_what_its_definition_says(block, slope):
    rng = np.random.default_rng(7)
    x = rng.poisson(20, (6, 9, 11)).astype(np.float32)
    x[0, 0, 0] += 400  # a corner
    x[1, 0:2, 5:7] += 150  # a block on the top edge
    x[2, 8, 3:5] += 200  # the bottom edge
    x[3, 3:6, 4:7] += [[40, 90, 40], [90, 300, 90], [40, 90, 40]]  # a core on a slope
    np.testing.assert_allclose(
        local_excess(x, 10.0, block, slope),
        _excess_by_hand(x, *block, 10.0, slope),
        rtol=1e-5,
    )


def test_the_slope_expects_a_core_on_a_slope_and_nothing_on_flat_sky():
    """A shower's core sits on light rising towards it: carried into the block, that
    rise expects a bright core. A flash on flat sky has no rise and keeps its excess."""
    yy, xx = np.mgrid[:16, :16]
    core = 1500.0 * np.exp(-((yy - 7.5) ** 2 + (xx - 7.5) ** 2) / (2 * 1.5**2))
    flash = np.full((16, 16), 16.0)
    flash[7:9, 7:9] += 150.0
    x = np.stack([core + 16.0, flash]).astype(np.float32)
    flat, sloped = local_excess(x, block="2x2"), local_excess(x, block="2x2", slope=1.0)
    assert sloped[1] == flat[1]
    assert sloped[0] < 0.5 * flat[0], (flat, sloped)
    assert sloped[1] > sloped[0]  # the flash now outranks the far brighter core


def test_the_default_slope_is_the_footprints_and_bad_slopes_are_clear():
    assert PointFlash().ring_slope == 0.0
    assert PointFlash(block="2x2").ring_slope == 1.0
    assert PointFlash(block="2x2", slope=0).ring_slope == 0.0
    assert PointFlash(slope=0.5).ring_slope == 0.5
    assert PointFlash(slope=np.float32(0.5)).ring_slope == 0.5
    for bad in (-1, float("nan"), float("inf"), "steep", "0.5", True, np.True_, [1]):
        with pytest.raises(ValueError, match="slope"):
            PointFlash(block="2x2", slope=bad)
        with pytest.raises(ValueError, match="slope"):
            local_excess(np.zeros((1, 4, 4)), slope=bad)


def test_on_simulated_frames_the_slope_helps_the_block_not_the_pixel(sim_test_adc):
    """The default slopes, checked on simulation alone: carrying the ring's rise into a
    2x2 block separates the shared flash from plain simulated frames better than the
    ring alone; for one pixel a simulated point source, whose light spreads into its
    neighbours, is seen better without it."""
    from phbook.sim import panoseti

    n = len(sim_test_adc)
    y = np.r_[np.zeros(n), np.ones(n)]
    shared = _shared_flash(sim_test_adc, seed=5, corners=(0, 15))

    def auc(flashed, **kw):
        return metrics.roc_auc(
            y, np.r_[local_excess(sim_test_adc, **kw), local_excess(flashed, **kw)]
        )

    assert auc(shared, block="2x2", slope=1.0) > auc(shared, block="2x2") + 0.005
    sim = panoseti.simulate(3000, seed=3, anomaly_fraction=1.0)
    points = sim.adc[sim.classes == "point_source"][:n].astype(np.float32)
    yp = np.r_[np.zeros(n), np.ones(len(points))]

    def auc_points(slope):
        return metrics.roc_auc(
            yp,
            np.r_[
                local_excess(sim_test_adc, slope=slope), local_excess(points, slope=slope)
            ],
        )

    assert auc_points(0.0) > auc_points(1.0), (auc_points(0.0), auc_points(1.0))


def test_the_block_survives_clone_set_params_and_the_model_file(sim_normal_adc, tmp_path):
    from sklearn.base import clone

    from phbook import modelfile

    det = PointFlash(block="2x2", slope=0.5)
    assert clone(det).footprint == (2, 2) and clone(det).ring_slope == 0.5
    det = PointFlash().set_params(block="2x2", slope=0.5).fit(sim_normal_adc)
    path = modelfile.save(
        tmp_path / "pf.pt", det, "point-flash", dp="ph256", normalisation={"kind": "none"}
    )
    m = modelfile.load(path)
    back = m.detector
    assert back.footprint == (2, 2) and m.params["block"] == "2x2"
    assert back.ring_slope == 0.5 and m.params["slope"] == 0.5
    np.testing.assert_array_equal(
        back.anomaly_score(sim_normal_adc[:50]), det.anomaly_score(sim_normal_adc[:50])
    )


def test_a_model_file_from_before_the_block_option_reads_as_one_pixel(
    sim_normal_adc, tmp_path
):
    import torch

    from phbook import modelfile

    det = PointFlash().fit(sim_normal_adc)
    path = modelfile.save(
        tmp_path / "pf.pt", det, "point-flash", dp="ph256", normalisation={"kind": "none"}
    )
    obj = torch.load(path, weights_only=True)
    del obj["params"]["block"]  # as phbook wrote it before the option existed
    torch.save(obj, path)
    back = modelfile.load(path).detector
    assert back.footprint == (1, 1)
    np.testing.assert_array_equal(
        back.anomaly_score(sim_normal_adc[:50]), det.anomaly_score(sim_normal_adc[:50])
    )


def test_the_brightest_block_is_where_the_flash_was_put():
    from phbook.detectors.pointflash import brightest_block, excess_map

    x = np.random.default_rng(8).poisson(20, (4, 16, 16)).astype(np.float32)
    at = [(0, 0), (5, 9), (14, 3), (7, 14)]  # top-left pixels of 2x2 flashes
    for k, (r, c) in enumerate(at):
        x[k, r : r + 2, c : c + 2] += 300.0
    row, col, z = brightest_block(x, block=(2, 2))
    assert list(zip(row.tolist(), col.tolist(), strict=True)) == at
    np.testing.assert_array_equal(z, local_excess(x, block=(2, 2)))
    assert excess_map(x, block=(2, 2)).shape == (4, 15, 15)


def test_on_simulated_frames_the_weakest_pixel_beats_the_block_mean(sim_test_adc):
    """The rule of the block check, checked on simulation alone: for light shared by
    four pixels, the block's weakest pixel over its ring separates flashed from plain
    simulated frames better than the block's mean over its ring (a single bright pixel
    lifts a block's mean as much as the shared flash does)."""
    from phbook.detectors.pointflash import _window_sum

    def block_mean(frames, floor=10.0):
        x = np.asarray(frames, np.float32)
        p = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
        inner = _window_sum(x, 2, 2)
        ring = (_window_sum(p, 4, 4) - inner) / 12.0
        z = (inner / 4 - ring) / np.sqrt(np.maximum(ring, 0) + floor)
        return z.reshape(len(x), -1).max(axis=1)

    n = len(sim_test_adc)
    shared = _shared_flash(sim_test_adc, seed=5, corners=(0, 15))
    y = np.r_[np.zeros(n), np.ones(n)]
    weakest = metrics.roc_auc(
        y,
        np.r_[local_excess(sim_test_adc, block=(2, 2)), local_excess(shared, block=(2, 2))],
    )
    mean = metrics.roc_auc(y, np.r_[block_mean(sim_test_adc), block_mean(shared)])
    assert weakest > mean + 0.02, (weakest, mean)


def test_a_block_model_file_from_before_the_slope_option_keeps_its_rule(
    sim_normal_adc, tmp_path
):
    """A 2x2 model file written before the slope existed was fitted without it: it
    reads with slope 0, the rule its learned tail belongs to, not the new default."""
    import torch

    from phbook import modelfile

    det = PointFlash(block="2x2", slope=0).fit(sim_normal_adc)
    path = modelfile.save(
        tmp_path / "pf.pt", det, "point-flash", dp="ph256", normalisation={"kind": "none"}
    )
    obj = torch.load(path, weights_only=True)
    del obj["params"]["slope"]
    torch.save(obj, path)
    loaded = modelfile.load(path)
    back = loaded.detector
    assert back.footprint == (2, 2) and back.ring_slope == 0.0
    assert loaded.params["slope"] == 0.0 and loaded.params["block"] == "2x2"
    np.testing.assert_array_equal(
        back.anomaly_score(sim_normal_adc[:50]), det.anomaly_score(sim_normal_adc[:50])
    )
