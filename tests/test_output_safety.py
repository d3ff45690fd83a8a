"""Outputs the commands refuse before doing any work: an input as the output, an
existing file without --overwrite, a folder that takes no file; and the real-data
inputs they read whole (linked run folders, a run whose last frame is cut short)."""

from __future__ import annotations

import errno
import shutil

import numpy as np
import pytest

from phbook import cli, select
from phbook.detectors import PCAReconstruction
from phbook.io import archive as ar
from phbook.io import writing
from phbook.sim import calibration


def run(capsys, *args) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def real_run(real_ph256, tmp_path_factory):
    """A run folder holding the real ph256 file, a selection of it, a PCA model file
    and its scores, made through the command line."""
    folder = tmp_path_factory.mktemp("safety")
    run_dir = folder / "obs_Lick.start_2025-08-02T05:31:36Z.runtype_sci-data.pffd"
    run_dir.mkdir()
    shutil.copy(real_ph256, run_dir / real_ph256.name)
    sel, model, scores = folder / "sel.h5", folder / "pca.pt", folder / "scores.h5"
    assert cli.main(["select", str(run_dir), "-n", "all", "-o", str(sel), "-q"]) == 0
    train = ["train", str(sel), "--model", "pca", "--n-components", "8"]
    assert cli.main([*train, "-o", str(model), "-q"]) == 0
    assert cli.main(["score", str(model), str(run_dir), "-o", str(scores), "-q"]) == 0
    return folder, run_dir, sel, model, scores


def test_check_output_refuses_inputs_existing_files_and_unwritable_folders(
    tmp_path, monkeypatch
):
    src = tmp_path / "in.h5"
    src.write_bytes(b"x")
    with pytest.raises(ValueError, match="destroy its input"):
        writing.check_output(src, {"selection": src}, overwrite=True)
    link = tmp_path / "link.h5"
    link.symlink_to(src)
    with pytest.raises(ValueError, match="is the selection"):
        writing.check_output(link, {"selection": src}, overwrite=True)
    with pytest.raises(FileExistsError, match="--overwrite"):
        writing.check_output(src, {})
    assert writing.check_output(src, {}, overwrite=True) == src

    def read_only(path):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(writing, "before_write", read_only)
    with pytest.raises(writing.WriteError, match="read-only"):
        writing.check_output(tmp_path / "new.pt", probe=True)


def test_top_never_writes_over_its_score_file_or_an_existing_table(
    real_run, capsys, tmp_path
):
    _, _, _, _, scores = real_run
    before = scores.read_bytes()
    rc, _, err = run(capsys, "top", scores, "-k", 2, "--csv", scores, "--overwrite")
    assert rc == 1 and "destroy its input" in err
    assert scores.read_bytes() == before
    table = tmp_path / "top.csv"
    table.write_text("mine\n")
    rc, _, err = run(capsys, "top", scores, "-k", 2, "--csv", table, "-q")
    assert rc == 1 and "--overwrite" in err and table.read_text() == "mine\n"
    assert run(capsys, "top", scores, "-k", 2, "--csv", table, "--overwrite", "-q")[0] == 0
    assert table.read_text().startswith("rank,")
    for bad in (["-k", "0"], ["--ncols", "0"], ["--dpi", "100000"]):
        rc, _, err = run(capsys, "top", scores, *bad, "-o", tmp_path / "g.png")
        assert rc == 1 and bad[0] in err, err
    assert not (tmp_path / "g.png").exists()


def test_score_and_train_refuse_to_write_over_their_inputs(real_run, capsys, tmp_path):
    _, run_dir, sel, model, _ = real_run
    before = sel.read_bytes()
    rc, _, err = run(capsys, "score", model, sel, "-o", sel, "--overwrite")
    assert rc == 1 and "destroy its input" in err
    rc, _, err = run(capsys, "train", sel, "--model", "pca", "-o", sel, "--overwrite")
    assert rc == 1 and "destroy its input" in err
    assert sel.read_bytes() == before
    raw = next(run_dir.glob("*.pff"))
    before = raw.read_bytes()
    rc, _, err = run(
        capsys, "select", raw, "-n", 5, "--run-type", "any", "-o", raw, "--overwrite"
    )
    assert rc == 1 and "destroy its input" in err and raw.read_bytes() == before
    rc, _, err = run(
        capsys, "score", model, run_dir, "-o", tmp_path / "s.h5", "--workers", 0
    )
    assert rc == 1 and "--workers" in err
    rc, _, err = run(capsys, "inspect", run_dir, "--dp", "foo")
    assert rc == 2 and "invalid choice" in err


