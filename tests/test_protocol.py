"""Chapter 11: the DNMSE and the CHASE latent protocol (phbook.latent)."""

import numpy as np
import pytest

from phbook import detectors, latent, metrics
from phbook.sim import transients

POOL_X = np.array([[0, 0], [1, 1], [2, 2], [4, 0]], dtype=float)[:, None, :]
POOL_Z = np.array([[0.0], [1.0], [2.0], [10.0]])


def test_dnmse_hand_computed():
    # query 1: image (0, 0), code 0.2 -> neighbours codes 0 and 1 (images (0,0), (1,1))
    #   near = (0 + 1) / 2 = 0.5; every = (0 + 1 + 4 + 8) / 4 = 3.25
    # query 2: image (4, 0), code 9 -> neighbours codes 10 and 2 ((4,0), (2,2))
    #   near = (0 + 4) / 2 = 2; every = (8 + 5 + 4 + 0) / 4 = 4.25
    xq = np.array([[0, 0], [4, 0]], dtype=float)[:, None, :]
    zq = np.array([[0.2], [9.0]])
    ratios = latent.neighbour_mse_ratio(xq, zq, POOL_X, POOL_Z, k=2)
    np.testing.assert_allclose(ratios, [0.5 / 3.25, 2 / 4.25])
    assert latent.dnmse(xq, zq, POOL_X, POOL_Z, k=2) == pytest.approx(
        (0.5 / 3.25 + 2 / 4.25) / 2
    )


def test_dnmse_exclude_self():
    # query = pool entry (2, 2) at code 2: without itself the nearest is (1, 1), MSE 1;
    # every = (4 + 1 + 0 + 4) / 4 = 2.25
    got = latent.neighbour_mse_ratio(
        POOL_X[2:3], POOL_Z[2:3], POOL_X, POOL_Z, k=1, exclude_self=True
    )
    np.testing.assert_allclose(got, [1 / 2.25])
    # with itself the neighbour is the query: ratio 0
    got = latent.neighbour_mse_ratio(POOL_X[2:3], POOL_Z[2:3], POOL_X, POOL_Z, k=1)
    np.testing.assert_allclose(got, [0.0])


def test_dnmse_random_codes_near_one_informative_codes_below():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 5, 5)) * rng.uniform(0.2, 3, size=(2000, 1, 1))
    z_random = rng.normal(size=(2000, 3))
    z_good = x.reshape(2000, -1)  # the pixels themselves
    q = slice(0, 100)
    random_value = latent.dnmse(x[q], z_random[q], x, z_random, k=10, exclude_self=True)
    good_value = latent.dnmse(x[q], z_good[q], x, z_good, k=10, exclude_self=True)
    assert random_value == pytest.approx(1.0, abs=0.1)
    assert good_value < 0.6 * random_value


def test_dnmse_errors():
    with pytest.raises(ValueError, match="k=9"):
        latent.dnmse(POOL_X[:1], POOL_Z[:1], POOL_X, POOL_Z, k=9)
    with pytest.raises(ValueError, match="differ in number"):
        latent.dnmse(POOL_X[:2], POOL_Z[:1], POOL_X, POOL_Z, k=1)


def test_neighbour_label_fraction_hand_case():
    labels = [0, 1, 1, 0]
    got = latent.neighbour_label_fraction([[0.9], [9.0]], POOL_Z, labels, k=2)
    # 0.9 -> codes 1 and 0 (labels 1, 0); 9 -> codes 10 and 2 (labels 0, 1)
    np.testing.assert_allclose(got, [0.5, 0.5])
    got = latent.neighbour_label_fraction([[1.6]], POOL_Z, labels, k=2)
    np.testing.assert_allclose(got, [1.0])


@pytest.fixture(scope="module")
def tiny_sets():
    kw = {"progress": False}
    return (
        transients.simulate(300, seed=11, **kw),
        transients.simulate(120, seed=12, **kw),
        transients.simulate(100, seed=13, **kw),
    )


def test_protocol_runner_on_a_tiny_set(tiny_sets):
    pool, lab, test = tiny_sets
    res = latent.run_protocol(
        pool.images,
        lab.images,
        lab.labels,
        test.images,
        test.labels,
        n_labelled=40,
        y_pool=pool.labels,
        k=5,
        epochs=1,
        batch_size=64,
        dict_epochs=1,
        kl_warmup=1,
    )
    assert tuple(res.detectors) == latent.PROTOCOL_METHODS
    assert len(res.labelled_index) == 40
    assert len(set(res.labelled_index)) == 40
    y_fit = np.asarray(lab.labels)[res.labelled_index]
    # stratified: the subset keeps the labelled set's share of reals (24 of 120)
    assert y_fit.sum() == 8
    for m in latent.PROTOCOL_METHODS:
        assert res.codes[m]["pool"].shape == (300, 21)
        assert res.codes[m]["labelled"].shape == (40, 21)
        assert res.codes[m]["test"].shape == (100, 21)
        p = res.probabilities[m]
        assert p.shape == (100,) and (p >= 0).all() and (p <= 1).all()
        # the AUC is that of P(real) against label 1 = real
        assert res.auc[m] == pytest.approx(metrics.roc_auc(test.labels, p))
        assert 0 < res.dnmse[m] < 1.5
        assert 0 <= res.neighbour_real[m] <= 1
    table = res.table()
    assert list(table.index) == list(latent.PROTOCOL_METHODS)
    assert res.best_nonlinear_auc() == max(res.auc["sparse AE"], res.auc["VAE"])


def test_protocol_sign_convention_on_separable_data():
    # real transients (label 1) are bright stamps, artifacts dark: P(real) must rank
    # the bright ones first (AUC near 1, not near 0)
    rng = np.random.default_rng(0)

    def make(n):
        y = (rng.uniform(size=n) < 0.3).astype(int)
        x = rng.normal(0, 0.1, (n, 6, 6)) + np.where(y, 1.0, -1.0)[:, None, None]
        return x.astype(np.float32), y

    xp, _ = make(200)
    xl, yl = make(60)
    xt, yt = make(100)
    res = latent.run_protocol(
        xp,
        xl,
        yl,
        xt,
        yt,
        n_labelled=30,
        methods={"pca": detectors.IncrementalPCADetector(n_components=2, batch_size=64)},
        k=3,
    )
    assert res.auc["pca"] > 0.99
    assert (
        res.probabilities["pca"][yt == 1].mean() > res.probabilities["pca"][yt == 0].mean()
    )


def test_protocol_rejects_bad_labelled_sizes(tiny_sets):
    pool, lab, test = tiny_sets
    args = (pool.images, lab.images, lab.labels, test.images, test.labels)
    with pytest.raises(ValueError, match="n_labelled=500"):
        latent.run_protocol(*args, n_labelled=500)
    with pytest.raises(ValueError, match="differ in number"):
        latent.run_protocol(
            pool.images, lab.images, lab.labels[:5], test.images, test.labels
        )
