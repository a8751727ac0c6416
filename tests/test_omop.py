"""Tests of ehrseq.data.omop: a tiny CDM built in tmp_path (CSV, CSV.gz, parquet, DuckDB), one
broken copy per validation rule in strict and lenient mode, the concept helpers, and the three
shared OMOP samples when ../shared/data is present."""

from __future__ import annotations

import copy
import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from ehrseq.data.events import EVENT_COLUMNS, check_events
from ehrseq.data.omop import (
    DEATH_CONCEPT_ID,
    RULES,
    LoadReport,
    OmopValidationError,
    load_omop,
    open_cdm,
    validate_omop,
)

# ----------------------------------------------------------------------------------------------
# A tiny, clean CDM 5.3 (3 persons, 14 events) and writers for every supported format
# ----------------------------------------------------------------------------------------------

I64 = "Int64"


def _frame(**cols: list) -> pd.DataFrame:
    out = {}
    for name, values in cols.items():
        is_id = name.endswith(("_id", "_of_birth"))
        ints = all(v is None or isinstance(v, int) for v in values)
        out[name] = (
            pd.array(values, dtype=I64) if is_id and ints else pd.Series(values, dtype=object)
        )
    return pd.DataFrame(out)


def base_tables() -> dict[str, pd.DataFrame]:
    """A clean CDM: strict mode accepts it."""
    return {
        "person": _frame(
            person_id=[1, 2, 3],
            gender_concept_id=[8507, 8532, 8507],
            year_of_birth=[1950, 1960, 1970],
            month_of_birth=[3, 6, None],
            day_of_birth=[15, 1, None],
            birth_datetime=[None, "1960-06-01 08:30:00", None],
        ),
        "observation_period": _frame(
            observation_period_id=[1, 2, 3],
            person_id=[1, 2, 3],
            observation_period_start_date=["2000-01-01"] * 3,
            observation_period_end_date=["2020-12-31"] * 3,
        ),
        "visit_occurrence": _frame(
            visit_occurrence_id=[10, 11, 12],
            person_id=[1, 1, 2],
            visit_concept_id=[9201, 9202, 9202],
            visit_start_date=["2010-01-01", "2012-03-04", "2015-05-05"],
            visit_start_datetime=[None, None, None],
            visit_source_concept_id=[0, 0, 0],
            admitting_source_concept_id=[0, 0, 0],
        ),
        "condition_occurrence": _frame(
            condition_occurrence_id=[100, 101, 102, 103],
            person_id=[1, 1, 2, 3],
            condition_concept_id=[201826, 201826, 320128, 201826],
            condition_source_concept_id=[45, 45, 0, 45],
            condition_start_date=["2010-01-01", "2012-03-04", "2015-05-05", "2018-01-01"],
            condition_start_datetime=["2010-01-01 09:00:00", None, None, None],
            visit_occurrence_id=[10, 11, 12, None],
        ),
        "drug_exposure": _frame(
            drug_exposure_id=[200, 201],
            person_id=[1, 2],
            drug_concept_id=[1127433, 1127433],
            drug_source_concept_id=[0, 0],
            drug_exposure_start_date=["2010-01-02", "2015-05-05"],
            visit_occurrence_id=[None, 12],
        ),
        "procedure_occurrence": _frame(
            procedure_occurrence_id=[300],
            person_id=[2],
            procedure_concept_id=[4163872],
            procedure_date=["2015-05-05"],
            visit_occurrence_id=[12],
        ),
        "measurement": _frame(
            measurement_id=[400, 401],
            person_id=[1, 3],
            measurement_concept_id=[3004249, 3004249],
            measurement_date=["2012-03-04", "2018-01-01"],
            value_as_number=["120.5", "130"],
            unit_concept_id=[8876, 8876],
            visit_occurrence_id=[11, None],
        ),
        "observation": _frame(
            observation_id=[500],
            person_id=[3],
            observation_concept_id=[4275495],
            observation_date=["2018-02-01"],
            value_as_number=[None],
            unit_concept_id=[None],
            visit_occurrence_id=[None],
        ),
        "death": _frame(
            person_id=[3],
            death_date=["2019-06-01"],
            death_datetime=[None],
            cause_concept_id=[320128],
        ),
        "concept": _frame(
            concept_id=[8507, 8532, 9201, 9202, 201826, 320128, 1127433, 4163872, 3004249]
            + [4275495, 8876, 45, 201820, 4000],
            concept_name=["Male", "Female", "Inpatient", "Outpatient", "Diabetes, type 2"]
            + ["Hypertension", "Celecoxib", "Screening", "Systolic BP", "Smoker", "mmHg"]
            + ["E11 (ICD10)", "Diabetes mellitus", "Disorder"],
            domain_id=["Gender", "Gender", "Visit", "Visit", "Condition", "Condition", "Drug"]
            + ["Procedure", "Measurement", "Observation", "Unit", "Condition", "Condition"]
            + ["Condition"],
            vocabulary_id=["Gender", "Gender", "Visit", "Visit", "SNOMED", "SNOMED", "RxNorm"]
            + ["SNOMED", "LOINC", "SNOMED", "UCUM", "ICD10CM", "SNOMED", "SNOMED"],
            standard_concept=["S"] * 11 + [None, "S", "S"],
        ),
        "concept_relationship": _frame(
            concept_id_1=[201826, 201820, 320128, 201826, 45],
            concept_id_2=[201820, 4000, 4000, 4000, 201826],
            relationship_id=["Is a", "Is a", "Is a", "Is a", "Maps to"],
            invalid_reason=[None] * 5,
        ),
        "concept_ancestor": _frame(
            ancestor_concept_id=[], descendant_concept_id=[], min_levels_of_separation=[]
        ),
    }


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """Give text date columns real DATE/TIMESTAMP types (as OMOP parquet exports have)."""
    df = df.copy()
    for col in df.columns:
        if col.endswith("_date"):
            df[col] = [None if v is None else dt.date.fromisoformat(v) for v in df[col]]
        elif col.endswith("_datetime"):
            df[col] = pd.to_datetime(df[col])
        elif df[col].dtype == object:
            df[col] = df[col].astype("string")
    return df


