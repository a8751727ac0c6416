"""The BEHRT survival recipe of chapters 6b and 6c: its key, its model, its runs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from recipe_runs import assert_profiles_apply, assert_same_weights, small_task

from ehrseq.artifacts import config_key
from ehrseq.behrt_survival import (
    BEHRT_SURVIVAL_PROFILES,
    BehrtSurvival,
    behrt_survival,
    fit_seeds,
    load_or_fit_seed,
    new_model,
    run_key,
    save_seeds,
    task_life_table,
)
from ehrseq.models import BehrtConfig, BehrtEncoder
from ehrseq.runtime import seed_everything
from ehrseq.survival import life_table_hazards

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def task():
    return small_task()


def _tiny(**changes) -> BehrtSurvival:
    sizes = {"d_model": 8, "n_layers": 1, "n_heads": 2, "d_ff": 16, "epochs": 2}
    return BehrtSurvival(**{**sizes, "seeds": (0,), "batch_size": 32, **changes})


def test_profiles_override_the_book_recipe(monkeypatch):
    assert_profiles_apply(behrt_survival, BehrtSurvival, BEHRT_SURVIVAL_PROFILES)
    assert behrt_survival("smoke").seeds == (0,) and behrt_survival("smoke").epochs == 2
    assert behrt_survival("smoke", causal=False).causal is False
    monkeypatch.setenv("EHRSEQ_PROFILE", "full")
    assert behrt_survival() == behrt_survival("full")


def test_key_is_the_one_chapter_6b_saved_under(task):
    """The parts chapters 6b and 6c built inline before the recipe moved here."""
    recipe = behrt_survival("smoke")
    encoder_cfg = BehrtConfig.from_vocab(
        task.vocab,
        d_model=64,
        n_layers=2,
        n_heads=4,
        d_ff=128,
        dropout=0.1,
        max_len=task.config.max_len,
        causal=True,
    )
    inline = {
        "head": "per-bin, life-table start",
        "epochs": 2,
        "lr": 1e-3,
        "patience": 2,
        "batch_size": 64,
        "seed": 0,
    }
    parts = run_key(task, recipe, 0)
    assert parts == (task.config, encoder_cfg, inline)
    assert config_key(*parts) == config_key(task.config, encoder_cfg, inline)
    assert config_key(*run_key(task, recipe, 0)) == config_key(*parts)  # stable


def test_key_depends_on_every_field_but_the_seeds(task):
    recipe = _tiny()
    key = config_key(*run_key(task, recipe, 0))
    changed = {
        "d_model": 16,
        "n_layers": 2,
        "n_heads": 4,
        "d_ff": 32,
        "dropout": 0.2,
        "causal": False,
        "batch_size": 64,
        "epochs": 3,
        "patience": 5,
        "lr": 2e-3,
    }
    fields = {f.name for f in dataclasses.fields(BehrtSurvival)}
    assert set(changed) == fields - {"seeds"}  # a new field must be added here
    for name, value in changed.items():
        other = dataclasses.replace(recipe, **{name: value})
        assert config_key(*run_key(task, other, 0)) != key, name
    assert config_key(*run_key(task, recipe, 1)) != key  # the seed of the run
    # the seeds choose the runs; they do not change a run's key
    assert config_key(*run_key(task, _tiny(seeds=(0, 1, 2)), 0)) == key


def test_new_model_builds_the_encoder_first_and_starts_at_the_life_table(task):
    recipe = _tiny()
    frame = task.frame("train")
    life_table = task_life_table(task)
    expected = life_table_hazards(frame["bin"], frame["event"], task.config.n_bins)
    np.testing.assert_array_equal(life_table, expected)
    seed_everything(3)
    model = new_model(task, recipe, life_table)
    seed_everything(3)
    assert_same_weights(BehrtEncoder(recipe.encoder_config(task)), model.encoder)
    model.eval()
    states = torch.zeros(4, recipe.d_model)  # the head on zero states: its bias alone
    hazards = model.head(states).hazards  # (4, K)
    torch.testing.assert_close(
        hazards, torch.as_tensor(life_table, dtype=torch.float32).expand(4, -1)
    )


def test_6c_gets_the_weights_of_6b_loaded_or_trained(task, tmp_path, monkeypatch):
    recipe = _tiny()
    monkeypatch.setenv("EHRSEQ_ARTIFACTS", str(tmp_path / "cold"))
    cold, loaded = load_or_fit_seed(task, recipe, 0)  # 6c run first: trains as 6b does
    assert not loaded
    monkeypatch.setenv("EHRSEQ_ARTIFACTS", str(tmp_path / "after_6b"))
    runs = fit_seeds(task, recipe)  # chapter 6b
    assert len(runs.models) == 1 and runs.survs[0].shape[1] == task.config.n_bins
    trained = runs.models[0].cpu()
    save_seeds(task, recipe, {0: trained})
    warm, loaded = load_or_fit_seed(task, recipe, 0)  # 6c run after 6b: loads
    assert loaded
    assert_same_weights(trained, warm)
    assert_same_weights(trained, cold.cpu())  # on the CPU, training repeats bit for bit
    save_seeds(task, recipe, {0: new_model(task, recipe)})  # on disk: left as it is
    assert_same_weights(trained, load_or_fit_seed(task, recipe, 0)[0])


def test_bad_recipe():
    with pytest.raises(ValueError, match="seeds"):
        BehrtSurvival(seeds=())
    with pytest.raises(ValueError, match="d_model"):
        BehrtSurvival(d_model=0)
    with pytest.raises(ValueError, match="no fields"):
        behrt_survival("smoke", width=3)
    with pytest.raises(ValueError, match="profile"):
        behrt_survival("huge")
