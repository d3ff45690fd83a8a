import numpy as np
import pytest
import torch
from scipy.spatial.distance import mahalanobis
from sklearn.mixture import GaussianMixture

from phbook import latent
from phbook.models.ae import SparseConvAE
from phbook.models.vae import BetaVAE


def mixture(n_per=300, d=4, k=3, seed=0):
    """Gaussian clusters of different shapes in d dimensions, centres >= 12 apart."""
    rng = np.random.default_rng(seed)
    centres = [rng.normal(0, 10, d)]
    while len(centres) < k:
        c = rng.normal(0, 10, d)
        if min(np.linalg.norm(c - o) for o in centres) >= 12:
            centres.append(c)
    parts = []
    for i in range(k):
        a = rng.normal(0, 1, (d, d)) * 0.5 + np.eye(d)
        parts.append(centres[i] + rng.standard_normal((n_per, d)) @ a)
    return np.concatenate(parts), np.repeat(np.arange(k), n_per)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_bic_recovers_the_number_of_components(k):
    z, _ = mixture(k=k, seed=k)
    sel = latent.select_gmm(z, n_components=range(1, 8))
    assert sel.best_n == k
    assert sel.bic[sel.best_index] == sel.bic.min()
    assert list(sel.table()["n_components"]) == list(range(1, 8))
    assert sel.best is sel.models[sel.best_index]


def test_select_gmm_errors():
    z, _ = mixture(n_per=3, k=2)
    with pytest.raises(ValueError, match="only 6 codes"):
        latent.select_gmm(z, n_components=[10])
    with pytest.raises(ValueError, match="positive counts"):
        latent.select_gmm(z, n_components=[0, 1])
    with pytest.raises(ValueError, match="NaN"):
        latent.select_gmm(np.full((5, 2), np.nan))


def test_latent_scores_against_references():
    z, _ = mixture(k=2)
    gmm = GaussianMixture(2, random_state=0).fit(z)
    np.testing.assert_allclose(latent.gmm_nll(gmm, z[:10]), -gmm.score_samples(z[:10]))
    point = z[:5]
    dist = latent.nearest_component_distance(gmm, point)
    ref = [
        min(
            mahalanobis(p, gmm.means_[j], np.linalg.inv(gmm.covariances_[j]))
            for j in range(2)
        )
        for p in point
    ]
    np.testing.assert_allclose(dist, ref, rtol=1e-6)
    eu = latent.nearest_component_distance(gmm, point, metric="euclidean")
    ref_eu = np.min(np.linalg.norm(point[:, None] - gmm.means_[None], axis=-1), axis=1)
    np.testing.assert_allclose(eu, ref_eu, rtol=1e-9)
    # a far code is scored as more anomalous than every training code
    far = gmm.means_[:1] + 100.0
    assert latent.gmm_nll(gmm, far)[0] > latent.gmm_nll(gmm, z).max()
    assert latent.nearest_component_distance(gmm, far)[0] > dist.max()


@pytest.mark.parametrize("cov", ["full", "tied", "diag", "spherical"])
def test_latent_scores_do_not_depend_on_the_batch(cov):
    """A code's score is the same number, to the last bit, whatever codes are scored
    with it (chunked and out-of-core scoring rely on it), and agrees with
    scikit-learn's score_samples to rounding."""
    z, _ = mixture(n_per=400, d=8, k=3, seed=1)
    gmm = GaussianMixture(3, covariance_type=cov, random_state=0).fit(z)
    nll = latent.gmm_nll(gmm, z)
    np.testing.assert_allclose(nll, -gmm.score_samples(z), rtol=1e-12, atol=1e-12)
    dist = latent.nearest_component_distance(gmm, z)
    for n in (1, 3, 17, 250, len(z) - 1):
        assert np.array_equal(latent.gmm_nll(gmm, z[:n]), nll[:n]), n
        assert np.array_equal(latent.gmm_nll(gmm, z[-n:]), nll[-n:]), n
        assert np.array_equal(latent.nearest_component_distance(gmm, z[:n]), dist[:n])


@pytest.mark.parametrize("cov", ["diag", "tied", "spherical"])
def test_mahalanobis_for_every_covariance_type(cov):
    z, _ = mixture(k=2)
    gmm = GaussianMixture(2, covariance_type=cov, random_state=0).fit(z)
    d2 = latent._distances_sq(gmm, z[:7])
    full = {
        "diag": lambda j: np.diag(gmm.covariances_[j]),
        "tied": lambda j: gmm.covariances_,
        "spherical": lambda j: np.eye(z.shape[1]) * gmm.covariances_[j],
    }[cov]
    for j in range(2):
        inv = np.linalg.inv(full(j))
        ref = [mahalanobis(p, gmm.means_[j], inv) ** 2 for p in z[:7]]
        np.testing.assert_allclose(d2[:, j], ref, rtol=1e-6)