def test_train_learns_it_cannot_save_before_training(real_run, capsys, monkeypatch):
    folder, _, sel, _, _ = real_run
    trained = []
    real_fit = PCAReconstruction.fit

    def fit(self, x):
        trained.append(len(x))
        return real_fit(self, x)

    def read_only(path):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(PCAReconstruction, "fit", fit)
    monkeypatch.setattr(writing, "before_write", read_only)
    rc, _, err = run(capsys, "train", sel, "--model", "pca", "-o", folder / "ro" / "m.pt")
    assert rc == 1 and "read-only" in err and trained == []


def test_pca_with_as_many_components_as_frames_is_refused():
    x = np.random.default_rng(0).normal(size=(30, 1, 16, 16)).astype(np.float32)
    with pytest.raises(ValueError, match="needs more than 32 training frames, got 30"):
        PCAReconstruction(32).fit(x)
    PCAReconstruction(8).fit(x)


def test_linked_run_folders_are_part_of_the_archive(real_run, tmp_path):
    _, run_dir, _, _, _ = real_run
    arch = tmp_path / "archive"
    arch.mkdir()
    shutil.copytree(run_dir, arch / run_dir.name)
    other = run_dir.name.replace("2025-08-02", "2025-08-03")
    (arch / other).symlink_to(run_dir)
    (arch / "loop").symlink_to(arch)  # a link back up the tree is followed once
    files = ar.Archive(arch).files()
    assert len(files) == 2 and files["n_frames"].sum() == 176
    assert select.population(arch, {"run_type": None})["n_frames"].sum() == 176


def test_calibrate_reads_a_run_whose_last_frame_is_cut_short(real_ph256, tmp_path, capsys):
    cut = tmp_path / "run"
    cut.mkdir()
    raw = real_ph256.read_bytes()
    (cut / real_ph256.name).write_bytes(raw[: 87 * 636 + 300])  # the DAQ stopped mid-frame
    damage = []
    images, quabo = calibration.read_real_frames(cut, damage=damage)
    assert len(images) == len(quabo) == 87 and len(damage) == 1
    with pytest.raises(Exception, match=f"byte {87 * 636}"):
        calibration.read_real_frames(cut, strict=True)
    out = tmp_path / "p.json"
    out.write_text("{}")
    rc, _, err = run(capsys, "calibrate", cut, "-o", out)
    assert rc == 1 and "--overwrite" in err and out.read_text() == "{}"
    rc, _, err = run(capsys, "calibrate", cut, "-o", cut / real_ph256.name, "--overwrite")
    assert rc == 1 and "destroy its input" in err
    rc, _, err = run(capsys, "calibrate", cut, "-o", tmp_path / "q.json", "--n-sim", 0)
    assert rc == 1 and "n_sim" in err


def test_top_reads_back_only_the_frames_it_scored(real_run, capsys, tmp_path):
    """The table needs the score file alone; the gallery reads the frames back and
    refuses frames that are not those scored (a file replaced since)."""
    folder, run_dir, _, _, scores = real_run
    moved = folder / "moved"
    run_dir.rename(moved)
    rc, out, err = run(capsys, "top", scores, "-k", 3)
    assert rc == 0 and out.count("\n") == 4, err  # header + 3 rows
    rc, _, err = run(capsys, "top", scores, "-k", 3, "-o", tmp_path / "g.png")
    assert rc == 1 and "does not exist" in err
    moved.rename(run_dir)
    pff_file = next(run_dir.glob("*.pff"))
    raw = pff_file.read_bytes()
    fs = 636
    frames = [raw[i * fs : (i + 1) * fs] for i in range(len(raw) // fs)]
    pff_file.write_bytes(b"".join(frames[::-1]))  # same size, frames in reverse
    rc, _, err = run(capsys, "top", scores, "-k", 3, "-o", tmp_path / "g.png")
    assert rc == 1 and "source has changed since it was scored" in err
    assert not (tmp_path / "g.png").exists()
