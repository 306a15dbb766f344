"""Traces and metrics as an OTLP backend receives them: the service exports to a real receiver
(the collector's trace and metrics services, over gRPC or HTTP) and the tests read what arrived."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.sdk.trace import TracerProvider

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.client import CallFailed, RoutingClient
from orxaq_grpc.render import enum_word
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.telemetry.export import TelemetryConfigError, TelemetrySettings, configure
from tests.conftest import CONFIG_DIR, LoopbackServer, ServerProcess, set_toml
from tests.otlp_receiver import GrpcReceiver, HttpReceiver, Received, ReceivedSpan, otlp_env
from tests.test_reports import report_for
from tests.test_scale_service import request as scale_request

SERVICE = "orxaq.routing.v1.RoutingService"
RECONNECT_ATTEMPTS = 30
ROUTE = pb.RouteRequest(
    lane="codex", task=pb.Task(id="t-1", title="Add a retry to the upload worker", input_tokens=9_000)
)


def start_traced(
    receiver: Received, protocol: str, data_dir: Path, config: Path = CONFIG_DIR, **env: str
) -> LoopbackServer:
    """A server exporting to `receiver`; the variables are read while the providers are built."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in otlp_env(receiver.endpoint, protocol, **env).items():
            patch.setenv(name, value)
        telemetry = configure()
    return LoopbackServer(LiveRouter.from_directory(config), data_dir, telemetry)


@pytest.fixture(scope="module")
def receiver() -> Iterator[GrpcReceiver]:
    running = GrpcReceiver()
    yield running
    running.stop()


@pytest.fixture
def traced(receiver: GrpcReceiver, tmp_path: Path) -> Iterator[LoopbackServer]:
    server = start_traced(receiver, "grpc", tmp_path / "data")
    yield server
    server.stop()


def by_decision(decision_id: str) -> Callable[[ReceivedSpan], bool]:
    return lambda span: span.attributes.get("orxaq.decision.id") == decision_id


def test_a_route_span_joins_the_lanes_trace_and_says_what_was_decided(
    traced: LoopbackServer, receiver: GrpcReceiver
) -> None:
    lane_tracer = TracerProvider().get_tracer("lane")
    with lane_tracer.start_as_current_span("lane task") as lane_span, RoutingClient(traced.address) as client:
        decision = client.route(ROUTE)

    received = receiver.span_named(f"{SERVICE}/Route", by_decision(decision.decision_id))
    lane = lane_span.get_span_context()
    assert received.span.trace_id == lane.trace_id.to_bytes(16, "big")
    assert received.span.parent_span_id == lane.span_id.to_bytes(8, "big")
    assert received.span.kind == Span.SPAN_KIND_SERVER
    assert received.resource["service.name"] == "orxaq-grpc"
    assert received.attributes == {
        "rpc.system.name": "grpc",
        "rpc.method": f"{SERVICE}/Route",
        "rpc.response.status_code": "OK",
        "gen_ai.provider.name": decision.provider,
        "gen_ai.request.model": decision.model,
        "orxaq.lane": "codex",
        "orxaq.decision.id": decision.decision_id,
        "orxaq.objective": enum_word(pb.Objective, decision.objective),
        "orxaq.objective.rule": enum_word(pb.ObjectiveRule, decision.objective_rule),
        "orxaq.profile": enum_word(pb.Profile, decision.profile),
        "orxaq.strategy": "scored",
        "orxaq.fallback.reason": "none",
        "orxaq.estimated_cost_usd": pytest.approx(decision.estimated_cost_usd),
        "orxaq.estimated_input_tokens": 9_000,
        "orxaq.estimated_output_tokens": decision.output_tokens,
        "orxaq.candidates": decision.eligible_count,
        "orxaq.config.version": decision.config_version,
        "orxaq.learning.mode": "apply",
    }


def test_a_call_without_a_lane_trace_starts_its_own(traced: LoopbackServer, receiver: GrpcReceiver) -> None:
    with RoutingClient(traced.address) as client:
        decision = client.route(ROUTE)
    received = receiver.span_named(f"{SERVICE}/Route", by_decision(decision.decision_id))
    assert received.span.parent_span_id == b""
    assert received.span.trace_id != bytes(16)


