"""End to end over a real server on a loopback port: RPCs, health, reflection, errors."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.client import CallFailed, RoutingClient
from orxaq_grpc.outcomes.records import Outcome
from orxaq_grpc.routing import types
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.scale.types import ScaleAction, ScaleBlock
from orxaq_grpc.scoring import KIND as SERVING_KERNEL
from orxaq_grpc.service.server import SERVICE_NAME
from tests.conftest import CONFIG_DIR, LoopbackServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackServer]:
    running = LoopbackServer(LiveRouter.from_directory(CONFIG_DIR), tmp_path_factory.mktemp("data"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def channel(server: LoopbackServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as ch:
        yield ch


@pytest.fixture(scope="module")
def client(server: LoopbackServer) -> Iterator[RoutingClient]:
    with RoutingClient(server.address, timeout_s=10) as c:
        yield c


def test_route(client: RoutingClient) -> None:
    decision = client.route(
        pb.RouteRequest(
            lane="claude",
            task=pb.Task(id="T-1", title="Threat-model the authentication flow", prompt="..." * 300),
            explain=True,
        )
    )
    assert decision.lane == "claude"
    assert decision.model.startswith("claude-")
    assert decision.provider == "anthropic"
    assert decision.objective == pb.OBJECTIVE_QUALITY
    assert decision.objective_rule == pb.OBJECTIVE_RULE_KEYWORD
    assert decision.strategy == pb.STRATEGY_SCORED
    assert decision.fallback_reason == pb.FALLBACK_REASON_NONE
    assert decision.estimated_cost_usd > 0 and decision.estimated_latency_s > 0
    assert len(decision.decision_id) == 32
    assert decision.candidates[0].model == decision.model
    assert decision.rationale.startswith(decision.model)
    assert {f.filter for f in decision.filtered} >= {pb.FILTER_NOT_ALLOWED}


def test_health_rpc(client: RoutingClient) -> None:
    health = client.health()
    assert len(health.config_version) == 16
    assert health.uptime_s >= 0
    assert health.catalog_models >= 12 and 0 < health.enabled_models <= health.catalog_models
    assert health.lane_count == len(health.lanes) >= 3
    assert {lane.state for lane in health.lanes} <= {"idle", "healthy", "elevated_fallback", "degraded"}
    assert health.overall.scope == "overall" and health.overall.reason
    assert health.scoring_kernel == SERVING_KERNEL
    assert health.protobuf_backend == "upb"
    assert health.routing_enabled
    assert health.pid == os.getpid()  # served from this test process


def test_standard_health_check(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as caught:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_every_service_and_serves_route_without_protos(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    listed = {s.name for s in next(iter(responses)).list_services_response.service}
    assert listed == {SERVICE_NAME, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}

    # What grpcurl and buf curl do: fetch descriptors over reflection, build the request
    # dynamically, call Route. No generated code is used on this side.
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    method = pool.FindServiceByName(SERVICE_NAME).FindMethodByName("Route")
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(
        f"/{SERVICE_NAME}/Route",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    decision = call(request_class(lane="codex", task={"title": "fix the flaky test"}), timeout=5)
    assert decision.model and decision.rationale
    assert method.output_type.fields_by_name["estimated_cost_usd"].number == 12


def rejected(client: RoutingClient, request: pb.RouteRequest) -> CallFailed:
    with pytest.raises(CallFailed) as caught:
        client.route(request)
    return caught.value


def task(**fields: object) -> pb.Task:
    return pb.Task(title="t", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("request_message", "field", "words"),
    [
        (
            pb.RouteRequest(lane="cobol", task=task()),
            "lane",
            "unknown lane 'cobol'; known lanes: claude, codex",
        ),
        (pb.RouteRequest(task=task()), "lane", "is required"),
        (pb.RouteRequest(lane="codex", task=task(input_tokens=-1)), "task.input_tokens", "got -1"),
        (pb.RouteRequest(lane="codex", task=task(output_tokens=-9)), "task.output_tokens", "got -9"),
        (
            pb.RouteRequest(lane="codex", constraints=pb.Constraints(max_cost_usd=math.nan)),
            "constraints.max_cost_usd",
            "finite",
        ),
        (
            pb.RouteRequest(lane="codex", constraints=pb.Constraints(max_latency_s=math.inf)),
            "constraints.max_latency_s",
            "finite",
        ),
        (
            pb.RouteRequest(lane="codex", constraints=pb.Constraints(min_quality=-math.inf)),
            "constraints.min_quality",
            "finite",
        ),
        (pb.RouteRequest(lane="codex", task=task(difficulty=100.5)), "task.difficulty", "at most 100"),
        (pb.RouteRequest(lane="codex", task=task(difficulty=-1)), "task.difficulty", "at least 0"),
        (pb.RouteRequest(lane="codex", task=task(value_usd=math.nan)), "task.value_usd", "finite"),
        (
            pb.RouteRequest(lane="codex", task=pb.Task(prompt="é" * (512 * 1024 + 1))),
            "task.prompt",
            "is 1048578 bytes; at most 1048576",
        ),
        (pb.RouteRequest(lane="codex", objective=9), "objective", "unknown Objective value 9"),
        (
            pb.RouteRequest(
                lane="codex", constraints=pb.Constraints(required_capabilities=["tools", "telepathy"])
            ),
            "constraints.required_capabilities[1]",
            "unknown capability 'telepathy'",
        ),
        (pb.RouteRequest(lane="codex", task=pb.Task(labels=["x" * 300])), "task.labels[0]", "at most 256"),
    ],
)
def test_invalid_requests_name_the_field(
    client: RoutingClient, request_message: pb.RouteRequest, field: str, words: str
) -> None:
    error = rejected(client, request_message)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error.violations] == [field]
    assert words in error.violations[0][1]
    assert field in error.details


def test_every_violation_is_reported(client: RoutingClient) -> None:
    error = rejected(
        client,
        pb.RouteRequest(
            lane="",
            task=pb.Task(input_tokens=-1, difficulty=math.inf),
            constraints=pb.Constraints(max_cost_usd=0.0),
        ),
    )
    assert [f for f, _ in error.violations] == [
        "lane",
        "task.input_tokens",
        "task.difficulty",
        "constraints.max_cost_usd",
    ]


def test_messages_over_the_size_limit_are_refused_by_the_transport(client: RoutingClient) -> None:
    error = rejected(client, pb.RouteRequest(lane="codex", task=pb.Task(prompt="x" * (5 * 1024 * 1024))))
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_server_keeps_serving_after_bad_requests(client: RoutingClient) -> None:
    for _ in range(20):
        rejected(client, pb.RouteRequest(lane="nope"))
    assert client.route(pb.RouteRequest(lane="local", task=task())).model


def test_core_enums_match_the_contract() -> None:
    pairs = [
        (types.Objective, pb.Objective, "OBJECTIVE_"),
        (types.ObjectiveRule, pb.ObjectiveRule, "OBJECTIVE_RULE_"),
        (types.Profile, pb.Profile, "PROFILE_"),
        (types.Strategy, pb.Strategy, "STRATEGY_"),
        (types.FallbackReason, pb.FallbackReason, "FALLBACK_REASON_"),
        (types.Filter, pb.Filter, "FILTER_"),
        (Outcome, pb.Outcome, "OUTCOME_"),
        (ScaleAction, pb.ScaleAction, "SCALE_ACTION_"),
        (ScaleBlock, pb.ScaleBlock, "SCALE_BLOCK_"),
    ]
    for core, proto, prefix in pairs:
        assert {m.name: m.value for m in core} == {
            name.removeprefix(prefix): number for name, number in proto.items()
        }, core.__name__


def test_error_details_stay_bounded_however_bad_the_request(client: RoutingClient) -> None:
    many = pb.Constraints(required_capabilities=[f"cap-{i}" for i in range(400)])
    error = rejected(client, pb.RouteRequest(lane="codex", constraints=many))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error.violations] == ["constraints.required_capabilities"]

    labels = pb.Task(labels=["x" * 300] * 64)
    error = rejected(client, pb.RouteRequest(lane="codex", task=labels, requested_model="m" * 300))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(error.violations) == 50  # capped; the message says how many more
    assert "and 60 more" in error.details


def test_an_edge_failure_is_internal_and_says_nothing_private(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    live = LiveRouter.from_directory(CONFIG_DIR)
    monkeypatch.setattr(
        "orxaq_grpc.service.servicer.decision_to_proto",
        lambda d: (_ for _ in ()).throw(RuntimeError("secret")),
    )
    server = LoopbackServer(live, tmp_path)
    try:
        with RoutingClient(server.address) as c:
            error = rejected(c, pb.RouteRequest(lane="codex", task=pb.Task(id="T-9")))
    finally:
        server.stop()
    assert error.code == grpc.StatusCode.INTERNAL
    assert "secret" not in error.details
    assert "Route failed (lane 'codex', 'T-9')" in caplog.text
