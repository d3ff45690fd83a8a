"""Simulated galaxy-galaxy strong lenses with and without dark-matter substructure.

Every image is a background galaxy (an elliptical Sersic profile) lensed by a
foreground dark-matter halo (a singular isothermal ellipsoid, SIE) with external shear,
seen through a Gaussian point-spread function with sky background, Poisson noise and
read noise. The lensing is computed with lenstronomy
:cite:`birrer2018lenstronomy,birrer2021lenstronomy`.
Three classes differ only in the substructure of the halo:

``"normal"``
    no substructure: the smooth SIE + shear.
``"cdm"``
    cold-dark-matter subhalos: a Poisson number of point-mass (or NFW) subhalos with a
    power-law mass function :math:`dN/dm \\propto m^{-1.9}`, uniform in projection
    within two Einstein radii of the lens centre.
``"vortex"``
    a vortex of a superfluid / condensate dark matter: mass spread uniformly along a
    line segment through the inner halo, modelled as a chain of point masses.

The setup follows the spirit of the DeepLense simulations used by Alexander et al.
:cite:`alexander2020morphology,alexander2020decoding` (a lens at z=0.5, a source at
z=1.0, point-mass subhalos, a vortex as a line of point masses) with these differences,
which the lensing chapter states where it compares AUCs:

* instrument: Euclid-VIS-like (the numbers of lenstronomy's ``Euclid`` VIS
  configuration: 0.101" pixels, 0.16" FWHM Gaussian PSF, 4 x 566 s, sky 22.3
  mag/arcsec^2, read noise 4.2 e-, zero point 25.72), 64 x 64 pixels by default
  (150 x 150 optional, on the same 6.46" field), instead of the 150 x 150 images of
  the DeepLenseSim "Model I" set (which its authors say most closely matches their
  papers);
* the halo is set by a velocity dispersion, not a fixed Einstein radius, so that the
  varying-redshift set varies the Einstein radius physically; no lens light is added;
* CDM subhalos: a Poisson number (mean 10) of point masses with dN/dm ~ m^-1.9 between
  1e9 and 1e10 solar masses, uniform in area within two Einstein radii: a median of
  about 5% of the mass inside the Einstein radius. This abundance is boosted over a
  realistic CDM population, as in DeepLense, so that the substructure is detectable
  (their public lenstronomy code, DeepLenseSim, draws 25 point masses between 1e6 and
  1e10 solar masses from a density ~ m^-0.9, dominated by the heaviest; lighter
  subhalos change a 0.1" pixel image by far less than its noise);
* the vortex carries 1.5-4% of the mass inside the Einstein radius along a line of
  0.5-2 Einstein radii (their PyAutoLens defaults: 1% along 1 arcsec; DeepLenseSim
  Model I: 3e10 solar masses for a 1e12 solar-mass halo, 3%);
* bright sources: unlensed AB magnitudes 21-23 in VIS, the bright end of the lenses
  Euclid will find, whose arcs reach a signal-to-noise ratio of several hundred (median
  about 650 over the whole arc). A search for substructure picks such lenses: with
  sources of 23-25 mag (arc SNR about 180) a smooth lens refitted to each image
  absorbs most of the perturbation, and even a converged refit separates the classes
  only weakly (ROC-AUC 0.83 with the default score of
  :class:`phbook.detectors.SmoothLensDetector`, against 0.97 at 21-23 mag);
* the ``perturbation_snr`` column says by how many noise sigmas the substructure changes
  each image (median about 100 for both anomaly classes at the default settings), so a
  chapter can show how detectability depends on it;
* the substructure adds mass on top of the smooth halo (as in DeepLense): a few percent
  of the mass inside the Einstein radius, which moves the ring by 1-2%, far less
  than the spread of Einstein radii (+-20%), so the ring size does not give the class
  away;
* the varying-redshift set draws z_lens ~ U(0.3, 0.7) and z_source ~ U(0.9, 1.6);
* noise is really added (Poisson on the total counts plus Gaussian read noise): a widely
  used public generator computes the noise and then returns the noiseless image.

A second, easier regime, ``simulate(..., regime="deeplense")``, fixes the macro lens
and the source population as DeepLenseSim Model I does (an SIE of 1e12 solar masses,
theta_E 1.28", e1 0.1, shear gamma1 0.05, a Sersic source of 0.25" and n = 1; only the
source position and brightness change from lens to lens; :data:`DEEPLENSE_SETTINGS`
gives the source of each number). The substructure classes and the instrument are
those above. It is the regime in which the networks of Alexander et al. were measured.

Units: angles in arcsec, masses in solar masses, velocity dispersion in km/s, images in
electrons per pixel of the co-added exposure with the mean sky subtracted.

Usage (a training set of smooth lenses, a balanced test set, cached)::

    from phbook.sim import lensing
    train = lensing.load_or_simulate(20000, seed=1, fractions={"normal": 1})
    test = lensing.load_or_simulate(6000, seed=2)  # thirds of the three classes
    x, classes, params = test  # images (N, 64, 64) float32, names, DataFrame
    test.labels  # 1 for cdm and vortex, 0 for normal
    smooth = lensing.render_noiseless(test, [0, 1], smooth=True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from . import dataset as _ds
from .dataset import SimulatedSet

__all__ = [
    "CLASSES",
    "NORMAL_CLASSES",
    "DEFAULT_SETTINGS",
    "DEEPLENSE_SETTINGS",
    "REGIMES",
    "EUCLID_VIS",
    "deeplense_theta_E",
    "simulate",
    "load_or_simulate",
    "point_mass_theta_E",
    "point_mass_alpha",
    "render_noiseless",
    "reference_image",
]

CLASSES = ("normal", "cdm", "vortex")
NORMAL_CLASSES = ("normal",)
REDSHIFTS = ("fixed", "varying")
SUBHALO_PROFILES = ("point_mass", "nfw")

#: Euclid VIS as configured in lenstronomy's ``ObservationConfig.Euclid``
#: (``band="VIS"``, ``coadd_years=6``): a test checks the numbers against it.
EUCLID_VIS = {
    "pixel_scale": 0.101,  # arcsec per pixel
    "psf_fwhm": 0.16,  # arcsec, Gaussian
    "exposure_time": 566.0,  # s per exposure
    "num_exposures": 4,
    "read_noise": 4.2,  # e- per exposure
    "sky_brightness": 22.3,  # AB mag / arcsec^2
    "zero_point": 25.72,  # AB magnitude of a 1 e-/s source
}

#: Every physical setting; ``simulate(settings={...})`` overrides any of them.
DEFAULT_SETTINGS: dict[str, Any] = {
    # cosmology (flat Lambda-CDM)
    "H0": 70.0,
    "Om0": 0.3,
    # redshifts: the fixed set and the ranges of the varying set
    "z_lens": 0.5,
    "z_source": 1.0,
    "z_lens_range": (0.3, 0.7),
    "z_source_range": (0.9, 1.6),
    # main halo: SIE with velocity dispersion (km/s), axis ratio; external shear
    "sigma_v_range": (280.0, 340.0),
    "lens_q_range": (0.6, 1.0),
    "lens_center_max": 0.05,  # arcsec, uniform in a square of this half-width
    "shear_range": (0.0, 0.1),
    # source: elliptical Sersic; magnitude is the unlensed AB magnitude
    "source_mag_range": (21.0, 23.0),
    "source_r_sersic_range": (0.10, 0.35),  # arcsec
    "source_n_sersic_range": (0.7, 2.5),
    "source_q_range": (0.6, 1.0),
    "source_offset_max": 0.3,  # Einstein radii from the lens centre (uniform in area)
    # CDM subhalos
    "n_sub_mean": 10.0,
    "sub_mass_range": (1e9, 1e10),  # solar masses
    "sub_mass_slope": -1.9,  # dN/dm ~ m^slope
    "sub_r_max": 2.0,  # Einstein radii (uniform in area within)
    "sub_concentration": 15.0,  # NFW subhalos only: r200 / r_s
    # vortex
    "vortex_mass_fraction_range": (0.015, 0.04),  # of the mass inside theta_E
    "vortex_length_range": (0.5, 2.0),  # Einstein radii
    "vortex_center_max": 0.3,  # Einstein radii (uniform in area)
    "vortex_elements": 30,  # point masses along the line
    # instrument (Euclid VIS, see EUCLID_VIS); field of view of 64 Euclid pixels
    "fov": 64 * EUCLID_VIS["pixel_scale"],
    "psf_fwhm": EUCLID_VIS["psf_fwhm"],
    "exposure_time": EUCLID_VIS["exposure_time"],
    "num_exposures": EUCLID_VIS["num_exposures"],
    "read_noise": EUCLID_VIS["read_noise"],
    "sky_brightness": EUCLID_VIS["sky_brightness"],
    "zero_point": EUCLID_VIS["zero_point"],
}

#: The DeepLense-like regime (``simulate(..., regime="deeplense")``): the macro lens
#: and the source population of DeepLenseSim "Model I" (github.com/mwt5345/DeepLenseSim,
#: ``deeplense/lens.py``: ``make_single_halo``, ``make_source_light``, ``simple_sim``;
#: its ``Model_I/README.md`` calls it the set that most closely matches the papers of
#: Alexander et al.), with the substructure classes and the instrument of the default
#: regime. Each number and its source:
#:
#: * ``lens_mass`` 1e12 M_sun: ``lens.make_single_halo(1e12)`` in ``Model_I/sim_*.py``;
#:   the Einstein radius follows DeepLenseSim's ``mass_to_radius`` (see
#:   :func:`deeplense_theta_E`): 1.28 arcsec at z_lens 0.5, z_source 1.0;
#: * SIE ``e1`` 0.1, ``e2`` 0 (axis ratio 0.82, position angle 0), centred on the
#:   field, and external shear ``gamma1`` 0.05, ``gamma2`` 0: ``make_single_halo``;
#: * Sersic source of ``R_sersic`` 0.25 arcsec, ``n_sersic`` 1, ``e1`` -0.1, ``e2`` 0.1
#:   (fixed in that code), centred at a position uniform in the square of half-width
#:   0.35 arcsec (``np.random.uniform(-0.35, 0.35, 2)``): ``make_source_light``;
#: * brightness: DeepLenseSim keeps the source amplitude and draws the exposure time
#:   log-uniformly over 0.5 dex (``10**np.random.uniform(3, 3.5)``), a factor 3.2 in
#:   counts; we keep the Euclid exposure and draw the source magnitude uniformly over
#:   the same 1.25 mag, 21-22.25 (the bright end of the default regime's 21-23).
#:
#: Not copied: their 150 x 150 pixels of 0.05 arcsec and SNR of about 25 (the images
#: stay Euclid-VIS-like, as in the default regime), and their substructure (the
#: ``cdm`` and ``vortex`` classes stay those of the default regime).
DEEPLENSE_SETTINGS: dict[str, Any] = {
    **DEFAULT_SETTINGS,
    "lens_center_max": 0.0,
    "source_mag_range": (21.0, 22.25),
    "lens_mass": 1e12,  # M_sun
    "lens_e1": 0.1,
    "lens_e2": 0.0,
    "gamma1": 0.05,
    "gamma2": 0.0,
    "source_r_sersic": 0.25,  # arcsec
    "source_n_sersic": 1.0,
    "source_e1": -0.1,
    "source_e2": 0.1,
    "source_offset_box": 0.35,  # arcsec, half-width of the square of source centres
}

#: The named regimes of :func:`simulate` and their settings.
REGIMES: dict[str, dict[str, Any]] = {
    "default": DEFAULT_SETTINGS,
    "deeplense": DEEPLENSE_SETTINGS,
}

UNITS = {
    "z_lens": "",
    "z_source": "",
    "sigma_v": "km/s",
    "sigma_crit": "M_sun / arcsec^2, critical surface density",
    "lens_e1": "ellipticity components of the SIE (lenstronomy convention)",
    "gamma1": "external shear components (lenstronomy convention)",
    "source_e1": "ellipticity components of the source",
    "theta_E": "arcsec",
    "mass_E": "M_sun (inside theta_E)",
    "lens_x": "arcsec",
    "lens_y": "arcsec",
    "lens_q": "",
    "lens_phi": "rad",
    "gamma": "",
    "gamma_phi": "rad",
    "source_x": "arcsec",
    "source_y": "arcsec",
    "source_mag": "AB mag (unlensed)",
    "source_r_sersic": "arcsec",
    "source_n_sersic": "",
    "source_q": "",
    "source_phi": "rad",
    "n_sub": "",
    "sub_mass_total": "M_sun",
    "sub_mass_max": "M_sun",
    "vortex_mass": "M_sun",
    "vortex_length": "arcsec",
    "vortex_x": "arcsec",
    "vortex_y": "arcsec",
    "vortex_phi": "rad",
    "f_sub": "substructure mass / mass_E",
    "magnification": "lensed / unlensed source flux in the field",
    "arc_snr": "signal-to-noise ratio of the whole lensed source",
    "perturbation_snr": "sqrt(sum((image - smooth image)^2 / variance))",
    "images": "e- per pixel of the co-added exposure, sky subtracted",
}

_STREAM_PLAN, _STREAM_PARAMS, _STREAM_NOISE = 11, 12, 13


def _jit(fn):
    """numba-compile ``fn`` (numba comes with lenstronomy); cached between sessions."""
    import numba

    return numba.njit(cache=True, nogil=True)(fn)


@_jit
def _point_mass_alpha(x, y, center_x, center_y, theta_E):  # pragma: no cover - numba
    ax = np.zeros_like(x)
    ay = np.zeros_like(x)
    for j in range(center_x.size):
        t2 = theta_E[j] * theta_E[j]
        for i in range(x.size):
            dx = x[i] - center_x[j]
            dy = y[i] - center_y[j]
            r2 = dx * dx + dy * dy
            if r2 > 0.0:
                ax[i] += t2 * dx / r2
                ay[i] += t2 * dy / r2
    return ax, ay


def point_mass_alpha(
    x: ArrayLike,
    y: ArrayLike,
    center_x: ArrayLike,
    center_y: ArrayLike,
    theta_E: ArrayLike,
) -> tuple[np.ndarray, np.ndarray]:
    """Deflection (arcsec) at points ``x, y`` of point masses summed over all of them.

    The deflection of lenstronomy's ``POINT_MASS`` profile, ``theta_E**2 * (x - x_i) /
    |x - x_i|**2``, summed over the masses in one compiled loop: lenstronomy evaluates
    the masses one by one, which is ten times slower for the dozens of subhalos of a
    CDM lens (a test checks the two agree).
    """
    args = [np.ascontiguousarray(a, dtype=np.float64).ravel() for a in (x, y)]
    masses = [
        np.ascontiguousarray(a, dtype=np.float64).ravel()
        for a in (center_x, center_y, theta_E)
    ]
    if not (len(masses[0]) == len(masses[1]) == len(masses[2])):
        raise ValueError("center_x, center_y and theta_E must have the same length")
    ax, ay = _point_mass_alpha(*args, *masses)
    shape = np.shape(x)
    return ax.reshape(shape), ay.reshape(shape)


def point_mass_theta_E(mass: ArrayLike, sigma_crit_angle: ArrayLike) -> np.ndarray:
    """Einstein radius (arcsec) of a point mass (M_sun); Sigma_crit in M_sun/arcsec^2.

    A point mass of mass M deflects light like ``theta_E**2 / r``, with
    ``M = pi * Sigma_crit * theta_E**2`` (the mass of a disc of radius theta_E at the
    critical density).
    """
    return np.sqrt(np.asarray(mass, dtype=float) / (np.pi * sigma_crit_angle))


def deeplense_theta_E(
    mass: ArrayLike,
    z_lens: ArrayLike,
    z_source: ArrayLike,
    settings: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Einstein radius (arcsec) that DeepLenseSim gives a halo of ``mass`` (M_sun).

    DeepLenseSim's ``mass_to_radius``: ``theta_E = sqrt(4 G M / c**2 * D_ls / (D_l
    D_s))`` with *luminosity* distances and ``D_ls = D_s - D_l`` (flat Lambda-CDM,
    ``settings["H0"]`` and ``["Om0"]``, default 70 and 0.3). It is not the
    angular-diameter formula, but it is what their images have: 1.28 arcsec for
    1e12 M_sun at z_lens 0.5, z_source 1.0.
    """
    from astropy import constants
    from astropy import units as u
    from astropy.cosmology import FlatLambdaCDM

    s = DEFAULT_SETTINGS if settings is None else settings
    z_l, z_s = np.asarray(z_lens, dtype=float), np.asarray(z_source, dtype=float)
    if np.any(z_s <= z_l):
        raise ValueError("the source must lie behind the lens (z_source > z_lens)")
    cosmo = FlatLambdaCDM(H0=s["H0"], Om0=s["Om0"])
    d_l = cosmo.luminosity_distance(z_l).to_value(u.m)
    d_s = cosmo.luminosity_distance(z_s).to_value(u.m)
    m = np.asarray(mass, dtype=float) * constants.M_sun.value
    g_c2 = constants.G.value / constants.c.value**2
    theta = np.sqrt(4 * g_c2 * m * (d_s - d_l) / (d_l * d_s))
    return np.degrees(theta) * 3600.0


