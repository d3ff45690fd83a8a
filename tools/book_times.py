"""Print each chapter's execution time after `make book`.

Reads the execution records that myst-nb keeps in the Sphinx environment of a
jupyter-book build (``<build>/.doctrees/environment.pickle``): for every executed
notebook, how long it ran and whether it succeeded. Notebooks taken from the
execution cache report the time of the run that filled the cache.

Usage: ``python tools/book_times.py _build``
"""

from __future__ import annotations

import pickle
import sys
from datetime import datetime
from pathlib import Path


def execution_records(build: Path) -> dict[str, dict]:
    """``{docname: exec_data}`` of the notebooks of the build in ``build``."""
    env_file = build / ".doctrees" / "environment.pickle"
    if not env_file.exists():
        raise SystemExit(f"{env_file}: no Sphinx environment; run `make book` first")
    with env_file.open("rb") as f:
        env = pickle.load(f)
    meta = getattr(env, "nb_metadata", {}) or {}
    return {doc: data["exec_data"] for doc, data in meta.items() if data.get("exec_data")}


def main(argv: list[str]) -> int:
    build = Path(argv[0] if argv else "_build")
    records = execution_records(build)
    if not records:
        print("No notebook execution records in this build (execution off?).")
        return 0
    total = 0.0
    print(f"{'chapter':<28} {'seconds':>8}  {'method':<7} result   executed at")
    for doc in sorted(records):
        r = records[doc]
        runtime = r.get("runtime")
        total += runtime or 0.0
        when = datetime.fromtimestamp(r["mtime"]).strftime("%Y-%m-%d %H:%M")
        print(
            f"{doc:<28} {runtime if runtime is not None else float('nan'):>8.1f}  "
            f"{r.get('method', ''):<7} {'ok' if r.get('succeeded') else 'FAILED':<8} "
            f"{when}"
        )
    print(f"{'total':<28} {total:>8.1f}")
    return 0 if all(r.get("succeeded") for r in records.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
