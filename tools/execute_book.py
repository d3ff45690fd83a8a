"""Execute the book's chapters into jupyter-book's execution cache, several at once.

``make book`` runs this before ``jupyter-book build``. jupyter-book 1 executes the
chapters one after another, and every chapter trains with one CPU thread
(``phbook.config.threads``), so on a machine with two cores half of it idled
through the whole build. This script runs up to ``--jobs`` chapters at once (default:
the number of CPU cores), each in its own kernel, and stores every executed notebook
in the cache exactly as myst-nb does (with its ``execution_seconds``). The build
that follows finds each chapter cached and only renders it; ``tools/book_times.py``
prints the recorded times.

* Chapters already in the cache (same code cells) are not run again, unless the
  package changed: jupyter-book's cache knows a chapter by its code cells alone, so a
  change to ``phbook`` (or to the pinned dependencies) would leave every chapter's
  outputs, numbers and figures, as the old code made them. The cache keeps a hash of
  the package's source (:func:`source_hash`); when it differs, every cached chapter is
  dropped and runs again (``--keep-stale`` keeps them, for a quick look at prose).
* Chapters that share trained models or simulated data run one after another, in the
  order of ``CHAINS``, so that no two kernels train or simulate the same thing at once.
* Chapters that measure speed or memory (``ALONE``) run last, with no other chapter
  beside them.
* Chains start longest first: by the time each chapter took when it was last
  cached, or by ``EXPECTED_SECONDS`` for a chapter never run.
* A chapter that fails is not cached: its error is printed here, and the build runs
  it again and reports it (``-W`` makes the build fail).

Usage: ``python tools/execute_book.py BUILD_DIR [--jobs N]``, where ``BUILD_DIR``
is the ``_build`` folder of the jupyter-book build (the cache is
``BUILD_DIR/.jupyter_cache``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

#: Chapters that reuse what an earlier one trained or simulated, in the order they run.
CHAINS = (
    ("book/02_autoencoders", "book/03_beta_vae", "book/03b_vqvae", "book/04_latent_space"),
    ("book/07_flows", "book/08_pixelcnn"),
)
#: Chapters that measure throughput or peak memory: they run with nothing beside them.
ALONE = ("book/13_scaling",)
#: Seconds each chapter took in the full profile (two at a time on 2 cores, December
#: 2026; chapters 7, 10 and 12 after their last cuts, estimated). Only the
#: order in which chains start depends on them, and only on a cold cache.
EXPECTED_SECONDS = {
    "book/00_quickstart": 39,
    "book/01_data": 122,
    "book/02_autoencoders": 83,
    "book/03_beta_vae": 210,
    "book/03b_vqvae": 185,
    "book/04_latent_space": 59,
    "book/05_gans": 139,
    "book/06_contamination": 310,
    "book/07_flows": 450,
    "book/08_pixelcnn": 47,
    "book/09_benchmark": 423,
    "book/10_lensing": 440,
    "book/11_transients": 297,
    "book/12_galaxies": 470,
    "book/13_scaling": 191,
}
#: One BLAS/OpenMP thread per kernel when kernels share the cores (spinning threads of
#: two kernels on two cores slow both many times over). Set before the workers start.
ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


#: What the chapters' outputs depend on besides their own cells: the package's source
#: and data files, the shipped real frames, and the pinned dependencies.
SOURCE_GLOBS = (
    "phbook/**/*.py",
    "phbook/**/*.json",
    "data/**/*",
    "pyproject.toml",
    "constraints.txt",
)
#: The file in the cache folder that records the :func:`source_hash` of its chapters.
SOURCE_STAMP = "phbook-source.sha256"


def source_hash(root: Path = ROOT) -> str:
    """SHA-256 over the path and bytes of every file of :data:`SOURCE_GLOBS`."""
    digest = hashlib.sha256()
    files = sorted(
        {p for pattern in SOURCE_GLOBS for p in root.glob(pattern) if p.is_file()}
    )
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def chapters(root: Path = ROOT) -> list[str]:
    """The notebooks of the table of contents, as ``book/NAME`` (no suffix), in order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    found: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            file = node.get("file")
            if isinstance(file, str) and (root / f"{file}.ipynb").exists():
                found.append(file)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(toc)
    return found


