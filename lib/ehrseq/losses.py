r"""Survival losses for discrete-time hazards: the likelihood, a ranking loss, and both together.

Every loss here takes the hazard **logits** :math:`x` of a survival head
(:mod:`ehrseq.models.survival_head`), ``hazards = sigmoid(logits)``, and integer labels:

- ``durations``: the bin (or visit slot) index :math:`j_i \in \{0, \dots, T - 1\}` of the
  event or censoring time of patient :math:`i`;
- ``events``: :math:`e_i = 1` for an event in bin :math:`j_i`, 0 for censoring in it.

**Censoring convention** (pycox's logistic hazard, ``nll_logistic_hazard``): a patient
censored in bin :math:`j` counts as having **survived bin** :math:`j` -- censoring happens at
the end of its bin. An event time goes to the bin that contains it. pycox's
``LabTransDiscreteTime`` puts a censoring time in the bin that contains it too (both are
rounded up to the next grid point), which credits the patient with surviving the rest of that
bin, a small optimistic approximation; putting it in the last bin it fully covers is the
conservative alternative. Either way the loss below reads the index as "survived bin j".

The log-likelihood is computed in log space from the logits, with
:math:`\log h = \operatorname{logsigmoid}(x)` and :math:`\log(1 - h) = \operatorname{logsigmoid}(-x)`,
never from a clamped sigmoid, so it stays finite and accurate for logits of any size.

Derived in the book's discrete-time survival chapter.

References:
    Kvamme, H., Borgan, Ø., Scheel, I. (2019). Time-to-event prediction with neural networks
    and Cox regression. *JMLR* 20(129), 1-30.
    Kvamme, H., Borgan, Ø. (2021). Continuous and discrete-time survival prediction with
    neural networks. *Lifetime Data Analysis* 27, 710-736.
    Lee, C., Zame, W. R., Yoon, J., van der Schaar, M. (2018). DeepHit: a deep learning
    approach to survival analysis with competing risks. *AAAI* 32(1).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ehrseq.survival import hazards_to_survival

__all__ = ["hazard_nll", "pairwise_ranking_loss", "hybrid_loss"]

_REDUCTIONS = ("mean", "sum", "none")


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def _check_reduction(reduction: str, allowed: tuple[str, ...] = _REDUCTIONS) -> None:
    if reduction not in allowed:
        raise ValueError(f"reduction must be one of {allowed}, got {reduction!r}")


def _check_events(events: Any, n: int, device: torch.device) -> Tensor:
    """Events as a bool tensor of shape ``(n,)``, after checking they are 0/1."""
    e = torch.as_tensor(events, device=device)
    if e.shape != (n,):
        raise ValueError(f"events must have shape (B,) = ({n},), got {tuple(e.shape)}")
    if e.dtype != torch.bool:
        bad = (e != 0) & (e != 1)
        if bool(bad.any()):
            first = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"events must be 0/1 (or boolean): 1 = event, 0 = censored; found "
                f"{e[first].item()!r} at index {first}"
            )
        e = e == 1
    return e


def _check_bin_durations(durations: Any, n: int, n_bins: int, device: torch.device) -> Tensor:
    """Durations as a long tensor of bin indices in ``[0, n_bins)``."""
    d = torch.as_tensor(durations, device=device)
    if d.shape != (n,):
        raise ValueError(f"durations must have shape (B,) = ({n},), got {tuple(d.shape)}")
    if d.dtype.is_floating_point or d.dtype.is_complex or d.dtype == torch.bool:
        raise ValueError(
            f"durations must be integer bin indices, got dtype {d.dtype}; discretise the times "
            "onto the time grid first"
        )
    d = d.long()
    if n and int(d.min()) < 0:
        first = int((d < 0).nonzero()[0, 0])
        raise ValueError(f"durations are bin indices and must be >= 0; found {int(d[first])}")
    if n and int(d.max()) >= n_bins:
        first = int((d >= n_bins).nonzero()[0, 0])
        raise ValueError(
            f"duration index {int(d[first])} (patient {first}) is past the last bin: there are "
            f"{n_bins} bins, indices 0..{n_bins - 1}"
        )
    return d


def _check_logits(logits: Tensor) -> tuple[int, int]:
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a tensor of shape (B, T), got {shape}")
    b, t = logits.shape
    if b == 0 or t == 0:
        raise ValueError(f"logits is empty: shape {(b, t)}")
    return b, t


def _check_mask(mask: Tensor | None, shape: tuple[int, int], durations: Tensor) -> Tensor | None:
    if mask is None:
        return None
    mask = torch.as_tensor(mask, device=durations.device)
    if tuple(mask.shape) != shape:
        raise ValueError(f"mask must have the shape of logits {shape}, got {tuple(mask.shape)}")
    mask = mask.bool()
    empty = ~mask.any(dim=1)
    if bool(empty.any()):
        raise ValueError(
            f"patient(s) {empty.nonzero().flatten().tolist()[:5]} have every bin masked: the "
            "sequence is all padding"
        )
    at_label = mask.gather(1, durations.unsqueeze(1)).squeeze(1)  # (B,)
    if not bool(at_label.all()):
        first = int((~at_label).nonzero()[0, 0])
        raise ValueError(
            f"patient {first}'s duration index {int(durations[first])} points at a masked "
            "(padded) bin; the label must sit on a real bin or visit"
        )
    return mask


# ---------------------------------------------------------------------------------------------
# Likelihood
# ---------------------------------------------------------------------------------------------


def hazard_nll(
    logits: Tensor,
    durations: Any,
    events: Any,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Negative log-likelihood of discrete-time (logistic) hazards.

    For patient :math:`i` with duration index :math:`j`, event indicator :math:`e` and hazards
    :math:`h_k = \sigma(x_k)`,

    .. math::
        \text{NLL}_i = -\Bigl[\sum_{k < j} \log(1 - h_k) + e \log h_j
                              + (1 - e) \log(1 - h_j)\Bigr]

    so a censored patient (:math:`e = 0`) has survived every bin up to **and including** bin
    :math:`j` (pycox's ``nll_logistic_hazard`` convention). It equals the binary cross-entropy
    on the expanded person-period targets :math:`y_{ik} = e_i [k = j_i]` summed over
    :math:`k \le j_i` (Kvamme & Borgan 2021), and is computed from the logits with
    :math:`\log h = \operatorname{logsigmoid}(x)`, :math:`\log (1 - h) =
    \operatorname{logsigmoid}(-x)`, so it is finite for logits of any size.

    Masked bins (padded visits) before :math:`j` contribute nothing; the label bin must be
    real. Masked logits are never read, so they may hold anything, even inf.

    Args:
        logits: hazard logits, one per bin (or visit).
        durations: integer bin index of the event or censoring time.
        events: 1 = event in that bin, 0 = censored in it (bool or 0/1 numbers).
        mask: True on real bins; ``None`` means all bins are real.
        reduction: ``"mean"`` over patients, ``"sum"``, or ``"none"``.

    Shapes:
        - logits, mask: :math:`(B, T)`
        - durations, events: :math:`(B,)`
        - output: scalar, or :math:`(B,)` with ``reduction="none"``

    Raises:
        ValueError: on mismatched shapes, non-integer or negative durations, a duration index
            past the last bin or on a masked bin, a patient whose bins are all masked, events
            other than 0/1, or an unknown reduction.

    References:
        Kvamme, H., Borgan, Ø. (2021). Continuous and discrete-time survival prediction with
        neural networks. *Lifetime Data Analysis* 27, 710-736.
        Kvamme, H., Borgan, Ø., Scheel, I. (2019). Time-to-event prediction with neural
        networks and Cox regression. *JMLR* 20(129), 1-30.
    """
    _check_reduction(reduction)
    b, t = _check_logits(logits)
    d = _check_bin_durations(durations, b, t, logits.device)
    e = _check_events(events, b, logits.device)
    mask = _check_mask(mask, (b, t), d)

    log_h = F.logsigmoid(logits)  # (B, T), log h_k
    log_s = F.logsigmoid(-logits)  # (B, T), log(1 - h_k)
    before = torch.arange(t, device=logits.device) < d.unsqueeze(1)  # (B, T), k < j
    if mask is not None:
        before = before & mask
    survived = torch.where(before, log_s, 0.0).sum(dim=1)  # (B,), sum_{k<j} log(1 - h_k)
    idx = d.unsqueeze(1)  # (B, 1)
    at_j = torch.where(e, log_h.gather(1, idx).squeeze(1), log_s.gather(1, idx).squeeze(1))
    nll = -(survived + at_j)  # (B,)
    if reduction == "mean":
        return nll.mean()
    if reduction == "sum":
        return nll.sum()
    return nll


