"""The validation rules, the error strict mode raises, the report, and the engine that applies
rules to a staged table and counts every row.

A rule is checked as a :class:`Check`: an SQL condition over a table staged in DuckDB, the
column it looks at and what lenient mode does to a row that breaks it (``drop``, ``repair``
or ``keep``). :func:`apply_checks` runs a table's checks in one pass, marks each row with the
first dropping check it fails, counts every check into the :class:`LoadReport` and, in strict
mode, raises :class:`OmopValidationError` with example rows. The loader in
:mod:`ehrseq.data.omop.loader` decides which checks each table gets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import duckdb
import pandas as pd

from ehrseq.data.omop.sql import MAX_DAY, MIN_DAY, _q

__all__ = [
    "CONFIGURABLE",
    "RULES",
    "Check",
    "LoadReport",
    "OmopValidationError",
    "Rule",
    "apply_checks",
    "resolve_actions",
    "resolve_allow",
]


@dataclass(frozen=True)
class Rule:
    """One validation rule.

    Attributes:
        name: the key used in reports, errors, ``allow=`` and ``actions=``.
        text: what it checks, in words (quoted in error messages).
        action: what lenient mode does by default, in words.
        choices: the actions ``actions=`` may pick (``keep``, ``repair``, ``drop``); empty for
            a rule whose handling is fixed.
    """

    name: str
    text: str
    action: str
    choices: tuple[str, ...] = ()


RULES: dict[str, Rule] = {
    r.name: r
    for r in [
        Rule("missing_table", "a table the load uses is absent", "note (person: raise)"),
        Rule(
            "unreadable_file",
            "DuckDB cannot read the table's file (corrupt, truncated, not the format)",
            "note and skip the table (person: raise)",
        ),
        Rule(
            "empty_file",
            "a table's file is empty (not even a header row)",
            "note: read as an absent table (person: raise)",
        ),
        Rule(
            "encoding",
            "a CSV file is not UTF-8 (read as latin-1)",
            "repair: the rows holding a non-ASCII character are counted",
        ),
        Rule(
            "no_header",
            "a CSV file has no header row (its first line holds values)",
            "drop every row",
        ),
        Rule(
            "mixed_shards",
            "a table folder mixes parquet and CSV shards",
            "keep: every shard is read; the rows of the minority kind are counted",
        ),
        Rule(
            "duplicate_column",
            "a column name appears twice (also once lower-cased)",
            "drop the rows where a later copy differs from the first",
        ),
        Rule(
            "malformed_line",
            "a CSV line does not fit the file's dialect (ragged: too many or too few fields)",
            "drop",
        ),
        Rule("missing_column", "a column the load needs is absent", "drop every row"),
        Rule("duplicate_row", "the row repeats an earlier row in every column", "drop"),
        Rule("missing_id", "an id the row needs is empty", "drop (person_id) or repair to 0"),
        Rule("bad_id", "an id is not integer-like", "drop (person_id) or repair to 0/NA"),
        Rule("unknown_person", "person_id is not in the person table", "drop"),
        Rule("duplicate_key", "the table's key repeats", "drop all but the first"),
        Rule("missing_date", "the row has no date", "drop"),
        Rule(
            "bad_date",
            f"the date does not parse or lies outside {MIN_DAY[:4]}-{MAX_DAY[:4]}",
            "drop, or repair from the other of date/datetime",
        ),
        Rule(
            "date_mismatch",
            "the datetime falls on another day than the date",
            "repair: the date at midnight is the event time",
        ),
        Rule("end_before_start", "the period ends before it starts", "drop"),
        Rule("bad_number", "value_as_number is not a number", "repair to NaN"),
        Rule("non_finite", "value_as_number is infinite or NaN (inf, 1e400, nan)", "repair to NaN"),
        Rule(
            "zone_offset",
            "a datetime carries a time-zone offset (text +hh:mm or Z, or a zoned type)",
            "repair: text keeps its wall-clock time, a zoned type is read in UTC",
        ),
        Rule(
            "implausible_birth",
            "the birth year lies before 1850 or after the year of loading",
            "keep",
            ("keep", "drop"),
        ),
        Rule(
            "before_birth",
            "the event date is before the person's birth date",
            "keep",
            ("keep", "drop"),
        ),
        Rule(
            "overlapping_period",
            "an observation period overlaps an earlier period of the same person",
            "keep",
            ("keep", "drop"),
        ),
        Rule("concept_zero", "concept_id is 0 (no matching concept)", "keep", ("keep", "drop")),
        Rule(
            "source_concept",
            "concept_id is 0 and the source concept id is not (which stands in)",
            "repair",
            ("repair", "keep"),
        ),
        Rule(
            "foreign_code",
            "concept_id and the source concept id are 0 and the source value is "
            "not blank (kept as a foreign code: its own stand-in concept id < 0, "
            "the code column)",
            "repair",
            ("repair", "keep"),
        ),
        Rule("unknown_concept", "concept_id is not in the CONCEPT table", "keep", ("keep", "drop")),
        Rule(
            "dangling_visit",
            "visit_occurrence_id is not in visit_occurrence",
            "keep",
            ("keep", "repair", "drop"),
        ),
        Rule(
            "outside_observation",
            "the date lies in none of the person's observation periods",
            "keep",
            ("keep", "drop"),
        ),
        Rule("after_death", "the date is after the person's death", "keep", ("keep", "drop")),
        Rule(
            "duplicate_id",
            "the table's own id repeats with different content",
            "keep",
            ("keep", "drop"),
        ),
        Rule(
            "duplicate_event",
            "the row repeats an earlier row in every column but the table's own id",
            "keep",
            ("keep", "drop"),
        ),
    ]
}
CONFIGURABLE = tuple(name for name, rule in RULES.items() if rule.choices)


def resolve_allow(allow: Iterable[str]) -> set[str]:
    """The rules strict mode tolerates, as a set.

    Raises:
        ValueError: naming any name that is not a rule.
    """
    allowed = set(allow)
    unknown = allowed - set(RULES)
    if unknown:
        raise ValueError(f"allow: unknown rules {sorted(unknown)}; rules are {list(RULES)}")
    return allowed


def resolve_actions(actions: Mapping[str, str] | None) -> dict[str, str]:
    """The action of every configurable rule: its default, overridden by ``actions``.

    Raises:
        ValueError: if a rule in ``actions`` is not configurable or its action is not one of
            the rule's choices.
    """
    resolved = {n: RULES[n].action for n in CONFIGURABLE}
    for name, action in (actions or {}).items():
        if name not in CONFIGURABLE:
            raise ValueError(f"actions: {name!r} is not configurable; choose from {CONFIGURABLE}")
        if action not in RULES[name].choices:
            raise ValueError(f"actions[{name!r}] = {action!r}; choose from {RULES[name].choices}")
        resolved[name] = action
    return resolved


class OmopValidationError(ValueError):
    """A CDM breaks a validation rule (raised in strict mode, or when nothing can be loaded).

    Attributes:
        table: the OMOP table, e.g. ``"condition_occurrence"``.
        column: the column the rule looks at (``""`` for a whole row).
        rule: the rule name, a key of :data:`RULES`.
        detail: what was found, in words.
        rows: how many rows break it (0 for a structural problem).
        examples: a few offending rows as a DataFrame (``_row`` is the 1-based row number in
            the table as read), or ``None``.
    """

    def __init__(
        self,
        table: str,
        column: str,
        rule: str,
        detail: str,
        rows: int = 0,
        examples: pd.DataFrame | None = None,
    ) -> None:
        self.table, self.column, self.rule, self.rows, self.examples = (
            table,
            column,
            rule,
            rows,
            examples,
        )
        self.detail = detail
        where = f"{table}.{column}" if column else table
        lines = [f"OMOP validation failed: {where}: rule {rule!r} ({detail})"]
        if examples is not None and len(examples):
            lines.append("example rows (_row = 1-based row number in the table as read):")
            for rec in examples.to_dict("records"):
                lines.append("  " + ", ".join(f"{k}={_show(v)}" for k, v in rec.items()))
        if rows:
            lines.append(
                f"Load anyway with mode='lenient' (rows are handled and counted in the report) "
                f"or tolerate this rule in strict mode with allow=[{rule!r}]."
            )
        super().__init__("\n".join(lines))


def _show(value: object) -> str:
    """One example value as the error message prints it."""
    if value is None or value is pd.NaT or (isinstance(value, float) and value != value):
        return "NULL"
    if isinstance(value, str):  # quoted only when blank space would hide in it
        return repr(value) if value != value.strip() or not value or "," in value else value
    if isinstance(value, pd.Timestamp) and value == value.normalize():
        return value.strftime("%Y-%m-%d")
    return str(value)


@dataclass
class LoadReport:
    """Every row of every table read, counted per table and reason: kept, repaired, dropped.

    ``to_frame()`` is the long view for a notebook (columns ``table, column, reason, action,
    rows``); per table its ``read`` row equals the sum of its ``dropped`` rows plus its
    ``rows_kept`` row. ``repaired`` and ``kept`` rows count kept rows with that issue, so a
    row with two issues counts under both. ``summary()`` is the wide per-table view.

    Attributes:
        source: where the CDM was read from.
        mode: ``"strict"`` or ``"lenient"``.
        cdm_version: e.g. ``"5.4"``, from ``cdm_source`` or guessed from the columns.
        notes: checks that could not run and tables that were skipped, in words.
        seconds: wall-clock time per stage (``validate``, ``events``).
        unread_tables: tables present in the export that the loader does not read
            (note, specimen, era tables, ...) -> their rows (-1: unreadable), also in
            ``notes``.
    """

    source: str = ""
    mode: str = "lenient"
    cdm_version: str | None = None
    notes: list[str] = field(default_factory=list)
    unread_tables: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    _records: list[tuple[str, str, str, str, int]] = field(default_factory=list, repr=False)
    _totals: dict[str, dict[str, int]] = field(default_factory=dict, repr=False)

    def add_table(
        self,
        table: str,
        rows_in: int,
        dropped: Mapping[tuple[str, str], int],
        repaired: Mapping[tuple[str, str], int],
        kept: Mapping[tuple[str, str], int],
        rows_repaired: int,
        rows_flagged: int,
    ) -> None:
        """Record one table; ``dropped``/``repaired``/``kept`` map ``(column, rule)`` to rows.

        Raises:
            AssertionError: if the counts do not add up (a bug, never the data's fault).
        """
        rows_dropped = int(sum(dropped.values()))
        rows_kept = int(rows_in) - rows_dropped
        if rows_kept < 0:
            raise AssertionError(f"{table}: {rows_dropped} rows dropped of {rows_in} read")
        self._totals[table] = {
            "rows_in": int(rows_in),
            "rows_kept": rows_kept,
            "rows_dropped": rows_dropped,
            "rows_repaired": int(rows_repaired),
            "rows_flagged": int(rows_flagged),
        }
        self._records.append((table, "", "read", "read", int(rows_in)))
        for action, counts in (("dropped", dropped), ("repaired", repaired), ("kept", kept)):
            for (column, rule), n in counts.items():
                if n:
                    self._records.append((table, column, rule, action, int(n)))
        self._records.append((table, "", "rows_kept", "kept", rows_kept))
        self.check_totals()

    def add_unread(self, table: str, column: str, rule: str, rows: int) -> None:
        """Count ``rows`` that the file holds but the reader could not turn into table rows
        (a ragged CSV line, a data row taken as the header) as read and dropped under
        ``rule``; ``table`` must have been added."""
        if not rows:
            return
        t = self._totals[table]
        t["rows_in"] += int(rows)
        t["rows_dropped"] += int(rows)
        out = []
        for rec in self._records:
            if rec[0] == table and rec[2] == "read":
                rec = (table, "", "read", "read", t["rows_in"])
            if rec[0] == table and rec[2] == "rows_kept":
                out.append((table, column, rule, "dropped", int(rows)))
            out.append(rec)
        self._records[:] = out
        self.check_totals()

    def check_totals(self) -> None:
        """Assert ``rows_in == rows_kept + rows_dropped`` for every table.

        Raises:
            AssertionError: naming the table whose counts do not add up.
        """
        for table, t in self._totals.items():
            if t["rows_in"] != t["rows_kept"] + t["rows_dropped"]:
                raise AssertionError(f"{table}: rows_in != rows_kept + rows_dropped: {t}")

    @property
    def tables(self) -> list[str]:
        """The tables counted, in the order they were read."""
        return list(self._totals)

    def totals(self, table: str) -> dict[str, int]:
        """``rows_in``, ``rows_kept``, ``rows_dropped``, ``rows_repaired``, ``rows_flagged``."""
        return dict(self._totals[table])

    def count(self, table: str, reason: str, action: str | None = None) -> int:
        """Rows of ``table`` counted under ``reason`` (and ``action`` when given), 0 if none."""
        return int(
            sum(
                r[4]
                for r in self._records
                if r[0] == table and r[2] == reason and (action is None or r[3] == action)
            )
        )

    def to_frame(self) -> pd.DataFrame:
        """The long view: one row per table, column, reason and action."""
        return pd.DataFrame(self._records, columns=["table", "column", "reason", "action", "rows"])

    def summary(self) -> pd.DataFrame:
        """The wide view: one row per table with its in/kept/dropped/repaired/flagged rows."""
        frame = pd.DataFrame.from_dict(self._totals, orient="index")
        frame.index.name = "table"
        return frame

    def __repr__(self) -> str:
        head = f"LoadReport(source={self.source!r}, mode={self.mode!r}, cdm={self.cdm_version})"
        parts = [head]
        if self._totals:
            parts.append(self.summary().to_string())
            issues = self.to_frame()
            issues = issues[~issues["reason"].isin(["read", "rows_kept"])]
            if len(issues):
                parts.append("issues:\n" + issues.to_string(index=False))
        if self.notes:
            parts.append("notes:\n" + "\n".join(f"- {n}" for n in self.notes))
        if self.seconds:
            parts.append("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in self.seconds.items()))
        return "\n".join(parts)


# ----------------------------------------------------------------------------------------------
# The engine: apply a table's checks in DuckDB, count them, raise in strict mode
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """A rule applied to one column of a staged table: ``cond`` is SQL over the stage.

    Attributes:
        rule: a key of :data:`RULES`.
        column: the column it looks at (``""`` for the whole row).
        action: ``"drop"``, ``"repair"`` or ``"keep"`` (what lenient mode does).
        cond: SQL, true where the row breaks the rule.
        show: the columns an error message prints for an example row.
    """

    rule: str
    column: str
    action: str
    cond: str
    show: tuple[str, ...] = ()


class _Counts(NamedTuple):
    """What one aggregate pass over a checked table counted."""

    rows_in: int
    rows_kept: int
    hits: list[int]  # per check: rows that break it and no earlier dropping check removed
    handled: list[tuple[int, int]]  # (check index, rows dropped by it or kept with its issue)
    rows_repaired: int
    rows_flagged: int


def apply_checks(
    con: duckdb.DuckDBPyConnection,
    report: LoadReport,
    table: str,
    stage: str,
    select: str,
    checks: list[Check],
    *,
    mode: str,
    allow: set[str],
    origin: str = "",
) -> str:
    """Materialise ``select`` as the temp table ``stage`` with each row's ``_drop`` mark,
    count every check into ``report``, raise in strict mode; return the table name.

    A row is dropped under the first dropping check it fails (``_drop`` is that check's
    index). Strict mode raises on the first check, in order, that some row fails and no
    earlier dropping check already removed, unless its rule is in ``allow``.

    Raises:
        OmopValidationError: in strict mode, naming ``table``, the check's column and rule,
            the file(s) it was read from (``origin``) and up to three example rows.
        AssertionError: if the counts do not add up (a bug).
    """
    conds = [f"coalesce(({c.cond}), FALSE)" for c in checks]
    live = [f"{c} AND (_drop IS NULL OR _drop >= {i})" for i, c in enumerate(conds)]
    _mark_drops(con, stage, select, checks, conds)
    counts = _count_checks(con, stage, checks, conds, live)
    if mode == "strict":
        _raise_first_broken(con, table, stage, checks, live, counts, allow, origin)
    _record(report, table, checks, counts)
    return stage


def _mark_drops(
    con: duckdb.DuckDBPyConnection, stage: str, select: str, checks: list[Check], conds: list[str]
) -> None:
    """Create ``stage`` from ``select`` plus ``_drop``: the index of the first dropping check
    the row fails, NULL for a row that stays. Drops nothing yet; the loader filters on it."""
    drops = [i for i, c in enumerate(checks) if c.action == "drop"]
    case = " ".join(f"WHEN {conds[i]} THEN {i}" for i in drops)
    drop_expr = f"CASE {case} END" if drops else "NULL::INTEGER"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {stage} AS SELECT *, {drop_expr} AS _drop FROM ({select})"
    )


def _count_checks(
    con: duckdb.DuckDBPyConnection,
    stage: str,
    checks: list[Check],
    conds: list[str],
    live: list[str],
) -> _Counts:
    """Count, in one query over ``stage``: rows in and kept, each check's live hits, the rows
    each dropping check dropped, the kept rows with each repair or flag, and the kept rows with
    any repair and with any flag."""
    drops = [i for i, c in enumerate(checks) if c.action == "drop"]
    kept_checks = [i for i, c in enumerate(checks) if c.action != "drop"]
    repair = [conds[i] for i in kept_checks if checks[i].action == "repair"] or ["FALSE"]
    flag = [conds[i] for i in kept_checks if checks[i].action == "keep"] or ["FALSE"]
    agg = (
        ["count(*)", "count(*) FILTER (WHERE _drop IS NULL)"]
        + [f"count(*) FILTER (WHERE {c})" for c in live]
        + [f"count(*) FILTER (WHERE _drop = {i})" for i in drops]
        + [f"count(*) FILTER (WHERE _drop IS NULL AND {conds[i]})" for i in kept_checks]
        + [f"count(*) FILTER (WHERE _drop IS NULL AND ({' OR '.join(repair)}))"]
        + [f"count(*) FILTER (WHERE _drop IS NULL AND ({' OR '.join(flag)}))"]
    )
    got = [int(n) for n in con.execute(f"SELECT {', '.join(agg)} FROM {stage}").fetchall()[0]]
    hits = got[2 : 2 + len(checks)]
    handled = got[2 + len(checks) : -2]
    return _Counts(got[0], got[1], hits, list(zip(drops + kept_checks, handled)), got[-2], got[-1])


def _raise_first_broken(
    con: duckdb.DuckDBPyConnection,
    table: str,
    stage: str,
    checks: list[Check],
    live: list[str],
    counts: _Counts,
    allow: set[str],
    origin: str = "",
) -> None:
    """Strict mode: raise on the first check some live row breaks, with three example rows
    (``_row`` and the check's ``show`` columns) and where the table was read from; a rule
    in ``allow`` is passed over."""
    for check, cond, n in zip(checks, live, counts.hits):
        if n and check.rule not in allow:
            show = ", ".join(_q(c) for c in dict.fromkeys(("_row", *check.show)))
            examples = con.execute(
                f"SELECT {show} FROM {stage} WHERE {cond} ORDER BY _row LIMIT 3"
            ).df()
            raise OmopValidationError(
                table,
                check.column,
                check.rule,
                f"{RULES[check.rule].text}; {n:,} of {counts.rows_in:,} rows"
                + (f" of {origin}" if origin else "")
                + f"; action here would be: {check.action}",
                rows=n,
                examples=examples,
            )


def _record(report: LoadReport, table: str, checks: list[Check], counts: _Counts) -> None:
    """Add the table to ``report`` (dropped, repaired and kept rows per column and rule) and
    assert that the report keeps as many rows as the ``_drop`` mark does."""
    buckets: dict[str, dict[tuple[str, str], int]] = {"drop": {}, "repair": {}, "keep": {}}
    for i, n in counts.handled:
        bucket = buckets[checks[i].action]
        key = (checks[i].column, checks[i].rule)
        bucket[key] = bucket.get(key, 0) + n
    report.add_table(
        table,
        counts.rows_in,
        buckets["drop"],
        buckets["repair"],
        buckets["keep"],
        counts.rows_repaired,
        counts.rows_flagged,
    )
    if counts.rows_kept != report.totals(table)["rows_kept"]:
        raise AssertionError(
            f"{table}: {counts.rows_kept} rows kept, report says {report.totals(table)}"
        )
