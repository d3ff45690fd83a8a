"""FFJORD of chapter 7: a continuous normalizing flow with a free-form Jacobian.

A continuous normalizing flow (Chen et al. 2018) moves a point ``z(t)`` along the
solution of an ordinary differential equation whose right-hand side is a small neural
network, ``dz/dt = f(z(t), t)``, from ``t = 0`` to ``t = T``. The map ``z(0) -> z(T)``
is invertible (integrate backwards) for any ``f`` that is Lipschitz, so ``f`` needs no
special structure: a *free-form* Jacobian. The log-density changes by the
*instantaneous change of variables*

``d log p(z(t)) / dt = -tr(df/dz)``,   so   ``log|det dz(T)/dz(0)| = int_0^T tr(df/dz) dt``

which is integrated together with ``z`` by the same ODE solver (``torchdiffeq``).
The exact trace costs one backward pass per dimension; FFJORD (Grathwohl et al. 2018)
replaces it during training by Hutchinson's unbiased estimator

``tr(A) = E[eps^T A eps]``,   ``eps`` with independent +-1 entries (Rademacher)

which needs a single vector-Jacobian product: one backward pass whatever the dimension.
Here training (``model.train()``) uses Hutchinson's estimator with one ``eps`` per
sample and solve, and evaluation (``model.eval()``) the exact trace, so that reported
log-densities carry no estimator noise. The solver is adaptive (``dopri5``): the
number of function evaluations (NFE) per solve, counted in :attr:`CNF.nfe`, grows as
the dynamics become harder during training, and is what makes FFJORD slow.

A :class:`CNF` has the interface of chapter 7's latent flows, ``(z, h) -> (z', logdet)``
with optional context ``h``, so it serves as the posterior flow of a VAE
(:class:`FFJORDVAE`, a :class:`phbook.models.flows.FlowVAE`) or, with
:meth:`CNF.log_prob`, as a density of its own (on latent codes or on flattened frames).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from .flows import FlowVAE, standard_normal_logpdf

__all__ = [
    "logdet_check",
    "ConcatSquashLinear",
    "ODENet",
    "exact_trace",
    "hutchinson_trace",
    "CNFDynamics",
    "CNF",
    "FFJORDVAE",
]

TRACE_ESTIMATORS = ("auto", "exact", "hutchinson")


def exact_trace(f: torch.Tensor, z: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """``tr(df/dz)`` of each row, one backward pass per dimension: ``(M,)``."""
    tr = torch.zeros(len(z), dtype=z.dtype, device=z.device)
    for i in range(z.shape[1]):
        (g,) = torch.autograd.grad(
            f[:, i].sum(), z, create_graph=create_graph, retain_graph=True
        )
        tr = tr + g[:, i]
    return tr


def hutchinson_trace(
    f: torch.Tensor, z: torch.Tensor, eps: torch.Tensor, create_graph: bool
) -> torch.Tensor:
    """``eps^T (df/dz) eps`` of each row (one vector-Jacobian product): an unbiased
    estimate of ``tr(df/dz)`` when ``eps`` has zero mean and identity covariance."""
    (vjp,) = torch.autograd.grad(f, z, eps, create_graph=create_graph, retain_graph=True)
    return (vjp * eps).sum(1)


class ConcatSquashLinear(nn.Module):
    """FFJORD's time-dependent layer: ``(W x + b) * sigmoid(G c) + B c`` with
    ``c = (t, context)``; time (and context) gate and shift every output."""

    def __init__(self, d_in: int, d_out: int, d_cond: int = 1):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.gate = nn.Linear(d_cond, d_out)
        self.shift = nn.Linear(d_cond, d_out, bias=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * torch.sigmoid(self.gate(cond)) + self.shift(cond)


class ODENet(nn.Module):
    """The dynamics ``f(z, t, h)``: concat-squash layers with softplus between (smooth,
    so the solver's steps stay large)."""

    def __init__(self, dim: int, hidden: Sequence[int] = (64, 64), context_dim: int = 0):
        super().__init__()
        sizes = [int(dim), *(int(s) for s in hidden), int(dim)]
        if min(sizes) < 1:
            raise ValueError(f"dim and hidden sizes must be positive, got {sizes}")
        d_cond = 1 + int(context_dim)
        self.layers = nn.ModuleList(
            ConcatSquashLinear(a, b, d_cond)
            for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )

    def forward(self, t: torch.Tensor, z: torch.Tensor, h: torch.Tensor | None = None):
        cond = t.reshape(1, 1).to(z).expand(len(z), 1)
        if h is not None:
            cond = torch.cat([cond, h], 1)
        for i, layer in enumerate(self.layers):
            z = layer(z, cond)
            if i < len(self.layers) - 1:
                z = F.softplus(z)
        return z


class CNFDynamics(nn.Module):
    """The right-hand side of the augmented ODE ``d(z, logdet, h)/dt = (f, tr, 0)``.

    ``trace`` is ``"exact"`` or ``"hutchinson"`` (with the noise ``eps`` set before
    each solve); ``nfe`` counts the evaluations.
    """

    def __init__(self, net: ODENet):
        super().__init__()
        self.net = net
        self.trace = "exact"
        self.eps: torch.Tensor | None = None
        self.nfe = 0

    def forward(self, t, state):
        self.nfe += 1
        z, _, *rest = state
        h = rest[0] if rest else None
        outer_grad = torch.is_grad_enabled()
        with torch.enable_grad():
            if not (outer_grad and z.requires_grad):
                # a fresh leaf: the trace needs d f / d z even when nothing outside
                # asks for gradients (evaluation, the adjoint's forward solve)
                z = z.detach().requires_grad_(True)
            f = self.net(t, z, h)
            if self.trace == "exact":
                tr = exact_trace(f, z, create_graph=outer_grad)
            else:
                tr = hutchinson_trace(f, z, self.eps, create_graph=outer_grad)
        if not outer_grad:
            f, tr = f.detach(), tr.detach()
        out = (f, tr)
        if rest:
            out = out + (torch.zeros_like(h),)
        return out


class CNF(nn.Module):
    """A continuous normalizing flow ``z(0) -> z(T)`` on ``(N, dim)`` vectors.

    Parameters
    ----------
    dim
        Dimension of the vectors.
    hidden
        Hidden sizes of the dynamics network :class:`ODENet`.
    context_dim
        Size of a context vector ``h`` the dynamics are conditioned on (amortised
        flow of a VAE's posterior); ``None`` for none.
    T
        Integration time.
    method, rtol, atol, options
        The ``torchdiffeq`` solver and its tolerances (adaptive ``dopri5`` by default).
    adjoint
        Backpropagate with the adjoint method (memory constant in the number of
        steps, one more ODE solve backwards) instead of through the solver's steps.
    trace
        ``"auto"`` (Hutchinson in training mode, exact in evaluation mode),
        ``"exact"`` or ``"hutchinson"``.

    ``forward(z, h)`` returns ``(z(T), log|det dz(T)/dz(0)|)`` like the latent flows
    of :mod:`phbook.models.flows`; :attr:`nfe` is the number of function evaluations
    of the last forward solve.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64, 64),
        context_dim: int | None = None,
        T: float = 1.0,
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        options: dict | None = None,
        adjoint: bool = False,
        trace: str = "auto",
    ):
        super().__init__()
        if int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if trace not in TRACE_ESTIMATORS:
            raise ValueError(f"trace must be one of {TRACE_ESTIMATORS}, got {trace!r}")
        if T <= 0:
            raise ValueError(f"T must be positive, got {T}")
        self.dim = int(dim)
        self.context_dim = None if context_dim is None else int(context_dim)
        self.T = float(T)
        self.method, self.rtol, self.atol = method, float(rtol), float(atol)
        self.options = dict(options or {})
        self.adjoint = bool(adjoint)
        self.trace = trace
        self.dynamics = CNFDynamics(ODENet(dim, hidden, self.context_dim or 0))
        self.nfe = 0
        self.nfe_total = 0

    def trace_estimator(self) -> str:
        """The estimator this call uses (``"auto"`` resolved by the training mode)."""
        if self.trace != "auto":
            return self.trace
        return "hutchinson" if self.training else "exact"

    def _solve(self, z, h, t0: float, t1: float, generator=None):
        lead = z.shape[:-1]
        if z.dim() < 2 or z.shape[-1] != self.dim:
            raise ValueError(
                f"z must have shape (N, {self.dim}) or (S, N, {self.dim}), "
                f"got {tuple(z.shape)}"
            )
        flat = z.reshape(-1, self.dim)
        if self.context_dim is not None:
            n = z.shape[-2]
            if h is None or h.dim() != 2 or h.shape != (n, self.context_dim):
                got = None if h is None else tuple(h.shape)
                raise ValueError(
                    f"this CNF is conditioned: h must have shape ({n}, "
                    f"{self.context_dim}), got {got}"
                )
            h = h.expand(*lead[:-1], n, self.context_dim).reshape(-1, self.context_dim)
        elif h is not None:
            raise ValueError("this CNF was built without context_dim; pass h=None")
        dyn = self.dynamics
        dyn.trace = self.trace_estimator()
        if dyn.trace == "hutchinson":
            u = torch.rand(flat.shape, generator=generator, device=flat.device)
            dyn.eps = (u < 0.5).to(flat.dtype) * 2.0 - 1.0
        state = (flat, flat.new_zeros(len(flat)))
        if h is not None:
            state = state + (h,)
        ts = torch.tensor([t0, t1], dtype=flat.dtype, device=flat.device)
        dyn.nfe = 0
        kwargs = {"rtol": self.rtol, "atol": self.atol, "method": self.method}
        if self.options:
            kwargs["options"] = self.options
        if self.adjoint:
            out = odeint_adjoint(
                dyn, state, ts, adjoint_params=tuple(dyn.parameters()), **kwargs
            )
        else:
            out = odeint(dyn, state, ts, **kwargs)
        self.nfe = dyn.nfe
        self.nfe_total += dyn.nfe
        return out[0][-1].reshape(z.shape), out[1][-1].reshape(lead)

    def forward(
        self, z: torch.Tensor, h: torch.Tensor | None = None, generator=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z(T), log|det dz(T)/dz(0)|)``: integrate forward from ``t = 0``."""
        return self._solve(z, h, 0.0, self.T, generator)

    def inverse(
        self, z: torch.Tensor, h: torch.Tensor | None = None, generator=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z(0), log|det dz(0)/dz(T)|)``: integrate backwards from ``t = T``."""
        return self._solve(z, h, self.T, 0.0, generator)

    # -- as a density with a standard normal base at t = T
    def log_prob(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(x) = log N(z(T); 0, I) + int_0^T tr(df/dz) dt`` per row (nats)."""
        z, logdet = self(x, h)
        return standard_normal_logpdf(z) + logdet

    def loss(self, batch) -> dict[str, torch.Tensor]:
        """Mean negative log-density (nats per dimension) and the solve's NFE."""
        nll = -self.log_prob(batch).mean() / self.dim
        return {"loss": nll, "nats_per_dim": nll, "nfe": torch.tensor(float(self.nfe))}

    @torch.no_grad()
    def sample(self, n: int, h: torch.Tensor | None = None, generator=None) -> torch.Tensor:
        """``n`` samples: ``z(T) ~ N(0, I)`` integrated back to ``t = 0``."""
        dev = next(self.parameters()).device
        z = torch.randn(int(n), self.dim, generator=generator, device=dev)
        return self.inverse(z, h)[0]

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, context_dim={self.context_dim}, T={self.T}, "
            f"method={self.method!r}, rtol={self.rtol}, atol={self.atol}, "
            f"trace={self.trace!r}"
        )


