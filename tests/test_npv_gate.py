"""The NPV arithmetic against hand-computed cases, and the capacity gate's every rule."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orxaq_grpc.config.model import Config, ScaleSettings
from orxaq_grpc.scale.gate import BudgetRoom, GateInputs, LaneCondition, decide
from orxaq_grpc.scale.npv import marginal_npv, peak_daily_usd, present_value
from orxaq_grpc.scale.types import (
    CashFlow,
    ConfidenceForm,
    Daily,
    Once,
    PenaltyUsd,
    ScaleAction,
    ScaleBlock,
    ScaleRequest,
    Schedule,
)

# --- NPV, by hand -----------------------------------------------------------------------------


def test_daily_flows_over_seven_days_at_ten_percent() -> None:
    # sum over t = 1..7 of 100 / 1.1^(t/365), and 40 / ... for the cost
    npv = marginal_npv(Daily(100.0, 7), Daily(40.0, 7), None, 0.10)
    assert npv.discounted_value_usd == pytest.approx(699.2693304820402, rel=1e-12)
    assert npv.discounted_cost_usd == pytest.approx(279.707732192816, rel=1e-12)
    assert npv.uncertainty_penalty_usd == 0.0
    assert npv.marginal_usd == pytest.approx(419.5615982892242, rel=1e-12)


def test_an_explicit_schedule() -> None:
    # 100 now + 50 in 30 days + 200 in a year, at 10%: 100 + 50 / 1.1^(30/365) + 200 / 1.1
    schedule = Schedule((CashFlow(0.0, 100.0), CashFlow(30.0, 50.0), CashFlow(365.0, 200.0)))
    assert present_value(schedule, 0.10) == pytest.approx(331.42802632613063, rel=1e-12)


def test_the_confidence_form_of_the_penalty() -> None:
    # value 1000 in a year at 10% is 909.09; penalty 909.09 x 0.2 x (1 - 0.75) = 45.45; cost 100 now
    npv = marginal_npv(Once(1000.0, 365.0), Once(100.0, 0.0), ConfidenceForm(0.2, 0.75), 0.10)
    assert npv.discounted_value_usd == pytest.approx(909.090909090909, rel=1e-12)
    assert npv.uncertainty_penalty_usd == pytest.approx(45.45454545454545, rel=1e-12)
    assert npv.marginal_usd == pytest.approx(763.6363636363635, rel=1e-12)


def test_a_given_penalty_and_a_zero_rate() -> None:
    npv = marginal_npv(Daily(10.0, 30), Once(120.0, 0.0), PenaltyUsd(30.0), 0.0)
    assert npv.marginal_usd == pytest.approx(300.0 - 120.0 - 30.0, abs=1e-12)


def test_a_loss_earns_no_confidence_penalty() -> None:
    npv = marginal_npv(Once(-50.0, 0.0), Once(0.0, 0.0), ConfidenceForm(1.0, 0.0), 0.10)
    assert npv.uncertainty_penalty_usd == 0.0
    assert npv.marginal_usd == -50.0


def test_peak_daily_cost_buckets_by_whole_day() -> None:
    assert peak_daily_usd(Daily(25.0, 10)) == 25.0
    assert peak_daily_usd(Once(70.0, 3.0)) == 70.0
    schedule = Schedule((CashFlow(1.2, 10.0), CashFlow(1.9, 15.0), CashFlow(2.0, 20.0)))
    assert peak_daily_usd(schedule) == 25.0
    assert peak_daily_usd(Once(-5.0, 0.0)) == 0.0


# --- the gate ----------------------------------------------------------------------------------

HEALTHY = LaneCondition("codex", "healthy", "fine", reports=50, error_rate=0.0, pass_rate=0.95)
CALM = GateInputs(lanes=(HEALTHY,), budgets=(), stop_loss_active=False, stop_loss_reason="")


@pytest.fixture
def scale_settings(shipped_config: Config) -> ScaleSettings:
    return shipped_config.policy.scale


def ask(settings: ScaleSettings, inputs: GateInputs = CALM, **fields: object) -> object:
    values: dict[str, object] = {
        "lane": "codex",
        "current_parallel_agents": 2,
        "requested_parallel_agents": 3,
        "current_subagents_per_agent": 1,
        "requested_subagents_per_agent": 1,
        "value": Once(100.0, 0.0),
        "cost": Once(20.0, 0.0),
    }
    values.update(fields)
    request = ScaleRequest(**values)  # type: ignore[arg-type]
    lanes = (request.lane,) if request.lane else settings.groups[request.group]
    return decide(request, lanes, settings, inputs, decision_id="s1", at=0.0, config_version="test")


def blocks(decision: object) -> set[ScaleBlock]:
    return {b.block for b in decision.blocking}  # type: ignore[attr-defined]


def test_scale_up_when_everything_passes(scale_settings: ScaleSettings) -> None:
    d = ask(scale_settings)
    assert d.action == ScaleAction.SCALE_UP
    assert (d.allowed_parallel_agents, d.allowed_subagents_per_agent) == (3, 1)
    assert d.marginal_npv_usd == 80.0
    assert not d.blocking
    assert "Scale codex up to 3 agents" in d.rationale


def test_threshold_is_inclusive_and_a_cent_below_holds(scale_settings: ScaleSettings) -> None:
    assert scale_settings.min_npv_threshold_usd == 5.0
    at = ask(scale_settings, value=Once(15.0, 0.0), cost=Once(10.0, 0.0))
    assert at.marginal_npv_usd == 5.0
    assert at.action == ScaleAction.SCALE_UP
    below = ask(scale_settings, value=Once(14.99, 0.0), cost=Once(10.0, 0.0))
    assert below.action == ScaleAction.HOLD
    assert blocks(below) == {ScaleBlock.NPV_BELOW_THRESHOLD}
    assert below.allowed_parallel_agents == 2


def test_non_positive_npv_never_scales_even_at_a_zero_threshold(scale_settings: ScaleSettings) -> None:
    free = dataclasses.replace(scale_settings, min_npv_threshold_usd=0.0)
    zero = ask(free, value=Once(10.0, 0.0), cost=Once(10.0, 0.0))
    assert zero.action == ScaleAction.HOLD
    assert blocks(zero) == {ScaleBlock.NPV_NOT_POSITIVE}
    negative = ask(scale_settings, value=Once(1.0, 0.0), cost=Once(10.0, 0.0))
    assert blocks(negative) == {ScaleBlock.NPV_NOT_POSITIVE, ScaleBlock.NPV_BELOW_THRESHOLD}


def test_a_nan_npv_never_scales_up(scale_settings: ScaleSettings) -> None:
    d = ask(scale_settings, value=Once(math.nan, 0.0))
    assert math.isnan(d.marginal_npv_usd)
    assert blocks(d) == {ScaleBlock.NPV_NOT_POSITIVE, ScaleBlock.NPV_BELOW_THRESHOLD}


def test_low_confidence_blocks(scale_settings: ScaleSettings) -> None:
    d = ask(scale_settings, uncertainty=ConfidenceForm(0.1, 0.49))
    assert d.marginal_npv_usd > 5.0
    assert blocks(d) == {ScaleBlock.LOW_CONFIDENCE}
    assert ask(scale_settings, uncertainty=ConfidenceForm(0.1, 0.5)).action == ScaleAction.SCALE_UP


def test_limits_block_and_groups_take_the_strictest_lane(scale_settings: ScaleSettings) -> None:
    assert blocks(ask(scale_settings, requested_parallel_agents=9)) == {ScaleBlock.MAX_PARALLEL_AGENTS}
    assert blocks(ask(scale_settings, requested_subagents_per_agent=5)) == {ScaleBlock.MAX_SUBAGENTS}
    # local allows 2 agents; a group with it takes that limit
    settings = dataclasses.replace(scale_settings, groups={"mixed": ("codex", "local")})
    lanes = (HEALTHY, dataclasses.replace(HEALTHY, lane="local"))
    inputs = dataclasses.replace(CALM, lanes=lanes)
    d = ask(settings, inputs, lane="", group="mixed", requested_parallel_agents=3)
    assert d.max_parallel_agents == 2
    assert blocks(d) == {ScaleBlock.MAX_PARALLEL_AGENTS}
    assert d.lanes == ("codex", "local")


def test_projected_daily_spend_must_fit_every_budget(scale_settings: ScaleSettings) -> None:
    budgets = (BudgetRoom("overall", 100.0, 60.0), BudgetRoom("lane codex", 50.0, 20.0))
    inputs = dataclasses.replace(CALM, budgets=budgets)
    fits = ask(scale_settings, inputs, value=Daily(100.0, 7), cost=Daily(30.0, 7))
    assert fits.action == ScaleAction.SCALE_UP  # 20 + 30 = 50 fits the lane exactly; 90 <= 100
    assert fits.projected_daily_spend_usd == 50.0 and fits.daily_budget_usd == 50.0
    over = ask(scale_settings, inputs, value=Daily(100.0, 7), cost=Daily(30.01, 7))
    assert blocks(over) == {ScaleBlock.DAILY_BUDGET}
    assert "lane codex daily budget $50.00" in over.blocking[0].detail


@pytest.mark.parametrize(
    ("condition", "block"),
    [
        (dataclasses.replace(HEALTHY, state="degraded"), ScaleBlock.ROUTER_UNHEALTHY),
        (dataclasses.replace(HEALTHY, state="elevated_fallback"), ScaleBlock.ROUTER_UNHEALTHY),
        (dataclasses.replace(HEALTHY, error_rate=0.10), ScaleBlock.RELIABILITY),
        (dataclasses.replace(HEALTHY, pass_rate=0.69), ScaleBlock.QUALITY),
    ],
)
def test_unhealthy_lanes_block(
    scale_settings: ScaleSettings, condition: LaneCondition, block: ScaleBlock
) -> None:
    d = ask(scale_settings, dataclasses.replace(CALM, lanes=(condition,)))
    assert d.action == ScaleAction.HOLD
    assert blocks(d) == {block}


def test_rates_over_too_few_reports_are_not_judged(scale_settings: ScaleSettings) -> None:
    few = dataclasses.replace(HEALTHY, reports=scale_settings.min_reports - 1, error_rate=1.0, pass_rate=0.0)
    assert ask(scale_settings, dataclasses.replace(CALM, lanes=(few,))).action == ScaleAction.SCALE_UP


def test_every_blocking_reason_at_once(scale_settings: ScaleSettings) -> None:
    sick = LaneCondition("codex", "degraded", "errors", reports=50, error_rate=0.5, pass_rate=0.1)
    inputs = GateInputs((sick,), (BudgetRoom("overall", 10.0, 10.0),), True, "stop-loss since pass_rate")
    d = ask(
        scale_settings,
        inputs,
        value=Once(1.0, 0.0),
        cost=Once(2.0, 0.0),
        uncertainty=ConfidenceForm(0.5, 0.1),
        requested_parallel_agents=20,
        requested_subagents_per_agent=20,
    )
    assert blocks(d) == set(ScaleBlock) - {ScaleBlock.UNSPECIFIED}


def test_stop_loss_freezes_and_caps_at_the_baseline(scale_settings: ScaleSettings) -> None:
    frozen = dataclasses.replace(CALM, stop_loss_active=True, stop_loss_reason="pass rate fell")
    d = ask(scale_settings, frozen)
    assert d.action == ScaleAction.FREEZE
    assert (d.allowed_parallel_agents, d.allowed_subagents_per_agent) == (2, 1)
    assert blocks(d) == {ScaleBlock.STOP_LOSS}
    over = ask(
        scale_settings,
        frozen,
        current_parallel_agents=6,
        requested_parallel_agents=6,
        current_subagents_per_agent=3,
        requested_subagents_per_agent=3,
    )
    assert over.action == ScaleAction.SCALE_DOWN
    assert (over.allowed_parallel_agents, over.allowed_subagents_per_agent) == (2, 1)


def test_shrinking_needs_no_economics(scale_settings: ScaleSettings) -> None:
    d = ask(scale_settings, requested_parallel_agents=1, value=None, cost=None)
    assert d.action == ScaleAction.SCALE_DOWN and d.allowed_parallel_agents == 1
    assert not d.blocking
    same = ask(scale_settings, requested_parallel_agents=2, value=None, cost=None)
    assert same.action == ScaleAction.HOLD


def test_a_count_over_the_limit_is_brought_down_to_it(scale_settings: ScaleSettings) -> None:
    d = ask(scale_settings, current_parallel_agents=12, requested_parallel_agents=12, value=None, cost=None)
    assert d.action == ScaleAction.SCALE_DOWN and d.allowed_parallel_agents == 8


# --- the property: non-positive NPV never scales up -------------------------------------------

usd = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
days = st.floats(min_value=0.0, max_value=3650.0, allow_nan=False)
flows = st.one_of(
    st.builds(Once, usd=usd, day=days),
    st.builds(Daily, usd_per_day=usd, horizon_days=st.integers(1, 3650)),
    st.builds(Schedule, st.lists(st.builds(CashFlow, day=days, usd=usd), min_size=1, max_size=20).map(tuple)),
)
uncertainty = st.one_of(
    st.none(),
    st.builds(PenaltyUsd, st.floats(0.0, 1e6)),
    st.builds(ConfidenceForm, st.floats(0.0, 1.0), st.floats(0.0, 1.0)),
)


@settings(max_examples=300, deadline=None)
@given(
    value=flows,
    cost=flows,
    uncertainty=uncertainty,
    rate=st.floats(min_value=-0.99, max_value=10.0),
    threshold=st.sampled_from([0.0, 0.01, 5.0, 1000.0]),
    current=st.integers(0, 8),
    requested=st.integers(0, 8),
)
def test_no_input_with_non_positive_npv_scales_up(
    shipped_config: Config,
    value: object,
    cost: object,
    uncertainty: object,
    rate: float,
    threshold: float,
    current: int,
    requested: int,
) -> None:
    settings_ = dataclasses.replace(shipped_config.policy.scale, min_npv_threshold_usd=threshold)
    d = ask(
        settings_,
        value=value,
        cost=cost,
        uncertainty=uncertainty,
        discount_rate=rate,
        current_parallel_agents=current,
        requested_parallel_agents=requested,
    )
    assert math.isfinite(d.marginal_npv_usd)
    if d.marginal_npv_usd <= 0 or d.marginal_npv_usd < threshold:
        assert d.action != ScaleAction.SCALE_UP
    if d.action != ScaleAction.SCALE_UP:
        assert d.allowed_parallel_agents <= current
