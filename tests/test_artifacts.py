"""Artefacts: built once, loaded afterwards, keyed by their configs."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from ehrseq.artifacts import config_key, load_or_train


@dataclasses.dataclass(frozen=True)
class _Cfg:
    width: int = 3
    lr: float = 0.1


def test_trains_once_then_loads(tmp_path):
    calls = []

    def train(model, folder):
        calls.append(folder)
        with torch.no_grad():
            model.weight.fill_(2.0)

    a, loaded_a = load_or_train(nn.Linear(3, 1), "toy", train, _Cfg(), root=tmp_path)
    b, loaded_b = load_or_train(nn.Linear(3, 1), "toy", train, _Cfg(), root=tmp_path)
    assert (loaded_a, loaded_b) == (False, True) and len(calls) == 1
    assert torch.equal(a.weight, b.weight) and torch.equal(b.weight, torch.full((1, 3), 2.0))
    _, loaded_c = load_or_train(nn.Linear(3, 1), "toy", train, _Cfg(lr=0.2), root=tmp_path)
    assert not loaded_c and len(calls) == 2


def test_key_depends_on_every_field_and_names_are_checked(tmp_path):
    assert config_key(_Cfg()) == config_key(_Cfg())
    assert config_key(_Cfg()) != config_key(_Cfg(width=4))
    assert config_key({"a": 1, "b": 2}) == config_key({"b": 2, "a": 1})
    with pytest.raises(ValueError, match="plain"):
        load_or_train(nn.Linear(1, 1), "../x", lambda m, f: None, root=tmp_path)


def test_concurrent_requests_train_once(tmp_path):
    """Two chapters asking at once: one trains while the other waits, then loads."""
    import threading
    import time

    calls, results = [], {}

    def train(model, folder):
        calls.append(folder)
        time.sleep(0.3)  # long enough for the other request to arrive meanwhile
        with torch.no_grad():
            model.weight.fill_(1.0)

    def ask(i):
        results[i] = load_or_train(nn.Linear(3, 1), "shared", train, _Cfg(), root=tmp_path)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(loaded for _, loaded in results.values()) == [False, True]
    assert all(torch.equal(m.weight, torch.ones(1, 3)) for m, _ in results.values())


def _rank_main(rank: int, world: int, store: str, roots: list, present: bool, out: str) -> None:
    """One rank of a gloo group: asks load_or_train for the artefact under its own root."""
    import json
    from pathlib import Path

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    calls = []

    def train(model, folder):
        calls.append(str(folder))
        with torch.no_grad():  # rank 0 and the others would differ if nothing were shared
            model.weight.fill_(3.0 if rank == 0 else -1.0)

    torch.manual_seed(rank)  # each rank starts from other weights
    model, loaded = load_or_train(nn.Linear(3, 1), "ranked", train, _Cfg(), root=Path(roots[rank]))
    dist.destroy_process_group()
    Path(out, f"{rank}.json").write_text(
        json.dumps({"loaded": loaded, "calls": calls, "weight": model.weight.tolist()})
    )


@pytest.mark.parametrize("present", [False, True])
def test_ranks_decide_together(tmp_path, present):
    """Under torchrun rank 0 alone looks for the artefact: with it, every rank gets its
    weights and none trains (rank 1's own root is empty); without it, every rank trains
    and only rank 0 writes."""
    import json

    import torch.multiprocessing as mp

    roots = [tmp_path / "root0", tmp_path / "root1"]
    for r in roots:
        r.mkdir()
    if present:  # rank 0 already has the artefact, with weights 2.0
        load_or_train(
            nn.Linear(3, 1),
            "ranked",
            lambda m, f: nn.init.constant_(m.weight, 2.0),
            _Cfg(),
            root=roots[0],
        )
    out = tmp_path / "out"
    out.mkdir()
    args = (2, str(tmp_path / "store"), [str(r) for r in roots], present, str(out))
    mp.spawn(_rank_main, args=args, nprocs=2, join=True)
    got = [json.loads((out / f"{r}.json").read_text()) for r in range(2)]
    if present:
        assert [g["loaded"] for g in got] == [True, True]
        assert [g["calls"] for g in got] == [[], []]
        assert got[1]["weight"] == [[2.0, 2.0, 2.0]] == got[0]["weight"]
    else:
        assert [g["loaded"] for g in got] == [False, False]
        assert all(len(g["calls"]) == 1 for g in got)
        assert got[0]["calls"][0].startswith(str(roots[0]))  # rank 0 keeps the artefact
        assert not got[1]["calls"][0].startswith(str(tmp_path))  # rank 1: a temporary folder
        assert any(roots[0].glob("ranked-*/model.pt"))
    assert list(roots[1].iterdir()) == []  # rank 1 never writes under its root
