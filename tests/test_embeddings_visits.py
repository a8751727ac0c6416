"""Visit-level code embeddings (Med2Vec's visit objective over attention-pooled visits)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ehrseq.embeddings import CodeCorpus
from ehrseq.embeddings.visits import (
    VisitEmbeddingConfig,
    VisitEncoder,
    corpus_visits,
    intra_visit_loss,
    med2vec_visit_loss,
    neighbour_counts,
    token_types,
    train_visit_embedding,
    visit_neighbours,
    visit_vectors,
)


def _random_corpus(seed: int = 0, n_persons: int = 12, unknown: bool = True) -> CodeCorpus:
    rng = np.random.default_rng(seed)
    n = 400
    person = rng.integers(0, n_persons, n)
    days = rng.integers(0, 15, n).astype(float)  # few days: many codes share a day
    concept = rng.integers(100, 112, n)
    if unknown:
        concept[rng.random(n) < 0.1] = 0  # the unknown token
    return CodeCorpus.from_arrays(person, days, concept, seed=seed)


def _visits_loop(corpus: CodeCorpus) -> list[tuple[int, float, list[int]]]:
    """(person, day, sorted distinct known tokens) of every visit, by a loop over events."""
    out: dict[tuple[int, float], set[int]] = {}
    for p, d, t in zip(corpus.person, corpus.days, corpus.tokens):
        if t != 0:
            out.setdefault((int(p), float(d)), set()).add(int(t))
    return [(p, d, sorted(ts)) for (p, d), ts in sorted(out.items())]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_corpus_visits_equals_a_loop(seed):
    corpus = _random_corpus(seed)
    visits = corpus_visits(corpus)
    expected = _visits_loop(corpus)
    assert len(visits) == len(expected)
    for m, (p, d, toks) in enumerate(expected):
        assert visits.person[m] == p and visits.days[m] == d
        row = visits.codes[m][visits.mask[m]].tolist()
        assert row == toks
        assert (visits.codes[m][~visits.mask[m]] == 0).all()
    assert visits.n_unknown == int((corpus.tokens == 0).sum())
    n_known = int((corpus.tokens != 0).sum())
    assert visits.n_duplicate == n_known - int(visits.mask.sum())


def test_corpus_visits_truncates_and_counts():
    corpus = _random_corpus(0)
    full = corpus_visits(corpus)
    cut = corpus_visits(corpus, max_codes=2)
    assert cut.max_codes == 2
    assert cut.n_truncated == int(full.mask.sum()) - int(cut.mask.sum()) > 0
    with pytest.raises(ValueError, match="max_codes"):
        corpus_visits(corpus, max_codes=0)


def test_neighbour_counts_equal_a_loop():
    corpus = _random_corpus(3)
    visits = corpus_visits(corpus)
    idx, ok = visit_neighbours(visits.person, 2)
    rows = torch.arange(len(visits))
    counts, n = neighbour_counts(visits, rows, idx, ok)
    for t in range(len(visits)):
        want = np.zeros(visits.n_tokens - 1)
        k = 0
        for j in range(t - 2, t + 3):
            if j == t or j < 0 or j >= len(visits) or visits.person[j] != visits.person[t]:
                continue
            k += 1
            for c in visits.codes[j][visits.mask[j]].tolist():
                want[c - 1] += 1
        assert n[t] == k
        np.testing.assert_array_equal(counts[t].numpy(), want)
    with pytest.raises(ValueError, match="window"):
        visit_neighbours(visits.person, 0)


def _types(n_tokens: int) -> np.ndarray:
    return np.arange(n_tokens) % 4


@pytest.mark.parametrize("per_type", [False, True])
def test_padding_does_not_change_the_visit_vector(per_type):
    torch.manual_seed(0)
    enc = VisitEncoder(12, 8, _types(12) if per_type else None)
    with torch.no_grad():  # non-trivial queries, so the weights are not uniform
        enc.queries.normal_()
        for table in enc.tables:
            table.weight[1:].normal_()
    codes = torch.tensor([[3, 5, 6, 9]])
    mask = torch.ones_like(codes, dtype=torch.bool)
    alone = enc(codes, mask)
    padded = torch.tensor([[3, 5, 6, 9, 7, 2, 11], [1, 4, 0, 0, 0, 0, 0]])
    pmask = torch.tensor([[1, 1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    batch = enc(padded, pmask)  # tokens under the padding must be ignored
    torch.testing.assert_close(batch[0], alone[0])
    # and a different code in a real place does change it (the check can fail)
    other = enc(torch.tensor([[3, 5, 6, 10]]), mask)
    assert not torch.allclose(other, alone)


@pytest.mark.parametrize("per_type", [False, True])
def test_attention_weights_sum_to_one_over_real_codes(per_type):
    torch.manual_seed(1)
    types = _types(12)
    enc = VisitEncoder(12, 8, types if per_type else None)
    with torch.no_grad():
        enc.queries.normal_()
    codes = torch.tensor([[3, 5, 6, 9, 7], [1, 4, 8, 0, 0]])
    mask = codes != 0
    _, alpha, beta = enc.attend(codes, mask)  # alpha (B, K, L)
    assert (alpha[~mask[:, None, :].expand_as(alpha)] == 0).all()
    if not per_type:
        torch.testing.assert_close(alpha.sum(-1), torch.ones(2, 1))
        assert beta is None
        return
    tt = torch.from_numpy(types)[codes]  # (B, L)
    for b in range(2):
        for k in range(4):
            real = mask[b] & (tt[b] == k)
            want = 1.0 if real.any() else 0.0
            assert math.isclose(float(alpha[b, k].sum().detach()), want, abs_tol=1e-6)
            assert (alpha[b, k][~real] == 0).all()
    # cross-attention: each present type's weights over the other present types sum to 1
    present = torch.stack([(mask & (tt == k)).any(1) for k in range(4)], 1)  # (B, K)
    for b in range(2):
        for k in range(4):
            others = present[b].clone()
            others[k] = False
            want = 1.0 if present[b, k] and others.any() else 0.0
            assert math.isclose(float(beta[b, k].sum().detach()), want, abs_tol=1e-6)
            assert (beta[b, k][~others] == 0).all()


def test_encoder_refuses_bad_input():
    enc = VisitEncoder(6, 4)
    with pytest.raises(ValueError, match="no real code"):
        enc(torch.tensor([[1, 2], [0, 0]]), torch.tensor([[1, 1], [0, 0]], dtype=torch.bool))
    with pytest.raises(ValueError, match="tokens must lie"):
        enc(torch.tensor([[1, 7]]), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="types"):
        VisitEncoder(6, 4, np.array([0, 1, 2]))


def test_visit_loss_equals_a_hand_computation():
    logits = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.3, -0.2]])
    counts = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])
    n = torch.tensor([2.0, 1.0])
    for objective in ("softmax", "bce"):
        total = 0.0
        for b in range(2):
            z = logits[b].tolist()
            if objective == "softmax":
                e = [math.exp(v) for v in z]
                p = [v / sum(e) for v in e]
            else:
                p = [1 / (1 + math.exp(-v)) for v in z]
            for c in range(3):
                y, k = float(counts[b, c]), float(n[b])
                total -= y * math.log(p[c]) + (k - y) * math.log(1 - p[c])
        want = total / 3.0  # (visit, neighbour) pairs: 2 + 1
        got = med2vec_visit_loss(logits, counts, n, objective)
        assert math.isclose(float(got), want, rel_tol=1e-5), objective
    with pytest.raises(ValueError, match="objective"):
        med2vec_visit_loss(logits, counts, n, "mse")
    with pytest.raises(ValueError, match="counts"):
        med2vec_visit_loss(logits, counts + 2, n)
    with pytest.raises(ValueError, match="no visit"):
        med2vec_visit_loss(logits, counts * 0, n * 0)


def test_intra_visit_loss_equals_a_hand_computation():
    gen = torch.Generator().manual_seed(0)
    x_table = torch.randn(5, 3, generator=gen)  # tokens 0..4
    outputs = torch.randn(4, 3, generator=gen)  # tokens 1..4
    codes = torch.tensor([[1, 3, 4], [2, 0, 0]])
    mask = codes != 0
    got = intra_visit_loss(x_table, outputs, codes, mask)
    total, pairs = 0.0, 0
    for c in (1, 3, 4):  # the one visit with two codes or more
        scores = (outputs @ x_table[c]).tolist()
        log_z = math.log(sum(math.exp(s) for s in scores))
        for o in (1, 3, 4):
            if o != c:
                total -= scores[o - 1] - log_z
                pairs += 1
    assert math.isclose(float(got), total / pairs, rel_tol=1e-5)
    with pytest.raises(ValueError, match="outputs"):
        intra_visit_loss(x_table, outputs[:2], codes, mask)


def _paired_corpus(seed: int = 0) -> CodeCorpus:
    """Codes 1 & 2 always share a visit, as do 3 & 4; the two pairs never meet.

    Half the patients have visits {1, 2, noise}, the others {3, 4, noise}; noise codes
    (5..8) come from either side at random.
    """
    rng = np.random.default_rng(seed)
    person, days, concept = [], [], []
    for p in range(60):
        pair = (1, 2) if p % 2 == 0 else (3, 4)
        for v in range(6):
            codes = [*pair, int(rng.integers(5, 9))]
            person += [p] * len(codes)
            days += [float(v)] * len(codes)
            concept += codes
    return CodeCorpus.from_arrays(np.array(person), np.array(days), np.array(concept))


@pytest.mark.parametrize("per_type", [False, True])
def test_training_lowers_the_loss_and_brings_partners_together(per_type):
    corpus = _paired_corpus()
    domains = {c: ("Condition", "Drug", "Procedure", "Measurement")[c % 4] for c in range(1, 9)}
    cfg = VisitEmbeddingConfig(dim=8, per_type=per_type, epochs=15, batch_size=32, lr=0.05)
    result = train_visit_embedding(corpus, cfg, domains=domains)
    assert result.losses[-1] < 0.9 * result.losses[0]
    emb = result.embedding
    cos = emb.cosine()
    r = {int(c): i for i, c in enumerate(emb.concept_ids)}
    together = min(cos[r[1], r[2]], cos[r[3], r[4]])
    apart = max(cos[r[1], r[3]], cos[r[1], r[4]], cos[r[2], r[3]], cos[r[2], r[4]])
    assert together > apart + 0.2
    vecs = visit_vectors(result, result.visits)
    assert vecs.shape == (len(result.visits), 8)
    assert torch.isfinite(vecs).all()


def test_the_code_level_term_trains():
    corpus = _paired_corpus()
    cfg = VisitEmbeddingConfig(dim=8, epochs=10, batch_size=32, lr=0.05, code_weight=1.0)
    result = train_visit_embedding(corpus, cfg)
    assert result.losses[-1] < 0.9 * result.losses[0]
    model, visits = result.model, result.visits
    with torch.no_grad():
        table = model.encoder.code_vectors()
        trained = float(intra_visit_loss(table, model.outputs, visits.codes, visits.mask))
    untrained = math.log(visits.n_tokens - 1)  # zero output vectors: uniform softmax
    assert trained < 0.9 * untrained


def test_training_is_seeded_and_refuses_bad_settings():
    corpus = _paired_corpus()
    cfg = VisitEmbeddingConfig(dim=4, epochs=2, batch_size=16)
    a = train_visit_embedding(corpus, cfg).embedding.vectors
    b = train_visit_embedding(corpus, cfg).embedding.vectors
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="objective"):
        VisitEmbeddingConfig(objective="mse").validate()
    with pytest.raises(ValueError, match="window"):
        VisitEmbeddingConfig(window=0).validate()
    single = CodeCorpus.from_arrays(np.array([0, 0, 1]), np.zeros(3), np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="no person has two visits"):
        train_visit_embedding(single, cfg)


def test_token_types_from_domains():
    ids = np.array([0, 10, 11, 12, 13])
    domains = {10: "Drug", 11: "Condition", 12: "Measurement", 13: "Procedure"}
    np.testing.assert_array_equal(token_types(ids, domains), [0, 1, 0, 3, 2])
    with pytest.raises(ValueError, match="1 codes have no domain"):
        token_types(ids, {10: "Drug", 11: "Condition", 12: "Measurement", 13: "Visit"})
