"""Graph-enhanced code vectors: the ontology graph counts every row, the GAT layer
reduces to a neighbour mean under uniform attention, a code without edges keeps its
vector, the closed-form step equals autograd, and the whole refinement runs on the
shipped vocabulary (and on Synthea27Nj's graph when the shared folder is there)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ehrseq.data.concepts import data_dir, load_vocabulary
from ehrseq.data.download import local_sample
from ehrseq.embeddings import truth
from ehrseq.embeddings.corpus import CodeCorpus
from ehrseq.embeddings.graph import (
    GraphConfig,
    GraphSkipGram,
    build_ontology_graph,
    neighbour_mean,
    read_ontology_tables,
    refine_skipgram,
    sgns_step_grads,
)
from ehrseq.embeddings.skipgram import SkipGramConfig, sgns_loss, train_skipgram

pytestmark = pytest.mark.usefixtures("one_thread")

SYNTHEA = local_sample("eunomia_synthea27nj")


def _rel(rows):
    columns = ["concept_id_1", "concept_id_2", "relationship_id"]
    return pd.DataFrame(rows, columns=columns)


def _edges(graph) -> set[tuple[int, int]]:
    ids = graph.concept_ids
    return {(int(ids[a]), int(ids[b])) for a, b in graph.edge_index.T.tolist()}


def test_graph_counts_dangling_outside_and_self_rows():
    rel = _rel(
        [
            (1, 2, "Is a"),  # within
            (2, 1, "Subsumes"),  # the same edge again
            (3, 9, "Is a"),  # dangling: 9 is not a code
            (8, 9, "Is a"),  # outside
            (4, 4, "Maps to"),  # self
            (5, 4, "Maps to"),  # within
            (6, 7, "Has ing"),  # a type not asked for
        ]
    )
    anc = pd.DataFrame(
        {
            "ancestor_concept_id": [2, 9, 1],
            "descendant_concept_id": [1, 1, 1],
            "min_levels_of_separation": [1, 2, 0],  # the level-0 row is left out
        }
    )
    g = build_ontology_graph([1, 2, 3, 4, 5], rel, anc)
    s = g.sources
    assert s.loc["Is a", ["rows", "within", "dangling", "outside"]].tolist() == [
        3,
        1,
        1,
        1,
    ]
    assert s.loc["Maps to", ["within", "self", "edges"]].tolist() == [2, 1, 1]
    assert s.loc["concept_ancestor", ["rows", "dangling", "edges"]].tolist() == [
        2,
        1,
        1,
    ]
    assert g.n_dangling == 2 and g.n_dangling_ids == 1  # both name 9
    assert _edges(g) == {(1, 2), (2, 1), (4, 5), (5, 4)}
    assert g.n_edges == 2 and g.n_is_a == 1 and g.n_isolated == 1  # code 3
    # hidden: 9 becomes a node after the codes, and joins 1, 3 and 8's side
    h = build_ontology_graph([1, 2, 3, 4, 5], rel, anc, hidden=True)
    assert h.concept_ids.tolist() == [1, 2, 3, 4, 5, 9] and h.n_hidden == 1
    assert {(3, 9), (9, 3), (1, 9), (9, 1)} <= _edges(h)
    assert h.n_codes == 5 and h.n_dangling == g.n_dangling  # counts speak of the codes


def test_no_is_a_edge_warns_with_counts():
    rel = _rel([(1, 2, "Maps to"), (3, 9, "Is a")])
    said = r"0 'Is a' edges .*1 'Is a' rows read, 1 of them"
    with pytest.warns(UserWarning, match=said):
        g = build_ontology_graph([1, 2, 3], rel)
    assert g.n_is_a == 0 and g.n_edges == 1


def test_bad_input_is_refused():
    rel = _rel([(1, 2, "Is a")])
    with pytest.raises(ValueError, match="repeat"):
        build_ontology_graph([1, 1, 2], rel)
    with pytest.raises(ValueError, match="lacks columns"):
        build_ontology_graph([1, 2], rel.drop(columns="relationship_id"))
    with pytest.raises(ValueError, match="layers"):
        GraphSkipGram(torch.zeros(3, 2), torch.zeros(3, 2), layers=3)
    with pytest.raises(ValueError, match="N <= M"):
        GraphSkipGram(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="lr"):
        GraphConfig(lr=0).validate()


def test_uniform_attention_is_the_neighbour_mean():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 4, generator=gen)
    edge_index = torch.tensor([[1, 2, 0, 3, 4, 0], [0, 0, 1, 1, 1, 4]])  # j -> i
    model = GraphSkipGram(x, x, layers=1, heads=2)
    conv = model.convs[0]
    with torch.no_grad():
        conv.att_src.zero_()
        conv.att_dst.zero_()
        conv.lin.weight.copy_(torch.eye(4).repeat(2, 1))  # W = I in both heads
    h = model.encode(edge_index)
    expect = x.clone()
    for i in range(5):  # the naive loop: x_i + mean of the neighbours
        nbrs = [j for j, k in edge_index.T.tolist() if k == i]
        if nbrs:
            expect[i] += x[nbrs].mean(0)
    assert torch.allclose(h, expect, atol=1e-6)
    assert torch.equal(h[2], x[2])  # node 2 receives no message: its own vector


def test_code_without_edges_keeps_its_vector_and_start_is_the_skipgram():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, generator=gen)
    edge_index = torch.tensor([[0, 1], [1, 0]])
    model = GraphSkipGram(x, x, layers=2, heads=1)
    assert torch.equal(model.encode(edge_index), x)  # W = 0 at the start
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen))
    h = model.encode(edge_index)
    assert torch.equal(h[2:], model.inputs[2:])  # isolated codes, any weights
    assert not torch.allclose(h[:2], model.inputs[:2])


def test_neighbour_mean_equals_a_loop():
    x = torch.arange(6.0).view(3, 2)
    edge_index = torch.tensor([[0, 1, 3, 4, 3], [3, 3, 0, 3, 1]])  # 4 is hidden too
    got = neighbour_mean(x, edge_index, torch.tensor([3, 4]))
    assert torch.allclose(got[0], (x[0] + x[1]) / 2)  # node 4's message is not counted
    assert torch.equal(got[1], torch.zeros(2))  # 4 has no coded neighbour


def test_closed_form_step_equals_autograd():
    gen = torch.Generator().manual_seed(2)
    h = torch.randn(7, 5, generator=gen, requires_grad=True)
    out = torch.randn(6, 5, generator=gen, requires_grad=True)
    c, o = torch.tensor([0, 6, 2, 2]), torch.tensor([1, 3, 5, 0])
    w = torch.rand(4, generator=gen)
    neg = torch.tensor([[2, 4, 4], [0, 1, 5]])  # 2 blocks of 2 pairs share negatives
    loss, g_h, g_out = sgns_step_grads(h.detach(), out.detach(), c, o, neg, w)
    ref = sgns_loss(h[c], out[o], out[neg.repeat_interleave(2, 0)], w)
    ref.backward()
    assert torch.allclose(loss, ref) and torch.allclose(g_h, h.grad, atol=1e-6)
    assert torch.allclose(g_out, out.grad, atol=1e-6)


@pytest.fixture(scope="module")
def vocab_corpus():
    """Random records over the shipped vocabulary's standard concepts."""
    vocab = load_vocabulary()
    concept = vocab.concept
    ids = concept.loc[concept["standard_concept"] == "S", "concept_id"].to_numpy()
    rng = np.random.default_rng(0)
    n = 3000
    person = np.sort(rng.integers(0, 60, n))
    days = np.sort(rng.integers(0, 400, n))
    codes = rng.choice(ids, n)
    return vocab, CodeCorpus.from_arrays(person, days, codes, vocab, 1, 0)


