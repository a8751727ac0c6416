"""Run profiles: one environment variable, ``EHRSEQ_PROFILE``, picks how big every chapter runs.

- ``smoke``: CI; each notebook in under about 60 s on 2 CPU cores.
- ``book``: what the published book executes on a CPU; each chapter in under about 3 minutes.
- ``full``: GPU scale.

Each chapter declares one typed config dataclass with a value per profile and builds it with
:func:`for_profile`. No config files are executed.

Every environment variable the project reads is listed in :data:`ENVIRONMENT` and read
through :func:`env` (the library) or by the scripts and tests named there; a test checks that
no other ``EHRSEQ_*`` name is used anywhere.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, TypeVar

PROFILES = ("smoke", "book", "full")
DEFAULT_PROFILE = "book"
ENV_VAR = "EHRSEQ_PROFILE"

T = TypeVar("T")

__all__ = [
    "PROFILES",
    "ENV_VAR",
    "ENVIRONMENT",
    "artifact_root",
    "current_profile",
    "env",
    "set_env",
    "progress_disabled",
    "for_profile",
    "format_config",
]

#: Every environment variable of the project and what it does.
ENVIRONMENT: dict[str, str] = {
    "EHRSEQ_PROFILE": "run profile of every chapter: smoke, book (default) or full",
    "EHRSEQ_ARTIFACTS": "folder of cached artefacts (default: artifacts/ in the repository)",
    "EHRSEQ_DEVICE": "force the device: cpu, cuda or cuda:N (default: CUDA when present)",
    "EHRSEQ_NO_PROGRESS": "1 turns every progress bar off (book builds and tests set it)",
    "EHRSEQ_DATA_DIR": "the project's data/ folder, for an install outside a clone",
    "EHRSEQ_SLOW": "1 runs the slow tests too (tests/conftest.py)",
    "EHRSEQ_NETWORK_TESTS": "1 runs the test that downloads GiBleed from PyPI (tests/test_download.py)",
    "EHRSEQ_SHARED_DATA": "folder of the public OMOP samples read by tests and chapters 3 and 11 (default ../shared/data)",
    "EHRSEQ_DUCKDB_MEMORY": "cap on DuckDB's memory when reading an export, e.g. 4GB (spills to disk beyond it)",
    "EHRSEQ_BOOK_JOBS": "chapters make book executes at once (scripts/execute_chapters.py, 2)",
    "EHRSEQ_BOOK_THREADS": "CPU threads of each of those chapters (1)",
    "EHRSEQ_TEST_WORKERS": "pytest workers of make test (scripts/test.sh, 2)",
}


def env(name: str) -> str | None:
    """The value of one of the project's environment variables (None when unset or empty).

    Raises:
        ValueError: if ``name`` is not listed in :data:`ENVIRONMENT`.
    """
    if name not in ENVIRONMENT:
        raise ValueError(f"{name} is not one of the project's variables: {sorted(ENVIRONMENT)}")
    return os.environ.get(name) or None


def set_env(name: str, value: str) -> None:
    """Set one of the project's environment variables for this process (and its children).

    Raises:
        ValueError: if ``name`` is not listed in :data:`ENVIRONMENT`.
    """
    if name not in ENVIRONMENT:
        raise ValueError(f"{name} is not one of the project's variables: {sorted(ENVIRONMENT)}")
    os.environ[name] = value


def artifact_root() -> Path:
    """``EHRSEQ_ARTIFACTS`` if set, else ``artifacts/`` at the repository root."""
    folder = env("EHRSEQ_ARTIFACTS")
    return Path(folder) if folder else Path(__file__).resolve().parents[2] / "artifacts"


def progress_disabled() -> bool:
    """Whether ``EHRSEQ_NO_PROGRESS=1`` turns progress bars off."""
    return env("EHRSEQ_NO_PROGRESS") == "1"


def current_profile() -> str:
    """The active profile from ``EHRSEQ_PROFILE`` (default ``book``).

    Raises:
        ValueError: if the variable names an unknown profile.
    """
    profile = (env(ENV_VAR) or DEFAULT_PROFILE).strip().lower()
    if profile not in PROFILES:
        raise ValueError(f"{ENV_VAR}={profile!r} is not one of {PROFILES}")
    return profile


def for_profile(
    cls: type[T], per_profile: dict[str, dict[str, Any]], profile: str | None = None
) -> T:
    """Build ``cls`` (a dataclass) from its defaults overridden by the active profile's values.

    Args:
        cls: a dataclass type whose defaults describe the ``book`` profile or shared settings.
        per_profile: ``{"smoke": {...}, "book": {...}, "full": {...}}``; missing profiles use
            the defaults.
        profile: force a profile instead of reading the environment.

    Raises:
        ValueError: on an unknown profile name, or a key that is not a field of ``cls``.
    """
    if not dataclasses.is_dataclass(cls):
        raise ValueError(f"{cls!r} is not a dataclass")
    profile = profile or current_profile()
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")
    unknown = set(per_profile) - set(PROFILES)
    if unknown:
        raise ValueError(f"unknown profiles in per_profile: {sorted(unknown)}")
    fields = {f.name for f in dataclasses.fields(cls)}
    overrides = per_profile.get(profile, {})
    bad = set(overrides) - fields
    if bad:
        raise ValueError(f"{cls.__name__} has no fields {sorted(bad)} (profile {profile!r})")
    cfg = cls(**overrides)
    if "profile" in fields:
        cfg = dataclasses.replace(cfg, profile=profile)
    return cfg


def format_config(obj) -> str:
    """A dataclass as ``Name(`` and one ``field=value,`` per line, for printing in a chapter.

    The one-line ``repr`` of a config runs hundreds of characters past the book's text
    column; one field per line reads at any width.
    """
    import dataclasses

    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"format_config expects a dataclass instance, got {type(obj).__name__}")
    fields = [f"    {f.name}={getattr(obj, f.name)!r}," for f in dataclasses.fields(obj)]
    return "\n".join([f"{type(obj).__name__}(", *fields, ")"])
