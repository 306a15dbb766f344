"""What every open page is shown: one WatchHealth stream and one Economics poll, however many pages.

The feed keeps the newest Health and Economics answers, whether the service answered the last
calls (and why not), and fans each new snapshot out to the pages subscribed. The snapshot is
encoded to JSON once per change, not once per page; a page that reads slowly is sent the newest
snapshot, never a backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import grpc

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.web.rpc import Metadata, ServiceStub, as_json, failure

RETRY_MIN_S = 0.5  # the first wait before WatchHealth is opened again; doubled up to RETRY_MAX_S
RETRY_MAX_S = 15.0
CALL_TIMEOUT_S = 10.0
WATCH, ECONOMICS = "WatchHealth", "Economics"

_log = logging.getLogger(__name__)

Page = asyncio.Queue[str | None]  # a page's next snapshot as JSON; None: the feed closed


class Feed:
    def __init__(self, stub: ServiceStub, metadata: Metadata, address: str, refresh_s: float) -> None:
        self._stub = stub
        self._metadata = metadata  # the companion's own credential, for reads only
        self._address = address
        self._refresh_s = refresh_s
        self._health: pb.HealthResponse | None = None
        self._economics: pb.EconomicsResponse | None = None
        self._problems: dict[str, str] = {}  # by call, why it last failed; empty while all is well
        self._pages: set[Page] = set()
        self.payload = self._encode()

    @property
    def pages(self) -> int:
        return len(self._pages)

    async def run(self) -> None:
        """Follows the service until cancelled."""
        await asyncio.gather(self._follow_health(), self._poll_economics())

    async def _follow_health(self) -> None:
        wait_s = RETRY_MIN_S
        while True:
            try:
                async for snapshot in self._stub.WatchHealth(
                    pb.WatchHealthRequest(), metadata=self._metadata
                ):
                    wait_s = RETRY_MIN_S
                    self._health = snapshot
                    self._answered(WATCH)
                why = "the stream ended"  # the service stopped, gracefully
            except grpc.aio.AioRpcError as error:
                why = failure(error)
            self._failed(WATCH, f"{why}; opening it again in {wait_s:g} s")
            await asyncio.sleep(wait_s)
            wait_s = min(2 * wait_s, RETRY_MAX_S)

    async def _poll_economics(self) -> None:
        while True:
            try:
                self._economics = await self._stub.Economics(
                    pb.EconomicsRequest(), timeout=CALL_TIMEOUT_S, metadata=self._metadata
                )
                self._answered(ECONOMICS)
            except grpc.aio.AioRpcError as error:
                self._failed(ECONOMICS, failure(error))
            await asyncio.sleep(self._refresh_s)

    async def refresh_health(self) -> None:
        """Asks Health now (after an operator action) and sends what it says; a failure waits for
        the stream to tell."""
        try:
            self._health = await self._stub.Health(
                pb.HealthRequest(), timeout=CALL_TIMEOUT_S, metadata=self._metadata
            )
        except grpc.aio.AioRpcError:
            return
        self._publish()

    def _answered(self, call: str) -> None:
        if self._problems.pop(call, None) is not None:
            _log.info("%s: the service answers again", call)
        self._publish()

    def _failed(self, call: str, why: str) -> None:
        if call not in self._problems:  # logged when it starts failing, not on every retry
            _log.warning("%s: %s", call, why)
        self._problems[call] = why
        self._publish()

    def snapshot(self) -> dict[str, Any]:
        answered = self._health is not None or self._economics is not None
        problem = "; ".join(f"{call}: {why}" for call, why in sorted(self._problems.items()))
        return {
            "health": as_json(self._health) if self._health is not None else None,
            "economics": as_json(self._economics) if self._economics is not None else None,
            "at_unix": time.time(),
            "service": {
                "address": self._address,
                "reachable": answered and not self._problems,
                "problem": problem or ("" if answered else "waiting for the service's first answer"),
                "pages": len(self._pages),
            },
        }

    def _encode(self) -> str:
        return json.dumps(self.snapshot(), separators=(",", ":"))

    def _publish(self) -> None:
        self.payload = self._encode()
        for page in self._pages:
            _offer(page, self.payload)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[Page]:
        """A page's queue for as long as it is open: the current snapshot first, then each new one."""
        page: Page = asyncio.Queue(maxsize=1)
        page.put_nowait(self.payload)
        self._pages.add(page)
        try:
            yield page
        finally:
            self._pages.discard(page)

    def close(self) -> None:
        """Ends every page's stream (the companion is stopping)."""
        for page in self._pages:
            _offer(page, None)


def _offer(page: Page, payload: str | None) -> None:
    """The newest snapshot replaces one the page has not taken yet."""
    if page.full():
        page.get_nowait()
    page.put_nowait(payload)
