"""Admission for every call, before its handler: who is calling, whether its role allows the call
(`access/roles.py`), and the ceilings on calls in flight, watch streams and each lane's rate.

A refusal is a status with details a client can act on: UNAUTHENTICATED or PERMISSION_DENIED with a
google.rpc.ErrorInfo (the reason and the token the call needs), RESOURCE_EXHAUSTED with a QuotaFailure
and a RetryInfo. Refusals are logged by count per period, never a line each: a flood of bad calls is
no flood of log. Policy is read on every call, so a reload rotates tokens and moves ceilings at once.

The admitted caller is `CALLER` for the rest of the call, so the handlers can tell a lane's own
credential from an open service (a report for another lane's decision is then PERMISSION_DENIED).
"""

from __future__ import annotations

import contextvars
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc
from grpc_health.v1 import health

from orxaq.routing.v1 import routing_pb2
from orxaq_grpc.access.rates import LaneRates
from orxaq_grpc.access.roles import OPEN, Gatekeeper, Need, Principal, Refusal
from orxaq_grpc.config.model import Config
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.service.errors import end_with, refused, resource_exhausted
from orxaq_grpc.service.interceptor import Behavior, Context, Handler, WrappingInterceptor, answer, responses
from orxaq_grpc.service.wire import RefusalLog

ROUTING_SERVICE = routing_pb2.DESCRIPTOR.services_by_name["RoutingService"].full_name
NEEDS = {
    f"/{ROUTING_SERVICE}/Route": Need.LANE,
    f"/{ROUTING_SERVICE}/Report": Need.LANE,
    f"/{ROUTING_SERVICE}/Scale": Need.OPERATOR,
    f"/{ROUTING_SERVICE}/SetStopLoss": Need.OPERATOR,
}  # every other method (Health, WatchHealth, Economics, grpc.health.v1, reflection) is a read
WATCHES = frozenset({f"/{ROUTING_SERVICE}/WatchHealth", f"/{health.SERVICE_NAME}/Watch"})

# The caller of the call in progress (OPEN where no credentials are configured).
CALLER: contextvars.ContextVar[Principal] = contextvars.ContextVar("caller", default=OPEN)

# An admitted unary call whose request has not arrived in this long no longer counts as in flight
# (its caller went away before sending it, and grpc never calls the handler).
ARRIVAL_S = 30.0
AUTHORIZATION = "authorization"
Req = TypeVar("Req")
Resp = TypeVar("Resp")
BEARER = "bearer "


