"""Visit LSTM: padding invariance, causality over visits, the time features, input checks."""

from __future__ import annotations

import pytest
import torch
from visit_patients import VOCAB, batch_of, patient

from ehrseq.losses import hazard_nll
from ehrseq.models.lstm import (
    LSTMConfig,
    VisitLSTM,
    check_hierarchical_batch,
    hierarchical_inputs,
    masked_mean_codes,
)
from ehrseq.models.survival_head import VisitHazardHead, last_visit_index
from ehrseq.models.survival_model import SurvivalModel

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw) -> VisitLSTM:
    torch.manual_seed(0)
    base = dict(vocab_size=VOCAB, d_embed=16, d_hidden=24)
    return VisitLSTM(LSTMConfig(**{**base, **kw})).eval()


def run(model, batch):
    """Visit states ``(B, V, d)``: what a head reads, so what must not leak or move."""
    return model(**hierarchical_inputs(batch))


def change_after(batch: dict, t: int) -> dict:
    """Replace the codes, ages and gaps of every visit after slot ``t``."""
    new = dict(batch)
    V = batch["visit_mask"].shape[1]
    later = torch.arange(V, device=batch["codes"].device) > t  # (V,)
    codes = (batch["codes"] - 5 + 7) % (VOCAB - 5) + 5
    new["codes"] = torch.where(later[None, :, None] & batch["code_mask"], codes, batch["codes"])
    new["ages"] = torch.where(later, batch["ages"] + 13.0, batch["ages"])
    new["time_deltas"] = torch.where(later, batch["time_deltas"] * 5 + 2, batch["time_deltas"])
    return new


# ------------------------------------------------------------------------------- helpers
def test_masked_mean_codes_matches_loop_and_is_zero_for_empty_visits():
    x = torch.randn(2, 3, 4, 5)
    m = torch.rand(2, 3, 4) > 0.4
    m[1, 2] = False
    x[~m] = float("nan")  # padded slots must not leak in
    got = masked_mean_codes(x, m)
    assert got.shape == (2, 3, 5)
    for b in range(2):
        for t in range(3):
            want = x[b, t][m[b, t]].mean(0) if m[b, t].any() else torch.zeros(5)
            torch.testing.assert_close(got[b, t], want)
    with pytest.raises(ValueError, match="do not match"):
        masked_mean_codes(x, m[..., :3])


# ------------------------------------------------------------------------------- model
@pytest.mark.parametrize("device", DEVICES)
def test_shapes_zero_padding_and_finite_gradients(device):
    model = tiny(n_layers=2).to(device).train()
    batch = batch_of(patient([2, 2], 1), patient([1], 2), patient([3, 1, 1, 2], 3), device=device)
    B, V, C = batch["codes"].shape
    h = run(model, batch)
    assert h.shape == (B, V, 24)
    assert torch.all(h[~batch["visit_mask"]] == 0)
    out = SurvivalModel(model, VisitHazardHead(24)).to(device)(batch)
    for t in (out.logits, out.hazards, out.mask):
        assert t.shape == (B, V)
    assert torch.equal(out.mask, batch["visit_mask"])
    assert torch.all(out.hazards[~out.mask] == 0)
    loss = hazard_nll(out.logits, last_visit_index(out.mask), torch.tensor([1, 0, 1]), out.mask)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "variant",
    [{}, {"use_time": False}, {"n_layers": 2}, {"time_inputs": "embeddings", "use_domain": True}],
)
def test_padded_equals_unpadded(device, variant):
    model = tiny(**variant).to(device)
    short, long = patient([2, 1, 3], 4), patient([5, 3, 2, 4, 1, 2], 5)
    alone = run(model, batch_of(short, device=device))
    both = batch_of(long, short, device=device)  # short is padded in V and C
    together = run(model, both)
    V = alone.shape[1]
    assert together.shape[1] > V and both["codes"].shape[2] > 3
    torch.testing.assert_close(together[1, :V], alone[0], atol=1e-5, rtol=0)
    assert torch.all(together[1, V:] == 0)


@pytest.mark.parametrize("variant", [{}, {"time_inputs": "embeddings", "use_domain": True}])
def test_padded_code_slots_and_visits_are_ignored(variant):
    model = tiny(**variant)
    batch = batch_of(patient([1, 4, 2], 6), patient([2], 7))
    moved = dict(batch)
    moved["codes"] = torch.where(batch["code_mask"], batch["codes"], 17)  # junk at padding
    pad_v = ~batch["visit_mask"]
    moved["ages"] = torch.where(pad_v, 99.0, batch["ages"])
    moved["time_deltas"] = torch.where(pad_v, 1e4, batch["time_deltas"])
    moved["domain_ids"] = torch.where(batch["code_mask"], batch["domain_ids"], 5)
    torch.testing.assert_close(run(model, moved), run(model, batch), atol=0, rtol=0)


@pytest.mark.parametrize("variant", [{}, {"time_inputs": "embeddings", "use_domain": True}])
@pytest.mark.parametrize("t", [0, 1, 2])
def test_hazard_at_visit_t_ignores_later_visits(t, variant):
    model = tiny(n_layers=2, **variant)
    batch = batch_of(patient([2, 3, 2, 2], 8), patient([3, 1, 2, 1], 9))
    changed = change_after(batch, t)
    h0, h1 = run(model, batch), run(model, changed)
    torch.testing.assert_close(h0[:, : t + 1], h1[:, : t + 1], atol=1e-6, rtol=0)
    assert not torch.allclose(h0[:, t + 1 :], h1[:, t + 1 :], atol=1e-4)
    # appending a visit does not move the hazards of the earlier ones either
    longer = run(model, batch_of(patient([2, 3, 2, 2, 4], 8)))
    torch.testing.assert_close(longer[0, :4], h0[0], atol=1e-5, rtol=0)


