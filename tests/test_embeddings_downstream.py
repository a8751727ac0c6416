"""Frozen code embeddings downstream: patient vectors, survival, AUROC, segmentation.

Tiny data: a hand-made history for the patient vectors (against a loop), and the shared
task's generator at 700 + 400 people for the scores, checked against lifelines and
scikit-learn on the same inputs, and a truth-aligned embedding (one direction per
disease group of :mod:`ehrseq.embeddings.truth`) against random and shuffled vectors.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehrseq.data.task import TaskConfig, prepare_survival_task
from ehrseq.embedding_downstream import (
    ari_interval,
    disease_profiles,
    downstream_data,
    downstream_table,
    history_codes,
    patient_vectors,
    pool_profiles,
    score_embedding,
    segment_patients,
)
from ehrseq.embeddings import CodeEmbedding, truth


def _naive_vectors(emb, person, concept, days, persons, tau):
    """One patient at a time, one event at a time."""
    rows = enumerate(emb.concept_ids)
    lookup = {int(c): emb.vectors[i].astype(float) for i, c in rows}
    out, missing, used = [], 0, []
    for p in persons:
        total, acc, n = 0.0, np.zeros(emb.dim), 0
        for q, c, t in zip(person, concept, days):
            if q != p:
                continue
            if int(c) not in lookup:
                missing += 1
                continue
            w = 1.0 if tau is None else float(np.exp(-t / tau))
            acc += w * lookup[int(c)]
            total += w
            n += 1
        out.append(acc / total if total > 0 else acc)
        used.append(n)
    return np.array(out), missing, used


def _history():
    rng = np.random.default_rng(0)
    n = 60
    person = rng.integers(1, 7, n)  # persons 1..6
    concept = rng.choice([10, 11, 12, 13, 99, 98], n)  # 98, 99 are not embedded
    days = rng.uniform(0, 400, n)
    emb = CodeEmbedding(np.array([10, 11, 12, 13]), rng.normal(size=(4, 3)))
    return emb, person, concept, days


@pytest.mark.parametrize("tau", [None, 30.0])
def test_patient_vectors_equal_a_naive_loop_and_count_missing_codes(tau):
    emb, person, concept, days = _history()
    persons = np.array([3, 1, 2, 4, 5, 7])  # 6 is left out, 7 has no event
    pv = patient_vectors(emb, person, concept, days, persons=persons, tau_days=tau)
    want, missing, used = _naive_vectors(emb, person, concept, days, persons, tau)
    np.testing.assert_allclose(pv.vectors, want, rtol=1e-12, atol=1e-12)
    assert pv.person_ids.tolist() == persons.tolist()
    assert pv.n_codes.tolist() == used
    mine = np.isin(person, persons)
    assert pv.n_events == int(mine.sum())
    assert pv.n_missing == missing == int((mine & np.isin(concept, [98, 99])).sum()) > 0
    assert sum(pv.missing_codes.values()) == missing
    assert set(pv.missing_codes) == {98, 99}
    assert pv.n_empty == 1  # person 7
    assert "missing from the embedding" in pv.report()
    if tau is not None:  # the decay changes the answer
        plain = patient_vectors(emb, person, concept, days, persons=persons)
        assert not np.allclose(plain.vectors[:5], pv.vectors[:5])


def test_patient_vectors_refuse_bad_input():
    emb, person, concept, days = _history()
    with pytest.raises(ValueError, match="person ids for"):
        patient_vectors(emb, person[:-1], concept)
    with pytest.raises(ValueError, match="tau_days must be > 0"):
        patient_vectors(emb, person, concept, days, tau_days=0.0)
    with pytest.raises(ValueError, match="needs days_before"):
        patient_vectors(emb, person, concept, tau_days=10.0)
    with pytest.raises(ValueError, match=">= 0"):
        patient_vectors(emb, person, concept, -days, tau_days=10.0)
    with pytest.raises(ValueError, match="persons repeat"):
        patient_vectors(emb, person, concept, persons=[1, 1])


def test_pool_profiles_and_ari_interval():
    profiles = pd.DataFrame(
        {"a": [1, 1, 0, 0, 1, 0], "b": [0, 1, 0, 0, 1, 1]},
        index=np.arange(6),
    )
    labels, kept = pool_profiles(profiles, min_share=0.3)
    assert kept == ["a+b", "none"]
    assert labels.tolist() == ["other", "a+b", "none", "none", "a+b", "other"]
    with pytest.raises(ValueError, match="min_share"):
        pool_profiles(profiles, min_share=1.0)
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    c = np.where(rng.random(200) < 0.7, y, rng.integers(0, 3, 200))
    out = ari_interval(y.astype(str), c, n_boot=100, n_permutations=100)
    assert out["ari"] == pytest.approx(adjusted_rand_score(y, c))
    assert out["ari_lower"] < out["ari"] < out["ari_upper"]
    assert out["ari_null"] < out["ari_lower"]  # 70% agreement is far from chance
    with pytest.raises(ValueError, match="one length"):
        ari_interval(y, c[:-1])
    with pytest.raises(ValueError, match="n_clusters"):
        segment_patients(rng.normal(size=(5, 2)), rng.normal(size=(3, 2)), 6)
    with pytest.raises(ValueError, match="one width"):
        segment_patients(rng.normal(size=(5, 2)), rng.normal(size=(3, 3)), 2)


@pytest.fixture(scope="module")
def task():
    config = TaskConfig(n_patients=700, n_test_patients=400, seed=2)
    return prepare_survival_task(config)


@pytest.fixture(scope="module")
def data(task):
    return downstream_data(task, n_boot=60, seed=0)


def _truth_aligned(task, ids, noise=0.0, seed=0):
    """One direction per disease group (routine care one more): a perfect method."""
    groups = truth.disease_groups(task.cohort).reindex(ids).fillna("routine")
    _, g = np.unique(groups.astype(str), return_inverse=True)
    jitter = np.random.default_rng(seed).normal(size=(len(g), 1))
    x = np.eye(g.max() + 1)[g] + noise * jitter
    return CodeEmbedding(ids, x)


def test_history_and_profiles_are_before_the_prediction_time(task, data):
    h = data.history
    assert (h["days_before"] > 0).all()
    assert set(h["person_id"]) <= set(data.train) | set(data.test)
    with pytest.raises(ValueError, match="not labelled"):
        history_codes(task, np.array([10**9]))
    persons = data.test[:40]
    prof = disease_profiles(task, persons)
    t0 = task.labels.set_index("subject_id")["prediction_time"]
    on = task.cohort.truth.onsets
    for p in persons:  # a loop over the truth
        mine = (on["person_id"] == p) & (on["onset_date"] < t0[p])
        active = set(on.loc[mine, "disease"])
        row = prof.loc[p]
        assert set(row.index[row == 1]) == active - {"heart_failure"}
    assert data.n_clusters >= 2 and data.scored_test.sum() > 50
    # the 1-year label: the outcome by day 365.25; no label if censored earlier
    # without it
    frame = task.frame("test")
    d, e = frame["duration"].to_numpy(), frame["event"].to_numpy()
    y = (e == 1) & (d <= 365.25)
    assert data.y_test.tolist() == y.astype(int).tolist()
    assert data.known_test.tolist() == (y | (d >= 365.25)).tolist()
    assert 0 < y.sum() < e.sum()  # some events come later than a year


def test_scores_equal_lifelines_and_sklearn(data, task):
    from lifelines.utils import concordance_index
    from sklearn.metrics import adjusted_rand_score, roc_auc_score

    ids = np.unique(data.history["concept_id"])
    emb = CodeEmbedding(ids, np.random.default_rng(0).normal(size=(len(ids), 8)))
    out = score_embedding(emb, data, seed=0)
    p = data.protocol
    # lifelines ranks predicted survival (higher = later): survival at the horizon
    c = concordance_index(p.durations, out["surv"][:, -1], p.events)
    assert out["harrell_c"] == pytest.approx(c, abs=1e-12)
    assert out["harrell_c_lower"] < out["harrell_c"] < out["harrell_c_upper"]
    y = data.y_test[data.known_test]
    assert out["auroc_1y"] == pytest.approx(roc_auc_score(y, out["risk_1y"]), abs=1e-12)
    m = data.scored_test
    ari = adjusted_rand_score(data.segments_test[m], out["clusters"][m])
    assert out["ari"] == pytest.approx(ari, abs=1e-12)
    assert out["n_missing"] == 0 and out["n_empty"] == 0


def test_truth_aligned_beats_random(data, task):
    ids = np.unique(data.history["concept_id"])
    embeddings = {}
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        embeddings["truth", seed] = _truth_aligned(task, ids, noise=0.01, seed=seed)
        embeddings["random", seed] = CodeEmbedding(ids, rng.normal(size=(len(ids), 16)))
        shuffled = embeddings["truth", seed].vectors[rng.permutation(len(ids))]
        embeddings["shuffled truth", seed] = CodeEmbedding(ids, shuffled)
    pairs = {"tr": ("truth", "random"), "ts": ("truth", "shuffled truth")}
    res = downstream_table(embeddings, data, pairs)
    runs = res.runs.set_index(["method", "seed"])
    for seed in (0, 1):
        t = runs.loc[("truth", seed)]
        assert t["ari"] > 0.15
        # Harrell's C of the truth clears chance (the tiny test split has too few events
        # within a year for the 1-year AUROC to)
        assert t["harrell_c_lower"] > 0.5
        assert t["auroc_1y_lower"] <= t["auroc_1y"] <= t["auroc_1y_upper"]
        for other in ("random", "shuffled truth"):
            r = runs.loc[(other, seed)]
            # segmentation: the truth finds the disease profiles, other vectors
            # barely do
            assert t["ari_lower"] > r["ari_upper"] and r["ari"] < 0.5 * t["ari"]
            assert r["ari"] < 0.15
    d = res.differences.set_index(["key", "metric"])
    for key in pairs:
        assert d.loc[(key, "ari"), "lower"] > 0
        assert d.loc[(key, "ari"), "verdict"] == "truth higher"
    by_seed = res.seed_differences.set_index(["key", "metric"])
    assert by_seed.loc[("tr", "ari"), "n_seeds"] == 2
    assert by_seed.loc[("tr", "ari"), "difference"] == pytest.approx(
        runs.xs("truth")["ari"].mean() - runs.xs("random")["ari"].mean()
    )
    s = res.summary.set_index(["method", "metric"])
    assert s.loc[("truth", "ari"), "n_seeds"] == 2
    assert set(res.differences["metric"]) == {"harrell_c", "auroc_1y", "ari"}


def test_missing_codes_are_counted_downstream(data):
    ids = np.unique(data.history["concept_id"])
    drop = ids[::3]
    kept = np.setdiff1d(ids, drop)
    emb = CodeEmbedding(kept, np.random.default_rng(0).normal(size=(len(kept), 4)))
    out = score_embedding(emb, data)
    h = data.history
    want = int(h["concept_id"].isin(drop).sum())
    assert out["n_missing"] == want > 0
    assert out["missing_share"] == pytest.approx(want / len(h))


def test_downstream_table_refuses_unknown_methods(data):
    ids = np.unique(data.history["concept_id"])
    emb = CodeEmbedding(ids, np.ones((len(ids), 2)))
    with pytest.raises(ValueError, match="not among"):
        downstream_table({("a", 0): emb, ("a", 1): emb}, data, {"x": ("a", "b")})
    with pytest.raises(ValueError, match="no embeddings"):
        downstream_table({}, data)
