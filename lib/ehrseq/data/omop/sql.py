"""SQL builders shared by the CDM access layer and the loader.

Each helper returns a DuckDB SQL expression that reads a column whatever type the source
stored it as: integer-like ids (``12``, ``"12"``, ``"12.0"``, ``12.0``), dates (DATE,
TIMESTAMP, ISO text or ``YYYYMMDD``) and numbers. An unusable value becomes NULL; the rules
in :mod:`ehrseq.data.omop.rules` count those, nothing here drops or reports anything.
"""

from __future__ import annotations

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


def _q(name: str) -> str:
    """Quote an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """Quote an SQL string literal (a file path, a code): ``it's`` -> ``'it''s'``."""
    return "'" + text.replace("'", "''") + "'"


_lit = literal  # the short name the OMOP modules use


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


def _zoned_type(typ: str) -> bool:
    """A timestamp type with a time zone (``TIMESTAMP WITH TIME ZONE``, ``TIMESTAMPTZ_NS``)."""
    return typ.startswith("TIMESTAMP") and ("TIME ZONE" in typ or "TZ" in typ)


def _as_date(col: str, typ: str) -> str:
    """SQL: a DATE from DATE, TIMESTAMP, ISO text or ``YYYYMMDD`` text/integers, else NULL."""
    c = _q(col)
    if typ == "DATE":
        return c
    if _zoned_type(typ):  # the day in UTC (the session's time zone)
        return f"CAST(CAST(CAST({c} AS TIMESTAMPTZ) AS TIMESTAMP) AS DATE)"
    if typ.startswith("TIMESTAMP"):
        return f"CAST({c} AS DATE)"
    s = f"trim(CAST({c} AS VARCHAR))"
    return f"coalesce(TRY_CAST({s} AS DATE), CAST(try_strptime({s}, '%Y%m%d') AS DATE))"


def _as_datetime(col: str, typ: str) -> str:
    """SQL: a TIMESTAMP from TIMESTAMP, DATE (midnight), ISO text or ``YYYYMMDD``, else NULL."""
    c = _q(col)
    if _zoned_type(typ):  # the time in UTC (the session's time zone)
        return f"CAST(CAST({c} AS TIMESTAMPTZ) AS TIMESTAMP)"
    if typ.startswith("TIMESTAMP") or typ == "DATE":
        return f"CAST({c} AS TIMESTAMP)"
    s = f"trim(CAST({c} AS VARCHAR))"
    return f"coalesce(TRY_CAST({s} AS TIMESTAMP), try_strptime({s}, '%Y%m%d'))"


def _in_range(day: str) -> str:
    """SQL: the DATE expression ``day`` lies between :data:`MIN_DAY` and :data:`MAX_DAY`."""
    return f"({day} BETWEEN DATE '{MIN_DAY}' AND DATE '{MAX_DAY}')"


# a time followed by a zone: "09:00:00+02:00", "09:00Z", "09:00:00.5 -0500"
_ZONE = r"'\d{1,2}:\d{2}(:\d{2}(\.\d*)?)?\s*(Z|z|UTC|[+-]\d{2}(:?\d{2})?)$'"


def _zoned(col: str, typ: str) -> str:
    """SQL: the value carries a time-zone offset: text ending in ``Z`` or ``+hh:mm`` after a
    time (DuckDB's cast keeps its wall-clock time, the offset is lost), or a zoned type (read
    in the session's UTC)."""
    c = _q(col)
    if _zoned_type(typ):
        return f"({c} IS NOT NULL)"
    if _is_text(typ) and not typ.startswith(("DATE", "TIMESTAMP", "TIME")):
        s = f"trim(CAST({c} AS VARCHAR))"
        # the regular expression only where a zone can be: longer than "YYYY-MM-DD hh:mm:ss",
        # or a Z, + or UTC in it (a cheap test first: most datetimes are plain)
        maybe = " OR ".join(
            [f"length({s}) > 19"] + [f"contains({s}, '{z}')" for z in ("Z", "z", "+", "UTC")]
        )
        maybe = f"({maybe})"
        return f"coalesce({maybe} AND regexp_matches({s}, {_ZONE}), FALSE)"
    return "FALSE"
