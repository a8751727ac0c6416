"""Execute the book's chapters into Jupyter Book's cache, several at a time.

Jupyter Book 1 executes one notebook after another, so on a 2-core machine one core idles
through most of the build. This script runs before ``jupyter-book build`` (scripts/book.sh):
it reads every chapter listed in ``_toc.yml`` exactly as the book does (``jupytext.reads`` of
the py:percent source), skips those already in the cache, executes the others in
``--jobs`` parallel kernels (``--threads`` CPU threads each), longest chain first (see
:func:`schedule`: a chapter's time plus that of the chapters that wait for it, by their last
recorded time, or on a fresh clone by ``scripts/chapter_seconds.json``, the times of a
measured cold build), a chapter that loads another's artefacts after it (``runs_after`` in
its header, see :func:`runs_after`), and pages that read what the chapters wrote
(``99_*``) last, after them. A chapter in the cache runs again when a chapter it reads
from runs (:func:`dependants`). It stores each executed notebook in
``_build/.jupyter_cache`` under the same hash the book computes. The book build then finds every chapter cached and only
renders. A chapter that fails is reported with its traceback and the script exits 1; the
book build then executes it again and shows the error in place.

    .venv/bin/python scripts/execute_chapters.py --jobs 2 --threads 1
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "_build" / ".jupyter_cache"
FINAL_PREFIX = "99_"  # pages that read what the chapters wrote: executed after them
#: Seconds per chapter of a measured cold ``book`` build: the order on a fresh clone.
SECONDS = Path(__file__).with_name("chapter_seconds.json")
#: Pages the book executes itself that read the chapters' execution records (their times).
READS_CACHE = [ROOT / "book" / "status.md"]


def chapters() -> list[Path]:
    """The py:percent chapters of ``_toc.yml``, in book order."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(toc)
    return [ROOT / f"{f}.py" for f in files if (ROOT / f"{f}.py").is_file()]


def read(path: Path):
    import jupytext

    return jupytext.reads(path.read_text(), fmt="py:percent")


def figure_problems(nb) -> list[str]:
    """Figure cells (``mystnb.figure`` metadata) with more than one shown output.

    The book wraps every shown output of such a cell in the named figure, so a second one (a
    value left as the cell's last expression, a second plot) makes the name appear twice and
    fails the build with a "duplicate explicit target name" warning far from its cause.
    """
    problems = []
    for i, cell in enumerate(nb.cells):
        figure = cell.get("metadata", {}).get("mystnb", {}).get("figure")
        if cell.cell_type != "code" or not figure:
            continue
        shown = [
            o
            for o in cell.get("outputs", [])
            if o.output_type in ("display_data", "execute_result")
            and not any(k.startswith("application/papermill.record") for k in o.get("data", {}))
        ]
        if len(shown) > 1:
            kinds = ", ".join(sorted({o.output_type for o in shown}))
            problems.append(
                f"cell {i} (figure {figure.get('name')!r}): {len(shown)} outputs ({kinds})"
            )
    return problems


def slowest_cells(nb, n: int = 3) -> list[dict]:
    """The ``n`` slowest code cells of an executed notebook (nbclient's per-cell timing).

    Each entry: ``cell`` (index), ``seconds``, ``first_line`` (the first line of code that is
    not a comment). Cells without timing metadata are skipped.
    """
    from datetime import datetime

    rows = []
    for i, cell in enumerate(nb.cells):
        timing = cell.get("metadata", {}).get("execution", {})
        start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
        if cell.cell_type != "code" or not (start and end):
            continue
        seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
        lines = [ln for ln in cell.source.splitlines() if ln.strip() and not ln.startswith("#")]
        rows.append({"cell": i, "seconds": round(seconds, 1), "first_line": (lines or [""])[0]})
    return sorted(rows, key=lambda r: -r["seconds"])[:n]


