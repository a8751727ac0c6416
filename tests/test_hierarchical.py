"""Hierarchical BEHRT: both masks, causality over visits, empty visits, ablation flags."""

from __future__ import annotations

import pytest
import torch
from visit_patients import VOCAB, batch_of, patient

from ehrseq.losses import hazard_nll
from ehrseq.models import count_parameters
from ehrseq.models.behrt import BehrtConfig, BehrtEmbeddings, age_bins, log_time_bins
from ehrseq.models.hierarchical import AttentionPool, HierarchicalBehrt, HierarchicalConfig
from ehrseq.models.lstm import hierarchical_inputs
from ehrseq.models.survival_head import VisitHazardHead, last_visit_index
from ehrseq.models.survival_model import SurvivalModel

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw) -> HierarchicalBehrt:
    torch.manual_seed(0)
    base = dict(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, d_ff=64, n_code_layers=1)
    return HierarchicalBehrt(HierarchicalConfig(**{**base, **kw})).eval()


def run(model, batch, **kw):
    """Visit states ``(B, V, d)``: what a head reads, so what must not leak or move."""
    return model(**hierarchical_inputs(batch), **kw)


def change_after(batch: dict, t: int) -> dict:
    """Replace the codes, domains, ages and gaps of every visit after slot ``t``."""
    new = dict(batch)
    V = batch["visit_mask"].shape[1]
    later = torch.arange(V, device=batch["codes"].device) > t  # (V,)
    real_later = later[None, :, None] & batch["code_mask"]  # (B, V, C)
    codes = (batch["codes"] - 5 + 7) % (VOCAB - 5) + 5
    new["codes"] = torch.where(real_later, codes, batch["codes"])
    new["domain_ids"] = torch.where(real_later, batch["domain_ids"] % 7 + 1, batch["domain_ids"])
    new["ages"] = torch.where(later, batch["ages"] + 13.0, batch["ages"])
    new["time_deltas"] = torch.where(later, batch["time_deltas"] * 5 + 2, batch["time_deltas"])
    return new


# ------------------------------------------------------------------------------- pieces
def test_bins_match_behrt_embeddings():
    cfg = BehrtConfig(vocab_size=VOCAB, age_bin_years=5.0, max_age=100.0, n_time_bins=8)
    emb = BehrtEmbeddings(cfg)
    ages = torch.tensor([0.0, 4.99, 5.0, 99.0, 130.0, -1.0])
    gaps = torch.tensor([0.0, 0.5, 1.0, 30.0, 365.0, 4e4, -3.0])
    assert torch.equal(age_bins(ages, 5.0, cfg.n_age_bins), emb.age_bins(ages))
    assert torch.equal(log_time_bins(gaps, 8, cfg.max_time_days), emb.time_bin(gaps))
    assert log_time_bins(gaps, 8, cfg.max_time_days)[0] == 0  # 0 days has its own bin


def test_attention_pool_is_a_masked_softmax_and_safe_on_empty_sets():
    torch.manual_seed(0)
    pool = AttentionPool(8, 2)
    torch.nn.init.normal_(pool.query)
    x = torch.randn(3, 4, 8, requires_grad=True)
    mask = torch.tensor([[True, True, False, True], [True, False, False, False], [False] * 4])
    y = pool(x, mask)
    assert y.shape == (3, 8)
    # by hand, one head at a time, over the real members only
    for n in range(2):
        xs = x[n][mask[n]]  # (c, 8)
        k, v = pool.k_proj(xs).view(-1, 2, 4), pool.v_proj(xs).view(-1, 2, 4)
        q = pool.query.view(2, 4)
        a = torch.softmax((k * q).sum(-1) / 2.0, dim=0)  # (c, 2)
        want = pool.o_proj((a[..., None] * v).sum(0).reshape(8))
        torch.testing.assert_close(y[n], want, atol=1e-5, rtol=1e-5)
    assert torch.all(y[2] == 0)  # an empty set pools to zero ...
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.all(x.grad[2] == 0)  # ... with finite grads
    assert all(torch.isfinite(p.grad).all() for p in pool.parameters())


