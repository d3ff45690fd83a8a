"""FFJORD: log-density change against brute-force Jacobians, Hutchinson unbiased."""

import numpy as np
import pytest
import torch

from phbook import train
from phbook.detectors import FFJORDDensityDetector, FFJORDVAEDetector
from phbook.models import ffjord as FF
from phbook.models.flows import standard_normal_logpdf


def _cnf(dim=3, **kw):
    torch.manual_seed(0)
    cnf = FF.CNF(dim, hidden=(16, 16), rtol=1e-9, atol=1e-9, **kw).double()
    with torch.no_grad():  # dynamics strong enough to bend space noticeably
        for p in cnf.parameters():
            p.mul_(3.0)
    return cnf.eval()


def test_logdet_matches_brute_force_jacobian():
    cnf = _cnf(3)
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z, logdet = cnf(x)
    assert cnf.nfe > 10
    for i in range(len(x)):
        jac = torch.autograd.functional.jacobian(lambda v: cnf(v[None])[0][0], x[i])
        sign, brute = torch.linalg.slogdet(jac)
        assert float(sign) > 0  # an ODE flow preserves orientation
        assert abs(float(brute) - float(logdet[i])) < 1e-3
        # far from zero: the check is not trivially passed by a near-identity map
    assert float(logdet.abs().max()) > 0.1


def test_logdet_check_with_context():
    torch.manual_seed(0)
    cnf = FF.CNF(3, hidden=(8,), context_dim=2)
    with torch.no_grad():
        for p in cnf.parameters():
            p.mul_(3.0)
    out = FF.logdet_check(cnf, torch.randn(3, 3), torch.randn(3, 2))
    assert out["ode"].shape == (3,) and float(out["ode"].abs().max()) > 0.1
    assert float(out["abs_error"]) < 1e-3


def test_inverse_and_log_prob():
    cnf = _cnf(2)
    x = torch.randn(5, 2, dtype=torch.float64)
    z, logdet = cnf(x)
    x_back, logdet_back = cnf.inverse(z)
    assert torch.allclose(x_back, x, atol=1e-6)
    assert torch.allclose(logdet_back, -logdet, atol=1e-6)
    assert torch.allclose(cnf.log_prob(x), standard_normal_logpdf(z) + logdet)


def test_density_integrates_to_one_in_2d():
    cnf = _cnf(2)
    with torch.no_grad():
        for p in cnf.parameters():
            p.mul_(0.5)
    g = torch.linspace(-7, 7, 141, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    cnf.rtol = cnf.atol = 1e-6
    with torch.no_grad():
        mass = cnf.log_prob(pts).exp().sum() * (g[1] - g[0]) ** 2
    assert float(mass) == pytest.approx(1.0, abs=0.01)


def test_hutchinson_is_unbiased_for_the_exact_trace():
    torch.manual_seed(0)
    net = FF.ODENet(6, (32, 32)).double()
    z0 = torch.randn(1, 6, dtype=torch.float64)
    m = 20000
    z = z0.expand(m, 6).clone().requires_grad_(True)
    f = net(torch.tensor(0.3), z)
    exact = FF.exact_trace(f, z, create_graph=False)
    g = torch.Generator().manual_seed(1)
    eps = (torch.rand(m, 6, generator=g) < 0.5).double() * 2 - 1
    est = FF.hutchinson_trace(f, z, eps, create_graph=False)
    # the exact trace is the same for every copy; the estimates scatter around it
    assert torch.allclose(exact, exact[0].expand(m))
    jac = torch.autograd.functional.jacobian(lambda v: net(torch.tensor(0.3), v), z0)
    assert float(exact[0]) == pytest.approx(float(jac[0, :, 0, :].trace()), abs=1e-10)
    std = float(est.std())
    assert std > 0.01  # a real estimator with noise, not the trace itself
    err = abs(float(est.mean()) - float(exact[0]))
    assert err < 5 * std / m**0.5
    # Rademacher noise: the estimate's variance is 2 * sum_(i != j) of the symmetric
    # part squared, which the sample variance reproduces
    a = jac[0, :, 0, :]
    s = 0.5 * (a + a.T)
    var = 2 * float(s.pow(2).sum() - s.diagonal().pow(2).sum())
    assert float(est.var()) == pytest.approx(var, rel=0.05)


def test_hutchinson_logdet_through_the_solver_is_unbiased():
    cnf = _cnf(3)
    cnf.rtol = cnf.atol = 1e-7
    x = torch.randn(1, 3, dtype=torch.float64).expand(4000, 3)
    with torch.no_grad():
        _, exact = cnf(x[:1])
        cnf.trace = "hutchinson"
        _, est = cnf(x, generator=torch.Generator().manual_seed(0))
    assert float(est.std()) > 0.01
    assert abs(float(est.mean() - exact[0])) < 5 * float(est.std()) / 4000**0.5


def test_trace_modes_and_context():
    cnf = FF.CNF(4, hidden=(8,), context_dim=3)
    assert cnf.trace_estimator() == "hutchinson"
    assert cnf.eval().trace_estimator() == "exact"
    z = torch.randn(2, 5, 4)
    h = torch.randn(5, 3)
    zt, logdet = cnf(z, h)
    assert zt.shape == z.shape and logdet.shape == (2, 5)
    with pytest.raises(ValueError, match="conditioned"):
        cnf(z)
    with pytest.raises(ValueError, match="trace"):
        FF.CNF(4, trace="approximate")


def test_cnf_learns_a_density_through_fit():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 2, generator=g) * torch.tensor([0.3, 2.0]) + 1.0
    cnf = FF.CNF(2, hidden=(16, 16), rtol=1e-3, atol=1e-3)
    before = float(-cnf.eval().log_prob(x).mean().detach())
    hist = train.fit(cnf.train(), x, epochs=20, batch_size=128, lr=1e-2, progress=False)
    after = float(-cnf.eval().log_prob(x).mean().detach())
    assert "train_nfe" in hist.columns and hist["train_nfe"].min() > 0
    assert after < before - 0.3


