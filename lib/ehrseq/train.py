r"""One training loop for the whole book: :func:`fit`.

Every chapter trains with it, whatever the model and loss: the chapter writes a *step
function* ``step_fn(model, batch) -> loss`` (or ``(loss, {"name": value, ...})``) and
:func:`fit` does the rest, the same way everywhere:

- AdamW (weight decay on matrices only: weights of ``Linear`` and ``Embedding``, not biases or
  LayerNorm), learning rate warmed up linearly then decayed on a cosine
  (:func:`warmup_cosine`), one scheduler step per optimiser step;
- gradient clipping by global norm; bf16 autocast on CUDA (:func:`ehrseq.runtime.autocast`,
  a no-op on CPU); a non-finite loss stops the run with :class:`NonFiniteLossError` naming
  the step;
- per-epoch metrics in a :class:`pandas.DataFrame` (``train_*`` averaged over the epoch's
  batches, ``val_*`` over the validation batches, ``lr``, ``time_s``), written to
  ``out_dir/metrics.csv``; a tqdm bar per epoch (``progress=False`` turns it off);
- early stopping on one metric (``monitor``, ``mode`` ``"min"`` or ``"max"``, ``patience``);
  the best weights are kept (``best.pt``, or in memory without ``out_dir``) and restored at
  the end (``restore_best``);
- ``out_dir/last.pt`` after every epoch: model, optimiser, scheduler, epoch, step, history,
  early-stopping state and the RNG states of Python, NumPy, torch and CUDA (per rank), all as
  tensors and plain types so that ``torch.load(path, weights_only=True)`` reads it. A run
  started again with ``resume=True`` continues from it and ends exactly where an
  uninterrupted run ends (checked bit for bit on CPU in ``tests/test_train.py``). Resuming
  is at epoch granularity: a crash mid-epoch repeats that epoch.

The same call runs on CPU, on one GPU, and on several processes under ``torchrun``: when
``WORLD_SIZE > 1`` :func:`fit` joins the process group (NCCL on CUDA, gloo on CPU), wraps the
model in :class:`~torch.nn.parallel.DistributedDataParallel`, gives each rank its share of
the batches (a :class:`~torch.utils.data.DistributedSampler` for ordinary loaders, every
``world``-th batch of a custom batch sampler such as
:class:`~ehrseq.data.tensors.LengthBucketSampler`), averages the logged metrics over ranks,
and lets only rank 0 print, write the CSV and save checkpoints (it sends the best
weights to the other ranks, so their ``out_dir`` need not be shared). ``batch_size`` is
per rank. (A ``DistributedSampler`` pads the last round with repeated examples, so a
distributed validation loss can count a few patients twice; a custom batch sampler's
validation batches are each counted once, on the unwrapped model, even when there are
fewer of them than ranks; ``eval_fn`` runs on rank 0 over the whole validation loader.)
Call ``torch.distributed.destroy_process_group()`` at the end of a torchrun script.

Example:
    >>> def step_fn(model, batch):  # doctest: +SKIP
    ...     return F.mse_loss(model(batch["x"]), batch["y"])
    >>> result = fit(model, train_loader, val_loader, step_fn, TrainConfig(epochs=5))  # doctest: +SKIP
    >>> result.history[["epoch", "train_loss", "val_loss"]]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
)

from ehrseq.config import progress_disabled
from ehrseq.runtime import autocast, get_device, progress, seed_everything

__all__ = [
    "TrainConfig",
    "FitResult",
    "NonFiniteLossError",
    "fit",
    "make_optimizer",
    "warmup_cosine",
    "load_checkpoint",
    "to_device",
]

StepFn = Callable[[nn.Module, Any], "torch.Tensor | tuple[torch.Tensor, Mapping[str, Any]]"]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the epoch, batch and global step."""


