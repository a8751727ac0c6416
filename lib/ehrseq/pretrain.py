r"""Self-supervised pretraining of a BEHRT encoder: masked codes and next-visit codes.

Two objectives, trained with :func:`ehrseq.train.fit` through the step function
:class:`PretrainObjective`:

**Masked-code modelling** (BERT's MLM, BEHRT's pretraining). :func:`mask_codes` picks 15 % of
the real, non-special tokens; of those, 80 % become ``[MASK]``, 10 % a random non-special code,
10 % stay as they are. The encoder (bidirectional) predicts the original code at the picked
positions only:

.. math:: \mathcal L_\text{MLM} = -\frac{1}{|M|}\sum_{(b,l)\in M} \log p_\theta(c_{b,l} \mid \tilde c_b)

Only the codes are replaced: age, visit, position, time and domain stay, so the domain
embedding tells the model the type of a hidden code (a hint; switch ``use_domain`` off to
remove it). The output layer can share the code-embedding matrix (``tie_weights``).

**Next-visit prediction** (multi-label, as in Doctor AI). For each visit :math:`t` with a
successor, the hidden state summarising visits :math:`\le t` predicts the *set* of codes of
visit :math:`t+1`, with a binary cross-entropy per vocabulary entry:

.. math:: \mathcal L_\text{NV} = \frac{1}{|P|\,|V|} \sum_{(b,t)\in P} \sum_{c\in V}
          \text{BCE}\big(\sigma(W z_{b,t})_c,\; y_{b,t+1,c}\big)

The encoder runs with the visit-causal mask (always, whatever its config, or the targets would
leak), so :math:`z_{b,t}` sees visits :math:`\le t` only. :math:`z_{b,t}` is, by ``pool``:

- ``"last"`` (default): the hidden state of the last token of visit :math:`t` -- the ``[SEP]``
  that closes it in the flat batch; under the causal mask it reads the whole visit.
- ``"mean"``: the mean of the hidden states of the tokens of visit :math:`t`.

**Schedules** (:func:`pretrain`): ``"mlm"`` or ``"next_visit"`` alone; ``"joint"``, one
step minimising :math:`w_1\mathcal L_\text{MLM} + w_2\mathcal L_\text{NV}` (two encoder passes
per batch: masked and bidirectional, unmasked and causal); ``"sequential"``, MLM first, then
next-visit from the MLM weights (two calls of :func:`~ehrseq.train.fit`).

**Evaluation**: :func:`evaluate_masked_codes` (top-1/top-10 accuracy on masked positions
against the code-frequency baseline) and :func:`evaluate_next_visit` (recall@k against the
most-frequent-codes baseline); per masked position, :func:`masked_code_ranks` and
:func:`frequency_rank` (for paired intervals over patients). Next-visit prediction against
the baselines that repeat the patient's own record, and a head that can copy from it
(passed as ``next_visit_head``): :mod:`ehrseq.next_visit`.

Special token ids are arguments (:class:`TokenIds`), so this module does not depend on how the
vocabulary is built; :meth:`TokenIds.from_vocab` reads them from an
:class:`ehrseq.data.vocab.Vocab`.

Recipe (``enc = encode(sequences, vocab)`` with ``add_cls=True, add_sep=True`` sequences)::

    ids = TokenIds.from_vocab(vocab)
    cfg = BehrtConfig.from_vocab(vocab, d_model=128, n_layers=4, n_heads=4, d_ff=512)
    model = BehrtForPretraining(BehrtEncoder(cfg), tie_weights=True, pool="last")
    ds = SequenceDataset(enc)
    train_loader = DataLoader(ds, batch_sampler=LengthBucketSampler(ds.lengths, 32),
                              collate_fn=collate_flat)
    results = pretrain(model, train_loader, val_loader, ids,
                       TrainConfig(epochs=10, lr=5e-4, out_dir=run_dir, resume=True),
                       schedule="joint")
    counts = code_counts(train_loader, ids)  # how often each id occurs in training sequences
    evaluate_masked_codes(model, val_loader, ids, counts=counts)   # top1, top10, baselines
    evaluate_next_visit(model, val_loader, ids, counts=counts)     # recall@10, baseline
    encoder = model.encoder                                        # to fine-tune

The same with :func:`~ehrseq.train.fit` directly, stopping on validation top-1:
``fit(model, train_loader, val_loader, PretrainObjective(ids, "mlm"), TrainConfig(...,
monitor="val_top1", mode="max", patience=3, find_unused_parameters=True), eval_fn=lambda m,
loader: evaluate_masked_codes(m, loader, ids, counts=counts))``.

References:
    Devlin et al., *BERT* (NAACL 2019); Li et al., *BEHRT* (Sci. Rep. 2020); Choi et al.,
    *Doctor AI: predicting clinical events via recurrent neural networks* (MLHC 2016).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ehrseq.masking import bert_mask
from ehrseq.models.behrt import BehrtEncoder, encoder_inputs
from ehrseq.models.survival_head import pool_visits
from ehrseq.train import FitResult, TrainConfig, fit, to_device

__all__ = [
    "IGNORE_INDEX",
    "TokenIds",
    "mask_codes",
    "mlm_loss",
    "next_visit_targets",
    "next_visit_loss",
    "MaskedCodeHead",
    "BehrtForPretraining",
    "PretrainObjective",
    "pretrain",
    "code_counts",
    "code_domains",
    "evaluate_masked_codes",
    "evaluate_next_visit",
    "masked_code_ranks",
    "frequency_rank",
    "history_table",
]

IGNORE_INDEX = -100  # label of positions that are not predicted (PyTorch's cross-entropy default)


@dataclass(frozen=True)
class TokenIds:
    """The vocabulary facts pretraining needs.

    Attributes:
        vocab_size: number of ids.
        pad_id, mask_id, cls_id, sep_id: ids of ``[PAD]``, ``[MASK]``, ``[CLS]``, ``[SEP]``.
        special_ids: every id that is never masked, predicted or used as a random
            replacement (the four above, ``[UNK]``, ...).

    Raises:
        ValueError: ``mask_id == pad_id``, an id outside the vocabulary, one of the four not
        in ``special_ids``, or no non-special id left.
    """

    vocab_size: int
    pad_id: int
    mask_id: int
    cls_id: int
    sep_id: int
    special_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "special_ids", tuple(sorted({int(i) for i in self.special_ids})))
        named = {
            "pad_id": self.pad_id,
            "mask_id": self.mask_id,
            "cls_id": self.cls_id,
            "sep_id": self.sep_id,
        }
        if self.mask_id == self.pad_id:
            raise ValueError(
                f"mask_id and pad_id are both {self.pad_id}: [MASK] must differ from [PAD]"
            )
        for name, i in named.items():
            if not 0 <= i < self.vocab_size:
                raise ValueError(
                    f"{name} = {i} is outside the vocabulary (0..{self.vocab_size - 1})"
                )
            if i not in self.special_ids:
                raise ValueError(f"{name} = {i} is not in special_ids {self.special_ids}")
        if any(not 0 <= i < self.vocab_size for i in self.special_ids):
            raise ValueError(f"special_ids {self.special_ids} go outside the vocabulary")
        if len(self.special_ids) >= self.vocab_size:
            raise ValueError("the vocabulary has no non-special token")

    @classmethod
    def from_vocab(cls, vocab) -> TokenIds:
        """From an :class:`ehrseq.data.vocab.Vocab` (anything with ``len()``, ``stoi`` and
        ``itos``): the special ids are the bracketed tokens ``[PAD]``, ``[UNK]``, ...."""
        special = [i for i, s in enumerate(vocab.itos) if s.startswith("[") and s.endswith("]")]
        s = vocab.stoi
        return cls(len(vocab), s["[PAD]"], s["[MASK]"], s["[CLS]"], s["[SEP]"], tuple(special))

    def special_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.tensor(self.special_ids, dtype=torch.long, device=device)

    def regular_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The non-special ids, ascending."""
        keep = torch.ones(self.vocab_size, dtype=torch.bool)
        keep[list(self.special_ids)] = False
        return keep.nonzero().flatten().to(device)


