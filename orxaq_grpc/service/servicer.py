"""The RoutingService RPCs: validate, convert, call the core, convert back.

`RoutingHandlers` holds what each RPC does; `RoutingServicer` adapts it to the
grpc.aio server, mapping a rejected request to INVALID_ARGUMENT with its field
violations. Handlers are CPU-bound and short (about 100 µs), so they run on the
event loop: no thread hop, which is what made asyncio the cheaper server here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future
from contextlib import asynccontextmanager
from typing import Any

import grpc
from opentelemetry import trace

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq.routing.v1 import routing_pb2_grpc
from orxaq_grpc import __version__
from orxaq_grpc.application.outcomes import HealthView, Outcomes
from orxaq_grpc.outcomes.records import ReportRecord
from orxaq_grpc.outcomes.validation import validate_report
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.routing.router import BudgetExhausted
from orxaq_grpc.routing.validation import RequestInvalid, Violation, range_problem
from orxaq_grpc.scale.types import ScaleDecision
from orxaq_grpc.scale.validation import validate_scale_request
from orxaq_grpc.scoring import KIND as SCORING_KERNEL
from orxaq_grpc.service.convert import (
    decision_to_proto,
    economics_to_proto,
    guardrails_to_proto,
    health_to_proto,
    report_ack,
    report_input_from_proto,
    route_request_from_proto,
    scale_decision_to_proto,
    scale_request_from_proto,
)
from orxaq_grpc.service.errors import budget_exhausted, invalid_argument
from orxaq_grpc.service.runtime import protobuf_backend
from orxaq_grpc.store import StoreError
from orxaq_grpc.telemetry.observer import Observer

log = logging.getLogger(__name__)


class RoutingHandlers:
    """The RPCs as plain functions of a request message."""

    def __init__(
        self, live: LiveRouter, outcomes: Outcomes, data_dir: str, observer: Observer | None = None
    ) -> None:
        self._live = live
        self.outcomes = outcomes
        self.observer = observer or Observer()
        self._data_dir = data_dir
        self._started = time.monotonic()
        self.stopping = asyncio.Event()  # set on shutdown: ends WatchHealth streams at once

    def route(self, message: pb.RouteRequest) -> pb.RouteDecision:
        router = self._live.current
        request, wire = route_request_from_proto(message)
        if violations := _merge(wire, router.validate(request)):
            raise RequestInvalid(violations)
        try:
            decision = router.route(request, guards=self.outcomes)
        except BudgetExhausted as refusal:
            self.outcomes.record_refusal(refusal)  # a refused lane shows in economics and detection
            self.observer.refused(refusal)
            raise
        try:
            self.outcomes.record_decision(decision)
            answer = decision_to_proto(decision)
        except BaseException:
            self.outcomes.abandon(decision)  # the lane never got it: free what Route reserved
            raise
        self.observer.routed(decision)
        return answer

    def prepare_report(self, message: pb.ReportRequest) -> ReportRecord:
        report, wire = report_input_from_proto(message)
        if violations := _merge(wire, validate_report(report, self._live.current.config)):
            raise RequestInvalid(violations)
        return self.outcomes.prepare_report(report)

    def count_report(self, record: ReportRecord) -> None:
        """A durable, new report: into economics, budgets and breakers, and into the metrics."""
        self.outcomes.apply_report(record)
        self.observer.counted_report(record)

    def scale(self, message: pb.ScaleRequest) -> tuple[ScaleDecision, Future[bool]]:
        """Decides and queues the decision for the log; the caller answers once it is durable."""
        request = scale_request_from_proto(message)
        config = self._live.current.config  # one snapshot: a reload must not move a group under it
        if violations := validate_scale_request(request, config):
            raise RequestInvalid(violations)
        return self.outcomes.guardrails.scale(request, config)

    def set_stop_loss(self, message: pb.SetStopLossRequest) -> bool:
        """True when the state changed; it is in the log by then."""
        limit = self._live.current.config.policy.limits.max_title_chars
        if len(message.note) > limit:
            raise RequestInvalid([Violation("note", f"is {len(message.note)} characters; at most {limit}")])
        return self.outcomes.guardrails.set_stop_loss(message.active, message.note) is not None

    def economics(self, message: pb.EconomicsRequest) -> pb.EconomicsResponse:
        return economics_to_proto(self.outcomes.economics(), self._live.current.config.version)

    def health(self, message: pb.HealthRequest | None = None) -> pb.HealthResponse:
        return self.health_of(self.outcomes.health())

    def health_of(self, view: HealthView) -> pb.HealthResponse:
        return health_to_proto(
            self._live.current.config,
            view,
            uptime_s=time.monotonic() - self._started,
            scoring_kernel=SCORING_KERNEL,
            protobuf_backend=protobuf_backend(),
            version=__version__,
            pid=os.getpid(),
            data_dir=self._data_dir,
            monotonic_now=time.monotonic(),
        )


class RoutingServicer(routing_pb2_grpc.RoutingServiceServicer):
    def __init__(self, handlers: RoutingHandlers) -> None:
        self._handlers = handlers

    async def Route(
        self, request: pb.RouteRequest, context: grpc.aio.ServicerContext[pb.RouteRequest, pb.RouteDecision]
    ) -> pb.RouteDecision:
        async with _edge(context, "Route", request.lane, request.task.id, self._handlers.observer):
            return self._handlers.route(request)
        raise AssertionError("unreachable: _edge aborts")

    async def Report(
        self, request: pb.ReportRequest, context: grpc.aio.ServicerContext[pb.ReportRequest, pb.ReportAck]
    ) -> pb.ReportAck:
        async with _edge(context, "Report", request.lane, request.decision_id):
            handlers = self._handlers
            record = handlers.prepare_report(request)
            durable = handlers.outcomes.write_report(record)
            # Counted once durable and new, whether or not this call is still there to hear it
            # (a deadline or a disconnect mid-commit must not leave a stored report uncounted).
            # Registered before the await below, so the count lands before the ack.
            loop = asyncio.get_running_loop()
            durable.add_done_callback(lambda done: _count_when_new(loop, handlers, record, done))
            new = await asyncio.shield(asyncio.wrap_future(durable))
            handlers.observer.answered_report(record, new)
            return report_ack(record, new)
        raise AssertionError("unreachable: _edge aborts")

    async def Scale(
        self, request: pb.ScaleRequest, context: grpc.aio.ServicerContext[pb.ScaleRequest, pb.ScaleDecision]
    ) -> pb.ScaleDecision:
        async with _edge(context, "Scale", request.lane or request.group, request.request_id):
            # It sums windows of economics: off the loop that routes.
            decision, written = await asyncio.to_thread(self._handlers.scale, request)
            await asyncio.shield(asyncio.wrap_future(written))
            self._handlers.observer.scaled(decision)
            return scale_decision_to_proto(decision)
        raise AssertionError("unreachable: _edge aborts")

    async def SetStopLoss(
        self,
        request: pb.SetStopLossRequest,
        context: grpc.aio.ServicerContext[pb.SetStopLossRequest, pb.SetStopLossResponse],
    ) -> pb.SetStopLossResponse:
        async with _edge(context, "SetStopLoss", "", request.note[:64]):
            changed = await asyncio.to_thread(self._handlers.set_stop_loss, request)
            view = self._handlers.outcomes.guardrails.view()
            return pb.SetStopLossResponse(changed=changed, guardrails=guardrails_to_proto(view))
        raise AssertionError("unreachable: _edge aborts")

    async def Economics(
        self,
        request: pb.EconomicsRequest,
        context: grpc.aio.ServicerContext[pb.EconomicsRequest, pb.EconomicsResponse],
    ) -> pb.EconomicsResponse:
        async with _edge(context, "Economics", "", ""):
            # Summing 30 days of buckets takes a while: not on the loop that routes.
            return await asyncio.to_thread(self._handlers.economics, request)
        raise AssertionError("unreachable: _edge aborts")

    async def Health(
        self,
        request: pb.HealthRequest,
        context: grpc.aio.ServicerContext[pb.HealthRequest, pb.HealthResponse],
    ) -> pb.HealthResponse:
        async with _edge(context, "Health", "", ""):
            return self._handlers.health(request)
        raise AssertionError("unreachable: _edge aborts")

    async def WatchHealth(
        self,
        request: pb.WatchHealthRequest,
        context: grpc.aio.ServicerContext[pb.WatchHealthRequest, pb.HealthResponse],
    ) -> AsyncIterator[pb.HealthResponse]:
        heartbeat_s = request.heartbeat_s or DEFAULT_HEARTBEAT_S
        if problem := range_problem(heartbeat_s, lo=MIN_HEARTBEAT_S, hi=MAX_HEARTBEAT_S):
            await context.abort_with_status(
                invalid_argument("WatchHealthRequest", [Violation("heartbeat_s", problem)])
            )
        outcomes = self._handlers.outcomes
        stopping = self._handlers.stopping
        last_states: tuple[object, ...] | None = None  # the last fingerprint sent: only compared
        last_sent = 0.0
        while not stopping.is_set():
            view = outcomes.health()
            states = view.fingerprint()
            now = time.monotonic()
            trigger = "initial" if last_states is None else "change" if states != last_states else "heartbeat"
            if trigger != "heartbeat" or now - last_sent >= heartbeat_s:
                snapshot = self._handlers.health_of(view)
                snapshot.trigger = trigger
                yield snapshot
                last_sent, last_states = now, states
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), min(WATCH_POLL_S, heartbeat_s))


def _count_when_new(
    loop: asyncio.AbstractEventLoop, handlers: RoutingHandlers, record: ReportRecord, durable: Future[bool]
) -> None:
    """On the ledger's writer thread: hands a durable, new report to the loop to count."""
    if durable.exception() is None and durable.result():
        try:
            loop.call_soon_threadsafe(handlers.count_report, record)
        except RuntimeError:  # the loop is gone (shutdown): the next start counts it from the ledger
            log.warning("report %r is durable; it will be counted at the next start", record.decision_id)


