"""WatchHealth's snapshots, taken once per tick and shared by every open stream.

While at least one stream watches, one task takes the health view and its fingerprint every tick and
wakes the streams; each stream compares the tick with the states it last sent and its own heartbeat,
and sends the tick's proto for its trigger ("change" or "heartbeat"), built at most once per tick and
trigger. A stream that opens gets the latest tick as "initial" at once (the first one takes a tick
of its own). With no stream open, nothing ticks: the last one to close stops the task, and so does
`stopping`, which ends every stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.application.outcomes import HealthView

log = logging.getLogger(__name__)

# How often the watchers' snapshot is taken (more often for a shorter heartbeat): breaker and budget
# changes show within this.
WATCH_POLL_S = 0.25
# Streams woken per turn of the event loop: a thousand streams' sends at once would hold a Route
# call back for all of them.
WAKE_SLICE = 10


class Tick:
    """One snapshot: the view and its fingerprint, and its message per trigger, rendered and encoded
    on first use and then sent as the same bytes on every stream (a thousand streams, one encoding)."""

    __slots__ = ("_encoded", "_render", "at", "states", "view")

    def __init__(self, view: HealthView, render: Callable[[HealthView], pb.HealthResponse]) -> None:
        self.at = time.monotonic()
        self.view = view
        self.states = view.fingerprint()
        self._render = render
        self._encoded: dict[str, bytes] = {}

    def message(self, trigger: str) -> bytes:
        """The serialized HealthResponse with `trigger` set."""
        if (encoded := self._encoded.get(trigger)) is None:
            if self._encoded:  # the same snapshot under another trigger: parsed back, not rendered again
                proto = pb.HealthResponse.FromString(next(iter(self._encoded.values())))
            else:
                proto = self._render(self.view)
            proto.trigger = trigger
            encoded = self._encoded[trigger] = proto.SerializeToString()
        return encoded


class HealthBroadcast:
    """Ticks every WATCH_POLL_S (or the shortest heartbeat watched, if shorter) while a stream watches."""

    def __init__(
        self,
        view: Callable[[], HealthView],
        render: Callable[[HealthView], pb.HealthResponse],
        stopping: asyncio.Event,
        poll_s: float = WATCH_POLL_S,
    ) -> None:
        self._view = view
        self._render = render
        self._stopping = stopping
        self._poll_s = poll_s
        self._heartbeats: Counter[float] = Counter()  # each watching stream's heartbeat_s
        self._latest: Tick | None = None
        self._waiting: list[asyncio.Future[None]] = []  # the streams waiting for the next tick
        self._ticker: asyncio.Task[None] | None = None
        self._phase = random.Random()  # spreads the streams' heartbeats (no seed: nothing to reproduce)

    @property
    def watchers(self) -> int:
        return self._heartbeats.total()

    @property
    def ticking(self) -> bool:
        return self._ticker is not None and not self._ticker.done()

    async def watch(self, heartbeat_s: float) -> AsyncIterator[bytes]:
        """The latest snapshot at once, then one on every change of state and a heartbeat when
        `heartbeat_s` has passed without one, as serialized HealthResponses; ends when `stopping` is set."""
        if self._stopping.is_set():
            return
        first = self._join(heartbeat_s)
        try:
            yield first.message("initial")
            # The first heartbeat at a random point of the first period: a thousand streams opened
            # together then beat spread over the ticks, not all on the same one.
            sent_at, sent_states = first.at - self._phase.random() * heartbeat_s, first.states
            while not self._stopping.is_set():
                await self._next_tick()
                tick = self._latest
                if tick is None or self._stopping.is_set():
                    return
                if tick.states != sent_states:
                    yield tick.message("change")
                elif tick.at - sent_at >= heartbeat_s:
                    yield tick.message("heartbeat")
                else:
                    continue
                sent_at, sent_states = tick.at, tick.states
        finally:
            self._leave(heartbeat_s)

    def _join(self, heartbeat_s: float) -> Tick:
        if self._latest is None or not self.ticking:
            self._latest = Tick(self._view(), self._render)  # raises here, to this stream, if it fails
            self._ticker = asyncio.create_task(self._tick(), name="watch-health")
        self._heartbeats[heartbeat_s] += 1
        return self._latest

    def _leave(self, heartbeat_s: float) -> None:
        self._heartbeats[heartbeat_s] -= 1
        if self._heartbeats[heartbeat_s] <= 0:
            del self._heartbeats[heartbeat_s]
        if not self._heartbeats and self._ticker is not None:
            self._ticker.cancel()
            self._ticker = self._latest = None

    async def _tick(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min((self._poll_s, *self._heartbeats))):
                    await self._stopping.wait()
            if not self._stopping.is_set():
                try:
                    self._latest = Tick(self._view(), self._render)
                except Exception:
                    log.exception("taking the watchers' health snapshot failed; trying again next tick")
                    continue
            waiting, self._waiting = self._waiting, []
            self._wake(waiting)
            if self._stopping.is_set():
                return

    async def _next_tick(self) -> None:
        waiting = asyncio.get_running_loop().create_future()
        self._waiting.append(waiting)
        await waiting  # only this stream's: cancelling it cancels nothing else

    def _wake(self, waiting: list[asyncio.Future[None]], start: int = 0) -> None:
        """Wakes WAKE_SLICE streams, and the next ones on the loop's next turn: other calls are served
        between two slices rather than after a whole tick's sends."""
        for stream in waiting[start : start + WAKE_SLICE]:
            if not stream.done():
                stream.set_result(None)
        if start + WAKE_SLICE < len(waiting):
            asyncio.get_running_loop().call_soon(self._wake, waiting, start + WAKE_SLICE)
