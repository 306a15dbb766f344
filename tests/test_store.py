"""The SQLite ledger on real files: round trips, idempotent reports, group commit, crash durability,
schema versions, retention and shutdown."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, wait
from pathlib import Path

import pytest

from orxaq_grpc.outcomes.records import DecisionRecord, JournalEntry, Outcome, ReportRecord
from orxaq_grpc.store import SqliteStore, Store, StoreError
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


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with open_store(tmp_path / "data") as opened:
        yield opened


def ids(records: Iterator[DecisionRecord | ReportRecord]) -> list[tuple[str, str]]:
    return [(type(record).__name__, record.decision_id) for record in records]


def test_both_kinds_round_trip_through_replay_in_at_order(store: SqliteStore) -> None:
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


def test_find_decision_sees_committed_decisions(store: SqliteStore) -> None:
    store.record_decision(decision("d1", estimated_cost_usd=0.25))
    store.flush()
    assert store.find_decision("d1") == decision("d1", estimated_cost_usd=0.25)
    assert store.find_decision("unknown") is None


def test_store_satisfies_the_protocol(store: SqliteStore) -> None:
    typed: Store = store  # checked by type checkers; here, that every protocol method exists
    assert all(callable(getattr(typed, name)) for name in Store.__dict__ if not name.startswith("_"))


@pytest.mark.parametrize("flush_between", [False, True], ids=["same-batch", "separate-batches"])
def test_a_decision_reported_twice_counts_once_with_the_first_values(
    store: SqliteStore, flush_between: bool
) -> None:
    first = store.record_report(report("d1", outcome=Outcome.SUCCESS, cost_usd=0.10))
    if flush_between:
        store.flush()
    second = store.record_report(report("d1", at=NOW + 60, outcome=Outcome.TIMEOUT, cost_usd=9.99))
    assert (first.result(), second.result()) == (True, False)
    assert list(store.replay(0.0)) == [report("d1", outcome=Outcome.SUCCESS, cost_usd=0.10)]


def test_queued_reports_from_many_threads_share_few_commits(store: SqliteStore) -> None:
    # Another connection holds the write lock, so the writer waits on it (as on a slow disk) while
    # 2,000 reports queue up; released, it must take them in max_batch-sized groups.
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    futures: list[Future[bool]] = []

    def report_many(thread: int) -> None:
        futures.extend(store.record_report(report(f"t{thread}-{i}")) for i in range(250))

    threads = [threading.Thread(target=report_many, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    blocker.execute("ROLLBACK")
    blocker.close()

    assert [future.result(timeout=30) for future in futures] == [True] * 2000
    # What the writer took before it blocked, then 2,000 at most in batches of 1,024.
    assert store.commits <= 3
    assert sum(1 for _ in store.replay(0.0)) == 2000


# Records reports until killed, printing each window's ids only after their futures resolved.
CRASH_CHILD = """
import itertools, sys
from pathlib import Path
from tests.test_store import decision, open_store, report

store = open_store(Path(sys.argv[1]))
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


def test_decision_log_entries_linger_to_share_a_commit_but_reports_do_not_wait(tmp_path: Path) -> None:
    with SqliteStore(tmp_path, retention_days=30, decision_linger_s=30.0, clock=FakeClock(NOW)) as store:
        for i in range(200):
            store.record_decision(decision(f"d{i}"))
        # Nobody waits for decisions: they are still gathering (30 s is far beyond this test).
        assert store.commits == 0
        # A report ends the lingering: it commits at once, with every decision queued before it.
        assert store.record_report(report("r1")).result(timeout=10)
        assert store.commits == 1
        assert sum(1 for _ in store.replay(0.0)) == 201


