"""Survival heads: visit pooling, causality over visits, padding invariance, survival and risk."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ehrseq.losses import hazard_nll
from ehrseq.models.survival_head import (
    BinHazardHead,
    HazardOutput,
    VisitHazardHead,
    last_visit_index,
    last_visit_state,
    pool_visits,
)

D = 8
VOCAB = 20
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ),
]


class ToyEncoder(nn.Module):
    """A one-layer attention encoder, causal over visits or bidirectional.

    Causal: a token of visit ``t`` attends to the real tokens of visits ``<= t``; padded
    tokens attend only to themselves (so no row of the mask is empty).
    """

    def __init__(self, causal: bool = True) -> None:
        super().__init__()
        self.causal = causal
        self.emb = nn.Embedding(VOCAB, D, padding_idx=0)
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(D, D) for _ in range(3))
        self.ff = nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D))

    def forward(self, codes: torch.Tensor, visit_ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(codes)  # (B, L, d)
        real = visit_ids > 0  # (B, L)
        allowed = real.unsqueeze(1).expand(-1, codes.shape[1], -1)  # (B, L_q, L_k)
        if self.causal:
            allowed = allowed & (visit_ids.unsqueeze(2) >= visit_ids.unsqueeze(1))
        allowed = allowed | torch.eye(codes.shape[1], dtype=torch.bool)  # (B, L, L)
        y = F.scaled_dot_product_attention(
            self.q_proj(x), self.k_proj(x), self.v_proj(x), attn_mask=allowed
        )  # (B, L, d)
        x = x + y
        return x + self.ff(x)  # (B, L, d)


def _pad_batch(seqs: list[tuple[list[int], list[int]]], length: int | None = None):
    """Right-pad (codes, visit_ids) lists into (B, L) tensors."""
    width = length or max(len(c) for c, _ in seqs)
    codes = torch.zeros(len(seqs), width, dtype=torch.long)
    visits = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, (c, v) in enumerate(seqs):
        codes[i, : len(c)] = torch.tensor(c)
        visits[i, : len(v)] = torch.tensor(v)
    return codes, visits


PATIENT_A = ([1, 5, 6, 7, 8, 9, 3, 4, 11, 12], [1, 1, 1, 2, 2, 3, 3, 3, 4, 4])
PATIENT_B = ([1, 2, 3, 10], [1, 1, 2, 2])


def _random_batch(gen: torch.Generator, b: int = 4, length: int = 12):
    lengths = torch.randint(1, length + 1, (b,), generator=gen)
    lengths[0] = length
    visit_ids = torch.zeros(b, length, dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        steps = torch.randint(0, 2, (n,), generator=gen)
        steps[0] = 1
        visit_ids[i, :n] = steps.cumsum(0)  # 1, then non-decreasing by 0 or 1
    return visit_ids, visit_ids > 0


@pytest.mark.parametrize("device", DEVICES)
def test_pool_visits_matches_loop_reference(device):
    gen = torch.Generator().manual_seed(0)
    visit_ids, mask = _random_batch(gen, b=5, length=15)
    states = torch.randn(5, 15, D, generator=gen)
    pooled, vmask = pool_visits(states.to(device), visit_ids.to(device), mask.to(device))
    pooled, vmask = pooled.cpu(), vmask.cpu()
    v = int(visit_ids.max())
    assert pooled.shape == (5, v, D) and vmask.shape == (5, v)
    ref = torch.zeros(5, v, D)
    ref_mask = torch.zeros(5, v, dtype=torch.bool)
    for b in range(5):
        for t in range(v):
            sel = (visit_ids[b] == t + 1) & mask[b]
            if sel.any():
                ref[b, t] = states[b, sel].mean(0)
                ref_mask[b, t] = True
    torch.testing.assert_close(pooled, ref, rtol=0, atol=1e-6)
    assert torch.equal(vmask, ref_mask)


def test_pool_visits_respects_attention_mask_and_padding_values():
    states = torch.randn(1, 5, D)
    states[0, 3:] = float("nan")  # padding may hold anything
    visit_ids = torch.tensor([[1, 1, 2, 0, 0]])
    pooled, vmask = pool_visits(states, visit_ids)
    assert torch.isfinite(pooled).all()
    torch.testing.assert_close(pooled[0, 0], states[0, :2].mean(0))
    torch.testing.assert_close(pooled[0, 1], states[0, 2])
    # a real-but-masked-out token is left out of its visit
    mask = torch.tensor([[True, False, True, False, False]])
    pooled, _ = pool_visits(states, visit_ids, mask)
    torch.testing.assert_close(pooled[0, 0], states[0, 0])


def test_pool_visits_extra_slots_are_masked_and_gradient_flows():
    states = torch.randn(2, 4, D, requires_grad=True)
    visit_ids = torch.tensor([[1, 2, 2, 0], [1, 1, 0, 0]])
    pooled, vmask = pool_visits(states, visit_ids, n_visits=5)
    assert pooled.shape == (2, 5, D)
    assert vmask.tolist() == [[True, True, False, False, False], [True, False, False, False, False]]
    assert torch.equal(pooled[~vmask], torch.zeros(int((~vmask).sum()), D))
    pooled.sum().backward()
    assert torch.equal(states.grad[visit_ids == 0], torch.zeros(3, D))
    torch.testing.assert_close(states.grad[0, 1], torch.full((D,), 0.5))


@pytest.mark.parametrize(
    ("states", "visit_ids", "mask", "n_visits", "match"),
    [
        (torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.long), None, None, "token_states"),
        (torch.zeros(2, 3, D), torch.ones(2, 4, dtype=torch.long), None, None, "visit_ids must"),
        (torch.zeros(1, 2, D), torch.tensor([[1.0, 2.0]]), None, None, "integer"),
        (torch.zeros(1, 2, D), torch.tensor([[1, -1]]), None, None, ">= 0"),
        (torch.zeros(1, 2, D), torch.tensor([[1, 0]]), torch.tensor([[True, True]]), None, "0"),
        (torch.zeros(1, 2, D), torch.tensor([[1, 3]]), None, 2, "n_visits"),
    ],
)
@pytest.mark.parametrize("how", ["mean", "last"])
def test_pool_visits_errors(states, visit_ids, mask, n_visits, match, how):
    with pytest.raises(ValueError, match=match):
        pool_visits(states, visit_ids, mask, n_visits, how=how)


def test_pool_visits_last_token_matches_loop_reference():
    gen = torch.Generator().manual_seed(1)
    visit_ids, mask = _random_batch(gen, b=5, length=15)
    mask[0, 1] = False  # a real-but-masked-out token is never the last one
    states = torch.randn(5, 15, D, generator=gen)
    states[~(mask & (visit_ids > 0))] = float("nan")  # padding may hold anything
    last, vmask = pool_visits(
        states, visit_ids, mask, n_visits=int(visit_ids.max()) + 1, how="last"
    )
    for b in range(5):
        for t in range(last.shape[1]):
            where = ((visit_ids[b] == t + 1) & mask[b]).nonzero().flatten()
            assert bool(vmask[b, t]) == (len(where) > 0)
            expected = states[b, where[-1]] if len(where) else torch.zeros(D)
            assert torch.equal(last[b, t], expected)
    with pytest.raises(ValueError, match="how"):
        pool_visits(states, visit_ids, mask, how="max")


def test_last_visit_index_and_state():
    vmask = torch.tensor([[True, True, False], [True, False, True], [True, False, False]])
    assert last_visit_index(vmask).tolist() == [1, 2, 0]
    states = torch.arange(3 * 3 * 2, dtype=torch.float32).reshape(3, 3, 2)
    z = last_visit_state(states, vmask)
    torch.testing.assert_close(z, torch.stack([states[0, 1], states[1, 2], states[2, 0]]))
    with pytest.raises(ValueError, match="no real visit"):
        last_visit_index(torch.tensor([[True], [False]]))
    with pytest.raises(ValueError, match="do not match"):
        last_visit_state(states, vmask[:, :2])


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_visit_hazards_do_not_see_later_visits(cut):
    torch.manual_seed(0)
    encoder, head = ToyEncoder(causal=True).eval(), VisitHazardHead(D, hidden=16).eval()
    codes, visits = _pad_batch([PATIENT_A, PATIENT_B])
    later = (visits[0] > cut).nonzero().flatten()
    perturbed = codes.clone()
    perturbed[0, later] = torch.randint(13, VOCAB, (len(later),))  # change visits > cut only
    with torch.no_grad():
        out = head(encoder(codes, visits), visits, visits > 0)
        out2 = head(encoder(perturbed, visits), visits, visits > 0)
    torch.testing.assert_close(out2.logits[0, :cut], out.logits[0, :cut], rtol=0, atol=1e-6)
    torch.testing.assert_close(out2.logits[1], out.logits[1], rtol=0, atol=1e-6)
    assert not torch.allclose(out2.logits[0, cut:4], out.logits[0, cut:4])  # it did change


def test_leakage_test_catches_a_bidirectional_encoder():
    torch.manual_seed(0)
    encoder, head = ToyEncoder(causal=False).eval(), VisitHazardHead(D).eval()
    codes, visits = _pad_batch([PATIENT_A])
    perturbed = codes.clone()
    perturbed[0, visits[0] == 4] = 19
    with torch.no_grad():
        before = head(encoder(codes, visits), visits).logits
        after = head(encoder(perturbed, visits), visits).logits
    assert not torch.allclose(before[0, 0], after[0, 0])


def test_padding_does_not_change_outputs():
    torch.manual_seed(1)
    encoder, visit_head = ToyEncoder().eval(), VisitHazardHead(D, hidden=16).eval()
    bin_head = BinHazardHead(D, n_bins=6, hidden=16).eval()
    with torch.no_grad():
        codes, visits = _pad_batch([PATIENT_B])  # alone, no padding
        alone = visit_head(encoder(codes, visits), visits, visits > 0)
        alone_bins = bin_head(encoder(codes, visits), visits, visits > 0)
        codes, visits = _pad_batch([PATIENT_A, PATIENT_B], length=16)  # padded tokens
        h = encoder(codes, visits)
        batch = visit_head(h, visits, visits > 0, n_visits=7)  # padded visits too
        batch_bins = bin_head(h, visits, visits > 0)
    n = alone.logits.shape[1]
    torch.testing.assert_close(batch.logits[1, :n], alone.logits[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(batch_bins.logits[1], alone_bins.logits[0], rtol=0, atol=1e-6)
    assert batch.logits.shape == (2, 7)
    assert not batch.mask[1, n:].any() and torch.equal(batch.hazards[1, n:], torch.zeros(7 - n))
    surv = batch.surv
    torch.testing.assert_close(surv[1, :n], alone.surv[0], rtol=0, atol=1e-6)
    assert torch.equal(surv[1, n:], surv[1, n - 1].expand(7 - n))  # flat after the last visit


def test_visit_head_output_and_training_step():
    torch.manual_seed(2)
    encoder, head = ToyEncoder(), VisitHazardHead(D)
    codes, visits = _pad_batch([PATIENT_A, PATIENT_B])
    out = head(encoder(codes, visits), visits, visits > 0)
    assert isinstance(out, HazardOutput)
    assert out.logits.shape == out.hazards.shape == out.mask.shape == (2, 4)
    torch.testing.assert_close(out.hazards[out.mask], torch.sigmoid(out.logits[out.mask]))
    durations = last_visit_index(out.mask)
    assert durations.tolist() == [3, 1]
    loss = hazard_nll(out.logits, durations, torch.tensor([1, 0]), mask=out.mask)
    loss.backward()
    assert head.net[-1].weight.grad is not None and encoder.q_proj.weight.grad is not None


def test_bin_head_pools_the_last_visit_or_takes_a_state():
    torch.manual_seed(3)
    head = BinHazardHead(D, n_bins=5)
    states = torch.randn(2, 6, D)
    visits = torch.tensor([[1, 1, 2, 2, 0, 0], [1, 2, 3, 3, 3, 0]])
    out = head(states, visits)
    z = torch.stack([states[0, 2:4].mean(0), states[1, 2:5].mean(0)])
    torch.testing.assert_close(out.logits, head(z).logits)
    assert out.logits.shape == (2, 5) and out.mask.all()
    with pytest.raises(ValueError, match="visit_ids"):
        head(states)
    with pytest.raises(ValueError, match="states"):
        head(torch.randn(2))
    with pytest.raises(ValueError, match="positive"):
        BinHazardHead(D, n_bins=0)


def test_bin_head_starts_at_given_base_hazards():
    base = torch.tensor([0.01, 0.02, 0.05])
    head = BinHazardHead(4, 3, base_hazards=base)
    torch.nn.init.zeros_(head.net[-1].weight)
    out = head(torch.randn(5, 4))
    torch.testing.assert_close(out.hazards, base.expand(5, 3))
    with pytest.raises(ValueError, match="base_hazards"):
        BinHazardHead(4, 3, base_hazards=torch.tensor([0.5, 1.0, 0.2]))
