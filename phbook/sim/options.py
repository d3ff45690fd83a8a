"""The options of ``phbook simulate`` and ``phbook calibrate``.

Kept apart from :mod:`phbook.sim.commands` (the work) so that building the command
line's parser imports nothing heavy: ``phbook --help`` stays fast.
"""

from __future__ import annotations

import argparse


def seed(text: str) -> int:
    """An argparse type: a random seed, a non-negative integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a seed is a non-negative integer, got {value}")
    return value


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
    p.add_argument("--seed", type=seed, default=0, help="random seed")
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
    p.add_argument("--seed", type=seed, default=0, help="random seed of the simulations")
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
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing parameter file"
    )
    common(p)
    p.set_defaults(func=cmd_calibrate)
