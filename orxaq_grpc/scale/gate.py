"""The NPV capacity gate: may this lane or group grow, and to what?

Growth needs every test to pass: marginal NPV above 0 and at or above the threshold, the
confidence form (if used) confident enough, the limits, projected daily spend inside every daily
budget that applies, healthy lanes, and no stop-loss. Shrinking never needs a reason. Without
approval each count is held at min(requested, current, cap), the cap being the configured maximum,
or the baseline under stop-loss.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from orxaq_grpc.config.model import ScaleSettings
from orxaq_grpc.outcomes.budgets import SLACK_USD
from orxaq_grpc.outcomes.detection import TROUBLED
from orxaq_grpc.scale.npv import Npv, marginal_npv, peak_daily_usd
from orxaq_grpc.scale.types import (
    Blocking,
    ConfidenceForm,
    ScaleAction,
    ScaleBlock,
    ScaleDecision,
    ScaleRequest,
)


@dataclass(frozen=True, slots=True)
class LaneCondition:
    """A lane's health as the gate reads it, over the scale health window."""

    lane: str
    state: str  # the detection state
    state_reason: str
    reports: int
    error_rate: float
    pass_rate: float


@dataclass(frozen=True, slots=True)
class BudgetRoom:
    """A daily budget that applies to the target, and the spend it already carries."""

    scope: str  # "overall" or "lane codex"
    limit_usd: float
    daily_spend_usd: float  # today's spend and reservations, or the last 24 hours' if more


@dataclass(frozen=True, slots=True)
class GateInputs:
    lanes: tuple[LaneCondition, ...]
    budgets: tuple[BudgetRoom, ...]
    stop_loss_active: bool
    stop_loss_reason: str


def decide(
    request: ScaleRequest,
    lanes: tuple[str, ...],
    settings: ScaleSettings,
    inputs: GateInputs,
    *,
    decision_id: str,
    at: float,
    config_version: str,
) -> ScaleDecision:
    """For a request that passed validation; `lanes` are the target's lanes."""
    limits = settings.limits_for(lanes)
    rate = settings.discount_rate if request.discount_rate is None else request.discount_rate
    npv = (
        marginal_npv(request.value, request.cost, request.uncertainty, rate)
        if request.value is not None and request.cost is not None
        else Npv(0.0, 0.0, 0.0, rate)
    )
    incremental = peak_daily_usd(request.cost) if request.cost is not None else 0.0
    tightest = _tightest_budget(inputs.budgets, incremental)

    blocking: list[Blocking] = []
    if inputs.stop_loss_active:
        blocking.append(Blocking(ScaleBlock.STOP_LOSS, inputs.stop_loss_reason))
    if request.grows:
        blocking += _npv_blocks(request, npv, settings)
        if request.requested_parallel_agents > limits.max_parallel_agents:
            blocking.append(
                Blocking(
                    ScaleBlock.MAX_PARALLEL_AGENTS,
                    f"{request.requested_parallel_agents} agents requested; at most "
                    f"{limits.max_parallel_agents} for {request.target}",
                )
            )
        if request.requested_subagents_per_agent > limits.max_subagents_per_agent:
            blocking.append(
                Blocking(
                    ScaleBlock.MAX_SUBAGENTS,
                    f"{request.requested_subagents_per_agent} subagents per agent requested; at most "
                    f"{limits.max_subagents_per_agent} for {request.target}",
                )
            )
        blocking += _budget_blocks(inputs.budgets, incremental)
        blocking += _health_blocks(inputs.lanes, settings)

    approved = request.grows and not blocking
    if approved:
        agents, subagents = request.requested_parallel_agents, request.requested_subagents_per_agent
    else:
        cap_agents, cap_subagents = (
            (limits.baseline_parallel_agents, limits.baseline_subagents_per_agent)
            if inputs.stop_loss_active
            else (limits.max_parallel_agents, limits.max_subagents_per_agent)
        )
        agents = min(request.requested_parallel_agents, request.current_parallel_agents, cap_agents)
        subagents = min(
            request.requested_subagents_per_agent, request.current_subagents_per_agent, cap_subagents
        )
    if approved:
        action = ScaleAction.SCALE_UP
    elif agents < request.current_parallel_agents or subagents < request.current_subagents_per_agent:
        action = ScaleAction.SCALE_DOWN
    elif inputs.stop_loss_active:
        action = ScaleAction.FREEZE
    else:
        action = ScaleAction.HOLD

    decision = ScaleDecision(
        decision_id=decision_id,
        at=at,
        target=request.target,
        lanes=lanes,
        action=action,
        current_parallel_agents=request.current_parallel_agents,
        requested_parallel_agents=request.requested_parallel_agents,
        allowed_parallel_agents=agents,
        current_subagents_per_agent=request.current_subagents_per_agent,
        requested_subagents_per_agent=request.requested_subagents_per_agent,
        allowed_subagents_per_agent=subagents,
        marginal_npv_usd=npv.marginal_usd,
        discounted_value_usd=npv.discounted_value_usd,
        discounted_cost_usd=npv.discounted_cost_usd,
        uncertainty_penalty_usd=npv.uncertainty_penalty_usd,
        discount_rate=rate,
        min_npv_threshold_usd=settings.min_npv_threshold_usd,
        projected_daily_spend_usd=tightest.daily_spend_usd + incremental if tightest else 0.0,
        daily_budget_usd=tightest.limit_usd if tightest else 0.0,
        max_parallel_agents=limits.max_parallel_agents,
        max_subagents_per_agent=limits.max_subagents_per_agent,
        baseline_parallel_agents=limits.baseline_parallel_agents,
        baseline_subagents_per_agent=limits.baseline_subagents_per_agent,
        blocking=tuple(blocking),
        stop_loss_active=inputs.stop_loss_active,
        rationale="",
        config_version=config_version,
        request_id=request.request_id,
    )
    return _with_rationale(decision, tightest is not None)


