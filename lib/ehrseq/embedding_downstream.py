r"""Frozen code vectors at work: patient vectors, a survival task, patient segmentation.

The intrinsic scores (:mod:`ehrseq.embeddings.scores`) ask whether a code's vector knows
its disease; this module asks whether the vectors help where they are used. Every code
vector stays frozen: a patient becomes the (optionally time-decayed) mean of the vectors
of the codes recorded strictly before the prediction time,

.. math:: x_i = \frac{\sum_{j \in H_i} w_{ij}\, e_{c_j}}{\sum_{j \in H_i} w_{ij}},
    \qquad w_{ij} = e^{-\Delta_{ij} / \tau}\ (\tau = \infty:\ w_{ij} = 1),

:math:`H_i` the events of patient :math:`i` whose code the embedding holds,
:math:`\Delta_{ij}` days between event :math:`j` and the prediction time. Events whose
code the embedding lacks are counted and skipped (:class:`PatientVectors`); a patient
left with none gets the zero vector and is counted too. Then, on the shared survival
task of the book (:func:`ehrseq.data.task.prepare_survival_task`, so the splits are
those of every chapter):

- **survival**: the ridge Cox model of the baselines
  (:class:`ehrseq.baselines.CoxBaseline`) fitted on the training patients' vectors, its
  curves scored on the test patients by :class:`ehrseq.evaluate.SurvivalProtocol`
  (Harrell's C with a bootstrap interval over test patients);
- **1-year AUROC**: an L2 logistic regression for "the outcome within 365.25 days"
  (:func:`ehrseq.baselines.horizon_labels`: a patient censored earlier without it has no
  label and is left out), scored by :func:`ehrseq.metrics.auroc` with
  :func:`ehrseq.metrics.bootstrap_ci`;
- **segmentation**: k-means (scikit-learn) on the unit-length patient vectors, fitted on
  the training patients and applied to the test patients, against the generator's latent
  disease profile (:func:`disease_profiles`: which chronic diseases are present,
  diagnosed or not, at the prediction time), scored by the adjusted Rand index with a
  bootstrap interval over test patients and a permutation null (the ARI of shuffled
  profiles). A profile is a combination of diseases; ``k`` is the number of combinations
  held by at least ``min_share`` of the training patients, and the ARI is scored on the
  test patients with one of those (the rest hold rare combinations that form no segment;
  counted).

:func:`downstream_table` runs all three for several methods and seeds and returns one
row per method and seed, the mean over seeds with a Student-t interval
(:func:`ehrseq.embeddings.compare.summarise_runs`), and paired bootstrap differences
between methods over the same test patients (each method's score averaged over its
seeds, the same resamples for both): a method is called higher only where that interval
excludes 0.

The code vectors of the chapter are trained on the training patients' whole records
(after their prediction time too); the test patients' records are never seen before
scoring.

References:
    Choi et al., "Multi-layer representation learning for medical concepts" (Med2Vec),
    KDD 2016 (patient vectors from code vectors). Hubert and Arabie, "Comparing
    partitions", J. Classification 1985 (adjusted Rand index). Harrell et al., JAMA 1982
    (C-index).

Used by the chapter on medical-code embeddings (issue #17) and
``benchmarks/bench_embedding_downstream.py``. It lives above the
:mod:`ehrseq.embeddings` package (layer 3) because it scores through
:mod:`ehrseq.evaluate`, :mod:`ehrseq.metrics` and :mod:`ehrseq.baselines`, which sit at
or above that layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ehrseq.baselines import CoxBaseline, horizon_labels
from ehrseq.data.synthetic import DISEASES
from ehrseq.embeddings.base import CodeEmbedding
from ehrseq.embeddings.compare import compare_runs, summarise_runs
from ehrseq.embeddings.corpus import OMOP_CODE_TABLES
from ehrseq.evaluate import NOT_RESOLVED, SurvivalProtocol
from ehrseq.metrics import auroc, bootstrap_ci

__all__ = [
    "PatientVectors",
    "patient_vectors",
    "history_codes",
    "disease_profiles",
    "pool_profiles",
    "segment_patients",
    "ari_interval",
    "DownstreamData",
    "downstream_data",
    "score_embedding",
    "DownstreamResult",
    "downstream_table",
    "DOWNSTREAM_METRICS",
]

#: The scores of :func:`score_embedding`, all higher-is-better.
DOWNSTREAM_METRICS = ("harrell_c", "auroc_1y", "ari")
_DAY = np.timedelta64(1, "D")


@dataclass(frozen=True, eq=False)
class PatientVectors:
    """Patient vectors from frozen code vectors, with what was left out.

    Attributes:
        person_ids: ``(n,)`` the patients, in the order asked for.
        vectors: ``(n, d)`` float64 weighted means of code vectors (0 for a patient with
            no known code).
        n_codes: ``(n,)`` events of each patient that entered its mean.
        n_events: events of these patients given (known and missing codes).
        n_missing: events whose code the embedding lacks (skipped).
        missing_codes: concept id -> events, for the codes the embedding lacks, most
            frequent first.
        n_empty: patients with no event whose code the embedding holds (zero vector).
    """

    person_ids: np.ndarray
    vectors: np.ndarray
    n_codes: np.ndarray
    n_events: int
    n_missing: int
    missing_codes: Mapping[int, int] = field(default_factory=dict)
    n_empty: int = 0

    def report(self) -> str:
        """One line: patients, events used, events and codes skipped, empty patients."""
        share = self.n_missing / max(self.n_events, 1)
        used = self.n_events - self.n_missing
        return (
            f"{len(self.person_ids):,} patients, "
            f"{used:,} events used; {self.n_missing:,} events "
            f"({share:.2%}) of {len(self.missing_codes)} codes missing from the "
            f"embedding skipped; {self.n_empty} patients without a known code "
            "(zero vector)"
        )


def patient_vectors(
    emb: CodeEmbedding,
    person_id: np.ndarray,
    concept_id: np.ndarray,
    days_before: np.ndarray | None = None,
    persons: np.ndarray | None = None,
    tau_days: float | None = None,
) -> PatientVectors:
    r"""Each patient's weighted mean of code vectors (module docstring formula).

    .. math:: x_i = \frac{\sum_{j \in H_i} w_{ij} e_{c_j}}{\sum_{j \in H_i} w_{ij}},
        \qquad w_{ij} = \exp(-\Delta_{ij}/\tau)

    One sparse product over all events, no loop over patients. Events of people not in
    ``persons`` are ignored (not counted); events whose code the embedding lacks are
    counted in :attr:`PatientVectors.n_missing` and skipped.

    Args:
        emb: the frozen code vectors.
        person_id: ``(N,)`` patient of each event.
        concept_id: ``(N,)`` code of each event.
        days_before: ``(N,)`` days from the event to the prediction time (``>= 0``);
            needed only with ``tau_days``.
        persons: ``(n,)`` the patients wanted, in order (default: those of
            ``person_id``, sorted).
        tau_days: time scale of the decay in days; ``None`` (or ``inf``) gives the plain
            mean.

    Shapes:
        ``vectors``: ``(n, d)``; ``n_codes``: ``(n,)``.

    Raises:
        ValueError: on arrays of different lengths, ``tau_days <= 0``, a decay without
            ``days_before``, negative or non-finite ``days_before``, or repeated
            ``persons``.

    Reference:
        Choi et al., Med2Vec, KDD 2016.
    """
    from scipy import sparse

    pid = np.asarray(person_id, dtype=np.int64).reshape(-1)
    cid = np.asarray(concept_id, dtype=np.int64).reshape(-1)
    if len(pid) != len(cid):
        raise ValueError(
            f"patient_vectors: {len(pid)} person ids for {len(cid)} concept ids",
        )
    decay = tau_days is not None and np.isfinite(tau_days)
    if tau_days is not None and not tau_days > 0:
        raise ValueError(f"patient_vectors: tau_days must be > 0, got {tau_days}")
    if decay and days_before is None:
        raise ValueError("patient_vectors: a time decay (tau_days) needs days_before")
    if days_before is not None:
        dt = np.asarray(days_before, dtype=np.float64).reshape(-1)
        if len(dt) != len(pid):
            raise ValueError(
                f"patient_vectors: {len(dt)} days_before for {len(pid)} events",
            )
        if not np.isfinite(dt).all() or (dt < 0).any():
            raise ValueError(
                "patient_vectors: days_before must be finite and >= 0 (events strictly "
                "before the prediction time)"
            )
    people = np.unique(pid) if persons is None else np.asarray(persons, dtype=np.int64)
    if len(np.unique(people)) != len(people):
        raise ValueError("patient_vectors: persons repeat")
    row = pd.Index(people).get_indexer(pid)  # (N,) patient row, -1 for others
    mine = row >= 0
    code = emb.rows(cid)  # (N,) embedding row, -1 where missing
    missing = mine & (code < 0)
    used = mine & (code >= 0)
    w = np.exp(-dt[used] / tau_days) if decay else np.ones(int(used.sum()))
    weights = sparse.csr_matrix(
        (w, (row[used], code[used])), shape=(len(people), len(emb))
    )  # (n, V)
    total = np.asarray(weights.sum(axis=1)).reshape(-1)  # (n,)
    sums = weights @ emb.vectors.astype(np.float64)  # (n, d)
    mean = sums / np.maximum(total, 1e-300)[:, None]  # (n, d)
    vectors = np.where(total[:, None] > 0, mean, 0.0)
    n_codes = np.bincount(row[used], minlength=len(people)).astype(np.int64)
    ids, counts = np.unique(cid[missing], return_counts=True)
    top = np.argsort(-counts, kind="stable")
    return PatientVectors(
        person_ids=people,
        vectors=vectors,
        n_codes=n_codes,
        n_events=int(mine.sum()),
        n_missing=int(missing.sum()),
        missing_codes={int(ids[i]): int(counts[i]) for i in top},
        n_empty=int((n_codes == 0).sum()),
    )


def history_codes(task, persons: np.ndarray | None = None) -> pd.DataFrame:
    """The codes of each labelled patient strictly before its prediction time.

    Reads the synthetic cohort's OMOP tables of the corpus
    (:data:`ehrseq.embeddings.corpus.OMOP_CODE_TABLES`: conditions, drugs, procedures,
    measurements, by their start date), the whole history (the task's token sequences
    are cut to ``max_len`` tokens; these are not).

    Args:
        task: a :class:`~ehrseq.data.task.SurvivalTask` with its cohort.
        persons: the patients (default: every labelled one).

    Returns:
        ``person_id``, ``concept_id``, ``days_before`` (days from the event to the
        prediction time, ``> 0``).

    Raises:
        ValueError: for a task without its synthetic cohort, or persons it has not
            labelled.
    """
    if task.cohort is None:
        raise ValueError(
            "history_codes: the task has no cohort (its OMOP tables are read)",
        )
    t0 = task.labels.set_index("subject_id")["prediction_time"]
    people = t0.index.to_numpy()
    if persons is not None:
        people = np.asarray(persons, dtype=np.int64)
    unknown = ~np.isin(people, t0.index.to_numpy())
    if unknown.any():
        raise ValueError(
            f"history_codes: {int(unknown.sum())} persons are not labelled in the "
            "task, "
            f"e.g. {people[unknown][:5].tolist()}"
        )
    parts = []
    for table, concept_col, date_col in OMOP_CODE_TABLES:
        if table not in task.cohort.tables:
            continue
        df = task.cohort.tables[table]
        df = df.loc[df["person_id"].isin(people), ["person_id", concept_col, date_col]]
        when = pd.to_datetime(df[date_col]).to_numpy("datetime64[ns]")
        cut = t0.loc[df["person_id"].to_numpy()].to_numpy("datetime64[ns]")
        before = when < cut
        parts.append(
            pd.DataFrame(
                {
                    "person_id": df["person_id"].to_numpy(np.int64)[before],
                    "concept_id": df[concept_col].to_numpy(np.int64)[before],
                    "days_before": (cut[before] - when[before]) / _DAY,
                }
            )
        )
    if not parts:
        raise ValueError(f"history_codes: the cohort has none of {OMOP_CODE_TABLES}")
    return pd.concat(parts, ignore_index=True)


def disease_profiles(
    task,
    persons: np.ndarray,
    diseases: Sequence[str] = tuple(DISEASES),
) -> pd.DataFrame:
    """The generator's latent disease profile of each patient at its prediction time.

    A disease belongs to the profile when its true onset precedes the prediction time,
    whether or not it was ever recorded (the generator knows undiagnosed disease).

    Args:
        task: a synthetic :class:`~ehrseq.data.task.SurvivalTask`.
        persons: ``(n,)`` labelled patients.
        diseases: the latent chronic diseases (default: the generator's
            :data:`~ehrseq.data.synthetic.DISEASES`, the outcome left out).

    Returns:
        ``(n, len(diseases))`` 0/1 ``pd.DataFrame`` indexed by person, one column per
        disease.

    Raises:
        ValueError: without the cohort's truth, or on persons the task has not labelled.
    """
    if task.cohort is None:
        raise ValueError(
            "disease_profiles: the task has no synthetic cohort (its truth)",
        )
    people = np.asarray(persons, dtype=np.int64)
    t0 = task.labels.set_index("subject_id")["prediction_time"]
    unknown = ~np.isin(people, t0.index.to_numpy())
    if unknown.any():
        n = int(unknown.sum())
        raise ValueError(f"disease_profiles: {n} persons are not labelled")
    on = task.cohort.truth.onsets
    on = on.loc[on["disease"].isin(diseases) & on["person_id"].isin(people)]
    active = on.loc[on["onset_date"].to_numpy() < t0.loc[on["person_id"]].to_numpy()]
    index = pd.Index(people, name="person_id")
    out = pd.DataFrame(0, index=index, columns=list(diseases))
    hit = active.drop_duplicates(["person_id", "disease"])
    rows = out.index.get_indexer(hit["person_id"])
    out.values[rows, out.columns.get_indexer(hit["disease"])] = 1
    return out


def pool_profiles(
    profiles: pd.DataFrame,
    reference: pd.DataFrame | None = None,
    min_share: float = 0.02,
) -> tuple[pd.Series, list[str]]:
    """One label per patient: its combination of diseases, rare combinations pooled.

    A combination (``"hypertension+obesity"``, ``"none"``) held by fewer than
    ``min_share`` of the ``reference`` patients (default: ``profiles`` themselves)
    becomes ``"other"``.

    Returns:
        ``(labels, kept)``: the label of every row of ``profiles`` and the combinations
        kept (the ``k`` of the segmentation is ``len(kept)`` plus one where ``"other"``
        occurs).

    Raises:
        ValueError: on ``min_share`` outside [0, 1).
    """
    if not 0 <= min_share < 1:
        raise ValueError(f"pool_profiles: min_share must be in [0, 1), got {min_share}")

    def combo(p: pd.DataFrame) -> pd.Series:
        cols = np.asarray(p.columns, dtype=object)
        names = ["+".join(cols[r.astype(bool)]) or "none" for r in p.to_numpy()]
        return pd.Series(names, index=p.index)

    ref = combo(profiles if reference is None else reference)
    share = ref.value_counts(normalize=True)
    kept = sorted(share.index[share >= min_share])
    labels = combo(profiles)
    return labels.where(labels.isin(kept), "other"), kept


def segment_patients(
    train_vectors: np.ndarray, test_vectors: np.ndarray, n_clusters: int, seed: int = 0
) -> np.ndarray:
    """k-means segments: fitted on unit-length training vectors, applied to test ones.

    k-means (scikit-learn, ``n_init=10``) minimises the within-cluster sum of squared
    distances of the unit vectors (cosine geometry, as every code score here); each test
    patient joins its nearest centre.

    Args:
        train_vectors: ``(n_train, d)`` vectors k-means is fitted on.
        test_vectors: ``(n_test, d)`` vectors that are assigned.
        n_clusters: ``k``.
        seed: seed of k-means.

    Shapes:
        returns ``(n_test,)`` int64 cluster indices.

    Raises:
        ValueError: on vectors that are not 2-D or differ in width, or ``k`` outside
            ``[2, n_train]``.
    """
    from sklearn.cluster import KMeans

    a, b = np.asarray(train_vectors, float), np.asarray(test_vectors, float)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"segment_patients: train {a.shape} and test {b.shape} vectors must be "
            "2-D, "
            "of one width"
        )
    if not 2 <= n_clusters <= len(a):
        raise ValueError(
            f"segment_patients: n_clusters must be in [2, {len(a)}], got {n_clusters}",
        )
    km = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit(_unit(a))
    return km.predict(_unit(b)).astype(np.int64)


def ari_interval(
    labels: np.ndarray,
    clusters: np.ndarray,
    n_boot: int = 200,
    seed: int = 0,
    n_permutations: int = 200,
    alpha: float = 0.05,
) -> dict[str, float]:
    r"""Adjusted Rand index of clusters against labels, a bootstrap interval and a null.

    .. math:: \mathrm{ARI} = \frac{\sum_{kl}\binom{n_{kl}}{2} - E}
        {\tfrac12\big[\sum_k\binom{a_k}{2} + \sum_l\binom{b_l}{2}\big] - E},\quad
        E = \frac{\sum_k\binom{a_k}{2}\sum_l\binom{b_l}{2}}{\binom n2}

    over the contingency table :math:`n_{kl}` of labels and clusters (0: chance, 1: the
    same partition); the value of ``sklearn.metrics.adjusted_rand_score``, computed
    from one ``bincount`` of the table (scikit-learn's input checks would cost 50 times
    the score in the bootstrap). The interval resamples patients
    (:func:`ehrseq.metrics.bootstrap_ci`, each keeping its label and cluster);
    the null is the ARI after shuffling the labels ``n_permutations`` times, and
    ``ari_null`` its ``1 - alpha`` quantile: what chance alone reaches.

    Args:
        labels: ``(n,)`` the true segments (any values).
        clusters: ``(n,)`` the found segments.
        n_boot, seed, n_permutations, alpha: resamples, their seed (also the
            permutations'), permutations, one minus the coverage.

    Returns:
        ``{"ari", "ari_lower", "ari_upper", "ari_null"}``.

    Raises:
        ValueError: on arrays of different lengths or fewer than two patients.

    Reference:
        Hubert and Arabie, "Comparing partitions", J. Classification 2, 1985.
    """
    lab, clu = np.asarray(labels), np.asarray(clusters)
    if lab.ndim != 1 or lab.shape != clu.shape or len(lab) < 2:
        raise ValueError(
            f"ari_interval: labels {lab.shape} and clusters {clu.shape} must be "
            "1-D, of one "
            "length >= 2"
        )
    _, y = np.unique(lab.astype(str), return_inverse=True)
    _, k = np.unique(clu, return_inverse=True)
    ci = bootstrap_ci(_ari, y, k, n_boot=n_boot, alpha=alpha, seed=seed)
    rng = np.random.default_rng(seed)
    null = [_ari(rng.permutation(y), k) for _ in range(n_permutations)]
    return {
        "ari": ci.estimate,
        "ari_lower": ci.lower,
        "ari_upper": ci.upper,
        "ari_null": float(np.quantile(null, 1 - alpha)),
    }


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass
class DownstreamData:
    """The parts of the task every embedding is scored on (built once).

    Attributes:
        task: the survival task.
        history: :func:`history_codes` of the training and test patients.
        train, test: person ids in ``task.frame`` order of the split.
        protocol: the survival protocol of the test patients (durations in days, the
            task's bin edges).
        y_train, known_train, y_test, known_test: the 1-year label and whether it is
            known.
        segments_train, segments_test: pooled latent disease profiles
            (:func:`pool_profiles`); ``n_clusters`` the number of common profiles (those
            held by at least ``min_share`` of the training patients).
        scored_test: ``(n_test,)`` bool, the test patients with a common profile: the
            ARI is scored on them (a pooled ``"other"`` is no segment: its patients
            share no disease profile), k-means is fitted on every training patient.
        horizon_days: the AUROC's horizon.
    """

    task: object
    history: pd.DataFrame
    train: np.ndarray
    test: np.ndarray
    protocol: SurvivalProtocol
    y_train: np.ndarray
    known_train: np.ndarray
    y_test: np.ndarray
    known_test: np.ndarray
    segments_train: np.ndarray
    segments_test: np.ndarray
    scored_test: np.ndarray
    n_clusters: int
    horizon_days: float


def downstream_data(
    task,
    horizon_days: float = 365.25,
    min_share: float = 0.02,
    n_boot: int = 200,
    seed: int = 0,
) -> DownstreamData:
    """Histories, labels, profiles and the protocol of the training and test patients.

    Args:
        task: a synthetic :class:`~ehrseq.data.task.SurvivalTask`.
        horizon_days: horizon of the binary label of the AUROC.
        min_share: pooling threshold of :func:`pool_profiles` (on the training
            patients).
        n_boot, seed: bootstrap of the protocol (and of every other interval).

    Raises:
        ValueError: without the cohort, a horizon outside the task's, or a 1-year label
            with one class on either split.
    """
    if task.cohort is None:
        raise ValueError("downstream_data: the task has no synthetic cohort")
    if not 0 < horizon_days <= float(task.cuts[-1]):
        raise ValueError(
            f"downstream_data: horizon_days must be in (0, {float(task.cuts[-1])}], "
            f"got {horizon_days}"
        )
    frames = {s: task.frame(s) for s in ("train", "test")}
    train = frames["train"]["subject_id"].to_numpy(np.int64)
    test = frames["test"]["subject_id"].to_numpy(np.int64)
    labels = {s: horizon_labels(frames[s], horizon_days) for s in frames}
    for s, (y, known) in labels.items():
        if len(np.unique(y[known])) < 2:
            raise ValueError(
                f"downstream_data: the {s} patients' 1-year label has one class",
            )
    profiles = {
        "train": disease_profiles(task, train),
        "test": disease_profiles(task, test),
    }
    seg_train, kept = pool_profiles(profiles["train"], min_share=min_share)
    if len(kept) < 2:
        raise ValueError(
            f"downstream_data: {len(kept)} disease profiles are held by >= "
            f"{min_share:.0%} "
            "of the training patients; segmentation needs 2 (lower min_share)"
        )
    seg_test, _ = pool_profiles(
        profiles["test"],
        profiles["train"],
        min_share=min_share,
    )
    protocol = SurvivalProtocol(
        durations=frames["test"]["duration"].to_numpy(float),
        events=frames["test"]["event"].to_numpy(int),
        times=task.cuts[1:],
        durations_train=frames["train"]["duration"].to_numpy(float),
        events_train=frames["train"]["event"].to_numpy(int),
        n_boot=n_boot,
        seed=seed,
    )
    return DownstreamData(
        task=task,
        history=history_codes(task, np.concatenate([train, test])),
        train=train,
        test=test,
        protocol=protocol,
        y_train=labels["train"][0],
        known_train=labels["train"][1],
        y_test=labels["test"][0],
        known_test=labels["test"][1],
        segments_train=seg_train.to_numpy(),
        segments_test=seg_test.to_numpy(),
        scored_test=(seg_test != "other").to_numpy(),
        n_clusters=len(kept),
        horizon_days=float(horizon_days),
    )


def _features(v: PatientVectors) -> pd.DataFrame:
    return pd.DataFrame(v.vectors, columns=[f"e{k}" for k in range(v.vectors.shape[1])])


def score_embedding(
    emb: CodeEmbedding,
    data: DownstreamData,
    tau_days: float | None = None,
    seed: int = 0,
    penalizer: float = 0.3,
    logistic_c: float = 1.0,
) -> dict:
    """Harrell's C, the 1-year AUROC and the segmentation ARI of one embedding.

    Args:
        emb: the frozen code vectors.
        data: :func:`downstream_data`.
        tau_days: decay of :func:`patient_vectors` (``None``: plain mean).
        seed: seed of k-means (the bootstrap uses the protocol's seed).
        penalizer: ridge penalty of :class:`~ehrseq.baselines.CoxBaseline`.
        logistic_c: inverse L2 penalty of the logistic regression (standardised
            vectors).

    Returns:
        ``harrell_c``, ``harrell_c_lower``, ``harrell_c_upper``, ``auroc_1y`` (and its
        ends), ``ari`` (and its ends and ``ari_null``), ``n_missing``,
        ``missing_share``, ``n_empty``, and, under the keys ``surv``, ``risk_1y``,
        ``clusters``, the test curves ``(n_test, K)``, 1-year risks ``(n_known_test,)``
        and clusters ``(n_test,)`` that the paired differences of
        :func:`downstream_table` resample.

    Shapes:
        ``surv``: ``(n_test, K)``; ``risk_1y``: ``(n_known_test,)``; ``clusters``:
        ``(n_test,)``.

    Raises:
        ValueError: from :func:`patient_vectors` (``tau_days <= 0``) or
            :func:`segment_patients` (fewer training patients than profiles).
    """
    from sklearn.linear_model import LogisticRegression

    h = data.history
    pv = patient_vectors(
        emb,
        h["person_id"].to_numpy(),
        h["concept_id"].to_numpy(),
        h["days_before"].to_numpy(),
        persons=np.concatenate([data.train, data.test]),
        tau_days=tau_days,
    )
    n_tr = len(data.train)
    x = _features(pv)
    x_tr, x_te = (
        x.iloc[:n_tr].reset_index(drop=True),
        x.iloc[n_tr:].reset_index(drop=True),
    )
    p = data.protocol
    cox = CoxBaseline(penalizer=penalizer, min_share=0.0).fit(
        x_tr, p.durations_train, p.events_train
    )
    surv = np.clip(cox.predict_survival(x_te, p.times), 0.0, 1.0)  # (n_test, K)
    c = p.evaluate("embedding", [surv], metrics=["Harrell C"])
    mean, sd = x_tr.mean(), x_tr.std().replace(0.0, 1.0)
    z_tr, z_te = ((x_tr - mean) / sd).to_numpy(), ((x_te - mean) / sd).to_numpy()
    logit = LogisticRegression(C=logistic_c, max_iter=1000)
    logit.fit(z_tr[data.known_train], data.y_train[data.known_train])
    risk = logit.predict_proba(z_te[data.known_test])[:, 1]
    y = data.y_test[data.known_test]
    auc = bootstrap_ci(auroc, y, risk, n_boot=p.n_boot, seed=p.seed)
    v_tr, v_te = pv.vectors[:n_tr], pv.vectors[n_tr:]
    clusters = segment_patients(v_tr, v_te, data.n_clusters, seed)
    m = data.scored_test
    seg = ari_interval(data.segments_test[m], clusters[m], p.n_boot, p.seed)
    return {
        "harrell_c": c["Harrell C"],
        "harrell_c_lower": c["Harrell C lower"],
        "harrell_c_upper": c["Harrell C upper"],
        "auroc_1y": auc.estimate,
        "auroc_1y_lower": auc.lower,
        "auroc_1y_upper": auc.upper,
        **seg,
        "n_missing": pv.n_missing,
        "missing_share": pv.n_missing / max(pv.n_events, 1),
        "n_empty": pv.n_empty,
        "surv": surv,
        "risk_1y": risk,
        "clusters": clusters,
    }


@dataclass
class DownstreamResult:
    """What :func:`downstream_table` returns.

    Attributes:
        runs: one row per method and seed: ``method``, ``seed``, each of
            :data:`DOWNSTREAM_METRICS` with ``_lower`` and ``_upper`` (bootstrap over
            test patients), ``ari_null``, ``n_missing``, ``missing_share``, ``n_empty``.
        summary: :func:`ehrseq.embeddings.compare.summarise_runs` of ``runs``: the mean
            over seeds with its Student-t interval (over training seeds only).
        differences: per pair and metric: ``key``, ``comparison`` (``"A - B"``),
            ``metric``, ``difference`` (seed means, all test patients), ``lower``,
            ``upper`` (paired bootstrap over the same test patients), ``n_seeds``,
            ``verdict`` (``"A higher"``, ``"B higher"`` or ``"not resolved"``). The
            resamples hold each run's vectors and k-means segments fixed: the interval
            speaks of the test patients only.
        seed_differences: :func:`ehrseq.embeddings.compare.compare_runs` of ``runs``:
            the same pairs, differences paired by seed with a Student-t interval over
            seeds (holding the test patients fixed). A score that moves more between
            seeds than between resamples of patients (the ARI: k-means and the training
            seed both move it) can be resolved in ``differences`` and not here; read
            both.
        n_test: test patients; n_known_1y: those with a 1-year label; n_segmented: those
            with a common latent profile (the ARI's patients); n_clusters: ``k``.
    """

    runs: pd.DataFrame
    summary: pd.DataFrame
    differences: pd.DataFrame
    seed_differences: pd.DataFrame
    n_test: int
    n_known_1y: int
    n_segmented: int
    n_clusters: int


def downstream_table(
    embeddings: Mapping[tuple[str, int], CodeEmbedding],
    data: DownstreamData,
    pairs: Mapping[str, tuple[str, str]] | None = None,
    tau_days: float | Mapping[str, float | None] | None = None,
    level: float = 0.95,
) -> DownstreamResult:
    r"""Every method x seed on the three downstream scores, and paired differences.

    For a pair of methods A and B with seeds :math:`S`, the difference on a score
    :math:`m` is :math:`\bar m_A - \bar m_B`, each the mean over its seeds on the same
    test patients; its interval is the percentile bootstrap of that difference, both
    methods scored on the same resamples of test patients
    (:meth:`ehrseq.evaluate.SurvivalProtocol.difference` for Harrell's C,
    :func:`ehrseq.metrics.bootstrap_ci` for the AUROC and the ARI), so what makes a
    patient easy for both cancels. A method is called higher only where the interval
    excludes 0; else the verdict is ``"not resolved"``.

    Args:
        embeddings: ``{(method, seed): embedding}``.
        data: :func:`downstream_data` of the task.
        pairs: ``{key: (A, B)}``; default every pair of methods in the order given.
        tau_days: decay of the patient vectors, one for all methods or per method
            (``None``: plain mean).
        level: coverage of the seed intervals of ``summary`` (the bootstrap intervals
            are 95 %).

    Raises:
        ValueError: with no embeddings, a method of ``pairs`` not among them, or a
            method with fewer than 2 seeds (the seed summary needs 2).
    """
    if not embeddings:
        raise ValueError("downstream_table: no embeddings given")
    methods = list(dict.fromkeys(m for m, _ in embeddings))
    if pairs is None:
        both = [(a, b) for i, a in enumerate(methods) for b in methods[i + 1 :]]
        pairs = {f"{a} vs {b}": (a, b) for a, b in both}
    absent = sorted({m for ab in pairs.values() for m in ab} - set(methods))
    if absent:
        raise ValueError(f"downstream_table: methods {absent} not among {methods}")
    taus = tau_days
    if not isinstance(tau_days, Mapping):
        taus = dict.fromkeys(methods, tau_days)
    rows, kept = [], {}
    for (method, seed), emb in embeddings.items():
        out = score_embedding(emb, data, tau_days=taus.get(method), seed=seed)
        kept[method, seed] = {k: out.pop(k) for k in ("surv", "risk_1y", "clusters")}
        rows.append({"method": method, "seed": seed, **out})
    runs = pd.DataFrame(rows)
    summary = summarise_runs(runs, list(DOWNSTREAM_METRICS), level=level)
    p = data.protocol
    y1 = data.y_test[data.known_test]
    m = data.scored_test
    _, segments = np.unique(data.segments_test[m].astype(str), return_inverse=True)
    diffs = []
    for key, (a, b) in pairs.items():
        seeds_a = [s for m, s in kept if m == a]
        seeds_b = [s for m, s in kept if m == b]
        part = {
            name: (
                [kept[a, s][name] for s in seeds_a],
                [kept[b, s][name] for s in seeds_b],
            )
            for name in ("surv", "risk_1y", "clusters")
        }
        part["clusters"] = tuple([c[m] for c in side] for side in part["clusters"])
        c = p.difference(a, part["surv"][0], b, part["surv"][1], "Harrell C")
        ends = {"harrell_c": (c["difference"], c["lower"], c["upper"])}
        for metric, name, target, fn in (
            ("auroc_1y", "risk_1y", y1, auroc),
            ("ari", "clusters", segments, _ari),
        ):
            ka = len(part[name][0])
            ci = bootstrap_ci(
                lambda t, *xs, fn=fn, ka=ka: _mean_difference(fn, t, xs, ka),
                target,
                *part[name][0],
                *part[name][1],
                n_boot=p.n_boot,
                seed=p.seed,
            )
            ends[metric] = (ci.estimate, ci.lower, ci.upper)
        for metric in DOWNSTREAM_METRICS:
            d, lo, hi = ends[metric]
            verdict = NOT_RESOLVED
            if lo > 0 or hi < 0:
                verdict = f"{a if lo > 0 else b} higher"
            n_seeds = min(len(seeds_a), len(seeds_b))
            diffs.append((key, f"{a} - {b}", metric, d, lo, hi, n_seeds, verdict))
    columns = ["key", "comparison", "metric", "difference", "lower", "upper", "n_seeds"]
    return DownstreamResult(
        runs=runs,
        summary=summary,
        differences=pd.DataFrame(diffs, columns=[*columns, "verdict"]),
        seed_differences=compare_runs(
            runs,
            pairs,
            list(DOWNSTREAM_METRICS),
            level=level,
        ),
        n_test=len(data.test),
        n_known_1y=int(data.known_test.sum()),
        n_segmented=int(data.scored_test.sum()),
        n_clusters=data.n_clusters,
    )


def _mean_difference(fn, target: np.ndarray, xs: tuple, k: int) -> float:
    """Mean of ``fn(target, x)`` over the first ``k`` of ``xs`` minus over the rest."""
    first = np.mean([fn(target, x) for x in xs[:k]])
    return float(first - np.mean([fn(target, x) for x in xs[k:]]))


def _ari(labels: np.ndarray, clusters: np.ndarray) -> float:
    """``sklearn.metrics.adjusted_rand_score`` of two labellings by integers >= 0.

    The same formula (:func:`ari_interval`) from one ``bincount`` of the contingency
    table, without scikit-learn's input checks, which cost 50 times the score: the
    bootstraps call it thousands of times per embedding. Labels may skip integers (an
    empty row or column of the table adds nothing).
    """
    a, b = np.asarray(labels, np.int64), np.asarray(clusters, np.int64)
    width = int(b.max()) + 1 if len(b) else 1
    table = np.bincount(a * width + b).astype(np.float64)  # n_kl, flattened

    def pairs(n: np.ndarray | float) -> np.ndarray | float:
        return n * (n - 1) / 2

    together = pairs(table).sum()
    rows = pairs(np.bincount(a).astype(np.float64)).sum()
    cols = pairs(np.bincount(b).astype(np.float64)).sum()
    expected = rows * cols / max(pairs(float(len(a))), 1.0)
    top = (rows + cols) / 2
    if top == expected:  # one cluster each, or every patient its own: the same
        return 1.0
    return float((together - expected) / (top - expected))
