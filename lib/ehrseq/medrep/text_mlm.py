"""Text vectors from a small masked language model trained here on the descriptions.

MedRep (Kim et al., arXiv 2504.08329) continues the masked-language-model (MLM) training
of DeBERTa-base on its concept descriptions and takes the [CLS] state. This module is
that route scaled down to a laptop, with nothing pretrained: a word-level tokenizer
fitted on the descriptions (:class:`WordTokenizer`), a 2-layer transformer encoder
(:class:`TextMLM`) trained to predict masked words (:func:`train_text_mlm`, BERT's 15 %
masking with the 80/10/10 split, Devlin et al., arXiv 1810.04805), and one vector per
concept, the mean of its word states, L2-normalised (:func:`encode_descriptions`), under
the same :class:`~ehrseq.embeddings.CodeEmbedding` contract as the MiniLM path in
:mod:`ehrseq.medrep.text`, so a chapter can take either.

Why its own loop: ``medrep`` sits below ``train`` and ``pretrain`` in the library's
layers (``tests/test_layers.py``), so it cannot call :func:`ehrseq.train.fit`.
:func:`mask_tokens` and :func:`ehrseq.pretrain.mask_codes` both call the one corruption
of the low module :mod:`ehrseq.masking`, and ``tests/test_medrep_text_mlm.py`` checks that
the two give the same corruption from the same generator. Used by chapter 12b
(``notebooks/12b_medrep_concepts.py``).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ehrseq.embeddings import CodeEmbedding
from ehrseq.masking import bert_mask
from ehrseq.medrep.text import _descriptions_embedding

__all__ = [
    "SPECIALS",
    "WordTokenizer",
    "mask_tokens",
    "TextMLMConfig",
    "TextMLM",
    "TextMLMResult",
    "train_text_mlm",
    "masked_token_loss",
    "encode_texts",
    "encode_descriptions",
]

#: The special tokens, in the order of their ids: ``[PAD]`` = 0, ``[UNK]`` = 1,
#: ``[MASK]`` = 2, ``[CLS]`` = 3.
SPECIALS = ("[PAD]", "[UNK]", "[MASK]", "[CLS]")
PAD, UNK, MASK, CLS = range(len(SPECIALS))
IGNORE_INDEX = -100  # label of a position not predicted (cross-entropy's default)
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class WordTokenizer:
    """Lower-cased runs of letters and digits as tokens; punctuation splits them.

    ``"Is a: furosemide 40 MG"`` -> ``["is", "a", "furosemide", "40", "mg"]``. A word
    that was not in the fitted texts (or seen fewer than ``min_count`` times) reads as
    ``[UNK]``.

    Args:
        itos: the tokens by id; the first four are :data:`SPECIALS`.

    Raises:
        ValueError: if ``itos`` does not start with :data:`SPECIALS`, repeats a token or
            has no word.
    """

    itos: tuple[str, ...]
    stoi: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if tuple(self.itos[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"WordTokenizer: itos must start with {SPECIALS}")
        if len(set(self.itos)) != len(self.itos):
            raise ValueError("WordTokenizer: itos repeats a token")
        if len(self.itos) == len(SPECIALS):
            raise ValueError("WordTokenizer: the vocabulary has no word")
        object.__setattr__(self, "stoi", {s: i for i, s in enumerate(self.itos)})

    @staticmethod
    def split(text: str) -> list[str]:
        """The words of ``text``, lower-cased, punctuation dropped."""
        return _WORD.findall(str(text).lower())

    @classmethod
    def fit(cls, texts: Sequence[str], min_count: int = 1) -> WordTokenizer:
        """The vocabulary of ``texts``: words seen at least ``min_count`` times, most
        frequent first (ties alphabetically), after :data:`SPECIALS`.

        Raises:
            ValueError: on no texts, a text without a word (naming it), or a
                ``min_count`` below 1 or so large that no word is kept.
        """
        if min_count < 1:
            raise ValueError(f"WordTokenizer.fit: min_count = {min_count} < 1")
        if len(texts) == 0:
            raise ValueError("WordTokenizer.fit: no texts to fit on")
        counts: Counter[str] = Counter()
        for i, text in enumerate(texts):
            words = cls.split(text)
            if not words:
                raise ValueError(f"WordTokenizer.fit: text {i} ({text!r}) has no word")
            counts.update(words)
        frequent = [w for w, n in counts.items() if n >= min_count]
        kept = sorted(frequent, key=lambda w: (-counts[w], w))
        if not kept:
            raise ValueError(f"WordTokenizer.fit: no word is seen {min_count} times")
        return cls(SPECIALS + tuple(kept))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        """``[CLS]`` then the ids of the words of ``text`` (``[UNK]``: unknown words).

        Raises:
            ValueError: if ``text`` has no word.
        """
        words = self.split(text)
        if not words:
            raise ValueError(f"WordTokenizer.encode: {text!r} has no word")
        return [CLS] + [self.stoi.get(w, UNK) for w in words]

    def decode(self, ids: Sequence[int]) -> str:
        """The tokens of ``ids`` joined by spaces, ``[PAD]`` and ``[CLS]`` left out."""
        return " ".join(self.itos[int(i)] for i in ids if int(i) not in (PAD, CLS))

    def batch(self, texts: Sequence[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode ``texts`` into a right-padded batch, each cut to ``max_len`` tokens.

        Returns:
            ``(ids, attention_mask)``: long ids and a bool mask, True on real tokens.

        Shapes:
            both ``(B, L)`` with ``L = min(max_len, longest encoding)``.

        Raises:
            ValueError: on no texts, a text without a word, or ``max_len < 2``.
        """
        if max_len < 2:
            raise ValueError(f"WordTokenizer.batch: max_len = {max_len} < 2 ([CLS] + word)")
        if len(texts) == 0:
            raise ValueError("WordTokenizer.batch: no texts")
        rows = [self.encode(t)[:max_len] for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), PAD, dtype=torch.long)  # (B, L)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return ids, ids != PAD


