"""Messages to core objects and back. The only module that knows both sides.

Enum numbers are shared by construction (see `routing.types`), so enums convert by
value; a number the core does not know is a wire-level violation.
"""

from __future__ import annotations

import enum
from typing import TypeVar

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.config.model import Config
from orxaq_grpc.routing.types import (
    Constraints,
    Decision,
    Objective,
    Profile,
    RouteRequest,
    Task,
)
from orxaq_grpc.routing.validation import Violation

E = TypeVar("E", bound=enum.IntEnum)


def _enum(kind: type[E], value: int, field: str, violations: list[Violation]) -> E:
    try:
        return kind(value)
    except ValueError:
        violations.append(Violation(field, f"unknown {kind.__name__} value {value}"))
        return kind(0)


def route_request_from_proto(message: pb.RouteRequest) -> tuple[RouteRequest, list[Violation]]:
    """The core request, and the violations only the wire format can have."""
    violations: list[Violation] = []
    t = message.task
    c = message.constraints
    request = RouteRequest(
        lane=message.lane,
        task=Task(
            id=t.id,
            kind=t.kind,
            title=t.title,
            prompt=t.prompt,
            labels=tuple(t.labels),
            input_tokens=t.input_tokens,
            output_tokens=t.output_tokens,
            difficulty=t.difficulty if t.HasField("difficulty") else None,
            value_usd=t.value_usd if t.HasField("value_usd") else None,
        ),
        objective=_enum(Objective, message.objective, "objective", violations),
        profile=_enum(Profile, message.profile, "profile", violations),
        requested_model=message.requested_model,
        constraints=Constraints(
            max_cost_usd=c.max_cost_usd if c.HasField("max_cost_usd") else None,
            min_quality=c.min_quality if c.HasField("min_quality") else None,
            max_latency_s=c.max_latency_s if c.HasField("max_latency_s") else None,
            required_capabilities=tuple(c.required_capabilities),
        ),
        explain=message.explain,
    )
    return request, violations


def decision_to_proto(d: Decision) -> pb.RouteDecision:
    return pb.RouteDecision(
        decision_id=d.decision_id,
        model=d.model,
        provider=d.provider,
        lane=d.lane,
        objective=d.objective.value,
        objective_rule=d.objective_rule.value,
        objective_detail=d.objective_detail,
        profile=d.profile.value,
        strategy=d.strategy.value,
        fallback_reason=d.fallback_reason.value,
        fallback_disruptive=d.fallback_reason.disruptive,
        estimated_cost_usd=d.estimated_cost_usd,
        input_usd_per_mtok=d.input_usd_per_mtok,
        output_usd_per_mtok=d.output_usd_per_mtok,
        estimated_latency_s=d.estimated_latency_s,
        score=d.score,
        alternatives=d.alternatives,
        config_version=d.config_version,
        input_tokens=d.input_tokens,
        output_tokens=d.output_tokens,
        tokens_estimated=d.tokens_estimated,
        difficulty=d.difficulty,
        difficulty_estimated=d.difficulty_estimated,
        eligible_count=d.eligible_count,
        rationale=d.rationale,
        candidates=[
            pb.Candidate(
                model=c.model,
                provider=c.provider,
                score=c.score,
                cost_score=c.cost_score,
                speed_score=c.speed_score,
                quality_score=c.quality_score,
                bias=c.bias,
                context_penalty=c.context_penalty,
                estimated_cost_usd=c.estimated_cost_usd,
                estimated_latency_s=c.estimated_latency_s,
            )
            for c in d.candidates
        ],
        filtered=[
            pb.FilteredModel(model=f.model, filter=f.filter.value, detail=f.detail) for f in d.filtered
        ],
    )


def health_to_proto(
    config: Config,
    *,
    uptime_s: float,
    scoring_kernel: str,
    protobuf_backend: str,
    version: str,
    pid: int,
) -> pb.HealthResponse:
    return pb.HealthResponse(
        config_version=config.version,
        uptime_s=uptime_s,
        catalog_models=len(config.models),
        enabled_models=sum(1 for m in config.models if m.enabled),
        lane_count=len(config.lanes),
        lanes=[
            pb.LaneHealth(
                lane=lane.id,
                state="idle",  # no outcome telemetry exists yet to judge a lane by
                allowed_models=len(lane.allowed_models),
                static_fallback=lane.static_fallback,
                default_objective=lane.default_objective.value,
                default_profile=lane.default_profile.value,
                enabled=lane.enabled,
            )
            for lane in config.lanes.values()
        ],
        scoring_kernel=scoring_kernel,
        protobuf_backend=protobuf_backend,
        routing_enabled=config.policy.routing_enabled,
        version=version,
        pid=pid,
    )
