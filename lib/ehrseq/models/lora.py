r"""Low-rank adaptation (LoRA) of a pretrained encoder, and the frozen-encoder regime.

LoRA keeps a pretrained weight :math:`W_0` frozen and learns a low-rank update,

.. math::
    y = x W_0^\top + b + \frac{\alpha}{r}\, \operatorname{dropout}(x)\, A^\top B^\top,
    \qquad A \in \mathbb{R}^{r \times d_\text{in}},\ B \in \mathbb{R}^{d_\text{out} \times r},

with :math:`A` initialised like an ``nn.Linear`` weight (Kaiming-uniform, :math:`a =
\sqrt 5`) and :math:`B = 0`, so the adapted model starts as the pretrained one. After
training, :math:`\frac{\alpha}{r} B A` can be merged into :math:`W_0` (no extra cost at
inference) and unmerged again. :class:`LoRALinear` is numerically the same layer as peft's
``lora.Linear`` with ``lora_dropout=0`` (tested with the same weights), written out so a
chapter can read it.

Only ``nn.Linear`` layers can be wrapped: ``nn.MultiheadAttention`` reads
``out_proj.weight`` functionally, so a wrapper on it is never called. The book's encoders use
their own ``q_proj``/``k_proj``/``v_proj``/``o_proj`` linear layers for that reason, and
:func:`apply_lora` refuses to wrap a child of ``nn.MultiheadAttention``.

Three fine-tuning regimes, side by side in the book's fine-tuning chapter:

- full fine-tuning: every parameter trains;
- frozen encoder: ``freeze(encoder)`` and train only the head;
- LoRA: ``apply_lora(model, trainable=("head",))`` and train the adapters plus the head;
  :func:`count_parameters` gives the trainable share of each.

Reference:
    Hu, E. J., Shen, Y., Wallis, P., Allen-Zhu, Z., Li, Y., Wang, S., Wang, L., Chen, W.
    (2022). LoRA: Low-rank adaptation of large language models. *ICLR*. arXiv:2106.09685.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = [
    "ATTENTION_MODULES",
    "MLP_MODULES",
    "LoRALinear",
    "apply_lora",
    "merge_lora",
    "unmerge_lora",
    "lora_modules",
    "count_parameters",
    "freeze",
]

ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("fc1", "fc2")


class LoRALinear(nn.Module):
    r"""An ``nn.Linear`` with a frozen weight and a trainable low-rank update.

    .. math::
        y = \text{base}(x) + s\, \operatorname{dropout}(x)\, A^\top B^\top, \qquad
        s = \alpha / r

    Args:
        base: the pretrained linear layer; its weight and bias are frozen (``requires_grad``
            set to False) and kept as ``self.base``.
        r: rank of the update, :math:`r \ge 1`.
        alpha: scaling numerator; the update is multiplied by :math:`\alpha / r`.
        dropout: dropout probability on the adapter's input (not on the base path).

    Shapes:
        - input: :math:`(*, d_\text{in})`
        - output: :math:`(*, d_\text{out})`
        - lora_A: :math:`(r, d_\text{in})`; lora_B: :math:`(d_\text{out}, r)`

    Raises:
        ValueError: if ``base`` is not an ``nn.Linear``, ``r < 1``, ``alpha <= 0`` or
            ``dropout`` is outside [0, 1).

    Reference:
        Hu, E. J. et al. (2022). LoRA: Low-rank adaptation of large language models. *ICLR*.
    """

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise ValueError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"r must be a positive integer, got {r!r}")
        if not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.r = r
        self.alpha = float(alpha)
        self.scaling = self.alpha / r
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(
            torch.empty(base.out_features, r, dtype=w.dtype, device=w.device)
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.reset_lora_parameters()

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def reset_lora_parameters(self) -> None:
        """A like an ``nn.Linear`` weight (Kaiming-uniform, a = sqrt(5)), B = 0, as peft."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def delta_weight(self) -> Tensor:
        r"""The update :math:`s\, B A`, shape :math:`(d_\text{out}, d_\text{in})`."""
        return (self.lora_B @ self.lora_A) * self.scaling  # (out, r) @ (r, in) -> (out, in)

    def forward(self, x: Tensor) -> Tensor:
        y = self.base(x)  # (*, out)
        if self.merged:  # the update already lives in base.weight
            return y
        update = self.dropout(x) @ self.lora_A.T  # (*, in) -> (*, r)
        return y + (update @ self.lora_B.T) * self.scaling  # (*, r) -> (*, out)

    @torch.no_grad()
    def merge(self) -> None:
        r"""Add :math:`s\, B A` into the base weight and switch the adapter path off.

        A no-op when already merged. Do not train while merged: the adapter gets no
        gradient, and :meth:`unmerge` subtracts the *current* :math:`s\, B A`.
        """
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        r"""Subtract :math:`s\, B A` from the base weight and switch the adapter path back on."""
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha:g}, scaling={self.scaling:g}, merged={self.merged}"


def _matches(name: str, names: Iterable[str]) -> bool:
    """peft's rule for a list of target names: the full name or its last dotted parts."""
    return any(name == n or name.endswith("." + n) for n in names)