def execute(path: str, threads: int, timeout: int) -> tuple[str, object, float, str | None]:
    """Run one chapter in a fresh kernel (in a worker process); return the executed notebook.

    nbclient records each cell's start and end in the cell's metadata (``execution``), which
    :func:`slowest_cells` reads.
    """
    from jupyter_cache.executors.utils import single_nb_execution

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)  # the kernel inherits these
    nb = read(Path(path))
    result = single_nb_execution(
        nb,
        cwd=str(Path(path).parent),
        allow_errors=False,
        timeout=timeout,
        meta_override=True,
        record_timing=True,
    )
    error = result.exc_string if result.err else None
    if error is None and (problems := figure_problems(nb)):
        error = "figure cells must show one output each:\n  " + "\n  ".join(problems)
    return path, nb, result.time, error


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("EHRSEQ_BOOK_JOBS", 2)))
    ap.add_argument("--threads", type=int, default=int(os.environ.get("EHRSEQ_BOOK_THREADS", 1)))
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per chapter")
    ap.add_argument("--only", nargs="*", help="chapter file names to consider (default: all)")
    args = ap.parse_args()
    if args.jobs < 1 or args.threads < 1:
        ap.error("--jobs and --threads must be >= 1")

    from jupyter_cache import get_cache

    cache = get_cache(str(CACHE))
    todo, last_time = [], {}
    for record in cache.list_cache_records():
        last_time[record.uri] = float(record.data.get("execution_seconds") or 0.0)
    for path in chapters():
        if args.only and path.name not in args.only and path.stem not in args.only:
            continue
        try:
            cache.match_cache_notebook(read(path))
            print(f"[execute] cached  {path.name}")
        except KeyError:
            todo.append(path)
    if not todo:
        return 0
    todo = with_dependants(todo, [p for p in chapters() if p not in todo], cache)
    todo = schedule(todo, last_time)
    print(f"[execute] {len(todo)} chapters, {args.jobs} at a time, {args.threads} thread(s) each")
    failed: list[str] = []
    start = time.perf_counter()
    final = [p for p in todo if p.name.startswith(FINAL_PREFIX)]
    first = [p for p in todo if p not in final]
    for batch in (first, final):
        if batch and not failed:
            _run(batch, args, cache, failed)
    print(f"[execute] done in {time.perf_counter() - start:.0f} s; failed: {failed or 'none'}")
    return 1 if failed else 0


def dependants(todo: list[Path], cached: list[Path]) -> list[Path]:
    """The ``cached`` chapters that read what a chapter of ``todo`` writes, so must run again.

    Those are the chapters that load its artefacts (``runs_after``, followed transitively)
    and the pages that read what every chapter wrote (``99_*``). Their own text did not
    change, so the cache alone would keep outputs made from the older artefacts and claims.
    """
    out: list[Path] = []
    stale = {p.stem for p in todo}
    grew = True
    while grew:
        grew = False
        for p in cached:
            if p not in out and (p.name.startswith(FINAL_PREFIX) or stale & set(runs_after(p))):
                out.append(p)
                stale.add(p.stem)
                grew = True
    return out


def with_dependants(todo: list[Path], cached: list[Path], cache) -> list[Path]:
    """``todo`` plus its :func:`dependants`, with the pages that read every chapter refreshed.

    A page re-executed here although its text is unchanged is touched, so that Sphinx reads
    it again (it re-reads only sources newer than its last read); a page the book executes
    itself and that reads the chapters' execution records (:data:`READS_CACHE`) loses its
    cache record and is touched, so that the book executes it again.
    """
    more = dependants(todo, cached)
    for p in more:
        print(f"[execute] again   {p.name}: reads what a changed chapter writes")
        os.utime(p)
    for page in READS_CACHE:
        for record in cache.list_cache_records():
            if Path(record.uri) == page:
                cache.remove_cache(record.pk)
        if page.exists():
            os.utime(page)
    return todo + more


