"""The small masked language model of concept descriptions (ehrseq.medrep.text_mlm)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ehrseq.medrep.text_mlm import (
    SPECIALS,
    TextMLMConfig,
    WordTokenizer,
    encode_descriptions,
    encode_texts,
    mask_tokens,
    masked_token_loss,
    train_text_mlm,
)
from ehrseq.pretrain import TokenIds, mask_codes

# Three families of descriptions that share no word across families; within a family the
# words follow a fixed pattern, so a masked word can be guessed from the others.
FAMILIES = {
    "heart": ["heart", "failure", "cardiac", "ventricle", "pump"],
    "kidney": ["kidney", "renal", "stone", "calculus", "urine"],
    "skin": ["skin", "rash", "dermatitis", "itch", "eczema"],
}
QUALIFIERS = ["acute", "chronic", "mild", "severe", "left", "right", "early", "late"]


def corpus() -> list[str]:
    texts = []
    for words in FAMILIES.values():
        for i, q in enumerate(QUALIFIERS):
            rot = words[i % 5 :] + words[: i % 5]
            texts.append(f"{q} {rot[0]} {rot[1]}. Finding of {' '.join(words)}: {rot[2]}.")
    return texts


CFG = TextMLMConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, epochs=40, batch_size=8)


@pytest.fixture(scope="module")
def trained():
    return train_text_mlm(corpus(), CFG)


def test_tokenizer_round_trip_and_unknown_words():
    tok = WordTokenizer.fit(corpus())
    assert tok.itos[: len(SPECIALS)] == SPECIALS
    for text in corpus():
        ids = tok.encode(text)
        assert ids[0] == tok.stoi["[CLS]"]
        assert tok.decode(ids) == " ".join(WordTokenizer.split(text))
        assert "[UNK]" not in tok.decode(ids)
    assert WordTokenizer.split("Is a: FEV1/FVC (decile 7).") == [
        "is",
        "a",
        "fev1",
        "fvc",
        "decile",
        "7",
    ]
    ids = tok.encode("Chronic zebra heart")
    assert ids[2] == tok.stoi["[UNK]"]
    assert tok.decode(ids) == "chronic [UNK] heart"
    # min_count: a word seen once becomes unknown
    rare = WordTokenizer.fit(["a b", "a c"], min_count=2)
    assert rare.itos == (*SPECIALS, "a")
    assert rare.decode(rare.encode("a b")) == "a [UNK]"


def test_tokenizer_refuses_empty_input():
    with pytest.raises(ValueError, match="no texts"):
        WordTokenizer.fit([])
    with pytest.raises(ValueError, match="text 1"):
        WordTokenizer.fit(["heart failure", " ... "])
    tok = WordTokenizer.fit(corpus())
    with pytest.raises(ValueError, match="no word"):
        tok.encode("?!")
    with pytest.raises(ValueError, match="no texts"):
        tok.batch([], 8)
    with pytest.raises(ValueError, match="start with"):
        WordTokenizer(("a", "b"))


def test_batch_pads_and_cuts():
    tok = WordTokenizer.fit(corpus())
    ids, mask = tok.batch(["heart", "acute heart failure cardiac"], max_len=3)
    assert ids.shape == (2, 3) and mask.dtype == torch.bool
    assert mask.tolist() == [[True, True, False], [True, True, True]]
    assert tok.decode(ids[1]) == "acute heart"  # cut to max_len tokens, [CLS] included


def test_masking_rate_and_80_10_10_split():
    vocab, shape = 1000, (400, 60)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(len(SPECIALS), vocab, shape, generator=gen)  # (B, L) words
    ids[:, 0] = SPECIALS.index("[CLS]")
    mask = torch.ones(shape, dtype=torch.bool)
    mask[:, 50:] = False  # padding
    ids[~mask] = SPECIALS.index("[PAD]")
    masked, labels = mask_tokens(ids, mask, vocab, generator=torch.Generator().manual_seed(1))
    picked = labels != -100
    assert not picked[:, 0].any() and not picked[~mask].any()  # [CLS] and padding never
    eligible = mask.clone()
    eligible[:, 0] = False
    assert abs(picked.sum().item() / eligible.sum().item() - 0.15) < 0.01
    assert torch.equal(labels[picked], ids[picked])
    to_mask = (masked[picked] == SPECIALS.index("[MASK]")).float().mean().item()
    kept = (masked[picked] == ids[picked]).float().mean().item()
    other = 1 - to_mask - kept  # replaced by a random word (rarely its own: 1 in 996)
    assert abs(to_mask - 0.8) < 0.02 and abs(kept - 0.1) < 0.015 and abs(other - 0.1) < 0.015
    assert (masked[picked] >= len(SPECIALS)).sum() == (1 - to_mask) * picked.sum()
    assert torch.equal(masked[~picked], ids[~picked])  # nothing else changes


def test_masking_equals_pretrain_mask_codes():
    """The same generator gives the same corruption as the library's BERT masking."""
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(len(SPECIALS), 50, (16, 12), generator=gen)
    ids[:, 0] = SPECIALS.index("[CLS]")
    mask = torch.rand(16, 12, generator=gen) < 0.8
    mask[:, :2] = True
    ids[~mask] = 0
    special = tuple(range(len(SPECIALS)))
    token_ids = TokenIds(50, pad_id=0, mask_id=2, cls_id=3, sep_id=3, special_ids=special)
    ours = mask_tokens(ids, mask, 50, generator=torch.Generator().manual_seed(9))
    theirs = mask_codes(ids, mask, token_ids, generator=torch.Generator().manual_seed(9))
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])


