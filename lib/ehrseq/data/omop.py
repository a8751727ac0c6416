"""Read an OMOP CDM as it really is, validate it, and turn it into the event table.

The book's data chapter teaches the path ``tables -> events``: an OMOP Common Data Model
export (a folder of CSV, CSV.gz or parquet files, one per table, or a DuckDB database file)
becomes one long, sorted event table that follows the contract in
:mod:`ehrseq.data.events`, plus a person table and the observation periods.

DuckDB is the engine throughout: files are queried in place (``read_parquet``/``read_csv``),
so a large export never has to fit in pandas before it has been checked and reduced to the
columns the book uses. Only the columns that are used are required, which is how CDM 5.3 and
5.4 (and 5.2-era exports such as SynPUF) load through the same code.

Validation comes before use. Every row of every table that is read is counted in a
:class:`LoadReport`: kept as it is, kept with a repair, kept with a flag, or dropped, each
with its reason, and ``rows_in == rows_kept + rows_dropped`` holds per table. In
``mode="strict"`` the first rule that any row breaks raises :class:`OmopValidationError`
naming the table, the column, the rule and a few example rows.

The rules, in the order they are applied (the first *dropping* rule a row breaks is the one it
is counted under):

======================= ============ =================================================
rule                    action       what it checks
======================= ============ =================================================
``missing_table``       note         a table the load uses is absent (person: raise)
``missing_column``      drop         a column the load needs is absent (all rows)
``duplicate_row``       drop         the row repeats an earlier row in every column
``missing_id``          drop/repair  an id is empty: ``person_id`` drops the row, a
                                     ``*_concept_id`` becomes 0
``bad_id``              drop/repair  an id is not integer-like (``"12"``, ``"12.0"`` and
                                     ``12.0`` are): ``person_id`` drops the row, a
                                     concept id becomes 0, a visit id becomes NA
``unknown_person``      drop         ``person_id`` is not in the (validated) person table
``duplicate_key``       drop         ``person_id`` repeats in person or death,
                                     ``concept_id`` in concept (the first row, or the
                                     earliest death, stays)
``missing_date``        drop         no date and no datetime
``bad_date``            drop/repair  the date does not parse (ISO ``YYYY-MM-DD[ hh:mm:ss]``
                                     or ``YYYYMMDD``) or lies outside 1678-2261;
                                     repaired when the other of date/datetime is usable
``date_mismatch``       repair       the datetime falls on another day than the date
                                     (the date, at midnight, becomes the event time)
``end_before_start``    drop         an observation period ends before it starts
``bad_number``          repair       ``value_as_number`` is not a number (becomes NaN)
``concept_zero``        keep*        ``*_concept_id = 0``: "no matching concept"
``unknown_concept``     keep*        a non-zero concept id missing from CONCEPT
``dangling_visit``      keep*        ``visit_occurrence_id`` not in visit_occurrence
                                     (``repair`` sets it to NA)
``outside_observation`` keep*        the event date lies in none of the person's
                                     observation periods
``after_death``         keep*        the event date is after the person's death date
``duplicate_id``        keep*        the table's own id repeats with different content
``duplicate_event``     keep*        the row repeats an earlier row in every column but
                                     the table's own id
======================= ============ =================================================

``*``: configurable through ``actions={"after_death": "drop", ...}``.

Example::

    data = load_omop("../shared/data/synpuf_50")           # lenient: keeps going
    data.report                                             # what was kept, repaired, dropped
    events = data.events                                    # the event-table contract
    load_omop(path, mode="strict", allow=["concept_zero"])  # raise on anything else

Reference: OHDSI, *The Book of OHDSI*, ch. 4 "The Common Data Model" (2021), and the CDM
5.3/5.4 specifications at https://ohdsi.github.io/CommonDataModel/.
"""

from __future__ import annotations

import time as _time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from ehrseq.data.events import DOMAINS, EVENT_COLUMNS, check_events

__all__ = [
    "CONFIGURABLE",
    "DEATH_CONCEPT_ID",
    "RULES",
    "Cdm",
    "LoadReport",
    "OmopData",
    "OmopValidationError",
    "Rule",
    "load_omop",
    "open_cdm",
    "validate_omop",
]

DEATH_CONCEPT_ID = 4306655
"""The standard SNOMED concept "Death" given to every death event (the death table has no
concept of its own; its ``cause_concept_id`` is the cause, not the event)."""

TABLE_SUFFIXES = (".parquet", ".csv.gz", ".csv", ".tsv.gz", ".tsv")
DUCKDB_SUFFIXES = (".duckdb", ".ddb", ".db")
CSV_NULLS = ("", "NA", "NULL")  # R's write.csv writes NA; SQL dumps write NULL
MIN_DAY, MAX_DAY = "1678-01-01", "2261-12-31"  # the range datetime64[ns] can hold

_P = "_ehrseq_"  # prefix of every internal DuckDB object
_INT_TYPES = {
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
}
_FLOAT_TYPES = {"FLOAT", "DOUBLE", "REAL"}


# ----------------------------------------------------------------------------------------------
# Rules, the error, the report
# ----------------------------------------------------------------------------------------------


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
        Rule("concept_zero", "concept_id is 0 (no matching concept)", "keep", ("keep", "drop")),
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


class OmopValidationError(ValueError):
    """A CDM breaks a validation rule (raised in strict mode, or when nothing can be loaded).

    Attributes:
        table: the OMOP table, e.g. ``"condition_occurrence"``.
        column: the column the rule looks at (``""`` for a whole row).
        rule: the rule name, a key of :data:`RULES`.
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
    """

    source: str = ""
    mode: str = "lenient"
    cdm_version: str | None = None
    notes: list[str] = field(default_factory=list)
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
# SQL helpers: parse integer-like ids, dates and numbers whatever type the source stored
# ----------------------------------------------------------------------------------------------


def _q(name: str) -> str:
    """Quote an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    """Quote an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _is_text(typ: str) -> bool:
    return typ not in _INT_TYPES and typ not in _FLOAT_TYPES and not typ.startswith("DECIMAL")


def _blank(col: str, typ: str) -> str:
    """SQL: the value is missing (NULL, or an empty string in a text column)."""
    c = _q(col)
    if _is_text(typ) and not typ.startswith(("DATE", "TIMESTAMP")):
        return f"({c} IS NULL OR trim(CAST({c} AS VARCHAR)) = '')"
    return f"({c} IS NULL)"


def _as_int(col: str, typ: str) -> str:
    """SQL: an integer-like value as BIGINT (``12``, ``"12"``, ``"12.0"``, ``12.0``), else NULL."""
    c = _q(col)
    if typ in _INT_TYPES:
        return f"TRY_CAST({c} AS BIGINT)"
    if typ in _FLOAT_TYPES or typ.startswith("DECIMAL"):
        return f"(CASE WHEN {c} = trunc({c}) THEN TRY_CAST({c} AS BIGINT) END)"
    pattern = r"'^\s*([+-]?[0-9]+)(\.0*)?\s*$'"
    return f"TRY_CAST(regexp_extract(CAST({c} AS VARCHAR), {pattern}, 1) AS BIGINT)"


