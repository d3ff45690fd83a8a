"""One definition of a source (a .pff file or a folder of runs) for every command."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scale_helpers import make_archive

from phbook import cli, select, trainfile
from phbook.io import archive as io_archive


@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    return make_archive(tmp_path_factory.mktemp("sources") / "archive", 3000, seed=5)


def test_a_file_is_the_archive_row_of_that_file(arch):
    table = arch.files()
    row = table.iloc[0]
    kind, root, one = io_archive.source_files(row["path"])
    assert kind == "pff" and root == io_archive.Path(row["path"]).parent
    assert len(one) == 1 and list(one.columns) == list(table.columns)
    same = ["run", "run_type", "pe_threshold", "n_domes", "dome", "module", "dp"]
    same += ["size", "frame_size", "n_frames", "fixed", "has_truth", "path"]
    pd.testing.assert_series_equal(
        one.iloc[0][same], row[same], check_names=False, check_dtype=False
    )
    kind, root, folder = io_archive.source_files(arch.root)
    assert kind == "archive" and len(folder) == len(table)


def test_sources_that_are_not_sources_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        io_archive.source_files(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="notes.txt: not a .pff file"):
        io_archive.source_files(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .pff files"):
        io_archive.source_files(tmp_path / "empty")


def test_select_and_train_take_a_file(arch, tmp_path, capsys):
    row = arch.files().iloc[0]
    sel = tmp_path / "sel.h5"
    argv = ["select", row["path"], "--run-type", "any", "-n", "50", "-o", str(sel)]
    assert cli.main(argv + ["-q"]) == 0
    attrs = select.read_attrs(sel)
    assert attrs["population"] == row["n_frames"] and attrs["n_selected"] == 50
    images, _, meta = select.load(sel)
    assert set(meta["file"]) == {io_archive.Path(row["path"]).name}
    # the same draw through the package, from the file
    again = select.select(row["path"], tmp_path / "again.h5", 50, {"run_type": None})
    np.testing.assert_array_equal(select.load(again)[0], images)
    report = trainfile.train(
        sel, "pca", tmp_path / "m.pt", params={"n_components": 3}, progress=False
    )
    assert report.n_frames == 50 and report.n_val == 0  # pca holds out nothing
    assert "trained in" in str(report) and (tmp_path / "m.pt").exists()
    with pytest.raises(ValueError, match="epochs: not an option of model 'pca'"):
        trainfile.prepare(sel, "pca", tmp_path / "m2.pt", params={"epochs": 3})
