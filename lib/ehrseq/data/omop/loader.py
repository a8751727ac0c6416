"""The loader: stage each CDM table in DuckDB, apply the rules, build the event table.

:func:`load_omop` validates the reference tables first (concept, person, observation_period),
then death and visits (the ``after_death`` and ``dangling_visit`` rules check against them),
then the other event tables, and assembles the event table of :mod:`ehrseq.data.events`, the
person table and the observation periods. :func:`validate_omop` runs the same rules and
returns the report only. Each table is one SQL ``SELECT`` that parses its columns and joins
what the rules need, and one list of :class:`~ehrseq.data.omop.rules.Check` applied by
:func:`~ehrseq.data.omop.rules.apply_checks`; the rules are listed in :mod:`ehrseq.data.omop`.
"""

from __future__ import annotations

import datetime as _dt
import time as _time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from ehrseq.data.events import DOMAINS, EVENT_COLUMNS, check_events
from ehrseq.data.meds import foreign_concept_ids
from ehrseq.data.omop.cdm import (
    DEATH_CONCEPT_ID,
    EVENT_SPECS,
    Cdm,
    EventSpec,
    _first_line,
    open_cdm,
)
from ehrseq.data.omop.rules import (
    RULES,
    Check,
    LoadReport,
    OmopValidationError,
    apply_checks,
    resolve_actions,
    resolve_allow,
)
from ehrseq.data.omop.sql import (
    _P,
    _as_date,
    _as_datetime,
    _as_float,
    _as_int,
    _blank,
    _in_range,
    _lit,
    _q,
    _zoned,
)

__all__ = ["OmopData", "load_omop", "validate_omop"]

MIN_BIRTH_YEAR = 1850  # rule implausible_birth: born before this year or after this one
_DOMAIN_RANK = {d: i for i, d in enumerate(EVENT_SPECS)}  # tie order at equal times
# death and visits are staged first (other tables check against them)
_STAGE_ORDER = ["death", "visit"] + [d for d in EVENT_SPECS if d not in ("death", "visit")]
_REFERENCE_TABLES = ("concepts", "persons", "ops", "deaths", "visits")  # _ehrseq_<name>
# tables a load reads (the rest are listed as present but not read)
_READ_TABLES = {
    "concept",
    "person",
    "observation_period",
    "concept_relationship",
    "concept_ancestor",
    "cdm_source",
    *(spec.table for spec in EVENT_SPECS.values()),
}
# the event table's columns in a parquet file (load_omop(events_to=...))
_ARROW_TYPES = {
    "person_id": "int64",
    "time": "timestamp[ns]",
    "concept_id": "int64",
    "source_concept_id": "int64",
    "domain": "string",
    "value_as_number": "double",
    "unit_concept_id": "int64",
    "visit_occurrence_id": "int64",
}
_RAW, _RN = f"{_P}raw", f"{_P}rn"  # a table as read once, and its repeated rows' ranks
# concept 0: the source concept stands in (rule source_concept), else the source value
_SOURCE = "coalesce(_concept_id, 0) = 0 AND coalesce(_source_id, 0) <> 0"
_FOREIGN = " AND ".join(
    ["coalesce(_concept_id, 0) = 0", "coalesce(_source_id, 0) = 0", "_code IS NOT NULL"]
)


@dataclass
class OmopData:
    """What :func:`load_omop` returns.

    Attributes:
        events: the event table of :mod:`ehrseq.data.events`, sorted by person and time.
        person: ``person_id`` (int64), ``birth_datetime`` (datetime64[ns]),
            ``gender_concept_id`` (int64), one row per person.
        observation_period: ``person_id``, ``observation_period_start_date``,
            ``observation_period_end_date`` (datetime64[ns]).
        report: the :class:`LoadReport`.
        cdm: the open :class:`Cdm`, for concept look-ups.
        events_path: where the event table was written (``load_omop(events_to=...)``);
            ``events`` then has its columns and no row.
    """

    events: pd.DataFrame
    person: pd.DataFrame
    observation_period: pd.DataFrame
    report: LoadReport
    cdm: Cdm
    events_path: Path | None = None

    def __repr__(self) -> str:
        # the source on a line of its own, so that the counts fit a narrow page
        events = f"{len(self.events):,} events"
        if self.events_path is not None:
            events = f"events in {self.events_path}"
        return (
            f"OmopData({self.cdm.source!r}:\n"
            f"         {len(self.person):,} persons, {events}, "
            f"{len(self.observation_period):,} observation periods)"
        )


@dataclass(frozen=True)
class _Links:
    """SQL that ties one event table to the reference tables staged before it.

    Each piece is a constant (``"FALSE"``, ``"TRUE"`` or ``""``) when its reference table is
    absent, and then its rule is not checked.
    """

    known_visit: str  # the row's visit is in visit_occurrence (rule dangling_visit)
    outside: str  # the day is in none of the person's periods (rule outside_observation)
    death_join: str  # joins the person's death day
    after: str  # the day is after the death day (rule after_death)
    concept_known: str  # the concept is in CONCEPT (rule unknown_concept)


