"""What only the PostgreSQL ledger has, on a real server: replicas migrating and writing at once,
the server stopping under load, a commit cut off in doubt, a server that stops answering, and the
live service on `serve --ledger postgresql://...` (tests/test_store.py runs the shared contract)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import wait
from contextlib import closing
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from orxaq_grpc.client import CallFailed, RoutingClient
from orxaq_grpc.store import PostgresStore, SqliteStore, StoreError, open_store, redact_dsn
from orxaq_grpc.store.postgres import SCHEMA_TABLE, SCHEMA_VERSION, _cut
from tests.conftest import CLI, CONFIG_DIR, FakeClock, ServerProcess
from tests.postgres_server import PostgresServer
from tests.test_reports import report_for, route, today
from tests.test_store import NOW, decision, ids, report, wait_for_commits

REPO = Path(__file__).resolve().parent.parent


def execute(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as db:
        cursor = db.execute(sql.encode())
        return cursor.fetchall() if cursor.description else []


def open_pg(dsn: str, **settings: Any) -> PostgresStore:
    return PostgresStore(dsn, 30, clock=FakeClock(NOW), **settings)


def with_password(dsn: str, password: str) -> str:
    """The same DSN with a password (trust authentication ignores it; the logs must not show it)."""
    return dsn.replace("postgres@", f"postgres:{password}@", 1)


def test_replicas_opening_at_once_apply_the_migrations_once(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="orxaq_grpc.store.postgres")
    start = threading.Barrier(4)
    opened: list[PostgresStore] = []
    failures: list[BaseException] = []

    def replica() -> None:
        start.wait()
        try:
            opened.append(open_pg(postgres_dsn))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert failures == []
        assert len(opened) == 4
        migrated = [r for r in caplog.records if "ledger schema migrated from version 0" in r.getMessage()]
        assert len(migrated) == 1
        assert execute(postgres_dsn, f"SELECT version FROM {SCHEMA_TABLE}") == [(SCHEMA_VERSION,)]
        # Every replica writes to the one ledger; a decision reported on two is counted once.
        results = [store.record_report(report("shared")).result(timeout=10) for store in opened]
        assert sorted(results) == [False, False, False, True]
    finally:
        for store in opened:
            store.close()


def test_positions_from_concurrent_replicas_are_never_skipped_by_a_reader(postgres_dsn: str) -> None:
    """Two replicas, each with writers on two threads, commit reports while a reader follows
    outcomes_after as the success model does: it must meet every report, in increasing positions."""
    replicas = [open_pg(postgres_dsn, max_batch=7), open_pg(postgres_dsn, max_batch=5)]
    expected = {
        f"r{replica}-t{thread}-{i}" for replica in range(2) for thread in range(2) for i in range(150)
    }
    seen: list[tuple[int, float]] = []
    writing = True

    def write(store: PostgresStore, prefix: str) -> None:
        for i in range(150):
            store.record_report(report(f"{prefix}-{i}", at=NOW + i)).result(timeout=30)

    def follow() -> None:
        position = 0
        while True:
            finished = not writing  # before the read: then an empty read means nothing is left
            rows = replicas[0].outcomes_after(position, 25)
            seen.extend((row.position, row.at) for row in rows)
            position = rows[-1].position if rows else position
            if not rows and finished:
                break

    writers = [
        threading.Thread(target=write, args=(replicas[r], f"r{r}-t{t}")) for r in range(2) for t in range(2)
    ]
    follower = threading.Thread(target=follow)
    follower.start()
    try:
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join(timeout=120)
        writing = False
        follower.join(timeout=60)
        positions = [position for position, _ in seen]
        assert positions == sorted(set(positions))
        stored = execute(postgres_dsn, "SELECT position FROM reports ORDER BY position")
        assert len(stored) == len(expected)
        assert positions == [position for (position,) in stored]  # none skipped, none twice
    finally:
        for store in replicas:
            store.close()


def test_refused_rows_fail_alone_before_postgresql_sees_them(postgres_dsn: str) -> None:
    """In PostgreSQL one refused statement aborts the transaction: rows it could not hold are found
    before anything is sent, so the rest of the batch still commits."""
    with open_pg(postgres_dsn) as store:
        store.record_decision(decision("huge", estimated_input_tokens=2**64))  # logged, not stored
        futures = {
            "before": store.record_report(report("before")),
            "huge": store.record_report(report("huge", input_tokens=2**64)),
            "nul": store.record_report(report("nul", model="gpt\x00")),
            "after": store.record_report(report("after")),
        }
        wait(futures.values())
        for name in ("huge", "nul"):
            with pytest.raises(StoreError, match=f"ReportRecord '{name}' refused"):
                futures[name].result()
        assert futures["before"].result() and futures["after"].result()
        assert ids(store.replay(0.0)) == [("ReportRecord", "before"), ("ReportRecord", "after")]
        # Refused is not stored: the same decision reported properly later is new.
        assert store.record_report(report("huge")).result(timeout=10) is True


def test_postgresql_stopped_mid_run_fails_pending_reports_and_the_store_recovers(
    postgres: PostgresServer, postgres_dsn: str
) -> None:
    with open_pg(postgres_dsn) as store:
        assert store.record_report(report("before")).result(timeout=10)
        # Reports pending in the writer's open transaction (held up by a lock) when the server stops.
        blocker = psycopg.connect(postgres_dsn)
        blocker.execute("LOCK TABLE reports IN ACCESS EXCLUSIVE MODE")
        pending = [store.record_report(report(f"pending-{i}")) for i in range(20)]
        time.sleep(0.3)
        assert not any(future.done() for future in pending)
        # Immediate: in a fast shutdown the blocker's session may end first, and its lock go, while
        # the writer's session still runs long enough to commit.
        postgres.stop(mode="immediate")
        blocker.close()
        wait(pending, timeout=30)
        for future in pending:
            with pytest.raises(StoreError, match=r"commit of \d+ queued writes failed"):
                future.result(timeout=0)

        # Down: writes and reads fail at once, never hang.
        started = time.monotonic()
        with pytest.raises(StoreError):
            store.record_report(report("while-down")).result(timeout=30)
        with pytest.raises(StoreError):
            store.find_decision("before")
        assert time.monotonic() - started < 10

        postgres.start()
        deadline = time.monotonic() + 30  # the writer's backoff is at most 5 s
        while True:
            try:
                assert (
                    store.record_report(report("pending-0")).result(timeout=30) is True
                )  # never acknowledged
                break
            except StoreError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        reported = {decision_id for _, decision_id in ids(store.replay(0.0))}
        assert reported == {"before", "pending-0"}  # nothing unacknowledged was stored
        assert store.record_report(report("before")).result(timeout=10) is False


def test_a_commit_cut_off_in_doubt_is_counted_once_when_the_lane_retries(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_pg(postgres_dsn) as store:
        committed = store._commit

        def commit_then_lose_the_answer(db: psycopg.Connection[Any]) -> None:
            committed(db)  # stored...
            _cut(db)  # ...but the answer never arrives
            db.execute("SELECT 1")

        monkeypatch.setattr(store, "_commit", commit_then_lose_the_answer)
        lost = store.record_report(report("in-doubt"))
        with pytest.raises(StoreError, match="during COMMIT"):
            lost.result(timeout=10)
        monkeypatch.undo()
        assert ids(store.replay(0.0)) == [("ReportRecord", "in-doubt")]  # it did commit
        # Never acknowledged, so the retry is the one that counts; a second retry is a duplicate.
        assert store.record_report(report("in-doubt", at=NOW + 5)).result(timeout=10) is True
        assert store.record_report(report("in-doubt", at=NOW + 9)).result(timeout=10) is False
        assert store.record_report(report("other")).result(timeout=10) is True


def test_decisions_alone_commit_without_waiting_for_the_wal_flush(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_pg(postgres_dsn) as store:
        committed = store._commit
        levels: list[str] = []

        def commit(db: psycopg.Connection[Any]) -> None:
            row = db.execute("SHOW synchronous_commit").fetchone()
            levels.append("" if row is None else row[0])
            committed(db)

        monkeypatch.setattr(store, "_commit", commit)
        store.record_decision(decision("d1"))
        wait_for_commits(store, 1)
        assert store.record_report(report("d1")).result(timeout=10)
        store.flush(timeout_s=10)
    assert levels == ["off", "on", "on"]  # SET LOCAL: the session's own setting is back after


def test_a_server_that_stops_answering_is_cut_off_rather_than_waited_for(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A backend that stops (SIGSTOP: its kernel still acknowledges, so neither TCP nor the server's
    own timeouts notice) would hold the writer forever; the watchdog cuts the connection at the
    commit timeout, and the batch goes through on a new one."""
    with open_pg(postgres_dsn, commit_timeout_s=1.0) as store:
        assert store.record_report(report("first")).result(timeout=10)
        (pid,) = execute(
            postgres_dsn,
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'orxaq-grpc ledger writer' "
            "AND datname = current_database()",
        )[0]
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            assert store.record_report(report("second")).result(timeout=20) is True
            assert 0.9 <= time.monotonic() - started < 10
        finally:
            os.kill(pid, signal.SIGCONT)
        assert any("cutting its connection" in r.getMessage() for r in caplog.records)
        assert ids(store.replay(0.0)) == [("ReportRecord", "first"), ("ReportRecord", "second")]


