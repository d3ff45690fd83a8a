"""GAN losses, the gradient penalty, the score conventions, training and detectors."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from phbook import detectors, metrics, train
from phbook.models import aae
from phbook.models import gan as G
from phbook.train import TrainState

# ------------------------------------------------------------------ known critics


class LinearCritic(nn.Module):
    """f(x) = w . x + b: its gradient is w everywhere."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = nn.Parameter(torch.tensor(0.3))

    def forward(self, x):
        return x.flatten(1) @ self.w.flatten() + self.b


class QuadraticCritic(nn.Module):
    """f(x) = 0.5 * ||x||^2: its gradient at x is x."""

    def forward(self, x):
        return 0.5 * x.flatten(1).pow(2).sum(1)


def test_gradient_penalty_of_a_linear_critic_is_known_exactly():
    torch.manual_seed(0)
    w = torch.randn(1, 4, 4)
    w = 3.0 * w / w.norm()  # ||grad f|| = 3 everywhere
    critic = LinearCritic(w)
    real, fake = torch.randn(8, 1, 4, 4), torch.randn(8, 1, 4, 4)
    gp = G.gradient_penalty(critic, real, fake)
    assert float(gp.detach()) == pytest.approx((3.0 - 1.0) ** 2, rel=1e-5)
    # the penalty is differentiable in the critic's weights: d/dw (||w|| - 1)^2
    gp.backward()
    expected = 2 * (3.0 - 1.0) * w / 3.0
    torch.testing.assert_close(critic.w.grad, expected, rtol=1e-4, atol=1e-5)
    # a critic with unit gradient norm is not penalised
    unit = LinearCritic(w / 3.0)
    assert float(G.gradient_penalty(unit, real, fake).detach()) == pytest.approx(
        0, abs=1e-8
    )


def test_gradient_penalty_of_a_quadratic_critic_with_fixed_interpolation():
    torch.manual_seed(1)
    real, fake = torch.randn(5, 1, 3, 3), torch.randn(5, 1, 3, 3)
    eps = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    gp = G.gradient_penalty(QuadraticCritic(), real, fake, eps=eps)
    x_t = eps.view(5, 1, 1, 1) * real + (1 - eps.view(5, 1, 1, 1)) * fake
    norms = x_t.flatten(1).norm(dim=1)
    assert float(gp.detach()) == pytest.approx(float(((norms - 1) ** 2).mean()), rel=1e-5)
    # eps = 1 interpolates to the real sample, eps = 0 to the fake one
    only_real = G.gradient_penalty(QuadraticCritic(), real[:1], fake[:1], torch.ones(1))
    assert float(only_real.detach()) == pytest.approx(
        float((real[0].norm() - 1) ** 2), rel=1e-5
    )


def test_gradient_penalty_errors_name_the_argument():
    critic = QuadraticCritic()
    with pytest.raises(ValueError, match="real .* fake"):
        G.gradient_penalty(critic, torch.zeros(2, 1, 4, 4), torch.zeros(3, 1, 4, 4))
    with pytest.raises(ValueError, match="eps"):
        G.gradient_penalty(critic, torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(3))


# ------------------------------------------------------------------------- losses


def test_gan_losses_match_binary_cross_entropy():
    real, fake = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([-3.0, 0.0, 4.0])
    ref = F.binary_cross_entropy_with_logits(
        real, torch.ones(3)
    ) + F.binary_cross_entropy_with_logits(fake, torch.zeros(3))
    torch.testing.assert_close(G.discriminator_loss(real, fake), ref)
    # non-saturating: -log D(G(z)); saturating: log(1 - D(G(z)))
    d = torch.sigmoid(fake)
    torch.testing.assert_close(G.generator_loss(fake), -torch.log(d).mean())
    torch.testing.assert_close(
        G.generator_loss(fake, saturating=True), torch.log(1 - d).mean()
    )


