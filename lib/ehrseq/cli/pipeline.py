"""``ehrseq cohort`` and ``ehrseq run``: the stages, their cache, and what each writes.

``run`` goes through these stages; each writes into its own sub-folder of ``--out`` (emptied
when the stage starts) and finishes by writing ``key.json``, a hash of everything it was built
from (its own settings and the key of the stage it reads). On a re-run a stage whose key matches is skipped, so a
changed cohort file reruns the cohort and what follows, a changed ``--epochs`` only the
fine-tuning, the evaluation and the report, and a changed input file everything.

=========== ================================================= ==============================
stage       what                                              writes (under ``--out``)
=========== ================================================= ==============================
load        validate (lenient), events to parquet by DuckDB   ``load/``: events, person,
                                                              periods (parquet), report.csv
cohort      new users, washout, exclusions, labels (reads     ``cohort/``: labels.parquet
            the concept sets' events and deaths only)         (MEDS labels), attrition.csv
task        split 60/15/25 by person, sequences before the    ``task/``: vocab.json,
            index date (reads the cohort's history only),     split.csv, summary.csv
            vocabulary on training persons, bins
pretrain    masked-code + next-visit pretraining of a BEHRT   ``pretrain/``: encoder.pt,
            encoder (or the ``--init`` checkpoint), through   history.csv, the artefact
            :func:`~ehrseq.pretrained.load_or_pretrain`       ``behrt-pretrained-<key>/``
finetune    the encoder with a per-bin hazard head            ``finetune/``: model.pt,
            (:class:`~ehrseq.models.SurvivalModel`)           surv_test.npy, history.csv
baselines   Kaplan-Meier, a Cox model and an L1 logistic      ``baselines/``: km.npy,
            regression (PatientLevelPrediction) on a bag of   cox.npy, lasso.npy, cox.json,
            codes                                             lasso.json, lasso_grid.csv
evaluate    :class:`~ehrseq.evaluate.SurvivalProtocol`:       ``evaluate/``: metrics.csv,
            C, IBS, AUROC, calibration, bootstrap intervals   calibration.csv, compare.csv
report      one HTML page and one JSON file                   ``report.html``,
                                                              ``metrics.json``, ``stages.json``
=========== ================================================= ==============================

``stages.json`` says which stages ran and which came from the cache.

A training stage (``pretrain``, ``finetune``) stopped half-way (a crash, Ctrl-C, a job
limit) resumes on the next run from its last finished epoch: it keeps per-epoch
checkpoints in ``.partial/<stage>-<key>/`` until it finishes, and ends where an
uninterrupted run ends (:func:`~ehrseq.train.fit`'s ``resume``). Under ``torchrun`` an
interrupted stage starts over.

The whole event table is never held in pandas: ``load`` writes it to
``events.parquet`` through DuckDB (:func:`ehrseq.data.omop.load_omop` with
``events_to``), ``cohort`` reads back the rows of the index and outcome concept sets
and the deaths, and ``task`` the rows of the cohort's persons up to their index date
(:func:`ehrseq.cli.inputs.read_events`), so an export larger than memory runs; the
results are those of the whole table in memory.

What each stage computes is a function of :mod:`ehrseq.cli.steps` (objects in memory in,
objects out); the stage writes the result into its folder. A chapter calls the same functions.

Under ``torchrun`` rank 0 runs the stages and the other ranks join pretraining and
fine-tuning (:mod:`ehrseq.cli.ranks`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ehrseq.cli.cohort import CliError, CohortSpec, build_cohort
from ehrseq.cli.inputs import (
    Input,
    descendants_of,
    fingerprint,
    read_events,
    read_input,
)
from ehrseq.cli.steps import (
    baseline_curves,
    build_task,
    evaluate_models,
    finetune_survival,
    pretrain_encoder,
    survival_protocol,
    task_frame,
)

__all__ = ["PROFILES", "RunConfig", "cohort_command", "resolve_config", "run_command", "STAGES"]

STAGES = ("load", "cohort", "task", "pretrain", "finetune", "baselines", "evaluate", "report")


@dataclass(frozen=True)
class RunConfig:
    """Sizes and settings of ``ehrseq run`` (a profile, then the command-line overrides).

    Attributes:
        n_bins: equal time bins over the horizon.
        max_len: most recent tokens kept per person.
        min_frequency: a token needs this many training persons' occurrences.
        val_fraction, test_fraction: shares of persons (split by person, seeded).
        d_model, n_layers, n_heads, d_ff, dropout: the BEHRT encoder.
        pretrain_epochs: 0 skips pretraining (the encoder starts random or from ``--init``).
        epochs, patience, lr, batch_size: fine-tuning (early stopping on validation loss).
        n_boot: bootstrap resamples of the test persons.
        penalizer, min_share: the Cox baseline.
        lasso_cs: the inverse penalties the L1 logistic regression chooses from (on the
            validation persons).
        seed: split, initialisation, batches and bootstrap.
    """

    n_bins: int = 20
    max_len: int = 128
    min_frequency: int = 5
    val_fraction: float = 0.15
    test_fraction: float = 0.25
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 128
    dropout: float = 0.1
    pretrain_epochs: int = 5
    epochs: int = 20
    patience: int = 3
    lr: float = 1e-3
    batch_size: int = 32
    n_boot: int = 200
    penalizer: float = 0.3
    min_share: float = 0.02
    lasso_cs: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    seed: int = 7

    def part(self, *names: str) -> dict[str, Any]:
        """The fields ``names`` as a dict (what one stage's key holds)."""
        return {n: getattr(self, n) for n in names}


PROFILES: dict[str, RunConfig] = {
    "smoke": RunConfig(
        n_bins=10,
        max_len=64,
        min_frequency=2,
        d_model=32,
        n_layers=1,
        n_heads=2,
        d_ff=64,
        pretrain_epochs=1,
        epochs=2,
        patience=2,
        batch_size=64,
        n_boot=20,
        penalizer=1.0,
        min_share=0.1,
    ),
    "default": RunConfig(),
}


def _key(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _writable(folder: Path) -> None:
    """Create ``folder`` and check a file can be written there.

    Raises:
        CliError: the folder cannot be created or written.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".ehrseq_write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise CliError(f"cannot write to output folder {folder}: {err.strerror or err}") from None


def _print_table(title: str, frame: pd.DataFrame) -> None:
    print(f"\n{title}\n{frame.to_string(index=False)}")


# ---------------------------------------------------------------------------------------------
# ehrseq cohort
# ---------------------------------------------------------------------------------------------
def _remembered(fn: Callable[[list[int]], list[int]] | None):
    """``fn`` (ids -> ids with descendants), each answer kept for the same ids."""
    if fn is None:
        return None
    seen: dict[tuple[int, ...], list[int]] = {}

    def expand(ids: list[int]) -> list[int]:
        key = tuple(ids)
        if key not in seen:
            seen[key] = fn(ids)
        return seen[key]

    return expand


def _cohort(path: Path, spec: CohortSpec, data: Input, events: Path | None = None):
    """:func:`build_cohort` on ``data`` (a :class:`~ehrseq.cli.cohort.CohortResult`);
    with ``events`` (the event table's parquet file), on the rows of the concept sets
    and the deaths read from it (:func:`read_events`)."""
    descendants = _remembered(descendants_of(path))
    frame = data.events
    if events is not None:
        ids = spec.index.resolve(descendants) + spec.outcome.resolve(descendants)
        frame = read_events(events, concepts=ids)
    return build_cohort(spec, frame, data.person, data.observation_period, descendants)


def _history(events: Path, data: Input, labels: pd.DataFrame) -> Input:
    """``data`` with the rows of the event table ``events`` (parquet) that
    :func:`build_task` reads for the cohort ``labels``: each person's history up to the
    index date, and the visits that resolve its visit ids (:func:`read_events`)."""
    before = labels[["subject_id", "prediction_time"]]
    before = before.rename(columns={"subject_id": "person_id"})
    return dataclasses.replace(data, events=read_events(events, before=before))


def _check_labels_path(path: Path) -> None:
    if path.suffix != ".parquet":
        raise CliError(f"--labels {path}: the labels file must end in .parquet")
    _writable(path.parent)


def cohort_command(args: argparse.Namespace) -> int:
    """``ehrseq cohort``: print the attrition table, write the labels (MEDS label parquet)."""
    from ehrseq.data.meds import write_survival_labels

    spec = CohortSpec.from_toml(args.cohort)
    labels_path = args.labels or Path(f"{spec.name}_labels.parquet")
    _check_labels_path(labels_path)
    mode = "strict" if args.strict else "lenient"
    with tempfile.TemporaryDirectory(prefix="ehrseq_cohort_") as tmp:
        events = Path(tmp) / "events.parquet"
        data = read_input(args.path, mode=mode, events_to=events)
        result = _cohort(args.path, spec, data, events)
    print(
        f"cohort {spec.name!r}: {len(result.index_ids)} index concepts, "
        f"{len(result.outcome_ids)} outcome concepts (descendants included where asked)"
    )
    _print_table("attrition", result.attrition)
    t = result.labels
    print(
        f"\n{len(t):,} persons, {int(t['event'].sum()):,} with the outcome within "
        f"{spec.horizon_days:g} days, median follow-up {t['duration'].median():.0f} days"
    )
    write_survival_labels(t, labels_path, task=spec.name)
    print(f"labels written to {labels_path}")
    return 0


# ---------------------------------------------------------------------------------------------
# ehrseq run
# ---------------------------------------------------------------------------------------------
class _Stages:
    """The cache: a stage is done when ``out/<stage>/key.json`` holds its current key."""

    def __init__(self, out: Path, force: bool) -> None:
        self.out, self.force = out, force
        self.status: dict[str, str] = {}
        self.seconds: dict[str, float] = {}

    def folder(self, stage: str) -> Path:
        return self.out / stage

    def cached(self, stage: str, key: str) -> bool:
        marker = self.out / stage / "key.json"
        if self.force or not marker.is_file():
            return False
        try:
            ok = json.loads(marker.read_text()).get("key") == key
        except (OSError, json.JSONDecodeError):
            return False
        if ok:
            self.status[stage] = "cached"
            print(f"[{stage}] cached")
        return ok

    def start(self, stage: str) -> float:
        folder = self.folder(stage)
        if folder.is_dir():  # an earlier run's files (a stage interrupted half-way is not done)
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        print(f"[{stage}] running")
        return time.perf_counter()

    def finish(self, stage: str, key: str, t0: float) -> None:
        self.seconds[stage] = time.perf_counter() - t0
        (self.out / stage / "key.json").write_text(json.dumps({"key": key}))
        self.status[stage] = "ran"
        print(f"[{stage}] done in {self.seconds[stage]:.1f} s")


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """The run's settings: ``--profile``, then the overrides of the command line.

    Raises:
        CliError: an override out of range.
    """
    cfg = PROFILES[args.profile]
    changes = {
        "epochs": args.epochs,
        "pretrain_epochs": args.pretrain_epochs,
        "n_bins": args.n_bins,
        "n_boot": args.n_boot,
        "seed": args.seed,
    }
    cfg = dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})
    if cfg.n_bins < 2:
        raise CliError(f"--n-bins {cfg.n_bins}: need at least 2 time bins")
    if cfg.epochs < 1 or cfg.pretrain_epochs < 0 or cfg.n_boot < 1:
        raise CliError("--epochs and --n-boot must be >= 1, --pretrain-epochs >= 0")
    return cfg


def _load_stage(st: _Stages, path: Path, mode: str) -> tuple[str, Input | None]:
    from ehrseq import __version__

    key = _key("load", fingerprint(path), mode, __version__)
    folder = st.folder("load")
    if st.cached("load", key):
        return key, None
    t0 = st.start("load")
    data = read_input(path, mode=mode, events_to=folder / "events.parquet")
    data.person.to_parquet(folder / "person.parquet")
    data.observation_period.to_parquet(folder / "observation_period.parquet")
    data.report.to_csv(folder / "report.csv", index=False)
    data.summary.to_csv(folder / "summary.csv", index=False)
    (folder / "meta.json").write_text(json.dumps({"kind": data.kind, "notes": data.notes}))
    st.finish("load", key, t0)
    return key, data


def _read_loaded(folder: Path) -> Input:
    meta = json.loads((folder / "meta.json").read_text())

    def csv(name: str) -> pd.DataFrame:
        try:
            return pd.read_csv(folder / name)
        except pd.errors.EmptyDataError:
            return pd.DataFrame()

    import pyarrow.parquet as pq

    empty = pq.read_schema(folder / "events.parquet").empty_table().to_pandas()
    return Input(
        meta["kind"],
        empty,  # the rows are read where needed (read_events)
        pd.read_parquet(folder / "person.parquet"),
        pd.read_parquet(folder / "observation_period.parquet"),
        csv("report.csv"),
        csv("summary.csv"),
        meta["notes"],
    )


def _load_init(path: Path) -> dict:
    """The encoder weights of a checkpoint, read with ``weights_only=True``: an encoder state
    dict, a ``fit`` checkpoint (``{"model": ...}``), or a pretraining/survival model's state
    (keys under ``encoder.``)."""
    import torch

    if not path.is_file():
        raise CliError(f"--init {path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # an unpickling error names what was refused
        raise CliError(f"--init {path}: not a weights-only checkpoint ({err})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise CliError(f"--init {path}: expected a state dict")
    inner = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    return inner or state


def _pretrain(
    task,
    cfg: RunConfig,
    init: tuple[Path, dict] | None,
    device,
    folder: Path,
    partial: Path | None = None,
):
    """:func:`~ehrseq.cli.steps.pretrain_encoder` (its artefact kept in ``folder``), from
    ``init`` (``--init`` and its weights) when given. With ``partial`` the artefact is
    trained there, resuming what an interrupted run left, then moved into ``folder``."""
    import torch

    path, state = init if init is not None else (None, None)
    root = partial or folder
    try:
        encoder, history = pretrain_encoder(
            task, cfg, init=state, device=device, root=root, resume=partial is not None
        )
    except ValueError as err:
        if state is None:
            raise
        raise CliError(f"--init {path}: {err} (another vocabulary or encoder size?)") from None
    torch.save(encoder, folder / "encoder.pt")
    history.to_csv(folder / "history.csv", index=False)
    if partial is not None:  # the artefact joins the stage's files, as without resuming
        for artefact in partial.glob("behrt-pretrained-*"):
            shutil.move(str(artefact), str(folder / artefact.name))


def _finetune(
    task, cfg: RunConfig, device: str | None, pre: Path, folder: Path, partial: Path | None = None
) -> None:
    """:func:`~ehrseq.cli.steps.finetune_survival` from the pretrained encoder in ``pre``
    (its per-epoch checkpoints in ``partial``, resumed after an interruption)."""
    import torch

    state = torch.load(pre / "encoder.pt", map_location="cpu", weights_only=True)
    runs = finetune_survival(task, cfg, state, device=device, resume_dir=partial)
    torch.save(runs.models[0].cpu().state_dict(), folder / "model.pt")
    np.save(folder / "surv_test.npy", runs.survs[0])
    runs.histories[0].to_csv(folder / "history.csv", index=False)
    (folder / "cost.json").write_text(json.dumps(runs.cost))


def _baselines(task, cfg: RunConfig, folder: Path) -> None:
    """:func:`~ehrseq.cli.steps.baseline_curves`: the three models' test curves, the Cox
    model's size, the L1 logistic regression's choice of penalty."""
    fits = baseline_curves(task, cfg)
    if fits.n_cox_warnings:
        print(f"[baselines] lifelines: {fits.n_cox_warnings} convergence warnings (small cohort?)")
    np.save(folder / "km.npy", fits.curves["Kaplan-Meier"])
    np.save(folder / "cox.npy", fits.curves["Cox, bag of codes"])
    np.save(folder / "lasso.npy", fits.curves["L1 logistic"])
    (folder / "cox.json").write_text(json.dumps({"features": fits.cox.n_parameters}))
    lasso = fits.lasso
    summary = {
        "C": lasso.C,
        "non_zero": len(lasso.coef),
        "features": lasso.n_features,
        "train_labelled": lasso.n_train,
        "train_unlabelled": lasso.n_unlabelled,
    }
    (folder / "lasso.json").write_text(json.dumps(summary))
    lasso.grid.to_csv(folder / "lasso_grid.csv", index=False)


MODELS = {
    "BEHRT survival": ("finetune", "surv_test.npy"),
    "Cox, bag of codes": ("baselines", "cox.npy"),
    "L1 logistic": ("baselines", "lasso.npy"),
    "Kaplan-Meier": ("baselines", "km.npy"),
}


def _evaluate(out: Path, cfg: RunConfig, folder: Path) -> None:
    """:func:`~ehrseq.cli.steps.evaluate_models` on the curves the stages wrote."""
    frame = pd.read_parquet(out / "task" / "frame.parquet")
    protocol = survival_protocol(frame, np.load(out / "task" / "cuts.npy"), cfg)
    survs = {name: np.load(out / stage / file) for name, (stage, file) in MODELS.items()}
    metrics, compare, calibration = evaluate_models(protocol, survs)
    metrics.to_csv(folder / "metrics.csv", index=False)
    compare.to_csv(folder / "compare.csv", index=False)
    calibration.to_csv(folder / "calibration.csv", index=False)


def _partial(out: Path, stage: str, key: str) -> Path:
    """``out/.partial/<stage>-<key>/``: where a training stage keeps its checkpoints until
    it finishes. A folder of the same stage under another key (a changed setting) is
    removed: only the same training resumes."""
    folder = out / ".partial" / f"{stage}-{key}"
    for other in (out / ".partial").glob(f"{stage}-*"):
        if other != folder:
            shutil.rmtree(other, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _task(out: Path, data: Input | None, cfg: RunConfig, spec: CohortSpec):
    """The run's task from the ``load`` and ``cohort`` stages' files under ``out``
    (``data``: the loaded input when the ``load`` stage just ran in this process)."""
    data = data or _read_loaded(out / "load")
    labels = pd.read_parquet(out / "cohort" / "labels_full.parquet")
    history = _history(out / "load" / "events.parquet", data, labels)
    return build_task(history, labels, cfg, spec.horizon_days)


def run_command(args: argparse.Namespace) -> int:
    """``ehrseq run``: every stage (see the module docstring), cached in ``--out``;
    under ``torchrun``, rank 0 runs them and the other ranks join the training
    (:mod:`ehrseq.cli.ranks`)."""
    from ehrseq.cli.ranks import follow, start_ranks

    with start_ranks(args.device, args.rank_timeout) as ranks:
        if not ranks.main:
            return follow(args, ranks, lambda c, s: _task(args.out, None, c, s))
        try:
            code = _lead(args, ranks)
        except BaseException as err:
            if ranks.world > 1 and ranks.waiting:  # the followers wait: they exit 1 too
                text = (str(err).strip() or type(err).__name__).splitlines()[0]
                with contextlib.suppress(RuntimeError):  # a follower already gone
                    ranks.tell(("fail", text))
            raise
        ranks.tell(("done",))
        return code


def _lead(args: argparse.Namespace, ranks) -> int:
    """Every stage of ``ehrseq run`` in this process (rank 0 of ``ranks``); a training
    stage that runs is announced to the other ranks first."""
    out: Path = args.out
    _writable(out)
    cfg = resolve_config(args)
    spec = CohortSpec.from_toml(args.cohort)
    device = ranks.device
    kind = "bf16 autocast" if device.type == "cuda" else "float32"
    where = f", rank 0 of {ranks.world}" if ranks.world > 1 else ""
    print(f"device {device} ({kind}{where})")
    dev = str(device)
    # read now: the stage that uses it starts from an empty folder, which may hold the file
    init = (args.init, _load_init(args.init)) if args.init else None
    st = _Stages(out, args.force)
    mode = "strict" if args.strict else "lenient"
    t_all = time.perf_counter()

    load_key, data = _load_stage(st, args.path, mode)
    folder = st.folder("cohort")
    cohort_key = _key(load_key, spec.key())
    if not st.cached("cohort", cohort_key):
        from ehrseq.data.meds import write_survival_labels

        t0 = st.start("cohort")
        data = data or _read_loaded(st.folder("load"))
        result = _cohort(args.path, spec, data, st.folder("load") / "events.parquet")
        write_survival_labels(result.labels, folder / "labels.parquet", task=spec.name)
        result.labels.to_parquet(folder / "labels_full.parquet")
        result.attrition.to_csv(folder / "attrition.csv", index=False)
        concepts = {"index": result.index_ids, "outcome": result.outcome_ids}
        (folder / "concepts.json").write_text(json.dumps(concepts))
        st.finish("cohort", cohort_key, t0)

    task_key = _key(
        cohort_key,
        cfg.part("n_bins", "max_len", "min_frequency", "val_fraction", "test_fraction", "seed"),
    )
    init_key = fingerprint(args.init) if args.init else None
    pre_key = _key(
        task_key,
        cfg.part(
            "d_model", "n_layers", "n_heads", "d_ff", "dropout", "pretrain_epochs", "batch_size"
        ),
        init_key,
    )
    fine_key = _key(pre_key, cfg.part("epochs", "patience", "lr", "batch_size"))
    base_key = _key(task_key, cfg.part("penalizer", "min_share", "lasso_cs", "seed"))
    eval_key = _key(fine_key, base_key, cfg.part("n_boot"))
    task = None

    def get_task():
        nonlocal task
        if task is None:
            task = _task(out, data, cfg, spec)
        return task

    folder = st.folder("task")
    if not st.cached("task", task_key):
        t0 = st.start("task")
        t = get_task()
        t.vocab.save(folder / "vocab.json")
        frame = task_frame(t)
        frame.to_parquet(folder / "frame.parquet")
        np.save(folder / "cuts.npy", t.cuts)
        t.summary().reset_index().to_csv(folder / "summary.csv", index=False)
        st.finish("task", task_key, t0)

    pre = st.folder("pretrain")
    for stage, key, fn in (
        ("pretrain", pre_key, lambda f, p: _pretrain(get_task(), cfg, init, dev, f, p)),
        ("finetune", fine_key, lambda f, p: _finetune(get_task(), cfg, dev, pre, f, p)),
        ("baselines", base_key, lambda f, p: _baselines(get_task(), cfg, f)),
        ("evaluate", eval_key, lambda f, p: _evaluate(out, cfg, f)),
    ):
        if not st.cached(stage, key):
            t0 = st.start(stage)
            partial = None
            if stage in ("pretrain", "finetune"):  # the other ranks train with this one
                ranks.tell((stage, init[1] if init else None))
                # one process: per-epoch checkpoints outside the stage's folder, so a run
                # stopped half-way resumes (several ranks start over: the followers hold
                # no checkpoint to resume from)
                partial = _partial(out, stage, key) if ranks.world == 1 else None
            fn(st.folder(stage), partial)
            ranks.stage_done()
            st.finish(stage, key, t0)
            if partial is not None:
                shutil.rmtree(partial, ignore_errors=True)
                with contextlib.suppress(OSError):  # gone once nothing is left to resume
                    partial.parent.rmdir()

    from ehrseq.cli.outputs import write_outputs

    t0 = time.perf_counter()
    write_outputs(out, spec, cfg, args, st.status, str(device))
    st.status["report"] = "ran"
    st.seconds["report"] = time.perf_counter() - t0
    (out / "stages.json").write_text(
        json.dumps({"status": st.status, "seconds": st.seconds}, indent=1)
    )
    print(
        f"\nwrote {out / 'report.html'} and {out / 'metrics.json'} in {time.perf_counter() - t_all:.1f} s"
    )
    return 0
