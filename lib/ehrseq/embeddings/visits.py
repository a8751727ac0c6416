r"""Visit-level code embeddings: codes pooled into a visit by attention, trained as Med2Vec.

A visit is the set of distinct known codes a patient has on one day (the corpus,
:class:`~ehrseq.embeddings.corpus.CodeCorpus`, carries days, not visit ids; same person and
same day is one visit). A visit :math:`t` with codes :math:`V_t` becomes a vector by
attention pooling over its code vectors :math:`x_c` (rows of the input table :math:`E`):

.. math::
    s_c = \frac{q^\top W_K x_c}{\sqrt d}, \qquad
    \alpha_c = \frac{e^{s_c}}{\sum_{c' \in V_t} e^{s_{c'}}}, \qquad
    h_t = \sum_{c \in V_t} \alpha_c\, x_c,

with a learned query :math:`q` and key map :math:`W_K`; padding gets weight 0. With
``per_type=True`` each code system (condition, drug, procedure, measurement: the OMOP domain
of the concept) has its own table, query and key map, so a visit gives one pooled vector
:math:`p_k` per type present, and one cross-attention step lets each type read the others
of the same visit,

.. math::
    p'_k = p_k + \sum_{j \ne k} \beta_{kj} W_V p_j, \qquad
    \beta_{kj} = \operatorname{softmax}_{j \ne k,\ j\ \text{present}}
        \frac{(W_Q p_k)^\top (W_{K'} p_j)}{\sqrt d}, \qquad
    h_t = \frac{1}{|K_t|}\sum_{k \in K_t} p'_k .

**The objective** is Med2Vec's visit-level one: from :math:`h_t` predict the multi-hot codes
:math:`y_{t+i}` of the visits :math:`t-w, \dots, t+w` (:math:`i \ne 0`) of the same patient,

.. math::
    \mathcal L_\text{visit} = -\frac{1}{\sum_t |N_t|}\sum_t \sum_{i \in N_t}\sum_{c}
        \Big[y_{t+i,c}\log \hat y_{t,c} + (1 - y_{t+i,c})\log(1 - \hat y_{t,c})\Big],

with :math:`\hat y_t = \operatorname{softmax}(W_s h_t + b_s)` (``objective="softmax"``: the
paper's equation and code, a softmax output under a binary cross-entropy) or
:math:`\hat y_t = \sigma(W_s h_t + b_s)` (``objective="bce"``: independent sigmoids, the usual
multi-label loss). :math:`N_t` are the neighbour visits that exist. Optionally Med2Vec's
code-level term, a skip-gram inside each visit with a full softmax over the codes,

.. math::
    \mathcal L_\text{code} = -\frac{1}{\#\text{pairs}}\sum_t \sum_{c \in V_t}
        \sum_{c' \in V_t,\, c' \ne c} \log
        \frac{e^{x_c^\top o_{c'}}}{\sum_{k} e^{x_c^\top o_k}},

is added with weight ``code_weight`` (here with separate output vectors :math:`o`, word2vec's
convention, where Med2Vec shares one ReLU table on both sides). The code vectors are the input
table :math:`E` (one row per code, whatever the pooling), returned as a
:class:`~ehrseq.embeddings.base.CodeEmbedding`.

Used by the chapter on medical-code embeddings (issue #17, item 2).

References:
    Choi et al., "Multi-layer representation learning for medical concepts" (Med2Vec),
    KDD 2016. Bahdanau et al., "Neural machine translation by jointly learning to align and
    translate", ICLR 2015 (attention pooling).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ehrseq.embeddings.base import CodeEmbedding
from ehrseq.embeddings.corpus import CodeCorpus
from ehrseq.embeddings.skipgram import context_windows
from ehrseq.embeddings.truth import concept_domains
from ehrseq.runtime import progress

__all__ = [
    "CODE_TYPES",
    "DOMAIN_TYPES",
    "Visits",
    "corpus_visits",
    "visit_neighbours",
    "neighbour_counts",
    "token_types",
    "VisitEncoder",
    "med2vec_visit_loss",
    "intra_visit_loss",
    "VisitEmbeddingConfig",
    "VisitModel",
    "VisitEmbeddingResult",
    "train_visit_embedding",
    "visit_vectors",
]

#: The code systems of the per-type tables, in table order.
CODE_TYPES = ("condition", "drug", "procedure", "measurement")
#: OMOP ``domain_id`` -> index into :data:`CODE_TYPES`.
DOMAIN_TYPES = {"Condition": 0, "Drug": 1, "Procedure": 2, "Measurement": 3}


# --------------------------------------------------------------------------------------------
# Visits from the corpus
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Visits:
    """Every visit of a corpus as a padded matrix of token indices.

    Attributes:
        codes: ``(M, L)`` int64 tokens of each visit (distinct, in increasing token order,
            i.e. most frequent first), ``0`` on padding.
        mask: ``(M, L)`` bool, ``True`` on a real code.
        person: ``(M,)`` int64 person of each visit; a person's visits are contiguous and in
            time order.
        days: ``(M,)`` float64 day of each visit.
        n_tokens: ``V``, the corpus's token count (unknown token included).
        n_unknown: events left out because their code was the unknown token.
        n_duplicate: events left out because their code repeated within a visit.
        n_truncated: codes left out because a visit had more than ``max_codes``.
    """

    codes: Tensor
    mask: Tensor
    person: np.ndarray
    days: np.ndarray
    n_tokens: int
    n_unknown: int = 0
    n_duplicate: int = 0
    n_truncated: int = 0

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    @property
    def max_codes(self) -> int:
        """``L``, the widest visit."""
        return int(self.codes.shape[1])

    def report(self) -> str:
        """Visits, persons, codes per visit, and what was left out (2 lines)."""
        sizes = self.mask.sum(1).double()
        return "\n".join(
            [
                f"{len(self):,} visits of {len(np.unique(self.person)):,} persons, "
                f"{float(sizes.mean()):.1f} codes per visit (max {self.max_codes})",
                f"left out: {self.n_unknown:,} unknown-code events, {self.n_duplicate:,} "
                f"repeats within a visit, {self.n_truncated:,} codes past max_codes",
            ]
        )


def corpus_visits(corpus: CodeCorpus, max_codes: int | None = None) -> Visits:
    r"""Group a corpus's codes into visits (same person, same day) as padded tensors.

    Vectorised: one sort of the events by (person, day, token), a ``cumsum`` over visit
    starts and one scatter into the padded matrix; no loop over patients. A visit keeps each
    known code once; the unknown token (``0``, also the padding) is left out, and a day whose
    codes are all unknown is no visit. All three drops are counted.

    Args:
        corpus: the codes (:class:`~ehrseq.embeddings.corpus.CodeCorpus`).
        max_codes: keep at most this many codes per visit (the most frequent tokens);
            ``None`` keeps all.

    Shapes:
        ``codes`` and ``mask`` ``(M, L)``, ``L`` the widest visit (or ``max_codes``);
        ``person`` and ``days`` ``(M,)``.

    Raises:
        ValueError: on ``max_codes < 1`` or a corpus without a known code.
    """
    if max_codes is not None and max_codes < 1:
        raise ValueError(f"corpus_visits: max_codes must be >= 1 or None, got {max_codes}")
    known = corpus.tokens != 0
    n_unknown = int((~known).sum())
    if not known.any():
        raise ValueError("corpus_visits: the corpus has no known code (every token is 0)")
    person, days, tokens = corpus.person[known], corpus.days[known], corpus.tokens[known]
    order = np.lexsort((tokens, days, person))  # person, then day, then token
    person, days, tokens = person[order], days[order], tokens[order]
    same_visit = (person[1:] == person[:-1]) & (days[1:] == days[:-1])  # (n-1,)
    repeat = np.r_[False, same_visit & (tokens[1:] == tokens[:-1])]
    n_duplicate = int(repeat.sum())
    person, days, tokens = person[~repeat], days[~repeat], tokens[~repeat]
    new = np.r_[True, (person[1:] != person[:-1]) | (days[1:] != days[:-1])]  # (n,)
    visit = np.cumsum(new) - 1  # (n,) visit index of each code
    starts = np.flatnonzero(new)  # (M,)
    pos = np.arange(len(tokens)) - starts[visit]  # (n,) place within the visit
    width = int(pos.max()) + 1
    n_truncated = 0
    if max_codes is not None and width > max_codes:
        keep = pos < max_codes
        n_truncated = int((~keep).sum())
        visit, pos, tokens = visit[keep], pos[keep], tokens[keep]
        width = max_codes
    codes = np.zeros((len(starts), width), dtype=np.int64)  # (M, L)
    codes[visit, pos] = tokens
    codes_t = torch.from_numpy(codes)
    return Visits(
        codes=codes_t,
        mask=codes_t != 0,
        person=person[starts].copy(),
        days=days[starts].copy(),
        n_tokens=len(corpus.concept_ids),
        n_unknown=n_unknown,
        n_duplicate=n_duplicate,
        n_truncated=n_truncated,
    )


def visit_neighbours(person: np.ndarray, window: int) -> tuple[Tensor, Tensor]:
    """For every visit, the visits ``t - w .. t + w`` (``!= t``) of the same person.

    :func:`ehrseq.embeddings.skipgram.context_windows` on visits instead of events.

    Shapes:
        ``person`` ``(M,)``; returns indices ``(M, 2w)`` int64 (the visit itself where there
        is no neighbour) and a mask ``(M, 2w)`` bool.

    Raises:
        ValueError: on ``window < 1``.
    """
    if not (isinstance(window, int | np.integer) and window >= 1):
        raise ValueError(f"visit_neighbours: window must be an integer >= 1, got {window!r}")
    idx, mask = context_windows(np.asarray(person), int(window))
    return torch.from_numpy(idx.astype(np.int64)), torch.from_numpy(mask)


def neighbour_counts(
    visits: Visits, rows: Tensor, nbr_idx: Tensor, nbr_mask: Tensor
) -> tuple[Tensor, Tensor]:
    r"""Summed multi-hot codes of each visit's neighbours: :math:`\sum_{i \in N_t} y_{t+i}`.

    Args:
        visits: all visits.
        rows: ``(B,)`` the visits :math:`t` of the batch.
        nbr_idx, nbr_mask: ``(M, 2w)`` from :func:`visit_neighbours`.

    Shapes:
        Returns ``counts`` ``(B, V - 1)`` float32 (column ``c - 1`` counts the neighbours that
        hold token ``c``; the unknown token has no column) and ``n`` ``(B,)`` float32, the
        neighbours :math:`|N_t|`.
    """
    idx = nbr_idx[rows]  # (B, 2w)
    ok = nbr_mask[rows]  # (B, 2w)
    codes = visits.codes[idx]  # (B, 2w, L)
    real = visits.mask[idx] & ok[..., None]  # (B, 2w, L)
    b = len(rows)
    counts = torch.zeros(b, visits.n_tokens)
    counts.scatter_add_(1, codes.reshape(b, -1), real.reshape(b, -1).float())  # (B, V)
    return counts[:, 1:], ok.sum(1).float()


def token_types(concept_ids: np.ndarray, domains: Mapping[int, str] | pd.Series) -> np.ndarray:
    """The code type of every token, from the OMOP domain of its concept.

    Args:
        concept_ids: ``(V,)`` the corpus's concept ids (``concept_ids[0]`` the unknown token,
            which gets type 0 and is never read).
        domains: concept id -> OMOP ``domain_id`` (e.g.
            :func:`ehrseq.embeddings.truth.concept_domains`).

    Shapes:
        Returns ``(V,)`` int64 indices into :data:`CODE_TYPES`.

    Raises:
        ValueError: naming the codes without a domain or with one outside
            :data:`DOMAIN_TYPES`, and how many there are.
    """
    d = pd.Series(domains)
    d.index = d.index.astype(np.int64)
    d = d[~d.index.duplicated(keep="first")]
    ids = np.asarray(concept_ids, dtype=np.int64)
    got = d.reindex(ids[1:]).map(DOMAIN_TYPES)  # (V-1,)
    bad = got.isna().to_numpy()
    if bad.any():
        found = d.reindex(ids[1:][bad]).fillna("<none>")
        raise ValueError(
            f"token_types: {int(bad.sum())} codes have no domain among {sorted(DOMAIN_TYPES)}, "
            f"e.g. {dict(list(found.items())[:5])}"
        )
    return np.r_[0, got.to_numpy().astype(np.int64)]


# --------------------------------------------------------------------------------------------
# The encoder
# --------------------------------------------------------------------------------------------


class VisitEncoder(nn.Module):
    r"""Code vectors -> visit vector by attention pooling (formulas in the module docstring).

    Args:
        n_tokens: ``V``, tokens of the corpus (token 0 is the padding, its vector stays 0).
        dim: ``d``.
        types: ``(V,)`` int64 code type of each token (:func:`token_types`); ``None``: one
            table and one query for every code.
        cross_attention: with ``types``, one cross-attention step between the pooled vectors
            of the types present in a visit (``False``: the types' vectors are only averaged).
        generator: seeds the initialisation (code vectors uniform in :math:`\pm 0.5/d`, as
            word2vec's).

    Shapes:
        ``forward(codes (B, L), mask (B, L))`` -> ``(B, d)``.

    Raises:
        ValueError: on ``dim < 1``, ``types`` of the wrong length or out of range, and in
            ``forward`` on a visit without a real code or tokens out of range.
    """

    def __init__(
        self,
        n_tokens: int,
        dim: int,
        types: np.ndarray | None = None,
        cross_attention: bool = True,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if dim < 1 or n_tokens < 2:
            raise ValueError(
                f"VisitEncoder: need dim >= 1 and n_tokens >= 2, got {dim}, {n_tokens}"
            )
        self.n_tokens, self.dim = n_tokens, dim
        self.per_type = types is not None
        self.cross_attention = bool(cross_attention) and self.per_type
        n_types = len(CODE_TYPES) if self.per_type else 1
        if types is None:
            tt = np.zeros(n_tokens, dtype=np.int64)
        else:
            tt = np.asarray(types, dtype=np.int64)
            if tt.shape != (n_tokens,) or tt.min() < 0 or tt.max() >= n_types:
                raise ValueError(
                    f"VisitEncoder: types must be ({n_tokens},) in [0, {n_types}), "
                    f"got shape {tt.shape}"
                )
        tt = tt.copy()
        tt[0] = 0  # padding
        # token -> row of its type's table (row 0 of every table is the padding)
        local = np.zeros(n_tokens, dtype=np.int64)
        sizes = []
        for k in range(n_types):
            members = np.flatnonzero(tt == k)
            members = members[members != 0]
            local[members] = np.arange(1, len(members) + 1)
            sizes.append(len(members))
        self.register_buffer("types", torch.from_numpy(tt), persistent=False)
        self.register_buffer("local", torch.from_numpy(local), persistent=False)
        self.register_buffer("kinds", torch.arange(n_types), persistent=False)
        self.tables = nn.ModuleList(nn.Embedding(n + 1, dim, padding_idx=0) for n in sizes)
        with torch.no_grad():
            for table in self.tables:
                table.weight[1:].uniform_(-0.5 / dim, 0.5 / dim, generator=generator)
        self.queries = nn.Parameter(torch.zeros(n_types, dim))  # (K, d): uniform attention
        self.keys = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(n_types))
        if self.cross_attention:
            self.cross_q = nn.Linear(dim, dim, bias=False)
            self.cross_k = nn.Linear(dim, dim, bias=False)
            self.cross_v = nn.Linear(dim, dim, bias=False)

    def code_vectors(self) -> Tensor:
        """The input table as one ``(V, d)`` matrix, row ``t`` for token ``t`` (row 0 zero)."""
        if not self.per_type:
            return self.tables[0].weight  # (V, d), token t on row t
        out = torch.zeros(self.n_tokens, self.dim, device=self.queries.device)
        for k, table in enumerate(self.tables):
            rows = (self.types == k).nonzero().squeeze(1)  # (V_k,)
            out = out.index_copy(0, rows, table(self.local[rows]))
        return out

    def attend(self, codes: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Visit vectors with their attention weights.

        Shapes:
            ``codes``, ``mask`` ``(B, L)``. Returns ``h`` ``(B, d)``; ``alpha`` ``(B, K, L)``
            (``K = 1`` with one table; per type, the weights over that type's codes, all 0
            where the visit has none); ``beta`` ``(B, K, K)`` the cross-attention weights
            (``None`` without it).
        """
        if codes.shape != mask.shape or codes.dim() != 2:
            raise ValueError(
                f"VisitEncoder: codes and mask must both be (B, L), got {tuple(codes.shape)} "
                f"and {tuple(mask.shape)}"
            )
        if not mask.any(-1).all():
            row = int((~mask.any(-1)).nonzero()[0, 0])
            raise ValueError(f"VisitEncoder: visit {row} of the batch has no real code")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.n_tokens):
            raise ValueError(f"VisitEncoder: tokens must lie in [0, {self.n_tokens})")
        codes = codes.masked_fill(~mask, 0)  # whatever sits under the padding is ignored
        x = F.embedding(codes, self.code_vectors())  # (B, L, d)
        # q_k^T W_k x = (W_k^T q_k)^T x: one (d,) vector per type instead of a (B, L, d) map
        u = torch.stack([key.weight.T @ q for key, q in zip(self.keys, self.queries)], 1)
        s = x @ u / math.sqrt(self.dim)  # (B, L, K)
        if self.per_type:
            of_type = self.types[codes][:, None, :] == self.kinds[None, :, None]  # (B, K, L)
            m = mask[:, None, :] & of_type  # (B, K, L)
        else:
            m = mask[:, None, :]  # (B, 1, L)
        s = s.transpose(1, 2).masked_fill(~m, float("-inf"))  # (B, K, L)
        has = m.any(-1, keepdim=True)  # (B, K, 1)
        alpha = torch.softmax(torch.where(has, s, torch.zeros_like(s)), -1) * m  # (B, K, L)
        p = alpha @ x  # (B, K, d)
        scale = 1.0 / math.sqrt(self.dim)
        if not self.per_type:
            return p[:, 0], alpha, None
        present = m.any(-1)  # (B, K) types in the visit
        beta = None
        if self.cross_attention:
            n_types = p.shape[1]
            q, k_, v = self.cross_q(p), self.cross_k(p), self.cross_v(p)  # (B, K, d) each
            s = q @ k_.transpose(1, 2) * scale  # (B, K, K)
            others = ~torch.eye(n_types, dtype=torch.bool, device=p.device)  # (K, K)
            allowed = present[:, :, None] & present[:, None, :] & others  # (B, K, K)
            s = s.masked_fill(~allowed, float("-inf"))
            has = allowed.any(-1, keepdim=True)  # (B, K, 1)
            beta = torch.softmax(torch.where(has, s, torch.zeros_like(s)), -1) * allowed
            p = p + beta @ v  # (B, K, d)
        w = present.float()  # (B, K)
        h = (w[..., None] * p).sum(1) / w.sum(1, keepdim=True)  # (B, d)
        return h, alpha, beta

    def forward(self, codes: Tensor, mask: Tensor) -> Tensor:
        """Visit vectors ``(B, d)`` (:meth:`attend` without the weights)."""
        return self.attend(codes, mask)[0]


# --------------------------------------------------------------------------------------------
# Objectives
# --------------------------------------------------------------------------------------------


def med2vec_visit_loss(
    logits: Tensor, counts: Tensor, n_neighbours: Tensor, objective: str = "softmax"
) -> Tensor:
    r"""Med2Vec's visit-level loss (module docstring), mean over (visit, neighbour) pairs.

    With :math:`Y_t = \sum_{i \in N_t} y_{t+i}` (``counts``) and :math:`n_t = |N_t|`, the
    sum over neighbours collapses to

    .. math:: \mathcal L = -\frac{1}{\sum_t n_t}\sum_t\sum_c \Big[Y_{t,c}\log\hat y_{t,c}
        + (n_t - Y_{t,c})\log(1 - \hat y_{t,c})\Big],

    :math:`\hat y_t = \operatorname{softmax}(z_t)` for ``"softmax"`` (Med2Vec's), or
    :math:`\sigma(z_t)` for ``"bce"``.

    Args:
        logits: :math:`z_t`, scores of every code.
        counts: :math:`Y_t`, neighbours holding each code.
        n_neighbours: :math:`n_t`.
        objective: ``"softmax"`` or ``"bce"``.

    Shapes:
        ``logits``, ``counts`` ``(B, C)``; ``n_neighbours`` ``(B,)``; returns a scalar.

    Raises:
        ValueError: on an unknown objective, mismatched shapes, counts outside
            ``[0, n_t]``, or a batch without a neighbour.
    """
    if objective not in ("softmax", "bce"):
        raise ValueError(f"med2vec_visit_loss: objective must be softmax or bce, got {objective!r}")
    if logits.shape != counts.shape or n_neighbours.shape != logits.shape[:1]:
        raise ValueError(
            f"med2vec_visit_loss: need logits, counts (B, C) and n_neighbours (B,); got "
            f"{tuple(logits.shape)}, {tuple(counts.shape)}, {tuple(n_neighbours.shape)}"
        )
    n = n_neighbours[:, None]  # (B, 1)
    if (counts < 0).any() or (counts > n).any():
        raise ValueError("med2vec_visit_loss: counts must lie in [0, n_neighbours]")
    total = n_neighbours.sum()
    if total <= 0:
        raise ValueError("med2vec_visit_loss: no visit of the batch has a neighbour")
    if objective == "softmax":
        log_p = torch.log_softmax(logits, -1)  # (B, C)
        log_q = torch.log((-torch.expm1(log_p)).clamp_min(1e-12))  # (B, C)
    else:
        log_p, log_q = F.logsigmoid(logits), F.logsigmoid(-logits)  # (B, C)
    return -(counts * log_p + (n - counts) * log_q).sum() / total


def intra_visit_loss(inputs: Tensor, outputs: Tensor, codes: Tensor, mask: Tensor) -> Tensor:
    r"""Med2Vec's code-level term: a skip-gram over every ordered pair of codes of a visit.

    .. math:: -\frac{1}{\#\text{pairs}}\sum_{(c, c')} \log
        \frac{e^{x_c^\top o_{c'}}}{\sum_{k=1}^{C} e^{x_c^\top o_k}}

    The softmax depends on the center code only, so it is computed once per code (a
    ``(V, C)`` table) and read for every pair.

    Args:
        inputs: input vectors :math:`x` of every token (row ``t`` for token ``t``).
        outputs: output vectors :math:`o` of every known code (token ``k + 1`` is row ``k``).
        codes: the visits' tokens (``>= 1`` where ``mask``).
        mask: real codes.

    Shapes:
        ``inputs`` ``(V, d)``, ``outputs`` ``(C, d)`` with ``C = V - 1``, ``codes`` and
        ``mask`` ``(B, L)``; returns a scalar (0 when no visit has two codes).

    Raises:
        ValueError: when ``outputs`` does not have one row per known token.
    """
    if outputs.shape != (inputs.shape[0] - 1, inputs.shape[1]):
        raise ValueError(
            f"intra_visit_loss: need inputs (V, d) and outputs (V - 1, d), got "
            f"{tuple(inputs.shape)} and {tuple(outputs.shape)}"
        )
    log_p = torch.log_softmax(inputs @ outputs.T, -1)  # (V, C): log p(c' | c)
    target = (codes - 1).clamp_min(0)  # (B, L) columns of log_p
    g = log_p[codes[:, :, None], target[:, None, :]]  # (B, L_c, L_c')
    eye = torch.eye(codes.shape[1], dtype=torch.bool, device=codes.device)
    pairs = mask[:, :, None] & mask[:, None, :] & ~eye  # (B, L, L)
    n = pairs.sum()
    if n == 0:
        return log_p.sum() * 0.0
    return -(g * pairs).sum() / n


# --------------------------------------------------------------------------------------------
# Model and training
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VisitEmbeddingConfig:
    """Settings of :func:`train_visit_embedding`.

    Attributes:
        dim: vector length ``d``.
        per_type: a table, query and key map per code type (:data:`CODE_TYPES`).
        cross_attention: with ``per_type``, one cross-attention step between the types.
        window: ``w``, neighbour visits on each side whose codes are predicted (1 or 2 is
            usual; the default 1 predicts the previous and the next visit).
        objective: ``"softmax"`` (Med2Vec's softmax output under a binary cross-entropy) or
            ``"bce"`` (independent sigmoids).
        code_weight: weight of the intra-visit code-level skip-gram (0: off).
        epochs: passes over the visits.
        batch_size: visits per step.
        lr: Adam's step size.
        max_codes: codes kept per visit (``None``: all).
        seed: seeds the initialisation and the shuffles.
        progress: show a progress bar over epochs.
    """

    dim: int = 32
    per_type: bool = False
    cross_attention: bool = True
    window: int = 1
    objective: str = "softmax"
    code_weight: float = 0.0
    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.01
    max_codes: int | None = None
    seed: int = 0
    progress: bool = False

    def validate(self) -> VisitEmbeddingConfig:
        """Raise ``ValueError`` naming the first setting that does not make sense."""
        checks = [
            (self.dim >= 1, "dim must be >= 1"),
            (self.window >= 1, "window must be >= 1"),
            (self.objective in ("softmax", "bce"), "objective must be 'softmax' or 'bce'"),
            (self.code_weight >= 0, "code_weight must be >= 0"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.max_codes is None or self.max_codes >= 1, "max_codes must be >= 1 or None"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"VisitEmbeddingConfig: {message} (got {self})")
        return self


class VisitModel(nn.Module):
    """The encoder, the neighbour-code head :math:`W_s, b_s` and the output code vectors.

    Shapes:
        ``loss(codes (B, L), mask (B, L), counts (B, V-1), n (B,))`` -> scalar.
    """

    def __init__(
        self,
        n_tokens: int,
        cfg: VisitEmbeddingConfig,
        types: np.ndarray | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        self.encoder = VisitEncoder(
            n_tokens, cfg.dim, types if cfg.per_type else None, cfg.cross_attention, generator
        )
        self.head = nn.Linear(cfg.dim, n_tokens - 1)  # W_s, b_s over the known codes
        self.outputs = nn.Parameter(torch.zeros(n_tokens - 1, cfg.dim))  # code-level o

    def loss(self, codes: Tensor, mask: Tensor, counts: Tensor, n: Tensor) -> Tensor:
        """Visit loss plus ``code_weight`` times the intra-visit term."""
        h = self.encoder(codes, mask)  # (B, d)
        loss = med2vec_visit_loss(self.head(h), counts, n, self.cfg.objective)
        if self.cfg.code_weight > 0:
            table = self.encoder.code_vectors()  # (V, d)
            code_loss = intra_visit_loss(table, self.outputs, codes, mask)
            loss = loss + self.cfg.code_weight * code_loss
        return loss


@dataclass
class VisitEmbeddingResult:
    """What :func:`train_visit_embedding` returns.

    Attributes:
        embedding: the input table's rows of the known codes (unknown token left out).
        losses: mean training loss of each epoch (per batch, weighted by its neighbours).
        model: the trained :class:`VisitModel` (``model.encoder`` gives visit vectors).
        visits: the corpus's visits.
        n_trained: visits with at least one neighbour (the training rows).
        train_seconds: wall time of training (visits and neighbours included).
        config: the settings used.
    """

    embedding: CodeEmbedding
    losses: list[float]
    model: VisitModel = field(repr=False)
    visits: Visits = field(repr=False)
    n_trained: int
    train_seconds: float
    config: VisitEmbeddingConfig


def train_visit_embedding(
    corpus: CodeCorpus,
    cfg: VisitEmbeddingConfig | None = None,
    domains: Mapping[int, str] | pd.Series | None = None,
) -> VisitEmbeddingResult:
    r"""Train code vectors with Med2Vec's visit objective over attention-pooled visits.

    The visits are :func:`corpus_visits`; each step takes ``batch_size`` visits with at least
    one neighbour (shuffled every epoch), pools them (:class:`VisitEncoder`), predicts the
    codes of their neighbours within ``window`` (:func:`med2vec_visit_loss`, plus
    :func:`intra_visit_loss` with ``code_weight``) and takes one Adam step. Seeded: the same
    corpus and config give the same vectors (on a CPU).

    Args:
        corpus: the codes.
        cfg: settings (default :class:`VisitEmbeddingConfig`).
        domains: concept id -> OMOP domain, for ``per_type`` (e.g.
            :func:`ehrseq.embeddings.truth.concept_domains`); ``None`` with ``per_type``
            reads the project's vocabulary.

    Returns:
        :class:`VisitEmbeddingResult`; ``.embedding`` is a
        :class:`~ehrseq.embeddings.base.CodeEmbedding` of the input table.

    Raises:
        ValueError: on a bad config, a corpus without two visits of one person, or (with
            ``per_type``) a code outside the four domains.
    """
    cfg = (cfg or VisitEmbeddingConfig()).validate()
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.seed)
    visits = corpus_visits(corpus, cfg.max_codes)
    nbr_idx, nbr_mask = visit_neighbours(visits.person, cfg.window)
    rows_all = nbr_mask.any(1).nonzero().squeeze(1)  # (M',) visits with a neighbour
    if len(rows_all) == 0:
        raise ValueError("train_visit_embedding: no person has two visits (no neighbour)")
    types = None
    if cfg.per_type:
        if domains is None:
            domains = concept_domains()
        types = token_types(corpus.concept_ids, domains)
    with torch.random.fork_rng():  # the linear maps draw from the global RNG: seed it here
        torch.manual_seed(cfg.seed)
        model = VisitModel(visits.n_tokens, cfg, types, generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    losses: list[float] = []
    bar = progress(total=cfg.epochs, desc="visit embedding", disable=not cfg.progress)
    for _ in range(cfg.epochs):
        perm = rows_all[torch.randperm(len(rows_all), generator=gen)]
        total, weight = 0.0, 0.0
        for start in range(0, len(perm), cfg.batch_size):
            rows = perm[start : start + cfg.batch_size]  # (B,)
            counts, n = neighbour_counts(visits, rows, nbr_idx, nbr_mask)  # (B, V-1), (B,)
            mask = visits.mask[rows]  # (B, L)
            width = int(mask.sum(1).max())
            codes, mask = visits.codes[rows, :width], mask[:, :width]  # (B, L_b)
            loss = model.loss(codes, mask, counts, n)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * float(n.sum())
            weight += float(n.sum())
        losses.append(total / weight)
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()
    with torch.no_grad():
        vectors = model.encoder.code_vectors().numpy()[1:].copy()
    return VisitEmbeddingResult(
        embedding=CodeEmbedding(corpus.concept_ids[1:], vectors),
        losses=losses,
        model=model,
        visits=visits,
        n_trained=len(rows_all),
        train_seconds=time.perf_counter() - t0,
        config=cfg,
    )


def visit_vectors(
    encoder: VisitEncoder | VisitModel | VisitEmbeddingResult,
    visits: Visits,
    batch_size: int = 4096,
) -> Tensor:
    """The vector of every visit, :math:`h_t` of the module docstring, without gradients.

    Args:
        encoder: a trained encoder (or the model or result that holds one).
        visits: the visits (e.g. :func:`corpus_visits` of a corpus with the same tokens).
        batch_size: visits per forward pass.

    Shapes:
        Returns ``(M, d)`` float32, row ``t`` for ``visits.codes[t]``.

    Raises:
        ValueError: when the visits' token count differs from the encoder's, or
            ``batch_size < 1``.
    """
    if isinstance(encoder, VisitEmbeddingResult):
        encoder = encoder.model
    if isinstance(encoder, VisitModel):
        encoder = encoder.encoder
    if visits.n_tokens != encoder.n_tokens:
        raise ValueError(
            f"visit_vectors: visits have {visits.n_tokens} tokens, the encoder {encoder.n_tokens}"
        )
    if batch_size < 1:
        raise ValueError(f"visit_vectors: batch_size must be >= 1, got {batch_size}")
    out = []
    with torch.no_grad():
        for start in range(0, len(visits), batch_size):
            out.append(
                encoder(
                    visits.codes[start : start + batch_size],
                    visits.mask[start : start + batch_size],
                )
            )
    return torch.cat(out) if out else torch.zeros(0, encoder.dim)
