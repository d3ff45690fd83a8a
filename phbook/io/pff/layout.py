"""Header layouts: the fixed-width text of a header as a template, and validation."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .format import (
    _QUABO_FIELDS,
    DATA_PRODUCTS,
    FIELD_RANGES,
    DataProduct,
    _canonical_text,
)

# ----------------------------------------------------------------------------------
# Header layouts: the fixed-width text of one header, as a template


_NUM_RE = re.compile(rb'(?<=": )( *-?\d+)(?=[,}])')


@dataclass(frozen=True, eq=False)
class _Layout:
    """Byte template of a fixed-width header (plus ``\\n\\n*``) and its numbers.

    ``spans`` are (start, width, field, quabo) of every number; ``quabo`` is None for a
    one-quabo header. The fast path accepts a frame when all bytes outside the spans
    equal the template and every span is blank-padded decimal digits.
    """

    dp: DataProduct
    template: bytes  # header + b"\n\n*"
    spans: tuple[tuple[int, int, str, int | None], ...]

    def __post_init__(self):
        n = len(self.template)
        fixed = np.ones(n, dtype=bool)
        for s, w, _, _ in self.spans:
            fixed[s : s + w] = False
        tmpl = np.frombuffer(self.template, dtype=np.uint8)
        cols = np.concatenate([np.arange(s, s + w) for s, w, _, _ in self.spans])
        place = np.concatenate(
            [10.0 ** np.arange(w - 1, -1, -1) for _, w, _, _ in self.spans]
        )
        P = np.zeros((len(cols), len(self.spans)))
        j = 0
        within = np.ones(max(len(cols) - 1, 0), dtype=bool)
        last = []
        for f, (_, w, _, _) in enumerate(self.spans):
            P[j : j + w, f] = place[j : j + w]
            if j > 0:
                within[j - 1] = False
            j += w
            last.append(j - 1)
        # Compare fixed bytes word by word where the frame size allows it.
        fs = self.frame_size
        wsize = 4 if fs % 4 == 0 else (2 if fs % 2 == 0 else 1)
        nw = -(-n // wsize)
        pad = nw * wsize - n
        mask = np.concatenate([fixed, np.zeros(pad, bool)]).astype(np.uint8) * 255
        expect = np.concatenate([tmpl, np.zeros(pad, np.uint8)]) & mask
        wdt = np.dtype(f"<u{wsize}")
        wmask, wexpect = mask.view(wdt), expect.view(wdt)
        wsel = np.flatnonzero(wmask)
        object.__setattr__(self, "_wsel", wsel)
        object.__setattr__(self, "_wmask", wmask[wsel, None])
        object.__setattr__(self, "_wexpect", wexpect[wsel, None])
        object.__setattr__(self, "_wdt", wdt)
        object.__setattr__(self, "_nw", nw)
        object.__setattr__(self, "_cols", cols)
        object.__setattr__(self, "_place", P)
        pairs = np.nonzero(within)[0]
        starts = np.cumsum([0] + [w for _, w, _, _ in self.spans])[:-1]
        object.__setattr__(self, "_pairs", pairs)
        object.__setattr__(self, "_pair_at_start", np.isin(pairs, starts))
        object.__setattr__(self, "_pair_prev", np.maximum(pairs - 1, 0))
        object.__setattr__(self, "_last", np.asarray(last))
        object.__setattr__(self, "_colplace", place)
        object.__setattr__(
            self,
            "_colspan",
            np.repeat(np.arange(len(self.spans)), [w for _, w, _, _ in self.spans]),
        )
        object.__setattr__(self, "_tmpl", tmpl)
        lo, hi = _span_ranges(self.spans)
        object.__setattr__(self, "_lo", lo)
        object.__setattr__(self, "_hi", hi)

    @property
    def header_len(self) -> int:
        return len(self.template) - 3

    @property
    def frame_size(self) -> int:
        return len(self.template) + self.dp.image_bytes

    # --- reading -----------------------------------------------------------------
    def check(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(good, values) for a (k, frame_size) uint8 block of frames."""
        # fixed bytes, word by word; laid out (word, frame) so that the reduction
        # runs along the frames, which numpy vectorises
        words = block.view(self._wdt)[:, : self._nw].T[self._wsel]
        words ^= self._wexpect
        words &= self._wmask
        bad = np.bitwise_or.reduce(words, axis=0) != 0
        c = block[:, self._cols]
        d = (c | 16) - 48  # blank (32) -> 0, digits -> 0..9; only 33..41 also <= 9
        isdig = c >= 48
        bad |= ((d > 9) | (~isdig & (c != 32))).any(axis=1)
        if len(self._pairs):
            p = self._pairs
            nxt = isdig[:, p + 1]
            # a blank after a digit inside one number
            bad |= (isdig[:, p] & ~nxt).any(axis=1)
            # a leading zero (JSON forbids "007")
            first = self._pair_at_start | ~isdig[:, self._pair_prev]
            bad |= ((c[:, p] == 48) & nxt & first).any(axis=1)
        bad |= ~isdig[:, self._last].all(axis=1)  # every number has a last digit
        values = (d.astype(np.float64) @ self._place).astype(np.int64)
        # values outside their field's range (quabo 7, ...) go to the general path,
        # which names the field, the file and the offset
        bad |= ((values < self._lo) | (values > self._hi)).any(axis=1)
        return ~bad, values

    def store(self, values: np.ndarray, out: np.ndarray) -> None:
        """Put span values (k, n_spans) into a structured header array ``out`` (k,)."""
        for j, (_, _, name, q) in enumerate(self.spans):
            if q is None:
                out[name] = values[:, j]
            else:
                out[name][:, q] = values[:, j]

    # --- writing -----------------------------------------------------------------
    def encode(self, headers: np.ndarray) -> np.ndarray:
        """(n, len(template)) uint8 header bytes for a structured header array."""
        n = len(headers)
        vals = np.empty((n, len(self.spans)), dtype=np.int64)
        for j, (_, w, name, q) in enumerate(self.spans):
            v = headers[name] if q is None else headers[name][:, q]
            v = np.asarray(v, dtype=np.int64)
            label = name if q is None else f"quabo_{q}.{name}"
            lo, hi = int(self._lo[j]), int(min(self._hi[j], 10**w - 1))
            bad = (v < lo) | (v > hi)
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(
                    f"header field {label} of frame {i} is {int(v[i])}, outside "
                    f"{lo} to {hi} (its range and {w}-character field in the "
                    f"{self.dp.name} header)"
                )
            vals[:, j] = v
        cols = vals[:, self._colspan]
        place = self._colplace.astype(np.int64)
        digits = (cols // place) % 10 + 48
        blank = (cols < place) & (place > 1)
        chars = np.where(blank, 32, digits).astype(np.uint8)
        out = np.empty((n, len(self.template)), dtype=np.uint8)
        out[:] = self._tmpl
        out[:, self._cols] = chars
        return out


def _flatten(obj: Any, prefix: tuple = ()) -> list[tuple[tuple, Any]]:
    if isinstance(obj, dict):
        out = []
        for k, v in obj.items():
            out += _flatten(v, prefix + (k,))
        return out
    return [(prefix, obj)]


def _header_record(parsed: Any, prod: DataProduct) -> tuple[np.ndarray, list]:
    """One structured header record from parsed JSON; also (field, quabo) per leaf.

    Raises ValueError with the reason when the JSON is not this product's header.
    """
    if not isinstance(parsed, dict):
        raise ValueError("the header is not a JSON object")
    rec = np.zeros(1, dtype=prod.header_dtype)
    leaves: list[tuple[str, int | None]] = []
    if prod.quabos == 1:
        if any(k.startswith("quabo_") and k != "quabo_num" for k in parsed):
            raise ValueError(
                f"four-quabo header (keys {', '.join(parsed)}) in a {prod.name} file, "
                f"whose frames hold one quabo: frames are not {prod.name} frames"
            )
        need = ("quabo_num",) + _QUABO_FIELDS
        missing = [k for k in need if k not in parsed]
        if missing:
            raise ValueError(f"the header lacks {', '.join(missing)}")
        for path, value in _flatten(parsed):
            name = path[0]
            if len(path) == 1 and name in need:
                _set_field(rec, name, None, value)
                leaves.append((name, None))
            else:
                leaves.append((".".join(path), -1))
    else:
        if "quabo_num" in parsed:
            raise ValueError(
                f"one-quabo (ph256) header in a {prod.name} file, whose frames hold "
                f"four quabos: frames are not {prod.name} frames"
            )
        subs = [f"quabo_{i}" for i in range(4)]
        if not any(s in parsed for s in subs):
            raise ValueError(f"the header has none of {', '.join(subs)}")
        for path, value in _flatten(parsed):
            if len(path) == 2 and path[0] in subs and path[1] in _QUABO_FIELDS:
                q = int(path[0][-1])
                _set_field(rec, path[1], q, value)
                leaves.append((path[1], q))
            else:
                leaves.append((".".join(path), -1))
    return rec, leaves


def _span_ranges(spans) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest value of every span's field (``FIELD_RANGES``, else any)."""
    lo = np.array([FIELD_RANGES.get(n, (-(2**62), 2**62))[0] for _, _, n, _ in spans])
    hi = np.array([FIELD_RANGES.get(n, (-(2**62), 2**62))[1] for _, _, n, _ in spans])
    return lo.astype(np.int64), hi.astype(np.int64)


_LIMITS: dict[tuple, tuple[int, int]] = {}


def _limits(dtype: np.dtype, name: str) -> tuple[int, int]:
    """Lowest and highest value a header field may hold: its range and its type's."""
    key = (dtype, name)
    if key not in _LIMITS:
        info = np.iinfo(dtype[name].base)
        lo, hi = FIELD_RANGES.get(name, (info.min, info.max))
        _LIMITS[key] = (max(lo, int(info.min)), min(hi, int(info.max)))
    return _LIMITS[key]


def _set_field(rec: np.ndarray, name: str, q: int | None, value: Any) -> None:
    label = name if q is None else f"quabo_{q}.{name}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"header field {label} is {value!r}, not an integer")
    lo, hi = _limits(rec.dtype, name)
    if not lo <= value <= hi:
        raise ValueError(f"header field {label} = {value} is out of range ({lo} to {hi})")
    if q is None:
        rec[name] = value
    else:
        rec[name][0, q] = value


def _derive_layout(raw: bytes, leaves: list, prod: DataProduct) -> _Layout | None:
    """The template of a header whose numbers are fixed-width, or None."""
    spans = []
    matches = list(_NUM_RE.finditer(raw))
    if len(matches) != len(leaves):
        return None
    for m, (name, q) in zip(matches, leaves, strict=True):
        if q == -1 or b"-" in m.group(1):
            return None  # extra keys or negative numbers: general path only
        spans.append((m.start(1), m.end(1) - m.start(1), name, q))
    if len(spans) != (6 if prod.quabos == 1 else 20):
        return None
    # the layout depends on the bytes outside the numbers only: build it once per file
    # shape (the reader meets the same header shape again after every damaged stretch)
    fixed = bytearray(raw)
    for start, width, _, _ in spans:
        fixed[start : start + width] = b"0" * width
    key = (prod.name, bytes(fixed), tuple(spans))
    layout = _DERIVED.get(key)
    if layout is None:
        if len(_DERIVED) > 256:
            _DERIVED.clear()
        layout = _DERIVED[key] = _Layout(prod, raw + b"\n\n*", tuple(spans))
    return layout


_DERIVED: dict[tuple, _Layout] = {}


_CANONICAL: dict[tuple[str, int], _Layout] = {}


def _canonical_layout(dp: str, wide: int = 0) -> _Layout:
    """The DAQ's header template of product ``dp``; bit ``q`` of ``wide`` gives quabo
    ``q`` a 10-character ``pkt_nsec`` (a value of 1e9 or more)."""
    key = (dp, wide)
    if key not in _CANONICAL:
        prod = DATA_PRODUCTS[dp]
        raw = _canonical_text(prod, wide=wide)
        _, leaves = _header_record(json.loads(raw), prod)
        layout = _derive_layout(raw, leaves, prod)
        assert layout is not None
        _CANONICAL[key] = layout
    return _CANONICAL[key]
