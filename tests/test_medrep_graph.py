"""ehrseq.medrep.graph: the untyped concept graph, the plain-torch sampler, GRACE with LwF."""

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("torch_geometric")

from ehrseq.data.concepts import data_dir  # noqa: E402
from ehrseq.data.download import local_sample  # noqa: E402
from ehrseq.embeddings import CodeEmbedding  # noqa: E402
from ehrseq.medrep import concept_descriptions, fit_deciles, read_concept_tables  # noqa: E402
from ehrseq.medrep.graph import (  # noqa: E402
    GraceConfig,
    build_concept_graph,
    grace_loss,
    sample_subgraph,
    train_grace,
)


def _rel(pairs) -> pd.DataFrame:
    a = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return pd.DataFrame({"concept_id_1": a[:, 0], "concept_id_2": a[:, 1], "relationship_id": "x"})


def _edges(graph) -> set[tuple[int, int]]:
    ids = graph.concept_ids
    return {(int(ids[i]), int(ids[j])) for i, j in graph.edge_index.T.tolist()}


def test_graph_merges_types_cuts_hubs_and_counts_dangling():
    ids = np.arange(1, 121)
    desc = pd.DataFrame({"concept_id": ids})
    pairs = [(1, k) for k in range(2, 103)]  # node 1: 101 edges > 100, a hub
    pairs += [(2, 3), (3, 2), (2, 3), (4, 4), (5, 999), (888, 6), (5, 6)]
    g = build_concept_graph(desc, _rel(pairs))
    assert g.n_hubs == 1 and g.hub_ids.tolist() == [1]
    assert g.n_hub_edges_removed == 101
    assert g.degree()[0] == 0  # the hub stays, isolated
    assert _edges(g) == {(2, 3), (3, 2), (5, 6), (6, 5)}  # de-duplicated, both directions
    assert g.n_dangling_rows == 2 and g.n_dangling_ids == 2  # 999 and 888 are not nodes
    assert g.n_self_loops == 1
    assert g.summary()["relationship_rows"] == len(pairs)
    # exactly 100 edges is not a hub
    g100 = build_concept_graph(desc, _rel([(1, k) for k in range(2, 102)]))
    assert g100.n_hubs == 0 and g100.n_edges == 100


def test_decile_edges_and_refusals():
    desc = pd.DataFrame(
        {"concept_id": [10, -1001, -1002, 20], "parent_concept_id": [10, 10, 10, 20]}
    )
    g = build_concept_graph(desc, _rel([(10, 20)]))
    assert g.n_decile_edges == 2
    assert _edges(g) >= {(10, -1001), (-1001, 10), (10, -1002), (10, 20)}
    with pytest.raises(ValueError, match="decile parent 30"):
        build_concept_graph(pd.DataFrame({"concept_id": [1], "parent_concept_id": [30]}), _rel([]))
    with pytest.raises(ValueError, match="repeat"):
        build_concept_graph(pd.DataFrame({"concept_id": [1, 1]}), _rel([]))


