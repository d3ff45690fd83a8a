"""Benchmarks of PANOSETI data: reading PFF files and selecting from an archive.

Run ``python bench/data.py`` (``PHBOOK_PROFILE=quick`` for small sizes). It prints what
it measures as it goes and, as its last line, one JSON object:

``pff_read_frames_per_s``
    ph256 frames per second streamed by :func:`phbook.io.pff.iter_chunks` with their
    header fields decoded and frame times computed, from a warm page cache, one core;
    median of repeats after a warm-up.
``numpy_fromfile_frames_per_s``
    the baseline: ``numpy.fromfile`` of the same bytes (no parsing), same run.
``sim_frames_per_s``
    triggered pulse-height frames (air showers) per second made by
    :func:`phbook.sim.panoseti.simulate` on one core (one thread), CPU time and wall
    time both reported; median of repeats after a warm-up (which also loads the
    compiled kernels).
``select_peak_rss_mb_2m`` / ``select_peak_rss_mb_4m``
    peak resident memory (MB) of a child process that selects ``select_n`` frames from a
    simulated archive of 2 (4) million frames with :func:`phbook.select.select`
    (full profile; the quick profile uses archives 10 times smaller).

Each benchmark is a function in ``BENCHES`` that adds its keys to a dict, so a new
figure is one more function. Archives are cached under ``phbook.config.data_dir()``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from phbook import config  # noqa: E402
from phbook.io import pff  # noqa: E402
from phbook.sim import archive as sim_archive  # noqa: E402

SIZES = {
    "quick": {
        "read_frames": 200_000,
        "archive_small": 200_000,
        "archive_large": 400_000,
        "select_n": 25_000,
        "pool_size": 3_000,
        "repeats": 3,
        "sim_frames": 50_000,
    },
    "full": {
        "read_frames": 1_000_000,
        "archive_small": 2_000_000,
        "archive_large": 4_000_000,
        "select_n": 250_000,
        "pool_size": 20_000,
        "repeats": 5,
        "sim_frames": 200_000,
    },
}


def _noise_source(n, seed=0, pe_threshold=11.5, trigger_pixels=1, anomaly_fraction=0.01):
    """Frames of Gaussian noise, used only when the pulse-height simulator is absent.

    I/O speed and memory do not depend on the pixel values (beyond compression of the
    selection file), so the figures stay meaningful; the script says which was used.
    """
    rng = np.random.default_rng(seed)
    adc = rng.normal(0, 10, (n, 16, 16)).astype(np.int16)
    classes = np.where(rng.random(n) < anomaly_fraction, "anomaly", "normal")
    strength = np.where(classes == "normal", np.nan, 1.0).astype(np.float32)
    quabo = rng.integers(0, 4, n).astype(np.uint8)
    return types.SimpleNamespace(adc=adc, classes=classes, strength=strength, quabo=quabo)


def frame_source(pool_size: int):
    """The pulse-height simulator, resampled from pools of ``pool_size`` frames per run
    threshold (:class:`phbook.sim.archive.PooledSource`: writing millions of frames in
    minutes); Gaussian noise frames when the simulator is absent."""
    try:
        from phbook.sim.panoseti import simulate
    except ImportError:
        print("frame source: Gaussian noise (phbook.sim.panoseti is not available)")
        return _noise_source
    source = sim_archive.PooledSource(pool_size, source=simulate, seed=0)
    print(f"frame source: {source!r}")
    return source


def archive(n_frames: int, source) -> sim_archive._archive.Archive:
    """A simulated archive of ``n_frames`` frames, written once and then reused."""
    root = config.data_dir() / "bench" / f"archive_{n_frames}"
    t0 = time.perf_counter()
    arch = sim_archive.write_archive(
        root,
        n_frames,
        seed=0,
        source=source,
        exist_ok=True,
        overwrite=True,
        progress=False,
    )
    dt = time.perf_counter() - t0
    if dt > 5:
        print(
            f"wrote a {n_frames:,}-frame archive in {dt:.1f} s "
            f"({n_frames / dt:,.0f} frames/s, simulation included)"
        )
    return arch


def bench_read(sizes: dict, results: dict, ctx: dict) -> None:
    """pff_read_frames_per_s against numpy.fromfile of the same file."""
    n = sizes["read_frames"]
    arch = ctx["archive_small"]
    folder = config.data_dir() / "bench"
    path = folder / pff.format_filename(1.72e9, "ph256", 1, 0)
    if not path.exists() or path.stat().st_size != n * 636:
        tmp = path.with_name(path.name + ".tmp")
        left = n
        with open(tmp, "wb") as out:  # whole DAQ-format frames from the archive
            for p in arch.files()["path"]:
                with open(p, "rb") as f:
                    data = f.read(min(left, os.path.getsize(p) // 636) * 636)
                out.write(data)
                left -= len(data) // 636
                if left == 0:
                    break
        if left:
            raise RuntimeError(f"the archive holds fewer than {n} frames")
        os.replace(tmp, path)

    def read_pff() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        count = 0
        for chunk in pff.iter_chunks(path, 16384):
            count += len(chunk.time)  # header fields decoded into times, too
        assert count == n
        return time.perf_counter() - t0, time.process_time() - c0

    def read_numpy() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        a = np.fromfile(path, dtype=np.uint8)
        assert a.size == n * 636
        return time.perf_counter() - t0, time.process_time() - c0

    read_pff(), read_numpy()  # warm-up: page cache and code paths
    t_pff, t_np = [], []
    for _ in range(sizes["repeats"]):
        t_pff.append(read_pff())
        t_np.append(read_numpy())
    (w_pff, c_pff), (w_np, c_np) = np.median(t_pff, axis=0), np.median(t_np, axis=0)
    fps, fps_np = n / w_pff, n / w_np
    print(
        f"read {n:,} ph256 frames ({n * 636 / 1e6:.0f} MB) with headers and times: "
        f"{fps:,.0f} frames/s; numpy.fromfile of the same bytes: {fps_np:,.0f} "
        f"frames/s (median of {sizes['repeats']}; pff/numpy = {fps / fps_np:.2f}). "
        f"By CPU time (less sensitive to other load): {n / c_pff:,.0f} and "
        f"{n / c_np:,.0f} frames/s; load average {os.getloadavg()[0]:.1f}"
    )
    results["pff_read_frames_per_s"] = round(float(fps))
    results["numpy_fromfile_frames_per_s"] = round(float(fps_np))


_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    sys.path.insert(0, {root!r})

    def peak_mb():
        # VmHWM: the high-water mark of this process's own memory. (ru_maxrss would
        # include the parent's resident size at fork time on Linux.)
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    from phbook import select
    base = peak_mb()
    t0 = time.perf_counter()
    select.select({archive!r}, {out!r}, {n}, {{"pe_threshold": 11.5}}, seed=0,
                  overwrite=True, progress=False)
    dt = time.perf_counter() - t0
    peak = peak_mb()
    attrs = select.read_attrs({out!r})
    print(json.dumps({{"peak_mb": peak, "import_mb": base, "seconds": dt,
                      "population": attrs["population"],
                      "n_selected": attrs["n_selected"]}}))
    """
)


