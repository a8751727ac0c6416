"""Malformed OMOP inputs: every case ends as a clear error (strict) or a counted drop or repair
(lenient), never as a raw DuckDB, pyarrow or pandas error; DuckDB never reaches the network.

Built on the tiny clean CDM of ``test_omop``: each test breaks one thing and checks the
outcome in both modes and that the report accounts for every row."""

from __future__ import annotations

import copy
import datetime as dt
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
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
        for setting in ("autoinstall_known_extensions", "lock_configuration", "threads"):
            with pytest.raises(duckdb.Error, match="locked"):
                con.execute(f"SET {setting} = true")
    assert set(_DUCKDB_CONFIG.values()) == {False}
    # the CDM's connection reads its own folder and nothing else: no INSTALL, no URL
    for sql in (
        "INSTALL httpfs",
        "INSTALL httpfs FROM 'http://example.com'",
        "SELECT * FROM read_csv('http://example.com/a.csv')",
        f"SELECT * FROM read_csv('{Path(__file__)}')",
    ):
        with pytest.raises(duckdb.Error, match="disabled by configuration"):
            cdm.con.execute(sql)


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
    assert any(
        "CSV dialect of concept.csv (verified on every line)" in s for s in data.report.notes
    )


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
    assert "_row=3" in str(err.value) and "2 row(s)" in str(err.value)  # the CSV shard's rows
    data = load_omop(path)
    assert data.report.totals(CO)["rows_kept"] == 4
    assert data.report.count(CO, "mixed_shards", "kept") == 2  # the minority (CSV) shard only
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
        t = pa.Table.from_pandas(frame.astype({"person_id": "int64"}), preserve_index=False)
        t = t.append_column(second, pa.array(copy_, type=pa.int64()))
        (path / f"{CO}.parquet").unlink()
        pq.write_table(t, path / f"{CO}.parquet")
    with pytest.raises(OmopValidationError, match="duplicate_column") as err:
        load_omop(path, mode="strict")
    assert "person_id" in str(err.value)
    assert err.value.rows == 1 and err.value.examples["_row"].tolist() == [2]
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
    assert err.value.examples["line"].tolist() == [1, 2, 3]  # the file's first lines
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
# One broken thing per case, in every input format: CSV bytes, parquet types, DuckDB tables
# ----------------------------------------------------------------------------------------------

ROW2 = b"101,1,201826,45,2012-03-04,,11"  # condition_occurrence row 2 (id 101) as CSV


def _bytes(table: str, change) -> Callable[[Path], None]:
    """Edit the bytes of ``table``'s CSV file."""

    def edit(path: Path) -> None:
        f = path / f"{table}.csv"
        f.write_bytes(change(f.read_bytes()))

    return edit


def _row2(new: bytes) -> Callable[[Path], None]:
    """Replace condition row 2 (id 101) by ``new``."""

    def change(data: bytes) -> bytes:
        assert ROW2 in data
        return data.replace(ROW2, new)

    return _bytes(CO, change)


def _column(table: str, name: str, values: pa.Array | None) -> Callable[[Path], None]:
    """Replace (or, with ``None``, remove) one column of ``table``'s parquet file."""

    def edit(path: Path) -> None:
        f = path / f"{table}.parquet"
        t = pq.read_table(f)
        i = t.column_names.index(name)
        t = t.remove_column(i) if values is None else t.set_column(i, name, values)
        pq.write_table(t, f)

    return edit


def _sql(sql: str) -> Callable[[Path], None]:
    """Run SQL on the DuckDB file (the CDM is in schema ``omop``)."""

    def edit(path: Path) -> None:
        con = duckdb.connect(str(path))
        con.execute(sql)
        con.close()

    return edit


def _case(fmt, table, edit, outcome=None, touched=(1,), id=""):
    """``outcome``: ``None`` (loads as the clean CDM, strict too), or ``(rule, column,
    action, rows)``: strict raises on it, lenient counts ``rows`` under it."""
    return pytest.param(fmt, table, edit, outcome, touched, id=id)


