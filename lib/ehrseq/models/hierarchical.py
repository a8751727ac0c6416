r"""Hierarchical BEHRT: attention within each visit, then a causal transformer across visits.

Written bottom-up, like nanoGPT's ``model.py``: :class:`HierarchicalConfig`,
:class:`AttentionPool` (a learned query over a set of vectors), :class:`VisitEncoder` (codes
of one visit -> one vector), :class:`VisitEmbeddings` (that vector plus age, visit position
and time gap), then :class:`HierarchicalBehrt`. The input is the **hierarchical batch** of
:mod:`ehrseq.data.tensors` (``codes (B, V, C)``, ``code_mask``, ``visit_mask``, per-visit
``ages`` and ``time_deltas``, ``domain_ids``); see :mod:`ehrseq.models.lstm` for the shared
batch helpers.

**Within a visit** (level 1). The codes of a visit share a time stamp and have no order, so
they get no position: each code is :math:`u_{c} = E_\text{code}[c] + E_\text{domain}[o_c]`,
optionally mixed by ``n_code_layers`` transformer blocks that attend inside the visit only,
then pooled into one vector by a learned query (multi-head attention pooling),

.. math::
    z_{b,t} = W_O \big\Vert_{h=1}^{H} \sum_{c} \alpha^h_{b,t,c}\, W^h_V u_{b,t,c}, \qquad
    \alpha^h_{b,t,c} = \operatorname{softmax}_{c:\, m_{b,t,c}}
    \Big(\frac{q_h^\top W^h_K u_{b,t,c}}{\sqrt{d_h}}\Big)

(``code_pooling="mean"`` replaces it by the masked mean). The codes of padded visits are
never encoded: only real visits are gathered, and a padded visit's vector is exactly 0.

**Across visits** (level 2). The visit embedding adds what BEHRT adds per token, once per
visit,

.. math::
    x_{b,t} = z_{b,t} + E_\text{age}[\lfloor a_{b,t} / w \rfloor] + P[t]
            + E_\text{time}(\Delta_{b,t}), \qquad h^{(0)} = \text{dropout}(\text{LN}(x))

and ``n_layers`` pre-LayerNorm :class:`~ehrseq.models.attention.TransformerBlock` attend
causally over visits (:func:`~ehrseq.models.attention.visit_causal_mask` with one id per
visit): visit :math:`t` sees real visits :math:`\le t`. The model is a pure encoder (visit
states out, no head); :class:`~ehrseq.models.survival_model.SurvivalModel` puts a survival
head on it, and a per-visit head then never reads a later visit.

**Cost.** A flat encoder over :math:`L = VC` tokens builds :math:`(VC)^2` attention scores
per head and layer; here each visit's block builds :math:`C^2` (:math:`VC^2` in all), the
pooling :math:`VC`, and the visit level :math:`V^2`: :math:`O(VC^2 + V^2)` instead of
:math:`O(V^2C^2)`. ``benchmarks/bench_attention_scaling.py`` measures both.

Every term of the visit embedding, the domain embedding, the within-visit blocks, the kind
of pooling and the causal mask can be switched in the config, so a chapter can ablate them.

References:
    Li, Y. et al. (2020). BEHRT: Transformer for electronic health records. *Scientific
    Reports* 10, 7155. Li, Y. et al. (2023). Hi-BEHRT: hierarchical transformer-based model
    for accurate prediction of clinical events using multimodal longitudinal electronic health
    records. *IEEE JBHI* 27(2), 1106-1117. Lee, J. et al. (2019). Set Transformer: a
    framework for attention-based permutation-invariant neural networks. *ICML* (pooling by
    multi-head attention with a learned seed vector).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ehrseq.data.tensors import N_DOMAIN_IDS
from ehrseq.models.attention import TransformerBlock, visit_causal_mask
from ehrseq.models.behrt import age_bins, log_time_bins, sinusoidal_table
from ehrseq.models.lstm import check_hierarchical_batch, masked_mean_codes, visit_slots

__all__ = [
    "HierarchicalConfig",
    "AttentionPool",
    "VisitEncoder",
    "VisitEmbeddings",
    "HierarchicalBehrt",
]


@dataclass
class HierarchicalConfig:
    """Sizes of a hierarchical BEHRT and which parts it uses.

    Attributes:
        vocab_size: number of token ids (``len(vocab)``).
        pad_id: id of ``[PAD]`` (the masks, not the id, decide what is padding).
        d_model: width :math:`d` of code and visit vectors.
        n_layers: transformer blocks across visits.
        n_heads: attention heads (divides ``d_model``), at both levels and in the pooling.
        d_ff: feed-forward hidden width.
        dropout: on embeddings, MLPs and residual branches.
        attention_dropout: on the attention probabilities of both levels and of the pooling
            (0 by default, as in :class:`~ehrseq.models.behrt.BehrtConfig`: on a CPU the mask
            costs about a third of a training step).
        n_code_layers: transformer blocks inside each visit before pooling (0: pool the code
            embeddings directly).
        code_pooling: ``"attention"`` (learned query) or ``"mean"`` (masked mean).
        use_domain: add the domain (code type) embedding to each code.
        n_domains: domain ids (0 pad, 1..7 domains, 8 special).
        use_age: add the binned age at the visit.
        age_bin_years: width of an age bin in years.
        max_age: ages above are clamped into the last bin.
        visit_position: ``"learned"``, ``"sinusoidal"`` or ``"none"`` embedding of the visit
            slot :math:`t` (0 for the first visit).
        max_visits: size of the position table; later slots share the last entry.
        time_embedding: days since the previous visit as ``"log_bins"``, ``"log_linear"`` or
            ``"none"`` (the formulas of :class:`~ehrseq.models.behrt.BehrtEmbeddings`).
        n_time_bins: bins of ``"log_bins"``.
        max_time_days: gaps above are clamped into the last bin.
        causal: visit-causal mask across visits; False lets every visit see the whole history
            (for pretraining or to show the leak), which per-visit hazards must not use.
        layer_norm_eps: LayerNorm epsilon.
        init_std: standard deviation of the normal initialisation (BERT: 0.02).
    """

    vocab_size: int
    pad_id: int = 0
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 256
    dropout: float = 0.1
    attention_dropout: float = 0.0
    n_code_layers: int = 0
    code_pooling: Literal["attention", "mean"] = "attention"
    use_domain: bool = True
    n_domains: int = N_DOMAIN_IDS
    use_age: bool = True
    age_bin_years: float = 1.0
    max_age: float = 110.0
    visit_position: Literal["learned", "sinusoidal", "none"] = "learned"
    max_visits: int = 512
    time_embedding: Literal["log_bins", "log_linear", "none"] = "log_bins"
    n_time_bins: int = 32
    max_time_days: float = 36525.0
    causal: bool = True
    layer_norm_eps: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self) -> None:
        choices = {
            "code_pooling": ("attention", "mean"),
            "visit_position": ("learned", "sinusoidal", "none"),
            "time_embedding": ("log_bins", "log_linear", "none"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} = {getattr(self, name)!r}: expected one of {allowed}")
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_visits"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} = {getattr(self, name)}: must be at least 1")
        if self.n_code_layers < 0:
            raise ValueError(f"n_code_layers = {self.n_code_layers}: must be at least 0")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model = {self.d_model} is not divisible by n_heads = {self.n_heads}"
            )
        for name in ("dropout", "attention_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} = {getattr(self, name)}: must be in [0, 1)")
        if self.age_bin_years <= 0 or self.max_age <= 0 or self.max_time_days <= 0:
            raise ValueError("age_bin_years, max_age and max_time_days must be positive")
        if self.n_time_bins < 2:
            raise ValueError("n_time_bins must be at least 2")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(
                f"pad_id = {self.pad_id} is outside the vocabulary (0..{self.vocab_size - 1})"
            )

    @property
    def n_age_bins(self) -> int:
        return int(math.floor(self.max_age / self.age_bin_years)) + 1

    @classmethod
    def from_vocab(cls, vocab, **overrides) -> HierarchicalConfig:
        """A config sized for ``vocab`` (anything with ``len()`` and ``stoi["[PAD]"]``)."""
        return cls(vocab_size=len(vocab), pad_id=vocab.stoi["[PAD]"], **overrides)


# ---------------------------------------------------------------------------------------------
# Level 1: the codes of one visit -> one vector
# ---------------------------------------------------------------------------------------------


def _safe_key_mask(mask: Tensor) -> Tensor:
    """``(N, C)`` True = real key -> ``(N, 1, 1, C)``; a row with no real key may see every key.

    An all-False row would make the softmax ``0/0 = NaN`` (and NaN gradients, even when the
    output is discarded afterwards); letting it see all slots keeps it finite. The caller
    zeroes those rows.
    """
    empty = ~mask.any(-1, keepdim=True)  # (N, 1)
    return (mask | empty)[:, None, None, :]  # (N, 1, 1, C)


class AttentionPool(nn.Module):
    r"""Pool a set of vectors into one by a learned query (multi-head attention pooling).

    .. math::
        \text{out} = W_O \big\Vert_{h=1}^{H} \sum_{c:\, m_c} \alpha^h_c\, W^h_V u_c, \qquad
        \alpha^h_c = \frac{\exp(q_h^\top W^h_K u_c / \sqrt{d_h})}
                          {\sum_{c':\, m_{c'}} \exp(q_h^\top W^h_K u_{c'} / \sqrt{d_h})}

    A set with no real member gives a zero vector, with finite gradients.

    Args:
        d_model: width :math:`d`.
        n_heads: heads :math:`H` (divides ``d_model``).
        dropout: on the attention weights (training only).

    Shapes:
        x: ``(N, C, d)``; mask: ``(N, C)`` bool, True on real members; output ``(N, d)``.

    Raises:
        ValueError: on mismatched shapes or a mask that is not bool.

    Reference:
        Lee, J. et al. (2019). Set Transformer (pooling by multi-head attention, PMA). *ICML*.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model = {d_model} is not divisible by n_heads = {n_heads}")
        self.n_heads, self.dropout = n_heads, dropout
        self.query = nn.Parameter(torch.zeros(d_model))
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.o_proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        if x.dim() != 3 or mask.shape != x.shape[:2] or mask.dtype != torch.bool:
            raise ValueError(
                f"x must be (N, C, d) and mask (N, C) bool, got {tuple(x.shape)} and "
                f"{tuple(mask.shape)} {mask.dtype}"
            )
        N, C, d = x.shape
        H = self.n_heads
        q = self.query.view(1, H, 1, d // H).expand(N, H, 1, d // H)  # (N, H, 1, d_h)
        k = self.k_proj(x).view(N, C, H, d // H).transpose(1, 2)  # (N, H, C, d_h)
        v = self.v_proj(x).view(N, C, H, d // H).transpose(1, 2)  # (N, H, C, d_h)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=_safe_key_mask(mask), dropout_p=p)
        y = self.o_proj(y.reshape(N, d))  # (N, H, 1, d_h) -> (N, d)
        return torch.where(mask.any(-1, keepdim=True), y, 0.0)  # (N, d), 0 for an empty set


class VisitEncoder(nn.Module):
    r"""The codes of each real visit -> one visit vector :math:`z_{b,t}` (level 1).

    .. math::
        u_{b,t,c} = \text{LN}(E_\text{code}[c_{b,t,c}] + E_\text{domain}[o_{b,t,c}]), \quad
        u \leftarrow \text{Block}^{\text{visit}}_{K} \circ \dots \circ \text{Block}^{\text{visit}}_1(u),
        \quad z_{b,t} = \text{Pool}(\text{LN}(u_{b,t,\cdot}), m_{b,t,\cdot})

    Only the real visits are gathered and encoded; padded visits get exact zeros. The blocks
    attend within a visit (a padding mask over its code slots), never across visits.

    Args:
        cfg: the model's config (``n_code_layers``, ``code_pooling``, ``use_domain``, ...).

    Shapes:
        codes, code_mask, domain_ids: ``(B, V, C)``; visit_mask: ``(B, V)``;
        output ``(B, V, d)``, 0 at padded visits.
    """

    def __init__(self, cfg: HierarchicalConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.code = nn.Embedding(cfg.vocab_size, d)
        self.domain = nn.Embedding(cfg.n_domains, d) if cfg.use_domain else None
        self.norm_in = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                d,
                cfg.n_heads,
                cfg.d_ff,
                cfg.dropout,
                cfg.layer_norm_eps,
                attention_dropout=cfg.attention_dropout,
            )
            for _ in range(cfg.n_code_layers)
        )
        self.norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps) if cfg.n_code_layers else None
        self.pool = (
            AttentionPool(d, cfg.n_heads, cfg.attention_dropout)
            if cfg.code_pooling == "attention"
            else None
        )

    def forward(
        self,
        codes: Tensor,
        code_mask: Tensor,
        visit_mask: Tensor,
        domain_ids: Tensor | None = None,
    ) -> Tensor:
        B, V, C = codes.shape
        where = visit_mask.nonzero(as_tuple=True)  # (b, t) of the N real visits
        c, m = codes[where], code_mask[where]  # (N, C), (N, C)
        u = self.code(c)  # (N, C, d)
        if self.domain is not None:
            u = u + self.domain(domain_ids[where])  # (N, C, d)
        u = self.dropout(self.norm_in(u))  # (N, C, d)
        if self.blocks:
            mask = _safe_key_mask(m)  # (N, 1, 1, C), within the visit only
            for block in self.blocks:
                u = block(u, mask)  # (N, C, d)
            u = self.norm(u)  # (N, C, d)
        if self.pool is not None:
            z = self.pool(u, m)  # (N, d)
        else:
            z = masked_mean_codes(u[None], m[None])[0]  # (1, N, C, d) -> (N, d)
        out = u.new_zeros(B, V, z.shape[-1])  # (B, V, d)
        return out.index_put(where, z)  # (B, V, d), 0 at padded visits


# ---------------------------------------------------------------------------------------------
# Level 2: visit vectors + age, position and time gap
# ---------------------------------------------------------------------------------------------


class VisitEmbeddings(nn.Module):
    r"""Visit vector plus the enabled per-visit embeddings, then LayerNorm and dropout.

    .. math::
        h^{(0)}_{b,t} = \text{dropout}\big(\text{LN}(z_{b,t} + E_\text{age}[\lfloor a_{b,t}/w
        \rfloor] + P[t] + E_\text{time}(\Delta_{b,t}))\big)

    Args:
        cfg: the model's config (``use_age``, ``visit_position``, ``time_embedding``).

    Shapes:
        z: ``(B, V, d)``; ages, time_deltas: ``(B, V)``; output ``(B, V, d)``.
    """

    def __init__(self, cfg: HierarchicalConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.age = nn.Embedding(cfg.n_age_bins, d) if cfg.use_age else None
        self.position = nn.Embedding(cfg.max_visits, d) if cfg.visit_position == "learned" else None
        if cfg.visit_position == "sinusoidal":
            self.register_buffer("sinusoid", sinusoidal_table(cfg.max_visits, d), persistent=False)
        self.time_bins = (
            nn.Embedding(cfg.n_time_bins, d) if cfg.time_embedding == "log_bins" else None
        )
        self.time_proj = nn.Linear(1, d) if cfg.time_embedding == "log_linear" else None
        self.norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, z: Tensor, ages: Tensor | None = None, time_deltas: Tensor | None = None
    ) -> Tensor:
        cfg = self.cfg
        B, V, _ = z.shape
        x = z  # (B, V, d)
        if self.age is not None:
            x = x + self.age(age_bins(ages, cfg.age_bin_years, cfg.n_age_bins))  # (B, V, d)
        if cfg.visit_position != "none":
            slot = torch.arange(V, device=z.device).clamp(max=cfg.max_visits - 1)  # (V,)
            table = self.position.weight if self.position is not None else self.sinusoid
            x = x + table[slot]  # (B, V, d) + (V, d)
        if self.time_bins is not None:
            bins = log_time_bins(time_deltas, cfg.n_time_bins, cfg.max_time_days)  # (B, V)
            x = x + self.time_bins(bins)  # (B, V, d)
        elif self.time_proj is not None:
            x = x + self.time_proj(torch.log1p(time_deltas.clamp(min=0))[..., None])  # (B, V, d)
        return self.dropout(self.norm(x))


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class HierarchicalBehrt(nn.Module):
    r"""Hierarchical BEHRT encoder: one state per visit (see the module docstring for the formulas).

    .. math::
        h = \text{LN}\big(\text{Block}_N \circ \cdots \circ \text{Block}_1(h^{(0)})\big)

    Args:
        cfg: a :class:`HierarchicalConfig` (``HierarchicalConfig.from_vocab(vocab, ...)``).

    Forward args:
        codes, code_mask, visit_mask: the hierarchical batch.
        ages, time_deltas: per-visit age (years) and days since the previous visit; each is
            required when its embedding is on.
        domain_ids: per-code domain; required when ``cfg.use_domain``.
        causal: override ``cfg.causal`` for this call.

    Shapes:
        codes, code_mask, domain_ids: ``(B, V, C)``; visit_mask, ages, time_deltas:
        ``(B, V)``; output: visit states ``(B, V, d)``, 0 at padded visits.

    Raises:
        ValueError: a batch that breaks the contract
        (:func:`~ehrseq.models.lstm.check_hierarchical_batch`: shapes, bool masks, a real code
        in a padded visit, a patient with no visit, codes outside the vocabulary), or a
        missing input that an enabled embedding needs.

    Example:
        >>> cfg = HierarchicalConfig.from_vocab(vocab, d_model=64, n_code_layers=1)  # doctest: +SKIP
        >>> states = HierarchicalBehrt(cfg)(**hierarchical_inputs(batch))  # doctest: +SKIP
        >>> states.shape  # (B, V, d)  # doctest: +SKIP

    References:
        Li, Y. et al. (2020). BEHRT. *Scientific Reports* 10, 7155; Li, Y. et al. (2023).
        Hi-BEHRT. *IEEE JBHI* 27(2), 1106-1117.
    """

    def __init__(self, cfg: HierarchicalConfig):
        super().__init__()
        self.cfg = cfg
        self.visit_encoder = VisitEncoder(cfg)
        self.embeddings = VisitEmbeddings(cfg)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                cfg.d_model,
                cfg.n_heads,
                cfg.d_ff,
                cfg.dropout,
                cfg.layer_norm_eps,
                attention_dropout=cfg.attention_dropout,
            )
            for _ in range(cfg.n_layers)
        )
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.apply(self._init_weights)
        if self.visit_encoder.pool is not None:
            nn.init.normal_(self.visit_encoder.pool.query, std=cfg.init_std)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=self.cfg.init_std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def _check(self, codes, code_mask, visit_mask, ages, time_deltas, domain_ids) -> None:
        cfg = self.cfg
        check_hierarchical_batch(
            codes, code_mask, visit_mask, ages, time_deltas, domain_ids, cfg.vocab_size
        )
        needed = {
            "ages": (ages, cfg.use_age),
            "time_deltas": (time_deltas, cfg.time_embedding != "none"),
            "domain_ids": (domain_ids, cfg.use_domain),
        }
        for name, (t, used) in needed.items():
            if used and t is None:
                raise ValueError(f"the config embeds {name} but none was passed (or switch it off)")

    def forward(
        self,
        codes: Tensor,
        code_mask: Tensor,
        visit_mask: Tensor,
        ages: Tensor | None = None,
        time_deltas: Tensor | None = None,
        domain_ids: Tensor | None = None,
        causal: bool | None = None,
    ) -> Tensor:
        self._check(codes, code_mask, visit_mask, ages, time_deltas, domain_ids)
        B, V, _ = codes.shape
        z = self.visit_encoder(codes, code_mask, visit_mask, domain_ids)  # (B, V, d)
        x = self.embeddings(z, ages, time_deltas)  # (B, V, d)
        visit_ids = visit_slots(visit_mask)  # (B, V), one id per visit, 0 at pad
        causal = self.cfg.causal if causal is None else causal
        if causal:
            mask = visit_causal_mask(visit_ids, visit_mask)  # (B, 1, V, V)
        else:
            mask = visit_mask[:, None, None, :]  # (B, 1, 1, V)
        for block in self.blocks:
            x = block(x, mask)  # (B, V, d)
        x = self.norm(x)  # (B, V, d)
        return x * visit_mask[..., None].to(x.dtype)  # (B, V, d), 0 at padded visits
