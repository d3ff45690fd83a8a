"""The benchmark data block, the book's three beta-VAEs and below-chance AUCs."""

import numpy as np
import pandas as pd
import pytest

from phbook import datasets, metrics, transforms
from phbook.studies import beta_vaes

SIZE = {"n_train": 300, "n_test_normal": 100, "n_test_per_class": 10}


def test_benchmark_data_is_stretched_shaped_and_split():
    data = datasets.ph_benchmark_data(SIZE)
    raw = datasets.ph_benchmark(300, 100, 10, seed=0)
    assert data.x_train.shape == (300, 1, 16, 16) and data.x_train.dtype == np.float32
    np.testing.assert_array_equal(
        data.x_train[:, 0], transforms.AsinhStretch()(raw.x_train)
    )
    assert len(data.x_val) == 30 and len(data.x_fit) == 270
    np.testing.assert_array_equal(data.x_val, data.x_train[:30])
    assert (data.classes == raw.classes_test).all() and data.labels.sum() > 0
    assert not repr(data).startswith("BenchmarkData(")
    # chapter 0's sizes: n_test, a tenth of it per anomaly class
    small = datasets.ph_benchmark_data({"n_train": 100, "n_test": 100})
    assert (small.classes != "normal").sum() == 10 * len(set(small.classes) - {"normal"})
    with pytest.raises(ValueError, match="n_test"):
        datasets.ph_benchmark_data({"n_train": 10})


def test_noise_variance_recovers_added_noise():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(8, 256))
    clean = rng.normal(size=(3000, 8)) @ basis
    noisy = clean + rng.normal(scale=0.1, size=clean.shape)
    var = beta_vaes.noise_variance(noisy[:2500], noisy[2500:], n_components=16)
    assert var == pytest.approx(0.01, rel=0.1)
    betas = beta_vaes.book_betas(var)
    assert betas["small"] < betas["medium"] < betas["large"]
    assert betas["medium"] == pytest.approx(2 * var, rel=0.05)


def test_below_chance_lists_the_inverted_classes():
    rng = np.random.default_rng(0)
    classes = np.array(["normal"] * 200 + ["bright"] * 50 + ["dim"] * 50)
    s = rng.normal(size=300)
    s[200:250] += 3  # ranked above normal
    s[250:] -= 3  # ranked below normal: AUC < 0.5
    table = metrics.compare({"det": s}, classes)
    out = metrics.below_chance(table)
    assert list(out["class"]) == ["dim"] and out["auc"].iloc[0] < 0.1
    assert isinstance(out, pd.DataFrame)


def test_warmup_vs_collapse_pairs_schedules_per_seed():
    """One row per (schedule, seed), both schedules of a seed from the same initial
    network, warm-up runs judged after their warm-up, and a reload gives the same."""
    data = datasets.ph_benchmark_data(SIZE)
    size = {
        "collapse_n_train": 200,
        "collapse_epochs": 3,
        "collapse_warmup": 2,
        "collapse_seeds": [0, 1],
        "batch_size": 64,
    }
    runs = beta_vaes.warmup_vs_collapse(data.x_fit, data.x_val, size, beta=0.5)
    t = runs.table
    assert list(t["schedule"]) == ["no warm-up", "warm-up"] * 2
    assert list(t["seed"]) == [0, 0, 1, 1]
    assert runs.warmup == 2 and runs.beta == 0.5
    assert set(runs.histories) == {
        (s, n) for s in ("no warm-up", "warm-up") for n in (0, 1)
    }
    for (schedule, _), h in runs.histories.items():
        assert len(h) == 3
        weights = h["train_kl_weight"].to_numpy()
        if schedule == "warm-up":
            assert (weights[:2] < 0.5).all() and weights[-1] == 0.5
            best = h.attrs["best_epoch"]
            assert best is None or best > 2
        else:
            assert (weights == 0.5).all()
    kept = t["kept code"].to_numpy()
    expected = (t["KL (nats)"] >= beta_vaes.COLLAPSED_KL) & (t["active units"] > 0)
    assert (kept == expected.to_numpy()).all()
    assert runs.kept("warm-up") == int(kept[1::2].sum())
    summary = runs.summary()
    assert list(summary.index) == ["no warm-up", "warm-up"]
    assert (summary["runs"] == 2).all()
    # the second call loads the checkpoints: the same numbers
    again = beta_vaes.warmup_vs_collapse(data.x_fit, data.x_val, size, beta=0.5)
    pd.testing.assert_frame_equal(again.table, t)
    with pytest.raises(ValueError, match="seed"):
        beta_vaes.warmup_vs_collapse(data.x_fit, data.x_val, size, seeds=[])
