"""The ``phbook`` command: the book's pipeline on your own data, from a shell.

::

    phbook inspect ARCHIVE                                  what is in the data
    phbook select ARCHIVE --pe-threshold 11.5 --min-domes 2 -n 250000 -o selection.h5
    phbook train selection.h5 --model beta-vae --beta 1e-3 -o model.pt
    phbook score model.pt ARCHIVE -o scores.h5              every frame, resumable
    phbook top scores.h5 -k 50 -o top.png                   the most anomalous frames

Each step is a function of the package (:func:`phbook.select.select`,
:func:`phbook.score.score`, ...); this module only parses arguments, prints what
happened and turns errors into messages and exit codes. :func:`main` takes the
arguments as a list and returns the exit code, so it can be called from Python (the
tests and chapter 13 do): 0 success, 1 bad input (the message names the file, offset or
argument), 2 a usage error, 130 interrupted (run the same command again to resume).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__

__all__ = ["main", "build_parser", "inspect_path", "format_summary"]

_DESCRIPTION = """\
Unsupervised anomaly detection in PANOSETI pulse-height data, from raw PFF files to a
ranked list of anomalies, with bounded memory whatever the size of the archive.

The steps, in order:
  1. phbook inspect ARCHIVE       what the data holds: products, modules, quabos,
                                  frames, time span, thresholds, damaged frames
  2. phbook select ARCHIVE ...    draw training frames uniformly at random (HDF5)
  3. phbook train SELECTION ...   fit a detector of the book on them (a model file)
  4. phbook score MODEL SOURCE    score every frame of an archive or selection, in
                                  chunks; resumes after an interruption; --workers or
                                  --scheduler run it with Dask
  5. phbook top SCORES ...        the most anomalous frames: a gallery and a table with
                                  file, byte offset and time, to go back to the raw data

Run 'phbook COMMAND --help' for the options of each step.
"""

_EPILOG = """\
exit codes: 0 success; 1 bad input (the message names the file, byte offset or
argument); 2 usage error; 130 interrupted (run the same command again to resume).
Progress bars show on a terminal; PHBOOK_PROGRESS=0/1 forces them off/on.
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Raw descriptions (paragraphs filled by :func:`_desc`) and '(default: X)' after
    the options whose default is worth saying."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            action.default not in (None, False, argparse.SUPPRESS)
            and "default" not in text
            and action.option_strings
        ):
            text += " (default: %(default)s)"
        return text


#: the data products a --dp option takes (phbook.io.pff.DATA_PRODUCTS)
_DATA_PRODUCTS = ("ph256", "ph1024", "img16", "img8")


def _desc(*paragraphs: str) -> str:
    """Paragraphs filled to 88 columns (lines starting with two spaces kept as is)."""
    import textwrap

    out = []
    for para in paragraphs:
        if para.startswith("  ") or "\n" in para:
            out.append(para)
        else:
            out.append(textwrap.fill(" ".join(para.split()), 88))
    return "\n\n".join(out)


# ----------------------------------------------------------------------------------
# Helpers


def _show(args) -> bool | None:
    return False if getattr(args, "quiet", False) else None


def _say(args, text: str = "") -> None:
    if not getattr(args, "quiet", False):
        print(text, flush=True)


def _query_args(p: argparse.ArgumentParser, run_type_default: str) -> None:
    g = p.add_argument_group("which runs (the query)")
    g.add_argument(
        "--run-type",
        default=None,
        help=f"run type from data_config.json ('any': every run; default "
        f"{run_type_default!r})",
    )
    g.add_argument(
        "--pe-threshold",
        type=float,
        nargs="+",
        metavar="PE",
        help="keep runs at these pulse-height thresholds (photoelectrons)",
    )
    g.add_argument(
        "--pe-range",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="keep runs whose threshold lies in [LOW, HIGH]",
    )
    g.add_argument(
        "--min-domes",
        type=int,
        default=None,
        help="keep runs in which at least this many domes recorded frames (2: both "
        "Lick domes)",
    )
    g.add_argument("--domes", nargs="+", help="keep modules of these domes")
    g.add_argument("--modules", type=int, nargs="+", help="keep these module IDs")


