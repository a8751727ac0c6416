"""The vocabulary: special ids, training-only fit, deciles, back-off, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ehrseq.data.sequences import build_sequences
from ehrseq.data.vocab import CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS, UNK_ID, Vocab


def frame(rows: list[tuple]) -> pd.DataFrame:
    """Rows of (person_id, domain, concept_id[, value]) -- all the vocabulary reads."""
    return pd.DataFrame(
        [(r[0], r[1], r[2], r[3] if len(r) > 3 else np.nan) for r in rows],
        columns=["person_id", "domain", "concept_id", "value_as_number"],
    )


def test_special_tokens_are_distinct_and_pad_is_zero():
    assert PAD_ID == 0
    ids = [PAD_ID, UNK_ID, MASK_ID, CLS_ID, SEP_ID]
    assert len(set(ids)) == 5
    assert [SPECIAL_TOKENS[i] for i in ids] == ["[PAD]", "[UNK]", "[MASK]", "[CLS]", "[SEP]"]
    v = Vocab.fit(frame([(1, "condition", 5)]), [1])
    assert v.itos[:5] == list(SPECIAL_TOKENS)
    assert v.stoi["condition:5"] == 5


def test_fit_uses_training_patients_only_and_min_frequency():
    df = frame(
        [
            (1, "condition", 10),
            (1, "condition", 10),
            (2, "condition", 10),
            (2, "drug", 20),  # once: below min_frequency 2
            (3, "procedure", 30),  # test patient only
            (3, "procedure", 30),
        ]
    )
    v = Vocab.fit(df, train_ids=[1, 2], min_frequency=2)
    assert v.tokens == ["condition:10"]
    assert v.counts == [3]
    ids, rep = v.encode(df)
    assert ids.tolist() == [5, 5, 5, UNK_ID, UNK_ID, UNK_ID]
    assert rep["unknown"] == 3 and rep["unknown_concepts"] == 2 and rep["exact"] == 3


def test_repr_states_its_facts_on_short_lines():
    df = frame([(1, "condition", 10), (1, "condition", 10), (2, "drug", 20)])
    v = Vocab.fit(df, train_ids=[1, 2], min_frequency=2)
    text = repr(v)
    assert text == (
        f"Vocab({len(SPECIAL_TOKENS) + 1} tokens: {len(SPECIAL_TOKENS)} special + 1,\n"
        "      0 measurement concepts with value bins, min_frequency=2)"
    )
    assert str(v) == text
    assert max(len(line) for line in text.splitlines()) <= 88


def test_deciles_come_from_training_values_only():
    train = [(1, "measurement", 7, float(x)) for x in range(1, 101)]
    test = [(2, "measurement", 7, 1e6), (2, "measurement", 7, -1e6)]
    df = frame(train + test)
    v = Vocab.fit(df, [1])
    np.testing.assert_allclose(
        v.value_cuts[7], np.quantile(np.arange(1, 101), np.arange(1, 10) / 10)
    )
    assert v.token_of("measurement", 7, 95.0) == "measurement:7:q9"
    assert v.token_of("measurement", 7, 1.0) == "measurement:7:q0"
    assert v.token_of("measurement", 7, 55.0) == "measurement:7:q5"
    assert v.token_of("measurement", 7) == "measurement:7"
    ids, _ = v.encode(df)
    toks = [v.itos[i] for i in ids]
    assert toks[-2:] == ["measurement:7:q9", "measurement:7:q0"]
    # the value-free token counts every row of the concept
    assert v.counts[v.stoi["measurement:7"] - len(SPECIAL_TOKENS)] == 100
    # a held-out patient with extreme values does not move the cut points
    v_all = Vocab.fit(df, [1, 2])
    assert not np.allclose(v_all.value_cuts[7], v.value_cuts[7])


def test_rare_decile_falls_back_to_value_free_token():
    df = frame([(1, "measurement", 7, float(x)) for x in range(10)])
    v = Vocab.fit(df, [1], min_frequency=2)  # each decile seen once: only measurement:7 stays
    assert v.tokens == ["measurement:7"]
    ids, rep = v.encode(df)
    assert (ids == v.stoi["measurement:7"]).all()
    assert rep["value_dropped"] == 10 and rep["exact"] == 0


def test_unseen_codes_back_off_to_nearest_ancestor_in_vocab():
    train = frame([(1, "condition", 100), (1, "condition", 10), (1, "measurement", 50, 3.0)])
    v = Vocab.fit(train, [1])
    test = frame(
        [
            (2, "condition", 111),  # ancestors 110 (not in vocab), 100 (in vocab)
            (2, "condition", 999),  # no ancestors known
            (2, "drug", 100),  # ancestor must be in the same domain
            (2, "measurement", 51, 9.0),  # -> measurement:50 with the ancestor's deciles
        ]
    )
    anc = {111: [110, 100, 10], 100: [10], 51: [50]}
    ids, rep = v.encode(test, ancestors=anc)
    assert [v.itos[i] for i in ids] == [
        "condition:100",
        "[UNK]",
        "[UNK]",
        "measurement:50:q9",
    ]
    assert rep["ancestor"] == 2 and rep["unknown"] == 2
    ids_plain, rep_plain = v.encode(test)
    assert (ids_plain == UNK_ID).all() and rep_plain["unknown"] == 4


def test_special_rows_of_a_sequence_frame():
    ev = pd.DataFrame(
        {
            "person_id": np.array([1, 1], dtype=np.int64),
            "time": pd.to_datetime(["2020-01-01", "2020-01-02"]),
            "concept_id": np.array([10, 20], dtype=np.int64),
            "source_concept_id": np.zeros(2, dtype=np.int64),
            "domain": ["condition", "drug"],
            "value_as_number": [np.nan, np.nan],
            "unit_concept_id": np.zeros(2, dtype=np.int64),
            "visit_occurrence_id": pd.array([None, None], dtype="Int64"),
        }
    )
    persons = pd.DataFrame({"person_id": [1], "birth_datetime": pd.to_datetime(["1970-01-01"])})
    s = build_sequences(ev, persons, add_cls=True, add_sep=True)
    v = Vocab.fit(s.frame, [1])
    assert v.tokens == ["condition:10", "drug:20"]  # special rows are not counted
    ids, rep = v.encode(s.frame)
    assert ids.tolist() == [CLS_ID, 5, SEP_ID, 6, SEP_ID]
    assert rep["special"] == 3


def test_json_round_trip(tmp_path):
    df = frame(
        [(1, "measurement", 7, float(x)) for x in range(30)]
        + [(1, "condition", 1), (1, "condition", 1), (1, "drug", 2)]
    )
    v = Vocab.fit(df, [1], min_frequency=1)
    path = tmp_path / "vocab.json"
    v.save(path)
    d = json.loads(path.read_text())  # plain JSON
    assert d["format"] == "ehrseq.vocab" and d["tokens"] == v.tokens
    w = Vocab.load(path)
    assert w.itos == v.itos and w.counts == v.counts
    for c in v.value_cuts:
        np.testing.assert_array_equal(w.value_cuts[c], v.value_cuts[c])
    np.testing.assert_array_equal(w.encode(df)[0], v.encode(df)[0])
    with pytest.raises(ValueError, match="not an ehrseq vocabulary"):
        Vocab.from_dict({"format": "other"})


def test_bad_inputs_raise():
    df = frame([(1, "condition", 1)])
    with pytest.raises(ValueError, match="no rows of training patients"):
        Vocab.fit(df, [2])
    with pytest.raises(ValueError, match="min_frequency"):
        Vocab.fit(df, [1], min_frequency=0)
    with pytest.raises(ValueError, match="unknown domain"):
        Vocab.fit(frame([(1, "lab", 1)]), [1])
    with pytest.raises(ValueError, match="missing columns"):
        Vocab.fit(df.drop(columns="value_as_number"), [1])


@settings(max_examples=40, deadline=None, database=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 4),
            st.sampled_from(["condition", "drug", "measurement"]),
            st.integers(1, 5),
            st.floats(-5, 5, allow_nan=False),
        ),
        min_size=1,
        max_size=40,
    ),
    st.integers(1, 3),
)
def test_encode_matches_token_of(rows, min_freq):
    df = frame([(1, "drug", 9), *rows])
    df.loc[df["domain"] != "measurement", "value_as_number"] = np.nan
    v = Vocab.fit(df, [1, 2], min_frequency=min_freq)
    ids, rep = v.encode(df)
    assert rep["exact"] + rep["value_dropped"] + rep["unknown"] == len(df)
    for i, (_, r) in zip(ids, df.iterrows()):
        tok = v.token_of(r["domain"], r["concept_id"], r["value_as_number"])
        if tok in v:
            assert i == v.stoi[tok]
        elif tok.rsplit(":", 1)[0] in v and tok.count(":") == 2:
            assert i == v.stoi[tok.rsplit(":", 1)[0]]
        else:
            assert i == UNK_ID
