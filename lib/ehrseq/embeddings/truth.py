"""What the synthetic generator knows about the codes, as labels and pairs for the scores.

Nothing here is typed by hand: the groups are the generator's concept-to-group assignment
(``concept_annotation.csv``, returned by the generator as
:attr:`ehrseq.data.synthetic.Truth.concept_groups`), the lab-disease links are the generator's
:data:`ehrseq.data.synthetic.LAB_EFFECTS`, and the hierarchy is the vocabulary's ``Is a``
relationships.

- :func:`disease_groups`: concept id -> the latent disease (or acute episode, or background
  complaint) the code belongs to; routine care (vitals, visit codes, vaccines) left out.
- :func:`related_pairs`: known related pairs, as in cui2vec's benchmarks: a condition and the
  drugs and procedures of its group (``may_treat``: the generator treats a diagnosis with its
  group's drugs and links them), a condition and each lab the disease shifts (``lab_of``).
- :func:`concept_domains`: the OMOP domain of each concept, for a null drawn from the same
  types.
- :func:`ancestor_table`: an OMOP ``concept_ancestor`` table built from ``Is a``.
"""

from __future__ import annotations

import pandas as pd

from ehrseq.data.concepts import Vocabulary, load_vocabulary
from ehrseq.data.synthetic import LAB_EFFECTS, SyntheticCohort, Truth

__all__ = [
    "concept_groups",
    "disease_groups",
    "related_pairs",
    "concept_domains",
    "ancestor_table",
    "TREATMENT_ROLES",
]

#: Roles of the codes that treat or work up a condition of their group (``may_treat``).
TREATMENT_ROLES = ("drug_clinical", "drug_ingredient", "procedure", "procedure_pcs")

Source = SyntheticCohort | Truth | Vocabulary | None


def _vocabulary(source: Source) -> Vocabulary:
    if isinstance(source, Vocabulary):
        return source
    if isinstance(source, SyntheticCohort) and source.vocabulary is not None:
        return source.vocabulary
    return load_vocabulary()


def concept_groups(source: Source = None) -> pd.DataFrame:
    """The generator's concept-to-group assignment: ``concept_id``, ``group``, ``role``.

    Args:
        source: a cohort or its :class:`~ehrseq.data.synthetic.Truth` (read from
            ``truth.concept_groups``), or a vocabulary (read from its annotation, which is
            where the generator takes it from); ``None`` loads the project's vocabulary.
    """
    if isinstance(source, SyntheticCohort):
        source = source.truth
    if isinstance(source, Truth):
        frame = source.concept_groups
    else:
        frame = _vocabulary(source).annotation
    return frame[["concept_id", "group", "role"]].reset_index(drop=True)


def disease_groups(source: Source = None, exclude: tuple[str, ...] = ("routine",)) -> pd.Series:
    """Concept id -> group, for every annotated concept outside ``exclude`` (a ``pd.Series``)."""
    groups = concept_groups(source)
    groups = groups.loc[~groups["group"].isin(exclude)]
    return groups.set_index("concept_id")["group"].rename("group")


def related_pairs(source: Source = None) -> pd.DataFrame:
    """Known related code pairs: ``concept_id_1`` (a condition), ``concept_id_2``, ``relation``.

    ``may_treat``: a condition and each drug or procedure of its group (:data:`TREATMENT_ROLES`).
    ``lab_of``: a condition and each lab that its disease shifts in the generator
    (:data:`ehrseq.data.synthetic.LAB_EFFECTS`, matched on the LOINC code).
    """
    vocab = _vocabulary(source)
    groups = concept_groups(source)
    cond = groups.loc[groups["role"] == "condition", ["concept_id", "group"]]
    treat = groups.loc[groups["role"].isin(TREATMENT_ROLES), ["concept_id", "group"]]
    may_treat = cond.merge(treat, on="group", suffixes=("_1", "_2"))
    concept = vocab.concept
    loinc = concept.loc[concept["vocabulary_id"] == "LOINC"].set_index("concept_code")["concept_id"]
    labs = pd.DataFrame(
        [
            (int(loinc[code]), disease)
            for code, effects in LAB_EFFECTS.items()
            if code in loinc.index
            for disease in effects
        ],
        columns=["concept_id_2", "group"],
    )
    lab_of = cond.rename(columns={"concept_id": "concept_id_1"}).merge(labs, on="group")
    out = pd.concat(
        [
            may_treat[["concept_id_1", "concept_id_2"]].assign(relation="may_treat"),
            lab_of[["concept_id_1", "concept_id_2"]].assign(relation="lab_of"),
        ],
        ignore_index=True,
    )
    return out.drop_duplicates(["concept_id_1", "concept_id_2"], ignore_index=True)


def concept_domains(source: Source = None) -> pd.Series:
    """Concept id -> OMOP ``domain_id`` (``Condition``, ``Drug``, ...), for every concept."""
    concept = _vocabulary(source).concept
    return concept.set_index("concept_id")["domain_id"]


def ancestor_table(source: Source = None) -> pd.DataFrame:
    """An OMOP ``concept_ancestor`` table: the transitive closure of ``Is a``.

    Columns ``ancestor_concept_id``, ``descendant_concept_id``, ``min_levels_of_separation``,
    ``max_levels_of_separation``, with a row ``(c, c, 0, 0)`` for every concept in a
    relationship, as OMOP has.
    """
    rel = _vocabulary(source).relationship
    isa = rel.loc[rel["relationship_id"] == "Is a", ["concept_id_1", "concept_id_2"]]
    isa = isa.rename(columns={"concept_id_1": "descendant_concept_id", "concept_id_2": "a"})
    nodes = pd.unique(pd.concat([isa["descendant_concept_id"], isa["a"]]))
    level = pd.DataFrame({"ancestor_concept_id": nodes, "descendant_concept_id": nodes, "lv": 0})
    frames = [level]
    while len(level):
        up = level.merge(
            isa.rename(columns={"descendant_concept_id": "ancestor_concept_id"}),
            on="ancestor_concept_id",
        )
        level = pd.DataFrame(
            {
                "ancestor_concept_id": up["a"],
                "descendant_concept_id": up["descendant_concept_id"],
                "lv": up["lv"] + 1,
            }
        )
        frames.append(level)
        if len(frames) > 50:
            raise ValueError("ancestor_table: 'Is a' has a cycle")
    allrows = pd.concat(frames, ignore_index=True)
    out = (
        allrows.groupby(["ancestor_concept_id", "descendant_concept_id"])["lv"]
        .agg(["min", "max"])
        .reset_index()
        .rename(columns={"min": "min_levels_of_separation", "max": "max_levels_of_separation"})
    )
    return out.astype("int64")
