"""The readout check: dead rows, columns, MAROC quarters and pedestal jumps."""

import numpy as np
import pytest

from phbook import metrics
from phbook.detectors import ReadoutFaults
from phbook.detectors.readout import group_counts


@pytest.fixture(scope="module")
def fitted(sim_normal_adc):
    return ReadoutFaults().fit(sim_normal_adc)


def test_groups_are_rows_columns_and_quarters():
    x = np.full((1, 16, 16), 20.0, np.float32)
    x[0, 3, :] = 0  # row 3
    x[0, :, 12] = 0  # column 12
    x[0, 8:, :8] = 0  # the bottom-left quarter
    frame, counts = group_counts(x, window=2.0)
    assert frame[0] == 20.0
    rows, cols, quarters = counts[0, :16], counts[0, 16:32], counts[0, 32:]
    assert rows[3] == 16 and rows[10] == 9 and rows[0] == 1
    assert cols[12] == 16 and cols[0] == 9
    assert quarters.tolist() == [8, 15, 64, 8]  # row 3 and column 12 cross at (3, 12)


@pytest.mark.parametrize("where", ["row", "column", "quarter"])
def test_a_dead_group_stands_out_of_showers(fitted, sim_test_adc, where):
    dead = sim_test_adc.copy()
    rng = np.random.default_rng(3)
    for i in range(len(dead)):
        k = rng.integers(16)
        if where == "row":
            dead[i, k, :] = 0
        elif where == "column":
            dead[i, :, k] = 0
        else:
            a, b = 8 * (k % 2), 8 * (k // 8)
            dead[i, a : a + 8, b : b + 8] = 0
    y = np.r_[np.zeros(len(sim_test_adc)), np.ones(len(dead))]
    scores = np.r_[fitted.anomaly_score(sim_test_adc), fitted.anomaly_score(dead)]
    assert metrics.roc_auc(y, scores) > 0.99


def test_a_pedestal_jump_or_a_speckled_frame_stands_out(fitted, sim_test_adc):
    normal = fitted.anomaly_score(sim_test_adc)
    jumped = fitted.anomaly_score(sim_test_adc + 40)  # the whole quabo, +40 ADC
    y = np.r_[np.zeros(len(normal)), np.ones(len(jumped))]
    assert metrics.roc_auc(y, np.r_[normal, jumped]) > 0.99
    speckled = np.random.default_rng(4).normal(400, 150, (5, 16, 16)).astype(np.float32)
    assert (fitted.anomaly_score(speckled) > normal.max()).all()


def test_a_slow_drift_of_the_pedestal_is_tolerated(fitted, sim_test_adc):
    normal = fitted.anomaly_score(sim_test_adc)
    drifted = fitted.anomaly_score(sim_test_adc + 2)  # within a quarter of 16 ADC
    assert np.quantile(drifted, 0.99) < 2 * np.quantile(normal, 0.99)


def test_scores_do_not_depend_on_the_batch(fitted, sim_test_adc):
    whole = fitted.anomaly_score(sim_test_adc)
    parts = np.concatenate(
        [fitted.anomaly_score(c) for c in np.array_split(sim_test_adc, 7)]
    )
    assert np.array_equal(whole, parts)


def test_bad_arguments_are_clear(sim_test_adc):
    with pytest.raises(ValueError, match="window"):
        ReadoutFaults(window=0).fit(sim_test_adc)
    with pytest.raises(ValueError, match="min_p"):
        ReadoutFaults(min_p=1.5).fit(sim_test_adc)
    with pytest.raises(ValueError, match="level_tolerance"):
        ReadoutFaults(level_tolerance=-1).fit(sim_test_adc)
    with pytest.raises(ValueError, match="16, 16"):
        group_counts(np.zeros((3, 8, 8)), 2.0)