@dataclass
class TrainConfig:
    """Settings of :func:`fit`.

    Attributes:
        epochs: passes over the training loader.
        lr: peak learning rate (after warm-up).
        weight_decay: AdamW decay on weight matrices and embeddings.
        betas: AdamW betas.
        warmup_steps: linear warm-up length in optimiser steps; None uses ``warmup_frac``.
        warmup_frac: warm-up as a fraction of all steps (when ``warmup_steps`` is None).
        min_lr_ratio: the cosine decays to ``lr * min_lr_ratio`` at the last step.
        grad_clip: maximum global gradient norm; None turns clipping off.
        monitor: metric for early stopping and the best checkpoint; None means ``"val_loss"``
            with a validation loader, else ``"train_loss"``.
        mode: ``"min"`` or ``"max"``: which direction of ``monitor`` is better.
        patience: stop after this many epochs without improvement; None never stops early.
        min_delta: an improvement must beat the best by more than this.
        restore_best: load the best weights into the model at the end.
        out_dir: where ``metrics.csv``, ``last.pt`` and ``best.pt`` go (None: nowhere).
        resume: True continues from ``out_dir/last.pt`` when it exists (a fresh start
            otherwise); a path continues from that checkpoint (which must exist).
        seed: seeds Python, NumPy and torch at the start (``seed + rank``); None leaves them.
        device: ``"cpu"``, ``"cuda"``, ... ; None lets :func:`ehrseq.get_device` choose
            (each rank uses ``cuda:LOCAL_RANK`` under torchrun).
        bf16: bf16 autocast on CUDA (ignored on CPU).
        progress: show a tqdm bar (rank 0 only).
        find_unused_parameters: passed to DistributedDataParallel (True when a step leaves
            some parameters out, e.g. one pretraining head of two).
        desc: label of the progress bar.
    """

    epochs: int = 10
    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int | None = None
    warmup_frac: float = 0.05
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    monitor: str | None = None
    mode: Literal["min", "max"] = "min"
    patience: int | None = None
    min_delta: float = 0.0
    restore_best: bool = True
    out_dir: str | Path | None = None
    resume: bool | str | Path = False
    seed: int | None = 0
    device: str | None = None
    bf16: bool = True
    progress: bool = True
    find_unused_parameters: bool = False
    desc: str = "train"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs = {self.epochs}: must be at least 1")
        if self.lr <= 0:
            raise ValueError(f"lr = {self.lr}: must be positive")
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode = {self.mode!r}: expected 'min' or 'max'")
        if not 0 <= self.warmup_frac < 1:
            raise ValueError(f"warmup_frac = {self.warmup_frac}: must be in [0, 1)")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"warmup_steps = {self.warmup_steps}: must be non-negative")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio = {self.min_lr_ratio}: must be in [0, 1]")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience = {self.patience}: must be at least 1 (or None)")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip = {self.grad_clip}: must be positive (or None)")
        if self.resume is True and self.out_dir is None:
            raise ValueError("resume=True needs an out_dir to find last.pt in")


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        history: one row per epoch: ``epoch``, ``step``, ``lr``, ``train_*``, ``val_*``,
            ``time_s``.
        monitor: the metric early stopping watched.
        best_epoch: epoch (1-based) of the best ``monitor`` value.
        best_value: that value.
        stopped_early: True when patience ran out.
        best_path: ``out_dir/best.pt`` (None without ``out_dir``).
        last_path: ``out_dir/last.pt`` (None without ``out_dir``).
    """

    history: pd.DataFrame
    monitor: str
    best_epoch: int | None = None
    best_value: float | None = None
    stopped_early: bool = False
    best_path: Path | None = None
    last_path: Path | None = None


# ---------------------------------------------------------------------------------------------
# Optimiser and schedule
# ---------------------------------------------------------------------------------------------
def warmup_cosine(
    step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> float:
    r"""Learning-rate multiplier of step ``step`` (0-based): linear warm-up, then cosine decay.

    .. math::
        f(s) = \begin{cases} (s + 1) / W & s < W \\
        r + (1 - r)\,\tfrac12\big(1 + \cos(\pi\,\tfrac{s - W}{\max(1, S - W)})\big) & s \ge W
        \end{cases}

    with :math:`W` warm-up steps, :math:`S` steps in all and floor :math:`r`.

    Raises:
        ValueError: ``total_steps < 1`` or ``warmup_steps`` negative.
    """
    if total_steps < 1 or warmup_steps < 0:
        raise ValueError(f"total_steps = {total_steps}, warmup_steps = {warmup_steps}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; decay on those with 2 or more dimensions only."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas)


# ---------------------------------------------------------------------------------------------
# Small helpers: devices, RNG states, distributed plumbing
# ---------------------------------------------------------------------------------------------
def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested) dict / list / tuple batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _rng_state() -> dict:
    """RNG states as tensors and plain types (readable with ``weights_only=True``)."""
    version, mt, gauss = random.getstate()
    key, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (global state on purpose)
    state = {
        "python": {
            "version": version,
            "state": torch.tensor(mt, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "key": key,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def _set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            npy["key"],
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if (
        state["cuda"]
        and torch.cuda.is_available()
        and len(state["cuda"]) == torch.cuda.device_count()
    ):
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def _setup(cfg: TrainConfig) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return _Dist(device=get_device(cfg.device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (cfg.device is None or cfg.device.startswith("cuda"))
    device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return _Dist(rank=dist.get_rank(), world=dist.get_world_size(), device=device)


class _ShardedBatchSampler:
    """Rank ``rank`` of ``world`` takes batches ``rank, rank + world, ...`` of ``inner``.

    Every rank gets the same number of batches (the tail that does not divide is dropped), so
    no rank waits for a gradient all-reduce that never comes; ``keep_tail`` keeps it
    (for validation, which has no per-batch all-reduce: every batch counts once).
    """

    def __init__(self, inner, rank: int, world: int, keep_tail: bool = False):
        self.inner, self.rank, self.world = inner, rank, world
        self.keep_tail = keep_tail

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __iter__(self):
        batches = list(self.inner)
        n = len(batches) if self.keep_tail else len(batches) // self.world * self.world
        return iter(batches[self.rank : n : self.world])

    def __len__(self) -> int:
        if self.keep_tail:
            return len(range(self.rank, len(self.inner), self.world))
        return len(self.inner) // self.world


def _shard(
    loader: DataLoader | None, d: _Dist, seed: int, keep_tail: bool = False
) -> DataLoader | None:
    """The rank's share of ``loader`` (unchanged on one process); ``keep_tail``: a
    custom batch sampler's last batches that do not divide among the ranks are kept."""
    if loader is None or d.world == 1 or isinstance(loader.sampler, DistributedSampler):
        return loader
    if isinstance(loader.dataset, IterableDataset) or loader.batch_sampler is None:
        raise ValueError(
            "fit cannot shard this loader across ranks (an IterableDataset or batch_size=None): "
            "give it a DistributedSampler yourself"
        )
    common = dict(
        collate_fn=loader.collate_fn,
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
    )
    bs = loader.batch_sampler
    if type(bs) is BatchSampler and isinstance(bs.sampler, RandomSampler | SequentialSampler):
        sampler = DistributedSampler(
            loader.dataset,
            num_replicas=d.world,
            rank=d.rank,
            shuffle=isinstance(bs.sampler, RandomSampler),
            seed=seed,
        )
        return DataLoader(
            loader.dataset,
            batch_size=bs.batch_size,
            sampler=sampler,
            drop_last=bs.drop_last,
            **common,
        )
    batches = _ShardedBatchSampler(bs, d.rank, d.world, keep_tail)
    return DataLoader(loader.dataset, batch_sampler=batches, **common)


