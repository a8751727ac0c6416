r"""A new-user survival cohort from a small TOML file: index and outcome concept sets, washout,
horizon, prior-outcome exclusion; each step counted in an attrition table.

The cohort file (every key but the two concept sets has a default)::

    name = "nsaid_heart_failure"
    washout_days = 365            # continuous observation required before the index date
    horizon_days = 1826           # follow-up after the index date (or horizon_years)
    exclude_prior_outcome = true  # drop people with the outcome before the index date
    prior_outcome_days = 0        # look-back of that exclusion; 0 = all history

    [index]                       # the first exposure to any of these is the index date
    concepts = [2000003101, 2000003103]
    include_descendants = true    # through concept_ancestor (or the "Is a" closure)

    [outcome]
    atlas = "gi_bleed.json"       # a concept set exported from OHDSI ATLAS (path relative
                                  # to the TOML file), instead of or beside `concepts`

A concept set is ``concepts`` (ids) and ``exclude`` (ids), each expanded to its descendants
when ``include_descendants`` is true; an ATLAS concept-set JSON carries these per item
(``includeDescendants``, ``isExcluded``). ``codes`` names MEDS codes that are not OMOP
concepts (``"DIAGNOSIS//ICD//9//4280"``), through
:func:`ehrseq.data.meds.foreign_concept_ids`.

The cohort, in the order the attrition table counts it:

1. people in the data;
2. with an index event: the **first** event of the index concept set, ever (a new user);
3. whose index date lies in an observation period;
4. with at least ``washout_days`` of that period before the index date;
5. without the outcome before the index date (within ``prior_outcome_days``, 0 = ever)
   when ``exclude_prior_outcome``; otherwise earlier outcomes are ignored and the event is
   the first outcome on or after the index date;
6. alive at the index date, with follow-up after it (:func:`ehrseq.data.labels.survival_labels`).

The labels follow :mod:`ehrseq.data.labels`: the prediction time is the index date, and the
event is the first outcome within the horizon, censored at the end of observation or death.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ehrseq.data.labels import Outcome, survival_labels

__all__ = ["ConceptSet", "CohortSpec", "CohortResult", "CliError", "build_cohort"]

_DAY = pd.Timedelta(days=1)


class CliError(Exception):
    """A problem with the user's input, told in one line (no traceback)."""


