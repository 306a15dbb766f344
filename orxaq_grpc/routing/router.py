"""The routing decision: filter, score with the kernel, or fall back deterministically.
How a decision is worded (rationale, filter details, explain-mode lists) is `explain.py`'s.

A Router is immutable and built per config load, so it is safe to share between
threads and a reload swaps it whole.
"""

from __future__ import annotations

import logging
import math
from array import array
from collections.abc import Callable, Iterator, Sequence

from orxaq_grpc.config.model import Config, ModelSpec, Weights
from orxaq_grpc.kernel import Codes, Doubles, KernelFactory
from orxaq_grpc.learning import SuccessModel, task_features
from orxaq_grpc.routing import explain, strong_or_weak
from orxaq_grpc.routing.batch import BatchGuards, score_batch
from orxaq_grpc.routing.catalog import CACHE_SHARE_STEPS, CompiledCatalog, combine_weights, floor_quality
from orxaq_grpc.routing.context import Guards, RequestContext, Scores
from orxaq_grpc.routing.ids import new_decision_id, new_decision_ids
from orxaq_grpc.routing.objective import ObjectiveResolver
from orxaq_grpc.routing.strong_or_weak import named_threshold
from orxaq_grpc.routing.types import (
    Decision,
    FallbackReason,
    Filter,
    RouteRequest,
    Strategy,
    StrongOrWeak,
)
from orxaq_grpc.routing.validation import Violation, validate_route_request
from orxaq_grpc.scoring import CatalogKernel

log = logging.getLogger(__name__)


class BudgetExhausted(Exception):
    """No candidate fits the budgets left, and policy says to refuse rather than fall back.
    Carries what the decision log needs to count the refusal."""

    def __init__(self, lane: str, decision_id: str, input_tokens: int, output_tokens: int) -> None:
        self.lane = lane
        self.decision_id = decision_id
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        super().__init__(f"no model's estimated cost fits the daily budgets left for lane {lane!r}")


# A reservation that another thread won between the headroom check and try_reserve
# makes Route decide again with the new headroom, at most this often.
_RESERVE_ATTEMPTS = 3
# Reasons whose static chain starts at the lane's pin, whatever the lane asked for.
_TO_THE_PIN = frozenset({FallbackReason.STOP_LOSS_STATIC, FallbackReason.LANE_PAUSED})


def expected_cost_usd(
    model: ModelSpec, input_tokens: int, output_tokens: int, cache_share: float = 0.0
) -> float:
    """This request's expected cost, `cache_share` of its input read from a prompt cache (the lane's
    observed share); the kernel computes the same for every candidate."""
    input_price = model.input_usd_per_mtok
    if cache_share:
        input_price = cached_blend(model, cache_share)
    return (input_tokens * input_price + output_tokens * model.output_usd_per_mtok) / 1e6


def cached_blend(model: ModelSpec, cache_share: float) -> float:
    """USD per 1M input tokens when `cache_share` of them are cache reads."""
    return model.input_usd_per_mtok * (1.0 - cache_share) + model.cached_input_price * cache_share


def reported_cost_usd(
    model: ModelSpec, input_tokens: int, output_tokens: int, cached_input_tokens: int, cache_write_tokens: int
) -> float:
    """A report's cost from the catalog: uncached input, cache reads, cache writes and output each at
    their own price (the cache counts are part of input_tokens)."""
    uncached = max(0, input_tokens - cached_input_tokens - cache_write_tokens)
    return (
        uncached * model.input_usd_per_mtok
        + cached_input_tokens * model.cached_input_price
        + cache_write_tokens * model.cache_write_price
        + output_tokens * model.output_usd_per_mtok
    ) / 1e6


def expected_latency_s(model: ModelSpec, output_tokens: int) -> float:
    return model.ttft_s + output_tokens / model.output_tokens_per_s


