"""gensim's word2vec on the same corpus and settings: the reference our skip-gram is held to.

gensim is optional (``pip install gensim``, pinned in ``requirements.txt``); it is imported
only when :func:`gensim_skipgram` runs. The settings mirror :class:`SkipGramConfig` with the
plain skip-gram's pairs: ``sg=1``, the same ``window``, ``negative``, ``ns_exponent``,
``epochs`` and ``vector_size``, every code kept (``min_count=1``), no frequent-code
down-sampling (``sample=0``) and full windows (``shrink_windows=False``), so both see every
pair within the window; ``workers=1``. gensim keeps its own learning-rate schedule (0.025
falling linearly to 0.0001) and per-pair SGD.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ehrseq.embeddings.base import CodeEmbedding
from ehrseq.embeddings.corpus import UNKNOWN_CONCEPT_ID, CodeCorpus
from ehrseq.embeddings.skipgram import SkipGramConfig

__all__ = ["GensimResult", "gensim_skipgram", "from_keyed_vectors"]


def from_keyed_vectors(kv) -> CodeEmbedding:
    """A gensim ``KeyedVectors`` whose keys are concept ids (as strings) as a
    :class:`CodeEmbedding`; the unknown token ``"0"`` is left out.

    Raises:
        ValueError: when a key is not an integer.
    """
    keys = list(kv.index_to_key)
    try:
        ids = np.array([int(k) for k in keys], dtype=np.int64)
    except ValueError as err:
        raise ValueError(f"from_keyed_vectors: keys must be concept ids, got {keys[:3]}") from err
    keep = ids != UNKNOWN_CONCEPT_ID
    return CodeEmbedding(ids[keep], np.asarray(kv.vectors)[keep])


@dataclass
class GensimResult:
    """gensim's vectors and timing: ``train_seconds`` is ``Word2Vec.train`` alone
    (``build_vocab`` excluded, as corpus building is for ours)."""

    embedding: CodeEmbedding
    n_tokens: int
    epochs: int
    train_seconds: float

    @property
    def words_per_second(self) -> float:
        return self.n_tokens * self.epochs / max(self.train_seconds, 1e-12)


def gensim_skipgram(
    corpus: CodeCorpus, config: SkipGramConfig | None = None, workers: int = 1
) -> GensimResult:
    """Train gensim ``Word2Vec(sg=1)`` on the corpus with :class:`SkipGramConfig`'s settings.

    ``tau`` is ignored (gensim has no time weight): this is the plain skip-gram. Unknown
    tokens stay in the sentences as ``"0"`` (keeping positions) and are dropped afterwards.

    Raises:
        ImportError: with the install line, when gensim is absent.
    """
    try:
        from gensim.models import Word2Vec
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("gensim_skipgram needs gensim: pip install gensim") from err
    cfg = (config or SkipGramConfig()).validate()
    sentences = corpus.sentences()
    model = Word2Vec(
        vector_size=cfg.dim,
        window=cfg.window,
        sg=1,
        hs=0,
        negative=cfg.negatives,
        ns_exponent=cfg.ns_exponent,
        min_count=1,
        sample=0,
        shrink_windows=False,
        workers=workers,
        seed=cfg.seed,
    )
    model.build_vocab(sentences)
    t0 = time.perf_counter()
    model.train(sentences, total_examples=len(sentences), epochs=cfg.epochs)
    seconds = time.perf_counter() - t0
    return GensimResult(from_keyed_vectors(model.wv), corpus.n_tokens, cfg.epochs, seconds)