def write_cdm(
    root: Path, tables: dict[str, pd.DataFrame], fmt: str = "csv", upper: bool = False
) -> Path:
    """Write ``tables`` as a CDM folder (csv, csv.gz, parquet) or a DuckDB file."""
    root.mkdir(parents=True, exist_ok=True)
    if fmt == "duckdb":
        path = root / "cdm.duckdb"
        con = duckdb.connect(str(path))
        con.execute("CREATE SCHEMA omop")
        for name, df in tables.items():
            frame = _typed(df).rename(columns=str.upper) if upper else _typed(df)
            con.register("frame", frame)
            table = name.upper() if upper else name
            con.execute(f'CREATE TABLE omop."{table}" AS SELECT * FROM frame')
            con.unregister("frame")
        con.close()
        return path
    for name, df in tables.items():
        frame = df.rename(columns=str.upper) if upper else df
        stem = name.upper() if upper else name
        if fmt == "parquet":
            _typed(frame).to_parquet(root / f"{stem}.parquet", index=False)
        else:
            frame.to_csv(root / f"{stem}.{fmt}", index=False)
    return root


def add_row(tables: dict[str, pd.DataFrame], table: str, **values: object) -> None:
    """Append a copy of the table's first row with ``values`` changed (object dtype)."""
    df = tables[table].astype(object)
    row = df.iloc[[0]].copy()
    for col, value in values.items():
        row[col] = [value]
    tables[table] = pd.concat([df, row], ignore_index=True)


@pytest.fixture
def tables() -> dict[str, pd.DataFrame]:
    return copy.deepcopy(base_tables())


# ----------------------------------------------------------------------------------------------
# A clean CDM in every format
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "upper"),
    [("csv", True), ("csv.gz", False), ("parquet", False), ("parquet", True), ("duckdb", True)],
)
def test_clean_cdm_loads_strict_in_every_format(tmp_path, tables, fmt, upper):
    path = write_cdm(tmp_path / "cdm", tables, fmt, upper)
    data = load_omop(path, mode="strict")
    events = check_events(data.events)
    assert {c: str(events[c].dtype) for c in EVENT_COLUMNS} == {
        **EVENT_COLUMNS,
        "time": "datetime64[ns]",
        "domain": "object",
    }
    assert len(events) == 14
    assert events["domain"].value_counts().to_dict() == {
        "condition": 4,
        "visit": 3,
        "drug": 2,
        "measurement": 2,
        "procedure": 1,
        "observation": 1,
        "death": 1,
    }
    for table, t in data.report._totals.items():
        assert t["rows_in"] == t["rows_kept"] + t["rows_dropped"], table
        assert t["rows_dropped"] == t["rows_repaired"] == t["rows_flagged"] == 0, table
    assert data.report.cdm_version == "5.3"
    assert data.person["person_id"].tolist() == [1, 2, 3]
    assert data.person["birth_datetime"].tolist() == [
        pd.Timestamp("1950-03-15"),
        pd.Timestamp("1960-06-01 08:30"),
        pd.Timestamp("1970-01-01"),
    ]
    assert str(data.person["birth_datetime"].dtype) == "datetime64[ns]"
    assert data.observation_period.shape == (3, 3)
    assert str(data.observation_period["observation_period_end_date"].dtype) == "datetime64[ns]"


def test_repr_names_the_source_and_counts_on_short_lines(tmp_path, tables):
    path = write_cdm(tmp_path / "cdm", tables)
    data = load_omop(path, mode="strict")
    text = repr(data)
    first, second = text.splitlines()
    assert first == f"OmopData({data.cdm.source!r}:"
    assert second == "         3 persons, 14 events, 3 observation periods)"
    assert len(second) <= 88 and str(data) == text


