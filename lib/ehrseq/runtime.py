"""Device, precision and seeds, decided once for the whole book.

Every chapter calls :func:`get_device`, :func:`seed_everything` and uses :func:`autocast`
rather than deciding these itself, and prints what was chosen.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata

import numpy as np
import torch

from ehrseq.config import env, progress_disabled

__all__ = [
    "get_device",
    "seed_everything",
    "autocast",
    "describe_environment",
    "progress",
    "measure",
    "Measurement",
    "saved_for_backward_mib",
]


def get_device(prefer: str | None = None) -> torch.device:
    """Pick the compute device: CUDA when present, else CPU.

    Args:
        prefer: ``"cpu"`` or ``"cuda"`` to force a choice; ``None`` reads the environment
            variable ``EHRSEQ_DEVICE`` and falls back to CUDA-when-available.

    Raises:
        ValueError: if ``prefer`` names CUDA and no CUDA device is present, or names an
            unknown device type.
    """
    choice = prefer or env("EHRSEQ_DEVICE")
    if choice is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    choice = choice.lower()
    if choice not in {"cpu", "cuda"} and not choice.startswith("cuda:"):
        raise ValueError(f"unknown device {choice!r}: use 'cpu', 'cuda' or 'cuda:N'")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {choice!r} requested but torch sees no CUDA device")
    return torch.device(choice)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and PyTorch (all devices) and return a fresh NumPy Generator.

    On CPU this makes runs bit-for-bit repeatable. On a GPU some kernels (atomic adds in
    scatter and in attention backward passes) stay nondeterministic unless
    ``torch.use_deterministic_algorithms(True)`` is set, which costs speed.

    Raises:
        ValueError: if ``seed`` is negative or not an integer.
    """
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (legacy global state, seeded on purpose)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return np.random.default_rng(seed)


def autocast(device: torch.device | str):
    """bf16 autocast on CUDA; a no-op context on CPU.

    The CPU is left in float32 on purpose: the speed-up there is small and the numerics of
    the survival losses are easier to compare with lifelines in full precision.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def describe_environment(device: torch.device | None = None) -> dict[str, str]:
    """Versions, device and precision as a flat dict (shown on the book's status page)."""
    device = device or get_device()
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": str(os.cpu_count()),
        "device": str(device),
        "precision": "bf16 autocast" if device.type == "cuda" else "float32",
        "torch_threads": str(torch.get_num_threads()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    for pkg in ["ehrseq", "torch", "numpy", "pandas", "lifelines", "matplotlib", "jupyter-book"]:
        try:
            info[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            info[pkg] = "not installed"
    return info


def progress(
    iterable=None,
    *,
    desc: str | None = None,
    total: int | None = None,
    disable: bool = False,
    **kwargs,
):
    """A progress bar for long work: a widget in Jupyter, text in a terminal.

    Builds of the book and test runs set ``EHRSEQ_NO_PROGRESS=1`` so bars do not clutter
    the rendered pages; ``disable=True`` turns a bar off from code.
    """
    if disable or progress_disabled():
        from tqdm.std import tqdm

        return tqdm(iterable, desc=desc, total=total, disable=True, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, **kwargs)


@dataclass
class Measurement:
    """Wall time and peak memory of a block (filled in when the block ends).

    ``peak_mib`` is the CUDA peak allocation on a GPU (``torch.cuda.max_memory_allocated``);
    on a CPU it is the largest rise of the process's resident memory over its value at the
    start, sampled every ``interval`` seconds (an estimate: freed-and-reused memory and
    allocations shorter than the interval are missed).
    """

    device: str = "cpu"
    seconds: float = float("nan")
    peak_mib: float = float("nan")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def measure(device: torch.device | str = "cpu", interval: float = 0.01):
    """Measure wall time and peak memory of the ``with`` block: ``with measure(dev) as m: ...``.

    Raises:
        ValueError: if ``interval`` is not positive.
    """
    if interval <= 0:
        raise ValueError(f"interval must be > 0, got {interval}")
    device = torch.device(device)
    out = Measurement(device=str(device))
    stop = threading.Event()
    peak = [0]
    sampler = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    elif os.path.exists("/proc/self/statm"):
        base = _rss_bytes()

        def sample() -> None:
            while not stop.wait(interval):
                peak[0] = max(peak[0], _rss_bytes() - base)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    start = time.perf_counter()
    try:
        yield out
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            out.peak_mib = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        elif sampler is not None:
            stop.set()
            sampler.join()
            peak[0] = max(peak[0], _rss_bytes() - base)
            out.peak_mib = peak[0] / 2**20
        out.seconds = time.perf_counter() - start


def saved_for_backward_mib(fn: Callable[[], object], exclude: Iterable[torch.Tensor] = ()) -> float:
    """MiB that autograd keeps for the backward pass while ``fn()`` builds its graph.

    These are the activations a training step holds between its forward and backward pass:
    exactly what a frozen layer does not keep and a trainable one does, on any device and
    independent of what the allocator reuses (which makes the CPU peak of :func:`measure` an
    estimate). Every saved tensor is counted once per underlying storage, so views and
    repeated saves of one tensor are not double counted; tensors sharing storage with
    ``exclude`` (pass ``model.parameters()``: weights are held anyway) are left out.

    Args:
        fn: builds the graph, typically ``lambda: loss_fn(model, batch)``; its output is
            dropped when the call ends, which frees the graph.
        exclude: tensors whose storage is not counted.

    Returns:
        The size in MiB (2**20 bytes) of the distinct saved storages.
    """
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in skip:
            seen[ptr] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values()) / 2**20
