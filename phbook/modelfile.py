"""Model files: a trained detector plus everything needed to score new frames with it.

``phbook train`` writes one, ``phbook score`` reads it. A model file records

* the detector *family* (a name in :data:`FAMILIES`, e.g. ``pca`` or ``beta-vae``), its
  hyperparameters and its fitted state (weights, components);
* the *normalisation* from detector units to what the detector saw (the asinh stretch
  of :mod:`phbook.transforms` and its parameters), so scoring repeats it exactly;
* the *data product* and image shape it was trained on, so that it refuses, with a
  clear message, to score frames of another size or product;
* a *training summary*: where the frames came from (selection file, query, seed,
  population), how many, their labels when simulated, the training settings and the
  distribution of the training scores.

The file is written with :func:`torch.save` and read with ``torch.load(...,
weights_only=True)``: it holds only tensors and plain values (str, int, float, bool,
None, lists and dicts of them), so **loading a model file never runs code**, whoever
made it. Arrays are stored as tensors; a family turns its fitted detector into such a
dict and back.

Adding a detector family to the command line is one :func:`register` call with a
:class:`Family`: a name, its command-line options, a function that builds an unfitted
detector from them, and two functions that turn a fitted detector into tensors and back.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, detectors, transforms
from .detectors import (
    Detector,
    HillasCut,
    PCAReconstruction,
    PointFlash,
    PyODDetector,
    ReadoutFaults,
)
from .detectors.pyod_detectors import PYOD_MODELS, SCALINGS
from .errors import ModelFileError  # raised by phbook.score too
from .io import pff

__all__ = [
    "FORMAT",
    "Option",
    "Family",
    "FAMILIES",
    "TRAIN_OPTIONS",
    "register",
    "family",
    "normaliser",
    "normalisation_spec",
    "ModelFile",
    "ModelFileError",
    "save",
    "load",
    "loads",
    "file_sha256",
]

FORMAT = "phbook-model-1"


# ----------------------------------------------------------------------------------
# The registry


@dataclass(frozen=True)
class Option:
    """One hyperparameter of a family, exposed on the command line as ``--<name>``
    (underscores become dashes)."""

    name: str
    type: type
    default: Any
    help: str
    choices: Sequence[Any] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def shown_default(self) -> str:
        """The default as ``--help`` shows it: ``unset`` where the detector chooses."""
        return "unset" if self.default is None else repr(self.default)


#: Training options shared by the families trained with :func:`phbook.train.fit`.
TRAIN_OPTIONS: tuple[Option, ...] = (
    Option("epochs", int, 20, "passes over the training frames"),
    Option("batch_size", int, 256, "frames per optimisation step (over all processes)"),
    Option("lr", float, 1e-3, "learning rate of Adam"),
    Option(
        "patience",
        int,
        0,
        "stop when the validation loss has not improved for this many epochs (0: never)",
    ),
)


@dataclass(frozen=True)
class Family:
    """A detector family the command line can train, save, load and score with.

    ``build(params, fit_kwargs)`` returns an unfitted :class:`~phbook.detectors.Detector`
    from the family's hyperparameters (``params``, one value per option) and, for
    families trained by :func:`phbook.train.fit` (``trains=True``), the keyword
    arguments of that loop (epochs, batch size, validation data, checkpoint,
    ``distributed``). ``get_state(detector)`` returns ``(params, state)``: plain values
    and arrays (NumPy or torch) that describe the fitted detector; ``set_state(params,
    state, image_shape)`` rebuilds the fitted detector from them.
    """

    name: str
    summary: str
    options: tuple[Option, ...]
    build: Callable[[dict, dict], Detector]
    get_state: Callable[[Detector], tuple[dict, dict]]
    set_state: Callable[[dict, dict, tuple], Detector]
    trains: bool = False  #: trained with phbook.train.fit (epochs, lr, DDP, GPUs)
    aliases: tuple[str, ...] = field(default_factory=tuple)
    #: a normalisation the family needs whatever the user asks for ("none": the
    #: detector takes detector units, e.g. ADC for cuts on image parameters)
    normalisation: str | None = None
    #: option -> the value that model files written before the option existed were
    #: made with (where it differs from today's default): :func:`load` fills it in
    legacy: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def defaults(self) -> dict[str, Any]:
        """Every option of the family at its default value."""
        opts = self.options + (TRAIN_OPTIONS if self.trains else ())
        return {o.name: o.default for o in opts}


#: Registered families by name (aliases included).
FAMILIES: dict[str, Family] = {}


def register(fam: Family) -> Family:
    """Add a family (and its aliases) to :data:`FAMILIES`; returns it."""
    for name in (fam.name, *fam.aliases):
        FAMILIES[name] = fam
    return fam


def family(name: str) -> Family:
    """The family called ``name``; a clear error listing the known ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        known = ", ".join(sorted({f.name for f in FAMILIES.values()}))
        raise ModelFileError(f"unknown model {name!r}; known models: {known}") from None


