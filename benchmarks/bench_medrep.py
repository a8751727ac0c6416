r"""Benchmark: MedRep on a laptop -- text-encoding and GRACE throughput, peak memory, and what
the full OHDSI vocabulary would cost.

For each vocabulary (the shipped one, with deciles fitted on a synthetic site-A cohort; and
Eunomia's Synthea27Nj with deciles fitted on its own measurement table, when the shared sample
is present), the pipeline of :mod:`ehrseq.medrep` runs once, stage by stage:

- ``descriptions``: :func:`~ehrseq.medrep.concept_descriptions` (ancestors, synonyms, deciles);
- ``text``: :func:`~ehrseq.medrep.encode_descriptions` with the bundled all-MiniLM-L6-v2
  (384-d, ``--text-batch`` strings per pass): **concepts/s** (model loading excluded);
- ``graph``: :func:`~ehrseq.medrep.build_concept_graph` (untyped edges, hubs > 100 cut);
- ``grace``: :func:`~ehrseq.medrep.train_grace` for ``--epochs`` epochs (batch of
  ``--batch-size`` seeds, fan-out ``--fanout``, LwF on): **seeds/s** (each node is a seed once
  per epoch) and **subgraph nodes/s** (nodes of the sampled subgraphs, summed over batches:
  the unit of GCN and loss work); the per-epoch whole-graph drift check and the final
  inference are excluded.

``peak MiB`` is the largest resident-set size of the process during the stage minus the size
before it (sampled every 5 ms with psutil; torch's CPU allocator keeps no counter), so it is
the memory the stage added, models and buffers included. One torch thread by default
(``--threads``), as on the book's shared 2-core machines.

The extrapolation to the full OHDSI vocabulary (``--full-concepts``, 7.7 M with deciles) is
arithmetic on the measured rates, printed with its assumptions: descriptions of the same
length as here; the same CPU and thread count; GRACE work linear in subgraph nodes; subgraph
size per batch bounded by ``batch * (1 + f1 + f1 * f2)`` with ``f_h = min(fanout_h, degree)``
for an **assumed** mean degree (``--assume-degree``; not measured here: the samples keep only a
sliver of the relationship table), and the GRACE loss's ``n x n`` similarity matrices (four of
them, float32, forward only; a lower bound) as the memory that grows fastest.

Usage: python benchmarks/bench_medrep.py [--epochs 3] [--batch-size 1024] [--fanout 30 20]
       [--text-batch 128] [--threads 1] [--patients 500] [--full-concepts 7.7e6]
       [--assume-degree 2 8 20] [--out results.csv]
"""

from __future__ import annotations

import argparse
import csv
import os
import threading
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import psutil
import torch

from ehrseq.data.concepts import data_dir
from ehrseq.data.download import local_sample
from ehrseq.data.synthetic import SyntheticConfig, generate_cohort
from ehrseq.medrep import (
    GraceConfig,
    build_concept_graph,
    concept_descriptions,
    encode_descriptions,
    fit_deciles,
    load_text_encoder,
    read_concept_tables,
    train_grace,
)


def measured(fn: Callable[[], object]) -> tuple[object, float, float]:
    """Run ``fn``; return its result, wall seconds and peak RSS increase in MiB."""
    proc = psutil.Process(os.getpid())
    base = proc.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            done.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    try:
        out = fn()
    finally:
        seconds = time.perf_counter() - t0
        done.set()
        thread.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    return out, seconds, (peak[0] - base) / 2**20