def _as_float(col: str, typ: str) -> str:
    """SQL: a number as DOUBLE, else NULL."""
    c = _q(col)
    if _is_text(typ):
        return f"TRY_CAST(trim(CAST({c} AS VARCHAR)) AS DOUBLE)"
    return f"TRY_CAST({c} AS DOUBLE)"


def _as_date(col: str, typ: str) -> str:
    """SQL: a DATE from DATE, TIMESTAMP, ISO text or ``YYYYMMDD`` text/integers, else NULL."""
    c = _q(col)
    if typ == "DATE":
        return c
    if typ.startswith("TIMESTAMP"):
        return f"CAST({c} AS DATE)"
    s = f"trim(CAST({c} AS VARCHAR))"
    return f"coalesce(TRY_CAST({s} AS DATE), CAST(try_strptime({s}, '%Y%m%d') AS DATE))"


def _as_datetime(col: str, typ: str) -> str:
    """SQL: a TIMESTAMP from TIMESTAMP, DATE (midnight), ISO text or ``YYYYMMDD``, else NULL."""
    c = _q(col)
    if typ.startswith("TIMESTAMP") or typ == "DATE":
        return f"CAST({c} AS TIMESTAMP)"
    s = f"trim(CAST({c} AS VARCHAR))"
    return f"coalesce(TRY_CAST({s} AS TIMESTAMP), try_strptime({s}, '%Y%m%d'))"


def _in_range(day: str) -> str:
    return f"({day} BETWEEN DATE '{MIN_DAY}' AND DATE '{MAX_DAY}')"


# ----------------------------------------------------------------------------------------------
# The CDM: a DuckDB connection with one view per table, column names in lower case
# ----------------------------------------------------------------------------------------------