def test_event_values_times_and_order(tmp_path, tables):
    data = load_omop(write_cdm(tmp_path / "cdm", tables), mode="strict")
    ev = data.events
    p1 = ev[ev["person_id"] == 1]
    # the datetime wins when it falls on the recorded date; the visit sorts before the condition
    first = p1.iloc[:2]
    assert first["domain"].tolist() == ["visit", "condition"]
    assert first["time"].tolist() == [pd.Timestamp("2010-01-01"), pd.Timestamp("2010-01-01 09:00")]
    meas = ev[ev["domain"] == "measurement"].sort_values("person_id")
    assert meas["value_as_number"].tolist() == [120.5, 130.0]
    assert meas["unit_concept_id"].tolist() == [8876, 8876]
    assert meas["visit_occurrence_id"].tolist()[0] == 11
    assert pd.isna(meas["visit_occurrence_id"].tolist()[1])
    assert np.isnan(ev.loc[ev["domain"] == "condition", "value_as_number"]).all()
    death = ev[ev["domain"] == "death"].iloc[0]
    assert (death["person_id"], death["concept_id"]) == (3, DEATH_CONCEPT_ID)
    assert death["time"] == pd.Timestamp("2019-06-01")
    cond = ev[ev["domain"] == "condition"]
    assert sorted(cond["source_concept_id"].tolist()) == [0, 45, 45, 45]
    visits = ev[ev["domain"] == "visit"]
    assert visits["visit_occurrence_id"].tolist() == [10, 11, 12]


def test_domains_subset_and_validate_only(tmp_path, tables):
    path = write_cdm(tmp_path / "cdm", tables)
    data = load_omop(path, domains=["condition", "death"])
    assert set(data.events["domain"]) == {"condition", "death"}
    # visits are still validated (dangling_visit checks against them), but not emitted
    assert "visit_occurrence" in data.report.tables
    report = validate_omop(path)
    assert isinstance(report, LoadReport)
    assert report.totals("condition_occurrence")["rows_kept"] == 4
    assert set(report.seconds) == {"validate"}


# ----------------------------------------------------------------------------------------------
# One broken CDM per rule: strict raises a clear error, lenient counts and keeps going
# ----------------------------------------------------------------------------------------------

CO = "condition_occurrence"
Mutation = Callable[[dict[str, pd.DataFrame]], None]


def _case(
    rule: str,
    table: str,
    column: str,
    action: str,
    mutate: Mutation,
    shows: str,
    actions: dict[str, str] | None = None,
):
    return pytest.param(rule, table, column, action, mutate, shows, actions, id=f"{rule}-{action}")


