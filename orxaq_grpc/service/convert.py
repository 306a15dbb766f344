"""Messages to core objects and back. The only module that knows both sides.

Enum numbers are shared by construction (see `routing.types`), so enums convert by
value; a number the core does not know is a wire-level violation. The generated stubs type
a message's enum field as its own class, so a core value going out is cast to it (on Route's
answer the type checker is told so with an ignore instead: no call per field).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TypeVar, cast

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.application.outcomes import EconomicsView, HealthView, LearningView
from orxaq_grpc.config.model import Config, LaneSpec
from orxaq_grpc.outcomes.breakers import BreakerView
from orxaq_grpc.outcomes.detection import DetectionState
from orxaq_grpc.outcomes.economics import Breakdown, Figures
from orxaq_grpc.outcomes.records import Outcome, ReportInput, ReportRecord
from orxaq_grpc.routing.types import (
    CandidateScore,
    Constraints,
    Decision,
    FallbackReason,
    Objective,
    Profile,
    RouteRequest,
    StrongOrWeak,
    Task,
)
from orxaq_grpc.routing.validation import Violation
from orxaq_grpc.scale.guardrails import GuardrailView
from orxaq_grpc.scale.stoploss import Sample, StopLossEvent
from orxaq_grpc.scale.types import (
    CashFlow,
    ConfidenceForm,
    Daily,
    Flows,
    Once,
    PenaltyUsd,
    ScaleDecision,
    ScaleRequest,
    Schedule,
    Uncertainty,
)
from orxaq_grpc.shared import SharedStatus

E = TypeVar("E", bound=enum.IntEnum)


def _enum(kind: type[E], value: int, field: str, violations: list[Violation]) -> E:
    # kind(value) without the call: calling an enum class costs about a microsecond.
    member = kind._value2member_map_.get(value)
    if member is None:
        violations.append(Violation(field, f"unknown {kind.__name__} value {value}"))
        return kind(0)
    return cast(E, member)


def _by_number(kind: type[E]) -> dict[int, E]:
    return {member.value: member for member in kind}


# Route's enums looked up inline; `_enum` only for a number the core does not know.
_OBJECTIVES = _by_number(Objective)
_PROFILES = _by_number(Profile)

_NO_CONSTRAINTS = Constraints()  # a request without constraints: one shared, immutable value


def route_request_from_proto(message: pb.RouteRequest) -> tuple[RouteRequest, list[Violation]]:
    """The core request, and the violations only the wire format can have.

    The value classes are built with positional arguments, in their fields' order in
    `routing.types` (tests/test_convert_route.py holds the two in step): CPython 3.11 runs a
    positional call of a Python function inline, a keyword call costs 2-3x more."""
    violations: list[Violation] = []
    t = message.task
    labels = t.labels
    task = Task(
        t.id,
        t.kind,
        t.title,
        t.prompt,
        tuple(labels) if labels else (),  # tuple() of an empty container costs more than the test
        t.input_tokens,
        t.output_tokens,
        t.difficulty if t.HasField("difficulty") else None,
        t.value_usd if t.HasField("value_usd") else None,
    )
    constraints = _NO_CONSTRAINTS
    if message.HasField("constraints"):
        c = message.constraints
        constraints = Constraints(
            c.max_cost_usd if c.HasField("max_cost_usd") else None,
            c.min_quality if c.HasField("min_quality") else None,
            c.max_latency_s if c.HasField("max_latency_s") else None,
            tuple(c.required_capabilities),
        )
    objective = _OBJECTIVES.get(message.objective)
    if objective is None:
        objective = _enum(Objective, message.objective, "objective", violations)
    profile = _PROFILES.get(message.profile)
    if profile is None:
        profile = _enum(Profile, message.profile, "profile", violations)
    request = RouteRequest(
        message.lane,
        task,
        objective,
        profile,
        message.requested_model,
        constraints,
        message.explain,
        message.router,
    )
    return request, violations


# The reasons `FallbackReason.disruptive` holds disruptive: a set lookup instead of its code per answer.
_DISRUPTIVE_REASONS = frozenset(reason for reason in FallbackReason if reason.disruptive)


def decision_to_proto(d: Decision) -> pb.RouteDecision:
    # The core's IntEnums are the proto's numbers, though the stubs want the proto's own enum
    # classes: each ignore stands for a `cast`, which would be a Python call per field per answer.
    # Sub-messages go in as mappings, built inside the answer; a message would be copied in.
    return pb.RouteDecision(
        decision_id=d.decision_id,
        model=d.model,
        provider=d.provider,
        lane=d.lane,
        objective=d.objective,  # type: ignore[arg-type]
        objective_rule=d.objective_rule,  # type: ignore[arg-type]
        objective_detail=d.objective_detail,
        profile=d.profile,  # type: ignore[arg-type]
        strategy=d.strategy,  # type: ignore[arg-type]
        fallback_reason=d.fallback_reason,  # type: ignore[arg-type]
        fallback_disruptive=d.fallback_reason in _DISRUPTIVE_REASONS,
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
        # Explain mode only: most answers skip building both lists.
        candidates=[_candidate(c) for c in d.candidates] if d.candidates else None,
        filtered=[{"model": f.model, "filter": f.filter, "detail": f.detail} for f in d.filtered]
        if d.filtered
        else None,
        strong_or_weak=_strong_or_weak(d.strong_or_weak) if d.strong_or_weak else None,
        learning=d.learning,
    )


def _candidate(c: CandidateScore) -> dict[str, object]:
    return {
        "model": c.model,
        "provider": c.provider,
        "score": c.score,
        "cost_score": c.cost_score,
        "speed_score": c.speed_score,
        "quality_score": c.quality_score,
        "bias": c.bias,
        "context_penalty": c.context_penalty,
        "estimated_cost_usd": c.estimated_cost_usd,
        "estimated_latency_s": c.estimated_latency_s,
    }


def _strong_or_weak(c: StrongOrWeak) -> dict[str, object]:
    """Every field, spelled out: faster than reading them by name (a test checks none is missed)."""
    return {
        "strong_model": c.strong_model,
        "weak_model": c.weak_model,
        "p_strong": c.p_strong,
        "p_weak": c.p_weak,
        "strong_calibrated": c.strong_calibrated,
        "weak_calibrated": c.weak_calibrated,
        "strong_reports": c.strong_reports,
        "weak_reports": c.weak_reports,
        "cost_strong_usd": c.cost_strong_usd,
        "cost_weak_usd": c.cost_weak_usd,
        "value_usd": c.value_usd,
        "uncertainty_penalty_usd": c.uncertainty_penalty_usd,
        "net_gain_usd": c.net_gain_usd,
        "threshold_usd": c.threshold_usd,
        "chose_strong": c.chose_strong,
        "learned": c.learned,
        "win_probability": c.win_probability,
        "router": c.router,
        "exploring": c.exploring,
        "shadow": c.shadow,
    }


def report_input_from_proto(message: pb.ReportRequest) -> tuple[ReportInput, list[Violation]]:
    violations: list[Violation] = []
    report = ReportInput(
        decision_id=message.decision_id,
        lane=message.lane,
        provider=message.provider,
        model=message.model,
        input_tokens=message.input_tokens,
        output_tokens=message.output_tokens,
        latency_s=message.latency_s,
        outcome=_enum(Outcome, message.outcome, "outcome", violations),
        retry_after_s=message.retry_after_s,
        validation_passed=message.validation_passed,
        first_time_pass=message.first_time_pass,
        cost_usd=message.cost_usd if message.HasField("cost_usd") else None,
        cached_input_tokens=message.cached_input_tokens,
        cache_write_tokens=message.cache_write_tokens,
    )
    return report, violations


def report_ack(record: ReportRecord, new: bool) -> pb.ReportAck:
    if not new:  # the first report stands; this one booked nothing
        return pb.ReportAck(
            decision_id=record.decision_id, duplicate=True, decision_known=record.decision_known
        )
    return pb.ReportAck(
        decision_id=record.decision_id,
        decision_known=record.decision_known,
        cost_usd=record.cost_usd,
        cost_exact=record.cost_exact,
        cost_bounded=record.cost_bounded,
        claimed_cost_usd=record.claimed_cost_usd or 0.0,
    )


def figures_to_proto(f: Figures) -> pb.Figures:
    c = f.counters
    return pb.Figures(
        decisions=c.decisions,
        estimated_tokens=c.estimated_tokens,
        estimated_cost_usd=c.estimated_cost_usd,
        reports=c.reports,
        reported_tokens=c.reported_tokens,
        spend_usd=c.spend_usd,
        exact_spend_usd=c.exact_spend_usd,
        blended_usd_per_mtok=f.blended_usd_per_mtok,
        estimated_usd_per_mtok=f.estimated_usd_per_mtok,
        fallback_rate=f.fallback_rate,
        disruptive_fallback_rate=f.disruptive_fallback_rate,
        router_error_rate=f.router_error_rate,
        error_rate=f.error_rate,
        first_time_pass_rate=f.first_time_pass_rate,
        acceptance_rate=f.acceptance_rate,
        unknown_decision_reports=c.unknown_decisions,
        bounded_cost_reports=c.bounded_costs,
        exact_spend_share=f.exact_spend_share,
        reported_input_tokens=c.reported_input_tokens,
        cached_input_tokens=c.cached_input_tokens,
        cache_write_tokens=c.cache_write_tokens,
        cache_share=f.cache_share,
    )


def _named(figures: dict[str, Figures]) -> list[pb.NamedFigures]:
    return [pb.NamedFigures(name=name, figures=figures_to_proto(f)) for name, f in figures.items()]


def _window(name: str, b: Breakdown) -> pb.EconomicsWindow:
    return pb.EconomicsWindow(
        window=name,
        since_unix=b.since,
        overall=figures_to_proto(b.overall),
        providers=_named(b.providers),
        lanes=_named(b.lanes),
        models=_named(b.models),
    )


def economics_to_proto(view: EconomicsView, config_version: str) -> pb.EconomicsResponse:
    return pb.EconomicsResponse(
        config_version=config_version,
        at_unix=view.at,
        windows=[_window(name, b) for name, b in view.windows],
        hourly=[pb.HourFigures(hour_unix=start, figures=figures_to_proto(f)) for start, f in view.hourly],
        guardrails=guardrails_to_proto(view.guardrails),
    )


def _flows(message: pb.Flows) -> Flows | None:
    match message.WhichOneof("form"):
        case "once":
            return Once(usd=message.once.usd, day=message.once.day)
        case "daily":
            return Daily(usd_per_day=message.daily.usd_per_day, horizon_days=message.daily.horizon_days)
        case "schedule":
            return Schedule(tuple(CashFlow(day=f.day, usd=f.usd) for f in message.schedule.flows))
    return None


def _uncertainty(message: pb.Uncertainty) -> Uncertainty | None:
    match message.WhichOneof("form"):
        case "penalty_usd":
            return PenaltyUsd(message.penalty_usd)
        case "confidence":
            c = message.confidence
            return ConfidenceForm(uncertainty_ratio=c.uncertainty_ratio, confidence=c.confidence)
    return None


def scale_request_from_proto(message: pb.ScaleRequest) -> ScaleRequest:
    return ScaleRequest(
        lane=message.lane,
        group=message.group,
        current_parallel_agents=message.current_parallel_agents,
        requested_parallel_agents=message.requested_parallel_agents,
        current_subagents_per_agent=message.current_subagents_per_agent,
        requested_subagents_per_agent=message.requested_subagents_per_agent,
        value=_flows(message.value),
        cost=_flows(message.cost),
        uncertainty=_uncertainty(message.uncertainty),
        discount_rate=message.discount_rate if message.HasField("discount_rate") else None,
        request_id=message.request_id,
    )


def scale_decision_to_proto(d: ScaleDecision) -> pb.ScaleDecision:
    fields = {f.name: getattr(d, f.name) for f in dataclasses.fields(d)}
    fields.update(
        at_unix=fields.pop("at"),
        action=d.action.value,
        blocking=[
            pb.ScaleBlockReason(block=cast(pb.ScaleBlock, b.block.value), detail=b.detail) for b in d.blocking
        ],
    )
    return pb.ScaleDecision(**fields)


def _baseline(sample: Sample | None) -> pb.BaselineFigures | None:
    if sample is None:
        return None
    return pb.BaselineFigures(
        since_unix=sample.since,
        until_unix=sample.until,
        reports=sample.reports,
        pass_rate=sample.pass_rate,
        cycle_time_s=sample.cycle_time_s,
        valued_tasks=sample.valued_tasks,
        value_per_task_usd=sample.value_per_task_usd,
    )


def _event(e: StopLossEvent) -> pb.StopLossEvent:
    return pb.StopLossEvent(
        at_unix=e.at,
        kind=e.kind,
        trigger=e.trigger,
        detail=e.detail,
        note=e.note,
        acknowledged=e.acknowledged,
        operator_only=e.operator_only,
    )


def guardrails_to_proto(view: GuardrailView) -> pb.Guardrails:
    s = view.stop_loss
    return pb.Guardrails(
        stop_loss_active=s.active,
        since_unix=s.since,
        trigger=s.trigger,
        reason=s.reason,
        clear_for_s=s.clear_for_s,
        exits_by_itself=s.exits_in_s is not None,
        exits_in_s=s.exits_in_s or 0.0,
        triggers=[pb.StopLossTrigger(**dataclasses.asdict(r)) for r in s.readings],
        baseline=_baseline(s.baseline),
        acknowledged=s.acknowledged,
        operator_only=s.operator_only,
        events=[_event(e) for e in view.events],
        scale_decisions=[scale_decision_to_proto(d) for d in view.scale_decisions],
    )


def _detection(d: DetectionState) -> pb.DetectionState:
    return pb.DetectionState(
        scope=d.scope,
        name=d.name,
        state=d.state,
        reason=d.reason,
        decisions=d.decisions,
        router_error_rate=d.router_error_rate,
        disruptive_fallback_rate=d.disruptive_fallback_rate,
    )


def _learning(view: LearningView | None) -> pb.Learning | None:
    if view is None:
        return None
    return pb.Learning(
        mode=view.mode,
        ledger_position=view.ledger_position,
        models=[pb.ModelOutcomes(model=m, outcomes=n, passes=p) for m, n, p in view.models],
    )


def health_to_proto(
    config: Config,
    view: HealthView,
    *,
    uptime_s: float,
    scoring_kernel: str,
    protobuf_backend: str,
    version: str,
    pid: int,
    data_dir: str,
    monotonic_now: float,
) -> pb.HealthResponse:
    """`monotonic_now` is the breakers' clock, for how long an open circuit has left."""
    lane_states = {d.name: d.state for d in view.detection.lanes}
    return pb.HealthResponse(
        config_version=config.version,
        uptime_s=uptime_s,
        catalog_models=len(config.models),
        enabled_models=sum(1 for m in config.models if m.enabled),
        lane_count=len(config.lanes),
        lanes=[
            lane_health_to_proto(lane, lane_states.get(lane.id, "idle"), lane.id in view.paused_lanes)
            for lane in config.lanes.values()
        ],
        scoring_kernel=scoring_kernel,
        protobuf_backend=protobuf_backend,
        routing_enabled=config.policy.routing_enabled,
        version=version,
        pid=pid,
        overall=_detection(view.detection.overall),
        providers=[_detection(d) for d in view.detection.providers],
        recent_decisions=[
            pb.RecentDecision(
                decision_id=d.decision_id,
                at_unix=d.at,
                lane=d.lane,
                provider=d.provider,
                model=d.model,
                strategy=cast(pb.Strategy, d.strategy),
                fallback_reason=cast(pb.FallbackReason, d.fallback_reason),
                estimated_cost_usd=d.estimated_cost_usd,
                estimated_tokens=d.estimated_input_tokens + d.estimated_output_tokens,
            )
            for d in view.recent_decisions
        ],
        breakers=[breaker_to_proto(b, monotonic_now) for b in view.breakers],
        budgets=[
            pb.BudgetStatus(
                scope=b.scope,
                name=b.name,
                limit_usd=b.limit_usd,
                spent_usd=b.spent_usd,
                reserved_usd=b.reserved_usd,
                used_share=b.used_share,
                warning=b.warning,
                exhausted=b.exhausted,
            )
            for b in view.budgets
        ],
        budget_warning=any(b.warning for b in view.budgets),
        learning=_learning(view.learning),
        ledger=pb.LedgerStatus(
            location=view.ledger.location,
            queued=view.ledger.queued,
            commits=view.ledger.commits,
            dropped_decisions=view.ledger.dropped_decisions,
        ),
        data_dir=data_dir,
        guardrails=guardrails_to_proto(view.guardrails),
        shared=_shared(view.shared),
        operator_actions=[
            pb.OperatorAction(
                at_unix=a.at,
                who=a.who,
                action=a.action.value,
                target=a.target,
                note=a.note,
                outcome=a.outcome,
            )
            for a in view.operator_actions
        ],
        detection=pb.DetectionThresholds(
            window_s=config.policy.detection.window_s,
            degraded_router_error_rate=config.policy.detection.degraded_router_error_rate,
            elevated_fallback_rate=config.policy.detection.elevated_fallback_rate,
        ),
    )


