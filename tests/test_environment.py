"""One list of the project's environment variables, read in one place by the library."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ehrseq.config import ENVIRONMENT, env

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["lib", "scripts", "tests", "notebooks", "benchmarks", "README.md", "Makefile", ".ci"]


def _files():
    for name in SOURCES:
        path = ROOT / name
        files = [path] if path.is_file() else path.rglob("*")
        for f in files:
            if f.is_file() and f.suffix in {".py", ".sh", ".md", ""} and ".ipynb" not in f.name:
                yield f


def test_every_variable_used_is_documented():
    used = set()
    for f in _files():
        used |= set(re.findall(r"EHRSEQ_[A-Z_]+[A-Z]", f.read_text(errors="ignore")))
    assert used, "the scan found nothing: the pattern or the paths are wrong"
    assert used <= set(ENVIRONMENT), sorted(used - set(ENVIRONMENT))


def test_the_library_reads_them_only_through_config():
    for f in (ROOT / "lib").rglob("*.py"):
        if f.name == "config.py":
            continue
        text = f.read_text()
        assert not re.search(r"os\.environ(\.get)?[\[(]\s*\"EHRSEQ_", text), f
        assert "getenv(" not in text, f


def test_env_rejects_unknown_names(monkeypatch):
    monkeypatch.setenv("EHRSEQ_DEVICE", "cpu")
    assert env("EHRSEQ_DEVICE") == "cpu"
    monkeypatch.setenv("EHRSEQ_DEVICE", "")
    assert env("EHRSEQ_DEVICE") is None
    with pytest.raises(ValueError, match="not one of the project's variables"):
        env("EHRSEQ_" + "DEVIC")  # a typo (spelled in two parts so the scan above skips it)
