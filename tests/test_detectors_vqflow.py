"""The VQ-VAE and FFJORD detectors behind the scikit-learn API."""

import numpy as np
import pytest
from sklearn.base import clone

from phbook.detectors_vqflow import FFJORDVAEDetector, VQVAEDetector


def _frames(n, seed, bright=False):
    rng = np.random.default_rng(seed)
    x = 0.1 * rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    r, c = rng.integers(2, 6, (2, n))
    x[np.arange(n), 0, r, c] += 1.0
    if bright:  # a bright line across the frame: not what training frames look like
        x[:, 0, 4, :] += 2.0
    return x


def test_vqvae_detector_scores_and_sign():
    x = _frames(256, 0)
    det = VQVAEDetector(
        score="prior",
        model_kwargs={"n_codes": 8, "code_dim": 4, "channels": 8},
        prior_kwargs={"channels": 8, "n_layers": 2},
        fit_kwargs={"epochs": 4, "batch_size": 32, "lr": 3e-3, "progress": False},
        prior_fit_kwargs={"epochs": 4, "batch_size": 32, "lr": 3e-3, "progress": False},
    ).fit(x)
    assert 1.0 <= det.perplexity_ <= 8.0
    codes = det.codes(x[:5])
    assert codes.shape == (5, 4, 4) and codes.dtype == np.int64
    assert det.reconstruct(x[:5]).shape == (5, 1, 8, 8)
    anomalies = _frames(64, 1, bright=True)
    parts = det.score_parts(np.concatenate([x[:64], anomalies]))
    assert set(parts) == set(det.scores)
    for name in ("recon", "recon_max", "prior_max"):
        assert parts[name][64:].mean() > parts[name][:64].mean(), name
    s = det.anomaly_score(anomalies)
    assert np.allclose(s, parts["prior"][64:])
    assert np.allclose(s, det.code_surprise(anomalies).sum((1, 2)))
    assert np.allclose(det.score_samples(anomalies), -s)
    assert set(np.unique(det.predict(anomalies))) <= {-1, 1}
    assert clone(det).get_params()["score"] == "prior"
    with pytest.raises(ValueError, match="not a score"):
        VQVAEDetector(score="elbo").fit(x)


def test_ffjord_vae_detector():
    x = _frames(128, 0)
    det = FFJORDVAEDetector(
        n_samples=4,
        model_kwargs={"latent_dim": 4, "context_dim": 8, "cnf_kwargs": {"hidden": (8,)}},
        fit_kwargs={"epochs": 2, "batch_size": 32, "progress": False},
    ).fit(x)
    b = det.log_likelihood_bounds(x[:10])
    assert b["iwae"].shape == (10,) and np.all(b["iwae"] >= b["elbo"] - 1e-4)
    assert np.allclose(det.anomaly_score(x[:10]), -b["iwae"])
    assert det.nfe_ > 0
    assert det.reconstruct(x[:3]).shape == (3, 1, 8, 8)