@dataclass(frozen=True)
class ConceptSet:
    """Concept ids to include and exclude, before descendants are added.

    Attributes:
        include: ``(concept_id, include_descendants)`` pairs.
        exclude: ``(concept_id, include_descendants)`` pairs removed after expansion.
        codes: MEDS codes that are not OMOP concepts (matched through their stand-in ids).
    """

    include: tuple[tuple[int, bool], ...] = ()
    exclude: tuple[tuple[int, bool], ...] = ()
    codes: tuple[str, ...] = ()

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str, base: Path) -> ConceptSet:
        """Read a ``[index]``/``[outcome]`` TOML table (``atlas`` paths relative to ``base``)."""
        known = {"concepts", "exclude", "include_descendants", "atlas", "codes"}
        odd = sorted(set(table) - known)
        if odd:
            raise CliError(f"{where}: unknown key(s) {odd}; expected some of {sorted(known)}")
        desc = bool(table.get("include_descendants", False))
        include = [(_concept_id(c, where), desc) for c in table.get("concepts", [])]
        exclude = [(_concept_id(c, where), desc) for c in table.get("exclude", [])]
        atlas = table.get("atlas")
        for path in [atlas] if isinstance(atlas, str) else list(atlas or []):
            more = cls.from_atlas(base / path)
            include += more.include
            exclude += more.exclude
        codes = tuple(str(c) for c in table.get("codes", []))
        if not include and not codes:
            raise CliError(f"{where}: no concepts (give `concepts = [...]`, `atlas` or `codes`)")
        return cls(tuple(include), tuple(exclude), codes)

    @classmethod
    def from_atlas(cls, path: str | Path) -> ConceptSet:
        """Read a concept set exported from OHDSI ATLAS (``{"items": [{"concept":
        {"CONCEPT_ID": ...}, "includeDescendants": ..., "isExcluded": ...}, ...]}``)."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise CliError(f"ATLAS concept set {path} not found") from None
        except json.JSONDecodeError as err:
            raise CliError(f"ATLAS concept set {path} is not JSON: {err}") from None
        items = doc.get("items") if isinstance(doc, dict) else None
        if items is None and isinstance(doc, dict) and isinstance(doc.get("expression"), dict):
            items = doc["expression"].get("items")  # the whole concept-set export
        if not isinstance(items, list):
            raise CliError(f"ATLAS concept set {path}: no `items` list")
        include, exclude = [], []
        for i, item in enumerate(items):
            concept = item.get("concept", {}) if isinstance(item, dict) else {}
            cid = concept.get("CONCEPT_ID", concept.get("conceptId"))
            if cid is None:
                raise CliError(f"ATLAS concept set {path}: item {i} has no concept.CONCEPT_ID")
            pair = (_concept_id(cid, f"{path} item {i}"), bool(item.get("includeDescendants")))
            (exclude if item.get("isExcluded") else include).append(pair)
        if not include:
            raise CliError(f"ATLAS concept set {path}: no included concept")
        return cls(tuple(include), tuple(exclude))

    def resolve(self, descendants: Callable[[list[int]], Iterable[int]] | None) -> list[int]:
        """The concept ids, descendants added where asked, exclusions removed, sorted.

        Args:
            descendants: ids -> the ids and all their descendants; ``None`` when the data has
                no vocabulary (then descendants cannot be added, and asking for them fails).
        """

        def expand(pairs: tuple[tuple[int, bool], ...]) -> set[int]:
            plain = {c for c, d in pairs if not d}
            deep = [c for c, d in pairs if d]
            if deep and descendants is None:
                raise CliError(
                    "include_descendants needs a vocabulary (concept_ancestor or "
                    "concept_relationship), which this input does not have"
                )
            return plain | set(descendants(deep) if deep else ()) | set(deep)

        ids = expand(self.include) - expand(self.exclude)
        if self.codes:
            from ehrseq.data.meds import foreign_concept_ids

            ids |= set(foreign_concept_ids(self.codes).tolist())
        return sorted(int(c) for c in ids)


def _concept_id(value: Any, where: str) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise CliError(f"{where}: concept id {value!r} is not an integer") from None
    if out != value and str(out) != str(value).strip():
        raise CliError(f"{where}: concept id {value!r} is not an integer")
    return out


@dataclass(frozen=True)
class CohortSpec:
    """The cohort of a TOML file (see the module docstring for each field)."""

    index: ConceptSet
    outcome: ConceptSet
    name: str = "cohort"
    washout_days: float = 365.0
    horizon_days: float = 5 * 365.25
    exclude_prior_outcome: bool = True
    prior_outcome_days: float = 0.0
    source: str = ""

    @classmethod
    def from_toml(cls, path: str | Path) -> CohortSpec:
        """Read a cohort file; every problem is a :class:`CliError` naming the key."""
        path = Path(path)
        try:
            doc = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise CliError(f"cohort file {path} not found") from None
        except tomllib.TOMLDecodeError as err:
            raise CliError(f"cohort file {path} is not valid TOML: {err}") from None
        known = {
            "name",
            "washout_days",
            "horizon_days",
            "horizon_years",
            "exclude_prior_outcome",
            "prior_outcome_days",
            "index",
            "outcome",
        }
        odd = sorted(set(doc) - known)
        if odd:
            raise CliError(f"{path}: unknown key(s) {odd}; expected some of {sorted(known)}")
        for part in ("index", "outcome"):
            if not isinstance(doc.get(part), dict):
                raise CliError(f"{path}: needs an [{part}] table with `concepts` or `atlas`")
        if "horizon_days" in doc and "horizon_years" in doc:
            raise CliError(f"{path}: give horizon_days or horizon_years, not both")
        horizon = float(doc.get("horizon_days", float(doc.get("horizon_years", 5)) * 365.25))
        spec = cls(
            index=ConceptSet.from_table(doc["index"], f"{path} [index]", path.parent),
            outcome=ConceptSet.from_table(doc["outcome"], f"{path} [outcome]", path.parent),
            name=str(doc.get("name", path.stem)),
            washout_days=float(doc.get("washout_days", 365)),
            horizon_days=horizon,
            exclude_prior_outcome=bool(doc.get("exclude_prior_outcome", True)),
            prior_outcome_days=float(doc.get("prior_outcome_days", 0)),
            source=str(path),
        )
        if spec.washout_days < 0 or spec.prior_outcome_days < 0:
            raise CliError(f"{path}: washout_days and prior_outcome_days must be >= 0")
        if spec.horizon_days <= 0:
            raise CliError(f"{path}: the horizon must be > 0 days")
        return spec

    def key(self) -> str:
        """A hash of everything that decides the cohort (not the file's path)."""
        blob = dataclasses.asdict(self)
        blob.pop("source")
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class CohortResult:
    """What :func:`build_cohort` returns.

    Attributes:
        labels: the survival label table of :mod:`ehrseq.data.labels`, one row per person.
        attrition: ``step``, ``persons``, ``removed`` (one row per inclusion step).
        index_ids, outcome_ids: the concept ids after descendants and exclusions.
        names: concept id -> name, where the data's CONCEPT table knows it.
    """

    labels: pd.DataFrame
    attrition: pd.DataFrame
    index_ids: list[int]
    outcome_ids: list[int]
    names: dict[int, str] = field(default_factory=dict)


def _first_events(events: pd.DataFrame, ids: list[int]) -> pd.Series:
    hit = np.isin(events["concept_id"].to_numpy(np.int64), np.asarray(ids, dtype=np.int64))
    t = pd.Series(events["time"].to_numpy()[hit], index=events["person_id"].to_numpy()[hit])
    return t.groupby(level=0).min().astype("datetime64[ns]")


def build_cohort(
    spec: CohortSpec,
    events: pd.DataFrame,
    person: pd.DataFrame,
    observation_period: pd.DataFrame,
    descendants: Callable[[list[int]], Iterable[int]] | None,
) -> CohortResult:
    """Select the new users, apply washout and prior-outcome exclusion, label the outcome.

    Args:
        spec: the cohort.
        events, person, observation_period: as :func:`ehrseq.data.omop.load_omop` gives them.
        descendants: ids -> ids with their descendants (``None``: no vocabulary).

    Raises:
        CliError: an empty cohort at any step, or an outcome never observed in it.
    """
    index_ids = spec.index.resolve(descendants)
    outcome_ids = spec.outcome.resolve(descendants)
    steps = [("persons in the data", len(person))]
    first = _first_events(events, index_ids)
    first = first[first.index.isin(person["person_id"])]
    steps.append(("with an index event (first exposure)", len(first)))
    if first.empty:
        raise CliError(
            f"empty cohort: no person has an event of the index concept set "
            f"({len(index_ids)} concepts, e.g. {index_ids[:5]})"
        )

    obs = pd.DataFrame(
        {
            "person_id": observation_period["person_id"].to_numpy(np.int64),
            "start": pd.to_datetime(observation_period["observation_period_start_date"]),
            "end": pd.to_datetime(observation_period["observation_period_end_date"]) + _DAY,
        }
    )
    m = pd.DataFrame({"person_id": first.index.to_numpy(np.int64), "t": first.to_numpy()})
    m = m.merge(obs, on="person_id", how="inner")
    m = m[(m["start"] <= m["t"]) & (m["t"] < m["end"])]
    m = m.sort_values(["person_id", "start"]).drop_duplicates("person_id")
    steps.append(("index date inside an observation period", len(m)))
    m = m[(m["t"] - m["start"]) >= pd.Timedelta(days=spec.washout_days)]
    steps.append((f"at least {spec.washout_days:g} days of observation before index", len(m)))
    index = m[["person_id", "t"]].rename(columns={"t": "prediction_time"})

    # the outcome: rows before the index date are either an exclusion or ignored
    is_outcome = np.isin(
        events["concept_id"].to_numpy(np.int64), np.asarray(outcome_ids, dtype=np.int64)
    )
    pt = pd.Series(index["prediction_time"].to_numpy(), index=index["person_id"].to_numpy())
    ev_pt = pt.reindex(events["person_id"].to_numpy()).to_numpy()
    before = is_outcome & (events["time"].to_numpy() < ev_pt)  # NaT compares False
    if spec.exclude_prior_outcome:
        window = before
        if spec.prior_outcome_days > 0:
            since = ev_pt - np.timedelta64(int(spec.prior_outcome_days * 86400), "s")
            window = before & (events["time"].to_numpy() >= since)
        prior = np.unique(events["person_id"].to_numpy()[window])
        index = index[~index["person_id"].isin(prior)]
        look = f"in the {spec.prior_outcome_days:g} days" if spec.prior_outcome_days else "ever"
        steps.append((f"no outcome before index ({look})", len(index)))
    labelled_events = events.loc[~before]  # outcomes before index never count as the event

    labels = survival_labels(
        labelled_events,
        person,
        observation_period,
        Outcome.of_concepts(spec.name, outcome_ids),
        index,
        horizon_days=spec.horizon_days,
    )
    n = len(index) - labels.dropped["death_before_index"]
    steps.append(("alive at index", n))
    steps.append(("with follow-up after index", len(labels.table)))
    attrition = pd.DataFrame(steps, columns=["step", "persons"])
    attrition["removed"] = (-attrition["persons"].diff()).fillna(0).astype(int)
    table = labels.table
    if table.empty:
        raise CliError("empty cohort: nobody is left after the inclusion steps (see attrition)")
    if int(table["event"].sum()) == 0:
        raise CliError(
            f"the outcome is never observed within {spec.horizon_days:g} days of index in "
            f"{len(table)} persons ({len(outcome_ids)} outcome concepts, e.g. {outcome_ids[:5]})"
        )
    return CohortResult(table, attrition, index_ids, outcome_ids)
