"""MEDS written by other tools: foreign codes, static rows, round trips, validation, ACES labels.

Fixtures are built at test time: :mod:`meds_extract` (the MEDS-extract code style, with
pyarrow) and, when installed, the MEDS project's own builder ``meds-testing-helpers`` (its
static sample dataset with a task, and a generated dataset).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import meds
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from meds_extract import SHARDS, shard_table, write_meds_extract

from ehrseq.data import meds as meds_io
from ehrseq.data.meds import (
    foreign_concept_ids,
    read_meds,
    read_meds_static,
    read_survival_labels,
    validate_meds,
    write_meds,
)
from ehrseq.data.sequences import build_sequences
from ehrseq.data.tensors import encode
from ehrseq.data.vocab import Vocab

ROW_KEY = ["subject_id", "time", "code", "numeric_value", "text_value"]


def data_rows(root: Path) -> pd.DataFrame:
    """Every row of every shard over the MEDS core columns, in one canonical order."""
    tables = []
    for path in sorted((root / "data").rglob("*.parquet")):
        t = pq.read_table(path)
        cols = [c for c in ROW_KEY if c in t.column_names]
        tables.append(t.select(cols).cast(pa.schema([t.schema.field(c) for c in cols])))
    df = pa.concat_tables(tables, promote_options="default").to_pandas()
    if "text_value" not in df.columns:
        df["text_value"] = None
    df = df[ROW_KEY].astype({"numeric_value": "float64", "text_value": object})
    df["text_value"] = df["text_value"].where(df["text_value"].notna(), None)
    return df.sort_values(ROW_KEY, na_position="first", kind="stable").reset_index(drop=True)


def read_quietly(root: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the note on unknown columns
        return read_meds(root)


def round_trip(src: Path, dst: Path) -> Path:
    """Foreign MEDS -> read_meds (+ static rows) -> write_meds, checked by validate_meds."""
    events, persons, splits, _ = read_quietly(src)
    out = write_meds(events, persons, dst, splits=splits, static=read_meds_static(src))
    validate_meds(out)
    return out


@pytest.fixture
def extract(tmp_path):
    return write_meds_extract(tmp_path / "extract")


def test_meds_extract_fixture_is_valid_meds(extract):
    validate_meds(extract)


def test_read_keeps_every_foreign_code(extract):
    with pytest.warns(
        UserWarning, match=r"'hadm_id' \(17 non-null values; dataset.json: raw_source_id_columns\)"
    ):
        ev, persons, splits, report = read_meds(extract)
    src = data_rows(extract)
    event_codes = sorted(set(src.loc[src["time"].notna(), "code"]) - {meds.birth_code})
    assert report == {
        "rows": len(src),
        "events": len(src) - 4 - 4,  # 4 static GENDER rows, 4 births
        "static_rows": 4,
        "codes": src["code"].nunique(),
        "foreign_codes": len(event_codes) - 1,  # all but MEDS_DEATH
        "foreign_rows": int((ev["domain"] != "death").sum()),
        "unknown_columns": 1,
    }
    # one code <-> one (domain, concept id): nothing collapses
    assert sorted(ev["code"].unique()) == event_codes
    pairs = ev.groupby("code")[["domain", "concept_id"]].nunique()
    assert (pairs == 1).all().all()
    assert len(ev[["domain", "concept_id"]].drop_duplicates()) == len(event_codes)
    foreign = ev["code"] != meds.death_code
    np.testing.assert_array_equal(
        ev.loc[foreign, "concept_id"], foreign_concept_ids(ev.loc[foreign, "code"])
    )
    assert (ev.loc[foreign, "concept_id"] < 0).all()
    first = ev.groupby("code")["domain"].first()
    assert first["LAB//50912//mg/dL"] == "measurement"
    assert first["DIAGNOSIS//ICD//9//4280"] == "condition"
    assert first["MEDICATION//START//Furosemide"] == "drug"
    assert first["PROCEDURE//ICD//9//3722"] == "procedure"
    assert first["HOSPITAL_DISCHARGE//HOME"] == "observation"
    assert first[meds.death_code] == "death"
    # values and text travel with their rows
    timed = src[src["time"].notna() & (src["code"] != meds.birth_code)]
    timed = timed.sort_values(["subject_id", "time"], kind="stable").reset_index(drop=True)
    np.testing.assert_array_equal(ev["code"], timed["code"])
    np.testing.assert_allclose(ev["value_as_number"], timed["numeric_value"], equal_nan=True)
    assert ev["text_value"].tolist() == timed["text_value"].tolist()
    assert ev.loc[ev["code"] == "LAB//50912//mg/dL", "value_as_number"].round(4).tolist() == [
        1.4,
        2.9,
        0.8,
    ]
    assert persons["gender_concept_id"].tolist() == [8532, 8507, 8532, 8507]
    assert (
        persons["birth_datetime"].tolist()
        == pd.to_datetime(["2090-05-01", "2070-02-01", "2080-07-15", "2060-01-01"]).tolist()
    )
    assert splits.set_index("subject_id")["split"].to_dict()[10004] == "held_out"


def test_static_rows_anywhere_in_a_shard(extract, tmp_path):
    late = write_meds_extract(tmp_path / "late", static_last=True)
    with pytest.raises(ValueError) as err:
        validate_meds(late)
    msg = str(err.value)
    assert "held_out/0.parquet: subject 10004, row 4: a static (null-time) row after a timed" in msg
    assert (
        "MEDS rule: within a subject, rows are sorted by time with static (null-time) rows first"
        in msg
    )
    assert "row 4: subject_id=10004, time=null, code='GENDER//M'" in msg
    for got, want in zip(read_quietly(late), read_quietly(extract)):
        if isinstance(want, pd.DataFrame):
            pd.testing.assert_frame_equal(got, want)
        else:
            assert got == want
    pd.testing.assert_frame_equal(read_meds_static(late), read_meds_static(extract))
    assert read_meds_static(extract)["code"].tolist() == ["GENDER//F", "GENDER//M"] * 2


def test_round_trip_keeps_every_code_and_value(extract, tmp_path):
    out = round_trip(extract, tmp_path / "out")
    src, back = data_rows(extract), data_rows(out)
    assert src["code"].nunique() == back["code"].nunique() == 14
    pd.testing.assert_frame_equal(back, src)  # row for row: codes, times, values, text
    ev, persons, _, report = read_meds(out)  # ours now: no unknown column left
    ev0, persons0, _, report0 = read_quietly(extract)
    pd.testing.assert_frame_equal(ev, ev0)
    pd.testing.assert_frame_equal(persons, persons0)
    assert report == {**report0, "unknown_columns": 0}
    # without the static frame, sex comes from persons, as its OMOP concept
    plain = write_meds(ev0, persons0, tmp_path / "plain", splits=None)
    codes = set(data_rows(plain)["code"])
    assert codes ^ set(src["code"]) == {"GENDER//F", "GENDER//M", "GENDER/8532", "GENDER/8507"}
    # an unknown birth writes no MEDS_BIRTH row (it would be a static row with a code of time)
    unborn = persons0.assign(birth_datetime=persons0["birth_datetime"].where(lambda s: s.isna()))
    nob = write_meds(ev0, unborn, tmp_path / "nob", static=read_meds_static(extract))
    validate_meds(nob)
    assert meds.birth_code not in set(data_rows(nob)["code"])


def test_foreign_codes_flow_to_distinct_vocabulary_tokens(extract, tmp_path):
    ev, persons, splits, _ = read_quietly(extract)
    train = splits.loc[splits["split"] == "train", "subject_id"]
    seq = build_sequences(ev, persons)
    vocab = Vocab.fit(seq.frame, train, min_frequency=1)
    codes = ev.loc[ev["person_id"].isin(train)].drop_duplicates("code")
    tokens = [vocab.token_of(d, c) for d, c in zip(codes["domain"], codes["concept_id"])]
    assert len(set(tokens)) == len(codes) and all(t in vocab for t in tokens)
    lab = int(foreign_concept_ids(["LAB//50912//mg/dL"])[0])
    assert lab in vocab.value_cuts  # a foreign lab gets value deciles of its own
    enc = encode(seq, vocab)
    assert enc.report["unknown"] == 0 and enc.report["exact"] == len(ev)
    # the held-out subject exported on its own, read as a second dataset: same ids, no [UNK]
    alone = tmp_path / "held_out_only"
    path = alone / "data" / "0.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(shard_table(SHARDS["held_out/0"]), path)
    ev2, persons2, _, _ = read_quietly(alone)
    ids, report = vocab.encode(ev2)
    assert report["unknown"] == 0 and len(set(ids.tolist())) == ev2["code"].nunique()


def test_code_domains_and_stand_in_clash(extract, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ev, *_ = read_meds(extract, code_domains={"LAB": "observation"})
        assert set(ev.loc[ev["code"].str.startswith("LAB//"), "domain"]) == {"observation"}
        assert set(ev.loc[ev["code"].str.startswith("DIAGNOSIS//"), "domain"]) == {"observation"}
        with pytest.raises(ValueError, match="unknown domains \\['labs'\\]"):
            read_meds(extract, code_domains={"LAB": "labs"})
        monkeypatch.setattr(
            meds_io, "foreign_concept_ids", lambda codes: np.full(len(list(codes)), -7)
        )
        with pytest.raises(ValueError, match="share the stand-in concept id"):
            read_meds(extract)


def _shard(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _table(subject, time, code, time_type: pa.DataType | None = None) -> pa.Table:
    time = pa.array(time, pa.string()).cast(pa.timestamp("us"))
    return pa.table(
        {
            "subject_id": pa.array(subject, pa.int64()),
            "time": time.cast(time_type) if time_type else time,
            "code": pa.array(code, pa.string()),
        }
    )


T0, T1, T2 = "2020-01-01 00:00", "2020-01-02 00:00", "2020-01-03 00:00"


@pytest.mark.parametrize(
    ("tables", "match"),
    [
        (
            {"0": _table([1, 1], [None, T0], ["GENDER//F", "A"], pa.timestamp("ns"))},
            r"0\.parquet: column 'time' is timestamp\[ns\]; MEDS needs timestamp\[us\], "
            r"e\.g\. row 0: subject_id=1, time=null, code='GENDER//F'",
        ),
        (
            {"0": _table([1], [T0], ["A"]).drop_columns(["code"])},
            r"0\.parquet: missing column\(s\) \['code'\]; MEDS data needs",
        ),
        (
            {"0": _table([1, 1], [T0, T1], ["A", None])},
            r"0\.parquet: column 'code' is null in 1 rows \(MEDS allows no nulls there\), "
            r"e\.g\. row 1: subject_id=1, time=2020-01-02 00:00:00, code=null",
        ),
        (
            {"0": _table([1, 2, 1], [T0, T0, T1], ["A", "B", "C"])},
            r"0\.parquet: subject 1 appears again at row 2 after rows of other subjects \(its "
            r"first row is row 0\); MEDS rule: a subject's rows are contiguous within its shard",
        ),
        (
            {"0": _table([1, 1, 1], [None, T1, T0], ["S", "A", "B"])},
            r"0\.parquet: subject 1, row 2: time goes backwards; MEDS rule: within a subject, "
            r"rows are sorted by time with static \(null-time\) rows first\. Row 1: "
            r"subject_id=1, time=2020-01-02 00:00:00, code='A'; row 2: .*code='B'",
        ),
        (
            {"0": _table([1], [T0], ["A"]), "1": _table([2, 1], [T0, T2], ["B", "C"])},
            r"1\.parquet: subject 1 is also in .*0\.parquet; MEDS rule: each subject's rows sit "
            r"in exactly one shard\. Row 1: subject_id=1",
        ),
    ],
    ids=["time-ns", "no-code", "null-code", "not-contiguous", "backwards", "two-shards"],
)
def test_validate_meds_names_file_column_rule_and_row(tmp_path, tables, match):
    for name, table in tables.items():
        _shard(tmp_path / "data" / f"{name}.parquet", table)
    with pytest.raises(ValueError, match=match):
        validate_meds(tmp_path)


def test_validate_accepts_subjects_in_any_order_and_read_names_bad_shards(tmp_path):
    _shard(
        tmp_path / "ok" / "data" / "0.parquet", _table([2, 2, 1], [None, T0, T1], ["S", "A", "B"])
    )
    validate_meds(tmp_path / "ok")  # MEDS asks contiguous subjects, not increasing ids
    ev, persons, _, _ = read_meds(tmp_path / "ok")
    assert ev["person_id"].tolist() == [1, 2] and persons["person_id"].tolist() == [1, 2]
    _shard(tmp_path / "bad" / "data" / "0.parquet", _table([1, 1], [T0, T1], ["A", None]))
    with pytest.raises(ValueError, match=r"0\.parquet: column 'code' is null in 1 rows.*row 1"):
        read_meds(tmp_path / "bad")
    _shard(
        tmp_path / "nocode" / "data" / "0.parquet", _table([1], [T0], ["A"]).drop_columns("code")
    )
    with pytest.raises(ValueError, match=r"0\.parquet: missing column\(s\) \['code'\]"):
        read_meds(tmp_path / "nocode")
    _shard(tmp_path / "far" / "data" / "0.parquet", _table([1, 1], [T0, "2300-01-01"], ["A", "B"]))
    validate_meds(tmp_path / "far")  # valid MEDS, but past what datetime64[ns] holds
    with pytest.raises(ValueError, match=r"1 times outside the datetime64\[ns\] range.*'B'"):
        read_meds(tmp_path / "far")


def _aces_labels(subject, time, value) -> pa.Table:
    n = len(subject)
    return pa.table(
        {
            "subject_id": pa.array(subject, pa.int64()),
            "prediction_time": pa.array(time, pa.string()).cast(pa.timestamp("us")),
            "boolean_value": pa.array(value, pa.bool_()),
            "integer_value": pa.nulls(n, pa.int64()),
            "float_value": pa.nulls(n, pa.float32()),
            "categorical_value": pa.nulls(n, pa.string()),
        }
    )


def test_aces_label_files(tmp_path):
    one = tmp_path / "task" / "0.parquet"
    _shard(one, _aces_labels([10001, 10002], [T0, T1], [True, False]))
    _shard(tmp_path / "task" / "1.parquet", _aces_labels([10003], [T2], [True]))
    lab = read_survival_labels(one)
    assert lab["event"].tolist() == [1, 0] and lab["duration"].isna().all()
    assert lab["event_time"].isna().all() and lab["censor_time"].isna().all()
    both = read_survival_labels(tmp_path / "task")  # a folder of label shards
    assert both["subject_id"].tolist() == [10001, 10002, 10003]
    assert both["prediction_time"].tolist() == pd.to_datetime([T0, T1, T2]).tolist()
    bad = tmp_path / "bad.parquet"
    pq.write_table(_aces_labels([1], [T0], [True]).drop_columns("boolean_value"), bad)
    with pytest.raises(ValueError, match=r"missing label column\(s\) \['boolean_value'\]"):
        read_survival_labels(bad)
    pq.write_table(_aces_labels([1, 2], [T0, T1], [True, None]), bad)
    with pytest.raises(ValueError, match=r"column 'boolean_value' is null in 1 rows, e\.g\. row 1"):
        read_survival_labels(bad)


# ---------------------------------------------------------------- meds-testing-helpers


def _helpers_static(tmp_path: Path) -> Path:
    dataset = pytest.importorskip("meds_testing_helpers.dataset")
    sample = pytest.importorskip("meds_testing_helpers.static_sample_data")
    root = tmp_path / "simple_static"
    dataset.MEDSDataset.from_yaml(sample.SIMPLE_STATIC_SHARDED_BY_SPLIT_WITH_TASKS).write(root)
    return root


def _helpers_generated(tmp_path: Path) -> Path:
    gen = pytest.importorskip("meds_testing_helpers.dataset_generator")
    rvs = pytest.importorskip("meds_testing_helpers.rvs")
    days = [np.timedelta64(2, "D"), np.timedelta64(10, "D")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # numpy on time zones, inside the helper
        data = gen.MEDSDataDFGenerator(
            birth_datetime_per_subject=rvs.DatetimeGenerator(
                [np.datetime64("1950-01-01", "us"), np.datetime64("1972-02-02", "us")]
            ),
            start_data_datetime_per_subject=rvs.DatetimeGenerator(
                [np.datetime64("2021-01-01", "us"), np.datetime64("2022-02-02", "us")]
            ),
            time_between_birth_and_data_per_subject=rvs.PositiveTimeDeltaGenerator(
                [np.timedelta64(50, "Y"), np.timedelta64(60, "Y")]
            ),
            time_between_data_and_death_per_subject=rvs.PositiveTimeDeltaGenerator(days),
            time_between_data_events_per_subject=rvs.PositiveTimeDeltaGenerator(
                [np.timedelta64(3, "h"), np.timedelta64(20, "m")]
            ),
            num_events_per_subject=rvs.PositiveIntGenerator([1, 5, 12]),
            num_measurements_per_event=rvs.PositiveIntGenerator([1, 2, 3]),
            num_static_measurements_per_subject=rvs.PositiveIntGenerator([1, 2]),
            frac_dynamic_code_occurrences_with_value=rvs.ProportionGenerator([0, 0.1, 0.9]),
            frac_static_code_occurrences_with_value=rvs.ProportionGenerator([0, 1]),
            static_vocab_size=4,
            dynamic_vocab_size=40,
            frac_subjects_with_death=0.5,
        )
        dataset = gen.MEDSDatasetGenerator(data_generator=data, shard_size=20, dataset_name="gen")
        sample = dataset.sample(60, np.random.default_rng(0))
    root = tmp_path / "generated"
    sample.write(root)
    return root


@pytest.mark.parametrize(
    ("build", "n_codes"), [(_helpers_static, 11), (_helpers_generated, 46)], ids=["static", "gen"]
)
def test_meds_testing_helpers_datasets_round_trip(tmp_path, build, n_codes):
    src = build(tmp_path)
    validate_meds(src)
    ev, persons, _, report = read_meds(src)
    assert report["codes"] == n_codes and report["unknown_columns"] == 0
    assert report["rows"] == report["events"] + report["static_rows"] + len(persons)  # births
    assert len(ev[["domain", "concept_id"]].drop_duplicates()) == ev["code"].nunique()
    back = data_rows(round_trip(src, tmp_path / "out"))
    rows = data_rows(src)
    assert rows["code"].nunique() == back["code"].nunique() == n_codes
    pd.testing.assert_frame_equal(back, rows)


def test_meds_testing_helpers_task_labels(tmp_path):
    task = _helpers_static(tmp_path) / "task_labels" / "boolean_value_task"
    lab = read_survival_labels(task)
    raw = pa.concat_tables([pq.read_table(p) for p in sorted(task.glob("*.parquet"))])
    assert lab["subject_id"].tolist() == raw["subject_id"].to_pylist()
    assert lab["event"].tolist() == [int(v) for v in raw["boolean_value"].to_pylist()]
    assert len(lab) == 21 and lab["duration"].isna().all()
