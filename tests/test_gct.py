"""GCT: the guide mask, the prior from training persons only (a leak test), the prior as the
first layer's attention, padding invariance, the KL term, and attention scored against the
true links."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from ehrseq.data.synthetic import SyntheticConfig, generate_cohort
from ehrseq.data.visit_objects import (
    ObjectVocab,
    VisitObjects,
    mime_seqs_to_objects,
    pad_visit_graphs,
    visit_objects,
)
from ehrseq.metrics import auroc
from ehrseq.models.gct import (
    GCT,
    ConditionalPrior,
    GCTConfig,
    GCTSurvival,
    attention_kl,
    guide_mask,
    link_auroc,
    visit_sequences,
)
from ehrseq.models.survival_head import BinHazardHead, VisitHazardHead

pytestmark = pytest.mark.usefixtures("one_thread")

# three persons, co-occurrence style: every treatment of a visit on every diagnosis
SEQS = [
    [[(0, [0, 1], [0]), (1, [0, 1], [0])], [(0, [0], [])]],
    [[(1, [1], [1]), (2, [1], [1])]],
    [[(0, [0], []), (2, [], [])], [(3, [2], [])]],
]


def setup(seqs=SEQS, train=(0, 1, 2)):
    vo = mime_seqs_to_objects(seqs)
    vocab = ObjectVocab.fit(vo.subset(list(train)))
    prior = ConditionalPrior.fit(vo, vocab, list(train))
    g, _ = pad_visit_graphs(vo, vocab)
    return vo, vocab, prior, g


def tiny(vocab, prior, **kw) -> GCT:
    torch.manual_seed(0)
    return GCT(GCTConfig.from_vocab(vocab, **{"d_model": 8, "dropout": 0.0, **kw}), prior).eval()


def test_guide_mask_edges_with_labs():
    g = guide_mask(torch.tensor([[True]]), torch.tensor([[True]]), torch.tensor([[True, False]]))
    # nodes: visit, dx, tx, lab1, lab2 (padded)
    assert g[0].int().tolist() == [
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [0, 1, 1, 1, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 0, 0, 1],
    ]


LABS = pd.DataFrame(  # visit ids of SEQS run 0..4 in order
    {
        "person_id": [0, 0, 0, 1, 2],
        "visit_occurrence_id": [0, 0, 1, 2, 4],
        "concept_id": [7, 8, 7, 8, 9],
    }
)


def setup_labs():
    vo = mime_seqs_to_objects(SEQS)
    vo = VisitObjects(vo.objects, vo.links, vo.report, LABS)
    vocab = ObjectVocab.fit(vo)
    prior = ConditionalPrior.fit(vo, vocab, [0, 1, 2])
    g, _ = pad_visit_graphs(vo, vocab)
    return vo, vocab, prior, g


def test_lab_nodes_prior_and_padding():
    vo, vocab, prior, g = setup_labs()
    n_rx = vocab.sizes[1]
    # drug 0 is in visits 0, 1, 3; lab 7 in visits 0, 1: P(lab 7 | drug 0) = 2/3, P(drug 0 | lab 7) = 1
    t, lab = vocab.drug[0], vocab.lab[7]
    assert prior.p_lab_given_tx[t, lab] == pytest.approx(2 / 3)
    assert prior.p_tx_given_lab[lab, t] == pytest.approx(1.0)
    assert prior.p_lab_given_tx[vocab.procedure[0] + n_rx, lab] == pytest.approx(1.0)
    model = tiny(vocab, prior)
    assert model.cfg.n_lab == vocab.n_lab
    out = model(g)
    allowed = guide_mask(g["dx_mask"], g["tx_mask"], g["lab_mask"])
    a = prior.matrix(
        g["dx_codes"], g["tx_codes"], g["dx_mask"], g["tx_mask"], g["lab_codes"], g["lab_mask"]
    )
    torch.testing.assert_close(out.attentions[0], a)
    assert (out.attentions[2][~allowed] == 0).all()
    more = dict(g, lab_codes=F.pad(g["lab_codes"], (0, 2)), lab_mask=F.pad(g["lab_mask"], (0, 2)))
    torch.testing.assert_close(model(more).logits, out.logits)
    # the labs change the visit vectors (visit 3 of person 2 has no lab: unchanged there)
    no_lab = dict(
        g, lab_codes=torch.zeros_like(g["lab_codes"]), lab_mask=torch.zeros_like(g["lab_mask"])
    )
    diff = (model(no_lab).logits - out.logits).abs() > 1e-6
    assert diff.tolist() == g["lab_mask"].any(1).tolist()
    with pytest.raises(ValueError, match="lacks"):
        model({k: v for k, v in g.items() if k != "lab_codes"})


def test_guide_mask_edges():
    dx_mask = torch.tensor([[True, True]])
    tx_mask = torch.tensor([[True, False]])
    g = guide_mask(dx_mask, tx_mask)[0].int()
    # nodes: visit, dx1, dx2, tx1, tx2 (padded)
    assert g.tolist() == [
        [1, 1, 1, 0, 0],
        [1, 1, 0, 1, 0],
        [1, 0, 1, 1, 0],
        [0, 1, 1, 1, 0],
        [0, 0, 0, 0, 1],
    ]


def test_prior_by_hand_and_as_first_layer():
    vo, vocab, prior, g = setup()
    # the (diagnoses, drugs) of each visit of SEQS, counted by hand:
    visits = [({0, 1}, {0, 1}), ({0}, {0}), ({1, 2}, {1}), ({0, 2}, {0}), ({3}, {2})]
    d, t = vocab.dx[0], vocab.drug[0]
    both = sum(0 in dx and 0 in rx for dx, rx in visits)
    n_dx = sum(0 in dx for dx, _ in visits)
    n_rx = sum(0 in rx for _, rx in visits)
    assert prior.p_tx_given_dx[d, t] == pytest.approx(both / n_dx)
    assert prior.p_dx_given_tx[t, d] == pytest.approx(both / n_rx)
    a = prior.matrix(g["dx_codes"], g["tx_codes"], g["dx_mask"], g["tx_mask"])
    torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:2]))
    assert (a[~guide_mask(g["dx_mask"], g["tx_mask"])] == 0).all()
    out = tiny(vocab, prior)(g)
    torch.testing.assert_close(out.attentions[0], a)
    assert (out.attentions[1][~guide_mask(g["dx_mask"], g["tx_mask"])] == 0).all()


@pytest.fixture(scope="module")
def cohort_objects():
    cohort = generate_cohort(SyntheticConfig(n_patients=120, seed=2))
    return (
        visit_objects(cohort.omop_tables(), links="visit"),
        visit_objects(cohort.tables, links="true"),
    )


def perturb(vo: VisitObjects, persons: np.ndarray) -> VisitObjects:
    """Add a link from every object of these persons to the most common drug."""
    objs = vo.objects[vo.objects["person_id"].isin(persons)]
    drug = vo.links.loc[vo.links["kind"] == "drug", "concept_id"].mode()[0]
    extra = pd.DataFrame({"object_id": objs["object_id"], "kind": "drug", "concept_id": drug})
    links = pd.concat([vo.links, extra]).drop_duplicates(["object_id", "kind", "concept_id"])
    return VisitObjects(vo.objects, links.reset_index(drop=True), vo.report, vo.labs)


def perturb_labs(vo: VisitObjects, persons: np.ndarray) -> VisitObjects:
    """Add the most common lab concept to every visit of these persons that lacks it."""
    lab = vo.labs["concept_id"].mode()[0]
    objs = vo.objects[vo.objects["person_id"].isin(persons)]
    visits = objs[["person_id", "visit_occurrence_id"]].drop_duplicates()
    extra = visits.assign(concept_id=lab)
    labs = pd.concat([vo.labs, extra]).drop_duplicates(["visit_occurrence_id", "concept_id"])
    return VisitObjects(vo.objects, vo.links, vo.report, labs.reset_index(drop=True))


def test_the_prior_never_sees_held_out_persons(cohort_objects):
    vo, _ = cohort_objects
    ids = vo.person_ids()
    train, test = ids[:80], ids[80:]
    vocab = ObjectVocab.fit(vo.subset(train))
    prior = ConditionalPrior.fit(vo, vocab, train)
    moved_test = ConditionalPrior.fit(perturb(vo, test), vocab, train)
    torch.testing.assert_close(moved_test.p_tx_given_dx, prior.p_tx_given_dx, rtol=0, atol=0)
    torch.testing.assert_close(moved_test.p_dx_given_tx, prior.p_dx_given_tx, rtol=0, atol=0)
    moved_train = ConditionalPrior.fit(perturb(vo, train), vocab, train)
    assert not torch.equal(moved_train.p_tx_given_dx, prior.p_tx_given_dx)
    prior.check_held_out(test)
    with pytest.raises(ValueError, match="held-out"):
        prior.check_held_out(ids[75:85])
    with pytest.raises(ValueError, match="nothing to fit"):
        ConditionalPrior.fit(vo, vocab, [-1])


def test_the_lab_prior_never_sees_held_out_persons(cohort_objects):
    vo, _ = cohort_objects
    ids = vo.person_ids()
    train, test = ids[:80], ids[80:]
    vocab = ObjectVocab.fit(vo.subset(train))
    assert vocab.lab  # the cohort's measurements are lab nodes
    prior = ConditionalPrior.fit(vo, vocab, train)
    for moved in (perturb_labs(vo, test), perturb(vo, test)):
        held = ConditionalPrior.fit(moved, vocab, train)
        for name in ("p_lab_given_tx", "p_tx_given_lab"):
            torch.testing.assert_close(getattr(held, name), getattr(prior, name), rtol=0, atol=0)
    moved_train = ConditionalPrior.fit(perturb_labs(vo, train), vocab, train)
    assert not torch.equal(moved_train.p_lab_given_tx, prior.p_lab_given_tx)
    assert not torch.equal(moved_train.p_tx_given_lab, prior.p_tx_given_lab)
    # the prior that the model reads for a test visit is the same, labs included
    g, _ = pad_visit_graphs(vo, vocab, test)
    nodes = [g[k] for k in ("dx_codes", "tx_codes", "dx_mask", "tx_mask")]
    labs = [g["lab_codes"], g["lab_mask"]]
    held = ConditionalPrior.fit(perturb_labs(vo, test), vocab, train)
    torch.testing.assert_close(held.matrix(*nodes, *labs), prior.matrix(*nodes, *labs))


def test_padding_changes_nothing():
    vo, vocab, prior, g = setup()
    model = tiny(vocab, prior)
    out = model(g)
    D, T = g["dx_codes"].shape[1], g["tx_codes"].shape[1]
    more = {
        "dx_codes": F.pad(g["dx_codes"], (0, 2)),
        "dx_mask": F.pad(g["dx_mask"], (0, 2)),
        "tx_codes": F.pad(g["tx_codes"], (0, 3)),
        "tx_mask": F.pad(g["tx_mask"], (0, 3)),
    }
    big = model(more)
    torch.testing.assert_close(big.logits, out.logits)
    keep = torch.cat([torch.arange(1 + D), 1 + D + 2 + torch.arange(T)])  # real node slots
    for a, b in zip(out.attentions, big.attentions):
        torch.testing.assert_close(b[:, keep][:, :, keep], a)
    for i in range(len(out.logits)):  # each visit alone, unpadded
        n_d, n_t = int(g["dx_mask"][i].sum()), int(g["tx_mask"][i].sum())
        one = {
            "dx_codes": g["dx_codes"][i : i + 1, :n_d],
            "dx_mask": g["dx_mask"][i : i + 1, :n_d],
            "tx_codes": g["tx_codes"][i : i + 1, : max(n_t, 1)],
            "tx_mask": g["tx_mask"][i : i + 1, : max(n_t, 1)],
        }
        torch.testing.assert_close(model(one).logits, out.logits[i : i + 1])


def test_kl_by_hand_and_in_the_loss():
    vo, vocab, prior, g = setup()
    model = tiny(vocab, prior, kl_weight=0.3)
    out = model(g)
    allowed = guide_mask(g["dx_mask"], g["tx_mask"])
    real = torch.cat([torch.ones(len(allowed), 1, dtype=torch.bool), g["dx_mask"], g["tx_mask"]], 1)
    want = 0.0
    attns = [a.detach() for a in out.attentions]
    for p, q in zip(attns[:-1], attns[1:]):
        rows = [
            sum(
                float(p[n, i, j] * (p[n, i, j] / q[n, i, j]).log())
                for j in range(p.shape[2])
                if p[n, i, j] > 0
            )
            for n in range(p.shape[0])
            for i in range(p.shape[1])
            if real[n, i]
        ]
        want += sum(rows) / len(rows)
    want /= len(out.attentions) - 1
    kl = attention_kl(out.attentions, allowed)
    assert kl.item() == pytest.approx(want, rel=1e-5)
    assert attention_kl([attns[1]] * 2, allowed).item() == pytest.approx(0.0, abs=1e-6)
    res = model.loss(g, torch.ones(len(out.logits)))
    torch.testing.assert_close(res["loss"], res["bce"] + 0.3 * res["kl"])
    res["loss"].backward()
    assert model.layers[1].q.weight.grad.abs().sum() > 0  # the KL reaches the learned attention


def test_link_auroc(cohort_objects):
    vo, truth = cohort_objects
    ids = vo.person_ids()
    train, test = ids[:80], ids[80:]
    vocab = ObjectVocab.fit(vo.subset(train))
    prior = ConditionalPrior.fit(vo, vocab, train)
    g, _ = pad_visit_graphs(vo, vocab, test, truth=truth)
    # the true links mark exactly the generator's links of these persons' visits
    t = truth.subset(test)
    assert int(g["true_links"].sum()) == len(t.links)
    assert not (g["true_links"] & ~(g["dx_mask"][:, :, None] & g["tx_mask"][:, None, :])).any()
    model = tiny(vocab, prior)
    out = model(g)
    a = out.attentions[0]
    score = link_auroc(a, g["dx_mask"], g["tx_mask"], g["true_links"])
    D, T = g["dx_codes"].shape[1], g["tx_codes"].shape[1]
    assert model.cfg.n_lab > 2 and a.shape[-1] > 1 + D + T  # the cohort's labs are nodes
    d, t = slice(1, 1 + D), slice(1 + D, 1 + D + T)
    pair = g["dx_mask"][:, :, None] & g["tx_mask"][:, None, :]
    s = (a[:, d, t] + a[:, t, d].transpose(1, 2))[pair]
    assert score == pytest.approx(auroc(g["true_links"][pair].numpy(), s.numpy()))
    assert score > 0.75  # the training co-occurrence prior already points at the links
    perfect = torch.zeros_like(a)
    perfect[:, d, t] = g["true_links"].float()
    assert link_auroc(perfect, g["dx_mask"], g["tx_mask"], g["true_links"]) == 1.0
    with pytest.raises(ValueError, match="both"):
        link_auroc(a, g["dx_mask"], g["tx_mask"], torch.zeros_like(g["true_links"]))


def test_a_tiny_task_is_learned():
    """Label 1 when the visit holds diagnosis 0 together with drug 0 (each alone is common)."""
    rng = np.random.default_rng(0)

    def task(n):
        seqs, labels = [], []
        for _ in range(n):
            has_d, has_t = rng.random() < 0.6, rng.random() < 0.6
            dxs = ([0] if has_d else []) + [int(rng.integers(1, 4))]
            drugs = ([0] if has_t else []) + [int(rng.integers(1, 3))]
            seqs.append([[(d, drugs, []) for d in dxs]])
            labels.append(float(has_d and has_t))
        return seqs, labels

    seqs, labels = task(300)
    vo = mime_seqs_to_objects(seqs)
    vocab = ObjectVocab.fit(vo)
    train = vo.person_ids()
    prior = ConditionalPrior.fit(vo, vocab, train)
    g, _ = pad_visit_graphs(vo, vocab)
    y = torch.tensor(labels)
    torch.manual_seed(0)
    model = GCT(GCTConfig.from_vocab(vocab, d_model=16, dropout=0.0), prior)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = model.loss(g, y)["loss"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    test_seqs, test_labels = task(200)
    tvo = mime_seqs_to_objects(test_seqs)
    tg, _ = pad_visit_graphs(tvo, vocab)
    model.eval()
    with torch.no_grad():
        acc = ((model(tg).logits > 0).float() == torch.tensor(test_labels)).float().mean()
    assert loss.item() < 0.5 * first
    assert acc.item() > 0.9, acc.item()


def test_visit_sequences():
    visits = torch.arange(12.0).reshape(6, 2)
    x, mask = visit_sequences(visits, np.array([5, 5, 3, 7, 7, 7]))
    assert mask.tolist() == [[True, True, False], [True, False, False], [True, True, True]]
    assert x[0, 1].tolist() == [2.0, 3.0] and x[2, 2].tolist() == [10.0, 11.0]
    assert (x[~mask] == 0).all()
    with pytest.raises(ValueError, match="contiguous"):
        visit_sequences(visits, np.array([5, 3, 5, 7, 7, 7]))


def test_survival_on_gct_visits_never_sees_later_visits():
    vo, vocab, prior, g = setup_labs()
    torch.manual_seed(0)
    gct = tiny(vocab, prior)
    per_visit = GCTSurvival(gct, VisitHazardHead(8)).eval()
    per_bin = GCTSurvival(gct, BinHazardHead(8, n_bins=3)).eval()
    hz = per_visit(g)
    _, mask = visit_sequences(torch.zeros(len(g["person_ids"]), 1), g["person_ids"])
    assert hz.hazards.shape == mask.shape and per_bin(g).hazards.shape == (3, 3)
    # change the graph of every visit after slot 0: hazards at slot 0 stay
    slot = torch.tensor([0, 1, 0, 0, 1])  # person 0: visits 0, 1; person 1: 2; person 2: 3, 4
    later = slot > 0
    changed = dict(g, dx_codes=torch.where(later[:, None] & g["dx_mask"], 2, g["dx_codes"]))
    hz2 = per_visit(changed)
    torch.testing.assert_close(hz2.hazards[:, 0], hz.hazards[:, 0])
    assert not torch.allclose(hz2.hazards[mask[:, 1], 1], hz.hazards[mask[:, 1], 1])
    # each person alone gives the same bin hazards
    full = per_bin(g).hazards
    for i, pid in enumerate([0, 1, 2]):
        alone, _ = pad_visit_graphs(vo, vocab, [pid])
        torch.testing.assert_close(per_bin(alone).hazards, full[i : i + 1])
    _, kl = per_bin.hazards_and_kl(g)
    torch.testing.assert_close(kl, gct.loss(g, torch.zeros(len(g["person_ids"])))["kl"])


def test_size_buckets_give_the_same_hazards_and_kl(cohort_objects):
    vo, truth = cohort_objects
    ids = vo.person_ids()
    vocab = ObjectVocab.fit(vo.subset(ids[:80]))
    prior = ConditionalPrior.fit(vo, vocab, ids[:80])
    g, _ = pad_visit_graphs(vo, vocab, ids[:30], truth=truth)
    out = tiny(vocab, prior)(g)
    torch.testing.assert_close(out.allowed, guide_mask(g["dx_mask"], g["tx_mask"], g["lab_mask"]))
    for n_layers in (1, 3):
        gct = tiny(vocab, prior, n_layers=n_layers)
        torch.manual_seed(1)
        whole = GCTSurvival(gct, BinHazardHead(8, n_bins=2)).eval()
        hz, kl = whole.hazards_and_kl(g)
        lean = gct(g, visit_only_last=True)  # the last layer updates the visit node only
        torch.testing.assert_close(lean.logits, gct(g).logits)
        for a, b in zip(lean.attentions, gct(g).attentions, strict=True):
            torch.testing.assert_close(a, b)
        for n_buckets, only in ((2, False), (3, True), (10**4, False)):  # 10**4 > visits
            grouped = GCTSurvival(gct, whole.head, n_buckets=n_buckets, visit_only_last=only)
            grouped.gru = whole.gru
            grouped.eval()
            hz_b, kl_b = grouped.hazards_and_kl(g)
            torch.testing.assert_close(hz_b.hazards, hz.hazards)
            torch.testing.assert_close(kl_b, kl)
            visits, _ = grouped.encode(g)
            torch.testing.assert_close(visits, gct(g).visits)
    with pytest.raises(ValueError, match="n_buckets"):
        GCTSurvival(gct, BinHazardHead(8, n_bins=2), n_buckets=0)


def test_a_lab_node_needs_three_layers_to_reach_the_visit_node():
    """Lab nodes sit three edges from the visit node (visit, dx, tx, lab): one layer passes
    messages one edge, so with fewer than three layers the visit vectors ignore them."""
    vo, vocab, prior, g = setup_labs()
    no_lab = dict(
        g, lab_codes=torch.zeros_like(g["lab_codes"]), lab_mask=torch.zeros_like(g["lab_mask"])
    )
    for n_layers in (1, 2, 3):
        model = tiny(vocab, prior, n_layers=n_layers)
        moved = (model(no_lab).visits - model(g).visits).abs().amax(1)  # (N,)
        if n_layers < 3:
            assert (moved == 0).all()
        else:  # every visit with a lab and a treatment moves
            reached = g["lab_mask"].any(1) & g["tx_mask"].any(1)
            assert ((moved > 1e-6) == reached).all() and reached.any()