def test_a_locked_table_fails_a_write_once_at_the_commit_timeout(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A table another session holds locked: the server's lock timeout ends the write on a live
    connection, which fails once; the watchdog, a little later, does not cut it first (a cut
    connection looks stale, and the write would be tried again for as long once more)."""
    with open_pg(postgres_dsn, commit_timeout_s=1.0) as store:
        assert store.record_report(report("first")).result(timeout=10)
        with psycopg.connect(postgres_dsn) as locker:
            locker.execute("LOCK TABLE reports IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(StoreError, match=r"(statement|lock) timeout"):
                store.record_report(report("second")).result(timeout=30)
            locker.rollback()
        messages = [r.getMessage() for r in caplog.records]
        assert not any("cutting its connection" in m or "went stale" in m for m in messages), messages
        assert store.record_report(report("third")).result(timeout=10) is True


# Replica A for the test below: it writes one report and stops inside its transaction (holding the
# order lock), where the test freezes its whole process.
_FREEZING_REPLICA = """
import sys, time
from orxaq_grpc.store import PostgresStore
from tests.conftest import FakeClock
from tests.test_store import NOW, report
store = PostgresStore(sys.argv[1], 30, clock=FakeClock(NOW), commit_timeout_s=1.0)
def stop_inside(db):
    print("inside", flush=True)
    time.sleep(3600)
store._commit = stop_inside
store.record_report(report("from-a")).result(timeout=3600)
"""


def test_a_replica_frozen_inside_a_transaction_does_not_stall_the_others(postgres_dsn: str) -> None:
    """A replica's process frozen mid-batch (a paused VM, a partition) holds the order lock, and its
    own watchdog is frozen with it: the server ends its session once idle in the transaction past its
    commit timeout, so another replica's writes go through rather than fail until TCP gives up."""
    frozen = subprocess.Popen(
        [sys.executable, "-c", _FREEZING_REPLICA, postgres_dsn], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert frozen.stdout is not None and frozen.stdout.readline().strip() == "inside"
        os.kill(frozen.pid, signal.SIGSTOP)
        with open_pg(postgres_dsn, commit_timeout_s=10.0) as other:
            assert other.record_report(report("from-b")).result(timeout=30) is True
            assert ids(other.replay(0.0)) == [("ReportRecord", "from-b")]
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
        frozen.kill()
        frozen.wait(timeout=30)


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_server_is_refused_at_open_without_the_password() -> None:
    port = closed_port()
    with pytest.raises(StoreError, match="cannot open the ledger") as refused:
        PostgresStore(f"postgresql://orxaq:s3cret-pw@127.0.0.1:{port}/ledger", 30)
    assert f"postgresql://orxaq:***@127.0.0.1:{port}/ledger" in str(refused.value)
    assert "s3cret-pw" not in str(refused.value)


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://u:pw@db:5432/ledger", "postgresql://u:***@db:5432/ledger"),
        ("postgres://u@db/ledger?sslmode=require", "postgres://u@db/ledger?sslmode=require"),
        (
            "postgresql://db/ledger?password=pw&sslpassword=x",
            "postgresql://db/ledger?password=***&sslpassword=***",
        ),
        ("postgresql://u:p%40w@h1:5,h2:6/l", "postgresql://u:***@h1:5,h2:6/l"),
        ("host=db password='a b' dbname=l", "host=db password=*** dbname=l"),
    ],
)
def test_a_dsn_is_shown_without_its_password(dsn: str, shown: str) -> None:
    assert redact_dsn(dsn) == shown


