"""MEDS export and import: schema validity, layout, round trip, the label sidecar.

MEDS written by other tools (foreign codes, static rows, ACES labels): test_meds_interop.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import meds
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ehrseq.data.events import EVENT_COLUMNS, check_events
from ehrseq.data.labels import Outcome, survival_labels
from ehrseq.data.meds import (
    LABEL_CORE_COLUMNS,
    foreign_concept_ids,
    read_meds,
    read_meds_static,
    read_survival_labels,
    validate_meds,
    write_meds,
    write_survival_labels,
)


@pytest.fixture
def cohort():
    rng = np.random.default_rng(0)
    rows = []
    domains = ["condition", "drug", "measurement", "visit", "procedure"]
    for pid in range(1, 8):
        t0 = pd.Timestamp("2015-01-01") + pd.Timedelta(days=int(rng.integers(0, 300)))
        for k in range(int(rng.integers(2, 12))):
            dom = domains[int(rng.integers(0, len(domains)))]
            rows.append(
                (
                    pid,
                    t0 + pd.Timedelta(hours=int(rng.integers(0, 24 * 900))),
                    int(rng.integers(1, 50)) + 3_000_000,
                    int(rng.integers(0, 3)),
                    dom,
                    round(float(rng.normal()), 3) if dom == "measurement" else np.nan,
                    8840 if dom == "measurement" else 0,
                    pid * 100 + k % 3 if k % 2 else None,
                )
            )
    rows.append((3, pd.Timestamp("2019-01-01"), 0, 0, "death", np.nan, 0, None))
    ev = pd.DataFrame(rows, columns=list(EVENT_COLUMNS)).astype(EVENT_COLUMNS)
    ev = ev.sort_values(["person_id", "time"], kind="stable").reset_index(drop=True)
    persons = pd.DataFrame(
        {
            "person_id": np.arange(1, 8, dtype=np.int64),
            "birth_datetime": pd.to_datetime([f"19{50 + i}-0{1 + i}-15" for i in range(7)]),
            "gender_concept_id": np.array([8507, 8532] * 3 + [8507], dtype=np.int64),
        }
    )
    return check_events(ev), persons


def test_write_is_valid_meds_and_reads_back(cohort, tmp_path):
    ev, persons = cohort
    root = write_meds(ev, persons, tmp_path / "meds", subjects_per_shard=3)
    validate_meds(root)
    shards = sorted((root / "data").glob("*.parquet"))
    assert [p.name for p in shards] == ["0.parquet", "1.parquet", "2.parquet"]
    subjects = []
    for p in shards:
        t = pq.read_table(p)
        meds.DataSchema.validate(t)
        assert t.schema.field("time").type == pa.timestamp("us")
        assert t.schema.field("numeric_value").type == pa.float32()
        subjects.append(set(t["subject_id"].to_pylist()))
    assert sum(len(s) for s in subjects) == len(set().union(*subjects)) == 7  # one shard each
    data = pa.concat_tables([pq.read_table(p) for p in shards]).to_pandas()
    codes = set(data["code"])
    assert meds.birth_code in codes and meds.death_code in codes
    assert {"GENDER/8507", "GENDER/8532"} <= codes
    assert (data["code"] == meds.birth_code).sum() == 7
    meta_codes = pq.read_table(root / meds.code_metadata_filepath)
    meds.CodeMetadataSchema.validate(meta_codes)
    assert set(meta_codes["code"].to_pylist()) == codes
    meta = json.loads((root / meds.dataset_metadata_filepath).read_text())
    meds.DatasetMetadataSchema.validate(meta)
    assert meta["meds_version"] == meds.__version__
    splits = pq.read_table(root / meds.subject_splits_filepath)
    meds.SubjectSplitSchema.validate(splits)
    assert set(splits["split"].to_pylist()) <= {"train", "tuning", "held_out"}

    ev2, persons2, splits2, report = read_meds(root)
    check_events(ev2)
    assert report["foreign_codes"] == report["foreign_rows"] == report["unknown_columns"] == 0
    assert report["events"] == len(ev) and report["static_rows"] == 7  # one GENDER row each
    assert "code" not in ev2.columns and "text_value" not in ev2.columns  # all codes are ours
    pd.testing.assert_frame_equal(
        ev2.drop(columns="value_as_number"), ev.drop(columns="value_as_number"), check_dtype=True
    )
    np.testing.assert_allclose(
        ev2["value_as_number"], ev["value_as_number"].astype(np.float32), equal_nan=True
    )
    pd.testing.assert_frame_equal(persons2, persons.astype({"birth_datetime": "datetime64[ns]"}))
    assert len(splits2) == 7


def test_given_splits_parents_and_person_deaths(cohort, tmp_path):
    ev, persons = cohort
    persons = persons.assign(death_datetime=pd.NaT)
    persons.loc[persons["person_id"] == 5, "death_datetime"] = pd.Timestamp("2022-01-01")
    persons.loc[persons["person_id"] == 3, "death_datetime"] = pd.Timestamp("2019-01-01")
    splits = pd.DataFrame({"person_id": np.arange(1, 8), "split": ["train"] * 5 + ["held_out"] * 2})
    first = int(ev["concept_id"].iloc[0])
    root = write_meds(
        ev,
        persons,
        tmp_path / "m",
        splits=splits,
        ancestors={first: [42, 7]},
        subjects_per_shard=100,
    )
    validate_meds(root)
    data = pq.read_table(root / "data" / "0.parquet").to_pandas()
    deaths = data[data["code"] == meds.death_code]
    assert sorted(deaths["subject_id"].tolist()) == [3, 5]  # person 3 already had a death row
    codes = pq.read_table(root / meds.code_metadata_filepath).to_pandas().set_index("code")
    dom = ev["domain"].iloc[0]
    assert list(codes.loc[f"{dom}/{first}", "parent_codes"]) == [f"{dom}/42"]
    _, _, s, _ = read_meds(root)
    assert s["split"].tolist() == ["train"] * 5 + ["held_out"] * 2
    with pytest.raises(ValueError, match="exists"):
        write_meds(ev, persons, root)
    with pytest.raises(ValueError, match="no split"):
        write_meds(ev, persons, tmp_path / "x", splits=splits.iloc[:3])


def test_read_foreign_meds(tmp_path):
    root = tmp_path / "foreign"
    (root / "data" / "train").mkdir(parents=True)
    t = pa.table(
        {
            "subject_id": pa.array([1, 1, 1, 1, 1], pa.int64()),
            "time": pa.array(
                [
                    None,
                    pd.Timestamp("1980-01-01"),
                    pd.Timestamp("2020-01-01"),
                    pd.Timestamp("2020-01-02"),
                    pd.Timestamp("2020-01-03"),
                ],
                pa.timestamp("us"),
            ),
            "code": [
                "EYE_COLOR//BLUE",
                meds.birth_code,
                "LAB//50912//mg/dL",
                "condition/12",
                meds.death_code,
            ],
            "numeric_value": pa.array([None, None, 1.5, None, None], pa.float32()),
        }
    )
    meds.DataSchema.validate(t)
    pq.write_table(t, root / "data" / "train" / "0.parquet")
    ev, persons, splits, report = read_meds(root)
    assert report == {
        "rows": 5,
        "events": 3,
        "static_rows": 1,
        "codes": 5,
        "foreign_codes": 1,
        "foreign_rows": 1,
        "unknown_columns": 0,
    }
    lab = int(foreign_concept_ids(["LAB//50912//mg/dL"])[0])
    assert lab < 0  # a stand-in id of its own, never an OMOP concept and never 0
    assert ev["domain"].tolist() == ["measurement", "condition", "death"]
    assert ev["concept_id"].tolist() == [lab, 12, 0]
    assert ev["code"].tolist() == ["LAB//50912//mg/dL", "condition/12", meds.death_code]
    assert ev["value_as_number"].iloc[0] == 1.5
    assert persons["birth_datetime"].tolist() == [pd.Timestamp("1980-01-01")]
    assert persons["gender_concept_id"].tolist() == [0] and len(splits) == 0
    static = read_meds_static(root)
    assert static["code"].tolist() == ["EYE_COLOR//BLUE"] and static["subject_id"].tolist() == [1]


def test_label_sidecar(cohort, tmp_path):
    ev, persons = cohort
    obs = pd.DataFrame(
        {
            "person_id": persons["person_id"],
            "observation_period_start_date": pd.Timestamp("2015-01-01"),
            "observation_period_end_date": pd.Timestamp("2018-12-31"),
        }
    )
    lab = survival_labels(ev, persons, obs, Outcome.of_death(), 365, horizon_days=1000).table
    path = write_survival_labels(lab, tmp_path / "labels" / "death.parquet", task="death")
    t = pq.read_table(path)
    meds.LabelSchema.validate(t.select(list(LABEL_CORE_COLUMNS)))
    with pytest.raises(Exception, match="extra"):
        meds.LabelSchema.validate(t)  # the extension columns are why it is an extension
    assert t.schema.metadata[b"ehrseq.task"] == b"death"
    back = read_survival_labels(path)
    pd.testing.assert_frame_equal(back, lab)
    plain = tmp_path / "plain.parquet"
    pq.write_table(t.select(list(LABEL_CORE_COLUMNS)), plain)
    p = read_survival_labels(plain)
    assert p["event"].tolist() == lab["event"].tolist() and p["duration"].isna().all()
    with pytest.raises(ValueError, match="missing columns"):
        write_survival_labels(lab.drop(columns="duration"), tmp_path / "bad.parquet")


def test_meds_package_is_imported_only_when_used():
    # every chapter imports ehrseq.data.meds through the OMOP loader; the meds package
    # (jsonschema, ~1.7 s) loads on first use only
    code = (
        "import sys\n"
        "import ehrseq.data.task\n"
        "from ehrseq.data import meds as m\n"
        "assert 'jsonschema' not in sys.modules\n"
        "assert m.meds.birth_code == 'MEDS_BIRTH'\n"
        "assert 'jsonschema' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
