"""ehrseq.metrics equals lifelines, scikit-survival and scikit-learn on the same inputs.

Each scenario is drawn for several seeds: continuous times, tied times and tied risks (rounded),
and heavy (about 80 %) censoring.
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import KaplanMeierFitter
from lifelines.utils import concordance_index as lifelines_cindex
from sklearn.metrics import average_precision_score, roc_auc_score
from sksurv import metrics as sksurv_metrics
from sksurv.util import Surv

from ehrseq import metrics

SEEDS = [0, 1, 2]
SCENARIOS = ["continuous", "tied", "heavy_censoring"]
TOL = 1e-6


def make_cohort(seed: int, scenario: str, n: int = 250):
    """Exponential event times whose rate rises with a risk score, independent censoring."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    event_time = rng.exponential(10.0 * np.exp(-0.7 * x))
    censor_scale = 2.5 if scenario == "heavy_censoring" else 15.0  # ~80 % vs ~40 % censored
    censor_time = rng.exponential(censor_scale, size=n)
    durations = np.minimum(event_time, censor_time)
    events = event_time <= censor_time
    risk = 0.7 * x + rng.normal(scale=0.8, size=n)
    if scenario == "tied":
        durations = np.ceil(durations)  # whole days: many tied times, events and censorings
        risk = np.round(risk, 1)  # many tied risks
    return durations, events, risk


def eval_times(durations, events, k: int = 5):
    """Times inside the follow-up with cases before each of them (as sksurv needs)."""
    lo = np.sort(durations[events])[2]
    hi = np.quantile(durations, 0.8)
    return np.unique(np.linspace(lo, hi, k))


def proportional_surv(risk, grid, scale: float = 10.0):
    """S_i(t) = exp(-exp(r_i) t / scale): curves that never cross, ordered by risk."""
    return np.exp(-np.exp(risk)[:, None] * grid[None, :] / scale)


def crossing_surv(seed: int, n: int, grid):
    """Weibull curves with individual shapes: they cross, so order depends on the time."""
    rng = np.random.default_rng(seed + 100)
    shape = rng.uniform(0.5, 2.5, size=n)
    scale = rng.uniform(3.0, 20.0, size=n)
    return np.exp(-((grid[None, :] / scale[:, None]) ** shape[:, None]))


def antolini_reference(durations, surv, events, grid):
    """The definition, pair by pair: slow and obvious."""
    num = den = 0.0
    n = len(durations)
    for i in range(n):
        if not events[i]:
            continue
        k = np.searchsorted(grid, durations[i], side="right") - 1
        s_i = 1.0 if k < 0 else surv[i, k]
        for j in range(n):
            later = durations[j] > durations[i]
            tied_censored = durations[j] == durations[i] and not events[j]
            if not (later or tied_censored):
                continue
            s_j = 1.0 if k < 0 else surv[j, k]
            den += 1
            num += 1.0 if s_i < s_j else 0.5 if s_i == s_j else 0.0
    return num / den


# ---------------------------------------------------------------------------------------------
# Equivalence with the reference libraries
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_harrell_matches_lifelines_and_sksurv(seed, scenario):
    durations, events, risk = make_cohort(seed, scenario)
    ours = metrics.concordance_index(durations, risk, events)
    sk = sksurv_metrics.concordance_index_censored(events, durations, risk)[0]
    ll = lifelines_cindex(durations, -risk, events)  # lifelines scores survival times
    assert ours == pytest.approx(sk, abs=TOL)
    assert ours == pytest.approx(ll, abs=TOL)


def test_harrell_perfect_reversed_and_constant():
    durations = np.arange(1.0, 11.0)
    events = np.ones(10, dtype=bool)
    assert metrics.concordance_index(durations, -durations, events) == 1.0
    assert metrics.concordance_index(durations, durations, events) == 0.0
    assert metrics.concordance_index(durations, np.zeros(10), events) == 0.5