def test_a_ledger_far_behind_drops_decision_log_entries_and_counts_them(tmp_path: Path) -> None:
    with SqliteStore(tmp_path, retention_days=30, max_queued_decisions=3, clock=FakeClock(NOW)) as store:
        blocker = sqlite3.connect(store.path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the disk "stalls"
        for i in range(10):
            store.record_decision(decision(f"d{i}"))
        dropped = store.stats().dropped_decisions
        # Three queued, perhaps one more the writer already took off the queue; the rest dropped.
        assert 6 <= dropped <= 7
        blocker.execute("ROLLBACK")
        blocker.close()
        store.flush(timeout_s=30)
        stats = store.stats()
        assert (stats.queued, stats.dropped_decisions, stats.location) == (0, dropped, str(store.path))
        assert sum(1 for _ in store.replay(0.0)) == 10 - dropped
        store.record_decision(decision("after"))  # caught up: accepted again
        store.flush(timeout_s=30)
        assert store.find_decision("after") is not None


def test_acknowledged_reports_survive_sigkill_mid_load(tmp_path: Path) -> None:
    data = tmp_path / "data"
    child = subprocess.Popen(
        [sys.executable, "-c", CRASH_CHILD, str(data)],
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

    with open_store(data) as reopened:
        records = list(reopened.replay(0.0))
        reported = {r.decision_id for r in records if isinstance(r, ReportRecord)}
        decided = {r.decision_id for r in records if isinstance(r, DecisionRecord)}
        assert set(acknowledged) <= reported
        assert set(acknowledged) <= decided  # queued before their reports, so committed with them
        assert reopened.record_report(report(acknowledged[0])).result() is False
        assert reopened.record_report(report("after-crash")).result() is True
    with sqlite3.connect(data / "ledger.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_fresh_ledger_is_created_with_its_directory_in_wal_at_the_current_schema(tmp_path: Path) -> None:
    directory = tmp_path / "nested" / "data"
    with open_store(directory) as store:
        assert store.path == directory / "ledger.sqlite3"
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


def test_a_ledger_from_a_newer_build_is_refused_and_left_alone(tmp_path: Path) -> None:
    open_store(tmp_path).close()
    path = tmp_path / "ledger.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer") as refused:
        open_store(tmp_path)
    assert str(path) in str(refused.value)
    assert f"version {SCHEMA_VERSION + 1}" in str(refused.value)
    assert f"({SCHEMA_VERSION})" in str(refused.value)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION + 1,)


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
    tmp_path: Path, retention_days: object, max_batch: int, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        SqliteStore(tmp_path, retention_days, max_batch=max_batch)  # type: ignore[arg-type]


def test_rows_past_retention_are_pruned_on_open(tmp_path: Path) -> None:
    with open_store(tmp_path, retention_days=365) as store:
        for name, age_days in [("old", 31), ("edge", 30), ("recent", 1)]:
            store.record_decision(decision(name, at=NOW - age_days * DAY))
            store.record_report(report(name, at=NOW - age_days * DAY))
    with open_store(tmp_path, retention_days=30) as store:
        assert ids(store.replay(0.0)) == [
            ("DecisionRecord", "edge"),
            ("ReportRecord", "edge"),
            ("DecisionRecord", "recent"),
            ("ReportRecord", "recent"),
        ]


def test_the_writer_prunes_again_once_an_hour_has_passed(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    with open_store(tmp_path, retention_days=30, clock=clock) as store:
        assert store.record_report(report("ageing", at=NOW - 29.9 * DAY)).result()
        clock.now += 0.5 * DAY  # "ageing" is now past retention, and the hour is up
        store.record_report(report("fresh", at=clock.now)).result()  # pruned before this commit
        assert ids(store.replay(0.0)) == [("ReportRecord", "fresh")]


def test_a_record_sqlite_refuses_fails_alone_and_is_never_called_a_duplicate(store: SqliteStore) -> None:
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


def test_a_failed_commit_fails_its_whole_batch_and_writes_none_of_it(store: SqliteStore) -> None:
    saboteur = sqlite3.connect(store.path)
    saboteur.execute("DROP TABLE reports")  # every batch holding a report now fails
    saboteur.close()
    store.record_decision(decision("d1"))
    failed = store.record_report(report("r1"))
    with pytest.raises(StoreError, match=r"commit of \d+ queued writes failed: no such table: reports"):
        failed.result()
    # The decision is stored only if the writer took it alone, before the report was queued.
    assert (store.find_decision("d1") is not None) == (store.commits == 1)


def test_close_flushes_is_idempotent_and_refuses_later_writes(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.record_decision(decision("d1"))
    acknowledged = store.record_report(report("d1"))
    store.close()
    assert acknowledged.done() and acknowledged.result() is True
    store.close()
    store.flush()  # nothing left to commit
    for write in (lambda: store.record_decision(decision("d2")), lambda: store.record_report(report("d2"))):
        with pytest.raises(StoreError, match="closed"):
            write()
    with pytest.raises(StoreError, match="closed"):
        store.find_decision("d1")
    with open_store(tmp_path) as reopened:
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


def test_the_journal_is_pruned_but_the_last_stop_loss_transition_stays(tmp_path: Path) -> None:
    clock = FakeClock(NOW - 40 * DAY)
    with SqliteStore(tmp_path, 31, clock=clock) as store:
        for i, kind in enumerate(["stop_loss", "scale", "stop_loss", "scale"]):
            store.record_journal(JournalEntry(NOW - 40 * DAY + i, kind, str(i), "{}")).result(timeout=5)
    with SqliteStore(tmp_path, 31, clock=FakeClock(NOW)) as store:
        assert store.journal("scale", 10) == []
        assert [e.subject for e in store.journal("stop_loss", 10)] == ["2"]  # the state it left survives
