"""The project's own synthetic vocabulary (``data/vocabulary/``), read as OMOP tables.

The vocabulary was written by hand for this book (it is never extracted from a licensed OMOP
vocabulary or from the shared samples): real codes in real code systems (ICD-10-CM, SNOMED CT,
RxNorm, LOINC, CPT-4, ICD-10-PCS, ATC, UCUM) with local concept ids above 2,000,000,000, laid
out as OMOP ``concept`` and ``concept_relationship`` tables, plus ``concept_annotation`` that
assigns each clinical concept to the latent group (disease, acute episode, background, routine)
the synthetic generator uses. The annotation is ground truth, never shown to a model.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from ehrseq.config import env

__all__ = ["data_dir", "load_vocabulary", "Vocabulary"]


def data_dir() -> Path:
    """The project's ``data/`` folder: ``EHRSEQ_DATA_DIR`` if set, else the repository's.

    Raises:
        ValueError: if the folder (or its ``vocabulary/`` subfolder) cannot be found.
    """
    folder = env("EHRSEQ_DATA_DIR")
    path = Path(folder) if folder else Path(__file__).resolve().parents[3] / "data"
    if not (path / "vocabulary").is_dir():
        raise ValueError(
            f"cannot find the ehrseq data folder at {path} (expected a 'vocabulary' subfolder); "
            "install ehrseq editable from a clone (pip install -e .) or set EHRSEQ_DATA_DIR"
        )
    return path


class Vocabulary:
    """The synthetic vocabulary: ``concept``, ``concept_relationship`` and ``annotation`` frames.

    ``annotation`` has one row per clinical concept with its ``group`` (e.g.
    ``type2_diabetes``) and ``role`` (``condition``, ``condition_source``, ``drug_clinical``,
    ``drug_ingredient``, ``measurement``, ``procedure``, ...), and for measurements the unit and
    reference distribution (``ref_mean``, ``ref_sd``, ``min_value``, ``max_value``, ``decimals``).
    """

    def __init__(
        self, concept: pd.DataFrame, relationship: pd.DataFrame, annotation: pd.DataFrame
    ) -> None:
        self.concept = concept
        self.relationship = relationship
        self.annotation = annotation.merge(
            concept[["concept_id", "concept_code", "vocabulary_id", "concept_name"]],
            on="concept_id",
            how="left",
            validate="one_to_one",
        )
        if self.annotation["concept_code"].isna().any():
            row = self.annotation.loc[self.annotation["concept_code"].isna()].iloc[0]
            raise ValueError(
                f"concept_annotation.concept_id {row['concept_id']} is not in concept.csv"
            )

    def ids(self, group: str, role: str) -> list[int]:
        """Concept ids of one group and role, in file order (empty list if none)."""
        a = self.annotation
        return a.loc[(a["group"] == group) & (a["role"] == role), "concept_id"].astype(int).tolist()

    def by_code(self, vocabulary_id: str, code: str) -> int | None:
        """The concept id of a code in a vocabulary, or ``None`` when the vocabulary lacks it."""
        c = self.concept
        hit = c.loc[
            (c["vocabulary_id"] == vocabulary_id) & (c["concept_code"] == code), "concept_id"
        ]
        return int(hit.iloc[0]) if len(hit) else None

    def maps_to(self) -> pd.Series:
        """``Maps to`` as a Series: source concept id -> standard concept id."""
        r = self.relationship
        m = r.loc[r["relationship_id"] == "Maps to", ["concept_id_1", "concept_id_2"]]
        return m.set_index("concept_id_1")["concept_id_2"]

    def parents(self) -> pd.Series:
        """``Is a`` as a Series indexed by child id (a child may have several parents)."""
        r = self.relationship
        m = r.loc[r["relationship_id"] == "Is a", ["concept_id_1", "concept_id_2"]]
        return m.set_index("concept_id_1")["concept_id_2"]

    @property
    def groups(self) -> list[str]:
        return sorted(self.annotation["group"].unique())


@functools.cache
def _read(path: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    folder = Path(path)
    concept = pd.read_csv(
        folder / "concept.csv",
        dtype={"concept_code": str, "standard_concept": str, "invalid_reason": str},
        keep_default_na=False,
        na_values={"concept_id": []},
    )
    relationship = pd.read_csv(folder / "concept_relationship.csv", keep_default_na=False)
    annotation = pd.read_csv(folder / "concept_annotation.csv")
    return concept, relationship, annotation


def load_vocabulary(folder: str | Path | None = None) -> Vocabulary:
    """Read the synthetic vocabulary from ``folder`` (default ``data_dir() / "vocabulary"``).

    Raises:
        ValueError: if a file is missing or the annotation names an unknown concept.
    """
    folder = Path(folder) if folder is not None else data_dir() / "vocabulary"
    for name in ("concept.csv", "concept_relationship.csv", "concept_annotation.csv"):
        if not (folder / name).is_file():
            raise ValueError(f"vocabulary file {folder / name} is missing")
    concept, relationship, annotation = _read(str(folder.resolve()))
    return Vocabulary(concept.copy(), relationship.copy(), annotation.copy())
