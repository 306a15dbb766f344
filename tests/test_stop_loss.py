"""Stop-loss: each trigger's reading, the state machine's hysteresis, and each trigger forced
through a real server: routing really rolls back to the static pins, Scale really freezes, and
an operator (or the cool-off) brings it out again, across a restart too."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import grpc
import pytest

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.client import CallFailed, RoutingClient
from orxaq_grpc.config.model import Config, StopLossSettings
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.scale import journal
from orxaq_grpc.scale.stoploss import (
    BudgetSpend,
    Inputs,
    Reading,
    Sample,
    StopLoss,
    StopLossEvent,
    Trigger,
    read_triggers,
)
from orxaq_grpc.store import SqliteStore, StoreError
from tests.conftest import FakeClock, LoopbackServer, set_toml
from tests.test_store import decision as stored_decision
from tests.test_store import report as stored_report

# --- readings ------------------------------------------------------------------------------------


def sample(
    reports: int = 50, pass_rate: float = 0.9, cycle: float = 10.0, valued: int = 0, value: float = 0.0
):
    return Sample(0.0, 1.0, reports, pass_rate, cycle, valued, value)


CALM = Inputs(
    budgets=(BudgetSpend("overall", 10.0, 100.0), BudgetSpend("lane codex", 5.0, 50.0)),
    recent=sample(),
    baseline=sample(),
    router_state="healthy",
    decisions=100,
    unstable_fallback_rate=0.0,
)


@pytest.fixture
def stop_settings(shipped_config: Config) -> StopLossSettings:
    return (
        shipped_config.policy.stop_loss
    )  # 1.0 x budget, drop 0.10, fallback 0.30, cycle +50%, hysteresis 0.5


def reading(inputs: Inputs, settings: StopLossSettings, trigger: Trigger) -> Reading:
    return {r.trigger: r for r in read_triggers(inputs, settings)}[trigger.value]


def test_calm_figures_hold_nothing(stop_settings: StopLossSettings) -> None:
    assert all(r.clear and not r.holding for r in read_triggers(CALM, stop_settings))


def spending(overall: float, lane: float = 5.0) -> Inputs:
    return dataclasses.replace(
        CALM, budgets=(BudgetSpend("overall", overall, 100.0), BudgetSpend("lane codex", lane, 50.0))
    )


@pytest.mark.parametrize(
    ("overall", "lane", "holding", "clear", "scope"),
    [
        (100.0, 5.0, False, False, "overall"),
        (100.01, 5.0, True, False, "overall"),
        (50.0, 5.0, False, True, "overall"),
        (10.0, 50.5, True, False, "lane codex"),  # any budget over counts
    ],
)
def test_daily_spend(
    stop_settings: StopLossSettings, overall: float, lane: float, holding: bool, clear: bool, scope: str
) -> None:
    r = reading(spending(overall, lane), stop_settings, Trigger.DAILY_SPEND)
    assert (r.holding, r.clear) == (holding, clear)
    assert r.detail.startswith(scope)


def test_daily_spend_is_off_without_a_budget(stop_settings: StopLossSettings) -> None:
    r = reading(dataclasses.replace(CALM, budgets=()), stop_settings, Trigger.DAILY_SPEND)
    assert not r.holding and not r.judged and "no daily budget" in r.detail


@pytest.mark.parametrize(
    ("recent", "holding", "clear"),
    [(0.80, False, False), (0.79, True, False), (0.85, False, True), (0.84, False, False)],
)
def test_pass_rate_against_the_baseline(
    stop_settings: StopLossSettings, recent: float, holding: bool, clear: bool
) -> None:
    many = 5000  # enough reports that a one-point move is significant
    inputs = dataclasses.replace(
        CALM, recent=sample(many, pass_rate=recent), baseline=sample(many, pass_rate=0.90)
    )
    r = reading(inputs, stop_settings, Trigger.PASS_RATE)
    assert (r.holding, r.clear) == (holding, clear)
    assert r.threshold == pytest.approx(0.80)


@pytest.mark.parametrize(("reports", "holding"), [(30, False), (100, False), (400, True)])
def test_a_pass_rate_drop_must_stand_out_of_the_noise(
    stop_settings: StopLossSettings, reports: int, holding: bool
) -> None:
    """75% against a baseline of 86% is past the 10-point drop, but on 100 reports a side two
    standard errors are 11.2 points: noise. On 400 (5.6 points) it is a regression."""
    inputs = dataclasses.replace(
        CALM, recent=sample(reports, pass_rate=0.75), baseline=sample(reports, pass_rate=0.86)
    )
    r = reading(inputs, stop_settings, Trigger.PASS_RATE)
    assert r.holding == holding
    assert ("standard errors" in r.detail) != holding


def test_pass_rate_needs_reports_on_both_sides(stop_settings: StopLossSettings) -> None:
    inputs = dataclasses.replace(CALM, recent=sample(reports=19, pass_rate=0.0))
    assert not reading(inputs, stop_settings, Trigger.PASS_RATE).holding
    inputs = dataclasses.replace(CALM, recent=sample(reports=20, pass_rate=0.0))
    assert reading(inputs, stop_settings, Trigger.PASS_RATE).holding  # min_reports (20) reached
    inputs = dataclasses.replace(CALM, baseline=sample(reports=19), recent=sample(reports=20, pass_rate=0.0))
    assert not reading(inputs, stop_settings, Trigger.PASS_RATE).holding


@pytest.mark.parametrize(
    ("state", "rate", "holding", "clear"),
    [
        ("elevated_fallback", 0.30, True, False),
        ("elevated_fallback", 0.29, False, False),
        ("healthy", 0.30, False, False),  # the router itself says it is fine
        ("healthy", 0.14, False, True),
    ],
)
def test_router_unstable(
    stop_settings: StopLossSettings, state: str, rate: float, holding: bool, clear: bool
) -> None:
    inputs = dataclasses.replace(CALM, router_state=state, unstable_fallback_rate=rate)
    r = reading(inputs, stop_settings, Trigger.ROUTER_UNSTABLE)
    assert (r.holding, r.clear) == (holding, clear)


@pytest.mark.parametrize(
    ("cycle", "value", "holding", "clear"),
    [
        (15.0, 100.0, True, False),  # +50%, value flat
        (14.9, 100.0, False, False),  # +49%
        (12.4, 100.0, False, True),  # under +25%: clear
        (15.0, 150.0, False, True),  # +50% paid for by +50% value per task
        (15.0, 140.0, True, False),
    ],
)
def test_cycle_time_without_value_uplift(
    stop_settings: StopLossSettings, cycle: float, value: float, holding: bool, clear: bool
) -> None:
    inputs = dataclasses.replace(
        CALM,
        recent=sample(cycle=cycle, valued=10, value=value),
        baseline=sample(cycle=10.0, valued=10, value=100.0),
    )
    r = reading(inputs, stop_settings, Trigger.CYCLE_TIME)
    assert (r.holding, r.clear) == (holding, clear)


# --- the state machine ---------------------------------------------------------------------------

HOT = spending(150.0)
WARM = spending(80.0)  # neither holding nor clear


def step(machine: StopLoss, inputs: Inputs, settings: StopLossSettings) -> StopLossEvent | None:
    """One evaluation, its transition applied as the service applies it once logged."""
    event = machine.evaluate(read_triggers(inputs, settings), inputs.baseline, settings)
    if event is not None:
        machine.apply(event)
    return event


def by_operator(
    machine: StopLoss, active: bool, inputs: Inputs, settings: StopLossSettings
) -> StopLossEvent | None:
    event = machine.operator(active, "note", read_triggers(inputs, settings), inputs.baseline)
    if event is not None:
        machine.apply(event)
    return event


def test_enters_at_once_and_leaves_only_after_a_whole_cool_off(stop_settings: StopLossSettings) -> None:
    clock = FakeClock(1_000.0)
    machine = StopLoss(clock)
    enter = step(machine, HOT, stop_settings)
    assert enter is not None and enter.kind == "enter" and enter.trigger == "daily_spend"
    assert machine.active
    assert step(machine, HOT, stop_settings) is None
    assert step(machine, CALM, stop_settings) is None  # clear starts the cool-off
    clock.now += stop_settings.cool_off_s - 1
    assert step(machine, WARM, stop_settings) is None  # not clear: the cool-off starts over
    clock.now += 10
    assert step(machine, CALM, stop_settings) is None
    clock.now += stop_settings.cool_off_s - 1
    assert step(machine, CALM, stop_settings) is None
    assert machine.view().exits_in_s == pytest.approx(1.0)
    clock.now += 1
    leave = step(machine, CALM, stop_settings)
    assert leave is not None and leave.kind == "exit" and leave.trigger == "cool_off"
    assert not machine.active


def test_an_operator_exit_does_not_flap_back_on_the_same_condition(stop_settings: StopLossSettings) -> None:
    machine = StopLoss(FakeClock(0.0))
    step(machine, HOT, stop_settings)
    leave = by_operator(machine, False, HOT, stop_settings)
    assert leave is not None and leave.acknowledged == ("daily_spend",)
    assert step(machine, HOT, stop_settings) is None  # still holding, acknowledged
    assert not machine.active
    assert step(machine, WARM, stop_settings) is None  # not clear yet: still acknowledged
    assert step(machine, HOT, stop_settings) is None
    step(machine, CALM, stop_settings)  # clear once: re-armed
    assert step(machine, HOT, stop_settings) is not None
    assert machine.active


def test_an_operator_stop_loss_ends_only_by_an_operator(stop_settings: StopLossSettings) -> None:
    clock = FakeClock(0.0)
    machine = StopLoss(clock)
    assert by_operator(machine, True, CALM, stop_settings) is not None
    assert by_operator(machine, True, CALM, stop_settings) is None
    clock.now += 10 * stop_settings.cool_off_s
    assert step(machine, CALM, stop_settings) is None
    clock.now += 10 * stop_settings.cool_off_s
    assert step(machine, CALM, stop_settings) is None
    assert machine.active and machine.view().operator_only
    assert by_operator(machine, False, CALM, stop_settings) is not None
    assert not machine.active


def test_a_proposed_transition_changes_nothing_until_applied(stop_settings: StopLossSettings) -> None:
    machine = StopLoss(FakeClock(0.0))
    proposed = machine.evaluate(read_triggers(HOT, stop_settings), HOT.baseline, stop_settings)
    assert proposed is not None and not machine.active  # the log comes first
    assert machine.evaluate(read_triggers(HOT, stop_settings), HOT.baseline, stop_settings) == proposed


def test_a_relapse_within_a_cool_off_ends_only_by_an_operator(stop_settings: StopLossSettings) -> None:
    clock = FakeClock(0.0)
    machine = StopLoss(clock)
    step(machine, HOT, stop_settings)
    step(machine, CALM, stop_settings)
    clock.now += stop_settings.cool_off_s
    assert step(machine, CALM, stop_settings).trigger == "cool_off"  # type: ignore[union-attr]
    clock.now += 60  # the fault shows again as soon as routing is scored
    again = step(machine, HOT, stop_settings)
    assert again is not None and again.operator_only and "ends only by an operator" in again.detail
    for _ in range(3):
        step(machine, CALM, stop_settings)
        clock.now += stop_settings.cool_off_s
    assert machine.active and machine.view().exits_in_s is None
    assert by_operator(machine, False, CALM, stop_settings) is not None


def test_a_trigger_that_fired_must_be_seen_clear_not_just_unjudged(stop_settings: StopLossSettings) -> None:
    clock = FakeClock(0.0)
    machine = StopLoss(clock)
    failing = dataclasses.replace(CALM, recent=sample(pass_rate=0.5))
    assert step(machine, failing, stop_settings).trigger == "pass_rate"  # type: ignore[union-attr]
    quiet = dataclasses.replace(CALM, recent=sample(reports=0))  # no reports: not judged
    for _ in range(3):
        assert step(machine, quiet, stop_settings) is None
        clock.now += stop_settings.cool_off_s
    assert machine.active
    step(machine, CALM, stop_settings)  # judged and clear: the cool-off starts
    clock.now += stop_settings.cool_off_s
    assert step(machine, CALM, stop_settings).trigger == "cool_off"  # type: ignore[union-attr]


def test_disabled_never_enters_by_itself(stop_settings: StopLossSettings) -> None:
    machine = StopLoss(FakeClock(0.0))
    assert step(machine, HOT, dataclasses.replace(stop_settings, enabled=False)) is None
    assert not machine.active
    assert step(machine, HOT, stop_settings) is not None and machine.active  # the same figures, enabled


def test_the_baseline_is_frozen_while_active(stop_settings: StopLossSettings) -> None:
    machine = StopLoss(FakeClock(0.0))
    before = sample(pass_rate=0.9)
    step(machine, dataclasses.replace(HOT, baseline=before), stop_settings)
    assert machine.baseline_for(sample(pass_rate=0.5)) == before
    assert machine.view().baseline == before


# --- forced through a real server ------------------------------------------------------------------

STRICT = {"min_reports": "5", "min_decisions": "5", "check_interval_s": "3600"}


@pytest.fixture
def stop_loss_config(config_dir: Path) -> Path:
    for key, value in STRICT.items():
        set_toml(config_dir / "policy.toml", "stop_loss", key, value)
    return config_dir


def seed_baseline(
    data_dir: Path, *, passed: bool = True, latency_s: float = 10.0, value_usd: float | None = None
) -> None:
    """Decisions and reports from two days ago: the baseline window the recent hour is judged against."""
    at = time.time() - 2 * 86400
    with SqliteStore(data_dir, 31) as store:
        for i in range(10):
            store.record_decision(stored_decision(f"old{i}", at + i, value_usd=value_usd))
            written = store.record_report(
                stored_report(
                    f"old{i}", at + i, latency_s=latency_s, validation_passed=passed, first_time_pass=passed
                )
            )
            written.result(timeout=10)


def route(client: RoutingClient, lane: str = "codex", **task: object) -> pb.RouteDecision:
    return client.route(pb.RouteRequest(lane=lane, task=pb.Task(title="fix the flaky test", **task)))


def report(client: RoutingClient, decision: pb.RouteDecision, **fields: object) -> pb.ReportAck:
    values: dict[str, object] = {
        "decision_id": decision.decision_id,
        "lane": decision.lane,
        "provider": decision.provider,
        "model": decision.model,
        "input_tokens": 1000,
        "output_tokens": 500,
        "latency_s": 10.0,
        "outcome": pb.OUTCOME_SUCCESS,
        "validation_passed": True,
        "first_time_pass": True,
    }
    values.update(fields)
    return client.report(pb.ReportRequest(**values))


def grow(client: RoutingClient) -> pb.ScaleDecision:
    return client.scale(
        pb.ScaleRequest(
            lane="codex",
            current_parallel_agents=3,
            requested_parallel_agents=4,
            current_subagents_per_agent=1,
            requested_subagents_per_agent=1,
            value=pb.Flows(daily=pb.DailyFlow(usd_per_day=100, horizon_days=7)),
            cost=pb.Flows(daily=pb.DailyFlow(usd_per_day=10, horizon_days=7)),
        )
    )


def force_daily_spend(config_dir: Path, data_dir: Path) -> Callable[[RoutingClient], None]:
    set_toml(config_dir / "policy.toml", "budgets", "daily_usd", "20.0")
    # One call that overran its estimate by far, and is believed ([reports] bounds such claims).
    set_toml(config_dir / "policy.toml", "reports", "min_bound_usd", "100.0")
    return lambda client: report(client, route(client), cost_usd=25.0) and None


def force_pass_rate(config_dir: Path, data_dir: Path) -> Callable[[RoutingClient], None]:
    seed_baseline(data_dir, passed=True)

    def failing(client: RoutingClient) -> None:
        for _ in range(5):
            report(client, route(client), validation_passed=False, first_time_pass=False)

    return failing


def force_router_unstable(config_dir: Path, data_dir: Path) -> Callable[[RoutingClient], None]:
    set_toml(config_dir / "lanes.toml", "lanes.local", "enabled", "false")  # every decision: lane_disabled

    def disrupted(client: RoutingClient) -> None:
        for _ in range(5):
            route(client, lane="local")

    return disrupted


def force_cycle_time(config_dir: Path, data_dir: Path) -> Callable[[RoutingClient], None]:
    seed_baseline(data_dir, latency_s=10.0)

    def slow(client: RoutingClient) -> None:
        for _ in range(5):
            report(client, route(client), latency_s=16.0)

    return slow


FORCES = {
    "daily_spend": force_daily_spend,
    "pass_rate": force_pass_rate,
    "router_unstable": force_router_unstable,
    "cycle_time": force_cycle_time,
}


@pytest.fixture
def start(stop_loss_config: Path, tmp_path: Path) -> Iterator[Callable[[], LoopbackServer]]:
    servers: list[LoopbackServer] = []

    def started() -> LoopbackServer:
        server = LoopbackServer(LiveRouter.from_directory(stop_loss_config), tmp_path / "data")
        servers.append(server)
        return server

    yield started
    for server in servers:
        server.stop()


def assert_rolled_back(client: RoutingClient, trigger: str) -> None:
    decision = route(client)
    assert decision.strategy == pb.STRATEGY_STATIC_FALLBACK
    assert decision.fallback_reason == pb.FALLBACK_REASON_STOP_LOSS_STATIC
    assert not decision.fallback_disruptive
    # codex's static pin; with the budget spent, the first model of its chain that still fits: a local one
    assert decision.model == ("gpt-oss-120b" if trigger == "daily_spend" else "gpt-6.1-sol")
    assert trigger != "daily_spend" or decision.estimated_cost_usd == 0.0
    assert "stop loss static" in decision.rationale
    frozen = grow(client)
    assert frozen.action == pb.SCALE_ACTION_SCALE_DOWN  # 3 agents, baseline 2
    assert (frozen.allowed_parallel_agents, frozen.allowed_subagents_per_agent) == (2, 1)
    assert pb.SCALE_BLOCK_STOP_LOSS in [b.block for b in frozen.blocking]
    guardrails = client.health().guardrails
    assert guardrails.stop_loss_active
    assert trigger in guardrails.trigger.split(",")
    assert guardrails.events[0].kind == "enter"
    assert any(t.trigger == trigger and t.holding for t in guardrails.triggers)


@pytest.mark.parametrize("trigger", sorted(FORCES))
def test_each_trigger_rolls_back_and_an_operator_brings_it_out(
    trigger: str, start: Callable[[], LoopbackServer], stop_loss_config: Path, tmp_path: Path
) -> None:
    force = FORCES[trigger](stop_loss_config, tmp_path / "data")
    server = start()
    with RoutingClient(server.address) as client:
        assert route(client).strategy == pb.STRATEGY_SCORED
        assert grow(client).action == pb.SCALE_ACTION_SCALE_UP
        force(client)
        server.outcomes.guardrails.check()  # what the server's own tick does every check_interval_s
        assert_rolled_back(client, trigger)

        out = client.set_stop_loss(False, "investigated")
        assert out.changed and not out.guardrails.stop_loss_active
        assert trigger in out.guardrails.acknowledged  # still holding: re-armed only once clear
        assert out.guardrails.events[0].kind == "exit" and out.guardrails.events[0].note == "investigated"
        server.outcomes.guardrails.check()
        assert not client.health().guardrails.stop_loss_active  # no flap on the same condition
        assert route(client).strategy == pb.STRATEGY_SCORED


def test_stop_loss_survives_a_restart_and_so_does_its_end(
    start: Callable[[], LoopbackServer], stop_loss_config: Path, tmp_path: Path
) -> None:
    force = force_daily_spend(stop_loss_config, tmp_path / "data")
    server = start()
    with RoutingClient(server.address) as client:
        force(client)
        server.outcomes.guardrails.check()
        scaled = grow(client)
    server.stop()

    server = start()  # same data directory
    with RoutingClient(server.address) as client:
        assert_rolled_back(client, "daily_spend")
        guardrails = client.health().guardrails
        assert [d.decision_id for d in guardrails.scale_decisions][-1] == scaled.decision_id
        assert client.set_stop_loss(False, "budget raised").changed
    server.stop()

    server = start()
    with RoutingClient(server.address) as client:
        guardrails = client.health().guardrails
        assert not guardrails.stop_loss_active
        assert [e.kind for e in guardrails.events][:2] == ["exit", "enter"]
        assert route(client).strategy == pb.STRATEGY_SCORED


def test_the_cool_off_ends_it_once_every_trigger_is_clear(
    start: Callable[[], LoopbackServer], stop_loss_config: Path, tmp_path: Path
) -> None:
    set_toml(stop_loss_config / "policy.toml", "stop_loss", "cool_off_s", "0")
    force = force_router_unstable(stop_loss_config, tmp_path / "data")
    server = start()
    with RoutingClient(server.address) as client:
        force(client)
        server.outcomes.guardrails.check()
        assert_rolled_back(client, "router_unstable")
        for _ in range(40):  # static-pin decisions are not disruptive: the rate falls under 15%
            route(client)
        server.outcomes.guardrails.check()
        guardrails = client.health().guardrails
        assert not guardrails.stop_loss_active
        assert guardrails.events[0].trigger == "cool_off"
        assert route(client).strategy == pb.STRATEGY_SCORED


@pytest.mark.parametrize(("value_usd", "holds"), [(20.0, False), (15.0, True)])
def test_value_uplift_pays_for_a_longer_cycle(
    start: Callable[[], LoopbackServer], tmp_path: Path, value_usd: float, holds: bool
) -> None:
    seed_baseline(tmp_path / "data", latency_s=10.0, value_usd=10.0)
    server = start()
    with RoutingClient(server.address) as client:
        for _ in range(5):  # cycle x1.6: value per task x2.0 pays for it, x1.5 does not
            report(client, route(client, value_usd=value_usd), latency_s=16.0)
        server.outcomes.guardrails.check()
        guardrails = client.health().guardrails
        assert guardrails.stop_loss_active == holds
        cycle = next(t for t in guardrails.triggers if t.trigger == "cycle_time")
        assert f"value per task x{value_usd / 10:.2f}" in cycle.detail
        assert guardrails.baseline.valued_tasks == 10 and guardrails.baseline.value_per_task_usd == 10.0


def test_operator_can_enter_and_the_service_says_why(start: Callable[[], LoopbackServer]) -> None:
    server = start()
    with RoutingClient(server.address) as client:
        entered = client.set_stop_loss(True, "provider incident " + uuid.uuid4().hex[:6])
        assert entered.changed and entered.guardrails.trigger == "operator"
        assert not client.set_stop_loss(True).changed
        server.outcomes.guardrails.check()
        assert client.health().guardrails.stop_loss_active
        assert route(client).fallback_reason == pb.FALLBACK_REASON_STOP_LOSS_STATIC
        economics = client.economics()
        assert economics.guardrails.stop_loss_active
        assert economics.guardrails.events[0].note.startswith("provider incident")


def test_a_transition_the_ledger_cannot_keep_does_not_happen(start: Callable[[], LoopbackServer]) -> None:
    server = start()
    server.outcomes.store.close()
    with pytest.raises(StoreError):
        server.outcomes.guardrails.set_stop_loss(True, "disk gone")
    assert not server.outcomes.guardrails.stop_loss.active  # never ahead of the log
    with RoutingClient(server.address) as client:
        with pytest.raises(CallFailed) as caught:
            client.set_stop_loss(True, "disk gone")
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE


def test_a_transition_the_ledger_has_not_confirmed_in_time_is_answered_as_such(
    start: Callable[[], LoopbackServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow ledger: the entry is still queued when the call gives up, so the answer says it may
    take effect yet (it does, once written), not that nothing happened."""
    server = start()
    store = server.outcomes.store
    held: list[object] = []
    write = store.record_journal

    def queued(entry: object) -> Future[bool]:
        held.append(entry)
        return Future()  # not confirmed while the call waits

    monkeypatch.setattr(journal, "COMMIT_WAIT_S", 0.2)
    monkeypatch.setattr(store, "record_journal", queued)
    with RoutingClient(server.address) as client:
        with pytest.raises(CallFailed) as caught:
            client.set_stop_loss(True, "slow disk")
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        assert "may still take effect" in caught.value.details
        monkeypatch.setattr(store, "record_journal", write)
        assert all(write(entry).result(timeout=10) for entry in held)  # the ledger catches up
        server.outcomes.guardrails.check()
        assert client.health().guardrails.stop_loss_active


def test_workers_sharing_a_ledger_follow_each_others_transitions(start: Callable[[], LoopbackServer]) -> None:
    first, second = start(), start()  # what --workers 2 runs: two servers, one data directory
    with RoutingClient(first.address) as one, RoutingClient(second.address) as other:
        assert one.set_stop_loss(True, "incident").changed
        second.outcomes.guardrails.check()  # its next tick
        assert route(other).fallback_reason == pb.FALLBACK_REASON_STOP_LOSS_STATIC
        assert other.set_stop_loss(False, "over").changed
        first.outcomes.guardrails.check()
        assert route(one).strategy == pb.STRATEGY_SCORED
        assert [e.kind for e in one.health().guardrails.events][:2] == ["exit", "enter"]
