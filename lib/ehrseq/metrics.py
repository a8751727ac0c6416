r"""Metrics for survival and binary tasks: the one module every chapter scores with.

Data flows ``model -> hazards -> metrics``: this module only takes NumPy arrays (or tensors,
which it detaches and copies to the CPU) and never imports a model.

Conventions used everywhere below:

- ``durations``: observed time :math:`T_i = \min(T^*_i, C_i)`, non-negative, any unit.
- ``events``: :math:`\delta_i = 1` if :math:`T_i` is an event, ``0`` if it is censored.
- ``risk``: **higher risk means an earlier event**. A model that predicts survival times or
  survival probabilities is scored by passing their negative (or ``1 - surv``).
- ``surv``: predicted survival :math:`\hat S_i(t)`, shape ``(n, T)``, column ``k`` is the
  prediction at ``time_grid[k]`` (or ``times[k]``).
- Argument order mirrors lifelines, ``(durations, prediction, events, ...)``, so
  ``concordance_index(durations, risk, events)`` reads like
  ``lifelines.utils.concordance_index(event_times, predicted_scores, event_observed)``.
- A pair of patients is *comparable* when the one with the shorter time had the event; a
  censored patient whose time equals an event time counts as having outlived it (both
  lifelines and scikit-survival do the same); two events at the same time are not comparable.
- The censoring distribution :math:`\hat G(t) = P(C > t)` of the IPCW metrics is the reverse
  Kaplan-Meier estimate on the training data (the test data when none is given), with events
  treated as occurring just before censorings at the same time, as in scikit-survival.

Every metric equals its lifelines/scikit-survival/scikit-learn counterpart on the inputs those
libraries accept (checked in ``tests/test_metrics.py``); the docstrings list the deliberate
differences, which are all about raising a :class:`ValueError` where the reference library
returns ``nan``, zero-weights a term silently, or needs data it never uses.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ehrseq.checks import check_1d, check_finite, check_survival, to_numpy

__all__ = [
    "concordance_index",
    "concordance_index_ipcw",
    "concordance_td",
    "brier_score",
    "integrated_brier_score",
    "cumulative_dynamic_auc",
    "calibration_table",
    "calibration_error",
    "calibration_error_debiased",
    "auroc",
    "auprc",
    "BootstrapCI",
    "bootstrap_ci",
    "survival_at_times",
    "Resamples",
    "Scorer",
    "concordance_index_resampler",
    "concordance_index_ipcw_resampler",
    "concordance_td_resampler",
    "integrated_brier_score_resampler",
    "cumulative_dynamic_auc_resampler",
    "calibration_error_resampler",
]

# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def _check_times(times: Any, durations: np.ndarray, name: str = "times") -> np.ndarray:
    """Strictly increasing evaluation times inside the follow-up ``[min T, max T)``."""
    t = check_1d(np.atleast_1d(to_numpy(times, name)), name)
    if t.shape[0] > 1 and not (np.diff(t) > 0).all():
        raise ValueError(f"{name} must be strictly increasing, got {t}")
    lo, hi = durations.min(), durations.max()
    if t[0] < lo or t[-1] >= hi:
        raise ValueError(
            f"all {name} must lie within the follow-up of the test data, [{lo:g}, {hi:g}); "
            f"got [{t[0]:g}, {t[-1]:g}]. Beyond the last follow-up time nobody is at risk."
        )
    return t


def _check_surv_matrix(surv: Any, n: int, n_cols: int, name: str = "surv") -> np.ndarray:
    s = to_numpy(surv, name)
    if s.ndim == 1 and n_cols == 1:
        s = s[:, None]
    if s.ndim != 2 or s.shape != (n, n_cols):
        raise ValueError(f"{name} must have shape (n, T) = ({n}, {n_cols}), got {s.shape}")
    check_finite(s, name)
    if (s < 0).any() or (s > 1).any():
        raise ValueError(f"{name} holds survival probabilities and must lie in [0, 1]")
    return s


# ---------------------------------------------------------------------------------------------
# Kaplan-Meier building blocks
# ---------------------------------------------------------------------------------------------


def _risk_set_counts(
    durations: np.ndarray, events: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unique times ``u``, at risk ``n(u) = #{T >= u}``, events ``d(u)``, censored ``c(u)``."""
    uniq, inverse, counts = np.unique(durations, return_inverse=True, return_counts=True)
    n_events = np.bincount(inverse, weights=events.astype(float), minlength=uniq.shape[0])
    n_at_risk = durations.shape[0] - np.cumsum(counts) + counts
    return uniq, n_at_risk.astype(float), n_events, counts - n_events