# -------------------------------------------------------------------- parameters


def _uniform(rng, low_high, size):
    low, high = low_high
    return rng.uniform(low, high, size)


def _in_disc(rng, radius, size):
    """Points uniform in area inside discs of the given radius (arrays of x, y)."""
    r = radius * np.sqrt(rng.uniform(0.0, 1.0, size))
    phi = rng.uniform(0.0, 2 * np.pi, size)
    return r * np.cos(phi), r * np.sin(phi)


def _power_law(rng, low, high, slope, size):
    """Samples of dN/dm ~ m^slope between low and high (slope != -1)."""
    a = slope + 1.0
    u = rng.uniform(0.0, 1.0, size)
    return (low**a + u * (high**a - low**a)) ** (1.0 / a)


def _plan(n, seed, classes, redshift, settings, subhalo_profile):
    """Every random parameter of every image, drawn vectorised in the main process."""
    from astropy.cosmology import FlatLambdaCDM
    from lenstronomy.Cosmo.lens_cosmo import LensCosmo

    s = settings
    rng = _ds.rng_for(seed, _STREAM_PARAMS)
    p = pd.DataFrame({"cls": classes})
    if redshift == "fixed":
        p["z_lens"] = np.full(n, s["z_lens"])
        p["z_source"] = np.full(n, s["z_source"])
    else:
        p["z_lens"] = _uniform(rng, s["z_lens_range"], n)
        p["z_source"] = _uniform(rng, s["z_source_range"], n)
    if (p["z_source"] <= p["z_lens"] + 1e-3).any():
        raise ValueError("settings give source redshifts at or below the lens redshift")
    cosmo = FlatLambdaCDM(H0=s["H0"], Om0=s["Om0"])
    lens_cosmo = LensCosmo(p["z_lens"].to_numpy(), p["z_source"].to_numpy(), cosmo=cosmo)
    sigma_crit = np.broadcast_to(lens_cosmo.sigma_crit_angle, (n,)).astype(float)
    p["sigma_crit"] = sigma_crit  # M_sun / arcsec^2
    if s.get("lens_mass") is None:
        _macro_default(p, rng, s, lens_cosmo, n)
    else:
        _macro_deeplense(p, rng, s, lens_cosmo, n)

    # CDM subhalos: a Poisson number per cdm image, power-law masses, uniform positions
    is_cdm = classes == "cdm"
    n_sub = np.zeros(n, dtype=np.int64)
    n_sub[is_cdm] = rng.poisson(s["n_sub_mean"], int(is_cdm.sum()))
    host = np.repeat(np.arange(n), n_sub)
    low, high = s["sub_mass_range"]
    mass = _power_law(rng, low, high, s["sub_mass_slope"], len(host))
    dx, dy = _in_disc(rng, s["sub_r_max"] * p["theta_E"].to_numpy()[host], len(host))
    subs = pd.DataFrame(
        {
            "image": host,
            "mass": mass,
            "x": p["lens_x"].to_numpy()[host] + dx,
            "y": p["lens_y"].to_numpy()[host] + dy,
        }
    )
    if subhalo_profile == "point_mass":
        subs["theta_E"] = point_mass_theta_E(mass, sigma_crit[host])
    else:
        if len(host):
            sub_cosmo = LensCosmo(
                p["z_lens"].to_numpy()[host],
                p["z_source"].to_numpy()[host],
                cosmo=cosmo,
            )
            rs, alpha_rs = sub_cosmo.nfw_physical2angle(mass, s["sub_concentration"])
        else:
            rs = alpha_rs = np.zeros(0)
        subs["Rs"] = np.broadcast_to(rs, (len(host),))
        subs["alpha_Rs"] = np.broadcast_to(alpha_rs, (len(host),))
    p["n_sub"] = n_sub
    p["sub_mass_total"] = np.bincount(host, weights=mass, minlength=n)
    sub_max = np.zeros(n)
    np.maximum.at(sub_max, host, mass)
    p["sub_mass_max"] = sub_max

    # vortex: a line of uniform mass density through the inner halo
    is_vortex = classes == "vortex"
    m = int(is_vortex.sum())
    theta_v = p["theta_E"].to_numpy()[is_vortex]
    frac = _uniform(rng, s["vortex_mass_fraction_range"], m)
    vx, vy = _in_disc(rng, s["vortex_center_max"] * theta_v, m)
    for col in ("vortex_mass", "vortex_length", "vortex_x", "vortex_y", "vortex_phi"):
        p[col] = 0.0
    p.loc[is_vortex, "vortex_mass"] = frac * p["mass_E"].to_numpy()[is_vortex]
    p.loc[is_vortex, "vortex_length"] = _uniform(rng, s["vortex_length_range"], m) * theta_v
    p.loc[is_vortex, "vortex_x"] = p["lens_x"].to_numpy()[is_vortex] + vx
    p.loc[is_vortex, "vortex_y"] = p["lens_y"].to_numpy()[is_vortex] + vy
    p.loc[is_vortex, "vortex_phi"] = rng.uniform(0, np.pi, m)
    p["f_sub"] = (p["sub_mass_total"] + p["vortex_mass"]) / p["mass_E"]
    return p, subs


