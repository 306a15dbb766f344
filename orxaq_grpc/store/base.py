"""What the service needs from a ledger store, whatever holds it (an embedded file, a shared server)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from orxaq_grpc.learning import TaskFeatures
from orxaq_grpc.outcomes.records import DecisionRecord, JournalEntry, LedgerOutcome, ReportRecord


class StoreError(Exception):
    """The store refused: a ledger it cannot use, a failed commit, or a call after close()."""


class NotConfirmed(StoreError):
    """A write the ledger has not confirmed in time: still queued, it may yet be written."""


@dataclass(frozen=True, slots=True)
class StoreStats:
    """What operators see of the ledger in Health."""

    location: str
    queued: int  # writes waiting for the next commit
    commits: int
    dropped_decisions: int  # decision-log entries dropped because the queue was full


class Store(Protocol):
    """The durable ledger of decisions and reports.

    Writes are queued and committed in groups: a decision is fire-and-forget, a report is
    acknowledged through its future once the commit that holds it is durable."""

    def record_decision(self, record: DecisionRecord) -> None:
        """Queues the decision for the next group commit; never waits for the disk. When the disk
        falls so far behind that the queue is full, the entry is dropped and counted instead:
        the decision log must not grow memory without bound, and Route must not wait for it."""
        ...

    def stats(self) -> StoreStats: ...

    def record_report(self, record: ReportRecord) -> Future[bool]:
        """Queues the report. The future resolves after the commit that made it durable: True if
        it is new, False if a report for the same decision_id was already stored (the first one
        wins, the duplicate changes nothing). A failed commit, or a record the backend cannot hold,
        sets StoreError on the future instead."""
        ...

    def record_journal(self, entry: JournalEntry) -> Future[bool]:
        """Queues a guardrail event; the future resolves True once its commit is durable."""
        ...

    def journal(self, kind: str, limit: int) -> list[JournalEntry]:
        """The last `limit` committed entries of one kind, newest first."""
        ...

    def find_decision(self, decision_id: str) -> DecisionRecord | None:
        """The committed decision with this id, if any."""
        ...

    def replay(self, since: float) -> Iterator[DecisionRecord | ReportRecord]:
        """Every committed record with `at >= since`, decisions and reports merged in `at` order,
        for rebuilding in-memory aggregates on start."""
        ...

    def outcomes_after(self, position: int, limit: int) -> list[LedgerOutcome]:
        """Up to `limit` committed reports after `position`, in commit order, each with its decision's
        task features: what the success model learns from."""
        ...

    def recent_tasks(self, limit: int) -> list[tuple[DecisionRecord, TaskFeatures]]:
        """The last `limit` committed decisions that carry task features, newest first."""
        ...

    def flush(self, timeout_s: float | None = None) -> None:
        """Returns once everything queued before the call is committed; raises TimeoutError after
        `timeout_s`, and StoreError if the commit it waited for failed."""
        ...

    def close(self) -> None:
        """Flushes and stops; later calls are no-ops, later writes raise StoreError."""
        ...
