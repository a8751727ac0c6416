"""A small MEDS dataset in the code style of the MEDS extraction tools, written with pyarrow.

MEDS-extract (MIMIC-IV and similar ETLs) writes codes as ``/``-joined segments --
``GENDER//F``, ``DIAGNOSIS//ICD//9//4280``, ``LAB//50912//mg/dL``, ``MEDICATION//START//...`` --
with ``MEDS_BIRTH`` and ``MEDS_DEATH``, static rows with a null time, ``numeric_value`` for labs,
``text_value`` for free text, shards per split, and source ids such as ``hadm_id`` as extra
columns. :func:`write_meds_extract` builds one at test time (no binary fixtures are
committed); ``static_last=True`` moves each subject's static rows after its timed rows, as a
writer that sorts nulls last would.
"""

from __future__ import annotations

import json
from pathlib import Path

import meds
import pyarrow as pa
import pyarrow.parquet as pq

T = "2150-01-01 "  # MIMIC-style shifted dates
# (subject, time or None, code, numeric_value, text_value, hadm_id), grouped by shard
SHARDS: dict[str, list[tuple]] = {
    "train/0": [
        (10001, None, "GENDER//F", None, None, None),
        (10001, "2090-05-01 00:00", meds.birth_code, None, None, None),
        (10001, T + "08:00", "HOSPITAL_ADMISSION//EW EMER.//EMERGENCY ROOM", None, None, 501),
        (10001, T + "09:30", "LAB//50912//mg/dL", 1.4, None, 501),
        (10001, T + "09:30", "LAB//50971//mEq/L", 4.1, None, 501),
        (10001, T + "10:00", "MEDICATION//START//Furosemide", None, "40 mg IV", 501),
        (10001, "2150-01-04 12:00", "DIAGNOSIS//ICD//9//4280", None, None, 501),
        (10001, "2150-01-04 12:00", "HOSPITAL_DISCHARGE//HOME", None, None, 501),
        (10002, None, "GENDER//M", None, None, None),
        (10002, "2070-02-01 00:00", meds.birth_code, None, None, None),
        (10002, "2151-03-02 07:00", "LAB//50912//mg/dL", 2.9, None, 602),
        (10002, "2151-03-02 07:00", "LAB//51222//g/dL", 10.2, None, 602),
        (10002, "2151-03-02 08:15", "MEDICATION//START//Metoprolol", None, "25 mg PO", 602),
        (10002, "2151-03-05 10:00", "DIAGNOSIS//ICD//10//I509", None, None, 602),
        (10002, "2151-03-09 23:00", meds.death_code, None, None, None),
    ],
    "train/1": [
        (10003, None, "GENDER//F", None, None, None),
        (10003, "2080-07-15 00:00", meds.birth_code, None, None, None),
        (10003, "2152-06-01 10:00", "LAB//50912//mg/dL", 0.8, None, 703),
        (10003, "2152-06-01 10:00", "LAB//50971//mEq/L", 3.6, None, 703),
        (10003, "2152-06-01 11:00", "DIAGNOSIS//ICD//9//4280", None, None, 703),
        (10003, "2152-06-02 09:00", "MEDICATION//START//Furosemide", None, "20 mg PO", 703),
        (10003, "2152-06-02 09:00", "PROCEDURE//ICD//9//3722", None, None, 703),
    ],
    "held_out/0": [
        (10004, None, "GENDER//M", None, None, None),
        (10004, "2060-01-01 00:00", meds.birth_code, None, None, None),
        (10004, "2149-11-11 11:00", "LAB//51222//g/dL", 13.5, None, 804),
        (10004, "2149-11-11 11:30", "DIAGNOSIS//ICD//10//I509", None, None, 804),
        (10004, "2149-11-20 05:00", meds.death_code, None, None, None),
    ],
}
SPLITS = {10001: "train", 10002: "train", 10003: "train", 10004: "held_out"}


def shard_table(rows: list[tuple]) -> pa.Table:
    """Rows ``(subject, time, code, numeric_value, text_value, hadm_id)`` as a MEDS table."""
    subject, time, code, value, text, hadm = zip(*rows)
    return pa.table(
        {
            "subject_id": pa.array(subject, pa.int64()),
            "time": pa.array(time, pa.string()).cast(pa.timestamp("us")),
            "code": pa.array(code, pa.string()),
            "numeric_value": pa.array(value, pa.float32()),
            "text_value": pa.array(text, pa.large_string()),
            "hadm_id": pa.array(hadm, pa.int64()),
        }
    )


def write_meds_extract(root: Path, *, static_last: bool = False) -> Path:
    """Write the dataset under ``root``: ``data/<split>/<n>.parquet`` and ``metadata/``."""
    for name, rows in SHARDS.items():
        if static_last:  # a subject's static rows after its timed rows
            rows = sorted(rows, key=lambda r: (r[0], r[1] is None))
        table = shard_table(rows)
        meds.DataSchema.validate(table)
        path = root / meds.data_subdirectory / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
    (root / "metadata").mkdir(exist_ok=True)
    codes = sorted({r[2] for rows in SHARDS.values() for r in rows})
    pq.write_table(
        pa.table(
            {
                "code": pa.array(codes, pa.string()),
                "description": pa.array(
                    ["Creatinine" if c.startswith("LAB//50912") else None for c in codes],
                    pa.string(),
                ),
                "parent_codes": pa.array(
                    [["LOINC/2160-0"] if c.startswith("LAB//50912") else None for c in codes],
                    pa.list_(pa.string()),
                ),
            }
        ),
        root / meds.code_metadata_filepath,
    )
    metadata = {
        "dataset_name": "MEDS-extract style test set",
        "etl_name": "MEDS_transforms",
        "meds_version": meds.__version__,
        "raw_source_id_columns": ["hadm_id"],
    }
    (root / meds.dataset_metadata_filepath).write_text(json.dumps(metadata))
    splits = pa.table(
        {
            "subject_id": pa.array(list(SPLITS), pa.int64()),
            "split": pa.array(list(SPLITS.values()), pa.string()),
        }
    )
    pq.write_table(splits, root / meds.subject_splits_filepath)
    return root
