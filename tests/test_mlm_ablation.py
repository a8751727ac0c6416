"""The embedding ablation of chapters 4b and 4c: recipe, key, runs and baselines."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from recipe_runs import assert_profiles_apply, assert_same_weights, small_task
from torch.utils.data import DataLoader, Subset

from ehrseq.artifacts import config_key
from ehrseq.data.tensors import LengthBucketSampler, collate_flat
from ehrseq.mlm_ablation import (
    MLM_ABLATION_PROFILES,
    VARIANTS,
    MlmAblation,
    frequency_baseline_scores,
    frequency_priors,
    load_or_pretrain,
    mlm_ablation,
    pretrain_loader,
    run_key,
)
from ehrseq.models import BehrtConfig, BehrtEncoder
from ehrseq.pretrain import (
    IGNORE_INDEX,
    BehrtForPretraining,
    TokenIds,
    code_counts,
    evaluate_masked_codes,
    mask_codes,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def task():
    return small_task()


def _tiny(**changes) -> MlmAblation:
    sizes = {"d_model": 8, "n_layers": 1, "n_heads": 2, "d_ff": 16, "epochs": 1}
    sizes |= {"pretrain_patients": 60, "batch_size": 16}
    return MlmAblation(**{**sizes, **changes})


def test_profiles_override_the_book_recipe(monkeypatch):
    assert_profiles_apply(mlm_ablation, MlmAblation, MLM_ABLATION_PROFILES)
    assert mlm_ablation("smoke", epochs=2).epochs == 2
    monkeypatch.setenv("EHRSEQ_PROFILE", "full")
    assert mlm_ablation() == mlm_ablation("full")
    assert mlm_ablation().pretrain_patients is None


def test_key_is_the_one_chapter_4b_saved_under(task):
    """The parts chapters 4b and 4c built inline before the recipe moved here."""
    recipe = mlm_ablation("smoke")
    changes = VARIANTS["sinusoidal position"]
    encoder_cfg = BehrtConfig.from_vocab(
        task.vocab,
        d_model=32,
        n_layers=2,
        n_heads=4,
        d_ff=64,
        dropout=0.1,
        max_len=task.config.max_len,
        age_bin_years=1.0,
        n_time_bins=32,
        position_embedding="sinusoidal",
    )
    n_train = len(task.split["train"])
    inline = {"epochs": 1, "lr": 5e-3, "batch_size": 64, "seed": 1, "patients": n_train}
    parts = run_key(task, recipe, changes, 1)
    assert parts == (task.config, encoder_cfg, inline)
    assert config_key(*parts) == config_key(task.config, encoder_cfg, inline)


def test_key_depends_on_every_field_but_the_seeds_and_the_batch_order(task):
    recipe = _tiny()
    key = config_key(*run_key(task, recipe, {}, 0))
    changed = {
        "d_model": 16,
        "n_layers": 2,
        "n_heads": 4,
        "d_ff": 32,
        "dropout": 0.2,
        "age_bin_years": 2.0,
        "n_time_bins": 16,
        "batch_size": 32,
        "pretrain_patients": 50,
        "epochs": 2,
        "lr": 1e-3,
    }
    fields = {f.name for f in dataclasses.fields(MlmAblation)}
    # a new field must be added here
    assert set(changed) == fields - {"seeds", "batch_seed"}
    for name, value in changed.items():
        other = dataclasses.replace(recipe, **{name: value})
        assert config_key(*run_key(task, other, {}, 0)) != key, name
    assert config_key(*run_key(task, recipe, {}, 1)) != key  # the seed of the run
    keys = {config_key(*run_key(task, recipe, c, 0)) for c in VARIANTS.values()}
    assert len(keys) == len(VARIANTS) and key in keys  # one key per variant
    # not in the key: which runs there are, and (as 4b always keyed) the batch order
    for other in (_tiny(seeds=(0, 5)), _tiny(batch_seed=3)):
        assert config_key(*run_key(task, other, {}, 0)) == key


def test_pretrain_patients(task):
    n_train = len(task.split["train"])
    assert MlmAblation(pretrain_patients=None).n_patients(task) == n_train
    assert MlmAblation(pretrain_patients=10**6).n_patients(task) == n_train
    assert _tiny().n_patients(task) == 60
    loader = pretrain_loader(task, _tiny())
    seen = np.concatenate([batch for batch in loader.batch_sampler])
    assert sorted(seen.tolist()) == list(range(60))  # the first 60, each once


def test_loader_is_the_one_chapter_4b_built(task):
    recipe = _tiny()
    train_set = task.dataset("train")
    rows = np.arange(60)
    inline = DataLoader(
        Subset(train_set, rows),
        batch_sampler=LengthBucketSampler(
            train_set.lengths[rows], 16, shuffle=True, seed=recipe.batch_seed
        ),
        collate_fn=collate_flat,
    )
    for epoch in (0, 3):
        inline.batch_sampler.set_epoch(epoch)
        loader = pretrain_loader(task, recipe)
        loader.batch_sampler.set_epoch(epoch)
        ours = [b["codes"] for b in loader]
        theirs = [b["codes"] for b in inline]
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            assert torch.equal(a, b)


def test_trains_once_then_loads_and_4c_gets_4b_weights(task, tmp_path, monkeypatch):
    recipe = _tiny()
    changes = VARIANTS["no age"]
    monkeypatch.setenv("EHRSEQ_ARTIFACTS", str(tmp_path / "cold"))
    cold = load_or_pretrain(task, recipe, changes, 0, device="cpu")  # 4c run first
    assert not cold.loaded and (cold.folder / "metrics.csv").is_file()
    assert cold.folder.name.endswith(config_key(*run_key(task, recipe, changes, 0)))
    assert not cold.model.encoder.embeddings.cfg.use_age
    monkeypatch.setenv("EHRSEQ_ARTIFACTS", str(tmp_path / "after_4b"))
    loader = pretrain_loader(task, recipe)
    # chapter 4b, with its own loader
    first = load_or_pretrain(task, recipe, changes, 0, loader=loader, device="cpu")
    assert not first.loaded
    second = load_or_pretrain(task, recipe, changes, 0, device="cpu")  # 4c after 4b
    assert second.loaded and second.folder == first.folder
    assert_same_weights(first.model, second.model)
    assert_same_weights(first.model, cold.model)  # on the CPU, it repeats bit for bit
    other = load_or_pretrain(task, recipe, changes, 1, device="cpu")
    assert not other.loaded and other.folder != first.folder


def test_frequency_baselines(task):
    ids = TokenIds.from_vocab(task.vocab)
    recipe = _tiny(pretrain_patients=None)  # all training patients: every code's domain
    train = pretrain_loader(task, recipe)
    priors = frequency_priors(train, ids)
    torch.testing.assert_close(priors["counts"], code_counts(train, ids))
    log_prior, log_domain = priors["log_prior"], priors["log_prior_domain"]
    special = torch.isin(torch.arange(ids.vocab_size), ids.special_tensor())
    assert torch.isinf(log_prior[special]).all()
    assert torch.isfinite(log_prior[~special]).all()
    assert math.isclose(float(log_prior.exp().sum()), 1.0, rel_tol=1e-9)
    for row in log_domain.exp():  # one distribution per domain that any code carries
        assert row.isnan().all() or math.isclose(float(row.sum()), 1.0, rel_tol=1e-9)
    test_set = task.dataset("test")
    heldout = DataLoader(
        Subset(test_set, np.arange(40)),
        batch_sampler=LengthBucketSampler(test_set.lengths[:40], 16, shuffle=False),
        collate_fn=collate_flat,
    )
    scores = frequency_baseline_scores(heldout, ids, priors, device="cpu")
    # the positions and the prior's loss, by hand with the masks of the same seed
    gen = torch.Generator().manual_seed(0)
    picked = []
    for b in heldout:
        _, labels = mask_codes(b["codes"], b["attention_mask"], ids, generator=gen)
        picked.append(labels[labels != IGNORE_INDEX])
    labels = torch.cat(picked)  # (N,)
    assert scores["n"] == len(labels) > 0
    assert math.isclose(scores["prior"], float(-log_prior[labels].mean()), rel_tol=1e-9)
    assert 0 <= scores["domain_top1"] <= scores["domain_top10"] <= 1
    assert scores["domain"] < scores["prior"]  # knowing the domain sharpens the guess
    # the same positions every encoder is scored on
    model = BehrtForPretraining(BehrtEncoder(recipe.encoder_config(task)))
    masked = evaluate_masked_codes(model, heldout, ids, counts=priors["counts"])
    assert masked["n_masked"] == scores["n"]


def test_bad_recipe(task):
    with pytest.raises(ValueError, match="seeds"):
        MlmAblation(seeds=())
    with pytest.raises(ValueError, match="epochs"):
        MlmAblation(epochs=0)
    with pytest.raises(ValueError, match="pretrain_patients"):
        MlmAblation(pretrain_patients=0)
    with pytest.raises(ValueError, match="no fields"):
        mlm_ablation("smoke", width=3)
    with pytest.raises(ValueError, match="profile"):
        mlm_ablation("huge")
    with pytest.raises(ValueError):
        _tiny().encoder_config(task, {"position_embedding": "rotary"})