D = dt.date
CASES = [
    # CSV: encodings, line ends, delimiters, blanks: read as written, nothing to count
    _case("csv", CO, _bytes(CO, lambda b: b"\xef\xbb\xbf" + b), id="csv-utf8-bom"),
    _case("csv", CO, _bytes(CO, lambda b: b.replace(b"\n", b"\r\n")), id="csv-crlf"),
    _case("csv", CO, _bytes(CO, lambda b: b.replace(b",", b";")), id="csv-semicolon"),
    _case("csv", CO, _bytes(CO, lambda b: b.replace(b",", b"\t")), id="csv-tab"),
    _case("csv", CO, _bytes(CO, lambda b: b.replace(b"\n", b"\n\n")), id="csv-blank-lines"),
    _case("csv", CO, _bytes(CO, lambda b: b.replace(b"\n", b",\n")), id="csv-trailing-comma"),
    _case(
        "csv",
        CO,
        _bytes(CO, lambda b: b.replace(b"\n", b",x\n").replace(b"_id,x\n", b"_id,site\n", 1)),
        id="csv-extra-unknown-column",
    ),
    _case("csv", CO, _row2(b'101," 1 ",201826,45," 2012-03-04 ",,11'), id="csv-whitespace"),
    _case("csv", CO, _row2(b"101,1.0,201826,45,20120304,,11.0"), id="csv-ids-x.0-yyyymmdd"),
    _case("csv", CO, _row2(b'"101","1","201826","45","2012-03-04","","11"'), id="csv-all-quoted"),
    # CSV: values that do not parse: counted
    _case(
        "csv",
        CO,
        _row2(b"101,1,201826,45,04/03/2012,,11"),
        ("bad_date", "condition_start_date", "dropped", 1),
        id="csv-date-dd/mm/yyyy",
    ),
    _case(
        "csv",
        CO,
        _row2(b"101,1,201826,45,2012-02-30,,11"),
        ("bad_date", "condition_start_date", "dropped", 1),
        id="csv-date-feb-30",
    ),
    _case(
        "csv",
        CO,
        _row2(b"101,1,201826,45,2012-03\x00-04,,11"),
        ("bad_date", "condition_start_date", "dropped", 1),
        id="csv-nul-byte",
    ),
    _case(
        "csv",
        CO,
        _row2(b"101,-1,201826,45,2012-03-04,,11"),
        ("unknown_person", "person_id", "dropped", 1),
        id="csv-negative-id",
    ),
    _case(
        "csv",
        CO,
        _row2(b"101,1.5,201826,45,2012-03-04,,11"),
        ("bad_id", "person_id", "dropped", 1),
        id="csv-float-id",
    ),
    _case(
        "csv",
        CO,
        _row2(b"101,99999999999999999999,201826,45,2012-03-04,,11"),
        ("bad_id", "person_id", "dropped", 1),
        id="csv-id-beyond-int64",
    ),
    _case(
        "csv",
        CO,
        _row2(b"101," + b"1" * 5000 + b",201826,45,2012-03-04,,11"),
        ("bad_id", "person_id", "dropped", 1),
        id="csv-very-long-id",
    ),
    _case(
        "csv",
        CO,
        _row2(b'101,"1,201826,45,2012-03-04,,11'),
        ("bad_id", "person_id", "dropped", 1),
        id="csv-unterminated-quote",
    ),
    _case(
        "csv",
        CO,
        _row2(b"101,1,99999999999999999999,45,2012-03-04,,11"),
        ("bad_id", "condition_concept_id", "repaired", 1),
        id="csv-concept-beyond-int64",
    ),
    _case(
        "csv",
        CO,
        _row2(b'101,1,"",45,2012-03-04,,11'),
        ("missing_id", "condition_concept_id", "repaired", 1),
        id="csv-empty-string-is-null",
    ),
    _case(
        "csv",
        CO,
        _row2(b"101,1,201826,45,2012-03-04,,11,extra"),
        ("malformed_line", "", "dropped", 1),
        id="csv-ragged-line",
    ),
    _case(
        "csv",
        CO,
        _row2(b"101,1,201826,45,2012-03-04,2012-03-04 10:00:00-05:00,11"),
        ("zone_offset", "condition_start_datetime", "repaired", 1),
        id="csv-zone-offset",
    ),
    _case(
        "csv",
        "measurement",
        _bytes("measurement", lambda b: b.replace(b"120.5", b'"120,5"')),
        ("bad_number", "value_as_number", "repaired", 1),
        touched=(0,),
        id="csv-decimal-comma",
    ),
    _case(
        "csv",
        "concept",
        _bytes("concept", lambda b: b.replace(b"Hypertension", b"Hypertension art\xe9rielle")),
        ("encoding", "", "repaired", 1),
        touched=(),
        id="csv-latin-1",
    ),
    _case(
        "csv",
        "concept",
        _bytes("concept", lambda b: b.replace(b"Hypertension", b'"Hyper\ntension"')),
        touched=(),
        id="csv-quoted-newline",
    ),
    _case(
        "csv",
        "concept",
        _bytes("concept", lambda b: b.replace(b"Hypertension", b"H" * 3_000_000)),
        touched=(),
        id="csv-line-over-2MiB",
    ),
    # parquet: types that are not what OMOP says
    _case(
        "parquet",
        CO,
        _column(CO, "person_id", pa.array(["1", "1", "2", "3"]).dictionary_encode()),
        id="pq-dictionary-ids",
    ),
    _case(
        "parquet",
        CO,
        _column(CO, "person_id", pa.array(["1", "abc", "2", "3"])),
        ("bad_id", "person_id", "dropped", 1),
        id="pq-text-id",
    ),
    _case(
        "parquet",
        CO,
        _column(CO, "person_id", pa.array([1.0, 1.5, 2.0, 3.0])),
        ("bad_id", "person_id", "dropped", 1),
        id="pq-float-id",
    ),
    _case(
        "parquet",
        CO,
        _column(CO, "person_id", pa.array([1.0, float("nan"), 2.0, 3.0])),
        ("bad_id", "person_id", "dropped", 1),
        id="pq-nan-id",
    ),
    _case(
        "parquet",
        CO,
        _column(CO, "person_id", pa.array([1, 2**63 + 5, 2, 3], pa.uint64())),
        ("bad_id", "person_id", "dropped", 1),
        id="pq-uint64-beyond-int64",
    ),
    _case(
        "parquet",
        CO,
        _column(CO, "person_id", pa.array([1, 10**30, 2, 3], pa.decimal128(38, 0))),
        ("bad_id", "person_id", "dropped", 1),
        id="pq-decimal-beyond-int64",
    ),
    _case(
        "parquet",
        CO,
        _column(
            CO,
            "condition_start_date",
            pa.array(["2010-01-01", "2012-02-30", "2015-05-05", "2018-01-01"]),
        ),
        ("bad_date", "condition_start_date", "dropped", 1),
        id="pq-impossible-date-text",
    ),
    _case(
        "parquet",
        CO,
        _column(
            CO,
            "condition_start_date",
            pa.array([D(2010, 1, 1), D(1600, 1, 1), D(2015, 5, 5), D(2018, 1, 1)]),
        ),
        ("bad_date", "condition_start_date", "dropped", 1),
        id="pq-date-before-1678",
    ),
    _case(
        "parquet",
        CO,
        _column(
            CO, "condition_start_datetime", pa.array([0, 2**62, None, None], pa.timestamp("us"))
        ),
        ("bad_date", "condition_start_datetime", "repaired", 1),
        touched=(0,),
        id="pq-datetime-year-146k",
    ),
    _case(
        "parquet",
        CO,
        _column(CO, "condition_concept_id", pa.array(["201826", "", "320128", "201826"])),
        ("missing_id", "condition_concept_id", "repaired", 1),
        id="pq-empty-string-concept",
    ),
    _case(
        "parquet",
        CO,
        _column(CO, "condition_concept_id", pa.array([201826, 777, 320128, 201826])),
        ("unknown_concept", "condition_concept_id", "kept", 1),
        id="pq-concept-not-in-concept",
    ),
    _case(
        "parquet",
        CO,
        _column(CO, "condition_start_date", pa.nulls(4)),
        ("missing_date", "condition_start_date", "dropped", 3),
        touched=(1, 2, 3),
        id="pq-null-typed-date",
    ),
    _case(
        "parquet",
        CO,
        _column(CO, "condition_concept_id", None),
        ("missing_column", "condition_concept_id", "dropped", 4),
        touched=(0, 1, 2, 3),
        id="pq-missing-required-column",
    ),
    _case(
        "parquet",
        "measurement",
        _column("measurement", "value_as_number", pa.array(["high", "130"])),
        ("bad_number", "value_as_number", "repaired", 1),
        touched=(0,),
        id="pq-text-in-number",
    ),
    # DuckDB: typed tables, links that point nowhere
    _case(
        "duckdb",
        CO,
        _sql(
            "ALTER TABLE omop.condition_occurrence ALTER person_id TYPE VARCHAR; UPDATE "
            "omop.condition_occurrence SET person_id = 'x' WHERE condition_occurrence_id = 101"
        ),
        ("bad_id", "person_id", "dropped", 1),
        id="db-text-id",
    ),
    _case(
        "duckdb",
        CO,
        _sql(
            "UPDATE omop.condition_occurrence SET visit_occurrence_id = 777 "
            "WHERE condition_occurrence_id = 101"
        ),
        ("dangling_visit", "visit_occurrence_id", "kept", 1),
        id="db-visit-pointing-nowhere",
    ),
    _case(
        "duckdb",
        "observation_period",
        _sql(
            "UPDATE omop.observation_period SET observation_period_end_date = DATE "
            "'1999-01-01' WHERE person_id = 3"
        ),
        ("end_before_start", "observation_period_end_date", "dropped", 1),
        touched=(),
        id="db-end-before-start",
    ),
    _case(
        "duckdb",
        CO,
        _sql("UPDATE omop.person SET year_of_birth = 2018, month_of_birth = 6 WHERE person_id = 3"),
        ("before_birth", "condition_start_date", "kept", 1),
        touched=(),
        id="db-event-before-birth",
    ),
]
_DOMAIN = {CO: "condition", "measurement": "measurement"}


