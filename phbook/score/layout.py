"""What a score file and its journal hold: format names, columns and their types."""

from __future__ import annotations

import numpy as np

__all__ = ["FORMAT", "JOURNAL_FORMAT", "ScoreError"]

FORMAT = "phbook-scores-1"
JOURNAL_FORMAT = "phbook-score-journal-1"
_ROW_COLUMNS = (
    "score",
    "file_index",
    "offset",
    "row",
    "time",
    "time_flags",
    "quabo",
    "label",
    "strength",
)
_ROW_DTYPES = {
    "score": np.float32,
    "file_index": np.int32,
    "offset": np.int64,
    "row": np.int64,
    "time": np.float64,
    "time_flags": np.uint8,
    "quabo": np.int8,
    "strength": np.float32,
}
_DAMAGE_COLUMNS = ("file_index", "offset", "kind", "skipped_bytes", "message")


class ScoreError(ValueError):
    """A source, output or journal that cannot be used; the message says which."""
