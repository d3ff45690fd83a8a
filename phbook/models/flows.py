"""Normalizing flows of chapter 7: flows for the VAE posterior, and an image flow.

A flow is an invertible map ``z -> z'`` whose log-determinant of the Jacobian,
``log |det dz'/dz|``, is cheap. Pushing a sample of a simple density ``q0`` through
``K`` flow steps gives a sample of a richer density ``qK`` with

``log qK(zK) = log q0(z0) - sum_k log |det dz_k / dz_(k-1)|``

(the change of variables formula). Every latent flow here maps ``(z, h)`` to
``(z', logdet)`` with ``z`` of shape ``(N, D)``, ``logdet`` of shape ``(N,)`` and ``h``
optional *context*: the encoder's features of the image. With context the flow's
parameters are *amortised*: computed from ``h`` by a linear layer, so that every image
gets its own flow, as in van den Berg et al.'s Sylvester flows; without context they are
ordinary parameters shared by all samples.

Latent flows (all written here, tested against autograd Jacobians):

``PlanarFlow``
    ``z' = z + u tanh(w.z + b)`` (Rezende and Mohamed 2015); ``u`` is constrained so the
    map is invertible.
``OrthogonalSylvesterFlow``, ``HouseholderSylvesterFlow``, ``TriangularSylvesterFlow``
    ``z' = z + Q R tanh(R~ Q^T z + b)`` with ``R``, ``R~`` upper triangular and ``Q``
    with orthonormal columns, made by Bjorck orthogonalisation, by Householder
    reflections, or a fixed permutation (van den Berg et al. 2018). Sylvester's
    determinant identity ``det(I_D + A B) = det(I_M + B A)`` turns the ``D x D``
    determinant into the product of a triangular matrix's diagonal.
``IAFlow``
    inverse autoregressive flow (Kingma et al. 2016): ``z' = s z + (1 - s) m`` with
    ``s = sigmoid(.)`` and ``m`` from a MADE network, so ``dz'/dz`` is triangular.
``ConvFlow``
    convolutional flow (Zheng et al. 2017): ``z' = z + u * tanh(conv1d(z) + b)`` with a
    one-sided dilated 1-D convolution over the latent vector, so ``dz'/dz`` is
    triangular; a block applies dilations 1, 2, 4, ... and reverses the order.

:class:`FlowVAE` is a VAE whose posterior sample passes through ``K`` such steps; the
image flow :class:`RealNVP` (affine coupling, squeeze, actnorm, dequantisation) gives
exact densities of images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .ae import as_image_batch
from .vae import BetaVAE, kl_divergence

__all__ = [
    "LatentFlow",
    "PlanarFlow",
    "SylvesterFlow",
    "OrthogonalSylvesterFlow",
    "HouseholderSylvesterFlow",
    "TriangularSylvesterFlow",
    "IAFlow",
    "ConvFlow",
    "FlowSequence",
    "FlowVAE",
    "FLOW_TYPES",
    "make_flows",
    "bjorck_orthogonalize",
    "MaskedLinear",
    "made_masks",
    "standard_normal_logpdf",
    "diagonal_normal_logpdf",
]

_LOG_2PI = math.log(2.0 * math.pi)


def standard_normal_logpdf(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` of each row of ``z`` (summed over the last axis)."""
    return -0.5 * (z.pow(2) + _LOG_2PI).sum(-1)


def diagonal_normal_logpdf(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> torch.Tensor:
    """``log N(z; mu, diag(exp(logvar)))`` of each row (summed over the last axis)."""
    return -0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + _LOG_2PI).sum(-1)


def _check_z(z: torch.Tensor, dim: int, name: str = "z") -> None:
    if not isinstance(z, torch.Tensor) or z.dim() < 2 or z.shape[-1] != dim:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(
            f"{name} must be a tensor of shape (N, {dim}) or (S, N, {dim}), got {shape}"
        )


# ------------------------------------------------------------------------ base class


