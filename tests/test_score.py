"""Out-of-core scoring and model files: every frame once, damage, resume, safety."""

from __future__ import annotations

import os
import pickle

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from scale_helpers import FRAME, damaged_copy, good_frames, make_archive, make_model

from phbook import modelfile, score, select, transforms
from phbook.detectors import PCAReconstruction
from phbook.io import archive as ar
from phbook.io import pff


@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    return make_archive(tmp_path_factory.mktemp("score") / "archive", 6000)


@pytest.fixture(scope="module")
def model_path(arch, tmp_path_factory):
    return make_model(arch, tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def reference(arch, model_path, tmp_path_factory):
    """The scores of the whole archive with default settings."""
    out = tmp_path_factory.mktemp("ref") / "scores.h5"
    score.score(model_path, arch.root, out, progress=False)
    return score.read_scores(out)[0]


def table_key(df: pd.DataFrame) -> pd.DataFrame:
    cols = ["file", "offset", "score", "label", "time", "quabo"]
    return df[cols].sort_values(["file", "offset"]).reset_index(drop=True)


# ---------------------------------------------------------------------------------
# Model files


def test_model_file_round_trip(arch, model_path):
    model = modelfile.load(model_path)
    assert model.family == "pca" and model.dp == "ph256"
    assert model.image_shape == (1, 16, 16)
    assert model.normalisation == {"kind": "asinh", "softening": 16.0, "x_max": 3400.0}
    assert model.training["n_frames"] == 1500
    images, _, _ = select.load(model_path.parent / "train.h5")
    direct = PCAReconstruction(6).fit(transforms.AsinhStretch()(images))
    np.testing.assert_allclose(
        model.score(images[:200]),
        direct.anomaly_score(transforms.AsinhStretch()(images[:200])),
        rtol=1e-5,
    )
    assert model.detector.offset_ == pytest.approx(direct.offset_)


def test_model_file_never_runs_code(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save(
        {"format": modelfile.FORMAT, "family": "pca", "x": Payload()},
        evil,
        pickle_protocol=2,
    )
    with pytest.raises(modelfile.ModelFileError, match="evil.pt.*refuses"):
        modelfile.load(evil)
    assert not marker.exists()
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(modelfile.ModelFileError, match="plain.pkl"):
        modelfile.load(plain)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(modelfile.ModelFileError, match="other.pt: not a phbook model"):
        modelfile.load(other)


def test_unknown_family_and_unfitted_detector_are_clear(tmp_path):
    with pytest.raises(modelfile.ModelFileError, match="unknown model 'nope'.*pca"):
        modelfile.family("nope")
    with pytest.raises(modelfile.ModelFileError, match="not fitted"):
        modelfile.save(
            tmp_path / "m.pt",
            PCAReconstruction(),
            "pca",
            dp="ph256",
            normalisation=transforms.AsinhStretch(),
        )


# ---------------------------------------------------------------------------------
# Scoring


def test_every_frame_is_scored_once_with_its_origin(arch, model_path, reference):
    files = arch.files()
    assert len(reference) == files["n_frames"].sum()
    assert not reference.duplicated(["file", "offset"]).any()
    model = modelfile.load(model_path)
    row = files.iloc[3]
    frames = pff.read_frames(row.path)
    mine = reference[reference["file"] == row.file].sort_values("offset")
    np.testing.assert_array_equal(mine["offset"], frames.offsets)
    np.testing.assert_allclose(mine["score"], model.score(frames.images), rtol=1e-6)
    np.testing.assert_array_equal(mine["time"], frames.time)
    classes, strength = ar.read_truth(row.path)
    np.testing.assert_array_equal(mine["label"], classes)
    assert (mine["module"] == row.module).all() and (mine["run"] == row.run).all()


def test_chunk_and_part_sizes_do_not_change_the_scores(
    arch, model_path, reference, tmp_path
):
    out = tmp_path / "small_parts.h5"
    report = score.score(
        model_path, arch.root, out, chunk_frames=97, part_frames=250, progress=False
    )
    assert report.n_parts > len(arch.files())  # files were split into parts
    df, attrs = score.read_scores(out)
    pd.testing.assert_frame_equal(table_key(df), table_key(reference))
    assert attrs["n_scored"] == len(reference) and attrs["family"] == "pca"


def test_damaged_files_are_skipped_and_listed(arch, model_path, tmp_path):
    damaged, where = damaged_copy(arch, tmp_path / "damaged")
    good = good_frames(damaged)
    results = []
    for chunk, part in ((64, 1 << 20), (101, 230)):  # parts cross the damage
        out = tmp_path / f"s{part}.h5"
        with pytest.warns(UserWarning, match="damaged"):
            score.score(
                model_path,
                damaged.root,
                out,
                chunk_frames=chunk,
                part_frames=part,
                progress=False,
            )
        df, attrs = score.read_scores(out)
        assert attrs["n_scored"] == sum(len(v) for v in good.values())
        for name, offsets in good.items():
            got = np.sort(df.loc[df["file"] == name, "offset"].to_numpy())
            np.testing.assert_array_equal(got, offsets, err_msg=name)
        with h5py.File(out) as h5:
            names = h5["files/name"][:].astype(str)
            dmg = {
                (names[i], int(o))
                for i, o in zip(
                    h5["damage/file_index"][:], h5["damage/offset"][:], strict=True
                )
            }
        assert dmg == set(where.items())
        results.append(table_key(df))
    pd.testing.assert_frame_equal(results[0], results[1])


def test_strict_scoring_stops_at_damage_and_resumes_leniently(arch, model_path, tmp_path):
    damaged, where = damaged_copy(arch, tmp_path / "damaged")
    out = tmp_path / "s.h5"
    first = sorted(where.items(), key=lambda kv: kv[0])[0]
    with pytest.raises(pff.PFFError, match=f"at byte {first[1]}") as err:
        score.score(
            model_path, damaged.root, out, strict=True, chunk_frames=50, progress=False
        )
    assert os.path.basename(first[0]) in str(err.value)
    assert not out.exists()
    assert any(score.journal_path(out).glob("*.npz"))  # what was scored is kept
    with pytest.warns(UserWarning, match="damaged"):
        report = score.score(model_path, damaged.root, out, progress=False)
    assert report.resumed_frames > 0
    assert report.n_scored == sum(len(v) for v in good_frames(damaged).values())
    assert not score.journal_path(out).exists()


def test_interrupted_run_resumes_and_skips_what_is_scored(
    arch, model_path, reference, tmp_path, monkeypatch
):
    out = tmp_path / "s.h5"
    real_write = score._Journal.write
    calls = {"n": 0, "frames": 0}

    def flaky(self, part, chunk, result):
        if calls["n"] == 7:
            raise KeyboardInterrupt
        calls["n"] += 1
        calls["frames"] += len(result["score"])
        real_write(self, part, chunk, result)

    monkeypatch.setattr(score._Journal, "write", flaky)
    with pytest.raises(KeyboardInterrupt):
        score.score(model_path, arch.root, out, chunk_frames=200, progress=False)
    monkeypatch.setattr(score._Journal, "write", real_write)
    assert not out.exists()
    assert len(list(score.journal_path(out).glob("*.npz"))) == 7

    scored = {"n": 0}
    real_score = modelfile.ModelFile.score

    def counting(self, images):
        scored["n"] += len(images)
        return real_score(self, images)

    monkeypatch.setattr(modelfile.ModelFile, "score", counting)
    report = score.score(model_path, arch.root, out, chunk_frames=200, progress=False)
    assert report.resumed_frames == calls["frames"] > 0
    assert scored["n"] == len(reference) - calls["frames"]  # nothing scored twice
    df, _ = score.read_scores(out)
    pd.testing.assert_frame_equal(table_key(df), table_key(reference))
    assert not score.journal_path(out).exists()


def test_interruption_while_writing_leaves_no_output(
    arch, model_path, tmp_path, monkeypatch
):
    out = tmp_path / "s.h5"
    real_replace = os.replace

    def fail_on_output(src, dst):
        if str(dst) == str(out):
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_output)
    with pytest.raises(KeyboardInterrupt):
        score.score(model_path, arch.root, out, progress=False)
    monkeypatch.setattr(os, "replace", real_replace)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5.journal"]
    report = score.score(model_path, arch.root, out, progress=False)
    assert report.resumed_frames == report.n_scored == arch.files()["n_frames"].sum()


def test_a_changed_source_is_not_taken_for_done(arch, model_path, tmp_path):
    """Scores of a source as it was are not 'nothing to do' once it has changed: a
    file added to the archive, a selection drawn again into the same path."""
    import shutil

    root = tmp_path / "archive"
    shutil.copytree(arch.root, root)
    out = tmp_path / "s.h5"
    score.score(model_path, root, out, progress=False)
    assert score.score(model_path, root, out, progress=False).already_complete
    first = sorted(root.rglob("*.pff"))[0]
    shutil.copy(first, first.with_name(first.name.replace("seqno_0", "seqno_99")))
    with pytest.raises(FileExistsError, match="source has changed since"):
        score.score(model_path, root, out, progress=False)
    report = score.score(model_path, root, out, overwrite=True, progress=False)
    assert report.n_scored == ar.Archive(root).files()["n_frames"].sum()
    # a selection drawn again, same path, same size
    sel = tmp_path / "sel.h5"
    select.select(arch, sel, 300, seed=1, progress=False)
    out = tmp_path / "sel_scores.h5"
    score.score(model_path, sel, out, progress=False)
    select.select(arch, sel, 300, seed=2, progress=False, overwrite=True)
    with pytest.raises(FileExistsError, match="selection drawn again"):
        score.score(model_path, sel, out, progress=False)
    # a score file of an older phbook, which did not record the source's files
    score.score(model_path, sel, out, overwrite=True, progress=False)
    with h5py.File(out, "a") as h5:
        del h5.attrs["plan"]
    with pytest.raises(FileExistsError, match="older phbook"):
        score.score(model_path, sel, out, progress=False)


def test_existing_outputs_and_other_runs_are_not_clobbered(arch, model_path, tmp_path):
    out = tmp_path / "s.h5"
    score.score(model_path, arch.root, out, progress=False)
    again = score.score(model_path, arch.root, out, progress=False)
    assert again.already_complete
    other = make_model(arch, tmp_path / "other", n=900)
    with pytest.raises(FileExistsError, match="overwrite"):
        score.score(other, arch.root, out, progress=False)
    report = score.score(other, arch.root, out, overwrite=True, progress=False)
    assert not report.already_complete
    with h5py.File(out) as h5:
        assert h5.attrs["model_sha256"] == modelfile.file_sha256(other)
    # an unfinished run of another model is in the way of a new one
    out2 = tmp_path / "s2.h5"
    journal = score.journal_path(out2)
    journal.mkdir()
    (journal / "manifest.json").write_text('{"format": "x", "model_sha256": "y"}')
    with pytest.raises(score.ScoreError, match="unfinished run"):
        score.score(model_path, arch.root, out2, progress=False)


def test_model_refuses_frames_of_another_product(model_path, tmp_path):
    folder = tmp_path / "ph1024"
    folder.mkdir()
    name = pff.format_filename(1.72e9, "ph1024", 3, 0)
    images = np.zeros((5, 32, 32), np.int16)
    headers = pff.empty_headers(5, "ph1024")
    headers["tv_sec"] = 1_720_000_000
    pff.write_frames(folder / name, images, headers)
    with pytest.raises(
        modelfile.ModelFileError, match=r"ph256 frames of 16x16.*ph1024 frames of 32x32"
    ):
        score.score(model_path, folder / name, tmp_path / "s.h5", progress=False)
    with pytest.raises(modelfile.ModelFileError, match="ph1024"):
        score.score(model_path, folder, tmp_path / "s.h5", progress=False)
    assert not (tmp_path / "s.h5").exists()
    model = modelfile.load(model_path)
    with pytest.raises(modelfile.ModelFileError, match="32x32"):
        model.check("ph1024", (32, 32), "somewhere")


def test_selection_source_and_top_frames(arch, model_path, tmp_path):
    sel = select.select(arch, tmp_path / "sel.h5", 900, seed=5, progress=False)
    out = tmp_path / "s.h5"
    score.score(model_path, sel, out, chunk_frames=128, part_frames=300, progress=False)
    df, attrs = score.read_scores(out)
    images, labels, meta = select.load(sel)
    assert attrs["source_kind"] == "h5"
    np.testing.assert_array_equal(df["row"], np.arange(900))
    np.testing.assert_array_equal(df["offset"], meta["offset"])
    np.testing.assert_array_equal(df["file"], meta["file"])
    np.testing.assert_array_equal(df["label"], labels)
    np.testing.assert_allclose(
        df["score"], modelfile.load(model_path).score(images), rtol=1e-6
    )
    top = score.top_k(out, 10, chunk_rows=64)
    np.testing.assert_array_equal(
        top["score_row"], np.argsort(-df["score"].to_numpy(), kind="stable")[:10]
    )
    np.testing.assert_array_equal(score.frames_of(out, top), images[top["row"]])


def test_top_frames_are_read_back_from_the_pff_files(arch, model_path, reference, tmp_path):
    out = tmp_path / "s.h5"
    score.score(model_path, arch.root, out, progress=False)
    top = score.top_k(out, 7, chunk_rows=500)
    assert list(top["score"]) == sorted(reference["score"], reverse=True)[:7]
    images = score.frames_of(out, top)
    for img, row in zip(images, top.itertuples(index=False), strict=True):
        path = arch.root / row.file
        frame = pff.read_frames(path, offset=row.offset, max_frames=1)
        np.testing.assert_array_equal(img, frame.images[0])
    assert int(top["offset"].iloc[0]) % FRAME == 0


def test_top_distinct_collapses_repeated_frames(tmp_path):
    from fake_frames import fake_source

    from phbook.sim import archive as sa

    pooled = sa.PooledSource(40, source=fake_source, seed=1)
    arch = sa.write_archive(
        tmp_path / "pooled",
        3000,
        seed=1,
        source=pooled,
        anomaly_fraction=0.2,
        progress=False,
    )
    model = make_model(arch, tmp_path, n=500)
    out = tmp_path / "s.h5"
    score.score(model, arch.root, out, progress=False)
    table, images = score.top_distinct(out, 6)
    assert len(table) == 6 and list(table["rank"]) == list(range(1, 7))
    assert len({img.tobytes() for img in images}) == 6
    assert (np.diff(table["score"]) <= 0).all() and (table["copies"] > 1).all()
    assert table["score"].iloc[0] == score.top_k(out, 1)["score"].iloc[0]
    np.testing.assert_array_equal(images, score.frames_of(out, table))


def test_frames_after_shifting_damage_are_read_back(arch, model_path, tmp_path):
    damaged, where = damaged_copy(arch, tmp_path / "damaged")
    out = tmp_path / "s.h5"
    with pytest.warns(UserWarning, match="damaged"):
        score.score(model_path, damaged.root, out, progress=False)
    df, _ = score.read_scores(out)
    shifted = df[df["offset"] % FRAME != 0].head(5)
    assert len(shifted) == 5  # frames after the cut no longer sit at multiples of 636
    images = score.frames_of(out, shifted)
    for img, row in zip(images, shifted.itertuples(index=False), strict=True):
        frame = pff.read_frames(damaged.root / row.file, offset=row.offset, max_frames=1)
        np.testing.assert_array_equal(img, frame.images[0])