class _Loader:
    """Stages each table in DuckDB, applies the rules, counts, and builds the outputs."""

    def __init__(
        self,
        cdm: Cdm,
        mode: str,
        domains: Sequence[str] | None,
        actions: Mapping[str, str] | None,
        allow: Iterable[str],
    ) -> None:
        if mode not in ("strict", "lenient"):
            raise ValueError(f"mode must be 'strict' or 'lenient', got {mode!r}")
        self.cdm, self.con, self.mode = cdm, cdm.con, mode
        self.allow = resolve_allow(allow)
        if "concept_zero" in self.allow:  # its fallbacks only fill in what 0 lacks
            self.allow |= {"source_concept", "foreign_code"}
        self.actions = resolve_actions(actions)
        self.explicit_domains = domains is not None
        self.domains = list(DOMAINS if domains is None else domains)
        bad = [d for d in self.domains if d not in EVENT_SPECS]
        if bad:
            raise ValueError(f"domains: unknown {bad}; choose from {DOMAINS}")
        self.report = LoadReport(source=cdm.source, mode=mode, cdm_version=cdm.cdm_version)
        self.staged: dict[str, str] = {}  # domain -> its kept rows' table (_output_sql)
        self.build = True  # False: validate only (no table of kept rows)
        self.temp: list[str] = []  # every DuckDB table this run creates, dropped at the end
        self.kept: dict[str, int] = {}
        self.has_concepts = self.has_op = self.has_death = self.has_visits = False
        self.visit_checked: dict[str, bool] = {}  # domain -> rule dangling_visit applied

    # -- handling what breaks a rule ---------------------------------------------------------------
    def _fail(self, table: str, column: str, rule: str, detail: str) -> None:
        """Strict: raise. Lenient: write a note."""
        if self.mode == "strict" and rule not in self.allow:
            raise OmopValidationError(table, column, rule, detail)
        self.report.notes.append(f"{table}: {detail}")

    def _apply(self, table: str, stage: str, select: str, checks: list[Check]) -> str:
        """:func:`~ehrseq.data.omop.rules.apply_checks` with this run's mode and report, after
        the table's structural issues (:attr:`Cdm.issues`: strict raises on them, lenient
        applies them as the first checks) and before counting its unparsable CSV lines."""
        issues = self.cdm.issues.get(table, [])
        flags = self.cdm.flag_columns(table)
        if flags:  # the hidden flag columns (duplicate_column, ...), joined on the row number
            cols = ", ".join(_q(c) for c in flags)
            select = (
                f"SELECT s.*, {cols} FROM ({select}) s "
                f"JOIN (SELECT _row, {cols} FROM {_RAW}) f USING (_row)"
            )
        for issue in issues:
            if self.mode == "strict" and issue.rule not in self.allow:
                self._raise_issue(table, issue, select, checks[0].show if checks else ())
        checks = [Check(i.rule, i.column, i.action, i.cond) for i in issues] + checks
        rejects = self.cdm.rejects.get(table)
        try:
            out = apply_checks(
                self.con,
                self.report,
                table,
                stage,
                select,
                checks,
                mode=self.mode,
                allow=self.allow,
                origin=self.cdm.tables.get(table, ""),
            )
        except OmopValidationError:
            if rejects:  # strict: a line that could not be read comes first
                self._count_rejects(table, rejects, counted=False)
            raise
        finally:
            for name in (_RAW, _RN):
                self.con.execute(f"DROP TABLE IF EXISTS {name}")
        if rejects:
            self._count_rejects(table, rejects)
        for issue in issues:
            self.report.add_unread(table, issue.column, issue.rule, issue.extra_rows)
        return out

    def _read_once(
        self,
        table: str,
        types: dict[str, str],
        key: str | None = None,
        columns: Sequence[str] | None = None,
        repeats: bool = True,
    ) -> str:
        """Read ``table`` once into the temp table ``_ehrseq_raw`` and return SQL over it,
        so that a CSV file is parsed (and its ragged lines stored) by one scan only.

        The table holds ``_row`` (the 1-based row number as read), ``columns`` (default:
        every column) and the view's hidden flag columns. With ``repeats``, the SQL adds the
        row counters of the repeat rules: ``_rn_all`` (rule duplicate_row: the row's rank
        among the rows equal in every column) and, with an own id column ``key``, ``_rn_id``
        (duplicate_id: rank among the rows with that id) and ``_rn_event`` (duplicate_event:
        rank among the rows equal in every other column), each 1 for a row without an
        earlier repeat. They are exact, and cheap: a hash of each group's columns finds the
        rows that might repeat (an aggregate, no sort), and only those rows are ranked by
        window functions over their real values (``_ehrseq_rn``); a hash collision only adds
        a row to that small set.
        """
        rejects = self.cdm.rejects.get(table)
        for name in (rejects, f"{rejects}_scan") if rejects else ():
            try:  # lines stored by earlier scans (a count) are not this stage's
                self.con.execute(f"DELETE FROM {name}")
            except duckdb.Error:
                pass  # not created until the first scan
        every = ", ".join(_q(c) for c in types)
        rest = ", ".join(_q(c) for c in types if c != key) or "1"
        hidden = [_q(c) for c in self.cdm.flag_columns(table)]
        cols = [_q(c) for c in (types if columns is None else columns)] + hidden
        hashes = [f"hash({every}) AS _h_all"] if repeats else []
        if repeats and key:
            hashes.append(f"hash({rest}) AS _h_event")
        self.temp += [_RAW, _RN]
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {_RAW} AS SELECT row_number() OVER () AS _row, "
            f"{', '.join(cols + hashes)} FROM {_q(table)}"
        )
        if not repeats:
            return f"SELECT * FROM {_RAW}"

        def maybe(expr: str) -> str:  # rows whose group of equal values has several rows
            return (
                f"{expr} IN (SELECT {expr} FROM {_RAW} WHERE {expr} IS NOT NULL "
                f"GROUP BY 1 HAVING count(*) > 1)"
            )

        wanted = [maybe("_h_all")]
        ranks = [f"row_number() OVER (PARTITION BY {every} ORDER BY _row) AS _rn_all"]
        if key:
            k = _q(key)
            wanted += [maybe(k), maybe("_h_event")]
            ranks += [
                f"CASE WHEN {k} IS NULL THEN 1 ELSE row_number() OVER "
                f"(PARTITION BY {k} ORDER BY _row) END AS _rn_id",
                f"row_number() OVER (PARTITION BY {rest} ORDER BY _row) AS _rn_event",
            ]
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {_RN} AS SELECT _row, {', '.join(ranks)} "
            f"FROM {_RAW} WHERE {' OR '.join(wanted)}"
        )
        counters = ["coalesce(n._rn_all, 1) AS _rn_all"]
        counters += (
            ["coalesce(n._rn_id, 1) AS _rn_id", "coalesce(n._rn_event, 1) AS _rn_event"]
            if key
            else ["1 AS _rn_id", "1 AS _rn_event"]
        )
        joined = f"{_RAW} r LEFT JOIN {_RN} n USING (_row)"
        return f"SELECT r.*, {', '.join(counters)} FROM {joined}"

    def _raise_issue(self, table: str, issue, select: str, show: tuple[str, ...]) -> None:
        """Strict mode: raise on a structural issue, with the number of rows it touches and
        three of them (``_row`` and ``show``), or the file's lines when no row shows it.

        Raises:
            OmopValidationError: always.
        """
        examples, rows = None, 0
        if issue.lines:
            examples = pd.DataFrame(list(issue.lines), columns=["file", "line", "text"])
        else:
            cols = ", ".join(_q(c) for c in dict.fromkeys(("_row", *show)))
            cond = f"coalesce(({issue.cond}), FALSE)"
            rows = int(
                self.con.execute(f"SELECT count(*) FROM ({select}) WHERE {cond}").fetchall()[0][0]
            )
            examples = self.con.execute(
                f"SELECT {cols} FROM ({select}) WHERE {cond} ORDER BY _row LIMIT 3"
            ).df()
        detail = _way(issue.detail, issue.rule)
        if rows:
            detail = f"{issue.detail}; {rows:,} row(s)"
        raise OmopValidationError(table, issue.column, issue.rule, detail, rows, examples)

    def _empty(self, table: str) -> bool:
        """A table whose file is empty (rule empty_file): strict raises, lenient notes; the
        table then reads as absent. Returns whether it was."""
        if table not in self.cdm.empty:
            return False
        self._fail(table, "", "empty_file", _way(self.cdm.empty[table], "empty_file"))
        return True

    def _count_rejects(self, table: str, rejects: str, counted: bool = True) -> None:
        """The CSV lines DuckDB could not parse while staging ``table`` (kept in ``rejects``):
        strict raises naming the file, line and reason; lenient counts them as dropped under
        ``malformed_line``."""
        try:
            got = self.con.execute(
                f"""SELECT s.file_path, r.line, r.error_type, r.csv_line
                FROM {rejects} r JOIN {rejects}_scan s USING (scan_id, file_id)
                QUALIFY row_number() OVER (PARTITION BY s.file_path, r.line ORDER BY r.scan_id) = 1
                ORDER BY s.file_path, r.line"""
            ).fetchall()
        except duckdb.Error:
            return  # no rejects table: nothing was rejected
        if not got:
            return
        rule = "malformed_line"
        if self.mode == "strict" and rule not in self.allow:
            examples = pd.DataFrame(got[:3], columns=["file", "line", "error", "text"])
            raise OmopValidationError(
                table,
                "",
                rule,
                f"{RULES[rule].text}; {len(got):,} line(s) of {got[0][0]}",
                rows=len(got),
                examples=examples,
            )
        if not counted:
            return
        self.report.add_unread(table, "", rule, len(got))
        self.report.notes.append(
            f"{table}: {len(got):,} CSV line(s) that do not fit the dialect dropped, e.g. "
            f"{got[0][0]} line {got[0][1]} ({got[0][2]}): {got[0][3][:80]!r}"
        )

    def _unreadable(self, table: str, err: Exception) -> None:
        """A table DuckDB cannot read: raise for person or in strict mode (without
        ``allow=["unreadable_file"]``), else note it with the file and reason and go on
        without it."""
        if isinstance(err, OmopValidationError):
            if err.rule != "unreadable_file":
                raise err
            detail = err.detail
        else:
            detail = (
                f"{self.cdm.tables.get(table, table)}: {type(err).__name__}: "
                f"{_first_line(err)}. Fix or re-export the file"
            )
        strict = self.mode == "strict" and "unreadable_file" not in self.allow
        if table == "person" or strict:
            raise OmopValidationError(table, "", "unreadable_file", detail) from err
        self.report.notes.append(
            f"{table}: unreadable, skipped (its rows are not counted): {detail}"
        )

    def _guard(self, table: str, stage, *args) -> None:
        """Run one stage; an unreadable table is handled by :meth:`_unreadable`."""
        try:
            stage(*args)
        except (duckdb.Error, OmopValidationError) as err:
            if isinstance(err, OmopValidationError) and err.rule != "unreadable_file":
                raise
            self._unreadable(table, err)

    def _missing_columns(self, table: str, missing: list[str], fatal: bool) -> bool:
        """Handle absent required columns; return True when the table cannot be used.

        Raises (``fatal``, or strict mode without ``allow=["missing_column"]``); otherwise
        counts every row of the table as dropped under ``missing_column`` and writes a note.
        """
        if not missing:
            return False
        types = self.cdm.columns(table)
        detail = f"required column(s) {missing} absent; present: {list(types)}"
        column, rule, extra, examples = missing[0], "missing_column", 0, None
        for issue in self.cdm.issues.get(table, []):  # no header row: that is the cause
            if issue.action == "drop" and issue.cond == "TRUE":
                column, rule, extra, detail = "", issue.rule, issue.extra_rows, issue.detail
                if issue.lines:
                    examples = pd.DataFrame(list(issue.lines), columns=["file", "line", "text"])
        if fatal or (self.mode == "strict" and rule not in self.allow):
            raise OmopValidationError(table, column, rule, _way(detail, rule), examples=examples)
        n = self.cdm.count(table)
        self.report.add_table(table, n + extra, {(column, rule): n + extra}, {}, {}, 0, 0)
        self.report.notes.append(f"{table}: {detail}; all {n + extra:,} rows dropped")
        return True

    # -- reference tables ------------------------------------------------------------------------
    def _stage_concept(self) -> None:
        """Check CONCEPT's ids (missing, not integer-like, repeated: dropped) and keep the
        usable ids in ``_ehrseq_concepts``. Without the table or a usable row, a note says
        that rule unknown_concept is not checked."""
        cdm = self.cdm
        if not cdm.has("concept"):
            self._empty("concept")
            self.report.notes.append("concept: table absent; rule unknown_concept not checked")
            return
        types = cdm.columns("concept")
        if self._missing_columns("concept", [c for c in ["concept_id"] if c not in types], False):
            return
        stage = f"{_P}concept"
        self.temp.append(stage)
        cid = _as_int("concept_id", types["concept_id"])
        src = self._read_once("concept", types, columns=["concept_id"], repeats=False)
        select = f"""
            SELECT *, CASE WHEN _cid IS NULL THEN 1
                      ELSE row_number() OVER (PARTITION BY _cid ORDER BY _row) END AS _rn_key
            FROM (SELECT _row, concept_id, {cid} AS _cid,
                         {_blank("concept_id", types["concept_id"])} AS _b FROM ({src}))"""
        checked = self._apply(
            "concept",
            stage,
            select,
            [
                Check("missing_id", "concept_id", "drop", "_b", ("concept_id",)),
                Check("bad_id", "concept_id", "drop", "_cid IS NULL", ("concept_id",)),
                Check("duplicate_key", "concept_id", "drop", "_rn_key > 1", ("concept_id",)),
            ],
        )
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {_P}concepts AS "
            f"SELECT _cid AS concept_id FROM {checked} WHERE _drop IS NULL"
        )
        self.con.execute(f"DROP TABLE {checked}")
        self.has_concepts = self.report.totals("concept")["rows_kept"] > 0
        if not self.has_concepts:
            self.report.notes.append("concept: no usable rows; rule unknown_concept not checked")

    def _stage_person(self) -> None:
        """Check the person table (see :func:`_person_checks`) and keep ``person_id``, the birth
        time and the gender (0 when absent or unusable) of each kept person in
        ``_ehrseq_persons``.

        Raises:
            OmopValidationError: in either mode, if the table, ``person_id``, or both
                ``year_of_birth`` and ``birth_datetime`` are absent.
        """
        cdm = self.cdm
        if "person" in cdm.empty:
            raise OmopValidationError(
                "person", "", "empty_file", f"{cdm.empty['person']}; the person table is required"
            )
        if not cdm.has("person"):
            raise OmopValidationError(
                "person",
                "",
                "missing_table",
                f"the person table is required; present: {sorted(cdm.tables)}",
            )
        types = cdm.columns("person")
        missing = [c for c in ["person_id"] if c not in types]
        if "year_of_birth" not in types and "birth_datetime" not in types:
            missing.append("year_of_birth")
        self._missing_columns("person", missing, fatal=True)
        select = _person_select(types, self._read_once("person", types))
        if "gender_concept_id" not in types:
            self.report.notes.append("person: no gender_concept_id column; gender set to 0")
        stage = f"{_P}person"
        self.temp.append(stage)
        checked = self._apply("person", stage, select, _person_checks(types, self.actions))
        self.con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {_P}persons AS
            SELECT _person_id AS person_id, _birth AS birth_datetime,
                   coalesce(_gender_concept_id, 0) AS gender_concept_id
            FROM {checked} WHERE _drop IS NULL"""
        )
        self.con.execute(f"DROP TABLE {checked}")

    def _stage_observation_period(self) -> None:
        """Check the observation periods (ids and person as for events, both dates present
        and in range, end not before start: else dropped) and keep them in ``_ehrseq_ops``.
        Absent or unusable, rule outside_observation is not checked (strict: absent raises)."""
        cdm, t = self.cdm, "observation_period"
        if not cdm.has(t):
            self._empty(t)
            self._fail(t, "", "missing_table", "table absent; rule outside_observation not checked")
            return
        types = cdm.columns(t)
        start, end = "observation_period_start_date", "observation_period_end_date"
        missing = [c for c in ("person_id", start, end) if c not in types]
        if self._missing_columns(t, missing, fatal=False):
            self.report.notes.append(f"{t}: unusable; rule outside_observation not checked")
            return
        stage = f"{_P}op"
        self.temp.append(stage)
        show = ("person_id", start, end)
        checks = [
            Check("duplicate_row", "", "drop", "_rn_all > 1", show),
            Check("missing_id", "person_id", "drop", "_b_person", show),
            Check("bad_id", "person_id", "drop", "_person_id IS NULL", show),
            Check("unknown_person", "person_id", "drop", "NOT _person_known", show),
            Check("missing_date", start, "drop", "_b_start", show),
            Check("missing_date", end, "drop", "_b_end", show),
            Check("bad_date", start, "drop", "NOT _start_ok", show),
            Check("bad_date", end, "drop", "NOT _end_ok", show),
            Check("end_before_start", end, "drop", "_end < _start", show),
            Check(
                "overlapping_period", start, self.actions["overlapping_period"], "_overlap", show
            ),
        ]
        select = _observation_period_select(types, self._read_once(t, types))
        checked = self._apply(t, stage, select, checks)
        self.con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {_P}ops AS
            SELECT _person_id AS person_id, _start AS start_day, _end AS end_day
            FROM {checked} WHERE _drop IS NULL"""
        )
        self.con.execute(f"DROP TABLE {checked}")
        self.has_op = True

    # -- event tables ----------------------------------------------------------------------------
    def _stage_events(self, spec: EventSpec) -> str | None:
        """Stage and check one event table; return the checked table or None if unusable.

        The checks run in this order: the row checks that drop (:func:`_event_row_checks`),
        the repairs (:func:`_event_repair_checks`), then the configurable rules
        (:meth:`_event_flag_checks`).
        """
        t = spec.table
        types = self.cdm.columns(t)
        if self._missing_columns(t, _missing_event_columns(spec, types), fatal=False):
            return None
        links = self._links(spec, types)
        stage = f"{_P}stage_{spec.domain}"
        self.temp.append(stage)
        src = self._read_once(t, types, key=spec.key if _has(types, spec.key) else None)
        select = _event_select(spec, types, links, src)
        checks = (
            _event_row_checks(spec, types)
            + _event_repair_checks(spec, types)
            + self._event_flag_checks(spec, types, links)
        )
        self.visit_checked[spec.domain] = links.known_visit != "FALSE"
        return self._apply(t, stage, select, checks)

    def _links(self, spec: EventSpec, types: dict[str, str]) -> _Links:
        """The SQL that checks one event table against the reference tables this run has:
        visits (not for the visit table itself), observation periods, deaths (not for the
        death table itself) and concepts (not for death, whose concept is fixed)."""
        known_visit = "FALSE"
        if self.has_visits and spec.domain != "visit" and _has(types, spec.visit):
            known_visit = f"_visit_id IN (SELECT visit_occurrence_id FROM {_P}visits)"
        outside = "FALSE"
        if self.has_op:
            outside = (
                f"NOT EXISTS (SELECT 1 FROM {_P}ops o WHERE o.person_id = d._person_id "
                f"AND d._day BETWEEN o.start_day AND o.end_day)"
            )
        death_join, after = "", "FALSE"
        if self.has_death and spec.domain != "death":
            death_join = f"LEFT JOIN {_P}deaths x ON x.person_id = d._person_id"
            after = "d._day > x.death_day"
        concept_known = "TRUE"
        if self.has_concepts and spec.concept:
            concept_known = f"d._concept_id IN (SELECT concept_id FROM {_P}concepts)"
        return _Links(known_visit, outside, death_join, after, concept_known)

    def _event_flag_checks(
        self, spec: EventSpec, types: dict[str, str], links: _Links
    ) -> list[Check]:
        """The configurable rules, each with this run's action: concept_zero, unknown_concept
        (with a usable CONCEPT), dangling_visit (with visits), outside_observation (with
        periods), after_death (with deaths), duplicate_id and duplicate_event (with an own
        id column)."""
        show, date_show, date_col = _event_shows(spec, types)
        a = self.actions
        checks = []
        if spec.concept:
            c = show + (spec.concept,)
            checks.append(
                Check("concept_zero", spec.concept, a["concept_zero"], "_concept_id = 0", c)
            )
            if _has(types, spec.source):
                shown = c + (spec.source,)
                rule = "source_concept"
                checks.append(Check(rule, spec.concept, a[rule], _SOURCE, shown))
            if _has(types, spec.source_value):
                extra = (spec.source, spec.source_value)
                shown = c + tuple(x for x in extra if _has(types, x))
                rule = "foreign_code"
                checks.append(Check(rule, spec.concept, a[rule], _FOREIGN, shown))
            if self.has_concepts:
                cond = "_concept_id <> 0 AND NOT _concept_known"
                checks.append(Check("unknown_concept", spec.concept, a["unknown_concept"], cond, c))
        if links.known_visit != "FALSE":
            cond = "_visit_id IS NOT NULL AND NOT _visit_known"
            checks.append(
                Check("dangling_visit", spec.visit, a["dangling_visit"], cond, show + (spec.visit,))
            )
        if self.has_op:
            checks.append(
                Check(
                    "outside_observation",
                    date_col,
                    a["outside_observation"],
                    "_outside",
                    show + date_show,
                )
            )
        if links.after != "FALSE":
            checks.append(
                Check("after_death", date_col, a["after_death"], "_after_death", show + date_show)
            )
        checks.append(
            Check("before_birth", date_col, a["before_birth"], "_before_birth", show + date_show)
        )
        if _has(types, spec.key):
            checks += [
                Check(
                    "duplicate_id",
                    spec.key,
                    a["duplicate_id"],
                    "_rn_all = 1 AND _rn_id > 1",
                    show + date_show,
                ),
                Check(
                    "duplicate_event",
                    "",
                    a["duplicate_event"],
                    "_rn_all = 1 AND _rn_event > 1",
                    show + date_show,
                ),
            ]
        return checks

    def _output_sql(self, spec: EventSpec, checked: str) -> str:
        """SQL: the kept rows of one checked table in the event-table columns, with the tie
        rank and the row number that order them (a dangling visit id is set to NULL when
        ``dangling_visit`` is ``repair``)."""
        visit = "_visit_id"
        if self.actions["dangling_visit"] == "repair" and self.visit_checked[spec.domain]:
            visit = (
                "CASE WHEN _visit_id IS NOT NULL AND NOT _visit_known THEN NULL ELSE _visit_id END"
            )
        concept, code = "coalesce(_concept_id, 0)", "NULL::VARCHAR"
        if spec.concept and self.actions["source_concept"] == "repair":
            concept = f"CASE WHEN {_SOURCE} THEN _source_id ELSE {concept} END"
        if spec.concept and self.actions["foreign_code"] == "repair":
            prefix = _lit(spec.domain.upper() + "//")  # its stand-in id comes in pandas
            code = f"CASE WHEN {_FOREIGN} THEN {prefix} || _code END"
        return f"""SELECT _person_id AS person_id, _time AS time,
                   {concept} AS concept_id, {code} AS code,
                   coalesce(_source_id, 0) AS source_concept_id,
                   '{spec.domain}' AS domain, _value AS value_as_number,
                   coalesce(_unit, 0) AS unit_concept_id, {visit} AS visit_occurrence_id,
                   {_DOMAIN_RANK[spec.domain]} AS _rank, _row
            FROM {checked} WHERE _drop IS NULL"""

    # -- the whole run ---------------------------------------------------------------------------
    def run(self, build: bool, events_to: Path | None = None) -> OmopData | LoadReport:
        """Validate every table, then (``build``) assemble the outputs (the event table
        written to ``events_to`` when given); always clean up."""
        self.build = build
        try:
            return self._run(build, events_to)
        finally:
            for name in self.temp + [f"{_P}{n}" for n in _REFERENCE_TABLES]:
                self.con.execute(f"DROP TABLE IF EXISTS {name}")

    def _run(self, build: bool, events_to: Path | None) -> OmopData | LoadReport:
        t0 = _time.perf_counter()
        for notes in self.cdm.notes.values():
            self.report.notes.extend(notes)
        self._guard("concept", self._stage_concept)
        self._guard("person", self._stage_person)
        self._guard("observation_period", self._stage_observation_period)
        for domain in _STAGE_ORDER:
            self._guard(EVENT_SPECS[domain].table, self._stage_domain, domain)
        if not self.staged:
            raise OmopValidationError(
                "", "", "missing_table", f"no usable event table for domains {self.domains}"
            )
        self._note_unread_tables()
        self._note_empty_hierarchy()
        self.report.seconds["validate"] = _time.perf_counter() - t0
        if not build:
            return self.report
        t1 = _time.perf_counter()
        if events_to is None:
            events = self._events_frame()
        else:
            events = self._write_events(events_to)
        person = self._person_frame()
        op = self._observation_period_frame()
        self.report.seconds["events"] = _time.perf_counter() - t1
        return OmopData(events, person, op, self.report, self.cdm, events_to)

    def _note_unread_tables(self) -> None:
        """List the tables present that no stage reads (note, specimen, device_exposure,
        era tables, ...), with their rows, in :attr:`LoadReport.unread_tables` and a
        note. The vocabulary tables the concept helpers use (concept_relationship,
        concept_ancestor) and cdm_source (the version) count as read."""
        unread = {}
        for table in self.cdm.tables:
            if table in _READ_TABLES or table in self.cdm.empty:
                continue
            try:
                unread[table] = self.cdm.count(table)
            except (duckdb.Error, OmopValidationError):
                unread[table] = -1  # unreadable
        self.report.unread_tables = unread
        if unread:
            rows = [f"{t} ({n:,} rows)" for t, n in unread.items()]
            rows = [r.replace("(-1 rows)", "(unreadable)") for r in rows]
            self.report.notes.append(f"tables present but not read: {', '.join(rows)}")

    def _note_empty_hierarchy(self) -> None:
        """A note when the hierarchy the concept helpers build would be empty: no
        concept_ancestor rows and a concept_relationship without valid 'Is a' rows."""
        cdm, first = self.cdm, "SELECT 1 FROM {} LIMIT 1"
        if not cdm.has("concept_relationship"):
            return
        is_a = "concept_relationship WHERE relationship_id = 'Is a'"
        try:
            if cdm.has("concept_ancestor"):
                if self.con.execute(first.format("concept_ancestor")).fetchall():
                    return
            if "relationship_id" not in cdm.columns("concept_relationship"):
                return
            found = self.con.execute(first.format(is_a)).fetchall()
        except (duckdb.Error, OmopValidationError):
            return
        if not found:
            self.report.notes.append(
                "concept_relationship: no 'Is a' rows and no concept_ancestor rows: "
                "the concept hierarchy is empty (descendants and ancestors find "
                "nothing)"
            )

    def _stage_domain(self, domain: str) -> None:
        """Stage one domain's table when it is wanted (death and visits always are, for the
        rules that check against them); note or (strict, asked-for domain) raise when the
        table is absent."""
        spec = EVENT_SPECS[domain]
        wanted = domain in self.domains
        if not self.cdm.has(spec.table):
            if wanted or domain in ("death", "visit"):
                self._empty(spec.table)
            if wanted and self.explicit_domains:
                self._fail(spec.table, "", "missing_table", f"table absent; no {domain} events")
            elif wanted or domain in ("death", "visit"):
                what = {"death": "rule after_death", "visit": "rule dangling_visit"}.get(domain)
                extra = f"; {what} not checked" if what else ""
                self.report.notes.append(f"{spec.table}: table absent{extra}")
            return
        if not wanted and domain not in ("death", "visit"):
            return
        checked = self._stage_events(spec)
        if checked is None:
            return
        self._keep_staged(domain, checked, wanted)

    def _keep_staged(self, domain: str, checked: str, wanted: bool) -> None:
        """After death or visits, keep the reference table later tables check against
        (``_ehrseq_deaths``: each person's death day; ``_ehrseq_visits``: the kept visit ids);
        keep the kept rows in the event-table columns (:meth:`_output_sql`) when the
        domain is wanted; drop the checked table (its other columns are not read
        again)."""
        if domain == "death":
            self.con.execute(
                f"""CREATE OR REPLACE TEMP TABLE {_P}deaths AS
                SELECT _person_id AS person_id, _day AS death_day
                FROM {checked} WHERE _drop IS NULL"""
            )
            self.has_death = True
        if domain == "visit":
            self.con.execute(
                f"""CREATE OR REPLACE TEMP TABLE {_P}visits AS SELECT DISTINCT
                _visit_id AS visit_occurrence_id FROM {checked}
                WHERE _drop IS NULL AND _visit_id IS NOT NULL"""
            )
            self.has_visits = True
        if wanted:
            out = self.staged[domain] = f"{_P}out_{domain}"
            if self.build:  # validate_omop reads no event
                self.temp.append(out)
                select = self._output_sql(EVENT_SPECS[domain], checked)
                self.con.execute(f"CREATE OR REPLACE TEMP TABLE {out} AS {select}")
            self.kept[domain] = self.report.totals(EVENT_SPECS[domain].table)["rows_kept"]
        self.con.execute(f"DROP TABLE {checked}")

    def _union(self) -> str:
        """SQL: the kept rows of every staged domain (:meth:`_output_sql`)."""
        return " UNION ALL ".join(f"SELECT * FROM {t}" for t in self.staged.values())

    def _events_sql(self, where: str = "TRUE") -> str:
        """SQL: the kept rows of every staged domain (those that match ``where``),
        sorted by person, time, tie rank, concept, source concept and row (a foreign
        code's stand-in id still to come)."""
        return f"""SELECT person_id, time, concept_id, source_concept_id, domain,
                       value_as_number, unit_concept_id, visit_occurrence_id, code
                FROM ({self._union()}) WHERE {where}
                ORDER BY person_id, time, _rank, concept_id, code, source_concept_id,
                         _row"""

    def _person_chunks(self, rows: int) -> list[str]:
        """Conditions on ``person_id`` that cut the event table into runs of whole
        persons of about ``rows`` events each, in person order (each sorted alone, so
        DuckDB never sorts more than one run)."""
        union = self._union()
        per_person = f"SELECT person_id, count(*) AS n FROM ({union}) GROUP BY 1"
        counts = self.con.execute(f"{per_person} ORDER BY 1").fetchnumpy()
        ids, n = counts["person_id"], np.cumsum(counts["n"])
        if not len(ids):
            return ["TRUE"]
        # a run starts after the person whose events pass a multiple of ``rows``
        firsts = np.searchsorted(n, np.arange(rows, n[-1], rows)) + 1
        bounds = [None, *np.unique(ids[firsts[firsts < len(ids)]]).tolist(), None]
        chunks = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            cond = [f"person_id >= {lo}"] if lo is not None else []
            cond += [f"person_id < {hi}"] if hi is not None else []
            chunks.append(" AND ".join(cond) or "TRUE")
        return chunks

    def _check_kept(self, counts: Mapping[str, int]) -> None:
        """Raise ``AssertionError`` if a domain's events differ from its kept rows
        (a bug)."""
        for domain, n in self.kept.items():
            if int(counts.get(domain, 0)) != n:
                raise AssertionError(f"{domain}: {counts.get(domain, 0)} events, {n} rows kept")

    def _events_frame(self) -> pd.DataFrame:
        """The event table: the kept rows of every staged domain, sorted as
        :meth:`_events_sql` says, in the dtypes of the contract.

        Raises:
            AssertionError: if a domain's events differ from its kept rows (a bug).
        """
        self._note_identifier_codes()
        events = _with_foreign_codes(self.con.execute(self._events_sql()).df())
        self._check_kept(events["domain"].value_counts())
        check_events(events)
        return events

    def _write_events(
        self, path: Path, batch_rows: int = 1 << 20, chunk_rows: int = 1 << 22
    ) -> pd.DataFrame:
        """Write the event table of :meth:`_events_frame` to the parquet file
        ``path``, ``batch_rows`` rows at a time (DuckDB sorts runs of whole persons of
        about ``chunk_rows`` events, :meth:`_person_chunks`, spilling beyond its memory
        cap; pandas holds one batch), and return its empty frame (the columns and
        dtypes).

        Raises:
            AssertionError: if a domain's events differ from its kept rows (a bug).
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        has_code = self._note_identifier_codes()
        types = {**_ARROW_TYPES, **({"code": pa.string()} if has_code else {})}
        arrow = {"schema": pa.schema(list(types.items())), "preserve_index": False}
        counts: dict[str, int] = {}
        path = Path(path)
        partial = path.with_name(path.name + ".partial")
        writer, empty = None, None
        try:
            for batch in self._batches(chunk_rows, batch_rows):
                events = _with_foreign_codes(batch.to_pandas())
                if has_code and "code" not in events:
                    events["code"] = pd.Series(None, index=events.index, dtype=object)
                check_events(events)
                for domain, n in events["domain"].value_counts().items():
                    counts[domain] = counts.get(domain, 0) + int(n)
                table = pa.Table.from_pandas(events, **arrow)
                if writer is None:
                    empty = events.iloc[:0]
                    writer = pq.ParquetWriter(partial, table.schema)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
        if writer is None:  # no event at all: an empty file in the contract
            empty = _with_foreign_codes(self.con.execute(self._events_sql()).df())
            empty.to_parquet(partial, index=False)
        self._check_kept(counts)
        partial.replace(path)
        return empty

    def _batches(self, chunk_rows: int, batch_rows: int) -> Iterator:
        """The sorted event table as arrow record batches, run after run of persons."""
        for where in self._person_chunks(chunk_rows):
            rel = self.con.sql(self._events_sql(where))
            # DuckDB 2 names it to_arrow_reader; 1.x fetch_arrow_reader
            read = getattr(rel, "to_arrow_reader", None) or rel.fetch_arrow_reader
            reader = read(batch_rows)
            try:
                yield from reader
            finally:
                reader.close()

    def _note_identifier_codes(self) -> bool:
        """A note per domain whose foreign codes are nearly all distinct (SynPUF writes
        a claim id as ``visit_source_value``): identifiers, not codes, each a token.
        Counted in DuckDB; returns whether any row kept a foreign code."""
        got = self.con.execute(
            f"""SELECT domain, count(*), count(DISTINCT code) FROM ({self._union()})
                WHERE code IS NOT NULL GROUP BY domain ORDER BY domain"""
        ).fetchall()
        for domain, n, distinct in got:
            if n >= 100 and distinct > 0.5 * n:
                table = EVENT_SPECS[str(domain)].table
                self.report.notes.append(
                    f"{table}: {n:,} rows kept their source value as a foreign code, "
                    f"{distinct:,} distinct: these look like identifiers, not codes "
                    f"(each becomes its own token); actions={{'foreign_code': 'keep'}} "
                    f"leaves "
                    f"their concept id 0"
                )
        return bool(got)

    def _person_frame(self) -> pd.DataFrame:
        """The kept persons, sorted by ``person_id``."""
        person = self.con.execute(f"SELECT * FROM {_P}persons ORDER BY person_id").df()
        person = person.astype({"person_id": "int64", "gender_concept_id": "int64"})
        person["birth_datetime"] = person["birth_datetime"].astype("datetime64[ns]")
        return person

    def _observation_period_frame(self) -> pd.DataFrame:
        """The kept observation periods, sorted; empty when the table was absent or unusable."""
        if self.has_op:
            op = self.con.execute(
                f"""SELECT person_id, CAST(start_day AS TIMESTAMP) AS observation_period_start_date,
                       CAST(end_day AS TIMESTAMP) AS observation_period_end_date
                FROM {_P}ops ORDER BY 1, 2, 3"""
            ).df()
        else:
            op = pd.DataFrame(
                {
                    "person_id": [],
                    "observation_period_start_date": [],
                    "observation_period_end_date": [],
                }
            )
        return op.astype(
            {
                "person_id": "int64",
                "observation_period_start_date": "datetime64[ns]",
                "observation_period_end_date": "datetime64[ns]",
            }
        )


def _way(detail: str, rule: str) -> str:
    """A structural error's detail with the way forward in strict mode."""
    return (
        f"{detail}. Or load with mode='lenient' (handled and counted in the report), or "
        f"tolerate it in strict mode with allow=[{rule!r}]"
    )


