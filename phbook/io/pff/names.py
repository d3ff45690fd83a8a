"""Names of PFF files and run folders, and the start times they carry."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from .format import DATA_PRODUCTS, DataProduct, PFFNameError, data_product

# ----------------------------------------------------------------------------------
# Names of files and run folders

_TIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2})([:_-])(\d{2})\5(\d{2})(?:\.\d+)?(Z|[+-]00:?00)?$"
)


def parse_time(text: str) -> datetime:
    """Parse a start time as written in PANOSETI names (UTC).

    Three spellings occur: ``2024-07-25T04:34:46Z`` (the DAQ), ``2024-07-25T04_34_46Z``
    and ``2024-07-25T04-34-46Z`` (copies made for file systems that forbid ``:``).
    """
    m = _TIME_RE.match(text)
    if m is None:
        raise ValueError(
            f"{text!r} is not a start time like 2024-07-25T04:34:46Z "
            "(':' may also be written '_' or '-')"
        )
    y, mo, d, h, _, mi, s, _ = m.groups()
    try:
        return datetime(
            int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=timezone.utc
        )
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid time: {exc}") from None


def _format_time(t: datetime | float, sep: str = ":") -> str:
    if not isinstance(t, datetime):
        t = datetime.fromtimestamp(float(t), tz=timezone.utc)
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    t = t.astimezone(timezone.utc)
    if sep not in (":", "_", "-"):
        raise ValueError(f"time separator must be ':', '_' or '-', got {sep!r}")
    return t.strftime(f"%Y-%m-%dT%H{sep}%M{sep}%SZ")


def _split_pairs(stem: str, what: str, name: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for piece in stem.split("."):
        key, sep, value = piece.partition("_")
        if not sep or not key or not value:
            raise PFFNameError(
                f"{what} name component {piece!r} is not key_value", path=name
            )
        if key in pairs:
            raise PFFNameError(f"{what} name repeats the key {key!r}", path=name)
        pairs[key] = value
    return pairs


@dataclass(frozen=True)
class PFFName:
    """The parts of a PFF file name, e.g.
    ``start_2025-08-02T05:31:36Z.dp_ph256.bpp_2.module_254.seqno_0.pff``."""

    start: datetime
    dp: str
    bpp: int
    module: int
    seqno: int
    dome: int | None = None  #: older DAQ versions wrote a ``dome_<n>`` part

    @property
    def product(self) -> DataProduct:
        return DATA_PRODUCTS[self.dp]


def parse_filename(name: str | os.PathLike) -> PFFName:
    """Parse a PFF file name (the folder part of a path is ignored).

    Raises :class:`PFFNameError` naming the file when a part is missing or malformed,
    the data product is unknown or its bytes per pixel do not match the product.
    """
    base = os.path.basename(os.fspath(name))
    if not base.endswith(".pff"):
        raise PFFNameError("a PFF file name must end with .pff", path=base)
    pairs = _split_pairs(base[:-4], "file", base)
    missing = [k for k in ("start", "dp", "bpp", "module", "seqno") if k not in pairs]
    if missing:
        raise PFFNameError(
            f"file name lacks {', '.join(missing)} (expected "
            "start_<time>.dp_<product>.bpp_<n>.module_<id>.seqno_<k>.pff)",
            path=base,
        )
    unknown = sorted(set(pairs) - {"start", "dp", "bpp", "module", "seqno", "dome"})
    if unknown:
        raise PFFNameError(f"unknown file name key(s): {', '.join(unknown)}", path=base)
    try:
        start = parse_time(pairs["start"])
    except ValueError as exc:
        raise PFFNameError(str(exc), path=base) from None
    if pairs["dp"] not in DATA_PRODUCTS:
        raise PFFNameError(
            f"unknown data product dp_{pairs['dp']}; known: {', '.join(DATA_PRODUCTS)}",
            path=base,
        )
    ints = {}
    for key in ("bpp", "module", "seqno", "dome"):
        if key in pairs:
            if not pairs[key].isdigit():
                raise PFFNameError(
                    f"{key}_{pairs[key]} is not a non-negative integer", path=base
                )
            ints[key] = int(pairs[key])
    dp = DATA_PRODUCTS[pairs["dp"]]
    if ints["bpp"] != dp.bpp:
        raise PFFNameError(
            f"bpp_{ints['bpp']} does not match dp_{dp.name}, which has {dp.bpp} "
            "byte(s) per pixel",
            path=base,
        )
    return PFFName(
        start, dp.name, ints["bpp"], ints["module"], ints["seqno"], ints.get("dome")
    )


def format_filename(
    start: datetime | float,
    dp: str,
    module: int,
    seqno: int = 0,
    *,
    time_sep: str = ":",
) -> str:
    """The PFF file name the DAQ writes for these parts (``time_sep`` picks the
    spelling of the time: ``:``, ``_`` or ``-``)."""
    prod = data_product(dp)
    return (
        f"start_{_format_time(start, time_sep)}.dp_{prod.name}.bpp_{prod.bpp}"
        f".module_{int(module)}.seqno_{int(seqno)}.pff"
    )


@dataclass(frozen=True)
class RunName:
    """The parts of a run folder name,
    ``obs_<observatory>.start_<time>.runtype_<type>.pffd``."""

    observatory: str
    start: datetime
    run_type: str


def parse_run_name(name: str | os.PathLike) -> RunName:
    """Parse a run folder name; :class:`PFFNameError` when it breaks the scheme."""
    base = os.path.basename(os.path.normpath(os.fspath(name)))
    if not base.endswith(".pffd"):
        raise PFFNameError("a run folder name must end with .pffd", path=base)
    pairs = _split_pairs(base[:-5], "run folder", base)
    missing = [k for k in ("obs", "start", "runtype") if k not in pairs]
    if missing:
        raise PFFNameError(
            f"run folder name lacks {', '.join(missing)} (expected "
            "obs_<observatory>.start_<time>.runtype_<type>.pffd)",
            path=base,
        )
    try:
        start = parse_time(pairs["start"])
    except ValueError as exc:
        raise PFFNameError(str(exc), path=base) from None
    return RunName(pairs["obs"], start, pairs["runtype"])


def format_run_name(
    observatory: str, start: datetime | float, run_type: str, *, time_sep: str = ":"
) -> str:
    """The run folder name the DAQ writes."""
    for what, value in (("observatory", observatory), ("run_type", run_type)):
        if "." in value or not value:
            raise ValueError(f"{what} {value!r} must be non-empty and contain no '.'")
    start_text = _format_time(start, time_sep)
    return f"obs_{observatory}.start_{start_text}.runtype_{run_type}.pffd"
