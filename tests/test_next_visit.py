"""Next visit: history features, the copy head (no leakage, padding-proof, an exact mixture),
the baselines that repeat the record, per-pair ranking metrics and paired intervals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score
from test_pretrain import IDS, VOCAB, collate, group_patients, make_patient
from torch.utils.data import DataLoader

from ehrseq.metrics import bootstrap_ci
from ehrseq.models import BehrtConfig, BehrtEncoder
from ehrseq.next_visit import (
    HistoryCopyHead,
    chronic_codes,
    model_scorer,
    most_frequent,
    next_visit_table,
    paired_visit_difference,
    ranking_metrics,
    recurring_codes,
    repeat_codes,
    repeat_last_visit,
    repeat_rate_scorer,
    repeat_rates,
    visit_history,
    visit_mean_interval,
)
from ehrseq.pretrain import (
    BehrtForPretraining,
    code_counts,
    code_domains,
    evaluate_masked_codes,
    evaluate_next_visit,
    frequency_rank,
    masked_code_ranks,
    pretrain,
)
from ehrseq.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")
HALF_YEAR = 0.5 * 365.25  # make_patient's visits are half a year apart


def history_of(batch, n_visits=None):
    return visit_history(
        batch["codes"], batch["visit_ids"], batch["ages"], batch["attention_mask"], IDS, n_visits
    )


def with_person_ids(batch: dict) -> dict:
    return {**batch, "person_ids": torch.arange(len(batch["codes"]))}


def copy_model(seed: int = 0) -> BehrtForPretraining:
    torch.manual_seed(seed)
    cfg = BehrtConfig(
        vocab_size=VOCAB, d_model=16, n_layers=1, n_heads=2, d_ff=32, dropout=0.0, max_len=64
    )
    head = HistoryCopyHead(16, IDS, init_std=0.1)
    with torch.no_grad():  # leave the zero start, so every parameter matters in the tests
        for p in (head.repeat_bias, head.shared_weight, head.code_weight, head.gate.weight):
            p.normal_(0, 0.5)
    return BehrtForPretraining(BehrtEncoder(cfg), next_visit_head=head).eval()


# ------------------------------------------------------------------------------- history
def test_visit_history_on_a_hand_made_patient():
    a, b, c = 5, 6, 7
    batch = collate([make_patient([[a, b], [c], [a]]), make_patient([[b]])])
    h = history_of(batch)
    assert h.count.shape == h.days_since.shape == h.in_visit.shape == (2, 3, VOCAB)
    assert h.exists.tolist() == [[True, True, True], [True, False, False]]
    assert h.count[0, :, a].tolist() == [1, 1, 2]
    assert h.in_visit[0, :, a].tolist() == [True, False, True]
    torch.testing.assert_close(h.days_since[0, :, a], torch.tensor([0.0, HALF_YEAR, 0.0]))
    torch.testing.assert_close(h.days_since[0, :, b], torch.tensor([0.0, HALF_YEAR, 2 * HALF_YEAR]))
    assert torch.isinf(h.days_since[0, 0, c]) and h.days_since[0, 1, c] == 0
    assert not h.seen[1, 1:].any()  # padded visits see nothing
    assert not h.seen[..., list(IDS.special_ids)].any()  # [CLS], [SEP] never count
    with pytest.raises(ValueError, match="must agree"):
        visit_history(
            batch["codes"], batch["visit_ids"][:, :-1], batch["ages"], batch["attention_mask"], IDS
        )


# ------------------------------------------------------------------------------- copy head
def test_copy_head_shapes_and_an_exact_mixture():
    model = copy_model()
    batch = collate([make_patient([[5, 6], [7], [5, 8]]), make_patient([[9, 10]])])
    out = model(batch, task="next_visit")
    assert out["next_visit_logits"].shape == (2, 3, VOCAB)
    pooled = torch.randn(2, 3, 16)
    parts = model.next_visit_head.mix(pooled, history_of(batch))
    assert parts["gate"].shape == (2, 3) and parts["copied"].shape == (2, 3, VOCAB)
    g = parts["gate"][..., None]
    p = (1 - g) * parts["generated"] + g * parts["copied"]  # the mixture, written out
    torch.testing.assert_close(torch.sigmoid(parts["logits"]), p, atol=1e-6, rtol=1e-5)
    y = (torch.rand(2, 3, VOCAB) < 0.3).float()
    torch.testing.assert_close(  # BCE with logits of the head = BCE of the mixture
        F.binary_cross_entropy_with_logits(parts["logits"], y), F.binary_cross_entropy(p, y)
    )


def test_copy_term_puts_mass_only_on_codes_of_the_history():
    model = copy_model()
    batch = collate([make_patient([[5, 6], [7], [5, 8]])])
    history = history_of(batch)
    pooled = torch.randn(1, 3, 16)
    parts = model.next_visit_head.mix(pooled, history)
    assert (parts["copied"][~history.seen] == 0).all()
    assert (parts["copied"][history.seen] > 0).all()
    # the copy parameters of codes never seen change nothing at all
    head = model.next_visit_head
    with torch.no_grad():
        unseen = ~history.seen.any(1).any(0)  # (vocab,)
        head.repeat_bias[unseen] += 5.0
        head.code_weight[unseen] -= 3.0
    torch.testing.assert_close(head.mix(pooled, history)["logits"], parts["logits"], atol=0, rtol=0)
    with torch.no_grad():  # while those of a seen code do: the check above can fail
        head.repeat_bias[5] += 5.0
    assert not torch.equal(head.mix(pooled, history)["logits"], parts["logits"])


def test_copy_head_predictions_at_visit_t_ignore_later_visits():
    model = copy_model()
    p = make_patient([[5, 6], [7, 8], [9, 10, 11]])
    changed = make_patient([[5, 6], [7, 8], [5, 20, 21]])  # visit 3 now repeats code 5
    out0 = model(collate([p]), task="next_visit")["next_visit_logits"]
    out1 = model(collate([changed]), task="next_visit")["next_visit_logits"]
    torch.testing.assert_close(out0[:, :2], out1[:, :2], atol=1e-6, rtol=0)  # after visits 1, 2
    assert (out0[:, 2] - out1[:, 2]).abs().max() > 1e-3  # the state after visit 3 did change


def test_copy_head_padded_and_unpadded_batches_agree():
    model = copy_model()
    patients = [make_patient([[5, 6], [7], [5, 8], [9]]), make_patient([[10, 11], [10]])]
    both = model(collate(patients), task="next_visit")["next_visit_logits"]
    for i, p in enumerate(patients):
        alone = model(collate([p]), task="next_visit")["next_visit_logits"]
        n = alone.shape[1]
        torch.testing.assert_close(both[i : i + 1, :n], alone, atol=1e-5, rtol=1e-5)


def test_start_at_repeat_rates_reproduces_the_lookup_table():
    head = HistoryCopyHead(16, IDS)
    rate_seen = torch.linspace(0.2, 0.9, VOCAB)
    rate_unseen = torch.linspace(0.01, 0.1, VOCAB)
    head.start_at_repeat_rates(rate_seen, rate_unseen)
    with torch.no_grad():
        head.generate.weight.zero_()
    batch = collate([make_patient([[5, 6], [7], [5, 8]])])
    history = history_of(batch)
    p = torch.sigmoid(head.mix(torch.randn(1, 3, 16), history)["logits"])
    want = torch.where(history.seen, rate_seen, rate_unseen)
    torch.testing.assert_close(p, want.expand_as(p), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="need"):
        head.start_at_repeat_rates(rate_seen[:-1], rate_unseen)


# ------------------------------------------------------------------------------- baselines
def test_baselines_rank_as_their_rules_say():
    a, b, c, d = 5, 6, 7, 8
    batch = collate([make_patient([[a, b], [c], [d]])])
    history = history_of(batch)
    counts = torch.zeros(VOCAB)
    counts[[a, b, c, d, 9]] = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0])
    last = repeat_last_visit(counts)(batch, history)  # (1, 3, vocab)
    assert last[0, 1].argsort(descending=True)[:2].tolist() == [c, 9]  # visit 2's code, then 9
    chronic = torch.zeros(VOCAB, dtype=torch.bool)
    chronic[[a, b]] = True
    rep = repeat_codes(chronic, counts)(batch, history)
    assert rep[0, 2].argsort(descending=True)[:3].tolist() == [b, a, 9]  # seen chronic codes
    assert rep[0, 0].argsort(descending=True)[:3].tolist() == [b, a, 9]
    assert most_frequent(counts)(batch, history)[0, 0].argmax() == 9


def test_recurring_codes_and_repeat_rates_on_hand_made_patients():
    a, b, c = 5, 6, 7
    patients = [
        make_patient([[a, b], [a], [c]]),  # a recurs; b does not; c has no later visit
        make_patient([[a], [b]]),  # a does not recur; b has no later visit
        make_patient([[b]]),  # a single visit: nothing is eligible
    ]
    rec = recurring_codes([collate(patients)], IDS)
    assert rec.loc[a, ["eligible", "recurred"]].tolist() == [2, 1]
    assert rec.loc[b, ["eligible", "recurred"]].tolist() == [1, 0]
    assert rec.loc[c, "eligible"] == 0 and np.isnan(rec.loc[c, "share"])
    rate_seen, rate_unseen = repeat_rates([collate(patients)], IDS)
    # pairs (patient, t): (1, 1) -> {a}, (1, 2) -> {c}, (2, 1) -> {b}; a seen in all three
    torch.testing.assert_close(rate_seen[a], torch.tensor((1 + 1) / (3 + 2)))
    torch.testing.assert_close(rate_unseen[c], torch.tensor((1 + 1) / (3 + 2)))
    torch.testing.assert_close(rate_seen[b], torch.tensor((0 + 1) / (2 + 2)))  # seen twice, no hit
    torch.testing.assert_close(rate_unseen[b], torch.tensor((1 + 1) / (1 + 2)))


def test_chronic_codes_by_share_and_eligibility():
    a, b, c = 5, 6, 7
    patients = [
        make_patient([[a, b], [a], [c]]),
        make_patient([[a], [b]]),
        make_patient([[a], [a]]),
    ]
    rec = recurring_codes([collate(patients)], IDS)  # a: 2 of 3 recur; b: 0 of 1; c: none
    assert chronic_codes(rec, 0.5, min_eligible=1).nonzero().flatten().tolist() == [a]
    assert not chronic_codes(rec, 0.5, min_eligible=4).any()  # a has only 3 eligible
    assert not chronic_codes(rec, 0.0, min_eligible=1)[list(IDS.special_ids)].any()
    with pytest.raises(ValueError, match="share"):
        chronic_codes(rec, 1.5, min_eligible=1)


def test_code_domains_maps_each_seen_code_to_its_domain():
    batch = collate([make_patient([[5, 6], [7]]), make_patient([[6]])])
    batch["domain_ids"] = torch.where(batch["codes"] >= 6, 2, 1) * batch["attention_mask"]
    domain = code_domains([batch], VOCAB)
    assert domain.shape == (VOCAB,)
    assert domain[5] == 1 and domain[6] == 2 and domain[7] == 2
    assert domain[8:].eq(0).all()  # never seen


# ------------------------------------------------------------------------------- metrics
def test_ranking_metrics_by_hand_and_against_sklearn():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1], [0.1, 0.2, 0.3, 0.4]])
    targets = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    recall, ap = ranking_metrics(scores, targets, k=2)
    torch.testing.assert_close(recall, torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(ap, torch.tensor([(1 + 2 / 3) / 2, 1 / 4]))
    rng = np.random.default_rng(0)
    s = torch.tensor(rng.normal(size=(20, 30)), dtype=torch.float32)
    y = torch.tensor(rng.random((20, 30)) < 0.2, dtype=torch.float32)
    y[:, 0] = 1.0
    _, ap = ranking_metrics(s, y, k=5)
    want = [average_precision_score(y[i].numpy(), s[i].numpy()) for i in range(20)]
    np.testing.assert_allclose(ap.numpy(), want, rtol=1e-5)
    with pytest.raises(ValueError, match="no true code"):
        ranking_metrics(s, torch.zeros_like(y), k=5)


@pytest.fixture(scope="module")
def loaders():
    train = [with_person_ids(collate(group_patients(32, s))) for s in range(4)]
    test = [with_person_ids(collate(group_patients(24, 10 + s))) for s in range(2)]
    for i, b in enumerate(test):  # distinct patients across batches
        b["person_ids"] = b["person_ids"] + 100 * i
    return train, test


def test_table_agrees_with_evaluate_next_visit(loaders):
    train, test = loaders
    model = copy_model()
    counts = code_counts(train, IDS)
    table = next_visit_table(
        {"model": model_scorer(model), "frequent": most_frequent(counts)}, test, IDS, k=10
    )
    ev = evaluate_next_visit(model, test, IDS, counts=counts, k=10)
    assert len(table) == ev["n_pairs"]
    assert table[("recall@10", "model")].mean() == pytest.approx(ev["recall@10"], rel=1e-6)
    assert table[("recall@10", "frequent")].mean() == pytest.approx(
        ev["baseline_recall@10"], rel=1e-6
    )
    assert table.index.names == ["person_id", "visit"]


def test_visit_mean_interval_equals_the_bootstrap_loop():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 40, size=300)  # 40 patients, their pairs correlated
    values = rng.normal(size=300) + (groups % 3)
    fast = visit_mean_interval(values, groups, n_boot=300, seed=4)
    sums = np.bincount(np.unique(groups, return_inverse=True)[1], weights=values)
    n = np.bincount(np.unique(groups, return_inverse=True)[1]).astype(float)
    slow = bootstrap_ci(lambda s, m: s.sum() / m.sum(), sums, n, n_boot=300, seed=4)
    assert fast.estimate == pytest.approx(slow.estimate, abs=1e-12)
    assert fast.lower == pytest.approx(slow.lower, abs=1e-12)
    assert fast.upper == pytest.approx(slow.upper, abs=1e-12)


def test_paired_difference_resamples_patients(loaders):
    train, test = loaders
    counts = code_counts(train, IDS)
    rate_seen, rate_unseen = repeat_rates(train, IDS)
    scorers = {
        "rate": repeat_rate_scorer(rate_seen, rate_unseen),
        "frequent": most_frequent(counts),
    }
    table = next_visit_table(scorers, test, IDS, k=5)
    groups = table.index.get_level_values("person_id").to_numpy()
    a, b = table[("recall@5", "rate")], table[("recall@5", "frequent")]
    row = paired_visit_difference(a, b, groups, comparison="rate - frequent", metric="recall@5")
    assert row["difference"] == pytest.approx(float((a - b).mean()))
    assert row["lower"] <= row["difference"] <= row["upper"]
    assert row["lower"] > 0  # a group's own codes repeat: the history wins clearly
    assert row["n_patients"] == len(np.unique(groups)) < row["n_pairs"]
    same = paired_visit_difference(a, a, groups, comparison="same", metric="recall@5")
    assert same["difference"] == same["lower"] == same["upper"] == 0
    # patients, not pairs, are resampled: a patient's pairs all move together
    one_each = paired_visit_difference(
        a, b, np.arange(len(a)), comparison="pairs", metric="recall@5"
    )
    assert one_each["upper"] - one_each["lower"] != row["upper"] - row["lower"]
    with pytest.raises(ValueError, match="same pairs"):
        paired_visit_difference(a, b[:-1], groups, comparison="x", metric="y")


def test_masked_code_ranks_agree_with_evaluate_masked_codes(loaders):
    train, test = loaders
    model = copy_model()
    counts = code_counts(train, IDS)
    ranks = masked_code_ranks(model, test, IDS, seed=3)
    ev = evaluate_masked_codes(model, test, IDS, counts=counts, ks=(1, 10), seed=3)
    assert len(ranks) == ev["n_masked"]
    for k in (1, 10):
        assert (ranks["rank"] <= k).mean() == pytest.approx(ev[f"top{k}"])
        base = frequency_rank(counts, IDS, torch.tensor(ranks["label"].to_numpy()))
        assert (base <= k).float().mean().item() == pytest.approx(ev[f"baseline_top{k}"])


def test_frequency_rank_within_groups_against_sorting():
    rng = np.random.default_rng(1)
    counts = torch.tensor(rng.integers(0, 5, VOCAB), dtype=torch.float64)  # many ties
    group = torch.tensor(rng.integers(0, 3, VOCAB))
    labels = torch.arange(5, VOCAB)
    ranks = frequency_rank(counts, IDS, labels, code_group=group, label_group=group[labels])
    for y, r in zip(labels.tolist(), ranks.tolist(), strict=True):
        pool = [c for c in range(5, VOCAB) if group[c] == group[y]]
        order = sorted(pool, key=lambda c: (-counts[c].item(), c))
        assert order.index(y) + 1 == r
    with pytest.raises(ValueError, match="both"):
        frequency_rank(counts, IDS, labels, code_group=group)


def test_pretrain_trains_the_copy_head():
    def loader(n: int, seed: int) -> DataLoader:
        return DataLoader(group_patients(n, seed), batch_size=32, collate_fn=collate)

    train, test = loader(96, 0), loader(32, 1)
    model = copy_model(seed=1).train()
    start = {n: p.detach().clone() for n, p in model.next_visit_head.named_parameters()}
    cfg = TrainConfig(epochs=3, lr=3e-3, warmup_steps=2, progress=False, seed=0)
    hist = pretrain(model, train, test, IDS, cfg, schedule="next_visit")["next_visit"].history
    assert hist["train_nv_loss"].iloc[-1] < hist["train_nv_loss"].iloc[0]
    for name, p in model.next_visit_head.named_parameters():  # every part of the head learns
        assert not torch.equal(p.detach(), start[name]), name
