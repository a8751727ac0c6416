r"""The survival-loss sweep of chapters 7b and 7c: one recipe, trained once, loaded by both.

Chapter 7b trains one fixed-feature network (:class:`~ehrseq.models.BagOfTokensSurvival` on
:func:`~ehrseq.baselines.token_count_features`) with each survival loss: the likelihood
(:math:`\lambda = 0`), DeepHit's hybrid :math:`\text{NLL} + \lambda \cdot \text{ranking}`
at every :math:`\lambda` of the sweep, and the ranking loss alone. Chapter 7c loads the same
networks. What decides a network besides the task is the :class:`LossSweep` (width,
dropout, schedule, batch size, ...), the loss and the seed; :func:`load_or_fit_bag` keys the
artefact by all of them (:func:`ehrseq.artifacts.config_key`), loads it when a chapter
already trained it and trains it otherwise, so both chapters get the same weights from one
definition.

    sweep = loss_sweep()  # the active profile's recipe
    data = token_count_features(task)
    for loss_name in sweep.losses():
        run = load_or_fit_bag(task, data, sweep, loss_name, seed=0)
        surv = predict_survival(run.model, data["test"][0])  # (n, T)

The architecture chapters train with :func:`ehrseq.runs.train_seeds`, which fixes the loss
to the hazard likelihood and reads sequence batches; this sweep varies the loss and reads
fixed features, so it calls :func:`ehrseq.train.fit` itself with :func:`survival_loss`.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ehrseq.artifacts import artifact_root, config_key, load_or_train
from ehrseq.config import for_profile
from ehrseq.losses import hazard_nll, hybrid_loss, pairwise_ranking_loss
from ehrseq.metrics import concordance_index
from ehrseq.models import BagOfTokensSurvival
from ehrseq.runtime import get_device, seed_everything
from ehrseq.survival import life_table_hazards
from ehrseq.train import TrainConfig, fit

__all__ = [
    "ARTEFACT",
    "LOSS_SWEEP_PROFILES",
    "LossSweep",
    "SweepRun",
    "load_or_fit_bag",
    "loss_sweep",
    "predict_survival",
    "survival_loss",
    "validation_metrics",
]

ARTEFACT = "bag-loss-sweep"


@dataclass(frozen=True)
class LossSweep:
    r"""Everything besides the task, the loss and the seed that decides a network of the sweep.

    The defaults are the ``book`` profile; :data:`LOSS_SWEEP_PROFILES` changes them for the
    others. Every field but ``seeds`` and ``rank_weights``, which say *which* runs there
    are, goes into the key of each run (``max_pair_patients`` as the validation batch it
    makes).

    Attributes:
        seeds: training seeds per loss (initial weights, dropout, batch order).
        rank_weights: the values of :math:`\lambda` in :math:`\text{NLL} + \lambda \cdot
            \text{ranking}`; 0 is the likelihood alone (stored as floats: 1 and 1.0 are one
            key).
        sigma: temperature of the ranking loss (DeepHit's and pycox's default 0.1).
        hidden: width of the patient state that the hazard head reads.
        dropout: on the hidden layer and in the head.
        epochs: at most; each run stops early on its own validation loss.
        patience: epochs without improvement before stopping (None: never early).
        batch_size: patients per step; the ranking loss compares pairs within a batch.
        lr: peak AdamW learning rate (warm-up, then cosine decay).
        weight_decay: AdamW decay on weight matrices.
        max_pair_patients: patients per ``(n, n)`` pair matrix: the validation batch.

    Raises:
        ValueError: on no seeds, no or negative ``rank_weights``, two weights with one loss
            name, ``sigma <= 0`` or sizes below 1.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    rank_weights: tuple[float, ...] = (0.0, 0.1, 0.5, 1.0, 5.0)
    sigma: float = 0.1
    hidden: int = 64
    dropout: float = 0.1
    epochs: int = 25
    patience: int | None = 3
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    max_pair_patients: int = 4000

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "rank_weights", tuple(float(w) for w in self.rank_weights))
        if not self.seeds:
            raise ValueError("LossSweep: seeds is empty")
        if not self.rank_weights or min(self.rank_weights) < 0:
            raise ValueError(f"LossSweep: rank_weights {self.rank_weights} must be >= 0")
        if len(self.losses()) != len(self.rank_weights) + 1:
            raise ValueError(f"LossSweep: rank_weights {self.rank_weights} repeat a loss name")
        if not self.sigma > 0:
            raise ValueError(f"LossSweep: sigma = {self.sigma} must be positive")
        for name in ("hidden", "epochs", "batch_size", "max_pair_patients"):
            if getattr(self, name) < 1:
                raise ValueError(f"LossSweep: {name} = {getattr(self, name)} must be >= 1")

    def losses(self) -> dict[str, float | None]:
        """``{loss name: rank weight}``: ``"NLL"`` (0), ``"NLL + 0.1 rank"``, ...,
        ``"rank only"`` (None, the ranking loss alone), in the order of ``rank_weights``."""
        names = {("NLL" if lam == 0 else f"NLL + {lam:g} rank"): lam for lam in self.rank_weights}
        return {**names, "rank only": None}

    def rank_weight(self, loss_name: str) -> float | None:
        r"""The :math:`\lambda` of ``loss_name`` (None for ``"rank only"``).

        Raises:
            ValueError: if the sweep has no loss of that name (the message lists them).
        """
        losses = self.losses()
        if loss_name not in losses:
            raise ValueError(f"unknown loss {loss_name!r}; this sweep has {list(losses)}")
        return losses[loss_name]

    def val_batch(self, n_val: int) -> int:
        """Validation patients per batch: all of them, up to ``max_pair_patients``."""
        return min(n_val, self.max_pair_patients)


