"""Pretraining: masking statistics, losses on masked positions only, next-visit targets, learning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ehrseq.data.sequences import build_sequences
from ehrseq.data.tensors import SequenceDataset, collate_flat, encode
from ehrseq.data.vocab import SPECIAL_TOKENS, Vocab
from ehrseq.models import BehrtConfig, BehrtEncoder, encoder_inputs
from ehrseq.models.survival_head import pool_visits
from ehrseq.pretrain import (
    IGNORE_INDEX,
    BehrtForPretraining,
    PretrainObjective,
    TokenIds,
    code_counts,
    evaluate_masked_codes,
    evaluate_next_visit,
    history_table,
    mask_codes,
    mlm_loss,
    next_visit_targets,
    pretrain,
)
from ehrseq.train import TrainConfig

PAD, UNK, MASK, CLS, SEP = range(5)
N_GROUPS, PER_GROUP = 4, 5
VOCAB = 5 + N_GROUPS * PER_GROUP
IDS = TokenIds(VOCAB, PAD, MASK, CLS, SEP, (PAD, UNK, MASK, CLS, SEP))


def make_patient(
    codes_by_visit: list[list[int]], start_age: float = 50.0
) -> dict[str, torch.Tensor]:
    """Flat tokens of one patient: [CLS] then each visit's codes closed by [SEP]."""
    codes, visits = [CLS], [1]
    for v, visit in enumerate(codes_by_visit, start=1):
        codes += [*visit, SEP]
        visits += [v] * (len(visit) + 1)
    codes_t, visits_t = torch.tensor(codes), torch.tensor(visits)
    special = torch.isin(codes_t, torch.tensor([CLS, SEP]))
    first = torch.cat([torch.tensor([False]), visits_t[1:] != visits_t[:-1]])
    return {
        "codes": codes_t,
        "ages": start_age + 0.5 * (visits_t - 1).float(),
        "visit_ids": visits_t,
        "positions": torch.arange(len(codes)),
        "time_deltas": first.float() * 180.0,
        "domain_ids": torch.where(special, 8, 1),
        "attention_mask": torch.ones(len(codes), dtype=torch.bool),
    }


def collate(items: list[dict]) -> dict[str, torch.Tensor]:
    L = max(len(it["codes"]) for it in items)
    out = {}
    for k in items[0]:
        buf = torch.zeros((len(items), L), dtype=items[0][k].dtype)
        for b, it in enumerate(items):
            buf[b, : len(it[k])] = it[k]
        out[k] = buf
    return out


def group_patients(n: int, seed: int) -> list[dict]:
    """Each patient draws all codes from one of 4 groups of 5 (skewed within the group), so a
    masked code, and the next visit's codes, are predictable from the rest of the history."""
    rng = np.random.default_rng(seed)
    p = np.array([5, 4, 3, 2, 1]) / 15
    out = []
    for _ in range(n):
        g = rng.integers(N_GROUPS)
        visits = [
            (5 + g * PER_GROUP + rng.choice(PER_GROUP, size=rng.integers(2, 5), p=p)).tolist()
            for _ in range(rng.integers(2, 6))
        ]
        out.append(make_patient(visits, start_age=float(rng.uniform(30, 80))))
    return out


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed: int = 0, **kw) -> BehrtForPretraining:
    torch.manual_seed(seed)
    cfg = BehrtConfig(
        vocab_size=VOCAB, d_model=32, n_layers=1, n_heads=2, d_ff=64, dropout=0.0, max_len=64
    )
    return BehrtForPretraining(BehrtEncoder(cfg), **kw)


# ------------------------------------------------------------------------------- token ids
def test_token_ids_from_a_real_vocab_and_checks():
    frame = pd.DataFrame(
        {
            "person_id": [1, 1, 2],
            "domain": ["condition", "drug", "condition"],
            "concept_id": [10, 20, 10],
            "value_as_number": [np.nan] * 3,
        }
    )
    vocab = Vocab.fit(frame, [1, 2])
    ids = TokenIds.from_vocab(vocab)
    assert ids.vocab_size == len(vocab) and ids.mask_id != ids.pad_id
    assert set(ids.special_ids) == {0, 1, 2, 3, 4}
    assert ids.regular_tensor().tolist() == [5, 6]
    with pytest.raises(ValueError, match="must differ"):
        TokenIds(10, 0, 0, 3, 4, (0, 3, 4))
    with pytest.raises(ValueError, match="not in special_ids"):
        TokenIds(10, 0, 2, 3, 4, (0, 2, 3))


