"""The benchmark of chapter 9: runner, table, fusion, alert thresholds, real frames."""

from __future__ import annotations

import numpy as np
import pytest

from phbook import config, datasets, detectors, metrics, transforms
from phbook.sim import panoseti
from phbook.studies import benchmark as B


@pytest.fixture(scope="module")
def tiny():
    return datasets.ph_benchmark(300, 200, 15, seed=3, cache=False)


def _specs():
    return [
        B.DetectorSpec(
            "PCA",
            "classical",
            lambda seed: detectors.Transformed(
                detectors.PCAReconstruction(n_components=8), transforms.AsinhStretch()
            ),
        ),
        B.DetectorSpec(
            "IF",
            "classical",
            lambda seed: detectors.IsolationForestDetector(
                n_estimators=20, random_state=seed
            ),
        ),
        B.DetectorSpec(
            "Hillas", "physics", lambda seed: detectors.HillasCut(), max_seeds=1
        ),
    ]


def test_runner_table_classes_seeds_and_spread(tiny):
    result = B.run(tiny, _specs(), seeds=(0, 1))
    t = result.table
    for col in ("profile", "detector", "family", "seed", "class", "n", "fit_s"):
        assert col in t.columns
    assert set(B.METRICS) <= set(t.columns)
    assert "score_frames_per_s" in t.columns and (t["score_frames_per_s"] > 0).all()
    # one row per anomaly class and one 'all' row, per detector and seed
    expected = set(panoseti.ANOMALY_CLASSES) | {"all"}
    for (_, _), rows in t.groupby(["detector", "seed"]):
        assert set(rows["class"]) == expected
    assert set(t.loc[t.detector == "IF", "seed"]) == {0, 1}
    assert set(t.loc[t.detector == "Hillas", "seed"]) == {0}  # max_seeds=1
    # the table's AUC is the AUC of the stored scores
    s = result.scores["PCA", 1]
    auc = metrics.roc_auc(tiny.labels_test, s)
    row = t[(t.detector == "PCA") & (t.seed == 1) & (t["class"] == "all")]
    assert row["auc"].item() == pytest.approx(auc)
    # calibration frames are held out of training: one score per held-out frame
    assert len(result.calibration["PCA", 0]) == 30

    summary = B.summarize(t)
    assert {"auc", "auc_std", "tpr@1e-3_std", "n_seeds"} <= set(summary.columns)
    by = summary.set_index(["detector", "class"])
    assert by.loc[("IF", "all"), "n_seeds"] == 2
    aucs = t[(t.detector == "IF") & (t["class"] == "all")]["auc"]
    assert by.loc[("IF", "all"), "auc_std"] == pytest.approx(aucs.std(ddof=1))
    assert by.loc[("IF", "all"), "auc_std"] > 0  # the seeds change the forest
    assert np.isnan(by.loc[("Hillas", "all"), "auc_std"])  # one seed: no spread
    md = B.to_markdown(summary)
    assert md.count("\n") == len(summary) + 1 and "±" in md

    best = B.overall(t)
    assert list(best["auc"]) == sorted(best["auc"], reverse=True)


def test_fusion_matches_score_fusion_and_joins_the_table(tiny):
    result = B.run(tiny, _specs(), seeds=(0, 1))
    x = np.asarray(tiny.x_train, dtype=np.float32)
    x_cal, x_test = x[:30], np.asarray(tiny.x_test, dtype=np.float32)
    members = [result.fitted["PCA"], result.fitted["Hillas"]]
    for method in ("fisher", "mean_rank"):
        ref = detectors.ScoreFusion(members, method=method, refit=False).fit(x_cal)
        mine = B.fuse_scores(
            [result.calibration["PCA", 0], result.calibration["Hillas", 0]],
            [result.scores["PCA", 0], result.scores["Hillas", 0]],
            method,
        )
        np.testing.assert_allclose(mine, ref.anomaly_score(x_test))
    B.add_fusions(
        result, {"F": (("PCA", "Hillas"), "fisher"), "skip": (("nope",), "fisher")}
    )
    t = result.table
    assert set(t.loc[t.detector == "F", "seed"]) == {0, 1}
    assert "skip" not in set(t.detector) and result.families["F"] == "fusion"
    search = B.fusion_search(result, ["PCA", "IF", "Hillas"], max_size=3)
    assert len(search) == 4  # three pairs and one triple
    with pytest.raises(ValueError, match="method"):
        B.fuse_scores([np.zeros(3)], [np.zeros(3)], "max")