# ---------------------------------------------------------------------------------------------
# Masked-code modelling
# ---------------------------------------------------------------------------------------------
def mask_codes(
    codes: torch.Tensor,
    attention_mask: torch.Tensor,
    ids: TokenIds,
    *,
    mask_prob: float = 0.15,
    replace_prob: float = 0.8,
    random_prob: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""BERT's corruption of the codes, and the labels of the picked positions.

    A real, non-special token is picked with probability ``mask_prob``; a picked token becomes
    ``[MASK]`` with probability ``replace_prob``, a uniformly drawn non-special code with
    probability ``random_prob``, and stays itself otherwise (:func:`ehrseq.masking.bert_mask`,
    which :func:`ehrseq.medrep.text_mlm.mask_tokens` also calls).

    .. math:: \text{labels}_{b,l} = \begin{cases} c_{b,l} & (b, l)\ \text{picked} \\
              -100 & \text{otherwise} \end{cases}

    Args:
        codes: vocabulary ids.
        attention_mask: True on real tokens.
        ids: the special ids (:class:`TokenIds`).
        mask_prob, replace_prob, random_prob: BERT's 0.15, 0.8, 0.1.
        generator: a ``torch.Generator`` on ``codes.device`` for reproducible masks; None uses
            the global RNG (which :func:`~ehrseq.train.fit` checkpoints).

    Returns:
        ``(masked_codes, labels)``.

    Shapes:
        codes, attention_mask: ``(B, L)``; both outputs ``(B, L)`` long.

    Raises:
        ValueError: shapes differ or probabilities outside [0, 1] (``replace_prob +
        random_prob <= 1``).
    """
    device = codes.device
    return bert_mask(
        codes,
        attention_mask,
        ids.special_tensor(device),
        ids.regular_tensor(device),
        ids.mask_id,
        mask_prob=mask_prob,
        replace_prob=replace_prob,
        random_prob=random_prob,
        generator=generator,
        name="codes",
    )


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Mean cross-entropy over the positions whose label is not -100 (0 when there are none).

    .. math:: \mathcal L = -\frac{1}{|M|}\sum_{i \in M} \log \operatorname{softmax}(z_i)_{y_i}

    Shapes:
        logits: ``(..., V)``; labels: ``(...)``; output ``()``.
    """
    logits = logits.reshape(-1, logits.shape[-1]).float()  # (N, V)
    labels = labels.reshape(-1)  # (N,)
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"{logits.shape[0]} logit rows but {labels.shape[0]} labels")
    if not bool((labels != IGNORE_INDEX).any()):
        return logits.sum() * 0.0  # keeps the graph (and DDP) happy
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)


