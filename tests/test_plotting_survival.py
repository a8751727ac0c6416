"""The survival plot helpers draw what they claim, label their axes with units, return the Axes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ehrseq.metrics import calibration_table  # noqa: E402
from ehrseq.plotting import apply_style  # noqa: E402
from ehrseq.plotting.survival import (  # noqa: E402
    plot_calibration,
    plot_survival_by_risk_group,
    zoom_survival_axis,
)


@pytest.fixture
def cohort():
    rng = np.random.default_rng(0)
    n = 300
    x = rng.normal(size=n)
    event_time = rng.exponential(200.0 * np.exp(-x))
    censor_time = rng.uniform(50.0, 600.0, size=n)
    durations = np.minimum(event_time, censor_time)
    events = event_time <= censor_time
    return durations, events, x


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_survival_by_risk_group_draws_one_curve_per_group(cohort):
    durations, events, risk = cohort
    apply_style()
    ax = plot_survival_by_risk_group(durations, risk, events, n_groups=3, time_unit="weeks")
    assert isinstance(ax, matplotlib.axes.Axes)
    assert ax.get_xlabel() == "Time (weeks)"
    assert ax.get_ylabel() == "Survival probability"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["Low risk (n=100)", "Medium risk (n=100)", "High risk (n=100)"]
    # the high-risk group ends below the low-risk group
    ends = [line.get_ydata()[-1] for line in ax.get_lines()[:3]]
    assert ends[2] < ends[0]


def test_survival_by_risk_group_uses_the_given_axes_and_defaults_to_days(cohort):
    durations, events, risk = cohort
    _, ax = plt.subplots()
    out = plot_survival_by_risk_group(durations, risk, events, n_groups=5, ax=ax, ci_show=False)
    assert out is ax
    assert ax.get_xlabel() == "Time (days)"
    assert len(ax.get_legend().get_texts()) == 5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_groups": 1}, "n_groups"),
        ({"n_groups": 11}, "n_groups"),
        ({"labels": ["a", "b"]}, "labels"),
    ],
)
def test_survival_by_risk_group_rejects_bad_groups(cohort, kwargs, match):
    durations, events, risk = cohort
    with pytest.raises(ValueError, match=match):
        plot_survival_by_risk_group(durations, risk, events, **kwargs)


def test_survival_by_risk_group_rejects_bad_survival_data(cohort):
    durations, events, risk = cohort
    with pytest.raises(ValueError, match="lengths must match"):
        plot_survival_by_risk_group(durations, risk, events[:-1])
    with pytest.raises(ValueError, match="0/1"):
        plot_survival_by_risk_group(durations, risk, events * 2)


def test_calibration_plot_has_points_diagonal_and_units(cohort):
    durations, events, risk = cohort
    prob = 1 / (1 + np.exp(-risk))
    table = calibration_table(durations, prob, events, horizon=180.0, n_bins=5)
    ax = plot_calibration(table, label="model")
    assert isinstance(ax, matplotlib.axes.Axes)
    assert ax.get_xlabel() == "Predicted event probability by 180 days"
    assert "Observed event probability by 180 days" in ax.get_ylabel()
    assert ax.get_title() == "Calibration at 180 days"
    diagonal = [line for line in ax.get_lines() if line.get_label() == "Perfect calibration"]
    assert len(diagonal) == 1
    np.testing.assert_allclose(diagonal[0].get_xdata(), diagonal[0].get_ydata())
    (errorbars,) = [c for c in ax.containers if c.get_label() == "model"]
    points = errorbars.lines[0]  # the data line; lines[2] holds the vertical bars
    np.testing.assert_allclose(points.get_xdata(), table["predicted"])
    np.testing.assert_allclose(points.get_ydata(), table["observed"])
    assert len(errorbars.lines[2]) == 1  # one LineCollection of error bars


def test_calibration_plot_without_intervals_or_horizon():
    import pandas as pd

    table = pd.DataFrame({"predicted": [0.1, 0.3], "observed": [0.12, 0.25]})
    _, ax = plt.subplots()
    assert plot_calibration(table, ax=ax, time_unit="months") is ax
    assert ax.get_xlabel() == "Predicted event probability"


def test_calibration_plot_rejects_bad_tables():
    import pandas as pd

    with pytest.raises(ValueError, match="lacks columns"):
        plot_calibration(pd.DataFrame({"predicted": [0.1]}))
    with pytest.raises(ValueError, match="empty"):
        plot_calibration(pd.DataFrame({"predicted": [], "observed": []}))
    with pytest.raises(ValueError, match="probabilities"):
        plot_calibration(pd.DataFrame({"predicted": [0.1], "observed": [1.5]}))
    with pytest.raises(ValueError, match="DataFrame"):
        plot_calibration({"predicted": [0.1], "observed": [0.1]})


def test_apply_style_rejects_unknown_params():
    with pytest.raises(ValueError, match="unknown matplotlib rcParam"):
        apply_style(not__a__param=1)


def test_calibration_overlays_models_with_one_diagonal():
    rng = np.random.default_rng(1)
    n = 400
    durations = rng.exponential(10, n)
    events = rng.random(n) < 0.7
    risk_a, risk_b = rng.random(n), rng.random(n) * 0.5
    ax = plot_calibration(calibration_table(durations, risk_a, events, horizon=5.0), label="a")
    plot_calibration(calibration_table(durations, risk_b, events, horizon=5.0), ax=ax, label="b")
    diagonals = [ln for ln in ax.lines if ln.get_gid() == "calibration-diagonal"]
    assert len(diagonals) == 1
    labels = ax.get_legend_handles_labels()[1]
    assert labels.count("Perfect calibration") == 1 and {"a", "b"} <= set(labels)
    plt.close("all")


def test_zoom_survival_axis_contains_every_curve_and_band_and_says_so():
    rng = np.random.default_rng(1)
    n = 200
    durations = rng.uniform(1.0, 100.0, size=n)
    events = rng.random(n) < 0.15  # few events: the curves stay high
    risk = rng.normal(size=n)
    _, axes = plt.subplots(1, 2, sharey=True)
    for ax in axes:
        plot_survival_by_risk_group(durations, risk, events, ax=ax)
    axes[0].set_ylabel("Share without the outcome")
    axes[1].set_ylabel("")
    lower = zoom_survival_axis(*axes)
    drawn = [line.get_ydata() for ax in axes for line in ax.get_lines()]
    bands = [c for ax in axes for c in ax.collections]
    drawn += [p.vertices[:, 1] for c in bands for p in c.get_paths()]
    lowest = min(np.nanmin(np.asarray(v, dtype=float)) for v in drawn)
    assert 0 < lower <= lowest < lower + 0.05  # zoomed, with everything inside
    top = pytest.approx(1.0 + 0.02 * (1 - lower))
    assert all(ax.get_ylim() == (lower, top) for ax in axes)
    assert axes[0].get_ylabel() == f"Share without the outcome (axis from {lower:g})"
    assert axes[1].get_ylabel() == ""  # a panel without a label gets none


def test_zoom_survival_axis_keeps_zero_when_a_curve_reaches_it():
    _, ax = plt.subplots()
    ax.plot([0, 1, 2], [1.0, 0.5, 0.0])
    ax.set_ylabel("Survival probability")
    assert zoom_survival_axis(ax) == 0.0
    assert ax.get_ylabel() == "Survival probability"
    with pytest.raises(ValueError, match="nothing is drawn"):
        zoom_survival_axis(plt.subplots()[1])
    with pytest.raises(ValueError, match="at least one"):
        zoom_survival_axis()
