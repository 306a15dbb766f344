"""Report, Economics, Health and WatchHealth over a real server: the ledger, breakers, budgets."""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.application.outcomes import Outcomes
from orxaq_grpc.client import CallFailed, RoutingClient
from orxaq_grpc.routing.live import LiveRouter
from tests.conftest import LoopbackServer

Served = Callable[..., RoutingClient]


def edit(config_dir: Path, old: str, new: str) -> None:
    path = config_dir / "policy.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.fixture
def serve(config_dir: Path, tmp_path: Path) -> Iterator[Served]:
    """Starts a server on the (editable) config copy; `serve(restart=True)` starts a new one on
    the same data dir after stopping the last."""
    servers: list[LoopbackServer] = []
    clients: list[RoutingClient] = []

    def start(restart: bool = False) -> RoutingClient:
        if restart:
            servers.pop().stop()
        server = LoopbackServer(LiveRouter.from_directory(config_dir), tmp_path / "data")
        servers.append(server)
        clients.append(RoutingClient(server.address))
        return clients[-1]

    yield start
    for client in clients:
        client.close()
    for server in servers:
        server.stop()


def route(client: RoutingClient, lane: str = "codex", **fields: object) -> pb.RouteDecision:
    task = pb.Task(title="Port the scheduler", input_tokens=10_000, output_tokens=2_000)
    return client.route(pb.RouteRequest(lane=lane, task=task, **fields))  # type: ignore[arg-type]


def report_for(decision: pb.RouteDecision, **fields: object) -> pb.ReportRequest:
    values: dict[str, object] = {
        "decision_id": decision.decision_id,
        "lane": decision.lane,
        "provider": decision.provider,
        "model": decision.model,
        "input_tokens": 9_000,
        "output_tokens": 1_500,
        "latency_s": 12.5,
        "outcome": pb.OUTCOME_SUCCESS,
        "validation_passed": True,
        "first_time_pass": True,
    }
    values.update(fields)
    return pb.ReportRequest(**values)  # type: ignore[arg-type]


def figures(client: RoutingClient) -> list[tuple]:
    """Every window's figures, without the times that move between two calls."""
    return [
        (w.window, w.overall, list(w.providers), list(w.lanes), list(w.models))
        for w in client.economics().windows
    ]


def today(client: RoutingClient) -> pb.EconomicsWindow:
    return next(w for w in client.economics().windows if w.window == "today")


def test_report_is_durable_idempotent_and_priced(serve: Served, tmp_path: Path) -> None:
    client = serve()
    decision = route(client)
    ack = client.report(report_for(decision))
    assert (ack.duplicate, ack.decision_known, ack.cost_exact) == (False, True, False)
    priced = (9_000 * decision.input_usd_per_mtok + 1_500 * decision.output_usd_per_mtok) / 1e6
    assert ack.cost_usd == pytest.approx(priced)
    # Acknowledged means on disk, readable by another connection.
    with sqlite3.connect(tmp_path / "data" / "ledger.sqlite3") as db:
        assert db.execute(
            "SELECT count(*) FROM reports WHERE decision_id = ?", (decision.decision_id,)
        ).fetchone()
        assert db.execute("SELECT count(*) FROM reports").fetchone()[0] == 1

    again = client.report(report_for(decision, cost_usd=9.0, outcome=pb.OUTCOME_TIMEOUT))
    assert again.duplicate and again.cost_usd == 0.0
    ledger = client.health().ledger
    assert ledger.location.endswith("ledger.sqlite3") and ledger.commits >= 1 and not ledger.dropped_decisions
    overall = today(client).overall
    assert (overall.decisions, overall.reports) == (1, 1)
    assert overall.spend_usd == pytest.approx(priced)
    assert overall.error_rate == 0.0  # the duplicate's timeout changed nothing


