r"""One survival task for the modelling chapters: the same cohort, splits, labels and tensors.

Chapters from the survival head onwards compare models **under one protocol**, so they all
build their data here instead of re-deriving it:

1. generate the synthetic cohort and write it as an OMOP CDM to a temporary folder;
2. read it back with :func:`ehrseq.data.omop.load_omop` (the path a user's export takes);
3. label heart failure (first occurrence of any ``heart_failure`` condition concept) from a
   prediction time ``history_days`` after enrolment, over ``horizon_years``
   (:func:`ehrseq.data.labels.survival_labels`);
4. split patients into train / validation / test **before** anything is fitted;
5. build sequences strictly before the prediction time
   (:func:`ehrseq.data.sequences.build_sequences`), fit the vocabulary on training patients
   only, and encode everyone (:func:`ehrseq.data.tensors.encode`);
6. discretise follow-up into ``n_bins`` bins of ``bin_days`` (:func:`ehrseq.data.labels.discretize`).

Steps 4-6 are :func:`task_from_labels`, which takes any labelled cohort: the ``ehrseq run``
command builds a reader's own export's task through it.

The oracle of each patient (the generator's true risk over the horizon and true survival at
the bin edges, from :meth:`ehrseq.data.synthetic.Truth.true_survival`) comes with it, so every
model is placed between chance and the ceiling on the same patients.

Derived in the chapter "The discrete-time survival framework"; used from "Survival head and
aggregation" on.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from torch.utils.data import DataLoader

from ehrseq.config import artifact_root
from ehrseq.data.labels import Outcome, discretize, survival_labels
from ehrseq.data.omop import load_omop
from ehrseq.data.sequences import Sequences, build_sequences
from ehrseq.data.synthetic import (
    DAYS_PER_MONTH,
    SyntheticCohort,
    SyntheticConfig,
    generate_cohort,
    read_parquet,
)
from ehrseq.data.tensors import (
    FlatEncoding,
    LengthBucketSampler,
    SequenceDataset,
    collate_flat,
    collate_hierarchical,
    encode,
)
from ehrseq.data.vocab import Vocab

__all__ = [
    "SPLITS",
    "SurvivalTask",
    "TaskConfig",
    "prepare_survival_task",
    "shared_task_config",
    "task_from_labels",
]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class TaskConfig:
    """The protocol every modelling chapter shares.

    Attributes:
        n_patients: people generated (not all are labelled: prevalent cases and people who
            leave before the prediction time drop out, counted in ``SurvivalTask.dropped``).
        seed: generator and split seed.
        history_days: prediction time = enrolment + this many days (two years: enough
            record for a trajectory, such as a lab's slope, to show).
        horizon_years: follow-up window after the prediction time.
        n_bins: discrete-time bins over the horizon (equal width).
        strategy: sequence strategy (``flat``, ``visit``, ``domain``).
        max_len: most tokens per patient (the most recent are kept).
        min_frequency: vocabulary threshold, on training patients.
        val_fraction, test_fraction: shares of labelled patients.
        add_cls: prepend ``[CLS]`` (and close visits with ``[SEP]`` when ``add_sep``).
        hazard_scale: passed to the generator (0 removes the signal).
        hazard: the generator's hazard setting, ``"interaction"`` or ``"additive"``.
        n_test_patients: people generated for the test split only, beside ``n_patients``
            (whose labelled patients are split by the fractions as before): inference is
            cheap, and a test split needs about a thousand events to resolve 0.01 in C.
    """

    n_patients: int = 4000
    seed: int = 7
    history_days: float = 730.5
    horizon_years: float = 5.0
    n_bins: int = 20
    strategy: str = "visit"
    max_len: int = 128
    min_frequency: int = 5
    val_fraction: float = 0.15
    test_fraction: float = 0.25
    add_cls: bool = True
    add_sep: bool = True
    hazard_scale: float = 1.0
    hazard: str = "interaction"
    n_test_patients: int = 0

    def validate(self) -> TaskConfig:
        """Raise ``ValueError`` naming the first field that does not make sense."""
        if self.n_patients < 50:
            raise ValueError(f"TaskConfig.n_patients = {self.n_patients}: need at least 50")
        if self.history_days <= 0 or self.horizon_years <= 0:
            raise ValueError("TaskConfig: history_days and horizon_years must be > 0")
        if self.n_bins < 1:
            raise ValueError(f"TaskConfig.n_bins = {self.n_bins}: must be >= 1")
        if not (0 < self.val_fraction < 1 and 0 < self.test_fraction < 1):
            raise ValueError("TaskConfig: val_fraction and test_fraction must be in (0, 1)")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("TaskConfig: val_fraction + test_fraction leaves too few to train on")
        if self.n_test_patients < 0:
            raise ValueError(f"TaskConfig.n_test_patients = {self.n_test_patients}: must be >= 0")
        if self.strategy not in ("flat", "visit", "domain"):
            raise ValueError(f"TaskConfig.strategy = {self.strategy!r}: flat, visit or domain")
        return self

    @property
    def horizon_days(self) -> float:
        return self.horizon_years * 365.25

    @property
    def bin_days(self) -> float:
        return self.horizon_days / self.n_bins

    def key(self) -> str:
        """A short hash of the config (for caching artefacts built on this task)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


#: The task every modelling chapter shares, per profile: the same patients, splits and
#: artefacts (pretrained encoders are keyed by it). ``book`` generates 8,000 people for
#: training and validation and 8,000 more for the test split, about 1,000 test events.
SHARED_TASK = {
    "smoke": {"n_patients": 1500, "n_test_patients": 300},
    "book": {"n_patients": 8000, "n_test_patients": 8000},
    "full": {"n_patients": 100_000, "n_test_patients": 50_000},
}


def shared_task_config(profile: str | None = None, **overrides) -> TaskConfig:
    """The :class:`TaskConfig` the chapters share in a profile (default: the active one).

    Args:
        profile: ``smoke``, ``book`` or ``full``.
        overrides: fields to change (a chapter that needs another task says so).
    """
    from ehrseq.config import current_profile

    profile = profile or current_profile()
    if profile not in SHARED_TASK:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(SHARED_TASK)}")
    return TaskConfig(**(SHARED_TASK[profile] | overrides)).validate()