# --- PCA reconstruction: the linear baseline


def _pca_build(params: dict, fit_kwargs: dict) -> Detector:
    return PCAReconstruction(
        n_components=int(params["n_components"]),
        contamination=float(params.get("contamination", 0.01)),
    )


def _pca_get(det: Detector) -> tuple[dict, dict]:
    pca = det.pca_
    params = {"n_components": int(det.n_components)}
    state = {
        "components": pca.components_,
        "mean": pca.mean_,
        "explained_variance": pca.explained_variance_,
        "explained_variance_ratio": pca.explained_variance_ratio_,
        "singular_values": pca.singular_values_,
    }
    return params, state


def _pca_set(params: dict, state: dict, image_shape: tuple) -> Detector:
    from sklearn.decomposition import PCA

    comps = _np(state["components"])
    det = PCAReconstruction(n_components=int(params["n_components"]))
    pca = PCA(n_components=comps.shape[0])
    pca.components_ = comps
    pca.mean_ = _np(state["mean"])
    pca.explained_variance_ = _np(state["explained_variance"])
    pca.explained_variance_ratio_ = _np(state["explained_variance_ratio"])
    pca.singular_values_ = _np(state["singular_values"])
    pca.n_components_ = comps.shape[0]
    pca.n_features_in_ = comps.shape[1]
    pca.whiten = False
    det.pca_ = pca
    return det


register(
    Family(
        name="pca",
        summary="reconstruction error from principal components (the linear baseline)",
        options=(Option("n_components", int, 32, "principal components kept"),),
        build=_pca_build,
        get_state=_pca_get,
        set_state=_pca_set,
    )
)


# --- a box cut on Hillas parameters: the physics baseline


def _hillas_build(params: dict, fit_kwargs: dict) -> Detector:
    return HillasCut(
        tail=float(params["tail"]), contamination=float(params.get("contamination", 0.01))
    )


def _hillas_get(det: Detector) -> tuple[dict, dict]:
    state = {"low": det.low_, "high": det.high_, "median": det.median_, "scale": det.scale_}
    return {"tail": float(det.tail)}, state


def _hillas_set(params: dict, state: dict, image_shape: tuple) -> Detector:
    det = HillasCut(tail=float(params["tail"]))
    det.low_, det.high_ = _np(state["low"]), _np(state["high"])
    det.median_, det.scale_ = _np(state["median"]), _np(state["scale"])
    return det


def _register_hillas() -> None:
    register(
        Family(
            name="hillas-cut",
            summary="box cut on Hillas image parameters, in ADC (the physics baseline)",
            options=(
                Option(
                    "tail",
                    float,
                    0.005,
                    "fraction of training frames outside each end of a feature's box",
                ),
            ),
            build=_hillas_build,
            get_state=_hillas_get,
            set_state=_hillas_set,
            normalisation="none",
        )
    )


_register_hillas()


# --- dead rows, columns and MAROC quarters, pedestal jumps: a check of the readout


def _readout_build(params: dict, fit_kwargs: dict) -> Detector:
    return ReadoutFaults(
        window=float(params["window"]),
        min_p=float(params["min_p"]),
        level_tolerance=float(params["level_tolerance"]),
        contamination=float(params.get("contamination", 0.01)),
    )


def _readout_get(det: Detector) -> tuple[dict, dict]:
    params = {k: float(getattr(det, k)) for k in ("window", "min_p", "level_tolerance")}
    state = {
        "p_near": det.p_near_,
        "log_tail": det.log_tail_,
        "median": det.median_,
        "median_scale": det.median_scale_,
    }
    return params, state


