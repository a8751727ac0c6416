r"""MedCodeBERT: the BEHRT encoder with a continuous time-gap projection and a code-type
embedding, pretrained on masked codes, the next visit and, optionally, two views of a
patient (InfoNCE); its code vectors, static and contextual.

No second transformer: the encoder is :class:`~ehrseq.models.behrt.BehrtEncoder`, and a
variant (:class:`MedCodeBertConfig`) only switches two of its input embeddings,

.. math::
    e_{b,l} = E_\text{code}[c_{b,l}] + E_\text{age}[\cdot] + E_\text{visit}[\cdot] + P[l]
        + \underbrace{w_\Delta \log(1 + \Delta_{b,l}) + b_\Delta}_{\text{time gap (on/off)}}
        + \underbrace{E_\text{type}[o_{b,l}]}_{\text{code type (on/off)}}

with :math:`\Delta_{b,l}` the days since the previous token (``time_embedding=
"log_linear"``: a ``Linear(1, d)``) and :math:`o_{b,l}` the token's OMOP domain (condition,
drug, procedure, measurement, ...; ``use_domain``). Pretraining (:func:`pretrain_medcodebert`)
lowers

.. math:: \mathcal L = w_1 \mathcal L_\text{MLM} + w_2 \mathcal L_\text{NV}
    + \lambda\, \mathcal L_\text{InfoNCE},

the first two from :mod:`ehrseq.pretrain` (masked codes, bidirectional; the codes of the
next visit, visit-causal), the third from two views of each history (:func:`history_view`:
a share of its codes hidden behind ``[MASK]``), mean-pooled, projected and matched by
:func:`info_nce` against the other patients of the batch.

Code vectors in the :class:`~ehrseq.embeddings.CodeEmbedding` contract, one row per OMOP
concept (a measurement's value-free and decile tokens pooled into their concept):

- :func:`static_code_vectors`: the rows of the input table :math:`E_\text{code}`;
- :func:`contextual_code_vectors`: the encoder's output state averaged over every
  occurrence of the concept in a set of histories.

Patients for the survival task: :func:`encode_patients` (mean output state) and
:func:`cox_curves` (a ridge Cox model on those vectors, :class:`ehrseq.baselines.CoxBaseline`).

References:
    Li et al., *BEHRT*, Sci. Rep. 10, 7155 (2020); Odgaard et al., *CORE-BEHRT: a carefully
    optimized and rigorously evaluated BEHRT*, arXiv 2404.15201 (2024) (the ablation
    template); van den Oord et al., *Representation learning with contrastive predictive
    coding*, arXiv 1807.03748 (2018) (InfoNCE); Chen et al., *SimCLR*, ICML 2020 (two
    augmented views, a projection head). Derived in the chapter "MedCodeBERT".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ehrseq.baselines import CoxBaseline
from ehrseq.data.tensors import (
    FlatEncoding,
    LengthBucketSampler,
    SequenceDataset,
    collate_flat,
)
from ehrseq.embeddings.base import CodeEmbedding
from ehrseq.evaluate import SurvivalProtocol
from ehrseq.models.behrt import BehrtConfig, BehrtEncoder, encoder_inputs
from ehrseq.pretrain import BehrtForPretraining, PretrainObjective, TokenIds, mask_codes
from ehrseq.train import FitResult, TrainConfig, fit, to_device

__all__ = [
    "MedCodeBertConfig",
    "MedCodeBert",
    "MedCodeBertObjective",
    "pretrain_medcodebert",
    "info_nce",
    "history_view",
    "mean_pool",
    "token_concepts",
    "static_code_vectors",
    "contextual_code_vectors",
    "patient_loader",
    "encode_patients",
    "cox_curves",
]


@dataclass(frozen=True)
class MedCodeBertConfig:
    """One MedCodeBERT variant: which embeddings it sums, its sizes and its objective.

    Attributes:
        use_time: add the continuous time-gap projection :math:`w\\log(1+\\Delta)+b`.
        use_type: add the code-type (OMOP domain) embedding.
        contrastive_weight: :math:`\\lambda` of the InfoNCE term (0: no contrastive loss,
            no projection head).
        temperature: :math:`\\tau` of :func:`info_nce`.
        view_mask_prob: share of a history's codes hidden in each view
            (:func:`history_view`).
        mlm_weight: :math:`w_1`.
        next_visit_weight: :math:`w_2`; ``None``: the vocabulary size, which makes the
            library's mean over codes a sum over codes (as the book's recipe does).
        d_model, n_layers, n_heads, d_ff, dropout, max_len: the encoder's sizes
            (:class:`~ehrseq.models.behrt.BehrtConfig`).

    Raises:
        ValueError: a negative weight, ``temperature <= 0`` or ``view_mask_prob`` outside
        ``(0, 1)`` (checked here; the sizes by :class:`BehrtConfig`).
    """

    use_time: bool = True
    use_type: bool = True
    contrastive_weight: float = 0.0
    temperature: float = 0.1
    view_mask_prob: float = 0.3
    mlm_weight: float = 1.0
    next_visit_weight: float | None = None
    d_model: int = 32
    n_layers: int = 1
    n_heads: int = 2
    d_ff: int = 64
    dropout: float = 0.1
    max_len: int = 512

    def __post_init__(self) -> None:
        weights = {"contrastive_weight": self.contrastive_weight, "mlm_weight": self.mlm_weight}
        if self.next_visit_weight is not None:
            weights["next_visit_weight"] = self.next_visit_weight
        for name, w in weights.items():
            if not w >= 0:
                raise ValueError(f"MedCodeBertConfig: {name} = {w} must be >= 0")
        if not self.temperature > 0:
            raise ValueError(f"MedCodeBertConfig: temperature = {self.temperature} must be > 0")
        if not 0 < self.view_mask_prob < 1:
            raise ValueError(
                f"MedCodeBertConfig: view_mask_prob = {self.view_mask_prob} must be in (0, 1)"
            )

    @property
    def name(self) -> str:
        """``"full"``, ``"no Δt"``, ``"no type"`` or ``"no Δt, no type"``, with
        ``" + InfoNCE"`` when the contrastive term is on."""
        off = [n for n, on in (("no Δt", self.use_time), ("no type", self.use_type)) if not on]
        base = ", ".join(off) if off else "full"
        return base + (" + InfoNCE" if self.contrastive_weight > 0 else "")

    def encoder_config(self, vocab) -> BehrtConfig:
        """The :class:`BehrtConfig` of this variant for ``vocab``."""
        return BehrtConfig.from_vocab(
            vocab,
            d_model=self.d_model,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            d_ff=self.d_ff,
            dropout=self.dropout,
            max_len=self.max_len,
            time_embedding="log_linear" if self.use_time else "none",
            use_domain=self.use_type,
        )


# ---------------------------------------------------------------------------------------------
# The contrastive term
# ---------------------------------------------------------------------------------------------
def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    r"""Symmetric InfoNCE of two views: view 1 of patient :math:`i` must pick its own view 2
    among the batch's, and the other way round.

    .. math:: s_{ij} = \frac{\hat z^{(1)}_i \cdot \hat z^{(2)}_j}{\tau}, \qquad
        \mathcal L = \frac{1}{2B}\sum_{i=1}^{B}\Big[-\log\frac{e^{s_{ii}}}{\sum_j e^{s_{ij}}}
        - \log\frac{e^{s_{ii}}}{\sum_j e^{s_{ji}}}\Big]

    with :math:`\hat z = z / \lVert z \rVert`. When the views carry no information about
    each other every :math:`s_{ij}` is alike and :math:`\mathcal L \approx \log B`.

    Args:
        z1, z2: the two views' vectors, row :math:`i` of both from patient :math:`i`.
        temperature: :math:`\tau > 0`.

    Shapes:
        z1, z2: ``(B, k)``; output ``()``.

    Raises:
        ValueError: shapes differ, not 2-D, ``B < 2`` (no negative), or ``temperature <= 0``.

    Reference:
        van den Oord et al., arXiv 1807.03748 (2018); Radford et al., *CLIP* (2021) for
        the symmetric form.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"info_nce: views {tuple(z1.shape)} and {tuple(z2.shape)} must be (B, k)")
    if z1.shape[0] < 2:
        raise ValueError(f"info_nce: a batch of {z1.shape[0]} patient has no negative")
    if not temperature > 0:
        raise ValueError(f"info_nce: temperature = {temperature} must be > 0")
    z1, z2 = F.normalize(z1.float(), dim=-1), F.normalize(z2.float(), dim=-1)
    logits = z1 @ z2.T / temperature  # (B, B)
    target = torch.arange(z1.shape[0], device=z1.device)  # (B,)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def history_view(
    batch: dict,
    ids: TokenIds,
    mask_prob: float,
    generator: torch.Generator | None = None,
) -> dict:
    """One augmented view of every history in ``batch``: each real, non-special code is
    hidden behind ``[MASK]`` with probability ``mask_prob`` (:func:`ehrseq.pretrain
    .mask_codes` with every picked code masked); ages, visits, time gaps and types stay.

    Shapes:
        the batch's ``(B, L)`` tensors; the view has the same keys and shapes.
    """
    codes, _ = mask_codes(
        batch["codes"],
        batch["attention_mask"],
        ids,
        mask_prob=mask_prob,
        replace_prob=1.0,
        random_prob=0.0,
        generator=generator,
    )
    return {**batch, "codes": codes}


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    r"""Mean of the states of the real tokens: :math:`\bar h_b = \sum_l m_{b,l} h_{b,l} /
    \sum_l m_{b,l}`.

    Shapes:
        hidden ``(B, L, d)``, attention_mask ``(B, L)``; output ``(B, d)``.

    Raises:
        ValueError: if a row has no real token.
    """
    m = attention_mask.to(hidden.dtype)[..., None]  # (B, L, 1)
    n = m.sum(1)  # (B, 1)
    if bool((n == 0).any()):
        raise ValueError("mean_pool: a row of the batch is all padding")
    return (hidden * m).sum(1) / n  # (B, d)


