"""Latent flows: every log-determinant against autograd's Jacobian, and their structure."""

import importlib.util
import math

import pytest
import torch

from phbook.models import flows

DIM, CONTEXT = 5, 3


def _make(kind: str, context_dim, **kw):
    torch.manual_seed(0)
    scale = 0.7  # far from the identity, so the test sees real non-linear maps
    if kind == "planar":
        return flows.PlanarFlow(DIM, context_dim, init_scale=scale)
    if kind == "orthogonal_sylvester":
        # tol: Q must be orthonormal to float64 precision for Sylvester's identity
        return flows.OrthogonalSylvesterFlow(
            DIM, n_columns=3, context_dim=context_dim, init_scale=scale, tol=1e-13
        )
    if kind == "householder_sylvester":
        return flows.HouseholderSylvesterFlow(
            DIM, n_reflections=3, context_dim=context_dim, init_scale=scale
        )
    if kind == "triangular_sylvester":
        return flows.TriangularSylvesterFlow(
            DIM, reverse=kw.get("reverse", True), context_dim=context_dim, init_scale=scale
        )
    if kind == "iaf":
        flow = flows.IAFlow(DIM, hidden=(16, 16), context_dim=context_dim, reverse=True)
        with torch.no_grad():  # larger weights than the default init
            for p in flow.parameters():
                p.mul_(3.0)
        return flow
    if kind == "convflow":
        return flows.ConvFlow(DIM, kernel_size=3, context_dim=context_dim, init_scale=scale)
    raise AssertionError(kind)


KINDS = [k for k in flows.FLOW_TYPES if k != "none"]


def _jacobian_logdets(flow, z, h):
    out = []
    for i in range(len(z)):
        hi = None if h is None else h[i : i + 1]
        jac = torch.autograd.functional.jacobian(
            lambda zi, hi=hi: flow(zi[None], hi)[0][0], z[i]
        )
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