# ----------------------------------------------------------------------------------------------
# The person and observation_period stages
# ----------------------------------------------------------------------------------------------


def _person_select(types: dict[str, str], src: str) -> str:
    """SQL over the person table as read once (``src``, see :meth:`_Loader._read_once`): ids and birth fields parsed (``_name``) with blank flags
    (``_b_name``; an absent column is NULL and blank), ``_rn_all`` for repeated rows,
    ``_birth`` (``birth_datetime`` when in range, else year/month/day, month and day
    defaulting to 1) and ``_rn_key`` (a repeated ``person_id``; an exact repeat ranks last)."""
    parts = [
        f"{_as_int('person_id', types['person_id'])} AS _person_id",
        f"{_blank('person_id', types['person_id'])} AS _b_person",
    ]
    raw = ["person_id"]
    for col in (
        "year_of_birth",
        "month_of_birth",
        "day_of_birth",
        "birth_datetime",
        "gender_concept_id",
    ):
        if col in types:
            raw.append(col)
            conv = _as_datetime if col == "birth_datetime" else _as_int
            parts.append(f"{conv(col, types[col])} AS _{col}")
            parts.append(f"{_blank(col, types[col])} AS _b_{col}")
        else:
            nulltype = "TIMESTAMP" if col == "birth_datetime" else "BIGINT"
            parts.append(f"NULL::{nulltype} AS _{col}")
            parts.append(f"TRUE AS _b_{col}")
    ymd = (
        "TRY_CAST(printf('%04d-%02d-%02d', _year_of_birth, coalesce(_month_of_birth, 1), "
        "coalesce(_day_of_birth, 1)) AS DATE)"
    )
    return f"""
            WITH src AS ({src}),
            p AS (SELECT _row, {", ".join(_q(c) for c in raw)}, {", ".join(parts)}, _rn_all
                  FROM src),
            b AS (SELECT *,
                    _birth_datetime IS NOT NULL
                        AND {_in_range("CAST(_birth_datetime AS DATE)")} AS _bdt_ok,
                    {ymd} AS _ymd FROM p)
            SELECT *,
              CASE WHEN _bdt_ok THEN _birth_datetime
                   WHEN {_in_range("_ymd")} THEN CAST(_ymd AS TIMESTAMP) END AS _birth,
              CASE WHEN _person_id IS NULL THEN 1 ELSE row_number() OVER (
                  PARTITION BY _person_id ORDER BY _rn_all > 1, _row) END AS _rn_key
            FROM b"""


