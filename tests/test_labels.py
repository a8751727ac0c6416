"""Survival labels and discrete-time bins, on tiny hand-made cohorts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ehrseq.data.labels import Outcome, discretize, index_times, survival_labels

T = pd.Timestamp


def make_events(rows: list[tuple]) -> pd.DataFrame:
    """Rows of (person_id, time, domain, concept_id)."""
    df = pd.DataFrame(
        [(p, T(t), c, 0, d, np.nan, 0, None) for p, t, d, c in rows],
        columns=[
            "person_id",
            "time",
            "concept_id",
            "source_concept_id",
            "domain",
            "value_as_number",
            "unit_concept_id",
            "visit_occurrence_id",
        ],
    ).astype(
        {
            "person_id": "int64",
            "time": "datetime64[ns]",
            "concept_id": "int64",
            "source_concept_id": "int64",
            "visit_occurrence_id": "Int64",
        }
    )
    return df.sort_values(["person_id", "time"], kind="stable").reset_index(drop=True)


def periods(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(
        [(p, T(s), T(e)) for p, s, e in rows],
        columns=["person_id", "observation_period_start_date", "observation_period_end_date"],
    )


HF = 316139  # the outcome concept in these tests

EVENTS = make_events(
    [
        (1, "2020-01-01", "condition", 1),
        (1, "2020-03-01", "condition", HF),  # event 60 days after index
        (2, "2020-01-01", "condition", 1),  # censored at observation end
        (3, "2019-06-01", "condition", HF),  # prevalent: dropped
        (4, "2020-01-01", "condition", 1),
        (4, "2020-02-01", "death", 0),  # death censors the HF outcome
        (5, "2020-01-01", "condition", 1),
        (5, "2021-01-31", "condition", HF),  # after the 365-day horizon: censored
        (6, "2020-06-30", "condition", HF),  # on the last observed day: counts
        (7, "2020-01-01", "condition", HF),  # exactly at the index: event at 0 days
    ]
)
PERSONS = pd.DataFrame({"person_id": np.arange(1, 10)})
OBS = periods(
    [
        (1, "2020-01-01", "2021-12-31"),
        (2, "2020-01-01", "2020-12-31"),
        (3, "2019-01-01", "2021-12-31"),
        (4, "2020-01-01", "2021-12-31"),
        (5, "2020-01-01", "2021-12-31"),
        (6, "2020-01-01", "2020-06-30"),
        (7, "2020-01-01", "2021-12-31"),
        (8, "2021-01-01", "2021-12-31"),  # index (2020-01-01) outside observation
    ]
)  # person 9 has no observation period
INDEX = pd.DataFrame({"person_id": np.arange(1, 10), "prediction_time": T("2020-01-01")})


def test_survival_labels_by_hand():
    lab = survival_labels(
        EVENTS, PERSONS, OBS, Outcome.of_concepts("hf", [HF]), INDEX, horizon_days=365
    )
    t = lab.table.set_index("subject_id")
    assert t.index.tolist() == [1, 2, 4, 5, 6, 7]
    assert t["event"].to_dict() == {1: 1, 2: 0, 4: 0, 5: 0, 6: 1, 7: 1}
    assert t.loc[1, "duration"] == 60.0 and t.loc[1, "event_time"] == T("2020-03-01")
    assert pd.isna(t.loc[1, "censor_time"])
    assert t.loc[2, "censor_time"] == T("2020-12-31")  # the 365-day horizon comes first
    assert t.loc[2, "duration"] == 365.0
    assert t.loc[4, "censor_time"] == T("2020-02-01") and t.loc[4, "duration"] == 31.0
    assert t.loc[5, "censor_time"] == T("2020-12-31") and pd.isna(t.loc[5, "event_time"])
    assert t.loc[6, "duration"] == 181.0
    assert t.loc[7, "duration"] == 0.0
    assert lab.dropped == {
        "no_observation_period": 1,
        "index_outside_observation": 1,
        "outcome_before_index": 1,
        "death_before_index": 0,
        "no_follow_up": 0,
    }
    assert list(lab.table.columns) == [
        "subject_id",
        "prediction_time",
        "event_time",
        "censor_time",
        "event",
        "duration",
    ]
    assert lab.prediction_times.columns.tolist() == ["person_id", "prediction_time"]


def test_no_horizon_and_death_outcome():
    lab = survival_labels(EVENTS, PERSONS, OBS, Outcome.of_concepts("hf", [HF]), INDEX)
    t = lab.table.set_index("subject_id")
    assert t.loc[5, "event"] == 1 and t.loc[5, "duration"] == 396.0
    # observation ends at the end date + 1 day: the whole last day is observed
    assert t.loc[2, "censor_time"] == T("2021-01-01") and t.loc[2, "duration"] == 366.0
    death = survival_labels(EVENTS, PERSONS, OBS, Outcome.of_death(), INDEX)
    d = death.table.set_index("subject_id")
    assert d.loc[4, "event"] == 1 and d.loc[4, "duration"] == 31.0
    assert d.loc[3, "event"] == 0  # the HF before index is not a death
    assert d["event"].sum() == 1


def test_death_datetime_of_persons_and_death_before_index():
    persons = PERSONS.assign(death_datetime=pd.NaT)
    persons.loc[persons["person_id"] == 1, "death_datetime"] = T("2020-02-01")
    persons.loc[persons["person_id"] == 2, "death_datetime"] = T("2019-12-01")
    lab = survival_labels(EVENTS, persons, OBS, Outcome.of_concepts("hf", [HF]), INDEX)
    t = lab.table.set_index("subject_id")
    assert t.loc[1, "event"] == 0 and t.loc[1, "censor_time"] == T("2020-02-01")
    assert 2 not in t.index and lab.dropped["death_before_index"] == 1


def test_index_rule_and_multiple_periods():
    obs = periods([(1, "2019-01-01", "2019-06-30"), (1, "2019-12-01", "2021-12-31")])
    it = index_times(obs, days_after_start=30)
    assert it["prediction_time"].tolist() == [T("2019-01-31")]
    lab = survival_labels(EVENTS, PERSONS, obs, Outcome.of_concepts("hf", [HF]), 30)
    # index in the first period: follow-up ends with that period
    t = lab.table.set_index("subject_id")
    assert t.loc[1, "censor_time"] == T("2019-07-01") and t.loc[1, "event"] == 0
    assert lab.dropped["no_observation_period"] == 8
    # an index in the second period uses it
    idx = pd.DataFrame({"subject_id": [1], "prediction_time": [T("2020-01-01")]})
    lab = survival_labels(EVENTS, PERSONS, obs, Outcome.of_concepts("hf", [HF]), idx)
    assert lab.table["event"].tolist() == [1]


def test_source_concepts_and_bad_inputs():
    ev = EVENTS.copy()
    ev.loc[ev["concept_id"] == HF, "source_concept_id"] = 44
    ev.loc[ev["concept_id"] == HF, "concept_id"] = 0
    lab = survival_labels(ev, PERSONS, OBS, Outcome.of_concepts("hf", [44]), INDEX)
    assert lab.table["event"].sum() == 0
    lab = survival_labels(
        ev, PERSONS, OBS, Outcome.of_concepts("hf", [44], include_source_concepts=True), INDEX
    )
    assert lab.table["event"].sum() == 4
    with pytest.raises(ValueError, match="either concept_ids or death"):
        Outcome("x")
    with pytest.raises(ValueError, match="several prediction times"):
        survival_labels(EVENTS, PERSONS, OBS, Outcome.of_death(), pd.concat([INDEX, INDEX]))
    with pytest.raises(ValueError, match="horizon_days"):
        survival_labels(EVENTS, PERSONS, OBS, Outcome.of_death(), INDEX, horizon_days=0)
    with pytest.raises(ValueError, match="end before they start"):
        survival_labels(
            EVENTS, PERSONS, periods([(1, "2020-01-02", "2019-01-01")]), Outcome.of_death(), 0
        )


def test_discretize_fixed_width_and_cuts():
    d = np.array([0.0, 29.9, 30.0, 89.0, 90.0, 120.0])
    e = np.array([1, 0, 1, 1, 1, 0])
    bins, ev = discretize(d, e, width=30, n_bins=3)
    assert bins.tolist() == [0, 0, 1, 2, 2, 2]  # 90 = c_K lands in the closed last bin
    assert ev.tolist() == [1, 0, 1, 1, 1, 0]  # censored past the grid: last bin, event 0
    bins2, _ = discretize(d, e, cuts=[0, 30, 60, 90])
    assert bins2.tolist() == bins.tolist()
    with pytest.raises(ValueError, match="past the last bin"):
        discretize([100.0], [1], cuts=[0, 30, 90])
    b, ev = discretize([100.0], [1], cuts=[0, 30, 90], allow_past_last=True)
    assert b.tolist() == [1] and ev.tolist() == [0]
    for bad in ([1, 30], [0, 30, 30], [0]):
        with pytest.raises(ValueError, match="cuts"):
            discretize([1.0], [1], cuts=bad)
    with pytest.raises(ValueError, match=">= 0"):
        discretize([-1.0], [1], width=1, n_bins=2)
    with pytest.raises(ValueError, match="either cuts"):
        discretize([1.0], [1])


@settings(max_examples=50, deadline=None, database=None)
@given(
    st.lists(st.tuples(st.floats(0, 500), st.integers(0, 1)), min_size=1, max_size=50),
    st.lists(st.floats(1, 100), min_size=1, max_size=8),
)
def test_discretize_properties(pairs, widths):
    cuts = np.r_[0, np.cumsum(widths)]
    d = np.array([p[0] for p in pairs])
    e = np.array([p[1] for p in pairs])
    bins, ev = discretize(d, e, cuts=cuts, allow_past_last=True)
    inside = d <= cuts[-1]
    assert ((bins >= 0) & (bins < len(cuts) - 1)).all()
    assert (cuts[bins][inside] <= d[inside]).all()
    assert (d[inside] <= cuts[bins + 1][inside]).all()
    assert (ev == np.where(inside, e, 0)).all()


def test_label_table_invariants():
    lab = survival_labels(
        EVENTS, PERSONS, OBS, Outcome.of_concepts("hf", [HF]), INDEX, horizon_days=200
    )
    t = lab.table
    assert (t["duration"] >= 0).all()
    assert (t["event_time"].notna() == (t["event"] == 1)).all()
    assert (t["censor_time"].notna() == (t["event"] == 0)).all()
    assert (t["duration"] <= 200).all()
    stop = t["event_time"].fillna(t["censor_time"])
    np.testing.assert_allclose((stop - t["prediction_time"]) / pd.Timedelta(days=1), t["duration"])
