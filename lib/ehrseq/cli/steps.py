r"""The steps of ``ehrseq run`` as functions of objects in memory.

Each stage of :mod:`ehrseq.cli.pipeline` calls one of these and writes what it returns into
``--out``; a chapter (``11_real_data_gibleed``) calls the same functions and keeps the
results in memory, so the book shows what the command does, step by step:

================== ======================= =================================================
function           stage                   returns
================== ======================= =================================================
build_task         ``task``                the :class:`~ehrseq.data.task.SurvivalTask`
task_frame         ``task``                the labels of every split (``frame.parquet``)
pretrain_encoder   ``pretrain``            encoder weights and the per-epoch history
finetune_survival  ``finetune``            the :class:`~ehrseq.runs.SeedRuns` of one seed
baseline_curves    ``baselines``           Kaplan-Meier, Cox and L1 logistic (test curves)
survival_protocol  ``evaluate``            the :class:`~ehrseq.evaluate.SurvivalProtocol`
evaluate_models    ``evaluate``            metrics, paired differences, calibration
================== ======================= =================================================

The models themselves live in :mod:`ehrseq.baselines` (the Cox model, and
:func:`~ehrseq.baselines.lasso_logistic`, the L1 logistic regression of the OHDSI
PatientLevelPrediction design) and :mod:`ehrseq.models`; :data:`COMPARISONS` names the pairs
that the evaluation compares.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ehrseq.cli.cohort import CliError

if TYPE_CHECKING:  # pipeline imports this module
    from ehrseq.baselines import CoxBaseline, LassoLogistic
    from ehrseq.cli.inputs import Input
    from ehrseq.cli.pipeline import RunConfig
    from ehrseq.data.task import SurvivalTask
    from ehrseq.evaluate import SurvivalProtocol
    from ehrseq.models import BehrtConfig
    from ehrseq.runs import SeedRuns

__all__ = [
    "COMPARISONS",
    "Baselines",
    "baseline_curves",
    "build_task",
    "encoder_config",
    "evaluate_models",
    "finetune_survival",
    "pretrain_encoder",
    "survival_protocol",
    "task_frame",
]

#: The paired comparisons of ``ehrseq run`` and chapter 11, by key: ``a - b`` on every metric.
COMPARISONS: dict[str, tuple[str, str]] = {
    "behrt_vs_cox": ("BEHRT survival", "Cox, bag of codes"),
    "behrt_vs_lasso": ("BEHRT survival", "L1 logistic"),
    "lasso_vs_cox": ("L1 logistic", "Cox, bag of codes"),
}


def build_task(data: Input, labels: pd.DataFrame, cfg: RunConfig, horizon_days: float):
    """The :class:`~ehrseq.data.task.SurvivalTask` of a labelled cohort
    (:func:`~ehrseq.data.task.task_from_labels`: sequences before the index date, a split by
    person, the vocabulary of the training persons, ``cfg.n_bins`` bins over the horizon).

    Args:
        data: the input (:func:`ehrseq.cli.inputs.read_input`).
        labels: :attr:`ehrseq.cli.cohort.CohortResult.labels`.
        cfg: the run's sizes (``n_bins``, ``max_len``, ``min_frequency``, the fractions, the
            seed).
        horizon_days: the cohort's horizon.

    Raises:
        CliError: a split without persons or without an outcome event.
    """
    from ehrseq.data.task import TaskConfig, task_from_labels

    task_cfg = TaskConfig(
        n_patients=len(labels),
        seed=cfg.seed,
        horizon_years=horizon_days / 365.25,
        n_bins=cfg.n_bins,
        max_len=cfg.max_len,
        min_frequency=cfg.min_frequency,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
    )
    try:
        task = task_from_labels(data.events, data.person, labels, task_cfg)
    except ValueError as err:
        raise CliError(f"cohort: {err}") from None
    n, events = len(task.labels), int(task.event.sum())
    for name in ("test", "val", "train"):
        frame = task.frame(name)
        if len(frame) == 0 or frame["event"].sum() == 0:
            raise CliError(
                f"the {name} split ({len(frame)} persons) has no outcome event: the cohort "
                f"({n} persons with history, {events} events) is too small"
            )
    return task


def task_frame(task: SurvivalTask) -> pd.DataFrame:
    """The labels of every split, one row per person, with a ``split`` column (train, val,
    test, in that order; what the ``task`` stage writes as ``frame.parquet``)."""
    return pd.concat([task.frame(s).assign(split=s) for s in ("train", "val", "test")])


def encoder_config(task: SurvivalTask, cfg: RunConfig) -> BehrtConfig:
    """The BEHRT encoder of the run: the task's vocabulary, the sizes of ``cfg``."""
    from ehrseq.models import BehrtConfig

    return BehrtConfig.from_vocab(
        task.vocab,
        max_len=cfg.max_len,
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        d_ff=cfg.d_ff,
        dropout=cfg.dropout,
        init_std=0.1,
    )


