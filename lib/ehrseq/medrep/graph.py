"""GRACE on the OMOP concept graph, held near the text vectors by a learning-without-forgetting term.

The graph (:func:`build_concept_graph`), as MedRep's ``gnn_representation.py`` builds it:

- every ``concept_relationship`` row is an edge, whatever its type, undirected and
  de-duplicated; self rows (``Maps to`` itself) are dropped;
- each measured concept is linked to its ten decile pseudo-concepts;
- a *hub*, a node with more than ``max_degree`` (100) edges, loses all its edges and stays as
  an isolated node that keeps its text vector's image;
- a row naming an id that is not a node (a *dangling* row: the vocabulary slice lacks that
  concept) is dropped and counted, never silently.

The model (:class:`Grace`): a 2-layer GCN encoder ``d -> 2d -> d`` with PReLU and an ELU
projection head, trained by GRACE (Zhu et al., arXiv 2006.04131). Two views of a subgraph are
made by dropping each edge with probability ``p_edge`` and zeroing each feature column with
probability ``p_feature`` (0.2 each); with :math:`h = \\text{normalise}(\\text{proj}(z))` and
:math:`\\theta(a, b) = a^\\top b`,

.. math::

    \\ell(u_i) = -\\log \\frac{e^{\\theta(u_i, v_i)/\\tau}}
        {e^{\\theta(u_i, v_i)/\\tau} + \\sum_{k \\ne i} e^{\\theta(u_i, v_k)/\\tau}
         + \\sum_{k \\ne i} e^{\\theta(u_i, u_k)/\\tau}},

symmetrised over the two views and averaged over every node of the subgraph (:math:`\\tau =
0.5`). After each GRACE step a separate optimiser step lowers
``lwf_weight * KL(softmax(x) || softmax(GCN(x)))`` over the feature dimension (MedRep's
``kl_loss``, which has unit weight), so the output stays near the text representation ``x``;
``lwf_weight = 0`` removes the term (MedRep's ``lwf_False`` ablation). The LwF step shares the
GRACE step's Adam optimiser: with a separate Adam, as in MedRep, the weight would be void
(Adam divides the gradient by its own running scale, so every positive weight gives the same
updates; measured: weights 1 and 100 gave identical histories), and only 0 vs > 0 would matter.

Mini-batches: torch-geometric's ``NeighborLoader`` needs ``pyg-lib`` or ``torch-sparse``
(2.8.1 raises ``ImportError`` without them), which have no wheels for this torch. So
:func:`sample_subgraph` samples neighbours with plain torch on a CSR copy of the graph: from
the seed nodes, up to ``num_neighbors[h]`` neighbours per node at hop ``h`` (all of them when a
node has fewer; drawn with replacement otherwise, duplicates merged), and the batch is the
subgraph *induced* by the sampled nodes. Only ``GCNConv`` comes from torch-geometric.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ehrseq.embeddings import CodeEmbedding

__all__ = [
    "ConceptGraph",
    "build_concept_graph",
    "sample_subgraph",
    "GraceConfig",
    "Grace",
    "grace_loss",
    "lwf_kl",
    "GraceResult",
    "train_grace",
]


@dataclass(frozen=True, eq=False)
class ConceptGraph:
    """The untyped concept graph: node ``i`` is ``concept_ids[i]``.

    Attributes:
        concept_ids: ``(N,)`` int64 node ids (OMOP ids; deciles negative).
        edge_index: ``(2, 2E)`` int64, each undirected edge in both directions, no self loops.
        n_relationship_rows: rows of ``concept_relationship`` read.
        n_dangling_rows: rows dropped because an end is not a node.
        n_dangling_ids: distinct ids named by those rows that are not nodes.
        n_self_loops: rows from a concept to itself (dropped).
        n_decile_edges: concept -> decile edges added.
        hub_ids: ``(H,)`` ids of the nodes that had more than ``max_degree`` edges.
        n_hub_edges_removed: undirected edges removed with the hubs.
        max_degree: the hub threshold.
    """

    concept_ids: np.ndarray
    edge_index: torch.Tensor
    n_relationship_rows: int
    n_dangling_rows: int
    n_dangling_ids: int
    n_self_loops: int
    n_decile_edges: int
    hub_ids: np.ndarray
    n_hub_edges_removed: int
    max_degree: int
    _csr: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def n_nodes(self) -> int:
        return len(self.concept_ids)

    @property
    def n_edges(self) -> int:
        """Undirected edges kept."""
        return int(self.edge_index.shape[1] // 2)

    @property
    def n_hubs(self) -> int:
        return len(self.hub_ids)

    def degree(self) -> np.ndarray:
        """Edges of each node after the hub cut. ``(N,)`` int64."""
        return np.bincount(self.edge_index[0].numpy(), minlength=self.n_nodes)

    def csr(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rowptr (N+1,), col (2E,))``: the neighbours of node ``i`` are
        ``col[rowptr[i]:rowptr[i+1]]``."""
        if self._csr is None:
            src, dst = self.edge_index
            order = torch.argsort(src, stable=True)
            counts = torch.bincount(src, minlength=self.n_nodes)
            rowptr = torch.zeros(self.n_nodes + 1, dtype=torch.long)
            rowptr[1:] = torch.cumsum(counts, 0)
            object.__setattr__(self, "_csr", (rowptr, dst[order].contiguous()))
        return self._csr

    def summary(self) -> dict[str, int]:
        """The counts, for a report: nodes, edges, hubs, dangling and self rows."""
        return {
            "nodes": self.n_nodes,
            "edges": self.n_edges,
            "relationship_rows": self.n_relationship_rows,
            "dangling_rows": self.n_dangling_rows,
            "dangling_ids": self.n_dangling_ids,
            "self_loops": self.n_self_loops,
            "decile_edges": self.n_decile_edges,
            "hubs": self.n_hubs,
            "hub_edges_removed": self.n_hub_edges_removed,
        }

    def __repr__(self) -> str:
        # one count a line, so that a printed graph fits a page's column
        lines = "".join(f"\n    {k}={v}," for k, v in self.summary().items())
        return f"ConceptGraph({lines}\n)"


