"""WatchHealth's shared snapshots: one health view per tick for every stream, whatever their number."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq.routing.v1 import routing_pb2_grpc
from orxaq_grpc.application.workflow import RoutingWorkflow
from orxaq_grpc.client import RoutingClient
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.service.watch import WAKE_SLICE, WATCH_POLL_S, HealthBroadcast
from tests.conftest import LoopbackServer, set_toml

T = TypeVar("T")
WATCHERS = 2 * WAKE_SLICE + 10  # woken over three turns of the loop


@pytest.fixture
def views(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When each health view was taken, by whatever took it (patched before the server starts)."""
    taken: list[float] = []
    health = RoutingWorkflow.health

    def counted(self: RoutingWorkflow) -> object:
        taken.append(time.monotonic())
        return health(self)

    monkeypatch.setattr(RoutingWorkflow, "health", counted)
    return taken


@pytest.fixture
def server(views: list[float], config_dir: Path, tmp_path: Path) -> Iterator[LoopbackServer]:
    set_toml(config_dir / "policy.toml", "ceilings", "min_watch_heartbeat_s", "0.1")
    server = LoopbackServer(LiveRouter.from_directory(config_dir), tmp_path / "data")
    yield server
    server.stop()


def bounded(awaitable: Awaitable[T]) -> Awaitable[T]:
    """Fails a test that would otherwise hang."""
    return asyncio.wait_for(awaitable, 30)


async def until(
    trigger: str, call: grpc.aio.UnaryStreamCall[pb.WatchHealthRequest, pb.HealthResponse]
) -> pb.HealthResponse:
    for _ in range(100):
        snapshot = await call.read()
        assert snapshot is not grpc.aio.EOF
        if snapshot.trigger == trigger:
            return snapshot
    raise AssertionError(f"no {trigger!r} snapshot in 100")


async def eventually(condition: Callable[[], bool], what: str) -> None:
    for _ in range(600):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(what)


def test_watchers_share_one_health_view_per_tick(server: LoopbackServer, views: list[float]) -> None:
    broadcast = server.running.handlers.broadcast

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = routing_pb2_grpc.RoutingServiceStub(channel)
            started = time.monotonic()
            calls = [stub.WatchHealth(pb.WatchHealthRequest(heartbeat_s=1.0)) for _ in range(WATCHERS)]
            initial = await bounded(asyncio.gather(*(call.read() for call in calls)))
            assert {s.trigger for s in initial if isinstance(s, pb.HealthResponse)} == {"initial"}
            await asyncio.sleep(8 * WATCH_POLL_S)
            # Ticks are at least WATCH_POLL_S apart, so this bounds one view per tick (the first one
            # at the first watcher's join), not one per watcher per tick.
            assert 2 <= len(views) <= 2 + (time.monotonic() - started) / WATCH_POLL_S
            assert broadcast.watchers == WATCHERS

            # A change reaches every watcher, in the snapshot of the tick that saw it.
            with RoutingClient(server.address) as client:
                await asyncio.to_thread(client.set_stop_loss, True, "watch test")
            changes = await bounded(asyncio.gather(*(until("change", call) for call in calls)))
            assert all(s.guardrails.stop_loss_active for s in changes)
            assert len({s.uptime_s for s in changes}) <= 2  # shared: not one proto per watcher

            # The last watcher gone, nothing ticks.
            for call in calls:
                call.cancel()
            await eventually(lambda: broadcast.watchers == 0 and not broadcast.ticking, "still ticking")
            taken = len(views)
            await asyncio.sleep(3 * WATCH_POLL_S)
            assert len(views) == taken

            # A new watcher gets the state as it is now, at once, and ticking resumes.
            call = stub.WatchHealth(pb.WatchHealthRequest(heartbeat_s=1.0))
            first = await bounded(call.read())
            assert isinstance(first, pb.HealthResponse)
            assert first.trigger == "initial"
            assert first.guardrails.stop_loss_active
            assert broadcast.ticking
            call.cancel()
            await eventually(lambda: not broadcast.ticking, "still ticking after the last watcher left")

    asyncio.run(scenario())