def test_harrell_accepts_tensors_and_lists():
    durations, events, risk = make_cohort(0, "tied", n=60)
    expected = metrics.concordance_index(durations, risk, events)
    got = metrics.concordance_index(
        torch.tensor(durations), torch.tensor(risk, requires_grad=True), events.tolist()
    )
    assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_uno_matches_sksurv(seed, scenario):
    durations, events, risk = make_cohort(seed, scenario)
    y = Surv.from_arrays(events, durations)
    tau = float(np.quantile(durations, 0.75))
    for t in (tau, None):
        ours = metrics.concordance_index_ipcw(durations, risk, events, tau=t)
        sk = sksurv_metrics.concordance_index_ipcw(y, y, risk, tau=t)[0]
        assert ours == pytest.approx(sk, abs=TOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_uno_with_separate_training_data(seed):
    durations, events, risk = make_cohort(seed, "continuous")
    d_train, e_train, _ = make_cohort(seed + 50, "continuous", n=400)
    tau = float(np.quantile(d_train, 0.7))
    ours = metrics.concordance_index_ipcw(
        durations, risk, events, tau=tau, durations_train=d_train, events_train=e_train
    )
    sk = sksurv_metrics.concordance_index_ipcw(
        Surv.from_arrays(e_train, d_train), Surv.from_arrays(events, durations), risk, tau=tau
    )[0]
    assert ours == pytest.approx(sk, abs=TOL)


def test_uno_without_censoring_equals_harrell_before_tau():
    durations, _, risk = make_cohort(3, "continuous", n=120)
    events = np.ones_like(durations, dtype=bool)
    tau = float(np.max(durations)) + 1.0  # G = 1: every weight is one
    assert metrics.concordance_index_ipcw(durations, risk, events, tau=tau) == pytest.approx(
        metrics.concordance_index(durations, risk, events), abs=1e-12
    )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_cumulative_dynamic_auc_matches_sksurv(seed, scenario):
    durations, events, risk = make_cohort(seed, scenario)
    y = Surv.from_arrays(events, durations)
    times = eval_times(durations, events)
    auc, mean_auc = metrics.cumulative_dynamic_auc(durations, risk, events, times)
    sk_auc, sk_mean = sksurv_metrics.cumulative_dynamic_auc(y, y, risk, times)
    np.testing.assert_allclose(auc, sk_auc, atol=TOL)
    assert mean_auc == pytest.approx(sk_mean, abs=TOL)
    # time-dependent risks: one column per time
    risk_2d = 1.0 - proportional_surv(risk, times)
    auc, mean_auc = metrics.cumulative_dynamic_auc(durations, risk_2d, events, times)
    sk_auc, sk_mean = sksurv_metrics.cumulative_dynamic_auc(y, y, risk_2d, times)
    np.testing.assert_allclose(auc, sk_auc, atol=TOL)
    assert mean_auc == pytest.approx(sk_mean, abs=TOL)
    # a single time: the mean is that AUC
    auc1, mean1 = metrics.cumulative_dynamic_auc(durations, risk, events, times[-1:])
    assert auc1.shape == (1,) and mean1 == pytest.approx(
        sksurv_metrics.cumulative_dynamic_auc(y, y, risk, times[-1])[1], abs=TOL
    )


def test_cumulative_dynamic_auc_with_training_data():
    durations, events, risk = make_cohort(4, "tied")
    d_train, e_train, _ = make_cohort(54, "tied", n=500)
    keep = durations < d_train.max()  # sksurv needs every test event inside training follow-up
    durations, events, risk = durations[keep], events[keep], risk[keep]
    times = eval_times(durations, events)
    auc, mean_auc = metrics.cumulative_dynamic_auc(
        durations, risk, events, times, durations_train=d_train, events_train=e_train
    )
    sk_auc, sk_mean = sksurv_metrics.cumulative_dynamic_auc(
        Surv.from_arrays(e_train, d_train), Surv.from_arrays(events, durations), risk, times
    )
    np.testing.assert_allclose(auc, sk_auc, atol=TOL)
    assert mean_auc == pytest.approx(sk_mean, abs=TOL)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_brier_and_integrated_brier_match_sksurv(seed, scenario):
    durations, events, risk = make_cohort(seed, scenario)
    y = Surv.from_arrays(events, durations)
    times = eval_times(durations, events, k=8)
    surv = proportional_surv(risk, times)
    bs = metrics.brier_score(durations, surv, events, times)
    np.testing.assert_allclose(bs, sksurv_metrics.brier_score(y, y, surv, times)[1], atol=TOL)
    ibs = metrics.integrated_brier_score(durations, surv, events, times)
    assert ibs == pytest.approx(sksurv_metrics.integrated_brier_score(y, y, surv, times), abs=TOL)
    # with separate training data for the censoring distribution
    d_train, e_train, _ = make_cohort(seed + 7, scenario, n=600)
    if durations.max() <= d_train.max():
        y_train = Surv.from_arrays(e_train, d_train)
        ours = metrics.brier_score(durations, surv, events, times, d_train, e_train)
        np.testing.assert_allclose(
            ours, sksurv_metrics.brier_score(y_train, y, surv, times)[1], atol=TOL
        )


def test_brier_of_a_perfect_and_an_uninformative_prediction():
    durations = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    events = np.ones(6, dtype=bool)
    times = np.array([2.5])
    truth = (durations > 2.5).astype(float)
    assert metrics.brier_score(durations, truth, events, times)[0] == 0.0
    assert metrics.brier_score(durations, np.full(6, 0.5), events, times)[0] == 0.25


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_antolini_matches_pairwise_reference(seed, scenario):
    durations, events, _ = make_cohort(seed, scenario, n=120)
    grid = np.unique(np.quantile(durations, np.linspace(0.05, 0.95, 12)))
    surv = crossing_surv(seed, len(durations), grid)
    surv[:5] = surv[5]  # some exactly tied curves
    ours = metrics.concordance_td(durations, surv, events, grid, tied_tol=0.0)
    assert ours == pytest.approx(antolini_reference(durations, surv, events, grid), abs=1e-12)
    # small blocks give the same answer as one block
    blocked = metrics.concordance_td(durations, surv, events, grid, tied_tol=0.0, max_block=500)
    assert blocked == pytest.approx(ours, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_antolini_equals_harrell_when_curves_do_not_cross(seed, scenario):
    durations, events, risk = make_cohort(seed, scenario)
    grid = np.unique(durations)  # every event time on the grid: S_i(T_i) is read exactly
    surv = proportional_surv(risk, grid, scale=50.0)
    assert metrics.concordance_td(durations, surv, events, grid) == pytest.approx(
        metrics.concordance_index(durations, risk, events), abs=TOL
    )


def test_survival_at_times_is_a_right_continuous_step():
    surv = np.array([[0.9, 0.7, 0.4], [0.8, 0.5, 0.1]])
    grid = np.array([1.0, 2.0, 3.0])
    got = metrics.survival_at_times(surv, grid, [0.5, 1.0, 1.5, 2.0, 3.0, 9.0])
    np.testing.assert_array_equal(got[0], [1.0, 0.9, 0.9, 0.7, 0.4, 0.4])
    np.testing.assert_array_equal(got[1], [1.0, 0.8, 0.8, 0.5, 0.1, 0.1])


@pytest.mark.parametrize("seed", SEEDS)
def test_auroc_auprc_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(300) < 0.15
    scores = labels * 0.8 + rng.normal(size=300)
    tied = np.round(scores, 1)
    for s in (scores, tied):
        assert metrics.auroc(labels, s) == pytest.approx(roc_auc_score(labels, s), abs=1e-12)
        assert metrics.auprc(labels, s) == pytest.approx(
            average_precision_score(labels, s), abs=1e-12
        )
    assert metrics.auroc(labels, np.zeros(300)) == 0.5


# ---------------------------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------------------------


def test_calibration_table_matches_lifelines_kaplan_meier():
    durations, events, risk = make_cohort(0, "tied", n=400)
    prob = 1.0 / (1.0 + np.exp(-risk))
    horizon = 6.0
    table = metrics.calibration_table(durations, prob, events, horizon, n_bins=5)
    assert list(table.columns) == [
        "bin", "n", "n_events", "risk_min", "risk_max",
        "predicted", "observed", "observed_lower", "observed_upper",
    ]  # fmt: skip
    assert table["n"].sum() == 400 and table["n"].nunique() == 1
    assert table.attrs["horizon"] == horizon
    assert (np.diff(table["predicted"]) >= 0).all()
    order = np.argsort(prob, kind="mergesort")
    for b, idx in enumerate(np.array_split(order, 5)):
        kmf = KaplanMeierFitter().fit(durations[idx], events[idx])
        row = table.iloc[b]
        assert row["predicted"] == pytest.approx(prob[idx].mean())
        assert row["observed"] == pytest.approx(1 - kmf.predict(horizon), abs=1e-10)
        ci = kmf.confidence_interval_survival_function_
        ci_at = ci[ci.index <= horizon].iloc[-1]
        assert row["observed_lower"] == pytest.approx(1 - ci_at.iloc[1], abs=1e-8)
        assert row["observed_upper"] == pytest.approx(1 - ci_at.iloc[0], abs=1e-8)


def test_calibration_of_the_true_model_is_near_the_diagonal():
    rng = np.random.default_rng(5)
    n, horizon = 6000, 5.0
    rate = 0.1 * np.exp(rng.normal(size=n))
    durations = np.minimum(rng.exponential(1 / rate), 8.0)  # administrative censoring at 8
    events = durations < 8.0
    table = metrics.calibration_table(durations, 1 - np.exp(-rate * horizon), events, horizon)
    assert len(table) == 10
    assert np.abs(table["observed"] - table["predicted"]).max() < 0.06
    inside = (table["observed_lower"] <= table["predicted"]) & (
        table["predicted"] <= table["observed_upper"]
    )
    assert inside.mean() >= 0.7


# ---------------------------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------------------------


def test_bootstrap_contains_estimate_and_narrows_with_n():
    widths = []
    for n in (150, 1500):
        durations, events, risk = make_cohort(1, "continuous", n=n)
        ci = metrics.bootstrap_ci(
            metrics.concordance_index, durations, risk, events, n_boot=200, seed=0
        )
        assert ci.estimate == pytest.approx(metrics.concordance_index(durations, risk, events))
        assert ci.lower <= ci.estimate <= ci.upper
        assert ci.n_skipped == 0 and ci.n_boot == 200
        widths.append(ci.upper - ci.lower)
    assert widths[1] < 0.6 * widths[0]


def test_bootstrap_is_reproducible_and_takes_closures():
    durations, events, risk = make_cohort(2, "continuous", n=200)
    times = eval_times(durations, events)
    surv = proportional_surv(risk, times)

    def ibs(d, s, e):
        return metrics.integrated_brier_score(d, s, e, times)

    a = metrics.bootstrap_ci(ibs, durations, surv, events, n_boot=50, seed=3)
    b = metrics.bootstrap_ci(ibs, durations, surv, events, n_boot=50, seed=3)
    assert a == b
    assert a.lower <= a.estimate <= a.upper


def test_bootstrap_skips_and_counts_failed_resamples():
    labels = np.zeros(30, dtype=bool)
    labels[0] = True  # about a third of the resamples have no positive: AUROC undefined there
    scores = np.linspace(0, 1, 30)[::-1]
    with pytest.warns(RuntimeWarning, match="skipped"):
        ci = metrics.bootstrap_ci(metrics.auroc, labels, scores, n_boot=200, seed=0)
    assert 0 < ci.n_skipped < 200
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics.bootstrap_ci(
            metrics.auroc, labels, scores, n_boot=50, seed=0, max_skip_fraction=1.0
        )


# ---------------------------------------------------------------------------------------------
# Bootstrap resamples as multiplicities: every scorer equals its metric on the resampled copy
# ---------------------------------------------------------------------------------------------


def with_copies(seed: int, scenario: str, n: int):
    """make_cohort with every seventh patient in the data twice (identical rows)."""
    durations, events, risk = make_cohort(seed, scenario, n=n)
    copies = np.arange(0, n, 7)
    return tuple(np.concatenate([a, a[copies]]) for a in (durations, events, risk))


def resamples(n: int, count: int, seed: int):
    """Bootstrap draws of patient indices, ``(count, n)``, and the block of resamples."""
    idx = np.random.default_rng(seed).integers(0, n, size=(count, n))
    block = metrics.Resamples.of(idx)
    assert all(np.array_equal(c, np.bincount(i, minlength=n)) for i, c in zip(idx, block.counts))
    return idx, block


def on_resamples(fn, idx, *arrays):
    """The metric on every resampled copy of the arrays; NaN where it raises ValueError."""
    values = []
    for i in idx:
        try:
            values.append(float(fn(*(a[i] for a in arrays))))
        except ValueError:
            values.append(np.nan)
    return np.array(values)


def resampled_metrics(durations, events, risk, seed: int, scenario: str):
    """``name -> (metric(d, e, r, s), resampler(d, e, r, s))`` with fixed times and training."""
    d_tr, e_tr, _ = make_cohort(seed + 10, scenario, n=400)
    times = eval_times(durations, events)
    tau, t_auc, horizon = times[-1], times[2], times[-1]
    return times, {
        "harrell": (
            lambda d, e, r, s: metrics.concordance_index(d, r, e),
            lambda d, e, r, s: metrics.concordance_index_resampler(d, r, e),
        ),
        "uno": (
            lambda d, e, r, s: metrics.concordance_index_ipcw(d, r, e, tau, d_tr, e_tr),
            lambda d, e, r, s: metrics.concordance_index_ipcw_resampler(d, r, e, tau, d_tr, e_tr),
        ),
        "antolini": (
            lambda d, e, r, s: metrics.concordance_td(d, s, e, times),
            lambda d, e, r, s: metrics.concordance_td_resampler(d, s, e, times, max_block=500),
        ),
        "ibs": (
            lambda d, e, r, s: metrics.integrated_brier_score(d, s, e, times, d_tr, e_tr),
            lambda d, e, r, s: metrics.integrated_brier_score_resampler(d, s, e, times, d_tr, e_tr),
        ),
        "auc": (
            lambda d, e, r, s: metrics.cumulative_dynamic_auc(d, r, e, [t_auc], d_tr, e_tr)[0][0],
            lambda d, e, r, s: metrics.cumulative_dynamic_auc_resampler(d, r, e, t_auc, d_tr, e_tr),
        ),
        "calibration": (
            lambda d, e, r, s: metrics.calibration_error(d, 1 - s[:, -1], e, horizon, 4),
            lambda d, e, r, s: metrics.calibration_error_resampler(d, 1 - s[:, -1], e, horizon, 4),
        ),
    }


RESAMPLED = ["harrell", "uno", "antolini", "ibs", "auc", "calibration"]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("name", RESAMPLED)
@pytest.mark.parametrize("n", [40, 120])
def test_scorer_equals_the_metric_on_each_resample(seed, scenario, name, n):
    durations, events, risk = with_copies(seed, scenario, n)
    times, cases = resampled_metrics(durations, events, risk, seed, scenario)
    surv = proportional_surv(risk, times)  # tied where the risks tie
    if name == "antolini":  # curves that cross, and the copies' curves copied
        surv = crossing_surv(seed, n, times)[np.concatenate([np.arange(n), np.arange(0, n, 7)])]
    metric, resampler = cases[name]
    idx, m = resamples(len(durations), 60, seed)
    slow = on_resamples(metric, idx, durations, events, risk, surv)
    fast = resampler(durations, events, risk, surv)(m)
    assert fast.shape == (60,)
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(slow))
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-15)


