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
with its reason, and ``rows_in == rows_kept + rows_dropped`` holds per table (lines the
reader could not parse count as read and dropped). The library never reaches the network:
DuckDB's extension auto-install and auto-load are off, the connection may read only the
CDM's own folder or file, and its configuration is locked. In
``mode="strict"`` the first rule that any row breaks raises :class:`OmopValidationError`
naming the table, the column, the rule and a few example rows.

The rules, in the order they are applied (the first *dropping* rule a row breaks is the one it
is counted under):

======================= ============ =================================================
rule                    action       what it checks
======================= ============ =================================================
``missing_table``       note         a table the load uses is absent (person: raise)
``unreadable_file``     note         DuckDB cannot read the table's file (corrupt,
                                     truncated): named with the reason, table skipped
                                     (person: raise)
``empty_file``          note         a table's file is empty, not even a header row:
                                     read as an absent table (person: raise)
``encoding``            repair       a CSV file is not UTF-8: read as latin-1 (decided on
                                     every byte); rows with a non-ASCII character counted
``no_header``           drop         a CSV file's first line holds values, not names
                                     (every row, the first line included)
``mixed_shards``        keep         a table folder mixes parquet and CSV shards (all
                                     are read; the rows of the kind with fewer shards
                                     are counted)
``duplicate_column``    drop         a column name appears twice, also once
                                     lower-cased: the first is read, rows where a later
                                     copy differs are dropped
``malformed_line``      drop         a CSV line does not fit the file's dialect (the
                                     dialect is verified on every line and noted)
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
``non_finite``          repair       ``value_as_number`` is ``inf``, ``1e400`` or ``nan``
                                     (becomes NaN)
``zone_offset``         repair       a datetime carries a zone (``+02:00``, ``Z``: the
                                     wall-clock time stays; a zoned type: read in UTC)
``implausible_birth``   keep*        the birth year is before 1850 or after this year
``before_birth``        keep*        the event date is before the person's birth date
``overlapping_period``  keep*        an observation period overlaps an earlier one of
                                     the same person
``concept_zero``        keep*        ``*_concept_id = 0``: "no matching concept"
``source_concept``      repair*      the concept id is 0 and the source concept id is
                                     not: the source concept is the event's concept
``foreign_code``        repair*      both concept ids are 0 and the source value is
                                     not blank: kept as a foreign code (a stand-in
                                     concept id < 0 and the events' ``code`` column,
                                     as :func:`~ehrseq.data.meds.read_meds` does)
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

``*``: configurable through ``actions={"after_death": "drop", ...}``
(``source_concept`` and ``foreign_code``: ``"keep"`` leaves the concept id 0; strict
mode's ``allow=["concept_zero"]`` tolerates them too).

Example::

    data = load_omop("../shared/data/synpuf_50")           # lenient: keeps going
    data.report                                             # what was kept, repaired, dropped
    events = data.events                                    # the event-table contract
    load_omop(path, mode="strict", allow=["concept_zero"])  # raise on anything else

Reference: OHDSI, *The Book of OHDSI*, ch. 4 "The Common Data Model" (2021), and the CDM
5.3/5.4 specifications at https://ohdsi.github.io/CommonDataModel/.

The package, by job:

- :mod:`ehrseq.data.omop.cdm`: the CDM access layer (:func:`open_cdm`, :class:`Cdm`, and
  :data:`EVENT_SPECS`, where each domain's events live);
- :mod:`ehrseq.data.omop.rules`: the rules above, :class:`OmopValidationError`,
  :class:`LoadReport`, and the engine that applies rules to a staged table and counts them;
- :mod:`ehrseq.data.omop.loader`: :func:`load_omop` and :func:`validate_omop`, which stage
  each table and pick its checks;
- :mod:`ehrseq.data.omop.sql`: the SQL that parses ids, dates and numbers whatever their type.
"""

from ehrseq.data.omop.cdm import DEATH_CONCEPT_ID, EVENT_SPECS, Cdm, open_cdm
from ehrseq.data.omop.loader import OmopData, load_omop, validate_omop
from ehrseq.data.omop.rules import CONFIGURABLE, RULES, LoadReport, OmopValidationError, Rule

__all__ = [
    "CONFIGURABLE",
    "DEATH_CONCEPT_ID",
    "EVENT_SPECS",
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
