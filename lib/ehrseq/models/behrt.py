r"""BEHRT: a BERT encoder over a patient's codes, with age, visit, position, time and domain.

Written bottom-up, like nanoGPT's ``model.py``: :class:`BehrtConfig`, the embedding helpers,
:class:`BehrtEmbeddings` (the sum of the input embeddings), then :class:`BehrtEncoder` (the
embeddings, a stack of pre-LayerNorm :class:`~ehrseq.models.attention.TransformerBlock`, a
final LayerNorm). The input is the flat batch of :mod:`ehrseq.data.tensors`.

.. math::
    e_{b,l} = E_\text{code}[c_{b,l}] + E_\text{age}[\lfloor a_{b,l} / w \rfloor]
            + E_\text{visit}[v_{b,l}] + P[p_{b,l}] + E_\text{time}(\Delta_{b,l})
            + E_\text{domain}[o_{b,l}],
    \qquad h^{(0)} = \text{dropout}(\text{LN}(e))

Every term but the code can be switched off in the config, so a chapter can ablate it.

- **age** ``ages`` (years, float) binned by ``age_bin_years``, clamped to ``max_age``.
- **visit** ``visit_ids``: ``"index"`` embeds the visit number (clamped to ``max_visits``);
  ``"segment"`` is BEHRT's alternating A/B segment (odd/even visits).
- **position** ``positions``: ``"learned"`` table or fixed ``"sinusoidal"`` code.
- **time** ``time_deltas`` (days since the previous token): ``"log_bins"`` embeds
  :math:`\lceil (n-1)\log(1+\Delta) / \log(1+\Delta_\max)\rceil` (0 days, same visit, has its own
  bin), ``"log_linear"`` projects :math:`\log(1+\Delta)` with a ``Linear(1, d)``.
- **domain** ``domain_ids`` (condition, drug, ..., special; :data:`N_DOMAIN_IDS` values).

``causal=True`` applies :func:`~ehrseq.models.attention.visit_causal_mask`: the hidden state of
a token of visit :math:`t` depends only on visits :math:`\le t`, what forward prediction needs.

Reference:
    Li et al., *BEHRT: Transformer for electronic health records*, Scientific Reports 10,
    7155 (2020). Derived in the BEHRT chapter of the book.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ehrseq.data.tensors import N_DOMAIN_IDS
from ehrseq.models.attention import TransformerBlock, padding_mask, visit_causal_mask

__all__ = [
    "ENCODER_INPUTS",
    "BehrtConfig",
    "BehrtEmbeddings",
    "BehrtEncoder",
    "age_bins",
    "encoder_inputs",
    "log_time_bins",
    "sinusoidal_table",
]

#: Keys of the flat batch that :class:`BehrtEncoder` reads (the rest are labels and ids).
ENCODER_INPUTS = (
    "codes",
    "attention_mask",
    "ages",
    "visit_ids",
    "positions",
    "time_deltas",
    "domain_ids",
)


@dataclass
class BehrtConfig:
    """Sizes of a BEHRT encoder and which input embeddings it sums.

    Attributes:
        vocab_size: number of token ids (``len(vocab)``).
        pad_id: id of ``[PAD]``; used only when no ``attention_mask`` is passed.
        d_model: width :math:`d`.
        n_layers: transformer blocks.
        n_heads: attention heads (divides ``d_model``).
        d_ff: feed-forward hidden width.
        dropout: on the embeddings and the residual branches.
        attention_dropout: on the attention probabilities (BERT: 0.1). Off by default: on a
            CPU, drawing a mask over every score costs about a third of a training step
            (one epoch of chapter 5's joint pretraining, one thread: 20.7 s with 0.1, 13.1 s
            without); the dropout on the embeddings and residual branches stays.
        max_len: longest sequence accepted (size of the position table).
        use_age: add the binned-age embedding.
        age_bin_years: width of an age bin in years (1.0: BEHRT's yearly ages).
        max_age: ages above are clamped into the last bin.
        visit_embedding: ``"index"``, ``"segment"`` or ``"none"``.
        max_visits: visit numbers above are clamped (``"index"`` only).
        position_embedding: ``"learned"``, ``"sinusoidal"`` or ``"none"``.
        time_embedding: ``"log_bins"``, ``"log_linear"`` or ``"none"``.
        n_time_bins: bins of ``"log_bins"``.
        max_time_days: gaps above are clamped into the last bin.
        use_domain: add the domain (code type) embedding.
        n_domains: domain ids (0 pad, 1..7 domains, 8 special).
        causal: visit-level causal mask (forward prediction) instead of padding only.
        layer_norm_eps: LayerNorm epsilon.
        init_std: standard deviation of the normal initialisation (BERT: 0.02).
    """

    vocab_size: int
    pad_id: int = 0
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 512
    dropout: float = 0.1
    attention_dropout: float = 0.0
    max_len: int = 512
    use_age: bool = True
    age_bin_years: float = 1.0
    max_age: float = 110.0
    visit_embedding: Literal["index", "segment", "none"] = "index"
    max_visits: int = 512
    position_embedding: Literal["learned", "sinusoidal", "none"] = "learned"
    time_embedding: Literal["log_bins", "log_linear", "none"] = "log_bins"
    n_time_bins: int = 32
    max_time_days: float = 36525.0
    use_domain: bool = True
    n_domains: int = N_DOMAIN_IDS
    causal: bool = False
    layer_norm_eps: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self) -> None:
        choices = {
            "visit_embedding": ("index", "segment", "none"),
            "position_embedding": ("learned", "sinusoidal", "none"),
            "time_embedding": ("log_bins", "log_linear", "none"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} = {getattr(self, name)!r}: expected one of {allowed}")
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} = {getattr(self, name)}: must be at least 1")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model = {self.d_model} is not divisible by n_heads = {self.n_heads}"
            )
        for name in ("dropout", "attention_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} = {getattr(self, name)}: must be in [0, 1)")
        if self.age_bin_years <= 0 or self.max_age <= 0 or self.max_time_days <= 0:
            raise ValueError("age_bin_years, max_age and max_time_days must be positive")
        if self.n_time_bins < 2 or self.max_visits < 1:
            raise ValueError("n_time_bins must be at least 2 and max_visits at least 1")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(
                f"pad_id = {self.pad_id} is outside the vocabulary (0..{self.vocab_size - 1})"
            )

    @property
    def n_age_bins(self) -> int:
        return int(math.floor(self.max_age / self.age_bin_years)) + 1

    @classmethod
    def from_vocab(cls, vocab, **overrides) -> BehrtConfig:
        """A config sized for ``vocab`` (an :class:`ehrseq.data.vocab.Vocab` or anything with
        ``len()`` and a ``stoi`` dict holding ``"[PAD]"``); ``overrides`` set the other fields."""
        return cls(vocab_size=len(vocab), pad_id=vocab.stoi["[PAD]"], **overrides)


def sinusoidal_table(max_len: int, d_model: int) -> torch.Tensor:
    r"""Fixed position code of Vaswani et al. (2017).

    .. math:: P_{p, 2i} = \sin(p / 10000^{2i/d}), \qquad P_{p, 2i+1} = \cos(p / 10000^{2i/d})

    Shapes:
        output ``(max_len, d_model)`` float32.
    """
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]  # (max_len, 1)
    freq = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model)
    )
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(pos * freq)  # (max_len, ceil(d/2))
    table[:, 1::2] = torch.cos(pos * freq)[:, : d_model // 2]  # (max_len, floor(d/2))
    return table


def age_bins(ages: torch.Tensor, age_bin_years: float, n_age_bins: int) -> torch.Tensor:
    r"""Age bin :math:`\lfloor a / w \rfloor`, clamped to ``[0, n_age_bins - 1]``.

    Shared by the token embeddings here and the visit embeddings of
    :mod:`ehrseq.models.hierarchical`.

    Shapes:
        ages: any shape (years, float); output the same shape, long.
    """
    return torch.floor(ages / age_bin_years).long().clamp(0, n_age_bins - 1)


def log_time_bins(
    time_deltas: torch.Tensor, n_time_bins: int, max_time_days: float
) -> torch.Tensor:
    r"""Gap bin :math:`\lceil (n-1)\log(1+\Delta)/\log(1+\Delta_\max) \rceil` in ``[0, n-1]``.

    Bin 0 holds exactly 0 days (the same visit, or the first one); gaps above
    ``max_time_days`` fall into the last bin. Shared with :mod:`ehrseq.models.hierarchical`.

    Shapes:
        time_deltas: any shape (days, float); output the same shape, long.
    """
    scaled = torch.log1p(time_deltas.clamp(min=0)) / math.log1p(max_time_days)
    return torch.ceil(scaled * (n_time_bins - 1)).long().clamp(0, n_time_bins - 1)


def encoder_inputs(batch: dict) -> dict[str, torch.Tensor]:
    """The keys of a flat batch that :class:`BehrtEncoder` reads: ``encoder(**encoder_inputs(batch))``."""
    return {k: batch[k] for k in ENCODER_INPUTS if k in batch}


class BehrtEmbeddings(nn.Module):
    """Sum of the enabled input embeddings, then LayerNorm and dropout (see the module docstring).

    Args:
        cfg: the encoder's config.

    Shapes:
        every input ``(B, L)``; output ``(B, L, d)``.
    """

    def __init__(self, cfg: BehrtConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.code = nn.Embedding(cfg.vocab_size, d)
        self.age = nn.Embedding(cfg.n_age_bins, d) if cfg.use_age else None
        n_visit = {"index": cfg.max_visits + 1, "segment": 3, "none": 0}[cfg.visit_embedding]
        self.visit = nn.Embedding(n_visit, d) if n_visit else None
        self.position = (
            nn.Embedding(cfg.max_len, d) if cfg.position_embedding == "learned" else None
        )
        if cfg.position_embedding == "sinusoidal":
            self.register_buffer("sinusoid", sinusoidal_table(cfg.max_len, d), persistent=False)
        self.time_bins = (
            nn.Embedding(cfg.n_time_bins, d) if cfg.time_embedding == "log_bins" else None
        )
        self.time_proj = nn.Linear(1, d) if cfg.time_embedding == "log_linear" else None
        self.domain = nn.Embedding(cfg.n_domains, d) if cfg.use_domain else None
        self.norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    # -- bin helpers, each (B, L) -> (B, L) long --------------------------------------------
    def age_bins(self, ages: torch.Tensor) -> torch.Tensor:
        """``floor(ages / age_bin_years)`` clamped to ``[0, n_age_bins - 1]`` (:func:`age_bins`)."""
        return age_bins(ages, self.cfg.age_bin_years, self.cfg.n_age_bins)

    def visit_index(self, visit_ids: torch.Tensor) -> torch.Tensor:
        """Visit number clamped to ``max_visits`` (``"index"``), or 1/2 alternating (``"segment"``); 0 at pad."""
        if self.cfg.visit_embedding == "segment":
            return torch.where(visit_ids > 0, 1 + (visit_ids - 1) % 2, 0)
        return visit_ids.clamp(0, self.cfg.max_visits)

    def time_bin(self, time_deltas: torch.Tensor) -> torch.Tensor:
        r""":math:`\lceil (n-1)\log(1+\Delta)/\log(1+\Delta_\max) \rceil` in ``[0, n - 1]`` (:func:`log_time_bins`)."""
        return log_time_bins(time_deltas, self.cfg.n_time_bins, self.cfg.max_time_days)

    def forward(
        self,
        codes: torch.Tensor,
        ages: torch.Tensor | None = None,
        visit_ids: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        time_deltas: torch.Tensor | None = None,
        domain_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        cfg = self.cfg
        needed = {
            "ages": (ages, self.age is not None),
            "visit_ids": (visit_ids, self.visit is not None),
            "time_deltas": (time_deltas, cfg.time_embedding != "none"),
            "domain_ids": (domain_ids, self.domain is not None),
        }
        for name, (t, used) in needed.items():
            if used and t is None:
                raise ValueError(f"the config embeds {name} but none was passed (or switch it off)")
            if t is not None and t.shape != codes.shape:
                raise ValueError(f"{name} {tuple(t.shape)} differs from codes {tuple(codes.shape)}")
        B, L = codes.shape
        if positions is None:
            positions = torch.arange(L, device=codes.device).expand(B, L)  # (B, L)
        positions = positions.clamp(0, cfg.max_len - 1)

        x = self.code(codes)  # (B, L, d)
        if self.age is not None:
            x = x + self.age(self.age_bins(ages))  # (B, L, d)
        if self.visit is not None:
            x = x + self.visit(self.visit_index(visit_ids))  # (B, L, d)
        if self.position is not None:
            x = x + self.position(positions)  # (B, L, d)
        elif cfg.position_embedding == "sinusoidal":
            x = x + self.sinusoid[positions]  # (B, L, d)
        if self.time_bins is not None:
            x = x + self.time_bins(self.time_bin(time_deltas))  # (B, L, d)
        elif self.time_proj is not None:
            x = x + self.time_proj(torch.log1p(time_deltas.clamp(min=0))[..., None])  # (B, L, d)
        if self.domain is not None:
            x = x + self.domain(domain_ids)  # (B, L, d)
        return self.dropout(self.norm(x))


class BehrtEncoder(nn.Module):
    r"""BEHRT encoder: embeddings, ``n_layers`` pre-LN transformer blocks, a final LayerNorm.

    .. math:: h = \text{LN}\big(\text{Block}_N \circ \cdots \circ \text{Block}_1(h^{(0)})\big)

    Args:
        cfg: a :class:`BehrtConfig` (``BehrtConfig.from_vocab(vocab, d_model=...)``).

    Forward args:
        codes: vocabulary ids.
        attention_mask: True on real tokens; default ``codes != pad_id``.
        ages, visit_ids, positions, time_deltas, domain_ids: the flat-batch tensors; each is
            required when its embedding is on (``positions`` defaults to ``0..L-1``;
            ``visit_ids`` is also required by the causal mask).
        causal: override ``cfg.causal`` for this call (pretraining uses both).

    Shapes:
        every input ``(B, L)`` with ``L <= max_len``; output ``(B, L, d)``, zero at padding.

    Raises:
        ValueError: mismatched shapes, ``L > max_len``, a missing input an embedding needs, or
        a row that is all padding.

    Example:
        >>> cfg = BehrtConfig.from_vocab(vocab, d_model=64, n_layers=2)  # doctest: +SKIP
        >>> hidden = BehrtEncoder(cfg)(**encoder_inputs(batch))  # (B, L, 64)  # doctest: +SKIP

    Reference:
        Li et al., *BEHRT*, Scientific Reports 10, 7155 (2020); Devlin et al., *BERT* (2019).
    """

    def __init__(self, cfg: BehrtConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = BehrtEmbeddings(cfg)
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

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=self.cfg.init_std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def forward(
        self,
        codes: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        ages: torch.Tensor | None = None,
        visit_ids: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        time_deltas: torch.Tensor | None = None,
        domain_ids: torch.Tensor | None = None,
        causal: bool | None = None,
    ) -> torch.Tensor:
        cfg = self.cfg
        if codes.dim() != 2:
            raise ValueError(f"codes must be (B, L), got {tuple(codes.shape)}")
        if codes.shape[1] > cfg.max_len:
            raise ValueError(f"sequence length {codes.shape[1]} exceeds max_len = {cfg.max_len}")
        if attention_mask is None:
            attention_mask = codes != cfg.pad_id
        if attention_mask.shape != codes.shape:
            raise ValueError(
                f"attention_mask {tuple(attention_mask.shape)} differs from codes {tuple(codes.shape)}"
            )
        attention_mask = attention_mask.bool()
        causal = cfg.causal if causal is None else causal
        if causal:
            if visit_ids is None:
                raise ValueError("the visit-causal mask needs visit_ids")
            mask = visit_causal_mask(visit_ids, attention_mask)  # (B, 1, L, L)
        else:
            mask = padding_mask(attention_mask)  # (B, 1, 1, L)
            if bool(attention_mask.all()):
                mask = None  # nothing to hide: the unmasked kernel is faster
        x = self.embeddings(codes, ages, visit_ids, positions, time_deltas, domain_ids)  # (B, L, d)
        for block in self.blocks:
            x = block(x, mask)  # (B, L, d)
        x = self.norm(x)  # (B, L, d)
        return x * attention_mask[..., None].to(x.dtype)  # (B, L, d), zero at padding
