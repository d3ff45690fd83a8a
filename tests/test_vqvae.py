"""The VQ-VAE: quantisation, straight-through gradient, losses, EMA, dead codes, prior."""

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.base import clone

from phbook import train
from phbook.detectors import VQVAEDetector
from phbook.models import vqvae as Q


def _quantizer(**kw):
    torch.manual_seed(0)
    return Q.VectorQuantizer(n_codes=4, code_dim=2, **kw)


def test_quantization_picks_the_nearest_code():
    vq = _quantizer(ema=False).eval()
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]))
    z = torch.tensor([[0.1, -0.1], [0.9, 0.2], [0.2, 0.8], [4.0, 6.0], [0.6, 0.1]])
    out = vq(z)
    assert out["indices"].tolist() == [0, 1, 2, 3, 1]
    assert torch.allclose(out["z_q"], vq.codebook[out["indices"]])


def test_gradient_passes_straight_through():
    vq = _quantizer(ema=False).eval()
    z = torch.randn(3, 2, 4, 5, requires_grad=True)
    g = torch.randn(3, 2, 4, 5)
    out = vq(z)
    (out["z_q"] * g).sum().backward()
    # the decoder's gradient at z_q arrives unchanged at z_e
    assert torch.allclose(z.grad, g)
    # and the codebook gets no gradient from the reconstruction path
    assert vq.codebook.grad is None or float(vq.codebook.grad.abs().sum()) == 0.0


def test_codebook_and_commitment_losses_by_hand():
    vq = _quantizer(ema=False, commitment=0.25).eval()
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0], [9.0, 9.0]]))
    z = torch.tensor([[0.5, 0.5], [2.0, 1.0], [0.0, 2.0]], requires_grad=True)
    out = vq(z)
    # nearest codes 0, 1, 2; squared differences 0.25+0.25, 0+1, 0+1 over 6 elements
    expected = (0.25 + 0.25 + 0.0 + 1.0 + 0.0 + 1.0) / 6
    val = {k: float(out[k].detach()) for k in ("codebook_loss", "commitment_loss", "loss")}
    assert val["codebook_loss"] == pytest.approx(expected, abs=1e-7)
    assert val["commitment_loss"] == pytest.approx(expected, abs=1e-7)
    assert val["loss"] == pytest.approx(1.25 * expected, abs=1e-7)
    # the codebook loss moves only the codes, the commitment loss only the encoder
    out["codebook_loss"].backward(retain_graph=True)
    assert z.grad is None
    grad_e = vq.codebook.grad.clone()
    hand = torch.zeros(4, 2)
    hand[0] = 2 * (torch.tensor([0.0, 0.0]) - torch.tensor([0.5, 0.5])) / 6
    hand[1] = 2 * (torch.tensor([2.0, 0.0]) - torch.tensor([2.0, 1.0])) / 6
    hand[2] = 2 * (torch.tensor([0.0, 3.0]) - torch.tensor([0.0, 2.0])) / 6
    assert torch.allclose(grad_e, hand, atol=1e-7)
    vq.codebook.grad = None
    out["commitment_loss"].backward()
    assert vq.codebook.grad is None
    assert z.grad is not None and float(z.grad.abs().sum()) > 0


def test_ema_update_matches_a_hand_computation():
    vq = _quantizer(ema=True, decay=0.9, eps=1e-5, dead_threshold=0.0).train()
    book = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0], [9.0, 9.0]])
    with torch.no_grad():
        vq.codebook.copy_(book)
        vq.code_sum.copy_(book)
        vq.cluster_size.fill_(1.0)
        vq.initialized.fill_(True)
    z = torch.tensor([[0.5, 0.5], [2.0, 1.0], [0.0, 2.0], [0.1, -0.3]])
    vq(z)
    n_k = torch.tensor([2.0, 1.0, 1.0, 0.0])
    sums = torch.stack([z[0] + z[3], z[1], z[2], torch.zeros(2)])
    size = 0.9 * torch.ones(4) + 0.1 * n_k
    m = 0.9 * book + 0.1 * sums
    total = size.sum()
    smoothed = (size + 1e-5) / (total + 4 * 1e-5) * total
    assert torch.allclose(vq.cluster_size, size, atol=1e-7)
    assert torch.allclose(vq.code_sum, m, atol=1e-7)
    assert torch.allclose(vq.codebook, m / smoothed[:, None], atol=1e-6)
    # evaluation mode leaves the codebook alone
    before = vq.codebook.clone()
    vq.eval()(z + 1.0)
    assert torch.equal(vq.codebook, before)


def test_dead_codes_are_reseeded_at_encoder_outputs():
    vq = _quantizer(ema=True, dead_threshold=0.5).train()
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [50.0, 50.0]]))
        vq.code_sum.copy_(vq.codebook)
        vq.cluster_size.copy_(torch.tensor([10.0, 10.0, 10.0, 0.01]))
        vq.initialized.fill_(True)
    z = torch.rand(64, 2)
    vq(z)
    # code 3 was far from everything and nearly unused: now it sits on a batch vector
    assert int(vq.n_reseeded) >= 1
    d = (z - vq.codebook[3]).norm(dim=1).min()
    assert float(d) < 1e-6
    # the live codes were not re-seeded: still near where they were
    live = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert float((vq.codebook[:3] - live).abs().max()) < 1.0
    assert len(vq.dead_codes()) == 0