#: The sweep per profile, as changes to the defaults (the ``book`` profile).
LOSS_SWEEP_PROFILES: dict[str, dict] = {
    "smoke": {"seeds": (0,), "rank_weights": (0.0, 1.0), "epochs": 3},
    "full": {
        "seeds": (0, 1, 2, 3, 4),
        "rank_weights": (0.0, 0.01, 0.1, 0.5, 1.0, 5.0),
        "hidden": 256,
        "epochs": 40,
        "batch_size": 1024,
    },
}


def loss_sweep(profile: str | None = None, **changes) -> LossSweep:
    """The book's sweep for ``profile`` (default: ``EHRSEQ_PROFILE``), with ``changes``.

    Example: ``loss_sweep("smoke", seeds=(0, 1))``.

    Raises:
        ValueError: on an unknown profile or a change that is not a field of
            :class:`LossSweep`.
    """
    unknown = set(changes) - {f.name for f in dataclasses.fields(LossSweep)}
    if unknown:
        raise ValueError(f"LossSweep has no fields {sorted(unknown)}")
    return dataclasses.replace(for_profile(LossSweep, LOSS_SWEEP_PROFILES, profile), **changes)


def survival_loss(
    out, durations: torch.Tensor, events: torch.Tensor, rank_weight: float | None, sigma: float
) -> torch.Tensor:
    r"""The loss of one run of the sweep: the hybrid, or the ranking loss alone.

    .. math::
        \mathcal{L}_\lambda = \text{NLL}(x; j, e) + \lambda\,
        \mathcal{L}_{\text{rank}}(F; j, e), \qquad
        \mathcal{L}_{\text{None}} = \mathcal{L}_{\text{rank}}(F; j, e), \qquad
        F_i(t_k) = 1 - S_i(t_k)

    with :func:`~ehrseq.losses.hazard_nll`, :func:`~ehrseq.losses.pairwise_ranking_loss`
    (exponential penalty, temperature :math:`\sigma`) and their sum
    :func:`~ehrseq.losses.hybrid_loss`; :math:`\lambda = 0` is the likelihood alone.

    Args:
        out: the model's output, with ``logits`` and ``surv``
            (:class:`~ehrseq.models.HazardOutput`).
        durations: bin index of each patient's event or censoring.
        events: 1 = event in that bin, 0 = censored in it.
        rank_weight: :math:`\lambda \ge 0`, or None for the ranking loss alone.
        sigma: temperature of the ranking loss.

    Shapes:
        - out.logits, out.surv: :math:`(B, T)`; durations, events: :math:`(B,)`
        - output: scalar

    Raises:
        ValueError: as the library losses (shapes, labels, a negative ``rank_weight``).

    References:
        Lee, C., Zame, W. R., Yoon, J., van der Schaar, M. (2018). DeepHit: a deep learning
        approach to survival analysis with competing risks. *AAAI* 32(1).
    """
    if rank_weight is None:
        return pairwise_ranking_loss(1 - out.surv, durations, events, sigma=sigma)
    return hybrid_loss(out.logits, durations, events, rank_weight=rank_weight, sigma=sigma)