def test_refinement_runs_on_the_shipped_vocabulary(vocab_corpus):
    vocab, corpus = vocab_corpus
    base = train_skipgram(corpus, SkipGramConfig(dim=8, epochs=1, progress=False))
    rel, anc = read_ontology_tables(data_dir() / "vocabulary")
    assert len(anc) == len(truth.ancestor_table(vocab))  # the same Is-a closure
    graph = build_ontology_graph(base.embedding.concept_ids, rel, anc, hidden=True)
    assert graph.n_is_a > 0 and graph.n_hidden > 0 and graph.n_dangling > 0
    res = refine_skipgram(corpus, base, graph, GraphConfig(batch_size=1024))
    assert np.array_equal(res.embedding.concept_ids, base.embedding.concept_ids)
    assert np.isfinite(res.embedding.vectors).all() and res.n_steps > 0
    assert not np.allclose(res.embedding.vectors, base.embedding.vectors)
    assert res.nodes_per_second > 0
    some = GraphConfig(batch_size=64, max_pairs=500)
    part = refine_skipgram(corpus, base, graph, some)
    assert part.n_pairs == 500 and part.n_steps == 8  # 500 pairs in batches of 64
    other = build_ontology_graph(base.embedding.concept_ids[::-1], rel, anc)
    with pytest.raises(ValueError, match="codes are not the embedding's"):
        refine_skipgram(corpus, base, other)


@pytest.mark.skipif(SYNTHEA is None, reason="shared Synthea27Nj folder absent")
def test_synthea27nj_graph_has_is_a_edges():
    rel, anc = read_ontology_tables(SYNTHEA)
    codes = pd.read_parquet(SYNTHEA / "condition_occurrence.parquet")
    codes = codes["condition_concept_id"]
    graph = build_ontology_graph(np.unique(codes.to_numpy()), rel, anc, hidden=True)
    assert graph.n_is_a > 0 and graph.n_dangling > 0 and graph.n_edges > graph.n_is_a
