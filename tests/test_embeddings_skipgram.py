"""Temporal skip-gram: pairs equal a loop, closed-form gradients equal autograd, the fast
trainer equals the ``torch.optim`` one, and the context-only softmax collapses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ehrseq.data.synthetic import SyntheticConfig, generate_cohort
from ehrseq.embeddings import truth
from ehrseq.embeddings.corpus import CodeCorpus
from ehrseq.embeddings.skipgram import (
    SkipGramConfig,
    _noise_table,
    context_softmax_collapse,
    context_softmax_loss,
    context_windows,
    negative_distribution,
    pair_positions,
    pair_positions_loop,
    sgns_grads,
    sgns_loss,
    skipgram_pairs,
    train_skipgram,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cohort():
    return generate_cohort(SyntheticConfig(n_patients=300, seed=3))


@pytest.fixture(scope="module")
def corpus(cohort):
    return CodeCorpus.from_omop_tables(cohort.tables, vocabulary=cohort.vocabulary)


def _random_sequence(seed: int, n_persons: int = 7):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 12, n_persons)  # includes one-event patients
    person = np.repeat(rng.permutation(1000)[:n_persons], lengths)
    days = np.concatenate([np.sort(rng.integers(0, 60, n)).astype(float) for n in lengths])
    return person, days


def _sorted_triples(c, o, w):
    order = np.lexsort((o, c))
    return c[order], o[order], w[order]


@pytest.mark.parametrize("tau", [math.inf, 7.0])
@pytest.mark.parametrize("window", [1, 3, 20])
@pytest.mark.parametrize("seed", [0, 1])
def test_vectorised_pairs_equal_the_loop(seed, window, tau):
    person, days = _random_sequence(seed)
    fast = _sorted_triples(*pair_positions(person, days, window, tau))
    slow = _sorted_triples(*pair_positions_loop(person, days, window, tau))
    np.testing.assert_array_equal(fast[0], slow[0])
    np.testing.assert_array_equal(fast[1], slow[1])
    np.testing.assert_allclose(fast[2], slow[2], rtol=1e-6)
    if math.isinf(tau):
        assert (fast[2] == 1).all()


def test_vectorised_pairs_equal_the_loop_on_a_cohort(corpus):
    keep = np.isin(corpus.person, np.unique(corpus.person)[:40])
    person, days = corpus.person[keep], corpus.days[keep]
    fast = _sorted_triples(*pair_positions(person, days, 4, 30.0))
    slow = _sorted_triples(*pair_positions_loop(person, days, 4, 30.0))
    for a, b in zip(fast, slow):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_time_weight_and_min_weight():
    person = np.array([1, 1, 1, 2, 2])
    days = np.array([0.0, 10.0, 40.0, 0.0, 0.0])
    c, o, w = pair_positions(person, days, window=2, tau=10.0)
    got = {(int(a), int(b)): float(x) for a, b, x in zip(c, o, w)}
    assert got[(0, 1)] == pytest.approx(math.exp(-1))
    assert got[(2, 0)] == pytest.approx(math.exp(-4))
    assert got[(3, 4)] == 1.0 and (2, 3) not in got  # no pair across patients
    c, o, w = pair_positions(person, days, window=2, tau=10.0, min_weight=0.1)
    assert (0, 2) not in set(zip(c.tolist(), o.tolist()))
    assert len(c) == 4  # (1, 2) weighs exp(-3) < 0.1 too
    with pytest.raises(ValueError, match="window"):
        pair_positions(person, days, window=0)
    with pytest.raises(ValueError, match="tau"):
        pair_positions(person, days, window=1, tau=0.0)


def test_corpus_maps_unknown_and_rare_codes_and_reports_them():
    person = np.array([1, 1, 1, 1, 2, 2, 2])
    days = np.array([3.0, 1.0, 2.0, 2.0, 5.0, 5.0, 6.0])
    codes = np.array([10, 11, 99, 0, 10, 12, 10])
    corpus = CodeCorpus.from_arrays(person, days, codes, vocabulary=[10, 11, 12], min_count=1)
    assert corpus.n_unknown == 2  # 99 outside the vocabulary, 0 = no matching concept
    assert corpus.unknown_codes == {0: 1, 99: 1}
    assert corpus.concept_ids[0] == 0 and corpus.concept_ids[1] == 10  # most frequent first
    assert (np.diff(corpus.days[corpus.person == 1]) >= 0).all()
    assert "2 events" in corpus.report()
    rare = CodeCorpus.from_arrays(person, days, codes, vocabulary=[10, 11, 12], min_count=2)
    assert rare.n_rare == 2 and rare.n_unknown == 2
    assert rare.concept_ids.tolist() == [0, 10]
    pairs = skipgram_pairs(corpus, window=1)
    assert pairs.n_dropped_unknown > 0 and (pairs.center != 0).all()


def test_corpus_from_events_matches_from_tables(cohort, corpus):
    import pandas as pd

    rows = []
    for table, col, date in (
        ("condition_occurrence", "condition_concept_id", "condition_start_date"),
        ("drug_exposure", "drug_concept_id", "drug_exposure_start_date"),
    ):
        df = cohort.tables[table]
        rows.append(
            pd.DataFrame(
                {
                    "person_id": df["person_id"],
                    "time": pd.to_datetime(df[date]),
                    "concept_id": df[col],
                    "domain": "condition" if "condition" in table else "drug",
                }
            )
        )
    events = pd.concat(rows, ignore_index=True)
    a = CodeCorpus.from_events(events)
    sub = {k: cohort.tables[k] for k in ("condition_occurrence", "drug_exposure")}
    b = CodeCorpus.from_omop_tables(sub)
    np.testing.assert_array_equal(a.concept_ids[a.tokens], b.concept_ids[b.tokens])
    np.testing.assert_array_equal(a.days, b.days)


def test_persons_keeps_what_cutting_the_tables_keeps(cohort):
    """``persons=`` gives the corpus of the tables cut to those persons, same-day
    shuffle included (chapter 12 and its benchmarks draw their corpus patients so)."""
    ids = np.sort(cohort.tables["person"]["person_id"].to_numpy()[::3])
    cut = {
        name: table.loc[table["person_id"].isin(ids)]
        for name, table in cohort.tables.items()
        if "person_id" in table.columns
    }
    a = CodeCorpus.from_omop_tables(cut, vocabulary=cohort.vocabulary, seed=4)
    b = CodeCorpus.from_omop_tables(
        cohort.tables, vocabulary=cohort.vocabulary, seed=4, persons=ids
    )
    assert a.n_persons == b.n_persons == len(np.unique(a.person)) < 300
    np.testing.assert_array_equal(a.person, b.person)
    np.testing.assert_array_equal(a.concept_ids[a.tokens], b.concept_ids[b.tokens])
    np.testing.assert_array_equal(a.days, b.days)


@pytest.mark.parametrize("share", [1, 4])
def test_closed_form_gradients_equal_autograd(share):
    g = torch.Generator().manual_seed(0)
    b, k, d = 8, 3, 5
    nb = b // share
    u = torch.randn(b, d, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(b, d, generator=g, dtype=torch.float64, requires_grad=True)
    vn = torch.randn(nb, k, d, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.rand(b, generator=g, dtype=torch.float64)
    ref = sgns_loss(u, v, vn.repeat_interleave(share, dim=0), w) * b
    ref.backward()
    loss, gu, gv, gn = sgns_grads(u.detach(), v.detach(), vn.detach(), w)
    torch.testing.assert_close(loss, ref.detach())
    torch.testing.assert_close(gu, u.grad)
    torch.testing.assert_close(gv, v.grad)
    torch.testing.assert_close(gn, vn.grad)


@pytest.mark.parametrize("optimizer,lr,batch", [("sparse_adam", 0.01, 512), ("sgd", 0.02, 64)])
def test_fast_trainer_equals_torch_optim(corpus, optimizer, lr, batch):
    small = CodeCorpus.from_arrays(
        corpus.person[:3000], corpus.days[:3000], corpus.concept_ids[corpus.tokens[:3000]]
    )
    cfg = SkipGramConfig(
        dim=8, window=2, epochs=2, batch_size=batch, lr=lr, optimizer=optimizer, progress=False
    )
    fast = train_skipgram(small, cfg)
    ref = train_skipgram(small, SkipGramConfig(**{**vars(cfg), "autograd": True}))
    np.testing.assert_allclose(fast.embedding.vectors, ref.embedding.vectors, atol=2e-5)
    np.testing.assert_allclose(fast.losses, ref.losses, rtol=1e-4)


def test_training_is_seeded_and_learns(corpus):
    cfg = SkipGramConfig(dim=16, window=3, epochs=2, progress=False)
    a, b = train_skipgram(corpus, cfg), train_skipgram(corpus, cfg)
    np.testing.assert_array_equal(a.embedding.vectors, b.embedding.vectors)
    c = train_skipgram(corpus, SkipGramConfig(**{**vars(cfg), "seed": 1}))
    assert not np.allclose(a.embedding.vectors, c.embedding.vectors)
    assert a.losses[-1] < a.losses[0]
    assert a.n_pairs > 0 and a.words_per_second > 0 and "words/s" in a.report()
    assert len(a.embedding) == len(corpus.concept_ids) - 1


def test_negative_distribution_and_table():
    counts = np.array([50, 100, 1, 0, 16])
    p = negative_distribution(counts)
    assert p[0] == 0 and p[3] == 0 and p.sum() == pytest.approx(1)
    assert p[1] / p[4] == pytest.approx((100 / 16) ** 0.75)
    table = _noise_table(p).numpy()
    np.testing.assert_allclose(np.bincount(table, minlength=5) / len(table), p, atol=1e-6)
    with pytest.raises(ValueError):
        negative_distribution(np.array([5, 0]))


def test_config_is_validated():
    with pytest.raises(ValueError, match="negatives"):
        SkipGramConfig(negatives=0).validate()
    with pytest.raises(ValueError, match="optimizer"):
        SkipGramConfig(optimizer="adamw").validate()


def test_context_softmax_floor_is_reached_by_equal_scores():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(6, 4, generator=g)
    v = torch.randn(6, 5, 4, generator=g)
    mask = torch.ones(6, 5, dtype=torch.bool)
    mask[0, 3:] = False
    m = mask.sum(-1).double()
    floor = m * torch.log(m)
    assert (context_softmax_loss(u, v, mask).double() >= floor - 1e-6).all()
    same = torch.ones(6, 5, 4)
    torch.testing.assert_close(context_softmax_loss(u, same, mask).double(), floor)
    person = np.array([1, 1, 1, 2])
    idx, ok = context_windows(person, 2)
    assert ok.tolist()[0] == [False, False, True, True] and ok[3].sum() == 0
    assert idx[0, 3] == 2


def test_context_softmax_collapses_while_sgns_learns(cohort, corpus):
    demo = context_softmax_collapse(
        corpus, truth.disease_groups(cohort), window=5, dim=16, steps=120, max_centers=2000
    )
    assert demo.loss_constant == pytest.approx(demo.floor, abs=1e-3)
    assert demo.loss_trained - demo.floor < 1e-3 < demo.loss_init - demo.floor
    assert demo.loss_truth > demo.floor + 1.0  # the informative embedding scores worse
    assert demo.score_sd_trained < 0.01 * demo.score_sd_init
    assert demo.nn_truth == 1.0
    assert demo.nn_trained < demo.nn_chance + 0.15
    assert demo.nn_sgns > demo.nn_trained + 0.3
