r"""Self-attention and the pre-LayerNorm transformer block shared by every encoder of the book.

Written bottom-up, like nanoGPT's ``model.py``: the two masks, then
:class:`MultiHeadSelfAttention`, :class:`FeedForward` and :class:`TransformerBlock`.

Why not ``nn.MultiheadAttention``: it reads ``out_proj.weight`` functionally, so a LoRA
wrapper on its projections is never called and gets no gradient. Here every projection is its
own ``nn.Linear`` (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``), and the product is
``F.scaled_dot_product_attention``: as fast as ``nn.TransformerEncoder`` on these CPUs
(``benchmarks/bench_encoder.py`` measures it).

Masks are boolean, **True = may attend** (the convention of
``F.scaled_dot_product_attention``), shaped to broadcast over heads:

- :func:`padding_mask` ``(B, 1, 1, L)``: every query sees every real key.
- :func:`visit_causal_mask` ``(B, 1, L, L)``: a token of visit :math:`t` sees the real tokens
  of visits :math:`\le t` (both ways inside its own visit) -- the mask of forward prediction.

A query row with no allowed key would make the softmax ``0/0 = NaN``. Padded query rows of
the visit-causal mask are such rows (visit id 0 is below every real visit), so each padded
query is allowed to see itself; its output is meaningless but finite, and no real token ever
reads it. A sequence that is all padding is refused with a ``ValueError``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "padding_mask",
    "visit_causal_mask",
    "MultiHeadSelfAttention",
    "FeedForward",
    "TransformerBlock",
]


def _check_mask_inputs(attention_mask: torch.Tensor, visit_ids: torch.Tensor | None = None) -> None:
    if attention_mask.dim() != 2 or attention_mask.dtype != torch.bool:
        raise ValueError(
            f"attention_mask must be a (B, L) bool tensor, got {tuple(attention_mask.shape)} "
            f"{attention_mask.dtype}"
        )
    if visit_ids is not None and visit_ids.shape != attention_mask.shape:
        raise ValueError(
            f"visit_ids {tuple(visit_ids.shape)} and attention_mask "
            f"{tuple(attention_mask.shape)} differ in shape"
        )
    if attention_mask.numel() and not bool(attention_mask.any(1).all()):
        empty = (~attention_mask.any(1)).nonzero().flatten()[:5].tolist()
        raise ValueError(f"attention_mask is all padding for batch rows {empty}")


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    r"""Keys a query may attend to when only padding is hidden.

    .. math:: \text{allowed}_{b,i,j} = m_{b,j}

    Args:
        attention_mask: True on real tokens.

    Shapes:
        attention_mask: ``(B, L)`` bool; output ``(B, 1, 1, L)`` bool (broadcasts over heads
        and queries).

    Raises:
        ValueError: not a 2-D bool tensor, or a row that is all padding.
    """
    _check_mask_inputs(attention_mask)
    return attention_mask[:, None, None, :]  # (B, 1, 1, L)


def visit_causal_mask(visit_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    r"""Visit-level causal mask: a token of visit :math:`t` sees real tokens of visits :math:`\le t`.

    .. math:: \text{allowed}_{b,i,j} = m_{b,j} \wedge (v_{b,j} \le v_{b,i})
              \;\vee\; (\neg m_{b,i} \wedge i = j)

    The second term lets a padded query see itself only, so its softmax row is never empty.
    Tokens of one visit share a time stamp, so they see each other in both directions.

    Args:
        visit_ids: visit index, 1 for the first visit, non-decreasing, 0 at padding.
        attention_mask: True on real tokens.

    Shapes:
        visit_ids, attention_mask: ``(B, L)``; output ``(B, 1, L, L)`` bool.

    Raises:
        ValueError: shapes differ, the mask is not bool, or a row is all padding.

    Reference:
        The block-causal version of GPT's causal mask (Radford et al., 2018), one block per
        visit: the order of codes inside a visit carries no time, so it is not masked.
    """
    _check_mask_inputs(attention_mask, visit_ids)
    L = attention_mask.shape[1]
    earlier = visit_ids[:, None, :] <= visit_ids[:, :, None]  # (B, L_query, L_key)
    allowed = earlier & attention_mask[:, None, :]  # (B, L, L)
    eye = torch.eye(L, dtype=torch.bool, device=attention_mask.device)  # (L, L)
    allowed = allowed | (eye & ~attention_mask[:, :, None])  # padded queries see themselves
    return allowed[:, None]  # (B, 1, L, L)


class MultiHeadSelfAttention(nn.Module):
    r"""Multi-head self-attention with separate ``nn.Linear`` projections.

    .. math:: \text{head}_h = \operatorname{softmax}\!\Big(\frac{Q_h K_h^\top}{\sqrt{d_h}}
              + \log \text{allowed}\Big) V_h, \qquad
              \text{out} = [\text{head}_1, \dots, \text{head}_H]\, W_O

    Args:
        d_model: width :math:`d`.
        n_heads: heads :math:`H`; must divide ``d_model`` (:math:`d_h = d / H`).
        dropout: dropout on the attention probabilities (training only).
        bias: biases on the four projections.

    Shapes:
        x: ``(B, L, d)``; mask: bool, broadcastable to ``(B, H, L, L)`` (True = may attend),
        or None for full attention; output ``(B, L, d)``.

    Reference:
        Vaswani et al., *Attention is all you need* (NeurIPS 2017).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model = {d_model} is not divisible by n_heads = {n_heads}")
        self.d_model, self.n_heads, self.dropout = d_model, n_heads, dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.o_proj = nn.Linear(d_model, d_model, bias=bias)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        B, L, _ = t.shape
        return t.view(B, L, self.n_heads, -1).transpose(1, 2)  # (B, H, L, d_h)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, L, d = x.shape
        q, k, v = (
            self._split(self.q_proj(x)),
            self._split(self.k_proj(x)),
            self._split(self.v_proj(x)),
        )
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, H, L, d_h)
        y = y.transpose(1, 2).reshape(B, L, d)  # (B, L, d)
        return self.o_proj(y)