def _readout_set(params: dict, state: dict, image_shape: tuple) -> Detector:
    det = _readout_build(params, {})
    det.p_near_, det.log_tail_ = float(state["p_near"]), _np(state["log_tail"])
    det.median_, det.median_scale_ = float(state["median"]), float(state["median_scale"])
    return det


register(
    Family(
        name="readout-faults",
        summary="dead rows, columns and MAROC quarters, pedestal jumps, in ADC (a "
        "check of the readout)",
        options=(
            Option(
                "window", float, 2.0, "ADC from 0 within which a pixel reads its baseline"
            ),
            Option(
                "min_p", float, 0.05, "smallest rate of such pixels in a working readout"
            ),
            Option(
                "level_tolerance",
                float,
                0.25,
                "drift of the frame median tolerated, as a fraction of the normal median",
            ),
        ),
        build=_readout_build,
        get_state=_readout_get,
        set_state=_readout_set,
        normalisation="none",
    )
)


# --- a pixel far brighter than its neighbours: point flashes and hot pixels


def _pointflash_build(params: dict, fit_kwargs: dict) -> Detector:
    return PointFlash(
        noise_floor=float(params["noise_floor"]),
        contamination=float(params.get("contamination", 0.01)),
        # older files get these from the family's legacy values (load)
        block=str(params["block"]),
        slope=params["slope"],
    )


def _pointflash_get(det: Detector) -> tuple[dict, dict]:
    state = {
        "tail_start": det.tail_start_,
        "tail_mass": det.tail_mass_,
        "tail_scale": det.tail_scale_,
        "sorted": det.sorted_,
    }
    block = "x".join(str(b) for b in det.footprint)
    params = {"noise_floor": float(det.noise_floor), "block": block}
    return {**params, "slope": det.ring_slope}, state


def _pointflash_set(params: dict, state: dict, image_shape: tuple) -> Detector:
    det = _pointflash_build(params, {})
    det.tail_start_ = float(state["tail_start"])
    det.tail_mass_ = float(state["tail_mass"])
    det.tail_scale_ = float(state["tail_scale"])
    det.sorted_ = _np(state["sorted"]).astype(np.float64)
    return det


register(
    Family(
        name="point-flash",
        summary="a pixel far brighter than its neighbours: point flashes (optical SETI) "
        "and hot pixels, in ADC",
        options=(
            Option(
                "noise_floor",
                float,
                10.0,
                "ADC added to the neighbours' mean under the square root of the noise",
            ),
            Option(
                "block",
                str,
                "1x1",
                "the flash's footprint, rows x columns: 1x1 one pixel, 2x2 light shared "
                "where four pixels meet (the block's weakest pixel against its ring)",
            ),
            Option(
                "slope",
                float,
                None,
                "how much of the rise from the next ring out to the ring is carried "
                "into the light expected in the block (unset: 0 for 1x1, 1 for a larger "
                "block)",
            ),
        ),
        build=_pointflash_build,
        get_state=_pointflash_get,
        set_state=_pointflash_set,
        normalisation="none",
        # files from before the block and slope options: one pixel, no slope
        legacy={"block": "1x1", "slope": 0.0},
    )
)

# --- any PyOD detector (phbook.detectors.pyod_detectors): the reader's familiar baselines


def _pyod_build(params: dict, fit_kwargs: dict) -> Detector:
    return PyODDetector(
        str(params["pyod_model"]),
        scale=str(params["pyod_scale"]),
        params=json.loads(params["pyod_params"] or "{}"),
        seed=int(params["pyod_seed"]),
        keep_training_frames=True,
        contamination=float(params.get("contamination", 0.01)),
    )


def _pyod_get(det: Detector) -> tuple[dict, dict]:
    # PyOD's fitted objects are not arrays: the file keeps the training frames and
    # the options, and loading refits the detector on them (deterministic: seeded)
    params = {
        "pyod_model": str(det.estimator),
        "pyod_scale": str(det.scale),
        "pyod_params": json.dumps(det.params or {}, sort_keys=True),
        "pyod_seed": int(det.seed),
    }
    return params, {"x_train": det.x_train_}


