"""RouteBatch: many tasks in one call, each answered on its own, decided as single Routes would be.

The equivalence tests run the same requests through single Routes and through one batch, each on a
service of its own with the same config, clocks and guard state (budgets that run out mid-batch, a
half-open circuit with one probe), on both kernel twins; the rest call a live loopback server."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.application.outcomes import Outcomes
from orxaq_grpc.application.workflow import RoutingWorkflow
from orxaq_grpc.client import CallFailed, Connection, RoutingClient
from orxaq_grpc.config.model import Config, token_digest
from orxaq_grpc.outcomes.records import Outcome
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.routing.router import BudgetExhausted, Router
from orxaq_grpc.routing.types import (
    Constraints,
    Decision,
    Objective,
    Profile,
    RouteRequest,
    Strategy,
    Task,
)
from orxaq_grpc.service import servicer
from orxaq_grpc.store import SqliteStore
from orxaq_grpc.vocabulary import RequestInvalid
from tests.conftest import CLI, CONFIG_DIR, FakeClock, LoopbackServer, set_toml

NOON = 1_800_000_000.0 - 1_800_000_000.0 % 86_400 + 43_200  # a UTC noon
LONG = "Walk through the module, explain each public function and note what the tests miss. " * 12


def mixed_requests() -> list[RouteRequest]:
    """Lanes, objectives, profiles, strong-or-weak, named routers, requested models, filters,
    explain, and invalid requests, interleaved."""
    out: list[RouteRequest] = []
    for i in range(36):
        lane = ("codex", "gemini", "claude", "local")[i % 4]
        task = Task(
            id=f"t{i}",
            kind=("", "test", "architecture", "docs", "")[i % 5],
            title=f"Fix the flaky scheduler test {i}" if i % 3 else f"Security review of the login flow {i}",
            prompt=LONG[: 200 + 37 * i],
            input_tokens=(0, 4_000, 150_000)[i % 3],
            output_tokens=(0, 1_500)[i % 2],
            value_usd=(None, 30.0, 2.0)[i % 3] if i % 4 != 3 else None,
            difficulty=80.0 if i % 7 == 0 else None,
        )
        out.append(
            RouteRequest(
                lane=lane,
                task=task,
                objective=(Objective.UNSPECIFIED, Objective.QUALITY)[i % 6 == 5],
                profile=(Profile.UNSPECIFIED, Profile.STRONG, Profile.FAST)[i % 3],
                requested_model=("", "claude-haiku-5-5", "no-such-model", "")[i % 4] if i % 5 == 1 else "",
                constraints=Constraints(
                    max_cost_usd=(None, 0.0005, 2.0)[i % 3] if i % 4 == 2 else None,
                    required_capabilities=("vision",) if i % 9 == 4 else (),
                ),
                explain=i % 8 == 0,
                router="router-learned-0.6" if i % 10 == 3 else "",
            )
        )
    out.insert(5, RouteRequest(lane="codex", task=Task(title="bad", input_tokens=-1)))
    out.insert(17, RouteRequest(lane="nowhere", task=Task(title="unknown lane")))
    out.insert(23, RouteRequest(lane="gemini", constraints=Constraints(min_quality=150.0)))
    return out


@dataclasses.dataclass
class World:
    """A service without the transport: its own ledger, clocks and breakers."""

    live: LiveRouter
    outcomes: Outcomes
    workflow: RoutingWorkflow
    monotonic: FakeClock


@pytest.fixture
def world(tmp_path: Path, kernel: type) -> Iterator[Callable[[Config], World]]:
    stores: list[SqliteStore] = []

    def make(config: Config) -> World:
        counter = iter(range(1_000_000))
        live = LiveRouter(Router(config, new_id=lambda: f"d{next(counter)}", kernel=kernel))
        store = SqliteStore(tmp_path / f"world{len(stores)}", 31, clock=FakeClock(NOON))
        stores.append(store)
        monotonic = FakeClock(5_000.0)
        outcomes = Outcomes(live, store, FakeClock(NOON), monotonic)
        return World(live, outcomes, RoutingWorkflow(live, outcomes), monotonic)

    yield make
    for store in stores:
        store.close()


def singles(w: World, requests: list[RouteRequest]) -> list[Decision | Exception]:
    found: list[Decision | Exception] = []
    for request in requests:
        try:
            found.append(w.workflow.route(request, lambda d: d, []))
        except (RequestInvalid, BudgetExhausted) as exc:
            found.append(exc)
    return found


def batch(w: World, requests: list[RouteRequest]) -> list[Decision | Exception | None]:
    return w.workflow.route_batch([(r, []) for r in requests], lambda d: d, lambda answers: answers)


def same(a: Decision | Exception | None, b: Decision | Exception | None) -> None:
    """Equal but for the decision id (and the ids refusals carry)."""
    if isinstance(a, Decision):
        assert isinstance(b, Decision)
        assert dataclasses.replace(a, decision_id="") == dataclasses.replace(b, decision_id="")
    elif isinstance(a, RequestInvalid):
        assert isinstance(b, RequestInvalid)
        assert a.violations == b.violations
    else:
        assert isinstance(a, BudgetExhausted) and isinstance(b, BudgetExhausted)
        assert (a.lane, a.input_tokens, a.output_tokens) == (b.lane, b.input_tokens, b.output_tokens)


def with_policy(config: Config, **sections: dict[str, object]) -> Config:
    policy = config.policy
    for name, fields in sections.items():
        policy = dataclasses.replace(policy, **{name: dataclasses.replace(getattr(policy, name), **fields)})
    return dataclasses.replace(config, policy=policy)


def half_open(w: World, model: str, provider: str) -> None:
    """The model's circuit opened by five server errors, then half-open with one probe."""
    for n in range(5):
        w.outcomes.breakers.record(model, provider, Outcome.SERVER_ERROR, 0.0, f"x{n}")
    assert model in w.outcomes.blocked()[0]
    w.monotonic.now += w.live.current.config.policy.breakers.open_s + 1
    assert model not in w.outcomes.blocked()[0]


