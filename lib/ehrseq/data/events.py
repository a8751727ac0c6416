"""The event-table contract shared by every reader (OMOP, MEDS, synthetic) and the tokenizer.

One row per clinical event, long format, sorted by ``person_id`` then ``time``:

==================== =============== =========================================================
column               dtype           meaning
==================== =============== =========================================================
person_id            int64           OMOP ``person_id`` (MEDS ``subject_id``)
time                 datetime64[ns]  event start; a date-only source gives midnight
concept_id           int64           standard concept (``0`` = no matching concept)
source_concept_id    int64           the source concept the row was recorded with (0 if none)
domain               str             condition, drug, procedure, measurement, observation,
                                     visit, death
value_as_number      float64         measurement value, NaN when the event has none
unit_concept_id      int64           unit of ``value_as_number`` (0 if none)
visit_occurrence_id  Int64           nullable; the visit the row claims, as recorded
==================== =============== =========================================================

The person table that travels with it has ``person_id``, ``birth_datetime``
(datetime64[ns]) and ``gender_concept_id``.
"""

from __future__ import annotations

import pandas as pd

EVENT_COLUMNS: dict[str, str] = {
    "person_id": "int64",
    "time": "datetime64[ns]",
    "concept_id": "int64",
    "source_concept_id": "int64",
    "domain": "object",
    "value_as_number": "float64",
    "unit_concept_id": "int64",
    "visit_occurrence_id": "Int64",
}

DOMAINS = ("condition", "drug", "procedure", "measurement", "observation", "visit", "death")

__all__ = ["EVENT_COLUMNS", "DOMAINS", "check_events"]


def check_events(events: pd.DataFrame, name: str = "events") -> pd.DataFrame:
    """Check that ``events`` follows the contract above and return it unchanged.

    Raises:
        ValueError: naming the missing column, the wrong dtype, or the first offending row
            (unknown domain, missing time, rows not sorted by person and time).
    """
    missing = [c for c in EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing}; expected {list(EVENT_COLUMNS)}")
    for col, dtype in EVENT_COLUMNS.items():
        got = str(events[col].dtype)
        if dtype == "object":
            ok = got in {"object", "string", "category", "str"}
        elif dtype == "datetime64[ns]":
            ok = got.startswith("datetime64")
        else:
            ok = got == dtype
        if not ok:
            raise ValueError(f"{name}.{col}: dtype {got}, expected {dtype}")
    bad = ~events["domain"].isin(DOMAINS)
    if bad.any():
        row = events.loc[bad].iloc[0]
        raise ValueError(
            f"{name}.domain: {int(bad.sum())} rows with an unknown domain, e.g. {row.to_dict()}; "
            f"expected one of {DOMAINS}"
        )
    if events["time"].isna().any():
        row = events.loc[events["time"].isna()].iloc[0]
        raise ValueError(f"{name}.time: missing event times, e.g. {row.to_dict()}")
    pid = events["person_id"].to_numpy()
    t = events["time"].to_numpy()
    order_ok = (pid[1:] > pid[:-1]) | ((pid[1:] == pid[:-1]) & (t[1:] >= t[:-1]))
    if len(events) > 1 and not order_ok.all():
        i = int((~order_ok).argmax()) + 1
        raise ValueError(
            f"{name}: rows not sorted by person_id then time at row {i}: "
            f"{events.iloc[i][['person_id', 'time']].to_dict()}"
        )
    return events
