"""The RoutingService RPCs at the edge: convert messages, call the workflow, convert back.

`RoutingHandlers` converts each RPC's message to the application's plain types and its answer back;
`RoutingServicer` adapts it to the grpc.aio server, with one decorator mapping what the core raises
to status codes. Handlers are CPU-bound and short (about 100 µs), so they run on the event loop: no
thread hop, which is what made asyncio the cheaper server here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping
from concurrent.futures import Future
from types import MappingProxyType
from typing import Any, TypeVar

import grpc
from opentelemetry import trace

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq.routing.v1 import routing_pb2_grpc
from orxaq_grpc import __version__
from orxaq_grpc.access.roles import Need
from orxaq_grpc.application.outcomes import HealthView
from orxaq_grpc.application.workflow import RoutingWorkflow
from orxaq_grpc.outcomes.records import ReportRecord
from orxaq_grpc.routing.router import BudgetExhausted
from orxaq_grpc.scale.types import ScaleDecision
from orxaq_grpc.scoring import KIND as SCORING_KERNEL
from orxaq_grpc.service.convert import (
    breaker_to_proto,
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
from orxaq_grpc.service.errors import (
    budget_exhausted,
    budget_retry_after_s,
    end_with,
    invalid_argument,
    invalid_summary,
    plain,
    refused,
    violations_within,
)
from orxaq_grpc.service.gate import BATCH_REFUSALS, CALLER, ROUTING_SERVICE, ItemRefusal
from orxaq_grpc.service.runtime import protobuf_backend
from orxaq_grpc.service.watch import HealthBroadcast
from orxaq_grpc.store import NotConfirmed, StoreError
from orxaq_grpc.telemetry.observer import Observer
from orxaq_grpc.vocabulary import OtherLanesDecision, RequestInvalid, Violation, range_problem

log = logging.getLogger(__name__)

# A write the ledger has not confirmed in time is still queued: it may take effect yet, and an operator
# action retried is the same action again.
NOT_CONFIRMED = "the ledger has not confirmed it in time; it may still take effect, and retrying is safe"


class RoutingHandlers:
    """The RPCs as plain functions of a request message: conversion around the workflow."""

    def __init__(self, workflow: RoutingWorkflow, data_dir: str, observer: Observer | None = None) -> None:
        self.workflow = workflow
        self.observer = observer or Observer()  # what only the edge knows: answered calls, failed RPCs
        self._data_dir = data_dir
        self._started = time.monotonic()
        self.stopping = asyncio.Event()  # set on shutdown: ends WatchHealth streams at once
        self.broadcast = HealthBroadcast(workflow.health, self.health_of, self.stopping)  # for WatchHealth

    def route(self, message: pb.RouteRequest) -> pb.RouteDecision:
        request, wire = route_request_from_proto(message)
        return self.workflow.route(request, decision_to_proto, wire)

    def route_batch(
        self, message: pb.RouteBatchRequest, refused: Mapping[int, ItemRefusal] = MappingProxyType({})
    ) -> pb.RouteBatchResponse:
        """RouteBatch in one go (`route_batch_steps` driven to the end)."""
        steps = self.route_batch_steps(message, refused)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                response: pb.RouteBatchResponse = done.value
                return response

    def route_batch_steps(
        self, message: pb.RouteBatchRequest, refused: Mapping[int, ItemRefusal] = MappingProxyType({})
    ) -> Generator[None, None, pb.RouteBatchResponse]:
        """Each request answered on its own, in order: `refused` are the ones the gate refused (by
        position); the rest go to the workflow, which decides them in one pass, yielding every few
        milliseconds so the event loop serves other calls meanwhile."""
        requests = [
            None if position in refused else route_request_from_proto(request)
            for position, request in enumerate(message.requests)
        ]

        def answer(answers: list[pb.RouteDecision | Exception | None]) -> pb.RouteBatchResponse:
            # Built in place: a message passed to a constructor is copied, and a list of results
            # so built would copy every decision twice.
            response = pb.RouteBatchResponse()
            results = response.results
            failures = FirstOfEach()  # a ledger gone mid-batch fails hundreds of items the same way
            for position, outcome in enumerate(answers):
                result = results.add()
                if isinstance(outcome, pb.RouteDecision):
                    result.decision.CopyFrom(outcome)
                elif outcome is None:
                    result.error.CopyFrom(_gate_error(refused[position]))
                else:
                    result.error.CopyFrom(self._item_error(message.requests[position], outcome, failures))
            failures.summarize("RouteBatch")
            if (size := response.ByteSize()) > MAX_ANSWER_BYTES:
                raise AnswerTooLarge(
                    f"the answer to {len(results)} requests would be {size} bytes, over the "
                    f"{MAX_ANSWER_BYTES} bytes an answer may have: send fewer requests, or fewer with explain"
                )
            return response

        return (yield from self.workflow.route_batch_steps(requests, decision_to_proto, answer))

    def _item_error(self, request: pb.RouteRequest, exc: Exception, failures: FirstOfEach) -> pb.RouteError:
        """What a single Route would have failed with for this request, as an item's error (logged
        through the batch's `failures`)."""
        if isinstance(exc, RequestInvalid):
            violations = violations_within(exc.violations)
            return pb.RouteError(
                code=code_of(grpc.StatusCode.INVALID_ARGUMENT),
                message=f"invalid RouteRequest: {invalid_summary(exc.violations)}",
                field_violations=[
                    pb.FieldViolation(field=v.field, description=v.description) for v in violations
                ],
            )
        if isinstance(exc, BudgetExhausted):
            return pb.RouteError(
                code=code_of(grpc.StatusCode.RESOURCE_EXHAUSTED),
                message=str(exc),
                quota_subject=BUDGET_SUBJECT,
                retry_after_s=budget_retry_after_s(),
            )
        status = _failure("RouteBatch", exc, (request.lane, request.task.id), self.observer, failures)
        return pb.RouteError(code=code_of(status.code), message=status.details)

    def prepare_report(self, message: pb.ReportRequest) -> ReportRecord:
        report, wire = report_input_from_proto(message)
        return self.workflow.prepare_report(report, wire)

    def scale(self, message: pb.ScaleRequest) -> tuple[ScaleDecision, Future[bool]]:
        return self.workflow.scale(scale_request_from_proto(message))

    def set_stop_loss(self, message: pb.SetStopLossRequest, who: str) -> bool:
        return self.workflow.set_stop_loss(message.active, message.note, who)

    def reload_config(self, message: pb.ReloadConfigRequest, who: str) -> pb.ReloadConfigResponse:
        reloaded = self.workflow.reload_config(message.note, who)
        return pb.ReloadConfigResponse(
            reloaded=reloaded.reloaded,
            config_version=reloaded.version,
            previous_version=reloaded.previous_version,
            refusal=reloaded.refusal,
        )

    def close_breaker(self, message: pb.CloseBreakerRequest, who: str) -> pb.CloseBreakerResponse:
        changed, view = self.workflow.close_breaker(message.scope, message.name, message.note, who)
        breaker = breaker_to_proto(view, self.workflow.outcomes.breakers.now()) if view is not None else None
        return pb.CloseBreakerResponse(changed=changed, breaker=breaker)

    def pause_lane(self, message: pb.PauseLaneRequest, who: str) -> pb.PauseLaneResponse:
        changed = self.workflow.pause_lane(message.lane, message.paused, message.note, who)
        health = self.health()
        lane = next(lane for lane in health.lanes if lane.lane == message.lane)
        return pb.PauseLaneResponse(changed=changed, lane=lane)

    def economics(self, message: pb.EconomicsRequest) -> pb.EconomicsResponse:
        return economics_to_proto(self.workflow.economics(), self.workflow.config.version)

    def health(self, message: pb.HealthRequest | None = None) -> pb.HealthResponse:
        return self.health_of(self.workflow.health())

    def health_of(self, view: HealthView) -> pb.HealthResponse:
        return health_to_proto(
            self.workflow.config,
            view,
            uptime_s=time.monotonic() - self._started,
            scoring_kernel=SCORING_KERNEL,
            protobuf_backend=protobuf_backend(),
            version=__version__,
            pid=os.getpid(),
            data_dir=self._data_dir,
            monotonic_now=self.workflow.outcomes.breakers.now(),
        )