class FFJORDVAE(FlowVAE):
    """The VAE of chapter 7 with an FFJORD posterior flow instead of ``K`` discrete
    steps: ``zK = z(T)`` of a :class:`CNF` started at the Gaussian sample ``z0`` and
    conditioned on the encoder's context ``h``.

    Everything else (encoder, decoder, loss, the ELBO and IWAE bounds) is
    :class:`~phbook.models.flows.FlowVAE`'s: ``log qK(zK|x) = log q0(z0|x) - logdet``
    with ``logdet`` Hutchinson's estimate in training and the exact trace in
    evaluation. ``cnf_kwargs`` go to :class:`CNF` (``hidden``, ``T``, ``rtol``, ...).
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 16,
        context_dim: int = 32,
        cnf_kwargs: dict | None = None,
        decoder: str = "learned_variance",
        base: nn.Module | None = None,
        **vae_kwargs,
    ):
        super().__init__(
            image_size,
            flow="none",
            n_flows=0,
            context_dim=context_dim,
            decoder=decoder,
            base=base,
            **vae_kwargs,
        )
        kwargs = {"hidden": (64, 64), "rtol": 1e-4, "atol": 1e-4, **(cnf_kwargs or {})}
        self.flow_type = "ffjord"
        self.n_flows = 1
        self.flows = CNF(self.latent_dim, context_dim=int(context_dim), **kwargs)
        self.hparams.update(
            {
                "flow": "ffjord",
                "n_flows": 1,
                "cnf_kwargs": {
                    k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()
                },
            }
        )

    def encode_with_context(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mu, logvar, h)``: the base posterior and the context the flow sees."""
        return self._encode(x)

    @property
    def nfe(self) -> int:
        """Function evaluations of the last forward solve of the flow."""
        return self.flows.nfe

    def loss(self, batch) -> dict[str, torch.Tensor]:
        """:class:`~phbook.models.flows.FlowVAE`'s loss terms, plus the NFE of the
        batch's forward solve (logged, not minimised)."""
        terms = super().loss(batch)
        terms["nfe"] = torch.tensor(float(self.flows.nfe))
        return terms


