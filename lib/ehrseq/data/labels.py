r"""Survival labels: from the prediction time, how long until the outcome or the end of follow-up.

For patient :math:`i` with prediction (index) time :math:`t^*_i`:

.. math::

    T_i &= \text{first occurrence of the outcome (any time)}, \\
    E_i &= \min\bigl(\text{observation end},\ t^*_i + \text{horizon},\
           \text{death (when the outcome is not death)}\bigr), \\
    \text{event}_i &= \mathbb{1}[\,t^*_i \le T_i \le E_i\,], \qquad
    \text{duration}_i = \frac{\min(T_i, E_i) - t^*_i}{1\ \text{day}} .

* The observation end is ``observation_period_end_date`` **plus one day**: the whole last
  day is observed, so an event dated on the end date counts.
* The observation period used is the one that contains :math:`t^*_i`
  (``start <= t* < end + 1 day``).
* A patient whose outcome happened **before** :math:`t^*_i` (a prevalent case) is dropped
  from the label table and counted; their history stays in the event table untouched. An
  outcome exactly at :math:`t^*_i` is a future event with duration 0 -- the sequence builder
  keeps only rows strictly before :math:`t^*_i`, so the model never sees it.
* Death ends follow-up for any other outcome: it censors (a competing risk treated as
  censoring; say so when you interpret the curves).

The label table (one row per labelled patient, sorted by ``subject_id``):

================ ============== ==========================================================
column           dtype          meaning
================ ============== ==========================================================
subject_id       int64          the patient (``person_id``; MEDS calls it ``subject_id``)
prediction_time  datetime64[ns] :math:`t^*`
event_time       datetime64[ns] :math:`T` when the event is observed, else NaT
censor_time      datetime64[ns] :math:`E` when censored, else NaT
event            int64          1 event, 0 censored
duration         float64        days from :math:`t^*` to the event or censoring
================ ============== ==========================================================

:func:`discretize` turns durations into discrete-time bins for hazard models.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ehrseq.data.events import check_events

__all__ = [
    "Outcome",
    "SurvivalLabels",
    "index_times",
    "survival_labels",
    "discretize",
    "LABEL_COLUMNS",
]

LABEL_COLUMNS = ("subject_id", "prediction_time", "event_time", "censor_time", "event", "duration")
_DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class Outcome:
    """What counts as the event: the first row with one of ``concept_ids``, or death.

    Args:
        name: a label for reports and file names, e.g. ``"heart_failure"``.
        concept_ids: standard concepts that mark the outcome.
        death: the outcome is death (the first ``death``-domain row, or
            ``persons.death_datetime`` when that column exists and is earlier).
        include_source_concepts: also match ``source_concept_id``.

    Raises:
        ValueError: neither or both of ``concept_ids`` and ``death``.
    """

    name: str
    concept_ids: frozenset[int] = field(default_factory=frozenset)
    death: bool = False
    include_source_concepts: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "concept_ids", frozenset(int(c) for c in self.concept_ids))
        if bool(self.concept_ids) == bool(self.death):
            raise ValueError(
                f"Outcome {self.name!r}: give either concept_ids or death=True (not both, not neither)"
            )

    @classmethod
    def of_concepts(cls, name: str, concept_ids: Iterable[int], **kwargs) -> Outcome:
        return cls(name=name, concept_ids=frozenset(concept_ids), **kwargs)

    @classmethod
    def of_death(cls) -> Outcome:
        return cls(name="death", death=True)


@dataclass
class SurvivalLabels:
    """The label table plus the count of patients dropped, by reason.

    ``dropped`` keys: ``no_observation_period``, ``index_outside_observation``,
    ``outcome_before_index``, ``death_before_index``, ``no_follow_up``.
    """

    table: pd.DataFrame
    dropped: dict[str, int]

    @property
    def prediction_times(self) -> pd.DataFrame:
        """``person_id``, ``prediction_time`` for :func:`ehrseq.data.sequences.build_sequences`."""
        return self.table[["subject_id", "prediction_time"]].rename(
            columns={"subject_id": "person_id"}
        )


def _periods(observation_periods: pd.DataFrame) -> pd.DataFrame:
    need = {"person_id", "observation_period_start_date", "observation_period_end_date"}
    if not need <= set(observation_periods.columns):
        raise ValueError(
            f"observation_periods: needs {sorted(need)}, got {list(observation_periods.columns)}"
        )
    obs = pd.DataFrame(
        {
            "person_id": observation_periods["person_id"].to_numpy(np.int64),
            "start": pd.to_datetime(observation_periods["observation_period_start_date"]).astype(
                "datetime64[ns]"
            ),
            "end": pd.to_datetime(observation_periods["observation_period_end_date"]).astype(
                "datetime64[ns]"
            )
            + _DAY,
        }
    )
    if obs[["start", "end"]].isna().any().any():
        raise ValueError("observation_periods: missing start or end dates")
    bad = obs["end"] <= obs["start"]
    if bad.any():
        raise ValueError(
            f"observation_periods: {int(bad.sum())} periods end before they start, e.g. "
            f"{observation_periods.loc[bad.to_numpy()].iloc[0].to_dict()}"
        )
    return obs


def index_times(observation_periods: pd.DataFrame, days_after_start: float) -> pd.DataFrame:
    """The rule "prediction time = first observation start + N days", for every patient.

    Args:
        observation_periods: ``person_id``, ``observation_period_start_date``,
            ``observation_period_end_date``.
        days_after_start: N (may be fractional); negative values are refused.

    Returns:
        ``person_id``, ``prediction_time`` (one row per patient with a period).

    Raises:
        ValueError: a negative N or malformed periods.
    """
    if days_after_start < 0:
        raise ValueError(f"days_after_start = {days_after_start}: must be >= 0")
    obs = _periods(observation_periods)
    first = obs.groupby("person_id", sort=True)["start"].min()
    return pd.DataFrame(
        {
            "person_id": first.index.to_numpy(np.int64),
            "prediction_time": (first + pd.Timedelta(days=days_after_start)).to_numpy(),
        }
    )


def _first_time(person_id: np.ndarray, time: pd.Series, rows: np.ndarray) -> pd.Series:
    """Earliest ``time`` per person among ``rows`` (a Series indexed by person_id)."""
    t = pd.Series(time.to_numpy()[rows], index=person_id[rows])
    return t.groupby(level=0).min()


def survival_labels(
    events: pd.DataFrame,
    persons: pd.DataFrame,
    observation_periods: pd.DataFrame,
    outcome: Outcome,
    index: pd.DataFrame | float,
    *,
    horizon_days: float | None = None,
) -> SurvivalLabels:
    """Build the survival label table (see the module docstring for every rule).

    Args:
        events: the event table (:mod:`ehrseq.data.events`).
        persons: ``person_id`` (and optionally ``death_datetime``); the patients to label when
            ``index`` is a number.
        observation_periods: ``person_id``, ``observation_period_start_date``,
            ``observation_period_end_date`` (dates; several periods per patient allowed).
        outcome: what counts as the event (:class:`Outcome`).
        index: a frame of ``person_id`` (or ``subject_id``) and ``prediction_time``, one row
            per patient; or a number N: prediction time = first observation start + N days.
        horizon_days: the longest follow-up, in days from the prediction time (``None``: no
            limit). An event exactly at the horizon counts.

    Returns:
        :class:`SurvivalLabels`: the table and the number of patients dropped per reason.

    Raises:
        ValueError: a non-positive horizon, several prediction times for one patient,
            missing prediction times, or malformed observation periods.
    """
    check_events(events)
    if horizon_days is not None and horizon_days <= 0:
        raise ValueError(f"horizon_days = {horizon_days}: must be > 0 (or None)")
    obs = _periods(observation_periods)
    if isinstance(index, pd.DataFrame):
        id_col = next((c for c in ("person_id", "subject_id") if c in index.columns), None)
        if id_col is None or "prediction_time" not in index.columns:
            raise ValueError(
                f"index: needs person_id (or subject_id) and prediction_time, got {list(index.columns)}"
            )
        idx = pd.DataFrame(
            {
                "person_id": index[id_col].to_numpy(np.int64),
                "prediction_time": pd.to_datetime(index["prediction_time"]).astype(
                    "datetime64[ns]"
                ),
            }
        )
        if idx["prediction_time"].isna().any():
            raise ValueError("index: missing prediction times")
        if idx["person_id"].duplicated().any():
            dup = idx.loc[idx["person_id"].duplicated(), "person_id"].iloc[0]
            raise ValueError(f"index: several prediction times for person {dup}; one per patient")
        n_no_period = int((~idx["person_id"].isin(obs["person_id"])).sum())
    else:
        idx = index_times(observation_periods, float(index))
        pop = persons["person_id"].to_numpy(np.int64)
        idx = idx[idx["person_id"].isin(pop)]
        n_no_period = int((~np.isin(pop, obs["person_id"].to_numpy())).sum())
    dropped = {
        "no_observation_period": n_no_period,
        "index_outside_observation": 0,
        "outcome_before_index": 0,
        "death_before_index": 0,
        "no_follow_up": 0,
    }

    # the observation period that contains the prediction time (latest end if they overlap)
    m = idx.merge(obs, on="person_id", how="inner")
    inside = (m["start"] <= m["prediction_time"]) & (m["prediction_time"] < m["end"])
    m = m[inside].sort_values(["person_id", "end"]).drop_duplicates("person_id", keep="last")
    dropped["index_outside_observation"] = int(
        idx["person_id"].isin(obs["person_id"]).sum() - len(m)
    )
    lab = m.set_index("person_id")[["prediction_time", "end"]]

    # outcome and death times
    pid = events["person_id"].to_numpy(np.int64)
    is_death = (events["domain"] == "death").to_numpy()
    death = _first_time(pid, events["time"], is_death)
    if "death_datetime" in persons.columns:
        pdth = pd.Series(
            pd.to_datetime(persons["death_datetime"]).astype("datetime64[ns]").to_numpy(),
            index=persons["person_id"].to_numpy(np.int64),
        ).dropna()
        death = pd.concat([death, pdth]).groupby(level=0).min()
    if outcome.death:
        first = death
    else:
        ids = np.fromiter(outcome.concept_ids, dtype=np.int64)
        hit = np.isin(events["concept_id"].to_numpy(np.int64), ids)
        if outcome.include_source_concepts:
            hit |= np.isin(events["source_concept_id"].to_numpy(np.int64), ids)
        first = _first_time(pid, events["time"], hit)
    lab["T"] = first.reindex(lab.index).astype("datetime64[ns]")
    lab["D"] = death.reindex(lab.index).astype("datetime64[ns]")

    pt = lab["prediction_time"]
    prevalent = lab["T"] < pt
    dropped["outcome_before_index"] = int(prevalent.sum())
    lab = lab[~prevalent]
    pt = lab["prediction_time"]
    end = lab["end"]
    if horizon_days is not None:
        end = end.where(
            end <= pt + pd.Timedelta(days=horizon_days), pt + pd.Timedelta(days=horizon_days)
        )
    if not outcome.death:
        died_before = lab["D"] < pt
        dropped["death_before_index"] = int(died_before.sum())
        lab, pt, end = lab[~died_before], pt[~died_before], end[~died_before]
        end = end.where(~(lab["D"] < end), lab["D"])
    event = lab["T"].notna() & (lab["T"] <= end)
    no_fu = ~event & (end <= pt)
    dropped["no_follow_up"] = int(no_fu.sum())
    keep = ~no_fu
    lab, pt, end, event = lab[keep], pt[keep], end[keep], event[keep]

    stop = lab["T"].where(event, end)
    table = pd.DataFrame(
        {
            "subject_id": lab.index.to_numpy(np.int64),
            "prediction_time": pt.to_numpy(),
            "event_time": lab["T"].where(event).to_numpy(),
            "censor_time": end.where(~event).to_numpy(),
            "event": event.to_numpy().astype(np.int64),
            "duration": ((stop - pt) / _DAY).to_numpy(np.float64),
        }
    )
    table = table.sort_values("subject_id", kind="stable").reset_index(drop=True)
    for c in ("prediction_time", "event_time", "censor_time"):
        table[c] = table[c].astype("datetime64[ns]")
    return SurvivalLabels(table=table, dropped=dropped)


def discretize(
    durations: np.ndarray | pd.Series,
    events: np.ndarray | pd.Series,
    cuts: np.ndarray | list[float] | None = None,
    *,
    width: float | None = None,
    n_bins: int | None = None,
    allow_past_last: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Durations in days -> discrete-time bins, for hazard models.

    With cut points :math:`0 = c_0 < c_1 < \dots < c_K`, bin :math:`j` is
    :math:`[c_j, c_{j+1})` for :math:`j < K - 1` and the last bin is closed,
    :math:`[c_{K-1}, c_K]` (so an event exactly at the horizon lands in it):

    .. math:: j(d) = \max\{\,j : c_j \le d\,\} \text{ clipped to } K - 1 .

    An event in bin :math:`j` means the hazard of bin :math:`j` fires; a censoring in bin
    :math:`j` means the patient survived bins :math:`0..j-1` and left during bin :math:`j`
    (the loss decides whether bin :math:`j` counts as survived). Past :math:`c_K`, a censored
    patient survived the whole grid: bin :math:`K-1`, event 0.

    Args:
        durations: days from prediction time, ``>= 0``.
        events: 1 event, 0 censored.
        cuts: the cut points :math:`c_0 = 0 < \dots < c_K`; or give ``width`` and ``n_bins``
            for :math:`c_k = k \cdot \text{width}`.
        allow_past_last: an *event* past :math:`c_K` becomes censored in the last bin instead
            of raising.

    Returns:
        ``(bins, events)``: int64 bin indices in ``0..K-1`` and int64 event flags.

    Shapes:
        durations, events: ``(n,)``; both outputs ``(n,)``.

    Raises:
        ValueError: bad cut points (not starting at 0, not increasing, fewer than 2), both
            or neither of ``cuts`` and ``width``/``n_bins``, negative or missing durations,
            mismatched shapes, or an event past the last bin when ``allow_past_last`` is
            False.
    """
    if (cuts is None) == (width is None and n_bins is None):
        raise ValueError("give either cuts, or width and n_bins")
    if cuts is None:
        if width is None or n_bins is None or width <= 0 or n_bins < 1:
            raise ValueError(f"width = {width}, n_bins = {n_bins}: need width > 0 and n_bins >= 1")
        cuts = np.arange(n_bins + 1, dtype=np.float64) * width
    cuts = np.asarray(cuts, dtype=np.float64)
    if cuts.ndim != 1 or len(cuts) < 2 or cuts[0] != 0 or not (np.diff(cuts) > 0).all():
        raise ValueError(f"cuts {cuts.tolist()}: need 0 = c_0 < c_1 < ... < c_K with K >= 1")
    d = np.asarray(durations, dtype=np.float64)
    e = np.asarray(events).astype(np.int64)
    if d.shape != e.shape or d.ndim != 1:
        raise ValueError(f"durations {d.shape} and events {e.shape}: need the same 1-D shape")
    if np.isnan(d).any() or (d < 0).any():
        i = int(np.argmax(np.isnan(d) | (d < 0)))
        raise ValueError(f"durations must be >= 0 and not NaN; row {i} has {d[i]}")
    if not np.isin(e, (0, 1)).all():
        raise ValueError("events must be 0 or 1")
    k = len(cuts) - 1
    past = d > cuts[-1]
    if (past & (e == 1)).any() and not allow_past_last:
        i = int(np.argmax(past & (e == 1)))
        raise ValueError(
            f"{int((past & (e == 1)).sum())} events fall past the last bin (c_K = {cuts[-1]} days), "
            f"e.g. row {i} at {d[i]} days; extend the cuts, cap follow-up with horizon_days, or "
            "pass allow_past_last=True to censor them at the end of the grid"
        )
    bins = (np.searchsorted(cuts, d, side="right") - 1).clip(0, k - 1)
    e = np.where(past, 0, e)
    return bins.astype(np.int64), e
