"""Scale request validation: every problem, each named by the contract's dotted field path."""

from __future__ import annotations

import math

from orxaq_grpc.config.load import MAX_AGENTS
from orxaq_grpc.config.model import Config
from orxaq_grpc.scale.npv import marginal_npv
from orxaq_grpc.scale.types import ConfidenceForm, Daily, Flows, Once, PenaltyUsd, ScaleRequest
from orxaq_grpc.vocabulary import Violation, range_problem

MAX_USD = 1e12  # per cash flow: far past any real budget, small enough that sums stay exact-ish
MAX_SCHEDULE_FLOWS = 10_000
MAX_DISCOUNT_RATE = 10.0  # 1,000% a year
MAX_NPV_USD = 1e15  # any part of the NPV past this comes from the discounting, not the economics


def validate_scale_request(request: ScaleRequest, config: Config) -> list[Violation]:
    settings = config.policy.scale
    out: list[Violation] = []

    def problem(field: str, text: str | None) -> None:
        if text:
            out.append(Violation(field, text))

    if bool(request.lane) == bool(request.group):
        problem("lane", "name exactly one of lane or group")
    elif request.lane and request.lane not in config.lanes:
        problem("lane", f"unknown lane {request.lane[:64]!r}; known lanes: {', '.join(sorted(config.lanes))}")
    elif request.group and request.group not in settings.groups:
        known = ", ".join(sorted(settings.groups)) or "none configured"
        problem("group", f"unknown scaling group {request.group[:64]!r}; known groups: {known}")
    for field in (
        "current_parallel_agents",
        "requested_parallel_agents",
        "current_subagents_per_agent",
        "requested_subagents_per_agent",
    ):
        count = getattr(request, field)
        if not 0 <= count <= MAX_AGENTS:
            problem(field, f"must be between 0 and {MAX_AGENTS}, got {count}")
    if len(request.request_id) > config.policy.limits.max_text_field_chars:
        problem(
            "request_id",
            f"is {len(request.request_id)} characters; at most {config.policy.limits.max_text_field_chars}",
        )

    for side, flows in (("value", request.value), ("cost", request.cost)):
        if flows is None:
            if request.grows:
                problem(side, "is required to grow capacity: give it once, daily or as a schedule")
        else:
            out += _flow_violations(side, flows, settings.max_horizon_days)

    match request.uncertainty:
        case PenaltyUsd(usd=usd):
            problem("uncertainty.penalty_usd", range_problem(usd, lo=0.0, hi=MAX_USD))
        case ConfidenceForm(uncertainty_ratio=ratio, confidence=confidence):
            problem("uncertainty.confidence.uncertainty_ratio", range_problem(ratio, lo=0.0, hi=1.0))
            problem("uncertainty.confidence.confidence", range_problem(confidence, lo=0.0, hi=1.0))
    if request.discount_rate is not None:
        problem("discount_rate", range_problem(request.discount_rate, above=-1.0, hi=MAX_DISCOUNT_RATE))
    if not out and request.value is not None and request.cost is not None:
        rate = settings.discount_rate if request.discount_rate is None else request.discount_rate
        npv = marginal_npv(request.value, request.cost, request.uncertainty, rate)
        parts = (
            npv.discounted_value_usd,
            npv.discounted_cost_usd,
            npv.uncertainty_penalty_usd,
            npv.marginal_usd,
        )
        if not all(math.isfinite(x) and abs(x) <= MAX_NPV_USD for x in parts):
            problem(
                "discount_rate",
                f"discounting these cash flows at {rate:g} a year gives an NPV past ${MAX_NPV_USD:.0e}: "
                "a rate that close to -1 over that many days is not an estimate",
            )
    return out


def _flow_violations(side: str, flows: Flows, max_day: float) -> list[Violation]:
    out: list[Violation] = []

    def check(field: str, text: str | None) -> None:
        if text:
            out.append(Violation(field, text))

    match flows:
        case Once(usd=usd, day=day):
            check(f"{side}.once.usd", range_problem(usd, lo=-MAX_USD, hi=MAX_USD))
            check(f"{side}.once.day", range_problem(day, lo=0.0, hi=max_day))
        case Daily(usd_per_day=usd, horizon_days=horizon):
            check(f"{side}.daily.usd_per_day", range_problem(usd, lo=-MAX_USD, hi=MAX_USD))
            if not 1 <= horizon <= max_day:
                check(f"{side}.daily.horizon_days", f"must be between 1 and {max_day:g} days, got {horizon}")
        case _:
            if not flows.flows:
                check(f"{side}.schedule.flows", "must hold at least one cash flow")
            elif len(flows.flows) > MAX_SCHEDULE_FLOWS:
                check(f"{side}.schedule.flows", f"has {len(flows.flows)} flows; at most {MAX_SCHEDULE_FLOWS}")
            for i, flow in enumerate(flows.flows[:MAX_SCHEDULE_FLOWS]):
                check(f"{side}.schedule.flows[{i}].usd", range_problem(flow.usd, lo=-MAX_USD, hi=MAX_USD))
                check(f"{side}.schedule.flows[{i}].day", range_problem(flow.day, lo=0.0, hi=max_day))
    return out
