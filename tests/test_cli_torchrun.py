"""``ehrseq run`` under ``torchrun``: two CPU processes (gloo) on the small synthetic
export of ``test_cli.py``; rank 0 writes the outputs once, and a failure on either rank
exits non-zero without a hang."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import write_cohort

from ehrseq.data.synthetic import SyntheticConfig, generate_cohort
from ehrseq.train import _ShardedBatchSampler

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def omop(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("omop")
    generate_cohort(SyntheticConfig(n_patients=400, seed=3)).write_omop(folder)
    write_cohort(folder.parent)  # test_cli's cohort: NSAID new users, heart failure
    return folder


# rank 1 fails as it joins pretraining, while rank 0 waits for it (in load_or_train)
FAILING_RANK = """
import os

from ehrseq.cli import main, steps


def broken(*args, **kwargs):
    raise RuntimeError("rank 1 broke")


if os.environ["RANK"] == "1":
    steps.pretrain_encoder = broken
raise SystemExit(main())
"""


def torchrun(omop: Path, out: Path, *extra: str, timeout: float = 300, script=None):
    """``torchrun --standalone --nproc_per_node 2 -m ehrseq.cli run`` on the CPU (or
    ``script`` instead of ``-m ehrseq.cli``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "lib"), env.get("PYTHONPATH", "")])
    env["EHRSEQ_NO_PROGRESS"] = "1"
    env.pop("EHRSEQ_DEVICE", None)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command = [str(script)] if script else ["-m", "ehrseq.cli"]
    command += ["run", str(omop), "--cohort"]
    argv = [*launch, "--nproc_per_node=2", *command, str(omop.parent / "cohort.toml")]
    argv += ["--out", str(out), "--profile", "smoke", "--device", "cpu", *extra]
    kw = dict(capture_output=True, text=True, timeout=timeout)
    return subprocess.run(argv, env=env, **kw)


def test_two_ranks_write_the_outputs_once(omop, tmp_path):
    out = tmp_path / "out"
    proc = torchrun(omop, out, "--epochs", "1", "--n-boot", "5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("[finetune] running") == 1  # only rank 0 reports stages
    assert "rank 0 of 2" in proc.stdout
    assert sorted(p.name for p in out.glob("*.*")) == [
        "metrics.json",
        "report.html",
        "stages.json",
    ]
    status = json.loads((out / "stages.json").read_text())["status"]
    assert set(status.values()) == {"ran"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["models"]) == 4
    for model in metrics["models"].values():
        assert all(math.isfinite(v["estimate"]) for v in model.values())
    assert not list(tmp_path.glob("**/ehrseq_rank*"))  # the followers' scratch is gone

    proc = torchrun(omop, out, "--epochs", "2", "--n-boot", "5")  # fine-tuning reruns
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = json.loads((out / "stages.json").read_text())["status"]
    ran = [s for s, v in status.items() if v == "ran"]
    assert ran == ["finetune", "evaluate", "report"]


def test_a_failing_rank_exits_non_zero_without_hanging(omop, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    proc = torchrun(omop, blocker / "out", "--rank-timeout", "1", timeout=120)
    assert proc.returncode != 0
    assert "cannot write to output folder" in proc.stderr
    assert "rank 0 failed" in proc.stderr  # the other rank heard it and stopped


@pytest.mark.slow  # 10-13 s each on two shared cores
def test_a_rank_failing_in_training_stops_the_other(omop, tmp_path):
    script = tmp_path / "failing_rank.py"
    script.write_text(FAILING_RANK)
    out = tmp_path / "out"
    proc = torchrun(omop, out, "--rank-timeout", "1", timeout=150, script=script)
    assert proc.returncode != 0
    assert "rank 1 broke" in proc.stderr
    assert not (out / "metrics.json").exists()


def test_validation_batches_are_shared_out_with_the_tail_kept():
    inner = [[0, 1], [2, 3], [4, 5]]
    train = [list(_ShardedBatchSampler(inner, r, 2)) for r in (0, 1)]
    assert train == [[[0, 1]], [[2, 3]]]  # equal counts for the gradient all-reduce
    val = [_ShardedBatchSampler(inner, r, 2, keep_tail=True) for r in (0, 1)]
    assert [list(v) for v in val] == [[[0, 1], [4, 5]], [[2, 3]]]
    assert [len(v) for v in val] == [2, 1]
    few = [list(_ShardedBatchSampler(inner[:1], r, 2, keep_tail=True)) for r in (0, 1)]
    assert few == [[[0, 1]], []]  # fewer batches than ranks: each still counted once


@pytest.mark.slow  # 10-13 s each on two shared cores
def test_without_torchrun_the_survivor_fails_too(omop, tmp_path):
    """Two processes started by hand (no torchrun agent to stop the other): rank 0,
    left inside a collective call, fails on its own once rank 1 has died."""
    import socket

    script = tmp_path / "failing_rank.py"
    script.write_text(FAILING_RANK)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "lib"), env.get("PYTHONPATH", "")])
    env.update(EHRSEQ_NO_PROGRESS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    env.update(WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    argv = [sys.executable, str(script), "run", str(omop), "--cohort"]
    argv += [str(omop.parent / "cohort.toml"), "--out", str(tmp_path / "out")]
    argv += ["--profile", "smoke", "--device", "cpu", "--rank-timeout", "1"]
    procs = [
        subprocess.Popen(
            argv,
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    try:
        errs = [p.communicate(timeout=150)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [1, 1]
    assert "rank 1 broke" in errs[1] and errs[0].strip().startswith("ehrseq: error:")
