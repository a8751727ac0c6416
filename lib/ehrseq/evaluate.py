r"""One evaluation protocol for every survival model: a curve per test patient in, a table out.

Every model of the modelling chapters, neural or classical, hands over the same thing: a
predicted survival curve per test patient, read at the right edges of the time bins, shape
``(n_test, K)``. :class:`SurvivalProtocol` scores such curves the same way for every model:

- the **risk score** is the probability of the event within the horizon,
  :math:`1 - \hat S(t_K)`, ranked by Harrell's and Uno's C (Uno's truncated at the horizon,
  with the censoring distribution of the training labels);
- **Antolini's C** judges each comparable pair on the curves, at the earlier event time;
- the **integrated Brier score** (IBS) averages the squared error of the curves over the bin
  edges strictly inside the window (the last edge is the horizon itself, where the
  censoring weights of administrative censoring are not defined);
- **AUROC** at the last bin edge strictly inside the window (the cumulative/dynamic AUC of
  :func:`~ehrseq.metrics.cumulative_dynamic_auc`, with the censoring distribution of the
  training labels): how well the risk by then separates those with an event by then from
  those still event-free;
- the **calibration error** is the mean absolute gap between predicted risk and the
  Kaplan-Meier incidence at the horizon, over groups of predicted risk (deciles); beside
  it :meth:`SurvivalProtocol.evaluate` reports the **debiased RMS calibration error**,
  the root-mean-square gap with each decile's sampling noise taken out
  (:func:`~ehrseq.metrics.calibration_error_debiased`), about 0 for a calibrated model
  (a root-mean-square weighs large gaps more, so it can exceed the mean absolute gap).

A model trained with several seeds gives one curve per seed: :meth:`SurvivalProtocol.evaluate`
reports each metric averaged over seeds, a percentile bootstrap interval over test patients
of that average (the same resamples for every model, so intervals are comparable) and the
standard deviation across seeds. :meth:`SurvivalProtocol.difference` is the paired bootstrap
of the difference between two models, the interval that says whether a difference is real.

The bootstrap dominates the protocol's time. Every metric depends on a resample only
through how often each patient was drawn (the censoring weights come from the training
labels, so they do not change), so the protocol scores blocks of resamples from one pass
over the full test set (:data:`~ehrseq.metrics.Scorer`): the same resamples, the same
intervals to rounding, several times faster. ``fast_bootstrap=False`` recomputes every metric
on every resampled copy instead.

Data flows ``model -> curves -> protocol``; this module imports metrics and plotting, never a
model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ehrseq.metrics import (
    Scorer,
    bootstrap_ci,
    calibration_error,
    calibration_error_debiased,
    calibration_error_resampler,
    concordance_index,
    concordance_index_ipcw,
    concordance_index_ipcw_resampler,
    concordance_index_resampler,
    concordance_td,
    concordance_td_resampler,
    cumulative_dynamic_auc,
    cumulative_dynamic_auc_resampler,
    integrated_brier_score,
    integrated_brier_score_resampler,
)
from ehrseq.numbers import interval, number

__all__ = [
    "SurvivalProtocol",
    "HIGHER_IS_BETTER",
    "NOT_RESOLVED",
    "PAIRED_METRICS",
    "difference_row",
    "format_table",
    "plot_comparison",
]

#: The metrics :meth:`SurvivalProtocol.compare` reports by default.
PAIRED_METRICS = ("Harrell C", "IBS", "AUROC")

#: The verdict of a paired difference whose interval contains 0.
NOT_RESOLVED = "not resolved"


def difference_row(a: str, b: str, metric: str, ci, higher_is_better: bool = True) -> dict:
    """One paired comparison as a row: ``comparison`` (``"a - b"``), ``metric``,
    ``difference``, ``lower``, ``upper`` and ``verdict``: ``"<model> is better"`` when the
    interval ``ci`` (of ``a - b``) excludes 0, the side given by ``higher_is_better``,
    else :data:`NOT_RESOLVED`."""
    if ci.lower > 0 or ci.upper < 0:
        better = a if (ci.lower > 0) == higher_is_better else b
        verdict = f"{better} is better"
    else:
        verdict = NOT_RESOLVED
    return {
        "comparison": f"{a} - {b}",
        "metric": metric,
        "difference": ci.estimate,
        "lower": ci.lower,
        "upper": ci.upper,
        "verdict": verdict,
    }


#: Whether a larger value of each protocol metric is better.
HIGHER_IS_BETTER = {
    "Harrell C": True,
    "Uno C": True,
    "Antolini C": True,
    "IBS": False,
    "AUROC": True,
    "calibration error": False,
}

#: Metrics whose interval has equal ends only for a model that gives everyone one risk.
_RANKING = ("Harrell C", "Uno C", "Antolini C", "AUROC")

Metric = Callable[[np.ndarray, np.ndarray, np.ndarray], float]
Resampler = Callable[[np.ndarray, np.ndarray, np.ndarray], Scorer | None]


@dataclass
class SurvivalProtocol:
    """The test labels, the time grid and the bootstrap settings shared by every model.

    Args:
        durations: test durations, shape ``(n_test,)``, in the unit of ``times``.
        events: test event flags (1 event, 0 censored), shape ``(n_test,)``.
        times: the right edge of every bin, shape ``(K,)``, strictly increasing; the last
            is the horizon. Column ``k`` of every curve is the survival at ``times[k]``.
        durations_train: training durations, for the censoring distribution of Uno's C and
            the IBS.
        events_train: training event flags.
        n_boot: bootstrap resamples of the test patients.
        seed: seed of the resamples; the same seed gives every model the same resamples.
        calibration_groups: groups of predicted risk for the calibration error. The
            calibration error is a mean of absolute gaps, and the noise of each decile's
            observed incidence never cancels in an absolute value: even a perfectly
            calibrated model has a positive error (a noise floor), and resampling adds
            more noise, so the percentile interval of ``calibration error`` can lie
            wholly above its estimate. It is kept for paired differences between models
            (the floors of both partly cancel), and :meth:`evaluate` reports beside it
            the ``debiased RMS calibration error`` with an interval that contains it
            (see there).
        fast_bootstrap: score the resamples of every metric that allows it from their
            multiplicities (:attr:`resamplers`); ``False`` recomputes each metric on every
            resampled copy of the data (slower, the same intervals up to rounding).
    """

    durations: Any
    events: Any
    times: Any
    durations_train: Any
    events_train: Any
    n_boot: int = 200
    seed: int = 0
    calibration_groups: int = 10
    fast_bootstrap: bool = True

    def __post_init__(self) -> None:
        self.durations = np.asarray(self.durations, dtype=float)
        self.events = np.asarray(self.events, dtype=int)
        self.times = np.asarray(self.times, dtype=float)
        self.durations_train = np.asarray(self.durations_train, dtype=float)
        self.events_train = np.asarray(self.events_train, dtype=int)
        if self.durations.ndim != 1 or self.durations.shape != self.events.shape:
            raise ValueError(
                f"durations {self.durations.shape} and events {self.events.shape} must be "
                "1-D arrays of the same length (one entry per test patient)"
            )
        if self.durations_train.shape != self.events_train.shape:
            raise ValueError(
                f"durations_train {self.durations_train.shape} and events_train "
                f"{self.events_train.shape} must have the same shape"
            )
        if self.times.ndim != 1 or len(self.times) < 2 or np.any(np.diff(self.times) <= 0):
            raise ValueError(
                f"times must be a strictly increasing 1-D array of at least 2 bin edges, "
                f"got {self.times[:5]}"
            )
        if self.n_boot < 1:
            raise ValueError(f"n_boot must be at least 1, got {self.n_boot}")

    @property
    def horizon(self) -> float:
        """The last bin edge: risk scores and calibration are read there."""
        return float(self.times[-1])

    # -- the metrics ---------------------------------------------------------------------------
    def _calibration_error(self, d: np.ndarray, e: np.ndarray, surv: np.ndarray) -> float:
        return calibration_error(d, 1.0 - surv[:, -1], e, self.horizon, self.calibration_groups)

    @property
    def metrics(self) -> dict[str, Metric]:
        """Each metric as ``fn(durations, events, surv) -> float``, on any resample."""
        t, h = self.times, self.horizon
        d_tr, e_tr = self.durations_train, self.events_train
        return {
            "Harrell C": lambda d, e, s: concordance_index(d, 1.0 - s[:, -1], e),
            "Uno C": lambda d, e, s: concordance_index_ipcw(
                d, 1.0 - s[:, -1], e, tau=h, durations_train=d_tr, events_train=e_tr
            ),
            "Antolini C": lambda d, e, s: concordance_td(d, s, e, t),
            "IBS": lambda d, e, s: integrated_brier_score(d, s[:, :-1], e, t[:-1], d_tr, e_tr),
            "AUROC": lambda d, e, s: float(
                cumulative_dynamic_auc(d, 1.0 - s[:, -2], e, t[-2:-1], d_tr, e_tr)[0][0]
            ),
            "calibration error": self._calibration_error,
        }

    @property
    def resamplers(self) -> dict[str, Resampler]:
        """The metrics of :attr:`metrics` that can score bootstrap resamples as multiplicities.

        Each maps ``(durations, events, surv)`` to a :data:`~ehrseq.metrics.Scorer` that equals
        the metric of the same name on every resample, or to ``None`` where no such shortcut
        is exact (e.g. the AUROC of risks that differ by less than the tie tolerance in a
        chain).
        """
        t, h = self.times, self.horizon
        d_tr, e_tr = self.durations_train, self.events_train
        return {
            "Harrell C": lambda d, e, s: concordance_index_resampler(d, 1.0 - s[:, -1], e),
            "Uno C": lambda d, e, s: concordance_index_ipcw_resampler(
                d, 1.0 - s[:, -1], e, tau=h, durations_train=d_tr, events_train=e_tr
            ),
            "Antolini C": lambda d, e, s: concordance_td_resampler(d, s, e, t),
            "IBS": lambda d, e, s: integrated_brier_score_resampler(
                d, s[:, :-1], e, t[:-1], d_tr, e_tr
            ),
            "AUROC": lambda d, e, s: cumulative_dynamic_auc_resampler(
                d, 1.0 - s[:, -2], e, t[-2], d_tr, e_tr
            ),
            "calibration error": lambda d, e, s: calibration_error_resampler(
                d, 1.0 - s[:, -1], e, h, self.calibration_groups
            ),
        }

    def _resampler(
        self, metric: str, combine: Callable[[np.ndarray], np.ndarray]
    ) -> Callable[..., Scorer | None] | None:
        """``(d, e, *curves) -> Scorer``: ``combine`` of the metric's values per curve."""
        make = self.resamplers.get(metric) if self.fast_bootstrap else None
        if make is None:
            return None

        def resampler(d: np.ndarray, e: np.ndarray, *ss: np.ndarray) -> Scorer | None:
            scorers = [make(d, e, s) for s in ss]
            if any(scorer is None for scorer in scorers):
                return None
            return lambda block: combine(np.stack([scorer(block) for scorer in scorers]))  # (S, B)

        return resampler

    def _metrics(self, names: Sequence[str] | None) -> dict[str, Metric]:
        every = self.metrics
        if names is None:
            return every
        unknown = [m for m in names if m not in every]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; choose from {list(every)}")
        return {m: every[m] for m in names}

    def _check_curves(self, survs: Sequence[Any], name: str) -> list[np.ndarray]:
        if isinstance(survs, np.ndarray) and survs.ndim == 2:
            survs = [survs]  # one curve matrix: one seed
        curves = [np.asarray(s, dtype=float) for s in survs]
        if not curves:
            raise ValueError(f"{name}: no survival curves given (one per seed expected)")
        expected = (len(self.durations), len(self.times))
        for i, s in enumerate(curves):
            if s.shape != expected:
                raise ValueError(
                    f"{name}: curve {i} has shape {s.shape}, expected {expected} "
                    "(test patients, bin edges)"
                )
            if not np.isfinite(s).all() or s.min() < 0 or s.max() > 1:
                bad = np.argwhere(~np.isfinite(s) | (s < 0) | (s > 1))[0]
                raise ValueError(
                    f"{name}: curve {i} must hold survival probabilities in [0, 1]; "
                    f"patient {bad[0]}, edge {bad[1]} is {s[tuple(bad)]}"
                )
        return curves

    # -- the table -----------------------------------------------------------------------------
    def evaluate(
        self,
        name: str,
        survs: Sequence[Any],
        cost: dict[str, Any] | None = None,
        metrics: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        r"""One row of the protocol table.

        Args:
            name: the model's name (the ``model`` column).
            survs: one survival matrix per seed, each ``(n_test, K)``; a single matrix counts
                as one seed.
            cost: extra columns (parameters, training seconds, peak memory...) appended as is.
            metrics: the metrics to report (default: all of :attr:`metrics`). Antolini's C
                compares every event with every later patient and costs the most on a large
                test split; leave it out where a chapter does not discuss it.

        Raises:
            ValueError: on an unknown metric name, or curves that do not fit the protocol.

        Returns:
            ``model``, ``seeds``, and for every metric its seed mean, ``<metric> lower``
            and ``<metric> upper`` (the bootstrap interval of the seed mean) and
            ``<metric> seed sd`` (0 for one seed), then the ``cost`` entries. With the
            calibration error come the same four columns of ``debiased RMS calibration
            error``: :math:`\sqrt{\max(\overline{\mathrm{CE}^2}, 0)}`, the root of the
            seed mean of :func:`~ehrseq.metrics.calibration_error_debiased` (Kumar et
            al.'s debiased squared gap over deciles), about 0 for a calibrated model;
            its interval is the standard bootstrap interval of the seed mean on the
            squared scale, :math:`\overline{\mathrm{CE}^2} \pm 1.96\,\mathrm{sd}^*`,
            clipped at 0 and then rooted, so it always contains the estimate; ``seed
            sd`` is that of the per-seed roots.
        """
        curves = self._check_curves(survs, name)
        chosen = self._metrics(metrics)
        row: dict[str, Any] = {"model": name, "seeds": len(curves)}
        for metric, fn in chosen.items():
            per_seed = [fn(self.durations, self.events, s) for s in curves]
            ci = bootstrap_ci(
                lambda d, e, *ss, fn=fn: float(np.mean([fn(d, e, s) for s in ss])),
                self.durations,
                self.events,
                *curves,
                n_boot=self.n_boot,
                seed=self.seed,
                resampler=self._resampler(metric, lambda v: v.mean(axis=0)),
            )
            row[metric] = float(np.mean(per_seed))
            row[f"{metric} lower"], row[f"{metric} upper"] = ci.lower, ci.upper
            row[f"{metric} seed sd"] = float(np.std(per_seed, ddof=1)) if len(curves) > 1 else 0.0
            if metric == "calibration error":
                row.update(self._debiased_calibration(curves))
        return {**row, **(cost or {})}

    def _debiased_calibration(self, curves: list[np.ndarray]) -> dict[str, float]:
        """The ``debiased RMS calibration error`` columns of :meth:`evaluate`."""
        h, groups = self.horizon, self.calibration_groups

        def fn(d: np.ndarray, e: np.ndarray, s: np.ndarray) -> float:
            return calibration_error_debiased(d, 1.0 - s[:, -1], e, h, groups)

        def resampler(d: np.ndarray, e: np.ndarray, *ss: np.ndarray) -> Scorer | None:
            make = calibration_error_resampler
            scorers = [make(d, 1.0 - s[:, -1], e, h, groups, debiased=True) for s in ss]
            return lambda block: np.stack([sc(block) for sc in scorers]).mean(axis=0)

        per_seed = [fn(self.durations, self.events, s) for s in curves]
        ci = bootstrap_ci(
            lambda d, e, *ss: float(np.mean([fn(d, e, s) for s in ss])),
            self.durations,
            self.events,
            *curves,
            n_boot=self.n_boot,
            seed=self.seed,
            resampler=resampler if self.fast_bootstrap else None,
            interval="normal",
        )
        roots = np.sqrt(np.maximum(per_seed, 0.0))
        name = "debiased RMS calibration error"
        return {
            name: float(np.sqrt(max(ci.estimate, 0.0))),
            f"{name} lower": float(np.sqrt(max(ci.lower, 0.0))),
            f"{name} upper": float(np.sqrt(max(ci.upper, 0.0))),
            f"{name} seed sd": float(np.std(roots, ddof=1)) if len(curves) > 1 else 0.0,
        }

    def difference(
        self,
        a: str,
        survs_a: Sequence[Any],
        b: str,
        survs_b: Sequence[Any],
        metric: str = "Harrell C",
    ) -> dict[str, Any]:
        """Paired bootstrap of ``metric(a) - metric(b)``, each averaged over its seeds.

        Both models are scored on the same resamples of test patients, so what makes a
        patient easy or hard for both cancels: the interval of the difference is much
        narrower than the two intervals side by side suggest.

        Returns:
            ``comparison``, ``metric``, ``difference`` (on all test patients), ``lower``,
            ``upper``, and ``verdict``: ``"<model> is better"`` when the interval excludes 0
            (taking the metric's direction into account), else :data:`NOT_RESOLVED`.
        """
        if metric not in self.metrics:
            raise ValueError(f"unknown metric {metric!r}; choose from {list(self.metrics)}")
        fn = self.metrics[metric]
        curves_a, curves_b = self._check_curves(survs_a, a), self._check_curves(survs_b, b)
        k = len(curves_a)

        def diff(d: np.ndarray, e: np.ndarray, *ss: np.ndarray) -> float:
            return float(
                np.mean([fn(d, e, s) for s in ss[:k]]) - np.mean([fn(d, e, s) for s in ss[k:]])
            )

        ci = bootstrap_ci(
            diff,
            self.durations,
            self.events,
            *curves_a,
            *curves_b,
            n_boot=self.n_boot,
            seed=self.seed,
            resampler=self._resampler(metric, lambda v: v[:k].mean(axis=0) - v[k:].mean(axis=0)),
        )
        return difference_row(a, b, metric, ci, HIGHER_IS_BETTER[metric])

    def compare(
        self,
        a: str,
        survs_a: Sequence[Any],
        b: str,
        survs_b: Sequence[Any],
        metrics: Sequence[str] = PAIRED_METRICS,
    ) -> pd.DataFrame:
        """:meth:`difference` for several metrics at once, one row each (default C, IBS, AUROC)."""
        return pd.DataFrame([self.difference(a, survs_a, b, survs_b, m) for m in metrics])


_COST_FORMATS = (
    ("seeds", ",.0f"),
    ("parameters", ",.0f"),
    ("train s", ",.1f"),
    ("s / epoch", ",.1f"),
    ("peak MiB", ",.0f"),
    ("activations MiB", ",.2f"),
)


def format_table(table: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """The protocol table as text: ``estimate [lower, upper]`` per metric, then the costs.

    Each cell is :func:`ehrseq.book.interval`: non-breaking spaces inside the interval,
    so it never wraps in its cell, and no negative zero. A ranking metric (a C-index,
    the AUROC) whose interval has equal ends belongs to a model that gives every patient
    the same risk (the Kaplan-Meier curve): it scores exactly 0.5 on every resample, and
    the cell reads ``"0.500 (constant risk)"`` rather than a degenerate interval. Where
    the table holds the ``debiased RMS calibration error``
    (:meth:`SurvivalProtocol.evaluate`), it follows ``calibration error`` as a column of
    its own, and ``calibration error`` shows its estimate alone: its percentile interval
    can lie wholly above it (see :class:`SurvivalProtocol`) and would mislead.

    Args:
        table: rows from :meth:`SurvivalProtocol.evaluate`, indexed by model.
        metrics: the metrics to show, in order; IBS gets four decimals, the others three.
    """
    out = pd.DataFrame(index=table.index)
    debiased = "debiased RMS calibration error"
    for m in metrics:
        missing = [c for c in (m, f"{m} lower", f"{m} upper") if c not in table]
        if missing:
            raise ValueError(f"format_table: the table has no column(s) {missing}")
        spec = ".4f" if m == "IBS" else ".3f"
        if m == "calibration error" and debiased in table and debiased not in metrics:
            out[m] = [number(v, spec) for v in table[m]]
            m = debiased
        out[m] = [
            interval(
                r[m],
                r[f"{m} lower"],
                r[f"{m} upper"],
                spec,
                same="constant risk" if m in _RANKING and _flat(r, m) else "no spread",
            )
            for _, r in table.iterrows()
        ]
    for c, fmt in _COST_FORMATS:
        if c in table:
            out[c] = [("" if pd.isna(v) else number(v, fmt)) for v in table[c]]
    return out


def _flat(row: pd.Series, metric: str) -> bool:
    """The estimate and both ends agree (to rounding): every resample scored alike."""
    values = [row[metric], row[f"{metric} lower"], row[f"{metric} upper"]]
    return bool(np.ptp(values) < 1e-9)


def plot_comparison(
    table: pd.DataFrame,
    models: Sequence[str],
    metrics: Sequence[str] = ("Harrell C", "IBS"),
    ceiling: str | None = "oracle",
    no_features: str | None = "Kaplan-Meier (no features)",
    height: float = 0.5,
) -> Any:
    """A point with its bootstrap interval per model, one panel per metric.

    Dashed: the ``ceiling`` row (the oracle); dotted: chance (0.5) for the C-indices and the
    ``no_features`` row for the others.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(metrics), figsize=(5 * len(metrics), 1.2 + height * len(models)), sharey=True
    )
    axes = np.atleast_1d(axes)
    y = np.arange(len(models))
    for ax, metric in zip(axes, metrics, strict=True):
        r = table.loc[list(models)]
        err = np.vstack([r[metric] - r[f"{metric} lower"], r[f"{metric} upper"] - r[metric]])
        ax.errorbar(r[metric], y, xerr=err, fmt="o", capsize=3)
        if ceiling is not None:
            ax.axvline(table.loc[ceiling, metric], ls="--", c="k", label=ceiling)
        if metric.endswith(" C"):
            ax.axvline(0.5, ls=":", c="grey", label="chance")
        elif no_features is not None:
            ax.axvline(table.loc[no_features, metric], ls=":", c="grey", label=no_features)
        better = "higher" if HIGHER_IS_BETTER.get(metric, True) else "lower"
        ax.set_xlabel(f"{metric} ({better} is better)")
        ax.legend(loc="lower right" if better == "higher" else "upper right", fontsize="small")
    axes[0].set_yticks(y, list(models))
    axes[0].invert_yaxis()
    fig.tight_layout()
    return fig
