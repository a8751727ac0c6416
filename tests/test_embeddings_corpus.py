"""CodeCorpus.thin: codes made rare in a controlled way, checked against the events."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ehrseq.embeddings.corpus import CodeCorpus


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(0)
    n = 400
    person = rng.integers(0, 12, n)
    days = rng.permutation(n).astype(float)  # distinct: from_arrays keeps the order
    codes = rng.choice([11, 12, 13, 14, 15, 16], size=n, p=[0.3, 0.25, 0.2, 0.1, 0.1, 0.05])
    codes[:7] = 0  # a few unknown events
    return CodeCorpus.from_arrays(person, days, codes)


def events(c: CodeCorpus) -> list[tuple[int, float, int]]:
    ids = c.concept_ids[c.tokens]
    return list(zip(c.person.tolist(), c.days.tolist(), ids.tolist()))


@pytest.mark.parametrize("keep", [1, 3, 40])
def test_thinned_codes_keep_k_events_and_the_rest_is_untouched(corpus, keep):
    thinned = corpus.thin([12, 15], keep, seed=4)
    before = Counter(c for *_, c in events(corpus))
    after = Counter(c for *_, c in events(thinned))
    for code, n in before.items():
        assert after[code] == (min(keep, n) if code in (12, 15) else n)
    # the kept events are a subsequence of the original ones, in the same order
    it = iter(events(corpus))
    assert all(any(e == f for f in it) for e in events(thinned))
    # numbered as from_arrays numbers the same events (distinct days: same order)
    ref = CodeCorpus.from_arrays(thinned.person, thinned.days, thinned.concept_ids[thinned.tokens])
    assert np.array_equal(ref.concept_ids, thinned.concept_ids)
    assert np.array_equal(ref.tokens, thinned.tokens)
    assert np.array_equal(ref.counts, thinned.counts)
    assert thinned.n_unknown == corpus.n_unknown == 7


def test_thin_is_seeded_and_draws_every_event(corpus):
    a = events(corpus.thin([11], 5, seed=1))
    assert a == events(corpus.thin([11], 5, seed=1))
    assert a != events(corpus.thin([11], 5, seed=2))
    # over many seeds every event of the code is drawn about equally often
    ids = corpus.concept_ids[corpus.tokens]
    where = {e: 0 for e, c in zip(events(corpus), ids) if c == 11}
    for seed in range(300):
        for e in events(corpus.thin([11], 5, seed=seed)):
            if e[2] == 11:
                where[e] += 1
    share = np.array(list(where.values())) / 300
    assert abs(share.mean() - 5 / len(where)) < 1e-12
    assert share.min() > 0  # none is never drawn


def test_thin_refuses_bad_input(corpus):
    with pytest.raises(ValueError, match="keep must be"):
        corpus.thin([11], 0)
    with pytest.raises(ValueError, match="not known codes.*99"):
        corpus.thin([11, 99], 2)
    with pytest.raises(ValueError, match="not known codes.*0"):
        corpus.thin([0], 2)
