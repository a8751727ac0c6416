"""Train at site A, test at site B: the two-site setting of MedRep's external validation.

MedRep (Kim et al., arXiv 2504.08329) trains a foundation model at one hospital and tests it
at another without any update; the other hospital records some concepts in codes the first
never saw. The synthetic generator's second site (:func:`ehrseq.data.synthetic
.generate_two_sites`) is that setting with known truth: site B records diagnoses with SNOMED
source codes instead of ICD-10-CM, and drugs as RxNorm ingredients instead of clinical drugs.

- :func:`two_site_data`: both sites generated, written as OMOP CDMs and read back strictly
  (the path a user's export takes), cached under the artefact root.
- :func:`as_recorded`: conditions read by their *source* code (what the site wrote), so that
  a model trained at A meets B's SNOMED diagnoses as unseen codes.
- :func:`internal_task` / :func:`external_task`: the heart-failure survival task at A (split
  into train / validation / test) and all of B as a test split, encoded with A's vocabulary.
- :func:`token_coverage`: the share of B's tokens that A's vocabulary lacks, first.
- :func:`nearest_known` and :func:`extend_vocab`: two ways to read an unseen code (the
  nearest known code by text cosine; a new token whose frozen vector is swapped in).
- :func:`difference_of_gains`: is a gain larger on B than on A? A bootstrap over both test
  sets at once.

Used by the chapter "MedRep: concept vectors that travel between sites" (issue #18).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ehrseq.data.labels import Outcome, survival_labels
from ehrseq.data.sequences import Sequences, build_sequences
from ehrseq.data.synthetic import SyntheticCohort, SyntheticConfig, generate_two_sites
from ehrseq.data.task import SurvivalTask, TaskConfig, task_from_labels
from ehrseq.data.tensors import encode
from ehrseq.data.vocab import Vocab
from ehrseq.embeddings import CodeEmbedding

__all__ = [
    "SiteData",
    "two_site_data",
    "as_recorded",
    "site_labels",
    "internal_task",
    "external_task",
    "vocab_concepts",
    "token_coverage",
    "nearest_known",
    "extend_vocab",
    "difference_of_gains",
    "outcome_within",
    "site_vocab",
    "prolonged_stay",
]

_FRAMES = ("events", "person", "observation_period")


@dataclass
class SiteData:
    """One site's cohort and its OMOP read-back.

    Attributes:
        name: ``"A"`` or ``"B"``.
        cohort: the generated cohort (tables and truth).
        events, person, observation_period: what :func:`ehrseq.data.omop.load_omop` read
            back (standard concept ids in ``concept_id``, the recorded code in
            ``source_concept_id``).
    """

    name: str
    cohort: SyntheticCohort
    events: pd.DataFrame
    person: pd.DataFrame
    observation_period: pd.DataFrame


def _read_back(cohort: SyntheticCohort) -> tuple[pd.DataFrame, ...]:
    from ehrseq.data.omop import load_omop

    with tempfile.TemporaryDirectory(prefix="ehrseq_site_") as folder:
        cohort.write_omop(Path(folder))
        data = load_omop(Path(folder), mode="strict")
    return data.events, data.person, data.observation_period


def two_site_data(
    config: SyntheticConfig, n_patients_b: int | None = None, cache: bool = True
) -> tuple[SiteData, SiteData]:
    """Sites A and B (:func:`~ehrseq.data.synthetic.generate_two_sites`), read back strictly.

    Args:
        config: site A's generator config (``site="A"``).
        n_patients_b: people at site B (default: as many as at A).
        cache: keep both cohorts and read-backs under the artefact root, keyed by the
            configs and the library version, and read them from there afterwards.

    Returns:
        ``(site_a, site_b)``.
    """
    import hashlib
    import json
    from dataclasses import asdict

    from ehrseq import __version__
    from ehrseq.config import artifact_root

    if not cache:
        a, b = generate_two_sites(config, n_patients_b)
        return tuple(SiteData(c.config.site, c, *_read_back(c)) for c in (a, b))
    from filelock import FileLock

    blob = json.dumps([__version__, asdict(config), n_patients_b], sort_keys=True)
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    folder = artifact_root() / f"medrep-two-sites-{key}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        done = [(folder / s / "cohort" / "cohort.json").is_file() for s in "AB"]
        if all(done):
            out = []
            for s in "AB":
                frames = [pd.read_parquet(folder / s / f"{n}.parquet") for n in _FRAMES]
                out.append(SiteData(s, SyntheticCohort.load(folder / s / "cohort"), *frames))
            return tuple(out)
        out = []
        for cohort in generate_two_sites(config, n_patients_b):
            site = SiteData(cohort.config.site, cohort, *_read_back(cohort))
            part = folder / f"{site.name}.part"
            part.mkdir(parents=True, exist_ok=True)
            for name in _FRAMES:
                getattr(site, name).to_parquet(part / f"{name}.parquet")
            cohort.save(part / "cohort")
            part.replace(folder / site.name)
            out.append(site)
        return tuple(out)


def as_recorded(events: pd.DataFrame) -> pd.DataFrame:
    """Conditions by the code the site recorded: ``concept_id`` := ``source_concept_id``.

    Other domains keep their standard concept (their source code is the same concept here,
    or 0). A condition with no source code (0) keeps its standard concept.
    """
    out = events.copy()
    cond = (out["domain"] == "condition").to_numpy() & (out["source_concept_id"] > 0).to_numpy()
    out.loc[cond, "concept_id"] = out.loc[cond, "source_concept_id"]
    return out


def site_labels(site: SiteData, config: TaskConfig) -> pd.DataFrame:
    """Heart-failure survival labels of one site (standard concepts, as the task's)."""
    outcome = Outcome.of_concepts(
        "heart_failure", site.cohort.vocabulary.ids("heart_failure", "condition")
    )
    labels = survival_labels(
        site.events,
        site.person,
        site.observation_period,
        outcome,
        config.history_days,
        horizon_days=config.horizon_days,
    )
    return labels.table


def internal_task(site: SiteData, config: TaskConfig) -> SurvivalTask:
    """Site A's task: labels from standard concepts, tokens as recorded, split by person."""
    task = task_from_labels(
        as_recorded(site.events), site.person, site_labels(site, config), config
    )
    task.cohort = site.cohort
    return task


def _sequences(site: SiteData, labels: pd.DataFrame, config: TaskConfig) -> Sequences:
    return build_sequences(
        as_recorded(site.events),
        site.person,
        labels[["subject_id", "prediction_time"]].rename(columns={"subject_id": "person_id"}),
        strategy=config.strategy,
        max_len=config.max_len,
        add_cls=config.add_cls,
        add_sep=config.add_sep,
    )


def external_task(
    internal: SurvivalTask,
    site: SiteData,
    *,
    vocab: Vocab | None = None,
    concept_map: Mapping[int, int] | None = None,
    reuse: SurvivalTask | None = None,
) -> SurvivalTask:
    """Every patient of ``site`` with a history as the ``test`` split, under A's protocol.

    Args:
        internal: site A's task (:func:`internal_task`): its config, bins and vocabulary.
        site: site B.
        vocab: the vocabulary to encode with (default ``internal.vocab``; an extended one
            from :func:`extend_vocab` for the swapped-in vectors).
        concept_map: recorded concept id -> the concept to read instead (e.g.
            :func:`nearest_known`); unmapped ids are kept.
        reuse: an earlier external task of the same site: its labels and sequences (as
            that task read them) are taken instead of being built again.

    Returns:
        a :class:`~ehrseq.data.task.SurvivalTask` whose ``train`` and ``val`` splits are
        empty, with ``cohort`` = B's cohort (for its oracle).
    """
    from ehrseq.data.labels import discretize

    cfg = internal.config
    if reuse is None:
        labels = site_labels(site, cfg)
        sequences = _sequences(site, labels, cfg)
        labels = labels.loc[labels["subject_id"].isin(sequences.person_ids)]
        labels = labels.reset_index(drop=True)
    else:
        labels, sequences = reuse.labels, reuse.sequences
    seqs = sequences
    if concept_map:
        frame = seqs.frame.copy()
        cid = frame["concept_id"].to_numpy()
        src = np.fromiter(concept_map.keys(), dtype=np.int64, count=len(concept_map))
        dst = np.fromiter(concept_map.values(), dtype=np.int64, count=len(concept_map))
        at = pd.Index(src).get_indexer(cid)
        frame["concept_id"] = np.where(at >= 0, dst[at.clip(0)], cid).astype(cid.dtype)
        seqs = replace(seqs, frame=frame)
    vocab = vocab or internal.vocab
    ids = labels["subject_id"].to_numpy()
    encoding = encode(seqs, vocab).select(ids)
    bin_index, event = discretize(
        labels["duration"].to_numpy(), labels["event"].to_numpy(), internal.cuts
    )
    empty = np.zeros(0, dtype=ids.dtype)
    return SurvivalTask(
        config=cfg,
        labels=labels,
        person=site.person,
        sequences=seqs,
        vocab=vocab,
        encoding=encoding,
        bin_index=np.asarray(bin_index),
        event=np.asarray(event),
        cuts=internal.cuts,
        split={"train": empty, "val": empty, "test": ids},
        cohort=site.cohort,
    )


def vocab_concepts(vocab: Vocab) -> pd.DataFrame:
    """The value-free tokens of a vocabulary: ``token_id``, ``domain``, ``concept_id``."""
    rows = [
        (i, *tok.split(":"))
        for i, tok in enumerate(vocab.itos)
        if not tok.startswith("[") and tok.count(":") == 1
    ]
    out = pd.DataFrame(rows, columns=["token_id", "domain", "concept_id"])
    return out.astype({"token_id": np.int64, "concept_id": np.int64})


def token_coverage(task: SurvivalTask, vocab: Vocab | None = None) -> pd.DataFrame:
    """Share of an external task's event tokens that ``vocab`` (default the task's) lacks.

    A token is *unseen* when neither it nor its concept's value-free token is in the
    vocabulary (so it would be ``[UNK]``), counted on the sequences as recorded.

    Returns:
        one row per domain and a ``total`` row: ``tokens``, ``unseen tokens``,
        ``unseen share``, ``concepts`` (distinct) and ``unseen concepts``.
    """
    from ehrseq.data.vocab import UNK_ID

    vocab = vocab or task.vocab
    frame = task.sequences.frame
    event = (frame["special"] == 0).to_numpy()
    ids, _ = vocab.encode(frame)
    f = pd.DataFrame(
        {
            "domain": frame["domain"].to_numpy()[event],
            "concept_id": frame["concept_id"].to_numpy()[event],
            "unseen": ids[event] == UNK_ID,
        }
    )

    def count(g: pd.DataFrame) -> pd.Series:
        return pd.Series(
            {
                "tokens": len(g),
                "unseen tokens": int(g["unseen"].sum()),
                "unseen share": float(g["unseen"].mean()) if len(g) else 0.0,
                "concepts": g["concept_id"].nunique(),
                "unseen concepts": g.loc[g["unseen"], "concept_id"].nunique(),
            }
        )

    rows = {str(d): count(g) for d, g in f.groupby("domain", sort=True)}
    rows["total"] = count(f)
    out = pd.DataFrame(rows).T
    return out.astype({c: np.int64 for c in out.columns if c != "unseen share"})


def nearest_known(
    unseen: Sequence[int],
    known: Sequence[int],
    vectors: CodeEmbedding,
    domain_of: Mapping[int, str] | pd.Series,
) -> dict[int, int]:
    """Each unseen concept -> the known concept of the same domain nearest by cosine.

    Args:
        unseen: concept ids to map.
        known: concept ids they may map to (those of the model's vocabulary).
        vectors: text vectors of both (rows looked up by id).
        domain_of: concept id -> domain; a concept maps only within its domain.

    Returns:
        ``{unseen id: known id}``; an unseen id without a vector, or whose domain has no
        known concept with a vector, is left out.
    """
    unit = vectors.unit()
    known = np.asarray(known, dtype=np.int64)
    krow = vectors.rows(known)
    known, krow = known[krow >= 0], krow[krow >= 0]
    kdom = np.asarray([domain_of[int(c)] for c in known])
    out: dict[int, int] = {}
    for c in np.asarray(unseen, dtype=np.int64):
        row = vectors.rows([int(c)])[0]
        pick = kdom == domain_of.get(int(c), None) if row >= 0 else np.zeros(0, bool)
        if row < 0 or not pick.any():
            continue
        sims = unit[krow[pick]] @ unit[row]
        out[int(c)] = int(known[pick][int(np.argmax(sims))])
    return out


def extend_vocab(vocab: Vocab, tokens: Sequence[str]) -> Vocab:
    """``vocab`` with ``tokens`` appended (count 0): every old token keeps its id.

    Raises:
        ValueError: if a token is already in the vocabulary.
    """
    old = [t for t in tokens if t in vocab]
    if old:
        raise ValueError(f"extend_vocab: {len(old)} tokens already present, e.g. {old[:3]}")
    return Vocab(
        [*vocab.tokens, *tokens],
        [*vocab.counts, *([0] * len(tokens))],
        vocab.value_cuts,
        min_frequency=vocab.min_frequency,
        n_value_bins=vocab.n_value_bins,
    )


def difference_of_gains(
    metric: Callable[[np.ndarray, np.ndarray, np.ndarray], float],
    internal: tuple[np.ndarray, np.ndarray, Sequence[np.ndarray], Sequence[np.ndarray]],
    external: tuple[np.ndarray, np.ndarray, Sequence[np.ndarray], Sequence[np.ndarray]],
    *,
    name: str = "gain external - gain internal",
    metric_name: str = "metric",
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float | str]:
    r"""Bootstrap interval of :math:`(m_B(\text{new}) - m_B(\text{base})) -
    (m_A(\text{new}) - m_A(\text{base}))`, each model's metric averaged over its seeds.

    The two test sets hold different patients, so each resample draws both at once,
    independently; within a set, both models are scored on the same resample (paired).

    Args:
        metric: ``metric(durations, events, surv)`` (e.g. ``SurvivalProtocol.metrics[...]``).
        internal, external: ``(durations, events, survs_new, survs_base)`` of each test set,
            one survival matrix per seed.
        name, metric_name: the ``comparison`` and ``metric`` fields of the result.
        n_boot: resamples; ``level``: coverage of the percentile interval.

    Returns:
        ``comparison``, ``metric``, ``difference``, ``lower``, ``upper``, ``gain internal``,
        ``gain external``: the shape :func:`ehrseq.book.record_claim` reads.
    """
    if not 0 < level < 1 or n_boot < 2:
        raise ValueError("difference_of_gains: level in (0, 1) and n_boot >= 2 required")

    def gain(d, e, new, base, idx=None):
        if idx is not None:
            d, e = d[idx], e[idx]
            new, base = [s[idx] for s in new], [s[idx] for s in base]
        return float(
            np.mean([metric(d, e, s) for s in new]) - np.mean([metric(d, e, s) for s in base])
        )

    g_int, g_ext = gain(*internal), gain(*external)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        i = rng.integers(0, len(internal[0]), len(internal[0]))
        j = rng.integers(0, len(external[0]), len(external[0]))
        try:
            draws.append(gain(*external, idx=j) - gain(*internal, idx=i))
        except ValueError:
            continue
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    est = g_ext - g_int
    return {
        "comparison": name,
        "metric": metric_name,
        "difference": est,
        "lower": float(min(lo, est)),
        "upper": float(max(hi, est)),
        "gain internal": g_int,
        "gain external": g_ext,
    }


_DAY = pd.Timedelta(days=1)


def outcome_within(
    events: pd.DataFrame,
    observation_period: pd.DataFrame,
    index: pd.DataFrame,
    *,
    concept_ids: Sequence[int] = (),
    death: bool = False,
    days: float = 365.0,
) -> pd.DataFrame:
    r"""A binary label per patient: does the outcome occur within ``days`` of the
    prediction time?

    .. math:: y_i = \mathbb{1}\bigl[\exists\ \text{outcome row at}\ t \in
        [t^*_i,\ t^*_i + \text{days}]\bigr]

    The outcome is a row of ``concept_ids`` (e.g. an inpatient visit, 9201: a
    *hospitalisation*, which may recur, so earlier rows do not exclude anyone) or, with
    ``death=True``, a ``death``-domain row. A patient without the outcome is a negative
    only when followed for the whole window: the observation period that holds
    :math:`t^*` ends (its end date plus one day) at or after :math:`t^* +
    \text{days}` and, for an outcome other than death, the patient is alive then.
    Everyone else is left out (censored inside the window: their label is unknown).

    Args:
        events: the event table (:mod:`ehrseq.data.events`).
        observation_period: ``person_id``, ``observation_period_start_date``,
            ``observation_period_end_date``.
        index: ``subject_id`` (or ``person_id``) and ``prediction_time``, one row each.
        concept_ids: the outcome's concepts; ``death``: the outcome is death (give one).
        days: the window, in days (> 0).

    Returns:
        ``subject_id``, ``label`` (int64 0/1), in the order of ``index``, the unknown
        dropped.

    Raises:
        ValueError: naming what is wrong: neither or both of ``concept_ids`` and
        ``death``, ``days <= 0``, or missing columns.
    """
    if bool(len(concept_ids)) == bool(death):
        raise ValueError("outcome_within: give either concept_ids or death=True")
    if not days > 0:
        raise ValueError(f"outcome_within: days = {days} must be > 0")
    id_col = next((c for c in ("subject_id", "person_id") if c in index.columns), None)
    if id_col is None or "prediction_time" not in index.columns:
        raise ValueError(
            "outcome_within: index needs subject_id (or person_id) and "
            "prediction_time, "
            f"got {list(index.columns)}"
        )
    need = {"person_id", "observation_period_start_date", "observation_period_end_date"}
    if need - set(observation_period.columns):
        raise ValueError(f"outcome_within: observation_period lacks {sorted(need)}")
    idx = pd.DataFrame(
        {
            "person_id": index[id_col].to_numpy(np.int64),
            "t": pd.to_datetime(index["prediction_time"]).astype("datetime64[ns]"),
        }
    )
    window = pd.Timedelta(days=float(days))
    periods = observation_period
    obs = pd.DataFrame(
        {
            "person_id": periods["person_id"].to_numpy(np.int64),
            "start": pd.to_datetime(periods["observation_period_start_date"]),
            "end": pd.to_datetime(periods["observation_period_end_date"]) + _DAY,
        }
    )
    per = idx.merge(obs, on="person_id", how="left")
    per = per.loc[(per["start"] <= per["t"]) & (per["t"] < per["end"])]
    follow = per.groupby("person_id")["end"].max()
    end = idx["person_id"].map(follow)  # NaT: no period holds t*
    is_death = events["domain"] == "death"
    rows = is_death if death else events["concept_id"].isin(concept_ids)
    hit = events.loc[rows, ["person_id", "time"]].merge(idx, on="person_id")
    hit = hit.loc[(hit["time"] >= hit["t"]) & (hit["time"] <= hit["t"] + window)]
    positive = idx["person_id"].isin(hit["person_id"]).to_numpy()
    reach = (end >= idx["t"] + window).fillna(False).to_numpy(bool)
    if not death:
        dead = events.loc[events["domain"] == "death", ["person_id", "time"]]
        dead = dead.merge(idx, on="person_id")
        early = dead.loc[dead["time"] < dead["t"] + window, "person_id"]
        reach &= ~idx["person_id"].isin(early).to_numpy()
    keep = positive | reach
    return pd.DataFrame(
        {
            "subject_id": idx["person_id"].to_numpy()[keep],
            "label": positive[keep].astype(np.int64),
        }
    ).reset_index(drop=True)


def site_vocab(vocab: Vocab, value_cuts: Mapping[int, Sequence[float]]) -> Vocab:
    """``vocab`` with the value bins of its measurements refitted at another site.

    MedRep fits the decile bins of every measurement per site: the token
    ``measurement:<c>:q<j>`` then means "the site's own decile ``j`` of ``c``". Every
    token keeps its id; only the cut points change, for the concepts of
    ``vocab.value_cuts`` that ``value_cuts`` has (the others keep their cuts).

    Args:
        vocab: the model's vocabulary (fitted at the training site).
        value_cuts: concept id -> ``vocab.n_value_bins - 1`` increasing cut points, e.g.
            ``fit_deciles(site_b_measurements).cuts``.

    Returns:
        a new :class:`~ehrseq.data.vocab.Vocab` (``vocab`` is unchanged).

    Raises:
        ValueError: if a concept's cut points are not ``n_value_bins - 1`` increasing
            values.
    """
    cuts = dict(vocab.value_cuts)
    for cid, new in value_cuts.items():
        if int(cid) not in cuts:
            continue
        new = np.asarray(new, dtype=np.float64)
        if new.shape != (vocab.n_value_bins - 1,) or (np.diff(new) < 0).any():
            raise ValueError(
                f"site_vocab: concept {cid} has cut points of shape {new.shape}, "
                "expected "
                f"{vocab.n_value_bins - 1} non-decreasing values"
            )
        cuts[int(cid)] = new
    return Vocab(
        list(vocab.tokens),
        list(vocab.counts),
        cuts,
        min_frequency=vocab.min_frequency,
        n_value_bins=vocab.n_value_bins,
    )


def prolonged_stay(
    visit_occurrence: pd.DataFrame, index: pd.DataFrame, *, days: float = 7.0
) -> pd.DataFrame:
    r"""Med-BERT's pretraining label: did the history hold an inpatient stay longer than
    ``days``?

    .. math:: y_i = \mathbb{1}\bigl[\exists\ \text{inpatient visit}\ v:\
        \text{end}_v < t^*_i,\ \text{end}_v - \text{start}_v > \text{days}\bigr]

    Only stays that ended before the prediction time count, so the label reads nothing
    the model's history lacks. Med-BERT (Rasmy et al., npj Digit. Med. 2021) predicts
    prolonged length of stay (> 7 days) from the pooled sequence beside masked codes.

    Args:
        visit_occurrence: OMOP ``visit_occurrence`` (``person_id``,
            ``visit_concept_id``, ``visit_start_date``, ``visit_end_date``).
        index: ``subject_id`` and ``prediction_time``, one row per patient.
        days: a stay longer than this is prolonged.

    Returns:
        ``subject_id``, ``label`` (int64 0/1), in the order of ``index``.

    Raises:
        ValueError: naming a missing column.
    """
    need = {"person_id", "visit_concept_id", "visit_start_date", "visit_end_date"}
    lacking = sorted(need - set(visit_occurrence.columns))
    if lacking:
        raise ValueError(f"prolonged_stay: visit_occurrence lacks {lacking}")
    if not {"subject_id", "prediction_time"} <= set(index.columns):
        raise ValueError("prolonged_stay: index needs subject_id and prediction_time")
    v = visit_occurrence.loc[visit_occurrence["visit_concept_id"] == 9201]
    start = pd.to_datetime(v["visit_start_date"])
    end = pd.to_datetime(v["visit_end_date"])
    long = v.loc[(end - start) > pd.Timedelta(days=float(days)), ["person_id"]]
    long = long.assign(end=end[long.index])
    idx = index[["subject_id", "prediction_time"]]
    idx = idx.rename(columns={"subject_id": "person_id"})
    idx = idx.assign(t=pd.to_datetime(idx["prediction_time"]))
    hit = long.merge(idx, on="person_id")
    hit = hit.loc[hit["end"] < hit["t"], "person_id"]
    return pd.DataFrame(
        {
            "subject_id": idx["person_id"].to_numpy(np.int64),
            "label": idx["person_id"].isin(hit).to_numpy().astype(np.int64),
        }
    )