def _set_epoch(loader: DataLoader, epoch: int) -> None:
    for s in (loader.sampler, loader.batch_sampler):
        if s is not None and hasattr(s, "set_epoch"):
            s.set_epoch(epoch)


def _split_output(out) -> tuple[torch.Tensor, dict[str, Any]]:
    if isinstance(out, tuple):
        if len(out) != 2 or not isinstance(out[1], Mapping):
            raise ValueError("step_fn must return loss or (loss, dict of metrics)")
        loss, metrics = out
    else:
        loss, metrics = out, {}
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise ValueError("step_fn must return a scalar loss tensor")
    return loss, dict(metrics)


def _batch_size(batch: Any) -> int:
    """Rows in a batch: the first dimension of its first tensor (1 if it has none)."""
    if torch.is_tensor(batch):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, list | tuple):
        for item in batch:
            if torch.is_tensor(item) and item.dim():
                return int(item.shape[0])
    return 1


class _Meter:
    """Running sums of named scalars, each a mean over the batches that reported it weighted
    by batch size (and over ranks): with a per-row mean loss, an epoch mean is a per-row mean
    even when batches differ in size (length bucketing leaves a small last batch)."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, float] = {}

    def add(self, values: Mapping[str, Any], weight: float = 1.0) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v) * weight
            self.counts[k] = self.counts.get(k, 0.0) + weight

    def mean(self, d: _Dist, prefix: str) -> dict[str, float]:
        keys = set(self.sums)
        if d.world > 1:  # a rank may lack a metric: agree on the union of names first
            every: list = [None] * d.world
            dist.all_gather_object(every, sorted(keys))
            keys = set().union(*every)
        keys = sorted(keys, key=lambda k: (k != "loss", k))  # loss first
        buf = torch.tensor(
            [[self.sums.get(k, 0.0), self.counts.get(k, 0)] for k in keys], dtype=torch.float64
        ).reshape(len(keys), 2)  # (K, 2)
        if d.world > 1:
            buf = buf.to(d.device)
            dist.all_reduce(buf)
            buf = buf.cpu()
        return {
            f"{prefix}{k}": (buf[i, 0] / buf[i, 1]).item() if buf[i, 1] > 0 else float("nan")
            for i, k in enumerate(keys)
        }


def _check_finite(loss: torch.Tensor, d: _Dist, epoch: int, batch: int, step: int) -> None:
    ok = torch.isfinite(loss.detach()).to(torch.float32)
    if d.world > 1:
        ok = ok.to(d.device)
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)  # every rank stops together
    if ok.item() < 1:
        value = loss.detach().float().item()
        raise NonFiniteLossError(
            f"non-finite loss ({value} on this rank) at step {step} "
            f"(epoch {epoch + 1}, batch {batch + 1}); lower the learning rate, check the "
            f"inputs of that batch, or clip gradients"
        )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`fit` with ``torch.load(..., weights_only=True)``.

    ``ckpt["model"]`` is the state dict; ``last.pt`` also holds ``optimizer``, ``scheduler``,
    ``epoch``, ``step``, ``history``, ``early_stopping``, ``rng`` (one entry per rank) and
    ``config``.
    """
    return torch.load(Path(path), map_location=map_location, weights_only=True)


