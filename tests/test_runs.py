"""Protocol runs: one fresh model per seed, curves in frame order, costs recorded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ehrseq.data.task import TaskConfig, prepare_survival_task
from ehrseq.models import BehrtConfig, BehrtEncoder, BinHazardHead, SurvivalModel
from ehrseq.runs import SeedRuns, hazard_nll_step, predict_survival, train_seeds
from ehrseq.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def task():
    return prepare_survival_task(TaskConfig(n_patients=400, seed=5, n_bins=6))


def tiny_survival(task) -> SurvivalModel:
    """A one-layer BEHRT whose last-visit state feeds a per-bin hazard head."""
    cfg = BehrtConfig.from_vocab(task.vocab, d_model=16, n_layers=1, n_heads=2, d_ff=32)
    return SurvivalModel(BehrtEncoder(cfg), BinHazardHead(16, task.config.n_bins))


def recording_factory(task):
    """A model factory for train_seeds that keeps every model it makes, in order."""
    made = []

    def make():
        made.append(tiny_survival(task))
        return made[-1]

    return made, make


def test_step_is_the_hazard_likelihood(task):
    """The step's loss is the mean over patients of the discrete-time likelihood, written out
    from its definition: survive every bin before the label bin, then the event or not."""
    torch.manual_seed(0)
    model = tiny_survival(task).eval()  # no dropout: two forward passes agree
    batch = next(iter(task.loader("train", 16)))
    hazards = model(batch).hazards.double()  # (B, T)
    per_patient = []
    for h, j, e in zip(hazards, batch["durations"].tolist(), batch["events"].tolist()):
        survived = torch.log1p(-h[:j]).sum()
        last = torch.log(h[j]) if e else torch.log1p(-h[j])
        per_patient.append(-(survived + last))
    expected = torch.stack(per_patient).mean()
    torch.testing.assert_close(hazard_nll_step(model, batch).double(), expected, rtol=1e-5, atol=0)


def test_predictions_follow_the_frame_order(task):
    torch.manual_seed(0)
    model = tiny_survival(task)
    surv = predict_survival(model, task, "val", hierarchical=False, batch_size=7)
    frame = task.frame("val")
    assert surv.shape == (len(frame), task.config.n_bins)
    # patient i of the frame, predicted alone, gives row i
    ds = task.dataset("val")
    where = {int(p): i for i, p in enumerate(ds.encoding.person_ids)}
    i = 3
    alone = model.eval()(ds.batch(np.array([where[int(frame["subject_id"].iloc[i])]]))).surv
    np.testing.assert_allclose(surv[i], alone[0].detach().numpy(), rtol=1e-5, atol=1e-6)


def test_train_seeds_trains_one_fresh_model_per_seed(task):
    made, make = recording_factory(task)
    runs = train_seeds(
        make,
        task,
        TrainConfig(epochs=2, lr=3e-3, patience=5),
        (0, 1),
        hierarchical=False,
        batch_size=32,
        name="tiny",
    )
    assert isinstance(runs, SeedRuns) and len(made) == 2 and made[0] is not made[1]
    assert runs.models == []  # only kept when asked
    assert len(runs.survs) == 2 and runs.survs[0].shape == (len(task.frame("test")), 6)
    assert not np.allclose(runs.survs[0], runs.survs[1])  # different seeds, different models
    assert runs.cost["parameters"] == sum(p.numel() for p in made[0].parameters())
    assert runs.cost["activations MiB"] > 0 and runs.cost["epochs"] == 2
    assert [len(h) for h in runs.histories] == [2, 2]
    assert runs.learned() == all(
        h["train_loss"].iloc[-1] < h["train_loss"].iloc[0] for h in runs.histories
    )


def test_train_seeds_can_return_the_trained_models(task):
    made, make = recording_factory(task)
    runs = train_seeds(
        make,
        task,
        TrainConfig(epochs=1, lr=3e-3),
        (0,),
        hierarchical=False,
        batch_size=32,
        keep_models=True,
    )
    assert runs.models == made
    surv = predict_survival(runs.models[0], task, "test", hierarchical=False)
    np.testing.assert_allclose(surv, runs.survs[0], rtol=1e-6)
