"""Pretrained encoders as artefacts: one recipe, trained once, loaded by every chapter.

A pretrained BEHRT is decided by three things: the task (which patients, which vocabulary),
the encoder config, and the :class:`PretrainRecipe` (schedule, epochs, learning rate, ...).
:func:`load_or_pretrain` keys the artefact by all three (:func:`ehrseq.artifacts.config_key`),
loads it when a chapter already trained it, and trains it otherwise, so chapter 5b trains the
schedules, and chapters 5c and 8 load the same weights.

    recipe = PretrainRecipe(schedule="joint", epochs=5)
    result = load_or_pretrain(task, encoder_cfg, recipe)
    encoder = result.model.encoder

Their evaluation tables are artefacts too: :func:`load_or_score_next_visit` (recall@k
and AP per next-visit pair, per model or history rule) and
:func:`load_or_rank_masked_codes` (the rank of every masked code, per model), so chapter
5b scores them and 5d loads them.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from ehrseq.artifacts import artifact_root, config_key, distributed_rank, load_or_train
from ehrseq.models import BehrtConfig, BehrtEncoder
from ehrseq.pretrain import BehrtForPretraining, TokenIds, pretrain
from ehrseq.runtime import seed_everything
from ehrseq.train import TrainConfig

if TYPE_CHECKING:
    from ehrseq.next_visit import HistoryRule

__all__ = [
    "BOOK_ENCODER",
    "BOOK_RECIPE",
    "PretrainRecipe",
    "Pretrained",
    "book_encoder_config",
    "book_recipe",
    "load_or_pretrain",
    "load_or_rank_masked_codes",
    "load_or_score_next_visit",
    "pretrained_model",
]

ARTEFACT = "behrt-pretrained"
SCORES = "next-visit-scores"  # one scorer's recall@k and AP per (patient, visit) pair
RANKS = "masked-code-ranks"  # one run's rank of the true code per masked position


@dataclass(frozen=True)
class PretrainRecipe:
    """Everything besides the task and the encoder config that decides pretrained weights.

    Attributes:
        schedule: ``"mlm"``, ``"next_visit"``, ``"joint"`` (both losses every step) or
            ``"sequential"`` (``epochs // 2`` of MLM, then next-visit prediction).
        head: the next-visit head: ``"linear"`` (tied to the code embedding when
            ``tie_weights``) or ``"copy"`` (:class:`~ehrseq.next_visit.HistoryCopyHead`,
            started at the training repeat rates).
        epochs: passes over the training patients (both phases together if sequential).
        lr: peak learning rate (warm-up, then cosine decay).
        batch_size: patients per step.
        mask_prob: share of real codes picked for masked-code modelling.
        mlm_weight: weight of the masked-code loss.
        next_visit_weight: weight of the next-visit loss; None: the vocabulary size, which
            turns the library's average over codes into a sum over codes.
        pool: how the next-visit head reads a visit (``"last"`` token or ``"mean"``).
        tie_weights: the linear next-visit head shares the code embedding.
        seed: initial weights and batch order.
    """

    schedule: Literal["mlm", "next_visit", "joint", "sequential"] = "joint"
    head: Literal["linear", "copy"] = "linear"
    epochs: int = 5
    lr: float = 5e-3
    batch_size: int = 32
    mask_prob: float = 0.15
    mlm_weight: float = 1.0
    next_visit_weight: float | None = None
    pool: str = "last"
    tie_weights: bool = True
    seed: int = 7

    def __post_init__(self) -> None:
        if self.schedule not in ("mlm", "next_visit", "joint", "sequential"):
            raise ValueError(f"PretrainRecipe: unknown schedule {self.schedule!r}")
        if self.head not in ("linear", "copy"):
            raise ValueError(f"PretrainRecipe: unknown head {self.head!r}")
        if self.epochs < 1 or (self.schedule == "sequential" and self.epochs < 2):
            raise ValueError(f"PretrainRecipe: epochs = {self.epochs} is too few")

    @property
    def mlm_epochs(self) -> int | None:
        """Epochs of the MLM phase of ``"sequential"`` (None for the other schedules)."""
        return self.epochs // 2 if self.schedule == "sequential" else None

    def resolved(self, vocab_size: int) -> PretrainRecipe:
        """The recipe with ``next_visit_weight`` filled in (what the artefact key holds)."""
        weight = vocab_size if self.next_visit_weight is None else self.next_visit_weight
        return dataclasses.replace(self, next_visit_weight=float(weight))  # 313 and 313.0: one key


#: The book's pretrained encoder per profile: its sizes (and initial scale: a small encoder
#: trained for a few hundred steps needs larger starting weights than BERT's 0.02, chapter
#: 5b says why). Chapter 5b trains it under every schedule; 5c and 8 load it.
BOOK_ENCODER: dict[str, dict] = {
    "smoke": dict(d_model=32, n_layers=2, n_heads=4, d_ff=64, dropout=0.1, init_std=0.1),
    "book": dict(d_model=64, n_layers=2, n_heads=4, d_ff=128, dropout=0.1, init_std=0.1),
    "full": dict(d_model=128, n_layers=4, n_heads=4, d_ff=512, dropout=0.1, init_std=0.02),
}

#: The book's pretraining recipe per profile (the ``joint`` schedule; chapter 5b varies it).
BOOK_RECIPE: dict[str, PretrainRecipe] = {
    "smoke": PretrainRecipe(schedule="joint", epochs=2, lr=5e-3, batch_size=32, seed=7),
    "book": PretrainRecipe(schedule="joint", epochs=5, lr=5e-3, batch_size=32, seed=7),
    "full": PretrainRecipe(schedule="joint", epochs=20, lr=1e-3, batch_size=32, seed=7),
}


def book_encoder_config(task, profile: str | None = None) -> BehrtConfig:
    """The book's pretrained encoder config for ``task`` (:data:`BOOK_ENCODER`)."""
    from ehrseq.config import current_profile

    sizes = BOOK_ENCODER[profile or current_profile()]
    return BehrtConfig.from_vocab(task.vocab, max_len=task.config.max_len, **sizes)


def book_recipe(profile: str | None = None, **changes) -> PretrainRecipe:
    """The book's recipe (:data:`BOOK_RECIPE`), with ``changes`` (e.g. ``schedule="mlm"``)."""
    from ehrseq.config import current_profile

    return dataclasses.replace(BOOK_RECIPE[profile or current_profile()], **changes)


@dataclass
class Pretrained:
    """What :func:`load_or_pretrain` returns."""

    model: BehrtForPretraining
    loaded: bool  # True when the weights came from disk
    folder: Path  # the artefact folder (weights, config.json, metrics.csv)
    history: pd.DataFrame  # per-epoch metrics, both phases of "sequential" counted on
    recipe: PretrainRecipe  # resolved (the next-visit weight filled in)


def pretrained_model(
    task,
    encoder_cfg: BehrtConfig,
    recipe: PretrainRecipe,
    init: Mapping[str, torch.Tensor] | None = None,
) -> BehrtForPretraining:
    """A fresh (untrained) model of the recipe, its weights drawn from ``recipe.seed``.

    Args:
        task: a :class:`~ehrseq.data.task.SurvivalTask` (its vocabulary; its training
            patients start the copy head).
        encoder_cfg: the encoder's config.
        recipe: the recipe (its head, weight tying, pooling and seed).
        init: encoder weights to start from instead (a :class:`BehrtEncoder` state dict,
            e.g. an earlier run's), the heads still drawn from the seed.

    Raises:
        ValueError: ``init`` does not fit the encoder (another vocabulary or other sizes).
    """
    ids = TokenIds.from_vocab(task.vocab)
    torch.manual_seed(recipe.seed)
    encoder = BehrtEncoder(encoder_cfg)
    head = None  # the linear next-visit head
    if recipe.head == "copy":
        from ehrseq.next_visit import HistoryCopyHead, repeat_rates

        head = HistoryCopyHead(encoder_cfg.d_model, ids, init_std=encoder_cfg.init_std)
        head.start_at_repeat_rates(*repeat_rates(task.loader("train", 256), ids))
    model = BehrtForPretraining(
        encoder, tie_weights=recipe.tie_weights, pool=recipe.pool, next_visit_head=head
    )
    if init is not None:
        try:
            model.encoder.load_state_dict(init)
        except RuntimeError as err:  # its first reason: a missing key or a size mismatch
            reasons = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
            raise ValueError(
                f"the init weights do not fit this encoder: {(reasons or [str(err)])[0]}"
            ) from None
    return model


def _state_key(state: Mapping[str, torch.Tensor]) -> str:
    """A hash of a state dict's names, shapes and values (the artefact key of ``init``)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu()
        t = t.float() if t.is_floating_point() else t  # bfloat16 has no numpy type
        h.update(f"{name}{tuple(t.shape)}".encode() + t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _history(folder: Path, recipe: PretrainRecipe) -> pd.DataFrame:
    phases = ("mlm", "next_visit") if recipe.schedule == "sequential" else (None,)
    parts = []
    for phase in phases:
        path = folder / phase / "metrics.csv" if phase else folder / "metrics.csv"
        parts.append(pd.read_csv(path).assign(phase=phase or recipe.schedule))
    history = pd.concat(parts, ignore_index=True)
    history["epoch"] = np.arange(1, len(history) + 1)  # sequential: counted across both phases
    return history


def load_or_pretrain(
    task,
    encoder_cfg: BehrtConfig,
    recipe: PretrainRecipe,
    *,
    device: str | torch.device | None = None,
    root: Path | None = None,
    init: Mapping[str, torch.Tensor] | None = None,
    resume: bool = False,
) -> Pretrained:
    """The pretrained model of ``(task, encoder_cfg, recipe)``: loaded if trained, else trained.

    Training uses the task's training patients, validates on its validation patients after
    every epoch (in batches of the training size, so the two losses compare), and writes the per-epoch metrics beside the weights (``metrics.csv``; for
    ``"sequential"`` one folder per phase).

    Args:
        task: a :class:`~ehrseq.data.task.SurvivalTask` (its histories, never its labels).
        encoder_cfg: the encoder's config (its ``init_std`` also starts the copy head).
        recipe: the recipe; its key includes the resolved next-visit weight.
        device: where to train (default: the library's choice).
        root: the folder that holds the artefact (default :func:`artifact_root`; ``ehrseq
            run`` keeps it in its output folder).
        init: encoder weights to start from (:func:`pretrained_model`); their hash joins
            the key.
        resume: an interrupted training continues from the ``last.pt`` it left in the
            artefact's folder (:class:`~ehrseq.train.TrainConfig`'s ``resume``); the folder
            is keyed by the same parts, so only the same training is continued.

    Raises:
        ValueError: ``init`` does not fit the encoder.
    """
    ids = TokenIds.from_vocab(task.vocab)
    recipe = recipe.resolved(ids.vocab_size)
    parts = (task.config, encoder_cfg, recipe)
    if init is not None:
        parts = (*parts, {"init": _state_key(init)})

    def train(model: BehrtForPretraining, folder: Path) -> None:
        seed_everything(recipe.seed)
        where = None if device is None else str(device)  # TrainConfig takes "cpu", "cuda:0"
        common = dict(
            lr=recipe.lr, seed=recipe.seed, desc=recipe.schedule, device=where, resume=resume
        )
        if recipe.schedule == "sequential":  # pretrain writes folder/mlm, folder/next_visit
            first = TrainConfig(epochs=recipe.mlm_epochs, out_dir=folder, **common)
            second = TrainConfig(epochs=recipe.epochs - recipe.mlm_epochs, out_dir=folder, **common)
        else:
            first, second = TrainConfig(epochs=recipe.epochs, out_dir=folder, **common), None
        pretrain(
            model,
            task.loader("train", recipe.batch_size),
            task.loader("val", recipe.batch_size),
            ids,
            first,
            schedule=recipe.schedule,
            mlm_weight=recipe.mlm_weight,
            next_visit_weight=recipe.next_visit_weight,
            next_visit_config=second,
            mask_prob=recipe.mask_prob,
        )

    model, loaded = load_or_train(
        pretrained_model(task, encoder_cfg, recipe, init), ARTEFACT, train, *parts, root=root
    )
    folder = (root or artifact_root()) / f"{ARTEFACT}-{config_key(*parts)}"
    # under torchrun only rank 0 keeps the artefact's files (load_or_train)
    main = distributed_rank()[0] == 0
    history = _history(folder, recipe) if main else pd.DataFrame()
    return Pretrained(model, loaded, folder, history, recipe)


# --------------------------------------------------------------------------------------
# Evaluation tables as artefacts: scored once, loaded by every chapter that reads them
# --------------------------------------------------------------------------------------
class _NoWeights(nn.Module):
    """The module :func:`~ehrseq.artifacts.load_or_train` keeps for a table: no weights
    (the table is a parquet file in the artefact's folder, written before its
    ``model.pt``)."""


def _device_type(device: str | torch.device) -> str:
    # the masks are drawn, and the sums taken, on the device: part of the key
    return torch.device(device).type


def _load_or_write_table(
    name: str, file: str, make, parts: tuple, root: Path | None
) -> pd.DataFrame:
    """The table of artefact ``name`` keyed by ``parts``: read, or made and written."""

    def write(_: nn.Module, folder: Path) -> None:
        make().to_parquet(folder / file)

    load_or_train(_NoWeights(), name, write, *parts, root=root)
    folder = (root or artifact_root()) / f"{name}-{config_key(*parts)}"
    return pd.read_parquet(folder / file)


def load_or_score_next_visit(
    task,
    split: str,
    scorers: Mapping[str, Pretrained | HistoryRule],
    *,
    batch_size: int,
    k: int = 10,
    device: str | torch.device = "cpu",
    root: Path | None = None,
) -> pd.DataFrame:
    """:func:`~ehrseq.next_visit.next_visit_table` of pretrained models and history
    rules on a split of ``task``, each scorer's columns an artefact: scored once, then
    loaded.

    A scorer's artefact is keyed by the task config, the split, ``batch_size``, ``k``,
    the device type, and the scorer: a pretrained model by its artefact
    (:func:`load_or_pretrain`: the task, encoder config and recipe), a rule by
    :meth:`~ehrseq.next_visit.HistoryRule.key` (its rule and the values of its inputs).
    Not its name: two chapters that name a scorer differently share it. The scorers not
    on disk are scored together, in one pass over ``task.loader(split, batch_size)``.

    Returns:
        the table :func:`~ehrseq.next_visit.next_visit_table` returns for ``scorers``,
        equal to it value for value.

    Raises:
        ValueError: no scorers, a scorer that is neither, or tables of different pairs.
    """
    from ehrseq.next_visit import HistoryRule, model_scorer, next_visit_table

    if not scorers:
        raise ValueError("pass at least one scorer")
    specs = {}
    for name, scorer in scorers.items():
        if isinstance(scorer, Pretrained):
            specs[name] = {"pretrained": scorer.folder.name}
        elif isinstance(scorer, HistoryRule):
            specs[name] = scorer.key()
        else:
            raise ValueError(f"scorer {name!r}: pass a Pretrained or a HistoryRule")
    common = {"split": split, "batch_size": batch_size, "k": k}
    common["device"] = _device_type(device)
    parts = {n: (task.config, {**common, "scorer": spec}) for n, spec in specs.items()}
    missing = [n for n in scorers if not _stored(root, SCORES, parts[n])]
    scored: dict[str, pd.DataFrame] = {}

    def as_scorer(scorer: Pretrained | HistoryRule):
        if isinstance(scorer, Pretrained):
            return model_scorer(scorer.model.to(device))
        return scorer

    def score(name: str) -> pd.DataFrame:
        if name not in scored:  # the missing ones at once (one history per batch)
            todo = dict.fromkeys(n for n in (*missing, name) if n not in scored)
            table = next_visit_table(
                {n: as_scorer(scorers[n]) for n in todo},
                task.loader(split, batch_size),
                TokenIds.from_vocab(task.vocab),
                k=k,
                device=device,
            )
            pairs = pd.DataFrame(
                {
                    "person_id": table.index.get_level_values("person_id").to_numpy(),
                    "visit": table.index.get_level_values("visit").to_numpy(),
                    "n_codes": table[("n_codes", "")].to_numpy(),
                }
            )
            for n in todo:
                scored[n] = pairs.assign(
                    recall=table[(f"recall@{k}", n)].to_numpy(),
                    ap=table[("ap", n)].to_numpy(),
                )
        return scored[name]

    frames = {}
    for n in scorers:
        make = functools.partial(score, n)
        frames[n] = _load_or_write_table(SCORES, "scores.parquet", make, parts[n], root)
    first = next(iter(frames.values()))
    columns = {
        ("person_id", ""): first["person_id"].to_numpy(),
        ("visit", ""): first["visit"].to_numpy(),
        ("n_codes", ""): first["n_codes"].to_numpy(),
    }
    pair_columns = ["person_id", "visit", "n_codes"]
    for name, frame in frames.items():
        if not frame[pair_columns].equals(first[pair_columns]):
            raise ValueError(f"scorer {name!r}: scored on other pairs than the first")
        columns[(f"recall@{k}", name)] = frame["recall"].to_numpy()
        columns[("ap", name)] = frame["ap"].to_numpy()
    table = pd.DataFrame(columns)  # as next_visit_table builds it
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    table = table.set_index([("person_id", ""), ("visit", "")])
    return table.rename_axis(["person_id", "visit"])


def load_or_rank_masked_codes(
    task,
    split: str,
    runs: Mapping[str, Pretrained],
    *,
    batch_size: int,
    seed: int = 0,
    device: str | torch.device = "cpu",
    root: Path | None = None,
) -> dict[str, pd.DataFrame]:
    """:func:`~ehrseq.pretrain.masked_code_ranks` of pretrained models on a split of
    ``task``, each an artefact: ranked once, then loaded.

    The masks come from a generator seeded with ``seed`` at every call, on the device
    (:func:`~ehrseq.pretrain.masked_code_ranks`), so a run's ranks are decided by its
    artefact (:func:`load_or_pretrain`), the task config, the split, ``batch_size``,
    ``seed`` and the device type: the key. Every run gets the same masks.

    Returns:
        per run, the frame :func:`~ehrseq.pretrain.masked_code_ranks` returns, equal to
        it value for value.
    """
    from ehrseq.pretrain import masked_code_ranks

    ids = TokenIds.from_vocab(task.vocab)
    common = {"split": split, "batch_size": batch_size, "seed": seed}
    ranks = {}
    for name, run in runs.items():
        if not isinstance(run, Pretrained):
            raise ValueError(f"run {name!r}: pass a Pretrained (load_or_pretrain)")
        parts = (
            task.config,
            {**common, "device": _device_type(device), "pretrained": run.folder.name},
        )

        def rank(run: Pretrained = run) -> pd.DataFrame:
            loader = task.loader(split, batch_size)
            return masked_code_ranks(run.model.to(device), loader, ids, seed=seed)

        ranks[name] = _load_or_write_table(RANKS, "ranks.parquet", rank, parts, root)
    return ranks


def _stored(root: Path | None, name: str, parts: tuple) -> bool:
    folder = (root or artifact_root()) / f"{name}-{config_key(*parts)}"
    return (folder / "model.pt").is_file()
