r"""Temporal skip-gram with negative sampling: code vectors from a patient's time-ordered record.

The objective (Mikolov et al. 2013, SGNS) with Med2Vec's idea that codes close in a record
are related, made time-aware: every ordered pair of positions :math:`(i, j)` of one patient
with :math:`0 < |i - j| \le W` is a (center, context) pair with weight

.. math:: w_{ij} = \exp(-|t_j - t_i| / \tau)

(:math:`t` in days; :math:`\tau = \infty` gives the plain skip-gram, every pair weight 1),
and the loss over a batch of pairs is

.. math::

    \mathcal{L} = \frac{1}{B}\sum_{b=1}^{B} w_b\Big[-\log\sigma(u_{c_b}^\top v_{o_b})
        - \sum_{k=1}^{K}\log\sigma(-u_{c_b}^\top v_{n_{bk}})\Big],
    \qquad n_{bk} \sim P_n(x) \propto \text{count}(x)^{0.75},

with input vectors :math:`u` (the embedding) and output vectors :math:`v`.

**Why not a softmax over the context codes only.** The design this module replaces normalised
each center's scores over the codes of its own window, :math:`p(o \mid c) = e^{u_c^\top v_o} /
\sum_{o' \in C} e^{u_c^\top v_{o'}}`. Each window's loss :math:`-\sum_{o \in C}\log p(o\mid c)`
is then at least :math:`m \log m` (:math:`m = |C|`, Gibbs' inequality), with equality exactly when
every score in the window is the same, so the embedding in which every vector is equal is a
global minimum and no term ever pushes unrelated codes apart: the loss can fall to its floor
while the vectors say nothing. :func:`context_softmax_collapse` shows it on data. SGNS fixes
it with the negatives, which are codes from *outside* the window.

Derived in the chapter on medical-code embeddings (issue #17).

References:
    Mikolov et al., "Distributed representations of words and phrases and their
    compositionality", NeurIPS 2013. Choi et al., "Multi-layer representation learning for
    medical concepts" (Med2Vec), KDD 2016.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ehrseq.embeddings.base import CodeEmbedding
from ehrseq.embeddings.corpus import CodeCorpus
from ehrseq.runtime import progress

__all__ = [
    "Pairs",
    "pair_positions",
    "pair_positions_loop",
    "skipgram_pairs",
    "context_windows",
    "negative_distribution",
    "sgns_loss",
    "sgns_grads",
    "context_softmax_loss",
    "SkipGramConfig",
    "SkipGram",
    "SkipGramResult",
    "train_skipgram",
    "CollapseDemo",
    "context_softmax_collapse",
]


# --------------------------------------------------------------------------------------------
# Pairs
# --------------------------------------------------------------------------------------------


def _check_sequence(person: np.ndarray, days: np.ndarray, window: int, tau: float) -> None:
    if len(person) != len(days):
        raise ValueError(f"pairs: person and days differ in length ({len(person)}, {len(days)})")
    if not (isinstance(window, int | np.integer) and window >= 1):
        raise ValueError(f"pairs: window must be an integer >= 1, got {window!r}")
    if not tau > 0:
        raise ValueError(f"pairs: tau must be > 0 (math.inf for the plain skip-gram), got {tau}")


def pair_positions(
    person: np.ndarray,
    days: np.ndarray,
    window: int,
    tau: float = math.inf,
    min_weight: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""All (center, context) position pairs within ``window`` of each other, with their weights.

    .. math:: \{(i, j): p_i = p_j,\ 0 < |i - j| \le W\}, \qquad
        w_{ij} = \exp(-|t_j - t_i| / \tau)

    Vectorised over the corpus: one pass per offset :math:`1..W` (both directions), no loop
    over patients. Pairs come offset by offset, not sorted; :func:`pair_positions_loop` is the
    loop it equals as a set.

    Args:
        person: ``(N,)`` person of each position; each person's positions are contiguous.
        days: ``(N,)`` times in days, non-decreasing within a person.
        window: :math:`W`, in positions.
        tau: :math:`\tau` in days; ``math.inf`` gives weight 1 to every pair.
        min_weight: pairs lighter than this are dropped (``0`` keeps all).

    Shapes:
        Returns ``center`` ``(P,)`` and ``context`` ``(P,)`` int64 positions and ``weight``
        ``(P,)`` float32.

    Raises:
        ValueError: on arrays of different lengths, ``window < 1`` or ``tau <= 0``.
    """
    person = np.asarray(person)
    days = np.asarray(days, dtype=np.float64)
    _check_sequence(person, days, window, tau)
    n = len(person)
    index_dtype = np.int32 if n < 2**31 else np.int64
    centers, contexts, weights = [], [], []
    for offset in range(1, window + 1):
        a = np.flatnonzero(person[: n - offset] == person[offset:]).astype(index_dtype)  # (P_o,)
        b = a + offset  # (P_o,)
        if math.isinf(tau):
            w = np.ones(len(a), dtype=np.float32)
        else:
            w = np.exp(-np.abs(days[b] - days[a]) / tau).astype(np.float32)
        if min_weight > 0:
            keep = w >= min_weight
            a, b, w = a[keep], b[keep], w[keep]
        centers += [a, b]
        contexts += [b, a]
        weights += [w, w]
    if not centers:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    return (
        np.concatenate(centers).astype(np.int64),
        np.concatenate(contexts).astype(np.int64),
        np.concatenate(weights),
    )


