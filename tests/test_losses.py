"""Survival losses: the hazard likelihood against hand computation and the BCE form, ranking."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ehrseq.losses import hazard_nll, hybrid_loss, pairwise_ranking_loss
from ehrseq.survival import hazards_to_survival

LOGITS = [[0.5, -1.0, 2.0], [1.0, 0.3, -0.7], [-2.0, 0.1, 0.4]]
DURATIONS = [1, 2, 0]
EVENTS = [1, 0, 1]
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ),
]


def _hand_nll() -> list[float]:
    """The likelihood written out with plain math, one patient at a time."""

    def h(x: float) -> float:
        return 1.0 / (1.0 + math.exp(-x))

    (a, b, c), (d, e, f), (g, _, _) = LOGITS
    return [
        -(math.log(1 - h(a)) + math.log(h(b))),  # survived bin 0, event in bin 1
        -(math.log(1 - h(d)) + math.log(1 - h(e)) + math.log(1 - h(f))),  # censored in bin 2
        -math.log(h(g)),  # event in bin 0
    ]


def test_hazard_nll_matches_hand_computation():
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    d, e = torch.tensor(DURATIONS), torch.tensor(EVENTS)
    expected = torch.tensor(_hand_nll(), dtype=torch.float64)
    torch.testing.assert_close(hazard_nll(logits, d, e, reduction="none"), expected)
    torch.testing.assert_close(hazard_nll(logits, d, e), expected.mean())
    torch.testing.assert_close(hazard_nll(logits, d, e, reduction="sum"), expected.sum())
    # lists, bool events and float 0/1 events are accepted
    torch.testing.assert_close(hazard_nll(logits, DURATIONS, [True, False, True]), expected.mean())
    torch.testing.assert_close(hazard_nll(logits, d, e.double()), expected.mean())


def _bce_form(logits, durations, events, mask=None):
    """Kvamme & Borgan's person-period form: BCE on y_ik = e_i [k = j_i] over k <= j_i."""
    bins = torch.arange(logits.shape[1], device=logits.device)
    y = ((bins == durations[:, None]) & events.bool()[:, None]).to(logits.dtype)  # (B, T)
    at_risk = bins <= durations[:, None]  # (B, T)
    if mask is not None:
        at_risk = at_risk & mask
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    return (bce * at_risk).sum(1)  # (B,)


@pytest.mark.parametrize("device", DEVICES)
def test_hazard_nll_equals_person_period_bce_with_gradients(device):
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(32, 9, generator=gen, dtype=torch.float64)
    logits = logits.to(device).requires_grad_()
    d = torch.randint(0, 9, (32,), generator=gen).to(device)
    e = torch.randint(0, 2, (32,), generator=gen).to(device)
    ours = hazard_nll(logits, d, e, reduction="none")
    ref = _bce_form(logits, d, e)
    torch.testing.assert_close(ours, ref)
    (g_ours,) = torch.autograd.grad(ours.sum(), logits)
    (g_ref,) = torch.autograd.grad(ref.sum(), logits)
    torch.testing.assert_close(g_ours, g_ref)


