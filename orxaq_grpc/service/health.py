"""grpc.health.v1 with `List`, and a health service name per lane that follows its detection state.

grpcio-health-checking's aio servicer answers `Check` and `Watch` but not `List`, which reflection
advertises all the same; this subclass answers it with every registered name's status, as the health
protocol's `HealthListResponse` has it.

Every configured lane also has a name of its own, `orxaq.routing.v1.RoutingService/<lane>` (see
`lane_service_name`): SERVING, except NOT_SERVING while the lane is `degraded` (its router-error rate
at or over `detection.degraded_router_error_rate`) or disabled in lanes.toml. `elevated_fallback` and
`idle` lanes still serve. The states are read from the outcomes' detection every
`stop_loss.check_interval_s`, the stop-loss checks' own cadence, so a lane added by a config reload
appears and a removed one goes (Check: NOT_FOUND, Watch: SERVICE_UNKNOWN) at the next update. The
server's own names ("" and the RoutingService) are set by the server, as before. Graceful shutdown
turns every name NOT_SERVING for good and stops following the lanes.

The subclass reads and removes entries of the parent's status table (`_server_status`, with
`_server_watchers` to wake watchers): grpcio-health-checking is pinned in lock-step with grpcio.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2

from orxaq.routing.v1 import routing_pb2
from orxaq_grpc.application.outcomes import Outcomes
from orxaq_grpc.outcomes.detection import DEGRADED

log = logging.getLogger(__name__)

LANE_SERVICE_PREFIX = routing_pb2.DESCRIPTOR.services_by_name["RoutingService"].full_name + "/"
# As grpc-go's health server: past this many names, List answers RESOURCE_EXHAUSTED, as the protocol allows.
MAX_LISTED_SERVICES = 100

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_STATUS_NAMES = {SERVING: "SERVING", NOT_SERVING: "NOT_SERVING"}


def lane_service_name(lane: str) -> str:
    """The grpc.health.v1 service name of a lane: `orxaq.routing.v1.RoutingService/codex`."""
    return LANE_SERVICE_PREFIX + lane


class HealthServicer(health.aio.HealthServicer):  # type: ignore[misc]  # grpc_health ships no types
    """The aio HealthServicer with `List`, per-lane names and a way to remove a name."""

    def __init__(self) -> None:
        super().__init__()
        self._lanes: set[str] = set()  # the lane names this servicer set, to remove those that go
        self._follower: asyncio.Task[None] | None = None

    async def List(
        self,
        request: health_pb2.HealthListRequest,
        context: grpc.aio.ServicerContext[health_pb2.HealthListRequest, health_pb2.HealthListResponse],
    ) -> health_pb2.HealthListResponse:
        statuses = dict(self._server_status)  # a snapshot: the protocol asks for no more
        if len(statuses) > MAX_LISTED_SERVICES:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{len(statuses)} health services exceed the {MAX_LISTED_SERVICES} that List answers",
            )
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status) for name, status in statuses.items()
            }
        )

    async def remove(self, service: str) -> None:
        """Forgets `service`: Check answers NOT_FOUND, List leaves it out, watchers get SERVICE_UNKNOWN.
        Ignored after graceful shutdown, like `set`."""
        if self._gracefully_shutting_down:
            return
        condition = self._server_watchers.get(service)
        if condition is None:
            self._server_status.pop(service, None)
            return
        async with condition:
            self._server_status.pop(service, None)
            condition.notify_all()

    async def update_lanes(self, outcomes: Outcomes) -> None:
        """Sets every configured lane's name from its detection state and removes names of lanes
        the config no longer has."""
        lanes = outcomes.config.lanes
        wanted: dict[str, int] = {}
        for state in outcomes.detection().lanes:
            spec = lanes.get(state.name)
            if spec is None:  # removed by a reload between the two reads: gone
                continue
            name = lane_service_name(state.name)
            status = wanted[name] = NOT_SERVING if state.state == DEGRADED or not spec.enabled else SERVING
            previous = self._server_status.get(name)
            if previous == status:
                continue
            # Quiet for the lanes serving at start; a change, a lane added later or one not serving is told.
            if previous is not None or self._lanes or status == NOT_SERVING:
                why = "disabled in lanes.toml" if not spec.enabled else f"{state.state}: {state.reason}"
                log.info("health: %s %s (%s)", name, _STATUS_NAMES[status], why)
            await self.set(name, status)
        for name in sorted(self._lanes - wanted.keys()):
            log.info("health: %s removed (the lane is no longer configured)", name)
            await self.remove(name)
        self._lanes = set(wanted)

    def follow_lanes(self, outcomes: Outcomes) -> None:
        """Updates the lanes' names every `stop_loss.check_interval_s` (read each round, so a reload
        changes it) until graceful shutdown; on the running loop, from the next interval on."""
        if self._follower is None and not self._gracefully_shutting_down:
            self._follower = asyncio.create_task(self._follow(outcomes), name="lane-health")

    async def _follow(self, outcomes: Outcomes) -> None:
        while True:
            await asyncio.sleep(outcomes.config.policy.stop_loss.check_interval_s)
            try:
                await self.update_lanes(outcomes)
            except Exception:
                log.exception("updating the lanes' health failed; trying again next round")

    async def enter_graceful_shutdown(self) -> None:
        """Every name NOT_SERVING for good; the lanes are no longer followed."""
        if self._follower is not None:
            self._follower.cancel()
        await super().enter_graceful_shutdown()
