"""The loss sweep of chapters 7b and 7c: its recipe, its loss, and its runs as artefacts."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ehrseq.artifacts import config_key
from ehrseq.baselines import token_count_features
from ehrseq.data.task import TaskConfig, prepare_survival_task
from ehrseq.loss_sweep import (
    LOSS_SWEEP_PROFILES,
    LossSweep,
    load_or_fit_bag,
    loss_sweep,
    predict_survival,
    survival_loss,
    validation_metrics,
)
from ehrseq.losses import hazard_nll, hybrid_loss, pairwise_ranking_loss
from ehrseq.metrics import concordance_index
from ehrseq.models import BagOfTokensSurvival

pytestmark = pytest.mark.usefixtures("one_thread")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def task():
    return prepare_survival_task(TaskConfig(n_patients=200, seed=5, n_bins=5), cache=False)


@pytest.fixture(scope="module")
def data(task):
    return token_count_features(task)


def _tiny(**changes) -> LossSweep:
    return LossSweep(
        **{"seeds": (0,), "rank_weights": (0.0, 1.0), "hidden": 8, "epochs": 1, **changes}
    )


def test_profiles_override_the_book_recipe(monkeypatch):
    assert loss_sweep("book") == LossSweep()
    for profile, changes in LOSS_SWEEP_PROFILES.items():
        sweep = loss_sweep(profile)
        for field in dataclasses.fields(LossSweep):
            expected = changes.get(field.name, field.default)
            if field.name == "rank_weights":
                expected = tuple(float(w) for w in expected)
            assert getattr(sweep, field.name) == expected, (profile, field.name)
    smoke = loss_sweep("smoke")
    assert smoke.seeds == (0,) and smoke.epochs == 3
    assert list(smoke.losses()) == ["NLL", "NLL + 1 rank", "rank only"]
    assert smoke.losses() == {"NLL": 0.0, "NLL + 1 rank": 1.0, "rank only": None}
    assert loss_sweep("smoke", seeds=(0, 1)).seeds == (0, 1)
    monkeypatch.setenv("EHRSEQ_PROFILE", "full")
    assert loss_sweep() == loss_sweep("full")
    assert loss_sweep().hidden == 256 and "NLL + 0.01 rank" in loss_sweep().losses()
    # one key per value: weights are floats, so 1 and 1.0 give the same loss and recipe
    assert LossSweep(rank_weights=(0, 1)) == LossSweep(rank_weights=(0.0, 1.0))


@pytest.mark.parametrize("device", DEVICES)
def test_loss_is_the_library_losses_it_combines(device):
    torch.manual_seed(0)
    model = BagOfTokensSurvival(6, 8, 4, dropout=0.0).to(device).eval()
    out = model(torch.randn(12, 6, device=device))  # logits, surv: (12, 4)
    d = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0, 1, 2, 3, 0], device=device)
    e = torch.tensor([1, 0, 1, 1, 0, 0, 1, 1, 0, 1, 0, 0], device=device)
    nll = hazard_nll(out.logits, d, e)
    rank = pairwise_ranking_loss(1 - out.surv, d, e, sigma=0.2)
    torch.testing.assert_close(survival_loss(out, d, e, 0.0, 0.2), nll)
    torch.testing.assert_close(survival_loss(out, d, e, None, 0.2), rank)
    hybrid = survival_loss(out, d, e, 0.5, 0.2)
    torch.testing.assert_close(hybrid, nll + 0.5 * rank)
    torch.testing.assert_close(hybrid, hybrid_loss(out.logits, d, e, rank_weight=0.5, sigma=0.2))
    assert rank > 0 and hybrid > nll  # the batch has comparable pairs


def test_validation_metrics_over_batches():
    torch.manual_seed(1)
    model = BagOfTokensSurvival(5, 8, 4, dropout=0.0).eval()
    x = torch.randn(30, 5)
    d, e = torch.randint(0, 4, (30,)), torch.randint(0, 2, (30,))
    whole = validation_metrics(model, DataLoader(TensorDataset(x, d, e), batch_size=30), 0.1)
    halves = validation_metrics(model, DataLoader(TensorDataset(x, d, e), batch_size=15), 0.1)
    with torch.no_grad():
        out = model(x)
    assert whole["nll"] == pytest.approx(float(hazard_nll(out.logits, d, e)), rel=1e-6)
    assert halves["nll"] == pytest.approx(whole["nll"], rel=1e-6)  # a mean per patient
    risk = (1 - out.surv[:, -1]).numpy()
    assert whole["c_index"] == pytest.approx(concordance_index(d.numpy(), risk, e.numpy()))
    assert halves["c_index"] == pytest.approx(whole["c_index"])  # all patients together
    surv = predict_survival(model, x)
    assert surv.shape == (30, 4) and surv.dtype == "float64"


def test_trains_once_then_loads(task, data, tmp_path, monkeypatch):
    monkeypatch.setenv("EHRSEQ_ARTIFACTS", str(tmp_path))
    sweep = _tiny(batch_size=64)
    first = load_or_fit_bag(task, data, sweep, "NLL", 0, device="cpu")
    assert not first.loaded and (first.folder / "model.pt").is_file()
    assert first.folder.name == f"bag-loss-sweep-{config_key(task.config, first.recipe)}"
    assert list(first.history["epoch"]) == [1]
    assert {"val_nll", "val_rank", "val_c_index"} <= set(first.history.columns)
    assert first.recipe == {  # the run's key besides the task: chapters 7b and 7c share it
        "n_features": data["train"][0].shape[1],
        "hidden": 8,
        "dropout": 0.1,
        "sigma": 0.1,
        "epochs": 1,
        "patience": 3,
        "batch_size": 64,
        "lr": 1e-3,
        "weight_decay": 0.01,
        "val_batch": len(data["val"][0]),
        "rank_weight": 0.0,
        "seed": 0,
    }
    second = load_or_fit_bag(task, data, sweep, "NLL", 0, device=torch.device("cpu"))
    assert second.loaded and second.folder == first.folder
    for name, tensor in first.model.state_dict().items():
        torch.testing.assert_close(second.model.state_dict()[name], tensor, rtol=0, atol=0)
    x_test = data["test"][0]
    assert (predict_survival(second.model, x_test) == predict_survival(first.model, x_test)).all()
    # seeds and rank_weights choose the runs; they do not change a run's key
    same = load_or_fit_bag(task, data, _tiny(batch_size=64, seeds=(0, 3)), "NLL", 0)
    assert same.loaded and same.folder == first.folder
    other = load_or_fit_bag(task, data, sweep, "rank only", 0, device="cpu")
    assert not other.loaded and other.folder != first.folder
    assert other.recipe["rank_weight"] is None


def test_bad_input(task, data):
    sweep = _tiny()
    with pytest.raises(ValueError, match=r"unknown loss 'NLL \+ 5 rank'.*'rank only'"):
        load_or_fit_bag(task, data, sweep, "NLL + 5 rank", 0)
    with pytest.raises(ValueError, match="unknown loss"):
        sweep.rank_weight("nll")
    with pytest.raises(ValueError, match="'val'"):
        load_or_fit_bag(task, {"train": data["train"]}, sweep, "NLL", 0)
    with pytest.raises(ValueError, match="seeds"):
        LossSweep(seeds=())
    with pytest.raises(ValueError, match="rank_weights"):
        LossSweep(rank_weights=(0.0, -1.0))
    with pytest.raises(ValueError, match="repeat a loss name"):
        LossSweep(rank_weights=(1.0, 1))
    with pytest.raises(ValueError, match="sigma"):
        LossSweep(sigma=0.0)
    with pytest.raises(ValueError, match="epochs"):
        LossSweep(epochs=0)
    with pytest.raises(ValueError, match="no fields"):
        loss_sweep("smoke", width=3)
    with pytest.raises(ValueError, match="profile"):
        loss_sweep("huge")
