"""The ledger contract on real databases, run on both backends (the embedded SQLite file and a real
PostgreSQL server): round trips, idempotent reports, group commit, crash durability, schema
versions, retention and shutdown; then what only SQLite has (WAL files, SQLite's own refusals).
PostgreSQL's own behaviour (outages, replicas, the live service on it) is in test_store_postgres.py."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from orxaq_grpc.learning import TaskFeatures
from orxaq_grpc.outcomes.records import DecisionRecord, JournalEntry, Outcome, ReportRecord
from orxaq_grpc.store import PostgresStore, SqliteStore, Store, StoreError
from orxaq_grpc.store.group_commit import Batch, GroupCommitter
from orxaq_grpc.store.postgres import SCHEMA_TABLE
from orxaq_grpc.store.postgres import SCHEMA_VERSION as PG_SCHEMA_VERSION
from orxaq_grpc.store.rows import record_key
from orxaq_grpc.store.sqlite import MIGRATIONS, SCHEMA_VERSION
from tests.conftest import FakeClock

REPO = Path(__file__).resolve().parent.parent
NOW = 1_800_000_000.0
DAY = 86_400.0


def decision(decision_id: str, at: float = NOW, **fields: object) -> DecisionRecord:
    values: dict[str, object] = {
        "decision_id": decision_id,
        "at": at,
        "lane": "codex",
        "provider": "openai",
        "model": "gpt-6.1-terra",
        "strategy": 1,
        "fallback_reason": 0,
        "disruptive": False,
        "router_error": False,
        "estimated_input_tokens": 30_000,
        "estimated_output_tokens": 4_000,
        "estimated_cost_usd": 0.05,
        "filtered": "gpt-6-luna:context",
    }
    values.update(fields)
    return DecisionRecord(**values)  # type: ignore[arg-type]


def report(decision_id: str, at: float = NOW, **fields: object) -> ReportRecord:
    values: dict[str, object] = {
        "decision_id": decision_id,
        "at": at,
        "lane": "codex",
        "provider": "openai",
        "model": "gpt-6.1-terra",
        "input_tokens": 31_000,
        "output_tokens": 3_500,
        "latency_s": 12.5,
        "outcome": Outcome.SUCCESS,
        "retry_after_s": 0.0,
        "validation_passed": True,
        "first_time_pass": True,
        "cost_usd": 0.049,
        "cost_exact": False,
        "decision_known": True,
    }
    values.update(fields)
    return ReportRecord(**values)  # type: ignore[arg-type]


def open_store(directory: Path, retention_days: int = 30, clock: FakeClock | None = None) -> SqliteStore:
    return SqliteStore(directory, retention_days, clock=clock or FakeClock(NOW))


AnyStore = SqliteStore | PostgresStore


def wait_for_commits(store: AnyStore, count: int) -> None:
    """Until the writer has made `count` group commits (decisions alone commit after their linger)."""
    deadline = time.monotonic() + 10
    while store.commits < count:
        assert time.monotonic() < deadline, f"{store.commits} commits, not {count}"
        time.sleep(0.005)


class Ledger:
    """One backend as the contract tests reach it: stores opened on the same ledger (`target`, its
    --ledger value), and the database reached behind the store's back."""

    kind: str
    target: str
    missing_reports: str  # how the backend says the reports table is gone

    def open(self, retention_days: int = 30, clock: FakeClock | None = None, **settings: Any) -> AnyStore:
        raise NotImplementedError

    def stall(self) -> AbstractContextManager[None]:
        """Holds the writer off while it lasts, as a disk that stalls would."""
        raise NotImplementedError

    def drop_reports(self) -> None:
        raise NotImplementedError

    def schema_version(self) -> int:
        raise NotImplementedError

    def set_schema_version(self, version: int) -> None:
        raise NotImplementedError

    @property
    def current_version(self) -> int:
        raise NotImplementedError