@pytest.mark.parametrize("amortised", [False, True], ids=["free", "amortised"])
@pytest.mark.parametrize("kind", KINDS)
def test_logdet_matches_autograd_jacobian(kind, amortised):
    flow = _make(kind, CONTEXT if amortised else None).double()
    g = torch.Generator().manual_seed(1)
    z = 1.5 * torch.randn(6, DIM, generator=g, dtype=torch.float64)
    h = torch.randn(6, CONTEXT, generator=g, dtype=torch.float64) if amortised else None
    z_new, logdet = flow(z, h)
    assert z_new.shape == z.shape and logdet.shape == (6,)
    # the map is far from the identity, so the test is not trivially passed
    assert (z_new - z).abs().max() > 1e-2
    assert logdet.abs().max() > 1e-3
    torch.testing.assert_close(logdet, _jacobian_logdets(flow, z, h), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", KINDS)
def test_flow_sequence_adds_logdets_and_alternates(kind):
    extra = {"tol": 1e-13} if kind == "orthogonal_sylvester" else {}
    seq = flows.make_flows(kind, DIM, 3, context_dim=CONTEXT, **extra).double()
    assert len(seq) == 3
    with torch.no_grad():
        for p in seq.parameters():
            p.add_(0.3 * torch.randn_like(p))
    z = torch.randn(4, DIM, dtype=torch.float64)
    h = torch.randn(4, CONTEXT, dtype=torch.float64)
    z_new, logdet = seq(z, h)
    torch.testing.assert_close(logdet, _jacobian_logdets(seq, z, h), rtol=1e-6, atol=1e-8)
    if kind in ("triangular_sylvester", "iaf"):
        assert [f.reverse for f in seq.flows] == [False, True, False]


def test_make_flows_none_is_identity_and_bad_kind_is_named():
    seq = flows.make_flows("none", DIM, 4)
    z = torch.randn(3, DIM)
    z_new, logdet = seq(z)
    assert torch.equal(z_new, z) and torch.equal(logdet, torch.zeros(3))
    with pytest.raises(ValueError, match="kind='radial'"):
        flows.make_flows("radial", DIM, 2)
    with pytest.raises(ValueError, match="n_flows"):
        flows.make_flows("planar", DIM, -1)


def test_bad_shapes_are_named():
    flow = flows.PlanarFlow(DIM, context_dim=CONTEXT)
    with pytest.raises(ValueError, match=r"z must be a tensor of shape \(N, 5\)"):
        flow(torch.randn(4, DIM + 1), torch.randn(4, CONTEXT))
    with pytest.raises(ValueError, match="h must have shape"):
        flow(torch.randn(4, DIM), None)
    with pytest.raises(ValueError, match="pass h=None"):
        flows.PlanarFlow(DIM)(torch.randn(2, DIM), torch.randn(2, CONTEXT))
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        flows.PlanarFlow(0)


def test_planar_constraint_keeps_map_invertible():
    g = torch.Generator().manual_seed(0)
    u = 3 * torch.randn(100, DIM, generator=g, dtype=torch.float64)
    w = torch.randn(100, DIM, generator=g, dtype=torch.float64)
    u_hat = flows.PlanarFlow.constrain_u(u, w)
    assert ((w * u_hat).sum(-1) > -1).all()
    # the component of u orthogonal to w is untouched
    w_unit = w / w.norm(dim=1, keepdim=True)
    perp = lambda v: v - (v * w_unit).sum(-1, keepdim=True) * w_unit
    torch.testing.assert_close(perp(u_hat), perp(u))


def test_bjorck_gives_orthonormal_columns():
    q = torch.randn(8, 6, 4, dtype=torch.float64) + torch.eye(6, 4, dtype=torch.float64)
    out = flows.bjorck_orthogonalize(q, max_iter=200, tol=1e-12)
    eye = torch.eye(4, dtype=torch.float64).expand(8, 4, 4)
    torch.testing.assert_close(out.transpose(1, 2) @ out, eye, atol=1e-10, rtol=0)
    # it is the closest orthonormal matrix: the polar factor U V^T of the SVD
    u, _, vh = torch.linalg.svd(q, full_matrices=False)
    torch.testing.assert_close(out, u @ vh, atol=1e-8, rtol=0)
    with pytest.raises(ValueError, match="M <= D"):
        flows.bjorck_orthogonalize(torch.randn(2, 3, 4))


def test_householder_q_is_orthogonal():
    flow = flows.HouseholderSylvesterFlow(DIM, n_reflections=4).double()
    p = flow.raw_params(torch.zeros(1, DIM, dtype=torch.float64), None)
    eye = torch.eye(DIM, dtype=torch.float64)
    qt_cols, apply_q = flow._q_apply(
        eye, {k: v.expand(DIM, *v.shape[1:]) for k, v in p.items()}
    )
    q = apply_q(eye)  # row i is Q e_i, i.e. the rows of Q^T
    torch.testing.assert_close(q @ q.T, eye, atol=1e-10, rtol=0)
    torch.testing.assert_close(qt_cols, q.T, atol=1e-10, rtol=0)


def test_made_masks_are_autoregressive():
    torch.manual_seed(0)
    order = torch.tensor([3, 1, 5, 2, 4])
    masks = flows.made_masks(5, [7, 6], order)
    path = masks[0].T
    for m in masks[1:]:
        path = path @ m.T
    # path[i, j] > 0 iff output j can see input i: only when order[i] < order[j]
    allowed = order[:, None] < order[None, :]
    assert torch.equal(path > 0, allowed & (path > 0))
    assert not (path > 0)[~allowed].any()
    with pytest.raises(ValueError, match="permutation"):
        flows.made_masks(3, [4], torch.tensor([1, 1, 2]))


@pytest.mark.parametrize("reverse", [False, True])
def test_iaf_jacobian_is_triangular(reverse):
    torch.manual_seed(0)
    flow = flows.IAFlow(DIM, hidden=(16,), reverse=reverse).double()
    z = torch.randn(DIM, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], z)
    strict = torch.triu(torch.ones(DIM, DIM), 1).bool()
    # output j depends on z_j and the inputs before it in the flow's ordering
    off = jac[strict] if not reverse else jac.T[strict]
    assert off.abs().max() == 0
    assert jac.T[strict].abs().max() > 0 if not reverse else jac[strict].abs().max() > 0


def test_convflow_layer_is_one_sided():
    flow = flows.ConvFlow(8, kernel_size=2, init_scale=0.5).double()
    assert flow.dilations == [1, 2, 4]
    z = torch.randn(8, dtype=torch.float64)
    w = torch.randn(1, 2, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: flow.conv(v[None], w, 2)[0], z)
    expected = torch.zeros(8, 8, dtype=torch.float64)
    for i in range(8):
        expected[i, i] = w[0, 0]
        if i + 2 < 8:
            expected[i, i + 2] = w[0, 1]
    torch.testing.assert_close(jac, expected)


