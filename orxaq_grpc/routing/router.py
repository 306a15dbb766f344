"""The routing decision: filter, score with the kernel, or fall back deterministically.

A Router is immutable and built per config load, so it is safe to share between
threads and a reload swaps it whole.
"""

from __future__ import annotations

import logging
import math
import uuid
from array import array
from collections.abc import Callable
from dataclasses import dataclass

from orxaq_grpc.config.model import Config, ModelSpec
from orxaq_grpc.routing.catalog import CompiledCatalog, LaneArrays
from orxaq_grpc.routing.objective import ObjectiveResolver, ResolvedObjective, TaskEstimate
from orxaq_grpc.routing.types import (
    CandidateScore,
    Decision,
    FallbackReason,
    Filter,
    FilteredModel,
    Profile,
    RouteRequest,
    Strategy,
    enum_name,
)
from orxaq_grpc.routing.validation import Violation, validate_route_request
from orxaq_grpc.scoring import CatalogKernel

log = logging.getLogger(__name__)


def new_decision_id() -> str:
    return uuid.uuid4().hex


def expected_cost_usd(model: ModelSpec, input_tokens: int, output_tokens: int) -> float:
    """This request's expected cost; the kernel computes the same for every candidate."""
    return (input_tokens * model.input_usd_per_mtok + output_tokens * model.output_usd_per_mtok) / 1e6


def expected_latency_s(model: ModelSpec, output_tokens: int) -> float:
    return model.ttft_s + output_tokens / model.output_tokens_per_s


@dataclass(slots=True)
class _Request:
    """What every decision path shares about one request."""

    request: RouteRequest
    lane: LaneArrays
    estimate: TaskEstimate
    objective: ResolvedObjective
    profile: Profile


@dataclass(slots=True)
class _Scores:
    """One kernel call's outputs, indexed by catalog position."""

    status: bytearray
    cost: array
    latency: array
    cost_score: array
    speed_score: array
    penalty: array
    score: array
    ranked: list[int]  # eligible indices, best first (all of them when explaining)
    eligible: int