def _person_checks(types: dict[str, str], actions: Mapping[str, str]) -> list[Check]:
    """The person table's checks: repeated rows, missing, bad and repeated ``person_id``, no
    usable birth date (dropped); an unusable ``birth_datetime`` when year/month/day serve
    (repaired); a missing or bad gender (repaired to 0) and gender 0 (kept)."""
    show = ("person_id", "year_of_birth", "birth_datetime")
    show = tuple(c for c in show if c in types)
    g = ("person_id", "gender_concept_id") if "gender_concept_id" in types else ()
    checks = [
        Check("duplicate_row", "", "drop", "_rn_all > 1", show),
        Check("missing_id", "person_id", "drop", "_b_person", show),
        Check("bad_id", "person_id", "drop", "_person_id IS NULL", show),
        Check("duplicate_key", "person_id", "drop", "_rn_key > 1", show),
        Check(
            "missing_date",
            "year_of_birth",
            "drop",
            "_b_year_of_birth AND _b_birth_datetime",
            show,
        ),
        Check("bad_date", "year_of_birth", "drop", "_birth IS NULL", show),
        Check(
            "implausible_birth",
            "year_of_birth" if "year_of_birth" in types else "birth_datetime",
            actions["implausible_birth"],
            f"year(_birth) < {MIN_BIRTH_YEAR} OR year(_birth) > {_dt.date.today().year}",
            show,
        ),
        Check(
            "bad_date",
            "birth_datetime",
            "repair",
            "NOT _b_birth_datetime AND NOT _bdt_ok",
            show,
        ),
    ]
    if g:
        checks += [
            Check("missing_id", "gender_concept_id", "repair", "_b_gender_concept_id", g),
            Check(
                "bad_id",
                "gender_concept_id",
                "repair",
                "NOT _b_gender_concept_id AND _gender_concept_id IS NULL",
                g,
            ),
            Check("concept_zero", "gender_concept_id", "keep", "_gender_concept_id = 0", g),
        ]
    return checks


