"""The leakage test passes a visit-causal encoder and catches a bidirectional one."""

from __future__ import annotations

import numpy as np
import torch

from ehrseq.data.task import TaskConfig, prepare_survival_task
from ehrseq.leakage import leakage_test, perturb_later_visits, truncate_after, visits_per_patient
from ehrseq.models import BehrtConfig, BehrtEncoder, VisitHazardHead


def test_causal_passes_bidirectional_fails():
    task = prepare_survival_task(TaskConfig(n_patients=300, seed=3, n_bins=5))
    test_set = task.dataset("test")
    n_visits = visits_per_patient(test_set)
    assert len(n_visits) == len(test_set) and n_visits.min() >= 1
    several = np.flatnonzero(n_visits >= 3)[:8]
    batch = test_set.batch(several)
    cut = batch["visit_ids"].max(dim=1).values // 2 + 1  # (B,)
    torch.manual_seed(0)
    cfg = BehrtConfig.from_vocab(task.vocab, d_model=16, n_layers=1, n_heads=2, d_ff=32)
    encoder, head = BehrtEncoder(cfg).eval(), VisitHazardHead(16).eval()
    changes = leakage_test(
        encoder, head, batch, cut, torch.Generator().manual_seed(0), len(task.vocab)
    )
    assert changes["visit-causal"].max() < 1e-6
    assert changes["bidirectional"].min() > 1e-5

    later = batch["visit_ids"] > cut[:, None]
    edited = perturb_later_visits(batch, cut, torch.Generator().manual_seed(1), len(task.vocab))
    assert torch.equal(edited["codes"][~later], batch["codes"][~later])
    assert not torch.equal(edited["codes"][later], batch["codes"][later])
    gone = truncate_after(batch, cut)
    assert not gone["attention_mask"][later].any()
    assert torch.equal(gone["attention_mask"][~later], batch["attention_mask"][~later])
