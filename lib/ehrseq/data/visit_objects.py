r"""Diagnosis objects: each visit as a set of diagnoses, each with the treatments it led to.

MiME (Choi et al., 2018) reads a visit not as a bag of codes but as a set of **diagnosis
objects**: a diagnosis :math:`d_i` together with the drugs :math:`rx_{i1}, rx_{i2}, \dots`
and procedures :math:`pr_{i1}, \dots` that were ordered *because of* it. This module builds
those objects from OMOP tables and pads them into the tensors of
:class:`~ehrseq.models.mime.MiME`:

.. math::
    \text{patient} = (v_1, \dots, v_T), \qquad
    v_t = \{(d_i,\ \{rx_{ij}\}_j,\ \{pr_{ik}\}_k)\}_i

Where the links come from (``links=``):

- ``"true"``: the generator's ``linked_condition_occurrence_id`` on every drug and procedure
  row (:class:`~ehrseq.data.synthetic.SyntheticCohort`, before
  :meth:`~ehrseq.data.synthetic.SyntheticCohort.omop_tables` drops it): the treatment joins
  the object of the condition row it points at.
- ``"visit"``: plain OMOP, where the reason for an order is not recorded. Every treatment of
  a visit is linked to **every** diagnosis of the visit (visit co-occurrence). This is an
  approximation, not the truth: a visit with a diabetes and a pneumonia diagnosis gives both
  objects both the metformin and the antibiotic, so the objects of one visit share their
  treatments and MiME's interaction term cannot tell which diagnosis a treatment belongs to
  (the author's answer for data without links is GCT, mime#1).

An object is one distinct diagnosis concept per visit: condition rows of the same concept at
the same visit merge into one object (their treatments are united; counted as
``duplicate_diagnoses_merged``); a treatment concept appears once per object.

Bad input is counted in :class:`ObjectReport`, never raised: condition or treatment rows
whose ids do not parse, rows without a visit, visits with treatments but no diagnosis (the
visit has no object, so it is left out), treatment rows without a link (``"true"``: routine
care such as visit codes carries none by design), links that point at a missing condition row,
and links to a condition of another visit.

Padding (:func:`pad_visit_objects`) follows the original MiME's limits (its ``main()``:
``max_dx_per_visit=22``, ``max_rx_per_dx=17``, ``max_pr_per_dx=10``), plus an optional cap on
visits (the most recent are kept), and counts what each limit cut. Codes are indices of an
:class:`ObjectVocab` fitted on training objects only: 0 is padding, 1 is unknown.

:func:`pad_visit_graphs` gives GCT's input instead: one graph per visit, its diagnoses, its
treatments (links unknown) and its labs (the distinct measurement concepts of the visit,
``VisitObjects.labs``), with the true links as a mask to score attention against.

:func:`read_mime_seqs` reads the original MiME input (a nested list ``patients -> visits ->
[dx, [rx...], [pr...]]``) from JSON, or from a pickle through an unpickler that refuses every
global, so a pickle can only yield lists, tuples, dicts, numbers, strings and ``None``, and
never runs code while it is read.

Reference:
    Choi, E., Xiao, C., Stewart, W. F., Sun, J. (2018). MiME: Multilevel medical embedding of
    electronic health records for predictive healthcare. *NeurIPS* 31, 4547-4557.
    Input format: the README of ``mp2893/mime``.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

__all__ = [
    "LINK_COLUMN",
    "ObjectLimits",
    "ObjectReport",
    "ObjectVocab",
    "VisitObjects",
    "UnsafePickleError",
    "visit_objects",
    "visit_objects_from_cdm",
    "pad_visit_objects",
    "read_mime_seqs",
    "mime_seqs_to_objects",
    "pad_visit_graphs",
    "treatment_index",
    "before_prediction_time",
    "link_agreement",
    "take_persons",
    "take_graph_persons",
    "trim_graphs",
]

LINK_COLUMN = "linked_condition_occurrence_id"
PAD, UNK = 0, 1
KINDS = ("drug", "procedure")
_TREATMENT_TABLES = {
    "drug": ("drug_exposure", "drug_exposure_id", "drug_concept_id"),
    "procedure": ("procedure_occurrence", "procedure_occurrence_id", "procedure_concept_id"),
}


# ---------------------------------------------------------------------------------------------
# Objects from OMOP tables
# ---------------------------------------------------------------------------------------------


@dataclass
class ObjectReport:
    """What building the objects kept, merged and left out, row by row (never raised).

    Attributes:
        counts: name -> number. Rows read per table (``rows_condition_occurrence``, ...),
            ``bad_id_<table>`` (an id or concept that does not parse), ``no_visit_<table>``,
            ``visits_without_diagnosis`` and ``treatments_in_visits_without_diagnosis``,
            ``unlinked_<kind>``, ``dangling_link_<kind>`` (the link names no condition row),
            ``cross_visit_link_<kind>`` (the link names a condition of another visit),
            ``duplicate_diagnoses_merged``, and the result: ``persons``, ``visits``,
            ``objects``, ``links_drug``, ``links_procedure``.
    """

    links: str
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, n: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + int(n)

    def frame(self) -> pd.DataFrame:
        """The counts as a two-column table."""
        return pd.DataFrame({"count": self.counts}).rename_axis("what").reset_index()


@dataclass
class VisitObjects:
    """Diagnosis objects in long form: one row per object, one row per object-treatment link.

    Attributes:
        objects: ``object_id`` (0..n-1, in order), ``person_id``, ``visit_occurrence_id``,
            ``visit_date``, ``dx`` (condition concept id); sorted by person, visit date, visit
            id, then first appearance of the diagnosis.
        links: ``object_id``, ``kind`` (``"drug"`` or ``"procedure"``), ``concept_id``; in
            order of appearance within each object, one row per distinct concept.
        report: the :class:`ObjectReport`.
        labs: ``person_id``, ``visit_occurrence_id``, ``concept_id``: the distinct measurement
            concepts of each visit that has an object (GCT's lab nodes; MiME does not read
            them); empty without a measurement table.
    """

    objects: pd.DataFrame
    links: pd.DataFrame
    report: ObjectReport
    labs: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(
            {
                "person_id": pd.Series(dtype=np.int64),
                "visit_occurrence_id": pd.Series(dtype=np.int64),
                "concept_id": pd.Series(dtype=np.int64),
            }
        )
    )

    def person_ids(self) -> np.ndarray:
        """The persons with at least one object, in order."""
        return self.objects["person_id"].drop_duplicates().to_numpy()

    def subset(self, person_ids: Sequence[int] | np.ndarray) -> VisitObjects:
        """The objects of these persons only (object ids renumbered; report shared)."""
        keep = self.objects[self.objects["person_id"].isin(np.asarray(person_ids))]
        new_id = pd.Series(np.arange(len(keep)), index=keep["object_id"].to_numpy())
        links = self.links[self.links["object_id"].isin(new_id.index)].copy()
        links["object_id"] = new_id.loc[links["object_id"].to_numpy()].to_numpy()
        objects = keep.assign(object_id=np.arange(len(keep))).reset_index(drop=True)
        labs = self.labs[self.labs["person_id"].isin(np.asarray(person_ids))]
        return VisitObjects(
            objects, links.reset_index(drop=True), self.report, labs.reset_index(drop=True)
        )

    def nested(self) -> list[list[list[tuple[int, list[int], list[int]]]]]:
        """The original MiME nested list ``patients -> visits -> (dx, [rx], [pr])`` (concept ids)."""
        groups = {
            k: g.groupby("object_id", sort=False)["concept_id"].agg(list)
            for k, g in self.links.groupby("kind")
        }
        empty = pd.Series(dtype=object)
        rx, pr = groups.get("drug", empty), groups.get("procedure", empty)
        out: list = []
        for _, person in self.objects.groupby("person_id", sort=False):
            visits = []
            for _, visit in person.groupby("visit_occurrence_id", sort=False):
                visits.append(
                    [
                        (int(d), [int(c) for c in rx.get(o, [])], [int(c) for c in pr.get(o, [])])
                        for o, d in zip(visit["object_id"], visit["dx"])
                    ]
                )
            out.append(visits)
        return out


def _ids(frame: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    """Columns as nullable Int64; a value that does not parse becomes NA."""
    out = pd.DataFrame(index=frame.index)
    for c in cols:
        if c in frame:
            num = pd.to_numeric(frame[c], errors="coerce")
            whole = num.notna() & (num == np.floor(num.fillna(0)))
            out[c] = num.where(whole).astype("Int64")
        else:
            out[c] = pd.array([pd.NA] * len(frame), dtype="Int64")
    return out


def _bad_rows(raw: pd.DataFrame, parsed: pd.DataFrame, cols: Sequence[str]) -> pd.Series:
    """Rows where a column that held a value did not parse as an integer id."""
    bad = pd.Series(False, index=raw.index)
    for c in cols:
        if c in raw:
            bad |= raw[c].notna() & parsed[c].isna()
    return bad


def visit_objects(
    tables: Mapping[str, pd.DataFrame],
    links: str = "visit",
) -> VisitObjects:
    r"""The diagnosis objects of every visit, from OMOP tables.

    .. math::
        o = (d,\ \{rx : \ell(rx) = d\},\ \{pr : \ell(pr) = d\}), \qquad
        \ell(x) = \begin{cases}
          \text{the row named by } x\text{'s link} & \text{links="true"}\\
          \text{every diagnosis of } x\text{'s visit} & \text{links="visit"}
        \end{cases}

    Args:
        tables: ``condition_occurrence`` (``condition_occurrence_id``, ``person_id``,
            ``condition_concept_id``, ``visit_occurrence_id``, ``condition_start_date``), and
            when present ``drug_exposure``, ``procedure_occurrence`` (their id, person,
            concept and visit columns, plus ``linked_condition_occurrence_id`` for
            ``links="true"``) and ``visit_occurrence`` (``visit_start_date`` orders visits;
            without it the earliest condition date of the visit does). Ids may be strings
            (a CSV read as text): what does not parse is counted.
        links: ``"true"`` (the generator's link column) or ``"visit"`` (co-occurrence in the
            visit, an approximation: see the module docstring).

    Returns:
        :class:`VisitObjects`, with an :class:`ObjectReport` of what was left out.

    Raises:
        ValueError: an unknown ``links``, no ``condition_occurrence`` table, or
            ``links="true"`` with no link column in any treatment table.
    """
    if links not in ("true", "visit"):
        raise ValueError(f"links must be 'true' or 'visit', got {links!r}")
    if "condition_occurrence" not in tables:
        raise ValueError("visit_objects needs a condition_occurrence table")
    if links == "true" and not any(
        LINK_COLUMN in tables.get(t[0], pd.DataFrame()) for t in _TREATMENT_TABLES.values()
    ):
        raise ValueError(
            f"links='true' needs the generator's {LINK_COLUMN!r} column on drug_exposure or "
            "procedure_occurrence (SyntheticCohort.tables, not omop_tables()); for plain OMOP "
            "use links='visit'"
        )
    report = ObjectReport(links=links)

    # -- diagnoses ------------------------------------------------------------------------
    raw = tables["condition_occurrence"]
    report.add("rows_condition_occurrence", len(raw))
    cols = ["condition_occurrence_id", "person_id", "condition_concept_id", "visit_occurrence_id"]
    cond = _ids(raw, cols)
    bad = _bad_rows(raw, cond, cols) | cond[cols[:3]].isna().any(axis=1)
    report.add("bad_id_condition_occurrence", bad.sum())
    no_visit = ~bad & cond["visit_occurrence_id"].isna()
    report.add("no_visit_condition_occurrence", no_visit.sum())
    cond["date"] = pd.to_datetime(
        raw.get("condition_start_date", pd.Series(pd.NaT, index=raw.index)), errors="coerce"
    )
    cond["row"] = np.arange(len(cond))
    cond = cond[~bad & ~no_visit]

    # -- visit dates ----------------------------------------------------------------------
    first_date = cond.groupby("visit_occurrence_id")["date"].min()
    if "visit_occurrence" in tables:
        vo = tables["visit_occurrence"]
        vid = _ids(vo, ["visit_occurrence_id"])["visit_occurrence_id"]
        vdate = pd.Series(
            pd.to_datetime(
                vo.get("visit_start_date", pd.Series(pd.NaT, index=vo.index)), errors="coerce"
            ).to_numpy(),
            index=vid.to_numpy(),
        )
        vdate = vdate[vdate.index.notna()]
        vdate = vdate[~vdate.index.duplicated()]
        visit_date = vdate.reindex(first_date.index).fillna(first_date)
    else:
        visit_date = first_date

    # -- objects: one per (visit, diagnosis concept) ------------------------------------------
    cond = cond.sort_values("row")
    key = ["person_id", "visit_occurrence_id", "condition_concept_id"]
    first = cond.drop_duplicates(key)
    report.add("duplicate_diagnoses_merged", len(cond) - len(first))
    obj = first[key + ["row"]].copy()
    obj["visit_date"] = visit_date.reindex(obj["visit_occurrence_id"].to_numpy()).to_numpy()
    obj = obj.sort_values(["person_id", "visit_date", "visit_occurrence_id", "row"])
    obj["object_id"] = np.arange(len(obj))
    # every condition row -> its object
    cond_obj = cond[key + ["condition_occurrence_id"]].merge(
        obj[key + ["object_id"]], on=key, how="left"
    )
    dx_visits = pd.Index(obj["visit_occurrence_id"].unique())

    # -- treatments -----------------------------------------------------------------------
    parts = []
    treated_visits = []
    for kind, (table, id_col, concept_col) in _TREATMENT_TABLES.items():
        if table not in tables:
            continue
        raw = tables[table]
        report.add(f"rows_{table}", len(raw))
        cols = [id_col, "person_id", concept_col, "visit_occurrence_id", LINK_COLUMN]
        t = _ids(raw, cols)
        bad = _bad_rows(raw, t, cols) | t[[id_col, "person_id", concept_col]].isna().any(axis=1)
        report.add(f"bad_id_{table}", bad.sum())
        t["row"] = np.arange(len(t))
        t = t[~bad]
        has_visit = t["visit_occurrence_id"].notna()
        treated_visits.append(t.loc[has_visit, "visit_occurrence_id"])
        no_dx = has_visit & ~t["visit_occurrence_id"].isin(dx_visits)
        report.add("treatments_in_visits_without_diagnosis", no_dx.sum())
        if links == "visit":
            report.add(f"no_visit_{table}", (~has_visit).sum())
            t = t[has_visit & ~no_dx]
            link = t[["visit_occurrence_id", concept_col, "row"]].merge(
                obj[["visit_occurrence_id", "object_id"]], on="visit_occurrence_id"
            )
        else:
            unlinked = t[LINK_COLUMN].isna()
            report.add(f"unlinked_{kind}", unlinked.sum())
            t = t[~unlinked]
            link = t[["visit_occurrence_id", concept_col, LINK_COLUMN, "row"]].merge(
                cond_obj[["condition_occurrence_id", "visit_occurrence_id", "object_id"]],
                left_on=LINK_COLUMN,
                right_on="condition_occurrence_id",
                how="left",
                suffixes=("", "_dx"),
            )
            dangling = link["object_id"].isna()
            report.add(f"dangling_link_{kind}", dangling.sum())
            link = link[~dangling]
            cross = link["visit_occurrence_id"].notna() & (
                link["visit_occurrence_id"] != link["visit_occurrence_id_dx"]
            )
            report.add(f"cross_visit_link_{kind}", cross.sum())
            link = link[~cross]
        link = link.rename(columns={concept_col: "concept_id"})
        link = link.sort_values(["object_id", "row"]).drop_duplicates(["object_id", "concept_id"])
        link["kind"] = kind
        report.add(f"links_{kind}", len(link))
        parts.append(link[["object_id", "kind", "concept_id", "row"]])

    treated = pd.Index(pd.concat(treated_visits).unique()) if treated_visits else pd.Index([])
    report.add("visits_without_diagnosis", len(treated.difference(dx_visits)))
    link_frame = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame({"object_id": [], "kind": [], "concept_id": [], "row": []})
    )
    kind_order = link_frame["kind"].map({k: i for i, k in enumerate(KINDS)})
    link_frame = (
        link_frame.assign(_k=kind_order)
        .sort_values(["object_id", "_k", "row"])
        .drop(columns=["_k", "row"])
        .astype({"object_id": np.int64, "concept_id": np.int64})
        .reset_index(drop=True)
    )
    objects = pd.DataFrame(
        {
            "object_id": obj["object_id"].to_numpy(np.int64),
            "person_id": obj["person_id"].to_numpy(np.int64),
            "visit_occurrence_id": obj["visit_occurrence_id"].to_numpy(np.int64),
            "visit_date": pd.to_datetime(obj["visit_date"]).to_numpy(),
            "dx": obj["condition_concept_id"].to_numpy(np.int64),
        }
    )
    report.add("persons", objects["person_id"].nunique())
    report.add("visits", objects["visit_occurrence_id"].nunique())
    report.add("objects", len(objects))
    labs = None
    if "measurement" in tables:
        raw = tables["measurement"]
        report.add("rows_measurement", len(raw))
        cols = ["person_id", "measurement_concept_id", "visit_occurrence_id"]
        m = _ids(raw, cols)
        bad = _bad_rows(raw, m, cols) | m[cols[:2]].isna().any(axis=1)
        report.add("bad_id_measurement", bad.sum())
        m = m[~bad & m["visit_occurrence_id"].notna()]
        in_dx = m["visit_occurrence_id"].isin(dx_visits)
        report.add("labs_in_visits_without_diagnosis", (~in_dx).sum())
        m = m[in_dx].drop_duplicates(["visit_occurrence_id", "measurement_concept_id"])
        labs = pd.DataFrame(
            {
                "person_id": m["person_id"].to_numpy(np.int64),
                "visit_occurrence_id": m["visit_occurrence_id"].to_numpy(np.int64),
                "concept_id": m["measurement_concept_id"].to_numpy(np.int64),
            }
        )
        report.add("lab_nodes", len(labs))
    if labs is None:
        return VisitObjects(objects, link_frame, report)
    return VisitObjects(objects, link_frame, report, labs)


def visit_objects_from_cdm(cdm, links: str = "visit") -> VisitObjects:
    """:func:`visit_objects` on an OMOP CDM opened with :func:`ehrseq.data.omop.open_cdm`
    (or a path to open), reading only the columns it needs.

    Args:
        cdm: a :class:`~ehrseq.data.omop.Cdm` or a folder / DuckDB file.
        links: as in :func:`visit_objects`.
    """
    from ehrseq.data.omop import open_cdm

    own = not hasattr(cdm, "table")
    if own:
        cdm = open_cdm(cdm)
    wanted = {
        "condition_occurrence": [
            "condition_occurrence_id",
            "person_id",
            "condition_concept_id",
            "visit_occurrence_id",
            "condition_start_date",
        ],
        "visit_occurrence": ["visit_occurrence_id", "visit_start_date"],
        "measurement": ["person_id", "measurement_concept_id", "visit_occurrence_id"],
    }
    for table, id_col, concept_col in _TREATMENT_TABLES.values():
        wanted[table] = [id_col, "person_id", concept_col, "visit_occurrence_id", LINK_COLUMN]
    try:
        tables = {}
        for name, cols in wanted.items():
            if not cdm.has(name):
                continue
            present = cdm.columns(name)
            tables[name] = cdm.table(name, [c for c in cols if c in present])
    finally:
        if own:
            cdm.close()
    return visit_objects(tables, links=links)


# ---------------------------------------------------------------------------------------------
# The leakage cut, and how far co-occurrence links are from the truth
# ---------------------------------------------------------------------------------------------

#: The time column of each table that :func:`before_prediction_time` cuts (the datetime
#: column when the table has it, else the date column).
TIME_COLUMNS = {
    "visit_occurrence": ("visit_start_datetime", "visit_start_date"),
    "condition_occurrence": ("condition_start_datetime", "condition_start_date"),
    "drug_exposure": ("drug_exposure_start_datetime", "drug_exposure_start_date"),
    "procedure_occurrence": ("procedure_datetime", "procedure_date"),
    "measurement": ("measurement_datetime", "measurement_date"),
}


def before_prediction_time(
    tables: Mapping[str, pd.DataFrame], prediction_times: pd.DataFrame
) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    r"""The rows of each table dated strictly before their person's prediction time.

    The same cut as :func:`ehrseq.data.sequences.build_sequences` (:math:`t < t^*_i`, the
    row's datetime column where the table has one, else its date), applied to the OMOP
    tables that :func:`visit_objects` reads, so objects never see the outcome window. A
    treatment dated before :math:`t^*` whose linked condition is dated after it keeps its
    link column; :func:`visit_objects` then counts it as a dangling link.

    Args:
        tables: OMOP tables; those of :data:`TIME_COLUMNS` are cut, the others (``person``,
            ...) are left out.
        prediction_times: ``person_id`` (or ``subject_id``) and ``prediction_time``, one row
            per person.

    Returns:
        ``(tables, dropped)``: the cut tables, and per table the rows dropped
        (``<table>_at_or_after`` and ``<table>_no_prediction_time``: the person has none, or
        the row has no time).

    Raises:
        ValueError: ``prediction_times`` without the columns, or with a person twice.
    """
    id_col = next((c for c in ("person_id", "subject_id") if c in prediction_times), None)
    if id_col is None or "prediction_time" not in prediction_times:
        raise ValueError(
            "prediction_times needs person_id (or subject_id) and prediction_time columns, "
            f"got {list(prediction_times.columns)}"
        )
    if prediction_times[id_col].duplicated().any():
        raise ValueError("prediction_times: a person has several prediction times")
    t_star = pd.Series(
        pd.to_datetime(prediction_times["prediction_time"]).to_numpy(),
        index=prediction_times[id_col].to_numpy(np.int64),
    )
    out: dict[str, pd.DataFrame] = {}
    dropped: dict[str, int] = {}
    for name, (dt_col, date_col) in TIME_COLUMNS.items():
        if name not in tables:
            continue
        frame = tables[name]
        col = dt_col if dt_col in frame else date_col
        if col not in frame or "person_id" not in frame:
            raise ValueError(f"{name} needs person_id and {dt_col} or {date_col}")
        t = pd.to_datetime(frame[col], errors="coerce").to_numpy()
        pid = pd.to_numeric(frame["person_id"], errors="coerce").to_numpy()
        limit = t_star.reindex(pid).to_numpy()  # NaT: no prediction time
        known = ~pd.isna(limit) & ~pd.isna(t)
        before = known & (t < limit)  # a comparison with NaT is False
        dropped[f"{name}_no_prediction_time"] = int((~known).sum())
        dropped[f"{name}_at_or_after"] = int((known & ~before).sum())
        out[name] = frame.loc[before]
    return out, dropped


def link_agreement(truth: VisitObjects, approx: VisitObjects) -> pd.DataFrame:
    r"""How far approximate links (``links="visit"``) are from the true ones, per kind.

    Objects are matched by ``(person_id, visit_occurrence_id, dx)``; a link is an (object,
    treatment concept) pair. Per kind (``drug``, ``procedure``) and for both together:

    .. math::
        \text{precision} = \frac{|L_\text{approx} \cap L_\text{true}|}{|L_\text{approx}|},
        \qquad
        \text{recall} = \frac{|L_\text{approx} \cap L_\text{true}|}{|L_\text{true}|}

    and the share of objects whose treatment set of that kind is exactly the true one.

    Returns:
        One row per kind and ``"all"``: ``true_links``, ``approx_links``, ``shared``,
        ``precision``, ``recall``, ``objects``, ``objects_same`` (count and ``share_same``).
    """
    key = ["person_id", "visit_occurrence_id", "dx"]

    def keyed(vo: VisitObjects) -> pd.DataFrame:
        lk = vo.links.merge(vo.objects[["object_id", *key]], on="object_id")
        return lk[[*key, "kind", "concept_id"]].drop_duplicates()

    t, a = keyed(truth), keyed(approx)
    objects = truth.objects[key].drop_duplicates().merge(approx.objects[key].drop_duplicates())
    rows = []
    for kind in (*KINDS, "all"):
        tk = t if kind == "all" else t[t["kind"] == kind]
        ak = a if kind == "all" else a[a["kind"] == kind]
        shared = len(tk.merge(ak))
        # an object keeps its true set when neither side has a link the other lacks
        both = tk.merge(ak, how="outer", indicator=True)
        differ = both.loc[both["_merge"] != "both", key].drop_duplicates()
        n_differ = len(objects.merge(differ))
        rows.append(
            {
                "kind": kind,
                "true_links": len(tk),
                "approx_links": len(ak),
                "shared": shared,
                "precision": shared / len(ak) if len(ak) else float("nan"),
                "recall": shared / len(tk) if len(tk) else float("nan"),
                "objects": len(objects),
                "objects_same": len(objects) - n_differ,
                "share_same": (len(objects) - n_differ) / len(objects)
                if len(objects)
                else float("nan"),
            }
        )
    return pd.DataFrame(rows).set_index("kind")


# ---------------------------------------------------------------------------------------------
# Vocabulary and padding
# ---------------------------------------------------------------------------------------------


@dataclass
class ObjectVocab:
    """Concept id -> index, one map per kind (``dx``, ``drug``, ``procedure``, and ``lab``
    for GCT's lab nodes).

    Index 0 is padding, 1 an unknown concept (not seen in the objects it was fitted on); the
    rest follow by training frequency (most frequent first, ties by concept id). Fit it on
    training persons only (``vo.subset(train_ids)``), so a test person never adds a code.
    """

    dx: dict[int, int]
    drug: dict[int, int]
    procedure: dict[int, int]
    lab: dict[int, int] = field(default_factory=dict)

    @classmethod
    def fit(cls, vo: VisitObjects) -> ObjectVocab:
        def index(values: pd.Series) -> dict[int, int]:
            counts = values.value_counts()
            order = sorted(counts.index, key=lambda c: (-counts[c], c))
            return {int(c): i + 2 for i, c in enumerate(order)}

        lk = vo.links
        return cls(
            dx=index(vo.objects["dx"]),
            drug=index(lk.loc[lk["kind"] == "drug", "concept_id"]),
            procedure=index(lk.loc[lk["kind"] == "procedure", "concept_id"]),
            lab=index(vo.labs["concept_id"]),
        )

    @property
    def sizes(self) -> tuple[int, int, int]:
        """``(n_dx, n_drug, n_procedure)`` embedding rows, padding and unknown included."""
        return len(self.dx) + 2, len(self.drug) + 2, len(self.procedure) + 2

    @property
    def n_lab(self) -> int:
        """Lab embedding rows (GCT), padding and unknown included; 2 when no labs were seen."""
        return len(self.lab) + 2

    def encode(self, kind: str, concepts: np.ndarray) -> np.ndarray:
        m = pd.Series(getattr(self, kind), dtype=np.int64)
        return m.reindex(np.asarray(concepts, dtype=np.int64)).fillna(UNK).to_numpy(np.int64)


@dataclass(frozen=True)
class ObjectLimits:
    """Padding limits. Defaults: the original MiME ``main()`` (22 diagnoses per visit, 17
    drugs and 10 procedures per diagnosis); ``max_visits=None`` keeps every visit, an integer
    keeps the most recent ones."""

    max_visits: int | None = None
    max_diagnoses: int = 22
    max_drugs: int = 17
    max_procedures: int = 10

    def __post_init__(self) -> None:
        for name in ("max_diagnoses", "max_drugs", "max_procedures"):
            if getattr(self, name) < 1:
                raise ValueError(f"ObjectLimits.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_visits is not None and self.max_visits < 1:
            raise ValueError(f"ObjectLimits.max_visits must be >= 1 or None, got {self.max_visits}")


def pad_visit_objects(
    vo: VisitObjects,
    vocab: ObjectVocab,
    person_ids: Sequence[int] | np.ndarray | None = None,
    limits: ObjectLimits = ObjectLimits(),
) -> tuple[dict, dict[str, int]]:
    r"""Padded MiME tensors of some persons, and counts of what the limits cut.

    Vectorised: ranks within person / visit / object come from ``groupby().cumcount()`` and
    every value is written with one fancy-indexed assignment.

    Args:
        vo: the objects (:func:`visit_objects`, :func:`mime_seqs_to_objects`).
        vocab: an :class:`ObjectVocab` fitted on training persons.
        person_ids: the persons, in the batch's row order (default: every person of ``vo``).
            A person with no object gets no row; they are counted (``persons_without_visits``)
            and the returned ``person_ids`` says which rows there are.
        limits: :class:`ObjectLimits`.

    Returns:
        ``(batch, cuts)``. ``batch`` holds ``dx_codes`` (B, V, D), ``rx_codes`` (B, V, D, R),
        ``pr_codes`` (B, V, D, P) (long, 0 at padding), ``dx_mask``, ``rx_mask``, ``pr_mask``
        (bool, same shapes), ``visit_mask`` (B, V) (real visits first), and as NumPy arrays
        ``person_ids`` (B,) and ``visit_occurrence_ids`` (B, V; -1 at padding). ``cuts`` counts
        ``visits_cut``, ``diagnoses_cut``, ``drugs_cut``, ``procedures_cut`` (beyond the
        limits), ``unknown_dx``/``unknown_drug``/``unknown_procedure`` (mapped to 1) and
        ``persons_without_visits``.

    Shapes:
        V, D, R, P are the most visits of a person, diagnoses of a visit, drugs and procedures
        of a diagnosis in these persons after the cuts (so at most the limits; at least 1).
    """
    objs = vo.objects
    if person_ids is None:
        person_ids = vo.person_ids()
    person_ids = np.asarray(person_ids, dtype=np.int64)
    if len(np.unique(person_ids)) != len(person_ids):
        raise ValueError("person_ids repeat")
    has = np.isin(person_ids, objs["person_id"].to_numpy())
    cuts = {"persons_without_visits": int((~has).sum())}
    person_ids = person_ids[has]
    row_of = pd.Series(np.arange(len(person_ids)), index=person_ids)
    o = objs[objs["person_id"].isin(person_ids)].copy()  # already in order
    # visit rank within person, counted from the last visit so the cap keeps the most recent
    first_in_visit = ~o.duplicated(["person_id", "visit_occurrence_id"])
    o["visit_rank"] = first_in_visit.groupby(o["person_id"]).cumsum() - 1
    n_visits = o.groupby("person_id")["visit_rank"].transform("max") + 1
    keep_v = n_visits.to_numpy() if limits.max_visits is None else limits.max_visits
    o["slot"] = o["visit_rank"] - np.maximum(n_visits - keep_v, 0)
    cuts["visits_cut"] = int((first_in_visit & (o["slot"] < 0)).sum())
    o = o[o["slot"] >= 0]
    o["dx_slot"] = o.groupby(["person_id", "visit_occurrence_id"]).cumcount()
    cuts["diagnoses_cut"] = int((o["dx_slot"] >= limits.max_diagnoses).sum())
    o = o[o["dx_slot"] < limits.max_diagnoses]

    B = len(person_ids)
    V = int(o["slot"].max()) + 1 if len(o) else 1
    D = int(o["dx_slot"].max()) + 1 if len(o) else 1  # at most max_diagnoses
    b = row_of.loc[o["person_id"].to_numpy()].to_numpy()
    v = o["slot"].to_numpy()
    d = o["dx_slot"].to_numpy()
    dx_codes = np.zeros((B, V, D), np.int64)
    dx_codes[b, v, d] = vocab.encode("dx", o["dx"].to_numpy())
    cuts["unknown_dx"] = int((dx_codes[b, v, d] == UNK).sum())
    visit_ids = np.full((B, V), -1, np.int64)
    visit_ids[b, v] = o["visit_occurrence_id"].to_numpy()

    where = pd.DataFrame({"b": b, "v": v, "d": d}, index=o["object_id"].to_numpy())
    batch = {"dx_codes": torch.from_numpy(dx_codes)}
    for kind, short, cap in (
        ("drug", "rx", limits.max_drugs),
        ("procedure", "pr", limits.max_procedures),
    ):
        lk = vo.links[(vo.links["kind"] == kind) & vo.links["object_id"].isin(where.index)]
        slot = lk.groupby("object_id").cumcount().to_numpy()
        cuts[f"{kind}s_cut" if kind == "drug" else "procedures_cut"] = int((slot >= cap).sum())
        lk, slot = lk[slot < cap], slot[slot < cap]
        pos = where.loc[lk["object_id"].to_numpy()]
        width = int(slot.max()) + 1 if len(slot) else 1  # at most the cap
        codes = np.zeros((B, V, D, width), np.int64)
        codes[pos["b"].to_numpy(), pos["v"].to_numpy(), pos["d"].to_numpy(), slot] = vocab.encode(
            kind, lk["concept_id"].to_numpy()
        )
        cuts[f"unknown_{kind}"] = int((codes == UNK).sum())
        batch[f"{short}_codes"] = torch.from_numpy(codes)
    cuts = {k: cuts[k] for k in sorted(cuts)}
    batch["dx_mask"] = batch["dx_codes"] > PAD
    batch["rx_mask"] = batch["rx_codes"] > PAD
    batch["pr_mask"] = batch["pr_codes"] > PAD
    batch["visit_mask"] = batch["dx_mask"].any(-1)
    batch["person_ids"] = person_ids
    batch["visit_occurrence_ids"] = visit_ids
    return batch, cuts


# ---------------------------------------------------------------------------------------------
# The original MiME format, read without running code
# ---------------------------------------------------------------------------------------------


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a Python global (a class or a function): refused, nothing run."""


class _DataOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves no global at all: only lists, tuples, dicts, sets, numbers,
    strings, bytes and ``None`` (built by opcodes, not by calling anything) can come out."""

    def find_class(self, module: str, name: str):  # noqa: D401
        raise UnsafePickleError(
            f"refused: the pickle asks for the global {module}.{name}; a MiME .seqs file holds "
            "only nested lists of integers. Nothing was executed. Convert the file to JSON "
            "(json.dump(seqs, f)) in a trusted environment, or re-pickle plain lists."
        )

    def persistent_load(self, pid):
        raise UnsafePickleError(f"refused: the pickle asks for persistent id {pid!r}")


def _load_data_pickle(data: bytes):
    return _DataOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


def read_mime_seqs(path: str | Path) -> list:
    """Read an original MiME ``.seqs`` (or ``.labels``) file: JSON, or a data-only pickle.

    A file that starts with ``[`` or ``{`` (after whitespace) is JSON; anything else is read
    as a pickle whose globals are all refused (:class:`UnsafePickleError`), so a malicious
    pickle (one whose ``__reduce__`` calls ``os.system``) fails before anything runs. NumPy
    arrays in the pickle are refused too (they need a global): convert them to lists.

    Args:
        path: the file.

    Returns:
        The nested list, as stored (validate and convert it with :func:`mime_seqs_to_objects`).

    Raises:
        UnsafePickleError: the pickle names a global.
        ValueError: the file is neither JSON nor a pickle.
    """
    data = Path(path).read_bytes()
    head = data.lstrip()[:1]
    if head in (b"[", b"{"):
        return json.loads(data.decode("utf-8"))
    try:
        return _load_data_pickle(data)
    except UnsafePickleError:
        raise
    except Exception as err:  # a truncated or foreign file
        raise ValueError(f"{path}: neither JSON nor a readable pickle ({err})") from err


def _int_list(x) -> list[int] | None:
    if not isinstance(x, list | tuple):
        return None
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in x):
        return None
    return list(x)


def mime_seqs_to_objects(seqs: list) -> VisitObjects:
    """The original MiME nested list as :class:`VisitObjects` (person ids 0.., visit ids 0..).

    ``seqs[p][t]`` is visit ``t`` of patient ``p``, a list of ``[dx, [rx...], [pr...]]``
    with integer codes. Malformed entries are counted in the report, never raised:
    ``malformed_patient``, ``malformed_visit``, ``malformed_object`` (skipped), and
    ``empty_visit`` (a visit with no object).

    Raises:
        ValueError: ``seqs`` is not a list.
    """
    if not isinstance(seqs, list):
        raise ValueError(f"MiME seqs must be a list of patients, got {type(seqs).__name__}")
    report = ObjectReport(links="mime")
    rows, link_rows = [], []
    visit_id = 0
    for p, patient in enumerate(seqs):
        if not isinstance(patient, list | tuple):
            report.add("malformed_patient", 1)
            continue
        for visit in patient:
            if not isinstance(visit, list | tuple):
                report.add("malformed_visit", 1)
                continue
            n_before = len(rows)
            seen: set[int] = set()
            for obj in visit:
                ok = isinstance(obj, list | tuple) and len(obj) == 3
                dx = obj[0] if ok else None
                rx, pr = (_int_list(obj[1]), _int_list(obj[2])) if ok else (None, None)
                if (
                    not (isinstance(dx, int) and not isinstance(dx, bool))
                    or rx is None
                    or pr is None
                ):
                    report.add("malformed_object", 1)
                    continue
                if dx in seen:
                    report.add("duplicate_diagnoses_merged", 1)
                    continue
                seen.add(dx)
                oid = len(rows)
                rows.append((oid, p, visit_id, visit_id, dx))
                for kind, codes in (("drug", rx), ("procedure", pr)):
                    for c in dict.fromkeys(codes):
                        link_rows.append((oid, kind, c))
            if len(rows) == n_before:
                report.add("empty_visit", 1)
            visit_id += 1
    objects = pd.DataFrame(
        rows, columns=["object_id", "person_id", "visit_occurrence_id", "visit_date", "dx"]
    ).astype(np.int64)
    objects["visit_date"] = pd.to_datetime(objects["visit_date"], unit="D")
    links = pd.DataFrame(link_rows, columns=["object_id", "kind", "concept_id"]).astype(
        {"object_id": np.int64, "concept_id": np.int64}
    )
    report.add("persons", objects["person_id"].nunique())
    report.add("visits", objects["visit_occurrence_id"].nunique())
    report.add("objects", len(objects))
    return VisitObjects(objects, links, report)


# ---------------------------------------------------------------------------------------------
# Visit graphs (GCT): the diagnoses and treatments of each visit, links unknown
# ---------------------------------------------------------------------------------------------


def treatment_index(vocab: ObjectVocab, kind: str, concepts: np.ndarray) -> np.ndarray:
    """One treatment vocabulary for GCT: drugs keep their index, procedures follow them
    (``n_drug + index``); 0 stays padding. Size: ``n_drug + n_procedure``."""
    idx = vocab.encode(kind, concepts)
    if kind == "procedure":
        idx = np.where(idx > PAD, idx + vocab.sizes[1], PAD)
    return idx


def pad_visit_graphs(
    vo: VisitObjects,
    vocab: ObjectVocab,
    person_ids: Sequence[int] | np.ndarray | None = None,
    truth: VisitObjects | None = None,
    max_dx: int = 50,
    max_tx: int = 50,
    max_lab: int = 50,
) -> tuple[dict, dict[str, int]]:
    r"""One graph per visit for GCT: its distinct diagnoses and treatments (drugs and
    procedures in one vocabulary, :func:`treatment_index`), padded; the true links as a mask.

    The nodes are the visit's diagnoses and every treatment linked to one of them in ``vo``:
    build ``vo`` with ``links="visit"`` so that every treatment of a visit with a diagnosis is
    a node (GCT learns the links; it is not told them). The visit's distinct measurement
    concepts (``vo.labs``) are its lab nodes. At most ``max_dx`` diagnoses, ``max_tx``
    treatments and ``max_lab`` labs per visit (GCT: 50 codes per type); the rest are counted.

    Args:
        vo: objects from :func:`visit_objects` (``links="visit"``).
        vocab: an :class:`ObjectVocab` fitted on training persons.
        person_ids: whose visits (default: all), in order; each person's visits in date order.
        truth: the same cohort's objects with ``links="true"``; when given, ``true_links``
            marks each (diagnosis, treatment) pair of a visit that the truth links.
        max_dx, max_tx, max_lab: node limits per visit.

    Returns:
        ``(graphs, cuts)``: ``dx_codes (N, Dg)``, ``tx_codes (N, Tg)`` (long, 0 at padding),
        ``lab_codes (N, Lg)`` (:attr:`ObjectVocab.lab` indices; one padded column when there
        are no labs), ``dx_mask``, ``tx_mask``, ``lab_mask``, ``true_links (N, Dg, Tg)``
        (bool; all False without ``truth``), and NumPy ``person_ids (N,)``,
        ``visit_occurrence_ids (N,)``, one row per visit; ``cuts`` counts ``dx_cut``,
        ``tx_cut`` and ``lab_cut``.
    """
    if min(max_dx, max_tx, max_lab) < 1:
        raise ValueError(f"max_dx, max_tx, max_lab must be >= 1, got {max_dx}, {max_tx}, {max_lab}")
    sub = vo if person_ids is None else vo.subset(person_ids)
    obj = sub.objects
    if person_ids is not None:  # the caller's person order, visits in date order within
        rank = pd.Series(np.arange(len(person_ids)), index=np.asarray(person_ids))
        obj = obj.assign(_r=rank.loc[obj["person_id"].to_numpy()].to_numpy())
        obj = obj.sort_values(["_r", "object_id"], kind="stable").drop(columns="_r")
    visits = obj.drop_duplicates("visit_occurrence_id")[["person_id", "visit_occurrence_id"]]
    row = pd.Series(np.arange(len(visits)), index=visits["visit_occurrence_id"].to_numpy())
    dx = obj[["visit_occurrence_id", "dx"]].copy()
    dx["slot"] = dx.groupby("visit_occurrence_id").cumcount()
    lk = sub.links.merge(obj[["object_id", "visit_occurrence_id"]], on="object_id")
    lk = lk.drop_duplicates(["visit_occurrence_id", "kind", "concept_id"]).copy()
    lk["slot"] = lk.groupby("visit_occurrence_id").cumcount()
    lab = sub.labs[sub.labs["visit_occurrence_id"].isin(row.index)].copy()
    lab["slot"] = lab.groupby("visit_occurrence_id").cumcount()
    cuts = {
        "dx_cut": int((dx["slot"] >= max_dx).sum()),
        "tx_cut": int((lk["slot"] >= max_tx).sum()),
        "lab_cut": int((lab["slot"] >= max_lab).sum()),
    }
    dx, lk = dx[dx["slot"] < max_dx], lk[lk["slot"] < max_tx]
    lab = lab[lab["slot"] < max_lab]
    Lg = int(lab["slot"].max()) + 1 if len(lab) else 1
    lab_codes = np.zeros((N := len(visits), Lg), np.int64)
    lab_codes[row.loc[lab["visit_occurrence_id"]].to_numpy(), lab["slot"]] = vocab.encode(
        "lab", lab["concept_id"].to_numpy()
    )
    Dg = int(dx["slot"].max()) + 1 if len(dx) else 1
    Tg = int(lk["slot"].max()) + 1 if len(lk) else 1
    dx_codes = np.zeros((N, Dg), np.int64)
    dx_codes[row.loc[dx["visit_occurrence_id"]].to_numpy(), dx["slot"]] = vocab.encode(
        "dx", dx["dx"].to_numpy()
    )
    tx_codes = np.zeros((N, Tg), np.int64)
    for kind in KINDS:
        k = lk[lk["kind"] == kind]
        tx_codes[row.loc[k["visit_occurrence_id"]].to_numpy(), k["slot"]] = treatment_index(
            vocab, kind, k["concept_id"].to_numpy()
        )
    true_links = np.zeros((N, Dg, Tg), bool)
    if truth is not None:
        t = truth.links.merge(
            truth.objects[["object_id", "visit_occurrence_id", "dx"]], on="object_id"
        )
        t = t.merge(dx, on=["visit_occurrence_id", "dx"]).merge(
            lk[["visit_occurrence_id", "kind", "concept_id", "slot"]],
            on=["visit_occurrence_id", "kind", "concept_id"],
            suffixes=("_dx", "_tx"),
        )
        true_links[row.loc[t["visit_occurrence_id"]].to_numpy(), t["slot_dx"], t["slot_tx"]] = True
    out = {
        "dx_codes": torch.from_numpy(dx_codes),
        "tx_codes": torch.from_numpy(tx_codes),
        "lab_codes": torch.from_numpy(lab_codes),
        "true_links": torch.from_numpy(true_links),
        "person_ids": visits["person_id"].to_numpy(),
        "visit_occurrence_ids": visits["visit_occurrence_id"].to_numpy(),
    }
    out["dx_mask"] = out["dx_codes"] > PAD
    out["tx_mask"] = out["tx_codes"] > PAD
    out["lab_mask"] = out["lab_codes"] > PAD
    return out, cuts


# ---------------------------------------------------------------------------------------------
# Batches of some persons (for a DataLoader over persons)
# ---------------------------------------------------------------------------------------------


def take_persons(batch: dict, rows: Sequence[int] | np.ndarray | torch.Tensor) -> dict:
    """The rows ``rows`` of a padded object batch (:func:`pad_visit_objects`), its visit axis
    cut to the most visits among them (real visits come first, so nothing real is lost).

    Returns:
        The tensors of ``batch`` (``dx_codes``, ..., ``visit_mask``) for those rows, in the
        order given; NumPy entries (``person_ids``, ``visit_occurrence_ids``) likewise.

    Raises:
        ValueError: no rows.
    """
    idx = torch.as_tensor(np.asarray(rows), dtype=torch.long)
    if idx.numel() == 0:
        raise ValueError("take_persons: no rows")
    V = max(int(batch["visit_mask"][idx].sum(1).max()), 1)  # visits of the longest row
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = v[idx][:, :V] if v.dim() >= 2 else v[idx]
        elif isinstance(v, np.ndarray):
            out[k] = v[idx.numpy()][:, :V] if v.ndim >= 2 else v[idx.numpy()]
    return out


def take_graph_persons(graphs: dict, person_ids: Sequence[int] | np.ndarray) -> dict:
    """The visit graphs (:func:`pad_visit_graphs`) of some persons, persons in the order
    given (each person's visits stay in date order), for
    :func:`ehrseq.models.gct.visit_sequences`.

    Raises:
        ValueError: a person with no graph.
    """
    wanted = pd.Index(np.asarray(person_ids))
    rank = wanted.get_indexer(graphs["person_ids"])  # (N,), -1: not wanted
    sel = np.flatnonzero(rank >= 0)
    found = np.unique(rank[sel])
    if len(found) != len(wanted):
        missing = wanted.difference(wanted[found])[:5].tolist()
        raise ValueError(f"take_graph_persons: persons without a visit graph, e.g. {missing}")
    sel = sel[np.argsort(rank[sel], kind="stable")]
    idx = torch.from_numpy(sel)
    return {
        k: v[idx] if isinstance(v, torch.Tensor) else v[sel]
        for k, v in graphs.items()
        if isinstance(v, torch.Tensor | np.ndarray)
    }


#: The node axes of a graph batch: each ``<kind>_codes (N, K)`` with its ``<kind>_mask``.
_NODE_KINDS = ("dx", "tx", "lab")


def trim_graphs(
    graphs: dict, rows: Sequence[int] | np.ndarray | torch.Tensor | None = None
) -> dict:
    r"""Some rows (visit graphs) of a graph batch, each node axis cut to the widest of them.

    :func:`pad_visit_graphs` pads every graph to the widest visit of the whole cohort; a
    batch of small visits needs far fewer columns. Real nodes come first in every row, so
    cutting the columns past the widest row of ``rows`` drops only padding:
    ``K' = max(1, max_r sum_k mask[r, k])`` columns remain of each kind. GCT gives the same
    visit vectors either way (padded nodes attend to themselves only;
    ``tests/test_gct.py``), at a cost that grows with the square of the nodes kept.

    Args:
        graphs: a graph batch (:func:`pad_visit_graphs` or :func:`take_graph_persons`); the
            node kinds present among ``dx``, ``tx``, ``lab`` are cut, ``true_links`` to the
            diagnoses and treatments kept.
        rows: the rows to keep, in that order (default: all).

    Shapes:
        ``<kind>_codes``, ``<kind>_mask`` ``(N, K)`` -> ``(n, K')``; ``true_links``
        ``(N, D, T)`` -> ``(n, D', T')``; other tensors and NumPy arrays: their ``rows``.

    Raises:
        ValueError: no rows, or a mask with padding before a real node.
    """
    if rows is None:
        rows = np.arange(len(graphs["dx_codes"]))
    idx = rows.long() if isinstance(rows, torch.Tensor) else torch.as_tensor(np.asarray(rows))
    if idx.numel() == 0:
        raise ValueError("trim_graphs: no rows")

    def pick(v):  # the rows of a tensor (on its device) or a NumPy array
        if isinstance(v, np.ndarray):
            return v[idx.cpu().numpy()]
        return v[idx.to(v.device)]

    out, width = {}, {}
    for kind in _NODE_KINDS:
        if f"{kind}_mask" not in graphs:
            continue
        mask = pick(graphs[f"{kind}_mask"])  # (n, K)
        if (mask[:, 1:] & ~mask[:, :-1]).any():
            raise ValueError(f"{kind}_mask has padding before a real node: real nodes come first")
        width[kind] = max(int(mask.sum(1).max()), 1)  # K'
        out[f"{kind}_mask"] = mask[:, : width[kind]]  # (n, K')
        out[f"{kind}_codes"] = pick(graphs[f"{kind}_codes"])[:, : width[kind]]  # (n, K')
    for k, v in graphs.items():
        if k in out or not isinstance(v, torch.Tensor | np.ndarray):
            continue
        out[k] = pick(v)
        if k == "true_links":  # (n, D', T')
            out[k] = out[k][:, : width.get("dx", v.shape[1]), : width.get("tx", v.shape[2])]
    return out
