"""What a replica could not publish to the others before it stopped (Redis away, or the drain out of
time), kept in the ledger's journal; the next start on that ledger publishes it, so the fleet counts
those decisions and reports once Redis is back, not never.

A batch is written once as kept and once as taken. A start takes every kept batch not taken yet:
with a ledger two replicas share (PostgreSQL), both may take one batch at once, and the others
recognise its records by id. A crash keeps nothing: its outbox was only in memory.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from orxaq_grpc.outcomes.records import JournalEntry
from orxaq_grpc.scale.journal import from_payload, to_payload, write_durably
from orxaq_grpc.shared.events import FORMAT
from orxaq_grpc.shared.link import Outgoing
from orxaq_grpc.store.base import Store, StoreError

log = logging.getLogger(__name__)

KIND = "shared_outbox"
# An entry's subject: "kept <batch>" or "taken <batch>", so a start skips the batches already taken
# without reading their records.
KEPT, TAKEN = "kept", "taken"
# Entries a start looks back over: a kept and a taken one per stop during an outage.
LOOK_BACK = 1_000


@dataclass(frozen=True, slots=True)
class Unpublished:
    format: str  # the stream's FORMAT the entries were encoded in
    entries: tuple[Outgoing, ...] = ()


def keep(store: Store, entries: list[Outgoing], clock: Callable[[], float]) -> None:
    """Writes `entries` (the link's outbox, left at close) to the journal and waits until durable;
    a ledger that refuses loses them, with an error logged."""
    if not entries:
        return
    payload = to_payload(Unpublished(FORMAT, tuple(entries)))
    entry = JournalEntry(at=clock(), kind=KIND, subject=f"{KEPT} {uuid.uuid4().hex}", payload=payload)
    try:
        write_durably(store, entry, f"{len(entries)} records Redis had not taken")
    except StoreError as exc:
        log.error("shared state: %d records Redis had not taken are lost: %s", len(entries), exc)
        return
    log.warning(
        "shared state: %d records Redis had not taken are kept in the ledger for the next start",
        len(entries),
    )


def take(store: Store, clock: Callable[[], float]) -> list[Outgoing]:
    """The entries of every kept batch no start has taken yet, oldest batch first, each marked taken.
    A mark the ledger does not confirm still hands its batch over: a later start may publish it again,
    which the other replicas recognise by id, where a batch marked but not handed over would be lost.
    A batch in another FORMAT is taken and dropped, with a warning."""
    entries = store.journal(KIND, LOOK_BACK)
    taken = {e.subject.partition(" ")[2] for e in entries if e.subject.startswith(f"{TAKEN} ")}
    found: list[Outgoing] = []
    for entry in reversed(entries):  # the journal answers newest first
        state, _, batch = entry.subject.partition(" ")
        if state != KEPT or batch in taken:
            continue
        try:
            kept = from_payload(Unpublished, entry.payload)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("journal %s entry at %s cannot be read (%s); skipped", entry.kind, entry.at, exc)
            continue
        mark = JournalEntry(at=clock(), kind=KIND, subject=f"{TAKEN} {batch}", payload="{}")
        try:
            write_durably(store, mark, "a kept batch taken")
        except StoreError as exc:
            log.error("shared state: taking kept records was not confirmed (%s); publishing them", exc)
        if kept.format != FORMAT:
            log.warning(
                "shared state: %d kept records are in stream format %s, not %s: dropped",
                len(kept.entries),
                kept.format,
                FORMAT,
            )
            continue
        found.extend(kept.entries)
    return found