def test_codebook_starts_on_the_first_batch():
    vq = _quantizer(ema=True).train()
    z = 100.0 + torch.rand(32, 2)
    out = vq(z)
    assert bool(vq.initialized)
    # every code on (near) an encoder output of the batch, far from the random init
    d = torch.cdist(vq.codebook, z).min(1).values
    assert float(d.max()) < 0.5
    assert float(out["perplexity"]) > 1.5


def test_perplexity():
    assert float(Q.perplexity(torch.arange(8).repeat(5), 8)) == pytest.approx(8.0)
    assert float(Q.perplexity(torch.zeros(20, dtype=torch.long), 8)) == pytest.approx(1.0)
    idx = torch.tensor([0, 0, 1, 1, 1, 1])
    p = torch.tensor([1 / 3, 2 / 3])
    assert float(Q.perplexity(idx, 4)) == pytest.approx(
        float(torch.exp(-(p * p.log()).sum())), rel=1e-6
    )


def test_vqvae_trains_through_fit_and_uses_its_codebook():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    # blobs at random places: a code map with more than one code is needed
    x = torch.zeros(256, 1, 8, 8)
    r, c = torch.randint(0, 8, (2, 256), generator=g)
    x[torch.arange(256), 0, r, c] = 1.0
    x = x + 0.05 * torch.randn(x.shape, generator=g)
    model = Q.VQVAE(8, n_codes=8, code_dim=4, channels=8)
    hist = train.fit(model, x, epochs=8, batch_size=32, lr=3e-3, progress=False)
    assert {"train_loss", "train_recon", "train_perplexity"} <= set(hist.columns)
    assert hist["train_recon"].iloc[-1] < hist["train_recon"].iloc[0]
    model.eval()
    codes = model.codes(x)
    assert codes.shape == (256, 4, 4) and codes.dtype == torch.long
    assert float(Q.perplexity(codes, 8)) > 2.0
    assert model.decode_codes(codes).shape == x.shape
    with pytest.raises(ValueError, match="multiples"):
        Q.VQVAE(10, n_down=2)


def test_prior_is_normalised_over_all_code_maps():
    torch.manual_seed(0)
    prior = Q.CodePrior(n_codes=3, code_hw=(2, 2), channels=8, n_layers=2).eval()
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.3 * torch.randn_like(p))
        maps = torch.tensor(list(itertools.product(range(3), repeat=4))).view(-1, 2, 2)
        logp = prior.log_prob(maps)
    assert len(maps) == 81
    assert float(torch.logsumexp(logp.double(), 0)) == pytest.approx(0.0, abs=1e-5)
    # not uniform: the test would pass trivially for constant logits
    assert float(logp.max() - logp.min()) > 0.1


def test_prior_is_causal_and_learns():
    torch.manual_seed(0)
    prior = Q.CodePrior(n_codes=4, code_hw=4, channels=8, n_layers=3).eval()
    k = torch.randint(0, 4, (1, 4, 4))
    base = prior(k)
    k2 = k.clone()
    k2[0, 2, 1] = (k2[0, 2, 1] + 1) % 4
    changed = (prior(k2) - base).abs().sum(1)[0] > 1e-6
    order = torch.arange(16).view(4, 4)
    # positions before (2, 1) in raster order cannot see the change
    assert not bool(changed[order <= 2 * 4 + 1].any())
    # a checkerboard of two codes is easy to learn: bits per code drop well below 2
    maps = torch.tensor([[0, 1], [1, 0]]).repeat(2, 2).repeat(64, 1, 1)
    maps[32:] = 1 - maps[32:] + 2  # a second pattern with codes 2, 3
    prior.train()
    hist = train.fit(prior, maps, epochs=30, batch_size=32, lr=1e-2, progress=False)
    assert hist["train_bits_per_code"].iloc[-1] < 0.5
    assert prior.sample(3).shape == (3, 4, 4)
    with pytest.raises(ValueError, match="lie in"):
        prior.log_prob(torch.full((1, 4, 4), 7))
    assert math.isfinite(float(hist["train_loss"].iloc[-1]))


def _detector_frames(n, seed, bright=False):
    rng = np.random.default_rng(seed)
    x = 0.1 * rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    r, c = rng.integers(2, 6, (2, n))
    x[np.arange(n), 0, r, c] += 1.0
    if bright:  # a bright line across the frame: not what training frames look like
        x[:, 0, 4, :] += 2.0
    return x


def test_vqvae_detector_scores_and_sign():
    x = _detector_frames(256, 0)
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
    anomalies = _detector_frames(64, 1, bright=True)
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