def _macro_default(p, rng, s, lens_cosmo, n):
    """The default regime's macro lens and source: every parameter drawn per lens."""
    from lenstronomy.Util import param_util

    sigma_crit = p["sigma_crit"].to_numpy()
    p["sigma_v"] = _uniform(rng, s["sigma_v_range"], n)
    p["theta_E"] = lens_cosmo.sis_sigma_v2theta_E(p["sigma_v"].to_numpy())
    p["mass_E"] = np.pi * p["theta_E"] ** 2 * sigma_crit
    half = s["lens_center_max"]
    p["lens_x"] = rng.uniform(-half, half, n)
    p["lens_y"] = rng.uniform(-half, half, n)
    p["lens_q"] = _uniform(rng, s["lens_q_range"], n)
    p["lens_phi"] = rng.uniform(0, np.pi, n)
    e1, e2 = param_util.phi_q2_ellipticity(p["lens_phi"].to_numpy(), p["lens_q"].to_numpy())
    p["lens_e1"], p["lens_e2"] = e1, e2
    p["gamma"] = _uniform(rng, s["shear_range"], n)
    p["gamma_phi"] = rng.uniform(0, np.pi, n)
    g1, g2 = param_util.shear_polar2cartesian(
        p["gamma_phi"].to_numpy(), p["gamma"].to_numpy()
    )
    p["gamma1"], p["gamma2"] = g1, g2
    sx, sy = _in_disc(rng, s["source_offset_max"] * p["theta_E"].to_numpy(), n)
    p["source_x"] = p["lens_x"] + sx
    p["source_y"] = p["lens_y"] + sy
    p["source_mag"] = _uniform(rng, s["source_mag_range"], n)
    p["source_r_sersic"] = _uniform(rng, s["source_r_sersic_range"], n)
    p["source_n_sersic"] = _uniform(rng, s["source_n_sersic_range"], n)
    p["source_q"] = _uniform(rng, s["source_q_range"], n)
    p["source_phi"] = rng.uniform(0, np.pi, n)
    e1, e2 = param_util.phi_q2_ellipticity(
        p["source_phi"].to_numpy(), p["source_q"].to_numpy()
    )
    p["source_e1"], p["source_e2"] = e1, e2


