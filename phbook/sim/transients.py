"""Simulated candidates of a supernova survey: 21 x 21 difference-image stamps.

A transient survey subtracts a deep reference image from every new science image and
cuts a stamp around each significant residual: a *candidate*. Most candidates are
artifacts of the detector or of the subtraction, a few are real. This module simulates
both, in the spirit of the candidates of the CHASE survey that Huijse et al. encoded
with autoencoders:

real transients (``REAL_CLASSES``, label 1)
    ``"supernova"``: a new point source (the PSF), usually on a host galaxy;
    ``"variable_star"``: a star that brightened or faded (a positive or negative PSF on
    the star's noise); ``"asteroid"``: a moving object, a PSF trailed along its path.
artifacts (``ARTIFACT_CLASSES``, label 0)
    ``"dipole"``: a star or galaxy nucleus misaligned between science and reference
    (plus a small seeing and flux mismatch): a positive and a negative lobe;
    ``"hot_pixel"``: one or two pixels far above the noise, sharper than any PSF;
    ``"cosmic_ray"``: a sharp track or blob in the science exposure;
    ``"ccd_defect"``: a bad column or row segment, raised or lowered;
    ``"saturated_star"``: a bright star clipped at the saturation level with charge
    bleeding along its column, badly subtracted.

**Which class is the anomaly.** In the CHASE protocol the unsupervised models are
trained on *all* candidates, which are mostly artifacts, and the task is to find the
real transients. So here the artifacts are the normal classes and the real transients
the anomalies: ``SimulatedSet.labels`` is 1 for a real transient, and
``SimulatedSet.report_classes`` renames every artifact ``"normal"`` for
:func:`phbook.metrics.per_class_report`.

How a stamp is made (all in electrons): the science image is Poisson(sky + scene) plus
Gaussian read noise; the reference is a co-add of ``K`` exposures of the static scene
(noise smaller by sqrt(K)); saturation clips the science image at the full well, with
charge bleeding along the column, and the reference (a stack of short exposures) at K
times that; the stamp is science minus reference, so the sky cancels and its noise
remains. Detector artifacts (hot pixels, cosmic rays, defects) are added to the science
exposure and not blurred by the PSF (a Moffat profile, FWHM 2-4 pixels, beta 2.5). The
amplitude of every feature is set by a signal-to-noise ratio (``snr`` in ``params``)
rather than a magnitude, so the set covers the detection range of a survey whatever
its depth.

With ``scaled=True`` (the default) each stamp is then mapped to [-1, 1] by
:func:`scale_stamps`, as Huijse et al. did for their 19 million candidates.

Usage (all candidates for training, a small labelled set of real transients)::

    from phbook.sim import transients
    candidates = transients.load_or_simulate(50000, seed=1)  # 20% real
    reals = transients.load_or_simulate(
        200, seed=2, fractions=dict.fromkeys(transients.REAL_CLASSES, 1)
    )
    candidates.labels  # 1 = real transient (the anomaly), 0 = artifact
    candidates.report_classes  # artifacts renamed "normal" for per_class_report
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from . import dataset as _ds
from .dataset import SimulatedSet
from .profiles import bin_pixels, moffat, pixel_grid, saturate

__all__ = [
    "REAL_CLASSES",
    "ARTIFACT_CLASSES",
    "CLASSES",
    "NORMAL_CLASSES",
    "DEFAULT_FRACTIONS",
    "DEFAULT_SETTINGS",
    "simulate",
    "load_or_simulate",
    "scale_stamps",
    "moffat",
]

REAL_CLASSES = ("supernova", "variable_star", "asteroid")
ARTIFACT_CLASSES = ("dipole", "hot_pixel", "cosmic_ray", "ccd_defect", "saturated_star")
CLASSES = REAL_CLASSES + ARTIFACT_CLASSES
#: The artifacts are "normal": what the unsupervised models mostly see.
NORMAL_CLASSES = ARTIFACT_CLASSES

#: Default mix: 80% artifacts, 20% real transients (real surveys have far fewer reals;
#: pass ``fractions`` to change it).
DEFAULT_FRACTIONS = {
    "dipole": 0.30,
    "hot_pixel": 0.12,
    "cosmic_ray": 0.15,
    "ccd_defect": 0.10,
    "saturated_star": 0.13,
    "supernova": 0.10,
    "variable_star": 0.05,
    "asteroid": 0.05,
}

DEFAULT_SETTINGS: dict[str, Any] = {
    "sky_range": (300.0, 3000.0),  # e- per pixel in the science exposure
    "read_noise": 8.0,  # e- per exposure
    "ref_depth_range": (4.0, 12.0),  # K: reference = co-add of K exposures
    "fwhm_range": (2.0, 4.0),  # pixels, Moffat FWHM of the seeing
    "moffat_beta": 2.5,
    "saturation": 60000.0,  # e-, full well
    "center_jitter": 0.5,  # pixels: candidates are centred on their detection
    "real_snr_range": (5.0, 80.0),  # log-uniform, PSF-fit SNR of the new flux
    "host_probability": 0.7,  # supernovae on a visible host galaxy
    "host_snr_range": (20.0, 300.0),  # total SNR of the host in the science image
    "host_scale_range": (1.5, 5.0),  # pixels, exponential scale length
    "host_offset_range": (0.5, 5.0),  # pixels from the supernova
    "star_snr_range": (30.0, 1000.0),  # static stars (variable stars, dipoles)
    "trail_length_range": (2.0, 8.0),  # pixels an asteroid moves in one exposure
    "dipole_shift_range": (0.2, 1.2),  # pixels of misregistration
    "dipole_fwhm_mismatch": 0.3,  # pixels, +- uniform
    "dipole_flux_mismatch": 0.1,  # fractional, +- uniform
    "artifact_snr_range": (8.0, 200.0),  # log-uniform, peak / noise sigma
    "cosmic_length_range": (1.0, 12.0),  # pixels
    "cosmic_width_range": (0.3, 0.8),  # pixels (Gaussian sigma of the track)
    "saturated_peak_range": (2.0, 30.0),  # peak / saturation level before clipping
}

UNITS = {
    "images": "scaled to [-1, 1] per stamp (scaled=True) or e- (scaled=False)",
    "x0": "pixel (column) of the main feature, 0 = first pixel",
    "y0": "pixel (row)",
    "fwhm": "pixels",
    "sky": "e- per pixel",
    "ref_depth": "exposures co-added in the reference",
    "noise_sigma": "e-, standard deviation of an empty difference pixel",
    "snr": "signal-to-noise ratio of the main feature (PSF-fit for PSF-like ones)",
    "flux": "e- (new flux of a transient, flux of a static source)",
    "host_flux": "e-",
    "trail_length": "pixels",
    "trail_angle": "rad",
    "shift": "pixels of misregistration",
    "saturated_pixels": "science pixels clipped at saturation",
}

_STREAM_PLAN, _STREAM_PARAMS, _STREAM_NOISE = 21, 22, 23
_SUPERSAMPLE = 3


# ----------------------------------------------------------------------- profiles


def _psf_stamps(size, x0, y0, fwhm, beta, flux):
    """(N, size, size) pixel-integrated Moffat stamps, one per row of the arguments."""
    xs, ys = pixel_grid(size, _SUPERSAMPLE)
    a = [np.asarray(v, dtype=float)[:, None, None] for v in (x0, y0, fwhm, flux)]
    return bin_pixels(
        moffat(xs[None], ys[None], a[0], a[1], a[2], beta, a[3]), _SUPERSAMPLE
    )


def _exponential_stamps(size, x0, y0, scale, q, phi, flux):
    """(N, size, size) exponential discs (host galaxies) of total ``flux``."""
    xs, ys = pixel_grid(size, _SUPERSAMPLE)
    x0, y0, scale, q, phi, flux = (
        np.asarray(v, dtype=float)[:, None, None] for v in (x0, y0, scale, q, phi, flux)
    )
    dx, dy = xs[None] - x0, ys[None] - y0
    u = dx * np.cos(phi) + dy * np.sin(phi)
    v = -dx * np.sin(phi) + dy * np.cos(phi)
    r = np.sqrt(u**2 + (v / q) ** 2)
    img = flux / (2 * np.pi * scale**2 * q) * np.exp(-r / scale)
    return bin_pixels(img, _SUPERSAMPLE)


def scale_stamps(x: ArrayLike) -> np.ndarray:
    """Each stamp minus its median, divided by its largest absolute value: in [-1, 1].

    The normalisation Huijse et al. applied to CHASE candidates: it removes the
    brightness of a candidate and keeps its shape. A constant stamp maps to zeros.
    Accepts (N, H, W) or (H, W); returns float32 of the same shape.
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim not in (2, 3):
        raise ValueError(f"x must be stamps of shape (N, H, W) or (H, W), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("x holds NaN or infinite values")
    flat = arr.reshape(-1, arr.shape[-2] * arr.shape[-1])
    centred = flat - np.median(flat, axis=1, keepdims=True)
    peak = np.abs(centred).max(axis=1, keepdims=True)
    out = np.divide(centred, peak, out=np.zeros_like(centred), where=peak > 0)
    return out.reshape(arr.shape).astype(np.float32)


# -------------------------------------------------------------------- parameters


def _log_uniform(rng, low_high, size):
    low, high = low_high
    return np.exp(rng.uniform(np.log(low), np.log(high), size))


def _plan(classes, seed, s, size):
    """The random parameters of every candidate (vectorised; unused ones are NaN)."""
    n = len(classes)
    rng = _ds.rng_for(seed, _STREAM_PARAMS)
    c = (size - 1) / 2.0
    j = s["center_jitter"]
    p = pd.DataFrame(
        {
            "real": np.isin(classes, REAL_CLASSES),
            "x0": c + rng.uniform(-j, j, n),
            "y0": c + rng.uniform(-j, j, n),
            "fwhm": rng.uniform(*s["fwhm_range"], n),
            "sky": _log_uniform(rng, s["sky_range"], n),
            "ref_depth": rng.uniform(*s["ref_depth_range"], n),
        }
    )
    # empty-pixel noise of the difference: science plus reference (1/K of it)
    var = (p["sky"] + s["read_noise"] ** 2) * (1.0 + 1.0 / p["ref_depth"])
    p["noise_sigma"] = np.sqrt(var)
    # sum of the squared PSF (for the PSF-fit SNR): ~ 1/(4 pi sigma_eff^2)
    alpha = p["fwhm"] / (2.0 * np.sqrt(2.0 ** (1.0 / s["moffat_beta"]) - 1.0))
    beta = s["moffat_beta"]
    psf_norm2 = (beta - 1.0) ** 2 / (np.pi * alpha**2 * (2 * beta - 1.0))
    p["snr"] = np.where(
        p["real"],
        _log_uniform(rng, s["real_snr_range"], n),
        _log_uniform(rng, s["artifact_snr_range"], n),
    )
    # new flux of a real point source with that PSF-fit SNR (background limited);
    # artifacts: the flux of the static source (dipoles, saturated stars), else 0
    p["flux"] = np.where(p["real"], p["snr"] * p["noise_sigma"] / np.sqrt(psf_norm2), 0.0)
    p["sign"] = 1.0
    fading = (classes == "variable_star") & (rng.uniform(size=n) < 0.4)
    p.loc[fading, "sign"] = -1.0
    host = (classes == "supernova") & (rng.uniform(size=n) < s["host_probability"])
    off = rng.uniform(*s["host_offset_range"], n)
    ang = rng.uniform(0, 2 * np.pi, n)
    p["host_x"] = p["x0"] + off * np.cos(ang)
    p["host_y"] = p["y0"] + off * np.sin(ang)
    p["host_scale"] = rng.uniform(*s["host_scale_range"], n)
    p["host_q"] = rng.uniform(0.4, 1.0, n)
    p["host_phi"] = rng.uniform(0, np.pi, n)
    # an exponential disc of flux F has the optimal SNR F / (sigma sqrt(8 pi q) h)
    host_snr = _log_uniform(rng, s["host_snr_range"], n)
    host_flux = host_snr * p["noise_sigma"] * np.sqrt(8 * np.pi * p["host_q"])
    p["host_flux"] = np.where(host, host_flux * p["host_scale"], 0.0)
    p["star_flux"] = np.where(
        np.isin(classes, ["variable_star", "dipole"]),
        _log_uniform(rng, s["star_snr_range"], n) * p["noise_sigma"] / np.sqrt(psf_norm2),
        0.0,
    )
    p.loc[classes == "dipole", "flux"] = p.loc[classes == "dipole", "star_flux"]
    p["trail_length"] = np.where(
        classes == "asteroid", rng.uniform(*s["trail_length_range"], n), 0.0
    )
    p["trail_angle"] = rng.uniform(0, np.pi, n)
    shift = rng.uniform(*s["dipole_shift_range"], n)
    p["shift"] = np.where(classes == "dipole", shift, 0.0)
    p["shift_angle"] = rng.uniform(0, 2 * np.pi, n)
    m = s["dipole_fwhm_mismatch"]
    p["fwhm_mismatch"] = np.where(classes == "dipole", rng.uniform(-m, m, n), 0.0)
    m = s["dipole_flux_mismatch"]
    p["flux_mismatch"] = np.where(classes == "dipole", rng.uniform(-m, m, n), 0.0)
    p["galaxy_nucleus"] = (classes == "dipole") & (rng.uniform(size=n) < 0.4)
    p["cosmic_length"] = rng.uniform(*s["cosmic_length_range"], n)
    p["cosmic_width"] = rng.uniform(*s["cosmic_width_range"], n)
    p["defect_axis"] = rng.integers(0, 2, n)  # 0: column, 1: row
    p["defect_start"] = rng.integers(0, size // 2, n)
    p["defect_stop"] = rng.integers(size // 2 + 1, size + 1, n)
    p["defect_width"] = rng.integers(1, 3, n)
    p["defect_sign"] = np.where(rng.uniform(size=n) < 0.7, 1.0, -1.0)
    p["hot_pixels"] = rng.integers(1, 3, n)
    p["saturated_peak"] = rng.uniform(*s["saturated_peak_range"], n)
    return p


# ----------------------------------------------------------------------- render


def _render_chunk(task: dict) -> dict:
    """Difference-image stamps of one chunk of candidates."""
    s, size, p = task["settings"], task["size"], task["params"]
    classes = p["cls"].to_numpy()
    n = len(p)
    beta = s["moffat_beta"]
    sci = np.zeros((n, size, size))
    ref = np.zeros((n, size, size))
    det = np.zeros((n, size, size))  # detector artifacts of the science exposure
    col = lambda name: p[name].to_numpy()  # noqa: E731

    def rows(name):
        return np.flatnonzero(classes == name)

    # supernovae: host in both images, new point source in the science image
    k = rows("supernova")
    if len(k):
        host = _exponential_stamps(
            size,
            *(col(c)[k] for c in ("host_x", "host_y", "host_scale", "host_q")),
            col("host_phi")[k],
            col("host_flux")[k],
        )
        sci[k] += host + _psf_stamps(
            size, col("x0")[k], col("y0")[k], col("fwhm")[k], beta, col("flux")[k]
        )
        ref[k] += host
    # variable stars: a star in both, brighter or fainter in the science image
    k = rows("variable_star")
    if len(k):
        star = _psf_stamps(
            size, col("x0")[k], col("y0")[k], col("fwhm")[k], beta, col("star_flux")[k]
        )
        change = col("sign")[k] * col("flux")[k]
        # a fading star cannot lose more than its flux
        change = np.maximum(change, -0.9 * col("star_flux")[k])
        ratio = (col("star_flux")[k] + change) / col("star_flux")[k]
        sci[k] += star * ratio[:, None, None]
        ref[k] += star
    # asteroids: a PSF trailed along the path, in the science image only
    k = rows("asteroid")
    if len(k):
        steps = 15
        t = (np.arange(steps) + 0.5) / steps - 0.5
        length, angle = col("trail_length")[k], col("trail_angle")[k]
        xs = col("x0")[k][:, None] + t[None] * length[:, None] * np.cos(angle)[:, None]
        ys = col("y0")[k][:, None] + t[None] * length[:, None] * np.sin(angle)[:, None]
        trail = _psf_stamps(
            size,
            xs.ravel(),
            ys.ravel(),
            np.repeat(col("fwhm")[k], steps),
            beta,
            np.repeat(col("flux")[k] / steps, steps),
        )
        sci[k] += trail.reshape(len(k), steps, size, size).sum(axis=1)
    # dipoles: a static source misaligned (and slightly mismatched) in the reference
    k = rows("dipole")
    if len(k):
        x0, y0, fwhm, flux = (
            col("x0")[k],
            col("y0")[k],
            col("fwhm")[k],
            col("star_flux")[k],
        )
        dx = col("shift")[k] * np.cos(col("shift_angle")[k])
        dy = col("shift")[k] * np.sin(col("shift_angle")[k])
        nucleus = col("galaxy_nucleus")[k].astype(bool)
        body = np.zeros((len(k), size, size))
        if nucleus.any():
            kk = np.flatnonzero(nucleus)
            body[kk] = _exponential_stamps(
                size,
                x0[kk],
                y0[kk],
                np.full(len(kk), 2.5),
                np.full(len(kk), 0.7),
                col("host_phi")[k][kk],
                2.0 * flux[kk],
            )
        sci[k] += _psf_stamps(size, x0, y0, fwhm, beta, flux) + body
        ref_body = np.zeros_like(body)
        if nucleus.any():
            ref_body[kk] = _exponential_stamps(
                size,
                x0[kk] + dx[kk],
                y0[kk] + dy[kk],
                np.full(len(kk), 2.5),
                np.full(len(kk), 0.7),
                col("host_phi")[k][kk],
                2.0 * flux[kk],
            )
        ref[k] += (
            _psf_stamps(
                size,
                x0 + dx,
                y0 + dy,
                np.maximum(fwhm + col("fwhm_mismatch")[k], 1.0),
                beta,
                flux * (1.0 + col("flux_mismatch")[k]),
            )
            + ref_body
        )
    # saturated stars: far above full well in both images, slightly misaligned
    k = rows("saturated_star")
    if len(k):
        x0, y0, fwhm = col("x0")[k], col("y0")[k], col("fwhm")[k]
        peak = _psf_stamps(size, x0, y0, fwhm, beta, np.ones(len(k))).max(axis=(1, 2))
        flux = col("saturated_peak")[k] * s["saturation"] / peak
        dx = 0.3 * np.cos(col("shift_angle")[k])
        dy = 0.3 * np.sin(col("shift_angle")[k])
        sci[k] += _psf_stamps(size, x0, y0, fwhm, beta, flux)
        ref[k] += _psf_stamps(size, x0 + dx, y0 + dy, fwhm * 0.95, beta, flux)
        p.loc[p.index[k], "flux"] = flux
    # detector artifacts, in units of the noise sigma
    amp = col("snr") * col("noise_sigma")
    k = rows("hot_pixel")
    for i in k:
        yi, xi = int(round(col("y0")[i])), int(round(col("x0")[i]))
        det[i, yi, xi] += amp[i]
        if col("hot_pixels")[i] == 2:
            det[i, yi, min(xi + 1, size - 1)] += 0.5 * amp[i]
    k = rows("cosmic_ray")
    if len(k):
        xs, ys = pixel_grid(size, _SUPERSAMPLE)
        x0, y0 = col("x0")[k][:, None, None], col("y0")[k][:, None, None]
        ang = col("trail_angle")[k][:, None, None]
        half = col("cosmic_length")[k][:, None, None] / 2
        width = col("cosmic_width")[k][:, None, None]
        u = (xs[None] - x0) * np.cos(ang) + (ys[None] - y0) * np.sin(ang)
        v = -(xs[None] - x0) * np.sin(ang) + (ys[None] - y0) * np.cos(ang)
        along = np.clip(np.abs(u) - half, 0, None)
        track = np.exp(-(v**2 + along**2) / (2 * width**2))
        det[k] += (
            bin_pixels(track, _SUPERSAMPLE)
            / bin_pixels(track, _SUPERSAMPLE).max(axis=(1, 2), keepdims=True)
            * amp[k][:, None, None]
        )
    k = rows("ccd_defect")
    for i in k:
        a, b = col("defect_start")[i], col("defect_stop")[i]
        c0 = int(round(col("x0")[i] if col("defect_axis")[i] == 0 else col("y0")[i]))
        w = col("defect_width")[i]
        value = col("defect_sign")[i] * amp[i]
        if col("defect_axis")[i] == 0:
            det[i, a:b, c0 : c0 + w] += value
        else:
            det[i, c0 : c0 + w, a:b] += value

    sky = col("sky")[:, None, None]
    depth = col("ref_depth")[:, None, None]
    rn = s["read_noise"]
    full = s["saturation"]
    if task["noise"]:
        rng = _ds.rng_for(task["seed"], _STREAM_NOISE, task["chunk"])
        sci_img = rng.poisson(sky + sci) + rng.normal(0.0, rn, sci.shape)
        ref_img = (
            rng.poisson(depth * (sky + ref))
            + rng.normal(0.0, rn * np.sqrt(depth), ref.shape)
        ) / depth
    else:
        sci_img, ref_img = sky + sci, sky + ref
    sci_img, bled_sci = saturate(sci_img, np.full(n, full))
    # the reference stacks K exposures each 1/K as long: it saturates K times higher
    ref_img, _ = saturate(ref_img, full * col("ref_depth"))
    stamps = sci_img - ref_img + det
    return {
        "images": stamps.astype(np.float32),
        "saturated_pixels": bled_sci,
        "flux": p["flux"].to_numpy(),
    }


# -------------------------------------------------------------------------- API


def _check(n, seed, fractions, size):
    seed = _ds.check_seed(seed)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 11:
        raise ValueError(f"size must be an odd integer >= 11, got {size!r}")
    if size % 2 == 0:
        raise ValueError(f"size must be an odd integer >= 11, got {size}")
    fractions = dict(fractions) if fractions is not None else dict(DEFAULT_FRACTIONS)
    return seed, fractions


def simulate(
    n: int,
    *,
    seed: int = 0,
    fractions: Mapping[str, float] | None = None,
    size: int = 21,
    scaled: bool = True,
    noise: bool = True,
    settings: Mapping[str, Any] | None = None,
    workers: int | None = 1,
    progress: bool | None = None,
) -> SimulatedSet:
    """Simulate ``n`` difference-image candidates (real transients and artifacts).

    Parameters
    ----------
    n
        Number of candidates.
    seed
        Seed of every random number (the set does not depend on ``workers``).
    fractions
        Relative weights of the classes (:data:`CLASSES`); default
        :data:`DEFAULT_FRACTIONS` (20% real). E.g. ``{"supernova": 1}`` for a small
        labelled set of real transients.
    size
        Stamp side in pixels (odd; 21 as for CHASE).
    scaled
        Map each stamp to [-1, 1] with :func:`scale_stamps` (``False``: electrons).
    noise
        ``False`` gives the expected (noiseless) difference, for figures and tests.
    settings
        Overrides of :data:`DEFAULT_SETTINGS`.
    workers
        Processes (default 1: the stamps are vectorised and fast).
    progress
        Show a progress bar (default: :func:`phbook.config.show_progress`).

    Returns
    -------
    SimulatedSet
        ``images`` float32 (n, size, size); ``classes`` the sub-class names;
        ``labels`` 1 for real transients (the anomalies), 0 for artifacts;
        ``params`` with ``real``, the positions, seeing, sky, ``snr`` and the parameters
        of each kind of feature (0 or meaningless where they do not apply, see
        ``meta["units"]``).
    """
    seed, fractions = _check(n, seed, fractions, size)
    s = _ds.resolve_settings(DEFAULT_SETTINGS, settings)
    classes = _ds.class_plan(n, fractions, CLASSES, _ds.rng_for(seed, _STREAM_PLAN))
    params = _plan(classes, seed, s, size)
    params.insert(0, "cls", classes)
    tasks, sizes = [], []
    for chunk, sl in enumerate(_ds.chunk_slices(n)):
        part = params.iloc[sl].copy()
        tasks.append(
            {
                "settings": s,
                "size": int(size),
                "params": part,
                "noise": bool(noise),
                "seed": seed,
                "chunk": chunk,
            }
        )
        sizes.append(len(part))
    results = _ds.run_chunks(
        _render_chunk,
        tasks,
        workers=workers,
        desc="transient stamps",
        sizes=sizes,
        progress=progress,
    )
    images = np.concatenate([r["images"] for r in results])
    params["flux"] = np.concatenate([r["flux"] for r in results])
    params["saturated_pixels"] = np.concatenate([r["saturated_pixels"] for r in results])
    if scaled:
        images = scale_stamps(images)
    params = params.drop(columns=["cls"])
    params["kind"] = np.where(params["real"], "real", "artifact")
    meta = {
        "simulator": "transients",
        "seed": seed,
        "n": n,
        "fractions": fractions,
        "size": int(size),
        "scaled": bool(scaled),
        "noise": bool(noise),
        "settings": s,
        "units": UNITS,
        "normal_classes": list(NORMAL_CLASSES),
        "anomaly": "real transients (label 1); artifacts are the normal classes",
        "note": "simulated difference-image stamps; see phbook.sim.transients",
    }
    return SimulatedSet(images, classes, params, meta, {}, NORMAL_CLASSES)


def load_or_simulate(
    n: int,
    *,
    seed: int = 0,
    fractions: Mapping[str, float] | None = None,
    size: int = 21,
    scaled: bool = True,
    noise: bool = True,
    settings: Mapping[str, Any] | None = None,
    workers: int | None = 1,
    progress: bool | None = None,
    refresh: bool = False,
) -> SimulatedSet:
    """:func:`simulate`, cached in HDF5 under :func:`phbook.config.data_dir`."""
    seed, fractions = _check(n, seed, fractions, size)
    s = _ds.resolve_settings(DEFAULT_SETTINGS, settings)
    description = {
        "n": int(n),
        "seed": seed,
        "fractions": fractions,
        "size": int(size),
        "scaled": bool(scaled),
        "noise": bool(noise),
        "settings": s,
    }
    kwargs = dict(description, workers=workers, progress=progress)
    return _ds.load_or_simulate(
        "transients", simulate, description, kwargs, refresh=refresh
    )