def pretrain_encoder(
    task: SurvivalTask,
    cfg: RunConfig,
    *,
    init: Mapping | None = None,
    device: str | None = None,
    root: Path | None = None,
    resume: bool = False,
) -> tuple[dict, pd.DataFrame]:
    """Pretrain the encoder (masked codes and next visit, ``"joint"``) on the training
    persons' histories through :func:`~ehrseq.pretrained.load_or_pretrain` (loaded when
    already trained under ``root``), or with ``cfg.pretrain_epochs == 0`` take the encoder as
    it starts (from ``init`` when given).

    Args:
        task: the task (its histories, never its labels).
        cfg: sizes, ``pretrain_epochs``, ``batch_size`` and ``seed``.
        init: encoder weights to start from (``--init``).
        device: ``"cpu"``, ``"cuda"``... (default: the library's choice).
        root: the artefact folder (default :func:`~ehrseq.config.artifact_root`).
        resume: continue an interrupted pretraining from the ``last.pt`` that
            :func:`~ehrseq.train.fit` left in the artefact's folder under ``root``.

    Returns:
        ``(encoder state dict on the CPU, per-epoch history)``; the history is empty when
        nothing was pretrained.

    Raises:
        ValueError: ``init`` does not fit the encoder.
    """
    from ehrseq.pretrained import PretrainRecipe, load_or_pretrain, pretrained_model

    encoder_cfg = encoder_config(task, cfg)
    recipe = PretrainRecipe(
        schedule="joint",
        epochs=max(cfg.pretrain_epochs, 1),
        batch_size=cfg.batch_size,
        seed=cfg.seed,
    )
    if cfg.pretrain_epochs > 0:
        result = load_or_pretrain(
            task, encoder_cfg, recipe, device=device, root=root, init=init, resume=resume
        )
        model, history = result.model, result.history
    else:
        model, history = pretrained_model(task, encoder_cfg, recipe, init), pd.DataFrame()
    return model.encoder.cpu().state_dict(), history


def finetune_survival(
    task: SurvivalTask,
    cfg: RunConfig,
    encoder_state: Mapping,
    *,
    device: str | None = None,
    resume_dir: Path | None = None,
) -> SeedRuns:
    """Fine-tune the encoder with a per-bin hazard head on the training persons (early
    stopping on the validation loss) for one seed, ``cfg.seed``.

    With ``resume_dir``, :func:`~ehrseq.train.fit` writes its checkpoints there after every
    epoch and an interrupted run continues from the last one (``resume=True``), ending
    where an uninterrupted run ends.

    The head starts at the life-table hazards of the training persons, so an untrained model
    already predicts the Kaplan-Meier curve.

    Returns:
        the :class:`~ehrseq.runs.SeedRuns`: ``survs[0]`` the test curves ``(n_test, n_bins)``,
        ``histories[0]`` the per-epoch losses, ``models[0]`` the model, ``cost``.
    """
    from ehrseq.config import progress_disabled
    from ehrseq.models import BehrtEncoder, BinHazardHead, SurvivalModel
    from ehrseq.runs import train_seeds
    from ehrseq.survival import life_table_hazards
    from ehrseq.train import TrainConfig

    encoder_cfg = encoder_config(task, cfg)
    train = task.frame("train")
    base = life_table_hazards(train["bin"].to_numpy(), train["event"].to_numpy(), cfg.n_bins)

    def make() -> SurvivalModel:
        encoder = BehrtEncoder(encoder_cfg)
        encoder.load_state_dict(encoder_state)
        head = BinHazardHead(encoder_cfg.d_model, cfg.n_bins, dropout=0.1, base_hazards=base)
        return SurvivalModel(encoder, head)

    return train_seeds(
        make,
        task,
        TrainConfig(
            epochs=cfg.epochs,
            lr=cfg.lr,
            patience=cfg.patience,
            device=device,
            progress=not progress_disabled(),
            out_dir=resume_dir,
            resume=resume_dir is not None,
        ),
        (cfg.seed,),
        hierarchical=False,
        batch_size=cfg.batch_size,
        name="fine-tune",
        keep_models=True,
    )


@dataclass
class Baselines:
    """What :func:`baseline_curves` returns.

    Attributes:
        curves: test survival curves at the bin edges, ``(n_test, n_bins)``, by model:
            ``"Cox, bag of codes"``, ``"L1 logistic"``, ``"Kaplan-Meier"``.
        cox: the fitted :class:`~ehrseq.baselines.CoxBaseline`.
        lasso: the :class:`~ehrseq.baselines.LassoLogistic` fit.
        n_cox_warnings: lifelines' convergence warnings while fitting the Cox model.
    """

    curves: dict[str, np.ndarray]
    cox: CoxBaseline
    lasso: LassoLogistic
    n_cox_warnings: int


