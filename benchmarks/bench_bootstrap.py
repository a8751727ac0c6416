"""Time the protocol's paired bootstrap: resamples scored from multiplicities versus the loop.

On a synthetic test split the size of the book's (8,000 patients, about 1,000 events, 33 time
bins, two seeds per model, 1,000 resamples) this times :meth:`SurvivalProtocol.compare` (C, IBS
and AUROC of one model against another) and :meth:`SurvivalProtocol.evaluate` (every metric
but Antolini's C, whose loop alone takes minutes; ``--antolini`` adds it) twice each way:
``fast_bootstrap=False`` recomputes every metric on every resampled copy, the default scores
blocks of resamples from their multiplicities. Both draw the same resamples, so the intervals
agree to rounding; the script prints the largest difference. The curves are float32, as a
model returns them, so some risks tie.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_bootstrap.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_bootstrap.py --n-boot 200 --repeats 1
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import pandas as pd

from ehrseq.evaluate import SurvivalProtocol


def cohort(n: int, rng: np.random.Generator, horizon: float) -> tuple[np.ndarray, ...]:
    """Exponential event times driven by a score x; random and administrative censoring."""
    x = rng.normal(size=n)
    event = rng.exponential(26.0 * np.exp(-0.8 * x))
    censor = np.minimum(rng.exponential(15.0, size=n), horizon)
    return np.minimum(event, censor), (event <= censor).astype(int), x


def curves(x: np.ndarray, times: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """Proportional-hazards curves from a noisy score, rounded to float32 like a model's."""
    rng = np.random.default_rng(1000 + seed)
    rate = np.exp(0.8 * (x + noise * rng.normal(size=x.shape[0]))) / 20.0
    return np.exp(-np.outer(rate, times)).astype(np.float32).astype(float)  # (n, K)


def timed(fn, repeats: int) -> tuple[list[float], list[float], object]:
    """Wall-clock and CPU seconds of each call: on a shared machine CPU time is the steadier."""
    wall, cpu, out = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-test", type=int, default=8000)
    parser.add_argument("--n-train", type=int, default=16000)
    parser.add_argument("--bins", type=int, default=33)
    parser.add_argument("--seeds", type=int, default=2, help="curves per model")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--antolini", action="store_true", help="evaluate Antolini's C too")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    horizon = 3.0
    times = horizon * np.arange(1, args.bins + 1) / args.bins
    d_tr, e_tr, _ = cohort(args.n_train, rng, horizon)
    d, e, x = cohort(args.n_test, rng, horizon)
    a = [curves(x, times, 0.6, s) for s in range(args.seeds)]
    b = [curves(x, times, 1.2, s) for s in range(10, 10 + args.seeds)]
    fast = SurvivalProtocol(d, e, times, d_tr, e_tr, n_boot=args.n_boot, seed=0)
    slow = dataclasses.replace(fast, fast_bootstrap=False)
    metrics = [m for m in fast.metrics if args.antolini or m != "Antolini C"]
    print(
        f"{args.n_test} test patients, {int(e.sum())} events, {args.bins} bins, "
        f"{args.seeds} seeds per model, n_boot={args.n_boot}, evaluate: {', '.join(metrics)}"
    )

    results = {}
    for call, fn in {
        "compare": lambda p: p.compare("a", a, "b", b),
        "evaluate": lambda p: pd.DataFrame([p.evaluate("a", a, metrics=metrics)]),
    }.items():
        for path, protocol in (("loop", slow), ("multiplicities", fast)):
            wall, cpu, out = timed(lambda protocol=protocol, fn=fn: fn(protocol), args.repeats)
            results[call, path] = out
            runs = ", ".join(f"{w:.2f} ({c:.2f})" for w, c in zip(wall, cpu, strict=True))
            print(
                f"{call:>8} {path:>14}: {min(wall):7.2f} s wall (runs, CPU s in brackets: {runs})"
            )
        numeric = results[call, "loop"].select_dtypes("number").columns
        gap = (results[call, "loop"][numeric] - results[call, "multiplicities"][numeric]).abs()
        print(f"{call:>8} max |loop - multiplicities| over its numbers: {gap.max().max():.3g}")


if __name__ == "__main__":
    main()
