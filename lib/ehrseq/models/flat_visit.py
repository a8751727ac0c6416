r"""A flat GRU over visits: MiME's inputs without MiME's structure (the baseline it is
compared with).

The visit is the set of its distinct codes, diagnoses, drugs and procedures alike; which
diagnosis a treatment was ordered for is thrown away. With :math:`r(c) = \phi(E[c])` as in
:mod:`ehrseq.models.mime` and :math:`C_t` the distinct codes of visit :math:`t`,

.. math::
    v_t = \phi\Bigl(W_o \sum_{c \in C_t} r(c)\Bigr), \qquad
    h_t = \mathrm{GRU}(v_t, h_{t-1}), \qquad \hat y = \sigma(w^\top h_T + b)

so it is MiME's object embedding with the diagnosis-chosen gates removed and the objects of
a visit merged into one: the same embeddings, widths, GRU and head. It reads the same padded
object batch (:func:`ehrseq.data.visit_objects.pad_visit_objects`), so both models see the
same visits of the same patients; a treatment linked to two diagnoses of a visit counts
once (the visit's codes form a set, built as a multi-hot vector, vectorised over the batch).

Reference:
    Choi, E., Bahadori, M. T., Schuetz, A., Stewart, W. F., Sun, J. (2016). Doctor AI:
    predicting clinical events via recurrent neural networks. *MLHC* 56, 301-318 (visits
    as sums of code vectors fed to an RNN); MiME's "GRU" baseline (Choi et al., 2018).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ehrseq.models.mime import (
    _ACT,
    MiMEOutput,
    ObjectModelConfig,
    check_object_batch,
    last_visit_logits,
    mime_inputs,
    visit_gru,
)

__all__ = ["FlatVisitConfig", "FlatVisitGRU", "visit_multi_hot"]


@dataclass
class FlatVisitConfig(ObjectModelConfig):
    """Sizes of the flat GRU: MiME's (:class:`~ehrseq.models.mime.ObjectModelConfig`,
    the fields :class:`~ehrseq.models.mime.MiMEConfig` shares), none of its own.

    ``d_object`` is the width of a visit vector (MiME's object width); ``dropout`` is on
    the visit vectors.
    """


def visit_multi_hot(batch: dict, sizes: tuple[int, int, int]) -> Tensor:
    """The distinct codes of every visit as a multi-hot vector over one vocabulary
    (diagnoses, then drugs, then procedures; each kind's padding column is 0).

    Shapes:
        batch: the object batch; output ``(B, V, n_dx + n_rx + n_pr)`` float.
    """
    n_dx, n_rx, n_pr = sizes
    B, V, D = batch["dx_codes"].shape
    codes = torch.cat(
        [
            batch["dx_codes"].reshape(B, V, D),  # (B, V, D)
            (batch["rx_codes"] + n_dx).reshape(B, V, -1),  # (B, V, D*R)
            (batch["pr_codes"] + n_dx + n_rx).reshape(B, V, -1),  # (B, V, D*P)
        ],
        -1,
    )  # (B, V, K)
    mask = torch.cat(
        [
            batch["dx_mask"],
            batch["rx_mask"].reshape(B, V, -1),
            batch["pr_mask"].reshape(B, V, -1),
        ],
        -1,
    )  # (B, V, K)
    hot = torch.zeros(B, V, n_dx + n_rx + n_pr, device=codes.device)
    hot.scatter_add_(2, codes, mask.to(hot.dtype))  # (B, V, n_codes), counts
    return hot.clamp_(max=1.0)  # a code counts once per visit


class FlatVisitGRU(nn.Module):
    r"""Multi-hot visit -> :math:`\phi(W_o \sum r(c))` -> GRU -> logit at the last visit.

    Args:
        cfg: a :class:`FlatVisitConfig`.

    Shapes:
        - batch: the object batch (:data:`~ehrseq.models.mime.MIME_INPUTS`); labels ``(B,)``
        - output: :class:`~ehrseq.models.mime.MiMEOutput` (``objects`` holds the visit
          vectors ``(B, V, d_object)``: there are no objects)

    Raises:
        ValueError: a batch that breaks the contract
            (:func:`~ehrseq.models.mime.check_object_batch`).
    """

    def __init__(self, cfg: FlatVisitConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.act = _ACT[cfg.activation]
        self.sizes = cfg.sizes
        self.emb = nn.Embedding(sum(self.sizes), cfg.d_embed)
        self.W_o = nn.Linear(cfg.d_embed, cfg.d_object)
        self.dropout = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(cfg.d_object, cfg.d_hidden, batch_first=True)
        self.out = nn.Linear(cfg.d_hidden, 1)

    def forward(self, batch: dict) -> MiMEOutput:
        check_object_batch(*mime_inputs(batch).values(), sizes=self.sizes)
        visit_mask = batch["visit_mask"]  # (B, V)
        hot = visit_multi_hot(batch, self.sizes)  # (B, V, n_codes)
        summed = hot @ self.act(self.emb.weight)  # (B, V, d_embed): sum of r(c) over C_t
        x = self.dropout(self.act(self.W_o(summed)))  # (B, V, d_object)
        h = visit_gru(self.gru, x, visit_mask)  # (B, V, d_hidden), as MiME's encoder
        logits, visit_logits = last_visit_logits(self.out, h, visit_mask)  # (B,), (B,V)
        return MiMEOutput(logits, visit_logits, h, x * visit_mask[..., None])

    def loss(self, batch: dict, labels: Tensor) -> dict[str, Tensor]:
        """The BCE of the outcome (``loss`` and ``bce``), as :meth:`MiME.loss` with
        ``aux_lambda = 0``.

        Raises:
            ValueError: labels that are not ``(B,)``.
        """
        out = self(batch)
        if labels.shape != out.logits.shape:
            raise ValueError(f"labels must be {tuple(out.logits.shape)}, got {tuple(labels.shape)}")
        bce = F.binary_cross_entropy_with_logits(out.logits, labels.to(out.logits.dtype))
        return {"loss": bce, "bce": bce, "aux": bce.new_zeros(())}