def test_scorer_gives_nan_where_the_metric_raises():
    durations, events, risk = make_cohort(4, "heavy_censoring", n=12)
    idx, m = resamples(12, 200, 0)
    slow = on_resamples(metrics.concordance_index, idx, durations, risk, events)
    fast = metrics.concordance_index_resampler(durations, risk, events)(m)
    assert np.isnan(slow).any() and np.array_equal(np.isnan(fast), np.isnan(slow))
    times = np.sort(durations)[[2, 6]]
    d_tr, e_tr, _ = make_cohort(5, "continuous", n=400)

    def ibs(d, s, e):
        return metrics.integrated_brier_score(d, s, e, times, d_tr, e_tr)

    surv = proportional_surv(risk, times)
    slow = on_resamples(ibs, idx, durations, surv, events)
    fast = metrics.integrated_brier_score_resampler(durations, surv, events, times, d_tr, e_tr)(m)
    assert np.isnan(slow).any() and np.array_equal(np.isnan(fast), np.isnan(slow))
    np.testing.assert_allclose(fast, slow, rtol=1e-12)


def test_calibration_scorer_rescores_resamples_whose_groups_split_tied_risks(monkeypatch):
    durations, events, risk = make_cohort(3, "continuous", n=200)
    prob = 1 - proportional_surv(risk, np.array([5.0]))[:, 0]
    median = np.argsort(prob)[100]  # a group boundary falls near the median risk
    twin = np.flatnonzero(events != events[median])[0]
    prob[twin] = prob[median]  # a tie whose outcomes differ: its split depends on the draws
    idx, block = resamples(200, 300, 1)
    slow = on_resamples(
        lambda d, p, e: metrics.calibration_error(d, p, e, 5.0, 2), idx, durations, prob, events
    )
    rescored = []
    original = metrics.calibration_error
    monkeypatch.setattr(
        metrics, "calibration_error", lambda *a, **k: rescored.append(1) or original(*a, **k)
    )
    fast = metrics.calibration_error_resampler(durations, prob, events, 5.0, 2)(block)
    assert 0 < len(rescored) < 300  # only the resamples that split the tie
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-15)