def test_a_report_span_carries_usage_cost_and_outcome(traced: LoopbackServer, receiver: GrpcReceiver) -> None:
    with RoutingClient(traced.address) as client:
        decision = client.route(ROUTE)
        ack = client.report(report_for(decision, outcome=pb.OUTCOME_BAD_OUTPUT, validation_passed=False))

    attributes = receiver.span_named(f"{SERVICE}/Report", by_decision(decision.decision_id)).attributes
    assert attributes["gen_ai.usage.input_tokens"] == 9_000
    assert attributes["gen_ai.usage.output_tokens"] == 1_500
    assert attributes["gen_ai.provider.name"] == decision.provider
    assert attributes["gen_ai.response.model"] == decision.model
    assert attributes["orxaq.cost_usd"] == pytest.approx(ack.cost_usd)
    assert ack.cost_usd > 0
    assert attributes["orxaq.outcome"] == "bad_output"
    assert attributes["orxaq.validation_passed"] is False
    assert attributes["orxaq.report.new"] is True


def test_a_scale_span_carries_the_npv_decision_and_reasons(
    traced: LoopbackServer, receiver: GrpcReceiver
) -> None:
    with RoutingClient(traced.address) as client:
        grow = client.scale(scale_request(request_id="grow"))
        losing = client.scale(scale_request(request_id="losing", cost=pb.Flows(once=pb.CashFlow(usd=5_000))))

    for decision in (grow, losing):
        attributes = receiver.span_named(
            f"{SERVICE}/Scale",
            lambda s, d=decision: s.attributes.get("orxaq.scale.npv_usd") == d.marginal_npv_usd,
        ).attributes
        assert attributes["orxaq.scale.target"] == "codex"
        assert attributes["orxaq.scale.action"] == enum_word(pb.ScaleAction, decision.action)
        blocking = tuple(enum_word(pb.ScaleBlock, b.block) for b in decision.blocking)
        assert attributes["orxaq.scale.blocking"] == blocking
    assert grow.action == pb.SCALE_ACTION_SCALE_UP
    assert losing.action == pb.SCALE_ACTION_HOLD
    assert pb.SCALE_BLOCK_NPV_NOT_POSITIVE in [b.block for b in losing.blocking]


def test_a_rejected_request_is_recorded_with_its_real_status(
    traced: LoopbackServer, receiver: GrpcReceiver
) -> None:
    lane_tracer = TracerProvider().get_tracer("lane")
    with (
        lane_tracer.start_as_current_span("bad call") as lane_span,
        RoutingClient(traced.address) as client,
        pytest.raises(CallFailed) as refused,
    ):
        client.route(pb.RouteRequest(lane="no-such-lane", task=pb.Task(title="x")))
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT

    trace_id = lane_span.get_span_context().trace_id.to_bytes(16, "big")
    received = receiver.span_named(f"{SERVICE}/Route", lambda s: s.span.trace_id == trace_id)
    assert received.attributes["rpc.response.status_code"] == "INVALID_ARGUMENT"
    assert "error.type" not in received.attributes  # the caller's error, not the server's
    assert received.span.status.code == Status.STATUS_CODE_UNSET


