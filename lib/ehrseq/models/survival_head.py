r"""Survival heads: from encoder token states to discrete-time hazards.

An encoder gives one state per token, ``(B, L, d)``. A survival head turns those states into
**logits** of discrete-time hazards, ``hazards = sigmoid(logits)``, and the survival curve
:math:`S(t_k) = \prod_{j \le k} (1 - h_j)` follows (:func:`ehrseq.survival.hazards_to_survival`).
Two conventions are offered; both return a :class:`HazardOutput` so the loss, the survival
curve and the risk are computed the same way downstream.

**Per-visit hazards** (:class:`VisitHazardHead`, the main mode). Token states are averaged
within each visit (:func:`pool_visits`), and visit :math:`t` (``visit_ids == t + 1``, slot
``t`` of the output) gets one logit. Its hazard is

.. math::
    h_{t} = P\bigl(\text{event in } (\tau_t, \tau_{t+1}] \bigm| T > \tau_t,
    \text{history up to and including visit } t\bigr),

the probability of the event in the interval that *follows* visit :math:`t` (from the visit
time :math:`\tau_t` to the next visit, or to the end of follow-up after the last visit).
With an encoder that is causal over visits (a token of visit :math:`t` attends to visits
:math:`\le t` only), :math:`h_t` never sees the future; the tests check it. The intervals
have unequal lengths, so :math:`h_t` is a probability per interval, not per unit of time.
Labels for :func:`ehrseq.losses.hazard_nll`: ``durations`` is the slot of the visit whose
following interval holds the event or the censoring -- for a history that ends at the
prediction time, the last real visit, :func:`last_visit_index` -- and every earlier visit
counts as survived. The visit that records the event itself must not be in the input.

**Per-time-bin hazards** (:class:`BinHazardHead`). One patient representation at the
prediction time (by default the mean state of the last real visit, :func:`last_visit_state`)
is mapped to :math:`T` logits, one per bin of a fixed time grid after the prediction time,
the logistic-hazard model of Kvamme & Borgan (2021). ``durations`` is the bin index of the
event or censoring time.

Derived and used in the book's discrete-time survival chapter.

References:
    Kvamme, H., Borgan, Ø., Scheel, I. (2019). Time-to-event prediction with neural networks
    and Cox regression. *JMLR* 20(129), 1-30.
    Kvamme, H., Borgan, Ø. (2021). Continuous and discrete-time survival prediction with
    neural networks. *Lifetime Data Analysis* 27, 710-736.
    Li, Y. et al. (2020). BEHRT: Transformer for electronic health records. *Scientific
    Reports* 10, 7155.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ehrseq.survival import hazards_to_survival, risk_at_horizon

__all__ = [
    "pool_visits",
    "last_visit_index",
    "last_visit_state",
    "HazardOutput",
    "VisitHazardHead",
    "BinHazardHead",
]


# ---------------------------------------------------------------------------------------------
# Pooling tokens into visits
# ---------------------------------------------------------------------------------------------


def pool_visits(
    token_states: Tensor,
    visit_ids: Tensor,
    attention_mask: Tensor | None = None,
    n_visits: int | None = None,
    how: Literal["mean", "last"] = "mean",
) -> tuple[Tensor, Tensor]:
    r"""One state per visit: the mean of its token states (a masked mean by scatter-add), or
    the state of its last token.

    .. math::
        \bar x_{b,t} = \frac{\sum_{l} m_{b,l}\, [v_{b,l} = t + 1]\, x_{b,l}}
                            {\max\bigl(1, \sum_l m_{b,l}\, [v_{b,l} = t + 1]\bigr)}
        \quad\text{or}\quad
        \bar x_{b,t} = x_{b,\, \max\{l:\ m_{b,l},\ v_{b,l} = t + 1\}}

    where :math:`v` are the ``visit_ids`` (1 for the first visit, 0 for padding) and
    :math:`m = \text{attention\_mask} \wedge (v > 0)`. Slot ``t`` of the output holds visit
    ``t + 1``. One ``index_add`` (or ``scatter_reduce``) over the flattened batch does all
    patients and visits at once (no Python loop); on CUDA the atomic adds of the mean make
    the last bits nondeterministic. The survival heads pool by the mean; next-visit
    pretraining (:mod:`ehrseq.pretrain`) reads the last token of a visit, its ``[SEP]``.

    Args:
        token_states: encoder output per token.
        visit_ids: visit index per token, as in :mod:`ehrseq.data.tensors`: 1, 2, ... for
            real tokens, 0 for padding.
        attention_mask: True on real tokens; defaults to ``visit_ids > 0``. A token is pooled
            only when it is real *and* has a visit id.
        n_visits: number of visit slots ``V`` in the output; defaults to the largest visit id
            in the batch. A larger value adds padded (masked) visits.
        how: ``"mean"`` of the visit's tokens or its ``"last"`` token.

    Shapes:
        - token_states: :math:`(B, L, d)`
        - visit_ids, attention_mask: :math:`(B, L)`
        - output: ``(visit_states, visit_mask)`` of shapes :math:`(B, V, d)` and
          :math:`(B, V)`; ``visit_mask`` is True on visits with at least one token, and
          ``visit_states`` is 0 on the others.

    Raises:
        ValueError: on mismatched shapes, non-integer or negative ``visit_ids``, a real token
            with visit id 0, ``n_visits`` smaller than the largest visit id, or an unknown
            ``how``.
    """
    if how not in ("mean", "last"):
        raise ValueError(f"how = {how!r}: expected 'mean' or 'last'")
    if token_states.ndim != 3:
        raise ValueError(f"token_states must have shape (B, L, d), got {tuple(token_states.shape)}")
    b, length, d = token_states.shape
    if visit_ids.shape != (b, length):
        raise ValueError(
            f"visit_ids must have shape (B, L) = ({b}, {length}), got {tuple(visit_ids.shape)}"
        )
    if visit_ids.dtype.is_floating_point or visit_ids.dtype == torch.bool:
        raise ValueError(f"visit_ids must be an integer tensor, got {visit_ids.dtype}")
    if visit_ids.numel() and int(visit_ids.min()) < 0:
        raise ValueError("visit_ids must be >= 0 (0 marks padding, real visits start at 1)")
    real = visit_ids > 0
    if attention_mask is not None:
        if attention_mask.shape != (b, length):
            raise ValueError(
                f"attention_mask must have shape (B, L) = ({b}, {length}), "
                f"got {tuple(attention_mask.shape)}"
            )
        attention_mask = attention_mask.bool()
        if bool((attention_mask & ~real).any()):
            raise ValueError(
                "a real token (attention_mask True) has visit_ids 0; visit ids start at 1 and 0 "
                "is reserved for padding"
            )
        real = real & attention_mask
    max_id = int(visit_ids.max()) if visit_ids.numel() else 0
    v = max_id if n_visits is None else int(n_visits)
    if v < max_id:
        raise ValueError(f"n_visits={n_visits} is smaller than the largest visit id {max_id}")

    rows = torch.arange(b, device=visit_ids.device).unsqueeze(1)  # (B, 1)
    slot = rows * v + (visit_ids - 1).clamp(min=0)  # (B, L), flat index of (b, visit)
    flat_slot = slot.reshape(b * length)  # (B*L,)
    if how == "last":
        pos = torch.arange(length, device=visit_ids.device).expand(b, length)  # (B, L)
        pos = torch.where(real, pos, -1).reshape(b * length)  # (B*L,), -1 never wins
        last = torch.full((b * v,), -1, dtype=torch.long, device=visit_ids.device)
        last = last.scatter_reduce(0, flat_slot, pos, reduce="amax").reshape(b, v)  # (B, V)
        visit_mask = last >= 0  # (B, V)
        index = last.clamp(min=0)[..., None].expand(b, v, d)  # (B, V, d)
        visit_states = torch.where(visit_mask[..., None], token_states.gather(1, index), 0.0)
        return visit_states, visit_mask  # (B, V, d), (B, V)
    keep = real.reshape(b * length, 1)  # (B*L, 1)
    # torch.where rather than a product, so a NaN/inf in a padded state cannot leak in
    flat_x = torch.where(keep, token_states.reshape(b * length, d), 0.0)  # (B*L, d)
    sums = token_states.new_zeros(b * v, d).index_add(0, flat_slot, flat_x)  # (B*V, d)
    counts = token_states.new_zeros(b * v).index_add(
        0, flat_slot, keep.squeeze(1).to(token_states.dtype)
    )  # (B*V,)
    visit_states = (sums / counts.clamp(min=1).unsqueeze(1)).reshape(b, v, d)  # (B, V, d)
    visit_mask = (counts > 0).reshape(b, v)  # (B, V)
    return visit_states, visit_mask


def last_visit_index(visit_mask: Tensor) -> Tensor:
    r"""Slot of the last real visit of each patient.

    .. math::
        t^{\text{last}}_b = \max\{t : \text{visit\_mask}_{b,t}\}

    This is the prediction time of a history that ends at the landmark, and the
    ``durations`` label of the per-visit convention when the event or censoring follows the
    last visit (see the module docstring).

    Args:
        visit_mask: True on real visits, as returned by :func:`pool_visits`.

    Shapes:
        - visit_mask: :math:`(B, V)`
        - output: :math:`(B,)`, long

    Raises:
        ValueError: if ``visit_mask`` is not 2-D or a patient has no real visit.
    """
    if visit_mask.ndim != 2:
        raise ValueError(f"visit_mask must have shape (B, V), got {tuple(visit_mask.shape)}")
    mask = visit_mask.bool()
    empty = ~mask.any(dim=1)
    if bool(empty.any()):
        raise ValueError(
            f"patient(s) {empty.nonzero().flatten().tolist()[:5]} have no real visit: the "
            "visit_mask row is all padding"
        )
    slots = torch.arange(1, mask.shape[1] + 1, device=mask.device)  # (V,)
    return (mask * slots).argmax(dim=1)  # (B,), the largest slot with a real visit


def last_visit_state(visit_states: Tensor, visit_mask: Tensor) -> Tensor:
    r"""State of each patient's last real visit: the patient representation at prediction time.

    .. math::
        z_b = \bar x_{b,\, t^{\text{last}}_b}

    Args:
        visit_states: pooled visit states from :func:`pool_visits`.
        visit_mask: True on real visits.

    Shapes:
        - visit_states: :math:`(B, V, d)`; visit_mask: :math:`(B, V)`
        - output: :math:`(B, d)`

    Raises:
        ValueError: on mismatched shapes or a patient without a real visit.
    """
    if visit_states.ndim != 3 or visit_states.shape[:2] != visit_mask.shape:
        raise ValueError(
            f"visit_states (B, V, d) and visit_mask (B, V) do not match: "
            f"{tuple(visit_states.shape)} vs {tuple(visit_mask.shape)}"
        )
    idx = last_visit_index(visit_mask)  # (B,)
    rows = torch.arange(visit_states.shape[0], device=visit_states.device)
    return visit_states[rows, idx]  # (B, d)


@dataclass
class HazardOutput:
    """What a survival head returns.

    Attributes:
        logits: hazard logits, 0 at padded slots. Feed these (not ``hazards``) to
            :func:`ehrseq.losses.hazard_nll`, which works in log space.
        hazards: ``sigmoid(logits)``, 0 at padded slots.
        mask: True on real visits (per-visit head) or everywhere (per-bin head).

    Shapes:
        - logits, hazards, mask: :math:`(B, V)` (per-visit) or :math:`(B, T)` (per-bin)
    """

    logits: Tensor
    hazards: Tensor
    mask: Tensor

    @property
    def surv(self) -> Tensor:
        """Survival curve :math:`S(t_k) = \\prod_{j \\le k} (1 - h_j)`, shape ``(B, T)``."""
        return hazards_to_survival(self.hazards, self.mask)

    def risk(self, horizon: float, time_grid: Tensor | None = None) -> Tensor:
        """Risk by a fixed horizon, shape ``(B,)``; see :func:`ehrseq.survival.risk_at_horizon`."""
        return risk_at_horizon(self.hazards, horizon, time_grid=time_grid, mask=self.mask)


def _mlp(d_in: int, d_out: int, hidden: int | None, dropout: float) -> nn.Module:
    if hidden is None:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(d_in, d_out))
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d_out)
    )


def _output(logits: Tensor, mask: Tensor) -> HazardOutput:
    logits = logits.masked_fill(~mask, 0.0)
    hazards = torch.sigmoid(logits).masked_fill(~mask, 0.0)
    return HazardOutput(logits=logits, hazards=hazards, mask=mask)


# ---------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------


class VisitHazardHead(nn.Module):
    r"""One hazard per visit: the hazard of the event in the interval after each visit.

    .. math::
        \text{logit}_{b,t} = f\bigl(\bar x_{b,t}\bigr), \qquad
        h_{b,t} = \sigma(\text{logit}_{b,t})
        = P(\text{event in } (\tau_t, \tau_{t+1}] \mid T > \tau_t, \text{history}_{\le t})

    where :math:`\bar x_{b,t}` is the mean token state of visit :math:`t` (:func:`pool_visits`)
    and :math:`f` a linear layer (or a one-hidden-layer MLP). The head mixes nothing across
    visits, so a visit-causal encoder keeps the hazards causal. See the module docstring for
    the labels.

    Args:
        d_model: width ``d`` of the token states.
        hidden: width of a hidden layer; ``None`` for a single linear layer.
        dropout: dropout on the visit states (or the hidden layer).

    Shapes:
        - token_states: :math:`(B, L, d)`; visit_ids, attention_mask: :math:`(B, L)`
        - output: :class:`HazardOutput` with logits, hazards, mask of shape :math:`(B, V)`

    Example::

        head = VisitHazardHead(d_model=cfg.d_model)
        out = head(states, batch["visit_ids"], batch["attention_mask"])  # out.logits (B, V)
        loss = hazard_nll(out.logits, last_visit_index(out.mask), batch["events"], mask=out.mask)
    """

    def __init__(self, d_model: int, hidden: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model < 1:
            raise ValueError(f"d_model must be positive, got {d_model}")
        self.net = _mlp(d_model, 1, hidden, dropout)

    def forward(
        self,
        token_states: Tensor,
        visit_ids: Tensor,
        attention_mask: Tensor | None = None,
        n_visits: int | None = None,
    ) -> HazardOutput:
        visit_states, visit_mask = pool_visits(token_states, visit_ids, attention_mask, n_visits)
        logits = self.net(visit_states).squeeze(-1)  # (B, V, 1) -> (B, V)
        return _output(logits, visit_mask)


class BinHazardHead(nn.Module):
    r"""A discrete-time hazard curve over ``n_bins`` time bins from one patient representation.

    .. math::
        \text{logit}_{b,k} = f(z_b)_k, \qquad h_{b,k} = \sigma(\text{logit}_{b,k})
        = P(T \in (t_{k-1}, t_k] \mid T > t_{k-1}, z_b), \quad k = 0, \dots, T - 1

    the logistic-hazard model of Kvamme & Borgan (2021). :math:`z_b` is the patient state at
    the prediction time: given ``(B, d)`` states it is used as is (a ``[CLS]`` state, say);
    given token states ``(B, L, d)`` with ``visit_ids`` it is the mean state of the last real
    visit (:func:`last_visit_state`).

    Args:
        d_model: width ``d`` of the states.
        n_bins: number of time bins ``T``.
        hidden: width of a hidden layer; ``None`` for a single linear layer.
        dropout: dropout on the input (or the hidden layer).
        base_hazards: optional :math:`(T,)` hazards that the output layer's bias starts at,
            :math:`b_k = \operatorname{logit}(h_k)`, so an untrained model predicts the
            marginal curve instead of :math:`h = 0.5`: the training life table,
            :func:`ehrseq.survival.life_table_hazards`. The logit is taken in the precision
            given (float64 for a NumPy array), then stored in the layer's float32.

    Shapes:
        - states: :math:`(B, d)`, or :math:`(B, L, d)` with visit_ids :math:`(B, L)`
        - output: :class:`HazardOutput` with logits, hazards, mask of shape :math:`(B, T)`

    Reference:
        Kvamme, H., Borgan, Ø. (2021). Continuous and discrete-time survival prediction with
        neural networks. *Lifetime Data Analysis* 27, 710-736.
    """

    def __init__(
        self,
        d_model: int,
        n_bins: int,
        hidden: int | None = None,
        dropout: float = 0.0,
        base_hazards: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if d_model < 1 or n_bins < 1:
            raise ValueError(f"d_model and n_bins must be positive, got {d_model}, {n_bins}")
        self.n_bins = n_bins
        self.net = _mlp(d_model, n_bins, hidden, dropout)
        if base_hazards is not None:
            h = torch.as_tensor(base_hazards)
            if not h.dtype.is_floating_point:
                h = h.float()
            if h.shape != (n_bins,) or not bool(((h > 0) & (h < 1)).all()):
                raise ValueError(
                    f"base_hazards must be {n_bins} values in (0, 1), got {tuple(h.shape)}"
                )
            with torch.no_grad():
                self.net[-1].bias.copy_(torch.logit(h))  # (T,)

    def forward(
        self,
        states: Tensor,
        visit_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        n_visits: int | None = None,
    ) -> HazardOutput:
        if states.ndim == 3:
            if visit_ids is None:
                raise ValueError(
                    "token states (B, L, d) need visit_ids to find the last visit; or pass a "
                    "pooled (B, d) patient state"
                )
            visit_states, visit_mask = pool_visits(states, visit_ids, attention_mask, n_visits)
            states = last_visit_state(visit_states, visit_mask)  # (B, d)
        elif states.ndim != 2:
            raise ValueError(f"states must be (B, d) or (B, L, d), got {tuple(states.shape)}")
        logits = self.net(states)  # (B, T)
        return _output(logits, torch.ones_like(logits, dtype=torch.bool))