def _merge(wire: list[Violation], core: list[Violation]) -> list[Violation]:
    """Wire problems (an enum number nobody knows) first; the core's view of the same
    field, which saw it as unset, adds nothing."""
    seen = {v.field for v in wire}
    return wire + [v for v in core if v.field not in seen]


DEFAULT_HEARTBEAT_S = 10.0
MIN_HEARTBEAT_S, MAX_HEARTBEAT_S = 0.1, 3600.0
# How often a watcher looks for state changes: breaker and budget changes show within this.
WATCH_POLL_S = 0.25


@asynccontextmanager
async def _edge(
    context: grpc.aio.ServicerContext[Any, Any],
    rpc: str,
    lane: str,
    key: str,
    observer: Observer | None = None,
) -> AsyncIterator[None]:
    """Maps what the core raises to statuses: violations to INVALID_ARGUMENT, an exhausted
    budget (when policy says error) to RESOURCE_EXHAUSTED, anything else to INTERNAL. With an
    `observer`, a call failing with INTERNAL counts as a router error."""
    try:
        yield
    except RequestInvalid as exc:
        await context.abort_with_status(invalid_argument(f"{rpc}Request", exc.violations))
    except BudgetExhausted as exc:
        await context.abort_with_status(budget_exhausted(str(exc)))
    except StoreError as exc:
        # Nothing was written: retrying is safe once the ledger is back.
        log.error("%s: the ledger refused (lane %r, %r): %s", rpc, lane, key, exc)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "the ledger is unavailable; retry later")
    except Exception as exc:
        log.exception("%s failed (lane %r, %r)", rpc, lane, key)
        trace.get_current_span().record_exception(exc)
        if observer is not None:
            observer.route_failed(lane)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has the details")
