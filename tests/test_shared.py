"""Replicas sharing state through a real Redis: budgets reserved atomically across them, each one's
decisions and reports counted by all, and life without Redis (a share of what was left, then a
resynchronisation)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis
from redis.commands.core import Script

from orxaq_grpc.application.outcomes import Outcomes
from orxaq_grpc.config.model import Config
from orxaq_grpc.outcomes.records import DecisionRecord, Outcome, ReportInput
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.routing.router import BudgetExhausted, Router
from orxaq_grpc.routing.types import Decision, RouteRequest, Task
from orxaq_grpc.shared import SharedBudgets, SharedLink, open_link
from orxaq_grpc.shared.link import READ_BLOCK_MS
from orxaq_grpc.store import SqliteStore
from tests.redis_server import RedisServer, eventually


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if redis_server.process is None:  # a test stopped it
        redis_server.start()
    return redis_server.url


def budgeted(config: Config, **budgets: object) -> Config:
    settings = dataclasses.replace(config.policy.budgets, **budgets)  # type: ignore[arg-type]
    return dataclasses.replace(config, policy=dataclasses.replace(config.policy, budgets=settings))


class Fleet:
    """N replicas in this process: each its own router, ledger and Outcomes, one Redis between them."""

    def __init__(self, config: Config, url: str, root: Path, replicas: int, stack: ExitStack) -> None:
        namespace = f"test-{uuid.uuid4().hex[:8]}"
        self.replicas: list[Outcomes] = []
        for n in range(replicas):
            live = LiveRouter(Router(config))
            store = stack.enter_context(SqliteStore(root / f"replica-{n}", retention_days=1))
            outcomes = Outcomes(live, store, shared=open_link(url, namespace=namespace))
            stack.callback(lambda o=outcomes: o.shared and o.shared.close(timeout_s=0.5))
            assert outcomes.shared is not None
            after = outcomes.shared.position()
            outcomes.rebuild()
            outcomes.start_sharing(after)
            self.replicas.append(outcomes)

    def route(self, n: int, lane: str = "claude", output_tokens: int = 500) -> Decision:
        outcomes = self.replicas[n]
        task = Task(title="Review the payment flow", input_tokens=2_000, output_tokens=output_tokens)
        decision = outcomes._live.current.route(RouteRequest(lane=lane, task=task), guards=outcomes)
        outcomes.record_decision(decision)
        return decision

    def report(
        self, n: int, decision: Decision, outcome: Outcome = Outcome.SUCCESS, **fields: object
    ) -> bool:
        outcomes = self.replicas[n]
        record = outcomes.prepare_report(
            ReportInput(
                decision_id=decision.decision_id,
                lane=decision.lane,
                provider=decision.provider,
                model=decision.model,
                input_tokens=decision.input_tokens,
                output_tokens=decision.output_tokens,
                latency_s=3.0,
                outcome=outcome,
                retry_after_s=float(fields.get("retry_after_s", 0.0)),  # type: ignore[arg-type]
                validation_passed=outcome == Outcome.SUCCESS,
                first_time_pass=outcome == Outcome.SUCCESS,
                cost_usd=fields.get("cost_usd", decision.estimated_cost_usd),  # type: ignore[arg-type]
            )
        )
        if outcomes.write_report(record).result(timeout=10):
            outcomes.apply_report(record)
        return record.decision_known


def test_three_replicas_racing_for_one_budget_never_reserve_past_it(
    shipped_config: Config, redis_url: str, tmp_path: Path
) -> None:
    limit = 0.5
    config = budgeted(shipped_config, daily_usd=limit, on_exhausted="error")
    estimates: list[float] = []
    with ExitStack() as stack:
        fleet = Fleet(config, redis_url, tmp_path, 3, stack)

        def lane_worker(n: int, k: int) -> None:
            for i in range(300):
                try:
                    decision = fleet.route(n, output_tokens=500 + 7 * i + k)
                except BudgetExhausted:
                    return
                estimates.append(decision.estimated_cost_usd)
                fleet.report((n + 1) % 3, decision)  # reported to another replica than routed it

        threads = [threading.Thread(target=lane_worker, args=(n, k)) for n in range(3) for k in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(t.is_alive() for t in threads)

        views = [next(b for b in o.budgets.views() if b.scope == "overall") for o in fleet.replicas]
        assert len(estimates) > 20  # the budget really was contended
        assert {round(v.spent_usd, 9) for v in views} == {round(views[0].spent_usd, 9)}  # one budget
        assert views[0].reserved_usd == pytest.approx(0.0, abs=1e-9)  # every reservation was settled
        assert views[0].spent_usd <= limit + 1e-9  # the provider charged the estimate: no overspend
        assert views[0].spent_usd == pytest.approx(sum(estimates))
        # each replica counted every decision and report, whichever replica took it
        eventually(
            lambda: all(
                o.book.breakdown(0).overall.counters.reports == len(estimates) for o in fleet.replicas
            )
        )
        spends = [o.book.breakdown(0).overall.counters.spend_usd for o in fleet.replicas]
        assert spends == pytest.approx([sum(estimates)] * 3)


def test_a_report_on_another_replica_is_known_settles_and_blocks_the_model_everywhere(
    shipped_config: Config, redis_url: str, tmp_path: Path
) -> None:
    config = budgeted(shipped_config, daily_usd=50.0)
    with ExitStack() as stack:
        fleet = Fleet(config, redis_url, tmp_path, 2, stack)
        a, b = fleet.replicas
        decision = fleet.route(0)
        eventually(lambda: decision.decision_id in b._recent)  # A's decision reached B
        reserved = next(v for v in b.budgets.views() if v.scope == "overall").reserved_usd
        assert reserved == pytest.approx(decision.estimated_cost_usd)

        assert fleet.report(1, decision, Outcome.RATE_LIMITED, retry_after_s=120.0, cost_usd=0.0)
        delay = eventually(lambda: decision.model in a.blocked()[0])
        print(f"rate limit reported to B blocked {decision.model} on A after {delay * 1000:.1f} ms")
        assert decision.model in b.blocked()[0]
        overall = next(v for v in a.budgets.views() if v.scope == "overall")
        assert overall.reserved_usd == pytest.approx(0.0, abs=1e-9)  # B settled A's reservation

        # Economics agree: the same decisions and reports on both
        eventually(lambda: a.book.breakdown(0).overall.counters.reports == 1)
        for counters in (a.book.breakdown(0).overall.counters, b.book.breakdown(0).overall.counters):
            assert (counters.decisions, counters.reports, counters.failures, counters.unknown_decisions) == (
                1,
                1,
                1,
                0,
            )


def test_a_probe_one_replica_gives_back_is_free_again_on_every_replica(
    shipped_config: Config, redis_url: str, tmp_path: Path
) -> None:
    """A half-open circuit's only probe, taken by A's decision, is taken on B too (from the published
    decision); when A's lane never gets that decision, both give it back, not only A (B would keep the
    model out until open_s, 30 s, had passed)."""
    config = budgeted(shipped_config, daily_usd=50.0)
    assert config.policy.breakers.half_open_probes == 1 and config.policy.breakers.open_s == 30
    with ExitStack() as stack:
        fleet = Fleet(config, redis_url, tmp_path, 2, stack)
        a, b = fleet.replicas
        first = fleet.route(0)
        # A rate limit with a short retry-after: open on both for 0.2 s, then half-open.
        assert fleet.report(0, first, Outcome.RATE_LIMITED, retry_after_s=0.2, cost_usd=0.0)
        eventually(lambda: first.model in b.blocked()[0])
        eventually(lambda: first.model not in a.blocked()[0] and first.model not in b.blocked()[0])
        probe = fleet.route(0)
        assert probe.model == first.model  # the probe
        eventually(lambda: first.model in b.blocked()[0])  # B saw the decision take it
        assert first.model in a.blocked()[0]
        a.abandon([probe])
        assert first.model not in a.blocked()[0]
        eventually(lambda: first.model not in b.blocked()[0], timeout_s=10.0)


def test_without_redis_a_replica_routes_on_its_share_and_resynchronises(
    shipped_config: Config, redis_server: RedisServer, redis_url: str, tmp_path: Path
) -> None:
    limit = 2.0
    config = budgeted(shipped_config, daily_usd=limit)
    with ExitStack() as stack:
        fleet = Fleet(config, redis_url, tmp_path, 2, stack)
        a = fleet.replicas[0]
        first = fleet.route(0, output_tokens=20_000)
        fleet.report(0, first)
        spent_before = first.estimated_cost_usd
        eventually(lambda: a.shared is not None and a.shared.replicas == 2, timeout_s=5)

        redis_server.stop()
        budgets = a.budgets
        assert isinstance(budgets, SharedBudgets)
        # the next call finds Redis away: from then on, A's share of what was left
        decision = fleet.route(0, output_tokens=20_000)
        assert a.shared is not None and not a.shared.status().connected
        share = next(v for v in a.budgets.views() if v.scope == "overall")
        assert share.limit_usd == pytest.approx((limit - spent_before) / 2)
        assert a.health().shared is not None and not a.health().shared.connected
        fleet.report(0, decision)  # settled alone

        redis_server.start()  # empty: it lost everything
        eventually(lambda: a.shared is not None and a.shared.status().connected)
        eventually(lambda: not budgets._alone)  # type: ignore[attr-defined]
        overall = next(v for v in a.budgets.views() if v.scope == "overall")
        assert overall.limit_usd == limit
        # the spend A knew of (its ledger and what it settled alone) is Redis' again
        assert overall.spent_usd == pytest.approx(spent_before + decision.estimated_cost_usd)


def test_reservations_expire_and_a_reload_lowers_the_limit_at_once(
    shipped_config: Config, redis_url: str
) -> None:
    now = [1_800_000_000.0]
    link = open_link(redis_url, namespace=f"test-{uuid.uuid4().hex[:8]}")
    try:
        settings = dataclasses.replace(shipped_config.policy.budgets, daily_usd=1.0, reservation_ttl_s=60.0)
        budgets = SharedBudgets(settings, link, dict, clock=lambda: now[0])
        assert budgets.try_reserve("d1", "codex", "openai", 0.6)
        assert not budgets.try_reserve("d2", "codex", "openai", 0.6)  # would pass the $1
        now[0] += 61
        assert budgets.expire() == 1
        assert budgets.try_reserve("d2", "codex", "openai", 0.6)
        budgets.update(dataclasses.replace(settings, daily_usd=0.5), note="test")
        view = budgets.views()[0]
        assert (view.limit_usd, view.reserved_usd, view.exhausted) == (0.5, pytest.approx(0.6), True)
        assert not budgets.try_reserve("d3", "codex", "openai", 0.01)
        budgets.settle("d2", "codex", "openai", 0.25)
        assert budgets.views()[0].spent_usd == pytest.approx(0.25)
        assert budgets.try_reserve("d3", "codex", "openai", 0.25)
        assert not budgets.try_reserve("d4", "codex", "openai", 0.01)
    finally:
        link.close(timeout_s=0.1)


def test_a_ledgers_spend_never_lowers_redis_and_free_models_fit_an_overspent_budget(
    shipped_config: Config, redis_url: str
) -> None:
    link = open_link(redis_url, namespace=f"test-{uuid.uuid4().hex[:8]}")
    try:
        settings = dataclasses.replace(shipped_config.policy.budgets, daily_usd=1.0)
        budgets = SharedBudgets(settings, link, dict)
        budgets.settle("d1", "codex", "openai", 0.9)
        budgets.settle("d1", "codex", "openai", 0.9)  # the same decision again: counted once
        assert budgets.views()[0].spent_usd == pytest.approx(0.9)
        # a replica whose ledger knows less (another replica settled d1) lowers nothing
        assert not budgets.seed({("overall", ""): 0.2, ("lane", "codex"): 0.2})
        assert budgets.views()[0].spent_usd == pytest.approx(0.9)
        # one that knows more (Redis lost some) raises it
        assert budgets.seed({("overall", ""): 1.2})
        view = budgets.views()[0]
        assert (view.spent_usd, view.exhausted) == (pytest.approx(1.2), True)
        assert not budgets.try_reserve("d2", "codex", "openai", 0.01)
        assert budgets.try_reserve("d3", "local", "local", 0.0)  # a free model fits, as in one process
    finally:
        link.close(timeout_s=0.1)


def test_a_redis_that_refuses_writes_is_left_until_it_takes_them_again(
    shipped_config: Config, redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Out of memory, Redis still answers PING but refuses every write: the replica goes alone and
    stays alone (no rejoin-and-leave every half second) until a write succeeds again."""
    config = budgeted(shipped_config, daily_usd=5.0)
    with ExitStack() as stack:
        fleet = Fleet(config, redis_url, tmp_path, 1, stack)
        a = fleet.replicas[0]
        assert a.shared is not None
        admin = a.shared.client
        admin.config_set("maxmemory", "1")
        stack.callback(lambda: admin.config_set("maxmemory", "0"))
        fleet.route(0)  # the reservation's script is refused: this replica goes alone
        assert not a.shared.status().connected
        with caplog.at_level(logging.INFO, logger="orxaq_grpc.shared"):
            time.sleep(1.5)  # three retry periods
        assert not a.shared.status().connected
        assert not [r for r in caplog.records if "is back (it was" in r.getMessage()], "rejoined, refused"
        admin.config_set("maxmemory", "0")
        eventually(lambda: a.shared is not None and a.shared.status().connected, timeout_s=5)
        eventually(lambda: not a.budgets._alone, timeout_s=5)  # type: ignore[attr-defined]


