"""``phbook simulate`` and ``phbook calibrate``: their options and their work.

:mod:`phbook.cli` parses and prints; the functions here turn the parsed options into
calls of :func:`phbook.sim.run.simulate_run` and :func:`phbook.sim.calibration.calibrate`
and return the text to print.
"""

from __future__ import annotations

import time

from . import calibration
from . import run as sim_run

__all__ = ["add_parsers", "simulate", "calibrate"]


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
    images, quabo = calibration.read_real_frames(args.run)
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


def add_parsers(sub, common, cmd_simulate, cmd_calibrate, desc) -> None:
    """Add the ``simulate`` and ``calibrate`` sub-commands to the ``phbook`` parser."""
    p = sub.add_parser(
        "simulate",
        help="write a simulated run folder of ph256 PFF files",
        description=desc(
            "Simulate pulse-height frames and write them as a run folder in the real "
            "PANOSETI layout (obs_Lick.start_<time>.runtype_sci-data.pffd with its "
            "config files and ph256 .pff files), with the simulation truth beside "
            "them: labels.csv lists the file, frame, byte offset, quabo, class and "
            "strength of every frame.",
            "With no option but -n, --seed and -o, the instrument and shower population "
            "are the calibrated defaults (fitted to 88 real frames of module 254); "
            "--params takes a parameter file from 'phbook calibrate' instead.",
        ),
    )
    p.add_argument("-n", type=int, required=True, help="number of frames")
    p.add_argument("-o", "--out", required=True, help="folder to write the run into")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument(
        "--pe-threshold",
        type=float,
        default=None,
        help="trigger threshold in photoelectrons (1-100; real runs use "
        "1.5-15; default: the calibrated value)",
    )
    p.add_argument(
        "--trigger-pixels",
        type=int,
        default=1,
        choices=(1, 2, 3),
        help="neighbouring pixels above threshold needed to trigger",
    )
    p.add_argument(
        "--domes",
        nargs="+",
        default=["astrograph"],
        help="Lick domes (astrograph, barnard)",
    )
    p.add_argument(
        "--modules-per-dome",
        type=int,
        default=1,
        choices=(1, 2),
        help="modules of each dome",
    )
    p.add_argument(
        "--baseline",
        default=None,
        help="quabo_ph_baseline JSON file of per-pixel baselines (ADC)",
    )
    p.add_argument(
        "--anomaly-fraction", type=float, default=0.0, help="fraction of anomalous frames"
    )
    p.add_argument(
        "--classes",
        nargs="+",
        default=None,
        help="anomaly classes (default: the seven simulated classes; the DAQ "
        "failures dead_maroc, dead_line, pedestal_jump, stuck_frame "
        "join when named)",
    )
    p.add_argument(
        "--params", default=None, help="parameter file written by 'phbook calibrate'"
    )
    p.add_argument("--start", default="2025-08-02T05:31:36Z", help="run start time (UTC)")
    common(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "calibrate",
        help="fit the simulator to your real frames",
        description=desc(
            "Fit the pulse-height simulator's free parameters (threshold, gain, night-sky "
            "background, pedestal, noise, per-quabo offsets, shower size spectrum, length "
            "and width) to the ph256 frames of a run folder (or one .pff file), by "
            "matching the quantiles of the yardstick (phbook.yardstick). Prints the real "
            "vs simulated table with pass/fail and writes a parameter file for "
            "'phbook simulate --params'.",
            "Needs at least 50 ordinary frames that survive cleaning.",
        ),
    )
    p.add_argument("run", help="run folder (or .pff file) of real ph256 frames")
    p.add_argument("-o", "--out", required=True, help="parameter file to write (JSON)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the simulations")
    p.add_argument(
        "--n-sim", type=int, default=2500, help="frames per simulation of the fit"
    )
    p.add_argument(
        "--max-evaluations",
        type=int,
        default=400,
        help="most simulations the optimiser may run",
    )
    p.add_argument(
        "--start",
        default=None,
        help="parameter file to start from (default: the calibrated defaults)",
    )
    p.add_argument(
        "--held-out",
        action="store_true",
        help="also fit half the frames and judge the fit on the other half",
    )
    common(p)
    p.set_defaults(func=cmd_calibrate)