def _pyod_set(params: dict, state: dict, image_shape: tuple) -> Detector:
    det = _pyod_build(params, {})
    return det.fit(_np(state["x_train"]).reshape(-1, *image_shape))


def _register_pyod() -> None:
    register(
        Family(
            name="pyod",
            summary="any PyOD detector on flattened frames (KNN, LOF, ECOD, IForest, ...)",
            options=(
                Option("pyod_model", str, "KNN", "PyOD class", tuple(PYOD_MODELS)),
                Option("pyod_scale", str, "none", "feature scaling", SCALINGS),
                Option("pyod_params", str, "{}", "constructor arguments as JSON"),
                Option("pyod_seed", int, 0, "seed of randomised PyOD detectors"),
            ),
            build=_pyod_build,
            get_state=_pyod_get,
            set_state=_pyod_set,
        )
    )


_register_pyod()


# --- neural networks: any DeepDetector of phbook.detectors


def int_tuple(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"16,32"`` (or a sequence) as ``(16, 32)``: convolution channels on a command
    line."""
    if isinstance(text, str):
        try:
            return tuple(int(t) for t in text.replace(" ", "").split(",") if t)
        except ValueError:
            raise ValueError(
                f"{text!r} is not a comma-separated list of integers"
            ) from None
    return tuple(int(t) for t in text)


def _gmm_state(gmm) -> tuple[dict, dict]:
    params = {"gmm_covariance_type": str(gmm.covariance_type)}
    state = {
        "weights": gmm.weights_,
        "means": gmm.means_,
        "covariances": gmm.covariances_,
        "precisions_cholesky": gmm.precisions_cholesky_,
    }
    return params, state


def _gmm_from_state(params: dict, state: dict):
    from sklearn.mixture import GaussianMixture

    means = _np(state["means"])
    gmm = GaussianMixture(
        n_components=len(means), covariance_type=params["gmm_covariance_type"]
    )
    gmm.weights_ = _np(state["weights"])
    gmm.means_ = means
    gmm.covariances_ = _np(state["covariances"])
    gmm.precisions_cholesky_ = _np(state["precisions_cholesky"])
    if gmm.covariance_type == "full":
        gmm.precisions_ = np.einsum(
            "kij,klj->kil", gmm.precisions_cholesky_, gmm.precisions_cholesky_
        )
    elif gmm.covariance_type == "tied":
        gmm.precisions_ = gmm.precisions_cholesky_ @ gmm.precisions_cholesky_.T
    else:
        gmm.precisions_ = gmm.precisions_cholesky_**2
    gmm.n_features_in_ = means.shape[1]
    gmm.converged_ = True
    return gmm


def deep_family(
    name: str,
    detector: str,
    summary: str,
    model_options: Sequence[Option],
    detector_options: Sequence[Option] = (),
    *,
    aliases: Sequence[str] = (),
    legacy: dict[str, Any] | None = None,
) -> Family:
    """The registry entry of a neural-network detector of :mod:`phbook.detectors`
    (a ``DeepDetector`` subclass, named by ``detector``).

    ``model_options`` go to the model's constructor (``model_kwargs``), e.g.
    ``latent_dim`` and ``beta``; ``detector_options`` to the detector, e.g. ``score``.
    ``legacy``: :attr:`Family.legacy`.
    The state saved is the model's ``state_dict`` and, for the latent-space scores,
    the Gaussian mixture fitted to the training codes.
    """
    model_options, detector_options = tuple(model_options), tuple(detector_options)

    def cls():
        return getattr(detectors, detector)

    def split(params: dict) -> tuple[dict, dict]:
        mk = {}
        for o in model_options:
            value = params[o.name]
            mk[o.name] = int_tuple(value) if o.type is int_tuple else value
        dk = {o.name: params[o.name] for o in detector_options}
        return mk, dk

    def build(params: dict, fit_kwargs: dict) -> Detector:
        mk, dk = split(params)
        return cls()(
            model_kwargs=mk,
            fit_kwargs=dict(fit_kwargs),
            contamination=float(params.get("contamination", 0.01)),
            **dk,
        )

    def get_state(det: Detector) -> tuple[dict, dict]:
        params = {
            **dict(det.model_kwargs or {}),
            **{o.name: getattr(det, o.name) for o in detector_options},
        }
        state: dict[str, Any] = {
            "model": {k: v.detach().cpu() for k, v in det.model_.state_dict().items()}
        }
        if getattr(det, "gmm_", None) is not None:
            gp, gs = _gmm_state(det.gmm_)
            params.update(gp)
            state["gmm"] = gs
        return params, state

    def set_state(params: dict, state: dict, image_shape: tuple) -> Detector:
        mk, dk = split(
            {**{o.name: o.default for o in model_options + detector_options}, **params}
        )
        det = cls()(model_kwargs=mk, train=False, **dk)
        model = det.model_class(image_size=tuple(image_shape[-2:]), **mk)
        model.load_state_dict(state["model"])
        det.model_ = model.eval()
        det.history_ = None
        if "gmm" in state:
            det.gmm_ = _gmm_from_state(params, state["gmm"])
        return det

    return Family(
        name=name,
        summary=summary,
        options=model_options + detector_options,
        build=build,
        get_state=get_state,
        set_state=set_state,
        trains=True,
        aliases=tuple(aliases),
        legacy=dict(legacy or {}),
    )


def _register_deep() -> None:
    """The neural networks of the book."""
    register(
        deep_family(
            "ae",
            "AutoencoderDetector",
            "sparse convolutional autoencoder: reconstruction error (chapter 2)",
            (
                Option("latent_dim", int, 32, "latent dimensions"),
                Option("channels", int_tuple, "32,32", "convolution channels, e.g. 32,32"),
                Option("l1", float, 0.005, "L1 weight on the latent layer"),
            ),
            (
                Option(
                    "score",
                    str,
                    "recon",
                    "anomaly score: recon, latent_nll or latent_dist",
                ),
            ),
            aliases=("autoencoder",),
        )
    )
    register(
        deep_family(
            "beta-vae",
            "VAEDetector",
            "convolutional beta-VAE: ELBO, reconstruction or KL score (chapter 3)",
            (
                Option("latent_dim", int, 32, "latent dimensions"),
                Option("beta", float, 1.0, "weight of the KL term"),
                Option("channels", int_tuple, "16,32", "convolution channels, e.g. 16,32"),
                Option("kl_warmup", int, 0, "epochs of KL annealing from 0 to beta"),
                Option("l1_weight", float, 0.0, "L1 penalty on all weights"),
            ),
            (
                Option(
                    "score",
                    str,
                    "elbo",
                    "anomaly score: elbo, recon, kl, latent_nll or latent_dist",
                ),
                Option("n_samples", int, 8, "posterior samples of the ELBO score"),
                Option(
                    "elbo_beta",
                    float,
                    None,
                    "the beta dividing the squared error of the ELBO score (unset: the "
                    "model's own, whose decoder has pixel variance beta/2)",
                ),
            ),
            aliases=("vae",),
            # files written before the option scored the ELBO with beta 1, and their
            # thresholds belong to that score
            legacy={"elbo_beta": 1.0},
        )
    )


_register_deep()


# ----------------------------------------------------------------------------------
# Normalisations


class Identity:
    """No normalisation: pixel values as float32, in detector units."""

    def __call__(self, x) -> np.ndarray:
        return self.forward(x)

    def forward(self, x) -> np.ndarray:
        return np.asarray(x, dtype=np.float32)

    def inverse(self, y) -> np.ndarray:
        return np.asarray(y, dtype=np.float32)

    def __repr__(self) -> str:
        return "Identity()"


def _normalisations() -> dict[str, tuple[type, tuple[str, ...]]]:
    return {
        "asinh": (transforms.AsinhStretch, ("softening", "x_max")),
        "linear": (transforms.LinearScale, ("scale",)),
        "none": (Identity, ()),
    }


def normalisation_spec(transform: Any) -> dict[str, Any]:
    """The plain-value description of a transform of :mod:`phbook.transforms`."""
    for kind, (cls, names) in _normalisations().items():
        if type(transform) is cls:
            return {"kind": kind, **{n: float(getattr(transform, n)) for n in names}}
    raise ModelFileError(
        f"cannot record the normalisation {transform!r}; known: "
        + ", ".join(_normalisations())
    )


def normaliser(spec: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """The transform described by ``spec`` (from :func:`normalisation_spec`)."""
    kinds = _normalisations()
    kind = spec.get("kind")
    if kind not in kinds:
        raise ModelFileError(f"unknown normalisation {kind!r}; known: {', '.join(kinds)}")
    cls, names = kinds[kind]
    return cls(**{n: spec[n] for n in names})


# ----------------------------------------------------------------------------------
# Saving and loading


def _np(value) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _to_tensors(state: dict) -> dict:
    import torch

    out = {}
    for key, value in state.items():
        if isinstance(value, dict):
            out[key] = _to_tensors(value)
        elif isinstance(value, torch.Tensor):
            out[key] = value.detach().cpu()
        else:
            arr = np.asarray(value)
            if arr.dtype.kind not in "biuf":
                raise ModelFileError(f"state entry {key!r} is not numeric ({arr.dtype})")
            out[key] = torch.from_numpy(np.ascontiguousarray(arr))
    return out


def _plain(value: Any, where: str = "value") -> Any:
    """``value`` made of plain types only (what ``weights_only`` loading accepts)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    raise ModelFileError(f"{where} of type {type(value).__name__} is not a plain value")


@dataclass
class ModelFile:
    """A loaded model file: the fitted detector and what it was trained on."""

    family: str
    params: dict[str, Any]
    detector: Detector
    dp: str
    image_shape: tuple[int, ...]  #: (C, H, W) the detector takes
    normalisation: dict[str, Any]
    training: dict[str, Any]
    created: str = ""
    phbook_version: str = ""
    path: str | None = None
    sha256: str = ""

    def __post_init__(self):
        self._norm = normaliser(self.normalisation)

    def __repr__(self) -> str:
        return (
            f"ModelFile({self.family}, {self.dp} {self.image_shape}, "
            f"trained on {self.training.get('n_frames', '?')} frames)"
        )

    def check(self, dp: str, shape: Sequence[int], where: str) -> None:
        """Raise :class:`ModelFileError` when frames of product ``dp`` and image shape
        ``shape`` (H, W) from ``where`` cannot be scored by this model."""
        name = self.path or "the model"
        hw = tuple(int(s) for s in shape)
        if dp != self.dp or hw != tuple(self.image_shape[-2:]):
            raise ModelFileError(
                f"{name} was trained on {self.dp} frames of "
                f"{self.image_shape[-2]}x{self.image_shape[-1]} pixels; {where} holds "
                f"{dp} frames of {hw[0]}x{hw[1]} pixels. Train a model on {dp} frames "
                "(phbook select --dp ..., phbook train ...) to score them."
            )

    def _table(self, dtype: np.dtype) -> np.ndarray:
        """The normalisation of every value of a 1- or 2-byte integer pixel type,
        indexed by the pixel's bits read as unsigned."""
        tables = self.__dict__.setdefault("_tables", {})
        if dtype not in tables:
            bits = np.arange(1 << (8 * dtype.itemsize), dtype=np.uint32)
            values = bits.astype(f"u{dtype.itemsize}").view(dtype)
            tables[dtype] = np.asarray(self._norm(values), dtype=np.float32)
        return tables[dtype]

    def normalise(self, images: np.ndarray) -> np.ndarray:
        """Detector units (ADC) to the float32 ``(N, C, H, W)`` the detector takes.

        Pixels of 1- or 2-byte integer types (every PANOSETI product) are normalised by
        looking their value up in a table of the transform of all 256 or 65,536 values:
        the same numbers as applying the transform, several times faster.
        """
        images = np.asarray(images)
        if images.dtype.kind in "iu" and images.dtype.itemsize <= 2:
            table = self._table(images.dtype)
            x = table[images.view(f"u{images.dtype.itemsize}")]
        else:
            x = self._norm(images)
        return x.reshape(len(x), *self.image_shape)

    def score(self, images: np.ndarray) -> np.ndarray:
        """Anomaly scores (higher = more anomalous) of raw frames, float32."""
        if len(images) == 0:
            return np.empty(0, np.float32)
        return self.detector.anomaly_score(self.normalise(images)).astype(np.float32)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (identifies the model a score file was made with)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save(
    path: str | os.PathLike,
    detector: Detector,
    family_name: str,
    *,
    dp: str,
    normalisation: Any,
    training: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> Path:
    """Write a fitted detector as a model file (atomically: a temporary file renamed).

    ``normalisation`` is a transform of :mod:`phbook.transforms` (or its spec dict);
    ``training`` a dict of plain values describing the training data; ``params`` extra
    hyperparameters to record beside those the family reports.
    """
    import torch

    fam = family(family_name)
    if not hasattr(detector, "image_shape_"):
        raise ModelFileError(f"the {fam.name} detector is not fitted; fit it before saving")
    pff.data_product(dp)
    fam_params, state = fam.get_state(detector)
    spec = normalisation if isinstance(normalisation, dict) else None
    spec = spec or normalisation_spec(normalisation)
    obj = {
        "format": FORMAT,
        "family": fam.name,
        "params": _plain({**(params or {}), **fam_params}, "params"),
        "state": _to_tensors(state),
        "dp": dp,
        "image_shape": [int(s) for s in detector.image_shape_],
        "normalisation": _plain(spec, "normalisation"),
        "offset": float(detector.offset_),
        "contamination": float(detector.contamination),
        "training": _plain(training or {}, "training"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "phbook_version": __version__,
        "torch_version": str(torch.__version__),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load(path: str | os.PathLike, device=None) -> ModelFile:
    """Read a model file safely (``weights_only=True``: no code runs) and rebuild the
    fitted detector. ``device`` is where deep detectors score (default
    :func:`phbook.config.device`)."""
    path = Path(path)
    data = path.read_bytes()  # FileNotFoundError names the path
    model = loads(data, name=str(path), device=device)
    model.path = str(path)
    return model


def loads(data: bytes, name: str = "<bytes>", device=None) -> ModelFile:
    """:func:`load` from the bytes of a model file (``name`` is used in messages)."""
    import torch

    if data.startswith(b"\x89HDF\r\n\x1a\n"):
        raise ModelFileError(
            f"{name} is an HDF5 file (a selection or a score file?), not a model file; "
            "phbook train writes model files"
        )
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the message must name the file
        why = (str(exc).strip().splitlines() or [""])[0][:160]
        raise ModelFileError(
            f"{name}: not a phbook model file, or one that could only be read by running "
            f"code, which phbook refuses to do ({type(exc).__name__}: {why})"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        got = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise ModelFileError(
            f"{name}: not a phbook model file (format {got!r}, expected {FORMAT!r}); "
            "phbook train writes them"
        )
    try:
        fam = family(obj["family"])
    except ModelFileError as exc:
        raise ModelFileError(f"{name}: {exc}") from None
    shape = tuple(int(s) for s in obj["image_shape"])
    # a file written before an option existed was made with the option's legacy value
    params = {**fam.legacy, **dict(obj["params"])}
    try:
        det = fam.set_state(dict(params), dict(obj["state"]), shape)
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise ModelFileError(
            f"{name}: the {fam.name} state does not fit its parameters ({exc})"
        ) from None
    det.image_shape_ = shape
    det.offset_ = float(obj["offset"])
    det.contamination = float(obj["contamination"])
    if device is not None and hasattr(det, "device"):
        det.device = device
    if hasattr(det, "model_") and hasattr(det, "_device"):  # a neural network
        det.model_.to(det._device())
    return ModelFile(
        family=fam.name,
        params=params,
        detector=det,
        dp=str(obj["dp"]),
        image_shape=shape,
        normalisation=dict(obj["normalisation"]),
        training=dict(obj["training"]),
        created=str(obj.get("created", "")),
        phbook_version=str(obj.get("phbook_version", "")),
        path=None,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """What a model file holds, as plain values (``phbook inspect MODEL``)."""
    m = load(path, device="cpu")
    return {
        "kind": "model",
        "path": str(path),
        "family": m.family,
        "params": m.params,
        "dp": m.dp,
        "image_shape": list(m.image_shape),
        "normalisation": m.normalisation,
        "threshold": -float(m.detector.offset_),
        "contamination": float(m.detector.contamination),
        "training": m.training,
        "created": m.created,
        "phbook_version": m.phbook_version,
        "sha256": m.sha256,
    }
