"""What a chapter hands to the book: glued numbers and tables, and the claims it tested.

- :func:`keep` glues a number for the prose (``{glue:text}`name```), as a plain Python number:
  the book cannot format NumPy scalars or one-element tensors.
- :func:`keep_table` glues a table (``{glue:}`name```), formatted for reading.
- :func:`number` and :func:`interval` write a number, or a value and its interval, the
  way every table of the book shows them: never a negative zero ("-0.0000"), an
  interval that never wraps inside its cell, and no interval at all where its two ends
  read the same.
- :func:`record_claim` glues a claim's verdict for the chapter's prose and writes the claim,
  with its measured difference, paired interval and verdict, to the results folder, from
  which the results page (``notebooks/99_results.py``) builds one table of every claim the
  book tests. A claim is *reproduced* when the interval excludes 0 in the claimed
  direction, *refuted* when it excludes 0 in the other, and *not resolved* otherwise.

The results folder is ``<artifact root>/results/<profile>/`` (never committed): one JSON
file per chapter, rewritten whenever the chapter runs.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ehrseq.artifacts import artifact_root
from ehrseq.config import current_profile
from ehrseq.numbers import (
    NBSP,
    interval,
    number,
    plain,
    unsigned_zero,  # format_floats writes table cells the same way
)

__all__ = [
    "VERDICTS",
    "keep",
    "keep_table",
    "format_floats",
    "show",
    "interval",
    "number",
    "NBSP",
    "plural",
    "record_claim",
    "record_comparisons",
    "METRIC_KEYS",
    "claims_folder",
    "read_claims",
    "start_claims",
]

#: The verdicts of a tested claim.
VERDICTS = ("reproduced", "refuted", "not resolved")


def keep(name: str, value: Any) -> None:
    """Glue ``value`` under ``name`` for the prose (not displayed here).

    Returns nothing on purpose: as the last line of a figure cell, a returned value would
    become a second output of the cell, and the book would see the figure's name twice.
    """
    from myst_nb import glue

    glue(name, plain(value), display=False)


def plural(n: float, noun: str, fmt: str = "g", plural_form: str | None = None) -> str:
    """``n`` and ``noun`` as a reader expects them: "1 seed", "3 seeds", "0.5 years".

    Glue this where the count depends on the profile, so the prose never reads "1 seeds".
    """
    word = noun if n == 1 else (plural_form or f"{noun}s")
    return f"{format(n, fmt)} {word}"


def keep_table(name: str, table: pd.DataFrame, floatfmt: str = "{:.3f}") -> None:
    """Glue a table under ``name`` (shown where the prose pastes it with ``{glue:}``).

    Floats are formatted with ``floatfmt`` (:func:`format_floats`) so the table reads
    the same in every profile. A default index (0, 1, 2, ...) says nothing to a reader
    and is left out. Returns nothing, as :func:`keep`: as a cell's last line a returned
    table would be shown a second time, beside the place where the prose pastes it; so
    end such a cell with the ``keep_table`` call, not with the table.
    """
    from myst_nb import glue

    glue(name, _for_glue(format_floats(table, floatfmt), name), display=False)


def _for_glue(shown: pd.DataFrame, name: str) -> Any:
    """``shown``, or a Styler without its index where the index is 0, 1, 2, ..."""
    index = shown.index
    plain = isinstance(index, pd.RangeIndex) and index.name is None and index.start == 0
    if not plain or index.step != 1:
        return shown
    # class "dataframe": the book's stylesheet pads glued tables by that class
    return (
        shown.style.hide(axis="index")
        .set_table_attributes('class="dataframe"')
        .set_uuid(re.sub(r"\W", "_", name))
    )


def show(table: pd.DataFrame, floatfmt: str | None = None) -> Any:
    """``table`` as a cell's last line shows it: without a 0, 1, 2, ... index.

    With ``floatfmt``, floats are formatted by :func:`format_floats` first. Use it for a
    table displayed in a cell, as :func:`keep_table` does for a glued one.
    """
    shown = table if floatfmt is None else format_floats(table, floatfmt)
    key = "|".join(map(str, [*shown.columns, *shown.shape]))
    return _for_glue(shown, "t" + hashlib.sha1(key.encode()).hexdigest()[:8])


def format_floats(table: pd.DataFrame, floatfmt: str = "{:.3f}") -> pd.DataFrame:
    """A copy of ``table`` with every float column as text (NaN: blank).

    A column of counts that happen to be floats (every value a whole number, not only 0
    and 1) reads as whole numbers ("11,610", not "11610.000"); any other float column is
    formatted with ``floatfmt``. No value reads as a negative zero (:func:`number`).
    """
    shown = table.copy()
    for col in shown.columns:
        if not pd.api.types.is_float_dtype(shown[col]):
            continue
        values = shown[col].dropna()
        whole = len(values) and np.isfinite(values).all() and values.abs().max() > 1
        whole = whole and (values == values.round()).all()
        fmt = "{:,.0f}" if whole else floatfmt
        shown[col] = shown[col].map(
            lambda v, fmt=fmt: "" if pd.isna(v) else unsigned_zero(fmt.format(v))
        )
    return shown


def claims_folder(profile: str | None = None) -> Path:
    """``<artifact root>/results/<profile>/``."""
    return artifact_root() / "results" / (profile or current_profile())


def start_claims(chapter: str, profile: str | None = None) -> None:
    """Forget the claims a chapter recorded before (call once, near the chapter's start)."""
    path = claims_folder(profile) / f"{chapter}.json"
    path.unlink(missing_ok=True)


def record_claim(
    chapter: str,
    key: str,
    claim: str,
    difference: dict[str, Any],
    *,
    higher_is_better: bool,
    source: str = "",
    margin: float | None = None,
    profile: str | None = None,
) -> str:
    """Record a claim tested by a paired difference, glue its verdict, and return it.

    Args:
        chapter: the chapter's file stem, e.g. ``"08_finetuning_strategies"``.
        key: a short name, unique within the chapter; the verdict is glued as
            ``verdict_<key>`` and the difference as ``diff_<key>``, ``diff_<key>_lower``,
            ``diff_<key>_upper``.
        claim: the claim in words, stated so that a *positive* improvement of the first
            model over the second reproduces it, e.g. "pretraining helps (C)".
        difference: a row of :meth:`ehrseq.evaluate.SurvivalProtocol.difference` (or any
            mapping with ``comparison``, ``metric``, ``difference``, ``lower``, ``upper``).
        higher_is_better: the metric's direction (``HIGHER_IS_BETTER[metric]``).
        source: where the claim comes from (a citation key or "this book").
        margin: makes it an equivalence claim ("A matches B"): reproduced when the whole
            interval lies within ``[-margin, margin]``, refuted when it lies wholly outside,
            not resolved otherwise.
        profile: default: the active profile.

    Returns:
        ``"reproduced"``, ``"refuted"`` or ``"not resolved"``.

    Raises:
        ValueError: if the interval does not contain the estimate or a field is missing.
    """
    missing = {"comparison", "metric", "difference", "lower", "upper"} - set(difference)
    if missing:
        raise ValueError(f"record_claim({key!r}): difference lacks {sorted(missing)}")
    est, lo, hi = (float(difference[k]) for k in ("difference", "lower", "upper"))
    if not lo <= hi:
        raise ValueError(f"record_claim({key!r}): lower {lo} > upper {hi}")
    if not lo <= est <= hi:
        raise ValueError(f"record_claim({key!r}): estimate {est} outside [{lo}, {hi}]")
    if margin is not None:  # an equivalence claim: the whole interval within +-margin
        if -margin <= lo and hi <= margin:
            verdict = "reproduced"
        elif lo > margin or hi < -margin:
            verdict = "refuted"
        else:
            verdict = "not resolved"
    elif lo > 0 or hi < 0:  # the interval excludes 0: the direction decides
        verdict = "reproduced" if (est > 0) == higher_is_better else "refuted"
    else:
        verdict = "not resolved"
    keep(f"verdict_{key}", verdict)
    keep(f"diff_{key}", est)
    keep(f"diff_{key}_lower", lo)
    keep(f"diff_{key}_upper", hi)
    row = {
        "chapter": chapter,
        "key": key,
        "claim": claim,
        "source": source,
        "comparison": str(difference["comparison"]),
        "metric": str(difference["metric"]),
        "difference": est,
        "lower": lo,
        "upper": hi,
        "margin": margin,
        "verdict": verdict,
    }
    folder = claims_folder(profile)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{chapter}.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    rows = [r for r in rows if r["key"] != key] + [row]
    path.write_text(json.dumps(rows, indent=1))
    return verdict


#: Short names of the protocol's metrics in glue keys (``verdict_<key>_<short>``).
METRIC_KEYS = {
    "Harrell C": "c",
    "Uno C": "uno",
    "Antolini C": "antolini",
    "IBS": "ibs",
    "AUROC": "auroc",
    "calibration error": "calibration",
}


def record_comparisons(
    chapter: str,
    compared: pd.DataFrame,
    pairs: dict[str, tuple[str, str]],
    claims: dict[str, tuple[str, str]] | None = None,
    *,
    metric: str = "Harrell C",
    margins: dict[str, float] | None = None,
    profile: str | None = None,
) -> pd.DataFrame:
    """Glue every verdict of a table of paired differences and record the claims among them.

    For each ``key: (a, b)`` of ``pairs`` the rows of ``compared`` whose ``comparison`` is
    ``"a - b"`` (as :meth:`ehrseq.evaluate.SurvivalProtocol.compare` writes them) give, per
    metric, ``verdict_<key>_<short>`` (:data:`METRIC_KEYS`) and, on ``metric``,
    ``diff_<key>``, ``diff_<key>_lower``, ``diff_<key>_upper`` and ``verdict_<key>``. A key of
    ``claims`` (``key: (claim, source)``) is also recorded for the results page with
    :func:`record_claim`, with its margin from ``margins`` when it is an equivalence claim.

    Returns:
        ``compared`` with a ``key`` column.

    Raises:
        ValueError: if a pair has no rows in ``compared``, or a claim is not a pair.
    """
    from ehrseq.evaluate import HIGHER_IS_BETTER

    claims, margins = claims or {}, margins or {}
    unknown = set(claims) - set(pairs)
    if unknown:
        raise ValueError(f"claims {sorted(unknown)} are not among the pairs")
    out = []
    for key, (a, b) in pairs.items():
        rows = compared[compared["comparison"] == f"{a} - {b}"].set_index("metric", drop=False)
        if metric not in rows.index:
            raise ValueError(f"no {metric!r} row for {a!r} - {b!r} in the compared table")
        for name, row in rows.iterrows():
            keep(f"verdict_{key}_{METRIC_KEYS[name]}", row["verdict"])
        main = rows.loc[metric].to_dict()
        if key in claims:  # glues verdict_<key> (reproduced / refuted / not resolved), diff_*
            claim, source = claims[key]
            record_claim(
                chapter,
                key,
                claim,
                main,
                higher_is_better=HIGHER_IS_BETTER[metric],
                source=source,
                margin=margins.get(key),
                profile=profile,
            )
        else:
            keep(f"verdict_{key}", main["verdict"])
            keep(f"diff_{key}", main["difference"])
            keep(f"diff_{key}_lower", main["lower"])
            keep(f"diff_{key}_upper", main["upper"])
        out.append(rows.reset_index(drop=True).assign(key=key))
    return pd.concat(out, ignore_index=True)


def read_claims(profile: str | None = None) -> pd.DataFrame:
    """Every recorded claim of a profile, ordered by chapter (empty frame if none)."""
    folder = claims_folder(profile)
    rows = []
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        rows += json.loads(path.read_text())
    columns = ["chapter", "key", "claim", "source", "comparison", "metric"]
    columns += ["difference", "lower", "upper", "margin", "verdict"]
    return pd.DataFrame(rows, columns=columns)
