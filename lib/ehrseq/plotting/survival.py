"""Survival figures: Kaplan-Meier curves by predicted-risk group and calibration plots.

Each helper draws on ``ax`` (a new figure when ``None``), labels its axes with units and
returns the ``Axes``, so a chapter can add a caption or more layers. Call
:func:`ehrseq.plotting.apply_style` once for the book's look.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter
from matplotlib.axes import Axes

from ehrseq.checks import check_1d, check_survival

__all__ = ["plot_survival_by_risk_group", "plot_calibration", "zoom_survival_axis"]


def _new_axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots()
    return ax


def _group_labels(n_groups: int) -> list[str]:
    if n_groups == 2:
        return ["Low risk", "High risk"]
    if n_groups == 3:
        return ["Low risk", "Medium risk", "High risk"]
    return [
        f"Q{g + 1}" + (" (lowest)" if g == 0 else " (highest)" if g == n_groups - 1 else "")
        for g in range(n_groups)
    ]


def plot_survival_by_risk_group(
    durations: Any,
    risk: Any,
    events: Any,
    n_groups: int = 3,
    ax: Axes | None = None,
    time_unit: str = "days",
    ci_show: bool = True,
    labels: list[str] | None = None,
) -> Axes:
    r"""Kaplan-Meier curves of patients grouped by quantiles of predicted risk.

    Patients are sorted by ``risk`` and cut into ``n_groups`` groups of (nearly) equal size;
    each group gets its Kaplan-Meier curve :math:`\hat S(t) = \prod_{s \le t}(1 - d(s)/n(s))`
    with a 95 % confidence band. A model that discriminates well spreads the curves apart,
    with the high-risk group falling fastest.

    Args:
        durations: observed times, in ``time_unit``.
        risk: predicted risk, higher = earlier event.
        events: event indicators (1 = event, 0 = censored).
        n_groups: number of risk groups (2 to 10).
        ax: Axes to draw on; a new figure when ``None``.
        time_unit: unit of ``durations`` for the x-axis label.
        ci_show: draw the confidence bands.
        labels: legend labels from lowest to highest risk; defaults to "Low/Medium/High
            risk" for 2-3 groups and quantile names otherwise.

    Shapes:
        - durations, risk, events: :math:`(n,)`

    Returns:
        The Axes drawn on.

    Raises:
        ValueError: on mismatched lengths, NaN/inf, negative durations, events not 0/1,
            ``n_groups`` outside [2, min(10, n)], or ``labels`` of the wrong length.

    Reference:
        Kaplan, E. L., Meier, P. (1958). Nonparametric estimation from incomplete observations.
        *JASA* 53(282), 457-481.
    """
    d, e = check_survival(durations, events)
    r = check_1d(risk, "risk", n=d.shape[0])
    n = d.shape[0]
    if not (isinstance(n_groups, int | np.integer) and 2 <= n_groups <= min(10, n)):
        raise ValueError(f"n_groups must be an integer in [2, {min(10, n)}], got {n_groups!r}")
    labels = list(labels) if labels is not None else _group_labels(int(n_groups))
    if len(labels) != n_groups:
        raise ValueError(f"labels has {len(labels)} entries for {n_groups} groups")
    order = np.argsort(r, kind="mergesort")
    groups = np.empty(n, dtype=np.int64)
    groups[order] = np.arange(n) * n_groups // n  # (n,), 0 = lowest risk

    ax = _new_axes(ax)
    for g in range(n_groups):
        m = groups == g
        kmf = KaplanMeierFitter(label=f"{labels[g]} (n={int(m.sum())})")
        kmf.fit(d[m], event_observed=e[m])
        kmf.plot_survival_function(ax=ax, ci_show=ci_show)
    ax.set_xlabel(f"Time ({time_unit})")
    ax.set_ylabel("Survival probability")
    ax.set_ylim(0.0, 1.02)
    ax.set_xlim(left=0.0)
    ax.legend(title="Predicted risk group")
    return ax


def zoom_survival_axis(*axes: Axes, step: float = 0.05) -> float:
    """Start the y-axis of survival panels just below the lowest curve or band drawn.

    Survival curves that stay between 0.7 and 1 fill a third of an axis from 0 to 1.
    This sets every panel's y-axis from the lowest value drawn on any of them (lines and
    shaded bands, rounded down to a multiple of ``step``) to just above 1, the same for
    all so they compare, and says so in each y-label: "(axis from 0.65)". Call it after
    the labels.

    Args:
        *axes: the panels, each with its curves (and bands) drawn.
        step: the lower limit is a multiple of it.

    Returns:
        The lower limit (0 when a curve or band reaches 0; the label then stays).

    Raises:
        ValueError: if no axes are given, ``step`` is not in (0, 0.5], or nothing is
            drawn.
    """
    if not axes:
        raise ValueError("zoom_survival_axis needs at least one Axes")
    if not 0 < step <= 0.5:
        raise ValueError(f"step must be in (0, 0.5], got {step!r}")
    drawn = []
    for ax in axes:
        drawn += [np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()]
        for collection in ax.collections:  # the confidence bands
            drawn += [path.vertices[:, 1] for path in collection.get_paths()]
    values = np.concatenate([v.ravel() for v in drawn]) if drawn else np.array([])
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("nothing is drawn on these axes")
    lower = float(np.clip(np.floor(values.min() / step) * step, 0.0, 1.0 - step))
    lower = round(lower, 10)  # 0.65, not 0.6500000000000001
    for ax in axes:
        ax.set_ylim(lower, 1.0 + 0.02 * (1.0 - lower))
        label = ax.get_ylabel()
        if lower > 0 and label:
            ax.set_ylabel(f"{label} (axis from {lower:g})")
    return lower


def plot_calibration(
    calibration_df: pd.DataFrame,
    ax: Axes | None = None,
    time_unit: str = "days",
    label: str | None = None,
) -> Axes:
    r"""Predicted versus observed event probability per risk group, with the diagonal.

    Plots ``predicted`` against ``observed`` from :func:`ehrseq.metrics.calibration_table`,
    with error bars from ``observed_lower``/``observed_upper`` when present. Points on the
    dashed diagonal :math:`\hat p^{\text{obs}} = \hat p^{\text{pred}}` are perfectly
    calibrated; points above it mean the model under-predicts risk.

    Args:
        calibration_df: a table with columns ``predicted`` and ``observed`` (probabilities),
            optionally ``observed_lower``, ``observed_upper`` and ``attrs["horizon"]``.
        ax: Axes to draw on; a new figure when ``None``.
        time_unit: unit of the horizon, used in the title.
        label: legend label of the points (e.g. the model name); no legend entry when ``None``.

    Returns:
        The Axes drawn on.

    Raises:
        ValueError: if a required column is missing, the table is empty, or values are not
            probabilities.

    Reference:
        Crowson, C. S., Atkinson, E. J., Therneau, T. M. (2016). Assessing calibration of
        prognostic risk scores. *Statistical Methods in Medical Research* 25(4), 1692-1706.
    """
    if not isinstance(calibration_df, pd.DataFrame):
        raise ValueError(f"calibration_df must be a DataFrame, got {type(calibration_df)}")
    missing = [c for c in ("predicted", "observed") if c not in calibration_df.columns]
    if missing:
        raise ValueError(
            f"calibration_df lacks columns {missing}; build it with "
            f"ehrseq.metrics.calibration_table"
        )
    if calibration_df.empty:
        raise ValueError("calibration_df is empty")
    pred = calibration_df["predicted"].to_numpy(dtype=float)
    obs = calibration_df["observed"].to_numpy(dtype=float)
    for name, values in (("predicted", pred), ("observed", obs)):
        if not np.isfinite(values).all() or (values < 0).any() or (values > 1).any():
            raise ValueError(f"column {name!r} must hold probabilities in [0, 1]")

    ax = _new_axes(ax)
    upper_lim = float(min(1.0, max(pred.max(), obs.max()) * 1.1 + 0.02))
    if {"observed_lower", "observed_upper"} <= set(calibration_df.columns):
        lo = calibration_df["observed_lower"].to_numpy(dtype=float)
        hi = calibration_df["observed_upper"].to_numpy(dtype=float)
        yerr = np.vstack([np.clip(obs - lo, 0, None), np.clip(hi - obs, 0, None)])  # (2, G)
        ax.errorbar(pred, obs, yerr=yerr, fmt="o", capsize=3, label=label)
        upper_lim = float(min(1.0, max(upper_lim, np.nanmax(hi) * 1.05)))
    else:
        ax.plot(pred, obs, "o", label=label)
    # Calling again on the same Axes overlays another model: one diagonal, limits that fit all.
    for line in [ln for ln in ax.lines if ln.get_gid() == "calibration-diagonal"]:
        upper_lim = max(upper_lim, float(line.get_xdata()[1]))
        line.remove()
    ax.plot(
        [0, upper_lim],
        [0, upper_lim],
        linestyle="--",
        color="0.5",
        label="Perfect calibration",
        gid="calibration-diagonal",
    )
    ax.set_xlim(0.0, upper_lim)
    ax.set_ylim(0.0, upper_lim)
    ax.set_aspect("equal", adjustable="box")
    horizon = calibration_df.attrs.get("horizon")
    at = f" by {horizon:g} {time_unit}" if horizon is not None else ""
    ax.set_xlabel(f"Predicted event probability{at}")
    ax.set_ylabel(f"Observed event probability{at} (Kaplan-Meier)")
    if horizon is not None:
        ax.set_title(f"Calibration at {horizon:g} {time_unit}")
    ax.legend()
    return ax