@pytest.mark.parametrize("on_exhausted", ["static_fallback", "error"])
def test_a_batch_decides_as_single_routes_would(
    shipped_config: Config, world: Callable[[Config], World], on_exhausted: str
) -> None:
    # Budgets that run out part way through: later requests see what earlier ones reserved.
    config = with_policy(
        shipped_config,
        budgets={"daily_usd": 0.8, "lane_daily_usd": {"claude": 0.5}, "on_exhausted": on_exhausted},
    )
    requests = mixed_requests()
    one, many = world(config), world(config)
    # The model the first codex request scores best: half-open with one probe in both services.
    first = next(
        r for r in requests if r.lane == "codex" and not r.task.value_usd and r.task.input_tokens >= 0
    )
    probed = Router(config).route(first)
    for w in (one, many):
        half_open(w, probed.model, probed.provider)

    expected = singles(one, requests)
    got = batch(many, requests)

    assert len(got) == len(expected)
    for a, b in zip(expected, got, strict=True):
        same(a, b)
    decided = [d for d in expected if isinstance(d, Decision)]
    # The batch covered what it claims to: every kind of answer, and the guards moving under it.
    assert {d.strategy for d in decided} >= {
        Strategy.SCORED,
        Strategy.STRONG_OR_WEAK,
        Strategy.STATIC_FALLBACK,
    }
    assert sum(isinstance(e, RequestInvalid) for e in expected) == 3
    assert sum(d.model == probed.model for d in decided) >= 1  # the probe was taken once ...
    assert any("circuit_open" in d.filter_summary for d in decided)  # ... and then it blocked
    # Budgets ran low mid-batch: models filtered for budget, and claude (no zero-cost model to fall
    # back on) refused, whatever on_exhausted says.
    assert any("budget" in d.filter_summary for d in decided)
    assert any(isinstance(e, BudgetExhausted) for e in expected)
    assert [b.reserved_usd for b in one.outcomes.budgets.views()] == [
        b.reserved_usd for b in many.outcomes.budgets.views()
    ]
    assert one.outcomes.breakers.views() == many.outcomes.breakers.views()


def test_a_batch_closed_before_its_answer_gives_back_the_probe_its_decision_took(
    shipped_config: Config, world: Callable[[Config], World]
) -> None:
    """A call cancelled mid-batch (its deadline, the client gone): the lane never gets the decisions
    made so far, so the half-open circuit's only probe one of them took is free again at once, as is
    the budget they reserved."""
    config = with_policy(shipped_config, budgets={"daily_usd": 100.0})
    w = world(config)
    requests = [RouteRequest(lane="codex", task=Task(title=f"Fix the flaky test {i}")) for i in range(4)]
    probed = Router(config).route(requests[0])
    half_open(w, probed.model, probed.provider)
    steps = w.workflow.route_batch_steps([(r, []) for r in requests], lambda d: d, lambda a: a, every=1)
    for _ in steps:
        if probed.model in w.outcomes.blocked()[0]:
            break  # a decision of the batch took the probe
    assert probed.model in w.outcomes.blocked()[0]
    steps.close()
    assert probed.model not in w.outcomes.blocked()[0]
    assert sum(b.reserved_usd for b in w.outcomes.budgets.views()) == 0.0


