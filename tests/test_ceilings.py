"""Ceilings from policy: calls in flight, watch streams and each lane's rate. Beyond one, a call is
RESOURCE_EXHAUSTED with a QuotaFailure naming the ceiling and a RetryInfo saying when to come back."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.client import CallFailed, RoutingClient
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.service.gate import Gate
from tests.conftest import LoopbackServer, set_toml


def exhaustion(error: grpc.RpcError) -> tuple[str, float]:
    """The QuotaFailure's subject and the RetryInfo's delay of a RESOURCE_EXHAUSTED answer."""
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    details = dict(error.trailing_metadata())[rpc_status.GRPC_DETAILS_METADATA_KEY]  # type: ignore[attr-defined]
    status = status_pb2.Status.FromString(details)
    quota, retry = error_details_pb2.QuotaFailure(), error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(quota) and status.details[1].Unpack(retry)
    return quota.violations[0].subject, retry.retry_delay.ToTimedelta().total_seconds()


@pytest.fixture
def limited(config_dir: Path, tmp_path: Path) -> Iterator[tuple[LoopbackServer, Path]]:
    set_toml(config_dir / "policy.toml", "ceilings", "lane_requests_per_s", "0.01")
    set_toml(config_dir / "policy.toml", "ceilings", "lane_burst", "3")
    set_toml(config_dir / "policy.toml", "ceilings", "max_watch_streams", "1")
    server = LoopbackServer(LiveRouter.from_directory(config_dir), tmp_path / "data")
    yield server, config_dir
    server.stop()


def test_a_lane_over_its_rate_is_told_when_to_retry_and_other_lanes_go_on(
    limited: tuple[LoopbackServer, Path],
) -> None:
    server, _ = limited
    with grpc.insecure_channel(server.address) as channel:
        route = channel.unary_unary(
            "/orxaq.routing.v1.RoutingService/Route",
            request_serializer=pb.RouteRequest.SerializeToString,
            response_deserializer=pb.RouteDecision.FromString,
        )
        codex = pb.RouteRequest(lane="codex", task=pb.Task(title="x"))
        for _ in range(3):  # the burst
            route(codex, timeout=10)
        with pytest.raises(grpc.RpcError) as caught:
            route(codex, timeout=10)
        subject, retry_s = exhaustion(caught.value)
        assert subject == "lane codex request rate"
        assert 50 < retry_s <= 100  # one call at 0.01 per second, less what refilled meanwhile
        assert route(pb.RouteRequest(lane="claude", task=pb.Task(title="x")), timeout=10).lane == "claude"


def test_watch_streams_beyond_the_ceiling_are_refused_until_one_ends(
    limited: tuple[LoopbackServer, Path],
) -> None:
    server, _ = limited
    with RoutingClient(server.address) as first, RoutingClient(server.address) as second:
        watching = first.watch_health(heartbeat_s=60)
        assert next(watching).trigger == "initial"
        with pytest.raises(CallFailed) as refused:
            next(second.watch_health(heartbeat_s=60))
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "watch streams are open" in refused.value.details
        watching.close()  # cancels the first stream; its place frees once the server sees that
        deadline = time.monotonic() + 10
        while True:
            try:
                assert next(second.watch_health(heartbeat_s=60)).trigger == "initial"
                break
            except CallFailed:
                assert time.monotonic() < deadline, "the ended stream's place was never freed"
                time.sleep(0.05)


def test_calls_beyond_the_concurrency_ceiling_are_refused_and_the_rest_served(config_dir: Path) -> None:
    """A server with the gate and one method that holds its call until released."""
    set_toml(config_dir / "policy.toml", "ceilings", "max_concurrent_rpcs", "2")
    live = LiveRouter.from_directory(config_dir)

    async def scenario() -> None:
        release = asyncio.Event()
        entered = 0

        async def hold(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            nonlocal entered
            entered += 1
            await release.wait()
            return b"done"

        gate = Gate(live)
        server = grpc.aio.server(interceptors=[gate])
        handler = grpc.unary_unary_rpc_method_handler(hold)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Held", {"Hold": handler}),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.unary_unary("/test.Held/Hold")
                held = [asyncio.ensure_future(call(b"", timeout=10)) for _ in range(2)]
                while entered < 2:
                    await asyncio.sleep(0.01)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call(b"", timeout=10)
                subject, retry_s = exhaustion(caught.value)
                assert (subject, retry_s) == ("concurrent calls", 0.5)
                release.set()
                assert await asyncio.gather(*held) == [b"done", b"done"]
                assert gate.in_flight == 0
                assert await call(b"", timeout=10) == b"done"  # room again
        finally:
            await server.stop(None)

    asyncio.run(scenario())


def test_ceilings_follow_a_reload(limited: tuple[LoopbackServer, Path]) -> None:
    server, config_dir = limited
    with RoutingClient(server.address) as client:
        for _ in range(3):
            client.route(pb.RouteRequest(lane="codex", task=pb.Task(title="x")))
        with pytest.raises(CallFailed):
            client.route(pb.RouteRequest(lane="codex", task=pb.Task(title="x")))
        set_toml(config_dir / "policy.toml", "ceilings", "lane_requests_per_s", "1000.0")
        live = server.running.handlers.workflow.live
        assert live.reload()
        time.sleep(0.01)  # at 1,000 a second a token is back within a millisecond
        assert client.route(pb.RouteRequest(lane="codex", task=pb.Task(title="x"))).lane == "codex"


def test_calls_whose_request_never_comes_hold_no_place_once_they_end(
    config_dir: Path, tmp_path: Path
) -> None:
    """Places are taken before a request is read and given back when the call ends however it
    ends: callers that open calls and go away lock nobody out, and their requests are never read."""
    set_toml(config_dir / "policy.toml", "ceilings", "max_concurrent_rpcs", "2")
    server = LoopbackServer(LiveRouter.from_directory(config_dir), tmp_path / "data")
    release = threading.Event()

    def never() -> Iterator[bytes]:  # a request stream that sends nothing until told
        release.wait(30)
        return
        yield b""

    try:
        with grpc.insecure_channel(server.address) as channel:
            hold = channel.stream_unary("/orxaq.routing.v1.RoutingService/Route")
            held = [hold.future(never(), timeout=30) for _ in range(2)]
            gate = server.running.gate
            deadline = time.monotonic() + 10
            while gate.in_flight < 2:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            health = channel.unary_unary("/orxaq.routing.v1.RoutingService/Health")
            with pytest.raises(grpc.RpcError) as caught:
                health(b"", timeout=10)
            assert exhaustion(caught.value)[0] == "concurrent calls"
            for call in held:
                call.cancel()
            while gate.in_flight:
                assert time.monotonic() < deadline, "a cancelled call kept its place"
                time.sleep(0.01)
            assert health(b"", timeout=10)  # at once, not when some timer frees the places
    finally:
        release.set()
        server.stop()