def build_concept_graph(
    descriptions: pd.DataFrame, relationship: pd.DataFrame, max_degree: int = 100
) -> ConceptGraph:
    """The untyped graph over the rows of ``descriptions`` (concepts and their deciles).

    Args:
        descriptions: a frame with ``concept_id`` (the nodes, in order) and optionally
            ``parent_concept_id`` (a decile's measured concept; equal to ``concept_id``
            otherwise), as :func:`~ehrseq.medrep.descriptions.concept_descriptions` returns.
        relationship: ``concept_relationship`` (``concept_id_1``, ``concept_id_2``; the
            relationship type is ignored).
        max_degree: a node with more edges than this (counted after de-duplication, decile
            edges included) loses all of them.

    Raises:
        ValueError: on repeated node ids, missing columns, a decile whose parent is not a node,
            or ``max_degree < 1``.
    """
    if "concept_id" not in descriptions.columns:
        raise ValueError("build_concept_graph: descriptions lacks concept_id")
    if {"concept_id_1", "concept_id_2"} - set(relationship.columns):
        raise ValueError("build_concept_graph: relationship lacks concept_id_1/concept_id_2")
    if max_degree < 1:
        raise ValueError("build_concept_graph: max_degree must be >= 1")
    ids = descriptions["concept_id"].to_numpy(np.int64)
    index = pd.Index(ids)
    if not index.is_unique:
        raise ValueError("build_concept_graph: node ids repeat")
    n = len(ids)
    c1 = relationship["concept_id_1"].to_numpy(np.int64)
    c2 = relationship["concept_id_2"].to_numpy(np.int64)
    i, j = index.get_indexer(c1), index.get_indexer(c2)
    dangling = (i < 0) | (j < 0)
    missing = np.concatenate([c1[i < 0], c2[j < 0]])
    i, j = i[~dangling], j[~dangling]
    self_loop = i == j
    i, j = i[~self_loop], j[~self_loop]
    n_decile = 0
    if "parent_concept_id" in descriptions.columns:
        parent = descriptions["parent_concept_id"].to_numpy(np.int64)
        child = parent != ids
        p = index.get_indexer(parent[child])
        if (p < 0).any():
            bad = parent[child][p < 0][0]
            raise ValueError(f"build_concept_graph: decile parent {bad} is not a node")
        n_decile = int(child.sum())
        i = np.concatenate([i, p])
        j = np.concatenate([j, np.flatnonzero(child)])
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    key = np.unique(lo.astype(np.int64) * n + hi)
    lo, hi = key // n, key % n
    deg = np.bincount(lo, minlength=n) + np.bincount(hi, minlength=n)
    hub = deg > max_degree
    cut = hub[lo] | hub[hi]
    lo, hi = lo[~cut], hi[~cut]
    edge_index = torch.from_numpy(np.stack([np.concatenate([lo, hi]), np.concatenate([hi, lo])]))
    return ConceptGraph(
        concept_ids=ids,
        edge_index=edge_index.long(),
        n_relationship_rows=len(relationship),
        n_dangling_rows=int(dangling.sum()),
        n_dangling_ids=len(np.unique(missing)),
        n_self_loops=int(self_loop.sum()),
        n_decile_edges=n_decile,
        hub_ids=ids[hub],
        n_hub_edges_removed=int(cut.sum()),
        max_degree=int(max_degree),
    )