def pair_positions_loop(
    person: np.ndarray, days: np.ndarray, window: int, tau: float = math.inf
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same pairs as :func:`pair_positions`, by a loop over patients and positions.

    The didactic version and the test oracle; slow (Python loop per position).
    """
    person = np.asarray(person)
    days = np.asarray(days, dtype=np.float64)
    _check_sequence(person, days, window, tau)
    out_c, out_o, out_w = [], [], []
    n = len(person)
    start = 0
    while start < n:
        end = start
        while end < n and person[end] == person[start]:
            end += 1
        for i in range(start, end):
            for j in range(max(start, i - window), min(end, i + window + 1)):
                if j == i:
                    continue
                out_c.append(i)
                out_o.append(j)
                out_w.append(1.0 if math.isinf(tau) else math.exp(-abs(days[j] - days[i]) / tau))
        start = end
    return (
        np.array(out_c, dtype=np.int64),
        np.array(out_o, dtype=np.int64),
        np.array(out_w, dtype=np.float32),
    )


@dataclass(frozen=True, eq=False)
class Pairs:
    """Skip-gram training pairs as token indices.

    Attributes:
        center: ``(P,)`` int64 center tokens.
        context: ``(P,)`` int64 context tokens.
        weight: ``(P,)`` float32 pair weights :math:`w`.
        n_dropped_unknown: pairs left out because one side was the unknown token.
    """

    center: np.ndarray
    context: np.ndarray
    weight: np.ndarray
    n_dropped_unknown: int = 0

    def __len__(self) -> int:
        return len(self.center)


def skipgram_pairs(
    corpus: CodeCorpus, window: int, tau: float = math.inf, min_weight: float = 0.0
) -> Pairs:
    """The (center, context) token pairs of a corpus (:func:`pair_positions` on its tokens).

    The unknown token keeps its place in the sequence (it still separates codes) but pairs in
    which it is the center or the context are left out and counted.
    """
    i, j, w = pair_positions(corpus.person, corpus.days, window, tau, min_weight)
    c, o = corpus.tokens[i], corpus.tokens[j]
    known = (c != 0) & (o != 0)
    return Pairs(c[known], o[known], w[known], int((~known).sum()))


def context_windows(person: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """For every position, the positions of its window: ``(N, 2W)`` indices and a mask.

    Column ``k`` holds offset ``k - W`` for ``k < W`` and ``k - W + 1`` otherwise; outside the
    patient (or the corpus) the mask is ``False`` and the index is the position itself.
    """
    person = np.asarray(person)
    n = len(person)
    offsets = np.r_[np.arange(-window, 0), np.arange(1, window + 1)]  # (2W,)
    pos = np.arange(n)[:, None] + offsets[None, :]  # (N, 2W)
    inside = (pos >= 0) & (pos < n)
    safe = np.where(inside, pos, np.arange(n)[:, None])
    mask = inside & (person[safe] == person[:, None])
    return np.where(mask, safe, np.arange(n)[:, None]), mask


def negative_distribution(counts: np.ndarray, exponent: float = 0.75) -> np.ndarray:
    r"""The noise distribution :math:`P_n(x) \propto \text{count}(x)^{\alpha}` over tokens.

    Token 0 (unknown) gets probability 0. ``(V,)`` float64 summing to 1.

    Raises:
        ValueError: when no known token has a count.
    """
    p = np.asarray(counts, dtype=np.float64) ** exponent
    p[0] = 0.0
    if p.sum() <= 0:
        raise ValueError("negative_distribution: no known token occurs")
    return p / p.sum()


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def sgns_loss(u: Tensor, v: Tensor, v_neg: Tensor, weight: Tensor | None = None) -> Tensor:
    r"""Skip-gram negative-sampling loss, weighted mean over the batch.

    .. math:: \ell_b = w_b\Big[-\log\sigma(u_b^\top v_b)
        - \sum_{k=1}^{K}\log\sigma(-u_b^\top v_{bk})\Big], \qquad
        \mathcal{L} = \frac{1}{B}\sum_b \ell_b

    Args:
        u: center vectors.
        v: context vectors.
        v_neg: vectors of the negative samples.
        weight: pair weights (``None``: all 1).

    Shapes:
        ``u``, ``v``: ``(B, d)``; ``v_neg``: ``(B, K, d)``; ``weight``: ``(B,)``; returns a
        scalar.
    """
    if u.shape != v.shape or v_neg.dim() != 3 or v_neg.shape[0] != u.shape[0]:
        raise ValueError(
            f"sgns_loss: need u, v (B, d) and v_neg (B, K, d); got {tuple(u.shape)}, "
            f"{tuple(v.shape)}, {tuple(v_neg.shape)}"
        )
    pos = F.logsigmoid((u * v).sum(-1))  # (B,)
    neg = F.logsigmoid(-torch.bmm(v_neg, u.unsqueeze(-1)).squeeze(-1)).sum(-1)  # (B,)
    loss = -(pos + neg)  # (B,)
    if weight is not None:
        loss = loss * weight
    return loss.mean()


def context_softmax_loss(u: Tensor, v_ctx: Tensor, mask: Tensor) -> Tensor:
    r"""The degenerate objective: a softmax over each center's own context codes only.

    .. math:: \ell_i = -\sum_{o \in C_i} \log
        \frac{e^{u_i^\top v_o}}{\sum_{o' \in C_i} e^{u_i^\top v_{o'}}}
        \;\ge\; |C_i| \log |C_i|,

    with equality iff every score :math:`u_i^\top v_o`, :math:`o \in C_i`, is the same. Rows
    with an empty window contribute 0.

    Shapes:
        ``u``: ``(B, d)``; ``v_ctx``: ``(B, C, d)``; ``mask``: ``(B, C)`` bool; returns the
        per-center losses ``(B,)``.
    """
    s = torch.bmm(v_ctx, u.unsqueeze(-1)).squeeze(-1)  # (B, C)
    s = s.masked_fill(~mask, float("-inf"))
    has = mask.any(-1, keepdim=True)  # (B, 1)
    logp = torch.log_softmax(torch.where(has, s, torch.zeros_like(s)), dim=-1)  # (B, C)
    return -(logp.masked_fill(~mask, 0.0)).sum(-1)  # (B,)


# --------------------------------------------------------------------------------------------
# Model and training
# --------------------------------------------------------------------------------------------


def sgns_grads(
    u: Tensor, v: Tensor, v_neg: Tensor, weight: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""SGNS loss summed over a batch and its gradients, in closed form (no autograd).

    Pairs come in ``nb`` blocks of ``S = B / nb`` consecutive pairs; the pairs of a block
    share the block's ``K`` negatives (``S = 1``: every pair its own, as in word2vec). With
    :math:`s_b = u_b^\top v_b`, :math:`s_{bk} = u_b^\top v_{n_{bk}}`,

    .. math::
        L = \sum_b w_b\Big[-\log\sigma(s_b) - \sum_k \log\sigma(-s_{bk})\Big], \quad
        \frac{\partial L}{\partial s_b} = w_b(\sigma(s_b) - 1), \quad
        \frac{\partial L}{\partial s_{bk}} = w_b\,\sigma(s_{bk}),

    so :math:`\nabla_{u_b} = \frac{\partial L}{\partial s_b} v_b + \sum_k
    \frac{\partial L}{\partial s_{bk}} v_{n_{bk}}`, :math:`\nabla_{v_b} =
    \frac{\partial L}{\partial s_b} u_b`, and each negative gets :math:`\sum_{b \in
    \text{block}} \frac{\partial L}{\partial s_{bk}} u_b`. Equals autograd of
    ``B * sgns_loss(...)`` (tested).

    Shapes:
        ``u``, ``v``: ``(B, d)``; ``v_neg``: ``(nb, K, d)`` with ``B % nb == 0``;
        ``weight``: ``(B,)``. Returns the loss (scalar) and the gradients with respect to
        ``u`` ``(B, d)``, ``v`` ``(B, d)`` and ``v_neg`` ``(nb, K, d)``.
    """
    b, d = u.shape
    nb, k, _ = v_neg.shape
    if b % nb or v.shape != u.shape or weight.shape != (b,):
        raise ValueError(
            f"sgns_grads: need u, v (B, d), v_neg (nb, K, d) with nb dividing B, weight (B,); "
            f"got {tuple(u.shape)}, {tuple(v.shape)}, {tuple(v_neg.shape)}, {tuple(weight.shape)}"
        )
    s = b // nb
    sp = (u * v).sum(-1)  # (B,)
    ub = u.view(nb, s, d)  # (nb, S, d)
    sn = torch.bmm(ub, v_neg.transpose(1, 2))  # (nb, S, K)
    wb = weight.view(nb, s, 1)  # (nb, S, 1)
    sig_p, sig_n = torch.sigmoid(sp), torch.sigmoid(sn)  # (B,), (nb, S, K)
    # log sigma(x) from the sigmoid already computed (clamped: a saturated pair adds <= 69)
    loss = -(weight * sig_p.clamp_min(1e-30).log()).sum()
    loss = loss - (wb * (1.0 - sig_n).clamp_min(1e-30).log()).sum()
    gp = (sig_p - 1.0) * weight  # (B,)
    gn = sig_n * wb  # (nb, S, K)
    gu = torch.bmm(gn, v_neg).view(b, d).addcmul_(gp[:, None], v)  # (B, d)
    gv = gp[:, None] * u  # (B, d)
    g_neg = torch.bmm(gn.transpose(1, 2), ub)  # (nb, K, d)
    return loss, gu, gv, g_neg


