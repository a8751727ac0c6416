"""The user's data, whatever its form: an OMOP CDM folder (CSV or parquet), a DuckDB file, or a
MEDS folder, read into the event table, the person table and the observation periods.

OMOP goes through :func:`ehrseq.data.omop.load_omop` (its :class:`LoadReport` is kept); MEDS
through :func:`ehrseq.data.meds.read_meds`. MEDS has no observation periods: each person is
taken as observed from their first to their last event (said in the report's notes), and it
has no concept hierarchy, so ``include_descendants`` is refused there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ehrseq.cli.cohort import CliError

__all__ = ["Input", "is_meds", "fingerprint", "read_input", "validate_input", "descendants_of"]


def is_meds(path: Path) -> bool:
    """A MEDS dataset: a folder with ``data/`` shards and usually ``metadata/``."""
    return path.is_dir() and (path / "data").is_dir() and any((path / "data").rglob("*.parquet"))


def fingerprint(path: str | Path) -> str:
    """A hash of every file's name, size and modification time under ``path`` (the cache key
    of the data: a changed file invalidates what was built from it, nothing is read)."""
    path = Path(path).resolve()
    h = hashlib.sha256(str(path).encode())
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        st = p.stat()
        h.update(
            f"{p.relative_to(path) if path.is_dir() else p.name}|{st.st_size}|{st.st_mtime_ns}".encode()
        )
    return h.hexdigest()[:16]


def _exists(path: Path) -> None:
    if not path.exists():
        raise CliError(
            f"input {path} does not exist (expected an OMOP folder, DuckDB file or MEDS folder)"
        )


@dataclass
class Input:
    """The data of one input, in the event contract.

    Attributes:
        kind: ``"omop"`` or ``"meds"``.
        events, person, observation_period: as :class:`ehrseq.data.omop.OmopData` holds them.
        report: the load report's long table (``table, column, reason, action, rows``).
        summary: the per-table totals (OMOP) or the MEDS read counts.
        notes: sentences about what the reader assumed or could not check.
    """

    kind: str
    events: pd.DataFrame
    person: pd.DataFrame
    observation_period: pd.DataFrame
    report: pd.DataFrame
    summary: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def read_input(path: str | Path, mode: str = "lenient") -> Input:
    """Read ``path`` (OMOP folder or DuckDB file, or MEDS folder).

    Raises:
        CliError: a missing path, an unusable person table, or (strict) a broken rule.
    """
    path = Path(path).expanduser()
    _exists(path)
    if is_meds(path):
        return _read_meds(path)
    from ehrseq.data.omop import load_omop

    data = load_omop(path, mode=mode)
    report = data.report
    data.cdm.close()
    return Input(
        "omop",
        data.events,
        data.person,
        data.observation_period,
        report.to_frame(),
        report.summary().reset_index(),
        list(report.notes),
    )


def _read_meds(path: Path) -> Input:
    from ehrseq.data.meds import read_meds

    events, persons, _, counts = read_meds(path)
    span = events.groupby("person_id")["time"].agg(["min", "max"])
    periods = pd.DataFrame(
        {
            "person_id": span.index.to_numpy(),
            "observation_period_start_date": span["min"].dt.normalize().to_numpy(),
            "observation_period_end_date": span["max"].dt.normalize().to_numpy(),
        }
    )
    note = "MEDS has no observation periods: each person is observed from first to last event"
    summary = pd.DataFrame([counts])
    return Input(
        "meds",
        events,
        persons,
        periods,
        pd.DataFrame(),
        summary,
        [note],
    )


def validate_input(
    path: str | Path, mode: str = "lenient", allow: Iterable[str] = ()
) -> tuple[str, str]:
    """Validate without building the event table: ``(kind, report text)``.

    Raises:
        OmopValidationError: in strict mode, on the first broken rule.
        CliError: a missing path or a MEDS folder that is not MEDS.
    """
    path = Path(path).expanduser()
    _exists(path)
    if is_meds(path):
        from ehrseq.data.meds import read_meds, validate_meds

        try:
            validate_meds(path)
        except ValueError as err:
            if mode == "strict":
                raise
            return "meds", f"MEDS dataset {path}: does not follow the MEDS schema: {err}"
        _, _, _, counts = read_meds(path)
        lines = [f"MEDS dataset {path}: valid"] + [f"  {k}: {v:,}" for k, v in counts.items()]
        return "meds", "\n".join(lines)
    from ehrseq.data.omop import validate_omop

    return "omop", repr(validate_omop(path, mode=mode, allow=allow))


def descendants_of(path: str | Path) -> Callable[[list[int]], list[int]] | None:
    """A function ids -> ids with all their descendants, from the CDM's vocabulary, or
    ``None`` for MEDS (no vocabulary)."""
    path = Path(path).expanduser()
    if is_meds(path):
        return None
    from ehrseq.data.omop import open_cdm

    def expand(ids: list[int]) -> list[int]:
        with open_cdm(path) as cdm:
            if not (cdm.has("concept_ancestor") or cdm.has("concept_relationship")):
                raise CliError(
                    f"{path}: include_descendants needs concept_ancestor or concept_relationship"
                )
            found = cdm.descendants(ids)
        return sorted(set(found["descendant_concept_id"].tolist()) | set(ids))

    return expand