def test_alert_threshold_on_a_hand_computed_case():
    # 0.3 Hz -> 1080 frames an hour; 1 alarm an hour allows 1 normal frame in 1080:
    # with 10800 normal scores 0 .. 10799, 10 may lie above the threshold, 10789.
    normal = np.arange(10_800, dtype=float)
    a = np.array([10_795.0, 10_700.0, 20_000.0])  # 2 of 3 above 10789
    b = np.array([5.0, 10_790.0])  # 1 of 2 above
    scores = np.r_[normal, a, b]
    classes = np.array(["normal"] * 10_800 + ["a"] * 3 + ["b"] * 2)
    table = B.alert_table(
        {"det": scores}, classes, alarms_per_hour=1.0, trigger_rate_hz=0.3
    )
    row = table.loc["det"]
    assert row["threshold"] == 10_789
    assert row["allowed_fraction"] == pytest.approx(1 / 1080)
    assert bool(row["resolved"])
    assert row["a"] == pytest.approx(2 / 3) and row["b"] == pytest.approx(0.5)
    assert row["all anomalies"] == pytest.approx(3 / 5)
    assert row["normal"] == pytest.approx(10 / 10_800)  # = 1 alarm/hour at 0.3 Hz
    # 10 alarms an hour at 0.3 Hz: 100 normal frames above -> threshold 10699
    ten = B.alert_table({"det": scores}, classes, 10.0, 0.3).loc["det"]
    assert ten["threshold"] == 10_699 and ten["a"] == 1.0


def test_real_frames_skip_cleanly_when_absent(monkeypatch, tmp_path):
    monkeypatch.setattr(config, "real_data_dir", lambda: None)
    assert B.real_frames() is None
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(config, "real_data_dir", lambda: empty)
    assert B.real_frames() is None


def test_rank_real_orders_and_counts_flagged():
    scores = {"d": np.array([0.1, 5.0, 0.3, 9.0, 0.2])}
    ranking = B.rank_real(scores, flagged=[1, 3])
    assert list(ranking["d rank"]) == [5, 2, 3, 1, 4]
    assert B.flagged_in_top(ranking, "d", 2) == 2
    assert B.flagged_in_top(ranking, "d", 1) == 1
    with pytest.raises(ValueError, match="expected 5"):
        B.rank_real({"d": np.zeros(5), "e": np.zeros(4)})


def test_real_speckled_frames_rank_first(real_ph256, tiny):
    frames = B.real_frames(real_ph256)
    speckled = B.speckled_frames(frames.images)
    assert len(frames) == 88 and len(speckled) == 4
    med = np.median(frames.images.reshape(88, -1), axis=1)
    assert med[speckled].min() > 10 * np.median(med)
    det = detectors.HillasCut().fit(tiny.x_train.astype(np.float32))
    ranking = B.rank_real({"Hillas": det.anomaly_score(frames.images)}, speckled)
    assert B.flagged_in_top(ranking, "Hillas", 5) == 4


def test_transformed_is_the_inner_detector_on_transformed_input(tiny):
    stretch = transforms.AsinhStretch()
    x = tiny.x_train.astype(np.float32)
    wrapped = detectors.Transformed(detectors.PCAReconstruction(8), stretch).fit(x)
    inner = detectors.PCAReconstruction(8).fit(stretch(x))
    np.testing.assert_allclose(
        wrapped.anomaly_score(tiny.x_test), inner.anomaly_score(stretch(tiny.x_test))
    )
    assert wrapped.detector.__dict__.get("image_shape_") is None  # argument untouched


def test_detector_specs_follow_the_profile():
    quick = config.sizes("benchmark", "quick")
    names = [s.name for s in B.detector_specs(quick)]
    assert names == list(quick.detectors) and "PixelCNN" not in names
    full = config.sizes("benchmark", "full")
    assert "PixelCNN" in [s.name for s in B.detector_specs(full)]
    assert len(full.seeds) >= 3
    bad = config.Sizes({**quick, "detectors": ("PCA", "nope")})
    with pytest.raises(ValueError, match="nope"):
        B.detector_specs(bad)


def test_show_top_k_rows_ranks_and_highlight():
    import matplotlib

    matplotlib.use("Agg")
    from phbook import plotting

    x = np.zeros((5, 4, 4))
    x[:, 0, 0] = np.arange(5)
    fig = plotting.show_top_k(
        x,
        {"a": np.array([0.0, 3, 1, 2, 4]), "b": np.arange(5.0)},
        k=3,
        labels=list("vwxyz"),
        highlight=[4],
    )
    axes = np.array(fig.axes).reshape(2, 3)
    assert [ax.get_title() for ax in axes[0]] == ["1 z", "2 w", "3 y"]
    assert [ax.get_title() for ax in axes[1]] == ["1 z", "2 y", "3 x"]
    assert axes[0, 0].spines["left"].get_edgecolor()[:3] == (0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="3 scores"):
        plotting.show_top_k(x, {"a": np.zeros(3)})
