r"""The BEHRT survival models of chapters 6b and 6c: one recipe, trained once.

Chapter 6b trains a small visit-causal BEHRT (:class:`~ehrseq.models.BehrtEncoder`) with
the per-bin hazard head (:class:`~ehrseq.models.BinHazardHead`, its bias started at the
life table of the training patients) on the shared survival task, once per seed, and
keeps each trained model as an artefact; chapter 6c loads them. What decides a model
besides the task and the seed is the :class:`BehrtSurvival` recipe (widths, dropout, the
training schedule); :func:`run_key` turns task, recipe and seed into the artefact's key
(:func:`ehrseq.artifacts.config_key`), so both chapters find the same weights from one
definition.

    recipe = behrt_survival()  # the active profile's recipe
    runs = fit_seeds(task, recipe)  # chapter 6b: train every seed ...
    save_seeds(task, recipe, dict(zip(recipe.seeds, runs.models)))  # ... and keep them
    model, loaded = load_or_fit_seed(task, recipe, seed=0)  # chapter 6c

Training is :func:`ehrseq.runs.train_seeds`, the protocol every modelling chapter shares
(the hazard NLL, early stopping on the validation loss, best weights restored).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from ehrseq.artifacts import load_or_train
from ehrseq.models import BehrtConfig, BehrtEncoder, BinHazardHead, SurvivalModel
from ehrseq.recipes import BehrtRecipe, recipe_for_profile
from ehrseq.runs import SeedRuns, train_seeds
from ehrseq.survival import life_table_hazards
from ehrseq.train import TrainConfig

__all__ = [
    "ARTEFACT",
    "BEHRT_SURVIVAL_PROFILES",
    "BehrtSurvival",
    "behrt_survival",
    "fit_seeds",
    "load_or_fit_seed",
    "new_model",
    "run_key",
    "save_seeds",
    "task_life_table",
]

ARTEFACT = "behrt-survival"


@dataclass(frozen=True)
class BehrtSurvival(BehrtRecipe):
    """Everything besides the task and the seed that decides a trained model of 6b.

    The defaults are the ``book`` profile; :data:`BEHRT_SURVIVAL_PROFILES` changes them
    for the others. The encoder's sizes (:class:`~ehrseq.recipes.BehrtRecipe`:
    ``d_model``, ``n_layers``, ``n_heads``, ``d_ff``, ``dropout``) and ``causal`` enter
    the key through :meth:`encoder_config`, the training fields through :meth:`recipe`;
    ``seeds`` says *which* runs there are.

    Attributes:
        seeds: training seeds (initialisation and batch order), one model each.
        causal: visit-causal attention in the encoder.
        batch_size: patients per training batch.
        epochs: at most this many passes (early stopping on the validation loss).
        patience: epochs without a better validation loss before stopping.
        lr: peak learning rate of AdamW.

    Raises:
        ValueError: on no seeds or sizes below 1.
    """

    seeds: tuple[int, ...] = (0, 1)
    causal: bool = True
    batch_size: int = 64
    epochs: int = 8
    patience: int = 2
    lr: float = 1e-3

    def sizes_to_check(self) -> tuple[str, ...]:
        return (*super().sizes_to_check(), "batch_size", "epochs")

    def encoder_config(self, task) -> BehrtConfig:
        """The encoder's config for ``task`` (its vocabulary and longest sequence)."""
        return BehrtConfig.from_vocab(
            task.vocab,
            **self.encoder_sizes(),
            max_len=task.config.max_len,
            causal=self.causal,
        )

    def train_config(self) -> TrainConfig:
        """The settings of :func:`~ehrseq.train.fit` shared by every seed."""
        return TrainConfig(
            epochs=self.epochs,
            lr=self.lr,
            patience=self.patience,
            progress=True,
        )

    def recipe(self, seed: int) -> dict:
        """The training part of a seed's key (the encoder's config is a part of its
        own)."""
        return {
            "head": "per-bin, life-table start",
            "epochs": self.epochs,
            "lr": self.lr,
            "patience": self.patience,
            "batch_size": self.batch_size,
            "seed": seed,
        }


#: The recipe per profile, as changes to the defaults (the ``book`` profile).
BEHRT_SURVIVAL_PROFILES: dict[str, dict] = {
    "smoke": {"epochs": 2, "seeds": (0,)},
    "full": {
        "d_model": 128,
        "n_layers": 4,
        "d_ff": 512,
        "batch_size": 256,
        "epochs": 30,
        "patience": 4,
        "seeds": (0, 1, 2, 3, 4),
    },
}