Req = TypeVar("Req")
Resp = TypeVar("Resp")
Method = Callable[["RoutingServicer", Req, "grpc.aio.ServicerContext[Req, Resp]"], Awaitable[Resp]]
# What `_statuses` makes of one: None when the call ends with the status set on its context.
Handled = Callable[["RoutingServicer", Req, "grpc.aio.ServicerContext[Req, Resp]"], Awaitable[Resp | None]]


def _statuses(
    rpc: str, about: Callable[[Any], tuple[str, str]], router_errors: bool = False
) -> Callable[[Method[Req, Resp]], Handled[Req, Resp]]:
    """Maps what the core raises to statuses: violations to INVALID_ARGUMENT with a BadRequest, an
    exhausted budget (when policy says error) to RESOURCE_EXHAUSTED, a ledger that refused to
    UNAVAILABLE, anything else to INTERNAL (logged with `about(request)`: the lane and a key; with
    `router_errors`, counted as a router error)."""

    def decorate(method: Method[Req, Resp]) -> Handled[Req, Resp]:
        @functools.wraps(method)
        async def handled(
            self: RoutingServicer, request: Req, context: grpc.aio.ServicerContext[Req, Resp]
        ) -> Resp | None:
            try:
                return await method(self, request, context)
            except Exception as exc:
                status = _failure(rpc, exc, about(request), self.handlers.observer if router_errors else None)
            end_with(context, status)  # outside the except block: the failure is freed with the call
            return None

        return handled

    return decorate