def test_metrics_arrive_with_their_values(tmp_path: Path) -> None:
    """A receiver and a server of their own: every counter starts at zero and nobody else's lands."""
    receiver = GrpcReceiver()
    server = start_traced(receiver, "grpc", tmp_path / "data", OTEL_SERVICE_NAME="metrics-test")
    try:
        with RoutingClient(server.address) as client:
            decisions = [client.route(ROUTE) for _ in range(3)]
            acks = [
                client.report(report_for(decisions[0])),
                client.report(report_for(decisions[1], outcome=pb.OUTCOME_RATE_LIMITED)),
            ]
            client.report(report_for(decisions[0]))  # a duplicate counts nothing
            scaled = client.scale(scale_request())
        first = decisions[0]
        assert all(d.model == first.model for d in decisions)
        where = {
            "orxaq.lane": "codex",
            "gen_ai.provider.name": first.provider,
            "gen_ai.request.model": first.model,
        }

        def value(metric: str, **extra: object) -> float | None:
            return receiver.latest(metric).get(frozenset({**where, **extra}.items()))

        receiver.wait_for(
            lambda: value("orxaq.reports", **{"orxaq.outcome": "rate_limited"}) == 1, "the reports counted"
        )
        objective = enum_word(pb.Objective, first.objective)
        assert (
            value("orxaq.route.decisions", **{"orxaq.strategy": "scored", "orxaq.objective": objective}) == 3
        )
        assert value("orxaq.reports", **{"orxaq.outcome": "success"}) == 1
        assert value("orxaq.report.tokens", **{"gen_ai.token.type": "input"}) == 18_000
        assert value("orxaq.report.tokens", **{"gen_ai.token.type": "output"}) == 3_000
        assert value("orxaq.report.spend") == pytest.approx(sum(a.cost_usd for a in acks))
        assert value("orxaq.route.estimated_tokens", **{"gen_ai.token.type": "input"}) == 27_000
        assert value("orxaq.route.estimated_cost") == pytest.approx(
            sum(d.estimated_cost_usd for d in decisions)
        )
        assert receiver.latest("orxaq.route.fallbacks") == {}

        scale = {
            "orxaq.scale.target": "codex",
            "orxaq.scale.action": enum_word(pb.ScaleAction, scaled.action),
        }
        assert receiver.latest("orxaq.scale.decisions") == {frozenset(scale.items()): 1}

        durations = receiver.latest("rpc.server.call.duration")
        route = {
            "rpc.system.name": "grpc",
            "rpc.method": f"{SERVICE}/Route",
            "rpc.response.status_code": "OK",
        }
        report = {**route, "rpc.method": f"{SERVICE}/Report"}
        assert durations[frozenset(route.items())] == 3  # a histogram's point: its count
        assert durations[frozenset(report.items())] == 3

        states = receiver.latest("orxaq.detection.state")
        overall = {k: v for k, v in states.items() if ("orxaq.scope", "overall") in k}
        assert sorted(overall.values()) == [0, 0, 0, 1]  # one current state among the four
        codex = {dict(k)["orxaq.state"]: v for k, v in states.items() if ("orxaq.name", "codex") in k}
        assert codex == {"healthy": 1, "idle": 0, "elevated_fallback": 0, "degraded": 0}
        assert receiver.latest("orxaq.stop_loss.active") == {frozenset(): 0}

        resource = receiver.metric_requests[-1].resource_metrics[0].resource
        names = {kv.key: kv.value.string_value for kv in resource.attributes}
        assert names["service.name"] == "metrics-test"  # OTEL_SERVICE_NAME wins over the default
    finally:
        server.stop()
        receiver.stop()


def test_budgets_are_gauges(tmp_path: Path, config_dir: Path) -> None:
    set_toml(config_dir / "policy.toml", "budgets", "daily_usd", "50.0")
    receiver = GrpcReceiver()
    server = start_traced(receiver, "grpc", tmp_path / "data", config_dir)
    try:
        with RoutingClient(server.address) as client:
            decision = client.route(ROUTE)
            ack = client.report(report_for(decision))
        overall = frozenset({"orxaq.scope": "overall", "orxaq.name": ""}.items())
        left = receiver.wait_for(
            lambda: (receiver.latest("orxaq.budget.remaining").get(overall) or 50.0) < 50.0 or None,
            "the budget spent",
        )
        assert left
        assert receiver.latest("orxaq.budget.remaining")[overall] == pytest.approx(50.0 - ack.cost_usd)
        assert receiver.latest("orxaq.budget.used")[overall] == pytest.approx(ack.cost_usd / 50.0)
    finally:
        server.stop()
        receiver.stop()


def test_otlp_over_http(tmp_path: Path) -> None:
    receiver = HttpReceiver()
    server = start_traced(receiver, "http/protobuf", tmp_path / "data")
    try:
        with RoutingClient(server.address) as client:
            decision = client.route(ROUTE)
        span = receiver.span_named(f"{SERVICE}/Route", by_decision(decision.decision_id))
        assert span.attributes["gen_ai.request.model"] == decision.model
        receiver.wait_for(lambda: receiver.points("orxaq.route.decisions"), "the decision counter")
    finally:
        server.stop()
        receiver.stop()


def comparable(decision: pb.RouteDecision) -> tuple:
    return (decision.model, tuple(decision.alternatives), decision.estimated_cost_usd, decision.strategy)


def test_a_slow_collector_never_holds_routing_and_drops_are_counted(tmp_path: Path) -> None:
    receiver = GrpcReceiver()
    untraced = LoopbackServer(LiveRouter.from_directory(CONFIG_DIR), tmp_path / "untraced")
    server = start_traced(
        receiver, "grpc", tmp_path / "data", OTEL_BSP_MAX_QUEUE_SIZE="4", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="1"
    )
    try:
        with RoutingClient(untraced.address) as client:
            expected = comparable(client.route(ROUTE))
        receiver.hold()  # the collector accepts an export and sits on it
        with RoutingClient(server.address, timeout_s=5.0) as client:
            client.route(ROUTE)
            receiver.wait_for(receiver.waiting.is_set, "an export to hold")
            # The exporter is stuck inside an export: routing goes on, the queue overflows.
            assert {comparable(client.route(ROUTE)) for _ in range(40)} == {expected}
        receiver.release()
        dropped = receiver.wait_for(
            lambda: sum(
                p.value
                for p in receiver.points("otel.sdk.processor.span.processed")
                if p.attributes.get("error.type") == "queue_full"
            ),
            "a count of dropped spans",
        )
        assert 30 <= dropped <= 40  # a queue of 4 and one span in flight: the rest were dropped
    finally:
        receiver.release()
        server.stop()
        untraced.stop()
        receiver.stop()


