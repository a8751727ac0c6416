"""What the recipes of trained BEHRT encoders share: checks, encoder sizes, profiles."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from ehrseq.models import BehrtConfig
from ehrseq.recipes import BehrtRecipe, recipe_for_profile


@dataclass(frozen=True)
class _Recipe(BehrtRecipe):
    epochs: int = 3
    patients: int | None = None

    def sizes_to_check(self) -> tuple[str, ...]:
        return (*super().sizes_to_check(), "epochs", "patients")


def test_seeds_are_a_tuple_of_ints():
    recipe = BehrtRecipe(seeds=[0, 2.0])
    assert recipe.seeds == (0, 2) and all(type(s) is int for s in recipe.seeds)
    assert BehrtRecipe(seeds=[1]) == BehrtRecipe(seeds=(1,))  # one recipe, one key


def test_encoder_sizes_are_fields_of_the_behrt_config():
    recipe = BehrtRecipe(d_model=16, n_layers=3, n_heads=2, d_ff=8, dropout=0.2)
    sizes = recipe.encoder_sizes()
    expected = {"d_model": 16, "n_layers": 3, "n_heads": 2, "d_ff": 8, "dropout": 0.2}
    assert sizes == expected
    cfg = BehrtConfig(vocab_size=10, pad_id=0, **sizes)
    assert all(getattr(cfg, k) == v for k, v in sizes.items())


def test_checks_name_the_recipe_and_the_field():
    with pytest.raises(ValueError, match="BehrtRecipe: seeds is empty"):
        BehrtRecipe(seeds=())
    for name in ("d_model", "n_layers", "n_heads", "d_ff"):
        with pytest.raises(ValueError, match=f"BehrtRecipe: {name} = 0 must be >= 1"):
            BehrtRecipe(**{name: 0})
    with pytest.raises(ValueError, match="_Recipe: epochs = 0"):
        _Recipe(epochs=0)
    with pytest.raises(ValueError, match="_Recipe: patients = -1"):
        _Recipe(patients=-1)
    assert _Recipe(patients=None).patients is None  # None passes a size check


def test_recipe_for_profile(monkeypatch):
    profiles = {"smoke": {"epochs": 1, "seeds": (0,)}, "full": {"d_model": 128}}
    assert recipe_for_profile(_Recipe, profiles, "book") == _Recipe()
    smoke = recipe_for_profile(_Recipe, profiles, "smoke", d_ff=32)
    assert (smoke.epochs, smoke.seeds, smoke.d_ff) == (1, (0,), 32)
    monkeypatch.setenv("EHRSEQ_PROFILE", "full")
    assert recipe_for_profile(_Recipe, profiles).d_model == 128
    with pytest.raises(ValueError, match=r"_Recipe has no fields \['width'\]"):
        recipe_for_profile(_Recipe, profiles, "smoke", width=3)
    with pytest.raises(ValueError, match="profile"):
        recipe_for_profile(_Recipe, profiles, "huge")
    with pytest.raises(ValueError, match="epochs"):  # a change is checked like a field
        recipe_for_profile(_Recipe, profiles, "smoke", epochs=0)
    fields = {f.name for f in dataclasses.fields(_Recipe)}
    assert fields >= set(BehrtRecipe().encoder_sizes())
