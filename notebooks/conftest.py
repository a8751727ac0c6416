"""Checks on the chapters that `make test` executes (under nbmake, profile smoke).

With ``--overwrite`` (scripts/test.sh passes it) nbmake writes each executed notebook back to
its generated ``.ipynb``; after a chapter ran, its prose is read as the book shows it, glued
values pasted in, and any sentence the small run turned into nonsense ("1 seeds", a share of
7104 %, an interval with equal ends) fails the chapter's test at teardown
(:func:`ehrseq.prose.prose_problems`).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from ehrseq.prose import prose_problems


def pytest_runtest_teardown(item, nextitem):
    if not getattr(item, "nbmake", False) or not item.config.option.overwrite:
        return
    path = Path(item.filename)
    if not path.is_file():
        return
    problems = prose_problems(nbformat.read(path, as_version=4))
    if problems:
        listed = "\n  ".join(problems)
        pytest.fail(f"{path.name}: the prose reads as nonsense at this size:\n  {listed}")
