"""The RoutingService RPCs: validate, convert, call the core, convert back.

`RoutingHandlers` holds what each RPC does; `RoutingServicer` adapts it to the
grpc.aio server, mapping a rejected request to INVALID_ARGUMENT with its field
violations. Handlers are CPU-bound and short (about 100 µs), so they run on the
event loop: no thread hop, which is what made asyncio the cheaper server here.
"""

from __future__ import annotations

import logging
import os
import time

import grpc

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq.routing.v1 import routing_pb2_grpc
from orxaq_grpc import __version__
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.routing.validation import RequestInvalid
from orxaq_grpc.scoring import KIND as SCORING_KERNEL
from orxaq_grpc.service.convert import decision_to_proto, health_to_proto, route_request_from_proto
from orxaq_grpc.service.errors import invalid_argument
from orxaq_grpc.service.runtime import protobuf_backend

log = logging.getLogger(__name__)


class RoutingHandlers:
    """The RPCs as plain functions of a request message."""

    def __init__(self, live: LiveRouter) -> None:
        self._live = live
        self._started = time.monotonic()

    def route(self, message: pb.RouteRequest) -> pb.RouteDecision:
        router = self._live.current
        request, violations = route_request_from_proto(message)
        violations += router.validate(request)
        if violations:
            raise RequestInvalid(violations)
        return decision_to_proto(router.route(request))

    def health(self, message: pb.HealthRequest) -> pb.HealthResponse:
        return health_to_proto(
            self._live.current.config,
            uptime_s=time.monotonic() - self._started,
            scoring_kernel=SCORING_KERNEL,
            protobuf_backend=protobuf_backend(),
            version=__version__,
            pid=os.getpid(),
        )


class RoutingServicer(routing_pb2_grpc.RoutingServiceServicer):
    def __init__(self, handlers: RoutingHandlers) -> None:
        self._handlers = handlers

    async def Route(self, request: pb.RouteRequest, context: grpc.aio.ServicerContext) -> pb.RouteDecision:
        try:
            return self._handlers.route(request)
        except RequestInvalid as exc:
            await context.abort_with_status(invalid_argument("RouteRequest", exc.violations))
        except Exception:
            # The router already falls back on its own failures; this is the edge failing.
            log.exception("Route failed for lane %r task %r", request.lane, request.task.id)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has the details")
        raise AssertionError("unreachable: abort raises")

    async def Health(self, request: pb.HealthRequest, context: grpc.aio.ServicerContext) -> pb.HealthResponse:
        return self._handlers.health(request)
