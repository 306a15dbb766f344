"""What RouteBatch adds to the routing core: the guards as one batch sees them, and every request of
a batch scored over the catalog in one kernel call (`Router.route_batch` decides with them).

A batch is one instant: what stands for the whole of it (stop-loss, the objective weights, the success
model, pass rates, a lane's cache share) is read once. What the batch itself changes (the budget its
decisions reserve, the probes they take from half-open circuits) the router follows per decision.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Mapping

from orxaq_grpc.config.model import Policy, Weights
from orxaq_grpc.kernel import Codes, Doubles
from orxaq_grpc.learning import SuccessModel
from orxaq_grpc.routing.catalog import CompiledCatalog
from orxaq_grpc.routing.context import Guards, RequestContext, Scores
from orxaq_grpc.routing.types import Objective

# The kernel's view of the guards for one request: unhealthy codes, provider headroom, lane headroom.
GuardInputs = Callable[[RequestContext], tuple[Codes, Doubles, float]]


class BatchGuards:
    """Guards for one batch: what stands for the whole batch read once, the rest passed through."""

    def __init__(self, guards: Guards) -> None:
        self._guards = guards
        self._stop_loss = guards.stop_loss_active()
        self._weights = guards.objective_weights()
        self._model = guards.success_model()
        self._rates: Mapping[str, tuple[int, int]] | None = None
        self._shares: dict[str, float] = {}

    def stop_loss_active(self) -> bool:
        return self._stop_loss

    def lane_paused(self, lane: str) -> bool:
        return self._guards.lane_paused(lane)

    def pass_rates(self) -> Mapping[str, tuple[int, int]]:
        if self._rates is None:
            self._rates = self._guards.pass_rates()
        return self._rates

    def success_model(self) -> SuccessModel | None:
        return self._model

    def objective_weights(self) -> Mapping[Objective, Weights] | None:
        return self._weights

    def cache_share(self, lane: str) -> float:
        share = self._shares.get(lane)
        if share is None:
            share = self._shares[lane] = self._guards.cache_share(lane)
        return share

    def blocked(self) -> tuple[frozenset[str], frozenset[str]]:
        return self._guards.blocked()

    def headroom(self, lane: str) -> tuple[float, dict[str, float]]:
        return self._guards.headroom(lane)

    def try_reserve(self, decision_id: str, lane: str, provider: str, usd: float) -> bool:
        return self._guards.try_reserve(decision_id, lane, provider, usd)


def score_batch(
    catalog: CompiledCatalog,
    policy: Policy,
    contexts: list[RequestContext],
    weights_of: Callable[[RequestContext], Weights],
    guard_inputs: GuardInputs,
) -> list[Scores]:
    """Each context's Scores as `Router._score` makes them before any quality rescoring: one
    `score_many` call per cache-share price, the guards read once per lane."""
    size = catalog.size
    want = min(size, policy.max_alternatives + 2)
    k = size if any(ctx.request.explain for ctx in contexts) else want
    inputs: dict[str, tuple[Codes, Doubles, float]] = {}
    biases: dict[str, bytes] = {}
    groups: dict[float, list[int]] = {}
    for position, ctx in enumerate(contexts):
        lane = ctx.lane.spec.id
        if lane not in inputs:
            inputs[lane] = guard_inputs(ctx)
            biases[lane] = ctx.lane.bias.tobytes()
        groups.setdefault(ctx.cache_share, []).append(position)
    found: list[Scores | None] = [None] * len(contexts)
    for share, positions in groups.items():
        members = [contexts[p] for p in positions]
        for position, scores in zip(
            positions,
            _score_group(catalog, policy, members, share, k, want, weights_of, inputs, biases),
            strict=True,
        ):
            found[position] = scores
    return [scores for scores in found if scores is not None]


def _score_group(
    catalog: CompiledCatalog,
    policy: Policy,
    contexts: list[RequestContext],
    share: float,
    k: int,
    want: int,
    weights_of: Callable[[RequestContext], Weights],
    inputs: dict[str, tuple[Codes, Doubles, float]],
    biases: dict[str, bytes],
) -> list[Scores]:
    """Requests priced at one cache share, in one kernel call."""
    size = catalog.size
    n = len(contexts)
    priced = catalog.priced(share)
    columns: list[list[float]] = [[] for _ in range(15)]
    (
        input_tokens,
        output_tokens,
        w_cost,
        w_speed,
        w_quality,
        log_cost_lo,
        log_cost_span,
        floor_cost,
        log_latency_lo,
        log_latency_span,
        lane_floor,
        min_quality,
        max_cost,
        max_latency,
        lane_headroom,
    ) = columns
    capabilities: list[int] = []
    weights: list[Weights] = []
    for ctx in contexts:
        estimate = ctx.estimate
        constraints = ctx.request.constraints
        ref = catalog.reference(estimate.input_tokens, estimate.output_tokens, priced)
        w = weights_of(ctx)
        weights.append(w)
        input_tokens.append(float(estimate.input_tokens))
        output_tokens.append(float(estimate.output_tokens))
        w_cost.append(w.cost)
        w_speed.append(w.speed)
        w_quality.append(w.quality)
        log_cost_lo.append(ref.log_cost_lo)
        log_cost_span.append(ref.log_cost_span)
        floor_cost.append(ref.floor_cost)
        log_latency_lo.append(ref.log_latency_lo)
        log_latency_span.append(ref.log_latency_span)
        capabilities.append(catalog.capability_mask(constraints.required_capabilities))
        lane_floor.append(ctx.lane.spec.quality_floor)
        min_quality.append(0.0 if constraints.min_quality is None else constraints.min_quality)
        max_cost.append(math.inf if constraints.max_cost_usd is None else constraints.max_cost_usd)
        max_latency.append(math.inf if constraints.max_latency_s is None else constraints.max_latency_s)
        lane_headroom.append(inputs[ctx.lane.spec.id][2])
    lanes = [ctx.lane.spec.id for ctx in contexts]
    status = bytearray(b"".join(ctx.lane.status_template for ctx in contexts))
    unhealthy = b"".join(bytes(inputs[lane][0]) for lane in lanes)
    bias = array("d", b"".join(biases[lane] for lane in lanes))
    provider_headroom = array("d", b"".join(inputs[lane][1].tobytes() for lane in lanes))
    outputs = [array("d", bytes(8 * n * size)) for _ in range(6)]
    cost, latency, cost_score, speed_score, penalty, score = outputs
    order = array("q", bytes(8 * n * k))
    eligible = array("q", bytes(8 * n))
    priced.kernel.score_many(
        status,
        unhealthy,
        bias,
        cost,
        latency,
        cost_score,
        speed_score,
        penalty,
        score,
        order,
        eligible,
        array("d", input_tokens),
        array("d", output_tokens),
        array("d", w_cost),
        array("d", w_speed),
        array("d", w_quality),
        array("d", log_cost_lo),
        array("d", log_cost_span),
        array("d", floor_cost),
        array("d", log_latency_lo),
        array("d", log_latency_span),
        policy.context_ramp_start,
        policy.context_ramp_penalty,
        array("Q", capabilities),
        array("d", lane_floor),
        array("d", min_quality),
        array("d", max_cost),
        array("d", max_latency),
        provider_headroom,
        array("d", lane_headroom),
    )
    found = []
    for r, ctx in enumerate(contexts):
        at, to = r * size, (r + 1) * size
        count = eligible[r]
        _, headroom, lane_left = inputs[lanes[r]]
        found.append(
            Scores(
                status=status[at:to],
                cost=cost[at:to],
                latency=latency[at:to],
                cost_score=cost_score[at:to],
                speed_score=speed_score[at:to],
                penalty=penalty[at:to],
                score=score[at:to],
                ranked=list(order[r * k : r * k + min(count, size if ctx.request.explain else want)]),
                eligible=count,
                weights=weights[r],
                lane_headroom=lane_left,
                provider_headroom=headroom,
            )
        )
    return found
