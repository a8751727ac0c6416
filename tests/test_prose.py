"""The prose check finds the sentences a small run turns into nonsense, and only those."""

from __future__ import annotations

import nbformat
import pytest

from ehrseq.book import plural
from ehrseq.prose import prose_problems, rendered_prose


def _glue(name: str, value, mime: str = "text/plain") -> dict:
    return nbformat.v4.new_output(
        "display_data",
        data={f"application/papermill.record/{mime}": value},
        metadata={"scrapbook": {"name": name, "mime_prefix": "application/papermill.record/"}},
    )


def notebook(values: dict, markdown: str):
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("keep(...)")
    code.outputs = [_glue(k, v) for k, v in values.items()]
    table = _glue("table", "<table></table>", "text/html")
    code.outputs.append(table)
    nb.cells = [code, nbformat.v4.new_markdown_cell(markdown)]
    return nb


def test_pastes_values_as_the_book_formats_them():
    nb = notebook(
        {"c": "0.71234", "share": "0.25", "n": "3"},
        "C {glue:text}`c:.3f`, {glue:text}`share:.0%` of {glue:text}`n` runs; {glue:}`table`",
    )
    (cells, problems) = rendered_prose(nb)
    assert cells == [(1, "C 0.712, 25% of 3 runs; <table>")]
    assert problems == []


@pytest.mark.parametrize(
    ("values", "markdown", "found"),
    [
        ({"n": "1"}, "over {glue:text}`n` seeds", "'1 seeds'"),
        ({"n": "2"}, "over {glue:text}`n` seeds", None),
        ({"n": "1"}, "one flat step takes {glue:text}`n:.0f` times as long", "'1 times'"),
        ({"n": "1"}, "in {glue:text}`n` class", None),
        ({"s": "71.04"}, "it has covered {glue:text}`s:.0%` of the way", "outside 0-100"),
        ({"auc_gain": "1.5"}, "a gain of {glue:text}`auc_gain:.0%`", None),
        ({"lo": "0.3101", "hi": "0.3102"}, "{glue:text}`lo:.3f` to {glue:text}`hi:.3f`", "equal"),
        ({"lo": "0.31", "hi": "0.32"}, "from {glue:text}`lo:.3f` to {glue:text}`hi:.3f`", None),
        ({"x": "1.5"}, "from $-${glue:text}`x` to {glue:text}`x`", None),
        ({"lo": "0.5", "hi": "0.5"}, "C [{glue:text}`lo:.2f`, {glue:text}`hi:.2f`]", "equal"),
        ({}, "the value {glue:text}`missing:.2f`", "never glued"),
        ({"x": "nan"}, "the value {glue:text}`x`", "nan"),
        ({"d": "-0.00002"}, "a change of {glue:text}`d:+.4f` in C", "negative zero"),
        ({"d": "-0.0002"}, "a change of {glue:text}`d:+.4f` in C", None),
        ({"d": "-0.00002"}, "a change of {glue:text}`d:+.1e` in C", None),
        ({"drop": "-0.00001"}, "a drop of {glue:text}`drop:.1%`", "negative zero"),
        ({}, "ages 40-0.5 and q0-0.0", None),
    ],
)
def test_finds_nonsense(values, markdown, found):
    problems = prose_problems(notebook(values, markdown))
    if found is None:
        assert problems == []
    else:
        assert len(problems) == 1 and found in problems[0], problems
        assert problems[0].startswith("cell 1:")


def test_plural():
    assert plural(1, "seed") == "1 seed"
    assert plural(3, "seed") == "3 seeds"
    assert plural(1.0, "year") == "1 year"
    assert plural(0.5, "year") == "0.5 years"
    assert plural(2, "patient", ",") == "2 patients"
    assert plural(1200, "patient", ",") == "1,200 patients"
