"""The one place that knows the run profile, the device, the seed and the data folder.

Chapters never read environment variables: they ask this module.

* ``PHBOOK_PROFILE``: ``quick`` (tests and CI: small sizes, seconds per chapter) or
  ``full`` (the rendered book: sizes that give results worth reading). Default ``full``.
* ``PHBOOK_DEVICE``: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``. Default: CUDA when
  available, else the CPU.
* ``PHBOOK_DATA``: where generated data, checkpoints and caches go. Default: the
  ``.phbook_cache`` folder of the source checkout (git ignores it), or
  ``~/.cache/phbook`` when the package is installed elsewhere.
* ``PHBOOK_PROGRESS``: ``1`` or ``0`` forces progress bars on or off.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

PROFILES = ("quick", "full")
DEVICE_CHOICES = ("cpu", "cuda", "cuda:N", "mps")

#: chapter 9's detectors; the full profile adds the PixelCNN (slow on a CPU)
_BENCHMARK_DETECTORS = (
    "PCA",
    "IsolationForest",
    "LOF",
    "HillasCut",
    "AE",
    "VAE",
    "AAE",
    "f-AnoGAN",
    "FlowVAE",
)

# Every chapter's sizes, by chapter name and profile. A chapter asks
# ``sizes("autoencoders")`` and gets an object whose attributes are these numbers.
# Quick sizes keep each chapter well under two minutes on 2 CPU cores; full sizes
# give the rendered book results worth reading.
_SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "data": {
        "quick": {
            "n_sim": 4000,
            "frames_per_run": 4000,
            "n_select": 10000,
            "calib_n_sim": 1000,
            "calib_evaluations": 40,
        },
        "full": {
            "n_sim": 50000,
            "frames_per_run": 300000,
            "n_select": 250000,
            "calib_n_sim": 2500,
            "calib_evaluations": 300,
        },
    },
    "quickstart": {
        "quick": {"n_train": 3000, "n_test": 1000, "epochs": 4, "batch_size": 128},
        "full": {"n_train": 20000, "n_test": 4000, "epochs": 25, "batch_size": 256},
    },
    # Chapters 2-4 share one simulated benchmark (same sizes, so it is simulated once).
    "autoencoders": {
        "quick": {
            "n_train": 4000,
            "n_test_normal": 1000,
            "n_test_per_class": 100,
            "epochs": 6,
            "batch_size": 128,
            "n_nonzero": 8,
            "dict_epochs": 2,
            "n_lof": 2000,
        },
        "full": {
            "n_train": 40000,
            "n_test_normal": 10000,
            "n_test_per_class": 1000,
            "epochs": 10,
            "batch_size": 256,
            "n_nonzero": 8,
            "dict_epochs": 3,
            "n_lof": 20000,
        },
    },
    "beta_vae": {
        "quick": {
            "n_train": 4000,
            "n_test_normal": 1000,
            "n_test_per_class": 100,
            "epochs": 8,
            "batch_size": 128,
            "kl_warmup": 3,
            "n_generate": 2000,
        },
        "full": {
            "n_train": 40000,
            "n_test_normal": 10000,
            "n_test_per_class": 1000,
            "epochs": 15,
            "batch_size": 256,
            "kl_warmup": 5,
            "n_generate": 20000,
        },
    },
    "latent_space": {
        "quick": {"max_components": 8, "gmm_samples": 4000},
        "full": {"max_components": 15, "gmm_samples": 10000},
    },
    # chapter 5: WGAN-GP and DCGAN on PH frames, f-AnoGAN, AnoGAN, toy experiments
    "gans": {
        "quick": {
            "n_train": 3000,
            "n_test_normal": 1000,
            "n_test_per_class": 100,
            "epochs": 3,
            "dcgan_epochs": 2,
            "encoder_epochs": 2,
            "batch_size": 64,
            "anogan_frames": 70,
            "anogan_steps": 20,
            "toy_steps": 300,
        },
        "full": {
            "n_train": 20000,
            "n_test_normal": 4000,
            "n_test_per_class": 400,
            "epochs": 30,
            "dcgan_epochs": 10,
            "encoder_epochs": 15,
            "batch_size": 64,
            "anogan_frames": 1400,
            "anogan_steps": 100,
            "toy_steps": 3000,
        },
    },
    # chapter 6: contamination study (also bench/gan.py)
    "contamination": {
        "quick": {
            "n_train": 2000,
            "n_test_normal": 1000,
            "n_test_per_class": 100,
            "epochs": 2,
            "encoder_epochs": 2,
            "aae_epochs": 4,
            "ae_epochs": 3,
            "batch_size": 64,
        },
        "full": {
            "n_train": 10000,
            "n_test_normal": 4000,
            "n_test_per_class": 300,
            "epochs": 15,
            "encoder_epochs": 6,
            "aae_epochs": 15,
            "ae_epochs": 10,
            "batch_size": 64,
        },
    },
    # chapter 7 and bench/flows.py; the data sizes match chapter 8's (one cached set)
    "flows": {
        "quick": {
            "n_train": 1500,
            "n_test_normal": 400,
            "n_test_per_class": 50,
            "epochs": 4,
            "batch_size": 128,
            "latent_dim": 16,
            "beta": 1.0,
            "kl_warmup": 2,
            "n_flows": 2,
            "iwae_samples": 16,
            "flow_epochs": 1,
            "flow_hidden": 16,
            "demo_steps": 100,
            "demo_flows": 4,
        },
        "full": {
            "n_train": 12000,
            "n_test_normal": 3000,
            "n_test_per_class": 300,
            "epochs": 10,
            "batch_size": 128,
            "latent_dim": 16,
            "beta": 1.0,
            "kl_warmup": 3,
            "n_flows": 4,
            "iwae_samples": 32,
            "flow_epochs": 5,
            "flow_hidden": 32,
            "demo_steps": 500,
            "demo_flows": 8,
        },
    },
    "pixelcnn": {
        "quick": {
            "n_train": 1500,
            "n_test_normal": 400,
            "n_test_per_class": 50,
            "epochs": 2,
            "batch_size": 64,
            "channels": 16,
            "n_layers": 4,
            "n_shift": 300,
            "n_samples": 8,
        },
        "full": {
            "n_train": 12000,
            "n_test_normal": 3000,
            "n_test_per_class": 300,
            "epochs": 6,
            "batch_size": 64,
            "channels": 24,
            "n_layers": 5,
            "n_shift": 2000,
            "n_samples": 16,
        },
    },
    # chapter 13: a simulated archive scored out of core, by the command line and Dask
    # (rss_pe: thresholds whose runs are scored in separate processes to measure memory;
    # dask_pe: the threshold of the runs timed with Dask, None for the whole archive)
    "scaling": {
        "quick": {
            "n_archive": 100_000,
            "n_select": 10_000,
            "pool_size": 2_000,
            "n_top": 20,
            "rss_pe": (7.5,),
            "dask_pe": 7.5,
            "keep_archive": True,
        },
        "full": {
            "n_archive": 10_000_000,
            "n_select": 250_000,
            "pool_size": 20_000,
            "n_top": 30,
            "rss_pe": (7.5, 11.5),
            "dask_pe": 7.5,
            "keep_archive": False,
        },
    },
    # chapter 11: CHASE-like transient candidates (also bench/case_studies.py,
    # chase_aucs): an unlabelled pool, a labelled set the classifier may draw
    # n_labelled stamps from, a held-out labelled test set; label_curve: the subset
    # sizes of the AUC-against-labels curve, each drawn curve_seeds times
    "transients": {
        "quick": {
            "n_pool": 4000,
            "n_labelled_set": 1000,
            "n_labelled": 300,
            "n_test": 2000,
            "epochs": 4,
            "vae_epochs": 8,
            "kl_warmup": 3,
            "batch_size": 128,
            "dict_epochs": 2,
            "k": 10,
            "label_curve": (50, 100, 300),
            "curve_seeds": 1,
        },
        "full": {
            "n_pool": 40000,
            "n_labelled_set": 4000,
            "n_labelled": 1000,
            "n_test": 10000,
            "epochs": 10,
            "vae_epochs": 20,
            "kl_warmup": 5,
            "batch_size": 256,
            "dict_epochs": 5,
            "k": 10,
            "label_curve": (50, 100, 300, 1000, 4000),
            "curve_seeds": 3,
        },
    },
    # chapter 9 and bench/benchmark.py: every detector on one simulated benchmark
    # (the quick profile leaves out the PixelCNN and runs one seed)
    "benchmark": {
        "quick": {
            "n_train": 4000,
            "n_test_normal": 1000,
            "n_test_per_class": 100,
            "seeds": (0,),
            "detectors": _BENCHMARK_DETECTORS,
            "batch_size": 128,
            "ae_epochs": 6,
            "vae_epochs": 6,
            "aae_epochs": 4,
            "gan_epochs": 3,
            "encoder_epochs": 2,
            "flow_epochs": 4,
            "n_flows": 2,
            "pixelcnn_epochs": 1,
            "pixelcnn_channels": 16,
            "trigger_rate_hz": 0.3,
            "top_k": 8,
        },
        "full": {
            "n_train": 20000,
            "n_test_normal": 10000,
            "n_test_per_class": 500,
            "seeds": (0, 1, 2),
            "detectors": _BENCHMARK_DETECTORS + ("PixelCNN",),
            "batch_size": 256,
            "ae_epochs": 12,
            "vae_epochs": 15,
            "aae_epochs": 15,
            "gan_epochs": 15,
            "encoder_epochs": 6,
            "flow_epochs": 10,
            "n_flows": 4,
            "pixelcnn_epochs": 3,
            "pixelcnn_channels": 16,
            "trigger_rate_hz": 0.3,
            "top_k": 8,
        },
    },
    # chapter 10 and bench/case_studies.py (lensing_auc_*): smooth lenses to train on
    # (also the library of the smooth-lens fit), a test set of thirds of normal, cdm
    # and vortex lenses per redshift set; the four models of Alexander et al. and
    # the smooth-lens fit (n_starts starting points, fit_steps Adam steps, then
    # fit_polish Levenberg-Marquardt iterations)
    "lensing": {
        "quick": {
            "n_train": 400,
            "n_test": 45,
            "epochs": 2,
            "batch_size": 64,
            "channels": (8, 16, 16, 16),
            "latent_dim": 16,
            "rbm_components": 32,
            "rbm_iter": 3,
            "n_starts": 1,
            "fit_steps": 25,
            "fit_polish": 5,
        },
        "full": {
            "n_train": 2000,
            "n_test": 450,
            "epochs": 4,
            "batch_size": 64,
            "channels": (16, 32, 32, 32),
            "latent_dim": 32,
            "rbm_components": 256,
            "rbm_iter": 10,
            "n_starts": 2,
            "fit_steps": 60,
            "fit_polish": 10,
        },
    },
    # chapter 12: simulated galaxy stamps; f-AnoGAN, PixelCNN (stamps binned by
    # ``bin``) and the k-means baseline
    "galaxies": {
        "quick": {
            "n_train": 1500,
            "n_test": 1000,
            "epochs": 4,
            "encoder_epochs": 2,
            "batch_size": 64,
            "latent_dim": 32,
            "pixelcnn_epochs": 1,
            "pixelcnn_channels": 16,
            "pixelcnn_layers": 4,
            "background_epochs": 20,
            "bin": 2,
            "n_clusters": 8,
            "n_components": 32,
            "n_top": 8,
        },
        "full": {
            "n_train": 8000,
            "n_test": 4000,
            "epochs": 25,
            "encoder_epochs": 8,
            "batch_size": 64,
            "latent_dim": 32,
            "pixelcnn_epochs": 3,
            "pixelcnn_channels": 24,
            "pixelcnn_layers": 5,
            "background_epochs": 15,
            "bin": 2,
            "n_clusters": 16,
            "n_components": 32,
            "n_top": 10,
        },
    },
    # bench/case_studies.py: simulator speed (images per timed run, repeats, and the
    # number of lenses drawn one by one with lenstronomy's ImageModel as the baseline)
    "case_studies": {
        "quick": {"lensing_gen_n": 1000, "repeats": 3, "baseline_n": 30},
        "full": {"lensing_gen_n": 10000, "repeats": 3, "baseline_n": 200},
    },
}


class ConfigError(ValueError):
    """A bad profile, device or size name; the message lists the valid values."""


def profile() -> str:
    """The active profile, ``quick`` or ``full`` (from ``PHBOOK_PROFILE``)."""
    value = os.environ.get("PHBOOK_PROFILE", "full").strip().lower() or "full"
    if value not in PROFILES:
        raise ConfigError(
            f"PHBOOK_PROFILE={value!r} is not a profile; valid values: "
            + ", ".join(PROFILES)
        )
    return value


class Sizes(Mapping):
    """Read-only mapping of a chapter's sizes that also allows attribute access."""

    def __init__(self, values: dict[str, Any]):
        self._values = dict(values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(
                f"no size {key!r}; this chapter has: {', '.join(self._values)}"
            ) from None

    def __repr__(self) -> str:
        return f"Sizes({self._values})"


def sizes(chapter: str, profile_name: str | None = None) -> Sizes:
    """The sizes (numbers of images, epochs, ...) of ``chapter`` in the active profile."""
    if chapter not in _SIZES:
        raise ConfigError(
            f"no sizes for chapter {chapter!r}; known chapters: {', '.join(sorted(_SIZES))}"
        )
    name = profile_name or profile()
    if name not in PROFILES:
        raise ConfigError(f"profile {name!r} unknown; valid values: {', '.join(PROFILES)}")
    return Sizes(dict(_SIZES[chapter][name]))


def register_sizes(chapter: str, quick: dict[str, Any], full: dict[str, Any]) -> None:
    """Add or replace a chapter's sizes (for code outside the package, e.g. a course)."""
    if set(quick) != set(full):
        raise ConfigError(
            f"quick and full sizes of {chapter!r} must name the same keys: "
            f"{sorted(quick)} vs {sorted(full)}"
        )
    _SIZES[chapter] = {"quick": dict(quick), "full": dict(full)}


def device(name: str | None = None):
    """The torch device to use: ``name``, else ``PHBOOK_DEVICE``, else CUDA if present."""
    import torch

    value = (name or os.environ.get("PHBOOK_DEVICE", "")).strip().lower()
    if not value:
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    valid = f"valid values: {', '.join(DEVICE_CHOICES)}"
    if value == "cpu":
        return torch.device("cpu")
    if value == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ConfigError("device 'mps' was asked for but is not available here")
        return torch.device("mps")
    if value == "cuda" or value.startswith("cuda:"):
        index = value.partition(":")[2]
        if index and not index.isdigit():
            raise ConfigError(f"device {value!r} is not valid; {valid}")
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {value!r} was asked for but CUDA is not available here; "
                "use 'cpu' or unset PHBOOK_DEVICE"
            )
        if index and int(index) >= torch.cuda.device_count():
            raise ConfigError(
                f"device {value!r} asked for, but only {torch.cuda.device_count()} "
                "CUDA device(s) exist"
            )
        return torch.device(value)
    raise ConfigError(f"device {value!r} is not a device; {valid}")


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so that a run can be repeated."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _source_root() -> Path | None:
    root = Path(__file__).resolve().parent.parent
    return root if (root / "_config.yml").exists() and (root / "phbook").is_dir() else None