RULE_CASES = [
    _case(
        "duplicate_row", CO, "", "dropped", lambda t: add_row(t, CO), "condition_occurrence_id=100"
    ),
    _case(
        "missing_id",
        CO,
        "person_id",
        "dropped",
        lambda t: add_row(t, CO, condition_occurrence_id=150, person_id=None),
        "condition_occurrence_id=150",
    ),
    _case(
        "bad_id",
        CO,
        "person_id",
        "dropped",
        lambda t: add_row(t, CO, condition_occurrence_id=150, person_id="p1"),
        "person_id=p1",
    ),
    _case(
        "unknown_person",
        CO,
        "person_id",
        "dropped",
        lambda t: add_row(t, CO, condition_occurrence_id=150, person_id=99),
        "person_id=99",
    ),
    _case(
        "missing_date",
        CO,
        "condition_start_date",
        "dropped",
        lambda t: add_row(
            t,
            CO,
            condition_occurrence_id=150,
            condition_start_date=None,
            condition_start_datetime=None,
        ),
        "condition_start_date=NULL",
    ),
    _case(
        "bad_date",
        CO,
        "condition_start_date",
        "dropped",
        lambda t: add_row(
            t,
            CO,
            condition_occurrence_id=150,
            condition_start_date="2020-13-45",
            condition_start_datetime=None,
        ),
        "condition_start_date=2020-13-45",
    ),
    _case(
        "bad_date",
        CO,
        "condition_start_date",
        "repaired",
        lambda t: add_row(
            t,
            CO,
            condition_occurrence_id=150,
            condition_start_date="soon",
            condition_start_datetime="2011-02-03 04:05:06",
        ),
        "condition_start_date=soon",
    ),
    _case(
        "date_mismatch",
        CO,
        "condition_start_datetime",
        "repaired",
        lambda t: add_row(
            t,
            CO,
            condition_occurrence_id=150,
            condition_start_date="2011-02-03",
            condition_start_datetime="2011-02-04 04:05:06",
        ),
        "condition_start_datetime=2011-02-04 04:05:06",
    ),
    _case(
        "missing_id",
        CO,
        "condition_concept_id",
        "repaired",
        lambda t: add_row(t, CO, condition_occurrence_id=150, condition_concept_id=None),
        "condition_concept_id=NULL",
    ),
    _case(
        "bad_id",
        CO,
        "visit_occurrence_id",
        "repaired",
        lambda t: add_row(t, CO, condition_occurrence_id=150, visit_occurrence_id="v12"),
        "visit_occurrence_id=v12",
    ),
    _case(
        "concept_zero",
        CO,
        "condition_concept_id",
        "kept",
        lambda t: add_row(t, CO, condition_occurrence_id=150, condition_concept_id=0),
        "condition_concept_id=0",
    ),
    _case(
        "concept_zero",
        CO,
        "condition_concept_id",
        "dropped",
        lambda t: add_row(t, CO, condition_occurrence_id=150, condition_concept_id=0),
        "condition_concept_id=0",
        {"concept_zero": "drop"},
    ),
    _case(
        "unknown_concept",
        "drug_exposure",
        "drug_concept_id",
        "kept",
        lambda t: add_row(t, "drug_exposure", drug_exposure_id=250, drug_concept_id=999999),
        "drug_concept_id=999999",
    ),
    _case(
        "dangling_visit",
        CO,
        "visit_occurrence_id",
        "kept",
        lambda t: add_row(t, CO, condition_occurrence_id=150, visit_occurrence_id=77),
        "visit_occurrence_id=77",
    ),
    _case(
        "dangling_visit",
        CO,
        "visit_occurrence_id",
        "repaired",
        lambda t: add_row(t, CO, condition_occurrence_id=150, visit_occurrence_id=77),
        "visit_occurrence_id=77",
        {"dangling_visit": "repair"},
    ),
    _case(
        "outside_observation",
        "procedure_occurrence",
        "procedure_date",
        "kept",
        lambda t: add_row(
            t, "procedure_occurrence", procedure_occurrence_id=350, procedure_date="1990-01-01"
        ),
        "procedure_date=1990-01-01",
    ),
    _case(
        "after_death",
        "measurement",
        "measurement_date",
        "dropped",
        lambda t: add_row(
            t, "measurement", measurement_id=450, person_id=3, measurement_date="2020-01-01"
        ),
        "measurement_date=2020-01-01",
        {"after_death": "drop"},
    ),
    _case(
        "duplicate_id",
        CO,
        "condition_occurrence_id",
        "kept",
        lambda t: add_row(t, CO, condition_concept_id=320128),
        "condition_occurrence_id=100",
    ),
    _case(
        "duplicate_event",
        CO,
        "",
        "kept",
        lambda t: add_row(t, CO, condition_occurrence_id=199),
        "condition_occurrence_id=199",
    ),
    _case(
        "bad_number",
        "measurement",
        "value_as_number",
        "repaired",
        lambda t: add_row(t, "measurement", measurement_id=450, value_as_number="high"),
        "value_as_number=high",
    ),
    _case(
        "duplicate_key",
        "person",
        "person_id",
        "dropped",
        lambda t: add_row(t, "person", year_of_birth=1951),
        "year_of_birth=1951",
    ),
    _case(
        "missing_date",
        "person",
        "year_of_birth",
        "dropped",
        lambda t: add_row(t, "person", person_id=4, year_of_birth=None, birth_datetime=None),
        "person_id=4",
    ),
    _case(
        "duplicate_key",
        "death",
        "person_id",
        "dropped",
        lambda t: add_row(t, "death", death_date="2019-07-01"),
        "death_date=2019-07-01",
    ),
    _case(
        "unknown_person",
        "observation_period",
        "person_id",
        "dropped",
        lambda t: add_row(t, "observation_period", observation_period_id=9, person_id=42),
        "person_id=42",
    ),
    _case(
        "end_before_start",
        "observation_period",
        "observation_period_end_date",
        "dropped",
        lambda t: add_row(
            t,
            "observation_period",
            observation_period_id=9,
            observation_period_start_date="2021-01-01",
            observation_period_end_date="2020-01-01",
        ),
        "observation_period_end_date=2020-01-01",
    ),
]


DOMAIN_OF = {
    CO: "condition",
    "drug_exposure": "drug",
    "procedure_occurrence": "procedure",
    "measurement": "measurement",
}