def schedule(paths: list[Path], last_time: dict[str, float]) -> list[Path]:
    """``paths`` in the order to start them: the longest chain of work first.

    A chapter's priority is its own time plus the longest chain of chapters that wait for
    it (``runs_after``): with two kernels, starting 05b (which 05c, 05d, 08 and 08b wait for)
    before a longer chapter that nothing waits for keeps both cores busy to the end. Times
    are the cache's last recorded ones, else those of ``scripts/chapter_seconds.json``; a
    chapter in neither counts as a minute. Ties keep book order.
    """
    import json

    recorded = json.loads(SECONDS.read_text())["seconds"] if SECONDS.exists() else {}
    seconds = {p.stem: last_time.get(str(p)) or float(recorded.get(p.stem, 60.0)) for p in paths}
    waiting: dict[str, list[str]] = {p.stem: [] for p in paths}
    for p in paths:
        for before in runs_after(p):
            if before in waiting:
                waiting[before].append(p.stem)
    chain: dict[str, float] = {}

    def longest(stem: str) -> float:
        if stem not in chain:
            chain[stem] = seconds[stem] + max((longest(w) for w in waiting[stem]), default=0.0)
        return chain[stem]

    return sorted(paths, key=lambda p: -longest(p.stem))


def strip_timing(nb) -> None:
    """Drop nbclient's per-cell timing (``metadata.execution``) from an executed notebook.

    Jupyter Cache hashes cell metadata: a notebook stored with timing would not match the
    chapter's source, and the book build would execute every chapter again.
    """
    for cell in nb.cells:
        cell.get("metadata", {}).pop("execution", None)


def runs_after(path: Path) -> list[str]:
    """Chapters (file stems) whose artefacts this one loads: ``runs_after`` in its metadata.

    A chapter declares them in its jupytext header (``jupyter: ehrseq: runs_after: [...]``).
    Started before them, it would wait on their file lock with a core idle, or train what
    they train.
    """
    return list(read(path).metadata.get("ehrseq", {}).get("runs_after", []))


def _run(paths: list[Path], args, cache, failed: list[str]) -> None:
    """Execute ``paths`` ``args.jobs`` at a time, in order, each after its ``runs_after``."""
    stems = {p.stem for p in paths}
    after = {p: [s for s in runs_after(p) if s in stems] for p in paths}
    pending, running, finished = list(paths), {}, set()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        while pending or running:
            for p in list(pending):
                if len(running) >= args.jobs:
                    break
                if set(after[p]) <= finished or not running:  # (not running: no deadlock)
                    pending.remove(p)
                    running[pool.submit(execute, str(p), args.threads, args.timeout)] = p
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                finished.add(running.pop(future).stem)
                _store(*future.result(), args, cache, failed)


def _store(path: str, nb, seconds: float, error: str | None, args, cache, failed) -> None:
    from jupyter_cache.base import CacheBundleIn

    from ehrseq.prose import prose_problems

    name = Path(path).name
    if error is not None:
        failed.append(name)
        print(f"[execute] FAILED  {name} after {seconds:.0f} s\n{error}", file=sys.stderr)
        return
    slow = slowest_cells(nb)
    strip_timing(nb)  # kept in the cache's data instead: the cell metadata is hashed
    data = {"execution_seconds": seconds, "threads": args.threads, "jobs": args.jobs}
    cache.add_nb_to_project(path)
    cache.cache_notebook_bundle(
        CacheBundleIn(nb, path, data={**data, "slowest_cells": slow}),
        check_validity=False,
        overwrite=True,
    )
    print(f"[execute] {seconds:6.0f} s  {name}", flush=True)
    for cell in slow:
        print(
            f"[execute]          {cell['seconds']:6.1f} s  cell {cell['cell']}: "
            f"{cell['first_line'][:70]}",
            flush=True,
        )
    for problem in prose_problems(nb):  # sentences this run size turned into nonsense
        print(f"[execute] PROSE   {name}: {problem}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
