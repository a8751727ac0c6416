"""ehrseq.medrep_variants and the binary labels of ehrseq.medrep.sites: variants, the
Med-BERT pretraining heads, patient states, probes, binary intervals; outcome windows,
per-site value bins and prolonged stays."""

import numpy as np
import pandas as pd
import pytest
import torch

from ehrseq.data.synthetic import SyntheticConfig
from ehrseq.data.task import TaskConfig
from ehrseq.data.vocab import Vocab
from ehrseq.losses import hazard_nll
from ehrseq.medrep.frozen import with_frozen_codes
from ehrseq.medrep.sites import (
    internal_task,
    outcome_within,
    prolonged_stay,
    site_vocab,
    two_site_data,
)
from ehrseq.medrep_variants import (
    binary_difference,
    binary_head_model,
    binary_interval,
    binary_loss,
    finetune_binary,
    medbert_pretrain,
    patient_states,
    predict_binary,
    probe_scores,
    variant_config,
)
from ehrseq.metrics import auprc, auroc
from ehrseq.models import BehrtEncoder, SurvivalModel
from ehrseq.models.survival_head import BinHazardHead
from ehrseq.runs import predict_survival
from ehrseq.train import TrainConfig

T0 = pd.Timestamp("2020-01-01")


def _events(rows):
    frame = pd.DataFrame(rows, columns=["person_id", "time", "concept_id", "domain"])
    return frame.assign(time=pd.to_datetime(frame["time"]))


def _obs(ends):
    return pd.DataFrame(
        {
            "person_id": list(ends),
            "observation_period_start_date": [pd.Timestamp("2015-01-01")] * len(ends),
            "observation_period_end_date": pd.to_datetime(list(ends.values())),
        }
    )


def test_outcome_within_by_hand():
    events = _events(
        [
            (1, "2020-06-01", 9201, "visit"),  # inside the year
            (
                2,
                "2019-06-01",
                9201,
                "visit",
            ),  # before t*: not a label, still a negative
            (3, "2021-03-01", 9201, "visit"),  # after the window
            (4, "2020-05-01", 0, "death"),  # died inside the window, no stay
            (5, "2020-12-31", 9201, "visit"),  # exactly at t* + 365 days: counts
        ]
    )
    obs = _obs(
        {
            1: "2022-01-01",
            2: "2022-01-01",
            3: "2022-01-01",
            4: "2020-05-01",
            5: "2020-12-31",
        }
        | {6: "2020-03-01"}  # followed for two months only: unknown
    )
    index = pd.DataFrame({"subject_id": [1, 2, 3, 4, 5, 6], "prediction_time": [T0] * 6})
    stay = outcome_within(events, obs, index, concept_ids=[9201])
    assert dict(zip(stay["subject_id"], stay["label"])) == {1: 1, 2: 0, 3: 0, 5: 1}
    death = outcome_within(events, obs, index, death=True)
    assert dict(zip(death["subject_id"], death["label"])) == {
        1: 0,
        2: 0,
        3: 0,
        4: 1,
        5: 0,
    }
    with pytest.raises(ValueError, match="either concept_ids or death"):
        outcome_within(events, obs, index)
    with pytest.raises(ValueError, match="days"):
        outcome_within(events, obs, index, death=True, days=0)
    with pytest.raises(ValueError, match="prediction_time"):
        outcome_within(events, obs, index[["subject_id"]], death=True)


def test_site_vocab_changes_only_the_cuts():
    vocab = Vocab(["measurement:31", "measurement:31:q3"], [5, 4], {31: np.arange(9.0)})
    other = site_vocab(vocab, {31: np.arange(9.0) * 10, 99: np.arange(9.0)})
    assert other.itos == vocab.itos and (other.value_cuts[31] == np.arange(9.0) * 10).all()
    assert vocab.token_of("measurement", 31, 35.0) == "measurement:31:q9"
    assert other.token_of("measurement", 31, 35.0) == "measurement:31:q4"  # 4 cuts below
    with pytest.raises(ValueError, match="cut points"):
        site_vocab(vocab, {31: np.arange(5.0)})