class SqliteLedger(Ledger):
    kind = "sqlite"
    missing_reports = "no such table: reports"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.target = f"sqlite:{directory}"

    def open(self, retention_days: int = 30, clock: FakeClock | None = None, **settings: Any) -> AnyStore:
        return SqliteStore(self.directory, retention_days, clock=clock or FakeClock(NOW), **settings)

    @contextmanager
    def stall(self) -> Iterator[None]:
        blocker = sqlite3.connect(self.directory / "ledger.sqlite3", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()

    def drop_reports(self) -> None:
        saboteur = sqlite3.connect(self.directory / "ledger.sqlite3")
        saboteur.execute("DROP TABLE reports")
        saboteur.close()

    def schema_version(self) -> int:
        with sqlite3.connect(self.directory / "ledger.sqlite3") as db:
            return int(db.execute("PRAGMA user_version").fetchone()[0])

    def set_schema_version(self, version: int) -> None:
        with sqlite3.connect(self.directory / "ledger.sqlite3") as db:
            db.execute(f"PRAGMA user_version = {version}")

    @property
    def current_version(self) -> int:
        return SCHEMA_VERSION


class PostgresLedger(Ledger):
    kind = "postgresql"
    missing_reports = 'relation "reports" does not exist'

    def __init__(self, dsn: str) -> None:
        self.target = dsn

    def open(self, retention_days: int = 30, clock: FakeClock | None = None, **settings: Any) -> AnyStore:
        return PostgresStore(self.target, retention_days, clock=clock or FakeClock(NOW), **settings)

    def _execute(self, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.target, autocommit=True) as db:
            cursor = db.execute(sql.encode())
            return cursor.fetchall() if cursor.description else []

    @contextmanager
    def stall(self) -> Iterator[None]:
        import psycopg

        with psycopg.connect(self.target) as blocker:  # a transaction until the block ends
            blocker.execute("LOCK TABLE decisions, reports, journal IN ACCESS EXCLUSIVE MODE")
            try:
                yield
            finally:
                blocker.rollback()

    def drop_reports(self) -> None:
        self._execute("DROP TABLE reports")

    def schema_version(self) -> int:
        return int(self._execute(f"SELECT version FROM {SCHEMA_TABLE}")[0][0])

    def set_schema_version(self, version: int) -> None:
        self._execute(f"UPDATE {SCHEMA_TABLE} SET version = {version}")

    @property
    def current_version(self) -> int:
        return PG_SCHEMA_VERSION


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Ledger:
    """Each contract test runs on both backends; PostgreSQL gets a fresh database."""
    if request.param == "sqlite":
        return SqliteLedger(tmp_path / "data")
    return PostgresLedger(request.getfixturevalue("postgres_dsn"))


@pytest.fixture
def store(ledger: Ledger) -> Iterator[AnyStore]:
    with ledger.open() as opened:
        yield opened


def ids(records: Iterator[DecisionRecord | ReportRecord]) -> list[tuple[str, str]]:
    return [(type(record).__name__, record.decision_id) for record in records]


def test_both_kinds_round_trip_through_replay_in_at_order(store: AnyStore) -> None:
    records = [
        report("b", at=NOW - 5, outcome=Outcome.RATE_LIMITED, retry_after_s=30.0, cost_exact=True),
        decision("b", at=NOW - 8, disruptive=True, router_error=True, fallback_reason=6),
        decision("a", at=NOW - 10),
        report("a", at=NOW - 1, validation_passed=False, decision_known=False),
    ]
    for record in records:
        if isinstance(record, DecisionRecord):
            store.record_decision(record)
        else:
            store.record_report(record)
    store.flush()

    replayed = list(store.replay(0.0))
    assert replayed == sorted(records, key=lambda record: record.at)
    assert isinstance(replayed[1].disruptive, bool)  # type: ignore[union-attr]
    assert replayed[2].outcome is Outcome.RATE_LIMITED  # type: ignore[union-attr]
    assert ids(store.replay(NOW - 5)) == [("ReportRecord", "b"), ("ReportRecord", "a")]
    assert list(store.replay(NOW)) == []


def test_find_decision_sees_committed_decisions(store: AnyStore) -> None:
    store.record_decision(decision("d1", estimated_cost_usd=0.25))
    store.flush()
    assert store.find_decision("d1") == decision("d1", estimated_cost_usd=0.25)
    assert store.find_decision("unknown") is None


def test_store_satisfies_the_protocol(store: AnyStore) -> None:
    typed: Store = store  # checked by type checkers; here, that every protocol method exists
    assert all(callable(getattr(typed, name)) for name in Store.__dict__ if not name.startswith("_"))


@pytest.mark.parametrize("flush_between", [False, True], ids=["same-batch", "separate-batches"])
def test_a_decision_reported_twice_counts_once_with_the_first_values(
    store: AnyStore, flush_between: bool
) -> None:
    first = store.record_report(report("d1", outcome=Outcome.SUCCESS, cost_usd=0.10))
    if flush_between:
        store.flush()
    second = store.record_report(report("d1", at=NOW + 60, outcome=Outcome.TIMEOUT, cost_usd=9.99))
    assert (first.result(), second.result()) == (True, False)
    assert list(store.replay(0.0)) == [report("d1", outcome=Outcome.SUCCESS, cost_usd=0.10)]


def test_queued_reports_from_many_threads_share_few_commits(ledger: Ledger, store: AnyStore) -> None:
    # Another connection holds the writer off (as a slow disk would) while 2,000 reports queue up;
    # released, the writer must take them in max_batch-sized groups.
    futures: list[Future[bool]] = []

    def report_many(thread: int) -> None:
        futures.extend(store.record_report(report(f"t{thread}-{i}")) for i in range(250))

    with ledger.stall():
        threads = [threading.Thread(target=report_many, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert [future.result(timeout=30) for future in futures] == [True] * 2000
    # What the writer took before it blocked, then 2,000 at most in batches of 1,024.
    assert store.commits <= 3
    assert sum(1 for _ in store.replay(0.0)) == 2000


# Records reports until killed, printing each window's ids only after their futures resolved. The
# ledger is opened as `serve --ledger` opens it: sqlite:DIR or a PostgreSQL URL.
CRASH_CHILD = """
import itertools, sys
from pathlib import Path
from orxaq_grpc.store import open_store
from tests.conftest import FakeClock
from tests.test_store import NOW, decision, report

store = open_store(sys.argv[1], Path("unused"), 30, clock=FakeClock(NOW))
for window in itertools.count():
    ids = [f"w{window}-{i}" for i in range(64)]
    futures = []
    for decision_id in ids:
        store.record_decision(decision(decision_id))
        futures.append(store.record_report(report(decision_id)))
    for future in futures:
        future.result()
    print("\\n".join(ids), flush=True)
"""


def test_decision_log_entries_linger_to_share_a_commit_but_reports_do_not_wait(ledger: Ledger) -> None:
    with ledger.open(decision_linger_s=30.0) as store:
        for i in range(200):
            store.record_decision(decision(f"d{i}"))
        # Nobody waits for decisions: they are still gathering (30 s is far beyond this test).
        assert store.commits == 0
        # A report ends the lingering: it commits at once, with every decision queued before it.
        assert store.record_report(report("r1")).result(timeout=10)
        assert store.commits == 1
        assert sum(1 for _ in store.replay(0.0)) == 201


def test_a_ledger_far_behind_drops_decision_log_entries_and_counts_them(ledger: Ledger) -> None:
    with ledger.open(max_queued_decisions=3) as store:
        with ledger.stall():  # the disk "stalls"
            for i in range(10):
                store.record_decision(decision(f"d{i}"))
            dropped = store.stats().dropped_decisions
            # Three queued, perhaps one more the writer already took off the queue; the rest dropped.
            assert 6 <= dropped <= 7
        store.flush(timeout_s=30)
        stats = store.stats()
        location = str(store.path) if isinstance(store, SqliteStore) else store.location
        assert (stats.queued, stats.dropped_decisions, stats.location) == (0, dropped, location)
        assert sum(1 for _ in store.replay(0.0)) == 10 - dropped
        store.record_decision(decision("after"))  # caught up: accepted again
        store.flush(timeout_s=30)
        assert store.find_decision("after") is not None


def test_acknowledged_reports_survive_sigkill_mid_load(ledger: Ledger) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CRASH_CHILD, ledger.target],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    acknowledged: list[str] = []
    for line in child.stdout:
        acknowledged.append(line.strip())
        if len(acknowledged) >= 1000:
            break
    child.kill()  # SIGKILL: no close(), no flush, commits possibly in flight
    child.wait()
    acknowledged += child.stdout.read().split("\n")[:-1]  # whole lines only
    assert len(acknowledged) >= 1000, child.stderr.read()

    with ledger.open() as reopened:
        records = list(reopened.replay(0.0))
        reported = {r.decision_id for r in records if isinstance(r, ReportRecord)}
        decided = {r.decision_id for r in records if isinstance(r, DecisionRecord)}
        assert set(acknowledged) <= reported
        assert set(acknowledged) <= decided  # queued before their reports, so committed with them
        assert reopened.record_report(report(acknowledged[0])).result() is False
        assert reopened.record_report(report("after-crash")).result() is True
    if isinstance(ledger, SqliteLedger):
        with sqlite3.connect(ledger.directory / "ledger.sqlite3") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_fresh_ledger_is_created_with_its_directory_in_wal_at_the_current_schema(tmp_path: Path) -> None:
    directory = tmp_path / "nested" / "data"
    with open_store(directory) as store:
        assert store.path == directory / "ledger.sqlite3"
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


def test_a_fresh_ledger_is_at_the_current_schema(ledger: Ledger) -> None:
    ledger.open().close()
    assert ledger.schema_version() == ledger.current_version
    ledger.open().close()  # opening again migrates nothing and keeps the version
    assert ledger.schema_version() == ledger.current_version


def test_a_ledger_from_a_newer_build_is_refused_and_left_alone(ledger: Ledger) -> None:
    with ledger.open() as store:
        location = store.stats().location
    newer = ledger.current_version + 1
    ledger.set_schema_version(newer)
    with pytest.raises(StoreError, match="newer") as refused:
        ledger.open()
    assert location in str(refused.value)
    assert f"version {newer}" in str(refused.value)
    assert f"({ledger.current_version})" in str(refused.value)
    assert ledger.schema_version() == newer


def test_an_unusable_directory_is_refused_with_its_path(tmp_path: Path) -> None:
    occupied = tmp_path / "file"
    occupied.write_text("not a directory")
    with pytest.raises(StoreError, match=str(occupied)):
        open_store(occupied)
    (tmp_path / "garbage" / "ledger.sqlite3").parent.mkdir()
    (tmp_path / "garbage" / "ledger.sqlite3").write_bytes(b"not a database, " * 100)
    with pytest.raises(StoreError, match="garbage"):
        open_store(tmp_path / "garbage")


@pytest.mark.parametrize(
    ("retention_days", "max_batch", "problem"),
    [(0, 1, "retention_days"), (1.5, 1, "retention_days"), (True, 1, "retention_days"), (1, 0, "max_batch")],
)
def test_settings_out_of_range_are_refused(
    ledger: Ledger, retention_days: object, max_batch: int, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        ledger.open(retention_days, max_batch=max_batch)  # type: ignore[arg-type]


def test_rows_past_retention_are_pruned_on_open(ledger: Ledger) -> None:
    with ledger.open(retention_days=365) as store:
        for name, age_days in [("old", 31), ("edge", 30), ("recent", 1)]:
            store.record_decision(decision(name, at=NOW - age_days * DAY))
            store.record_report(report(name, at=NOW - age_days * DAY))
    with ledger.open(retention_days=30) as store:
        assert ids(store.replay(0.0)) == [
            ("DecisionRecord", "edge"),
            ("ReportRecord", "edge"),
            ("DecisionRecord", "recent"),
            ("ReportRecord", "recent"),
        ]


def test_the_writer_prunes_again_once_an_hour_has_passed(ledger: Ledger) -> None:
    clock = FakeClock(NOW)
    with ledger.open(retention_days=30, clock=clock) as store:
        assert store.record_report(report("ageing", at=NOW - 29.9 * DAY)).result()
        clock.now += 0.5 * DAY  # "ageing" is now past retention, and the hour is up
        store.record_report(report("fresh", at=clock.now)).result()  # pruned before this commit
        assert ids(store.replay(0.0)) == [("ReportRecord", "fresh")]


def test_a_record_sqlite_refuses_fails_alone_and_is_never_called_a_duplicate(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.record_decision(decision("huge", estimated_input_tokens=2**64))  # logged, not stored
        futures = {
            "before": store.record_report(report("before")),
            "huge": store.record_report(report("huge", input_tokens=2**64)),  # past SQLite's 64 bits
            "nan": store.record_report(report("nan", latency_s=float("nan"))),  # SQLite stores NaN as NULL
            "after": store.record_report(report("after")),
        }
        wait(futures.values())
        for name in ("huge", "nan"):
            with pytest.raises(StoreError, match=f"ReportRecord '{name}' refused"):
                futures[name].result()
        assert futures["before"].result() and futures["after"].result()
        assert ids(store.replay(0.0)) == [("ReportRecord", "before"), ("ReportRecord", "after")]


def test_a_failed_commit_fails_its_whole_batch_and_writes_none_of_it(ledger: Ledger, store: AnyStore) -> None:
    ledger.drop_reports()  # every batch holding a report now fails
    store.record_decision(decision("d1"))
    failed = store.record_report(report("r1"))
    with pytest.raises(StoreError, match=rf"commit of \d+ queued writes failed: .*{ledger.missing_reports}"):
        failed.result()
    # The decision is stored only if the writer took it alone, before the report was queued.
    assert (store.find_decision("d1") is not None) == (store.commits == 1)


def test_close_flushes_is_idempotent_and_refuses_later_writes(ledger: Ledger) -> None:
    store = ledger.open()
    store.record_decision(decision("d1"))
    acknowledged = store.record_report(report("d1"))
    store.close()
    assert acknowledged.done() and acknowledged.result() is True
    store.close()
    store.flush()  # nothing left to commit
    writes: list[Callable[[], object]] = [
        lambda: store.record_decision(decision("d2")),
        lambda: store.record_report(report("d2")),
    ]
    for write in writes:
        with pytest.raises(StoreError, match="closed"):
            write()
    with pytest.raises(StoreError, match="closed"):
        store.find_decision("d1")
    with ledger.open() as reopened:
        assert ids(reopened.replay(0.0)) == [("DecisionRecord", "d1"), ("ReportRecord", "d1")]


def test_a_version_1_ledger_is_migrated_in_place_keeping_its_rows(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "ledger.sqlite3") as db:
        for statement in MIGRATIONS[0]:
            db.execute(statement)
        db.execute(
            "INSERT INTO decisions VALUES "
            "('old', ?, 'codex', 'openai', 'gpt-6.1-terra', 1, 0, 0, 0, 10, 20, 0.5, '')",
            (NOW,),
        )
        db.execute("PRAGMA user_version = 1")
    with SqliteStore(tmp_path, 31, clock=FakeClock(NOW)) as store:
        old = store.find_decision("old")
        assert old is not None and old.value_usd is None and old.estimated_cost_usd == 0.5
        store.record_decision(decision("new", value_usd=12.5))
        store.flush()
        assert store.find_decision("new").value_usd == 12.5  # type: ignore[union-attr]
        assert store.record_journal(JournalEntry(NOW, "scale", "codex", "{}")).result(timeout=5)
        assert store.journal("scale", 5) == [JournalEntry(NOW, "scale", "codex", "{}")]
    with sqlite3.connect(tmp_path / "ledger.sqlite3") as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_the_journal_is_pruned_but_the_last_stop_loss_transition_stays(ledger: Ledger) -> None:
    clock = FakeClock(NOW - 40 * DAY)
    with ledger.open(31, clock=clock) as store:
        for i, kind in enumerate(["stop_loss", "scale", "stop_loss", "scale"]):
            store.record_journal(JournalEntry(NOW - 40 * DAY + i, kind, str(i), "{}")).result(timeout=5)
    with ledger.open(31, clock=FakeClock(NOW)) as store:
        assert store.journal("scale", 10) == []
        assert [e.subject for e in store.journal("stop_loss", 10)] == ["2"]  # the state it left survives


def test_outcomes_come_in_commit_order_with_their_decisions_task(ledger: Ledger, store: AnyStore) -> None:
    for name in ("a", "b", "c"):
        store.record_report(report(name, outcome=Outcome.BAD_OUTPUT, validation_passed=False)).result(5)
    first = store.outcomes_after(0, 2)
    assert [o.outcome for o in first] == [Outcome.BAD_OUTPUT] * 2
    rest = store.outcomes_after(first[-1].position, 10)
    positions = [o.position for o in first + rest]
    assert len(positions) == 3 and positions == sorted(set(positions))
    assert store.outcomes_after(positions[-1], 10) == []
    assert all(o.task is None for o in first + rest)  # no decision logged with features


def test_decisions_alone_commit_without_a_sync_and_what_somebody_waits_for_with_one(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        statements: list[str] = []
        store._db.set_trace_callback(statements.append)  # the writer is idle: nothing queued
        store.record_decision(decision("d1"))
        wait_for_commits(store, 1)
        assert store.record_report(report("d1")).result(timeout=10)
        store.record_decision(decision("d2"))
        wait_for_commits(store, 3)
        assert store.record_journal(JournalEntry(NOW, "scale", "codex", "{}")).result(timeout=10)
        store.flush(timeout_s=10)
    # The synchronous level each COMMIT ran at, and the tables its transaction wrote.
    commits: list[tuple[str, set[str]]] = []
    level, tables = "FULL", set()
    for sql in statements:
        if sql.startswith("PRAGMA synchronous"):
            level = sql.split("=")[1].strip()
        elif sql.startswith("INSERT INTO"):
            tables.add(sql.split()[2])
        elif sql == "COMMIT":
            commits.append((level, tables))
            tables = set()
    assert commits == [
        ("NORMAL", {"decisions"}),
        ("FULL", {"reports"}),
        ("NORMAL", {"decisions"}),
        ("FULL", {"journal"}),
        ("FULL", set()),  # the flush
    ]


def test_task_features_in_the_old_json_encoding_are_still_read(tmp_path: Path) -> None:
    task = TaskFeatures(text="fix the flaky upload test", tags=("kind=bugfix", "lane=codex"))
    with open_store(tmp_path) as store:
        store.record_decision(decision("new", task=task))
        store.flush()
    old = b"\x01" + zlib.compress(json.dumps([task.text, list(task.tags)]).encode(), 1)  # as first shipped
    joined = b"\x02" + zlib.compress("\x00".join((task.text, *task.tags)).encode(), 1)  # before \x03
    with sqlite3.connect(tmp_path / "ledger.sqlite3") as db:
        (blob,) = db.execute("SELECT task FROM decisions WHERE decision_id = 'new'").fetchone()
        assert blob[:1] == b"\x03"  # a short task is stored plain
        for decision_id, encoded in (("old", old), ("joined", joined)):
            db.execute(
                "INSERT INTO decisions (decision_id, at, lane, provider, model, strategy, fallback_reason, "
                "disruptive, router_error, estimated_input_tokens, estimated_output_tokens, "
                "estimated_cost_usd, filtered, task) "
                "VALUES (?, ?, 'codex', 'openai', 'gpt-6.1-terra', 1, 0, 0, 0, 10, 20, 0.5, '', ?)",
                (decision_id, NOW, encoded),
            )
    with open_store(tmp_path) as store:
        for decision_id in ("old", "joined", "new"):
            assert store.record_report(report(decision_id)).result(timeout=10)
        assert [o.task for o in store.outcomes_after(0, 10)] == [task, task, task]


# --- the group-committing writer alone, with a stand-in for the backend's write ---


def committer(
    batches: list[Batch],
    *,
    max_batch: int = 1024,
    linger_s: float = 30.0,
    hold: threading.Event | None = None,
) -> GroupCommitter:
    """A started writer whose backend appends each batch to `batches`, then waits for `hold` if given."""

    def write(batch: Batch) -> list[bool]:
        batches.append(list(batch))
        if hold is not None:
            hold.wait(10)
        return [True] * len(batch)

    writer = GroupCommitter(
        "test",
        write,
        maintain=lambda: None,
        finish=lambda: None,
        max_batch=max_batch,
        max_queued_decisions=100_000,
        decision_linger_s=linger_s,
    )
    writer.start()
    return writer


def test_a_full_batch_and_what_is_left_past_it_do_not_linger() -> None:
    batches: list[Batch] = []
    hold = threading.Event()
    writer = committer(batches, max_batch=2, hold=hold)  # decisions alone would linger 30 s
    writer.record_decision(decision("d0"))
    writer.record_decision(decision("d1"))
    deadline = time.monotonic() + 10
    while not batches:  # full: taken at once, and held in the write
        assert time.monotonic() < deadline
        time.sleep(0.005)
    for i in range(2, 5):
        writer.record_decision(decision(f"d{i}"))
    reported = writer.record(report("r"))
    hold.set()
    assert reported.result(timeout=10)  # behind a full batch, and d4 before it: nothing lingered
    assert [[record_key(record) for record in batch] for batch in batches] == [
        ["d0", "d1"],
        ["d2", "d3"],
        ["d4", "r"],
    ]
    writer.stop()
    writer.wait_stopped()


def test_records_from_many_threads_all_commit_once_in_order() -> None:
    batches: list[Batch] = []
    writer = committer(batches, max_batch=64, linger_s=0.002)
    futures: list[Future[bool]] = []

    def record_many(n: int) -> None:
        for i in range(2000):
            if i % 100 == 99:
                futures.append(writer.record(report(f"{n}-{i}")))
            else:
                writer.record_decision(decision(f"{n}-{i}"))

    threads = [threading.Thread(target=record_many, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.flush(timeout_s=10)
    assert all(future.result(timeout=0) for future in futures)
    committed = [record_key(record) for batch in batches for record in batch if record is not None]
    for n in range(4):
        assert [key for key in committed if key.startswith(f"{n}-")] == [f"{n}-{i}" for i in range(2000)]
    assert len(committed) == 8000 and len(batches) < 8000 and writer.queued == 0
    writer.stop()
    writer.wait_stopped()