def sources(patients: int) -> list[tuple[str, object, pd.DataFrame]]:
    out = []
    cohort = generate_cohort(SyntheticConfig(n_patients=patients))
    meas = cohort.omop_tables(include_vocabulary=False)["measurement"]
    out.append(("shipped", read_concept_tables(data_dir() / "vocabulary"), meas))
    folder = local_sample("eunomia_synthea27nj")
    if folder is not None:
        out.append(
            (
                "synthea27nj",
                read_concept_tables(folder),
                pd.read_parquet(folder / "measurement.parquet"),
            )
        )
    else:
        print("eunomia_synthea27nj absent: shipped vocabulary only")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--fanout", type=int, nargs="+", default=[30, 20])
    ap.add_argument("--text-batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--patients", type=int, default=500, help="synthetic site for the deciles")
    ap.add_argument("--full-concepts", type=float, default=7.7e6)
    ap.add_argument("--assume-degree", type=float, nargs="+", default=[2.0, 8.0, 20.0])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}, CPU: {os.cpu_count()} cores visible")

    model, load_s, load_mib = measured(lambda: load_text_encoder())
    print(f"text encoder loaded in {load_s:.1f} s (+{load_mib:.0f} MiB RSS)")
    rows = []
    for name, tables, meas in sources(args.patients):
        deciles = fit_deciles(meas, name)
        desc, d_s, d_mib = measured(lambda t=tables, q=deciles: concept_descriptions(t, q))
        emb, t_s, t_mib = measured(
            lambda d=desc: encode_descriptions(d, model, batch_size=args.text_batch, progress=False)
        )
        graph, g_s, g_mib = measured(
            lambda d=desc, t=tables: build_concept_graph(d, t.relationship)
        )
        cfg = GraceConfig(
            epochs=args.epochs, batch_size=args.batch_size, num_neighbors=tuple(args.fanout)
        )
        res, r_s, r_mib = measured(lambda g=graph, e=emb, c=cfg: train_grace(g, e, c))
        batches = args.epochs * int(np.ceil(graph.n_nodes / args.batch_size))
        row = {
            "vocabulary": name,
            "concepts": int((desc["decile"] == 0).sum()),
            "deciles": int((desc["decile"] > 0).sum()),
            "nodes": graph.n_nodes,
            "edges": graph.n_edges,
            "dangling_rows": graph.n_dangling_rows,
            "hubs": graph.n_hubs,
            "mean_chars": float(desc["description"].str.len().mean()),
            "describe_s": d_s,
            "describe_mib": d_mib,
            "text_s": t_s,
            "text_per_s": len(desc) / t_s,
            "text_mib": t_mib,
            "graph_s": g_s,
            "grace_s": res.seconds,
            "grace_seeds_per_s": graph.n_nodes * args.epochs / res.seconds,
            "grace_nodes_per_s": res.nodes_seen / res.seconds,
            "subgraph_nodes_per_batch": res.nodes_seen / batches,
            "grace_mib": r_mib,
            "grace_loss_first_last": (
                f"{res.history['grace_loss'].iloc[0]:.3f}->{res.history['grace_loss'].iloc[-1]:.3f}"
            ),
            "kl_to_text": float(res.history["kl_to_text"].iloc[-1]),
        }
        rows.append(row)
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 40):
        print(table.T.to_string(header=False, float_format=lambda v: f"{v:,.3g}"))
    if args.out:
        with open(args.out, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    big = table.iloc[-1]
    n_full = args.full_concepts
    text_h = n_full / big["text_per_s"] / 3600
    per_node_s = 1.0 / big["grace_nodes_per_s"]
    print(f"\nExtrapolation to {n_full:,.0f} concepts (rates from '{big['vocabulary']}'):")
    print(
        f"  text: {text_h:,.1f} h at {big['text_per_s']:,.0f} concepts/s "
        f"(assumes descriptions of ~{big['mean_chars']:.0f} characters, this CPU, "
        f"{torch.get_num_threads()} thread(s); 384 floats each = "
        f"{n_full * 384 * 4 / 2**30:,.1f} GiB of vectors)"
    )
    f1, f2 = (args.fanout + [1, 1])[:2]
    for deg in args.assume_degree:
        a, b = min(f1, deg), min(f2, deg)
        n_sub = min(n_full, args.batch_size * (1 + a + a * b))
        batches = np.ceil(n_full / args.batch_size)
        epoch_h = batches * n_sub * per_node_s / 3600
        loss_gib = 4 * n_sub**2 * 4 / 2**30
        print(
            f"  GRACE, assumed mean degree {deg:g}: <= {n_sub:,.0f} subgraph nodes per batch, "
            f"{batches:,.0f} batches, ~{epoch_h:,.1f} h per epoch if linear in nodes "
            f"({per_node_s * 1e6:.1f} us/node measured), loss matrices ~{loss_gib:,.1f} GiB "
            f"per batch at least (quadratic: bound the loss to the seeds or sample negatives)"
        )
    print(
        "  assumptions: same CPU and threads; the measured graphs are sparse "
        f"({big['subgraph_nodes_per_batch']:,.0f} subgraph nodes per batch here), so the "
        "measured us/node mixes linear GCN work with a quadratic loss still small at that size: "
        "at 10-100x larger batches the time per node grows; full-graph inference "
        f"holds X (N x 384) and the hidden layer (N x 768): ~{n_full * 1152 * 4 / 2**30:,.0f} GiB."
    )


if __name__ == "__main__":
    main()