def _observation_period_select(types: dict[str, str], src: str) -> str:
    """SQL over observation_period as read once (``src``): id and both dates parsed with
    blank flags, ``_rn_all`` for repeated rows, whether the person was kept and whether each
    date is in range."""
    start, end = "observation_period_start_date", "observation_period_end_date"
    return f"""
            WITH src AS ({src}),
            p AS (SELECT _row, person_id, {start}, {end},
                    {_as_int("person_id", types["person_id"])} AS _person_id,
                    {_blank("person_id", types["person_id"])} AS _b_person,
                    {_as_date(start, types[start])} AS _start,
                    {_as_date(end, types[end])} AS _end,
                    {_blank(start, types[start])} AS _b_start,
                    {_blank(end, types[end])} AS _b_end, _rn_all
                  FROM src)
            SELECT *, _person_id IN (SELECT person_id FROM {_P}persons) AS _person_known,
                   {_in_range("_start")} AS _start_ok, {_in_range("_end")} AS _end_ok,
                   _start <= max(_end) OVER (PARTITION BY _person_id ORDER BY _start, _end, _row
                       ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS _overlap
            FROM p"""


# ----------------------------------------------------------------------------------------------
# The event stages: one SELECT and three groups of checks per domain
# ----------------------------------------------------------------------------------------------


