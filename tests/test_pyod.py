"""PyOD and scikit-learn detectors as phbook detectors (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import LocalOutlierFactor

from phbook import alerts, detectors, metrics, modelfile
from phbook.detectors import PyODDetector, make_pyod


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8)).astype(np.float32)
    odd = rng.normal(size=(40, 8, 8)).astype(np.float32)
    odd[:, 2:5, 2:5] += 4.0
    return x, odd


@pytest.mark.parametrize("est", ["KNN", "ECOD", "IForest", "LOF", "COPOD", "OCSVM"])
def test_pyod_detectors_score_anomalies_high(est):
    x, odd = _data()
    det = PyODDetector(est).fit(x)
    s_norm, s_odd = det.anomaly_score(x[:40]), det.anomaly_score(odd)
    labels = np.r_[np.zeros(40), np.ones(40)]
    assert metrics.roc_auc(labels, np.r_[s_norm, s_odd]) > 0.9
    # the phbook conventions: score_samples is the negative, predict flags outliers
    np.testing.assert_array_equal(det.score_samples(odd), -s_odd)
    assert (det.predict(odd) == -1).mean() > (det.predict(x[:40]) == -1).mean() + 0.2


@pytest.mark.parametrize(
    "est", [IsolationForest(random_state=0), LocalOutlierFactor(novelty=True)]
)
def test_scikit_learn_sign_is_turned_around(est):
    x, odd = _data()
    det = PyODDetector(est).fit(x)
    assert det.sign_ == "normality"
    assert np.median(det.anomaly_score(odd)) > np.median(det.anomaly_score(x[:40]))
    # forcing the wrong reading flips the ranking: the sign is not an accident
    wrong = PyODDetector(est, sign="anomaly").fit(x)
    assert np.median(wrong.anomaly_score(odd)) < np.median(wrong.anomaly_score(x[:40]))


def test_scaling_is_fitted_on_training_images():
    x, _ = _data()
    x = x * np.linspace(1, 100, 64, dtype=np.float32).reshape(8, 8)
    det = PyODDetector("KNN", scale="standard").fit(x)
    z = det._features(det._checked(x))
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-6)
    rob = PyODDetector("KNN", scale="robust").fit(x)
    assert np.allclose(np.median(rob._features(rob._checked(x)), 0), 0, atol=1e-6)
    with pytest.raises(ValueError, match="scale must be one of"):
        PyODDetector("KNN", scale="minmax").fit(x)
    with pytest.raises(ValueError, match="unknown PyOD detector 'Nope'"):
        PyODDetector("Nope").fit(x)


def test_deep_pyod_detector_repeats_its_scores():
    x, odd = _data(200)
    det = PyODDetector("VAE", params={"epoch_num": 1, "latent_dim": 2}).fit(x)
    np.testing.assert_array_equal(det.anomaly_score(odd), det.anomaly_score(odd))
    svdd = make_pyod("DeepSVDD", n_features=64, epochs=1)
    assert svdd.n_features == 64 and svdd.verbose == 0


def test_wrapped_detectors_fuse_and_take_alert_thresholds():
    x, odd = _data()
    fusion = detectors.ScoreFusion(
        [PyODDetector("KNN"), PyODDetector("ECOD"), detectors.PCAReconstruction(4)]
    ).fit(x)
    s = fusion.anomaly_score(np.concatenate([x[:40], odd]))
    labels = np.r_[np.zeros(40), np.ones(40)]
    assert metrics.roc_auc(labels, s) > 0.9
    knn = PyODDetector("KNN").fit(x)
    th = alerts.threshold_for_rate(knn.anomaly_score(x), 1.0, 0.3)
    assert np.mean(knn.anomaly_score(odd) > th.threshold) > 0.5


def test_pyod_model_file_round_trip(tmp_path):
    x, odd = _data()
    det = PyODDetector(
        "IForest", params={"n_estimators": 50}, seed=3, keep_training_frames=True
    ).fit(x)
    path = modelfile.save(
        tmp_path / "m.pt", det, "pyod", dp="ph256", normalisation={"kind": "none"}
    )
    m = modelfile.load(path)
    assert m.family == "pyod" and m.params["pyod_model"] == "IForest"
    np.testing.assert_array_equal(m.detector.anomaly_score(odd), det.anomaly_score(odd))


@pytest.mark.parametrize("name", ["ECOD", "COPOD"])
def test_ecdf_detectors_score_each_frame_as_pyod_scores_it_alone(name):
    rng = np.random.default_rng(3)
    x_train = rng.gamma(2.0, 10.0, (300, 4, 4)).astype(np.float32)
    x_test = rng.gamma(2.0, 10.0, (30, 4, 4)).astype(np.float32)
    x_train[:, 0, 0] = np.round(x_train[:, 0, 0] / 10)  # ties in one pixel
    x_test[:, 0, 0] = np.round(x_test[:, 0, 0] / 10)
    det = PyODDetector(name).fit(x_train)
    scores = det.anomaly_score(x_test)
    est = det.estimator_
    alone = [
        est.decision_function(x_test[i : i + 1].reshape(1, -1).astype(np.float64))[0]
        for i in range(len(x_test))
    ]
    np.testing.assert_allclose(scores, alone, rtol=1e-10)
    # PyOD's own batch scores depend on the batch; the wrapper's do not
    batch = est.decision_function(x_test.reshape(len(x_test), -1).astype(np.float64))
    assert not np.allclose(batch, alone)
    parts = np.concatenate([det.anomaly_score(x_test[a : a + 7]) for a in range(0, 30, 7)])
    assert np.array_equal(parts, scores)
    assert np.array_equal(det.anomaly_score(x_test[::-1])[::-1], scores)


def test_ecod_per_frame_with_a_constant_pixel_and_standard_scaling():
    rng = np.random.default_rng(4)
    x_train = rng.normal(size=(200, 3, 3)).astype(np.float32)
    x_train[:, 1, 1] = 5.0  # never varies in training
    x_test = rng.normal(size=(20, 3, 3)).astype(np.float32)
    det = PyODDetector("ECOD", scale="standard").fit(x_train)
    scores = det.anomaly_score(x_test)
    assert np.isfinite(scores).all()
    f = det._features(x_test)
    alone = [det.estimator_.decision_function(f[i : i + 1])[0] for i in range(20)]
    np.testing.assert_allclose(scores, alone, rtol=1e-10)
    parts = np.concatenate([det.anomaly_score(x_test[:9]), det.anomaly_score(x_test[9:])])
    assert np.array_equal(parts, scores)


def test_pyod_autoencoder_scores_do_not_depend_on_the_chunk():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 6, 6)).astype(np.float32)
    det = PyODDetector("AutoEncoder", params={"epoch_num": 1}).fit(x[:200])
    whole = det.anomaly_score(x[200:])
    for chunk in (7, 33, 64):
        parts = [
            det.anomaly_score(x[200 + a : 200 + a + chunk]) for a in range(0, 100, chunk)
        ]
        assert np.array_equal(np.concatenate(parts), whole), chunk
