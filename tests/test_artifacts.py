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