def test_convflow_starts_as_identity_up_to_reversal_with_zero_a():
    flow = flows.ConvFlow(6, init_scale=0.0)
    z = torch.randn(3, 6)
    z_new, logdet = flow(z)
    torch.testing.assert_close(z_new, z.flip(-1))
    torch.testing.assert_close(logdet, torch.zeros(3))


@pytest.mark.parametrize("kind", KINDS)
def test_flows_train_and_fit_a_correlated_gaussian(kind):
    """Free flows on N(0, I) learn to put mass where a correlated target has it."""
    torch.manual_seed(0)
    dim = 2
    seq = flows.make_flows(kind, dim, 4, **({"hidden": (16,)} if kind == "iaf" else {}))
    cov = torch.tensor([[1.0, 0.9], [0.9, 1.0]])
    target = torch.distributions.MultivariateNormal(torch.zeros(dim), cov)
    opt = torch.optim.Adam(seq.parameters(), lr=2e-2)

    def reverse_kl(n=256):
        z0 = torch.randn(n, dim)
        zk, logdet = seq(z0)
        return (flows.standard_normal_logpdf(z0) - logdet - target.log_prob(zk)).mean()

    for _ in range(50):
        opt.zero_grad()
        reverse_kl().backward()
        opt.step()
    with torch.no_grad():
        end = float(reverse_kl(4096))
    # without a flow, KL(N(0,I) || target) = (tr(cov^-1) - 2 + log det cov) / 2
    identity = 0.5 * (2 / 0.19 - 2 + math.log(0.19))
    assert end < 0.15 * identity


def test_planar_matches_reference_library():
    """Cross-check against an established implementation when one is installed."""
    if importlib.util.find_spec("pyro") is None:
        others = [m for m in ("nflows", "zuko", "normflows") if importlib.util.find_spec(m)]
        pytest.skip(
            "pyro-ppl, the reference planar flow this test compares with, is not "
            "installed (other flow libraries found: "
            f"{', '.join(others) or 'none'}); the autograd Jacobian tests check the "
            "log-determinant instead"
        )
    from pyro.distributions.transforms import Planar

    torch.manual_seed(0)
    ref = Planar(DIM).double()
    ours = flows.PlanarFlow(DIM).double()
    with torch.no_grad():
        ours.free["u"].copy_(ref.u)
        ours.free["w"].copy_(ref.w)
        ours.free["b"].copy_(ref.bias.reshape(1))
    z = torch.randn(7, DIM, dtype=torch.float64)
    z_new, logdet = ours(z)
    torch.testing.assert_close(z_new, ref(z))
    torch.testing.assert_close(logdet, ref.log_abs_det_jacobian(z, ref(z)))


# --------------------------------------------------------------------- the VAE


