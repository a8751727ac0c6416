"""LoRA: the adapter layer, gradients, merge/unmerge, and agreement with peft."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ehrseq.models.lora import (
    ATTENTION_MODULES,
    MLP_MODULES,
    LoRALinear,
    apply_lora,
    count_parameters,
    freeze,
    lora_modules,
    merge_lora,
    unmerge_lora,
)

D = 8
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ),
]


class ToyAttention(nn.Module):
    """Single-head self-attention with its own q/k/v/o linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(D, D) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = torch.softmax(self.q_proj(x) @ self.k_proj(x).transpose(1, 2) / D**0.5, dim=-1)
        return self.o_proj(att @ self.v_proj(x))  # (B, L, d)


class ToyBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = ToyAttention()
        self.norm = nn.LayerNorm(D)
        self.fc1, self.fc2 = nn.Linear(D, 2 * D), nn.Linear(2 * D, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x + self.attn(x))
        return x + self.fc2(torch.relu(self.fc1(x)))


class ToyModel(nn.Module):
    def __init__(self, n_layers: int = 2) -> None:
        super().__init__()
        self.inp = nn.Linear(5, D)
        self.layers = nn.ModuleList(ToyBlock() for _ in range(n_layers))
        self.head = nn.Linear(D, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)  # (B, L, d)
        for layer in self.layers:
            x = layer(x)
        return self.head(x.mean(1))  # (B, 3)