@pytest.mark.parametrize(
    ("rule", "table", "column", "action", "mutate", "shows", "actions"), RULE_CASES
)
def test_rule_strict_and_lenient(
    tmp_path, tables, rule, table, column, action, mutate, shows, actions
):
    mutate(tables)
    cdm = open_cdm(write_cdm(tmp_path / "cdm", tables), threads=1)
    # only the table under test (death and visits are always validated); keeps the test fast
    domains = [DOMAIN_OF.get(table, "death")]
    with pytest.raises(OmopValidationError) as info:
        load_omop(cdm, mode="strict", actions=actions, domains=domains)
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.table, err.column, err.rule, err.rows) == (table, column, rule, 1)
    text = str(err)
    where = f"{table}.{column}" if column else table
    assert where in text and repr(rule) in text and RULES[rule].text in text
    assert shows in text, text
    assert len(err.examples) == 1
    data = load_omop(cdm, mode="lenient", actions=actions, domains=domains)
    report = data.report
    assert report.count(table, rule, action) == 1, report
    for name in report.tables:
        t = report.totals(name)
        assert t["rows_in"] == t["rows_kept"] + t["rows_dropped"], name
    frame = report.to_frame()
    assert list(frame.columns) == ["table", "column", "reason", "action", "rows"]
    per = frame[frame["table"] == table]
    read = per.loc[per["action"] == "read", "rows"].sum()
    dropped = per.loc[per["action"] == "dropped", "rows"].sum()
    kept = per.loc[per["reason"] == "rows_kept", "rows"].sum()
    assert read == dropped + kept == len(tables[table])
    emitted = {"death": "death", **{v: k for k, v in DOMAIN_OF.items()}}[domains[0]]
    assert len(data.events) == report.totals(emitted)["rows_kept"]
    check_events(data.events)


def test_strict_allow_tolerates_a_rule(tmp_path, tables):
    add_row(tables, CO, condition_occurrence_id=150, person_id=99)
    add_row(tables, CO, condition_occurrence_id=151, condition_concept_id=0)
    cdm = open_cdm(write_cdm(tmp_path / "cdm", tables), threads=1)
    with pytest.raises(OmopValidationError, match="concept_zero"):
        load_omop(cdm, mode="strict", allow=["unknown_person"], domains=["condition"])
    data = load_omop(
        cdm, mode="strict", allow=["unknown_person", "concept_zero"], domains=["condition"]
    )
    assert data.report.count(CO, "unknown_person", "dropped") == 1
    assert data.report.count(CO, "concept_zero", "kept") == 1
    assert len(data.events) == 4 + 1  # the four clean conditions and the concept-0 one


def test_lenient_repairs_reach_the_events(tmp_path, tables):
    add_row(tables, CO, condition_occurrence_id=150, condition_concept_id=None)
    add_row(tables, CO, condition_occurrence_id=151, visit_occurrence_id=77)
    add_row(tables, CO, condition_occurrence_id=152, visit_occurrence_id="v12")
    add_row(tables, "measurement", measurement_id=450, value_as_number="high")
    add_row(
        tables,
        CO,
        condition_occurrence_id=153,
        condition_start_date="soon",
        condition_start_datetime="2011-02-03 04:05:06",
    )
    data = load_omop(write_cdm(tmp_path / "cdm", tables), actions={"dangling_visit": "repair"})
    ev = data.events
    cond = ev[ev["domain"] == "condition"]
    # the empty concept id is repaired to 0, and then its source concept (45) stands in
    assert (cond["concept_id"] == 0).sum() == 0
    assert (cond["concept_id"] == 45).sum() == 1
    assert data.report.count(CO, "source_concept", "repaired") == 1
    assert cond["visit_occurrence_id"].isna().sum() == 3  # one recorded none, 77 and v12
    assert pd.Timestamp("2011-02-03 04:05:06") in set(cond["time"])
    assert ev.loc[ev["domain"] == "measurement", "value_as_number"].isna().sum() == 1
    assert data.report.totals(CO)["rows_repaired"] == 4


def test_ids_and_missing_values_as_r_writes_them(tmp_path, tables):
    """R's write.csv: ids as 12.0, missing as NA; dates as YYYYMMDD also parse."""
    co = tables[CO].astype(object)
    co["condition_concept_id"] = [f"{v}.0" for v in co["condition_concept_id"]]
    co["visit_occurrence_id"] = ["10", "11", "12", "NA"]
    co["condition_start_date"] = ["20100101", "20120304", "20150505", "20180101"]
    tables[CO] = co
    data = load_omop(write_cdm(tmp_path / "cdm", tables), mode="strict")
    cond = data.events[data.events["domain"] == "condition"]
    assert sorted(cond["concept_id"].unique()) == [201826, 320128]
    assert cond["visit_occurrence_id"].isna().sum() == 1
    assert pd.Timestamp("2015-05-05") in set(cond["time"])


def test_missing_column_strict_and_lenient(tmp_path, tables):
    tables["drug_exposure"] = tables["drug_exposure"].drop(columns="drug_concept_id")
    path = write_cdm(tmp_path / "cdm", tables)
    with pytest.raises(OmopValidationError, match="drug_exposure.drug_concept_id.*missing_column"):
        load_omop(path, mode="strict")
    data = load_omop(path)
    assert data.report.totals("drug_exposure") == {
        "rows_in": 2,
        "rows_kept": 0,
        "rows_dropped": 2,
        "rows_repaired": 0,
        "rows_flagged": 0,
    }
    assert "drug" not in set(data.events["domain"])
    assert any("drug_concept_id" in n for n in data.report.notes)


