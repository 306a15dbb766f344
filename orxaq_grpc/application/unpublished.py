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
KEPT, TAKEN = "kept", "taken"
# Batches a start looks back over: each is one stop during an outage.
LOOK_BACK = 1_000


@dataclass(frozen=True, slots=True)
class Unpublished:
    batch: str  # names the batch: its taken entry carries the same
    format: str  # the stream's FORMAT the entries were encoded in
    entries: tuple[Outgoing, ...] = ()


def keep(store: Store, entries: list[Outgoing], clock: Callable[[], float]) -> None:
    """Writes `entries` (the link's outbox, left at close) to the journal and waits until durable;
    a ledger that refuses loses them, with an error logged."""
    if not entries:
        return
    batch = Unpublished(uuid.uuid4().hex, FORMAT, tuple(entries))
    entry = JournalEntry(at=clock(), kind=KIND, subject=KEPT, payload=to_payload(batch))
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
    """The entries of every kept batch no start has taken yet, oldest batch first, each marked taken
    (durably) before it is returned. A batch in another FORMAT is taken and dropped, with a warning."""
    kept: list[Unpublished] = []
    taken: set[str] = set()
    for entry in store.journal(KIND, LOOK_BACK):
        try:
            batch = from_payload(Unpublished, entry.payload)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("journal %s entry at %s cannot be read (%s); skipped", entry.kind, entry.at, exc)
            continue
        if entry.subject == TAKEN:
            taken.add(batch.batch)
        elif entry.subject == KEPT:
            kept.append(batch)
    found: list[Outgoing] = []
    for batch in reversed(kept):  # the journal answers newest first
        if batch.batch in taken:
            continue
        mark = Unpublished(batch.batch, batch.format)
        try:
            write_durably(
                store,
                JournalEntry(at=clock(), kind=KIND, subject=TAKEN, payload=to_payload(mark)),
                "a kept batch taken",
            )
        except StoreError as exc:  # the rest stay kept, for the next start
            log.error("shared state: kept records could not be taken (%s); left for the next start", exc)
            break
        if batch.format != FORMAT:
            log.warning(
                "shared state: %d kept records are in stream format %s, not %s: dropped",
                len(batch.entries),
                batch.format,
                FORMAT,
            )
            continue
        found.extend(batch.entries)
    return found
