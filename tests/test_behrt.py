"""BEHRT encoder and attention: masks, padding invariance, visit causality, embedding flags."""

from __future__ import annotations

import pytest
import torch

from ehrseq.models import (
    BehrtConfig,
    BehrtEncoder,
    MultiHeadSelfAttention,
    encoder_inputs,
    padding_mask,
    visit_causal_mask,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
VOCAB = 40


pytestmark = pytest.mark.usefixtures("one_thread")


def patient(visit_sizes: list[int], seed: int) -> dict[str, torch.Tensor]:
    """One patient's unpadded tokens: [CLS], then each visit's codes closed by [SEP]."""
    g = torch.Generator().manual_seed(seed)
    codes, visits, domains, deltas, ages = [3], [1], [8], [0.0], []
    for v, n in enumerate(visit_sizes, start=1):
        gap = float(torch.randint(1, 400, (1,), generator=g)) if v > 1 else 0.0
        for k in range(n):
            codes.append(int(torch.randint(5, VOCAB, (1,), generator=g)))
            visits.append(v)
            domains.append(int(torch.randint(1, 8, (1,), generator=g)))
            deltas.append(gap if k == 0 else 0.0)
        codes.append(4)
        visits.append(v)
        domains.append(8)
        deltas.append(0.0)
    start = 40 + 30 * float(torch.rand(1, generator=g))
    ages = [start + (v - 1) * 0.7 for v in visits]
    L = len(codes)
    return {
        "codes": torch.tensor(codes),
        "ages": torch.tensor(ages, dtype=torch.float32),
        "visit_ids": torch.tensor(visits),
        "positions": torch.arange(L),
        "time_deltas": torch.tensor(deltas, dtype=torch.float32),
        "domain_ids": torch.tensor(domains),
        "attention_mask": torch.ones(L, dtype=torch.bool),
    }


def pad(items: list[dict]) -> dict[str, torch.Tensor]:
    """Right-pad patients into a flat batch (zeros, mask False), as ehrseq.data.tensors does."""
    L = max(len(it["codes"]) for it in items)
    out = {}
    for k in items[0]:
        buf = torch.zeros((len(items), L), dtype=items[0][k].dtype)
        for b, it in enumerate(items):
            buf[b, : len(it[k])] = it[k]
        out[k] = buf
    return out


def tiny(**kw) -> BehrtEncoder:
    torch.manual_seed(0)
    base = dict(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=64)
    return BehrtEncoder(BehrtConfig(**{**base, **kw})).eval()


def to(batch: dict, device: str) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


# ------------------------------------------------------------------------------- masks
def test_visit_causal_mask_matches_loop():
    batch = pad([patient([2, 3, 1], 0), patient([1, 2], 1)])
    vid, am = batch["visit_ids"], batch["attention_mask"]
    got = visit_causal_mask(vid, am)
    B, L = vid.shape
    assert got.shape == (B, 1, L, L)
    for b in range(B):
        for i in range(L):
            for j in range(L):
                want = bool(am[b, j] and vid[b, j] <= vid[b, i]) or (not am[b, i] and i == j)
                assert bool(got[b, 0, i, j]) == want
    assert padding_mask(am).shape == (B, 1, 1, L)


def test_masks_refuse_all_padding_rows_and_bad_types():
    am = torch.tensor([[True, True], [False, False]])
    with pytest.raises(ValueError, match="all padding"):
        padding_mask(am)
    with pytest.raises(ValueError, match="all padding"):
        visit_causal_mask(torch.tensor([[1, 2], [0, 0]]), am)
    with pytest.raises(ValueError, match="bool"):
        padding_mask(am.long())


def test_padded_query_rows_stay_finite_forward_and_backward():
    attn = MultiHeadSelfAttention(16, 2)
    batch = pad([patient([3, 3], 0), patient([1], 1)])
    mask = visit_causal_mask(batch["visit_ids"], batch["attention_mask"])
    x = torch.randn(2, batch["codes"].shape[1], 16, requires_grad=True)
    y = attn(x, mask)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


# ------------------------------------------------------------------------------- encoder
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"position_embedding": "sinusoidal", "time_embedding": "log_linear"},
        {"visit_embedding": "segment", "use_domain": False},
    ],
)
def test_padded_equals_unpadded(device, causal, variant):
    model = tiny(causal=causal, **variant).to(device)
    short, long = patient([2, 1, 3], 1), patient([4, 3, 2, 5], 2)
    alone = model(**to(pad([short]), device))  # (1, Ls, d)
    batch = model(**to(pad([short, long]), device))  # (2, Ll, d)
    Ls = len(short["codes"])
    assert batch.shape[1] > Ls
    torch.testing.assert_close(batch[0, :Ls], alone[0], atol=1e-5, rtol=0)
    assert torch.all(batch[0, Ls:] == 0)  # hidden states are zero at padding


