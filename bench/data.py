"""Benchmarks of PANOSETI data: reading PFF files and selecting from an archive.

Run ``python bench/data.py`` (``PHBOOK_PROFILE=quick`` for small sizes; name functions,
e.g. ``python bench/data.py bench_sim bench_sim_vs_real``, to run only those). It prints
what it measures as it goes and, as its last line, one JSON object:

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
``sim_vs_real_failures``
    how many yardstick values (:mod:`phbook.yardstick`: p10/p50/p90 of per-frame max,
    median, negative fraction, Hillas size, length, width, pixel count, and the fraction
    surviving cleaning) of ``sim_vs_real_frames`` simulated ordinary frames at the
    calibrated default fail the pass/fail rule against the 88 real frames (the table is
    printed). ``sim_vs_real_distance``: the RMS difference in tolerance units.
``real_false_alarm_max``
    chapter 9's detectors (:func:`phbook.studies.benchmark.detector_specs`, this profile's
    sizes) trained on the calibrated simulation, each thresholded at 1 % false alarms
    on simulated normal frames: the largest fraction of the 84 ordinary (not speckled)
    real frames flagged; every detector's fraction is printed.
``calibrate_100k_s``
    wall time of :func:`phbook.sim.calibration.calibrate` (what ``phbook calibrate``
    runs, default settings) on a simulated run folder of 100,000 frames, reading
    included; one run (it takes minutes).
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
        "sim_vs_real_frames": 20_000,
        "calibrate_frames": 100_000,
    },
    "full": {
        "read_frames": 1_000_000,
        "archive_small": 2_000_000,
        "archive_large": 4_000_000,
        "select_n": 250_000,
        "pool_size": 20_000,
        "repeats": 5,
        "sim_frames": 200_000,
        "sim_vs_real_frames": 20_000,
        "calibrate_frames": 100_000,
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


def _real_images():
    folder = config.real_data_dir()
    files = sorted(folder.glob("*ph256*.pff")) if folder is not None else []
    if not files:
        print("real PANOSETI sample not found (set PHBOOK_REAL_DATA): skipped")
        return None
    return pff.read_frames(files[0], warn=False).images


def bench_sim_vs_real(sizes: dict, results: dict, ctx: dict) -> None:
    """sim_vs_real_failures: the calibrated default against the 88 real frames."""
    from phbook import yardstick
    from phbook.sim import panoseti

    real = _real_images()
    if real is None:
        return
    sim = panoseti.simulate(sizes["sim_vs_real_frames"], seed=123, anomaly_fraction=0)
    c = yardstick.compare(real, sim.adc, n_boot=500, seed=0)
    print(c)
    results["sim_vs_real_failures"] = c.failures
    results["sim_vs_real_distance"] = round(c.distance, 3)


def bench_real_false_alarm(sizes: dict, results: dict, ctx: dict) -> None:
    """real_false_alarm_max: chapter 9's detectors on the ordinary real frames."""
    import torch

    from phbook import yardstick
    from phbook.studies import benchmark

    torch.set_num_threads(1)
    real = _real_images()
    if real is None:
        return
    ordinary = real[~yardstick.frame_statistics(real)["speckled"].to_numpy()]
    size = config.sizes("benchmark")
    data = benchmark.load_data(size)
    t0 = time.perf_counter()
    res = benchmark.run(data, benchmark.detector_specs(size), seeds=size.seeds[:1])
    print(f"trained {len(res.fitted)} detectors in {time.perf_counter() - t0:.0f} s")
    scores = benchmark.score_frames(res, ordinary)
    normal = res.classes == "normal"
    seed = res.seeds[0]
    rates = {}
    for name in res.fitted:
        reference = np.concatenate(
            [res.calibration[name, seed], res.scores[name, seed][normal]]
        )
        threshold = np.quantile(reference, 0.99)
        rates[name] = float(np.mean(scores[name] > threshold))
        print(
            f"{name:18s} flags {rates[name]:6.1%} of the {len(ordinary)} ordinary real "
            f"frames (1% threshold on {len(reference)} simulated normal frames)"
        )
    worst = max(rates, key=rates.get)
    results["real_false_alarm_max"] = round(rates[worst], 4)
    results["real_false_alarm_worst"] = worst
    results["real_false_alarm_profile"] = config.profile()


def bench_calibrate(sizes: dict, results: dict, ctx: dict) -> None:
    """calibrate_100k_s: phbook calibrate's fit on a 100,000-frame run folder."""
    from phbook.sim import calibration
    from phbook.sim import run as sim_run

    n = sizes["calibrate_frames"]
    folder = config.data_dir() / "bench" / f"calibrate_run_{n}"
    if not folder.exists() or not any(folder.rglob("*.pff")):
        shutil.rmtree(folder, ignore_errors=True)
        sim_run.simulate_run(folder, n, seed=7)
    t0, c0 = time.perf_counter(), time.process_time()
    images, quabo = calibration.read_real_frames(folder)
    cal = calibration.calibrate(images, quabo, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"calibrate on {len(images):,} frames: {wall:.0f} s wall, {cpu:.0f} CPU-s, "
        f"{cal.n_evaluations} simulations, {cal.comparison.failures} failing values; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    results["calibrate_100k_s"] = round(wall, 1)
    results["calibrate_100k_cpu_s"] = round(cpu, 1)


BENCHES = [
    bench_sim,
    bench_sim_vs_real,
    bench_real_false_alarm,
    bench_calibrate,
    bench_read,
    bench_select,
]


def main(only: list[str] | None = None) -> None:
    """Run every benchmark, or those named in ``only`` (e.g. ``bench_sim``)."""
    profile = config.profile()
    sizes = SIZES[profile]
    print(f"bench/data.py, profile {profile}: {sizes}")
    chosen = [b for b in BENCHES if not only or b.__name__ in only]
    ctx: dict = {}
    if {bench_read, bench_select} & set(chosen):
        source = frame_source(sizes["pool_size"])
        ctx = {
            "archive_small": archive(sizes["archive_small"], source),
            "archive_large": archive(sizes["archive_large"], source),
        }
    results: dict = {}
    for bench in chosen:
        bench(sizes, results, ctx)
    if os.environ.get("PHBOOK_BENCH_CLEAN") == "1":
        shutil.rmtree(config.data_dir() / "bench", ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:] or None)