def _has(types: dict[str, str], col: str | None) -> bool:
    """Whether the table has ``col`` (``None``: a column the domain does not have)."""
    return col is not None and col in types


def _missing_event_columns(spec: EventSpec, types: dict[str, str]) -> list[str]:
    """The columns an event table cannot do without and lacks: ``person_id``, its concept
    column, and its date when neither the date nor the datetime column is there."""
    missing = [c for c in ("person_id", spec.concept) if c and c not in types]
    if not _has(types, spec.date) and not _has(types, spec.datetime):
        missing.append(spec.date)
    return missing


def _event_shows(
    spec: EventSpec, types: dict[str, str]
) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """The columns error messages show (own id and person; the date columns) and the column
    that date rules are reported under (the date, else the datetime)."""
    show = tuple(c for c in (spec.key, "person_id") if _has(types, c))
    date_show = tuple(c for c in (spec.date, spec.datetime) if _has(types, c))
    date_col = spec.date if _has(types, spec.date) else spec.datetime
    return show, date_show, date_col


def _event_columns(spec: EventSpec, types: dict[str, str]) -> list[str]:
    """SQL select items: every column the domain reads, parsed (``_name``: ``_person_id``,
    ``_concept_id``, ``_source_id``, ``_d``, ``_dt``, ``_value``, ``_unit``, ``_visit_id``)
    with its blank flag (``_b_name``). An absent column reads as NULL and blank; death's
    concept is :data:`DEATH_CONCEPT_ID`."""

    def parsed(col: str | None, conv, null: str, name: str) -> list[str]:
        if _has(types, col):
            return [
                f"{conv(col, types[col])} AS _{name}",
                f"{_blank(col, types[col])} AS _b_{name}",
            ]
        return [f"{null} AS _{name}", f"TRUE AS _b_{name}"]

    parts = parsed("person_id", _as_int, "NULL::BIGINT", "person_id")
    if spec.concept:
        parts += parsed(spec.concept, _as_int, "NULL::BIGINT", "concept_id")
    else:
        parts += [
            f"CAST({DEATH_CONCEPT_ID} AS BIGINT) AS _concept_id",
            "FALSE AS _b_concept_id",
        ]
    parts += parsed(spec.source, _as_int, "NULL::BIGINT", "source_id")
    parts += parsed(spec.date, _as_date, "NULL::DATE", "d")
    parts += parsed(spec.datetime, _as_datetime, "NULL::TIMESTAMP", "dt")
    zoned = _zoned(spec.datetime, types[spec.datetime]) if _has(types, spec.datetime) else "FALSE"
    parts.append(f"{zoned} AS _z_dt")
    parts += parsed(spec.value, _as_float, "NULL::DOUBLE", "value_any")
    parts.append("CASE WHEN isfinite(_value_any) THEN _value_any END AS _value")
    parts += parsed(spec.unit, _as_int, "NULL::BIGINT", "unit")
    parts += parsed(spec.visit, _as_int, "NULL::BIGINT", "visit_id")
    if _has(types, spec.source_value):  # the code as written, NULL when blank
        text = f"trim(CAST({_q(spec.source_value)} AS VARCHAR))"
        parts.append(f"NULLIF({text}, '') AS _code")
    else:
        parts.append("NULL::VARCHAR AS _code")
    return parts