# ---------------------------------------------------------------------------------------------
# Next-visit prediction
# ---------------------------------------------------------------------------------------------
def next_visit_targets(
    codes: torch.Tensor,
    visit_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    ids: TokenIds,
    n_visits: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Multi-hot sets of the codes of visit :math:`t+1`, for :math:`t = 1, \dots, V-1`.

    .. math:: y_{b,t,c} = \mathbb 1[\exists l:\ v_{b,l} = t + 1,\ c_{b,l} = c,\ c \notin S]

    Args:
        codes, visit_ids, attention_mask: the flat batch.
        ids: special ids (never targets).
        n_visits: V; default ``visit_ids.max()``.

    Returns:
        ``(targets, valid)``: row ``t - 1`` holds visit ``t + 1``'s codes, the target of the
        state after visit ``t``; ``valid`` is True where visit ``t + 1`` exists and has at
        least one non-special code.

    Shapes:
        inputs ``(B, L)``; targets ``(B, V - 1, vocab_size)`` float; valid ``(B, V - 1)``.
    """
    if not codes.shape == visit_ids.shape == attention_mask.shape:
        raise ValueError("codes, visit_ids and attention_mask must have the same shape")
    B, L = codes.shape
    V = int(visit_ids.max()) if n_visits is None else n_visits
    real = attention_mask.bool() & ~torch.isin(codes, ids.special_tensor(codes.device))  # (B, L)
    real &= visit_ids <= V
    multi = torch.zeros(B, V + 1, ids.vocab_size, device=codes.device)  # (B, V + 1, vocab)
    rows = torch.arange(B, device=codes.device)[:, None].expand(B, L)  # (B, L)
    multi[rows[real], visit_ids[real], codes[real]] = 1.0
    targets = multi[:, 2:]  # (B, V - 1, vocab): visits 2..V
    return targets, targets.sum(-1) > 0


def next_visit_loss(
    logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    r"""Binary cross-entropy with logits, averaged over the valid (patient, visit) pairs and
    the vocabulary (0 when no pair is valid).

    Being a mean over the vocabulary, it is about ``1 / vocab_size`` of the per-visit sum of
    the code losses, while the masked-code loss is one cross-entropy per masked token. In a
    joint schedule, ``next_visit_weight=vocab_size`` puts the two on the same footing (a
    sum over codes per visit); with a weight of 1 the masked-code loss dominates.

    Shapes:
        logits, targets: ``(B, T, vocab)``; valid: ``(B, T)``; output ``()``.
    """
    if logits.shape != targets.shape or valid.shape != logits.shape[:2]:
        raise ValueError(
            f"logits {tuple(logits.shape)}, targets {tuple(targets.shape)}, valid {tuple(valid.shape)}"
        )
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[valid].float(), targets[valid])


# ---------------------------------------------------------------------------------------------
# Heads and the pretraining model
# ---------------------------------------------------------------------------------------------
class MaskedCodeHead(nn.Module):
    r"""BERT's prediction head: :math:`z = W_\text{out}\,\text{LN}(\text{GELU}(W h)) + b`.

    Args:
        d_model: width.
        vocab_size: output size.
        layer_norm_eps: LayerNorm epsilon.

    Shapes:
        h: ``(..., d)``; output ``(..., vocab_size)``.
    """

    def __init__(self, d_model: int, vocab_size: int, layer_norm_eps: float = 1e-5):
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.decoder = nn.Linear(d_model, vocab_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(F.gelu(self.dense(h))))


class BehrtForPretraining(nn.Module):
    """A :class:`~ehrseq.models.behrt.BehrtEncoder` with a masked-code head and a next-visit head.

    Call it with the flat batch and the task (one call per step, so DistributedDataParallel
    sees one forward):

    - ``task="mlm"`` needs ``batch["masked_codes"]`` and ``batch["mlm_labels"]`` (from
      :func:`mask_codes`); returns ``mlm_logits`` at the picked positions only, ``(N, V)``.
    - ``task="next_visit"`` returns ``next_visit_logits`` ``(B, V_max, vocab)`` (row ``t - 1``:
      the state after visit ``t``) and ``visit_exists`` ``(B, V_max)``.
    - ``task="joint"`` returns all three.

    Args:
        encoder: the encoder to pretrain (kept as ``self.encoder`` for fine-tuning later).
        tie_weights: share the masked-code output matrix with the code embedding.
        pool: next-visit summary of a visit, ``"last"`` or ``"mean"``
            (:func:`ehrseq.models.survival_head.pool_visits`).
        mlm_causal: run masked-code modelling with the visit-causal mask too (default: the
            bidirectional encoder of BERT/BEHRT).
        next_visit_head: the next-visit head; default a linear layer on the pooled state. A
            head with ``reads_history = True`` (:class:`ehrseq.next_visit.HistoryCopyHead`)
            is called as ``head(pooled, batch)`` and may read the batch's codes up to each
            visit; any other as ``head(pooled)``.
    """

    def __init__(
        self,
        encoder: BehrtEncoder,
        tie_weights: bool = True,
        pool: Literal["last", "mean"] = "last",
        mlm_causal: bool = False,
        next_visit_head: nn.Module | None = None,
    ):
        super().__init__()
        if pool not in ("last", "mean"):
            raise ValueError(f"pool = {pool!r}: expected 'last' or 'mean'")
        cfg = encoder.cfg
        self.encoder, self.pool, self.mlm_causal = encoder, pool, mlm_causal
        self.mlm_head = MaskedCodeHead(cfg.d_model, cfg.vocab_size, cfg.layer_norm_eps)
        initialise = [self.mlm_head.dense, self.mlm_head.decoder]
        if next_visit_head is None:
            next_visit_head = nn.Linear(cfg.d_model, cfg.vocab_size)
            initialise.append(next_visit_head)
        self.next_visit_head = next_visit_head
        for m in initialise:
            nn.init.normal_(m.weight, std=cfg.init_std)
            nn.init.zeros_(m.bias)
        if tie_weights:
            self.mlm_head.decoder.weight = self.encoder.embeddings.code.weight

    def forward(self, batch: dict, task: Literal["mlm", "next_visit", "joint"] = "mlm") -> dict:
        if task not in ("mlm", "next_visit", "joint"):
            raise ValueError(f"task = {task!r}: expected 'mlm', 'next_visit' or 'joint'")
        inputs = encoder_inputs(batch)
        out: dict[str, torch.Tensor] = {}
        if task in ("mlm", "joint"):
            if "masked_codes" not in batch or "mlm_labels" not in batch:
                raise ValueError(
                    "task 'mlm' needs batch['masked_codes'] and batch['mlm_labels'] (mask_codes)"
                )
            h = self.encoder(
                **{**inputs, "codes": batch["masked_codes"]}, causal=self.mlm_causal
            )  # (B, L, d)
            picked = batch["mlm_labels"] != IGNORE_INDEX  # (B, L)
            out["mlm_logits"] = self.mlm_head(h[picked])  # (N, V)
        if task in ("next_visit", "joint"):
            h = self.encoder(**inputs, causal=True)  # (B, L, d)
            pooled, exists = pool_visits(
                h, batch["visit_ids"], batch["attention_mask"], how=self.pool
            )  # (B, V, d), (B, V)
            if getattr(self.next_visit_head, "reads_history", False):
                logits = self.next_visit_head(pooled, batch)  # (B, V, vocab)
            else:
                logits = self.next_visit_head(pooled)  # (B, V, vocab)
            out["next_visit_logits"] = logits
            out["visit_exists"] = exists  # (B, V)
        return out


class PretrainObjective:
    """The step function of pretraining: ``loss, metrics = objective(model, batch)``.

    Masks the batch (:func:`mask_codes`), runs ``model(batch, task=...)`` once and returns
    ``mlm_weight * L_MLM + next_visit_weight * L_NV`` (only the terms of ``objective``) with
    the metrics ``mlm_loss``, ``mlm_acc`` (top-1 on the masked positions) and ``nv_loss``.
    In training the masks come from the global RNG (checkpointed by :func:`fit`); in eval mode
    from a generator seeded with ``eval_seed`` on every call, so validation losses of
    different epochs are computed on the same masks.

    Args:
        ids: special ids.
        objective: ``"mlm"``, ``"next_visit"`` or ``"joint"``.
        mlm_weight, next_visit_weight: weights of the joint sum (see :func:`next_visit_loss`
            for the scale of the next-visit term).
        mask_prob, replace_prob, random_prob: see :func:`mask_codes`.
        eval_seed: seed of the validation masks.
    """

    def __init__(
        self,
        ids: TokenIds,
        objective: Literal["mlm", "next_visit", "joint"] = "mlm",
        *,
        mlm_weight: float = 1.0,
        next_visit_weight: float = 1.0,
        mask_prob: float = 0.15,
        replace_prob: float = 0.8,
        random_prob: float = 0.1,
        eval_seed: int = 1234,
    ):
        if objective not in ("mlm", "next_visit", "joint"):
            raise ValueError(f"objective = {objective!r}: expected 'mlm', 'next_visit' or 'joint'")
        self.ids, self.objective = ids, objective
        self.mlm_weight, self.next_visit_weight = mlm_weight, next_visit_weight
        self.mask_kw = dict(mask_prob=mask_prob, replace_prob=replace_prob, random_prob=random_prob)
        self.eval_seed = eval_seed

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        batch = dict(batch)
        codes = batch["codes"]
        if self.objective in ("mlm", "joint"):
            gen = None
            if not model.training:
                gen = torch.Generator(device=codes.device).manual_seed(self.eval_seed)
            batch["masked_codes"], batch["mlm_labels"] = mask_codes(
                codes, batch["attention_mask"], self.ids, generator=gen, **self.mask_kw
            )
        out = model(batch, task=self.objective)
        loss = codes.new_zeros((), dtype=torch.float32)
        metrics: dict[str, torch.Tensor] = {}
        if "mlm_logits" in out:
            labels = batch["mlm_labels"][batch["mlm_labels"] != IGNORE_INDEX]  # (N,)
            mlm = mlm_loss(out["mlm_logits"], labels)
            loss = loss + self.mlm_weight * mlm
            metrics["mlm_loss"] = mlm.detach()
            if len(labels):  # a batch without masked tokens reports no accuracy
                metrics["mlm_acc"] = (out["mlm_logits"].argmax(-1) == labels).float().mean()
        if "next_visit_logits" in out:
            logits = out["next_visit_logits"]  # (B, V, vocab)
            targets, valid = next_visit_targets(
                codes, batch["visit_ids"], batch["attention_mask"], self.ids, logits.shape[1]
            )
            valid &= out["visit_exists"][:, :-1]
            nv = next_visit_loss(logits[:, :-1], targets, valid)
            loss = loss + self.next_visit_weight * nv
            metrics["nv_loss"] = nv.detach()
        return loss, metrics


def pretrain(
    model: BehrtForPretraining,
    train_loader,
    val_loader,
    ids: TokenIds,
    config: TrainConfig,
    *,
    schedule: Literal["mlm", "next_visit", "joint", "sequential"] = "mlm",
    mlm_weight: float = 1.0,
    next_visit_weight: float = 1.0,
    next_visit_config: TrainConfig | None = None,
    **objective_kw,
) -> dict[str, FitResult]:
    """Pretrain ``model`` with :func:`~ehrseq.train.fit` on one schedule.

    Args:
        model: a :class:`BehrtForPretraining`.
        train_loader, val_loader: flat batches (:func:`ehrseq.data.tensors.collate_flat`).
        ids: special ids.
        config: training settings (of the MLM phase for ``"sequential"``).
        schedule: ``"mlm"``, ``"next_visit"``, ``"joint"`` (weighted sum each step) or
            ``"sequential"`` (MLM with ``config``, then next-visit with
            ``next_visit_config``, default ``config``; ``out_dir`` gets one sub-folder per
            phase, ``mlm`` and ``next_visit``).
        mlm_weight, next_visit_weight: weights of ``"joint"``.
        next_visit_config: settings of the second phase of ``"sequential"``.
        **objective_kw: passed to :class:`PretrainObjective` (mask probabilities, eval seed).

    Returns:
        ``{phase: FitResult}``: one phase (named like the schedule) or ``mlm`` then
        ``next_visit``.
    """
    phases = {
        "mlm": [("mlm", config)],
        "next_visit": [("next_visit", config)],
        "joint": [("joint", config)],
        "sequential": [("mlm", config), ("next_visit", next_visit_config or config)],
    }
    if schedule not in phases:
        raise ValueError(f"schedule = {schedule!r}: expected one of {sorted(phases)}")
    results: dict[str, FitResult] = {}
    for name, cfg in phases[schedule]:
        changes = {"find_unused_parameters": name != "joint" or cfg.find_unused_parameters}
        if schedule == "sequential" and cfg.out_dir is not None:
            changes["out_dir"] = Path(cfg.out_dir) / name
        changes["desc"] = f"{cfg.desc} {name}" if schedule == "sequential" else cfg.desc
        objective = PretrainObjective(
            ids, name, mlm_weight=mlm_weight, next_visit_weight=next_visit_weight, **objective_kw
        )
        results[name] = fit(
            model, train_loader, val_loader, objective, dataclasses.replace(cfg, **changes)
        )
    return results


# ---------------------------------------------------------------------------------------------
# Evaluation against frequency baselines
# ---------------------------------------------------------------------------------------------
def code_counts(batches: Iterable[dict], ids: TokenIds) -> torch.Tensor:
    """How often each code occurs among the real non-special tokens of ``batches``.

    These are the frequencies the baselines need. ``Vocab.counts`` differ for measurements: a
    value-free measurement token counts every row of its concept there, including the rows
    that encode to a decile token, and histories are truncated after the vocabulary is built.

    Shapes:
        output ``(vocab_size,)`` float64, zero for special ids.
    """
    counts = torch.zeros(ids.vocab_size, dtype=torch.float64)
    for batch in batches:
        codes, am = batch["codes"].cpu(), batch["attention_mask"].cpu().bool()
        real = am & ~torch.isin(codes, ids.special_tensor())
        counts += torch.bincount(codes[real], minlength=ids.vocab_size).double()
    counts[list(ids.special_ids)] = 0
    return counts


def _ranked_regular(counts: torch.Tensor, ids: TokenIds) -> torch.Tensor:
    """Non-special ids from most to least frequent (ties: lower id first)."""
    if counts.shape != (ids.vocab_size,):
        raise ValueError(
            f"code_counts must have shape ({ids.vocab_size},), got {tuple(counts.shape)}"
        )
    regular = ids.regular_tensor()
    order = torch.sort(counts.double().cpu()[regular], descending=True, stable=True).indices
    return regular[order]


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def code_domains(loader: Iterable[dict], vocab_size: int) -> torch.Tensor:
    """``(vocab_size,)`` long: the domain id each code carries in ``loader`` (0 if never seen).

    A code belongs to one domain (condition, drug, measurement...), so the last batch that
    holds it decides; the map lets a baseline guess within the domain of a hidden token.
    """
    domain = torch.zeros(vocab_size, dtype=torch.long)
    for batch in loader:
        real = batch["attention_mask"]
        domain[batch["codes"][real]] = batch["domain_ids"][real]
    return domain


@torch.no_grad()
def evaluate_masked_codes(
    model: BehrtForPretraining,
    loader,
    ids: TokenIds,
    *,
    counts: torch.Tensor | None = None,
    ks: Sequence[int] = (1, 10),
    seed: int = 0,
) -> dict[str, float]:
    r"""Top-k accuracy of masked-code prediction, against predicting the most frequent codes.

    .. math:: \text{top-}k = \frac{1}{|M|}\sum_{i\in M} \mathbb 1[y_i \in \text{top}_k(z_i)],
              \qquad \text{baseline: } \text{top}_k = \text{the } k \text{ most frequent codes}

    Masks come from a generator seeded with ``seed`` (the same masks for every model);
    special ids are never predicted.

    Args:
        model: a :class:`BehrtForPretraining` (set to eval mode here).
        loader: flat batches.
        ids: special ids.
        counts: ``(vocab_size,)`` code frequencies of the **training** data
            (:func:`code_counts`); None counts ``loader`` itself (slightly optimistic).
        ks: the k of top-k.
        seed: mask seed.

    Returns:
        ``{"top1": ..., "top10": ..., "baseline_top1": ..., "baseline_top10": ..., "loss": ...,
        "n_masked": ...}``, where ``loss`` is the mean cross-entropy of the true codes (nats per
        masked code, over the full output layer, as in training).
    """
    model.eval()
    device = _model_device(model)
    counts = code_counts(loader, ids) if counts is None else counts
    ranked = _ranked_regular(counts, ids).to(device)
    special = ids.special_tensor(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    hits = dict.fromkeys(ks, 0.0)
    base = dict.fromkeys(ks, 0.0)
    loss = 0.0
    n = 0
    for batch in loader:
        batch = to_device(batch, device)
        batch["masked_codes"], batch["mlm_labels"] = mask_codes(
            batch["codes"], batch["attention_mask"], ids, generator=gen
        )
        logits = model(batch, task="mlm")["mlm_logits"].float()  # (N, V)
        labels = batch["mlm_labels"][batch["mlm_labels"] != IGNORE_INDEX]  # (N,)
        loss += F.cross_entropy(logits, labels, reduction="sum").item()
        logits[:, special] = float("-inf")
        for k in ks:
            top = logits.topk(min(k, logits.shape[1]), dim=-1).indices  # (N, k)
            hits[k] += (top == labels[:, None]).any(-1).sum().item()
            base[k] += torch.isin(labels, ranked[:k]).sum().item()
        n += len(labels)
    if n == 0:
        raise ValueError("no masked positions: the loader holds no real non-special tokens")
    out = {f"top{k}": hits[k] / n for k in ks}
    out.update({f"baseline_top{k}": base[k] / n for k in ks})
    out["loss"] = loss / n
    out["n_masked"] = n
    return out


@torch.no_grad()
def masked_code_ranks(
    model: BehrtForPretraining, loader, ids: TokenIds, *, seed: int = 0
) -> pd.DataFrame:
    """The rank of the true code at every masked position (1 = the model's first guess).

    The masks are those of :func:`evaluate_masked_codes` with the same ``seed``, so
    ``(ranks["rank"] <= k).mean()`` is its top-k; one row per masked token, with its patient,
    for intervals that resample patients.

    Returns:
        columns ``person_id``, ``label`` (the true id), ``domain_id`` (of the position) and
        ``rank``: 1 + the number of non-special codes scored above the true one.
    """
    model.eval()
    device = _model_device(model)
    special = ids.special_tensor(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    parts = []
    for batch in loader:
        batch = to_device(batch, device)
        batch["masked_codes"], batch["mlm_labels"] = mask_codes(
            batch["codes"], batch["attention_mask"], ids, generator=gen
        )
        picked = batch["mlm_labels"] != IGNORE_INDEX  # (B, L)
        logits = model(batch, task="mlm")["mlm_logits"].float()  # (N, V)
        logits[:, special] = float("-inf")
        labels = batch["mlm_labels"][picked]  # (N,)
        true = logits.gather(1, labels[:, None])  # (N, 1)
        rows = torch.arange(len(picked), device=device)[:, None].expand_as(picked)[picked]
        parts.append(
            pd.DataFrame(
                {
                    "person_id": batch["person_ids"][rows].cpu().numpy(),
                    "label": labels.cpu().numpy(),
                    "domain_id": batch["domain_ids"][picked].cpu().numpy(),
                    "rank": (1 + (logits > true).sum(-1)).cpu().numpy(),
                }
            )
        )
    if not parts or not sum(len(p) for p in parts):
        raise ValueError("no masked positions: the loader holds no real non-special tokens")
    return pd.concat(parts, ignore_index=True)


def frequency_rank(
    counts: torch.Tensor,
    ids: TokenIds,
    labels: torch.Tensor,
    *,
    code_group: torch.Tensor | None = None,
    label_group: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""The rank of each label in the frequency baseline's list (1 = most frequent).

    .. math:: r(y) = 1 + |\{c \notin S:\ g(c) = g_y,\ (n_c, -c) > (n_y, -y)\}|

    The list is the non-special codes by descending training count (ties: lower id first,
    the order of :func:`evaluate_masked_codes`' baseline). With groups (e.g. the domain of
    each code, and the domain of each masked position) only the codes of the label's group
    compete: the domain-frequency baseline.

    Shapes:
        counts, code_group: ``(vocab,)``; labels, label_group: ``(N,)``; output ``(N,)``.
    """
    if counts.shape != (ids.vocab_size,):
        raise ValueError(f"counts must have shape ({ids.vocab_size},), got {tuple(counts.shape)}")
    if (code_group is None) != (label_group is None):
        raise ValueError("pass both code_group and label_group, or neither")
    counts, labels = counts.double().cpu(), labels.long().cpu()
    regular = torch.ones(ids.vocab_size, dtype=torch.bool)
    regular[list(ids.special_ids)] = False
    ids_all = torch.arange(ids.vocab_size)
    ranks = []
    for chunk in labels.split(4096):
        n_y = counts[chunk][:, None]  # (n, 1)
        ahead = (counts[None] > n_y) | ((counts[None] == n_y) & (ids_all[None] < chunk[:, None]))
        ahead &= regular[None]  # (n, vocab)
        if code_group is not None:
            start = len(torch.cat(ranks)) if ranks else 0
            g = label_group.long().cpu()[start : start + len(chunk)]
            ahead &= code_group.long().cpu()[None] == g[:, None]
        ranks.append(1 + ahead.sum(-1))
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)


@torch.no_grad()
def evaluate_next_visit(
    model: BehrtForPretraining,
    loader,
    ids: TokenIds,
    *,
    counts: torch.Tensor | None = None,
    k: int = 10,
) -> dict[str, float]:
    r"""Recall@k of the next visit's codes, against predicting the k most frequent codes.

    .. math:: \text{recall@}k = \frac{1}{|P|}\sum_{(b,t)\in P}
              \frac{|\text{top}_k(z_{b,t}) \cap Y_{b,t+1}|}{|Y_{b,t+1}|}

    (Doctor AI's definition: hits over the number of true codes, so a visit with more than
    ``k`` codes cannot reach 1.)

    Args:
        model: a :class:`BehrtForPretraining` (set to eval mode here).
        loader: flat batches.
        ids: special ids.
        counts: ``(vocab_size,)`` training code frequencies; None counts ``loader``.
        k: how many codes are predicted.

    Returns:
        ``{"recall@k": ..., "baseline_recall@k": ..., "n_pairs": ...}``.
    """
    model.eval()
    device = _model_device(model)
    counts = code_counts(loader, ids) if counts is None else counts
    ranked = _ranked_regular(counts, ids).to(device)
    base_set = torch.zeros(ids.vocab_size, device=device)
    base_set[ranked[:k]] = 1.0
    special = ids.special_tensor(device)
    total, total_base, n = 0.0, 0.0, 0
    for batch in loader:
        batch = to_device(batch, device)
        out = model(batch, task="next_visit")
        logits = out["next_visit_logits"][:, :-1].float()  # (B, V - 1, vocab)
        targets, valid = next_visit_targets(
            batch["codes"], batch["visit_ids"], batch["attention_mask"], ids, logits.shape[1] + 1
        )
        valid &= out["visit_exists"][:, :-1]
        logits, targets = logits[valid], targets[valid]  # (P, vocab)
        logits[:, special] = float("-inf")
        top = logits.topk(min(k, logits.shape[-1]), dim=-1).indices  # (P, k)
        n_true = targets.sum(-1)  # (P,)
        total += (targets.gather(1, top).sum(-1) / n_true).sum().item()
        total_base += ((targets * base_set).sum(-1) / n_true).sum().item()
        n += int(valid.sum())
    if n == 0:
        raise ValueError("no (visit, next visit) pairs: every patient has a single visit")
    return {f"recall@{k}": total / n, f"baseline_recall@{k}": total_base / n, "n_pairs": n}


def history_table(results: dict[str, FitResult]) -> pd.DataFrame:
    """The per-epoch histories of :func:`pretrain`'s phases in one frame, with a ``phase`` column."""
    return pd.concat(
        [r.history.assign(phase=name) for name, r in results.items()], ignore_index=True
    )
