"""LOINC-aware lab embeddings: the parts table against LOINC's names, decile bins, the
value corpus, and the ordering test (normal nearer high than very high is to normal)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

from ehrseq.data.concepts import load_vocabulary
from ehrseq.data.synthetic import SyntheticConfig, generate_cohort
from ehrseq.embeddings.loinc import (
    LOINC_PARTS_COLUMNS,
    DecileBins,
    LoincConfig,
    ValueCorpus,
    ValueScaler,
    decile_corpus,
    load_loinc_parts,
    ordering_distances,
    train_loinc_embedding,
)


@pytest.fixture(scope="module")
def vocab():
    return load_vocabulary()


@pytest.fixture(scope="module")
def parts(vocab):
    return load_loinc_parts(vocabulary=vocab)


# ------------------------------------------------------------------------------------
# The parts table against the long common names
# ------------------------------------------------------------------------------------

#: The bracketed property of a LOINC long common name -> LOINC's PROPERTY.
PROPERTY_OF_TAG = {
    "Mass/volume": "MCnc",
    "Moles/volume": "SCnc",
    "#/volume": "NCnc",
    "Units/volume": "ACnc",
    "Enzymatic activity/volume": "CCnc",
    "Mass Ratio": "MRto",
    "Volume Fraction": "VFr",
    "Volume Rate/Area": "ArVRat",
    "Ratio": "Ratio",
}
#: The specimen phrase ("in Serum or Plasma") -> LOINC's SYSTEM.
SYSTEM_OF_PHRASE = {
    "Serum or Plasma": "Ser/Plas",
    "Serum, Plasma or Blood": "Ser/Plas/Bld",
    "Blood": "Bld",
    "Arterial blood": "BldA",
    "Urine": "Urine",
    "Platelet poor plasma": "PPP",
}
#: The method phrase ("by calculation") -> LOINC's METHOD_TYP.
METHOD_OF_PHRASE = {
    "calculation": "Calculated",
    "Direct assay": "Direct assay",
    "High sensitivity method": "High sensitivity method",
    "Coagulation assay": "Coag",
    "Automated count": "Automated count",
    "Pulse oximetry": "Pulse oximetry",
    "Tape measure": "Tape measure",
    "Creatinine-based formula (MDRD)": "Creatinine-based formula (MDRD)",
    "Creatinine-based formula (CKD-EPI)": "Creatinine-based formula (CKD-EPI)",
}
#: Components whose words the long common name leaves out, and what it says instead.
COMPONENT_ALIAS = {
    "Intravascular mean": "Mean blood pressure",
    "Intravascular systolic": "Systolic blood pressure",
    "Intravascular diastolic": "Diastolic blood pressure",
    "Heart beat": "Heart rate",
    "Breaths": "Respiratory rate",
    "Coagulation tissue factor induced": "Prothrombin time",
    "Coagulation tissue factor induced.INR": "INR",
}
#: Codes whose long common name is a short form that states no specimen or method:
#: "Prothrombin time (PT)" (5902-2) is measured in platelet poor plasma by a coagulation
#: assay, as its INR sibling 6301-6 says in full.
SHORT_NAMES = {"5902-2"}
PROPERTIES = {*PROPERTY_OF_TAG.values(), "Pres", "NRat", "Temp", "Mass", "Len", "Vol"}
PROPERTIES |= {"Score", "RelTime", "Time", "MFr"}


def _words(text: str) -> set[str]:
    return {w for w in re.split(r"[\s./+,()^\-\[\]]+", text.lower()) if w}


def name_problems(row: pd.Series, name: str) -> list[str]:
    """What in a parts row disagrees with the LOINC long common name ``name``."""
    out = []
    tag = re.search(r"\[([^\]]+)\]", name)
    if tag and tag.group(1) != "Reported":
        want = PROPERTY_OF_TAG.get(tag.group(1), f"? {tag.group(1)}")
        if row["property"] != want:
            out.append(f"property {row['property']!r}, name says {want!r}")
    if row["property"] not in PROPERTIES:
        out.append(f"property {row['property']!r} is not a LOINC property here")
    spec = re.search(r" (?:in|of) ([A-Z][^\[]*?)(?: by |$)", name)
    if spec:
        want = SYSTEM_OF_PHRASE.get(spec.group(1), f"? {spec.group(1)}")
        if row["system"] != want:
            out.append(f"system {row['system']!r}, name says {want!r}")
    by = re.search(r" by (.+)$", name)
    if by:
        want = METHOD_OF_PHRASE.get(by.group(1), f"? {by.group(1)}")
        if row["method"] != want:
            out.append(f"method {row['method']!r}, name says {want!r}")
    elif "[Reported]" in name:
        if not row["method"].startswith("Reported"):
            out.append(f"method {row['method']!r}, name says Reported")
    elif row["method"] != "" and row["loinc_code"] not in SHORT_NAMES:
        out.append(f"method {row['method']!r}, the name has none")
    component = row["component"].split("^")[0]
    words = _words(COMPONENT_ALIAS.get(row["component"], component))
    if not words <= _words(name):
        out.append(f"component {row['component']!r} is not in the name")
    if row["time_aspect"] != "Pt" or row["scale"] != "Qn":
        out.append("every lab here is a point-in-time quantity (Pt, Qn)")
    return out


def test_parts_table_agrees_with_every_long_common_name(parts, vocab):
    names = vocab.concept.set_index("concept_id")["concept_name"]
    loinc = vocab.concept.loc[vocab.concept["vocabulary_id"] == "LOINC"]
    assert len(parts.table) == len(loinc) == 54
    assert parts.n_missing == 0
    problems = {
        row["loinc_code"]: p
        for _, row in parts.table.iterrows()
        if (p := name_problems(row, names[row["concept_id"]]))
    }
    assert problems == {}


@pytest.mark.parametrize(
    "code, column, wrong",
    [
        ("2345-7", "property", "SCnc"),  # glucose [Mass/volume]
        ("2345-7", "system", "Bld"),  # glucose in Serum or Plasma
        ("718-7", "system", "Ser/Plas"),  # hemoglobin in Blood
        ("6690-2", "property", "MCnc"),  # leukocytes [#/volume]
        ("13457-7", "method", ""),  # LDL by calculation
        ("2160-0", "method", "Calculated"),  # creatinine, no method
        ("2951-2", "component", "Potassium"),  # sodium
        ("8480-6", "component", "Intravascular diastolic"),  # systolic blood pressure
        ("3016-3", "property", "MCnc"),  # thyrotropin [Units/volume]
    ],
)
def test_a_wrongly_typed_row_fails_the_name_check(parts, vocab, code, column, wrong):
    names = vocab.concept.set_index("concept_id")["concept_name"]
    row = parts.table.loc[parts.table["loinc_code"] == code].iloc[0].copy()
    assert name_problems(row, names[row["concept_id"]]) == []
    row[column] = wrong
    assert name_problems(row, names[row["concept_id"]]) != []


# ------------------------------------------------------------------------------------
# Loader: bad input and missing parts
# ------------------------------------------------------------------------------------


def _write(tmp_path, table: pd.DataFrame):
    path = tmp_path / "loinc_parts.csv"
    table.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.drop(columns=["scale"]), "missing \\['scale'\\]"),
        (lambda t: t.assign(system=[""] + list(t["system"][1:])), "'system' is empty"),
        (
            lambda t: t.assign(loinc_code=["2345"] + list(t["loinc_code"][1:])),
            "LOINC code",
        ),
        (lambda t: t.assign(concept_id=["x1"] + list(t["concept_id"][1:])), "integer"),
        (lambda t: pd.concat([t, t.iloc[:1]]), "repeats"),
    ],
)
def test_bad_parts_file_names_file_column_and_row(parts, tmp_path, change, message):
    table = parts.table.astype(str)
    path = _write(tmp_path, change(table))
    with pytest.raises(ValueError, match=message) as err:
        load_loinc_parts(path)
    assert str(path) in str(err.value)
    if "missing" not in message:
        assert "e.g. row (loinc_code=" in str(err.value)


def test_parts_that_disagree_with_the_vocabulary_are_refused(parts, vocab, tmp_path):
    table = parts.table.astype(str)
    swapped = table.assign(
        loinc_code=[table["loinc_code"][1], table["loinc_code"][0]] + list(table["loinc_code"][2:])
    )
    with pytest.raises(ValueError, match="differs from the concept's code"):
        load_loinc_parts(_write(tmp_path, swapped), vocabulary=vocab)
    foreign = table.assign(concept_id=["8507"] + list(table["concept_id"][1:]))
    with pytest.raises(ValueError, match="is not a LOINC concept"):
        load_loinc_parts(_write(tmp_path, foreign), vocabulary=vocab)


def test_loinc_concepts_without_parts_are_counted(parts, vocab, tmp_path):
    dropped = parts.table.iloc[2:]
    short = load_loinc_parts(_write(tmp_path, dropped), vocabulary=vocab)
    assert short.n_missing == 2
    assert set(short.missing_codes) == set(parts.table["loinc_code"][:2])
    assert "2 LOINC concepts without parts" in short.report()
    assert load_loinc_parts(_write(tmp_path, dropped)).n_missing == 0  # no vocabulary


# ------------------------------------------------------------------------------------
# Decile bins, scaler, value corpus
# ------------------------------------------------------------------------------------


def test_decile_bins_equal_numpy_quantiles():
    rng = np.random.default_rng(0)
    a, b = rng.normal(5, 1, 37), rng.exponential(2, 23)
    cid = np.r_[np.full(37, 11), np.full(23, 22), 33]
    val = np.r_[a, b, np.nan]  # lab 33 has no finite value: no bins
    bins = DecileBins.fit(cid, val)
    assert bins.concept_ids.tolist() == [11, 22]
    q = np.arange(1, 10) / 10
    np.testing.assert_allclose(bins.edges[0], np.quantile(a, q))
    np.testing.assert_allclose(bins.edges[1], np.quantile(b, q))
    # a value equal to an edge goes up; below the first edge is bin 0, above the last 9
    e = bins.edges[0]
    k = bins.bin([11, 11, 11, 11, 22, 33, 11], [e[0] - 1, e[0], e[4], e[8] + 1, 0.0, 1.0, np.nan])
    assert k.tolist() == [0, 1, 5, 9, 0, -1, -1]
    assert bins.tokens([11, 33], [e[8] + 1, 1.0]).tolist() == [11 * 100 + 9, 0]
    assert [x.tolist() for x in DecileBins.split_token([1109])] == [[11], [9]]
    with pytest.raises(ValueError, match="n_bins"):
        DecileBins.fit(cid, val, n_bins=1)
    with pytest.raises(ValueError, match="differ in length"):
        DecileBins.fit(cid, val[:-1])


def test_value_scaler_is_robust_and_clips():
    cid = np.r_[np.full(8, 1), 2]
    val = np.r_[1, 2, 3, 4, 5, 6, 7, 1000.0, 3.0]
    sc = ValueScaler.fit(cid, val, z_max=4.0)
    m = np.median(val[:8])
    iqr = np.quantile(val[:8], 0.75) - np.quantile(val[:8], 0.25)
    z = sc.transform([1, 1, 2, 9], [m, m + iqr / 1.349, 3.0, 1.0])
    np.testing.assert_allclose(z, [0.0, 1.0, 0.0, 0.0])
    assert sc.transform([1], [1e6])[0] == 4.0  # clipped


def test_value_corpus_keeps_every_value_on_its_event(vocab):
    rng = np.random.default_rng(1)
    n = 200
    person = rng.integers(0, 7, n)
    days = rng.integers(0, 5, n).astype(float)  # many same-day events
    lab_ids = vocab.concept.loc[vocab.concept["vocabulary_id"] == "LOINC", "concept_id"]
    cid = rng.choice(lab_ids.to_numpy()[:5], n)
    val = rng.normal(size=n)
    vc = ValueCorpus.from_arrays(person, days, cid, val, seed=3)
    c = vc.corpus
    assert np.array_equal(c.concept_ids[c.tokens], vc.concept_id)
    before = sorted(zip(person.tolist(), cid.tolist(), val.tolist()))
    after = sorted(zip(c.person.tolist(), vc.concept_id.tolist(), vc.value.tolist()))
    assert before == after
    # times move by under a thousandth of a day, each event keeping its own day
    assert ((c.days - np.floor(c.days)) < 1e-3).all()
    assert sorted(zip(person.tolist(), cid.tolist(), days.tolist())) == sorted(
        zip(c.person.tolist(), vc.concept_id.tolist(), np.floor(c.days).tolist())
    )
    bins = DecileBins.fit(cid, val)
    dc = decile_corpus(vc, bins)
    assert dc.n_decile == n and dc.n_unbinned == 0
    cid2, k = DecileBins.split_token(dc.corpus.concept_ids[dc.corpus.tokens])
    assert np.array_equal(cid2, vc.concept_id)
    assert np.array_equal(k, bins.bin(vc.concept_id, vc.value))


# ------------------------------------------------------------------------------------
# The ordering test on a trained value-aware embedding
# ------------------------------------------------------------------------------------

ORDER_LABS = ("4548-4", "2345-7", "2160-0", "13457-7", "8480-6", "39156-5")


@pytest.fixture(scope="module")
def cohort_corpus():
    cohort = generate_cohort(SyntheticConfig(n_patients=250, seed=3))
    return cohort, ValueCorpus.from_omop_tables(cohort.tables)


def _train(cohort_corpus, parts, **kw):
    _, vc = cohort_corpus
    settings = dict(dim=16, hidden=16, window=5, epochs=2, max_pairs=20_000) | kw
    cfg = LoincConfig(**settings)
    return train_loinc_embedding(vc, parts, cfg)


def ordering(result, vocab) -> dict[str, tuple[float, float]]:
    """Per lab: (distance normal-high, distance normal-very high), with normal, high and
    very high the reference mean, mean + 2 SD and mean + 4 SD of concept_annotation,
    written out here and checked against the library's ordering_distances."""
    ann = vocab.annotation.set_index("concept_code")
    out = {}
    for code in ORDER_LABS:
        row = ann.loc[code]
        mean, sd = float(row["ref_mean"]), float(row["ref_sd"])
        cid = np.full(3, int(row["concept_id"]))
        u = result.event_vectors(cid, np.array([mean, mean + 2 * sd, mean + 4 * sd]))
        out[code] = (
            float(np.linalg.norm(u[0] - u[1])),
            float(np.linalg.norm(u[0] - u[2])),
        )
    lib = ordering_distances(result, vocab, ORDER_LABS).set_index("loinc_code")
    for code, (near, far) in out.items():
        assert lib.loc[code, "normal_high"] == pytest.approx(near, rel=1e-6, abs=1e-9)
        assert lib.loc[code, "normal_very_high"] == pytest.approx(far, rel=1e-6, abs=1e-9)
        assert lib.loc[code, "passes"] == (near < far)
    return out