def _count(text: str) -> int | None:
    """``-n``: a number of frames (1,000 and 1e6 spellings too), or 'all' (None)."""
    if text.strip().lower() == "all":
        return None
    try:
        value = float(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of frames or 'all'"
        ) from None
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of frames >= 1")
    return int(value)


def _query(args, dp: str, run_type_default: str | None, always: bool):
    """A Query from the arguments, or None when none was given and not ``always``."""
    from .select import Query

    given = any(
        getattr(args, k) is not None
        for k in ("run_type", "pe_threshold", "pe_range", "min_domes", "domes", "modules")
    )
    if not given and not always:
        return None
    run_type = args.run_type if args.run_type is not None else run_type_default
    if run_type in ("any", "all", ""):
        run_type = None
    thr = args.pe_threshold
    return Query(
        run_type=run_type,
        pe_threshold=None if thr is None else tuple(thr),
        pe_range=None if args.pe_range is None else tuple(args.pe_range),
        domes=None if args.domes is None else tuple(args.domes),
        min_domes=args.min_domes or 0,
        modules=None if args.modules is None else tuple(args.modules),
        dp=dp,
    )


# ----------------------------------------------------------------------------------
# inspect


def _fmt_int(n: Any) -> str:
    return f"{int(n):,}"


def format_summary(d: dict[str, Any], max_runs: int | None = None) -> str:
    """The text ``phbook inspect`` prints for a summary from :func:`inspect_path`;
    ``max_runs`` lists only the first and last runs of a longer run table."""
    lines = []
    kind = d["kind"]
    if kind in ("file", "archive"):
        lines.append(
            f"{d['path']}: {d['kind']}, {d['runs']} run(s), {d['files']} file(s), "
            f"{d['bytes'] / 1e6:,.1f} MB"
            + (" (simulated: truth sidecars found)" if d["simulated"] else "")
        )
        for dp, v in d["products"].items():
            lines.append(
                f"  product {dp}: {v['files']} file(s), {_fmt_int(v['frames'])} "
                "frames (from file sizes)"
            )
        lines.append(
            f"  modules: {', '.join(map(str, d['modules'])) or '?'}"
            f"; domes: {', '.join(d['domes']) or 'unknown (no obs_config.json)'}"
        )
        thr = ", ".join(f"{t:g}" for t in d["pe_thresholds"]) or "unknown"
        lines.append(
            f"  PE thresholds: {thr}; run types: "
            f"{', '.join(d['run_types']) or 'unknown (no data_config.json)'}"
        )
        for u in d["unreadable_first_frame"]:
            lines.append(f"  first frame unreadable: {u['file']}: {u['error']}")
        if d.get("run_table"):
            lines.append("  runs:")
            table = d["run_table"]
            n_skip = 0 if max_runs is None else max(0, len(table) - max(1, max_runs))
            head = (len(table) - n_skip + 1) // 2
            for i, r in enumerate(table):
                if head <= i < head + n_skip:
                    if i == head:
                        lines.append(f"    ... {n_skip} more run(s) ...")
                    continue
                lines.append(
                    f"    {r['run']}  {r['dp']}  {r['run_type']}  "
                    f"{r['pe_threshold']:g} PE  domes {r['domes'] or '?'}  "
                    f"{r['modules']} module(s)  {r['files']} file(s)  "
                    f"{_fmt_int(r['n_frames'])} frames"
                )
        s = d.get("scan")
        if s:
            lines.append(
                f"  read {_fmt_int(s['frames'])} good frames in {s['seconds']:.1f} s; "
                f"quabos {', '.join(map(str, s['quabos'])) or '-'}"
            )
            if s["time_start"]:
                lines.append(
                    f"  time span: {s['time_start']} to {s['time_end']} "
                    f"({s['span_s'] / 3600:,.2f} h)"
                )
            f = s["time_flags"]
            lines.append(
                f"  time flags: {f['clocks_disagree']} clocks disagree, "
                f"{f['nsec_placeholder']} nsec placeholder, {f['no_packet']} no packet"
            )
            lines.append(
                f"  damaged stretches: {s['damaged_stretches']} "
                f"({_fmt_int(s['damaged_bytes'])} bytes skipped)"
            )
            for x in s["damage"]:
                lines.append(
                    f"    {x['file']} at byte {x['offset']}: {x['kind']}: "
                    f"{x['message'][:120]}"
                )
            if s["damaged_stretches"] > len(s["damage"]):
                lines.append(
                    f"    ... and {s['damaged_stretches'] - len(s['damage'])} more"
                )
        else:
            lines.append("  (not read: pass without --no-scan to read every frame)")
    elif kind == "selection":
        a = d["attrs"]
        lines.append(
            f"{d['path']}: selection of {_fmt_int(d['frames'])} {a.get('dp')} "
            f"frames from {_fmt_int(a.get('population', 0))} "
            f"({a.get('archive')}), seed {a.get('seed')}, "
            f"{a.get('n_damaged', 0)} damaged skipped"
        )
        lines.append(f"  query: {json.dumps(d['query'], sort_keys=True)}")
        lines.append("  labels: " + ", ".join(f"{k} {v:,}" for k, v in d["labels"].items()))
        lines.append(
            f"  modules: {', '.join(map(str, d['modules']))}; time span "
            f"{d['time_start']} to {d['time_end']}"
        )
    elif kind == "scores":
        a = d["attrs"]
        q = d["score_quantiles"]
        lines.append(
            f"{d['path']}: scores of {_fmt_int(d['frames'])} {a['dp']} frames "
            f"by a {a['family']} model ({a['model']})"
        )
        lines.append(
            f"  source: {a['source']} ({a['source_kind']}), {a['n_files']} "
            f"file(s), {d['damaged_stretches']} damaged stretch(es) skipped"
        )
        lines.append(
            f"  score median {q['50%']:.4g}, 99% {q['99%']:.4g}, 99.9% "
            f"{q['99.9%']:.4g}; {_fmt_int(d['above_threshold'])} frames above the "
            f"model's threshold {a['threshold']:.4g}"
        )
    elif kind == "model":
        t = d["training"]
        lines.append(
            f"{d['path']}: {d['family']} model of {d['dp']} frames "
            f"{'x'.join(map(str, d['image_shape']))}, made {d['created']}"
        )
        lines.append(f"  parameters: {json.dumps(d['params'], sort_keys=True)}")
        lines.append(f"  normalisation: {json.dumps(d['normalisation'], sort_keys=True)}")
        lines.append(
            f"  trained on {_fmt_int(t.get('n_frames', 0))} frames of "
            f"{t.get('source', '?')}; threshold {d['threshold']:.4g} "
            f"(contamination {d['contamination']:g})"
        )
        if t.get("labels"):
            lines.append(
                "  training labels: "
                + ", ".join(f"{k} {v:,}" for k, v in t["labels"].items())
            )
    return "\n".join(lines)