def freeze(module: nn.Module) -> nn.Module:
    """Freeze every parameter of ``module`` (``requires_grad = False``) and return it.

    The frozen-encoder regime: ``freeze(model.encoder)`` and train the head alone. Freezing
    does not switch dropout off; call ``module.eval()`` for that (and note that
    ``model.train()`` switches it back on).

    Args:
        module: any module.

    Shapes:
        - output: the same module, modified in place
    """
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def lora_modules(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    """The ``(name, module)`` pairs of every :class:`LoRALinear` in ``model``."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def apply_lora(
    model: nn.Module,
    target_modules: Iterable[str] = ATTENTION_MODULES,
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    include_mlp: bool = False,
    mlp_modules: Iterable[str] = MLP_MODULES,
    trainable: Iterable[str] = (),
) -> nn.Module:
    r"""Wrap the matching ``nn.Linear`` layers of ``model`` in :class:`LoRALinear`, in place.

    A submodule is targeted when its qualified name equals a target or ends with
    ``"." + target`` (peft's rule for a list of names): ``"q_proj"`` matches
    ``"encoder.layers.0.attn.q_proj"``. Then every parameter is frozen except the adapters'
    ``lora_A``/``lora_B`` and the parameters of the modules named in ``trainable`` (same
    matching rule), e.g. the survival head.

    .. math::
        \#\text{trainable} = \sum_{\text{wrapped}} r\,(d_\text{in} + d_\text{out})
        + \#\text{params}(\text{trainable modules})

    Args:
        model: the model to adapt (modified in place and returned).
        target_modules: names of the linear layers to adapt.
        r: rank of every update.
        alpha: scaling numerator; the update is multiplied by :math:`\alpha / r`.
        dropout: dropout on the adapters' input.
        include_mlp: also adapt the feed-forward layers named in ``mlp_modules``.
        mlp_modules: names of the feed-forward linear layers.
        trainable: names of modules to keep fully trainable (a head).

    Shapes:
        - output: the same model, modified in place

    Raises:
        ValueError: if no layer matches, a matching layer is not an ``nn.Linear``, is
            already adapted, or belongs to an ``nn.MultiheadAttention`` (which would never
            call it), or a name in ``trainable`` matches nothing.

    Reference:
        Hu, E. J. et al. (2022). LoRA: Low-rank adaptation of large language models. *ICLR*.
    """
    targets = tuple(target_modules) + (tuple(mlp_modules) if include_mlp else ())
    if not targets:
        raise ValueError("no target_modules given")
    keep = tuple(trainable)
    found = [(n, m) for n, m in model.named_modules() if n and _matches(n, targets)]
    if not found:
        raise ValueError(
            f"no submodule of {type(model).__name__} matches {targets}; module names look like "
            f"{[n for n, _ in model.named_modules() if n][:8]}"
        )
    for name, module in found:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if isinstance(parent, nn.MultiheadAttention):
            raise ValueError(
                f"{name} belongs to nn.MultiheadAttention, which reads its weight functionally: "
                "a LoRA wrapper would never be called. Use an attention block with its own "
                "q_proj/k_proj/v_proj/o_proj nn.Linear layers"
            )
        if isinstance(module, LoRALinear) or isinstance(parent, LoRALinear):
            raise ValueError(f"{name} already has a LoRA adapter")
        if not isinstance(module, nn.Linear):
            raise ValueError(
                f"{name} matches {targets} but is a {type(module).__name__}, not nn.Linear"
            )
    missing = [k for k in keep if not any(_matches(n, (k,)) for n, _ in model.named_modules() if n)]
    if missing:
        raise ValueError(f"trainable module(s) {missing} match no submodule")

    freeze(model)
    for name, module in found:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(module, r=r, alpha=alpha, dropout=dropout))
    for name, module in model.named_modules():
        if name and _matches(name, keep):
            for p in module.parameters():
                p.requires_grad_(True)
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    r"""Merge every adapter: :math:`W \leftarrow W_0 + \frac{\alpha}{r} B A`; returns ``model``.

    The merged model computes the same function without the adapter matmuls. Reversed by
    :func:`unmerge_lora` (to float rounding).

    Raises:
        ValueError: if ``model`` has no :class:`LoRALinear`.
    """
    found = lora_modules(model)
    if not found:
        raise ValueError("the model has no LoRA adapter to merge")
    for _, m in found:
        m.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    r"""Undo :func:`merge_lora`: :math:`W \leftarrow W - \frac{\alpha}{r} B A`; returns ``model``.

    Raises:
        ValueError: if ``model`` has no :class:`LoRALinear`.
    """
    found = lora_modules(model)
    if not found:
        raise ValueError("the model has no LoRA adapter to unmerge")
    for _, m in found:
        m.unmerge()
    return model


def count_parameters(model: nn.Module) -> dict[str, float]:
    r"""Total and trainable parameter counts, and the trainable share.

    .. math::
        \text{share} = \frac{\#\{\theta : \theta \text{ requires grad}\}}{\#\theta}

    Shared parameters count once. ``trainable`` and ``total`` equal peft's
    ``get_nb_trainable_parameters()`` on the same model.

    Args:
        model: any module.

    Shapes:
        - output: ``{"total": int, "trainable": int, "share": float}``
    """
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return {"total": total, "trainable": trainable, "share": trainable / total if total else 0.0}
