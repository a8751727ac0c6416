"""The shared evaluation protocol: rows equal the metrics called directly, pairs are paired."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from ehrseq.evaluate import HIGHER_IS_BETTER, SurvivalProtocol, format_table, plot_comparison
from ehrseq.metrics import (
    bootstrap_ci,
    concordance_index,
    concordance_index_ipcw,
    concordance_td,
    cumulative_dynamic_auc,
    integrated_brier_score,
)

TIMES = np.array([1.0, 2.0, 3.0, 4.0, 5.0])


def _cohort(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exponential times driven by a risk score, censored at 5 and at random."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t = rng.exponential(6.0 * np.exp(-x))
    c = np.minimum(rng.uniform(0.5, 12.0, size=n), 5.0)
    return np.minimum(t, c), (t <= c).astype(int), x


def _curves(x: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """Exponential survival curves at TIMES from a noisy copy of the true score."""
    rng = np.random.default_rng(1000 + seed)  # a stream apart from the cohort's
    rate = np.exp(x + noise * rng.normal(size=len(x))) / 6.0
    return np.exp(-np.outer(rate, TIMES))


@pytest.fixture(scope="module")
def setup():
    d_tr, e_tr, _ = _cohort(400, 0)
    d, e, x = _cohort(300, 1)
    protocol = SurvivalProtocol(d, e, TIMES, d_tr, e_tr, n_boot=50, seed=3)
    return protocol, x


def test_row_equals_metrics_called_directly(setup):
    protocol, x = setup
    s = _curves(x, 0.5, 0)
    row = protocol.evaluate("model", [s], cost={"parameters": 7})
    d, e, dt, et = (
        protocol.durations,
        protocol.events,
        protocol.durations_train,
        protocol.events_train,
    )
    assert row["Harrell C"] == pytest.approx(concordance_index(d, 1 - s[:, -1], e))
    assert row["Uno C"] == pytest.approx(
        concordance_index_ipcw(d, 1 - s[:, -1], e, tau=5.0, durations_train=dt, events_train=et)
    )
    assert row["Antolini C"] == pytest.approx(concordance_td(d, s, e, TIMES))
    assert row["IBS"] == pytest.approx(integrated_brier_score(d, s[:, :-1], e, TIMES[:-1], dt, et))
    auc, _ = cumulative_dynamic_auc(d, 1 - s[:, -2], e, TIMES[-2:-1], dt, et)
    assert row["AUROC"] == pytest.approx(auc[0])
    assert row["seeds"] == 1 and row["Harrell C seed sd"] == 0.0 and row["parameters"] == 7
    ci = bootstrap_ci(
        lambda d, r, e: concordance_index(d, r, e), d, 1 - s[:, -1], e, n_boot=50, seed=3
    )
    assert (row["Harrell C lower"], row["Harrell C upper"]) == pytest.approx((ci.lower, ci.upper))


def test_seeds_are_averaged_and_their_spread_reported(setup):
    protocol, x = setup
    survs = [_curves(x, 0.8, s) for s in range(3)]
    row = protocol.evaluate("model", survs)
    per_seed = [protocol.evaluate("one", [s])["Harrell C"] for s in survs]
    assert row["seeds"] == 3
    assert row["Harrell C"] == pytest.approx(np.mean(per_seed))
    assert row["Harrell C seed sd"] == pytest.approx(np.std(per_seed, ddof=1))
    assert row["Harrell C lower"] < row["Harrell C"] < row["Harrell C upper"]


def test_difference_is_paired_and_directional(setup):
    protocol, x = setup
    good, bad = _curves(x, 0.2, 0), _curves(x, 3.0, 1)
    same = protocol.difference("a", [good], "b", [good])
    assert same["difference"] == 0 and same["lower"] == same["upper"] == 0
    assert same["verdict"] == "not resolved"
    c = protocol.difference("good", [good], "bad", [bad], "Harrell C")
    assert c["lower"] > 0 and c["verdict"] == "good is better"
    ibs = protocol.difference("good", [good], "bad", [bad], "IBS")
    assert ibs["upper"] < 0 and ibs["verdict"] == "good is better"  # lower IBS is better
    flipped = protocol.difference("bad", [bad], "good", [good], "Harrell C")
    assert flipped["difference"] == pytest.approx(-c["difference"])
    assert flipped["verdict"] == "good is better"
    # the paired interval is narrower than the two separate intervals side by side
    a, b = protocol.evaluate("good", [good]), protocol.evaluate("bad", [bad])
    assert c["upper"] - c["lower"] < (a["Harrell C upper"] - a["Harrell C lower"]) + (
        b["Harrell C upper"] - b["Harrell C lower"]
    )


def test_bad_input_is_named(setup):
    protocol, x = setup
    s = _curves(x, 0.5, 0)
    with pytest.raises(ValueError, match="shape"):
        protocol.evaluate("m", [s[:, :3]])
    broken = s.copy()
    broken[4, 2] = 1.5
    with pytest.raises(ValueError, match=r"m: curve 0 .* patient 4, edge 2"):
        protocol.evaluate("m", [broken])
    with pytest.raises(ValueError, match="no survival curves"):
        protocol.evaluate("m", [])
    with pytest.raises(ValueError, match="unknown metric"):
        protocol.difference("a", [s], "b", [s], "AUC")
    with pytest.raises(ValueError, match="strictly increasing"):
        SurvivalProtocol(protocol.durations, protocol.events, TIMES[::-1], [1.0], [1])
    with pytest.raises(ValueError, match="same length"):
        SurvivalProtocol(protocol.durations, protocol.events[:-1], TIMES, [1.0], [1])


def test_format_table_and_plot(setup):
    protocol, x = setup
    rows = [
        protocol.evaluate("oracle", [_curves(x, 0.0, 0)]),
        protocol.evaluate("Kaplan-Meier (no features)", [np.tile(np.exp(-TIMES / 6), (len(x), 1))]),
        protocol.evaluate("model", [_curves(x, 0.5, s) for s in range(2)], {"train s": 1.25}),
    ]
    table = pd.DataFrame(rows).set_index("model")
    text = format_table(table, ["Harrell C", "IBS"])
    r = table.loc["model"]
    est, lo, hi = (r[f"Harrell C{end}"] for end in ("", " lower", " upper"))
    # a non-breaking space inside the interval
    assert text.loc["model", "Harrell C"] == f"{est:.3f} [{lo:.3f},\u00a0{hi:.3f}]"
    # a constant risk scores 0.5 on every resample: no interval "[0.500, 0.500]"
    km = text.loc["Kaplan-Meier (no features)"]
    assert km["Harrell C"] == "0.500 (constant risk)"
    assert text.loc["model", "train s"] == "1.2" and text.loc["oracle", "train s"] == ""
    with pytest.raises(ValueError, match="no column"):
        format_table(table, ["AUC"])
    fig = plot_comparison(table, ["model"])
    assert len(fig.axes) == 2 and fig.axes[1].get_xlabel() == "IBS (lower is better)"
    plt.close(fig)


def test_compare_reports_c_ibs_and_auroc(setup):
    protocol, x = setup
    good, bad = _curves(x, 0.0, 0), _curves(x, 3.0, 1)
    table = protocol.compare("good", [good], "bad", [bad])
    assert table["metric"].tolist() == ["Harrell C", "IBS", "AUROC"]
    auc = table.set_index("metric").loc["AUROC"]
    assert auc["lower"] > 0 and auc["verdict"] == "good is better"


def test_evaluate_reports_a_chosen_subset(setup):
    protocol, x = setup
    s = _curves(x, 0.5, 0)
    full = protocol.evaluate("m", [s])
    part = protocol.evaluate("m", [s], metrics=["Harrell C", "AUROC"])
    assert "Antolini C" in full and "Antolini C" not in part and "IBS lower" not in part
    assert part["Harrell C"] == full["Harrell C"] and part["AUROC upper"] == full["AUROC upper"]
    with pytest.raises(ValueError, match="unknown metrics"):
        protocol.evaluate("m", [s], metrics=["Harrel C"])


# -- the bootstrap from multiplicities equals the loop over resampled copies ------------------


@pytest.fixture(scope="module")
def tied_setup():
    """Half-day times (ties), every tenth patient twice, and two fast/slow twin protocols."""
    d_tr, e_tr, _ = _cohort(400, 0)
    d, e, x = _cohort(240, 7)
    d = np.ceil(d * 2) / 2
    copies = np.arange(0, 240, 10)
    d, e, x = (np.concatenate([a, a[copies]]) for a in (d, e, x))
    fast = SurvivalProtocol(d, e, TIMES, d_tr, e_tr, n_boot=40, seed=5)
    slow = SurvivalProtocol(d, e, TIMES, d_tr, e_tr, n_boot=40, seed=5, fast_bootstrap=False)
    return fast, slow, x


def _tied_curves(x: np.ndarray, noise: float, seed: int) -> np.ndarray:
    return np.round(_curves(x, noise, seed), 2)  # tied risks and tied survival probabilities


def _assert_same_row(fast: dict, slow: dict) -> None:
    assert fast.keys() == slow.keys()
    for key, value in slow.items():
        if isinstance(value, float):
            assert fast[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
        else:
            assert fast[key] == value, key


def test_fast_bootstrap_equals_the_loop_in_evaluate(tied_setup):
    fast, slow, x = tied_setup
    d, e = fast.durations, fast.events
    for survs in (
        [_tied_curves(x, 0.5, s) for s in range(2)],
        [_curves(x, 0.8, s) for s in range(3)],
        [np.tile(np.exp(-TIMES / 6), (len(x), 1))],  # Kaplan-Meier: every risk tied
    ):
        assert all(make(d, e, survs[0]) is not None for make in fast.resamplers.values())
        _assert_same_row(fast.evaluate("m", survs), slow.evaluate("m", survs))


def test_fast_bootstrap_equals_the_loop_in_difference_and_compare(tied_setup):
    fast, slow, x = tied_setup
    a = [_curves(x, 0.3, s) for s in range(2)]
    b = [_tied_curves(x, 1.0, s) for s in range(10, 13)]
    for metric in HIGHER_IS_BETTER:
        _assert_same_row(
            fast.difference("a", a, "b", b, metric), slow.difference("a", a, "b", b, metric)
        )
    pd.testing.assert_frame_equal(
        fast.compare("a", a, "b", b), slow.compare("a", a, "b", b), rtol=1e-12, atol=1e-15
    )


def test_a_metric_without_a_shortcut_still_bootstraps(tied_setup):
    fast, slow, x = tied_setup
    s = _curves(x, 0.5, 0)
    s[:3, -2] = 0.5 + np.array([0.0, 6e-9, 1.2e-8])  # risks tied in a chain longer than 1e-8
    assert fast.resamplers["AUROC"](fast.durations, fast.events, s) is None
    assert fast.resamplers["IBS"](fast.durations, fast.events, s) is not None
    for metrics in (["AUROC"], ["AUROC", "IBS"]):
        _assert_same_row(
            fast.evaluate("m", [s], metrics=metrics), slow.evaluate("m", [s], metrics=metrics)
        )
    _assert_same_row(
        fast.difference("a", [s], "b", [_curves(x, 0.5, 1)], "AUROC"),
        slow.difference("a", [s], "b", [_curves(x, 0.5, 1)], "AUROC"),
    )


def test_debiased_calibration_error_beside_the_plug_in(setup):
    """The oracle is calibrated: its debiased error is about 0 and its interval covers
    it, while the plug-in error sits on its noise floor; every estimate lies in its
    interval."""
    protocol, x = setup
    oracle = protocol.evaluate("oracle", [_curves(x, 0.0, 0)])
    off = np.clip(_curves(x, 0.0, 0) - 0.15, 0.0, 1.0)  # risks 0.15 too high
    biased = protocol.evaluate("biased", [off])
    name = "debiased RMS calibration error"
    for row in (oracle, biased):
        assert row[f"{name} lower"] <= row[name] <= row[f"{name} upper"]
    assert oracle[f"{name} lower"] == 0.0 and oracle[name] < 0.03
    assert oracle["calibration error"] > oracle[name]  # the plug-in's noise floor
    assert biased[name] > 0.05 and biased[f"{name} upper"] > oracle[f"{name} upper"]
    # the plug-in columns are what they were: the metric called on the full data
    d, e = protocol.durations, protocol.events
    assert oracle["calibration error"] == protocol.metrics["calibration error"](
        d, e, _curves(x, 0.0, 0)
    )
    table = pd.DataFrame([oracle, biased]).set_index("model")
    text = format_table(table, ["calibration error"])
    assert text.columns.tolist() == ["calibration error", name, "seeds"]
    assert "[" not in text.loc["oracle", "calibration error"]
    assert text.loc["biased", name].startswith(f"{biased[name]:.3f} [")
