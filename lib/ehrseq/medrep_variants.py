r"""Frozen MedRep vectors in three foundation-model variants, and binary outcomes beside
the survival one.

MedRep (Kim et al., arXiv 2504.08329) puts its frozen concept vectors into BEHRT,
BEHRT-DE (BEHRT with a domain embedding; CDM-BERT's input) and Med-BERT, each against
the same model with learned embeddings, and scores them on binary outcomes (AUROC,
AUPRC). This module
sits above the model, training and metric layers (the :mod:`ehrseq.medrep` package sits
below them), and holds what the chapter "MedRep: concept vectors that travel between
sites" needs of them:

- :func:`variant_config`: the encoder config of each variant. **BEHRT** sums code, age,
  visit, position and time-gap embeddings; **CDM-BERT-like** adds the OMOP domain of
  each token (condition, drug, procedure, measurement, ...):
  :math:`x_{b,l} = \dots + E_\text{domain}[o_{b,l}]`; **Med-BERT-like** sums only code,
  visit and position (no age, no time, no domain), as Med-BERT (Rasmy et al., npj Digit.
  Med. 4, 86, 2021) does, and is pretrained first (:func:`medbert_pretrain`).
- :class:`MedBertPretraining`: Med-BERT's two pretraining heads on one encoder, masked
  codes and prolonged length of stay (a stay of more than 7 days in the history, from
  the mean token state):

  .. math:: \mathcal L = \mathcal L_\text{MLM} + \mathrm{BCE}\bigl(w^\top \bar h_b + c,\
      y^\text{PLOS}_b\bigr), \qquad \bar h_b = \frac{1}{|L_b|}\sum_{l \in L_b} h_{b,l}

- :func:`patient_states`: the state a survival model's bin head reads (the mean state of
  the last visit), for every patient of a split: what a cheap second head (a logistic
  probe, :func:`probe_scores`) reads to predict a binary outcome from an encoder trained
  for the survival one.
- :func:`finetune_binary`: the costly second head, as the paper scores its binary
  outcomes: a copy of a trained survival model's encoder under a fresh one-logit head
  (:func:`binary_head_model`), fine-tuned end to end by :func:`ehrseq.train.fit` on the
  labelled training patients with :func:`binary_loss`, and read by
  :func:`predict_binary`.
- :func:`binary_interval` and :func:`binary_difference`: AUROC or AUPRC averaged over
  seeds, with a percentile bootstrap interval over test patients, alone or paired.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from ehrseq.data.task import SurvivalTask
from ehrseq.data.vocab import Vocab
from ehrseq.evaluate import difference_row
from ehrseq.metrics import auprc, auroc, bootstrap_ci
from ehrseq.models import BehrtConfig, SurvivalModel
from ehrseq.models.behrt import encoder_inputs
from ehrseq.models.survival_head import BinHazardHead
from ehrseq.pretrain import MaskedCodeHead, TokenIds, mask_codes, mlm_loss
from ehrseq.runs import predict_survival
from ehrseq.train import TrainConfig, fit, to_device

__all__ = [
    "VARIANTS",
    "variant_config",
    "MedBertPretraining",
    "medbert_pretrain",
    "patient_states",
    "probe_scores",
    "binary_loss",
    "binary_head_model",
    "finetune_binary",
    "predict_binary",
    "BINARY_METRICS",
    "binary_interval",
    "binary_difference",
]

#: The three foundation-model variants, by the name the chapter shows.
VARIANTS = ("BEHRT", "CDM-BERT-like", "Med-BERT-like")

#: Binary metrics by the name the chapter shows (higher is better for both).
BINARY_METRICS: dict[str, Callable[[Any, Any], float]] = {
    "AUROC": auroc,
    "AUPRC": auprc,
}


def variant_config(variant: str, vocab: Vocab, **sizes: Any) -> BehrtConfig:
    """The :class:`~ehrseq.models.BehrtConfig` of one variant, sized by ``sizes``.

    - ``"BEHRT"``: code, age, visit, position and time-gap embeddings (no domain).
    - ``"CDM-BERT-like"``: the same plus the domain embedding (``use_domain=True``).
    - ``"Med-BERT-like"``: code, visit and position only.

    Args:
        variant: one of :data:`VARIANTS`.
        vocab: the vocabulary (sets ``vocab_size``).
        sizes: ``d_model``, ``n_layers``, ... passed on.

    Raises:
        ValueError: for an unknown variant.
    """
    if variant == "BEHRT":
        return BehrtConfig.from_vocab(vocab, use_domain=False, **sizes)
    if variant == "CDM-BERT-like":
        return BehrtConfig.from_vocab(vocab, use_domain=True, **sizes)
    if variant == "Med-BERT-like":
        return BehrtConfig.from_vocab(
            vocab, use_domain=False, use_age=False, time_embedding="none", **sizes
        )
    raise ValueError(f"variant_config: unknown variant {variant!r}; choose from {VARIANTS}")


class MedBertPretraining(nn.Module):
    """Med-BERT's pretraining heads on an encoder: masked codes and prolonged stay.

    The masked-code head is not tied to the code embedding, so a frozen code table
    (:class:`~ehrseq.medrep.frozen.FrozenCodeEmbedding`) pretrains as well as a learned
    one.

    Args:
        encoder: a :class:`~ehrseq.models.BehrtEncoder` (kept as ``self.encoder``).

    Shapes:
        ``forward(batch)`` with ``batch["masked_codes"]`` ``(B, L)`` -> ``mlm_logits``
        ``(N, V)`` at the masked positions, ``plos_logit`` ``(B,)``.
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        cfg = encoder.cfg
        self.encoder = encoder
        self.mlm_head = MaskedCodeHead(cfg.d_model, cfg.vocab_size, cfg.layer_norm_eps)
        self.plos_head = nn.Linear(cfg.d_model, 1)
        for m in (self.mlm_head.dense, self.mlm_head.decoder, self.plos_head):
            nn.init.normal_(m.weight, std=cfg.init_std)
            nn.init.zeros_(m.bias)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        if "masked_codes" not in batch or "mlm_labels" not in batch:
            raise ValueError("MedBertPretraining needs batch['masked_codes'] and ['mlm_labels']")
        inputs = {**encoder_inputs(batch), "codes": batch["masked_codes"]}
        h = self.encoder(**inputs)  # (B, L, d)
        mask = batch["attention_mask"].to(h.dtype)[..., None]  # (B, L, 1)
        pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, d)
        picked = batch["mlm_labels"] != -100  # (B, L)
        return {
            "mlm_logits": self.mlm_head(h[picked]),  # (N, V)
            "plos_logit": self.plos_head(pooled).squeeze(-1),  # (B,)
        }