class LatentFlow(nn.Module):
    """One invertible step ``(z, h) -> (z', log|det dz'/dz|)`` on ``(N, dim)`` codes.

    Subclasses declare the per-sample shapes of their raw parameters in
    ``param_shapes`` and implement ``_transform(z, params)``. With ``context_dim``
    the raw parameters are a linear function of the context ``h`` (amortised flows);
    without it they are free parameters, the same for every sample.
    """

    param_shapes: dict[str, tuple[int, ...]] = {}

    def __init__(self, dim: int, context_dim: int | None = None, init_scale: float = 0.01):
        super().__init__()
        if int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if context_dim is not None and (int(context_dim) != context_dim or context_dim < 1):
            raise ValueError(
                f"context_dim must be a positive integer or None, got {context_dim!r}"
            )
        self.dim = int(dim)
        self.context_dim = None if context_dim is None else int(context_dim)
        self.init_scale = float(init_scale)

    def _setup_params(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Create the raw parameters (free, or a linear map from the context)."""
        self._shapes = dict(shapes)
        self._sizes = {k: math.prod(s) for k, s in shapes.items()}
        total = sum(self._sizes.values())
        if self.context_dim is None:
            self.free = nn.ParameterDict(
                {
                    k: nn.Parameter(self.init_scale * torch.randn(*s))
                    for k, s in shapes.items()
                }
            )
        else:
            self.amortiser = nn.Linear(self.context_dim, total)
            with torch.no_grad():
                self.amortiser.weight.mul_(self.init_scale / 0.1)
                self.amortiser.bias.normal_(0.0, self.init_scale)

    def raw_params(
        self, z: torch.Tensor, h: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """The raw parameters of every sample: ``{name: (N, *shape)}``."""
        n = z.shape[-2]
        if self.context_dim is None:
            if h is not None:
                raise ValueError(
                    f"{type(self).__name__} was built without context_dim; pass h=None"
                )
            return {k: p.unsqueeze(0).expand(n, *p.shape) for k, p in self.free.items()}
        if h is None or h.dim() != 2 or h.shape != (n, self.context_dim):
            got = None if h is None else tuple(h.shape)
            raise ValueError(
                f"{type(self).__name__} is amortised: h must have shape "
                f"({n}, {self.context_dim}), got {got}"
            )
        flat = self.amortiser(h)
        out, start = {}, 0
        for k, s in self._shapes.items():
            out[k] = flat[:, start : start + self._sizes[k]].reshape(n, *s)
            start += self._sizes[k]
        return out

    def forward(
        self, z: torch.Tensor, h: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z', logdet)``: the transformed codes and ``log|det dz'/dz|`` per sample.

        ``z`` is ``(N, dim)``, or ``(S, N, dim)`` for ``S`` draws per image that share
        the parameters computed once from ``h`` (``(N, context_dim)``).
        """
        _check_z(z, self.dim)
        return self._transform(z, self.raw_params(z, h))

    def _transform(self, z, params):
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"dim={self.dim}, context_dim={self.context_dim}"


# ---------------------------------------------------------------------------- planar


class PlanarFlow(LatentFlow):
    """``z' = z + u_hat tanh(w.z + b)``, Rezende and Mohamed's planar flow.

    The map is invertible when ``w.u_hat >= -1``; ``u_hat`` is ``u`` with its component
    along ``w`` replaced so that ``w.u_hat = -1 + softplus(w.u)``. Then
    ``log|det| = log|1 + u_hat . w tanh'(w.z + b)|``.

    The step does not start as the identity. With the small random start of
    ``init_scale``, ``w.u`` is near 0, so ``w.u_hat`` is near ``-1 + log 2 = -0.31``
    and, for small ``w``, the step squeezes codes by 31 % along ``w`` (log-determinant
    about -0.37 per step). Training first undoes that, which is why planar flows learn
    slowly at the start (chapter 7 measures it). This is Rezende and Mohamed's
    constraint as published; a shifted one (``softplus(w.u + log(e - 1))``) would
    start at the identity.
    """

    def __init__(self, dim: int, context_dim: int | None = None, init_scale: float = 0.01):
        super().__init__(dim, context_dim, init_scale)
        self._setup_params({"u": (dim,), "w": (dim,), "b": (1,)})

    @staticmethod
    def constrain_u(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``u_hat`` with ``w.u_hat = -1 + softplus(w.u) > -1`` (invertibility)."""
        wu = (w * u).sum(-1, keepdim=True)
        m = -1.0 + F.softplus(wu)
        return u + (m - wu) * w / (w.pow(2).sum(-1, keepdim=True) + 1e-12)

    def _transform(self, z, p):
        u_hat = self.constrain_u(p["u"], p["w"])
        a = (p["w"] * z).sum(-1, keepdim=True) + p["b"]
        t = torch.tanh(a)
        z_new = z + u_hat * t
        psi_u = (1.0 - t.pow(2)) * (p["w"] * u_hat).sum(-1, keepdim=True)
        logdet = torch.log((1.0 + psi_u).abs().clamp_min(1e-30)).squeeze(-1)
        return z_new, logdet


# ------------------------------------------------------------------------- Sylvester


def bjorck_orthogonalize(
    q: torch.Tensor, max_iter: int = 100, tol: float = 1e-6
) -> torch.Tensor:
    """Matrices ``(N, D, M)`` with orthonormal columns, by Bjorck's iteration.

    ``Q <- Q (I + (I - Q^T Q) / 2)`` converges to the nearest matrix with orthonormal
    columns when ``||Q^T Q - I|| < 1``, which dividing ``Q`` by its Frobenius norm
    ensures for full-rank ``Q``. It is differentiable, which is why van den Berg et al.
    use it instead of a QR decomposition. Stops when ``max|Q^T Q - I| < tol``.
    """
    if q.dim() != 3 or q.shape[-1] > q.shape[-2]:
        raise ValueError(f"q must have shape (N, D, M) with M <= D, got {tuple(q.shape)}")
    m = q.shape[-1]
    eye = torch.eye(m, dtype=q.dtype, device=q.device)
    q = q / q.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
    for _ in range(max_iter):
        qtq = q.transpose(1, 2) @ q
        if float((qtq.detach() - eye).abs().max()) < tol:
            break
        q = q @ (eye + 0.5 * (eye - qtq))
    return q


class SylvesterFlow(LatentFlow):
    """``z' = z + Q R tanh(R~ Q^T z + b)``: the common core of the Sylvester flows.

    ``Q`` is ``(D, M)`` with orthonormal columns, ``R`` and ``R~`` are ``M x M`` upper
    triangular with diagonals in (-1, 1) (a ``tanh``), which keeps the map invertible.
    By Sylvester's identity,

    ``det(I_D + Q R diag(tanh') R~ Q^T) = det(I_M + diag(tanh') R~ R)``

    and ``R~ R`` is triangular, so
    ``log|det| = sum_m log|1 + tanh'(.)_m R~_mm R_mm|``. Subclasses say how ``Q`` is
    made (``_q_apply`` returns ``Q^T z`` and a function applying ``Q``).
    """

    def __init__(
        self,
        dim: int,
        n_columns: int | None = None,
        context_dim: int | None = None,
        init_scale: float = 0.01,
        extra_shapes: dict[str, tuple[int, ...]] | None = None,
    ):
        super().__init__(dim, context_dim, init_scale)
        m = dim if n_columns is None else int(n_columns)
        if not 1 <= m <= dim:
            raise ValueError(f"n_columns must lie in [1, dim={dim}], got {n_columns!r}")
        self.n_columns = m
        self.register_buffer("triu_mask", torch.triu(torch.ones(m, m), diagonal=1))
        shapes = {"r1": (m, m), "r2": (m, m), "d1": (m,), "d2": (m,), "b": (m,)}
        shapes.update(extra_shapes or {})
        self._setup_params(shapes)

    def _q_apply(self, z, p):
        """``(Q^T z, apply_q)`` where ``apply_q(y)`` computes ``Q y``."""
        raise NotImplementedError

    def triangular(self, p) -> tuple[torch.Tensor, torch.Tensor]:
        """``R`` and ``R~``: strictly upper parts of ``r1, r2`` plus tanh diagonals."""
        diag1 = torch.diag_embed(torch.tanh(p["d1"]))
        diag2 = torch.diag_embed(torch.tanh(p["d2"]))
        return p["r1"] * self.triu_mask + diag1, p["r2"] * self.triu_mask + diag2

    def _transform(self, z, p):
        r, r_tilde = self.triangular(p)
        qtz, apply_q = self._q_apply(z, p)
        pre = (r_tilde @ qtz.unsqueeze(-1)).squeeze(-1) + p["b"]
        t = torch.tanh(pre)
        z_new = z + apply_q((r @ t.unsqueeze(-1)).squeeze(-1))
        diag = 1.0 + (1.0 - t.pow(2)) * torch.tanh(p["d1"]) * torch.tanh(p["d2"])
        logdet = torch.log(diag.abs().clamp_min(1e-30)).sum(-1)
        return z_new, logdet

    def extra_repr(self) -> str:
        return super().extra_repr() + f", n_columns={self.n_columns}"


class OrthogonalSylvesterFlow(SylvesterFlow):
    """O-SNF: ``Q`` (``D x M``) made orthonormal by Bjorck's iteration (``M <= D``)."""

    def __init__(
        self,
        dim: int,
        n_columns: int | None = None,
        context_dim: int | None = None,
        init_scale: float = 0.01,
        max_iter: int = 100,
        tol: float = 1e-6,
    ):
        m = dim if n_columns is None else int(n_columns)
        super().__init__(dim, m, context_dim, init_scale, {"q": (dim, m)})
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        # Start near the first M columns of the identity, so Bjorck converges fast.
        eye = torch.eye(dim, m)
        if context_dim is None:
            with torch.no_grad():
                self.free["q"].add_(eye)
        else:
            self.register_buffer("q_offset", eye)

    def _q_apply(self, z, p):
        q_raw = p["q"] + self.q_offset if self.context_dim is not None else p["q"]
        q = bjorck_orthogonalize(q_raw, self.max_iter, self.tol)
        qtz = (q.transpose(-1, -2) @ z.unsqueeze(-1)).squeeze(-1)
        return qtz, lambda y: (q @ y.unsqueeze(-1)).squeeze(-1)


def _householder(z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Reflect each row of ``z`` in the hyperplane orthogonal to ``v``."""
    return z - 2.0 * v * (v * z).sum(-1, keepdim=True) / (
        v.pow(2).sum(-1, keepdim=True) + 1e-12
    )


class HouseholderSylvesterFlow(SylvesterFlow):
    """H-SNF: ``Q = H_1 H_2 ... H_L``, a product of ``n_reflections`` Householder
    reflections ``H = I - 2 v v^T / |v|^2`` (orthogonal by construction, ``M = D``)."""

    def __init__(
        self,
        dim: int,
        n_reflections: int = 4,
        context_dim: int | None = None,
        init_scale: float = 0.01,
    ):
        if n_reflections < 1:
            raise ValueError(f"n_reflections must be at least 1, got {n_reflections}")
        self.n_reflections = int(n_reflections)
        super().__init__(
            dim, dim, context_dim, init_scale, {"v": (self.n_reflections, dim)}
        )
        # Reflection vectors must not start at zero: give them a fixed random offset.
        offset = torch.randn(self.n_reflections, dim)
        if context_dim is None:
            with torch.no_grad():
                self.free["v"].add_(offset)
        else:
            self.register_buffer("v_offset", offset)

    def _q_apply(self, z, p):
        v = p["v"] + self.v_offset if self.context_dim is not None else p["v"]
        y = z  # Q^T z = H_L ... H_1 z: reflect by H_1 first
        for i in range(self.n_reflections):
            y = _householder(y, v[:, i])

        def apply_q(y):  # Q y = H_1 ... H_L y: reflect by H_L first
            for i in reversed(range(self.n_reflections)):
                y = _householder(y, v[:, i])
            return y

        return y, apply_q

    def extra_repr(self) -> str:
        return super().extra_repr() + f", n_reflections={self.n_reflections}"


class TriangularSylvesterFlow(SylvesterFlow):
    """T-SNF: ``Q`` is the identity or, with ``reverse=True``, the order reversal;
    stacks alternate the two so that every coordinate gets to depend on every other."""

    def __init__(
        self,
        dim: int,
        reverse: bool = False,
        context_dim: int | None = None,
        init_scale: float = 0.01,
    ):
        super().__init__(dim, dim, context_dim, init_scale)
        self.reverse = bool(reverse)

    def _q_apply(self, z, p):
        if not self.reverse:
            return z, lambda y: y
        return z.flip(-1), lambda y: y.flip(-1)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", reverse={self.reverse}"


# ------------------------------------------------------------------------------- IAF


def made_masks(
    dim: int, hidden: Sequence[int], order: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """The connectivity masks of a MADE network (Germain et al. 2015).

    Input ``i`` gets degree ``order[i]`` (1..dim), hidden units degrees in
    ``1..dim-1``, and output ``j`` (one per input) degree ``order[j]``. A weight from a
    unit of degree ``a`` to a hidden unit of degree ``b`` exists when ``a <= b``; to an
    output of degree ``b`` when ``a < b``. So output ``j`` depends only on inputs that
    come before it in ``order``. Returns one ``(out, in)`` mask per layer.
    """
    order = torch.arange(1, dim + 1) if order is None else torch.as_tensor(order)
    if sorted(order.tolist()) != list(range(1, dim + 1)):
        raise ValueError(f"order must be a permutation of 1..{dim}, got {order.tolist()}")
    degrees = [order]
    for k in hidden:
        degrees.append(torch.arange(k) % max(1, dim - 1) + 1)
    masks = [
        (d_out[:, None] >= d_in[None, :]).float()
        for d_in, d_out in zip(degrees[:-1], degrees[1:], strict=True)
    ]
    masks.append((order[:, None] > degrees[-1][None, :]).float())
    return masks


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask."""

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor):
        super().__init__(in_features, out_features)
        if tuple(mask.shape) != (out_features, in_features):
            raise ValueError(
                f"mask must have shape ({out_features}, {in_features}), got "
                f"{tuple(mask.shape)}"
            )
        self.register_buffer("mask", mask.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class IAFlow(LatentFlow):
    """Inverse autoregressive flow step: ``z' = s * z + (1 - s) * m``.

    ``m`` and ``s = sigmoid(. + forget_bias)`` come from a MADE network of ``z`` (and
    the context ``h``, added to its first hidden layer), in which output ``i`` sees only
    the inputs before ``i`` in this step's ordering. The Jacobian is triangular with
    diagonal ``s``: ``log|det| = sum log s``. ``reverse=True`` reverses the ordering,
    as stacked IAF steps do.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64,),
        context_dim: int | None = None,
        reverse: bool = False,
        forget_bias: float = 1.0,
    ):
        super().__init__(dim, context_dim)
        if not hidden or min(hidden) < 1:
            raise ValueError(
                f"hidden must be a non-empty list of positive ints, got {hidden}"
            )
        self.hidden = tuple(int(k) for k in hidden)
        self.reverse = bool(reverse)
        self.forget_bias = float(forget_bias)
        order = torch.arange(1, dim + 1)
        if reverse:
            order = order.flip(0)
        self.register_buffer("order", order)
        masks = made_masks(dim, self.hidden, order)
        sizes = [dim, *self.hidden]
        self.layers = nn.ModuleList(
            MaskedLinear(a, b, m)
            for a, b, m in zip(sizes[:-1], sizes[1:], masks[:-1], strict=True)
        )
        out_mask = masks[-1]
        self.to_m = MaskedLinear(sizes[-1], dim, out_mask)
        self.to_s = MaskedLinear(sizes[-1], dim, out_mask)
        if context_dim is not None:
            self.context = nn.Linear(context_dim, self.hidden[0])

    def raw_params(self, z, h):
        if self.context_dim is None and h is not None:
            raise ValueError("IAFlow was built without context_dim; pass h=None")
        if self.context_dim is not None and (
            h is None or tuple(h.shape) != (z.shape[-2], self.context_dim)
        ):
            got = None if h is None else tuple(h.shape)
            raise ValueError(
                f"IAFlow is amortised: h must have shape ({z.shape[-2]}, "
                f"{self.context_dim}), got {got}"
            )
        return {"h": h}

    def _transform(self, z, p):
        a = self.layers[0](z)
        if p["h"] is not None:
            a = a + self.context(p["h"])
        a = F.elu(a)
        for layer in self.layers[1:]:
            a = F.elu(layer(a))
        m = self.to_m(a)
        s_pre = self.to_s(a) + self.forget_bias
        s = torch.sigmoid(s_pre)
        z_new = s * z + (1.0 - s) * m
        return z_new, F.logsigmoid(s_pre).sum(-1)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", hidden={self.hidden}, reverse={self.reverse}"


# -------------------------------------------------------------------------- ConvFlow


def _shifted_softplus(a: torch.Tensor) -> torch.Tensor:
    """``-1 + softplus(a + log(e - 1))``: zero at zero, always above -1."""
    return F.softplus(a + math.log(math.e - 1.0)) - 1.0


class ConvFlow(LatentFlow):
    """A block of convolutional flow layers over the latent vector, then a reversal.

    Each layer is ``z' = z + u * tanh(c + b)`` with ``c_i = sum_j w_j z_(i + j d)``: a
    1-D convolution of kernel ``kernel_size`` and dilation ``d`` that looks only
    *forward* (zero padding on the right). Output ``i`` depends on ``z_i`` and later
    coordinates, so the Jacobian is upper triangular with diagonal
    ``1 + u_i w_0 tanh'(c_i + b)``. Invertibility needs ``u_i w_0 > -1``;
    ``u_i = m(w_0 a_i) / w_0`` with ``m(t) = -1 + softplus(t + log(e-1))`` guarantees it
    (and is the identity map at ``a = 0``). The block uses dilations 1, 2, 4, ... below
    ``dim`` and finally reverses the order of the coordinates (a permutation, whose
    ``|det|`` is 1), so that stacked blocks mix in both directions.
    """

    def __init__(
        self,
        dim: int,
        kernel_size: int = 3,
        context_dim: int | None = None,
        init_scale: float = 0.01,
    ):
        super().__init__(dim, context_dim, init_scale)
        if kernel_size < 2:
            raise ValueError(f"kernel_size must be at least 2, got {kernel_size}")
        self.kernel_size = int(kernel_size)
        self.dilations = [2**i for i in range(max(1, math.ceil(math.log2(max(dim, 2)))))]
        shapes = {}
        for i in range(len(self.dilations)):
            shapes[f"w{i}"] = (self.kernel_size,)
            shapes[f"a{i}"] = (dim,)
            shapes[f"b{i}"] = (1,)
        self._setup_params(shapes)
        # the kernel's own tap starts at 1, so the flow starts well conditioned
        if context_dim is None:
            with torch.no_grad():
                for i in range(len(self.dilations)):
                    self.free[f"w{i}"][0] += 1.0
        else:
            first = torch.zeros(self.kernel_size)
            first[0] = 1.0
            self.register_buffer("w_offset", first)

    def conv(self, z: torch.Tensor, w: torch.Tensor, dilation: int) -> torch.Tensor:
        """``c_i = sum_j w_j z_(i + j d)`` per sample (``w`` is ``(N, kernel_size)``)."""
        pad = (self.kernel_size - 1) * dilation
        zp = F.pad(z, (0, pad))
        windows = zp.unfold(-1, pad + 1, 1)[..., ::dilation]  # (..., N, D, kernel)
        return (windows * w[:, None, :]).sum(-1)

    def _transform(self, z, p):
        logdet = z.new_zeros(z.shape[:-1])
        for i, d in enumerate(self.dilations):
            w = p[f"w{i}"]
            if self.context_dim is not None:
                w = w + self.w_offset
            w0 = w[:, :1]
            a = p[f"a{i}"]
            small = w0.abs() < 1e-6
            w0_safe = torch.where(small, torch.ones_like(w0), w0)
            u = torch.where(
                small,
                a * (1.0 - 1.0 / math.e),  # the limit of m(w0 a) / w0 as w0 -> 0
                _shifted_softplus(w0_safe * a) / w0_safe,
            )
            t = torch.tanh(self.conv(z, w, d) + p[f"b{i}"])
            z = z + u * t
            logdet = logdet + torch.log(
                (1.0 + u * w0 * (1.0 - t.pow(2))).abs().clamp_min(1e-30)
            ).sum(-1)
        return z.flip(-1), logdet

    def extra_repr(self) -> str:
        return (
            super().extra_repr()
            + f", kernel_size={self.kernel_size}, dilations={self.dilations}"
        )


# ---------------------------------------------------------------------------- stacks


class FlowSequence(nn.Module):
    """``K`` latent flow steps applied in turn; the log-determinants add up."""

    def __init__(self, flows: Sequence[LatentFlow]):
        super().__init__()
        self.flows = nn.ModuleList(flows)

    def __len__(self) -> int:
        return len(self.flows)

    def forward(
        self, z: torch.Tensor, h: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z_K, sum_k log|det dz_k/dz_(k-1)|)``."""
        logdet = z.new_zeros(z.shape[:-1])
        for flow in self.flows:
            z, ld = flow(z, h)
            logdet = logdet + ld
        return z, logdet


#: The latent flow types :func:`make_flows` knows, in the order of chapter 7.
FLOW_TYPES = (
    "none",
    "planar",
    "orthogonal_sylvester",
    "householder_sylvester",
    "triangular_sylvester",
    "iaf",
    "convflow",
)


def make_flows(
    kind: str,
    dim: int,
    n_flows: int,
    context_dim: int | None = None,
    **kwargs,
) -> FlowSequence:
    """``n_flows`` steps of the flow ``kind`` (one of :data:`FLOW_TYPES`).

    Steps that have an ordering (triangular Sylvester, IAF) alternate it. Extra keyword
    arguments go to every step (``n_columns``, ``n_reflections``, ``hidden``,
    ``kernel_size``).
    """
    if kind not in FLOW_TYPES:
        raise ValueError(
            f"kind={kind!r} is not a flow type; valid: {', '.join(FLOW_TYPES)}"
        )
    if int(n_flows) != n_flows or n_flows < 0:
        raise ValueError(f"n_flows must be a non-negative integer, got {n_flows!r}")
    if kind == "none" or n_flows == 0:
        return FlowSequence([])
    steps: list[LatentFlow] = []
    for k in range(n_flows):
        if kind == "planar":
            steps.append(PlanarFlow(dim, context_dim, **kwargs))
        elif kind == "orthogonal_sylvester":
            steps.append(OrthogonalSylvesterFlow(dim, context_dim=context_dim, **kwargs))
        elif kind == "householder_sylvester":
            steps.append(HouseholderSylvesterFlow(dim, context_dim=context_dim, **kwargs))
        elif kind == "triangular_sylvester":
            steps.append(
                TriangularSylvesterFlow(
                    dim, reverse=bool(k % 2), context_dim=context_dim, **kwargs
                )
            )
        elif kind == "iaf":
            steps.append(
                IAFlow(dim, context_dim=context_dim, reverse=bool(k % 2), **kwargs)
            )
        else:
            steps.append(ConvFlow(dim, context_dim=context_dim, **kwargs))
    return FlowSequence(steps)


# ---------------------------------------------------------------- VAE with flows


def _default_base(image_size, **vae_kwargs):
    return BetaVAE(image_size=image_size, **vae_kwargs)


class FlowVAE(nn.Module):
    """A VAE whose posterior sample passes through ``n_flows`` latent flow steps.

    The encoder, decoder and loss pieces are those of the beta-VAE of chapter 3
    (:class:`phbook.models.vae.BetaVAE`, the ``base``): the encoder gives features
    ``h``, ``mu`` and ``logvar``; ``z0 = mu + sigma * eps`` is drawn as usual, and
    ``zK = f_K(... f_1(z0; h) ...; h)`` is what the decoder sees. The flows are
    amortised: their parameters are computed from ``context(h)``. The KL term of the
    ELBO has no closed form any more; its one-sample estimate is

    ``log qK(zK|x) - log p(zK) = log q0(z0|x) - sum_k log|det J_k| - log N(zK; 0, I)``

    and the loss is ``recon + w * kl`` with ``recon`` the base's sum of squared errors
    and ``w`` the base's KL weight (``beta``, reached after ``kl_warmup`` epochs of
    linear warm-up). With ``flow="none"`` the model *is* the beta-VAE (closed-form KL).

    Parameters
    ----------
    image_size
        Image height and width (the base VAE's).
    flow, n_flows
        The flow type (one of :data:`FLOW_TYPES`) and the number of steps.
    context_dim
        Size of the context vector the flows' parameters are computed from.
    flow_kwargs
        Extra arguments of every flow step (``n_columns``, ``n_reflections``,
        ``hidden``, ``kernel_size``).
    decoder
        ``"learned_variance"`` (default): a Gaussian decoder whose variance per pixel is
        learnt, so that the ELBO and IWAE bounds are densities worth comparing;
        ``"base"``: the base VAE's loss unchanged (squared error, i.e. a Gaussian of
        variance 1/2), with which ``flow="none"`` is exactly the beta-VAE.
    base
        A beta-VAE to build on; default ``BetaVAE(image_size, **vae_kwargs)``.
    vae_kwargs
        ``latent_dim``, ``beta``, ``channels``, ``kl_warmup``, ... of the base VAE.
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 16,
        flow: str = "planar",
        n_flows: int = 4,
        context_dim: int = 64,
        flow_kwargs: dict | None = None,
        decoder: str = "learned_variance",
        base: nn.Module | None = None,
        **vae_kwargs,
    ):
        super().__init__()
        if decoder not in ("learned_variance", "base"):
            raise ValueError(
                f"decoder must be 'learned_variance' or 'base', got {decoder!r}"
            )
        self.decoder = decoder
        if flow not in FLOW_TYPES:
            raise ValueError(
                f"flow={flow!r} is not a flow type; valid: {', '.join(FLOW_TYPES)}"
            )
        if int(context_dim) != context_dim or context_dim < 1:
            raise ValueError(f"context_dim must be a positive integer, got {context_dim!r}")
        if base is not None and vae_kwargs:
            raise ValueError(
                f"give either base or the VAE's arguments, not both: {sorted(vae_kwargs)}"
            )
        self.base = base if base is not None else _default_base(image_size, **vae_kwargs)
        for attr in ("encoder", "to_latent", "decode", "latent_dim", "beta"):
            if not hasattr(self.base, attr):
                raise TypeError(f"base must have an attribute {attr!r} (like BetaVAE)")
        self.flow_type = flow
        self.n_flows = int(n_flows) if flow != "none" else 0
        self.latent_dim = int(self.base.latent_dim)
        n_features = self.base.to_latent.in_features
        self.hparams = {
            **getattr(self.base, "hparams", {}),
            "flow": flow,
            "n_flows": self.n_flows,
            "context_dim": int(context_dim),
            "flow_kwargs": dict(flow_kwargs or {}),
            "decoder": decoder,
        }
        self.context = nn.Sequential(nn.Linear(n_features, int(context_dim)), nn.ELU())
        self.flows = make_flows(
            flow, self.latent_dim, self.n_flows, int(context_dim), **(flow_kwargs or {})
        )
        self.kl_weight = float(getattr(self.base, "kl_weight", self.base.beta))
        if decoder == "learned_variance":
            hw = getattr(self.base, "image_hw", None)
            shape = (1, 1, *hw) if hw is not None else (1,)
            self.decoder_logvar = nn.Parameter(torch.zeros(shape))
            # set from the first training batch: the variance of each pixel
            self.register_buffer("decoder_initialized", torch.tensor(False))

    # -- the model
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of the base posterior ``q0(z|x)``."""
        return self._encode(x)[:2]

    def _encode(self, x):
        if hasattr(self.base, "image_hw"):
            x = as_image_batch(x, self.base.image_hw)
        h = self.base.encoder(x)
        mu, logvar = self.base.to_latent(h).chunk(2, dim=1)
        return mu, logvar, self.context(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images from latent codes (the base VAE's decoder)."""
        return self.base.decode(z)

    def posterior_sample(
        self,
        x: torch.Tensor,
        n_samples: int = 1,
        generator: torch.Generator | None = None,
        eps: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``n_samples`` draws of ``zK ~ qK(z|x)`` per image with their densities.

        Returns ``z0``, ``zK`` (``(S, N, D)``), ``log_q`` (``log qK(zK|x)``, ``(S, N)``),
        ``mu`` and ``logvar``. ``eps`` (``(S, N, D)``) gives the standard normal
        draws, e.g. per-frame ones (:func:`phbook.noise.frame_normal`).
        """
        mu, logvar, ctx = self._encode(x)
        s, n, d = int(n_samples), mu.shape[0], mu.shape[1]
        if eps is None:
            eps = torch.randn(
                (s, n, d), generator=generator, device=mu.device, dtype=mu.dtype
            )
        elif tuple(eps.shape) != (s, n, d):
            raise ValueError(f"eps must have shape {(s, n, d)}, got {tuple(eps.shape)}")
        z0 = mu + torch.exp(0.5 * logvar) * eps
        # the flows' parameters are computed once per image and shared by its draws
        zk, logdet = self.flows(z0, ctx)
        log_q0 = diagonal_normal_logpdf(z0, mu, logvar)
        return {"z0": z0, "zK": zk, "log_q": log_q0 - logdet, "mu": mu, "logvar": logvar}

    def forward(self, x: torch.Tensor):
        """``(x_hat, mu, logvar)``: one posterior sample (through the flows) decoded."""
        post = self.posterior_sample(x)
        return self.decode(post["zK"][0]), post["mu"], post["logvar"]

    # -- training
    @property
    def schedule_epochs(self) -> int:
        """The base VAE's KL warm-up (epochs never restored as the best)."""
        return int(getattr(self.base, "schedule_epochs", 0))

    def on_epoch_start(self, state) -> None:
        """KL warm-up, exactly as the base VAE does it."""
        if hasattr(self.base, "on_epoch_start"):
            self.base.on_epoch_start(state)
        self.kl_weight = float(getattr(self.base, "kl_weight", self.base.beta))

    def _terms(self, x):
        post = self.posterior_sample(x)
        zk = post["zK"][0]
        x_hat = self.decode(zk)
        recon = self.reconstruction_nll(x, x_hat)
        if self.n_flows == 0:
            kl = kl_divergence(post["mu"], post["logvar"])
        else:
            kl = post["log_q"][0] - standard_normal_logpdf(zk)
        return recon, kl

    def loss(self, batch) -> dict[str, torch.Tensor]:
        """``loss = recon + w * kl`` (batch means); ``w`` is the current KL weight."""
        if (
            self.decoder == "learned_variance"
            and self.training
            and not bool(self.decoder_initialized)
            and len(batch) > 1
        ):
            with torch.no_grad():
                var = batch.reshape(len(batch), -1).var(0).clamp_min(1e-6)
                self.decoder_logvar.copy_(
                    torch.log(var).reshape(self.decoder_logvar.shape)
                    if self.decoder_logvar.numel() > 1
                    else torch.log(var.mean()).reshape(1)
                )
                self.decoder_initialized.fill_(True)
        recon, kl = self._terms(batch)
        recon, kl = recon.mean(), kl.mean()
        return {
            "loss": recon + self.kl_weight * kl,
            "recon": recon,
            "kl": kl,
            "kl_weight": torch.tensor(self.kl_weight),
        }

    def validation_loss(self, batch) -> dict[str, torch.Tensor]:
        """Held-out terms, plus the negative ELBO with ``beta = 1`` (``neg_elbo``)."""
        terms = self.loss(batch)
        terms["neg_elbo"] = terms["recon"] + terms["kl"]
        return terms

    # -- likelihood
    def reconstruction_nll(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """The reconstruction term of the loss, per image.

        ``decoder="base"``: the base VAE's sum of squared errors (the negative
        log-likelihood of a Gaussian of variance 1/2, without its constant).
        ``decoder="learned_variance"``: the full negative log-likelihood of a Gaussian
        with a learnt variance per pixel (initialised, on the first training batch, to
        the variance of each pixel over the batch).
        """
        err2 = (x.reshape(x_hat.shape) - x_hat).pow(2).flatten(1)
        if self.decoder == "base":
            return err2.sum(1)
        logvar = self.decoder_logvar.flatten()
        return 0.5 * (err2 * torch.exp(-logvar) + logvar + _LOG_2PI).sum(1)

    def log_likelihood_gaussian(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """``log p(x|z)`` of the Gaussian decoder, per image, with every constant.

        For ``decoder="base"`` the variance is 1/2 and ``log p = -SSE - (P/2) log(pi)``.
        """
        if self.decoder == "base":
            sse = (x.reshape(x_hat.shape) - x_hat).pow(2).flatten(1).sum(1)
            return -sse - 0.5 * x_hat[0].numel() * math.log(math.pi)
        return -self.reconstruction_nll(x, x_hat)

    @torch.no_grad()
    def log_likelihood_bounds(
        self,
        x: torch.Tensor,
        n_samples: int = 16,
        generator: torch.Generator | None = None,
        eps: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The ELBO and the importance-weighted (IWAE) bound on ``log p(x)``, per image.

        With ``k = n_samples`` draws ``zK_j ~ qK(z|x)`` and weights
        ``w_j = p(x|zK_j) p(zK_j) / qK(zK_j|x)``, ``elbo = mean_j log w_j`` and
        ``iwae = log mean_j w_j`` (Burda et al. 2016); ``elbo <= iwae <= log p(x)``,
        and ``iwae`` tightens as ``k`` grows. ``eps``: the draws, as in
        :meth:`posterior_sample`.
        """
        if int(n_samples) != n_samples or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        post = self.posterior_sample(x, n_samples, generator, eps)
        s, n, d = post["zK"].shape
        x_hat = self.decode(post["zK"].reshape(s * n, d))
        x_rep = x.reshape(n, -1).repeat(s, 1)
        log_px_z = self.log_likelihood_gaussian(x_rep, x_hat.reshape(s * n, -1)).view(s, n)
        log_w = log_px_z + standard_normal_logpdf(post["zK"]) - post["log_q"]
        return {
            "elbo": log_w.mean(0),
            "iwae": torch.logsumexp(log_w, 0) - math.log(s),
        }
