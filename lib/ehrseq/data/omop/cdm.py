"""The CDM access layer: open an export in DuckDB and query it; where each domain lives.

:func:`open_cdm` turns a folder of table files (CSV, CSV.gz, TSV, parquet, or one sub-folder
of shards per table) or a DuckDB database file into a :class:`Cdm`: one view per table, every
column name in lower case, nothing read until a query asks. :class:`Cdm` reads tables and the
vocabulary (concepts, ``Maps to``, the ancestor hierarchy). :data:`EVENT_SPECS` names, per
domain, the table and columns the loader in :mod:`ehrseq.data.omop.loader` reads.

Nothing here validates rows; a missing table or column raises
:class:`~ehrseq.data.omop.rules.OmopValidationError` when it is asked for.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ehrseq.data.omop.rules import OmopValidationError
from ehrseq.data.omop.sql import _P, _as_int, _blank, _lit, _q

__all__ = [
    "CDM_TABLES",
    "CSV_NULLS",
    "DEATH_CONCEPT_ID",
    "DUCKDB_SUFFIXES",
    "EVENT_SPECS",
    "TABLE_SUFFIXES",
    "Cdm",
    "EventSpec",
    "TableIssue",
    "connect",
    "open_cdm",
]

DEATH_CONCEPT_ID = 4306655
"""The standard SNOMED concept "Death" given to every death event (the death table has no
concept of its own; its ``cause_concept_id`` is the cause, not the event)."""

TABLE_SUFFIXES = (".parquet", ".csv.gz", ".csv", ".tsv.gz", ".tsv")
DUCKDB_SUFFIXES = (".duckdb", ".ddb", ".db")
CSV_NULLS = ("", "NA", "NULL")  # R's write.csv writes NA; SQL dumps write NULL


def _table_name(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in TABLE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


CDM_TABLES = (
    # clinical data
    "person", "observation_period", "visit_occurrence", "visit_detail",
    "condition_occurrence", "drug_exposure", "procedure_occurrence", "device_exposure",
    "measurement", "observation", "death", "note", "note_nlp", "specimen",
    "fact_relationship", "episode", "episode_event",
    # health system, economics, derived
    "location", "location_history", "care_site", "provider", "payer_plan_period",
    "cost",
    "drug_era", "dose_era", "condition_era", "cohort", "cohort_definition",
    "cohort_attribute", "attribute_definition",
    # metadata and vocabulary
    "cdm_source", "metadata", "concept", "vocabulary", "domain", "concept_class",
    "concept_relationship", "relationship", "concept_synonym", "concept_ancestor",
    "source_to_concept_map", "drug_strength",
)  # fmt: skip
"""The table names of the OMOP CDM 5.3 and 5.4 that a file name is matched against."""

# a file name's parts around a CDM table name: an ETL prefix ("cdm_", "omop.", "2b_"),
# a shard number or version ("_000", "-part-1", "-v5")
_AFFIX = r"[_.\- ]"
_SUFFIX = re.compile(rf"{_AFFIX}(?:part{_AFFIX}?|v)?\d+")


def _cdm_table(stem: str) -> tuple[str, str]:
    """The CDM table a file or folder name names (lower case, suffix removed), and the
    ETL prefix and suffix around it (``""``: none). ``cdm_person`` -> person,
    ``person_000`` -> person, ``omop.condition_occurrence`` -> condition_occurrence;
    the longest table name wins (``cdm_concept_class`` is concept_class). A name that
    holds no CDM table name is its own table."""
    name = stem.strip().lower()
    if name in CDM_TABLES:
        return name, ""
    best = ""
    for table in CDM_TABLES:
        start = name.find(table)
        while start >= 0 and len(table) > len(best):
            before, after = name[:start], name[start + len(table) :]
            if (not before or re.fullmatch(rf".*{_AFFIX}", before)) and (
                not after or _SUFFIX.fullmatch(after)
            ):
                best = table
                break
            start = name.find(table, start + 1)
    if not best:
        return name, ""
    return best, name


def _kind(path: Path) -> str:
    return "parquet" if path.name.lower().endswith(".parquet") else "csv"


@dataclass(frozen=True)
class TableIssue:
    """A structural problem of one table, found when the CDM is opened (no single row's fault).

    The loader raises it in strict mode (unless its rule is in ``allow=``); in lenient mode
    it applies it as a check: the rows where ``cond`` holds get ``action`` and are counted.

    Attributes:
        rule: a key of :data:`~ehrseq.data.omop.rules.RULES`.
        column: the column it concerns (``""``: the whole table).
        detail: what was found, naming the file(s), what lenient mode does, and the fix.
        cond: SQL over the table's view, true on the rows it touches.
        action: ``"drop"``, ``"repair"`` or ``"keep"``.
        extra_rows: rows the file holds that the view does not show (a data row read as the
            header); counted as read and dropped.
        lines: example lines of the file as ``(file, line number, text)``, for an error
            about a problem that no row of the view shows (a header-less file).
    """

    rule: str
    column: str
    detail: str
    cond: str = "TRUE"
    action: str = "keep"
    extra_rows: int = 0
    lines: tuple[tuple[str, int, str], ...] = ()


@dataclass
class _Source:
    """Where one table's rows come from, and what opening it found."""

    clause: str  # the FROM clause
    origin: str  # the file(s) or database table, for messages
    raw_names: list[str] | None = None  # column names as the file spells them
    rejects: str | None = None  # temp table where DuckDB puts CSV lines it cannot parse
    issues: list[TableIssue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)  # files with no header and no rows


_CHUNK = 1 << 23  # bytes per read of the streaming pass over a CSV file


def _opener(path: Path):
    return gzip.open if path.name.lower().endswith(".gz") else open


def _scan_csv(path: Path) -> tuple[str, bool, bool]:
    """One streaming pass over a CSV file's bytes: its encoding (``"utf-8"``, else
    ``"latin-1"``, which every byte sequence is), whether it holds anything but blank
    space (a 0-byte file has no header and no rows), and whether a double quote appears
    anywhere (then the reader quotes with it, wherever the first quoted line is).

    Raises:
        OSError, EOFError: the file (or its gzip stream) cannot be read to the end.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    encoding, blank, quoted = "utf-8", True, False
    with _opener(path)(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            if blank and chunk.lstrip(b"\xef\xbb\xbf \t\r\n"):
                blank = False
            quoted = quoted or b'"' in chunk
            if encoding == "utf-8":
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    encoding = "latin-1"
        if encoding == "utf-8":
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                encoding = "latin-1"
    return encoding, blank, quoted


def _longest_line(path: Path) -> int:
    """The length in bytes of the longest line of a CSV file (a second pass, only when
    DuckDB's default maximum line size is too small for the file)."""
    longest, carry = 0, 0
    with _opener(path)(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            parts = chunk.split(b"\n")
            lens = [len(x) for x in parts]
            lens[0] += carry
            longest = max(longest, max(lens[:-1], default=0))
            carry = lens[-1] if len(parts) > 1 else lens[0]
    return max(longest, carry)


def _line_texts(path: Path, numbers: list[int], encoding: str) -> list[tuple[str, int, str]]:
    """``(file, number, text)`` of the given 1-based physical lines of a text file (each cut
    to 200 characters), for error messages."""
    want, out = set(numbers), []
    try:
        with _opener(path)(path, "rt", encoding=encoding, errors="replace", newline="") as fh:
            for i, line in enumerate(fh, 1):
                if i in want:
                    out.append((str(path), i, line.rstrip("\r\n")[:200]))
                if i >= max(want, default=0):
                    break
    except (OSError, EOFError):
        pass
    return out


# a header cell that is a value, not a name: a number, an ISO or YYYYMMDD date
_NOT_A_NAME = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|\d{4}-\d{2}-\d{2}.*")
_NULLS = f"nullstr = [{', '.join(_lit(s) for s in CSV_NULLS)}]"


def _csv_header(path: Path, delim: str, quote: str, encoding: str) -> list[str]:
    """The first record of a CSV file split with its dialect: the names as written."""
    with _opener(path)(path, "rt", encoding=encoding, errors="replace", newline="") as fh:
        fh.read(1) == "\ufeff" or fh.seek(0)  # a byte-order mark is not part of the name
        return next(csv.reader(fh, delimiter=delim or ",", quotechar=quote or None), [])


_MAX_LINE = 2_097_152  # DuckDB's default maximum line size (bytes)


def _sniff(con: duckdb.DuckDBPyConnection, path: Path, options: str) -> tuple | None:
    """Sniff one CSV file's delimiter, quoting and columns on DuckDB's sample of lines,
    header forced, with the reader ``options`` (encoding, line size); when ragged lines keep
    the sniffer from a verdict, or make it settle for one column (a few lines in a small
    file that disagree), again passing over the lines that do not fit. Every line is then
    verified when it is read: a line that does not fit is a counted ``malformed_line``."""
    found = None
    for extra in ("", ", ignore_errors = true"):
        try:
            got = con.execute(
                f"SELECT Delimiter, Quote, Escape, NewLineDelimiter, Comment, SkipRows, Columns "
                f"FROM sniff_csv({_lit(str(path))}, header = true, all_varchar = true, "
                f"{_NULLS}{options}{extra})"
            ).fetchall()[0]
        except duckdb.Error:
            continue
        if found is None or len(got[-1]) > len(found[-1]):
            found = got
        if len(found[-1]) > 1:
            break
    return found


def _csv_source(
    con: duckdb.DuckDBPyConnection, files: list[Path], origin: str, rejects: str
) -> _Source:
    """The reader of one table's CSV file(s).

    One streaming pass over each file's bytes decides its encoding (UTF-8, else latin-1),
    finds an empty file (rule ``empty_file``) and whether a double quote appears anywhere.
    The delimiter, quoting and columns are sniffed by DuckDB on its sample of lines, or on
    every line when the file holds a quote that the sample does not show quoting (a quoted
    field after the sample). The dialect is said in a note and pinned, so later
    queries neither sniff again nor see the file differently, and every line is verified
    as it is read. A line longer than DuckDB's default maximum is read whole. A line that does
    not fit (a ragged line) goes to the ``rejects`` table instead of stopping the read: the
    loader counts it. The header row is checked: names that are values mean the file has
    none. A latin-1 file's rows that hold a non-ASCII character carry the hidden flag
    ``_ehrseq_latin1`` (rule ``encoding``).
    """
    keep = (
        f"store_rejects = true, rejects_table = {_lit(rejects)}, "
        f"rejects_scan = {_lit(rejects + '_scan')}"
    )
    source = _Source("", origin, rejects=rejects)
    clauses = []
    for path in files:
        try:
            encoding, blank, quoted = _scan_csv(path)
        except (OSError, EOFError):  # the view names the file and DuckDB's reason
            encoding, blank, quoted = "utf-8", False, True
        if blank:
            source.empty.append(str(path))
            continue
        options = "" if encoding == "utf-8" else f", encoding = {_lit(encoding)}"
        sniff = _sniff(con, path, options)
        if sniff is None:  # a line longer than DuckDB's default maximum?
            try:
                longest = _longest_line(path)
            except (OSError, EOFError):
                longest = 0
            if longest >= _MAX_LINE:
                size = longest + 1024
                options += f", max_line_size = {size}, buffer_size = {2 * size}"
                sniff = _sniff(con, path, options)
        if sniff is None:  # the view (or the loader) names the file and DuckDB's reason
            clauses.append(
                f"read_csv({_lit(str(path))}, header = true, all_varchar = true, {_NULLS}, "
                f"{keep}{options})"
            )
            continue
        if quoted and sniff[1] in ("", "(empty)"):  # a quote, but none in the sample's
            sniff = _sniff(con, path, options + ", sample_size = -1") or sniff  # fields
        delim, quote, escape, newline, comment, skip, columns = sniff
        text = {k: "" if v == "(empty)" else v for k, v in zip("dqenc", sniff[:5])}
        cols = ", ".join(f"{_lit(c['name'])}: 'VARCHAR'" for c in columns)
        clause = (
            f"read_csv({_lit(str(path))}, auto_detect = false, header = true, "
            f"delim = {_lit(text['d'])}, quote = {_lit(text['q'])}, escape = {_lit(text['e'])}, "
            f"new_line = {_lit(text['n'])}, comment = {_lit(text['c'])}, skip = {int(skip)}, "
            f"columns = {{{cols}}}, {_NULLS}, {keep}{options})"
        )
        if encoding != "utf-8":
            every = ", ".join(f"CAST({_q(c['name'])} AS VARCHAR)" for c in columns)
            flag = f"coalesce(regexp_matches(concat_ws('', {every}), '[^\\x01-\\x7F]'), FALSE)"
            clause = f"(SELECT *, {flag} AS {_q(_P + 'latin1')} FROM {clause})"
            source.issues.append(
                TableIssue(
                    "encoding",
                    "",
                    f"{path}: not UTF-8 (a byte sequence that UTF-8 cannot decode); read as "
                    f"{encoding}. Lenient: the rows that hold a non-ASCII character are "
                    f"counted as repaired. Fix: write the file as UTF-8",
                    cond=f"coalesce({_q(_P + 'latin1')}, FALSE)",
                    action="repair",
                )
            )
        clauses.append(clause)
        source.notes.append(
            f"{path}: CSV dialect of {path.name} (verified on every line): delimiter "
            f"{text['d']!r}, quote {text['q'] or 'none'!r}, escape {text['e'] or 'none'!r}, "
            f"encoding {encoding}"
        )
        try:
            header = _csv_header(path, text["d"], text["q"], encoding)
        except (OSError, csv.Error, EOFError):
            continue
        if len(files) == 1:
            source.raw_names = header
        values = [h for h in header if _NOT_A_NAME.fullmatch(h.strip())]
        if values and not any(i.rule == "no_header" for i in source.issues):
            source.issues.append(
                TableIssue(
                    "no_header",
                    "",
                    f"{path}: its first line {header[:5]} holds values (e.g. {values[0]!r}), "
                    f"not column names: the file has no header row. Lenient: every row is "
                    f"dropped. Fix: write the file with a header row of OMOP column names",
                    action="drop",
                    extra_rows=1,
                    lines=tuple(_line_texts(path, [1, 2, 3], encoding)),
                )
            )
    if not clauses:  # every file is empty: no view (rule empty_file)
        return source
    if source.empty:
        source.notes.append(f"{origin}: empty shard(s) {source.empty} (no header, no rows)")
    if len(clauses) == 1:
        source.clause = clauses[0]
    else:
        source.clause = (
            "(" + " UNION ALL BY NAME ".join(f"SELECT * FROM {c}" for c in clauses) + ")"
        )
    return source


def _parquet_source(files: list[Path], origin: str) -> _Source:
    """The reader of one table's parquet file(s), with the column names as stored."""
    names = ", ".join(_lit(str(p)) for p in files)
    source = _Source(f"read_parquet([{names}], union_by_name = true)", origin)
    if len(files) == 1:
        try:
            source.raw_names = list(pq.read_schema(files[0]).names)
        except (OSError, pa.ArrowException):
            pass  # unreadable: the view names the file and the reason
    return source


class Cdm:
    """An OMOP CDM opened in DuckDB: one view per table, every column name in lower case.

    Build it with :func:`open_cdm`. Files are queried in place; nothing is loaded until a
    query asks for it. The concept helpers (:meth:`concepts`, :meth:`ancestors`,
    :meth:`map_to_standard`) work on the vocabulary tables the export carries.

    Attributes:
        source: the folder or database file it was opened from.
        con: the DuckDB connection (an in-memory database holding the views).
        tables: table name -> where its rows come from.
        issues: table -> the :class:`TableIssue` s found when it was opened.
        notes: table -> what opening it decided (the CSV dialect), in words.
        unreadable: table -> why DuckDB cannot read it (file and reason); no view.
        unreadable_lines: table -> the CSV line DuckDB names in its reason
            (``file, line, text``), when it names one.
        empty: table -> its file(s), empty (no header, no rows); no view: the table reads as
            absent (rule ``empty_file``).
        rejects: table -> the temp table where DuckDB puts the CSV lines it cannot parse.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, tables: dict[str, str], source: str):
        self.con = con
        self.tables = dict(sorted(tables.items()))
        self.source = source
        self.issues: dict[str, list[TableIssue]] = {}
        self.notes: dict[str, list[str]] = {}
        self.unreadable: dict[str, str] = {}
        self.unreadable_lines: dict[str, pd.DataFrame] = {}
        self.empty: dict[str, str] = {}
        self.rejects: dict[str, str] = {}
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
        if table in self.unreadable:
            raise OmopValidationError(
                table,
                "",
                "unreadable_file",
                f"{self.unreadable[table]}. Fix or re-export the file (or remove it: an "
                f"absent table is only noted)",
                examples=self.unreadable_lines.get(table),
            )
        if table not in self._columns:
            # the relation API, not DESCRIBE: DESCRIBE reports an attached table's own
            # column names even through a view that renames them
            rel = self.con.sql(f"SELECT * FROM {_q(table)}")
            self._columns[table] = {
                c: str(t) for c, t in zip(rel.columns, rel.types) if not c.startswith(_P)
            }
        return self._columns[table]

    def flag_columns(self, table: str) -> list[str]:
        """The hidden flag columns of ``table``'s view (``_ehrseq_dup_*``, see
        :attr:`issues`), which the loader carries next to the columns it reads."""
        cols = self.con.sql(f"SELECT * FROM {_q(table.lower())}").columns
        return [c for c in cols if c.startswith(_P)]

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
        # a repeated concept_id keeps its first row, as the loader's duplicate_key rule does
        sql = (
            f"SELECT * EXCLUDE (_n) FROM (SELECT {cid} AS concept_id"
            f"{', ' + cols if cols else ''}, row_number() OVER () AS _n FROM concept c)"
        )
        if concept_ids is not None:
            view = self._ids_view(concept_ids)
            sql += f" WHERE concept_id IN (SELECT concept_id FROM {view})"
        sql += " QUALIFY row_number() OVER (PARTITION BY concept_id ORDER BY _n) = 1"
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
        """Build the temp table ``_ehrseq_ancestor`` once: from ``concept_ancestor`` when it
        has rows, else as the closure of the ``Is a`` edges; set :attr:`ancestor_source`.

        Warns when there is neither (the hierarchy is empty).
        """
        if self.ancestor_source is not None:
            return
        if self.has("concept_ancestor") and self.count("concept_ancestor"):
            self._ancestor_from_table()
            self.ancestor_source = "concept_ancestor"
            return
        has_edges = self.has("concept_relationship")
        self._ancestor_from_is_a(has_edges, max_depth)
        n_is_a = self.con.execute(f"SELECT count(*) FROM {_P}ancestor").fetchall()[0][0]
        closure = "concept_relationship 'Is a' closure"
        self.ancestor_source = closure if n_is_a else "none"
        if not has_edges or not self.count("concept_relationship"):
            warnings.warn(
                f"{self.source}: empty concept_ancestor and no 'Is a' edges: no hierarchy",
                stacklevel=3,
            )
        elif not n_is_a:  # e.g. only 'Maps to' rows: expansion would find nothing
            warnings.warn(
                f"{self.source}: concept_ancestor is empty or absent and "
                f"concept_relationship has {self.count('concept_relationship'):,} rows "
                f"but no 'Is a' rows (valid, between two concepts): the hierarchy is "
                f"empty, so descendants and ancestors find nothing",
                stacklevel=3,
            )

    def _ancestor_from_table(self) -> None:
        """Copy ``concept_ancestor`` with its four columns parsed as integers; rows where any
        of them is not integer-like are left out (silently: this is a look-up, not the load).

        Raises:
            OmopValidationError: if one of the four columns is absent.
        """
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
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {_P}ancestor AS SELECT * FROM "
            f"(SELECT {select} FROM concept_ancestor) WHERE {usable}"
        )

    def _ancestor_from_is_a(self, has_edges: bool, max_depth: int) -> None:
        """The transitive closure of the valid ``Is a`` edges (self-loops left out), with the
        fewest and most steps per pair and a level-0 row for every concept in an edge."""
        con = self.con
        edges = (
            self._relationship_sql("Is a")
            if has_edges
            else "SELECT 1::BIGINT c1, 1::BIGINT c2 LIMIT 0"
        )
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {_P}isa AS SELECT * FROM ({edges}) WHERE c1 <> c2"
        )
        self._walk_is_a(max_depth)
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {_P}ancestor AS
            SELECT a AS ancestor_concept_id, d AS descendant_concept_id,
                   min(lvl)::BIGINT AS min_levels_of_separation,
                   max(lvl)::BIGINT AS max_levels_of_separation
            FROM {_P}paths GROUP BY a, d
            UNION ALL
            SELECT c, c, 0, 0 FROM (SELECT c1 AS c FROM {_P}isa UNION SELECT c2 FROM {_P}isa)"""
        )
        for tmp in ("isa", "paths", "front"):
            con.execute(f"DROP TABLE IF EXISTS {_P}{tmp}")

    def _walk_is_a(self, max_depth: int) -> None:
        """Breadth first over ``_ehrseq_isa``: every (descendant, ancestor, steps) path goes
        into ``_ehrseq_paths``, one level per pass, until a level adds nothing.

        Raises:
            ValueError: if a concept reaches itself (a cycle) or chains run deeper than
                ``max_depth``.
        """
        con = self.con
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


_DUCKDB_CONFIG = {
    # never reach the network at run time: no extension is installed or loaded on demand
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
}
_MEMORY = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)\s*$", re.IGNORECASE)
_DUCKDB_MAGIC = b"DUCK"  # bytes 8..12 of a DuckDB database file
_SQLITE_MAGIC = b"SQLite format 3\x00"


