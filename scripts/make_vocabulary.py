"""Write the synthetic cohort's vocabulary (``data/vocabulary/``) from the curated spec files.

    .venv/bin/python scripts/make_vocabulary.py          # rewrite the four files
    .venv/bin/python scripts/make_vocabulary.py --check  # exit 1 if a committed file differs

The spec is the source of truth: TOML files under ``data/vocabulary/spec/``, read and checked
here. The CSV files and ``README.md`` this script writes are committed, and
``tests/test_vocabulary.py`` checks that it reproduces them byte for byte.

    spec/standard.toml        [[concepts]]  the six standard OMOP concepts kept at their OMOP ids
    spec/units.toml           [[units]]     UCUM units of the measurements
    spec/groups/NN_<group>.toml             one file per latent group of the generator

A group file holds, in this order, an optional ``[parent]`` (SNOMED CT grouping concept),
``[[conditions]]`` (SNOMED CT; optional ``parent`` code and ``finding = true``), each with its
``[[conditions.icd]]`` (ICD-10-CM source codes), ``[[drugs]]`` (RxNorm ingredient) with its
``[drugs.atc]`` (ATC 4th-level class) and ``[[drugs.clinical]]`` (RxNorm clinical drugs),
``[[labs]]`` (LOINC, with ``concept_class``, ``unit``, ``mean``, ``sd``, ``min_value``,
``max_value``, ``decimals``), ``[[cpt]]`` (CPT-4) and ``[[pcs]]`` (ICD-10-PCS). Every record
carries ``code``, ``name`` and ``description``. A code shared by two records (one ATC class
for three statins) is written out in full in each, spelled the same way.

Every code is a real code of its code system (SNOMED CT, ICD-10-CM, RxNorm, ATC, LOINC,
CPT-4, ICD-10-PCS, UCUM), kept only where the code and its name could be confirmed; the
``description`` of each concept is the book's own one-sentence wording. Concept ids are local
(OMOP reserves ids above 2,000,000,000 for local concepts), allocated in one block per
vocabulary in the order of the group files (``NN``) and of the records within each, except the
six standard OMOP ids the generator uses directly. Which groups are chronic, acute or background
is the generator's to say (``ehrseq.data.synthetic``); the spec must cover exactly those groups.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ehrseq.data.synthetic import ACUTE, BACKGROUND, CHRONIC

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "data" / "vocabulary"
SPEC_DIR = OUT / "spec"

VALID_START, VALID_END = "1970-01-01", "2099-12-31"

CONCEPT_COLUMNS = [
    "concept_id",
    "concept_name",
    "domain_id",
    "vocabulary_id",
    "concept_class_id",
    "standard_concept",
    "concept_code",
    "valid_start_date",
    "valid_end_date",
    "invalid_reason",
    "description",
]
RELATIONSHIP_COLUMNS = [
    "concept_id_1",
    "concept_id_2",
    "relationship_id",
    "valid_start_date",
    "valid_end_date",
    "invalid_reason",
]
ANNOTATION_COLUMNS = [
    "concept_id",
    "group",
    "role",
    "unit_concept_id",
    "ref_mean",
    "ref_sd",
    "min_value",
    "max_value",
    "decimals",
]

# First id of each vocabulary's block (the block's concepts get base + 1, base + 2, ...).
ID_BLOCKS = {
    "SNOMED": 2_000_001_000,
    "ICD10CM": 2_000_002_000,
    "RxNorm": 2_000_003_000,
    "ATC": 2_000_004_000,
    "LOINC": 2_000_005_000,
    "CPT4": 2_000_006_000,
    "ICD10PCS": 2_000_007_000,
    "UCUM": 2_000_008_000,
}

# The generator's groups (see README.md) and the one it does not model: routine care.
ROUTINE = "routine"
GROUPS = frozenset((*CHRONIC, *ACUTE, *BACKGROUND, ROUTINE))


# --------------------------------------------------------------------------------------------
# Spec records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """One code: its code, name, and a one-sentence description."""

    code: str
    name: str
    description: str
    where: str = field(default="", compare=False, repr=False)  # spec file and record, for errors


@dataclass(frozen=True)
class Condition:
    """A standard SNOMED diagnosis, its ICD-10-CM source codes, and its ``Is a`` parent."""

    snomed: Term
    icd: tuple[Term, ...]
    parent: str | None = None  # SNOMED code; None = the group's parent (if any)
    finding: bool = False  # concept class Clinical Finding instead of Disorder


@dataclass(frozen=True)
class Drug:
    """An RxNorm ingredient, its ATC 4th-level class, and its RxNorm clinical drugs."""

    ingredient: Term
    atc: Term
    clinical: tuple[Term, ...]


@dataclass(frozen=True)
class Lab:
    """A LOINC measurement with its unit and reference distribution in a healthy adult."""

    term: Term
    concept_class: str  # Lab Test, Clinical Observation or Survey
    unit: str  # UCUM code, one of the units
    mean: float
    sd: float
    min_value: float
    max_value: float
    decimals: int


@dataclass(frozen=True)
class Group:
    """Everything one latent group contributes to the vocabulary."""

    name: str
    parent: Term | None = None  # SNOMED grouping concept, never recorded itself
    conditions: tuple[Condition, ...] = ()
    drugs: tuple[Drug, ...] = ()
    labs: tuple[Lab, ...] = ()
    cpt: tuple[Term, ...] = ()
    pcs: tuple[Term, ...] = ()


@dataclass(frozen=True)
class Standard:
    """A standard OMOP concept that keeps its OMOP id."""

    concept_id: int
    term: Term
    domain: str
    vocabulary: str
    concept_class: str


@dataclass(frozen=True)
class Spec:
    """The whole spec: standard concepts, units, then the groups in id-allocation order."""

    standard: tuple[Standard, ...]
    units: tuple[Term, ...]
    groups: tuple[Group, ...]


# --------------------------------------------------------------------------------------------
# Read and check the spec files
# --------------------------------------------------------------------------------------------


class SpecError(ValueError):
    """A spec file that does not fit the format; the message names the file, record and field."""


# The fields of each kind of record, field -> kind (float: any number). Every field is
# required except those of GROUP and CONDITION_OPTIONAL.
TERM = {"code": str, "name": str, "description": str}
STANDARD = {**TERM, "concept_id": int, "domain": str, "vocabulary": str, "concept_class": str}
GROUP = {"parent": dict, "conditions": list, "drugs": list, "labs": list, "cpt": list, "pcs": list}
CONDITION = {**TERM, "icd": list}
CONDITION_OPTIONAL = {"parent": str, "finding": bool}
DRUG = {**TERM, "atc": dict, "clinical": list}
LAB = {
    **TERM,
    "concept_class": str,
    "unit": str,
    "mean": float,
    "sd": float,
    "min_value": float,
    "max_value": float,
    "decimals": int,
}
KIND = {
    str: "a string",
    float: "a number",
    int: "an integer",
    bool: "true or false",
    dict: "a table",
    list: "an array of tables",
}
GROUP_FILE = re.compile(r"(\d{2})_([a-z0-9_]+)\.toml")


def _fits(value: object, kind: type) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _fields(table: object, where: str, required: dict, optional: dict | None = None) -> dict:
    """The keys of one TOML table, checked: none unknown, none missing, each of its kind."""
    optional = optional or {}
    if not isinstance(table, dict):
        raise SpecError(f"{where}: expected a table, got {table!r}")
    allowed = {**required, **optional}
    for key in table:
        if key not in allowed:
            raise SpecError(f"{where}: unknown field {key!r} (allowed: {', '.join(allowed)})")
    for key in required:
        if key not in table:
            raise SpecError(f"{where}: missing field {key!r}")
    for key, value in table.items():
        kind = allowed[key]
        if not _fits(value, kind):
            raise SpecError(f"{where}: field {key!r} must be {KIND[kind]}, got {value!r}")
        if kind is str and (not value or value != value.strip()):
            raise SpecError(f"{where}: field {key!r} is empty or has surrounding spaces")
    return table


def _records(table: dict, key: str, where: str) -> list[tuple[dict, str]]:
    """Each table of the array ``key`` with its place, e.g. ``drugs #2 (code '17767')``."""
    out = []
    for i, record in enumerate(table.get(key, []), 1):
        code = record.get("code") if isinstance(record, dict) else None
        label = f"{key} #{i}" + (f" (code {code!r})" if isinstance(code, str) else "")
        out.append((record, f"{where}{label}"))
    return out