def test_a_report_for_an_unknown_decision_is_kept_but_moves_nothing(serve: Served, config_dir: Path) -> None:
    """Nothing tells a report for a decision this service never made from a forgery: it is kept in the
    ledger and counted as unknown, and moves no spend, budget, breaker or stop-loss figure."""
    edit(config_dir, "daily_usd = 0\n", "daily_usd = 10\n")
    client = serve()
    forged = {"lane": "gemini", "provider": "google", "model": "gemini-3.8-flash", "input_tokens": 1_000}
    ack = client.report(
        pb.ReportRequest(decision_id="never-made", outcome=pb.OUTCOME_SUCCESS, cost_usd=1e6, **forged)
    )
    assert (ack.decision_known, ack.cost_exact, ack.duplicate) == (False, True, False)
    for i in range(12):  # a day-long rate limit, a dozen times over
        client.report(
            pb.ReportRequest(
                decision_id=f"forged-{i}", outcome=pb.OUTCOME_RATE_LIMITED, retry_after_s=86_400, **forged
            )
        )
    window = today(client)
    assert window.overall.unknown_decision_reports == 13
    assert (window.overall.spend_usd, window.overall.reports, window.overall.error_rate) == (0.0, 0, 0.0)
    health = client.health()
    assert [b for b in health.breakers if b.state != "closed"] == []
    overall = next(b for b in health.budgets if b.scope == "overall")
    assert overall.spent_usd == 0.0 and not overall.exhausted
    assert not health.guardrails.stop_loss_active
    assert route(client, lane="gemini").strategy != pb.STRATEGY_STATIC_FALLBACK
    client = serve(restart=True)  # and a restart rebuilds the same: counted, moving nothing
    assert today(client).overall.unknown_decision_reports == 13
    assert today(client).overall.spend_usd == 0.0


def test_a_lane_reports_only_its_own_decisions(serve: Served) -> None:
    client = serve()
    decision = route(client, lane="codex")
    before = figures(client)
    with pytest.raises(CallFailed) as caught:
        client.report(report_for(decision, lane="claude", provider="anthropic", model="claude-haiku-5-5"))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    ((field, problem),) = caught.value.violations
    assert field == "lane" and "was routed on lane 'codex', not 'claude'" in problem
    assert figures(client) == before
    assert not client.report(report_for(decision)).duplicate  # its own lane still can


def test_a_retry_after_is_honoured_up_to_the_policy_cap(serve: Served) -> None:
    client = serve()
    decision = route(client)
    client.report(report_for(decision, outcome=pb.OUTCOME_RATE_LIMITED, retry_after_s=86_400))
    (breaker,) = [b for b in client.health().breakers if b.state == "open"]
    assert (breaker.scope, breaker.name) == ("model", decision.model)
    assert 800 < breaker.reopens_in_s <= 900  # max_retry_after_s, not a day


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"input_tokens": -1}, "input_tokens"),
        ({"cost_usd": math.nan}, "cost_usd"),
        ({"cost_usd": -0.5}, "cost_usd"),
        ({"latency_s": math.inf}, "latency_s"),
        ({"lane": "cobol"}, "lane"),
        ({"decision_id": "x" * 300}, "decision_id"),
        ({"decision_id": ""}, "decision_id"),
        ({"model": "gpt-9"}, "model"),
        ({"provider": "anthropic"}, "provider"),
        ({"outcome": pb.OUTCOME_UNSPECIFIED}, "outcome"),
        ({"outcome": 42}, "outcome"),
        ({"retry_after_s": 30.0}, "retry_after_s"),
    ],
)
def test_bad_reports_are_refused_and_change_nothing(serve: Served, change: dict, field: str) -> None:
    client = serve()
    decision = route(client)
    before = figures(client)
    with pytest.raises(CallFailed) as caught:
        client.report(report_for(decision, **change))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in caught.value.violations] == [field]
    assert figures(client) == before
    # The decision can still be reported properly: the refused one left no trace.
    assert not client.report(report_for(decision)).duplicate


def test_breakers_open_on_failures_and_route_avoids_the_model(serve: Served) -> None:
    client = serve()
    first = route(client, explain=True)
    victim = first.model
    for _ in range(5):  # consecutive_failures = 5 in the shipped policy
        client.report(report_for(route(client, requested_model=victim), outcome=pb.OUTCOME_SERVER_ERROR))
    health = client.health()
    breakers = {(b.scope, b.name): b for b in health.breakers}
    assert breakers[("model", victim)].state == "open"
    assert breakers[("model", victim)].reason == "5 consecutive failures"
    assert breakers[("model", victim)].reopens_in_s > 0

    after = route(client, explain=True, requested_model=victim)
    assert after.model != victim
    assert after.fallback_reason == pb.FALLBACK_REASON_REQUESTED_MODEL_INELIGIBLE
    assert {f.model: f.filter for f in after.filtered}[victim] == pb.FILTER_CIRCUIT_OPEN
    assert victim not in after.alternatives


