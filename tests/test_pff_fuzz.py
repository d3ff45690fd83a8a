"""Property-based fuzzing of the PFF reader on real-format files.

Hypothesis draws a seed, a base file (a stretch of the real ph256 sample, or ph1024
frames written by phbook) and where to aim (headers, pixels or anywhere); each example
then applies many random corruptions (cut, flip, insert, overwrite), one at a time,
and reads every corrupted file twice (``strict=True`` and ``strict=False``). For every
corruption:

- the reader raises nothing but :class:`phbook.io.pff.PFFError` (strict) or nothing at
  all (lenient);
- no frame that ends before the first damaged byte is lost, and (lenient) no intact
  frame after the damage is lost either;
- every frame returned that does not touch the damaged bytes is byte for byte a frame
  of the original file (a frame the damage touches can only be checked as far as the
  format allows: a changed pixel or digit is undetectable by any reader);
- (lenient) the frames and the damaged stretches tile the file: every byte is in
  exactly one of them.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phbook.io import pff

EXAMPLES = 50
PER_EXAMPLE = 210  # corruptions per hypothesis example: 10,500 in all
STRICT_EVERY = 3  # a strict read of every third corrupted copy
KINDS = ("cut", "flip", "insert", "overwrite")


def _bases(real_ph256, tmp_path):
    raw = real_ph256.read_bytes()
    fs = 636
    rng = np.random.default_rng(1)
    prod = pff.DATA_PRODUCTS["ph1024"]
    n = 5
    images = rng.integers(-600, 3400, (n, *prod.shape)).astype(prod.pixel_dtype)
    h = pff.empty_headers(n, "ph1024")
    h["pkt_num"] = rng.integers(0, 2**32, (n, 4))
    h["pkt_tai"] = rng.integers(0, 1024, (n, 4))
    h["pkt_nsec"] = rng.integers(0, 10**9, (n, 4))
    h["tv_sec"] = rng.integers(1.7e9, 1.8e9, (n, 4))
    h["tv_usec"] = rng.integers(0, 10**6, (n, 4))
    quad = pff.encode_frames(images, h, "ph1024")
    qname = pff.format_filename(1754112696, "ph1024", 254)
    return {
        # 12 real frames from several places of the sample
        "ph256": (
            real_ph256.name,
            "ph256",
            [raw[i * fs : (i + 12) * fs] for i in (0, 30, 76)],
            fs,
        ),
        "ph1024": (qname, "ph1024", [quad.tobytes()], quad.shape[1]),
    }


def _frames_of(data: bytes, fs: int) -> dict[int, bytes]:
    return {o: data[o : o + fs] for o in range(0, len(data) - fs + 1, fs)}


def _corrupt(raw: bytes, rng, fs: int, aim: str):
    """One random corruption inside frames 1 .. n-2 of ``raw`` (its first and last
    frames stay intact, so corrupted copies can follow each other in one file):
    ``(bytes, kind, a, length)`` with ``a`` the first damaged byte of ``raw``."""
    kind = KINDS[int(rng.integers(0, 4))]
    n = len(raw)
    frame = int(rng.integers(1, n // fs - 1))
    header_len = raw.index(b"\n\n*") + 3
    if aim == "header":
        a = frame * fs + int(rng.integers(0, header_len))
    elif aim == "pixels":
        a = frame * fs + int(rng.integers(header_len, fs))
    else:
        a = frame * fs + int(rng.integers(0, fs))
    length = int(min(rng.geometric(0.05), 2 * fs, n - fs - a))
    b = bytearray(raw)
    if kind == "cut":
        del b[a : a + length]
    elif kind == "flip":
        length = 1
        b[a] ^= 1 << int(rng.integers(0, 8))
    elif kind == "insert":
        junk = rng.integers(0, 256, length, dtype=np.uint8)
        if rng.random() < 0.3:  # text-like junk: braces, digits, blanks and newlines
            junk = np.frombuffer(b'{ }"0123456789:,\n*', np.uint8)[junk % 18]
        b[a:a] = junk.tobytes()
    else:
        b[a : a + length] = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
    return bytes(b), kind, a, length


def _frame_end(data: bytes, o: int, image: int) -> int:
    return data.index(b"\n\n*", o) + 3 + image


def _check(raw, data, base, kind, a, length, fs, image, frames, stats):
    """The properties of one corruption of ``raw`` (now ``data``, starting at byte
    ``base`` of the file) against the frames read there; a failure message or None."""
    originals = {o: raw[o : o + fs] for o in range(0, len(raw), fs)}
    delta = {"cut": -length, "insert": length}.get(kind, 0)
    o_end = a if kind == "insert" else a + length  # damaged original bytes [a, o_end)
    c_lo, c_hi = a, a + (length if kind in ("insert", "overwrite") else 1)
    before = [s for s in originals if s + fs <= a]
    after = [s for s in originals if s >= o_end]
    offsets = [int(o) - base for o in frames.offsets]
    got = set(offsets)
    for s in before:
        if s not in got:
            return f"lost frame at {s} before the damage at {a}"
    for s in after:
        if s + delta not in got:
            return f"lost intact frame at {s} (now {s + delta}) after the damage"
    for o in offsets:
        if o + fs <= c_lo:
            src = o
        elif (kind == "cut" and o >= a) or (kind != "cut" and o >= c_hi):
            src = o - delta
        else:
            stats["frames touching damage"] += 1
            continue  # a changed pixel or digit is undetectable by any reader
        if originals.get(src) != data[o : o + fs]:
            return f"returned a frame at {o} that is not in the file"
    return None


def _tiles(data: bytes, frames, image: int) -> str | None:
    """Frames and damaged stretches cover the file, each byte once."""
    pieces = sorted(
        [(int(o), _frame_end(data, int(o), image)) for o in frames.offsets]
        + [(d.offset, d.offset + d.length) for d in frames.damage]
    )
    pos = 0
    for lo, hi in pieces:
        if lo != pos:
            return f"frames and damage do not tile the file at byte {pos} (next {lo})"
        pos = hi
    if pos != len(data):
        return f"frames and damage end at byte {pos}, the file at {len(data)}"
    return None


def test_fuzzed_real_format_files(tmp_path, real_ph256):
    """Many corrupted copies of real-format frames, one after another in one file:
    one lenient read checks every corruption (the reader resynchronises after each),
    and a strict read from the start of every copy checks the strict path."""
    bases = _bases(real_ph256, tmp_path)
    stats: Counter = Counter()
    failures: list[str] = []
    t0, cpu0 = time.perf_counter(), time.process_time()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        seed=st.integers(0, 2**32 - 1),
        base=st.sampled_from(["ph256", "ph256", "ph1024"]),
        aim=st.sampled_from(["header", "pixels", "anywhere"]),
    )
    def run(seed, base, aim):
        name, dp, raws, fs = bases[base]
        image = pff.DATA_PRODUCTS[dp].image_bytes
        rng = np.random.default_rng(seed)
        copies = []
        pos = 0
        for _ in range(PER_EXAMPLE):
            raw = raws[int(rng.integers(0, len(raws)))]
            data, kind, a, length = _corrupt(raw, rng, fs, aim)
            copies.append((pos, raw, data, kind, a, length))
            pos += len(data)
            stats[kind] += 1
        path = tmp_path / name
        path.write_bytes(b"".join(c[2] for c in copies))
        stats["corruptions"] += len(copies)
        try:
            lenient = pff.read_frames(path, strict=False, warn=False)
        except Exception as exc:  # noqa: BLE001 - counting foreign exceptions
            stats["foreign exceptions"] += 1
            failures.append(f"{base}: lenient read raised {exc!r}")
            return
        stats["reads"] += 1
        stats["damaged stretches"] += len(lenient.damage)
        data = path.read_bytes()
        msg = _tiles(data, lenient, image)
        if msg:
            failures.append(f"{base} ({aim}): {msg}")
        starts = np.array([c[0] for c in copies] + [len(data)])
        which = np.searchsorted(starts, lenient.offsets, side="right") - 1
        for i, (start, raw, copy, kind, a, length) in enumerate(copies):
            here = lenient[np.flatnonzero(which == i)]
            where = f"{base} {kind} at {a} ({length} bytes, {aim})"
            msg = _check(raw, copy, start, kind, a, length, fs, image, here, stats)
            if msg:
                failures.append(f"{where}: {msg}")
            if i % STRICT_EVERY:
                continue
            # strict, from the start of this copy to its end
            n = len(raw) // fs
            try:
                strict = pff.read_frames(path, offset=start, max_frames=n, warn=False)
            except pff.PFFError as exc:
                strict = exc
            except Exception as exc:  # noqa: BLE001
                stats["foreign exceptions"] += 1
                failures.append(f"{where}: strict read raised {exc!r}")
                continue
            stats["strict reads"] += 1
            if isinstance(strict, pff.PFFError):
                stats["strict errors"] += 1
                if strict.offset is None or strict.offset < start + (a // fs) * fs:
                    failures.append(f"{where}: strict error at {strict.offset}")
                got = strict.frames
            else:
                got = strict
            got = got[np.flatnonzero(got.offsets < start + len(copy))]
            before = {start + s for s in range(0, a - fs + 1, fs) if s + fs <= a}
            if not before <= set(got.offsets.tolist()):
                failures.append(f"{where}: strict lost frames before the damage")

    run()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    print(f"\nfuzz: {dict(stats)} in {seconds:.1f} s wall, {cpu:.1f} s CPU")
    kinds = Counter(f.split(": ", 1)[1][:40] for f in failures)
    assert not failures, f"{len(failures)} failures {kinds}, e.g.:\n" + "\n".join(
        failures[:10]
    )
    assert stats["foreign exceptions"] == 0
    assert stats["corruptions"] >= 10_000
    assert all(stats[k] > 1000 for k in KINDS)