def _table_name(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in TABLE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def _reader(con: duckdb.DuckDBPyConnection, pattern: str, kind: str) -> str:
    """The DuckDB table function that reads one table's file(s).

    A single CSV file is sniffed once here (delimiter, quoting, header, columns) and read with
    those settings pinned, so later queries neither sniff it again nor see it differently.
    """
    if kind == "parquet":
        return f"read_parquet({_lit(pattern)}, union_by_name = true)"
    nulls = f"nullstr = [{', '.join(_lit(s) for s in CSV_NULLS)}]"
    auto = (
        f"read_csv({_lit(pattern)}, header = true, all_varchar = true, "
        f"union_by_name = true, {nulls})"
    )
    if "*" in pattern:
        return auto
    try:
        sniff = con.execute(
            f"SELECT Delimiter, Quote, Escape, NewLineDelimiter, Comment, SkipRows, Columns "
            f"FROM sniff_csv({_lit(pattern)}, header = true, all_varchar = true, {nulls})"
        ).fetchall()[0]
    except duckdb.Error:
        return auto  # let the reader report the problem when the view is built
    delim, quote, escape, newline, comment, skip, columns = sniff

    def opt(value: str) -> str:
        return _lit("" if value == "(empty)" else value)

    cols = ", ".join(f"{_lit(c['name'])}: 'VARCHAR'" for c in columns)
    return (
        f"read_csv({_lit(pattern)}, auto_detect = false, header = true, delim = {opt(delim)}, "
        f"quote = {opt(quote)}, escape = {opt(escape)}, new_line = {opt(newline)}, "
        f"comment = {opt(comment)}, skip = {int(skip)}, columns = {{{cols}}}, {nulls})"
    )


def _kind(path: Path) -> str:
    return "parquet" if path.name.lower().endswith(".parquet") else "csv"


class Cdm:
    """An OMOP CDM opened in DuckDB: one view per table, every column name in lower case.

    Build it with :func:`open_cdm`. Files are queried in place; nothing is loaded until a
    query asks for it. The concept helpers (:meth:`concepts`, :meth:`ancestors`,
    :meth:`map_to_standard`) work on the vocabulary tables the export carries.

    Attributes:
        source: the folder or database file it was opened from.
        con: the DuckDB connection (an in-memory database holding the views).
        tables: table name -> where its rows come from.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, tables: dict[str, str], source: str):
        self.con = con
        self.tables = dict(sorted(tables.items()))
        self.source = source
        self._columns: dict[str, dict[str, str]] = {}
        self._counts: dict[str, int] = {}
        self.ancestor_source: str | None = None

    # -- basic access --------------------------------------------------------------------------
    def has(self, table: str) -> bool:
        """Whether the CDM has ``table`` (case-insensitive)."""
        return table.lower() in self.tables

    def columns(self, table: str) -> dict[str, str]:
        """Column name (lower case) -> DuckDB type of ``table``.

        Raises:
            OmopValidationError: if the table is absent (rule ``missing_table``).
        """
        table = table.lower()
        if table not in self.tables:
            raise OmopValidationError(
                table,
                "",
                "missing_table",
                f"no such table in {self.source}; present: {sorted(self.tables)}",
            )
        if table not in self._columns:
            # the relation API, not DESCRIBE: DESCRIBE reports an attached table's own
            # column names even through a view that renames them
            rel = self.con.sql(f"SELECT * FROM {_q(table)}")
            self._columns[table] = {c: str(t) for c, t in zip(rel.columns, rel.types)}
        return self._columns[table]

    def count(self, table: str) -> int:
        """Number of rows of ``table``."""
        table = table.lower()
        if table not in self._counts:
            self.columns(table)
            self._counts[table] = int(
                self.con.execute(f"SELECT count(*) FROM {_q(table)}").fetchall()[0][0]
            )
        return self._counts[table]

    def query(self, sql: str, params: Sequence[object] | None = None) -> pd.DataFrame:
        """Run SQL against the CDM's views and return a DataFrame."""
        return self.con.execute(sql, params or []).df()

    def table(
        self, name: str, columns: Sequence[str] | None = None, limit: int | None = None
    ) -> pd.DataFrame:
        """Read (part of) one table into pandas, as stored (no validation).

        Args:
            name: table name, case-insensitive.
            columns: columns to read (lower case); all when ``None``.
            limit: read at most this many rows.
        """
        types = self.columns(name)
        cols = ", ".join(_q(c) for c in columns) if columns else "*"
        missing = [c for c in (columns or []) if c not in types]
        if missing:
            raise OmopValidationError(
                name, missing[0], "missing_column", f"absent; present: {list(types)}"
            )
        sql = f"SELECT {cols} FROM {_q(name.lower())}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self.query(sql)

    @property
    def cdm_version(self) -> str | None:
        """``"5.3"``/``"5.4"`` from ``cdm_source.cdm_version``, else guessed from the columns.

        5.4 renamed ``visit_occurrence.admitting_source_concept_id`` to
        ``admitted_from_concept_id`` and added the ``episode`` table. A 5.2-era export
        without ``cdm_source`` (SynPUF) reads as ``"5.3"``.
        """
        if self.has("cdm_source") and "cdm_version" in self.columns("cdm_source"):
            got = self.con.execute("SELECT max(cdm_version) FROM cdm_source").fetchall()[0][0]
            if got:
                text = str(got).strip().lower().lstrip("v")
                return ".".join(text.split(".")[:2])
        if self.has("episode"):
            return "5.4"
        if self.has("visit_occurrence"):
            cols = self.columns("visit_occurrence")
            if "admitted_from_concept_id" in cols:
                return "5.4"
            if "admitting_source_concept_id" in cols:
                return "5.3"
        return None

    def close(self) -> None:
        """Close the DuckDB connection."""
        self.con.close()

    def __enter__(self) -> Cdm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Cdm({self.source!r}, {len(self.tables)} tables, cdm {self.cdm_version})"

    # -- concepts ------------------------------------------------------------------------------
    def _ids_view(self, concept_ids: Iterable[int]) -> str:
        ids = pd.DataFrame({"concept_id": pd.Series(list(concept_ids), dtype="int64")})
        self.con.register(f"{_P}ids", ids)
        return f"{_P}ids"

    def concepts(self, concept_ids: Iterable[int] | None = None) -> pd.DataFrame:
        """Rows of the CONCEPT table (name, vocabulary, domain, class, standard flag, code).

        Args:
            concept_ids: restrict to these ids; all concepts when ``None``. Ids missing from
                the table are simply absent from the result.

        Returns:
            a DataFrame with ``concept_id`` (int64) and whichever of ``concept_name,
            domain_id, vocabulary_id, concept_class_id, standard_concept, concept_code`` the
            table has.

        Raises:
            OmopValidationError: if the CDM has no CONCEPT table or it has no ``concept_id``.
        """
        types = self.columns("concept")
        if "concept_id" not in types:
            raise OmopValidationError("concept", "concept_id", "missing_column", "absent")
        wanted = [
            "concept_name",
            "domain_id",
            "vocabulary_id",
            "concept_class_id",
            "standard_concept",
            "concept_code",
        ]
        cols = ", ".join(f"c.{_q(c)}" for c in wanted if c in types)
        cid = _as_int("concept_id", types["concept_id"])
        sql = f"SELECT {cid} AS concept_id{', ' + cols if cols else ''} FROM concept c"
        if concept_ids is not None:
            view = self._ids_view(concept_ids)
            sql += f" WHERE {cid} IN (SELECT concept_id FROM {view})"
        frame = self.query(sql + " ORDER BY 1")
        return frame.dropna(subset=["concept_id"]).astype({"concept_id": "int64"})

    def concept_names(self, concept_ids: Iterable[int]) -> dict[int, str]:
        """``concept_id -> concept_name`` for the ids the CONCEPT table knows."""
        frame = self.concepts(concept_ids)
        if "concept_name" not in frame:
            return {}
        return dict(zip(frame["concept_id"].tolist(), frame["concept_name"].tolist()))

    def concept_ancestor(self) -> pd.DataFrame:
        """The ancestor table: ``ancestor_concept_id, descendant_concept_id,
        min_levels_of_separation, max_levels_of_separation`` (int64).

        Uses ``concept_ancestor`` when it has rows. Otherwise it builds the transitive closure
        of the valid ``Is a`` edges of ``concept_relationship`` (child ``concept_id_1`` is a
        ``concept_id_2``), breadth first, with a level-0 row for every concept in an edge.
        Unlike OHDSI's table, the closure also covers non-standard hierarchies (e.g. ICD-10
        ``Is a``) that the export carries. :attr:`ancestor_source` says which was used.

        Raises:
            ValueError: if the ``Is a`` graph has a cycle (a concept is its own ancestor).
        """
        self._ensure_ancestor()
        return self.query(f"SELECT * FROM {_P}ancestor ORDER BY 1, 2").astype("int64")

    def ancestors(self, concept_ids: Iterable[int], include_self: bool = True) -> pd.DataFrame:
        """The ancestors of each concept: ``concept_id, ancestor_concept_id,
        min_levels_of_separation``; each id is its own ancestor at level 0 if ``include_self``.
        """
        return self._related(concept_ids, "descendant", "ancestor", include_self)

    def descendants(self, concept_ids: Iterable[int], include_self: bool = True) -> pd.DataFrame:
        """The descendants of each concept: ``concept_id, descendant_concept_id,
        min_levels_of_separation`` (the concept itself at level 0 if ``include_self``)."""
        return self._related(concept_ids, "ancestor", "descendant", include_self)

    def _related(
        self, concept_ids: Iterable[int], me: str, other: str, include_self: bool
    ) -> pd.DataFrame:
        self._ensure_ancestor()
        view = self._ids_view(concept_ids)
        sql = f"""
            SELECT i.concept_id, a.{other}_concept_id, a.min_levels_of_separation
            FROM {view} i JOIN {_P}ancestor a ON a.{me}_concept_id = i.concept_id
            WHERE a.min_levels_of_separation > 0
        """
        if include_self:
            sql += f" UNION ALL SELECT DISTINCT concept_id, concept_id, 0 FROM {view}"
        frame = self.query(f"SELECT * FROM ({sql}) ORDER BY 1, 3, 2")
        return frame.astype("int64")

    def map_to_standard(self, concept_ids: Iterable[int] | None = None) -> pd.DataFrame:
        """Source -> standard concept pairs through valid ``Maps to`` rows.

        Args:
            concept_ids: the source concepts to map; every mapped concept when ``None``. A
                source can map to several standard concepts (one row each); an id without a
                mapping is absent (merge with ``how="left"`` and fill 0 to keep it).

        Returns:
            a DataFrame ``source_concept_id, concept_id`` (int64); empty, with a warning, if
            the CDM has no ``concept_relationship``.
        """
        empty = pd.DataFrame({"source_concept_id": [], "concept_id": []}, dtype="int64")
        if not self.has("concept_relationship"):
            warnings.warn(
                f"{self.source}: no concept_relationship table, nothing maps", stacklevel=2
            )
            return empty
        sql = self._relationship_sql("Maps to")
        sql = f"SELECT c1 AS source_concept_id, c2 AS concept_id FROM ({sql})"
        if concept_ids is not None:
            sql += f" WHERE c1 IN (SELECT concept_id FROM {self._ids_view(concept_ids)})"
        return self.query(sql + " ORDER BY 1, 2").astype("int64")

    def _relationship_sql(self, relationship_id: str) -> str:
        types = self.columns("concept_relationship")
        for col in ("concept_id_1", "concept_id_2", "relationship_id"):
            if col not in types:
                raise OmopValidationError("concept_relationship", col, "missing_column", "absent")
        valid = "TRUE"
        if "invalid_reason" in types:
            valid = _blank("invalid_reason", types["invalid_reason"])
        c1 = _as_int("concept_id_1", types["concept_id_1"])
        c2 = _as_int("concept_id_2", types["concept_id_2"])
        return (
            f"SELECT DISTINCT {c1} AS c1, {c2} AS c2 FROM concept_relationship "
            f"WHERE relationship_id = {_lit(relationship_id)} AND {valid} "
            f"AND {c1} IS NOT NULL AND {c2} IS NOT NULL"
        )

    def _ensure_ancestor(self, max_depth: int = 200) -> None:
        if self.ancestor_source is not None:
            return
        con, out = self.con, f"{_P}ancestor"
        if self.has("concept_ancestor") and self.count("concept_ancestor"):
            types = self.columns("concept_ancestor")
            cols = [
                "ancestor_concept_id",
                "descendant_concept_id",
                "min_levels_of_separation",
                "max_levels_of_separation",
            ]
            missing = [c for c in cols if c not in types]
            if missing:
                raise OmopValidationError(
                    "concept_ancestor", missing[0], "missing_column", f"absent; has {list(types)}"
                )
            select = ", ".join(f"{_as_int(c, types[c])} AS {c}" for c in cols)
            usable = " AND ".join(f"{c} IS NOT NULL" for c in cols)
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {out} AS SELECT * FROM "
                f"(SELECT {select} FROM concept_ancestor) WHERE {usable}"
            )
            self.ancestor_source = "concept_ancestor"
            return
        has_edges = self.has("concept_relationship")
        edges = (
            self._relationship_sql("Is a")
            if has_edges
            else "SELECT 1::BIGINT c1, 1::BIGINT c2 LIMIT 0"
        )
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {_P}isa AS SELECT * FROM ({edges}) WHERE c1 <> c2"
        )
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {_P}paths AS "
            f"SELECT c1 AS d, c2 AS a, 1 AS lvl FROM {_P}isa"
        )
        con.execute(f"CREATE OR REPLACE TEMP TABLE {_P}front AS SELECT * FROM {_P}paths")
        for _ in range(max_depth):
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {_P}front AS SELECT DISTINCT f.d, e.c2 AS a, "
                f"f.lvl + 1 AS lvl FROM {_P}front f JOIN {_P}isa e ON f.a = e.c1"
            )
            if not con.execute(f"SELECT count(*) FROM {_P}front").fetchall()[0][0]:
                break
            cycle = next(
                iter(con.execute(f"SELECT d FROM {_P}front WHERE d = a LIMIT 1").fetchall()), None
            )
            if cycle:
                raise ValueError(
                    f"concept_relationship: the 'Is a' graph has a cycle through concept {cycle[0]}"
                )
            con.execute(f"INSERT INTO {_P}paths SELECT * FROM {_P}front")
        else:
            raise ValueError(f"concept_relationship: 'Is a' chains deeper than {max_depth}")
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {out} AS
            SELECT a AS ancestor_concept_id, d AS descendant_concept_id,
                   min(lvl)::BIGINT AS min_levels_of_separation,
                   max(lvl)::BIGINT AS max_levels_of_separation
            FROM {_P}paths GROUP BY a, d
            UNION ALL
            SELECT c, c, 0, 0 FROM (SELECT c1 AS c FROM {_P}isa UNION SELECT c2 FROM {_P}isa)"""
        )
        for tmp in ("isa", "paths", "front"):
            con.execute(f"DROP TABLE IF EXISTS {_P}{tmp}")
        n_edges = self.count("concept_relationship") if has_edges else 0
        self.ancestor_source = "concept_relationship 'Is a' closure" if n_edges else "none"
        if not n_edges:
            warnings.warn(
                f"{self.source}: empty concept_ancestor and no 'Is a' edges: no hierarchy",
                stacklevel=3,
            )


def open_cdm(path: str | Path, *, schema: str | None = None, threads: int | None = None) -> Cdm:
    """Open an OMOP CDM from a folder of table files or a DuckDB database file.

    A folder holds one file per table, named by the table (``PERSON.csv``, ``person.parquet``,
    ``measurement.csv.gz``; case-insensitive), or one sub-folder per table holding parquet or
    CSV shards. CSV is read as text (types are checked by the validator, not guessed by the
    reader) with ``""``, ``NA`` and ``NULL`` as missing. Column names are normalised to lower
    case. A DuckDB file (``.duckdb``, ``.ddb``, ``.db``) is attached read-only.

    Args:
        path: the folder or the database file.
        schema: the schema of a DuckDB file holding the CDM; by default the one with a
            ``person`` table (``main`` first).
        threads: DuckDB worker threads (DuckDB's default when ``None``).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it holds no table files, two files claim the same table, two columns
            of one table differ only in case, or the database has no CDM schema.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no OMOP CDM at {path}")
    con = duckdb.connect()
    if threads is not None:
        con.execute(f"SET threads = {int(threads)}")
    sources: dict[str, tuple[str, str]] = {}  # table -> (FROM clause, origin)
    if path.is_dir():
        for entry in sorted(path.iterdir()):
            if entry.is_dir():
                shards = [p for p in sorted(entry.iterdir()) if _table_name(p) is not None]
                kinds = {_kind(p) for p in shards}
                if not shards or len(kinds) > 1:
                    continue
                table = entry.name.lower()
                suffix = next(s for s in TABLE_SUFFIXES if shards[0].name.lower().endswith(s))
                pattern = str(entry / f"*{suffix}")
                origin = f"{entry}/ ({len(shards)} files)"
                clause = _reader(con, pattern, kinds.pop())
            else:
                table = _table_name(entry)
                if table is None:
                    continue
                origin, clause = str(entry), _reader(con, str(entry), _kind(entry))
            if table in sources:
                raise ValueError(
                    f"two sources for table {table!r}: {sources[table][1]} and {origin}"
                )
            sources[table] = (clause, origin)
    elif path.name.lower().endswith(DUCKDB_SUFFIXES):
        try:
            con.execute(f"ATTACH {_lit(str(path))} AS {_P}src (READ_ONLY)")
        except duckdb.Error as err:
            raise ValueError(f"{path}: cannot open as a DuckDB database: {err}") from err
        found = con.execute(
            f"SELECT schema_name, table_name FROM duckdb_tables() "
            f"WHERE database_name = '{_P}src' AND NOT internal "
            f"UNION ALL SELECT schema_name, view_name FROM duckdb_views() "
            f"WHERE database_name = '{_P}src' AND NOT internal"
        ).fetchall()
        schemas = sorted({s for s, t in found if t.lower() == "person"})
        if schema is None:
            if not schemas:
                raise ValueError(f"{path}: no schema with a person table; tables: {found[:20]}")
            schema = "main" if "main" in schemas else schemas[0]
            if len(schemas) > 1 and schema != "main":
                raise ValueError(f"{path}: several CDM schemas {schemas}; pass schema=")
        elif schema not in {s for s, _ in found}:
            raise ValueError(
                f"{path}: no schema {schema!r}; schemas: {sorted({s for s, _ in found})}"
            )
        for s, t in found:
            if s == schema:
                name = f"{_P}src.{_q(s)}.{_q(t)}"
                if t.lower() in sources:
                    raise ValueError(f"{path}: tables {t!r} and another differ only in case")
                sources[t.lower()] = (name, f"{path}:{s}.{t}")
    else:
        raise ValueError(
            f"{path}: expected a folder of {TABLE_SUFFIXES} files or a DuckDB file "
            f"({', '.join(DUCKDB_SUFFIXES)})"
        )
    if not sources:
        raise ValueError(f"{path}: no table files ({', '.join(TABLE_SUFFIXES)}) found")
    tables: dict[str, str] = {}
    for table, (clause, origin) in sources.items():
        try:
            cols = list(con.sql(f"SELECT * FROM {clause}").columns)
        except duckdb.Error as err:
            raise ValueError(f"{origin}: cannot be read as table {table!r}: {err}") from err
        lower = [c.strip().lower() for c in cols]
        clash = sorted({c for c in lower if lower.count(c) > 1})
        if clash:
            raise ValueError(f"{origin}: columns {clash} appear twice once lower-cased")
        select = ", ".join(f"{_q(c)} AS {_q(lc)}" for c, lc in zip(cols, lower))
        con.execute(f"CREATE VIEW {_q(table)} AS SELECT {select} FROM {clause}")
        tables[table] = origin
    return Cdm(con, tables, str(path))


# ----------------------------------------------------------------------------------------------
# Validation and the event table
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _EventSpec:
    """Where one domain's events live in the CDM."""

    table: str
    domain: str
    key: str | None
    concept: str | None  # None: a fixed concept (death)
    source: str | None
    date: str
    datetime: str | None
    value: str | None = None
    unit: str | None = None
    visit: str | None = "visit_occurrence_id"


EVENT_SPECS: dict[str, _EventSpec] = {
    "visit": _EventSpec(
        "visit_occurrence",
        "visit",
        "visit_occurrence_id",
        "visit_concept_id",
        "visit_source_concept_id",
        "visit_start_date",
        "visit_start_datetime",
    ),
    "condition": _EventSpec(
        "condition_occurrence",
        "condition",
        "condition_occurrence_id",
        "condition_concept_id",
        "condition_source_concept_id",
        "condition_start_date",
        "condition_start_datetime",
    ),
    "procedure": _EventSpec(
        "procedure_occurrence",
        "procedure",
        "procedure_occurrence_id",
        "procedure_concept_id",
        "procedure_source_concept_id",
        "procedure_date",
        "procedure_datetime",
    ),
    "drug": _EventSpec(
        "drug_exposure",
        "drug",
        "drug_exposure_id",
        "drug_concept_id",
        "drug_source_concept_id",
        "drug_exposure_start_date",
        "drug_exposure_start_datetime",
    ),
    "measurement": _EventSpec(
        "measurement",
        "measurement",
        "measurement_id",
        "measurement_concept_id",
        "measurement_source_concept_id",
        "measurement_date",
        "measurement_datetime",
        "value_as_number",
        "unit_concept_id",
    ),
    "observation": _EventSpec(
        "observation",
        "observation",
        "observation_id",
        "observation_concept_id",
        "observation_source_concept_id",
        "observation_date",
        "observation_datetime",
        "value_as_number",
        "unit_concept_id",
    ),
    "death": _EventSpec(
        "death", "death", None, None, None, "death_date", "death_datetime", visit=None
    ),
}
_DOMAIN_RANK = {d: i for i, d in enumerate(EVENT_SPECS)}  # tie order at equal times


@dataclass(frozen=True)
class _Check:
    """A rule applied to one column of a staged table: ``cond`` is SQL over the stage."""

    rule: str
    column: str
    action: str
    cond: str
    show: tuple[str, ...] = ()


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
    """

    events: pd.DataFrame
    person: pd.DataFrame
    observation_period: pd.DataFrame
    report: LoadReport
    cdm: Cdm

    def __repr__(self) -> str:
        return (
            f"OmopData({self.cdm.source!r}: {len(self.person):,} persons, "
            f"{len(self.events):,} events, {len(self.observation_period):,} observation periods)"
        )


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
        self.allow = set(allow)
        unknown = self.allow - set(RULES)
        if unknown:
            raise ValueError(f"allow: unknown rules {sorted(unknown)}; rules are {list(RULES)}")
        self.actions = {n: RULES[n].action for n in CONFIGURABLE}
        for name, action in (actions or {}).items():
            if name not in CONFIGURABLE:
                raise ValueError(
                    f"actions: {name!r} is not configurable; choose from {CONFIGURABLE}"
                )
            if action not in RULES[name].choices:
                raise ValueError(
                    f"actions[{name!r}] = {action!r}; choose from {RULES[name].choices}"
                )
            self.actions[name] = action
        self.explicit_domains = domains is not None
        self.domains = list(DOMAINS if domains is None else domains)
        bad = [d for d in self.domains if d not in EVENT_SPECS]
        if bad:
            raise ValueError(f"domains: unknown {bad}; choose from {DOMAINS}")
        self.report = LoadReport(source=cdm.source, mode=mode, cdm_version=cdm.cdm_version)
        self.staged: dict[str, str] = {}  # domain -> checked table name
        self.temp: list[str] = []  # every DuckDB table this run creates, dropped at the end
        self.kept: dict[str, int] = {}
        self.has_concepts = self.has_op = self.has_death = self.has_visits = False
        self.visit_checked: dict[str, bool] = {}  # domain -> rule dangling_visit applied

    # -- the rule engine -------------------------------------------------------------------------
    def _fail(self, table: str, column: str, rule: str, detail: str) -> None:
        """Strict: raise. Lenient: write a note."""
        if self.mode == "strict" and rule not in self.allow:
            raise OmopValidationError(table, column, rule, detail)
        self.report.notes.append(f"{table}: {detail}")

    def _apply(self, table: str, stage: str, select: str, checks: list[_Check]) -> str:
        """Materialise ``select`` as the temp table ``stage`` with each row's ``_drop`` mark,
        count every check, raise in strict mode; return the table name.

        A row is dropped under the first dropping check it fails (``_drop`` is that check's
        index). Strict mode raises on the first check, in order, that some row fails and no
        earlier dropping check already removed.
        """
        conds = [f"coalesce(({c.cond}), FALSE)" for c in checks]
        drops = [i for i, c in enumerate(checks) if c.action == "drop"]
        case = " ".join(f"WHEN {conds[i]} THEN {i}" for i in drops)
        drop_expr = f"CASE {case} END" if drops else "NULL::INTEGER"
        checked = stage
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {checked} AS "
            f"SELECT *, {drop_expr} AS _drop FROM ({select})"
        )
        live = [f"{c} AND (_drop IS NULL OR _drop >= {i})" for i, c in enumerate(conds)]
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
        got = [
            int(n)
            for n in self.con.execute(f"SELECT {', '.join(agg)} FROM {checked}").fetchall()[0]
        ]
        rows_in, rows_kept = got[0], got[1]
        hits = got[2 : 2 + len(checks)]
        n_drop = got[2 + len(checks) : 2 + len(checks) + len(drops)]
        n_kept = got[2 + len(checks) + len(drops) : -2]
        if self.mode == "strict":
            for check, cond, n in zip(checks, live, hits):
                if n and check.rule not in self.allow:
                    show = ", ".join(_q(c) for c in dict.fromkeys(("_row", *check.show)))
                    examples = self.con.execute(
                        f"SELECT {show} FROM {checked} WHERE {cond} ORDER BY _row LIMIT 3"
                    ).df()
                    raise OmopValidationError(
                        table,
                        check.column,
                        check.rule,
                        f"{RULES[check.rule].text}; {n:,} of {rows_in:,} rows; "
                        f"action here would be: {check.action}",
                        rows=n,
                        examples=examples,
                    )
        counts: dict[str, dict[tuple[str, str], int]] = {"drop": {}, "repair": {}, "keep": {}}
        for i, n in zip(drops + kept_checks, n_drop + n_kept):
            bucket = counts[checks[i].action]
            key = (checks[i].column, checks[i].rule)
            bucket[key] = bucket.get(key, 0) + n
        self.report.add_table(
            table, rows_in, counts["drop"], counts["repair"], counts["keep"], got[-2], got[-1]
        )
        if rows_kept != self.report.totals(table)["rows_kept"]:
            raise AssertionError(
                f"{table}: {rows_kept} rows kept, report says {self.report.totals(table)}"
            )
        return checked

    def _missing_columns(self, table: str, missing: list[str], fatal: bool) -> bool:
        """Handle absent required columns; return True when the table cannot be used."""
        if not missing:
            return False
        types = self.cdm.columns(table)
        detail = f"required column(s) {missing} absent; present: {list(types)}"
        if fatal or (self.mode == "strict" and "missing_column" not in self.allow):
            raise OmopValidationError(table, missing[0], "missing_column", detail)
        n = self.cdm.count(table)
        self.report.add_table(table, n, {(missing[0], "missing_column"): n}, {}, {}, 0, 0)
        self.report.notes.append(f"{table}: {detail}; all {n:,} rows dropped")
        return True

    # -- reference tables ------------------------------------------------------------------------
    def _stage_concept(self) -> None:
        cdm = self.cdm
        if not cdm.has("concept"):
            self.report.notes.append("concept: table absent; rule unknown_concept not checked")
            return
        types = cdm.columns("concept")
        if self._missing_columns("concept", [c for c in ["concept_id"] if c not in types], False):
            return
        stage = f"{_P}concept"
        self.temp.append(stage)
        cid = _as_int("concept_id", types["concept_id"])
        select = f"""
            SELECT *, CASE WHEN _cid IS NULL THEN 1
                      ELSE row_number() OVER (PARTITION BY _cid ORDER BY _row) END AS _rn_key
            FROM (SELECT row_number() OVER () AS _row, concept_id, {cid} AS _cid,
                         {_blank("concept_id", types["concept_id"])} AS _b FROM concept)"""
        checked = self._apply(
            "concept",
            stage,
            select,
            [
                _Check("missing_id", "concept_id", "drop", "_b", ("concept_id",)),
                _Check("bad_id", "concept_id", "drop", "_cid IS NULL", ("concept_id",)),
                _Check("duplicate_key", "concept_id", "drop", "_rn_key > 1", ("concept_id",)),
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
        cdm = self.cdm
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
        if "gender_concept_id" not in types:
            self.report.notes.append("person: no gender_concept_id column; gender set to 0")
        every = ", ".join(_q(c) for c in types)
        ymd = (
            "TRY_CAST(printf('%04d-%02d-%02d', _year_of_birth, coalesce(_month_of_birth, 1), "
            "coalesce(_day_of_birth, 1)) AS DATE)"
        )
        stage = f"{_P}person"
        self.temp.append(stage)
        select = f"""
            WITH src AS (SELECT row_number() OVER () AS _row, * FROM person),
            p AS (SELECT _row, {", ".join(_q(c) for c in raw)}, {", ".join(parts)},
                         row_number() OVER (PARTITION BY {every} ORDER BY _row) AS _rn_all
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
        show = ("person_id", "year_of_birth", "birth_datetime")
        show = tuple(c for c in show if c in types)
        g = ("person_id", "gender_concept_id") if "gender_concept_id" in types else ()
        checks = [
            _Check("duplicate_row", "", "drop", "_rn_all > 1", show),
            _Check("missing_id", "person_id", "drop", "_b_person", show),
            _Check("bad_id", "person_id", "drop", "_person_id IS NULL", show),
            _Check("duplicate_key", "person_id", "drop", "_rn_key > 1", show),
            _Check(
                "missing_date",
                "year_of_birth",
                "drop",
                "_b_year_of_birth AND _b_birth_datetime",
                show,
            ),
            _Check("bad_date", "year_of_birth", "drop", "_birth IS NULL", show),
            _Check(
                "bad_date",
                "birth_datetime",
                "repair",
                "NOT _b_birth_datetime AND NOT _bdt_ok",
                show,
            ),
        ]
        if g:
            checks += [
                _Check("missing_id", "gender_concept_id", "repair", "_b_gender_concept_id", g),
                _Check(
                    "bad_id",
                    "gender_concept_id",
                    "repair",
                    "NOT _b_gender_concept_id AND _gender_concept_id IS NULL",
                    g,
                ),
                _Check("concept_zero", "gender_concept_id", "keep", "_gender_concept_id = 0", g),
            ]
        checked = self._apply("person", stage, select, checks)
        self.con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {_P}persons AS
            SELECT _person_id AS person_id, _birth AS birth_datetime,
                   coalesce(_gender_concept_id, 0) AS gender_concept_id
            FROM {checked} WHERE _drop IS NULL"""
        )
        self.con.execute(f"DROP TABLE {checked}")

    def _stage_observation_period(self) -> None:
        cdm, t = self.cdm, "observation_period"
        if not cdm.has(t):
            self._fail(t, "", "missing_table", "table absent; rule outside_observation not checked")
            return
        types = cdm.columns(t)
        start, end = "observation_period_start_date", "observation_period_end_date"
        missing = [c for c in ("person_id", start, end) if c not in types]
        if self._missing_columns(t, missing, fatal=False):
            self.report.notes.append(f"{t}: unusable; rule outside_observation not checked")
            return
        every = ", ".join(_q(c) for c in types)
        stage = f"{_P}op"
        self.temp.append(stage)
        select = f"""
            WITH src AS (SELECT row_number() OVER () AS _row, * FROM {t}),
            p AS (SELECT _row, person_id, {start}, {end},
                    {_as_int("person_id", types["person_id"])} AS _person_id,
                    {_blank("person_id", types["person_id"])} AS _b_person,
                    {_as_date(start, types[start])} AS _start,
                    {_as_date(end, types[end])} AS _end,
                    {_blank(start, types[start])} AS _b_start,
                    {_blank(end, types[end])} AS _b_end,
                    row_number() OVER (PARTITION BY {every} ORDER BY _row) AS _rn_all
                  FROM src)
            SELECT *, _person_id IN (SELECT person_id FROM {_P}persons) AS _person_known,
                   {_in_range("_start")} AS _start_ok, {_in_range("_end")} AS _end_ok
            FROM p"""
        show = ("person_id", start, end)
        checked = self._apply(
            t,
            stage,
            select,
            [
                _Check("duplicate_row", "", "drop", "_rn_all > 1", show),
                _Check("missing_id", "person_id", "drop", "_b_person", show),
                _Check("bad_id", "person_id", "drop", "_person_id IS NULL", show),
                _Check("unknown_person", "person_id", "drop", "NOT _person_known", show),
                _Check("missing_date", start, "drop", "_b_start", show),
                _Check("missing_date", end, "drop", "_b_end", show),
                _Check("bad_date", start, "drop", "NOT _start_ok", show),
                _Check("bad_date", end, "drop", "NOT _end_ok", show),
                _Check("end_before_start", end, "drop", "_end < _start", show),
            ],
        )
        self.con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {_P}ops AS
            SELECT _person_id AS person_id, _start AS start_day, _end AS end_day
            FROM {checked} WHERE _drop IS NULL"""
        )
        self.con.execute(f"DROP TABLE {checked}")
        self.has_op = True

    # -- event tables ----------------------------------------------------------------------------
    def _stage_events(self, spec: _EventSpec) -> str | None:
        """Stage and check one event table; return the checked table or None if unusable."""
        cdm, t = self.cdm, spec.table
        types = cdm.columns(t)

        def have(col: str | None) -> bool:
            return col is not None and col in types

        missing = [c for c in ("person_id", spec.concept) if c and c not in types]
        if not have(spec.date) and not have(spec.datetime):
            missing.append(spec.date)
        if self._missing_columns(t, missing, fatal=False):
            return None
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
            )
            if have(c)
        ]
        raw = list(dict.fromkeys(raw))

        def parsed(col: str | None, conv, null: str, name: str) -> list[str]:
            if have(col):
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
        parts += parsed(spec.value, _as_float, "NULL::DOUBLE", "value")
        parts += parsed(spec.unit, _as_int, "NULL::BIGINT", "unit")
        own_visit = spec.domain == "visit"
        parts += parsed(spec.visit, _as_int, "NULL::BIGINT", "visit_id")
        every = ", ".join(_q(c) for c in types)
        windows = [f"row_number() OVER (PARTITION BY {every} ORDER BY _row) AS _rn_all"]
        if have(spec.key):
            k = _q(spec.key)
            rest = ", ".join(_q(c) for c in types if c != spec.key) or "1"
            windows.append(
                f"CASE WHEN {k} IS NULL THEN 1 ELSE row_number() OVER "
                f"(PARTITION BY {k} ORDER BY _row) END AS _rn_id"
            )
            windows.append(f"row_number() OVER (PARTITION BY {rest} ORDER BY _row) AS _rn_event")
        else:
            windows += ["1 AS _rn_id", "1 AS _rn_event"]
        known_visit = "FALSE"
        if self.has_visits and not own_visit and have(spec.visit):
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
        rn_key = "1"  # death: one row per person, the earliest dated one stays
        if spec.domain == "death":
            rn_key = (
                "CASE WHEN d._person_id IS NULL THEN 1 ELSE row_number() OVER ("
                "PARTITION BY d._person_id ORDER BY d._day NULLS LAST, d._row) END"
            )
        stage = f"{_P}stage_{spec.domain}"
        self.temp.append(stage)
        select = f"""
            WITH src AS (SELECT row_number() OVER () AS _row, * FROM {t}),
            p AS (SELECT _row, {", ".join(_q(c) for c in raw)}, {", ".join(parts)},
                         {", ".join(windows)} FROM src),
            q AS (SELECT *, _d IS NOT NULL AND {_in_range("_d")} AS _d_ok,
                            _dt IS NOT NULL AND {_in_range("CAST(_dt AS DATE)")} AS _dt_ok
                  FROM p),
            d AS (SELECT *,
                    CASE WHEN _d_ok THEN _d WHEN _dt_ok THEN CAST(_dt AS DATE) END AS _day,
                    CASE WHEN _dt_ok AND (NOT _d_ok OR CAST(_dt AS DATE) = _d) THEN _dt
                         WHEN _d_ok THEN CAST(_d AS TIMESTAMP) END AS _time,
                    {known_visit} AS _visit_known
                  FROM q)
            SELECT d.*,
                   d._person_id IN (SELECT person_id FROM {_P}persons) AS _person_known,
                   {concept_known} AS _concept_known,
                   {outside} AS _outside, coalesce({after}, FALSE) AS _after_death,
                   {rn_key} AS _rn_key
            FROM d {death_join}"""
        show = tuple(c for c in (spec.key, "person_id") if have(c))
        date_show = tuple(c for c in (spec.date, spec.datetime) if have(c))
        date_col = spec.date if have(spec.date) else spec.datetime
        checks = [
            _Check("duplicate_row", "", "drop", "_rn_all > 1", show + date_show),
            _Check("missing_id", "person_id", "drop", "_b_person_id", show),
            _Check("bad_id", "person_id", "drop", "_person_id IS NULL", show),
            _Check("unknown_person", "person_id", "drop", "NOT _person_known", show),
            _Check("missing_date", date_col, "drop", "_b_d AND _b_dt", show + date_show),
            _Check("bad_date", date_col, "drop", "_day IS NULL", show + date_show),
        ]
        if spec.domain == "death":
            checks.append(
                _Check("duplicate_key", "person_id", "drop", "_rn_key > 1", show + date_show)
            )
        if have(spec.date):
            checks.append(
                _Check("bad_date", spec.date, "repair", "NOT _b_d AND NOT _d_ok", show + date_show)
            )
        if have(spec.datetime):
            checks.append(
                _Check(
                    "bad_date",
                    spec.datetime,
                    "repair",
                    "NOT _b_dt AND NOT _dt_ok",
                    show + date_show,
                )
            )
        if have(spec.date) and have(spec.datetime):
            cond = "_d_ok AND _dt_ok AND CAST(_dt AS DATE) <> _d"
            checks.append(_Check("date_mismatch", spec.datetime, "repair", cond, show + date_show))
        a = self.actions
        if spec.concept:
            c = show + (spec.concept,)
            checks += [
                _Check("missing_id", spec.concept, "repair", "_b_concept_id", c),
                _Check(
                    "bad_id", spec.concept, "repair", "NOT _b_concept_id AND _concept_id IS NULL", c
                ),
            ]
        for col, name in (
            (spec.source, "source_id"),
            (spec.unit, "unit"),
            (spec.visit, "visit_id"),
        ):
            if have(col):
                cond = f"NOT _b_{name} AND _{name} IS NULL"
                checks.append(_Check("bad_id", col, "repair", cond, show + (col,)))
        if have(spec.value):
            cond = "NOT _b_value AND _value IS NULL"
            checks.append(_Check("bad_number", spec.value, "repair", cond, show + (spec.value,)))
        if spec.concept:
            c = show + (spec.concept,)
            checks.append(
                _Check("concept_zero", spec.concept, a["concept_zero"], "_concept_id = 0", c)
            )
            if self.has_concepts:
                cond = "_concept_id <> 0 AND NOT _concept_known"
                checks.append(
                    _Check("unknown_concept", spec.concept, a["unknown_concept"], cond, c)
                )
        if known_visit != "FALSE":
            cond = "_visit_id IS NOT NULL AND NOT _visit_known"
            checks.append(
                _Check(
                    "dangling_visit", spec.visit, a["dangling_visit"], cond, show + (spec.visit,)
                )
            )
        if self.has_op:
            checks.append(
                _Check(
                    "outside_observation",
                    date_col,
                    a["outside_observation"],
                    "_outside",
                    show + date_show,
                )
            )
        if after != "FALSE":
            checks.append(
                _Check("after_death", date_col, a["after_death"], "_after_death", show + date_show)
            )
        if have(spec.key):
            checks += [
                _Check(
                    "duplicate_id",
                    spec.key,
                    a["duplicate_id"],
                    "_rn_all = 1 AND _rn_id > 1",
                    show + date_show,
                ),
                _Check(
                    "duplicate_event",
                    "",
                    a["duplicate_event"],
                    "_rn_all = 1 AND _rn_event > 1",
                    show + date_show,
                ),
            ]
        self.visit_checked[spec.domain] = known_visit != "FALSE"
        return self._apply(t, stage, select, checks)

    def _output_sql(self, spec: _EventSpec, checked: str) -> str:
        visit = "_visit_id"
        if self.actions["dangling_visit"] == "repair" and self.visit_checked[spec.domain]:
            visit = (
                "CASE WHEN _visit_id IS NOT NULL AND NOT _visit_known THEN NULL ELSE _visit_id END"
            )
        return f"""SELECT _person_id AS person_id, _time AS time,
                   coalesce(_concept_id, 0) AS concept_id,
                   coalesce(_source_id, 0) AS source_concept_id,
                   '{spec.domain}' AS domain, _value AS value_as_number,
                   coalesce(_unit, 0) AS unit_concept_id, {visit} AS visit_occurrence_id,
                   {_DOMAIN_RANK[spec.domain]} AS _rank, _row
            FROM {checked} WHERE _drop IS NULL"""

    # -- the whole run ---------------------------------------------------------------------------
    def run(self, build: bool) -> OmopData | LoadReport:
        """Validate every table, then (``build``) assemble the outputs; always clean up."""
        try:
            return self._run(build)
        finally:
            for name in self.temp + [
                f"{_P}{n}" for n in ("concepts", "persons", "ops", "deaths", "visits")
            ]:
                self.con.execute(f"DROP TABLE IF EXISTS {name}")

    def _run(self, build: bool) -> OmopData | LoadReport:
        t0 = _time.perf_counter()
        self._stage_concept()
        self._stage_person()
        self._stage_observation_period()
        cdm = self.cdm
        # death and visits are staged first (other tables check against them) whether or not
        # they are emitted as events.
        order = ["death", "visit"] + [d for d in EVENT_SPECS if d not in ("death", "visit")]
        for domain in order:
            spec = EVENT_SPECS[domain]
            wanted = domain in self.domains
            if not cdm.has(spec.table):
                if wanted and self.explicit_domains:
                    self._fail(spec.table, "", "missing_table", f"table absent; no {domain} events")
                elif wanted or domain in ("death", "visit"):
                    what = {"death": "rule after_death", "visit": "rule dangling_visit"}.get(domain)
                    extra = f"; {what} not checked" if what else ""
                    self.report.notes.append(f"{spec.table}: table absent{extra}")
                continue
            if not wanted and domain not in ("death", "visit"):
                continue
            checked = self._stage_events(spec)
            if checked is None:
                continue
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
                self.staged[domain] = checked
                self.kept[domain] = self.report.totals(spec.table)["rows_kept"]
            else:
                self.con.execute(f"DROP TABLE {checked}")
        if not self.staged:
            raise OmopValidationError(
                "", "", "missing_table", f"no usable event table for domains {self.domains}"
            )
        self.report.seconds["validate"] = _time.perf_counter() - t0
        if not build:
            return self.report
        t1 = _time.perf_counter()
        union = " UNION ALL ".join(
            self._output_sql(EVENT_SPECS[d], c) for d, c in self.staged.items()
        )
        events = self.con.execute(
            f"""SELECT person_id, time, concept_id, source_concept_id, domain, value_as_number,
                       unit_concept_id, visit_occurrence_id
                FROM ({union})
                ORDER BY person_id, time, _rank, concept_id, source_concept_id, _row"""
        ).df()
        events = _to_contract(events)
        counts = events["domain"].value_counts()
        for domain, n in self.kept.items():
            if int(counts.get(domain, 0)) != n:
                raise AssertionError(f"{domain}: {counts.get(domain, 0)} events, {n} rows kept")
        check_events(events)
        person = self.con.execute(f"SELECT * FROM {_P}persons ORDER BY person_id").df()
        person = person.astype({"person_id": "int64", "gender_concept_id": "int64"})
        person["birth_datetime"] = person["birth_datetime"].astype("datetime64[ns]")
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
        op = op.astype(
            {
                "person_id": "int64",
                "observation_period_start_date": "datetime64[ns]",
                "observation_period_end_date": "datetime64[ns]",
            }
        )
        self.report.seconds["events"] = _time.perf_counter() - t1
        return OmopData(events, person, op, self.report, cdm)


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


def _as_cdm(source: str | Path | Cdm) -> Cdm:
    return source if isinstance(source, Cdm) else open_cdm(source)


def load_omop(
    source: str | Path | Cdm,
    *,
    mode: str = "lenient",
    domains: Sequence[str] | None = None,
    actions: Mapping[str, str] | None = None,
    allow: Iterable[str] = (),
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

    Returns:
        an :class:`OmopData` with ``events``, ``person``, ``observation_period``, ``report``
        and the open ``cdm``.

    Raises:
        OmopValidationError: in strict mode, naming the table, column, rule and example rows;
            in either mode when the person table or all event tables are unusable.
        ValueError: on an unknown mode, domain, rule or action.
    """
    cdm = _as_cdm(source)
    result = _Loader(cdm, mode, domains, actions, allow).run(build=True)
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