def test_masking_refuses_bad_input():
    ids = torch.full((2, 3), 5)
    with pytest.raises(ValueError, match="differ"):
        mask_tokens(ids, torch.ones(2, 4, dtype=torch.bool), 10)
    with pytest.raises(ValueError, match="probabilities"):
        mask_tokens(ids, torch.ones(2, 3, dtype=torch.bool), 10, replace_prob=0.95)
    with pytest.raises(ValueError, match="no word"):
        mask_tokens(ids, torch.ones(2, 3, dtype=torch.bool), len(SPECIALS))


def test_training_lowers_the_masked_word_loss(trained):
    texts = corpus()
    tok = trained.tokenizer
    after = masked_token_loss(trained.model, tok, texts, seed=5)
    untrained = train_text_mlm(texts, TextMLMConfig(**{**CFG.__dict__, "epochs": 0}))
    before = masked_token_loss(untrained.model, tok, texts, seed=5)
    assert before["n_masked"] == after["n_masked"] > 50  # the same picks
    assert abs(before["loss"] - np.log(len(tok))) < 0.3  # starts near a uniform guess
    assert after["loss"] < before["loss"] - 1.0
    assert after["accuracy"] > 0.4
    assert trained.history["loss"].iloc[-1] < trained.history["loss"].iloc[0]
    # control: the same model trained on the same words in random order does not get there
    rng = np.random.default_rng(0)
    words = [w for t in texts for w in WordTokenizer.split(t)]
    lengths = [len(WordTokenizer.split(t)) for t in texts]
    shuffled = rng.permutation(words).tolist()
    cuts = np.cumsum([0, *lengths])
    noise = [" ".join(shuffled[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    control = train_text_mlm(noise, CFG, tokenizer=tok)
    scored = masked_token_loss(control.model, tok, texts, seed=5)
    assert scored["loss"] > after["loss"] + 0.5


def test_descriptions_sharing_words_are_nearer(trained):
    texts = [
        "chronic heart failure cardiac",
        "acute heart failure pump",
        "mild kidney stone renal",
    ]
    vec = encode_texts(texts, trained.model, trained.tokenizer)
    assert vec.shape == (3, CFG.d_model)
    assert np.allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
    assert vec[0] @ vec[1] > vec[0] @ vec[2] + 0.1
    assert vec[1] @ vec[0] > vec[1] @ vec[2] + 0.1


def test_padding_does_not_change_a_vector(trained):
    short = "acute heart"
    longer = "chronic kidney stone renal. Finding of kidney renal stone calculus urine: stone."
    alone = encode_texts([short], trained.model, trained.tokenizer)
    padded = encode_texts([short, longer], trained.model, trained.tokenizer)
    ids, mask = trained.tokenizer.batch([short, longer], CFG.max_len)
    assert (~mask[0]).sum() > 5  # the short one really is padded in that batch
    np.testing.assert_allclose(padded[0], alone[0], atol=1e-5)
    # nor does the batch size
    texts = corpus()
    np.testing.assert_allclose(
        encode_texts(texts, trained.model, trained.tokenizer, batch_size=3),
        encode_texts(texts, trained.model, trained.tokenizer, batch_size=100),
        atol=1e-5,
    )


def test_deterministic_under_a_seed(trained):
    again = train_text_mlm(corpus(), CFG)
    assert again.history["loss"].tolist() == trained.history["loss"].tolist()
    a = encode_texts(corpus(), trained.model, trained.tokenizer)
    assert np.array_equal(a, encode_texts(corpus(), again.model, again.tokenizer))
    other = train_text_mlm(corpus(), TextMLMConfig(**{**CFG.__dict__, "seed": 1, "epochs": 2}))
    short = train_text_mlm(corpus(), TextMLMConfig(**{**CFG.__dict__, "epochs": 2}))
    assert other.history["loss"].tolist() != short.history["loss"].tolist()


def test_encode_descriptions_contract(trained):
    frame = pd.DataFrame(
        {
            "concept_id": [11, -1207, 5],
            "concept_name": ["a", "b", "c"],
            "description": corpus()[:3],
        }
    )
    emb = encode_descriptions(frame, trained.model, trained.tokenizer)
    assert emb.concept_ids.tolist() == [11, -1207, 5]
    assert emb.vectors.shape == (3, CFG.d_model) and emb.names == ("a", "b", "c")
    assert np.allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="missing columns"):
        encode_descriptions(frame.drop(columns="description"), trained.model, trained.tokenizer)
    bad = frame.assign(description=["heart", "--", "skin"])
    with pytest.raises(ValueError, match="concept -1207"):
        encode_descriptions(bad, trained.model, trained.tokenizer)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"d_model": 30, "n_heads": 4}, "divisible"),
        ({"epochs": -1}, "epochs"),
        ({"mask_prob": 1.5}, "masking"),
        ({"max_len": 1}, "max_len"),
    ],
)
def test_config_refuses_bad_settings(change, match):
    with pytest.raises(ValueError, match=match):
        TextMLMConfig(**change)
