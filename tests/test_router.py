"""Routing decisions, on both kernel twins (the `kernel` fixture)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from orxaq_grpc import _scoring_py
from orxaq_grpc.config.load import load_config
from orxaq_grpc.config.model import Config, Weights
from orxaq_grpc.learning import SuccessModel
from orxaq_grpc.routing import explain
from orxaq_grpc.routing.router import BudgetExhausted, Router, expected_cost_usd, expected_latency_s
from orxaq_grpc.routing.types import (
    Constraints,
    FallbackReason,
    Filter,
    Objective,
    Profile,
    RouteRequest,
    Strategy,
    Task,
)
from tests.conftest import config_with, lane, model

MakeRouter = Callable[[Config], Router]


def subscores(router: Router, request: RouteRequest) -> dict[str, tuple[float, float, float]]:
    decision = router.route(dataclasses.replace(request, explain=True))
    return {c.model: (c.cost_score, c.speed_score, c.quality_score) for c in decision.candidates}


def test_shipped_config_routes_every_lane(shipped_config: Config, make_router: MakeRouter) -> None:
    router = make_router(shipped_config)
    for lane_id, spec in shipped_config.lanes.items():
        decision = router.route(RouteRequest(lane=lane_id, task=Task(title="add a retry", prompt="x" * 5000)))
        assert decision.strategy == Strategy.SCORED
        assert decision.model in spec.allowed_models
        assert decision.eligible_count >= 1
        assert decision.config_version == shipped_config.version
        assert decision.model not in decision.alternatives


def test_expected_cost_and_latency_are_this_requests(shipped_config: Config, make_router: MakeRouter) -> None:
    config = config_with(
        shipped_config,
        [model("m", input_usd_per_mtok=3.0, output_usd_per_mtok=15.0, output_tokens_per_s=50.0, ttft_s=2.0)],
    )
    decision = make_router(config).route(
        RouteRequest(lane="test", task=Task(input_tokens=10_000, output_tokens=1_000))
    )
    assert decision.estimated_cost_usd == pytest.approx((10_000 * 3.0 + 1_000 * 15.0) / 1e6)
    assert decision.estimated_latency_s == pytest.approx(2.0 + 1_000 / 50.0)
    assert (decision.input_usd_per_mtok, decision.output_usd_per_mtok) == (3.0, 15.0)
    assert not decision.tokens_estimated
    assert "$0.0450" in decision.rationale and "22.0 s" in decision.rationale


def test_removing_a_model_never_changes_another_models_subscores(
    shipped_config: Config, make_router: MakeRouter
) -> None:
    # Reference ranges come from the whole catalog, never from the survivors: filtering
    # out the cheapest, fastest and best models leaves the others' sub-scores alone.
    router = make_router(shipped_config)
    base = RouteRequest(lane="codex", task=Task(title="refactor", input_tokens=20_000, output_tokens=3_000))
    everyone = subscores(router, base)
    narrowed = subscores(router, dataclasses.replace(base, constraints=Constraints(min_quality=80.0)))
    assert 0 < len(narrowed) < len(everyone)
    for name, values in narrowed.items():
        assert values == everyone[name]

    # Taking a model off the lane's allow-list is the same: nothing else moves.
    codex = shipped_config.lanes["codex"]
    dropped = codex.allowed_models[1]
    lanes = dict(shipped_config.lanes)
    lanes["codex"] = dataclasses.replace(
        codex, allowed_models=tuple(m for m in codex.allowed_models if m != dropped)
    )
    smaller = subscores(make_router(dataclasses.replace(shipped_config, lanes=lanes)), base)
    assert dropped not in smaller
    for name, values in smaller.items():
        assert values == everyone[name]


def test_same_request_same_decision_a_thousand_times(shipped_config: Config, make_router: MakeRouter) -> None:
    router = make_router(shipped_config)
    request = RouteRequest(lane="gemini", task=Task(title="port the parser", prompt="y" * 3000), explain=True)
    first = dataclasses.replace(router.route(request), decision_id="")
    for _ in range(1000):
        assert dataclasses.replace(router.route(request), decision_id="") == first


def test_ties_break_by_quality_then_cost_then_id(shipped_config: Config, make_router: MakeRouter) -> None:
    # Equal everything: the lower id wins, whatever the catalog order.
    same = [model(name) for name in ("m-c", "m-a", "m-b")]
    decision = make_router(config_with(shipped_config, same)).route(
        RouteRequest(lane="test", task=Task(input_tokens=1000, output_tokens=100))
    )
    assert (decision.model, decision.alternatives) == ("m-a", ("m-b", "m-c"))

    # Quality and speed can offset each other exactly only in a contrived catalog, so
    # check the ranking rule itself: with zero weight on quality, equal scores fall to
    # quality, then to the cheaper model.
    policy_weights = {
        o: dataclasses.replace(w, quality=0.0) for o, w in shipped_config.policy.weights.items()
    }
    tied = [model("m-a", quality=60.0), model("m-b", quality=90.0), model("m-c", quality=90.0)]
    config = config_with(shipped_config, tied, weights=policy_weights)
    decision = make_router(config).route(
        RouteRequest(lane="test", task=Task(input_tokens=1, output_tokens=1))
    )
    assert decision.model == "m-b"
    assert decision.alternatives[:2] == ("m-c", "m-a")

    # Quality comes before cost: the better model wins the tie though it is the dearer one.
    dear_better = [
        model("m-a", quality=60.0, input_usd_per_mtok=1.0),
        model("m-b", quality=90.0, input_usd_per_mtok=9.0),
    ]
    speed_only_weights = {
        o: dataclasses.replace(w, cost=0.0, quality=0.0) for o, w in shipped_config.policy.weights.items()
    }
    decision = make_router(config_with(shipped_config, dear_better, weights=speed_only_weights)).route(
        RouteRequest(lane="test", task=Task(input_tokens=1000, output_tokens=100))
    )
    assert (decision.model, decision.alternatives) == ("m-b", ("m-a",))

    # Speed alone decides the score here, so equal speed and quality fall to the cheaper model.
    speed_only = {
        o: dataclasses.replace(w, cost=0.0, quality=0.0) for o, w in shipped_config.policy.weights.items()
    }
    priced = [model("m-a", input_usd_per_mtok=9.0), model("m-b", input_usd_per_mtok=2.0)]
    config = config_with(shipped_config, priced, weights=speed_only)
    decision = make_router(config).route(
        RouteRequest(lane="test", task=Task(input_tokens=1, output_tokens=1))
    )
    assert (decision.model, decision.alternatives) == ("m-b", ("m-a",))


def test_context_window_excludes_and_the_last_ten_percent_ramps(
    shipped_config: Config, make_router: MakeRouter
) -> None:
    config = config_with(
        shipped_config,
        [model("small", context_window=100_000), model("large", context_window=1_000_000)],
    )
    router = make_router(config)

    def explain(input_tokens: int) -> dict:
        decision = router.route(
            RouteRequest(lane="test", task=Task(input_tokens=input_tokens, output_tokens=1000), explain=True)
        )
        return {
            "penalty": {c.model: c.context_penalty for c in decision.candidates},
            "filtered": {f.model: (f.filter, f.detail) for f in decision.filtered},
            "model": decision.model,
        }

    assert explain(80_000)["penalty"]["small"] == 0.0  # 81% full
    ramp = config.policy.context_ramp_penalty
    assert explain(94_000)["penalty"]["small"] == pytest.approx(ramp * 0.5)  # 95% full: halfway up
    assert explain(99_000)["penalty"]["small"] == pytest.approx(ramp)  # exactly full: the whole penalty
    over = explain(99_001)
    assert "small" not in over["penalty"]
    assert over["filtered"]["small"] == (Filter.CONTEXT_WINDOW, "needs 100001 tokens, window 100000")
    assert over["model"] == "large"


def test_constraints_and_floors_filter_with_details(shipped_config: Config, make_router: MakeRouter) -> None:
    models = [
        model("cheap-weak", quality=50.0, input_usd_per_mtok=0.1, output_usd_per_mtok=0.1),
        model("slow", quality=80.0, output_tokens_per_s=5.0),
        model("pricey", quality=90.0, input_usd_per_mtok=50.0, output_usd_per_mtok=50.0),
        model("blind", quality=85.0, capabilities=frozenset()),
        model("tiny-out", quality=85.0, max_output_tokens=500),
        model("good", quality=75.0),
    ]
    lanes = [lane("test", tuple(m.id for m in models), quality_floor=55.0)]
    router = make_router(config_with(shipped_config, models, lanes))
    decision = router.route(
        RouteRequest(
            lane="test",
            task=Task(input_tokens=10_000, output_tokens=1000),
            constraints=Constraints(
                max_cost_usd=0.1, min_quality=70.0, max_latency_s=60.0, required_capabilities=("tools",)
            ),
            explain=True,
        )
    )
    filtered = {f.model: f.filter for f in decision.filtered}
    assert filtered == {
        "cheap-weak": Filter.LANE_QUALITY_FLOOR,
        "slow": Filter.MAX_LATENCY,
        "pricey": Filter.MAX_COST,
        "blind": Filter.CAPABILITY,
        "tiny-out": Filter.OUTPUT_LIMIT,
    }
    assert decision.model == "good"
    details = {f.model: f.detail for f in decision.filtered}
    assert details["pricey"] == "expected $0.5500 over max $0.1000"
    assert details["blind"] == "lacks tools"
    assert details["slow"] == "expected 201.0 s over max 60.0 s"
    decision = router.route(
        RouteRequest(lane="test", task=Task(output_tokens=10), constraints=Constraints(min_quality=80.0))
    )
    # Only the four of quality 80 or more remain; the floors took the rest.
    assert decision.eligible_count == 4
    assert decision.model in {"pricey", "blind", "tiny-out", "slow"}


def test_profiles_shift_weight_between_cheap_and_strong(
    shipped_config: Config, make_router: MakeRouter
) -> None:
    models = [
        model(
            "cheap", quality=60.0, input_usd_per_mtok=0.1, output_usd_per_mtok=0.4, output_tokens_per_s=200
        ),
        model(
            "strong", quality=95.0, input_usd_per_mtok=5.0, output_usd_per_mtok=25.0, output_tokens_per_s=60
        ),
    ]
    router = make_router(config_with(shipped_config, models))
    task = Task(input_tokens=5000, output_tokens=1000)
    fast = router.route(
        RouteRequest(lane="test", task=task, objective=Objective.BALANCED, profile=Profile.FAST)
    )
    strong = router.route(
        RouteRequest(lane="test", task=task, objective=Objective.QUALITY, profile=Profile.STRONG)
    )
    assert (fast.model, strong.model) == ("cheap", "strong")
    assert fast.profile == Profile.FAST and strong.profile == Profile.STRONG


def test_requested_model(shipped_config: Config, make_router: MakeRouter) -> None:
    router = make_router(shipped_config)
    task = Task(title="add logging", input_tokens=1000, output_tokens=500)
    honoured = router.route(RouteRequest(lane="codex", task=task, requested_model="gpt-6-astra"))
    assert (honoured.model, honoured.strategy) == ("gpt-6-astra", Strategy.REQUESTED)
    assert honoured.fallback_reason == FallbackReason.NONE
    assert "gpt-6-astra" not in honoured.alternatives

    for name in ("claude-opus-5-5", "no-such-model"):
        other = router.route(RouteRequest(lane="codex", task=task, requested_model=name))
        assert other.strategy == Strategy.SCORED
        assert other.fallback_reason == FallbackReason.REQUESTED_MODEL_NOT_ALLOWED
        assert not other.fallback_reason.disruptive

    too_small = router.route(
        RouteRequest(
            lane="codex",
            task=task,
            requested_model="qwen3-coder-30b-a3b-instruct",
            constraints=Constraints(min_quality=70.0),
        )
    )
    assert too_small.strategy == Strategy.SCORED
    assert too_small.fallback_reason == FallbackReason.REQUESTED_MODEL_INELIGIBLE
    assert too_small.model != "qwen3-coder-30b-a3b-instruct"


def test_alternatives_are_ranked_and_end_with_the_static_pin(
    shipped_config: Config, make_router: MakeRouter
) -> None:
    router = make_router(shipped_config)
    decision = router.route(
        RouteRequest(lane="codex", task=Task(kind="lint", input_tokens=500, output_tokens=200), explain=True)
    )
    ranked = [c.model for c in decision.candidates]
    limit = shipped_config.policy.max_alternatives
    pin = shipped_config.lanes["codex"].static_fallback
    expected = ranked[1 : 1 + limit]
    if pin not in expected and pin != decision.model:
        expected.append(pin)
    assert list(decision.alternatives) == expected
    assert decision.model == ranked[0]


# Every fallback reason in the closed set is reachable.


def test_routing_disabled(shipped_config: Config, make_router: MakeRouter) -> None:
    policy = dataclasses.replace(shipped_config.policy, routing_enabled=False)
    router = make_router(dataclasses.replace(shipped_config, policy=policy))
    decision = router.route(RouteRequest(lane="codex", task=Task(title="x")))
    assert decision.strategy == Strategy.STATIC_FALLBACK
    assert decision.fallback_reason == FallbackReason.ROUTING_DISABLED
    assert decision.fallback_reason.disruptive
    assert decision.model == shipped_config.lanes["codex"].static_fallback
    assert decision.score == 0.0


def test_lane_disabled_honours_an_allowed_requested_model(
    shipped_config: Config, make_router: MakeRouter
) -> None:
    lanes = dict(shipped_config.lanes)
    lanes["gemini"] = dataclasses.replace(lanes["gemini"], enabled=False)
    router = make_router(dataclasses.replace(shipped_config, lanes=lanes))
    pinned = router.route(RouteRequest(lane="gemini", task=Task(title="x")))
    assert (pinned.model, pinned.fallback_reason) == ("gemini-3.8-flash", FallbackReason.LANE_DISABLED)
    requested = router.route(
        RouteRequest(lane="gemini", task=Task(title="x"), requested_model="gemini-4-argon")
    )
    assert requested.model == "gemini-4-argon"
    assert requested.alternatives[0] == "gemini-3.8-flash"
    # Static alternatives follow the lane's configured order and skip the chosen model.
    assert (
        list(requested.alternatives)
        == [m for m in lanes["gemini"].allowed_models if m != "gemini-4-argon"][
            : shipped_config.policy.max_alternatives
        ]
    )


def test_no_eligible_candidate_explains_every_filter(shipped_config: Config, make_router: MakeRouter) -> None:
    router = make_router(shipped_config)
    decision = router.route(
        RouteRequest(
            lane="claude", task=Task(title="x"), constraints=Constraints(max_cost_usd=1e-9), explain=True
        )
    )
    assert decision.strategy == Strategy.STATIC_FALLBACK
    assert decision.fallback_reason == FallbackReason.NO_ELIGIBLE_CANDIDATE
    assert decision.model == shipped_config.lanes["claude"].static_fallback
    assert decision.eligible_count == 0
    assert decision.candidates == ()
    reasons = {f.model: f.filter for f in decision.filtered}
    for name in shipped_config.lanes["claude"].allowed_models:
        assert reasons[name] == Filter.MAX_COST
    # The static decision still prices the pinned model for this request.
    pinned = next(m for m in shipped_config.models if m.id == decision.model)
    assert decision.estimated_cost_usd == pytest.approx(
        expected_cost_usd(pinned, decision.input_tokens, decision.output_tokens)
    )
    assert decision.estimated_latency_s == pytest.approx(expected_latency_s(pinned, decision.output_tokens))


def test_router_error_falls_back_deterministically(shipped_config: Config, kernel: type) -> None:
    class BrokenKernel(kernel):  # type: ignore[misc, valid-type]
        def score(self, *args: object) -> int:
            raise MemoryError("simulated kernel failure")

    router = Router(shipped_config, kernel=BrokenKernel)
    decision = router.route(RouteRequest(lane="codex", task=Task(title="x"), requested_model="gpt-6-luna"))
    assert decision.strategy == Strategy.STATIC_FALLBACK
    assert decision.fallback_reason == FallbackReason.ROUTER_ERROR
    assert decision.model == "gpt-6-luna"  # allowed and enabled: the chain's first step
    assert math.isfinite(decision.estimated_cost_usd)


def test_disabled_models_are_skipped_by_the_static_chain(
    shipped_config: Config, make_router: MakeRouter
) -> None:
    policy = dataclasses.replace(shipped_config.policy, routing_enabled=False)
    router = make_router(dataclasses.replace(shipped_config, policy=policy))
    decision = router.route(RouteRequest(lane="codex", task=Task(), requested_model="gpt-5.3-codex"))
    assert decision.model == shipped_config.lanes["codex"].static_fallback
    assert "gpt-5.3-codex" not in decision.alternatives


def test_the_pin_is_an_alternative_only_when_it_can_serve_the_request(
    shipped_config: Config, make_router: MakeRouter
) -> None:
    router = make_router(shipped_config)
    local = shipped_config.lanes["local"]
    vision = RouteRequest(
        lane="local", task=Task(title="x"), constraints=Constraints(required_capabilities=("vision",))
    )
    decision = router.route(dataclasses.replace(vision, explain=True))
    assert decision.model == "qwen3.6-27b"
    filtered = {f.model: f.filter for f in decision.filtered}
    assert filtered[local.static_fallback] == Filter.CAPABILITY
    assert decision.alternatives == ()

    none_wanted = dataclasses.replace(shipped_config.policy, max_alternatives=0)
    router = make_router(dataclasses.replace(shipped_config, policy=none_wanted))
    assert router.route(RouteRequest(lane="codex", task=Task(title="x"))).alternatives == ()


def test_explain_never_changes_the_decision(shipped_config: Config, make_router: MakeRouter) -> None:
    router = make_router(shipped_config)
    requests = [
        RouteRequest(lane=lane_id, task=Task(title=title, input_tokens=tokens), constraints=constraints)
        for lane_id in shipped_config.lanes
        for title in ("Fix a typo", "Review the authentication flow", "Port the scheduler")
        for tokens in (0, 3_000, 150_000, 900_000)
        for constraints in (Constraints(), Constraints(max_cost_usd=0.05), Constraints(min_quality=80.0))
    ]
    for request in requests:
        plain = router.route(request)
        explained = router.route(dataclasses.replace(request, explain=True))
        assert dataclasses.replace(
            explained, decision_id="", candidates=(), filtered=()
        ) == dataclasses.replace(plain, decision_id="")


def test_a_non_finite_score_is_a_router_error(
    shipped_config: Config, kernel: type, caplog: pytest.LogCaptureFixture
) -> None:
    class NaNKernel(kernel):  # type: ignore[misc, valid-type]
        def score(self, **kwargs):  # type: ignore[no-untyped-def]
            eligible = super().score(**kwargs)
            score, order = kwargs["score"], kwargs["order"]
            score[order[0]] = math.nan  # the best candidate's score
            return eligible

    decision = Router(shipped_config, kernel=NaNKernel).route(
        RouteRequest(lane="codex", task=Task(title="x"))
    )
    assert decision.fallback_reason == FallbackReason.ROUTER_ERROR
    assert decision.model == shipped_config.lanes["codex"].static_fallback
    assert "ArithmeticError: score of" in caplog.text and "is nan" in caplog.text  # caught for this reason


@pytest.mark.parametrize(
    ("objective", "profile"), [("cost_speed", "fast"), ("balanced", "strong"), ("quality", "fast")]
)
def test_every_score_is_its_weighted_sub_scores_plus_bias_minus_penalty(
    shipped_config: Config, make_router: MakeRouter, objective: str, profile: str
) -> None:
    """Pinned on a catalog where the cheap model is the slow one and the fast one is dear, so swapped
    cost and speed weights, or a profile multiplier on the wrong sub-score, cannot give the same numbers."""
    models = [
        model(
            "cheap-slow",
            input_usd_per_mtok=0.1,
            output_usd_per_mtok=0.4,
            output_tokens_per_s=20.0,
            quality=60.0,
        ),
        model(
            "dear-fast",
            input_usd_per_mtok=10.0,
            output_usd_per_mtok=40.0,
            output_tokens_per_s=900.0,
            quality=70.0,
        ),
        model(
            "middle", input_usd_per_mtok=1.0, output_usd_per_mtok=4.0, output_tokens_per_s=150.0, quality=95.0
        ),
    ]
    test_lane = lane("test", ("cheap-slow", "dear-fast", "middle"), model_bias={"middle": 0.05})
    config = config_with(shipped_config, models, [test_lane])
    router = make_router(config)
    request = RouteRequest(
        lane="test",
        objective=Objective[objective.upper()],
        profile=Profile[profile.upper()],
        task=Task(input_tokens=190_000, output_tokens=4_000),  # past 90% of the 200k window: a penalty
        explain=True,
    )
    decision = router.route(request)
    base, multiplier = (
        config.policy.weights[request.objective],
        config.policy.profile_multipliers[request.profile],
    )
    raw = (base.cost * multiplier.cost, base.speed * multiplier.speed, base.quality * multiplier.quality)
    w_cost, w_speed, w_quality = (x / sum(raw) for x in raw)
    assert len(decision.candidates) == 3
    assert any(c.context_penalty > 0 for c in decision.candidates) and any(
        c.bias for c in decision.candidates
    )
    for c in decision.candidates:
        expected = (
            w_cost * c.cost_score
            + w_speed * c.speed_score
            + w_quality * c.quality_score
            + c.bias
            - c.context_penalty
        )
        assert c.score == pytest.approx(expected, abs=1e-12), c.model
    by_name = {c.model: c for c in decision.candidates}
    assert by_name["cheap-slow"].cost_score > by_name["dear-fast"].cost_score
    assert by_name["cheap-slow"].speed_score < by_name["dear-fast"].speed_score


def test_a_failure_after_scoring_is_a_router_error_too(
    shipped_config: Config, make_router: MakeRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = make_router(shipped_config)
    original = explain.rationale

    def failing_for_scored(catalog, ctx, model, strategy, *rest, **kwargs):  # type: ignore[no-untyped-def]
        if strategy != Strategy.STATIC_FALLBACK:
            raise KeyError("simulated")
        return original(catalog, ctx, model, strategy, *rest, **kwargs)

    monkeypatch.setattr(explain, "rationale", failing_for_scored)
    decision = router.route(RouteRequest(lane="gemini", task=Task(title="x")))
    assert (decision.strategy, decision.fallback_reason) == (
        Strategy.STATIC_FALLBACK,
        FallbackReason.ROUTER_ERROR,
    )


class FixedGuards:
    """Guards with fixed answers: what the circuits block, what the budgets leave, stop-loss,
    and each model's (passes, reports)."""

    def __init__(
        self,
        models: frozenset[str] = frozenset(),
        lane_headroom: float = math.inf,
        stop_loss: bool = False,
        rates: dict[str, tuple[int, int]] | None = None,
        success: SuccessModel | None = None,
        tuned: dict[Objective, Weights] | None = None,
        cache_shares: dict[str, float] | None = None,
    ) -> None:
        self.cache_shares = cache_shares or {}
        self.success = success
        self.tuned = tuned
        self.models = models
        self.lane_headroom = lane_headroom
        self.stop_loss = stop_loss
        self.paused: set[str] = set()
        self.rates = rates or {}
        self.reserved: list[str] = []

    def stop_loss_active(self) -> bool:
        return self.stop_loss

    def lane_paused(self, lane: str) -> bool:
        return lane in self.paused

    def pass_rates(self) -> dict[str, tuple[int, int]]:
        return self.rates

    def success_model(self) -> SuccessModel | None:
        return self.success

    def objective_weights(self) -> dict[Objective, Weights] | None:
        return self.tuned

    def blocked(self) -> tuple[frozenset[str], frozenset[str]]:
        return self.models, frozenset()

    def cache_share(self, lane: str) -> float:
        return self.cache_shares.get(lane, 0.0)

    def headroom(self, lane: str) -> tuple[float, dict[str, float]]:
        return self.lane_headroom, {}

    def try_reserve(self, decision_id: str, lane: str, provider: str, usd: float) -> bool:
        self.reserved.append(decision_id)
        return usd <= self.lane_headroom