def test_rate_limits_honour_retry_after(serve: Served) -> None:
    client = serve()
    decision = route(client)
    client.report(report_for(decision, outcome=pb.OUTCOME_RATE_LIMITED, retry_after_s=600.0))
    breaker = next(b for b in client.health().breakers if b.name == decision.model)
    assert breaker.state == "open"
    assert "retry after 600 s" in breaker.reason
    assert breaker.reopens_in_s > 590
    assert route(client).model != decision.model


def test_all_candidates_unhealthy_falls_back_to_a_healthy_static_model(serve: Served) -> None:
    client = serve()
    for model in ("claude-sonnet-5-5", "claude-opus-5-5", "claude-haiku-5-5", "claude-fable-5-1"):
        decision = route(client, lane="claude", requested_model=model)
        client.report(report_for(decision, model=model, outcome=pb.OUTCOME_RATE_LIMITED, retry_after_s=300.0))
    decision = route(client, lane="claude")
    assert decision.strategy == pb.STRATEGY_STATIC_FALLBACK
    assert decision.fallback_reason == pb.FALLBACK_REASON_ALL_CANDIDATES_UNHEALTHY
    assert decision.fallback_disruptive
    assert decision.model == "claude-sonnet-5-5"  # none healthy: the pin stands


def test_budgets_filter_expensive_models_then_run_out(serve: Served, config_dir: Path) -> None:
    edit(config_dir, "daily_usd = 0", "daily_usd = 0.05")
    client = serve()
    decisions: list[pb.RouteDecision] = []
    with pytest.raises(CallFailed) as refused:  # claude's lane has no zero-cost model to fall to
        for _ in range(40):
            decisions.append(route(client, lane="claude", explain=True))
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(decisions) >= 2
    assert sum(d.estimated_cost_usd for d in decisions) <= 0.05 + 1e-9  # static answers fit too
    budget_filtered = {f.model for d in decisions for f in d.filtered if f.filter == pb.FILTER_BUDGET}
    assert budget_filtered  # expensive models went first
    overall = next(b for b in client.health().budgets if b.scope == "overall")
    assert overall.warning and overall.used_share >= 0.8
    assert client.health().budget_warning


def test_budget_exhausted_can_be_an_error_the_lane_acts_on(serve: Served, config_dir: Path) -> None:
    edit(config_dir, "daily_usd = 0", "daily_usd = 0.0001")
    edit(config_dir, 'on_exhausted = "static_fallback"', 'on_exhausted = "error"')
    client = serve()
    with pytest.raises(CallFailed) as caught:
        for _ in range(3):
            route(client, lane="claude")
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The refusal is a disruptive decision of the lane, with no model or provider to its name.
    window = today(client)
    assert window.overall.decisions >= 1 and window.overall.disruptive_fallback_rate > 0
    assert [p.name for p in window.providers] in ([], ["anthropic"])
    lanes = {lane.lane: lane.state for lane in client.health().lanes}
    assert lanes["claude"] == "elevated_fallback"


def test_resource_exhausted_carries_quota_and_retry_details(serve: Served, config_dir: Path) -> None:
    edit(config_dir, "daily_usd = 0", "daily_usd = 0.0001")
    edit(config_dir, 'on_exhausted = "static_fallback"', 'on_exhausted = "error"')
    client = serve()
    stub = client._stub  # the raw call, to read the status details
    task = pb.Task(title="x", input_tokens=10_000, output_tokens=2_000)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Route(pb.RouteRequest(lane="claude", task=task), timeout=5)
    status = rpc_status.from_call(caught.value)
    assert status is not None
    kinds = {d.type_url.rsplit("/", 1)[-1] for d in status.details}
    assert kinds == {"google.rpc.QuotaFailure", "google.rpc.RetryInfo"}
    retry = error_details_pb2.RetryInfo()
    next(d for d in status.details if d.Is(retry.DESCRIPTOR)).Unpack(retry)
    assert 0 < retry.retry_delay.seconds <= 86_401


