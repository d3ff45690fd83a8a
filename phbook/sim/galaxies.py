"""Simulated galaxy stamps of a wide imaging survey, with mergers and pipeline errors.

Ordinary galaxies are elliptical Sersic profiles with a range of indices, sizes,
ellipticities and brightnesses, sometimes with a faint unrelated neighbour, seen through
a Moffat PSF with sky, Poisson and read noise. The anomaly classes are of the two kinds
that an anomaly search of real survey images turns up, such as the WGAN search of
Hyper Suprime-Cam galaxies by Storey-Fisher et al. :cite:`storeyfisher2021anomaly`:
astrophysical ones (galaxy mergers and tidal features are among the anomalies they
report) and problems of the imaging pipeline (bright stars, masks, saturation, image
edges), which earn large anomaly scores without being interesting.

``"normal"``
    one Sersic galaxy (n 0.6-6), with a probability of 0.3 a faint neighbour.
mergers (``MERGER_CLASSES``)
    ``"merger_pre"``: a close pair (flux ratio 1:1 to 1:4, 1.2-2.5" apart) with faint
    tidal tails starting; ``"merger"``: two nuclei inside a common, asymmetric envelope
    with two long tidal tails (15-30% of the light); ``"merger_post"``: a single
    spheroidal remnant with shells on alternating sides and sometimes a plume.
pipeline errors (``PIPELINE_CLASSES``)
    ``"bright_star"``: a bright saturated star nearby (halo, diffraction spikes, bleed
    trail); ``"masked"``: pixels set to zero by a mask (a rectangle, or a stripe such as
    a satellite-trail mask); ``"saturated"``: a saturated point-like nucleus, clipped
    with charge bleeding along its column; ``"edge_cut"``: the galaxy at the edge of
    the survey footprint or of a detector, the pixels beyond it zero.

**Stamp size.** 48 x 48 pixels of 0.168" (the Hyper Suprime-Cam pixel), i.e. 8.1".
That holds a galaxy of effective radius up to 1.5" with its companion and tidal
features out to about 3 effective radii; 32 x 32 (5.4") would cut the tails and pairs
off, and 64 x 64 costs 1.8 times the CPU time per image for little more signal. It fits
a CPU book; ``size`` changes it.

**Instrument.** HSC-like pixel scale and seeing (Moffat, FWHM 0.5-0.8", beta 3) with
sky 20.5 mag/arcsec^2 and a zero point of 35.0 (the AB magnitude that gives 1 electron
in the co-added exposure): a 5-sigma point-source depth of about 26 mag, like a wide
ground-based survey. Images are in electrons per pixel with the mean sky subtracted;
``params["noise_sigma"]`` is the sky noise of each image, for scaling.

Usage::

    from phbook.sim import galaxies
    data = galaxies.load_or_simulate(20000, seed=1)  # 80% normal
    x = data.images / data.params["noise_sigma"].to_numpy()[:, None, None]
    data.params["group"]  # "normal", "merger" or "pipeline"
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from . import dataset as _ds
from .dataset import SimulatedSet
from .profiles import bin_pixels, moffat, pixel_grid, saturate, sersic

__all__ = [
    "CLASSES",
    "NORMAL_CLASSES",
    "POST_PROCESSED",
    "MERGER_CLASSES",
    "PIPELINE_CLASSES",
    "DEFAULT_FRACTIONS",
    "DEFAULT_SETTINGS",
    "simulate",
    "load_or_simulate",
]

NORMAL_CLASSES = ("normal",)
MERGER_CLASSES = ("merger_pre", "merger", "merger_post")
PIPELINE_CLASSES = ("bright_star", "masked", "saturated", "edge_cut")
CLASSES = NORMAL_CLASSES + MERGER_CLASSES + PIPELINE_CLASSES
GROUPS = {
    "normal": "normal",
    **dict.fromkeys(MERGER_CLASSES, "merger"),
    **dict.fromkeys(PIPELINE_CLASSES, "pipeline"),
}

#: Default mix: 80% ordinary galaxies, 12% mergers, 8% pipeline errors.
DEFAULT_FRACTIONS = {
    "normal": 0.80,
    "merger_pre": 0.04,
    "merger": 0.04,
    "merger_post": 0.04,
    "bright_star": 0.02,
    "masked": 0.02,
    "saturated": 0.02,
    "edge_cut": 0.02,
}

DEFAULT_SETTINGS: dict[str, Any] = {
    "pixel_scale": 0.168,  # arcsec per pixel (Hyper Suprime-Cam)
    "fwhm_range": (0.5, 0.8),  # arcsec, Moffat seeing
    "moffat_beta": 3.0,
    "sky_brightness": 20.5,  # AB mag / arcsec^2 (i band, dark)
    "zero_point": 35.0,  # AB magnitude of 1 e- in the co-added exposure
    "read_noise": 10.0,  # e- (co-added)
    "saturation": 5e5,  # e-, full well of the co-add (sky is ~1.8e4)
    "mag_range": (18.5, 22.0),  # AB magnitude of the main galaxy
    "r_e_range": (0.3, 1.5),  # arcsec, log-uniform
    "n_range": (0.6, 6.0),  # Sersic index, log-uniform
    "q_range": (0.3, 1.0),
    "center_jitter": 1.0,  # pixels
    "neighbour_probability": 0.3,  # a faint unrelated galaxy in "normal" stamps
    "neighbour_dmag_range": (1.5, 4.0),
    "neighbour_sep_range": (2.6, 3.8),  # arcsec
    "pair_dmag_range": (0.0, 1.5),  # merger_pre: flux ratio 1:1 to 1:4
    "pair_sep_range": (1.2, 2.5),  # arcsec
    "nuclei_sep_range": (0.25, 0.9),  # arcsec, merger
    "tail_fraction_pre": (0.03, 0.08),  # of the total light, merger_pre
    "tail_fraction_merger": (0.15, 0.30),
    "shell_fraction": (0.05, 0.12),  # merger_post
    "star_mag_range": (13.0, 16.5),  # bright_star
    "star_sep_range": (2.0, 5.5),  # arcsec from the galaxy
    "nucleus_peak_range": (1.5, 10.0),  # saturated: peak / full well
    "mask_area_range": (0.05, 0.25),  # masked: fraction of the stamp
    "edge_cut_range": (0.1, 0.5),  # edge_cut: fraction of the stamp without data
    # post-processing of the light like a radiative-transfer code's (off by default,
    # on in POST_PROCESSED): dust lanes that absorb light along the major axis, and
    # star-forming clumps that take light from the smooth profile
    "dust_lane_probability": 0.0,
    "dust_tau_range": (1.0, 2.5),  # central optical depth of a lane
    "dust_width": 0.25,  # arcsec, Gaussian half-width of a lane
    "clump_probability": 0.0,
    "clump_fraction_range": (0.08, 0.2),  # of the main galaxy's light
    "clump_sigma": 0.08,  # arcsec, Gaussian width of a clump
}

#: Settings of the post-processed simulator: most galaxies get a dust lane and
#: clumps, like the radiative-transfer images of a cosmological simulation (the
#: galaxy lecture's Illustris/TNG with dust) against its stellar light alone.
POST_PROCESSED: dict[str, Any] = {"dust_lane_probability": 0.7, "clump_probability": 0.7}

UNITS = {
    "images": "e- per pixel, sky subtracted",
    "x0": "pixel (column) of the main galaxy",
    "y0": "pixel (row)",
    "mag": "AB mag of the main galaxy (both galaxies of a pair: see companion_mag)",
    "r_e": "arcsec, Sersic effective radius (major axis)",
    "n": "Sersic index",
    "q": "axis ratio",
    "phi": "rad, position angle from the x axis",
    "fwhm": "arcsec, seeing",
    "noise_sigma": "e-, sky + read noise of one pixel",
    "companion_mag": "AB mag (neighbour, pair or second nucleus; 0 = none)",
    "companion_sep": "arcsec",
    "feature_fraction": "fraction of the light in tidal tails or shells",
    "star_mag": "AB mag of the bright star",
    "saturated_pixels": "pixels clipped at the full well",
    "blank_fraction": "fraction of the stamp set to zero (masks, edges)",
    "dust_tau": "central optical depth of a dust lane (0 = none)",
    "dust_offset": "arcsec, offset of the lane from the centre along the minor axis",
    "clump_fraction": "fraction of the main galaxy's light in clumps (0 = none)",
}

_STREAM_PLAN, _STREAM_PARAMS, _STREAM_NOISE, _STREAM_POST = 31, 32, 33, 34
_SUP = 2


def _log_uniform(rng, low_high, size):
    low, high = low_high
    return np.exp(rng.uniform(np.log(low), np.log(high), size))


def _plan(classes, seed, s, size):
    """Every random parameter, vectorised; parameters a class does not use are 0."""
    n = len(classes)
    rng = _ds.rng_for(seed, _STREAM_PARAMS)
    ps = s["pixel_scale"]
    c = (size - 1) / 2.0
    is_ = {name: classes == name for name in CLASSES}
    p = pd.DataFrame({"group": [GROUPS[k] for k in classes]})
    j = s["center_jitter"]
    p["x0"] = c + rng.uniform(-j, j, n)
    p["y0"] = c + rng.uniform(-j, j, n)
    p["mag"] = rng.uniform(*s["mag_range"], n)
    p["r_e"] = _log_uniform(rng, s["r_e_range"], n)
    p["n"] = _log_uniform(rng, s["n_range"], n)
    p["q"] = rng.uniform(*s["q_range"], n)
    p["phi"] = rng.uniform(0, np.pi, n)
    p["fwhm"] = rng.uniform(*s["fwhm_range"], n)
    sky = 10 ** (-0.4 * (s["sky_brightness"] - s["zero_point"])) * ps**2
    p["sky"] = sky
    p["noise_sigma"] = np.sqrt(sky + s["read_noise"] ** 2)
    # post-merger remnants are spheroids; merging nuclei are moderately concentrated
    post = is_["merger_post"]
    p.loc[post, "n"] = rng.uniform(3.0, 5.5, post.sum())
    p.loc[post, "q"] = rng.uniform(0.6, 1.0, post.sum())
    p.loc[post, "r_e"] = _log_uniform(rng, (0.5, 1.3), post.sum())
    pair = is_["merger_pre"] | is_["merger"]
    p.loc[pair, "n"] = rng.uniform(0.8, 3.0, pair.sum())

    # second galaxy: neighbour (normal), pair (merger_pre), second nucleus (merger)
    neighbour = is_["normal"] & (rng.uniform(size=n) < s["neighbour_probability"])
    dmag = np.select(
        [neighbour, is_["merger_pre"], is_["merger"]],
        [
            rng.uniform(*s["neighbour_dmag_range"], n),
            rng.uniform(*s["pair_dmag_range"], n),
            rng.uniform(0.0, 1.0, n),
        ],
        np.nan,
    )
    sep = np.select(
        [neighbour, is_["merger_pre"], is_["merger"]],
        [
            rng.uniform(*s["neighbour_sep_range"], n),
            rng.uniform(*s["pair_sep_range"], n),
            rng.uniform(*s["nuclei_sep_range"], n),
        ],
        0.0,
    )
    has_comp = ~np.isnan(dmag)
    p["companion_mag"] = np.where(has_comp, p["mag"] + np.nan_to_num(dmag), 0.0)
    p["companion_sep"] = sep
    ang = rng.uniform(0, 2 * np.pi, n)
    p["companion_x"] = p["x0"] + sep / ps * np.cos(ang)
    p["companion_y"] = p["y0"] + sep / ps * np.sin(ang)
    p["companion_r_e"] = np.where(
        neighbour, rng.uniform(0.2, 0.6, n), p["r_e"] * rng.uniform(0.5, 1.0, n)
    )
    p["companion_n"] = rng.uniform(0.7, 3.0, n)
    p["companion_q"] = rng.uniform(0.4, 1.0, n)
    p["companion_phi"] = rng.uniform(0, np.pi, n)

    # tidal features: fraction of the total light, geometry of two tails and shells
    frac = np.zeros(n)
    frac[is_["merger_pre"]] = rng.uniform(*s["tail_fraction_pre"], is_["merger_pre"].sum())
    frac[is_["merger"]] = rng.uniform(*s["tail_fraction_merger"], is_["merger"].sum())
    frac[post] = rng.uniform(*s["shell_fraction"], post.sum())
    p["feature_fraction"] = frac
    p["tail_angle"] = ang + np.pi / 2 + rng.uniform(-0.5, 0.5, n)
    p["tail_chirality"] = rng.choice([-1.0, 1.0], n)
    p["tail_span"] = rng.uniform(1.5, 3.0, n)  # rad swept by a tail
    p["tail_pitch"] = rng.uniform(0.4, 0.8, n)  # logarithmic-spiral growth rate
    p["tail_width"] = rng.uniform(0.15, 0.3, n)  # arcsec
    p["n_shells"] = np.where(post, rng.integers(2, 5, n), 0)
    p["shell_angle"] = rng.uniform(0, 2 * np.pi, n)
    p["plume"] = post & (rng.uniform(size=n) < 0.5)

    # pipeline errors
    star = is_["bright_star"]
    p["star_mag"] = np.where(star, rng.uniform(*s["star_mag_range"], n), 0.0)
    st_sep = rng.uniform(*s["star_sep_range"], n) / ps
    st_ang = rng.uniform(0, 2 * np.pi, n)
    p["star_x"] = np.where(star, p["x0"] + st_sep * np.cos(st_ang), 0.0)
    p["star_y"] = np.where(star, p["y0"] + st_sep * np.sin(st_ang), 0.0)
    p["spike_angle"] = rng.uniform(-0.05, 0.05, n)
    p["nucleus_peak"] = np.where(
        is_["saturated"], rng.uniform(*s["nucleus_peak_range"], n), 0.0
    )
    p["mask_kind"] = np.where(
        is_["masked"], np.where(rng.uniform(size=n) < 0.5, "rectangle", "stripe"), ""
    )
    p["mask_area"] = np.where(is_["masked"], rng.uniform(*s["mask_area_range"], n), 0.0)
    p["mask_aspect"] = _log_uniform(rng, (0.3, 3.0), n)
    p["mask_x"] = p["x0"] + rng.uniform(-12, 12, n)
    p["mask_y"] = p["y0"] + rng.uniform(-12, 12, n)
    p["mask_angle"] = rng.uniform(0, np.pi, n)
    p["edge_side"] = rng.integers(0, 4, n)
    p["edge_cut"] = np.where(is_["edge_cut"], rng.uniform(*s["edge_cut_range"], n), 0.0)
    p["edge_tilt"] = rng.uniform(-0.05, 0.05, n)

    # radiative-transfer-like post-processing, from a stream of its own so that the
    # parameters above do not depend on it
    rng = _ds.rng_for(seed, _STREAM_POST)
    dusty = rng.uniform(size=n) < s["dust_lane_probability"]
    p["dust_tau"] = np.where(dusty, rng.uniform(*s["dust_tau_range"], n), 0.0)
    p["dust_offset"] = np.where(dusty, rng.normal(0.0, 0.1, n), 0.0)
    clumpy = rng.uniform(size=n) < s["clump_probability"]
    p["clump_fraction"] = np.where(clumpy, rng.uniform(*s["clump_fraction_range"], n), 0.0)
    return p


def _clumps(xs, ys, x0, y0, r_e, q, phi, sigma, rng, n_clumps=4):
    """Gaussian clumps (M, H, W) scattered over the ellipse of each galaxy, each
    image normalised to 1. Parameters have shape (M, 1, 1), sizes in pixels."""
    m = len(x0)
    rad = r_e[:, None] * rng.uniform(0.2, 1.2, (m, n_clumps, 1, 1))
    ang = rng.uniform(0, 2 * np.pi, (m, n_clumps, 1, 1))
    weight = rng.uniform(0.5, 1.5, (m, n_clumps, 1, 1))
    u, v = rad * np.cos(ang), rad * q[:, None] * np.sin(ang)
    cx = x0[:, None] + u * np.cos(phi[:, None]) - v * np.sin(phi[:, None])
    cy = y0[:, None] + u * np.sin(phi[:, None]) + v * np.cos(phi[:, None])
    r2 = (xs - cx) ** 2 + (ys - cy) ** 2
    img = (weight * np.exp(-0.5 * r2 / sigma**2)).sum(axis=1)
    return img / img.sum(axis=(1, 2), keepdims=True)


# ----------------------------------------------------------------------- render


def _tails(xs, ys, x0, y0, r0, angle, chirality, span, pitch, width):
    """Tidal tails: logarithmic-spiral arcs from ``(x0, y0)``, each normalised to 1.

    A tail starts at radius ``r0`` in direction ``angle`` and winds by ``span``
    radians (sense ``chirality``), its radius growing as ``exp(pitch * t)``; its
    cross-section is Gaussian of width ``width`` and it fades along its length.
    All parameters have shape (M, 1, 1); the grid ``xs, ys`` (H, W).
    """
    dx, dy = xs[None] - x0, ys[None] - y0
    r = np.hypot(dx, dy)
    t = np.mod(chirality * (np.arctan2(dy, dx) - angle), 2 * np.pi)
    on = t <= span
    r_tail = r0 * np.exp(pitch * t)
    w = width * (1 + 0.5 * t / span)  # tails widen as they go
    img = np.exp(-0.5 * ((r - r_tail) / w) ** 2) * np.exp(-0.7 * t / span) * on
    total = img.sum(axis=(1, 2), keepdims=True)
    return np.divide(img, total, out=np.zeros_like(img), where=total > 0)


def _shells(xs, ys, x0, y0, radii, angle, width):
    """Shells: arcs at ``radii`` (M, K) on alternating sides, sharp outer edges."""
    dx, dy = xs[None] - x0, ys[None] - y0
    r = np.hypot(dx, dy)
    phi = np.arctan2(dy, dx)
    img = np.zeros(r.shape)
    for k in range(radii.shape[1]):
        rk = radii[:, k][:, None, None]
        side = angle + (k % 2) * np.pi
        dang = np.angle(np.exp(1j * (phi - side)))
        radial = np.where(
            r <= rk,
            np.exp(-(rk - r) / (2 * width)),
            np.exp(-((r - rk) ** 2) / (2 * (0.4 * width) ** 2)),
        )
        shell = radial * np.exp(-0.5 * (dang / 0.9) ** 2) * (rk > 0)
        img += shell / np.maximum(shell.sum(axis=(1, 2), keepdims=True), 1e-300) / (k + 1)
    total = img.sum(axis=(1, 2), keepdims=True)
    return np.divide(img, total, out=np.zeros_like(img), where=total > 0)


def _psf_kernels(fwhm_px, beta, size=25):
    """(N, size, size) Moffat kernels (pixel-integrated, normalised) for the seeing."""
    xs, ys = pixel_grid(size, 4)
    c = (size - 1) / 2
    f = np.asarray(fwhm_px, dtype=float)[:, None, None]
    k = bin_pixels(moffat(xs[None], ys[None], c, c, f, beta), 4)
    return k / k.sum(axis=(1, 2), keepdims=True)


def _render_chunk(task: dict) -> dict:
    """Noiseless and noisy stamps of one chunk of galaxies."""
    from scipy.signal import fftconvolve

    s, size, p = task["settings"], task["size"], task["params"]
    classes = p["cls"].to_numpy()
    ps = s["pixel_scale"]
    zp = s["zero_point"]
    col = {c: p[c].to_numpy() for c in p.columns}
    xs, ys = pixel_grid(size, _SUP)

    def a(name, k=slice(None)):
        return np.asarray(col[name][k], dtype=float)[:, None, None]

    def counts(mag):
        return 10 ** (-0.4 * (np.asarray(mag, dtype=float) - zp))

    flux = counts(col["mag"])
    total_light = flux.copy()
    comp = col["companion_mag"] > 0
    comp_flux = np.where(comp, counts(np.where(comp, col["companion_mag"], 99.0)), 0.0)
    # light that goes into tails / shells is taken from the galaxies
    fr = col["feature_fraction"]
    merging = np.isin(classes, MERGER_CLASSES)
    total_light = np.where(merging, flux + comp_flux, flux)
    body = 1.0 - fr
    model = sersic(
        xs[None],
        ys[None],
        a("x0"),
        a("y0"),
        (flux * body)[:, None, None],
        a("r_e") / ps,
        a("n"),
        a("q"),
        a("phi"),
    )
    k = np.flatnonzero(comp)
    if len(k):
        model[k] += sersic(
            xs[None],
            ys[None],
            a("companion_x", k),
            a("companion_y", k),
            (comp_flux * np.where(merging, body, 1.0))[k][:, None, None],
            a("companion_r_e", k) / ps,
            a("companion_n", k),
            a("companion_q", k),
            a("companion_phi", k),
        )
    # merger: a common, lopsided envelope around the two nuclei
    k = np.flatnonzero(classes == "merger")
    if len(k):
        mx = 0.5 * (a("x0", k) + a("companion_x", k))
        my = 0.5 * (a("y0", k) + a("companion_y", k))
        envelope = 0.25 * total_light[k] * body[k]
        model[k] *= 0.75
        model[k] += sersic(
            xs[None],
            ys[None],
            mx + 2.0 * np.cos(a("tail_angle", k)),
            my + 2.0 * np.sin(a("tail_angle", k)),
            envelope[:, None, None],
            2.0 * a("r_e", k) / ps,
            np.ones((len(k), 1, 1)),
            np.full((len(k), 1, 1), 0.6),
            a("tail_angle", k),
        )
    # tidal tails from each galaxy of a pair (two from a merger), a plume after it
    for cls_name, n_tails in (("merger_pre", 2), ("merger", 2), ("merger_post", 1)):
        k = np.flatnonzero(classes == cls_name)
        if cls_name == "merger_post":
            k = k[col["plume"][k].astype(bool)]
        if not len(k):
            continue
        feat = fr[k] * total_light[k]
        feat = feat * (0.4 if cls_name == "merger_post" else 1.0)
        for t in range(n_tails):
            x0 = a("x0", k) if t == 0 else a("companion_x", k)
            y0 = a("y0", k) if t == 0 else a("companion_y", k)
            tails = _tails(
                xs,
                ys,
                x0,
                y0,
                a("r_e", k) / ps,
                a("tail_angle", k) + t * np.pi,
                a("tail_chirality", k),
                a("tail_span", k),
                a("tail_pitch", k),
                a("tail_width", k) / ps,
            )
            model[k] += tails * (feat / n_tails)[:, None, None] * _SUP**2
    # post-merger shells
    k = np.flatnonzero(classes == "merger_post")
    if len(k):
        kmax = int(col["n_shells"][k].max())
        grow = np.arange(1, kmax + 1)[None, :]
        # shells at 1.3", 2.0", 2.7", 3.4" (arcsec), outside most of the remnant
        radii = (1.3 + 0.7 * (grow - 1)) / ps * np.ones((len(k), 1))
        radii = np.where(grow <= col["n_shells"][k][:, None], radii, 0.0)
        shells = _shells(
            xs, ys, a("x0", k), a("y0", k), radii, a("shell_angle", k), 0.25 / ps
        )
        share = np.where(col["plume"][k], 0.6, 1.0) * fr[k] * total_light[k]
        model[k] += shells * share[:, None, None] * _SUP**2
    # radiative-transfer-like post-processing: clumps take light from the smooth
    # profile, then a dust lane along the major axis absorbs part of what is there
    k = np.flatnonzero(col["clump_fraction"] > 0)
    if len(k):
        f_c = col["clump_fraction"][k][:, None, None]
        clumps = _clumps(
            xs[None],
            ys[None],
            a("x0", k),
            a("y0", k),
            a("r_e", k) / ps,
            a("q", k),
            a("phi", k),
            s["clump_sigma"] / ps,
            _ds.rng_for(task["seed"], _STREAM_POST, task["chunk"]),
        )
        model[k] = model[k] * (1 - f_c) + clumps * f_c * flux[k][:, None, None] * _SUP**2
    k = np.flatnonzero(col["dust_tau"] > 0)
    if len(k):
        dx, dy = xs[None] - a("x0", k), ys[None] - a("y0", k)
        phi = a("phi", k)
        u = dx * np.cos(phi) + dy * np.sin(phi)
        v = -dx * np.sin(phi) + dy * np.cos(phi)
        w = s["dust_width"] / ps
        lane = np.exp(-0.5 * ((v - a("dust_offset", k) / ps) / w) ** 2)
        lane *= np.exp(-0.5 * (u / (1.5 * a("r_e", k) / ps)) ** 2)
        model[k] *= np.exp(-a("dust_tau", k) * lane)
    model = bin_pixels(model, _SUP)
    # PSF convolution, one kernel per image
    fwhm_px = col["fwhm"] / ps
    kernels = _psf_kernels(fwhm_px, s["moffat_beta"])
    model = fftconvolve(model, kernels, mode="same", axes=(1, 2))
    model = np.clip(model, 0.0, None)
    # saturated: a bright point-like nucleus (the PSF itself, drawn on the grid)
    k = np.flatnonzero(classes == "saturated")
    if len(k):
        beta = s["moffat_beta"]
        unit = bin_pixels(
            moffat(xs[None], ys[None], a("x0", k), a("y0", k), a("fwhm", k) / ps, beta),
            _SUP,
        )
        scale = col["nucleus_peak"][k] * s["saturation"] / unit.max(axis=(1, 2))
        model[k] += unit * scale[:, None, None]
    # bright stars: Moffat halo plus diffraction spikes, added after the seeing
    k = np.flatnonzero(classes == "bright_star")
    if len(k):
        f_star = counts(col["star_mag"][k])[:, None, None]
        sx, sy = a("star_x", k), a("star_y", k)
        halo = bin_pixels(
            moffat(xs[None], ys[None], sx, sy, a("fwhm", k) / ps, s["moffat_beta"], f_star),
            _SUP,
        )
        xg, yg = pixel_grid(size, 1)
        ang = a("spike_angle", k)
        dx, dy = xg[None] - sx, yg[None] - sy
        u = dx * np.cos(ang) + dy * np.sin(ang)
        v = -dx * np.sin(ang) + dy * np.cos(ang)
        length = 0.005 * np.sqrt(f_star)  # pixels; brighter stars, longer spikes
        spikes = np.zeros_like(halo)
        for along, across in ((u, v), (v, u)):
            spikes += np.exp(-0.5 * (across / 0.7) ** 2) * np.exp(-np.abs(along) / length)
        spikes *= 2e-3 * f_star / length
        model[k] += halo + spikes
    sky = col["sky"][:, None, None]
    if task["noise"]:
        rng = _ds.rng_for(task["seed"], _STREAM_NOISE, task["chunk"])
        raw = rng.poisson(model + sky) + rng.normal(0.0, s["read_noise"], model.shape)
    else:
        raw = model + sky
    raw, clipped = saturate(raw, s["saturation"])
    images = raw - sky
    blank = _blank_masks(classes, col, size)
    images[blank] = 0.0
    return {
        "images": images.astype(np.float32),
        "saturated_pixels": clipped,
        "blank_fraction": blank.mean(axis=(1, 2)),
    }


def _blank_masks(classes, col, size):
    """(N, size, size) bool: pixels the pipeline set to zero (masks, edges)."""
    blank = np.zeros((len(classes), size, size), dtype=bool)
    yy, xx = np.mgrid[:size, :size].astype(float)
    for i in np.flatnonzero(classes == "masked"):
        area = col["mask_area"][i] * size * size
        cx, cy, ang = col["mask_x"][i], col["mask_y"][i], col["mask_angle"][i]
        v = -(xx - cx) * np.sin(ang) + (yy - cy) * np.cos(ang)
        if col["mask_kind"][i] == "rectangle":
            w = np.sqrt(area * col["mask_aspect"][i])
            h = area / w
            blank[i] = (np.abs(xx - cx) <= w / 2) & (np.abs(yy - cy) <= h / 2)
        else:  # a stripe across the stamp, e.g. a masked satellite trail
            width = area / (size * np.sqrt(2))
            blank[i] = np.abs(v) <= width / 2
        if not blank[i].any():
            blank[i, int(np.clip(cy, 0, size - 1)), int(np.clip(cx, 0, size - 1))] = True
    for i in np.flatnonzero(classes == "edge_cut"):
        depth = col["edge_cut"][i] * size  # pixels without data from one side
        tilt = col["edge_tilt"][i]
        side = col["edge_side"][i]
        coord = {0: xx, 1: size - 1 - xx, 2: yy, 3: size - 1 - yy}[side]
        other = yy if side < 2 else xx
        blank[i] = coord + 0.5 < depth + tilt * (other - size / 2)
    return blank


# -------------------------------------------------------------------------- API


def _check(n, seed, fractions, size):
    seed = _ds.check_seed(seed)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 24:
        raise ValueError(f"size must be an integer >= 24, got {size!r}")
    fractions = dict(fractions) if fractions is not None else dict(DEFAULT_FRACTIONS)
    return seed, fractions


def simulate(
    n: int,
    *,
    seed: int = 0,
    fractions: Mapping[str, float] | None = None,
    size: int = 48,
    noise: bool = True,
    settings: Mapping[str, Any] | None = None,
    workers: int | None = 1,
    progress: bool | None = None,
) -> SimulatedSet:
    """Simulate ``n`` galaxy stamps: ordinary galaxies, mergers and pipeline errors.

    Parameters
    ----------
    n
        Number of stamps.
    seed
        Seed of every random number (the set does not depend on ``workers``).
    fractions
        Relative weights of :data:`CLASSES` (default :data:`DEFAULT_FRACTIONS`, 80%
        normal); e.g. ``{"normal": 1}`` for a clean training set.
    size
        Stamp side in pixels (48 default, see the module docstring).
    noise
        ``False`` gives the expected (noiseless) images.
    settings
        Overrides of :data:`DEFAULT_SETTINGS`.
    workers
        Processes (default 1; vectorised stamps are fast).
    progress
        Show a progress bar (default: :func:`phbook.config.show_progress`).

    Returns
    -------
    SimulatedSet
        ``images`` float32 (n, size, size) in electrons, sky subtracted; ``classes``;
        ``params`` with ``group`` (``normal``, ``merger``, ``pipeline``), the galaxy
        parameters and those of each anomaly (units in ``meta["units"]``).
    """
    seed, fractions = _check(n, seed, fractions, size)
    s = _ds.resolve_settings(DEFAULT_SETTINGS, settings)
    classes = _ds.class_plan(n, fractions, CLASSES, _ds.rng_for(seed, _STREAM_PLAN))
    params = _plan(classes, seed, s, size)
    params.insert(0, "cls", classes)
    tasks, sizes = [], []
    for chunk, sl in enumerate(_ds.chunk_slices(n)):
        part = params.iloc[sl]
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
        desc="galaxy stamps",
        sizes=sizes,
        progress=progress,
    )
    images = np.concatenate([r["images"] for r in results])
    params["saturated_pixels"] = np.concatenate([r["saturated_pixels"] for r in results])
    params["blank_fraction"] = np.concatenate([r["blank_fraction"] for r in results])
    params = params.drop(columns=["cls"])
    meta = {
        "simulator": "galaxies",
        "seed": seed,
        "n": n,
        "fractions": fractions,
        "size": int(size),
        "noise": bool(noise),
        "settings": s,
        "units": UNITS,
        "normal_classes": list(NORMAL_CLASSES),
        "note": "simulated galaxy stamps; see phbook.sim.galaxies",
    }
    return SimulatedSet(images, classes, params, meta, {}, NORMAL_CLASSES)


def load_or_simulate(
    n: int,
    *,
    seed: int = 0,
    fractions: Mapping[str, float] | None = None,
    size: int = 48,
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
        "noise": bool(noise),
        "settings": s,
    }
    kwargs = dict(description, workers=workers, progress=progress)
    return _ds.load_or_simulate("galaxies", simulate, description, kwargs, refresh=refresh)