def test_resamplers_decline_where_no_shortcut_is_exact():
    durations, events, risk = make_cohort(0, "tied", n=100)
    times = eval_times(durations, events)
    surv = proportional_surv(risk, times)
    # without training data the censoring weights change with every resample
    assert metrics.concordance_index_ipcw_resampler(durations, risk, events, times[-1]) is None
    assert metrics.integrated_brier_score_resampler(durations, surv, events, times) is None
    assert metrics.cumulative_dynamic_auc_resampler(durations, risk, events, times[2]) is None
    # near-ties chained over more than tied_tol: leaving out the middle one would split them
    chained = risk.copy()
    chained[:3] = [0.5, 0.5 + 6e-9, 0.5 + 1.2e-8]  # gaps of 6e-9, a span of 1.2e-8
    assert (
        metrics.cumulative_dynamic_auc_resampler(
            durations, chained, events, times[2], durations, events
        )
        is None
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_bootstrap_with_a_resampler_equals_the_loop(seed):
    durations, events, risk = with_copies(seed, "tied", 150)
    cases = [
        (metrics.concordance_index, metrics.concordance_index_resampler),
        (
            lambda d, r, e: metrics.concordance_td(d, proportional_surv(r, TIMES3), e, TIMES3),
            lambda d, r, e: metrics.concordance_td_resampler(
                d, proportional_surv(r, TIMES3), e, TIMES3
            ),
        ),
    ]
    for fn, resampler in cases:
        slow_rng, fast_rng = np.random.default_rng(seed), np.random.default_rng(seed)
        slow = metrics.bootstrap_ci(fn, durations, risk, events, n_boot=80, seed=slow_rng)
        fast = metrics.bootstrap_ci(
            fn, durations, risk, events, n_boot=80, seed=fast_rng, resampler=resampler
        )
        assert fast.estimate == slow.estimate and fast.n_skipped == slow.n_skipped
        assert (fast.lower, fast.upper) == pytest.approx((slow.lower, slow.upper), rel=1e-12)
        assert slow_rng.integers(1 << 30) == fast_rng.integers(1 << 30)  # the same draws


TIMES3 = np.array([1.0, 3.0, 6.0])


def test_bootstrap_falls_back_to_the_loop_and_checks_the_scorer():
    durations, events, risk = make_cohort(1, "continuous", n=80)
    slow = metrics.bootstrap_ci(metrics.concordance_index, durations, risk, events, n_boot=30)
    declined = metrics.bootstrap_ci(
        metrics.concordance_index,
        durations,
        risk,
        events,
        n_boot=30,
        resampler=lambda *arrays: None,
    )
    assert declined == slow
    with pytest.raises(ValueError, match="shape"):
        metrics.bootstrap_ci(
            metrics.concordance_index,
            durations,
            risk,
            events,
            n_boot=30,
            resampler=lambda *arrays: lambda block: block.counts.sum(axis=1)[:2],
        )
    with pytest.raises(ValueError, match="multiplicities"):
        metrics.concordance_index_resampler(durations, risk, events)(metrics.Resamples.of([[0, 1]]))


# ---------------------------------------------------------------------------------------------
# Inputs that cannot be scored
# ---------------------------------------------------------------------------------------------

_D = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
_E = np.array([1, 0, 1, 1, 0])
_R = np.array([0.5, 0.1, 0.3, 0.2, 0.0])
_T = np.array([1.5, 3.5])
_S = np.full((5, 2), 0.5)

ERROR_CASES = {
    "mismatched lengths": (
        lambda: metrics.concordance_index(_D, _R[:4], _E),
        "lengths must match",
    ),
    "nan risk": (lambda: metrics.concordance_index(_D, [np.nan, 1, 2, 3, 4], _E), "NaN or inf"),
    "inf duration": (
        lambda: metrics.concordance_index([1, 2, np.inf, 4, 5], _R, _E),
        "NaN or inf",
    ),
    "negative duration": (
        lambda: metrics.concordance_index([1, -2, 3, 4, 5], _R, _E),
        "non-negative",
    ),
    "events not 0/1": (lambda: metrics.concordance_index(_D, _R, [1, 2, 0, 1, 0]), "0/1"),
    "2-D risk": (lambda: metrics.concordance_index(_D, _S, _E), "1-D"),
    "no comparable pairs (all censored)": (
        lambda: metrics.concordance_index(_D, _R, np.zeros(5)),
        "no comparable pairs",
    ),
    "no comparable pairs (only the last is an event)": (
        lambda: metrics.concordance_index(_D, _R, [0, 0, 0, 0, 1]),
        "no comparable pairs",
    ),
    "uno: nothing before tau": (
        lambda: metrics.concordance_index_ipcw(_D, _R, _E, tau=0.5),
        "no comparable pairs",
    ),
    "uno: bad tau": (lambda: metrics.concordance_index_ipcw(_D, _R, _E, tau=-1.0), "tau"),
    "uno: event beyond training follow-up": (
        lambda: metrics.concordance_index_ipcw(
            _D, _R, _E, durations_train=[1.0, 2.0, 2.5], events_train=[1, 0, 1]
        ),
        "beyond the last training follow-up",
    ),
    "uno: half the training data": (
        lambda: metrics.concordance_index_ipcw(_D, _R, _E, durations_train=_D),
        "both durations_train and events_train",
    ),
    "brier: time past follow-up": (
        lambda: metrics.brier_score(_D, _S, _E, [1.5, 5.0]),
        "within the follow-up",
    ),
    "brier: time before follow-up": (
        lambda: metrics.brier_score(_D, _S, _E, [0.5, 2.0]),
        "within the follow-up",
    ),
    "brier: unsorted times": (
        lambda: metrics.brier_score(_D, _S, _E, [3.5, 1.5]),
        "strictly increasing",
    ),
    "brier: surv shape": (
        lambda: metrics.brier_score(_D, _S[:, :1], _E, _T),
        r"shape \(n, T\)",
    ),
    "brier: surv not a probability": (
        lambda: metrics.brier_score(_D, _S + 1.0, _E, _T),
        r"\[0, 1\]",
    ),
    "brier: zero censoring survival": (
        lambda: metrics.brier_score(
            _D, _S, _E, _T, durations_train=[1.0, 2.0, 3.0], events_train=[1, 1, 0]
        ),
        "G\\(t\\) is 0",
    ),
    "ibs: one time": (
        lambda: metrics.integrated_brier_score(_D, _S[:, :1], _E, [1.5]),
        "at least two times",
    ),
    "td-auc: no case yet": (
        lambda: metrics.cumulative_dynamic_auc(_D, _R, [0, 1, 1, 1, 0], _T),
        "no events at or before",
    ),
    "td-auc: risk shape": (
        lambda: metrics.cumulative_dynamic_auc(_D, np.zeros((5, 3)), _E, _T),
        "risk must have shape",
    ),
    "antolini: grid mismatch": (
        lambda: metrics.concordance_td(_D, _S, _E, [1.0, 2.0, 3.0]),
        r"shape \(n, T\)",
    ),
    "antolini: no comparable pairs": (
        lambda: metrics.concordance_td(_D, _S, [0, 0, 0, 0, 1], _T),
        "no comparable pairs",
    ),
    "survival_at_times: unsorted grid": (
        lambda: metrics.survival_at_times(_S, [2.0, 1.0], [1.0]),
        "strictly increasing",
    ),
    "auroc: one class": (lambda: metrics.auroc(np.ones(5), _R), "one class"),
    "auprc: labels not 0/1": (lambda: metrics.auprc([0, 1, 2, 0, 1], _R), "0/1"),
    "auprc: mismatched lengths": (lambda: metrics.auprc([0, 1, 1], _R), "lengths must match"),
    "calibration: horizon past follow-up": (
        lambda: metrics.calibration_table(_D, _R, _E, horizon=6.0),
        "within the follow-up",
    ),
    "calibration: risk not a probability": (
        lambda: metrics.calibration_table(_D, _R + 1, _E, horizon=3.0),
        r"\[0, 1\]",
    ),
    "calibration: too many bins": (
        lambda: metrics.calibration_table(_D, _R, _E, horizon=3.0, n_bins=6),
        "n_bins",
    ),
    "bootstrap: no arrays": (lambda: metrics.bootstrap_ci(np.mean), "at least one"),
    "bootstrap: different lengths": (
        lambda: metrics.bootstrap_ci(metrics.concordance_index, _D, _R[:3], _E),
        "same first dimension",
    ),
    "bootstrap: non-scalar metric": (
        lambda: metrics.bootstrap_ci(lambda d: d, _D, n_boot=5),
        "must return a scalar",
    ),
    "bootstrap: bad alpha": (lambda: metrics.bootstrap_ci(np.mean, _D, alpha=1.5), "alpha"),
    "bootstrap: never computable": (
        lambda: metrics.bootstrap_ci(
            lambda d: 0.0 if np.array_equal(d, _D) else float("nan"), _D, n_boot=20, seed=1
        ),
        "any of the 20 resamples",
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES), ids=list(ERROR_CASES))
def test_unscorable_inputs_raise_value_error(case):
    fn, match = ERROR_CASES[case]
    with pytest.raises(ValueError, match=match):
        fn()


# ---------------------------------------------------------------------------------------------
# Speed (10,000 patients); the bound is loose so a busy CI machine does not fail it
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("EHRSEQ_SLOW") != "1", reason="set EHRSEQ_SLOW=1")
def test_metrics_score_ten_thousand_patients_quickly():
    durations, events, risk = make_cohort(0, "continuous", n=10_000)
    grid = np.quantile(durations, np.linspace(0.02, 0.9, 100))
    surv = proportional_surv(risk, grid)
    prob = 1 - surv[:, 50]
    calls = {
        "harrell": lambda: metrics.concordance_index(durations, risk, events),
        "uno": lambda: metrics.concordance_index_ipcw(durations, risk, events, tau=grid[-1]),
        "antolini": lambda: metrics.concordance_td(durations, surv, events, grid),
        "ibs": lambda: metrics.integrated_brier_score(durations, surv, events, grid),
        "td_auc": lambda: metrics.cumulative_dynamic_auc(durations, risk, events, grid),
        "calibration": lambda: metrics.calibration_table(durations, prob, events, grid[50]),
        "auroc": lambda: metrics.auroc(events, risk),
        "auprc": lambda: metrics.auprc(events, risk),
    }
    for name, call in calls.items():
        start = time.perf_counter()
        call()
        assert time.perf_counter() - start < 5.0, name


