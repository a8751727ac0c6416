r"""Benchmark: cost of the flat BEHRT encoder against the hierarchical model as V and C grow.

A patient of ``V`` visits with ``C`` codes each is ``L = V * C`` tokens. The flat encoder
(:class:`ehrseq.models.BehrtEncoder`, visit-causal mask, every input embedding on, then the
shared :class:`~ehrseq.models.survival_head.VisitHazardHead`, composed by
:class:`~ehrseq.models.survival_model.SurvivalModel`) attends over all ``L`` tokens:
:math:`O((VC)^2)` scores per head and layer. The hierarchical model
(:class:`ehrseq.models.hierarchical.HierarchicalBehrt`) attends within each visit (``C^2``
per visit), pools each visit with a learned query (``C``) and attends across visits
(``V^2``): :math:`O(VC^2 + V^2)`.

What is measured, per model and per (V, C):

- ``s/step``: wall time of one training step -- forward, :func:`ehrseq.losses.hazard_nll` on
  the per-visit hazards, backward (no optimiser step) -- the **fastest** of the timed steps
  (at least ``--iters`` of them, and more until ``--min-time`` seconds are spent, at most 50)
  after ``--warmup`` untimed ones. The minimum is the estimate least disturbed by other jobs
  on a shared machine; the two models are also timed in turns, so a busy machine slows both
  alike. One torch thread by default: on a shared 2-core machine two intra-op threads stall
  each other (measured here: up to 10 times slower at the small sizes, and erratic), which
  hides the scaling; ``--threads 0`` keeps torch's default.
- ``scores``: the number of attention scores one forward pass builds, counted from the shapes
  (``layers * B * H * L^2`` for the flat model; ``code_layers * B * V * H * C^2 + B * V * H * C
  + layers * B * H * V^2`` for the hierarchical one) and ``score MiB`` = 4 bytes each. On CPU
  ``F.scaled_dot_product_attention`` with a mask materialises these scores (and keeps the
  probabilities for backward), so this is the part of the memory that grows fastest; it is a
  count, not a measurement of the process.
- ``peak MiB`` (CUDA only): ``torch.cuda.max_memory_allocated`` during the step minus the
  memory allocated before it: a measured peak of tensors, scores or not (fused attention
  kernels may never hold the full score matrix). CPU has no such counter; the column is
  empty there.

Batches are full (every visit has ``C`` codes, no padding), so ``L = V * C`` exactly. The
last table fits :math:`\log y = a + p \log V + q \log C` by least squares over all sizes, for
the time and for the score count; the expected exponents are ``p = q = 2`` for the flat model
and, for the hierarchical one, ``q <= 2`` and ``1 <= p <= 2`` (a sum of a ``V C^2`` and a
``V^2`` term, so a single power law only summarises the range measured). At these small sizes
the linear layers, ``O(L d^2)``, take much of the time, so time exponents sit below the score
exponents.

Usage: python benchmarks/bench_attention_scaling.py [--visits 8 16 32 64] [--codes 4 8 16]
       [--batch 8] [--d-model 64] [--layers 2] [--code-layers 1] [--iters 3] [--min-time 1.0]
       [--device cuda] [--threads 1] [--out results.csv]
"""

from __future__ import annotations

import argparse
import csv
import time

import numpy as np
import torch
from torch import nn

from ehrseq.losses import hazard_nll
from ehrseq.models.behrt import BehrtConfig, BehrtEncoder
from ehrseq.models.hierarchical import HierarchicalBehrt, HierarchicalConfig
from ehrseq.models.survival_head import VisitHazardHead
from ehrseq.models.survival_model import SurvivalModel

VOCAB, HEADS, D_FF_MULT, DROPOUT = 2000, 4, 4, 0.1


def flat_model(args, max_len: int, max_visits: int) -> SurvivalModel:
    """Flat BEHRT encoder (visit-causal) with the shared per-visit hazard head."""
    cfg = BehrtConfig(
        vocab_size=VOCAB,
        d_model=args.d_model,
        n_layers=args.layers,
        n_heads=HEADS,
        d_ff=D_FF_MULT * args.d_model,
        dropout=DROPOUT,
        max_len=max_len,
        max_visits=max_visits,
        causal=True,
    )
    return SurvivalModel(BehrtEncoder(cfg), VisitHazardHead(args.d_model, dropout=DROPOUT))


