"""Event table <-> MEDS (Medical Event Data Standard) on disk, and the survival-label sidecar.

Layout written by :func:`write_meds` (checked against the ``meds`` package's schemas)::

    root/
      data/0.parquet, data/1.parquet, ...   # DataSchema; each subject in exactly one shard,
                                            # rows sorted by subject_id then time
      metadata/codes.parquet                # CodeMetadataSchema: every code once
      metadata/dataset.json                 # DatasetMetadataSchema
      metadata/subject_splits.parquet       # SubjectSplitSchema: train / tuning / held_out

Codes (a choice of this library; the event table has concept ids, not vocabulary codes)
    ``"{domain}/{concept_id}"``, e.g. ``"condition/201826"``, ``"measurement/3004410"``
    -- the concept-id based form, since the event contract carries no concept table to
    spell ``SNOMED/...``. Birth is ``MEDS_BIRTH`` (at ``birth_datetime``), death is
    ``MEDS_DEATH`` (every ``death``-domain row, and ``persons.death_datetime`` when that column
    exists and the patient has no death row), sex is a static row ``"GENDER/{concept_id}"``
    with a null time.

Columns: ``subject_id`` int64, ``time`` timestamp[us] (nanoseconds are truncated),
``code`` string, ``numeric_value`` float32 (``value_as_number`` rounded to float32), and the
extension columns ``concept_id``, ``source_concept_id``, ``unit_concept_id`` (int64) and
``visit_occurrence_id`` (int64, null when missing), listed in ``dataset.json`` so that
:func:`read_meds` gives the event table back.

:func:`read_meds` also reads MEDS written by other tools: a code that is not
``{domain}/{integer}`` becomes an ``observation`` row with concept id 0 and the original
string kept in an extra ``code`` column; rows with a null time other than ``GENDER/`` are
skipped and counted.

Survival-label sidecar (:func:`write_survival_labels`): the MEDS label columns
``subject_id``, ``prediction_time``, ``boolean_value`` (= event observed within follow-up)
plus the extension columns ``event_time``, ``censor_time`` (timestamp[us], null when not
applicable) and ``duration`` (float64 days). Selecting the first three columns gives a valid
MEDS label table; the extra columns are why the full file is a documented extension (MEDS
label files allow no extra columns).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import meds
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ehrseq import __version__
from ehrseq.data.events import DOMAINS, EVENT_COLUMNS, check_events

__all__ = [
    "write_meds",
    "read_meds",
    "validate_meds",
    "event_codes",
    "write_survival_labels",
    "read_survival_labels",
    "LABEL_CORE_COLUMNS",
]

LABEL_CORE_COLUMNS = ("subject_id", "prediction_time", "boolean_value")
_EXT_INT_COLUMNS = ("concept_id", "source_concept_id", "unit_concept_id", "visit_occurrence_id")
_GENDER = "GENDER/"
_DATA_SCHEMA = pa.schema(
    [
        pa.field("subject_id", pa.int64(), nullable=False),
        pa.field("time", pa.timestamp("us")),
        pa.field("code", pa.string(), nullable=False),
        pa.field("numeric_value", pa.float32()),
        *(pa.field(c, pa.int64()) for c in _EXT_INT_COLUMNS),
    ]
)


def event_codes(domain: pd.Series, concept_id: pd.Series) -> np.ndarray:
    """MEDS codes of event rows: ``"{domain}/{concept_id}"``, ``MEDS_DEATH`` for deaths.

    Strings are built once per distinct (domain, concept) pair, then gathered.

    Shapes:
        domain, concept_id: ``(n,)``; returns ``(n,)`` object array of str.
    """
    dom = pd.Categorical(domain, categories=list(DOMAINS)).codes.astype(np.int64)
    key = concept_id.to_numpy(np.int64) * 8 + dom
    uniq, inv = np.unique(key, return_inverse=True)
    u_dom, u_cid = np.mod(uniq, 8), (uniq - np.mod(uniq, 8)) // 8
    names = np.array(
        [
            meds.death_code if DOMAINS[d] == "death" else f"{DOMAINS[d]}/{c}"
            for d, c in zip(u_dom.tolist(), u_cid.tolist())
        ],
        dtype=object,
    )
    return names[inv]


def _us(values: pd.Series) -> pa.Array:
    arr = pd.to_datetime(values).to_numpy().astype("datetime64[us]")
    return pa.array(arr, type=pa.timestamp("us"))


def _meds_frame(events: pd.DataFrame, persons: pd.DataFrame) -> pd.DataFrame:
    """All MEDS rows as one pandas frame (static, birth, events, extra deaths), sorted."""
    n = len(events)
    parts = []
    pid = persons["person_id"].to_numpy(np.int64)
    na_int = pd.array([pd.NA] * len(persons), dtype="Int64")
    if "gender_concept_id" in persons.columns:
        g = persons["gender_concept_id"].to_numpy(np.int64)
        parts.append(
            pd.DataFrame(
                {
                    "subject_id": pid,
                    "time": pd.NaT,
                    "code": [f"{_GENDER}{x}" for x in g],
                    "numeric_value": np.nan,
                    "concept_id": pd.array(g, dtype="Int64"),
                    "source_concept_id": na_int,
                    "unit_concept_id": na_int,
                    "visit_occurrence_id": na_int,
                }
            )
        )
    parts.append(
        pd.DataFrame(
            {
                "subject_id": pid,
                "time": pd.to_datetime(persons["birth_datetime"])
                .astype("datetime64[ns]")
                .to_numpy(),
                "code": meds.birth_code,
                "numeric_value": np.nan,
                "concept_id": na_int,
                "source_concept_id": na_int,
                "unit_concept_id": na_int,
                "visit_occurrence_id": na_int,
            }
        )
    )
    parts.append(
        pd.DataFrame(
            {
                "subject_id": events["person_id"].to_numpy(np.int64),
                "time": events["time"].astype("datetime64[ns]").to_numpy(),
                "code": event_codes(events["domain"], events["concept_id"]) if n else [],
                "numeric_value": events["value_as_number"].to_numpy(np.float64),
                "concept_id": pd.array(events["concept_id"].to_numpy(np.int64), dtype="Int64"),
                "source_concept_id": pd.array(
                    events["source_concept_id"].to_numpy(np.int64), dtype="Int64"
                ),
                "unit_concept_id": pd.array(
                    events["unit_concept_id"].to_numpy(np.int64), dtype="Int64"
                ),
                "visit_occurrence_id": events["visit_occurrence_id"].astype("Int64").array,
            }
        )
    )
    if "death_datetime" in persons.columns:
        has_row = np.isin(pid, events.loc[events["domain"] == "death", "person_id"].to_numpy())
        dd = pd.to_datetime(persons["death_datetime"]).astype("datetime64[ns]")
        extra = dd.notna().to_numpy() & ~has_row
        k = int(extra.sum())
        parts.append(
            pd.DataFrame(
                {
                    "subject_id": pid[extra],
                    "time": dd.to_numpy()[extra],
                    "code": meds.death_code,
                    "numeric_value": np.nan,
                    "concept_id": pd.array([0] * k, dtype="Int64"),
                    "source_concept_id": pd.array([0] * k, dtype="Int64"),
                    "unit_concept_id": pd.array([0] * k, dtype="Int64"),
                    "visit_occurrence_id": pd.array([pd.NA] * k, dtype="Int64"),
                }
            )
        )
    df = pd.concat(parts, ignore_index=True)
    df["time"] = df["time"].astype("datetime64[ns]")
    # static rows (null time) first, then time order; stable, so birth precedes same-time events
    t = df["time"].to_numpy().view(np.int64)  # NaT is the smallest int64
    order = np.lexsort((t, df["subject_id"].to_numpy()))
    return df.iloc[order].reset_index(drop=True)


def _to_arrow(df: pd.DataFrame) -> pa.Table:
    cols = {
        "subject_id": pa.array(df["subject_id"].to_numpy(np.int64), type=pa.int64()),
        "time": _us(df["time"]),
        "code": pa.array(df["code"].astype(object).to_numpy(), type=pa.string()),
        "numeric_value": pa.array(
            df["numeric_value"].to_numpy(np.float64).astype(np.float32),
            type=pa.float32(),
            mask=np.isnan(df["numeric_value"].to_numpy(np.float64)),
        ),
    }
    for c in _EXT_INT_COLUMNS:
        cols[c] = pa.array(df[c].astype("Int64"), type=pa.int64())
    return pa.table(cols, schema=_DATA_SCHEMA)


def _default_splits(subjects: np.ndarray, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    u = rng.random(len(subjects))
    split = np.where(
        u < 0.8, meds.train_split, np.where(u < 0.9, meds.tuning_split, meds.held_out_split)
    )
    return pd.DataFrame({"subject_id": subjects, "split": split})


def write_meds(
    events: pd.DataFrame,
    persons: pd.DataFrame,
    root: str | Path,
    *,
    splits: pd.DataFrame | None = None,
    subjects_per_shard: int = 10_000,
    dataset_name: str = "ehrseq",
    dataset_version: str = "0",
    ancestors: dict[int, list[int]] | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write the event table and persons as a MEDS dataset under ``root``.

    Args:
        events: the event table (:mod:`ehrseq.data.events`).
        persons: ``person_id``, ``birth_datetime``, optionally ``gender_concept_id`` and
            ``death_datetime``.
        root: the dataset folder (created).
        splits: ``subject_id`` (or ``person_id``) and ``split``; ``None`` draws a seeded
            80/10/10 ``train``/``tuning``/``held_out`` split.
        subjects_per_shard: subjects per ``data/N.parquet`` file.
        ancestors: concept id -> ancestors nearest first; the nearest becomes the code's
            ``parent_codes`` entry in ``codes.parquet``.
        seed: seed of the default split.
        overwrite: replace an existing ``root``.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``root`` exists and ``overwrite`` is False, event patients missing from
            ``persons``, a bad ``subjects_per_shard``, or splits that miss subjects.
    """
    check_events(events)
    root = Path(root)
    if root.exists():
        if not overwrite:
            raise ValueError(f"{root} exists; pass overwrite=True to replace it")
        shutil.rmtree(root)
    if subjects_per_shard < 1:
        raise ValueError(f"subjects_per_shard = {subjects_per_shard}: must be >= 1")
    missing = np.setdiff1d(
        events["person_id"].to_numpy(np.int64), persons["person_id"].to_numpy(np.int64)
    )
    if len(missing):
        raise ValueError(
            f"persons: {len(missing)} event patients have no row, e.g. {missing[:5].tolist()}"
        )

    df = _meds_frame(events, persons)
    subjects = np.unique(df["subject_id"].to_numpy())
    if splits is None:
        splits = _default_splits(subjects, seed)
    else:
        id_col = "subject_id" if "subject_id" in splits.columns else "person_id"
        splits = pd.DataFrame(
            {
                "subject_id": splits[id_col].to_numpy(np.int64),
                "split": splits["split"].astype(str).to_numpy(),
            }
        )
        lost = np.setdiff1d(subjects, splits["subject_id"].to_numpy())
        if len(lost):
            raise ValueError(
                f"splits: {len(lost)} subjects have no split, e.g. {lost[:5].tolist()}"
            )

    (root / meds.data_subdirectory).mkdir(parents=True)
    (root / "metadata").mkdir()
    sid = df["subject_id"].to_numpy()
    bounds = np.searchsorted(
        sid, subjects[::subjects_per_shard].tolist() + [np.iinfo(np.int64).max]
    )
    for k in range(len(bounds) - 1):
        table = _to_arrow(df.iloc[bounds[k] : bounds[k + 1]])
        meds.DataSchema.validate(table)
        pq.write_table(table, root / meds.data_subdirectory / f"{k}.parquet")

    codes = pd.Series(df["code"].unique(), dtype=object)
    parent = [None] * len(codes)
    if ancestors:
        for i, code in enumerate(codes):
            dom, _, cid = code.partition("/")
            if dom in DOMAINS and cid.lstrip("-").isdigit() and ancestors.get(int(cid)):
                parent[i] = [f"{dom}/{ancestors[int(cid)][0]}"]
    desc = [
        "birth"
        if c == meds.birth_code
        else "death"
        if c == meds.death_code
        else f"sex: OMOP concept {c.split('/', 1)[1]}"
        if c.startswith(_GENDER)
        else f"{c.split('/', 1)[0]}: OMOP concept {c.split('/', 1)[1]}"
        for c in codes
    ]
    code_table = pa.table(
        {
            "code": pa.array(codes.to_numpy(), type=pa.string()),
            "description": pa.array(desc, type=pa.string()),
            "parent_codes": pa.array(parent, type=pa.list_(pa.string())),
        }
    )
    meds.CodeMetadataSchema.validate(code_table)
    pq.write_table(code_table, root / meds.code_metadata_filepath)

    split_table = pa.table(
        {
            "subject_id": pa.array(splits["subject_id"].to_numpy(np.int64), type=pa.int64()),
            "split": pa.array(splits["split"].to_numpy(), type=pa.string()),
        }
    )
    meds.SubjectSplitSchema.validate(split_table)
    pq.write_table(split_table, root / meds.subject_splits_filepath)

    metadata = {
        "dataset_name": dataset_name,
        "dataset_version": dataset_version,
        "etl_name": "ehrseq.data.meds",
        "etl_version": __version__,
        "meds_version": meds.__version__,
        "created_at": dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(),
        "raw_source_id_columns": ["visit_occurrence_id"],
        "other_extension_columns": ["concept_id", "source_concept_id", "unit_concept_id"],
    }
    meds.DatasetMetadataSchema.validate(metadata)
    (root / meds.dataset_metadata_filepath).write_text(json.dumps(metadata, indent=1))
    return root


