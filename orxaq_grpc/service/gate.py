"""Admission for every call, before its handler: who is calling, whether its role allows the call
(`access/roles.py`), and the ceilings on calls in flight, watch streams and each lane's rate.

A method that takes one request is served as if it took a stream of them, so the gate decides
before the request is read: a caller without the token the call needs, or one over the ceiling on
calls in flight, is answered without its request ever being read, and a request that does not
arrive within ARRIVAL_S frees its place. So a flood of large requests holds at most the ceiling's
worth of them, however many connections bring them.

A refusal is a status with details a client can act on: UNAUTHENTICATED or PERMISSION_DENIED with a
google.rpc.ErrorInfo (the reason and the token the call needs), RESOURCE_EXHAUSTED with a QuotaFailure
and a RetryInfo. Refusals are logged by count per period, never a line each: a flood of bad calls is
no flood of log. Policy is read on every call, so a reload rotates tokens and moves ceilings at once.

The admitted caller is `CALLER` for the rest of the call, so the handlers can tell a lane's own
credential from an open service (a report for another lane's decision is then PERMISSION_DENIED).

RouteBatch is admitted by its token like Route; then each of its requests is checked as a Route of
its own would be (the lane is the caller's; the lane's rate, one token per request), and a request
that fails is that request's error (`BATCH_REFUSALS`), not the call's. Only a batch that is empty or
over the policy's limit is refused whole, before any request takes a token.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import grpc
from grpc_health.v1 import health

from orxaq.routing.v1 import routing_pb2
from orxaq_grpc.access.rates import LaneRates
from orxaq_grpc.access.roles import OPEN, Gatekeeper, Need, Principal, Refusal
from orxaq_grpc.application.workflow import batch_size_problem
from orxaq_grpc.config.model import Config
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.service.errors import end_with, invalid_argument, plain, refused, resource_exhausted
from orxaq_grpc.service.interceptor import Behavior, Context, Handler, WrappingInterceptor, answer, responses
from orxaq_grpc.service.wire import RefusalLog
from orxaq_grpc.vocabulary import Violation

ROUTING_SERVICE = routing_pb2.DESCRIPTOR.services_by_name["RoutingService"].full_name
_ROUTING_NEEDS = {
    "Route": Need.LANE,
    "RouteBatch": Need.LANE,
    "Report": Need.LANE,
    "Scale": Need.OPERATOR,
    "SetStopLoss": Need.OPERATOR,
    "ReloadConfig": Need.OPERATOR,
    "CloseBreaker": Need.OPERATOR,
    "PauseLane": Need.OPERATOR,
    "Health": Need.READ,
    "WatchHealth": Need.READ,
    "Economics": Need.READ,
}
WATCHES = frozenset({f"/{ROUTING_SERVICE}/WatchHealth", f"/{health.SERVICE_NAME}/Watch"})


@dataclass(frozen=True, slots=True)
class ItemRefusal:
    """Why the gate refused one request of a batch: the status a Route of its own would have had."""

    code: grpc.StatusCode
    message: str
    reason: str = ""  # the ErrorInfo reason (OTHER_LANE)
    quota_subject: str = ""  # RESOURCE_EXHAUSTED: the QuotaFailure subject
    retry_after_s: float = 0.0


# The caller of the call in progress (OPEN where no credentials are configured).
CALLER: contextvars.ContextVar[Principal] = contextvars.ContextVar("caller", default=OPEN)
# RouteBatch: the requests the gate refused, by position in the batch.
BATCH_REFUSALS: contextvars.ContextVar[Mapping[int, ItemRefusal]] = contextvars.ContextVar(
    "batch_refusals", default=MappingProxyType({})
)

# A request that has not arrived this long after its call began is not waited for: its place goes
# to another call.
ARRIVAL_S = 30.0
AUTHORIZATION = "authorization"
BEARER = "bearer "


def need_of(method: str) -> Need:
    """What a method needs: RoutingService's as listed (one not listed, say a new RPC, needs an
    operator until it is); the other services' (grpc.health.v1, reflection) are reads."""
    service, _, name = method.lstrip("/").rpartition("/")
    if service == ROUTING_SERVICE:
        return _ROUTING_NEEDS.get(name, Need.OPERATOR)
    return Need.READ


