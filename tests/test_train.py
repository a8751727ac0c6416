"""The training loop: schedule, checkpoints, exact resume, early stopping, NaN stop, torchrun."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ehrseq.train import (
    NonFiniteLossError,
    TrainConfig,
    _ShardedBatchSampler,
    fit,
    load_checkpoint,
    warmup_cosine,
)

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def data(n: int = 96, seed: int = 0) -> TensorDataset:
    w = torch.randn(6, 1, generator=torch.Generator().manual_seed(1234))  # one true function
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = x @ w + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


def mlp(seed: int = 0, dropout: float = 0.2) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 32), nn.GELU(), nn.Dropout(dropout), nn.Linear(32, 1))


def noisy_step(model: nn.Module, batch) -> tuple[torch.Tensor, dict]:
    """Uses the torch (dropout, shuffling), NumPy and Python RNGs, so a resume must restore all."""
    x, y = batch
    if model.training:
        x = x + torch.from_numpy(np.random.normal(0, 0.05, size=tuple(x.shape))).float()  # noqa: NPY002
        x = x * (1.0 + 0.1 * random.random())
    loss = F.mse_loss(model(x), y)
    return loss, {"mae": (model(x) - y).abs().mean()}


def loaders(seed: int = 0):
    return (
        DataLoader(data(96, seed), batch_size=16, shuffle=True),
        DataLoader(data(32, seed + 1), batch_size=16),
    )


# ------------------------------------------------------------------------------- schedule
def test_warmup_cosine_schedule():
    lrs = [warmup_cosine(s, 4, 20, 0.1) for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == pytest.approx(1.0) and lrs[-1] > 0.1 and lrs[-1] < 0.12
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert warmup_cosine(20, 4, 20, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(0, 0, 10) == 1.0
    with pytest.raises(ValueError):
        warmup_cosine(0, 0, 0)


def test_fit_records_metrics_and_follows_the_schedule(tmp_path):
    train, val = loaders()
    model = mlp()
    cfg = TrainConfig(
        epochs=3, lr=3e-2, warmup_steps=2, min_lr_ratio=0.1, progress=False, out_dir=tmp_path
    )
    result = fit(model, train, val, noisy_step, cfg)
    hist = result.history
    assert list(hist.columns[:4]) == ["epoch", "step", "lr", "train_loss"]
    assert {"train_mae", "train_grad_norm", "val_loss", "val_mae", "time_s"} <= set(hist.columns)
    assert hist["epoch"].tolist() == [1, 2, 3] and hist["step"].tolist() == [6, 12, 18]
    assert hist["lr"].iloc[-1] == pytest.approx(3e-2 * 0.1)
    assert hist["val_loss"].iloc[-1] < hist["val_loss"].iloc[0]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "metrics.csv"), hist, check_dtype=False)
    assert result.monitor == "val_loss" and result.best_epoch == int(hist["val_loss"].idxmin()) + 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fit_on_cuda_with_bf16(tmp_path):
    train, val = loaders()
    model = mlp()
    cfg = TrainConfig(epochs=2, lr=1e-2, progress=False, device="cuda", bf16=True, out_dir=tmp_path)
    result = fit(model, train, val, noisy_step, cfg)
    assert next(model.parameters()).is_cuda
    assert np.isfinite(result.history["val_loss"]).all()
    assert len(load_checkpoint(tmp_path / "last.pt")["rng"][0]["cuda"]) == torch.cuda.device_count()


def test_checkpoints_load_with_weights_only(tmp_path):
    train, val = loaders()
    fit(mlp(), train, val, noisy_step, TrainConfig(epochs=2, progress=False, out_dir=tmp_path))
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "epoch", "step", "rng", "history"} <= set(last)
    assert last["epoch"] == 2 and last["step"] == 12
    rng = last["rng"][0]
    assert {"python", "numpy", "torch", "cuda"} == set(rng)
    assert isinstance(rng["torch"], torch.Tensor) and isinstance(rng["numpy"]["keys"], torch.Tensor)
    best = load_checkpoint(tmp_path / "best.pt")
    assert set(best["model"]) == set(mlp().state_dict())


# ------------------------------------------------------------------------------- resume
class Crash(RuntimeError):
    pass


def crashing(after: int):
    calls = {"n": 0}

    def step(model, batch):
        if model.training:
            calls["n"] += 1
            if calls["n"] > after:
                raise Crash(f"simulated crash at training call {calls['n']}")
        return noisy_step(model, batch)

    return step


def test_interrupted_run_resumes_to_the_same_result(tmp_path):
    cfg = dict(epochs=4, lr=5e-3, warmup_steps=3, progress=False, restore_best=False, seed=3)

    train, val = loaders()
    straight = mlp()
    res_a = fit(straight, train, val, noisy_step, TrainConfig(**cfg, out_dir=tmp_path / "a"))

    train, val = loaders()
    resumed = mlp()
    with pytest.raises(Crash):  # dies in the middle of epoch 3 (6 batches per epoch)
        fit(resumed, train, val, crashing(14), TrainConfig(**cfg, out_dir=tmp_path / "b"))
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 2
    train, val = loaders()
    fresh = mlp(seed=99)  # a new process would build the model again; the checkpoint wins
    res_b = fit(
        fresh, train, val, noisy_step, TrainConfig(**cfg, out_dir=tmp_path / "b", resume=True)
    )

    for (name, p), q in zip(straight.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(p, q), name
    cols = [c for c in res_a.history.columns if c != "time_s"]
    pd.testing.assert_frame_equal(res_a.history[cols], res_b.history[cols])
    # resuming a finished run changes nothing
    res_c = fit(
        fresh, train, val, noisy_step, TrainConfig(**cfg, out_dir=tmp_path / "b", resume=True)
    )
    assert len(res_c.history) == 4
    for p, q in zip(straight.parameters(), fresh.parameters()):
        assert torch.equal(p, q)


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    train, val = loaders()
    fit(mlp(), train, val, noisy_step, TrainConfig(epochs=1, progress=False, out_dir=tmp_path))
    with pytest.raises(ValueError, match="steps per epoch"):
        small = DataLoader(data(48), batch_size=16, shuffle=True)
        fit(
            mlp(),
            small,
            val,
            noisy_step,
            TrainConfig(epochs=1, progress=False, out_dir=tmp_path, resume=True),
        )
    with pytest.raises(ValueError, match="no checkpoint"):
        fit(
            mlp(),
            train,
            val,
            noisy_step,
            TrainConfig(epochs=1, progress=False, resume=tmp_path / "nope.pt"),
        )


# ------------------------------------------------------------------------------- early stopping
@pytest.mark.parametrize("with_dir", [False, True])
def test_early_stopping_on_a_max_metric_restores_the_best_weights(tmp_path, with_dir):
    train, val = loaders()
    model = mlp()
    snapshots = []

    def score(m, loader):  # a metric that peaks at epoch 2, then falls
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return {"score": [0.5, 0.9, 0.8, 0.7, 0.6, 0.5][len(snapshots) - 1]}

    cfg = TrainConfig(
        epochs=6,
        progress=False,
        monitor="val_score",
        mode="max",
        patience=2,
        out_dir=tmp_path if with_dir else None,
    )
    result = fit(model, train, val, noisy_step, cfg, eval_fn=score)
    assert result.stopped_early and len(result.history) == 4
    assert result.best_epoch == 2 and result.best_value == pytest.approx(0.9)
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[1][k])


def test_monitor_must_exist_and_step_fn_is_one():
    train, val = loaders()
    with pytest.raises(ValueError, match="not among the metrics"):
        fit(mlp(), train, val, noisy_step, TrainConfig(epochs=1, progress=False, monitor="val_auc"))
    with pytest.raises(ValueError, match="needs a val_loader"):
        fit(
            mlp(),
            train,
            None,
            noisy_step,
            TrainConfig(epochs=1, progress=False, monitor="val_loss"),
        )
    with pytest.raises(ValueError, match="exactly one"):
        fit(
            mlp(), train, val, noisy_step, TrainConfig(epochs=1, progress=False), loss_fn=noisy_step
        )
    result = fit(
        mlp(), train, None, config=TrainConfig(epochs=1, progress=False), loss_fn=noisy_step
    )
    assert result.monitor == "train_loss"
    with pytest.raises(ValueError, match="mode"):
        TrainConfig(mode="up")


def test_non_finite_loss_stops_with_the_step():
    train, val = loaders()
    calls = {"n": 0}

    def exploding(model, batch):
        loss, metrics = noisy_step(model, batch)
        if model.training:
            calls["n"] += 1
            if calls["n"] == 9:
                loss = loss * float("nan")
        return loss, metrics

    with pytest.raises(NonFiniteLossError, match=r"step 8 \(epoch 2, batch 3\)"):
        fit(mlp(), train, val, exploding, TrainConfig(epochs=3, progress=False))


# ------------------------------------------------------------------------------- distributed
def test_sharded_batch_sampler_gives_each_rank_equal_disjoint_batches():
    inner = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    r0, r1 = _ShardedBatchSampler(inner, 0, 2), _ShardedBatchSampler(inner, 1, 2)
    assert list(r0) == [[0, 1], [4, 5]] and list(r1) == [[2, 3], [6, 7]]
    assert len(r0) == len(r1) == 2


DDP_SCRIPT = """
import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from ehrseq.train import TrainConfig, fit


