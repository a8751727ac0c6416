"""Load time of the OMOP reader: GiBleed (parquet) and a synthetic CDM of about 1M events
written as CSV and as parquet; the median of a few runs each.

Compares two versions of the reader (issue #15: the malformed-input checks may not make loading
more than 1.3x slower) by running this script once per version with ``PYTHONPATH`` pointing at
that version's ``lib``::

    git worktree add /tmp/wt_ceaec4c ceaec4c
    PYTHONPATH=/tmp/wt_ceaec4c/lib python benchmarks/bench_omop_load.py --json before.json
    PYTHONPATH=lib python benchmarks/bench_omop_load.py --json after.json --compare before.json

The synthetic CDM is written once into ``--data`` (default ``/tmp/ehrseq_bench_omop``) and
reused, so both versions read the same files. Timings are wall-clock seconds of
``open_cdm`` and ``load_omop`` (lenient, every domain), DuckDB limited to ``--threads``
threads, and the CPU seconds of the process over the same span: on a shared machine the
wall clock also measures the other jobs, the CPU time much less so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import ehrseq
from ehrseq.data.omop import load_omop, open_cdm

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "eunomia_gibleed"


def synthetic_cdm(root: Path, n_patients: int, fmt: str) -> Path:
    """The synthetic cohort's OMOP tables as ``fmt`` files under ``root/<fmt>``, written once."""
    folder = root / f"synthetic_{n_patients}_{fmt}"
    if not (folder / f"person.{fmt}").exists():
        from ehrseq.data.synthetic import SyntheticConfig, generate_cohort

        cohort = generate_cohort(SyntheticConfig(n_patients=n_patients, seed=0))
        folder.mkdir(parents=True, exist_ok=True)
        cohort.write_omop(folder, fmt=fmt)
    return folder


def time_load(path: Path, runs: int, threads: int) -> tuple[float, float, int]:
    """The median wall-clock and CPU seconds of ``runs`` loads, and the number of events."""
    seconds, cpu, n = [], [], 0
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        data = load_omop(open_cdm(path, threads=threads))
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        n = len(data.events)
        data.cdm.close()
    return statistics.median(seconds), statistics.median(cpu), n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/ehrseq_bench_omop"))
    parser.add_argument("--patients", type=int, default=3000, help="about 330 events each")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the timings here")
    parser.add_argument("--compare", type=Path, help="timings of another version: print ratios")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    inputs = {}
    if SHARED.exists():
        inputs["GiBleed (parquet)"] = SHARED.resolve()
    for fmt in ("csv", "parquet"):
        inputs[f"synthetic ({fmt})"] = synthetic_cdm(args.data, args.patients, fmt)
    print(f"ehrseq from {Path(ehrseq.__file__).parent}; {args.runs} runs each", file=sys.stderr)
    got = {}
    for name, path in inputs.items():
        seconds, cpu, n = time_load(path, args.runs, args.threads)
        got[name] = {"seconds": seconds, "cpu_seconds": cpu, "events": n}
        print(
            f"{name:22s} {n:>10,} events  {seconds:7.2f} s wall, {cpu:7.2f} s CPU "
            f"(median of {args.runs})"
        )
    print(f"load average: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    if args.json:
        args.json.write_text(json.dumps(got, indent=1))
    if args.compare:
        before = json.loads(args.compare.read_text())
        print(f"\n{'input':22s} {'':4s} {'before s':>9s} {'after s':>9s} {'ratio':>6s}")
        for name, now in got.items():
            for key, what in (("seconds", "wall"), ("cpu_seconds", "CPU")):
                if name in before and key in before[name]:
                    b, a = before[name][key], now[key]
                    print(f"{name:22s} {what:4s} {b:9.2f} {a:9.2f} {a / b:6.2f}")


if __name__ == "__main__":
    main()
