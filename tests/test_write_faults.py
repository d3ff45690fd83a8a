"""Disk faults while writing: a full disk, a read-only folder, a folder that vanishes.

The tests run as any user (root included, for whom chmod makes nothing read-only), so
faults are injected at the write layer (:func:`phbook.io.writing.before_write`, called
before every write) or by removing the output folder in the middle of a run. For each of
``select``, ``score`` and ``top``: one clear line naming the path and what to do, a
non-zero exit, no temporary files left, and a later run that completes with output
identical to an undisturbed run.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from phbook import cli
from phbook.io import writing

FAULTS = ("disk-full", "read-only", "vanished")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, real_ph256_module):
    """The real sample as a one-file archive, a selection and a PCA model file."""
    root = tmp_path_factory.mktemp("faults")
    data = root / "data"
    data.mkdir()
    shutil.copy(real_ph256_module, data / real_ph256_module.name)
    sel, model = root / "sel.h5", root / "model.pt"
    argv = ["select", str(data), "-n", "80", "-o", str(sel), "--run-type", "any"]
    assert cli.main([*argv, "-q"]) == 0
    assert cli.main(["train", str(sel), "--model", "pca", "-o", str(model), "-q"]) == 0
    scores = root / "scores.h5"
    argv = ["score", str(model), str(data), "-o", str(scores), "--chunk-frames", "16"]
    assert cli.main([*argv, "-q"]) == 0
    return {"data": data, "sel": sel, "model": model, "scores": scores, "root": root}


@pytest.fixture(scope="module")
def real_ph256_module():
    from phbook import config

    try:
        return config.real_data_file(config.REAL_PH256_NAME)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def _argv(command: str, setup: dict, folder) -> list[str]:
    if command == "select":
        return [
            "select",
            str(setup["data"]),
            "-n",
            "80",
            "-o",
            str(folder / "out.h5"),
            "--run-type",
            "any",
        ]
    if command == "score":
        return [
            "score",
            str(setup["model"]),
            str(setup["data"]),
            "-o",
            str(folder / "out.h5"),
            "--chunk-frames",
            "16",
        ]
    return [
        "top",
        str(setup["scores"]),
        "-k",
        "8",
        "-o",
        str(folder / "top.png"),
        "--csv",
        str(folder / "top.csv"),
    ]


def _fault(kind: str, folder, at: int):
    """A ``before_write`` that fails the ``at``-th write (1-based) under ``folder``."""
    calls = {"n": 0}

    def before_write(path):
        p = Path(path)
        if folder not in p.parents and p != folder:
            return
        calls["n"] += 1
        if calls["n"] < at:
            return
        if kind == "disk-full":
            raise OSError(errno.ENOSPC, "No space left on device")
        if kind == "read-only":
            raise OSError(errno.EROFS, "Read-only file system")
        if calls["n"] == at:  # vanished: the folder goes away under the writer
            shutil.rmtree(folder, ignore_errors=True)

    return before_write, calls


def _differences(a, b, skip=("seconds", "created")) -> list[str]:
    """What differs between two HDF5 files (but the wall time and creation date)."""
    out = []
    with h5py.File(a, "r") as x, h5py.File(b, "r") as y:
        names: list[str] = []
        x.visit(names.append)
        other: list[str] = []
        y.visit(other.append)
        if names != other:
            out.append(f"members {names} != {other}")
        for name in names:
            if isinstance(x[name], h5py.Dataset):
                u, v = x[name][()], y[name][()]
                if not np.array_equal(u, v, equal_nan=u.dtype.kind == "f"):
                    out.append(name)
        for k in sorted(set(x.attrs) | set(y.attrs)):
            if k not in skip and not np.array_equal(x.attrs.get(k), y.attrs.get(k)):
                out.append(f"attrs {k}: {x.attrs.get(k)!r} != {y.attrs.get(k)!r}")
    return out


def _debris(folder) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".tmp" in p.name or "merging" in p.name]


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("command", ["select", "score", "top"])
def test_write_fault(command, fault, setup, tmp_path, monkeypatch, capsys):
    ref = tmp_path / "ref"
    ref.mkdir()
    assert cli.main([*_argv(command, setup, ref), "-q"]) == 0  # undisturbed
    capsys.readouterr()
    out = tmp_path / "out"
    out.mkdir()
    at = {"select": 2, "score": 10, "top": 2}[command] if fault != "read-only" else 1
    hook, calls = _fault(fault, out, at)
    monkeypatch.setattr(writing, "before_write", hook)
    rc = cli.main([*_argv(command, setup, out), "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and calls["n"] >= at
    assert len(err.splitlines()) == 1, err  # one line, no traceback
    assert f"phbook {command}: error: cannot write {out}" in err
    advice = {"disk-full": "disk is full", "read-only": "read-only", "vanished": "folder"}
    assert advice[fault] in err
    if out.exists():
        assert _debris(out) == []
        if command == "score" and fault != "read-only":
            # the resumable journal: whole chunks only
            journal = out / "out.h5.journal"
            assert (journal / "manifest.json").exists()
            assert all(p.suffix in (".npz", ".json", ".done") for p in journal.iterdir())
            if fault == "disk-full":  # it failed mid-run: the next run resumes
                assert any(p.suffix == ".npz" for p in journal.iterdir())
    # the fault is fixed (space freed, folder back): the same command completes
    monkeypatch.setattr(writing, "before_write", lambda path: None)
    out.mkdir(exist_ok=True)
    assert cli.main([*_argv(command, setup, out), "-q"]) == 0
    assert _debris(out) == []
    if command == "top":
        assert (out / "top.csv").read_bytes() == (ref / "top.csv").read_bytes()
        assert (out / "top.png").stat().st_size > 1000
    else:
        assert _differences(out / "out.h5", ref / "out.h5") == []
    if command == "score":
        assert not (out / "out.h5.journal").exists()