def test_calibration_table_is_a_dataframe_even_for_one_bin():
    table = metrics.calibration_table(_D, _R, _E, horizon=3.0, n_bins=1)
    assert isinstance(table, pd.DataFrame) and len(table) == 1
    assert table["n"].iloc[0] == 5


def _calibrated_cohort(n: int, rng: np.random.Generator, shift=0.0, censor=False):
    """Risks by a horizon of 1, events drawn with exactly those risks, then shifted."""
    p = rng.uniform(0.05, 0.6, n)
    event = rng.random(n) < p
    d = np.where(event, rng.uniform(0.1, 1.0, n), 1.0)
    e = event.astype(int)
    if censor:  # uniform censoring, some of it before the horizon
        c = rng.uniform(0.3, 3.0, n)
        e, d = np.where(c < d, 0, e), np.minimum(c, d)
    return d, np.clip(p + shift, 0.0, 1.0), e


@pytest.mark.parametrize("censor", [False, True])
def test_debiased_calibration_error_is_unbiased_where_the_answer_is_known(censor):
    """A calibrated model: the plug-in error sits on a noise floor, the debiased one
    at 0. Risks 0.1 too high: the root of the debiased error is 0.1."""
    rng = np.random.default_rng(0)
    plug_in, debiased = [], []
    for _ in range(150):
        d, r, e = _calibrated_cohort(1000, rng, censor=censor)
        plug_in.append(metrics.calibration_error(d, r, e, 1.0))
        debiased.append(metrics.calibration_error_debiased(d, r, e, 1.0))
    se = np.std(debiased) / np.sqrt(len(debiased))
    assert abs(np.mean(debiased)) < 3 * se and se < 2e-4
    assert np.mean(plug_in) > 0.02  # the floor a mean of absolute gaps sits on
    shifted = [
        metrics.calibration_error_debiased(*_calibrated_cohort(1000, rng, 0.1), 1.0)
        for _ in range(50)
    ]
    assert np.sqrt(np.mean(shifted)) == pytest.approx(0.1, abs=0.003)


