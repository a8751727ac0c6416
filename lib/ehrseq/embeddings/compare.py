r"""Scores of several embedding methods over training seeds: intervals and paired differences.

A code embedding is trained from a random start on shuffled pairs with random negatives, so
one run of a method is one draw; a comparison of two methods asks whether the difference
survives the seed. Each method is trained with the same seeds on the same corpus, and the
runs of two methods are *paired* by seed (seed ``s`` of A against seed ``s`` of B, which also
share the corpus's within-day shuffle). With :math:`n` seeds and per-seed differences
:math:`\Delta_s = m_A(s) - m_B(s)`, the interval is Student's

.. math:: \bar\Delta \pm t_{n-1,\,1-\alpha/2}\, \frac{\mathrm{sd}(\Delta)}{\sqrt n},

and the same formula on one method's scores gives its own interval. A difference is called
in A's or B's favour only when its interval excludes 0; otherwise it is *not resolved*. The
intervals speak of the training seed only: the corpus (the cohort's training patients) and
the truth are held fixed.

- :func:`seed_interval`: the mean of one method's scores and its interval.
- :func:`summarise_runs`: the table of every method x score, ``mean [lower, upper]``.
- :func:`compare_runs`: the paired differences of chosen method pairs on every score, with a
  verdict, in the layout :func:`ehrseq.book.record_claim` reads.
- :func:`nn_accuracy_by_frequency`: nearest-neighbour accuracy of the rare and the common
  codes separately.

Used by the chapter on medical-code embeddings (issue #17).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ehrseq.embeddings.base import CodeEmbedding
from ehrseq.embeddings.scores import _labelled

__all__ = [
    "seed_interval",
    "summarise_runs",
    "compare_runs",
    "nearest_neighbour_hits",
    "nn_accuracy_by_frequency",
]


def seed_interval(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, ...]:
    r"""Mean of ``values`` and its Student-t interval, :math:`\bar x \pm t_{n-1}\,s/\sqrt n`.

    Args:
        values: ``(n,)`` one score per seed, ``n >= 2``.
        level: coverage of the interval.

    Returns:
        ``(mean, lower, upper)`` as floats (all equal when the values are).

    Raises:
        ValueError: with fewer than 2 values, a non-finite value or ``level`` outside (0, 1).
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(x) < 2:
        raise ValueError(f"seed_interval: need at least 2 seeds, got {len(x)}")
    if not np.isfinite(x).all():
        raise ValueError(f"seed_interval: values must be finite, got {x.tolist()}")
    if not 0 < level < 1:
        raise ValueError(f"seed_interval: level must be in (0, 1), got {level}")
    mean = float(x.mean())
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return mean, mean - half, mean + half


def _check_runs(runs: pd.DataFrame, metrics: Sequence[str]) -> None:
    missing = [c for c in ("method", "seed", *metrics) if c not in runs.columns]
    if missing:
        raise ValueError(f"runs lack columns {missing}; found {list(runs.columns)}")
    dup = runs.duplicated(["method", "seed"])
    if dup.any():
        first = runs.loc[dup, ["method", "seed"]].iloc[0].tolist()
        raise ValueError(f"runs: method and seed {first} appear more than once")


def summarise_runs(runs: pd.DataFrame, metrics: Sequence[str], level: float = 0.95) -> pd.DataFrame:
    """One row per method and score: ``method``, ``metric``, ``mean``, ``lower``, ``upper``,
    ``n_seeds`` (:func:`seed_interval` over the method's seeds), methods in order of
    appearance.

    Args:
        runs: one row per ``(method, seed)`` with a column per score.
        metrics: the score columns.
        level: coverage of the intervals.

    Raises:
        ValueError: on a missing column, a repeated ``(method, seed)`` or a method with fewer
            than 2 seeds.
    """
    _check_runs(runs, metrics)
    rows = []
    for method, part in runs.groupby("method", sort=False):
        for metric in metrics:
            mean, lo, hi = seed_interval(part[metric].to_numpy(), level)
            rows.append((method, metric, mean, lo, hi, len(part)))
    return pd.DataFrame(rows, columns=["method", "metric", "mean", "lower", "upper", "n_seeds"])


