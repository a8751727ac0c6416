"""The tensor contract: shapes, padding, batch == one at a time, hierarchical == flat."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Subset

from ehrseq.data.events import DOMAINS
from ehrseq.data.sequences import build_sequences
from ehrseq.data.tensors import (
    SPECIAL_DOMAIN_ID,
    LengthBucketSampler,
    SequenceDataset,
    collate_flat,
    collate_hierarchical,
    encode,
)
from ehrseq.data.vocab import CLS_ID, PAD_ID, SEP_ID, Vocab

FLAT_KEYS = (
    "codes",
    "ages",
    "visit_ids",
    "positions",
    "time_deltas",
    "domain_ids",
    "attention_mask",
)


def make_events(rows: list[tuple]) -> pd.DataFrame:
    """Rows of (person_id, day offset, domain, concept_id[, value[, visit id]])."""
    recs = [
        (
            r[0],
            pd.Timestamp("2020-01-01") + pd.Timedelta(days=r[1]),
            r[3],
            0,
            r[2],
            r[4] if len(r) > 4 else np.nan,
            0,
            r[5] if len(r) > 5 else None,
        )
        for r in rows
    ]
    df = pd.DataFrame(
        recs,
        columns=[
            "person_id",
            "time",
            "concept_id",
            "source_concept_id",
            "domain",
            "value_as_number",
            "unit_concept_id",
            "visit_occurrence_id",
        ],
    ).astype({"visit_occurrence_id": "Int64", "time": "datetime64[ns]"})
    return df.sort_values(["person_id", "time"], kind="stable").reset_index(drop=True)


def persons_for(ev: pd.DataFrame) -> pd.DataFrame:
    ids = np.unique(ev["person_id"])
    return pd.DataFrame({"person_id": ids, "birth_datetime": pd.Timestamp("1960-05-05")}).astype(
        {"birth_datetime": "datetime64[ns]"}
    )


@pytest.fixture
def small():
    ev = make_events(
        [
            (1, 0, "condition", 10),
            (1, 0, "drug", 20),
            (1, 3, "measurement", 30, 1.5),
            (2, 1, "condition", 10),
            (3, 0, "condition", 11),
            (3, 2, "procedure", 40),
            (3, 2, "drug", 20),
            (3, 9, "condition", 10),
        ]
    )
    seqs = build_sequences(ev, persons_for(ev))
    vocab = Vocab.fit(seqs.frame, train_ids=[1, 2])
    return seqs, vocab, encode(seqs, vocab)


def test_flat_batch_contract(small):
    seqs, vocab, enc = small
    b = enc.pad([0, 1, 2])
    assert b["codes"].shape == (3, 4)
    for k in FLAT_KEYS:
        assert b[k].shape == (3, 4), k
    assert b["codes"].dtype == torch.long and b["visit_ids"].dtype == torch.long
    assert b["ages"].dtype == torch.float32 and b["time_deltas"].dtype == torch.float32
    assert b["attention_mask"].dtype == torch.bool
    assert b["lengths"].tolist() == [3, 1, 4]
    assert b["attention_mask"].sum(1).tolist() == [3, 1, 4]
    assert b["person_ids"].tolist() == [1, 2, 3]
    # right padding, zeros on pads
    assert b["codes"][1, 1:].tolist() == [PAD_ID] * 3
    assert b["visit_ids"][0].tolist() == [1, 1, 2, 0]
    assert b["positions"][2].tolist() == [0, 1, 2, 3]
    assert b["time_deltas"][2].tolist() == [0.0, 2.0, 0.0, 7.0]
    assert b["domain_ids"][0, :3].tolist() == [
        1 + DOMAINS.index("condition"),
        1 + DOMAINS.index("drug"),
        1 + DOMAINS.index("measurement"),
    ]
    # patient 3's condition:11 and procedure:40 were never seen in training
    assert enc.report["unknown"] == 2
    age = (pd.Timestamp("2020-01-01") - pd.Timestamp("1960-05-05")) / pd.Timedelta(days=365.25)
    assert b["ages"][0, 0].item() == pytest.approx(age, rel=1e-6)


def test_hierarchical_batch_contract(small):
    _, _, enc = small
    h = enc.pad_hierarchical([0, 2])
    assert h["codes"].shape == (2, 3, 2)  # patient 3: visits of 1, 2, 1 codes
    assert h["code_mask"].sum((1, 2)).tolist() == [3, 4]
    assert h["visit_mask"].tolist() == [[True, True, False], [True, True, True]]
    assert h["lengths"].tolist() == [2, 3]
    assert h["time_deltas"][1].tolist() == [0.0, 2.0, 7.0]
    assert h["ages"].shape == (2, 3) and h["ages"][0, 2].item() == 0.0


def test_collate_matches_vectorised_pad_and_labels(small):
    _, _, enc = small
    ds = SequenceDataset(enc, durations=np.array([5.0, 7.0, 9.0]), events=np.array([1, 0, 1]))
    items = [ds[i] for i in (2, 0)]
    via_collate = collate_flat(items)
    via_pad = ds.batch([2, 0])
    for k in (*FLAT_KEYS, "lengths", "person_ids", "durations", "events"):
        assert torch.equal(via_collate[k], via_pad[k]), k
    hc = collate_hierarchical(items)
    hp = ds.batch([2, 0], hierarchical=True)
    for k in ("codes", "code_mask", "visit_mask", "ages", "time_deltas", "domain_ids"):
        assert torch.equal(hc[k], hp[k]), k
    assert via_pad["durations"].dtype == torch.float32 and via_pad["events"].dtype == torch.long
    with pytest.raises(ValueError, match="durations"):
        SequenceDataset(enc, durations=np.zeros(2))


def test_select_reorders_and_rejects_missing(small):
    _, _, enc = small
    sub = enc.select([3, 1])
    assert sub.person_ids.tolist() == [3, 1]
    assert torch.equal(sub.pad([0])["codes"], enc.pad([2])["codes"])
    with pytest.raises(ValueError, match="not in the encoding"):
        enc.select([4])
    with pytest.raises(ValueError, match="out of range"):
        enc.pad([3])


def test_dataloader_with_length_buckets(small):
    seqs, vocab, _ = small
    rng = np.random.default_rng(0)
    rows = [
        (p, int(d), "condition", int(c))
        for p in range(1, 41)
        for d, c in zip(range(rng.integers(1, 30)), rng.integers(1, 9, size=30))
    ]
    ev = make_events(rows)
    enc = encode(build_sequences(ev, persons_for(ev)), Vocab.fit(ev, range(1, 41)))
    ds = SequenceDataset(enc)
    sampler = LengthBucketSampler(ds.lengths, batch_size=8, bucket_size=40, seed=1)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_flat)
    seen, padded = [], 0
    for batch in loader:
        seen += batch["person_ids"].tolist()
        padded += int((~batch["attention_mask"]).sum())
    assert sorted(seen) == list(range(1, 41)) and len(loader) == 5
    random_pad = sum(
        int((~enc.pad(b)["attention_mask"]).sum()) for b in np.array_split(rng.permutation(40), 5)
    )
    assert padded < random_pad  # bucketing wastes less padding than random batches
    # the epoch changes the order, the seed fixes it
    a = list(LengthBucketSampler(ds.lengths, 8, seed=3))
    s2 = LengthBucketSampler(ds.lengths, 8, seed=3)
    assert list(s2) == a and list(s2) != a
    with pytest.raises(ValueError, match="batch_size"):
        LengthBucketSampler(ds.lengths, 0)


def test_loader_fetches_a_batch_at_once_equal_to_collating_items(small):
    _, _, enc = small
    ds = SequenceDataset(enc, durations=np.array([5.0, 7.0, 9.0]), events=np.array([1, 0, 1]))
    batches = [[2, 0], [1]]
    for collate in (collate_flat, collate_hierarchical):
        for data in (ds, Subset(ds, [2, 1, 0])):  # a Subset passes its batch on too
            loader = DataLoader(data, batch_sampler=batches, collate_fn=collate)
            for fetched, idx in zip(loader, batches, strict=True):
                items = collate([data[i] for i in idx])  # one dict per patient
                assert fetched.keys() == items.keys()
                for k, value in items.items():
                    assert fetched[k].dtype == value.dtype and torch.equal(fetched[k], value)
    # a collate function of one's own still gets one item per patient
    own = DataLoader(ds, batch_sampler=batches, collate_fn=lambda it: [i["person_id"] for i in it])
    assert [[int(p) for p in b] for b in own] == [[3, 1], [2]]


# ----------------------------------------------------------------------- properties
@st.composite
def cohorts(draw):
    rows = []
    n_pat = draw(st.integers(1, 6))
    for pid in range(1, n_pat + 1):
        for _ in range(draw(st.integers(1, 14))):
            dom = draw(st.sampled_from(DOMAINS))
            rows.append(
                (
                    pid,
                    draw(st.integers(0, 15)),
                    dom,
                    draw(st.integers(1, 8)),
                    draw(st.floats(0, 1)) if dom == "measurement" else np.nan,
                    draw(st.sampled_from([None, pid * 100, pid * 100 + 1])),
                )
            )
    return make_events(rows)


@settings(
    max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    ev=cohorts(),
    strategy=st.sampled_from(["flat", "visit", "domain"]),
    max_len=st.one_of(st.none(), st.integers(3, 10)),
    special=st.booleans(),
    data=st.data(),
)
def test_tensor_properties(ev, strategy, max_len, special, data):
    seqs = build_sequences(
        ev, persons_for(ev), strategy=strategy, max_len=max_len, add_cls=special, add_sep=special
    )
    vocab = Vocab.fit(seqs.frame, train_ids=[1, 2, 3])
    enc = encode(seqs, vocab)
    n = len(enc)
    idx = data.draw(st.permutations(range(n)))
    b = enc.pad(idx)
    true_len = seqs.lengths[idx]

    # all tensors truncated and padded together
    shape = b["codes"].shape
    assert shape == (n, int(true_len.max()))
    assert all(b[k].shape == shape for k in FLAT_KEYS)
    if max_len is not None:
        assert shape[1] <= max_len
    mask = b["attention_mask"]
    # padding is never counted as data
    assert mask.sum(1).tolist() == true_len.tolist() == b["lengths"].tolist()
    assert mask.equal(torch.arange(shape[1])[None, :] < b["lengths"][:, None])  # right padding
    for k in FLAT_KEYS[:-1]:
        assert (b[k][~mask] == 0).all(), k
    assert (b["codes"][mask] != PAD_ID).all()
    # visit ids: 1 on the first token, non-decreasing by steps of 0 or 1 over real tokens
    for i in range(n):
        v = b["visit_ids"][i, : true_len[i]]
        assert v[0] == 1 and ((v[1:] - v[:-1]) >= 0).all() and ((v[1:] - v[:-1]) <= 1).all()

    # a batch equals the same patients one at a time (after removing padding)
    for row, i in enumerate(idx):
        one = enc.pad([i])
        for k in FLAT_KEYS:
            assert torch.equal(b[k][row, : true_len[row]], one[k][0]), k

    # the hierarchical batch, flattened, equals the flat batch's real (non-special) tokens
    h = enc.pad_hierarchical(idx)
    keep = mask & (b["domain_ids"] != SPECIAL_DOMAIN_ID)
    assert torch.equal(h["codes"][h["code_mask"]], b["codes"][keep])
    assert torch.equal(h["domain_ids"][h["code_mask"]], b["domain_ids"][keep])
    assert not ((b["codes"][keep] == CLS_ID) | (b["codes"][keep] == SEP_ID)).any()
    assert torch.equal(h["visit_mask"], h["code_mask"].any(-1))
    assert (h["codes"][~h["code_mask"]] == PAD_ID).all()
    n_visits = [int(b["visit_ids"][r, keep[r]].unique().numel()) for r in range(n)]
    assert h["lengths"].tolist() == n_visits
    # hierarchical per-visit gaps are non-negative and start at 0
    assert (h["time_deltas"] >= 0).all() and (h["time_deltas"][:, 0] == 0).all()


def test_the_whole_path_from_events_to_a_labelled_loader():
    from ehrseq.data.labels import Outcome, survival_labels

    ev = make_events(
        [(p, d, "condition", 10 + (p + d) % 3) for p in range(1, 7) for d in range(0, 40, 7)]
        + [(p, 50, "condition", 99) for p in (2, 4)]  # the outcome, after the index for 2 and 4
        + [(5, 3, "condition", 99)]  # before the index: dropped from labels
    )
    ev = ev.sort_values(["person_id", "time"], kind="stable").reset_index(drop=True)
    persons = persons_for(ev)
    obs = pd.DataFrame(
        {
            "person_id": persons["person_id"],
            "observation_period_start_date": pd.Timestamp("2020-01-01"),
            "observation_period_end_date": pd.Timestamp("2020-12-31"),
        }
    )
    labels = survival_labels(ev, persons, obs, Outcome.of_concepts("x", [99]), 20, horizon_days=60)
    seqs = build_sequences(
        ev,
        persons,
        labels.prediction_times,
        strategy="visit",
        max_len=6,
        add_cls=True,
        add_sep=True,
    )
    assert (
        seqs.frame.merge(labels.prediction_times, on="person_id").eval("time < prediction_time")
    ).all()
    vocab = Vocab.fit(seqs.frame, train_ids=[1, 2, 3, 4])
    table = labels.table[labels.table["subject_id"].isin(seqs.person_ids)]
    enc = encode(seqs, vocab).select(table["subject_id"])
    ds = SequenceDataset(enc, durations=table["duration"], events=table["event"])
    loader = DataLoader(
        ds, batch_sampler=LengthBucketSampler(ds.lengths, 2), collate_fn=collate_flat
    )
    got = {}
    for batch in loader:
        assert batch["codes"].shape[1] <= 6 and (batch["codes"][:, 0] == CLS_ID).all()
        for pid, d, e in zip(batch["person_ids"], batch["durations"], batch["events"]):
            got[int(pid)] = (float(d), int(e))
    assert got == {int(r.subject_id): (float(r.duration), int(r.event)) for r in table.itertuples()}
    assert got[2] == (30.0, 1) and 5 not in got