def inspect_path(
    path: str | os.PathLike,
    *,
    scan: bool = True,
    progress: bool | None = None,
    dp: str | None = None,
) -> dict[str, Any]:
    """:func:`phbook.summary.inspect_path`, or :func:`phbook.modelfile.describe` for
    a model file (what ``phbook inspect`` prints); the model code (torch) is loaded
    only for model files."""
    if Path(path).suffix.lower() == ".pt" and Path(path).is_file():
        from . import modelfile

        return modelfile.describe(path)
    from . import summary

    return summary.inspect_path(path, scan=scan, progress=progress, dp=dp)


def _cmd_inspect(args) -> int:
    if args.damage:
        from .io import archive

        stretches = archive.damage_list(args.path, args.dp)
        if args.json:
            print(json.dumps([d.__dict__ for d in stretches], indent=1))
            return 0
        print(f"{len(stretches)} damaged stretch(es) in {args.path}")
        for d in stretches:
            print(
                f"  {d.path}  byte {d.offset:,}  {d.length:,} bytes  {d.kind}: {d.message}"
            )
        return 0
    if args.max_runs is not None and args.max_runs < 1:
        raise SystemExit(f"phbook inspect: --max-runs {args.max_runs}: give 1 or more")
    d = inspect_path(args.path, scan=not args.no_scan, progress=_show(args), dp=args.dp)
    if args.json:
        print(json.dumps(d, indent=1, default=str))
    else:
        print(format_summary(d, max_runs=args.max_runs))
    return 0


