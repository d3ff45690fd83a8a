"""No silent success and no confusing failure: what the command line says when the
data, the files or the reader of its output are not what it expects."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from phbook import cli
from phbook.io import pff

ROOT = Path(__file__).resolve().parent.parent
NAME = "start_2025-08-02T05:31:36Z.dp_ph256.bpp_2.module_254.seqno_0.pff"


def run(capsys, *args) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def model(tmp_path_factory, real_data_file_module):
    folder = tmp_path_factory.mktemp("model")
    sample = real_data_file_module
    sel, model = folder / "sel.h5", folder / "model.pt"
    argv = ["select", str(sample), "-n", "all", "-o", str(sel), "--run-type", "any"]
    assert cli.main([*argv, "-q"]) == 0
    assert cli.main(["train", str(sel), "--model", "pca", "-o", str(model), "-q"]) == 0
    return model


@pytest.fixture(scope="module")
def real_data_file_module():
    from phbook import config

    try:
        return config.real_data_file(config.REAL_PH256_NAME)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def _bad_sources(folder: Path) -> dict[str, Path]:
    """The files of the issue: zeros, empty, housekeeping JSON, ph1024 named ph256."""
    out = {}
    for kind in ("zeros", "empty", "housekeeping", "ph1024"):
        (folder / kind).mkdir(parents=True)
        out[kind] = folder / kind / NAME
    out["zeros"].write_bytes(bytes(6360))
    out["empty"].write_bytes(b"")
    out["housekeeping"].write_bytes(b'{ "type": "hk", "temp": 31.5 }\n\n' * 3)
    h = pff.empty_headers(3, "ph1024")
    h["tv_sec"] = 1754112728
    pff.write_frames(out["ph1024"], np.zeros((3, 32, 32), np.int16), h, "ph1024")
    return out


def test_sources_without_usable_frames_fail_naming_each_file(model, tmp_path, capsys):
    bad = _bad_sources(tmp_path / "bad")
    why = {
        "zeros": "expected a header starting with '{'",
        "empty": "the file is empty",
        "housekeeping": "the header lacks quabo_num",
        "ph1024": "four-quabo header",
    }
    for kind, path in bad.items():
        rc, _, err = run(capsys, "score", model, path, "-o", tmp_path / f"{kind}.h5")
        assert rc == 1, kind
        assert "no usable frames" in err and str(path) in err and why[kind] in err
        # a second run over the finished output says so again
        rc, _, err = run(capsys, "score", model, path, "-o", tmp_path / f"{kind}.h5")
        assert rc == 1 and why[kind] in err
    rc, _, err = run(capsys, "score", model, tmp_path / "bad", "-o", tmp_path / "all.h5")
    assert rc == 1 and all(str(p) in err for p in bad.values())
    # top on the empty score file says so, instead of an empty table and a plot error
    rc, out, err = run(capsys, "top", tmp_path / "all.h5", "-o", tmp_path / "top.png")
    assert rc == 1 and "holds no scored frames" in err and "Empty DataFrame" not in out
    assert not (tmp_path / "top.png").exists()


def test_a_good_file_beside_bad_ones_scores_and_names_the_bad(
    model, real_data_file_module, tmp_path, capsys
):
    bad = _bad_sources(tmp_path / "bad")
    good = tmp_path / "bad" / "good"
    good.mkdir()
    os.symlink(real_data_file_module, good / NAME)
    rc, out, _ = run(capsys, "score", model, tmp_path / "bad", "-o", tmp_path / "s.h5")
    assert rc == 0 and "scored 88 frames" in out
    assert all(f"no frames from {p}" in out for p in bad.values())


def test_hdf5_and_model_file_errors_name_the_file(model, tmp_path, capsys):
    text = tmp_path / "text.h5"
    text.write_text("not HDF5")
    forged = tmp_path / "forged.h5"
    with h5py.File(forged, "w") as h5:
        h5.attrs["format"] = "phbook-scores-1"
        h5["score"] = np.ones(3, np.float32)
    for path in (text, forged):
        for argv in (("top", path), ("inspect", path)):
            rc, _, err = run(capsys, *argv)
            assert rc == 1 and str(path) in err, err
            assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    rc, _, err = run(capsys, "score", junk, forged, "-o", tmp_path / "x.h5")
    assert rc == 1 and str(junk) in err


def test_one_file_name_rule_for_inspect_and_score(
    model, real_data_file_module, tmp_path, capsys
):
    odd = tmp_path / "frames.pff"
    odd.write_bytes(real_data_file_module.read_bytes())
    rc, out, _ = run(capsys, "inspect", odd)
    assert rc == 0 and "88" in out
    rc, out, _ = run(capsys, "score", model, odd, "-o", tmp_path / "s.h5")
    assert rc == 0 and "scored 88 frames" in out
    quad = tmp_path / "quad.pff"  # ph1024 or img16: the name must say, or --dp
    h = pff.empty_headers(2, "ph1024")
    pff.write_frames(quad, np.zeros((2, 32, 32), np.int16), h, "ph1024")
    rc, _, err = run(capsys, "inspect", quad)
    assert rc == 1 and "quad.pff" in err and "--dp" in err
    rc, out, _ = run(capsys, "inspect", quad, "--dp", "ph1024")
    assert rc == 0 and "product ph1024: 1 file(s), 2 frames" in out
    # score reads it as the model's product (the product given): not ph256 frames
    rc, _, err = run(capsys, "score", model, quad, "-o", tmp_path / "q.h5")
    assert rc == 1 and "quad.pff" in err and "not ph256 frames" in err


def test_inspect_damage_lists_every_stretch(real_data_file_module, tmp_path, capsys):
    raw = bytearray(real_data_file_module.read_bytes())
    raw[60 * 636 + 15] = ord("7")  # quabo 7 in frame 60
    raw[30 * 636 : 30 * 636] = b"garbage!" * 5  # 40 bytes between frames 29 and 30
    path = tmp_path / NAME
    path.write_bytes(bytes(raw))
    rc, out, _ = run(capsys, "inspect", "--damage", path)
    assert rc == 0 and "2 damaged stretch(es)" in out
    assert f"byte {30 * 636:,}  40 bytes  frame_size" in out
    assert f"byte {60 * 636 + 40:,}  636 bytes  header" in out and "quabo_num = 7" in out


def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(model, tmp_path, capsys):
    sample = model.parent.parent  # any source will do: the lock is checked first
    src = tmp_path / "src"
    src.mkdir()
    from phbook import config

    os.symlink(config.real_data_file(config.REAL_PH256_NAME), src / NAME)
    out = tmp_path / "s.h5"
    lock = tmp_path / "s.h5.lock"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(f"{sleeper.pid} {os.uname().nodename}\n")
        rc, _, err = run(capsys, "score", model, src, "-o", out)
        assert rc == 1 and f"process {sleeper.pid}" in err and str(lock) in err
        assert not out.exists() and lock.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    # the process is gone: its lock is stale and taken over; released at the end
    rc, out_text, _ = run(capsys, "score", model, src, "-o", out)
    assert rc == 0 and "scored 88 frames" in out_text
    assert out.exists() and not lock.exists()
    assert sample.exists()


def _time(argv, repeats=5) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PHBOOK_PROGRESS": "0"}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "phbook", *argv],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def test_help_does_not_load_the_models():
    code = (
        "import sys; from phbook import cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "bad = [m for m in ('torch', 'pandas', 'matplotlib', 'h5py') if m in sys.modules]\n"
        "print('LOADED:' + ','.join(bad))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    got = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert got.stdout.strip().splitlines()[-1] == "LOADED:"
    # and 'phbook train --help' still lists the models and their options
    env["PHBOOK_PROGRESS"] = "0"
    text = subprocess.run(
        [sys.executable, "-m", "phbook", "train", "--help"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "pca" in text and "--beta" in text
    print(f"\nphbook --help: median of 5 {_time(['--help']):.2f} s")


def test_a_closed_pipe_ends_quietly(model, real_data_file_module, tmp_path):
    scores = tmp_path / "s.h5"
    assert (
        cli.main(["score", str(model), str(real_data_file_module), "-o", str(scores)]) == 0
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PHBOOK_PROGRESS": "0"}
    # the reader exits before phbook prints (as head does after its lines)
    cmd = f"{sys.executable} -m phbook top {scores} -k 80 | true"
    got = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], env=env, capture_output=True, text=True
    )
    assert got.returncode == 0, got.stderr
    assert "Broken pipe" not in got.stderr and "Traceback" not in got.stderr
    assert got.stderr.strip() == ""
