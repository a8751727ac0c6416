"""Malformed MEDS inputs: read_meds ends each as a clear ValueError naming the file, the column
or rule and a row, or as a counted outcome in its report; never a raw pandas/pyarrow error."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ehrseq.data.meds import read_meds

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