@pytest.mark.parametrize("device", DEVICES)
def test_shapes_and_finite_gradients(device):
    model = tiny(causal=True).to(device).train()
    batch = to(pad([patient([2, 2], 3), patient([1], 4), patient([5, 1, 1], 5)]), device)
    h = model(**batch)
    assert h.shape == (3, batch["codes"].shape[1], 32)
    h.pow(2).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _change_after(batch: dict, visit: int) -> dict:
    """Replace the codes and ages of every visit after ``visit`` (not the special tokens)."""
    later = (batch["visit_ids"] > visit) & (batch["domain_ids"] != 8) & batch["attention_mask"]
    new = dict(batch)
    new["codes"] = torch.where(later, (batch["codes"] - 5 + 7) % (VOCAB - 5) + 5, batch["codes"])
    new["ages"] = torch.where(later, batch["ages"] + 13.0, batch["ages"])
    return new


@pytest.mark.parametrize("t", [1, 2, 3])
def test_causal_outputs_ignore_later_visits(t):
    batch = pad([patient([2, 3, 2, 2], 6), patient([3, 1, 2, 1], 7)])
    changed = _change_after(batch, t)
    assert not torch.equal(changed["codes"], batch["codes"])
    upto = (batch["visit_ids"] <= t) & batch["attention_mask"]
    after = (batch["visit_ids"] > t) & batch["attention_mask"]

    causal = tiny(causal=True)
    h0, h1 = causal(**batch), causal(**changed)
    torch.testing.assert_close(h0[upto], h1[upto], atol=1e-6, rtol=0)
    assert not torch.allclose(h0[after], h1[after], atol=1e-3)

    full = tiny(causal=False)
    g0, g1 = full(**batch), full(**changed)
    assert not torch.allclose(
        g0[upto], g1[upto], atol=1e-3
    )  # bidirectional: the past sees the future
    # the per-call override gives the causal behaviour with the same weights
    torch.testing.assert_close(
        full(**batch, causal=True)[upto], full(**changed, causal=True)[upto], atol=1e-6, rtol=0
    )


def _perturb(batch: dict, key: str) -> dict:
    new = dict(batch)
    am = batch["attention_mask"]
    if key == "ages":
        new["ages"] = batch["ages"] + 9.0
    elif key == "visit_ids":
        new["visit_ids"] = torch.where(am, batch["visit_ids"] + 1, 0)
    elif key == "positions":
        new["positions"] = torch.where(am, batch["positions"] + 5, 0)
    elif key == "time_deltas":
        new["time_deltas"] = batch["time_deltas"] * 10 + 3
    elif key == "domain_ids":
        new["domain_ids"] = torch.where(am, batch["domain_ids"] % 8 + 1, 0)
    return new