def baseline_curves(task: SurvivalTask, cfg: RunConfig) -> Baselines:
    """The three reference models of ``ehrseq run``, as test survival curves at the bin
    edges, all on the training persons of ``task``:

    - **Kaplan-Meier** of the training persons: the same curve for everyone;
    - **Cox, bag of codes**: :class:`~ehrseq.baselines.CoxBaseline` (ridge, ``cfg.penalizer``,
      features kept at ``cfg.min_share``) on :func:`~ehrseq.baselines.bag_of_codes_by_split`;
    - **L1 logistic**: :func:`~ehrseq.baselines.lasso_logistic` (the OHDSI
      PatientLevelPrediction design) on the same features, its inverse penalty chosen
      among ``cfg.lasso_cs`` on the validation persons, solver seeded with ``cfg.seed``.
    """
    from lifelines import KaplanMeierFitter
    from lifelines.exceptions import ConvergenceWarning

    from ehrseq.baselines import CoxBaseline, bag_of_codes_by_split, lasso_logistic

    times = task.cuts[1:]
    train, test = task.frame("train"), task.frame("test")
    km = KaplanMeierFitter().fit(train["duration"], train["event"])
    km_surv = np.tile(km.survival_function_at_times(times).to_numpy(), (len(test), 1))
    x = bag_of_codes_by_split(task, ("train", "test"))
    cox = CoxBaseline(penalizer=cfg.penalizer, min_share=cfg.min_share)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        cox.fit(x["train"], train["duration"].to_numpy(), train["event"].to_numpy())
    cox_surv = np.clip(cox.predict_survival(x["test"], times), 0.0, 1.0)
    lasso = lasso_logistic(task, Cs=cfg.lasso_cs, seed=cfg.seed)
    curves = {"Cox, bag of codes": cox_surv, "L1 logistic": lasso.surv, "Kaplan-Meier": km_surv}
    return Baselines(curves, cox, lasso, len(caught))


def survival_protocol(frame: pd.DataFrame, cuts: np.ndarray, cfg: RunConfig) -> SurvivalProtocol:
    """The protocol of the run: the test persons of ``frame`` (:func:`task_frame`), scored at
    the bin edges ``cuts[1:]``, the censoring distribution of the training persons,
    ``cfg.n_boot`` resamples seeded with ``cfg.seed``."""
    from ehrseq.evaluate import SurvivalProtocol

    test, train = frame[frame["split"] == "test"], frame[frame["split"] == "train"]
    return SurvivalProtocol(
        test["duration"].to_numpy(float),
        test["event"].to_numpy(int),
        np.asarray(cuts)[1:],
        train["duration"].to_numpy(float),
        train["event"].to_numpy(int),
        n_boot=cfg.n_boot,
        seed=cfg.seed,
    )


def evaluate_models(
    protocol: SurvivalProtocol,
    survs: Mapping[str, np.ndarray],
    pairs: Sequence[tuple[str, str]] = tuple(COMPARISONS.values()),
    calibrated: Sequence[str] = ("BEHRT survival", "Cox, bag of codes", "L1 logistic"),
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Score every model's test curves and compare the pairs (paired bootstrap).

    Args:
        protocol: :func:`survival_protocol`.
        survs: model name -> test curves ``(n_test, n_bins)`` (one seed each).
        pairs: ``(a, b)`` pairs for :meth:`~ehrseq.evaluate.SurvivalProtocol.compare`
            (``a - b`` on Harrell's C, the IBS and the AUROC); default :data:`COMPARISONS`.
        calibrated: the models whose calibration table at the horizon is returned (default
            BEHRT, Cox and the L1 logistic regression).

    Returns:
        ``(metrics, compare, calibration)``: one row per model of
        :meth:`~ehrseq.evaluate.SurvivalProtocol.evaluate`; the paired differences; the
        calibration tables (:func:`~ehrseq.metrics.calibration_table`) with a ``model``
        column.

    Raises:
        ValueError: a pair or calibrated model not in ``survs``.
    """
    from ehrseq.metrics import calibration_table

    missing = {m for pair in pairs for m in pair} | set(calibrated)
    missing -= set(survs)
    if missing:
        raise ValueError(f"evaluate_models: no curves for {sorted(missing)}")
    metrics = pd.DataFrame([protocol.evaluate(name, [s]) for name, s in survs.items()])
    compared = [protocol.compare(a, [survs[a]], b, [survs[b]]) for a, b in pairs]
    compare = pd.concat(compared, ignore_index=True) if compared else pd.DataFrame()
    cals = [
        calibration_table(
            protocol.durations,
            1.0 - survs[name][:, -1],
            protocol.events,
            horizon=protocol.horizon,
        ).assign(model=name)
        for name in calibrated
    ]
    return metrics, compare, pd.concat(cals) if cals else pd.DataFrame()