# ----------------------------------------------------------------------------------
# select


def _cmd_select(args) -> int:
    from . import select as _select
    from .io.archive import Archive

    query = _query(args, args.dp, "sci-data", always=True)
    out = Path(args.output)
    archive = Archive(args.archive, dp=args.dp)
    path = _select.select(
        archive,
        out,
        args.n,
        query,
        seed=args.seed,
        strict=args.strict,
        overwrite=args.overwrite,
        progress=_show(args),
    )
    attrs = _select.read_attrs(path)
    _say(
        args,
        f"selected {attrs['n_selected']:,} of {attrs['population']:,} frames "
        f"({attrs['population_files']} files) -> {path}",
    )
    if attrs["n_damaged"]:
        _say(args, f"  {attrs['n_damaged']} chosen frame(s) were damaged and skipped")
    return 0


# ----------------------------------------------------------------------------------
# train


def _family_options() -> dict[str, list]:
    """Every family option (and the shared training options), by name."""
    from . import modelfile

    options: dict[str, list] = {}
    for fam in dict.fromkeys(modelfile.FAMILIES.values()):
        for opt in fam.options + (modelfile.TRAIN_OPTIONS if fam.trains else ()):
            options.setdefault(opt.name, []).append((fam, opt))
    return options


def _add_family_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "model options (each applies to the models in brackets, whose defaults it shows)"
    )
    for name, uses in _family_options().items():
        opt = uses[0][1]
        where = ", ".join(f"{fam.name}: {o.shown_default}" for fam, o in uses)
        g.add_argument(
            opt.flag,
            dest=f"opt_{name}",
            type=opt.type,
            default=None,
            choices=opt.choices,
            metavar=name.upper(),
            help=f"{opt.help} [{where}]".replace("%", "%%"),
        )


def _resolve_params(args, fam) -> dict[str, Any]:
    from . import modelfile

    mine = {o.name for o in fam.options + (modelfile.TRAIN_OPTIONS if fam.trains else ())}
    params = fam.defaults()
    for name in _family_options():
        value = getattr(args, f"opt_{name}")
        if value is None:
            continue
        if name not in mine:
            flags = ", ".join("--" + n.replace("_", "-") for n in sorted(mine)) or "none"
            raise ValueError(
                f"--{name.replace('_', '-')} is not an option of model {fam.name!r} "
                f"(its options: {flags})"
            )
        params[name] = value
    return params


def _cmd_train(args) -> int:
    from . import modelfile, trainfile

    params = _resolve_params(args, modelfile.family(args.model))
    report = trainfile.train(
        args.selection,
        args.model,
        args.output,
        params=params,
        max_frames=args.max_frames,
        val_fraction=args.val_fraction,
        contamination=args.contamination,
        stretch=args.stretch,
        softening=args.softening,
        x_max=args.x_max,
        seed=args.seed,
        device=args.device,
        overwrite=args.overwrite,
        progress=_show(args),
        announce=lambda job: _say(args, str(job)),
    )
    if report is not None:
        _say(args, str(report))
    return 0


