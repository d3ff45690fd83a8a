"""The output file, copied from the journal in plan order while scoring goes on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .journal import _Journal, _open_npz
from .layout import _DAMAGE_COLUMNS, _ROW_COLUMNS, _ROW_DTYPES
from .plan import Plan

# ----------------------------------------------------------------------------------
# Writing the output


class _Output:
    """Writes the output from the journal, in plan order, while scoring goes on.

    Parts are copied as soon as they and every part before them are done, into a
    temporary HDF5 file that :meth:`finish` renames to ``out``; until then, and after
    an interruption (:meth:`abort` deletes it), the journal is all there is.
    """

    def __init__(self, plan: Plan, journal: _Journal, out: Path):
        import h5py

        self.plan, self.journal, self.out = plan, journal, out
        self.tmp = out.with_name(f".{out.name}.merging")
        self.tmp.unlink(missing_ok=True)
        self.next = 0  # position in plan.parts of the next part to copy
        self.n = self.n_dmg = 0
        self.per_file = np.zeros(max(1, len(plan.files)), np.int64)
        self.h5 = h5py.File(self.tmp, "w")
        gz = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
        self.ds = {}
        for name in _ROW_COLUMNS:
            dt = f"S{plan.label_width}" if name == "label" else _ROW_DTYPES[name]
            kw = {} if name == "score" else gz  # scores hardly compress
            self.ds[name] = self.h5.create_dataset(
                name, (0,), dt, chunks=(1 << 16,), maxshape=(None,), **kw
            )
        g = self.h5.create_group("damage")
        dtypes = {
            "file_index": np.int32,
            "offset": np.int64,
            "kind": "S16",
            "skipped_bytes": np.int64,
            "message": "S400",
        }
        self.dmg = {
            name: g.create_dataset(name, (0,), dt, maxshape=(None,), chunks=(256,))
            for name, dt in dtypes.items()
        }

    def _append(self, path: Path) -> None:
        with _open_npz(path) as z:
            k = len(z["score"])
            if k:
                for name in _ROW_COLUMNS:
                    self.ds[name].resize((self.n + k,))
                    self.ds[name][self.n : self.n + k] = z[name]
                fi = z["file_index"]
                fi = fi[fi >= 0]
                m = len(self.per_file)
                self.per_file += np.bincount(fi, minlength=m)[:m]
                self.n += k
            m = len(z["damage_offset"])
            if m:
                for name in _DAMAGE_COLUMNS:
                    self.dmg[name].resize((self.n_dmg + m,))
                    self.dmg[name][self.n_dmg : self.n_dmg + m] = z[f"damage_{name}"]
                self.n_dmg += m

    def advance(self, done: set[int]) -> None:
        """Copy the parts that are done and follow only done parts."""
        parts = self.plan.parts
        while self.next < len(parts) and parts[self.next].index in done:
            index = parts[self.next].index
            for path in sorted(self.journal.dir.glob(f"p{index:07d}.c*.npz")):
                self._append(path)
            self.next += 1

    def finish(self, attrs: dict[str, Any]) -> int:
        """Write the files table and attributes, close, rename; frames written."""
        if self.next != len(self.plan.parts):
            raise RuntimeError("the output was finished before every part was copied")
        fg = self.h5.create_group("files")
        files = self.plan.files
        for name in ("name", "run", "dome"):
            values = files[name].astype(str).str.encode("utf-8").to_numpy()
            width = max([1, *(len(v) for v in values)])
            fg.create_dataset(name, data=np.array(values, dtype=f"S{width}"))
        fg.create_dataset("module", data=files["module"].to_numpy(np.int16))
        fg.create_dataset("pe_threshold", data=files["pe_threshold"].to_numpy(np.float32))
        fg.create_dataset("n_scored", data=self.per_file[: len(files)])
        self.h5.attrs.update(
            {**attrs, "n_scored": self.n, "n_damaged": self.n_dmg, "n_files": len(files)}
        )
        self.h5.close()
        os.replace(self.tmp, self.out)
        return self.n

    def abort(self) -> None:
        """Close and delete the temporary file (the journal keeps everything)."""
        try:
            self.h5.close()
        finally:
            self.tmp.unlink(missing_ok=True)
