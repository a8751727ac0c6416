"""Benchmark: visits per second of MiME (forward + backward) against a flat GRU over visits.

Both models read the same patients of the synthetic cohort, batch by batch, and run one
training step each (forward, BCE on a random binary label, backward, Adam step):

- ``mime``: :class:`ehrseq.models.mime.MiME` on the padded object batch of
  :func:`ehrseq.data.visit_objects.pad_visit_objects` (true links, MiME's limits), with the
  auxiliary losses on (``aux_lambda=0.1``) and off;
- ``flat-gru``: the flat baseline MiME is compared with: each visit is the sum of the
  embeddings of its distinct codes (diagnoses, drugs, procedures in one vocabulary), a GRU
  over visits, a linear head on the last real visit. Same widths and GRU.

Models are timed in turns (round-robin, ``--rounds`` x every batch), so a machine shared with
other jobs slows all of them alike; the median round is reported. Visits per second count real
visits. The last line prints the ratio ``mime / flat-gru`` (below 1: MiME is slower).

Usage: python benchmarks/bench_mime.py [--patients 400] [--batch 32] [--rounds 3]
       [--links true|visit] [--device cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ehrseq.data.synthetic import SyntheticConfig, generate_cohort
from ehrseq.data.visit_objects import ObjectVocab, pad_visit_objects, visit_objects
from ehrseq.models.mime import MiME, MiMEConfig
from ehrseq.models.survival_head import last_visit_index

D = 64


class FlatVisitGRU(nn.Module):
    """Sum of code embeddings per visit -> GRU -> logit at the last real visit."""

    def __init__(self, n_codes: int, d: int = D):
        super().__init__()
        self.emb = nn.Embedding(n_codes, d, padding_idx=0)
        self.gru = nn.GRU(d, d, batch_first=True)
        self.out = nn.Linear(d, 1)

    def forward(self, batch: dict) -> torch.Tensor:
        x = (self.emb(batch["codes"]) * batch["code_mask"][..., None]).sum(2)  # (B, V, d)
        vm = batch["visit_mask"]
        packed = pack_padded_sequence(x, vm.sum(1).cpu(), batch_first=True, enforce_sorted=False)
        h, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=vm.shape[1])
        rows = torch.arange(h.shape[0], device=h.device)
        return self.out(h[rows, last_visit_index(vm)]).squeeze(-1)  # (B,)


def flat_batch(vo, vocab: ObjectVocab, person_ids: np.ndarray) -> dict[str, torch.Tensor]:
    """The distinct codes of every visit, one vocabulary: dx, then drugs, then procedures."""
    n_dx, n_rx, _ = vocab.sizes
    sub = vo.subset(person_ids)
    obj = sub.objects
    parts = [obj[["person_id", "visit_occurrence_id"]].assign(code=vocab.encode("dx", obj["dx"]))]
    lk = sub.links.merge(obj[["object_id", "person_id", "visit_occurrence_id"]], on="object_id")
    for kind, offset in (("drug", n_dx), ("procedure", n_dx + n_rx)):
        k = lk[lk["kind"] == kind]
        parts.append(
            k[["person_id", "visit_occurrence_id"]].assign(
                code=vocab.encode(kind, k["concept_id"]) + offset
            )
        )
    codes = pd.concat(parts).drop_duplicates()
    order = obj.drop_duplicates(["person_id", "visit_occurrence_id"])[
        ["person_id", "visit_occurrence_id"]
    ]
    order["slot"] = order.groupby("person_id").cumcount()
    order["row"] = (
        pd.Series(np.arange(len(person_ids)), index=person_ids)
        .loc[order["person_id"].to_numpy()]
        .to_numpy()
    )
    codes = codes.merge(order, on=["person_id", "visit_occurrence_id"])
    codes["c"] = codes.groupby(["person_id", "visit_occurrence_id"]).cumcount()
    B, V, C = len(person_ids), int(order["slot"].max()) + 1, int(codes["c"].max()) + 1
    arr = np.zeros((B, V, C), np.int64)
    arr[codes["row"], codes["slot"], codes["c"]] = codes["code"]
    vm = np.zeros((B, V), bool)
    vm[order["row"], order["slot"]] = True
    t = torch.from_numpy(arr)
    return {"codes": t, "code_mask": t > 0, "visit_mask": torch.from_numpy(vm)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=400)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--links", choices=("true", "visit"), default="true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    cohort = generate_cohort(SyntheticConfig(n_patients=args.patients, seed=0))
    tables = cohort.tables if args.links == "true" else cohort.omop_tables()
    vo = visit_objects(tables, links=args.links)
    vocab = ObjectVocab.fit(vo)
    ids = vo.person_ids()
    rng = np.random.default_rng(0)
    batches = []
    for i in range(0, len(ids) - args.batch + 1, args.batch):
        chunk = ids[i : i + args.batch]
        mb, _ = pad_visit_objects(vo, vocab, chunk)
        fb = flat_batch(vo, vocab, chunk)
        assert torch.equal(fb["visit_mask"], mb["visit_mask"])  # the same visits
        y = torch.from_numpy(rng.integers(0, 2, len(chunk)).astype(np.float32))
        to = {k: v.to(device) for k, v in mb.items() if isinstance(v, torch.Tensor)}
        batches.append((to, {k: v.to(device) for k, v in fb.items()}, y.to(device)))
    n_visits = sum(int(b[0]["visit_mask"].sum()) for b in batches)
    shapes = batches[0][0]["rx_codes"].shape
    print(
        f"{len(batches)} batches of {args.batch} patients, {n_visits} real visits, "
        f"links={args.links}, first batch rx_codes {tuple(shapes)}, device {device}, "
        f"threads {args.threads}"
    )

    torch.manual_seed(0)
    sizes = dict(d_embed=D, d_object=D, d_hidden=D)
    models = {
        "mime": MiME(MiMEConfig.from_vocab(vocab, aux_lambda=0.1, **sizes)),
        "mime-noaux": MiME(MiMEConfig.from_vocab(vocab, aux_lambda=0.0, **sizes)),
        "flat-gru": FlatVisitGRU(sum(vocab.sizes)),
    }

    def step(name, model, opt, mb, fb, y):
        if name.startswith("mime"):
            loss = model.loss(mb, y)["loss"]
        else:
            loss = F.binary_cross_entropy_with_logits(model(fb), y)
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
            for mb, fb, y in batches:
                step(name, model, opts[name], mb, fb, y)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    rate = {n: n_visits / statistics.median(t) for n, t in times.items()}
    print(f"{'model':<12} {'visits/s':>10} {'median s':>9}")
    for n in models:
        print(f"{n:<12} {rate[n]:>10.0f} {statistics.median(times[n]):>9.3f}")
    print(f"ratio mime / flat-gru (visits/s): {rate['mime'] / rate['flat-gru']:.2f}")
    print(f"ratio mime-noaux / flat-gru (visits/s): {rate['mime-noaux'] / rate['flat-gru']:.2f}")


if __name__ == "__main__":
    main()
