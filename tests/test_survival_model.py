"""SurvivalModel: one encoder + head composition for flat and hierarchical batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from visit_patients import VOCAB, batch_of, patient

from ehrseq.data.tensors import collate_flat
from ehrseq.models import (
    BehrtConfig,
    BehrtEncoder,
    BinHazardHead,
    HierarchicalBehrt,
    HierarchicalConfig,
    LSTMConfig,
    SurvivalModel,
    VisitHazardHead,
    VisitLSTM,
    freeze,
    hierarchical_inputs,
)
from ehrseq.models.survival_head import last_visit_state
from ehrseq.survival import life_table_hazards

pytestmark = pytest.mark.usefixtures("one_thread")

D, N_BINS = 16, 5


def flat_of(*items: dict) -> dict:
    return collate_flat(list(items))


def behrt(causal: bool = True) -> BehrtEncoder:
    cfg = BehrtConfig(vocab_size=VOCAB, d_model=D, n_layers=2, n_heads=2, d_ff=32, causal=causal)
    return BehrtEncoder(cfg)


def lstm() -> VisitLSTM:
    return VisitLSTM(LSTMConfig(vocab_size=VOCAB, d_embed=D, d_hidden=D))


def hier() -> HierarchicalBehrt:
    cfg = HierarchicalConfig(vocab_size=VOCAB, d_model=D, n_layers=2, n_heads=2, d_ff=32)
    return HierarchicalBehrt(cfg)


ENCODERS = {"behrt": (behrt, flat_of), "lstm": (lstm, batch_of), "hierarchical": (hier, batch_of)}


def model_of(name: str, head: str = "bin") -> tuple[SurvivalModel, object]:
    torch.manual_seed(0)
    make, collate = ENCODERS[name]
    head_ = BinHazardHead(D, N_BINS) if head == "bin" else VisitHazardHead(D)
    return SurvivalModel(make(), head_).eval(), collate


def change_later_visits(item: dict, t: int) -> dict:
    """The same patient with new codes from visit ``t + 2`` on (slot ``t + 1`` and later)."""
    new = dict(item)
    later = item["visit_ids"] > t + 1
    regular = item["codes"] >= 5
    new["codes"] = torch.where(
        later & regular, (item["codes"] - 5 + 11) % (VOCAB - 5) + 5, item["codes"]
    )
    return new


@pytest.mark.parametrize("name", list(ENCODERS))
def test_padded_batch_equals_each_patient_alone(name):
    model, collate = model_of(name)
    people = [patient([2, 1, 3], 1), patient([5, 3, 2, 4, 1, 2], 2), patient([1], 3)]
    together = model(collate(*people))
    assert together.logits.shape == (3, N_BINS) and together.surv.shape == (3, N_BINS)
    for b, p in enumerate(people):
        alone = model(collate(p))
        torch.testing.assert_close(together.hazards[b], alone.hazards[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(ENCODERS))
@pytest.mark.parametrize("t", [0, 1, 2])
def test_visit_hazard_at_t_ignores_later_visits(name, t):
    model, collate = model_of(name, head="visit")
    people = [patient([2, 3, 2, 2], 4), patient([3, 1, 2, 1], 5)]
    h0 = model(collate(*people)).hazards  # (B, V)
    h1 = model(collate(*(change_later_visits(p, t) for p in people))).hazards
    assert h0.shape == (2, 4)
    torch.testing.assert_close(h0[:, : t + 1], h1[:, : t + 1], atol=1e-6, rtol=0)
    assert not torch.allclose(h0[:, t + 1 :], h1[:, t + 1 :], atol=1e-5)


@pytest.mark.parametrize("name", ["lstm", "hierarchical"])
def test_bin_head_on_visit_states_reads_the_last_visit(name):
    """The visit-level composition is exactly ``head(last_visit_state(encoder(batch)))``."""
    model, collate = model_of(name)
    batch = collate(patient([2, 2, 1], 6), patient([1], 7))
    states = model.encoder(**hierarchical_inputs(batch))  # (B, V, d)
    expected = model.head(last_visit_state(states, batch["visit_mask"]))
    assert torch.equal(model(batch).logits, expected.logits)


def test_life_table_start_and_frozen_encoder():
    durations, events = np.array([0, 1, 1, 2, 4, 4, 3]), np.array([1, 0, 1, 1, 0, 1, 0])
    base = life_table_hazards(durations, events, N_BINS)  # float64
    head = BinHazardHead(D, N_BINS, base_hazards=base)
    torch.nn.init.zeros_(head.net[-1].weight)
    model = SurvivalModel(freeze(behrt()), head)
    out = model(flat_of(patient([2, 1], 8), patient([1], 9)))
    np.testing.assert_allclose(out.hazards.detach().numpy(), np.tile(base, (2, 1)), rtol=1e-6)
    model.train()
    assert model.head.training and not model.encoder.training  # a frozen encoder: no dropout
    model.encoder.requires_grad_(True)
    assert model.train().encoder.training


def test_a_batch_without_codes_raises():
    model, _ = model_of("behrt")
    with pytest.raises(ValueError, match="codes"):
        model({"visit_ids": torch.ones(1, 2, dtype=torch.long)})
