"""Fit a smooth lens model to each image: the physics-aware detector of chapter 10.

Astronomers look for dark-matter substructure by *gravitational imaging*: fit the
image with a smooth macro model (a singular isothermal ellipsoid with external shear
lensing a parametric source) and look at what the fit cannot explain. This module does
that for a whole batch of images at once in torch:

* :class:`SmoothLensRenderer` draws the noiseless image of an SIE + shear lens and an
  elliptical Sersic source, blurred by a Gaussian PSF, with the conventions of
  lenstronomy (a test checks it against :func:`phbook.sim.lensing.render_noiseless`);
* :func:`fit_smooth_lens` finds, for every image, the parameters that minimise
  ``chi^2 = sum (d - A m)^2 / var`` by gradient descent from several starting points,
  then polishes the best with :func:`levenberg_marquardt`; the source amplitude ``A``
  is solved in closed form at every step (the model is linear in it);
* :class:`phbook.detectors.SmoothLensDetector` is the detector built on them: its
  anomaly score is the goodness-of-fit statistic of the best smooth model, compared
  with the noise expected from the data (by default :func:`coherent_score`, a matched
  filter of the residual over the arcs). It is unsupervised: it sees normal (smooth)
  lenses only, through a *library* of simulated smooth lenses whose parameters give
  the starting points (the nearest library images in a PCA space).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "PARAMS",
    "SmoothLensRenderer",
    "fit_smooth_lens",
    "levenberg_marquardt",
    "coherent_score",
    "sky_variance",
]

#: The fitted parameters, in order (lenstronomy names and conventions; the source
#: amplitude is solved linearly and is not among them).
PARAMS = (
    "theta_E",
    "lens_e1",
    "lens_e2",
    "lens_x",
    "lens_y",
    "gamma1",
    "gamma2",
    "source_x",
    "source_y",
    "source_r_sersic",
    "source_n_sersic",
    "source_e1",
    "source_e2",
)


class SmoothLensRenderer(torch.nn.Module):
    """Noiseless images of SIE + shear lenses of an elliptical Sersic source.

    ``num_pix`` pixels of ``pixel_scale`` arcsec, ``supersampling`` rays per pixel
    side (averaged), a Gaussian PSF of ``psf_fwhm`` arcsec (separable kernel, zero
    padding, as :mod:`phbook.sim.lensing`). :meth:`forward` takes parameters
    ``(B, 13)`` in the order of :data:`PARAMS` and returns unit-amplitude images
    ``(B, num_pix, num_pix)`` (the Sersic profile is 1 at its half-light radius).
    """

    def __init__(
        self,
        num_pix: int = 64,
        pixel_scale: float = 0.101,
        psf_fwhm: float = 0.16,
        supersampling: int = 2,
    ):
        super().__init__()
        from lenstronomy.Util import kernel_util, util

        self.num_pix, self.supersampling = int(num_pix), int(supersampling)
        self.pixel_scale, self.psf_fwhm = float(pixel_scale), float(psf_fwhm)
        x, y = util.make_grid(num_pix, pixel_scale, subgrid_res=supersampling)
        side = num_pix * supersampling
        self.register_buffer("x", torch.as_tensor(x, dtype=torch.float32).view(side, side))
        self.register_buffer("y", torch.as_tensor(y, dtype=torch.float32).view(side, side))
        size = int(np.ceil(3 * psf_fwhm / pixel_scale)) * 2 + 1
        kernel = kernel_util.kernel_gaussian(size, pixel_scale, psf_fwhm)
        k1 = kernel.sum(axis=0) / kernel.sum()
        self.register_buffer("k1", torch.as_tensor(k1, dtype=torch.float32))

    def deflection(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Deflection ``(alpha_x, alpha_y)`` of SIE + shear on the ray grid."""
        x, y = self.x[None], self.y[None]
        t_e, e1, e2, cx, cy, g1, g2 = (
            p[:, i, None, None] for i in range(self.n_lens_params)
        )
        c = torch.sqrt(e1**2 + e2**2 + 1e-12).clamp(max=0.9999)
        q = ((1 - c) / (1 + c)).clamp(max=0.9999)
        phi = 0.5 * torch.atan2(e2, e1)
        b = t_e * torch.sqrt(q)  # lenstronomy's product-average convention
        s = 1e-10 / torch.sqrt(q)
        cos, sin = torch.cos(phi), torch.sin(phi)
        dx, dy = x - cx, y - cy
        xr, yr = dx * cos + dy * sin, -dx * sin + dy * cos
        psi = torch.sqrt(q**2 * (s**2 + xr**2) + yr**2)
        f = torch.sqrt(1 - q**2)
        ax = b / f * torch.atan(f * xr / (psi + s))
        ay = b / f * torch.atanh((f * yr / (psi + q**2 * s)).clamp(-0.999999, 0.999999))
        ax, ay = ax * cos - ay * sin, ax * sin + ay * cos
        return ax + g1 * x + g2 * y, ay + g2 * x - g1 * y

    def source(self, bx: torch.Tensor, by: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Unit-amplitude elliptical Sersic surface brightness at source positions."""
        sx, sy, r, n, e1, e2 = (
            p[:, i, None, None] for i in range(self.n_lens_params, len(PARAMS))
        )
        dx, dy = bx - sx, by - sy
        norm = torch.sqrt((1 - e1**2 - e2**2).abs().clamp(min=1e-6))
        xe = ((1 - e1) * dx - e2 * dy) / norm
        ye = (-e2 * dx + (1 + e1) * dy) / norm
        radius = torch.sqrt(xe**2 + ye**2 + 1e-12).clamp(min=1e-4)
        bn = (1.9992 * n - 0.3271).clamp(min=1e-5)
        return torch.exp(-bn * ((radius / r.clamp(min=1e-4)) ** (1 / n) - 1))

    def grid(self) -> tuple[int, float, float]:
        """``(num_pix, pixel_scale, psf_fwhm)``: what fixes the images it draws, apart
        from the number of rays per pixel."""
        return (self.num_pix, self.pixel_scale, self.psf_fwhm)

    #: how many leading parameters of :data:`PARAMS` the deflection depends on (the
    #: lens); the rest describe the source
    n_lens_params = 7

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return self.render(p, *self.deflection(p))

    def render(self, p: torch.Tensor, ax: torch.Tensor, ay: torch.Tensor) -> torch.Tensor:
        """The image of parameters ``p`` given their deflection ``(ax, ay)`` (of
        :meth:`deflection`), so that images which differ only in the source share it."""
        sb = self.source(self.x[None] - ax, self.y[None] - ay, p)
        img = F.avg_pool2d(sb[:, None], self.supersampling)
        k = self.k1
        pad = len(k) // 2
        img = F.conv2d(img, k.view(1, 1, 1, -1), padding=(0, pad))
        img = F.conv2d(img, k.view(1, 1, -1, 1), padding=(pad, 0))
        return img[:, 0].clamp(min=0)


#: Box bounds of the fitted parameters (the fit clamps into them after every step).
BOUNDS = {
    "theta_E": (0.3, 3.0),
    "lens_e1": (-0.45, 0.45),
    "lens_e2": (-0.45, 0.45),
    "lens_x": (-0.5, 0.5),
    "lens_y": (-0.5, 0.5),
    "gamma1": (-0.3, 0.3),
    "gamma2": (-0.3, 0.3),
    "source_x": (-1.5, 1.5),
    "source_y": (-1.5, 1.5),
    "source_r_sersic": (0.03, 1.0),
    "source_n_sersic": (0.5, 4.0),
    "source_e1": (-0.45, 0.45),
    "source_e2": (-0.45, 0.45),
}


def _box() -> tuple[torch.Tensor, torch.Tensor]:
    """Lower ends and widths of the :data:`BOUNDS` boxes, in the order of PARAMS;
    the fits work in ``u = (p - low) / width``, which lies in [0, 1]."""
    low = torch.tensor([BOUNDS[p][0] for p in PARAMS], dtype=torch.float32)
    high = torch.tensor([BOUNDS[p][1] for p in PARAMS], dtype=torch.float32)
    return low, high - low


def _chi2_and_amp(
    model: torch.Tensor, data: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """chi^2 of ``data`` against ``A * model`` with the best amplitude ``A >= 0``."""
    amp = (
        (weight * model * data).sum((1, 2))
        / (weight * model**2).sum((1, 2)).clamp(min=1e-12)
    ).clamp(min=0)
    resid = data - amp[:, None, None] * model
    return (weight * resid**2).sum((1, 2)), amp


def fit_smooth_lens(
    renderer: SmoothLensRenderer,
    data: np.ndarray,
    variance: np.ndarray,
    starts: np.ndarray,
    *,
    steps: int = 150,
    lr: float = 0.01,
    polish: int = 0,
    batch_size: int = 256,
    search_renderer: SmoothLensRenderer | None = None,
) -> dict[str, np.ndarray]:
    """Best smooth-lens fit of each image from several starting points.

    ``data`` and ``variance`` are ``(N, H, W)``; ``starts`` is ``(N, K, 13)``
    (parameters in the order of :data:`PARAMS`). Adam on the parameters (each scaled
    by the width of its :data:`BOUNDS` box, ``steps`` steps with a cosine decay of the
    learning rate), the source amplitude solved linearly; then ``polish``
    Levenberg-Marquardt iterations (:func:`levenberg_marquardt`) from the best start
    of each image, which converge to the minimum far more precisely than Adam does.
    Returns ``chi2`` ``(N,)`` of the best start, its ``params`` ``(N, 13)``, ``amp``
    and the best ``model`` images ``(N, H, W)``.

    ``search_renderer``: the renderer of the Adam stage, when it should differ from
    ``renderer`` (coarse to fine: a renderer with fewer rays per pixel finds the basin
    several times faster, and the Levenberg-Marquardt polish then settles in it with
    ``renderer``). The best start of each image is chosen, and everything returned is
    computed, with ``renderer``.
    """
    n, k, d = starts.shape
    if search_renderer is not None and search_renderer.grid() != renderer.grid():
        raise ValueError(
            "search_renderer must draw the same images as renderer (pixels, pixel "
            f"scale and PSF), with another number of rays per pixel only: "
            f"{search_renderer.grid()} against {renderer.grid()}"
        )
    if d != len(PARAMS):
        raise ValueError(f"starts must be (N, K, {len(PARAMS)}), got {starts.shape}")
    if data.shape != variance.shape or len(data) != n:
        raise ValueError(
            f"data {data.shape}, variance {variance.shape} and starts {starts.shape} "
            "must describe the same images"
        )
    low, width = _box()
    out_chi2 = np.empty(n)
    out_params = np.empty((n, d))
    out_amp = np.empty(n)
    out_model = np.empty(data.shape, dtype=np.float32)
    per = max(1, batch_size // k)
    for start in range(0, n, per):
        sl = slice(start, min(n, start + per))
        m = sl.stop - sl.start
        dat = torch.as_tensor(data[sl], dtype=torch.float32).repeat_interleave(k, 0)
        wgt = 1.0 / torch.as_tensor(variance[sl], dtype=torch.float32)
        wgt = wgt.repeat_interleave(k, 0)
        p0 = torch.as_tensor(starts[sl].reshape(m * k, d), dtype=torch.float32)
        u = ((p0 - low) / width).clamp(0, 1).requires_grad_(True)
        opt = torch.optim.Adam([u], lr=lr)
        # cosine decay to lr/20: big steps to find the basin, small ones to settle in it
        decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr / 20)
        search = renderer if search_renderer is None else search_renderer
        for _ in range(steps):
            chi2, _ = _chi2_and_amp(search(low + width * u), dat, wgt)
            opt.zero_grad(set_to_none=True)
            chi2.sum().backward()
            opt.step()
            decay.step()
            with torch.no_grad():
                u.clamp_(0, 1)
        with torch.no_grad():
            p = low + width * u
            model = renderer(p)
            chi2, amp = _chi2_and_amp(model, dat, wgt)
            best = chi2.view(m, k).argmin(1)
            rows = torch.arange(m) * k + best
            out_chi2[sl] = chi2[rows].numpy()
            out_params[sl] = p[rows].numpy()
            out_amp[sl] = amp[rows].numpy()
            out_model[sl] = (amp[rows, None, None] * model[rows]).numpy()
    if polish > 0:
        per = max(1, batch_size // (len(PARAMS) + 1))
        for start in range(0, n, per):
            sl = slice(start, min(n, start + per))
            res = levenberg_marquardt(
                renderer, data[sl], variance[sl], out_params[sl], iterations=polish
            )
            better = res["chi2"] < out_chi2[sl]
            for key, out in (
                ("chi2", out_chi2),
                ("params", out_params),
                ("amp", out_amp),
                ("model", out_model),
            ):
                out[sl][better] = res[key][better]
    return {"chi2": out_chi2, "params": out_params, "amp": out_amp, "model": out_model}


def levenberg_marquardt(
    renderer: SmoothLensRenderer,
    data: np.ndarray,
    variance: np.ndarray,
    params: np.ndarray,
    *,
    iterations: int = 15,
    damping: float = 1e-3,
    step: float = 1e-3,
) -> dict[str, np.ndarray]:
    """Levenberg-Marquardt minimisation of chi^2 for a batch of images at once.

    Starts from ``params`` ``(N, 13)``; every iteration computes the Jacobian of the
    weighted residuals ``(d - A m_p) / sigma`` with respect to the 13 parameters (by
    forward differences of ``step`` times each :data:`BOUNDS` width, one batched render)
    and to the amplitude ``A``, solves ``(J^T J + lambda diag J^T J) delta = J^T r``
    and keeps the step where it lowers chi^2 (then ``lambda /= 3``, else
    ``lambda *= 3``), per image. Near the minimum this converges quadratically,
    where gradient descent crawls. Returns ``chi2``, ``params``, ``amp``, ``model``
    as :func:`fit_smooth_lens`.
    """
    low, width = _box()
    n, d = params.shape
    dat = torch.as_tensor(data, dtype=torch.float32)
    sw = 1.0 / torch.as_tensor(variance, dtype=torch.float32).sqrt()
    wgt = sw**2
    u = ((torch.as_tensor(params, dtype=torch.float32) - low) / width).clamp(0, 1)
    lam = torch.full((n,), float(damping))
    eye = torch.eye(d, dtype=torch.float32)
    with torch.no_grad():
        model = renderer(low + width * u)
        chi2, amp = _chi2_and_amp(model, dat, wgt)
        for _ in range(int(iterations)):
            # forward differences in every parameter at once: (n * d) renders
            # (a backward difference for a parameter at its upper bound)
            h = torch.where(u + step <= 1, step, -step)  # (n, d)
            up = (low + width * (u[:, None, :] + eye * h[:, :, None])).reshape(n * d, d)
            # a step in a source parameter leaves the deflection as it is: compute it
            # once per image for those, and afresh only for the lens parameters
            is_lens = (torch.arange(d) < renderer.n_lens_params).repeat(n)
            ax, ay = renderer.deflection(low + width * u)
            n_src = d - renderer.n_lens_params
            moved = model.new_empty((n * d, *model.shape[1:]))
            moved[is_lens] = renderer(up[is_lens])
            moved[~is_lens] = renderer.render(
                up[~is_lens],
                ax.repeat_interleave(n_src, 0),
                ay.repeat_interleave(n_src, 0),
            )
            moved = moved.view(n, d, *model.shape[1:])
            jac = amp[:, None, None, None] * (moved - model[:, None]) / h[..., None, None]
            cols = torch.cat([jac, model[:, None]], 1) * sw[:, None]  # d(A m)/d(u, A)
            cols = cols.reshape(n, d + 1, -1)
            resid = ((dat - amp[:, None, None] * model) * sw).reshape(n, -1)
            hess = cols @ cols.transpose(1, 2)
            grad = cols @ resid[..., None]
            diag = torch.diagonal(hess, dim1=1, dim2=2)
            damped = hess + lam[:, None, None] * torch.diag_embed(diag.clamp(min=1e-9))
            delta = torch.linalg.solve(damped + 1e-9 * torch.eye(d + 1), grad)[..., 0]
            u_new = (u + delta[:, :d]).clamp(0, 1)
            model_new = renderer(low + width * u_new)
            chi2_new, amp_new = _chi2_and_amp(model_new, dat, wgt)
            ok = chi2_new < chi2
            u = torch.where(ok[:, None], u_new, u)
            model = torch.where(ok[:, None, None], model_new, model)
            chi2 = torch.where(ok, chi2_new, chi2)
            amp = torch.where(ok, amp_new, amp)
            lam = torch.where(ok, lam / 3, lam * 3).clamp(1e-7, 1e7)
    return {
        "chi2": chi2.numpy().astype(np.float64),
        "params": (low + width * u).numpy().astype(np.float64),
        "amp": amp.numpy().astype(np.float64),
        "model": (amp[:, None, None] * model).numpy(),
    }


def coherent_score(
    residual: np.ndarray, arc: np.ndarray, *, smoothing: float = 1.5, grow: int = 2
) -> np.ndarray:
    """chi^2 excess of the smoothed residual over the arcs (the ``"coherent"`` score).

    ``residual`` ``(N, H, W)`` in noise sigmas is smoothed by a Gaussian of
    ``smoothing`` pixels (a matched filter for a residual that is coherent over a few
    pixels), squared, divided by the variance white noise has after the same filter
    (the kernel's sum of squares) and, minus 1, summed over the pixels of ``arc``
    ``(N, H, W)`` (boolean) grown by ``grow`` pixels. White noise scores 0 on average.
    """
    from scipy.ndimage import binary_dilation, gaussian_filter

    if not (np.isfinite(smoothing) and smoothing > 0):
        raise ValueError(f"smoothing must be > 0 pixels, got {smoothing!r}")
    sigma = (0, smoothing, smoothing)
    smoothed = gaussian_filter(np.asarray(residual, dtype=np.float64), sigma)
    side = 8 * math.ceil(smoothing) + 1
    delta = np.zeros((1, side, side))
    delta[0, side // 2, side // 2] = 1.0
    noise_var = float((gaussian_filter(delta, sigma) ** 2).sum())
    region = np.asarray(arc, dtype=bool)
    if grow:
        region = binary_dilation(region, np.ones((1, 3, 3), bool), iterations=int(grow))
    return ((smoothed**2 / noise_var - 1) * region).sum((1, 2))


def sky_variance(x: np.ndarray, border: int = 6) -> float:
    """Noise variance of the empty sky: robust (MAD) variance of the image borders."""
    img = x[:, 0] if x.ndim == 4 else x
    edge = np.concatenate(
        [
            img[:, :border].ravel(),
            img[:, -border:].ravel(),
            img[:, :, :border].ravel(),
            img[:, :, -border:].ravel(),
        ]
    )
    mad = np.median(np.abs(edge - np.median(edge)))
    return float((1.4826 * mad) ** 2)
