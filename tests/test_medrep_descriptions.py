"""ehrseq.medrep.descriptions: descriptions from the vocabulary alone, per-site deciles."""

import numpy as np
import pandas as pd
import pytest

from ehrseq.data.concepts import data_dir
from ehrseq.data.download import local_sample
from ehrseq.data.synthetic import SyntheticConfig, generate_two_sites
from ehrseq.medrep import (
    ConceptTables,
    concept_ancestors,
    concept_descriptions,
    decile_concept_id,
    fit_deciles,
    read_concept_tables,
)


@pytest.fixture(scope="module")
def shipped():
    return read_concept_tables(data_dir() / "vocabulary")


@pytest.fixture(scope="module")
def sites():
    a, b = generate_two_sites(SyntheticConfig(n_patients=150))
    return (
        a.omop_tables(include_vocabulary=False)["measurement"],
        b.omop_tables(include_vocabulary=False)["measurement"],
    )


def _row(desc: pd.DataFrame, name: str) -> str:
    return desc.loc[desc["concept_name"] == name, "description"].item()


def test_shipped_vocabulary_descriptions(shipped):
    desc = concept_descriptions(shipped)
    assert len(desc) == len(shipped.concept)
    assert desc["concept_id"].tolist() == shipped.concept["concept_id"].tolist()
    assert desc["description"].str.len().max() < 400
    # the shipped vocabulary has no concept_ancestor: ancestors come from "Is a" (two levels
    # for a clinical drug: ingredient, then ATC class)
    assert len(shipped.ancestor) == 0
    text = _row(desc, "Secondary hypertension")
    assert text.startswith("Secondary hypertension. Condition concept, SNOMED, ")
    assert "Is a: Hypertensive disorder, systemic arterial." in text
    anc = concept_ancestors(shipped)
    assert anc["level"].max() == 2  # clinical drug -> ingredient -> ATC class
    assert desc.attrs["n_ancestor_rows_unnamed"] == 0


def test_ancestor_table_preferred_and_synonyms():
    concept = pd.DataFrame(
        {
            "concept_id": [1, 2, 3],
            "concept_name": ["Heart failure", "Heart disease", "Disorder"],
            "domain_id": "Condition",
            "vocabulary_id": "SNOMED",
            "concept_class_id": "Clinical Finding",
        }
    )
    ancestor = pd.DataFrame(
        {
            "ancestor_concept_id": [1, 2, 3, 3, 99],
            "descendant_concept_id": [1, 1, 1, 2, 1],
            "min_levels_of_separation": [0, 1, 2, 1, 3],
        }
    )
    synonym = pd.DataFrame(
        {
            "concept_id": [1, 1, 1],
            "concept_synonym_name": ["Heart failure", "Cardiac failure", "HF"],
        }
    )
    # the relationship table says something else: the ancestor table wins when it has rows
    rel = pd.DataFrame({"concept_id_1": [1], "concept_id_2": [3], "relationship_id": ["Is a"]})
    desc = concept_descriptions(ConceptTables(concept, rel, ancestor, synonym))
    assert desc["description"].iloc[0] == (
        "Heart failure. Synonyms: Cardiac failure; HF. Condition concept, SNOMED, "
        "Clinical Finding. Is a: Heart disease; Disorder."
    )
    assert desc.attrs["n_ancestor_rows_unnamed"] == 1  # ancestor 99 is not in concept
    one = concept_descriptions(ConceptTables(concept, rel, ancestor, synonym), max_ancestors=1)
    assert one["description"].iloc[0].endswith("Is a: Heart disease.")


def test_isa_closure_without_ancestor_table():
    concept = pd.DataFrame(
        {
            "concept_id": [1, 2, 3, 4],
            "concept_name": list("abcd"),
            "domain_id": "Condition",
            "vocabulary_id": "SNOMED",
            "concept_class_id": "x",
        }
    )
    rel = pd.DataFrame(
        {
            "concept_id_1": [1, 2, 3, 1, 4],
            "concept_id_2": [2, 3, 1, 4, 4],  # a cycle 1->2->3->1 and a self row
            "relationship_id": ["Is a", "Is a", "Is a", "Maps to", "Is a"],
        }
    )
    anc = concept_ancestors(ConceptTables(concept, rel))
    got = {(r.concept_id, r.ancestor_id): r.level for r in anc.itertuples()}
    assert got == {(1, 2): 1, (2, 3): 1, (3, 1): 1, (1, 3): 2, (2, 1): 2, (3, 2): 2}


def test_deciles_per_site(shipped, sites):
    a, b = sites
    dec_a, dec_b = fit_deciles(a, "A"), fit_deciles(b, "B")
    cid = sorted(set(dec_a.cuts) & set(dec_b.cuts))[0]
    vals = a.loc[a["measurement_concept_id"] == cid, "value_as_number"].dropna().to_numpy()
    np.testing.assert_allclose(dec_a.cuts[cid], np.quantile(vals, np.arange(1, 10) / 10))
    assert np.all(np.diff(dec_a.cuts[cid]) >= 0)
    k = dec_a.decile(cid, vals)
    assert k.min() >= 1 and k.max() <= 10
    # roughly a tenth of the site's own values per decile (ties in rounded values aside)
    assert np.bincount(k, minlength=11)[1:].max() < 0.35 * len(vals)
    # another site, another population: its cuts differ for some concept
    assert any(
        not np.allclose(dec_a.cuts[c], dec_b.cuts[c]) for c in set(dec_a.cuts) & set(dec_b.cuts)
    )
    desc = concept_descriptions(shipped, dec_a)
    assert len(desc) == len(shipped.concept) + 10 * len(dec_a.cuts)
    block = desc.loc[desc["parent_concept_id"] == cid]
    name = block["concept_name"].iloc[0]
    assert block["decile"].tolist() == list(range(11))  # the concept, then its ten deciles
    assert block["description"].iloc[3] == f"{name} (decile 3)"
    assert block["concept_id"].iloc[3] == decile_concept_id(cid, 3) == -(cid * 100 + 3)
    assert desc["concept_id"].is_unique


def test_deciles_refuse_bad_input():
    with pytest.raises(ValueError, match="lacks"):
        fit_deciles(pd.DataFrame({"value_as_number": [1.0]}))
    few = pd.DataFrame({"measurement_concept_id": [5] * 9, "value_as_number": np.arange(9.0)})
    assert fit_deciles(few).cuts == {} and fit_deciles(few).n_skipped == 1
    with pytest.raises(ValueError, match="1..10"):
        decile_concept_id(5, 11)
    with pytest.raises(ValueError, match="no deciles"):
        fit_deciles(few).decile(5, [1.0])


@pytest.mark.shared_data
def test_synthea27nj_descriptions():
    folder = local_sample("eunomia_synthea27nj")
    if folder is None:
        pytest.skip("eunomia_synthea27nj sample absent")
    tables = read_concept_tables(folder)
    assert len(tables.ancestor) == 0  # empty in this sample: "Is a" edges stand in
    dec = fit_deciles(pd.read_parquet(folder / "measurement.parquet"), "synthea27nj")
    desc = concept_descriptions(tables, dec)
    assert len(desc) == len(tables.concept) + 10 * len(dec.cuts)
    assert len(dec.cuts) > 10
    assert desc["description"].str.contains(" Is a: ").sum() > 100
    # ancestors that point outside this small concept table are counted, not named
    assert desc.attrs["n_ancestor_rows_unnamed"] > 0
    assert desc["concept_id"].is_unique
