"""Benchmark: detect a latent, undiagnosed disease from labs with three lab embeddings.

On a synthetic cohort (4,000 patients, seed 0) the generator knows when each chronic
disease began (its latent onset) and when it was first recorded. At a prediction time
one year after enrolment, a patient still observed with at least one lab before it is

- a case when the disease began on or before that time and was not yet diagnosed;
- a control when it had not begun;
- left out (counted) when it was already diagnosed.

Three diseases whose labs the generator shifts: type 2 diabetes (HbA1c, glucose),
hyperlipidemia (LDL, total cholesterol), chronic kidney disease (creatinine, eGFR,
haemoglobin, potassium). Patients are split in half (train / test) once; the embeddings
are trained on 1,200 of the training half's whole records (codes of the four clinical
tables; no test patient is seen), once per seed, and serve all three diseases.

A patient's vector is the mean of the vectors of its lab events up to the prediction
time, from one of:

(a) ``lab code``: the plain skip-gram vector of each lab's concept (value-blind);
(b) ``decile tokens``: the skip-gram vector of the token ``"<lab> (decile k)"``, bins
    fitted per lab on the training patients' values;
(c) ``LOINC + value``: the mean of the lab's six LOINC part vectors plus a value encoder
    of its robust z-score (:mod:`ehrseq.embeddings.loinc`);
(c0) ``LOINC, no value``: (c) without the value encoder (``value_aware=False``), the
    paired control of (c): the same model and training, blind to the value.

(a) and (b) use :func:`~ehrseq.embeddings.skipgram.train_skipgram`, (c) and (c0)
:func:`~ehrseq.embeddings.loinc.train_loinc_embedding`, all with d = 32, a window of 10,
tau = 30 days, 3 epochs. A logistic regression (standardised features) fitted on the
training patients scores the test patients. Seeds 0, 1, 2 train the embeddings; the
AUROC is the mean over seeds, with a 95 % percentile bootstrap interval over test
patients (the same resamples for every method), and the paired differences get the same
interval and a verdict: a winner only when the interval excludes zero, "not resolved"
otherwise. Prints the tables and the wall time (3 to 4 minutes on one loaded core).

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_loinc_labs.py
      [--n-patients 4000] [--embed-patients 1200] [--diseases D ...] [--seeds 3]
      [--n-boot 1000]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from ehrseq.data.synthetic import SyntheticConfig, generate_cohort
from ehrseq.embeddings.corpus import CodeCorpus
from ehrseq.embeddings.loinc import (
    DecileBins,
    LoincConfig,
    ValueCorpus,
    decile_corpus,
    load_loinc_parts,
    train_loinc_embedding,
)
from ehrseq.embeddings.skipgram import SkipGramConfig, train_skipgram
from ehrseq.metrics import auroc, bootstrap_ci
from ehrseq.numbers import interval

METHODS = ("lab code", "decile tokens", "LOINC, no value", "LOINC + value")
PAIRS = (
    ("LOINC + value", "LOINC, no value"),
    ("LOINC + value", "lab code"),
    ("decile tokens", "lab code"),
    ("LOINC + value", "decile tokens"),
)
_NS_PER_DAY = 86_400 * 10**9


def task_labels(cohort, disease: str, years: float = 1.0) -> tuple[pd.DataFrame, dict]:
    """Cases (latent, undiagnosed at the prediction time) and controls, with counts."""
    persons = cohort.truth.persons
    t = persons["enrol_date"] + pd.to_timedelta(round(365.25 * years), unit="D")
    frame = pd.DataFrame({"person_id": persons["person_id"], "t": t})
    observed = persons["obs_end_date"] > t
    on = cohort.truth.onsets
    on = on.loc[on["disease"] == disease, ["person_id", "onset_date", "diagnosed_date"]]
    frame = frame.merge(on, on="person_id", how="left")
    began = frame["onset_date"] <= frame["t"]
    diagnosed = frame["diagnosed_date"] <= frame["t"]
    frame["label"] = (began & ~diagnosed).astype(int)
    keep = observed.to_numpy() & ~diagnosed.to_numpy()
    counts = {
        "not observed at t": int((~observed).sum()),
        "diagnosed before t": int((observed.to_numpy() & diagnosed.to_numpy()).sum()),
    }
    return frame.loc[keep, ["person_id", "t", "label"]].reset_index(drop=True), counts


def lab_events(cohort, labels: pd.DataFrame) -> pd.DataFrame:
    """Every lab event of the labelled persons on or before their prediction time."""
    m = cohort.tables["measurement"]
    m = m[["person_id", "measurement_concept_id", "measurement_date", "value_as_number"]]
    m = m.merge(labels[["person_id", "t"]], on="person_id")
    m = m.loc[pd.to_datetime(m["measurement_date"]) <= m["t"]]
    return m.rename(columns={"measurement_concept_id": "concept_id", "value_as_number": "value"})


def patient_means(events: pd.DataFrame, vectors: np.ndarray, persons: np.ndarray) -> np.ndarray:
    """Mean event vector of each person (persons without a usable event: zeros)."""
    ok = np.isfinite(vectors).all(1)
    frame = pd.DataFrame(vectors[ok]).assign(person_id=events["person_id"].to_numpy()[ok])
    means = frame.groupby("person_id").mean()
    return means.reindex(persons).fillna(0.0).to_numpy()


def score(x_train, y_train, x_test) -> np.ndarray:
    scaler = StandardScaler().fit(x_train)
    model = LogisticRegression(C=1.0, max_iter=2000)
    model.fit(scaler.transform(x_train), y_train)
    return model.predict_proba(scaler.transform(x_test))[:, 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-patients", type=int, default=4000)
    parser.add_argument("--embed-patients", type=int, default=1200)
    parser.add_argument(
        "--diseases",
        nargs="+",
        default=["type2_diabetes", "hyperlipidemia", "chronic_kidney_disease"],
    )
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    t_start = time.perf_counter()

    cohort = generate_cohort(SyntheticConfig(n_patients=args.n_patients, seed=0))
    parts = load_loinc_parts(vocabulary=cohort.vocabulary)
    persons = cohort.truth.persons["person_id"].to_numpy()
    rng = np.random.default_rng(0)
    is_test = rng.random(len(persons)) < 0.5
    test_all, train_all = persons[is_test], persons[~is_test]
    embed_p = rng.choice(train_all, size=min(args.embed_patients, len(train_all)), replace=False)
    tasks = {}
    for disease in args.diseases:
        labels, dropped = task_labels(cohort, disease)
        events = lab_events(cohort, labels)
        has_lab = labels["person_id"].isin(events["person_id"])
        dropped["no lab before t"] = int((~has_lab).sum())
        labels = labels.loc[has_lab].reset_index(drop=True)
        test = labels["person_id"].isin(test_all).to_numpy()
        tasks[disease] = (labels.loc[~test], labels.loc[test], events)
        print(
            f"{disease}: train {(~test).sum():,} "
            f"({int(labels.loc[~test, 'label'].sum())} cases), test {test.sum():,} "
            f"({int(labels.loc[test, 'label'].sum())} cases) "
            "latent and undiagnosed at 1 year; left out: "
            + ", ".join(f"{k} {v:,}" for k, v in dropped.items())
        )

    vc = ValueCorpus.from_omop_tables(cohort.tables, persons=embed_p)
    finite = np.isfinite(vc.value)
    labs = np.unique(vc.concept_id[finite])
    bins = DecileBins.fit(vc.concept_id[finite], vc.value[finite])
    dc = decile_corpus(vc, bins)
    plain = CodeCorpus.from_arrays(vc.corpus.person, vc.corpus.days, vc.concept_id)
    print(
        f"embeddings: {len(embed_p):,} training patients, "
        f"{vc.corpus.n_tokens:,} events, "
        f"{len(labs)} labs; decile tokens {dc.n_decile:,}, lab events without a bin "
        f"{dc.n_unbinned:,}; {parts.report()}"
    )

    def vectors(method: str, seed: int, events: pd.DataFrame) -> np.ndarray:
        cid = events["concept_id"].to_numpy(np.int64)
        val = events["value"].to_numpy(np.float64)
        if method.startswith("LOINC"):
            return models[method].event_vectors(cid, val)
        emb = models[method]
        if method == "decile tokens":
            tok = bins.tokens(cid, val)
            cid = np.where(tok > 0, tok, cid)
        rows = emb.rows(cid)
        out = np.full((len(rows), emb.dim), np.nan)
        out[rows >= 0] = emb.vectors[rows[rows >= 0]]
        return out

    scores = {
        (d, m): np.zeros(((tasks[d][1]).shape[0], args.seeds)) for d in tasks for m in METHODS
    }
    per_seed: dict = {key: [] for key in scores}
    for seed in range(args.seeds):
        sg = SkipGramConfig(dim=32, window=10, tau=30.0, epochs=3, seed=seed, progress=False)
        t0 = time.perf_counter()
        models = {
            "lab code": train_skipgram(plain, sg).embedding,
            "decile tokens": train_skipgram(dc.corpus, sg).embedding,
        }
        t1 = time.perf_counter()
        cfg = LoincConfig(dim=32, window=10, tau=30.0, epochs=3, seed=seed)
        models["LOINC + value"] = train_loinc_embedding(vc, parts, cfg, lab_ids=labs)
        t2 = time.perf_counter()
        blind = dataclasses.replace(cfg, value_aware=False)
        models["LOINC, no value"] = train_loinc_embedding(vc, parts, blind, lab_ids=labs)
        print(f"  seed {seed}: two skip-grams {t1 - t0:.1f} s, LOINC + value {t2 - t1:.1f} s")
        for disease, (train, test, events) in tasks.items():
            for method in METHODS:
                v = vectors(method, seed, events)
                x_tr = patient_means(events, v, train["person_id"].to_numpy())
                x_te = patient_means(events, v, test["person_id"].to_numpy())
                s = score(x_tr, train["label"].to_numpy(), x_te)
                scores[disease, method][:, seed] = s
                per_seed[disease, method].append(auroc(test["label"].to_numpy(), s))

    def mean_auc(y, col):
        return float(np.mean([auroc(y, col[:, k]) for k in range(col.shape[1])]))

    for disease, (_, test, _) in tasks.items():
        y = test["label"].to_numpy()
        rows = []
        for m in METHODS:
            ci = bootstrap_ci(mean_auc, y, scores[disease, m], n_boot=args.n_boot, seed=1)
            rows.append(
                {
                    "method": m,
                    "AUROC, mean of seeds [95% CI]": interval(ci.estimate, ci.lower, ci.upper),
                    "by seed": ", ".join(f"{a:.3f}" for a in per_seed[disease, m]),
                }
            )
        print(f"\n{disease} (test: {len(y):,} patients, {int(y.sum())} cases)")
        print(pd.DataFrame(rows).to_string(index=False))
        for a, b in PAIRS:
            ci = bootstrap_ci(
                lambda y, sa, sb: mean_auc(y, sa) - mean_auc(y, sb),
                y,
                scores[disease, a],
                scores[disease, b],
                n_boot=args.n_boot,
                seed=1,
            )
            if ci.lower > 0:
                verdict = f"{a} better"
            elif ci.upper < 0:
                verdict = f"{b} better"
            else:
                verdict = "not resolved"
            print(f"  {a} - {b}: {interval(ci.estimate, ci.lower, ci.upper, '+.3f')}  {verdict}")
    print(f"\nwall time {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