@pytest.mark.parametrize(
    ("headroom", "reason"),
    [
        (math.inf, FallbackReason.ALL_CANDIDATES_UNHEALTHY),  # waiting out the circuits helps
        (10.0, FallbackReason.ALL_CANDIDATES_UNHEALTHY),  # ... and the budget could pay
    ],
)
def test_every_circuit_open_is_unhealthy_while_the_budget_could_pay(
    shipped_config: Config, make_router: MakeRouter, headroom: float, reason: FallbackReason
) -> None:
    claude = frozenset(shipped_config.lanes["claude"].allowed_models)
    guards = FixedGuards(claude, headroom)
    decision = make_router(shipped_config).route(
        RouteRequest(lane="claude", task=Task(title="x")), guards=guards
    )
    assert (decision.strategy, decision.fallback_reason) == (Strategy.STATIC_FALLBACK, reason)
    assert guards.reserved == [decision.decision_id]  # the static answer is reserved too


def with_budget_policy(config: Config, on_exhausted: str) -> Config:
    budgets = dataclasses.replace(config.policy.budgets, on_exhausted=on_exhausted)
    return dataclasses.replace(config, policy=dataclasses.replace(config.policy, budgets=budgets))


@pytest.mark.parametrize("on_exhausted", ["static_fallback", "error"])
def test_a_static_answer_that_does_not_fit_the_budget_is_refused(
    shipped_config: Config, make_router: MakeRouter, on_exhausted: str
) -> None:
    """Claude's lane has no zero-cost model: with nothing affordable, both policies refuse."""
    claude = frozenset(shipped_config.lanes["claude"].allowed_models)
    router = make_router(with_budget_policy(shipped_config, on_exhausted))
    with pytest.raises(BudgetExhausted):
        router.route(RouteRequest(lane="claude", task=Task(title="x")), guards=FixedGuards(claude, 0.0))