def data_dir() -> Path:
    """The folder for generated data, checkpoints and caches (created when missing)."""
    env = os.environ.get("PHBOOK_DATA", "").strip()
    if env:
        path = Path(env).expanduser()
    else:
        root = _source_root()
        path = root / ".phbook_cache" if root else Path.home() / ".cache" / "phbook"
    path.mkdir(parents=True, exist_ok=True)
    return path


def checkpoint_dir() -> Path:
    """Where trained models of the active profile are kept."""
    path = data_dir() / "checkpoints" / profile()
    path.mkdir(parents=True, exist_ok=True)
    return path


def real_data_dir() -> Path | None:
    """The folder of real PANOSETI sample files, or None when it is absent.

    ``PHBOOK_REAL_DATA`` names it; otherwise the ``shared/data/panoseti`` folder beside
    or inside the source checkout is used when present.
    """
    env = os.environ.get("PHBOOK_REAL_DATA", "").strip()
    candidates = [Path(env).expanduser()] if env else []
    root = _source_root()
    if root is not None:
        candidates += [
            root.parent / "shared" / "data" / "panoseti",
            root / "shared" / "data" / "panoseti",
        ]
    for path in candidates:
        if path.is_dir() and any(path.glob("*.pff")):
            return path
    return None


def show_progress() -> bool:
    """Whether long work shows a progress bar: ``PHBOOK_PROGRESS``, else if interactive."""
    env = os.environ.get("PHBOOK_PROGRESS", "").strip()
    if env in ("0", "1"):
        return env == "1"
    if "ipykernel" in sys.modules:
        return True
    return sys.stderr.isatty()
