"""Benchmark: visit-level code embeddings (Med2Vec's visit objective) against the skip-gram.

At chapter 12's book settings (the shared task of the ``book`` profile; a corpus of 1,500
training patients drawn as the chapter draws them; d = 32; seeds 0, 1, 2, seed ``s`` also
shuffling the corpus's same-day codes), trains on the same corpus and seeds:

- ``skip-gram``: our plain SGNS (:func:`~ehrseq.embeddings.train_skipgram`; window 5,
  5 negatives, 3 epochs, as the chapter);
- ``visit, one table``: :func:`~ehrseq.embeddings.visits.train_visit_embedding`, codes
  pooled into a visit (same person and day) by attention with one table and one query,
  trained to predict the codes of the visits ``t-w..t+w`` (Med2Vec's softmax output under a
  binary cross-entropy);
- ``visit, per type``: the same with a table, query and key map per code type (condition,
  drug, procedure, measurement, from the concept's OMOP domain) and one cross-attention step
  between the types of a visit;
- ``random``: Gaussian vectors with the same seeds (what the scores read for nothing learnt).

Every embedding is restricted to the codes all of them hold and scored by
:func:`~ehrseq.embeddings.evaluate_embedding` (nearest-neighbour accuracy against the
generator's disease groups, silhouette, relatedness power, ontology correlation). Prints the
mean over seeds with a Student-t interval, the paired differences by seed
(:func:`~ehrseq.embeddings.compare.compare_runs`: "not resolved" when the interval holds 0),
the training seconds of each method and the wall time.

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_visit_embeddings.py
      [--profile book] [--seeds 0 1 2] [--visit-epochs 5] [--visit-window 2]
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
from ehrseq.embeddings import (
    CodeCorpus,
    CodeEmbedding,
    SkipGramConfig,
    evaluate_embedding,
    shared_codes,
    train_skipgram,
    truth,
)
from ehrseq.embeddings.compare import compare_runs, summarise_runs
from ehrseq.embeddings.visits import VisitEmbeddingConfig, corpus_visits, train_visit_embedding
from ehrseq.numbers import interval

METHODS = ("skip-gram", "visit, one table", "visit, per type", "random")
METRICS = ("nn_accuracy", "silhouette", "relatedness_power", "ontology_spearman")
PAIRS = {
    "one_vs_sg": ("visit, one table", "skip-gram"),
    "type_vs_sg": ("visit, per type", "skip-gram"),
    "type_vs_one": ("visit, per type", "visit, one table"),
    "one_vs_random": ("visit, one table", "random"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="book", help="shared task profile")
    ap.add_argument("--max-persons", type=int, default=1500, help="chapter 12, book")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--window", type=int, default=5, help="skip-gram, positions")
    ap.add_argument("--negatives", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=3, help="skip-gram")
    ap.add_argument("--visit-window", type=int, default=2, help="w, visits each side")
    ap.add_argument("--visit-epochs", type=int, default=5)
    ap.add_argument("--visit-objective", default="softmax", choices=["softmax", "bce"])
    ap.add_argument("--code-weight", type=float, default=0.0, help="intra-visit term")
    args = ap.parse_args()
    if len(args.seeds) < 2:
        ap.error("--seeds: need at least 2 for an interval over seeds")
    torch.set_num_threads(1)
    wall = time.perf_counter()

    t0 = time.perf_counter()
    task = prepare_survival_task(shared_task_config(args.profile))
    cohort = task.cohort
    rng = ehrseq.seed_everything(0)  # chapter 12's draw of the corpus patients
    train_ids = np.sort(task.split["train"])
    if args.max_persons and len(train_ids) > args.max_persons:
        train_ids = np.sort(rng.choice(train_ids, args.max_persons, replace=False))
    domains = truth.concept_domains(cohort)
    t_task = time.perf_counter() - t0
    print(f"task ({args.profile}): {t_task:.1f} s")

    sg_cfg = SkipGramConfig(
        dim=args.dim,
        window=args.window,
        negatives=args.negatives,
        epochs=args.epochs,
        progress=False,
    )
    visit_cfg = VisitEmbeddingConfig(
        dim=args.dim,
        window=args.visit_window,
        objective=args.visit_objective,
        code_weight=args.code_weight,
        epochs=args.visit_epochs,
    )
    print(f"skip-gram: {sg_cfg}")
    print(f"visit: {visit_cfg} (per type: per_type=True)")
    rows, seconds = [], []
    for seed in args.seeds:
        corpus = CodeCorpus.from_omop_tables(
            cohort.tables, vocabulary=cohort.vocabulary, seed=seed, persons=train_ids
        )
        if seed == args.seeds[0]:
            print(corpus.report())
            print(corpus_visits(corpus).report())
        t0 = time.perf_counter()
        sg = train_skipgram(corpus, dataclasses.replace(sg_cfg, seed=seed))
        t_sg = time.perf_counter() - t0
        one = train_visit_embedding(corpus, dataclasses.replace(visit_cfg, seed=seed))
        typed = train_visit_embedding(
            corpus,
            dataclasses.replace(visit_cfg, seed=seed, per_type=True),
            domains=domains,
        )
        ids = corpus.concept_ids[1:]
        noise = np.random.default_rng(seed).normal(size=(len(ids), args.dim))
        found = (sg.embedding, one.embedding, typed.embedding, CodeEmbedding(ids, noise))
        for name, emb in zip(METHODS, shared_codes(*found), strict=True):
            scores = evaluate_embedding(emb, cohort, seed=seed)
            keep = {m: scores[m] for m in (*METRICS, "nn_chance")}
            rows.append({"method": name, "seed": seed, **keep})
        seconds.append(
            {
                "seed": seed,
                "skip-gram": t_sg,
                "visit, one table": one.train_seconds,
                "visit, per type": typed.train_seconds,
            }
        )
        print(
            f"seed {seed}: skip-gram {t_sg:.1f} s, visit one table {one.train_seconds:.1f} s "
            f"(loss {one.losses[0]:.3f} -> {one.losses[-1]:.3f}), per type "
            f"{typed.train_seconds:.1f} s (loss {typed.losses[0]:.3f} -> {typed.losses[-1]:.3f})"
        )
    runs = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)

    s = summarise_runs(runs, METRICS)
    s["shown"] = [interval(r.mean, r.lower, r.upper) for r in s.itertuples()]
    table = s.pivot(index="method", columns="metric", values="shown")
    table = table.loc[list(METHODS), list(METRICS)]
    table.index.name = None
    chance = float(runs["nn_chance"].mean())  # the same codes in every run
    n = len(args.seeds)
    print(f"\nmean over {n} seeds (95% Student-t interval); NN accuracy by chance {chance:.3f}:")
    print(table.to_string())

    d = compare_runs(runs, PAIRS, METRICS)
    d["difference [95% over seeds]"] = [
        interval(r.difference, r.lower, r.upper, "+.3f") for r in d.itertuples()
    ]
    print("\npaired differences by seed (Student-t over seeds):")
    cols = ["comparison", "metric", "difference [95% over seeds]", "verdict"]
    print(d[cols].to_string(index=False))

    sec = pd.DataFrame(seconds).set_index("seed")
    print("\ntraining seconds per seed (one torch thread):")
    print(sec.to_string(float_format="{:.1f}".format))
    total = time.perf_counter() - wall
    print(
        f"\nwall time: {total:.1f} s (task {t_task:.1f} s, training "
        f"{float(sec.to_numpy().sum()):.1f} s), torch threads {torch.get_num_threads()}"
    )


if __name__ == "__main__":
    main()
