"""Event table <-> MEDS (Medical Event Data Standard) on disk, and the survival-label sidecar.

Layout written by :func:`write_meds` (checked against the ``meds`` package's schemas)::

    root/
      data/0.parquet, data/1.parquet, ...   # DataSchema; each subject in exactly one shard,
                                            # rows sorted by subject_id then time, static first
      metadata/codes.parquet                # CodeMetadataSchema: every code once
      metadata/dataset.json                 # DatasetMetadataSchema
      metadata/subject_splits.parquet       # SubjectSplitSchema: train / tuning / held_out

Codes this library writes (the event table has concept ids, not vocabulary codes)
    ``"{domain}/{concept_id}"``, e.g. ``"condition/201826"``, ``"measurement/3004410"``
    -- the concept-id based form, since the event contract carries no concept table to
    spell ``SNOMED/...``. Birth is ``MEDS_BIRTH`` (at ``birth_datetime``), death is
    ``MEDS_DEATH`` (every ``death``-domain row, and ``persons.death_datetime`` when that column
    exists and the patient has no death row), sex is a static row ``"GENDER/{concept_id}"``
    with a null time.

Columns: ``subject_id`` int64, ``time`` timestamp[us] (nanoseconds are truncated),
``code`` string, ``numeric_value`` float32 (``value_as_number`` rounded to float32),
``text_value`` large_string (only when the events or static rows carry one), and the
extension columns ``concept_id``, ``source_concept_id``, ``unit_concept_id`` (int64) and
``visit_occurrence_id`` (int64, null when missing), listed in ``dataset.json`` so that
:func:`read_meds` gives the event table back.

Codes written by other tools (MEDS-extract, MEDS-transforms, meds_etl, ...)
    A code that is not ``{domain}/{integer}`` -- ``GENDER//F``, ``DIAGNOSIS//ICD//9//4280``,
    ``LAB//50912//mg/dL``, ``MEDICATION//START//...`` -- names no OMOP concept; call it
    *foreign*. :func:`read_meds` keeps every foreign code as its own code: the string stays in
    a ``code`` column of the event table, and the row gets a stand-in concept id of its own,
    :func:`foreign_concept_ids` -- a negative int64 hashed from the string, so the same code
    has the same id in every export and every run, and never meets an OMOP id (those are
    positive). The vocabulary (:class:`ehrseq.data.vocab.Vocab`), which keys tokens on
    (domain, concept id), therefore gives each foreign code a token of its own, e.g.
    ``measurement:-{id}`` for ``LAB//50912//mg/dL``; two codes that hash alike are an error,
    never a merge. The domain comes from the code's first segment
    (:data:`FOREIGN_CODE_DOMAINS`: ``LAB`` -> measurement, so its values get deciles,
    ``DIAGNOSIS`` -> condition, ``MEDICATION`` -> drug, ``PROCEDURE`` -> procedure, and
    each domain's own name in upper case, ``CONDITION`` -> condition, as the OMOP reader
    writes the source values it keeps: ``CONDITION//I10``), else
    ``observation`` (whose values are kept in ``value_as_number`` but not binned by the
    vocabulary). ``text_value`` is kept in a ``text_value`` column.

Static rows (null time)
    The event table has no null times, so static rows -- wherever they sit in a shard -- are
    not events: a ``GENDER/...`` row gives ``persons.gender_concept_id`` (``GENDER/8532`` ->
    8532; ``GENDER//F`` -> 8532 and ``GENDER//M`` -> 8507, the OMOP concepts; else 0), and
    :func:`read_meds_static` returns all of them, values included, for
    ``write_meds(..., static=...)``. So a foreign dataset round-trips code for code::

        events, persons, splits, report = read_meds(src)
        write_meds(events, persons, dst, splits=splits, static=read_meds_static(src))

Survival-label sidecar (:func:`write_survival_labels`): the MEDS label columns
``subject_id``, ``prediction_time``, ``boolean_value`` (= event observed within follow-up)
plus the extension columns ``event_time``, ``censor_time`` (timestamp[us], null when not
applicable) and ``duration`` (float64 days). Selecting the first three columns gives a valid
MEDS label table; the extra columns are why the full file is a documented extension (MEDS
label files allow no extra columns). :func:`read_survival_labels` also reads plain MEDS label
files, as ACES writes them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import shutil
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ehrseq import __version__
from ehrseq.data.events import DOMAINS, EVENT_COLUMNS, check_events


def _lazy_import(name: str):
    """``import name``, run on the module's first attribute access instead of now.

    The ``meds`` package validates its schemas with jsonschema, whose import costs about
    1.7 s (a URI grammar built at import). Every chapter imports this module through the
    OMOP loader; only the ones that read or write MEDS pay for it now.
    """
    import importlib.util
    import sys

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


meds = _lazy_import("meds")

__all__ = [
    "write_meds",
    "read_meds",
    "read_meds_static",
    "validate_meds",
    "event_codes",
    "foreign_concept_ids",
    "FOREIGN_CODE_DOMAINS",
    "write_survival_labels",
    "read_survival_labels",
    "LABEL_CORE_COLUMNS",
]

LABEL_CORE_COLUMNS = ("subject_id", "prediction_time", "boolean_value")
FOREIGN_CODE_DOMAINS: Mapping[str, str] = {
    "LAB": "measurement",
    "DIAGNOSIS": "condition",
    "MEDICATION": "drug",
    "PROCEDURE": "procedure",
    # the foreign codes the OMOP reader keeps from source values ("CONDITION//I10")
    **{d.upper(): d for d in DOMAINS if d != "death"},
}
_EXT_INT_COLUMNS = ("concept_id", "source_concept_id", "unit_concept_id", "visit_occurrence_id")
_GENDER = "GENDER/"
_GENDER_CONCEPTS = {"F": 8532, "FEMALE": 8532, "M": 8507, "MALE": 8507}  # OMOP gender concepts
# ASCII digits only: "condition/١٢٣" (Arabic-Indic digits) is a foreign code, not concept 123
_OURS = re.compile(rf"({'|'.join(DOMAINS)})/(-?[0-9]{{1,18}})")
_REQUIRED = ("subject_id", "time", "code")
_READ_TYPES = {
    "subject_id": pa.int64(),
    "time": pa.timestamp("us"),
    "code": pa.string(),
    "numeric_value": pa.float64(),
    "text_value": pa.large_string(),
    **{c: pa.int64() for c in _EXT_INT_COLUMNS},
}
_SORT_RULE = "within a subject, rows are sorted by time with static (null-time) rows first"
_GROUP_RULE = "a subject's rows are contiguous within its shard"
_SHARD_RULE = "each subject's rows sit in exactly one shard"
_ZONED = "time (zone-aware, read as UTC)"  # a count _load_shards returns with the unknown columns
_NON_FINITE = "numeric_value (inf or NaN, read as null)"  # another such count


def _data_schema(text: bool) -> pa.Schema:
    return pa.schema(
        [
            pa.field("subject_id", pa.int64(), nullable=False),
            pa.field("time", pa.timestamp("us")),
            pa.field("code", pa.string(), nullable=False),
            pa.field("numeric_value", pa.float32()),
            *([pa.field("text_value", pa.large_string())] if text else []),
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


def foreign_concept_ids(codes: Iterable[str]) -> np.ndarray:
    r"""Stand-in concept ids of foreign MEDS codes (codes that name no OMOP concept).

    .. math::

        \mathrm{id}(c) = -1 - \mathrm{BLAKE2b}_{48}(c),

    the first 48 bits of the BLAKE2b hash of the UTF-8 string, read as an unsigned integer:
    the same code gets the same id in every dataset and every run (a hash, not a counter, so
    a vocabulary fitted on one export encodes another), ids lie in
    :math:`[-2^{48}, -1]` (OMOP concept ids are positive; ``|id| < 2^{56}`` keeps the
    vocabulary's int64 keys exact), and two codes share an id with probability about
    :math:`n^2 / 2^{49}` for :math:`n` codes (1e-7 for 10,000), which :func:`read_meds`
    checks and refuses. Use it to name foreign codes where concept ids are asked for, e.g.
    ``Outcome.of_concepts("hf", foreign_concept_ids(["DIAGNOSIS//ICD//9//4280"]))``.

    Shapes:
        codes: ``(n,)``; returns ``(n,)`` int64.
    """
    return np.array(
        [
            -1 - int.from_bytes(hashlib.blake2b(c.encode(), digest_size=6).digest(), "big")
            for c in codes
        ],
        dtype=np.int64,
    )


def _foreign_domain(code: str, domains: Mapping[str, str]) -> str:
    return domains.get(code.split("/", 1)[0], "observation")


def _gender_concept(code: str) -> int:
    value = code[len(_GENDER) :].lstrip("/")
    if re.fullmatch(r"-?[0-9]{1,18}", value):
        return int(value)
    return _GENDER_CONCEPTS.get(value.upper(), 0)


def _us(values: pd.Series) -> pa.Array:
    arr = pd.to_datetime(values).to_numpy().astype("datetime64[us]")
    return pa.array(arr, type=pa.timestamp("us"))


def _part(
    subject_id: np.ndarray,
    time: np.ndarray,
    code: np.ndarray | str,
    numeric_value: np.ndarray | float = np.nan,
    text_value: np.ndarray | None = None,
    **ints: object,
) -> pd.DataFrame:
    """MEDS rows as a pandas frame with every column of :func:`_meds_frame` (missing
    extension ids are null)."""
    n = len(subject_id)
    na = pd.array([pd.NA] * n, dtype="Int64")
    return pd.DataFrame(
        {
            "subject_id": np.asarray(subject_id, dtype=np.int64),
            "time": np.asarray(time, dtype="datetime64[ns]"),
            "code": code,
            "numeric_value": numeric_value,
            "text_value": np.full(n, None, dtype=object) if text_value is None else text_value,
            **{c: pd.array(ints.get(c, na), dtype="Int64") for c in _EXT_INT_COLUMNS},
        }
    )


def _meds_frame(
    events: pd.DataFrame, persons: pd.DataFrame, static: pd.DataFrame | None
) -> pd.DataFrame:
    """All MEDS rows as one pandas frame (static, birth, events, extra deaths), sorted."""
    n = len(events)
    parts = []
    pid = persons["person_id"].to_numpy(np.int64)
    if static is not None:
        sid = static["subject_id" if "subject_id" in static.columns else "person_id"]
        parts.append(
            _part(
                sid.to_numpy(np.int64),
                np.full(len(static), np.datetime64("NaT"), dtype="datetime64[ns]"),
                static["code"].astype(object).to_numpy(),
                static["numeric_value"].to_numpy(np.float64)
                if "numeric_value" in static.columns
                else np.nan,
                static["text_value"].astype(object).to_numpy()
                if "text_value" in static.columns
                else None,
            )
        )
    elif "gender_concept_id" in persons.columns:
        g = persons["gender_concept_id"].to_numpy(np.int64)
        parts.append(
            _part(
                pid,
                np.full(len(pid), np.datetime64("NaT"), dtype="datetime64[ns]"),
                np.array([f"{_GENDER}{x}" for x in g], dtype=object),
                concept_id=g,
            )
        )
    birth = pd.to_datetime(persons["birth_datetime"]).astype("datetime64[ns]").to_numpy()
    known = ~np.isnat(birth)  # no MEDS_BIRTH row for an unknown birth
    parts.append(_part(pid[known], birth[known], meds.birth_code))
    if n:
        codes = event_codes(events["domain"], events["concept_id"])
        if "code" in events.columns:  # codes read from MEDS (foreign ones included) stay
            given = events["code"].notna().to_numpy()
            codes[given] = events["code"].to_numpy(dtype=object)[given]
        cid = events["concept_id"].to_numpy(np.int64)
        parts.append(
            _part(
                events["person_id"].to_numpy(np.int64),
                events["time"].astype("datetime64[ns]").to_numpy(),
                codes,
                events["value_as_number"].to_numpy(np.float64),
                events["text_value"].astype(object).to_numpy()
                if "text_value" in events.columns
                else None,
                # a stand-in id of a foreign code (< 0) is no OMOP concept: left null
                concept_id=pd.Series(cid, dtype="Int64").where(cid >= 0).array,
                source_concept_id=events["source_concept_id"].to_numpy(np.int64),
                unit_concept_id=events["unit_concept_id"].to_numpy(np.int64),
                visit_occurrence_id=events["visit_occurrence_id"].astype("Int64").array,
            )
        )
    if "death_datetime" in persons.columns:
        has_row = np.isin(pid, events.loc[events["domain"] == "death", "person_id"].to_numpy())
        dd = pd.to_datetime(persons["death_datetime"]).astype("datetime64[ns]").to_numpy()
        extra = ~np.isnat(dd) & ~has_row
        zeros = np.zeros(int(extra.sum()), dtype=np.int64)
        parts.append(
            _part(
                pid[extra],
                dd[extra],
                meds.death_code,
                concept_id=zeros,
                source_concept_id=zeros,
                unit_concept_id=zeros,
            )
        )
    df = pd.concat(parts, ignore_index=True)
    # static rows (null time) first, then time order; stable, so birth precedes same-time events
    t = df["time"].to_numpy().view(np.int64)  # NaT is the smallest int64
    order = np.lexsort((t, df["subject_id"].to_numpy()))
    return df.iloc[order].reset_index(drop=True)


def _to_arrow(df: pd.DataFrame, text: bool) -> pa.Table:
    value = df["numeric_value"].to_numpy(np.float64)
    cols = {
        "subject_id": pa.array(df["subject_id"].to_numpy(np.int64), type=pa.int64()),
        "time": _us(df["time"]),
        "code": pa.array(df["code"].astype(object).to_numpy(), type=pa.string()),
        "numeric_value": pa.array(
            value.astype(np.float32), type=pa.float32(), mask=np.isnan(value)
        ),
    }
    if text:
        cols["text_value"] = pa.array(  # from_pandas: NaN and None are null
            df["text_value"].to_numpy(), type=pa.large_string(), from_pandas=True
        )
    for c in _EXT_INT_COLUMNS:
        cols[c] = pa.array(df[c].astype("Int64"), type=pa.int64())
    return pa.table(cols, schema=_data_schema(text))


def _describe(code: str) -> str | None:
    """``codes.parquet`` description of a code this library writes; None for foreign codes."""
    if code == meds.birth_code:
        return "birth"
    if code == meds.death_code:
        return "death"
    if code.startswith(_GENDER) and re.fullmatch(r"-?[0-9]{1,18}", code[len(_GENDER) :]):
        return f"sex: OMOP concept {code[len(_GENDER) :]}"
    m = _OURS.fullmatch(code)
    return f"{m[1]}: OMOP concept {m[2]}" if m else None


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
    static: pd.DataFrame | None = None,
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
        events: the event table (:mod:`ehrseq.data.events`). Optional columns read by
            :func:`read_meds` are written back: ``code`` (the MEDS code of each row; a null
            falls back to ``"{domain}/{concept_id}"``) and ``text_value``.
        persons: ``person_id``, ``birth_datetime`` (NaT: no ``MEDS_BIRTH`` row), optionally
            ``gender_concept_id`` and ``death_datetime``.
        root: the dataset folder (created).
        static: static rows to write with a null time, as :func:`read_meds_static` returns
            them (``subject_id``, ``code``, optionally ``numeric_value``, ``text_value``).
            When given they replace the ``GENDER/{gender_concept_id}`` rows of ``persons``.
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
            ``persons``, a bad ``subjects_per_shard``, static rows without a code, or splits
            that miss subjects.
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
    if static is not None:
        lacking = {"code"} - set(static.columns)
        if not {"subject_id", "person_id"} & set(static.columns):
            lacking.add("subject_id")
        if lacking:
            raise ValueError(f"static: missing columns {sorted(lacking)}")
        if static["code"].isna().any():
            i = int(np.argmax(static["code"].isna().to_numpy()))
            raise ValueError(f"static.code: null code at row {i}: {static.iloc[i].to_dict()}")

    df = _meds_frame(events, persons, static)
    text = "text_value" in events.columns or (static is not None and "text_value" in static.columns)
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
        table = _to_arrow(df.iloc[bounds[k] : bounds[k + 1]], text)
        meds.DataSchema.validate(table)
        pq.write_table(table, root / meds.data_subdirectory / f"{k}.parquet")

    codes = pd.Series(df["code"].unique(), dtype=object)
    parent = [None] * len(codes)
    if ancestors:
        for i, code in enumerate(codes):
            m = _OURS.fullmatch(code)
            if m and ancestors.get(int(m[2])):
                parent[i] = [f"{m[1]}/{ancestors[int(m[2])][0]}"]
    code_table = pa.table(
        {
            "code": pa.array(codes.to_numpy(), type=pa.string()),
            "description": pa.array([_describe(c) for c in codes], type=pa.string()),
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


def _shard_paths(root: Path) -> list[Path]:
    shards = sorted((root / meds.data_subdirectory).rglob("*.parquet"))
    if not shards:
        raise ValueError(f"{root}: no data/*.parquet shards")
    return shards


def _example(table: pa.Table, i: int) -> str:
    """Row ``i`` of a shard, over the MEDS core columns it has: ``subject_id=3, time=null, ...``."""
    cols = [c for c in (*_REQUIRED, "numeric_value", "text_value") if c in table.column_names]
    parts = []
    for c in cols:
        v = table[c][i].as_py()
        if v is None and c in ("numeric_value", "text_value"):
            continue
        parts.append(f"{c}={'null' if v is None else repr(v) if isinstance(v, str) else v}")
    return ", ".join(parts)


def _check_data_columns(path: Path, table: pa.Table) -> None:
    """Name the column (and an example row) that keeps a shard from being MEDS data."""
    missing = [c for c in _REQUIRED if c not in table.column_names]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; MEDS data needs subject_id (int64), "
            f"time (timestamp[us], null for static rows) and code (string); "
            f"found {table.column_names}"
        )
    want = {
        "subject_id": pa.int64(),
        "time": pa.timestamp("us"),
        "code": pa.string(),
        "numeric_value": pa.float32(),
        "text_value": pa.large_string(),
    }
    for col, typ in want.items():
        if col in table.column_names and table.schema.field(col).type != typ:
            eg = f", e.g. row 0: {_example(table, 0)}" if len(table) else ""
            raise ValueError(
                f"{path}: column {col!r} is {table.schema.field(col).type}; MEDS needs {typ}{eg}"
            )
    for col in ("subject_id", "code"):
        nulls = table[col].is_null()
        if pc.any(nulls).as_py():
            i = int(np.argmax(nulls.to_numpy(zero_copy_only=False)))
            raise ValueError(
                f"{path}: column {col!r} is null in {table[col].null_count} rows "
                f"(MEDS allows no nulls there), e.g. row {i}: {_example(table, i)}"
            )


def _check_order(path: Path, table: pa.Table) -> None:
    """The two ordering rules of MEDS data within one shard, with the row that breaks one."""
    sid = table["subject_id"].to_numpy()
    t = table["time"].to_numpy(zero_copy_only=False).astype("datetime64[us]").view(np.int64)
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]]) if len(sid) else np.zeros(0, np.int64)
    run_sid = sid[starts]
    _, first_run = np.unique(run_sid, return_index=True)
    if len(first_run) < len(run_sid):
        k = int(np.setdiff1d(np.arange(len(run_sid)), first_run)[0])
        i, s = int(starts[k]), int(run_sid[k])
        first = int(starts[int(np.flatnonzero(run_sid == s)[0])])
        raise ValueError(
            f"{path}: subject {s} appears again at row {i} after rows of other subjects "
            f"(its first row is row {first}); MEDS rule: {_GROUP_RULE}. "
            f"Row {i}: {_example(table, i)}"
        )
    bad = (sid[1:] == sid[:-1]) & (t[1:] < t[:-1])  # NaT is the smallest int64
    if bad.any():
        i = int(np.argmax(bad)) + 1
        why = (
            "a static (null-time) row after a timed row"
            if t[i] == np.iinfo(np.int64).min
            else "time goes backwards"
        )
        raise ValueError(
            f"{path}: subject {int(sid[i])}, row {i}: {why}; MEDS rule: {_SORT_RULE}. "
            f"Row {i - 1}: {_example(table, i - 1)}; row {i}: {_example(table, i)}"
        )


def validate_meds(root: str | Path) -> None:
    """Check every file of a MEDS dataset against the ``meds`` schemas and the data rules.

    The data rules the schemas cannot check, each named in the error that breaks it: each
    subject's rows sit in exactly one shard; a subject's rows are contiguous within its
    shard; within a subject, rows are sorted by time with static (null-time) rows first.
    (Subjects need not be in increasing ``subject_id`` order: MEDS does not ask it.)

    Raises:
        ValueError: naming the file, the column or the rule, the subject, and an example row
            (wraps the ``meds`` schema errors with the file).
    """
    root = Path(root)
    owner: dict[int, Path] = {}
    for path in _shard_paths(root):
        table = pq.read_table(path)
        _check_data_columns(path, table)
        try:
            meds.DataSchema.validate(table)
        except Exception as err:
            raise ValueError(f"{path}: {err}") from err
        _check_order(path, table)
        for s in np.unique(table["subject_id"].to_numpy()).tolist():
            if owner.setdefault(s, path) != path:
                i = int(np.argmax(table["subject_id"].to_numpy() == s))
                raise ValueError(
                    f"{path}: subject {s} is also in {owner[s]}; MEDS rule: {_SHARD_RULE}. "
                    f"Row {i}: {_example(table, i)}"
                )
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


def _load_shards(root: Path, *, static_only: bool = False) -> tuple[pa.Table, dict[str, int]]:
    """Every shard's known columns cast to one type each, concatenated in shard order.

    Returns the table and, for each column this reader does not know, its non-null values;
    a zone-aware ``time`` column is read as UTC and its non-null values are counted under
    the key ``"time (zone-aware, read as UTC)"``.

    Raises:
        ValueError: a shard without a MEDS core column, with nulls in ``subject_id`` or
            ``code``, with a column that cannot be cast, or a subject whose rows sit in two
            shards (naming file, column or rule, and row).
    """
    tables, unknown = [], {}
    owner: dict[int, Path] = {}
    for path in _shard_paths(root):
        kwargs = {"filters": pc.field("time").is_null()} if static_only else {}
        try:
            names = pq.read_schema(path).names
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(
                    f"{path}: column(s) {twice} appear more than once ({names}); a MEDS shard "
                    f"names each column once. Fix: rename or remove the extra column"
                )
            table = pq.read_table(path, **kwargs)
        except (pa.ArrowException, OSError) as err:
            raise ValueError(
                f"{path}: cannot be read as a parquet MEDS shard ({type(err).__name__}: {err}); "
                f"a truncated or damaged file? Re-export it"
            ) from err
        missing = [c for c in _REQUIRED if c not in table.column_names]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {missing}; MEDS data needs {list(_REQUIRED)}, "
                f"found {table.column_names}"
            )
        cols = {}
        zone = getattr(table.schema.field("time").type, "tz", None)
        if zone:  # the cast gives UTC wall-clock times; say so, and how many
            key = _ZONED
            unknown[key] = unknown.get(key, 0) + len(table) - table["time"].null_count
        for name in table.column_names:
            if name not in _READ_TYPES:
                unknown[name] = unknown.get(name, 0) + len(table) - table[name].null_count
                continue
            try:
                cols[name] = table[name].cast(_READ_TYPES[name], safe=name != "time")
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise ValueError(
                    f"{path}: column {name!r} ({table.schema.field(name).type}) cannot be read "
                    f"as {_READ_TYPES[name]}: {err}"
                ) from err
        for col in ("subject_id", "code"):
            if cols[col].null_count:
                nulls = cols[col].is_null().to_numpy(zero_copy_only=False)
                i = int(np.argmax(nulls))
                raise ValueError(
                    f"{path}: column {col!r} is null in {cols[col].null_count} rows, "
                    f"e.g. row {i}: {_example(table, i)}"
                )
        blank = pc.equal(pc.utf8_trim_whitespace(cols["code"]), "")
        if len(table) and pc.any(blank).as_py():
            i = int(np.argmax(blank.to_numpy(zero_copy_only=False)))
            raise ValueError(
                f"{path}: column 'code' is empty in {pc.sum(blank).as_py()} rows (a code names "
                f"the event; an empty one names none), e.g. row {i}: {_example(table, i)}"
            )
        if "numeric_value" in cols:  # inf, -inf and NaN become null, counted
            value = cols["numeric_value"]
            bad = pc.invert(pc.is_finite(value)).fill_null(False)
            n_bad = pc.sum(bad).as_py() or 0
            if n_bad:
                unknown[_NON_FINITE] = unknown.get(_NON_FINITE, 0) + n_bad
                cols["numeric_value"] = pc.if_else(bad, pa.scalar(None, pa.float64()), value)
        if not static_only:
            for sid in pc.unique(cols["subject_id"]).to_numpy(zero_copy_only=False).tolist():
                if owner.setdefault(sid, path) != path:
                    i = int(np.argmax(cols["subject_id"].to_numpy(zero_copy_only=False) == sid))
                    raise ValueError(
                        f"{path}: subject {sid} is also in {owner[sid]}; MEDS rule: "
                        f"{_SHARD_RULE}. Row {i}: {_example(table, i)}. Fix: write each "
                        f"subject's rows into one shard (read_meds would merge them silently)"
                    )
        tables.append(pa.table(cols))
    return pa.concat_tables(tables, promote_options="default"), unknown


def _note_unknown(root: Path, unknown: dict[str, int]) -> None:
    """Warn about the columns :func:`read_meds` leaves out, with what ``dataset.json`` says."""
    role: dict[str, str] = {}
    path = root / meds.dataset_metadata_filepath
    if path.exists():
        try:
            meta = json.loads(path.read_text())
        except json.JSONDecodeError:
            meta = {}
        for key, value in meta.items():
            if key.endswith("_columns") and isinstance(value, list):
                for col in value:
                    role.setdefault(str(col), key)
    listed = ", ".join(
        f"{c!r} ({k:,} non-null values" + (f"; dataset.json: {role[c]}" if c in role else "") + ")"
        for c, k in unknown.items()
    )
    warnings.warn(
        f"read_meds({root}): {len(unknown)} column(s) not read (neither MEDS core columns nor "
        f"ehrseq extension columns): {listed}",
        UserWarning,
        stacklevel=3,
    )


def read_meds(
    root: str | Path, *, code_domains: Mapping[str, str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Read a MEDS dataset back into the event contract, every code kept apart.

    Rows with a time are events, except ``MEDS_BIRTH`` (-> ``persons.birth_datetime``, the
    earliest when there are several). Rows with a null time are static, wherever they sit;
    they are not events (see :func:`read_meds_static`), but a ``GENDER/...`` row gives
    ``persons.gender_concept_id``. Codes ``{domain}/{integer}`` written by :func:`write_meds`
    keep their OMOP concept; every other code is foreign and gets its own stand-in concept id
    (:func:`foreign_concept_ids`) and a domain from ``code_domains`` (see the module
    docstring). Columns other than the MEDS core ones and this library's extension columns
    are left out, named in a warning and counted.

    Args:
        root: the dataset folder.
        code_domains: first segment of a foreign code -> domain; default
            :data:`FOREIGN_CODE_DOMAINS`; a code whose segment is not listed is ``observation``.

    Returns:
        ``(events, persons, splits, report)``: the event table (checked; sorted by person and
        time, rows of equal time in file order; plus a ``code`` column with every row's MEDS
        code when some codes are foreign, and a ``text_value`` column when some events carry
        one), persons (``person_id``, ``birth_datetime``, ``gender_concept_id``; 0 when
        unknown; NaT birth when there is no ``MEDS_BIRTH`` row), the splits (``subject_id``,
        ``split``; empty if the file is missing) and the counts ``rows`` (read), ``events``,
        ``static_rows`` (null time), ``codes`` (distinct codes of all rows),
        ``foreign_codes`` (distinct foreign codes among events), ``foreign_rows``,
        ``unknown_columns``, ``zoned_times`` when some times were zone-aware (read as
        UTC, with a warning), and ``non_finite_values`` when some ``numeric_value`` were
        infinite or NaN (read as null: NaN in the event table).

    Raises:
        ValueError: no shards under ``root/data``, a shard that is not MEDS data (naming file,
            column and row: a null ``subject_id`` or ``code``, an empty ``code``, a
            ``numeric_value`` that is not a number, a column named twice, a file that is not
            parquet), a splits file that cannot be read, a subject in two shards or two splits, a code domain outside
            :data:`ehrseq.data.events.DOMAINS`, two foreign codes with the same stand-in id,
            or a time outside 1677..2262 (the event table is in nanoseconds).
    """
    root = Path(root)
    domains = FOREIGN_CODE_DOMAINS if code_domains is None else code_domains
    odd = sorted(set(domains.values()) - set(DOMAINS))
    if odd:
        raise ValueError(f"code_domains: unknown domains {odd}; expected one of {DOMAINS}")
    table, unknown = _load_shards(root)
    zoned = unknown.pop(_ZONED, 0)
    non_finite = unknown.pop(_NON_FINITE, 0)
    if unknown:
        _note_unknown(root, unknown)
    if zoned:
        warnings.warn(
            f"read_meds({root}): {zoned:,} times carry a time zone; read as UTC wall-clock "
            f"times (MEDS times are naive); counted in report['zoned_times']",
            UserWarning,
            stacklevel=2,
        )

    # per distinct code: kind, domain, concept id (strings are parsed once per code)
    enc = table["code"].combine_chunks().dictionary_encode()
    inv = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    uniq = enc.dictionary.to_pylist()
    match = [_OURS.fullmatch(c) for c in uniq]
    u_birth = np.array([c == meds.birth_code for c in uniq], dtype=bool)
    u_death = np.array([c == meds.death_code for c in uniq], dtype=bool)
    u_gender = np.array([c.startswith(_GENDER) for c in uniq], dtype=bool)
    u_foreign = np.array([m is None for m in match], dtype=bool) & ~u_death
    u_dom = np.array(
        [
            "death" if d else m[1] if m else _foreign_domain(c, domains)
            for c, m, d in zip(uniq, match, u_death.tolist())
        ],
        dtype=object,
    )
    u_cid = np.zeros(len(uniq), dtype=np.int64)
    ours = np.flatnonzero(~u_foreign & ~u_death)
    u_cid[ours] = [int(match[k][2]) for k in ours.tolist()]
    stand_in = np.flatnonzero(u_foreign)
    u_cid[stand_in] = foreign_concept_ids(uniq[k] for k in stand_in.tolist())
    ids, count = np.unique(u_cid[stand_in], return_counts=True)
    if (count > 1).any():
        clash = u_cid[stand_in] == ids[count > 1][0]
        pair = [uniq[k] for k in stand_in[clash].tolist()]
        raise ValueError(f"read_meds: foreign codes {pair} share the stand-in concept id")

    sid = table["subject_id"].to_numpy()
    t_us = table["time"].to_numpy(zero_copy_only=False).astype("datetime64[us]")
    far = ~np.isnat(t_us) & (np.abs(t_us.view(np.int64)) > np.iinfo(np.int64).max // 1000)
    if far.any():  # the event table is in nanoseconds: 1677-09-21 .. 2262-04-11
        i = int(np.argmax(far))
        raise ValueError(
            f"read_meds({root}): {int(far.sum())} times outside the datetime64[ns] range, "
            f"e.g. subject {int(sid[i])}, code {uniq[inv[i]]!r}, time {t_us[i]}"
        )
    t = t_us.astype("datetime64[ns]")
    t_key = t.view(np.int64)  # NaT is the smallest int64: static rows sort first
    static = np.isnat(t)
    birth = u_birth[inv] & ~static
    is_event = ~static & ~birth
    subjects = np.unique(sid)

    births = pd.Series(t[birth]).groupby(sid[birth]).min()
    g_rows = np.flatnonzero(u_gender[inv])
    g_rows = g_rows[np.lexsort((t_key[g_rows], sid[g_rows]))]
    g_first = g_rows[np.r_[True, sid[g_rows][1:] != sid[g_rows][:-1]]] if len(g_rows) else g_rows
    u_gender_id = np.array([_gender_concept(c) if c.startswith(_GENDER) else 0 for c in uniq])
    genders = pd.Series(u_gender_id[inv[g_first]], index=sid[g_first], dtype=np.int64)
    persons = pd.DataFrame(
        {
            "person_id": subjects,
            "birth_datetime": births.reindex(subjects).astype("datetime64[ns]").to_numpy(),
            "gender_concept_id": genders.reindex(subjects).fillna(0).astype(np.int64).to_numpy(),
        }
    )

    rows = np.flatnonzero(is_event)
    rows = rows[np.lexsort((t_key[rows], sid[rows]))]  # stable: equal times keep file order
    code_of = inv[rows]
    foreign = u_foreign[code_of]
    ext = table.select([c for c in _EXT_INT_COLUMNS if c in table.column_names]).take(rows)
    ext = ext.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)

    def ext_ids(col: str, fallback: np.ndarray, *, foreign_too: bool = True) -> np.ndarray:
        if col not in ext.columns:
            return fallback
        v = ext[col]
        use = v.notna().to_numpy() & (foreign_too | ~foreign)
        return np.where(use, v.fillna(0).to_numpy(np.int64), fallback)

    zeros = np.zeros(len(rows), dtype=np.int64)
    out = pd.DataFrame(
        {
            "person_id": sid[rows].astype(np.int64),
            "time": t[rows],
            # a foreign code keeps its own stand-in id, whatever a concept_id column says
            "concept_id": ext_ids("concept_id", u_cid[code_of], foreign_too=False),
            "source_concept_id": ext_ids("source_concept_id", zeros),
            "domain": u_dom[code_of],
            "value_as_number": (
                table["numeric_value"].take(rows).to_numpy(zero_copy_only=False)
                if "numeric_value" in table.column_names
                else np.full(len(rows), np.nan)
            ),
            "unit_concept_id": ext_ids("unit_concept_id", zeros),
            "visit_occurrence_id": (
                ext["visit_occurrence_id"].array
                if "visit_occurrence_id" in ext.columns
                else pd.array([pd.NA] * len(rows), dtype="Int64")
            ),
        }
    )
    if foreign.any():
        out["code"] = np.asarray(uniq, dtype=object)[code_of]
    if "text_value" in table.column_names:
        text = table["text_value"].take(rows)
        if text.null_count < len(rows):
            out["text_value"] = text.to_numpy(zero_copy_only=False)
    out = out.astype({k: v for k, v in EVENT_COLUMNS.items() if k != "domain"})
    check_events(out, "read_meds events")
    report = {
        "rows": int(table.num_rows),
        "events": len(out),
        "static_rows": int(static.sum()),
        "codes": len(uniq),
        "foreign_codes": len(np.unique(code_of[foreign])),
        "foreign_rows": int(foreign.sum()),
        "unknown_columns": len(unknown),
    }
    if zoned:
        report["zoned_times"] = int(zoned)
    if non_finite:
        report["non_finite_values"] = int(non_finite)

    split_path = root / meds.subject_splits_filepath
    splits = pd.DataFrame(
        {"subject_id": pd.Series(dtype=np.int64), "split": pd.Series(dtype=object)}
    )
    if split_path.exists():
        try:
            splits = pq.read_table(split_path).to_pandas()
        except (pa.ArrowException, OSError) as err:
            raise ValueError(
                f"{split_path}: cannot be read as parquet ({type(err).__name__}: {err}); "
                f"a truncated or damaged file? Fix or remove it"
            ) from err
        lacking = sorted({"subject_id", "split"} - set(splits.columns))
        if lacking:
            raise ValueError(
                f"{split_path}: missing column(s) {lacking}; MEDS subject splits need "
                f"subject_id and split, found {list(splits.columns)}"
            )
    if len(splits):
        n_splits = splits.drop_duplicates().groupby("subject_id")["split"].nunique()
        if (n_splits > 1).any():
            s = n_splits.index[(n_splits > 1).to_numpy()][0]
            raise ValueError(
                f"{split_path}: subject {s} is in {int((n_splits > 1).sum())} split(s) "
                f"twice, e.g. {sorted(splits.loc[splits['subject_id'] == s, 'split'])}; each "
                f"subject belongs to one split (else it leaks between train and test). "
                f"Fix: keep one row per subject"
            )
    return out, persons, splits, report


def read_meds_static(root: str | Path) -> pd.DataFrame:
    """The static (null-time) rows of a MEDS dataset, wherever they sit in its shards.

    The event table of :func:`read_meds` has no null times, so these rows travel apart: pass
    the frame to ``write_meds(..., static=...)`` to write them back unchanged.

    Returns:
        ``subject_id`` (int64), ``code`` (str), ``numeric_value`` (float64, NaN when none) and
        ``text_value`` (object, None when none), sorted by ``subject_id`` (file order within
        a subject).

    Raises:
        ValueError: as :func:`read_meds`.
    """
    table, _ = _load_shards(Path(root), static_only=True)
    n = table.num_rows
    sid = table["subject_id"].to_numpy()
    order = np.argsort(sid, kind="stable")
    return pd.DataFrame(
        {
            "subject_id": sid[order].astype(np.int64),
            "code": table["code"].to_numpy(zero_copy_only=False).astype(object)[order],
            "numeric_value": (
                table["numeric_value"].to_numpy(zero_copy_only=False)[order]
                if "numeric_value" in table.column_names
                else np.full(n, np.nan)
            ),
            "text_value": (
                table["text_value"].to_numpy(zero_copy_only=False).astype(object)[order]
                if "text_value" in table.column_names
                else np.full(n, None, dtype=object)
            ),
        }
    )


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
    """Read survival labels: a file of :func:`write_survival_labels`, or MEDS labels.

    A plain MEDS label table -- ``subject_id``, ``prediction_time``, ``boolean_value``, and
    optionally ``integer_value``, ``float_value``, ``categorical_value``, as ACES writes it --
    gives ``event`` from ``boolean_value`` and NaT/NaN for the survival columns
    (``event_time``, ``censor_time``, ``duration``), which such files do not carry; the other
    MEDS label columns are not used.

    Args:
        path: a ``.parquet`` file, or a folder of them (label shards, as ACES or
            ``meds-testing-helpers``' ``task_labels/<task>/`` write them; read in name order).

    Raises:
        ValueError: no parquet file, a missing label column (named, with what was found), or
            nulls in ``subject_id``, ``prediction_time`` or ``boolean_value`` (naming the
            column, the count and an example row).
    """
    path = Path(path)
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"{path}: no .parquet label files")
    t = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
    missing = [c for c in LABEL_CORE_COLUMNS if c not in t.columns]
    if missing:
        raise ValueError(
            f"{path}: missing label column(s) {missing}; survival labels need the MEDS label "
            f"columns {list(LABEL_CORE_COLUMNS)} (boolean_value = the event was observed); "
            f"found {list(t.columns)}"
        )
    for col in LABEL_CORE_COLUMNS:
        nulls = t[col].isna().to_numpy()
        if nulls.any():
            i = int(np.argmax(nulls))
            raise ValueError(
                f"{path}: column {col!r} is null in {int(nulls.sum())} rows, e.g. row {i}: "
                f"{t.iloc[i][list(LABEL_CORE_COLUMNS)].to_dict()}"
            )
    n = len(t)
    nat = pd.Series(pd.NaT, index=t.index, dtype="datetime64[ns]")
    return pd.DataFrame(
        {
            "subject_id": t["subject_id"].to_numpy(np.int64),
            "prediction_time": t["prediction_time"].astype("datetime64[ns]").to_numpy(),
            "event_time": t.get("event_time", nat).astype("datetime64[ns]").to_numpy(),
            "censor_time": t.get("censor_time", nat).astype("datetime64[ns]").to_numpy(),
            "event": t["boolean_value"].to_numpy().astype(bool).astype(np.int64),
            "duration": t["duration"].to_numpy(np.float64)
            if "duration" in t
            else np.full(n, np.nan),
        }
    )
