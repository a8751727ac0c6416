r"""GCT: a transformer over each visit's graph that learns the diagnosis-treatment links.

MiME needs to be told which diagnosis each treatment was for; plain OMOP does not say.
The Graph Convolutional Transformer (Choi et al., 2020) learns that structure: the nodes of
a visit (a visit node, its diagnoses, its treatments) attend to each other, only along the
edges a visit graph can have, and the first layer's attention is a data-driven prior.

Written bottom-up: :class:`GCTConfig`, the prior (:class:`ConditionalPrior`, fitted on the
training persons only), :func:`guide_mask`, :class:`GCTLayer`, :class:`GCT`, and
:func:`link_auroc`, which scores attention against the true links of the synthetic cohort.
The input is one graph per visit from :func:`ehrseq.data.visit_objects.pad_visit_graphs`:
``dx_codes (N, D)``, ``tx_codes (N, T)``, optionally ``lab_codes (N, L)`` (the visit's
measurement concepts; values are not read), and their masks. Nodes are ordered
``[visit, dx_1..dx_D, tx_1..tx_T, lab_1..lab_L]``, :math:`M = 1 + D + T (+ L)`.

**Guide mask.** Attention is allowed on visit :math:`\leftrightarrow` diagnosis, diagnosis
:math:`\leftrightarrow` treatment, treatment :math:`\leftrightarrow` lab (with labs) and from
a node to itself; every other pair (and every padded node) is masked out. A padded node attends to itself only, so it never reaches a real
node.

**Prior** (GCT code: computed on the training encounters only). Over the training visits,

.. math::
    P(t \mid d) = \frac{\#\{\text{visits with } d \text{ and } t\}}{\#\{\text{visits with } d\}},
    \qquad
    P(d \mid t) = \frac{\#\{\text{visits with } d \text{ and } t\}}{\#\{\text{visits with } t\}}

and per visit :math:`\tilde A_{d_i t_j} = P(t_j \mid d_i)`, :math:`\tilde A_{t_j d_i} =
P(d_i \mid t_j)` (with labs, likewise :math:`P(l \mid t)` and :math:`P(t \mid l)` on the
treatment-lab entries), the visit-diagnosis entries and the diagonal set to ``prior_scalar`` (0.5),
each row then normalised to sum to 1 over its allowed entries.

**Layers.** With :math:`X^{(0)} = [e_\text{visit}; E_{dx}[d]; E_{tx}[t]; E_{lab}[l]]` and one head,

.. math::
    A^{(1)} = \tilde A, \qquad
    A^{(l)} = \operatorname{softmax}\Bigl(\frac{Q^{(l)} K^{(l)\top}}{\sqrt{d}} + \log G\Bigr)
    \ (l \ge 2), \qquad
    X^{(l)} = \mathrm{LN}\bigl(Z + \mathrm{FFN}(Z)\bigr),\ Z = \mathrm{LN}\bigl(X^{(l-1)}
    + A^{(l)} X^{(l-1)} W_V^{(l)}\bigr)

(:math:`G` the guide mask; a post-norm transformer block). The visit node's last state is
the visit vector; a linear head gives a logit.

**Loss.** :math:`\mathrm{BCE} + \lambda_\text{KL} \frac{1}{L-1}\sum_{l=2}^{L}
\mathrm{KL}(A^{(l-1)} \,\|\, A^{(l)})` (GCT: :math:`\lambda_\text{KL} = 0.1`), each KL the
mean over the real nodes' rows, so each layer stays close to the one before and the first is
anchored at the prior.

**Patients** (beyond GCT, which predicts per encounter): :class:`GCTSurvival` arranges the
visit vectors of each person into a sequence (:func:`visit_sequences`), runs a forward GRU
over them, and puts a survival head of :mod:`ehrseq.models.survival_head` on the visit
states, as :class:`~ehrseq.models.mime.MiMESurvival` does for MiME: each visit's graph is
encoded alone, so the hazard after visit :math:`t` reads visits :math:`\le t` only.

Reference:
    Choi, E., Xu, Z., Li, Y., Dusenberry, M. W., Flores, G., Xue, Y., Dai, A. M. (2020).
    Learning the graphical structure of electronic health records with graph convolutional
    transformer. *AAAI* 34, 606-613. Code: ``Google-Health/records-research``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ehrseq.data.visit_objects import trim_graphs
from ehrseq.models.lstm import visit_slots
from ehrseq.models.survival_head import HazardOutput

__all__ = [
    "GCT_INPUTS",
    "GCT_LAB_INPUTS",
    "GCTConfig",
    "ConditionalPrior",
    "GCTLayer",
    "GCT",
    "GCTOutput",
    "GCTSurvival",
    "visit_sequences",
    "attention_kl",
    "guide_mask",
    "link_auroc",
]

#: Keys of the graph batch that :class:`GCT` reads.
GCT_INPUTS = ("dx_codes", "tx_codes", "dx_mask", "tx_mask")
#: Read as well when the model has lab nodes (``GCTConfig.n_lab > 0``).
GCT_LAB_INPUTS = ("lab_codes", "lab_mask")


@dataclass
class GCTConfig:
    """Sizes of GCT (defaults: the GCT paper's eICU setting, but a smaller width).

    Attributes:
        n_dx, n_tx: embedding rows (padding and unknown included): ``ObjectVocab.sizes[0]``
            and ``sizes[1] + sizes[2]`` (drugs, then procedures).
        n_lab: lab embedding rows (``ObjectVocab.n_lab``); 0: no lab nodes.
        d_model: node width (GCT: 128).
        n_layers: layers, the first of which uses the prior as its attention (GCT: 3).
        d_ff: feed-forward width (``None``: ``d_model``).
        dropout: on attention outputs and the feed-forward (GCT: 0.08).
        kl_weight: :math:`\\lambda_\\text{KL}` (GCT: 0.1).
    """

    n_dx: int
    n_tx: int
    n_lab: int = 0
    d_model: int = 64
    n_layers: int = 3
    d_ff: int | None = None
    dropout: float = 0.08
    kl_weight: float = 0.1

    def __post_init__(self) -> None:
        if self.n_dx < 2 or self.n_tx < 2:
            raise ValueError(f"n_dx, n_tx = {self.n_dx}, {self.n_tx}: need padding and unknown")
        if self.n_lab == 1 or self.n_lab < 0:
            raise ValueError(f"n_lab = {self.n_lab}: 0 (no labs) or >= 2")
        if self.d_model < 1 or self.n_layers < 1:
            raise ValueError("d_model and n_layers must be at least 1")
        if not 0 <= self.dropout < 1 or self.kl_weight < 0:
            raise ValueError("dropout must be in [0, 1) and kl_weight >= 0")

    @classmethod
    def from_vocab(cls, vocab, **overrides) -> GCTConfig:
        n_dx, n_rx, n_pr = vocab.sizes
        n_lab = vocab.n_lab if vocab.lab else 0
        return cls(**{"n_dx": n_dx, "n_tx": n_rx + n_pr, "n_lab": n_lab, **overrides})


def guide_mask(dx_mask: Tensor, tx_mask: Tensor, lab_mask: Tensor | None = None) -> Tensor:
    """Allowed attention ``(N, M, M)``: visit<->dx, dx<->tx, tx<->lab between real nodes, and
    every node (padded ones too) to itself.

    Shapes:
        dx_mask ``(N, D)``, tx_mask ``(N, T)``, lab_mask ``(N, L)`` (bool, optional); output
        ``(N, M, M)`` with ``M = 1 + D + T (+ L)``.
    """
    N = dx_mask.shape[0]
    parts = [dx_mask.new_ones(N, 1), dx_mask, tx_mask] + (
        [lab_mask] if lab_mask is not None else []
    )
    real = torch.cat(parts, 1)  # (N, M)
    M = real.shape[1]
    kind = torch.cat([torch.full((p.shape[1],), float(i)) for i, p in enumerate(parts)]).to(
        dx_mask.device
    )  # (M,): 0 visit, 1 dx, 2 tx, 3 lab
    a, b = kind[:, None], kind[None, :]
    edge = (a - b).abs() == 1  # neighbouring types: visit-dx, dx-tx, tx-lab
    allowed = edge[None] & real[:, :, None] & real[:, None, :]  # (N, M, M)
    return allowed | torch.eye(M, dtype=torch.bool, device=dx_mask.device)[None]


def _nodes(graphs: dict, with_labs: bool) -> tuple:
    """``dx, tx, lab, dx_mask, tx_mask, lab_mask`` of a graph batch (lab ones ``None``)."""
    missing = [k for k in GCT_INPUTS + (GCT_LAB_INPUTS if with_labs else ()) if k not in graphs]
    if missing:
        raise ValueError(f"the graph batch lacks {missing} (pad_visit_graphs gives them)")
    lab = graphs["lab_codes"] if with_labs else None
    lab_mask = graphs["lab_mask"] if with_labs else None
    return (
        graphs["dx_codes"],
        graphs["tx_codes"],
        lab,
        graphs["dx_mask"],
        graphs["tx_mask"],
        lab_mask,
    )


def _conditionals(
    a: Tensor, a_mask: Tensor, b: Tensor, b_mask: Tensor, n_a: int, n_b: int
) -> tuple[Tensor, Tensor]:
    """``P(b | a) (n_a, n_b)`` and ``P(a | b) (n_b, n_a)`` from per-visit distinct codes
    ``a (N, A)``, ``b (N, B)``: visits with both over visits with the condition."""
    pair = a_mask[:, :, None] & b_mask[:, None, :]  # (N, A, B)
    a_idx = a[:, :, None].expand_as(pair)[pair]
    b_idx = b[:, None, :].expand_as(pair)[pair]
    both = torch.zeros(n_a * n_b, dtype=torch.float64)
    both.index_add_(0, a_idx * n_b + b_idx, torch.ones(len(a_idx), dtype=torch.float64))
    both = both.reshape(n_a, n_b)  # visits with a and b
    n_a_vis = torch.bincount(a[a_mask], minlength=n_a).double()  # visits with a
    n_b_vis = torch.bincount(b[b_mask], minlength=n_b).double()  # visits with b
    return (
        (both / n_a_vis.clamp(min=1)[:, None]).float(),
        (both.T / n_b_vis.clamp(min=1)[:, None]).float(),
    )


@dataclass
class ConditionalPrior:
    """:math:`P(t \\mid d)` and :math:`P(d \\mid t)` from the training visits only.

    Attributes:
        p_tx_given_dx: ``(n_dx, n_tx)``; p_dx_given_tx: ``(n_tx, n_dx)``.
        p_lab_given_tx: ``(n_tx, n_lab)``; p_tx_given_lab: ``(n_lab, n_tx)``; ``None``
            without labs.
        fitted_on: the person ids whose visits were counted (:meth:`check_held_out`).
        prior_scalar: the visit-diagnosis entries and the diagonal (GCT: 0.5).
    """

    p_tx_given_dx: Tensor
    p_dx_given_tx: Tensor
    fitted_on: np.ndarray = field(repr=False)
    prior_scalar: float = 0.5
    p_lab_given_tx: Tensor | None = None
    p_tx_given_lab: Tensor | None = None

    @classmethod
    def fit(
        cls,
        vo,
        vocab,
        train_person_ids: Sequence[int] | np.ndarray,
        prior_scalar: float = 0.5,
    ) -> ConditionalPrior:
        """Count co-occurrences over the visits of ``train_person_ids`` only.

        Args:
            vo: :class:`~ehrseq.data.visit_objects.VisitObjects` (``links="visit"``), which may
                hold every person: only the training persons' visits are read.
            vocab: the :class:`~ehrseq.data.visit_objects.ObjectVocab` of the model.
            train_person_ids: the training persons (required: there is no default, so a
                prior can never be fitted on everyone by accident).

        Raises:
            ValueError: no training person has a visit.
        """
        from ehrseq.data.visit_objects import pad_visit_graphs

        train = np.asarray(train_person_ids, dtype=np.int64)
        sub = vo.subset(train)
        if not len(sub.objects):
            raise ValueError("none of train_person_ids has a visit: nothing to fit the prior on")
        g, _ = pad_visit_graphs(sub, vocab, max_dx=10**6, max_tx=10**6, max_lab=10**6)
        n_dx, n_rx, n_pr = vocab.sizes
        p_t_d, p_d_t = _conditionals(
            g["dx_codes"], g["dx_mask"], g["tx_codes"], g["tx_mask"], n_dx, n_rx + n_pr
        )
        labs = (None, None)
        if vocab.lab:
            labs = _conditionals(
                g["tx_codes"], g["tx_mask"], g["lab_codes"], g["lab_mask"], n_rx + n_pr, vocab.n_lab
            )
        return cls(p_t_d, p_d_t, np.unique(train), prior_scalar, *labs)

    def check_held_out(self, person_ids: Sequence[int] | np.ndarray) -> None:
        """Raise ``ValueError`` if any of these (validation or test) persons was counted."""
        leaked = np.intersect1d(np.asarray(person_ids), self.fitted_on)
        if len(leaked):
            raise ValueError(
                f"{len(leaked)} held-out person(s) were counted in the prior, e.g. "
                f"{leaked[:5].tolist()}: fit it on the training persons only"
            )

    def matrix(
        self,
        dx_codes: Tensor,
        tx_codes: Tensor,
        dx_mask: Tensor,
        tx_mask: Tensor,
        lab_codes: Tensor | None = None,
        lab_mask: Tensor | None = None,
        allowed: Tensor | None = None,
    ) -> Tensor:
        """The row-normalised prior attention ``(N, M, M)`` of each visit graph.

        ``allowed``: the :func:`guide_mask` of these graphs, when the caller has it already
        (default: computed here)."""
        N, D = dx_codes.shape
        T = tx_codes.shape[1]
        L = lab_codes.shape[1] if lab_codes is not None else 0
        M = 1 + D + T + L
        dev = dx_codes.device
        p_td, p_dt = self.p_tx_given_dx.to(dev), self.p_dx_given_tx.to(dev)
        a = torch.zeros(N, M, M, device=dev)
        d, t = slice(1, 1 + D), slice(1 + D, 1 + D + T)
        a[:, d, t] = p_td[dx_codes[:, :, None], tx_codes[:, None, :]]  # (N, D, T)
        a[:, t, d] = p_dt[tx_codes[:, :, None], dx_codes[:, None, :]]  # (N, T, D)
        if L:
            if self.p_lab_given_tx is None:
                raise ValueError("lab nodes given, but the prior was fitted without labs")
            lab = slice(1 + D + T, M)
            p_lt, p_tl = self.p_lab_given_tx.to(dev), self.p_tx_given_lab.to(dev)
            a[:, t, lab] = p_lt[tx_codes[:, :, None], lab_codes[:, None, :]]  # (N, T, L)
            a[:, lab, t] = p_tl[lab_codes[:, :, None], tx_codes[:, None, :]]  # (N, L, T)
        a[:, 0, d] = self.prior_scalar
        a[:, d, 0] = self.prior_scalar
        a = a + self.prior_scalar * torch.eye(M, device=dev)
        if allowed is None:
            allowed = guide_mask(dx_mask, tx_mask, lab_mask)  # (N, M, M)
        a = a * allowed  # (N, M, M)
        return a / a.sum(-1, keepdim=True)  # the diagonal keeps every row sum > 0


class GCTLayer(nn.Module):
    """One single-head GCT block (post-norm); ``attn`` given: used instead of its own.

    ``visit_only``: return the new state of the visit node (node 0) alone, ``(N, 1, d)``,
    the only one a last layer passes on; the attention ``(N, M, M)`` of every node is still
    computed (the KL term reads it)."""

    def __init__(self, d: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, d_ff), nn.ReLU(), nn.Linear(d_ff, d))
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, allowed: Tensor, attn: Tensor | None = None, visit_only: bool = False
    ) -> tuple[Tensor, Tensor]:
        if attn is None:
            scores = self.q(x) @ self.k(x).transpose(1, 2) / math.sqrt(x.shape[-1])  # (N, M, M)
            attn = scores.masked_fill(~allowed, float("-inf")).softmax(-1)  # (N, M, M)
        if visit_only:
            z = self.norm1(x[:, :1] + self.dropout(attn[:, :1] @ self.v(x)))  # (N, 1, d)
        else:
            z = self.norm1(x + self.dropout(attn @ self.v(x)))  # (N, M, d)
        return self.norm2(z + self.dropout(self.ff(z))), attn  # (N, M or 1, d)


@dataclass
class GCTOutput:
    """What :class:`GCT` returns: ``logits (N,)``, the visit vectors ``(N, d)``, every
    layer's attention ``(N, M, M)`` (the first is the prior), and the guide mask
    ``allowed (N, M, M)`` (:func:`guide_mask`, for :func:`attention_kl`)."""

    logits: Tensor
    visits: Tensor
    attentions: list[Tensor]
    allowed: Tensor | None = None


def _real_rows(allowed: Tensor) -> Tensor:
    """``(N, M)`` bool: the rows :func:`attention_kl` averages over (the visit node and every
    node with a neighbour; a padded node has only itself)."""
    real = allowed.sum(-1) > 1  # (N, M)
    real[:, 0] = True
    return real


def attention_kl(attentions: Sequence[Tensor], allowed: Tensor) -> Tensor:
    r""":math:`\frac{1}{L-1}\sum_{l \ge 2} \mathrm{KL}(A^{(l-1)} \| A^{(l)})`, each the mean
    over rows of real nodes (0 with one layer).

    Shapes:
        attentions: ``L`` tensors ``(N, M, M)``; allowed ``(N, M, M)`` (:func:`guide_mask`).
    """
    real = _real_rows(allowed)  # (N, M)
    total = attentions[0].new_zeros(())
    for p, q in zip(attentions[:-1], attentions[1:]):
        p, q = p[real], q[real]  # (R, M): the real rows only
        terms = torch.where(p > 0, p * (p.clamp(min=1e-12).log() - q.clamp(min=1e-12).log()), 0.0)
        total = total + terms.sum(-1).mean()
    return total / max(len(attentions) - 1, 1)


class GCT(nn.Module):
    r"""GCT over visit graphs, with a binary head on the visit node (module docstring).

    Args:
        cfg: a :class:`GCTConfig`.
        prior: a :class:`ConditionalPrior` fitted on the training persons.

    ``forward(graphs, visit_only_last=True)`` computes the last layer's new state for the
    visit node alone (:class:`GCTLayer` ``visit_only``): the only state the output reads, so
    the logits, visit vectors and attentions are the same (``tests/test_gct.py``) for less
    work; in training, dropout then draws fewer random numbers, so a model trained that
    way is not bit-for-bit the one trained without.

    Shapes:
        - graphs: ``dx_codes (N, D)``, ``tx_codes (N, T)``, ``dx_mask``, ``tx_mask``
        - output: :class:`GCTOutput`
    """

    def __init__(self, cfg: GCTConfig, prior: ConditionalPrior) -> None:
        super().__init__()
        self.cfg = cfg
        self.prior = prior
        self.emb_dx = nn.Embedding(cfg.n_dx, cfg.d_model, padding_idx=0)
        self.emb_tx = nn.Embedding(cfg.n_tx, cfg.d_model, padding_idx=0)
        self.emb_lab = nn.Embedding(cfg.n_lab, cfg.d_model, padding_idx=0) if cfg.n_lab else None
        self.visit = nn.Parameter(torch.randn(cfg.d_model) * 0.02)
        d_ff = cfg.d_ff or cfg.d_model
        self.layers = nn.ModuleList(
            GCTLayer(cfg.d_model, d_ff, cfg.dropout) for _ in range(cfg.n_layers)
        )
        self.out = nn.Linear(cfg.d_model, 1)

    def forward(self, graphs: dict, visit_only_last: bool = False) -> GCTOutput:
        cfg = self.cfg
        dx, tx, lab, dx_mask, tx_mask, lab_mask = _nodes(graphs, cfg.n_lab > 0)
        for name, codes, mask, n in (
            ("dx", dx, dx_mask, cfg.n_dx),
            ("tx", tx, tx_mask, cfg.n_tx),
            ("lab", lab, lab_mask, cfg.n_lab),
        ):
            if codes is None:
                continue
            if codes.dim() != 2 or codes.shape != mask.shape or codes.shape[0] != dx.shape[0]:
                raise ValueError(
                    f"{name}_codes {tuple(codes.shape)} and {name}_mask {tuple(mask.shape)} must "
                    f"be (N, K) with the N = {dx.shape[0]} visits of dx_codes"
                )
            if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= n):
                raise ValueError(f"{name}_codes outside the embedding table [0, {n})")
        N = dx.shape[0]
        parts = [self.visit.expand(N, 1, -1), self.emb_dx(dx), self.emb_tx(tx)]
        if self.emb_lab is not None:
            parts.append(self.emb_lab(lab))
        x = torch.cat(parts, 1)  # (N, M, d)
        allowed = guide_mask(dx_mask, tx_mask, lab_mask)  # (N, M, M)
        prior = self.prior.matrix(dx, tx, dx_mask, tx_mask, lab, lab_mask, allowed)  # (N, M, M)
        attns, last = [], len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            only = visit_only_last and i == last  # then x: (N, 1, d)
            x, a = layer(x, allowed, prior if i == 0 else None, only)  # (N, M, d), (N, M, M)
            attns.append(a)
        visits = x[:, 0]  # (N, d), the visit node
        return GCTOutput(self.out(visits).squeeze(-1), visits, attns, allowed)

    def loss(self, graphs: dict, labels: Tensor) -> dict[str, Tensor]:
        r""":math:`\mathrm{BCE} + \lambda_\text{KL}\,\mathrm{KL}`: ``loss``, ``bce``, ``kl``."""
        out = self(graphs)
        if labels.shape != out.logits.shape:
            raise ValueError(f"labels must be {tuple(out.logits.shape)}, got {tuple(labels.shape)}")
        bce = F.binary_cross_entropy_with_logits(out.logits, labels.to(out.logits.dtype))
        kl = attention_kl(out.attentions, out.allowed)
        return {"loss": bce + self.cfg.kl_weight * kl, "bce": bce, "kl": kl}


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUROC with average ranks for ties."""
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    ranks = np.empty(len(s))
    _, first, counts = np.unique(s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0  # average 1-based rank of each tie group
    ranks_sorted = np.repeat(avg, counts)
    ranks[order] = ranks_sorted
    n_pos = labels.sum()
    n_neg = len(labels) - n_pos
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def link_auroc(attention: Tensor, dx_mask: Tensor, tx_mask: Tensor, true_links: Tensor) -> float:
    r"""How well attention finds the true diagnosis-treatment links: the AUROC of
    :math:`s_{ij} = A_{d_i t_j} + A_{t_j d_i}` over every real (diagnosis, treatment) pair of
    every visit, true links positive, the other pairs of the same visits negative.

    Args:
        attention: one layer's attention ``(N, M, M)`` (``GCTOutput.attentions[l]``; layer 0
            is the prior).
        dx_mask, tx_mask: ``(N, D)``, ``(N, T)``.
        true_links: ``(N, D, T)`` bool (:func:`~ehrseq.data.visit_objects.pad_visit_graphs`
            with ``truth=``).

    Raises:
        ValueError: no positive or no negative pair.
    """
    D, T = dx_mask.shape[1], tx_mask.shape[1]
    d, t = slice(1, 1 + D), slice(1 + D, 1 + D + T)  # lab nodes, if any, come after
    dt = attention[:, d, t]  # (N, D, T)
    td = attention[:, t, d].transpose(1, 2)  # (N, D, T)
    pair = dx_mask[:, :, None] & tx_mask[:, None, :]  # (N, D, T)
    scores = (dt + td)[pair].detach().double().cpu().numpy()
    labels = true_links[pair].cpu().numpy().astype(bool)
    if labels.all() or not labels.any():
        raise ValueError("link_auroc needs both true links and other pairs")
    return _auroc(labels, scores)


def visit_sequences(visits: Tensor, person_ids: np.ndarray | Tensor) -> tuple[Tensor, Tensor]:
    """Visit vectors of a graph batch, one row per visit, as one padded sequence per person.

    The rows of a person must be contiguous and in date order, as
    :func:`~ehrseq.data.visit_objects.pad_visit_graphs` gives them; persons keep the order
    of their first row.

    Shapes:
        visits ``(N, d)``, person_ids ``(N,)``; output ``(B, V, d)`` (0 at padding) and
        ``visit_mask (B, V)``.

    Raises:
        ValueError: a person's rows are not contiguous, or the lengths differ.
    """
    pid = torch.as_tensor(np.asarray(person_ids), device=visits.device)
    if pid.shape != visits.shape[:1]:
        raise ValueError(f"person_ids {tuple(pid.shape)} do not match visits {tuple(visits.shape)}")
    new = torch.ones_like(pid, dtype=torch.bool)
    new[1:] = pid[1:] != pid[:-1]  # (N,): the first row of each person
    b = new.cumsum(0) - 1  # (N,) person row
    if len(torch.unique(pid)) != int(new.sum()):
        raise ValueError("each person's visits must be contiguous rows (pad_visit_graphs order)")
    starts = torch.nonzero(new).flatten()  # (B,)
    v = torch.arange(len(pid), device=visits.device) - starts[b]  # (N,) slot within person
    B, V = int(new.sum()), int(v.max()) + 1 if len(v) else 1
    x = visits.new_zeros(B, V, visits.shape[1]).index_put((b, v), visits)  # (B, V, d)
    mask = torch.zeros(B, V, dtype=torch.bool, device=visits.device)
    mask[b, v] = True
    return x, mask


class GCTSurvival(nn.Module):
    r"""GCT visit vectors -> a GRU over each person's visits -> a survival head.

    **Size buckets.** With ``n_buckets`` :math:`= k > 1` the visit graphs of a batch are
    sorted by their number of real nodes, split into :math:`k` groups of (nearly) equal
    count, and each group goes through GCT alone with its node axes cut to its widest graph
    (:func:`~ehrseq.data.visit_objects.trim_graphs`): attention costs :math:`O(M^2)` per
    graph, and most visits have far fewer nodes than the widest. The visit vectors are the
    same as with one group (padded nodes attend to themselves only), and the KL is the
    same mean over the real rows of every graph,
    :math:`\mathrm{KL} = \sum_g R_g \mathrm{KL}_g / \sum_g R_g` with :math:`R_g` the
    real rows of group :math:`g`; ``tests/test_gct.py`` checks both. What differs in
    training is which random numbers dropout draws, so a model trained with buckets is
    not bit-for-bit the one trained without.

    Args:
        gct: a :class:`GCT` (its prior fitted on the training persons).
        head: a :class:`~ehrseq.models.survival_head.BinHazardHead` or
            :class:`~ehrseq.models.survival_head.VisitHazardHead` of width ``d_hidden``.
        d_hidden: GRU width (default: ``gct.cfg.d_model``).
        n_buckets: size groups of a batch's visit graphs (1: the batch as it comes).
        visit_only_last: GCT's last layer updates the visit node only (:class:`GCT`).

    Shapes:
        - graphs: :func:`~ehrseq.data.visit_objects.pad_visit_graphs` of the batch's persons
        - output: :class:`HazardOutput` of ``(B, T)`` (bin head) or ``(B, V)`` (visit head),
          persons in the order of their first graph row

    Raises:
        ValueError: ``n_buckets < 1``.
    """

    def __init__(
        self,
        gct: GCT,
        head: nn.Module,
        d_hidden: int | None = None,
        n_buckets: int = 1,
        visit_only_last: bool = False,
    ) -> None:
        super().__init__()
        if n_buckets < 1:
            raise ValueError(f"n_buckets = {n_buckets}: at least 1")
        self.gct = gct
        self.gru = nn.GRU(gct.cfg.d_model, d_hidden or gct.cfg.d_model, batch_first=True)
        self.head = head
        self.n_buckets = n_buckets
        self.visit_only_last = visit_only_last

    def encode(self, graphs: dict) -> tuple[Tensor, Tensor]:
        """GCT's visit vectors ``(N, d)``, in the rows' order, and its attention KL (``()``),
        in size buckets when ``n_buckets > 1`` (class docstring)."""
        if self.n_buckets == 1:
            out = self.gct(graphs, self.visit_only_last)
            return out.visits, attention_kl(out.attentions, out.allowed)
        keys = GCT_INPUTS + (GCT_LAB_INPUTS if self.gct.cfg.n_lab else ())
        nodes = {k: graphs[k] for k in keys if k in graphs}  # GCT checks what is missing
        n_nodes = sum(nodes[k].sum(1) for k in keys if k.endswith("_mask") and k in nodes)
        order = torch.argsort(n_nodes, stable=True)  # (N,) smallest graphs first
        visits, kl_sum, n_real = [], 0.0, 0
        for rows in torch.tensor_split(order, self.n_buckets):
            if not len(rows):
                continue
            out = self.gct(trim_graphs(nodes, rows), self.visit_only_last)  # (n_g, M_g) nodes
            r = int(_real_rows(out.allowed).sum())  # R_g
            visits.append(out.visits)  # (n_g, d)
            kl_sum = kl_sum + r * attention_kl(out.attentions, out.allowed)
            n_real += r
        back = torch.empty_like(order)
        back[order] = torch.arange(len(order), device=order.device)  # (N,) inverse order
        return torch.cat(visits)[back], kl_sum / n_real  # (N, d), ()

    def hazards_and_kl(self, graphs: dict) -> tuple[HazardOutput, Tensor]:
        """The hazards and GCT's attention KL (add ``gct.cfg.kl_weight * kl`` to the loss)."""
        visits, kl = self.encode(graphs)  # (N, d), ()
        x, visit_mask = visit_sequences(visits, graphs["person_ids"])  # (B, V, d)
        V = visit_mask.shape[1]
        packed = pack_padded_sequence(
            x, visit_mask.sum(1).cpu(), batch_first=True, enforce_sorted=False
        )
        h, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=V)
        hz = self.head(h, visit_slots(visit_mask), visit_mask, n_visits=V)
        return hz, kl

    def forward(self, graphs: dict) -> HazardOutput:
        return self.hazards_and_kl(graphs)[0]
