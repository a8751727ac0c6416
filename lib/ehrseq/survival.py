r"""Discrete-time survival maths: hazards -> survival, risk at a horizon, the life table.

The layer between the models and everything that reads their output: survival heads, losses,
metrics and figures all convert hazards with these functions, so a curve is computed one way
in the whole book. It imports nothing from ``ehrseq`` but the input checks
(:mod:`ehrseq.checks`), and not torch itself: a NumPy array gives a NumPy array, a torch
tensor gives a tensor on the same device, differentiable.

Conventions: ``hazards[:, k]`` is :math:`h_k = P(T \in \text{bin } k \mid T > \text{start of
bin } k)`, column ``k`` of ``surv`` is :math:`S(t_k)` at the end of bin ``k``, and a ``mask``
(True on real bins or visits) marks padded slots, which count as survived for sure.

Derived in the book's survival-framework chapter (the life table and the product of
conditional survivals) and the survival-head chapter (masked per-visit hazards).

Reference:
    Kvamme, H., Borgan, Ø. (2021). Continuous and discrete-time survival prediction with
    neural networks. *Lifetime Data Analysis* 27, 710-736.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np

from ehrseq.checks import check_finite, check_survival, to_numpy

__all__ = ["hazards_to_survival", "risk_at_horizon", "life_table_hazards"]


def _is_tensor(x: Any) -> bool:
    return hasattr(x, "detach") and hasattr(x, "cumprod")  # a torch.Tensor, without torch


def _checked_hazards(hazards: Any, mask: Any) -> Any:
    """2-D hazards in [0, 1] (a tensor stays a tensor), 0 at masked slots."""
    if _is_tensor(hazards):
        if hazards.ndim != 2:
            raise ValueError(f"hazards must have shape (n, T), got {tuple(hazards.shape)}")
        if not bool(hazards.isfinite().all()):
            raise ValueError("hazards contains NaN or inf")
        if bool((hazards < 0).any()) or bool((hazards > 1).any()):
            raise ValueError("hazards are conditional probabilities and must lie in [0, 1]")
    else:
        hazards = to_numpy(hazards, "hazards")
        if hazards.ndim != 2:
            raise ValueError(f"hazards must have shape (n, T), got {hazards.shape}")
        check_finite(hazards, "hazards")
        if (hazards < 0).any() or (hazards > 1).any():
            raise ValueError("hazards are conditional probabilities and must lie in [0, 1]")
    if mask is None:
        return hazards
    if tuple(mask.shape) != tuple(hazards.shape):
        raise ValueError(
            f"mask must have the shape of hazards {tuple(hazards.shape)}, got {tuple(mask.shape)}"
        )
    if _is_tensor(hazards):
        return hazards.masked_fill(~mask.bool(), 0.0)  # a padded slot is survived for sure
    return np.where(np.asarray(mask, dtype=bool), hazards, 0.0)


def hazards_to_survival(hazards: Any, mask: Any = None) -> Any:
    r"""Survival curves from discrete-time hazards, padded slots contributing nothing.

    .. math::
        S_i(t_k) = \prod_{j \le k,\ m_{ij}} (1 - h_{ij})

    where :math:`h_{ij} = P(T_i \in \text{bin } j \mid T_i > \text{start of bin } j)`. A
    masked slot has hazard 0, so the curve stays flat after a patient's last visit. A NumPy
    array gives a NumPy array; a torch tensor gives a tensor (differentiable, same device).

    Args:
        hazards: per-bin (or per-visit) conditional event probabilities in [0, 1].
        mask: True on real bins; ``None`` means all bins are real.

    Shapes:
        - hazards, mask: :math:`(n, T)`
        - output: :math:`(n, T)`, non-increasing along the last axis

    Raises:
        ValueError: if ``hazards`` is not 2-D, has NaN/inf, or leaves [0, 1], or if ``mask``
            does not have its shape.

    Reference:
        Kvamme, H., Borgan, Ø. (2021). Continuous and discrete-time survival prediction with
        neural networks. *Lifetime Data Analysis* 27, 710-736.
    """
    h = _checked_hazards(hazards, mask)  # (n, T)
    if _is_tensor(h):
        return (1 - h).cumprod(dim=-1)  # (n, T)
    return np.cumprod(1.0 - h, axis=1)  # (n, T)


def risk_at_horizon(hazards: Any, horizon: float, time_grid: Any = None, mask: Any = None) -> Any:
    r"""Predicted probability of the event by a fixed horizon: the risk score to rank with.

    .. math::
        \hat p_i(h) = 1 - S_i(h) = 1 - \prod_{k:\ t_{ik} \le h,\ m_{ik}} (1 - h_{ik})

    Use this, not the sum of hazards :math:`\sum_k h_{ik}`, as a risk score: a sum over
    visits grows with the number of visits a patient happens to have, so it ranks long
    histories above short ones whatever their risk, and it is not a probability. Fixing the
    horizon compares every patient on the same question.

    Without ``time_grid`` the horizon is a bin (or visit slot) index ``k`` and the risk is
    ``1 - S[:, k]``, the event in bins ``0..k``. With ``time_grid`` (the end time of each bin,
    shared ``(T,)`` or per patient ``(n, T)`` -- for per-visit hazards, the end of the
    interval after each visit, measured from the same time zero for everyone), the horizon is
    a time and only bins that end by it count: the survival is read as a step function, with
    0 risk before the first grid time. A NumPy array gives a NumPy array; a torch tensor
    gives a tensor (differentiable, same device).

    Args:
        hazards: per-bin (or per-visit) hazards in [0, 1].
        horizon: a bin index (no ``time_grid``) or a time (with ``time_grid``).
        time_grid: non-decreasing end times of the bins.
        mask: True on real bins; ``None`` means all bins are real.

    Shapes:
        - hazards, mask: :math:`(n, T)`; time_grid: :math:`(T,)` or :math:`(n, T)`
        - output: :math:`(n,)`

    Raises:
        ValueError: on bad hazards (see :func:`hazards_to_survival`), a bin index out of
            range, a non-integer index without a grid, or a grid whose shape does not match
            the hazards or that decreases.

    Reference:
        Kvamme, H., Borgan, Ø. (2021). Continuous and discrete-time survival prediction with
        neural networks. *Lifetime Data Analysis* 27, 710-736.
    """
    h = _checked_hazards(hazards, mask)  # (n, T)
    n_bins = h.shape[1]
    if time_grid is None:
        if isinstance(horizon, bool) or not isinstance(horizon, Integral):
            raise ValueError(
                f"without time_grid, horizon is a bin index and must be an integer, got "
                f"{horizon!r}; pass time_grid to give a time"
            )
        if not 0 <= horizon < n_bins:
            raise ValueError(f"horizon bin {horizon} is outside [0, {n_bins - 1}]")
        return 1.0 - hazards_to_survival(h)[:, int(horizon)]  # (n,)
    if _is_tensor(h):
        import torch  # the caller already has it: h is a tensor

        grid = torch.as_tensor(time_grid, device=h.device)
        grid_np = grid.detach().cpu().double().numpy()
    else:
        grid = grid_np = to_numpy(time_grid, "time_grid")
    if tuple(grid.shape) not in {(n_bins,), tuple(h.shape)}:
        raise ValueError(
            f"time_grid must have shape (T,) = ({n_bins},) or (n, T) = {tuple(h.shape)}, "
            f"got {tuple(grid.shape)}"
        )
    check_finite(grid_np, "time_grid")
    if (np.diff(grid_np, axis=-1) < 0).any():
        raise ValueError("time_grid must be non-decreasing along the bins")
    within = grid <= horizon  # (T,) or (n, T): bins that end by the horizon
    return 1.0 - hazards_to_survival(h * within)[:, -1]  # (n,)


def life_table_hazards(durations: Any, events: Any, n_bins: int, eps: float = 1e-4) -> np.ndarray:
    r"""The life-table hazard of each time bin: the best prediction without features.

    .. math::
        \hat h_k = \operatorname{clip}\Big(\frac{d_k}{\max(1, n_k)},\ \epsilon,\ 1 - \epsilon\Big),
        \qquad d_k = \#\{i : T_i = k,\ \delta_i = 1\}, \quad n_k = \#\{i : T_i \ge k\}

    the events in bin :math:`k` over the patients still at risk at its start: the
    maximum-likelihood fit of the discrete-time hazard model without features (clipped so
    its logit is finite). A survival head starts at it through
    ``BinHazardHead(base_hazards=...)``, and it is the null model every score is read
    against.

    Args:
        durations: bin index of each patient's event or censoring, in ``[0, n_bins)``.
        events: 1 = event, 0 = censored.
        n_bins: number of time bins ``T``.
        eps: the clip that keeps every hazard inside (0, 1).

    Shapes:
        - durations, events: :math:`(n,)`
        - output: :math:`(T,)` NumPy array (float64)

    Raises:
        ValueError: on bin indices that are not integers in ``[0, n_bins)``, events other
            than 0/1, or ``eps`` outside (0, 0.5).

    Reference:
        Kvamme, H., Borgan, Ø. (2021). Continuous and discrete-time survival prediction with
        neural networks. *Lifetime Data Analysis* 27, 710-736.
    """
    if not 0 < eps < 0.5:
        raise ValueError(f"eps must lie in (0, 0.5), got {eps!r}")
    d, e = check_survival(durations, events)
    if (d != np.round(d)).any() or d.max() >= n_bins:
        bad = int(np.flatnonzero((d != np.round(d)) | (d >= n_bins))[0])
        raise ValueError(
            f"durations are bin indices in [0, {n_bins - 1}]; patient {bad} has {d[bad]:g}"
        )
    bins = d.astype(np.int64)
    at_risk = np.bincount(bins, minlength=n_bins)[::-1].cumsum()[::-1]  # (T,), n_k
    n_events = np.bincount(bins[e], minlength=n_bins)  # (T,), d_k
    return np.clip(n_events / np.maximum(at_risk, 1), eps, 1 - eps)  # (T,)
