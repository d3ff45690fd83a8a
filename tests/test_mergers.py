"""Chapter 12: the lecture's percentage of inconsistent images (phbook.studies.mergers)."""

import numpy as np
import pytest

from phbook.studies import mergers


def test_inconsistent_percentages_hand_computed():
    # 20 ordinary galaxies with scores 1..20: the 95% quantile is 19.05
    classes = np.array(["normal"] * 20 + ["merger_pre"] * 4 + ["merger_post"] * 2)
    s = np.r_[np.arange(1, 21), [30, 30, 30, 5], [25, 1]].astype(float)
    got = mergers.inconsistent_percentages({"a": s, "b": -s}, classes)
    assert list(got.index) == ["all", "pre-merger", "post-merger"]
    assert got.loc["pre-merger", "a"] == pytest.approx(75.0)
    assert got.loc["post-merger", "a"] == pytest.approx(50.0)
    assert got.loc["all", "a"] == pytest.approx(100 * 4 / 6)
    # "b": the threshold is the 95% quantile of -1..-20 (-1.95); only -1 is above
    assert got.loc["post-merger", "b"] == pytest.approx(50.0)
    assert got.loc["pre-merger", "b"] == pytest.approx(0.0)


def test_inconsistent_percentages_errors():
    with pytest.raises(ValueError, match="no image of class"):
        mergers.inconsistent_percentages({"a": [1, 2]}, ["merger", "merger"])
    with pytest.raises(ValueError, match="2 scores for 3 images"):
        mergers.inconsistent_percentages({"a": [1, 2]}, ["normal"] * 3)