# ------------------------------------------------------------------------------- masking
def test_masking_statistics_on_a_large_batch():
    g = torch.Generator().manual_seed(0)
    vocab = 2000
    ids = TokenIds(vocab, PAD, MASK, CLS, SEP, (PAD, UNK, MASK, CLS, SEP))
    B, L = 512, 128
    codes = torch.randint(5, vocab, (B, L), generator=g)
    codes[:, 0] = CLS
    codes[:, 10::17] = SEP
    codes[:, 5::23] = UNK
    lengths = torch.randint(L // 4, L + 1, (B,), generator=g)
    am = torch.arange(L)[None] < lengths[:, None]
    codes[~am] = PAD
    masked, labels = mask_codes(codes, am, ids, generator=g)

    eligible = am & (codes >= 5)
    picked = labels != IGNORE_INDEX
    assert not picked[~eligible].any()  # never padding or special tokens
    assert torch.equal(masked[~eligible], codes[~eligible])
    assert torch.equal(labels[picked], codes[picked])
    rate = picked.sum().item() / eligible.sum().item()
    assert abs(rate - 0.15) < 0.005
    n = picked.sum().item()
    to_mask = (masked[picked] == MASK).sum().item() / n
    kept = (masked[picked] == codes[picked]).sum().item() / n
    to_random = 1 - to_mask - kept
    assert abs(to_mask - 0.8) < 0.01 and abs(kept - 0.1) < 0.01 and abs(to_random - 0.1) < 0.01
    assert (masked[picked & (masked != MASK)] >= 5).all()  # random replacements are regular codes
    # a seeded generator gives the same masks again
    again = mask_codes(codes, am, ids, generator=torch.Generator().manual_seed(0))
    first = mask_codes(codes, am, ids, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])


def test_mlm_loss_uses_masked_positions_only():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 7, VOCAB, generator=g, requires_grad=True)
    labels = torch.full((3, 7), IGNORE_INDEX)
    labels[0, 2], labels[1, 5], labels[2, 0] = 7, 9, 11
    loss = mlm_loss(logits, labels)
    picked = labels != IGNORE_INDEX
    want = F.cross_entropy(logits[picked], labels[picked])
    torch.testing.assert_close(loss, want)
    loss.backward()
    assert torch.all(logits.grad[~picked] == 0) and torch.all(logits.grad[picked].abs().sum(-1) > 0)
    empty = mlm_loss(logits, torch.full((3, 7), IGNORE_INDEX))
    assert empty.item() == 0.0 and empty.requires_grad


