"""Benchmark: generate the synthetic OMOP cohort and print time, rows and peak memory.

Usage: python benchmarks/bench_synthetic.py [--n 100000] [--seed 0]
The issue's target: 100,000 patients in under 60 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import resource
import time

from ehrseq.data.synthetic import SyntheticConfig, generate_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000, help="patients")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--site", default="A", choices=["A", "B"])
    args = parser.parse_args()

    start = time.perf_counter()
    cohort = generate_cohort(SyntheticConfig(n_patients=args.n, seed=args.seed, site=args.site))
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary = cohort.summary()
    rows = int(summary["rows"].sum())
    print(summary.to_string(index=False))
    print(f"patients: {args.n:,}  site: {args.site}  event rows: {rows:,}")
    print(
        f"generation time: {seconds:.1f} s  ({args.n / seconds:,.0f} patients/s, {rows / seconds:,.0f} rows/s)"
    )
    print(f"peak memory (max RSS of the process): {peak_mib:,.0f} MiB")


if __name__ == "__main__":
    main()