def test_saturating_generator_loss_vanishes_where_fakes_are_rejected():
    logit = torch.tensor([-8.0], requires_grad=True)  # D(G(z)) = 3e-4: rejected
    (g_sat,) = torch.autograd.grad(G.generator_loss(logit, saturating=True), logit)
    (g_ns,) = torch.autograd.grad(G.generator_loss(logit), logit)
    assert abs(float(g_sat)) < 1e-3 < 0.9 < abs(float(g_ns))


def test_wasserstein_losses_have_the_documented_signs():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.0, -2.0])
    assert float(G.wasserstein_critic_loss(real, fake)) == pytest.approx(-3.0)
    assert float(G.wasserstein_generator_loss(fake)) == pytest.approx(1.0)


# ---------------------------------------------------------------- score conventions


def test_weighted_score_convention_is_schlegl_2017():
    r, d = torch.tensor([1.0, 2.0]), torch.tensor([10.0, 0.0])
    torch.testing.assert_close(G.weighted_score(r, d, 0.0), r)  # residual alone
    torch.testing.assert_close(G.weighted_score(r, d, 1.0), d)  # feature alone
    torch.testing.assert_close(G.weighted_score(r, d, 0.1), 0.9 * r + 0.1 * d)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="lam"):
            G.weighted_score(r, d, bad)


def test_kappa_and_lam_rank_images_identically():
    rng = np.random.default_rng(0)
    r, d = torch.tensor(rng.random(50)), torch.tensor(rng.random(50) * 5)
    for kappa in (0.0, 0.5, 1.0, 4.0):
        lam = G.kappa_to_lam(kappa)
        torch.testing.assert_close(r + kappa * d, (1 + kappa) * G.weighted_score(r, d, lam))
    with pytest.raises(ValueError, match="kappa"):
        G.kappa_to_lam(-1.0)


def small_parts(size=8, latent=4, seed=0):
    torch.manual_seed(seed)
    return (
        G.Encoder(size, latent, (4,)),
        G.Generator(size, latent, (4,)),
        G.Critic(size, (4,)),
    )