def validate_meds(root: str | Path) -> None:
    """Check every file of a MEDS dataset against the ``meds`` schemas.

    Also checks the two data rules the schemas cannot: each subject sits in one shard, and
    within a shard rows are grouped by subject and sorted by time (nulls first).

    Raises:
        ValueError: naming the file and the problem (wraps the ``meds`` schema errors).
    """
    root = Path(root)
    shards = sorted((root / meds.data_subdirectory).rglob("*.parquet"))
    if not shards:
        raise ValueError(f"{root}: no data/*.parquet shards")
    seen: set[int] = set()
    for path in shards:
        table = pq.read_table(path)
        try:
            meds.DataSchema.validate(table)
        except Exception as err:
            raise ValueError(f"{path}: {err}") from err
        sid = table["subject_id"].to_numpy()
        t = table["time"].to_numpy(zero_copy_only=False).astype("datetime64[us]").view(np.int64)
        ok = (sid[1:] > sid[:-1]) | ((sid[1:] == sid[:-1]) & (t[1:] >= t[:-1]))
        if not ok.all():
            raise ValueError(
                f"{path}: rows not sorted by subject_id then time at row {int(np.argmin(ok)) + 1}"
            )
        here = set(np.unique(sid).tolist())
        if seen & here:
            raise ValueError(
                f"{path}: subjects also in another shard, e.g. {sorted(seen & here)[:5]}"
            )
        seen |= here
    for schema, rel in (
        (meds.CodeMetadataSchema, meds.code_metadata_filepath),
        (meds.SubjectSplitSchema, meds.subject_splits_filepath),
    ):
        path = root / rel
        if path.exists():
            try:
                schema.validate(pq.read_table(path))
            except Exception as err:
                raise ValueError(f"{path}: {err}") from err
    path = root / meds.dataset_metadata_filepath
    if path.exists():
        try:
            meds.DatasetMetadataSchema.validate(json.loads(path.read_text()))
        except Exception as err:
            raise ValueError(f"{path}: {err}") from err