def hier_model(args, max_visits: int) -> SurvivalModel:
    """Hierarchical BEHRT (a pure encoder of visit states) with the same per-visit head."""
    cfg = HierarchicalConfig(
        vocab_size=VOCAB,
        d_model=args.d_model,
        n_layers=args.layers,
        n_heads=HEADS,
        d_ff=D_FF_MULT * args.d_model,
        dropout=DROPOUT,
        n_code_layers=args.code_layers,
        max_visits=max_visits,
    )
    return SurvivalModel(HierarchicalBehrt(cfg), VisitHazardHead(args.d_model, dropout=DROPOUT))


def make_batches(B: int, V: int, C: int, device: torch.device, seed: int = 0):
    """The same full patients as a flat batch ``(B, V*C)`` and a hierarchical one ``(B, V, C)``."""
    g = torch.Generator().manual_seed(seed)
    L = V * C
    codes = torch.randint(5, VOCAB, (B, V, C), generator=g)  # (B, V, C)
    domains = torch.randint(1, 8, (B, V, C), generator=g)  # (B, V, C)
    gaps = torch.randint(1, 400, (B, V), generator=g).float()  # (B, V)
    gaps[:, 0] = 0.0
    ages = 40 + 30 * torch.rand(B, 1, generator=g) + gaps.cumsum(1) / 365.25  # (B, V)
    hier = {
        "codes": codes,
        "code_mask": torch.ones(B, V, C, dtype=torch.bool),
        "visit_mask": torch.ones(B, V, dtype=torch.bool),
        "ages": ages,
        "time_deltas": gaps,
        "domain_ids": domains,
    }
    first = torch.zeros(B, V, C)
    first[:, :, 0] = 1.0
    flat = {
        "codes": codes.reshape(B, L),  # (B, V, C) -> (B, L)
        "attention_mask": torch.ones(B, L, dtype=torch.bool),
        "ages": ages[:, :, None].expand(B, V, C).reshape(B, L),  # (B, L)
        "visit_ids": (torch.arange(L) // C + 1).expand(B, L),  # (B, L)
        "positions": torch.arange(L).expand(B, L),  # (B, L)
        "time_deltas": (gaps[:, :, None] * first).reshape(
            B, L
        ),  # (B, L), gap at a visit's first code
        "domain_ids": domains.reshape(B, L),  # (B, L)
    }
    events = torch.randint(0, 2, (B,), generator=g)
    to = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
    return to(flat), to(hier), events.to(device)


def score_count(name: str, args, B: int, V: int, C: int) -> int:
    """Attention scores one forward pass builds (see the module docstring)."""
    if name == "flat":
        return args.layers * B * HEADS * (V * C) ** 2
    return (
        args.code_layers * B * V * HEADS * C**2 + B * V * HEADS * C + args.layers * B * HEADS * V**2
    )


def step(model: nn.Module, batch: dict, events: torch.Tensor) -> None:
    """Forward, hazard NLL of the per-visit hazards (every patient followed to its last visit), backward."""
    model.zero_grad(set_to_none=True)
    out = model(batch)  # flat (B, L) or hierarchical (B, V, C) batch -> (B, V) hazards
    durations = torch.full_like(events, out.logits.shape[1] - 1)
    hazard_nll(out.logits, durations, events, mask=out.mask).backward()


def fit(rows: list[dict], name: str, key: str) -> tuple[float, float]:
    """Least-squares exponents ``(p, q)`` of ``log y = a + p log V + q log C`` for ``name``."""
    sel = [r for r in rows if r["model"] == name]
    X = np.array([[1.0, np.log(r["V"]), np.log(r["C"])] for r in sel])
    y = np.log([float(r[key]) for r in sel])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    return float(coef[1]), float(coef[2])


def slope(xs: list[float], ys: list[float]) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--visits", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--codes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2, help="flat layers = visit-level layers")
    parser.add_argument("--code-layers", type=int, default=1, help="hierarchical: within visits")
    parser.add_argument("--iters", type=int, default=3, help="least timed steps per model/size")
    parser.add_argument("--min-time", type=float, default=1.0, help="least timed s per model/size")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default=None, help="write the table as CSV here")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but torch sees no CUDA device")
    max_v, max_c = max(args.visits), max(args.codes)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    torch.manual_seed(0)
    models = {
        "flat": flat_model(args, max_len=max_v * max_c, max_visits=max_v).to(device).train(),
        "hier": hier_model(args, max_visits=max_v).to(device).train(),
    }
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}; "
        f"batch {args.batch}, d={args.d_model}, heads={HEADS}, layers={args.layers} "
        f"(+{args.code_layers} within visits for hier), iters {args.iters}"
    )
    rows = []
    t_start = time.perf_counter()
    for V in args.visits:
        for C in args.codes:
            flat, hier, events = make_batches(args.batch, V, C, device)
            batches = {"flat": flat, "hier": hier}
            for name, model in models.items():
                for _ in range(args.warmup):
                    step(model, batches[name], events)
            times: dict[str, list[float]] = {n: [] for n in models}
            # in turns, at least --iters steps each and until each model has run --min-time s
            while any(
                len(t) < args.iters or (sum(t) < args.min_time and len(t) < 50)
                for t in times.values()
            ):
                for name, model in models.items():
                    sync()
                    t0 = time.perf_counter()
                    step(model, batches[name], events)
                    sync()
                    times[name].append(time.perf_counter() - t0)
            for name, model in models.items():
                peak = ""
                if cuda:
                    torch.cuda.reset_peak_memory_stats(device)
                    before = torch.cuda.memory_allocated(device)
                    step(model, batches[name], events)
                    sync()
                    peak = (torch.cuda.max_memory_allocated(device) - before) / 2**20
                n_scores = score_count(name, args, args.batch, V, C)
                rows.append(
                    {
                        "model": name,
                        "V": V,
                        "C": C,
                        "L": V * C,
                        "batch": args.batch,
                        "params": sum(p.numel() for p in model.parameters()),
                        "sec_per_step": min(times[name]),
                        "steps_timed": len(times[name]),
                        "attn_scores": n_scores,
                        "attn_score_mib": n_scores * 4 / 2**20,
                        "peak_mib": peak,
                        "device": str(device),
                    }
                )

    header = (
        f"{'V':>4} {'C':>3} {'L':>5}  {'flat s/step':>11} {'hier s/step':>11} {'speed-up':>8}"
        f"  {'flat score MiB':>14} {'hier score MiB':>14}"
        + (f"  {'flat peak MiB':>13} {'hier peak MiB':>13}" if cuda else "")
    )
    print(header)
    print("-" * len(header))
    by = {(r["model"], r["V"], r["C"]): r for r in rows}
    for V in args.visits:
        for C in args.codes:
            f, h = by["flat", V, C], by["hier", V, C]
            line = (
                f"{V:>4} {C:>3} {V * C:>5}  {f['sec_per_step']:>11.4f} {h['sec_per_step']:>11.4f} "
                f"{f['sec_per_step'] / h['sec_per_step']:>7.2f}x"
                f"  {f['attn_score_mib']:>14.2f} {h['attn_score_mib']:>14.3f}"
            )
            if cuda:
                line += f"  {f['peak_mib']:>13.1f} {h['peak_mib']:>13.1f}"
            print(line)

    print("\nlog-log exponents: y ~ V^p C^q, least squares over all sizes")
    keys = [("sec_per_step", "time"), ("attn_scores", "scores")]
    if cuda:
        keys.append(("peak_mib", "peak mem"))
    for name in models:
        parts = []
        for key, label in keys:
            p, q = fit(rows, name, key)
            parts.append(f"{label}: p={p:.2f} q={q:.2f}")
        print(f"  {name:<5} " + "   ".join(parts))
    print("time exponent in V at the largest C, and in C at the largest V")
    for name in models:
        vs = [by[name, V, max_c]["sec_per_step"] for V in args.visits]
        cs = [by[name, max_v, C]["sec_per_step"] for C in args.codes]
        p = slope(args.visits, vs) if len(vs) > 1 else float("nan")
        q = slope(args.codes, cs) if len(cs) > 1 else float("nan")
        print(
            f"  {name:<5} dlog t/dlog V (C={max_c}) = {p:.2f}   dlog t/dlog C (V={max_v}) = {q:.2f}"
        )
    print(f"total {time.perf_counter() - t_start:.1f} s")

    if args.out:
        with open(args.out, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
