"""Concept descriptions from what an OMOP vocabulary holds offline, and per-site value deciles.

MedRep (Kim et al., arXiv 2504.08329) asks an LLM to describe each concept. This module writes
the description from the vocabulary alone, so it needs no network and no licence beyond the
vocabulary's own:

.. code-block:: text

    <name>. Synonyms: <s1>; <s2>. <domain> concept, <vocabulary>, <concept class>.
    Is a: <nearest ancestor>; <next>; ...

Ancestors come from ``concept_ancestor`` (nearest first, by ``min_levels_of_separation``); when
that table is absent or empty -- as in Eunomia's Synthea27Nj -- they are the transitive closure
of the ``Is a`` rows of ``concept_relationship`` (breadth first, up to ``max_depth`` levels).
Ancestors whose id is not in ``concept`` have no name and are left out (counted).

Measurement concepts with numeric values get ten pseudo-concepts, ``"<name> (decile k)"``,
``k = 1..10`` (``k = q + 1`` for :class:`ehrseq.data.vocab.Vocab`'s ``q0..q9``). Their cut
points are fitted **per site** on that site's measurement table (:func:`fit_deciles`), as in
MedRep's ``create_trajectory.py``, so a decile is site-relative. A decile's concept id is
negative, :func:`decile_concept_id` ``= -(concept_id * 100 + k)``, so it can never collide with
an OMOP concept id (all positive).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "ConceptTables",
    "read_concept_tables",
    "SiteDeciles",
    "fit_deciles",
    "decile_concept_id",
    "concept_ancestors",
    "concept_descriptions",
]

_TABLES = ("concept", "concept_relationship", "concept_ancestor", "concept_synonym")
_CONCEPT_COLUMNS = ("concept_id", "concept_name", "domain_id", "vocabulary_id", "concept_class_id")
N_DECILES = 10


@dataclass
class ConceptTables:
    """The OMOP vocabulary tables a description needs (missing tables are empty frames).

    Args:
        concept: ``concept`` (at least ``concept_id, concept_name, domain_id, vocabulary_id,
            concept_class_id``).
        relationship: ``concept_relationship`` (``concept_id_1, concept_id_2,
            relationship_id``).
        ancestor: ``concept_ancestor`` (``ancestor_concept_id, descendant_concept_id,
            min_levels_of_separation``), possibly empty.
        synonym: ``concept_synonym`` (``concept_id, concept_synonym_name``), possibly empty.
    """

    concept: pd.DataFrame
    relationship: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(
            {"concept_id_1": [], "concept_id_2": [], "relationship_id": []}
        )
    )
    ancestor: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(
            {"ancestor_concept_id": [], "descendant_concept_id": [], "min_levels_of_separation": []}
        )
    )
    synonym: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame({"concept_id": [], "concept_synonym_name": []})
    )

    def __post_init__(self) -> None:
        missing = set(_CONCEPT_COLUMNS) - set(self.concept.columns)
        if missing:
            raise ValueError(f"ConceptTables: concept lacks columns {sorted(missing)}")
        if self.concept["concept_id"].duplicated().any():
            dup = self.concept.loc[self.concept["concept_id"].duplicated(), "concept_id"]
            raise ValueError(f"ConceptTables: concept ids repeat, e.g. {dup.head(5).tolist()}")
        for name, frame, cols in (
            ("concept_relationship", self.relationship, ("concept_id_1", "concept_id_2")),
            ("concept_ancestor", self.ancestor, ("ancestor_concept_id", "descendant_concept_id")),
            ("concept_synonym", self.synonym, ("concept_id", "concept_synonym_name")),
        ):
            lack = set(cols) - set(frame.columns)
            if lack:
                raise ValueError(f"ConceptTables: {name} lacks columns {sorted(lack)}")


def _read_table(folder: Path, name: str) -> pd.DataFrame | None:
    for suffix in (".parquet", ".csv"):
        path = folder / f"{name}{suffix}"
        if path.is_file():
            if suffix == ".parquet":
                return pd.read_parquet(path)
            return pd.read_csv(path, keep_default_na=False, na_values={"concept_id": []})
    return None


def read_concept_tables(folder: str | Path) -> ConceptTables:
    """Read ``concept`` (required), ``concept_relationship``, ``concept_ancestor`` and
    ``concept_synonym`` (optional) from a folder of ``.parquet`` or ``.csv`` files.

    Works on the shipped vocabulary (``data/vocabulary``, CSV, no ancestor or synonym table)
    and on the Eunomia samples (parquet).

    Raises:
        ValueError: if the folder has no ``concept`` table.
    """
    folder = Path(folder)
    frames = {name: _read_table(folder, name) for name in _TABLES}
    if frames["concept"] is None:
        raise ValueError(f"read_concept_tables: no concept.parquet or concept.csv in {folder}")
    kwargs = {"concept": frames["concept"]}
    for key, name in (
        ("relationship", "concept_relationship"),
        ("ancestor", "concept_ancestor"),
        ("synonym", "concept_synonym"),
    ):
        if frames[name] is not None:
            kwargs[key] = frames[name]
    return ConceptTables(**kwargs)


def decile_concept_id(concept_id: int | np.ndarray, k: int | np.ndarray) -> np.ndarray:
    """The pseudo-concept id of decile ``k`` (1..10) of a measurement: ``-(concept_id*100+k)``.

    Raises:
        ValueError: if a ``k`` is outside 1..10 or a concept id is not positive.
    """
    cid = np.asarray(concept_id, dtype=np.int64)
    kk = np.asarray(k, dtype=np.int64)
    if ((kk < 1) | (kk > N_DECILES)).any():
        raise ValueError(f"decile_concept_id: k must be in 1..{N_DECILES}")
    if (cid <= 0).any():
        raise ValueError("decile_concept_id: concept ids must be positive")
    return -(cid * 100 + kk)


@dataclass(frozen=True)
class SiteDeciles:
    """Decile cut points of each measurement concept at one site.

    Attributes:
        site: a label for the site the cuts were fitted on.
        cuts: concept id -> the 9 increasing cut points (10 %, ..., 90 % quantiles).
        counts: concept id -> number of numeric values the cuts were fitted on.
        n_skipped: concepts with values but fewer than ``min_count`` of them (no deciles).
    """

    site: str
    cuts: dict[int, np.ndarray]
    counts: dict[int, int]
    n_skipped: int

    @property
    def concept_ids(self) -> list[int]:
        return sorted(self.cuts)

    def decile(self, concept_id: int, values: np.ndarray) -> np.ndarray:
        """Decile ``k`` (1..10) of each value under this site's cuts (``q0`` -> 1).

        Raises:
            ValueError: if the site has no deciles for ``concept_id``.
        """
        if concept_id not in self.cuts:
            raise ValueError(f"SiteDeciles({self.site}): no deciles for concept {concept_id}")
        return np.searchsorted(self.cuts[concept_id], np.asarray(values, float), "right") + 1


def fit_deciles(measurement: pd.DataFrame, site: str = "site", min_count: int = 10) -> SiteDeciles:
    """Fit decile cut points per measurement concept on one site's ``measurement`` table.

    The cuts are NumPy's linear-interpolation quantiles at 0.1, ..., 0.9 of the non-missing
    ``value_as_number`` of each ``measurement_concept_id`` (as :class:`ehrseq.data.vocab.Vocab`
    fits them), kept only when a concept has at least ``min_count`` values (MedRep: 10).
    Concept id 0 (unmapped) is ignored.

    Raises:
        ValueError: if a column is missing or ``min_count < 1``.
    """
    need = {"measurement_concept_id", "value_as_number"}
    if need - set(measurement.columns):
        raise ValueError(
            f"fit_deciles: measurement lacks {sorted(need - set(measurement.columns))}"
        )
    if min_count < 1:
        raise ValueError("fit_deciles: min_count must be >= 1")
    m = measurement[["measurement_concept_id", "value_as_number"]].dropna()
    m = m.loc[m["measurement_concept_id"] != 0]
    probs = np.arange(1, N_DECILES) / N_DECILES
    cuts: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    skipped = 0
    for cid, vals in m.groupby("measurement_concept_id")["value_as_number"]:
        v = vals.to_numpy(np.float64)
        if len(v) < min_count:
            skipped += 1
            continue
        cuts[int(cid)] = np.quantile(v, probs)
        counts[int(cid)] = len(v)
    return SiteDeciles(site, cuts, counts, skipped)


def concept_ancestors(tables: ConceptTables, max_depth: int = 6) -> pd.DataFrame:
    """Ancestors of every concept, nearest first: ``concept_id, ancestor_id, level``.

    From ``concept_ancestor`` (``level = min_levels_of_separation``, self rows dropped) when it
    has rows, else the breadth-first closure of ``Is a`` edges up to ``max_depth`` levels.
    """
    anc = tables.ancestor
    if len(anc):
        out = pd.DataFrame(
            {
                "concept_id": anc["descendant_concept_id"].astype(np.int64),
                "ancestor_id": anc["ancestor_concept_id"].astype(np.int64),
                "level": anc["min_levels_of_separation"].astype(np.int64),
            }
        )
        out = out.loc[(out["level"] > 0) & (out["concept_id"] != out["ancestor_id"])]
        return out.sort_values(["concept_id", "level", "ancestor_id"], ignore_index=True)
    rel = tables.relationship
    isa = rel.loc[rel["relationship_id"] == "Is a", ["concept_id_1", "concept_id_2"]]
    isa = isa.astype(np.int64).drop_duplicates()
    isa = isa.loc[isa["concept_id_1"] != isa["concept_id_2"]]
    parents = isa.rename(columns={"concept_id_1": "via", "concept_id_2": "ancestor_id"})
    frontier = isa.rename(columns={"concept_id_1": "concept_id", "concept_id_2": "ancestor_id"})
    found = [frontier.assign(level=1)]
    seen = frontier
    for level in range(2, max_depth + 1):
        step = frontier.rename(columns={"ancestor_id": "via"}).merge(parents, on="via")
        step = step[["concept_id", "ancestor_id"]].drop_duplicates()
        step = step.loc[step["concept_id"] != step["ancestor_id"]]
        new = step.merge(seen, how="left", indicator=True)
        new = new.loc[new["_merge"] == "left_only", ["concept_id", "ancestor_id"]]
        if new.empty:
            break
        found.append(new.assign(level=level))
        seen = pd.concat([seen, new], ignore_index=True)
        frontier = new
    out = pd.concat(found, ignore_index=True)
    return out.sort_values(["concept_id", "level", "ancestor_id"], ignore_index=True)


def concept_descriptions(
    tables: ConceptTables,
    deciles: SiteDeciles | None = None,
    *,
    max_ancestors: int = 5,
    max_synonyms: int = 3,
    max_depth: int = 6,
) -> pd.DataFrame:
    """One short description string per concept (and per decile of a measured concept).

    Args:
        tables: the vocabulary tables (:func:`read_concept_tables`).
        deciles: one site's deciles (:func:`fit_deciles`); each of its concepts that is in
            ``tables.concept`` gets ten rows ``"<name> (decile k)"`` after its own row.
        max_ancestors: names of at most this many ancestors, nearest first.
        max_synonyms: at most this many synonyms (those equal to the name are dropped).
        max_depth: levels of ``Is a`` closure when ``concept_ancestor`` is empty.

    Returns:
        A frame with ``concept_id`` (int64; negative for deciles), ``parent_concept_id``
        (the measured concept of a decile, else equal to ``concept_id``), ``decile`` (1..10,
        0 for a concept), ``concept_name`` and ``description``, in ``concept`` order. Its
        ``attrs`` hold ``n_ancestor_rows_unnamed`` (ancestor ids absent from ``concept``) and
        ``n_decile_concepts_unknown`` (decile concepts absent from ``concept``).
    """
    c = tables.concept.reset_index(drop=True)
    ids = c["concept_id"].astype(np.int64).to_numpy()
    names = c["concept_name"].astype(str)
    name_of = pd.Series(names.to_numpy(), index=ids)

    anc = concept_ancestors(tables, max_depth=max_depth)
    anc = anc.loc[anc["concept_id"].isin(ids)]
    named = anc["ancestor_id"].isin(ids)
    n_unnamed = int((~named).sum())
    anc = anc.loc[named].assign(name=lambda d: name_of.reindex(d["ancestor_id"]).to_numpy())
    anc = anc.groupby("concept_id", sort=False).head(max_ancestors)
    anc_text = anc.groupby("concept_id", sort=False)["name"].agg("; ".join)

    syn = tables.synonym
    syn_text = pd.Series(dtype=str)
    if len(syn):
        s = pd.DataFrame(
            {
                "concept_id": syn["concept_id"].astype(np.int64),
                "name": syn["concept_synonym_name"].astype(str).str.strip(),
            }
        )
        s = s.loc[s["concept_id"].isin(ids)].drop_duplicates()
        same = s["name"].str.lower() == name_of.reindex(s["concept_id"]).str.lower().to_numpy()
        s = s.loc[~same & (s["name"] != "")]
        syn_text = s.groupby("concept_id", sort=False).head(max_synonyms)
        syn_text = syn_text.groupby("concept_id", sort=False)["name"].agg("; ".join)

    def clean(col: str) -> pd.Series:
        return c[col].fillna("").astype(str).str.strip()

    syn_part = syn_text.reindex(ids).fillna("").to_numpy()
    anc_part = anc_text.reindex(ids).fillna("").to_numpy()
    kind = (
        clean("domain_id")
        + " concept, "
        + clean("vocabulary_id")
        + ", "
        + clean("concept_class_id")
    )
    text = names + "."
    text = text + np.where(syn_part != "", " Synonyms: " + syn_part + ".", "")
    text = text + " " + kind + "."
    text = text + np.where(anc_part != "", " Is a: " + anc_part + ".", "")
    out = pd.DataFrame(
        {
            "concept_id": ids,
            "parent_concept_id": ids,
            "decile": np.zeros(len(ids), dtype=np.int64),
            "concept_name": names.to_numpy(),
            "description": text.to_numpy(),
        }
    )
    n_unknown = 0
    if deciles is not None:
        known = [cid for cid in deciles.concept_ids if cid in name_of.index]
        n_unknown = len(deciles.concept_ids) - len(known)
        if known:
            base = np.repeat(np.asarray(known, dtype=np.int64), N_DECILES)
            k = np.tile(np.arange(1, N_DECILES + 1), len(known))
            dnames = [f"{name_of[b]} (decile {j})" for b, j in zip(base, k)]
            rows = pd.DataFrame(
                {
                    "concept_id": decile_concept_id(base, k),
                    "parent_concept_id": base,
                    "decile": k,
                    "concept_name": dnames,
                    "description": dnames,
                }
            )
            order = {int(b): i for i, b in enumerate(ids)}
            out = pd.concat([out, rows], ignore_index=True)
            pos = out["parent_concept_id"].map(order).to_numpy()
            out = out.iloc[np.lexsort((out["decile"].to_numpy(), pos))].reset_index(drop=True)
    out.attrs["n_ancestor_rows_unnamed"] = n_unnamed
    out.attrs["n_decile_concepts_unknown"] = n_unknown
    return out