# ----------------------------------------------------------------------------------
# score


def _cmd_score(args) -> int:
    import h5py

    from . import config, modelfile
    from . import score as _score

    config.use_threads()  # one thread unless PHBOOK_THREADS says otherwise
    model = modelfile.load(args.model, device=args.device)
    query = None
    if not str(args.source).lower().endswith((".h5", ".hdf5", ".hdf")):
        query = _query(args, model.dp, None, always=False)
    trained_at = set(model.training.get("pe_thresholds") or [])
    dask = args.workers is not None or args.scheduler is not None
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    part_frames = (
        args.part_frames
        if args.part_frames is not None
        else ((1 << 18) if dask else (1 << 20))
    )
    out = Path(args.output)
    if args.report:  # refused now, not after the scoring
        from .io import writing

        writing.check_output(
            args.report,
            {"source": args.source, "model file": args.model, "score file": out},
            overwrite=True,
            probe=True,
        )
    journal = _score.journal_path(out)
    if journal.exists() and not args.overwrite:
        _say(args, f"resuming the unfinished run journalled in {journal}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = _score.score(
            model,
            args.source,
            out,
            query=query,
            chunk_frames=args.chunk_frames,
            part_frames=part_frames,
            strict=args.strict,
            overwrite=args.overwrite,
            progress=_show(args),
            workers=args.workers,
            scheduler=args.scheduler,
        )
    unusable = _score.unusable_files(out)
    if report.n_scored == 0:
        # no silent success: every file yielded nothing; say which and why
        raise ValueError(
            f"no usable frames in {args.source}:\n"
            + "\n".join(f"  {file}: {why}" for file, why in unusable)
            if unusable
            else f"no frames to score in {args.source}: it holds none"
        )
    if report.already_complete:
        _say(
            args,
            f"{out} already holds the scores of {report.n_scored:,} frames by "
            "this model; nothing to do (--overwrite scores again)",
        )
    else:
        where = f"{report.workers} Dask worker(s)" if dask else "1 process"
        _say(
            args,
            f"scored {report.n_scored:,} frames from {report.n_files} file(s) on "
            f"{where} in {report.seconds:.1f} s ({report.frames_per_s:,.0f} "
            f"frames/s); peak memory {report.peak_rss_mb:,.0f} MB -> {out}",
        )
        if report.resumed_frames:
            _say(
                args,
                f"  {report.resumed_frames:,} frames had been scored by an earlier, "
                "interrupted run and were not scored again",
            )
        with h5py.File(out, "r") as h5:
            here = {float(t) for t in h5["files/pe_threshold"][:] if math.isfinite(t)}
        if trained_at and here - trained_at:
            _say(
                args,
                "  note: the model was trained on runs at "
                + ", ".join(f"{t:g}" for t in sorted(trained_at))
                + " PE; these frames also come from runs at "
                + ", ".join(f"{t:g}" for t in sorted(here - trained_at))
                + " PE, whose frames look different (--pe-threshold selects runs)",
            )
        if report.n_damaged:
            _say(
                args,
                f"  skipped {report.n_damaged} damaged stretch(es), listed in the "
                f"damage/ group of {out} (where: phbook inspect --damage SOURCE)",
            )
        for file, why in unusable:
            _say(args, f"  no frames from {file}: {why}")
    for w in caught:
        if "damaged" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if args.report:
        Path(args.report).write_text(json.dumps(report.to_dict(), indent=1))
    return 0


# ----------------------------------------------------------------------------------
# top


