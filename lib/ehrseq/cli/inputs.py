"""The user's data, whatever its form: an OMOP CDM folder (CSV or parquet), a DuckDB file, or a
MEDS folder, read into the event table, the person table and the observation periods.

OMOP goes through :func:`ehrseq.data.omop.load_omop` (its :class:`LoadReport` is kept); MEDS
through :func:`ehrseq.data.meds.read_meds`. MEDS has no observation periods: each person is
taken as observed from their first to their last event (said in the report's notes), and it
has no concept hierarchy, so ``include_descendants`` is refused there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ehrseq.cli.cohort import CliError

__all__ = [
    "Input",
    "is_meds",
    "fingerprint",
    "read_events",
    "read_input",
    "validate_input",
    "descendants_of",
]


def is_meds(path: Path) -> bool:
    """A MEDS dataset: a folder with ``data/`` shards and usually ``metadata/``."""
    return path.is_dir() and (path / "data").is_dir() and any((path / "data").rglob("*.parquet"))


def fingerprint(path: str | Path) -> str:
    """A hash of every file's name, size and modification time under ``path`` (the cache key
    of the data: a changed file invalidates what was built from it, nothing is read)."""
    path = Path(path).resolve()
    h = hashlib.sha256(str(path).encode())
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        st = p.stat()
        h.update(
            f"{p.relative_to(path) if path.is_dir() else p.name}|{st.st_size}|{st.st_mtime_ns}".encode()
        )
    return h.hexdigest()[:16]


def _exists(path: Path) -> None:
    if not path.exists():
        raise CliError(
            f"input {path} does not exist (expected an OMOP folder, DuckDB file or MEDS folder)"
        )


@dataclass
class Input:
    """The data of one input, in the event contract.

    Attributes:
        kind: ``"omop"`` or ``"meds"``.
        events, person, observation_period: as :class:`ehrseq.data.omop.OmopData` holds them.
        report: the load report's long table (``table, column, reason, action, rows``).
        summary: the per-table totals (OMOP) or the MEDS read counts.
        notes: sentences about what the reader assumed or could not check.
    """

    kind: str
    events: pd.DataFrame
    person: pd.DataFrame
    observation_period: pd.DataFrame
    report: pd.DataFrame
    summary: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def read_input(
    path: str | Path, mode: str = "lenient", events_to: str | Path | None = None
) -> Input:
    """Read ``path`` (OMOP folder or DuckDB file, or MEDS folder).

    Args:
        path: the input.
        mode: ``"lenient"`` or ``"strict"`` (OMOP's validation).
        events_to: a parquet file for the event table; ``Input.events`` then has
            its columns and no row (read the rows a step needs with
            :func:`read_events`). An OMOP export's events never sit in pandas whole
            (``load_omop(events_to=...)``).

    Raises:
        CliError: a missing path, an unusable person table, or (strict) a broken rule.
    """
    path = Path(path).expanduser()
    _exists(path)
    if is_meds(path):
        data = _read_meds(path)
        if events_to is not None:
            data.events.to_parquet(events_to)
            data.events = data.events.iloc[:0]
        return data
    from ehrseq.data.omop import load_omop

    data = load_omop(path, mode=mode, events_to=events_to)
    report = data.report
    data.cdm.close()
    return Input(
        "omop",
        data.events,
        data.person,
        data.observation_period,
        report.to_frame(),
        report.summary().reset_index(),
        list(report.notes),
    )


def read_events(
    path: str | Path,
    *,
    concepts: Iterable[int] | None = None,
    before: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The rows of an event table written by :func:`read_input` (``events_to``) that
    a step needs, read by DuckDB (under its memory cap), in the file's order and the
    contract's dtypes.

    Args:
        path: the parquet file.
        concepts: keep the rows of these concept ids and every death (what
            :func:`~ehrseq.cli.cohort.build_cohort` reads of the events).
        before: ``person_id`` and ``prediction_time``, one row per person: keep
            these persons' rows up to their prediction time, their visit rows, and
            the visit rows of an id that several persons share (what
            :func:`~ehrseq.data.task.task_from_labels` reads of the events: the
            history, and the visits that resolve its visit ids as the whole table
            would).

    Raises:
        ValueError: neither or both of ``concepts`` and ``before``.
    """
    from ehrseq.data.events import EVENT_COLUMNS
    from ehrseq.data.omop.cdm import connect
    from ehrseq.data.omop.sql import literal

    if (concepts is None) == (before is None):
        raise ValueError("read_events: give concepts or before (one of them)")
    src = f"read_parquet({literal(str(Path(path).resolve()))}, file_row_number = true)"
    con = connect()
    try:
        if concepts is not None:
            ids = np.asarray(list(concepts), dtype=np.int64)
            con.register("_ehrseq_ids", pd.DataFrame({"concept_id": ids}))
            known = "concept_id IN (SELECT concept_id FROM _ehrseq_ids)"
            sql = f"SELECT * FROM {src} WHERE {known} OR domain = 'death'"
        else:
            pt = pd.DataFrame(
                {
                    "person_id": before["person_id"].to_numpy(np.int64),
                    "prediction_time": pd.to_datetime(before["prediction_time"]),
                }
            )
            con.register("_ehrseq_pt", pt)
            shared = f"""SELECT visit_occurrence_id FROM {src}
                WHERE domain = 'visit' AND visit_occurrence_id IS NOT NULL
                GROUP BY 1 HAVING count(DISTINCT person_id) > 1"""
            sql = f"""SELECT e.* FROM {src} e LEFT JOIN _ehrseq_pt p USING (person_id)
                WHERE (p.person_id IS NOT NULL
                       AND (e.time <= p.prediction_time OR e.domain = 'visit'))
                   OR (e.domain = 'visit' AND e.visit_occurrence_id IN ({shared}))"""
        events = con.execute(f"{sql} ORDER BY file_row_number").df()
    finally:
        con.close()
    events = events.drop(columns="file_row_number")
    types = {c: t for c, t in EVENT_COLUMNS.items() if c in events and c != "time"}
    events = events.astype(types)
    events["time"] = events["time"].astype("datetime64[ns]")
    return events.reset_index(drop=True)


def _read_meds(path: Path) -> Input:
    from ehrseq.data.meds import read_meds

    events, persons, _, counts = read_meds(path)
    span = events.groupby("person_id")["time"].agg(["min", "max"])
    periods = pd.DataFrame(
        {
            "person_id": span.index.to_numpy(),
            "observation_period_start_date": span["min"].dt.normalize().to_numpy(),
            "observation_period_end_date": span["max"].dt.normalize().to_numpy(),
        }
    )
    note = "MEDS has no observation periods: each person is observed from first to last event"
    summary = pd.DataFrame([counts])
    return Input(
        "meds",
        events,
        persons,
        periods,
        pd.DataFrame(),
        summary,
        [note],
    )


def validate_input(
    path: str | Path, mode: str = "lenient", allow: Iterable[str] = ()
) -> tuple[str, str]:
    """Validate without building the event table: ``(kind, report text)``.

    Raises:
        OmopValidationError: in strict mode, on the first broken rule.
        CliError: a missing path or a MEDS folder that is not MEDS.
    """
    path = Path(path).expanduser()
    _exists(path)
    if is_meds(path):
        from ehrseq.data.meds import read_meds, validate_meds

        try:
            validate_meds(path)
        except ValueError as err:
            if mode == "strict":
                raise
            return "meds", f"MEDS dataset {path}: does not follow the MEDS schema: {err}"
        _, _, _, counts = read_meds(path)
        lines = [f"MEDS dataset {path}: valid"] + [f"  {k}: {v:,}" for k, v in counts.items()]
        return "meds", "\n".join(lines)
    from ehrseq.data.omop import validate_omop

    return "omop", repr(validate_omop(path, mode=mode, allow=allow))


def descendants_of(path: str | Path) -> Callable[[list[int]], list[int]] | None:
    """A function ids -> ids with all their descendants, from the CDM's vocabulary, or
    ``None`` for MEDS (no vocabulary)."""
    path = Path(path).expanduser()
    if is_meds(path):
        return None
    from ehrseq.data.omop import open_cdm

    def expand(ids: list[int]) -> list[int]:
        with open_cdm(path) as cdm:
            if not (cdm.has("concept_ancestor") or cdm.has("concept_relationship")):
                raise CliError(
                    f"{path}: include_descendants needs concept_ancestor or concept_relationship"
                )
            found = cdm.descendants(ids)
        return sorted(set(found["descendant_concept_id"].tolist()) | set(ids))

    return expand