def test_open_store_picks_the_backend_from_the_ledger_value(tmp_path: Path, postgres_dsn: str) -> None:
    with closing(open_store(None, tmp_path / "default", 30)) as default:
        assert isinstance(default, SqliteStore) and default.path == tmp_path / "default" / "ledger.sqlite3"
    with closing(open_store(f"sqlite:{tmp_path / 'named'}", tmp_path / "unused", 30)) as named:
        assert isinstance(named, SqliteStore) and named.path == tmp_path / "named" / "ledger.sqlite3"
    assert not (tmp_path / "unused").exists()
    for url in (postgres_dsn, postgres_dsn.replace("postgresql://", "postgres://", 1)):
        with closing(open_store(url, tmp_path / "unused", 30)) as shared:
            assert isinstance(shared, PostgresStore) and shared.stats().location == url
    with pytest.raises(StoreError, match=r"not one this build knows: postgresql://") as unknown:
        open_store("mysql://u:pw@db/ledger", tmp_path, 30)
    assert "pw" not in str(unknown.value)
    with pytest.raises(StoreError, match="needs a directory"):
        open_store("sqlite:", tmp_path, 30)


# serve --ledger postgresql://... with psycopg hidden, as an installation without the extra has it.
WITHOUT_PSYCOPG = """
import sys
sys.modules["psycopg"] = None  # import psycopg now raises ImportError
from orxaq_grpc.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_serve_without_psycopg_names_the_extra_and_never_the_password(tmp_path: Path) -> None:
    dsn = "postgresql://orxaq:s3cret-pw@127.0.0.1:1/ledger"
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_PSYCOPG, "serve", "--config", str(CONFIG_DIR), "--ledger", dsn],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ORXAQ_DATA_DIR": str(tmp_path)},
        check=False,
    )
    assert done.returncode == 2
    assert "pip install 'orxaq-grpc[postgresql]'" in done.stderr
    assert "s3cret-pw" not in done.stderr + done.stdout
    unknown = subprocess.run(
        [*CLI, "serve", "--config", str(CONFIG_DIR)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ORXAQ_DATA_DIR": str(tmp_path), "ORXAQ_LEDGER": "mysql://u:s3cret-pw@db/l"},
        check=False,
    )
    assert unknown.returncode == 2
    assert "--ledger" in unknown.stderr and "postgresql://" in unknown.stderr
    assert "s3cret-pw" not in unknown.stderr


def test_the_live_service_keeps_its_ledger_in_postgresql(
    serve: type[ServerProcess], postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    """Report is acknowledged once durable in PostgreSQL; with PostgreSQL stopped Report answers
    UNAVAILABLE and counts nothing; a restarted service (another data directory, so nothing can come
    from a SQLite file) rebuilds Economics from PostgreSQL."""
    dsn = with_password(postgres_dsn, "s3cret-pw")
    server = serve("--config", str(CONFIG_DIR), "--ledger", dsn)
    server.wait_until_serving()
    with RoutingClient(server.address) as client:
        first = route(client)
        ack = client.report(report_for(first))
        assert not ack.duplicate
        assert execute(postgres_dsn, "SELECT decision_id FROM reports") == [(first.decision_id,)]
        assert client.health().ledger.location == redact_dsn(dsn)

        second = route(client)
        while execute(postgres_dsn, "SELECT count(*) FROM decisions") != [(2,)]:  # logged, then stop
            time.sleep(0.05)
        postgres.stop()
        try:
            with pytest.raises(CallFailed) as refused:
                client.report(report_for(second))
            assert refused.value.code == grpc.StatusCode.UNAVAILABLE
            overall = today(client).overall
            assert overall.reports == 1  # the refused report counted nothing
        finally:
            postgres.start()
        deadline = time.monotonic() + 30
        while True:  # the writer reconnects within its backoff (at most 5 s)
            try:
                assert not client.report(report_for(second)).duplicate
                break
            except CallFailed as exc:
                assert exc.code == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline
                time.sleep(0.2)
        spend = today(client).overall.spend_usd
        assert today(client).overall.reports == 2

    server.process.send_signal(signal.SIGTERM)
    code, log = server.finish()
    assert code == 0, log
    assert "s3cret-pw" not in log

    restarted = serve(
        "--config", str(CONFIG_DIR), env={"ORXAQ_LEDGER": dsn, "ORXAQ_DATA_DIR": str(tmp_path / "other")}
    )
    restarted.wait_until_serving()
    with RoutingClient(restarted.address) as client:
        overall = today(client).overall
        assert (overall.reports, overall.decisions) == (2, 2)
        assert overall.spend_usd == pytest.approx(spend)
        assert client.report(report_for(first)).duplicate  # the ledger remembers across restarts
    assert not (tmp_path / "other" / "ledger.sqlite3").exists()
