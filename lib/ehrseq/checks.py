"""Input checks for array arguments: the clear ``ValueError`` every public function raises.

The lowest layer of the library (NumPy only, no torch import): :mod:`ehrseq.survival`,
:mod:`ehrseq.metrics` and :mod:`ehrseq.plotting` validate their inputs with these, so a
wrong shape or a NaN is reported the same way wherever it enters.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["to_numpy", "check_finite", "check_1d", "check_survival"]


def to_numpy(x: Any, name: str) -> np.ndarray:
    """Float array from a list, array or tensor (detached, on the CPU).

    Raises:
        ValueError: if ``x`` is not numeric.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric, got {type(x).__name__}: {err}") from err


def check_finite(arr: np.ndarray, name: str) -> None:
    """Raise a ``ValueError`` naming the first NaN or inf of ``arr``."""
    bad = ~np.isfinite(arr)
    if bad.any():
        where = np.argwhere(bad)[0]
        where = int(where[0]) if where.size == 1 else tuple(int(w) for w in where)
        raise ValueError(f"{name} contains NaN or inf (first at index {where})")


def check_1d(x: Any, name: str, n: int | None = None, ref: str = "durations") -> np.ndarray:
    """A finite, non-empty 1-D float array, of length ``n`` (that of ``ref``) when given.

    Shapes:
        - output: :math:`(n,)`

    Raises:
        ValueError: on a rank other than 1, an empty array, a length that differs from
            ``ref``'s, or NaN/inf.
    """
    arr = to_numpy(x, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but {ref} has {n}: lengths must match")
    check_finite(arr, name)
    return arr


def check_survival(durations: Any, events: Any, suffix: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(durations, events)`` as ``(float, bool)`` arrays of equal length.

    Raises:
        ValueError: on negative durations, events other than 0/1, or the errors of
            :func:`check_1d`.
    """
    d_name, e_name = f"durations{suffix}", f"events{suffix}"
    d = check_1d(durations, d_name)
    e = check_1d(events, e_name, n=d.shape[0], ref=d_name)
    if (d < 0).any():
        raise ValueError(
            f"{d_name} must be non-negative; found {d.min():g} at index {int(np.argmin(d))}"
        )
    bad = (e != 0) & (e != 1)
    if bad.any():
        raise ValueError(
            f"{e_name} must be 0/1 (or boolean): 1 = event, 0 = censored; found "
            f"{e[bad][0]:g} at index {int(np.flatnonzero(bad)[0])}"
        )
    return d, e.astype(bool)