def plan(
    docs: Iterable[str], expected: Callable[[str], float]
) -> tuple[list[list[str]], list[str]]:
    """``(chains, alone)``: what runs in parallel, longest chain first, and what runs last.

    Every doc is in exactly one chain or in ``alone``; a doc of ``CHAINS`` keeps its
    chain's order, and the docs of a chain that are missing from ``docs`` are dropped.
    """
    docs = list(docs)
    todo = set(docs)
    alone = [d for d in docs if d in ALONE]
    chains = [[d for d in chain if d in todo] for chain in CHAINS]
    chained = {d for chain in chains for d in chain}
    chains = [c for c in chains if c]
    chains += [[d] for d in docs if d not in chained and d not in alone]
    chains.sort(key=lambda c: -sum(expected(d) for d in c))
    return chains, alone


def _execute(path: str, timeout: int | None) -> tuple[str, str | None, float, str | None]:
    """Run one notebook in its folder: ``(path, executed notebook or None, s, error)``."""
    import nbformat
    from jupyter_cache.executors.utils import single_nb_execution

    nb = nbformat.read(path, as_version=4)
    result = single_nb_execution(
        nb,
        cwd=str(Path(path).parent),
        timeout=timeout,
        allow_errors=False,
        meta_override=True,
    )
    if result.err is not None:
        return path, None, result.time, result.exc_string or repr(result.err)
    return path, nbformat.writes(nb), result.time, None