def test_a_collector_that_is_down_changes_no_decision_and_is_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = GrpcReceiver()
    port = receiver.port
    receiver.stop()  # nothing listens there now
    untraced = LoopbackServer(LiveRouter.from_directory(CONFIG_DIR), tmp_path / "untraced")
    server = start_traced(receiver, "grpc", tmp_path / "data", OTEL_EXPORTER_OTLP_TIMEOUT="1")
    telemetry = server.telemetry
    assert telemetry is not None and telemetry.tracer_provider is not None
    try:
        with RoutingClient(untraced.address) as client:
            expected = comparable(client.route(ROUTE))
        with caplog.at_level(logging.INFO), RoutingClient(server.address) as client:
            for _ in range(3):
                assert {comparable(client.route(ROUTE)) for _ in range(5)} == {expected}
                telemetry.tracer_provider.force_flush()  # one failed export per round
            assert telemetry.watch.failures["traces"] >= 3
            failed = [r for r in caplog.records if "traces export" in r.getMessage()]
            assert len(failed) == 1, [r.getMessage() for r in failed]
            assert "failed" in failed[0].getMessage() and failed[0].levelno == logging.WARNING
            # The exporters' own per-batch retry messages are kept back, not logged.
            assert not [r for r in caplog.records if r.name.startswith("opentelemetry.exporter")]

            back = GrpcReceiver(port)  # the collector returns on the same port
            try:
                # The exporter's channel may still be backing off its reconnects: the spans of the
                # first calls after the return can be dropped, later ones arrive.
                for _ in range(RECONNECT_ATTEMPTS):
                    client.route(ROUTE)
                    telemetry.tracer_provider.force_flush()
                    if back.spans():
                        break
                back.wait_for(back.spans, "spans once it is back")
                assert any("works again" in r.getMessage() for r in caplog.records)
            finally:
                back.stop()
    finally:
        server.stop()
        untraced.stop()


@pytest.mark.parametrize(
    ("env", "traces", "metrics"),
    [
        ({}, "none", "none"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
            "otlp http/protobuf http://c:4318",
            "otlp http/protobuf http://c:4318",
        ),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "otlp grpc http://c:4317",
            "none",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc"},
            "otlp http/protobuf http://c:4317",
            "otlp grpc http://c:4317",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_METRICS_EXPORTER": "none"},
            "otlp http/protobuf http://c:4318",
            "none",
        ),
        ({"OTEL_TRACES_EXPORTER": "console"}, "console", "none"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, "none", "none"),
    ],
)
def test_settings_follow_the_standard_variables(env: dict[str, str], traces: str, metrics: str) -> None:
    settings = TelemetrySettings.from_env(env)
    assert (settings.traces.describe(), settings.metrics.describe()) == (traces, metrics)


def test_nothing_configured_means_no_providers() -> None:
    telemetry = configure({})
    assert (telemetry.tracer, telemetry.meter_provider) == (None, None)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "thrift"},
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        ),
    ],
)
def test_a_variable_it_cannot_honour_is_refused_by_name(env: dict[str, str], variable: str) -> None:
    with pytest.raises(TelemetryConfigError, match=variable):
        TelemetrySettings.from_env(env)


def test_the_served_process_exports_where_the_environment_says(
    serve: type[ServerProcess], receiver: GrpcReceiver
) -> None:
    server = serve(env=otlp_env(receiver.endpoint, "grpc", OTEL_SERVICE_NAME="lane-fleet-router"))
    server.wait_until_serving()
    with RoutingClient(server.address) as client:
        decision = client.route(ROUTE)
    span = receiver.span_named(f"{SERVICE}/Route", by_decision(decision.decision_id))
    assert span.resource["service.name"] == "lane-fleet-router"
    assert any(f"traces: otlp grpc {receiver.endpoint}" in line for line in server.log)


def test_serve_refuses_a_bad_telemetry_variable(serve: type[ServerProcess]) -> None:
    server = serve(env={"OTEL_TRACES_EXPORTER": "zipkin"})
    code, log = server.finish()
    assert code == 2
    assert "OTEL_TRACES_EXPORTER" in log and "zipkin" in log
