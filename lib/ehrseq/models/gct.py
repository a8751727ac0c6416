r"""GCT: a transformer over each visit's graph that learns the diagnosis-treatment links.

MiME needs to be told which diagnosis each treatment was for; plain OMOP does not say.
The Graph Convolutional Transformer (Choi et al., 2020) learns that structure: the nodes of
a visit (a visit node, its diagnoses, its treatments) attend to each other, only along the
edges a visit graph can have, and the first layer's attention is a data-driven prior.

Written bottom-up: :class:`GCTConfig`, the prior (:class:`ConditionalPrior`, fitted on the
training persons only), :func:`guide_mask`, :class:`GCTLayer`, :class:`GCT`, and
:func:`link_auroc`, which scores attention against the true links of the synthetic cohort.
The input is one graph per visit from :func:`ehrseq.data.visit_objects.pad_visit_graphs`:
``dx_codes (N, D)``, ``tx_codes (N, T)`` and their masks. Nodes are ordered
``[visit, dx_1..dx_D, tx_1..tx_T]``, :math:`M = 1 + D + T`. Lab nodes (GCT's third type,
with treatment-lab edges) are not built here.

**Guide mask.** Attention is allowed on visit :math:`\leftrightarrow` diagnosis, diagnosis
:math:`\leftrightarrow` treatment and from a node to itself; every other pair (and every
padded node) is masked out. A padded node attends to itself only, so it never reaches a real
node.

**Prior** (GCT code: computed on the training encounters only). Over the training visits,

.. math::
    P(t \mid d) = \frac{\#\{\text{visits with } d \text{ and } t\}}{\#\{\text{visits with } d\}},
    \qquad
    P(d \mid t) = \frac{\#\{\text{visits with } d \text{ and } t\}}{\#\{\text{visits with } t\}}

and per visit :math:`\tilde A_{d_i t_j} = P(t_j \mid d_i)`, :math:`\tilde A_{t_j d_i} =
P(d_i \mid t_j)`, the visit-diagnosis entries and the diagonal set to ``prior_scalar`` (0.5),
each row then normalised to sum to 1 over its allowed entries.

**Layers.** With :math:`X^{(0)} = [e_\text{visit}; E_{dx}[d]; E_{tx}[t]]` and one head,

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

Reference:
    Choi, E., Xu, Z., Li, Y., Dusenberry, M. W., Flores, G., Xue, E., Dai, A. M. (2020).
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

__all__ = [
    "GCT_INPUTS",
    "GCTConfig",
    "ConditionalPrior",
    "GCTLayer",
    "GCT",
    "GCTOutput",
    "attention_kl",
    "guide_mask",
    "link_auroc",
]

#: Keys of the graph batch that :class:`GCT` reads.
GCT_INPUTS = ("dx_codes", "tx_codes", "dx_mask", "tx_mask")


@dataclass
class GCTConfig:
    """Sizes of GCT (defaults: the GCT paper's eICU setting, but a smaller width).

    Attributes:
        n_dx, n_tx: embedding rows (padding and unknown included): ``ObjectVocab.sizes[0]``
            and ``sizes[1] + sizes[2]`` (drugs, then procedures).
        d_model: node width (GCT: 128).
        n_layers: layers, the first of which uses the prior as its attention (GCT: 3).
        d_ff: feed-forward width (``None``: ``d_model``).
        dropout: on attention outputs and the feed-forward (GCT: 0.08).
        kl_weight: :math:`\\lambda_\\text{KL}` (GCT: 0.1).
    """

    n_dx: int
    n_tx: int
    d_model: int = 64
    n_layers: int = 3
    d_ff: int | None = None
    dropout: float = 0.08
    kl_weight: float = 0.1

    def __post_init__(self) -> None:
        if self.n_dx < 2 or self.n_tx < 2:
            raise ValueError(f"n_dx, n_tx = {self.n_dx}, {self.n_tx}: need padding and unknown")
        if self.d_model < 1 or self.n_layers < 1:
            raise ValueError("d_model and n_layers must be at least 1")
        if not 0 <= self.dropout < 1 or self.kl_weight < 0:
            raise ValueError("dropout must be in [0, 1) and kl_weight >= 0")

    @classmethod
    def from_vocab(cls, vocab, **overrides) -> GCTConfig:
        n_dx, n_rx, n_pr = vocab.sizes
        return cls(n_dx=n_dx, n_tx=n_rx + n_pr, **overrides)


def guide_mask(dx_mask: Tensor, tx_mask: Tensor) -> Tensor:
    """Allowed attention ``(N, M, M)``: visit<->dx, dx<->tx between real nodes, and every
    node (padded ones too) to itself.

    Shapes:
        dx_mask ``(N, D)``, tx_mask ``(N, T)`` (bool); output ``(N, 1 + D + T, 1 + D + T)``.
    """
    N, D = dx_mask.shape
    real = torch.cat([dx_mask.new_ones(N, 1), dx_mask, tx_mask], 1)  # (N, M)
    M = real.shape[1]
    kind = torch.cat([torch.zeros(1), torch.ones(D), torch.full((tx_mask.shape[1],), 2.0)]).to(
        dx_mask.device
    )  # (M,): 0 visit, 1 dx, 2 tx
    a, b = kind[:, None], kind[None, :]
    edge = (
        ((a == 0) & (b == 1))
        | ((a == 1) & (b == 0))
        | ((a == 1) & (b == 2))
        | ((a == 2) & (b == 1))
    )
    allowed = edge[None] & real[:, :, None] & real[:, None, :]  # (N, M, M)
    return allowed | torch.eye(M, dtype=torch.bool, device=dx_mask.device)[None]


@dataclass
class ConditionalPrior:
    """:math:`P(t \\mid d)` and :math:`P(d \\mid t)` from the training visits only.

    Attributes:
        p_tx_given_dx: ``(n_dx, n_tx)``; p_dx_given_tx: ``(n_tx, n_dx)``.
        fitted_on: the person ids whose visits were counted (:meth:`check_held_out`).
        prior_scalar: the visit-diagnosis entries and the diagonal (GCT: 0.5).
    """

    p_tx_given_dx: Tensor
    p_dx_given_tx: Tensor
    fitted_on: np.ndarray = field(repr=False)
    prior_scalar: float = 0.5

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
        g, _ = pad_visit_graphs(sub, vocab, max_dx=10**6, max_tx=10**6)
        n_dx, n_rx, n_pr = vocab.sizes
        n_tx = n_rx + n_pr
        dx, tx = g["dx_codes"], g["tx_codes"]  # (N, D), (N, T); codes are distinct per visit
        pair = g["dx_mask"][:, :, None] & g["tx_mask"][:, None, :]  # (N, D, T)
        d_idx = dx[:, :, None].expand_as(pair)[pair]
        t_idx = tx[:, None, :].expand_as(pair)[pair]
        both = torch.zeros(n_dx * n_tx, dtype=torch.float64)
        both.index_add_(0, d_idx * n_tx + t_idx, torch.ones(len(d_idx), dtype=torch.float64))
        both = both.reshape(n_dx, n_tx)  # visits with d and t
        n_d = torch.bincount(dx[g["dx_mask"]], minlength=n_dx).double()  # visits with d
        n_t = torch.bincount(tx[g["tx_mask"]], minlength=n_tx).double()  # visits with t
        p_t_d = (both / n_d.clamp(min=1)[:, None]).float()
        p_d_t = (both.T / n_t.clamp(min=1)[:, None]).float()
        return cls(p_t_d, p_d_t, np.unique(train), prior_scalar)

    def check_held_out(self, person_ids: Sequence[int] | np.ndarray) -> None:
        """Raise ``ValueError`` if any of these (validation or test) persons was counted."""
        leaked = np.intersect1d(np.asarray(person_ids), self.fitted_on)
        if len(leaked):
            raise ValueError(
                f"{len(leaked)} held-out person(s) were counted in the prior, e.g. "
                f"{leaked[:5].tolist()}: fit it on the training persons only"
            )

    def matrix(
        self, dx_codes: Tensor, tx_codes: Tensor, dx_mask: Tensor, tx_mask: Tensor
    ) -> Tensor:
        """The row-normalised prior attention ``(N, M, M)`` of each visit graph."""
        N, D = dx_codes.shape
        T = tx_codes.shape[1]
        M = 1 + D + T
        p_td = self.p_tx_given_dx.to(dx_codes.device)
        p_dt = self.p_dx_given_tx.to(dx_codes.device)
        a = torch.zeros(N, M, M, device=dx_codes.device)
        a[:, 1 : 1 + D, 1 + D :] = p_td[dx_codes[:, :, None], tx_codes[:, None, :]]  # (N, D, T)
        a[:, 1 + D :, 1 : 1 + D] = p_dt[tx_codes[:, :, None], dx_codes[:, None, :]]  # (N, T, D)
        a[:, 0, 1 : 1 + D] = self.prior_scalar
        a[:, 1 : 1 + D, 0] = self.prior_scalar
        a = a + self.prior_scalar * torch.eye(M, device=a.device)
        a = a * guide_mask(dx_mask, tx_mask)  # (N, M, M)
        return a / a.sum(-1, keepdim=True)  # the diagonal keeps every row sum > 0


class GCTLayer(nn.Module):
    """One single-head GCT block (post-norm); ``attn`` given: used instead of its own."""

    def __init__(self, d: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, d_ff), nn.ReLU(), nn.Linear(d_ff, d))
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, allowed: Tensor, attn: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        if attn is None:
            scores = self.q(x) @ self.k(x).transpose(1, 2) / math.sqrt(x.shape[-1])  # (N, M, M)
            attn = scores.masked_fill(~allowed, float("-inf")).softmax(-1)  # (N, M, M)
        z = self.norm1(x + self.dropout(attn @ self.v(x)))  # (N, M, d)
        return self.norm2(z + self.dropout(self.ff(z))), attn  # (N, M, d)


@dataclass
class GCTOutput:
    """What :class:`GCT` returns: ``logits (N,)``, the visit vectors ``(N, d)``, and every
    layer's attention ``(N, M, M)`` (the first is the prior)."""

    logits: Tensor
    visits: Tensor
    attentions: list[Tensor]


def attention_kl(attentions: Sequence[Tensor], allowed: Tensor) -> Tensor:
    r""":math:`\frac{1}{L-1}\sum_{l \ge 2} \mathrm{KL}(A^{(l-1)} \| A^{(l)})`, each the mean
    over rows of real nodes (0 with one layer).

    Shapes:
        attentions: ``L`` tensors ``(N, M, M)``; allowed ``(N, M, M)`` (:func:`guide_mask`).
    """
    real = allowed.sum(-1) > 1  # (N, M): a padded node only has itself
    real[:, 0] = True
    total = attentions[0].new_zeros(())
    for p, q in zip(attentions[:-1], attentions[1:]):
        terms = torch.where(p > 0, p * (p.clamp(min=1e-12).log() - q.clamp(min=1e-12).log()), 0.0)
        total = total + terms.sum(-1)[real].mean()
    return total / max(len(attentions) - 1, 1)


class GCT(nn.Module):
    r"""GCT over visit graphs, with a binary head on the visit node (module docstring).

    Args:
        cfg: a :class:`GCTConfig`.
        prior: a :class:`ConditionalPrior` fitted on the training persons.

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
        self.visit = nn.Parameter(torch.randn(cfg.d_model) * 0.02)
        d_ff = cfg.d_ff or cfg.d_model
        self.layers = nn.ModuleList(
            GCTLayer(cfg.d_model, d_ff, cfg.dropout) for _ in range(cfg.n_layers)
        )
        self.out = nn.Linear(cfg.d_model, 1)

    def forward(self, graphs: dict) -> GCTOutput:
        dx, tx, dx_mask, tx_mask = (graphs[k] for k in GCT_INPUTS)
        if dx.dim() != 2 or tx.dim() != 2 or dx.shape != dx_mask.shape or tx.shape != tx_mask.shape:
            raise ValueError("need dx_codes (N, D), tx_codes (N, T) and masks like them")
        if dx.shape[0] != tx.shape[0]:
            raise ValueError(f"dx_codes has {dx.shape[0]} visits, tx_codes {tx.shape[0]}")
        if (dx.numel() and int(dx.max()) >= self.cfg.n_dx) or (
            tx.numel() and int(tx.max()) >= self.cfg.n_tx
        ):
            raise ValueError("codes outside the embedding tables (n_dx, n_tx)")
        N = dx.shape[0]
        x = torch.cat(
            [self.visit.expand(N, 1, -1), self.emb_dx(dx), self.emb_tx(tx)], 1
        )  # (N, M, d)
        allowed = guide_mask(dx_mask, tx_mask)  # (N, M, M)
        attns = []
        prior = self.prior.matrix(dx, tx, dx_mask, tx_mask)  # (N, M, M)
        for i, layer in enumerate(self.layers):
            x, a = layer(x, allowed, prior if i == 0 else None)
            attns.append(a)
        visits = x[:, 0]  # (N, d), the visit node
        return GCTOutput(self.out(visits).squeeze(-1), visits, attns)

    def loss(self, graphs: dict, labels: Tensor) -> dict[str, Tensor]:
        r""":math:`\mathrm{BCE} + \lambda_\text{KL}\,\mathrm{KL}`: ``loss``, ``bce``, ``kl``."""
        out = self(graphs)
        if labels.shape != out.logits.shape:
            raise ValueError(f"labels must be {tuple(out.logits.shape)}, got {tuple(labels.shape)}")
        bce = F.binary_cross_entropy_with_logits(out.logits, labels.to(out.logits.dtype))
        kl = attention_kl(out.attentions, guide_mask(graphs["dx_mask"], graphs["tx_mask"]))
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
    D = dx_mask.shape[1]
    dt = attention[:, 1 : 1 + D, 1 + D :]  # (N, D, T)
    td = attention[:, 1 + D :, 1 : 1 + D].transpose(1, 2)  # (N, D, T)
    pair = dx_mask[:, :, None] & tx_mask[:, None, :]  # (N, D, T)
    scores = (dt + td)[pair].detach().double().cpu().numpy()
    labels = true_links[pair].cpu().numpy().astype(bool)
    if labels.all() or not labels.any():
        raise ValueError("link_auroc needs both true links and other pairs")
    return _auroc(labels, scores)