@torch.no_grad()
def validation_metrics(model: nn.Module, loader: DataLoader, sigma: float) -> dict[str, float]:
    """NLL, ranking loss and Harrell's C of the horizon risk, over all of ``loader``.

    The ``eval_fn`` of :func:`~ehrseq.train.fit` in the sweep (which prefixes the names
    with ``val_``): ``nll`` is the mean :func:`~ehrseq.losses.hazard_nll` per patient,
    ``rank`` the mean over batches of :func:`~ehrseq.losses.pairwise_ranking_loss` on
    :math:`1 - S` (pairs within a batch), ``c_index`` Harrell's C
    (:func:`~ehrseq.metrics.concordance_index`) of the predicted risk by the horizon,
    :math:`1 - S(t_T)`, on all patients together. Batches go to the model's device.

    Args:
        model: returns ``logits`` and ``surv`` for a batch of features.
        loader: batches ``(x, durations, events)``.
        sigma: temperature of the ranking loss.

    Shapes:
        x: :math:`(B, F)`; durations, events: :math:`(B,)`.
    """
    device = next(model.parameters()).device
    nll, rank, risk, durations, events = [], [], [], [], []
    for x, d, e in loader:  # one batch unless the split is large
        x, d, e = x.to(device), d.to(device), e.to(device)
        out = model(x)
        nll.append(hazard_nll(out.logits, d, e, reduction="sum"))
        rank.append(pairwise_ranking_loss(1 - out.surv, d, e, sigma=sigma))
        risk.append(1 - out.surv[:, -1])  # (B,), predicted risk by the horizon
        durations.append(d)
        events.append(e)
    d, e, r = (torch.cat(t).cpu().numpy() for t in (durations, events, risk))
    return {
        "nll": float(sum(nll)) / len(d),
        "rank": float(torch.stack(rank).mean()),
        "c_index": concordance_index(d, r, e),
    }


