"""Frozen concept vectors in place of a model's learned token embedding.

MedRep (Kim et al., arXiv 2504.08329) freezes its concept vectors as the foundation model's
token embedding, so that a code the model never saw in training still has a vector: at an
external site the rows of its codes are swapped into the matrix, with no retraining. Here the
frozen ``(V, k)`` table is read through a trainable projection to ``d_model``:

.. math:: e(c) = W\\,t_c + b \\quad (c \\text{ a concept token}), \\qquad
    e(s) = u_s \\quad (s \\text{ a special token: [PAD], [UNK], [MASK], [CLS], [SEP]}),

with :math:`t_c` the frozen row, :math:`W \\in \\mathbb{R}^{d \\times k}` and the
:math:`u_s` learned. :func:`with_frozen_codes` puts this module in place of a BEHRT encoder's code embedding
(:class:`ehrseq.models.behrt.BehrtEncoder`, whose layer this package does not import);
:func:`swap_code_table` puts a larger table (the external site's extended vocabulary) in
place without touching a parameter.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ehrseq.data.vocab import SPECIAL_TOKENS, Vocab
from ehrseq.embeddings import CodeEmbedding
from ehrseq.medrep.descriptions import decile_concept_id

__all__ = ["token_table", "FrozenCodeEmbedding", "with_frozen_codes", "swap_code_table"]


def token_table(vocab: Vocab, vectors: CodeEmbedding) -> tuple[np.ndarray, dict[str, int]]:
    """One frozen row per token id of ``vocab``: its concept's vector.

    A decile token ``measurement:<c>:q<j>`` takes the vector of the decile pseudo-concept
    :func:`~ehrseq.medrep.descriptions.decile_concept_id` ``(c, j + 1)`` when ``vectors``
    has it, else the vector of ``c``. Special tokens get zero rows (the model learns them).

    Returns:
        ``(table, report)``: table ``(len(vocab), k)`` float32; report counts ``concepts``,
        ``deciles``, ``decile_fallback`` (to the concept's vector) and ``special``.

    Raises:
        ValueError: naming the tokens whose concept has no vector.
    """
    n_special = len(SPECIAL_TOKENS)
    table = np.zeros((len(vocab), vectors.dim), dtype=np.float32)
    report = {"special": n_special, "concepts": 0, "deciles": 0, "decile_fallback": 0}
    lacking = []
    for i, tok in enumerate(vocab.itos[n_special:], start=n_special):
        parts = tok.split(":")
        cid = int(parts[1])
        row = -1
        if len(parts) == 3:
            q = int(parts[2][1:])
            row = vectors.rows([int(decile_concept_id(cid, q + 1))])[0]
            report["deciles" if row >= 0 else "decile_fallback"] += 1
        else:
            report["concepts"] += 1
        if row < 0:
            row = vectors.rows([cid])[0]
        if row < 0:
            lacking.append(tok)
            continue
        table[i] = vectors.vectors[row]
    if lacking:
        raise ValueError(
            f"token_table: {len(lacking)} tokens have no concept vector, e.g. {lacking[:5]}"
        )
    return table, report


class FrozenCodeEmbedding(nn.Module):
    """Frozen ``(V, k)`` table -> trainable projection to ``d``; learned special tokens.

    Args:
        table: ``(V, k)`` frozen rows (a buffer, never a parameter).
        d_model: output width ``d``.
        n_special: ids below this are special tokens with learned vectors.
        init_std: normal initialisation of the projection and the special vectors (BERT's
            0.02, as :class:`~ehrseq.models.behrt.BehrtEncoder` initialises its embeddings).

    Shapes:
        ``codes`` ``(B, L)`` -> ``(B, L, d)``.
    """

    def __init__(
        self,
        table: np.ndarray | torch.Tensor,
        d_model: int,
        n_special: int = len(SPECIAL_TOKENS),
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        table = torch.as_tensor(np.asarray(table), dtype=torch.float32)
        if table.ndim != 2 or table.shape[0] <= n_special:
            raise ValueError(f"FrozenCodeEmbedding: table of shape {tuple(table.shape)}")
        self.register_buffer("table", table)
        self.n_special = n_special
        self.proj = nn.Linear(table.shape[1], d_model)
        self.special = nn.Embedding(n_special, d_model)
        for w in (self.proj.weight, self.special.weight):
            nn.init.normal_(w, std=init_std)
        nn.init.zeros_(self.proj.bias)

    def swap(self, table: np.ndarray | torch.Tensor) -> None:
        """Replace the frozen rows by ``table`` (more rows allowed, same width ``k``).

        Raises:
            ValueError: if the width differs or the table has no concept row.
        """
        table = torch.as_tensor(np.asarray(table), dtype=torch.float32)
        if table.ndim != 2 or table.shape[1] != self.table.shape[1]:
            raise ValueError(
                f"swap: table width {tuple(table.shape)} does not match "
                f"{self.table.shape[1]} (the projection's input)"
            )
        if table.shape[0] <= self.n_special:
            raise ValueError("swap: the table has no concept rows")
        self.table = table.to(self.table.device)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        if int(codes.max()) >= len(self.table):
            raise ValueError(
                f"code id {int(codes.max())} beyond the frozen table ({len(self.table)} rows)"
            )
        x = self.proj(self.table[codes])  # (B, L, d)
        special = codes < self.n_special  # (B, L)
        s = self.special(codes.clamp(max=self.n_special - 1))  # (B, L, d)
        return torch.where(special[..., None], s, x)  # (B, L, d)


def with_frozen_codes(encoder: nn.Module, table: np.ndarray | torch.Tensor) -> nn.Module:
    """Put :class:`FrozenCodeEmbedding` in place of a BEHRT-style encoder's code embedding.

    The encoder must hold its token embedding at ``encoder.embeddings.code`` (as
    :class:`~ehrseq.models.behrt.BehrtEncoder` does), an ``nn.Embedding`` with one row per
    row of ``table``; it is replaced (its width ``d_model`` and ``init_std`` kept), and the
    encoder is returned: ``with_frozen_codes(BehrtEncoder(cfg), table)``.

    Raises:
        ValueError: if the encoder has no such embedding, or its rows differ from the table's.
    """
    code = getattr(getattr(encoder, "embeddings", None), "code", None)
    if not isinstance(code, nn.Embedding):
        raise ValueError("with_frozen_codes: the encoder has no embeddings.code nn.Embedding")
    if code.num_embeddings != len(table):
        raise ValueError(
            f"with_frozen_codes: vocab_size {code.num_embeddings} but the table has "
            f"{len(table)} rows"
        )
    init_std = getattr(getattr(encoder, "cfg", None), "init_std", 0.02)
    encoder.embeddings.code = FrozenCodeEmbedding(table, code.embedding_dim, init_std=init_std)
    return encoder


def swap_code_table(model: nn.Module, table: np.ndarray | torch.Tensor) -> None:
    """Swap the frozen table of the (one) :class:`FrozenCodeEmbedding` inside ``model``.

    Raises:
        ValueError: if ``model`` holds no frozen code embedding, or several.
    """
    found = [m for m in model.modules() if isinstance(m, FrozenCodeEmbedding)]
    if len(found) != 1:
        raise ValueError(f"swap_code_table: {len(found)} frozen code embeddings in the model")
    found[0].swap(table)
