"""Malformed OMOP inputs: every case ends as a clear error (strict) or a counted drop or repair
(lenient), never as a raw DuckDB, pyarrow or pandas error; DuckDB never reaches the network.

Built on the tiny clean CDM of ``test_omop``: each test breaks one thing and checks the
outcome in both modes and that the report accounts for every row."""

from __future__ import annotations

import copy
import sqlite3
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_omop import CO, add_row, base_tables, write_cdm

from ehrseq.data.omop import OmopValidationError, load_omop, open_cdm
from ehrseq.data.omop.cdm import _DUCKDB_CONFIG, connect


@pytest.fixture
def tables() -> dict[str, pd.DataFrame]:
    return copy.deepcopy(base_tables())


def adds_up(report) -> None:
    """rows_in == rows_kept + rows_dropped per table, and the long view agrees."""
    frame = report.to_frame()
    for table in report.tables:
        t = report.totals(table)
        assert t["rows_in"] == t["rows_kept"] + t["rows_dropped"], table
        mine = frame[frame["table"] == table]
        dropped = mine.loc[mine["action"] == "dropped", "rows"].sum()
        assert mine.loc[mine["reason"] == "read", "rows"].sum() == t["rows_in"], table
        assert dropped == t["rows_dropped"], table


# ----------------------------------------------------------------------------------------------
# DuckDB never reaches the network
# ----------------------------------------------------------------------------------------------


def test_duckdb_extensions_never_autoinstall_or_autoload(tmp_path, tables):
    cdm = open_cdm(write_cdm(tmp_path / "cdm", tables))
    for con in (cdm.con, connect()):
        got = con.execute(
            "SELECT current_setting('autoinstall_known_extensions'), "
            "current_setting('autoload_known_extensions')"
        ).fetchall()[0]
        assert got == (False, False)
    assert set(_DUCKDB_CONFIG.values()) == {False}


def test_sqlite_file_as_duckdb_is_a_clear_error_without_download(tmp_path):
    path = tmp_path / "cdm.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE person (person_id INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(ValueError, match="SQLite database, not a DuckDB one") as err:
        open_cdm(path)
    assert "INSTALL" not in str(err.value) and str(path) in str(err.value)
    # and the connection would refuse to fetch the extension DuckDB asks for
    with pytest.raises(duckdb.Error, match="not found|Install"):
        connect().execute(f"ATTACH '{path}' AS s (TYPE sqlite, READ_ONLY)")


