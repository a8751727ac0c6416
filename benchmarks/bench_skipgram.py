"""Benchmark: our temporal skip-gram against gensim's word2vec on one synthetic corpus.

Generates a synthetic cohort (default 3,000 patients), turns its condition, drug, procedure
and measurement rows into a :class:`~ehrseq.embeddings.corpus.CodeCorpus`, and measures:

- pairs/s of the vectorised pair generator (plain and time-weighted);
- words/s (corpus events x epochs / wall time) of gensim ``Word2Vec(sg=1, workers=1)`` and of
  our trainer (pair generation included), with the same window, negatives, epochs and
  dimension, every pair of the window kept (:mod:`ehrseq.embeddings.reference`);
- the scores of :func:`ehrseq.embeddings.scores.evaluate_embedding` for gensim plain, ours
  plain (``tau = inf``) and ours time-aware (``--tau`` days), on the codes all three share.

The last line is ``gensim_wps=.. ours_wps=.. ratio=.. gensim_nn=.. ours_nn=.. ours_time_nn=..``
(ratio = ours plain / gensim; nn = nearest-neighbour accuracy against the disease groups).
Timings on a shared CPU vary from run to run; set OMP_NUM_THREADS=1 for one thread each.

Run:  .venv/bin/python benchmarks/bench_skipgram.py [--patients 3000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

import torch

from ehrseq.data.synthetic import SyntheticConfig, generate_cohort
from ehrseq.embeddings import CodeCorpus, SkipGramConfig, evaluate_embedding, train_skipgram
from ehrseq.embeddings.reference import gensim_skipgram
from ehrseq.embeddings.scores import shared_codes
from ehrseq.embeddings.skipgram import skipgram_pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--negatives", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--tau", type=float, default=30.0, help="days, time-aware variant")
    ap.add_argument("--share-negatives", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(1)

    t0 = time.perf_counter()
    cohort = generate_cohort(SyntheticConfig(n_patients=args.patients, seed=args.seed))
    corpus = CodeCorpus.from_omop_tables(cohort.tables, vocabulary=cohort.vocabulary)
    print(f"cohort and corpus: {time.perf_counter() - t0:.1f} s; {corpus.report()}")

    for tau in (math.inf, args.tau):
        t0 = time.perf_counter()
        pairs = skipgram_pairs(corpus, args.window, tau, min_weight=1e-3)
        dt = time.perf_counter() - t0
        print(f"pairs (tau={tau}): {len(pairs):,} in {dt:.3f} s = {len(pairs) / dt:,.0f} pairs/s")

    plain = SkipGramConfig(
        dim=args.dim,
        window=args.window,
        negatives=args.negatives,
        epochs=args.epochs,
        share_negatives=args.share_negatives,
        seed=args.seed,
        progress=False,
    )
    gensim = gensim_skipgram(corpus, plain)
    print(f"gensim: {gensim.train_seconds:.1f} s, {gensim.words_per_second:,.0f} words/s")
    ours = train_skipgram(corpus, plain)
    print(f"ours plain: {ours.report()}")
    timed = train_skipgram(corpus, dataclasses.replace(plain, tau=args.tau))
    print(f"ours tau={args.tau:g}: {timed.report()}")

    embeddings = shared_codes(gensim.embedding, ours.embedding, timed.embedding)
    scores = {}
    for name, emb in zip(("gensim", "ours", "ours_time"), embeddings):
        scores[name] = evaluate_embedding(emb, cohort, seed=args.seed)
        print(name, " ".join(f"{k}={v:.3f}" for k, v in scores[name].items()))
    ratio = ours.words_per_second / gensim.words_per_second
    print(
        f"gensim_wps={gensim.words_per_second:.0f} ours_wps={ours.words_per_second:.0f} "
        f"ratio={ratio:.2f} gensim_nn={scores['gensim']['nn_accuracy']:.3f} "
        f"ours_nn={scores['ours']['nn_accuracy']:.3f} "
        f"ours_time_nn={scores['ours_time']['nn_accuracy']:.3f}"
    )


if __name__ == "__main__":
    main()
