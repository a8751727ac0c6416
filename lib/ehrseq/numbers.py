"""How every table and sentence of the book writes a number, or a value and its interval.

- :func:`number`: ``format(value, spec)``, except that a value that rounds to zero has no
  sign (never "-0.0000");
- :func:`interval`: ``"0.612 [0.590, 0.633]"`` with a non-breaking space inside the
  brackets, so it never wraps in its cell, and no interval where its ends read the same.

The lowest layer of the package (no ``ehrseq`` import), so that the evaluation code that
builds tables and the book's glue helpers (:mod:`ehrseq.book`) share one way to write them.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

__all__ = ["NBSP", "interval", "number", "plain", "unsigned_zero"]


def plain(value: Any) -> Any:
    """``value`` as a plain Python number where it is a NumPy scalar or one-element tensor."""
    if hasattr(value, "detach"):  # a one-element tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    return value.item() if isinstance(value, np.generic) else value


#: A non-breaking space: inside an interval it keeps "[0.590, 0.633]" on one line.
NBSP = "\u00a0"

_SIGNED = re.compile(r"^(\s*)[-+\u2212](.*)$")
_ZERO = re.compile(r"[0.,]*0[0.,]*(?:%|[eE][-+]?\d+)?")


def unsigned_zero(text: str) -> str:
    """``text`` without its sign where its number reads zero ("-0.000" -> "0.000")."""
    m = _SIGNED.match(text)
    return m.group(1) + m.group(2) if m and _ZERO.fullmatch(m.group(2)) else text


def number(value: float, spec: str = ".3f") -> str:
    """``format(value, spec)``, except that a value that rounds to zero has no sign.

    ``format(-0.00004, "+.4f")`` reads ``"-0.0000"``: a negative zero, which says
    nothing a reader can use. Here it is ``"0.0000"`` (and ``"+0.0000"`` is ``"0.0000"``
    too).

    Args:
        value: a number.
        spec: a format spec, as after the colon in ``f"{value:+.4f}"``.
    """
    return unsigned_zero(format(plain(value), spec))


def interval(
    estimate: float,
    lower: float,
    upper: float,
    spec: str = ".3f",
    *,
    same: str = "no spread",
) -> str:
    """A value and its interval in one table cell: ``"0.612 [0.590, 0.633]"``.

    The space inside the brackets is non-breaking, so an interval never wraps inside its
    cell (a narrow column may move the whole interval below the value). Where the two
    ends read the same there is no interval to show: the cell reads ``"0.500 (no
    spread)"``, with ``same`` in the brackets (e.g. ``"constant risk"`` for a C-index of
    a model that gives every patient the same risk). No part reads as a negative zero
    (:func:`number`).

    Args:
        estimate, lower, upper: the value and the ends of its interval.
        spec: the format spec of all three, e.g. ``".3f"`` or ``"+.4f"``.
        same: what the cell says instead of an interval whose ends read the same.
    """
    est, lo, hi = (number(v, spec) for v in (estimate, lower, upper))
    if lo == hi:
        return f"{est} ({same})"
    return f"{est} [{lo},{NBSP}{hi}]"