class Router:
    def __init__(
        self,
        config: Config,
        new_id: Callable[[], str] = new_decision_id,
        kernel: type = CatalogKernel,
    ) -> None:
        self.config = config
        self.catalog = CompiledCatalog(config, kernel)
        self.resolver = ObjectiveResolver(config.policy)
        self._new_id = new_id

    def validate(self, request: RouteRequest) -> list[Violation]:
        return validate_route_request(request, self.config, self.catalog.capability_bits)

    def route(self, request: RouteRequest) -> Decision:
        """Decide for a request that passed `validate`."""
        lane = self.catalog.lanes[request.lane]
        estimate = self.resolver.estimate(request.task)
        ctx = _Request(
            request=request,
            lane=lane,
            estimate=estimate,
            objective=self.resolver.resolve(request, lane.spec, estimate),
            profile=request.profile or lane.spec.default_profile,
        )
        if not self.config.policy.routing_enabled:
            return self._static(ctx, FallbackReason.ROUTING_DISABLED)
        if not lane.spec.enabled:
            return self._static(ctx, FallbackReason.LANE_DISABLED)
        try:
            return self._scored(ctx, self._score(ctx))
        except Exception:
            # The lane still gets a deterministic answer; the failure is logged here, once.
            log.exception(
                "routing failed for lane %s task %r; answering with the static fallback",
                request.lane,
                request.task.id,
            )
            return self._static(ctx, FallbackReason.ROUTER_ERROR)

    def _score(self, ctx: _Request) -> _Scores:
        catalog = self.catalog
        policy = self.config.policy
        request = ctx.request
        constraints = request.constraints
        estimate = ctx.estimate
        want = catalog.size if request.explain else min(catalog.size, policy.max_alternatives + 2)
        scores = _Scores(
            status=bytearray(ctx.lane.status_template),
            cost=array("d", catalog.zeros),
            latency=array("d", catalog.zeros),
            cost_score=array("d", catalog.zeros),
            speed_score=array("d", catalog.zeros),
            penalty=array("d", catalog.zeros),
            score=array("d", catalog.zeros),
            ranked=[],
            eligible=0,
        )
        order = array("q", bytes(8 * want))
        ref = catalog.reference(estimate.input_tokens, estimate.output_tokens)
        weights = catalog.weights[(ctx.objective.objective, ctx.profile)]
        scores.eligible = catalog.kernel.score(
            scores.status,
            ctx.lane.bias,
            scores.cost,
            scores.latency,
            scores.cost_score,
            scores.speed_score,
            scores.penalty,
            scores.score,
            order,
            float(estimate.input_tokens),
            float(estimate.output_tokens),
            weights.cost,
            weights.speed,
            weights.quality,
            ref.log_cost_lo,
            ref.log_cost_span,
            ref.floor_cost,
            ref.log_latency_lo,
            ref.log_latency_span,
            policy.context_ramp_start,
            policy.context_ramp_penalty,
            catalog.capability_mask(constraints.required_capabilities),
            ctx.lane.spec.quality_floor,
            0.0 if constraints.min_quality is None else constraints.min_quality,
            math.inf if constraints.max_cost_usd is None else constraints.max_cost_usd,
            math.inf if constraints.max_latency_s is None else constraints.max_latency_s,
        )
        scores.ranked = list(order[: min(scores.eligible, want)])
        return scores

    def _scored(self, ctx: _Request, scores: _Scores) -> Decision:
        catalog = self.catalog
        requested = ctx.request.requested_model
        reason = FallbackReason.NONE
        strategy = Strategy.SCORED
        chosen = -1
        if requested:
            index = catalog.index.get(requested)
            if index is None or ctx.lane.status_template[index] == Filter.NOT_ALLOWED:
                reason = FallbackReason.REQUESTED_MODEL_NOT_ALLOWED
            elif scores.status[index] != Filter.ELIGIBLE:
                reason = FallbackReason.REQUESTED_MODEL_INELIGIBLE
            else:
                chosen, strategy = index, Strategy.REQUESTED
        if scores.eligible == 0:
            return self._static(ctx, FallbackReason.NO_ELIGIBLE_CANDIDATE, scores)
        if chosen < 0:
            chosen = scores.ranked[0]
        if not math.isfinite(scores.score[chosen]):
            raise ArithmeticError(f"score of {catalog.models[chosen].id} is {scores.score[chosen]}")

        limit = self.config.policy.max_alternatives
        alternatives = [catalog.models[i].id for i in scores.ranked if i != chosen][:limit]
        pin = catalog.index[ctx.lane.spec.static_fallback]
        if limit > 0 and pin != chosen and scores.status[pin] == Filter.ELIGIBLE:
            name = catalog.models[pin].id
            if name not in alternatives:
                alternatives.append(name)  # the lane's safe last resort, when it can serve this request
        return self._decision(
            ctx,
            catalog.models[chosen],
            strategy,
            reason,
            cost=scores.cost[chosen],
            latency=scores.latency[chosen],
            score=scores.score[chosen],
            alternatives=alternatives,
            scores=scores,
        )

    def _static(self, ctx: _Request, reason: FallbackReason, scores: _Scores | None = None) -> Decision:
        """The deterministic chain: requested model if allowed and enabled, the lane's
        static pin, then the lane's allowed models in their configured order."""
        spec = ctx.lane.spec
        catalog = self.catalog
        requested = ctx.request.requested_model
        chain = ([requested] if requested in spec.allowed_models else []) + [spec.static_fallback]
        chain += spec.allowed_models
        usable = [name for name in dict.fromkeys(chain) if catalog.models[catalog.index[name]].enabled]
        model = catalog.models[catalog.index[usable[0]]]
        estimate = ctx.estimate
        return self._decision(
            ctx,
            model,
            Strategy.STATIC_FALLBACK,
            reason,
            cost=expected_cost_usd(model, estimate.input_tokens, estimate.output_tokens),
            latency=expected_latency_s(model, estimate.output_tokens),
            score=0.0,
            alternatives=usable[1 : 1 + self.config.policy.max_alternatives],
            scores=scores,
        )

    def _decision(
        self,
        ctx: _Request,
        model: ModelSpec,
        strategy: Strategy,
        reason: FallbackReason,
        *,
        cost: float,
        latency: float,
        score: float,
        alternatives: list[str],
        scores: _Scores | None,
    ) -> Decision:
        estimate = ctx.estimate
        explain = ctx.request.explain and scores is not None
        return Decision(
            decision_id=self._new_id(),
            model=model.id,
            provider=model.provider,
            lane=ctx.lane.spec.id,
            objective=ctx.objective.objective,
            objective_rule=ctx.objective.rule,
            objective_detail=ctx.objective.detail,
            profile=ctx.profile,
            strategy=strategy,
            fallback_reason=reason,
            estimated_cost_usd=cost,
            input_usd_per_mtok=model.input_usd_per_mtok,
            output_usd_per_mtok=model.output_usd_per_mtok,
            estimated_latency_s=latency,
            score=score,
            alternatives=tuple(alternatives),
            config_version=self.config.version,
            input_tokens=estimate.input_tokens,
            output_tokens=estimate.output_tokens,
            tokens_estimated=estimate.input_estimated or estimate.output_estimated,
            difficulty=estimate.difficulty,
            difficulty_estimated=estimate.difficulty_estimated,
            eligible_count=scores.eligible if scores is not None else 0,
            rationale=self._rationale(ctx, model, strategy, reason, cost, latency, score, scores),
            candidates=self._candidates(ctx, scores) if explain else (),
            filtered=self._filtered(ctx, scores) if explain else (),
        )

    def _rationale(
        self,
        ctx: _Request,
        model: ModelSpec,
        strategy: Strategy,
        reason: FallbackReason,
        cost: float,
        latency: float,
        score: float,
        scores: _Scores | None,
    ) -> str:
        estimate = ctx.estimate
        objective = f"objective {enum_name(ctx.objective.objective)} ({ctx.objective.detail})"
        profile = f"profile {enum_name(ctx.profile)}"
        if strategy == Strategy.STATIC_FALLBACK:
            head = f"Static fallback to {model.id} ({model.provider}): {enum_name(reason).replace('_', ' ')}"
            if scores is not None:
                head += (
                    f", {len(self.catalog.models) - scores.eligible} of {self.catalog.size} models filtered"
                )
            head += f"; {objective}, {profile}."
        else:
            index = self.catalog.index[model.id]
            weights = self.catalog.weights[(ctx.objective.objective, ctx.profile)]
            assert scores is not None
            how = "requested and eligible" if strategy == Strategy.REQUESTED else "best score"
            head = (
                f"{model.id} ({model.provider}), {how} of {scores.eligible} eligible; "
                f"{objective}, {profile}; "
                f"score {score:.3f} = cost {scores.cost_score[index]:.2f}x{weights.cost:.2f}"
                f" + speed {scores.speed_score[index]:.2f}x{weights.speed:.2f}"
                f" + quality {self.catalog.quality_score[index]:.2f}x{weights.quality:.2f}"
            )
            bias = ctx.lane.bias[index]
            if bias:
                head += f" + bias {bias:+.2f}"
            if scores.penalty[index]:
                head += f" - context penalty {scores.penalty[index]:.3f}"
            head += "."
            if reason != FallbackReason.NONE:
                head += f" Requested {ctx.request.requested_model!r}: {enum_name(reason).replace('_', ' ')}."
        given = {True: "estimated", False: "given"}
        return (
            f"{head} Expected cost ${cost:.4f} for {estimate.input_tokens} input "
            f"({given[estimate.input_estimated]}) + {estimate.output_tokens} output tokens "
            f"({given[estimate.output_estimated]}) at ${model.input_usd_per_mtok:g}/"
            f"${model.output_usd_per_mtok:g} per 1M; expected latency {latency:.1f} s "
            f"(first token {model.ttft_s:g} s + {estimate.output_tokens} tokens at "
            f"{model.output_tokens_per_s:g} tok/s)."
        )

    def _candidates(self, ctx: _Request, scores: _Scores) -> tuple[CandidateScore, ...]:
        models = self.catalog.models
        bias = ctx.lane.bias
        return tuple(
            CandidateScore(
                model=models[i].id,
                provider=models[i].provider,
                score=scores.score[i],
                cost_score=scores.cost_score[i],
                speed_score=scores.speed_score[i],
                quality_score=self.catalog.quality_score[i],
                bias=bias[i],
                context_penalty=scores.penalty[i],
                estimated_cost_usd=scores.cost[i],
                estimated_latency_s=scores.latency[i],
            )
            for i in scores.ranked
        )

    def _filtered(self, ctx: _Request, scores: _Scores) -> tuple[FilteredModel, ...]:
        models = self.catalog.models
        return tuple(
            FilteredModel(models[i].id, Filter(code), self._filter_detail(ctx, scores, i, Filter(code)))
            for i, code in enumerate(scores.status)
            if code != Filter.ELIGIBLE
        )

    def _filter_detail(self, ctx: _Request, scores: _Scores, index: int, code: Filter) -> str:
        model = self.catalog.models[index]
        estimate = ctx.estimate
        constraints = ctx.request.constraints
        match code:
            case Filter.NOT_ALLOWED:
                return f"not on lane {ctx.lane.spec.id!r} allow-list"
            case Filter.DISABLED:
                return "disabled in the catalog"
            case Filter.CONTEXT_WINDOW:
                need = estimate.input_tokens + estimate.output_tokens
                return f"needs {need} tokens, window {model.context_window}"
            case Filter.OUTPUT_LIMIT:
                return f"expects {estimate.output_tokens} output tokens, max {model.max_output_tokens}"
            case Filter.CAPABILITY:
                missing = sorted(set(constraints.required_capabilities) - model.capabilities)
                return f"lacks {', '.join(missing)}"
            case Filter.LANE_QUALITY_FLOOR:
                return f"quality {model.quality:g} below lane floor {ctx.lane.spec.quality_floor:g}"
            case Filter.MIN_QUALITY:
                return f"quality {model.quality:g} below min_quality {constraints.min_quality:g}"
            case Filter.MAX_COST:
                return f"expected ${scores.cost[index]:.4f} over max ${constraints.max_cost_usd:.4f}"
            case Filter.MAX_LATENCY:
                return f"expected {scores.latency[index]:.1f} s over max {constraints.max_latency_s:.1f} s"
        return enum_name(code)
