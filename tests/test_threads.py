"""Results do not depend on the CPU thread count beyond float noise.

The book executes chapters in parallel kernels of one thread each (scripts/execute_chapters.py)
or one kernel with every core; both must print the same figures. Training a small survival
model for a few steps with 1 and with 2 threads gives the same curves to float tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ehrseq.data.task import TaskConfig, prepare_survival_task
from ehrseq.models import BehrtConfig, BehrtEncoder, BinHazardHead, SurvivalModel
from ehrseq.runs import hazard_nll_step, predict_survival
from ehrseq.survival import life_table_hazards


@pytest.fixture(scope="module")
def task():
    return prepare_survival_task(TaskConfig(n_patients=300, seed=4, n_bins=5))


def _train_and_predict(task, threads: int) -> np.ndarray:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        cfg = BehrtConfig.from_vocab(task.vocab, d_model=32, n_layers=2, n_heads=2, d_ff=64)
        train = task.frame("train")
        base = life_table_hazards(train["bin"].to_numpy(), train["event"].to_numpy(), 5)
        model = SurvivalModel(BehrtEncoder(cfg), BinHazardHead(32, 5, base_hazards=base))
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for batch in task.loader("train", 32, seed=0):
            opt.zero_grad()
            hazard_nll_step(model, batch).backward()
            opt.step()
        return predict_survival(model, task, "test", hierarchical=False, device="cpu")
    finally:
        torch.set_num_threads(before)


def test_one_and_two_threads_give_the_same_curves(task):
    one = _train_and_predict(task, 1)
    two = _train_and_predict(task, 2)
    assert one.shape == (len(task.frame("test")), 5)
    np.testing.assert_allclose(one, two, rtol=0, atol=1e-5)
    assert np.ptp(one[:, -1]) > 1e-3  # the model did learn something patient-specific
