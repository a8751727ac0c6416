"""Run profiles: one environment variable, ``EHRSEQ_PROFILE``, picks how big every chapter runs.

- ``smoke``: CI; each notebook in under about 60 s on 2 CPU cores.
- ``book``: what the published book executes on a CPU; each chapter in under about 3 minutes.
- ``full``: GPU scale.

Each chapter declares one typed config dataclass with a value per profile and builds it with
:func:`for_profile`. No config files are executed.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, TypeVar

PROFILES = ("smoke", "book", "full")
DEFAULT_PROFILE = "book"
ENV_VAR = "EHRSEQ_PROFILE"

T = TypeVar("T")

__all__ = ["PROFILES", "ENV_VAR", "current_profile", "for_profile"]


def current_profile() -> str:
    """The active profile from ``EHRSEQ_PROFILE`` (default ``book``).

    Raises:
        ValueError: if the variable names an unknown profile.
    """
    profile = os.environ.get(ENV_VAR, DEFAULT_PROFILE).strip().lower()
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
