"""The class gallery of the case-study chapters."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from phbook import plotting  # noqa: E402


def test_show_classes_draws_one_row_per_class():
    x = np.random.default_rng(0).normal(size=(7, 8, 8))
    classes = ["a", "b", "a", "c", "a", "b", "a"]
    fig = plotting.show_classes(x, classes, per_class=3)
    axes = np.array(fig.axes).reshape(3, 3)
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["a", "b", "c"]
    assert [len(ax.images) for ax in axes[2]] == [1, 0, 0]  # one image of class c
    fig = plotting.show_classes(x, classes, per_class=2, order=["c", "a"], seed=None)
    first_a = np.array(fig.axes).reshape(2, 2)[1, 0].images[0].get_array()
    np.testing.assert_allclose(first_a, x[0])
    with pytest.raises(ValueError, match="no images"):
        plotting.show_classes(x, classes, order=["d"])
    with pytest.raises(ValueError, match="class names"):
        plotting.show_classes(x, classes[:3])