# ---------------------------------------------------------------------------------------------
# Ranking
# ---------------------------------------------------------------------------------------------


def pairwise_ranking_loss(
    risk: Tensor,
    durations: Any,
    events: Any,
    sigma: float = 0.1,
    kind: str = "exp",
    reduction: str = "mean",
) -> Tensor:
    r"""Pairwise ranking loss over comparable pairs: earlier events should get higher risk.

    A pair :math:`(i, j)` is comparable when :math:`i` had the event first:

    .. math::
        A_{ij} = e_i \cdot \bigl([t_i < t_j] + [t_i = t_j]\,(1 - e_j)\bigr)

    (a patient censored in the bin of an event outlived it, the censoring convention of
    :func:`hazard_nll`; two events in the same bin are not comparable). With the risk
    difference :math:`\Delta_{ij}`, the loss is

    .. math::
        \mathcal{L} = \frac{1}{\sum A_{ij}} \sum_{i,j} A_{ij}\, \eta(\Delta_{ij}), \qquad
        \eta(\Delta) = \begin{cases}
            \exp(-\Delta / \sigma) & \text{``exp'' (DeepHit)} \\
            \log(1 + \exp(-\Delta / \sigma)) & \text{``logistic''}
        \end{cases}

    ``risk`` may be

    - a score per patient, :math:`(B,)`: :math:`\Delta_{ij} = r_i - r_j`, and ``durations``
      may be times of any numeric type;
    - a cumulative risk curve :math:`F(t_k) = 1 - S(t_k)`, :math:`(B, T)`: pairs are
      compared at the earlier time, :math:`\Delta_{ij} = F_i(t_{j_i}) - F_j(t_{j_i})`, as in
      DeepHit, and ``durations`` are bin indices.

    The exponential form is DeepHit's; it grows without bound for badly ordered pairs, so keep
    :math:`\Delta` bounded (probabilities are) or use the logistic form, a smooth
    upper bound of the 0-1 ranking error (RankNet). Unlike pycox's
    ``rank_loss_deephit_single``, which averages over all :math:`B^2` entries, ``"mean"``
    averages over the comparable pairs, so the scale does not depend on the batch's censoring.
    A batch without a comparable pair gives 0 (with a gradient of 0), not an error.

    Args:
        risk: risk score per patient, or cumulative risk curve per patient; higher = earlier.
        durations: event or censoring times (1-D risk) or bin indices (2-D risk).
        events: 1 = event, 0 = censored.
        sigma: temperature :math:`\sigma > 0` (pycox's default 0.1).
        kind: ``"exp"`` (DeepHit) or ``"logistic"``.
        reduction: ``"mean"`` over comparable pairs, ``"sum"``, or ``"none"`` (the
            :math:`(B, B)` matrix of pair losses, 0 off the comparable pairs).

    Shapes:
        - risk: :math:`(B,)` or :math:`(B, T)`
        - durations, events: :math:`(B,)`
        - output: scalar, or :math:`(B, B)` with ``reduction="none"``

    Raises:
        ValueError: on mismatched shapes, events other than 0/1, negative durations, bin
            indices outside the curve, ``sigma <= 0``, or an unknown ``kind`` or reduction.

    References:
        Lee, C., Zame, W. R., Yoon, J., van der Schaar, M. (2018). DeepHit: a deep learning
        approach to survival analysis with competing risks. *AAAI* 32(1).
        Burges, C. et al. (2005). Learning to rank using gradient descent. *ICML*.
    """
    _check_reduction(reduction)
    if kind not in ("exp", "logistic"):
        raise ValueError(f"kind must be 'exp' or 'logistic', got {kind!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    if not isinstance(risk, Tensor) or risk.ndim not in (1, 2) or risk.shape[0] == 0:
        shape = tuple(risk.shape) if isinstance(risk, Tensor) else type(risk).__name__
        raise ValueError(f"risk must be a tensor of shape (B,) or (B, T), got {shape}")
    b = risk.shape[0]
    e = _check_events(events, b, risk.device)
    if risk.ndim == 2:
        d = _check_bin_durations(durations, b, risk.shape[1], risk.device)
        at_ti = risk[:, d]  # (B, B): at_ti[a, i] = F_a(t_{j_i})
        diff = at_ti.diagonal().unsqueeze(1) - at_ti.T  # (B, B): F_i(t_i) - F_j(t_i)
    else:
        d = torch.as_tensor(durations, device=risk.device)
        if d.shape != (b,):
            raise ValueError(f"durations must have shape (B,) = ({b},), got {tuple(d.shape)}")
        if bool((d < 0).any()):
            raise ValueError("durations must be non-negative")
        diff = risk.unsqueeze(1) - risk.unsqueeze(0)  # (B, B): r_i - r_j
    earlier = d.unsqueeze(1) < d.unsqueeze(0)  # (B, B): t_i < t_j
    tie_censored = (d.unsqueeze(1) == d.unsqueeze(0)) & ~e.unsqueeze(0)  # t_i = t_j, e_j = 0
    comparable = e.unsqueeze(1) & (earlier | tie_censored)  # (B, B), A_ij

    z = -diff / sigma
    pair = torch.exp(z) if kind == "exp" else F.softplus(z)  # (B, B)
    pair = torch.where(comparable, pair, 0.0)
    if reduction == "none":
        return pair
    total = pair.sum()
    if reduction == "sum":
        return total
    return total / comparable.sum().clamp(min=1)


# ---------------------------------------------------------------------------------------------
# Both
# ---------------------------------------------------------------------------------------------


def hybrid_loss(
    logits: Tensor,
    durations: Any,
    events: Any,
    mask: Tensor | None = None,
    rank_weight: float = 1.0,
    sigma: float = 0.1,
    kind: str = "exp",
    reduction: str = "mean",
) -> Tensor:
    r"""Likelihood plus ranking: :math:`\text{NLL} + \lambda \cdot \text{ranking}`.

    .. math::
        \mathcal{L} = \text{NLL}(x; j, e) + \lambda\,
        \mathcal{L}_{\text{rank}}\bigl(F;\, j, e\bigr), \qquad
        F_i(t_k) = 1 - \prod_{l \le k} (1 - \sigma(x_{il}))

    the likelihood of :func:`hazard_nll` and the DeepHit-style ranking of
    :func:`pairwise_ranking_loss` on the cumulative risk curve implied by the same hazards
    (masked bins have hazard 0). DeepHit mixes the two as :math:`\alpha\,\text{NLL} +
    (1 - \alpha)\,\text{rank}`; here the likelihood keeps weight 1 so :math:`\lambda = 0`
    gives back :func:`hazard_nll` exactly. For per-visit hazards the "bins" are visit slots,
    so the ranking compares patients at the same visit count: use it there only when visits
    lie on a common grid.

    Args:
        logits: hazard logits, one per bin (or visit).
        durations: integer bin index of the event or censoring time.
        events: 1 = event, 0 = censored.
        mask: True on real bins; ``None`` means all bins are real.
        rank_weight: :math:`\lambda \ge 0`.
        sigma: temperature of the ranking loss.
        kind: ``"exp"`` (DeepHit) or ``"logistic"``.
        reduction: ``"mean"`` (NLL over patients, ranking over comparable pairs) or
            ``"sum"``.

    Shapes:
        - logits, mask: :math:`(B, T)`; durations, events: :math:`(B,)`
        - output: scalar

    Raises:
        ValueError: as :func:`hazard_nll` and :func:`pairwise_ranking_loss`, or on a negative
            ``rank_weight``.

    References:
        Lee, C., Zame, W. R., Yoon, J., van der Schaar, M. (2018). DeepHit: a deep learning
        approach to survival analysis with competing risks. *AAAI* 32(1).
        Kvamme, H., Borgan, Ø., Scheel, I. (2019). Time-to-event prediction with neural
        networks and Cox regression. *JMLR* 20(129), 1-30.
    """
    _check_reduction(reduction, ("mean", "sum"))
    if not rank_weight >= 0:
        raise ValueError(f"rank_weight must be >= 0, got {rank_weight!r}")
    nll = hazard_nll(logits, durations, events, mask=mask, reduction=reduction)
    if rank_weight == 0:
        return nll
    hazards = torch.sigmoid(logits)  # (B, T)
    if mask is not None:
        hazards = hazards.masked_fill(~torch.as_tensor(mask, device=logits.device).bool(), 0.0)
    cum_risk = 1.0 - hazards_to_survival(hazards)  # (B, T), F(t_k)
    rank = pairwise_ranking_loss(
        cum_risk, durations, events, sigma=sigma, kind=kind, reduction=reduction
    )
    return nll + rank_weight * rank
