"""Shared test configuration: the slow gate and the location of the shared OMOP samples."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``../shared/data`` beside the repository, or ``EHRSEQ_SHARED_DATA`` when set."""
    env = os.environ.get("EHRSEQ_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    if os.environ.get("EHRSEQ_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set EHRSEQ_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one thread than on two contended ones (restored afterwards).

    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
