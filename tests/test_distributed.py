"""Dask scoring (embedded cluster, existing cluster, resume) and DDP training on CPUs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from ddp_models import BATCH, EPOCHS, data, make_models
from scale_helpers import damaged_copy, good_frames, make_archive, make_model

from phbook import cli, score, train
from phbook.score import distributed

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    return make_archive(tmp_path_factory.mktemp("dask") / "archive", 6000, seed=6)


@pytest.fixture(scope="module")
def model_path(arch, tmp_path_factory):
    return make_model(arch, tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def reference(arch, model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "scores.h5"
    score.score(model_path, arch.root, out, progress=False)
    return score.read_scores(out)[0]


@pytest.fixture(scope="module")
def threads_client():
    """A Dask client on an in-process cluster of two threads (starts in a second)."""
    with distributed.local_cluster(2, processes=False) as client:
        yield client


def key(df: pd.DataFrame) -> pd.DataFrame:
    return df[["file", "offset", "score", "label"]].reset_index(drop=True)


def test_dask_scoring_equals_one_process(
    arch, model_path, reference, tmp_path, threads_client
):
    out = tmp_path / "s.h5"
    report = score.score_dask(
        model_path,
        arch.root,
        out,
        client=threads_client,
        part_frames=300,
        chunk_frames=128,
        progress=False,
    )
    assert report.workers == 2 and report.n_parts > len(arch.files())
    df, attrs = score.read_scores(out)
    pd.testing.assert_frame_equal(key(df), key(reference))  # same rows, same order
    assert attrs["n_scored"] == len(reference)


def test_dask_resumes_a_run_interrupted_in_one_process(
    arch, model_path, reference, tmp_path, threads_client, monkeypatch
):
    out = tmp_path / "s.h5"
    real_write = score._Journal.write
    calls = {"n": 0}

    def flaky(self, part, chunk, result):
        if calls["n"] == 6:
            raise KeyboardInterrupt
        calls["n"] += 1
        real_write(self, part, chunk, result)

    monkeypatch.setattr(score._Journal, "write", flaky)
    with pytest.raises(KeyboardInterrupt):
        score.score(
            model_path, arch.root, out, chunk_frames=100, part_frames=300, progress=False
        )
    monkeypatch.setattr(score._Journal, "write", real_write)
    report = score.score(
        model_path,
        arch.root,
        out,
        chunk_frames=100,
        part_frames=300,
        client=threads_client,
        progress=False,
    )
    assert report.resumed_frames > 0
    pd.testing.assert_frame_equal(key(score.read_scores(out)[0]), key(reference))


def test_dask_on_damaged_files(arch, model_path, tmp_path, threads_client, monkeypatch):
    # workers that cannot see the journal send their results to the client
    monkeypatch.setattr(distributed, "WORKERS_WRITE_JOURNAL", False)
    damaged, where = damaged_copy(arch, tmp_path / "damaged")
    out = tmp_path / "s.h5"
    with pytest.warns(UserWarning, match="damaged"):
        report = score.score(
            model_path,
            damaged.root,
            out,
            part_frames=230,
            client=threads_client,
            progress=False,
        )
    assert report.n_damaged == len(where)
    assert report.n_scored == sum(len(v) for v in good_frames(damaged).values())


@pytest.mark.filterwarnings("ignore:Port 8787 is already in use")
def test_cli_on_an_existing_cluster_of_processes(
    arch, model_path, reference, tmp_path, capsys
):
    """--scheduler ADDRESS: worker processes that import phbook and load the model."""
    from dask.distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        out = tmp_path / "s.h5"
        rc = cli.main(
            [
                "score",
                str(model_path),
                str(arch.root),
                "-o",
                str(out),
                "--scheduler",
                cluster.scheduler_address,
            ]
        )
        text = capsys.readouterr().out
    assert rc == 0 and "1 Dask worker(s)" in text
    pd.testing.assert_frame_equal(key(score.read_scores(out)[0]), key(reference))


def test_unreachable_scheduler_is_a_clear_error(
    arch, model_path, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT", "1s")
    rc = cli.main(
        [
            "score",
            str(model_path),
            str(arch.root),
            "-o",
            str(tmp_path / "s.h5"),
            "--scheduler",
            "tcp://127.0.0.1:9",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'" in err


def test_an_embedded_cluster_starts_quietly_beside_another_on_8787():
    """The scheduler's HTTP server binds a free port: no "Port 8787 is already in
    use" warning (it lands in notebooks) when another cluster holds the default."""
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", 8787))
    except OSError:
        holder.close()
        pytest.skip("port 8787 is taken already; the test needs to hold it")
    holder.listen()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            with distributed.local_cluster(1, processes=False) as client:
                assert client.submit(int, "3").result() == 3
    finally:
        holder.close()


# ---------------------------------------------------------------------------------
# DDP


def test_distributed_needs_a_process_group():
    with pytest.raises(ValueError, match="torchrun"):
        train.fit(make_models()["ddp"], data(), epochs=1, distributed=True)


@pytest.mark.slow  # two processes that import torch (and DDP imports torch._dynamo)
def test_ddp_training_with_torchrun_equals_one_process(tmp_path):
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PHBOOK_DEVICE="cpu",
        PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE)]),
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(HERE / "ddp_worker.py"),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    x = data()
    for name, model in make_models().items():
        hist = train.fit(
            model,
            x,
            epochs=EPOCHS,
            batch_size=BATCH,
            lr=1e-2,
            seed=1,
            device="cpu",
            progress=False,
        )
        got = torch.load(tmp_path / f"{name}.ddp.pt", weights_only=True)
        assert got["world"] == 2
        for k, v in model.state_dict().items():
            torch.testing.assert_close(
                got["state"][k], v, rtol=1e-4, atol=1e-5, msg=f"{name}: {k}"
            )
        torch.testing.assert_close(
            torch.tensor(got["loss"]),
            torch.tensor(hist["train_loss"].tolist()),
            rtol=1e-4,
            atol=1e-6,
        )
        # rank 0 wrote a finished checkpoint, from which a one-process fit resumes
        ckpt = train.load_checkpoint(tmp_path / f"{name}.ckpt.pt")
        assert ckpt["finished"] and ckpt["epoch"] == EPOCHS


def test_cli_workers_start_an_embedded_cluster(
    arch, model_path, reference, tmp_path, capsys, monkeypatch
):
    """--workers N: an embedded LocalCluster (of threads here, to start quickly)."""
    started = []
    real = distributed.local_cluster

    def threads_cluster(workers=2, **kwargs):
        started.append(workers)
        return real(workers, processes=False)

    monkeypatch.setattr(distributed, "local_cluster", threads_cluster)
    out = tmp_path / "s.h5"
    rc = cli.main(
        [
            "score",
            str(model_path),
            str(arch.root),
            "-o",
            str(out),
            "--workers",
            "2",
            "--report",
            str(tmp_path / "r.json"),
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0 and started == [2] and "2 Dask worker(s)" in text
    pd.testing.assert_frame_equal(key(score.read_scores(out)[0]), key(reference))
