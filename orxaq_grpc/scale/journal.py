"""Guardrail events to and from the JSON the decision log keeps, by pydantic from their dataclasses.

Entries already written still read: a field added since takes its default, one since removed is
ignored, and a value pydantic cannot make into its field's type is a ValueError (the guardrails log
and skip such an entry).
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import TypeAdapter
from pydantic_core import to_json

T = TypeVar("T")


def to_payload(event: object) -> str:
    """A frozen dataclass (nested ones, tuples, enums as their values) as compact JSON.

    `to_json` keeps an infinite figure as `Infinity`, the way `json.dumps` wrote it; a TypeAdapter's
    `dump_json` would write null, which no float field reads back.
    """
    return to_json(event).decode()


def from_payload(kind: type[T], payload: str) -> T:
    adapter = _ADAPTERS.get(kind)
    if adapter is None:  # built once per kind; a race builds it twice, harmlessly
        adapter = _ADAPTERS[kind] = TypeAdapter(kind)
    built: T = adapter.validate_json(payload)
    return built


_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}