@pytest.fixture(scope="module")
def clean_events(tmp_path_factory) -> dict[str, pd.DataFrame]:
    path = write_cdm(tmp_path_factory.mktemp("clean"), base_tables())
    return {
        d: load_omop(open_cdm(path, threads=1), mode="strict", domains=[d]).events
        for d in ("condition", "measurement")
    }


@pytest.mark.parametrize(("fmt", "table", "edit", "outcome", "touched"), CASES)
def test_malformed_case(tmp_path, clean_events, fmt, table, edit, outcome, touched):
    path = write_cdm(tmp_path / "cdm", base_tables(), fmt)
    edit(path)
    domain = _DOMAIN.get(table, "condition")
    table_file = path.name if fmt == "duckdb" else f"{table}.{fmt}"
    if outcome is None:  # read as written: strict accepts it, the events are the clean ones
        data = load_omop(open_cdm(path, threads=1), mode="strict", domains=[domain])
        pd.testing.assert_frame_equal(data.events, clean_events[domain])
        assert all(t["rows_dropped"] == 0 for t in map(data.report.totals, data.report.tables))
        return
    rule, column, action, rows = outcome
    with pytest.raises(OmopValidationError) as err:
        load_omop(open_cdm(path, threads=1), mode="strict", domains=[domain])
    e = err.value
    where = f"{table}.{column}" if column else table
    assert (e.table, e.column, e.rule) == (table, column, rule), str(e)
    assert type(e) is OmopValidationError and where in str(e) and repr(rule) in str(e)
    assert table_file in str(e) or rule == "missing_column", str(e)
    if rule != "missing_column":
        assert e.examples is not None and len(e.examples) >= 1  # example rows or lines
    data = load_omop(open_cdm(path, threads=1), domains=[domain, "drug"])
    report = data.report
    assert report.count(table, rule, action) == rows, report
    adds_up(report)
    t = report.totals(table)
    assert t["rows_dropped"] == (rows if action == "dropped" else 0)
    # every row the case did not touch loads unchanged
    want = clean_events[domain].drop(index=list(touched))
    merged = want.merge(data.events, how="left", indicator=True)
    assert (merged["_merge"] == "both").all(), merged


