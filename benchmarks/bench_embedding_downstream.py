"""Benchmark: chapter 12's code embeddings, frozen, on the shared survival task.

Trains the methods of chapter 12 at its book settings (the shared task of the ``book``
profile; a corpus of 1,500 training patients drawn as the chapter draws them; d = 32, a
window of 5, 5 negatives, 3 epochs, tau = 30 days; seeds 0, 1, 2): gensim's skip-gram,
ours plain, ours time-aware and Gaussian random vectors, each restricted to the codes
all four share, as the chapter does. Every embedding then gives patient vectors (the
mean of its code vectors before the prediction time) for the task's training and test
patients, scored by :mod:`ehrseq.embedding_downstream`:

- Harrell's C of a ridge Cox model (``CoxBaseline``) on the patient vectors;
- the AUROC of a logistic regression for heart failure within one year;
- the adjusted Rand index of k-means segments against the latent disease profile.

Prints the method x seed table with 95 % bootstrap intervals (over test patients), the
mean over seeds with Student-t intervals, the paired differences over the same test
patients (bootstrap) and by seed (Student-t over seeds), each with a verdict, and the
wall time.

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_embedding_downstream.py
      [--profile book] [--n-boot 200] [--decay-tau DAYS]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import pandas as pd
import torch

import ehrseq
from ehrseq.data.task import prepare_survival_task, shared_task_config
from ehrseq.embedding_downstream import (
    DOWNSTREAM_METRICS,
    downstream_data,
    downstream_table,
)
from ehrseq.embeddings import (
    CodeCorpus,
    CodeEmbedding,
    SkipGramConfig,
    shared_codes,
    train_skipgram,
)
from ehrseq.embeddings.reference import gensim_skipgram
from ehrseq.numbers import interval

METHODS = ("gensim", "ours plain", "ours time-aware", "random")
PAIRS = {
    "time_vs_gensim": ("ours time-aware", "gensim"),
    "time_vs_plain": ("ours time-aware", "ours plain"),
    "ours_vs_gensim": ("ours plain", "gensim"),
    "time_vs_random": ("ours time-aware", "random"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="book", help="shared task profile")
    ap.add_argument("--max-persons", type=int, default=1500, help="chapter 12, book")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--negatives", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--tau", type=float, default=30.0, help="days, time-aware")
    ap.add_argument("--decay-tau", type=float, default=None, help="days, patients")
    ap.add_argument("--n-boot", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)
    wall = time.perf_counter()

    t0 = time.perf_counter()
    task = prepare_survival_task(shared_task_config(args.profile))
    cohort = task.cohort
    rng = ehrseq.seed_everything(0)  # chapter 12's draw of the corpus patients
    train_ids = np.sort(task.split["train"])
    if args.max_persons and len(train_ids) > args.max_persons:
        train_ids = np.sort(rng.choice(train_ids, args.max_persons, replace=False))
    data = downstream_data(task, n_boot=args.n_boot, seed=0)
    t_data = time.perf_counter() - t0
    print(
        f"task ({args.profile}) and downstream data: {t_data:.1f} s; "
        f"{len(data.train):,} training and {len(data.test):,} test patients, "
        f"{int(data.known_test.sum()):,} test patients with a 1-year label "
        f"({int(data.y_test[data.known_test].sum())} events), "
        f"{int(data.scored_test.sum()):,} with one of the {data.n_clusters} common "
        "latent "
        f"disease profiles (k = {data.n_clusters})"
    )

    t0 = time.perf_counter()
    base = SkipGramConfig(
        dim=args.dim,
        window=args.window,
        negatives=args.negatives,
        epochs=args.epochs,
        progress=False,
    )
    embeddings: dict[tuple[str, int], CodeEmbedding] = {}
    for seed in args.seeds:
        vocab = cohort.vocabulary
        corpus = CodeCorpus.from_omop_tables(
            cohort.tables, vocabulary=vocab, seed=seed, persons=train_ids
        )
        run = dataclasses.replace(base, seed=seed)
        ref = gensim_skipgram(corpus, run)
        plain = train_skipgram(corpus, run)
        timed = train_skipgram(corpus, dataclasses.replace(run, tau=args.tau))
        ids = corpus.concept_ids[1:]
        noise = np.random.default_rng(seed).normal(size=(len(ids), args.dim))
        found = (
            ref.embedding,
            plain.embedding,
            timed.embedding,
            CodeEmbedding(ids, noise),
        )
        for name, emb in zip(METHODS, shared_codes(*found)):
            embeddings[name, seed] = emb
    t_train = time.perf_counter() - t0
    print(f"training {len(embeddings)} embeddings: {t_train:.1f} s")

    t0 = time.perf_counter()
    result = downstream_table(embeddings, data, PAIRS, tau_days=args.decay_tau)
    t_score = time.perf_counter() - t0
    print(f"downstream scoring: {t_score:.1f} s\n")

    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    runs = result.runs
    shown = runs[["method", "seed"]].copy()
    for m in DOWNSTREAM_METRICS:
        ends = runs[[m, f"{m}_lower", f"{m}_upper"]].to_numpy()
        shown[m] = [interval(*row) for row in ends]
    shown["ARI null 95%"] = runs["ari_null"].map("{:.3f}".format)
    shown["codes missing (events)"] = [
        f"{n:,} ({s:.2%})" for n, s in zip(runs["n_missing"], runs["missing_share"])
    ]
    shown["empty patients"] = runs["n_empty"]
    print("method x seed (95% bootstrap intervals over test patients):")
    print(shown.to_string(index=False))

    s = result.summary
    s["shown"] = [interval(r.mean, r.lower, r.upper) for r in s.itertuples()]
    table = s.pivot(index="method", columns="metric", values="shown")
    print("\nmean over seeds (95% Student-t interval over training seeds):")
    print(table.loc[list(METHODS), list(DOWNSTREAM_METRICS)].to_string())

    d = result.differences
    d["difference [95% paired bootstrap]"] = [
        interval(r.difference, r.lower, r.upper, "+.3f") for r in d.itertuples()
    ]
    print("\npaired differences (seed means, same test patients, same resamples):")
    cols = ["comparison", "metric", "difference [95% paired bootstrap]", "verdict"]
    print(d[cols].to_string(index=False))
    d = result.seed_differences
    d["difference [95% over seeds]"] = [
        interval(r.difference, r.lower, r.upper, "+.3f") for r in d.itertuples()
    ]
    print("\npaired differences by seed (same test patients, Student-t over seeds):")
    cols = ["comparison", "metric", "difference [95% over seeds]", "verdict"]
    print(d[cols].to_string(index=False))
    total = time.perf_counter() - wall
    print(
        f"\nwall time: {total:.1f} s (task {t_data:.1f} s, training {t_train:.1f} s, "
        f"scoring {t_score:.1f} s), torch threads {torch.get_num_threads()}"
    )


if __name__ == "__main__":
    main()
