r"""Next-visit prediction against the baselines that repeat the record, and a head that copies.

Chapter 5 pretrains an encoder by predicting the set of codes of visit :math:`t+1` from the
visits up to :math:`t` (:mod:`ehrseq.pretrain`). A record repeats itself: the drugs of a
chronic disease are refilled, its labs re-measured. A linear head over one pooled state has
to squeeze every code of the history through :math:`d` numbers to repeat them, and loses to
the trivial rule "repeat the last visit". This module gives the head what it lacks and
scores it fairly.

**History** (:func:`visit_history`): per patient, visit and code, whether the code was recorded
at visit :math:`t`, at how many visits :math:`\le t`, and how many days before visit
:math:`t` it was last recorded. Only visits :math:`\le t` enter row :math:`t`.

**Copy head** (:class:`HistoryCopyHead`), a pointer-generator (See et al., 2017) for sets:
each code's probability is a mixture of a *generated* probability, read from the pooled state
:math:`z_t`, and a *copied* probability that exists only for codes already in the history:

.. math::
    p_{t,c} = (1 - g_t)\,\sigma(w_c^\top z_t + b_c)
              + g_t\,\mathbb 1[c \in H_t]\,\sigma\big(a_c + (u + U_c)^\top \phi_{t,c}\big),
    \qquad g_t = \sigma(v^\top z_t + v_0)

with :math:`\phi_{t,c}` = (recorded at visit :math:`t`, :math:`\log(1 + \text{visits with }
c)`, :math:`2^{-\Delta_{t,c}/h}` for half-lives :math:`h` of 30, 180 and 730 days, where
:math:`\Delta_{t,c}` is the days since :math:`c` was last recorded). The head returns
:math:`\operatorname{logit}(p)`, so the binary cross-entropy with logits of
:mod:`ehrseq.pretrain` is exactly the binary cross-entropy of the mixture.

**Baselines** that look at the patient's own history and nothing else: repeat the last visit
(:func:`repeat_last_visit`), repeat every recurring ("chronic") code of the history
(:func:`repeat_codes` with :func:`recurring_codes`), a per-code lookup of repeat rates
(:func:`repeat_rates`), and the most frequent training codes (:func:`most_frequent`). Each
ranks codes; ties are broken by training frequency, so a rule that names fewer than
:math:`k` codes is filled with the commonest others.

**Scoring** (:func:`next_visit_table`): every scorer on the same test pairs (patient, visit
:math:`t`), per pair recall@k and average precision; :func:`paired_visit_difference` gives a
paired bootstrap interval of a difference of means over pairs, resampling patients.

References:
    See, Liu, Manning, *Get to the point: summarization with pointer-generator networks*
    (ACL 2017); Choi et al., *Doctor AI* (MLHC 2016).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ehrseq.metrics import Resamples, bootstrap_ci
from ehrseq.pretrain import TokenIds, next_visit_targets
from ehrseq.train import to_device

__all__ = [
    "VisitHistory",
    "visit_history",
    "HistoryCopyHead",
    "Scorer",
    "HistoryRule",
    "model_scorer",
    "most_frequent",
    "repeat_last_visit",
    "repeat_codes",
    "recurring_codes",
    "chronic_codes",
    "repeat_rates",
    "repeat_rate_scorer",
    "ranking_metrics",
    "next_visit_table",
    "visit_mean_interval",
    "paired_visit_difference",
]

DAYS_PER_YEAR = 365.25


# ---------------------------------------------------------------------------------------------
# The history up to each visit
# ---------------------------------------------------------------------------------------------
@dataclass
class VisitHistory:
    """What the record says about each code up to each visit.

    Attributes:
        in_visit: code ``c`` is recorded at visit ``t``.
        count: visits ``<= t`` at which ``c`` is recorded.
        days_since: days from the last visit ``<= t`` holding ``c`` to visit ``t`` (0 when
            ``c`` is in visit ``t``; ``inf`` when ``c`` is not in the history).
        exists: visit ``t`` exists (not padding).

    Shapes:
        ``(B, V, vocab)`` each, ``exists`` ``(B, V)``; slot ``t - 1`` holds visit ``t``.
    """

    in_visit: Tensor
    count: Tensor
    days_since: Tensor
    exists: Tensor

    @property
    def seen(self) -> Tensor:
        """``(B, V, vocab)`` bool: ``c`` is recorded at some visit ``<= t``."""
        return self.count > 0


def visit_history(
    codes: Tensor,
    visit_ids: Tensor,
    ages: Tensor,
    attention_mask: Tensor,
    ids: TokenIds,
    n_visits: int | None = None,
) -> VisitHistory:
    r"""Per visit :math:`t` and code :math:`c`: in visit :math:`t`, visits so far, days since.

    .. math::
        n_{t,c} = \sum_{s \le t} \mathbb 1[c \in \text{visit } s], \qquad
        \Delta_{t,c} = 365.25\,\big(a_t - \max\{a_s : s \le t,\ c \in \text{visit } s\}\big)

    where :math:`a_s` is the age (years) at visit :math:`s`. Special tokens never count.

    Args:
        codes, visit_ids, ages, attention_mask: the flat batch (:mod:`ehrseq.data.tensors`).
        ids: the special ids.
        n_visits: V; default ``visit_ids.max()``.

    Shapes:
        inputs ``(B, L)``; outputs as in :class:`VisitHistory`.

    Raises:
        ValueError: inputs of different shapes.
    """
    if not codes.shape == visit_ids.shape == ages.shape == attention_mask.shape:
        raise ValueError(
            f"codes {tuple(codes.shape)}, visit_ids {tuple(visit_ids.shape)}, ages "
            f"{tuple(ages.shape)} and attention_mask {tuple(attention_mask.shape)} must agree"
        )
    B, L = codes.shape
    V = int(visit_ids.max()) if n_visits is None else n_visits
    real = attention_mask.bool() & (visit_ids > 0) & (visit_ids <= V)  # (B, L)
    coded = real & ~torch.isin(codes, ids.special_tensor(codes.device))  # (B, L)
    multi = torch.zeros(B, V + 1, ids.vocab_size, device=codes.device)  # (B, V + 1, vocab)
    rows = torch.arange(B, device=codes.device)[:, None].expand(B, L)  # (B, L)
    multi[rows[coded], visit_ids[coded], codes[coded]] = 1.0
    in_visit = multi[:, 1:] > 0  # (B, V, vocab)
    slot = torch.where(real, visit_ids, 0)  # (B, L): padding goes to slot 0
    visit_age = torch.full((B, V + 1), math.inf, device=codes.device)
    visit_age = visit_age.scatter_reduce(1, slot, ages.float(), "amin")[:, 1:]  # (B, V)
    exists = torch.isfinite(visit_age)  # (B, V)
    age_at = torch.where(exists, visit_age, 0.0)  # (B, V)
    last_age = torch.where(in_visit, age_at[..., None], -math.inf)  # (B, V, vocab)
    last_age = last_age.cummax(dim=1).values  # (B, V, vocab): last visit <= t holding c
    count = in_visit.float().cumsum(dim=1) * exists[..., None]  # (B, V, vocab); 0 at padding
    days = (age_at[..., None] - last_age) * DAYS_PER_YEAR  # (B, V, vocab); inf if never
    days = torch.where((count > 0) & exists[..., None], days.clamp(min=0.0), math.inf)
    return VisitHistory(in_visit & exists[..., None], count, days, exists)


def _history_of(batch: Mapping[str, Tensor], ids: TokenIds, n_visits: int) -> VisitHistory:
    return visit_history(
        batch["codes"], batch["visit_ids"], batch["ages"], batch["attention_mask"], ids, n_visits
    )


# ---------------------------------------------------------------------------------------------
# The copy head
# ---------------------------------------------------------------------------------------------
class HistoryCopyHead(nn.Module):
    r"""Next-visit head: generate from the pooled state, or copy a code from the history.

    .. math::
        p_{t,c} = (1 - g_t)\,\sigma(w_c^\top z_t + b_c)
                  + g_t\,\mathbb 1[c \in H_t]\,\sigma\big(a_c + (u + U_c)^\top\phi_{t,c}\big)

    (see the module docstring for :math:`g_t` and :math:`\phi`). The copied part is exactly 0
    for a code that is not in the history up to visit :math:`t`, and row :math:`t` reads
    visits :math:`\le t` only, so with a visit-causal encoder nothing of visit :math:`t+1`
    leaks in. The output is :math:`\operatorname{logit}(p_{t,c})`, computed from
    :math:`\log p` and :math:`\log(1 - p)` with log-sum-exp (no probability is rounded to 0
    or 1 on the way).

    :class:`~ehrseq.pretrain.BehrtForPretraining` calls it as ``head(pooled, batch)``
    (``reads_history = True``); :meth:`mix` returns the parts.

    Args:
        d_model: width of the pooled states.
        ids: the special ids (never copied; the vocabulary size).
        half_lives: days of the recency features :math:`2^{-\Delta / h}`.
        init_std: standard deviation of the generator's initial weights.

    Shapes:
        pooled: ``(B, V, d)``; output ``(B, V, vocab)`` logits.
    """

    reads_history = True

    def __init__(
        self,
        d_model: int,
        ids: TokenIds,
        half_lives: Sequence[float] = (30.0, 180.0, 730.0),
        init_std: float = 0.02,
    ):
        super().__init__()
        if not half_lives or min(half_lives) <= 0:
            raise ValueError(f"half_lives = {tuple(half_lives)}: need at least one, all > 0")
        self.ids = ids
        n_features = 2 + len(half_lives)
        self.generate = nn.Linear(d_model, ids.vocab_size)
        self.gate = nn.Linear(d_model, 1)
        self.repeat_bias = nn.Parameter(torch.zeros(ids.vocab_size))  # a_c
        self.shared_weight = nn.Parameter(torch.zeros(n_features))  # u
        self.code_weight = nn.Parameter(torch.zeros(ids.vocab_size, n_features))  # U_c
        self.register_buffer("half_lives", torch.tensor([float(h) for h in half_lives]))
        nn.init.normal_(self.generate.weight, std=init_std)
        nn.init.zeros_(self.generate.bias)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    @torch.no_grad()
    def start_at_repeat_rates(
        self, rate_seen: Tensor, rate_unseen: Tensor, eps: float = 1e-3
    ) -> HistoryCopyHead:
        r"""Start at the repeat-rate lookup table (:func:`repeat_rates`), as a survival head
        starts at the life table: with the gate at 1/2 and the history features' weights at
        0, :math:`p_{t,c} \approx r^\text{unseen}_c` off the history and
        :math:`r^\text{seen}_c` on it (exactly, up to the generator's small random weights,
        unless a rate needs a probability outside ``[eps, 1 - eps]``). Returns ``self``.
        """
        if rate_seen.shape != (self.ids.vocab_size,) or rate_unseen.shape != rate_seen.shape:
            raise ValueError(
                f"rates {tuple(rate_seen.shape)}, {tuple(rate_unseen.shape)}: "
                f"need ({self.ids.vocab_size},) each"
            )
        g = 0.5
        generated = (rate_unseen.float() / (1 - g)).clamp(eps, 1 - eps)
        copied = ((rate_seen.float() - (1 - g) * generated) / g).clamp(eps, 1 - eps)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)  # sigmoid(0) = g = 1/2
        self.generate.bias.copy_(torch.logit(generated))
        self.repeat_bias.copy_(torch.logit(copied))
        self.shared_weight.zero_()
        self.code_weight.zero_()
        return self

    def features(self, history: VisitHistory) -> Tensor:
        """:math:`\\phi`: ``(B, V, vocab, 2 + len(half_lives))``, 0 for codes not in the history."""
        decay = torch.exp2(-history.days_since[..., None] / self.half_lives)  # (B, V, vocab, H)
        return torch.cat(
            [history.in_visit.float()[..., None], torch.log1p(history.count)[..., None], decay],
            dim=-1,
        )  # (B, V, vocab, F)

    def mix(self, pooled: Tensor, history: VisitHistory) -> dict[str, Tensor]:
        """``logits`` (of the mixture), ``gate`` ``(B, V)``, ``generated`` and ``copied``
        probabilities ``(B, V, vocab)`` (``copied`` is 0 off the history)."""
        if pooled.shape[:2] != history.count.shape[:2]:
            raise ValueError(
                f"pooled {tuple(pooled.shape)} and history {tuple(history.count.shape)} differ "
                "in batch or visits"
            )
        phi = self.features(history)  # (B, V, vocab, F)
        copy = self.repeat_bias + phi @ self.shared_weight  # (B, V, vocab)
        copy = copy + torch.einsum("bvcf,cf->bvc", phi, self.code_weight)  # (B, V, vocab)
        generate = self.generate(pooled)  # (B, V, vocab)
        gate = self.gate(pooled)  # (B, V, 1)
        log_g, log_not_g = F.logsigmoid(gate), F.logsigmoid(-gate)  # (B, V, 1)
        seen = history.seen  # (B, V, vocab)
        gen_yes = log_not_g + F.logsigmoid(generate)  # log (1 - g) sigma(gen)
        gen_no = log_not_g + F.logsigmoid(-generate)  # log (1 - g) (1 - sigma(gen))
        log_p = torch.where(seen, torch.logaddexp(gen_yes, log_g + F.logsigmoid(copy)), gen_yes)
        log_q = torch.logaddexp(  # log(1 - p): the copy part says "no" with sigma(-copy), or 1
            gen_no, log_g + torch.where(seen, F.logsigmoid(-copy), torch.zeros_like(copy))
        )
        g = torch.sigmoid(gate)  # (B, V, 1)
        return {
            "logits": log_p - log_q,  # (B, V, vocab)
            "gate": g[..., 0],  # (B, V)
            "generated": torch.sigmoid(generate),  # (B, V, vocab)
            "copied": torch.where(seen, torch.sigmoid(copy), torch.zeros_like(copy)),
        }

    def forward(self, pooled: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
        history = _history_of(batch, self.ids, pooled.shape[1])
        return self.mix(pooled, history)["logits"]


# ---------------------------------------------------------------------------------------------
# Scorers: a model, and the baselines that read only the history
# ---------------------------------------------------------------------------------------------
#: ``scorer(batch, history) -> scores`` ``(B, V, vocab)``: slot ``t - 1`` ranks the codes of
#: visit ``t + 1`` from the visits up to ``t`` (higher first).
Scorer = Callable[[Mapping[str, Tensor], VisitHistory], Tensor]


class HistoryRule:
    """A baseline scorer that keeps what decides its scores: its rule and its inputs.

    Call it as a :data:`Scorer`. :meth:`key` names the rule and hashes the values of its
    input tensors, so that a table of its scores can be an artefact
    (:func:`ehrseq.pretrained.load_or_score_next_visit`). The baselines of this module
    return one.
    """

    def __init__(self, rule: str, score: Scorer, *inputs: Tensor):
        self.rule, self.inputs, self._score = rule, inputs, score

    def __call__(self, batch: Mapping[str, Tensor], history: VisitHistory) -> Tensor:
        return self._score(batch, history)

    def key(self) -> dict[str, str]:
        """``{"rule", "inputs"}``: the rule's name and a hash of its inputs (dtypes,
        shapes, values)."""
        h = hashlib.sha256()
        for tensor in self.inputs:
            t = tensor.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode() + t.numpy().tobytes())
        return {"rule": self.rule, "inputs": h.hexdigest()[:16]}


def _frequency_tiebreak(counts: Tensor) -> Tensor:
    """``(vocab,)`` in [0, 0.5): more frequent training codes rank higher within a tie."""
    counts = counts.double().clamp(min=0)
    return (0.5 * counts / (counts.max() + 1.0)).float()


def model_scorer(model: nn.Module) -> Scorer:
    """A :class:`~ehrseq.pretrain.BehrtForPretraining`'s next-visit logits (eval mode)."""
    model.eval()
    return lambda batch, history: model(batch, task="next_visit")["next_visit_logits"]


