"""The Store protocol written once for every backend, in terms of what differs between them: where
the ledger is (`location`), how a read runs on the backend's reader connection (`_read`), the read
statements in the backend's parameter style (`_reads`), how a replay streams (`_replay`), and `close`.
Writes all go through the shared group-committing writer (group_commit.py)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from orxaq_grpc.learning import TaskFeatures
from orxaq_grpc.outcomes.records import DecisionRecord, JournalEntry, LedgerOutcome, Outcome, ReportRecord
from orxaq_grpc.store.base import StoreStats
from orxaq_grpc.store.group_commit import GroupCommitter
from orxaq_grpc.store.rows import (
    DECISION_COLUMNS,
    JOURNAL_COLUMNS,
    REPORT_COLUMNS,
    decision_from_row,
    task_from_blob,
)


@dataclass(frozen=True, slots=True)
class Reads:
    """The statements the readers run, in one backend's parameter style."""

    journal_latest: str
    find_decision: str
    decisions_since: str
    reports_since: str
    recent_tasks: str
    outcomes_after: str

    @classmethod
    def using(cls, param: str, position: str) -> Reads:
        """`param` is the backend's placeholder (`?`, `%s`); `position` the reports column that
        orders them by commit, which `outcomes_after` hands out."""
        decisions = ", ".join(DECISION_COLUMNS)
        return cls(
            journal_latest=(
                f"SELECT {', '.join(JOURNAL_COLUMNS)} FROM journal WHERE kind = {param} "
                f"ORDER BY id DESC LIMIT {param}"
            ),
            find_decision=f"SELECT {decisions} FROM decisions WHERE decision_id = {param}",
            decisions_since=f"SELECT {decisions} FROM decisions WHERE at >= {param} ORDER BY at",
            reports_since=f"SELECT {', '.join(REPORT_COLUMNS)} FROM reports WHERE at >= {param} ORDER BY at",
            recent_tasks=(
                f"SELECT {decisions}, task FROM decisions WHERE task IS NOT NULL "
                f"ORDER BY at DESC LIMIT {param}"
            ),
            outcomes_after=(
                f"SELECT r.{position}, r.at, r.model, r.outcome, r.validation_passed, r.latency_s, d.task "
                "FROM reports AS r LEFT JOIN decisions AS d ON d.decision_id = r.decision_id "
                f"WHERE r.{position} > {param} ORDER BY r.{position} LIMIT {param}"
            ),
        )


class LedgerStore(ABC):
    """What every backend's store does alike. A backend sets `location` and `_writer` when it opens,
    `_reads` on its class, and implements `_read`, `_replay` and `close`."""

    location: str  # where the ledger is, as logs, errors and Health show it (no password)
    _writer: GroupCommitter
    _reads: ClassVar[Reads]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def commits(self) -> int:
        """Group commits so far: batching figures and tests."""
        return self._writer.commits

    # --- the Store protocol ---

    def record_decision(self, record: DecisionRecord) -> None:
        self._writer.record_decision(record)

    def stats(self) -> StoreStats:
        return StoreStats(
            location=self.location,
            queued=self._writer.queued,
            commits=self._writer.commits,
            dropped_decisions=self._writer.dropped_decisions,
        )

    def record_report(self, record: ReportRecord) -> Future[bool]:
        return self._writer.record(record)

    def record_journal(self, entry: JournalEntry) -> Future[bool]:
        return self._writer.record(entry)

    def journal(self, kind: str, limit: int) -> list[JournalEntry]:
        return [JournalEntry(*row) for row in self._read(self._reads.journal_latest, (kind, limit))]

    def find_decision(self, decision_id: str) -> DecisionRecord | None:
        rows = self._read(self._reads.find_decision, (decision_id,))
        return decision_from_row(rows[0]) if rows else None

    def replay(self, since: float) -> Iterator[DecisionRecord | ReportRecord]:
        self._writer.check_open()  # here, not at the first next()
        return self._replay(since)

    def outcomes_after(self, position: int, limit: int) -> list[LedgerOutcome]:
        rows = self._read(self._reads.outcomes_after, (position, limit))
        return [  # bool(): SQLite gives its booleans back as integers
            LedgerOutcome(place, at, model, Outcome(outcome), bool(passed), latency, task_from_blob(blob))
            for place, at, model, outcome, passed, latency, blob in rows
        ]

    def recent_tasks(self, limit: int) -> list[tuple[DecisionRecord, TaskFeatures]]:
        rows = self._read(self._reads.recent_tasks, (limit,))
        found = ((decision_from_row(row[:-1]), task_from_blob(row[-1])) for row in rows)
        return [(decision, task) for decision, task in found if task is not None]

    def flush(self, timeout_s: float | None = None) -> None:
        self._writer.flush(timeout_s)

    @abstractmethod
    def close(self) -> None:
        """Flushes and stops; later calls are no-ops, later writes raise StoreError."""

    # --- what each backend does its own way ---

    @abstractmethod
    def _read(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """The rows of one query on the reader's connection, under the reader's lock; StoreError
        once the store is closed."""

    @abstractmethod
    def _replay(self, since: float) -> Iterator[DecisionRecord | ReportRecord]:
        """Both tables from one snapshot, decisions and reports merged in `at` order (decisions
        first on equal `at`), read from `_reads.decisions_since` and `_reads.reports_since`."""
