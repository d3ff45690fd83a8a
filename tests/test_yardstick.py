import numpy as np
import pytest

from phbook import yardstick as Y
from phbook.io import pff


def _frame(values: dict) -> np.ndarray:
    x = np.zeros((16, 16), np.int16)
    for (r, c), v in values.items():
        x[r, c] = v
    return x


def test_cleaning_keeps_pictures_and_their_touching_boundaries():
    x = _frame({(5, 5): 200, (5, 6): 100, (6, 7): 100, (10, 10): 100, (2, 2): 151})
    m = Y.clean(x)[0]
    assert m[5, 5] and m[5, 6] and m[2, 2]  # picture (even alone) and its neighbour
    assert not m[6, 7]  # touches the picture only diagonally
    assert not m[10, 10]  # boundary level, far from any picture pixel
    assert m.sum() == 3


def test_hillas_moments_of_a_known_image():
    # a horizontal bar of 5 equal pixels: length = std of 0..4 = sqrt(2) px, width 0
    x = _frame({(8, c): 300 for c in range(4, 9)})
    s = Y.frame_statistics(x).iloc[0]
    assert s["survives"] and s["n_pixels"] == 5 and s["size"] == 1500
    assert s["length"] == pytest.approx(np.sqrt(2) * 0.3125)
    assert s["width"] == pytest.approx(0.0, abs=1e-9)
    assert s["max"] == 300 and s["median"] == 0


def test_frames_with_too_few_pixels_have_no_hillas_parameters():
    s = Y.frame_statistics(_frame({(3, 3): 500, (3, 4): 90})).iloc[0]
    assert not s["survives"] and np.isnan(s["size"]) and np.isnan(s["length"])


def test_speckled_frames_are_counted_then_left_out():
    rng = np.random.default_rng(0)
    showers = rng.normal(15, 8, (40, 16, 16)).astype(np.int16)
    showers[:, 6:9, 6:10] += 400
    speckled = rng.gamma(5, 600 / 5, (10, 16, 16)).astype(np.int16)
    a = Y.summarize(showers)
    b = Y.summarize(np.concatenate([showers, speckled]))
    assert b[("speckled_fraction", "-")] == pytest.approx(0.2)
    assert a[("speckled_fraction", "-")] == 0
    assert np.allclose(a.to_numpy()[:-1], b.to_numpy()[:-1])  # all but speckled


def test_shower_parameters_are_the_yardsticks_frames_with_every_hillas_column():
    rng = np.random.default_rng(1)
    frames = rng.normal(15, 8, (30, 16, 16)).astype(np.int16)
    frames[:20, 6:9, 6:10] += rng.integers(100, 600, (20, 1, 1)).astype(np.int16)
    frames[5] = rng.gamma(5, 600 / 5, (16, 16)).astype(np.int16)  # speckled
    frames[7] = _frame({(3, 3): 500, (3, 4): 90})  # one cleaned pixel: no parameters
    quabo = np.arange(30) % 4
    h = Y.shower_parameters(frames, quabo)
    stats = Y.frame_statistics(frames)
    kept = stats.index[stats["survives"] & ~stats["speckled"]]
    assert 5 not in h.index and 7 not in h.index and list(h.index) == list(kept)
    for col in ("size", "length", "width", "n_pixels"):
        np.testing.assert_allclose(h[col], stats.loc[kept, col])
    assert {"distance", "psi", "leakage"} <= set(h.columns)
    # distance is from the module's centre: it depends on the quabo
    assert not np.allclose(h["distance"], Y.shower_parameters(frames)["distance"])
    with pytest.raises(ValueError, match="one quabo per frame"):
        Y.shower_parameters(frames, quabo[:3])


def test_compare_passes_a_set_against_itself_and_fails_a_scaled_one():
    rng = np.random.default_rng(1)
    x = rng.normal(15, 8, (300, 16, 16))
    r, c = rng.integers(3, 13, 300), rng.integers(3, 13, 300)
    amp = rng.lognormal(6, 0.7, 300)
    for i in range(300):
        x[i, r[i] - 1 : r[i] + 2, c[i] - 1 : c[i] + 3] += amp[i]
    x = np.rint(x).astype(np.int16)
    same = Y.compare(x, x, n_boot=50)
    assert same.failures == 0 and same.distance == 0
    scaled = Y.compare(x, (x * 1.6).astype(np.int16), n_boot=50)
    t = scaled.table
    assert not t.loc[("size", "p50"), "pass"] and not t.loc[("max", "p50"), "pass"]
    assert scaled.failures >= 4 and "FAIL" in str(scaled)


def test_tolerance_is_the_larger_of_relative_and_two_bootstrap_sds():
    real = Y.summarize(np.zeros((5, 16, 16)))
    real[:] = 100.0
    boot = real * 0 + 1.0
    boot[("size", "p90")] = 30.0
    tol = Y.tolerance(real, boot)
    assert tol[("size", "p50")] == pytest.approx(10.0)
    assert tol[("size", "p10")] == pytest.approx(20.0)
    assert tol[("size", "p90")] == pytest.approx(60.0)
    assert tol[("survive_fraction", "-")] == pytest.approx(2.0)  # 0.02 < 2 sd


def test_the_real_sample_gives_the_issue_figures(real_ph256):
    real = pff.read_frames(real_ph256, warn=False).images
    s = Y.summarize(real)
    assert s[("speckled_fraction", "-")] == pytest.approx(4 / 88)
    assert s[("max", "p50")] == 296 and s[("size", "p50")] == 1989
    assert s[("length", "p50")] == pytest.approx(0.353, abs=1e-3)
    assert s[("width", "p50")] == pytest.approx(0.215, abs=1e-3)
    assert s[("n_pixels", "p90")] == pytest.approx(35.5)
