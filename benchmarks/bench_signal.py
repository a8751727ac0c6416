"""How much of the synthetic outcome a model that ignores order can reach, per hazard setting.

For each hazard setting of the generator (``additive``, ``interaction``) this builds the
shared survival task and scores on the same test patients:

- the oracle (the generator's true risk over the horizon: a ceiling);
- a Cox model on a bag of codes (counts of every token, age, sex);
- a feature-engineered Cox model, its blocks added one at a time (counts, recency windows,
  last lab value, lab slope), so each block's gain shows;
- optionally (``--behrt``) a small flat BEHRT trained from scratch with the library.

Harrell's C of the risk within the horizon, with the paired bootstrap interval of each
model's difference to the oracle. The last line reads
``oracle_c=<x> cox_c=<x> behrt_c=<x> test_events=<n>`` for the last setting run.

    .venv/bin/python benchmarks/bench_signal.py              # the book profile's task, both settings
    .venv/bin/python benchmarks/bench_signal.py --behrt      # also train BEHRT (minutes)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ehrseq.baselines import FEATURE_BLOCKS, CoxBaseline, bag_of_codes, engineered_features
from ehrseq.data.task import TaskConfig, prepare_survival_task, shared_task_config
from ehrseq.evaluate import SurvivalProtocol


def behrt_runs(task, args):
    """A small flat BEHRT with a per-bin hazard head, trained from scratch on the task."""
    from ehrseq.models import BehrtConfig, BehrtEncoder, BinHazardHead, SurvivalModel
    from ehrseq.runs import train_seeds
    from ehrseq.survival import life_table_hazards
    from ehrseq.train import TrainConfig

    train = task.frame("train")
    base = life_table_hazards(train["bin"], train["event"], task.config.n_bins)

    def make():
        cfg = BehrtConfig.from_vocab(task.vocab, d_model=64, n_layers=2, n_heads=4, d_ff=128)
        return SurvivalModel(
            BehrtEncoder(cfg), BinHazardHead(64, task.config.n_bins, base_hazards=base)
        )

    config = TrainConfig(epochs=args.epochs, lr=1e-3, patience=3, progress=False)
    return train_seeds(make, task, config, args.seeds, hierarchical=False, batch_size=64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hazards", nargs="+", default=["additive", "interaction"])
    book = shared_task_config("book")  # the book profile's task
    ap.add_argument("--n-patients", type=int, default=book.n_patients)
    ap.add_argument("--n-test-patients", type=int, default=book.n_test_patients)
    ap.add_argument("--history-days", type=float, default=TaskConfig().history_days)
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--behrt", action="store_true", help="also train a flat BEHRT")
    ap.add_argument("--epochs", type=int, default=8, help="BEHRT training epochs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="BEHRT seeds")
    args = ap.parse_args()

    last = {}
    for hazard in args.hazards:
        t = time.perf_counter()
        task = prepare_survival_task(
            TaskConfig(
                n_patients=args.n_patients,
                n_test_patients=args.n_test_patients,
                history_days=args.history_days,
                hazard=hazard,
            )
        )
        train, test = task.frame("train"), task.frame("test")
        d_tr, e_tr = train["duration"].to_numpy(), train["event"].to_numpy()
        d_te, e_te = test["duration"].to_numpy(), test["event"].to_numpy()
        edges = task.cuts[1:]
        print(
            f"\n[{hazard}] task in {time.perf_counter() - t:.0f} s: "
            f"{len(train)} train ({int(e_tr.sum())} events), "
            f"{len(test)} test ({int(e_te.sum())} events)"
        )
        protocol = SurvivalProtocol(d_te, e_te, edges, d_tr, e_tr, n_boot=args.n_boot)
        curves = {"oracle": task.oracle_survival("test")}
        t = time.perf_counter()
        cox = CoxBaseline().fit(bag_of_codes(task, "train"), d_tr, e_tr)
        curves["Cox, bag of codes"] = cox.predict_survival(bag_of_codes(task, "test"), edges)
        print(f"  bag of codes: {cox.n_parameters} features, {time.perf_counter() - t:.0f} s")
        for k in range(1, len(FEATURE_BLOCKS) + 1):
            blocks = FEATURE_BLOCKS[:k]
            t = time.perf_counter()
            x_tr = engineered_features(task, "train", blocks)
            cox = CoxBaseline().fit(x_tr, d_tr, e_tr)
            x_te = engineered_features(task, "test", blocks)
            name = "Cox, engineered: " + " + ".join(blocks)
            curves[name] = cox.predict_survival(x_te, edges)
            print(f"  {name}: {cox.n_parameters} features, {time.perf_counter() - t:.0f} s")
        if args.behrt:
            t = time.perf_counter()
            runs = behrt_runs(task, args)
            curves["BEHRT (from scratch)"] = runs.survs
            print(
                f"  BEHRT: {runs.cost['parameters']:,} parameters, {len(runs.survs)} seeds, "
                f"{runs.cost['s / epoch']:.1f} s/epoch, {time.perf_counter() - t:.0f} s"
            )
        harrell = protocol.metrics["Harrell C"]
        c = {  # a seed mean for models trained with several seeds
            m: float(np.mean([harrell(d_te, e_te, x) for x in (s if isinstance(s, list) else [s])]))
            for m, s in curves.items()
        }
        print(f"  {'model':<58} {'Harrell C':>9}  {'minus oracle [95% CI]':>26}")
        for m, s in curves.items():
            if m == "oracle":
                print(f"  {m:<58} {c[m]:9.3f}")
                continue
            diff = protocol.difference(m, s, "oracle", curves["oracle"])
            print(
                f"  {m:<58} {c[m]:9.3f}  {diff['difference']:+.3f} "
                f"[{diff['lower']:+.3f}, {diff['upper']:+.3f}]"
            )
        print(f"  oracle - Cox bag of codes: {c['oracle'] - c['Cox, bag of codes']:.3f}")
        if args.behrt:
            for base in ("Cox, bag of codes", name):
                diff = protocol.difference(
                    "BEHRT (from scratch)", curves["BEHRT (from scratch)"], base, curves[base]
                )
                print(
                    f"  BEHRT - {base}: {diff['difference']:+.3f} "
                    f"[{diff['lower']:+.3f}, {diff['upper']:+.3f}] ({diff['verdict']})"
                )
        last = {
            "oracle_c": c["oracle"],
            "cox_c": c["Cox, bag of codes"],
            "behrt_c": c.get("BEHRT (from scratch)", float("nan")),
            "test_events": int(e_te.sum()),
        }
    print(
        f"oracle_c={last['oracle_c']:.3f} cox_c={last['cox_c']:.3f} "
        f"behrt_c={last['behrt_c']:.3f} test_events={last['test_events']}"
    )


if __name__ == "__main__":
    main()
