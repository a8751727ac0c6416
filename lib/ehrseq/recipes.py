"""What the recipes of trained BEHRT encoders share: sizes, seeds, profiles.

A recipe is everything besides the task and the seed that decides a trained model which
one chapter trains and another loads as an artefact (:mod:`ehrseq.behrt_survival` for
chapters 6b and 6c, :mod:`ehrseq.mlm_ablation` for 4b and 4c). Each is a frozen
dataclass on :class:`BehrtRecipe`, whose defaults are the ``book`` profile and which
:func:`recipe_for_profile` builds for the active profile.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

from ehrseq.config import for_profile

__all__ = ["BehrtRecipe", "recipe_for_profile"]

R = TypeVar("R")


@dataclass(frozen=True)
class BehrtRecipe:
    """The BEHRT encoder's sizes and the training seeds of a recipe, checked.

    Attributes:
        d_model: width of the token states.
        n_layers: transformer blocks.
        n_heads: attention heads.
        d_ff: feed-forward hidden width.
        dropout: on the encoder's embeddings and residual branches (not attention: see
            :class:`~ehrseq.models.BehrtConfig`).
        seeds: one trained model per seed (initial weights, batch order or masks); they
            say *which* runs there are, so they are in no run's key.

    Raises:
        ValueError: on no seeds, or a size below 1 (those of :meth:`sizes_to_check`).
    """

    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 128
    dropout: float = 0.1
    seeds: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        name = type(self).__name__
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if not self.seeds:
            raise ValueError(f"{name}: seeds is empty")
        for field in self.sizes_to_check():
            value = getattr(self, field)
            if value is not None and value < 1:
                raise ValueError(f"{name}: {field} = {value} must be >= 1")

    def sizes_to_check(self) -> tuple[str, ...]:
        """The fields that must be at least 1 (None, where allowed, passes)."""
        return ("d_model", "n_layers", "n_heads", "d_ff")

    def encoder_sizes(self) -> dict[str, Any]:
        """The fields of :class:`~ehrseq.models.BehrtConfig` this recipe sets."""
        return {
            "d_model": self.d_model,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "d_ff": self.d_ff,
            "dropout": self.dropout,
        }


def recipe_for_profile(
    cls: type[R],
    profiles: dict[str, dict],
    profile: str | None = None,
    **changes,
) -> R:
    """``cls`` for ``profile`` (default: ``EHRSEQ_PROFILE``), then ``changes``.

    Args:
        cls: a frozen dataclass whose defaults are the ``book`` profile.
        profiles: per profile, the changes to those defaults
            (:func:`ehrseq.config.for_profile`).
        profile: force a profile instead of reading the environment.
        **changes: fields set after the profile's, e.g. ``seeds=(0, 1)``.

    Raises:
        ValueError: on an unknown profile or a change that is not a field of ``cls``.
    """
    unknown = set(changes) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {sorted(unknown)}")
    return dataclasses.replace(for_profile(cls, profiles, profile), **changes)
