"""``phbook simulate`` and ``phbook calibrate``: their options and their work.

:mod:`phbook.cli` parses and prints; the functions here turn the parsed options into
calls of :func:`phbook.sim.run.simulate_run` and :func:`phbook.sim.calibration.calibrate`
and return the text to print.
"""

from __future__ import annotations

import time

from ..io import writing
from . import calibration
from . import run as sim_run

__all__ = ["simulate", "calibrate"]


def simulate(args) -> str:
    """Write the run folder asked for by ``phbook simulate``; returns the summary."""
    t0 = time.perf_counter()
    d = sim_run.simulate_run(
        args.out,
        args.n,
        seed=args.seed,
        pe_threshold=args.pe_threshold,
        trigger_pixels=args.trigger_pixels,
        domes=tuple(args.domes),
        modules_per_dome=args.modules_per_dome,
        baseline_file=args.baseline,
        anomaly_fraction=args.anomaly_fraction,
        anomaly_classes=tuple(args.classes) if args.classes else None,
        params=args.params,
        start=args.start,
    )
    classes = ", ".join(f"{k} {v:,}" for k, v in sorted(d["classes"].items()))
    return (
        f"wrote {d['n_frames']:,} simulated frames at {d['pe_threshold']:.2f} PE "
        f"in {time.perf_counter() - t0:.1f} s to {d['run']}\n"
        f"  files: {', '.join(d['files'])}\n"
        f"  classes: {classes}; labels (class, strength, byte offset) in "
        f"{d['run'] / sim_run.LABELS}"
    )


def calibrate(args, progress: bool | None = None) -> str:
    """Fit the simulator to the run of ``phbook calibrate``, write the parameter file;
    returns the report."""
    writing.check_output(
        args.out,
        {
            "start parameter file": args.start,
            **{f"run file {f.name}": f for f in calibration.real_files(args.run)},
        },
        overwrite=args.overwrite,
        probe=True,
    )
    damage: list = []
    images, quabo = calibration.read_real_frames(args.run, damage=damage)
    start = calibration.load_parameters(args.start) if args.start else None
    kw = dict(
        n_sim=args.n_sim,
        max_evaluations=args.max_evaluations,
        seed=args.seed,
        start=start,
        progress=progress,
    )
    cal = calibration.calibrate(images, quabo, **kw)
    text = [cal.report()]
    if damage:
        text.append(
            f"\n{len(damage)} damaged stretch(es) skipped in {args.run} "
            f"({sum(d.length for d in damage):,} bytes; where: phbook inspect --damage "
            f"{args.run}); the fit used the {len(images):,} good frames"
        )
    extra = {}
    if args.held_out:
        check = calibration.held_out_check(images, quabo, **kw)
        extra["held_out"] = {
            "failures": check["held_out"].failures,
            "distance": check["held_out"].distance,
            "real_vs_real_failures": check["real_vs_real"].failures,
        }
        text.append(
            "\nheld-out check (fit on half the frames, judged on the other half):\n"
            f"{check['held_out']}\n(the two real halves against each other: "
            f"{check['real_vs_real'].failures} failing values)"
        )
    path = cal.save(args.out, extra)
    text.append(f"\nparameters written to {path} (use: phbook simulate --params {path})")
    return "\n".join(text)
