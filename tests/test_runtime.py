"""Device, precision, seeds and run profiles."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import ehrseq
from ehrseq.config import current_profile, for_profile


def test_get_device_defaults_to_cuda_when_present(monkeypatch):
    monkeypatch.delenv("EHRSEQ_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert ehrseq.get_device().type == expected
    assert ehrseq.get_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        ehrseq.get_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            ehrseq.get_device("cuda")


def test_seed_everything_repeats_draws():
    ehrseq.seed_everything(3)
    a = (torch.rand(3), np.random.rand(3))  # noqa: NPY002
    rng_a = ehrseq.seed_everything(3)
    b = (torch.rand(3), np.random.rand(3))  # noqa: NPY002
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert rng_a.random() == ehrseq.seed_everything(3).random()
    with pytest.raises(ValueError, match="seed"):
        ehrseq.seed_everything(-1)


def test_autocast_is_a_no_op_on_cpu():
    x = torch.randn(4, 4)
    with ehrseq.autocast("cpu"):
        y = x @ x
    assert y.dtype == torch.float32


def test_describe_environment_lists_versions():
    info = ehrseq.describe_environment(torch.device("cpu"))
    assert info["device"] == "cpu" and info["precision"] == "float32"
    assert info["torch"].startswith("2.")


@dataclasses.dataclass(frozen=True)
class _Cfg:
    profile: str = "book"
    n: int = 10
    lr: float = 1e-3


def test_profiles(monkeypatch):
    monkeypatch.setenv("EHRSEQ_PROFILE", "smoke")
    assert current_profile() == "smoke"
    cfg = for_profile(_Cfg, {"smoke": {"n": 2}, "full": {"n": 1000}})
    assert cfg == _Cfg(profile="smoke", n=2)
    assert for_profile(_Cfg, {"smoke": {"n": 2}}, profile="book") == _Cfg()
    monkeypatch.setenv("EHRSEQ_PROFILE", "huge")
    with pytest.raises(ValueError, match="EHRSEQ_PROFILE"):
        current_profile()
    with pytest.raises(ValueError, match="no fields"):
        for_profile(_Cfg, {"book": {"epochs": 3}}, profile="book")
    with pytest.raises(ValueError, match="unknown profiles"):
        for_profile(_Cfg, {"gpu": {}}, profile="book")


def test_measure_sees_time_and_a_large_allocation():
    import time as _time

    with ehrseq.runtime.measure("cpu") as small:
        _time.sleep(0.05)
    with ehrseq.runtime.measure("cpu") as big:
        x = np.ones(200 * 2**20 // 8)  # 200 MiB, touched
        x += 1
        _time.sleep(0.05)
        del x
    assert small.seconds >= 0.05 and big.seconds >= 0.05
    assert big.peak_mib > 150 > small.peak_mib
    with pytest.raises(ValueError, match="interval"):
        with ehrseq.runtime.measure("cpu", interval=0):
            pass


def test_saved_for_backward_counts_what_backward_needs():
    from torch import nn

    from ehrseq.runtime import saved_for_backward_mib

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 1))
    x = torch.randn(1024, 256)
    mib = saved_for_backward_mib(lambda: net(x).sum(), exclude=net.parameters())
    # the first Linear keeps its input x (for the weight gradient); ReLU keeps its output,
    # which the second Linear keeps too (one storage, counted once)
    expected = (x.numel() + 1024 * 512) * 4 / 2**20
    assert mib == pytest.approx(expected)
    with torch.no_grad():
        assert saved_for_backward_mib(lambda: net(x).sum()) == 0.0
    for p in net[0].parameters():  # a frozen first layer no longer needs x
        p.requires_grad_(False)
    frozen = saved_for_backward_mib(lambda: net(x).sum(), exclude=net.parameters())
    assert frozen == pytest.approx(1024 * 512 * 4 / 2**20)
    assert frozen < mib


def test_format_config_one_field_per_line():
    from dataclasses import dataclass

    from ehrseq.config import format_config

    @dataclass(frozen=True)
    class Small:
        profile: str = "book"
        seeds: tuple[int, ...] = (0, 1)

    assert format_config(Small()) == "Small(\n    profile='book',\n    seeds=(0, 1),\n)"
    with pytest.raises(TypeError, match="dataclass"):
        format_config(Small)