def _event_select(spec: EventSpec, types: dict[str, str], links: _Links, src: str) -> str:
    """SQL over one event table as read once (``src``, see :meth:`_Loader._read_once`): the
    raw columns (for error messages), the parsed ones, the repeat counters, ``_day`` and ``_time`` (the datetime when it falls on the date, else the
    date at midnight; either alone when the other is unusable), and the flags the rules read
    (``_person_known``, ``_concept_known``, ``_visit_known``, ``_outside``, ``_after_death``,
    and ``_rn_key``: death keeps one row per person, the earliest dated)."""
    raw = [
        c
        for c in (
            spec.key,
            "person_id",
            spec.concept,
            spec.source,
            spec.date,
            spec.datetime,
            spec.value,
            spec.unit,
            spec.visit,
            spec.source_value,
        )
        if _has(types, c)
    ]
    raw = list(dict.fromkeys(raw))
    parts = _event_columns(spec, types)
    rn_key = "1"  # death: one row per person, the earliest dated one stays
    if spec.domain == "death":
        rn_key = (
            "CASE WHEN d._person_id IS NULL THEN 1 ELSE row_number() OVER ("
            "PARTITION BY d._person_id ORDER BY d._day NULLS LAST, d._row) END"
        )
    return f"""
            WITH src AS ({src}),
            p AS (SELECT _row, {", ".join(_q(c) for c in raw)}, {", ".join(parts)},
                         _rn_all, _rn_id, _rn_event FROM src),
            q AS (SELECT *, _d IS NOT NULL AND {_in_range("_d")} AS _d_ok,
                            _dt IS NOT NULL AND {_in_range("CAST(_dt AS DATE)")} AS _dt_ok
                  FROM p),
            d AS (SELECT *,
                    CASE WHEN _d_ok THEN _d WHEN _dt_ok THEN CAST(_dt AS DATE) END AS _day,
                    CASE WHEN _dt_ok AND (NOT _d_ok OR CAST(_dt AS DATE) = _d) THEN _dt
                         WHEN _d_ok THEN CAST(_d AS TIMESTAMP) END AS _time,
                    {links.known_visit} AS _visit_known
                  FROM q)
            SELECT d.*,
                   b.person_id IS NOT NULL AS _person_known,
                   coalesce(d._day < CAST(b.birth_datetime AS DATE), FALSE) AS _before_birth,
                   {links.concept_known} AS _concept_known,
                   {links.outside} AS _outside, coalesce({links.after}, FALSE) AS _after_death,
                   {rn_key} AS _rn_key
            FROM d LEFT JOIN {_P}persons b ON b.person_id = d._person_id {links.death_join}"""


