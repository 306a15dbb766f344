"""Guardrail events to and from the JSON the decision log keeps."""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from functools import cache
from typing import Any, TypeVar

T = TypeVar("T")


def to_payload(event: Any) -> str:
    """A frozen dataclass (nested ones, tuples, enums as their values) as compact JSON."""
    return json.dumps(dataclasses.asdict(event), separators=(",", ":"))


def from_payload(kind: type[T], payload: str) -> T:
    built: T = _build(kind, json.loads(payload))
    return built


@cache
def _hints(kind: type) -> dict[str, Any]:
    return typing.get_type_hints(kind)


def _build(kind: Any, value: Any) -> Any:
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        # A field added since the entry was written takes its default (KeyError if it has none).
        hints = _hints(kind)
        return kind(
            **{
                f.name: _build(hints[f.name], value[f.name])
                for f in dataclasses.fields(kind)
                if f.name in value
            }
        )
    origin = typing.get_origin(kind)
    if origin is tuple:
        (item, *_) = typing.get_args(kind)
        return tuple(_build(item, v) for v in value)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (real,) = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        return _build(real, value)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind(value)
    return value
