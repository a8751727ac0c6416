"""``ehrseq run`` builds the cohort before it reads the history: the event table goes
to parquet through DuckDB (``load_omop(events_to=...)``), the cohort reads the concept
sets' rows and the deaths, the task the cohort's history. On a small export, clean and
with foreign codes and a visit id two persons share, this gives exactly the cohort and
the task of the whole event table in memory."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ehrseq.cli.cohort import CohortSpec, build_cohort
from ehrseq.cli.inputs import descendants_of, read_events, read_input
from ehrseq.cli.pipeline import PROFILES, _cohort, _history
from ehrseq.cli.steps import build_task
from ehrseq.data.omop import load_omop

pytestmark = pytest.mark.usefixtures("one_thread")

NSAIDS = (2000003101, 2000003103)
HEART_FAILURE = 2000001047
COHORT = f"""
name = "nsaid_hf"
washout_days = 180
horizon_years = 3
[index]
concepts = {list(NSAIDS)}
include_descendants = true
[outcome]
concepts = [{HEART_FAILURE}]
include_descendants = true
{{codes}}
"""


@pytest.fixture(scope="module")
def omop(tmp_path_factory) -> Path:
    from ehrseq.data.synthetic import SyntheticConfig, generate_cohort

    folder = tmp_path_factory.mktemp("omop")
    generate_cohort(SyntheticConfig(n_patients=400, seed=3)).write_omop(folder)
    return folder


def _spec(folder: Path, codes: list[str] = ()) -> CohortSpec:
    path = folder / "cohort.toml"
    path.write_text(COHORT.format(codes=f"codes = {list(codes)!r}" if codes else ""))
    return CohortSpec.from_toml(path)


@pytest.fixture(scope="module")
def messy(omop, tmp_path_factory) -> tuple[Path, list[str]]:
    """The export with foreign codes (one condition row in four, heart failure among
    them, loses its concept ids and keeps its source value) and one visit id that a
    cohort person shares with an earlier person (whose row owns it, so the cohort
    person's rows that name it fall back to their day)."""
    folder = tmp_path_factory.mktemp("messy")
    for f in omop.iterdir():
        shutil.copy(f, folder / f.name)
    cond = pd.read_parquet(folder / "condition_occurrence.parquet")
    hf = cond["condition_concept_id"].between(2000001048, 2000001051)  # HF's children
    foreign = (np.arange(len(cond)) % 4 == 0) | (hf & (np.arange(len(cond)) % 2 == 0))
    cond.loc[foreign, ["condition_concept_id", "condition_source_concept_id"]] = 0
    values = cond.loc[foreign & hf, "condition_source_value"]
    codes = sorted({f"CONDITION//{v}" for v in values})
    assert codes
    cond.to_parquet(folder / "condition_occurrence.parquet", index=False)

    data = read_input(omop)
    labels = build_cohort(
        _spec(folder),
        data.events,
        data.person,
        data.observation_period,
        descendants_of(omop),
    ).labels
    cohort = np.sort(labels["subject_id"].to_numpy())
    outside = np.setdiff1d(data.person["person_id"].to_numpy(), cohort)
    first = outside.min()
    late = cohort[cohort > first][0]  # a cohort person after a person outside it
    visits = pd.read_parquet(folder / "visit_occurrence.parquet")
    ids = visits.set_index("person_id")["visit_occurrence_id"]
    own, other = ids.loc[[late]].iloc[0], ids.loc[[first]].iloc[0]
    visits.loc[visits["visit_occurrence_id"] == own, "visit_occurrence_id"] = other
    visits.to_parquet(folder / "visit_occurrence.parquet", index=False)
    for table in ("condition_occurrence", "drug_exposure", "procedure_occurrence"):
        t = pd.read_parquet(folder / f"{table}.parquet")
        t.loc[t["visit_occurrence_id"] == own, "visit_occurrence_id"] = other
        t.to_parquet(folder / f"{table}.parquet", index=False)
    return folder, codes


def test_events_written_by_duckdb_read_back_as_the_frame(messy, tmp_path):
    folder, _ = messy
    whole = load_omop(folder)
    path = tmp_path / "events.parquet"
    written = load_omop(folder, events_to=path)
    assert "code" in whole.events and whole.events["code"].notna().any()
    assert len(written.events) == 0 and written.events_path == path
    assert list(written.events.columns) == list(whole.events.columns)
    assert "events in" in repr(written)
    pd.testing.assert_frame_equal(pd.read_parquet(path), whole.events)
    pd.testing.assert_frame_equal(written.report.to_frame(), whole.report.to_frame())
    assert list(written.report.notes) == list(whole.report.notes)
    pd.testing.assert_frame_equal(written.person, whole.person)
    pd.testing.assert_frame_equal(written.observation_period, whole.observation_period)
    # batches of a few rows: the same file
    small = tmp_path / "small.parquet"
    from ehrseq.data.omop import open_cdm
    from ehrseq.data.omop.loader import _Loader

    loader = _Loader(open_cdm(folder), "lenient", None, None, ())
    write, chunks, runs = loader._write_events, loader._person_chunks, []
    loader._write_events = lambda p: write(p, batch_rows=997, chunk_rows=5000)
    loader._person_chunks = lambda rows: runs.append(chunks(rows)) or runs[-1]
    loader.run(build=True, events_to=small)
    assert len(runs[0]) > 10  # runs of persons, each sorted alone
    pd.testing.assert_frame_equal(pd.read_parquet(small), whole.events)


@pytest.mark.parametrize("case", ["clean", "messy"])
def test_cohort_first_gives_the_whole_tables_task(case, omop, messy, tmp_path):
    folder, codes = (omop, []) if case == "clean" else messy
    spec = _spec(tmp_path, codes)
    cfg = PROFILES["smoke"]

    whole = read_input(folder)  # the old path: every event in pandas
    old = build_cohort(
        spec,
        whole.events,
        whole.person,
        whole.observation_period,
        descendants_of(folder),
    )
    old_task = build_task(whole, old.labels, cfg, spec.horizon_days)

    path = tmp_path / "events.parquet"
    data = read_input(folder, events_to=path)
    assert len(data.events) == 0
    new = _cohort(folder, spec, data, path)
    pd.testing.assert_frame_equal(new.labels, old.labels)
    pd.testing.assert_frame_equal(new.attrition, old.attrition)
    assert (new.index_ids, new.outcome_ids) == (old.index_ids, old.outcome_ids)

    history = _history(path, data, new.labels)
    assert 0 < len(history.events) < len(whole.events)
    task = build_task(history, new.labels, cfg, spec.horizon_days)
    pd.testing.assert_frame_equal(task.sequences.frame, old_task.sequences.frame)
    pd.testing.assert_frame_equal(task.labels, old_task.labels)
    assert task.vocab.to_dict() == old_task.vocab.to_dict()
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(task.split[name], old_task.split[name])
    enc, old_enc = task.encoding, old_task.encoding
    np.testing.assert_array_equal(enc.person_ids, old_enc.person_ids)
    np.testing.assert_array_equal(enc.offsets, old_enc.offsets)
    assert enc.arrays.keys() == old_enc.arrays.keys()
    for key, values in old_enc.arrays.items():
        np.testing.assert_array_equal(enc.arrays[key], values)
    np.testing.assert_array_equal(task.bin_index, old_task.bin_index)
    np.testing.assert_array_equal(task.event, old_task.event)
    assert task.dropped == old_task.dropped
    if case == "messy":  # the shared visit id: the person's rows fall back to their day
        report = old_task.sequences.report
        assert report["rows_visit_id_unresolved"] > 0
        assert (
            task.sequences.report["rows_visit_id_unresolved"]
            == (report["rows_visit_id_unresolved"])
        )


def test_read_events_keeps_the_file_order_and_asks_for_one_filter(omop, tmp_path):
    path = tmp_path / "events.parquet"
    read_input(omop, events_to=path)
    whole = pd.read_parquet(path)
    got = read_events(path, concepts=[HEART_FAILURE + 1, HEART_FAILURE + 2])
    want = whole[whole["concept_id"].isin([HEART_FAILURE + 1, HEART_FAILURE + 2])]
    want = pd.concat([want, whole[whole["domain"] == "death"]]).sort_index()
    pd.testing.assert_frame_equal(got, want.reset_index(drop=True))
    with pytest.raises(ValueError, match="concepts or before"):
        read_events(path)
