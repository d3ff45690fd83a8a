import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Normal
from torch.distributions import kl_divergence as torch_kl

from phbook import detectors, metrics
from phbook.models import vae as V
from phbook.train import TrainState, fit


def blobs(n=600, size=16, seed=0):
    """Normal images: a Gaussian blob at a random place in noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(4, size - 4, (2, n, 1, 1))
    amp = rng.uniform(0.5, 1.5, (n, 1, 1))
    x = amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 4.0)
    return (x + 0.05 * rng.standard_normal(x.shape)).astype(np.float32)


def test_kl_of_known_gaussians_by_hand():
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # 0.5 * (mu^2 + var - 1 - log var): (1 + 1 - 1 - 0) + (0 + 2 - 1 - log 2)
    expected = 0.5 * (1.0 + (1.0 - math.log(2.0)))
    kl = V.kl_divergence(mu, logvar)
    assert kl.shape == (2,)
    assert kl[0].item() == pytest.approx(expected, rel=1e-6)
    assert kl[1].item() == pytest.approx(0.0, abs=1e-7)  # the prior itself


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(50, 32, generator=g) * 2
    logvar = torch.randn(50, 32, generator=g)
    ref = torch_kl(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(V.kl_divergence(mu, logvar), ref, rtol=1e-5, atol=1e-5)


def test_reconstruction_error_and_l1_by_hand():
    x = torch.zeros(2, 1, 2, 2)
    x_hat = torch.tensor([[[[1.0, 2.0], [0.0, 0.0]]], [[[0.5, 0.5], [0.5, 0.5]]]])
    torch.testing.assert_close(V.reconstruction_error(x, x_hat), torch.tensor([5.0, 1.0]))
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0], [3.0, -4.0]]))
        lin.bias.copy_(torch.tensor([5.0, -6.0]))
    assert V.l1_penalty(lin).item() == pytest.approx(10.0)
    assert V.l1_penalty(lin, include_bias=True).item() == pytest.approx(21.0)
    with pytest.raises(ValueError, match="differ in shape"):
        V.reconstruction_error(x, x_hat[:, :, :1])


def test_loss_is_recon_plus_beta_kl_plus_l1():
    torch.manual_seed(0)
    model = V.BetaVAE(16, latent_dim=8, beta=4.0, l1_weight=1e-3)
    x = torch.from_numpy(blobs(32))[:, None]
    terms = model.loss(x)
    assert set(terms) >= {"loss", "recon", "kl", "l1"}
    expected_l1 = 1e-3 * sum(
        p.abs().sum() for n, p in model.named_parameters() if n.endswith("weight")
    )
    torch.testing.assert_close(terms["l1"], expected_l1)
    torch.testing.assert_close(
        terms["loss"], terms["recon"] + 4.0 * terms["kl"] + terms["l1"]
    )
    # the terms are batch means of the per-image functions
    torch.manual_seed(1)
    x_hat, mu, logvar = model(x)
    parts = V.beta_vae_loss(x, x_hat, mu, logvar, beta=4.0)
    torch.testing.assert_close(parts["recon"], V.reconstruction_error(x, x_hat).mean())
    torch.testing.assert_close(parts["kl"], V.kl_divergence(mu, logvar).mean())


def test_kl_warmup_schedule():
    model = V.BetaVAE(16, beta=2.0, kl_warmup=4)
    assert model.kl_weight == 0.0
    weights = []
    for epoch in range(6):
        model.on_epoch_start(TrainState(epoch, 6, 0, 1))
        weights.append(model.kl_weight)
    assert weights == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.0])
    plain = V.BetaVAE(16, beta=2.0)
    plain.on_epoch_start(TrainState(0, 6, 0, 1))
    assert plain.kl_weight == 2.0


def test_reparameterisation_has_the_right_moments_and_gradients():
    mu = torch.tensor([1.0, -2.0], requires_grad=True)
    logvar = torch.tensor([0.0, math.log(4.0)], requires_grad=True)
    g = torch.Generator().manual_seed(0)
    z = V.reparameterize(mu.expand(20000, 2), logvar.expand(20000, 2), generator=g)
    np.testing.assert_allclose(z.mean(0).detach(), [1.0, -2.0], atol=0.05)
    np.testing.assert_allclose(z.std(0).detach(), [1.0, 2.0], rtol=0.03)
    z.sum().backward()
    assert mu.grad is not None and torch.all(mu.grad == 20000)
    assert logvar.grad is not None and torch.isfinite(logvar.grad).all()


@pytest.mark.parametrize("size", [16, 21, 64, (21, 16)])
def test_shapes_of_every_image_size(size):
    model = V.BetaVAE(size, latent_dim=21)
    hw = (size, size) if isinstance(size, int) else size
    x = torch.randn(3, 1, *hw)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (3, 21)
    assert model.decode(mu).shape == (3, 1, *hw)
    assert model.sample(4).shape == (4, 1, *hw)
    assert model(x)[0].shape == x.shape
    with pytest.raises(ValueError, match=r"\(N, 1, "):
        model.encode(torch.randn(3, 1, hw[0] + 1, hw[1]))


def test_training_lowers_the_loss_and_uses_the_latent():
    x = blobs(1024)
    torch.manual_seed(0)
    model = V.BetaVAE(16, latent_dim=8, beta=0.1)
    hist = fit(model, x, epochs=5, batch_size=64, lr=3e-3, progress=False, device="cpu")
    assert hist["train_loss"].iloc[-1] < 0.5 * hist["train_loss"].iloc[0]
    assert "train_kl_weight" in hist
    model.eval()
    with torch.no_grad():
        mu, _ = model.encode(torch.from_numpy(x))
    # position and amplitude vary, so at least two latent dimensions must be in use
    assert V.active_units(mu) >= 2


def test_active_units_by_hand():
    mu = torch.tensor([[0.0, 1.0, 0.001], [0.0, -1.0, -0.001], [0.0, 0.5, 0.0]])
    assert V.active_units(mu) == 1
    with pytest.raises(ValueError, match="mu must be"):
        V.active_units(torch.zeros(5))


def test_bad_arguments_are_named():
    for kwargs, word in [
        ({"beta": -1}, "beta"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"kl_warmup": -2}, "kl_warmup"),
        ({"l1_weight": -1}, "l1_weight"),
        ({"image_size": 1}, "image_size"),
        ({"channels": ()}, "channels"),
        ({"upsample": "bilinear"}, "upsample"),
    ]:
        with pytest.raises(ValueError, match=word):
            V.BetaVAE(**kwargs)


def test_vae_detector_scores_and_sign():
    x = blobs(400)
    test = blobs(100, seed=1)
    hot = test.copy()
    hot[np.arange(100), 3, 3] += 3.0
    det = detectors.VAEDetector(
        model_kwargs={"latent_dim": 8, "beta": 0.5},
        fit_kwargs={"epochs": 8, "batch_size": 64, "lr": 3e-3, "progress": False},
        device="cpu",
        score="elbo",
        n_samples=2,
    ).fit(x)
    both = np.concatenate([test, hot])
    labels = np.r_[np.zeros(100), np.ones(100)]
    s = det.anomaly_score(both)
    np.testing.assert_allclose(det.score_samples(both), -s)
    np.testing.assert_allclose(det.anomaly_score(both), s)  # reproducible
    assert metrics.roc_auc(labels, s) > 0.9
    # the other scores share the trained model
    for score in ("recon", "kl", "latent_nll", "latent_dist"):
        other = detectors.VAEDetector(
            det.model_, train=False, score=score, gmm_components=(1, 2, 3), device="cpu"
        ).fit(x)
        assert other.anomaly_score(both).shape == (200,)
    recon = detectors.VAEDetector(det.model_, train=False, score="recon", device="cpu").fit(
        x
    )
    assert metrics.roc_auc(labels, recon.anomaly_score(both)) > 0.9
    assert det.transform(test).shape == (100, 8)
    assert det.reconstruct(test).shape == (100, 1, 16, 16)
    with pytest.raises(ValueError, match="score='nll' is not a score"):
        detectors.VAEDetector(det.model_, train=False, score="nll").fit(x)


def test_a_checkpoint_with_another_beta_is_not_reused(tmp_path):
    from phbook.train import load_or_train

    x = blobs(128)[:, None]
    kwargs = dict(epochs=1, batch_size=64, progress=False, device="cpu", directory=tmp_path)
    load_or_train("vae", V.BetaVAE(16, latent_dim=4, beta=1.0), x, **kwargs)
    with pytest.warns(UserWarning, match="different model"):
        load_or_train("vae", V.BetaVAE(16, latent_dim=4, beta=2.0), x, **kwargs)


def test_elbo_score_is_the_models_own_bound():
    """The ELBO score divides the squared error by the model's beta (its decoder's
    variance is beta / 2) and adds the KL: with the same weights, the part above the
    KL scales as 1 / beta, and a model of beta 0 (no ELBO) is refused."""
    x = blobs(40)
    torch.manual_seed(0)
    first = V.BetaVAE(image_size=16, latent_dim=4, beta=0.2)
    second = V.BetaVAE(image_size=16, latent_dim=4, beta=0.05)
    second.load_state_dict(first.state_dict())
    second.beta = 0.05

    def score(model, name):
        det = detectors.VAEDetector(
            model, train=False, score=name, n_samples=3, seed=1, device="cpu"
        )
        return det.fit(x).anomaly_score(x)

    kl = score(first, "kl")
    np.testing.assert_allclose(score(second, "kl"), kl, rtol=1e-5)
    above = {m.beta: score(m, "elbo") - kl for m in (first, second)}
    assert (above[0.2] > 0).all()
    np.testing.assert_allclose(above[0.2] * 0.2, above[0.05] * 0.05, rtol=1e-4)
    first.beta = 0.0
    with pytest.raises(ValueError, match="beta > 0"):
        score(first, "elbo")


def test_elbo_beta_in_model_files(tmp_path):
    """A beta-VAE model file keeps the ELBO's division: unset (the model's beta) for a
    new file, and beta 1 for a file written before the option, whose stored threshold
    belongs to that older score."""
    from phbook import modelfile

    x = blobs(120)
    det = detectors.VAEDetector(
        model_kwargs={"latent_dim": 4, "beta": 0.1},
        fit_kwargs={"epochs": 1, "batch_size": 64, "progress": False},
        score="elbo",
        n_samples=2,
        device="cpu",
    ).fit(x)
    path = modelfile.save(
        tmp_path / "vae.pt", det, "beta-vae", dp="ph256", normalisation={"kind": "none"}
    )
    back = modelfile.load(path).detector
    assert back.elbo_beta is None and back.elbo_scale == pytest.approx(0.1)
    np.testing.assert_allclose(back.anomaly_score(x[:20]), det.anomaly_score(x[:20]))
    obj = torch.load(path, weights_only=True)
    del obj["params"]["elbo_beta"]
    torch.save(obj, path)
    old_file = modelfile.load(path)
    old = old_file.detector
    # the value it scores with is the one its parameters show (phbook inspect)
    assert old.elbo_beta == 1.0 and old_file.params["elbo_beta"] == 1.0
    unit = detectors.VAEDetector(
        det.model_, train=False, score="elbo", n_samples=2, elbo_beta=1.0, device="cpu"
    ).fit(x)
    np.testing.assert_allclose(old.anomaly_score(x[:20]), unit.anomaly_score(x[:20]))
    for bad in (True, "1", [1.0]):
        with pytest.raises(TypeError, match="elbo_beta"):
            detectors.VAEDetector(
                det.model_, train=False, score="elbo", elbo_beta=bad, device="cpu"
            ).fit(x)
    for score in ("elbo", "recon"):  # a bad elbo_beta is refused whatever the score
        with pytest.raises(ValueError, match="elbo_beta must be a positive"):
            detectors.VAEDetector(
                det.model_, train=False, score=score, elbo_beta=-1.0, device="cpu"
            ).fit(x)


def test_elbo_score_by_hand():
    """The score is mean_j |x - decode(mu + sigma eps_j)|^2 / beta + KL, with the
    frame's own draws eps (phbook.noise.frame_normal) and beta the model's or
    elbo_beta (1: the score of earlier versions, squared error + KL)."""
    from phbook.models.vae import kl_divergence, reconstruction_error, reparameterize
    from phbook.noise import frame_normal

    x = blobs(12)
    torch.manual_seed(0)
    model = V.BetaVAE(image_size=16, latent_dim=4, beta=0.2).eval()
    xb = torch.as_tensor(x[:, None])
    with torch.no_grad():
        mu, logvar = model.encode(xb)
        eps = frame_normal(xb, (3, 4), 5)
        recon = sum(
            reconstruction_error(
                xb, model.decode(reparameterize(mu, logvar, eps=eps[:, j]))
            )
            for j in range(3)
        ).numpy()
        kl = kl_divergence(mu, logvar).numpy()
    for elbo_beta, beta in ((None, 0.2), (1.0, 1.0)):
        det = detectors.VAEDetector(
            model, train=False, score="elbo", n_samples=3, seed=5, elbo_beta=elbo_beta
        ).fit(x)
        np.testing.assert_allclose(
            det.anomaly_score(x), recon / (3 * beta) + kl, rtol=1e-5, atol=1e-6
        )


def test_elbo_score_needs_a_beta_vae_loss():
    """The ELBO score is refused, before training, for models whose beta is no decoder
    variance (ChaseCVAE fits its variance; a bare module has none), unless elbo_beta
    says which variance to use."""
    x = blobs(20)
    cvae = V.ChaseCVAE(image_size=16, latent_dim=4)
    with pytest.raises(ValueError, match="give elbo_beta"):
        detectors.VAEDetector(cvae, train=False, score="elbo", device="cpu").fit(x)
    det = detectors.VAEDetector(
        cvae, train=False, score="elbo", elbo_beta=0.5, n_samples=1, device="cpu"
    ).fit(x)
    assert det.elbo_scale == 0.5 and np.isfinite(det.anomaly_score(x)).all()
    with pytest.raises(ValueError, match="bound of a BetaVAE"):
        detectors.VAEDetector(nn.Linear(4, 4), score="elbo", device="cpu").fit(x)
    with pytest.raises(ValueError, match="beta > 0"):
        detectors.VAEDetector(
            model_kwargs={"latent_dim": 4, "beta": 0.0}, score="elbo", device="cpu"
        ).fit(x)
