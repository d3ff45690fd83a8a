"""Continuous, calibrated p-values: fusions rank without ties (issue 17)."""

import numpy as np
import pytest

from phbook import pvalues


def test_matches_the_empirical_count_at_reference_scores():
    ref = np.arange(1.0, 101.0)
    p = pvalues.p_values(ref, ref)
    np.testing.assert_allclose(p, (100 - np.arange(100) + 1) / 101)
    assert pvalues.p_values(ref, [-5.0])[0] == 1.0


def test_strictly_decreasing_beyond_the_reference():
    rng = np.random.default_rng(0)
    ref = rng.exponential(size=1000)
    s = np.linspace(ref.max(), ref.max() + 5000, 50)
    logp = pvalues.log_p_values(ref, s)
    assert np.all(np.diff(logp) < 0) and np.all(np.isfinite(logp))
    assert logp[0] == pytest.approx(np.log(2 / 1001))
    # continuous at the top reference score
    eps = 1e-9
    a, b = pvalues.log_p_values(ref, [ref.max() - eps, ref.max() + eps])
    assert abs(a - b) < 1e-6


def test_calibrated_for_normal_scores():
    rng = np.random.default_rng(1)
    ref, new = rng.normal(size=5000), rng.normal(size=20000)
    p = pvalues.p_values(ref, new)
    for q in (0.01, 0.05, 0.2, 0.5):
        assert abs(np.mean(p <= q) - q) < 0.01 + 0.1 * q
    # the exponential tail: about as many new frames beyond as the level says
    tiny = 2e-4
    assert np.mean(p <= tiny) < 5 * tiny + 1e-3


def test_errors():
    with pytest.raises(ValueError, match="empty"):
        pvalues.log_p_values([], [1.0])
    with pytest.raises(ValueError, match="finite"):
        pvalues.log_p_values([1.0, np.inf], [1.0])


def test_tied_reference_scores_count_whole():
    """A score equal to tied reference scores counts them all (the empirical
    p-value), so a detector whose scores tie often is not made to look odder."""
    assert pvalues.p_values([0, 1, 1, 1, 2], [1.0])[0] == pytest.approx(5 / 6)
    assert pvalues.p_values(np.zeros(100), [0.0])[0] == pytest.approx(1.0)
    ref = np.repeat(np.arange(10.0), 40)  # 10 values, each 40 times
    fresh = np.random.default_rng(0).integers(0, 10, 5000).astype(float)
    p = pvalues.p_values(ref, fresh)
    # calibrated: P(p <= a) <= a for discrete scores
    for a in (0.1, 0.3, 0.5):
        assert np.mean(p <= a) <= a + 0.02
