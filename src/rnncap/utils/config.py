"""Dataclass configs from plain dicts (JSON files, saved runs), refusing keys they do not know."""

from __future__ import annotations

from dataclasses import fields
from typing import TypeVar

T = TypeVar("T")


def config_from_dict(cls: type[T], values: dict, what: str) -> T:
    """`cls(**values)`, with a ValueError naming every unknown key (`what` says whose)."""
    unknown = set(values) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what}: {', '.join(sorted(unknown))}")
    return cls(**values)
