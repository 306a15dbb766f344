"""The shared ledger: PostgreSQL, for several replicas of the service (psycopg 3, the `postgresql` extra).

The same semantics as the embedded SQLite backend, through the same group-committing writer
(group_commit.py): one writer thread per process, everything queued goes into one transaction with
one COMMIT, and a report's future resolves only after that COMMIT returned. Sessions run with
`synchronous_commit = on`, so a returned COMMIT is flushed to disk (and to synchronous standbys,
where the server has them). Readers use a connection of their own; replay opens one more.

Commit-order positions across replicas. `outcomes_after` hands out reports by `position`, an identity
column, and a reader remembers the last position it saw. Identity values are taken when a row is
inserted, not when its transaction commits, so two writers could commit out of order: replica A
takes 10, replica B takes 11 and commits first, a reader sees 11 and moves past 10 for good. So
every transaction that inserts reports (or journal entries) first takes one transaction-scoped
advisory lock (ORDER_LOCK), held until its COMMIT: transactions that take positions run one at a
time, a later one starts only once the earlier one is visible (PostgreSQL releases locks after the
commit is visible), and positions become visible in increasing order. A rolled-back transaction only
leaves a gap, which readers skip harmlessly. The lock is held for one group commit at a time, so
replicas pay one lock hand-over per batch, not per report.

Migrations run in one transaction under another advisory lock (MIGRATION_LOCK), so replicas that start
at once apply them once; `orxaq_ledger_schema` holds the version.

Connection loss. A batch whose transaction fails (the server is down, the connection is cut, a
statement times out) fails whole: every future in it gets StoreError, so Report answers UNAVAILABLE
and nothing is counted. The writer then reconnects for later batches, with backoff (0.1 s doubling to
5 s) between failed attempts; a batch that arrives while no attempt is due fails at once rather than
wait. A batch that fails on a stale connection (the server restarted since the last batch) before its
COMMIT was sent is retried once on a new one. Nothing waits forever: connections have a connect
timeout, TCP keepalives and a TCP user timeout, statements a statement timeout, sessions an idle in
transaction timeout (the server frees what a frozen replica held), and a watchdog cuts a connection whose
batch or read runs a little past `commit_timeout_s` (a server that stopped answering; the server's own
timeouts come first, so a locked table fails once, not once more on a new connection).

A COMMIT cut off before its answer came is in doubt: it may have committed. Its reports were not
acknowledged, so the lane retries them; the writer remembers the transaction id of such a batch and,
when a retried report meets the stored row, asks the server (txid_status) whether that transaction
committed: if it did, the stored row is the unacknowledged first attempt and the retry is answered
as new (True), so it is counted once, now; if it is still in progress, the retry fails (retry later).
"""

from __future__ import annotations

import heapq
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from itertools import chain
from operator import attrgetter
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from orxaq_grpc.outcomes.records import DecisionRecord, JournalEntry, ReportRecord
from orxaq_grpc.store.base import StoreError
from orxaq_grpc.store.group_commit import Batch, GroupCommitter, Retention
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

if TYPE_CHECKING:
    from psycopg import Connection

log = logging.getLogger(__name__)

EXTRA = "postgresql"  # pip install 'orxaq-grpc[postgresql]'
MIGRATION_LOCK = 0x6F72_7861_7101  # pg_advisory_xact_lock keys: "orxaq" and a number
ORDER_LOCK = 0x6F72_7861_7102
SCHEMA_TABLE = "orxaq_ledger_schema"
CONNECT_TIMEOUT_S = 5
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 5.0
_INSERT_CHUNK = 500  # reports per INSERT statement (19 parameters each, well under the 65,535 limit)
_ITERSIZE = 5000  # rows per round trip when replaying
_INT64 = (-(2**63), 2**63 - 1)
_IN_DOUBT_MAX = 100_000  # report ids remembered from commits cut off before their answer

