"""A survival network on fixed features: features -> hidden state -> hazard logit per bin.

Chapter 7 compares survival *losses*, which act on the hazard logits alone; a fixed-feature
network (:func:`ehrseq.baselines.token_count_features`) keeps the comparison cheap enough
for many seeds on a CPU, and the same :class:`~ehrseq.models.BinHazardHead` sits on the
sequence encoders of the other chapters.
"""

from __future__ import annotations

import torch
from torch import nn

from ehrseq.models.survival_head import BinHazardHead

__all__ = ["BagOfTokensSurvival"]


class BagOfTokensSurvival(nn.Module):
    """Fixed features -> a hidden patient state -> one hazard logit per time bin.

    Args:
        n_features: width of the input features.
        hidden: width of the hidden state (one GELU layer).
        n_bins: time bins of the head.
        dropout: on the hidden state and in the head.
        base_hazards: ``(n_bins,)`` the head's starting hazards (e.g. the life table).

    Shapes:
        x: ``(B, n_features)``; output: :class:`~ehrseq.models.HazardOutput` with
        ``(B, n_bins)`` logits and hazards.
    """

    def __init__(
        self,
        n_features: int,
        hidden: int,
        n_bins: int,
        dropout: float,
        base_hazards: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_features, hidden), nn.GELU(), nn.Dropout(dropout))
        self.head = BinHazardHead(hidden, n_bins, dropout=dropout, base_hazards=base_hazards)

    def forward(self, x: torch.Tensor):
        return self.head(self.body(x))  # HazardOutput: logits, hazards (B, T)