def _show(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{_show(path)}: not valid TOML: {err}") from None


class _Codes:
    """Every code read so far, per vocabulary: a code met twice must be spelled the same way."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], Term] = {}

    def term(self, vocab: str, record: dict, where: str) -> Term:
        term = Term(record["code"], record["name"], record["description"], where)
        old = self.seen.setdefault((vocab, term.code), term)
        for key in ("name", "description"):
            if getattr(old, key) != getattr(term, key):
                raise SpecError(
                    f"{where}: {vocab} code {term.code!r} is spelled two ways: field {key!r} is "
                    f"{getattr(term, key)!r} here but {getattr(old, key)!r} in {old.where}"
                )
        return term


def _read_group(path: Path, name: str, codes: _Codes, units: set[str]) -> Group:
    where = f"{_show(path)}: "
    data = _fields(_read_toml(path), _show(path), {}, GROUP)
    parent = None
    if "parent" in data:
        _fields(data["parent"], f"{where}parent", TERM)
        parent = codes.term("SNOMED", data["parent"], f"{where}parent")
    conditions = []
    for record, at in _records(data, "conditions", where):
        _fields(record, at, CONDITION, CONDITION_OPTIONAL)
        up = record.get("parent")
        if up is not None and ("SNOMED", up) not in codes.seen:
            raise SpecError(f"{at}: field 'parent' is {up!r}, not a SNOMED code read before it")
        snomed = codes.term("SNOMED", record, at)
        icd = []
        for src, src_at in _records(record, "icd", f"{at}, "):
            icd.append(codes.term("ICD10CM", _fields(src, src_at, TERM), src_at))
        if not icd:
            raise SpecError(f"{at}: field 'icd' is empty (at least one [[conditions.icd]])")
        conditions.append(Condition(snomed, tuple(icd), up, record.get("finding", False)))
    drugs = []
    for record, at in _records(data, "drugs", where):
        _fields(record, at, DRUG)
        atc = codes.term("ATC", _fields(record["atc"], f"{at}, atc", TERM), f"{at}, atc")
        ingredient = codes.term("RxNorm", record, at)
        clinical = [
            codes.term("RxNorm", _fields(c, c_at, TERM), c_at)
            for c, c_at in _records(record, "clinical", f"{at}, ")
        ]
        drugs.append(Drug(ingredient, atc, tuple(clinical)))
    labs = []
    for record, at in _records(data, "labs", where):
        _fields(record, at, LAB)
        if record["unit"] not in units:
            raise SpecError(f"{at}: field 'unit' is {record['unit']!r}, not a code in units.toml")
        values = [float(record[k]) for k in ("mean", "sd", "min_value", "max_value")]
        term = codes.term("LOINC", record, at)
        labs.append(Lab(term, record["concept_class"], record["unit"], *values, record["decimals"]))
    procs = {}
    for key, vocab in (("cpt", "CPT4"), ("pcs", "ICD10PCS")):
        procs[key] = tuple(
            codes.term(vocab, _fields(r, at, TERM), at) for r, at in _records(data, key, where)
        )
    return Group(name, parent, tuple(conditions), tuple(drugs), tuple(labs), **procs)


def load_spec(spec_dir: Path = SPEC_DIR) -> Spec:
    """Read and check every spec file under ``spec_dir``.

    Raises:
        SpecError: naming the file, the record and the field: a missing or unknown field, a
            value of the wrong kind, a code spelled two ways, an unknown unit or parent, or a
            set of group files that differs from the generator's groups.
    """
    codes = _Codes()
    path = spec_dir / "standard.toml"
    data = _fields(_read_toml(path), _show(path), {"concepts": list})
    standard = []
    for r, at in _records(data, "concepts", f"{_show(path)}: "):
        _fields(r, at, STANDARD)
        term = codes.term(r["vocabulary"], r, at)
        standard.append(
            Standard(r["concept_id"], term, r["domain"], r["vocabulary"], r["concept_class"])
        )
    path = spec_dir / "units.toml"
    data = _fields(_read_toml(path), _show(path), {"units": list})
    units = tuple(
        codes.term("UCUM", _fields(r, at, TERM), at)
        for r, at in _records(data, "units", f"{_show(path)}: ")
    )

    files: dict[str, Path] = {}
    numbers: dict[str, Path] = {}
    for path in sorted((spec_dir / "groups").iterdir()):
        match = GROUP_FILE.fullmatch(path.name)
        if match is None:
            raise SpecError(f"{_show(path)}: a group file is named NN_<group>.toml")
        number, name = match.groups()
        for seen, key in ((numbers, number), (files, name)):
            if key in seen:
                raise SpecError(f"{_show(path)}: {key!r} is also used by {_show(seen[key])}")
            seen[key] = path
        if name not in GROUPS:
            raise SpecError(
                f"{_show(path)}: {name!r} is not a group of ehrseq.data.synthetic "
                "(CHRONIC, ACUTE, BACKGROUND) nor 'routine'"
            )
    missing = sorted(GROUPS - set(files))
    if missing:
        raise SpecError(f"{_show(spec_dir / 'groups')}: no file for the groups {missing}")
    unit_codes = {u.code for u in units}
    groups = tuple(_read_group(path, name, codes, unit_codes) for name, path in files.items())
    return Spec(tuple(standard), units, groups)


# --------------------------------------------------------------------------------------------
# Build the tables
# --------------------------------------------------------------------------------------------


class _Builder:
    def __init__(self) -> None:
        self.concepts: list[dict] = []
        self.ann: list[dict] = []
        self.rel: set[tuple[int, int, str]] = set()
        self.by_code: dict[tuple[str, str], int] = {}
        self.next_id = dict(ID_BLOCKS)

    def concept(
        self,
        vocab: str,
        term: Term,
        domain: str,
        cls: str,
        standard: str,
        group: str | None,
        role: str | None,
        lab: Lab | None = None,
    ) -> int:
        key = (vocab, term.code)
        if key in self.by_code:  # a shared concept, e.g. one ATC class for three statins
            return self.by_code[key]  # load_spec checked that it is spelled the same way
        self.next_id[vocab] += 1
        cid = self.next_id[vocab]
        self.by_code[key] = cid
        self.concepts.append(
            {
                "concept_id": cid,
                "concept_name": term.name,
                "domain_id": domain,
                "vocabulary_id": vocab,
                "concept_class_id": cls,
                "standard_concept": standard,
                "concept_code": term.code,
                "valid_start_date": VALID_START,
                "valid_end_date": VALID_END,
                "invalid_reason": "",
                "description": term.description,
            }
        )
        if role is not None:
            row = {"concept_id": cid, "group": group, "role": role}
            if lab is not None:
                row |= {
                    "unit_concept_id": self.by_code[("UCUM", lab.unit)],
                    "ref_mean": lab.mean,
                    "ref_sd": lab.sd,
                    "min_value": lab.min_value,
                    "max_value": lab.max_value,
                    "decimals": lab.decimals,
                }
            self.ann.append(row)
        return cid

    def is_a(self, child: int, parent: int) -> None:
        self.rel.add((child, parent, "Is a"))
        self.rel.add((parent, child, "Subsumes"))

    def maps_to(self, source: int, target: int) -> None:
        self.rel.add((source, target, "Maps to"))
        self.rel.add((target, source, "Mapped from"))


def icd_class(code: str) -> str:
    """OMOP's ICD10CM concept class: characters without the dot, all leaves are billable."""
    return f"{len(code.replace('.', ''))}-char billing code"


def build(spec: Spec) -> dict[str, pd.DataFrame]:
    """The three vocabulary tables, built from the spec (:func:`load_spec`)."""
    b = _Builder()
    for s in spec.standard:
        b.concepts.append(
            {
                "concept_id": s.concept_id,
                "concept_name": s.term.name,
                "domain_id": s.domain,
                "vocabulary_id": s.vocabulary,
                "concept_class_id": s.concept_class,
                "standard_concept": "S",
                "concept_code": s.term.code,
                "valid_start_date": VALID_START,
                "valid_end_date": VALID_END,
                "invalid_reason": "",
                "description": s.term.description,
            }
        )
    for unit in spec.units:
        b.concept("UCUM", unit, "Unit", "Unit", "S", None, None)

    for g in spec.groups:
        parent_id = None
        if g.parent is not None:
            parent_id = b.concept(
                "SNOMED", g.parent, "Condition", "Disorder", "S", g.name, "condition_parent"
            )
        for cond in g.conditions:
            cls = "Clinical Finding" if cond.finding else "Disorder"
            cid = b.concept("SNOMED", cond.snomed, "Condition", cls, "S", g.name, "condition")
            if cond.parent is not None:
                b.is_a(cid, b.by_code[("SNOMED", cond.parent)])
            elif parent_id is not None:
                b.is_a(cid, parent_id)
            for src in cond.icd:
                sid = b.concept(
                    "ICD10CM", src, "Condition", icd_class(src.code), "", g.name, "condition_source"
                )
                b.maps_to(sid, cid)
        for drug in g.drugs:
            atc_id = b.concept("ATC", drug.atc, "Drug", "ATC 4th", "C", g.name, "drug_class")
            ing_id = b.concept(
                "RxNorm", drug.ingredient, "Drug", "Ingredient", "S", g.name, "drug_ingredient"
            )
            b.is_a(ing_id, atc_id)
            for clin in drug.clinical:
                clin_id = b.concept(
                    "RxNorm", clin, "Drug", "Clinical Drug", "S", g.name, "drug_clinical"
                )
                b.is_a(clin_id, ing_id)
        for lab in g.labs:
            b.concept(
                "LOINC", lab.term, "Measurement", lab.concept_class, "S", g.name, "measurement", lab
            )
        for proc in g.cpt:
            b.concept("CPT4", proc, "Procedure", "CPT4", "S", g.name, "procedure")
        for proc in g.pcs:
            b.concept("ICD10PCS", proc, "Procedure", "ICD10PCS", "S", g.name, "procedure_pcs")

    concept = pd.DataFrame(b.concepts, columns=CONCEPT_COLUMNS).sort_values("concept_id")
    for cid in concept.loc[concept["standard_concept"] == "S", "concept_id"]:
        b.maps_to(int(cid), int(cid))  # OMOP: every standard concept maps to itself
    order = {"Is a": 0, "Subsumes": 1, "Maps to": 2, "Mapped from": 3}
    rel = pd.DataFrame(
        sorted(b.rel, key=lambda r: (order[r[2]], r[0], r[1])),
        columns=["concept_id_1", "concept_id_2", "relationship_id"],
    )
    rel["valid_start_date"], rel["valid_end_date"], rel["invalid_reason"] = (
        VALID_START,
        VALID_END,
        "",
    )
    ann = pd.DataFrame(b.ann, columns=ANNOTATION_COLUMNS).sort_values("concept_id")
    for col in ("unit_concept_id", "decimals"):
        ann[col] = ann[col].astype("Int64")
    return {
        "concept": concept.reset_index(drop=True),
        "concept_relationship": rel[RELATIONSHIP_COLUMNS],
        "concept_annotation": ann.reset_index(drop=True),
    }


# --------------------------------------------------------------------------------------------
# README
# --------------------------------------------------------------------------------------------

README_HEAD = """\
# The synthetic cohort's vocabulary

This folder is the vocabulary of the synthetic OMOP cohort that every chapter of the book runs
on. It was written by hand for the book: a small, clinically sensible set of concepts from real
code systems, laid out as OMOP CDM 5.4 vocabulary tables. `ehrseq.data.concepts` reads it and
`ehrseq.data.synthetic` draws the cohort from it.

**Do not edit the CSV files or this README by hand.** They are written by
`scripts/make_vocabulary.py` from the curated spec in `spec/` (`standard.toml`, `units.toml`,
and one file per group in `groups/`; the script's docstring describes the format), and
`tests/test_vocabulary.py` checks that the script reproduces them byte for byte:

    .venv/bin/python scripts/make_vocabulary.py          # rewrite the files
    .venv/bin/python scripts/make_vocabulary.py --check  # fail if they differ

## Files

| file | content |
| --- | --- |
| `concept.csv` | OMOP CDM 5.4 `CONCEPT` columns, plus `description`: one plain-English sentence per concept, written for the book. |
| `concept_relationship.csv` | OMOP `CONCEPT_RELATIONSHIP`: `Is a` / `Subsumes`, `Maps to` / `Mapped from`. |
| `concept_annotation.csv` | The generator's ground truth, one row per clinical concept: its latent `group`, its `role`, and for measurements the unit and a healthy-adult reference distribution (`ref_mean`, `ref_sd`, `min_value`, `max_value`, `decimals`). A model never sees this file. |
| `loinc_parts.csv` | The six LOINC parts (component, property, time, system, scale, method) of the 54 LOINC concepts, for LOINC-aware lab vectors (`ehrseq.embeddings.loinc`). Written by hand, not by the script; its source and how it is checked: `loinc_parts.md`. |

## Reference distributions

`ref_mean` and `ref_sd` describe a healthy adult and were chosen by hand from usual adult
reference intervals, so that the mean plus or minus two standard deviations spans roughly the
interval; `min_value` and `max_value` are plausible physiological limits the generator clips
to, and `decimals` is the precision a laboratory would report. Skewed analytes (C reactive
protein, troponin, natriuretic peptides) are only crudely described by a mean and a standard
deviation; the generator, not this table, decides how diseases shift them.

## Codes

Every `concept_code` is a real code of its code system: SNOMED CT (conditions), ICD-10-CM
(diagnosis source codes), RxNorm (ingredients and clinical drugs), ATC (4th-level drug classes),
LOINC (measurements), CPT-4 and ICD-10-PCS (procedures), UCUM (units). Codes were kept only
where the code and its name could be confirmed, against published value sets and code lists
(the eCQM value sets above all) or, for a handful of very common codes, from long familiarity;
anything uncertain was left out rather than guessed. The tests guard against
typing slips with the checksums the code systems carry: the Verhoeff check digit of SNOMED CT
identifiers and the mod-10 check digit of LOINC codes. Concept names follow each code system's
own name (RxNorm and LOINC names verbatim); CPT-4 names are short descriptors written for the
book, not the AMA's descriptors.

This is teaching material, not a terminology release: SNOMED CT, LOINC, CPT-4 and the other
code systems belong to their owners, and real use of them needs the owners' licences (SNOMED
International, Regenstrief Institute for LOINC, the American Medical Association for CPT-4).

## Concept ids

Concept ids are local: OMOP reserves ids above 2,000,000,000 for local concepts. Each
vocabulary has its own block, allocated in the order of the spec (the group files
`spec/groups/NN_<group>.toml` by number, and the records in each file from the top):

| vocabulary | ids from |
| --- | --- |
{id_blocks}

Six standard OMOP concepts keep their OMOP ids, because the generator writes them directly:
8507 (MALE) and 8532 (FEMALE) in `Gender`, 9201 (Inpatient Visit, `IP`), 9202 (Outpatient
Visit, `OP`) and 9203 (Emergency Room Visit, `ER`) in `Visit`, and 32817 (EHR) in
`Type Concept` (its `concept_code` here is a local placeholder). Local ids stay the same as long as
new concepts are only ever added after the last group of the spec; code that needs a particular
concept should look it up by vocabulary and code (`Vocabulary.by_code`) rather than by id.

## Groups and roles

Each clinical concept belongs to one latent group of the generator:

{group_bullets}
- `routine`: visit codes, screening, vaccines, vital signs and routine laboratory tests that
  everyone gets. A laboratory test that one disease shifts (HbA1c, eGFR, LDL, BNP, troponin,
  FEV1/FVC, PHQ-9, CRP, ...) belongs to that disease's group; tests that several diseases move
  (glucose, creatinine, blood pressure, BMI, ...) stay in `routine` and the generator shifts
  them in code.

The `role` of a concept says what it is within its group:

| role | meaning |
| --- | --- |
| `condition` | standard SNOMED CT diagnosis that the generator records |
| `condition_source` | ICD-10-CM source code; `Maps to` exactly one `condition` of the same group |
| `condition_parent` | SNOMED CT grouping concept, never recorded itself; the conditions below it are `Is a` it |
| `drug_ingredient` | RxNorm ingredient |
| `drug_clinical` | RxNorm clinical drug (ingredient, strength, dose form); `Is a` its ingredient |
| `drug_class` | ATC 4th-level class; the ingredients are `Is a` it |
| `measurement` | LOINC measurement with its unit and reference distribution |
| `procedure` | CPT-4 procedure |
| `procedure_pcs` | ICD-10-PCS inpatient procedure |

## Relationships, and the simplifications

- `Is a` (child to parent) and its reverse `Subsumes`: SNOMED CT conditions under their parent
  condition; RxNorm clinical drugs under their ingredient; ingredients under their ATC class.
  The hierarchy is a small hand-made slice, not SNOMED CT's polyhierarchy: each condition has
  one parent here.
- The OHDSI vocabularies express the two drug links differently: a clinical drug reaches its
  ingredient through `RxNorm has ing` (and `RxNorm ing of`), and an ATC class reaches RxNorm
  through `ATC - RxNorm` (and `RxNorm - ATC`). This vocabulary simplifies both to `Is a` /
  `Subsumes`, so that one relationship answers every "what is this an instance of" question.
- A multi-ingredient drug is linked to the one ingredient the book is about: sacubitril and
  valsartan tablets are `Is a` sacubitril only.
- `Maps to` (and its reverse `Mapped from`) from each ICD-10-CM source code to its standard
  SNOMED CT condition, and, as in OMOP, from every standard concept to itself. Each ICD-10-CM
  code here maps to exactly one condition; real mappings are sometimes one-to-many.
- Every concept is valid from {start} to {end} and none is invalid;
  real codes have their own validity histories (several ICD-10-CM codes here were introduced
  after 2015).

## Counts

Generated from the files:

{counts}

By group and role:

{group_counts}
"""


def _md_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "| " + " | ".join("---" for _ in df.columns) + " |"
    body = ["| " + " | ".join(map(str, r)) + " |" for r in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def readme(tables: dict[str, pd.DataFrame], groups: list[str]) -> str:
    """README.md: the static text with the count tables filled in from ``tables``.

    ``groups`` are the group names in the order of the spec, which the lists follow.
    """
    c = tables["concept"]
    counts = (
        c.groupby(["vocabulary_id", "domain_id"], sort=True).size().rename("concepts").reset_index()
    )
    total = pd.DataFrame([{"vocabulary_id": "all", "domain_id": "", "concepts": len(c)}])
    counts = pd.concat([counts, total], ignore_index=True)
    a = tables["concept_annotation"]
    roles = [
        "condition_parent",
        "condition",
        "condition_source",
        "drug_class",
        "drug_ingredient",
        "drug_clinical",
        "measurement",
        "procedure",
        "procedure_pcs",
    ]
    by_group = (
        pd.crosstab(a["group"], a["role"]).reindex(index=groups, columns=roles).fillna(0)
    ).astype(int)
    by_group.insert(0, "group", by_group.index)
    by_group["all"] = by_group[roles].sum(axis=1)
    blocks = pd.DataFrame([{"vocabulary": k, "ids from": v + 1} for k, v in ID_BLOCKS.items()])
    return README_HEAD.format(
        id_blocks="\n".join(_md_table(blocks).splitlines()[2:]),
        group_bullets="\n".join(
            textwrap.fill(
                f"- {label}: " + ", ".join(f"`{g}`" for g in groups if g in kind) + tail,
                width=96,
                subsequent_indent="  ",
                break_on_hyphens=False,
            )
            for label, kind, tail in (
                ("chronic diseases", CHRONIC, "; `heart_failure` is the outcome."),
                ("acute episodes", ACUTE, "."),
                ("benign background conditions, with no effect on any outcome", BACKGROUND, "."),
            )
        ),
        start=VALID_START,
        end=VALID_END,
        counts=_md_table(counts),
        group_counts=_md_table(by_group),
    )


def render(spec_dir: Path = SPEC_DIR) -> dict[str, str]:
    """File name -> exact file content for every file the script writes."""
    spec = load_spec(spec_dir)
    tables = build(spec)
    out = {
        f"{name}.csv": df.to_csv(index=False, lineterminator="\n") for name, df in tables.items()
    }
    out["README.md"] = readme(tables, [g.name for g in spec.groups])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--out", type=Path, default=OUT, help="output folder")
    args = parser.parse_args(argv)
    files = render()
    if args.check:
        stale = [
            name
            for name, text in files.items()
            if not (args.out / name).is_file()
            or (args.out / name).read_text(encoding="utf-8") != text
        ]
        for name in stale:
            print(f"{args.out / name} differs from scripts/make_vocabulary.py", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text, encoding="utf-8")
    print(f"wrote {', '.join(files)} to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
