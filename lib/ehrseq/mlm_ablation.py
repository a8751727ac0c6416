r"""The embedding ablation of chapters 4b and 4c: one pretraining recipe for both.

Chapter 4b pretrains small BEHRT encoders by masked-code modelling
(:func:`ehrseq.pretrain.pretrain`, ``schedule="mlm"``), one per variant of the input
layer (:data:`VARIANTS`: a term removed or changed) and seed, and keeps each as an
artefact; chapter 4c loads two of them to look inside their tables. What decides an
encoder besides the task, the variant and the seed is the :class:`MlmAblation` recipe;
:func:`run_key` turns them into the artefact's key
(:func:`ehrseq.artifacts.config_key`), so both chapters find the same weights from one
definition.

    recipe = mlm_ablation()  # the active profile's recipe
    loader = pretrain_loader(task, recipe)  # the first training patients
    run = load_or_pretrain(task, recipe, VARIANTS["no age"], seed=0, loader=loader)
    run.model  # a BehrtForPretraining, loaded or pretrained

Chapter 4b scores every encoder against two baselines that ignore the patient
(:func:`frequency_priors`, :func:`frequency_baseline_scores`): the most frequent
training codes, and the most frequent training codes of the hidden token's domain.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from ehrseq.artifacts import artifact_root, config_key, load_or_train
from ehrseq.data.tensors import LengthBucketSampler, collate_flat
from ehrseq.models import BehrtConfig, BehrtEncoder
from ehrseq.pretrain import (
    IGNORE_INDEX,
    BehrtForPretraining,
    TokenIds,
    code_counts,
    code_domains,
    mask_codes,
    pretrain,
)
from ehrseq.recipes import BehrtRecipe, recipe_for_profile
from ehrseq.runtime import get_device, seed_everything
from ehrseq.train import TrainConfig, to_device

__all__ = [
    "ARTEFACT",
    "MLM_ABLATION_PROFILES",
    "VARIANTS",
    "AblationRun",
    "MlmAblation",
    "frequency_baseline_scores",
    "frequency_priors",
    "load_or_pretrain",
    "mlm_ablation",
    "pretrain_loader",
    "run_key",
]

ARTEFACT = "behrt-mlm-ablation"

#: The variants of the input layer that chapter 4b pretrains: changes to the
#: :class:`~ehrseq.models.BehrtConfig` of the encoder with every embedding.
VARIANTS: dict[str, dict] = {
    "all embeddings": {},
    "no age": {"use_age": False},
    "no visit": {"visit_embedding": "none"},
    "no position": {"position_embedding": "none"},
    "no time (Δt)": {"time_embedding": "none"},
    "no domain": {"use_domain": False},
    "sinusoidal position": {"position_embedding": "sinusoidal"},
    "age bins of 5 years": {"age_bin_years": 5.0},
    "no visit, position or time": {
        "visit_embedding": "none",
        "position_embedding": "none",
        "time_embedding": "none",
    },
}


@dataclass(frozen=True)
class MlmAblation(BehrtRecipe):
    """Everything besides the task, the variant and the seed that decides an encoder.

    The defaults are the ``book`` profile; :data:`MLM_ABLATION_PROFILES` changes them
    for the others. The encoder's sizes (:class:`~ehrseq.recipes.BehrtRecipe`:
    ``d_model``, ``n_layers``, ``n_heads``, ``d_ff``, ``dropout``), ``age_bin_years``
    and ``n_time_bins`` enter the key through :meth:`encoder_config`, the training
    fields through :meth:`recipe`; ``seeds`` says *which* runs there are. ``batch_seed``
    decides the batch order but is not in the key (chapter 4b never keyed it; change it
    and clear the artefacts).

    Attributes:
        seeds: one pretraining run per seed and variant (initial weights, masks).
        age_bin_years: width :math:`w` of an age bin (BEHRT: one year).
        n_time_bins: log-spaced bins of the time since the previous event.
        batch_size: patients per pretraining batch.
        pretrain_patients: the first training patients of each run (None: all).
        epochs: pretraining epochs of each run.
        lr: peak learning rate (warm-up, then cosine decay).
        batch_seed: seed of the length-bucketed batch order.

    Raises:
        ValueError: on no seeds or sizes below 1.
    """

    seeds: tuple[int, ...] = (0, 1)
    age_bin_years: float = 1.0
    n_time_bins: int = 32
    batch_size: int = 64
    pretrain_patients: int | None = 2000
    epochs: int = 4
    lr: float = 5e-3
    batch_seed: int = 7

    def sizes_to_check(self) -> tuple[str, ...]:
        return (*super().sizes_to_check(), "batch_size", "epochs", "pretrain_patients")

    def encoder_config(self, task, changes: dict | None = None) -> BehrtConfig:
        """The encoder's config for ``task``, with a variant's ``changes``.

        Raises:
            ValueError: as :class:`~ehrseq.models.BehrtConfig`, on changes that do not
                fit.
        """
        base = dict(
            **self.encoder_sizes(),
            max_len=task.config.max_len,  # the longest sequence: the position rows
            age_bin_years=self.age_bin_years,
            n_time_bins=self.n_time_bins,
        )
        return BehrtConfig.from_vocab(task.vocab, **{**base, **(changes or {})})

    def n_patients(self, task) -> int:
        """How many training patients each run pretrains on (the first of the split)."""
        n = len(task.split["train"])
        return n if self.pretrain_patients is None else min(self.pretrain_patients, n)

    def recipe(self, task, seed: int) -> dict:
        """The training part of a run's key (the encoder's config is a part of its
        own)."""
        return {
            "epochs": self.epochs,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "seed": seed,
            # the training subset is part of what the weights depend on
            "patients": self.n_patients(task),
        }


#: The recipe per profile, as changes to the defaults (the ``book`` profile).
MLM_ABLATION_PROFILES: dict[str, dict] = {
    "smoke": {"d_model": 32, "d_ff": 64, "epochs": 1, "seeds": (0, 1)},
    "full": {
        "d_model": 128,
        "n_layers": 4,
        "d_ff": 512,
        "epochs": 10,
        "lr": 5e-4,
        "seeds": (0, 1, 2, 3, 4),
        "pretrain_patients": None,
    },
}


def mlm_ablation(profile: str | None = None, **changes) -> MlmAblation:
    """Chapter 4b's recipe for ``profile``, with ``changes``.

    ``profile`` defaults to ``EHRSEQ_PROFILE``.
    Example: ``mlm_ablation("smoke", epochs=2)``.

    Raises:
        ValueError: on an unknown profile or a change that is not a field of
            :class:`MlmAblation`.
    """
    return recipe_for_profile(MlmAblation, MLM_ABLATION_PROFILES, profile, **changes)


def pretrain_loader(task, recipe: MlmAblation) -> DataLoader:
    """The pretraining batches: the first training patients, length-bucketed, shuffled.

    The order depends on ``recipe.batch_seed`` and the epoch only
    (:class:`~ehrseq.data.tensors.LengthBucketSampler`), so one loader serves every run.
    """
    train_set = task.dataset("train")
    rows = np.arange(recipe.n_patients(task))
    sampler = LengthBucketSampler(
        train_set.lengths[rows], recipe.batch_size, shuffle=True, seed=recipe.batch_seed
    )
    subset = Subset(train_set, rows)
    return DataLoader(subset, batch_sampler=sampler, collate_fn=collate_flat)


def run_key(task, recipe: MlmAblation, changes: dict, seed: int) -> tuple:
    """What decides a run's weights: the parts of its artefact's key.

    ``(task config, encoder config, training recipe)``, in the order chapters 4b and 4c
    have always keyed by, so that artefacts saved before this module load still.
    """
    encoder_cfg = recipe.encoder_config(task, changes)
    return (task.config, encoder_cfg, recipe.recipe(task, seed))


@dataclass
class AblationRun:
    """What :func:`load_or_pretrain` returns."""

    model: BehrtForPretraining  # the pretrained encoder and its heads, on ``device``
    loaded: bool  # True when the weights came from disk
    folder: Path  # the artefact folder (model.pt, config.json, metrics.csv)


def load_or_pretrain(
    task,
    recipe: MlmAblation,
    changes: dict,
    seed: int,
    *,
    loader: DataLoader | None = None,
    device: str | torch.device | None = None,
) -> AblationRun:
    """One encoder of the ablation: loaded if pretrained, else pretrained and saved.

    Seeds everything with ``seed`` (the initial weights), builds
    ``BehrtForPretraining(BehrtEncoder(config))`` and pretrains it by masked-code
    modelling (:func:`~ehrseq.pretrain.pretrain`, ``schedule="mlm"``, no validation
    loader) when its artefact is not on disk; the per-epoch record is ``metrics.csv`` in
    the artefact folder.

    Args:
        task: a :class:`~ehrseq.data.task.SurvivalTask` (its config enters the key).
        recipe: the recipe (:func:`mlm_ablation`).
        changes: the variant, changes to the encoder's config (a value of
            :data:`VARIANTS`).
        seed: initial weights and masks.
        loader: the pretraining batches (default: :func:`pretrain_loader`).
        device: where to train and where the model is returned (default: the library's
            choice, :func:`ehrseq.get_device`).
    """
    device = get_device() if device is None else torch.device(device)
    model_cfg = recipe.encoder_config(task, changes)
    ids = TokenIds.from_vocab(task.vocab)

    def train(model: BehrtForPretraining, folder: Path) -> None:
        train_cfg = TrainConfig(
            epochs=recipe.epochs,
            lr=recipe.lr,
            seed=seed,
            out_dir=folder,
            desc="mlm",
            device=str(device),
        )
        batches = pretrain_loader(task, recipe) if loader is None else loader
        pretrain(model, batches, None, ids, train_cfg, schedule="mlm")

    seed_everything(seed)  # the initial weights
    parts = run_key(task, recipe, changes, seed)
    model = BehrtForPretraining(BehrtEncoder(model_cfg))
    model, loaded = load_or_train(model, ARTEFACT, train, *parts)
    folder = artifact_root() / f"{ARTEFACT}-{config_key(*parts)}"
    return AblationRun(model.to(device), loaded, folder)


def frequency_priors(loader, ids: TokenIds) -> dict[str, torch.Tensor]:
    r"""The code frequencies of ``loader`` and the two baselines' log-probabilities.

    With :math:`n_c` the count of code :math:`c` among the real tokens (0 for special
    ids) and add-one smoothing over the regular codes,

    .. math::
        \log p(c) = \log \frac{n_c + 1}{\sum_{c'} (n_{c'} + 1)}, \qquad
        \log p(c \mid o) = \log \frac{(n_c + 1)\,[o_c = o]}
        {\sum_{c'} (n_{c'} + 1)\,[o_{c'} = o]}

    where :math:`o_c` is the domain code :math:`c` carries
    (:func:`~ehrseq.pretrain.code_domains`).

    Args:
        loader: flat batches of the training patients.
        ids: the special ids.

    Returns:
        ``counts`` :math:`(V,)` (:func:`~ehrseq.pretrain.code_counts`), ``log_prior``
        :math:`(V,)` and ``log_prior_domain`` :math:`(O, V)`, one row per domain
        (:math:`-\infty` outside it).
    """
    counts = code_counts(loader, ids)  # (V,) training frequency of each code
    code_domain = code_domains(loader, ids.vocab_size)  # (V,) domain of each code
    special = torch.isin(torch.arange(ids.vocab_size), ids.special_tensor())
    smoothed = (counts + 1) * (~special)  # (V,), add-one, 0 on special ids
    log_prior = torch.log(smoothed / smoothed.sum())  # (V,)
    domains = torch.arange(int(code_domain.max()) + 1)  # (O,)
    same_domain = code_domain[None, :] == domains[:, None]  # (O, V)
    in_domain = smoothed * same_domain  # (O, V)
    log_prior_domain = torch.log(in_domain / in_domain.sum(1, keepdim=True))  # (O, V)
    return {
        "counts": counts,
        "log_prior": log_prior,
        "log_prior_domain": log_prior_domain,
    }


@torch.no_grad()
def frequency_baseline_scores(
    loader,
    ids: TokenIds,
    priors: dict[str, torch.Tensor],
    *,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Both frequency baselines on the masked positions of ``loader`` (no model needed).

    Draws the masks exactly as ``evaluate_masked_codes(..., seed=seed)`` does (a
    generator with that seed on the same device, the batches in the same order), so the
    baselines and every encoder are scored on the same positions.

    Args:
        loader: flat batches of the held-out patients (a fixed order).
        ids: the special ids.
        priors: :func:`frequency_priors` of the training patients.
        device: where the masks are drawn (default: :func:`ehrseq.get_device`).
        seed: the masks' seed.

    Returns:
        ``prior`` and ``domain``: the cross-entropy (nats per masked code) of the
        code- and the domain-frequency baseline; ``domain_top1``, ``domain_top10``: the
        latter's accuracies; ``n``: the masked positions.

    Raises:
        ValueError: if no position of ``loader`` is masked.
    """
    device = get_device() if device is None else torch.device(device)
    log_prior = priors["log_prior"].to(device)
    log_prior_domain = priors["log_prior_domain"].to(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    total = {"prior": 0.0, "domain": 0.0, "domain_top1": 0.0, "domain_top10": 0.0}
    n = 0
    for b in loader:
        b = to_device(b, device)
        _, labels = mask_codes(b["codes"], b["attention_mask"], ids, generator=gen)
        picked = labels != IGNORE_INDEX  # (B, L)
        y = labels[picked]  # (N,)
        guess = log_prior_domain[b["domain_ids"][picked]]  # (N, V)
        top = guess.topk(10, dim=-1).indices  # (N, 10)
        total["prior"] -= log_prior[y].sum().item()
        total["domain"] -= guess.gather(1, y[:, None]).sum().item()
        total["domain_top1"] += (top[:, 0] == y).sum().item()
        total["domain_top10"] += (top == y[:, None]).any(-1).sum().item()
        n += len(y)
    if n == 0:
        raise ValueError("frequency_baseline_scores: no position of loader was masked")
    return {**{k: v / n for k, v in total.items()}, "n": n}