def _npv_blocks(request: ScaleRequest, npv: Npv, settings: ScaleSettings) -> list[Blocking]:
    blocks = []
    parts = (
        f"marginal NPV ${npv.marginal_usd:,.2f} = value ${npv.discounted_value_usd:,.2f} - cost "
        f"${npv.discounted_cost_usd:,.2f} - penalty ${npv.uncertainty_penalty_usd:,.2f}"
    )
    # Written so that a NaN fails both tests (validation refuses non-finite economics anyway).
    if not npv.marginal_usd > 0:
        blocks.append(Blocking(ScaleBlock.NPV_NOT_POSITIVE, f"{parts} is not above $0"))
    if not npv.marginal_usd >= settings.min_npv_threshold_usd:
        blocks.append(
            Blocking(
                ScaleBlock.NPV_BELOW_THRESHOLD,
                f"{parts} is below the threshold ${settings.min_npv_threshold_usd:,.2f}",
            )
        )
    uncertainty = request.uncertainty
    if isinstance(uncertainty, ConfidenceForm) and uncertainty.confidence < settings.min_confidence:
        blocks.append(
            Blocking(
                ScaleBlock.LOW_CONFIDENCE,
                f"confidence {uncertainty.confidence:g} is below the minimum {settings.min_confidence:g}",
            )
        )
    return blocks


def _budget_blocks(budgets: tuple[BudgetRoom, ...], incremental: float) -> list[Blocking]:
    return [
        Blocking(
            ScaleBlock.DAILY_BUDGET,
            f"{b.scope} daily budget ${b.limit_usd:,.2f}: spend ${b.daily_spend_usd:,.2f} + new capacity "
            f"${incremental:,.2f}/day = ${b.daily_spend_usd + incremental:,.2f}",
        )
        for b in budgets
        if b.daily_spend_usd + incremental > b.limit_usd + SLACK_USD
    ]


def _tightest_budget(budgets: tuple[BudgetRoom, ...], incremental: float) -> BudgetRoom | None:
    """The budget with the least room left after the new capacity."""
    return min(budgets, key=lambda b: b.limit_usd - b.daily_spend_usd - incremental, default=None)


def _health_blocks(lanes: tuple[LaneCondition, ...], settings: ScaleSettings) -> list[Blocking]:
    blocks = []
    for lane in lanes:
        if lane.state in TROUBLED:
            blocks.append(
                Blocking(ScaleBlock.ROUTER_UNHEALTHY, f"lane {lane.lane} {lane.state}: {lane.state_reason}")
            )
        if lane.reports < settings.min_reports:
            continue
        if lane.error_rate >= settings.max_error_rate:
            blocks.append(
                Blocking(
                    ScaleBlock.RELIABILITY,
                    f"lane {lane.lane} error rate {lane.error_rate:.1%} >= {settings.max_error_rate:.1%} "
                    f"over {lane.reports} reports",
                )
            )
        if lane.pass_rate < settings.min_pass_rate:
            blocks.append(
                Blocking(
                    ScaleBlock.QUALITY,
                    f"lane {lane.lane} validation pass rate {lane.pass_rate:.1%} < "
                    f"{settings.min_pass_rate:.1%} over {lane.reports} reports",
                )
            )
    return blocks


def _with_rationale(d: ScaleDecision, budgeted: bool) -> ScaleDecision:
    counts = f"{d.allowed_parallel_agents} agents x {d.allowed_subagents_per_agent} subagents"
    head = {
        ScaleAction.SCALE_UP: f"Scale {d.target} up to {counts}",
        ScaleAction.HOLD: f"Hold {d.target} at {counts}",
        ScaleAction.SCALE_DOWN: f"Scale {d.target} down to {counts}",
        ScaleAction.FREEZE: f"Freeze {d.target} at {counts} (stop-loss)",
    }[d.action]
    npv = (
        f"marginal NPV ${d.marginal_npv_usd:,.2f} (value ${d.discounted_value_usd:,.2f} - cost "
        f"${d.discounted_cost_usd:,.2f} - penalty ${d.uncertainty_penalty_usd:,.2f}, discounted at "
        f"{d.discount_rate:.2%} a year) against a threshold of ${d.min_npv_threshold_usd:,.2f}"
    )
    spend = (
        f"projected daily spend ${d.projected_daily_spend_usd:,.2f} of ${d.daily_budget_usd:,.2f}"
        if budgeted
        else "no daily budget applies"
    )
    limits = f"limits {d.max_parallel_agents} agents x {d.max_subagents_per_agent} subagents"
    text = f"{head}: {npv}; {spend}; {limits}."
    if d.blocking:
        reasons = "; ".join(f"{b.block.name.lower()}: {b.detail}" for b in d.blocking)
        text += f" Blocked by {reasons}."
    elif d.action == ScaleAction.HOLD:
        text += " Nothing to grow."
    return replace(d, rationale=text)