def test_header_only_file_is_an_empty_table(tmp_path, tables):
    path = write_cdm(tmp_path / "cdm", tables)
    _bytes(CO, lambda b: b.split(b"\n")[0] + b"\n")(path)
    data = load_omop(path, mode="strict")
    assert data.report.totals(CO)["rows_in"] == 0
    assert "condition" not in set(data.events["domain"]) and len(data.events) == 10


@pytest.mark.parametrize("table", [CO, "person"])
def test_empty_file_is_named_and_read_as_absent(tmp_path, tables, table):
    path = write_cdm(tmp_path / "cdm", tables)
    (path / f"{table}.csv").write_bytes(b"")
    with pytest.raises(OmopValidationError, match="empty_file") as err:
        load_omop(path, mode="strict")
    assert f"{table}.csv" in str(err.value) and err.value.table == table
    if table == "person":
        with pytest.raises(OmopValidationError, match="empty_file"):
            load_omop(path)  # no person table: nothing can load
        return
    data = load_omop(path)
    assert CO not in data.report.tables and len(data.events) == 10
    assert any("empty_file" in n or "empty" in n for n in data.report.notes)
    assert len(load_omop(path, mode="strict", allow=["empty_file"]).events) == 10


def test_long_quoted_and_latin_1_names_are_read_whole(tmp_path, tables):
    path = write_cdm(tmp_path / "cdm", tables)
    long = "H" * 3_000_000
    _bytes("concept", lambda b: b.replace(b"Hypertension", long.encode()))(path)
    _bytes("concept", lambda b: b.replace(b"Smoker", b'"Smo,\nker"'))(path)
    _bytes("concept", lambda b: b.replace(b"Celecoxib", b"C\xe9lecoxib"))(path)
    data = load_omop(path, allow=["encoding"], mode="strict")
    names = data.cdm.concept_names([320128, 4275495, 1127433])
    assert names == {320128: long, 4275495: "Smo,\nker", 1127433: "Célecoxib"}
    assert data.report.count("concept", "encoding", "repaired") == 1
    assert any("encoding latin-1" in n for n in data.report.notes)