def test_a_batch_is_decided_on_one_config_though_a_reload_lands_mid_batch(
    shipped_config: Config, world: Callable[[Config], World]
) -> None:
    w = world(shipped_config)
    other = w.live.current.reconfigured(dataclasses.replace(shipped_config, version="reloaded"))
    requests = [RouteRequest(lane="codex", task=Task(title=f"task {i}")) for i in range(4)]
    delivered: list[Decision] = []

    def deliver(decision: Decision) -> Decision:
        delivered.append(decision)
        w.live.current = other  # as LiveRouter.reload swaps it, from another thread, after the first
        return decision

    w.workflow.route_batch([(r, []) for r in requests], deliver, lambda answers: answers)
    assert [d.config_version for d in delivered] == [shipped_config.version] * 4
    assert w.workflow.route(requests[0], lambda d: d, []).config_version == "reloaded"


def test_a_batch_that_cannot_be_answered_frees_every_reservation(
    shipped_config: Config, world: Callable[[Config], World]
) -> None:
    w = world(with_policy(shipped_config, budgets={"daily_usd": 100.0}))
    requests = [RouteRequest(lane="codex", task=Task(title=f"task {i}")) for i in range(3)]

    def too_large(answers: list[Any]) -> None:
        assert sum(b.reserved_usd for b in w.outcomes.budgets.views()) > 0
        raise servicer.AnswerTooLarge("too large")

    with pytest.raises(servicer.AnswerTooLarge):
        w.workflow.route_batch([(r, []) for r in requests], lambda d: d, too_large)
    assert sum(b.reserved_usd for b in w.outcomes.budgets.views()) == 0