# ---------------------------------------------------------------------------------------------
# Model and pretraining
# ---------------------------------------------------------------------------------------------
class MedCodeBert(nn.Module):
    """A :class:`~ehrseq.pretrain.BehrtForPretraining` (masked-code and next-visit heads,
    output tied to the code table) with a projection head for the contrastive term.

    Args:
        config: the variant.
        vocab: the vocabulary (``len()`` and ``stoi``).

    Shapes:
        ``model(batch, task)`` as :class:`~ehrseq.pretrain.BehrtForPretraining`;
        :meth:`contrast` returns ``()``.
    """

    def __init__(self, config: MedCodeBertConfig, vocab):
        super().__init__()
        self.config = config
        encoder = BehrtEncoder(config.encoder_config(vocab))
        self.pretraining = BehrtForPretraining(encoder, tie_weights=True, pool="last")
        d = config.d_model
        self.projection = None
        if config.contrastive_weight > 0:
            self.projection = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))

    @property
    def encoder(self) -> BehrtEncoder:
        return self.pretraining.encoder

    def forward(self, batch: dict, task: str = "joint") -> dict:
        return self.pretraining(batch, task=task)

    def contrast(
        self, batch: dict, ids: TokenIds, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """:func:`info_nce` of two :func:`history_view` of the batch (bidirectional encoder,
        :func:`mean_pool`, the projection head)."""
        if self.projection is None:
            raise ValueError("MedCodeBert.contrast: the config has contrastive_weight = 0")
        z = []
        for _ in range(2):
            view = history_view(batch, ids, self.config.view_mask_prob, generator)
            h = self.encoder(**encoder_inputs(view), causal=False)  # (B, L, d)
            z.append(self.projection(mean_pool(h, view["attention_mask"])))  # (B, d)
        return info_nce(z[0], z[1], self.config.temperature)


class MedCodeBertObjective:
    """The step function of :func:`pretrain_medcodebert`: ``loss, metrics = objective(model,
    batch)``.

    :class:`~ehrseq.pretrain.PretrainObjective` (``"joint"``: masked codes + next visit)
    plus ``contrastive_weight * info_nce`` of two views, reported as ``infonce``. In eval
    mode the views come from a generator seeded with ``eval_seed``.
    """

    def __init__(self, ids: TokenIds, config: MedCodeBertConfig, eval_seed: int = 1234):
        nv = ids.vocab_size if config.next_visit_weight is None else config.next_visit_weight
        self.ids, self.config, self.eval_seed = ids, config, eval_seed
        self.base = PretrainObjective(
            ids,
            "joint",
            mlm_weight=config.mlm_weight,
            next_visit_weight=float(nv),
            eval_seed=eval_seed,
        )

    def __call__(self, model: MedCodeBert, batch: dict) -> tuple[torch.Tensor, dict]:
        loss, metrics = self.base(model, batch)
        if self.config.contrastive_weight > 0:
            gen = None
            if not model.training:
                gen = torch.Generator(device=batch["codes"].device).manual_seed(self.eval_seed)
            c = model.contrast(batch, self.ids, gen)
            loss = loss + self.config.contrastive_weight * c
            metrics["infonce"] = c.detach()
        return loss, metrics


def pretrain_medcodebert(
    config: MedCodeBertConfig,
    vocab,
    train_loader,
    train_config: TrainConfig,
    val_loader=None,
) -> tuple[MedCodeBert, FitResult]:
    """Build a :class:`MedCodeBert` for ``vocab`` and pretrain it with :func:`ehrseq.train.fit`
    on :class:`MedCodeBertObjective` (seeded by ``train_config.seed``).

    Returns:
        ``(model, fit_result)``; ``model.encoder`` is the pretrained encoder.
    """
    ids = TokenIds.from_vocab(vocab)
    if train_config.seed is not None:
        torch.manual_seed(train_config.seed)  # the initial weights
    model = MedCodeBert(config, vocab)
    run = dataclasses.replace(train_config, find_unused_parameters=True)
    result = fit(model, train_loader, val_loader, MedCodeBertObjective(ids, config), run)
    return model, result


# ---------------------------------------------------------------------------------------------
# Code vectors
# ---------------------------------------------------------------------------------------------
def token_concepts(vocab) -> np.ndarray:
    """The OMOP concept of every token id (``"measurement:3004410:q3"`` -> 3004410), -1 for
    the special tokens.

    Shapes:
        output ``(len(vocab),)`` int64.
    """
    special = set(TokenIds.from_vocab(vocab).special_ids)
    return np.array(
        [-1 if i in special else int(t.split(":")[1]) for i, t in enumerate(vocab.itos)],
        dtype=np.int64,
    )


def _concept_rows(vocab, vocab_size: int) -> tuple[np.ndarray, torch.Tensor]:
    """``(concept_ids, row_of_token)``: the distinct concepts, and each token's row among
    them (-1 for a special token)."""
    if len(vocab) != vocab_size:
        raise ValueError(f"the encoder has {vocab_size} token ids, the vocabulary {len(vocab)}")
    concept = token_concepts(vocab)
    ids, row = np.unique(concept, return_inverse=True)
    row = np.where(concept >= 0, row - int(ids[0] < 0), -1)
    return ids[ids >= 0], torch.as_tensor(row, dtype=torch.long)


def static_code_vectors(encoder: BehrtEncoder, vocab) -> CodeEmbedding:
    r"""The input table as concept vectors: :math:`x_c = \frac{1}{|T_c|}\sum_{t \in T_c}
    E_\text{code}[t]`, :math:`T_c` the tokens of concept :math:`c` (its value-free token
    and, for a measurement, its decile tokens).

    Args:
        encoder: a :class:`~ehrseq.models.behrt.BehrtEncoder`.
        vocab: its vocabulary.

    Shapes:
        ``vectors``: ``(n_concepts, d)`` float64.

    Raises:
        ValueError: if the encoder's vocabulary size differs from ``len(vocab)``.
    """
    table = encoder.embeddings.code.weight.detach().cpu().double()  # (V, d)
    ids, row = _concept_rows(vocab, table.shape[0])
    keep = row >= 0
    sums = torch.zeros(len(ids), table.shape[1], dtype=torch.float64)
    sums.index_add_(0, row[keep], table[keep])  # (n_concepts, d)
    counts = torch.bincount(row[keep], minlength=len(ids)).double()  # (n_concepts,)
    return CodeEmbedding(ids, (sums / counts[:, None]).numpy())


@torch.no_grad()
def contextual_code_vectors(
    encoder: BehrtEncoder, batches, vocab, causal: bool = False
) -> CodeEmbedding:
    r"""The encoder's output state averaged over every occurrence of each concept:

    .. math:: x_c = \frac{1}{|O_c|}\sum_{(b, l) \in O_c} h_{b,l}, \qquad
        O_c = \{(b, l): \text{token } c_{b,l} \text{ is of concept } c,\ m_{b,l} = 1\}

    one ``index_add_`` per batch (no loop over tokens). Concepts that never occur are left
    out (score on :func:`ehrseq.embeddings.shared_codes`). The encoder runs in eval mode
    (no dropout) and is put back in its mode afterwards.

    Args:
        encoder: a :class:`~ehrseq.models.behrt.BehrtEncoder`.
        batches: flat batches (:func:`ehrseq.data.tensors.collate_flat`).
        vocab: its vocabulary.
        causal: read the visit-causal states instead of the bidirectional ones.

    Shapes:
        ``vectors``: ``(n_seen_concepts, d)`` float64.

    Raises:
        ValueError: a vocabulary of another size, or no concept occurring in ``batches``.
    """
    d = encoder.cfg.d_model
    ids, row = _concept_rows(vocab, encoder.cfg.vocab_size)
    sums = torch.zeros(len(ids), d, dtype=torch.float64)  # (n_concepts, d)
    counts = torch.zeros(len(ids), dtype=torch.float64)  # (n_concepts,)
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    try:
        for batch in batches:
            batch = to_device(batch, device)
            h = encoder(**encoder_inputs(batch), causal=causal).double().cpu()  # (B, L, d)
            r = row[batch["codes"].cpu()]  # (B, L) concept row, -1 special
            keep = batch["attention_mask"].cpu().bool() & (r >= 0)  # (B, L)
            sums.index_add_(0, r[keep], h[keep])
            counts.index_add_(0, r[keep], torch.ones(int(keep.sum()), dtype=torch.float64))
    finally:
        encoder.train(was_training)
    seen = counts > 0
    if not bool(seen.any()):
        raise ValueError("contextual_code_vectors: no concept occurs in the batches")
    return CodeEmbedding(ids[seen.numpy()], (sums[seen] / counts[seen, None]).numpy())


# ---------------------------------------------------------------------------------------------
# Patients and the survival task
# ---------------------------------------------------------------------------------------------
def patient_loader(
    encoding: FlatEncoding, batch_size: int = 64, shuffle: bool = False, seed: int = 0
) -> DataLoader:
    """Flat batches of ``encoding`` (e.g. ``task.encoding.select(persons)``), bucketed by
    length as :meth:`ehrseq.data.task.SurvivalTask.loader` does."""
    ds = SequenceDataset(encoding)
    sampler = LengthBucketSampler(ds.lengths, batch_size, shuffle=shuffle, seed=seed)
    return DataLoader(ds, batch_sampler=sampler, collate_fn=collate_flat)


@torch.no_grad()
def encode_patients(
    encoder: BehrtEncoder, encoding: FlatEncoding, batch_size: int = 256
) -> np.ndarray:
    r"""Each patient's :func:`mean_pool` of the encoder's (bidirectional) output states, in
    the order of ``encoding.person_ids``.

    Shapes:
        output ``(len(encoding), d)`` float64.
    """
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    out, who = [], []
    try:
        for batch in patient_loader(encoding, batch_size):
            batch = to_device(batch, device)
            h = encoder(**encoder_inputs(batch), causal=False)  # (B, L, d)
            out.append(mean_pool(h, batch["attention_mask"]).double().cpu())  # (B, d)
            who.append(batch["person_ids"].cpu())
    finally:
        encoder.train(was_training)
    order = pd.Index(torch.cat(who).numpy()).get_indexer(encoding.person_ids)
    return torch.cat(out).numpy()[order]


def cox_curves(
    x_train: np.ndarray,
    x_test: np.ndarray,
    protocol: SurvivalProtocol,
    penalizer: float = 0.3,
) -> np.ndarray:
    r"""Test survival curves of a ridge Cox model fitted on the training patient vectors
    (:class:`ehrseq.baselines.CoxBaseline`): :math:`S(t \mid x) = S_0(t)^{\exp(\beta^\top z)}`,
    :math:`z` the standardised vector, read at ``protocol.times``.

    Args:
        x_train: rows aligned with ``protocol.durations_train`` / ``events_train``.
        x_test: rows aligned with ``protocol.durations`` / ``events``.
        protocol: the test labels and time grid.
        penalizer: ridge penalty.

    Shapes:
        x_train ``(n_train, d)``, x_test ``(n_test, d)``; output ``(n_test, K)`` in [0, 1].

    Raises:
        ValueError: rows that do not match the protocol's patients, or widths that differ.
    """
    if len(x_train) != len(protocol.durations_train) or len(x_test) != len(protocol.durations):
        raise ValueError(
            f"cox_curves: {len(x_train)} training and {len(x_test)} test rows for a protocol "
            f"of {len(protocol.durations_train)} and {len(protocol.durations)} patients"
        )
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"cox_curves: widths {x_train.shape[1]} and {x_test.shape[1]} differ")
    columns = [f"h{k}" for k in range(x_train.shape[1])]
    cox = CoxBaseline(penalizer=penalizer, min_share=0.0).fit(
        pd.DataFrame(x_train, columns=columns),
        protocol.durations_train,
        protocol.events_train,
    )
    surv = cox.predict_survival(pd.DataFrame(x_test, columns=columns), protocol.times)
    return np.clip(surv, 0.0, 1.0)  # (n_test, K)
