"""The one contract every code embedding meets: concept ids and a matrix, row for row.

A trained skip-gram, a gensim model, a file written by another tool: each becomes a
:class:`CodeEmbedding` before it is scored (:mod:`ehrseq.embeddings.scores`) or saved
(:mod:`ehrseq.embeddings.io`), so the question "which row is which code?" has one answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["CodeEmbedding", "lookup_rows"]


def lookup_rows(ids, query) -> np.ndarray:
    """Row of each query id in ``ids``, ``-1`` where ``ids`` lacks it.

    With ``o`` the stable argsort of ``ids`` and ``s = ids[o]``, the row of ``q`` is
    ``o[p]`` for ``p = searchsorted(s, q)`` when ``s[p] == q``, else ``-1``: a binary
    search, O((n + m) log n).

    Args:
        ids: ``(n,)`` distinct integer ids (any order; with repeats the first in stable
            sort order wins).
        query: ``(m,)`` integer ids to look up (any shape, flattened).

    Shapes:
        returns ``(m,)`` int64 rows into ``ids``.
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    query = np.asarray(query, dtype=np.int64).reshape(-1)
    if len(ids) == 0:
        return np.full(len(query), -1, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    pos = np.searchsorted(sorted_ids, query).clip(0, len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == query, order[pos], -1).astype(np.int64)


@dataclass(frozen=True, eq=False)
class CodeEmbedding:
    """Vectors of OMOP concepts: row ``i`` of ``vectors`` is the code ``concept_ids[i]``.

    Args:
        concept_ids: ``(V,)`` distinct integer OMOP concept ids.
        vectors: ``(V, d)`` finite floats, ``d >= 1``.
        names: optional ``V`` concept names (for tables and plots; never used by a score).

    Shapes:
        ``concept_ids``: ``(V,)`` int64; ``vectors``: ``(V, d)`` float (kept as given, float32
        or float64). Both are stored read-only.

    Raises:
        ValueError: on ids that are not 1-D integers or repeat, a matrix that is not 2-D, has
            another number of rows, no columns or a non-finite entry, or names of the wrong
            length.
    """

    concept_ids: np.ndarray
    vectors: np.ndarray
    names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        ids = np.asarray(self.concept_ids)
        if ids.ndim != 1:
            raise ValueError(f"CodeEmbedding: concept_ids must be 1-D, got shape {ids.shape}")
        if len(ids) and not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"CodeEmbedding: concept_ids must be integers, got {ids.dtype}")
        ids = ids.astype(np.int64)
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            dup = uniq[counts > 1]
            raise ValueError(
                f"CodeEmbedding: {len(dup)} concept ids repeat, e.g. {dup[:5].tolist()}"
            )
        vec = np.asarray(self.vectors)
        if vec.ndim != 2:
            raise ValueError(f"CodeEmbedding: vectors must be 2-D (V, d), got shape {vec.shape}")
        if vec.shape[0] != len(ids):
            raise ValueError(
                f"CodeEmbedding: {vec.shape[0]} vector rows for {len(ids)} concept ids"
            )
        if vec.shape[1] < 1:
            raise ValueError("CodeEmbedding: vectors have no columns (d = 0)")
        if not np.issubdtype(vec.dtype, np.floating):
            vec = vec.astype(np.float64)
        if not np.isfinite(vec).all():
            row = int(np.flatnonzero(~np.isfinite(vec).all(axis=1))[0])
            raise ValueError(
                f"CodeEmbedding: vector of concept {int(ids[row])} (row {row}) is not finite"
            )
        names = self.names
        if names is not None:
            names = tuple(str(n) for n in names)
            if len(names) != len(ids):
                raise ValueError(f"CodeEmbedding: {len(names)} names for {len(ids)} concept ids")
        ids = ids.copy()
        vec = vec.copy()
        ids.flags.writeable = False
        vec.flags.writeable = False
        object.__setattr__(self, "concept_ids", ids)
        object.__setattr__(self, "vectors", vec)
        object.__setattr__(self, "names", names)

    @property
    def dim(self) -> int:
        """The vector length ``d``."""
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.concept_ids)

    def __repr__(self) -> str:
        return f"CodeEmbedding({len(self)} codes, dim {self.dim})"

    def rows(self, concept_ids: Iterable[int]) -> np.ndarray:
        """Row index of each concept id, ``-1`` where the embedding lacks it. ``(n,)`` int64."""
        items = concept_ids if isinstance(concept_ids, np.ndarray) else list(concept_ids)
        return lookup_rows(self.concept_ids, items)

    def subset(self, concept_ids: Sequence[int] | np.ndarray) -> CodeEmbedding:
        """The embedding restricted to ``concept_ids`` (in that order).

        Raises:
            ValueError: naming the ids the embedding lacks.
        """
        rows = self.rows(concept_ids)
        if (rows < 0).any():
            missing = np.asarray(concept_ids)[rows < 0]
            raise ValueError(
                f"CodeEmbedding.subset: {len(missing)} ids are not in the embedding, "
                f"e.g. {missing[:5].tolist()}"
            )
        names = None if self.names is None else tuple(self.names[i] for i in rows)
        return CodeEmbedding(self.concept_ids[rows], self.vectors[rows], names)

    def unit(self) -> np.ndarray:
        r"""Rows scaled to unit length, :math:`x_i / \max(\|x_i\|, 10^{-12})`. ``(V, d)`` float64."""
        x = self.vectors.astype(np.float64)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    def cosine(self) -> np.ndarray:
        r"""All pairwise cosine similarities :math:`\cos(x_i, x_j)`. ``(V, V)`` float64."""
        u = self.unit()
        return u @ u.T