def behrt_survival(profile: str | None = None, **changes) -> BehrtSurvival:
    """Chapter 6b's recipe for ``profile``, with ``changes``.

    ``profile`` defaults to ``EHRSEQ_PROFILE``.
    Example: ``behrt_survival("smoke", causal=False)``.

    Raises:
        ValueError: on an unknown profile or a change that is not a field of
            :class:`BehrtSurvival`.
    """
    profiles = BEHRT_SURVIVAL_PROFILES
    return recipe_for_profile(BehrtSurvival, profiles, profile, **changes)


def task_life_table(task) -> np.ndarray:
    """The life-table hazards of ``task``'s training patients, where the head starts.

    Shapes:
        output: :math:`(K,)`, one hazard per bin of the task.
    """
    frame = task.frame("train")
    return life_table_hazards(
        frame["bin"].to_numpy(), frame["event"].to_numpy(), task.config.n_bins
    )


def new_model(
    task,
    recipe: BehrtSurvival,
    base_hazards: np.ndarray | None = None,
) -> SurvivalModel:
    """An untrained model of the recipe: the encoder, then the per-bin head.

    The encoder is built first: the order draws the initial weights from the global
    generator (seed it first, as :func:`~ehrseq.runs.train_seeds` does).

    Args:
        task: a :class:`~ehrseq.data.task.SurvivalTask` (vocabulary, length, bins).
        recipe: the recipe (:func:`behrt_survival`).
        base_hazards: the head's starting hazards per bin (None: the head's own start);
            the trained models start at :func:`task_life_table`.
    """
    encoder_cfg = recipe.encoder_config(task)
    encoder = BehrtEncoder(encoder_cfg)
    head = BinHazardHead(
        encoder_cfg.d_model,
        task.config.n_bins,
        dropout=recipe.dropout,
        base_hazards=base_hazards,
    )
    return SurvivalModel(encoder, head)


def run_key(task, recipe: BehrtSurvival, seed: int) -> tuple:
    """What decides a seed's weights: the parts of its artefact's key.

    ``(task config, encoder config, training recipe)``, in the order chapters 6b and 6c
    have always keyed by, so that artefacts saved before this module load still.
    """
    return (task.config, recipe.encoder_config(task), recipe.recipe(seed))


def fit_seeds(
    task,
    recipe: BehrtSurvival,
    seeds: tuple[int, ...] | None = None,
) -> SeedRuns:
    """Train one model per seed under the shared protocol
    (:func:`~ehrseq.runs.train_seeds`).

    Args:
        task: the survival task.
        recipe: the recipe (:func:`behrt_survival`).
        seeds: the seeds to train (default: ``recipe.seeds``).

    Returns:
        the :class:`~ehrseq.runs.SeedRuns`, with the trained models (on the training
        device).
    """
    life_table = task_life_table(task)
    return train_seeds(
        lambda: new_model(task, recipe, life_table),
        task,
        recipe.train_config(),
        recipe.seeds if seeds is None else seeds,
        hierarchical=False,
        batch_size=recipe.batch_size,
        name="BEHRT",
        keep_models=True,
    )


def save_seeds(task, recipe: BehrtSurvival, models: dict[int, nn.Module]) -> None:
    """Keep each seed's trained model as an artefact (one on disk is left as it is).

    Args:
        task: the task the models were trained on.
        recipe: their recipe.
        models: ``{seed: trained model}``, e.g. from :func:`fit_seeds`.
    """
    life_table = task_life_table(task)
    for seed, trained in models.items():

        def copy(model: nn.Module, folder, trained=trained) -> None:
            model.load_state_dict(trained.state_dict())

        model = new_model(task, recipe, life_table)  # draws weights, as chapter 6b did
        load_or_train(model, ARTEFACT, copy, *run_key(task, recipe, seed))


def load_or_fit_seed(
    task,
    recipe: BehrtSurvival,
    seed: int,
) -> tuple[SurvivalModel, bool]:
    """One seed's model: loaded if chapter 6b saved it, else trained as 6b trains it.

    Returns:
        ``(model, loaded)``: ``loaded`` is True when the weights came from disk.
    """
    life_table = task_life_table(task)

    def train(model: nn.Module, folder) -> None:
        run = fit_seeds(task, recipe, (seed,))
        model.load_state_dict(run.models[0].state_dict())

    model = new_model(task, recipe, life_table)
    return load_or_train(model, ARTEFACT, train, *run_key(task, recipe, seed))
