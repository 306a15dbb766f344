"""An intruder among the simulated lanes ([[events]] of kind forge): forged reports and operator
calls in one burst, each answer counted, and the service's own books read either side of it.

The burst takes one instant of simulated time and no lane acts in between, so whatever the books
(Economics spend and reports, Health budgets, breakers and stop-loss) show moved across it, the
intruder moved. A call counts as accepted into steering when the service booked it (a report
acknowledged for a decision it knows, not as a duplicate) or obeyed it (an operator call answered).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

import grpc
from google.rpc import error_details_pb2, status_pb2

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.config.model import Config
from orxaq_grpc.outcomes.validation import MAX_RETRY_AFTER_S
from orxaq_grpc.simulate.kpis import Books, Intrusion
from orxaq_grpc.simulate.scenario import UNKNOWN_TOKEN, Forge, Scenario

Metadata = tuple[tuple[str, str], ...]
RPC_TIMEOUT_S = 30.0
STATUS_DETAILS = "grpc-status-details-bin"
FORGED_LATENCY_S = 86_400.0  # a day: a cycle time no real call has
FORGED_VALUE_PER_DAY_USD = 1_000_000.0
ECONOMICS_WINDOW = "30d"  # the widest: it holds every report of a run shorter than that


class Calls(Protocol):
    """What an intruder (and the books' reading) calls: a service's RoutingServiceStub, or the
    simulator's round robin over replicas (replicas.RoundRobin)."""

    Report: Any
    Health: Any
    Economics: Any
    Scale: Any
    SetStopLoss: Any


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


async def read_books(stub: Calls, metadata: Metadata | None) -> Books:
    health = await stub.Health(pb.HealthRequest(), timeout=RPC_TIMEOUT_S, metadata=metadata)
    economics = await stub.Economics(pb.EconomicsRequest(), timeout=RPC_TIMEOUT_S, metadata=metadata)
    window = next(w for w in economics.windows if w.window == ECONOMICS_WINDOW)
    guardrails = health.guardrails
    return Books(
        spend_usd=window.overall.spend_usd,
        reports=window.overall.reports,
        unknown_reports=window.overall.unknown_decision_reports,
        budgets={f"{b.scope} {b.name}".strip(): b.spent_usd + b.reserved_usd for b in health.budgets},
        breakers={
            f"{b.scope} {b.name}": (
                b.state,
                b.openings,
                round(b.reopens_in_s, 6),
                b.consecutive_failures,
                b.window_reports,
                b.window_failures,
            )
            for b in health.breakers
        },
        stop_loss=(guardrails.stop_loss_active, guardrails.since_unix, guardrails.trigger),
    )


class Intruder:
    """One forge event's burst against one run's service."""

    def __init__(
        self,
        index: int,
        forge: Forge,
        scenario: Scenario,
        config: Config,
        lane_tokens: dict[str, str],
    ) -> None:
        self.forge = forge
        self._scenario = scenario
        self._rng = random.Random(f"{scenario.seed}:forge:{index}")
        token: str | None = None
        if forge.credential == UNKNOWN_TOKEN:
            token = f"forged-{self._rng.getrandbits(192):048x}"
        elif forge.lane:
            token = lane_tokens.get(forge.lane)  # none to steal with access off
        self._metadata = bearer(token) if token else None
        self._models = [(m.id, m.provider) for m in config.models if m.enabled]
        self._lanes = list(dict.fromkeys(lane.routes_as for lane in scenario.lanes))
        self.record = Intrusion(
            name=forge.name or f"events.{index}",
            at_s=forge.at_s,
            credential=forge.credential,
            sent_token=token is not None,
        )

    async def attack(
        self,
        stub: Calls,
        victims: Sequence[tuple[pb.RouteDecision, bool]],
    ) -> None:
        """`victims`: real decisions of the simulated lanes, those in flight (unreported) first, each
        part newest first, with whether it is in flight; those of the intruder's own lane are passed
        over."""
        forge = self.forge
        for j in range(forge.unknown_reports):
            model, provider = self._models[j % len(self._models)]
            lane = forge.lane or self._lanes[j % len(self._lanes)]
            decision_id = uuid.UUID(int=self._rng.getrandbits(128), version=4).hex
            await self._report(stub, "unknown_report", self._forged(j, decision_id, lane, provider, model))
        others = [pair for pair in victims if pair[0].lane != forge.lane]
        targets = [others[j % len(others)] for j in range(forge.cross_lane_reports)] if others else []
        named = {decision.decision_id: in_flight for decision, in_flight in targets}
        self.record.victims = len(named)
        self.record.in_flight_victims = sum(named.values())
        for j, (decision, _) in enumerate(targets):
            # With a stolen lane token every other report names its own lane: the token's lane, but
            # another lane's decision. Otherwise the victim's lane, as the victim would.
            lane = forge.lane if forge.lane and j % 2 else decision.lane
            report = self._forged(j, decision.decision_id, lane, decision.provider, decision.model)
            await self._report(stub, "cross_lane_report", report)
        if forge.scale_and_stop_loss:
            await self._stop_loss(stub, active=False)
            await self._scale(stub)
            await self._stop_loss(stub, active=True)

    def _forged(self, j: int, decision_id: str, lane: str, provider: str, model: str) -> pb.ReportRequest:
        """A third rate limited for the longest retry-after a report may carry, a third server
        errors, a third answers that failed validation: each claiming the forge's cost."""
        outcome = (pb.OUTCOME_RATE_LIMITED, pb.OUTCOME_SERVER_ERROR, pb.OUTCOME_SUCCESS)[j % 3]
        return pb.ReportRequest(
            decision_id=decision_id,
            lane=lane,
            provider=provider,
            model=model,
            latency_s=FORGED_LATENCY_S,
            outcome=outcome,
            retry_after_s=MAX_RETRY_AFTER_S if outcome == pb.OUTCOME_RATE_LIMITED else 0.0,
            validation_passed=False,
            cost_usd=self.forge.claimed_cost_usd,
        )

    async def _report(self, stub: Calls, call: str, report: pb.ReportRequest) -> None:
        try:
            ack = await stub.Report(report, timeout=RPC_TIMEOUT_S, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            self._refused(call, exc)
            return
        self.record.answered(call, "OK")
        if ack.duplicate:
            self.record.duplicates += 1
        elif not ack.decision_known:
            self.record.kept_unknown += 1
        else:
            self.record.accepted[call] += 1

    async def _stop_loss(self, stub: Calls, active: bool) -> None:
        request = pb.SetStopLossRequest(active=active, note=f"forged by {self.record.name}")
        try:
            await stub.SetStopLoss(request, timeout=RPC_TIMEOUT_S, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            self._refused("set_stop_loss", exc)
            return
        self.record.answered("set_stop_loss", "OK")
        self.record.accepted["set_stop_loss"] += 1

    async def _scale(self, stub: Calls) -> None:
        """One agent more for a lane (its own, or the scenario's first), worth $1M a day."""
        lane = self.forge.lane or self._lanes[0]
        agents = sum(s.agents for s in self._scenario.lanes if s.routes_as == lane) or 1
        request = pb.ScaleRequest(
            lane=lane,
            current_parallel_agents=agents,
            requested_parallel_agents=agents + 1,
            current_subagents_per_agent=1,
            requested_subagents_per_agent=1,
            value=pb.Flows(daily=pb.DailyFlow(usd_per_day=FORGED_VALUE_PER_DAY_USD, horizon_days=30)),
            cost=pb.Flows(daily=pb.DailyFlow(usd_per_day=1.0, horizon_days=30)),
            request_id=f"forged by {self.record.name}",
        )
        try:
            decision = await stub.Scale(request, timeout=RPC_TIMEOUT_S, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            self._refused("scale", exc)
            return
        self.record.answered("scale", "OK")
        self.record.accepted["scale"] += 1
        self.record.scale_actions.append(
            pb.ScaleAction.Name(decision.action).removeprefix("SCALE_ACTION_").lower()
        )

    def _refused(self, call: str, exc: grpc.aio.AioRpcError) -> None:
        self.record.answered(call, exc.code().name, _reason(exc))


def _reason(exc: grpc.aio.AioRpcError) -> str:
    """The refusal's ErrorInfo reason (CREDENTIALS_MISSING, OTHER_LANE, ...), the field a BadRequest
    names ("invalid lane"), or the ceiling a QuotaFailure names."""
    for key, value in exc.trailing_metadata() or ():
        if key != STATUS_DETAILS or not isinstance(value, bytes):
            continue
        for detail in status_pb2.Status.FromString(value).details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return str(info.reason)
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                return "invalid " + ", ".join(v.field for v in bad.field_violations)
            if detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
                quota = error_details_pb2.QuotaFailure()
                detail.Unpack(quota)
                return "over " + ", ".join(v.subject for v in quota.violations)
    return ""