def test_a_ledger_gone_mid_batch_fails_the_rest_alike_and_logs_it_once(
    shipped_config: Config, world: Callable[[Config], World], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every item after the ledger went answers UNAVAILABLE, as a single Route would; the log has the
    first failure in full and one line counting the others, not one error per item."""
    w = world(shipped_config)
    handlers = servicer.RoutingHandlers(w.workflow, str(tmp_path))
    store = w.outcomes.store
    write = store.record_decision
    written = iter(range(1_000_000))

    def closing_at_the_tenth(record: Any) -> None:
        if next(written) == 10:
            store.close()
        write(record)

    store.record_decision = closing_at_the_tenth  # type: ignore[method-assign]
    message = pb.RouteBatchRequest(
        requests=[
            pb.RouteRequest(lane="codex", task=pb.Task(title=f"Fix the flaky test {i}")) for i in range(50)
        ]
    )
    with caplog.at_level(logging.ERROR):
        answer = handlers.route_batch(message)
    codes = [r.error.code if r.HasField("error") else 0 for r in answer.results]
    assert codes == [0] * 10 + [grpc.StatusCode.UNAVAILABLE.value[0]] * 40
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2, errors
    assert "the ledger refused" in errors[0]
    assert errors[1].startswith(
        "RouteBatch: 39 more items failed as this one did: RouteBatch: the ledger refused"
    )


def test_a_batch_goes_in_steps_and_one_closed_early_frees_its_reservations(
    shipped_config: Config, world: Callable[[Config], World]
) -> None:
    w = world(with_policy(shipped_config, budgets={"daily_usd": 100.0}))
    requests = [(RouteRequest(lane="codex", task=Task(title=f"task {i}")), []) for i in range(5)]
    steps = w.workflow.route_batch_steps(requests, lambda d: d, lambda answers: answers, every=2)
    next(steps)  # two requests prepared: nothing decided yet; the loop may serve other calls now
    next(steps)  # four prepared
    assert sum(b.reserved_usd for b in w.outcomes.budgets.views()) == 0
    next(steps)  # two decided, reserved and logged
    assert sum(b.reserved_usd for b in w.outcomes.budgets.views()) > 0
    steps.close()  # the call went away
    assert sum(b.reserved_usd for b in w.outcomes.budgets.views()) == 0
    steps = w.workflow.route_batch_steps(requests, lambda d: d, lambda answers: answers, every=2)
    assert sum(1 for _ in steps) == 4  # after 2 and 4 prepared, after 2 and 4 decided


# -- over a live loopback server -----------------------------------------------------------------

CODEX_TOKEN = "codex-batch-token-0123456789"
OPERATOR_TOKEN = "operator-batch-token-0123456789"


def config_dir(root: Path, *, guarded: bool, max_items: int = 1000, burst: int = 2000) -> Path:
    root.mkdir(parents=True)
    for source in CONFIG_DIR.glob("*.toml"):
        (root / source.name).write_bytes(source.read_bytes())
    set_toml(root / "policy.toml", "limits", "max_batch_items", str(max_items))
    set_toml(root / "policy.toml", "ceilings", "lane_burst", str(burst))
    set_toml(root / "policy.toml", "ceilings", "lane_requests_per_s", "0.01")
    if guarded:
        policy = root / "policy.toml"
        policy.write_text(
            policy.read_text()
            + f"""
[[access.credentials]]
name = "codex-runner"
role = "lane"
lane = "codex"
sha256 = "{token_digest(CODEX_TOKEN).hex()}"

[[access.credentials]]
name = "supervisor"
role = "operator"
sha256 = "{token_digest(OPERATOR_TOKEN).hex()}"
"""
        )
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackServer]:
    root = tmp_path_factory.mktemp("open")
    running = LoopbackServer(
        LiveRouter.from_directory(config_dir(root / "config", guarded=False)), root / "data"
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: LoopbackServer) -> Iterator[RoutingClient]:
    with RoutingClient(server.address, timeout_s=30) as c:
        yield c


def request(lane: str = "codex", title: str = "Fix the flaky test", **task: Any) -> pb.RouteRequest:
    return pb.RouteRequest(lane=lane, task=pb.Task(title=title, **task))


def test_a_bad_request_mid_batch_is_its_own_error_naming_the_field(client: RoutingClient) -> None:
    requests = [request(title=f"task {i}") for i in range(5)]
    requests[2] = request(title="bad", input_tokens=-3)
    requests[3] = pb.RouteRequest(
        lane="codex", task=pb.Task(title="ok"), constraints=pb.Constraints(max_latency_s=-1)
    )
    results = client.route_batch(requests)
    assert [type(r) for r in results] == [
        pb.RouteDecision,
        pb.RouteDecision,
        pb.RouteError,
        pb.RouteError,
        pb.RouteDecision,
    ]
    bad = results[2]
    assert isinstance(bad, pb.RouteError)
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("task.input_tokens", "must be 0 (estimate) or more, got -3")
    ]
    assert bad.message == "invalid RouteRequest: task.input_tokens: must be 0 (estimate) or more, got -3"
    assert [v.field for v in results[3].field_violations] == ["constraints.max_latency_s"]  # type: ignore[union-attr]
    # The same request alone names the same field the same way.
    with pytest.raises(CallFailed) as alone:
        client.route(requests[2])
    assert alone.value.violations == [("task.input_tokens", "must be 0 (estimate) or more, got -3")]
    ids = [r.decision_id for r in results if isinstance(r, pb.RouteDecision)]
    assert len(set(ids)) == 3 and all(len(i) == 32 for i in ids)


def test_the_call_is_refused_only_when_empty_or_over_the_limit(client: RoutingClient) -> None:
    with pytest.raises(CallFailed) as empty:
        client.route_batch([])
    assert empty.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert empty.value.violations == [("requests", "has no requests; at least 1")]
    with pytest.raises(CallFailed) as over:
        client.route_batch([request(title=str(i)) for i in range(1001)])
    assert over.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert over.value.violations == [("requests", "has 1001 requests; at most 1000")]
    assert len(client.route_batch([request(title=str(i)) for i in range(1000)])) == 1000


def test_batch_decisions_match_single_routes(client: RoutingClient) -> None:
    requests = [
        request("codex", "Add a security review step", input_tokens=30_000, output_tokens=4_000),
        request("claude", "Split the billing service", kind="refactor", input_tokens=42_000),
        request("gemini", "Fix a typo in the README"),
        pb.RouteRequest(
            lane="claude", task=pb.Task(title="Port the parser"), requested_model="claude-haiku-5-5"
        ),
        pb.RouteRequest(lane="codex", task=pb.Task(title="x"), constraints=pb.Constraints(max_cost_usd=1e-9)),
        pb.RouteRequest(lane="local", task=pb.Task(title="Summarise the log", prompt=LONG), explain=True),
    ]
    batched = client.route_batch(requests)
    for one, alone in zip(batched, (client.route(r) for r in requests), strict=True):
        assert isinstance(one, pb.RouteDecision)
        assert one.decision_id != alone.decision_id
        one.decision_id = alone.decision_id
        assert one == alone


def test_batch_decisions_count_in_economics_and_can_be_reported(client: RoutingClient) -> None:
    def decisions(lane: str) -> int:
        today = next(w for w in client.economics().windows if w.window == "today")
        return next((n.figures.decisions for n in today.lanes if n.name == lane), 0)

    before = decisions("gemini")
    results = client.route_batch(
        [request("gemini", f"Write docs {i}") for i in range(7)] + [request("nowhere")]
    )
    assert isinstance(results[-1], pb.RouteError)
    assert decisions("gemini") == before + 7
    decision = results[3]
    assert isinstance(decision, pb.RouteDecision)
    report = pb.ReportRequest(
        decision_id=decision.decision_id,
        lane="gemini",
        provider=decision.provider,
        model=decision.model,
        input_tokens=decision.input_tokens,
        output_tokens=decision.output_tokens,
        latency_s=3.0,
        outcome=pb.OUTCOME_SUCCESS,
        validation_passed=True,
    )
    ack = client.report(report)
    assert ack.decision_known and not ack.duplicate and ack.cost_usd > 0
    assert client.report(report).duplicate
    shown = {d.decision_id for d in client.health().recent_decisions}
    assert decision.decision_id in shown


def test_the_answer_limit_is_what_the_server_sends_at_most() -> None:
    from orxaq_grpc.service.server import MAX_MESSAGE_BYTES

    assert servicer.MAX_ANSWER_BYTES == MAX_MESSAGE_BYTES


def test_an_answer_over_the_send_limit_refuses_the_call(
    client: RoutingClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servicer, "MAX_ANSWER_BYTES", 10_000)
    small = client.route_batch([request(title=f"small {i}") for i in range(3)])
    assert all(isinstance(r, pb.RouteDecision) for r in small)
    with pytest.raises(CallFailed) as caught:
        client.route_batch(
            [pb.RouteRequest(lane="codex", task=pb.Task(title=f"t{i}"), explain=True) for i in range(20)]
        )
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "over the 10000 bytes an answer may have" in caught.value.details


def test_a_batch_span_says_what_the_batch_held(tmp_path: Path) -> None:
    from tests.otlp_receiver import GrpcReceiver
    from tests.test_telemetry import SERVICE, start_traced

    receiver = GrpcReceiver()
    traced = start_traced(receiver, "grpc", tmp_path / "data")
    try:
        with RoutingClient(traced.address) as client:
            results = client.route_batch([request("gemini", "a"), request("nowhere"), request("codex", "b")])
        assert [isinstance(r, pb.RouteDecision) for r in results] == [True, False, True]
        span = receiver.span_named(f"{SERVICE}/RouteBatch")
        assert span.attributes["rpc.response.status_code"] == "OK"
        assert span.attributes["orxaq.batch.requests"] == 3
        assert span.attributes["orxaq.batch.decisions"] == 2
        assert span.attributes["orxaq.batch.lanes"] == ("codex", "gemini")
    finally:
        traced.stop()
        receiver.stop()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackServer]:
    root = tmp_path_factory.mktemp("guarded")
    config = config_dir(root / "config", guarded=True, max_items=50, burst=6)
    running = LoopbackServer(LiveRouter.from_directory(config), root / "data")
    yield running
    running.stop()


def as_(server: LoopbackServer, token: str | None) -> RoutingClient:
    return RoutingClient(Connection(server.address, token=token), timeout_s=30)


def test_a_batch_needs_a_lane_or_operator_token(guarded: LoopbackServer) -> None:
    with as_(guarded, None) as anonymous, pytest.raises(CallFailed) as caught:
        anonymous.route_batch([request()])
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    with as_(guarded, "not-a-token") as stranger, pytest.raises(CallFailed) as caught:
        stranger.route_batch([request()])
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_a_lane_token_routes_its_own_lane_and_each_request_counts_against_its_rate(
    guarded: LoopbackServer,
) -> None:
    # lane_burst 6 at 0.01 a second: six requests of codex's, then none.
    with as_(guarded, CODEX_TOKEN) as codex:
        results = codex.route_batch(
            [request("codex"), request("claude"), request("codex"), request("gemini")]
        )
        assert [type(r) for r in results] == [
            pb.RouteDecision,
            pb.RouteError,
            pb.RouteDecision,
            pb.RouteError,
        ]
        for other in (results[1], results[3]):
            assert isinstance(other, pb.RouteError)
            assert other.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
            assert other.reason == "OTHER_LANE"
            assert "'codex-runner' speaks for lane 'codex'" in other.message
        # Two of the burst are gone; four are left for these six.
        results = codex.route_batch([request("codex", f"t{i}") for i in range(6)])
        assert [isinstance(r, pb.RouteDecision) for r in results] == [True] * 4 + [False] * 2
        for over in results[4:]:
            assert isinstance(over, pb.RouteError)
            assert over.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            assert over.quota_subject == "lane codex request rate"
            assert over.retry_after_s > 0
        with pytest.raises(CallFailed) as alone:  # and a single Route finds the rate spent too
            codex.route(request("codex"))
        assert alone.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        # A refused call takes nothing: over the size limit, no request's token is spent.
        with pytest.raises(CallFailed) as over_limit:
            codex.route_batch([request("codex")] * 51)
        assert over_limit.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with as_(guarded, OPERATOR_TOKEN) as operator:  # an operator speaks for every lane
        results = operator.route_batch([request("claude"), request("gemini")])
        assert all(isinstance(r, pb.RouteDecision) for r in results)


def test_route_batch_from_the_command_line(server: LoopbackServer, tmp_path: Path) -> None:
    lines = [
        {"lane": "codex", "title": "Fix the flaky test", "label": "ci", "input-tokens": 1200},
        {"lane": "claude", "task": {"title": "Threat-model the login flow", "input_tokens": "9000"}},
        {"title": "No lane here: --lane gives it", "objective": "cost_speed"},
        {"lane": "gemini", "title": "bad", "max_cost": -1},
    ]
    batch_file = tmp_path / "tasks.jsonl"
    batch_file.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    run = subprocess.run(
        [*CLI, "route-batch", str(batch_file), "--address", server.address, "--lane", "gemini"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1, run.stderr  # one request got an error
    out = [json.loads(line) for line in run.stdout.splitlines()]
    assert [o["line"] for o in out] == [1, 2, 3, 4]
    assert out[0]["decision"]["lane"] == "codex" and out[0]["decision"]["input_tokens"] == "1200"
    assert out[1]["decision"]["objective"] == "OBJECTIVE_QUALITY"
    assert (
        out[2]["decision"]["lane"] == "gemini"
        and out[2]["decision"]["objective_rule"] == "OBJECTIVE_RULE_EXPLICIT"
    )
    error = out[3]["error"]
    assert error["status"] == "INVALID_ARGUMENT" and error["code"] == 3
    assert error["field_violations"][0]["field"] == "constraints.max_cost_usd"

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"lane": "codex", "titel": "typo"}\nnot json\n{"lane": "codex", "input_tokens": 1.5}\n')
    refused = subprocess.run(
        [*CLI, "route-batch", str(bad), "--address", server.address],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.splitlines() == [
        f"orxaq-grpc: {bad}:1: titel: is not a field `orxaq-grpc route` takes",
        f"orxaq-grpc: {bad}:2: line: is not JSON: Expecting value at column 1",
        f"orxaq-grpc: {bad}:3: input_tokens: must be a whole number",
    ]
    proto = tmp_path / "proto.jsonl"
    proto.write_text('{"lane": "codex", "task": {"titel": "typo"}}\n')
    refused = subprocess.run(
        [*CLI, "route-batch", str(proto), "--address", server.address],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert refused.stderr.strip() == f"orxaq-grpc: {proto}:1: task.titel: is not a field of RouteRequest"


@pytest.mark.parametrize("value", ["0", "100001", "1.5", '"many"'])
def test_max_batch_items_is_validated_like_the_other_limits(tmp_path: Path, value: str) -> None:
    from orxaq_grpc.config.load import ConfigError, load_config

    directory = config_dir(tmp_path / "config", guarded=False)
    set_toml(directory / "policy.toml", "limits", "max_batch_items", value)
    with pytest.raises(ConfigError, match=r"policy\.toml: limits\.max_batch_items: "):
        load_config(directory)
    set_toml(directory / "policy.toml", "limits", "max_batch_items", "7")
    assert load_config(directory).policy.limits.max_batch_items == 7