class LinearGaussianVAE(torch.nn.Module):
    """A stand-in base VAE whose exact posterior and evidence are known.

    p(z) = N(0, I), p(x|z) = N(W z + b, I/2) with orthogonal columns of W, so the
    posterior is N(mu(x), diag) and log p(x) = log N(x; b, W W^T + I/2). The encoder
    computes that exact posterior.
    """

    def __init__(self, side=3, latent_dim=2, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        p = side * side
        q = torch.linalg.qr(torch.randn(p, latent_dim, generator=g, dtype=torch.float64))[0]
        scales = torch.tensor([2.0, 0.7], dtype=torch.float64)[:latent_dim]
        self.register_buffer("w", q * scales)
        self.register_buffer("b", 0.1 * torch.randn(p, generator=g, dtype=torch.float64))
        self.side, self.latent_dim, self.beta = side, latent_dim, 1.0
        post_var = 1.0 / (1.0 + scales**2 / 0.5)
        self.encoder = torch.nn.Flatten()
        self.to_latent = torch.nn.Linear(p, 2 * latent_dim).double()
        with torch.no_grad():
            gain = (post_var[:, None] * self.w.T) / 0.5
            self.to_latent.weight.copy_(torch.cat([gain, torch.zeros_like(gain)]))
            self.to_latent.bias.copy_(torch.cat([-gain @ self.b, torch.log(post_var)]))

    def decode(self, z):
        return (z @ self.w.T + self.b).view(-1, 1, self.side, self.side)

    def log_evidence(self, x):
        cov = self.w @ self.w.T + 0.5 * torch.eye(len(self.b), dtype=torch.float64)
        dist = torch.distributions.MultivariateNormal(self.b, covariance_matrix=cov)
        return dist.log_prob(x.reshape(len(x), -1))


def test_bounds_equal_log_evidence_with_the_exact_posterior_and_no_flow():
    base = LinearGaussianVAE()
    vae = flows.FlowVAE(flow="none", base=base, decoder="base").double()
    x = base.decode(torch.randn(5, 2, dtype=torch.float64))
    x = x + 0.7 * torch.randn_like(x)
    bounds = vae.log_likelihood_bounds(
        x, n_samples=8, generator=torch.Generator().manual_seed(0)
    )
    exact = base.log_evidence(x)
    torch.testing.assert_close(bounds["elbo"], exact)
    torch.testing.assert_close(bounds["iwae"], exact)


@pytest.mark.parametrize("kind", KINDS)
def test_iwae_bound_lies_between_elbo_and_log_evidence_and_tightens(kind):
    base = LinearGaussianVAE()
    torch.manual_seed(0)
    vae = flows.FlowVAE(
        flow=kind,
        n_flows=2,
        context_dim=4,
        base=base,
        decoder="base",
        flow_kwargs={"hidden": (8,)} if kind == "iaf" else None,
    ).double()
    with torch.no_grad():  # flows away from the identity: q is no longer exact
        for p in vae.flows.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = base.decode(torch.randn(4, 2, dtype=torch.float64))
    exact = base.log_evidence(x)
    g = torch.Generator().manual_seed(1)
    few = vae.log_likelihood_bounds(x, n_samples=4, generator=g)
    many = vae.log_likelihood_bounds(x, n_samples=4000, generator=g)
    assert (few["iwae"] >= few["elbo"] - 1e-12).all()
    assert (many["iwae"] >= many["elbo"]).all()
    # the ELBO is below log p(x) by KL(q || posterior) > 0
    gap = exact - many["elbo"]
    assert gap.mean() > 1e-3 and (gap > -1e-3).all()
    # with many samples the IWAE bound closes most of the gap (up to Monte Carlo noise)
    assert ((many["iwae"] - exact).abs() < 0.5 * gap + 0.03).all()


@pytest.mark.parametrize("kind", ["planar", "triangular_sylvester", "iaf", "convflow"])
def test_flow_vae_loss_is_the_flow_corrected_elbo(kind):
    base = LinearGaussianVAE()
    vae = flows.FlowVAE(
        flow=kind,
        n_flows=2,
        context_dim=4,
        base=base,
        decoder="base",
        flow_kwargs={"hidden": (8,)} if kind == "iaf" else None,
    ).double()
    x = base.decode(torch.randn(6, 2, dtype=torch.float64))
    torch.manual_seed(3)
    terms = vae.loss(x)
    torch.manual_seed(3)
    post = vae.posterior_sample(x)
    zk = post["zK"][0]
    sse = (vae.decode(zk) - x).pow(2).flatten(1).sum(1)
    # log qK(zK) = log q0(z0) - log|det|, the log-det recomputed from the flow steps
    z, logdet = post["z0"][0], torch.zeros(6, dtype=torch.float64)
    ctx = vae.context(base.encoder(x))
    for step in vae.flows.flows:
        z, ld = step(z, ctx)
        logdet = logdet + ld
    torch.testing.assert_close(z, zk)
    log_q0 = torch.distributions.Normal(post["mu"], torch.exp(0.5 * post["logvar"]))
    kl = log_q0.log_prob(post["z0"][0]).sum(1) - logdet
    kl = kl - torch.distributions.Normal(0.0, 1.0).log_prob(zk).sum(1)
    torch.testing.assert_close(terms["recon"], sse.mean())
    torch.testing.assert_close(terms["kl"], kl.mean())
    torch.testing.assert_close(terms["loss"], sse.mean() + vae.kl_weight * kl.mean())


def test_flow_vae_trains_with_the_book_loop():
    from phbook import train

    torch.manual_seed(0)
    base = LinearGaussianVAE()
    with torch.no_grad():
        base.to_latent.weight.mul_(0.1)  # a poor encoder to start from
    vae = flows.FlowVAE(flow="householder_sylvester", n_flows=2, context_dim=4, base=base)
    x = base.decode(torch.randn(256, 2, dtype=torch.float64)).float()
    x = x + 0.7 * torch.randn_like(x)
    hist = train.fit(
        vae.float(), x, epochs=6, batch_size=32, lr=1e-2, device="cpu", progress=False
    )
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]


