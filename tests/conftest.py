"""Shared test configuration: the slow gate and the one-thread fixture.

The local OMOP samples are found by the library, :func:`ehrseq.data.download.local_sample`
(``EHRSEQ_SHARED_DATA``, or ``shared/data`` beside the clone); tests import it from there,
never from this file: ``make test`` collects tests/ and notebooks/ together, and the module
name ``conftest`` may then be notebooks/conftest.py.
"""

from __future__ import annotations

import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")


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
