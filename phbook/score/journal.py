"""The journal of an unfinished run: one ``.npz`` file per scored chunk, written whole
or not at all, from which an interrupted run resumes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..io import writing
from .layout import ScoreError
from .plan import Part

__all__ = ["journal_path", "chunk_name"]

# ----------------------------------------------------------------------------------
# The journal


def journal_path(out: str | os.PathLike) -> Path:
    """The journal folder of an output file: ``<out>.journal``."""
    out = Path(out)
    return out.with_name(out.name + ".journal")


#: What to do once a failed journal write is fixed.
RESUME = "then run the same command again: it resumes where it stopped"


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` whole or not at all (a temporary file renamed; two
    processes writing the same chunk do not collide)."""
    with writing.atomic_write(path, RESUME) as f:
        np.savez(f, **arrays)


class _Journal:
    """The scored chunks of an unfinished run, one ``.npz`` file per chunk."""

    def __init__(self, out: Path, manifest: dict[str, Any], overwrite: bool):
        self.dir = journal_path(out)
        self.manifest = manifest
        path = self.dir / "manifest.json"
        if self.dir.exists() and overwrite:
            shutil.rmtree(self.dir)
        if self.dir.exists():
            try:
                old = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ScoreError(
                    f"{self.dir}: the journal of an earlier run cannot be read ({exc}); "
                    "delete it or pass overwrite=True (--overwrite) to start again"
                ) from None
            changed = [k for k in manifest if k != "seconds" and old.get(k) != manifest[k]]
            if "scoring" in changed:
                # name the scoring option that differs, and both values
                was, now = old.get("scoring") or {}, manifest["scoring"]
                changed.remove("scoring")
                changed += [
                    f"scoring option {k} (was {was.get(k)!r}, now {now.get(k)!r})"
                    for k in sorted(set(was) | set(now))
                    if was.get(k) != now.get(k)
                ]
            if changed:
                raise ScoreError(
                    f"{self.dir}: an unfinished run with another {', '.join(changed)} "
                    "is in the way; pass overwrite=True (--overwrite) to discard it, or "
                    "resume it with the same model, source and options"
                )
            self.manifest["seconds"] = float(old.get("seconds", 0.0))
        else:
            try:
                writing.before_write(self.dir)
                self.dir.mkdir(parents=True)
            except OSError as exc:
                raise writing.write_error(self.dir, exc, RESUME) from None
            self.manifest.setdefault("seconds", 0.0)
            self.save_manifest()
        for tmp in self.dir.glob("*.tmp"):  # left by a process that was killed
            tmp.unlink(missing_ok=True)

    def save_manifest(self) -> None:
        with writing.atomic_write(self.dir / "manifest.json", RESUME) as f:
            f.write(json.dumps(self.manifest, indent=1).encode())

    def chunk_path(self, part: int, chunk: int) -> Path:
        return self.dir / chunk_name(part, chunk)

    def done_path(self, part: int) -> Path:
        return self.dir / f"p{part:07d}.done"

    def state(self, parts: list[Part]) -> dict[int, dict[str, Any]]:
        """Per part: done, chunks, frames, and where to resume."""
        chunks: dict[int, list[Path]] = {}
        done = set()
        for p in self.dir.iterdir():
            name = p.name
            if name.startswith("p") and name.endswith(".npz"):
                chunks.setdefault(int(name[1:8]), []).append(p)
            elif name.startswith("p") and name.endswith(".done"):
                done.add(int(name[1:8]))
        out = {}
        for part in parts:
            files = sorted(chunks.get(part.index, []))
            info: dict[str, Any] = {
                "done": part.index in done,
                "chunks": files,
                "frames": 0,
                "resume": None,
            }
            if files:
                n = 0
                for f in files:
                    with _open_npz(f) as z:
                        n += len(z["score"])
                info["frames"] = n
                if not info["done"]:
                    with _open_npz(files[-1]) as z:
                        resume: dict[str, int] = {"chunk": len(files)}
                        if len(z["score"]):
                            if part.kind == "h5":
                                resume["row"] = int(z["row"][-1])
                            else:
                                resume["offset"] = int(z["offset"][-1])
                        elif part.kind == "pff" and len(files) > 1:
                            # an empty chunk (damage only): use the one before it
                            for f in reversed(files[:-1]):
                                with _open_npz(f) as zz:
                                    if len(zz["offset"]):
                                        resume["offset"] = int(zz["offset"][-1])
                                        break
                        info["resume"] = resume
            out[part.index] = info
        return out

    def write(self, part: int, chunk: int, result: dict[str, np.ndarray]) -> None:
        _write_npz(self.chunk_path(part, chunk), result)

    def finish_part(self, part: int) -> None:
        with writing.atomic_write(self.done_path(part), RESUME) as f:
            f.write(b"done")


def chunk_name(part: int, chunk: int) -> str:
    """The journal file name of a scored chunk."""
    return f"p{part:07d}.c{chunk:06d}.npz"


def _open_npz(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - name the file
        raise ScoreError(
            f"{path}: a journal chunk cannot be read ({exc}); delete it (the run resumes "
            "before it) or pass --overwrite to start again"
        ) from None