def _macro_deeplense(p, rng, s, lens_cosmo, n):
    """The DeepLense regime's macro lens and source: fixed but for the source position
    and brightness (see :data:`DEEPLENSE_SETTINGS`)."""
    from lenstronomy.Util import param_util

    sigma_crit = p["sigma_crit"].to_numpy()
    p["theta_E"] = deeplense_theta_E(
        s["lens_mass"], p["z_lens"].to_numpy(), p["z_source"].to_numpy(), s
    )
    p["sigma_v"] = lens_cosmo.sis_theta_E2sigma_v(p["theta_E"].to_numpy())
    p["mass_E"] = np.pi * p["theta_E"] ** 2 * sigma_crit
    p["lens_x"] = np.zeros(n)
    p["lens_y"] = np.zeros(n)
    phi, q = param_util.ellipticity2phi_q(s["lens_e1"], s["lens_e2"])
    p["lens_q"], p["lens_phi"] = np.full(n, q), np.full(n, phi)
    p["lens_e1"], p["lens_e2"] = np.full(n, s["lens_e1"]), np.full(n, s["lens_e2"])
    phi, gamma = param_util.shear_cartesian2polar(s["gamma1"], s["gamma2"])
    p["gamma"], p["gamma_phi"] = np.full(n, gamma), np.full(n, phi)
    p["gamma1"], p["gamma2"] = np.full(n, s["gamma1"]), np.full(n, s["gamma2"])
    half = s["source_offset_box"]
    p["source_x"] = rng.uniform(-half, half, n)
    p["source_y"] = rng.uniform(-half, half, n)
    p["source_mag"] = _uniform(rng, s["source_mag_range"], n)
    p["source_r_sersic"] = np.full(n, s["source_r_sersic"])
    p["source_n_sersic"] = np.full(n, s["source_n_sersic"])
    phi, q = param_util.ellipticity2phi_q(s["source_e1"], s["source_e2"])
    p["source_q"], p["source_phi"] = np.full(n, q), np.full(n, phi)
    p["source_e1"] = np.full(n, s["source_e1"])
    p["source_e2"] = np.full(n, s["source_e2"])