def _event_row_checks(spec: EventSpec, types: dict[str, str]) -> list[Check]:
    """The checks that drop an event row: a repeated row, a missing, bad or unknown
    ``person_id``, no date, no usable date, and (death) a second death of one person."""
    show, date_show, date_col = _event_shows(spec, types)
    checks = [
        Check("duplicate_row", "", "drop", "_rn_all > 1", show + date_show),
        Check("missing_id", "person_id", "drop", "_b_person_id", show),
        Check("bad_id", "person_id", "drop", "_person_id IS NULL", show),
        Check("unknown_person", "person_id", "drop", "NOT _person_known", show),
        Check("missing_date", date_col, "drop", "_b_d AND _b_dt", show + date_show),
        Check("bad_date", date_col, "drop", "_day IS NULL", show + date_show),
    ]
    if spec.domain == "death":
        checks.append(Check("duplicate_key", "person_id", "drop", "_rn_key > 1", show + date_show))
    return checks


def _event_repair_checks(spec: EventSpec, types: dict[str, str]) -> list[Check]:
    """The checks that repair a kept row: an unusable date or datetime (the other serves), a
    datetime on another day than the date, a missing or bad concept id (0), a bad source,
    unit or visit id (0, 0, NA), a value that is not a number (NaN)."""
    show, date_show, _ = _event_shows(spec, types)
    checks = []
    if _has(types, spec.date):
        checks.append(
            Check("bad_date", spec.date, "repair", "NOT _b_d AND NOT _d_ok", show + date_show)
        )
    if _has(types, spec.datetime):
        checks.append(
            Check(
                "bad_date",
                spec.datetime,
                "repair",
                "NOT _b_dt AND NOT _dt_ok",
                show + date_show,
            )
        )
    if _has(types, spec.date) and _has(types, spec.datetime):
        cond = "_d_ok AND _dt_ok AND CAST(_dt AS DATE) <> _d"
        checks.append(Check("date_mismatch", spec.datetime, "repair", cond, show + date_show))
    if spec.concept:
        c = show + (spec.concept,)
        checks += [
            Check("missing_id", spec.concept, "repair", "_b_concept_id", c),
            Check("bad_id", spec.concept, "repair", "NOT _b_concept_id AND _concept_id IS NULL", c),
        ]
    for col, name in (
        (spec.source, "source_id"),
        (spec.unit, "unit"),
        (spec.visit, "visit_id"),
    ):
        if _has(types, col):
            cond = f"NOT _b_{name} AND _{name} IS NULL"
            checks.append(Check("bad_id", col, "repair", cond, show + (col,)))
    if _has(types, spec.datetime):
        checks.append(Check("zone_offset", spec.datetime, "repair", "_z_dt", show + date_show))
    if _has(types, spec.value):
        cond = "NOT _b_value_any AND _value_any IS NULL"
        checks.append(Check("bad_number", spec.value, "repair", cond, show + (spec.value,)))
        cond = "_value_any IS NOT NULL AND NOT isfinite(_value_any)"
        checks.append(Check("non_finite", spec.value, "repair", cond, show + (spec.value,)))
    return checks


# ----------------------------------------------------------------------------------------------
# The public entry points
# ----------------------------------------------------------------------------------------------


def _to_contract(events: pd.DataFrame) -> pd.DataFrame:
    """Cast DuckDB's output to the dtypes of :data:`ehrseq.data.events.EVENT_COLUMNS`."""
    events = events.astype(
        {
            "person_id": "int64",
            "concept_id": "int64",
            "source_concept_id": "int64",
            "unit_concept_id": "int64",
            "value_as_number": "float64",
            "visit_occurrence_id": "Int64",
            "domain": "object",
        }
    )
    events["time"] = events["time"].astype("datetime64[ns]")
    return events[list(EVENT_COLUMNS)].reset_index(drop=True)


def _with_foreign_codes(events: pd.DataFrame) -> pd.DataFrame:
    """The event table in the contract's dtypes; when a row kept its source value as a
    foreign code (rule foreign_code), that row gets the code's stand-in concept id
    (:func:`ehrseq.data.meds.foreign_concept_ids`, < 0, stable across exports) and the
    table keeps a ``code`` column (the string, None elsewhere), as
    :func:`~ehrseq.data.meds.read_meds` does."""
    code = events.pop("code")
    events = _to_contract(events)
    given = code.notna().to_numpy()
    if given.any():
        codes = code[given].astype(str)
        unique = codes.unique()
        ids = dict(zip(unique, foreign_concept_ids(unique).tolist()))
        events.loc[given, "concept_id"] = codes.map(ids).to_numpy(np.int64)
        events["code"] = code.where(given, None).astype(object).to_numpy()
    return events


def _as_cdm(source: str | Path | Cdm) -> Cdm:
    return source if isinstance(source, Cdm) else open_cdm(source)


def load_omop(
    source: str | Path | Cdm,
    *,
    mode: str = "lenient",
    domains: Sequence[str] | None = None,
    actions: Mapping[str, str] | None = None,
    allow: Iterable[str] = (),
    events_to: str | Path | None = None,
) -> OmopData:
    """Validate an OMOP CDM and build the event table, the person table and the periods.

    Each domain is read from its table: condition_occurrence, drug_exposure,
    procedure_occurrence, measurement (with ``value_as_number`` and ``unit_concept_id``),
    observation (its numeric value too), visit_occurrence, and death (concept
    :data:`DEATH_CONCEPT_ID`). The event time is the ``*_datetime`` when it falls on the
    recorded date, else the date at midnight. Ties at one time are ordered visit, condition,
    procedure, drug, measurement, observation, death.

    Args:
        source: a folder or DuckDB file (see :func:`open_cdm`), or an open :class:`Cdm`.
        mode: ``"lenient"`` handles every problem as its rule's action says and counts it;
            ``"strict"`` raises on the first rule any row breaks.
        domains: the domains to emit (default: all of :data:`ehrseq.data.events.DOMAINS`
            whose table exists). Death and visits are validated anyway, because the
            ``after_death`` and ``dangling_visit`` rules check against them.
        actions: override the action of a configurable rule (see :data:`RULES`), e.g.
            ``{"after_death": "drop", "dangling_visit": "repair"}``.
        allow: rules that strict mode tolerates (handled by their action and counted).
        events_to: a parquet file to write the event table to instead of holding it
            in pandas: DuckDB sorts it (spilling beyond its memory cap) and pandas
            converts one batch of rows at a time, so an export larger than memory
            loads; the file reads back (``pd.read_parquet``) as the frame ``events``
            would have been.

    Returns:
        an :class:`OmopData` with ``events`` (no row with ``events_to``), ``person``,
        ``observation_period``, ``report``, the open ``cdm`` and ``events_path``.

    Raises:
        OmopValidationError: in strict mode, naming the table, column, rule and example rows;
            in either mode when the person table or all event tables are unusable.
        ValueError: on an unknown mode, domain, rule or action.
    """
    cdm = _as_cdm(source)
    to = None if events_to is None else Path(events_to)
    result = _Loader(cdm, mode, domains, actions, allow).run(build=True, events_to=to)
    assert isinstance(result, OmopData)
    return result


def validate_omop(
    source: str | Path | Cdm,
    *,
    mode: str = "lenient",
    domains: Sequence[str] | None = None,
    actions: Mapping[str, str] | None = None,
    allow: Iterable[str] = (),
) -> LoadReport:
    """Run every rule of :func:`load_omop` and return the :class:`LoadReport` only.

    Nothing is pulled into pandas, so this also suits a CDM too large to load at once.
    Arguments and errors are those of :func:`load_omop`.
    """
    cdm = _as_cdm(source)
    result = _Loader(cdm, mode, domains, actions, allow).run(build=False)
    assert isinstance(result, LoadReport)
    return result