def mask_tokens(
    ids: torch.Tensor,
    attention_mask: torch.Tensor,
    vocab_size: int,
    *,
    mask_prob: float = 0.15,
    replace_prob: float = 0.8,
    random_prob: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""BERT's corruption of a batch of words, and the labels of the picked positions.

    A real word (not a special token) is picked with probability ``mask_prob``; a picked
    word becomes ``[MASK]`` with probability ``replace_prob``, a uniformly drawn word
    with probability ``random_prob``, and stays itself otherwise: :func:`ehrseq.masking
    .bert_mask` on the words, as :func:`ehrseq.pretrain.mask_codes` on the codes (same
    generator, same corruption).

    .. math:: \text{labels}_{b,l} = \begin{cases} w_{b,l} & (b, l)\ \text{picked} \\
              -100 & \text{otherwise} \end{cases}

    Args:
        ids: token ids of a :meth:`WordTokenizer.batch`.
        attention_mask: True on real tokens.
        vocab_size: ``len(tokenizer)``; random replacements are drawn from its words.
        mask_prob, replace_prob, random_prob: BERT's 0.15, 0.8, 0.1.
        generator: a ``torch.Generator`` for reproducible masks (None: the global RNG).

    Returns:
        ``(masked_ids, labels)``.

    Shapes:
        ids, attention_mask: ``(B, L)``; both outputs ``(B, L)`` long.

    Reference:
        Devlin et al., "BERT", arXiv 1810.04805, section 3.1.

    Raises:
        ValueError: shapes differ, probabilities outside [0, 1] (or ``replace_prob +
            random_prob > 1``), or a vocabulary with no word.
    """
    device = ids.device
    words = torch.arange(len(SPECIALS), max(vocab_size, len(SPECIALS)), device=device)  # (V - 4,)
    return bert_mask(
        ids,
        attention_mask,
        torch.arange(len(SPECIALS), device=device),
        words,
        MASK,
        mask_prob=mask_prob,
        replace_prob=replace_prob,
        random_prob=random_prob,
        generator=generator,
        name="ids",
        where="mask_tokens: ",
        no_regular=f"vocab_size = {vocab_size} leaves no word",
    )


@dataclass(frozen=True)
class TextMLMConfig:
    """Settings of the small MLM and its training.

    Attributes:
        d_model: width of the token states (64 to 128 is enough for a few thousand
            descriptions).
        n_layers, n_heads, d_ff: transformer encoder layers, attention heads,
            feed-forward width.
        dropout: dropout in the encoder (training only).
        max_len: most tokens per description, ``[CLS]`` included (longer ones are cut).
        min_count: a word seen fewer times is ``[UNK]``.
        epochs, batch_size, lr, weight_decay: AdamW over shuffled mini-batches;
            ``epochs = 0`` gives the untrained network (a control).
        mask_prob, replace_prob, random_prob: BERT's masking (:func:`mask_tokens`).
        seed: the weights, the batches, the masks and the dropout follow it.

    Raises:
        ValueError: on a width not divisible by the heads, non-positive sizes or rates,
            or probabilities outside [0, 1].
    """

    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 128
    dropout: float = 0.1
    max_len: int = 64
    min_count: int = 1
    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    mask_prob: float = 0.15
    replace_prob: float = 0.8
    random_prob: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        sizes = {
            "d_model": self.d_model,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "d_ff": self.d_ff,
            "batch_size": self.batch_size,
            "min_count": self.min_count,
        }
        for name, value in sizes.items():
            if value < 1:
                raise ValueError(f"TextMLMConfig: {name} = {value}, must be >= 1")
        if self.epochs < 0:
            raise ValueError(f"TextMLMConfig: epochs = {self.epochs}, must be >= 0")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"TextMLMConfig: d_model = {self.d_model} is not divisible by "
                f"n_heads = {self.n_heads}"
            )
        if self.max_len < 2:
            raise ValueError(f"TextMLMConfig: max_len = {self.max_len}, need >= 2")
        if self.lr <= 0:
            raise ValueError(f"TextMLMConfig: lr = {self.lr}, must be positive")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"TextMLMConfig: dropout = {self.dropout}, must be in [0, 1)")
        probs = (self.mask_prob, self.replace_prob, self.random_prob)
        if not all(0 <= p <= 1 for p in probs) or self.replace_prob + self.random_prob > 1:
            raise ValueError(f"TextMLMConfig: bad masking probabilities {probs}")


class TextMLM(nn.Module):
    r"""A small transformer encoder over words, with a tied masked-word head.

    .. math:: h = \mathrm{Encoder}(E w + P), \qquad
              \mathrm{logits}_{b,l} = \mathrm{LN}(h_{b,l})\, E^\top + b

    with ``E`` the word embedding (shared with the output layer), ``P`` learned
    positions and a pre-norm ``torch.nn.TransformerEncoder``; padding is masked out of
    attention, so a description's states do not depend on the padding around it.

    Args:
        vocab_size: ``len(tokenizer)``.
        config: :class:`TextMLMConfig`.

    Shapes:
        ids, attention_mask: ``(B, L)``; :meth:`forward` ``(B, L, d)``; :meth:`logits`
        ``(..., d)`` -> ``(..., V)``.

    Reference:
        Vaswani et al., "Attention is all you need", arXiv 1706.03762; Devlin et al.,
        "BERT", arXiv 1810.04805 (the tied output layer and the initialisation).

    Raises:
        ValueError: a vocabulary with no word; in :meth:`forward`, ids and mask of
            different shapes or more than ``max_len`` tokens.
    """

    def __init__(self, vocab_size: int, config: TextMLMConfig) -> None:
        super().__init__()
        if vocab_size <= len(SPECIALS):
            raise ValueError(f"TextMLM: vocab_size = {vocab_size} leaves no word")
        self.config = config
        d = config.d_model
        self.tokens = nn.Embedding(vocab_size, d, padding_idx=PAD)
        self.positions = nn.Embedding(config.max_len, d)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            d,
            config.n_heads,
            config.d_ff,
            config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        # BERT's initialisation: small word and position vectors, so that the tied
        # output layer starts near a uniform guess (loss log V) instead of at large
        # random logits
        nn.init.normal_(self.tokens.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)
        with torch.no_grad():
            self.tokens.weight[PAD].zero_()

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token states ``(B, L, d)`` (layer-normalised)."""
        if ids.shape != attention_mask.shape:
            raise ValueError(
                f"TextMLM: ids {tuple(ids.shape)} and attention_mask "
                f"{tuple(attention_mask.shape)} differ"
            )
        if ids.shape[1] > self.config.max_len:
            raise ValueError(
                f"TextMLM: {ids.shape[1]} tokens, more than max_len = {self.config.max_len}"
            )
        pos = torch.arange(ids.shape[1], device=ids.device)  # (L,)
        x = self.tokens(ids) + self.positions(pos)  # (B, L, d)
        padding = ~attention_mask.bool()  # (B, L)
        x = self.encoder(self.dropout(x), src_key_padding_mask=padding)  # (B, L, d)
        return self.norm(x)  # (B, L, d)

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """Scores of every word: states ``(..., d)`` -> ``(..., V)``."""
        return states @ self.tokens.weight.T + self.bias  # (..., V)


@dataclass
class TextMLMResult:
    """What :func:`train_text_mlm` returns.

    Attributes:
        model: the trained :class:`TextMLM` (eval mode, on the CPU).
        tokenizer: the :class:`WordTokenizer` fitted on the texts.
        history: one row per epoch: ``epoch``, ``loss`` (mean masked-word cross-entropy
            of the epoch's batches).
        seconds: training time (tokenizing included).
        config: the settings.
    """

    model: TextMLM
    tokenizer: WordTokenizer
    history: pd.DataFrame
    seconds: float
    config: TextMLMConfig


def _mlm_loss(model: TextMLM, masked, attention_mask, labels) -> torch.Tensor:
    picked = labels != IGNORE_INDEX  # (B, L); the head scores only the picked positions
    logits = model.logits(model(masked, attention_mask)[picked])  # (M, V)
    return F.cross_entropy(logits, labels[picked])


def train_text_mlm(
    texts: Sequence[str],
    config: TextMLMConfig | None = None,
    tokenizer: WordTokenizer | None = None,
) -> TextMLMResult:
    r"""Fit a :class:`WordTokenizer`, then train a :class:`TextMLM` on masked words.

    Per mini-batch: corrupt with :func:`mask_tokens`, then one AdamW step on

    .. math:: \mathcal L = -\frac{1}{|M|} \sum_{(b,l) \in M}
              \log \operatorname{softmax}(\mathrm{logits}_{b,l})_{w_{b,l}}

    over the picked positions :math:`M` (a batch with none is skipped). Runs on the CPU
    in a forked RNG seeded with ``config.seed``, so the run repeats bit for bit and
    leaves the caller's random state alone.

    Args:
        texts: the descriptions.
        config: :class:`TextMLMConfig` (defaults when None).
        tokenizer: a fitted tokenizer to use instead of fitting one on ``texts`` (e.g.
            to train a control model on other texts over the same vocabulary).

    Returns:
        :class:`TextMLMResult`.

    Shapes:
        ``texts``: ``N`` strings; batches ``(batch_size, L)``.

    Reference:
        Devlin et al., "BERT", arXiv 1810.04805; MedRep's continued MLM training of
        DeBERTa on its descriptions (arXiv 2504.08329).

    Raises:
        ValueError: on no texts or a text without a word (from the tokenizer).
    """
    cfg = config or TextMLMConfig()
    t0 = time.perf_counter()
    tok = tokenizer if tokenizer is not None else WordTokenizer.fit(texts, cfg.min_count)
    ids, attention_mask = tok.batch(texts, cfg.max_len)  # (N, L) each
    rows = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        model = TextMLM(len(tok), cfg)
        decay = cfg.weight_decay
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=decay)
        model.train()
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(ids), generator=gen)  # (N,)
            losses = []
            for start in range(0, len(ids), cfg.batch_size):
                pick = order[start : start + cfg.batch_size]
                width = int(attention_mask[pick].sum(1).max())  # no all-padding columns
                batch_ids = ids[pick, :width]  # (B, L)
                batch_mask = attention_mask[pick, :width]  # (B, L)
                masked, labels = mask_tokens(
                    batch_ids,
                    batch_mask,
                    len(tok),
                    mask_prob=cfg.mask_prob,
                    replace_prob=cfg.replace_prob,
                    random_prob=cfg.random_prob,
                    generator=gen,
                )
                if not (labels != IGNORE_INDEX).any():
                    continue
                loss = _mlm_loss(model, masked, batch_mask, labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
            mean = float(np.mean(losses)) if losses else np.nan
            rows.append({"epoch": epoch + 1, "loss": mean})
    model.eval()
    seconds = time.perf_counter() - t0
    history = pd.DataFrame(rows, columns=["epoch", "loss"])
    return TextMLMResult(model, tok, history, seconds, cfg)


@torch.no_grad()
def masked_token_loss(
    model: TextMLM,
    tokenizer: WordTokenizer,
    texts: Sequence[str],
    seed: int = 0,
    repeats: int = 4,
) -> dict[str, float]:
    r"""Masked-word cross-entropy and top-1 accuracy on ``texts`` (masks from ``seed``).

    .. math:: \mathcal L = -\frac{1}{|M|} \sum_{(b,l) \in M}
              \log \operatorname{softmax}(\mathrm{logits}_{b,l})_{w_{b,l}}

    over the picked positions :math:`M` of ``repeats`` independent maskings (more picked
    words, a steadier number), in eval mode. The same ``seed`` gives the same masks, so
    two models with the same tokenizer are scored on the same picks.

    Args:
        model, tokenizer: a :class:`TextMLM` and the tokenizer it reads.
        texts: the strings to score.
        seed: seeds the masks.
        repeats: maskings pooled.

    Shapes:
        ``texts``: ``N`` strings, batched as ``(N, L)``.

    Returns:
        ``{"loss", "accuracy", "n_masked"}``; the loss of a uniform guess is ``log V``.

    Raises:
        ValueError: on ``repeats < 1``, no texts or a text without a word.
    """
    if repeats < 1:
        raise ValueError(f"masked_token_loss: repeats = {repeats}, must be >= 1")
    cfg = model.config
    ids, attention_mask = tokenizer.batch(texts, cfg.max_len)  # (N, L)
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    total, correct, n = 0.0, 0, 0
    for _ in range(repeats):
        masked, labels = mask_tokens(
            ids,
            attention_mask,
            len(tokenizer),
            mask_prob=cfg.mask_prob,
            replace_prob=cfg.replace_prob,
            random_prob=cfg.random_prob,
            generator=gen,
        )
        for start in range(0, len(ids), 256):  # chunks, each cut to its longest text
            rows = slice(start, start + 256)
            width = int(attention_mask[rows].sum(1).max())
            mask = attention_mask[rows, :width]  # (b, l)
            target = labels[rows, :width]  # (b, l)
            picked = target != IGNORE_INDEX  # (b, l)
            logits = model.logits(model(masked[rows, :width], mask)[picked])  # (M, V)
            total += float(F.cross_entropy(logits, target[picked], reduction="sum"))
            correct += int((logits.argmax(1) == target[picked]).sum())
            n += int(picked.sum())
    model.train(was_training)
    if n == 0:
        return {"loss": float("nan"), "accuracy": float("nan"), "n_masked": 0}
    return {"loss": total / n, "accuracy": correct / n, "n_masked": n}


@torch.no_grad()
def encode_texts(
    texts: Sequence[str], model: TextMLM, tokenizer: WordTokenizer, batch_size: int = 256
) -> np.ndarray:
    r"""One unit-length vector per text: the mean of its word states.

    .. math:: v_i = \frac{u_i}{\lVert u_i \rVert}, \qquad
              u_i = \frac{1}{|W_i|} \sum_{l \in W_i} h_{i,l}

    with :math:`W_i` the word positions of text :math:`i` (``[CLS]`` and padding left
    out) and :math:`h` the states of :meth:`TextMLM.forward` in eval mode.

    Args:
        texts: the strings.
        model, tokenizer: a trained :class:`TextMLM` and its tokenizer.
        batch_size: texts per forward pass (the result does not depend on it).

    Returns:
        ``(n, d)`` float32, rows of unit length.

    Raises:
        ValueError: on ``batch_size < 1``, no texts or a text without a word.
    """
    if batch_size < 1:
        raise ValueError(f"encode_texts: batch_size = {batch_size}, must be >= 1")
    if len(texts) == 0:
        raise ValueError("encode_texts: no texts")
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(texts), batch_size):
        ids, attention_mask = tokenizer.batch(
            texts[start : start + batch_size], model.config.max_len
        )
        states = model(ids, attention_mask)  # (B, L, d)
        words = (attention_mask & (ids != CLS)).unsqueeze(-1).float()  # (B, L, 1)
        mean = (states * words).sum(1) / words.sum(1)  # (B, d)
        out.append(F.normalize(mean, dim=1))
    model.train(was_training)
    return torch.cat(out).numpy().astype(np.float32)  # (n, d)


def encode_descriptions(
    descriptions: pd.DataFrame,
    model: TextMLM,
    tokenizer: WordTokenizer,
    batch_size: int = 256,
) -> CodeEmbedding:
    """Text vectors of the rows of :func:`~ehrseq.medrep.concept_descriptions`.

    The same contract as :func:`ehrseq.medrep.text.encode_descriptions` (MiniLM): row
    ``i`` of the embedding is ``descriptions`` row ``i``, unit length; only the width
    differs (``config.d_model``).

    Args:
        descriptions: a frame with ``concept_id``, ``description`` and optionally
            ``concept_name`` (kept as the embedding's names).
        model, tokenizer, batch_size: as in :func:`encode_texts`.

    Returns:
        A :class:`~ehrseq.embeddings.CodeEmbedding`, ``(len(descriptions), d_model)``.

    Raises:
        ValueError: on a missing column or a description without a word (naming the
        concept).
    """
    return _descriptions_embedding(
        descriptions,
        lambda t: not WordTokenizer.split(t),
        "the description of concept {concept} has no word",
        lambda text: encode_texts(text, model, tokenizer, batch_size=batch_size),
    )
