"""The synthetic cohort's vocabulary (``data/vocabulary/``): structure, hierarchy, code checksums.

The files are written by ``scripts/make_vocabulary.py`` from the spec files under
``data/vocabulary/spec/``; these tests check the written files (and that the script still
reproduces them byte for byte), so a hand edit of a CSV fails here, and that the script rejects
a malformed spec file with an error that names the file, the record and the field.
The checksum tests (Verhoeff for SNOMED CT, mod 10 for LOINC) guard against mistyped codes.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest

from ehrseq.data.synthetic import ACUTE, BACKGROUND, CHRONIC

REPO = Path(__file__).resolve().parents[1]
VOCAB = REPO / "data" / "vocabulary"
SCRIPT = REPO / "scripts" / "make_vocabulary.py"

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

# The generator's disease groups: the shipped vocabulary must cover exactly these.
GROUPS = (*CHRONIC, *ACUTE, *BACKGROUND, "routine")
ROLES = {
    "condition",
    "condition_source",
    "condition_parent",
    "drug_ingredient",
    "drug_clinical",
    "drug_class",
    "measurement",
    "procedure",
    "procedure_pcs",
}
# role -> (vocabulary_id, domain_id, standard_concept)
ROLE_KIND = {
    "condition": ("SNOMED", "Condition", "S"),
    "condition_parent": ("SNOMED", "Condition", "S"),
    "condition_source": ("ICD10CM", "Condition", ""),
    "drug_ingredient": ("RxNorm", "Drug", "S"),
    "drug_clinical": ("RxNorm", "Drug", "S"),
    "drug_class": ("ATC", "Drug", "C"),
    "measurement": ("LOINC", "Measurement", "S"),
    "procedure": ("CPT4", "Procedure", "S"),
    "procedure_pcs": ("ICD10PCS", "Procedure", "S"),
}
# The standard OMOP ids the generator writes directly.
FIXED = {
    8507: ("MALE", "Gender", "Gender", "M"),
    8532: ("FEMALE", "Gender", "Gender", "F"),
    9201: ("Inpatient Visit", "Visit", "Visit", "IP"),
    9202: ("Outpatient Visit", "Visit", "Visit", "OP"),
    9203: ("Emergency Room Visit", "Visit", "Visit", "ER"),
    32817: ("EHR", "Type Concept", "Type Concept", None),
}
LOCAL_MIN = 2_000_000_000


# --------------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------------

_VERHOEFF_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
_VERHOEFF_P = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]


def verhoeff_valid(digits: str) -> bool:
    """True when ``digits`` ends with a correct Verhoeff check digit (SNOMED CT identifiers).

    The dihedral group D5 multiplication table ``d`` and the position permutation ``p``; the
    running checksum over the digits read right to left is 0 exactly when the last digit is
    the check digit of the others.
    """
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _VERHOEFF_D[c][_VERHOEFF_P[i % 8][int(ch)]]
    return c == 0


def loinc_check_digit(body: str) -> int:
    """The LOINC mod-10 check digit of the part of a code before the hyphen.

    Reading right to left, the digits in odd positions are doubled (a doubled digit above 9
    contributes its digit sum), all are added, and the check digit tops the sum up to the
    next multiple of ten.
    """
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d = d // 10 + d % 10
        total += d
    return (10 - total % 10) % 10


def test_checksum_algorithms_on_known_codes():
    # Published codes: SNOMED CT 22298006 (myocardial infarction), 44054006 (type 2 diabetes),
    # 128045006 (cellulitis); LOINC 2160-0 (creatinine), 4548-4 (HbA1c), 8480-6 (systolic BP).
    for code in ("22298006", "44054006", "128045006"):
        assert verhoeff_valid(code)
        assert not verhoeff_valid(code[:-1] + str((int(code[-1]) + 1) % 10))
    for code in ("2160-0", "4548-4", "8480-6", "33762-6"):
        body, check = code.split("-")
        assert loinc_check_digit(body) == int(check)
        assert loinc_check_digit(body) != (int(check) + 1) % 10


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


def _read(name: str) -> pd.DataFrame:
    return pd.read_csv(VOCAB / name, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def concept() -> pd.DataFrame:
    df = _read("concept.csv")
    df["concept_id"] = df["concept_id"].astype("int64")
    return df


@pytest.fixture(scope="module")
def relationship() -> pd.DataFrame:
    df = _read("concept_relationship.csv")
    for col in ("concept_id_1", "concept_id_2"):
        df[col] = df[col].astype("int64")
    return df


@pytest.fixture(scope="module")
def annotation() -> pd.DataFrame:
    df = _read("concept_annotation.csv")
    df["concept_id"] = df["concept_id"].astype("int64")
    return df


@pytest.fixture(scope="module")
def ann(annotation, concept) -> pd.DataFrame:
    """The annotation joined to its concepts, indexed by concept id."""
    return annotation.merge(concept, on="concept_id", how="left").set_index("concept_id")


@pytest.fixture(scope="module")
def rel_pairs(relationship) -> dict[str, set[tuple[int, int]]]:
    out: dict[str, set[tuple[int, int]]] = defaultdict(set)
    for a, b, r in relationship[["concept_id_1", "concept_id_2", "relationship_id"]].itertuples(
        index=False
    ):
        out[r].add((int(a), int(b)))
    return out


@pytest.fixture(scope="module")
def parents(rel_pairs) -> dict[int, set[int]]:
    out: dict[int, set[int]] = defaultdict(set)
    for child, parent in rel_pairs["Is a"]:
        out[child].add(parent)
    return out


def ancestors(cid: int, parents: dict[int, set[int]]) -> set[int]:
    seen: set[int] = set()
    stack = list(parents.get(cid, ()))
    while stack:
        p = stack.pop()
        if p not in seen:
            seen.add(p)
            stack.extend(parents.get(p, ()))
    return seen


def ids(ann: pd.DataFrame, group: str, role: str) -> list[int]:
    return ann.index[(ann["group"] == group) & (ann["role"] == role)].tolist()


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def test_columns_are_exactly_as_specified(concept, relationship, annotation):
    assert list(concept.columns) == CONCEPT_COLUMNS
    assert list(relationship.columns) == RELATIONSHIP_COLUMNS
    assert list(annotation.columns) == ANNOTATION_COLUMNS


def test_concept_ids_and_codes_are_unique(concept):
    assert concept["concept_id"].is_unique
    dup = concept.duplicated(["vocabulary_id", "concept_code"], keep=False)
    assert not dup.any(), concept.loc[dup, ["vocabulary_id", "concept_code"]]


def test_fixed_standard_concepts_keep_their_omop_ids(concept):
    c = concept.set_index("concept_id")
    for cid, (name, domain, vocab, code) in FIXED.items():
        row = c.loc[cid]
        assert (row["concept_name"], row["domain_id"], row["vocabulary_id"]) == (
            name,
            domain,
            vocab,
        )
        assert row["standard_concept"] == "S"
        if code is not None:
            assert row["concept_code"] == code
    others = concept.loc[~concept["concept_id"].isin(FIXED), "concept_id"]
    assert (others > LOCAL_MIN).all(), "local concepts need ids above 2,000,000,000"


def test_field_values(concept, relationship):
    assert set(concept["domain_id"]) <= {
        "Condition",
        "Drug",
        "Measurement",
        "Procedure",
        "Observation",
        "Unit",
        "Visit",
        "Gender",
        "Type Concept",
    }
    assert set(concept["standard_concept"]) <= {"S", "C", ""}
    for df in (concept, relationship):
        assert (df["valid_start_date"] == "1970-01-01").all()
        assert (df["valid_end_date"] == "2099-12-31").all()
        assert (df["invalid_reason"] == "").all()
    assert (concept["concept_name"].str.strip() != "").all()
    assert set(relationship["relationship_id"]) == {"Is a", "Subsumes", "Maps to", "Mapped from"}
    assert not relationship.duplicated(["concept_id_1", "concept_id_2", "relationship_id"]).any()


@pytest.mark.parametrize("column", ["concept_name", "description"])
def test_no_surrounding_whitespace(concept, column):
    assert (concept[column] == concept[column].str.strip()).all()


def test_every_description_is_one_sentence(concept):
    bad = []
    for cid, text in concept[["concept_id", "description"]].itertuples(index=False):
        one = (
            len(text) >= 10
            and text[0].isupper()
            and text.endswith(".")
            and "!" not in text
            and "?" not in text
            and not re.search(r"\.\s", text)  # no second sentence, no "e.g. "
            and "\n" not in text
        )
        if not one:
            bad.append((cid, text))
    assert not bad, bad[:5]


# --------------------------------------------------------------------------------------------
# Relationships
# --------------------------------------------------------------------------------------------


def test_relationship_endpoints_exist(concept, relationship):
    known = set(concept["concept_id"])
    for col in ("concept_id_1", "concept_id_2"):
        missing = set(relationship[col]) - known
        assert not missing, f"{col}: {sorted(missing)[:5]}"


@pytest.mark.parametrize(("forward", "reverse"), [("Is a", "Subsumes"), ("Maps to", "Mapped from")])
def test_relationships_come_with_their_reverse(rel_pairs, forward, reverse):
    assert {(b, a) for a, b in rel_pairs[forward]} == rel_pairs[reverse]


def test_is_a_graph_is_acyclic(rel_pairs):
    children: dict[int, set[int]] = defaultdict(set)
    indegree: dict[int, int] = defaultdict(int)
    nodes: set[int] = set()
    for child, parent in rel_pairs["Is a"]:
        assert child != parent
        children[parent].add(child)
        indegree[child] += 1
        nodes |= {child, parent}
    queue = [n for n in nodes if indegree[n] == 0]
    seen = 0
    while queue:  # Kahn's topological sort visits every node iff there is no cycle
        n = queue.pop()
        seen += 1
        for c in children[n]:
            indegree[c] -= 1
            if indegree[c] == 0:
                queue.append(c)
    assert seen == len(nodes)


def test_maps_to_targets_are_standard(concept, rel_pairs):
    c = concept.set_index("concept_id")
    for source, target in rel_pairs["Maps to"]:
        assert c.at[target, "standard_concept"] == "S", (source, target)
        assert c.at[source, "standard_concept"] in {"S", ""}, (source, target)


def test_every_standard_concept_maps_to_itself(concept, rel_pairs):
    standard = set(concept.loc[concept["standard_concept"] == "S", "concept_id"])
    assert standard <= {a for a, b in rel_pairs["Maps to"] if a == b}
    # and only standard concepts map to themselves
    assert {a for a, b in rel_pairs["Maps to"] if a == b} <= standard


def test_icd10cm_sources_map_to_one_condition_of_their_group(ann, rel_pairs):
    maps: dict[int, list[int]] = defaultdict(list)
    for a, b in rel_pairs["Maps to"]:
        maps[a].append(b)
    for sid in ann.index[ann["role"] == "condition_source"]:
        targets = maps[sid]
        assert len(targets) == 1, (sid, targets)
        target = targets[0]
        assert target in ann.index, (sid, target)
        assert ann.at[target, "role"] == "condition", (sid, target)
        assert ann.at[target, "vocabulary_id"] == "SNOMED"
        assert ann.at[target, "group"] == ann.at[sid, "group"], (sid, target)
    # every ICD-10-CM concept is an annotated source
    icd = ann.index[ann["vocabulary_id"] == "ICD10CM"]
    assert (ann.loc[icd, "role"] == "condition_source").all()


def test_every_condition_has_a_source_code(ann, rel_pairs):
    mapped = {b for a, b in rel_pairs["Maps to"] if a != b}
    for cid in ann.index[ann["role"] == "condition"]:
        assert cid in mapped, f"condition {cid} has no ICD-10-CM source"
    for cid in ann.index[ann["role"] == "condition_parent"]:
        assert cid not in mapped, f"grouping concept {cid} should not be recorded"


def test_conditions_sit_under_their_group_parent(ann, parents):
    for g in GROUPS:
        group_parents = ids(ann, g, "condition_parent")
        assert len(group_parents) <= 1
        for cid in ids(ann, g, "condition"):
            up = ancestors(cid, parents)
            if group_parents:
                assert group_parents[0] in up, (g, cid)
            # a condition never climbs into another group's concepts
            assert all(ann.at[p, "group"] == g for p in up), (g, cid)


def test_drug_links(ann, parents):
    for cid in ann.index[ann["role"] == "drug_clinical"]:
        ups = [p for p in parents[cid] if p in ann.index]
        ingredients = [p for p in ups if ann.at[p, "role"] == "drug_ingredient"]
        assert len(ingredients) == 1, (cid, ups)
        assert ann.at[ingredients[0], "group"] == ann.at[cid, "group"], cid
    for cid in ann.index[ann["role"] == "drug_ingredient"]:
        classes = [p for p in parents[cid] if ann.at[p, "role"] == "drug_class"]
        assert len(classes) == 1, cid
        assert ann.at[classes[0], "group"] == ann.at[cid, "group"], cid
        has_clinical = any(cid in parents[c] for c in ann.index[ann["role"] == "drug_clinical"])
        assert has_clinical, f"ingredient {cid} has no clinical drug"


# --------------------------------------------------------------------------------------------
# Annotation
# --------------------------------------------------------------------------------------------


def test_annotation_covers_exactly_the_clinical_concepts(concept, annotation, ann):
    assert annotation["concept_id"].is_unique
    assert set(annotation["group"]) == set(GROUPS)
    assert set(annotation["role"]) <= ROLES
    clinical = concept.loc[
        ~concept["vocabulary_id"].isin(["UCUM", "Visit", "Gender", "Type Concept"]), "concept_id"
    ]
    assert set(clinical) == set(annotation["concept_id"])
    for role, (vocab, domain, standard) in ROLE_KIND.items():
        rows = ann.loc[ann["role"] == role]
        assert (rows["vocabulary_id"] == vocab).all(), role
        assert (rows["domain_id"] == domain).all(), role
        assert (rows["standard_concept"] == standard).all(), role


def test_concept_classes(ann):
    classes = {
        "condition": {"Disorder", "Clinical Finding"},
        "condition_parent": {"Disorder", "Clinical Finding"},
        "drug_ingredient": {"Ingredient"},
        "drug_clinical": {"Clinical Drug"},
        "drug_class": {"ATC 4th"},
        "measurement": {"Lab Test", "Clinical Observation", "Survey"},
        "procedure": {"CPT4"},
        "procedure_pcs": {"ICD10PCS"},
    }
    for role, allowed in classes.items():
        assert set(ann.loc[ann["role"] == role, "concept_class_id"]) <= allowed, role
    src = ann.loc[ann["role"] == "condition_source"]
    expected = src["concept_code"].str.replace(".", "", regex=False).str.len().astype(str)
    assert (src["concept_class_id"] == expected + "-char billing code").all()


@pytest.mark.parametrize("group", CHRONIC)
def test_chronic_groups_are_complete(ann, group):
    n = {role: len(ids(ann, group, role)) for role in ROLES}
    assert n["condition_parent"] == 1
    assert n["condition"] >= 3
    assert n["condition_source"] >= n["condition"]
    assert n["drug_ingredient"] >= 2
    assert n["drug_class"] >= 1
    assert 1 <= n["measurement"] <= 3
    assert 1 <= n["procedure"] <= 3


@pytest.mark.parametrize("group", ACUTE)
def test_acute_groups_are_complete(ann, group):
    n = {role: len(ids(ann, group, role)) for role in ROLES}
    assert n["condition"] >= 2
    assert 1 <= n["drug_ingredient"] <= 2
    assert n["measurement"] <= 2
    assert n["procedure"] + n["procedure_pcs"] <= 2


@pytest.mark.parametrize("group", BACKGROUND)
def test_background_groups_are_complete(ann, group):
    n = {role: len(ids(ann, group, role)) for role in ROLES}
    assert 1 <= n["condition"] <= 3
    assert n["drug_ingredient"] <= 2


def test_heart_failure_and_routine_contents(ann):
    def codes(group, role):
        return set(ann.loc[ids(ann, group, role), "concept_code"])

    assert {"30934-4", "33762-6"} <= codes("heart_failure", "measurement")
    assert "93306" in codes("heart_failure", "procedure")
    assert {"4548-4"} <= codes("type2_diabetes", "measurement")
    assert {"44261-6"} <= codes("depression", "measurement")
    routine_labs = {"8480-6", "8462-4", "8867-4", "29463-7", "39156-5", "718-7", "6690-2"}
    routine_labs |= {"2951-2", "2823-3", "2345-7", "2160-0"}
    assert routine_labs <= codes("routine", "measurement")
    routine_cpt = {f"{c}" for c in range(99212, 99216)} | {"99221", "99222", "99223"}
    routine_cpt |= {"99231", "99232", "99233", "99283", "99284", "99285", "36415", "80053"}
    routine_cpt |= {"85025", "80061", "83036", "90686", "90732", "77067", "45378", "93000"}
    routine_cpt |= {"71046"}
    assert routine_cpt <= codes("routine", "procedure")
    assert routine_labs.isdisjoint(
        set(ann.loc[(ann["role"] == "measurement") & (ann["group"] != "routine"), "concept_code"])
    )


def test_measurements_have_units_and_reference_ranges(ann, concept):
    units = set(concept.loc[concept["domain_id"] == "Unit", "concept_id"])
    meas = ann.loc[ann["role"] == "measurement"]
    assert len(meas) > 0
    for cid, row in meas.iterrows():
        unit = int(row["unit_concept_id"])
        mean, sd = float(row["ref_mean"]), float(row["ref_sd"])
        lo, hi, dec = float(row["min_value"]), float(row["max_value"]), int(row["decimals"])
        assert unit in units, cid
        assert sd > 0 and lo < hi and lo <= mean <= hi and 0 <= dec <= 4, cid
    others = ann.loc[ann["role"] != "measurement", ANNOTATION_COLUMNS[3:]]
    assert (others == "").all().all(), "only measurements carry units and ranges"


# --------------------------------------------------------------------------------------------
# Code formats and checksums
# --------------------------------------------------------------------------------------------

CODE_FORMATS = {
    "ICD10CM": r"[A-TV-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?",
    "SNOMED": r"[1-9][0-9]{5,17}",
    "RxNorm": r"[1-9][0-9]{0,7}",
    "ATC": r"[A-Z][0-9]{2}[A-Z]{2}",
    "LOINC": r"[0-9]{1,5}-[0-9]",
    "CPT4": r"[0-9]{5}",
    "ICD10PCS": r"[0-9A-HJ-NP-Z]{7}",
    "UCUM": r"\S+",
}


@pytest.mark.parametrize("vocabulary", sorted(CODE_FORMATS))
def test_code_formats(concept, vocabulary):
    codes = concept.loc[concept["vocabulary_id"] == vocabulary, "concept_code"]
    assert len(codes) > 0
    bad = [c for c in codes if not re.fullmatch(CODE_FORMATS[vocabulary], c)]
    assert not bad, bad


def test_snomed_codes_have_valid_verhoeff_check_digits(concept):
    codes = concept.loc[concept["vocabulary_id"] == "SNOMED", "concept_code"]
    bad = [c for c in codes if not verhoeff_valid(c)]
    assert not bad, bad


def test_snomed_codes_are_concept_ids(concept):
    # The partition identifier (second and third digits from the right) of a concept is 00 for
    # the international release or 10 for an extension; 01/02 would be a description or a
    # relationship id.
    codes = concept.loc[concept["vocabulary_id"] == "SNOMED", "concept_code"]
    bad = [c for c in codes if c[-3:-1] not in {"00", "10"}]
    assert not bad, bad


def test_loinc_codes_have_valid_check_digits(concept):
    codes = concept.loc[concept["vocabulary_id"] == "LOINC", "concept_code"]
    bad = [c for c in codes if loinc_check_digit(c.split("-")[0]) != int(c.split("-")[1])]
    assert not bad, bad


# --------------------------------------------------------------------------------------------
# The script reproduces the committed files
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def script():
    """``scripts/make_vocabulary.py`` imported as a module."""
    spec = importlib.util.spec_from_file_location("make_vocabulary", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_script_reproduces_the_files_byte_for_byte(script):
    files = script.render()
    assert set(files) == {
        "concept.csv",
        "concept_relationship.csv",
        "concept_annotation.csv",
        "README.md",
    }
    for name, text in files.items():
        on_disk = (VOCAB / name).read_bytes()
        assert on_disk == text.encode("utf-8"), (
            f"{name} differs from scripts/make_vocabulary.py; rerun the script"
        )


# Each case: the group file, the last occurrence of a text in it and its replacement, and the
# error expected (after the file's path).
BROKEN_SPECS = {
    "missing field": (
        "01_hypertension.toml",
        '  description = "ICD-10-CM code for primary hypertension, the most common hypertension code."\n',
        "",
        "conditions #1 (code '59621000'), icd #1 (code 'I10'): missing field 'description'",
    ),
    "unknown field": (
        "01_hypertension.toml",
        'unit = "mm[Hg]"',
        'units = "mm[Hg]"',
        "labs #1 (code '8478-0'): unknown field 'units'",
    ),
    "wrong kind": (
        "01_hypertension.toml",
        "decimals = 0",
        "decimals = 0.5",
        "labs #1 (code '8478-0'): field 'decimals' must be an integer, got 0.5",
    ),
    "code spelled two ways": (
        "19_osteoarthritis.toml",
        'name = "Propionic acid derivatives"',
        'name = "Propionic acid derivative"',
        "drugs #2 (code '7258'), atc: ATC code 'M01AE' is spelled two ways: field 'name' is "
        "'Propionic acid derivative' here but 'Propionic acid derivatives' in {path}: "
        "drugs #1 (code '5640'), atc",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_SPECS))
def test_script_rejects_a_broken_spec_naming_file_record_and_field(script, tmp_path, case):
    name, old, new, expected = BROKEN_SPECS[case]
    spec_dir = tmp_path / "spec"
    shutil.copytree(VOCAB / "spec", spec_dir)
    path = spec_dir / "groups" / name
    head, found, tail = path.read_text(encoding="utf-8").rpartition(old)
    assert found, f"{old!r} is no longer in {name}; update the test case"
    path.write_text(head + new + tail, encoding="utf-8")
    message = f"{path}: " + expected.format(path=path)
    with pytest.raises(script.SpecError, match=re.escape(message)):
        script.load_spec(spec_dir)


def test_script_rejects_a_group_the_generator_does_not_know(script, tmp_path):
    spec_dir = tmp_path / "spec"
    shutil.copytree(VOCAB / "spec", spec_dir)
    (spec_dir / "groups" / "29_routine.toml").rename(spec_dir / "groups" / "29_routines.toml")
    with pytest.raises(script.SpecError, match="29_routines.toml: 'routines' is not a group"):
        script.load_spec(spec_dir)