def test_flow_vae_rejects_bad_arguments():
    base = LinearGaussianVAE()
    with pytest.raises(ValueError, match="flow='radial'"):
        flows.FlowVAE(flow="radial", base=base)
    with pytest.raises(ValueError, match="either base"):
        flows.FlowVAE(base=base, latent_dim=4)
    with pytest.raises(ValueError, match="n_samples"):
        flows.FlowVAE(flow="planar", base=base).double().log_likelihood_bounds(
            torch.zeros(2, 1, 3, 3, dtype=torch.float64), n_samples=0
        )


def test_learned_variance_decoder_is_a_gaussian_log_likelihood():
    base = LinearGaussianVAE()
    vae = flows.FlowVAE(flow="planar", n_flows=1, context_dim=4, base=base).double()
    assert vae.decoder == "learned_variance"
    with torch.no_grad():
        vae.decoder_logvar.fill_(-1.3)
    x = torch.randn(5, 1, 3, 3, dtype=torch.float64)
    x_hat = torch.randn(5, 1, 3, 3, dtype=torch.float64)
    ref = torch.distributions.Normal(x_hat, math.exp(-0.65)).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(vae.log_likelihood_gaussian(x, x_hat), ref)
    torch.testing.assert_close(vae.reconstruction_nll(x, x_hat), -ref)
    with pytest.raises(ValueError, match="decoder must be"):
        flows.FlowVAE(base=base, decoder="bernoulli")


def test_learned_variance_starts_at_the_pixel_variance_of_the_first_batch():
    base = LinearGaussianVAE()
    vae = flows.FlowVAE(flow="planar", n_flows=1, context_dim=4, base=base).double()
    x = 0.3 * torch.randn(64, 1, 3, 3, dtype=torch.float64)
    vae.train()
    vae.loss(x)
    expected = torch.log(x.reshape(64, -1).var(0).mean())
    torch.testing.assert_close(vae.decoder_logvar.reshape(()), expected)
    with torch.no_grad():
        vae.decoder_logvar.fill_(0.0)
    vae.loss(x)  # only the first batch initialises
    assert float(vae.decoder_logvar.detach()) == 0.0


def test_flow_vae_detector_on_the_chapter_3_vae():
    pytest.importorskip(
        "phbook.models.vae", reason="chapter 3's BetaVAE (phbook.models.vae) not merged yet"
    )
    import numpy as np

    from phbook import detectors

    rng = np.random.default_rng(0)
    x = rng.normal(0.1, 0.05, (200, 1, 16, 16)).astype(np.float32)
    det = detectors.FlowVAEDetector(
        flow="householder_sylvester",
        n_flows=2,
        n_samples=8,
        model_kwargs={"latent_dim": 4, "kl_warmup": 1, "context_dim": 8},
        fit_kwargs={"epochs": 2, "batch_size": 50},
        device="cpu",
    ).fit(x)
    bounds = det.log_likelihood_bounds(x[:20])
    assert (bounds["iwae"] >= bounds["elbo"] - 1e-9).all()
    np.testing.assert_allclose(det.anomaly_score(x[:20]), -bounds["iwae"])
    assert det.reconstruct(x[:3]).shape == (3, 1, 16, 16)
    assert det.model_.kl_weight == det.model_.base.beta  # warm-up over
    with pytest.raises(ValueError, match="score="):
        detectors.FlowVAEDetector(score="mse").fit(x)


@pytest.mark.parametrize("kind", KINDS)
def test_several_draws_per_image_share_the_amortised_parameters(kind):
    """z of shape (S, N, D) with h of shape (N, C) equals S separate calls."""
    extra = {"hidden": (8,)} if kind == "iaf" else {}
    seq = flows.make_flows(kind, DIM, 2, context_dim=CONTEXT, **extra).double()
    with torch.no_grad():
        for p in seq.parameters():
            p.add_(0.3 * torch.randn_like(p))
    z = torch.randn(3, 4, DIM, dtype=torch.float64)
    h = torch.randn(4, CONTEXT, dtype=torch.float64)
    z_all, ld_all = seq(z, h)
    assert z_all.shape == (3, 4, DIM) and ld_all.shape == (3, 4)
    for s in range(3):
        z_s, ld_s = seq(z[s], h)
        torch.testing.assert_close(z_all[s], z_s)
        torch.testing.assert_close(ld_all[s], ld_s)


def test_a_planar_step_starts_as_a_squeeze_along_w_as_its_docstring_says():
    """With the default small start, each planar step has log|det| near log(log 2)."""
    torch.manual_seed(0)
    step = flows.PlanarFlow(4)
    _, logdet = step(torch.randn(64, 4))
    assert torch.allclose(logdet, torch.full_like(logdet, math.log(math.log(2))), atol=0.01)
