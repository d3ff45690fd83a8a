"""Chapter 9's comparisons: injected faults, AUC by strength, chunk invariance,
the supervised ceiling (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest

from phbook import detectors, transforms
from phbook.studies import benchmark, sidebyside


def _real_like(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.poisson(15, size=(n, 16, 16)) - 3).astype(np.int16)


def test_injected_faults_are_what_they_say():
    x = _real_like()
    f = sidebyside.inject_faults(x, seed=1)
    assert list(f) == list(sidebyside.FAULTS)
    for v in f.values():
        assert v.shape == x.shape and v.dtype == np.int16
    d1 = f["flash_1px"].astype(int) - x
    assert ((d1 != 0).sum(axis=(1, 2)) == 1).all() and d1.max() == 600
    d4 = f["flash_2x2"].astype(int) - x
    assert ((d4 != 0).sum(axis=(1, 2)) == 4).all() and d4.sum() == 600 * len(x)
    hot = f["hot_pixel"] == 3300
    assert hot.any(axis=0).sum() == 1 and hot.sum() == len(x)  # one pixel, every frame
    # a dead row: one whole row near zero in every frame
    near0 = np.abs(f["dead_row"]) <= 8
    assert (near0.all(axis=2).sum(axis=1) >= 1).all()
    # a dead chip: a whole 8x8 quarter near zero
    q = np.abs(f["dead_maroc"]).reshape(len(x), 2, 8, 2, 8) <= 8
    assert q.all(axis=(2, 4)).any(axis=(1, 2)).all()
    with pytest.raises(ValueError, match="shape"):
        sidebyside.inject_faults(x[:, :8])


def _tiny_result():
    rng = np.random.default_rng(0)
    classes = np.array(["normal"] * 200 + ["a"] * 100 + ["b"] * 100)
    strength = np.r_[np.full(200, np.nan), rng.uniform(0, 1, 200)]
    labels = classes != "normal"
    # a score that sees an anomaly in proportion to its strength
    s = rng.normal(size=400) + 4 * np.nan_to_num(strength) * labels
    r = benchmark.BenchmarkResult(
        table=None,
        scores={("D", 0): s},
        calibration={("D", 0): rng.normal(size=50)},
        fitted={},
        classes=classes,
        families={"D": "x"},
        spaces={"D": "pixel"},
        seeds=(0,),
        profile="quick",
    )
    return r, strength


def test_auc_grows_with_strength():
    r, strength = _tiny_result()
    t = sidebyside.auc_by_strength(r, strength, bins=4)
    allc = t[t["class"] == "all"].sort_values("strength")
    assert len(allc) == 4 and allc["n"].sum() == 200
    assert allc["auc"].iloc[0] < 0.75 < 0.95 < allc["auc"].iloc[-1]
    assert set(t["class"]) == {"all", "a", "b"}


def test_chunk_invariance_tells_batch_dependent_scores_apart():
    from phbook.detectors import PyODDetector

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8, 8)).astype(np.float32)

    class AgainstTheBatch(detectors.Detector):
        """A score that depends on the batch: the distance to the batch's mean."""

        def _fit(self, x):
            pass

        def _anomaly_score(self, x):
            f = x.reshape(len(x), -1)
            return ((f - f.mean(0)) ** 2).sum(1)

    fitted = {
        "PCA": detectors.PCAReconstruction(4).fit(x),
        "batch": AgainstTheBatch().fit(x),
        # PyOD's ECOD re-estimates its tails on the frames it scores; the wrapper
        # scores each frame alone
        "ECOD": PyODDetector("ECOD").fit(x),
    }
    t = sidebyside.chunk_invariance(fitted, x[:200], (13, 100), (1, 2), rtol=1e-9)
    assert bool(t.loc["PCA", "identical"]) and t.loc["PCA", "max_rel_diff"] == 0
    assert not bool(t.loc["batch", "identical"]) and bool(t.loc["batch", "moved"])
    assert bool(t.loc["ECOD", "identical"]), t


def test_supervised_cnn_needs_labels_and_learns_them():
    from phbook import metrics
    from phbook.detectors import SupervisedCNNDetector

    rng = np.random.default_rng(0)
    x = rng.poisson(3, (400, 16, 16)).astype(np.float32)
    y = np.zeros(400)
    y[::4] = 1
    r, c = rng.integers(0, 13, 400), rng.integers(0, 13, 400)
    for i in np.flatnonzero(y):
        x[i, r[i] : r[i] + 3, c[i] : c[i] + 3] += 15
    det = SupervisedCNNDetector(
        transforms.AsinhStretch(), fit_kwargs={"epochs": 12, "batch_size": 64, "lr": 3e-3}
    )
    with pytest.raises(ValueError, match="needs labels"):
        det.fit(x)
    with pytest.raises(ValueError, match="both normal and anomalous"):
        det.fit(x, np.zeros(400))
    det.fit(x[:300], np.where(y[:300] == 1, "blob", "normal"))
    assert metrics.roc_auc(y[300:], det.anomaly_score(x[300:])) > 0.95


def test_residual_score_matches_the_detectors_own_scores():
    rng = np.random.default_rng(0)
    x = np.asarray(transforms.AsinhStretch()(rng.poisson(3, (200, 16, 16))), np.float32)
    ae = detectors.AutoencoderDetector(
        model_kwargs={"latent_dim": 4}, fit_kwargs={"epochs": 1, "batch_size": 64}
    ).fit(x)
    for k, score in ((1, "recon_max"), (256, "recon"), (4, "recon_top4")):
        mine = detectors.ResidualScore(ae, k=k).fit(x).anomaly_score(x[:50])
        ae.score = score
        np.testing.assert_allclose(mine, ae.anomaly_score(x[:50]), rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="reconstruct"):
        detectors.ResidualScore(detectors.PCAReconstruction(2)).fit(x)
    with pytest.raises(ValueError, match="not fitted"):
        detectors.ResidualScore(detectors.AutoencoderDetector()).fit(x)
