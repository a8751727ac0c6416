"""Tests of the OMOP reader on gaps a real export shows (issue #16, item 2): concept
id 0 falls back to the source concept or the source value, tables present but not read
are listed, a vocabulary without 'Is a' rows warns, and ETL-named files are found."""

from __future__ import annotations

import copy
import warnings

import pandas as pd
import pytest
from test_omop import CO, _frame, add_row, base_tables, write_cdm

from ehrseq.data.meds import foreign_concept_ids
from ehrseq.data.omop import RULES, OmopValidationError, load_omop, open_cdm


@pytest.fixture
def tables() -> dict[str, pd.DataFrame]:
    return copy.deepcopy(base_tables())


# --------------------------------------------------------------------------------------
# (a) concept id 0: the source concept id, else the source value as a foreign code
# --------------------------------------------------------------------------------------


def _zero_concepts(tables: dict[str, pd.DataFrame]) -> None:
    """Three condition rows with concept 0: one with a source concept (45), one with
    only a source value ("I10"), one with neither."""
    tables[CO]["condition_source_value"] = pd.Series(["E11"] * 4, dtype=object)
    add_row(tables, CO, condition_occurrence_id=150, condition_concept_id=0)
    add_row(
        tables,
        CO,
        condition_occurrence_id=151,
        condition_concept_id=0,
        condition_source_concept_id=0,
        condition_source_value=" I10 ",
    )
    add_row(
        tables,
        CO,
        condition_occurrence_id=152,
        condition_concept_id=0,
        condition_source_concept_id=0,
        condition_source_value=None,
    )


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_concept_zero_falls_back_to_source_concept_then_value(tmp_path, tables, fmt):
    _zero_concepts(tables)
    data = load_omop(write_cdm(tmp_path / "cdm", tables, fmt), domains=["condition"])
    ev = data.events
    assert len(ev) == 4 + 3  # nothing dropped
    r = data.report
    assert r.count(CO, "concept_zero", "kept") == 3  # still flagged: no standard one
    assert r.count(CO, "source_concept", "repaired") == 1
    assert r.count(CO, "foreign_code", "repaired") == 1
    foreign = int(foreign_concept_ids(["CONDITION//I10"])[0])
    assert foreign < 0
    assert sorted(ev["concept_id"].tolist()) == sorted(
        [201826, 201826, 320128, 201826, 45, foreign, 0]
    )
    # the foreign code keeps its string in the code column; other rows have none
    assert "code" in ev.columns
    assert ev.loc[ev["concept_id"] == foreign, "code"].tolist() == ["CONDITION//I10"]
    assert ev.loc[ev["concept_id"] != foreign, "code"].isna().all()
    # the source concept column is left as recorded
    assert ev.loc[ev["concept_id"] == 45, "source_concept_id"].tolist() == [45]
    assert (ev["source_concept_id"] == 45).sum() == 4


def test_concept_fallback_is_configurable_and_strict_names_it(tmp_path, tables):
    _zero_concepts(tables)
    cdm = open_cdm(write_cdm(tmp_path / "cdm", tables))
    keep = {"source_concept": "keep", "foreign_code": "keep"}
    data = load_omop(cdm, domains=["condition"], actions=keep)
    assert (data.events["concept_id"] == 0).sum() == 3
    assert "code" not in data.events.columns
    assert data.report.count(CO, "source_concept", "kept") == 1
    assert data.report.count(CO, "foreign_code", "kept") == 1
    with pytest.raises(OmopValidationError, match="concept_zero"):
        load_omop(cdm, mode="strict", domains=["condition"])
    # tolerating concept_zero tolerates its fallbacks (they only fill in what 0 lacks)
    data = load_omop(cdm, mode="strict", domains=["condition"], allow=["concept_zero"])
    assert data.report.count(CO, "foreign_code", "repaired") == 1
    for rule in ("source_concept", "foreign_code"):
        assert rule in RULES and "repair" in RULES[rule].choices


def test_concept_fallback_on_a_table_without_source_columns(tmp_path, tables):
    table = "procedure_occurrence"
    add_row(tables, table, procedure_occurrence_id=350, procedure_concept_id=0)
    data = load_omop(write_cdm(tmp_path / "cdm", tables), domains=["procedure"])
    assert sorted(data.events["concept_id"].tolist()) == [0, 4163872]
    assert data.report.count(table, "concept_zero", "kept") == 1


# --------------------------------------------------------------------------------------
# (b) tables present in the export that the loader does not read
# --------------------------------------------------------------------------------------


def test_report_lists_tables_present_but_not_read(tmp_path, tables):
    tables["note"] = _frame(note_id=[1, 2, 3], person_id=[1, 1, 2], note_text=["a"] * 3)
    tables["specimen"] = _frame(specimen_id=[1, 2], person_id=[1, 2])
    tables["device_exposure"] = _frame(device_exposure_id=[7], person_id=[3])
    tables["payer_plan_period"] = _frame(payer_plan_period_id=[], person_id=[])
    data = load_omop(write_cdm(tmp_path / "cdm", tables))
    got = data.report.unread_tables
    want = {"device_exposure": 1, "note": 3, "payer_plan_period": 0, "specimen": 2}
    assert got == want
    # the vocabulary tables the concept helpers use are read, so not listed
    assert not {"concept", "concept_relationship", "concept_ancestor"} & set(got)
    text = repr(data.report)
    assert "present but not read" in text and "note (3 rows)" in text


