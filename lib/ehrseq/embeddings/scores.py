r"""Intrinsic scores of a code embedding, every one over the :class:`CodeEmbedding` contract.

Each score uses only the codes that both the embedding and the truth know (as cui2vec's
``compare_embeddings`` does), so two embeddings are compared fairly only on a shared code
set: :func:`shared_codes` restricts several at once.

============================== =========================================================
score                          question
============================== =========================================================
:func:`nearest_neighbour_accuracy`  is a code's nearest code (cosine) in its own group?
:func:`silhouette`             are the groups compact and apart (cosine distance)?
:func:`relatedness_power`      do known related pairs beat the 95th percentile of random
                               pairs (cui2vec's "statistical power")?
:func:`ontology_correlation`   does cosine follow similarity in the ``Is a`` hierarchy?
============================== =========================================================

:func:`evaluate_embedding` runs all four against the synthetic generator's truth
(:mod:`ehrseq.embeddings.truth`).

References:
    Beam et al., "Clinical concept embeddings learned from massive sources of multimodal
    medical data" (cui2vec), PSB 2020. Rousseeuw, "Silhouettes", J. Comput. Appl. Math. 1987.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from ehrseq.embeddings import truth
from ehrseq.embeddings.base import CodeEmbedding

__all__ = [
    "shared_codes",
    "nearest_neighbour_accuracy",
    "nearest_neighbour_chance",
    "silhouette",
    "relatedness_power",
    "ancestor_similarity",
    "ontology_correlation",
    "evaluate_embedding",
]

Labels = Mapping[int, str] | pd.Series


def _labels(labels: Labels) -> pd.Series:
    s = labels if isinstance(labels, pd.Series) else pd.Series(dict(labels))
    s = s[~s.index.duplicated(keep="first")]
    s.index = s.index.astype(np.int64)
    return s


def _labelled(emb: CodeEmbedding, labels: Labels) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the labelled codes and their integer labels."""
    lab = _labels(labels)
    rows = emb.rows(lab.index.to_numpy())
    keep = rows >= 0
    _, y = np.unique(lab.to_numpy()[keep].astype(str), return_inverse=True)
    return rows[keep], y


def shared_codes(*embeddings: CodeEmbedding) -> list[CodeEmbedding]:
    """Each embedding restricted to the concept ids that all of them hold (sorted)."""
    common = embeddings[0].concept_ids
    for e in embeddings[1:]:
        common = np.intersect1d(common, e.concept_ids)
    common = np.sort(common)
    return [e.subset(common) for e in embeddings]


def nearest_neighbour_accuracy(emb: CodeEmbedding, labels: Labels, k: int = 1) -> float:
    r"""Share of a code's ``k`` nearest codes (cosine) that carry its label.

    .. math:: \text{acc} = \frac{1}{|Q|}\sum_{i \in Q} \frac{1}{k}
        \big|\{j \in \text{NN}_k(i) : y_j = y_i\}\big|

    Neighbours are searched among the labelled codes of the embedding; the queries :math:`Q`
    are those whose label has at least one other member there. Ties break by row order.

    Args:
        emb: the embedding.
        labels: concept id -> group (e.g. :func:`ehrseq.embeddings.truth.disease_groups`).
        k: neighbours per code.

    Raises:
        ValueError: when no label has two codes in the embedding, or ``k`` is out of range.
    """
    rows, y = _labelled(emb, labels)
    n = len(rows)
    peers = np.bincount(y)[y] - 1  # (n,)
    q = peers > 0
    if not q.any():
        raise ValueError("nearest_neighbour_accuracy: no label has two codes in the embedding")
    if not 1 <= k < n:
        raise ValueError(f"nearest_neighbour_accuracy: k must be in [1, {n - 1}], got {k}")
    u = emb.subset(emb.concept_ids[rows]).unit()  # (n, d)
    sim = u @ u.T  # (n, n)
    np.fill_diagonal(sim, -np.inf)
    nn = np.argsort(-sim, axis=1, kind="stable")[:, :k]  # (n, k)
    hits = (y[nn] == y[:, None]).mean(axis=1)  # (n,)
    return float(hits[q].mean())


def nearest_neighbour_chance(emb: CodeEmbedding, labels: Labels) -> float:
    r"""What :func:`nearest_neighbour_accuracy` expects of a random embedding.

    .. math:: \frac{1}{|Q|}\sum_{i \in Q} \frac{n_{y_i} - 1}{n - 1}
    """
    rows, y = _labelled(emb, labels)
    n = len(rows)
    peers = np.bincount(y)[y] - 1
    q = peers > 0
    if not q.any() or n < 2:
        raise ValueError("nearest_neighbour_chance: no label has two codes in the embedding")
    return float((peers[q] / (n - 1)).mean())


