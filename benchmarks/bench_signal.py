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

    .venv/bin/python benchmarks/bench_signal.py              # book-profile sizes, both settings
    .venv/bin/python benchmarks/bench_signal.py --behrt      # also train BEHRT (minutes)
"""

from __future__ import annotations

import argparse
import time

from ehrseq.baselines import FEATURE_BLOCKS, CoxBaseline, bag_of_codes, engineered_features
from ehrseq.data.task import TaskConfig, prepare_survival_task
from ehrseq.evaluate import SurvivalProtocol


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hazards", nargs="+", default=["additive", "interaction"])
    ap.add_argument("--n-patients", type=int, default=TaskConfig().n_patients)
    ap.add_argument("--n-test-patients", type=int, default=TaskConfig().n_test_patients)
    ap.add_argument("--history-days", type=float, default=TaskConfig().history_days)
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--behrt", action="store_true", help="also train a flat BEHRT")
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
            from ehrseq_bench_behrt import behrt_risk  # noqa: F401  (see --behrt)
        harrell = protocol.metrics["Harrell C"]
        c = {m: harrell(d_te, e_te, s) for m, s in curves.items()}
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
        last = {
            "oracle_c": c["oracle"],
            "cox_c": c["Cox, bag of codes"],
            "behrt_c": c.get("BEHRT", float("nan")),
            "test_events": int(e_te.sum()),
        }
    print(
        f"oracle_c={last['oracle_c']:.3f} cox_c={last['cox_c']:.3f} "
        f"behrt_c={last['behrt_c']:.3f} test_events={last['test_events']}"
    )


if __name__ == "__main__":
    main()
