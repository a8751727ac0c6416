r"""MiME: a visit as a sum of diagnosis objects, each a diagnosis shaped by its treatments.

Written bottom-up: :class:`MiMEConfig` (on :class:`ObjectModelConfig`, the sizes it
shares with the flat GRU of :mod:`ehrseq.models.flat_visit`), the input contract
(:func:`mime_inputs`, :func:`check_object_batch`), :class:`DiagnosisObjects` (the object embedding),
:class:`MiMEEncoder` (objects -> visits -> GRU states, a pure encoder), then the two models
that put a head on it: :class:`MiME` (the paper's sigmoid head for a binary outcome, with the
auxiliary losses) and :class:`MiMESurvival` (a survival head of
:mod:`ehrseq.models.survival_head`, composed as :class:`~ehrseq.models.SurvivalModel`
composes a hierarchical batch).

The input is the padded object batch of :func:`ehrseq.data.visit_objects.pad_visit_objects`:
diagnoses ``dx_codes (B, V, D)``, the drugs ``rx_codes (B, V, D, R)`` and procedures
``pr_codes (B, V, D, P)`` linked to each, their masks, and ``visit_mask (B, V)``.

**Diagnosis object** (as in the original code, ``mp2893/mime:mime.py``), with
:math:`r(\cdot) = \phi(E[\cdot])` an embedding followed by the activation :math:`\phi`
(ReLU in the original ``main()``):

.. math::
    o_i = \phi\Bigl(W_o\bigl[\,r(d_i)
          + \phi(W_{dr}\, r(d_i)) \odot \textstyle\sum_j r(rx_{ij})
          + \phi(W_{dp}\, r(d_i)) \odot \textstyle\sum_k r(pr_{ik})\bigr]\Bigr)

The element-wise products are where the links matter: a drug moves the object of *its*
diagnosis, scaled by a gate that the diagnosis chooses.

**Visit and patient.** The original code sums the objects, with no projection and no skip
term; ``visit_skip=True`` adds a skip from the diagnoses,
:math:`v_t = \sum_i o_i + \phi(W_v \sum_i r(d_i))` (the residual form this project asked
for; the exact skip terms of §3 of the paper were not checked here, see SOURCES.md H1).
A GRU runs over the visits, forward only and on packed sequences, so the state :math:`h_t`
depends on visits :math:`\le t` only and padded visits never enter it:

.. math::
    v_t = \sum_i m_{t,i}\, o_{t,i}, \qquad h_t = \mathrm{GRU}(v_t, h_{t-1}), \qquad
    \hat y = \sigma(w^\top h_{T} + b)

**Loss** (original ``train()``; its ``main()`` ships ``aux_lambda = 0``):

.. math::
    \mathcal L = \mathrm{BCE}(y, \hat y) + \lambda_\text{aux}\bigl[
      \mathrm{CE}(d_i \mid o_i) + \mathrm{BCE}(\{rx_{ij}\}_j \mid o_i)
      + \mathrm{BCE}(\{pr_{ik}\}_k \mid o_i)\bigr]

each auxiliary term a linear read-out of the object vector :math:`o_i`, averaged over the real
objects (the original also averaged over padded objects, with their logits zeroed; here they
are left out, so padding changes nothing). The original's :math:`10^{-3}\sum W^2` is the
optimiser's weight decay here.

Everything is vectorised over objects and treatments: the real objects of the whole batch
are gathered (``dx_codes[dx_mask]``, most slots are padding), embedded with one lookup per
kind and masked sums over their treatments, and scattered back; the only loop is the GRU's
over visits.

Reference:
    Choi, E., Xiao, C., Stewart, W. F., Sun, J. (2018). MiME: Multilevel medical embedding of
    electronic health records for predictive healthcare. *NeurIPS* 31, 4547-4557.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ehrseq.models.lstm import visit_slots
from ehrseq.models.survival_head import HazardOutput, last_visit_index

__all__ = [
    "MIME_INPUTS",
    "ObjectModelConfig",
    "MiMEConfig",
    "MiMEOutput",
    "DiagnosisObjects",
    "MiMEEncoder",
    "MiME",
    "MiMESurvival",
    "check_object_batch",
    "mime_inputs",
    "last_visit_logits",
    "treatment_targets",
    "visit_gru",
]

#: Keys of the object batch that :class:`MiMEEncoder` reads.
MIME_INPUTS = ("dx_codes", "rx_codes", "pr_codes", "dx_mask", "rx_mask", "pr_mask", "visit_mask")

_ACT = {"relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}


@dataclass
class ObjectModelConfig:
    """Sizes of a model that reads the object batch: MiME's and the flat GRU's
    (:class:`~ehrseq.models.flat_visit.FlatVisitConfig`), alike but for structure.

    Attributes:
        n_dx, n_rx, n_pr: embedding rows per kind, padding (0) and unknown (1) included
            (:attr:`ehrseq.data.visit_objects.ObjectVocab.sizes`).
        d_embed: width of a code embedding :math:`r(\\cdot)` (MiME's original: 200).
        d_object: width of an object and of a visit vector (the original: 256).
        d_hidden: width of the GRU state (the original: 256).
        activation: :math:`\\phi`, ``"relu"`` (original ``main()``), ``"sigmoid"`` or ``"tanh"``.
        dropout: on the visit vectors.

    Raises:
        ValueError: on a kind with fewer than 2 rows, a width below 1, an unknown
            activation or a dropout outside [0, 1).
    """

    n_dx: int
    n_rx: int
    n_pr: int
    d_embed: int = 64
    d_object: int = 64
    d_hidden: int = 64
    activation: Literal["relu", "sigmoid", "tanh"] = "relu"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("n_dx", "n_rx", "n_pr"):
            if getattr(self, name) < 2:
                raise ValueError(
                    f"{name} = {getattr(self, name)}: needs padding and unknown (>= 2)"
                )
        for name in ("d_embed", "d_object", "d_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} = {getattr(self, name)}: must be at least 1")
        if self.activation not in _ACT:
            raise ValueError(f"activation = {self.activation!r}: one of {sorted(_ACT)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout = {self.dropout}: must be in [0, 1)")

    @property
    def sizes(self) -> tuple[int, int, int]:
        """``(n_dx, n_rx, n_pr)``, as :func:`check_object_batch` takes them."""
        return (self.n_dx, self.n_rx, self.n_pr)

    @classmethod
    def from_vocab(cls, vocab, **overrides) -> Self:
        """A config sized for an :class:`~ehrseq.data.visit_objects.ObjectVocab`."""
        n_dx, n_rx, n_pr = vocab.sizes
        return cls(n_dx=n_dx, n_rx=n_rx, n_pr=n_pr, **overrides)


@dataclass
class MiMEConfig(ObjectModelConfig):
    """Sizes of MiME: those of :class:`ObjectModelConfig`, and

    Attributes:
        visit_skip: add :math:`\\phi(W_v \\sum_i r(d_i))` to the visit (module docstring).
        aux_lambda: weight of the auxiliary losses in :meth:`MiME.loss` (0 turns them off).

    Raises:
        ValueError: as :class:`ObjectModelConfig`, or on ``aux_lambda < 0``.
    """

    visit_skip: bool = False
    aux_lambda: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.aux_lambda < 0:
            raise ValueError(f"aux_lambda = {self.aux_lambda}: must be >= 0")


# ---------------------------------------------------------------------------------------------
# The object batch
# ---------------------------------------------------------------------------------------------


def mime_inputs(batch: dict) -> dict[str, Tensor]:
    """The keys of an object batch that MiME reads: ``encoder(**mime_inputs(batch))``."""
    return {k: batch[k] for k in MIME_INPUTS}


def check_object_batch(
    dx_codes: Tensor,
    rx_codes: Tensor,
    pr_codes: Tensor,
    dx_mask: Tensor,
    rx_mask: Tensor,
    pr_mask: Tensor,
    visit_mask: Tensor,
    sizes: tuple[int, int, int] | None = None,
) -> None:
    """Raise a clear ``ValueError`` when an object batch does not fit the contract.

    Shapes:
        dx_codes, dx_mask ``(B, V, D)``; rx_codes, rx_mask ``(B, V, D, R)``; pr_codes,
        pr_mask ``(B, V, D, P)``; visit_mask ``(B, V)``.

    Raises:
        ValueError: wrong ranks or shapes, masks that are not bool, a real treatment in a
            padded object or a real object in a padded visit, a patient with no real visit,
            real visits after a padded one, or codes outside ``[0, sizes)``.
    """
    if dx_codes.dim() != 3:
        raise ValueError(f"dx_codes must be (B, V, D), got {tuple(dx_codes.shape)}")
    B, V, D = dx_codes.shape
    for name, t, lead, rank in (
        ("rx_codes", rx_codes, (B, V, D), 4),
        ("pr_codes", pr_codes, (B, V, D), 4),
        ("dx_mask", dx_mask, (B, V, D), 3),
        ("visit_mask", visit_mask, (B, V), 2),
    ):
        if t.dim() != rank or tuple(t.shape[: len(lead)]) != lead:
            raise ValueError(f"{name} has shape {tuple(t.shape)}; dx_codes is {(B, V, D)}")
    for name, m, like in (("rx_mask", rx_mask, rx_codes), ("pr_mask", pr_mask, pr_codes)):
        if m.shape != like.shape:
            raise ValueError(f"{name} has shape {tuple(m.shape)}, expected {tuple(like.shape)}")
    for name, m in (
        ("dx_mask", dx_mask),
        ("rx_mask", rx_mask),
        ("pr_mask", pr_mask),
        ("visit_mask", visit_mask),
    ):
        if m.dtype != torch.bool:
            raise ValueError(f"{name} must be a bool tensor, got {m.dtype}")
    if bool((rx_mask & ~dx_mask[..., None]).any() or (pr_mask & ~dx_mask[..., None]).any()):
        raise ValueError("a treatment mask is True in an object that dx_mask marks as padding")
    if bool((dx_mask & ~visit_mask[..., None]).any()):
        raise ValueError("dx_mask is True in a visit that visit_mask marks as padding")
    if B and not bool(visit_mask.any(1).all()):
        empty = (~visit_mask.any(1)).nonzero().flatten()[:5].tolist()
        raise ValueError(f"visit_mask is all padding for batch rows {empty}")
    if V > 1 and bool((visit_mask[:, 1:] & ~visit_mask[:, :-1]).any()):
        raise ValueError("real visits must come first in each row (right padding of visit_mask)")
    if sizes is not None:
        for name, codes, n in zip(
            ("dx_codes", "rx_codes", "pr_codes"), (dx_codes, rx_codes, pr_codes), sizes
        ):
            if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= n):
                raise ValueError(
                    f"{name} span [{int(codes.min())}, {int(codes.max())}], outside [0, {n})"
                )


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------


class DiagnosisObjects(nn.Module):
    r"""The diagnosis-object embedding :math:`o_i` (module docstring), for every object at once.

    Shapes:
        - inputs: the object batch (:data:`MIME_INPUTS` but ``visit_mask``)
        - output: ``(objects (B, V, D, d_object), r_dx (B, V, D, d_embed))``, both 0 at padded
          objects
    """

    def __init__(self, cfg: MiMEConfig) -> None:
        super().__init__()
        self.act = _ACT[cfg.activation]
        self.emb_dx = nn.Embedding(cfg.n_dx, cfg.d_embed, padding_idx=0)
        self.emb_rx = nn.Embedding(cfg.n_rx, cfg.d_embed, padding_idx=0)
        self.emb_pr = nn.Embedding(cfg.n_pr, cfg.d_embed, padding_idx=0)
        self.W_dr = nn.Linear(cfg.d_embed, cfg.d_embed)
        self.W_dp = nn.Linear(cfg.d_embed, cfg.d_embed)
        self.W_o = nn.Linear(cfg.d_embed, cfg.d_object)

    def forward(
        self,
        dx_codes: Tensor,
        rx_codes: Tensor,
        pr_codes: Tensor,
        dx_mask: Tensor,
        rx_mask: Tensor,
        pr_mask: Tensor,
    ) -> tuple[Tensor, Tensor]:
        act = self.act
        m = dx_mask  # (B, V, D): only the real objects are embedded (padding is most slots)
        r_dx = act(self.emb_dx(dx_codes[m]))  # (N, e), N real objects
        r_rx = act(self.emb_rx(rx_codes[m])) * rx_mask[m][..., None]  # (N, R, e)
        r_pr = act(self.emb_pr(pr_codes[m])) * pr_mask[m][..., None]  # (N, P, e)
        g_rx = act(self.W_dr(r_dx)) * r_rx.sum(1)  # (N, e): gate (.) sum of its drugs
        g_pr = act(self.W_dp(r_dx)) * r_pr.sum(1)  # (N, e)
        o = act(self.W_o(r_dx + g_rx + g_pr))  # (N, d_object)
        objects = o.new_zeros(*m.shape, o.shape[-1]).masked_scatter(m[..., None], o)
        r_dx = r_dx.new_zeros(*m.shape, r_dx.shape[-1]).masked_scatter(m[..., None], r_dx)
        return objects, r_dx


def visit_gru(gru: nn.GRU, x: Tensor, visit_mask: Tensor) -> Tensor:
    r"""Run ``gru`` forward over the real visits of each patient, :math:`h_t =
    \mathrm{GRU}(x_t, h_{t-1})`, on packed sequences: padded visits enter no state.

    Args:
        gru: a ``batch_first`` GRU from ``d`` to ``H``.
        x: the visit vectors.
        visit_mask: True on real visits, which come first.

    Shapes:
        x: ``(B, V, d)``; visit_mask: ``(B, V)``; output ``(B, V, H)``, 0 at padding.
    """
    V = visit_mask.shape[1]
    lengths = visit_mask.sum(1).cpu()  # (B,), real visits come first
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, _ = gru(packed)
    h, _ = pad_packed_sequence(out, batch_first=True, total_length=V)  # (B, V, H)
    return h


def last_visit_logits(
    out: nn.Linear,
    states: Tensor,
    visit_mask: Tensor,
) -> tuple[Tensor, Tensor]:
    r"""The outcome logit :math:`w^\top h_t + b` at every visit and at the last one.

    Args:
        out: the head, a linear map from ``H`` to 1.
        states: the GRU states.
        visit_mask: True on real visits.

    Shapes:
        states: ``(B, V, H)``; visit_mask: ``(B, V)``; output ``(logits (B,),
        visit_logits (B, V))``, the latter 0 at padded visits.
    """
    visit_logits = out(states).squeeze(-1).masked_fill(~visit_mask, 0.0)  # (B, V)
    rows = torch.arange(states.shape[0], device=states.device)
    logits = visit_logits[rows, last_visit_index(visit_mask)]  # (B,)
    return logits, visit_logits


class MiMEEncoder(nn.Module):
    r"""MiME as a pure encoder: object batch in, one GRU state per visit out.

    Args:
        cfg: a :class:`MiMEConfig`.

    Shapes:
        - inputs: the object batch (:data:`MIME_INPUTS`)
        - output: visit states ``(B, V, d_hidden)``, 0 at padded visits;
          :meth:`encode` also returns the objects ``(B, V, D, d_object)``

    Raises:
        ValueError: a batch that breaks the contract (:func:`check_object_batch`).
    """

    def __init__(self, cfg: MiMEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.objects = DiagnosisObjects(cfg)
        self.W_v = nn.Linear(cfg.d_embed, cfg.d_object) if cfg.visit_skip else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(cfg.d_object, cfg.d_hidden, batch_first=True)

    def visits(self, objects: Tensor, r_dx: Tensor) -> Tensor:
        """Visit vectors ``(B, V, d_object)`` from objects ``(B, V, D, d_object)``."""
        v = objects.sum(2)  # (B, V, d_object), padded objects are 0
        if self.W_v is not None:
            v = v + self.objects.act(self.W_v(r_dx.sum(2)))  # (B, V, d_object)
        return v

    def encode(
        self,
        dx_codes: Tensor,
        rx_codes: Tensor,
        pr_codes: Tensor,
        dx_mask: Tensor,
        rx_mask: Tensor,
        pr_mask: Tensor,
        visit_mask: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """``(visit states (B, V, d_hidden), objects (B, V, D, d_object))``."""
        check_object_batch(
            dx_codes, rx_codes, pr_codes, dx_mask, rx_mask, pr_mask, visit_mask,
            self.cfg.sizes,
        )  # fmt: skip
        objects, r_dx = self.objects(dx_codes, rx_codes, pr_codes, dx_mask, rx_mask, pr_mask)
        x = self.dropout(self.visits(objects, r_dx))  # (B, V, d_object)
        return visit_gru(self.gru, x, visit_mask), objects  # (B, V, d_hidden), objects

    def forward(self, **inputs: Tensor) -> Tensor:
        return self.encode(**inputs)[0]


@dataclass
class MiMEOutput:
    """What :class:`MiME` returns.

    Attributes:
        logits: the outcome logit at the last real visit, ``(B,)``.
        visit_logits: the outcome logit after every visit, ``(B, V)``, 0 at padded visits
            (the prediction at visit ``t`` reads visits ``<= t`` only).
        states: GRU states ``(B, V, d_hidden)``.
        objects: object vectors ``(B, V, D, d_object)``, 0 at padded objects.
    """

    logits: Tensor
    visit_logits: Tensor
    states: Tensor
    objects: Tensor

    @property
    def probs(self) -> Tensor:
        """:math:`\\hat y = \\sigma(\\text{logit})`, ``(B,)``."""
        return torch.sigmoid(self.logits)


def treatment_targets(codes: Tensor, mask: Tensor, n_codes: int) -> Tensor:
    """Multi-hot targets of each object's treatments: ``(N, K)`` codes -> ``(N, n_codes)``.

    Column 0 (padding) is always 0; a code listed twice counts once.
    """
    hot = codes.new_zeros(codes.shape[0], n_codes, dtype=torch.float32)
    hot.scatter_add_(1, codes, mask.to(hot.dtype))  # (N, n_codes)
    hot[:, 0] = 0.0
    return hot.clamp_(max=1.0)


class MiME(nn.Module):
    r"""MiME with the paper's head: a sigmoid over the last GRU state, plus the auxiliary
    read-outs of each object's diagnosis, drugs and procedures (module docstring).

    Args:
        cfg: a :class:`MiMEConfig` (``cfg.aux_lambda`` weighs the auxiliary losses).

    Shapes:
        - batch: the object batch (:data:`MIME_INPUTS`); labels ``(B,)`` in {0, 1}
        - output: :class:`MiMEOutput`

    Example::

        vocab = ObjectVocab.fit(objects.subset(train_ids))
        batch, cuts = pad_visit_objects(objects, vocab, train_ids)
        model = MiME(MiMEConfig.from_vocab(vocab, aux_lambda=0.1))
        losses = model.loss(batch, labels)  # {"loss", "bce", "aux", ...}
        losses["loss"].backward()
    """

    def __init__(self, cfg: MiMEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = MiMEEncoder(cfg)
        self.out = nn.Linear(cfg.d_hidden, 1)
        self.aux_dx = nn.Linear(cfg.d_object, cfg.n_dx)
        self.aux_rx = nn.Linear(cfg.d_object, cfg.n_rx)
        self.aux_pr = nn.Linear(cfg.d_object, cfg.n_pr)

    def forward(self, batch: dict) -> MiMEOutput:
        visit_mask = batch["visit_mask"]
        states, objects = self.encoder.encode(**mime_inputs(batch))  # (B,V,H), (B,V,D,d_o)
        logits, visit_logits = last_visit_logits(self.out, states, visit_mask)  # (B,), (B,V)
        return MiMEOutput(logits, visit_logits, states, objects)

    def aux_losses(self, batch: dict, objects: Tensor) -> dict[str, Tensor]:
        r"""The three auxiliary losses over the real objects: CE of the diagnosis, mean BCE
        of the drug and procedure multi-hot vectors (averaged over objects and codes)."""
        cfg = self.cfg
        m = batch["dx_mask"]  # (B, V, D)
        o = objects[m]  # (N, d_object), the real objects only
        dx = batch["dx_codes"][m]  # (N,)
        rx = treatment_targets(batch["rx_codes"][m], batch["rx_mask"][m], cfg.n_rx)  # (N, n_rx)
        pr = treatment_targets(batch["pr_codes"][m], batch["pr_mask"][m], cfg.n_pr)  # (N, n_pr)
        return {
            "aux_dx": F.cross_entropy(self.aux_dx(o), dx),
            "aux_rx": F.binary_cross_entropy_with_logits(self.aux_rx(o), rx),
            "aux_pr": F.binary_cross_entropy_with_logits(self.aux_pr(o), pr),
        }

    def loss(self, batch: dict, labels: Tensor) -> dict[str, Tensor]:
        r""":math:`\mathcal L = \mathrm{BCE} + \lambda_\text{aux}(\mathrm{CE}_{dx} +
        \mathrm{BCE}_{rx} + \mathrm{BCE}_{pr})`; returns ``loss``, ``bce``, ``aux`` and each
        auxiliary term. With ``aux_lambda = 0`` the auxiliary terms are not computed and
        ``loss`` is the BCE itself.

        Raises:
            ValueError: labels that are not ``(B,)``.
        """
        out = self(batch)
        if labels.shape != out.logits.shape:
            raise ValueError(f"labels must be {tuple(out.logits.shape)}, got {tuple(labels.shape)}")
        bce = F.binary_cross_entropy_with_logits(out.logits, labels.to(out.logits.dtype))
        result = {"bce": bce}
        if self.cfg.aux_lambda > 0:
            aux = self.aux_losses(batch, out.objects)
            result |= aux
            result["aux"] = aux["aux_dx"] + aux["aux_rx"] + aux["aux_pr"]
            result["loss"] = bce + self.cfg.aux_lambda * result["aux"]
        else:
            result["aux"] = bce.new_zeros(())
            result["loss"] = bce
        return result


class MiMESurvival(nn.Module):
    r"""MiME visit states under a survival head: object batch -> :class:`HazardOutput`.

    The same composition as :class:`~ehrseq.models.SurvivalModel` on a hierarchical batch:
    one state per visit, given to the head with ``visit_ids = visit_slots(visit_mask)``
    (each visit its own slot). With
    :class:`~ehrseq.models.survival_head.BinHazardHead` the hazards over time bins come from
    the state of the last real visit; with
    :class:`~ehrseq.models.survival_head.VisitHazardHead` there is one hazard per visit,
    and the GRU makes the hazard after visit :math:`t` read visits :math:`\le t` only.

    Args:
        encoder: a :class:`MiMEEncoder`.
        head: a survival head of width ``cfg.d_hidden``.

    Shapes:
        - batch: the object batch (:data:`MIME_INPUTS`)
        - output: :class:`HazardOutput` of ``(B, T)`` (bin head) or ``(B, V)`` (visit head)
    """

    def __init__(self, encoder: MiMEEncoder, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, batch: dict) -> HazardOutput:
        visit_mask = batch["visit_mask"]  # (B, V)
        states = self.encoder(**mime_inputs(batch))  # (B, V, d_hidden)
        return self.head(states, visit_slots(visit_mask), visit_mask, n_visits=visit_mask.shape[1])