def passes(dist: dict[str, tuple[float, float]]) -> bool:
    return all(near < far for near, far in dist.values())


def test_normal_is_nearer_high_than_very_high_is_to_normal(cohort_corpus, parts, vocab):
    result = _train(cohort_corpus, parts)
    assert result.losses[-1] < result.losses[0]
    assert result.n_labs_without_parts == 0
    dist = ordering(result, vocab)
    assert passes(dist), dist
    # a value-blind embedding cannot pass: every value of a lab gets the same vector
    blind = ordering(_train(cohort_corpus, parts, value_aware=False), vocab)
    assert all(near == far == 0.0 for near, far in blind.values())
    assert not passes(blind)


def test_labs_sharing_parts_start_nearer_than_labs_that_share_none(cohort_corpus, parts):
    """Before training, a lab's vector is the mean of its part vectors: LDL calculated
    and LDL direct share five of six parts, glucose and FEV1 only Pt and Qn; with one
    vector per lab (``use_parts=False``) the two LDLs start unrelated."""

    def start_cosines(use_parts: bool) -> np.ndarray:
        result = _train(cohort_corpus, parts, epochs=1, max_pairs=1, lr=1e-9, use_parts=use_parts)
        ids = [2000005004, 2000005005, 2000005048, 2000005016]
        tok = torch.from_numpy(result.token_of(ids))
        with torch.no_grad():
            v = result.model.base(tok).numpy()
        norm = np.linalg.norm(v, axis=1)
        return v @ v.T / np.outer(norm, norm)

    cos = start_cosines(True)
    assert cos[0, 1] > 0.6 > cos[2, 3]
    assert start_cosines(False)[0, 1] < 0.6


