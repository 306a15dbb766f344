"""The embedded ledger: one SQLite file in WAL mode, written by a single group-committing thread.

Callers never touch the disk: records go on a queue, and the writer thread (group_commit.py, shared
with the PostgreSQL backend) takes everything queued (up to `max_batch`) into one transaction with one
commit, so under load one fsync covers many reports. A report's future resolves only after that
commit. Readers use their own connections; WAL lets them read a consistent snapshot while the writer
writes.
"""

from __future__ import annotations

import heapq
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import Any

from orxaq_grpc.outcomes.records import DecisionRecord, JournalEntry, ReportRecord
from orxaq_grpc.store.base import StoreError
from orxaq_grpc.store.group_commit import Batch, GroupCommitter, Record, Retention
from orxaq_grpc.store.ledger import LedgerStore, Reads
from orxaq_grpc.store.rows import (
    DECISION_INSERT_COLUMNS,
    JOURNAL_COLUMNS,
    PRUNE_CHUNK,
    REPORT_COLUMNS,
    check_retention_days,
    decision_from_row,
    decision_values,
    journal_values,
    record_key,
    report_from_row,
    report_values,
)

log = logging.getLogger(__name__)

FILE_NAME = "ledger.sqlite3"
BUSY_TIMEOUT_S = 5.0  # how long to wait for a lock another process (a second worker) holds

