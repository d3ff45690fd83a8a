"""Selecting frames from an archive into HDF5: the query, the draw, the file."""

from __future__ import annotations

import json
import os
import shutil

import h5py
import numpy as np
import pytest
from fake_frames import fake_source

from phbook import select
from phbook.io import archive as ar
from phbook.io import pff
from phbook.sim import archive as sa


@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    root = tmp_path_factory.mktemp("sel") / "archive"
    runs = sa.plan_archive(30_000, seed=2, frames_per_run=5000)
    return sa.write_archive(
        root,
        runs=runs,
        seed=2,
        source=fake_source,
        anomaly_fraction=0.05,
        max_file_mb=1,
        progress=False,
    )


# ---------------------------------------------------------------------------------
# The query


def test_query_filters_runs_and_modules(arch):
    files = arch.files()
    pop = select.population(arch, select.Query(pe_threshold=11.5, min_domes=2))
    assert set(pop["pe_threshold"]) == {11.5} and (pop["n_domes"] == 2).all()
    # 11.5 PE runs with both domes are 3 of the pattern of 6
    assert pop["run"].nunique() == 3
    one_dome = select.population(arch, {"pe_threshold": 11.5, "domes": ["Astrograph"]})
    assert set(one_dome["dome"]) == {"astrograph"}
    assert one_dome["run"].nunique() == 4  # includes the Astrograph-only run
    rng = select.population(arch, {"pe_range": (7, 12)})
    assert set(rng["pe_threshold"]) == {7.5, 11.5}
    listed = select.population(arch, {"pe_threshold": [7.5, 15.0]})
    assert set(listed["pe_threshold"]) == {7.5, 15.0}
    assert len(select.population(arch, {"run_type": "cal"})) == 0
    mods = select.population(arch, {"modules": [254]})
    assert set(mods["module"]) == {254}
    assert select.population(arch, select.Query(run_type=None))["n_frames"].sum() == (
        files["n_frames"].sum()
    )
    q = select.Query(pe_range=(7.0, 12.0), domes=("barnard",), min_domes=2)
    assert select.Query.from_json(q.to_json()) == q
    q = select.Query(pe_threshold=[7.5, 11.5], modules=[1, 3])
    assert select.Query.from_json(q.to_json()) == q


