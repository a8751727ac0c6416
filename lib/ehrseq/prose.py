"""The prose as a reader reads it: glued values pasted in, then checked for nonsense.

A chapter's sentences are written once and filled with numbers glued at run time
(``{glue:text}`name:fmt```). At a small run size (the ``smoke`` profile) a sentence can
turn into nonsense although every number in it is honest: "1 seeds", a share of "7104 %", an
interval "0.310 to 0.310". :func:`rendered_prose` pastes the glued values of an executed
notebook into its markdown the way the book does, and :func:`prose_problems` finds such
sentences, naming the cell and quoting them. ``tests/conftest.py`` runs the check on every
chapter the test suite executes; ``scripts/execute_chapters.py`` on every chapter the book
executes.

What counts as a problem:

- a glued value formatted as a percentage (``:.1%``) that lies outside [0, 1], unless its
  name says it is a change rather than a share (it contains one of :data:`CHANGE_WORDS`);
- the number 1 before a plural noun ("1 seeds", "1 times as long");
- an interval whose two ends read the same ("0.310 to 0.310", "[0.31, 0.31]");
- a negative zero ("-0.0000": a small negative value formatted with too few digits; glue
  it as text with :func:`ehrseq.book.number`, or with more digits);
- a glued value that the prose uses but the notebook never glued, or a value that is
  ``nan``.
"""

from __future__ import annotations

import ast
import re
from typing import Any

__all__ = ["CHANGE_WORDS", "glued_values", "prose_problems", "rendered_prose"]

#: Words in a glued name that mark a change or ratio, which may exceed 100 % or go negative.
CHANGE_WORDS = ("change", "gain", "drop", "diff", "ratio", "increase", "lift", "rel", "delta")

_ROLE = re.compile(r"\{glue(?::(text|md|any|))?\}`([^`]+)`")
_PREFIX = "application/papermill.record/"
_PLURAL_AFTER_ONE = re.compile(r"(?<![\d.,])\b1 ([a-z]{2,}s)(?<!ss)(?<!us)(?<!is)\b")
_NUMBER = r"[-+−]?\d[\d,]*(?:\.\d+)?%?"
_INTERVAL = re.compile(
    rf"(?<![\w.])({_NUMBER}) (?:to|–) ({_NUMBER})(?![\w.])|\[({_NUMBER}), ({_NUMBER})\]"
)
_NEGATIVE_ZERO = re.compile(r"(?<![\w.\-−])[-−]0(?:\.0+)?%?(?![\d.])")
_PERCENT_SPEC = re.compile(r"^[+\- ]?[\d,]*(?:\.\d+)?%$")


def glued_values(nb: Any) -> dict[str, dict[str, str]]:
    """``{name: {mime type: data}}`` of every value the executed notebook glued."""
    values: dict[str, dict[str, str]] = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            meta = out.get("metadata", {}).get("scrapbook")
            if not meta:
                continue
            data = {k[len(_PREFIX) :]: v for k, v in out.get("data", {}).items()}
            values[meta["name"]] = data
    return values


def _format(name: str, spec: str, data: dict[str, str]) -> tuple[str, float | None]:
    """The text the book shows for ``{glue:text}`name:spec```, and the number if any."""
    text = data.get("text/markdown") or data.get("text/plain", "")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text.strip("'\"")
        if value.lower() in ("nan", "inf", "-inf"):
            value = float(value)
    if spec and isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, spec), float(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value), float(value)
    return str(value), None


def rendered_prose(nb: Any) -> tuple[list[tuple[int, str]], list[str]]:
    """The markdown cells with glued values pasted in, and the problems found on the way.

    Returns:
        ``[(cell index, text)]`` and a list of problems (a name the notebook never glued, a
        glued ``nan``, a percentage of a share outside [0, 1]).
    """
    values = glued_values(nb)
    cells, problems = [], []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue

        def paste(match: re.Match, i: int = i) -> str:
            role, target = match.group(1), match.group(2)
            name, _, spec = target.partition(":") if role == "text" else (target, "", "")
            if name not in values:
                problems.append(f"cell {i}: {name!r} is used in the prose but never glued")
                return f"<{name}?>"
            if "text/html" in values[name] or "image/png" in values[name]:
                return f"<{name}>"  # a table or figure: read as a whole, not as a sentence
            text, number = _format(name, spec, values[name])
            if number is not None and number != number:  # nan
                problems.append(f"cell {i}: {name!r} is nan")
            if (
                number is not None
                and _PERCENT_SPEC.match(spec)
                and not 0.0 <= number <= 1.0
                and not any(w in name.lower() for w in CHANGE_WORDS)
            ):
                problems.append(f"cell {i}: share {name!r} reads {text} (outside 0-100 %)")
            return text

        cells.append((i, _ROLE.sub(paste, cell.source)))
    return cells, problems


def _same(a: str, b: str) -> bool:
    clean = [s.replace(",", "").replace("−", "-").rstrip("%") for s in (a, b)]
    try:
        return float(clean[0]) == float(clean[1])
    except ValueError:
        return False


def prose_problems(nb: Any) -> list[str]:
    """Every sentence of an executed notebook that reads as nonsense (see the module doc).

    Each problem names the markdown cell and quotes the text around it.
    """
    cells, problems = rendered_prose(nb)
    for i, text in cells:
        flat = " ".join(text.split()).replace("$-$", "-").replace("$+$", "+")
        for m in _PLURAL_AFTER_ONE.finditer(flat):
            problems.append(f"cell {i}: '1 {m.group(1)}' in “{_around(flat, m)}”")
        for m in _INTERVAL.finditer(flat):
            a, b = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
            if _same(a, b):
                problems.append(f"cell {i}: an interval with equal ends in “{_around(flat, m)}”")
        for m in _NEGATIVE_ZERO.finditer(flat):
            problems.append(f"cell {i}: a negative zero in “{_around(flat, m)}”")
    return problems


def _around(text: str, m: re.Match, width: int = 50) -> str:
    return text[max(0, m.start() - width) : m.end() + width].strip()
