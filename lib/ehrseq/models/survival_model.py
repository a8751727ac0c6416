r"""A survival model: any encoder of the book with any survival head, one batch in, hazards out.

.. math::
    \text{batch} \xrightarrow{\ \text{encoder}\ } \text{states}
    \xrightarrow{\ \text{head}\ } \text{logits},\ h = \sigma(\text{logits}),\
    S(t_k) = \prod_{j \le k} (1 - h_j)

The encoders are pure encoders (:class:`~ehrseq.models.behrt.BehrtEncoder` gives one state
per token of the flat batch; :class:`~ehrseq.models.lstm.VisitLSTM` and
:class:`~ehrseq.models.hierarchical.HierarchicalBehrt` one state per visit of the
hierarchical batch), and the heads of :mod:`ehrseq.models.survival_head` read states with
their visit ids. :class:`SurvivalModel` is the one place where the two meet, so every chapter
and test trains, predicts and scores the same composition:

- a **flat batch** (``codes (B, L)``): ``encoder(**encoder_inputs(batch))`` gives token
  states, and the head pools them by ``visit_ids``;
- a **hierarchical batch** (``codes (B, V, C)``): ``encoder(**hierarchical_inputs(batch))``
  gives visit states, each its own visit (:func:`~ehrseq.models.lstm.visit_slots`).

With :class:`~ehrseq.models.survival_head.BinHazardHead` the output is one hazard per time
bin from the state of the last real visit; with
:class:`~ehrseq.models.survival_head.VisitHazardHead` one hazard per visit. Start the bin
head at the training life table with ``base_hazards=life_table_hazards(...)``
(:func:`ehrseq.survival.life_table_hazards`). A frozen encoder (no parameter that requires
a gradient) stays in evaluation mode when the model trains, so its dropout is off and it is
the network the head will see at test time.

Derived in the book's survival-head chapter; used by every chapter that trains a model.
"""

from __future__ import annotations

from torch import nn

from ehrseq.models.behrt import encoder_inputs
from ehrseq.models.lstm import hierarchical_inputs, visit_slots
from ehrseq.models.survival_head import HazardOutput

__all__ = ["SurvivalModel"]


class SurvivalModel(nn.Module):
    r"""An encoder followed by a survival head: a batch of the task's loader -> :class:`HazardOutput`.

    Args:
        encoder: a pure encoder: token states ``(B, L, d)`` from the flat batch, or visit
            states ``(B, V, d)`` from the hierarchical batch.
        head: a :class:`~ehrseq.models.survival_head.BinHazardHead` or
            :class:`~ehrseq.models.survival_head.VisitHazardHead` of width ``d``.

    Shapes:
        - batch: flat (``codes`` :math:`(B, L)``, ``visit_ids``, ``attention_mask``, ...) or
          hierarchical (``codes`` :math:`(B, V, C)`, ``visit_mask`` :math:`(B, V)`, ...)
        - output: :class:`HazardOutput` of :math:`(B, T)` (bin head) or :math:`(B, V)`
          (visit head) tensors

    Raises:
        ValueError: from the encoder or the head on a batch that does not fit them (see
            :func:`~ehrseq.models.survival_head.pool_visits` and
            :func:`~ehrseq.models.lstm.check_hierarchical_batch`), or on a batch without
            ``codes``.

    Example::

        head = BinHazardHead(cfg.d_model, n_bins, base_hazards=life_table_hazards(d, e, n_bins))
        model = SurvivalModel(BehrtEncoder(cfg), head)
        out = model(batch)  # out.logits, out.hazards, out.surv: (B, n_bins)
        loss = hazard_nll(out.logits, batch["durations"], batch["events"])
    """

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def encoder_frozen(self) -> bool:
        """True when no encoder parameter requires a gradient (a frozen feature extractor)."""
        return not any(p.requires_grad for p in self.encoder.parameters())

    def train(self, mode: bool = True) -> SurvivalModel:
        super().train(mode)
        if self.encoder_frozen():
            self.encoder.eval()  # no dropout in a frozen encoder
        return self

    def forward(self, batch: dict) -> HazardOutput:
        if "codes" not in batch:
            raise ValueError("the batch has no 'codes': pass a batch of the task's loader")
        if batch["codes"].dim() == 3:  # hierarchical: one state per visit
            visit_mask = batch["visit_mask"]  # (B, V)
            states = self.encoder(**hierarchical_inputs(batch))  # (B, V, d)
            return self.head(
                states, visit_slots(visit_mask), visit_mask, n_visits=visit_mask.shape[1]
            )
        states = self.encoder(**encoder_inputs(batch))  # (B, L, d)
        return self.head(states, batch["visit_ids"], batch["attention_mask"])
