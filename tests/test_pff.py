"""The PANOSETI file format: the real sample, round trips, names, times and damage."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from phbook.io import pff

FS = 636  # bytes of one ph256 frame


def _name(dp="ph256", module=254, seqno=0, sep=":"):
    return pff.format_filename(1754112696, dp, module, seqno, time_sep=sep)


def _random_frames(dp: str, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    prod = pff.DATA_PRODUCTS[dp]
    info = np.iinfo(prod.pixel_dtype)
    images = rng.integers(info.min, info.max, (n, *prod.shape), endpoint=True)
    images = images.astype(prod.pixel_dtype)
    h = pff.empty_headers(n, dp)
    q = () if prod.quabos == 1 else (4,)
    h["pkt_num"] = rng.integers(0, 2**32, (n, *q))
    h["pkt_tai"] = rng.integers(0, 1024, (n, *q))
    h["pkt_nsec"] = rng.integers(0, 10**9, (n, *q))
    h["tv_sec"] = rng.integers(0, 10**10, (n, *q))
    h["tv_usec"] = rng.integers(0, 10**6, (n, *q))
    if prod.quabos == 1:
        h["quabo_num"] = rng.integers(0, 4, n)
    return images, h


def _json_headers(raw: bytes, n: int):
    """Reference parse of every header with the json module (ph256 file)."""
    return [json.loads(raw[i * FS : i * FS + 121]) for i in range(n)]


# ---------------------------------------------------------------------------------
# The real sample


def test_real_file_parses_exactly(real_ph256):
    with pytest.warns(pff.ClockWarning, match="88 of 88"):
        frames = pff.read_frames(real_ph256)
    assert len(frames) == 88
    h = frames.headers[0]
    assert (h["quabo_num"], h["pkt_num"], h["pkt_tai"]) == (3, 5124, 229)
    assert (h["pkt_nsec"], h["tv_sec"], h["tv_usec"]) == (999999999, 1754112728, 985339)
    # every field of every header equals the json module's reading of the text
    raw = real_ph256.read_bytes()
    for i, ref in enumerate(_json_headers(raw, 88)):
        assert {k: int(frames.headers[i][k]) for k in ref} == ref
    np.testing.assert_array_equal(frames.offsets, FS * np.arange(88))
    # pulse heights are signed: the README's range, and the uint16 wrap is avoided
    assert frames.images.dtype == np.int16
    assert (frames.images.min(), frames.images.max()) == (-575, 3343)
    wrapped = np.frombuffer(raw[124:636], dtype="<u2")
    assert wrapped.max() > 60000
    np.testing.assert_array_equal(frames.images[0].ravel(), wrapped.astype(np.int16))
    # the 4 speckled frames of the README have medians 646-1228
    med = np.median(frames.images.reshape(88, -1), axis=1)
    assert np.sum(med > 500) == 4
    assert 640 < med[med > 500].min() and med.max() < 1230


def test_real_file_times_follow_the_white_rabbit_rule(real_ph256):
    frames = pff.read_frames(real_ph256, warn=False)
    h = frames.headers
    d = (h["tv_sec"].astype(int) - h["pkt_tai"] + 37) % 1024
    # the clocks of this sample are ~537 s apart: every frame is flagged, and its time
    # is the host clock
    assert set(d) <= {536, 537}
    assert np.all(frames.time_flags & pff.CLOCKS_DISAGREE)
    np.testing.assert_allclose(frames.time, h["tv_sec"] + h["tv_usec"] * 1e-6)
    placeholder = h["pkt_nsec"] == 999999999
    assert placeholder.sum() == 49
    np.testing.assert_array_equal(frames.time_flags & pff.NSEC_PLACEHOLDER > 0, placeholder)
    assert np.all(np.diff(frames.time) > -1)  # in time order to the host's precision


def test_real_file_round_trips_byte_for_byte(real_ph256, tmp_path):
    frames = pff.read_frames(real_ph256, warn=False)
    out = tmp_path / real_ph256.name
    nbytes = pff.write_frames(out, frames.images, frames.headers)
    assert nbytes == 88 * FS
    assert out.read_bytes() == real_ph256.read_bytes()


def test_real_file_scan_and_name(real_ph256):
    info = pff.scan_file(real_ph256)
    assert (info.frame_size, info.n_frames, info.fixed, info.tail_bytes) == (
        FS,
        88,
        True,
        0,
    )
    name = pff.parse_filename(real_ph256)
    assert (name.dp, name.bpp, name.module, name.seqno) == ("ph256", 2, 254, 0)
    assert name.start.isoformat() == "2025-08-02T05:31:36+00:00"


# ---------------------------------------------------------------------------------
# Writing and reading every product


@pytest.mark.parametrize(
    "dp,frame_size", [("ph256", 636), ("ph1024", 2540), ("img16", 2540), ("img8", 1516)]
)
def test_round_trip_every_product(tmp_path, dp, frame_size, monkeypatch):
    images, headers = _random_frames(dp, 300, seed=len(dp))
    path = tmp_path / _name(dp)
    pff.write_frames(path, images, headers)
    assert path.stat().st_size == 300 * frame_size
    assert pff.DATA_PRODUCTS[dp].frame_size == frame_size
    json_parses = 0
    parse_one = pff._Reader.parse_one

    def counting(self, offset, derive=True):
        nonlocal json_parses
        json_parses += self._memo is None or self._memo[0] != offset
        return parse_one(self, offset, derive)

    monkeypatch.setattr(pff._Reader, "parse_one", counting)
    frames = pff.read_frames(path, warn=False)
    assert json_parses == 2  # the first frame and the header after it; 298 fast
    np.testing.assert_array_equal(frames.images, images)
    assert frames.headers.tobytes() == headers.tobytes()
    assert frames.images.dtype == pff.DATA_PRODUCTS[dp].pixel_dtype
    # the file is the same bytes when written again
    again = tmp_path / "again.pff"
    pff.write_frames(again, frames.images, frames.headers, dp)
    assert again.read_bytes() == path.read_bytes()
    # the header text is valid JSON of the right form
    raw = path.read_bytes()
    text = raw[: raw.index(b"\n\n")]
    parsed = json.loads(text)
    if dp == "ph256":
        assert len(text) == 121 and parsed["quabo_num"] == headers["quabo_num"][0]
    else:
        assert len(text) == 489 and list(parsed) == [f"quabo_{i}" for i in range(4)]
        assert parsed["quabo_2"]["tv_sec"] == headers["tv_sec"][0, 2]


def test_signed_pulse_heights_and_uint16_input(tmp_path):
    images = np.full((2, 16, 16), -3, dtype=np.int16)
    headers = pff.empty_headers(2, "ph256")
    path = tmp_path / _name()
    pff.write_frames(path, images.view(np.uint16), headers)  # wrapped input
    raw = np.frombuffer(path.read_bytes()[124:636], dtype="<u2")
    assert raw[0] == 65533
    assert pff.read_frames(path, warn=False).images.min() == -3
    with pytest.raises(ValueError, match="do not fit"):
        pff.encode_frames(np.full((1, 16, 16), 40000), headers[:1], "ph256")
    with pytest.raises(ValueError, match="shape"):
        pff.encode_frames(np.zeros((1, 32, 32)), headers[:1], "ph256")


def test_header_value_too_wide_is_refused():
    h = pff.empty_headers(1, "ph256")
    h["quabo_num"] = 12  # one character in the DAQ's format
    with pytest.raises(ValueError, match="quabo_num of frame 0 is 12"):
        pff.encode_frames(np.zeros((1, 16, 16)), h, "ph256")


def test_general_path_reads_headers_of_other_widths(tmp_path, real_ph256):
    raw = bytearray(real_ph256.read_bytes())
    # frame 10 rewritten with compact JSON (different width): valid, but not the
    # template, so the general path reads it and the fast path resumes after it
    ref = _json_headers(bytes(raw), 88)
    compact = json.dumps(ref[10], separators=(",", ":")).encode()
    raw[10 * FS : 10 * FS + 121] = b""
    raw[10 * FS : 10 * FS] = compact
    path = tmp_path / real_ph256.name
    path.write_bytes(bytes(raw))
    frames = pff.read_frames(path, warn=False)
    good = pff.read_frames(real_ph256, warn=False)
    assert len(frames) == 88
    assert frames.headers.tobytes() == good.headers.tobytes()
    np.testing.assert_array_equal(frames.images, good.images)
    assert frames.offsets[11] == frames.offsets[10] + len(compact) + 3 + 512


def test_iter_chunks_streams_in_bounded_chunks(tmp_path):
    images, headers = _random_frames("ph256", 1000)
    path = tmp_path / _name()
    pff.write_frames(path, images, headers)
    chunks = list(pff.iter_chunks(path, chunk_frames=128))
    assert [len(c) for c in chunks] == [128] * 7 + [104]
    joined = pff.Frames.concat(chunks)
    np.testing.assert_array_equal(joined.images, images)
    np.testing.assert_array_equal(joined.offsets, FS * np.arange(1000))
    part = pff.read_frames(path, offset=100 * FS, max_frames=50, warn=False)
    np.testing.assert_array_equal(part.images, images[100:150])


def test_read_frames_at_matches_a_full_read(tmp_path):
    images, headers = _random_frames("ph256", 5000, seed=3)
    path = tmp_path / _name()
    pff.write_frames(path, images, headers)
    idx = np.random.default_rng(0).choice(5000, 300, replace=False)
    got = pff.read_frames_at(path, idx, window_frames=256)
    order = np.sort(idx)
    np.testing.assert_array_equal(got.images, images[order])
    assert got.headers.tobytes() == headers[order].tobytes()
    np.testing.assert_array_equal(got.offsets, order * FS)
    with pytest.raises(IndexError, match="beyond"):
        pff.read_frames_at(path, [5000])


# ---------------------------------------------------------------------------------
# Names


def test_file_names_in_three_time_spellings():
    names = [
        "start_2024-07-25T04:34:46Z.dp_ph256.bpp_2.module_254.seqno_3.pff",
        "start_2024-07-25T04_34_46Z.dp_ph256.bpp_2.module_254.seqno_3.pff",
        "start_2024-07-25T04-34-46Z.dp_ph256.bpp_2.module_254.seqno_3.pff",
    ]
    parsed = [pff.parse_filename(n) for n in names]
    assert parsed[0] == parsed[1] == parsed[2]
    assert parsed[0].start.timestamp() == 1721882086
    for sep, name in zip(":_-", names, strict=True):
        assert pff.format_filename(1721882086, "ph256", 254, 3, time_sep=sep) == name
    older = pff.parse_filename(
        "start_2022-05-01T04:00:00Z.dp_img16.bpp_2.dome_0.module_1.seqno_0.pff"
    )
    assert (older.dp, older.dome, older.module) == ("img16", 0, 1)


@pytest.mark.parametrize(
    "name,match",
    [
        ("start_2024-07-25T04:34:46Z.dp_ph256.bpp_2.module_254.pff", "lacks seqno"),
        ("start_2024-07-25T04:34:46Z.dp_ph99.bpp_2.module_1.seqno_0.pff", "unknown"),
        ("start_2024-07-25T04:34:46Z.dp_img8.bpp_2.module_1.seqno_0.pff", "bpp_2"),
        ("start_2024-13-25T04:34:46Z.dp_ph256.bpp_2.module_1.seqno_0.pff", "valid"),
        ("start_yesterday.dp_ph256.bpp_2.module_1.seqno_0.pff", "start time"),
        ("start_2024-07-25T04:34:46Z.dp_ph256.bpp_2.module_x.seqno_0.pff", "module_x"),
        ("start_2024-07-25T04:34:46Z.dp_ph256.bpp_2.module_1.seqno_0.bin", ".pff"),
        ("hk.pff", "key_value"),
    ],
)
def test_bad_file_names_are_named_in_the_error(name, match):
    with pytest.raises(pff.PFFNameError, match=match) as err:
        pff.parse_filename("/data/run/" + name)
    assert name in str(err.value)


def test_one_file_name_rule(tmp_path):
    """A name outside the scheme is read when --dp is given or the first frame tells
    the product; otherwise the error names the file and says what to do."""
    images, headers = _random_frames("ph256", 3)
    path = tmp_path / "frames.pff"
    pff.write_frames(path, images, headers, "ph256")
    assert pff.identify(path) == (None, pff.DATA_PRODUCTS["ph256"])
    assert len(pff.read_frames(path, warn=False)) == 3
    assert len(pff.read_frames(path, dp="ph256", warn=False)) == 3
    images, headers = _random_frames("ph1024", 2)
    quad = tmp_path / "quad.pff"
    pff.write_frames(quad, images, headers, "ph1024")  # ph1024 or img16?
    with pytest.raises(pff.PFFNameError, match=r"quad.pff.*--dp"):
        pff.read_frames(quad)
    assert len(pff.read_frames(quad, dp="ph1024", warn=False)) == 2
    images, headers = _random_frames("img8", 2)
    pff.write_frames(tmp_path / "eight.pff", images, headers, "img8")
    assert pff.identify(tmp_path / "eight.pff")[1].name == "img8"
    with pytest.raises(pff.PFFNameError, match="end with .pff"):
        pff.identify(tmp_path / "frames.dat")
    name = pff.identify(tmp_path / _name())[0]
    assert (name.dp, name.module) == ("ph256", 254)


def test_quabo_number_out_of_range_is_damage(sample):
    path, raw, good = sample
    assert raw[12 * FS + 15 : 12 * FS + 16] in (b"0", b"1", b"2", b"3")
    raw[12 * FS + 15] = ord("7")  # "quabo_num": 7
    path.write_bytes(bytes(raw))
    with pytest.raises(pff.PFFHeaderError, match=r"quabo_num = 7 is out of range") as e:
        pff.read_frames(path, warn=False)
    assert e.value.offset == 12 * FS and str(path) in str(e.value)
    frames = pff.read_frames(path, strict=False, warn=False)
    _same(frames, good, np.r_[0:12, 13:88])
    assert sorted(set(frames.quabo.tolist())) == [0, 1, 2, 3]
    h = good.headers[:1].copy()
    h["quabo_num"] = 7
    with pytest.raises(ValueError, match="quabo_num of frame 0 is 7, outside 0 to 3"):
        pff.encode_frames(good.images[:1], h, "ph256")


@pytest.mark.parametrize("which", ["some", "all"])
def test_ten_digit_pkt_nsec_round_trips_and_is_flagged(tmp_path, which):
    images, headers = _random_frames("ph256", 50)
    wide = np.arange(50) % 7 == 3 if which == "some" else np.ones(50, bool)
    headers["pkt_nsec"][wide] = 1_000_000_000 + np.arange(int(wide.sum()))
    headers["pkt_nsec"][-1] = 4_294_967_295 if which == "all" else 12
    path = tmp_path / _name()
    nbytes = pff.write_frames(path, images, headers)
    assert nbytes == path.stat().st_size == 50 * FS + int(wide.sum())
    raw = path.read_bytes()
    assert b'"pkt_nsec": 1000000000,' in raw  # printf("%9u") of 1e9: 10 digits
    frames = pff.read_frames(path, warn=False)
    assert frames.headers.tobytes() == headers.tobytes()
    np.testing.assert_array_equal(frames.images, images)
    flagged = (frames.time_flags & pff.NSEC_INVALID) != 0
    np.testing.assert_array_equal(flagged, headers["pkt_nsec"] >= 10**9)
    host = headers["tv_sec"] + headers["tv_usec"] * 1e-6
    np.testing.assert_allclose(frames.time[flagged], host[flagged])
    pff.write_frames(tmp_path / "again.pff", frames.images, frames.headers, "ph256")
    assert (tmp_path / "again.pff").read_bytes() == raw  # byte for byte


def test_ten_digit_nsec_field_of_newer_tools(tmp_path, real_ph256):
    """Headers formatted with a %10d pkt_nsec field read on the fast path."""
    raw = real_ph256.read_bytes()
    frames = []
    for i in range(88):
        head, img = raw[i * FS : i * FS + 121], raw[i * FS + 121 : (i + 1) * FS]
        frames.append(head.replace(b'"pkt_nsec": ', b'"pkt_nsec":  ') + img)
    path = tmp_path / real_ph256.name
    path.write_bytes(b"".join(frames))
    got = pff.read_frames(path, warn=False)
    good = pff.read_frames(real_ph256, warn=False)
    assert got.headers.tobytes() == good.headers.tobytes()
    np.testing.assert_array_equal(got.images, good.images)
    assert np.all(np.diff(got.offsets) == FS + 1)


def test_run_folder_names():
    run = pff.parse_run_name(
        "/x/obs_Lick.start_2024-07-25T04:34:06Z.runtype_sci-data.pffd/"
    )
    assert (run.observatory, run.run_type) == ("Lick", "sci-data")
    assert pff.format_run_name("Lick", run.start, "sci-data") == (
        "obs_Lick.start_2024-07-25T04:34:06Z.runtype_sci-data.pffd"
    )
    with pytest.raises(pff.PFFNameError, match="lacks runtype"):
        pff.parse_run_name("obs_Lick.start_2024-07-25T04:34:06Z.pffd")


# ---------------------------------------------------------------------------------
# Times


def test_white_rabbit_rule_cases():
    h = pff.empty_headers(6, "ph256")
    t = 1754112728
    h["tv_sec"] = t
    h["tv_usec"] = 500_000
    h["pkt_nsec"] = 250_000_000
    tai = (t + 37) % 1024
    h["pkt_tai"] = [tai, tai - 1, (tai + 1) % 1024, tai - 5, tai, tai]
    h["pkt_nsec"][4] = pff.NSEC_PLACEHOLDER_VALUE
    h["tv_sec"][5] = 0  # clocks wildly apart
    time, flags = pff.frame_times(h)
    np.testing.assert_allclose(time[:3], [t + 0.25, t - 1 + 0.25, t + 1 + 0.25])
    assert list(flags) == [0, 0, 0, 1, 2, 1]
    assert time[3] == t + 0.5 and time[4] == t + 0.5  # host clock where flagged
    wr = pff.wr_to_unix(h["pkt_tai"], h["pkt_nsec"], h["tv_sec"])
    assert np.isnan(wr[3]) and wr[1] == t - 1 + 0.25


def test_four_quabo_times_use_the_first_quabo_with_a_packet():
    h = pff.empty_headers(2, "img16")
    t = 1754112728
    h["tv_sec"][0, 2:] = t
    h["pkt_tai"][0, 2:] = (t + 37) % 1024
    h["pkt_nsec"][0, 2] = 10
    time, flags = pff.frame_times(h)
    assert time[0] == t + 1e-8 and flags[0] == 0
    assert np.isnan(time[1]) and flags[1] & pff.NO_PACKET


# ---------------------------------------------------------------------------------
# Damaged files


@pytest.fixture
def sample(tmp_path, real_ph256):
    """A writable copy of the real sample and its frames."""
    good = pff.read_frames(real_ph256, warn=False)
    return tmp_path / real_ph256.name, bytearray(real_ph256.read_bytes()), good


def _same(frames, good, idx):
    np.testing.assert_array_equal(frames.images, good.images[idx])
    assert frames.headers.tobytes() == good.headers[idx].tobytes()


@pytest.mark.parametrize("cut", [50 * FS + 60, 50 * FS + 300, 50 * FS + 1])
def test_truncated_file(sample, cut):
    path, raw, good = sample
    path.write_bytes(bytes(raw[:cut]))
    with pytest.raises(pff.PFFTruncatedError) as err:
        pff.read_frames(path, warn=False)
    assert err.value.offset == 50 * FS
    assert f"{path} at byte {50 * FS}" in str(err.value)
    _same(err.value.frames, good, slice(0, 50))
    frames = pff.read_frames(path, strict=False, warn=False)
    _same(frames, good, slice(0, 50))
    assert [(d.kind, d.offset, d.skipped_bytes) for d in frames.damage] == [
        ("truncated", 50 * FS, cut - 50 * FS)
    ]
    info = pff.scan_file(path)
    assert (info.n_frames, info.tail_bytes) == (50, cut - 50 * FS)


@pytest.mark.parametrize(
    "patch,match",
    [
        (b'"pkt_num":       5xyz', "not valid JSON"),
        (b'"pkt_num":      !5124', "not valid JSON"),  # '!' | 16 is '1'
        (b'"pkt_num":       51 4', "not valid JSON"),
        (b'"pkt_num":  -99999999', "out of range"),
        (b'"pkt_nun":       5124', "lacks pkt_num"),
    ],
)
def test_corrupt_header(sample, patch, match):
    path, raw, good = sample
    start = 30 * FS + raw[30 * FS :].index(b'"pkt_num"')
    raw[start : start + len(patch)] = patch
    path.write_bytes(bytes(raw))
    with pytest.raises(pff.PFFHeaderError, match=match) as err:
        pff.read_frames(path, warn=False)
    assert err.value.offset == 30 * FS
    assert str(path) in str(err.value)
    _same(err.value.frames, good, slice(0, 30))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frames = pff.read_frames(path, strict=False)
    damage_warnings = [w for w in caught if "skipped 1 damaged" in str(w.message)]
    assert len(damage_warnings) == 1
    _same(frames, good, np.r_[0:30, 31:88])
    assert frames.damage[0].kind == "header" and frames.damage[0].skipped_bytes == FS


def test_frame_of_the_wrong_size(sample):
    path, raw, good = sample
    raw[40 * FS + 200 : 40 * FS + 200] = b"\x01" * 10  # frame 40 is 10 bytes longer
    path.write_bytes(bytes(raw))
    # indistinguishable from 10 bytes inserted after frame 40, whose header and image
    # block are whole: frame 40 is kept, the 10 bytes after it are the damage
    with pytest.raises(pff.PFFFrameSizeError, match="646 bytes") as err:
        pff.read_frames(path, warn=False)
    assert err.value.offset == 41 * FS
    assert "636" in str(err.value) and "10 unexpected byte" in str(err.value)
    assert len(err.value.frames) == 41
    _same(err.value.frames[:40], good, slice(0, 40))
    frames = pff.read_frames(path, strict=False, warn=False)
    assert len(frames) == 88
    _same(frames[np.r_[0:40, 41:88]], good, np.r_[0:40, 41:88])
    assert frames.headers[40] == good.headers[40]  # its pixels are shifted
    d = frames.damage[0]
    assert (d.kind, d.offset, d.length) == ("frame_size", 41 * FS, 10)
    np.testing.assert_array_equal(frames.offsets[41:], FS * np.arange(41, 88) + 10)


def test_garbage_between_frames_keeps_both_neighbours(sample):
    path, raw, good = sample
    raw[30 * FS : 30 * FS] = b"garbage\x00\xff{" * 7
    path.write_bytes(bytes(raw))
    frames = pff.read_frames(path, strict=False, warn=False)
    _same(frames, good, slice(0, 88))
    assert [(d.offset, d.length) for d in frames.damage] == [(30 * FS, 70)]
    assert pff.list_damage(path) == frames.damage


def test_frame_shorter_than_its_product(sample):
    path, raw, good = sample
    del raw[20 * FS + 300 : 20 * FS + 304]  # frame 20 lost 4 pixel bytes
    path.write_bytes(bytes(raw))
    with pytest.raises(pff.PFFFrameSizeError, match="632 bytes") as err:
        pff.read_frames(path, warn=False)
    assert err.value.offset == 20 * FS
    frames = pff.read_frames(path, strict=False, warn=False)
    _same(frames, good, np.r_[0:20, 21:88])


def test_missing_image_marker(sample):
    path, raw, good = sample
    raw[5 * FS + 123] = ord("#")
    path.write_bytes(bytes(raw))
    with pytest.raises(pff.PFFFrameSizeError, match="marker") as err:
        pff.read_frames(path, warn=False)
    assert err.value.offset == 5 * FS
    _same(pff.read_frames(path, strict=False, warn=False), good, np.r_[0:5, 6:88])


def test_wrong_product_for_the_file_name(tmp_path):
    images, headers = _random_frames("ph1024", 3)
    path = tmp_path / _name("ph256")
    pff.write_frames(path, images, headers, "ph1024")
    with pytest.raises(pff.PFFHeaderError, match="four-quabo header") as err:
        pff.read_frames(path)
    assert err.value.offset == 0 and len(err.value.frames) == 0


def test_damage_in_a_later_chunk_keeps_the_earlier_chunks(sample):
    path, raw, good = sample
    raw[70 * FS] = ord("x")
    path.write_bytes(bytes(raw))
    seen = []
    with pytest.raises(pff.PFFHeaderError) as err:
        for chunk in pff.iter_chunks(path, chunk_frames=32):
            seen.append(chunk)
    assert [len(c) for c in seen] == [32, 32, 6]  # the partial chunk before raising
    assert err.value.offset == 70 * FS


def test_read_frames_at_with_damaged_frames(sample):
    path, raw, good = sample
    raw[30 * FS + 2] = ord("x")
    path.write_bytes(bytes(raw))
    idx = [3, 29, 30, 31, 80]
    with pytest.raises(pff.PFFHeaderError) as err:
        pff.read_frames_at(path, idx)
    assert err.value.offset == 30 * FS
    _same(err.value.frames, good, [3, 29])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frames = pff.read_frames_at(path, idx, strict=False)
    _same(frames, good, [3, 29, 31, 80])
    assert [d.offset for d in frames.damage] == [30 * FS]


def test_fuzzed_headers_fast_path_agrees_with_json(sample):
    """Single-byte header corruptions: every frame returned equals the json reading of
    its bytes, and no frame other than the corrupted one is lost."""
    path, raw0, good = sample
    rng = np.random.default_rng(0)
    for _ in range(120):
        raw = bytearray(raw0)
        i = int(rng.integers(0, 88))
        pos = i * FS + int(rng.integers(0, 124))
        raw[pos] = int(rng.choice([ord(c) for c in ' !"#(),-0159:{}\nx'] + [0, 255]))
        path.write_bytes(bytes(raw))
        frames = pff.read_frames(path, strict=False, warn=False)
        lost = set(range(88)) - set((frames.offsets // FS).tolist())
        assert lost <= {i}, (pos, raw[pos])
        for k, off in enumerate(frames.offsets):
            ref = json.loads(bytes(raw[off : off + 121]))
            assert {f: int(frames.headers[k][f]) for f in ref} == ref
            np.testing.assert_array_equal(frames.images[k], good.images[off // FS])