def _kaplan_meier(durations: np.ndarray, events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""``(u, S(u))`` with :math:`\hat S(u) = \prod_{s \le u} (1 - d(s) / n(s))`."""
    uniq, n_at_risk, n_events, _ = _risk_set_counts(durations, events)
    return uniq, np.cumprod(1.0 - n_events / n_at_risk)


def _censoring_km(durations: np.ndarray, events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""``(u, G(u))``: reverse Kaplan-Meier of the censoring times.

    :math:`\hat G(u) = \prod_{s \le u} \bigl(1 - c(s) / (n(s) - d(s))\bigr)`: events at ``s``
    leave the risk set before the censorings at ``s`` (scikit-survival's convention).
    """
    uniq, n_at_risk, n_events, n_cens = _risk_set_counts(durations, events)
    remaining = n_at_risk - n_events
    ratio = np.divide(n_cens, remaining, out=np.zeros_like(n_cens), where=n_cens > 0)
    return uniq, np.cumprod(1.0 - ratio)


def _step_at(
    knots: np.ndarray, values: np.ndarray, t: np.ndarray, what: str = "censoring distribution"
) -> np.ndarray:
    """Right-continuous step function ``values`` (1 before ``knots[0]``) evaluated at ``t``.

    Beyond the last knot the function is known only when it has reached zero.
    """
    t = np.asarray(t, dtype=float)
    beyond = t > knots[-1]
    if beyond.any() and values[-1] > 0:
        raise ValueError(
            f"time {t[beyond].max():g} lies beyond the last training follow-up time "
            f"{knots[-1]:g}, where the {what} is unknown: evaluate at earlier times (a smaller "
            f"tau or times) or estimate it from data with longer follow-up"
        )
    idx = np.searchsorted(knots, t, side="right") - 1
    return np.where(idx < 0, 1.0, values[np.clip(idx, 0, None)])


def _censoring_survival(
    durations: np.ndarray,
    events: np.ndarray,
    durations_train: Any,
    events_train: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Reverse-KM knots from the training data, or from the test data when none is given."""
    if (durations_train is None) != (events_train is None):
        raise ValueError("pass both durations_train and events_train, or neither")
    if durations_train is None:
        return _censoring_km(durations, events)
    d_tr, e_tr = check_survival(durations_train, events_train, suffix="_train")
    return _censoring_km(d_tr, e_tr)


def _inverse_weights(g: np.ndarray, times: np.ndarray, who: str) -> np.ndarray:
    zero = g <= 0
    if zero.any():
        raise ValueError(
            f"the censoring survival G(t) is 0 at t = {times[zero].min():g} ({who}): the inverse "
            f"probability of censoring weight is infinite. Use earlier evaluation times or "
            f"training data whose follow-up extends beyond them"
        )
    return 1.0 / g


# ---------------------------------------------------------------------------------------------
# Concordance
# ---------------------------------------------------------------------------------------------


def _count_prefix_below(pos_rank: np.ndarray, prefix: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """For each query ``q``: ``#{p < prefix[q] : pos_rank[p] < bound[q]}``, in O(n log^2 n).

    The prefix ``[0, s)`` splits into at most ``log2 n`` aligned blocks of sizes ``2**level``,
    one per set bit of ``s``. At each level the items are sorted by ``(block, rank)`` once and
    every query counts its block with two binary searches; no Python loop over patients.
    """
    n = pos_rank.shape[0]
    stride = n + 1  # ranks and bounds lie in [0, n], so block * stride + rank never collides
    positions = np.arange(n, dtype=np.int64)
    counts = np.zeros(prefix.shape[0], dtype=np.int64)
    for level in range(max(1, int(n).bit_length())):
        uses = ((prefix >> level) & 1).astype(bool)
        if not uses.any():
            continue
        keys = np.sort((positions >> level) * stride + pos_rank)  # (n,)
        block = (prefix[uses] >> level) - 1  # the block of size 2**level ending the prefix
        start = np.searchsorted(keys, block * stride, side="left")
        stop = np.searchsorted(keys, block * stride + bound[uses], side="left")
        counts[uses] += stop - start
    return counts


def _weighted_concordance(
    durations: np.ndarray,
    events: np.ndarray,
    risk: np.ndarray,
    weights: np.ndarray,
    tied_tol: float,
) -> float:
    """Sum of ``w_i * (concordant + ties / 2)`` over comparable pairs, divided by the weights."""
    n = durations.shape[0]
    # Positions: time descending, censored before events at a tied time. For event i the
    # patients it is comparable with are then exactly the first s_i positions.
    order = np.lexsort((events, -durations))
    sorted_risk = np.sort(risk)
    rank = np.searchsorted(sorted_risk, risk, side="left")  # #{j : r_j < r_i}
    pos_rank = rank[order].astype(np.int64)

    query = np.flatnonzero(events & (weights > 0))
    d_q, r_q = durations[query], risk[query]
    sorted_d = np.sort(durations)
    cens_d = np.sort(durations[~events])
    prefix = (n - np.searchsorted(sorted_d, d_q, side="right")) + (
        np.searchsorted(cens_d, d_q, side="right") - np.searchsorted(cens_d, d_q, side="left")
    )
    # r_j < r_i - tol  <=>  rank_j < #{r < r_i - tol};  r_j <= r_i + tol  <=>  rank_j < #{r <= ..}
    below = np.searchsorted(sorted_risk, r_q - tied_tol, side="left")
    upto = np.searchsorted(sorted_risk, r_q + tied_tol, side="right")
    both = _count_prefix_below(
        pos_rank, np.concatenate([prefix, prefix]), np.concatenate([below, upto])
    )
    concordant, at_most = both[: query.size], both[query.size :]
    ties = at_most - concordant
    w = weights[query]
    denominator = float(np.sum(w * prefix))
    if denominator <= 0:
        raise ValueError(
            "no comparable pairs: a pair is comparable when the patient with the shorter time "
            "had an event (and, for Uno's C, that time is before tau). Check that events has "
            "some 1s and that not every event is at the largest time"
        )
    return float(np.sum(w * (concordant + 0.5 * ties)) / denominator)


def concordance_index(durations: Any, risk: Any, events: Any, tied_tol: float = 1e-8) -> float:
    r"""Harrell's concordance index for a risk score (higher risk = earlier event).

    .. math::
        C = \frac{\sum_{i,j} \delta_i\, \mathbb{1}\{T_i < T_j \text{ or }
        (T_i = T_j, \delta_j = 0)\} \bigl(\mathbb{1}\{r_i > r_j\}
        + \tfrac12 \mathbb{1}\{r_i = r_j\}\bigr)}
        {\sum_{i,j} \delta_i\, \mathbb{1}\{T_i < T_j \text{ or } (T_i = T_j, \delta_j = 0)\}}

    A pair is comparable when the shorter time is an event; it is concordant when that patient
    has the higher risk; tied risks (``|r_i - r_j| <= tied_tol``) count one half. ``0.5`` is
    a random score, ``1`` a perfect ranking. Runs in :math:`O(n \log^2 n)` without a Python
    loop over patients (10,000 patients in a few milliseconds).

    Equals ``sksurv.metrics.concordance_index_censored(events, durations, risk)[0]`` and
    ``lifelines.utils.concordance_index(durations, -risk, events)``: lifelines scores
    *predicted survival times* (higher = later event), so it needs the negated risk. lifelines
    calls risks tied only when exactly equal; the default ``tied_tol=1e-8`` is scikit-survival's.

    Args:
        durations: observed times :math:`T_i` (event or censoring), non-negative.
        risk: predicted risk :math:`r_i`; only its order matters.
        events: :math:`\delta_i`, 1 (or True) for an event, 0 for censoring.
        tied_tol: risks closer than this count as tied.

    Shapes:
        - durations, risk, events: :math:`(n,)`
        - output: scalar

    Raises:
        ValueError: on mismatched lengths, NaN/inf, negative durations, events not 0/1, or no
            comparable pair (e.g. every patient censored).

    Reference:
        Harrell, F. E., Califf, R. M., Pryor, D. B., Lee, K. L., Rosati, R. A. (1982).
        Evaluating the yield of medical tests. *JAMA* 247(18), 2543-2546.
    """
    d, e = check_survival(durations, events)
    r = check_1d(risk, "risk", n=d.shape[0])
    return _weighted_concordance(d, e, r, np.ones_like(d), tied_tol)


def concordance_index_ipcw(
    durations: Any,
    risk: Any,
    events: Any,
    tau: float | None = None,
    durations_train: Any = None,
    events_train: Any = None,
    tied_tol: float = 1e-8,
) -> float:
    r"""Uno's inverse-probability-of-censoring weighted concordance index, truncated at tau.

    .. math::
        C_\tau = \frac{\sum_{i,j} \delta_i\, \hat G(T_i)^{-2}\, \mathbb{1}\{T_i < \tau\}\,
        \mathbb{1}\{T_i < T_j\} \bigl(\mathbb{1}\{r_i > r_j\} + \tfrac12 \mathbb{1}\{r_i = r_j\}\bigr)}
        {\sum_{i,j} \delta_i\, \hat G(T_i)^{-2}\, \mathbb{1}\{T_i < \tau\}\, \mathbb{1}\{T_i < T_j\}}

    where :math:`\hat G` is the Kaplan-Meier estimate of the censoring survival function from
    the training data. Harrell's C depends on the censoring pattern of the test set; the
    weights remove that dependence, so :math:`C_\tau` estimates the probability that of two
    patients, the one with the event before :math:`\tau` had the higher risk. As in Harrell's
    C, a censored :math:`T_j` equal to :math:`T_i` counts as :math:`T_i < T_j`.

    Equals ``sksurv.metrics.concordance_index_ipcw(y_train, y_test, risk, tau)[0]``.
    Deliberate difference: scikit-survival returns ``nan`` when every comparable pair has zero
    weight (all events at or after ``tau``); this raises.

    Args:
        durations: test-set observed times.
        risk: predicted risk (higher = earlier event).
        events: test-set event indicators (1 = event, 0 = censored).
        tau: truncation time; only events before ``tau`` count. ``None`` uses all events. Pick
            it so that :math:`\hat G(\tau) > 0` (someone is still followed at ``tau``).
        durations_train: training times for :math:`\hat G`; ``None`` uses the test data.
        events_train: training event indicators, given with ``durations_train``.
        tied_tol: risks closer than this count as tied.

    Shapes:
        - durations, risk, events: :math:`(n,)`
        - durations_train, events_train: :math:`(m,)`
        - output: scalar

    Raises:
        ValueError: on bad inputs (see :func:`concordance_index`), a non-positive ``tau``, no
            comparable pair before ``tau``, or an event time where :math:`\hat G` is zero or
            unknown (after the last training follow-up time).

    Reference:
        Uno, H., Cai, T., Pencina, M. J., D'Agostino, R. B., Wei, L. J. (2011). On the
        C-statistics for evaluating overall adequacy of risk prediction procedures with
        censored survival data. *Statistics in Medicine* 30(10), 1105-1117.
    """
    d, e = check_survival(durations, events)
    r = check_1d(risk, "risk", n=d.shape[0])
    if tau is not None and not (np.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a positive finite time, got {tau!r}")
    knots, g = _censoring_survival(d, e, durations_train, events_train)
    used = e if tau is None else e & (d < tau)
    weights = np.zeros_like(d)
    if used.any():
        g_at = _step_at(knots, g, d[used])
        weights[used] = _inverse_weights(g_at, d[used], "at an event time") ** 2
    return _weighted_concordance(d, e, r, weights, tied_tol)


def survival_at_times(surv: Any, time_grid: Any, times: Any) -> np.ndarray:
    r"""Read step-function survival curves at arbitrary times.

    .. math::
        \hat S_i(t) = \text{surv}[i, k(t)], \quad k(t) = \max\{k : \text{time\_grid}[k] \le t\},
        \qquad \hat S_i(t) = 1 \text{ for } t < \text{time\_grid}[0]

    Column ``k`` of ``surv`` is the survival at the end of bin ``k`` (time ``time_grid[k]``),
    held constant until the next grid time, as for a discrete-time model.

    Args:
        surv: predicted survival curves.
        time_grid: strictly increasing times of the columns of ``surv``.
        times: where to read the curves (any order).

    Shapes:
        - surv: :math:`(n, T)`; time_grid: :math:`(T,)`; times: :math:`(K,)`
        - output: :math:`(n, K)`

    Raises:
        ValueError: on a grid that is not strictly increasing, mismatched shapes, values
            outside [0, 1], or NaN/inf.
    """
    grid = check_1d(time_grid, "time_grid")
    if grid.shape[0] > 1 and not (np.diff(grid) > 0).all():
        raise ValueError("time_grid must be strictly increasing")
    s = to_numpy(surv, "surv")
    if s.ndim != 2 or s.shape[1] != grid.shape[0]:
        raise ValueError(
            f"surv must have shape (n, {grid.shape[0]}) to match time_grid, got {s.shape}"
        )
    s = _check_surv_matrix(s, s.shape[0], grid.shape[0])
    t = check_1d(np.atleast_1d(to_numpy(times, "times")), "times")
    idx = np.searchsorted(grid, t, side="right") - 1
    padded = np.concatenate([np.ones((s.shape[0], 1)), s], axis=1)  # column 0: S = 1
    return padded[:, idx + 1]


def concordance_td(
    durations: Any,
    surv: Any,
    events: Any,
    time_grid: Any,
    tied_tol: float = 1e-8,
    max_block: int = 4_000_000,
) -> float:
    r"""Antolini's time-dependent concordance index for predicted survival curves.

    .. math::
        C^{td} = \frac{\sum_{i,j} \delta_i\, \mathbb{1}\{T_i < T_j \text{ or }
        (T_i = T_j, \delta_j = 0)\} \bigl(\mathbb{1}\{\hat S_i(T_i) < \hat S_j(T_i)\}
        + \tfrac12 \mathbb{1}\{\hat S_i(T_i) = \hat S_j(T_i)\}\bigr)}
        {\sum_{i,j} \delta_i\, \mathbb{1}\{T_i < T_j \text{ or } (T_i = T_j, \delta_j = 0)\}}

    Each comparable pair is judged at the earlier event time :math:`T_i`: concordant when the
    patient who had the event was given the lower survival *at that time*. Curves that cross
    are therefore scored where it matters, and when they never cross (proportional hazards)
    the value equals Harrell's C of any risk that orders them. Survival is read from the grid
    as a step function (see :func:`survival_at_times`; :math:`\hat S = 1` before the first grid
    time). Ties within ``tied_tol`` count one half, as in :func:`concordance_index` (pycox's
    ``"antolini"`` method counts them zero; its ``"adj_antolini"`` also pairs tied events).
    Computed in blocks of at most ``max_block`` pair comparisons.

    Args:
        durations: observed times.
        surv: predicted survival curves, column ``k`` at ``time_grid[k]``.
        events: event indicators (1 = event, 0 = censored).
        time_grid: strictly increasing times of the columns of ``surv``.
        tied_tol: survival probabilities closer than this count as tied.
        max_block: the most pair comparisons held in memory at once.

    Shapes:
        - durations, events: :math:`(n,)`; surv: :math:`(n, T)`; time_grid: :math:`(T,)`
        - output: scalar

    Raises:
        ValueError: on bad inputs (see :func:`concordance_index`), mismatched ``surv`` and
            ``time_grid``, survival outside [0, 1], or no comparable pair.

    Reference:
        Antolini, L., Boracchi, P., Biganzoli, E. (2005). A time-dependent discrimination index
        for survival data. *Statistics in Medicine* 24(24), 3927-3944.
    """
    d, e = check_survival(durations, events)
    grid = check_1d(time_grid, "time_grid")
    s = _check_surv_matrix(surv, d.shape[0], grid.shape[0])
    n = d.shape[0]
    # Sort by time ascending, events before censorings at a tied time: the patients event i
    # is comparable with are then the positions from start_i to the end.
    order = np.lexsort((~e, d))
    d, e, s = d[order], e[order], s[order]
    event_pos = np.flatnonzero(e)
    start = np.searchsorted(d, d[event_pos], side="left") + (
        np.searchsorted(d[e], d[event_pos], side="right")
        - np.searchsorted(d[e], d[event_pos], side="left")
    )
    event_pos, start = event_pos[start < n], start[start < n]
    if event_pos.size == 0:
        raise ValueError(
            "no comparable pairs: need an event followed by a later (or tied censored) time"
        )
    col = np.searchsorted(grid, d[event_pos], side="right")  # column in [1 | surv]
    padded = np.concatenate([np.ones((n, 1)), s], axis=1)  # (n, T + 1), column 0: S = 1
    own = padded[event_pos, col]  # S_i(T_i), (E,)
    positions = np.arange(n)

    numerator = 0.0
    denominator = float(np.sum(n - start))
    block = max(1, int(max_block) // n)
    for lo in range(0, event_pos.size, block):
        sl = slice(lo, lo + block)
        first = int(start[sl].min())
        others = padded[first:, col[sl]]  # S_j(T_i) for candidate j, (n - first, B)
        comparable = positions[first:, None] >= start[None, sl]  # (n - first, B)
        diff = others - own[None, sl]
        tie = np.abs(diff) <= tied_tol
        numerator += np.sum(comparable & (diff > 0) & ~tie) + 0.5 * np.sum(comparable & tie)
    return float(numerator / denominator)


# ---------------------------------------------------------------------------------------------
# Brier score
# ---------------------------------------------------------------------------------------------


def brier_score(
    durations: Any,
    surv: Any,
    events: Any,
    times: Any,
    durations_train: Any = None,
    events_train: Any = None,
) -> np.ndarray:
    r"""Inverse-probability-of-censoring weighted Brier score at given times (Graf et al.).

    .. math::
        \mathrm{BS}(t) = \frac{1}{n} \sum_{i=1}^n \Bigl[
        \frac{\hat S_i(t)^2\, \mathbb{1}\{T_i \le t, \delta_i = 1\}}{\hat G(T_i)}
        + \frac{(1 - \hat S_i(t))^2\, \mathbb{1}\{T_i > t\}}{\hat G(t)} \Bigr]

    The squared error between the predicted survival and the observed status at :math:`t`;
    patients censored before :math:`t` drop out and the others are reweighted by the inverse
    of the censoring survival :math:`\hat G` (Kaplan-Meier on the training data). Lower is
    better; predicting 0.5 for everyone scores 0.25.

    Equals ``sksurv.metrics.brier_score(y_train, y_test, surv, times)[1]``. Deliberate
    differences: ``times`` must be strictly increasing (scikit-survival sorts and deduplicates
    them, which silently misaligns them with the columns of ``surv``); a weight with
    :math:`\hat G = 0` raises instead of being set to zero; and :math:`\hat G` is evaluated only
    where a weight is used, so test patients censored after the last training time do not
    raise.

    Args:
        durations: test-set observed times.
        surv: predicted survival :math:`\hat S_i(t_k)`, column ``k`` at ``times[k]``; read
            curves from another grid with :func:`survival_at_times`.
        events: test-set event indicators (1 = event, 0 = censored).
        times: strictly increasing evaluation times within ``[min(durations), max(durations))``.
        durations_train: training times for :math:`\hat G`; ``None`` uses the test data.
        events_train: training event indicators, given with ``durations_train``.

    Shapes:
        - durations, events: :math:`(n,)`; surv: :math:`(n, K)` (or :math:`(n,)` when
          :math:`K = 1`); times: :math:`(K,)`
        - output: :math:`(K,)`

    Raises:
        ValueError: on bad inputs, ``times`` outside the follow-up, ``surv`` of the wrong shape
            or outside [0, 1], or a needed :math:`\hat G` that is zero or unknown.

    Reference:
        Graf, E., Schmoor, C., Sauerbrei, W., Schumacher, M. (1999). Assessment and comparison
        of prognostic classification schemes for survival data. *Statistics in Medicine*
        18(17-18), 2529-2545.
    """
    d, e = check_survival(durations, events)
    t = _check_times(times, d)
    s = _check_surv_matrix(surv, d.shape[0], t.shape[0])
    knots, g = _censoring_survival(d, e, durations_train, events_train)
    return _brier_terms(d, e, s, t, knots, g).mean(axis=0)


def _brier_terms(
    d: np.ndarray, e: np.ndarray, s: np.ndarray, t: np.ndarray, knots: np.ndarray, g: np.ndarray
) -> np.ndarray:
    """Each patient's IPCW squared error at each time, ``(n, K)``: the Brier score's summands."""
    inv_g_t = _inverse_weights(_step_at(knots, g, t), t, "at an evaluation time")  # (K,)
    case_any = e & (d <= t[-1])
    inv_g_y = np.zeros_like(d)
    inv_g_y[case_any] = _inverse_weights(
        _step_at(knots, g, d[case_any]), d[case_any], "at an event time"
    )
    is_case = case_any[:, None] & (d[:, None] <= t[None, :])  # (n, K)
    is_control = d[:, None] > t[None, :]  # (n, K)
    return np.where(is_case, s**2 * inv_g_y[:, None], 0.0) + np.where(
        is_control, (1.0 - s) ** 2 * inv_g_t[None, :], 0.0
    )


def integrated_brier_score(
    durations: Any,
    surv: Any,
    events: Any,
    times: Any,
    durations_train: Any = None,
    events_train: Any = None,
) -> float:
    r"""Integrated Brier score: the Brier score averaged over ``[times[0], times[-1]]``.

    .. math::
        \mathrm{IBS} = \frac{1}{t_K - t_1} \int_{t_1}^{t_K} \mathrm{BS}(t)\, dt

    with the integral taken by the trapezoidal rule over ``times`` (so a fine grid of
    ``times`` gives a better approximation).

    Equals ``sksurv.metrics.integrated_brier_score(y_train, y_test, surv, times)``; see
    :func:`brier_score` for the deliberate differences.

    Args:
        durations, surv, events, times, durations_train, events_train: as in
            :func:`brier_score`; at least two ``times``.

    Shapes:
        - durations, events: :math:`(n,)`; surv: :math:`(n, K)`; times: :math:`(K,)`
        - output: scalar

    Raises:
        ValueError: with fewer than two ``times``, or as in :func:`brier_score`.

    Reference:
        Graf, E., Schmoor, C., Sauerbrei, W., Schumacher, M. (1999). Assessment and comparison
        of prognostic classification schemes for survival data. *Statistics in Medicine*
        18(17-18), 2529-2545.
    """
    t = np.atleast_1d(to_numpy(times, "times"))
    if t.ndim != 1 or t.shape[0] < 2:
        raise ValueError(f"integrated_brier_score needs at least two times, got {t.shape[0]}")
    scores = brier_score(durations, surv, events, t, durations_train, events_train)
    return float(np.trapezoid(scores, t) / (t[-1] - t[0]))


# ---------------------------------------------------------------------------------------------
# ROC-type metrics
# ---------------------------------------------------------------------------------------------


def _weighted_roc_auc(
    scores: np.ndarray, pos_weight: np.ndarray, neg_weight: np.ndarray, tied_tol: float
) -> float:
    """Trapezoidal area under the ROC curve of weighted positives and negatives.

    Thresholds run from the highest score down; a run of scores whose consecutive gaps are at
    most ``tied_tol`` is one threshold, so ties add a diagonal segment (half credit).
    """
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    tp = np.cumsum(pos_weight[order])
    fp = np.cumsum(neg_weight[order])
    # keep the last index of every run of tied scores: ties with the *next* score are dropped
    tied_next = np.abs(np.diff(sorted_scores)) <= tied_tol
    keep = np.append(~tied_next, True)
    tpr = np.concatenate([[0.0], tp[keep] / tp[-1]])
    fpr = np.concatenate([[0.0], fp[keep] / fp[-1]])
    return float(np.trapezoid(tpr, fpr))


def cumulative_dynamic_auc(
    durations: Any,
    risk: Any,
    events: Any,
    times: Any,
    durations_train: Any = None,
    events_train: Any = None,
    tied_tol: float = 1e-8,
) -> tuple[np.ndarray, float]:
    r"""Cumulative/dynamic time-dependent AUC with IPCW, and its survival-weighted mean.

    Cases at :math:`t` are the patients with an event by :math:`t`, weighted by
    :math:`\omega_i = 1 / \hat G(T_i)`; controls are those still event-free after :math:`t`:

    .. math::
        \widehat{\mathrm{AUC}}(t) = \frac{\sum_{i,j} \mathbb{1}\{T_j > t\}\,
        \mathbb{1}\{T_i \le t\}\, \delta_i\, \omega_i\, \bigl(\mathbb{1}\{r_i > r_j\}
        + \tfrac12 \mathbb{1}\{r_i = r_j\}\bigr)}
        {\bigl(\sum_j \mathbb{1}\{T_j > t\}\bigr) \bigl(\sum_i \mathbb{1}\{T_i \le t\}\,
        \delta_i\, \omega_i\bigr)}

    computed as the trapezoidal area under the weighted ROC curve (sort-based, no pairs). The
    summary is the mean AUC weighted by the Kaplan-Meier event density of the test data,

    .. math::
        \overline{\mathrm{AUC}} = \frac{\sum_k \widehat{\mathrm{AUC}}(t_k)\,
        (\hat S(t_{k-1}) - \hat S(t_k))}{1 - \hat S(t_K)}, \qquad \hat S(t_0) = 1 .

    Equals ``sksurv.metrics.cumulative_dynamic_auc(y_train, y_test, risk, times)`` (both the
    AUCs and the mean). Deliberate differences: ``times`` must be strictly increasing; a time
    with no case raises instead of returning ``nan``; and :math:`\hat G` is evaluated only at
    the cases' times, so events after ``times[-1]`` need not lie within the training follow-up.

    Args:
        durations: test-set observed times.
        risk: predicted risk (higher = earlier event); a 2-D array gives one risk per time,
            column ``k`` used at ``times[k]`` (e.g. ``1 - surv`` at those times).
        events: test-set event indicators (1 = event, 0 = censored).
        times: strictly increasing times within ``[min(durations), max(durations))``.
        durations_train: training times for :math:`\hat G`; ``None`` uses the test data.
        events_train: training event indicators, given with ``durations_train``.
        tied_tol: risks closer than this count as tied.

    Shapes:
        - durations, events: :math:`(n,)`; risk: :math:`(n,)` or :math:`(n, K)`;
          times: :math:`(K,)`
        - output: ``(auc, mean_auc)`` with auc :math:`(K,)` and mean_auc a scalar

    Raises:
        ValueError: on bad inputs, ``times`` outside the follow-up, a time with no case, or a
            case whose :math:`\hat G` is zero or unknown.

    References:
        Uno, H., Cai, T., Tian, L., Wei, L. J. (2007). Evaluating prediction rules for t-year
        survivors with censored regression models. *JASA* 102(478), 527-537.
        Hung, H., Chiang, C.-T. (2010). Estimation methods for time-dependent AUC models with
        survival data. *Canadian Journal of Statistics* 38(1), 8-26.
    """
    d, e = check_survival(durations, events)
    t = _check_times(times, d)
    n, k_times = d.shape[0], t.shape[0]
    r = to_numpy(risk, "risk")
    if r.ndim == 1:
        r = check_1d(r, "risk", n=n)
        r = np.broadcast_to(r[:, None], (n, k_times))
    elif r.ndim != 2 or r.shape != (n, k_times):
        raise ValueError(f"risk must have shape ({n},) or ({n}, {k_times}), got {r.shape}")
    check_finite(r, "risk")

    knots, g = _censoring_survival(d, e, durations_train, events_train)
    case_any = e & (d <= t[-1])
    omega = np.zeros_like(d)
    omega[case_any] = _inverse_weights(
        _step_at(knots, g, d[case_any]), d[case_any], "at an event time"
    )
    auc = np.empty(k_times)
    for k, tk in enumerate(t):  # a loop over evaluation times, each column sort-based
        is_case = e & (d <= tk)
        if not is_case.any():
            raise ValueError(
                f"no events at or before time {tk:g}: the AUC there is undefined; start "
                f"times after the first event time {d[e].min() if e.any() else float('nan'):g}"
            )
        auc[k] = _weighted_roc_auc(
            r[:, k], np.where(is_case, omega, 0.0), (d > tk).astype(float), tied_tol
        )
    if k_times == 1:
        return auc, float(auc[0])
    km_t, km_s = _kaplan_meier(d, e)
    s_t = _step_at(km_t, km_s, t, what="Kaplan-Meier survival")
    mean_auc = float(np.sum(auc * -np.diff(np.concatenate([[1.0], s_t]))) / (1.0 - s_t[-1]))
    return auc, mean_auc


def _check_binary(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = check_1d(labels, "labels")
    p = check_1d(scores, "scores", n=y.shape[0], ref="labels")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1 (or boolean)")
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.shape[0]:
        raise ValueError(
            f"labels hold only one class ({n_pos} positives of {y.shape[0]}): the metric is "
            f"undefined"
        )
    return y, p


def auroc(labels: Any, scores: Any) -> float:
    r"""Area under the ROC curve for a binary task (Mann-Whitney form, ties count one half).

    .. math::
        \mathrm{AUROC} = \frac{1}{n_+ n_-} \sum_{i: y_i = 1} \sum_{j: y_j = 0}
        \bigl(\mathbb{1}\{s_i > s_j\} + \tfrac12 \mathbb{1}\{s_i = s_j\}\bigr)

    Equals ``sklearn.metrics.roc_auc_score(labels, scores)``; exactly tied scores are ties.

    Args:
        labels: true classes, 0/1 (or boolean), both present.
        scores: predicted scores (probabilities or logits); higher = more likely positive.

    Shapes:
        - labels, scores: :math:`(n,)`
        - output: scalar

    Raises:
        ValueError: on mismatched lengths, NaN/inf, labels not 0/1, or a single class.

    Reference:
        Hanley, J. A., McNeil, B. J. (1982). The meaning and use of the area under a receiver
        operating characteristic (ROC) curve. *Radiology* 143(1), 29-36.
    """
    y, p = _check_binary(labels, scores)
    return _weighted_roc_auc(p, y, 1.0 - y, tied_tol=0.0)


def auprc(labels: Any, scores: Any) -> float:
    r"""Area under the precision-recall curve as average precision (step-wise, no interpolation).

    .. math::
        \mathrm{AP} = \sum_k (R_k - R_{k-1})\, P_k

    where :math:`P_k` and :math:`R_k` are precision and recall when predicting positive every
    score at or above the :math:`k`-th highest distinct score. A random score has an expected
    AP close to the prevalence, which makes AP the more telling number for rare outcomes.

    Equals ``sklearn.metrics.average_precision_score(labels, scores)``. Deliberate difference:
    no positives raises instead of returning 0 with a warning.

    Args:
        labels: true classes, 0/1 (or boolean), both present.
        scores: predicted scores; higher = more likely positive.

    Shapes:
        - labels, scores: :math:`(n,)`
        - output: scalar

    Raises:
        ValueError: on mismatched lengths, NaN/inf, labels not 0/1, or a single class.

    Reference:
        Zhu, M. (2004). Recall, precision and average precision. Technical report 09,
        Department of Statistics and Actuarial Science, University of Waterloo.
    """
    y, p = _check_binary(labels, scores)
    order = np.argsort(-p, kind="mergesort")
    p_sorted, y_sorted = p[order], y[order]
    last = np.append(np.diff(p_sorted) != 0, True)  # the last index of each distinct score
    tp = np.cumsum(y_sorted)[last]
    predicted_pos = np.flatnonzero(last) + 1.0
    precision = tp / predicted_pos
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


# ---------------------------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------------------------


def calibration_table(
    durations: Any,
    risk: Any,
    events: Any,
    horizon: float,
    n_bins: int = 10,
    alpha: float = 0.05,
) -> pd.DataFrame:
    r"""Predicted versus observed event probability by predicted-risk group at a horizon.

    Patients are sorted by predicted risk and cut into ``n_bins`` groups of (nearly) equal
    size (deciles by default; tied risks are split by their order in the input). In group
    :math:`g` the observed event probability is one minus the Kaplan-Meier survival, which
    handles patients censored before the horizon:

    .. math::
        \hat p^{\text{obs}}_g = 1 - \prod_{s \le h} \Bigl(1 - \frac{d_g(s)}{n_g(s)}\Bigr),
        \qquad \hat p^{\text{pred}}_g = \frac{1}{|g|} \sum_{i \in g} \hat p_i(h)

    with a pointwise :math:`1 - \alpha` confidence interval from Greenwood's variance on the
    log(-log) scale (lifelines' default). A calibrated model lies on the diagonal.

    Args:
        durations: observed times.
        risk: predicted probability of an event by ``horizon``, e.g. from
            :func:`ehrseq.survival.risk_at_horizon`; values in [0, 1].
        events: event indicators (1 = event, 0 = censored).
        horizon: the time at which to compare, within ``(0, max(durations)]``.
        n_bins: number of risk groups (at most the number of patients).
        alpha: one minus the confidence level of the observed-probability interval.

    Shapes:
        - durations, risk, events: :math:`(n,)`
        - output: DataFrame with ``n_bins`` rows and columns ``bin`` (0 = lowest risk),
          ``n``, ``n_events`` (events by the horizon), ``risk_min``, ``risk_max``,
          ``predicted``, ``observed``, ``observed_lower``, ``observed_upper``; ``df.attrs``
          holds ``horizon`` and ``alpha``.

    Raises:
        ValueError: on bad inputs, risks outside [0, 1], a horizon outside the follow-up, or
            ``n_bins`` not in ``[1, n]``.

    References:
        Kaplan, E. L., Meier, P. (1958). Nonparametric estimation from incomplete observations.
        *JASA* 53(282), 457-481.
        Crowson, C. S., Atkinson, E. J., Therneau, T. M. (2016). Assessing calibration of
        prognostic risk scores. *Statistical Methods in Medical Research* 25(4), 1692-1706.
    """
    d, e = check_survival(durations, events)
    r = check_1d(risk, "risk", n=d.shape[0])
    n = d.shape[0]
    if (r < 0).any() or (r > 1).any():
        raise ValueError("risk must be a predicted event probability in [0, 1]")
    if not (np.isfinite(horizon) and 0 < horizon <= d.max()):
        raise ValueError(f"horizon must lie within the follow-up (0, {d.max():g}], got {horizon!r}")
    if not (isinstance(n_bins, int | np.integer) and 1 <= n_bins <= n):
        raise ValueError(f"n_bins must be an integer in [1, {n}], got {n_bins!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    from scipy.stats import norm  # ~0.8 s to import: only where an interval is drawn

    z = norm.ppf(1 - alpha / 2)
    order = np.argsort(r, kind="mergesort")
    bins = np.empty(n, dtype=np.int64)
    bins[order] = np.arange(n) * n_bins // n  # (n,), equal-size groups by predicted risk

    rows = []
    for b in range(n_bins):  # a loop over the few groups, each Kaplan-Meier vectorised
        m = bins == b
        uniq, at_risk, n_ev, _ = _risk_set_counts(d[m], e[m])
        upto = uniq <= horizon
        at_risk, n_ev = at_risk[upto], n_ev[upto]
        surv = float(np.prod(1.0 - n_ev / at_risk))
        with np.errstate(divide="ignore", invalid="ignore"):
            greenwood = float(np.sum(n_ev / (at_risk * (at_risk - n_ev))))
            if 0.0 < surv < 1.0 and np.isfinite(greenwood):
                log_s = np.log(surv)
                half = z * np.sqrt(greenwood) / abs(log_s)
                s_lo = np.exp(-np.exp(np.log(-log_s) + half))
                s_hi = np.exp(-np.exp(np.log(-log_s) - half))
            else:  # no event yet (S = 1) or everyone has had one (S = 0): no spread
                s_lo = s_hi = surv
        rows.append(
            {
                "bin": b,
                "n": int(m.sum()),
                "n_events": int((e[m] & (d[m] <= horizon)).sum()),
                "risk_min": float(r[m].min()),
                "risk_max": float(r[m].max()),
                "predicted": float(r[m].mean()),
                "observed": 1.0 - surv,
                "observed_lower": 1.0 - s_hi,
                "observed_upper": 1.0 - s_lo,
            }
        )
    table = pd.DataFrame(rows)
    table.attrs.update(horizon=float(horizon), alpha=float(alpha))
    return table


def calibration_error(
    durations: Any, risk: Any, events: Any, horizon: float, n_bins: int = 10
) -> float:
    r"""Mean absolute gap between predicted and observed risk over groups of predicted risk.

    .. math::
        \mathrm{CE} = \frac{1}{G} \sum_{g=1}^{G}
        \bigl|\hat p^{\text{pred}}_g - \hat p^{\text{obs}}_g\bigr|

    with the ``n_bins`` groups, the mean predictions and the Kaplan-Meier observed risks of
    :func:`calibration_table`. 0 for a model calibrated in every group; lower is better.

    Args:
        durations, risk, events, horizon, n_bins: as in :func:`calibration_table`.

    Shapes:
        - durations, risk, events: :math:`(n,)`
        - output: scalar

    Raises:
        ValueError: as :func:`calibration_table`.
    """
    table = calibration_table(durations, risk, events, horizon, n_bins=n_bins)
    return float(np.abs(table["predicted"] - table["observed"]).mean())


def calibration_error_debiased(
    durations: Any, risk: Any, events: Any, horizon: float, n_bins: int = 10
) -> float:
    r"""Mean squared gap of predicted and observed risk, less the noise of the observed.

    Each group's observed incidence :math:`\hat p^{\text{obs}}_g` is an estimate, so
    even a perfectly calibrated model shows gaps, and a mean of absolute (or squared)
    gaps has a positive noise floor (:func:`calibration_error` of the truth is not 0).
    Kumar et al.'s debiased estimator subtracts each group's sampling variance from its
    squared gap:

    .. math::
        \widehat{\mathrm{CE}}^2 = \frac{1}{G} \sum_{g=1}^{G} \Bigl[
        \bigl(\hat p^{\text{pred}}_g - \hat p^{\text{obs}}_g\bigr)^2 - \hat V_g \Bigr],
        \qquad \hat V_g = \frac{n_g}{n_g - 1}\, \hat S_g(h)^2
        \sum_{s \le h} \frac{d_g(s)}{n_g(s)\,(n_g(s) - d_g(s))}

    with Greenwood's variance of the group's Kaplan-Meier estimate, scaled by
    :math:`n_g / (n_g - 1)` so that without censoring it is
    :math:`\bar y_g (1 - \bar y_g) / (n_g - 1)`, the unbiased variance of a group's
    event rate (Kumar et al.'s correction): then :math:`\widehat{\mathrm{CE}}^2` is
    unbiased for the mean squared gap between the mean predicted and the true risk of
    each group, 0 for a calibrated model. With censoring Greenwood's variance makes it
    approximately so. It can be negative (gaps smaller than the noise);
    :math:`\sqrt{\max(\widehat{\mathrm{CE}}^2, 0)}` is a root-mean-square gap on the
    probability scale.

    Args:
        durations, risk, events, horizon, n_bins: as in :func:`calibration_table`.

    Shapes:
        - durations, risk, events: :math:`(n,)`
        - output: scalar, in squared probability units

    Raises:
        ValueError: as :func:`calibration_table`.

    References:
        Kumar, A., Liang, P., Ma, T. (2019). Verified uncertainty calibration. *NeurIPS*
        32.
    """
    table = calibration_table(durations, risk, events, horizon, n_bins=n_bins)
    d, e = check_survival(durations, events)
    r = check_1d(risk, "risk", n=d.shape[0])
    n = d.shape[0]
    bins = np.empty(n, dtype=np.int64)
    bins[np.argsort(r, kind="mergesort")] = np.arange(n) * n_bins // n  # as the table
    variance = np.zeros(n_bins)
    for b in range(n_bins):
        m = bins == b
        uniq, at_risk, n_ev, _ = _risk_set_counts(d[m], e[m])
        upto = uniq <= horizon
        at_risk, n_ev = at_risk[upto], n_ev[upto]
        surv = float(np.prod(1.0 - n_ev / at_risk))
        size = int(m.sum())
        if surv > 0.0 and size > 1:  # S = 0: everyone had the event, no spread
            greenwood = float(np.sum(n_ev / (at_risk * (at_risk - n_ev))))
            variance[b] = surv**2 * greenwood * size / (size - 1)
    gap = (table["predicted"] - table["observed"]).to_numpy()
    return float(np.mean(gap**2 - variance))


# ---------------------------------------------------------------------------------------------
# Bootstrap resamples as multiplicities
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resamples:
    """A block of bootstrap resamples of the same ``n`` patients.

    Attributes:
        indices: ``(B, n)``: the patients drawn into each resample, in the order drawn.
        counts: ``(B, n)``: how often each patient was drawn, the multiplicities
            ``counts[b] = bincount(indices[b], minlength=n)``.
    """

    indices: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, indices: Any) -> Resamples:
        """The block of resamples drawn as ``indices`` ``(B, n)``, with their multiplicities."""
        idx = np.asarray(indices)
        if idx.ndim != 2:
            raise ValueError(f"indices must have shape (B, n), got {idx.shape}")
        b, n = idx.shape
        flat = (idx + n * np.arange(b)[:, None]).ravel()
        return cls(idx, np.bincount(flat, minlength=b * n).reshape(b, n))


#: Scores a block of bootstrap resamples at once: :class:`Resamples` of ``B`` resamples in,
#: the metric on each out, shape ``(B,)``, NaN where the metric is undefined (where the metric
#: itself raises a ``ValueError``).
Scorer = Callable[[Resamples], np.ndarray]


def _multiplicities(resamples: Resamples, n: int, dtype: Any = float) -> np.ndarray:
    """``(B, n)`` multiplicities as ``dtype``; float32 only where its sums of counts are exact."""
    if dtype == np.float32 and n >= 2**24:
        dtype = float
    m = np.asarray(resamples.counts, dtype=dtype)
    if m.ndim != 2 or m.shape[1] != n:
        raise ValueError(f"multiplicities must have shape (B, {n}), got {m.shape}")
    return m


class _PrefixBelowSums:
    """``out[b] = sum over q, p of c[b, q] w[b, p] [p < prefix[q]] [pos_rank[p] < bound[q]]``.

    The weighted form of :func:`_count_prefix_below` for a block of weight rows ``w`` and
    query coefficients ``c``, with aligned blocks of ``2**(radix_bits * level)`` positions: a
    prefix is at most ``2**radix_bits - 1`` of them per level. The items are sorted by
    ``(block, rank)`` once per level here, so that each block of rows only needs one
    cumulative sum per level and two look-ups per block of a query. Blocks of ``4**level``
    (``radix_bits=2``) need half the cumulative sums of blocks of ``2**level``.
    """

    def __init__(
        self, pos_rank: np.ndarray, prefix: np.ndarray, bound: np.ndarray, radix_bits: int = 2
    ) -> None:
        n = pos_rank.shape[0]
        stride = n + 1
        positions = np.arange(n, dtype=np.int64)
        self.n, self.levels = n, []
        for shift in range(0, max(1, int(n).bit_length()), radix_bits):
            digit = (prefix >> shift) & ((1 << radix_bits) - 1)  # blocks of this size used
            uses = np.concatenate([np.flatnonzero(digit >= k) for k in range(1, 1 << radix_bits)])
            if uses.size == 0:
                continue
            back = np.concatenate(
                [np.full(int((digit >= k).sum()), k) for k in range(1, 1 << radix_bits)]
            )
            keys = (positions >> shift) * stride + pos_rank  # (n,)
            perm = np.argsort(keys, kind="stable")
            block = (prefix[uses] >> shift) - back  # the k-th block back from the prefix's end
            start = np.searchsorted(keys[perm], block * stride, side="left")
            stop = np.searchsorted(keys[perm], block * stride + bound[uses], side="left")
            self.levels.append((perm, uses, start, stop))

    def __call__(self, w: np.ndarray, c: np.ndarray) -> np.ndarray:
        out = np.zeros(w.shape[0])  # (B,)
        cum = np.zeros((w.shape[0], self.n + 1), dtype=w.dtype)  # (B, n + 1), column 0 stays 0
        for perm, uses, start, stop in self.levels:
            np.cumsum(np.take(w, perm, axis=1), axis=1, out=cum[:, 1:])
            in_block = np.take(cum, stop, axis=1) - np.take(cum, start, axis=1)  # (B, U)
            out += np.sum(np.take(c, uses, axis=1) * in_block, axis=1)
        return out


def _concordance_scorer(
    durations: np.ndarray,
    events: np.ndarray,
    risk: np.ndarray,
    weights: np.ndarray,
    tied_tol: float,
) -> Scorer:
    """:func:`_weighted_concordance` on every resample, from one sort of the full data."""
    n = durations.shape[0]
    order = np.lexsort((events, -durations))  # the positions of _weighted_concordance
    sorted_risk = np.sort(risk)
    pos_rank = np.searchsorted(sorted_risk, risk, side="left")[order].astype(np.int64)
    query = np.flatnonzero(events & (weights > 0))
    d_q, r_q = durations[query], risk[query]
    cens_d = np.sort(durations[~events])
    prefix = (n - np.searchsorted(np.sort(durations), d_q, side="right")) + (
        np.searchsorted(cens_d, d_q, side="right") - np.searchsorted(cens_d, d_q, side="left")
    )
    below = np.searchsorted(sorted_risk, r_q - tied_tol, side="left")
    upto = np.searchsorted(sorted_risk, r_q + tied_tol, side="right")
    sums = _PrefixBelowSums(
        pos_rank, np.concatenate([prefix, prefix]), np.concatenate([below, upto])
    )
    w_q = weights[query]

    def score(resamples: Resamples) -> np.ndarray:
        m = _multiplicities(resamples, n, np.float32)  # counts: float32 sums of them are exact
        in_order = np.take(m, order, axis=1)  # (B, n), the multiplicities in position order
        cum = np.zeros((m.shape[0], n + 1), dtype=m.dtype)
        np.cumsum(in_order, axis=1, out=cum[:, 1:])
        wm = np.take(m, query, axis=1) * w_q  # (B, Q): each query's weight times its copies
        # half of (m_j summed over r_j < r_i - tol) plus half of (over r_j <= r_i + tol)
        numerator = sums(in_order, np.concatenate([0.5 * wm, 0.5 * wm], axis=1))
        denominator = np.sum(wm * np.take(cum, prefix, axis=1), axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(denominator > 0, numerator / denominator, np.nan)

    return score


def concordance_index_resampler(
    durations: Any, risk: Any, events: Any, tied_tol: float = 1e-8
) -> Scorer:
    r""":func:`concordance_index` on blocks of bootstrap resamples, from their multiplicities.

    A resample holds patient :math:`i` with multiplicity :math:`m_i`. Copies of one patient
    share their time and event flag, so they are never comparable with each other (two events
    at the same time are not comparable, a censored patient is never the earlier one), and

    .. math::
        C(m) = \frac{\sum_{i,j} m_i m_j\, \delta_i\, \mathrm{comp}_{ij}
        \bigl(\mathbb{1}\{r_i > r_j\} + \tfrac12 \mathbb{1}\{r_i = r_j\}\bigr)}
        {\sum_{i,j} m_i m_j\, \delta_i\, \mathrm{comp}_{ij}}

    with :math:`\mathrm{comp}_{ij}` and the ties exactly as in :func:`concordance_index`.
    The sort by time and the risk ranks are computed once; each block of resamples then needs
    one cumulative sum of :math:`m` per level of :func:`_count_prefix_below`'s blocks. The sums
    are sums of integers, so the values equal the metric on the resampled arrays.

    Args:
        durations, risk, events, tied_tol: as in :func:`concordance_index`.

    Shapes:
        - durations, risk, events: :math:`(n,)`
        - output: a :data:`Scorer`, :class:`Resamples` to ``(B,)`` values (NaN without a
          comparable pair)

    Raises:
        ValueError: on bad inputs (see :func:`concordance_index`).
    """
    d, e = check_survival(durations, events)
    r = check_1d(risk, "risk", n=d.shape[0])
    return _concordance_scorer(d, e, r, np.ones_like(d), tied_tol)


def concordance_index_ipcw_resampler(
    durations: Any,
    risk: Any,
    events: Any,
    tau: float | None = None,
    durations_train: Any = None,
    events_train: Any = None,
    tied_tol: float = 1e-8,
) -> Scorer | None:
    r""":func:`concordance_index_ipcw` on blocks of bootstrap resamples, from their multiplicities.

    With :math:`\hat G` from the training data, the weight :math:`\hat G(T_i)^{-2}` of every
    patient is fixed, and the resampled :math:`C_\tau` is the multiplicity-weighted sum of
    :func:`concordance_index_resampler` with those weights. Without training data
    :math:`\hat G` would be re-estimated on every resample: there is no such shortcut and this
    returns ``None`` (resample the arrays instead).

    Args:
        durations, risk, events, tau, durations_train, events_train, tied_tol: as in
            :func:`concordance_index_ipcw`.

    Shapes:
        - durations, risk, events: :math:`(n,)`; durations_train, events_train: :math:`(m,)`
        - output: a :data:`Scorer`, :class:`Resamples` to ``(B,)``, or ``None``

    Raises:
        ValueError: as :func:`concordance_index_ipcw` on the full data.
    """
    if durations_train is None or events_train is None:
        return None
    d, e = check_survival(durations, events)
    r = check_1d(risk, "risk", n=d.shape[0])
    if tau is not None and not (np.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a positive finite time, got {tau!r}")
    knots, g = _censoring_survival(d, e, durations_train, events_train)
    used = e if tau is None else e & (d < tau)
    weights = np.zeros_like(d)
    if used.any():
        g_at = _step_at(knots, g, d[used])
        weights[used] = _inverse_weights(g_at, d[used], "at an event time") ** 2
    return _concordance_scorer(d, e, r, weights, tied_tol)


def concordance_td_resampler(
    durations: Any,
    surv: Any,
    events: Any,
    time_grid: Any,
    tied_tol: float = 1e-8,
    max_block: int = 4_000_000,
) -> Scorer:
    r""":func:`concordance_td` on blocks of bootstrap resamples, from their multiplicities.

    Each comparable pair is judged on the fixed curves, so the resampled index is
    :math:`\sum_{i,j} m_i m_j\, \delta_i\, \mathrm{comp}_{ij}\, s_{ij} /
    \sum_{i,j} m_i m_j\, \delta_i\, \mathrm{comp}_{ij}` with :math:`s_{ij} \in \{0, \tfrac12, 1\}`
    the pair's score in :func:`concordance_td`: for a block of events, one matrix product of
    the multiplicities with the block of pair scores.

    Args:
        durations, surv, events, time_grid, tied_tol, max_block: as in :func:`concordance_td`.

    Shapes:
        - durations, events: :math:`(n,)`; surv: :math:`(n, T)`; time_grid: :math:`(T,)`
        - output: a :data:`Scorer`, :class:`Resamples` to ``(B,)`` (NaN without a comparable pair)

    Raises:
        ValueError: as :func:`concordance_td` on the full data.
    """
    d, e = check_survival(durations, events)
    grid = check_1d(time_grid, "time_grid")
    s = _check_surv_matrix(surv, d.shape[0], grid.shape[0])
    n = d.shape[0]
    order = np.lexsort((~e, d))  # as in concordance_td: comparable patients are a suffix
    d, e, s = d[order], e[order], s[order]
    event_pos = np.flatnonzero(e)
    start = np.searchsorted(d, d[event_pos], side="left") + (
        np.searchsorted(d[e], d[event_pos], side="right")
        - np.searchsorted(d[e], d[event_pos], side="left")
    )
    event_pos, start = event_pos[start < n], start[start < n]
    col = np.searchsorted(grid, d[event_pos], side="right")
    padded = np.concatenate([np.ones((n, 1)), s], axis=1)  # (n, T + 1), column 0: S = 1
    own = padded[event_pos, col]  # (E,)
    positions = np.arange(n)
    block = max(1, int(max_block) // n)

    def score(resamples: Resamples) -> np.ndarray:
        m = _multiplicities(resamples, n)[:, order]  # (B, n), in the sorted order
        numerator = np.zeros(m.shape[0])
        cum = np.zeros((m.shape[0], n + 1))
        np.cumsum(m, axis=1, out=cum[:, 1:])
        m_ev = m[:, event_pos]  # (B, E)
        denominator = np.sum(m_ev * (cum[:, -1:] - cum[:, start]), axis=1)
        for lo in range(0, event_pos.size, block):
            sl = slice(lo, lo + block)
            first = int(start[sl].min())
            diff = padded[first:, col[sl]] - own[None, sl]  # (n - first, Eb)
            tie = np.abs(diff) <= tied_tol
            pair = np.where(tie, 0.5, (diff > 0).astype(float))
            pair[positions[first:, None] < start[None, sl]] = 0.0  # not comparable
            numerator += np.sum(m_ev[:, sl] * (m[:, first:] @ pair), axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(denominator > 0, numerator / denominator, np.nan)

    return score


def integrated_brier_score_resampler(
    durations: Any,
    surv: Any,
    events: Any,
    times: Any,
    durations_train: Any = None,
    events_train: Any = None,
) -> Scorer | None:
    r""":func:`integrated_brier_score` on blocks of bootstrap resamples, from their multiplicities.

    With :math:`\hat G` from the training data every summand of :func:`brier_score` is fixed
    per patient, so the resampled score is a weighted mean,

    .. math::
        \mathrm{IBS}(m) = \frac{1}{n} \sum_i m_i\, \frac{1}{t_K - t_1}
        \int_{t_1}^{t_K} b_i(t)\, dt

    one matrix-vector product for a block of resamples, where :math:`b_i(t)` is patient
    :math:`i`'s term of :math:`\mathrm{BS}(t)`. A resample whose follow-up does not cover
    ``times`` (nobody at or before ``times[0]`` or after ``times[-1]``) scores NaN, where the
    metric raises. Without training data this returns ``None``, as
    :func:`concordance_index_ipcw_resampler` does.

    Args:
        durations, surv, events, times, durations_train, events_train: as in
            :func:`integrated_brier_score`.

    Shapes:
        - durations, events: :math:`(n,)`; surv: :math:`(n, K)`; times: :math:`(K,)`
        - output: a :data:`Scorer`, :class:`Resamples` to ``(B,)``, or ``None``

    Raises:
        ValueError: as :func:`integrated_brier_score` on the full data.
    """
    if durations_train is None or events_train is None:
        return None
    t = np.atleast_1d(to_numpy(times, "times"))
    if t.ndim != 1 or t.shape[0] < 2:
        raise ValueError(f"integrated_brier_score needs at least two times, got {t.shape[0]}")
    d, e = check_survival(durations, events)
    t = _check_times(t, d)
    s = _check_surv_matrix(surv, d.shape[0], t.shape[0])
    knots, g = _censoring_survival(d, e, durations_train, events_train)
    per_patient = np.trapezoid(_brier_terms(d, e, s, t, knots, g), t, axis=1) / (t[-1] - t[0])
    starts, ends = (d <= t[0]).astype(float), (d > t[-1]).astype(float)
    n = d.shape[0]

    def score(resamples: Resamples) -> np.ndarray:
        m = _multiplicities(resamples, n)
        covered = (m @ starts > 0) & (m @ ends > 0)  # the follow-up check of _check_times
        return np.where(covered, (m @ per_patient) / n, np.nan)

    return score


def cumulative_dynamic_auc_resampler(
    durations: Any,
    risk: Any,
    events: Any,
    time: float,
    durations_train: Any = None,
    events_train: Any = None,
    tied_tol: float = 1e-8,
) -> Scorer | None:
    r"""The AUC of :func:`cumulative_dynamic_auc` at one time on bootstrap resamples.

    With :math:`\hat G` from the training data the case weights :math:`\omega_i` are fixed,
    so a resample weights case :math:`i` by :math:`m_i \omega_i` and control :math:`j` by
    :math:`m_j`, and the trapezoidal area of the metric is

    .. math::
        \widehat{\mathrm{AUC}}(m) = \frac{\sum_i m_i \omega_i \bigl(\sum_{j: r_j < r_i} m_j
        + \tfrac12 \sum_{j: r_j = r_i} m_j\bigr)}{\sum_i m_i \omega_i \sum_j m_j}

    over cases :math:`i` and controls :math:`j`. The controls are sorted by risk once; a
    block of resamples needs one cumulative sum of their multiplicities and two look-ups
    per case.
    Returns ``None`` (no exact shortcut) without training data, or when a run of scores
    chained by gaps of at most ``tied_tol`` spans more than ``tied_tol``, since a resample
    that leaves out its middle would split it.

    Args:
        durations, events, durations_train, events_train, tied_tol: as in
            :func:`cumulative_dynamic_auc`.
        risk: predicted risk at ``time`` (higher = earlier event).
        time: the one evaluation time.

    Shapes:
        - durations, risk, events: :math:`(n,)`
        - output: a :data:`Scorer`, :class:`Resamples` to ``(B,)`` (NaN without a case or a control), or
          ``None``

    Raises:
        ValueError: as :func:`cumulative_dynamic_auc` on the full data.
    """
    if durations_train is None or events_train is None:
        return None
    d, e = check_survival(durations, events)
    t = _check_times(time, d)
    if t.shape[0] != 1:
        raise ValueError(f"time must be one evaluation time, got {t.shape[0]}")
    r = check_1d(risk, "risk", n=d.shape[0])
    check_finite(r, "risk")
    knots, g = _censoring_survival(d, e, durations_train, events_train)
    is_case = e & (d <= t[0])
    if not is_case.any():
        raise ValueError(f"no events at or before time {t[0]:g}: the AUC there is undefined")
    omega = np.zeros_like(d)
    omega[is_case] = _inverse_weights(
        _step_at(knots, g, d[is_case]), d[is_case], "at an event time"
    )
    order = np.argsort(-r, kind="mergesort")  # as _weighted_roc_auc: decreasing risk
    sorted_r = r[order]
    starts = np.flatnonzero(np.concatenate([[True], np.abs(np.diff(sorted_r)) > tied_tol]))
    ends = np.append(starts[1:], r.shape[0])  # each tie group is [starts, ends) in order
    if np.any(sorted_r[starts] - sorted_r[ends - 1] > tied_tol):
        return None  # a chain of near-ties: resamples could split it differently
    group = np.repeat(np.arange(starts.shape[0]), ends - starts)  # (n,) in sorted order
    is_control = d[order] > t[0]
    controls = order[is_control]  # by decreasing risk
    before = np.concatenate([[0], np.cumsum(is_control)])  # controls before each position
    cases_sorted = np.flatnonzero(is_case[order])
    cases = order[cases_sorted]
    # controls before the case's tie group, and before the end of its tie group
    above = before[starts[group[cases_sorted]]]
    through = before[ends[group[cases_sorted]]]
    omega_cases = omega[cases]
    n = d.shape[0]

    def score(resamples: Resamples) -> np.ndarray:
        m = _multiplicities(resamples, n, np.float32)
        cum = np.zeros((m.shape[0], controls.shape[0] + 1), dtype=m.dtype)
        np.cumsum(np.take(m, controls, axis=1), axis=1, out=cum[:, 1:])  # (B, N + 1)
        n_controls = cum[:, -1:].astype(float)  # (B, 1)
        case_w = np.take(m, cases, axis=1) * omega_cases  # (B, C)
        lower = n_controls - 0.5 * (np.take(cum, above, axis=1) + np.take(cum, through, axis=1))
        total = case_w.sum(axis=1) * n_controls[:, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(total > 0, np.sum(case_w * lower, axis=1) / total, np.nan)

    return score


def calibration_error_resampler(
    durations: Any,
    risk: Any,
    events: Any,
    horizon: float,
    n_bins: int = 10,
    debiased: bool = False,
) -> Scorer | None:
    r""":func:`calibration_error` on blocks of bootstrap resamples, from their multiplicities.

    With ``debiased=True``, :func:`calibration_error_debiased` instead (the same groups,
    with Greenwood's sum per group from the same counts).

    A resample sorted by risk is the patients in their sorted order, patient
    :math:`k` repeated :math:`m_k` times, so group :math:`g` holds the positions
    :math:`[\lceil g n / G \rceil, \lceil (g + 1) n / G \rceil)` of that list: every patient
    in the group of its first copy, except the copies that a group boundary moves to the next
    group. Each group's Kaplan-Meier estimate then only needs its weighted at-risk and event
    counts at the event times up to the horizon, one histogram per block of resamples.

    :func:`calibration_table` splits tied risks between groups by their order in the input.
    Where patients with equal risks differ in time or event flag and a group boundary of a
    resample falls among their copies, the groups depend on the order of the draws: those few
    resamples are scored by :func:`calibration_error` on the resampled arrays.

    Args:
        durations, risk, events, horizon, n_bins: as in :func:`calibration_table`.
        debiased: score :func:`calibration_error_debiased` instead.

    Shapes:
        - durations, risk, events: :math:`(n,)`
        - output: a :data:`Scorer`, :class:`Resamples` to ``(B,)`` (NaN where nobody is
          followed up to the horizon)

    Raises:
        ValueError: as :func:`calibration_table` on the full data.
    """
    d, e = check_survival(durations, events)
    r = check_1d(risk, "risk", n=d.shape[0])
    n = d.shape[0]
    if (r < 0).any() or (r > 1).any():
        raise ValueError("risk must be a predicted event probability in [0, 1]")
    if not (np.isfinite(horizon) and 0 < horizon <= d.max()):
        raise ValueError(f"horizon must lie within the follow-up (0, {d.max():g}], got {horizon!r}")
    if not (isinstance(n_bins, int | np.integer) and 1 <= n_bins <= n):
        raise ValueError(f"n_bins must be an integer in [1, {n}], got {n_bins!r}")
    order = np.argsort(r, kind="mergesort")  # as calibration_table: increasing risk
    d_o, e_o, r_o = d[order], e[order], r[order]
    # runs of tied risks whose outcomes differ: [run_start, run_end) in the sorted order
    new_run = np.concatenate([[True], r_o[1:] != r_o[:-1], [True]])
    run_start, run_end = np.flatnonzero(new_run[:-1]), np.flatnonzero(new_run[1:]) + 1
    differs = np.concatenate([[0], (d_o[1:] != d_o[:-1]) | (e_o[1:] != e_o[:-1])]).astype(int)
    mixed = np.add.reduceat(differs, run_start) - differs[run_start] > 0
    run_start, run_end = run_start[mixed], run_end[mixed]
    u = np.unique(d[e & (d <= horizon)])  # (J,) event times up to the horizon
    n_u = u.shape[0]
    at_risk_slot = np.searchsorted(u, d_o, side="right")  # at risk at u[:slot], in [0, J]
    counted = e_o & (d_o <= horizon)
    event_slot = np.where(counted, np.searchsorted(u, d_o, side="left"), n_u)  # J: no event
    bounds = -(-np.arange(n_bins + 1) * n // n_bins)  # group g: positions [bounds[g], [g + 1])
    inner, sizes = bounds[1:-1], np.diff(bounds).astype(float)
    followed = (d >= horizon).astype(float)
    everyone, event_cols = np.arange(n), np.flatnonzero(counted)
    exact = calibration_error_debiased if debiased else calibration_error

    def score(resamples: Resamples) -> np.ndarray:
        m = _multiplicities(resamples, n, np.int64)
        n_rows = m.shape[0]
        rows = np.arange(n_rows)[:, None]
        mo = np.take(m, order, axis=1)  # (B, n), by increasing risk
        cum = np.cumsum(mo, axis=1)  # (B, n): copies up to and including each patient
        # the patient holding position bounds[g] and its copies before it, for g = 1..G-1
        row_start = rows * (n + 1)
        holder = np.searchsorted((cum + row_start).ravel(), inner + row_start, side="right")
        holder -= rows * n  # (B, G - 1), index in the sorted order
        before = np.where(holder > 0, np.take_along_axis(cum, np.maximum(holder - 1, 0), 1), 0)
        moved = (inner - before).astype(float)  # copies of the holder before the boundary
        # each patient's group: the group of its last copy (any group when it has none)
        group = np.maximum(cum - 1, 0) * n_bins // n  # (B, n)
        cell = rows * n_bins + group  # (B, n): the (resample, group) cell of each patient
        # the holder's copies before boundary g move from group g back to group g - 1
        later = rows * n_bins + np.arange(1, n_bins)  # (B, G - 1)
        fix_cell = np.concatenate([later, later - 1], axis=1).ravel()
        fix_patient = np.concatenate([holder, holder], axis=1).ravel()
        fix_copies = np.concatenate([-moved, moved], axis=1).ravel()
        n_cells = n_rows * n_bins

        def per_cell(slot: np.ndarray, n_slots: int, values: np.ndarray, cols: Any = None):
            """Copies times ``values`` per (cell, slot) of the sorted patients ``cols`` (all)."""
            cols = everyone if cols is None else cols
            index = np.take(cell, cols, axis=1) * n_slots + slot[cols]  # (B, C)
            weights = np.take(mo, cols, axis=1) * values[cols]  # (B, C)
            out = np.bincount(index.ravel(), weights.ravel(), n_cells * n_slots)
            keep = np.isin(fix_patient, cols)
            p = fix_patient[keep]
            np.add.at(out, fix_cell[keep] * n_slots + slot[p], fix_copies[keep] * values[p])
            return out.reshape(n_cells, n_slots)

        ones = np.ones(n)
        at_slot = per_cell(at_risk_slot, n_u + 1, ones)  # (cells, J + 1)
        earlier = np.cumsum(at_slot, axis=1)  # (cells, J + 1): copies with T < u[j]
        n_events = per_cell(event_slot, n_u, ones, event_cols)  # (cells, J)
        # the few (cell, event time) pairs with events, in time order within each cell
        nonzero = np.flatnonzero(n_events)
        key_cell, key_time = nonzero // n_u, nonzero % n_u
        at_risk = earlier[key_cell, -1] - earlier[key_cell, key_time]  # copies with T >= u
        factor = 1.0 - n_events.ravel()[nonzero] / at_risk
        survival = np.ones(n_cells)  # Kaplan-Meier at the horizon, the product in time order
        if nonzero.size:
            starts = np.flatnonzero(np.concatenate([[True], key_cell[1:] != key_cell[:-1]]))
            survival[key_cell[starts]] = np.multiply.reduceat(factor, starts)
        observed = 1.0 - survival.reshape(n_rows, n_bins)  # (B, G)
        predicted = per_cell(np.zeros(n, dtype=np.int64), 1, r_o)
        predicted = predicted.reshape(n_rows, n_bins)
        if debiased:  # Greenwood's sum per cell, from the same (cell, event time) pairs
            greenwood = np.zeros(n_cells)
            if nonzero.size:
                d_ev = n_events.ravel()[nonzero]
                with np.errstate(divide="ignore"):
                    terms = d_ev / (at_risk * (at_risk - d_ev))
                greenwood[key_cell[starts]] = np.add.reduceat(terms, starts)
            with np.errstate(invalid="ignore"):
                variance = np.where(survival > 0.0, survival**2 * greenwood, 0.0)
            scale = np.where(sizes > 1, sizes / np.maximum(sizes - 1, 1), 0.0)
            variance = variance.reshape(n_rows, n_bins) * scale  # (B, G)
            error = ((predicted / sizes - observed) ** 2 - variance).mean(axis=1)
        else:
            error = np.abs(predicted / sizes - observed).mean(axis=1)  # (B,)
        error = np.where(m @ followed > 0, error, np.nan)
        # a boundary among the copies of a run of mixed ties: the draws' order decides
        lo = np.where(run_start > 0, cum[:, np.maximum(run_start - 1, 0)], 0)  # (B, runs)
        hi = cum[:, run_end - 1]
        split = np.searchsorted(inner, lo, side="right") < np.searchsorted(inner, hi, "left")
        for b in np.flatnonzero(split.any(axis=1)):
            idx = resamples.indices[b]
            try:
                error[b] = exact(d[idx], r[idx], e[idx], horizon, n_bins)
            except ValueError:
                error[b] = np.nan
        return error

    return score


# ---------------------------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapCI:
    """A point estimate with a percentile bootstrap interval.

    Attributes:
        estimate: the metric on the full data.
        lower, upper: the ``alpha / 2`` and ``1 - alpha / 2`` percentiles of the resampled
            metric.
        n_boot: resamples drawn.
        n_skipped: resamples on which the metric could not be computed (it raised a
            ``ValueError`` or returned NaN), left out of the percentiles.
        alpha: one minus the confidence level.
    """

    estimate: float
    lower: float
    upper: float
    n_boot: int
    n_skipped: int
    alpha: float


def bootstrap_ci(
    metric_fn: Callable[..., float],
    *arrays: Any,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int | np.random.Generator = 0,
    max_skip_fraction: float = 0.1,
    resampler: Callable[..., Scorer | None] | None = None,
    interval: str = "percentile",
) -> BootstrapCI:
    r"""Percentile bootstrap confidence interval of any metric, resampling patients.

    .. math::
        \hat\theta = m(\text{data}), \quad \hat\theta^*_b = m(\text{data}[I_b]),\quad
        I_b \sim \text{Uniform}\{1..n\}^n, \quad
        \text{CI} = \bigl[q_{\alpha/2}(\hat\theta^*), q_{1-\alpha/2}(\hat\theta^*)\bigr]

    Every array is indexed by the same resampled patient indices (the first axis), so
    ``bootstrap_ci(concordance_index, durations, risk, events)`` works directly. Fixed
    arguments (times, tau, training data for the censoring model) go in a closure:
    ``bootstrap_ci(lambda d, s, e: integrated_brier_score(d, s, e, times), durations, surv,
    events)``. A resample on which the metric raises ``ValueError`` (e.g. no comparable pair,
    a single class) or returns NaN is skipped and counted; a warning is raised when more than
    ``max_skip_fraction`` are skipped, since the interval then describes only the resamples
    where the metric exists.

    A resample is the original patients drawn with multiplicities
    :math:`m_b = \text{bincount}(I_b)`. Where the metric on a resample depends on the data
    (almost) only through those multiplicities, ``resampler`` (called once with the arrays)
    can precompute everything that does not change (sort orders, ranks, censoring weights)
    and return a :data:`Scorer` that scores blocks of resamples (:class:`Resamples`, the
    indices and their multiplicities) at once, e.g. :func:`concordance_index_resampler`. The resample indices are drawn exactly as without it,
    so the interval is the same up to rounding, only several times faster.

    Args:
        metric_fn: maps the arrays to a scalar.
        *arrays: per-patient arrays (or tensors), all with the same first dimension.
        n_boot: number of resamples.
        alpha: one minus the confidence level (0.05 gives a 95 % interval).
        seed: integer seed or a NumPy Generator.
        max_skip_fraction: warn when a larger fraction of resamples is skipped.
        resampler: optional; maps the arrays to a :data:`Scorer` that equals ``metric_fn``
            on every resample (NaN where it raises), or to ``None`` where no such shortcut is
            exact. ``None`` (the default) recomputes ``metric_fn`` on every
            resampled copy of the arrays.
        interval: ``"percentile"`` (above) or ``"normal"``, Efron's standard interval
            :math:`\hat\theta \pm z_{1-\alpha/2}\, \mathrm{sd}(\hat\theta^*)`. Use it
            for a debiased estimator such as :func:`calibration_error_debiased`: its
            resampled values centre on the plug-in value of the resampled data, not on
            the estimate, so their percentiles sit beside the estimate, while their
            spread is still the estimate's standard error.

    Shapes:
        - arrays: :math:`(n, ...)` each
        - output: :class:`BootstrapCI`

    Raises:
        ValueError: with no arrays, arrays of different lengths, fewer than two patients, a bad
            ``n_boot`` or ``alpha``, a metric that does not return a scalar, or when every
            resample is skipped. A metric that fails on the full data raises its own error.

    Reference:
        Efron, B., Tibshirani, R. J. (1993). *An Introduction to the Bootstrap*. Chapman & Hall.
    """
    if not arrays:
        raise ValueError("pass at least one per-patient array to resample")
    if not (isinstance(n_boot, int | np.integer) and n_boot >= 1):
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    if interval not in ("percentile", "normal"):
        raise ValueError(f"interval must be 'percentile' or 'normal', got {interval!r}")
    data = []
    for k, a in enumerate(arrays):
        if hasattr(a, "detach") and hasattr(a, "cpu"):
            a = a.detach().cpu().numpy()
        a = np.asarray(a)
        if a.ndim == 0:
            raise ValueError(f"array {k} is a scalar; pass fixed arguments through a closure")
        data.append(a)
    n = data[0].shape[0]
    lengths = [a.shape[0] for a in data]
    if any(length != n for length in lengths):
        raise ValueError(f"all arrays must have the same first dimension, got {lengths}")
    if n < 2:
        raise ValueError("need at least two patients to bootstrap")

    def _scalar(value: Any) -> float:
        out = np.asarray(value, dtype=float)
        if out.ndim != 0:
            raise ValueError(
                f"metric_fn must return a scalar, got shape {out.shape}; wrap it, e.g. "
                f"lambda *a: cumulative_dynamic_auc(*a, times)[1]"
            )
        return float(out)

    estimate = _scalar(metric_fn(*data))
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    scorer = None if resampler is None else resampler(*data)
    if scorer is not None:
        resampled = _score_resamples(scorer, rng, n, int(n_boot))
        values = resampled[np.isfinite(resampled)].tolist()
    else:
        values = []
        for _ in range(n_boot):
            idx = rng.integers(0, n, size=n)
            try:
                value = _scalar(metric_fn(*(a[idx] for a in data)))
            except (ValueError, ZeroDivisionError, FloatingPointError):
                continue
            if np.isfinite(value):
                values.append(value)
    n_skipped = n_boot - len(values)
    if not values:
        raise ValueError(f"the metric could not be computed on any of the {n_boot} resamples")
    if n_skipped > max_skip_fraction * n_boot:
        warnings.warn(
            f"{n_skipped} of {n_boot} bootstrap resamples were skipped because the metric "
            f"could not be computed; the interval covers only the others",
            RuntimeWarning,
            stacklevel=2,
        )
    if interval == "normal":
        from scipy.stats import norm  # ~0.8 s to import: only where it is used

        sd = np.std(values, ddof=1) if len(values) > 1 else 0.0
        half = norm.ppf(1 - alpha / 2) * sd
        lower, upper = estimate - half, estimate + half
    else:
        lower, upper = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return BootstrapCI(
        estimate=estimate,
        lower=float(lower),
        upper=float(upper),
        n_boot=int(n_boot),
        n_skipped=int(n_skipped),
        alpha=float(alpha),
    )


def _score_resamples(
    scorer: Scorer, rng: np.random.Generator, n: int, n_boot: int, max_cells: int = 2**21
) -> np.ndarray:
    """The scorer on ``n_boot`` resamples, drawn one by one as the loop of bootstrap_ci does."""
    rows = max(1, max_cells // n)
    out = np.empty(n_boot)
    for lo in range(0, n_boot, rows):
        b = min(rows, n_boot - lo)
        idx = np.stack([rng.integers(0, n, size=n) for _ in range(b)])  # (b, n), same draws
        values = np.asarray(scorer(Resamples.of(idx)), dtype=float)
        if values.shape != (b,):
            raise ValueError(f"the scorer must return shape ({b},), got {values.shape}")
        out[lo : lo + b] = values
    return out
