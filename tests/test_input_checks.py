"""Inputs the Python API refuses instead of answering wrongly: NaN pixels, a NaN
training score, extra channels where one is read, non-binary labels, AUCs outside
[0, 1], NaN alert budgets and scores."""

from __future__ import annotations

import numpy as np
import pytest

from phbook import alerts, metrics
from phbook import detectors as D


@pytest.fixture(scope="module")
def frames():
    return np.random.default_rng(0).poisson(15, (200, 16, 16)).astype(np.float32)


@pytest.mark.parametrize(
    "make",
    [
        lambda: D.IsolationForestDetector(n_estimators=20),
        lambda: D.HillasCut(),
        lambda: D.ReadoutFaults(),
        lambda: D.ScoreFusion([D.HillasCut(), D.ReadoutFaults()]),
    ],
    ids=["iforest", "hillas", "readout", "fusion"],
)
def test_nan_or_infinite_pixels_are_refused_in_training_and_scoring(frames, make):
    bad = frames[:5].copy()
    bad[2, 3, 3] = np.nan
    with pytest.raises(ValueError, match="image 2 holds NaN"):
        make().fit(np.concatenate([bad, frames]))
    det = make().fit(frames)
    with pytest.raises(ValueError, match="image 2 holds NaN"):
        det.anomaly_score(bad)
    bad[2, 3, 3] = np.inf
    with pytest.raises(ValueError, match="image 2 holds NaN or infinite"):
        det.predict(bad)


def test_a_detector_whose_training_scores_are_nan_sets_no_threshold(frames):
    class Broken(D.PCAReconstruction):
        def _anomaly_score(self, x):
            return np.full(len(x), np.nan)

    with pytest.raises(ValueError, match="NaN or infinite score"):
        Broken(4).fit(frames)


def test_physics_detectors_read_one_channel_and_refuse_more(frames):
    two = np.stack([frames, frames], axis=1)
    for det in (D.HillasCut(), D.PointFlash(), D.ReadoutFaults()):
        with pytest.raises(ValueError, match="single-channel"):
            det.fit(two)


def test_metrics_refuse_non_binary_labels_and_impossible_aucs():
    with pytest.raises(ValueError, match="0 \\(normal\\) or 1"):
        metrics.roc_auc([0, 0, 0, 0.7, 1], [0.1, 0.2, 0.3, 0.4, 0.5])
    for bad in (np.nan, 85.0, -0.1):
        with pytest.raises(ValueError, match="lies in \\[0, 1\\]"):
            metrics.compare_aucs(bad, 0.5, 50, 50)
        with pytest.raises(ValueError, match="lies in \\[0, 1\\]"):
            metrics.versus_chance(bad, 50, 50)
    with pytest.raises(ValueError, match="at least 1"):
        metrics.auc_standard_error(0.9, 0, 10)
    with pytest.raises(ValueError, match="named 'all'"):
        metrics.per_class_report([0.1, 0.9, 0.5], ["normal", "all", "x"])


def test_alerts_refuse_a_nan_budget_and_nan_scores():
    s = np.random.default_rng(1).normal(size=1000)
    with pytest.raises(ValueError, match="alarms_per_hour"):
        alerts.threshold_for_rate(s, np.nan, 1.0)
    bad = s.copy()
    bad[:3] = np.nan
    with pytest.raises(ValueError, match="3 scores are NaN"):
        alerts.false_alarms_per_hour(bad, 0.0, 1.0)
    with pytest.raises(ValueError, match="NaN"):
        alerts.detection_rates(bad, ["normal"] * 1000, 0.0)


def test_simulating_no_frames_gives_empty_sets_and_a_class_named_twice_is_refused():
    from phbook.sim import panoseti as P

    rng = np.random.default_rng(0)
    inst, pop = P.Instrument(), P.ShowerPopulation()
    assert P.simulate_normal(0, rng, inst, pop)[0].shape == (0, 16, 16)
    assert len(P.simulate_anomalies("hot_pixel", 0, rng, inst, pop)) == 0
    with pytest.raises(ValueError, match="hot_pixel more than once"):
        P.simulate(10, anomaly_fraction=0.5, anomaly_classes=("hot_pixel", "hot_pixel"))
    with pytest.raises(ValueError, match="whole number"):
        P.simulate(2.5)


def test_stretches_refuse_nan_and_infinite_parameters():
    from phbook import transforms

    for bad in (np.nan, np.inf, 0.0, -1.0):
        with pytest.raises(ValueError, match="positive and finite"):
            transforms.AsinhStretch(softening=bad)
        with pytest.raises(ValueError, match="positive and finite"):
            transforms.SqrtStretch(bad)
        with pytest.raises(ValueError, match="positive and finite"):
            transforms.LinearScale(bad)


def test_strength_bins_off_the_strengths_scale_and_unfitted_kmeans_are_refused(frames):
    rng = np.random.default_rng(2)
    classes = np.r_[["normal"] * 50, ["hot_pixel"] * 50]
    scores = rng.normal(size=100)
    adc = np.r_[np.full(50, np.nan), rng.uniform(100, 3000, 50)]  # strengths in ADC
    with pytest.raises(ValueError, match="strengths run 1"):
        metrics.auc_by_strength(scores, classes, adc)
    with pytest.raises(RuntimeError, match="not fitted"):
        D.KMeansDetector().transform(frames)


def test_training_refuses_fractional_sizes_and_nan_data():
    import torch

    from phbook import train

    model = torch.nn.Linear(4, 4)
    model.loss = lambda batch: ((model(batch) - batch) ** 2).mean()
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="batch_size must be a whole number"):
        train.fit(model, x, epochs=1, batch_size=2.5)
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        train.fit(model, x, epochs=1, batch_size=16)


def test_a_boolean_mask_is_not_taken_for_images(frames):
    with pytest.raises(TypeError, match="boolean array"):
        D.PCAReconstruction().fit(frames > 15)


def test_one_training_image_is_too_few_to_learn_normal_from(frames):
    # an IsolationForest fitted on one frame scored every frame 0.5
    with pytest.raises(ValueError, match="at least 2 training images"):
        D.IsolationForestDetector(n_estimators=20).fit(frames[:1])
    # the detectors with a fit of their own make the same check, before any training
    for det in (D.AnoGANDetector(), D.SmoothLensDetector()):
        with pytest.raises(ValueError, match="at least 2 training images"):
            det.fit(frames[:1])


@pytest.mark.parametrize(
    "call",
    [
        lambda x: D.IncrementalPCADetector(n_components=4).transform(x),
        lambda x: D.DictionaryLearningDetector().transform(x),
        lambda x: D.ScoreFusion([D.HillasCut(), D.ReadoutFaults()]).p_values(x),
        lambda x: D.ScoreFusion([D.HillasCut(), D.ReadoutFaults()]).log_p_values(x),
    ],
    ids=["ipca", "dictionary", "fusion-p", "fusion-logp"],
)
def test_methods_used_before_fit_say_so(frames, call):
    with pytest.raises(RuntimeError, match="not fitted yet"):
        call(frames[:10])