class Gate(WrappingInterceptor):
    """Admits or refuses each call; runs on the server's event loop, so its counts need no lock."""

    def __init__(self, live: LiveRouter, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._live = live
        self._config: Config | None = None
        self._keeper = Gatekeeper(live.current.config.policy.access)
        self._rates = LaneRates(clock)
        self._clock = clock
        self.in_flight = 0  # unary calls whose handler runs
        self._arriving: deque[float] = deque()  # when each admitted unary call began, until it is read
        self._unread: dict[tuple[str, int, float], Handler] = {}
        self.watching = 0
        self.refusals = RefusalLog("call(s) without the credentials they need")
        self.exhausted = RefusalLog("call(s) over a ceiling")

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Req, Resp] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Req, Resp] | None:
        """A unary call over the ceiling on calls in flight is refused here, before its request is
        read: a handler that takes the request as a stream and never reads it. So a flood of large
        requests holds at most the ceiling's worth of them, whatever the number of connections."""
        handler = await super().intercept_service(continuation, handler_call_details)
        if handler is None or handler.request_streaming or handler.response_streaming:
            return handler
        ceilings = self._current().policy.ceilings
        now, arriving = self._clock(), self._arriving
        while arriving and now - arriving[0] > ARRIVAL_S:
            arriving.popleft()  # never read (the caller went away first): no longer in flight
        if self.in_flight + len(arriving) < ceilings.max_concurrent_rpcs:
            arriving.append(now)
            return handler
        method = handler_call_details.method
        self.exhausted.refused(method, f"{self.in_flight + len(arriving)} calls in flight")
        key = (method, ceilings.max_concurrent_rpcs, ceilings.retry_after_s)
        if (unread := self._unread.get(key)) is None:
            message = f"{ceilings.max_concurrent_rpcs} calls are in flight, the most policy allows"
            status = resource_exhausted("concurrent calls", message, ceilings.retry_after_s)
            unread = self._unread[key] = _refusing_unread(status)
        return cast("grpc.RpcMethodHandler[Req, Resp]", unread)

    def _unary(self, behavior: Behavior, method: str) -> Behavior:
        need = NEEDS.get(method, Need.READ)

        async def admitted(request: Any, context: Context) -> Any:
            if self._arriving:
                self._arriving.popleft()  # read: in flight from here on
            caller = self._admit(request, context, method, need)
            if isinstance(caller, grpc.Status):
                end_with(context, caller)
                return None
            self.in_flight += 1
            token = CALLER.set(caller)
            try:
                return await answer(behavior, request, context)
            finally:
                CALLER.reset(token)
                self.in_flight -= 1

        return admitted

    def _streaming(self, behavior: Behavior, method: str) -> Behavior:
        # Reflection streams requests: a read, admitted before its stream is read.
        need, watch = NEEDS.get(method, Need.READ), method in WATCHES

        async def admitted(request: Any, context: Context) -> AsyncIterator[Any]:
            ceilings = self._current().policy.ceilings
            if watch and self.watching >= ceilings.max_watch_streams:
                message = f"{self.watching} watch streams are open, the most policy allows"
                caller: Principal | grpc.Status = self._exhausted(
                    method, "watch streams", message, ceilings.retry_after_s
                )
            else:
                caller = self._admit(request, context, method, need)
            if isinstance(caller, grpc.Status):
                end_with(context, caller)
                return
            self.watching += watch
            # Each call runs in a task of its own, so the value goes with it; no reset, which would
            # fail when grpc closes the stream from another context.
            CALLER.set(caller)
            try:
                async for response in responses(behavior, request, context):
                    yield response
            finally:
                self.watching -= watch

        return admitted

    def _current(self) -> Config:
        """The config in force; the credentials follow it when a reload replaced it."""
        config = self._live.current.config
        if config is not self._config:
            self._config = config
            if config.policy.access != self._keeper.access:
                self._keeper = Gatekeeper(config.policy.access)
            self._rates.forget(config.lanes.keys())
        return config

    def _admit(self, request: Any, context: Context, method: str, need: Need) -> Principal | grpc.Status:
        """The caller, after its credential and its lane's rate; else the status that refuses it."""
        lane = getattr(request, "lane", None) if need is Need.LANE else None
        caller = self._keeper.admit(need, _bearer(context), lane)
        if isinstance(caller, Refusal):
            self.refusals.refused(method, f"{caller.reason}: {caller.message}")
            metadata = {"method": method.lstrip("/"), "requires": caller.required.value}
            return refused(caller.unauthenticated, caller.reason, caller.message, metadata)
        config = self._current()
        if lane is not None and lane in config.lanes:
            ceilings = config.policy.ceilings
            wait_s = self._rates.wait_s(lane, ceilings.lane_requests_per_s, ceilings.lane_burst)
            if wait_s > 0:
                rate = f"lane {lane!r} is over its {ceilings.lane_requests_per_s:g} calls per second"
                return self._exhausted(method, f"lane {lane} request rate", rate, wait_s)
        return caller

    def _exhausted(self, method: str, subject: str, message: str, retry_s: float) -> grpc.Status:
        self.exhausted.refused(method, message)
        return resource_exhausted(subject, message, retry_s)


def _refusing_unread(status: grpc.Status) -> Handler:
    """A unary method's handler that ends the call with `status` without reading its request."""

    async def refuse(requests: AsyncIterator[Any], context: Context) -> None:
        end_with(context, status)

    return grpc.stream_unary_rpc_method_handler(refuse)


def _bearer(context: Context) -> str | None:
    """The bearer token of the call, or None without one. Metadata keys arrive lower-cased."""
    for key, value in context.invocation_metadata() or ():
        if key == AUTHORIZATION:
            text = value.decode() if isinstance(value, bytes) else value
            if text[: len(BEARER)].lower() == BEARER:
                return text[len(BEARER) :].strip() or None
            return ""  # present but not a bearer token: unknown, not missing
    return None
