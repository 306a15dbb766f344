"""Route's economic choice for tasks with a value, and stop-loss static mode, on both kernels."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from orxaq_grpc.config.model import Config
from orxaq_grpc.routing.router import Router
from orxaq_grpc.routing.types import Constraints, FallbackReason, RouteRequest, Strategy, Task
from tests.conftest import config_with, lane, model
from tests.test_router import FixedGuards

MakeRouter = Callable[[Config], Router]


@pytest.fixture
def config(shipped_config: Config) -> Config:
    models = [
        model("strong", quality=90.0, input_usd_per_mtok=10.0, output_usd_per_mtok=50.0),
        model("mid", quality=75.0, input_usd_per_mtok=1.0, output_usd_per_mtok=4.0),
        model("weak", quality=60.0, input_usd_per_mtok=0.1, output_usd_per_mtok=0.4),
    ]
    return config_with(
        shipped_config, models, [lane("test", ("strong", "mid", "weak"), static_fallback="mid")]
    )


def valued(value_usd: float | None, **fields: object) -> RouteRequest:
    task = Task(title="refactor the parser", input_tokens=10_000, output_tokens=2_000, value_usd=value_usd)
    return RouteRequest(lane="test", task=task, **fields)  # type: ignore[arg-type]


# strong costs $0.2000 and weak $0.0018 for this task; p 0.90 vs 0.60 from catalog quality;
# net = value x 0.30 x (1 - 0.25 uncertainty) - 0.1982, so the strong one pays from about $0.88.


@pytest.mark.parametrize(("value_usd", "model_id"), [(1.0, "strong"), (0.5, "weak"), (0.0, "weak")])
def test_the_value_decides_between_strong_and_weak(
    config: Config, make_router: MakeRouter, value_usd: float, model_id: str
) -> None:
    decision = make_router(config).route(valued(value_usd))
    assert decision.model == model_id
    assert decision.strategy == Strategy.STRONG_OR_WEAK
    c = decision.strong_or_weak
    assert c is not None and (c.strong_model, c.weak_model) == ("strong", "weak")
    assert (c.p_strong, c.p_weak) == (pytest.approx(0.9), pytest.approx(0.6))
    assert c.cost_strong_usd == pytest.approx(0.2) and c.cost_weak_usd == pytest.approx(0.0018)
    assert c.uncertainty_penalty_usd == pytest.approx(value_usd * 0.3 * 0.25)
    assert c.net_gain_usd == pytest.approx(value_usd * 0.3 * 0.75 - 0.1982)
    assert c.chose_strong == (model_id == "strong")
    assert (
        "strong strong (p 0.900, catalog quality) vs weak weak (p 0.600, catalog quality)"
        in decision.rationale
    )


def test_the_threshold_is_inclusive(config: Config, make_router: MakeRouter) -> None:
    net = make_router(config).route(valued(1.0)).strong_or_weak.net_gain_usd  # type: ignore[union-attr]

    def with_threshold(threshold: float) -> str:
        policy = dataclasses.replace(
            config.policy,
            strong_or_weak=dataclasses.replace(config.policy.strong_or_weak, threshold_usd=threshold),
        )
        return make_router(dataclasses.replace(config, policy=policy)).route(valued(1.0)).model

    assert with_threshold(net) == "strong"
    assert with_threshold(net + 0.01) == "weak"


def test_reported_acceptance_calibrates_once_there_are_enough_reports(
    config: Config, make_router: MakeRouter
) -> None:
    router = make_router(config)
    need = config.policy.strong_or_weak.calibration_min_reports
    # the strong model passes validation a third of the time in practice: not worth it at any value
    calibrated = router.route(valued(100.0), FixedGuards(rates={"strong": (need // 3, need)}))
    assert calibrated.model == "weak"
    c = calibrated.strong_or_weak
    assert c is not None and c.strong_calibrated and not c.weak_calibrated
    assert c.p_strong == pytest.approx(1 / 3)
    assert f"acceptance over {need} reports" in calibrated.rationale
    # one report short: the catalog still speaks
    few = router.route(valued(100.0), FixedGuards(rates={"strong": (0, need - 1)}))
    assert few.model == "strong" and not few.strong_or_weak.strong_calibrated  # type: ignore[union-attr]


def test_both_calibrated_use_the_smaller_uncertainty(config: Config, make_router: MakeRouter) -> None:
    need = config.policy.strong_or_weak.calibration_min_reports
    rates = {"strong": (need, need), "weak": (need // 2, need)}
    c = make_router(config).route(valued(10.0), FixedGuards(rates=rates)).strong_or_weak
    assert c is not None
    ratio = config.policy.strong_or_weak.calibrated_uncertainty_ratio
    assert c.uncertainty_penalty_usd == pytest.approx(10.0 * (1.0 - 0.5) * ratio)


def test_a_requested_model_and_a_task_without_value_are_not_compared(
    config: Config, make_router: MakeRouter
) -> None:
    router = make_router(config)
    requested = router.route(valued(100.0, requested_model="mid"))
    assert requested.strategy == Strategy.REQUESTED and requested.strong_or_weak is None
    plain = router.route(valued(None))
    assert plain.strategy == Strategy.SCORED and plain.strong_or_weak is None


def test_one_eligible_model_is_both(config: Config, make_router: MakeRouter) -> None:
    decision = make_router(config).route(valued(0.01, constraints=Constraints(min_quality=80.0)))
    assert decision.model == "strong"
    assert decision.strong_or_weak is not None and decision.strong_or_weak.chose_strong
    assert "is both the strongest and the cheapest eligible" in decision.rationale


def test_stop_loss_answers_the_static_pin(config: Config, make_router: MakeRouter) -> None:
    guards = FixedGuards(stop_loss=True)
    decision = make_router(config).route(valued(100.0), guards)
    assert decision.strategy == Strategy.STATIC_FALLBACK
    assert decision.fallback_reason == FallbackReason.STOP_LOSS_STATIC
    assert not decision.fallback_reason.disruptive
    assert decision.model == "mid"  # the lane's pin, not the strong one the value would buy
    assert decision.strong_or_weak is None
    assert guards.reserved == [decision.decision_id]  # the lane will run it: budgets count it
    asked = make_router(config).route(valued(100.0, requested_model="strong"), guards)
    assert asked.model == "mid"  # rolled back to the pin, whatever the lane asks for
