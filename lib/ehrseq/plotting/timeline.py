"""Patient timelines and true-hazard curves for the synthetic cohort chapter."""

from __future__ import annotations

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.text import Text

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
        ax: where to draw (default: a new figure the width of the text column).

    Raises:
        ValueError: if the patient has no visit in ``tables``.
    """
    visits = tables["visit_occurrence"]
    visits = visits.loc[visits["person_id"] == person_id]
    if visits.empty:
        raise ValueError(f"person_id {person_id} has no rows in visit_occurrence")
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 3.4))
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
    death = tables.get("death")
    if death is not None and (death["person_id"] == person_id).any():
        died = death.loc[death["person_id"] == person_id, "death_date"].iloc[0]
        ax.axvline(died, color="k", lw=2, label="death")
        right = max(right, died + pd.Timedelta(days=90))
    mine = None if onsets is None else onsets.loc[onsets["person_id"] == person_id]
    if mine is not None and len(mine):  # an onset after the last visit widens the axis
        right = max(right, mine["onset_date"].max() + pd.Timedelta(days=90))
    ax.set_xlim(left, right)  # before the onset labels, which are placed by their x
    levels = 0 if mine is None else _label_onsets(ax, mine, left)
    ax.set_yticks(range(len(rows)), [r[2] for r in rows])
    ax.set_ylim(-0.5, top + 0.2)
    ax.set_xlabel("calendar date")
    locator = mdates.AutoDateLocator(maxticks=8)  # few enough to read in the text column
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    title = f"patient {person_id}: {len(visits)} visits (dark = inpatient stay)"
    ax.set_title(title, pad=6 + _LABEL_STEP * levels)  # above the onset labels
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax


_ONSET_COLOR = "#D55E00"
_LABEL_STEP = 11  # points between two rows of onset labels above the axes


def _label_onsets(ax: Axes, mine: pd.DataFrame, left: pd.Timestamp) -> int:
    """Draw one patient's onsets as dashed lines, labelled above the axes, no overlaps.

    Onsets before the record share one dotted line at its left edge and one label. Each
    label starts at its line and goes on the lowest row above the axes where it overlaps
    no other label (measured in the drawn figure), joined to its line by a vertical
    leader. Labels are placed from the right, so a leader never crosses a label placed
    before it: those all start further right.

    Returns:
        The number of label rows used.
    """
    before = mine.loc[mine["onset_date"] < left].sort_values("onset_date")
    marks = []  # (x, label, line style)
    if len(before):
        names = ", ".join(d.replace("_", " ") for d in before["disease"])
        marks.append((left, f"before record: {names}", ":"))
    after = mine.loc[mine["onset_date"] >= left].sort_values("onset_date")
    for date, disease in zip(after["onset_date"], after["disease"], strict=True):
        marks.append((date, disease.replace("_", " "), "--"))
    renderer = ax.figure.canvas.get_renderer()
    placed: list[list[tuple[float, float]]] = []  # per row: labels' extents in pixels
    for x, name, ls in reversed(marks):
        ax.axvline(x, color=_ONSET_COLOR, ls=ls, lw=1)
        text = ax.annotate(
            name,
            xy=(x, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, 3),
            textcoords="offset points",
            ha="left",
            va="bottom",
            fontsize=8,
            color=_ONSET_COLOR,
            annotation_clip=False,
            # a leader from the label's lower left corner straight down to the axes
            arrowprops={
                "arrowstyle": "-",
                "color": _ONSET_COLOR,
                "lw": 0.5,
                "relpos": (0, 0),
            },
        )
        text.update_positions(renderer)  # the words where the annotation puts them
        box = Text.get_window_extent(text, renderer)  # the words, not the leader
        extent = (box.x0 - 3, box.x1 + 3)
        level = 0
        while level < len(placed) and any(
            extent[0] < b and a < extent[1] for a, b in placed[level]
        ):
            level += 1
        if level == len(placed):
            placed.append([])
        placed[level].append(extent)
        text.set_position((0, 3 + _LABEL_STEP * level))
    return len(placed)


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
