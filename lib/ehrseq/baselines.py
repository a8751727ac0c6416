r"""Non-sequence baselines: Cox models on a bag of codes and on engineered features.

A sequence model earns its place only against the strongest model that ignores order. Two
such models live here, both ridge-penalised Cox models {cite}`cox1972regression` with
Breslow's baseline, fitted on the training patients of a :class:`~ehrseq.data.task.SurvivalTask`
and read at the task's bin edges, so their curves go through the same
:class:`~ehrseq.evaluate.SurvivalProtocol` as every neural model:

.. math:: h_i(t) = h_0(t) \exp(\beta^\top x_i), \qquad
          \hat S_i(t) = \hat S_0(t)^{\exp(\beta^\top x_i)}.

- **Bag of codes** (:func:`bag_of_codes`): :math:`\log(1 + \text{count})` of every vocabulary
  token in the history (lab tokens carry their value decile), plus age and sex.
- **Engineered features** (:func:`engineered_features`): what a careful epidemiologist
  builds from code lists, in blocks that can be added one at a time (:data:`FEATURE_BLOCKS`):
  ``counts`` (ever and how often, per clinical group), ``recency`` (a record in the last 90
  days and years since the first record, per group), ``last_lab`` (the latest value of every
  lab, on a log scale in reference units, with a missing flag) and ``lab_slope`` (the least-squares slope of each
  lab over its last three values, per year). Code lists are the cohort's clinical groups
  (``Truth.concept_groups``: the phenotype definitions an analyst would write), never the
  latent hazard.

Used in the chapter "Baselines and architecture decisions" and by
``benchmarks/bench_signal.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ehrseq.data.synthetic import MALE
from ehrseq.data.vocab import SPECIAL_TOKENS

__all__ = [
    "FEATURE_BLOCKS",
    "CoxBaseline",
    "bag_of_codes",
    "engineered_features",
    "token_count_features",
]

#: The blocks of :func:`engineered_features`, in the order a reader adds them.
FEATURE_BLOCKS = ("counts", "recency", "last_lab", "lab_slope")

_DAY = np.timedelta64(1, "D")


def _age_sex(task, split: str) -> pd.DataFrame:
    frame = task.frame(split)
    person = task.person.set_index("person_id").loc[frame["subject_id"]]
    age = (frame["prediction_time"] - person["birth_datetime"].to_numpy()).dt.days / 365.25
    male = (person["gender_concept_id"].to_numpy() == MALE).astype(float)
    return pd.DataFrame({"age_years": age.to_numpy(float), "male": male})


def bag_of_codes(task, split: str) -> pd.DataFrame:
    r"""Token counts of every patient of a split as :math:`\log(1+n)`, plus age and sex.

    The tokens are those of the task's encoding, the very sequences the neural models read.

    Args:
        task: a :class:`~ehrseq.data.task.SurvivalTask`.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Returns:
        one row per patient in ``task.frame(split)`` order; columns ``code_<token>`` (specials
        left out), ``age_years`` and ``male`` (from ``task.person``; an unknown birth date
        gives a missing age).
    """
    enc = task.encoding.select(task.split[split])
    n = len(enc)
    row = np.repeat(np.arange(n), np.diff(enc.offsets))  # patient of every token
    counts = np.zeros((n, len(task.vocab)))
    np.add.at(counts, (row, enc.arrays["codes"]), 1.0)  # (n, vocab)
    n_special = len(SPECIAL_TOKENS)
    names = [f"code_{t}" for t in task.vocab.itos[n_special:]]
    out = pd.DataFrame(np.log1p(counts[:, n_special:]), columns=names)
    return pd.concat([out, _age_sex(task, split)], axis=1)


def token_count_features(task, splits: Sequence[str] = ("train", "val", "test")) -> dict:
    r"""Per split: ``(x, durations, events)`` with ``x`` the fixed features of chapter 7.

    ``x`` is ``(n, V + 1)``: :math:`\log(1 + \text{count})` of every vocabulary token of the
    history before the prediction time (special tokens, which are no evidence, count 0), and
    the age at the last recorded token, standardised on the training patients (counts are
    left as they are: a token only five training patients have would become a z-score of
    about :math:`\sqrt{n/5}` and be fitted first). ``durations`` are the bin indices of the
    event or censoring and ``events`` 1 for an event in that bin, as ``hazard_nll`` expects.
    Patients are in split order.
    """
    import torch

    out = {}
    for split in dict.fromkeys(("train", *splits)):  # the training age moments come first
        ds = task.dataset(split)
        batch = ds.batch(np.arange(len(ds)))  # every patient of the split, padded
        codes, real = batch["codes"], batch["attention_mask"]  # (n, L), (n, L)
        real = real & (codes >= len(SPECIAL_TOKENS))  # [PAD], [CLS], [SEP], ... are no evidence
        counts = torch.zeros(len(ds), len(task.vocab)).scatter_add_(1, codes, real.float())
        last = batch["attention_mask"].sum(dim=1, keepdim=True) - 1  # (n, 1), last real token
        age = batch["ages"].gather(1, last)  # (n, 1), years
        out[split] = (
            torch.cat([torch.log1p(counts), age], dim=1),
            batch["durations"],
            batch["events"],
        )
    age_train = out["train"][0][:, -1]
    mean, sd = age_train.mean(), age_train.std()
    for x, _, _ in out.values():
        x[:, -1] = (x[:, -1] - mean) / sd  # age standardised on the training patients
    return {split: out[split] for split in splits}


def _standardise(value: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    r"""Lab values on a log scale, in reference units: :math:`\log(v / \mu) / (\sigma / \mu)`.

    For a lab whose spread is small beside its mean this equals :math:`(v - \mu) / \sigma` to
    first order; for a skewed, positive lab (natriuretic peptides, CRP) it is the scale an
    analyst would model, where a doubling counts the same at any level.
    """
    cv = sd / mean
    return np.log(np.maximum(value, 1e-3 * mean) / mean) / cv


def _last3_slopes(labs: pd.DataFrame) -> pd.Series:
    """Least-squares slope of ``z`` per year over each (patient, lab)'s last three values.

    ``labs`` is sorted oldest first within each patient; a lab with fewer than two values,
    or all on one day, gets slope 0.
    """
    key = ["person_id", "concept_id"]
    last = labs.loc[labs.groupby(key).cumcount(ascending=False) < 3]
    t = -last["days_before"].to_numpy() / 365.25  # years, increasing
    g = last.assign(t=t).groupby(key)
    dt = last.assign(t=t)["t"] - g["t"].transform("mean")
    dz = last["z"] - g["z"].transform("mean")
    sxy = (dt * dz).groupby([last["person_id"], last["concept_id"]]).sum()
    sxx = (dt * dt).groupby([last["person_id"], last["concept_id"]]).sum()
    return (sxy / sxx.where(sxx > 1e-12)).fillna(0.0)


def engineered_features(
    task, split: str, blocks: Sequence[str] = FEATURE_BLOCKS, window_days: float = 90.0
) -> pd.DataFrame:
    """Per-patient features an epidemiologist would build, by block (module docstring).

    Lab values are put on a log scale in units of the vocabulary's reference mean and sd
    (:func:`_standardise`), so no split's values move another's features.

    Args:
        task: a :class:`~ehrseq.data.task.SurvivalTask`.
        split: ``"train"``, ``"val"`` or ``"test"``.
        blocks: a subset of :data:`FEATURE_BLOCKS`.
        window_days: the recency window.

    Returns:
        one row per patient in ``task.frame(split)`` order; always ``age_years`` and ``male``.

    Raises:
        ValueError: on an unknown block, or a task without the synthetic cohort (whose
            clinical groups and lab references the features read).
    """
    unknown = set(blocks) - set(FEATURE_BLOCKS)
    if unknown:
        raise ValueError(f"unknown feature blocks {sorted(unknown)}; use {FEATURE_BLOCKS}")
    if task.cohort is None:
        raise ValueError("engineered_features needs the synthetic cohort's code lists")
    frame = task.frame(split)
    ids = frame["subject_id"].to_numpy()
    t0 = frame.set_index("subject_id")["prediction_time"]
    seq = task.sequences.frame
    seq = seq.loc[(seq["special"] == 0) & seq["person_id"].isin(ids)]
    groups = task.cohort.truth.concept_groups.drop_duplicates("concept_id")
    groups = groups.set_index("concept_id")
    ev = pd.DataFrame(
        {
            "person_id": seq["person_id"].to_numpy(),
            "days_before": (t0.loc[seq["person_id"]].to_numpy() - seq["time"].to_numpy()) / _DAY,
            "concept_id": seq["concept_id"].to_numpy(),
            "domain": seq["domain"].astype(str).to_numpy(),
            "value": seq["value_as_number"].to_numpy(),
        }
    )
    ev["group"] = groups["group"].reindex(ev["concept_id"]).to_numpy()
    is_lab = ev["domain"].eq("measurement").to_numpy()
    clinical = ev.loc[~is_lab & ev["group"].notna() & ev["group"].ne("routine")]
    clinical = clinical.assign(key=clinical["domain"] + ":" + clinical["group"])
    out = [_age_sex(task, split).set_index(pd.Index(ids))]
    if "counts" in blocks:
        n = clinical.groupby(["person_id", "key"]).size().unstack(fill_value=0)
        out.append(np.log1p(n).add_prefix("n_"))
        out.append((n > 0).astype(float).add_prefix("ever_"))
    if "recency" in blocks:
        g = clinical.groupby(["person_id", "key"])["days_before"]
        recent = (g.min() <= window_days).astype(float).unstack(fill_value=0.0)
        out.append(recent.add_prefix(f"last{int(window_days)}d_"))
        out.append((g.max() / 365.25).unstack(fill_value=0.0).add_prefix("years_since_first_"))
    labs = ev.loc[is_lab & ev["value"].notna()].sort_values(["person_id", "days_before"])
    if len(labs) and ("last_lab" in blocks or "lab_slope" in blocks):
        ref = task.cohort.vocabulary.annotation.drop_duplicates("concept_id")
        ref = ref.set_index("concept_id")[["ref_mean", "ref_sd"]]
        r = ref.reindex(labs["concept_id"])
        labs = labs.assign(
            z=_standardise(
                labs["value"].to_numpy(), r["ref_mean"].to_numpy(), r["ref_sd"].to_numpy()
            )
        )
        labs = labs.loc[np.isfinite(labs["z"])]
        labs = labs.iloc[::-1]  # oldest first within each patient
        by = labs.groupby(["person_id", "concept_id"])
        if "last_lab" in blocks:
            last = by["z"].last().unstack()
            out.append(last.fillna(0.0).add_prefix("lab_last_"))
            out.append(last.isna().astype(float).add_prefix("lab_missing_"))
        if "lab_slope" in blocks:
            out.append(_last3_slopes(labs).unstack(fill_value=0.0).add_prefix("lab_slope_"))
    x = pd.concat(out, axis=1).reindex(pd.Index(ids))
    return x.fillna({c: 1.0 for c in x.columns if c.startswith("lab_missing_")}).fillna(0.0)


@dataclass
class CoxBaseline:
    """A ridge-penalised Cox model on standardised features, read at fixed times.

    Features are kept when at least ``min_share`` of training patients have a non-zero value,
    then standardised on the training patients (the same shift and scale for every split).

    Attributes:
        penalizer: lifelines' ridge penalty (on standardised features).
        min_share: the least share of training patients with a non-zero feature.
    """

    penalizer: float = 0.3
    min_share: float = 0.02

    def fit(self, x: pd.DataFrame, durations: np.ndarray, events: np.ndarray) -> CoxBaseline:
        """Fit on training features ``x`` with durations and event flags (one per row)."""
        from lifelines import CoxPHFitter

        x = x.astype(float)
        share = (x != 0).mean(axis=0)
        self.columns_ = list(x.columns[share >= self.min_share])
        kept = x[self.columns_]
        self.mean_, self.sd_ = kept.mean(), kept.std().replace(0.0, 1.0)
        z = (kept - self.mean_) / self.sd_
        self.model_ = CoxPHFitter(penalizer=self.penalizer).fit(
            z.assign(duration=np.asarray(durations, float), event=np.asarray(events, int)),
            "duration",
            "event",
        )
        return self

    def _z(self, x: pd.DataFrame) -> pd.DataFrame:
        z = (x.reindex(columns=self.columns_, fill_value=0.0).astype(float) - self.mean_) / self.sd_
        if not np.isfinite(z.to_numpy()).all():
            raise ValueError("CoxBaseline: features are not finite after standardising")
        return z

    def predict_survival(self, x: pd.DataFrame, times: np.ndarray) -> np.ndarray:
        """Survival of every row at ``times``, shape ``(n, len(times))``."""
        return self.model_.predict_survival_function(self._z(x), times=times).to_numpy().T

    @property
    def n_parameters(self) -> int:
        return len(self.model_.params_)