def test_objective_loss_equals_cross_entropy_on_picked_positions():
    model = tiny_model(tie_weights=True).eval()
    batch = collate(group_patients(6, 3))
    objective = PretrainObjective(IDS, "mlm")
    loss, metrics = objective(model, batch)
    # the same masks (eval mode: seeded generator), logits at every position, ignore_index
    gen = torch.Generator().manual_seed(objective.eval_seed)
    masked, labels = mask_codes(batch["codes"], batch["attention_mask"], IDS, generator=gen)
    h = model.encoder(**{**encoder_inputs(batch), "codes": masked})
    full = F.cross_entropy(
        model.mlm_head(h).reshape(-1, VOCAB), labels.reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(loss, full)
    assert set(metrics) == {"mlm_loss", "mlm_acc"}
    assert model.mlm_head.decoder.weight is model.encoder.embeddings.code.weight
    assert tiny_model(tie_weights=False).mlm_head.decoder.weight is not None


# ------------------------------------------------------------------------------- next visit
def test_next_visit_targets_on_a_hand_made_example():
    a, b, c, d = 5, 6, 7, 8
    p1 = make_patient([[a, b], [c], [a, d, a]])  # 3 visits
    p2 = make_patient([[d], [UNK]])  # second visit holds only a special code
    batch = collate([p1, p2])
    targets, valid = next_visit_targets(
        batch["codes"], batch["visit_ids"], batch["attention_mask"], IDS
    )
    assert targets.shape == (2, 2, VOCAB)
    as_sets = [
        [set(targets[i, t].nonzero().flatten().tolist()) for t in range(2)] for i in range(2)
    ]
    assert as_sets[0] == [{c}, {a, d}]
    assert as_sets[1] == [set(), set()]
    assert valid.tolist() == [[True, True], [False, False]]


def test_pool_visits_last_and_mean():
    batch = collate([make_patient([[5, 6], [7]]), make_patient([[8]])])
    # tokens: p1 = CLS 5 6 SEP | 7 SEP (visits 1 1 1 1 2 2); p2 = CLS 8 SEP (1 1 1) + pad
    hidden = torch.arange(2 * 6, dtype=torch.float32).reshape(2, 6, 1)
    last, exists = pool_visits(hidden, batch["visit_ids"], batch["attention_mask"], how="last")
    assert last[..., 0].tolist() == [[3.0, 5.0], [8.0, 0.0]]
    assert exists.tolist() == [[True, True], [True, False]]
    mean, _ = pool_visits(hidden, batch["visit_ids"], batch["attention_mask"], how="mean")
    assert mean[..., 0].tolist() == [[1.5, 4.5], [7.0, 0.0]]


@pytest.mark.parametrize("pool", ["last", "mean"])
def test_next_visit_logits_never_see_the_next_visit(pool):
    model = tiny_model(pool=pool).eval()
    p = make_patient([[5, 6], [7, 8], [9, 10, 11]])
    changed = make_patient([[5, 6], [7, 8], [20, 21]])
    out0 = model(collate([p]), task="next_visit")["next_visit_logits"]
    out1 = model(collate([changed]), task="next_visit")["next_visit_logits"]
    torch.testing.assert_close(
        out0[:, :2], out1[:, :2], atol=1e-6, rtol=0
    )  # states after visits 1, 2


# ------------------------------------------------------------------------------- learning
@pytest.fixture(scope="module")
def loaders():
    train = DataLoader(group_patients(256, 0), batch_size=32, shuffle=True, collate_fn=collate)
    val = DataLoader(group_patients(96, 1), batch_size=48, collate_fn=collate)
    return train, val


def test_tiny_model_learns_masked_codes(loaders):
    train, val = loaders
    model = tiny_model()
    counts = code_counts(train, IDS)
    before = evaluate_masked_codes(model, val, IDS, counts=counts)
    cfg = TrainConfig(epochs=20, lr=3e-3, warmup_steps=10, progress=False, seed=0)
    result = pretrain(model, train, val, IDS, cfg, schedule="mlm")["mlm"]
    hist = result.history
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    assert hist["val_loss"].iloc[-1] < hist["val_loss"].iloc[0]
    after = evaluate_masked_codes(model, val, IDS, counts=counts)
    # the best possible top-1 is 1/3 (the group's commonest code); the frequency baseline ~1/12
    assert after["top1"] > after["baseline_top1"] + 0.15
    assert after["top10"] > after["baseline_top10"] + 0.2
    assert after["top1"] > before["top1"]
    assert after["baseline_top1"] == before["baseline_top1"]  # same seeded masks


def test_tiny_model_learns_next_visit_jointly(loaders):
    train, val = loaders
    model = tiny_model(seed=1)
    counts = code_counts(train, IDS)
    cfg = TrainConfig(epochs=20, lr=3e-3, warmup_steps=10, progress=False, seed=0)
    results = pretrain(model, train, val, IDS, cfg, schedule="joint", next_visit_weight=5.0)
    hist = results["joint"].history
    assert {"train_mlm_loss", "train_nv_loss", "val_mlm_loss", "val_nv_loss"} <= set(hist.columns)
    assert hist["train_nv_loss"].iloc[-1] < hist["train_nv_loss"].iloc[0]
    nv = evaluate_next_visit(model, val, IDS, counts=counts, k=10)
    # the next visit's codes are the patient's group (5 of 20 codes): top-10 covers them
    assert nv["recall@10"] > nv["baseline_recall@10"] + 0.1
    assert nv["n_pairs"] > 0
    mc = evaluate_masked_codes(model, val, IDS, counts=counts)
    assert mc["top1"] > mc["baseline_top1"] + 0.1


def test_evaluate_masked_codes_loss_is_the_mlm_loss_on_the_same_masks(loaders):
    _, val = loaders
    model = tiny_model(seed=3).eval()
    got = evaluate_masked_codes(model, val, IDS, seed=5)
    gen = torch.Generator().manual_seed(5)
    total, n = 0.0, 0
    with torch.no_grad():
        for batch in val:  # the masks drawn in the same order from the same seed
            masked, labels = mask_codes(batch["codes"], batch["attention_mask"], IDS, generator=gen)
            logits = model({**batch, "masked_codes": masked, "mlm_labels": labels}, task="mlm")
            picked = labels[labels != IGNORE_INDEX]
            total += mlm_loss(logits["mlm_logits"], picked).item() * len(picked)
            n += len(picked)
    assert got["n_masked"] == n
    assert got["loss"] == pytest.approx(total / n, rel=1e-6)
    assert got["loss"] > 0


def test_sequential_schedule_writes_one_folder_per_phase(loaders, tmp_path):
    train, val = loaders
    model = tiny_model(seed=2)
    small = DataLoader(train.dataset[:64], batch_size=32, collate_fn=collate)
    cfg = TrainConfig(epochs=1, lr=1e-3, progress=False, out_dir=tmp_path)
    results = pretrain(model, small, small, IDS, cfg, schedule="sequential")
    assert list(results) == ["mlm", "next_visit"]
    assert (tmp_path / "mlm" / "metrics.csv").exists() and (
        tmp_path / "next_visit" / "last.pt"
    ).exists()
    table = history_table(results)
    assert table["phase"].tolist() == ["mlm", "next_visit"]
    assert "val_mlm_loss" in table and "val_nv_loss" in table
    with pytest.raises(ValueError, match="schedule"):
        pretrain(model, small, small, IDS, cfg, schedule="both")


def test_recipe_from_events_to_pretraining():
    """The chapter recipe on the real tensor contract: events -> sequences -> Vocab -> loader."""
    rng = np.random.default_rng(0)
    rows = []
    for p in range(1, 41):
        for v in range(rng.integers(2, 5)):
            day = pd.Timestamp("2020-01-01") + pd.Timedelta(days=int(30 * v))
            for c in rng.integers(1, 12, size=rng.integers(1, 4)):
                rows.append((p, day, int(c), 0, ("condition", "drug")[c % 2], np.nan, 0, None))
    columns = ["person_id", "time", "concept_id", "source_concept_id", "domain"]
    columns += ["value_as_number", "unit_concept_id", "visit_occurrence_id"]
    events = pd.DataFrame(rows, columns=columns).astype(
        {"visit_occurrence_id": "Int64", "time": "datetime64[ns]"}
    )
    persons = pd.DataFrame(
        {"person_id": np.arange(1, 41), "birth_datetime": pd.Timestamp("1960-05-05")}
    )
    persons = persons.astype({"birth_datetime": "datetime64[ns]"})
    seqs = build_sequences(events, persons, add_cls=True, add_sep=True)
    vocab = Vocab.fit(seqs.frame, train_ids=range(1, 31))
    loader = DataLoader(
        SequenceDataset(encode(seqs, vocab)), batch_size=20, collate_fn=collate_flat
    )

    ids = TokenIds.from_vocab(vocab)
    cfg = BehrtConfig.from_vocab(vocab, d_model=16, n_layers=1, n_heads=2, d_ff=32)
    model = BehrtForPretraining(BehrtEncoder(cfg))
    results = pretrain(
        model, loader, loader, ids, TrainConfig(epochs=1, progress=False), schedule="joint"
    )
    assert np.isfinite(results["joint"].history["val_loss"]).all()
    counts = torch.tensor([0.0] * len(SPECIAL_TOKENS) + vocab.counts)
    assert 0 <= evaluate_masked_codes(model, loader, ids, counts=counts)["top1"] <= 1
    assert 0 <= evaluate_next_visit(model, loader, ids, counts=counts)["recall@10"] <= 1