def connect(
    threads: int | None = None,
    files: Sequence[str | Path] | None = None,
    memory_limit: str | None = None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection that never reaches the network.

    Extension auto-install and auto-load are off, so a file that needs an extension DuckDB
    does not carry (a SQLite database, a remote URL) fails with a clear error instead of a
    download. With ``files``, the connection may read those folders and files and nothing
    else (``enable_external_access = false``), which also refuses an explicit ``INSTALL``
    or a URL. The configuration is then locked (``lock_configuration = true``), so no later
    ``SET`` can turn any of this back on. Times are read in UTC, so a ``TIMESTAMP WITH TIME
    ZONE`` column means the same on every machine.

    DuckDB's memory may be capped (``memory_limit``, else ``EHRSEQ_DUCKDB_MEMORY``, e.g.
    ``"4GB"``; DuckDB's own default is 80 % of the machine's memory): beyond the cap it
    spills to a temporary folder of its own (removed when the process exits), so
    validating an export larger than the cap still completes, more slowly. The tables the
    loader hands to pandas are not covered by the cap (``load_omop(events_to=...)`` hands
    the event table over one batch at a time).

    Args:
        threads: DuckDB worker threads (DuckDB's default when ``None``).
        files: the folders and files the connection may read; ``None``: any local file.
        memory_limit: DuckDB's memory cap, a number and a unit (``"500MB"``, ``"4GiB"``).

    Raises:
        ValueError: if the memory cap is not a number and a unit.
    """
    from ehrseq.config import env

    memory = memory_limit or env("EHRSEQ_DUCKDB_MEMORY")
    if memory is not None and not _MEMORY.match(memory):
        raise ValueError(
            f"DuckDB memory limit {memory!r} (memory_limit or EHRSEQ_DUCKDB_MEMORY) is "
            "not a number and a unit such as '500MB' or '4GB'"
        )
    con = duckdb.connect(config=dict(_DUCKDB_CONFIG))
    try:
        con.execute("SET TimeZone = 'UTC'")
    except duckdb.Error:
        pass  # no ICU: time zones are UTC anyway
    if threads is not None:
        con.execute(f"SET threads = {int(threads)}")
    spill = None
    if memory is not None:
        spill = _spill_folder()
        con.execute(f"SET memory_limit = {_lit(memory.strip())}")
        con.execute(f"SET temp_directory = {_lit(spill)}")
    if files is not None:
        dirs, paths = ([spill.rstrip("/") + "/"] if spill else []), []
        for f in files:
            for p in dict.fromkeys([Path(f).expanduser().absolute(), Path(f).resolve()]):
                if p.is_dir():
                    dirs.append(str(p).rstrip("/") + "/")
                else:
                    paths += [str(p), f"{p}.wal"]
        con.execute(f"SET allowed_directories = [{', '.join(_lit(d) for d in dirs)}]")
        con.execute(f"SET allowed_paths = [{', '.join(_lit(p) for p in paths)}]")
        con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def _spill_folder() -> str:
    """A fresh folder for DuckDB to spill to, removed when the process exits."""
    import atexit
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="ehrseq_duckdb_")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def open_cdm(path: str | Path, *, schema: str | None = None, threads: int | None = None) -> Cdm:
    """Open an OMOP CDM from a folder of table files or a DuckDB database file.

    A folder holds one file per table, named by the table (``PERSON.csv``, ``person.parquet``,
    ``measurement.csv.gz``; case-insensitive), or one sub-folder per table holding parquet or
    CSV shards. A name with an ETL prefix or a shard or version suffix is recognised
    (``cdm_person.csv``, ``2b_concept.csv``, ``omop.measurement.parquet``,
    ``person_000.parquet``: see :data:`CDM_TABLES`) and said in a note; numbered shards
    of one name are read together. CSV is read as text (types are checked by the
    validator, not guessed by the reader) with ``""``, ``NA`` and ``NULL`` as missing,
    in a dialect verified on every line of the file. Column names are normalised to lower
    case. A DuckDB file (``.duckdb``, ``.ddb``, ``.db``) is attached read-only. DuckDB
    never reaches the network (see :func:`connect`).

    What opening finds wrong with a table is kept in :attr:`Cdm.issues` and handled by the
    loader's rules (strict: raise; lenient: counted): a sub-folder mixing parquet and CSV
    shards (``mixed_shards``: every shard is read), a column name that appears twice, also
    once lower-cased (``duplicate_column``: the first is read), a CSV file without a header
    row (``no_header``), and a file DuckDB cannot read (``unreadable_file``, in
    :attr:`Cdm.unreadable`).

    Args:
        path: the folder or the database file.
        schema: the schema of a DuckDB file holding the CDM; by default the one with a
            ``person`` table (``main`` first).
        threads: DuckDB worker threads (DuckDB's default when ``None``).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it holds no table files, two files claim the same table (both
            named), the database file is no DuckDB database (a SQLite file, a truncated
            file) or has no CDM schema.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no OMOP CDM at {path}")
    con = connect(threads, files=[path])
    if path.is_dir():
        sources = _folder_sources(con, path)
    elif path.name.lower().endswith(DUCKDB_SUFFIXES):
        sources = _database_sources(con, path, schema)
    else:
        raise ValueError(
            f"{path}: expected a folder of {TABLE_SUFFIXES} files or a DuckDB file "
            f"({', '.join(DUCKDB_SUFFIXES)})"
        )
    if not sources:
        raise ValueError(f"{path}: no table files ({', '.join(TABLE_SUFFIXES)}) found")
    cdm = Cdm(con, {}, str(path))
    _create_views(cdm, sources)
    return cdm


def _folder_sources(con: duckdb.DuckDBPyConnection, path: Path) -> dict[str, _Source]:
    """Table -> its :class:`_Source` for a folder: one file per table, or one sub-folder of
    shards per table. Files with other suffixes and empty sub-folders are passed over; a
    sub-folder mixing parquet and CSV shards is read whole, with a ``mixed_shards`` issue.

    Raises:
        ValueError: if two entries claim the same table.
    """
    claims: dict[str, list[tuple[Path, list[Path], str, str]]] = {}
    for entry in sorted(path.iterdir()):
        if entry.is_dir():
            files = [p for p in sorted(entry.iterdir()) if _table_name(p) is not None]
            if not files:
                continue
            table, named = _cdm_table(entry.name)
            origin = f"{entry}/ ({len(files)} files)"
        else:
            stem = _table_name(entry)
            if stem is None:
                continue
            (table, named), files, origin = _cdm_table(stem), [entry], str(entry)
        claims.setdefault(table, []).append((entry, files, origin, named))
    sources: dict[str, _Source] = {}
    for table, claimed in claims.items():
        files, origin, note = _one_claim(path, table, claimed)
        rejects = f"{_P}rejects_{len(sources)}"
        parquet = [p for p in files if _kind(p) == "parquet"]
        text = [p for p in files if _kind(p) == "csv"]
        if parquet and text:
            source = _mixed_source(con, parquet, text, origin, rejects)
        elif parquet:
            source = _parquet_source(parquet, origin)
        else:
            source = _csv_source(con, text, origin, rejects)
        if note:
            source.notes.insert(0, note)
        sources[table] = source
    return sources


def _one_claim(
    root: Path, table: str, claimed: list[tuple[Path, list[Path], str, str]]
) -> tuple[list[Path], str, str]:
    """The files, origin and note of a table named by one or more folder entries: one
    entry, or numbered shards of one name (``person_000.parquet``, ``person_001...``).

    Raises:
        ValueError: naming both entries when two claim the table otherwise
            (``person.csv`` and ``cdm_person.csv``).
    """
    entry, files, origin, named = claimed[0]
    if len(claimed) == 1:
        note = f"{entry}: read as table {table!r} (an ETL-named file)" if named else ""
        return files, origin, note
    end = re.compile(_SUFFIX.pattern + "$")
    bases = {end.sub("", n) for *_, n in claimed}
    shards = all(not e.is_dir() and end.search(n) for e, _, _, n in claimed)
    if shards and len(bases) == 1:
        files = [e for e, *_ in claimed]
        origin = f"{root}/ {[f.name for f in files]} ({len(files)} files)"
        return files, origin, f"{origin}: read as the shards of table {table!r}"
    raise ValueError(
        f"two sources for table {table!r}: {claimed[0][2]} and {claimed[1][2]}; keep "
        f"one (or rename the other so that it names no CDM table)"
    )


def _mixed_source(
    con: duckdb.DuckDBPyConnection,
    parquet: list[Path],
    text: list[Path],
    origin: str,
    rejects: str,
) -> _Source:
    """The reader of a table folder that mixes parquet and CSV shards: all are read, and the
    rows of the minority kind (fewer shards; CSV on a tie) carry the hidden flag
    ``_ehrseq_minority`` that rule ``mixed_shards`` counts."""
    a, b = _parquet_source(parquet, origin), _csv_source(con, text, origin, rejects)
    if not b.clause:  # every CSV shard is empty: a parquet folder with empty files
        a.notes = [f"{origin}: empty CSV shard(s) {b.empty} (no header, no rows)"]
        return a
    minority = "parquet" if len(parquet) < len(text) else "csv"
    flag = f"TRUE AS {_q(_P + 'minority')}"
    pa_sql = f"SELECT *{', ' + flag if minority == 'parquet' else ''} FROM {a.clause}"
    csv_sql = f"SELECT *{', ' + flag if minority == 'csv' else ''} FROM {b.clause}"
    few = parquet if minority == "parquet" else text
    source = _Source(
        f"({pa_sql} UNION ALL BY NAME {csv_sql})",
        origin,
        rejects=rejects,
        issues=b.issues,
        notes=b.notes,
    )
    source.issues.insert(
        0,
        TableIssue(
            "mixed_shards",
            "",
            f"{origin} mixes {len(parquet)} parquet shard(s) ({parquet[0].name}, ...) and "
            f"{len(text)} CSV shard(s) ({text[0].name}, ...); the rows of the {minority} "
            f"shard(s) {[p.name for p in few][:5]} are counted. Lenient: every shard is read, "
            f"as text where the kinds disagree. Fix: keep one kind per table folder",
            cond=f"coalesce({_q(_P + 'minority')}, FALSE)",
        ),
    )
    return source


def _database_sources(
    con: duckdb.DuckDBPyConnection, path: Path, schema: str | None
) -> dict[str, _Source]:
    """Table -> its :class:`_Source` for a DuckDB file attached read-only: the tables and
    views of ``schema``, by default the one schema with a ``person`` table (``main`` first).

    Raises:
        ValueError: if the file is no DuckDB database (named: SQLite, empty, too short),
            cannot be opened, no schema (or several) holds a CDM, ``schema`` does not exist,
            or two tables differ only in case.
    """
    with path.open("rb") as fh:
        head = fh.read(16)
    if head.startswith(_SQLITE_MAGIC):
        raise ValueError(
            f"{path}: this is a SQLite database, not a DuckDB one (ehrseq reads no SQLite: "
            f"it would need a DuckDB extension, and the library never downloads one). "
            f"Export its tables to parquet or CSV files in a folder, or copy them into a "
            f"DuckDB file, and open that"
        )
    if head[8:12] != _DUCKDB_MAGIC:
        what = "empty" if not head else f"{len(head)} bytes" if len(head) < 16 else "other"
        raise ValueError(
            f"{path}: not a DuckDB database (the file's header is {what}: no 'DUCK' at "
            f"byte 8; a truncated or foreign file). Re-export the CDM"
        )
    try:
        con.execute(f"ATTACH {_lit(str(path))} AS {_P}src (READ_ONLY)")
    except duckdb.Error as err:
        raise ValueError(
            f"{path}: cannot open as a DuckDB database ({type(err).__name__}: "
            f"{str(err).splitlines()[0]}); a truncated or damaged file? Re-export the CDM"
        ) from err
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
        raise ValueError(f"{path}: no schema {schema!r}; schemas: {sorted({s for s, _ in found})}")
    sources: dict[str, _Source] = {}
    for s, t in found:
        if s == schema:
            name = f"{_P}src.{_q(s)}.{_q(t)}"
            if t.lower() in sources:
                raise ValueError(f"{path}: tables {t!r} and another differ only in case")
            sources[t.lower()] = _Source(name, f"{path}:{s}.{t}")
    return sources


def _create_views(cdm: Cdm, sources: dict[str, _Source]) -> None:
    """Create one view per table with its column names trimmed and lower-cased, and fill
    ``cdm.tables``, ``cdm.issues``, ``cdm.notes`` and ``cdm.unreadable``.

    A column name that appears twice (as written, or once lower-cased) is read from its first
    copy; each later copy becomes a hidden flag column ``_ehrseq_dup_<name>_<k>``, true where
    it differs from the first, behind a ``duplicate_column`` issue. A source DuckDB cannot
    read is left out of the views and named with DuckDB's reason in :attr:`Cdm.unreadable`.
    """
    con = cdm.con
    for table, src in sources.items():
        if not src.clause:  # every file is empty: no view; the loader applies empty_file
            cdm.empty[table] = (
                f"{', '.join(src.empty)}: empty (not even a header row). Lenient: read as an "
                f"absent table. Fix: write the table with a header row, or remove the file"
            )
            continue
        try:
            cols = list(con.sql(f"SELECT * FROM {src.clause}").columns)
        except duckdb.Error as err:
            cdm.unreadable[table] = f"{src.origin}: {type(err).__name__}: {_first_line(err)}"
            line = re.search(r"\bLine: (\d+)", str(err))
            if line and Path(src.origin).is_file():
                got = _line_texts(Path(src.origin), [int(line[1])], "latin-1")
                cdm.unreadable_lines[table] = pd.DataFrame(got, columns=["file", "line", "text"])
            cdm.tables[table] = src.origin
            continue
        hidden = [c for c in cols if c.startswith(_P)]  # flags the reader added (latin1, ...)
        cols = [c for c in cols if not c.startswith(_P)]
        names = src.raw_names if src.raw_names and len(src.raw_names) == len(cols) else cols
        lower = [n.strip().lower() or c.lower() for n, c in zip(names, cols)]
        select, issues = [_q(c) for c in hidden], list(src.issues)
        first: dict[str, str] = {}
        for i, (col, lc) in enumerate(zip(cols, lower)):
            if lc not in first:
                first[lc] = col
                select.append(f"{_q(col)} AS {_q(lc)}")
                continue
            flag = f"{_P}dup_{lc}_{lower[:i].count(lc)}"
            a, b = f"CAST({_q(first[lc])} AS VARCHAR)", f"CAST({_q(col)} AS VARCHAR)"
            select.append(f"({a} IS DISTINCT FROM {b}) AS {_q(flag)}")
            twice = [n for n, x in zip(names, lower) if x == lc]
            issues.append(
                TableIssue(
                    "duplicate_column",
                    lc,
                    f"{src.origin}: column {lc!r} appears {len(twice)} times ({twice}). "
                    f"Lenient: the first is read; rows where a later copy differs are "
                    f"dropped. Fix: rename or remove the extra column",
                    cond=_q(flag),
                    action="drop",
                )
            )
        con.execute(f"CREATE VIEW {_q(table)} AS SELECT {', '.join(select)} FROM {src.clause}")
        cdm.tables[table] = src.origin
        if issues:
            cdm.issues[table] = issues
        if src.notes:
            cdm.notes[table] = list(src.notes)
        if src.rejects:
            cdm.rejects[table] = src.rejects
    cdm.tables = dict(sorted(cdm.tables.items()))


def _first_line(err: BaseException) -> str:
    """The first line of an error message (DuckDB's add hints below it)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ----------------------------------------------------------------------------------------------
# Where each domain's events live
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventSpec:
    """Where one domain's events live in the CDM.

    Attributes:
        table: the CDM table.
        domain: the event table's ``domain`` (a key of :data:`EVENT_SPECS`).
        key: the table's own id column (``None``: death has none).
        concept, source: the concept and source concept columns (``concept`` is ``None`` for
            death, whose events all get :data:`DEATH_CONCEPT_ID`).
        date, datetime: the event's date and datetime columns.
        value, unit: ``value_as_number`` and ``unit_concept_id`` where the table has them.
        visit: the visit id column (``None``: death).
        source_value: the source value column (the code as the source wrote it),
            the last fallback of a row whose concept ids are both 0.
    """

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
    source_value: str | None = None


EVENT_SPECS: dict[str, EventSpec] = {
    "visit": EventSpec(
        "visit_occurrence",
        "visit",
        "visit_occurrence_id",
        "visit_concept_id",
        "visit_source_concept_id",
        "visit_start_date",
        "visit_start_datetime",
        source_value="visit_source_value",
    ),
    "condition": EventSpec(
        "condition_occurrence",
        "condition",
        "condition_occurrence_id",
        "condition_concept_id",
        "condition_source_concept_id",
        "condition_start_date",
        "condition_start_datetime",
        source_value="condition_source_value",
    ),
    "procedure": EventSpec(
        "procedure_occurrence",
        "procedure",
        "procedure_occurrence_id",
        "procedure_concept_id",
        "procedure_source_concept_id",
        "procedure_date",
        "procedure_datetime",
        source_value="procedure_source_value",
    ),
    "drug": EventSpec(
        "drug_exposure",
        "drug",
        "drug_exposure_id",
        "drug_concept_id",
        "drug_source_concept_id",
        "drug_exposure_start_date",
        "drug_exposure_start_datetime",
        source_value="drug_source_value",
    ),
    "measurement": EventSpec(
        "measurement",
        "measurement",
        "measurement_id",
        "measurement_concept_id",
        "measurement_source_concept_id",
        "measurement_date",
        "measurement_datetime",
        "value_as_number",
        "unit_concept_id",
        source_value="measurement_source_value",
    ),
    "observation": EventSpec(
        "observation",
        "observation",
        "observation_id",
        "observation_concept_id",
        "observation_source_concept_id",
        "observation_date",
        "observation_datetime",
        "value_as_number",
        "unit_concept_id",
        source_value="observation_source_value",
    ),
    "death": EventSpec(
        "death", "death", None, None, None, "death_date", "death_datetime", visit=None
    ),
}