def test_prolonged_stay_counts_ended_long_stays():
    visits = pd.DataFrame(
        {
            "person_id": [1, 2, 3, 3],
            "visit_concept_id": [9201, 9201, 9202, 9201],
            "visit_start_date": pd.to_datetime(
                ["2019-01-01", "2019-01-01", "2019-01-01", "2019-12-28"]
            ),
            "visit_end_date": pd.to_datetime(
                ["2019-01-10", "2019-01-05", "2019-01-20", "2020-01-09"]
            ),
        }
    )
    index = pd.DataFrame({"subject_id": [1, 2, 3], "prediction_time": [T0] * 3})
    # 1: 9 days, inpatient; 2: 4 days; 3: outpatient, and a long stay ending after t*
    assert prolonged_stay(visits, index)["label"].tolist() == [1, 0, 0]
    with pytest.raises(ValueError, match="lacks"):
        prolonged_stay(visits.drop(columns="visit_end_date"), index)


def test_binary_difference_is_paired_and_signed():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    good = [y + rng.normal(0, 0.5, 300) for _ in range(2)]
    noise = [rng.normal(size=300) for _ in range(2)]
    one = binary_interval(y, good, "AUPRC", n_boot=50)
    assert one["estimate"] == pytest.approx(np.mean([auprc(y, s) for s in good]))
    assert one["lower"] <= one["estimate"] <= one["upper"]
    row = binary_difference(y, "good", good, "noise", noise, "AUROC", n_boot=50)
    expect = np.mean([auroc(y, s) for s in good]) - np.mean([auroc(y, s) for s in noise])
    assert row["difference"] == pytest.approx(expect)
    assert row["verdict"] == "good is better"
    same = binary_difference(y, "a", good, "b", good, "AUROC", n_boot=50)
    assert same["difference"] == 0.0 and same["verdict"] == "not resolved"
    with pytest.raises(ValueError, match="unknown binary metric"):
        binary_interval(y, good, "F1")
    with pytest.raises(ValueError, match="as long as labels"):
        binary_difference(y, "a", good, "b", [noise[0][:10]])


def test_probe_scores_recovers_a_linear_rule():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(400, 3))
    y = (z[:, 0] > 0).astype(int)
    (p,) = probe_scores(z[:200], y[:200], z[200:])
    assert auroc(y[200:], p) > 0.95
    with pytest.raises(ValueError, match="both classes"):
        probe_scores(z, np.zeros(400, int), z)


@pytest.fixture(scope="module")
def small_task():
    a, _ = two_site_data(SyntheticConfig(n_patients=200, seed=3), 50, cache=False)
    return a, internal_task(a, TaskConfig(max_len=24, min_frequency=1, seed=3))


def test_variants_states_and_medbert_pretraining(small_task):
    site, task = small_task
    sizes = dict(d_model=8, n_layers=1, n_heads=2, d_ff=16, max_len=24)
    configs = {v: variant_config(v, task.vocab, **sizes) for v in ("BEHRT", "CDM-BERT-like")}
    assert not configs["BEHRT"].use_domain and configs["CDM-BERT-like"].use_domain
    med = variant_config("Med-BERT-like", task.vocab, **sizes)
    assert not med.use_age and med.time_embedding == "none"
    with pytest.raises(ValueError, match="unknown variant"):
        variant_config("GPT", task.vocab)
    torch.manual_seed(0)
    table = np.random.default_rng(0).normal(size=(len(task.vocab), 6)).astype(np.float32)
    encoder = with_frozen_codes(BehrtEncoder(med), table)
    index = task.labels[["subject_id", "prediction_time"]]
    plos = prolonged_stay(site.cohort.tables["visit_occurrence"], index)
    plos = plos.set_index("subject_id")["label"]
    table_before = encoder.embeddings.code.table.clone()
    history = medbert_pretrain(encoder, task, plos, epochs=2, batch_size=32, seed=0)
    assert history["mlm_loss"].iloc[-1] < history["mlm_loss"].iloc[0]  # it learns
    assert torch.equal(encoder.embeddings.code.table, table_before)  # still frozen
    with pytest.raises(ValueError, match="lack a prolonged-stay"):
        medbert_pretrain(encoder, task, plos.iloc[:3], epochs=1)
    model = SurvivalModel(encoder, BinHazardHead(8, task.config.n_bins))
    states = patient_states(model, task, "test")
    assert states.shape == (len(task.frame("test")), 8)
    # the head applied to the states is the model's own prediction, patient by patient
    with torch.no_grad():
        logits = model.head.net(torch.as_tensor(states))
    surv = torch.cumprod(1 - torch.sigmoid(logits), 1).numpy()
    assert np.allclose(surv, predict_survival(model, task, hierarchical=False), atol=1e-5)
    with pytest.raises(ValueError, match="head.net"):
        patient_states(torch.nn.Linear(2, 2), task)


