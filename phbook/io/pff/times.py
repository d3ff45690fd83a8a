"""Frame times from the White Rabbit and host clocks of a header."""

from __future__ import annotations

import numpy as np

from .format import (
    CLOCKS_DISAGREE,
    NO_PACKET,
    NSEC_INVALID,
    NSEC_PLACEHOLDER,
    NSEC_PLACEHOLDER_VALUE,
)

# ----------------------------------------------------------------------------------
# Times


def wr_to_unix(pkt_tai, pkt_nsec, tv_sec):
    """White Rabbit packet time in Unix seconds (float64); NaN where clocks disagree.

    Vectorised form of the rule in the PANOSETI software (see the module docstring).
    float64 resolves about 0.2 microseconds at today's Unix times; the raw header fields
    keep the full nanosecond resolution.
    """
    pkt_tai = np.asarray(pkt_tai, dtype=np.int64)
    tv_sec = np.asarray(tv_sec, dtype=np.int64)
    nsec = np.asarray(pkt_nsec, dtype=np.float64) * 1e-9
    d = (tv_sec - pkt_tai + 37) % 1024
    sec = np.where(d == 1, tv_sec - 1, np.where(d == 1023, tv_sec + 1, tv_sec))
    ok = (d == 0) | (d == 1) | (d == 1023)
    ok &= nsec < 1.0  # pkt_nsec of 1e9 or more is not a nanosecond count
    return np.where(ok, sec + nsec, np.nan)


def frame_times(headers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unix time (float64 seconds) and flags of every frame from its header fields.

    The time is the White Rabbit time where the rule resolves it and ``pkt_nsec`` is a
    real value. Otherwise it is the host clock ``tv_sec + tv_usec/1e6`` (accurate to
    about a millisecond) and ``flags`` says why: :data:`CLOCKS_DISAGREE` (the WR and
    host seconds differ by more than one: reported, never guessed at) and/or
    :data:`NSEC_PLACEHOLDER` (``pkt_nsec`` is 999999999, which the DAQ writes when the
    nanoseconds were invalid) or :data:`NSEC_INVALID` (``pkt_nsec`` is 1e9 or more,
    which a printf ``%9u`` prints as 10 digits). For four-quabo headers the first
    quabo with a packet (``tv_sec > 0``) is used; :data:`NO_PACKET` marks frames
    without any (time NaN).
    """
    headers = np.asarray(headers)
    names = headers.dtype.names or ()
    if "quabo_num" in names:
        tai, nsec = headers["pkt_tai"], headers["pkt_nsec"]
        sec, usec = headers["tv_sec"], headers["tv_usec"]
        missing = np.zeros(len(headers), dtype=bool)
    else:
        have = headers["tv_sec"] > 0
        q = np.argmax(have, axis=1)
        rows = np.arange(len(headers))
        tai, nsec = headers["pkt_tai"][rows, q], headers["pkt_nsec"][rows, q]
        sec, usec = headers["tv_sec"][rows, q], headers["tv_usec"][rows, q]
        missing = ~have.any(axis=1)
    sec = sec.astype(np.int64)
    d = (sec - tai.astype(np.int64) + 37) % 1024
    ok = (d == 0) | (d == 1) | (d == 1023)
    placeholder = nsec == NSEC_PLACEHOLDER_VALUE
    invalid = nsec >= 1_000_000_000
    wr_sec = sec - (d == 1) + (d == 1023)
    host = sec + usec * 1e-6
    t = np.where(ok & ~placeholder & ~invalid, wr_sec + nsec * 1e-9, host)
    flags = (
        np.where(ok, 0, CLOCKS_DISAGREE)
        | np.where(placeholder, NSEC_PLACEHOLDER, 0)
        | np.where(invalid, NSEC_INVALID, 0)
        | np.where(missing, NO_PACKET, 0)
    ).astype(np.uint8)
    t = np.where(missing, np.nan, t)
    return t, flags
