"""Seed intervals and paired differences of embedding scores, on numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ehrseq.embeddings import CodeEmbedding, nearest_neighbour_accuracy
from ehrseq.embeddings.compare import (
    compare_runs,
    nearest_neighbour_hits,
    nn_accuracy_by_frequency,
    seed_interval,
    summarise_runs,
)


def _runs():
    return pd.DataFrame(
        {
            "method": ["a"] * 3 + ["b"] * 3 + ["c"] * 3,
            "seed": [0, 1, 2] * 3,
            "nn": [0.90, 0.92, 0.94, 0.80, 0.83, 0.83, 0.89, 0.93, 0.95],
        }
    )


def test_seed_interval_is_student_t():
    x = np.array([1.0, 2.0, 4.0])
    mean, lo, hi = seed_interval(x)
    half = stats.t.ppf(0.975, 2) * x.std(ddof=1) / np.sqrt(3)
    assert mean == pytest.approx(7 / 3)
    assert (lo, hi) == pytest.approx((7 / 3 - half, 7 / 3 + half))
    assert seed_interval([0.5, 0.5]) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="at least 2"):
        seed_interval([1.0])
    with pytest.raises(ValueError, match="finite"):
        seed_interval([1.0, np.nan])
    with pytest.raises(ValueError, match="level"):
        seed_interval([1.0, 2.0], level=1.0)


def test_summarise_runs_one_row_per_method_and_metric():
    table = summarise_runs(_runs(), ["nn"])
    assert table["method"].tolist() == ["a", "b", "c"]
    row = table.iloc[0]
    assert row["mean"] == pytest.approx(0.92)
    assert row["lower"] < 0.92 < row["upper"] and row["n_seeds"] == 3
    with pytest.raises(ValueError, match="lack columns"):
        summarise_runs(_runs(), ["silhouette"])
    with pytest.raises(ValueError, match="more than once"):
        summarise_runs(pd.concat([_runs(), _runs().iloc[:1]]), ["nn"])


def test_compare_runs_pairs_by_seed_and_calls_only_resolved_differences():
    runs = _runs().sample(frac=1, random_state=0)  # order must not matter: paired by seed
    out = compare_runs(runs, {"ab": ("a", "b"), "ca": ("c", "a"), "ba": ("b", "a")}, ["nn"])
    ab, ca, ba = (out.loc[out["key"] == k].iloc[0] for k in ("ab", "ca", "ba"))
    # a - b per seed: 0.10, 0.09, 0.11 -> clearly positive
    assert ab["difference"] == pytest.approx(0.10)
    assert ab["lower"] > 0 and ab["verdict"] == "a higher" and ab["comparison"] == "a - b"
    assert ba["upper"] < 0 and ba["verdict"] == "a higher"
    # c - a per seed: -0.01, 0.01, 0.01 -> interval contains 0
    assert ca["lower"] < 0 < ca["upper"] and ca["verdict"] == "not resolved"
    with pytest.raises(ValueError, match="not in runs"):
        compare_runs(runs, {"x": ("a", "z")}, ["nn"])
    with pytest.raises(ValueError, match="share 1 seeds"):
        compare_runs(
            runs.loc[~((runs["method"] == "b") & (runs["seed"] > 0))], {"ab": ("a", "b")}, ["nn"]
        )


def _two_groups():
    # codes 1, 2 (group x) point one way, 3, 4 (group y) another; 5 (group y) sits with x
    v = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1], [1, 0.05]], dtype=float)
    emb = CodeEmbedding(np.arange(1, 6), v)
    labels = pd.Series(["x", "x", "y", "y", "y"], index=np.arange(1, 6))
    return emb, labels


def test_nearest_neighbour_hits_average_to_the_accuracy():
    emb, labels = _two_groups()
    hits = nearest_neighbour_hits(emb, labels)
    assert hits.index.tolist() == [1, 2, 3, 4, 5]
    assert hits.mean() == pytest.approx(nearest_neighbour_accuracy(emb, labels))
    assert hits.loc[5] == 0.0 and hits.loc[3] == 1.0


def test_nn_accuracy_by_frequency_splits_rare_from_common():
    emb, labels = _two_groups()
    counts = pd.Series({1: 100, 2: 90, 3: 80, 4: 70, 5: 1})
    table = nn_accuracy_by_frequency(emb, labels, counts, edges=(0.2,))
    assert table["n_codes"].tolist() == [1, 4]
    # common: 3 and 4 find each other; 1 and 2 find code 5 (group y)
    assert table["nn_accuracy"].tolist() == [0.0, 0.5]
    assert table["min_count"].tolist() == [1, 70]
    with pytest.raises(ValueError, match="edges"):
        nn_accuracy_by_frequency(emb, labels, counts, edges=(0.7, 0.3))
