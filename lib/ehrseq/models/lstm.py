r"""An LSTM over visits: the recurrent baseline of the book's sequence models.

Written bottom-up, like nanoGPT's ``model.py``: the helpers every visit-level model shares
(reading the hierarchical batch, a masked mean of code embeddings), then :class:`LSTMConfig`
and :class:`VisitLSTM`, a pure encoder: visit states in, no head.
:class:`~ehrseq.models.survival_model.SurvivalModel` puts a survival head on it.

The input is the **hierarchical batch** of :mod:`ehrseq.data.tensors`
(:meth:`~ehrseq.data.tensors.FlatEncoding.pad_hierarchical`,
:func:`~ehrseq.data.tensors.collate_hierarchical`): ``codes (B, V, C)``, ``code_mask (B, V,
C)``, ``visit_mask (B, V)``, per-visit ``ages`` (years) and ``time_deltas`` (days since the
previous visit). It already groups codes by visit, so pooling is a masked mean over the last
axis -- no scatter over ``visit_ids`` is needed.

.. math::
    \bar e_{b,t} = \frac{\sum_c m_{b,t,c}\, E[c_{b,t,c}]}{\max(1, \sum_c m_{b,t,c})}, \qquad
    x_{b,t} = \bigl[\bar e_{b,t};\ a_{b,t} / a_\max;\
              \log(1 + \Delta_{b,t}) / \log(1 + \Delta_\max)\bigr]

.. math::
    (h_{b,t}, c_{b,t}) = \text{LSTM}(x_{b,t}, h_{b,t-1}, c_{b,t-1})

The time features (age at the visit, log days since the previous visit, both scaled to about
``[0, 1]``) are appended when ``use_time`` is on, so a chapter can ablate them. With
``time_inputs="embeddings"`` the LSTM instead reads the inputs BEHRT reads, in BEHRT's form:
the code embedding plus a domain embedding before pooling, then, once per visit, an embedding
of the age in ``age_bin_years`` bins and of the gap in logarithmic bins
(:func:`~ehrseq.models.behrt.age_bins`, :func:`~ehrseq.models.behrt.log_time_bins`, the
formulas of :class:`~ehrseq.models.behrt.BehrtEmbeddings`), added to the pooled vector:

.. math::
    x_{b,t} = \frac{\sum_c m_{b,t,c}\,(E[c_{b,t,c}] + D[o_{b,t,c}])}{\max(1, \sum_c m_{b,t,c})}
              + E_\text{age}[\lfloor a_{b,t} / w \rfloor] + E_\text{time}(\Delta_{b,t})

(the visit's position needs no embedding: the recurrence reads the visits in order). A
fair comparison with BEHRT gives both models the same information in the same form. The LSTM runs
forward only, on **packed** sequences (``pack_padded_sequence``): padded visits are never fed
to it, so they cannot change the state of a real visit, and :math:`h_{b,t}` depends on visits
:math:`\le t` only, so a per-visit head on these states
(:class:`~ehrseq.models.survival_head.VisitHazardHead`) never sees the future.

Reference:
    Hochreiter, S., Schmidhuber, J. (1997). Long short-term memory. *Neural Computation* 9(8),
    1735-1780. Choi, E. et al. (2016). Doctor AI: predicting clinical events via recurrent
    neural networks. *MLHC* 56, 301-318 (visits as pooled code vectors fed to an RNN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ehrseq.data.tensors import N_DOMAIN_IDS
from ehrseq.models.behrt import age_bins, log_time_bins

__all__ = [
    "HIERARCHICAL_INPUTS",
    "hierarchical_inputs",
    "check_hierarchical_batch",
    "masked_mean_codes",
    "visit_slots",
    "LSTMConfig",
    "VisitLSTM",
]

#: Keys of the hierarchical batch that the visit-level models read.
HIERARCHICAL_INPUTS = ("codes", "code_mask", "visit_mask", "ages", "time_deltas", "domain_ids")


# ---------------------------------------------------------------------------------------------
# The hierarchical batch, shared by the visit-level models
# ---------------------------------------------------------------------------------------------


def hierarchical_inputs(batch: dict) -> dict[str, Tensor]:
    """The keys of a hierarchical batch that a visit-level model reads: ``model(**hierarchical_inputs(batch))``."""
    return {k: batch[k] for k in HIERARCHICAL_INPUTS if k in batch}


def check_hierarchical_batch(
    codes: Tensor,
    code_mask: Tensor,
    visit_mask: Tensor,
    ages: Tensor | None = None,
    time_deltas: Tensor | None = None,
    domain_ids: Tensor | None = None,
    vocab_size: int | None = None,
    prefix: bool = False,
) -> None:
    """Raise a clear ``ValueError`` when a hierarchical batch does not fit the contract.

    Args:
        codes, code_mask, visit_mask, ages, time_deltas, domain_ids: the hierarchical batch
            (:mod:`ehrseq.data.tensors`); the optional ones are checked when given.
        vocab_size: when given, every code must lie in ``[0, vocab_size)``.
        prefix: require the real visits of each patient to come first (right padding), as
            ``pack_padded_sequence`` needs.

    Shapes:
        codes, code_mask, domain_ids: ``(B, V, C)``; visit_mask, ages, time_deltas: ``(B, V)``.

    Raises:
        ValueError: wrong ranks or shapes, masks that are not bool, a real code in a padded
            visit, a patient with no real visit, codes outside the vocabulary, or (with
            ``prefix``) a real visit after a padded one.
    """
    if codes.dim() != 3:
        raise ValueError(
            f"codes must be (B, V, C) (a hierarchical batch), got {tuple(codes.shape)}"
        )
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
    B, V, _ = codes.shape
    for name, t, shape in (
        ("code_mask", code_mask, codes.shape),
        ("visit_mask", visit_mask, (B, V)),
        ("ages", ages, (B, V)),
        ("time_deltas", time_deltas, (B, V)),
        ("domain_ids", domain_ids, codes.shape),
    ):
        if t is not None and t.shape != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
    for name, m in (("code_mask", code_mask), ("visit_mask", visit_mask)):
        if m.dtype != torch.bool:
            raise ValueError(f"{name} must be a bool tensor, got {m.dtype}")
    if bool((code_mask & ~visit_mask[..., None]).any()):
        raise ValueError("code_mask is True in a visit that visit_mask marks as padding")
    if B and not bool(visit_mask.any(1).all()):
        empty = (~visit_mask.any(1)).nonzero().flatten()[:5].tolist()
        raise ValueError(f"visit_mask is all padding for batch rows {empty}")
    if vocab_size is not None and codes.numel():
        lo, hi = int(codes.min()), int(codes.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(f"codes span [{lo}, {hi}], outside the vocabulary [0, {vocab_size})")
    if prefix and V > 1 and bool((visit_mask[:, 1:] & ~visit_mask[:, :-1]).any()):
        raise ValueError("real visits must come first in each row (right padding of visit_mask)")


def visit_slots(visit_mask: Tensor) -> Tensor:
    """Visit ids of a hierarchical batch: ``t + 1`` on real visit slot ``t``, 0 on padding.

    The flat batch's ``visit_ids`` convention, so a visit-level state can go where a token
    state goes (one token per visit): the causal mask, :func:`~ehrseq.models.survival_head.pool_visits`.

    Shapes:
        visit_mask: ``(B, V)`` bool; output ``(B, V)`` long.
    """
    B, V = visit_mask.shape
    slot = torch.arange(1, V + 1, device=visit_mask.device).expand(B, V)  # (B, V)
    return torch.where(visit_mask, slot, 0)  # (B, V), 1..V on real visits, 0 at pad


def masked_mean_codes(code_states: Tensor, code_mask: Tensor) -> Tensor:
    r"""Mean of the real code states of each visit; 0 for a visit with no real code.

    .. math::
        \bar x_{b,t} = \frac{\sum_c m_{b,t,c}\, x_{b,t,c}}{\max(1, \sum_c m_{b,t,c})}

    ``torch.where`` (not a product) drops padded slots, so a NaN or inf there cannot leak in.

    Args:
        code_states: one vector per code slot.
        code_mask: True on real codes.

    Shapes:
        code_states: ``(B, V, C, d)``; code_mask: ``(B, V, C)``; output ``(B, V, d)``.

    Raises:
        ValueError: if the shapes do not match.
    """
    if code_states.dim() != 4 or code_states.shape[:3] != code_mask.shape:
        raise ValueError(
            f"code_states (B, V, C, d) and code_mask (B, V, C) do not match: "
            f"{tuple(code_states.shape)} vs {tuple(code_mask.shape)}"
        )
    m = code_mask[..., None]  # (B, V, C, 1)
    total = torch.where(m, code_states, 0.0).sum(2)  # (B, V, d)
    count = m.sum(2).clamp(min=1).to(code_states.dtype)  # (B, V, 1)
    return total / count


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


@dataclass
class LSTMConfig:
    """Sizes of the visit LSTM and its inputs.

    Attributes:
        vocab_size: number of token ids (``len(vocab)``).
        pad_id: id of ``[PAD]`` (kept for symmetry with :class:`~ehrseq.models.BehrtConfig`;
            the masks, not the id, decide what is padding).
        d_embed: width of a code embedding (and of the pooled visit vector).
        d_hidden: width of the LSTM state (the visit states a head reads).
        n_layers: stacked LSTM layers.
        dropout: on the pooled visit vectors and between LSTM layers.
        use_time: read the age at the visit and the days since the previous visit.
        time_inputs: how (with ``use_time``): ``"scalar"`` appends
            :math:`[a / a_\\max,\\ \\log(1 + \\Delta) / \\log(1 + \\Delta_\\max)]` to the
            pooled visit vector; ``"embeddings"`` adds BEHRT's age-bin and log-gap-bin
            embeddings to it (module docstring).
        use_domain: add a domain embedding to each code before pooling (as BEHRT does).
        max_age: ages are divided by it (``"scalar"``) or clamped into the last bin (years).
        max_time_days: :math:`\\log(1 + \\Delta)` is divided by :math:`\\log(1 + \\Delta_\\max)`.
        age_bin_years: width of an age bin (``"embeddings"``; 1.0 as in BEHRT).
        n_time_bins: logarithmic gap bins (``"embeddings"``; 32 as in BEHRT).
        n_domains: domain ids (``use_domain``).
    """

    vocab_size: int
    pad_id: int = 0
    d_embed: int = 64
    d_hidden: int = 64
    n_layers: int = 1
    dropout: float = 0.1
    use_time: bool = True
    time_inputs: Literal["scalar", "embeddings"] = "scalar"
    use_domain: bool = False
    max_age: float = 110.0
    max_time_days: float = 36525.0
    age_bin_years: float = 1.0
    n_time_bins: int = 32
    n_domains: int = N_DOMAIN_IDS

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_embed", "d_hidden", "n_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} = {getattr(self, name)}: must be at least 1")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout = {self.dropout}: must be in [0, 1)")
        if self.max_age <= 0 or self.max_time_days <= 0 or self.age_bin_years <= 0:
            raise ValueError("max_age, max_time_days and age_bin_years must be positive")
        if self.time_inputs not in ("scalar", "embeddings"):
            raise ValueError(f"time_inputs = {self.time_inputs!r}: 'scalar' or 'embeddings'")
        if self.n_time_bins < 2 or self.n_domains < 1:
            raise ValueError("n_time_bins must be at least 2 and n_domains at least 1")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(
                f"pad_id = {self.pad_id} is outside the vocabulary (0..{self.vocab_size - 1})"
            )

    @property
    def n_time_features(self) -> int:
        """Scalars appended to the pooled visit vector (2 with scalar time inputs, else 0)."""
        return 2 if self.use_time and self.time_inputs == "scalar" else 0

    @property
    def n_age_bins(self) -> int:
        return int(math.floor(self.max_age / self.age_bin_years)) + 1

    @classmethod
    def from_vocab(cls, vocab, **overrides) -> LSTMConfig:
        """A config sized for ``vocab`` (anything with ``len()`` and ``stoi["[PAD]"]``)."""
        return cls(vocab_size=len(vocab), pad_id=vocab.stoi["[PAD]"], **overrides)


class VisitLSTM(nn.Module):
    r"""Visit LSTM encoder: one state per visit (see the module docstring for the formulas).

    Args:
        cfg: an :class:`LSTMConfig` (``LSTMConfig.from_vocab(vocab, d_hidden=...)``).

    Forward args:
        codes, code_mask, visit_mask: the hierarchical batch.
        ages, time_deltas: per-visit age (years) and days since the previous visit; required
            when ``cfg.use_time``.
        domain_ids: the domain of every code; read with ``cfg.use_domain`` (then required),
            otherwise ignored, so ``model(**hierarchical_inputs(batch))`` always works.

    Shapes:
        codes, code_mask: ``(B, V, C)``; visit_mask, ages, time_deltas: ``(B, V)``;
        output: visit states ``(B, V, d_hidden)``, 0 at padded visits.

    Raises:
        ValueError: a batch that breaks the contract (:func:`check_hierarchical_batch`), real
            visits that are not a prefix of the row, missing time inputs with ``use_time``, or
            missing ``domain_ids`` with ``use_domain``.

    Example:
        >>> encoder = VisitLSTM(LSTMConfig.from_vocab(vocab))  # doctest: +SKIP
        >>> states = encoder(**hierarchical_inputs(batch))  # (B, V, d_hidden)  # doctest: +SKIP
        >>> model = SurvivalModel(encoder, BinHazardHead(64, n_bins))  # doctest: +SKIP
        >>> out = model(batch)  # out.hazards (B, n_bins)  # doctest: +SKIP
    """

    def __init__(self, cfg: LSTMConfig):
        super().__init__()
        self.cfg = cfg
        self.code = nn.Embedding(cfg.vocab_size, cfg.d_embed)
        self.domain = nn.Embedding(cfg.n_domains, cfg.d_embed) if cfg.use_domain else None
        embed_time = cfg.use_time and cfg.time_inputs == "embeddings"
        self.age = nn.Embedding(cfg.n_age_bins, cfg.d_embed) if embed_time else None
        self.gap = nn.Embedding(cfg.n_time_bins, cfg.d_embed) if embed_time else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.lstm = nn.LSTM(
            input_size=cfg.d_embed + cfg.n_time_features,
            hidden_size=cfg.d_hidden,
            num_layers=cfg.n_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.n_layers > 1 else 0.0,
        )

    def time_features(self, ages: Tensor, time_deltas: Tensor) -> Tensor:
        r""":math:`[a / a_\max,\ \log(1 + \Delta) / \log(1 + \Delta_\max)]`, ``(B, V)`` -> ``(B, V, 2)``."""
        age = ages / self.cfg.max_age  # (B, V)
        gap = torch.log1p(time_deltas.clamp(min=0)) / math.log1p(self.cfg.max_time_days)  # (B, V)
        return torch.stack([age, gap], dim=-1)  # (B, V, 2)

    def forward(
        self,
        codes: Tensor,
        code_mask: Tensor,
        visit_mask: Tensor,
        ages: Tensor | None = None,
        time_deltas: Tensor | None = None,
        domain_ids: Tensor | None = None,
    ) -> Tensor:
        cfg = self.cfg
        domains = domain_ids if cfg.use_domain else None
        check_hierarchical_batch(
            codes, code_mask, visit_mask, ages, time_deltas, domains, cfg.vocab_size, prefix=True
        )
        if cfg.use_time and (ages is None or time_deltas is None):
            raise ValueError("use_time needs ages and time_deltas (or set use_time=False)")
        if cfg.use_domain and domain_ids is None:
            raise ValueError("use_domain needs domain_ids (or set use_domain=False)")
        B, V, _ = codes.shape
        e = self.code(codes)  # (B, V, C, e)
        if self.domain is not None:
            e = e + self.domain(domain_ids)  # (B, V, C, e)
        x = masked_mean_codes(e, code_mask)  # (B, V, C, e) -> (B, V, e)
        if self.age is not None:  # BEHRT's age and gap embeddings, once per visit
            x = x + self.age(age_bins(ages, cfg.age_bin_years, cfg.n_age_bins))  # (B, V, e)
            x = x + self.gap(log_time_bins(time_deltas, cfg.n_time_bins, cfg.max_time_days))
        elif cfg.use_time:
            x = torch.cat([x, self.time_features(ages, time_deltas).to(x.dtype)], -1)  # (B, V, e+2)
        x = self.dropout(x)
        lengths = visit_mask.sum(1).cpu()  # (B,), real visits come first
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        h, _ = pad_packed_sequence(out, batch_first=True, total_length=V)  # (B, V, d_hidden)
        return h  # 0 at padded visits
