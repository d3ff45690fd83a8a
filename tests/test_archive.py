"""Run folders, configuration files and the simulated archive writer."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from fake_frames import fake_source

from phbook.io import archive as ar
from phbook.io import pff
from phbook.sim import archive as sa

REAL_CONFIG = "data_config.lick_2024-07-25.json"


def test_module_id_rule_of_the_panoseti_software():
    assert ar.ip_addr_to_module_id("192.168.3.248") == 254  # the real sample's module
    assert ar.ip_addr_to_module_id("192.168.0.4") == 1
    assert ar.ip_addr_to_module_id("192.168.0.12") == 3
    # the four quabos of a module share its ID
    assert {ar.ip_addr_to_module_id(f"192.168.0.{12 + i}") for i in range(4)} == {3}
    with pytest.raises(ValueError, match="not an IPv4"):
        ar.ip_addr_to_module_id("192.168.0")


def test_obs_config_round_trip_and_errors(tmp_path):
    cfg = ar.obs_config_dict(
        "Lick",
        {
            "astrograph": ["192.168.0.4", {"ip_addr": "192.168.3.248", "azimuth": 10}],
            "barnard": ["192.168.0.12"],
        },
    )
    path = tmp_path / "obs_config.json"
    path.write_text(json.dumps(cfg))
    obs = ar.read_obs_config(path)
    assert obs.domes == ("astrograph", "barnard")
    assert [(m.id, m.dome) for m in obs.modules] == [
        (1, "astrograph"),
        (254, "astrograph"),
        (3, "barnard"),
    ]
    assert obs.dome_of(3) == "barnard" and obs.dome_of(99) is None
    assert obs.raw["domes"][0]["modules"][1]["azimuth"] == 10
    cfg["domes"][1]["modules"].append({"ip_addr": "192.168.0.13"})  # module 3 again
    path.write_text(json.dumps(cfg))
    with pytest.raises(ar.ConfigError, match=r"domes\[1\].modules\[1\].*module ID 3"):
        ar.read_obs_config(path)
    path.write_text('{"domes": [{"modules": [{"name": "x"}]}]}')
    with pytest.raises(ar.ConfigError, match="lacks 'ip_addr'"):
        ar.read_obs_config(path)
    path.write_text("{not json")
    with pytest.raises(ar.ConfigError, match="obs_config.json: not valid JSON"):
        ar.read_obs_config(path)


def test_real_data_config(real_data_file):
    # the Lick configuration is not shipped (licence unknown): read from ../shared
    cfg = ar.read_data_config(real_data_file(REAL_CONFIG))
    assert cfg.run_type == "sci-data"
    assert cfg.pe_threshold == 11.5 and cfg.gain == 60 and cfg.trigger_pixels == 1
    # the writer's layout is the real one
    ours = ar.data_config_dict("sci-data", 11.5, max_file_size_mb=4000)
    assert ours["pulse_height"] == cfg.raw["pulse_height"]
    assert {k: ours[k] for k in ("run_type", "gain", "max_file_size_mb")} == {
        k: cfg.raw[k] for k in ("run_type", "gain", "max_file_size_mb")
    }


def test_a_folder_of_loose_real_files_is_an_archive(tmp_path, real_ph256):
    os.symlink(real_ph256, tmp_path / real_ph256.name)
    arch = ar.Archive(tmp_path)
    files = arch.files()
    assert len(files) == 1
    row = files.iloc[0]
    assert (row.module, row.n_frames, row.frame_size, row.dome) == (254, 88, 636, "")
    assert row.run_type is None and np.isnan(row.pe_threshold)
    assert not row.has_truth and row.fixed and row.error == ""
    chunks = list(arch.iter_frames(chunk_frames=50))
    meta = chunks[0][1]
    assert [len(f) for f, _ in chunks] == [50, 38]
    assert set(meta["label"]) == {"unknown"} and meta["strength"].isna().all()
    assert (meta["time_flags"] & pff.CLOCKS_DISAGREE > 0).all()
    assert list(meta["offset"][:2]) == [0, 636]


# ---------------------------------------------------------------------------------
# The simulated archive


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim") / "archive"
    runs = sa.plan_archive(24_000, seed=5, frames_per_run=3000)
    runs[1].wr_offset_s = 537  # one run with disagreeing clocks, as in the real file
    arch = sa.write_archive(
        root, runs=runs, seed=5, source=fake_source, max_file_mb=0.5, progress=False
    )
    return arch, runs


def test_plan_has_the_run_mix():
    runs = sa.plan_archive(600_000, seed=0)
    assert len(runs) == 10 and sum(r.n_frames for r in runs) == 600_000
    thr = [r.pe_threshold for r in runs]
    assert thr.count(11.5) >= 6 and {7.5, 15.0} <= set(thr)
    assert any(len(r.domes) == 1 for r in runs) and any(len(r.domes) == 2 for r in runs)
    for r in runs:
        assert all(0.1 <= x <= 1 for x in r.rates_hz)
        # about one night at the simulated rates
        assert 2 * 3600 < r.n_frames / sum(r.rates_hz) < 24 * 3600
    starts = [r.start for r in runs]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


def test_archive_layout_is_the_real_one(sim):
    arch, runs = sim
    assert len(arch.runs) == len(runs) == 8
    for run, spec in zip(arch.runs, runs, strict=True):
        assert pff.parse_run_name(run.name).run_type == "sci-data"
        assert run.complete and run.pe_threshold == spec.pe_threshold
        assert run.domes == tuple(spec.domes)
        ids = {m.id for m in run.obs_config.modules}
        names = run.pff_files()
        assert {n.module for n, _ in names} == ids
        raw = json.loads((run.path / "obs_config.json").read_text())
        assert all("ip_addr" in m for d in raw["domes"] for m in d["modules"])
    files = arch.files()
    assert files["n_frames"].sum() == 24_000
    assert files["fixed"].all() and files["has_truth"].all()
    assert (files["frame_size"] == 636).all()
    # files split at the maximum size, numbered in order
    per_file = int(0.5 * 1024 * 1024) // 636
    assert files["n_frames"].max() == per_file
    assert (
        files.groupby(["run", "module"])["seqno"].apply(
            lambda s: list(s) == list(range(len(s)))
        )
    ).all()
    two = files[files["n_domes"] == 2]["run"].nunique()
    one = files[files["n_domes"] == 1]["run"].nunique()
    assert (two, one) == (6, 2)
    assert set(files["dome"]) == {"astrograph", "barnard"}
    assert json.loads((arch.root / sa.MANIFEST).read_text())["n_frames"] == 24_000
    assert not list(arch.root.parent.glob("*.partial-*"))


def test_frames_headers_and_truth(sim):
    arch, runs = sim
    files = arch.files()
    all_flags = []
    for (run, _), group in files.groupby(["run", "module"], sort=False):
        frames = [pff.read_frames(p, warn=False) for p in group["path"]]
        h = np.concatenate([f.headers for f in frames])
        t = np.concatenate([f.time for f in frames])
        flags = np.concatenate([f.time_flags for f in frames])
        assert np.all(np.diff(t) > 0)  # a Poisson process: in time order
        # host clock a little after the WR time; placeholders ~1%
        if run == arch.runs[1].name:
            assert np.all(flags & pff.CLOCKS_DISAGREE)
        else:
            assert not np.any(flags & pff.CLOCKS_DISAGREE)
            ok = flags == 0
            host = h["tv_sec"] + h["tv_usec"] * 1e-6
            lag = host[ok] - t[ok]
            assert lag.min() > 4e-5 and lag.max() < 3.1e-3
        all_flags.append(flags)
        for q in range(4):  # packet numbers count each quabo's packets
            pk = h["pkt_num"][h["quabo_num"] == q].astype(int)
            assert np.all(np.diff(pk) % 65536 == 1)
        # the truth sidecar covers every frame of its file
        for f, p in zip(frames, group["path"], strict=True):
            classes, strength = ar.read_truth(p, n_frames=len(f))
            assert np.isnan(strength[classes == "normal"]).all()
            assert not np.isnan(strength[classes != "normal"]).any()
    placeholders = np.mean(np.concatenate(all_flags) & pff.NSEC_PLACEHOLDER > 0)
    assert 0.005 < placeholders < 0.02


def test_source_is_called_with_the_run_threshold(tmp_path):
    calls = []

    def source(n, **kw):
        calls.append(kw)
        return fake_source(n, **kw)

    spec = sa.RunSpec(
        start=1.72e9,
        pe_threshold=7.5,
        domes={"barnard": ("192.168.0.12",)},
        frames_per_module=[500],
        rates_hz=[0.5],
        trigger_pixels=2,
    )
    arch = sa.write_archive(
        tmp_path / "a",
        runs=[spec],
        seed=1,
        source=source,
        chunk_frames=200,
        progress=False,
    )
    assert [c["pe_threshold"] for c in calls] == [7.5] * 3
    assert {c["trigger_pixels"] for c in calls} == {2}
    assert len({c["seed"] for c in calls}) == 3
    # the pixels are the source's, in order
    frames = pff.read_frames(arch.files().path[0], warn=False)
    expected = np.concatenate(
        [fake_source(k, **c).adc for k, c in zip([200, 200, 100], calls, strict=True)]
    )
    np.testing.assert_array_equal(frames.images, expected)
    cfg = ar.read_data_config(arch.runs[0].path / ar.DATA_CONFIG)
    assert cfg.trigger_pixels == 2 and cfg.pe_threshold == 7.5


def test_same_seed_same_archive_and_exist_ok(tmp_path):
    kw = dict(seed=3, source=fake_source, progress=False)
    a = sa.write_archive(tmp_path / "a", 3000, **kw)
    b = sa.write_archive(tmp_path / "b", 3000, **kw)
    fa, fb = a.files(), b.files()
    assert list(fa["file"]) == list(fb["file"])
    for pa, pb in zip(fa["path"], fb["path"], strict=True):
        assert open(pa, "rb").read() == open(pb, "rb").read()
    mtime = os.path.getmtime(fa["path"][0])
    again = sa.write_archive(tmp_path / "a", 3000, exist_ok=True, **kw)
    assert os.path.getmtime(again.files()["path"][0]) == mtime  # reused, not rewritten
    with pytest.raises(FileExistsError, match="overwrite=True"):
        sa.write_archive(tmp_path / "a", 4000, exist_ok=True, **kw)
    sa.write_archive(tmp_path / "a", 4000, overwrite=True, **kw)
    assert ar.Archive(tmp_path / "a").files()["n_frames"].sum() == 4000


def test_interrupted_write_leaves_nothing(tmp_path):
    calls = 0

    def failing(n, **kw):
        nonlocal calls
        calls += 1
        if calls == 4:
            raise KeyboardInterrupt
        return fake_source(n, **kw)

    with pytest.raises(KeyboardInterrupt):
        sa.write_archive(tmp_path / "x", 5000, source=failing, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_bad_source_output_is_explained(tmp_path):
    def wrong_shape(n, **kw):
        out = fake_source(n, **kw)
        out.adc = out.adc[:, :8]
        return out

    with pytest.raises(ValueError, match=r"adc of shape \(\d+, 8, 16\)"):
        sa.write_archive(tmp_path / "x", 100, source=wrong_shape, progress=False)
    with pytest.raises(TypeError, match="adc, classes, strength and quabo"):
        sa.write_archive(
            tmp_path / "y", 100, source=lambda n, **k: np.zeros(n), progress=False
        )


def test_damaged_first_frame_is_listed_not_fatal(tmp_path, sim):
    arch, _ = sim
    copy = tmp_path / "copy"
    shutil.copytree(arch.runs[0].path, copy / arch.runs[0].name)
    first = sorted((copy / arch.runs[0].name).glob("*.pff"))[0]
    data = bytearray(first.read_bytes())
    data[0] = ord("x")
    first.write_bytes(bytes(data))
    files = ar.Archive(copy).files()
    bad = files[files["path"] == str(first)].iloc[0]
    assert not bad.fixed and "at byte 0" in bad.error
    assert files["error"].eq("").sum() == len(files) - 1


def test_iter_frames_meta_and_labels(sim):
    arch, _ = sim
    files = arch.files().iloc[:2]
    chunks = list(arch.iter_frames(files, chunk_frames=300))
    assert sum(len(f) for f, _ in chunks) == files["n_frames"].sum()
    meta = chunks[0][1]
    row = files.iloc[0]
    assert (meta["run"] == row.run).all() and (meta["module"] == row.module).all()
    assert (meta["pe_threshold"] == row.pe_threshold).all()
    classes, strength = ar.read_truth(row.path)
    assert list(meta["label"]) == list(classes[: len(meta)])
    np.testing.assert_array_equal(meta["quabo"], chunks[0][0].quabo)


def test_a_single_run_folder_is_an_archive(sim):
    arch, runs = sim
    one = ar.Archive(arch.runs[2].path)
    assert [r.name for r in one.runs] == [arch.runs[2].name]
    assert one.files()["n_frames"].sum() == runs[2].n_frames
    assert one.summary()["domes"].tolist() == [",".join(sorted(runs[2].domes))]


def test_pooled_source_resamples_one_pool_per_run_kind(tmp_path):
    calls = []

    def source(n, **kw):
        calls.append((n, kw["pe_threshold"]))
        return fake_source(n, **kw)

    pooled = sa.PooledSource(pool_size=100, source=source, seed=1)
    a = pooled(500, seed=3, pe_threshold=11.5)
    b = pooled(500, seed=3, pe_threshold=11.5)
    pooled(50, seed=4, pe_threshold=7.5)
    assert calls == [(100, 11.5), (100, 7.5)]  # one pool per threshold
    np.testing.assert_array_equal(a.adc, b.adc)  # same seed, same draw
    pool = fake_source(100, **{"seed": 0} | {})  # a different pool seed differs
    assert not np.array_equal(np.unique(a.adc, axis=0), np.unique(pool.adc, axis=0))
    assert len(np.unique(a.adc.reshape(500, -1), axis=0)) <= 100
    arch = sa.write_archive(tmp_path / "p", 2000, source=pooled, progress=False)
    manifest = json.loads((arch.root / sa.MANIFEST).read_text())
    assert manifest["source"].startswith("PooledSource(pool_size=100")


@pytest.mark.slow  # the simulator's first call in a process takes ~10 s (torch, numba)
def test_default_source_is_the_simulator(tmp_path):
    """The contract between the archive writer and phbook.sim.panoseti.simulate."""
    pytest.importorskip("phbook.sim.panoseti")
    spec = sa.RunSpec(
        start=1.72e9,
        domes={"barnard": ("192.168.0.12",)},
        frames_per_module=[300],
        rates_hz=[0.5],
    )
    arch = sa.write_archive(
        tmp_path / "s", runs=[spec], seed=0, anomaly_fraction=0.1, progress=False
    )
    frames = pff.read_frames(arch.files()["path"][0], warn=False)
    classes, _ = ar.read_truth(arch.files()["path"][0], n_frames=300)
    assert len(frames) == 300 and frames.images.dtype == np.int16
    assert "normal" in classes and (classes != "normal").sum() > 5
    manifest = json.loads((arch.root / sa.MANIFEST).read_text())
    assert manifest["source"] == "phbook.sim.archive.default_source"
