"""Benchmarks of scoring at scale: one process, Dask workers, memory on 10 million frames.

Run ``python bench/scale.py`` (``PHBOOK_PROFILE=quick`` for small sizes). It prints what
it measures as it goes and, as its last line, one JSON object:

``score_frames_per_s``
    frames per second scored end to end by :func:`phbook.score.score` in one process
    (read the PFF files, normalise, score with the PCA-reconstruction model, journal,
    write the HDF5 output), in a warm process, median of repeats after a warm-up.
    ``score_frames_per_cpu_s`` is the same by CPU time, less sensitive to other load.
``dask_speedup_2_workers``
    wall time of the same scoring on an embedded Dask ``LocalCluster`` of one worker
    process over that of two (clusters started beforehand; medians of repeats after a
    warm-up). ``dask_frames_per_s_1_worker`` and ``..._2_workers`` are the rates.
``score_peak_rss_mb_10m``
    peak resident memory (``VmHWM``) of a child process running ``phbook score`` on a
    simulated archive of 10 million frames (the quick profile uses 1 million; the key
    ``rss_archive_frames`` says which). ``score_frames_per_s_10m`` is its rate, imports
    and all.
``gpu_score_frames_per_s``
    only with a CUDA device: frames per second of a beta-VAE scoring on it (the
    normalised frames already in memory), when the beta-VAE is installed.

Archives are written with :class:`phbook.sim.archive.PooledSource` under
``phbook.config.data_dir()/bench/scale``; the 10-million-frame archive (6.4 GB) is
deleted at the end unless ``PHBOOK_BENCH_KEEP=1``. The load average is printed with
every timing: on a shared machine, compare CPU-time figures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from phbook import config, modelfile, score, select, transforms  # noqa: E402
from phbook.detectors import PCAReconstruction  # noqa: E402
from phbook.score import distributed  # noqa: E402
from phbook.sim import archive as sim_archive  # noqa: E402

SIZES = {
    "quick": {
        "speed_frames": 300_000,
        "rss_frames": 1_000_000,
        "train_n": 10_000,
        "pool_size": 3_000,
        "repeats": 3,
    },
    "full": {
        "speed_frames": 1_000_000,
        "rss_frames": 10_000_000,
        "train_n": 50_000,
        "pool_size": 20_000,
        "repeats": 3,
    },
}


def load() -> str:
    return f"load average {os.getloadavg()[0]:.1f}"


def folder() -> Path:
    path = config.data_dir() / "bench" / "scale"
    path.mkdir(parents=True, exist_ok=True)
    return path


def frame_source(pool_size: int):
    """The pulse-height simulator resampled from pools (fast, millions of frames)."""
    from phbook.sim.panoseti import simulate

    return sim_archive.PooledSource(pool_size, source=simulate, seed=0)


def archive(n: int, source) -> sim_archive._archive.Archive:
    root = folder() / f"archive_{n}"
    t0 = time.perf_counter()
    arch = sim_archive.write_archive(
        root, n, seed=0, source=source, exist_ok=True, overwrite=True, progress=False
    )
    dt = time.perf_counter() - t0
    if dt > 2:
        print(
            f"wrote a {n:,}-frame archive ({n * 636 / 1e9:.2f} GB) in {dt:.0f} s",
            flush=True,
        )
    return arch


def pca_model(arch, n: int) -> Path:
    """A PCA-reconstruction model file (32 components) trained on ``n`` frames."""
    path = folder() / f"pca_{n}.pt"
    if path.exists():
        return path
    sel = select.select(arch, folder() / f"train_{n}.h5", n, overwrite=True, progress=False)
    images, _, _ = select.load(sel)
    stretch = transforms.AsinhStretch()
    det = PCAReconstruction(32).fit(stretch(images))
    modelfile.save(
        path,
        det,
        "pca",
        dp="ph256",
        normalisation=stretch,
        training={"source": str(sel), "n_frames": len(images)},
    )
    return path


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of ``fn()`` over ``repeats`` runs after a warm-up."""
    fn()
    runs = []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        runs.append((time.perf_counter() - t0, time.process_time() - c0))
    wall, cpu = np.median(runs, axis=0)
    return float(wall), float(cpu)


def bench_one_process(sizes: dict, results: dict, ctx: dict) -> None:
    arch, model = ctx["speed_archive"], modelfile.load(ctx["model"])
    out = Path(tempfile.mkdtemp(dir=folder())) / "scores.h5"
    n = int(arch.files()["n_frames"].sum())

    def run():
        score.score(model, arch.root, out, overwrite=True, progress=False)

    wall, cpu = timed(run, sizes["repeats"])
    shutil.rmtree(out.parent)
    print(
        f"one process: scored {n:,} frames end to end in {wall:.2f} s: {n / wall:,.0f} "
        f"frames/s ({n / cpu:,.0f} per CPU second); {load()}",
        flush=True,
    )
    results["score_frames_per_s"] = round(n / wall)
    results["score_frames_per_cpu_s"] = round(n / cpu)


