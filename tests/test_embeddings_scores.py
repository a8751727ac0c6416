"""Scores on embeddings whose answer is known: perfect clusters score 1, random ones chance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehrseq.data.synthetic import CHRONIC, LAB_EFFECTS
from ehrseq.embeddings import CodeEmbedding, truth
from ehrseq.embeddings.base import lookup_rows
from ehrseq.embeddings.scores import (
    ancestor_similarity,
    evaluate_embedding,
    nearest_neighbour_accuracy,
    nearest_neighbour_chance,
    ontology_correlation,
    relatedness_power,
    shared_codes,
    silhouette,
)


def _clusters(n_groups=6, per=8, dim=16, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_groups, dim)) * 5
    y = np.repeat(np.arange(n_groups), per)
    x = centres[y] + noise * rng.normal(size=(len(y), dim))
    ids = np.arange(100, 100 + len(y))
    labels = pd.Series([f"g{g}" for g in y], index=ids)
    return CodeEmbedding(ids, x), labels


def test_lookup_rows_matches_a_dictionary():
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 40):
        ids = rng.choice(100, size=n, replace=False) - 30  # unsorted, some negative
        query = rng.integers(-40, 80, size=(5, 6))
        first = {int(c): i for i, c in enumerate(ids)}
        naive = [first.get(int(q), -1) for q in query.reshape(-1)]
        got = lookup_rows(ids, query)
        assert got.dtype == np.int64 and got.tolist() == naive
    assert lookup_rows([5, 5, 2], [5]).tolist() == [0]  # a repeat: the first row


def test_code_embedding_validates():
    emb = CodeEmbedding(np.array([3, 1, 2]), np.eye(3), names=["a", "b", "c"])
    assert emb.dim == 3 and len(emb) == 3
    assert emb.rows([2, 9, 3]).tolist() == [2, -1, 0]
    assert emb.subset([2, 3]).names == ("c", "a")
    with pytest.raises(ValueError, match="not writeable|read-only"):
        emb.vectors[0, 0] = 5.0
    with pytest.raises(ValueError, match="repeat"):
        CodeEmbedding(np.array([1, 1]), np.ones((2, 2)))
    with pytest.raises(ValueError, match="rows"):
        CodeEmbedding(np.array([1, 2]), np.ones((3, 2)))
    with pytest.raises(ValueError, match="2-D"):
        CodeEmbedding(np.array([1, 2]), np.ones(2))
    with pytest.raises(ValueError, match="not finite"):
        CodeEmbedding(np.array([1, 2]), np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="integers"):
        CodeEmbedding(np.array([1.5, 2.0]), np.ones((2, 2)))
    with pytest.raises(ValueError, match="names"):
        CodeEmbedding(np.array([1, 2]), np.ones((2, 2)), names=["a"])
    with pytest.raises(ValueError, match="not in the embedding"):
        emb.subset([7])


def test_nearest_neighbour_accuracy_perfect_and_random():
    emb, labels = _clusters(noise=0.1)
    assert nearest_neighbour_accuracy(emb, labels) == 1.0
    assert nearest_neighbour_accuracy(emb, labels, k=5) == 1.0
    chance = nearest_neighbour_chance(emb, labels)
    assert chance == pytest.approx(7 / 47)
    rng = np.random.default_rng(1)
    scores = [
        nearest_neighbour_accuracy(
            CodeEmbedding(emb.concept_ids, rng.normal(size=(48, 16))), labels
        )
        for _ in range(30)
    ]
    assert abs(np.mean(scores) - chance) < 0.04
    # codes the labels do not know are ignored; a group of one is no query
    extra = CodeEmbedding(np.r_[emb.concept_ids, 1], np.r_[emb.vectors, np.ones((1, 16))])
    assert nearest_neighbour_accuracy(extra, labels) == 1.0
    single = pd.concat([labels, pd.Series({1: "alone"})])
    assert nearest_neighbour_accuracy(extra, single) == 1.0
    with pytest.raises(ValueError, match="two codes"):
        nearest_neighbour_accuracy(emb, pd.Series({100: "a", 101: "b"}))


def test_silhouette_equals_sklearn_and_is_one_for_tight_clusters():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    emb, labels = _clusters(noise=3.0, seed=2)
    y = labels.reindex(emb.concept_ids).to_numpy()
    want = sklearn_metrics.silhouette_score(emb.vectors, y, metric="cosine")
    assert silhouette(emb, labels) == pytest.approx(want, abs=1e-9)
    tight, labels2 = _clusters(noise=1e-4)
    assert silhouette(tight, labels2) > 0.99
    rng = np.random.default_rng(0)
    rand = CodeEmbedding(tight.concept_ids, rng.normal(size=tight.vectors.shape))
    assert abs(silhouette(rand, labels2)) < 0.1


def test_relatedness_power_known_pairs_and_random():
    # 50 pairs of codes, each pair on its own direction: a random pair is rarely a true one
    emb, _ = _clusters(n_groups=50, per=2, dim=64, noise=0.1)
    ids = emb.concept_ids
    related = pd.DataFrame({"concept_id_1": ids[0::2], "concept_id_2": ids[1::2]})
    assert relatedness_power(emb, related) == 1.0
    types = pd.Series(np.where(np.arange(len(ids)) % 2 == 0, "Condition", "Drug"), index=ids)
    assert relatedness_power(emb, related, types=types) == 1.0
    rng = np.random.default_rng(0)
    rand = CodeEmbedding(ids, rng.normal(size=emb.vectors.shape))
    many = pd.DataFrame(
        {"concept_id_1": rng.choice(ids, 400), "concept_id_2": rng.choice(ids, 400)}
    )
    power = relatedness_power(rand, many, n_null=20_000)
    assert abs(power - 0.05) < 0.04  # a random pair beats the 95th percentile 5 % of the time
    with pytest.raises(ValueError, match="no known pair"):
        relatedness_power(emb, pd.DataFrame({"concept_id_1": [1], "concept_id_2": [2]}))


def test_ontology_correlation_follows_the_hierarchy():
    anc = truth.ancestor_table()
    ids = np.sort(anc["descendant_concept_id"].unique())
    # vectors = indicator of ancestors: cosine is |A & B| / sqrt(|A||B|), monotone with Jaccard
    cols = np.unique(anc["ancestor_concept_id"])
    x = np.zeros((len(ids), len(cols)))
    x[
        pd.Index(ids).get_indexer(anc["descendant_concept_id"]),
        pd.Index(cols).get_indexer(anc["ancestor_concept_id"]),
    ] = 1.0
    emb = CodeEmbedding(ids, x)
    assert ontology_correlation(emb, anc) > 0.9
    rng = np.random.default_rng(0)
    rand = CodeEmbedding(ids, rng.normal(size=(len(ids), 16)))
    assert abs(ontology_correlation(rand, anc)) < 0.1
    sim = ancestor_similarity(anc, ids[:5])
    np.testing.assert_allclose(np.diag(sim), 1.0)
    np.testing.assert_allclose(sim, sim.T)


def test_truth_comes_from_the_generator():
    groups = truth.disease_groups()
    assert "routine" not in set(groups) and set(CHRONIC) <= set(groups)
    annotation = truth.concept_groups()
    assert len(groups) == (annotation["group"] != "routine").sum()
    pairs = truth.related_pairs()
    assert set(pairs["relation"]) == {"may_treat", "lab_of"}
    g = groups.to_dict()
    treat = pairs.loc[pairs["relation"] == "may_treat"]
    assert all(g[a] == g[b] for a, b in zip(treat["concept_id_1"], treat["concept_id_2"]))
    diseases = {d for effects in LAB_EFFECTS.values() for d in effects}
    labs = pairs.loc[pairs["relation"] == "lab_of"]
    assert {g[a] for a in labs["concept_id_1"]} == diseases
    anc = truth.ancestor_table()
    self_rows = anc["ancestor_concept_id"] == anc["descendant_concept_id"]
    assert (anc.loc[self_rows, "min_levels_of_separation"] == 0).all()
    assert anc["max_levels_of_separation"].max() >= 2  # clinical drug -> ingredient -> class
    domains = truth.concept_domains()
    assert set(domains.loc[pairs["concept_id_1"]]) == {"Condition"}


def test_evaluate_embedding_on_the_truth_embedding():
    groups = truth.disease_groups()
    names = sorted(set(groups))
    x = np.eye(len(names))[[names.index(v) for v in groups]]
    noise = np.random.default_rng(0).normal(scale=1e-3, size=x.shape)
    emb = CodeEmbedding(groups.index.to_numpy(), x + noise)
    scores = evaluate_embedding(emb)
    assert scores["nn_accuracy"] == 1.0 and scores["silhouette"] > 0.99
    assert scores["relatedness_power"] > 0.5
    assert set(scores) == {
        "nn_accuracy",
        "nn_chance",
        "silhouette",
        "relatedness_power",
        "ontology_spearman",
        "n_codes",
    }
    a, b = shared_codes(emb, emb.subset(emb.concept_ids[:10]))
    assert len(a) == len(b) == 10