def _randomise_b(model: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, m in lora_modules(model):
            m.lora_B.copy_(0.1 * torch.randn(m.lora_B.shape, generator=gen))


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(4, 6, 5, generator=torch.Generator().manual_seed(1))


def test_lora_linear_starts_as_base_and_changes_once_b_is_nonzero():
    torch.manual_seed(0)
    base = nn.Linear(6, 4)
    layer = LoRALinear(base, r=2, alpha=6.0)
    assert layer.lora_A.shape == (2, 6) and layer.lora_B.shape == (4, 2)
    assert layer.scaling == 3.0 and not base.weight.requires_grad and not base.bias.requires_grad
    assert layer.lora_A.abs().sum() > 0 and torch.equal(layer.lora_B, torch.zeros(4, 2))
    inp = torch.randn(3, 6)
    torch.testing.assert_close(layer(inp), base(inp), rtol=0, atol=0)
    with torch.no_grad():
        layer.lora_B.fill_(0.5)
    expected = base(inp) + 3.0 * inp @ layer.lora_A.T @ layer.lora_B.T
    torch.testing.assert_close(layer(inp), expected)
    assert not torch.allclose(layer(inp), base(inp))


def test_lora_linear_rejects_bad_arguments():
    with pytest.raises(ValueError, match="nn.Linear"):
        LoRALinear(nn.Conv1d(2, 2, 1))
    with pytest.raises(ValueError, match="r must"):
        LoRALinear(nn.Linear(2, 2), r=0)
    with pytest.raises(ValueError, match="alpha"):
        LoRALinear(nn.Linear(2, 2), alpha=0)
    with pytest.raises(ValueError, match="dropout"):
        LoRALinear(nn.Linear(2, 2), dropout=1.0)


def test_apply_lora_trains_adapters_and_head_only(x):
    torch.manual_seed(0)
    model = apply_lora(ToyModel(), r=2, alpha=4.0, trainable=("head",))
    names = [n for n, _ in lora_modules(model)]
    assert len(names) == 8 and all(n.rsplit(".", 1)[1] in ATTENTION_MODULES for n in names)
    _randomise_b(model)
    model(x).pow(2).sum().backward()
    for _, m in lora_modules(model):
        assert m.lora_A.grad is not None and m.lora_A.grad.abs().sum() > 0
        assert m.lora_B.grad is not None and m.lora_B.grad.abs().sum() > 0
        assert m.base.weight.grad is None and m.base.bias.grad is None
    assert model.head.weight.grad is not None
    for p in (model.inp.weight, model.layers[0].fc1.weight, model.layers[0].norm.weight):
        assert not p.requires_grad and p.grad is None
    counts = count_parameters(model)
    expected = 8 * 2 * (D + D) + sum(p.numel() for p in model.head.parameters())
    assert counts["trainable"] == expected
    assert counts["share"] == pytest.approx(expected / counts["total"])


def test_apply_lora_include_mlp_and_errors():
    model = apply_lora(ToyModel(n_layers=1), r=2, include_mlp=True)
    suffixes = sorted(n.rsplit(".", 1)[1] for n, _ in lora_modules(model))
    assert suffixes == sorted(ATTENTION_MODULES + MLP_MODULES)
    with pytest.raises(ValueError, match="already"):
        apply_lora(model)
    with pytest.raises(ValueError, match="matches"):
        apply_lora(ToyModel(), target_modules=("query",))
    with pytest.raises(ValueError, match="not nn.Linear"):
        apply_lora(ToyModel(), target_modules=("norm",))
    with pytest.raises(ValueError, match="trainable"):
        apply_lora(ToyModel(), trainable=("classifier",))

    class WithMHA(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = nn.MultiheadAttention(D, 2, batch_first=True)

    with pytest.raises(ValueError, match="MultiheadAttention"):
        apply_lora(WithMHA(), target_modules=("out_proj",))


@pytest.mark.parametrize("device", DEVICES)
def test_merge_unmerge_round_trip(x, device):
    torch.manual_seed(0)
    model = apply_lora(ToyModel(), r=4, alpha=8.0).to(device)
    x = x.to(device)
    _randomise_b(model, seed=3)
    model.eval()
    weights = {n: m.base.weight.detach().clone() for n, m in lora_modules(model)}
    with torch.no_grad():
        adapted = model(x)
        merged = merge_lora(model)(x)
        assert all(m.merged for _, m in lora_modules(model))
        merge_lora(model)  # idempotent
        merged_again = model(x)
        unmerged = unmerge_lora(model)(x)
    torch.testing.assert_close(merged, adapted, rtol=0, atol=1e-5)
    torch.testing.assert_close(merged_again, merged, rtol=0, atol=0)
    torch.testing.assert_close(unmerged, adapted, rtol=0, atol=1e-6)
    for n, m in lora_modules(model):
        assert not m.merged
        torch.testing.assert_close(m.base.weight, weights[n], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="no LoRA"):
        merge_lora(ToyModel())
    with pytest.raises(ValueError, match="no LoRA"):
        unmerge_lora(ToyModel())


def test_freeze_and_count_parameters():
    model = ToyModel()
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == {"total": total, "trainable": total, "share": 1.0}
    freeze(model.layers)
    freeze(model.inp)
    head = sum(p.numel() for p in model.head.parameters())
    assert count_parameters(model) == {"total": total, "trainable": head, "share": head / total}
    assert count_parameters(freeze(nn.Linear(3, 3)))["trainable"] == 0


@pytest.mark.parametrize("include_mlp", [False, True])
def test_matches_peft_outputs_and_counts(x, include_mlp):
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    ours = ToyModel()
    theirs, plain = copy.deepcopy(ours), copy.deepcopy(ours)
    targets = list(ATTENTION_MODULES + (MLP_MODULES if include_mlp else ()))
    config = peft.LoraConfig(r=4, lora_alpha=12, target_modules=targets, lora_dropout=0.0)
    theirs = peft.get_peft_model(theirs, config)
    apply_lora(ours, r=4, alpha=12, include_mlp=include_mlp)
    inner = theirs.base_model.model
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, m in lora_modules(ours):
            peft_layer = inner.get_submodule(name)
            peft_layer.lora_B["default"].weight.copy_(
                0.1 * torch.randn(peft_layer.lora_B["default"].weight.shape, generator=gen)
            )
            m.lora_A.copy_(peft_layer.lora_A["default"].weight)
            m.lora_B.copy_(peft_layer.lora_B["default"].weight)
            assert m.scaling == peft_layer.scaling["default"]
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-6)
        assert not torch.allclose(ours(x), plain(x))  # the adapters are active
    trainable, total = theirs.get_nb_trainable_parameters()
    counts = count_parameters(ours)
    assert (counts["trainable"], counts["total"]) == (trainable, total)
    with torch.no_grad():
        merge_lora(ours)
        theirs.merge_adapter()
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-6)