def test_fanogan_score_is_mse_plus_kappa_feature_mse():
    enc, gen, critic = small_parts()
    x = torch.randn(6, 1, 8, 8)
    kappa = 2.5
    with torch.no_grad():
        x_hat = gen(enc(x))
        expected = ((x - x_hat) ** 2).mean(dim=(1, 2, 3)) + kappa * (
            (critic.features(x) - critic.features(x_hat)) ** 2
        ).mean(1)
    torch.testing.assert_close(G.fanogan_score(x, enc, gen, critic, kappa), expected)
    terms = G.izif_loss(x, enc, gen, critic, kappa)
    torch.testing.assert_close(terms["loss"], expected.mean(), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------- architectures


@pytest.mark.parametrize("size", [16, 21, 32, 48, 64, (20, 28)])
def test_networks_take_every_book_image_size(size):
    hw = G.image_hw(size)
    gen = G.Generator(size, 8)
    critic, enc = G.Critic(size), G.Encoder(size, 8)
    x = gen(torch.randn(3, 8))
    assert x.shape == (3, 1, *hw)
    assert critic(x).shape == (3,)
    assert enc(x).shape == (3, 8)
    model = aae.AdversarialAutoencoder(size, 6)
    assert model(x).shape == x.shape


def test_default_channels_follow_the_image_size():
    assert G.default_channels(16) == (16, 32)
    assert G.default_channels(21) == (16, 32)
    assert len(G.default_channels(32)) == 3 == len(G.default_channels(48))
    assert len(G.default_channels(64)) == 4
    with pytest.raises(ValueError, match="image_size"):
        G.image_hw(2)


def test_generator_rejects_codes_of_the_wrong_size():
    with pytest.raises(ValueError, match=r"z must have shape \(N, 8\)"):
        G.Generator(16, 8)(torch.randn(2, 5))


# ------------------------------------------------------------------------ training


def frames(n=256, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = torch.rand(n, 2, generator=g) * (size - 3) + 1.5
    blob = torch.exp(
        -((yy - c[:, :1, None]) ** 2 + (xx - c[:, 1:, None]) ** 2) / 3.0
    ).unsqueeze(1)
    return blob + 0.05 * torch.randn(n, 1, size, size, generator=g)


def make_wgan(seed=0, **kw):
    torch.manual_seed(seed)
    return G.WGANGP(8, 4, (4,), **kw)


def test_wgan_training_with_a_fixed_seed_is_reproducible():
    x = frames(128)
    runs = []
    for _ in range(2):
        model = make_wgan()
        hist = train.fit(model, x, epochs=2, batch_size=32, lr=1e-3, seed=5, device="cpu")
        runs.append((model, hist))
    (a, ha), (b, hb) = runs
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), k
    np.testing.assert_array_equal(ha["train_loss"], hb["train_loss"])
    assert {"train_wasserstein", "train_gp", "train_g_loss"} <= set(ha.columns)
    other = make_wgan()
    train.fit(other, x, epochs=2, batch_size=32, lr=1e-3, seed=6, device="cpu")
    assert not torch.equal(other.generator.fc[0].weight, a.generator.fc[0].weight), (
        "another seed must give another run"
    )


def test_generator_steps_once_every_n_critic_steps():
    model = make_wgan(n_critic=3)
    opts = model.configure_optimizers(1e-2)
    x = frames(32)
    state = TrainState(epoch=0, epochs=1, step=0, steps_per_epoch=10)
    gen_before = [p.detach().clone() for p in model.generator.parameters()]
    crit_before = [p.detach().clone() for p in model.critic.parameters()]

    def moved(before, module):
        after = list(module.parameters())
        return not all(torch.equal(a, b) for a, b in zip(before, after, strict=True))

    for _ in range(2):
        model.training_step(x, opts, state)
        state.step += 1
    assert not moved(gen_before, model.generator)
    assert moved(crit_before, model.critic)
    model.training_step(x, opts, state)  # the third critic step: the generator moves
    assert moved(gen_before, model.generator)


def test_dcgan_trains_through_the_one_loop():
    torch.manual_seed(0)
    model = G.DCGAN(8, 4, (4,))
    hist = train.fit(model, frames(), epochs=2, batch_size=32, lr=2e-4, device="cpu")
    assert {"train_d_real", "train_d_fake", "train_loss"} <= set(hist.columns)
    assert np.isfinite(hist["train_loss"]).all()
    with pytest.raises(ValueError, match="loss must be one of"):
        G.GAN(model.generator, model.critic, 4, loss="hinge")
    with pytest.raises(ValueError, match="n_critic"):
        G.GAN(model.generator, model.critic, 4, n_critic=0)


def test_izif_training_moves_only_the_encoder():
    enc, gen, critic = small_parts()
    gen_state = {k: v.clone() for k, v in gen.state_dict().items()}
    enc_w = enc.head.weight.detach().clone()
    wrapper = G.IziFEncoder(enc, gen, critic)
    hist = train.fit(wrapper, frames(), epochs=3, batch_size=32, lr=3e-3, device="cpu")
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    for k, v in gen.state_dict().items():
        assert torch.equal(v, gen_state[k]), k
    assert not torch.equal(enc.head.weight, enc_w)
    assert not wrapper.generator.training and not wrapper.critic.training


def test_simultaneous_encoder_gan_trains_generator_and_encoder_together():
    torch.manual_seed(0)
    model = G.SimultaneousEncoderGAN.build(8, 4, (4,), n_critic=1, enc_weight=2.0)
    enc_w = model.encoder.head.weight.detach().clone()
    hist = train.fit(model, frames(), epochs=2, batch_size=32, lr=1e-3, device="cpu")
    assert "train_enc_cycle" in hist and np.isfinite(hist["train_enc_cycle"]).all()
    assert not torch.equal(model.encoder.head.weight, enc_w)
    # the cycle term is the L1 distance between G(z) and G(E(G(z)))
    torch.manual_seed(7)
    terms = model.generator_step_loss(5, "cpu")
    torch.manual_seed(7)
    with torch.no_grad():
        fake = model.generator(model.sample_z(5, "cpu"))
        cycle = (fake - model.generator(model.encoder(fake))).abs().mean()
        adv = -model.critic(fake).mean()
    torch.testing.assert_close(terms["enc_cycle"], cycle)
    torch.testing.assert_close(terms["loss"].detach(), adv + 2.0 * cycle)


def test_anogan_search_finds_a_representable_image_and_keeps_images_independent():
    _, gen, critic = small_parts(seed=3)
    gen.eval()
    torch.manual_seed(4)
    z_true = torch.randn(4, 4)
    with torch.no_grad():
        x = gen(z_true)
    start = G.anogan_search(gen, critic, x, n_steps=0, seed=0)
    found = G.anogan_search(gen, critic, x, n_steps=200, lr=0.05, seed=0)
    assert (found["score"] < 0.5 * start["score"]).all()
    assert found["history"].shape == (200, 4)
    assert (found["history"][-1] < found["history"][0]).all()
    # each image's search ignores the others: one at a time gives the same result
    z0 = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    together = G.anogan_search(gen, critic, x, n_steps=30, z0=z0)
    alone = torch.cat(
        [
            G.anogan_search(gen, critic, x[i : i + 1], n_steps=30, z0=z0[i : i + 1])[
                "score"
            ]
            for i in range(4)
        ]
    )
    torch.testing.assert_close(together["score"], alone, rtol=1e-4, atol=1e-6)
    # the score is the Schlegl weighting of mean absolute residual and feature terms
    r, d = G.residual_and_feature(x, found["x_hat"], critic, p=1)
    torch.testing.assert_close(found["score"], 0.9 * r + 0.1 * d)


def test_adversarial_autoencoder_trains_and_is_reproducible():
    x = frames()
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        model = aae.AdversarialAutoencoder(8, 3, (4,), hidden=16)
        hist = train.fit(model, x, epochs=4, batch_size=32, lr=3e-3, seed=1, device="cpu")
        states.append(model.state_dict())
    assert {"train_sse", "train_adv", "train_d_loss"} <= set(hist.columns)
    assert hist["train_sse"].iloc[-1] < hist["train_sse"].iloc[0]
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    with pytest.raises(ValueError, match="adv_weight"):
        aae.AdversarialAutoencoder(8, 3, adv_weight=-1)


def test_conv_adversarial_autoencoder_is_the_conv_ae_plus_a_latent_discriminator():
    from phbook.models.ae import SparseConvAE

    torch.manual_seed(0)
    model = aae.AdversarialAutoencoder(21, 5, (8, 8), hidden=16, architecture="conv")
    torch.manual_seed(0)
    ae = SparseConvAE(21, 5, (8, 8), l1=0.0)
    # the same weights, in the same order, as the book's conv AE (no L1)
    ae_params = [p.shape for p in ae.parameters()]
    aae_params = [p.shape for p in model.encoder.parameters()] + [
        p.shape for p in model.decoder.parameters()
    ]
    assert sorted(ae_params) == sorted(aae_params)
    model.encoder.load_state_dict(
        {
            **{f"0.{k}": v for k, v in ae.encoder.state_dict().items()},
            **{f"1.{k}": v for k, v in ae.to_latent.state_dict().items()},
        }
    )
    model.decoder.load_state_dict(
        {
            **{f"0.{k}": v for k, v in ae.from_latent.state_dict().items()},
            **{f"2.{k}": v for k, v in ae.decoder.state_dict().items()},
        }
    )
    x = torch.randn(4, 1, 21, 21)
    torch.testing.assert_close(model(x), ae(x))
    assert model.encode(x).shape == (4, 5)
    assert model.betas == (0.9, 0.999)  # Adam's default, as the conv AE trains
    assert aae.AdversarialAutoencoder(16, 3).betas == (0.5, 0.999)
    hist = train.fit(model, x.repeat(8, 1, 1, 1), epochs=2, batch_size=8, seed=0)
    assert {"train_sse", "train_adv", "train_d_loss"} <= set(hist.columns)
    with pytest.raises(ValueError, match="architecture"):
        aae.AdversarialAutoencoder(16, 3, architecture="mlp")


def test_aae_detector_with_the_conv_architecture_finds_a_hot_pixel():
    normal, x_test, labels = blob_sets()
    a = detectors.AAEDetector(
        latent_dim=4, channels=(8,), epochs=6, batch_size=32, architecture="conv"
    )
    a.fit(normal)
    assert isinstance(a.model_.encoder, torch.nn.Sequential)
    assert metrics.roc_auc(labels, a.anomaly_score(x_test)) > 0.9


# ------------------------------------------------------------------------ detectors


def blob_sets():
    normal = frames(400, seed=0).squeeze(1).numpy()
    test = frames(100, seed=1).squeeze(1).numpy()
    hot = frames(50, seed=2).squeeze(1).numpy()
    hot[:, 1, 6] += 3.0  # a bright hot pixel
    x_test = np.concatenate([test, hot])
    labels = np.r_[np.zeros(100), np.ones(50)]
    return normal, x_test, labels


SMALL = {"latent_dim": 4, "channels": (8,), "epochs": 2, "batch_size": 32}


def test_fanogan_detector_scores_reload_and_follow_the_sign_convention():
    normal, x_test, labels = blob_sets()
    det = detectors.FAnoGANDetector(**SMALL, encoder_epochs=3, name="test-fanogan")
    det.fit(normal)
    scores = det.anomaly_score(x_test)
    assert scores.shape == (150,)
    np.testing.assert_allclose(det.score_samples(x_test), -scores)
    assert metrics.roc_auc(labels, scores) > 0.9  # a hot pixel is not reconstructed
    terms = det.score_terms(x_test)
    np.testing.assert_allclose(
        terms["residual"] + det.kappa * terms["feature"], scores, rtol=1e-5
    )
    assert det.reconstruct(x_test[:3]).shape == (3, 1, 8, 8)
    # a second fit with the same name loads the checkpoints: same scores
    again = detectors.FAnoGANDetector(**SMALL, encoder_epochs=3, name="test-fanogan")
    np.testing.assert_allclose(again.fit(normal).anomaly_score(x_test), scores, rtol=1e-5)


def test_fanogan_tuning_moves_the_generator_and_keeps_the_gan_and_critic():
    normal, x_test, labels = blob_sets()
    plain = detectors.FAnoGANDetector(**SMALL, encoder_epochs=2).fit(normal)
    tuned = detectors.FAnoGANDetector(
        **SMALL, encoder_epochs=2, tune_epochs=3, tune_lr=1e-3
    ).fit(normal)
    assert plain.tune_history_ is None and len(tuned.tune_history_) == 3
    # the GAN as trained is kept; the tuned generator moved, the critic did not
    for a, b in zip(
        plain.gan_.generator.parameters(), tuned.gan_.generator.parameters(), strict=True
    ):
        assert torch.equal(a, b)
    moved = [
        not torch.equal(a, b)
        for a, b in zip(
            tuned.gan_.generator.parameters(),
            tuned.izif_.generator.parameters(),
            strict=True,
        )
    ]
    assert any(moved)
    for a, b in zip(
        tuned.gan_.critic.parameters(), tuned.izif_.critic.parameters(), strict=True
    ):
        assert torch.equal(a, b)
    # the tuned model reconstructs its training frames better
    xs = torch.as_tensor(normal[:200, None])
    with torch.no_grad():
        err = {
            k: (xs - d.izif_.reconstruct(xs)).pow(2).mean().item()
            for k, d in (("plain", plain), ("tuned", tuned))
        }
    assert err["tuned"] < err["plain"], err
    assert metrics.roc_auc(labels, tuned.anomaly_score(x_test)) > 0.9
    for bad, match in (
        ({"tune_epochs": -1}, "tune_epochs"),
        ({"tune_epochs": 1.5}, "tune_epochs"),
        ({"tune_epochs": 2, "tune_lr": 0}, "tune_lr"),
    ):
        with pytest.raises(ValueError, match=match):
            detectors.FAnoGANDetector(**SMALL, **bad).fit(normal)


def test_anogan_detector_shares_the_gan_and_uses_lam_on_features():
    normal, x_test, _ = blob_sets()
    f = detectors.FAnoGANDetector(**SMALL, encoder_epochs=1).fit(normal)
    det = detectors.AnoGANDetector(gan=f.gan_, lam=0.3, n_steps=5, offset_sample=50)
    det.fit(normal)
    out = det.search(x_test[:10])
    np.testing.assert_allclose(out["score"], 0.7 * out["residual"] + 0.3 * out["feature"])
    np.testing.assert_allclose(det.anomaly_score(x_test[:10]), out["score"], rtol=1e-6)
    with pytest.raises(ValueError, match="lam"):
        detectors.AnoGANDetector(gan=f.gan_, lam=2.0).fit(normal)


def test_simultaneous_encoder_and_aae_detectors():
    normal, x_test, labels = blob_sets()
    sim = detectors.SimultaneousEncoderGANDetector(
        **SMALL, encoder_epochs=2, score="latent_norm"
    ).fit(normal)
    norms = sim.anomaly_score(x_test)
    np.testing.assert_allclose(norms, np.linalg.norm(sim.transform(x_test), axis=1), 1e-5)
    a = detectors.AAEDetector(latent_dim=4, channels=(8,), epochs=6, batch_size=32)
    a.fit(normal)
    assert metrics.roc_auc(labels, a.anomaly_score(x_test)) > 0.9
    assert a.transform(x_test).shape == (150, 4)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: detectors.SimultaneousEncoderGANDetector(score="elbo"), "score="),
        (lambda: detectors.AAEDetector(score="kl"), "score="),
        (lambda: detectors.FAnoGANDetector(kappa=-1), "kappa"),
    ],
)
def test_detector_argument_errors_are_clear(make, match):
    normal, _, _ = blob_sets()
    with pytest.raises(ValueError, match=match):
        make().fit(normal)
    with pytest.raises(ValueError, match="single-channel"):
        detectors.AAEDetector().fit(np.zeros((4, 3, 8, 8), np.float32))


