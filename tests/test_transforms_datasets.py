import numpy as np
import pytest

from phbook import datasets, transforms
from phbook.sim import panoseti as P


def test_asinh_stretch_is_invertible_and_keeps_sign():
    st = transforms.AsinhStretch()
    x = np.array([-500, -16, -1, 0, 1, 16, 200, 3400], np.float32)
    y = st(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(st.inverse(y), x, rtol=1e-4, atol=1e-3)
    assert y[-1] == pytest.approx(1.0)
    assert (np.diff(y) > 0).all() and (np.sign(y) == np.sign(x)).all()
    # linear near zero, logarithmic far away
    assert y[5] / y[4] == pytest.approx(16, rel=0.25)
    assert y[-1] / y[-2] < 2


def test_transform_arguments_are_checked():
    with pytest.raises(ValueError, match="softening"):
        transforms.AsinhStretch(softening=0)
    with pytest.raises(ValueError, match="scale"):
        transforms.LinearScale(scale=-1)
    lin = transforms.LinearScale(100)
    np.testing.assert_allclose(lin.inverse(lin([5.0, 50.0])), [5.0, 50.0])


def test_benchmark_layout_and_cache(monkeypatch):
    ds = datasets.ph_benchmark(400, 100, 20, seed=3)
    assert ds.x_train.shape == (400, 16, 16) and ds.x_train.dtype == np.int16
    assert (ds.classes_train == "normal").all()
    assert len(ds.x_test) == 100 + 20 * len(P.ANOMALY_CLASSES)
    assert ds.labels_test.sum() == 20 * len(P.ANOMALY_CLASSES)
    assert np.isnan(ds.strength_test[ds.classes_test == "normal"]).all()
    assert ds.info["simulated"] is True

    def boom(*args, **kwargs):
        raise AssertionError("the cached dataset must be read, not simulated again")

    monkeypatch.setattr(P, "simulate", boom)
    again = datasets.ph_benchmark(400, 100, 20, seed=3)
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    np.testing.assert_array_equal(again.classes_test, ds.classes_test)


def test_training_set_does_not_depend_on_test_size_and_seed_matters():
    a = datasets.ph_benchmark(300, 50, 5, seed=1, cache=False)
    b = datasets.ph_benchmark(300, 80, 9, seed=1, cache=False)
    c = datasets.ph_benchmark(300, 50, 5, seed=2, cache=False)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)


def test_contamination_is_unlabelled_in_training_data():
    ds = datasets.ph_benchmark(2000, 10, 2, seed=4, contamination=0.05, cache=False)
    frac = np.mean(ds.classes_train != "normal")
    assert 0.03 < frac < 0.07


def test_damaged_cache_file_is_rebuilt():
    ds = datasets.ph_benchmark(100, 10, 2, seed=5)
    path = datasets._cache_path(
        "ph_benchmark",
        {
            "n_train": 100,
            "n_test_normal": 10,
            "n_test_per_class": 2,
            "seed": 5,
            "contamination": 0.0,
            "pe_threshold": float(P.Instrument().pe_threshold),
            "classes": list(P.ANOMALY_CLASSES),
            "strength": [0.0, 1.0],
            "simulator": P.SIMULATOR_VERSION,
        },
    )
    assert path.exists()
    path.write_bytes(b"garbage")
    again = datasets.ph_benchmark(100, 10, 2, seed=5)
    np.testing.assert_array_equal(again.x_train, ds.x_train)


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="n_train"):
        datasets.ph_benchmark(-1, 10, 2)