def test_optional_columns_and_tables(tmp_path, tables):
    """Only the columns used are required: no datetimes, no source ids, no visit or death."""
    tables[CO] = tables[CO].drop(
        columns=["condition_start_datetime", "condition_source_concept_id"]
    )
    for name in ("visit_occurrence", "death", "concept", "concept_relationship"):
        del tables[name]
    data = load_omop(write_cdm(tmp_path / "cdm", tables), mode="strict")
    assert len(data.events) == 4 + 2 + 1 + 2 + 1
    notes = " ".join(data.report.notes)
    assert "dangling_visit not checked" in notes and "after_death not checked" in notes
    assert "unknown_concept not checked" in notes


def test_missing_tables(tmp_path, tables):
    del tables["observation_period"]
    path = write_cdm(tmp_path / "cdm", tables)
    with pytest.raises(OmopValidationError, match="observation_period.*missing_table"):
        load_omop(path, mode="strict")
    data = load_omop(path, mode="strict", allow=["missing_table"])
    assert len(data.observation_period) == 0
    assert any("outside_observation not checked" in n for n in data.report.notes)
    tables = base_tables()
    del tables["procedure_occurrence"]
    path = write_cdm(tmp_path / "no_procedures", tables)
    with pytest.raises(OmopValidationError, match="procedure_occurrence.*missing_table"):
        load_omop(path, domains=["procedure"], mode="strict")
    assert "procedure" not in set(load_omop(path).events["domain"])
    del tables["person"]
    path = write_cdm(tmp_path / "no_person", tables)
    for mode in ("strict", "lenient"):
        with pytest.raises(OmopValidationError, match="person.*missing_table"):
            load_omop(path, mode=mode)


def test_bad_arguments(tmp_path, tables):
    path = write_cdm(tmp_path / "cdm", tables)
    with pytest.raises(ValueError, match="mode"):
        load_omop(path, mode="fast")
    with pytest.raises(ValueError, match="domains"):
        load_omop(path, domains=["lab"])
    with pytest.raises(ValueError, match="not configurable"):
        load_omop(path, actions={"unknown_person": "keep"})
    with pytest.raises(ValueError, match="choose from"):
        load_omop(path, actions={"after_death": "repair"})
    with pytest.raises(ValueError, match="unknown rules"):
        load_omop(path, allow=["everything"])


def test_same_report_from_csv_parquet_and_duckdb(tmp_path, tables):
    add_row(tables, CO)  # duplicate_row
    add_row(tables, CO, condition_occurrence_id=150, person_id=99)  # unknown_person
    add_row(tables, CO, condition_occurrence_id=151, condition_concept_id=0)
    add_row(tables, CO, condition_occurrence_id=152, visit_occurrence_id=77)
    add_row(tables, CO, condition_occurrence_id=153, condition_start_date="1990-01-01")
    frames = []
    for fmt in ("csv", "parquet", "duckdb"):
        data = load_omop(write_cdm(tmp_path / fmt, tables, fmt))
        frames.append((data.report.to_frame(), data.events))
    for frame, events in frames[1:]:
        pd.testing.assert_frame_equal(frame, frames[0][0])
        pd.testing.assert_frame_equal(events, frames[0][1])


def test_report_views(tmp_path, tables):
    add_row(tables, CO, condition_occurrence_id=150, condition_concept_id=0)
    report = load_omop(write_cdm(tmp_path / "cdm", tables)).report
    summary = report.summary()
    assert summary.loc[CO, "rows_flagged"] == 1
    assert list(summary.columns) == [
        "rows_in",
        "rows_kept",
        "rows_dropped",
        "rows_repaired",
        "rows_flagged",
    ]
    text = repr(report)
    assert "condition_occurrence" in text and "concept_zero" in text and "LoadReport" in text
    broken = LoadReport()
    with pytest.raises(AssertionError):
        broken.add_table("x", 3, {("c", "bad_id"): 5}, {}, {}, 0, 0)


# ----------------------------------------------------------------------------------------------
# Reading: file layouts, DuckDB schemas, CDM versions
# ----------------------------------------------------------------------------------------------


