"""Detecting a latent disease from labs: labels against a loop over the truth, patient
means against a loop, the resampled AUROC against the AUROC of resampled arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehrseq.data.synthetic import SyntheticConfig, generate_cohort
from ehrseq.embeddings.base import CodeEmbedding
from ehrseq.embeddings.loinc import DecileBins
from ehrseq.lab_detection import (
    LabTask,
    auroc_resampled,
    detection_table,
    lab_event_vectors,
    lab_events,
    lab_tasks,
    latent_disease_labels,
    patient_means,
)
from ehrseq.metrics import Resamples, auroc


@pytest.fixture(scope="module")
def cohort():
    return generate_cohort(SyntheticConfig(n_patients=300, seed=5))


def test_labels_match_a_loop_over_the_truth(cohort):
    labels, counts = latent_disease_labels(cohort, "hyperlipidemia", years=1.0)
    on = cohort.truth.onsets
    on = on.loc[on["disease"] == "hyperlipidemia"].set_index("person_id")
    want, n_out, n_dx = {}, 0, 0
    for p in cohort.truth.persons.itertuples():
        t = p.enrol_date + pd.Timedelta(days=365)
        if not p.obs_end_date > t:
            n_out += 1
            continue
        onset = on["onset_date"].get(p.person_id, pd.NaT)
        dx = on["diagnosed_date"].get(p.person_id, pd.NaT)
        if pd.notna(dx) and dx <= t:
            n_dx += 1
            continue
        want[p.person_id] = int(pd.notna(onset) and onset <= t)
    assert dict(zip(labels["person_id"], labels["label"])) == want
    assert counts == {"not observed at t": n_out, "diagnosed before t": n_dx}
    assert 0 < labels["label"].sum() < len(labels)


def test_lab_events_stop_at_the_prediction_time(cohort):
    labels, _ = latent_disease_labels(cohort, "type2_diabetes")
    ev = lab_events(cohort, labels)
    t = labels.set_index("person_id")["t"]
    assert (
        pd.to_datetime(ev["measurement_date"]).to_numpy() <= t[ev["person_id"]].to_numpy()
    ).all()
    m = cohort.tables["measurement"]
    m = m.loc[m["person_id"].isin(labels["person_id"])]
    later = pd.to_datetime(m["measurement_date"]).to_numpy() > t[m["person_id"]].to_numpy()
    assert len(ev) == int((~later).sum()) > 0


def test_tasks_split_and_refuse_overlap(cohort):
    ids = cohort.truth.persons["person_id"].to_numpy()
    tasks = lab_tasks(cohort, ids[::2], ids[1::2], diseases=["hyperlipidemia"])
    task = tasks["hyperlipidemia"]
    assert set(task.train["person_id"]) <= set(ids[::2])
    assert set(task.test["person_id"]) <= set(ids[1::2])
    assert set(task.train["person_id"]) | set(task.test["person_id"]) <= set(
        task.events["person_id"]
    )
    assert "hyperlipidemia: train" in task.report()
    with pytest.raises(ValueError, match="in both splits"):
        lab_tasks(cohort, ids[:10], ids[5:20])
    with pytest.raises(ValueError, match="unknown disease 'gout'"):
        latent_disease_labels(cohort, "gout")
    with pytest.raises(ValueError, match="years must be > 0"):
        latent_disease_labels(cohort, "hyperlipidemia", years=0)


def test_patient_means_match_a_loop():
    rng = np.random.default_rng(0)
    events = pd.DataFrame({"person_id": rng.integers(0, 5, 40)})
    v = rng.normal(size=(40, 3))
    v[[2, 7]] = np.nan  # events without a vector
    persons = np.array([4, 0, 9, 2, 1, 3])  # 9 has no event
    got = patient_means(events, v, persons)
    for row, p in zip(got, persons):
        mine = [v[i] for i in range(40) if events["person_id"][i] == p and np.isfinite(v[i]).all()]
        assert np.allclose(row, np.mean(mine, 0) if mine else 0.0)
    with pytest.raises(ValueError, match=r"vectors must be \(40, d\)"):
        patient_means(events, v[:5], persons)


def test_event_vectors_of_codes_and_decile_tokens():
    bins = DecileBins.fit([7] * 10 + [8] * 10, np.r_[np.arange(10.0), np.arange(10.0)], n_bins=2)
    ids = np.array([7, 8, 700, 701, 800])  # two labs, decile tokens of 7, one of 8
    emb = CodeEmbedding(ids, np.arange(10.0).reshape(5, 2))
    cid = np.array([7, 7, 8, 9, 8])
    val = np.array([1.0, 8.0, np.nan, 3.0, 2.0])
    plain = lab_event_vectors(emb, cid, val)
    assert np.array_equal(plain[:3], emb.vectors[[0, 0, 1]]) and np.isnan(plain[3]).all()
    dec = lab_event_vectors(emb, cid, val, bins)
    # 7 at 1.0 -> bin 0 (700), at 8.0 -> bin 1 (701); 8 without a value keeps its code
    assert np.array_equal(dec[[0, 1, 2, 4]], emb.vectors[[2, 3, 1, 4]])
    with pytest.raises(ValueError, match="differ in length"):
        lab_event_vectors(emb, cid, val[:2])


def test_resampled_auroc_equals_auroc_of_resampled_arrays():
    rng = np.random.default_rng(1)
    n = 60
    y = (rng.random(n) < 0.3).astype(int)
    s = np.round(rng.normal(size=(n, 3)) + y[:, None], 1)  # rounded: many ties
    idx = rng.integers(0, n, size=(25, n))
    idx[0] = np.flatnonzero(y == 0)[0]  # one resample of a single class
    got = auroc_resampled(y, s, Resamples.of(idx).counts)
    assert np.isnan(got[0]).all()
    for b in range(1, 25):
        for k in range(3):
            assert got[b, k] == pytest.approx(auroc(y[idx[b]], s[idx[b], k]), abs=1e-12)
    with pytest.raises(ValueError, match="labels must be 0/1"):
        auroc_resampled(y * 2, s, idx)


def test_fast_and_slow_tables_agree():
    rng = np.random.default_rng(2)
    n = 80
    y = (rng.random(n) < 0.4).astype(int)
    test = pd.DataFrame({"person_id": np.arange(n), "label": y})
    task = LabTask("d", test.iloc[:0], test, pd.DataFrame(), {})
    strong = y[:, None] * 1.5 + rng.normal(size=(n, 2))
    weak = rng.normal(size=(n, 2))
    scores = {("d", "a"): strong, ("d", "b"): weak}
    pairs = {"ab": ("a", "b")}
    fast = detection_table({"d": task}, scores, pairs, n_boot=60, seed=3)
    slow = detection_table({"d": task}, scores, pairs, n_boot=60, seed=3, fast=False)
    for f, s in zip(fast, slow):
        num = f.select_dtypes("number").columns
        assert np.allclose(f[num], s[num], atol=1e-12)
    assert fast[1]["verdict"].iloc[0] == "a higher"  # a strong signal against noise
    with pytest.raises(ValueError, match=r"no scores of \['c'\]"):
        detection_table({"d": task}, scores, {"ac": ("a", "c")}, n_boot=10)
