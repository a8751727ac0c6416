"""Train and predict every neural model of a protocol the same way, one run per seed.

The architecture chapters compare models that differ only in their architecture: each model
is built fresh per seed, trained by :func:`ehrseq.train.fit` with the discrete-time hazard
likelihood (:func:`hazard_nll_step`) on the task's bin labels, and its survival curves for
the test patients are handed to :class:`ehrseq.evaluate.SurvivalProtocol`. What a run costs
(wall time, epochs, trainable parameters, activation memory of one batch) is recorded beside
the curves.

Models take a batch of :meth:`ehrseq.data.task.SurvivalTask.loader` (flat or hierarchical)
and return an object with ``logits`` and ``surv`` of shape ``(B, n_bins)``, such as
:class:`ehrseq.models.survival_head.HazardOutput`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from ehrseq.data.task import SurvivalTask
from ehrseq.data.tensors import collate_flat, collate_hierarchical
from ehrseq.losses import hazard_nll
from ehrseq.models.lora import count_parameters
from ehrseq.runtime import get_device, measure, saved_for_backward_mib, seed_everything
from ehrseq.train import TrainConfig, fit, to_device

__all__ = ["hazard_nll_step", "predict_survival", "probe_batch", "SeedRuns", "train_seeds"]


def hazard_nll_step(model: nn.Module, batch: dict) -> torch.Tensor:
    """The step function of :func:`~ehrseq.train.fit`: hazard NLL of the batch's bin labels."""
    out = model(batch)
    return hazard_nll(out.logits, batch["durations"], batch["events"])


@torch.no_grad()
def predict_survival(
    model: nn.Module,
    task: SurvivalTask,
    split: str = "test",
    *,
    hierarchical: bool,
    device: torch.device | str | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """Survival at the bin edges for every patient of ``split``, in the order of
    ``task.frame(split)`` (the loader batches by length, so its order differs).

    ``device`` defaults to where the model's parameters are (where ``fit`` left it).

    Shapes:
        output ``(n_patients, n_bins)``.
    """
    model.eval()
    if device is None:
        device = next(model.parameters()).device
    survs, person_ids = [], []
    for batch in task.loader(split, batch_size, hierarchical=hierarchical):
        survs.append(model(to_device(batch, device)).surv.float().cpu())
        person_ids.append(batch["person_ids"])
    order = pd.Index(torch.cat(person_ids).numpy()).get_indexer(task.frame(split)["subject_id"])
    if (order < 0).any():
        raise RuntimeError(f"{int((order < 0).sum())} {split} patients were not predicted")
    return torch.cat(survs).numpy()[order]


def probe_batch(task: SurvivalTask, size: int, *, hierarchical: bool) -> dict:
    """The first ``size`` training patients as one batch: where activation memory is measured,
    the same patients for a flat and a hierarchical model."""
    dataset = task.dataset("train")
    items = [dataset[i] for i in range(min(size, len(dataset)))]
    return collate_hierarchical(items) if hierarchical else collate_flat(items)


@dataclass
class SeedRuns:
    """What :func:`train_seeds` returns.

    Attributes:
        survs: one test survival matrix per seed, each ``(n_test, n_bins)``.
        cost: the mean over seeds of ``parameters`` (trainable), ``train s``, ``s / epoch``,
            ``peak MiB`` (:func:`~ehrseq.runtime.measure`), ``activations MiB``
            (:func:`~ehrseq.runtime.saved_for_backward_mib` on :func:`probe_batch`) and
            ``epochs``.
        histories: ``fit``'s per-epoch table of each seed.
        models: the trained model of each seed (only with ``keep_models=True``).
    """

    survs: list[np.ndarray]
    cost: dict[str, float]
    histories: list[pd.DataFrame] = field(default_factory=list)
    models: list[nn.Module] = field(default_factory=list)

    def learned(self) -> bool:
        """Every seed's training loss is finite and ended lower than it started."""
        return all(
            np.isfinite(h["train_loss"]).all()
            and h["train_loss"].iloc[-1] < h["train_loss"].iloc[0]
            for h in self.histories
        )


def train_seeds(
    make: Callable[[], nn.Module],
    task: SurvivalTask,
    config: TrainConfig,
    seeds: tuple[int, ...] | list[int],
    *,
    hierarchical: bool,
    batch_size: int,
    device: torch.device | str | None = None,
    name: str = "model",
    keep_models: bool = False,
) -> SeedRuns:
    """Build, train and predict one model per seed under the same protocol.

    For each seed: seed everything, ``make()`` a fresh model, ``fit`` it with
    :func:`hazard_nll_step` on shuffled training batches of ``batch_size`` (validation loss
    for early stopping), measure one :func:`probe_batch`'s activations, predict the test
    patients.

    Args:
        make: builds an untrained model (on the CPU; ``fit`` moves it).
        task: the survival task.
        config: ``fit`` settings shared by every seed; ``seed`` and ``desc`` are set per seed.
        seeds: one run per seed.
        hierarchical: feed hierarchical (visit x code) batches instead of flat ones.
        batch_size: training patients per batch (also the size of the probe batch).
        device: where the probe batch and the predictions run; ``None`` picks the device
            ``fit`` trains on (``config.device``, else :func:`ehrseq.get_device`).
        name: shown in the progress bar.
        keep_models: return the trained models too (``SeedRuns.models``), e.g. to predict
            the validation split.
    """
    device = get_device(config.device) if device is None else device
    survs, costs, histories, models = [], [], [], []
    probe = to_device(probe_batch(task, batch_size, hierarchical=hierarchical), device)
    for seed in seeds:
        seed_everything(seed)
        model = make()
        loaders = (
            task.loader("train", batch_size, hierarchical=hierarchical, seed=seed),
            task.loader("val", 256, hierarchical=hierarchical),
        )
        run_config = dataclasses.replace(config, seed=seed, desc=f"{name} {seed}")
        with measure(device) as m:
            history = fit(model, *loaders, hazard_nll_step, run_config).history
        costs.append(
            {
                "parameters": count_parameters(model)["trainable"],
                "train s": m.seconds,
                "s / epoch": float(history["time_s"].mean()),
                "peak MiB": m.peak_mib,
                "activations MiB": saved_for_backward_mib(
                    lambda m=model: hazard_nll_step(m.train(), probe), exclude=model.parameters()
                ),
                "epochs": len(history),
            }
        )
        histories.append(history)
        survs.append(predict_survival(model, task, hierarchical=hierarchical, device=device))
        if keep_models:
            models.append(model)
    cost = pd.DataFrame(costs).mean().to_dict()
    cost["parameters"] = int(cost["parameters"])
    return SeedRuns(survs, cost, histories, models)
