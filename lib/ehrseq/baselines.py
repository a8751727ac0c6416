r"""Non-sequence baselines: Cox models on a bag of codes and on engineered features, and the
L1 logistic regression of the OHDSI PatientLevelPrediction design.

A sequence model earns its place only against the strongest model that ignores order. Two
such models here are ridge-penalised Cox models {cite}`cox1972regression` with
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

The third, :func:`lasso_logistic`, is binary: an L1-penalised logistic regression
{cite}`tibshirani1996regression` for "the outcome within the horizon" on the same bag of codes,
the model of the OHDSI PatientLevelPrediction design {cite}`reps2018design`, its probability
turned into a survival curve so that the same protocol scores it.

Used in the chapters "Baselines and architecture decisions" and "Real data: GiBleed", by
``ehrseq run``'s ``baselines`` stage and by ``benchmarks/bench_signal.py``.
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
    "LassoLogistic",
    "bag_of_codes",
    "bag_of_codes_by_split",
    "engineered_features",
    "horizon_labels",
    "lasso_logistic",
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


def bag_of_codes_by_split(
    task, splits: Sequence[str] = ("train", "val", "test")
) -> dict[str, pd.DataFrame]:
    """:func:`bag_of_codes` of each split, ready for a model: an unknown age (a person without
    a birth date) is filled with the training persons' mean age, any other gap with 0.

    Args:
        task: a :class:`~ehrseq.data.task.SurvivalTask`.
        splits: the splits to return (the training persons' means are used either way).

    Returns:
        ``{split: features}``, rows in ``task.frame(split)`` order.
    """
    bags = {s: bag_of_codes(task, s) for s in dict.fromkeys(("train", *splits))}
    fill = bags["train"].mean()  # an unknown birth date: the training mean age
    return {s: bags[s].fillna(fill).fillna(0.0) for s in splits}


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


def horizon_labels(frame: pd.DataFrame, horizon: float) -> tuple[np.ndarray, np.ndarray]:
    """The binary label "the outcome within the horizon" and whether it is known.

    A person has label 1 with the outcome inside the window (``event == 1`` and
    ``duration <= horizon``), label 0 when followed to the horizon without it
    (``duration >= horizon``; an outcome after the horizon counts as none within it), and no
    label when censored earlier without it: whether the outcome would have come before the
    horizon is not known. So a horizon shorter than the task's (a 1-year label from a
    5-year task) is read correctly, not only the task's own.

    Args:
        frame: ``duration`` and ``event`` per person (:meth:`SurvivalTask.frame`).
        horizon: the end of the window, in the unit of ``duration``.

    Returns:
        ``(label, known)``, both ``(n,)``: ``label`` 0/1 (0 where unknown), ``known`` bool.
    """
    duration = frame["duration"].to_numpy(float)
    event = (frame["event"].to_numpy(int) == 1) & (duration <= horizon + 1e-9)
    known = event | (duration >= horizon - 1e-9)
    return event.astype(int), known


@dataclass
class LassoLogistic:
    """What :func:`lasso_logistic` returns.

    Attributes:
        surv: test survival curves at the bin edges, ``(n_test, n_bins)``.
        risk: the predicted probability of the outcome within the horizon, ``(n_test,)``.
        C: the inverse penalty chosen on the validation persons.
        grid: per ``C``: non-zero coefficients and the validation AUROC.
        coef: the chosen model's non-zero coefficients (standardised features), by feature,
            largest magnitude first.
        n_train: training persons with a binary label (fitted on).
        n_unlabelled: training persons left out of fitting: censored before the horizon
            without the outcome.
        n_features: the features it chose from.
    """

    surv: np.ndarray
    risk: np.ndarray
    C: float
    grid: pd.DataFrame
    coef: pd.Series
    n_train: int
    n_unlabelled: int
    n_features: int


def lasso_logistic(
    task,
    Cs: Sequence[float] = (0.01, 0.03, 0.1, 0.3, 1.0),
    min_share: float = 0.0,
    seed: int | None = None,
) -> LassoLogistic:
    r"""An L1-penalised logistic regression for the outcome within the horizon, on the bag
    of codes, as in the OHDSI PatientLevelPrediction design ("LASSO logistic regression").

    **Label.** :func:`horizon_labels`: :math:`y_i = 1` for the outcome within the horizon
    :math:`t_K`, :math:`y_i = 0` for a person followed to :math:`t_K` without it; a person
    censored before :math:`t_K` without the outcome has no label and is left out of fitting
    and of choosing :math:`C` (PatientLevelPrediction's ``requireTimeAtRisk``; counted in
    :attr:`LassoLogistic.n_unlabelled`).

    **Model.** On the features :math:`x_i` of :func:`bag_of_codes_by_split`, standardised
    on the training persons (features kept when at least ``min_share`` of them are
    non-zero), scikit-learn's ``liblinear`` solver minimises (it penalises the intercept
    too, as the weight of a constant feature)

    .. math::

        \lVert \beta \rVert_1 + |\beta_0| + C \sum_{i:\,\text{known}}
        \log\bigl(1 + e^{-s_i (\beta^\top x_i + \beta_0)}\bigr),
        \qquad s_i = 2 y_i - 1,
        \qquad p_i = \sigma(\beta^\top x_i + \beta_0),

    for each :math:`C` of ``Cs`` and keeps the one with the best validation AUROC
    (PatientLevelPrediction uses cross-validation instead). The L1 penalty
    {cite}`tibshirani1996regression` sets many coefficients to zero.

    **Curve.** The protocol scores survival curves, so the probability :math:`p_i` becomes
    one by spreading it over time like the training Kaplan-Meier incidence :math:`F`:

    .. math::

        \hat S_i(t_k) = 1 - p_i\,\frac{F(t_k)}{F(t_K)}, \qquad F = 1 - \hat S_{KM}.

    Its risk at the horizon is :math:`p_i` itself, so Harrell's C and the AUROC rank the
    persons as the logistic model does; the IBS and calibration also judge the assumed shape.

    Args:
        task: a :class:`~ehrseq.data.task.SurvivalTask`.
        Cs: inverse penalties to try (smaller: sparser).
        min_share: drop features that fewer training persons have (0 keeps all: the L1
            penalty selects).
        seed: seeds the solver (``liblinear`` visits coordinates in a random order, which
            moves the coefficients in about the fifth decimal and can flip a tiny one to
            zero): one ``np.random.RandomState(seed)`` hands each fit of the grid its seed
            in turn, as NumPy's global generator does right after ``np.random.seed(seed)``.
            ``None`` draws from the global generator (the result then depends on what drew
            from it before).

    Shapes:
        ``surv``: ``(n_test, n_bins)``; ``risk``: ``(n_test,)``.

    Raises:
        ValueError: empty ``Cs``, or no training person with a binary label, or only one
            class among them.

    Used by chapter 11 ("Real data: GiBleed") and ``ehrseq run`` (stage ``baselines``).
    """
    from lifelines import KaplanMeierFitter
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    if len(Cs) == 0:
        raise ValueError("lasso_logistic: Cs is empty; give at least one inverse penalty")
    horizon = float(task.cuts[-1])
    frames = {s: task.frame(s) for s in ("train", "val", "test")}
    bags = bag_of_codes_by_split(task)
    x_train, x_val, x_test = bags["train"], bags["val"], bags["test"]
    share = (x_train != 0).mean(axis=0)
    columns = list(x_train.columns[share >= max(min_share, 1e-12)])
    mean, sd = x_train[columns].mean(), x_train[columns].std().replace(0.0, 1.0)

    def z(x: pd.DataFrame) -> np.ndarray:
        return ((x[columns] - mean) / sd).to_numpy(float)  # (n, n_features)

    y_tr, known_tr = horizon_labels(frames["train"], horizon)
    y_va, known_va = horizon_labels(frames["val"], horizon)
    if known_tr.sum() == 0 or len(np.unique(y_tr[known_tr])) < 2:
        raise ValueError(
            f"lasso_logistic: the {int(known_tr.sum())} training persons with a binary label "
            "need both binary labels (the outcome within the horizon, and none)"
        )
    # one stream for the whole grid: each fit draws the solver's seed from it in turn
    rng = np.random.RandomState(seed) if seed is not None else None  # noqa: NPY002
    rows, fits = [], {}
    for C in Cs:
        model = LogisticRegression(
            l1_ratio=1.0, C=C, solver="liblinear", max_iter=1000, random_state=rng
        )
        model.fit(z(x_train)[known_tr], y_tr[known_tr])
        p_val = model.predict_proba(z(x_val)[known_va])[:, 1]
        both = len(np.unique(y_va[known_va])) == 2
        auc = float(roc_auc_score(y_va[known_va], p_val)) if both else float("nan")
        rows.append({"C": C, "non-zero": int((model.coef_ != 0).sum()), "val AUROC": auc})
        fits[C] = model
    grid = pd.DataFrame(rows)
    best = float(grid.loc[grid["val AUROC"].fillna(-1).idxmax(), "C"])
    model = fits[best]
    risk = model.predict_proba(z(x_test))[:, 1]  # (n_test,)
    train = frames["train"]
    km = KaplanMeierFitter().fit(train["duration"], train["event"])
    incidence = 1.0 - km.survival_function_at_times(task.cuts[1:]).to_numpy()  # (K,)
    shape = incidence / incidence[-1] if incidence[-1] > 0 else np.ones_like(incidence)
    surv = 1.0 - risk[:, None] * shape[None, :]  # (n_test, K)
    coef = pd.Series(model.coef_[0], index=columns)
    return LassoLogistic(
        surv=np.clip(surv, 0.0, 1.0),
        risk=risk,
        C=best,
        grid=grid,
        coef=coef[coef != 0].sort_values(key=np.abs, ascending=False),
        n_train=int(known_tr.sum()),
        n_unlabelled=int((~known_tr).sum()),
        n_features=len(columns),
    )