def medbert_pretrain(
    encoder: nn.Module,
    task: SurvivalTask,
    plos: pd.Series,
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    batch_size: int = 64,
    mask_prob: float = 0.15,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> pd.DataFrame:
    r"""Pretrain ``encoder`` in place with Med-BERT's two objectives on the training
    split.

    Each step corrupts the codes (:func:`ehrseq.pretrain.mask_codes`, BERT's 80/10/10)
    and lowers :math:`\mathcal L_\text{MLM} + \mathrm{BCE}_\text{PLOS}` with Adam; the
    heads are dropped afterwards, the encoder keeps what it learned.

    Args:
        encoder: the encoder to pretrain (moved to ``device`` and left there).
        task: its ``train`` split is read (never the test patients).
        plos: ``subject_id`` -> 0/1 prolonged-stay label (:func:`ehrseq.medrep.sites
            .prolonged_stay`), for every training patient.
        epochs, lr, batch_size, mask_prob: the schedule.
        seed: the batch order and the masks.

    Returns:
        one row per epoch: ``epoch``, ``mlm_loss``, ``plos_loss`` (means over steps).

    Raises:
        ValueError: if ``epochs < 1`` or a training patient has no label.
    """
    if epochs < 1:
        raise ValueError(f"medbert_pretrain: epochs = {epochs} must be >= 1")
    train_ids = task.split["train"]
    missing = pd.Index(train_ids).difference(plos.index)
    if len(missing):
        raise ValueError(
            f"medbert_pretrain: {len(missing)} training patients lack a prolonged-stay "
            f"label, e.g. {list(missing[:3])}"
        )
    model = MedBertPretraining(encoder).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    ids = TokenIds.from_vocab(task.vocab)
    gen = torch.Generator(device=device).manual_seed(seed)
    rows = []
    for epoch in range(epochs):
        model.train()
        mlm_sum = plos_sum = 0.0
        steps = 0
        for batch in task.loader("train", batch_size, hierarchical=False, seed=seed + epoch):
            batch = to_device(batch, device)
            masked, labels = mask_codes(
                batch["codes"],
                batch["attention_mask"],
                ids,
                mask_prob=mask_prob,
                generator=gen,
            )
            out = model({**batch, "masked_codes": masked, "mlm_labels": labels})
            y = plos.loc[batch["person_ids"].cpu().numpy()].to_numpy(np.float32)
            target = torch.as_tensor(y, device=device)  # (B,)
            lm = mlm_loss(out["mlm_logits"], labels[labels != -100])
            lp = F.binary_cross_entropy_with_logits(out["plos_logit"].float(), target)
            opt.zero_grad()
            (lm + lp).backward()
            opt.step()
            mlm_sum, plos_sum, steps = (
                mlm_sum + lm.item(),
                plos_sum + lp.item(),
                steps + 1,
            )
        rows.append(
            {
                "epoch": epoch + 1,
                "mlm_loss": mlm_sum / steps,
                "plos_loss": plos_sum / steps,
            }
        )
    encoder.to("cpu")
    return pd.DataFrame(rows)


@torch.no_grad()
def patient_states(
    model: nn.Module,
    task: SurvivalTask,
    split: str = "test",
    *,
    device: torch.device | str | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """The patient state a :class:`~ehrseq.models.survival_head.BinHazardHead` reads
    (the mean state of the last visit), per patient of ``split`` in the order of
    ``task.frame(split)``.

    Read with a forward pre-hook on the head's layers (``model.head.net``), so it is the
    very input of the survival head, whatever the encoder.

    Shapes:
        output ``(n_patients, d)`` float32.

    Raises:
        ValueError: if ``model.head`` has no ``net`` (not a bin head).
    """
    net = getattr(getattr(model, "head", None), "net", None)
    if net is None:
        raise ValueError("patient_states: the model has no head.net (a BinHazardHead)")
    model.eval()
    if device is None:
        device = next(model.parameters()).device
    model.to(device)
    seen: list[torch.Tensor] = []
    hook = net.register_forward_pre_hook(lambda _m, args: seen.append(args[0].float().cpu()))
    person_ids = []
    try:
        for batch in task.loader(split, batch_size, hierarchical=False):
            model(to_device(batch, device))
            person_ids.append(batch["person_ids"])
    finally:
        hook.remove()
    order = pd.Index(torch.cat(person_ids).numpy()).get_indexer(task.frame(split)["subject_id"])
    if (order < 0).any():
        raise RuntimeError(f"{int((order < 0).sum())} {split} patients were not read")
    return torch.cat(seen).numpy()[order]


def probe_scores(
    train_states: np.ndarray,
    train_labels: np.ndarray,
    *test_states: np.ndarray,
    c: float = 1.0,
) -> list[np.ndarray]:
    r"""A logistic probe: :math:`p = \sigma(w^\top z + b)` on standardised states,
    fitted (L2, inverse strength ``c``) on the training states, then scored on each
    test set.

    The cheap second head: the encoder is not touched, only :math:`(w, b)` are fitted.

    Shapes:
        train_states ``(n, d)``, train_labels ``(n,)`` 0/1; each of ``test_states``
        ``(m_i, d)`` -> a list of ``(m_i,)`` probabilities.

    Raises:
        ValueError: if the labels are not 0/1 with both classes, or the widths differ.
    """
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(train_labels)
    if y.ndim != 1 or len(y) != len(train_states) or not set(np.unique(y)) == {0, 1}:
        raise ValueError("probe_scores: train_labels must be 0/1 with both classes, one per state")
    if any(t.shape[1] != train_states.shape[1] for t in test_states):
        raise ValueError("probe_scores: the test states' width differs from the training states'")
    mean = train_states.mean(0)
    sd = train_states.std(0) + 1e-6
    fit = LogisticRegression(C=c, max_iter=1000).fit((train_states - mean) / sd, y)
    return [fit.predict_proba((t - mean) / sd)[:, 1] for t in test_states]


def binary_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Mean binary cross-entropy over the patients that have a label,

    .. math:: \ell = -\frac{1}{|K|} \sum_{b \in K} \bigl[y_b \log \sigma(x_b)
        + (1 - y_b) \log (1 - \sigma(x_b))\bigr],

    where :math:`K` holds the patients whose label is not NaN (a patient followed for less
    than the window has none). It is the hazard NLL of a single time bin
    (:func:`ehrseq.losses.hazard_nll` with every duration 0 and the label as the event),
    so a one-bin :class:`~ehrseq.models.survival_head.BinHazardHead` is a binary head.

    Args:
        logits: one logit per patient.
        labels: 0/1, NaN for no label.

    Shapes:
        logits ``(B,)`` or ``(B, 1)``, labels ``(B,)`` -> a 0-d tensor (0 with a gradient
        path when no patient of the batch has a label).

    Raises:
        ValueError: if the shapes differ or a label is neither 0, 1 nor NaN.
    """
    if logits.ndim == 2 and logits.shape[1] == 1:
        logits = logits[:, 0]  # (B, 1) -> (B,)
    if logits.shape != labels.shape:
        raise ValueError(
            f"binary_loss: {tuple(logits.shape)} logits for {tuple(labels.shape)} labels"
        )
    known = ~torch.isnan(labels)  # (B,)
    y = labels[known]  # (|K|,)
    if not bool(((y == 0) | (y == 1)).all()):
        raise ValueError("binary_loss: labels must be 0, 1 or NaN (no label)")
    if not bool(known.any()):
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[known].float(), y.float())


def binary_head_model(
    model: SurvivalModel, base_rate: float, *, dropout: float = 0.0
) -> SurvivalModel:
    r"""A copy of ``model``'s encoder under a fresh one-logit head,
    :math:`p_b = \sigma(w^\top z_b + c)` on the state the survival head read (the mean
    state of the last visit), with :math:`c = \operatorname{logit}(\text{base\_rate})`
    so that the untrained head predicts the training prevalence. ``model`` is not touched.

    Args:
        model: a trained :class:`~ehrseq.models.SurvivalModel` whose encoder has a
            ``cfg.d_model`` (a :class:`~ehrseq.models.BehrtEncoder`).
        base_rate: the share of positives among the training labels, in (0, 1).
        dropout: dropout on the state before the head.

    Shapes:
        the returned model maps a flat batch to ``logits`` ``(B, 1)``.

    Raises:
        ValueError: if ``base_rate`` is not in (0, 1) or the encoder has no
            ``cfg.d_model``.
    """
    if not 0.0 < base_rate < 1.0:
        raise ValueError(f"binary_head_model: base_rate = {base_rate} must be in (0, 1)")
    width = getattr(getattr(model.encoder, "cfg", None), "d_model", None)
    if width is None:
        raise ValueError("binary_head_model: the encoder has no cfg.d_model")
    head = BinHazardHead(width, 1, dropout=dropout, base_hazards=torch.tensor([base_rate]))
    return SurvivalModel(copy.deepcopy(model.encoder), head)


def _label_lookup(labels: pd.Series) -> Callable[[torch.Tensor], torch.Tensor]:
    def lookup(person_ids: torch.Tensor) -> torch.Tensor:
        y = labels.reindex(person_ids.cpu().numpy()).to_numpy(np.float32)  # NaN: none
        return torch.as_tensor(y, device=person_ids.device)  # (B,)

    return lookup


def finetune_binary(
    model: SurvivalModel,
    task: SurvivalTask,
    labels: pd.Series,
    config: TrainConfig,
    *,
    batch_size: int = 64,
    dropout: float = 0.0,
) -> tuple[SurvivalModel, pd.DataFrame]:
    r"""Fine-tune a copy of a trained survival model end to end for a binary outcome.

    The copy (:func:`binary_head_model`, head started at the training prevalence) trains
    with :func:`ehrseq.train.fit` on ``task``'s training batches, loss
    :func:`binary_loss` over the patients that have a label, early stopping on the
    validation split's loss; a frozen code table stays frozen (it is a buffer).

    Args:
        model: the trained survival model (copied, never changed).
        task: its ``train`` and ``val`` splits are read.
        labels: ``subject_id`` -> 0/1 for the labelled patients; a training or validation
            patient missing from it has no label and adds nothing to the loss.
        config: ``fit``'s settings (epochs, lr, patience, seed, device, ...).
        batch_size: training patients per batch.
        dropout: of the new head.

    Returns:
        ``(binary_model, history)``: the fine-tuned copy (where ``fit`` left it) and
        ``fit``'s per-epoch table.

    Raises:
        ValueError: if the labels are not 0/1, or the training patients do not hold both
            classes.
    """
    values = pd.Series(labels, dtype="float64")
    if not values.isin([0.0, 1.0]).all():
        raise ValueError("finetune_binary: labels must be 0 or 1 (leave a patient out for none)")
    train_y = values.reindex(task.split["train"]).dropna()
    if train_y.nunique() < 2:
        raise ValueError(
            f"finetune_binary: the {len(train_y)} labelled training patients do not hold "
            "both classes"
        )
    binary = binary_head_model(model, float(train_y.mean()), dropout=dropout)
    lookup = _label_lookup(values)

    def step(m: nn.Module, batch: dict) -> torch.Tensor:
        return binary_loss(m(batch).logits, lookup(batch["person_ids"]))

    seed = config.seed if config.seed is not None else 0
    loaders = (
        task.loader("train", batch_size, hierarchical=False, seed=seed),
        task.loader("val", 256, hierarchical=False),
    )
    history = fit(binary, *loaders, step, config).history
    return binary, history


def predict_binary(
    model: SurvivalModel,
    task: SurvivalTask,
    split: str = "test",
    *,
    device: torch.device | str | None = None,
) -> np.ndarray:
    r"""The probability of the outcome, :math:`p = \sigma(\text{logit}) = 1 - S(t_1)`, for
    every patient of ``split`` in the order of ``task.frame(split)``
    (:func:`ehrseq.runs.predict_survival` on the one-bin head).

    Shapes:
        output ``(n_patients,)``.

    Raises:
        ValueError: if the model predicts more than one bin (not a binary head).
    """
    surv = predict_survival(model, task, split, hierarchical=False, device=device)
    if surv.shape[1] != 1:
        raise ValueError(f"predict_binary: the model predicts {surv.shape[1]} bins, not 1")
    return 1.0 - surv[:, 0]


def _metric(name: str) -> Callable[[Any, Any], float]:
    if name not in BINARY_METRICS:
        raise ValueError(f"unknown binary metric {name!r}; choose from {list(BINARY_METRICS)}")
    return BINARY_METRICS[name]


def binary_interval(
    labels: np.ndarray,
    scores: Sequence[np.ndarray],
    metric: str = "AUROC",
    *,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    r"""A binary metric averaged over seeds, :math:`\bar m = \frac1S \sum_s m(y, p_s)`,
    with a percentile bootstrap interval over patients
    (:func:`ehrseq.metrics.bootstrap_ci`).

    Args:
        labels: ``(n,)`` 0/1; scores: one ``(n,)`` array per seed.
        metric: ``"AUROC"`` or ``"AUPRC"``.

    Returns:
        ``estimate``, ``lower``, ``upper``.

    Raises:
        ValueError: for an unknown metric, no scores, or a length mismatch.
    """
    fn = _metric(metric)
    if not scores or any(len(s) != len(labels) for s in scores):
        raise ValueError("binary_interval: one score array per seed, each as long as labels")

    def mean(y: np.ndarray, *ss: np.ndarray) -> float:
        return float(np.mean([fn(y, s) for s in ss]))

    ci = bootstrap_ci(mean, np.asarray(labels), *scores, n_boot=n_boot, alpha=1 - level, seed=seed)
    return {"estimate": ci.estimate, "lower": ci.lower, "upper": ci.upper}


def binary_difference(
    labels: np.ndarray,
    a: str,
    scores_a: Sequence[np.ndarray],
    b: str,
    scores_b: Sequence[np.ndarray],
    metric: str = "AUROC",
    *,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    r"""Paired bootstrap of :math:`\bar m(a) - \bar m(b)` on the same resampled
    patients, each model's metric averaged over its seeds; the verdict reads as
    :meth:`ehrseq.evaluate.SurvivalProtocol.difference`'s.

    Returns:
        ``comparison``, ``metric``, ``difference``, ``lower``, ``upper``, ``verdict``
        (``"<model> is better"`` when the interval excludes 0, else "not resolved").

    Raises:
        ValueError: for an unknown metric, no scores, or a length mismatch.
    """
    fn = _metric(metric)
    k = len(scores_a)
    every = [*scores_a, *scores_b]
    if not k or not scores_b or any(len(s) != len(labels) for s in every):
        raise ValueError("binary_difference: score arrays per seed, each as long as labels")

    def diff(y: np.ndarray, *ss: np.ndarray) -> float:
        return float(np.mean([fn(y, s) for s in ss[:k]]) - np.mean([fn(y, s) for s in ss[k:]]))

    ci = bootstrap_ci(diff, np.asarray(labels), *every, n_boot=n_boot, alpha=1 - level, seed=seed)
    return difference_row(a, b, metric, ci)  # AUROC and AUPRC: higher is better
