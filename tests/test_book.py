"""Glue helpers and claim records: plain numbers, verdicts by interval, a readable store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ehrseq.book import (
    format_floats,
    keep,
    keep_table,
    read_claims,
    record_claim,
    start_claims,
)
from ehrseq.numbers import plain as _plain


@pytest.fixture(autouse=True)
def _artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("EHRSEQ_ARTIFACTS", str(tmp_path))
    monkeypatch.setenv("EHRSEQ_PROFILE", "smoke")


def test_keep_glues_plain_python_numbers_and_returns_nothing():
    assert type(_plain(np.float32(1.5))) is float
    assert type(_plain(torch.tensor(3))) is int
    assert type(_plain(np.array([2.5]))) is float
    assert _plain("text") == "text"
    assert keep("a", np.float32(1.5)) is None  # no second output after a figure


def test_keep_table_formats_floats_only():
    import pandas as pd

    table = pd.DataFrame({"x": [0.12345, np.nan], "n": [1, 2]})
    shown = format_floats(table)
    assert shown["x"].tolist() == ["0.123", ""] and shown["n"].tolist() == [1, 2]
    assert keep_table("t", table) is None  # as a cell's last line: no second copy


def _diff(est, lo, hi, metric="Harrell C"):
    return {"comparison": "a - b", "metric": metric, "difference": est, "lower": lo, "upper": hi}


@pytest.mark.parametrize(
    ("est", "lo", "hi", "higher", "margin", "verdict"),
    [
        (0.02, 0.01, 0.03, True, None, "reproduced"),  # C up, interval above 0
        (-0.02, -0.03, -0.01, True, None, "refuted"),
        (0.01, -0.01, 0.03, True, None, "not resolved"),
        (-0.02, -0.03, -0.01, False, None, "reproduced"),  # IBS down is better
        (0.02, 0.01, 0.03, False, None, "refuted"),
        (0.001, -0.004, 0.006, True, 0.01, "reproduced"),  # equivalence within the margin
        (0.03, 0.02, 0.04, True, 0.01, "refuted"),
        (0.008, -0.002, 0.018, True, 0.01, "not resolved"),
    ],
)
def test_verdicts_follow_the_interval(est, lo, hi, higher, margin, verdict):
    got = record_claim(
        "ch", "k", "claim", _diff(est, lo, hi), higher_is_better=higher, margin=margin
    )
    assert got == verdict


def test_claims_are_stored_replaced_and_cleared():
    record_claim("ch_a", "one", "first", _diff(0.02, 0.01, 0.03), higher_is_better=True)
    record_claim("ch_a", "one", "first again", _diff(0.0, -0.01, 0.01), higher_is_better=True)
    record_claim("ch_b", "two", "second", _diff(-0.1, -0.2, -0.05), higher_is_better=True)
    claims = read_claims()
    assert claims["key"].tolist() == ["one", "two"]
    assert claims.set_index("key").loc["one", "verdict"] == "not resolved"
    start_claims("ch_a")
    assert read_claims()["chapter"].tolist() == ["ch_b"]
    assert read_claims("book").empty  # another profile has its own folder


def test_bad_differences_raise():
    with pytest.raises(ValueError, match="lacks"):
        record_claim("ch", "k", "c", {"difference": 0.1}, higher_is_better=True)
    with pytest.raises(ValueError, match="outside"):
        record_claim("ch", "k", "c", _diff(0.5, 0.0, 0.1), higher_is_better=True)


def test_record_comparisons_glues_every_verdict_and_records_the_claims():
    import pandas as pd

    from ehrseq.book import record_comparisons

    compared = pd.DataFrame(
        [
            {
                "comparison": "a - b",
                "metric": "Harrell C",
                "difference": 0.02,
                "lower": 0.01,
                "upper": 0.03,
                "verdict": "a is better",
            },
            {
                "comparison": "a - b",
                "metric": "IBS",
                "difference": 0.0,
                "lower": -0.01,
                "upper": 0.01,
                "verdict": "not resolved",
            },
            {
                "comparison": "c - b",
                "metric": "Harrell C",
                "difference": 0.001,
                "lower": -0.002,
                "upper": 0.004,
                "verdict": "not resolved",
            },
        ]
    )
    out = record_comparisons(
        "ch",
        compared,
        {"ab": ("a", "b"), "cb": ("c", "b")},
        {"cb": ("c matches b", "src")},
        margins={"cb": 0.01},
    )
    assert out["key"].tolist() == ["ab", "ab", "cb"]
    claims = read_claims()
    assert claims["key"].tolist() == ["cb"] and claims["verdict"].tolist() == ["reproduced"]
    with pytest.raises(ValueError, match="not among the pairs"):
        record_comparisons("ch", compared, {"ab": ("a", "b")}, {"zz": ("x", "")})
    with pytest.raises(ValueError, match="no 'Harrell C' row"):
        record_comparisons("ch", compared, {"ba": ("b", "a")})


def test_number_never_reads_as_a_negative_zero():
    from ehrseq.book import number

    assert number(-0.00004, "+.4f") == "0.0000" and number(0.0, "+.3f") == "0.000"
    assert number(-0.004, ".2f") == "0.00" and number(-0.0004, ".1%") == "0.0%"
    assert number(-0.006, ".2f") == "-0.01" and number(0.25, "+.2f") == "+0.25"
    assert number(np.float32(-1e-9), ".3g") == "-1e-09"  # not zero at this precision


def test_interval_stays_on_one_line_and_says_when_it_has_no_spread():
    from ehrseq.book import interval

    assert interval(0.612, 0.59, 0.633) == "0.612 [0.590,\u00a00.633]"
    assert interval(-1e-5, -2e-3, 1e-3, "+.3f") == "0.000 [-0.002,\u00a0+0.001]"
    assert interval(0.5, 0.5, 0.5, same="constant risk") == "0.500 (constant risk)"


def test_format_floats_counts_and_signs():
    import pandas as pd

    table = pd.DataFrame({"x": [0.1, -1e-6], "n": [111.0, 11610.0], "flag": [1.0, 0.0]})
    shown = format_floats(table, "{:+.4f}")
    assert shown["x"].tolist() == ["+0.1000", "0.0000"]
    assert shown["n"].tolist() == ["111", "11,610"]  # counts as floats read as counts
    assert shown["flag"].tolist() == ["+1.0000", "0.0000"]  # 0/1 may be a rate


def test_keep_table_leaves_out_a_default_index():
    import pandas as pd

    from ehrseq.book import _for_glue

    plain = _for_glue(pd.DataFrame({"a": ["x", "y"]}), "t")
    html = plain.to_html()
    assert 'class="dataframe"' in html and ">0<" not in html and ">x<" in html
    named = pd.DataFrame({"a": ["x"]}, index=pd.Index(["m"], name="model"))
    assert _for_glue(named, "t") is named  # a meaningful index stays


def test_show_formats_and_leaves_out_a_default_index():
    import pandas as pd

    from ehrseq.book import show

    html = show(pd.DataFrame({"loss": [0.123456, -1e-7]}), "{:.4f}").to_html()
    assert ">0.1235<" in html and ">0.0000<" in html and "<th>0</th>" not in html
    assert show(pd.DataFrame({"a": [1]}, index=["m"])).index.tolist() == ["m"]
