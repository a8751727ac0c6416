"""The shared survival task: one protocol for every modelling chapter."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from ehrseq.data.task import SPLITS, TaskConfig, prepare_survival_task


@pytest.fixture(scope="module")
def task():
    return prepare_survival_task(TaskConfig(n_patients=600, seed=3, n_bins=10))


def test_splits_are_disjoint_and_cover_the_labelled_patients(task):
    ids = [set(task.split[s]) for s in SPLITS]
    assert all(a.isdisjoint(b) for i, a in enumerate(ids) for b in ids[i + 1 :])
    assert set().union(*ids) == set(task.labels["subject_id"])
    assert len(task.split["train"]) > len(task.split["test"]) > len(task.split["val"]) * 0.5


def test_labels_bins_and_tensors_line_up(task):
    frame = task.frame("test")
    assert (frame["bin"] >= 0).all() and (frame["bin"] < task.config.n_bins).all()
    width = task.config.bin_days
    assert (frame["bin"] == np.minimum(frame["duration"] // width, task.config.n_bins - 1)).all()
    ds = task.dataset("test")
    assert len(ds) == len(frame)
    batch = next(iter(task.loader("test", 8)))
    b, length = batch["codes"].shape
    assert batch["attention_mask"].shape == (b, length) and batch["durations"].shape == (b,)
    hier = next(iter(task.loader("test", 8, hierarchical=True)))
    assert hier["codes"].dim() == 3


def test_history_ends_before_the_prediction_time(task):
    frame = task.sequences.frame
    pred = task.labels.set_index("subject_id")["prediction_time"]
    times = frame["time"].to_numpy()
    limit = pred.reindex(frame["person_id"]).to_numpy()
    assert (times < limit).all()


def test_oracle_is_consistent_and_a_ceiling(task):
    from ehrseq.metrics import concordance_index

    risk = task.oracle_risk("train")
    surv = task.oracle_survival("train")
    assert surv.shape == (len(risk), task.config.n_bins)
    np.testing.assert_allclose(1 - surv[:, -1], risk, rtol=1e-9, atol=1e-12)
    f = task.frame("train")
    assert concordance_index(f["duration"], risk, f["event"]) > 0.7


def test_bad_config_raises():
    with pytest.raises(ValueError, match="strategy"):
        TaskConfig(strategy="tree").validate()
    with pytest.raises(ValueError, match="too few"):
        TaskConfig(val_fraction=0.5, test_fraction=0.45).validate()
    with pytest.raises(ValueError, match="split"):
        prepare_survival_task(TaskConfig(n_patients=60)).frame("holdout")


def test_shared_task_config_per_profile(monkeypatch):
    from ehrseq.data.task import shared_task_config

    monkeypatch.setenv("EHRSEQ_PROFILE", "book")
    book = shared_task_config()
    assert book.n_test_patients >= book.n_patients // 2  # the test split is the large one
    assert shared_task_config("smoke").n_patients < book.n_patients
    assert shared_task_config("smoke", seed=1).seed == 1
    with pytest.raises(ValueError, match="unknown profile"):
        shared_task_config("huge")


def test_cached_cohort_and_read_back_give_the_same_task(tmp_path, monkeypatch):
    """The cohort and OMOP read-back kept under the artefact root equal a fresh run."""
    import pandas as pd

    monkeypatch.setenv("EHRSEQ_ARTIFACTS", str(tmp_path))
    cfg = TaskConfig(n_patients=300, seed=9, n_bins=5)
    fresh = prepare_survival_task(cfg, cache=False)
    first = prepare_survival_task(cfg)  # builds the cache
    assert len(list(tmp_path.glob("task-omop-*/*.parquet"))) == 3
    second = prepare_survival_task(cfg)  # reads it
    assert (next(tmp_path.glob("task-omop-*")) / "cohort" / "cohort.json").is_file()
    from ehrseq.data.task import _cohort_and_read_back

    synthetic = second.cohort.config
    cached, direct = (_cohort_and_read_back(synthetic, cache=c) for c in (True, False))
    for a, b in zip(cached[1:], direct[1:], strict=True):
        pd.testing.assert_frame_equal(a, b)  # dtypes, categories, index and all
    for name, table in direct[0].tables.items():  # the cohort itself, as generated
        pd.testing.assert_frame_equal(cached[0].tables[name], table)
    for name in ("persons", "baseline", "onsets", "concept_groups"):
        pd.testing.assert_frame_equal(
            getattr(cached[0].truth, name), getattr(direct[0].truth, name)
        )
    for outcome, hazard in direct[0].truth.hazard.items():
        np.testing.assert_array_equal(cached[0].truth.hazard[outcome], hazard)
    for term, path in direct[0].truth.terms.items():
        np.testing.assert_array_equal(cached[0].truth.terms[term], path)
    assert cached[0].truth.coefficients == direct[0].truth.coefficients
    assert len(list(tmp_path.glob("task-*/task.json"))) == 1  # the built task, kept
    for task in (first, second):  # second: loaded from that folder
        pd.testing.assert_frame_equal(task.labels, fresh.labels)
        pd.testing.assert_frame_equal(task.person, fresh.person)
        pd.testing.assert_frame_equal(task.sequences.frame, fresh.sequences.frame)
        assert task.sequences.strategy == fresh.sequences.strategy
        assert task.sequences.report == fresh.sequences.report
        assert task.vocab.to_dict() == fresh.vocab.to_dict()
        assert task.encoding.arrays.keys() == fresh.encoding.arrays.keys()
        for name, arr in fresh.encoding.arrays.items():
            np.testing.assert_array_equal(task.encoding.arrays[name], arr)
            assert task.encoding.arrays[name].dtype == arr.dtype
        np.testing.assert_array_equal(task.encoding.person_ids, fresh.encoding.person_ids)
        np.testing.assert_array_equal(task.encoding.offsets, fresh.encoding.offsets)
        assert task.encoding.report == fresh.encoding.report
        for name in ("bin_index", "event", "cuts"):
            np.testing.assert_array_equal(getattr(task, name), getattr(fresh, name))
            assert getattr(task, name).dtype == getattr(fresh, name).dtype
        assert task.split.keys() == fresh.split.keys()
        for split, ids in fresh.split.items():
            np.testing.assert_array_equal(task.split[split], ids)
        assert task.dropped == fresh.dropped
        np.testing.assert_array_equal(task.oracle_risk("test"), fresh.oracle_risk("test"))
    # another config is another task
    prepare_survival_task(dataclasses.replace(cfg, n_bins=6))
    assert len(list(tmp_path.glob("task-*/task.json"))) == 2


def test_task_from_labels_is_steps_4_to_6(task):
    """Steps 4-6 on the task's own frames and labels give the same task, without the cohort."""
    import pandas as pd

    from ehrseq.data.task import _cohort_and_read_back, task_from_labels

    _, events, person, _ = _cohort_and_read_back(task.cohort.config, cache=True)
    again = task_from_labels(events, person, task.labels, task.config)
    assert again.cohort is None and again.dropped == {"no_history_before_prediction_time": 0}
    for split in SPLITS:
        np.testing.assert_array_equal(again.split[split], task.split[split])
    assert again.vocab.itos == task.vocab.itos
    np.testing.assert_array_equal(again.bin_index, task.bin_index)
    np.testing.assert_array_equal(again.encoding.arrays["codes"], task.encoding.arrays["codes"])
    pd.testing.assert_frame_equal(again.person, task.person)
    with pytest.raises(ValueError, match="no synthetic cohort"):
        again.oracle_risk("test")

    early = task.labels.copy()
    early.loc[0, "prediction_time"] = pd.Timestamp("1900-01-01")  # before any record
    dropped = task_from_labels(events, person, early, task.config).dropped
    assert dropped == {"no_history_before_prediction_time": 1}
    extra = task.labels["subject_id"].to_numpy()[:5]
    only = task_from_labels(events, person, task.labels, task.config, test_only=extra)
    assert np.isin(extra, only.split["test"]).all()
    with pytest.raises(ValueError, match="lack the columns"):
        task_from_labels(events, person, task.labels.drop(columns="event"), task.config)


def test_summary_reads_as_a_reader_reads_it(task):
    table = task.summary()
    assert table.index.tolist() == ["train", "val", "test"]
    rates = table["event rate"]
    assert (rates == rates.round(4)).all()  # four decimals, not pandas' six
    medians = table["median tokens"]
    whole = all(float(m).is_integer() for m in medians)
    assert not whole or pd.api.types.is_integer_dtype(medians)  # 64, not 64.0
