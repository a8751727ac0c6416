"""Diagnosis objects: true links vs visit co-occurrence, bad input counted, padding limits,
the CDM reader, and the original MiME format read without running code."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from ehrseq.data.synthetic import SyntheticConfig, generate_cohort
from ehrseq.data.visit_objects import (
    LINK_COLUMN,
    ObjectLimits,
    ObjectVocab,
    UnsafePickleError,
    before_prediction_time,
    link_agreement,
    mime_seqs_to_objects,
    pad_visit_graphs,
    pad_visit_objects,
    read_mime_seqs,
    take_graph_persons,
    take_persons,
    treatment_index,
    trim_graphs,
    visit_objects,
    visit_objects_from_cdm,
)


def tiny_tables() -> dict[str, pd.DataFrame]:
    """Person 1: visit 10 (dx A=100, B=200; drug 7 for A, drug 8 for B, proc 5 for B),
    visit 11 (dx A; drug 7 for A). Person 2: visit 20 (dx C=300; drug 9, no link)."""
    cond = pd.DataFrame(
        {
            "condition_occurrence_id": [1, 2, 3, 4],
            "person_id": [1, 1, 1, 2],
            "condition_concept_id": [100, 200, 100, 300],
            "visit_occurrence_id": [10, 10, 11, 20],
            "condition_start_date": ["2020-01-01", "2020-01-01", "2020-02-01", "2020-01-05"],
        }
    )
    drug = pd.DataFrame(
        {
            "drug_exposure_id": [1, 2, 3, 4],
            "person_id": [1, 1, 1, 2],
            "drug_concept_id": [7, 8, 7, 9],
            "visit_occurrence_id": [10, 10, 11, 20],
            LINK_COLUMN: pd.array([1, 2, 3, pd.NA], dtype="Int64"),
        }
    )
    proc = pd.DataFrame(
        {
            "procedure_occurrence_id": [1],
            "person_id": [1],
            "procedure_concept_id": [5],
            "visit_occurrence_id": [10],
            LINK_COLUMN: [2],
        }
    )
    return {"condition_occurrence": cond, "drug_exposure": drug, "procedure_occurrence": proc}


def test_true_links_give_the_objects():
    vo = visit_objects(tiny_tables(), links="true")
    assert vo.nested() == [
        [[(100, [7], []), (200, [8], [5])], [(100, [7], [])]],
        [[(300, [], [])]],
    ]
    assert vo.report.counts["unlinked_drug"] == 1
    assert vo.report.counts["objects"] == 4


def test_visit_cooccurrence_links_every_treatment_to_every_diagnosis():
    t = tiny_tables()
    plain = {k: v.drop(columns=[LINK_COLUMN], errors="ignore") for k, v in t.items()}
    vo = visit_objects(plain, links="visit")
    assert vo.nested() == [
        [[(100, [7, 8], [5]), (200, [7, 8], [5])], [(100, [7], [])]],
        [[(300, [9], [])]],
    ]
    with pytest.raises(ValueError, match="links='visit'"):
        visit_objects(plain, links="true")
    with pytest.raises(ValueError, match="links must be"):
        visit_objects(plain, links="guess")


def test_bad_input_is_counted_never_raised():
    t = tiny_tables()
    t["condition_occurrence"] = pd.concat(
        [
            t["condition_occurrence"].astype({"condition_occurrence_id": object}),
            pd.DataFrame(
                {
                    "condition_occurrence_id": ["x9", 6, 7],  # an id that does not parse
                    "person_id": [1, 1, 1],
                    "condition_concept_id": [100, 100, 200],
                    "visit_occurrence_id": [10, None, 10],  # no visit; a duplicate dx
                    "condition_start_date": ["2020-01-01"] * 3,
                }
            ),
        ],
        ignore_index=True,
    )
    t["drug_exposure"] = pd.concat(
        [
            t["drug_exposure"],
            pd.DataFrame(
                {
                    "drug_exposure_id": [5, 6, 7],
                    "person_id": [1, 1, 1],
                    "drug_concept_id": [7, 8, 9],
                    "visit_occurrence_id": [10, 10, 99],  # visit 99 has no diagnosis
                    LINK_COLUMN: pd.array([999, 3, pd.NA], dtype="Int64"),  # dangling, cross
                }
            ),
        ],
        ignore_index=True,
    )
    vo = visit_objects(t, links="true")
    c = vo.report.counts
    assert c["bad_id_condition_occurrence"] == 1
    assert c["no_visit_condition_occurrence"] == 1
    assert c["duplicate_diagnoses_merged"] == 1
    assert c["dangling_link_drug"] == 1
    assert c["cross_visit_link_drug"] == 1
    assert c["unlinked_drug"] == 2
    assert c["visits_without_diagnosis"] == 1
    assert c["treatments_in_visits_without_diagnosis"] == 1
    assert vo.nested()[0][0] == [(100, [7], []), (200, [8], [5])]  # unchanged by the bad rows
    vo = visit_objects(t, links="visit")
    assert vo.report.counts["visits_without_diagnosis"] == 1


@pytest.fixture(scope="module")
def cohort():
    return generate_cohort(SyntheticConfig(n_patients=120, seed=3))


def test_true_links_match_the_generator(cohort):
    vo = visit_objects(cohort.tables, links="true")
    drug = cohort.tables["drug_exposure"]
    cond = cohort.tables["condition_occurrence"]
    # every drug row's link names a condition row of its own visit; each becomes one link
    pairs = drug.merge(
        cond, left_on=LINK_COLUMN, right_on="condition_occurrence_id", suffixes=("", "_c")
    )
    assert (pairs["visit_occurrence_id"] == pairs["visit_occurrence_id_c"]).all()
    want = set(
        zip(pairs["visit_occurrence_id"], pairs["condition_concept_id"], pairs["drug_concept_id"])
    )
    got_links = vo.links[vo.links["kind"] == "drug"].merge(vo.objects, on="object_id")
    got = set(zip(got_links["visit_occurrence_id"], got_links["dx"], got_links["concept_id"]))
    assert got == want
    c = vo.report.counts
    assert c["dangling_link_drug"] == c["cross_visit_link_drug"] == 0
    # co-occurrence links hold every true link, and more
    vv = visit_objects(cohort.omop_tables(), links="visit")
    assert vv.objects.equals(vo.objects)
    co = vv.links.merge(vv.objects, on="object_id")
    co_set = set(zip(co["visit_occurrence_id"], co["dx"], co["concept_id"]))
    assert got <= co_set and len(co_set) > len(got)


def test_cdm_reader_agrees_with_the_frames(cohort, tmp_path):
    cohort.write_omop(tmp_path / "pq", fmt="parquet", include_vocabulary=False)
    cohort.write_omop(tmp_path / "csv", fmt="csv", include_vocabulary=False)
    want = visit_objects(cohort.omop_tables(), links="visit")
    for folder in ("pq", "csv"):
        got = visit_objects_from_cdm(tmp_path / folder, links="visit")
        pd.testing.assert_frame_equal(got.objects, want.objects, check_dtype=False)
        pd.testing.assert_frame_equal(got.links, want.links, check_dtype=False)
        pd.testing.assert_frame_equal(got.labs, want.labs, check_dtype=False)
    assert len(want.labs) > 0


def test_padding_limits_and_cut_counts(cohort):
    vo = visit_objects(cohort.tables, links="true")
    vocab = ObjectVocab.fit(vo)
    full, cuts = pad_visit_objects(vo, vocab)
    assert all(v == 0 for k, v in cuts.items())
    n_visits = full["visit_mask"].sum(1).numpy()
    lim = ObjectLimits(max_visits=3, max_diagnoses=2, max_drugs=1, max_procedures=1)
    b, cuts = pad_visit_objects(vo, vocab, limits=lim)
    assert b["dx_codes"].shape[1:] == (3, 2) and b["rx_codes"].shape[-1] == 1
    assert cuts["visits_cut"] == int(np.maximum(n_visits - 3, 0).sum())
    # the most recent visits are kept, real visits first
    last = [row[row >= 0][-1] for row in full["visit_occurrence_ids"]]
    kept_last = [row[row >= 0][-1] for row in b["visit_occurrence_ids"]]
    assert last == kept_last
    assert not (b["visit_mask"][:, 1:] & ~b["visit_mask"][:, :-1]).any()
    # counts of cut objects and drugs, recomputed from the unlimited tensors
    keep_v = full["visit_mask"].clone()
    for i, n in enumerate(n_visits):
        keep_v[i, : max(n - 3, 0)] = False
    per_visit = full["dx_mask"].sum(-1)[keep_v]
    assert cuts["diagnoses_cut"] == int((per_visit - 2).clamp(min=0).sum())
    per_obj = full["rx_mask"].sum(-1)[keep_v][:, :2]
    assert cuts["drugs_cut"] == int((per_obj - 1).clamp(min=0).sum())
    assert (b["dx_mask"] == (b["dx_codes"] > 0)).all()
    assert not (b["rx_mask"] & ~b["dx_mask"][..., None]).any()


def test_vocab_fitted_on_training_persons_only(cohort):
    vo = visit_objects(cohort.tables, links="true")
    ids = vo.person_ids()
    train, test = ids[:60], ids[60:]
    vocab = ObjectVocab.fit(vo.subset(train))
    assert ObjectVocab.fit(vo.subset(train)) == vocab
    seen = set(vo.subset(train).objects["dx"])
    unseen = ~vo.subset(test).objects["dx"].isin(seen)
    b, cuts = pad_visit_objects(vo, vocab, person_ids=test)
    assert cuts["unknown_dx"] == int(unseen.sum())
    assert list(b["person_ids"]) == list(test)
    b, cuts = pad_visit_objects(vo, vocab, person_ids=[ids[0], -5])
    assert cuts["persons_without_visits"] == 1 and list(b["person_ids"]) == [ids[0]]


README_EXAMPLE = [[[[0, [0, 1], []], [1, [0], [0, 2]]], [[2, [2], []]]]]


def test_mime_format_json_and_plain_pickle(tmp_path):
    (tmp_path / "a.seqs").write_text(json.dumps(README_EXAMPLE))
    (tmp_path / "b.seqs").write_bytes(pickle.dumps(README_EXAMPLE, protocol=2))
    (tmp_path / "c.seqs").write_bytes(pickle.dumps(README_EXAMPLE, protocol=0))
    for name in ("a", "b", "c"):
        assert read_mime_seqs(tmp_path / f"{name}.seqs") == README_EXAMPLE
    vo = mime_seqs_to_objects(README_EXAMPLE)
    assert vo.nested() == [[[(0, [0, 1], []), (1, [0], [0, 2])], [(2, [2], [])]]]
    (tmp_path / "junk.seqs").write_bytes(b"\x00not a pickle")
    with pytest.raises(ValueError, match="neither JSON nor"):
        read_mime_seqs(tmp_path / "junk.seqs")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.seqs"
    path.write_bytes(pickle.dumps([[[[0, [], []]]], _Evil(marker)]))
    with pytest.raises(
        UnsafePickleError, match=r"refused.*(posix|os)\.system.*Nothing was executed"
    ):
        read_mime_seqs(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps(np.arange(3)))  # a NumPy array needs a global too
    with pytest.raises(UnsafePickleError, match="numpy"):
        read_mime_seqs(path)


def test_malformed_mime_entries_are_counted():
    seqs = [
        [[[0, [1], []], [0, [2], []], ["x", [], []], [1, "no", []]], []],
        "not a patient",
        [[[3, [], [True]]]],
    ]
    vo = mime_seqs_to_objects(seqs)
    c = vo.report.counts
    assert c["malformed_object"] == 3 and c["malformed_patient"] == 1
    assert c["duplicate_diagnoses_merged"] == 1 and c["empty_visit"] == 2
    assert vo.nested() == [[[(0, [1], [])]]]
    with pytest.raises(ValueError, match="list of patients"):
        mime_seqs_to_objects({"a": 1})


def test_visit_graphs_nodes_true_links_and_cuts():
    t = tiny_tables()
    t["measurement"] = pd.DataFrame(
        {
            "person_id": [1, 1, 1, 2, 1, "x"],
            "measurement_concept_id": [50, 51, 50, 52, 53, 50],
            "visit_occurrence_id": [10, 10, 10, 20, 99, 10],  # visit 99 has no diagnosis
        }
    )
    truth = visit_objects(t, links="true")
    plain = {k: v.drop(columns=[LINK_COLUMN], errors="ignore") for k, v in t.items()}
    vo = visit_objects(plain, links="visit")
    vocab = ObjectVocab.fit(vo)
    g, cuts = pad_visit_graphs(vo, vocab, truth=truth)
    n_rx = vocab.sizes[1]
    assert list(g["visit_occurrence_ids"]) == [10, 11, 20]
    assert g["dx_codes"][0].tolist() == [vocab.dx[100], vocab.dx[200]]
    assert g["tx_codes"][0].tolist() == [vocab.drug[7], vocab.drug[8], vocab.procedure[5] + n_rx]
    assert treatment_index(vocab, "procedure", np.array([5]))[0] == vocab.procedure[5] + n_rx
    # visit 10: A-7, B-8, B-5 are the true links; visit 20's drug 9 has none
    assert g["true_links"][0].int().tolist() == [[1, 0, 0], [0, 1, 1]]
    assert g["true_links"][2].sum() == 0 and g["tx_mask"][2].sum() == 1
    g, cuts = pad_visit_graphs(vo, vocab, person_ids=[2, 1], max_dx=1, max_tx=2)
    assert list(g["visit_occurrence_ids"]) == [20, 10, 11]
    assert cuts == {"dx_cut": 1, "tx_cut": 1, "lab_cut": 0}
    assert g["dx_codes"].shape == (3, 1) and g["tx_codes"].shape == (3, 2)
    # lab nodes: the distinct measurement concepts of each visit with a diagnosis
    c = vo.report.counts
    assert c["labs_in_visits_without_diagnosis"] == 1 and c["bad_id_measurement"] == 1
    assert g["lab_codes"].tolist() == [[vocab.lab[52], 0], [vocab.lab[50], vocab.lab[51]], [0, 0]]
    g, cuts = pad_visit_graphs(vo, vocab, max_lab=1)
    assert cuts["lab_cut"] == 1 and g["lab_mask"].sum() == 2


def dated_tables() -> dict[str, pd.DataFrame]:
    """tiny_tables with dates on every row: visit 10 on 2020-01-01, 11 on 2020-02-01."""
    t = tiny_tables()
    t["drug_exposure"]["drug_exposure_start_date"] = pd.to_datetime(
        ["2020-01-01", "2020-01-01", "2020-02-01", "2020-01-05"]
    )
    t["procedure_occurrence"]["procedure_date"] = pd.to_datetime(["2020-01-01"])
    return t


def test_before_prediction_time_cuts_rows_at_or_after():
    t = dated_tables()
    times = pd.DataFrame(
        {"subject_id": [1], "prediction_time": pd.to_datetime(["2020-02-01 00:00"])}
    )
    cut, dropped = before_prediction_time(t, times)
    # person 1's visit 11 (2020-02-01) is at t*: gone; person 2 has no prediction time
    assert cut["condition_occurrence"]["condition_occurrence_id"].tolist() == [1, 2]
    assert dropped["condition_occurrence_at_or_after"] == 1
    assert dropped["condition_occurrence_no_prediction_time"] == 1
    assert dropped["drug_exposure_at_or_after"] == 1
    assert dropped["drug_exposure_no_prediction_time"] == 1
    vo = visit_objects(cut, links="true")
    assert vo.nested() == [[[(100, [7], []), (200, [8], [5])]]]
    # a drug before t* linked to a condition after it: counted as a dangling link
    times["prediction_time"] = pd.to_datetime(["2020-01-15"])
    t["drug_exposure"].loc[0, "drug_exposure_start_date"] = pd.Timestamp("2020-01-10")
    t["drug_exposure"].loc[0, LINK_COLUMN] = 3  # condition row 3 is dated 2020-02-01
    cut, _ = before_prediction_time(t, times)
    assert visit_objects(cut, links="true").report.counts["dangling_link_drug"] == 1
    with pytest.raises(ValueError, match="prediction_time"):
        before_prediction_time(t, times.rename(columns={"prediction_time": "t"}))
    with pytest.raises(ValueError, match="several"):
        before_prediction_time(t, pd.concat([times, times]))


def test_link_agreement_counts_shared_spurious_and_same_objects():
    t = tiny_tables()
    truth = visit_objects(t, links="true")
    plain = {k: v.drop(columns=[LINK_COLUMN], errors="ignore") for k, v in t.items()}
    approx = visit_objects(plain, links="visit")
    agree = link_agreement(truth, approx)
    # truth: A-7, B-8, A-7 (visit 11) drugs, B-5 procedure; visit, B-7, B-8,
    # A-7 (visit 11), C-9 drugs and A-5, B-5 procedures
    assert agree.loc["drug", ["true_links", "approx_links", "shared"]].tolist() == [3, 6, 3]
    assert agree.loc["procedure", ["true_links", "approx_links", "shared"]].tolist() == [1, 2, 1]
    assert agree.loc["all", "precision"] == pytest.approx(4 / 8)
    assert agree.loc["all", "recall"] == 1.0
    # same sets: only A at visit 11 (C gets the unlinked drug 9; A, B at visit 10 differ)
    assert agree.loc["all", "objects"] == 4 and agree.loc["all", "objects_same"] == 1
    same = link_agreement(truth, truth)
    assert (same["precision"] == 1).all() and (same["share_same"] == 1).all()


def test_take_persons_and_graph_persons(cohort):
    vo = visit_objects(cohort.tables, links="true")
    vocab = ObjectVocab.fit(vo)
    ids = vo.person_ids()[:6]
    batch, _ = pad_visit_objects(vo, vocab, ids)
    sub = take_persons(batch, [4, 1])
    V = int(batch["visit_mask"][[4, 1]].sum(1).max())
    assert sub["dx_codes"].shape[:2] == (2, V)
    assert sub["person_ids"].tolist() == [ids[4], ids[1]]
    alone, _ = pad_visit_objects(vo, vocab, [ids[4], ids[1]])
    for k in ("dx_codes", "rx_codes", "pr_codes", "visit_mask"):
        # the same values; the sub-batch keeps the wider object axes of the six persons
        head = sub[k][tuple(slice(0, n) for n in alone[k].shape)]
        assert torch.equal(head, alone[k]) and sub[k].sum() == alone[k].sum()
    graphs, _ = pad_visit_graphs(vo, vocab, ids)
    part = take_graph_persons(graphs, [ids[3], ids[0]])
    first = part["person_ids"][np.r_[True, part["person_ids"][1:] != part["person_ids"][:-1]]]
    assert first.tolist() == [ids[3], ids[0]]  # persons in the order asked, contiguous
    mine = graphs["person_ids"] == ids[3]
    assert torch.equal(part["dx_codes"][: mine.sum()], graphs["dx_codes"][mine])
    with pytest.raises(ValueError, match="without a visit graph"):
        take_graph_persons(graphs, [ids[0], -5])
    with pytest.raises(ValueError, match="no rows"):
        take_persons(batch, [])


def test_trim_graphs_cuts_only_padding(cohort):
    vo_true = visit_objects(cohort.tables, links="true")
    vo = visit_objects(cohort.omop_tables(), links="visit")
    vocab = ObjectVocab.fit(vo)
    graphs, _ = pad_visit_graphs(vo, vocab, truth=vo_true)
    rows = np.array([7, 2, 30, 11])
    cut = trim_graphs(graphs, rows)
    for kind in ("dx", "tx", "lab"):
        mask = graphs[f"{kind}_mask"][rows]
        width = int(mask.sum(1).max())
        assert cut[f"{kind}_codes"].shape == (4, width) < graphs[f"{kind}_codes"].shape
        # every real node kept, in place: the rest of each row was padding
        assert torch.equal(cut[f"{kind}_codes"], graphs[f"{kind}_codes"][rows][:, :width])
        assert int(cut[f"{kind}_mask"].sum()) == int(mask.sum())
    D, T = cut["dx_codes"].shape[1], cut["tx_codes"].shape[1]
    assert torch.equal(cut["true_links"], graphs["true_links"][rows][:, :D, :T])
    assert int(cut["true_links"].sum()) == int(graphs["true_links"][rows].sum())
    assert cut["person_ids"].tolist() == graphs["person_ids"][rows].tolist()
    whole = trim_graphs(graphs)  # every row: nothing to cut past the widest visit
    assert all(torch.equal(whole[k], graphs[k]) for k in ("dx_codes", "tx_codes", "lab_codes"))
    with pytest.raises(ValueError, match="no rows"):
        trim_graphs(graphs, [])
    holes = dict(graphs, dx_mask=graphs["dx_mask"].clone())
    r = int(torch.nonzero(graphs["dx_mask"].sum(1) >= 2)[0])  # a visit with 2 diagnoses
    holes["dx_mask"][r, 0] = False  # padding before a real node
    with pytest.raises(ValueError, match="real nodes come first"):
        trim_graphs(holes, [r])
