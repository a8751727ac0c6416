"""Benchmark: visits per second of MiME and GCT (forward + backward) against a flat GRU.

The models read the same patients of the synthetic cohort, batch by batch, and run one
training step each (forward, BCE on a random binary label, backward, Adam step):

- ``mime``: :class:`ehrseq.models.mime.MiME` on the padded object batch of
  :func:`ehrseq.data.visit_objects.pad_visit_objects` (true links, MiME's limits), with the
  auxiliary losses on (``aux_lambda=0.1``) and off (``mime-noaux``);
- ``flat-gru``: :class:`ehrseq.models.flat_visit.FlatVisitGRU`, the baseline chapter 13
  compares MiME with: the same object batch read as the set of each visit's codes, the same
  widths and GRU;
- ``gct``: :class:`ehrseq.models.gct.GCT` over the same persons' visit graphs
  (:func:`ehrseq.data.visit_objects.pad_visit_graphs` of the co-occurrence objects, links
  unknown, no lab nodes), its visit vectors through a GRU and a one-bin hazard head
  (:class:`ehrseq.models.gct.GCTSurvival`), as chapter 13 trains it; the prior is counted
  on every benchmark person (it is not being evaluated here).

Models are timed in turns (round-robin, ``--rounds`` x every batch), so a machine shared with
other jobs slows all of them alike; the median round is reported. Visits per second count real
visits. The last lines print the ratios to ``flat-gru`` (below 1: slower than the flat GRU).

Usage: python benchmarks/bench_mime.py [--patients 400] [--batch 32] [--rounds 3]
       [--d 64] [--gct-layers 2] [--device cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from ehrseq.data.synthetic import SyntheticConfig, generate_cohort
from ehrseq.data.visit_objects import (
    LINK_COLUMN,
    ObjectVocab,
    pad_visit_graphs,
    pad_visit_objects,
    visit_objects,
)
from ehrseq.models.flat_visit import FlatVisitConfig, FlatVisitGRU
from ehrseq.models.gct import GCT, ConditionalPrior, GCTConfig, GCTSurvival
from ehrseq.models.mime import MiME, MiMEConfig
from ehrseq.models.survival_head import BinHazardHead


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=400)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--gct-layers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    cohort = generate_cohort(SyntheticConfig(n_patients=args.patients, seed=0))
    vo = visit_objects(cohort.tables, links="true")
    plain = {k: t.drop(columns=[LINK_COLUMN], errors="ignore") for k, t in cohort.tables.items()}
    vv = visit_objects(plain, links="visit")
    vocab, vocab_v = ObjectVocab.fit(vo), ObjectVocab.fit(vv)
    ids = vo.person_ids()
    prior = ConditionalPrior.fit(vv, vocab_v, ids)
    rng = np.random.default_rng(0)
    batches = []
    for i in range(0, len(ids) - args.batch + 1, args.batch):
        chunk = ids[i : i + args.batch]
        mb, _ = pad_visit_objects(vo, vocab, chunk)
        gb, _ = pad_visit_graphs(vv, vocab_v, chunk)
        assert len(gb["person_ids"]) == int(mb["visit_mask"].sum())  # the same visits
        y = torch.from_numpy(rng.integers(0, 2, len(chunk)).astype(np.float32))
        to = {k: v.to(device) for k, v in mb.items() if isinstance(v, torch.Tensor)}
        tg = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in gb.items()}
        batches.append((to, tg, y.to(device)))
    n_visits = sum(int(b[0]["visit_mask"].sum()) for b in batches)
    shapes = batches[0][0]["rx_codes"].shape
    print(
        f"{len(batches)} batches of {args.batch} patients, {n_visits} real visits, "
        f"first batch rx_codes {tuple(shapes)}, device {device}, "
        f"threads {args.threads}"
    )

    torch.manual_seed(0)
    d = args.d
    sizes = dict(d_embed=d, d_object=d, d_hidden=d)
    gct = GCT(GCTConfig.from_vocab(vocab_v, d_model=d, n_layers=args.gct_layers, n_lab=0), prior)
    models = {
        "mime": MiME(MiMEConfig.from_vocab(vocab, aux_lambda=0.1, **sizes)),
        "mime-noaux": MiME(MiMEConfig.from_vocab(vocab, aux_lambda=0.0, **sizes)),
        "flat-gru": FlatVisitGRU(FlatVisitConfig.from_vocab(vocab, **sizes)),
        "gct": GCTSurvival(gct, BinHazardHead(d, n_bins=1)),
    }

    def step(name, model, opt, mb, gb, y):
        if name == "gct":
            hz, kl = model.hazards_and_kl(gb)  # persons in the batch's order
            bce = F.binary_cross_entropy_with_logits(hz.logits[:, 0], y)
            loss = bce + model.gct.cfg.kl_weight * kl
        else:
            loss = model.loss(mb, y)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    opts = {n: torch.optim.Adam(m.to(device).parameters(), lr=1e-3) for n, m in models.items()}
    for name, model in models.items():  # warm-up
        step(name, model, opts[name], *batches[0])
    times: dict[str, list[float]] = {n: [] for n in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for mb, gb, y in batches:
                step(name, model, opts[name], mb, gb, y)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    rate = {n: n_visits / statistics.median(t) for n, t in times.items()}
    print(f"{'model':<12} {'visits/s':>10} {'median s':>9}")
    for n in models:
        print(f"{n:<12} {rate[n]:>10.0f} {statistics.median(times[n]):>9.3f}")
    for n in ("mime", "mime-noaux", "gct"):
        print(f"ratio {n} / flat-gru (visits/s): {rate[n] / rate['flat-gru']:.2f}")


if __name__ == "__main__":
    main()