def test_open_cdm_layouts_and_errors(tmp_path, tables):
    with pytest.raises(FileNotFoundError):
        open_cdm(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no table files"):
        open_cdm(tmp_path / "empty")
    path = write_cdm(tmp_path / "two", tables)
    tables["person"].to_parquet(path / "PERSON.parquet")
    with pytest.raises(ValueError, match="two sources for table 'person'"):
        open_cdm(path)
    # a table split in shards, one folder per table
    path = write_cdm(tmp_path / "shards", tables, "parquet")
    shard_dir = path / "condition_occurrence"
    shard_dir.mkdir()
    co = pd.read_parquet(path / "condition_occurrence.parquet")
    (path / "condition_occurrence.parquet").unlink()
    co.iloc[:2].to_parquet(shard_dir / "part-0.parquet")
    co.iloc[2:].to_parquet(shard_dir / "part-1.parquet")
    cdm = open_cdm(path)
    assert cdm.count("condition_occurrence") == 4
    assert len(load_omop(cdm, mode="strict").events) == 14
    with pytest.raises(OmopValidationError, match="missing_table"):
        cdm.columns("episode")
    assert cdm.table("person", ["person_id"], limit=2).shape == (2, 1)
    # Athena ships vocabulary tables tab-separated under a .csv name
    path = write_cdm(tmp_path / "athena", tables)
    tables["concept"].to_csv(path / "concept.csv", sep="\t", index=False)
    assert open_cdm(path).concept_names([201826]) == {201826: "Diabetes, type 2"}


def test_duckdb_schema_choice(tmp_path, tables):
    path = write_cdm(tmp_path / "db", tables, "duckdb", upper=True)
    cdm = open_cdm(path)  # the CDM lives in schema "omop", tables and columns in upper case
    assert "person" in cdm.tables and "person_id" in cdm.columns("person")
    assert open_cdm(path, schema="omop").count("person") == 3
    with pytest.raises(ValueError, match="no schema 'cdm'"):
        open_cdm(path, schema="cdm")
    other = tmp_path / "other.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE stuff AS SELECT 1 AS x")
    con.close()
    with pytest.raises(ValueError, match="no schema with a person table"):
        open_cdm(other)


def test_cdm_version_5_3_and_5_4(tmp_path, tables):
    assert open_cdm(write_cdm(tmp_path / "53", tables)).cdm_version == "5.3"
    v = tables["visit_occurrence"].rename(
        columns={"admitting_source_concept_id": "admitted_from_concept_id"}
    )
    tables["visit_occurrence"] = v
    cdm = open_cdm(write_cdm(tmp_path / "54", tables))
    assert cdm.cdm_version == "5.4"
    assert len(load_omop(cdm, mode="strict").events) == 14
    tables["cdm_source"] = _frame(cdm_source_name=["x"], cdm_version=["v5.3.1"])
    assert open_cdm(write_cdm(tmp_path / "src", tables)).cdm_version == "5.3"


# ----------------------------------------------------------------------------------------------
# Concepts: look-up, ancestors (table or 'Is a' closure), 'Maps to'
# ----------------------------------------------------------------------------------------------


def test_concepts_and_is_a_closure(tmp_path, tables):
    cdm = open_cdm(write_cdm(tmp_path / "cdm", tables))
    assert cdm.concept_names([201826, 123]) == {201826: "Diabetes, type 2"}  # quoted comma
    assert cdm.concepts([45])["vocabulary_id"].tolist() == ["ICD10CM"]
    anc = cdm.concept_ancestor()
    assert cdm.ancestor_source == "concept_relationship 'Is a' closure"
    row = anc[(anc.ancestor_concept_id == 4000) & (anc.descendant_concept_id == 201826)]
    # 201826 -> 4000 directly (1 level) and via 201820 (2 levels)
    assert row[["min_levels_of_separation", "max_levels_of_separation"]].values.tolist() == [[1, 2]]
    up = cdm.ancestors([201826])
    assert up["ancestor_concept_id"].tolist() == [201826, 4000, 201820]  # by level, then id
    assert up["min_levels_of_separation"].tolist() == [0, 1, 1]
    down = cdm.descendants([4000], include_self=False)
    assert set(down["descendant_concept_id"]) == {201820, 201826, 320128}
    maps = cdm.map_to_standard([45, 320128])
    assert maps.values.tolist() == [[45, 201826]]


def test_concept_ancestor_table_wins_and_cycles_fail(tmp_path, tables):
    tables["concept_ancestor"] = _frame(
        ancestor_concept_id=[4000, 4000],
        descendant_concept_id=[4000, 320128],
        min_levels_of_separation=[0, 1],
        max_levels_of_separation=[0, 1],
    )
    cdm = open_cdm(write_cdm(tmp_path / "anc", tables))
    assert len(cdm.concept_ancestor()) == 2 and cdm.ancestor_source == "concept_ancestor"
    del tables["concept_ancestor"]
    add_row(tables, "concept_relationship", concept_id_1=4000, concept_id_2=201826)
    with pytest.raises(ValueError, match="cycle"):
        open_cdm(write_cdm(tmp_path / "cycle", tables)).concept_ancestor()


# ----------------------------------------------------------------------------------------------
# The shared OMOP samples (skipped when ../shared/data is absent)
# ----------------------------------------------------------------------------------------------


