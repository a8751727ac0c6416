r"""Graph-enhanced code vectors: a GAT over the ontology, trained on the skip-gram loss.

GRAM (Choi et al. 2017) lets a code borrow from its ancestors in the ontology: a rare
code, seen in few pairs, gets part of its vector from concepts that many codes train.
This module does the same with a graph attention network (GAT, Velickovic et al. 2018)
over the OMOP graph, started from a trained skip-gram and trained on the skip-gram's own
pairs and loss.

**The graph** (:func:`build_ontology_graph`). Nodes are the embedding's concept ids, in
its row order. Edges are the rows of ``concept_relationship`` whose ``relationship_id``
is ``Is a``, ``Maps to`` or ``Subsumes`` (valid rows only), and the rows of
``concept_ancestor`` with at least one level of separation; every edge is undirected,
self rows (a standard concept ``Maps to`` itself) are dropped and repeats merged. A row
with exactly one end in the embedding is *dangling* (the other end has no vector), a row
with neither end is *outside*; both are counted per source, never silently dropped, and
a graph without a single ``Is a`` edge raises a warning with the counts.

**The model** (:class:`GraphSkipGram`). With the skip-gram's input vectors :math:`x_i`
as the start, each of ``layers`` GAT layers adds a residual

.. math::

    h_i^{(l+1)} = h_i^{(l)} + \sum_{j \in N(i)} \alpha_{ij} W h_j^{(l)}, \qquad
    \alpha_{ij} = \operatorname{softmax}_{j \in N(i)}\big(\mathrm{LeakyReLU}
        (a_s^\top W h_j^{(l)} + a_d^\top W h_i^{(l)})\big),

(heads averaged), with no self loops and no bias, so a code without edges keeps its own
vector, :math:`h_i = x_i`, and with :math:`a_s = a_d = 0` the sum is the mean of
:math:`W h_j` over the neighbours. :math:`W` starts at zero: before training, the
refined vectors *are* the skip-gram's. :func:`refine_skipgram` then trains :math:`x`,
:math:`W`, :math:`a` and the output vectors with the skip-gram-with-negative-sampling
loss (:func:`~ehrseq.embeddings.skipgram.sgns_loss`) on the same time-weighted pairs the
skip-gram trained on, taking :math:`h` as the center vectors; the whole graph is encoded
at every step (it is small), so a rare code's loss moves its neighbours and :math:`W`,
which every code trains.

Derived in the chapter on medical-code embeddings (issue #17).

References:
    Choi et al., "GRAM: Graph-based attention model for healthcare representation
    learning", KDD 2017. Velickovic et al., "Graph attention networks", ICLR 2018.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ehrseq.embeddings.base import CodeEmbedding
from ehrseq.embeddings.corpus import CodeCorpus
from ehrseq.embeddings.skipgram import (
    SkipGramResult,
    _noise_table,
    negative_distribution,
    sgns_grads,
    skipgram_pairs,
)

__all__ = [
    "DEFAULT_RELATIONSHIPS",
    "OntologyGraph",
    "build_ontology_graph",
    "read_ontology_tables",
    "GraphSkipGram",
    "neighbour_mean",
    "sgns_step_grads",
    "GraphConfig",
    "GraphResult",
    "refine_skipgram",
]

#: The ``concept_relationship`` types that become edges.
DEFAULT_RELATIONSHIPS: tuple[str, ...] = ("Is a", "Maps to", "Subsumes")
#: The source name of the ``concept_ancestor`` rows in :attr:`OntologyGraph.sources`.
ANCESTOR = "concept_ancestor"


@dataclass(frozen=True, eq=False)
class OntologyGraph:
    """The undirected ontology graph over an embedding's codes: node ``i`` is
    ``concept_ids[i]``.

    Attributes:
        concept_ids: ``(N + H,)`` int64 node ids: the embedding's ``N`` codes in its row
            order, then ``H`` hidden nodes (``hidden=True``), sorted.
        edge_index: ``(2, 2E)`` int64, each undirected edge in both directions, no self
            loops, no repeats.
        sources: one row per source (each relationship type, then ``concept_ancestor``):
            ``rows`` read (valid rows), ``within`` (both ends are nodes), ``dangling``
            (exactly one end is a node), ``outside`` (neither), ``self`` (a row from a
            node to itself), ``edges`` (distinct undirected edges it gives; an edge two
            sources give counts for both).
        n_invalid_rows: ``concept_relationship`` rows of a wanted type with an
            ``invalid_reason`` (left out).
        n_dangling_ids: distinct ids, not codes of the embedding, named by the dangling
            rows.
        n_hidden: ``H``, those ids kept as nodes without a vector of their own.
    """

    concept_ids: np.ndarray
    edge_index: Tensor
    sources: pd.DataFrame
    n_invalid_rows: int = 0
    n_dangling_ids: int = 0
    n_hidden: int = 0

    @property
    def n_nodes(self) -> int:
        """Nodes, hidden ones included."""
        return len(self.concept_ids)

    @property
    def n_codes(self) -> int:
        """Nodes that are the embedding's codes (the first ``n_codes``)."""
        return self.n_nodes - self.n_hidden

    @property
    def n_edges(self) -> int:
        """Undirected edges."""
        return int(self.edge_index.shape[1] // 2)

    @property
    def n_is_a(self) -> int:
        """Undirected edges given by ``Is a`` rows (0 when that type is not asked)."""
        return int(self.sources["edges"].get("Is a", 0))

    @property
    def n_dangling(self) -> int:
        """Rows, of every source, with exactly one end in the embedding."""
        return int(self.sources["dangling"].sum())

    def degree(self) -> np.ndarray:
        """Neighbours of each node. ``(N,)`` int64."""
        return np.bincount(self.edge_index[0].numpy(), minlength=self.n_nodes)

    @property
    def n_isolated(self) -> int:
        """Codes without an edge (they keep their own vector in the GAT)."""
        return int((self.degree()[: self.n_codes] == 0).sum())

    def summary(self) -> dict[str, int]:
        """The counts, for a report."""
        return {
            "codes": self.n_codes,
            "hidden_nodes": self.n_hidden,
            "edges": self.n_edges,
            "is_a_edges": self.n_is_a,
            "isolated_nodes": self.n_isolated,
            "dangling_rows": self.n_dangling,
            "dangling_ids": self.n_dangling_ids,
            "outside_rows": int(self.sources["outside"].sum()),
            "invalid_rows": self.n_invalid_rows,
        }

    def __repr__(self) -> str:
        lines = "".join(f"\n    {k}={v:,}," for k, v in self.summary().items())
        return f"OntologyGraph({lines}\n)"


def _need(frame: pd.DataFrame, name: str, cols: Sequence[str]) -> None:
    lack = [c for c in cols if c not in frame.columns]
    if lack:
        raise ValueError(f"build_ontology_graph: {name} lacks columns {lack}")


def _valid(rel: pd.DataFrame) -> np.ndarray:
    if "invalid_reason" not in rel.columns:
        return np.ones(len(rel), dtype=bool)
    reason = rel["invalid_reason"]
    return (reason.isna() | (reason.astype(str).str.strip() == "")).to_numpy()


def build_ontology_graph(
    concept_ids: Sequence[int] | np.ndarray,
    relationship: pd.DataFrame,
    ancestor: pd.DataFrame | None = None,
    relationships: Sequence[str] = DEFAULT_RELATIONSHIPS,
    max_ancestor_levels: int | None = None,
    hidden: bool = False,
) -> OntologyGraph:
    """The undirected graph over ``concept_ids`` (module docstring), with every row
    counted.

    .. math:: E = \\{\\{i, j\\}: i \\ne j,\\ (c_i, c_j) \\text{ a valid row of a
        wanted type or an ancestor row}\\}

    Args:
        concept_ids: ``(N,)`` the nodes, e.g. ``embedding.concept_ids``.
        relationship: ``concept_relationship`` (``concept_id_1``, ``concept_id_2``,
            ``relationship_id``; ``invalid_reason`` when present: rows with one are left
            out).
        ancestor: ``concept_ancestor`` (``ancestor_concept_id``,
            ``descendant_concept_id``, ``min_levels_of_separation`` when present: rows
            at level 0 are left out), or ``None``.
        relationships: the relationship types that become edges.
        max_ancestor_levels: ancestor rows more than this many levels apart are left out
            (``None``: all).
        hidden: keep the ids named by dangling rows as hidden nodes, after the codes
            (GRAM's ancestors that the data never shows): two codes that share an
            ancestor outside the embedding are then joined through it, and edges among
            hidden nodes are kept. The row counts still speak of the embedding's codes.

    Shapes:
        Returns a graph with ``concept_ids`` ``(N + H,)`` and ``edge_index``
        ``(2, 2E)``.

    Warns:
        UserWarning: when no ``Is a`` edge joins two nodes, with the rows read and
            dangling.

    Raises:
        ValueError: on node ids that repeat or are not 1-D integers, missing columns, or
            ``max_ancestor_levels < 1``.
    """
    ids = np.asarray(concept_ids)
    if ids.ndim != 1 or (len(ids) and not np.issubdtype(ids.dtype, np.integer)):
        msg = f"concept_ids must be 1-D integers, got {ids.dtype} {ids.shape}"
        raise ValueError(f"build_ontology_graph: {msg}")
    ids = ids.astype(np.int64)
    index = pd.Index(ids)
    if not index.is_unique:
        raise ValueError("build_ontology_graph: concept ids repeat")
    if max_ancestor_levels is not None and max_ancestor_levels < 1:
        raise ValueError("build_ontology_graph: max_ancestor_levels must be >= 1")
    _need(
        relationship,
        "concept_relationship",
        ("concept_id_1", "concept_id_2", "relationship_id"),
    )
    valid = _valid(relationship)
    wanted = relationship["relationship_id"].isin(list(relationships)).to_numpy()
    n_invalid = int((wanted & ~valid).sum())
    rel = relationship.loc[wanted & valid]
    parts: list[tuple[str, np.ndarray, np.ndarray]] = []
    for name in relationships:
        r = rel.loc[rel["relationship_id"] == name]
        parts.append(
            (
                name,
                r["concept_id_1"].to_numpy(np.int64),
                r["concept_id_2"].to_numpy(np.int64),
            )
        )
    if ancestor is not None:
        _need(
            ancestor,
            "concept_ancestor",
            ("ancestor_concept_id", "descendant_concept_id"),
        )
        a = ancestor
        if "min_levels_of_separation" in a.columns:
            level = a["min_levels_of_separation"].to_numpy(np.int64)
            keep = level >= 1
            if max_ancestor_levels is not None:
                keep &= level <= max_ancestor_levels
            a = a.loc[keep]
        parts.append(
            (
                ANCESTOR,
                a["descendant_concept_id"].to_numpy(np.int64),
                a["ancestor_concept_id"].to_numpy(np.int64),
            )
        )
    rows, missing = [], []
    for name, c1, c2 in parts:
        i, j = index.get_indexer(c1), index.get_indexer(c2)
        both, one = (i >= 0) & (j >= 0), (i >= 0) ^ (j >= 0)
        missing += [c1[one & (i < 0)], c2[one & (j < 0)]]
        self_row = both & (i == j)
        rows.append(
            {
                "source": name,
                "rows": len(c1),
                "within": int(both.sum()),
                "dangling": int(one.sum()),
                "outside": int(((i < 0) & (j < 0)).sum()),
                "self": int(self_row.sum()),
            }
        )
    extra = np.unique(np.concatenate(missing or [np.zeros(0, dtype=np.int64)]))
    nodes = np.r_[ids, extra] if hidden else ids
    index, m = pd.Index(nodes), len(nodes)
    keys = []
    for row, (_, c1, c2) in zip(rows, parts):
        i, j = index.get_indexer(c1), index.get_indexer(c2)
        both = (i >= 0) & (j >= 0) & (i != j)
        lo, hi = np.minimum(i[both], j[both]), np.maximum(i[both], j[both])
        keys.append(np.unique(lo * m + hi))
        row["edges"] = len(keys[-1])
    key = np.unique(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.int64)
    lo, hi = key // max(m, 1), key % max(m, 1)
    both_ways = np.stack([np.r_[lo, hi], np.r_[hi, lo]]).astype(np.int64)  # (2, 2E)
    edge_index = torch.from_numpy(both_ways)
    sources = pd.DataFrame(rows).set_index("source")
    n_hidden = len(extra) if hidden else 0
    graph = OntologyGraph(nodes, edge_index, sources, n_invalid, len(extra), n_hidden)
    if "Is a" not in sources.index or graph.n_is_a == 0:
        read = int(sources["rows"].get("Is a", 0))
        dangling = int(sources["dangling"].get("Is a", 0))
        warnings.warn(
            f"build_ontology_graph: 0 'Is a' edges among the {m:,} nodes "
            f"({read:,} 'Is a' rows read, {dangling:,} of them dangling): the graph "
            "has no hierarchy, only the other relationships",
            stacklevel=2,
        )
    return graph


def read_ontology_tables(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``concept_relationship`` and ``concept_ancestor`` of an OMOP folder, for
    :func:`build_ontology_graph`.

    Read through :func:`ehrseq.data.omop.cdm.open_cdm` (CSV or parquet); the ancestor
    table is the CDM's own when it has rows, else the closure of the valid ``Is a`` rows
    (:meth:`ehrseq.data.omop.cdm.Cdm.concept_ancestor`), as in Eunomia's Synthea27Nj
    whose ``concept_ancestor`` is empty.

    Returns:
        ``(relationship, ancestor)``; ``relationship`` has ``concept_id_1``,
        ``concept_id_2``, ``relationship_id`` and ``invalid_reason`` when the table has
        it.

    Raises:
        ValueError: when the folder has no ``concept_relationship`` table.
    """
    from ehrseq.data.omop.cdm import open_cdm

    cdm = open_cdm(folder)
    if not cdm.has("concept_relationship"):
        raise ValueError(f"read_ontology_tables: {folder} lacks concept_relationship")
    cols = ["concept_id_1", "concept_id_2", "relationship_id"]
    if "invalid_reason" in cdm.columns("concept_relationship"):
        cols.append("invalid_reason")
    relationship = cdm.query(f"SELECT {', '.join(cols)} FROM concept_relationship")
    return relationship, cdm.concept_ancestor()


class GraphSkipGram(nn.Module):
    """Skip-gram vectors refined by residual GAT layers over the ontology (module
    docstring).

    Args:
        inputs: ``(M, d)`` the start :math:`x` of every node: the skip-gram's input
            vectors of the ``N`` codes, then the hidden nodes' (if any).
        outputs: ``(N, d)`` the codes' output (context) vectors, ``N <= M``.
        layers: GAT layers (1 or 2).
        heads: attention heads per layer (averaged).
        negative_slope: of the LeakyReLU in the attention.

    Shapes:
        :meth:`encode`: ``edge_index`` ``(2, E)`` -> ``h`` ``(M, d)``.

    Raises:
        ValueError: on matrices that are not 2-D, differ in ``d`` or have more output
            than input rows, ``layers`` not 1 or 2, or ``heads < 1``.
    """

    def __init__(
        self,
        inputs: Tensor,
        outputs: Tensor,
        layers: int = 1,
        heads: int = 1,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        from torch_geometric.nn import GATConv

        if (
            inputs.ndim != 2
            or outputs.ndim != 2
            or inputs.shape[1] != outputs.shape[1]
            or outputs.shape[0] > inputs.shape[0]
        ):
            raise ValueError(
                "GraphSkipGram: need inputs (M, d) and outputs (N, d) with N <= M, "
                f"got "
                f"{tuple(inputs.shape)} and {tuple(outputs.shape)}"
            )
        if layers not in (1, 2):
            raise ValueError(f"GraphSkipGram: layers must be 1 or 2, got {layers}")
        if heads < 1:
            raise ValueError(f"GraphSkipGram: heads must be >= 1, got {heads}")
        d = inputs.shape[1]
        self.inputs = nn.Parameter(inputs.detach().clone().float())  # (M, d)
        self.outputs = nn.Parameter(outputs.detach().clone().float())  # (N, d)
        self.convs = nn.ModuleList(
            GATConv(
                d,
                d,
                heads=heads,
                concat=False,
                negative_slope=negative_slope,
                add_self_loops=False,
                bias=False,
            )
            for _ in range(layers)
        )
        with torch.no_grad():
            for conv in self.convs:
                conv.lin.weight.zero_()  # W = 0: h = x before training

    def encode(self, edge_index: Tensor) -> Tensor:
        """The refined vectors :math:`h` of every node. ``(M, d)``."""
        h = self.inputs  # (M, d)
        for conv in self.convs:
            h = h + conv(h, edge_index)  # (M, d) residual: an isolated node adds 0
        return h


def neighbour_mean(x: Tensor, edge_index: Tensor, rows: Tensor) -> Tensor:
    r"""Mean of the vectors of each node's neighbours among the first ``len(x)`` nodes.

    .. math:: \bar x_i = \frac{1}{|N(i) \cap C|}\sum_{j \in N(i) \cap C} x_j

    (``C``: the nodes that have a vector; 0 when node ``i`` has no such neighbour). The
    start of a hidden node in :func:`refine_skipgram`.

    Shapes:
        ``x`` ``(N, d)``, ``edge_index`` ``(2, E)``, ``rows`` ``(R,)`` -> ``(R, d)``.
    """
    src, dst = edge_index  # message j -> i: src = j, dst = i
    out = torch.zeros(len(rows), x.shape[1], dtype=x.dtype)  # (R, d)
    if len(rows) == 0 or edge_index.numel() == 0:
        return out
    keep = src < len(x)  # neighbours with a vector
    pos = torch.full((int(max(dst.max(), rows.max())) + 1,), -1)  # node -> row of out
    pos[rows] = torch.arange(len(rows))
    src, dst = src[keep], pos[dst[keep]]
    take = dst >= 0
    out.index_add_(0, dst[take], x[src[take]])
    count = torch.bincount(dst[take], minlength=len(rows)).clamp(min=1)  # (R,)
    return out / count[:, None]


@dataclass(frozen=True)
class GraphConfig:
    """Settings of :func:`refine_skipgram` (pairs and negatives: the skip-gram's).

    Attributes:
        layers: GAT layers (1 or 2).
        heads: attention heads per layer.
        epochs: passes over the skip-gram's pairs.
        batch_size: pairs per step (the whole graph is encoded once per step); rounded
            up to a multiple of the skip-gram's ``share_negatives``.
        lr: Adam's learning rate, every parameter.
        max_pairs: each epoch takes a fresh random subset of at most this many of the
            pairs (``None``: all of them).
        seed: seeds the shuffles and the negatives.
    """

    layers: int = 1
    heads: int = 1
    epochs: int = 1
    batch_size: int = 4096
    lr: float = 0.005
    max_pairs: int | None = None
    seed: int = 0

    def validate(self) -> GraphConfig:
        """Raise ``ValueError`` naming the first setting that does not make sense."""
        checks = [
            (self.layers in (1, 2), "layers must be 1 or 2"),
            (self.heads >= 1, "heads must be >= 1"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.max_pairs is None or self.max_pairs >= 1, "max_pairs must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"GraphConfig: {message} (got {self})")
        return self


@dataclass
class GraphResult:
    """What :func:`refine_skipgram` returns.

    Attributes:
        embedding: the refined vectors :math:`h` of the codes (hidden nodes left out).
        losses: mean loss per pair of each epoch.
        n_pairs: pairs per epoch (after ``max_pairs``); n_steps: optimiser steps in all.
        seconds: training wall time (pairs built before, final encoding after,
            excluded).
        n_nodes, n_edges: of the graph (hidden nodes included; undirected edges).
        config: the settings used.
        model: the trained :class:`GraphSkipGram`.
    """

    embedding: CodeEmbedding
    losses: list[float]
    n_pairs: int
    n_steps: int
    seconds: float
    n_nodes: int
    n_edges: int
    config: GraphConfig
    model: GraphSkipGram = field(repr=False)

    @property
    def nodes_per_second(self) -> float:
        """Nodes encoded per second of training: ``n_nodes * n_steps / seconds``."""
        return self.n_nodes * self.n_steps / max(self.seconds, 1e-12)


def sgns_step_grads(
    h: Tensor,
    outputs: Tensor,
    center: Tensor,
    context: Tensor,
    negatives: Tensor,
    weight: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Mean SGNS loss of a batch and its gradients with respect to every node's
    :math:`h` and every output vector, from
    :func:`~ehrseq.embeddings.skipgram.sgns_grads` (closed form).

    Equals autograd of ``sgns_loss(h[center], outputs[context], outputs[negatives],
    weight)`` when each block of ``B / nb`` consecutive pairs shares its row of
    ``negatives`` (tested).

    Shapes:
        ``h`` ``(M, d)``, ``outputs`` ``(N, d)``, ``center``, ``context``, ``weight``
        ``(B,)``, ``negatives`` ``(nb, K)`` -> loss (scalar), ``(M, d)``, ``(N, d)``.
    """
    b, (nb, k), d = len(center), negatives.shape, h.shape[1]
    v_neg = outputs.index_select(0, negatives.reshape(-1)).view(nb, k, d)  # (nb, K, d)
    loss, gu, gv, g_neg = sgns_grads(h[center], outputs[context], v_neg, weight)
    g_h = torch.zeros_like(h).index_add_(0, center, gu)  # (M, d)
    g_out = torch.zeros_like(outputs).index_add_(0, context, gv)  # (N, d)
    g_out.index_add_(0, negatives.reshape(-1), g_neg.view(-1, d))
    return loss / b, g_h / b, g_out / b


def refine_skipgram(
    corpus: CodeCorpus,
    base: SkipGramResult,
    graph: OntologyGraph,
    config: GraphConfig | None = None,
) -> GraphResult:
    r"""Refine a trained skip-gram on the ontology graph with its own loss and pairs.

    The pairs are :func:`~ehrseq.embeddings.skipgram.skipgram_pairs` of ``corpus`` with
    the skip-gram's window, :math:`\tau` and ``min_weight``, shuffled each epoch; a
    hidden node starts at the mean of its coded neighbours' vectors
    (:func:`neighbour_mean`). Each step encodes the whole graph
    (:meth:`GraphSkipGram.encode`), scores :math:`h` of the batch's centers against the
    output vectors of its contexts and of :math:`K` negatives per block of
    ``share_negatives`` pairs drawn from the skip-gram's noise distribution
    (:func:`sgns_step_grads`), back-propagates through the GAT and takes an Adam step. A
    graph without edges gives the skip-gram trained further on the same loss: the
    control.

    Args:
        corpus: the corpus the skip-gram trained on (token ``t`` is node ``t - 1``).
        base: the trained skip-gram
            (:func:`~ehrseq.embeddings.skipgram.train_skipgram`).
        graph: :func:`build_ontology_graph` over ``base.embedding.concept_ids``.
        config: settings (:class:`GraphConfig`).

    Raises:
        ValueError: when the graph's codes, the embedding's ids and the corpus's known
            codes differ, or on a bad config.
    """
    cfg = (config or GraphConfig()).validate()
    ids = base.embedding.concept_ids
    if not np.array_equal(graph.concept_ids[: graph.n_codes], ids):
        raise ValueError(
            f"refine_skipgram: the graph's {graph.n_codes} codes are not the "
            f"embedding's {len(ids)} concept ids in its order (build the graph over "
            "embedding.concept_ids)"
        )
    if not np.array_equal(corpus.concept_ids[1:], ids):
        raise ValueError("refine_skipgram: the corpus's codes are not the embedding's")
    sg = base.config
    gen = torch.Generator().manual_seed(cfg.seed)
    pairs = skipgram_pairs(corpus, sg.window, sg.tau, sg.min_weight)
    if len(pairs) == 0:
        raise ValueError("refine_skipgram: the corpus gives no (center, context) pair")
    center = torch.from_numpy(pairs.center) - 1  # (P,) node index
    context = torch.from_numpy(pairs.context) - 1  # (P,)
    weight = torch.from_numpy(pairs.weight)  # (P,)
    table = _noise_table(negative_distribution(corpus.counts, sg.ns_exponent)) - 1
    x = torch.as_tensor(np.array(base.embedding.vectors, dtype=np.float32))  # (N, d)
    edge_index = graph.edge_index
    hidden = torch.arange(graph.n_codes, graph.n_nodes)
    x = torch.cat([x, neighbour_mean(x, edge_index, hidden)])  # (M, d)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        out = torch.as_tensor(base.output_vectors)  # (N, d)
        model = GraphSkipGram(x, out, cfg.layers, cfg.heads)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    n, k, s = len(pairs), sg.negatives, sg.share_negatives
    bsz = -(-cfg.batch_size // s) * s
    losses, steps = [], 0
    t0 = time.perf_counter()
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)[: cfg.max_pairs]  # all when None
        center_e, context_e, weight_e = center[perm], context[perm], weight[perm]
        total = 0.0
        for start in range(0, len(perm), bsz):
            c = center_e[start : start + bsz]  # (B,)
            o = context_e[start : start + bsz]  # (B,)
            w = weight_e[start : start + bsz]  # (B,)
            pad = -len(c) % s
            if pad:  # fill the last block with weight-0 pairs
                zero = torch.zeros(pad, dtype=c.dtype)
                c, o, w = (
                    torch.cat([c, zero]),
                    torch.cat([o, zero]),
                    torch.cat([w, zero.float()]),
                )
            nb = len(c) // s
            draw = torch.randint(0, len(table), (nb * k,), generator=gen)
            neg = table[draw].view(nb, k)  # (nb, K) shared by blocks of S pairs
            h = model.encode(edge_index)  # (M, d)
            out = model.outputs.detach()  # (N, d)
            loss, g_h, g_out = sgns_step_grads(h.detach(), out, c, o, neg, w)
            opt.zero_grad(set_to_none=True)
            h.backward(g_h)
            model.outputs.grad = g_out
            opt.step()
            total += float(loss) * len(c)
            steps += 1
        losses.append(total / len(perm))
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        h = model.encode(edge_index)[: graph.n_codes].numpy().copy()
    emb = CodeEmbedding(ids, h, base.embedding.names)
    sizes = graph.n_nodes, graph.n_edges
    n_used = min(n, cfg.max_pairs or n)
    return GraphResult(emb, losses, n_used, steps, seconds, *sizes, cfg, model)
