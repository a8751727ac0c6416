"""Figures for the book, all drawn through one style helper.

Call :func:`apply_style` once in a chapter's Setup cell; the helpers in the submodules
(``ehrseq.plotting.survival``) draw on a given ``Axes`` (or a new one) and return it, with
axes labelled in their units.
"""

from __future__ import annotations

import matplotlib as mpl

__all__ = ["BOOK_STYLE", "apply_style"]

BOOK_STYLE: dict[str, object] = {
    "figure.figsize": (6.0, 4.0),
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "legend.fontsize": 9,
    "lines.linewidth": 1.6,
    # Okabe-Ito: distinguishable with the common colour-vision deficiencies
    "axes.prop_cycle": mpl.cycler(
        color=["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442"]
    ),
}


def apply_style(**overrides: object) -> None:
    """Set the book's matplotlib style (rcParams), with optional ``overrides``.

    Args:
        **overrides: rcParams to change on top of :data:`BOOK_STYLE`, with dots written as
            double underscores, e.g. ``apply_style(figure__figsize=(8, 3))``.

    Raises:
        ValueError: if an override names an unknown rcParam.
    """
    params = dict(BOOK_STYLE)
    for key, value in overrides.items():
        name = key.replace("__", ".")
        if name not in mpl.rcParams:
            raise ValueError(f"unknown matplotlib rcParam {name!r}")
        params[name] = value
    mpl.rcParams.update(params)