def _cmd_top(args) -> int:
    from . import score as _score
    from .io import writing
    from .io.archive import utc_iso
    from .select import RERUN

    if args.k < 1:
        raise ValueError(f"-k must be at least 1, got {args.k}")
    if args.ncols < 1:
        raise ValueError(f"--ncols must be at least 1, got {args.ncols}")
    if not 10 <= args.dpi <= 1200:
        raise ValueError(f"--dpi must lie in [10, 1200], got {args.dpi}")
    for path in (args.csv, args.output):
        if path is not None:
            writing.check_output(
                path, {"score file": args.scores}, overwrite=args.overwrite
            )
    if args.csv and args.output and Path(args.csv).resolve() == Path(args.output).resolve():
        raise ValueError("--csv and -o name the same file: give each its own")
    if args.distinct:
        table, images = _score.top_distinct(args.scores, args.k)
    else:
        table = _score.top_k(args.scores, args.k)
        images = None
    if not len(table):
        raise ValueError(
            f"{args.scores} holds no scored frames: nothing to rank (did phbook score "
            "find usable frames in its source? phbook inspect on the source says)"
        )
    if images is None and args.output:  # the table needs only the score file
        images = _score.frames_of(args.scores, table)
    cols = ["rank", "score", "file", "offset", "time", "module", "quabo", "label"]
    if args.distinct:
        cols.append("copies")
    shown = table[cols].copy()
    shown["time"] = [utc_iso(t) for t in table["time"]]
    # the files first: a reader that stops reading the table (| head) loses nothing
    if args.csv:
        out = table.copy()
        out["time_utc"] = shown["time"]
        with writing.atomic_write(args.csv, RERUN) as f:
            out.to_csv(f, index=False)
    if args.output:
        from .score.gallery import draw_gallery

        draw_gallery(
            table,
            images,
            args.output,
            title=f"Top {len(table)} anomaly scores: {Path(args.scores).name}",
            ncols=args.ncols,
            dpi=args.dpi,
            then=RERUN,
        )
    if not args.quiet:
        import pandas as pd

        with pd.option_context("display.max_colwidth", 80, "display.width", 200):
            print(shown.to_string(index=False), flush=True)
    if args.output:
        _say(args, f"gallery of the top {len(table)} frames -> {args.output}")
    return 0


# ----------------------------------------------------------------------------------
# The parser