# Applied in order, all pending ones in one transaction that also sets `PRAGMA user_version`.
# Never edit a shipped entry: append one. Column names equal the records' field names.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE decisions (
            decision_id TEXT NOT NULL PRIMARY KEY,
            at REAL NOT NULL,
            lane TEXT NOT NULL,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            strategy INTEGER NOT NULL,
            fallback_reason INTEGER NOT NULL,
            disruptive INTEGER NOT NULL,
            router_error INTEGER NOT NULL,
            estimated_input_tokens INTEGER NOT NULL,
            estimated_output_tokens INTEGER NOT NULL,
            estimated_cost_usd REAL NOT NULL,
            filtered TEXT NOT NULL
        )""",
        "CREATE INDEX decisions_at ON decisions (at)",
        """CREATE TABLE reports (
            decision_id TEXT NOT NULL PRIMARY KEY,
            at REAL NOT NULL,
            lane TEXT NOT NULL,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            latency_s REAL NOT NULL,
            outcome INTEGER NOT NULL,
            retry_after_s REAL NOT NULL,
            validation_passed INTEGER NOT NULL,
            first_time_pass INTEGER NOT NULL,
            cost_usd REAL NOT NULL,
            cost_exact INTEGER NOT NULL,
            decision_known INTEGER NOT NULL
        )""",
        "CREATE INDEX reports_at ON reports (at)",
    ),
    (
        "ALTER TABLE decisions ADD COLUMN value_usd REAL",
        """CREATE TABLE journal (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            kind TEXT NOT NULL,
            subject TEXT NOT NULL,
            payload TEXT NOT NULL
        )""",
        "CREATE INDEX journal_kind ON journal (kind, id)",
    ),
    ("ALTER TABLE decisions ADD COLUMN task BLOB",),
    (
        "ALTER TABLE reports ADD COLUMN cost_bounded INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE reports ADD COLUMN claimed_cost_usd REAL",
    ),
    (
        "ALTER TABLE reports ADD COLUMN cached_input_tokens INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE reports ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
_TABLES = ("decisions", "reports")


def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    """A duplicate id changes nothing and rowcount says whether the row is new. Not OR IGNORE: that
    would also drop a row breaking NOT NULL (SQLite stores NaN as NULL) and call it a duplicate."""
    placeholders = ", ".join("?" * len(columns))
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) "
        "ON CONFLICT (decision_id) DO NOTHING"
    )


_INSERT_DECISION = _insert_sql("decisions", DECISION_INSERT_COLUMNS)
_INSERT_REPORT = _insert_sql("reports", REPORT_COLUMNS)
_INSERT_JOURNAL = f"INSERT INTO journal ({', '.join(JOURNAL_COLUMNS)}) VALUES ({', '.join('?' * 4)})"
# The journal is pruned like the rest, except the last stop-loss transition: the state it left
# must survive however long it lasts.
_PRUNE_JOURNAL = (
    "DELETE FROM journal WHERE rowid IN (SELECT rowid FROM journal WHERE at < ? AND "
    "id != (SELECT coalesce(max(id), -1) FROM journal WHERE kind = 'stop_loss') ORDER BY at LIMIT ?)"
)

# What SQLite raises for one row it refuses (a constraint, a value it cannot bind) while leaving the
# transaction open: that row fails alone, the rest of the batch commits.
_ROW_ERRORS = (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError, OverflowError)


class SqliteStore(LedgerStore):
    """The ledger in `directory/ledger.sqlite3`, kept for `retention_days`.

    Writes go through the shared group-committing writer (group_commit.py): future callbacks run on
    the writer thread and hold up the next commit, so keep them short (`asyncio.wrap_future` is).
    Call close() on shutdown; the writer is a daemon thread, so anything still queued when the process
    exits without it is lost (none of it was acknowledged).
    """

    _reads = Reads.using("?", "rowid")

    def __init__(
        self,
        directory: Path,
        retention_days: int,
        *,
        max_batch: int = 1024,
        max_queued_decisions: int = 100_000,
        decision_linger_s: float = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_retention_days(retention_days)
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, not {max_batch!r}")
        self.path = _ledger_path(Path(directory))
        self.location = str(self.path)
        self._db = _open_writer(self.path)
        self._synchronous = "FULL"  # as _open_writer set it
        self._writer = GroupCommitter(
            self.location,
            self._write,
            maintain=self._prune_if_due,
            finish=self._db.close,
            max_batch=max_batch,
            max_queued_decisions=max_queued_decisions,
            decision_linger_s=decision_linger_s,
        )
        errors = (sqlite3.Error,)
        self._retention = Retention(self.location, retention_days, clock, self._prune_chunk, errors)
        try:
            self._retention.prune_all()
            self._reader = _connect(self.path, read_only=True)
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(f"{self.path}: cannot open the ledger: {exc}") from exc
        self._reader_lock = threading.Lock()
        self._writer.start()

    def close(self) -> None:
        self._writer.stop()
        with self._reader_lock:  # first, so the writer's connection is the last and removes the WAL
            self._reader.close()
        self._writer.wait_stopped()

    # --- callers' side ---

    def _read(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._reader_lock:
            self._writer.check_open()
            rows: list[tuple[Any, ...]] = self._reader.execute(query, params).fetchall()
        return rows

    def _replay(self, since: float) -> Iterator[DecisionRecord | ReportRecord]:
        """Both tables from one read transaction, so the merge sees a single snapshot. On equal
        `at`, decisions come first (heapq.merge is stable)."""
        db = _connect(self.path, read_only=True)
        try:
            db.execute("BEGIN")
            decisions: Iterator[DecisionRecord | ReportRecord]
            decisions = map(decision_from_row, db.execute(self._reads.decisions_since, (since,)))
            reports: Iterator[DecisionRecord | ReportRecord]
            reports = map(report_from_row, db.execute(self._reads.reports_since, (since,)))
            yield from heapq.merge(decisions, reports, key=attrgetter("at"))
        finally:
            db.close()

    # --- the writer thread ---

    def _write(self, batch: Batch) -> list[bool | StoreError]:
        """One transaction for the whole batch (group_commit.GroupCommitter answers the futures).

        A batch of decision-log entries alone commits with `synchronous = NORMAL`: in WAL mode the
        commit is still atomic, but a power cut may lose it, and nobody was told it is stored. Any
        batch somebody waits for (a report, a journal entry, a flush) commits FULL, and its sync of
        the WAL also makes every earlier commit durable."""
        self._set_synchronous("NORMAL" if all(isinstance(r, DecisionRecord) for r in batch) else "FULL")
        with _transaction(self._db):
            return self._insert_all(batch)

    def _set_synchronous(self, level: str) -> None:
        """Set between transactions; it applies to the connection's next COMMITs."""
        if level != self._synchronous:
            self._db.execute(f"PRAGMA synchronous = {level}")
            self._synchronous = level

    def _insert_all(self, batch: Batch) -> list[bool | StoreError]:
        """Runs of decisions go in with one executemany (the decision log is most of the rows);
        reports one by one, because each needs its own new-or-duplicate answer."""
        results: list[bool | StoreError] = []
        run: list[DecisionRecord] = []
        for record in batch:
            if isinstance(record, DecisionRecord):
                run.append(record)
                continue
            results += self._insert_decisions(run)
            run = []
            results.append(self._insert(record))
        results += self._insert_decisions(run)
        return results

    def _insert_decisions(self, run: list[DecisionRecord]) -> list[bool | StoreError]:
        if not run:
            return []
        try:
            self._db.executemany(_INSERT_DECISION, map(decision_values, run))
        except _ROW_ERRORS:
            if not self._db.in_transaction:
                raise
            return [self._insert(record) for record in run]  # find the row SQLite refuses
        return [True] * len(run)

    def _insert(self, record: Record | None) -> bool | StoreError:
        """True when the row is new (always, for a decision, a journal entry or a flush marker); the
        error for a row SQLite refused on its own."""
        if record is None:  # a flush marker
            return True
        try:
            if isinstance(record, ReportRecord):
                return self._db.execute(_INSERT_REPORT, report_values(record)).rowcount == 1
            if isinstance(record, JournalEntry):
                self._db.execute(_INSERT_JOURNAL, journal_values(record))
                return True
            self._db.execute(_INSERT_DECISION, decision_values(record))
            return True
        except _ROW_ERRORS as exc:
            if not self._db.in_transaction:  # SQLite rolled the whole transaction back: fail the batch
                raise
            error = StoreError(f"{self.path}: {type(record).__name__} {record_key(record)!r} refused: {exc}")
            log.error("%s", error)
            return error

    def _prune_if_due(self) -> None:
        self._retention.prune_if_due()

    def _prune_chunk(self, cutoff: float) -> bool:
        """Deletes up to PRUNE_CHUNK rows older than `cutoff` from each table; True when none are left."""
        with _transaction(self._db):
            deleted = [
                self._db.execute(
                    f"DELETE FROM {table} WHERE rowid IN "
                    f"(SELECT rowid FROM {table} WHERE at < ? ORDER BY at LIMIT ?)",
                    (cutoff, PRUNE_CHUNK),
                ).rowcount
                for table in _TABLES
            ]
            deleted.append(self._db.execute(_PRUNE_JOURNAL, (cutoff, PRUNE_CHUNK)).rowcount)
        if any(deleted):
            log.info(
                "%s: pruned %d decisions, %d reports and %d journal entries past retention",
                self.path,
                *deleted,
            )
        return max(deleted) < PRUNE_CHUNK