def test_a_rejoin_books_everything_done_alone_once_in_batched_round_trips(
    shipped_config: Config,
    redis_server: RedisServer,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("orxaq_grpc.shared.budgets.REPLAY_BATCH", 7)  # 23 calls: four round trips
    link = open_link(redis_url, namespace=f"test-{uuid.uuid4().hex[:8]}")
    link.start(lambda record: None, link.position())
    try:
        settings = dataclasses.replace(shipped_config.policy.budgets, daily_usd=100.0)
        budgets = SharedBudgets(settings, link, dict)
        redis_server.stop()
        assert budgets.try_reserve("open-0", "codex", "openai", 0.25)  # finds Redis away: alone
        assert budgets._alone is not None  # type: ignore[attr-defined]
        for n in range(1, 3):
            assert budgets.try_reserve(f"open-{n}", "codex", "openai", 0.25)
        for n in range(20):
            budgets.settle(f"done-{n}", "codex", "openai", 0.5)

        calls: list[object] = []
        call = link.call
        monkeypatch.setattr(link, "call", lambda command: calls.append(command) or call(command))
        redis_server.start()  # empty: it lost everything
        eventually(lambda: link.status().connected and budgets._alone is None, timeout_s=10)  # type: ignore[attr-defined]
        assert len(calls) == 1 + 4  # the seed, then 20 settlements and 3 reservations, 7 a trip
        view = budgets.views()[0]
        assert (view.spent_usd, view.reserved_usd) == (pytest.approx(10.0), pytest.approx(0.75))
        budgets.settle("done-3", "codex", "openai", 0.5)  # settled alone already: counted once
        assert budgets.views()[0].spent_usd == pytest.approx(10.0)
    finally:
        link.close(timeout_s=0.1)


class Unreachable:
    """A Redis client whose server cannot be reached until `reachable` is set: every command fails as
    a dead connection does (what needs no server, such as closing it, still works)."""

    def __init__(self, client: object) -> None:
        self._client = client
        self.reachable = False

    def register_script(self, script: str) -> Script:
        return Script(self, script)  # its calls come through here

    def __getattr__(self, name: str) -> object:
        found = getattr(self._client, name)
        if self.reachable or name in ("close", "get_encoder") or not callable(found):
            return found

        def refuse(*args: object, **kwargs: object) -> object:
            raise redis.ConnectionError("Error 111 connecting to Redis: Connection refused.")

        return refuse


def test_a_replica_started_while_redis_is_away_counts_its_ledger_once_when_redis_returns(
    shipped_config: Config, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The records a replica replayed from its ledger are in the stream too; started with Redis away,
    it must not read them back from the stream's start when Redis returns. The ids it recognises are
    bounded (RECENT_DECISIONS, shrunk here to 1), and the stream holds more than that."""
    monkeypatch.setattr("orxaq_grpc.application.outcomes.RECENT_DECISIONS", 1)
    # No allowance for Redis' clock: the first life's records are all older than the restart.
    monkeypatch.setattr("orxaq_grpc.shared.link.START_SKEW_S", 0.0)
    with ExitStack() as stack:  # the first life: three decisions, each in the ledger and the stream
        fleet = Fleet(shipped_config, redis_url, tmp_path, 1, stack)
        first = fleet.replicas[0]
        assert first.shared is not None
        decisions = [fleet.route(0) for _ in range(3)]
        eventually(lambda: first.shared is not None and first.shared.status().pending == 0)
        namespace = first.shared.namespace
        assert len(decisions) == 3

    client = Unreachable(redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=0.25))
    link = SharedLink(client, redis_url, namespace)  # type: ignore[arg-type]
    with ExitStack() as stack:  # the restart, with Redis away
        store = stack.enter_context(SqliteStore(tmp_path / "replica-0", retention_days=1))
        outcomes = Outcomes(LiveRouter(Router(shipped_config)), store, shared=link)
        stack.callback(lambda: link.close(timeout_s=0.5))
        after = link.start_position()
        assert not link.connected
        assert outcomes.rebuild()[0] == 3
        outcomes.start_sharing(after)

        client.reachable = True
        eventually(lambda: link.status().connected, timeout_s=5)
        time.sleep(3 * READ_BLOCK_MS / 1000)  # the reader's first reads after the rejoin
        assert outcomes.book.breakdown(0).overall.counters.decisions == 3  # not 6
        assert link.status().applied == 0

        # What another replica publishes now is counted here.
        other = stack.enter_context(contextlib.closing(open_link(redis_url, namespace=namespace)))
        other.start(lambda record: None, other.position())
        model = decisions[0]
        other.publish(
            DecisionRecord(
                decision_id="from-another-replica",
                at=time.time(),
                lane=model.lane,
                provider=model.provider,
                model=model.model,
                strategy=model.strategy.value,
                fallback_reason=0,
                disruptive=False,
                router_error=False,
                estimated_input_tokens=model.input_tokens,
                estimated_output_tokens=model.output_tokens,
                estimated_cost_usd=model.estimated_cost_usd,
            )
        )
        eventually(lambda: outcomes.book.breakdown(0).overall.counters.decisions == 4)
        assert link.status().applied == 1


def test_what_a_replica_could_not_publish_before_it_stopped_is_published_by_its_next_start(
    shipped_config: Config, redis_url: str, tmp_path: Path
) -> None:
    """Records wait in a replica's outbox while Redis is away; a replica stopped then keeps them in
    its ledger, and its next start publishes them (once: a later start has nothing left to take)."""

    def started(link: SharedLink) -> Outcomes:
        outcomes = Outcomes(LiveRouter(Router(shipped_config)), SqliteStore(tmp_path / "a", 1), shared=link)
        after = link.start_position()
        outcomes.rebuild()
        outcomes.start_sharing(after)
        return outcomes

    with ExitStack() as stack:
        observer = Fleet(shipped_config, redis_url, tmp_path / "observer", 1, stack).replicas[0]
        assert observer.shared is not None
        namespace = observer.shared.namespace

        client = Unreachable(redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=0.25))
        first = started(SharedLink(client, redis_url, namespace))  # type: ignore[arg-type]
        task = Task(title="Review the payment flow", input_tokens=2_000, output_tokens=500)
        for _ in range(2):
            first.record_decision(first._live.current.route(RouteRequest(lane="claude", task=task), first))
        assert first.shared is not None and first.shared.status().pending == 2
        first.close()  # Redis still away: the two are kept in the ledger

        second = started(open_link(redis_url, namespace=namespace))
        stack.callback(second.close)
        eventually(lambda: observer.book.breakdown(0).overall.counters.decisions == 2)
        assert second.shared is not None
        eventually(lambda: second.shared is not None and second.shared.status().published == 2)

    third = started(open_link(redis_url, namespace=namespace))  # nothing left to take
    try:
        time.sleep(0.5)  # what it took would be published in milliseconds
        assert third.shared is not None
        assert (third.shared.status().pending, third.shared.status().published) == (0, 0)
    finally:
        third.close()


def test_kept_records_are_requeued_before_the_link_starts_and_within_its_bound(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("orxaq_grpc.shared.link.MAX_OUTBOX", 3)
    link = open_link(redis_url, namespace=f"test-{uuid.uuid4().hex[:8]}")
    try:
        link.requeue([("d", f"[{n}]", None) for n in range(5)])
        assert (link.status().pending, link.status().dropped) == (3, 2)  # the oldest two dropped
        link.start(lambda record: None, link.position())
        with pytest.raises(RuntimeError, match="after start"):
            link.requeue([("d", "[5]", None)])
    finally:
        link.close(timeout_s=0.5)