def test_typical_members_belong_to_their_cluster_and_are_central():
    z, truth = mixture(k=3)
    gmm = GaussianMixture(3, random_state=0).fit(z)
    members = latent.typical_members(gmm, z, n=5)
    labels = gmm.predict(z)
    for k, idx in members.items():
        assert len(idx) == 5
        assert (labels[idx] == k).all()
        d = latent.nearest_component_distance(gmm, z[idx])
        assert np.all(np.diff(d) >= -1e-9)  # most typical first
        assert len(set(truth[idx])) == 1


def test_pca_3d():
    z, _ = mixture(d=6)
    z3, pca = latent.pca_3d(z)
    assert z3.shape == (len(z), 3)
    z3b, _ = latent.pca_3d(z[:10], pca)
    np.testing.assert_allclose(z3b, z3[:10])
    assert 0 < pca.explained_variance_ratio_.sum() <= 1
    with pytest.raises(ValueError, match="at least 3"):
        latent.pca_3d(z[:, :2])


def test_encode_gives_mu_for_a_vae_and_z_for_an_autoencoder():
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((10, 16, 16)).astype(np.float32)
    vae = BetaVAE(16, latent_dim=5)
    z = latent.encode(vae, x, batch_size=4)
    with torch.no_grad():
        mu, _ = vae.encode(torch.from_numpy(x))
    np.testing.assert_allclose(z, mu.numpy(), rtol=1e-5, atol=1e-6)
    ae = SparseConvAE(16, latent_dim=1)
    assert latent.encode(ae, x, batch_size=3).shape == (10, 1)


def test_neighbour_label_fraction_hand_computed():
    z_pool = np.array([[0.0], [1.0], [10.0], [11.0]])
    labels = np.array([1, 1, 0, 0])
    got = latent.neighbour_label_fraction(np.array([[0.5], [10.4]]), z_pool, labels, k=2)
    np.testing.assert_allclose(got, [1.0, 0.0])
    got = latent.neighbour_label_fraction(np.array([[0.2]]), z_pool, labels, k=3)
    np.testing.assert_allclose(got, [2 / 3])
    with pytest.raises(ValueError, match="3 labels for 4 pool codes"):
        latent.neighbour_label_fraction(z_pool, z_pool, labels[:3], k=1)


@pytest.mark.parametrize("cov", ["full", "tied", "diag", "spherical"])
def test_sample_gmm_draws_from_the_mixture(cov):
    z, _ = mixture(n_per=2000, d=3, k=3, seed=2)
    gmm = GaussianMixture(3, covariance_type=cov, random_state=0).fit(z)
    draws = latent.sample_gmm(gmm, 30000, seed=1)
    assert draws.shape == (30000, 3)
    labels = gmm.predict(draws)
    counts = np.bincount(labels, minlength=3) / 30000
    np.testing.assert_allclose(counts, gmm.weights_, atol=0.02)
    # not sorted by component, unlike GaussianMixture.sample
    assert (np.diff(labels[:200]) != 0).any()
    for k in range(3):
        np.testing.assert_allclose(draws[labels == k].mean(0), gmm.means_[k], atol=0.15)
    # the same seed gives the same draws, another seed others
    assert np.array_equal(latent.sample_gmm(gmm, 30000, seed=1), draws)
    assert not np.array_equal(latent.sample_gmm(gmm, 30000, seed=2), draws)
    with pytest.raises(ValueError, match="at least 1"):
        latent.sample_gmm(gmm, 0)


def test_sample_gmm_of_a_nearly_singular_fit_does_not_warn():
    """Codes in float32 with a wide spread in the used dimensions and almost none in
    the unused ones: GaussianMixture.sample warns that the covariance "is not
    symmetric positive-semidefinite" (numpy's SVD check); sample_gmm does not."""
    import warnings

    rng = np.random.default_rng(0)
    z = np.concatenate(
        [10 * rng.normal(size=(500, 3)), 1e-3 * rng.normal(size=(500, 13))], 1
    )
    gmm = GaussianMixture(2, random_state=0).fit(z.astype(np.float32))
    with pytest.warns(RuntimeWarning, match="positive-semidefinite"):
        gmm.sample(1000)  # the warning this function avoids
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        draws = latent.sample_gmm(gmm, 1000, seed=0)
    assert np.isfinite(draws).all()