def _gather(rowptr: torch.Tensor, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All CSR positions of the neighbours of ``nodes`` and the row (into nodes) of each."""
    deg = rowptr[nodes + 1] - rowptr[nodes]
    row = torch.repeat_interleave(torch.arange(len(nodes)), deg)
    offset = torch.arange(int(deg.sum())) - torch.repeat_interleave(torch.cumsum(deg, 0) - deg, deg)
    return rowptr[nodes][row] + offset, row


def sample_subgraph(
    graph: ConceptGraph,
    seeds: torch.Tensor,
    num_neighbors: tuple[int, ...] = (30, 20),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbour-sampled subgraph around ``seeds``, with plain torch (no pyg-lib).

    Args:
        graph: the concept graph.
        seeds: ``(B,)`` distinct node indices.
        num_neighbors: neighbours drawn per node at each hop (all when a node has fewer).
        generator: the random stream.

    Returns:
        ``nodes`` ``(n,)`` node indices with the seeds first, in their order, and
        ``edge_index`` ``(2, e)`` of the subgraph induced by ``nodes``, relabelled to
        ``0..n-1``.
    """
    rowptr, col = graph.csr()
    seeds = seeds.long()
    taken = torch.zeros(graph.n_nodes, dtype=torch.bool)
    taken[seeds] = True
    parts, frontier = [seeds], seeds
    for k in num_neighbors:
        if len(frontier) == 0:
            break
        deg = rowptr[frontier + 1] - rowptr[frontier]
        few = deg <= k
        pos_all, _ = _gather(rowptr, frontier[few])
        many = frontier[~few]
        draw = torch.rand(len(many), k, generator=generator)  # (m, k)
        pos_some = rowptr[many, None] + (draw * deg[~few, None]).long()  # (m, k)
        nbr = torch.unique(col[torch.cat([pos_all, pos_some.reshape(-1)])])
        new = nbr[~taken[nbr]]
        taken[new] = True
        parts.append(new)
        frontier = new
    nodes = torch.cat(parts)
    local = torch.full((graph.n_nodes,), -1, dtype=torch.long)
    local[nodes] = torch.arange(len(nodes))
    pos, row = _gather(rowptr, nodes)
    dst = local[col[pos]]
    keep = dst >= 0
    return nodes, torch.stack([row[keep], dst[keep]])


@dataclass
class GraceConfig:
    """Settings of :func:`train_grace` (defaults: MedRep's ``grace.yaml`` where it has one).

    Attributes:
        hidden: width of the first GCN layer; ``None`` gives ``2 * d``.
        proj: width of the projection head; ``None`` gives ``d``.
        tau: GRACE temperature.
        p_edge: edge-drop probability of the two views.
        p_feature: feature-column mask probability of the two views.
        lwf_weight: weight of the KL pull toward the text vectors (0 switches it off).
        lr, weight_decay: Adam settings (both optimisers).
        epochs: passes over the nodes (each node is a seed once per epoch).
        batch_size: seed nodes per subgraph.
        num_neighbors: neighbours sampled per node and hop (one entry per hop).
        seed: seeds the weights, the sampling and the views.
    """

    hidden: int | None = None
    proj: int | None = None
    tau: float = 0.5
    p_edge: tuple[float, float] = (0.2, 0.2)
    p_feature: tuple[float, float] = (0.2, 0.2)
    lwf_weight: float = 1.0
    lr: float = 5e-4
    weight_decay: float = 1e-5
    epochs: int = 20
    batch_size: int = 1024
    num_neighbors: tuple[int, ...] = (30, 20)
    seed: int = 0

    def validate(self) -> GraceConfig:
        if self.tau <= 0:
            raise ValueError("GraceConfig: tau must be > 0")
        for p in (*self.p_edge, *self.p_feature):
            if not 0 <= p < 1:
                raise ValueError("GraceConfig: drop probabilities must be in [0, 1)")
        if self.lwf_weight < 0:
            raise ValueError("GraceConfig: lwf_weight must be >= 0")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("GraceConfig: epochs >= 1 and batch_size >= 2 required")
        if not self.num_neighbors or min(self.num_neighbors) < 1:
            raise ValueError("GraceConfig: num_neighbors needs positive entries")
        return self


class Grace(nn.Module):
    """2-layer GCN encoder ``d -> hidden -> d`` (PReLU) and an ELU projection head.

    Shapes:
        ``x`` ``(n, d)``, ``edge_index`` ``(2, e)`` -> ``z`` ``(n, d)``;
        :meth:`project`: ``(n, d)`` -> ``(n, d)``.
    """

    def __init__(self, dim: int, hidden: int, proj: int) -> None:
        super().__init__()
        from torch_geometric.nn import GCNConv

        self.conv1 = GCNConv(dim, hidden)
        self.act1 = nn.PReLU(hidden)
        self.conv2 = GCNConv(hidden, dim)
        self.act2 = nn.PReLU(dim)
        self.fc1 = nn.Linear(dim, proj)
        self.fc2 = nn.Linear(proj, dim)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        h = self.act1(self.conv1(x, edge_index))  # (n, hidden)
        return self.act2(self.conv2(h, edge_index))  # (n, d)

    def project(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.elu(self.fc1(z)))  # (n, d)


def grace_loss(h1: torch.Tensor, h2: torch.Tensor, tau: float) -> torch.Tensor:
    """GRACE's symmetric contrastive loss (module docstring), mean over nodes.

    Args:
        h1, h2: ``(n, p)`` projections of the two views (normalised here).
        tau: temperature.
    """
    if h1.shape != h2.shape or h1.ndim != 2:
        raise ValueError(f"grace_loss: views of shapes {tuple(h1.shape)}, {tuple(h2.shape)}")
    a, b = F.normalize(h1, dim=1), F.normalize(h2, dim=1)
    eye = torch.eye(len(a), dtype=torch.bool)

    def semi(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        between = u @ v.T / tau  # (n, n)
        within = (u @ u.T / tau).masked_fill(eye, float("-inf"))  # (n, n), no self pair
        return torch.logsumexp(torch.cat([between, within], 1), 1) - between.diagonal()

    return 0.5 * (semi(a, b) + semi(b, a)).mean()


def lwf_kl(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(x) || softmax(z))`` over the feature dimension, mean over rows.

    Shapes: ``z``, ``x``: ``(n, d)`` -> scalar.
    """
    return F.kl_div(
        F.log_softmax(z, 1), F.log_softmax(x, 1), reduction="batchmean", log_target=True
    )


@dataclass
class GraceResult:
    """What :func:`train_grace` returns.

    Attributes:
        embedding: the encoder's output on the whole graph, one row per node.
        history: one row per epoch: ``grace_loss`` and ``lwf_kl`` (means over batches),
            ``kl_to_text`` and ``cosine_to_text`` (the whole graph's output against the text
            vectors, after the epoch).
        seconds: training time (sampling included, final inference excluded).
        nodes_seen: subgraph nodes summed over batches and epochs (for nodes/s).
        model: the trained :class:`Grace`.
    """

    embedding: CodeEmbedding
    history: pd.DataFrame
    seconds: float
    nodes_seen: int
    model: Grace


def _drift(
    model: Grace, x: torch.Tensor, edge_index: torch.Tensor
) -> tuple[torch.Tensor, float, float]:
    model.eval()
    with torch.no_grad():
        z = model(x, edge_index)
        kl = float(lwf_kl(z, x))
        cos = float(F.cosine_similarity(z, x, dim=1).mean())
    model.train()
    return z, kl, cos


def train_grace(
    graph: ConceptGraph, text: CodeEmbedding, cfg: GraceConfig | None = None, progress: bool = False
) -> GraceResult:
    """Refine the text vectors on the concept graph with GRACE and the LwF pull.

    Args:
        graph: from :func:`build_concept_graph`.
        text: a vector for every node (:func:`~ehrseq.medrep.text.encode_descriptions`).
        cfg: settings (:class:`GraceConfig`).
        progress: a tqdm bar over epochs.

    Returns:
        :class:`GraceResult`; its embedding has ``graph.concept_ids`` in graph order and the
        text dimension ``d``.

    Raises:
        ValueError: naming nodes that have no text vector, or on a bad config.
    """
    cfg = (cfg or GraceConfig()).validate()
    rows = text.rows(graph.concept_ids)
    if (rows < 0).any():
        lack = graph.concept_ids[rows < 0]
        raise ValueError(
            f"train_grace: {len(lack)} nodes have no text vector, e.g. {lack[:5].tolist()}"
        )
    x_all = torch.as_tensor(np.asarray(text.vectors[rows]), dtype=torch.float32)  # (N, d)
    d = x_all.shape[1]
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model = Grace(d, cfg.hidden or 2 * d, cfg.proj or d)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def view(x: torch.Tensor, ei: torch.Tensor, p_feat: float, p_edge: float):
        keep_col = torch.rand(d, generator=gen) >= p_feat  # (d,)
        keep_edge = torch.rand(ei.shape[1], generator=gen) >= p_edge  # (e,)
        return x * keep_col, ei[:, keep_edge]

    records, seen, seconds = [], 0, 0.0
    epochs = range(cfg.epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc="GRACE", unit="epoch")
    for epoch in epochs:
        t0 = time.perf_counter()
        g_sum, k_sum, n_batches = 0.0, 0.0, 0
        for seeds in torch.randperm(graph.n_nodes, generator=gen).split(cfg.batch_size):
            nodes, ei = sample_subgraph(graph, seeds, cfg.num_neighbors, gen)
            x = x_all[nodes]  # (n, d)
            seen += len(nodes)
            x1, e1 = view(x, ei, cfg.p_feature[0], cfg.p_edge[0])
            x2, e2 = view(x, ei, cfg.p_feature[1], cfg.p_edge[1])
            loss = grace_loss(model.project(model(x1, e1)), model.project(model(x2, e2)), cfg.tau)
            opt.zero_grad()
            loss.backward()
            opt.step()
            g_sum += float(loss.detach())
            if cfg.lwf_weight > 0:
                kl = lwf_kl(model(x, ei), x)
                opt.zero_grad()
                (cfg.lwf_weight * kl).backward()
                opt.step()
                k_sum += float(kl.detach())
            n_batches += 1
        seconds += time.perf_counter() - t0
        _, kl_text, cos_text = _drift(model, x_all, graph.edge_index)
        records.append(
            {
                "epoch": epoch,
                "grace_loss": g_sum / n_batches,
                "lwf_kl": k_sum / n_batches if cfg.lwf_weight > 0 else float("nan"),
                "kl_to_text": kl_text,
                "cosine_to_text": cos_text,
            }
        )
    z, _, _ = _drift(model, x_all, graph.edge_index)
    emb = CodeEmbedding(
        graph.concept_ids,
        z.numpy(),
        None if text.names is None else tuple(text.names[i] for i in rows),
    )
    return GraceResult(emb, pd.DataFrame(records), seconds, seen, model)
