import numpy as np
import pytest

from phbook import alerts


def test_threshold_arithmetic_on_a_hand_computed_case():
    # 0.3 triggers per second -> 1080 frames an hour; 1 alarm an hour -> 1 frame in 1080.
    assert alerts.allowed_fraction(1.0, 0.3) == pytest.approx(1 / 1080)
    normal = np.arange(10_800, dtype=float)  # scores 0 .. 10799
    t = alerts.threshold_for_rate(normal, alarms_per_hour=1.0, trigger_rate_hz=0.3)
    # 10 normal frames (10790 .. 10799) may lie above: the threshold is 10789.
    assert t.threshold == 10_789
    assert np.sum(normal > t.threshold) == 10
    assert t.expected_alarms_per_hour == pytest.approx(1.0)
    assert t.resolved


def test_false_alarms_per_hour():
    normal = np.r_[np.zeros(990), np.ones(10)]
    # 1 % above the threshold at 0.5 Hz: 0.01 * 1800 frames/hour = 18 alarms/hour
    assert alerts.false_alarms_per_hour(normal, 0.5, 0.5) == pytest.approx(18.0)


def test_unresolved_rates_are_flagged():
    t = alerts.threshold_for_rate(
        np.arange(100.0), alarms_per_hour=1.0, trigger_rate_hz=0.3
    )
    assert not t.resolved
    assert t.threshold == 99  # above every normal score: zero observed false alarms
    assert "too few normal frames" in str(t)


def test_detection_rates_per_class():
    scores = np.array([0.1, 0.2, 5.0, 6.0, 0.3, 7.0])
    classes = ["normal", "normal", "streak", "streak", "hot_pixel", "hot_pixel"]
    rates = alerts.detection_rates(scores, classes, threshold=1.0)
    assert rates["streak"] == 1.0 and rates["hot_pixel"] == 0.5 and rates["normal"] == 0.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="trigger_rate_hz"):
        alerts.allowed_fraction(1.0, 0.0)
    with pytest.raises(ValueError, match="empty"):
        alerts.threshold_for_rate([], 1.0, 0.3)
    with pytest.raises(ValueError, match="NaN"):
        alerts.threshold_for_rate([0.0, np.nan], 1.0, 0.3)
