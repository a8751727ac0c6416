"""Malformed MEDS inputs: read_meds ends each as a clear ValueError naming the file, the column
or rule and a row, or as a counted outcome in its report; never a raw pandas/pyarrow error."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ehrseq.data.events import EVENT_COLUMNS
from ehrseq.data.meds import read_meds, write_meds

T = dt.datetime(2010, 1, 1)


def shard(sid, code, time=T, time_type=None, sid_type=None, **extra) -> pa.Table:
    n = len(code)
    cols = {
        "subject_id": pa.array(sid if isinstance(sid, list) else [sid] * n, sid_type or pa.int64()),
        "time": pa.array(
            time if isinstance(time, list) else [time] * n, time_type or pa.timestamp("us")
        ),
        "code": pa.array(code, pa.string()),
    }
    return pa.table({**cols, **extra})


def write(root: Path, *shards: pa.Table, splits: pa.Table | None = None) -> Path:
    (root / "data").mkdir(parents=True)
    for i, t in enumerate(shards):
        pq.write_table(t, root / "data" / f"{i}.parquet")
    if splits is not None:
        (root / "metadata").mkdir()
        pq.write_table(splits, root / "metadata" / "subject_splits.parquet")
    return root


ERRORS = {
    "null_subject_id": (
        [shard([1, None], ["condition/1", "condition/2"])],
        r"0\.parquet: column 'subject_id' is null in 1 rows, e\.g\. row 1",
    ),
    "null_code": (
        [shard(1, [None, "condition/1"])],
        r"column 'code' is null in 1 rows, e\.g\. row 0",
    ),
    "numeric_value_as_text": (
        [shard(1, ["LAB//x", "LAB//x"], numeric_value=pa.array(["1.5", "abc"]))],
        r"column 'numeric_value' \(string\) cannot be read as double",
    ),
    "time_out_of_range": (
        [shard(1, ["condition/1"], time=dt.datetime(3000, 1, 1))],
        "outside the datetime64",
    ),
    "subject_in_two_shards": (
        [shard(1, ["condition/1"]), shard(1, ["condition/2"])],
        r"1\.parquet: subject 1 is also in .*0\.parquet; MEDS rule",
    ),
    "time_as_text": (
        [shard(1, ["condition/1"], time=["yesterday"], time_type=pa.string())],
        r"column 'time' \(string\) cannot be read",
    ),
    "time_before_1677": (
        [shard(1, ["condition/1"], time=dt.datetime(1500, 1, 1))],
        "outside the datetime64",
    ),
    "empty_code": (
        [shard(1, ["condition/1", " "])],
        r"0\.parquet: column 'code' is empty in 1 rows.*e\.g\. row 1",
    ),
    "subject_id_as_text": (
        [shard(["1", "abc"], ["condition/1", "condition/2"], sid_type=pa.string())],
        r"0\.parquet: column 'subject_id' \(string\) cannot be read as int64.*'abc'",
    ),
    "subject_id_float": (
        [shard([1.0, 1.5], ["condition/1", "condition/2"], sid_type=pa.float64())],
        r"0\.parquet: column 'subject_id' \(double\) cannot be read as int64",
    ),
    "subject_id_beyond_int64": (
        [shard([1, 2**63 + 1], ["condition/1", "condition/2"], sid_type=pa.uint64())],
        r"0\.parquet: column 'subject_id' \(uint64\) cannot be read as int64",
    ),
    "extension_id_as_text": (
        [shard(1, ["condition/1"], concept_id=pa.array(["x"]))],
        r"0\.parquet: column 'concept_id' \(string\) cannot be read as int64",
    ),
    "missing_code_column": (
        [pa.table({"subject_id": pa.array([1], pa.int64()), "time": pa.array([T])})],
        r"0\.parquet: missing column\(s\) \['code'\]",
    ),
    "duplicate_column": (
        [
            pa.table(
                [pa.array([1]), pa.array([1]), pa.array([T]), pa.array(["condition/1"])],
                names=["subject_id", "subject_id", "time", "code"],
            )
        ],
        r"0\.parquet: column\(s\) \['subject_id'\] appear more than once",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_clear_errors(tmp_path, case):
    shards, message = ERRORS[case]
    root = write(tmp_path / case, *shards)
    with pytest.raises(ValueError, match=message) as err:
        read_meds(root)
    assert type(err.value) is ValueError


def test_subject_in_two_splits(tmp_path):
    splits = pa.table({"subject_id": pa.array([1, 1], pa.int64()), "split": ["train", "held_out"]})
    root = write(tmp_path / "s", shard(1, ["condition/1"]), splits=splits)
    with pytest.raises(ValueError, match=r"subject 1 .*split.*\['held_out', 'train'\]"):
        read_meds(root)


def test_zone_aware_time_is_read_as_utc_and_counted(tmp_path):
    t = shard(1, ["condition/1"], time_type=pa.timestamp("us", tz="Europe/Paris"))
    with pytest.warns(UserWarning, match="time zone"):
        events, _, _, report = read_meds(write(tmp_path / "z", t))
    assert report["zoned_times"] == 1
    assert events["time"].tolist() == [dt.datetime(2010, 1, 1)]  # stored as the UTC instant


def test_shards_with_different_column_types_are_cast(tmp_path):
    a = shard(1, ["GENDER//M", "condition/201826"], time=[None, T])
    b = shard(
        2,
        ["condition/1"],
        time_type=pa.timestamp("ms"),
        sid_type=pa.int32(),
        numeric_value=pa.array([1], pa.int64()),
    )
    events, persons, _, report = read_meds(write(tmp_path / "t", a, b))
    assert events["concept_id"].tolist() == [201826, 1]
    assert persons["gender_concept_id"].tolist() == [8507, 0]  # GENDER//M: OMOP male
    assert report["rows"] == 3 and report["static_rows"] == 1


@pytest.mark.parametrize("code", ["condition/99999999999999999999", "condition/١٢٣"])
def test_codes_that_are_no_int64_concept_stay_foreign_and_counted(tmp_path, code):
    events, _, _, report = read_meds(write(tmp_path / "c", shard(1, [code])))
    assert events["code"].tolist() == [code]
    assert events["concept_id"].iloc[0] < 0  # a stand-in id, never 0 or a wrapped int64
    assert report["foreign_codes"] == 1 and report["foreign_rows"] == 1


@pytest.mark.parametrize("damage", [b"", b"not parquet", "truncated"])
def test_unreadable_shard_is_named(tmp_path, damage):
    root = write(tmp_path / "u", shard(1, ["condition/1"] * 50), shard(2, ["condition/2"]))
    path = root / "data" / "1.parquet"
    path.write_bytes(path.read_bytes()[:200] if damage == "truncated" else damage)
    with pytest.raises(
        ValueError, match=r"1\.parquet: cannot be read as a parquet MEDS shard"
    ) as e:
        read_meds(root)
    assert type(e.value) is ValueError


def test_unreadable_splits_file_is_named(tmp_path):
    root = write(tmp_path / "s", shard(1, ["condition/1"]))
    (root / "metadata").mkdir()
    (root / "metadata" / "subject_splits.parquet").write_bytes(b"xx")
    with pytest.raises(ValueError, match=r"subject_splits\.parquet: cannot be read") as e:
        read_meds(root)
    assert type(e.value) is ValueError


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_numeric_value_is_null_and_counted(tmp_path, value):
    t = shard(1, ["LAB//x", "LAB//x"], numeric_value=pa.array([value, 1.5]))
    events, _, _, report = read_meds(write(tmp_path / "v", t))
    assert report["non_finite_values"] == 1 and report["rows"] == 2
    assert events["value_as_number"].isna().tolist() == [True, False]
    assert events["value_as_number"].iloc[1] == 1.5  # the other row unchanged


def test_empty_shard_and_other_time_units_load(tmp_path):
    a = shard(1, ["condition/1"], time_type=pa.timestamp("ns"))
    b = shard(2, ["condition/2"], time=[dt.date(2010, 1, 1)], time_type=pa.date32())
    events, _, _, report = read_meds(write(tmp_path / "e", a, shard(3, []), b))
    assert report["rows"] == 2 and events["time"].tolist() == [T, T]
    assert events["concept_id"].tolist() == [1, 2]


# ----------------------------------------------------------------------------------------------
# Random corruptions of a valid dataset written by write_meds (hypothesis)
# ----------------------------------------------------------------------------------------------


def _valid_meds(root: Path) -> Path:
    """Three subjects in two shards, as write_meds writes them (births, sexes, values)."""
    rows = []
    for pid in (1, 2, 3):
        for k in range(4):
            dom = ["condition", "measurement", "drug", "visit"][k]
            value = 100.0 + pid + k if dom == "measurement" else np.nan
            t = pd.Timestamp(f"201{pid}-0{k + 1}-01")
            rows.append((pid, t, 3_000_000 + k, 0, dom, value, 0, None))
    events = pd.DataFrame(rows, columns=list(EVENT_COLUMNS)).astype(EVENT_COLUMNS)
    persons = pd.DataFrame(
        {
            "person_id": np.array([1, 2, 3], dtype=np.int64),
            "birth_datetime": pd.to_datetime(["1950-01-01", "1960-01-01", "1970-01-01"]),
            "gender_concept_id": np.array([8507, 8532, 8507], dtype=np.int64),
        }
    )
    return write_meds(events, persons, root, subjects_per_shard=2)


CORRUPTIONS = {
    "subject_id": [None, 3, 1, -1, "abc", 2.5],
    "code": [None, "", "LAB//x", "condition/99999999999999999999", "condition/١٢٣", "MEDS_BIRTH"],
    "time": [None, dt.datetime(3000, 1, 1), dt.datetime(1500, 1, 1), "2011-05-05", "soon"],
    "numeric_value": [float("nan"), float("inf"), 1e30, "abc", "7.5"],
}


def _set_cell(table: pa.Table, row: int, col: str, value) -> pa.Table:
    """``table`` with one cell changed; a value of another type turns the column to text."""
    values = table[col].to_pylist()
    values[row] = value
    typ = table.schema.field(col).type
    if isinstance(value, str) and not pa.types.is_string(typ):
        values = [None if v is None else str(v) for v in values]
        typ = pa.string()
    try:
        arr = pa.array(values, typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        arr = pa.array([None if v is None else str(v) for v in values], pa.string())
    return table.set_column(table.column_names.index(col), col, arr)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    hits=st.lists(
        st.tuples(
            st.integers(0, 1),
            st.integers(0, 11),
            st.sampled_from(sorted(CORRUPTIONS)).flatmap(
                lambda c: st.tuples(st.just(c), st.sampled_from(CORRUPTIONS[c]))
            ),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_random_corruptions_are_an_error_or_counted(tmp_path_factory, hits):
    root = _valid_meds(tmp_path_factory.mktemp("meds") / "m")
    clean, _, _, _ = read_meds(root)
    touched: set[int] = set()
    shards = sorted((root / "data").glob("*.parquet"))
    tables = [pq.read_table(p) for p in shards]
    original = list(tables)
    for k, row, (col, value) in hits:
        t = tables[k]
        row = row % len(t)
        touched.add(int(original[k]["subject_id"][row].as_py()))
        if col == "subject_id" and isinstance(value, int):
            touched.add(value)
        tables[k] = _set_cell(t, row, col, value)
    for path, t in zip(shards, tables):
        pq.write_table(t, path)
    try:
        events, _, _, report = read_meds(root)
    except ValueError as err:  # a clear error: the file, and the column or rule
        assert type(err) is ValueError, repr(err)
        text = str(err)
        assert str(root) in text, text
        assert any(c in text for c in ("subject_id", "code", "time", "numeric_value")), text
        return
    n = sum(len(t) for t in tables)
    assert report["rows"] == n  # every row read is accounted for
    births = sum(
        pc.sum(pc.and_(pc.equal(t["code"], "MEDS_BIRTH"), pc.is_valid(t["time"]))).as_py() or 0
        for t in tables
    )
    assert report["events"] + report["static_rows"] + births == n
    keep = sorted(set(clean["person_id"]) - touched)
    cols = list(EVENT_COLUMNS)
    want = clean[clean["person_id"].isin(keep)][cols].reset_index(drop=True)
    got = events[events["person_id"].isin(keep)][cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want)  # untouched subjects load unchanged