def _vortex_elements(row, n_elements):
    """Positions and Einstein radii of the point masses that make up one vortex."""
    t = (np.arange(n_elements) + 0.5) / n_elements - 0.5
    x = row["vortex_x"] + t * row["vortex_length"] * np.cos(row["vortex_phi"])
    y = row["vortex_y"] + t * row["vortex_length"] * np.sin(row["vortex_phi"])
    theta = point_mass_theta_E(row["vortex_mass"] / n_elements, row["sigma_crit"])
    return x, y, np.full(n_elements, theta)


# ----------------------------------------------------------------------- render


def _render_chunk(task: dict) -> dict:
    """Noiseless and noisy images of one chunk (runs in a worker process)."""
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel
    from lenstronomy.Util import kernel_util, util
    from scipy.ndimage import convolve1d

    s = task["settings"]
    num_pix, sup = task["num_pix"], task["supersampling"]
    delta = s["fov"] / num_pix
    x, y = util.make_grid(num_pix, delta, subgrid_res=sup)
    main = LensModel(["SIE", "SHEAR"])
    light = LightModel(["SERSIC_ELLIPSE"])
    params: pd.DataFrame = task["params"]
    subs: pd.DataFrame = task["subs"]
    profile = task["subhalo_profile"]
    by_image = dict(tuple(subs.groupby("image"))) if len(subs) else {}
    exposure = s["exposure_time"] * s["num_exposures"]  # s
    to_counts = delta**2 * exposure  # (e-/s/arcsec^2) -> e- per pixel

    m = len(params)
    model = np.zeros((m, num_pix, num_pix))
    smooth = np.zeros((m, num_pix, num_pix))
    lensed_flux = np.zeros(m)
    rows = zip(params.index, params.to_dict("records"), strict=True)
    for k, (index, row) in enumerate(rows):
        kw_lens = [
            {
                "theta_E": row["theta_E"],
                "e1": row["lens_e1"],
                "e2": row["lens_e2"],
                "center_x": row["lens_x"],
                "center_y": row["lens_y"],
            },
            {
                "gamma1": row["gamma1"],
                "gamma2": row["gamma2"],
                "ra_0": 0.0,
                "dec_0": 0.0,
            },
        ]
        kw_source = {
            "amp": 1.0,
            "R_sersic": row["source_r_sersic"],
            "n_sersic": row["source_n_sersic"],
            "e1": row["source_e1"],
            "e2": row["source_e2"],
            "center_x": row["source_x"],
            "center_y": row["source_y"],
        }
        cps = 10.0 ** (-0.4 * (row["source_mag"] - s["zero_point"]))  # e-/s, unlensed
        kw_source["amp"] = cps / light.total_flux([kw_source], norm=True)[0]
        bx, by = main.ray_shooting(x, y, kw_lens)
        sb = light.surface_brightness(bx, by, [kw_source])
        smooth[k] = _bin(util.array2image(sb), sup) * to_counts
        alpha = None
        if task["smooth_only"]:
            pass
        elif index in by_image:
            sub = by_image[index]
            if profile == "point_mass":
                alpha = point_mass_alpha(
                    x,
                    y,
                    sub["x"].to_numpy(),
                    sub["y"].to_numpy(),
                    sub["theta_E"].to_numpy(),
                )
            else:
                kws = [
                    {"Rs": rs, "alpha_Rs": a, "center_x": cx, "center_y": cy}
                    for rs, a, cx, cy in zip(
                        sub["Rs"], sub["alpha_Rs"], sub["x"], sub["y"], strict=True
                    )
                ]
                alpha = LensModel(["NFW"] * len(kws)).alpha(x, y, kws)
        elif row["vortex_mass"] > 0:
            vx, vy, vt = _vortex_elements(row, task["vortex_elements"])
            alpha = point_mass_alpha(x, y, vx, vy, vt)
        if alpha is not None:
            ax, ay = alpha
            sb = light.surface_brightness(bx - ax, by - ay, [kw_source])
            model[k] = _bin(util.array2image(sb), sup) * to_counts
        else:
            model[k] = smooth[k]
        lensed_flux[k] = model[k].sum() / exposure / cps

    # lenstronomy's pixelated Gaussian kernel is the outer product of a 1-d kernel:
    # two 1-d convolutions (zero padding, as lenstronomy) instead of a 2-d one
    kernel_size = int(np.ceil(3 * s["psf_fwhm"] / delta)) * 2 + 1
    kernel = kernel_util.kernel_gaussian(kernel_size, delta, s["psf_fwhm"])
    k1 = kernel.sum(axis=0) / kernel.sum()

    def blur(img):
        for axis in (1, 2):
            img = convolve1d(img, k1, axis=axis, mode="constant")
        return np.clip(img, 0, None)

    model = blur(model)
    smooth = blur(smooth)

    sky = 10.0 ** (-0.4 * (s["sky_brightness"] - s["zero_point"])) * to_counts  # e-/px
    read_var = s["num_exposures"] * s["read_noise"] ** 2
    variance = model + sky + read_var
    snr_arc = np.sqrt((model**2 / variance).sum(axis=(1, 2)))
    snr_pert = np.sqrt(((model - smooth) ** 2 / variance).sum(axis=(1, 2)))
    if task["noise"]:
        rng = _ds.rng_for(task["seed"], _STREAM_NOISE, task["chunk"])
        counts = rng.poisson(model + sky).astype(np.float64)
        counts += rng.normal(0.0, np.sqrt(read_var), model.shape)
        images = counts - sky
    else:
        images = model
    return {
        "images": images.astype(np.float32),
        "magnification": lensed_flux,
        "arc_snr": snr_arc,
        "perturbation_snr": snr_pert,
    }