def most_frequent(counts: Tensor) -> HistoryRule:
    """The same ranking for everyone: the most frequent training codes."""
    tie = _frequency_tiebreak(counts)
    return HistoryRule(
        "most_frequent",
        lambda batch, history: tie.to(history.count.device).expand(history.count.shape),
        counts,
    )


def repeat_last_visit(counts: Tensor) -> HistoryRule:
    """The codes of visit ``t`` first, then the others; each group by training frequency."""
    tie = _frequency_tiebreak(counts)
    return HistoryRule(
        "repeat_last_visit",
        lambda batch, history: history.in_visit.float() + tie.to(history.count.device),
        counts,
    )


def repeat_codes(codes: Tensor, counts: Tensor) -> HistoryRule:
    """Every code of ``codes`` (a ``(vocab,)`` bool mask) in the history up to ``t`` first.

    With :func:`recurring_codes` this is "repeat all chronic codes": every recurring
    diagnosis, drug and lab of the patient so far, then the others by training frequency.
    """
    tie = _frequency_tiebreak(counts)

    def score(batch, history):
        mask = codes.to(history.count.device)
        return (history.seen & mask).float() + tie.to(history.count.device)

    return HistoryRule("repeat_codes", score, codes, counts)


def _training_pairs(loader: Iterable[dict], ids: TokenIds):
    """Per batch: the history, the next-visit targets and the valid pairs."""
    for batch in loader:
        V = int(batch["visit_ids"].max())
        history = _history_of(batch, ids, V)
        targets, valid = next_visit_targets(
            batch["codes"], batch["visit_ids"], batch["attention_mask"], ids, V
        )
        yield batch, history, targets, valid


