"""Guardrail events to and from the JSON the decision log keeps, by pydantic from their dataclasses.

Entries already written still read: a field added since takes its default, one since removed is
ignored, and a value pydantic cannot make into its field's type is a ValueError (the guardrails log
and skip such an entry).
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from pydantic import TypeAdapter
from pydantic_core import to_json

from orxaq_grpc.outcomes.records import JournalEntry
from orxaq_grpc.store.base import NotConfirmed, Store

log = logging.getLogger(__name__)
COMMIT_WAIT_S = (
    10.0  # how long an operator's or a guardrail's entry waits for the ledger before it is given up
)

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


def decoded(kind: type[T], entries: list[JournalEntry]) -> list[T]:
    """Entries this build can read; one it cannot is logged and skipped, never fatal at start."""
    found: list[T] = []
    for entry in entries:
        try:
            found.append(from_payload(kind, entry.payload))
        except (ValueError, KeyError, TypeError) as exc:
            log.error("journal %s entry at %s cannot be read (%s); skipped", entry.kind, entry.at, exc)
    return found


def write_durably(store: Store, entry: JournalEntry, what: str) -> None:
    """Writes `entry` and returns once the ledger says it is durable; StoreError when it refuses, or
    NotConfirmed when it does not confirm within COMMIT_WAIT_S (`what` names the entry in that
    error): the entry is still queued then, and may yet be written."""
    written = store.record_journal(entry)
    try:
        written.result(timeout=COMMIT_WAIT_S)
    except TimeoutError:
        raise NotConfirmed(
            f"the ledger did not confirm {what} in {COMMIT_WAIT_S:g} s; it is still queued and may yet "
            "be written"
        ) from None
