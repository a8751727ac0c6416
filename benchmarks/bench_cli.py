"""Benchmark: the ``ehrseq run`` command end to end on synthetic OMOP exports of several sizes.

For each size the synthetic generator writes an OMOP CDM export (parquet), the command runs on
it in a fresh process (validate, cohort, tokenise, pretrain, fine-tune, baselines, evaluate,
report), and then runs again on the same output folder, where every stage is cached. Wall time
and the peak resident memory of the command's process are measured per run; the generator's
own time is reported apart.

The cohort is the one ``tests/test_cli.py`` uses: new NSAID users, heart failure within three
years, with descendants.

An export already under ``--keep`` (``omop_<n>/person.parquet``) is reused, not written
again; the run folder ``run_<n>`` is removed first, so the first run is cold.

Usage: python benchmarks/bench_cli.py [--sizes 10000 100000] [--profile smoke]
       [--threads 1] [--keep DIR] [--limit-gib G] [--memory-limit 2GB]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the synthetic cohort's NSAID ingredients and the "Heart failure" parent concept
COHORT = """
name = "nsaid_hf"
washout_days = 180
horizon_years = 3
[index]
concepts = [2000003101, 2000003103]
include_descendants = true
[outcome]
concepts = [2000001047]
include_descendants = true
"""


def write_export(folder: Path, n: int) -> tuple[float, float]:
    """Generate ``n`` patients and write their OMOP export in a child (its memory is freed).

    Returns wall seconds and the child's peak RSS in MiB."""
    code = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from ehrseq.data.synthetic import SyntheticConfig, generate_cohort\n"
        "cohort = generate_cohort(SyntheticConfig(n_patients=int(sys.argv[2]), seed=11))\n"
        "Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)\n"
        "cohort.write_omop(sys.argv[1])\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(f'PEAK_KIB {peak}', file=sys.stderr)\n"
    )
    env = dict(os.environ, EHRSEQ_NO_PROGRESS="1")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, str(folder), str(n)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - start
    peak = [line for line in proc.stderr.splitlines() if line.startswith("PEAK_KIB")]
    return wall, int(peak[-1].split()[1]) / 1024


def run_command(args: list[str], threads: int, limit_gib: float | None) -> tuple[float, float, int]:
    """Run ``ehrseq ARGS`` in a child; wall seconds, peak RSS (MiB), exit code.

    ``limit_gib`` caps the child's address space (RLIMIT_AS), so a run that needs more
    memory fails with MemoryError instead of drawing the machine's OOM killer."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), EHRSEQ_NO_PROGRESS="1")

    def cap() -> None:
        if limit_gib is not None:
            size = int(limit_gib * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (size, size))

    code = (
        "import resource, sys\n"
        "from ehrseq.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(f'PEAK_KIB {peak}', file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=cap,
    )
    wall = time.perf_counter() - start
    peak = [line for line in proc.stderr.splitlines() if line.startswith("PEAK_KIB")]
    if proc.returncode != 0 or not peak:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        return wall, float("nan"), proc.returncode
    return wall, int(peak[-1].split()[1]) / 1024, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--profile", default="smoke", choices=["smoke", "default"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, help="keep exports here")
    parser.add_argument(
        "--limit-gib", type=float, default=None, help="address-space cap of each run"
    )
    parser.add_argument(
        "--memory-limit", default=None, help="ehrseq run --memory-limit (DuckDB's cap)"
    )
    opts = parser.parse_args()
    root = opts.keep or Path(tempfile.mkdtemp(prefix="bench_cli_"))
    for n in opts.sizes:
        folder = root / f"omop_{n}"
        if (folder / "person.parquet").exists():
            generate_s, generate_mib = float("nan"), float("nan")  # reused
        else:
            generate_s, generate_mib = write_export(folder, n)
        spec = root / "cohort.toml"
        spec.write_text(COHORT)
        out = root / f"run_{n}"
        if out.exists():  # an earlier run's stages would come from its cache
            shutil.rmtree(out)
        args = ["run", str(folder), "--cohort", str(spec), "--out", str(out)]
        args += ["--profile", opts.profile]
        if opts.memory_limit:
            args += ["--memory-limit", opts.memory_limit]
        cold = run_command(args, opts.threads, opts.limit_gib)
        stages = out / "stages.json"  # the cold run's seconds per stage
        seconds = json.loads(stages.read_text())["seconds"] if stages.exists() else {}
        cached = run_command(args, opts.threads, opts.limit_gib)
        metrics = out / "metrics.json"
        n_cohort = None
        if metrics.exists():
            data = json.loads(metrics.read_text())
            n_cohort = data["cohort"]["persons"]
        print(
            f"{n:>7,} patients (cohort {n_cohort}): generate+write {generate_s:6.1f} s, "
            f"{generate_mib:.0f} MiB | "
            f"run {cold[0]:7.1f} s, peak {cold[1]:7.0f} MiB, rc {cold[2]} | "
            f"cached re-run {cached[0]:5.1f} s, peak {cached[1]:6.0f} MiB, rc {cached[2]}",
            flush=True,
        )
        if seconds:
            times = ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())
            print(f"  stages (s): {times}", flush=True)
    print(f"profile {opts.profile}, {opts.threads} thread(s), load {os.getloadavg()[0]:.1f}")
    print(f"exports under {root}")


if __name__ == "__main__":
    main()