def test_ffjord_vae_trains_and_gives_bounds():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 8, 8)
    model = FF.FFJORDVAE(8, latent_dim=4, context_dim=8, cnf_kwargs={"hidden": (8,)})
    hist = train.fit(model, x, epochs=2, batch_size=32, progress=False)
    assert list(hist["train_loss"].notna()) == [True, True]
    model.eval()
    b = model.log_likelihood_bounds(x[:8], n_samples=4)
    assert b["elbo"].shape == (8,) and bool((b["iwae"] >= b["elbo"] - 1e-4).all())
    assert model.nfe > 0 and model.hparams["flow"] == "ffjord"


def _detector_frames(n, seed, bright=False):
    rng = np.random.default_rng(seed)
    x = 0.1 * rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    r, c = rng.integers(2, 6, (2, n))
    x[np.arange(n), 0, r, c] += 1.0
    if bright:  # a bright line across the frame: not what training frames look like
        x[:, 0, 4, :] += 2.0
    return x


def test_ffjord_vae_detector():
    x = _detector_frames(128, 0)
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


def test_ffjord_frame_density_detector():
    x = _detector_frames(256, 0)[:, :, 2:6, 2:6]  # 16-pixel frames keep it quick
    det = FFJORDDensityDetector(
        hidden=(16,), fit_kwargs={"epochs": 3, "batch_size": 64, "progress": False}
    ).fit(x)
    odd = _detector_frames(32, 1, bright=True)[:, :, 2:6, 2:6]
    s_norm, s_odd = det.anomaly_score(x[:32]), det.anomaly_score(odd)
    assert s_norm.shape == (32,) and det.nfe_ > 0
    assert np.allclose(s_odd, -det.log_prob(odd) / 16)
    assert s_odd.mean() > s_norm.mean()


def test_adjoint_gradients_match_backprop_through_the_solver():
    torch.manual_seed(0)
    direct = FF.CNF(2, hidden=(8,), context_dim=1, rtol=1e-8, atol=1e-8).double()
    adjoint = FF.CNF(2, hidden=(8,), context_dim=1, rtol=1e-8, atol=1e-8, adjoint=True)
    adjoint = adjoint.double()
    adjoint.load_state_dict(direct.state_dict())
    x = torch.randn(4, 2, dtype=torch.float64)
    grads = []
    for cnf in (direct.eval(), adjoint.eval()):
        h = torch.ones(4, 1, dtype=torch.float64, requires_grad=True)
        cnf.log_prob(x, h).sum().backward()
        grads.append([p.grad.clone() for p in cnf.parameters()] + [h.grad.clone()])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5), (a, b)
