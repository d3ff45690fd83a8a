"""The MAROC readout of a quabo: which pixel each of the 4 x 64 channels reads.

A quabo's 256 pixels are read by four MAROC ASICs ("chips") of 64 channels each. The
board routes chip channels to sensor pixels through a fixed channel-to-pixel map; when a
chip dies, the pixels it reads go dark together, and a partly failing chip loses
channels in its readout order, which the map scatters over its pixels. These facts come
from the public map of the PANOSETI quabo (BGA board version), in panoseti/pypff
(``pypff/pixelmap_maroc2phys_bga.py`` and ``pypff/pixelmap.py``, MIT licence); the
table below is our own encoding of them.

Two facts stand out from that map: each chip reads one 8 x 8 quarter of the sensor (its
64 channels are interleaved within it, not in raster order), and the quabo's four
positions in a module are rotated by 90 degrees from one another, so the quarter a chip
covers in the recorded image depends on the quabo. pypff's index formula for quabo 2
runs off the 16 x 16 image (``dy = 16 + i``); we take the rotation that completes the
other three (quabo 0, 1, 3 are rotated by 90, 180 and 0 degrees; quabo 2 by 270).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["N_CHIPS", "N_CHANNELS", "sensor_map", "image_map", "chip_pixels"]

N_CHIPS = 4  #: MAROC chips per quabo
N_CHANNELS = 64  #: channels per chip

#: Sensor pixel (row * 16 + column, 0-based, in the board's physical coordinates) of
#: every channel, chip by chip, as two-digit hexadecimal numbers in channel order.
_SENSOR_HEX = (
    # chip 0
    "81 80 90 91 a1 a0 b0 b1 c1 c0 d0 d1 e1 e0 f0 f1 "
    "82 83 93 92 a2 a3 b3 b2 c2 c3 d3 d2 e2 e3 f3 f2 "
    "85 84 94 95 a5 a4 b4 b5 c5 c4 d4 d5 e5 e4 f4 f5 "
    "86 87 97 96 a6 a7 b7 b6 c6 c7 d7 d6 e6 e7 f7 f6",
    # chip 1
    "71 70 51 50 40 41 31 30 21 20 11 01 10 00 73 72 "
    "63 52 62 53 34 43 42 32 33 23 13 22 12 03 02 75 "
    "61 60 64 65 55 74 35 45 54 44 15 24 25 05 14 04 "
    "67 76 77 66 57 56 47 46 36 37 27 16 06 07 26 17",
    # chip 2
    "0f 1f 1e 0e 0d 1d 1c 0c 0b 1b 1a 0a 09 19 18 08 "
    "3f 2f 2e 3e 3d 2d 2c 3c 3b 2b 2a 3a 39 29 28 38 "
    "4f 5f 5e 4e 4d 5d 5c 4c 4b 5b 5a 4a 49 59 58 48 "
    "7f 6f 6e 7e 7d 6d 6c 7c 7b 6b 6a 7a 79 69 68 78",
    # chip 3
    "88 98 8a 9a 9b 8b 8c 9c 8d 9d 8e 8f 9e 9f a8 b8 "
    "a9 ba b9 aa dc ab bb bc ac ad ae bd be af bf c8 "
    "89 99 d9 c9 ca d8 cc cb da db ce dd cd cf de df "
    "e9 f8 e8 ea f9 fa eb fb fc ec ed fe ff ef fd ee",
)


@lru_cache(maxsize=1)
def sensor_map() -> np.ndarray:
    """(4, 64) int: the physical sensor pixel (row * 16 + col) read by chip, channel."""
    out = np.array([[int(h, 16) for h in s.split()] for s in _SENSOR_HEX], np.int64)
    assert out.shape == (N_CHIPS, N_CHANNELS) and len(np.unique(out)) == 256
    return out


@lru_cache(maxsize=4)
def image_map(quabo: int) -> np.ndarray:
    """(4, 64) int: the pixel (row * 16 + col) of a quabo's recorded 16 x 16 image read
    by each chip and channel.

    The physical (row, col) = (a, b) of the map becomes, in the recorded image of quabo
    0, 1, 2, 3: (b, 15 - a), (15 - a, 15 - b), (15 - b, a), (a, b).
    """
    if quabo not in (0, 1, 2, 3):
        raise ValueError(f"quabo must be 0-3, got {quabo}")
    phys = sensor_map()
    a, b = phys // 16, phys % 16
    r, c = {
        0: (b, 15 - a),
        1: (15 - a, 15 - b),
        2: (15 - b, a),
        3: (a, b),
    }[quabo]
    return r * 16 + c


def chip_pixels(quabo: int, chip: int, channels=None) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) in the recorded image of the pixels read by ``chip`` of ``quabo``
    (all 64 channels, or the given ``channels``)."""
    if chip not in range(N_CHIPS):
        raise ValueError(f"chip must be 0-3, got {chip}")
    pix = image_map(quabo)[chip]
    if channels is not None:
        pix = pix[np.asarray(channels)]
    return pix // 16, pix % 16