@pytest.mark.parametrize("keep", [0, 10, 4096, -4096])
def test_truncated_duckdb_file_is_a_clear_error(tmp_path, tables, keep):
    path = write_cdm(tmp_path / "db", tables, "duckdb")
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[: len(data) // 2])
    try:
        data = load_omop(path)
    except ValueError as err:
        assert not isinstance(err, duckdb.Error)
        assert str(path) in str(err)
    else:  # the half that is left may still hold every table
        adds_up(data.report)


# ----------------------------------------------------------------------------------------------
# Unreadable files and ragged CSV lines
# ----------------------------------------------------------------------------------------------


def _corrupt_parquet(path: Path) -> None:
    """Overwrite the middle of a parquet file (data pages), leaving the footer intact."""
    data = bytearray(path.read_bytes())
    for i in range(8, len(data) // 2):
        data[i] = 0xAB
    path.write_bytes(bytes(data))


def test_corrupt_parquet_is_named_never_raw(tmp_path, tables):
    path = write_cdm(tmp_path / "cdm", tables, "parquet")
    _corrupt_parquet(path / f"{CO}.parquet")
    with pytest.raises(OmopValidationError, match="unreadable_file") as err:
        load_omop(path, mode="strict")
    assert f"{CO}.parquet" in str(err.value)
    data = load_omop(path)  # lenient: named in a note, the rest loads
    assert any(CO in n and "unreadable" in n for n in data.report.notes)
    assert "condition" not in set(data.events["domain"])
    adds_up(data.report)
    _corrupt_parquet(path / "person.parquet")
    with pytest.raises(OmopValidationError, match="person.parquet"):
        load_omop(path)  # no person table: nothing can load, in either mode


def test_garbage_file_is_named(tmp_path, tables):
    path = write_cdm(tmp_path / "cdm", tables, "parquet")
    (path / "drug_exposure.parquet").write_bytes(b"not parquet at all")
    data = load_omop(path)
    assert any("drug_exposure.parquet" in n for n in data.report.notes)
    with pytest.raises(OmopValidationError, match="drug_exposure.parquet"):
        load_omop(path, mode="strict")
    assert len(load_omop(path, mode="strict", allow=["unreadable_file"]).events) == 12


def _long_condition_csv(path: Path, n: int = 30_000) -> pd.DataFrame:
    """A condition table of ``n`` rows for person 1 (clean), written as CSV."""
    co = pd.DataFrame(
        {
            "condition_occurrence_id": range(1000, 1000 + n),
            "person_id": 1,
            "condition_concept_id": 201826,
            "condition_start_date": "2010-01-01",
        }
    )
    co.to_csv(path, index=False)
    return co


@pytest.mark.parametrize("extra", [",1,2", "", ",x"])
def test_ragged_csv_line_far_into_a_file_is_counted(tmp_path, tables, extra):
    path = write_cdm(tmp_path / "cdm", tables)
    _long_condition_csv(path / f"{CO}.csv")
    lines = (path / f"{CO}.csv").read_text().splitlines()
    lines[25_000] = lines[25_000].rsplit(",", 1)[0] if not extra else lines[25_000] + extra
    (path / f"{CO}.csv").write_text("\n".join(lines) + "\n")
    data = load_omop(path)
    t = data.report.totals(CO)
    assert t["rows_in"] == 30_000 and t["rows_kept"] == 29_999
    assert data.report.count(CO, "malformed_line", "dropped") == 1
    adds_up(data.report)
    with pytest.raises(OmopValidationError, match="malformed_line") as err:
        load_omop(path, mode="strict")
    assert "25001" in str(err.value) or "25002" in str(err.value)


def test_quoting_after_the_sniffer_sample_is_read(tmp_path, tables):
    path = write_cdm(tmp_path / "cdm", tables)
    tables["concept"] = tables["concept"].iloc[:0]
    n = 30_000
    names = [f"concept {i}" for i in range(n)]
    names[-5] = 'a "quoted", name'
    concept = pd.DataFrame({"concept_id": range(10_000_000, 10_000_000 + n), "concept_name": names})
    concept = pd.concat([base_tables()["concept"][["concept_id", "concept_name"]], concept])
    concept.to_csv(path / "concept.csv", index=False)
    data = load_omop(path, mode="strict")
    assert data.report.totals("concept")["rows_kept"] == len(concept)
    assert data.cdm.concept_names([10_000_000 + n - 5]) == {10_000_000 + n - 5: 'a "quoted", name'}
    assert any("CSV dialect decided on every line of concept.csv" in s for s in data.report.notes)


# ----------------------------------------------------------------------------------------------
# Silent losses that are now rules
# ----------------------------------------------------------------------------------------------


def _shard(path: Path, kinds: list[str]) -> pd.DataFrame:
    """Move the condition table into a folder of shards of the given kinds."""
    co = pd.read_csv(path / f"{CO}.csv", dtype=str)
    (path / f"{CO}.csv").unlink()
    folder = path / CO
    folder.mkdir()
    for k, (kind, part) in enumerate(zip(kinds, [co.iloc[:2], co.iloc[2:]])):
        if kind == "parquet":
            part.astype({"condition_occurrence_id": int, "person_id": int}).to_parquet(
                folder / f"part-{k}.parquet", index=False
            )
        else:
            part.to_csv(folder / f"part-{k}.csv", index=False)
    return co


def test_mixed_shard_formats_are_read_not_skipped(tmp_path, tables):
    path = write_cdm(tmp_path / "cdm", tables)
    _shard(path, ["parquet", "csv"])
    with pytest.raises(OmopValidationError, match="mixed_shards") as err:
        load_omop(path, mode="strict")
    assert "part-0.parquet" in str(err.value) and "allow=['mixed_shards']" in str(err.value)
    data = load_omop(path)
    assert data.report.totals(CO)["rows_kept"] == 4
    assert data.report.count(CO, "mixed_shards", "kept") == 4
    strict = load_omop(path, mode="strict", allow=["mixed_shards"])
    clean = load_omop(write_cdm(tmp_path / "clean", base_tables()), mode="strict")
    pd.testing.assert_frame_equal(strict.events, clean.events)


@pytest.mark.parametrize("second", ["person_id", "PERSON_ID", " Person_Id"])
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_duplicate_or_case_clashing_columns(tmp_path, tables, second, fmt):
    co = tables[CO]
    copy_ = co["person_id"].astype(object).tolist()
    copy_[1] = 3  # row 2's copy disagrees
    path = write_cdm(tmp_path / "cdm", tables, fmt)
    frame = pd.read_csv(path / f"{CO}.csv", dtype=str) if fmt == "csv" else co
    if fmt == "csv":
        text = (path / f"{CO}.csv").read_text().splitlines()
        text = [f"{line},{v}" for line, v in zip(text, [second, *copy_])]
        (path / f"{CO}.csv").write_text("\n".join(text) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        t = pa.Table.from_pandas(frame.astype({"person_id": "int64"}), preserve_index=False)
        t = t.append_column(second, pa.array(copy_, type=pa.int64()))
        (path / f"{CO}.parquet").unlink()
        pq.write_table(t, path / f"{CO}.parquet")
    with pytest.raises(OmopValidationError, match="duplicate_column") as err:
        load_omop(path, mode="strict")
    assert "person_id" in str(err.value)
    data = load_omop(path)
    assert data.report.count(CO, "duplicate_column", "dropped") == 1
    assert data.report.totals(CO)["rows_kept"] == 3
    assert "person_id" in data.cdm.columns(CO) and len(data.cdm.columns(CO)) == len(co.columns)
    adds_up(data.report)


@pytest.mark.parametrize("table", [CO, "person"])
def test_csv_without_header_row(tmp_path, tables, table):
    path = write_cdm(tmp_path / "cdm", tables)
    tables[table].to_csv(path / f"{table}.csv", index=False, header=False)
    with pytest.raises(OmopValidationError, match="no_header") as err:
        load_omop(path, mode="strict")
    assert f"{table}.csv" in str(err.value)
    if table == "person":
        with pytest.raises(OmopValidationError, match="no_header"):
            load_omop(path)  # no person table: nothing can load
        return
    data = load_omop(path)
    t = data.report.totals(table)
    assert t["rows_in"] == len(tables[table]) and t["rows_kept"] == 0
    assert data.report.count(table, "no_header", "dropped") == len(tables[table])
    adds_up(data.report)


def test_duplicated_concept_id_keeps_the_first_name(tmp_path, tables):
    add_row(tables, "concept", concept_id=201826, concept_name="Imposter")
    tables["concept"].iloc[0:1]  # (first row of concept is 8507)
    add_row(tables, "concept", concept_id=8507, concept_name="Not male")
    data = load_omop(write_cdm(tmp_path / "cdm", tables))
    assert data.report.count("concept", "duplicate_key", "dropped") == 2
    assert data.cdm.concept_names([8507, 201826]) == {8507: "Male", 201826: "Diabetes, type 2"}


# ----------------------------------------------------------------------------------------------
# New row rules: values, zones, births, periods
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "-inf", "1e400", "nan", "Infinity"])
def test_non_finite_value_is_repaired_to_nan(tmp_path, tables, value):
    add_row(tables, "measurement", measurement_id=450, value_as_number=value)
    path = write_cdm(tmp_path / "cdm", tables)
    with pytest.raises(OmopValidationError, match="non_finite"):
        load_omop(path, mode="strict")
    data = load_omop(path)
    assert data.report.count("measurement", "non_finite", "repaired") == 1
    values = data.events.loc[data.events["domain"] == "measurement", "value_as_number"]
    assert values.isna().sum() == 1 and values.dropna().tolist() == [120.5, 130.0]


@pytest.mark.parametrize("stamp", ["2010-01-01 09:00:00+02:00", "2010-01-01T09:00:00Z"])
def test_zone_offset_is_counted_and_wall_time_kept(tmp_path, tables, stamp):
    tables[CO].loc[0, "condition_start_datetime"] = stamp
    path = write_cdm(tmp_path / "cdm", tables)
    with pytest.raises(OmopValidationError, match="zone_offset"):
        load_omop(path, mode="strict")
    data = load_omop(path)
    assert data.report.count(CO, "zone_offset", "repaired") == 1
    first = data.events[data.events["domain"] == "condition"]["time"].iloc[0]
    assert first == pd.Timestamp("2010-01-01 09:00")


def test_zoned_timestamp_type_is_read_in_utc(tmp_path, tables):
    path = write_cdm(tmp_path / "cdm", tables, "parquet")
    co = pd.read_parquet(path / f"{CO}.parquet")
    co["condition_start_datetime"] = co["condition_start_datetime"].dt.tz_localize("Europe/Paris")
    co.to_parquet(path / f"{CO}.parquet", index=False)
    data = load_omop(path)
    assert data.report.count(CO, "zone_offset", "repaired") == 1
    first = data.events[data.events["domain"] == "condition"]["time"].iloc[0]
    assert first == pd.Timestamp("2010-01-01 08:00")  # 09:00 in Paris is 08:00 UTC


def test_event_before_birth_is_flagged_or_dropped(tmp_path, tables):
    add_row(
        tables,
        CO,
        condition_occurrence_id=160,
        condition_start_date="1949-01-01",
        condition_start_datetime=None,
    )
    path = write_cdm(tmp_path / "cdm", tables)
    with pytest.raises(OmopValidationError, match="before_birth"):
        load_omop(path, mode="strict", allow=["outside_observation"])
    data = load_omop(path)
    assert data.report.count(CO, "before_birth", "kept") == 1
    data = load_omop(path, actions={"before_birth": "drop"})
    assert data.report.count(CO, "before_birth", "dropped") == 1
    adds_up(data.report)


@pytest.mark.parametrize("year", [1800, 2200])
def test_implausible_birth_year(tmp_path, tables, year):
    tables["person"]["year_of_birth"] = tables["person"]["year_of_birth"].astype(object)
    tables["person"].loc[2, "year_of_birth"] = year
    path = write_cdm(tmp_path / "cdm", tables)
    with pytest.raises(OmopValidationError, match="implausible_birth"):
        load_omop(path, mode="strict")
    assert load_omop(path).report.count("person", "implausible_birth", "kept") == 1
    data = load_omop(path, actions={"implausible_birth": "drop"})
    assert 3 not in set(data.person["person_id"]) and 3 not in set(data.events["person_id"])
    adds_up(data.report)


def test_overlapping_observation_periods(tmp_path, tables):
    add_row(
        tables,
        "observation_period",
        observation_period_id=9,
        observation_period_start_date="2019-01-01",
        observation_period_end_date="2021-06-30",
    )
    add_row(  # touching is not overlapping once the day differs
        tables,
        "observation_period",
        observation_period_id=10,
        observation_period_start_date="2021-07-01",
        observation_period_end_date="2022-01-01",
    )
    path = write_cdm(tmp_path / "cdm", tables)
    with pytest.raises(OmopValidationError, match="overlapping_period"):
        load_omop(path, mode="strict")
    data = load_omop(path)
    assert data.report.count("observation_period", "overlapping_period", "kept") == 1
    data = load_omop(path, actions={"overlapping_period": "drop"})
    assert len(data.observation_period) == 4


# ----------------------------------------------------------------------------------------------
# Random corruptions of the clean CDM (hypothesis)
# ----------------------------------------------------------------------------------------------

GARBAGE = ["", "NA", "x", "1e400", "inf", "-1", "12.5", "2010-13-45", "99999999999999999999"]
GARBAGE += ["2010-01-01+02:00", '"', "1800-01-01", "Ω", "0"]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    hits=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 6), st.sampled_from(GARBAGE)),
        min_size=1,
        max_size=4,
    )
)
def test_random_cell_corruptions_are_accounted_for(tmp_path_factory, hits):
    tables = copy.deepcopy(base_tables())
    co = tables[CO].astype(object)
    touched = set()
    for row, col, value in hits:
        co.iloc[row, col] = value
        touched.add(int(tables[CO]["condition_occurrence_id"].iloc[row]))
    tables[CO] = co
    path = write_cdm(tmp_path_factory.mktemp("cdm"), tables)
    data = load_omop(path)  # lenient never aborts on a row-level problem
    adds_up(data.report)
    assert data.report.totals(CO)["rows_in"] == 4
    clean = load_omop(write_cdm(tmp_path_factory.mktemp("clean"), base_tables()))
    others = data.events[data.events["domain"] != "condition"].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        others, clean.events[clean.events["domain"] != "condition"].reset_index(drop=True)
    )
    untouched = [
        i
        for i in range(4)
        if int(base_tables()[CO]["condition_occurrence_id"].iloc[i]) not in touched
    ]
    kept = data.events[data.events["domain"] == "condition"]
    want = clean.events[clean.events["domain"] == "condition"].iloc[untouched]
    merged = want.merge(kept, how="left", indicator=True)
    assert (merged["_merge"] == "both").all()  # every untouched row loads unchanged
    try:
        load_omop(path, mode="strict")
    except OmopValidationError as err:
        assert err.rule and err.table
