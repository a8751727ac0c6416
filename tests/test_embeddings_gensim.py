"""Our plain skip-gram (tau = inf) and gensim's word2vec reach comparable quality."""

from __future__ import annotations

import numpy as np
import pytest

from ehrseq.data.synthetic import SyntheticConfig, generate_cohort
from ehrseq.embeddings import CodeCorpus, SkipGramConfig, train_skipgram, truth
from ehrseq.embeddings.scores import (
    nearest_neighbour_accuracy,
    nearest_neighbour_chance,
    relatedness_power,
    shared_codes,
)

pytest.importorskip("gensim")

from ehrseq.embeddings.reference import from_keyed_vectors, gensim_skipgram  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_plain_skipgram_matches_gensim_quality():
    cohort = generate_cohort(SyntheticConfig(n_patients=400, seed=5))
    corpus = CodeCorpus.from_omop_tables(cohort.tables, vocabulary=cohort.vocabulary)
    cfg = SkipGramConfig(dim=32, window=5, negatives=5, epochs=3, progress=False)
    ours = train_skipgram(corpus, cfg)
    ref = gensim_skipgram(corpus, cfg)
    a, b = shared_codes(ours.embedding, ref.embedding)
    assert len(a) == len(corpus.concept_ids) - 1  # the same codes, unknown token left out
    groups = truth.disease_groups(cohort)
    chance = nearest_neighbour_chance(a, groups)
    nn_ours, nn_ref = nearest_neighbour_accuracy(a, groups), nearest_neighbour_accuracy(b, groups)
    assert nn_ref > 5 * chance and nn_ours > 5 * chance
    assert abs(nn_ours - nn_ref) < 0.1, (nn_ours, nn_ref)
    pairs = truth.related_pairs(cohort)
    power_ours, power_ref = relatedness_power(a, pairs), relatedness_power(b, pairs)
    assert abs(power_ours - power_ref) < 0.2, (power_ours, power_ref)


def test_from_keyed_vectors_drops_the_unknown_token():
    from gensim.models import KeyedVectors

    kv = KeyedVectors(3)
    kv.add_vectors(["0", "12", "7"], np.eye(3, dtype=np.float32))
    emb = from_keyed_vectors(kv)
    assert emb.concept_ids.tolist() == [12, 7]
    kv2 = KeyedVectors(2)
    kv2.add_vectors(["a"], np.ones((1, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="concept ids"):
        from_keyed_vectors(kv2)
