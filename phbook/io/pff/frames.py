"""Frames: images, headers and offsets read from (or for) one PFF file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .format import Damage, data_product
from .times import frame_times

# ----------------------------------------------------------------------------------
# Frames


@dataclass
class Frames:
    """Frames read from (or to be written to) one PFF file.

    ``images`` is ``(n, H, W)`` in the product's pixel type (``int16`` for pulse
    heights); ``headers`` is a numpy structured array of the raw header fields
    (:attr:`DataProduct.header_dtype`); ``offsets`` are the byte offsets of the frames
    in the file; ``time``/``time_flags`` come from :func:`frame_times`. ``damage`` lists
    what a ``strict=False`` read skipped.
    """

    images: np.ndarray
    headers: np.ndarray
    offsets: np.ndarray
    dp: str
    path: str | None = None
    damage: list[Damage] = field(default_factory=list)
    _time: np.ndarray | None = field(default=None, repr=False)
    _flags: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        name = os.path.basename(self.path) if self.path else "memory"
        return (
            f"Frames({len(self)} x {self.dp} {tuple(self.images.shape[1:])} from "
            f"{name}, {len(self.damage)} damaged stretch(es) skipped)"
        )

    def _times(self) -> None:
        if self._time is None:
            self._time, self._flags = frame_times(self.headers)

    @property
    def time(self) -> np.ndarray:
        """Unix time of every frame, float64 seconds (see :func:`frame_times`)."""
        self._times()
        return self._time

    @property
    def time_flags(self) -> np.ndarray:
        """Bit flags of :attr:`time`: :data:`CLOCKS_DISAGREE`, :data:`NSEC_PLACEHOLDER`,
        :data:`NO_PACKET`."""
        self._times()
        return self._flags

    @property
    def quabo(self) -> np.ndarray:
        """Quabo (0-3) of every frame for ``ph256``; -1 for four-quabo products."""
        if "quabo_num" in (self.headers.dtype.names or ()):
            return self.headers["quabo_num"].astype(np.int8)
        return np.full(len(self), -1, dtype=np.int8)

    @property
    def n_damaged(self) -> int:
        """Damaged stretches skipped by a ``strict=False`` read."""
        return len(self.damage)

    def __getitem__(self, index) -> Frames:
        if isinstance(index, (int, np.integer)):
            i = int(index) + (len(self) if index < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"frame {int(index)} out of range for {len(self)}")
            index = slice(i, i + 1)
        out = Frames(
            self.images[index],
            self.headers[index],
            self.offsets[index],
            self.dp,
            self.path,
            list(self.damage),
        )
        if self._time is not None:
            out._time, out._flags = self._time[index], self._flags[index]
        return out

    @classmethod
    def empty(cls, dp: str, path: str | None = None) -> Frames:
        prod = data_product(dp)
        return cls(
            np.empty((0, *prod.shape), prod.pixel_dtype),
            np.empty(0, prod.header_dtype),
            np.empty(0, np.int64),
            prod.name,
            path,
        )

    @classmethod
    def concat(cls, parts: Sequence[Frames]) -> Frames:
        """One :class:`Frames` from several (of the same product)."""
        parts = list(parts)
        if not parts:
            raise ValueError("concat needs at least one Frames")
        dps = {p.dp for p in parts}
        if len(dps) > 1:
            raise ValueError(f"cannot concatenate frames of products {sorted(dps)}")
        paths = {p.path for p in parts}
        damage = [d for p in parts for d in p.damage]
        return cls(
            np.concatenate([p.images for p in parts]),
            np.concatenate([p.headers for p in parts]),
            np.concatenate([p.offsets for p in parts]),
            parts[0].dp,
            parts[0].path if len(paths) == 1 else None,
            list(dict.fromkeys(damage)),
        )


def empty_headers(n: int, dp: str) -> np.ndarray:
    """A zero-filled header array for ``n`` frames of product ``dp`` (for writers)."""
    return np.zeros(n, dtype=data_product(dp).header_dtype)