def silhouette(emb: CodeEmbedding, labels: Labels) -> float:
    r"""Mean silhouette of the labelled codes under cosine distance :math:`1 - \cos`.

    .. math:: s_i = \frac{b_i - a_i}{\max(a_i, b_i)},

    :math:`a_i` the mean distance to the other codes of its group, :math:`b_i` the smallest
    mean distance to another group; :math:`s_i = 0` for a code alone in its group. Equals
    ``sklearn.metrics.silhouette_score(X, y, metric="cosine")`` (checked in the tests).

    Raises:
        ValueError: with fewer than 2 or more than ``n - 1`` groups.
    """
    rows, y = _labelled(emb, labels)
    n, g = len(rows), int(y.max()) + 1 if len(rows) else 0
    if not 2 <= g <= n - 1:
        raise ValueError(f"silhouette: need 2 <= groups <= codes - 1, got {g} groups, {n} codes")
    u = emb.subset(emb.concept_ids[rows]).unit()
    dist = np.clip(1.0 - u @ u.T, 0.0, None)  # (n, n)
    np.fill_diagonal(dist, 0.0)
    onehot = np.eye(g)[y]  # (n, g)
    size = onehot.sum(0)  # (g,)
    sums = dist @ onehot  # (n, g)
    own = size[y] - 1
    a = np.where(own > 0, sums[np.arange(n), y] / np.maximum(own, 1), 0.0)
    mean_other = sums / size[None, :]
    mean_other[np.arange(n), y] = np.inf
    b = mean_other.min(axis=1)
    s = np.where(own > 0, (b - a) / np.maximum(np.maximum(a, b), 1e-300), 0.0)
    return float(s.mean())


def relatedness_power(
    emb: CodeEmbedding,
    pairs: pd.DataFrame,
    types: Mapping[int, str] | pd.Series | None = None,
    n_null: int = 10_000,
    quantile: float = 0.95,
    seed: int = 0,
) -> float:
    r"""cui2vec's statistical power: share of known pairs whose cosine beats the null.

    .. math:: \text{power} = \frac{1}{|R|}\sum_{(a,b) \in R}
        \mathbf 1\big[\cos(x_a, x_b) > q_{0.95}(\{\cos(x_c, x_d)\}_{\text{null}})\big]

    The null is ``n_null`` random pairs of distinct codes. With ``types`` (e.g. OMOP domain,
    :func:`ehrseq.embeddings.truth.concept_domains`) each null pair copies the types of a
    random known pair and draws each side among the embedding's codes of that type, as
    cui2vec draws its null from the same semantic types. Pairs with a code the embedding
    lacks are left out.

    Args:
        emb: the embedding.
        pairs: ``concept_id_1``, ``concept_id_2`` (e.g.
            :func:`ehrseq.embeddings.truth.related_pairs`).
        types: concept id -> type, or ``None`` for a null over all codes.
        n_null, quantile, seed: size of the null, its threshold quantile, its seed.

    Raises:
        ValueError: when no pair has both codes in the embedding.
    """
    r1 = emb.rows(pairs["concept_id_1"].to_numpy())
    r2 = emb.rows(pairs["concept_id_2"].to_numpy())
    keep = (r1 >= 0) & (r2 >= 0) & (r1 != r2)
    if not keep.any():
        raise ValueError("relatedness_power: no known pair has both codes in the embedding")
    r1, r2 = r1[keep], r2[keep]
    u = emb.unit()
    rng = np.random.default_rng(seed)
    if types is None:
        a = rng.integers(0, len(emb), n_null)
        b = (a + rng.integers(1, len(emb), n_null)) % len(emb)  # b != a
    else:
        t = pd.Series(types)
        t.index = t.index.astype(np.int64)
        tt = t.reindex(emb.concept_ids).fillna("?").astype(str).to_numpy()
        pick = rng.integers(0, len(r1), n_null)
        a = np.empty(n_null, dtype=np.int64)
        b = np.empty(n_null, dtype=np.int64)
        members = {k: np.flatnonzero(tt == k) for k in np.unique(tt)}
        for side, rows in ((a, r1), (b, r2)):
            want = tt[rows[pick]]
            for k in np.unique(want):
                m = want == k
                side[m] = rng.choice(members[k], size=int(m.sum()))
        same = a == b
        b[same] = (b[same] + 1) % len(emb)
    null = (u[a] * u[b]).sum(1)  # (n_null,)
    threshold = np.quantile(null, quantile)
    return float(((u[r1] * u[r2]).sum(1) > threshold).mean())