def compare_runs(
    runs: pd.DataFrame,
    pairs: Mapping[str, tuple[str, str]],
    metrics: Sequence[str],
    level: float = 0.95,
) -> pd.DataFrame:
    """Paired differences ``A - B`` over the seeds both methods ran, on every score.

    Args:
        runs: one row per ``(method, seed)`` with a column per score.
        pairs: ``{key: (A, B)}``.
        metrics: the score columns.
        level: coverage of the intervals.

    Returns:
        One row per pair and score: ``key``, ``comparison`` (``"A - B"``), ``metric``,
        ``difference``, ``lower``, ``upper``, ``n_seeds``, ``verdict`` (``"A higher"``,
        ``"B higher"`` or ``"not resolved"``, by whether the interval excludes 0).

    Raises:
        ValueError: on a missing column, a method not in ``runs``, or fewer than 2 shared
            seeds.
    """
    _check_runs(runs, metrics)
    known = set(runs["method"])
    rows = []
    for key, (a, b) in pairs.items():
        absent = [m for m in (a, b) if m not in known]
        if absent:
            raise ValueError(f"compare_runs: methods {absent} not in runs ({sorted(known)})")
        left = runs.loc[runs["method"] == a].set_index("seed")
        right = runs.loc[runs["method"] == b].set_index("seed")
        seeds = left.index.intersection(right.index).sort_values()
        if len(seeds) < 2:
            raise ValueError(f"compare_runs: {a} and {b} share {len(seeds)} seeds, need 2")
        for metric in metrics:
            delta = left.loc[seeds, metric].to_numpy() - right.loc[seeds, metric].to_numpy()
            diff, lo, hi = seed_interval(delta, level)
            verdict = f"{a} higher" if lo > 0 else f"{b} higher" if hi < 0 else "not resolved"
            rows.append((key, f"{a} - {b}", metric, diff, lo, hi, len(seeds), verdict))
    columns = ["key", "comparison", "metric", "difference", "lower", "upper", "n_seeds"]
    return pd.DataFrame(rows, columns=[*columns, "verdict"])


def nearest_neighbour_hits(emb: CodeEmbedding, labels) -> pd.Series:
    """Per code: 1 when its nearest labelled code (cosine) shares its label, else 0.

    The codes of :func:`ehrseq.embeddings.scores.nearest_neighbour_accuracy` (``k = 1``):
    labelled codes of the embedding whose label has another member there; their mean is that
    accuracy. A ``pd.Series`` of floats indexed by concept id.

    Raises:
        ValueError: when no label has two codes in the embedding.
    """
    rows, y = _labelled(emb, labels)
    peers = np.bincount(y)[y] - 1 if len(y) else np.zeros(0, dtype=np.int64)
    q = peers > 0
    if not q.any():
        raise ValueError("nearest_neighbour_hits: no label has two codes in the embedding")
    u = emb.subset(emb.concept_ids[rows]).unit()  # (n, d)
    sim = u @ u.T  # (n, n)
    np.fill_diagonal(sim, -np.inf)
    nn = np.argsort(-sim, axis=1, kind="stable")[:, 0]  # (n,)
    hits = (y[nn] == y).astype(np.float64)  # (n,)
    return pd.Series(hits[q], index=emb.concept_ids[rows][q], name="hit")


def nn_accuracy_by_frequency(
    emb: CodeEmbedding,
    labels,
    counts: Mapping[int, int] | pd.Series,
    edges: Sequence[float] = (0.5,),
) -> pd.DataFrame:
    """Nearest-neighbour accuracy within frequency strata of the codes.

    Codes are ranked by ``counts`` (events in the corpus) and cut at the quantiles ``edges``
    of the scored codes (default: the rarer and the more common half), so a method that
    learns only the frequent codes shows it.

    Args:
        emb: the embedding.
        labels: concept id -> group.
        counts: concept id -> occurrences; a scored code without a count counts 0.
        edges: quantiles in (0, 1), increasing.

    Returns:
        One row per stratum (rarest first): ``stratum`` (``"q0-q1"`` in quantiles),
        ``min_count``, ``max_count``, ``n_codes``, ``nn_accuracy``.

    Raises:
        ValueError: on edges outside (0, 1) or not increasing.
    """
    cuts = np.asarray(edges, dtype=np.float64)
    if len(cuts) and ((cuts <= 0).any() or (cuts >= 1).any() or (np.diff(cuts) <= 0).any()):
        raise ValueError(f"nn_accuracy_by_frequency: edges must increase in (0, 1), got {edges}")
    hits = nearest_neighbour_hits(emb, labels)
    c = pd.Series(counts)
    c.index = c.index.astype(np.int64)
    n = c.reindex(hits.index).fillna(0).to_numpy()
    rank = pd.Series(n).rank(method="first").to_numpy() / len(n)  # (n,) in (0, 1]
    bounds = np.r_[0.0, cuts, 1.0]
    rows = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        m = (rank > lo) & (rank <= hi)
        if not m.any():
            continue
        rows.append(
            (
                f"q{lo:g}-q{hi:g}",
                int(n[m].min()),
                int(n[m].max()),
                int(m.sum()),
                hits.to_numpy()[m].mean(),
            )
        )
    columns = ["stratum", "min_count", "max_count", "n_codes", "nn_accuracy"]
    return pd.DataFrame(rows, columns=columns)