def recurring_codes(loader: Iterable[dict], ids: TokenIds) -> pd.DataFrame:
    """How often each code recurs: of the patients who have it *and* a visit after its first
    record, the share who have it again at a later visit.

    A chronic condition, its drugs and its monitoring labs recur; an acute one does not. This
    reads the training data only (no ontology, no generator truth).

    Returns:
        one row per id: ``eligible`` (patients with the code and a later visit), ``recurred``
        (of those, the patients with the code at two or more visits), ``share``
        (``recurred / eligible``, NaN when none is eligible).
    """
    eligible = torch.zeros(ids.vocab_size, dtype=torch.float64)
    recurred = torch.zeros(ids.vocab_size, dtype=torch.float64)
    for batch in loader:
        history = _history_of(batch, ids, int(batch["visit_ids"].max()))
        n_visits = history.exists.sum(1)  # (B,)
        last = (n_visits - 1).clamp(min=0)  # (B,): slot of the last real visit
        final = history.count[torch.arange(len(last)), last]  # (B, vocab): visits with c
        first = ((history.count == 0) & history.exists[..., None]).sum(1)  # (B, vocab)
        has_later = (final > 0) & (first + 1 < n_visits[:, None])  # (B, vocab)
        eligible += has_later.sum(0).double()
        recurred += (has_later & (final >= 2)).sum(0).double()
    share = torch.where(eligible > 0, recurred / eligible.clamp(min=1), torch.nan)
    share[list(ids.special_ids)] = torch.nan
    return pd.DataFrame(
        {"eligible": eligible.numpy(), "recurred": recurred.numpy(), "share": share.numpy()}
    ).rename_axis("id")


