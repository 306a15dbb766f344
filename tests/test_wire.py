"""Bytes that are not the method's message: INVALID_ARGUMENT naming `request`, never UNKNOWN, and a
flood of them is a line or two of log, not a traceback each."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status

from orxaq.routing.v1 import routing_pb2
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.service.wire import RefusalLog
from tests.conftest import CONFIG_DIR, LoopbackServer

GARBAGE = b"\xff\xff\xff\xff\x0f"  # field number 0 in a tag: no protobuf message parses it
SERVICES = (
    routing_pb2.DESCRIPTOR.services_by_name["RoutingService"],
    health_pb2.DESCRIPTOR.services_by_name["Health"],
)
METHODS = [(s.full_name, m.name, m.server_streaming) for s in SERVICES for m in s.methods]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackServer]:
    running = LoopbackServer(LiveRouter.from_directory(CONFIG_DIR), tmp_path_factory.mktemp("wire") / "data")
    yield running
    running.stop()


def _call(channel: grpc.Channel, service: str, method: str, streaming: bool, payload: bytes) -> None:
    path = f"/{service}/{method}"
    if streaming:
        for _ in channel.unary_stream(path)(payload, timeout=10):
            pass
    else:
        channel.unary_unary(path)(payload, timeout=10)


@pytest.mark.parametrize(("service", "method", "streaming"), METHODS)
def test_garbage_is_invalid_argument_naming_the_request(
    server: LoopbackServer, service: str, method: str, streaming: bool
) -> None:
    with grpc.insecure_channel(server.address) as channel, pytest.raises(grpc.RpcError) as caught:
        _call(channel, service, method, streaming, GARBAGE)
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    ((violation),) = bad_request.field_violations
    assert violation.field == "request"
    assert "is not a valid" in violation.description


def test_a_flood_of_garbage_is_counted_not_logged_each(
    server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG), grpc.insecure_channel(server.address) as channel:
        codes = set()
        for i in range(300):
            service, method, streaming = METHODS[i % len(METHODS)]
            try:
                _call(channel, service, method, streaming, GARBAGE)
            except grpc.RpcError as exc:
                assert isinstance(exc, grpc.Call)
                codes.add(exc.code())
        healthy = routing_pb2.HealthResponse.FromString(
            channel.unary_unary("/orxaq.routing.v1.RoutingService/Health")(b"", timeout=10)
        )
    assert codes == {grpc.StatusCode.INVALID_ARGUMENT}
    assert healthy.config_version  # and the service still answers
    refusals = [r for r in caplog.records if "malformed request" in r.getMessage()]
    assert len(refusals) <= 1  # the first of the period (the module's earlier tests may have had it)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_the_refusal_log_says_each_period_once_with_its_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    refusals = RefusalLog(every_s=60.0, clock=lambda: now[0])
    bad = "not a orxaq.routing.v1.RouteRequest (Error parsing message)"
    with caplog.at_level(logging.WARNING, logger="orxaq_grpc.service.wire"):
        for second in range(0, 180, 1):
            now[0] = float(second)
            for _ in range(10):
                refusals.refused("orxaq.routing.v1.RoutingService/Route", bad)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3  # at 0 s, 60 s and 120 s
    assert lines[0].startswith("refused 1 malformed request(s)")
    assert lines[1].startswith("refused 600 malformed request(s) in the last 60 s")
    assert refusals.total == 1800


def test_a_flood_that_stops_is_still_told_whole(caplog: pytest.LogCaptureFixture) -> None:
    """The guardrails' round flushes a period that is over; shutdown flushes what is left."""
    now = [0.0]
    refusals = RefusalLog(every_s=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="orxaq_grpc.service.wire"):
        for _ in range(1000):  # a burst at 0 s, then nothing
            refusals.refused("orxaq.routing.v1.RoutingService/Route", "not a RouteRequest")
        now[0] = 30.0
        refusals.flush()  # the period is not over: nothing yet
        now[0] = 61.0
        refusals.flush()
        refusals.flush()  # nothing new: nothing more
        refusals.refused("orxaq.routing.v1.RoutingService/Report", "not a ReportRequest")
        refusals.flush(force=True)  # shutdown
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" in the last")[0] for line in lines] == [
        "refused 1 malformed request(s)",
        "refused 999 malformed request(s)",
        "refused 1 malformed request(s)",
    ]
    assert lines[2].endswith("to orxaq.routing.v1.RoutingService/Report: not a ReportRequest")


def test_a_message_that_parses_still_gets_field_validation(server: LoopbackServer) -> None:
    """Unknown fields parse (protobuf keeps them): such a request is judged by its fields."""
    with grpc.insecure_channel(server.address) as channel, pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary("/orxaq.routing.v1.RoutingService/Route")(b"\xa8\x1f\x01", timeout=10)
    assert isinstance(caught.value, grpc.Call)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "lane" in (caught.value.details() or "")
