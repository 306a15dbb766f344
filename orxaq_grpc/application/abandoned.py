"""Decisions their lanes never got (a RouteBatch cancelled part way, an answer that failed to build),
noted in the ledger's journal so a start does not book their reservations again: a decision without a
report is otherwise still in flight until its reservation's TTL, and a restart would hold budget for
tasks no lane is running.

One entry per abandoning (a cancelled batch abandons all its decisions at once), written without
waiting: what the lane lost is already freed in this process, and an entry the ledger loses only
costs a restart that budget until the TTL, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from orxaq_grpc.outcomes.records import JournalEntry
from orxaq_grpc.scale.journal import decoded, to_payload
from orxaq_grpc.store.base import Store, StoreError

log = logging.getLogger(__name__)

KIND = "abandoned"
# Entries a start looks back over: far more abandonings than a reservation's TTL sees in practice.
LOOK_BACK = 10_000


@dataclass(frozen=True, slots=True)
class Abandoned:
    decision_ids: tuple[str, ...]


def note(store: Store, decision_ids: list[str], clock: Callable[[], float]) -> None:
    """Journals `decision_ids` as never delivered; a ledger that refuses is logged, never raised (this
    runs where an answer already failed)."""
    if not decision_ids:
        return
    payload = to_payload(Abandoned(tuple(decision_ids)))
    entry = JournalEntry(at=clock(), kind=KIND, subject=f"{len(decision_ids)} decisions", payload=payload)
    try:
        store.record_journal(entry)
    except StoreError as exc:
        log.warning(
            "%d undelivered decisions not journaled (%s): a restart holds their budget until the TTL",
            len(decision_ids),
            exc,
        )


def since(store: Store, after: float) -> set[str]:
    """The ids of decisions journaled as never delivered after `after` (unix s)."""
    recent = [entry for entry in store.journal(KIND, LOOK_BACK) if entry.at > after]
    return {decision_id for noted in decoded(Abandoned, recent) for decision_id in noted.decision_ids}