@dataclass(frozen=True)
class SkipGramConfig:
    """Settings of :func:`train_skipgram`.

    Attributes:
        dim: vector length ``d``.
        window: :math:`W`, context positions on each side.
        tau: :math:`\\tau` in days of the time weight; ``math.inf`` is the plain skip-gram.
        negatives: :math:`K` negative samples per pair.
        share_negatives: ``S``, consecutive pairs of a shuffled batch that share their ``K``
            negatives (1: each pair its own, word2vec's way; larger: the negative scores become
            one small matrix product per block, several times faster; each pair still sees
            ``K`` draws from :math:`P_n`). ``batch_size`` is rounded up to a multiple.
        ns_exponent: exponent of the noise distribution (0.75).
        epochs: passes over the pairs.
        batch_size: pairs per step.
        lr: learning rate (SparseAdam: constant; SGD: start of a linear decay to
            ``lr * 1e-4``, word2vec's schedule, on the loss summed over the batch).
        optimizer: ``"sparse_adam"`` (Adam on the rows a batch touches, as
            ``torch.optim.SparseAdam``) or ``"sgd"`` (use small batches).
        autograd: train through ``nn.Embedding(sparse=True)``, autograd and ``torch.optim``
            (the reference, slower) instead of the closed-form gradients of :func:`sgns_grads`.
        min_weight: pairs with a smaller time weight are dropped before training.
        seed: seeds initialisation, shuffling and negatives.
        progress: show a progress bar over epochs (``EHRSEQ_NO_PROGRESS=1`` hides it).
    """

    dim: int = 64
    window: int = 5
    tau: float = math.inf
    negatives: int = 5
    share_negatives: int = 32
    ns_exponent: float = 0.75
    epochs: int = 5
    batch_size: int = 4096
    lr: float = 0.01
    optimizer: str = "sparse_adam"
    autograd: bool = False
    min_weight: float = 1e-3
    seed: int = 0
    progress: bool = True

    def validate(self) -> SkipGramConfig:
        """Raise ``ValueError`` naming the first setting that does not make sense."""
        checks = [
            (self.dim >= 1, "dim must be >= 1"),
            (self.window >= 1, "window must be >= 1"),
            (self.tau > 0, "tau must be > 0 (math.inf: plain skip-gram)"),
            (self.negatives >= 1, "negatives must be >= 1"),
            (self.share_negatives >= 1, "share_negatives must be >= 1"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.optimizer in ("sparse_adam", "sgd"), "optimizer must be 'sparse_adam' or 'sgd'"),
            (0 <= self.min_weight < 1, "min_weight must be in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"SkipGramConfig: {message} (got {self})")
        return self


class SkipGram(nn.Module):
    """Input and output code vectors, ``nn.Embedding(V, d, sparse=True)`` each.

    Initialised as word2vec does: inputs uniform in :math:`\\pm 0.5/d`, outputs zero.
    """

    def __init__(self, n_tokens: int, dim: int, generator: torch.Generator | None = None):
        super().__init__()
        self.inputs = nn.Embedding(n_tokens, dim, sparse=True)
        self.outputs = nn.Embedding(n_tokens, dim, sparse=True)
        with torch.no_grad():
            self.inputs.weight.uniform_(-0.5 / dim, 0.5 / dim, generator=generator)
            self.outputs.weight.zero_()

    def forward(self, center: Tensor, context: Tensor, negatives: Tensor, weight: Tensor) -> Tensor:
        """SGNS loss summed over a batch (the ``L`` of :func:`sgns_grads`).

        Shapes: ``center``, ``context``, ``weight`` ``(B,)``; ``negatives`` ``(nb, K)``.
        """
        b = len(center)
        nb, k = negatives.shape
        u = self.inputs(center)  # (B, d)
        v = self.outputs(context)  # (B, d)
        v_neg = self.outputs(negatives)  # (nb, K, d)
        v_neg = v_neg.repeat_interleave(b // nb, dim=0)  # (B, K, d)
        return sgns_loss(u, v, v_neg, weight) * b


class _RowAdam:
    """``torch.optim.SparseAdam``'s update applied to the rows a batch touched (same numbers)."""

    def __init__(self, weight: Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.weight, self.lr, self.betas, self.eps = weight, lr, betas, eps
        self.m = torch.zeros_like(weight)
        self.v = torch.zeros_like(weight)
        self.t = 0

    def step(self, rows: Tensor, grad: Tensor) -> None:
        b1, b2 = self.betas
        self.t += 1
        m_old, v_old = self.m[rows], self.v[rows]  # (n, d)
        m_new = m_old + (grad - m_old) * (1 - b1)
        v_new = v_old + (grad * grad - v_old) * (1 - b2)
        self.m[rows], self.v[rows] = m_new, v_new
        size = self.lr * math.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        self.weight[rows] -= size * m_new / (v_new.sqrt() + self.eps)


@dataclass
class SkipGramResult:
    """What :func:`train_skipgram` returns.

    Attributes:
        embedding: the input vectors of the known codes (the unknown token left out).
        losses: mean training loss per pair of each epoch.
        n_pairs: pairs per epoch; n_tokens: events in the corpus.
        n_unknown: events mapped to the unknown token (outside the vocabulary), n_rare: below
            ``min_count``; both from the corpus.
        pair_seconds, train_seconds: wall time of pair generation and of training.
        config: the settings used.
        output_vectors: ``(V - 1, d)`` the output (context) vectors, rows as ``embedding``.
    """

    embedding: CodeEmbedding
    losses: list[float]
    n_pairs: int
    n_tokens: int
    n_unknown: int
    n_rare: int
    pair_seconds: float
    train_seconds: float
    config: SkipGramConfig
    output_vectors: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0)))

    @property
    def words_per_second(self) -> float:
        """Corpus events times epochs over the wall time of pair generation and training."""
        seconds = self.pair_seconds + self.train_seconds
        return self.n_tokens * self.config.epochs / max(seconds, 1e-12)

    @property
    def pairs_per_second(self) -> float:
        """Pairs generated per second of :func:`skipgram_pairs`."""
        return self.n_pairs / max(self.pair_seconds, 1e-12)

    def report(self) -> str:
        """Pairs, loss, speed, and the events that became the unknown token (4 lines)."""
        return "\n".join(
            [
                f"skip-gram: {self.n_pairs:,} pairs/epoch, {self.config.epochs} epochs, "
                f"{self.words_per_second:,.0f} words/s",
                f"loss {self.losses[0]:.4f} -> {self.losses[-1]:.4f}",
                f"{self.n_unknown:,} events had a code outside the vocabulary",
                f"{self.n_rare:,} events had a rare code (both mapped to the unknown token)",
            ]
        )


def _noise_table(probs: np.ndarray) -> Tensor:
    """word2vec's unigram table: token ``t`` fills about ``p_t * T`` of ``T`` slots."""
    size = int(min(max(2**20, 64 * len(probs)), 2**26))
    reps = np.floor(np.cumsum(probs) * size + 0.5).astype(np.int64)
    reps = np.diff(np.r_[0, reps])
    return torch.from_numpy(np.repeat(np.arange(len(probs)), reps))


def train_skipgram(corpus: CodeCorpus, config: SkipGramConfig | None = None) -> SkipGramResult:
    r"""Train SGNS code vectors on a corpus (the loss in the module docstring), on the CPU.

    Pairs are generated once (:func:`skipgram_pairs`) and shuffled every epoch; each block of
    ``share_negatives`` pairs draws ``K`` negatives from :func:`negative_distribution` through
    word2vec's unigram table (a negative may equal the context, as in word2vec). The step uses
    the closed-form gradients of :func:`sgns_grads` and updates only the rows the batch
    touched (``autograd=True``: the same numbers through ``nn.Embedding`` and
    ``torch.optim``). Seeded: the same corpus and config give the same vectors.

    Args:
        corpus: the codes (:class:`~ehrseq.embeddings.corpus.CodeCorpus`).
        config: settings (default :class:`SkipGramConfig`).

    Raises:
        ValueError: on a bad config or a corpus without a single pair.
    """
    cfg = (config or SkipGramConfig()).validate()
    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()
    pairs = skipgram_pairs(corpus, cfg.window, cfg.tau, cfg.min_weight)
    pair_seconds = time.perf_counter() - t0
    if len(pairs) == 0:
        raise ValueError("train_skipgram: the corpus gives no (center, context) pair")
    center = torch.from_numpy(pairs.center)
    context = torch.from_numpy(pairs.context)
    weight = torch.from_numpy(pairs.weight)
    table = _noise_table(negative_distribution(corpus.counts, cfg.ns_exponent))

    n_tok = len(corpus.concept_ids)
    model = SkipGram(n_tok, cfg.dim, generator=gen)
    w_in, w_out = model.inputs.weight, model.outputs.weight
    if cfg.autograd:
        params = list(model.parameters())
        opt: torch.optim.Optimizer | None = (
            torch.optim.SparseAdam(params, lr=cfg.lr)
            if cfg.optimizer == "sparse_adam"
            else torch.optim.SGD(params, lr=cfg.lr)
        )
    else:
        opt = None
        adam_in, adam_out = _RowAdam(w_in.data, cfg.lr), _RowAdam(w_out.data, cfg.lr)
        g_in, g_out = torch.zeros(n_tok, cfg.dim), torch.zeros(n_tok, cfg.dim)
    n, s, k = len(pairs), cfg.share_negatives, cfg.negatives
    bsz = math.ceil(cfg.batch_size / s) * s
    total = math.ceil(n / bsz) * cfg.epochs
    losses: list[float] = []
    step = 0
    t1 = time.perf_counter()
    bar = progress(total=cfg.epochs, desc="skip-gram", disable=not cfg.progress)
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        # one shuffled copy per epoch, then contiguous slices (cheaper than a gather per batch)
        center_e, context_e, weight_e = center[perm], context[perm], weight[perm]
        total_loss = 0.0
        for start in range(0, n, bsz):
            c = center_e[start : start + bsz]  # (B,)
            o = context_e[start : start + bsz]  # (B,)
            w = weight_e[start : start + bsz]  # (B,)
            pad = -len(c) % s
            if pad:  # fill the last block with weight-0 pairs of the unknown token
                zero = torch.zeros(pad, dtype=c.dtype)
                c, o, w = torch.cat([c, zero]), torch.cat([o, zero]), torch.cat([w, zero.float()])
            nb = len(c) // s
            neg = table[torch.randint(0, len(table), (nb * k,), generator=gen)]  # (nb*K,)
            lr = cfg.lr * max(1e-4, 1.0 - step / total) if cfg.optimizer == "sgd" else cfg.lr
            if cfg.autograd:
                assert opt is not None
                for group in opt.param_groups:
                    group["lr"] = lr
                loss = model(c, o, neg.view(nb, k), w)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            else:
                with torch.no_grad():
                    u = w_in.index_select(0, c)  # (B, d)
                    v = w_out.index_select(0, o)  # (B, d)
                    v_neg = w_out.index_select(0, neg).view(nb, k, cfg.dim)  # (nb, K, d)
                    loss, gu, gv, g_neg = sgns_grads(u, v, v_neg, w)
                    if cfg.optimizer == "sgd":
                        w_in.index_add_(0, c, gu, alpha=-lr)
                        w_out.index_add_(0, o, gv, alpha=-lr)
                        w_out.index_add_(0, neg, g_neg.view(-1, cfg.dim), alpha=-lr)
                    else:
                        g_in.index_add_(0, c, gu)
                        g_out.index_add_(0, o, gv).index_add_(0, neg, g_neg.view(-1, cfg.dim))
                        rows_in = torch.bincount(c, minlength=n_tok).nonzero().squeeze(1)
                        rows_out = (
                            (
                                torch.bincount(o, minlength=n_tok)
                                + torch.bincount(neg, minlength=n_tok)
                            )
                            .nonzero()
                            .squeeze(1)
                        )
                        adam_in.step(rows_in, g_in[rows_in])
                        adam_out.step(rows_out, g_out[rows_out])
                        g_in[rows_in] = 0.0
                        g_out[rows_out] = 0.0
            total_loss += float(loss.detach())
            step += 1
        losses.append(total_loss / n)
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()
    train_seconds = time.perf_counter() - t1
    vectors = w_in.detach().numpy()[1:].copy()
    return SkipGramResult(
        embedding=CodeEmbedding(corpus.concept_ids[1:], vectors),
        losses=losses,
        n_pairs=n,
        n_tokens=corpus.n_tokens,
        n_unknown=corpus.n_unknown,
        n_rare=corpus.n_rare,
        pair_seconds=pair_seconds,
        train_seconds=train_seconds,
        config=cfg,
        output_vectors=w_out.detach().numpy()[1:].copy(),
    )


# --------------------------------------------------------------------------------------------
# The degenerate objective, shown on data
# --------------------------------------------------------------------------------------------


@dataclass
class CollapseDemo:
    """Numbers of :func:`context_softmax_collapse` (losses are means over centers).

    Attributes:
        floor: :math:`\\overline{m \\log m}`, the lowest value the loss can take.
        loss_init, loss_trained: at the random start and after training; ``losses`` the curve.
        loss_constant: of the embedding in which every vector is the same (equals ``floor``).
        loss_truth: of the ground-truth embedding (one direction per group), above the floor.
        score_sd_init, score_sd_trained: standard deviation of the scores
            :math:`u_i^\\top v_o` within a window, averaged over windows (goes to 0).
        nn_trained: nearest-neighbour accuracy of the trained input vectors;
        nn_sgns: the same for SGNS (:func:`train_skipgram`) on the same corpus and window;
        nn_truth: of the truth embedding (1); nn_chance: what a random embedding gets.
    """

    floor: float
    loss_init: float
    loss_trained: float
    loss_constant: float
    loss_truth: float
    score_sd_init: float
    score_sd_trained: float
    nn_trained: float
    nn_sgns: float
    nn_truth: float
    nn_chance: float
    losses: list[float]


def _window_score_sd(u: Tensor, v_ctx: Tensor, mask: Tensor) -> float:
    s = torch.bmm(v_ctx, u.unsqueeze(-1)).squeeze(-1)  # (B, C)
    m = mask.sum(-1).clamp(min=1)  # (B,)
    mean = (s * mask).sum(-1) / m
    var = (((s - mean[:, None]) ** 2) * mask).sum(-1) / m
    return float(var.sqrt()[mask.sum(-1) > 1].mean())


def context_softmax_collapse(
    corpus: CodeCorpus,
    labels,
    window: int = 5,
    dim: int = 32,
    steps: int = 300,
    lr: float = 0.05,
    max_centers: int = 20_000,
    sgns_epochs: int = 2,
    truth_scale: float = 3.0,
    seed: int = 0,
) -> CollapseDemo:
    r"""Train the context-only softmax (:func:`context_softmax_loss`) and show it learns nothing.

    On up to ``max_centers`` random centers of ``corpus`` (windows of ``window`` positions on
    each side), full-batch Adam from a random start (``N(0, 1/d)``) drives the loss to its
    floor :math:`\overline{m \log m}`; the embedding with every vector equal sits exactly on
    the floor, the ground-truth embedding (``truth_scale`` times a one-hot of each code's
    group in ``labels``; unlabelled codes get one direction each) above it. For contrast,
    :func:`train_skipgram` (SGNS) runs ``sgns_epochs`` epochs on the same corpus with the same
    window and dimension. Accuracies: :func:`ehrseq.embeddings.scores.nearest_neighbour_accuracy`.

    Args:
        corpus: the codes.
        labels: concept id -> group (Mapping or ``pd.Series``), e.g.
            :func:`ehrseq.embeddings.truth.disease_groups`.
        window, dim, steps, lr, max_centers, sgns_epochs, truth_scale, seed: as described.
    """
    from ehrseq.embeddings.scores import nearest_neighbour_accuracy, nearest_neighbour_chance

    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    ctx, mask = context_windows(corpus.person, window)  # (N, 2W)
    tok = corpus.tokens
    mask = mask & (tok[ctx] != 0) & (tok[:, None] != 0)
    rows = np.flatnonzero(mask.any(1))
    rows = rng.choice(rows, size=min(max_centers, len(rows)), replace=False)
    c = torch.from_numpy(tok[rows])  # (B,)
    o = torch.from_numpy(tok[ctx[rows]])  # (B, C)
    msk = torch.from_numpy(mask[rows])  # (B, C)
    m = msk.sum(-1).double()
    floor = float((m * torch.log(m)).mean())
    n_tok = len(corpus.concept_ids)

    def loss_of(u_w: Tensor, v_w: Tensor) -> float:
        return float(context_softmax_loss(u_w[c], v_w[o], msk).mean())

    u0 = torch.randn(n_tok, dim, generator=gen) / math.sqrt(dim)  # (V, d)
    v0 = torch.randn(n_tok, dim, generator=gen) / math.sqrt(dim)  # (V, d)
    sd_init = _window_score_sd(u0[c], v0[o], msk)
    u, v = u0.clone().requires_grad_(), v0.clone().requires_grad_()
    opt = torch.optim.Adam([u, v], lr=lr)
    losses = []
    for _ in range(steps):
        loss = context_softmax_loss(u[c], v[o], msk).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    u_t, v_t = u.detach(), v.detach()
    sgns = train_skipgram(
        corpus,
        SkipGramConfig(dim=dim, window=window, epochs=sgns_epochs, seed=seed, progress=False),
    )

    ones = torch.ones(n_tok, dim)
    group_of = {int(k): str(g) for k, g in dict(labels).items()}
    names = sorted(set(group_of.values()))
    col = {g: i for i, g in enumerate(names)}
    truth = torch.zeros(n_tok, len(names) + n_tok)
    for t, cid in enumerate(corpus.concept_ids):
        g = group_of.get(int(cid))
        truth[t, col[g] if g is not None else len(names) + t] = truth_scale

    known = corpus.concept_ids[1:]
    trained = CodeEmbedding(known, u_t.numpy()[1:])
    truth_emb = CodeEmbedding(known, truth.numpy()[1:])
    return CollapseDemo(
        floor=floor,
        loss_init=losses[0],
        loss_trained=losses[-1],
        loss_constant=loss_of(ones, ones),
        loss_truth=loss_of(truth, truth),
        score_sd_init=sd_init,
        score_sd_trained=_window_score_sd(u_t[c], v_t[o], msk),
        nn_trained=nearest_neighbour_accuracy(trained, labels),
        nn_sgns=nearest_neighbour_accuracy(sgns.embedding, labels),
        nn_truth=nearest_neighbour_accuracy(truth_emb, labels),
        nn_chance=nearest_neighbour_chance(trained, labels),
        losses=losses,
    )