def logdet_check(
    cnf: CNF, z: torch.Tensor, h: torch.Tensor | None = None, tol: float = 1e-7
) -> dict[str, torch.Tensor]:
    """Compare a CNF's integrated log-determinant with a brute-force one.

    On a float64 copy of ``cnf`` with solver tolerances ``tol``, for each row of ``z``
    (``(N, dim)``, context ``h`` ``(N, context_dim)``): ``ode`` is the log-determinant
    integrated with the exact trace, ``brute`` ``log|det J|`` of the Jacobian ``J`` of
    the whole integrated map ``z(0) -> z(T)``, computed by automatic differentiation
    through the solver. Returns both and ``abs_error``, their largest difference.
    """
    import copy

    ref = copy.deepcopy(cnf).double().eval()
    ref.trace, ref.rtol, ref.atol = "exact", float(tol), float(tol)
    z = z.detach().double()
    h = None if h is None else h.detach().double()
    with torch.no_grad():
        _, ode = ref(z, h)
    brute = []
    for i in range(len(z)):
        hi = None if h is None else h[i : i + 1]
        jac = torch.autograd.functional.jacobian(
            lambda v, hi=hi: ref(v[None], hi)[0][0], z[i]
        )
        brute.append(torch.linalg.slogdet(jac)[1])
    brute = torch.stack(brute)
    return {"ode": ode, "brute": brute, "abs_error": (ode - brute).abs().max()}
