"""MiME: shapes, padding invariance, no leakage across visits, the auxiliary losses, the
survival variant, and a tiny task that only the links can solve."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from ehrseq.data.synthetic import SyntheticConfig, generate_cohort
from ehrseq.data.visit_objects import (
    ObjectLimits,
    ObjectVocab,
    mime_seqs_to_objects,
    pad_visit_objects,
    visit_objects,
)
from ehrseq.models.mime import (
    MiME,
    MiMEConfig,
    MiMESurvival,
    check_object_batch,
    mime_inputs,
    treatment_targets,
)
from ehrseq.models.survival_head import BinHazardHead, VisitHazardHead

pytestmark = pytest.mark.usefixtures("one_thread")

SEQS = [
    [[(0, [0, 1], []), (1, [0], [0, 2])], [(2, [2], [])], [(3, [], [1]), (0, [1], [])]],
    [[(1, [], [])]],
    [[(2, [1, 2], [2]), (4, [0], [])], [(0, [], [0])]],
]


def objects_and_vocab(seqs=SEQS):
    vo = mime_seqs_to_objects(seqs)
    return vo, ObjectVocab.fit(vo)


def make_batch(seqs=SEQS, person_ids=None):
    vo, vocab = objects_and_vocab(seqs)
    return pad_visit_objects(vo, vocab, person_ids)[0], vocab


def tiny(vocab, **kw) -> MiME:
    torch.manual_seed(0)
    base = dict(d_embed=8, d_object=12, d_hidden=10)
    return MiME(MiMEConfig.from_vocab(vocab, **{**base, **kw})).eval()


def pad_more(batch: dict, v: int = 2, d: int = 3, r: int = 2) -> dict:
    """The same batch with extra padded visits, objects and treatment slots."""
    new = dict(batch)
    for k in ("dx_codes", "dx_mask"):
        new[k] = F.pad(batch[k], (0, d, 0, v))
    for k in ("rx_codes", "rx_mask", "pr_codes", "pr_mask"):
        new[k] = F.pad(batch[k], (0, r, 0, d, 0, v))
    new["visit_mask"] = F.pad(batch["visit_mask"], (0, v))
    return new


def test_shapes():
    batch, vocab = make_batch()
    B, V, D = batch["dx_codes"].shape
    model = tiny(vocab)
    out = model(batch)
    assert out.logits.shape == (B,) and out.visit_logits.shape == (B, V)
    assert out.states.shape == (B, V, 10) and out.objects.shape == (B, V, D, 12)
    assert (out.states[~batch["visit_mask"]] == 0).all()
    assert (out.objects[~batch["dx_mask"]] == 0).all()
    head = BinHazardHead(10, n_bins=5)
    assert MiMESurvival(model.encoder, head)(batch).hazards.shape == (B, 5)
    assert MiMESurvival(model.encoder, VisitHazardHead(10))(batch).hazards.shape == (B, V)


@pytest.mark.parametrize("visit_skip", [False, True])
@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_padding_changes_nothing(visit_skip, activation):
    batch, vocab = make_batch()
    model = tiny(vocab, visit_skip=visit_skip, activation=activation)
    out = model(batch)
    more = model(pad_more(batch))
    V = batch["visit_mask"].shape[1]
    torch.testing.assert_close(more.logits, out.logits)
    torch.testing.assert_close(more.states[:, :V], out.states)
    for i, pid in enumerate(batch["person_ids"]):  # each patient alone, unpadded
        vo, vocab_all = objects_and_vocab()
        alone, _ = pad_visit_objects(vo, vocab_all, person_ids=[pid])
        one = model(alone)
        n = int(alone["visit_mask"].sum())
        torch.testing.assert_close(one.logits, out.logits[i : i + 1])
        torch.testing.assert_close(one.states[0, :n], out.states[i, :n])


def change_after(batch: dict, t: int, seed: int = 1) -> dict:
    """Replace every real object and treatment of the visits after slot ``t``."""
    g = torch.Generator().manual_seed(seed)
    new = dict(batch)
    for k, n in (("dx_codes", 5), ("rx_codes", 4), ("pr_codes", 4)):
        codes = batch[k].clone()
        mask = batch[k[:2] + "_mask"]
        later = mask.clone()
        later[:, : t + 1] = False
        codes[later] = torch.randint(2, n, (int(later.sum()),), generator=g)
        new[k] = codes
    return new


def test_visit_t_never_sees_later_visits():
    batch, vocab = make_batch()
    model = tiny(vocab)
    visit_head = MiMESurvival(model.encoder, VisitHazardHead(10)).eval()
    bin_head = MiMESurvival(model.encoder, BinHazardHead(10, n_bins=4)).eval()
    out, hz = model(batch), visit_head(batch)
    for t in range(batch["visit_mask"].shape[1] - 1):
        changed = change_after(batch, t)
        out2, hz2 = model(changed), visit_head(changed)
        torch.testing.assert_close(out2.visit_logits[:, : t + 1], out.visit_logits[:, : t + 1])
        torch.testing.assert_close(hz2.hazards[:, : t + 1], hz.hazards[:, : t + 1])
        # the bin hazards of the history cut at t equal the head on the full run's state at t
        cut = dict(batch)
        cut["visit_mask"] = batch["visit_mask"].clone()
        cut["visit_mask"][:, t + 1 :] = False
        for k in ("dx_mask", "rx_mask", "pr_mask"):
            cut[k] = batch[k] & cut["visit_mask"].reshape(
                *cut["visit_mask"].shape, *[1] * (batch[k].dim() - 2)
            )
        states = model.encoder(**mime_inputs(batch))
        last = torch.minimum(batch["visit_mask"].sum(1) - 1, torch.tensor(t))
        want = bin_head.head(states[torch.arange(len(last)), last])
        torch.testing.assert_close(bin_head(cut).hazards, want.hazards)
    assert not torch.allclose(model(change_after(batch, 0)).logits, out.logits)


def test_aux_loss_weight_and_gradients():
    batch, vocab = make_batch()
    labels = torch.tensor([1.0, 0.0, 1.0])
    off = tiny(vocab, aux_lambda=0.0).train()
    res = off.loss(batch, labels)
    assert torch.equal(res["loss"], res["bce"]) and float(res["aux"]) == 0.0
    res["loss"].backward()
    assert off.aux_rx.weight.grad is None and off.aux_pr.weight.grad is None
    grads_off = {n: p.grad.clone() for n, p in off.named_parameters() if p.grad is not None}
    on = tiny(vocab, aux_lambda=0.5).train()
    res = on.loss(batch, labels)
    torch.testing.assert_close(res["loss"], res["bce"] + 0.5 * res["aux"])
    torch.testing.assert_close(res["bce"], off.loss(batch, labels)["bce"])  # same weights
    obj = on.encoder.objects
    g_dr, g_dp = torch.autograd.grad(res["aux"], [obj.W_dr.weight, obj.W_dp.weight])
    assert g_dr.abs().sum() > 0 and g_dp.abs().sum() > 0
    on.zero_grad()
    on.loss(batch, labels)["bce"].backward()
    for n, p in on.named_parameters():  # the BCE's gradient is the same with the aux heads on
        if n in grads_off:
            torch.testing.assert_close(p.grad, grads_off[n])


def test_aux_targets_and_loss_by_hand():
    codes = torch.tensor([[3, 1, 0], [2, 2, 0]])
    mask = codes > 0
    hot = treatment_targets(codes, mask, 5)
    assert hot.tolist() == [[0, 1, 0, 1, 0], [0, 0, 1, 0, 0]]
    batch, vocab = make_batch()
    model = tiny(vocab)
    out = model(batch)
    aux = model.aux_losses(batch, out.objects)
    ce, n = 0.0, 0
    for b, v, d in batch["dx_mask"].nonzero().tolist():  # the loop version over real objects
        logit = model.aux_dx(out.objects[b, v, d])
        ce = ce + F.cross_entropy(logit[None], batch["dx_codes"][b, v, d][None])
        n += 1
    torch.testing.assert_close(aux["aux_dx"], ce / n)
    more = model.aux_losses(pad_more(batch), model(pad_more(batch)).objects)
    for k in aux:
        torch.testing.assert_close(more[k], aux[k])


def test_bad_batches_are_refused():
    batch, vocab = make_batch()
    model = tiny(vocab)
    bad = dict(batch, dx_mask=batch["dx_mask"].float())
    with pytest.raises(ValueError, match="bool"):
        model(bad)
    bad = dict(batch, visit_mask=batch["visit_mask"].flip(1))
    with pytest.raises(ValueError, match="padding|first"):
        model(bad)
    bad = dict(batch, dx_codes=batch["dx_codes"] + 100)
    with pytest.raises(ValueError, match="outside"):
        model(bad)
    bad = dict(batch, rx_mask=torch.ones_like(batch["rx_mask"]))
    with pytest.raises(ValueError, match="treatment mask"):
        check_object_batch(**mime_inputs(bad))
    with pytest.raises(ValueError, match="aux_lambda"):
        MiMEConfig(5, 5, 5, aux_lambda=-1)


def linked_task(n: int, seed: int) -> tuple[list, list[int]]:
    """Every visit holds diagnoses A=0, B=1 and drugs X=0, Y=1; label 1 when X treats A and
    Y treats B, 0 when swapped. The codes of every visit, as a bag, are the same for both
    labels: only the links tell them apart. Distractor objects (dx 2-4, drug 2) are mixed in."""
    rng = random.Random(seed)
    seqs, labels = [], []
    for _ in range(n):
        y = rng.random() < 0.5
        visits = []
        for _ in range(rng.randint(1, 3)):
            objs = [(0, [0] if y else [1], []), (1, [1] if y else [0], [])]
            objs += [
                (rng.randint(2, 4), [2] * rng.randint(0, 1), []) for _ in range(rng.randint(0, 2))
            ]
            rng.shuffle(objs)
            visits.append(objs)
        seqs.append(visits)
        labels.append(int(y))
    return seqs, labels


def test_a_task_only_the_links_solve_is_learned():
    seqs, labels = linked_task(256, seed=0)
    vo = mime_seqs_to_objects(seqs)
    vocab = ObjectVocab.fit(vo)
    batch, _ = pad_visit_objects(vo, vocab)
    y = torch.tensor(labels, dtype=torch.float32)
    # the drugs of the A and B objects of every visit, as a set, are the same for both labels
    drugs: dict[int, set] = {0: set(), 1: set()}
    for seq, lab in zip(seqs, labels):
        drugs[lab] |= {frozenset(c for d, rx, _ in v if d < 2 for c in rx) for v in seq}
    assert drugs[0] == drugs[1] == {frozenset({0, 1})}
    # so with co-occurrence objects (every drug of the visit in every object) the two labels
    # give the same batch: there, nothing could be learned
    swap = [
        [[(d, [1 - c if c < 2 else c for c in rx], pr) for d, rx, pr in v] for v in s] for s in seqs
    ]
    cooc = [
        [[(d, sorted({c for _, r, _ in v for c in r}), pr) for d, _, pr in v] for v in s]
        for s in seqs
    ]
    cooc_swap = [
        [[(d, sorted({c for _, r, _ in v for c in r}), pr) for d, _, pr in v] for v in s]
        for s in swap
    ]
    assert cooc == cooc_swap and seqs != swap
    torch.manual_seed(0)
    model = MiME(MiMEConfig.from_vocab(vocab, d_embed=16, d_object=16, d_hidden=16, aux_lambda=0.0))
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    first = None
    for _ in range(60):
        loss = model.loss(batch, y)["loss"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    test_seqs, test_labels = linked_task(200, seed=1)
    tb, _ = pad_visit_objects(mime_seqs_to_objects(test_seqs), vocab)
    model.eval()
    with torch.no_grad():
        acc = ((model(tb).probs > 0.5).float() == torch.tensor(test_labels)).float().mean()
    assert loss.item() < 0.5 * first
    assert float(acc) > 0.9, float(acc)


def test_on_the_synthetic_cohort_with_limits():
    """OMOP tables -> objects -> padded batch (cut by the limits) -> hazards, end to end."""
    cohort = generate_cohort(SyntheticConfig(n_patients=40, seed=5))
    vo = visit_objects(cohort.tables, links="true")
    vocab = ObjectVocab.fit(vo)
    lim = ObjectLimits(max_visits=6, max_diagnoses=4, max_drugs=3, max_procedures=2)
    batch, cuts = pad_visit_objects(vo, vocab, limits=lim)
    assert batch["dx_codes"].shape[1:] == (6, 4) and cuts["visits_cut"] > 0
    torch.manual_seed(0)
    cfg = MiMEConfig.from_vocab(vocab, d_embed=8, d_object=8, d_hidden=8, visit_skip=True)
    model = MiMESurvival(MiME(cfg).encoder, BinHazardHead(8, n_bins=3))
    out = model(batch)
    assert out.hazards.shape == (len(batch["person_ids"]), 3)
    assert torch.isfinite(out.logits).all()
