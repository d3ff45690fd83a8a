"""Chapter 11: the CHASE study (phbook.studies.chase) and the CVAE of the paper."""

import numpy as np
import pytest
import torch
from torch import nn

from phbook.models.vae import ChaseCVAE, kl_divergence
from phbook.studies import chase


def test_latent_rank_orders_by_distance_to_the_nearest_real():
    z_reals = np.array([[0.0], [10.0]])
    z_cand = np.array([[4.0], [9.5], [0.1], [6.0]])
    order, dist = chase.latent_rank(z_cand, z_reals)
    np.testing.assert_allclose(dist, [4.0, 0.5, 0.1, 4.0])
    assert list(order) == [2, 1, 0, 3]  # ties keep the input order


def test_nmse_to_set_hand_computed():
    reals = np.array([[1.0, 0.0], [0.0, 2.0]])[:, None, :]
    cand = np.array([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])[:, None, :]
    # candidate 1: min(1/1, 4/4) = 1; candidate 2: min(4/1, 5/4) = 1.25;
    # candidate 3: min(2/1, 1/4) = 0.25
    np.testing.assert_allclose(chase.nmse_to_set(cand, reals), [0, 1, 1.25, 0.25])
    with pytest.raises(ValueError, match="all-zero"):
        chase.nmse_to_set(cand, np.zeros((1, 1, 2)))


def test_dnmse_curve_informative_codes_start_lower_than_random_ones():
    rng = np.random.default_rng(0)
    reals = rng.normal(size=(20, 25))
    # candidates: noisy copies of reals (look alike) and unrelated images
    alike = reals[rng.integers(0, 20, 200)] + 0.3 * rng.normal(size=(200, 25))
    other = rng.normal(size=(800, 25))
    x = np.concatenate([alike, other])
    good = chase.dnmse_curve(x, x, reals, reals)  # the pixels themselves as codes
    bad = chase.dnmse_curve(x, rng.normal(size=(1000, 3)), reals, rng.normal(size=(20, 3)))
    # every ordering has the same mean; a good code front-loads the look-alikes
    assert good.mean() == pytest.approx(bad.mean())
    assert good[:100].mean() < 0.5 * bad[:100].mean()
    with pytest.raises(ValueError, match="differ in number"):
        chase.dnmse_curve(x, x[:5], reals, reals)


def test_cvae_follows_the_paper():
    torch.manual_seed(0)
    model = ChaseCVAE(kl_warmup=3)
    convs = [m for m in model.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3 and all(
        c.out_channels == 32 and c.stride == (2, 2) and c.kernel_size == (3, 3)
        for c in convs
    )
    assert model.fc_mu.out_features == model.fc_logvar.out_features == 21
    assert not hasattr(model, "to_latent")
    ups = [m for m in model.decoder.body if isinstance(m, nn.Upsample)]
    assert len(ups) == 3 and all(u.mode == "nearest" for u in ups)
    assert isinstance(model.configure_optimizers(1e-3, 0.0), torch.optim.NAdam)
    # KL annealing: weight 0 at the first epoch, 1 after the warm-up
    for epoch, w in ((0, 0.0), (1, 1 / 3), (3, 1.0), (7, 1.0)):
        model.on_epoch_start(type("S", (), {"epoch": epoch})())
        assert model.kl_weight == pytest.approx(w)
    # the loss: the Gaussian NLL at the batch's maximum-likelihood variance plus the
    # weighted KL; validation always uses the full weight
    x = torch.randn(16, 1, 21, 21) * 0.3
    model.on_epoch_start(type("S", (), {"epoch": 1})())
    terms = model.loss(x)
    torch.testing.assert_close(terms["loss"], terms["nll"] + terms["kl"] / 3)
    val = model.validation_loss(x)
    torch.testing.assert_close(val["loss"], val["nll"] + val["kl"])
    x_hat = torch.zeros_like(x)
    se = x.pow(2).flatten(1).sum(1)
    s2 = se.mean() / 441
    expected = 0.5 * se / s2 + 0.5 * 441 * torch.log(s2)
    torch.testing.assert_close(ChaseCVAE.nll(x, x_hat), expected)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (16, 21)
    assert kl_divergence(mu, logvar).shape == (16,)


def test_study_runs_end_to_end_on_tiny_sets():
    sets = chase.chase_sets(96, 12, 120, 80, seed=40)
    res = chase.run_study(
        sets, max_epochs=2, patience=1, kl_warmup=1, dict_epochs=1, top=20, name=None
    )
    table = res.table()
    assert list(table.index) == list(chase.PAPER_METHODS) + list(chase.BOOK_METHODS)
    assert set(table.loc[list(chase.PAPER_METHODS), "row"]) == {"paper"}
    # the numbers stay numbers (so that the book's .round() rounds them)
    assert table["MLP ROC-AUC"].dtype.kind == "f"
    assert res.table(labels=True).round(2)["MLP ROC-AUC"].tolist() == [
        round(v, 2) for v in table["MLP ROC-AUC"]
    ]
    for m, c in res.curves.items():
        assert len(c) == 96
        assert c.mean() == pytest.approx(res.nmse_mean)
        assert res.codes[m]["test"].shape == (96, chase.LATENT_DIM)
        assert 0 <= res.auc[m] <= 1
    assert len(res.histories["SCAE"]) <= 2
    assert set(res.nonlinear_beats_linear()) == {"dnmse", "mlp"}
