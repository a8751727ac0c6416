"""Benchmark: events -> padded tensors, vectorised (ehrseq) against a per-patient Python loop.

Generates a random cohort in the event contract (default 1,000,000 events, 5,000 patients),
then times the whole path from the event table to padded batches:

    build_sequences (leakage cut at a prediction time, flat strategy, max_len)
    -> Vocab.encode (fitted beforehand on the training patients; the fit is timed apart)
    -> encode (flat arrays + offsets)
    -> padded batches of ``--batch-size`` patients in length-bucketed order.

The loop does the same work one patient and one row at a time (``groupby`` + ``itertuples``,
token strings looked up in a dict, Python lists turned into tensors). It runs on the first
``--loop-patients`` patients and is extrapolated to the whole cohort by events per second
(said so in the output). Before timing, both paths are checked to give identical tensors on
those patients.

Run:  .venv/bin/python benchmarks/bench_tensorize.py [--events 1000000] [--patients 5000]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ehrseq.data.events import DOMAINS, EVENT_COLUMNS, check_events
from ehrseq.data.sequences import NS_PER_DAY, NS_PER_YEAR, build_sequences
from ehrseq.data.tensors import LengthBucketSampler, encode
from ehrseq.data.vocab import PAD_ID, UNK_ID, Vocab

KEYS = ("codes", "ages", "visit_ids", "positions", "time_deltas", "domain_ids", "attention_mask")


def synthetic_events(n_events: int, n_patients: int, seed: int = 0):
    """A random cohort in the event contract, built with whole-array operations."""
    rng = np.random.default_rng(seed)
    per = rng.lognormal(mean=0.0, sigma=0.8, size=n_patients)
    counts = np.maximum(1, np.floor(per / per.sum() * n_events)).astype(np.int64)
    counts[np.argmax(counts)] += n_events - counts.sum()
    pid = np.repeat(np.arange(1, n_patients + 1, dtype=np.int64), counts)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    # visits: a new visit with probability 0.3, 1..60 days after the previous one
    new_visit = rng.random(n_events) < 0.3
    new_visit[starts] = True
    gap_days = np.where(new_visit, rng.integers(1, 60, n_events), 0)
    day = np.cumsum(gap_days)
    day -= np.repeat(day[starts], counts)
    first_day = rng.integers(0, 15 * 365, n_patients)
    t_ns = (
        np.datetime64("2000-01-01", "ns").astype(np.int64)
        + (np.repeat(first_day, counts) + day) * NS_PER_DAY
        + rng.integers(0, 24, n_events) * 3_600 * 10**9 * (rng.random(n_events) < 0.2)
    )
    order = np.lexsort((t_ns, pid))
    t_ns = t_ns[order]
    visit_no = np.cumsum(new_visit)
    dom_p = np.array([0.3, 0.25, 0.1, 0.25, 0.07, 0.03, 0.0])
    dom = rng.choice(len(DOMAINS), size=n_events, p=dom_p / dom_p.sum())
    concept = (rng.zipf(1.3, n_events) % 5_000) + 1_000_000 * (dom + 1)
    is_meas = dom == DOMAINS.index("measurement")
    value = np.where(is_meas, rng.normal(size=n_events) * (concept % 7 + 1), np.nan)
    vid = pd.array(visit_no, dtype="Int64")
    vid[rng.random(n_events) < 0.1] = pd.NA
    events = pd.DataFrame(
        {
            "person_id": pid,
            "time": t_ns.view("datetime64[ns]"),
            "concept_id": concept.astype(np.int64),
            "source_concept_id": np.zeros(n_events, dtype=np.int64),
            "domain": pd.Categorical.from_codes(dom, categories=list(DOMAINS)),
            "value_as_number": value,
            "unit_concept_id": np.zeros(n_events, dtype=np.int64),
            "visit_occurrence_id": vid,
        }
    )
    assert list(events.columns) == list(EVENT_COLUMNS)
    persons = pd.DataFrame(
        {
            "person_id": np.arange(1, n_patients + 1, dtype=np.int64),
            "birth_datetime": (
                np.datetime64("1930-01-01", "ns")
                + rng.integers(0, 60 * 365, n_patients).astype("timedelta64[D]")
            ),
            "gender_concept_id": rng.choice([8507, 8532], n_patients),
        }
    )
    # prediction time: the time of each patient's event at 80% of their history
    at = starts + np.floor(0.8 * (counts - 1)).astype(np.int64)
    pt = pd.DataFrame(
        {"person_id": persons["person_id"], "prediction_time": t_ns[at].view("datetime64[ns]")}
    )
    return check_events(events), persons, pt


# ----------------------------------------------------------------------------- vectorised
def vectorised(events, persons, pt, vocab, max_len, batch_size):
    seqs = build_sequences(events, persons, pt, strategy="flat", max_len=max_len)
    enc = encode(seqs, vocab)
    sampler = LengthBucketSampler(enc.lengths, batch_size, shuffle=False)
    batches = [enc.pad(b) for b in sampler]
    return enc, batches


# ----------------------------------------------------------------------------- the loop
def loop(events, persons, pt, vocab, max_len, batch_size):
    """One patient at a time, one row at a time: what a first attempt usually looks like."""
    birth = {p: b.value for p, b in zip(persons["person_id"], persons["birth_datetime"])}
    cutoff = {p: t.value for p, t in zip(pt["person_id"], pt["prediction_time"])}
    patients = []
    for pid, g in events.groupby("person_id", sort=True):
        if pid not in cutoff:
            continue
        codes, ages, days, times, doms = [], [], [], [], []
        for row in g.itertuples(index=False):
            t = row.time.value
            if t >= cutoff[pid] or t < birth[pid]:
                continue
            tok = vocab.token_of(row.domain, row.concept_id, row.value_as_number)
            if tok not in vocab.stoi and tok.count(":") == 2:
                tok = tok.rsplit(":", 1)[0]
            codes.append(vocab.stoi.get(tok, UNK_ID))
            ages.append((t - birth[pid]) / NS_PER_YEAR)
            days.append(t // NS_PER_DAY)
            times.append(t)
            doms.append(DOMAINS.index(row.domain) + 1)
        if not codes:
            continue
        keep = slice(max(0, len(codes) - max_len), len(codes))
        codes, ages, days, times, doms = (
            codes[keep],
            ages[keep],
            days[keep],
            times[keep],
            doms[keep],
        )
        visits, deltas, v = [], [], 0
        for i in range(len(codes)):
            if i == 0 or days[i] != days[i - 1]:
                v += 1
            visits.append(v)
            deltas.append(0.0 if i == 0 else max(0, times[i] - times[i - 1]) / NS_PER_DAY)
        patients.append((pid, codes, ages, visits, list(range(len(codes))), deltas, doms))
    lengths = np.array([len(p[1]) for p in patients])
    batches = []
    for b in LengthBucketSampler(lengths, batch_size, shuffle=False):
        width = max(len(patients[i][1]) for i in b)
        out = {
            "codes": torch.full((len(b), width), PAD_ID, dtype=torch.long),
            "ages": torch.zeros(len(b), width),
            "visit_ids": torch.zeros(len(b), width, dtype=torch.long),
            "positions": torch.zeros(len(b), width, dtype=torch.long),
            "time_deltas": torch.zeros(len(b), width),
            "domain_ids": torch.zeros(len(b), width, dtype=torch.long),
            "attention_mask": torch.zeros(len(b), width, dtype=torch.bool),
        }
        for r, i in enumerate(b):
            _, codes, ages, visits, pos, deltas, doms = patients[i]
            n = len(codes)
            out["codes"][r, :n] = torch.tensor(codes)
            out["ages"][r, :n] = torch.tensor(np.asarray(ages, dtype=np.float32))
            out["visit_ids"][r, :n] = torch.tensor(visits)
            out["positions"][r, :n] = torch.tensor(pos)
            out["time_deltas"][r, :n] = torch.tensor(np.asarray(deltas, dtype=np.float32))
            out["domain_ids"][r, :n] = torch.tensor(doms)
            out["attention_mask"][r, :n] = True
        batches.append(out)
    return batches


def timed(fn, *args, repeat=1):
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--patients", type=int, default=5_000)
    ap.add_argument("--loop-patients", type=int, default=1000, help="patients the loop runs on")
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")

    t0 = time.perf_counter()
    events, persons, pt = synthetic_events(args.events, args.patients, args.seed)
    print(
        f"generated {len(events):,} events of {args.patients:,} patients in {time.perf_counter() - t0:.2f} s"
    )
    train = persons["person_id"].to_numpy()[: int(0.8 * len(persons))]
    t_fit, vocab = timed(
        lambda: Vocab.fit(
            build_sequences(events, persons, pt, max_len=args.max_len).frame, train, min_frequency=5
        )
    )
    print(f"vocabulary: {vocab}; built in {t_fit:.2f} s (sequences + fit, timed apart)")

    # the two paths agree on the loop's patients
    sub_ids = persons["person_id"].to_numpy()[: args.loop_patients]
    sub = events[events["person_id"].isin(sub_ids)].reset_index(drop=True)
    sub_pt = pt[pt["person_id"].isin(sub_ids)]
    _, vb = vectorised(sub, persons, sub_pt, vocab, args.max_len, args.batch_size)
    lb = loop(sub, persons, sub_pt, vocab, args.max_len, args.batch_size)
    for a, b in zip(vb, lb, strict=True):
        for k in KEYS:
            assert torch.equal(a[k], b[k]), f"loop and vectorised differ on {k}"
    print(f"check: loop and vectorised give identical tensors on {len(sub_ids)} patients")

    # rounds alternate the two paths, so a busy machine slows both alike; each path reports
    # its best round, and the speed-up is the median of the per-round ratios
    scale = len(events) / len(sub)
    vec_times, loop_times = [], []
    for _ in range(args.rounds):
        t, (enc, batches) = timed(
            vectorised, events, persons, pt, vocab, args.max_len, args.batch_size
        )
        vec_times.append(t)
        loop_times.append(
            timed(loop, sub, persons, sub_pt, vocab, args.max_len, args.batch_size)[0]
        )
    ratios = [lt * scale / vt for vt, lt in zip(vec_times, loop_times)]
    t_vec, t_loop_sub = min(vec_times), min(loop_times)
    tracemalloc.start()
    vectorised(events, persons, pt, vocab, args.max_len, args.batch_size)
    _, peak_vec = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    t_visit, _ = timed(
        lambda: encode(
            build_sequences(events, persons, pt, strategy="visit", max_len=args.max_len), vocab
        ),
        repeat=args.rounds,
    )
    loop_eps = len(sub) / t_loop_sub
    t_loop_full = len(events) / loop_eps

    vec_eps = len(events) / t_vec
    n_tokens = int(enc.lengths.sum())
    figures = {
        "events": len(events),
        "patients": args.patients,
        "tokens_out": n_tokens,
        "batches": len(batches),
        "vectorised_s": t_vec,
        "vectorised_events_per_s": vec_eps,
        "vocab_fit_s": t_fit,
        "visit_strategy_s": t_visit,
        "loop_patients": int(len(sub_ids)),
        "loop_events": len(sub),
        "loop_s_on_subset": t_loop_sub,
        "loop_events_per_s": loop_eps,
        "loop_s_extrapolated": t_loop_full,
        "speedup_best_vs_best": t_loop_full / t_vec,
        "speedup_median_of_rounds": float(np.median(ratios)),
        "speedup_rounds": ratios,
        "peak_traced_mb_vectorised": peak_vec / 2**20,
        "peak_rss_mb_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print()
    print(
        f"vectorised : {t_vec:7.2f} s for {len(events):,} events -> {vec_eps:>12,.0f} events/s "
        f"(best of {args.rounds} rounds; {n_tokens:,} tokens in {len(batches)} padded batches)"
    )
    print(
        f"  (visit strategy, sequences + encode only: {t_visit:.2f} s -> "
        f"{len(events) / t_visit:,.0f} events/s)"
    )
    print(
        f"loop       : {t_loop_sub:7.2f} s for {len(sub):,} events ({len(sub_ids)} patients) -> "
        f"{loop_eps:>12,.0f} events/s (best of {args.rounds} rounds)"
    )
    print(
        f"             extrapolated to {len(events):,} events: {t_loop_full:.1f} s "
        "(linear in events; the loop was NOT run on the whole cohort)"
    )
    print(
        f"speed-up   : {figures['speedup_median_of_rounds']:.1f}x (median of the rounds: "
        + ", ".join(f"{r:.1f}x" for r in ratios)
        + f"; best vs best {figures['speedup_best_vs_best']:.1f}x)"
    )
    print(
        f"peak memory: {figures['peak_traced_mb_vectorised']:.0f} MB traced during one vectorised run "
        f"(tracemalloc); process peak RSS {figures['peak_rss_mb_process']:.0f} MB"
    )
    print(
        f"targets    : >= 20x -> {'met' if figures['speedup_median_of_rounds'] >= 20 else 'NOT met'}; "
        f">= 500,000 events/s -> {'met' if vec_eps >= 5e5 else 'NOT met'}"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