@pytest.mark.parametrize(
    ("key", "on", "off"),
    [
        ("ages", {"use_age": True}, {"use_age": False}),
        ("visit_ids", {"visit_embedding": "index"}, {"visit_embedding": "none"}),
        ("visit_ids", {"visit_embedding": "segment"}, {"visit_embedding": "none"}),
        ("positions", {"position_embedding": "learned"}, {"position_embedding": "none"}),
        ("positions", {"position_embedding": "sinusoidal"}, {"position_embedding": "none"}),
        ("time_deltas", {"time_embedding": "log_bins"}, {"time_embedding": "none"}),
        ("time_deltas", {"time_embedding": "log_linear"}, {"time_embedding": "none"}),
        ("domain_ids", {"use_domain": True}, {"use_domain": False}),
    ],
)
def test_each_embedding_flag_is_used(key, on, off):
    batch = pad([patient([2, 3], 8), patient([1, 1, 2], 9)])
    moved = _perturb(batch, key)
    am = batch["attention_mask"]
    m_on, m_off = tiny(**on), tiny(**off)
    assert not torch.allclose(m_on(**batch)[am], m_on(**moved)[am], atol=1e-4)
    torch.testing.assert_close(m_off(**batch)[am], m_off(**moved)[am], atol=0, rtol=0)
    assert sum(p.numel() for p in m_off.parameters()) <= sum(p.numel() for p in m_on.parameters())


def test_bins():
    emb = tiny(age_bin_years=5.0, max_age=100.0, n_time_bins=8).embeddings
    assert emb.age_bins(torch.tensor([0.0, 4.99, 5.0, 99.0, 130.0, -1.0])).tolist() == [
        0,
        0,
        1,
        19,
        20,
        0,
    ]
    bins = emb.time_bin(torch.tensor([0.0, 0.5, 1.0, 30.0, 365.0, 36525.0, 1e6]))
    assert bins[0] == 0 and bins[1] >= 1 and bins[-1] == 7 and bins[-2] == 7
    assert torch.all(bins[1:] >= bins[:-1])
    seg = tiny(visit_embedding="segment").embeddings
    assert seg.visit_index(torch.tensor([0, 1, 2, 3, 4])).tolist() == [0, 1, 2, 1, 2]


def test_encoder_inputs_and_from_vocab():
    class FakeVocab:
        stoi = {"[PAD]": 0, "[MASK]": 2}

        def __len__(self):
            return VOCAB

    cfg = BehrtConfig.from_vocab(FakeVocab(), d_model=16, n_heads=2, n_layers=1, d_ff=32)
    assert cfg.vocab_size == VOCAB and cfg.pad_id == 0
    batch = pad([patient([2], 0)])
    batch["person_ids"] = torch.tensor([7])
    assert set(encoder_inputs(batch)) == set(batch) - {"person_ids"}
    assert BehrtEncoder(cfg)(**encoder_inputs(batch)).shape == (1, batch["codes"].shape[1], 16)


def test_clear_errors():
    model = tiny()
    batch = pad([patient([2, 2], 0), patient([1], 1)])
    with pytest.raises(ValueError, match="all padding"):
        model(**{**batch, "attention_mask": torch.zeros_like(batch["attention_mask"])})
    with pytest.raises(ValueError, match="ages"):
        model(**{k: v for k, v in batch.items() if k != "ages"})
    with pytest.raises(ValueError, match="max_len"):
        tiny(max_len=4)(**batch)
    with pytest.raises(ValueError, match="differs"):
        model(**{**batch, "ages": batch["ages"][:, :2]})
    with pytest.raises(ValueError, match="time_embedding"):
        BehrtConfig(vocab_size=10, time_embedding="linear")
    with pytest.raises(ValueError, match="divisible"):
        BehrtConfig(vocab_size=10, d_model=30, n_heads=4)


@pytest.mark.parametrize("p_attn", [0.0, 0.5])
def test_attention_dropout_is_its_own_setting(p_attn):
    """The residual dropout and the dropout on attention probabilities are set apart: with
    the first at 0, training-mode outputs vary between calls only when the second is on."""
    model = tiny(dropout=0.0, attention_dropout=p_attn).train()
    batch = pad([patient([3, 2], 0), patient([2], 1)])
    first, second = model(**batch), model(**batch)
    assert torch.equal(first, second) == (p_attn == 0.0)
    blocks = [b.attn.dropout for b in model.blocks]
    assert blocks == [p_attn] * len(blocks)
    with pytest.raises(ValueError, match="attention_dropout"):
        BehrtConfig(vocab_size=10, attention_dropout=1.0)