def build_parser(models: bool = True) -> argparse.ArgumentParser:
    """The argument parser of the ``phbook`` command.

    ``models=False`` leaves out the model families of ``train`` (their options and
    choices), which need the model code (torch) imported: :func:`main` builds the full
    parser only for ``phbook train``, so that every other command starts fast.
    """
    from .sim import options as sim_options

    if models:
        from . import modelfile

    parser = argparse.ArgumentParser(
        prog="phbook",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"phbook {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def common(p):
        p.add_argument(
            "-q",
            "--quiet",
            action="store_true",
            help="no progress bars or messages (errors are still printed)",
        )

    p = sub.add_parser(
        "inspect",
        formatter_class=_Formatter,
        help="summarise a PFF file, run folder, archive, selection, score or model file",
        description=_desc(
            """Summarise what a path holds. For PFF data (a file, a run folder
            or an archive of run folders): data products, modules, domes, thresholds and run
            types from names and configuration files, frame counts from file
            sizes; then, unless --no-scan, every frame is read to find the
            quabos, the time span, the time flags and the damaged stretches
            (file and byte offset). Selections (.h5), score files (.h5) and
            model files (.pt) are summarised from their metadata."""
        ),
    )
    p.add_argument(
        "path",
        help="a .pff file, a folder, a .h5 selection or score file, or a .pt model file",
    )
    p.add_argument(
        "--no-scan",
        action="store_true",
        help="do not read the frames (names, sizes and first headers only)",
    )
    p.add_argument(
        "--dp",
        default=None,
        choices=_DATA_PRODUCTS,
        help="data product of a .pff file whose name does not say it",
    )
    p.add_argument(
        "--damage",
        action="store_true",
        help="list every damaged stretch of PFF data: file, byte offset, length, kind",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument(
        "--max-runs", type=int, metavar="N", help="list only N runs: the first and last"
    )
    common(p)
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser(
        "select",
        formatter_class=_Formatter,
        help="draw training frames at random from an archive into an HDF5 file",
        description=_desc(
            """Draw N frames uniformly at random, without replacement, from
            every frame of the runs the query keeps (the population), and write
            them with their
            metadata (run, dome, module, quabo, time, file, byte offset, and the
            simulation truth of simulated archives) to an HDF5 file. Only the
            chosen frames are read, so memory does not grow with the archive.
            The same archive, query, N and seed give the same frames."""
        ),
    )
    p.add_argument("archive", help="a .pff file, a run folder or an archive of run folders")
    p.add_argument(
        "-n",
        type=_count,
        required=True,
        help="frames to draw, or 'all' for every frame the query keeps",
    )
    p.add_argument(
        "-o", "--output", required=True, help="the selection file to write (.h5)"
    )
    p.add_argument("--dp", default="ph256", choices=_DATA_PRODUCTS, help="data product")
    p.add_argument(
        "--seed", type=sim_options.seed, default=0, help="seed of the random draw"
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first damaged chosen frame instead of skipping it",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    _query_args(p, "sci-data")
    common(p)
    p.set_defaults(func=_cmd_select)

    models_text = (
        "\n".join(
            f"    {f.name:10s} {f.summary}"
            for f in dict.fromkeys(modelfile.FAMILIES.values())
        )
        if models
        else "    (run 'phbook train --help' to list them)"
    )
    p = sub.add_parser(
        "train",
        formatter_class=_Formatter,
        help="fit a detector on a selection and write a model file",
        description=_desc(
            "Fit a detector of the book on the frames of a selection and write "
            "a model file: the detector's weights, the normalisation (asinh stretch), the "
            "data product and image size, and a summary of the training data. Neural "
            "networks train on the GPU when there is one, resume from OUTPUT.ckpt when "
            "interrupted, and train on several GPUs when launched with torchrun, e.g. "
            "'torchrun --nproc_per_node 4 -m phbook train ...'.",
            "models:\n" + models_text,
        ),
    )
    p.add_argument("selection", help="a selection file made by phbook select")
    p.add_argument(
        "--model",
        required=True,
        choices=sorted(set(modelfile.FAMILIES)) if models else None,
        help="the detector family",
    )
    p.add_argument("-o", "--output", required=True, help="the model file to write (.pt)")
    p.add_argument(
        "--max-frames",
        type=int,
        default=None,
        help="train on a random subset of this many frames",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="frames held out for validation (neural networks)",
    )
    p.add_argument(
        "--contamination",
        type=float,
        default=0.01,
        help="fraction of training frames above the model's threshold",
    )
    p.add_argument(
        "--stretch",
        choices=("asinh", "linear"),
        default="asinh",
        help="normalisation of the pixel values",
    )
    p.add_argument(
        "--softening",
        type=float,
        default=16.0,
        help="asinh softening in ADC (one photoelectron)",
    )
    p.add_argument(
        "--x-max",
        type=float,
        default=3400.0,
        help="the pixel value mapped to 1 (saturation)",
    )
    p.add_argument(
        "--seed", type=sim_options.seed, default=0, help="seed of the subset and training"
    )
    p.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:N or mps (default: a GPU when present)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    if models:
        _add_family_args(p)
    common(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "score",
        formatter_class=_Formatter,
        help="score every frame of an archive or selection (resumable, Dask optional)",
        description=_desc(
            """Score every frame of SOURCE (a .pff file, a run folder, an archive or a
            selection file) with a model file, chunk by chunk, and write one
            anomaly score per frame with its file, byte offset and time to an
            HDF5 file. Memory is bounded by --chunk-frames whatever the archive
            size. Each scored chunk is journalled in OUTPUT.journal/; if the run
            is interrupted, the same command resumes after the last chunk. The
            output appears only when complete. Damaged frames are skipped and
            listed unless --strict. The model refuses frames of another data
            product or size. With --workers N (an embedded Dask LocalCluster) or
            --scheduler ADDRESS (a running Dask cluster, e.g. from dask-jobqueue
            on Slurm) the parts of the archive are scored in parallel; the
            archive must then be on a file system every worker sees."""
        ),
    )
    p.add_argument("model", help="a model file made by phbook train")
    p.add_argument("source", help="a .pff file, a run folder, an archive or a selection")
    p.add_argument("-o", "--output", required=True, help="the score file to write (.h5)")
    p.add_argument(
        "--chunk-frames",
        type=int,
        default=65536,
        help="frames read and scored at a time (bounds the memory)",
    )
    p.add_argument(
        "--part-frames",
        type=int,
        default=None,
        help="frames per unit of work (files larger than this are split); "
        "default 1,048,576, or 262,144 with Dask",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first damaged frame instead of skipping it",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="discard an existing output or unfinished run",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="score on an embedded Dask LocalCluster of this many processes",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        help="score on the Dask cluster of this scheduler (tcp://host:8786)",
    )
    p.add_argument(
        "--device", default=None, help="where neural networks score: cpu, cuda, cuda:N, mps"
    )
    p.add_argument(
        "--report",
        default=None,
        help="write what was done (frames, seconds, peak memory) as JSON here",
    )
    _query_args(p, "any")
    common(p)
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser(
        "top",
        formatter_class=_Formatter,
        help="the most anomalous frames: a table and an image gallery",
        description=_desc(
            """Find the K highest scores in a score file (reading it in chunks), read those
            frames back from the source, and print them with their file, byte
            offset and UTC time, so that each can be found in the raw data. -o
            writes an image gallery, --csv the full table."""
        ),
    )
    p.add_argument("scores", help="a score file made by phbook score")
    p.add_argument("-k", type=int, default=50, help="how many frames")
    p.add_argument("-o", "--output", default=None, help="the gallery image (.png, .pdf)")
    p.add_argument("--csv", default=None, help="write the table here")
    p.add_argument(
        "--distinct",
        action="store_true",
        help="show each distinct image once, with its number of copies (simulated "
        "archives that resample a pool of frames repeat frames; so does a DAQ that "
        "wrote a frame twice)",
    )
    p.add_argument("--ncols", type=int, default=10, help="gallery columns")
    p.add_argument("--dpi", type=int, default=120, help="gallery resolution")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing gallery or table"
    )
    common(p)
    p.set_defaults(func=_cmd_top)
    sim_options.add_parsers(sub, common, _cmd_simulate, _cmd_calibrate, _desc)
    return parser


# --------------------------------------------- simulate and calibrate (phbook.sim)


def _cmd_simulate(args) -> int:
    from .sim import commands

    _say(args, commands.simulate(args))
    return 0


def _cmd_calibrate(args) -> int:
    from .sim import commands

    print(commands.calibrate(args, progress=_show(args)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``phbook`` command with ``argv`` (default: ``sys.argv[1:]``); returns the
    exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(models=command == "train")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # the reader of our output went away (phbook top x.h5 | head): stop quietly
        with contextlib.suppress(OSError, ValueError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(
            f"phbook {args.command}: interrupted; run the same command again to resume "
            "where it stopped",
            file=sys.stderr,
        )
        return 130
    except (ValueError, OSError, KeyError) as exc:  # PFFError is a ValueError
        from .io.pff import PFFError

        text = str(exc) if not isinstance(exc, KeyError) else f"missing {exc}"
        if (
            isinstance(exc, FileNotFoundError)
            and exc.filename
            and str(exc.filename) not in text
        ):
            text = f"{exc.filename}: {exc.strerror}"
        print(f"phbook {args.command}: error: {text}", file=sys.stderr)
        if isinstance(exc, PFFError) and args.command == "score":
            print(
                "  (the frames scored before it are kept; rerun without --strict to "
                "skip damaged frames, or fix the file, and the run resumes)",
                file=sys.stderr,
            )
        return 1


if __name__ == "__main__":
    sys.exit(main())