def run(out, batch_size):
    rank = int(os.environ.get("RANK", "0"))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    y = x @ torch.randn(6, 1, generator=g)
    torch.manual_seed(100 + rank)  # ranks start from different weights: DDP broadcasts rank 0's
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.GELU(), torch.nn.Linear(16, 1))
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size)
    cfg = TrainConfig(epochs=2, lr=1e-2, warmup_steps=2, progress=False, out_dir=out + "/run")
    res = fit(model, loader, loader, lambda m, b: F.mse_loss(m(b[0]), b[1]), cfg)
    return model.state_dict(), res.history["train_loss"].tolist()


if __name__ == "__main__":
    params, loss = run(sys.argv[1], batch_size=4)  # 4 per rank: 8 per step, as below
    torch.save({"params": params, "loss": loss}, f"{sys.argv[1]}/rank{dist.get_rank()}.pt")
    dist.destroy_process_group()
"""


def test_torchrun_two_processes_gloo_match_one_process(tmp_path):
    script = tmp_path / "ddp_fit.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "lib"), env.get("PYTHONPATH", "")])
    env.pop("EHRSEQ_DEVICE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(
        [*cmd, str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    # the same training in this process: one rank, 8 patients per step
    namespace: dict = {"__name__": "ddp_reference"}
    exec(compile(DDP_SCRIPT, "ddp_fit.py", "exec"), namespace)
    params, loss = namespace["run"](str(tmp_path / "single"), batch_size=8)
    for k in r0["params"]:
        assert torch.equal(r0["params"][k], r1["params"][k]), k  # identical across ranks
        torch.testing.assert_close(r0["params"][k], params[k], atol=1e-6, rtol=1e-5)
    assert r0["loss"] == r1["loss"] and all(math.isfinite(v) for v in r0["loss"])
    np.testing.assert_allclose(r0["loss"], loss, rtol=1e-5)
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert len(ckpt["rng"]) == 2 and ckpt["epoch"] == 2


def test_epoch_means_weight_batches_by_size():
    """A small last batch must not count as much as a full one (length bucketing makes them)."""
    from ehrseq.train import _batch_size, _Meter

    meter = _Meter()
    for size, loss in [(256, 0.2), (256, 0.2), (26, 2.0)]:
        meter.add({"loss": loss}, weight=_batch_size({"codes": torch.zeros(size, 3)}))

    class _One:
        world = 1

    got = meter.mean(_One(), "val_")["val_loss"]
    assert got == pytest.approx((512 * 0.2 + 26 * 2.0) / 538)
    assert _batch_size(torch.zeros(7, 2)) == 7 and _batch_size({"x": 1}) == 1
