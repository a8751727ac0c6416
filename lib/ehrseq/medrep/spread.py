"""How spread out an embedding is: the numbers that show GRACE's collapse without LwF.

MedRep reports that GRACE alone makes vectors that are "sparse, easily separable and less
informative"; the learning-without-forgetting term is its cure. Three measures put numbers on
that, over the rows of a :class:`~ehrseq.embeddings.CodeEmbedding`:

- **effective rank** (Roy & Vetterli, 2007): :math:`\\exp(H(p))` with :math:`p_i = s_i^2 /
  \\sum_j s_j^2` from the singular values of the centred matrix; ``d`` when every direction
  is used equally, 1 when the rows lie on a line;
- **mean cosine** between distinct rows: near 0 for spread-out vectors, near 1 when they
  crowd into one direction;
- **near-zero share**: the share of entries within ``tol`` of zero times the row's largest
  absolute entry (sparsity).
"""

from __future__ import annotations

import numpy as np

from ehrseq.embeddings import CodeEmbedding

__all__ = ["embedding_spread"]


def embedding_spread(emb: CodeEmbedding, tol: float = 0.01) -> dict[str, float]:
    """``effective_rank``, ``mean_cosine`` and ``near_zero_share`` of ``emb``'s rows.

    Raises:
        ValueError: with fewer than two rows, or ``tol`` outside ``[0, 1)``.
    """
    if len(emb) < 2:
        raise ValueError("embedding_spread: needs at least two rows")
    if not 0 <= tol < 1:
        raise ValueError("embedding_spread: tol must be in [0, 1)")
    v = np.asarray(emb.vectors, dtype=np.float64)  # (V, d)
    s = np.linalg.svd(v - v.mean(0), compute_uv=False)  # (min(V, d),)
    p = s**2 / max((s**2).sum(), 1e-300)
    p = p[p > 0]
    unit = emb.unit().astype(np.float64)  # (V, d)
    n = len(unit)
    total = unit.sum(0)
    mean_cos = (float(total @ total) - float((unit * unit).sum())) / (n * (n - 1))
    scale = np.abs(v).max(1, keepdims=True)  # (V, 1)
    near_zero = np.abs(v) <= tol * np.where(scale > 0, scale, 1.0)
    return {
        "effective_rank": float(np.exp(-(p * np.log(p)).sum())),
        "mean_cosine": mean_cos,
        "near_zero_share": float(near_zero.mean()),
    }
