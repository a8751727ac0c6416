"""For the tests of the chapter recipes (ehrseq.behrt_survival, ehrseq.mlm_ablation): a
small survival task, the check that each profile applies its changes to the book recipe,
and the check that two models hold the very same weights."""

from __future__ import annotations

import dataclasses

import torch

from ehrseq.data.task import SurvivalTask, TaskConfig, prepare_survival_task


def small_task() -> SurvivalTask:
    """200 synthetic patients, 5 bins, built afresh (no cache)."""
    config = TaskConfig(n_patients=200, seed=5, n_bins=5)
    return prepare_survival_task(config, cache=False)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """The same parameters and buffers, in the same order, bit for bit."""
    assert list(a.state_dict()) == list(b.state_dict())
    for name, tensor in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], tensor, rtol=0, atol=0)


def assert_profiles_apply(make, cls, profiles: dict[str, dict]) -> None:
    """``make(profile)`` is ``cls()`` for ``book`` and ``cls`` with each profile's changes."""
    assert make("book") == cls()
    for profile, changes in profiles.items():
        recipe = make(profile)
        for field in dataclasses.fields(cls):
            expected = changes.get(field.name, field.default)
            assert getattr(recipe, field.name) == expected, (profile, field.name)