def test_with_no_budget_left_a_lane_falls_to_its_zero_cost_models(
    shipped_config: Config, make_router: MakeRouter
) -> None:
    """No budget left: scoring still finds the codex lane's local models, and in stop-loss the
    static chain skips the paid pin for the first local model it lists; nothing is refused."""
    lane = shipped_config.lanes["codex"]
    prices = {m.id: m.input_usd_per_mtok + m.output_usd_per_mtok for m in shipped_config.models}
    first_free = next(name for name in lane.allowed_models if prices[name] == 0)
    request = RouteRequest(lane="codex", task=Task(title="x"))
    for on_exhausted in ("static_fallback", "error"):
        router = make_router(with_budget_policy(shipped_config, on_exhausted))
        scored = router.route(request, guards=FixedGuards(frozenset(), 0.0))
        assert scored.strategy == Strategy.SCORED and prices[scored.model] == 0

        pinned = router.route(request, guards=FixedGuards(frozenset(), 0.0, stop_loss=True))
        assert (pinned.strategy, pinned.fallback_reason) == (
            Strategy.STATIC_FALLBACK,
            FallbackReason.STOP_LOSS_STATIC,
        )
        assert pinned.model == first_free != lane.static_fallback
        assert pinned.estimated_cost_usd == 0.0


def test_a_reload_keeps_the_routers_id_source_and_kernel(config_dir: Path) -> None:
    """Replayable runs (the fleet simulator's) name decisions from a seed; a reload must not lose that."""
    from orxaq_grpc.routing.live import LiveRouter

    ids = iter(range(1000))
    live = LiveRouter(
        Router(
            load_config(config_dir), new_id=lambda: f"seeded-{next(ids)}", kernel=_scoring_py.CatalogKernel
        )
    )
    assert live.reload()
    decision = live.current.route(RouteRequest(lane="codex", task=Task(title="fix it")))
    assert decision.decision_id == "seeded-0"
    assert isinstance(live.current.catalog.kernel, _scoring_py.CatalogKernel)
