"""Events -> sequences: leakage cut, visit grouping, ordering, truncation, counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ehrseq.data.events import DOMAINS, check_events
from ehrseq.data.sequences import SPECIAL_CLS, SPECIAL_SEP, build_sequences

BIRTH = pd.Timestamp("1950-01-01")


def make_events(rows: list[tuple]) -> pd.DataFrame:
    """Rows of (person_id, time, domain, concept_id[, value[, visit_occurrence_id]])."""
    recs = []
    for r in rows:
        pid, t, dom, cid = r[:4]
        val = r[4] if len(r) > 4 else np.nan
        vid = r[5] if len(r) > 5 else None
        recs.append((pid, pd.Timestamp(t), cid, 0, dom, val, 0, vid))
    df = pd.DataFrame(
        recs,
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
    )
    df = df.astype(
        {
            "person_id": "int64",
            "time": "datetime64[ns]",
            "concept_id": "int64",
            "source_concept_id": "int64",
            "domain": "object",
            "value_as_number": "float64",
            "unit_concept_id": "int64",
            "visit_occurrence_id": "Int64",
        }
    )
    df = df.sort_values(["person_id", "time"], kind="stable").reset_index(drop=True)
    return check_events(df)


def persons_for(events: pd.DataFrame, birth: pd.Timestamp = BIRTH) -> pd.DataFrame:
    ids = np.unique(events["person_id"].to_numpy())
    return pd.DataFrame(
        {"person_id": ids, "birth_datetime": birth, "gender_concept_id": 8507}
    ).astype({"birth_datetime": "datetime64[ns]"})


def test_prediction_time_is_strict_and_counted():
    ev = make_events(
        [
            (1, "2020-01-01", "condition", 1),
            (1, "2020-01-02", "condition", 2),
            (1, "2020-01-03", "condition", 3),  # exactly at the prediction time: dropped
            (1, "2020-01-04", "condition", 4),
            (2, "2020-01-01", "drug", 5),  # no prediction time: dropped
        ]
    )
    pt = pd.DataFrame({"person_id": [1], "prediction_time": [pd.Timestamp("2020-01-03")]})
    s = build_sequences(ev, persons_for(ev), pt)
    assert s.frame["concept_id"].tolist() == [1, 2]
    assert (s.frame["time"] < pd.Timestamp("2020-01-03")).all()
    r = s.report
    assert r["events_at_or_after_prediction_time"] == 2
    assert r["events_without_prediction_time"] == 1
    assert r["events_out"] == 2 and r["patients_out"] == 1
    # subject_id is accepted as the id column too
    s2 = build_sequences(ev, persons_for(ev), pt.rename(columns={"person_id": "subject_id"}))
    assert s2.frame.equals(s.frame)


def test_patient_without_history_is_counted():
    ev = make_events([(1, "2020-01-05", "condition", 1), (2, "2020-01-01", "condition", 2)])
    pt = pd.DataFrame(
        {"person_id": [1, 2], "prediction_time": pd.to_datetime(["2020-01-01", "2020-06-01"])}
    )
    s = build_sequences(ev, persons_for(ev), pt)
    assert s.person_ids.tolist() == [2]
    assert s.report["patients_without_history"] == 1


def test_flat_visits_are_calendar_days_and_features():
    ev = make_events(
        [
            (1, "2020-01-01 08:00", "condition", 1, np.nan, 10),
            (1, "2020-01-01 20:00", "drug", 2, np.nan, 11),
            (1, "2020-01-03", "condition", 3),
        ]
    )
    s = build_sequences(ev, persons_for(ev), strategy="flat")
    f = s.frame
    assert f["visit"].tolist() == [1, 1, 2]
    assert f["position"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(f["time_delta"], [0.0, 0.5, 1.0 + 4 / 24], rtol=1e-6)
    age0 = (pd.Timestamp("2020-01-01 08:00") - BIRTH) / pd.Timedelta(days=365.25)
    assert f["age"].iloc[0] == pytest.approx(age0, rel=1e-6)
    assert f["age"].dtype == np.float32
    np.testing.assert_allclose(f["visit_delta"], [0, 0, 1 + 16 / 24], rtol=1e-6)


def test_visit_strategy_known_ids_and_day_fallback():
    ev = make_events(
        [
            (1, "2020-01-01", "visit", 9201, np.nan, 100),
            (1, "2020-01-01", "condition", 1, np.nan, 100),
            (1, "2020-01-02", "condition", 2, np.nan, 100),  # same visit, next day
            (1, "2020-01-02", "drug", 3, np.nan, None),  # no id: day fallback
            (1, "2020-01-02", "drug", 4, np.nan, 555),  # id without a visit row: fallback
            (1, "2020-01-05", "condition", 5, np.nan, 200),  # visit 200 belongs to person 2
            (2, "2020-01-05", "visit", 9202, np.nan, 200),
        ]
    )
    s = build_sequences(ev, persons_for(ev), strategy="visit")
    f = s.frame[s.frame["person_id"] == 1]
    assert f["concept_id"].tolist() == [9201, 1, 2, 3, 4, 5]
    assert f["visit"].tolist() == [1, 1, 1, 2, 2, 3]
    assert s.report["rows_visit_fallback_day"] == 3
    assert s.report["rows_visit_id_unresolved"] == 2
    # flat ignores the ids: one visit per day
    flat = build_sequences(ev, persons_for(ev), strategy="flat").frame
    assert flat.loc[flat["person_id"] == 1, "visit"].tolist() == [1, 1, 2, 2, 2, 3]


def test_known_visits_table_overrides_visit_rows():
    ev = make_events(
        [
            (1, "2020-01-01", "condition", 1, np.nan, 7),
            (1, "2020-01-03", "condition", 2, np.nan, 7),
        ]
    )
    kv = pd.DataFrame({"person_id": [1], "visit_occurrence_id": [7]})
    s = build_sequences(ev, persons_for(ev), strategy="visit", known_visits=kv)
    assert s.frame["visit"].tolist() == [1, 1]
    assert s.report["rows_visit_fallback_day"] == 0
    s = build_sequences(ev, persons_for(ev), strategy="visit")
    assert s.frame["visit"].tolist() == [1, 2]
    assert s.report["rows_visit_fallback_day"] == 2


def test_overlapping_visits_stay_together_ordered_by_start():
    ev = make_events(
        [
            (1, "2020-01-01", "visit", 9201, np.nan, 1),  # inpatient stay from day 1
            (1, "2020-01-02", "visit", 9202, np.nan, 2),  # outpatient on day 2
            (1, "2020-01-02 10:00", "drug", 20, np.nan, 2),
            (1, "2020-01-03", "condition", 10, np.nan, 1),
        ]
    )
    f = build_sequences(ev, persons_for(ev), strategy="visit").frame
    assert f["concept_id"].tolist() == [9201, 10, 9202, 20]
    assert f["visit"].tolist() == [1, 1, 2, 2]
    assert (f["time_delta"] >= 0).all()  # the backwards step is clipped
    assert f["visit_delta"].tolist() == [0.0, 0.0, 1.0, 1.0]


def test_domain_strategy_orders_by_domain_within_visit():
    ev = make_events(
        [
            (1, "2020-01-01 09:00", "measurement", 3, 5.0, 1),
            (1, "2020-01-01 10:00", "drug", 2, np.nan, 1),
            (1, "2020-01-01 11:00", "condition", 1, np.nan, 1),
            (1, "2020-01-01 12:00", "visit", 9, np.nan, 1),
            (1, "2020-01-02", "condition", 4, np.nan, None),
        ]
    )
    f = build_sequences(ev, persons_for(ev), strategy="domain").frame
    assert f["domain"].astype(str).tolist() == [
        "condition",
        "drug",
        "measurement",
        "visit",
        "condition",
    ]
    assert f["visit"].tolist() == [1, 1, 1, 1, 2]


def test_max_len_keeps_most_recent_and_counts():
    ev = make_events([(1, f"2020-01-{d:02d}", "condition", d) for d in range(1, 11)])
    s = build_sequences(ev, persons_for(ev), max_len=4)
    assert s.frame["concept_id"].tolist() == [7, 8, 9, 10]
    assert s.frame["visit"].tolist() == [1, 2, 3, 4]  # renumbered from the first kept visit
    assert s.frame["position"].tolist() == [0, 1, 2, 3]
    assert s.frame["time_delta"].iloc[0] == 0.0
    assert s.report["events_cut_max_len"] == 6 and s.report["tokens_cut_max_len"] == 6
    assert s.report["patients_truncated"] == 1


def test_cls_sep_and_truncation_drops_orphan_sep():
    ev = make_events(
        [
            (1, "2020-01-01", "condition", 1),
            (1, "2020-01-01", "condition", 2),
            (1, "2020-01-02", "condition", 3),
            (1, "2020-01-03", "condition", 4),
        ]
    )
    full = build_sequences(ev, persons_for(ev), add_cls=True, add_sep=True).frame
    assert full["special"].tolist() == [1, 0, 0, 2, 0, 2, 0, 2]
    assert full["domain"].astype(str).tolist()[:1] == ["[CLS]"]
    # keep [CLS] + last 4: [SEP](of day 2) 4 [SEP] would start with an orphan [SEP] ... 3 [SEP] 4 [SEP]
    s = build_sequences(ev, persons_for(ev), add_cls=True, add_sep=True, max_len=5)
    assert s.frame["special"].tolist() == [SPECIAL_CLS, 0, SPECIAL_SEP, 0, SPECIAL_SEP]
    assert s.frame["concept_id"].tolist() == [0, 3, 0, 4, 0]
    s = build_sequences(ev, persons_for(ev), add_cls=True, add_sep=True, max_len=4)
    assert s.frame["concept_id"].tolist() == [0, 4, 0]  # the leading [SEP] went too
    assert s.report["tokens_cut_max_len"] == 5
    # [CLS] takes the time and visit of the first token it precedes
    assert s.frame["time"].iloc[0] == pd.Timestamp("2020-01-03")
    assert s.frame["visit"].tolist() == [1, 1, 1]


def test_max_visits_and_codes_per_visit():
    ev = make_events(
        [
            (1, "2020-01-01", "condition", 1),
            (1, "2020-01-02", "condition", 2),
            (1, "2020-01-02", "condition", 3),
            (1, "2020-01-02", "condition", 4),
            (1, "2020-01-03", "condition", 5),
        ]
    )
    s = build_sequences(ev, persons_for(ev), max_visits=2, max_codes_per_visit=2)
    assert s.frame["concept_id"].tolist() == [3, 4, 5]
    assert s.frame["visit"].tolist() == [1, 1, 2]
    assert s.report["events_cut_max_visits"] == 1
    assert s.report["events_cut_max_codes_per_visit"] == 1


def test_before_birth_is_dropped_and_bad_inputs_raise():
    ev = make_events([(1, "1940-01-01", "condition", 1), (1, "2020-01-01", "condition", 2)])
    s = build_sequences(ev, persons_for(ev))
    assert s.report["events_before_birth"] == 1
    with pytest.raises(ValueError, match="strategy"):
        build_sequences(ev, persons_for(ev), strategy="bag")
    with pytest.raises(ValueError, match="max_len"):
        build_sequences(ev, persons_for(ev), max_len=2, add_cls=True, add_sep=True)
    with pytest.raises(ValueError, match="persons"):
        build_sequences(ev, persons_for(ev).iloc[:0])
    pt = pd.DataFrame({"person_id": [1, 1], "prediction_time": pd.to_datetime(["2020", "2021"])})
    with pytest.raises(ValueError, match="several prediction times"):
        build_sequences(ev, persons_for(ev), pt)


# ----------------------------------------------------------------------- properties
@st.composite
def event_frames(draw):
    n_pat = draw(st.integers(1, 5))
    rows = []
    for pid in range(1, n_pat + 1):
        for _ in range(draw(st.integers(0, 12))):
            day = draw(st.integers(0, 20))
            hour = draw(st.sampled_from([0, 9, 15]))
            dom = draw(st.sampled_from(DOMAINS))
            vid = draw(st.sampled_from([None, pid * 10, pid * 10 + 1, 999]))
            rows.append(
                (
                    pid,
                    pd.Timestamp("2020-01-01") + pd.Timedelta(days=day, hours=hour),
                    dom,
                    draw(st.integers(1, 6)),
                    draw(st.floats(0, 10)) if dom == "measurement" else np.nan,
                    vid,
                )
            )
    if not rows:
        rows.append((1, pd.Timestamp("2020-01-01"), "condition", 1, np.nan, None))
    ev = make_events(rows)
    pt_days = draw(st.lists(st.integers(0, 22), min_size=n_pat, max_size=n_pat))
    pt = pd.DataFrame(
        {
            "person_id": np.arange(1, n_pat + 1),
            "prediction_time": [pd.Timestamp("2020-01-01") + pd.Timedelta(days=d) for d in pt_days],
        }
    )
    return ev, pt


@settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    data=event_frames(),
    strategy=st.sampled_from(["flat", "visit", "domain"]),
    max_len=st.one_of(st.none(), st.integers(3, 8)),
    cls=st.booleans(),
    sep=st.booleans(),
)
def test_sequence_invariants(data, strategy, max_len, cls, sep):
    ev, pt = data
    s = build_sequences(
        ev, persons_for(ev), pt, strategy=strategy, max_len=max_len, add_cls=cls, add_sep=sep
    )
    f, r = s.frame, s.report
    # no leakage
    joined = f.merge(pt, on="person_id")
    assert (joined["time"] < joined["prediction_time"]).all()
    # every input event is accounted for
    assert r["events_in"] == (
        r["events_without_prediction_time"]
        + r["events_at_or_after_prediction_time"]
        + r["events_before_birth"]
        + r["events_cut_max_len"]
        + r["events_out"]
    )
    assert r["tokens_out"] == len(f)
    kept = ev.merge(pt, on="person_id")
    assert r["events_out"] + r["events_cut_max_len"] == int(
        (kept["time"] < kept["prediction_time"]).sum()
    )
    for _, g in f.groupby("person_id"):
        assert g["position"].tolist() == list(range(len(g)))
        v = g["visit"].to_numpy()
        assert v[0] == 1 and (np.diff(v) >= 0).all() and (np.diff(v) <= 1).all()
        if max_len is not None:
            assert len(g) <= max_len
        assert (g["special"] == 0).any()
        if cls:
            assert g["special"].iloc[0] == SPECIAL_CLS
            assert (g["special"].iloc[1:] != SPECIAL_CLS).all()
        if sep:
            first_real = g[g["special"] != SPECIAL_CLS].iloc[0]
            assert first_real["special"] == 0
            assert g["special"].iloc[-1] == SPECIAL_SEP
        assert (g["time_delta"] >= 0).all() and g["time_delta"].iloc[0] == 0
    # untruncated flat sequences keep the event table's order
    if strategy == "flat" and max_len is None and not (cls or sep):
        exp = kept[kept["time"] < kept["prediction_time"]]
        assert f["concept_id"].tolist() == exp["concept_id"].tolist()