def ancestor_similarity(ancestors: pd.DataFrame, concept_ids: np.ndarray) -> np.ndarray:
    r"""Jaccard similarity of ancestor sets (each set includes the code itself).

    .. math:: \text{sim}(a, b) = \frac{|A(a) \cap A(b)|}{|A(a) \cup A(b)|}

    Args:
        ancestors: OMOP ``concept_ancestor`` (``ancestor_concept_id``,
            ``descendant_concept_id``).
        concept_ids: ``(n,)`` the codes.

    Shapes:
        Returns ``(n, n)`` float64 (a code absent from the table has only itself: 1 with
        itself, 0 with others).
    """
    ids = np.asarray(concept_ids, dtype=np.int64)
    anc = ancestors[["descendant_concept_id", "ancestor_concept_id"]].astype("int64")
    anc = pd.concat(
        [anc, pd.DataFrame({"descendant_concept_id": ids, "ancestor_concept_id": ids})]
    ).drop_duplicates()
    anc = anc.loc[anc["descendant_concept_id"].isin(ids)]
    row = pd.Index(ids).get_indexer(anc["descendant_concept_id"])
    col_ids, col = np.unique(anc["ancestor_concept_id"].to_numpy(), return_inverse=True)
    m = np.zeros((len(ids), len(col_ids)))
    m[row, col] = 1.0
    inter = m @ m.T  # (n, n)
    size = m.sum(1)
    return inter / (size[:, None] + size[None, :] - inter)


def ontology_correlation(
    emb: CodeEmbedding,
    ancestors: pd.DataFrame,
    method: str = "spearman",
    in_hierarchy_only: bool = True,
) -> float:
    r"""Correlation of cosine with hierarchy similarity over all pairs of codes.

    .. math:: \rho\big(\{\cos(x_a, x_b)\}, \{\text{sim}(a, b)\}\big), \quad a < b,

    with :math:`\text{sim}` from :func:`ancestor_similarity` (a stand-in for KEEP's Resnik
    information content of the lowest common ancestor, which needs code frequencies).

    Args:
        emb: the embedding.
        ancestors: OMOP ``concept_ancestor`` (e.g. :func:`ehrseq.embeddings.truth.ancestor_table`).
        method: ``"spearman"`` or ``"pearson"``.
        in_hierarchy_only: score only codes with an ancestor other than themselves.

    Raises:
        ValueError: on an unknown method or fewer than 3 codes to score.
    """
    if method not in ("spearman", "pearson"):
        raise ValueError(f"ontology_correlation: method must be spearman or pearson, got {method}")
    ids = emb.concept_ids
    if in_hierarchy_only:
        proper = ancestors.loc[
            ancestors["ancestor_concept_id"] != ancestors["descendant_concept_id"],
            "descendant_concept_id",
        ]
        ids = ids[np.isin(ids, proper.to_numpy())]
    if len(ids) < 3:
        raise ValueError(f"ontology_correlation: {len(ids)} codes in the hierarchy, need >= 3")
    sub = emb.subset(ids)
    u = sub.unit()
    iu = np.triu_indices(len(ids), k=1)
    cos = (u @ u.T)[iu]
    sim = ancestor_similarity(ancestors, ids)[iu]
    fn = stats.spearmanr if method == "spearman" else stats.pearsonr
    return float(fn(cos, sim)[0])


def evaluate_embedding(emb: CodeEmbedding, source=None, seed: int = 0) -> dict[str, float]:
    """All four scores against the synthetic generator's truth, plus the NN chance level.

    Args:
        emb: the embedding.
        source: where the truth comes from (a cohort, its truth or a vocabulary; ``None``:
            the project's vocabulary), see :mod:`ehrseq.embeddings.truth`.
        seed: seed of the relatedness null.

    Returns:
        ``{"nn_accuracy", "nn_chance", "silhouette", "relatedness_power",
        "ontology_spearman", "n_codes"}``.
    """
    groups = truth.disease_groups(source)
    return {
        "nn_accuracy": nearest_neighbour_accuracy(emb, groups),
        "nn_chance": nearest_neighbour_chance(emb, groups),
        "silhouette": silhouette(emb, groups),
        "relatedness_power": relatedness_power(
            emb, truth.related_pairs(source), truth.concept_domains(source), seed=seed
        ),
        "ontology_spearman": ontology_correlation(emb, truth.ancestor_table(source)),
        "n_codes": float(len(emb)),
    }
