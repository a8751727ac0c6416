"""The patient timeline labels every onset where it can be read: no labels overlap."""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from ehrseq.plotting import apply_style  # noqa: E402
from ehrseq.plotting.timeline import plot_patient_timeline  # noqa: E402

D = pd.Timestamp
ONSET_COLOR = "#D55E00"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _tables():
    starts = [D("2015-01-01"), D("2016-01-01"), D("2017-06-01"), D("2019-01-01")]
    visits = pd.DataFrame(
        {
            "person_id": 1,
            "visit_start_date": starts,
            "visit_end_date": starts,
            "visit_concept_id": [9202, 9201, 9202, 9202],
        }
    )

    def events(column):
        dates = [D("2015-01-01"), D("2017-06-01")]
        return pd.DataFrame({"person_id": 1, column: dates})

    return {
        "visit_occurrence": visits,
        "condition_occurrence": events("condition_start_date"),
        "drug_exposure": events("drug_exposure_start_date"),
        "procedure_occurrence": events("procedure_date"),
        "measurement": events("measurement_date"),
    }


def _onset_labels(ax):
    return [t for t in ax.texts if t.get_color() == ONSET_COLOR]


def test_close_onsets_get_labels_that_do_not_overlap():
    apply_style()
    onsets = pd.DataFrame(
        {
            "person_id": 1,
            "disease": ["obesity", "hypertension", "diabetes", "chronic_kidney_disease"]
            + ["coronary_disease", "atrial_fibrillation"],
            # two before the record, three within two months of each other
            "onset_date": [D("2010-01-01"), D("2012-01-01"), D("2016-03-01")]
            + [D("2016-03-15"), D("2016-04-01"), D("2018-12-01")],
        }
    )
    ax = plot_patient_timeline(_tables(), 1, onsets=onsets)
    labels = _onset_labels(ax)
    texts = [t.get_text() for t in labels]
    # the onsets before the record share one label at its left edge
    assert len(labels) == 5
    assert "before record: obesity, hypertension" in texts
    assert "chronic kidney disease" in texts
    renderer = ax.figure.canvas.get_renderer()
    for t in labels:
        t.update_positions(renderer)
    boxes = [Text.get_window_extent(t, renderer) for t in labels]  # without leaders
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)
    # all above the axes, below the title
    top = ax.get_window_extent(renderer).y1
    title = ax.title.get_window_extent(renderer)
    assert all(top <= box.y0 and box.y1 <= title.y0 for box in boxes)


def test_no_onsets_no_labels():
    apply_style()
    ax = plot_patient_timeline(_tables(), 1)
    assert _onset_labels(ax) == []
    with pytest.raises(ValueError, match="no rows"):
        plot_patient_timeline(_tables(), 2)


def test_an_onset_after_the_last_visit_is_inside_the_axes():
    apply_style()
    onsets = pd.DataFrame(
        {"person_id": 1, "disease": ["hypertension"], "onset_date": [D("2020-06-01")]}
    )
    ax = plot_patient_timeline(_tables(), 1, onsets=onsets)
    (label,) = _onset_labels(ax)
    renderer = ax.figure.canvas.get_renderer()
    label.update_positions(renderer)
    box = Text.get_window_extent(label, renderer)
    inside = ax.get_window_extent(renderer)
    assert inside.x0 <= box.x0 <= inside.x1  # its line is drawn, its label starts there