def test_lane_detection_goes_elevated_on_disruptive_fallbacks(serve: Served, config_dir: Path) -> None:
    client = serve()
    route(client, lane="claude")
    lane = {lane.lane: lane.state for lane in client.health().lanes}
    assert (lane["claude"], lane["local"]) == ("healthy", "idle")
    nothing_fits = pb.Constraints(max_cost_usd=1e-9)  # no free model on the claude lane
    for _ in range(3):
        client.route(pb.RouteRequest(lane="claude", task=pb.Task(title="x"), constraints=nothing_fits))
    health = client.health()
    assert {lane.lane: lane.state for lane in health.lanes}["claude"] == "elevated_fallback"
    anthropic = next(p for p in health.providers if p.name == "anthropic")
    assert anthropic.state == "elevated_fallback"
    assert anthropic.reason.startswith("disruptive fallback rate 0.750 >= 0.2 (3 of 4 decisions")
    assert health.overall.state == "elevated_fallback"


def test_watch_health_sends_initial_change_and_heartbeat(serve: Served) -> None:
    client = serve()
    stream = client.watch_health(heartbeat_s=1.0)  # policy's shortest (ceilings.min_watch_heartbeat_s)
    first = next(stream)
    assert first.trigger == "initial"
    assert next(stream).trigger == "heartbeat"
    done = threading.Event()

    def trip() -> None:
        decision = route(client, lane="local")
        client.report(report_for(decision, outcome=pb.OUTCOME_RATE_LIMITED, retry_after_s=60.0))
        done.set()

    threading.Thread(target=trip).start()
    triggers = []
    for snapshot in stream:
        triggers.append(snapshot.trigger)
        if snapshot.trigger == "change" and any(b.state == "open" for b in snapshot.breakers):
            break
        assert len(triggers) < 100
    assert done.wait(5)
    with pytest.raises(CallFailed) as caught:
        next(client.watch_health(heartbeat_s=-1))
    assert caught.value.violations == [("heartbeat_s", "must be at least 1, got -1")]


def test_economics_are_rebuilt_from_the_ledger_after_a_restart(serve: Served, config_dir: Path) -> None:
    edit(config_dir, "daily_usd = 0", "daily_usd = 100")
    client = serve()
    for lane in ("codex", "gemini", "claude"):
        decision = route(client, lane=lane)
        client.report(report_for(decision, cost_usd=0.125))
    pending = route(client, lane="claude")  # reported only after the restart
    before = today(client)
    restarted = serve(restart=True)
    after = today(restarted)
    assert after.overall == before.overall
    assert after.lanes == before.lanes
    spent = next(b for b in restarted.health().budgets if b.scope == "overall").spent_usd
    assert spent == pytest.approx(3 * 0.125)  # today's spend rebuilt once, not doubled
    # A decision made before the restart is known from the ledger, and counted once.
    ack = restarted.report(report_for(pending, cost_usd=0.5))
    assert ack.decision_known and not ack.duplicate
    assert today(restarted).overall.reports == 4


