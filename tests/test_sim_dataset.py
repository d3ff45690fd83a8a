"""The simulated-set container, class plans and the HDF5 cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from phbook.sim import dataset


def _toy_set(n=6):
    rng = np.random.default_rng(0)
    classes = np.array(["normal", "a", "normal", "b", "a", "normal"])[:n]
    params = pd.DataFrame({"flux": rng.uniform(size=n), "kind": ["x", "yy"] * (n // 2)})
    tables = {"subs": pd.DataFrame({"image": [1, 1, 3, 4], "mass": [1.0, 2.0, 3.0, 4.0]})}
    return dataset.SimulatedSet(
        rng.normal(size=(n, 5, 5)).astype(np.float32),
        classes,
        params,
        {"simulator": "toy", "settings": {"range": (1.0, 2.0)}},
        tables,
    )


def test_class_plan_gives_exact_counts_in_random_order():
    rng = np.random.default_rng(1)
    plan = dataset.class_plan(10, {"a": 1, "b": 1, "c": 1}, ["a", "b", "c", "d"], rng)
    counts = pd.Series(plan).value_counts().to_dict()
    assert sorted(counts.values()) == [3, 3, 4] and sum(counts.values()) == 10
    other = dataset.class_plan(
        10, {"a": 1, "b": 1, "c": 1}, ["a", "b", "c", "d"], np.random.default_rng(2)
    )
    assert sorted(other) == sorted(plan) and not np.array_equal(other, plan)
    only = dataset.class_plan(5, {"d": 2.0}, ["a", "d"], rng)
    assert (only == "d").all()
    with pytest.raises(ValueError, match="unknown classes"):
        dataset.class_plan(5, {"e": 1}, ["a"], rng)
    with pytest.raises(ValueError, match="fractions"):
        dataset.class_plan(5, {"a": 0}, ["a"], rng)
    with pytest.raises(ValueError, match="n must be"):
        dataset.class_plan(0, {"a": 1}, ["a"], rng)


def test_simulated_set_labels_unpacking_and_subset():
    data = _toy_set()
    images, classes, params = data
    assert images.shape == (6, 5, 5) and len(data) == 6
    np.testing.assert_array_equal(data.labels, [0, 1, 0, 1, 1, 0])
    sub = data.subset([1, 3])
    np.testing.assert_array_equal(sub.classes, ["a", "b"])
    np.testing.assert_array_equal(sub.images, images[[1, 3]])
    # table rows follow their images, renumbered
    assert sub.tables["subs"]["image"].tolist() == [0, 0, 1]
    assert sub.tables["subs"]["mass"].tolist() == [1.0, 2.0, 3.0]
    masked = data.subset(data.labels == 0)
    assert (masked.classes == "normal").all() and len(masked.tables["subs"]) == 0
    with pytest.raises(ValueError, match="differ in number"):
        dataset.SimulatedSet(images, classes[:3], params)


def test_report_classes_rename_every_normal_subclass():
    data = _toy_set()
    data.normal_classes = ("normal", "b")
    np.testing.assert_array_equal(data.labels, [0, 1, 0, 0, 1, 0])
    assert data.report_classes.tolist() == [
        "normal",
        "a",
        "normal",
        "normal",
        "a",
        "normal",
    ]


def test_hdf5_round_trip_is_exact(tmp_path):
    data = _toy_set()
    path = tmp_path / "toy.h5"
    dataset.write_hdf5(path, data, key="abc")
    back = dataset.read_hdf5(path)
    np.testing.assert_array_equal(back.images, data.images)
    np.testing.assert_array_equal(back.classes, data.classes)
    pd.testing.assert_frame_equal(back.params, data.params)
    pd.testing.assert_frame_equal(back.tables["subs"], data.tables["subs"])
    assert back.meta["settings"]["range"] == [1.0, 2.0]
    assert back.normal_classes == ("normal",)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_a_broken_file_is_an_error_naming_it_and_the_cache_recovers(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(ValueError, match="bad.h5"):
        dataset.read_hdf5(bad)
    calls = []

    def simulate(**kwargs):
        calls.append(kwargs)
        return _toy_set()

    description = {"n": 6, "seed": 0}
    path = dataset.cache_path("toy", description)
    path.write_bytes(b"truncated")  # e.g. a crash of an older version mid-write
    out = dataset.load_or_simulate("toy", simulate, description, description)
    assert len(calls) == 1 and len(out) == 6
    dataset.load_or_simulate("toy", simulate, description, description)
    assert len(calls) == 1  # the second call read the rewritten cache
    other = dataset.cache_path("toy", {"n": 6, "seed": 1})
    assert other != path


def test_resolve_settings_checks_names_and_ranges():
    defaults = {"a": (0.0, 1.0), "b": 3, "c": 0.5}
    s = dataset.resolve_settings(defaults, {"a": [0.2, 0.4], "b": 4.0})
    assert s == {"a": (0.2, 0.4), "b": 4, "c": 0.5}
    with pytest.raises(ValueError, match="unknown keys"):
        dataset.resolve_settings(defaults, {"d": 1})
    with pytest.raises(ValueError, match="low > high"):
        dataset.resolve_settings(defaults, {"a": (1.0, 0.0)})
    with pytest.raises(ValueError, match="2 numbers"):
        dataset.resolve_settings(defaults, {"a": (1.0,)})
