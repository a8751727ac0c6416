"""Embedding files: round trips, and refusals that name the file and the problem."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ehrseq.data.concepts import load_vocabulary
from ehrseq.embeddings import CodeCorpus, CodeEmbedding, SkipGramConfig, train_skipgram
from ehrseq.embeddings.io import (
    EmbeddingFileError,
    load_parquet,
    load_torch,
    save_parquet,
    save_torch,
)


@pytest.fixture(scope="module")
def vocab():
    return load_vocabulary()


@pytest.fixture
def emb(vocab):
    ids = vocab.annotation["concept_id"].to_numpy()[:12]
    rng = np.random.default_rng(0)
    return CodeEmbedding(ids, rng.normal(size=(12, 4)).astype(np.float32))


def test_parquet_round_trip_with_the_concept_index(tmp_path, emb, vocab):
    path = save_parquet(emb, tmp_path / "e.parquet", vocabulary=vocab)
    table = pq.read_table(path)
    assert table.column_names == ["concept_id", "concept_name", "vocabulary_id", "vector"]
    assert table.column("vocabulary_id").to_pylist()[0] == "SNOMED"
    back = load_parquet(path, vocabulary=vocab, dim=4)
    np.testing.assert_array_equal(back.concept_ids, emb.concept_ids)
    np.testing.assert_array_equal(back.vectors, emb.vectors)
    names = vocab.concept.set_index("concept_id").loc[emb.concept_ids, "concept_name"]
    assert back.names == tuple(names)
    save_parquet(emb, tmp_path / "bare.parquet")  # no vocabulary: null names and ids
    assert load_parquet(tmp_path / "bare.parquet").names is None


def test_torch_round_trip_plain_tensors(tmp_path, emb, vocab):
    path = save_torch(emb, tmp_path / "e.pt")
    obj = torch.load(path, weights_only=True)
    assert set(obj) == {"concept_ids", "embeddings"} and obj["concept_ids"].dtype == torch.int64
    back = load_torch(path, vocabulary=vocab, dim=4)
    np.testing.assert_array_equal(back.concept_ids, emb.concept_ids)
    np.testing.assert_array_equal(back.vectors, emb.vectors)


def test_loading_refuses_mismatches_naming_file_and_problem(tmp_path, emb, vocab):
    pt = save_torch(emb, tmp_path / "e.pt")
    with pytest.raises(EmbeddingFileError, match=r"e\.pt: embedding dimension 4, expected 8"):
        load_torch(pt, dim=8)
    with pytest.raises(EmbeddingFileError, match=r"e\.pt: 2 of 12 concept ids are not in the voc"):
        load_torch(pt, vocabulary=emb.concept_ids[2:])
    ids = torch.from_numpy(emb.concept_ids.copy())
    ids[1] = ids[0]
    torch.save({"concept_ids": ids, "embeddings": torch.zeros(12, 4)}, tmp_path / "dup.pt")
    with pytest.raises(EmbeddingFileError, match=r"dup\.pt: 1 concept ids appear more than once"):
        load_torch(tmp_path / "dup.pt")
    rows = {"concept_ids": ids[1:6], "embeddings": torch.zeros(12, 4)}
    torch.save(rows, tmp_path / "rows.pt")
    with pytest.raises(EmbeddingFileError, match=r"rows\.pt: 12 embedding rows for 5"):
        load_torch(tmp_path / "rows.pt")
    torch.save({"embeddings": torch.zeros(2, 4)}, tmp_path / "key.pt")
    with pytest.raises(EmbeddingFileError, match=r"key\.pt: missing keys \['concept_ids'\]"):
        load_torch(tmp_path / "key.pt")
    torch.save({"concept_ids": ids, "embeddings": pd.DataFrame()}, tmp_path / "pickle.pt")
    with pytest.raises(EmbeddingFileError, match=r"pickle\.pt: not a plain-tensor torch file"):
        load_torch(tmp_path / "pickle.pt")
    with pytest.raises(EmbeddingFileError, match=r"none\.pt: no such file"):
        load_torch(tmp_path / "none.pt")

    pqf = save_parquet(emb, tmp_path / "e.parquet")
    with pytest.raises(EmbeddingFileError, match=r"e\.parquet: embedding dimension 4, expected 3"):
        load_parquet(pqf, dim=3)
    with pytest.raises(EmbeddingFileError, match=r"e\.parquet: 12 of 12 concept ids are not in"):
        load_parquet(pqf, vocabulary=[1, 2])
    ragged = pa.table({"concept_id": [1, 2], "vector": [[0.0, 1.0], [1.0]]})
    pq.write_table(ragged, tmp_path / "ragged.parquet")
    with pytest.raises(EmbeddingFileError, match=r"ragged\.parquet: vectors have different"):
        load_parquet(tmp_path / "ragged.parquet")
    dup = pa.table({"concept_id": [1, 1], "vector": [[0.0, 1.0], [1.0, 0.0]]})
    pq.write_table(dup, tmp_path / "dup.parquet")
    with pytest.raises(EmbeddingFileError, match=r"dup\.parquet: 1 concept ids appear more"):
        load_parquet(tmp_path / "dup.parquet")
    pq.write_table(pa.table({"concept_id": [1]}), tmp_path / "col.parquet")
    with pytest.raises(EmbeddingFileError, match=r"col\.parquet: missing columns \['vector'\]"):
        load_parquet(tmp_path / "col.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(EmbeddingFileError, match=r"junk\.parquet: not a readable parquet"):
        load_parquet(tmp_path / "junk.parquet")


def test_codes_outside_the_vocabulary_train_as_unknown_and_are_reported(tmp_path, vocab):
    rng = np.random.default_rng(0)
    known = vocab.annotation["concept_id"].to_numpy()[:30]
    codes = rng.choice(np.r_[known, [999_001, 999_002]], size=2000)
    person = np.repeat(np.arange(100), 20)
    days = np.tile(np.arange(20.0), 100)
    corpus = CodeCorpus.from_arrays(person, days, codes, vocabulary=vocab)
    outside = int(np.isin(codes, [999_001, 999_002]).sum())
    assert corpus.n_unknown == outside > 0
    result = train_skipgram(corpus, SkipGramConfig(dim=4, window=2, epochs=1, progress=False))
    assert result.n_unknown == outside and f"{outside:,} events had a code outside" in (
        result.report()
    )
    assert not np.isin([999_001, 999_002, 0], result.embedding.concept_ids).any()
    back = load_torch(save_torch(result.embedding, tmp_path / "t.pt"), vocabulary=vocab, dim=4)
    assert len(back) == len(result.embedding)