@torch.no_grad()
def predict_survival(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Predicted survival at the end of every bin, float64 for the metrics (eval mode).

    Shapes:
        x: :math:`(n, F)` on any device (moved to the model's); output :math:`(n, T)`.
    """
    model.eval()
    device = next(model.parameters()).device
    return model(x.to(device)).surv.double().cpu().numpy()


@dataclass
class SweepRun:
    """What :func:`load_or_fit_bag` returns."""

    model: BagOfTokensSurvival  # the kept weights (best own validation loss), on ``device``
    history: pd.DataFrame  # per-epoch record of fit: train_loss, val_loss, val_nll, ...
    loaded: bool  # True when the weights came from disk
    folder: Path  # the artefact folder (model.pt, config.json, metrics.csv)
    recipe: dict  # the run's part of the key (besides the task config)


def _check_data(data: dict) -> int:
    for split in ("train", "val"):
        if split not in data or len(data[split]) != 3:
            raise ValueError(
                f"data must hold (x, durations, events) for {split!r} "
                f"(token_count_features(task)); got splits {sorted(data)}"
            )
    x_train, x_val = data["train"][0], data["val"][0]
    if x_train.ndim != 2 or x_val.ndim != 2 or x_val.shape[1] != x_train.shape[1]:
        shapes = tuple(x_train.shape), tuple(x_val.shape)
        raise ValueError(f"features must be (n, F) in both splits, got {shapes}")
    return int(x_train.shape[1])


def load_or_fit_bag(
    task,
    data: dict,
    sweep: LossSweep,
    loss_name: str,
    seed: int,
    *,
    device: str | torch.device | None = None,
) -> SweepRun:
    """The network of one run of the sweep: loaded if trained, else trained and saved.

    The network is a :class:`~ehrseq.models.BagOfTokensSurvival` whose head starts at the
    life-table hazards of the training patients. Training is :func:`~ehrseq.train.fit` with
    :func:`survival_loss` of the run's loss (AdamW, warm-up and cosine decay, clipping,
    early stopping on the run's own validation loss, best weights kept), shuffled batches
    drawn from ``seed``, and :func:`validation_metrics` after every epoch; the per-epoch
    record is ``metrics.csv`` in the artefact folder. The key is the task's config and
    :attr:`SweepRun.recipe`: the width of the features, the fields of ``sweep`` that decide
    the weights, the validation batch, the rank weight and the seed.

    Args:
        task: a :class:`~ehrseq.data.task.SurvivalTask` (its config enters the key).
        data: :func:`~ehrseq.baselines.token_count_features` of ``task``: per split
            ``(x, durations, events)``, at least ``"train"`` and ``"val"``.
        sweep: the recipe (:func:`loss_sweep`).
        loss_name: a key of ``sweep.losses()``, e.g. ``"NLL"`` or ``"rank only"``.
        seed: initial weights, dropout and batch order.
        device: where to train and where the model is returned (default: the library's
            choice, :func:`ehrseq.get_device`).

    Shapes:
        ``data[split]``: ``(n, F)``, ``(n,)``, ``(n,)``.

    Raises:
        ValueError: on a loss the sweep does not have, or ``data`` without the training and
            validation features.
    """
    rank_weight = sweep.rank_weight(loss_name)
    n_features = _check_data(data)
    n_bins = task.config.n_bins
    val_loader = DataLoader(
        TensorDataset(*data["val"]), batch_size=sweep.val_batch(len(data["val"][0]))
    )
    fields = ("hidden", "dropout", "sigma", "epochs", "patience", "batch_size", "lr")
    recipe = {  # all that decides the weights besides the task: part of the artefact's key
        "n_features": n_features,
        **{k: getattr(sweep, k) for k in (*fields, "weight_decay")},
        "val_batch": val_loader.batch_size,  # the validation ranking loss pairs within it
        "rank_weight": rank_weight,
        "seed": seed,
    }

    def train(model: nn.Module, folder: Path) -> None:
        train_loader = DataLoader(
            TensorDataset(*data["train"]),
            batch_size=sweep.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
        )
        train_cfg = TrainConfig(
            epochs=sweep.epochs,
            lr=sweep.lr,
            weight_decay=sweep.weight_decay,
            patience=sweep.patience,
            seed=seed,
            out_dir=folder,  # metrics.csv: the per-epoch record
            desc=f"{loss_name}, seed {seed}",
            device=None if device is None else str(device),  # TrainConfig takes "cuda:0"
        )

        def step(model: nn.Module, batch) -> torch.Tensor:
            return survival_loss(model(batch[0]), *batch[1:], rank_weight, sweep.sigma)

        eval_fn = functools.partial(validation_metrics, sigma=sweep.sigma)
        fit(model, train_loader, val_loader, step, train_cfg, eval_fn=eval_fn)

    durations, events = data["train"][1], data["train"][2]
    life_table = torch.as_tensor(  # (T,), the life-table hazards of the training patients
        life_table_hazards(durations.numpy(), events.numpy(), n_bins), dtype=torch.float32
    )
    seed_everything(seed)  # the initial weights
    model = BagOfTokensSurvival(  # the head's bias starts at the life table
        n_features, sweep.hidden, n_bins, sweep.dropout, base_hazards=life_table
    )
    parts = (task.config, recipe)
    model, loaded = load_or_train(model, ARTEFACT, train, *parts)
    folder = artifact_root() / f"{ARTEFACT}-{config_key(*parts)}"
    model = model.to(get_device() if device is None else device)
    return SweepRun(model, pd.read_csv(folder / "metrics.csv"), loaded, folder, recipe)