class FeedForward(nn.Module):
    r"""Position-wise MLP: :math:`\text{FF}(x) = W_2\, \text{GELU}(W_1 x)`.

    No dropout inside (as in BERT): the block applies dropout to the output. A dropout on the
    ``d_ff``-wide hidden layer would cost as much as one more matrix product on a CPU.

    Args:
        d_model: width :math:`d`.
        d_ff: hidden width (4 d in BERT).

    Shapes:
        x: ``(B, L, d)``; output ``(B, L, d)``.
    """

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class TransformerBlock(nn.Module):
    r"""Pre-LayerNorm transformer block.

    .. math:: x \leftarrow x + \text{dropout}(\text{MHA}(\text{LN}_1(x))), \qquad
              x \leftarrow x + \text{dropout}(\text{FF}(\text{LN}_2(x)))

    Args:
        d_model: width :math:`d`.
        n_heads: attention heads.
        d_ff: feed-forward hidden width.
        dropout: on both residual branches (and, unless ``attention_dropout`` says otherwise,
            on the attention probabilities: BERT's places).
        layer_norm_eps: LayerNorm epsilon.
        attention_dropout: on the attention probabilities; None: ``dropout``. The models'
            configs set it on its own (0 by default, see
            :attr:`~ehrseq.models.behrt.BehrtConfig.attention_dropout`).

    Shapes:
        x: ``(B, L, d)``; mask: as in :class:`MultiHeadSelfAttention`; output ``(B, L, d)``.

    Reference:
        Xiong et al., *On layer normalization in the transformer architecture* (ICML 2020).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        layer_norm_eps: float = 1e-5,
        attention_dropout: float | None = None,
    ):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        p_attn = dropout if attention_dropout is None else attention_dropout
        self.attn = MultiHeadSelfAttention(d_model, n_heads, p_attn)
        self.ln2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.mlp = FeedForward(d_model, d_ff)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.ln1(x), mask))  # (B, L, d)
        x = x + self.dropout(self.mlp(self.ln2(x)))  # (B, L, d)
        return x