def test_binary_loss_is_the_one_bin_hazard_nll_over_labelled_patients():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 1, generator=gen) * 3  # (B, 1)
    labels = torch.tensor([1.0, 0.0, float("nan"), 1.0, 0.0, float("nan"), 0.0])
    known = ~torch.isnan(labels)
    y = labels[known].long()
    one_bin = hazard_nll(logits[known], torch.zeros_like(y), y)  # duration 0, event = y
    by_hand = np.mean(
        [
            -np.log(1 / (1 + np.exp(-x))) if t == 1 else -np.log(1 - 1 / (1 + np.exp(-x)))
            for x, t in zip(logits[known, 0].double().numpy(), y.numpy())
        ]
    )
    got = binary_loss(logits, labels)
    assert torch.allclose(got, one_bin, atol=1e-6)
    assert float(got) == pytest.approx(by_hand, rel=1e-5)
    none = binary_loss(logits.requires_grad_(), torch.full((7,), float("nan")))
    assert float(none.detach()) == 0.0 and none.requires_grad  # a batch without labels
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        binary_loss(logits, labels.nan_to_num(2.0))
    with pytest.raises(ValueError, match="labels"):
        binary_loss(logits, labels[:3])


def test_finetune_binary_trains_a_copy_with_a_binary_head(small_task):
    _, task = small_task
    cfg = variant_config("CDM-BERT-like", task.vocab, d_model=8, n_layers=1, n_heads=2, d_ff=16)
    torch.manual_seed(0)
    table = np.random.default_rng(0).normal(size=(len(task.vocab), 6)).astype(np.float32)
    model = SurvivalModel(
        with_frozen_codes(BehrtEncoder(cfg), table), BinHazardHead(8, task.config.n_bins)
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frame = pd.concat([task.frame("train"), task.frame("val")])
    labels = frame.set_index("subject_id")["event"].astype(int).iloc[:-5]  # 5 without
    # an untouched head predicts the training prevalence for everyone
    base = float(labels.reindex(task.split["train"]).dropna().mean())
    start = binary_head_model(model, base)
    with torch.no_grad():
        start.head.net[-1].weight.zero_()
    assert np.allclose(predict_binary(start, task, "test"), base, atol=1e-6)
    config = TrainConfig(epochs=3, lr=1e-2, patience=5, seed=0, device="cpu")
    tuned, history = finetune_binary(model, task, labels, config, batch_size=32)
    assert len(history) == 3 and np.isfinite(history["train_loss"]).all()
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]  # it learns
    for k, v in model.state_dict().items():  # the survival model is not changed
        assert torch.equal(v, before[k]), k
    frozen = tuned.encoder.embeddings.code.table
    assert torch.equal(frozen, model.encoder.embeddings.code.table)  # still frozen
    # the probability is the head's sigmoid on the state it reads, patient by patient
    p = predict_binary(tuned, task, "test")
    with torch.no_grad():
        logit = tuned.head.net(torch.as_tensor(patient_states(tuned, task, "test")))
    assert np.allclose(p, torch.sigmoid(logit[:, 0]).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="both classes"):
        finetune_binary(model, task, labels * 0, config)
    with pytest.raises(ValueError, match="0 or 1"):
        finetune_binary(model, task, labels + 1, config)
    with pytest.raises(ValueError, match="base_rate"):
        binary_head_model(model, 0.0)
    with pytest.raises(ValueError, match="not 1"):
        predict_binary(model, task, "test")