def test_each_watcher_keeps_its_own_heartbeat(server: LoopbackServer) -> None:
    async def scenario() -> None:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = routing_pb2_grpc.RoutingServiceStub(channel)
            slow = stub.WatchHealth(pb.WatchHealthRequest(heartbeat_s=3600))
            fast = stub.WatchHealth(pb.WatchHealthRequest(heartbeat_s=0.1))
            seen: list[str] = []

            async def drain() -> None:
                async for snapshot in slow:
                    seen.append(snapshot.trigger)

            draining = asyncio.create_task(drain())
            assert (await bounded(fast.read())).trigger == "initial"  # type: ignore[union-attr]
            for _ in range(3):
                await bounded(until("heartbeat", fast))
            assert seen == ["initial"]
            slow.cancel()
            fast.cancel()
            await asyncio.gather(draining, return_exceptions=True)

    asyncio.run(scenario())


def test_stopping_the_server_ends_every_watcher_and_the_ticker(server: LoopbackServer) -> None:
    broadcast = server.running.handlers.broadcast

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = routing_pb2_grpc.RoutingServiceStub(channel)
            calls = [stub.WatchHealth(pb.WatchHealthRequest(heartbeat_s=3600)) for _ in range(10)]
            await bounded(asyncio.gather(*(call.read() for call in calls)))
            assert broadcast.ticking
            await asyncio.to_thread(server.stop)
            assert [await bounded(call.read()) for call in calls] == [grpc.aio.EOF] * len(calls)
            assert not broadcast.ticking

    asyncio.run(scenario())


class FakeView:
    def __init__(self, states: tuple[object, ...]) -> None:
        self.states = states

    def fingerprint(self) -> tuple[object, ...]:
        return self.states


def test_one_proto_per_trigger_per_tick_shared_by_every_watcher() -> None:
    async def scenario() -> None:
        state = ["calm"]
        taken: list[FakeView] = []
        rendered: list[FakeView] = []

        def view() -> FakeView:
            taken.append(FakeView((state[0],)))
            return taken[-1]

        def render(view: FakeView) -> pb.HealthResponse:
            rendered.append(view)
            return pb.HealthResponse(config_version=str(view.states))

        stopping = asyncio.Event()
        broadcast = HealthBroadcast(view, render, stopping, poll_s=0.02)  # type: ignore[arg-type]
        watchers = [broadcast.watch(3600) for _ in range(WATCHERS)]
        initial = [await anext(w) for w in watchers]
        assert all(s is initial[0] for s in initial)  # the same bytes: encoded once
        assert pb.HealthResponse.FromString(initial[0]).trigger == "initial"
        assert len(rendered) == 1
        await asyncio.sleep(0.1)  # ticks with nothing to send: taken, not rendered
        assert len(taken) > 2
        assert len(rendered) == 1

        state[0] = "storm"
        changes = await bounded(asyncio.gather(*(anext(w) for w in watchers)))
        assert all(s is changes[0] for s in changes)
        change = pb.HealthResponse.FromString(changes[0])
        assert (change.trigger, change.config_version) == ("change", "('storm',)")
        assert len(rendered) == 2

        await watchers.pop().aclose()
        assert broadcast.watchers == WATCHERS - 1
        assert broadcast.ticking
        stopping.set()
        for watcher in watchers:
            with pytest.raises(StopAsyncIteration):
                await bounded(anext(watcher))
        assert broadcast.watchers == 0
        assert not broadcast.ticking

    asyncio.run(scenario())


def test_the_last_watcher_leaving_stops_the_ticker() -> None:
    async def scenario() -> None:
        taken: list[FakeView] = []

        def view() -> FakeView:
            taken.append(FakeView(("calm",)))
            return taken[-1]

        broadcast = HealthBroadcast(view, lambda v: pb.HealthResponse(), asyncio.Event(), poll_s=0.01)  # type: ignore[arg-type]
        watchers = [broadcast.watch(0.1) for _ in range(3)]
        for watcher in watchers:
            await anext(watcher)
        await asyncio.sleep(0.1)
        assert broadcast.ticking
        for watcher in watchers:
            await watcher.aclose()
        assert (broadcast.watchers, broadcast.ticking) == (0, False)
        count = len(taken)
        await asyncio.sleep(0.1)
        assert len(taken) == count
        again = broadcast.watch(0.1)
        await anext(again)  # a new watcher starts it again, with a view of its own
        assert broadcast.ticking
        assert len(taken) == count + 1
        await again.aclose()
        assert not broadcast.ticking

    asyncio.run(scenario())