def bench_dask(sizes: dict, results: dict, ctx: dict) -> None:
    arch, model = ctx["speed_archive"], ctx["model"]
    out = Path(tempfile.mkdtemp(dir=folder())) / "scores.h5"
    n = int(arch.files()["n_frames"].sum())
    walls = {}
    for workers in (1, 2):
        with distributed.local_cluster(workers) as client:

            def run(client=client):
                score.score(
                    model,
                    arch.root,
                    out,
                    overwrite=True,
                    progress=False,
                    client=client,
                    part_frames=1 << 18,
                )

            walls[workers], _ = timed(run, sizes["repeats"])
        print(
            f"Dask, {workers} worker process(es): {n:,} frames in {walls[workers]:.2f} s,"
            f" {n / walls[workers]:,.0f} frames/s; {load()}",
            flush=True,
        )
    shutil.rmtree(out.parent)
    results["dask_frames_per_s_1_worker"] = round(n / walls[1])
    results["dask_frames_per_s_2_workers"] = round(n / walls[2])
    results["dask_speedup_2_workers"] = round(walls[1] / walls[2], 3)
    print(f"Dask speedup, 2 workers over 1: {walls[1] / walls[2]:.2f}", flush=True)


def bench_memory(sizes: dict, results: dict, ctx: dict) -> None:
    n = sizes["rss_frames"]
    arch = archive(n, ctx["source"])
    try:
        with tempfile.TemporaryDirectory(dir=folder()) as tmp:
            report = Path(tmp) / "report.json"
            env = dict(
                os.environ, OMP_NUM_THREADS="1", PHBOOK_PROGRESS="0", PYTHONPATH=str(ROOT)
            )
            t0 = time.perf_counter()
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "phbook",
                    "score",
                    str(ctx["model"]),
                    str(arch.root),
                    "-o",
                    str(Path(tmp) / "scores.h5"),
                    "--report",
                    str(report),
                    "-q",
                ],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            wall = time.perf_counter() - t0
            if proc.returncode:
                raise RuntimeError(f"phbook score failed:\n{proc.stderr}")
            r = json.loads(report.read_text())
    finally:
        if os.environ.get("PHBOOK_BENCH_KEEP") != "1" and n >= 5_000_000:
            shutil.rmtree(arch.root, ignore_errors=True)
    print(
        f"phbook score on a {n:,}-frame archive in a child process: peak RSS "
        f"{r['peak_rss_mb']:,.0f} MB, {wall:.0f} s with start-up ({n / wall:,.0f} "
        f"frames/s); {load()}",
        flush=True,
    )
    results["score_peak_rss_mb_10m"] = round(r["peak_rss_mb"], 1)
    results["score_frames_per_s_10m"] = round(n / wall)
    results["rss_archive_frames"] = n


def bench_gpu(sizes: dict, results: dict, ctx: dict) -> None:
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: GPU scoring not measured")
        return
    if "beta-vae" not in modelfile.FAMILIES:
        print("the beta-VAE is not installed: GPU scoring not measured")
        return
    from phbook.detectors import VAEDetector

    arch = ctx["speed_archive"]
    sel = select.select(
        arch, folder() / "gpu_train.h5", 20_000, overwrite=True, progress=False
    )
    images, _, _ = select.load(sel)
    x = transforms.AsinhStretch()(images)[:, None]
    det = VAEDetector(
        model_kwargs={"latent_dim": 8, "beta": 1e-3},
        fit_kwargs={"epochs": 1, "batch_size": 256},
        score="recon",
        batch_size=65536,
    ).fit(x)
    big = np.concatenate([x] * 50)  # one million frames in memory

    def run():
        det.anomaly_score(big)
        torch.cuda.synchronize()

    wall, _ = timed(run, sizes["repeats"])
    print(
        f"GPU ({torch.cuda.get_device_name()}): beta-VAE reconstruction scores of "
        f"{len(big):,} frames in {wall:.2f} s: {len(big) / wall:,.0f} frames/s"
    )
    results["gpu_score_frames_per_s"] = round(len(big) / wall)


BENCHES = [bench_one_process, bench_dask, bench_memory, bench_gpu]


def main() -> None:
    profile = config.profile()
    sizes = SIZES[profile]
    print(
        f"bench/scale.py, profile {profile}: {sizes}; {os.cpu_count()} CPUs; {load()}",
        flush=True,
    )
    source = frame_source(sizes["pool_size"])
    print(f"frame source: {source!r}", flush=True)
    speed = archive(sizes["speed_frames"], source)
    ctx = {
        "source": source,
        "speed_archive": speed,
        "model": pca_model(speed, sizes["train_n"]),
    }
    results: dict = {}
    for bench in BENCHES:
        bench(sizes, results, ctx)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
