"""Small archives, selections and model files for the scaling tests (scoring, the
command line, Dask, DDP). Everything is made with the fast stand-in simulator of
``fake_frames`` and takes well under a second."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from fake_frames import fake_source

from phbook import modelfile, select, transforms
from phbook.detectors import PCAReconstruction
from phbook.io import archive as ar
from phbook.io import pff
from phbook.sim import archive as sa

FRAME = pff.DATA_PRODUCTS["ph256"].frame_size  # 636 bytes


def make_archive(root: Path, n: int = 6000, seed: int = 3) -> ar.Archive:
    """A simulated archive of ``n`` frames in files of at most 700 frames."""
    runs = sa.plan_archive(n, seed=seed, frames_per_run=max(1, n // 6))
    return sa.write_archive(
        root,
        runs=runs,
        seed=seed,
        source=fake_source,
        anomaly_fraction=0.05,
        max_file_mb=700 * FRAME / 2**20,
        progress=False,
    )


def make_model(archive: ar.Archive, folder: Path, n: int = 1500) -> Path:
    """A PCA model file trained on a selection of ``n`` frames of ``archive``."""
    sel = select.select(archive, folder / "train.h5", n, progress=False, overwrite=True)
    images, labels, _ = select.load(sel)
    stretch = transforms.AsinhStretch()
    det = PCAReconstruction(6).fit(stretch(images))
    return modelfile.save(
        folder / "model.pt",
        det,
        "pca",
        dp="ph256",
        normalisation=stretch,
        training={"source": str(sel), "n_frames": len(images)},
    )


def damaged_copy(archive: ar.Archive, root: Path) -> tuple[ar.Archive, dict]:
    """A copy of ``archive`` with three damaged files: a corrupt header in the middle
    of one, 300 bytes cut out of the middle of another (the frames after it are
    shifted) and a truncated last frame in a third. Returns the archive and, per
    damaged file (relative name), the byte offset where its damage starts."""
    shutil.copytree(archive.root, root)
    damaged = ar.Archive(root)
    files = damaged.files()
    big = files.sort_values("n_frames", ascending=False).reset_index(drop=True)
    assert big["n_frames"][1] > 450, "the archive's files are too small to damage"
    where = {}
    a, b, c = big["path"][0], big["path"][1], big["path"][2]
    raw = bytearray(Path(a).read_bytes())
    raw[250 * FRAME + 30] = ord("?")  # header of frame 250
    Path(a).write_bytes(bytes(raw))
    where[big["file"][0]] = 250 * FRAME
    raw = Path(b).read_bytes()
    cut = 400 * FRAME + 100
    Path(b).write_bytes(raw[:cut] + raw[cut + 300 :])  # frame 400 loses 300 bytes
    where[big["file"][1]] = 400 * FRAME
    raw = Path(c).read_bytes()
    Path(c).write_bytes(raw[:-200])  # the last frame is cut short
    where[big["file"][2]] = (len(raw) // FRAME - 1) * FRAME
    return ar.Archive(root), where


def good_frames(archive: ar.Archive) -> dict[str, np.ndarray]:
    """Offsets of the good frames of every file, read with strict=False."""
    out = {}
    for row in archive.files().itertuples(index=False):
        out[row.file] = pff.read_frames(row.path, strict=False, warn=False).offsets
    return out