class Gate(WrappingInterceptor):
    """Admits or refuses each call; runs on the server's event loop, so its counts need no lock."""

    def __init__(self, live: LiveRouter, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._live = live
        self._config: Config | None = None
        self._keeper = Gatekeeper(live.current.config.policy.access)
        self._rates = LaneRates(clock)
        self.in_flight = 0  # calls holding a place: unary calls until answered, streams until read
        self.watching = 0
        self.refusals = RefusalLog("call(s) without the credentials they need")
        self.exhausted = RefusalLog("call(s) over a ceiling")

    def _wrap(self, handler: Handler, method: str) -> Handler:
        """A method that takes one request is taken as a stream, read by the gate once it admits
        the call; one that takes a stream (reflection) is admitted before it is read."""
        if handler.request_streaming:
            return super()._wrap(handler, method)
        deserialize, serialize = handler.request_deserializer, handler.response_serializer
        # grpc's handler holds the behavior of its kind; the stubs type the sync server's.
        behavior: Behavior = getattr(handler, "unary_stream" if handler.response_streaming else "unary_unary")
        if handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                self._read_streaming(behavior, method), deserialize, serialize
            )
        return grpc.stream_unary_rpc_method_handler(
            self._read_unary(behavior, method), deserialize, serialize
        )

    def _read_unary(self, behavior: Behavior, method: str) -> Behavior:
        need = need_of(method)

        async def admitted(requests: AsyncIterator[Any], context: Context) -> Any:
            caller = self._identify(context, method, need)
            if isinstance(caller, grpc.Status):
                end_with(context, caller)
                return None
            if full := self._over_ceiling(method):
                end_with(context, full)
                return None
            self.in_flight += 1
            try:
                request = await _read_one(context)
                refusals: Mapping[int, ItemRefusal] = {}
                if isinstance(request, routing_pb2.RouteBatchRequest):
                    checked = self._batch_checks(caller, request, method)
                    if isinstance(checked, grpc.Status):
                        request = checked
                    else:
                        refusals = checked
                elif not isinstance(request, grpc.Status):
                    request = self._lane_checks(caller, request, method, need) or request
                if isinstance(request, grpc.Status):
                    end_with(context, request)
                    return None
                token = CALLER.set(caller)
                refused_items = BATCH_REFUSALS.set(refusals)
                try:
                    return await answer(behavior, request, context)
                finally:
                    BATCH_REFUSALS.reset(refused_items)
                    CALLER.reset(token)
            finally:
                self.in_flight -= 1

        return admitted

    def _read_streaming(self, behavior: Behavior, method: str) -> Behavior:
        need, watch = need_of(method), method in WATCHES

        async def admitted(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            caller = self._identify(context, method, need)
            if isinstance(caller, grpc.Status):
                end_with(context, caller)
                return
            ceilings = self._current().policy.ceilings
            refusal = self._over_ceiling(method)
            if refusal is None and watch and self.watching >= ceilings.max_watch_streams:
                message = f"{self.watching} watch streams are open, the most policy allows"
                refusal = self._exhausted(method, "watch streams", message, ceilings.retry_after_s)
            if refusal is not None:
                end_with(context, refusal)
                return
            self.in_flight += 1  # while its request is read
            try:
                request = await _read_one(context)
            finally:
                self.in_flight -= 1
            if isinstance(request, grpc.Status):
                end_with(context, request)
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

    def _unary(self, behavior: Behavior, method: str) -> Behavior:
        raise AssertionError(f"{method}: a unary method is read by the gate (_read_unary)")

    def _streaming(self, behavior: Behavior, method: str) -> Behavior:
        """A method that takes a stream (reflection): admitted by its token before it is read."""
        need = need_of(method)

        async def admitted(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            caller = self._identify(context, method, need)
            if isinstance(caller, grpc.Status):
                end_with(context, caller)
                return
            CALLER.set(caller)
            async for response in responses(behavior, requests, context):
                yield response

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

    def _identify(self, context: Context, method: str, need: Need) -> Principal | grpc.Status:
        """The caller by its token, under the credentials in force now; else the refusal."""
        self._current()
        caller = self._keeper.identify(need, _bearer(context))
        return self._refused(method, caller) if isinstance(caller, Refusal) else caller

    def _over_ceiling(self, method: str) -> grpc.Status | None:
        ceilings = self._current().policy.ceilings
        if self.in_flight < ceilings.max_concurrent_rpcs:
            return None
        message = f"{self.in_flight} calls in flight, the most policy allows"
        return self._exhausted(method, "concurrent calls", message, ceilings.retry_after_s)

    def _lane_checks(self, caller: Principal, request: Any, method: str, need: Need) -> grpc.Status | None:
        """For a lane's call: the lane is the caller's, and within its rate."""
        lane = getattr(request, "lane", None) if need is Need.LANE else None
        if not isinstance(lane, str):  # not a lane's call, or a malformed request (wire.py answers it)
            return None
        if refusal := self._keeper.speaks_for(caller, lane):
            return self._refused(method, refusal)
        config = self._current()
        if lane in config.lanes:
            ceilings = config.policy.ceilings
            wait_s = self._rates.wait_s(lane, ceilings.lane_requests_per_s, ceilings.lane_burst)
            if wait_s > 0:
                rate = f"lane {lane!r} is over its {ceilings.lane_requests_per_s:g} calls per second"
                return self._exhausted(method, f"lane {lane} request rate", rate, wait_s)
        return None

    def _batch_checks(
        self, caller: Principal, batch: routing_pb2.RouteBatchRequest, method: str
    ) -> grpc.Status | Mapping[int, ItemRefusal]:
        """A batch within the policy's size, then each request as `_lane_checks` checks a Route: the
        refusals by position, or the status refusing the whole call (before any request takes a token)."""
        config = self._current()
        requests = batch.requests
        if problem := batch_size_problem(len(requests), config.policy.limits.max_batch_items):
            return invalid_argument("RouteBatchRequest", [Violation("requests", problem)])
        ceilings = config.policy.ceilings
        refusals: dict[int, ItemRefusal] = {}
        for position, request in enumerate(requests):
            lane = request.lane
            if refusal := self._keeper.speaks_for(caller, lane):
                self.refusals.refused(method, f"{refusal.reason}: {refusal.message}")
                refusals[position] = ItemRefusal(
                    grpc.StatusCode.PERMISSION_DENIED, refusal.message, reason=refusal.reason
                )
            elif lane in config.lanes:
                wait_s = self._rates.wait_s(lane, ceilings.lane_requests_per_s, ceilings.lane_burst)
                if wait_s > 0:
                    rate = f"lane {lane!r} is over its {ceilings.lane_requests_per_s:g} calls per second"
                    self.exhausted.refused(method, rate)
                    refusals[position] = ItemRefusal(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        rate,
                        quota_subject=f"lane {lane} request rate",
                        retry_after_s=wait_s,
                    )
        return refusals

    def _refused(self, method: str, refusal: Refusal) -> grpc.Status:
        self.refusals.refused(method, f"{refusal.reason}: {refusal.message}")
        metadata = {"method": method.lstrip("/"), "requires": refusal.required.value}
        return refused(refusal.unauthenticated, refusal.reason, refusal.message, metadata)

    def _exhausted(self, method: str, subject: str, message: str, retry_s: float) -> grpc.Status:
        self.exhausted.refused(method, message)
        return resource_exhausted(subject, message, retry_s)


async def _read_one(context: Context) -> Any:
    """The call's one request, or the status that ends a call whose request does not come."""
    try:
        async with asyncio.timeout(ARRIVAL_S):
            request = await context.read()
    except TimeoutError:
        return plain(grpc.StatusCode.DEADLINE_EXCEEDED, f"the request did not arrive within {ARRIVAL_S:g} s")
    if request is grpc.aio.EOF:
        return invalid_argument("request", [Violation("request", "the call ended before its request")])
    return request


def _bearer(context: Context) -> str | None:
    """The bearer token of the call, or None without one. Metadata keys arrive lower-cased."""
    for key, value in context.invocation_metadata() or ():
        if key == AUTHORIZATION:
            text = value.decode() if isinstance(value, bytes) else value
            if text[: len(BEARER)].lower() == BEARER:
                return text[len(BEARER) :].strip() or None
            return ""  # present but not a bearer token: unknown, not missing
    return None