def lane_health_to_proto(lane: LaneSpec, state: str, paused: bool) -> pb.LaneHealth:
    return pb.LaneHealth(
        lane=lane.id,
        state=state,
        allowed_models=len(lane.allowed_models),
        static_fallback=lane.static_fallback,
        default_objective=cast(pb.Objective, lane.default_objective.value),
        default_profile=cast(pb.Profile, lane.default_profile.value),
        enabled=lane.enabled,
        paused=paused,
    )


def breaker_to_proto(b: BreakerView, monotonic_now: float) -> pb.BreakerStatus:
    """`monotonic_now` is the breakers' clock, for how long an open circuit has left."""
    return pb.BreakerStatus(
        scope=b.scope,
        name=b.name,
        state=b.state.value,
        reason=b.reason,
        reopens_in_s=max(0.0, b.reopens_at - monotonic_now) if b.reopens_at is not None else 0.0,
        consecutive_failures=b.consecutive_failures,
        window_reports=b.window_reports,
        window_failures=b.window_failures,
        openings=b.openings,
    )


def _shared(status: SharedStatus | None) -> pb.SharedState | None:
    if status is None:
        return None
    return pb.SharedState(
        location=status.location,
        connected=status.connected,
        replicas=status.replicas,
        since_unix=status.since,
        published=status.published,
        applied=status.applied,
        pending=status.pending,
        dropped=status.dropped,
        error=status.error,
    )