def test_unfitted_detector_says_so():
    with pytest.raises(RuntimeError, match="not fitted"):
        detectors.FAnoGANDetector().anomaly_score(np.zeros((2, 8, 8), np.float32))


def test_score_convention_constants_are_consistent():
    # lam = 0.1 of AnoGAN and kappa = 1 of f-AnoGAN are different weightings
    assert G.kappa_to_lam(1.0) == pytest.approx(0.5)
    assert math.isclose(G.kappa_to_lam(1 / 9), 0.1)


def test_residual_map_figure_layout_and_errors():
    import matplotlib

    matplotlib.use("Agg")
    from phbook import plotting

    x = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    fig = plotting.show_residuals(x, x[:, None] * 0.5, titles=["a", "b", "c"])
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 9  # three rows of three panels (plus the colour bar)
    residual = images[-1].images[0]
    lo, hi = residual.get_clim()
    assert hi == -lo > 0  # a symmetric scale centred on zero
    fixed = plotting.show_residuals(x, x * 0.5, residual_limit=0.1)
    clims = [ax.images[0].get_clim() for ax in fixed.axes if ax.images][-3:]
    assert all(c == (-0.1, 0.1) for c in clims)
    with pytest.raises(ValueError, match="same shape"):
        plotting.show_residuals(x, x[:2])
    with pytest.raises(ValueError, match="residual_limit"):
        plotting.show_residuals(x, x, residual_limit=0)
