"""The embedded ledger: one SQLite file in WAL mode, written by a single group-committing thread.

Callers never touch the disk: records go on a queue, and the writer thread takes everything queued
(up to `max_batch`) into one transaction with one commit, so under load one fsync covers many reports.
A report's future resolves only after that commit. Readers use their own connections; WAL lets them
read a consistent snapshot while the writer writes.
"""

from __future__ import annotations

import heapq
import logging
import queue
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import fields
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import Any

from orxaq_grpc.learning import TaskFeatures
from orxaq_grpc.outcomes.records import DecisionRecord, JournalEntry, LedgerOutcome, Outcome, ReportRecord
from orxaq_grpc.store.base import StoreError, StoreStats

log = logging.getLogger(__name__)

FILE_NAME = "ledger.sqlite3"
BUSY_TIMEOUT_S = 5.0  # how long to wait for a lock another process (a second worker) holds
PRUNE_INTERVAL_S = 3600.0
PRUNE_CHUNK = 10_000  # rows per table per transaction, so pruning never holds up acknowledgements long
_DAY_S = 86_400.0
_TABLES = ("decisions", "reports")

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

# A decision's task features are stored encoded, and read back only by the success model's reader.
_DECISION_COLUMNS = tuple(field.name for field in fields(DecisionRecord) if field.name != "task")
_REPORT_COLUMNS = tuple(field.name for field in fields(ReportRecord))
_decision_fields = attrgetter(*_DECISION_COLUMNS)


def _decision_values(record: DecisionRecord) -> tuple[Any, ...]:
    return (*_decision_fields(record), None if record.task is None else record.task.encode())


_report_values = attrgetter(*_REPORT_COLUMNS)


def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    """A duplicate id changes nothing and rowcount says whether the row is new. Not OR IGNORE: that
    would also drop a row breaking NOT NULL (SQLite stores NaN as NULL) and call it a duplicate."""
    placeholders = ", ".join("?" * len(columns))
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) "
        "ON CONFLICT (decision_id) DO NOTHING"
    )


def _select_sql(table: str, columns: tuple[str, ...], where: str) -> str:
    return f"SELECT {', '.join(columns)} FROM {table} WHERE {where}"


_INSERT_DECISION = _insert_sql("decisions", (*_DECISION_COLUMNS, "task"))
_INSERT_REPORT = _insert_sql("reports", _REPORT_COLUMNS)
_JOURNAL_COLUMNS = tuple(field.name for field in fields(JournalEntry))
_journal_values = attrgetter(*_JOURNAL_COLUMNS)
_INSERT_JOURNAL = f"INSERT INTO journal ({', '.join(_JOURNAL_COLUMNS)}) VALUES ({', '.join('?' * 4)})"
_JOURNAL_LATEST = f"SELECT {', '.join(_JOURNAL_COLUMNS)} FROM journal WHERE kind = ? ORDER BY id DESC LIMIT ?"
# The journal is pruned like the rest, except the last stop-loss transition: the state it left
# must survive however long it lasts.
_PRUNE_JOURNAL = (
    "DELETE FROM journal WHERE rowid IN (SELECT rowid FROM journal WHERE at < ? AND "
    "id != (SELECT coalesce(max(id), -1) FROM journal WHERE kind = 'stop_loss') ORDER BY at LIMIT ?)"
)
_FIND_DECISION = _select_sql("decisions", _DECISION_COLUMNS, "decision_id = ?")
_DECISIONS_SINCE = _select_sql("decisions", _DECISION_COLUMNS, "at >= ? ORDER BY at")
_REPORTS_SINCE = _select_sql("reports", _REPORT_COLUMNS, "at >= ? ORDER BY at")
_RECENT_TASKS = (
    f"SELECT {', '.join(_DECISION_COLUMNS)}, task FROM decisions WHERE task IS NOT NULL "
    "ORDER BY at DESC LIMIT ?"
)
_OUTCOMES_AFTER = (
    "SELECT r.rowid, r.at, r.model, r.outcome, r.validation_passed, r.latency_s, d.task FROM reports AS r "
    "LEFT JOIN decisions AS d ON d.decision_id = r.decision_id WHERE r.rowid > ? ORDER BY r.rowid LIMIT ?"
)


def _decision_from_row(row: tuple[Any, ...]) -> DecisionRecord:
    values = dict(zip(_DECISION_COLUMNS, row, strict=True))
    values["disruptive"] = bool(values["disruptive"])
    values["router_error"] = bool(values["router_error"])
    return DecisionRecord(**values)


def _report_from_row(row: tuple[Any, ...]) -> ReportRecord:
    values = dict(zip(_REPORT_COLUMNS, row, strict=True))
    values["outcome"] = Outcome(values["outcome"])
    for name in ("validation_passed", "first_time_pass", "cost_exact", "decision_known", "cost_bounded"):
        values[name] = bool(values[name])
    return ReportRecord(**values)


# A queued write and the future to resolve after its commit. A decision has no future; a flush
# marker has no record. The stop sentinel is None.
_Record = DecisionRecord | ReportRecord | JournalEntry
_Item = tuple[_Record | None, Future[bool] | None]