@dataclass
class SurvivalTask:
    """Everything a modelling chapter needs, aligned by patient.

    Attributes:
        config: the protocol.
        labels: the label sidecar (``subject_id``, ``prediction_time``, ``event_time``,
            ``censor_time``, ``event``, ``duration`` in days) of the patients kept.
        person: the person table (``person_id``, ``birth_datetime``, ``gender_concept_id``)
            the sequences were built with (age and sex for the baselines).
        sequences: the token sequences (strictly before each prediction time).
        vocab: fitted on training patients.
        encoding: every kept patient, in ``labels`` order.
        bin_index, event: per patient (``labels`` order), the discretised label.
        cuts: bin edges in days, ``(n_bins + 1,)``.
        split: ``{"train"|"val"|"test": person ids}``.
        dropped: patients left out and why.
        cohort: the generated cohort (tables and truth) when the task is synthetic, for the
            oracle; ``None`` for a reader's own data.
    """

    config: TaskConfig
    labels: pd.DataFrame
    person: pd.DataFrame
    sequences: Sequences
    vocab: Vocab
    encoding: FlatEncoding
    bin_index: np.ndarray
    event: np.ndarray
    cuts: np.ndarray
    split: dict[str, np.ndarray]
    dropped: dict[str, int] = field(default_factory=dict)
    cohort: SyntheticCohort | None = None

    def _rows(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return pd.Index(self.labels["subject_id"]).get_indexer(self.split[split])

    def frame(self, split: str) -> pd.DataFrame:
        """The labels of one split (days and bins), in the split's order."""
        rows = self._rows(split)
        out = self.labels.iloc[rows].reset_index(drop=True).copy()
        out["bin"] = self.bin_index[rows]
        return out

    def dataset(self, split: str) -> SequenceDataset:
        """Tensors of one split with labels ``durations`` = bin index and ``events``."""
        rows = self._rows(split)
        enc = self.encoding.select(self.split[split])
        return SequenceDataset(enc, durations=self.bin_index[rows], events=self.event[rows])

    def loader(
        self,
        split: str,
        batch_size: int = 64,
        *,
        shuffle: bool | None = None,
        hierarchical: bool = False,
        seed: int | None = None,
    ) -> DataLoader:
        """A DataLoader with dynamic padding and length bucketing (shuffled for ``train``)."""
        ds = self.dataset(split)
        shuffle = split == "train" if shuffle is None else shuffle
        sampler = LengthBucketSampler(
            ds.lengths, batch_size, shuffle=shuffle, seed=self.config.seed if seed is None else seed
        )
        collate = collate_hierarchical if hierarchical else collate_flat
        return DataLoader(ds, batch_sampler=sampler, collate_fn=collate)

    def _truth(self):
        if self.cohort is None:
            raise ValueError("this task has no synthetic cohort: the oracle needs its truth")
        return self.cohort.truth

    def _index_days(self, split: str) -> np.ndarray:
        frame = self.frame(split)
        enrol = self._truth().persons.set_index("person_id")["enrol_date"]
        return (
            (frame["prediction_time"] - enrol.loc[frame["subject_id"]].to_numpy()).dt.days
        ).to_numpy(float)

    def oracle_risk(self, split: str) -> np.ndarray:
        """The generator's true probability of the outcome within the horizon (the ceiling)."""
        return self._truth().true_risk(
            "heart_failure",
            self._index_days(split),
            self.config.horizon_days,
            person_ids=self.split[split],
        )

    def oracle_survival(self, split: str) -> np.ndarray:
        """True survival at the right edge of every bin, ``(n, n_bins)``, from the hazard path."""
        months = int(np.ceil(self.config.horizon_days / DAYS_PER_MONTH))
        monthly = self._truth().true_survival(
            "heart_failure", self._index_days(split), months, person_ids=self.split[split]
        )
        edge_month = np.clip(np.round(self.cuts[1:] / DAYS_PER_MONTH).astype(int), 1, months)
        return monthly[:, edge_month - 1]

    def summary(self) -> pd.DataFrame:
        """Patients, events and tokens per split, as a reader reads them.

        The event rate has four decimals (not pandas' six); the median number of tokens
        is a whole number where every split's is (a median of counts can end in .5).
        """
        rows = []
        for s in SPLITS:
            f = self.frame(s)
            enc = self.encoding.select(self.split[s])
            median = float(np.median(enc.lengths))
            rows.append(
                {
                    "split": s,
                    "patients": len(f),
                    "events": int(f["event"].sum()),
                    "event rate": round(float(f["event"].mean()), 4),
                    "median tokens": int(median) if median.is_integer() else median,
                }
            )
        return pd.DataFrame(rows).set_index("split")


_OMOP_FRAMES = ("events", "person", "observation_period")


def _omop_folder(synthetic: SyntheticConfig) -> Path:
    """Where :func:`_cohort_and_read_back` keeps the cohort and frames of ``synthetic``."""
    from ehrseq import __version__
    from ehrseq.data.concepts import data_dir

    vocabulary = hashlib.sha256()
    for path in sorted((data_dir() / "vocabulary").rglob("*")):
        if path.is_file():
            vocabulary.update(path.name.encode() + path.read_bytes())
    blob = json.dumps(
        {"version": __version__, "cohort": asdict(synthetic), "vocab": vocabulary.hexdigest()},
        sort_keys=True,
    )
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return artifact_root() / f"task-omop-{key}"


#: The modules whose code decides a task built from a cohort's frames: their source is
#: part of the key of a kept task, so an edit to any of them builds it afresh.
_TASK_SOURCES = ("task", "sequences", "tensors", "vocab", "labels", "events")


def _task_folder(cfg: TaskConfig, synthetic: SyntheticConfig) -> Path:
    """Where :func:`prepare_survival_task` keeps the task of ``cfg``."""
    source = hashlib.sha256()
    here = Path(__file__).parent
    for name in _TASK_SOURCES:
        source.update((here / f"{name}.py").read_bytes())
    blob = json.dumps(
        {"omop": _omop_folder(synthetic).name, "task": asdict(cfg), "source": source.hexdigest()},
        sort_keys=True,
        default=str,
    )
    return artifact_root() / f"task-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def _save_task(task: SurvivalTask, folder: Path) -> None:
    """Write ``task`` (all but its config and cohort) into ``folder``, atomically."""
    part = folder.with_name(folder.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    task.labels.to_parquet(part / "labels.parquet")
    task.person.to_parquet(part / "person.parquet")
    task.sequences.frame.to_parquet(part / "sequences.parquet")
    task.vocab.save(part / "vocab.json")
    enc = task.encoding
    arrays = {"person_ids": enc.person_ids, "offsets": enc.offsets}
    arrays |= {f"enc.{k}": v for k, v in enc.arrays.items()}
    arrays |= {"bin_index": task.bin_index, "event": task.event, "cuts": task.cuts}
    arrays |= {f"split.{k}": v for k, v in task.split.items()}
    np.savez(part / "arrays.npz", **arrays)
    meta = {
        "strategy": task.sequences.strategy,
        "sequences_report": task.sequences.report,
        "encoding_report": enc.report,
        "encoding_arrays": list(enc.arrays),
        "splits": list(task.split),
        "dropped": task.dropped,
    }
    (part / "task.json").write_text(json.dumps(meta, indent=1, default=int))
    part.replace(folder)


def _load_task(folder: Path, cfg: TaskConfig) -> SurvivalTask:
    """The task :func:`_save_task` wrote (equal fields), ``cohort`` left ``None``."""
    meta = json.loads((folder / "task.json").read_text())
    with np.load(folder / "arrays.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    encoding = FlatEncoding(
        person_ids=arrays["person_ids"],
        offsets=arrays["offsets"],
        arrays={k: arrays[f"enc.{k}"] for k in meta["encoding_arrays"]},
        report=meta["encoding_report"],
    )
    sequences = Sequences(
        read_parquet(folder / "sequences.parquet"), meta["strategy"], meta["sequences_report"]
    )
    return SurvivalTask(
        config=cfg,
        labels=pd.read_parquet(folder / "labels.parquet"),
        person=pd.read_parquet(folder / "person.parquet"),
        sequences=sequences,
        vocab=Vocab.load(folder / "vocab.json"),
        encoding=encoding,
        bin_index=arrays["bin_index"],
        event=arrays["event"],
        cuts=arrays["cuts"],
        split={k: arrays[f"split.{k}"] for k in meta["splits"]},
        dropped=meta["dropped"],
    )


def _cohort_and_read_back(
    synthetic: SyntheticConfig, cache: bool
) -> tuple[SyntheticCohort, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Generate the cohort, write it as an OMOP CDM and read it back strictly (:func:`load_omop`).

    Generating a large cohort and its strict read-back take most of the task's time (about
    11 s and 30 s for the ``book`` profile's 16,000 people on 2 cores), and give the same
    result for the same generator config, so with ``cache`` both are kept under the artefact
    root (the cohort through :meth:`SyntheticCohort.save`, the frames as parquet), keyed by
    the generator config, the library version and the vocabulary files, and read from there
    afterwards (a file lock makes parallel chapters build them once).
    """

    def read_back(cohort: SyntheticCohort) -> tuple[pd.DataFrame, ...]:
        with tempfile.TemporaryDirectory(prefix="ehrseq_task_") as folder:
            cohort.write_omop(Path(folder))
            data = load_omop(Path(folder), mode="strict")
        return data.events, data.person, data.observation_period

    if not cache:
        cohort = generate_cohort(synthetic)
        return (cohort, *read_back(cohort))
    from filelock import FileLock

    folder = _omop_folder(synthetic)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        paths = [folder / f"{name}.parquet" for name in _OMOP_FRAMES]
        if all(p.is_file() for p in paths) and (folder / "cohort" / "cohort.json").is_file():
            frames = (read_parquet(p) for p in paths)
            return (SyntheticCohort.load(folder / "cohort"), *frames)
        cohort = generate_cohort(synthetic)
        frames = read_back(cohort)
        folder.mkdir(parents=True, exist_ok=True)
        for frame, path in zip(frames, paths, strict=True):
            part = path.with_suffix(".parquet.part")
            frame.to_parquet(part, index=True)
            part.replace(path)
        part = folder / "cohort.part"
        cohort.save(part)  # cohort.json last: a complete folder is renamed into place
        part.replace(folder / "cohort")
        return (cohort, *frames)


def prepare_survival_task(config: TaskConfig | None = None, cache: bool = True) -> SurvivalTask:
    """Build the shared survival task (steps in the module docstring).

    Args:
        config: the protocol (default :class:`TaskConfig`).
        cache: keep the synthetic cohort and its strictly validated OMOP read-back under the
            artefact root and reuse them (the same frames as a fresh run; see
            :func:`_cohort_and_read_back`), and the task built from them too (its frames,
            arrays and vocabulary, keyed by the config, the cohort and the source of the
            modules that build it): every chapter after the first loads it (about 1 s)
            instead of building it again from the events (5-7 s on the ``book`` profile).

    Raises:
        ValueError: on a config that does not make sense.
    """
    cfg = (config or TaskConfig()).validate()
    synthetic = SyntheticConfig(
        n_patients=cfg.n_patients + cfg.n_test_patients,
        seed=cfg.seed,
        hazard_scale=cfg.hazard_scale,
        hazard=cfg.hazard,
    )
    if not cache:
        return _build_task(cfg, synthetic, cache=False)
    from filelock import FileLock

    folder = _task_folder(cfg, synthetic)
    folder.parent.mkdir(parents=True, exist_ok=True)
    cohort_json = _omop_folder(synthetic) / "cohort" / "cohort.json"
    with FileLock(str(folder) + ".lock"):
        if (folder / "task.json").is_file() and cohort_json.is_file():
            task = _load_task(folder, cfg)
            task.cohort = SyntheticCohort.load(cohort_json.parent)
            return task
        task = _build_task(cfg, synthetic, cache=True)
        _save_task(task, folder)
        return task


def _build_task(cfg: TaskConfig, synthetic: SyntheticConfig, cache: bool) -> SurvivalTask:
    """Steps 1-6 of the module docstring (the cohort's frames kept when ``cache``)."""
    cohort, events, person, observation_period = _cohort_and_read_back(synthetic, cache)
    outcome = Outcome.of_concepts(
        "heart_failure", cohort.vocabulary.ids("heart_failure", "condition")
    )
    labels = survival_labels(
        events,
        person,
        observation_period,
        outcome,
        cfg.history_days,
        horizon_days=cfg.horizon_days,
    )
    # the people generated beyond n_patients (ids past it) are test patients only
    ids = labels.table["subject_id"].to_numpy()
    test_only = ids[ids > cohort.config.person_id_offset + cfg.n_patients]
    task = task_from_labels(events, person, labels.table, cfg, test_only=test_only)
    task.cohort = cohort
    task.dropped = dict(labels.dropped) | task.dropped
    return task


_LABEL_COLUMNS = ("subject_id", "prediction_time", "duration", "event")


def task_from_labels(
    events: pd.DataFrame,
    person: pd.DataFrame,
    labels: pd.DataFrame,
    config: TaskConfig,
    *,
    test_only: np.ndarray | None = None,
) -> SurvivalTask:
    """Steps 4-6 of the module docstring on any labelled cohort: sequences, split, vocabulary, bins.

    Persons without a token before their prediction time are dropped (counted in
    ``dropped["no_history_before_prediction_time"]``); the rest are split by person with
    ``config.seed``, the vocabulary is fitted on the training persons, and follow-up is cut
    into ``config.n_bins`` equal bins over ``config.horizon_days``.

    Args:
        events: the event table (:func:`ehrseq.data.omop.load_omop`,
            :func:`ehrseq.data.meds.read_meds`).
        person: the person table of the same export.
        labels: one row per person: ``subject_id``, ``prediction_time``, ``duration`` (days)
            and ``event`` (1: the outcome), e.g. :func:`ehrseq.data.labels.survival_labels`'s
            table.
        config: the sequence, split and bin settings (``strategy``, ``max_len``, ``add_cls``,
            ``add_sep``, ``min_frequency``, ``val_fraction``, ``test_fraction``,
            ``horizon_years``, ``n_bins``, ``seed``); its cohort fields are not read.
        test_only: person ids that go to the test split only, beside the fractions of the
            others (the extra test patients of ``TaskConfig.n_test_patients``).

    Returns:
        the task, ``cohort`` left ``None``.

    Raises:
        ValueError: labels without one of the columns above, or no person with a history.
    """
    cfg = config
    missing = [c for c in _LABEL_COLUMNS if c not in labels.columns]
    if missing:
        raise ValueError(f"labels lack the columns {missing}; need {list(_LABEL_COLUMNS)}")
    seqs = build_sequences(
        events,
        person,
        labels[["subject_id", "prediction_time"]].rename(columns={"subject_id": "person_id"}),
        strategy=cfg.strategy,
        max_len=cfg.max_len,
        add_cls=cfg.add_cls,
        add_sep=cfg.add_sep,
    )
    has_history = np.isin(labels["subject_id"].to_numpy(), seqs.person_ids)
    if not has_history.any():
        raise ValueError(
            f"none of the {len(labels)} labelled persons has a record before the prediction time"
        )
    dropped = {"no_history_before_prediction_time": int((~has_history).sum())}
    table = labels.loc[has_history].reset_index(drop=True)

    rng = np.random.default_rng(cfg.seed)
    ids = table["subject_id"].to_numpy()
    extra = np.isin(ids, test_only) if test_only is not None else np.zeros(len(ids), bool)
    base = ids[~extra]
    order = rng.permutation(len(base))
    n_test = int(round(cfg.test_fraction * len(base)))
    n_val = int(round(cfg.val_fraction * len(base)))
    split = {
        "test": np.sort(np.concatenate([base[order[:n_test]], ids[extra]])),
        "val": np.sort(base[order[n_test : n_test + n_val]]),
        "train": np.sort(base[order[n_test + n_val :]]),
    }
    vocab = Vocab.fit(seqs.frame, split["train"], min_frequency=cfg.min_frequency)
    encoding = encode(seqs, vocab).select(ids)
    cuts = np.linspace(0.0, cfg.horizon_days, cfg.n_bins + 1)
    bin_index, event = discretize(table["duration"].to_numpy(), table["event"].to_numpy(), cuts)
    return SurvivalTask(
        config=cfg,
        labels=table,
        person=person,
        sequences=seqs,
        vocab=vocab,
        encoding=encoding,
        bin_index=np.asarray(bin_index),
        event=np.asarray(event),
        cuts=cuts,
        split=split,
        dropped=dropped,
    )