# ------------------------------------------------------------------------------- model
@pytest.mark.parametrize("device", DEVICES)
def test_shapes_and_zero_padding(device):
    model = tiny().to(device)
    batch = batch_of(patient([2, 2], 1), patient([1], 2), patient([3, 1, 1, 2], 3), device=device)
    B, V, _ = batch["codes"].shape
    h = run(model, batch)
    assert h.shape == (B, V, 32)
    assert torch.all(h[~batch["visit_mask"]] == 0)
    out = SurvivalModel(model, VisitHazardHead(32)).to(device)(batch)
    for t in (out.logits, out.hazards, out.mask, out.surv):
        assert t.shape == (B, V)
    assert torch.equal(out.mask, batch["visit_mask"])
    assert torch.all(out.hazards[~out.mask] == 0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n_code_layers", [0, 1])
def test_padding_visits_and_empty_visits_have_finite_gradients(device, n_code_layers):
    model = tiny(n_code_layers=n_code_layers, dropout=0.1).to(device).train()
    batch = batch_of(patient([2, 5, 1], 4), patient([1], 5), patient([1, 1], 6), device=device)
    batch["code_mask"][2, 1] = False  # a real visit whose codes are all padding
    out = SurvivalModel(model, VisitHazardHead(32, dropout=0.1)).to(device).train()(batch)
    assert torch.isfinite(out.logits).all()
    loss = hazard_nll(out.logits, last_visit_index(out.mask), torch.tensor([1, 0, 1]), out.mask)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_padded_code_slots_do_not_change_the_output():
    model = tiny()
    batch = batch_of(patient([1, 4, 2], 7), patient([2, 3], 8))
    moved = dict(batch)
    moved["codes"] = torch.where(batch["code_mask"], batch["codes"], 17)
    moved["domain_ids"] = torch.where(batch["code_mask"], batch["domain_ids"], 5)
    torch.testing.assert_close(run(model, moved), run(model, batch), atol=0, rtol=0)


def test_padded_visits_do_not_change_real_visits():
    model = tiny(causal=False)  # even bidirectional attention must not read padded visits
    batch = batch_of(patient([1, 4, 2, 1], 9), patient([2, 3], 10))
    pad_v = ~batch["visit_mask"]
    moved = dict(batch)
    moved["ages"] = torch.where(pad_v, 99.0, batch["ages"])
    moved["time_deltas"] = torch.where(pad_v, 1e4, batch["time_deltas"])
    torch.testing.assert_close(run(model, moved), run(model, batch), atol=0, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", [{}, {"n_code_layers": 0}, {"code_pooling": "mean"}])
def test_batch_equals_one_patient_at_a_time(device, variant):
    model = tiny(**variant).to(device)
    people = [patient([2, 1, 3], 11), patient([5, 3, 2, 4, 1, 2], 12), patient([1], 13)]
    together = run(model, batch_of(*people, device=device))
    assert together.shape[1] == 6
    for b, p in enumerate(people):
        alone = run(model, batch_of(p, device=device))[0]
        V = len(alone)
        torch.testing.assert_close(together[b, :V], alone, atol=1e-5, rtol=0)
        assert torch.all(together[b, V:] == 0)


def test_codes_inside_a_visit_are_a_set():
    model = tiny()
    batch = batch_of(patient([3, 4], 14))
    perm = torch.tensor([2, 0, 3, 1])
    shuffled = dict(batch)
    shuffled["codes"] = batch["codes"].clone()
    shuffled["domain_ids"] = batch["domain_ids"].clone()
    shuffled["codes"][0, 1] = batch["codes"][0, 1, perm]
    shuffled["domain_ids"][0, 1] = batch["domain_ids"][0, 1, perm]
    torch.testing.assert_close(run(model, shuffled), run(model, batch))


@pytest.mark.parametrize("t", [0, 1, 2])
def test_hazard_at_visit_t_ignores_later_visits(t):
    batch = batch_of(patient([2, 3, 2, 2], 15), patient([3, 1, 2, 1], 16))
    changed = change_after(batch, t)
    model = tiny()
    h0, h1 = run(model, batch), run(model, changed)
    torch.testing.assert_close(h0[:, : t + 1], h1[:, : t + 1], atol=1e-6, rtol=0)
    assert not torch.allclose(h0[:, t + 1 :], h1[:, t + 1 :], atol=1e-4)
    # the bidirectional ablation leaks the future into the past: the mask is what stops it
    g0, g1 = run(model, batch, causal=False), run(model, changed, causal=False)
    assert not torch.allclose(g0[:, : t + 1], g1[:, : t + 1], atol=1e-4)


def _perturb(batch: dict, key: str) -> dict:
    new = dict(batch)
    if key == "ages":
        new["ages"] = batch["ages"] + 9.0
    elif key == "time_deltas":
        new["time_deltas"] = batch["time_deltas"] * 10 + 3
    elif key == "domain_ids":
        new["domain_ids"] = torch.where(batch["code_mask"], batch["domain_ids"] % 7 + 1, 0)
    return new


@pytest.mark.parametrize(
    ("key", "on", "off"),
    [
        ("ages", {"use_age": True}, {"use_age": False}),
        ("time_deltas", {"time_embedding": "log_bins"}, {"time_embedding": "none"}),
        ("time_deltas", {"time_embedding": "log_linear"}, {"time_embedding": "none"}),
        ("domain_ids", {"use_domain": True}, {"use_domain": False}),
    ],
)
def test_each_input_embedding_flag_is_used(key, on, off):
    batch = batch_of(patient([2, 3], 17), patient([1, 1, 2], 18))
    moved = _perturb(batch, key)
    m_on, m_off = tiny(**on), tiny(**off)
    assert not torch.allclose(run(m_on, batch), run(m_on, moved), atol=1e-4)
    torch.testing.assert_close(run(m_off, batch), run(m_off, moved), atol=0, rtol=0)


@pytest.mark.parametrize(
    ("on", "off"),
    [
        ({"use_age": True}, {"use_age": False}),
        ({"visit_position": "learned"}, {"visit_position": "none"}),
        ({"visit_position": "sinusoidal"}, {"visit_position": "none"}),
        ({"time_embedding": "log_bins"}, {"time_embedding": "none"}),
        ({"time_embedding": "log_linear"}, {"time_embedding": "none"}),
        ({"use_domain": True}, {"use_domain": False}),
        ({"n_code_layers": 1}, {"n_code_layers": 0}),
        ({"code_pooling": "attention"}, {"code_pooling": "mean"}),
    ],
)
def test_each_ablation_flag_changes_outputs_with_the_other_weights_shared(on, off):
    """The ablated model gets every weight of the full one it still has (strict=False), so the
    difference in outputs comes from the switched-off part alone."""
    batch = batch_of(patient([2, 3, 1], 19), patient([1, 1, 2], 20))
    m_on, m_off = tiny(**on), tiny(**off)
    result = m_off.load_state_dict(m_on.state_dict(), strict=False)
    assert not result.missing_keys  # the ablated model is a sub-model of the full one
    n_on, n_off = (count_parameters(m)["trainable"] for m in (m_on, m_off))
    assert n_off < n_on or on.get("visit_position") == "sinusoidal"
    assert not torch.allclose(run(m_on, batch), run(m_off, batch), atol=1e-4)


def test_bad_inputs_raise():
    model = tiny()
    batch = hierarchical_inputs(batch_of(patient([2, 3], 21), patient([1], 22)))
    with pytest.raises(ValueError, match=r"\(B, V, C\)"):
        model(**{**batch, "codes": batch["codes"][:, 0]})  # a flat batch
    with pytest.raises(ValueError, match="domain_ids has shape"):
        model(**{**batch, "domain_ids": batch["domain_ids"][:, :1]})
    with pytest.raises(ValueError, match="bool"):
        model(**{**batch, "code_mask": batch["code_mask"].long()})
    with pytest.raises(ValueError, match="code_mask is True in a visit"):
        model(**{**batch, "visit_mask": torch.zeros_like(batch["visit_mask"])})
    with pytest.raises(ValueError, match="all padding"):
        no_visit = batch["visit_mask"].clone()
        no_visit[1] = False
        model(
            **{
                **batch,
                "visit_mask": no_visit,
                "code_mask": batch["code_mask"] & no_visit[..., None],
            }
        )
    with pytest.raises(ValueError, match="vocabulary"):
        model(**{**batch, "codes": batch["codes"] - 1})
    with pytest.raises(ValueError, match="embeds domain_ids"):
        model(**{k: v for k, v in batch.items() if k != "domain_ids"})
    with pytest.raises(ValueError, match="embeds ages"):
        model(**{k: v for k, v in batch.items() if k != "ages"})
    with pytest.raises(ValueError, match="x must be"):
        AttentionPool(8, 2)(torch.randn(2, 3, 8), torch.ones(2, 3))
    with pytest.raises(ValueError, match="divisible"):
        HierarchicalConfig(vocab_size=VOCAB, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="code_pooling"):
        HierarchicalConfig(vocab_size=VOCAB, code_pooling="max")
    with pytest.raises(ValueError, match="n_code_layers"):
        HierarchicalConfig(vocab_size=VOCAB, n_code_layers=-1)