# What SQLite raises for one row it refuses (a constraint, a value it cannot bind) while leaving the
# transaction open: that row fails alone, the rest of the batch commits.
_ROW_ERRORS = (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError, OverflowError)


def _task(blob: bytes | None) -> TaskFeatures | None:
    if blob is None:
        return None
    try:
        return TaskFeatures.decode(blob)
    except (ValueError, zlib.error) as exc:
        log.warning("a decision's task features cannot be read (%s); its outcome teaches nothing", exc)
        return None


def _running_future() -> Future[bool]:
    """A queued write cannot be withdrawn: marking the future running makes cancel() refuse."""
    future: Future[bool] = Future()
    future.set_running_or_notify_cancel()
    return future


class SqliteStore:
    """The ledger in `directory/ledger.sqlite3`, kept for `retention_days`.

    Future callbacks run on the writer thread and hold up the next commit: keep them short
    (`asyncio.wrap_future` is). Call close() on shutdown; the writer is a daemon thread, so
    anything still queued when the process exits without it is lost (none of it was acknowledged).
    """

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
        if isinstance(retention_days, bool) or not isinstance(retention_days, int) or retention_days < 1:
            raise ValueError(f"retention_days must be a whole number of days >= 1, not {retention_days!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, not {max_batch!r}")
        self.path = _ledger_path(Path(directory))
        self.commits = 0  # group commits so far: batching figures and tests
        self.dropped_decisions = 0
        # Each counter has one writer thread, so neither update can lose the other's.
        self._decisions_in = 0  # enqueued (callers' thread)
        self._decisions_out = 0  # taken off the queue (writer thread)
        self._max_queued_decisions = max_queued_decisions
        self._decision_linger_s = decision_linger_s
        self._retention_s = retention_days * _DAY_S
        self._max_batch = max_batch
        self._clock = clock
        self._next_prune = 0.0
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders enqueueing against close()
        self._closed = False
        self._stopped = _running_future()  # resolved when the writer has drained the queue and exited
        self._db = _open_writer(self.path)
        try:
            self._prune_all()
            self._reader = _connect(self.path, read_only=True)
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(f"{self.path}: cannot open the ledger: {exc}") from exc
        self._reader_lock = threading.Lock()
        threading.Thread(target=self._run, name="ledger-writer", daemon=True).start()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the Store protocol ---

    def record_decision(self, record: DecisionRecord) -> None:
        behind = self._decisions_in - self._decisions_out
        if behind >= self._max_queued_decisions:
            self.dropped_decisions += 1
            if self.dropped_decisions == 1:
                log.warning(
                    "%s: the ledger is %d decisions behind; dropping decision-log entries", self.path, behind
                )
            return
        self._decisions_in += 1
        self._enqueue((record, None))

    def stats(self) -> StoreStats:
        return StoreStats(
            location=str(self.path),
            queued=self._queue.qsize(),
            commits=self.commits,
            dropped_decisions=self.dropped_decisions,
        )

    def record_report(self, record: ReportRecord) -> Future[bool]:
        future = _running_future()
        self._enqueue((record, future))
        return future

    def record_journal(self, entry: JournalEntry) -> Future[bool]:
        future = _running_future()
        self._enqueue((entry, future))
        return future

    def journal(self, kind: str, limit: int) -> list[JournalEntry]:
        with self._reader_lock:
            self._check_open()
            rows = self._reader.execute(_JOURNAL_LATEST, (kind, limit)).fetchall()
        return [JournalEntry(*row) for row in rows]

    def find_decision(self, decision_id: str) -> DecisionRecord | None:
        with self._reader_lock:
            self._check_open()
            row = self._reader.execute(_FIND_DECISION, (decision_id,)).fetchone()
        return None if row is None else _decision_from_row(row)

    def replay(self, since: float) -> Iterator[DecisionRecord | ReportRecord]:
        self._check_open()  # here, not at the first next()
        return self._replay(since)

    def outcomes_after(self, position: int, limit: int) -> list[LedgerOutcome]:
        with self._reader_lock:
            self._check_open()
            rows = self._reader.execute(_OUTCOMES_AFTER, (position, limit)).fetchall()
        return [
            LedgerOutcome(rowid, at, model, Outcome(outcome), bool(passed), latency, _task(blob))
            for rowid, at, model, outcome, passed, latency, blob in rows
        ]

    def recent_tasks(self, limit: int) -> list[tuple[DecisionRecord, TaskFeatures]]:
        with self._reader_lock:
            self._check_open()
            rows = self._reader.execute(_RECENT_TASKS, (limit,)).fetchall()
        found = ((_decision_from_row(row[:-1]), _task(row[-1])) for row in rows)
        return [(decision, task) for decision, task in found if task is not None]

    def flush(self, timeout_s: float | None = None) -> None:
        marker = _running_future()
        try:
            self._enqueue((None, marker))
        except StoreError:  # closed: the writer commits everything queued before it stops
            marker = self._stopped
        marker.result(timeout_s)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(None)
        with self._reader_lock:  # first, so the writer's connection is the last and removes the WAL
            self._reader.close()
        self._stopped.result()

    # --- callers' side ---

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self.path}: the ledger store is closed")

    def _enqueue(self, item: _Item) -> None:
        with self._lock:
            self._check_open()
            self._queue.put(item)

    def _replay(self, since: float) -> Iterator[DecisionRecord | ReportRecord]:
        """Both tables from one read transaction, so the merge sees a single snapshot. On equal
        `at`, decisions come first (heapq.merge is stable)."""
        db = _connect(self.path, read_only=True)
        try:
            db.execute("BEGIN")
            decisions: Iterator[DecisionRecord | ReportRecord]
            decisions = map(_decision_from_row, db.execute(_DECISIONS_SINCE, (since,)))
            reports: Iterator[DecisionRecord | ReportRecord]
            reports = map(_report_from_row, db.execute(_REPORTS_SINCE, (since,)))
            yield from heapq.merge(decisions, reports, key=attrgetter("at"))
        finally:
            db.close()

    # --- the writer thread ---

    def _run(self) -> None:
        try:
            stopping = False
            while not stopping:
                batch, stopping = self._take_batch()
                if batch:
                    self._prune_if_due()
                    self._commit(batch)
        finally:
            self._db.close()
            self._stopped.set_result(True)

    def _take_batch(self) -> tuple[list[_Item], bool]:
        """Waits for the first item, then takes whatever else is already queued; True once the
        stop sentinel is reached (nothing is queued after it).

        A batch of decision-log entries alone lingers up to `decision_linger_s` for more: nobody
        waits for them, and one fsync for many beats one for each. Anything somebody waits for
        (a report, a flush) ends the lingering at once."""
        batch: list[_Item] = []
        item = self._queue.get()
        linger_until = time.monotonic() + self._decision_linger_s
        waited_on = False
        while item is not None:
            batch.append(item)
            waited_on = waited_on or item[1] is not None
            if len(batch) >= self._max_batch:
                return batch, False
            try:
                remaining = linger_until - time.monotonic()
                item = (
                    self._queue.get_nowait()
                    if waited_on or remaining <= 0
                    else self._queue.get(timeout=remaining)
                )
            except queue.Empty:
                return batch, False
        return batch, True

    def _commit(self, batch: list[_Item]) -> None:
        """One transaction for the whole batch; futures resolve only after it committed."""
        self._decisions_out += sum(1 for record, _ in batch if isinstance(record, DecisionRecord))
        try:
            with _transaction(self._db):
                results = self._insert_all(batch)
        except Exception as exc:  # a disk or database error: the batch fails whole, nothing written
            error = StoreError(f"{self.path}: commit of {len(batch)} queued writes failed: {exc}")
            error.__cause__ = exc
            log.error("%s", error)
            for _, future in batch:
                if future is not None:
                    future.set_exception(error)
            return
        self.commits += 1
        for (_, future), result in zip(batch, results, strict=True):
            if future is None:
                continue
            if isinstance(result, StoreError):
                future.set_exception(result)
            else:
                future.set_result(result)

    def _insert_all(self, batch: list[_Item]) -> list[bool | StoreError]:
        """Runs of decisions go in with one executemany (the decision log is most of the rows);
        reports one by one, because each needs its own new-or-duplicate answer."""
        results: list[bool | StoreError] = []
        run: list[DecisionRecord] = []
        for record, _ in batch:
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
            self._db.executemany(_INSERT_DECISION, map(_decision_values, run))
        except _ROW_ERRORS:
            if not self._db.in_transaction:
                raise
            return [self._insert(record) for record in run]  # find the row SQLite refuses
        return [True] * len(run)

    def _insert(self, record: _Record | None) -> bool | StoreError:
        """True when the row is new (always, for a decision, a journal entry or a flush marker); the
        error for a row SQLite refused on its own."""
        if record is None:  # a flush marker
            return True
        try:
            if isinstance(record, ReportRecord):
                return self._db.execute(_INSERT_REPORT, _report_values(record)).rowcount == 1
            if isinstance(record, JournalEntry):
                self._db.execute(_INSERT_JOURNAL, _journal_values(record))
                return True
            self._db.execute(_INSERT_DECISION, _decision_values(record))
            return True
        except _ROW_ERRORS as exc:
            if not self._db.in_transaction:  # SQLite rolled the whole transaction back: fail the batch
                raise
            key = getattr(record, "decision_id", None) or getattr(record, "kind", "")
            error = StoreError(f"{self.path}: {type(record).__name__} {key!r} refused: {exc}")
            log.error("%s", error)
            return error

    def _prune_all(self) -> None:
        now = self._clock()
        while not self._prune_chunk(now - self._retention_s):
            pass
        self._next_prune = now + PRUNE_INTERVAL_S

    def _prune_if_due(self) -> None:
        """About hourly, one chunk per batch until a chunk comes back short."""
        now = self._clock()
        if now < self._next_prune:
            return
        try:
            finished = self._prune_chunk(now - self._retention_s)
        except sqlite3.Error:
            log.exception("%s: pruning failed; retrying in an hour", self.path)
            finished = True
        if finished:
            self._next_prune = now + PRUNE_INTERVAL_S

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