def _shared_root() -> Path:
    env = os.environ.get("EHRSEQ_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


_LOADED: dict[str, object] = {}


@pytest.fixture
def shared():
    """Load a shared sample once per session; skip cleanly when it is absent."""

    def get(name: str):
        path = _shared_root() / name
        if not (path / "person.parquet").exists():
            pytest.skip(f"shared OMOP sample {path} not present")
        if name not in _LOADED:
            _LOADED[name] = load_omop(open_cdm(path, threads=2))
        return _LOADED[name]

    return get


SAMPLES = ["eunomia_gibleed", "eunomia_synthea27nj", "synpuf_50"]


@pytest.mark.shared_data
@pytest.mark.parametrize("name", SAMPLES)
def test_shared_sample_loads_and_adds_up(shared, name):
    data = shared(name)
    check_events(data.events)
    report = data.report
    for table in report.tables:
        t = report.totals(table)
        assert t["rows_in"] == t["rows_kept"] + t["rows_dropped"], (name, table)
    by_domain = data.events["domain"].value_counts()
    for domain, table in [
        ("condition", CO),
        ("drug", "drug_exposure"),
        ("visit", "visit_occurrence"),
    ]:
        assert by_domain[domain] == report.totals(table)["rows_kept"]
    assert data.events["person_id"].isin(data.person["person_id"]).all()


@pytest.mark.shared_data
def test_shared_quirks_gibleed(shared):
    data = shared("eunomia_gibleed")
    r = data.report
    assert r.count("observation_period", "unknown_person", "dropped") == 5343 - 2694
    assert r.totals("death")["rows_in"] == 0
    dangling = r.count(CO, "dangling_visit", "kept")
    assert dangling > 0.95 * r.totals(CO)["rows_in"]
    assert len(data.person) == 2694
    assert len(data.cdm.concept_ancestor()) == 65690
    with pytest.raises(OmopValidationError, match="observation_period.person_id.*unknown_person"):
        load_omop(data.cdm, mode="strict", domains=["condition"])


@pytest.mark.shared_data
def test_shared_quirks_synpuf(shared):
    data = shared("synpuf_50")
    r = data.report
    assert r.count("death", "missing_date", "dropped") == 1
    assert r.count("visit_occurrence", "concept_zero", "kept") >= 1600
    after = data.events.merge(
        data.events.loc[data.events["domain"] == "death", ["person_id", "time"]],
        on="person_id",
        suffixes=("", "_death"),
    )
    late = after[after["time"].dt.normalize() > after["time_death"]]
    assert late["person_id"].nunique() == 2
    assert sum(r.count(t, "after_death", "kept") for t in r.tables) == len(late)


@pytest.mark.shared_data
def test_shared_synthea_is_a_closure(shared):
    data = shared("eunomia_synthea27nj")
    cdm = data.cdm
    anc = cdm.concept_ancestor()
    assert cdm.ancestor_source == "concept_relationship 'Is a' closure"
    assert len(anc) > 7783
    assert (anc["min_levels_of_separation"] <= anc["max_levels_of_separation"]).all()
    cond = data.events.loc[data.events["domain"] == "condition", "concept_id"]
    up = cdm.ancestors(cond.unique())
    assert (up.groupby("concept_id").size() >= 1).all()
    assert up["min_levels_of_separation"].max() >= 2
    assert len(cdm.map_to_standard()) > 0


def test_ancestors_on_a_fresh_cdm_built_from_is_a(tmp_path):
    """A fresh CDM whose hierarchy comes from 'Is a' edges answers ancestors() at once
    (duckdb refuses a new registration while an earlier result is still open)."""
    from ehrseq.data.synthetic import SyntheticConfig, generate_cohort

    cohort = generate_cohort(SyntheticConfig(n_patients=50, seed=1))
    cohort.write_omop(tmp_path)
    cdm = load_omop(tmp_path).cdm
    child = int(cohort.vocabulary.parents().index[0])
    parent = int(np.atleast_1d(cohort.vocabulary.parents().loc[child])[0])
    got = cdm.ancestors([child])
    assert parent in set(got["ancestor_concept_id"])
    assert child in set(cdm.descendants([parent])["descendant_concept_id"])


def test_duckdb_memory_cap_spills_and_changes_nothing(tmp_path, tables, monkeypatch):
    from ehrseq.data.omop.cdm import connect

    con = connect(memory_limit="64MB", files=[tmp_path])
    assert "MiB" in con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    spill = Path(con.execute("SELECT current_setting('temp_directory')").fetchone()[0])
    assert spill.is_dir() and spill.name.startswith("ehrseq_duckdb_")
    con.close()
    cdm = write_cdm(tmp_path / "cdm", tables)
    free = load_omop(cdm, mode="strict")
    monkeypatch.setenv("EHRSEQ_DUCKDB_MEMORY", "64MB")
    capped = load_omop(cdm, mode="strict")
    setting = capped.cdm.con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert setting != free.cdm.con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    pd.testing.assert_frame_equal(capped.events, free.events)
    monkeypatch.setenv("EHRSEQ_DUCKDB_MEMORY", "lots")
    with pytest.raises(ValueError, match="EHRSEQ_DUCKDB_MEMORY"):
        load_omop(cdm)