def chronic_codes(recurrence: pd.DataFrame, share: float, min_eligible: int) -> Tensor:
    """``(vocab,)`` bool: the codes that recur in at least ``share`` of the eligible patients.

    A code counts only when at least ``min_eligible`` training patients could show it recur
    (a rare code's share is noise); special ids never count (their share is NaN).

    Args:
        recurrence: :func:`recurring_codes` of the training data.
        share: the threshold on ``recurred / eligible``, in ``[0, 1]``.
        min_eligible: the fewest eligible patients a code needs.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must lie in [0, 1], got {share}")
    recurs = recurrence["share"].fillna(0.0).to_numpy() >= share
    return torch.tensor(recurs & (recurrence["eligible"].to_numpy() >= min_eligible))


def repeat_rates(loader: Iterable[dict], ids: TokenIds) -> tuple[Tensor, Tensor]:
    r"""Per code, the share of training pairs whose next visit holds it, with and without the
    code in the history so far (add-one smoothed):

    .. math:: r^\text{seen}_c = \frac{1 + \#\{c \in H_t,\ c \in Y_{t+1}\}}{2 + \#\{c \in H_t\}}

    Returns:
        ``(rate_seen, rate_unseen)``, each ``(vocab,)``.
    """
    hits_seen = torch.zeros(ids.vocab_size, dtype=torch.float64)
    n_seen = torch.zeros_like(hits_seen)
    hits_unseen, n_unseen = torch.zeros_like(hits_seen), torch.zeros_like(hits_seen)
    for _, history, targets, valid in _training_pairs(loader, ids):
        seen = history.seen[:, :-1][valid]  # (P, vocab)
        y = targets[valid] > 0  # (P, vocab)
        hits_seen += (y & seen).sum(0).double()
        n_seen += seen.sum(0).double()
        hits_unseen += (y & ~seen).sum(0).double()
        n_unseen += (~seen).sum(0).double()
    return ((hits_seen + 1) / (n_seen + 2)).float(), ((hits_unseen + 1) / (n_unseen + 2)).float()


def repeat_rate_scorer(rate_seen: Tensor, rate_unseen: Tensor) -> HistoryRule:
    """Rank by the repeat rate that applies (:func:`repeat_rates`): a per-code lookup table."""
    return HistoryRule(
        "repeat_rate",
        lambda batch, history: torch.where(
            history.seen,
            rate_seen.to(history.count.device),
            rate_unseen.to(history.count.device),
        ),
        rate_seen,
        rate_unseen,
    )


# ---------------------------------------------------------------------------------------------
# Per-pair metrics, and paired intervals that resample patients
# ---------------------------------------------------------------------------------------------
def ranking_metrics(scores: Tensor, targets: Tensor, k: int) -> tuple[Tensor, Tensor]:
    r"""Recall@k and average precision of each row's ranking.

    .. math::
        \text{recall@}k = \frac{|\text{top}_k \cap Y|}{|Y|}, \qquad
        \text{AP} = \frac{1}{|Y|}\sum_{r:\ c_r \in Y} \frac{|\{c_1..c_r\} \cap Y|}{r}

    where :math:`c_1, c_2, \dots` are the codes by descending score (ties: lower id first).

    Shapes:
        scores, targets: ``(P, vocab)``; outputs ``(P,)``.

    Raises:
        ValueError: shapes differ, ``k < 1``, or a row without a true code.
    """
    if scores.shape != targets.shape or scores.dim() != 2:
        raise ValueError(f"scores {tuple(scores.shape)} and targets {tuple(targets.shape)}")
    if k < 1:
        raise ValueError(f"k = {k}: must be >= 1")
    n_true = targets.sum(-1)  # (P,)
    if bool((n_true == 0).any()):
        raise ValueError("a row has no true code: recall and AP are undefined there")
    order = torch.sort(scores.float(), dim=-1, descending=True, stable=True).indices  # (P, vocab)
    hit = targets.gather(1, order).float()  # (P, vocab): true code at rank r
    recall = hit[:, :k].sum(-1) / n_true  # (P,)
    ranks = torch.arange(1, hit.shape[1] + 1, device=hit.device)  # (vocab,)
    ap = (hit * hit.cumsum(-1) / ranks).sum(-1) / n_true  # (P,)
    return recall, ap


@torch.no_grad()
def next_visit_table(
    scorers: Mapping[str, Scorer],
    loader: Iterable[dict],
    ids: TokenIds,
    *,
    k: int = 10,
    device: torch.device | str = "cpu",
) -> pd.DataFrame:
    """Every scorer on the same (patient, visit) pairs: recall@k and average precision.

    A pair is a visit ``t`` of a patient whose visit ``t + 1`` holds a non-special code;
    special ids are never predicted.

    Returns:
        one row per pair, indexed by ``person_id`` and ``visit`` (``t``); columns a
        MultiIndex (``f"recall@{k}"`` or ``"ap"``, scorer name), plus ``("n_codes", "")``.

    Raises:
        ValueError: no scorers, or no pair in ``loader``.
    """
    if not scorers:
        raise ValueError("pass at least one scorer")
    special = ids.special_tensor(device)
    parts = []
    for batch in loader:
        batch = to_device(batch, device)
        V = int(batch["visit_ids"].max())
        if V < 2:
            continue
        history = _history_of(batch, ids, V)
        targets, valid = next_visit_targets(
            batch["codes"], batch["visit_ids"], batch["attention_mask"], ids, V
        )  # (B, V - 1, vocab), (B, V - 1)
        if not bool(valid.any()):
            continue
        b_idx, t_idx = valid.nonzero(as_tuple=True)  # (P,), (P,)
        y = targets[valid]  # (P, vocab)
        part = {
            ("person_id", ""): batch["person_ids"][b_idx].cpu().numpy(),
            ("visit", ""): (t_idx + 1).cpu().numpy(),
            ("n_codes", ""): y.sum(-1).cpu().numpy(),
        }
        for name, scorer in scorers.items():
            scores = scorer(batch, history)[:, : V - 1][valid].float()  # (P, vocab)
            scores[:, special] = -math.inf
            recall, ap = ranking_metrics(scores, y, k)
            part[(f"recall@{k}", name)] = recall.cpu().numpy()
            part[("ap", name)] = ap.cpu().numpy()
        parts.append(pd.DataFrame(part))
    if not parts:
        raise ValueError("no (visit, next visit) pairs in the loader")
    table = pd.concat(parts, ignore_index=True)
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table.set_index([("person_id", ""), ("visit", "")]).rename_axis(["person_id", "visit"])


def _per_patient(values: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sums and counts of ``values`` per patient (the units the bootstrap resamples)."""
    values, groups = np.asarray(values, float), np.asarray(groups)
    if values.shape != groups.shape or values.ndim != 1:
        raise ValueError(f"values {values.shape} and groups {groups.shape}: need equal 1-d")
    _, inverse = np.unique(groups, return_inverse=True)
    return np.bincount(inverse, weights=values), np.bincount(inverse).astype(float)


def visit_mean_interval(
    values: np.ndarray,
    groups: np.ndarray,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
):
    r"""Mean over pairs with a percentile bootstrap interval that resamples patients.

    .. math:: \bar x = \frac{\sum_i S_i}{\sum_i n_i}

    with :math:`S_i` the sum and :math:`n_i` the number of pairs of patient :math:`i`
    (a patient's visits are correlated, so patients, not visits, are the resampled units).

    Returns:
        :class:`ehrseq.metrics.BootstrapCI`.
    """
    sums, n = _per_patient(values, groups)
    return bootstrap_ci(
        lambda s, m: s.sum() / m.sum(),
        sums,
        n,
        n_boot=n_boot,
        alpha=alpha,
        seed=seed,
        resampler=_ratio_resampler,
    )


def _ratio_resampler(sums: np.ndarray, n: np.ndarray) -> Callable[[Resamples], np.ndarray]:
    """``sum(s) / sum(n)`` on whole blocks of resamples: two weighted sums each."""

    def score(resamples: Resamples) -> np.ndarray:
        top, bottom = resamples.counts @ sums, resamples.counts @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1.0), np.nan)

    return score


def paired_visit_difference(
    a: np.ndarray,
    b: np.ndarray,
    groups: np.ndarray,
    *,
    comparison: str,
    metric: str,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict:
    """Mean of ``a - b`` over the same pairs, with a paired bootstrap interval over patients.

    Args:
        a, b: a per-pair metric of two scorers on the same pairs (``(P,)`` each).
        groups: the patient of each pair.
        comparison, metric: names kept in the row.

    Returns:
        ``{"comparison", "metric", "a", "b", "difference", "lower", "upper", "n_patients",
        "n_pairs"}``, the row :func:`ehrseq.book.record_claim` takes.

    Raises:
        ValueError: ``a`` and ``b`` of different shapes.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError(f"a {a.shape} and b {b.shape}: the same pairs are needed")
    ci = visit_mean_interval(a - b, groups, n_boot=n_boot, alpha=alpha, seed=seed)
    return {
        "comparison": comparison,
        "metric": metric,
        "a": float(a.mean()),
        "b": float(b.mean()),
        "difference": ci.estimate,
        "lower": ci.lower,
        "upper": ci.upper,
        "n_patients": len(np.unique(np.asarray(groups))),
        "n_pairs": len(a),
    }