def _plain_config(cfg: TrainConfig) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------
def _evaluate(
    model: nn.Module, loader: DataLoader, step_fn: StepFn, d: _Dist, cfg: TrainConfig
) -> dict:
    model.eval()
    meter = _Meter()
    amp = autocast(d.device) if cfg.bf16 else contextlib.nullcontext()
    with torch.no_grad():
        for batch in loader:
            batch = to_device(batch, d.device)
            with amp:
                loss, metrics = _split_output(step_fn(model, batch))
            meter.add({"loss": loss.detach(), **metrics}, weight=_batch_size(batch))
    return meter.mean(d, "val_")


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader | None = None,
    step_fn: StepFn | None = None,
    config: TrainConfig | None = None,
    *,
    loss_fn: StepFn | None = None,
    eval_fn: Callable[[nn.Module, DataLoader], Mapping[str, float]] | None = None,
) -> FitResult:
    r"""Train ``model`` with AdamW, warm-up + cosine schedule, clipping and early stopping.

    Per optimiser step :math:`s`: :math:`\ell = \text{step\_fn}(\text{model}, \text{batch})`,
    :math:`g = \nabla \ell` clipped to norm ``grad_clip``, AdamW update with learning rate
    ``lr * warmup_cosine(s, W, S)`` (:math:`S` = epochs x batches per epoch).

    Args:
        model: any ``nn.Module``; moved to the device. Under torchrun the step function sees
            it wrapped in DistributedDataParallel, so call it (``model(...)``) rather than its
            methods; ``model`` itself stays unwrapped.
        train_loader: batches for ``step_fn`` (a dict, tuple or tensor; tensors are moved to
            the device).
        val_loader: validation batches: ``step_fn`` runs on them in eval mode without
            gradients, giving ``val_loss`` and ``val_<metric>``.
        step_fn: ``step_fn(model, batch) -> loss`` or ``(loss, {name: scalar})``; ``model.training``
            tells it whether it is training or validating.
        config: a :class:`TrainConfig` (default settings when None).
        loss_fn: another name for ``step_fn`` (give one of them).
        eval_fn: ``eval_fn(model, val_loader) -> {name: float}`` run after validation
            (rank 0, unwrapped model, eval mode); its names get a ``val_`` prefix, so a
            metric such as ``val_top1`` can be monitored.

    Returns:
        :class:`FitResult` (history DataFrame, best epoch and value, checkpoint paths); the
        model holds the best weights when ``restore_best`` (else the last ones).

    Raises:
        ValueError: no or two step functions, an empty training loader, a ``monitor`` that
            is not among the metrics, a checkpoint that does not fit.
        NonFiniteLossError: the loss became NaN or infinite (message names the step).

    Shapes:
        whatever ``step_fn`` reads; the loss is a 0-d tensor.

    References:
        Loshchilov and Hutter, *Decoupled weight decay regularization* (ICLR 2019) and
        *SGDR: stochastic gradient descent with warm restarts* (ICLR 2017).
    """
    if (step_fn is None) == (loss_fn is None):
        raise ValueError("give exactly one of step_fn and loss_fn")
    step_fn = step_fn or loss_fn
    cfg = config or TrainConfig()
    d = _setup(cfg)
    if cfg.seed is not None:
        seed_everything(cfg.seed + d.rank)
    model.to(d.device)
    train = _shard(train_loader, d, cfg.seed or 0)
    val = _shard(val_loader, d, cfg.seed or 0, keep_tail=True)
    steps_per_epoch = len(train)
    if steps_per_epoch == 0:
        raise ValueError("the training loader yields no batches (on this rank)")
    total = cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(cfg.warmup_frac * total)
    optimizer = make_optimizer(model, cfg)
    scheduler = LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup, total, cfg.min_lr_ratio))
    monitor = cfg.monitor or ("val_loss" if val_loader is not None else "train_loss")
    if monitor.startswith("val_") and val_loader is None:
        raise ValueError(f"monitor = {monitor!r} needs a val_loader")

    out = Path(cfg.out_dir) if cfg.out_dir is not None else None
    last_path = out / "last.pt" if out else None
    best_path = out / "best.pt" if out else None
    if out and d.main:
        out.mkdir(parents=True, exist_ok=True)

    # state that a checkpoint carries
    epoch0, step, history = 0, 0, []
    stop = {"best_value": None, "best_epoch": None, "bad_epochs": 0, "stopped": False}
    best_in_memory: dict[str, torch.Tensor] | None = None

    resume_from = None
    if cfg.resume is True and last_path is not None and last_path.exists():
        resume_from = last_path
    elif cfg.resume not in (False, True):
        resume_from = Path(cfg.resume)
        if not resume_from.exists():
            raise ValueError(f"resume: no checkpoint at {resume_from}")
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from)
        if ckpt["steps_per_epoch"] != steps_per_epoch or ckpt["total_steps"] != total:
            raise ValueError(
                f"checkpoint {resume_from} was written for {ckpt['steps_per_epoch']} steps per "
                f"epoch and {ckpt['total_steps']} steps, this run has {steps_per_epoch} and {total}"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        epoch0, step, history = ckpt["epoch"], ckpt["step"], list(ckpt["history"])
        stop = dict(ckpt["early_stopping"])
        rngs = ckpt["rng"]
        _set_rng_state(rngs[d.rank] if len(rngs) == d.world else rngs[0])

    net: nn.Module = model
    if d.world > 1:
        net = DistributedDataParallel(
            model,
            device_ids=[d.device.index] if d.device.type == "cuda" else None,
            find_unused_parameters=cfg.find_unused_parameters,
        )
    amp = autocast(d.device) if cfg.bf16 else contextlib.nullcontext()
    params = [p for p in model.parameters() if p.requires_grad]
    sign = 1.0 if cfg.mode == "min" else -1.0

    for epoch in range(epoch0, cfg.epochs):
        if stop["stopped"]:
            break
        t0 = time.perf_counter()
        _set_epoch(train, epoch)
        net.train()
        meter = _Meter()
        bar = progress(
            train,
            desc=f"{cfg.desc} {epoch + 1}/{cfg.epochs}",
            disable=not (cfg.progress and d.main),
            leave=False,
        )
        for i, batch in enumerate(bar):
            batch = to_device(batch, d.device)
            with amp:
                loss, metrics = _split_output(step_fn(net, batch))
            _check_finite(loss, d, epoch, i, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            value = loss.detach().float().item()
            meter.add(
                {
                    "loss": value,
                    **{k: v.detach() if torch.is_tensor(v) else v for k, v in metrics.items()},
                },
                weight=_batch_size(batch),
            )
            bar.set_postfix(loss=f"{value:.4f}")
        bar.close()
        row: dict[str, Any] = {"epoch": epoch + 1, "step": step, "lr": scheduler.get_last_lr()[0]}
        row.update(meter.mean(d, "train_"))
        if val is not None:  # unwrapped: ranks may hold unequal numbers of batches
            row.update(_evaluate(model, val, step_fn, d, cfg))
        if eval_fn is not None:
            extra = [None]
            if d.main:
                model.eval()
                with torch.no_grad(), amp:
                    got = eval_fn(model, val_loader)
                extra = [
                    {(k if k.startswith("val_") else f"val_{k}"): float(v) for k, v in got.items()}
                ]
            if d.world > 1:
                dist.broadcast_object_list(extra, src=0)
            row.update(extra[0])
        row["time_s"] = time.perf_counter() - t0
        history.append(row)

        if monitor not in row:
            raise ValueError(f"monitor = {monitor!r} is not among the metrics {sorted(row)}")
        value = float(row[monitor])
        best = stop["best_value"]
        if math.isfinite(value) and (best is None or sign * (best - value) > cfg.min_delta):
            stop.update(best_value=value, best_epoch=epoch + 1, bad_epochs=0)
            if best_path is not None and d.main:
                state = {
                    "model": model.state_dict(),
                    "epoch": epoch + 1,
                    "step": step,
                    monitor: value,
                }
                torch.save(state, best_path)
            elif best_path is None and cfg.restore_best:
                best_in_memory = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stop["bad_epochs"] += 1
        if cfg.patience is not None and stop["bad_epochs"] >= cfg.patience:
            stop["stopped"] = True
        if cfg.progress and d.main and not progress_disabled():
            shown = dict.fromkeys(["train_loss", "val_loss", monitor])
            text = "  ".join(f"{k} {row[k]:.4g}" for k in shown if k in row)
            bar.write(f"{cfg.desc} {epoch + 1}/{cfg.epochs}  {text}  ({row['time_s']:.1f} s)")

        if out is not None:
            rngs = [_rng_state()]
            if d.world > 1:
                rngs = [None] * d.world
                dist.all_gather_object(rngs, _rng_state())
            if d.main:
                ckpt = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch + 1,
                    "step": step,
                    "steps_per_epoch": steps_per_epoch,
                    "total_steps": total,
                    "history": history,
                    "early_stopping": stop,
                    "rng": rngs,
                    "config": _plain_config(cfg),
                }
                tmp = last_path.with_suffix(".tmp")
                torch.save(ckpt, tmp)
                tmp.replace(last_path)  # atomic: a crash never leaves half a checkpoint
                pd.DataFrame(history).to_csv(out / "metrics.csv", index=False)
            d.barrier()

    if cfg.restore_best and stop["best_epoch"] is not None:
        if best_path is not None and d.world == 1:
            model.load_state_dict(load_checkpoint(best_path, d.device)["model"])
        elif best_path is not None:  # rank 0 wrote best.pt: reads it, sends the weights
            if d.main:
                model.load_state_dict(load_checkpoint(best_path, d.device)["model"])
            with torch.no_grad():  # so ranks > 0 need not share out_dir
                for t in model.state_dict().values():
                    dist.broadcast(t, src=0)
        elif best_in_memory is not None:
            model.load_state_dict(best_in_memory)
    return FitResult(
        history=pd.DataFrame(history),
        monitor=monitor,
        best_epoch=stop["best_epoch"],
        best_value=stop["best_value"],
        stopped_early=bool(stop["stopped"]),
        best_path=best_path if best_path is not None and best_path.exists() else None,
        last_path=last_path if last_path is not None and last_path.exists() else None,
    )
