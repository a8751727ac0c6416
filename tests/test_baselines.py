"""Non-sequence baselines: features line up with the task, slopes equal numpy's, Cox curves,
and the L1 logistic regression equals scikit-learn's on the same features."""

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
    horizon_labels,
    lasso_logistic,
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


# -- the L1 logistic regression of the PatientLevelPrediction design ------------------------
@pytest.fixture(scope="module")
def lasso(task):
    return lasso_logistic(task, Cs=(0.03, 0.3), seed=0)


def test_lasso_labels_leave_out_the_censored_before_the_horizon(task, lasso):
    """Label 1: the outcome within the horizon; 0: followed to the horizon without it;
    censored earlier without it: no label, left out of fitting, and counted."""
    frame = pd.DataFrame({"duration": [10.0, 10.0, 100.0, 30.0], "event": [1, 0, 0, 0]})
    label, known = horizon_labels(frame, horizon=100.0)
    assert label.tolist() == [1, 0, 0, 0] and known.tolist() == [True, False, True, False]
    train = task.frame("train")
    followed = train["duration"].to_numpy() >= task.cuts[-1] - 1e-9
    censored_early = (train["event"].to_numpy() == 0) & ~followed
    assert censored_early.sum() > 20  # the test has people to leave out
    assert lasso.n_unlabelled == censored_early.sum()
    assert lasso.n_train + lasso.n_unlabelled == len(train)


def test_horizon_labels_read_a_shorter_horizon_than_the_tasks(task):
    """An outcome after the horizon is none within it (label 0, known); one at the horizon
    counts. At the task's own horizon every task event is a label 1, as before."""
    frame = pd.DataFrame({"duration": [50.0, 100.0, 300.0, 300.0, 80.0], "event": [1, 1, 1, 0, 0]})
    label, known = horizon_labels(frame, horizon=100.0)
    assert label.tolist() == [1, 1, 0, 0, 0]
    assert known.tolist() == [True, True, True, True, False]
    train = task.frame("train")
    label, known = horizon_labels(train, task.cuts[-1])
    assert (label == train["event"].to_numpy()).all() and known[label == 1].all()
    short = task.cuts[-1] / 3
    label, _ = horizon_labels(train, short)
    late = (train["event"].to_numpy() == 1) & (train["duration"].to_numpy() > short)
    assert late.sum() > 0 and label[late].sum() == 0


def test_lasso_equals_scikit_learn_on_the_same_features(task, lasso):
    """The same coefficients as scikit-learn's L1 logistic regression fitted by hand on the
    standardised bag of codes of the labelled training persons only (and not on all)."""
    from sklearn.linear_model import LogisticRegression

    x = bag_of_codes(task, "train")
    x = x.fillna(x.mean())  # an unknown age: the training mean
    x = x.loc[:, (x != 0).any()]  # min_share=0: every feature some training person has
    z = ((x - x.mean()) / x.std().replace(0.0, 1.0)).to_numpy()
    train = task.frame("train")
    y = train["event"].to_numpy()
    known = (y == 1) | (train["duration"].to_numpy() >= task.cuts[-1] - 1e-9)
    rng = np.random.RandomState(0)  # lasso_logistic's seed stream: one draw per C in turn
    for C in (0.03, 0.3):
        ref = LogisticRegression(
            l1_ratio=1.0, C=C, solver="liblinear", max_iter=1000, random_state=rng
        ).fit(z[known], y[known])
        if C == lasso.C:
            want = pd.Series(ref.coef_[0], index=x.columns)
            want = want[want != 0]
            assert set(lasso.coef.index) == set(want.index)
            np.testing.assert_allclose(lasso.coef[want.index], want, rtol=1e-9, atol=1e-12)
            everyone = LogisticRegression(
                l1_ratio=1.0, C=C, solver="liblinear", max_iter=1000, random_state=0
            ).fit(z, y)  # the censored-early persons taken as label 0: another model
            assert not np.allclose(everyone.coef_[0], ref.coef_[0], atol=1e-3)
    assert lasso.n_features == x.shape[1]
    grid = lasso.grid.set_index("C")
    assert list(grid.index) == [0.03, 0.3] and grid.loc[lasso.C, "non-zero"] == len(lasso.coef)
    assert grid.loc[lasso.C, "val AUROC"] == grid["val AUROC"].max()


def test_lasso_curve_reaches_p_at_the_horizon(task, lasso):
    """The curve follows the training Kaplan-Meier incidence and its risk at the horizon is
    the logistic probability p."""
    from lifelines import KaplanMeierFitter

    test, train = task.frame("test"), task.frame("train")
    assert lasso.surv.shape == (len(test), task.config.n_bins)
    np.testing.assert_allclose(1.0 - lasso.surv[:, -1], lasso.risk, rtol=1e-12)
    assert (np.diff(lasso.surv, axis=1) <= 1e-12).all()  # curves never rise
    km = KaplanMeierFitter().fit(train["duration"], train["event"])
    f = 1.0 - km.survival_function_at_times(task.cuts[1:]).to_numpy()
    np.testing.assert_allclose(1.0 - lasso.surv, lasso.risk[:, None] * f / f[-1], atol=1e-12)
    # the same seed gives the same model
    again = lasso_logistic(task, Cs=(0.03, 0.3), seed=0)
    np.testing.assert_array_equal(again.risk, lasso.risk)


def test_lasso_refuses_one_class_and_empty_grid(task):
    import dataclasses

    no_events = dataclasses.replace(task, labels=task.labels.assign(event=0))
    with pytest.raises(ValueError, match="both binary labels"):
        lasso_logistic(no_events)
    with pytest.raises(ValueError, match="Cs is empty"):
        lasso_logistic(task, Cs=())
