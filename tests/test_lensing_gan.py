"""The progressive WGAN-GP with a ClusterGAN encoder and chapter 10's contamination
study (phbook.models.pgan, phbook.studies.lensing_gan)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from phbook import train
from phbook.models import gan as G
from phbook.models import pgan
from phbook.studies import lensing_gan as L

TINY = {
    "n_continuous": 3,
    "n_clusters": 2,
    "channels": [4, 4, 4],
    "epochs": 2,
    "encoder_epochs": 1,
    "batch_size": 16,
    "lr": 1e-3,
    "encoder_lr": 1e-3,
    "n_critic": 2,
    "kappa": 1.0,
    "n_train": 32,
    "n_seeds": 2,
}


class _Linear(nn.Module):
    def __init__(self, weight):
        super().__init__()
        self.weight = weight

    def forward(self, x):
        return x.flatten(1) @ self.weight.T


def test_cycle_loss_is_zero_when_the_encoder_inverts_the_generator():
    torch.manual_seed(0)
    w = torch.randn(16, 3)  # G(z) = W z, full column rank
    generator = _Linear(w)
    encoder = _Linear(torch.linalg.pinv(w))  # E(x) = W^+ x, so E(G(z)) = z
    z = torch.randn(10, 3)
    assert pgan.cycle_loss(generator, encoder, z).item() < 1e-5
    # an encoder that does not invert G leaves a cycle residual
    wrong = _Linear(torch.zeros(3, 16))
    assert pgan.cycle_loss(generator, wrong, z).item() > 0.1


def test_gradient_penalty_of_a_linear_critic():
    # f(x) = w . x has gradient w everywhere: the penalty is (||w|| - 1)^2
    w = torch.full((1, 1 * 4 * 4), 0.5)
    critic = _Linear(w)
    real, fake = torch.randn(5, 1, 4, 4), torch.randn(5, 1, 4, 4)
    gp = G.gradient_penalty(critic, real, fake)
    assert gp.item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-5)


def test_grow_schedule_fades_each_stage_in():
    assert pgan.grow_schedule(0.0, 3) == (0, 1.0)
    assert pgan.grow_schedule(0.1, 3) == (0, 1.0)
    stage, alpha = pgan.grow_schedule(0.3, 3)  # inside phase 1 of 5: fading stage 1
    assert stage == 1 and alpha == pytest.approx(0.5)
    assert pgan.grow_schedule(0.5, 3) == (1, 1.0)
    stage, alpha = pgan.grow_schedule(0.7, 3)
    assert stage == 2 and alpha == pytest.approx(0.5)
    assert pgan.grow_schedule(1.0, 3) == (2, 1.0)
    assert pgan.grow_schedule(0.5, 1) == (0, 1.0)


def test_generator_fade_in_blends_the_two_resolutions():
    torch.manual_seed(0)
    g = pgan.ProgressiveGenerator(5, (6, 5, 4))
    z = torch.randn(3, 5)
    g.grow(0)
    coarse = g(z)
    assert coarse.shape == (3, 1, 8, 8)
    g.grow(1, 1.0)
    fine = g(z)
    assert fine.shape == (3, 1, 16, 16)
    g.grow(1, 0.0)
    assert torch.allclose(g(z), F.interpolate(coarse, scale_factor=2))
    g.grow(1, 0.25)
    blend = 0.25 * fine + 0.75 * F.interpolate(coarse, scale_factor=2)
    assert torch.allclose(g(z), blend, atol=1e-6)
    g.grow(2)
    assert g(z).shape == (3, 1, 32, 32)


def test_critic_fade_in_blends_the_two_resolutions():
    torch.manual_seed(0)
    c = pgan.ProgressiveCritic((6, 5, 4))
    x = torch.randn(4, 1, 16, 16)
    c.grow(0)
    old = c(F.avg_pool2d(x, 2))
    c.grow(1, 0.0)
    assert torch.allclose(c(x), old, atol=1e-6)
    c.grow(1, 1.0)
    assert not torch.allclose(c(x), old, atol=1e-4)
    c.grow(2)
    assert c(torch.randn(4, 1, 32, 32)).shape == (4,)
    assert c.features(torch.randn(4, 1, 32, 32)).shape == (4, 6 * 16)
    with pytest.raises(ValueError, match="32x32"):
        c(x)


def test_cluster_prior_and_encoder_shapes():
    z, c = pgan.cluster_prior(50, 3, 4, generator=torch.Generator().manual_seed(0))
    assert z.shape == (50, 7) and c.shape == (50,)
    assert torch.equal(z[:, 3:].argmax(1), c)
    assert torch.allclose(z[:, 3:].sum(1), torch.ones(50))
    enc = pgan.ClusterEncoder(3, 4, 32, (4, 4, 4))
    out = enc(torch.randn(5, 1, 32, 32))
    assert out.shape == (5, 7)
    assert torch.allclose(out[:, 3:].sum(1), torch.ones(5), atol=1e-6)
    # smaller images are upsampled to the full size first
    assert enc(torch.randn(5, 1, 8, 8)).shape == (5, 7)


def test_simultaneous_training_moves_the_encoder_and_the_other_does_not():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 1, 32, 32)).astype(np.float32)
    trained = {}
    for simultaneous in (True, False):
        torch.manual_seed(0)
        model = pgan.ProgressiveEncoderGAN(3, 2, (4, 4, 4), simultaneous=simultaneous)
        before = [p.detach().clone() for p in model.encoder.parameters()]
        train.fit(model, x, epochs=2, batch_size=8, lr=1e-3, progress=False)
        after = list(model.encoder.parameters())
        trained[simultaneous] = any(
            not torch.equal(a, b) for a, b in zip(after, before, strict=True)
        )
        # training ends at the full resolution
        assert model.generator.stage == 2 and model.generator.side == 32
    assert trained == {True: True, False: False}


def test_contaminated_sets_are_exact_and_nested():
    normal = np.zeros((100, 1, 4, 4), np.float32)
    sub = np.ones((30, 1, 4, 4), np.float32)
    for f in L.LEVELS:
        x = L.contaminated(normal, sub, f, 100)
        assert len(x) == 100
        assert x[:, 0, 0, 0].sum() == round(100 * f)
    with pytest.raises(ValueError):
        L.contaminated(normal, sub, 0.5, 100)


def test_bin2_averages_blocks():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    assert np.allclose(L.bin2(x)[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    assert np.array_equal(L.bin2(x[:, 0]), L.bin2(x))


def test_training_is_deterministic_by_seed():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 1, 32, 32)).astype(np.float32)
    test = rng.normal(size=(8, 1, 32, 32)).astype(np.float32)
    scores = [
        L._score(L.train_variant(x, TINY, simultaneous=True, seed=s), test)
        for s in (0, 0, 1)
    ]
    assert np.array_equal(scores[0], scores[1])
    assert not np.allclose(scores[0], scores[2])
    assert np.all(np.isfinite(scores[0]))


def test_study_table_drops_and_verdict():
    rng = np.random.default_rng(2)
    normal = rng.normal(size=(40, 1, 32, 32)).astype(np.float32)
    sub = (rng.normal(size=(10, 1, 32, 32)) + 3).astype(np.float32)
    # held-out test images: the training sets use normal[:32] and sub[:3]
    x_test = np.concatenate([normal[32:], sub[3:]])
    y_test = np.r_[np.zeros(8), np.ones(7)]
    res = L.run_study(normal, sub, x_test, y_test, TINY, levels=(0.0, 0.1), name=None)
    assert len(res) == 2 * 2 * 2
    assert set(res["variant"]) == set(L.VARIANTS)
    assert res["auc"].between(0, 1).all() and res["auc_norm"].between(0, 1).all()
    # an anomaly three noise sigmas brighter everywhere is found by both variants
    assert (res[res["fraction"] == 0.0]["auc"] > 0.9).all(), res
    drop = L.drops(res)
    for variant in L.VARIANTS:
        part = res[res["variant"] == variant].pivot(
            index="seed", columns="fraction", values="auc"
        )
        assert drop.loc[variant, "mean"] == pytest.approx((part[0.0] - part[0.1]).mean())
    norm_drop = L.drops(res, value="auc_norm")
    for variant in L.VARIANTS:
        part = res[res["variant"] == variant].pivot(
            index="seed", columns="fraction", values="auc_norm"
        )
        assert norm_drop.loc[variant, "mean"] == pytest.approx(
            (part[0.0] - part[0.1]).mean()
        )
    table = L.summary(res)
    assert list(table.index) == ["0%", "10%"]
    # named for what differs: when the encoder is trained (both variants have one)
    assert set(table.columns.get_level_values("variant")) == set(L.VARIANT_LABELS.values())


def test_verdict_branches_on_the_numbers():
    def frame(w, wo):
        return pd.DataFrame(
            {"mean": [w[0], wo[0]], "sd": [w[1], wo[1]], "n_seeds": [3, 3]},
            index=list(L.VARIANTS),
        )

    holds, text = L.verdict(frame((0.01, 0.01), (0.20, 0.02)))
    assert holds and "beyond the scatter" in text
    holds, text = L.verdict(frame((0.05, 0.05), (0.08, 0.05)))
    assert not holds and "not beyond" in text
    holds, text = L.verdict(frame((0.10, 0.01), (0.02, 0.01)))
    assert not holds and "is not smaller" in text
    # drops equal at the printed precision are not called smaller, and no "-0.000"
    holds, text = L.verdict(frame((0.0010, 0.004), (0.0012, 0.001)))
    assert not holds and "is not smaller" in text and "0.000" in text
    assert "-0.000" not in text and "+0.000" not in text
    holds, _ = L.verdict(frame((0.0, math.nan), (0.3, math.nan)))
    assert not holds


def test_latent_norm_is_the_norm_of_the_continuous_code():
    """Berg et al.'s cue: |z_n| of the scorer's encoder, image by image."""
    izif = L.train_variant(
        np.random.default_rng(0).normal(size=(16, 1, 32, 32)).astype(np.float32),
        TINY,
        simultaneous=True,
        seed=0,
    )
    x = np.random.default_rng(1).normal(size=(5, 1, 32, 32)).astype(np.float32)
    with torch.no_grad():
        zn = izif.encoder.split(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(
        L._latent_norm(izif, x, batch=2), np.linalg.norm(zn, axis=1), rtol=1e-5
    )
