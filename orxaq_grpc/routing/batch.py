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
from orxaq_grpc.routing.types import Objective, Profile

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
    `score_many` call per cache-share price, the guards read once per lane. The contexts share
    one set of guards (a batch's), so `weights_of` is asked once per lane, objective and profile."""
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
    reference = catalog.reference
    # What a row takes from its lane, objective and profile alone, worked out once for each such
    # triple: the guards are the batch's (BatchGuards), so `weights_of` answers the same for them.
    per_kind: dict[tuple[str, Objective, Profile], tuple[Weights, float, float]] = {}
    rows: list[tuple[float, ...]] = []
    capabilities: list[int] = []
    weights: list[Weights] = []
    for ctx in contexts:
        estimate = ctx.estimate
        constraints = ctx.request.constraints
        lane = ctx.lane.spec.id
        key = (lane, ctx.objective.objective, ctx.profile)
        kind = per_kind.get(key)
        if kind is None:
            kind = per_kind[key] = (weights_of(ctx), ctx.lane.spec.quality_floor, inputs[lane][2])
        w, lane_floor, lane_headroom = kind
        weights.append(w)
        input_tokens = float(estimate.input_tokens)
        output_tokens = float(estimate.output_tokens)
        rows.append(
            (
                input_tokens,
                output_tokens,
                w.cost,
                w.speed,
                w.quality,
                *reference(input_tokens, output_tokens, priced),
                lane_floor,
                0.0 if constraints.min_quality is None else constraints.min_quality,
                math.inf if constraints.max_cost_usd is None else constraints.max_cost_usd,
                math.inf if constraints.max_latency_s is None else constraints.max_latency_s,
                lane_headroom,
            )
        )
        required = constraints.required_capabilities
        capabilities.append(catalog.capability_mask(required) if required else 0)
    (
        input_tokens_column,
        output_tokens_column,
        w_cost,
        w_speed,
        w_quality,
        log_cost_lo,
        log_cost_span,
        floor_cost,
        log_latency_lo,
        log_latency_span,
        lane_floor_column,
        min_quality,
        max_cost,
        max_latency,
        lane_headroom_column,
    ) = (array("d", column) for column in zip(*rows, strict=True))
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
        input_tokens_column,
        output_tokens_column,
        w_cost,
        w_speed,
        w_quality,
        log_cost_lo,
        log_cost_span,
        floor_cost,
        log_latency_lo,
        log_latency_span,
        policy.context_ramp_start,
        policy.context_ramp_penalty,
        array("Q", capabilities),
        lane_floor_column,
        min_quality,
        max_cost,
        max_latency,
        provider_headroom,
        lane_headroom_column,
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