def test_debiased_calibration_interval_covers_zero_for_a_calibrated_model():
    rng = np.random.default_rng(1)
    covered = 0
    for k in range(40):
        d, r, e = _calibrated_cohort(600, rng, censor=True)
        ci = metrics.bootstrap_ci(
            lambda d, r, e: metrics.calibration_error_debiased(d, r, e, 1.0),
            d,
            r,
            e,
            n_boot=100,
            seed=k,
            interval="normal",
            resampler=lambda d, r, e: metrics.calibration_error_resampler(
                d, r, e, 1.0, debiased=True
            ),
        )
        assert ci.lower <= ci.estimate <= ci.upper
        covered += ci.lower <= 0.0 <= ci.upper
    assert covered >= 34  # a 95 % interval: about 38 of 40


def test_debiased_calibration_scorer_equals_the_function_on_resamples():
    rng = np.random.default_rng(2)
    d, r, e = _calibrated_cohort(500, rng, censor=True)
    r = np.round(r, 2)  # tied risks, so some resamples split a tie and are rescored
    idx = rng.integers(0, 500, size=(30, 500))
    scorer = metrics.calibration_error_resampler(d, r, e, 1.0, debiased=True)
    fast = scorer(metrics.Resamples.of(idx))
    slow = [metrics.calibration_error_debiased(d[i], r[i], e[i], 1.0) for i in idx]
    np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-15)


def test_bootstrap_normal_interval_is_the_estimate_plus_minus_z_sd():
    x = np.random.default_rng(3).normal(size=200)
    pct = metrics.bootstrap_ci(np.mean, x, n_boot=300, seed=0)
    normal = metrics.bootstrap_ci(np.mean, x, n_boot=300, seed=0, interval="normal")
    assert normal.estimate == pct.estimate
    half = normal.upper - normal.estimate
    assert half == pytest.approx(normal.estimate - normal.lower)
    assert normal.upper - normal.lower == pytest.approx(pct.upper - pct.lower, rel=0.15)
    with pytest.raises(ValueError, match="interval"):
        metrics.bootstrap_ci(np.mean, x, interval="basic")
