"""Out-of-core scoring: any number of frames, in chunks, with bounded memory and resume.

``score(model, source, out)`` scores every frame of a *source* with a model file
(:mod:`phbook.modelfile`) and writes one anomaly score per frame, with where the frame
came from, to the HDF5 file ``out``. The source is a PFF file, a run folder, an archive
of run folders, or an HDF5 selection (:mod:`phbook.select`).

How it stays within memory and survives interruption:

1. **A plan.** The source is cut into *parts*: byte ranges of PFF files (a file larger
   than ``part_frames`` frames is split, so even one 4 GB file is worked on in pieces)
   or row ranges of a selection. Counting uses file sizes only, no frame is read.
2. **Chunks.** A part is streamed ``chunk_frames`` frames at a time
   (:func:`phbook.io.pff.iter_chunks`), normalised and scored; memory is bounded by the
   chunk size whatever the size of the archive.
3. **A journal.** Each scored chunk is appended to a journal folder beside the output,
   ``<out>.journal/``, as one small ``.npz`` file written under a temporary name and
   renamed, so a chunk is either wholly there or not at all. An interrupted run (Ctrl-C,
   a killed job, a lost machine) started again with the same model and source resumes
   after the last chunk it finished and skips everything already scored.
4. **The output.** When every part is done, the journal is copied, in archive order and
   chunk by chunk, into a temporary HDF5 file that is then renamed to ``out``: the output
   file is never left half written, and it exists only when it is complete.

Damaged frames are skipped and listed (``strict=False``, the default here: one bad byte
should not cost a night of scoring) or stop the run (``strict=True``), with the file and
byte offset in the message; either way the chunks scored before stay in the journal.

The output layout (read it with :func:`read_scores` and :func:`top_k`)::

    score          (N,) float32 anomaly score, higher = more anomalous
    file_index     (N,) int32, row of files/ the frame came from
    offset         (N,) int64 byte offset of the frame in its PFF file
    row            (N,) int64 row in the source selection (-1 for PFF sources)
    time           (N,) float64 Unix time of the frame (phbook.io.pff.frame_times)
    time_flags     (N,) uint8
    quabo          (N,) int8
    label          (N,) bytes: simulation truth where the archive has it, else "unknown"
    strength       (N,) float32 simulated anomaly strength (NaN: normal or unknown)
    files/         name (relative to the source root), run, dome, module, pe_threshold,
                   n_scored: one row per PFF file
    damage/        file_index, offset, kind, skipped_bytes, message
    attrs          format, model, model_sha256, family, dp, source, source_kind, root,
                   n_scored, n_damaged, threshold, strict, chunk_frames, seconds, ...

Frames are in plan order (file by file, offset by offset), whatever order the parts
were scored in (see :mod:`phbook.score.distributed` for scoring on several machines).

The package follows those steps, each module importing only the ones before it:
:mod:`~phbook.score.layout` (formats and columns), :mod:`~phbook.score.plan`,
:mod:`~phbook.score.parts` (reading and scoring a part), :mod:`~phbook.score.journal`,
:mod:`~phbook.score.output`, :mod:`~phbook.score.distributed` (the parts as Dask
tasks), :mod:`~phbook.score.run` (the driver, :func:`score`) and
:mod:`~phbook.score.results` (reading scores back), and :mod:`~phbook.score.gallery`
(the image gallery of the top frames, ``phbook top -o``).
"""

from __future__ import annotations

import importlib

from ..io.archive import source_files
from .journal import _Journal as _Journal  # tests interrupt its write()
from .journal import chunk_name, journal_path
from .layout import FORMAT, JOURNAL_FORMAT, ScoreError
from .parts import score_part
from .plan import Part, Plan, plan_source
from .results import frames_of, read_scores, top_distinct, top_k, unusable_files

# The driver (and the Dask parts) need the model code, hence torch: they are loaded on
# first use, so that reading score files (phbook top, phbook inspect) starts fast.
_RUN_NAMES = ("score", "score_dask", "ScoreReport", "peak_rss_mb")


def __getattr__(name: str):
    if name == "distributed":
        value = importlib.import_module("phbook.score.distributed")
    elif name in _RUN_NAMES:
        value = getattr(importlib.import_module("phbook.score.run"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


__all__ = [
    "unusable_files",
    "FORMAT",
    "JOURNAL_FORMAT",
    "Part",
    "Plan",
    "ScoreReport",
    "ScoreError",
    "plan_source",
    "source_files",
    "score",
    "score_dask",
    "score_part",
    "read_scores",
    "top_k",
    "top_distinct",
    "frames_of",
    "peak_rss_mb",
    "journal_path",
    "chunk_name",
    "distributed",
]