class Cache:
    """jupyter-book's execution cache, written the way myst-nb writes it."""

    def __init__(self, folder: Path):
        from jupyter_cache import get_cache

        self.folder = Path(folder)
        self.cache = get_cache(str(folder))

    @property
    def _stamp(self) -> Path:
        return self.folder / SOURCE_STAMP

    def source(self) -> str | None:
        """The :func:`source_hash` the cached chapters were run with (None: unknown)."""
        try:
            return self._stamp.read_text().strip() or None
        except FileNotFoundError:
            return None

    def set_source(self, digest: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self._stamp.with_suffix(".tmp")
        tmp.write_text(digest + "\n")
        tmp.replace(self._stamp)

    def drop_stale(self, digest: str) -> int:
        """Drop every cached chapter unless it was run with source ``digest`` (a cache
        without a record of its source counts as stale); record ``digest``. Returns
        how many cached notebooks were dropped."""
        dropped = 0
        if self.source() != digest:
            for rec in self.cache.list_cache_records():
                try:
                    self.cache.remove_cache(rec.pk)
                except KeyError:  # its files are gone already: drop the record alone
                    from jupyter_cache.cache.db import NbCacheRecord

                    NbCacheRecord.remove_records([rec.pk], self.cache.db)
                dropped += 1
        self.set_source(digest)
        return dropped

    def is_cached(self, path: Path) -> bool:
        import nbformat

        try:
            self.cache.match_cache_notebook(nbformat.read(path, as_version=4))
        except KeyError:
            return False
        return True

    def last_seconds(self) -> dict[str, float]:
        """``{absolute path: seconds}`` of the latest cached run of each notebook."""
        out: dict[str, tuple] = {}
        for rec in self.cache.list_cache_records():
            seconds = (rec.data or {}).get("execution_seconds")
            newer = rec.uri not in out or rec.created > out[rec.uri][0]
            if seconds is not None and newer:
                out[rec.uri] = (rec.created, float(seconds))
        return {uri: s for uri, (_, s) in out.items()}

    def store(self, path: Path, text: str | None, seconds: float, error: str | None):
        import nbformat
        from jupyter_cache.base import CacheBundleIn
        from jupyter_cache.cache.db import NbProjectRecord

        stage = self.cache.add_nb_to_project(str(path))
        NbProjectRecord.remove_tracebacks([stage.pk], self.cache.db)
        if error is not None:
            NbProjectRecord.set_traceback(stage.uri, error, self.cache.db)
            return
        self.cache.cache_notebook_bundle(
            CacheBundleIn(
                nbformat.reads(text, as_version=4),
                stage.uri,
                data={"execution_seconds": seconds},
            ),
            check_validity=False,
            overwrite=True,
        )


def _timeout(root: Path) -> int | None:
    conf = yaml.safe_load((root / "_config.yml").read_text()) or {}
    value = (conf.get("execute") or {}).get("timeout", 30)
    return None if value is None or int(value) < 0 else int(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("build", type=Path, help="the _build folder of the book")
    parser.add_argument(
        "--jobs",
        type=int,
        default=int(os.environ.get("BOOK_JOBS", 0)) or os.cpu_count() or 1,
        help="chapters executed at once (default: $BOOK_JOBS, else the CPU cores)",
    )
    parser.add_argument(
        "--keep-stale",
        action="store_true",
        help="keep chapters cached by an older phbook (their numbers may be out of date)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, not {args.jobs}")

    cache = Cache(args.build / ".jupyter_cache")
    last = cache.last_seconds()
    digest = source_hash()
    if args.keep_stale:
        if cache.source() not in (None, digest):
            print(
                "execute: phbook changed since the cached chapters ran; kept them "
                "(--keep-stale): their numbers may be out of date",
                flush=True,
            )
    else:
        dropped = cache.drop_stale(digest)
        if dropped:
            print(
                f"execute: phbook changed since the cached chapters ran (or the cache "
                f"does not say which phbook ran them): dropped {dropped} cached "
                "notebooks, every chapter runs again",
                flush=True,
            )
    docs = [d for d in chapters() if not cache.is_cached(ROOT / f"{d}.ipynb")]
    if not docs:
        print("execute: every chapter is cached already")
        return 0

    def expected(doc: str) -> float:
        return last.get(str(ROOT / f"{doc}.ipynb"), EXPECTED_SECONDS.get(doc, 60.0))

    chains, alone = plan(docs, expected)
    if args.jobs > 1:
        for name in ONE_THREAD:
            os.environ.setdefault(name, "1")
    print(
        f"execute: {len(docs)} chapters, {args.jobs} at a time"
        + (f", then {', '.join(alone)} alone" if alone else ""),
        flush=True,
    )
    start = time.perf_counter()
    failed: list[str] = []
    timeout = _timeout(ROOT)

    def finish(future: Future) -> None:
        path, text, seconds, error = future.result()
        doc = str(Path(path).relative_to(ROOT).with_suffix(""))
        cache.store(Path(path), text, seconds, error)
        status = "ok" if error is None else "FAILED"
        print(
            f"execute: {doc:<24} {seconds:7.1f} s  {status}"
            f"  ({time.perf_counter() - start:.0f} s since start)",
            flush=True,
        )
        if error is not None:
            failed.append(doc)
            print("\n".join(error.strip().splitlines()[-15:]), file=sys.stderr, flush=True)

    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        running: dict[Future, list[str]] = {}
        pending = [list(c) for c in chains]
        while pending or running:
            while pending and len(running) < args.jobs:
                chain = pending.pop(0)
                doc = chain.pop(0)
                fut = pool.submit(_execute, str(ROOT / f"{doc}.ipynb"), timeout)
                running[fut] = chain
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                rest = running.pop(fut)
                finish(fut)
                if rest:
                    pending.append(rest)
                    pending.sort(key=lambda c: -sum(expected(d) for d in c))
        for doc in alone:
            finish(pool.submit(_execute, str(ROOT / f"{doc}.ipynb"), timeout))
    wall = time.perf_counter() - start
    print(f"execute: {len(docs)} chapters in {wall:.0f} s ({args.jobs} at a time)")
    if failed:
        print(f"execute: FAILED: {', '.join(failed)} (the build runs them again)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
