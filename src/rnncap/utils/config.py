"""Dataclass configs from plain dicts (JSON files, saved runs): unknown keys and ill-typed values
are refused with a `ConfigError` naming the field."""

from __future__ import annotations

import math
import typing
from dataclasses import fields
from typing import TypeVar

from rnncap.utils.errors import RnncapError

T = TypeVar("T")


class ConfigError(RnncapError, ValueError):
    """A config value that cannot be used; `field` names it, the message says why."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def config_from_dict(cls: type[T], values: dict, what: str) -> T:
    """`cls(**values)`, refusing unknown keys (`what` says whose) and values of the wrong type."""
    if not isinstance(values, dict):
        raise ConfigError(what, f"expected a JSON object, got {_describe(values)}")
    unknown = set(values) - {f.name for f in fields(cls)}
    if unknown:
        raise ConfigError(", ".join(sorted(unknown)), f"not one of the {what}")
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        check_type(name, value, hints[name])
    return cls(**values)


def check_types(config: object) -> None:
    """Check every field of a dataclass instance against its annotation (see `check_type`)."""
    hints = typing.get_type_hints(type(config))
    for f in fields(config):
        check_type(f.name, getattr(config, f.name), hints[f.name])


def check_type(name: str, value: object, hint: object) -> None:
    """Raise ConfigError unless `value` fits `hint`. A bool is not an int; an int is a float."""
    allowed = (
        typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, _UnionType) else (hint,)
    )
    if value is None and type(None) in allowed:
        return
    for kind in allowed:
        if kind is bool and isinstance(value, bool):
            return
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(name, f"must be a finite number, got {value}")
            return
        if kind is str and isinstance(value, str):
            return
        if kind not in (bool, int, float, str, type(None)):
            return  # a type this checker does not know: left to the dataclass
    expected = " or ".join(_NAMES.get(k, getattr(k, "__name__", str(k))) for k in allowed)
    raise ConfigError(name, f"expected {expected}, got {_describe(value)}")


def check_range(name: str, value: float, low: float, high: float) -> None:
    """Raise ConfigError unless low <= value <= high."""
    if not low <= value <= high:
        raise ConfigError(name, f"must be between {low:,} and {high:,}, got {value:,}")


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{text} ({_NAMES.get(type(value), type(value).__name__)})"


_UnionType = type(int | None)
_NAMES = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "true or false",
    type(None): "null",
    dict: "an object",
    list: "a list",
}