def _bin(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over factor x factor blocks: supersampled surface brightness -> pixels."""
    if factor == 1:
        return image
    h, w = image.shape
    return image.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


# -------------------------------------------------------------------------- API


def _check_args(n, seed, fractions, redshift, num_pix, subhalo_profile, supersampling):
    seed = _ds.check_seed(seed)
    if redshift not in REDSHIFTS:
        raise ValueError(f"redshift must be one of {REDSHIFTS}, got {redshift!r}")
    if subhalo_profile not in SUBHALO_PROFILES:
        raise ValueError(
            f"subhalo_profile must be one of {SUBHALO_PROFILES}, got {subhalo_profile!r}"
        )
    if isinstance(num_pix, bool) or not isinstance(num_pix, (int, np.integer)):
        raise ValueError(f"num_pix must be an integer >= 16, got {num_pix!r}")
    if num_pix < 16:
        raise ValueError(f"num_pix must be an integer >= 16, got {num_pix}")
    if supersampling not in (1, 2, 3, 4):
        raise ValueError(f"supersampling must be 1, 2, 3 or 4, got {supersampling!r}")
    fractions = dict(fractions) if fractions is not None else dict.fromkeys(CLASSES, 1.0)
    return seed, fractions


def _regime_settings(regime: str) -> dict[str, Any]:
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {tuple(REGIMES)}, got {regime!r}")
    return REGIMES[regime]


def simulate(
    n: int,
    *,
    seed: int = 0,
    fractions: Mapping[str, float] | None = None,
    redshift: str = "fixed",
    num_pix: int = 64,
    subhalo_profile: str = "point_mass",
    supersampling: int = 2,
    noise: bool = True,
    settings: Mapping[str, Any] | None = None,
    regime: str = "default",
    workers: int | None = None,
    progress: bool | None = None,
) -> SimulatedSet:
    """Simulate ``n`` strong-lens images of the classes ``normal``, ``cdm``, ``vortex``.

    Parameters
    ----------
    n
        Number of images.
    seed
        Seed of every random number; the same seed gives the same set whatever
        ``workers`` is.
    fractions
        Relative weights of the classes, e.g. ``{"normal": 1}`` for a training set of
        smooth lenses only. Default: equal thirds. Counts are exact (rounded).
    redshift
        ``"fixed"`` (z_lens 0.5, z_source 1.0) or ``"varying"`` (both drawn per image).
    num_pix
        Image side in pixels (64 default, 150 for the DeepLense size); the field of view
        stays ``settings["fov"]`` (6.46 arcsec), so the pixel scale is fov / num_pix.
    subhalo_profile
        ``"point_mass"`` (as in DeepLense) or ``"nfw"`` (concentration
        ``settings["sub_concentration"]``; much weaker lensing per unit mass).
    supersampling
        Sub-pixels per pixel side for ray shooting (2: 4 rays per pixel).
    noise
        ``False`` returns the noiseless expected counts (for figures and tests).
    settings
        Overrides of the regime's settings (ranges are ``(low, high)`` tuples).
    regime
        ``"default"`` (:data:`DEFAULT_SETTINGS`: every parameter of the macro lens and
        the source drawn per lens) or ``"deeplense"`` (:data:`DEEPLENSE_SETTINGS`: the
        fixed macro lens and source population of DeepLenseSim Model I).
    workers
        Processes for the rendering (default: the CPU cores available).
    progress
        Show a progress bar (default: :func:`phbook.config.show_progress`).

    Returns
    -------
    SimulatedSet
        ``images`` float32 (n, num_pix, num_pix) in electrons per pixel (sky
        subtracted); ``classes``; ``params`` with the physical parameters (units in
        ``meta["units"]``) and the diagnostics ``magnification``, ``arc_snr`` and
        ``perturbation_snr`` (how many noise sigmas the substructure changes the image
        by; 0 for ``normal``); ``tables["subhalos"]`` with one row per CDM subhalo.
    """
    seed, fractions = _check_args(
        n, seed, fractions, redshift, num_pix, subhalo_profile, supersampling
    )
    s = _ds.resolve_settings(_regime_settings(regime), settings)
    classes = _ds.class_plan(n, fractions, CLASSES, _ds.rng_for(seed, _STREAM_PLAN))
    params, subs = _plan(n, seed, classes, redshift, s, subhalo_profile)
    tasks, sizes = [], []
    for chunk, sl in enumerate(_ds.chunk_slices(n)):
        part = params.iloc[sl]
        sel = (subs["image"] >= sl.start) & (subs["image"] < sl.stop)
        tasks.append(
            {
                "settings": s,
                "params": part,
                "subs": subs[sel],
                "num_pix": int(num_pix),
                "supersampling": int(supersampling),
                "subhalo_profile": subhalo_profile,
                "vortex_elements": int(s["vortex_elements"]),
                "noise": bool(noise),
                "smooth_only": False,
                "seed": seed,
                "chunk": chunk,
            }
        )
        sizes.append(len(part))
    results = _ds.run_chunks(
        _render_chunk,
        tasks,
        workers=workers,
        desc="lensing images",
        sizes=sizes,
        progress=progress,
    )
    images = np.concatenate([r["images"] for r in results])
    for key in ("magnification", "arc_snr", "perturbation_snr"):
        params[key] = np.concatenate([r[key] for r in results])
    params = params.drop(columns=["cls"])
    meta = {
        "simulator": "lensing",
        "seed": seed,
        "n": n,
        "fractions": fractions,
        "redshift": redshift,
        "regime": regime,
        "num_pix": int(num_pix),
        "pixel_scale": s["fov"] / num_pix,
        "subhalo_profile": subhalo_profile,
        "supersampling": int(supersampling),
        "noise": bool(noise),
        "settings": s,
        "units": UNITS,
        "normal_classes": list(NORMAL_CLASSES),
        "note": "simulated images (lenstronomy); see phbook.sim.lensing for the setup",
    }
    return SimulatedSet(
        images,
        classes,
        params,
        meta,
        {"subhalos": subs.reset_index(drop=True)},
        NORMAL_CLASSES,
    )


def reference_image(data: SimulatedSet, i: int) -> np.ndarray:
    """Noiseless image ``i`` of ``data``, drawn by lenstronomy's ImageModel.

    One lens at a time, every subhalo a separate lenstronomy profile: the slow route,
    kept as the reference that :func:`simulate` is tested against and as the baseline
    of ``bench/case_studies.py``. Point-mass subhalos only.
    """
    if data.meta.get("subhalo_profile") != "point_mass":
        raise ValueError("reference_image draws point-mass subhalos only")
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel
    from lenstronomy.Util import simulation_util

    s, delta = data.meta["settings"], data.meta["pixel_scale"]
    r = data.params.iloc[i]
    names = ["SIE", "SHEAR"]
    kwargs = [
        {
            "theta_E": r.theta_E,
            "e1": r.lens_e1,
            "e2": r.lens_e2,
            "center_x": r.lens_x,
            "center_y": r.lens_y,
        },
        {"gamma1": r.gamma1, "gamma2": r.gamma2},
    ]
    subs = data.tables["subhalos"]
    points = [(q.theta_E, q.x, q.y) for q in subs[subs["image"] == i].itertuples()]
    if r.vortex_mass > 0:
        x, y, t = _vortex_elements(r, s["vortex_elements"])
        points += list(zip(t, x, y, strict=True))
    for t, x, y in points:
        names.append("POINT_MASS")
        kwargs.append({"theta_E": t, "center_x": x, "center_y": y})
    light = LightModel(["SERSIC_ELLIPSE"])
    source = {
        "amp": 1.0,
        "R_sersic": r.source_r_sersic,
        "n_sersic": r.source_n_sersic,
        "e1": r.source_e1,
        "e2": r.source_e2,
        "center_x": r.source_x,
        "center_y": r.source_y,
    }
    cps = 10 ** (-0.4 * (r.source_mag - s["zero_point"]))
    source["amp"] = cps / light.total_flux([source], norm=True)[0]
    model = ImageModel(
        ImageData(**simulation_util.data_configure_simple(data.meta["num_pix"], delta)),
        PSF(psf_type="GAUSSIAN", fwhm=s["psf_fwhm"], pixel_size=delta, truncation=5),
        lens_model_class=LensModel(names),
        source_model_class=light,
        kwargs_numerics={"supersampling_factor": 2, "supersampling_convolution": False},
    )
    return model.image(kwargs, [source]) * s["exposure_time"] * s["num_exposures"]


def render_noiseless(data: SimulatedSet, index=None, *, smooth: bool = False) -> np.ndarray:
    """The noiseless expected images of (some of) the lenses of ``data``.

    ``index`` selects images (default: all); ``smooth=True`` leaves out the
    substructure, which shows what the same lens looks like without it (the difference
    is the signal an anomaly detector has to find). The lenses are drawn from the
    columns of ``data.params`` (``lens_e1``, ``gamma1``, ``source_x``, ...) and
    ``data.tables["subhalos"]``, so edited parameters give edited images.
    """
    meta = data.meta
    if meta.get("simulator") != "lensing":
        raise ValueError("data must be a set made by phbook.sim.lensing")
    idx = np.arange(len(data))[index if index is not None else slice(None)]
    idx = np.atleast_1d(idx)
    params = data.params.iloc[idx]
    subs = data.tables.get("subhalos", pd.DataFrame({"image": []}))
    subs = subs[np.isin(subs["image"].to_numpy(), idx)]
    task = {
        "settings": meta["settings"],
        "params": params,
        "subs": subs,
        "num_pix": int(meta["num_pix"]),
        "supersampling": int(meta["supersampling"]),
        "subhalo_profile": meta["subhalo_profile"],
        "vortex_elements": int(meta["settings"]["vortex_elements"]),
        "noise": False,
        "smooth_only": bool(smooth),
        "seed": 0,
        "chunk": 0,
    }
    return _render_chunk(task)["images"]


def load_or_simulate(
    n: int,
    *,
    seed: int = 0,
    fractions: Mapping[str, float] | None = None,
    redshift: str = "fixed",
    num_pix: int = 64,
    subhalo_profile: str = "point_mass",
    supersampling: int = 2,
    noise: bool = True,
    settings: Mapping[str, Any] | None = None,
    regime: str = "default",
    workers: int | None = None,
    progress: bool | None = None,
    refresh: bool = False,
) -> SimulatedSet:
    """:func:`simulate`, cached in HDF5 under :func:`phbook.config.data_dir`.

    The file name is a hash of ``n``, ``seed`` and every setting (``workers`` and
    ``progress`` do not change the images and are not part of it). ``refresh=True``
    simulates again and overwrites the file.
    """
    seed, fractions = _check_args(
        n, seed, fractions, redshift, num_pix, subhalo_profile, supersampling
    )
    s = _ds.resolve_settings(_regime_settings(regime), settings)
    description = {
        "n": int(n),
        "seed": seed,
        "fractions": fractions,
        "redshift": redshift,
        "num_pix": int(num_pix),
        "subhalo_profile": subhalo_profile,
        "supersampling": int(supersampling),
        "noise": bool(noise),
        "settings": s,
    }
    if regime != "default":  # the default regime keeps the file names it had
        description["regime"] = regime
    kwargs = dict(description, settings=s, workers=workers, progress=progress)
    return _ds.load_or_simulate("lensing", simulate, description, kwargs, refresh=refresh)