class FirstOfEach:
    """Errors logged once per message: the first of each in full, the others counted and summarized
    in one line (a batch's items failing alike)."""

    def __init__(self) -> None:
        self._first: dict[str, str] = {}  # by message: the first one, as logged
        self._more: dict[str, int] = {}

    def __call__(self, message: str, *args: object, exc_info: BaseException | None = None) -> None:
        if message in self._first:
            self._more[message] = self._more.get(message, 0) + 1
        else:
            self._first[message] = message % args
            log.error(message, *args, exc_info=exc_info)

    def summarize(self, rpc: str) -> None:
        for message, more in self._more.items():
            log.error("%s: %d more items failed as this one did: %s", rpc, more, self._first[message])


def _failure(
    rpc: str,
    exc: Exception,
    about: tuple[str, str],
    router_errors: Observer | None,
    log_error: Callable[..., None] = log.error,
) -> grpc.Status:
    """The status for what the handler raised; logged through `log_error` (and counted a router
    error) when it is ours."""
    if isinstance(exc, OtherLanesDecision) and (caller := CALLER.get()).is_lane:
        message = f"{caller.name!r} speaks for lane {caller.lane!r}: {exc.violations[0].description}"
        metadata = {"method": f"{ROUTING_SERVICE}/{rpc}", "requires": Need.OPERATOR.value}
        return refused(False, "OTHER_LANES_DECISION", message, metadata)
    if isinstance(exc, RequestInvalid):
        return invalid_argument(f"{rpc}Request", exc.violations)
    if isinstance(exc, BudgetExhausted):
        return budget_exhausted(str(exc))
    if isinstance(exc, AnswerTooLarge):
        return plain(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
    lane, key = about
    if isinstance(exc, NotConfirmed):
        log_error("%s: the ledger did not confirm in time (lane %r, %r): %s", rpc, lane, key, exc)
        return plain(grpc.StatusCode.UNAVAILABLE, NOT_CONFIRMED)
    if isinstance(exc, StoreError):
        # Nothing was written: retrying is safe once the ledger is back.
        log_error("%s: the ledger refused (lane %r, %r): %s", rpc, lane, key, exc)
        return plain(grpc.StatusCode.UNAVAILABLE, "the ledger is unavailable; retry later")
    log_error("%s failed (lane %r, %r)", rpc, lane, key, exc_info=exc)
    trace.get_current_span().record_exception(exc)
    if router_errors is not None:
        router_errors.route_failed(lane)
    return plain(grpc.StatusCode.INTERNAL, "internal error; the server log has the details")


def _nothing(request: object) -> tuple[str, str]:
    return "", ""


def _batch_about(request: pb.RouteBatchRequest) -> tuple[str, str]:
    """A batch in the log: its lanes, and how many requests."""
    lanes = sorted({r.lane[:64] for r in request.requests})
    return ",".join(lanes[:8]) + (",..." if len(lanes) > 8 else ""), f"{len(request.requests)} requests"


def _gate_error(refusal: ItemRefusal) -> pb.RouteError:
    return pb.RouteError(
        code=code_of(refusal.code),
        reason=refusal.reason,
        message=refusal.message,
        quota_subject=refusal.quota_subject,
        retry_after_s=refusal.retry_after_s,
    )


def code_of(status: grpc.StatusCode) -> int:
    """The google.rpc.Code number of a status code."""
    number: int = status.value[0]
    return number


class AnswerTooLarge(Exception):
    """A RouteBatch answer past what the server may send: refused whole, its reservations freed."""


class RoutingServicer(routing_pb2_grpc.RoutingServiceServicer):
    def __init__(self, handlers: RoutingHandlers) -> None:
        self.handlers = handlers

    @_statuses("Route", lambda r: (r.lane, r.task.id), router_errors=True)
    async def Route(
        self, request: pb.RouteRequest, context: grpc.aio.ServicerContext[pb.RouteRequest, pb.RouteDecision]
    ) -> pb.RouteDecision:
        return self.handlers.route(request)

    @_statuses("RouteBatch", _batch_about)
    async def RouteBatch(
        self,
        request: pb.RouteBatchRequest,
        context: grpc.aio.ServicerContext[pb.RouteBatchRequest, pb.RouteBatchResponse],
    ) -> pb.RouteBatchResponse:
        # In steps: a thousand decisions take a while, and other calls are served in between. A call
        # cancelled meanwhile closes the steps, which frees what its decisions reserved.
        steps = self.handlers.route_batch_steps(request, BATCH_REFUSALS.get())
        try:
            while True:
                try:
                    next(steps)
                except StopIteration as done:
                    response: pb.RouteBatchResponse = done.value
                    return response
                await asyncio.sleep(0)
        finally:
            steps.close()

    @_statuses("Report", lambda r: (r.lane, r.decision_id))
    async def Report(
        self, request: pb.ReportRequest, context: grpc.aio.ServicerContext[pb.ReportRequest, pb.ReportAck]
    ) -> pb.ReportAck:
        handlers = self.handlers
        if handlers.workflow.outcomes.remembers(request.decision_id):
            record = handlers.prepare_report(request)
        else:  # the ledger (or Redis) is asked for the decision: a slow one must not stall every Route
            record = await asyncio.to_thread(handlers.prepare_report, request)
        durable = handlers.workflow.write_report(record)
        # Counted once durable and new, whether or not this call is still there to hear it
        # (a deadline or a disconnect mid-commit must not leave a stored report uncounted).
        # Registered before the await below, so the count lands before the ack.
        loop = asyncio.get_running_loop()
        durable.add_done_callback(lambda done: _count_when_new(loop, handlers.workflow, record, done))
        new = await asyncio.shield(asyncio.wrap_future(durable))
        handlers.observer.answered_report(record, new)
        return report_ack(record, new)

    @_statuses("Scale", lambda r: (r.lane or r.group, r.request_id))
    async def Scale(
        self, request: pb.ScaleRequest, context: grpc.aio.ServicerContext[pb.ScaleRequest, pb.ScaleDecision]
    ) -> pb.ScaleDecision:
        # It sums windows of economics: off the loop that routes.
        decision, written = await asyncio.to_thread(self.handlers.scale, request)
        await asyncio.shield(asyncio.wrap_future(written))
        self.handlers.workflow.scaled(decision)
        return scale_decision_to_proto(decision)

    @_statuses("SetStopLoss", lambda r: ("", r.note[:64]))
    async def SetStopLoss(
        self,
        request: pb.SetStopLossRequest,
        context: grpc.aio.ServicerContext[pb.SetStopLossRequest, pb.SetStopLossResponse],
    ) -> pb.SetStopLossResponse:
        changed = await asyncio.to_thread(self.handlers.set_stop_loss, request, CALLER.get().name)
        view = self.handlers.workflow.outcomes.guardrails.view()
        return pb.SetStopLossResponse(changed=changed, guardrails=guardrails_to_proto(view))

    # The operator's controls wait for the ledger (and a reload reads the config): off the loop.

    @_statuses("ReloadConfig", lambda r: ("", r.note[:64]))
    async def ReloadConfig(
        self,
        request: pb.ReloadConfigRequest,
        context: grpc.aio.ServicerContext[pb.ReloadConfigRequest, pb.ReloadConfigResponse],
    ) -> pb.ReloadConfigResponse:
        return await asyncio.to_thread(self.handlers.reload_config, request, CALLER.get().name)

    @_statuses("CloseBreaker", lambda r: ("", f"{r.scope}:{r.name}"[:64]))
    async def CloseBreaker(
        self,
        request: pb.CloseBreakerRequest,
        context: grpc.aio.ServicerContext[pb.CloseBreakerRequest, pb.CloseBreakerResponse],
    ) -> pb.CloseBreakerResponse:
        return await asyncio.to_thread(self.handlers.close_breaker, request, CALLER.get().name)

    @_statuses("PauseLane", lambda r: (r.lane[:64], r.note[:64]))
    async def PauseLane(
        self,
        request: pb.PauseLaneRequest,
        context: grpc.aio.ServicerContext[pb.PauseLaneRequest, pb.PauseLaneResponse],
    ) -> pb.PauseLaneResponse:
        return await asyncio.to_thread(self.handlers.pause_lane, request, CALLER.get().name)

    @_statuses("Economics", _nothing)
    async def Economics(
        self,
        request: pb.EconomicsRequest,
        context: grpc.aio.ServicerContext[pb.EconomicsRequest, pb.EconomicsResponse],
    ) -> pb.EconomicsResponse:
        # Summing 30 days of buckets takes a while: not on the loop that routes.
        return await asyncio.to_thread(self.handlers.economics, request)

    @_statuses("Health", _nothing)
    async def Health(
        self,
        request: pb.HealthRequest,
        context: grpc.aio.ServicerContext[pb.HealthRequest, pb.HealthResponse],
    ) -> pb.HealthResponse:
        return self.handlers.health(request)

    async def WatchHealth(
        self,
        request: pb.WatchHealthRequest,
        context: grpc.aio.ServicerContext[pb.WatchHealthRequest, pb.HealthResponse],
    ) -> AsyncIterator[bytes]:
        """Serialized HealthResponses: one encoding per snapshot, shared by every stream (wire.py
        sends bytes as they are)."""
        shortest = self.handlers.workflow.config.policy.ceilings.min_watch_heartbeat_s
        heartbeat_s = request.heartbeat_s or max(DEFAULT_HEARTBEAT_S, shortest)
        if problem := range_problem(heartbeat_s, lo=shortest, hi=MAX_HEARTBEAT_S):
            end_with(context, invalid_argument("WatchHealthRequest", [Violation("heartbeat_s", problem)]))
            return
        async for snapshot in self.handlers.broadcast.watch(heartbeat_s):
            yield snapshot


def _count_when_new(
    loop: asyncio.AbstractEventLoop, workflow: RoutingWorkflow, record: ReportRecord, durable: Future[bool]
) -> None:
    """On the ledger's writer thread: hands a durable, new report to the loop to count."""
    if durable.exception() is None and durable.result():
        try:
            loop.call_soon_threadsafe(workflow.count_report, record)
        except RuntimeError:  # the loop is gone (shutdown): the next start counts it from the ledger
            log.warning("report %r is durable; it will be counted at the next start", record.decision_id)


# What the server sends at most (service/server.py's MAX_MESSAGE_BYTES, which imports this module).
MAX_ANSWER_BYTES = 4 * 1024 * 1024
BUDGET_SUBJECT = "daily budget"  # the QuotaFailure subject of a budget refusal, as Route's status has it
DEFAULT_HEARTBEAT_S = 10.0
MAX_HEARTBEAT_S = 3600.0  # the shortest is policy's: ceilings.min_watch_heartbeat_s