# Applied in order, all pending ones in one transaction under MIGRATION_LOCK that also sets the
# version. Never edit a shipped entry: append one. Column names equal the records' field names.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE decisions (
            decision_id text NOT NULL PRIMARY KEY,
            at double precision NOT NULL,
            lane text NOT NULL,
            provider text NOT NULL,
            model text NOT NULL,
            strategy bigint NOT NULL,
            fallback_reason bigint NOT NULL,
            disruptive boolean NOT NULL,
            router_error boolean NOT NULL,
            estimated_input_tokens bigint NOT NULL,
            estimated_output_tokens bigint NOT NULL,
            estimated_cost_usd double precision NOT NULL,
            filtered text NOT NULL,
            value_usd double precision,
            task bytea
        )""",
        "CREATE INDEX decisions_at ON decisions (at)",
        """CREATE TABLE reports (
            position bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
            decision_id text NOT NULL PRIMARY KEY,
            at double precision NOT NULL,
            lane text NOT NULL,
            provider text NOT NULL,
            model text NOT NULL,
            input_tokens bigint NOT NULL,
            output_tokens bigint NOT NULL,
            latency_s double precision NOT NULL,
            outcome integer NOT NULL,
            retry_after_s double precision NOT NULL,
            validation_passed boolean NOT NULL,
            first_time_pass boolean NOT NULL,
            cost_usd double precision NOT NULL,
            cost_exact boolean NOT NULL,
            decision_known boolean NOT NULL,
            cost_bounded boolean NOT NULL DEFAULT false,
            claimed_cost_usd double precision,
            cached_input_tokens bigint NOT NULL DEFAULT 0,
            cache_write_tokens bigint NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX reports_at ON reports (at)",
        """CREATE TABLE journal (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at double precision NOT NULL,
            kind text NOT NULL,
            subject text NOT NULL,
            payload text NOT NULL
        )""",
        "CREATE INDEX journal_kind ON journal (kind, id)",
        "CREATE INDEX journal_at ON journal (at)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def _placeholders(count: int) -> str:
    return f"({', '.join(['%s'] * count)})"


_INSERT_DECISION = (
    f"INSERT INTO decisions ({', '.join(DECISION_INSERT_COLUMNS)}) "
    f"VALUES {_placeholders(len(DECISION_INSERT_COLUMNS))} ON CONFLICT (decision_id) DO NOTHING"
)
_REPORT_ROW = _placeholders(len(REPORT_COLUMNS))
_INSERT_JOURNAL = (
    f"INSERT INTO journal ({', '.join(JOURNAL_COLUMNS)}) VALUES {_placeholders(len(JOURNAL_COLUMNS))}"
)
_TAKE_ORDER = "SELECT pg_advisory_xact_lock(%s), txid_current()"
_PRUNE = (
    "DELETE FROM decisions WHERE decision_id IN "
    "(SELECT decision_id FROM decisions WHERE at < %s ORDER BY at LIMIT %s)",
    "DELETE FROM reports WHERE decision_id IN "
    "(SELECT decision_id FROM reports WHERE at < %s ORDER BY at LIMIT %s)",
    # Like the rest, except the last stop-loss transition: the state it left must survive.
    "DELETE FROM journal WHERE id IN (SELECT id FROM journal WHERE at < %s AND "
    "id != (SELECT coalesce(max(id), -1) FROM journal WHERE kind = 'stop_loss') ORDER BY at LIMIT %s)",
)


def _psycopg() -> ModuleType:
    try:
        import psycopg
    except ImportError as exc:
        raise StoreError(
            f"a PostgreSQL ledger needs psycopg 3, which is not installed ({exc}): "
            f"pip install 'orxaq-grpc[{EXTRA}]'"
        ) from exc
    return psycopg


def check_available() -> None:
    """Raises StoreError naming the extra when psycopg is not installed."""
    _psycopg()


_KEY_VALUE_PASSWORD = re.compile(r"(\b\w*password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact_dsn(dsn: str) -> str:
    """The DSN as logs and Health show it: a URL's password and any password parameter replaced by ***."""
    if "://" not in dsn:
        return _KEY_VALUE_PASSWORD.sub(r"\1***", dsn)
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return f"{dsn.split('://', 1)[0]}://***"
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        userinfo = f"{userinfo.split(':', 1)[0]}:***"
    netloc = f"{userinfo}@{hosts}" if at else hosts
    query = "&".join(
        f"{name}=***" if name.lower().endswith("password") else param
        for param in parts.query.split("&")
        if param
        for name in [param.split("=", 1)[0]]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _unstorable(values: Sequence[Any]) -> str | None:
    """What PostgreSQL would refuse in one row, found before it is sent: in a PostgreSQL transaction
    one refused statement aborts the whole batch, so a row that cannot be held fails alone here."""
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and not _INT64[0] <= value <= _INT64[1]:
            return f"{value} does not fit in a 64-bit integer"
        if isinstance(value, str) and "\x00" in value:
            return "text holds a NUL character"
    return None


class _Watchdog:
    """Cuts a connection (shuts its socket down) whose call runs past a deadline: a server that has
    stopped answering, but whose kernel still acknowledges, would otherwise hold the call forever.
    One thread, started on first use, guards every connection of a store."""

    def __init__(self, limit_s: float) -> None:
        self._limit_s = limit_s
        self._guarded: dict[int, tuple[float, Connection[Any]]] = {}
        self._tokens = iter(range(1 << 62))
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    @contextmanager
    def guard(self, db: Connection[Any]) -> Iterator[None]:
        with self._cond:
            token = next(self._tokens)
            self._guarded[token] = (time.monotonic() + self._limit_s, db)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ledger-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._guarded.pop(token, None)  # gone already if it was cut

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                for token, (deadline, db) in list(self._guarded.items()):
                    if deadline <= now:
                        del self._guarded[token]
                        log.error("a ledger call ran past %.0f s: cutting its connection", self._limit_s)
                        _cut(db)
                deadlines = [deadline for deadline, _ in self._guarded.values()]
                self._cond.wait(min(deadlines) - now if deadlines else None)


def _cut(db: Connection[Any]) -> None:
    """Shuts the connection's socket down under the thread blocked on it, which then fails."""
    try:
        cut = socket.socket(fileno=os.dup(db.fileno()))
    except Exception:  # already closed
        return
    try:
        cut.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        cut.close()


class _Link:
    """One connection, opened on demand and again after it is lost, with backoff between failed
    attempts: while an attempt is not due, get() fails at once."""

    def __init__(
        self,
        connect: Callable[[], Connection[Any]],
        location: str,
        role: str,
        scrub: Callable[[BaseException], str],
    ) -> None:
        self._connect = connect
        self._scrub = scrub
        self._location = location  # for the logs; errors are raised without it, callers add it
        self._role = role
        self._db: Connection[Any] | None = None
        self._delay = 0.0
        self._retry_at = 0.0
        self._last_error = ""

    def get(self) -> tuple[Connection[Any], bool]:
        """The connection and whether it is new (a failure on an old one may just be a stale one)."""
        if self._db is not None and not self._db.closed and not self._db.broken:
            return self._db, False
        self.close()
        now = time.monotonic()
        if now < self._retry_at:
            raise StoreError(
                f"the ledger is unreachable ({self._last_error}); "
                f"the {self._role} tries again in {self._retry_at - now:.1f} s"
            )
        try:
            self._db = self._connect()
        except Exception as exc:
            self._delay = min(RECONNECT_MAX_S, max(RECONNECT_MIN_S, 2 * self._delay))
            self._retry_at = now + self._delay
            self._last_error = self._scrub(exc)
            raise StoreError(f"cannot reach the ledger: {self._last_error}") from exc
        if self._delay:
            log.info("%s: the ledger %s reconnected", self._location, self._role)
        self._delay = 0.0
        return self._db, True

    def check(self, db: Connection[Any]) -> bool:
        """After a failure: True, and the connection dropped, when it is lost (the next get() opens
        another); False when it still works (a statement refused, its transaction rolled back)."""
        if not db.closed and not db.broken:
            try:
                if db.info.transaction_status != 0:  # not idle: roll back what the failure left
                    db.execute("ROLLBACK")
                return False
            except Exception:
                pass
        if db is self._db:
            self.close()
        return True

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with suppress(Exception):
                db.close()


class _InDoubt:
    """Reports whose COMMIT was cut off before its answer came: decision id -> transaction id.
    The writer thread alone uses it."""

    def __init__(self) -> None:
        self._txid_of: dict[str, int] = {}

    def add(self, txid: int, decision_ids: Sequence[str]) -> None:
        for decision_id in decision_ids:
            self._txid_of[decision_id] = txid
        while len(self._txid_of) > _IN_DOUBT_MAX:  # the oldest go first
            del self._txid_of[next(iter(self._txid_of))]

    def settle(self, db: Connection[Any], decision_ids: Sequence[str]) -> tuple[set[str], set[str]]:
        """Of these ids, those an earlier cut-off COMMIT did store (committed) and those whose earlier
        transaction is still running (pending). Aborted or forgotten ones are dropped."""
        committed: set[str] = set()
        pending: set[str] = set()
        asked = [decision_id for decision_id in decision_ids if decision_id in self._txid_of]
        statuses: dict[int, str | None] = {}
        for decision_id in asked:
            txid = self._txid_of[decision_id]
            if txid not in statuses:
                row = db.execute("SELECT txid_status(%s)", (txid,)).fetchone()
                statuses[txid] = None if row is None else row[0]
            if statuses[txid] == "committed":
                committed.add(decision_id)
            elif statuses[txid] == "in progress":
                pending.add(decision_id)
            else:
                del self._txid_of[decision_id]
        return committed, pending

    def forget(self, decision_ids: Sequence[str]) -> None:
        for decision_id in decision_ids:
            self._txid_of.pop(decision_id, None)


class _CutOff(Exception):
    """The connection went while COMMIT was on its way: the batch may or may not be stored."""


class PostgresStore(LedgerStore):
    """The ledger in the PostgreSQL database `dsn` names (a postgresql:// URL or key=value conninfo),
    kept for `retention_days`. Opening needs the server (StoreError otherwise); after that an outage
    fails the writes and reads that meet it, and the store reconnects by itself."""

    _reads = Reads.using("%s", "position")

    def __init__(
        self,
        dsn: str,
        retention_days: int,
        *,
        max_batch: int = 1024,
        max_queued_decisions: int = 100_000,
        decision_linger_s: float = 0.05,
        commit_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_retention_days(retention_days)
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, not {max_batch!r}")
        if commit_timeout_s <= 0:
            raise ValueError(f"commit_timeout_s must be > 0, not {commit_timeout_s!r}")
        self._pg = _psycopg()
        self.location = redact_dsn(dsn)
        self._dsn = dsn
        try:
            given = self._pg.conninfo.conninfo_to_dict(dsn)
        except self._pg.Error as exc:
            problem = self._scrub(exc)
            raise StoreError(f"{self.location}: not a PostgreSQL connection string: {problem}") from None
        self._password = str(given.get("password") or "")
        self._settings = _session_settings(given, commit_timeout_s)
        # A little past the server's own statement and lock timeouts: a statement the server times out
        # leaves a live connection and fails once, where a cut connection looks stale and is tried
        # again on a new one, which would double the wait on a locked table.
        self._watchdog = _Watchdog(commit_timeout_s + max(1.0, 0.1 * commit_timeout_s))
        self._in_doubt = _InDoubt()
        self._writer_link = _Link(lambda: self._connect("writer"), self.location, "writer", self._scrub)
        self._reader_link = _Link(lambda: self._connect("reader"), self.location, "reader", self._scrub)
        self._reader_lock = threading.Lock()
        self._retention = Retention(
            self.location, retention_days, clock, self._prune_chunk, (StoreError, self._pg.Error)
        )
        try:
            db, _ = self._writer_link.get()
            self._migrate(db)
            self._retention.prune_all()
        except (StoreError, self._pg.Error) as exc:
            self._writer_link.close()
            self._watchdog.stop()
            reason = self._scrub(exc).removeprefix(f"{self.location}: ")
            raise StoreError(f"{self.location}: cannot open the ledger: {reason}") from exc
        self._writer = GroupCommitter(
            self.location,
            self._write,
            maintain=self._retention.prune_if_due,
            finish=self._writer_link.close,
            max_batch=max_batch,
            max_queued_decisions=max_queued_decisions,
            decision_linger_s=decision_linger_s,
        )
        self._writer.start()

    def close(self) -> None:
        self._writer.stop()
        with self._reader_lock:
            self._reader_link.close()
        self._writer.wait_stopped()
        self._watchdog.stop()

    # --- connections ---

    def _connect(self, role: str) -> Connection[Any]:
        db: Connection[Any] = self._pg.connect(
            self._dsn, autocommit=True, application_name=f"orxaq-grpc ledger {role}", **self._settings
        )
        return db

    def _scrub(self, exc: BaseException) -> str:
        """An error's text, never with the password in it."""
        text = " ".join(str(exc).split())  # libpq's hints come on lines of their own
        return text.replace(self._password, "***") if self._password else text

    def _read(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """One query on the reader's connection; once more on a new connection when the old one
        turns out stale (the server restarted since it was last used)."""
        with self._reader_lock:
            self._writer.check_open()
            for _ in range(2):
                try:
                    db, new = self._reader_link.get()
                except StoreError as exc:
                    raise StoreError(f"{self.location}: {exc}") from exc.__cause__
                try:
                    with self._watchdog.guard(db):
                        rows: list[tuple[Any, ...]] = db.execute(query, params).fetchall()
                    return rows
                except self._pg.Error as exc:
                    if self._reader_link.check(db) and not new:
                        continue
                    message = f"{self.location}: reading the ledger failed: {self._scrub(exc)}"
                    raise StoreError(message) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _replay(self, since: float) -> Iterator[DecisionRecord | ReportRecord]:
        """Both tables from one REPEATABLE READ transaction, so the merge sees a single snapshot,
        streamed through server-side cursors. On equal `at`, decisions come first."""
        try:
            db = self._connect("replay")
        except self._pg.Error as exc:
            raise StoreError(f"{self.location}: cannot replay the ledger: {self._scrub(exc)}") from exc
        try:
            db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            decision_rows = db.cursor(name="replay_decisions")
            decision_rows.itersize = _ITERSIZE
            decision_rows.execute(self._reads.decisions_since, (since,))
            report_rows = db.cursor(name="replay_reports")
            report_rows.itersize = _ITERSIZE
            report_rows.execute(self._reads.reports_since, (since,))
            decisions: Iterator[DecisionRecord | ReportRecord] = map(decision_from_row, decision_rows)
            reports: Iterator[DecisionRecord | ReportRecord] = map(report_from_row, report_rows)
            yield from heapq.merge(decisions, reports, key=attrgetter("at"))
        except self._pg.Error as exc:
            raise StoreError(f"{self.location}: replaying the ledger failed: {self._scrub(exc)}") from exc
        finally:
            with suppress(Exception):
                db.close()

    def _migrate(self, db: Connection[Any]) -> None:
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            db.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (version integer NOT NULL)")
            row = db.execute(f"SELECT max(version), count(*) FROM {SCHEMA_TABLE}").fetchone()
            version = 0 if row is None or row[0] is None else int(row[0])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.location}: ledger schema version {version} is newer than this build knows "
                    f"({SCHEMA_VERSION}); run a newer orxaq-grpc or point it at another database"
                )
            for statement in chain.from_iterable(MIGRATIONS[version:]):
                db.execute(statement.encode())
            if version < SCHEMA_VERSION:
                db.execute(f"DELETE FROM {SCHEMA_TABLE}".encode())
                db.execute(f"INSERT INTO {SCHEMA_TABLE} (version) VALUES (%s)", (SCHEMA_VERSION,))
        if version < SCHEMA_VERSION:
            log.info(
                "%s: ledger schema migrated from version %d to %d", self.location, version, SCHEMA_VERSION
            )

    # --- the writer thread ---

    def _write(self, batch: Batch) -> list[bool | StoreError]:
        """The batch in one transaction (group_commit.GroupCommitter answers the futures). Rows that
        PostgreSQL could not hold are refused alone before anything is sent; a second report for the
        same decision in one batch is a duplicate of the first."""
        results: list[bool | StoreError] = [True] * len(batch)
        decisions: list[tuple[Any, ...]] = []
        reports: list[tuple[int, tuple[Any, ...]]] = []
        entries: list[tuple[Any, ...]] = []
        first_of: dict[str, int] = {}
        durable = not all(isinstance(record, DecisionRecord) for record in batch)
        for index, record in enumerate(batch):
            if record is None:
                continue
            values = (
                decision_values(record)
                if isinstance(record, DecisionRecord)
                else report_values(record)
                if isinstance(record, ReportRecord)
                else journal_values(record)
            )
            if problem := _unstorable(values):
                name = f"{type(record).__name__} {record_key(record)!r}"
                error = StoreError(f"{self.location}: {name} refused: {problem}")
                log.error("%s", error)
                results[index] = error
            elif isinstance(record, DecisionRecord):
                decisions.append(values)
            elif isinstance(record, JournalEntry):
                entries.append(values)
            elif record.decision_id in first_of:
                results[index] = False
            else:
                first_of[record.decision_id] = index
                reports.append((index, values))
        for attempt in range(2):
            db, new = self._writer_link.get()
            try:
                with self._watchdog.guard(db):
                    stored = self._transaction(db, decisions, reports, entries, durable)
                break
            except _CutOff as cut:
                self._writer_link.check(db)
                raise StoreError(f"the connection went during COMMIT ({cut}); retry later") from None
            except self._pg.Error as exc:
                if self._writer_link.check(db) and not new and attempt == 0:
                    log.info("%s: the writer's connection went stale (%s); retrying", self.location, exc)
                    continue
                raise StoreError(self._scrub(exc)) from exc
            except BaseException:
                self._writer_link.check(db)  # roll back whatever it left open
                raise
        for index, _ in reports:
            results[index] = stored[index]
        return results

    def _transaction(
        self,
        db: Connection[Any],
        decisions: list[tuple[Any, ...]],
        reports: list[tuple[int, tuple[Any, ...]]],
        entries: list[tuple[Any, ...]],
        durable: bool,
    ) -> dict[int, bool | StoreError]:
        """Inserts and commits; each report's answer by its index in the batch. Not `durable`: the
        COMMIT returns before its WAL is flushed (a server crash may lose it; a later synchronous
        COMMIT flushes it too)."""
        ids = [values[0] for _, values in reports]
        earlier, pending = self._in_doubt.settle(db, ids) if ids else (set(), set())
        stored: dict[int, bool | StoreError] = {}
        tried = [(index, values) for index, values in reports if values[0] not in pending]
        for index, values in reports:
            if values[0] in pending:
                stored[index] = StoreError(
                    f"{self.location}: an earlier commit of the report for {values[0]!r} is still in "
                    "doubt; retry later"
                )
        db.execute("BEGIN")
        if not durable:  # decision-log entries alone: nobody waits for them (see SqliteStore._write)
            db.execute("SET LOCAL synchronous_commit = off")
        txid = 0
        if tried or entries:
            row = db.execute(_TAKE_ORDER, (ORDER_LOCK,)).fetchone()
            txid = 0 if row is None else int(row[1])
        with db.cursor() as cursor:
            if decisions:
                cursor.executemany(_INSERT_DECISION, decisions)
            new: set[str] = set()
            for start in range(0, len(tried), _INSERT_CHUNK):
                chunk = tried[start : start + _INSERT_CHUNK]
                sql = (
                    f"INSERT INTO reports ({', '.join(REPORT_COLUMNS)}) VALUES "
                    f"{', '.join([_REPORT_ROW] * len(chunk))} "
                    "ON CONFLICT (decision_id) DO NOTHING RETURNING decision_id"
                )
                cursor.execute(sql.encode(), [value for _, values in chunk for value in values])
                new.update(row[0] for row in cursor.fetchall())
            if entries:
                cursor.executemany(_INSERT_JOURNAL, entries)
        inserted = [decision_id for decision_id in ids if decision_id in new]
        try:
            self._commit(db)
        except self._pg.Error as exc:
            if db.closed or db.broken:
                if inserted:
                    self._in_doubt.add(txid, inserted)
                raise _CutOff(self._scrub(exc)) from exc
            raise
        self._in_doubt.forget([decision_id for decision_id in ids if decision_id not in pending])
        for index, values in tried:
            stored[index] = values[0] in new or values[0] in earlier
        return stored

    def _commit(self, db: Connection[Any]) -> None:
        db.execute("COMMIT")

    def _prune_chunk(self, cutoff: float) -> bool:
        """Deletes up to PRUNE_CHUNK rows older than `cutoff` from each table; True when none are left."""
        db, _ = self._writer_link.get()
        try:
            with self._watchdog.guard(db), db.transaction():
                deleted = [db.execute(statement, (cutoff, PRUNE_CHUNK)).rowcount for statement in _PRUNE]
        except self._pg.Error:
            self._writer_link.check(db)
            raise
        if any(deleted):
            log.info(
                "%s: pruned %d decisions, %d reports and %d journal entries past retention",
                self.location,
                *deleted,
            )
        return max(deleted) < PRUNE_CHUNK


def _session_settings(given: dict[str, Any], commit_timeout_s: float) -> dict[str, Any]:
    """Connection parameters the DSN did not set: timeouts so that nothing waits forever, and
    synchronous_commit on (before the DSN's own options, which win)."""
    timeout_ms = max(1, int(commit_timeout_s * 1000))
    defaults: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": timeout_ms,
    }
    settings = {name: value for name, value in defaults.items() if name not in given}
    # The server ends a session idle inside a transaction past the timeout: a replica frozen mid-batch
    # (a paused VM, a partition) would otherwise hold the order lock, and stall every other replica's
    # writes, until TCP gives up on it (hours).
    ours = (
        f"-c synchronous_commit=on -c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms}"
        f" -c idle_in_transaction_session_timeout={timeout_ms}"
    )
    settings["options"] = f"{ours} {given['options']}" if given.get("options") else ours
    return settings
