"""Operator controls on a live server with credentials: pausing a lane, closing a breaker by hand,
reloading the config, and stop-loss, each logged in the ledger with who and why, refused to lanes
and to callers without a token, and followed across a restart and by workers sharing the ledger."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq.routing.v1 import routing_pb2_grpc
from orxaq_grpc.application.operators import Action, Operators
from orxaq_grpc.application.outcomes import Outcomes
from orxaq_grpc.application.workflow import RoutingWorkflow
from orxaq_grpc.client import field_violations
from orxaq_grpc.config.load import load_config
from orxaq_grpc.outcomes.breakers import Breakers
from orxaq_grpc.outcomes.records import Outcome
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.service.servicer import RoutingHandlers
from orxaq_grpc.store.sqlite import SqliteStore
from orxaq_grpc.telemetry.observer import Observer
from tests.conftest import CONFIG_DIR, LoopbackServer
from tests.test_access import CODEX_TOKEN, OPERATOR_ENV, OPERATOR_TOKEN, guarded_config
from tests.test_reports import report_for

NOTE = "provider status page says recovered"


class Caller:
    """Raw calls with one bearer token (None: none)."""

    def __init__(self, address: str, token: str | None) -> None:
        self._channel = grpc.insecure_channel(address)
        self.stub = routing_pb2_grpc.RoutingServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def __call__(self, method: str, request: object) -> object:
        return getattr(self.stub, method)(request, metadata=self._metadata, timeout=10)

    def close(self) -> None:
        self._channel.close()


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LoopbackServer, Path]]:
    monkeypatch.setenv(OPERATOR_ENV, OPERATOR_TOKEN)
    config = guarded_config(tmp_path / "config")
    server = LoopbackServer(LiveRouter.from_directory(config), tmp_path / "data")
    yield server, config
    server.stop()


@pytest.fixture
def operator(served: tuple[LoopbackServer, Path]) -> Iterator[Caller]:
    caller = Caller(served[0].address, OPERATOR_TOKEN)
    yield caller
    caller.close()


@pytest.fixture
def lane(served: tuple[LoopbackServer, Path]) -> Iterator[Caller]:
    caller = Caller(served[0].address, CODEX_TOKEN)
    yield caller
    caller.close()


def route(lane: Caller, **fields: object) -> pb.RouteDecision:
    task = pb.Task(title="fix the flaky retry test", prompt="The retry test fails one run in ten.")
    decision = lane("Route", pb.RouteRequest(lane="codex", task=task, **fields))  # type: ignore[arg-type]
    assert isinstance(decision, pb.RouteDecision)
    return decision


def health(caller: Caller) -> pb.HealthResponse:
    answer = caller("Health", pb.HealthRequest())
    assert isinstance(answer, pb.HealthResponse)
    return answer


def codex_lane(answer: pb.HealthResponse) -> pb.LaneHealth:
    return next(lane for lane in answer.lanes if lane.lane == "codex")


def refused(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def test_a_paused_lane_routes_to_its_static_pin_until_resumed_and_both_are_logged_with_who(
    served: tuple[LoopbackServer, Path], operator: Caller, lane: Caller
) -> None:
    scored = route(lane)
    assert scored.strategy != pb.STRATEGY_STATIC_FALLBACK

    paused = operator("PauseLane", pb.PauseLaneRequest(lane="codex", paused=True, note="runaway retries"))
    assert isinstance(paused, pb.PauseLaneResponse)
    assert paused.changed and paused.lane.paused

    decision = route(lane, requested_model="gpt-6-luna")  # a pause goes to the pin, whatever is asked
    assert decision.strategy == pb.STRATEGY_STATIC_FALLBACK
    assert decision.fallback_reason == pb.FALLBACK_REASON_LANE_PAUSED
    assert not decision.fallback_disruptive  # deliberate: it must not make the router look unstable
    assert decision.model == codex_lane(health(operator)).static_fallback == "gpt-6.1-sol"
    assert health(operator).overall.state != "degraded"

    again = operator("PauseLane", pb.PauseLaneRequest(lane="codex", paused=True, note="still"))
    assert isinstance(again, pb.PauseLaneResponse) and not again.changed

    operator("PauseLane", pb.PauseLaneRequest(lane="codex", paused=False, note="retries fixed"))
    assert route(lane).fallback_reason != pb.FALLBACK_REASON_LANE_PAUSED
    assert not codex_lane(health(operator)).paused

    actions = [(a.who, a.action, a.target, a.note, a.outcome) for a in health(operator).operator_actions]
    assert actions[:3] == [
        ("supervisor", "resume_lane", "codex", "retries fixed", "changed"),
        ("supervisor", "pause_lane", "codex", "still", "unchanged"),
        ("supervisor", "pause_lane", "codex", "runaway retries", "changed"),
    ]


def test_a_pause_survives_a_restart_from_the_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OPERATOR_ENV, OPERATOR_TOKEN)
    config = guarded_config(tmp_path / "config")
    first = LoopbackServer(LiveRouter.from_directory(config), tmp_path / "data")
    caller = Caller(first.address, OPERATOR_TOKEN)
    caller("PauseLane", pb.PauseLaneRequest(lane="codex", paused=True, note="incident 42"))
    caller.close()
    first.stop()

    second = LoopbackServer(LiveRouter.from_directory(config), tmp_path / "data")
    try:
        lane = Caller(second.address, CODEX_TOKEN)
        assert route(lane).fallback_reason == pb.FALLBACK_REASON_LANE_PAUSED
        operator = Caller(second.address, OPERATOR_TOKEN)
        answer = health(operator)
        assert codex_lane(answer).paused
        assert answer.operator_actions[0].note == "incident 42"
        lane.close()
        operator.close()
    finally:
        second.stop()


def test_an_operator_closes_an_open_breaker_and_the_model_is_routed_again(
    served: tuple[LoopbackServer, Path], operator: Caller, lane: Caller
) -> None:
    decision = route(lane)
    model = decision.model
    limited = report_for(decision, outcome=pb.OUTCOME_RATE_LIMITED, retry_after_s=600.0)
    lane("Report", limited)
    breaker = next(b for b in health(operator).breakers if b.name == model)
    assert breaker.state == "open"
    assert route(lane).model != model

    closed = operator("CloseBreaker", pb.CloseBreakerRequest(scope="model", name=model, note=NOTE))
    assert isinstance(closed, pb.CloseBreakerResponse)
    assert closed.changed and closed.breaker.state == "closed" and closed.breaker.name == model
    assert route(lane).model == model
    assert not any(b.name == model and b.state != "closed" for b in health(operator).breakers)

    twice = operator("CloseBreaker", pb.CloseBreakerRequest(scope="model", name=model, note=NOTE))
    assert isinstance(twice, pb.CloseBreakerResponse) and not twice.changed
    logged = health(operator).operator_actions[1]
    assert (logged.who, logged.action, logged.target, logged.outcome) == (
        "supervisor",
        "close_breaker",
        f"model:{model}",
        "changed",
    )


def test_a_reload_answers_the_new_version_or_the_refusal_naming_file_and_field(
    served: tuple[LoopbackServer, Path], operator: Caller
) -> None:
    _, config = served
    before = health(operator).config_version
    policy = config / "policy.toml"
    good = policy.read_text()
    policy.write_text(good.replace("elevated_fallback_rate = 0.20", "elevated_fallback_rate = 7"))
    refusal = operator("ReloadConfig", pb.ReloadConfigRequest(note="tighter detection"))
    assert isinstance(refusal, pb.ReloadConfigResponse)
    assert not refusal.reloaded and refusal.config_version == before
    assert "policy.toml" in refusal.refusal and "elevated_fallback_rate" in refusal.refusal

    policy.write_text(good.replace("elevated_fallback_rate = 0.20", "elevated_fallback_rate = 0.15"))
    reloaded = operator("ReloadConfig", pb.ReloadConfigRequest(note="tighter detection"))
    assert isinstance(reloaded, pb.ReloadConfigResponse)
    assert reloaded.reloaded and reloaded.previous_version == before != reloaded.config_version
    answer = health(operator)
    assert answer.config_version == reloaded.config_version
    assert answer.detection.elevated_fallback_rate == pytest.approx(0.15)
    outcomes = [(a.action, a.outcome) for a in answer.operator_actions[:2]]
    assert outcomes[0] == ("reload_config", reloaded.config_version)
    assert outcomes[1][0] == "reload_config" and outcomes[1][1].startswith("refused: ")


def test_stop_loss_by_hand_is_logged_with_who(operator: Caller) -> None:
    operator("SetStopLoss", pb.SetStopLossRequest(active=True, note="spend spike"))
    operator("SetStopLoss", pb.SetStopLossRequest(active=False, note="spike explained"))
    actions = [(a.who, a.action, a.note, a.outcome) for a in health(operator).operator_actions[:2]]
    assert actions == [
        ("supervisor", "stop_loss_exit", "spike explained", "changed"),
        ("supervisor", "stop_loss_enter", "spend spike", "changed"),
    ]


@pytest.mark.parametrize(
    ("method", "request_", "field"),
    [
        ("PauseLane", pb.PauseLaneRequest(lane="codex", paused=True), "note"),
        ("PauseLane", pb.PauseLaneRequest(lane="nope", paused=True, note=NOTE), "lane"),
        ("PauseLane", pb.PauseLaneRequest(lane="codex", paused=True, note="x" * 5000), "note"),
        ("CloseBreaker", pb.CloseBreakerRequest(scope="lane", name="codex", note=NOTE), "scope"),
        ("CloseBreaker", pb.CloseBreakerRequest(scope="model", name="gpt-9", note=NOTE), "name"),
        ("CloseBreaker", pb.CloseBreakerRequest(scope="provider", name="", note=NOTE), "name"),
        ("ReloadConfig", pb.ReloadConfigRequest(note=" "), "note"),
    ],
)
def test_bad_operator_requests_name_the_field_and_change_nothing(
    operator: Caller, method: str, request_: object, field: str
) -> None:
    before = health(operator)
    error = refused(lambda: operator(method, request_))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(error)] == [field]
    after = health(operator)
    assert list(after.operator_actions) == list(before.operator_actions)
    assert after.config_version == before.config_version
    assert [lane.paused for lane in after.lanes] == [lane.paused for lane in before.lanes]


@pytest.mark.parametrize("method", ["PauseLane", "CloseBreaker", "ReloadConfig"])
def test_controls_are_refused_to_lanes_and_to_callers_without_a_token(
    served: tuple[LoopbackServer, Path], operator: Caller, lane: Caller, method: str
) -> None:
    request_ = {
        "PauseLane": pb.PauseLaneRequest(lane="codex", paused=True, note=NOTE),
        "CloseBreaker": pb.CloseBreakerRequest(scope="model", name="gpt-6-luna", note=NOTE),
        "ReloadConfig": pb.ReloadConfigRequest(note=NOTE),
    }[method]
    assert refused(lambda: lane(method, request_)).code() == grpc.StatusCode.PERMISSION_DENIED
    anonymous = Caller(served[0].address, None)
    assert refused(lambda: anonymous(method, request_)).code() == grpc.StatusCode.UNAUTHENTICATED
    anonymous.close()
    answer = health(operator)
    assert not answer.operator_actions
    assert not codex_lane(answer).paused


def test_workers_sharing_a_ledger_follow_each_others_pauses_and_closes(tmp_path: Path) -> None:
    config = load_config(CONFIG_DIR)
    store = SqliteStore(tmp_path / "ledger.db", retention_days=31)
    reloads: list[str] = []
    try:
        breakers = [Breakers(config.policy.breakers) for _ in range(2)]
        here, there = (Operators(store, b, reloads.append) for b in breakers)
        for _ in range(config.policy.breakers.consecutive_failures):
            breakers[1].record("gpt-6-luna", "openai", Outcome.SERVER_ERROR)
        assert "gpt-6-luna" in breakers[1].blocked()[0]

        here.pause_lane("ops", "codex", True, "incident")
        here.close_breaker("ops", "model", "gpt-6-luna", "recovered")
        here.record("ops", Action.RELOAD_CONFIG, "", "new prices", "abc123")
        assert not there.lane_paused("codex")
        there.follow()
        assert there.lane_paused("codex")
        assert "gpt-6-luna" not in breakers[1].blocked()[0]
        assert reloads == ["abc123"]  # and not one for the reload here, which was done already
        assert [a.action for a in there.shown()] == [
            Action.RELOAD_CONFIG,
            Action.CLOSE_BREAKER,
            Action.PAUSE_LANE,
        ]
        there.follow()  # nothing new: nothing applied twice
        assert reloads == ["abc123"] and len(there.shown()) == 3
    finally:
        store.close()


def test_health_counts_an_open_circuits_time_left_on_the_breakers_own_clock(tmp_path: Path) -> None:
    """The fleet simulator's breakers run on simulated time: Health must not read the machine's."""
    live = LiveRouter.from_directory(CONFIG_DIR)
    settings = live.current.config.policy.breakers
    now = [5.0]
    outcomes = Outcomes(live, SqliteStore(tmp_path, retention_days=31), monotonic=lambda: now[0])
    observer = Observer(None)
    handlers = RoutingHandlers(RoutingWorkflow(live, outcomes, observer), str(tmp_path), observer)
    try:
        for _ in range(settings.consecutive_failures):
            outcomes.breakers.record("gpt-6-luna", "openai", Outcome.SERVER_ERROR)
        now[0] += 10.0
        breaker = next(b for b in handlers.health().breakers if b.name == "gpt-6-luna")
        assert breaker.state == "open"
        assert breaker.reopens_in_s == pytest.approx(settings.open_s - 10.0)
    finally:
        outcomes.close()
