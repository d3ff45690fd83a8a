"""The k-means baseline, the top-k metrics and the galaxy benchmark of chapter 12."""

import numpy as np
import pandas as pd
import pytest

from phbook import datasets, detectors, metrics, transforms


def two_shapes(n=300, seed=0):
    """Normal images: one of two blobs (left or right) in noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:8, :8]
    left = np.exp(-((yy - 3.5) ** 2 + (xx - 2.0) ** 2) / 2.0)
    right = np.exp(-((yy - 3.5) ** 2 + (xx - 5.0) ** 2) / 2.0)
    which = rng.integers(0, 2, n)[:, None, None]
    x = np.where(which == 0, left, right) + 0.05 * rng.standard_normal((n, 8, 8))
    return x.astype(np.float32)


@pytest.mark.parametrize("n_components", [None, 4])
def test_kmeans_score_is_the_distance_to_the_nearest_centroid(n_components):
    x = two_shapes()
    det = detectors.KMeansDetector(n_clusters=2, n_components=n_components).fit(x)
    feats = det.transform(x)
    dist = np.linalg.norm(feats[:, None] - det.cluster_centers_[None], axis=2)
    np.testing.assert_allclose(det.anomaly_score(x), dist.min(axis=1), rtol=1e-5)
    # scikit-learn's sign convention: score_samples higher = more normal
    np.testing.assert_allclose(det.score_samples(x), -det.anomaly_score(x))
    assert det.anomaly_score(x).shape == (len(x),)
    assert det.anomaly_score(x[:, None]).shape == (len(x),)
    assert feats.shape == (len(x), 64 if n_components is None else 4)
    # the two centroids are the two shapes: every image is near one of them
    assert set(det.predict_cluster(x)) == {0, 1}


def test_kmeans_separates_an_obvious_outlier():
    x = two_shapes()
    det = detectors.KMeansDetector(n_clusters=2, n_components=8).fit(x)
    odd = two_shapes(1, seed=5)
    odd[0, 0, 0] += 5.0  # a hot corner pixel
    test = np.concatenate([two_shapes(50, seed=1), odd])
    scores = det.anomaly_score(test)
    assert scores.argmax() == len(test) - 1
    assert scores[-1] > 3 * scores[:-1].max()
    assert det.predict(odd)[0] == -1
    assert np.mean(det.predict(two_shapes(200, seed=2)) == 1) > 0.9


def test_kmeans_bad_arguments_name_themselves():
    x = two_shapes(20)
    with pytest.raises(ValueError, match="n_clusters"):
        detectors.KMeansDetector(n_clusters=21).fit(x)
    with pytest.raises(ValueError, match="n_components"):
        detectors.KMeansDetector(n_components=0).fit(x)
    det = detectors.KMeansDetector(n_clusters=2, n_components=None).fit(x)
    with pytest.raises(ValueError, match="shape"):
        det.anomaly_score(np.zeros((3, 6, 6), np.float32))


def test_top_k_recall_on_a_hand_case():
    # ranking by score: idx 2 (0.9, pos), 0 (0.8, neg), 3 (0.5, pos), 1 (0.1, neg),
    # 4 (0.0, pos)
    scores = [0.8, 0.1, 0.9, 0.5, 0.0]
    labels = [0, 0, 1, 1, 1]
    got = metrics.top_k_recall(labels, scores)
    np.testing.assert_allclose(got.to_numpy(), [1 / 3, 1 / 3, 2 / 3, 2 / 3, 1.0])
    assert list(got.index) == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(metrics.top_k_recall(labels, scores, ks=[3]), [2 / 3])
    # ties keep the input order: the first of two equal scores ranks first
    np.testing.assert_allclose(metrics.top_k_recall([1, 0], [1.0, 1.0], [1]), [1.0])
    np.testing.assert_allclose(metrics.top_k_recall([0, 1], [1.0, 1.0], [1]), [0.0])
    with pytest.raises(ValueError, match="ks"):
        metrics.top_k_recall(labels, scores, ks=[6])
    with pytest.raises(ValueError, match="positives"):
        metrics.top_k_recall([0, 0], [1.0, 2.0])


def test_top_k_composition_on_a_hand_case():
    scores = [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
    classes = ["star", "merger", "star", "normal", "normal", "merger"]
    table = metrics.top_k_composition(scores, classes, k=3)
    assert list(table.index) == ["star", "merger", "normal"]
    assert table.loc["star", "top_k"] == 2 and table.loc["merger", "top_k"] == 1
    assert table.loc["normal", "top_k"] == 0
    np.testing.assert_allclose(table["share"].sum(), 1.0)
    np.testing.assert_allclose(table.loc["star", "recall"], 1.0)
    np.testing.assert_allclose(table.loc["merger", "recall"], 0.5)
    # stars are 2/6 of the set and 2/3 of the top 3: enriched twofold
    np.testing.assert_allclose(table.loc["star", "enrichment"], 2.0)
    with pytest.raises(ValueError, match="k must"):
        metrics.top_k_composition(scores, classes, k=0)


def test_rebin_keeps_unit_noise_and_sums_blocks():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((200, 16, 16))
    binned = transforms.rebin(noise, 2)
    assert binned.shape == (200, 8, 8)
    assert binned.std() == pytest.approx(1.0, abs=0.02)
    x = np.arange(16.0).reshape(1, 4, 4)
    np.testing.assert_allclose(transforms.rebin(x, 2)[0, 0, 0], (0 + 1 + 4 + 5) / 2)
    with pytest.raises(ValueError, match="factor"):
        transforms.rebin(x, 0)


def test_galaxy_benchmark_units_and_labels(tmp_path, monkeypatch):
    monkeypatch.setenv("PHBOOK_DATA", str(tmp_path))
    data = datasets.galaxy_benchmark(40, 100, seed=3, size=32)
    assert data.x_train.shape == (40, 32, 32) and data.x_test.shape == (100, 32, 32)
    assert set(data.classes_train) == {"normal"}
    assert (data.groups_test == "normal").mean() == pytest.approx(0.8, abs=0.05)
    assert set(data.labels_test) == {0, 1}
    assert np.array_equal(data.labels_test, data.classes_test != "normal")
    # sky noise is one in these units: the outer ring of normal stamps is mostly sky
    ring = data.x_train[:, :3, :].ravel()
    assert 0.8 < np.std(ring) < 1.5
    assert isinstance(data.params_test, pd.DataFrame)
