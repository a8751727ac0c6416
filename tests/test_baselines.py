"""Non-sequence baselines: features line up with the task, slopes equal numpy's, Cox curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehrseq.baselines import (
    FEATURE_BLOCKS,
    CoxBaseline,
    _last3_slopes,
    bag_of_codes,
    engineered_features,
)
from ehrseq.data.task import TaskConfig, prepare_survival_task


@pytest.fixture(scope="module")
def task():
    return prepare_survival_task(TaskConfig(n_patients=700, n_test_patients=400, seed=2))


def test_extra_test_patients_only_join_the_test_split(task):
    n = task.config.n_patients
    assert (task.split["train"] <= n).all() and (task.split["val"] <= n).all()
    extra = task.split["test"] > n
    assert extra.sum() > 250  # most of the 400 extra people are labelled
    assert (task.split["test"] <= n).sum() > 50  # the fraction of the first n stays too
    labelled = task.labels["subject_id"].to_numpy()
    assert set(labelled[labelled > n]) == set(task.split["test"][extra])


def test_last_three_slopes_equal_numpy_polyfit():
    rng = np.random.default_rng(0)
    rows = []
    for pid in range(40):
        for cid in (1, 2):
            k = rng.integers(1, 6)
            days = np.sort(rng.choice(700, size=k, replace=False))[::-1]  # days before index
            rows += [(pid, cid, float(d), rng.normal()) for d in days]
    labs = pd.DataFrame(rows, columns=["person_id", "concept_id", "days_before", "z"])
    got = _last3_slopes(labs)
    for (pid, cid), d in labs.groupby(["person_id", "concept_id"]):
        t, z = -d["days_before"].to_numpy()[-3:] / 365.25, d["z"].to_numpy()[-3:]
        want = np.polyfit(t, z, 1)[0] if len(t) >= 2 else 0.0
        assert got[(pid, cid)] == pytest.approx(want, abs=1e-9)


def test_features_line_up_with_the_task_frame(task):
    frame = task.frame("val")
    bag = bag_of_codes(task, "val")
    x = engineered_features(task, "val")
    assert len(bag) == len(x) == len(frame)
    assert (x.index.to_numpy() == frame["subject_id"].to_numpy()).all()
    assert np.isfinite(x.to_numpy()).all()
    # "ever CKD" is exactly: some CKD condition token before the prediction time
    groups = task.cohort.truth.concept_groups.set_index("concept_id")["group"]
    seq = task.sequences.frame
    ckd = seq.loc[
        (seq["domain"].astype(str) == "condition")
        & (groups.reindex(seq["concept_id"]).to_numpy() == "chronic_kidney_disease")
    ]
    want = frame["subject_id"].isin(ckd["person_id"]).to_numpy(float)
    assert (x["ever_condition:chronic_kidney_disease"].to_numpy() == want).all()
    assert want.sum() > 0
    # the bag's code columns count the encoded tokens: log1p(count) summed back to the lengths
    n_tokens = np.expm1(bag.filter(like="code_").to_numpy()).sum(axis=1)
    enc = task.encoding.select(task.split["val"])
    special = np.isin(enc.arrays["codes"], range(5))
    per = np.add.reduceat(~special, enc.offsets[:-1])
    np.testing.assert_allclose(n_tokens, per, atol=1e-6)


def test_blocks_add_columns_and_unknown_blocks_raise(task):
    sizes = [engineered_features(task, "val", FEATURE_BLOCKS[:k]).shape[1] for k in range(1, 5)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    with pytest.raises(ValueError, match="unknown feature blocks"):
        engineered_features(task, "val", ["counts", "vibes"])


def test_cox_baseline_curves_are_survival_curves_with_signal(task):
    from ehrseq.metrics import concordance_index

    tr, te = task.frame("train"), task.frame("test")
    cox = CoxBaseline().fit(engineered_features(task, "train"), tr["duration"], tr["event"])
    surv = cox.predict_survival(engineered_features(task, "test"), task.cuts[1:])
    assert surv.shape == (len(te), task.config.n_bins)
    assert (np.diff(surv, axis=1) <= 1e-12).all() and surv.min() >= 0 and surv.max() <= 1
    c = concordance_index(te["duration"], 1 - surv[:, -1], te["event"])
    assert c > 0.6


def test_token_count_features(task):
    import torch

    from ehrseq.baselines import token_count_features
    from ehrseq.data.vocab import SPECIAL_TOKENS

    data = token_count_features(task)
    for split, (x, d, e) in data.items():
        n = len(task.frame(split))
        assert x.shape == (n, len(task.vocab) + 1) and d.shape == e.shape == (n,)
        assert torch.equal(d, torch.as_tensor(task.frame(split)["bin"].to_numpy()))
        assert (x[:, : len(SPECIAL_TOKENS)] == 0).all()  # special tokens are no evidence
        assert (x[:, :-1] >= 0).all() and torch.isfinite(x).all()
    age = data["train"][0][:, -1]
    assert abs(float(age.mean())) < 1e-4 and abs(float(age.std()) - 1) < 1e-4
    assert set(token_count_features(task, ["test"])) == {"test"}
    torch.testing.assert_close(token_count_features(task, ["test"])["test"][0], data["test"][0])


def test_bag_of_codes_reads_the_task_s_person_table(task):
    """Age and sex come from ``task.person``: a task without the synthetic cohort (a reader's
    own data) gives the same bag; the engineered features need the cohort's code lists."""
    import dataclasses

    own = dataclasses.replace(task, cohort=None)
    pd.testing.assert_frame_equal(bag_of_codes(own, "test"), bag_of_codes(task, "test"))
    person = task.cohort.tables["person"].set_index("person_id")
    frame = task.frame("test")
    male = person.loc[frame["subject_id"], "gender_concept_id"].to_numpy() == 8507
    np.testing.assert_array_equal(bag_of_codes(own, "test")["male"].to_numpy(), male)
    with pytest.raises(ValueError, match="synthetic cohort"):
        engineered_features(own, "test")
