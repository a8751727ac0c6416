r"""Detecting a latent, not yet diagnosed disease from lab events with frozen lab vectors.

The synthetic cohort's generator knows when each chronic disease began (its latent onset)
and when it was first recorded. At a prediction time :math:`t` (``years`` after
enrolment), a patient still observed at :math:`t` is

- a **case** when the disease began on or before :math:`t` and was not diagnosed by then;
- a **control** when it had not begun;
- left out (counted) when it was already diagnosed, or when no lab was recorded by
  :math:`t`.

A patient's features are the mean of the vectors of its lab events up to :math:`t`,

.. math:: x_i = \frac{1}{|L_i|} \sum_{j \in L_i} u(\ell_j, x_j),

with :math:`u` one of the lab vectors of :mod:`ehrseq.embeddings.loinc` (value-aware or
not, :meth:`~ehrseq.embeddings.loinc.LoincLabResult.event_vectors`) or a plain code
vector, of the lab's concept or of its decile token
(:class:`~ehrseq.embeddings.loinc.DecileBins`); events without a vector are skipped.
An L2 logistic regression on standardised features, fitted on the training patients,
scores the test patients, and the AUROC of a method is the mean over its training seeds
of the AUROCs of its runs. Intervals are percentile bootstraps over test patients
(:func:`ehrseq.metrics.bootstrap_ci`), every method and every pair of methods on the same
resamples (same seed), so a paired difference cancels what makes a patient easy for both;
a method is called higher only where the interval of the difference excludes 0
(``"not resolved"`` otherwise). :func:`auroc_resampled` scores a block of resamples at
once from their multiplicities, which gives the same interval as recomputing the AUROC on
every resampled copy (tested), many times faster.

Used by the chapter on medical-code embeddings (issue #17, item 5) and
``benchmarks/bench_loinc_labs.py``. It sits above :mod:`ehrseq.embeddings` (layer 3)
because it scores through :mod:`ehrseq.metrics` and :mod:`ehrseq.evaluate`.

References:
    Rossi et al., arXiv 1907.09600 (lab embeddings that know the value). Hanley and
    McNeil, Radiology 1982 (AUROC). Efron and Tibshirani, *An Introduction to the
    Bootstrap*, 1993.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from ehrseq.embeddings.base import CodeEmbedding, lookup_rows
from ehrseq.embeddings.loinc import DecileBins, LoincLabResult
from ehrseq.evaluate import NOT_RESOLVED
from ehrseq.metrics import Resamples, auroc, bootstrap_ci

__all__ = [
    "LAB_DISEASES",
    "LAB_METHODS",
    "LAB_PAIRS",
    "LabTask",
    "latent_disease_labels",
    "lab_events",
    "lab_tasks",
    "lab_event_vectors",
    "patient_means",
    "logistic_scores",
    "score_lab_methods",
    "auroc_resampled",
    "mean_auroc",
    "detection_table",
]

#: Chronic diseases whose labs the generator shifts: HbA1c and glucose; LDL and total
#: cholesterol; creatinine, eGFR, haemoglobin and potassium.
LAB_DISEASES: tuple[str, ...] = ("type2_diabetes", "hyperlipidemia", "chronic_kidney_disease")
#: The four lab vectors compared: value-blind code, decile token, LOINC parts without and
#: with the value encoder.
LAB_METHODS: tuple[str, ...] = ("lab code", "decile tokens", "LOINC, no value", "LOINC + value")
#: ``{key: (A, B)}``: the paired differences ``A - B`` reported.
LAB_PAIRS: dict[str, tuple[str, str]] = {
    "value_vs_blind": ("LOINC + value", "LOINC, no value"),
    "value_vs_code": ("LOINC + value", "lab code"),
    "decile_vs_code": ("decile tokens", "lab code"),
    "value_vs_decile": ("LOINC + value", "decile tokens"),
}


def latent_disease_labels(
    cohort, disease: str, years: float = 1.0
) -> tuple[pd.DataFrame, dict[str, int]]:
    r"""Cases (latent, undiagnosed at :math:`t`) and controls of one disease, with counts.

    :math:`t` = enrolment + ``round(365.25 * years)`` days. A person is kept when still
    observed after :math:`t` and not diagnosed by :math:`t`; its label is 1 when the
    disease's onset is on or before :math:`t`.

    Args:
        cohort: a synthetic cohort (``truth.persons`` with ``person_id``, ``enrol_date``,
            ``obs_end_date``; ``truth.onsets`` with ``person_id``, ``disease``,
            ``onset_date``, ``diagnosed_date``).
        disease: a disease of ``truth.onsets``.
        years: the prediction time after enrolment, > 0.

    Shapes:
        Returns ``(labels, counts)``: ``labels`` has one row per kept person (``person_id``,
        ``t``, ``label``); ``counts`` the persons left out, by reason.

    Raises:
        ValueError: on ``years <= 0`` or a disease the cohort never writes.
    """
    if not years > 0:
        raise ValueError(f"latent_disease_labels: years must be > 0, got {years!r}")
    on = cohort.truth.onsets
    known = sorted(on["disease"].unique())
    if disease not in known:
        raise ValueError(f"latent_disease_labels: unknown disease {disease!r}; known: {known}")
    persons = cohort.truth.persons
    t = persons["enrol_date"] + pd.to_timedelta(round(365.25 * years), unit="D")
    frame = pd.DataFrame({"person_id": persons["person_id"].to_numpy(), "t": t.to_numpy()})
    observed = (persons["obs_end_date"] > t).to_numpy()
    on = on.loc[on["disease"] == disease, ["person_id", "onset_date", "diagnosed_date"]]
    frame = frame.merge(on, on="person_id", how="left")
    began = (frame["onset_date"] <= frame["t"]).to_numpy()
    diagnosed = (frame["diagnosed_date"] <= frame["t"]).to_numpy()  # NaT compares False
    frame["label"] = (began & ~diagnosed).astype(int)
    kept = observed & ~diagnosed
    counts = {
        "not observed at t": int((~observed).sum()),
        "diagnosed before t": int((observed & diagnosed).sum()),
    }
    return frame.loc[kept, ["person_id", "t", "label"]].reset_index(drop=True), counts


def lab_events(cohort, labels: pd.DataFrame) -> pd.DataFrame:
    """Every measurement of the labelled persons on or before their prediction time ``t``.

    Returns ``person_id``, ``concept_id``, ``measurement_date``, ``value`` (NaN where the
    record has none), in the table's order.

    Raises:
        ValueError: when ``labels`` lacks ``person_id`` or ``t``.
    """
    missing = [c for c in ("person_id", "t") if c not in labels.columns]
    if missing:
        raise ValueError(f"lab_events: labels lack columns {missing}")
    m = cohort.tables["measurement"]
    m = m[["person_id", "measurement_concept_id", "measurement_date", "value_as_number"]]
    m = m.merge(labels[["person_id", "t"]], on="person_id")
    m = m.loc[pd.to_datetime(m["measurement_date"]) <= m["t"]].drop(columns="t")
    names = {"measurement_concept_id": "concept_id", "value_as_number": "value"}
    return m.rename(columns=names).reset_index(drop=True)


@dataclass(frozen=True, eq=False)
class LabTask:
    """One disease's detection task (:func:`lab_tasks`).

    Attributes:
        disease: the disease.
        train, test: labels (``person_id``, ``t``, ``label``) of the training and test
            patients with at least one lab by ``t``.
        events: lab events (:func:`lab_events`) of at least these patients (the tasks
            of one :func:`lab_tasks` call share one frame: the prediction time is the
            same for every disease).
        dropped: persons left out, by reason (outside both splits not counted).
    """

    disease: str
    train: pd.DataFrame
    test: pd.DataFrame
    events: pd.DataFrame
    dropped: dict[str, int]

    def report(self) -> str:
        """Patients and cases of each split (a line), and who was left out (a second,
        indented line)."""
        tr, te = self.train["label"], self.test["label"]
        left = ", ".join(f"{k} {v:,}" for k, v in self.dropped.items())
        return (
            f"{self.disease}: train {len(tr):,} ({int(tr.sum())} cases), test "
            f"{len(te):,} ({int(te.sum())} cases)\n  left out: {left}"
        )


def lab_tasks(
    cohort,
    train_ids: Iterable[int],
    test_ids: Iterable[int],
    diseases: Iterable[str] = LAB_DISEASES,
    years: float = 1.0,
) -> dict[str, LabTask]:
    """The detection task of each disease on the given training and test patients.

    Args:
        cohort: a synthetic cohort (:func:`latent_disease_labels`).
        train_ids, test_ids: person ids of the two splits (disjoint).
        diseases: the diseases (default :data:`LAB_DISEASES`).
        years: the prediction time after enrolment.

    Raises:
        ValueError: when the splits overlap, or a split has no case or no control of a
            disease (what :func:`latent_disease_labels` raises, too).
    """
    train = np.asarray(list(train_ids), dtype=np.int64)
    test = np.asarray(list(test_ids), dtype=np.int64)
    both = np.intersect1d(train, test)
    if len(both):
        raise ValueError(f"lab_tasks: {len(both)} persons are in both splits, e.g. {both[0]}")
    every = np.r_[train, test]
    persons = cohort.truth.persons
    t = persons["enrol_date"] + pd.to_timedelta(round(365.25 * years), unit="D")
    at_t = pd.DataFrame({"person_id": persons["person_id"].to_numpy(), "t": t.to_numpy()})
    # t is the same for every disease: one events frame serves them all
    events = lab_events(cohort, at_t.loc[at_t["person_id"].isin(every)])
    with_lab = events["person_id"].unique()
    out = {}
    for disease in diseases:
        labels, dropped = latent_disease_labels(cohort, disease, years)
        labels = labels.loc[labels["person_id"].isin(every)]
        has_lab = labels["person_id"].isin(with_lab)
        dropped["no lab before t"] = int((~has_lab).sum())
        labels = labels.loc[has_lab]
        is_test = labels["person_id"].isin(test).to_numpy()
        parts = labels.loc[~is_test], labels.loc[is_test]
        for name, part in zip(("training", "test"), parts):
            if part["label"].nunique() < 2:
                raise ValueError(
                    f"lab_tasks: the {name} patients of {disease!r} hold "
                    f"{int(part['label'].sum())} cases of {len(part)}; need both classes"
                )
        train_l, test_l = (p.reset_index(drop=True) for p in parts)
        out[disease] = LabTask(disease, train_l, test_l, events, dropped)
    return out


def lab_event_vectors(
    model: CodeEmbedding | LoincLabResult,
    concept_id,
    value,
    bins: DecileBins | None = None,
) -> np.ndarray:
    """The vector of each lab event under one method; a row of NaN where it has none.

    A :class:`~ehrseq.embeddings.loinc.LoincLabResult` gives :math:`u(\\ell, x)`
    (its ``event_vectors``). A :class:`~ehrseq.embeddings.base.CodeEmbedding` gives the
    vector of the event's concept, or with ``bins`` that of its decile token
    (``bins.tokens``; an event without a bin keeps its concept), NaN where the embedding
    lacks the code.

    Shapes:
        ``concept_id``, ``value``: ``(N,)``; returns ``(N, d)``.

    Raises:
        ValueError: on arrays of different lengths.
    """
    cid = np.asarray(concept_id, dtype=np.int64).reshape(-1)
    val = np.asarray(value, dtype=np.float64).reshape(-1)
    if len(cid) != len(val):
        raise ValueError(
            f"lab_event_vectors: concept_id and value differ in length ({len(cid)}, {len(val)})"
        )
    if isinstance(model, LoincLabResult):
        return model.event_vectors(cid, val)
    if bins is not None:
        tok = bins.tokens(cid, val)  # (N,) 0 where unbinned
        cid = np.where(tok > 0, tok, cid)
    rows = model.rows(cid)  # (N,) -1 where unknown
    out = np.full((len(rows), model.dim), np.nan)
    out[rows >= 0] = model.vectors[rows[rows >= 0]]
    return out


def patient_means(events: pd.DataFrame, vectors: np.ndarray, persons) -> np.ndarray:
    """Mean event vector of each person; zeros for a person with no usable event.

    One sparse product of a person-by-event averaging matrix with the vectors, equal to
    a loop over the persons (tested).

    Args:
        events: one row per event with ``person_id``.
        vectors: ``(N, d)`` the events' vectors (a row with a NaN is skipped).
        persons: ``(P,)`` the persons, in the order of the output rows.

    Shapes:
        Returns ``(P, d)``.

    Raises:
        ValueError: when ``vectors`` has not one row per event.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or len(vectors) != len(events):
        raise ValueError(f"patient_means: vectors must be ({len(events)}, d), got {vectors.shape}")
    ok = np.isfinite(vectors).all(1)
    pid = events["person_id"].to_numpy(np.int64)[ok]
    query = np.asarray(persons, dtype=np.int64).reshape(-1)
    out = np.zeros((len(query), vectors.shape[1]))
    if not ok.any():
        return out
    ids, inverse = np.unique(pid, return_inverse=True)
    n = np.bincount(inverse)  # (U,) usable events per person
    # (U, N') sparse matrix of 1 / n_person at each of the person's events
    average = sparse.csr_matrix((1.0 / n[inverse], (inverse, np.arange(len(pid)))))
    means = average @ vectors[ok]  # (U, d)
    row = lookup_rows(ids, query)  # (P,) -1 for a person without a usable event
    found = row >= 0
    out[found] = means[row[found]]
    return out