def read_meds(root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Read a MEDS dataset back into the event contract.

    Args:
        root: the dataset folder.

    Returns:
        ``(events, persons, splits, report)``: the event table (checked; plus a ``code``
        column when some codes are not ``{domain}/{integer}``), persons (``person_id``,
        ``birth_datetime``, ``gender_concept_id``; 0 when unknown; NaT birth when there is no
        ``MEDS_BIRTH`` row), the splits (``subject_id``, ``split``; empty if the file is
        missing) and counts ``rows``, ``foreign_codes``, ``static_rows_skipped``.

    Raises:
        ValueError: no shards under ``root/data``.
    """
    root = Path(root)
    shards = sorted((root / meds.data_subdirectory).rglob("*.parquet"))
    if not shards:
        raise ValueError(f"{root}: no data/*.parquet shards")
    table = pa.concat_tables([pq.read_table(p) for p in shards], promote_options="default")
    df = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get, timestamp_as_object=False)
    df["subject_id"] = df["subject_id"].astype(np.int64)
    df["time"] = pd.to_datetime(df["time"]).astype("datetime64[ns]")
    code = df["code"].astype(str)
    report = {"rows": len(df), "foreign_codes": 0, "static_rows_skipped": 0}

    is_birth = (code == meds.birth_code).to_numpy()
    is_gender = code.str.startswith(_GENDER).to_numpy()
    sid = df["subject_id"].to_numpy()
    subjects = np.unique(sid)
    births = df.loc[is_birth].drop_duplicates("subject_id").set_index("subject_id")["time"]
    genders = (
        df.loc[is_gender]
        .drop_duplicates("subject_id")
        .set_index("subject_id")["code"]
        .str.slice(len(_GENDER))
        .astype(np.int64)
    )
    persons = pd.DataFrame(
        {
            "person_id": subjects,
            "birth_datetime": births.reindex(subjects).astype("datetime64[ns]").to_numpy(),
            "gender_concept_id": genders.reindex(subjects).fillna(0).astype(np.int64).to_numpy(),
        }
    )

    ev = df.loc[~is_birth & ~is_gender]
    null_time = ev["time"].isna().to_numpy()
    report["static_rows_skipped"] = int(null_time.sum())
    ev = ev.loc[~null_time]
    code = ev["code"].astype(str)
    prefix = code.str.partition("/")
    is_death = (code == meds.death_code).to_numpy()
    ours = (
        prefix[0].isin(DOMAINS).to_numpy()
        & prefix[2].str.fullmatch(r"-?\d+").fillna(False).to_numpy()
    )
    foreign = ~ours & ~is_death
    report["foreign_codes"] = int(foreign.sum())
    domain = np.where(is_death, "death", np.where(ours, prefix[0].to_numpy(), "observation"))
    parsed = (
        pd.to_numeric(prefix[2].where(ours), errors="coerce").fillna(0).astype(np.int64).to_numpy()
    )

    def ext(col: str, fallback: np.ndarray) -> np.ndarray:
        if col not in ev.columns:
            return fallback
        v = ev[col].astype("Int64")
        return np.where(v.isna().to_numpy(), fallback, v.fillna(0).to_numpy(np.int64))

    zeros = np.zeros(len(ev), dtype=np.int64)
    out = pd.DataFrame(
        {
            "person_id": ev["subject_id"].to_numpy(np.int64),
            "time": ev["time"].to_numpy(),
            "concept_id": ext("concept_id", parsed),
            "source_concept_id": ext("source_concept_id", zeros),
            "domain": domain.astype(object),
            "value_as_number": (
                ev["numeric_value"].astype("float64").to_numpy()
                if "numeric_value" in ev.columns
                else np.full(len(ev), np.nan)
            ),
            "unit_concept_id": ext("unit_concept_id", zeros),
            "visit_occurrence_id": (
                ev["visit_occurrence_id"].astype("Int64").array
                if "visit_occurrence_id" in ev.columns
                else pd.array([pd.NA] * len(ev), dtype="Int64")
            ),
        }
    )
    if foreign.any():
        out["code"] = code.to_numpy()
    order = np.lexsort((out["time"].to_numpy().view(np.int64), out["person_id"].to_numpy()))
    out = out.iloc[order].reset_index(drop=True)
    out = out.astype({k: v for k, v in EVENT_COLUMNS.items() if k != "domain"})
    check_events(out, "read_meds events")

    split_path = root / meds.subject_splits_filepath
    splits = (
        pq.read_table(split_path).to_pandas()
        if split_path.exists()
        else pd.DataFrame(
            {"subject_id": pd.Series(dtype=np.int64), "split": pd.Series(dtype=object)}
        )
    )
    return out, persons, splits, report


def write_survival_labels(labels: pd.DataFrame, path: str | Path, task: str = "survival") -> Path:
    """Write the survival label table as MEDS labels plus the documented extension columns.

    Args:
        labels: the table of :func:`ehrseq.data.labels.survival_labels` (``subject_id``,
            ``prediction_time``, ``event_time``, ``censor_time``, ``event``, ``duration``).
        path: a ``.parquet`` file (parent folders are created).
        task: the task name, stored in the file's metadata.

    Raises:
        ValueError: missing columns, or a core part that fails ``meds.LabelSchema``.
    """
    need = {"subject_id", "prediction_time", "event_time", "censor_time", "event", "duration"}
    if not need <= set(labels.columns):
        raise ValueError(f"labels: missing columns {sorted(need - set(labels.columns))}")
    table = pa.table(
        {
            "subject_id": pa.array(labels["subject_id"].to_numpy(np.int64), type=pa.int64()),
            "prediction_time": _us(labels["prediction_time"]),
            "boolean_value": pa.array(labels["event"].to_numpy().astype(bool), type=pa.bool_()),
            "event_time": _us(labels["event_time"]),
            "censor_time": _us(labels["censor_time"]),
            "duration": pa.array(labels["duration"].to_numpy(np.float64), type=pa.float64()),
        }
    )
    try:
        meds.LabelSchema.validate(table.select(list(LABEL_CORE_COLUMNS)))
    except Exception as err:
        raise ValueError(f"labels do not fit meds.LabelSchema: {err}") from err
    note = (
        "MEDS label table (subject_id, prediction_time, boolean_value = event observed) plus "
        "ehrseq survival extension columns: event_time, censor_time (null when not applicable), "
        "duration (days from prediction_time)."
    )
    table = table.replace_schema_metadata(
        {b"ehrseq.task": task.encode(), b"ehrseq.extension": note.encode()}
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def read_survival_labels(path: str | Path) -> pd.DataFrame:
    """Read a file written by :func:`write_survival_labels` back into the label table.

    A plain MEDS label file (no extension columns) gives ``event`` from ``boolean_value``
    and NaT/NaN for the survival columns.
    """
    t = pq.read_table(path).to_pandas()
    n = len(t)
    nat = pd.Series(pd.NaT, index=t.index, dtype="datetime64[ns]")
    return pd.DataFrame(
        {
            "subject_id": t["subject_id"].to_numpy(np.int64),
            "prediction_time": t["prediction_time"].astype("datetime64[ns]").to_numpy(),
            "event_time": t.get("event_time", nat).astype("datetime64[ns]").to_numpy(),
            "censor_time": t.get("censor_time", nat).astype("datetime64[ns]").to_numpy(),
            "event": t["boolean_value"].to_numpy().astype(np.int64),
            "duration": t["duration"].to_numpy(np.float64)
            if "duration" in t
            else np.full(n, np.nan),
        }
    )