def _ledger_path(directory: Path) -> Path:
    """Creates the data directory (and its parents) on first start."""
    directory = directory.absolute()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{directory}: cannot create the ledger directory: {exc}") from exc
    return directory / FILE_NAME


def _connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """Autocommit mode (transactions are explicit); shared across threads only under a lock or by
    handing over (the writer's connection is opened here, then used by the writer thread alone)."""
    target = f"{path.as_uri()}?mode=ro" if read_only else str(path)
    return sqlite3.connect(
        target, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False, uri=read_only
    )


def _open_writer(path: Path) -> sqlite3.Connection:
    """Schema first (so a refused file is left untouched), then WAL and full sync: an acknowledged
    report survives a crash and a power cut."""
    try:
        db = _connect(path)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open the ledger: {exc}") from exc
    try:
        _migrate(db, path)
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"{path}: the ledger needs WAL mode but got {mode!r} (a network filesystem?)")
        db.execute("PRAGMA synchronous = FULL")
    except sqlite3.Error as exc:
        db.close()
        raise StoreError(f"{path}: cannot open the ledger: {exc}") from exc
    except BaseException:
        db.close()
        raise
    return db


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    with _transaction(db):
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{path}: ledger schema version {version} is newer than this build knows "
                f"({SCHEMA_VERSION}); run a newer orxaq-grpc or point it at another data directory"
            )
        for statement in chain.from_iterable(MIGRATIONS[version:]):
            db.execute(statement)
        if version < SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    if version < SCHEMA_VERSION:
        log.info("%s: ledger schema migrated from version %d to %d", path, version, SCHEMA_VERSION)


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE takes the write lock up front (waiting out another process's, up to the busy
    timeout); any failure, the COMMIT's included, rolls the whole transaction back."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