def logistic_scores(x_train, y_train, x_test, c: float = 1.0) -> np.ndarray:
    """Probabilities of an L2 logistic regression (standardised features) on ``x_test``.

    Shapes:
        ``x_train`` ``(n, d)``, ``y_train`` ``(n,)``, ``x_test`` ``(m, d)`` -> ``(m,)``.

    Raises:
        ValueError: on a single class in ``y_train`` (scikit-learn's error).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    model = LogisticRegression(C=c, max_iter=2000)
    model.fit(scaler.transform(x_train), y_train)
    return model.predict_proba(scaler.transform(x_test))[:, 1]


def score_lab_methods(
    tasks: Mapping[str, LabTask],
    models: Mapping[tuple[str, int], CodeEmbedding | LoincLabResult],
    bins: Mapping[str, DecileBins] | None = None,
) -> tuple[dict[tuple[str, str], np.ndarray], pd.DataFrame]:
    """Test patients' scores of every disease, method and seed.

    Args:
        tasks: :func:`lab_tasks`.
        models: ``{(method, seed): model}`` (:func:`lab_event_vectors`); every method needs
            the same seeds.
        bins: ``{method: bins}`` for the methods whose codes are decile tokens.

    Returns:
        ``scores``: ``{(disease, method): (n_test, n_seeds)}`` probabilities, seeds in
        sorted order; ``runs``: one row per disease, method and seed with its ``auroc``.

    Raises:
        ValueError: when the methods do not share their seeds.
    """
    bins = dict(bins or {})
    methods = list(dict.fromkeys(m for m, _ in models))
    seeds = {m: sorted(s for k, s in models if k == m) for m in methods}
    first = seeds[methods[0]] if methods else []
    if any(s != first for s in seeds.values()):
        raise ValueError(f"score_lab_methods: methods differ in their seeds: {seeds}")
    # tasks built together share their events: vectors and means once per model
    shared: dict[tuple[int, str, int], tuple[np.ndarray, np.ndarray]] = {}

    def features(task: LabTask, method: str, seed: int, persons) -> np.ndarray:
        key = (id(task.events), method, seed)
        if key not in shared:
            cid = task.events["concept_id"].to_numpy(np.int64)
            val = task.events["value"].to_numpy(np.float64)
            v = lab_event_vectors(models[method, seed], cid, val, bins.get(method))
            everyone = np.unique(task.events["person_id"].to_numpy(np.int64))
            shared[key] = (everyone, patient_means(task.events, v, everyone))
        everyone, means = shared[key]
        row = lookup_rows(everyone, persons)
        if (row < 0).any():
            missing = np.asarray(persons, dtype=np.int64).reshape(-1)[row < 0]
            raise ValueError(
                f"score_lab_methods: {task.disease}: {len(missing)} persons have no lab "
                f"event, e.g. {missing[:5].tolist()}"
            )
        return means[row]

    scores, rows = {}, []
    for disease, task in tasks.items():
        y_train = task.train["label"].to_numpy()
        y_test = task.test["label"].to_numpy()
        for method in methods:
            out = np.zeros((len(task.test), len(first)))
            for k, seed in enumerate(first):
                x_tr = features(task, method, seed, task.train["person_id"])
                x_te = features(task, method, seed, task.test["person_id"])
                out[:, k] = logistic_scores(x_tr, y_train, x_te)
                rows.append(
                    {
                        "disease": disease,
                        "method": method,
                        "seed": seed,
                        "auroc": auroc(y_test, out[:, k]),
                    }
                )
            scores[disease, method] = out
    return scores, pd.DataFrame(rows)


def auroc_resampled(labels, scores, counts) -> np.ndarray:
    r"""AUROC of each score column on each bootstrap resample, from its multiplicities.

    A resample holds patient :math:`i` :math:`m_i` times, so (Mann-Whitney, ties one half)

    .. math:: \mathrm{AUROC}(m) = \frac{\sum_{i: y_i=1} \sum_{j: y_j=0} m_i m_j
        \big(\mathbb 1\{s_i > s_j\} + \tfrac12 \mathbb 1\{s_i = s_j\}\big)}
        {\sum_{i: y_i=1} m_i \sum_{j: y_j = 0} m_j},

    computed per column from one sort and cumulative sums over groups of tied scores; it
    equals :func:`ehrseq.metrics.auroc` on the resampled arrays (tested).

    Args:
        labels: ``(n,)`` 0/1.
        scores: ``(n,)`` or ``(n, S)`` scores.
        counts: ``(B, n)`` multiplicities (``Resamples.counts``).

    Shapes:
        Returns ``(B, S)`` (``(B, 1)`` for one score); NaN where a resample holds one class.

    Raises:
        ValueError: on labels not 0/1, mismatched lengths or non-finite scores.
    """
    y = np.asarray(labels).reshape(-1)
    if not np.isin(y, (0, 1)).all():
        raise ValueError("auroc_resampled: labels must be 0/1")
    s = np.asarray(scores, dtype=np.float64)
    s = s[:, None] if s.ndim == 1 else s
    m = np.asarray(counts, dtype=np.float64)
    if s.shape[0] != len(y) or m.ndim != 2 or m.shape[1] != len(y):
        raise ValueError(
            f"auroc_resampled: labels {y.shape}, scores {s.shape} and counts {m.shape} "
            "do not fit (n,), (n, S), (B, n)"
        )
    if not np.isfinite(s).all():
        raise ValueError("auroc_resampled: scores must be finite")
    pos = y == 1
    m_pos, m_neg = m * pos, m * ~pos  # (B, n) each
    den = m_pos.sum(1) * m_neg.sum(1)  # (B,)
    out = np.empty((len(m), s.shape[1]))
    for k in range(s.shape[1]):
        order = np.argsort(s[:, k], kind="stable")
        sorted_s = s[order, k]
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_s) != 0) + 1]  # tie groups
        g_pos, g_neg = m_pos[:, order], m_neg[:, order]  # (B, n) each
        if len(starts) < len(y):  # ties: one column per group of equal scores
            g_pos = np.add.reduceat(g_pos, starts, axis=1)  # (B, G)
            g_neg = np.add.reduceat(g_neg, starts, axis=1)  # (B, G)
        below = np.cumsum(g_neg, axis=1) - g_neg  # negatives strictly below each group
        num = (g_pos * (below + 0.5 * g_neg)).sum(1)  # (B,)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, k] = np.where(den > 0, num / den, np.nan)
    return out


def mean_auroc(labels, scores) -> float:
    """Mean over the columns (seeds) of ``scores`` ``(n, S)`` of their AUROC."""
    s = np.asarray(scores, dtype=np.float64)
    s = s[:, None] if s.ndim == 1 else s
    return float(np.mean([auroc(labels, s[:, k]) for k in range(s.shape[1])]))


def _mean_resampler(labels, scores):
    def scorer(res: Resamples) -> np.ndarray:
        return auroc_resampled(labels, scores, res.counts).mean(1)

    return scorer


def _difference_resampler(labels, scores_a, scores_b):
    def scorer(res: Resamples) -> np.ndarray:
        a = auroc_resampled(labels, scores_a, res.counts).mean(1)
        return a - auroc_resampled(labels, scores_b, res.counts).mean(1)

    return scorer


def _difference(labels, scores_a, scores_b) -> float:
    return mean_auroc(labels, scores_a) - mean_auroc(labels, scores_b)


def detection_table(
    tasks: Mapping[str, LabTask],
    scores: Mapping[tuple[str, str], np.ndarray],
    pairs: Mapping[str, tuple[str, str]] = LAB_PAIRS,
    n_boot: int = 1000,
    seed: int = 1,
    fast: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    r"""Mean AUROC over seeds of every disease and method, and paired differences.

    Each interval is the 95 % percentile bootstrap over test patients
    (:func:`ehrseq.metrics.bootstrap_ci` with ``seed``, so every method and pair is scored
    on the same resamples); a difference :math:`\bar A_A - \bar A_B` names a winner
    (``"A higher"``) only when its interval excludes 0, else ``"not resolved"``.

    Args:
        tasks: :func:`lab_tasks` (their test labels).
        scores: :func:`score_lab_methods`' scores.
        pairs: ``{key: (A, B)}``.
        n_boot: resamples.
        seed: the bootstrap's seed.
        fast: score resamples by :func:`auroc_resampled` (same interval, faster).

    Returns:
        ``summary`` (``disease``, ``method``, ``auroc``, ``lower``, ``upper``) and
        ``differences`` (``disease``, ``key``, ``comparison``, ``difference``, ``lower``,
        ``upper``, ``verdict``).

    Raises:
        ValueError: on a method of ``pairs`` without scores for a disease.
    """
    rows, diffs = [], []
    for disease, task in tasks.items():
        y = task.test["label"].to_numpy()
        methods = [m for d, m in scores if d == disease]
        absent = sorted({m for ab in pairs.values() for m in ab} - set(methods))
        if absent:
            raise ValueError(f"detection_table: no scores of {absent} for {disease!r}")
        for method in methods:
            ci = bootstrap_ci(
                mean_auroc,
                y,
                scores[disease, method],
                n_boot=n_boot,
                seed=seed,
                resampler=_mean_resampler if fast else None,
            )
            rows.append((disease, method, ci.estimate, ci.lower, ci.upper))
        for key, (a, b) in pairs.items():
            ci = bootstrap_ci(
                _difference,
                y,
                scores[disease, a],
                scores[disease, b],
                n_boot=n_boot,
                seed=seed,
                resampler=_difference_resampler if fast else None,
            )
            verdict = NOT_RESOLVED
            if ci.lower > 0 or ci.upper < 0:
                verdict = f"{a if ci.lower > 0 else b} higher"
            row = (disease, key, f"{a} - {b}", ci.estimate, ci.lower, ci.upper, verdict)
            diffs.append(row)
    summary = pd.DataFrame(rows, columns=["disease", "method", "auroc", "lower", "upper"])
    columns = ["disease", "key", "comparison", "difference", "lower", "upper", "verdict"]
    return summary, pd.DataFrame(diffs, columns=columns)