def _communities(n_groups=4, size=15, n_edges=40, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.arange(1, n_groups * size + 1)
    pairs = []
    for c in range(n_groups):
        members = ids[c * size : (c + 1) * size]
        pairs += [tuple(rng.choice(members, 2, replace=False)) for _ in range(n_edges)]
    graph = build_concept_graph(pd.DataFrame({"concept_id": ids}), _rel(pairs))
    text = CodeEmbedding(ids, rng.normal(size=(len(ids), dim)))
    return graph, text


def test_sampler_gives_induced_subgraph():
    graph, _ = _communities()
    gen = torch.Generator().manual_seed(0)
    seeds = torch.tensor([0, 20, 40])
    nodes, ei = sample_subgraph(graph, seeds, (2, 2), gen)
    assert nodes[:3].tolist() == [0, 20, 40] and len(torch.unique(nodes)) == len(nodes)
    full = _edges(graph)
    ids = graph.concept_ids[nodes.numpy()]
    sub = {(int(ids[i]), int(ids[j])) for i, j in ei.T.tolist()}
    induced = {(a, b) for a, b in full if a in set(ids.tolist()) and b in set(ids.tolist())}
    assert sub == induced
    # with room for every neighbour, one hop is the seed's whole neighbourhood
    nodes1, _ = sample_subgraph(graph, torch.tensor([0]), (1000,), gen)
    rowptr, col = graph.csr()
    assert set(nodes1[1:].tolist()) == set(col[rowptr[0] : rowptr[1]].tolist())


def test_grace_loss_matches_the_formula():
    torch.manual_seed(0)
    h1, h2, tau = torch.randn(5, 3), torch.randn(5, 3), 0.5
    u, v = torch.nn.functional.normalize(h1), torch.nn.functional.normalize(h2)

    def loop(a, b):
        out = []
        for i in range(len(a)):
            pos = torch.exp(a[i] @ b[i] / tau)
            neg = sum(
                torch.exp(a[i] @ b[k] / tau) + torch.exp(a[i] @ a[k] / tau)
                for k in range(len(a))
                if k != i
            )
            out.append(-torch.log(pos / (pos + neg)))
        return torch.stack(out)

    expected = 0.5 * (loop(u, v) + loop(v, u)).mean()
    torch.testing.assert_close(grace_loss(h1, h2, tau), expected)


def test_loss_falls_on_a_tiny_graph():
    graph, text = _communities()
    res = train_grace(graph, text, GraceConfig(epochs=30, batch_size=64, lr=5e-3))
    loss = res.history["grace_loss"].to_numpy()
    assert loss[-5:].mean() < loss[0] - 0.5
    assert res.embedding.concept_ids.tolist() == graph.concept_ids.tolist()
    assert res.embedding.dim == text.dim and res.nodes_seen >= 30 * graph.n_nodes


def test_lwf_weight_keeps_the_output_near_the_text():
    graph, text = _communities()
    runs = {
        w: train_grace(graph, text, GraceConfig(epochs=40, batch_size=64, lr=5e-3, lwf_weight=w))
        for w in (0.0, 100.0)
    }
    free, held = (runs[w].history.iloc[-1] for w in (0.0, 100.0))
    # measured on this graph: KL 0.45 vs 0.21, cosine 0.0 vs 0.4
    assert held["kl_to_text"] < 0.6 * free["kl_to_text"]
    assert held["cosine_to_text"] > free["cosine_to_text"] + 0.25
    assert np.isnan(runs[0.0].history["lwf_kl"]).all()


def test_bad_inputs_are_refused():
    graph, text = _communities()
    with pytest.raises(ValueError, match="no text vector"):
        train_grace(graph, text.subset(text.concept_ids[:10]), GraceConfig(epochs=1))
    with pytest.raises(ValueError, match="lwf_weight"):
        GraceConfig(lwf_weight=-1).validate()


def test_shipped_vocabulary_graph():
    tables = read_concept_tables(data_dir() / "vocabulary")
    meas = pd.DataFrame(
        {"measurement_concept_id": [2000005001] * 20, "value_as_number": np.arange(20.0)}
    )
    desc = concept_descriptions(tables, fit_deciles(meas))
    g = build_concept_graph(desc, tables.relationship)
    assert g.n_nodes == len(desc) and g.n_decile_edges == 10
    assert g.n_dangling_rows == 0 and g.n_self_loops > 0  # standard concepts map to themselves
    # every non-self row has its reverse (Is a / Subsumes, Maps to / Mapped from): one edge each
    assert g.n_edges == (g.n_relationship_rows - g.n_self_loops) // 2 + 10


@pytest.mark.shared_data
def test_synthea27nj_graph_counts_dangling_rows():
    folder = local_sample("eunomia_synthea27nj")
    if folder is None:
        pytest.skip("eunomia_synthea27nj sample absent")
    tables = read_concept_tables(folder)
    desc = concept_descriptions(
        tables, fit_deciles(pd.read_parquet(folder / "measurement.parquet"))
    )
    g = build_concept_graph(desc, tables.relationship)
    # most of the 266k rows name concepts this small sample does not carry
    assert g.n_dangling_rows > 0.5 * g.n_relationship_rows
    assert g.n_dangling_rows + g.n_self_loops <= g.n_relationship_rows
    assert g.degree().max() <= 100