def test_a_report_is_counted_even_when_its_call_gives_up_mid_commit(
    config_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = LoopbackServer(LiveRouter.from_directory(config_dir), tmp_path / "data")
    outcomes = server.outcomes
    write = outcomes.write_report

    def slow_write(record: object) -> Future[bool]:
        late: Future[bool] = Future()
        late.set_running_or_notify_cancel()
        stored = write(record)  # type: ignore[arg-type]
        threading.Timer(0.5, lambda: late.set_result(stored.result())).start()
        return late

    monkeypatch.setattr(outcomes, "write_report", slow_write)
    try:
        with RoutingClient(server.address, timeout_s=0.1) as hasty, RoutingClient(server.address) as patient:
            decision = route(patient)
            with pytest.raises(CallFailed) as caught:
                hasty.report(report_for(decision))
            assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            deadline = time.monotonic() + 5
            while today(patient).overall.reports == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert today(patient).overall.reports == 1
            assert patient.report(report_for(decision)).duplicate
    finally:
        server.stop()


def test_shutdown_ends_health_watchers_at_once(config_dir: Path, tmp_path: Path) -> None:
    server = LoopbackServer(LiveRouter.from_directory(config_dir), tmp_path / "data")
    with RoutingClient(server.address) as client:
        stream = client.watch_health(heartbeat_s=3600)
        assert next(stream).trigger == "initial"
        started = time.monotonic()
        server.stop()  # grace 1 s: a watcher left running would hold it all
        assert time.monotonic() - started < 0.9
        assert list(stream) == []


def test_an_open_circuit_the_budget_could_pay_for_is_a_health_problem(
    serve: Served, config_dir: Path
) -> None:
    edit(config_dir, "daily_usd = 0", "daily_usd = 0.01")  # only haiku fits on the claude lane
    edit(config_dir, 'on_exhausted = "static_fallback"', 'on_exhausted = "error"')
    client = serve()
    haiku = route(client, lane="claude")
    assert haiku.model == "claude-haiku-5-5"
    client.report(report_for(haiku, outcome=pb.OUTCOME_RATE_LIMITED, retry_after_s=300.0, cost_usd=0.0))
    decision = route(client, lane="claude")  # no RESOURCE_EXHAUSTED "until tomorrow"
    assert decision.fallback_reason == pb.FALLBACK_REASON_ALL_CANDIDATES_UNHEALTHY


def test_a_route_that_fails_after_reserving_releases_the_reservation(
    serve: Served, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edit(config_dir, "daily_usd = 0", "daily_usd = 100")
    client = serve()
    route(client)
    monkeypatch.setattr(
        Outcomes, "record_decision", lambda self, decision: (_ for _ in ()).throw(OSError("disk"))
    )
    with pytest.raises(CallFailed) as caught:
        route(client, lane="claude")
    assert caught.value.code == grpc.StatusCode.INTERNAL
    overall = next(b for b in client.health().budgets if b.scope == "overall")
    assert overall.reserved_usd == pytest.approx(0.002)  # the first decision's, nothing from the failed one


def test_a_cost_far_above_the_estimate_counts_at_the_bound_and_is_flagged(
    serve: Served, config_dir: Path, tmp_path: Path
) -> None:
    edit(config_dir, "daily_usd = 0\n", "daily_usd = 100\n")
    client = serve()
    decision = route(client)
    bound = max(50 * decision.estimated_cost_usd, 5.0)  # [reports] as shipped
    ack = client.report(report_for(decision, cost_usd=1_000_000.0))
    assert ack.cost_bounded and ack.claimed_cost_usd == 1_000_000.0
    assert ack.cost_usd == pytest.approx(bound)
    overall = today(client).overall
    assert overall.spend_usd == pytest.approx(bound)
    assert overall.bounded_cost_reports == 1
    health = client.health()
    assert next(b for b in health.budgets if b.scope == "overall").spent_usd == pytest.approx(bound)
    assert not health.guardrails.stop_loss_active
    # Just under the bound is believed as reported.
    honest = route(client)
    ack = client.report(report_for(honest, cost_usd=0.9 * max(50 * honest.estimated_cost_usd, 5.0)))
    assert not ack.cost_bounded and ack.claimed_cost_usd == 0.0
    with sqlite3.connect(tmp_path / "data" / "ledger.sqlite3") as ledger:
        rows = ledger.execute(
            "SELECT cost_usd, claimed_cost_usd, cost_bounded FROM reports ORDER BY at"
        ).fetchall()
    assert rows[0] == (pytest.approx(bound), 1_000_000.0, 1)
    assert rows[1][1:] == (None, 0)


def test_a_report_that_asks_a_slow_ledger_for_its_decision_does_not_hold_up_routing(
    config_dir: Path, tmp_path: Path
) -> None:
    """A decision not in memory (another replica's, an old one, a mistyped id) is looked up in the
    ledger, which may be slow (a locked PostgreSQL table): off the event loop, so every other call
    is answered meanwhile."""
    server = LoopbackServer(LiveRouter.from_directory(config_dir), tmp_path / "data")
    store = server.outcomes.store
    looked_up, release = threading.Event(), threading.Event()
    find = store.find_decision

    def slow_find(decision_id: str) -> object:
        looked_up.set()
        release.wait(timeout=30)
        return find(decision_id)

    store.find_decision = slow_find  # type: ignore[method-assign]
    try:
        with RoutingClient(server.address) as client:
            decision = route(client)
            reporting = threading.Thread(
                target=client.report, args=(report_for(decision, decision_id="not-in-memory"),)
            )
            reporting.start()
            assert looked_up.wait(timeout=10)
            for _ in range(5):  # within the client's deadline (10 s), while the lookup waits (30 s)
                assert route(client).model
            release.set()
            reporting.join(timeout=30)
            assert not reporting.is_alive()
    finally:
        release.set()
        server.stop()