class Router:
    def __init__(
        self,
        config: Config,
        new_id: Callable[[], str] = new_decision_id,
        kernel: KernelFactory = CatalogKernel,
    ) -> None:
        self.config = config
        self.catalog = CompiledCatalog(config, kernel)
        self.resolver = ObjectiveResolver(config.policy)
        self._new_id = new_id
        self._kernel = kernel

    def reconfigured(self, config: Config) -> Router:
        """A router for another config with this one's id source and kernel (a reload keeps both)."""
        return Router(config, self._new_id, self._kernel)

    def validate(self, request: RouteRequest) -> list[Violation]:
        return validate_route_request(request, self.config, self.catalog.capability_bits)

    def route(self, request: RouteRequest, guards: Guards | None = None) -> Decision:
        """Decide for a request that passed `validate`. With `guards`, models behind an
        open circuit are skipped, candidates must fit the budgets, and the decision's
        estimated cost is reserved."""
        return self._decide(self._context(request, guards, self._new_id()))

    def route_batch(
        self, requests: Sequence[RouteRequest], guards: Guards | None = None, pause_every: int = 0
    ) -> Iterator[Decision | Exception | None]:
        """Decide for many requests that passed `validate`, in order, each as `route` would decide it
        on the same guards after the ones before it: yields each request's Decision, or what `route`
        would have raised for it (BudgetExhausted, or any other exception deciding it raised).

        The reads of the guards that stand for the whole batch (stop-loss, tuned weights, the success
        model, pass rates, each lane's cache share) are taken once; every request is scored over the
        catalog in one kernel call per cache-share price. What the batch itself changes is followed:
        a request whose budget headroom moved (earlier requests reserved) such that the budget filter
        would judge a model otherwise is scored again alone, and when the circuits that block change
        (a half-open circuit's probe taken) the requests left are scored again. Lazily: the caller
        records each decision (breakers.note_routed takes a half-open circuit's probe) before asking
        for the next, as sequential Routes would. With `pause_every`, None is yielded after each
        that many requests prepared (estimates, objectives, features), a place to pause that
        decides nothing."""
        view = BatchGuards(guards) if guards is not None else None
        ids = new_decision_ids(len(requests)) if self._new_id is new_decision_id else None
        contexts: list[RequestContext | Exception] = []
        for position, request in enumerate(requests):
            try:
                decision_id = ids[position] if ids is not None else self._new_id()
                contexts.append(self._context(request, view, decision_id))
            except Exception as exc:  # as route would raise it: that request's failure alone
                contexts.append(exc)
            if pause_every and (position + 1) % pause_every == 0:
                yield None
        scored = [c for c in contexts if isinstance(c, RequestContext) and self._scores(c)]
        blocked = view.blocked() if view is not None else None
        batch = self._score_batch(scored)
        for ctx in contexts:
            if not isinstance(ctx, RequestContext):
                yield ctx
                continue
            if view is not None and (now := view.blocked()) is not blocked and now != blocked:
                blocked = now  # the batch's own decisions took a probe (or a circuit moved): again
                batch = self._score_batch([c for c in scored if c.decision_id in batch])
            try:
                outcome: Decision | Exception = self._decide(ctx, batch.pop(ctx.decision_id, None))
            except Exception as exc:  # BudgetExhausted, or what route would have raised: this one's
                outcome = exc
            yield outcome

    def _scores(self, ctx: RequestContext) -> bool:
        """Whether the decision would be scored (not answered by the static chain at once)."""
        guards = ctx.guards
        return (
            self.config.policy.routing_enabled
            and not (guards is not None and guards.stop_loss_active())
            and ctx.lane.spec.enabled
            and not (guards is not None and guards.lane_paused(ctx.request.lane))
        )

    def _score_batch(self, contexts: list[RequestContext]) -> dict[str, Scores]:
        """Every context scored in one kernel call per cache-share price, by decision id; {} when the
        batch kernel fails (each request is then scored alone, and fails as it would alone)."""
        if not contexts:
            return {}
        try:
            scores = score_batch(
                self.catalog, self.config.policy, contexts, self._weights, self._guard_inputs
            )
        except Exception:
            log.exception("scoring a batch of %d requests failed; scoring each alone", len(contexts))
            return {}
        for ctx, one in zip(contexts, scores, strict=True):
            if (model := self._quality_from_model(ctx)) is not None:
                self._rescore_quality(ctx, one, one.weights.quality, model)
        return {ctx.decision_id: one for ctx, one in zip(contexts, scores, strict=True)}

    def _context(self, request: RouteRequest, guards: Guards | None, decision_id: str) -> RequestContext:
        lane = self.catalog.lanes[request.lane]
        estimate = self.resolver.estimate(request.task)
        objective = self.resolver.resolve(request, lane.spec, estimate)
        learning = self.config.policy.learning
        task = request.task
        share = guards.cache_share(request.lane) if guards is not None else 0.0
        return RequestContext(
            request=request,
            lane=lane,
            estimate=estimate,
            objective=objective,
            profile=request.profile or lane.spec.default_profile,
            decision_id=decision_id,
            guards=guards,
            # To the nearest 1%, as the kernel prices it, so every path prices the same.
            cache_share=round(min(max(share, 0.0), 1.0) * CACHE_SHARE_STEPS) / CACHE_SHARE_STEPS,
            task=task_features(
                title=task.title,
                prompt=task.prompt,
                kind=task.kind,
                labels=task.labels,
                lane=request.lane,
                objective=objective.objective.name.lower(),
                input_tokens=estimate.input_tokens,
                output_tokens=estimate.output_tokens,
                max_text_chars=learning.max_text_chars,
            )
            if learning.learns
            else None,
        )

    def _decide(self, ctx: RequestContext, batched: Scores | None = None) -> Decision:
        """`batched`: this request's scores from the batch kernel, checked against the guards now."""
        if not self.config.policy.routing_enabled:
            return self._static(ctx, FallbackReason.ROUTING_DISABLED)
        if ctx.guards is not None and ctx.guards.stop_loss_active():
            return self._static(ctx, FallbackReason.STOP_LOSS_STATIC)
        if not ctx.lane.spec.enabled:
            return self._static(ctx, FallbackReason.LANE_DISABLED)
        if ctx.guards is not None and ctx.guards.lane_paused(ctx.request.lane):
            return self._static(ctx, FallbackReason.LANE_PAUSED)
        try:
            for _ in range(_RESERVE_ATTEMPTS):
                scores = self._score(ctx) if batched is None else self._still_valid(ctx, batched)
                batched = None  # a reservation lost to a race scores again, alone
                decision = self._scored(ctx, scores)
                if ctx.guards is None or decision.strategy == Strategy.STATIC_FALLBACK:
                    return decision
                if ctx.guards.try_reserve(
                    decision.decision_id, decision.lane, decision.provider, decision.estimated_cost_usd
                ):
                    return decision
            return self._static(ctx, self._budget_exhausted(ctx))
        except BudgetExhausted:
            raise
        except Exception:
            # The lane still gets a deterministic answer; the failure is logged here, once.
            log.exception(
                "routing failed for lane %s task %r; answering with the static fallback",
                ctx.request.lane,
                ctx.request.task.id,
            )
            return self._static(ctx, FallbackReason.ROUTER_ERROR)

    def _score(self, ctx: RequestContext) -> Scores:
        catalog = self.catalog
        policy = self.config.policy
        request = ctx.request
        constraints = request.constraints
        estimate = ctx.estimate
        want = catalog.size if request.explain else min(catalog.size, policy.max_alternatives + 2)
        scores = Scores(
            status=bytearray(ctx.lane.status_template),
            cost=array("d", catalog.zeros),
            latency=array("d", catalog.zeros),
            cost_score=array("d", catalog.zeros),
            speed_score=array("d", catalog.zeros),
            penalty=array("d", catalog.zeros),
            score=array("d", catalog.zeros),
            ranked=[],
            eligible=0,
            weights=catalog.weights[(ctx.objective.objective, ctx.profile)],
        )
        order = array("q", bytes(8 * want))
        unhealthy, provider_headroom, lane_headroom = self._guard_inputs(ctx)
        scores.lane_headroom, scores.provider_headroom = lane_headroom, provider_headroom
        priced = catalog.priced(ctx.cache_share)
        ref = catalog.reference(estimate.input_tokens, estimate.output_tokens, priced)
        weights = self._weights(ctx)
        scores.weights = weights
        scores.eligible = priced.kernel.score(
            status=scores.status,
            unhealthy=unhealthy,
            bias=ctx.lane.bias,
            cost=scores.cost,
            latency=scores.latency,
            cost_score=scores.cost_score,
            speed_score=scores.speed_score,
            penalty=scores.penalty,
            score=scores.score,
            order=order,
            input_tokens=float(estimate.input_tokens),
            output_tokens=float(estimate.output_tokens),
            w_cost=weights.cost,
            w_speed=weights.speed,
            w_quality=weights.quality,
            log_cost_lo=ref.log_cost_lo,
            log_cost_span=ref.log_cost_span,
            floor_cost=ref.floor_cost,
            log_latency_lo=ref.log_latency_lo,
            log_latency_span=ref.log_latency_span,
            ramp_start=policy.context_ramp_start,
            ramp_penalty=policy.context_ramp_penalty,
            required_capabilities=catalog.capability_mask(constraints.required_capabilities),
            lane_floor=ctx.lane.spec.quality_floor,
            min_quality=0.0 if constraints.min_quality is None else constraints.min_quality,
            max_cost=math.inf if constraints.max_cost_usd is None else constraints.max_cost_usd,
            max_latency=math.inf if constraints.max_latency_s is None else constraints.max_latency_s,
            provider_headroom=provider_headroom,
            lane_headroom=lane_headroom,
        )
        scores.ranked = list(order[: min(scores.eligible, want)])
        if (model := self._quality_from_model(ctx)) is not None:
            self._rescore_quality(ctx, scores, weights.quality, model)
        return scores

    def _still_valid(self, ctx: RequestContext, scores: Scores) -> Scores:
        """Batch scores as `_score` would give them now: the budget filter judged on the headroom left
        now (the batch's earlier decisions reserved some). Unchanged headroom, or a change that
        judges no model otherwise, keeps the scores (with the new headroom); else scored again alone."""
        if ctx.guards is None:
            return scores
        provider_headroom, lane_headroom = self._headroom_inputs(ctx)
        if lane_headroom == scores.lane_headroom and provider_headroom == scores.provider_headroom:
            return scores
        slots = self.catalog.slot_of
        status, cost = scores.status, scores.cost
        for i, code in enumerate(status):
            if code in (Filter.ELIGIBLE, Filter.BUDGET):
                fits = cost[i] <= lane_headroom and cost[i] <= provider_headroom[slots[i]]
                if fits != (code == Filter.ELIGIBLE):
                    return self._score(ctx)
        scores.lane_headroom, scores.provider_headroom = lane_headroom, provider_headroom
        return scores

    def _weights(self, ctx: RequestContext) -> Weights:
        """The objective's weights after the profile: tuned from outcomes when the guards have tuned
        them (a critical lane keeping its configured quality), else the configured ones."""
        objective = ctx.objective.objective
        configured = self.catalog.weights[(objective, ctx.profile)]
        tuned = ctx.guards.objective_weights() if ctx.guards is not None else None
        if tuned is None:
            return configured
        weights = combine_weights(tuned[objective], self.config.policy.profile_multipliers[ctx.profile])
        return floor_quality(weights, configured) if ctx.lane.spec.critical else weights

    def _quality_from_model(self, ctx: RequestContext) -> SuccessModel | None:
        """The success model when the policy has it decide the scored path's quality sub-score."""
        learning = self.config.policy.learning
        if not (learning.applies and learning.quality_from_model) or ctx.guards is None:
            return None
        return ctx.guards.success_model()

    def _rescore_quality(
        self, ctx: RequestContext, scores: Scores, w_quality: float, model: SuccessModel
    ) -> None:
        """The kernel's score is linear in the quality sub-score: swap the catalog's for the predicted
        pass chance on the same catalog-wide scale, and rank again with the kernel's tie-breaks."""
        catalog = self.catalog
        vector = ctx.vector(model)
        eligible = [i for i, code in enumerate(scores.status) if code == Filter.ELIGIBLE]
        for i in eligible:
            predicted = catalog.quality_on_scale(100.0 * model.predict(catalog.models[i].id, vector).p)
            scores.score[i] += w_quality * (predicted - catalog.quality_score[i])
        models = catalog.models
        eligible.sort(key=lambda i: (-scores.score[i], -models[i].quality, scores.cost[i], i))
        scores.ranked = eligible[: len(scores.ranked)] if not ctx.request.explain else eligible

    def _guard_inputs(self, ctx: RequestContext) -> tuple[Codes, Doubles, float]:
        """The kernel's view of the guards: models behind open circuits, budget headroom."""
        catalog = self.catalog
        if ctx.guards is None:
            return catalog.healthy, catalog.unlimited, math.inf
        models, providers = ctx.guards.blocked()
        unhealthy: bytes | bytearray = catalog.healthy
        if models or providers:
            unhealthy = bytearray(catalog.size)
            for name in models:
                if (index := catalog.index.get(name)) is not None:
                    unhealthy[index] = 1
            for name in providers:
                for index in catalog.provider_models.get(name, ()):
                    unhealthy[index] = 1
        provider_headroom, lane_headroom = self._headroom_inputs(ctx)
        return unhealthy, provider_headroom, lane_headroom

    def _headroom_inputs(self, ctx: RequestContext) -> tuple[Doubles, float]:
        """The kernel's view of the budgets for this request's lane: per provider slot, and the lane's."""
        catalog = self.catalog
        assert ctx.guards is not None
        lane_headroom, per_provider = ctx.guards.headroom(ctx.lane.spec.id)
        provider_headroom = catalog.unlimited
        if per_provider:
            provider_headroom = array("d", catalog.unlimited)
            for name, usd in per_provider.items():
                if (slot := catalog.provider_slot.get(name)) is not None:
                    provider_headroom[slot] = usd
        return provider_headroom, lane_headroom

    def _scored(self, ctx: RequestContext, scores: Scores) -> Decision:
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
            return self._static(ctx, self._nothing_left_reason(ctx, scores), scores)
        comparison = None
        value = ctx.request.task.value_usd
        if chosen < 0 and (value is not None or named_threshold(ctx, self.config.policy) is not None):
            comparison = strong_or_weak.compare(ctx, self.config.policy, catalog.models, scores, value or 0.0)
            chosen = catalog.index[
                comparison.strong_model if comparison.chose_strong else comparison.weak_model
            ]
            strategy = Strategy.STRONG_OR_WEAK
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
            comparison=comparison,
        )

    def _nothing_left_reason(self, ctx: RequestContext, scores: Scores) -> FallbackReason:
        """Circuit and budget filters run last, so a model they removed passed all the
        others: they are what left the lane with nothing. A model behind an open circuit
        that the budget could pay for makes it a health problem (it passes), not a budget
        one (it lasts until tomorrow)."""
        if Filter.CIRCUIT_OPEN in scores.status:
            slots = self.catalog.provider_slot
            if any(
                code == Filter.CIRCUIT_OPEN and scores.fits_budget(i, slots[model.provider])
                for (i, code), model in zip(enumerate(scores.status), self.catalog.models, strict=True)
            ):
                return FallbackReason.ALL_CANDIDATES_UNHEALTHY
            if scores.budgeted:
                return self._budget_exhausted(ctx)  # healthy again, none would fit either
            return FallbackReason.ALL_CANDIDATES_UNHEALTHY
        if Filter.BUDGET in scores.status:
            return self._budget_exhausted(ctx)
        return FallbackReason.NO_ELIGIBLE_CANDIDATE

    def _budget_exhausted(self, ctx: RequestContext) -> FallbackReason:
        if self.config.policy.budgets.on_exhausted == "error":
            estimate = ctx.estimate
            raise BudgetExhausted(
                ctx.lane.spec.id, ctx.decision_id, estimate.input_tokens, estimate.output_tokens
            )
        return FallbackReason.BUDGET_EXHAUSTED

    def _static(self, ctx: RequestContext, reason: FallbackReason, scores: Scores | None = None) -> Decision:
        """The deterministic chain: requested model if allowed and healthy (not in stop-loss or a
        paused lane), the
        lane's static pin, then the lane's allowed models in their configured order. Healthy models
        (enabled, not behind an open circuit) come first; with none healthy, the first enabled one.

        A budget is a cap in every mode: with guards, the first model of the chain whose estimate
        fits the budgets left is chosen and reserved (a zero-cost model always fits), and when none
        fits the Route is refused (BudgetExhausted), whatever `on_exhausted` says."""
        spec = ctx.lane.spec
        catalog = self.catalog
        requested = ctx.request.requested_model
        # Stop-loss rolls back to the pins, and a paused lane goes to its pin: a lane's ask is part of
        # what is being rolled back or paused.
        honoured = requested in spec.allowed_models and reason not in _TO_THE_PIN
        chain = ([requested] if honoured else []) + [spec.static_fallback]
        chain += spec.allowed_models
        enabled = [name for name in dict.fromkeys(chain) if catalog.models[catalog.index[name]].enabled]
        healthy = enabled
        if ctx.guards is not None:
            models, providers = ctx.guards.blocked()
            healthy = [
                n
                for n in enabled
                if n not in models and catalog.models[catalog.index[n]].provider not in providers
            ]
        # Healthy models first; when none the budget can pay for is healthy, one behind a circuit
        # that it can pay for beats a refusal "until tomorrow" (the circuit reopens in seconds).
        candidates = healthy + [n for n in enabled if n not in healthy] or [spec.static_fallback]
        estimate = ctx.estimate
        chosen = self._first_affordable(ctx, candidates)
        model = catalog.models[catalog.index[candidates[chosen]]]
        alternatives = [n for n in candidates[chosen + 1 :] if n in healthy]
        return self._decision(
            ctx,
            model,
            Strategy.STATIC_FALLBACK,
            reason,
            cost=expected_cost_usd(model, estimate.input_tokens, estimate.output_tokens, ctx.cache_share),
            latency=expected_latency_s(model, estimate.output_tokens),
            score=0.0,
            alternatives=alternatives[: self.config.policy.max_alternatives],
            scores=scores,
        )

    def _first_affordable(self, ctx: RequestContext, chain: list[str]) -> int:
        """The position of the first model in `chain` whose estimate the budgets can still pay for,
        reserved for this decision; without guards, the first."""
        guards = ctx.guards
        if guards is None:
            return 0
        estimate = ctx.estimate
        lane = ctx.lane.spec.id
        for position, name in enumerate(chain):
            model = self.catalog.models[self.catalog.index[name]]
            cost = expected_cost_usd(model, estimate.input_tokens, estimate.output_tokens, ctx.cache_share)
            if guards.try_reserve(ctx.decision_id, lane, model.provider, cost):
                return position
        raise BudgetExhausted(lane, ctx.decision_id, estimate.input_tokens, estimate.output_tokens)

    def _decision(
        self,
        ctx: RequestContext,
        model: ModelSpec,
        strategy: Strategy,
        reason: FallbackReason,
        *,
        cost: float,
        latency: float,
        score: float,
        alternatives: list[str],
        scores: Scores | None,
        comparison: StrongOrWeak | None = None,
    ) -> Decision:
        estimate = ctx.estimate
        explained = scores if ctx.request.explain else None
        return Decision(
            decision_id=ctx.decision_id,
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
            rationale=explain.rationale(
                self.catalog,
                ctx,
                model,
                strategy,
                reason,
                cost=cost,
                latency=latency,
                score=score,
                scores=scores,
                comparison=comparison,
                learning=self.config.policy.learning,
            ),
            candidates=explain.candidates(self.catalog, ctx, explained) if explained is not None else (),
            filtered=explain.filtered(self.catalog, ctx, explained) if explained is not None else (),
            filter_summary=explain.filter_summary(self.catalog, ctx, scores),
            value_usd=ctx.request.task.value_usd,
            strong_or_weak=comparison,
            learning=self.config.policy.learning.mode,
            task=ctx.task,
        )
