"""Expensive artefacts (pretrained weights, fitted baselines): load if present, build otherwise.

An artefact lives in ``<root>/<name>-<key>/`` where ``key`` hashes everything that decides
its content (the configs that built it, the library version). ``root`` is ``EHRSEQ_ARTIFACTS``
or ``artifacts/`` in the repository (ignored by git: artefacts are never committed). Weights
are saved as a plain ``state_dict`` and read back with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ehrseq.config import artifact_root

__all__ = ["artifact_root", "config_key", "distributed_rank", "load_or_train"]


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"__type__": type(obj).__name__, **_plain(dataclasses.asdict(obj))}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, float | int | str | bool) or obj is None:
        return obj
    return repr(obj)


def config_key(*parts: Any) -> str:
    """A 16-hex-digit hash of configs (dataclasses, dicts, numbers, strings) and the version."""
    from ehrseq import __version__

    blob = json.dumps({"version": __version__, "parts": _plain(list(parts))}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_or_train(
    model: nn.Module,
    name: str,
    train: Callable[[nn.Module, Path], Any],
    *parts: Any,
    root: Path | None = None,
) -> tuple[nn.Module, bool]:
    """Load ``model``'s weights from the artefact ``name`` keyed by ``parts``, or train it.

    Args:
        model: built from its config, weights to be filled in.
        name: artefact name, e.g. ``"behrt-pretrained"``.
        train: ``train(model, folder)`` trains in place (it may write logs into ``folder``).
        *parts: everything that decides the weights (model config, task config, train config).
        root: override :func:`artifact_root`.

    Returns:
        ``(model, loaded)``: ``loaded`` is True when the weights came from disk.

    Two processes asking for the same artefact at once (chapters executing in parallel) do
    not both train: a file lock beside the folder makes the second wait, then load.

    Inside a ``torch.distributed`` process group of several ranks (``torchrun``), every
    rank must call this together: rank 0 alone looks for the artefact (under its lock)
    and tells the others whether it found it. If it did, every rank gets rank 0's
    weights (broadcast: the others need no access to ``root``); if not, every rank runs
    ``train`` together (the others in a temporary folder), and rank 0 alone saves.

    Raises:
        ValueError: if ``name`` is empty or contains a path separator.
    """
    if not name or "/" in name or os.sep in name:
        raise ValueError(f"artefact name {name!r} must be a plain, non-empty name")
    rank, world = distributed_rank()
    if world > 1 and rank > 0:
        return _follow(model, train)
    from filelock import FileLock

    folder = (root or artifact_root()) / f"{name}-{config_key(*parts)}"
    weights = folder / "model.pt"
    folder.parent.mkdir(parents=True, exist_ok=True)
    # chapters may run in parallel (scripts/execute_chapters.py): one trains, the others wait
    with FileLock(str(folder) + ".lock"):
        found = weights.is_file()
        if world > 1:  # the other ranks wait in _follow for this answer
            _tell(found)
        if found:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            if world > 1:
                _share_weights(model)
            return model, True
        folder.mkdir(parents=True, exist_ok=True)
        train(model, folder)
        tmp = folder / "model.pt.part"
        torch.save(model.state_dict(), tmp)
        tmp.replace(weights)
        (folder / "config.json").write_text(json.dumps(_plain(list(parts)), indent=2))
    return model, False


def distributed_rank() -> tuple[int, int]:
    """``(rank, world)`` of an initialised ``torch.distributed`` group, else ``(0, 1)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _comm_device() -> torch.device:
    """Where collective calls put their tensors: this rank's GPU under NCCL, else the CPU."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _tell(found: bool | None = None) -> bool:
    """Rank 0 sends whether it found the artefact; every rank returns the answer."""
    import torch.distributed as dist

    flag = torch.tensor([int(bool(found))], device=_comm_device())
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def _share_weights(model: nn.Module) -> None:
    """Every rank ends with rank 0's weights (a broadcast of each tensor of the state)."""
    import torch.distributed as dist

    dev = _comm_device()
    with torch.no_grad():
        for t in model.state_dict().values():
            buf = t.to(dev)
            dist.broadcast(buf, src=0)
            t.copy_(buf)


def _follow(model: nn.Module, train: Callable[[nn.Module, Path], Any]) -> tuple[nn.Module, bool]:
    """A rank other than 0 in :func:`load_or_train`: rank 0's weights if it found the
    artefact, else train together with rank 0, the files in a temporary folder."""
    import tempfile

    if _tell():
        _share_weights(model)
        return model, True
    with tempfile.TemporaryDirectory(prefix="ehrseq_rank_") as tmp:
        train(model, Path(tmp))
    return model, False