def test_hazard_nll_with_mask_skips_padded_bins():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(16, 6, generator=gen, dtype=torch.float64)
    mask = torch.rand(16, 6, generator=gen) > 0.3
    mask[:, 0] = True
    # labels on real bins only
    d = torch.stack([torch.multinomial(m.double(), 1, generator=gen)[0] for m in mask])
    e = torch.randint(0, 2, (16,), generator=gen)
    ours = hazard_nll(logits, d, e, mask=mask, reduction="none")
    torch.testing.assert_close(ours, _bce_form(logits, d, e, mask))
    # equal to the likelihood on the sequence with the padded bins removed
    for i in range(16):
        keep = mask[i]
        j = int(keep[: int(d[i])].sum())
        alone = hazard_nll(logits[i, keep][None], torch.tensor([j]), e[i : i + 1])
        torch.testing.assert_close(ours[i], alone)
    # padded logits are never read, even when they are inf
    bad = logits.masked_fill(~mask, float("inf")).requires_grad_()
    loss = hazard_nll(bad, d, e, mask=mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(bad.grad).all()
    torch.testing.assert_close(loss, ours.mean())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hazard_nll_is_finite_and_exact_for_extreme_logits(dtype):
    logits = torch.tensor([[-100.0, -100.0, 100.0], [100.0, 0.0, 0.0], [-100.0, -100.0, -100.0]])
    logits = logits.to(dtype).requires_grad_()
    d, e = torch.tensor([2, 0, 2]), torch.tensor([1, 0, 1])
    nll = hazard_nll(logits, d, e, reduction="none")
    nll.sum().backward()
    assert torch.isfinite(nll).all() and torch.isfinite(logits.grad).all()
    # a perfect prediction costs ~0; a confident wrong one costs ~100 (a clamped sigmoid ~16)
    torch.testing.assert_close(
        nll, torch.tensor([0.0, 100.0, 100.0], dtype=dtype), atol=1e-4, rtol=1e-6
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"durations": [1, 3, 0]}, "past the last bin"),
        ({"durations": [1, -1, 0]}, ">= 0"),
        ({"durations": [1.0, 2.0, 0.0]}, "integer"),
        ({"durations": [1, 2]}, "durations must have shape"),
        ({"events": [1, 2, 0]}, "0/1"),
        ({"events": [1, 0]}, "events must have shape"),
        ({"mask": torch.ones(3, 2, dtype=torch.bool)}, "mask must have"),
        ({"mask": torch.tensor([[1, 1, 1], [0, 0, 0], [1, 1, 1]])}, "all padding"),
        ({"mask": torch.tensor([[1, 0, 1], [1, 1, 1], [1, 1, 1]])}, "masked"),
        ({"reduction": "max"}, "reduction"),
        ({"logits": torch.zeros(3)}, "logits"),
    ],
)
def test_hazard_nll_errors(kwargs, match):
    args = {
        "logits": torch.tensor(LOGITS),
        "durations": DURATIONS,
        "events": EVENTS,
        "mask": None,
        "reduction": "mean",
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        hazard_nll(**args)


def _comparable(ti, tj, ei, ej) -> bool:
    return bool(ei) and (ti < tj or (ti == tj and not ej))


def test_ranking_loss_matches_loop_reference_for_scores():
    gen = torch.Generator().manual_seed(2)
    risk = torch.randn(10, generator=gen, dtype=torch.float64)
    t = torch.randint(0, 4, (10,), generator=gen).double()  # many ties
    e = torch.randint(0, 2, (10,), generator=gen)
    for kind, eta in (("exp", math.exp), ("logistic", lambda z: math.log1p(math.exp(z)))):
        total, pairs = 0.0, 0
        for i in range(10):
            for j in range(10):
                if _comparable(t[i], t[j], e[i], e[j]):
                    total += eta(-(risk[i] - risk[j]).item() / 0.5)
                    pairs += 1
        got = pairwise_ranking_loss(risk, t, e, sigma=0.5, kind=kind)
        assert math.isclose(got.item(), total / pairs, rel_tol=1e-10)
        got_sum = pairwise_ranking_loss(risk, t, e, sigma=0.5, kind=kind, reduction="sum")
        assert math.isclose(got_sum.item(), total, rel_tol=1e-10)
    assert pairwise_ranking_loss(risk, t, e, reduction="none").shape == (10, 10)


def test_ranking_loss_on_a_curve_compares_at_the_earlier_time():
    gen = torch.Generator().manual_seed(3)
    hazards = torch.rand(8, 5, generator=gen, dtype=torch.float64) * 0.4
    cum = 1 - hazards_to_survival(hazards)  # (B, T), F(t_k)
    d = torch.randint(0, 5, (8,), generator=gen)
    e = torch.randint(0, 2, (8,), generator=gen)
    total, pairs = 0.0, 0
    for i in range(8):
        for j in range(8):
            if _comparable(d[i], d[j], e[i], e[j]):
                k = int(d[i])
                total += math.exp(-(cum[i, k] - cum[j, k]).item() / 0.1)
                pairs += 1
    got = pairwise_ranking_loss(cum, d, e, sigma=0.1)
    assert math.isclose(got.item(), total / pairs, rel_tol=1e-10)


def test_ranking_loss_prefers_the_right_order_and_handles_no_pairs():
    t = torch.tensor([1.0, 2.0, 3.0])
    e = torch.tensor([1, 1, 0])
    right = pairwise_ranking_loss(torch.tensor([3.0, 2.0, 1.0]), t, e, kind="logistic")
    wrong = pairwise_ranking_loss(torch.tensor([1.0, 2.0, 3.0]), t, e, kind="logistic")
    assert right < wrong
    risk = torch.randn(3, requires_grad=True)
    zero = pairwise_ranking_loss(risk, t, torch.zeros(3))  # all censored: no pair
    zero.backward()
    assert zero.item() == 0.0 and torch.equal(risk.grad, torch.zeros(3))


@pytest.mark.parametrize(
    ("risk", "durations", "kwargs", "match"),
    [
        (torch.zeros(3), [1, 2, 3], {"sigma": 0.0}, "sigma"),
        (torch.zeros(3), [1, 2, 3], {"kind": "hinge"}, "kind"),
        (torch.zeros(3), [1, 2, 3], {"reduction": "avg"}, "reduction"),
        (torch.zeros(3, 2), [0, 1, 2], {}, "past the last bin"),
        (torch.zeros(3, 2), [0.0, 1.0, 1.0], {}, "integer"),
        (torch.zeros(3), [1, -2, 3], {}, "non-negative"),
        (torch.zeros(3), [1, 2], {}, "durations must have shape"),
        (torch.zeros(3, 2, 2), [1, 2, 0], {}, "risk must"),
    ],
)
def test_ranking_loss_errors(risk, durations, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pairwise_ranking_loss(risk, durations, [1, 0, 1], **kwargs)


def test_hybrid_loss_is_nll_plus_weighted_ranking():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(12, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(12, 6, dtype=torch.bool)
    mask[:4, 4:] = False
    d = torch.randint(0, 4, (12,), generator=gen)
    e = torch.randint(0, 2, (12,), generator=gen)
    nll = hazard_nll(logits, d, e, mask=mask)
    torch.testing.assert_close(hybrid_loss(logits, d, e, mask=mask, rank_weight=0.0), nll)
    hazards = torch.sigmoid(logits).masked_fill(~mask, 0.0)
    cum = 1 - torch.cumprod(1 - hazards, dim=1)
    rank = pairwise_ranking_loss(cum, d, e, sigma=0.2, kind="logistic")
    got = hybrid_loss(logits, d, e, mask=mask, rank_weight=0.5, sigma=0.2, kind="logistic")
    torch.testing.assert_close(got, nll + 0.5 * rank)
    got.backward()
    assert torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match="reduction"):
        hybrid_loss(logits, d, e, reduction="none")
    with pytest.raises(ValueError, match="rank_weight"):
        hybrid_loss(logits, d, e, rank_weight=-1.0)