@pytest.mark.parametrize("damage", ["truncated", "not-gzip"])
def test_damaged_gzip_is_named(tmp_path, tables, damage):
    path = write_cdm(tmp_path / "cdm", tables, "csv.gz")
    f = path / f"{CO}.csv.gz"
    f.write_bytes(f.read_bytes()[:60] if damage == "truncated" else b"plain text, not gzip\n")
    with pytest.raises(OmopValidationError, match="unreadable_file") as err:
        load_omop(path, mode="strict")
    assert f"{CO}.csv.gz" in str(err.value)
    data = load_omop(path)
    assert any(f"{CO}.csv.gz" in n and "unreadable" in n for n in data.report.notes)
    assert len(data.events) == 10  # every other table loads
    adds_up(data.report)


def test_duckdb_view_over_a_dropped_table_is_named(tmp_path, tables):
    path = write_cdm(tmp_path / "db", tables, "duckdb")
    _sql(
        "CREATE TABLE omop.tmp AS SELECT * FROM omop.drug_exposure; DROP TABLE "
        "omop.drug_exposure; CREATE VIEW omop.drug_exposure AS SELECT * FROM omop.tmp; "
        "DROP TABLE omop.tmp"
    )(path)
    with pytest.raises(OmopValidationError, match="unreadable_file") as err:
        load_omop(path, mode="strict")
    assert "drug_exposure" in str(err.value) and str(path) in str(err.value)
    data = load_omop(path)
    assert "drug" not in set(data.events["domain"]) and len(data.events) == 12


def test_zero_row_parquet_table(tmp_path, tables):
    path = write_cdm(tmp_path / "cdm", tables, "parquet")
    t = pq.read_table(path / f"{CO}.parquet")
    pq.write_table(t.slice(0, 0), path / f"{CO}.parquet")
    data = load_omop(path, mode="strict")
    assert data.report.totals(CO) == {
        "rows_in": 0,
        "rows_kept": 0,
        "rows_dropped": 0,
        "rows_repaired": 0,
        "rows_flagged": 0,
    }


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


# ----------------------------------------------------------------------------------------------
# No network attempt, at the socket level, whatever the input
# ----------------------------------------------------------------------------------------------


def test_opening_every_input_makes_no_network_attempt(tmp_path, tables, monkeypatch):
    from ehrseq.data.meds import read_meds, write_meds

    inputs = {fmt: write_cdm(tmp_path / fmt, tables, fmt) for fmt in ("csv", "parquet", "duckdb")}
    sqlite_path = tmp_path / "sqlite" / "cdm.db"
    sqlite_path.parent.mkdir()
    con = sqlite3.connect(sqlite_path)
    con.execute("CREATE TABLE person (person_id INTEGER)")
    con.commit()
    con.close()
    clean = load_omop(inputs["csv"])
    meds_root = write_meds(clean.events, clean.person, tmp_path / "meds")

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("ehrseq test: network attempt")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for path in inputs.values():
        data = load_omop(path)
        pd.testing.assert_frame_equal(data.events, clean.events)
    with pytest.raises(ValueError, match="SQLite database"):
        load_omop(sqlite_path)
    events, _, _, _ = read_meds(meds_root)
    assert len(events) == len(clean.events)
    assert attempts == []