def _select_in_child(arch, n: int) -> dict:
    with tempfile.TemporaryDirectory(dir=config.data_dir()) as tmp:
        code = _CHILD.format(
            root=str(ROOT),
            archive=str(arch.root),
            out=str(Path(tmp) / "selection.h5"),
            n=n,
        )
        env = dict(os.environ, OMP_NUM_THREADS="1", PHBOOK_PROGRESS="0")
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if proc.returncode:
            raise RuntimeError(f"selection child failed:\n{proc.stderr}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_select(sizes: dict, results: dict, ctx: dict) -> None:
    """Peak RSS of a child process selecting from the two archives."""
    n = sizes["select_n"]
    for key, label in (("archive_small", "2m"), ("archive_large", "4m")):
        arch = ctx[key]
        r = _select_in_child(arch, n)
        print(
            f"select {r['n_selected']:,} of {r['population']:,} frames (11.5 PE runs) "
            f"from a {sizes[key]:,}-frame archive: peak RSS {r['peak_mb']:.0f} MB "
            f"(after imports {r['import_mb']:.0f} MB), {r['seconds']:.1f} s"
        )
        results[f"select_peak_rss_mb_{label}"] = round(r["peak_mb"], 1)


def bench_sim(sizes: dict, results: dict, ctx: dict) -> None:
    """sim_frames_per_s: the pulse-height simulator on one core."""
    import torch

    from phbook.sim import panoseti

    torch.set_num_threads(1)
    n = sizes["sim_frames"]
    panoseti.simulate(2000, seed=0)  # warm-up: compiled kernels, lookup tables
    wall, cpu = [], []
    for r in range(sizes["repeats"]):
        t0, c0 = time.perf_counter(), time.process_time()
        panoseti.simulate(n, seed=r)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    rate, cpu_rate = n / float(np.median(wall)), n / float(np.median(cpu))
    print(f"simulate {n:,} frames: {rate:,.0f} frames/s wall, {cpu_rate:,.0f} per CPU-s")
    results["sim_frames_per_s"] = round(rate)
    results["sim_frames_per_cpu_s"] = round(cpu_rate)


BENCHES = [bench_sim, bench_read, bench_select]


def main() -> None:
    profile = config.profile()
    sizes = SIZES[profile]
    print(f"bench/data.py, profile {profile}: {sizes}")
    source = frame_source(sizes["pool_size"])
    ctx = {
        "archive_small": archive(sizes["archive_small"], source),
        "archive_large": archive(sizes["archive_large"], source),
    }
    results: dict = {}
    for bench in BENCHES:
        bench(sizes, results, ctx)
    if os.environ.get("PHBOOK_BENCH_CLEAN") == "1":
        shutil.rmtree(config.data_dir() / "bench", ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