def test_use_time_reads_ages_and_gaps_only_when_on():
    batch = batch_of(patient([2, 3, 1], 10), patient([1, 2], 11))
    later = dict(batch, ages=batch["ages"] + 20.0)
    spaced = dict(batch, time_deltas=batch["time_deltas"] * 10 + 30)
    on, off = tiny(use_time=True), tiny(use_time=False)
    base_on, base_off = run(on, batch), run(off, batch)
    for moved in (later, spaced):
        assert not torch.allclose(run(on, moved), base_on, atol=1e-4)
        torch.testing.assert_close(run(off, moved), base_off, atol=0, rtol=0)
    assert on.lstm.input_size == off.lstm.input_size + 2
    assert not torch.allclose(base_on, base_off, atol=1e-4)
    without_time = {k: v for k, v in hierarchical_inputs(batch).items() if k != "ages"}
    off(**without_time)  # use_time=False needs no ages
    with pytest.raises(ValueError, match="use_time"):
        on(**without_time)


def test_embedded_inputs_are_behrts_bins_of_age_gap_and_domain():
    """``time_inputs="embeddings"``: the pooled visit vector plus BEHRT's age and gap bins;
    moving an age or a gap within its bin changes nothing, across a bin edge it does."""
    from ehrseq.models.behrt import age_bins, log_time_bins

    model = tiny(time_inputs="embeddings", use_domain=True)
    cfg = model.cfg
    assert model.lstm.input_size == cfg.d_embed  # added, not appended
    batch = batch_of(patient([2, 3, 1], 10), patient([1, 2], 11))
    inputs = hierarchical_inputs(batch)
    base = run(model, batch)
    # the inline formula, fed to the model's own LSTM, gives the same states
    e = model.code(inputs["codes"]) + model.domain(inputs["domain_ids"])  # (B, V, C, e)
    x = masked_mean_codes(e, inputs["code_mask"])  # (B, V, e)
    x = x + model.age(age_bins(inputs["ages"], cfg.age_bin_years, cfg.n_age_bins))
    x = x + model.gap(log_time_bins(inputs["time_deltas"], cfg.n_time_bins, cfg.max_time_days))
    lengths = inputs["visit_mask"].sum(1)
    want = torch.stack(
        [
            torch.cat([model.lstm(x[b : b + 1, :n])[0][0], base.new_zeros(x.shape[1] - n, 24)])
            for b, n in enumerate(lengths.tolist())
        ]
    )
    torch.testing.assert_close(base, want, atol=1e-5, rtol=0)
    floor = torch.floor(batch["ages"])
    same_bin = dict(batch, ages=floor + 0.99 * (batch["ages"] - floor).clamp(max=0.99))
    torch.testing.assert_close(run(model, same_bin), base, atol=0, rtol=0)
    for moved in (
        dict(batch, ages=batch["ages"] + 20.0),
        dict(batch, time_deltas=batch["time_deltas"] * 10 + 30),
        dict(batch, domain_ids=(batch["domain_ids"] % 7) + 1),
    ):
        assert not torch.allclose(run(model, moved), base, atol=1e-4)
    without_domain = {k: v for k, v in inputs.items() if k != "domain_ids"}
    with pytest.raises(ValueError, match="use_domain"):
        model(**without_domain)
    tiny()(**without_domain)  # the default reads no domain
    with pytest.raises(ValueError, match="time_inputs"):
        LSTMConfig(vocab_size=VOCAB, time_inputs="bins")


def test_bad_inputs_raise():
    model = tiny()
    batch = hierarchical_inputs(batch_of(patient([2, 3], 12), patient([1], 13)))
    with pytest.raises(ValueError, match=r"\(B, V, C\)"):
        model(**{**batch, "codes": batch["codes"][:, 0]})  # a flat batch
    with pytest.raises(ValueError, match="code_mask has shape"):
        model(**{**batch, "code_mask": batch["code_mask"][:, :, :1]})
    with pytest.raises(ValueError, match="bool"):
        model(**{**batch, "visit_mask": batch["visit_mask"].long()})
    with pytest.raises(ValueError, match="ages has shape"):
        model(**{**batch, "ages": batch["ages"][:, :1]})
    empty = batch["visit_mask"].clone()
    empty[1] = False
    with pytest.raises(ValueError, match="code_mask is True in a visit"):
        model(**{**batch, "visit_mask": empty})
    with pytest.raises(ValueError, match="all padding"):
        model(**{**batch, "visit_mask": empty, "code_mask": batch["code_mask"] & empty[..., None]})
    with pytest.raises(ValueError, match="vocabulary"):
        model(**{**batch, "codes": batch["codes"] + VOCAB})
    gap = batch["visit_mask"].clone()
    gap[0] = torch.tensor([False, True])
    with pytest.raises(ValueError, match="come first"):
        model(**{**batch, "visit_mask": gap, "code_mask": batch["code_mask"] & gap[..., None]})
    check_hierarchical_batch(**{k: batch[k] for k in ("codes", "code_mask", "visit_mask")})
    with pytest.raises(ValueError, match="must be at least 1"):
        LSTMConfig(vocab_size=VOCAB, d_hidden=0)
    with pytest.raises(ValueError, match="dropout"):
        LSTMConfig(vocab_size=VOCAB, dropout=1.0)
    with pytest.raises(ValueError, match="pad_id"):
        LSTMConfig(vocab_size=VOCAB, pad_id=VOCAB)
