"""The phbook command, driven in-process through phbook.cli.main on a small archive."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scale_helpers import FRAME, damaged_copy, good_frames, make_archive

from phbook import cli, modelfile, score, select
from phbook.io import pff


@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    return make_archive(tmp_path_factory.mktemp("cli") / "archive", 6000, seed=4)


def run(capsys, *args) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def trained(arch, tmp_path_factory):
    """select + train through the command line, once for the module."""
    folder = tmp_path_factory.mktemp("trained")
    sel, model = folder / "sel.h5", folder / "model.pt"
    assert (
        cli.main(
            [
                "select",
                str(arch.root),
                "--pe-threshold",
                "11.5",
                "--min-domes",
                "2",
                "-n",
                "1200",
                "-o",
                str(sel),
                "-q",
            ]
        )
        == 0
    )
    assert (
        cli.main(
            [
                "train",
                str(sel),
                "--model",
                "pca",
                "--n-components",
                "5",
                "-o",
                str(model),
                "-q",
            ]
        )
        == 0
    )
    return sel, model


def test_help_explains_every_step(capsys):
    rc, out, _ = run(capsys, "--help")
    assert rc == 0
    for word in ("inspect", "select", "train", "score", "top", "resume"):
        assert word in out
    for command, words in {
        "inspect": ("damaged", "--no-scan"),
        "select": ("uniformly at random", "--pe-threshold", "--min-domes"),
        "train": ("pca", "--n-components", "torchrun", "weights", "[point-flash: unset]"),
        "score": ("journal", "--scheduler", "--workers", "resumes", "--strict"),
        "top": ("byte offset", "--csv"),
    }.items():
        rc, out, _ = run(capsys, command, "--help")
        out = " ".join(out.split())  # help text is wrapped to the terminal
        assert rc == 0
        for word in words:
            assert word in out, (command, word)
        assert ": None]" not in out  # a default the detector chooses reads "unset"
    rc, _, err = run(capsys, "score")
    assert rc == 2 and "required" in err


def test_inspect_archive_finds_damage(arch, tmp_path, capsys):
    damaged, where = damaged_copy(arch, tmp_path / "damaged")
    rc, out, _ = run(capsys, "inspect", damaged.root, "--json", "-q")
    assert rc == 0
    d = json.loads(out)
    files = damaged.files()
    assert d["kind"] == "archive" and d["files"] == len(files)
    assert d["runs"] == files["run"].nunique()
    assert d["modules"] == sorted(files["module"].unique().tolist())
    assert d["pe_thresholds"] == [7.5, 11.5, 15.0]
    assert d["products"]["ph256"]["frames"] == files["n_frames"].sum()
    scan = d["scan"]
    assert scan["frames"] == sum(len(v) for v in good_frames(damaged).values())
    assert scan["quabos"] == [0, 1, 2, 3]
    assert scan["damaged_stretches"] == len(where)
    assert {(x["file"], x["offset"]) for x in scan["damage"]} == set(where.items())
    assert scan["time_start"] < scan["time_end"]
    rc, out, _ = run(capsys, "inspect", damaged.root, "-q")
    assert "damaged stretches: 3" in out and "PE thresholds: 7.5, 11.5, 15" in out
    name, offset = next(iter(where.items()))
    assert f"{name} at byte {offset}" in out


def test_inspect_a_single_file_and_without_scan(arch, capsys):
    row = arch.files().iloc[0]
    rc, out, _ = run(capsys, "inspect", row.path, "--json", "-q")
    d = json.loads(out)
    assert rc == 0 and d["kind"] == "file" and d["files"] == 1
    assert d["scan"]["frames"] == row.n_frames and d["modules"] == [row.module]
    assert d["pe_thresholds"] == [row.pe_threshold]  # from its run folder
    rc, out, _ = run(capsys, "inspect", arch.root, "--no-scan")
    assert rc == 0 and "not read" in out and "runs:" in out
    n_runs = len(arch.runs)
    rc, short, _ = run(capsys, "inspect", arch.root, "--no-scan", "--max-runs", "2")
    assert rc == 0 and f"... {n_runs - 2} more run(s) ..." in short
    listed = [r.name for r in arch.runs if r.name in short]
    assert listed == [arch.runs[0].name, arch.runs[-1].name]
    with pytest.raises(SystemExit, match="--max-runs 0: give 1 or more"):
        cli.main(["inspect", str(arch.root), "--no-scan", "--max-runs", "0"])


def test_inspect_other_files(trained, capsys):
    sel, model = trained
    rc, out, _ = run(capsys, "inspect", sel)
    assert rc == 0 and "selection of 1,200 ph256 frames" in out
    rc, out, _ = run(capsys, "inspect", model, "--json")
    d = json.loads(out)
    assert d["family"] == "pca" and d["params"] == {"n_components": 5}
    assert d["training"]["n_frames"] == 1200
    assert d["training"]["query"]["pe_threshold"] == [11.5]
    rc, _, err = run(capsys, "inspect", sel.parent / "missing.pff")
    assert rc == 1 and "missing.pff does not exist" in err


def test_select_writes_the_query(arch, trained):
    sel, _ = trained
    attrs = select.read_attrs(sel)
    assert attrs["n_selected"] == 1200
    assert attrs["query"]["min_domes"] == 2 and attrs["query"]["pe_threshold"] == [11.5]
    _, _, meta = select.load(sel)
    assert set(meta["pe_threshold"]) == {11.5}


def test_select_errors_are_clear(arch, tmp_path, capsys):
    rc, _, err = run(capsys, "select", arch.root, "-n", "10000000", "-o", tmp_path / "s.h5")
    assert rc == 1 and "cannot draw -n 10,000,000 (-n all takes them all)" in err
    assert not (tmp_path / "s.h5").exists()
    rc, _, err = run(
        capsys,
        "select",
        arch.root,
        "-n",
        "10",
        "-o",
        tmp_path / "s.h5",
        "--run-type",
        "calibration",
    )
    assert rc == 1 and "--run-type any" in err
    rc, _, err = run(
        capsys, "select", tmp_path / "nowhere", "-n", "10", "-o", tmp_path / "s"
    )
    assert rc == 1 and "nowhere does not exist" in err


def test_train_errors_are_clear(trained, tmp_path, capsys):
    sel, model = trained
    rc, _, err = run(capsys, "train", sel, "--model", "pca", "-o", model)
    assert rc == 1 and "exists" in err and "--overwrite" in err
    rc, _, err = run(
        capsys, "train", tmp_path / "none.h5", "--model", "pca", "-o", tmp_path / "m.pt"
    )
    assert rc == 1 and "none.h5 does not exist" in err
    rc, _, err = run(capsys, "train", sel, "--model", "nope", "-o", tmp_path / "m.pt")
    assert rc == 2 and "invalid choice" in err
    trains = [f for f in modelfile.FAMILIES.values() if f.trains]
    if trains:  # an option of another family is refused with the valid ones listed
        rc, _, err = run(
            capsys, "train", sel, "--model", "pca", "--epochs", "3", "-o", tmp_path / "m.pt"
        )
        assert rc == 1 and "--epochs is not an option of model 'pca'" in err


def test_score_and_top(arch, trained, tmp_path, capsys):
    _, model = trained
    out, report = tmp_path / "scores.h5", tmp_path / "report.json"
    rc, text, _ = run(capsys, "score", model, arch.root, "-o", out, "--report", report)
    assert rc == 0 and "scored 6,000 frames" in text and "peak memory" in text
    r = json.loads(report.read_text())
    assert r["n_scored"] == 6000 and r["peak_rss_mb"] > 0 and r["workers"] == 1
    rc, text, _ = run(capsys, "score", model, arch.root, "-o", out)
    assert rc == 0 and "nothing to do" in text
    png, csv = tmp_path / "top.png", tmp_path / "top.csv"
    rc, text, _ = run(capsys, "top", out, "-k", "12", "-o", png, "--csv", csv)
    assert rc == 0 and png.stat().st_size > 10_000
    table = pd.read_csv(csv)
    df, _ = score.read_scores(out)
    np.testing.assert_allclose(table["score"], np.sort(df["score"])[::-1][:12], rtol=1e-6)
    assert list(table["rank"]) == list(range(1, 13))
    first = table.iloc[0]
    assert first["file"] in text and str(first["offset"]) in text
    assert first["time_utc"].startswith("2024-07") and first["time_utc"] in text
    frame = pff.read_frames(
        arch.root / first["file"], offset=int(first["offset"]), max_frames=1
    )
    assert frame.offsets[0] == first["offset"] and first["offset"] % FRAME == 0


def test_top_gallery_leaves_the_matplotlib_backend_alone(arch, trained, tmp_path, capsys):
    """Drawing a gallery from Python (a notebook calls cli.main) must not switch the
    session's backend, which would silence a notebook's inline figures, nor leave a
    pyplot figure open. Run in a fresh interpreter, where pyplot is not yet imported."""
    import os
    import subprocess
    import sys

    _, model = trained
    out = tmp_path / "scores.h5"
    assert run(capsys, "score", model, arch.root, "-o", out, "-q")[0] == 0
    png = tmp_path / "top.png"
    code = (
        "import sys, matplotlib\n"
        "before = matplotlib.get_backend()\n"
        "from phbook import cli\n"
        f"argv = ['top', {str(out)!r}, '-k', '4', '-o', {str(png)!r}, '-q']\n"
        "assert cli.main(argv) == 0\n"
        "import matplotlib.pyplot as plt\n"
        "print(before, matplotlib.get_backend(), len(plt.get_fignums()))\n"
    )
    env = {**os.environ, "MPLBACKEND": "svg"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    before, after, n_open = done.stdout.split()
    assert before == after == "svg" and n_open == "0", done.stdout
    assert png.stat().st_size > 5_000


def test_score_query_and_selection_sources(arch, trained, tmp_path, capsys):
    sel, model = trained
    rc, _, _ = run(
        capsys,
        "score",
        model,
        arch.root,
        "-o",
        tmp_path / "q.h5",
        "--pe-threshold",
        "7.5",
        "-q",
    )
    df, attrs = score.read_scores(tmp_path / "q.h5")
    files = arch.files()
    assert rc == 0 and len(df) == files.loc[files["pe_threshold"] == 7.5, "n_frames"].sum()
    assert json.loads(attrs["query"])["pe_threshold"] == [7.5]
    rc, _, _ = run(capsys, "score", model, sel, "-o", tmp_path / "sel_scores.h5", "-q")
    assert rc == 0 and len(score.read_scores(tmp_path / "sel_scores.h5")[0]) == 1200


def test_score_a_damaged_archive(arch, trained, tmp_path, capsys):
    _, model = trained
    damaged, where = damaged_copy(arch, tmp_path / "damaged")
    out = tmp_path / "s.h5"
    rc, _, err = run(capsys, "score", model, damaged.root, "-o", out, "--strict", "-q")
    assert rc == 1 and "at byte" in err and "resumes" in err and not out.exists()
    rc, text, _ = run(capsys, "score", model, damaged.root, "-o", out)
    assert rc == 0 and "skipped 3 damaged stretch(es)" in text and "earlier" in text
    rc, text, _ = run(capsys, "inspect", out)
    assert "3 damaged stretch(es) skipped" in text


def test_interrupted_score_resumes(arch, trained, tmp_path, capsys, monkeypatch):
    _, model = trained
    out = tmp_path / "s.h5"
    real_write = score._Journal.write
    calls = {"n": 0}

    def flaky(self, part, chunk, result):
        if calls["n"] == 5:
            raise KeyboardInterrupt
        calls["n"] += 1
        real_write(self, part, chunk, result)

    monkeypatch.setattr(score._Journal, "write", flaky)
    rc, _, err = run(capsys, "score", model, arch.root, "-o", out)
    assert rc == 130 and "run the same command again to resume" in err
    assert not out.exists()
    monkeypatch.setattr(score._Journal, "write", real_write)
    rc, text, _ = run(capsys, "score", model, arch.root, "-o", out)
    assert rc == 0 and "resuming" in text and "not scored again" in text
    assert score.read_scores(out)[1]["n_scored"] == 6000


def test_model_of_another_product_is_refused(trained, tmp_path, capsys):
    _, model = trained
    name = pff.format_filename(1.72e9, "img16", 3, 0)
    headers = pff.empty_headers(4, "img16")
    headers["tv_sec"] = 1_720_000_000
    pff.write_frames(tmp_path / name, np.zeros((4, 32, 32), np.uint16), headers)
    rc, _, err = run(capsys, "score", model, tmp_path / name, "-o", tmp_path / "s.h5")
    assert rc == 1 and "takes ph256 frames of 16x16" in err and "img16" in err


@pytest.mark.skipif("beta-vae" not in modelfile.FAMILIES, reason="no beta-VAE here")
def test_train_and_score_a_beta_vae(trained, arch, tmp_path, capsys):
    sel, _ = trained
    model = tmp_path / "vae.pt"
    rc, _, err = run(
        capsys,
        "train",
        sel,
        "--model",
        "beta-vae",
        "--beta",
        "1e-3",
        "--latent-dim",
        "4",
        "--epochs",
        "2",
        "--score",
        "recon",
        "-o",
        model,
        "-q",
    )
    assert rc == 0, err
    m = modelfile.load(model)
    assert m.family == "beta-vae" and m.params["beta"] == 1e-3
    assert m.training["settings"]["epochs"] == 2
    rc, _, err = run(capsys, "score", model, sel, "-o", tmp_path / "s.h5", "-q")
    assert rc == 0, err
    images, _, _ = select.load(sel)
    df, _ = score.read_scores(tmp_path / "s.h5")
    np.testing.assert_allclose(df["score"], m.score(images), rtol=1e-4, atol=1e-6)


@pytest.mark.skipif("hillas-cut" not in modelfile.FAMILIES, reason="no HillasCut here")
def test_physics_baseline_takes_adc(trained, tmp_path, capsys):
    from phbook.detectors import HillasCut

    sel, _ = trained
    model = tmp_path / "cut.pt"
    rc, _, err = run(
        capsys,
        "train",
        sel,
        "--model",
        "hillas-cut",
        "--tail",
        "0.01",
        "--stretch",
        "linear",
        "-o",
        model,
        "-q",
    )
    assert rc == 0, err
    m = modelfile.load(model)
    assert m.normalisation == {"kind": "none"}  # whatever --stretch says
    images, _, _ = select.load(sel)
    order = np.random.default_rng(0).permutation(len(images))
    direct = HillasCut(tail=0.01).fit(images[order].astype(np.float32))
    rc, _, err = run(capsys, "score", model, sel, "-o", tmp_path / "s.h5", "-q")
    assert rc == 0, err
    df, _ = score.read_scores(tmp_path / "s.h5")
    np.testing.assert_allclose(df["score"], direct.anomaly_score(images), rtol=1e-5)


def test_real_sample_file(trained, real_ph256, tmp_path, capsys):
    """The 88 real frames: inspect them, and score them with a model of simulated
    frames (labels are unknown, every frame keeps its byte offset and time)."""
    rc, out, _ = run(capsys, "inspect", real_ph256, "--json", "-q")
    d = json.loads(out)
    assert rc == 0 and d["scan"]["frames"] == 88 and d["modules"] == [254]
    assert d["scan"]["damaged_stretches"] == 0 and d["scan"]["span_s"] > 0
    _, model = trained
    rc, text, err = run(capsys, "score", model, real_ph256, "-o", tmp_path / "s.h5")
    assert rc == 0, err
    df, attrs = score.read_scores(tmp_path / "s.h5")
    real = pff.read_frames(real_ph256, warn=False)  # its clocks disagree (known)
    assert attrs["source_kind"] == "pff" and len(df) == 88
    assert (df["label"] == "unknown").all()
    np.testing.assert_array_equal(df["offset"], real.offsets)
    np.testing.assert_array_equal(df["time"], real.time)


@pytest.mark.parametrize(
    "family, option, value, cls, attr",
    [
        ("readout-faults", "--window", "3", "ReadoutFaults", "window"),
        ("point-flash", "--noise-floor", "20", "PointFlash", "noise_floor"),
    ],
)
def test_a_physics_check_trains_and_scores_from_the_command_line(
    trained, tmp_path, capsys, family, option, value, cls, attr
):
    from phbook import detectors

    sel, _ = trained
    model = tmp_path / f"{family}.pt"
    rc, _, err = run(
        capsys, "train", sel, "--model", family, option, value, "-o", model, "-q"
    )
    assert rc == 0, err
    m = modelfile.load(model)
    assert m.normalisation == {"kind": "none"}
    assert getattr(m.detector, attr) == float(value)
    images, _, _ = select.load(sel)
    order = np.random.default_rng(0).permutation(len(images))
    direct = getattr(detectors, cls)(**{attr: float(value)})
    direct.fit(images[order].astype(np.float32))
    rc, _, err = run(capsys, "score", model, sel, "-o", tmp_path / "s.h5", "-q")
    assert rc == 0, err
    df, _ = score.read_scores(tmp_path / "s.h5")
    np.testing.assert_allclose(df["score"], direct.anomaly_score(images), rtol=1e-6)


def test_a_block_point_flash_keeps_its_footprint_in_the_model_file(
    trained, tmp_path, capsys
):
    from phbook import detectors

    sel, _ = trained

    def train_flash(source, out, *options):
        return run(
            capsys, "train", source, "--model", "point-flash", *options, "-o", out, "-q"
        )

    model = tmp_path / "block.pt"
    rc, _, err = train_flash(sel, model, "--block", "2x2")
    assert rc == 0, err
    m = modelfile.load(model)
    assert m.detector.footprint == (2, 2)
    assert m.params["slope"] == 1.0  # the block's default slope, kept in the file
    images, _, _ = select.load(sel)
    order = np.random.default_rng(0).permutation(len(images))
    direct = detectors.PointFlash(block=(2, 2)).fit(images[order].astype(np.float32))
    np.testing.assert_allclose(
        m.detector.anomaly_score(images), direct.anomaly_score(images), rtol=1e-6
    )
    # a footprint that is not rows x columns is refused before any training
    rc, _, err = train_flash(sel, tmp_path / "bad.pt", "--block", "2")
    assert rc != 0 and "block" in err and not (tmp_path / "bad.pt").exists()
    # a slope as given is kept; a negative one is refused, before the frames are read
    rc, _, err = train_flash(sel, tmp_path / "half.pt", "--block", "2x2", "--slope", "0.5")
    assert rc == 0, err
    assert modelfile.load(tmp_path / "half.pt").detector.ring_slope == 0.5
    missing = tmp_path / "no-such-selection.h5"
    rc, _, err = train_flash(missing, tmp_path / "neg.pt", "--slope", "-1")
    assert rc != 0 and "slope" in err and "does not exist" not in err, err
    assert not (tmp_path / "neg.pt").exists()