@pytest.mark.shared_data
def test_shared_gibleed_lists_its_unread_tables():
    from test_omop import _shared_root

    path = _shared_root() / "eunomia_gibleed"
    if not (path / "person.parquet").exists():
        pytest.skip(f"shared OMOP sample {path} not present")
    report = load_omop(open_cdm(path, threads=2), domains=["condition"]).report
    got = report.unread_tables
    unread = ["note", "specimen", "device_exposure", "payer_plan_period"]
    unread.append("visit_detail")
    for table in unread:
        assert table in got, sorted(got)
    assert "condition_era" in got and got["condition_era"] > 0
    assert "person" not in got and "drug_exposure" not in got  # read by other domains


# --------------------------------------------------------------------------------------
# (c) concept_relationship without 'Is a' rows: the hierarchy is empty, said so
# --------------------------------------------------------------------------------------


def test_relationship_table_without_is_a_warns(tmp_path, tables):
    rel = tables["concept_relationship"]
    tables["concept_relationship"] = rel[rel["relationship_id"] == "Maps to"]
    data = load_omop(write_cdm(tmp_path / "cdm", tables))
    assert any("'Is a'" in n for n in data.report.notes), data.report.notes
    with pytest.warns(UserWarning, match="no 'Is a' rows"):
        got = data.cdm.descendants([4000], include_self=False)
    assert got.empty and data.cdm.ancestor_source == "none"
    # with 'Is a' rows: no warning
    cdm = open_cdm(write_cdm(tmp_path / "ok", base_tables()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(cdm.descendants([4000], include_self=False)) == 3


# --------------------------------------------------------------------------------------
# (d) file names with an ETL prefix or suffix
# --------------------------------------------------------------------------------------


def test_etl_named_files_are_found(tmp_path, tables):
    root = tmp_path / "cdm"
    root.mkdir()
    names = {
        "person": "cdm_person.csv",
        "observation_period": "OBSERVATION_PERIOD.csv",
        "concept": "2b_concept.csv",
        "concept_relationship": "omop.concept_relationship.csv",
        CO: "omop_condition_occurrence.csv.gz",
        "drug_exposure": "drug_exposure_000.parquet",
        "measurement": "synpuf-cdm-measurement-v5.csv",
    }
    for name, df in tables.items():
        file = names.get(name, f"{name}.csv")
        if file.endswith(".parquet"):
            df.to_parquet(root / file, index=False)
        else:
            df.to_csv(root / file, index=False)
    cdm = open_cdm(root)
    for name in names:
        assert cdm.has(name), (name, sorted(cdm.tables))
    data = load_omop(cdm, mode="strict")
    assert len(data.events) == 14
    assert "cdm_person.csv" in cdm.tables["person"]


def test_numbered_shards_of_one_table_are_read_together(tmp_path, tables):
    root = write_cdm(tmp_path / "cdm", tables, "parquet")
    co = pd.read_parquet(root / f"{CO}.parquet")
    (root / f"{CO}.parquet").unlink()
    co.iloc[:2].to_parquet(root / f"{CO}_000.parquet", index=False)
    co.iloc[2:].to_parquet(root / f"{CO}_001.parquet", index=False)
    cdm = open_cdm(root)
    assert cdm.count(CO) == 4
    assert len(load_omop(cdm, mode="strict").events) == 14


def test_two_files_claiming_one_table_name_both(tmp_path, tables):
    root = write_cdm(tmp_path / "cdm", tables)
    tables["person"].to_csv(root / "cdm_person.csv", index=False)
    with pytest.raises(ValueError, match="two sources for table 'person'") as info:
        open_cdm(root)
    assert "person.csv" in str(info.value) and "cdm_person.csv" in str(info.value)


@pytest.mark.shared_data
def test_shared_synpuf_concept_zero_falls_back():
    from test_omop import _shared_root

    path = _shared_root() / "synpuf_50"
    if not (path / "person.parquet").exists():
        pytest.skip(f"shared OMOP sample {path} not present")
    data = load_omop(open_cdm(path, threads=2))
    r, ev = data.report, data.events
    # every concept-0 row of SynPUF has a source concept or a source value to use
    for table in r.tables:
        zero = r.count(table, "concept_zero", "kept")
        fell = r.count(table, "source_concept", "repaired") + r.count(
            table, "foreign_code", "repaired"
        )
        assert zero == fell, table
    assert r.count("procedure_occurrence", "source_concept", "repaired") > 100
    # SynPUF's visit_source_value is a claim id: kept, counted, and said to be one
    n = r.count("visit_occurrence", "foreign_code", "repaired")
    assert n >= 1600 and (ev["concept_id"] < 0).sum() == n
    assert any("look like identifiers" in note for note in r.notes)


def test_omop_foreign_codes_round_trip_through_meds(tmp_path, tables):
    """A foreign code from OMOP keeps its code, stand-in id and domain through MEDS."""
    from ehrseq.data.meds import read_meds, write_meds

    _zero_concepts(tables)
    add_row(
        tables,
        "drug_exposure",
        drug_exposure_id=250,
        drug_concept_id=0,
        drug_source_concept_id=0,
        drug_source_value="ATC:M01AH01",
    )
    tables["drug_exposure"]["drug_source_value"] = tables["drug_exposure"][
        "drug_source_value"
    ].astype(object)
    data = load_omop(write_cdm(tmp_path / "cdm", tables))
    write_meds(data.events, data.person, tmp_path / "meds")
    events, *_ = read_meds(tmp_path / "meds")
    cols = ["code", "concept_id", "domain"]
    want = data.events.loc[data.events["code"].notna(), cols]
    got = events.loc[events["concept_id"] < 0, cols]
    assert sorted(map(tuple, got.values)) == sorted(map(tuple, want.values))
    assert set(want["domain"]) == {"condition", "drug"}