def test_labs_without_parts_are_counted_and_still_trained(cohort_corpus, parts):
    _, vc = cohort_corpus
    short = load_loinc_parts(parts.table.iloc[3:].astype(str))
    cfg = LoincConfig(dim=8, hidden=8, window=3, epochs=1, max_pairs=5_000)
    result = train_loinc_embedding(vc, short, cfg)
    in_corpus = set(vc.corpus.concept_ids.tolist())
    expected = sum(int(c) in in_corpus for c in parts.table["concept_id"][:3])
    assert result.n_labs_without_parts == expected > 0
    assert list(LOINC_PARTS_COLUMNS) == list(short.table.columns)


def test_event_vectors_lab_by_lab_equal_the_training_inputs(cohort_corpus, parts, vocab):
    """event_vectors applies each lab's read-out to its rows at once; every vector equals
    the one the training path (``inputs``, a read-out gathered per event) gives; and the
    ordering test refuses bad shifts."""
    result = _train(cohort_corpus, parts, epochs=1, max_pairs=2_000)
    rng = np.random.default_rng(0)
    labs = parts.table["concept_id"].to_numpy()
    cid = np.r_[rng.choice(labs, 3000), [2000001001, 0]]  # a diagnosis, an unknown code
    val = rng.normal(50, 20, len(cid))
    every = result.event_vectors(cid, val)
    tok = torch.from_numpy(result.token_of(cid))
    z = torch.from_numpy(result.scaler.transform(cid, val)).float()
    with torch.no_grad():
        direct = result.model.inputs(tok, z).numpy()
    assert np.allclose(every, direct, atol=1e-6)  # float32, summed in another order
    assert not np.allclose(every[:3000], result.model.base(tok).detach().numpy()[:3000])
    table = ordering_distances(result, vocab)
    assert len(table) > 0 and set(table["loinc_code"]) >= set(ORDER_LABS)
    with pytest.raises(ValueError, match="0 < high < very_high"):
        ordering_distances(result, vocab, high=4, very_high=2)
    with pytest.raises(ValueError, match="no reference range"):
        ordering_distances(result, vocab, ["0000-0"])