def test_draw_is_uniform_without_replacement():
    counts = [3, 0, 12, 5]  # 20 frames in 4 files
    hits = np.zeros(20)
    rng = np.random.default_rng(0)
    for _ in range(4000):
        picks = select.draw(counts, 5, rng)
        flat = np.concatenate(
            [p + off for p, off in zip(picks, [0, 3, 3, 15], strict=True)]
        )
        assert len(np.unique(flat)) == 5
        for p, c in zip(picks, counts, strict=True):
            assert np.all(np.diff(p) > 0) and (len(p) == 0 or p[-1] < c)
        hits[flat] += 1
    # every frame is drawn with probability 5/20, whatever its file
    np.testing.assert_allclose(hits / 4000, 0.25, atol=0.03)
    a = select.draw([10**6, 3 * 10**6], 1000, seed=7)
    b = select.draw([10**6, 3 * 10**6], 1000, seed=7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert 180 < len(a[0]) < 320  # ~1/4 of the draw from the first file
    with pytest.raises(ValueError, match="population of 20"):
        select.draw(counts, 21)


# ---------------------------------------------------------------------------------
# The selection file


def test_selection_file_layout_and_content(arch, tmp_path):
    q = select.Query(pe_threshold=11.5, min_domes=2)
    out = select.select(
        arch,
        tmp_path / "sel.h5",
        2000,
        q,
        seed=4,
        chunk_frames=256,
        buffer_frames=700,
        progress=False,
    )
    pop = select.population(arch, q)
    with h5py.File(out, "r") as h5:
        assert h5["images"].shape == (2000, 16, 16) and h5["images"].dtype == np.int16
        assert h5["images"].chunks == (256, 16, 16)
        assert h5["images"].compression == "gzip"
        assert set(h5["meta"]) == {
            "run",
            "dome",
            "module",
            "quabo",
            "pe_threshold",
            "time",
            "time_flags",
            "file",
            "offset",
            "strength",
        }
        attrs = dict(h5.attrs)
    assert json.loads(attrs["query"]) == json.loads(q.to_json())
    assert attrs["seed"] == 4 and attrs["population"] == pop["n_frames"].sum()
    assert attrs["n_selected"] == 2000 and attrs["n_damaged"] == 0
    assert attrs["format"] == select.FORMAT and attrs["phbook_version"]
    images, labels, meta = select.load(out)
    assert (meta["pe_threshold"] == 11.5).all()
    assert set(meta["run"]) <= set(pop["run"]) and meta["run"].nunique() == 3
    assert not meta.duplicated(["file", "offset"]).any()
    # each row is the frame at its file and offset, with its truth label
    rows = np.random.default_rng(0).choice(2000, 60, replace=False)
    for i in rows:
        path = arch.root / meta.at[i, "file"]
        idx = meta.at[i, "offset"] // 636
        frame = pff.read_frames_at(path, [idx])
        np.testing.assert_array_equal(images[i], frame.images[0])
        assert meta.at[i, "quabo"] == frame.quabo[0]
        assert meta.at[i, "time"] == frame.time[0]
        classes, strength = ar.read_truth(path, [idx])
        assert labels[i] == classes[0]
        np.testing.assert_equal(meta.at[i, "strength"], strength[0])
    assert set(labels) <= {"normal", "speckle", "track"} and "normal" in labels
    assert 0.02 < np.mean(labels != "normal") < 0.09  # anomaly_fraction 0.05
    # archive order: by file, then offset
    key = list(zip(meta["file"].map(list(pop["file"]).index), meta["offset"], strict=True))
    assert key == sorted(key)


def test_selection_is_reproducible(arch, tmp_path):
    q = {"pe_threshold": 11.5}
    a = select.select(arch, tmp_path / "a.h5", 500, q, seed=1, progress=False)
    b = select.select(arch, tmp_path / "b.h5", 500, q, seed=1, progress=False)
    c = select.select(arch, tmp_path / "c.h5", 500, q, seed=2, progress=False)
    ia, _, ma = select.load(a)
    ib, _, mb = select.load(b)
    ic, _, mc = select.load(c)
    np.testing.assert_array_equal(ia, ib)
    assert ma.equals(mb)
    assert not np.array_equal(ma["offset"], mc["offset"])
    with pytest.raises(FileExistsError, match="overwrite"):
        select.select(arch, a, 500, q, seed=1, progress=False)


def test_load_rows(arch, tmp_path):
    out = select.select(arch, tmp_path / "s.h5", 300, seed=0, progress=False)
    images, labels, meta = select.load(out)
    part = select.load(out, slice(10, 20))
    np.testing.assert_array_equal(part[0], images[10:20])
    rows = [250, 3, 3, -1]
    got = select.load(out, rows)
    np.testing.assert_array_equal(got[0], images[rows])
    assert list(got[1]) == list(labels[rows])
    assert list(got[2]["offset"]) == list(meta["offset"].to_numpy()[rows])
    with pytest.raises(IndexError):
        select.load(out, [300])
    assert select.read_attrs(out)["query"]["run_type"] == "sci-data"


def test_too_large_a_draw_is_refused(arch, tmp_path):
    pop = select.population(arch, {"pe_threshold": 15.0})
    total = pop["n_frames"].sum()
    with pytest.raises(ValueError, match=f"selects {total:,} frames"):
        select.select(
            arch, tmp_path / "x.h5", total + 1, {"pe_threshold": 15.0}, progress=False
        )
    out = select.select(
        arch, tmp_path / "all.h5", total, {"pe_threshold": 15.0}, progress=False
    )
    assert len(select.load(out)[0]) == total


def test_interrupted_selection_leaves_no_file(arch, tmp_path, monkeypatch):
    real_flush = select._Buffer.flush
    calls = 0

    def flaky(self):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt
        real_flush(self)

    monkeypatch.setattr(select._Buffer, "flush", flaky)
    with pytest.raises(KeyboardInterrupt):
        select.select(arch, tmp_path / "s.h5", 3000, buffer_frames=500, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_damaged_frames_strict_and_not(arch, tmp_path):
    root = tmp_path / "damaged"
    shutil.copytree(arch.root, root)
    damaged = ar.Archive(root)
    q = {"pe_threshold": 15.0}
    path = select.population(damaged, q)["path"][0]
    raw = bytearray(open(path, "rb").read())
    raw[7 * 636 + 40] = ord("?")
    open(path, "wb").write(bytes(raw))
    total = select.population(damaged, q)["n_frames"].sum()
    with pytest.raises(pff.PFFHeaderError, match=f"at byte {7 * 636}") as err:
        select.select(damaged, tmp_path / "s.h5", total, q, progress=False)
    assert os.path.basename(path) in str(err.value)
    assert not (tmp_path / "s.h5").exists()
    out = select.select(damaged, tmp_path / "s.h5", total, q, strict=False, progress=False)
    attrs = select.read_attrs(out)
    assert (attrs["n_selected"], attrs["n_damaged"]) == (total - 1, 1)
    images, labels, meta = select.load(out)
    assert len(images) == total - 1
    assert not (
        (meta["file"] == os.path.relpath(path, root)) & (meta["offset"] == 7 * 636)
    ).any()
    # labels stay aligned with their frames after the dropped one
    classes, _ = ar.read_truth(path)
    mine = meta["file"] == os.path.relpath(path, root)
    np.testing.assert_array_equal(
        labels[mine], classes[meta["offset"][mine].to_numpy() // 636]
    )


def test_real_frames_are_selected_with_unknown_labels(tmp_path, real_ph256):
    folder = tmp_path / "real"
    folder.mkdir()
    os.symlink(real_ph256, folder / real_ph256.name)
    out = select.select(
        folder, tmp_path / "real.h5", 40, {"run_type": None}, seed=0, progress=False
    )
    images, labels, meta = select.load(out)
    assert set(labels) == {"unknown"} and meta["strength"].isna().all()
    assert (meta["time_flags"] & pff.CLOCKS_DISAGREE > 0).all()
    assert (meta["module"] == 254).all() and (meta["dome"] == "").all()
    every = pff.read_frames(real_ph256, warn=False)
    np.testing.assert_array_equal(images, every.images[meta["offset"] // 636])


def test_empty_selection(arch, tmp_path):
    out = select.select(
        arch, tmp_path / "none.h5", 0, {"pe_threshold": 15.0}, progress=False
    )
    images, labels, meta = select.load(out)
    assert images.shape == (0, 16, 16) and len(labels) == 0 and len(meta) == 0
    assert select.read_attrs(out)["n_selected"] == 0


def test_an_empty_selection_names_the_condition(arch, tmp_path):
    files = arch.files()
    n_domes = sorted(set(files["n_domes"]))
    with pytest.raises(ValueError, match=r"--min-domes 3: these runs have [0-9, ]+ dome"):
        select.select(arch, tmp_path / "x.h5", 10, {"min_domes": 3}, progress=False)
    with pytest.raises(ValueError, match=r"--pe-threshold 99: these runs have thresh"):
        select.select(arch, tmp_path / "x.h5", 10, {"pe_threshold": 99.0})
    with pytest.raises(ValueError, match=r"--modules 9999: the modules are \d"):
        select.select(arch, tmp_path / "x.h5", 10, {"modules": (9999,)})
    q = select.Query(min_domes=max(n_domes))
    assert q.explain(files) == ""  # this one keeps frames
    assert not (tmp_path / "x.h5").exists()


def test_n_all_takes_the_whole_population(arch, tmp_path):
    q = {"pe_threshold": 15.0}
    total = int(select.population(arch, q)["n_frames"].sum())
    out = select.select(arch, tmp_path / "all.h5", None, q, progress=False)
    assert select.read_attrs(out)["n_selected"] == total


def test_the_readme_selection_on_a_one_dome_run(real_ph256, tmp_path, capsys):
    from phbook import cli

    rc = cli.main(
        ["select", str(real_ph256.parent), "--run-type", "any", "--min-domes", "2"]
        + ["-n", "250000", "-o", str(tmp_path / "x.h5")]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "--min-domes 2: these runs have 0 dome(s)" in err
    rc = cli.main(
        ["select", str(real_ph256.parent), "--run-type", "any", "-n", "all"]
        + ["-o", str(tmp_path / "x.h5"), "-q"]
    )
    assert rc == 0 and select.read_attrs(tmp_path / "x.h5")["n_selected"] == 88


@pytest.mark.parametrize("damage", ["inserted bytes", "wider headers"])
def test_frames_after_a_shift_are_selected_like_every_reader_sees_them(
    real_ph256, tmp_path, damage
):
    """A file whose frames stop sitting at i * frame_size (bytes inserted between two
    frames; headers whose pkt_nsec prints one character wider) is counted and read by
    a scan: ``-n all`` takes every frame the reader finds, not those before the
    shift, and the selected images are those frames."""
    raw = real_ph256.read_bytes()
    fs = 636
    if damage == "inserted bytes":
        raw = raw[: 10 * fs] + b"\0" * 100 + raw[10 * fs :]
    else:  # frames 20-29 print pkt_nsec with 10 characters (a value of 1e9 or more)
        head = b'"pkt_nsec": '
        out = bytearray()
        for i in range(len(raw) // fs):
            frame = raw[i * fs : (i + 1) * fs]
            if 20 <= i < 30:
                at = frame.index(head) + len(head)
                nsec = int(frame[at : at + 9])
                frame = frame[:at] + b"%10d" % (10**9 + nsec) + frame[at + 9 :]
            out += frame
        raw = bytes(out)
    folder = tmp_path / "run"
    folder.mkdir()
    path = folder / real_ph256.name
    path.write_bytes(raw)
    assert not pff.scan_file(path).fixed
    every = pff.read_frames(path, strict=False, warn=False)
    assert len(every) == 88  # the reader resynchronises after the shift
    q = {"run_type": None}
    if damage == "inserted bytes":  # strict (the default) stops at the damage
        with pytest.raises(pff.PFFFrameSizeError, match="at byte 6360"):
            select.select(folder, tmp_path / "s.h5", None, q, progress=False)
    out = select.select(folder, tmp_path / "s.h5", None, q, strict=False, progress=False)
    attrs = select.read_attrs(out)
    assert (attrs["n_selected"], attrs["n_damaged"]) == (88, 0)
    images, _, meta = select.load(out)
    np.testing.assert_array_equal(meta["offset"].to_numpy(), every.offsets)
    np.testing.assert_array_equal(images, every.images)
    # a draw of part of it has exactly the frames asked for
    out = select.select(
        folder, tmp_path / "s50.h5", 50, q, seed=3, strict=False, progress=False
    )
    assert select.read_attrs(out)["n_selected"] == 50
