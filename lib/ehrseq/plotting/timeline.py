"""Patient timelines and true-hazard curves for the synthetic cohort chapter."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes

__all__ = ["plot_patient_timeline", "plot_hazard_paths"]

_DATE_COLUMNS = {
    "condition_occurrence": ("condition_start_date", "condition_concept_id", "condition"),
    "drug_exposure": ("drug_exposure_start_date", "drug_concept_id", "drug"),
    "procedure_occurrence": ("procedure_date", "procedure_concept_id", "procedure"),
    "measurement": ("measurement_date", "measurement_concept_id", "measurement"),
}


def plot_patient_timeline(
    tables: dict[str, pd.DataFrame],
    person_id: int,
    onsets: pd.DataFrame | None = None,
    ax: Axes | None = None,
) -> Axes:
    """One patient's record: a row per domain, a mark per event, visits shaded.

    Args:
        tables: OMOP tables (``visit_occurrence``, ``condition_occurrence``, ``drug_exposure``,
            ``procedure_occurrence``, ``measurement``, optionally ``observation_period`` and
            ``death``).
        person_id: the patient.
        onsets: optional ground truth (``person_id``, ``disease``, ``onset_date``): drawn as
            dashed vertical lines labelled with the disease, so the delay to diagnosis shows.
        ax: where to draw (default: a new wide figure).

    Raises:
        ValueError: if the patient has no visit in ``tables``.
    """
    visits = tables["visit_occurrence"]
    visits = visits.loc[visits["person_id"] == person_id]
    if visits.empty:
        raise ValueError(f"person_id {person_id} has no rows in visit_occurrence")
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 3.6))
    rows = list(_DATE_COLUMNS.values())
    for y, (table, (date_col, _, label)) in enumerate(_DATE_COLUMNS.items()):
        df = tables[table]
        dates = df.loc[df["person_id"] == person_id, date_col]
        ax.scatter(
            dates, np.full(len(dates), y), marker="|", s=120, label=f"{label} ({len(dates)})"
        )
    inpatient = visits["visit_concept_id"].to_numpy() == 9201
    for start, end, ip in zip(visits["visit_start_date"], visits["visit_end_date"], inpatient):
        ax.axvspan(
            start,
            end + pd.Timedelta(days=1),
            color="0.3" if ip else "0.8",
            alpha=0.25 if ip else 0.3,
            lw=0,
        )
    top = len(rows) - 0.5
    left = visits["visit_start_date"].min() - pd.Timedelta(days=90)
    right = visits["visit_end_date"].max() + pd.Timedelta(days=90)
    if onsets is not None:
        mine = onsets.loc[onsets["person_id"] == person_id]
        for _, row in mine.iterrows():
            before = row["onset_date"] < left
            x = left if before else row["onset_date"]
            name = row["disease"].replace("_", " ") + (" (before record)" if before else "")
            ax.axvline(x, color="#D55E00", ls=":" if before else "--", lw=1)
            ax.text(
                x,
                top,
                name,
                rotation=90,
                va="top",
                ha="left" if before else "right",
                fontsize=7,
                color="#D55E00",
            )
    death = tables.get("death")
    if death is not None and (death["person_id"] == person_id).any():
        died = death.loc[death["person_id"] == person_id, "death_date"].iloc[0]
        ax.axvline(died, color="k", lw=2, label="death")
        right = max(right, died + pd.Timedelta(days=90))
    ax.set_yticks(range(len(rows)), [r[2] for r in rows])
    ax.set_ylim(-0.5, top + 0.2)
    ax.set_xlim(left, right)
    ax.set_xlabel("calendar date")
    ax.set_title(f"patient {person_id}: {len(visits)} visits (dark = inpatient stay)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax


def plot_hazard_paths(
    hazard: np.ndarray,
    rows: np.ndarray,
    labels: list[str] | None = None,
    ax: Axes | None = None,
    per: str = "year",
) -> Axes:
    """True monthly hazard paths of a few patients over time since enrolment.

    Args:
        hazard: (N, M) monthly hazards from :class:`ehrseq.data.synthetic.Truth`.
        rows: indices of the patients to draw.
        labels: one legend label per row.
        per: ``"year"`` shows the yearly rate ``-12 log(1 - h)``; ``"month"`` the raw hazard.

    Shapes:
        hazard: (N, M); rows: (k,).

    Raises:
        ValueError: on an unknown ``per`` or rows out of range.
    """
    if per not in ("year", "month"):
        raise ValueError(f"per must be 'year' or 'month', got {per!r}")
    rows = np.asarray(rows)
    if rows.size and (rows.min() < 0 or rows.max() >= hazard.shape[0]):
        raise ValueError(f"rows out of range for {hazard.shape[0]} patients")
    if ax is None:
        _, ax = plt.subplots()
    years = np.arange(hazard.shape[1]) / 12.0
    for i, r in enumerate(rows):
        h = hazard[r].astype(float)
        y = -12.0 * np.log1p(-h) if per == "year" else h
        ax.step(years, y, where="post", label=labels[i] if labels else f"row {r}")
    ax.set_xlabel("years since enrolment")
    ax.set_ylabel(
        "true hazard (events per person-year)" if per == "year" else "true monthly hazard"
    )
    ax.set_yscale("log")
    ax.legend()
    return ax
