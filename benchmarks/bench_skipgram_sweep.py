"""Benchmark: does a time-aware skip-gram beat the plain one at some window and decay?

Chapter 12 found the time-aware skip-gram (pairs weighted by ``exp(-|dt| / tau)``, tau 30
days) no better than the plain one on nearest-neighbour accuracy against the generator's
disease groups. In this generator a code's group is a property of the patient's disease,
not of the visit, so pairs across visits carry the signal and a short decay may throw it
away. This sweep trains our skip-gram (:func:`~ehrseq.embeddings.train_skipgram`) on one
synthetic cohort with every window of ``--windows`` and every ``tau`` of ``--taus`` (days;
``inf`` is the plain skip-gram), the same seeds for every setting (seed ``s`` also shuffles
the same-day codes of the corpus), scores each run with
:func:`~ehrseq.embeddings.evaluate_embedding` and prints, per setting, the mean
nearest-neighbour accuracy and relatedness power with a Student-t interval over the seeds,
and the paired difference to the plain skip-gram of the same window
(:func:`~ehrseq.embeddings.compare.compare_runs`: a setting wins only when the interval
excludes 0).

The last line is ``best=<setting> nn=<x> plain_nn=<x> diff=<x> [<lo>, <hi>] verdict=<v>``
for the setting with the highest mean nearest-neighbour accuracy among the time-aware ones.

Run:  .venv/bin/python benchmarks/bench_skipgram_sweep.py [--patients 1500] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import math
import time

import pandas as pd
import torch

from ehrseq.data.synthetic import SyntheticConfig, generate_cohort
from ehrseq.embeddings import CodeCorpus, SkipGramConfig, evaluate_embedding, train_skipgram
from ehrseq.embeddings.compare import compare_runs, summarise_runs
from ehrseq.embeddings.scores import shared_codes

METRICS = ("nn_accuracy", "relatedness_power")


def setting(window: int, tau: float) -> str:
    """``"w5 plain"`` or ``"w5 tau=365"``: one row of the sweep."""
    return f"w{window} " + ("plain" if math.isinf(tau) else f"tau={tau:g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=1500)
    ap.add_argument("--cohort-seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--negatives", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--windows", type=int, nargs="+", default=[5, 10])
    ap.add_argument("--taus", type=float, nargs="+", default=[math.inf, 30, 365, 1095])
    args = ap.parse_args()
    if len(args.seeds) < 2:
        ap.error("--seeds: need at least 2 for an interval over seeds")
    torch.set_num_threads(1)

    t0 = time.perf_counter()
    cohort = generate_cohort(SyntheticConfig(n_patients=args.patients, seed=args.cohort_seed))
    print(f"cohort: {args.patients} patients in {time.perf_counter() - t0:.1f} s")
    taus = sorted(set(args.taus) | {math.inf})  # the plain skip-gram is the reference
    rows = []
    for seed in args.seeds:
        corpus = CodeCorpus.from_omop_tables(cohort.tables, vocabulary=cohort.vocabulary, seed=seed)
        runs = {}
        for window in args.windows:
            for tau in taus:
                config = SkipGramConfig(
                    dim=args.dim,
                    window=window,
                    negatives=args.negatives,
                    epochs=args.epochs,
                    tau=tau,
                    seed=seed,
                    progress=False,
                )
                t0 = time.perf_counter()
                runs[setting(window, tau)] = train_skipgram(corpus, config).embedding
                print(f"seed {seed} {setting(window, tau)}: {time.perf_counter() - t0:.1f} s")
        # every setting scored on the codes all of them embed
        for name, emb in zip(runs, shared_codes(*runs.values()), strict=True):
            scores = evaluate_embedding(emb, cohort, seed=seed)
            rows.append({"method": name, "seed": seed, **{m: scores[m] for m in METRICS}})
    runs_frame = pd.DataFrame(rows)
    pd.set_option("display.width", 160)
    print(summarise_runs(runs_frame, METRICS).to_string())
    pairs = {
        setting(w, t): (setting(w, t), setting(w, math.inf))
        for w in args.windows
        for t in taus
        if not math.isinf(t)
    }
    pairs |= {  # a longer window, both plain
        f"w{w} plain vs w{args.windows[0]} plain": (
            setting(w, math.inf),
            setting(args.windows[0], math.inf),
        )
        for w in args.windows[1:]
    }
    diffs = compare_runs(runs_frame, pairs, METRICS)
    print(diffs.drop(columns=["key"]).to_string(index=False, float_format="{:+.4f}".format))
    nn = runs_frame.groupby("method")["nn_accuracy"].mean()
    timed = [name for name in nn.index if "tau" in name]
    best = max(timed, key=nn.get)
    row = diffs[(diffs["key"] == best) & (diffs["metric"] == "nn_accuracy")].iloc[0]
    plain = setting(int(best.split()[0][1:]), math.inf)
    print(
        f"best={best.replace(' ', '_')} nn={nn[best]:.4f} plain_nn={nn[plain]:.4f} "
        f"diff={row['difference']:+.4f} [{row['lower']:+.4f}, {row['upper']:+.4f}] "
        f"verdict={row['verdict'].replace(' ', '_')}"
    )


if __name__ == "__main__":
    main()
