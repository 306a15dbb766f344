"""Route's economic choice between the best quality eligible model (strong) and the cheapest (weak).

The strong one wins when `value x (p_strong - p_weak) - (cost_strong - cost_weak) - penalty >= threshold`,
or, for a request naming RouteLLM's `router-learned-<threshold>`, when its win probability
`0.5 + (p_strong - p_weak) / 2` reaches the threshold. Where the chances come from: the success model
when it applies; otherwise catalog quality / 100, or reported acceptance once a model has enough
reports (and the success model, in shadow, says what it would have chosen). In apply mode a bounded
share of decisions explores: it takes the choice the rule did not make.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from orxaq_grpc.config.model import ModelSpec, Policy
from orxaq_grpc.kernel import Doubles
from orxaq_grpc.routing.context import RequestContext, Scores
from orxaq_grpc.routing.types import Filter, StrongOrWeak
from orxaq_grpc.routing.validation import parse_router


@dataclass(frozen=True, slots=True)
class Chances:
    """The pass chances the rule weighs, where they came from, and the penalty share they earn."""

    p_strong: float
    p_weak: float
    ratio: float  # of the value gain taken as the uncertainty penalty
    strong_calibrated: bool
    weak_calibrated: bool
    strong_reports: int  # reports, or the success model's outcomes, behind each chance
    weak_reports: int
    learned: bool = False

    @property
    def win(self) -> float:
        return 0.5 + (self.p_strong - self.p_weak) / 2


def explores(decision_id: str, share: float) -> bool:
    """Whether this decision is one of the exploring share: a hash, so it is the same on replay."""
    return zlib.crc32(decision_id.encode()) < share * 4_294_967_296.0


def named_threshold(ctx: RequestContext, policy: Policy) -> float | None:
    """The threshold of the RouteLLM router the request names, when the success model applies."""
    if not ctx.request.router or not policy.learning.applies:
        return None
    return parse_router(ctx.request.router)


def pair(
    models: Sequence[ModelSpec], allowed: Sequence[int], status: bytearray, cost: Doubles
) -> tuple[int, int]:
    """(strong, weak): the best quality eligible model (then cheaper) and the cheapest (then better);
    catalog order breaks what is left."""
    strong = weak = -1
    for i in allowed:
        if status[i] != Filter.ELIGIBLE:
            continue
        q, c = models[i].quality, cost[i]
        if strong < 0 or q > models[strong].quality or (q == models[strong].quality and c < cost[strong]):
            strong = i
        if weak < 0 or c < cost[weak] or (c == cost[weak] and q > models[weak].quality):
            weak = i
    return strong, weak


def catalog_chances(ctx: RequestContext, policy: Policy, strong: ModelSpec, weak: ModelSpec) -> Chances:
    settings = policy.strong_or_weak
    rates = ctx.guards.pass_rates() if ctx.guards is not None else {}

    def chance(model: ModelSpec) -> tuple[float, bool, int]:
        passed, reports = rates.get(model.id, (0, 0))
        if reports >= settings.calibration_min_reports:
            return passed / reports, True, reports
        return model.quality / 100.0, False, reports

    p_strong, strong_calibrated, strong_reports = chance(strong)
    p_weak, weak_calibrated, weak_reports = chance(weak)
    both = strong_calibrated and weak_calibrated
    ratio = settings.calibrated_uncertainty_ratio if both else settings.uncertainty_ratio
    return Chances(p_strong, p_weak, ratio, strong_calibrated, weak_calibrated, strong_reports, weak_reports)


def learned_chances(
    ctx: RequestContext, policy: Policy, strong: ModelSpec, weak: ModelSpec
) -> Chances | None:
    """The success model's chances for this task, when learning is on."""
    success = ctx.guards.success_model() if ctx.guards is not None and ctx.task is not None else None
    if success is None:
        return None
    settings = policy.strong_or_weak
    vector = ctx.vector(success)
    said_strong, said_weak = success.predict(strong.id, vector), success.predict(weak.id, vector)
    # The uncertainty left for this task moves the penalty from the catalog's ratio to the calibrated
    # one: a model that has learned nothing is exactly as unsure as the catalog.
    certainty = min(said_strong.certainty, said_weak.certainty)
    ratio = settings.calibrated_uncertainty_ratio + (1.0 - certainty) * (
        settings.uncertainty_ratio - settings.calibrated_uncertainty_ratio
    )
    return Chances(
        said_strong.p, said_weak.p, ratio, True, True, said_strong.outcomes, said_weak.outcomes, learned=True
    )


def compare(
    ctx: RequestContext, policy: Policy, models: Sequence[ModelSpec], scores: Scores, value_usd: float
) -> StrongOrWeak:
    strong, weak = pair(models, ctx.lane.allowed, scores.status, scores.cost)
    cost = scores.cost
    extra_cost = cost[strong] - cost[weak]
    threshold_usd = policy.strong_or_weak.threshold_usd

    def rule(chances: Chances) -> tuple[float, float, bool]:
        """(penalty, net gain, strong wins)."""
        gain = value_usd * (chances.p_strong - chances.p_weak)
        penalty = max(0.0, gain) * chances.ratio
        net = gain - extra_cost - penalty
        return penalty, net, strong == weak or net >= threshold_usd

    learned = learned_chances(ctx, policy, models[strong], models[weak])
    applies = learned is not None and policy.learning.applies
    chances = (
        learned
        if applies and learned is not None
        else catalog_chances(ctx, policy, models[strong], models[weak])
    )
    penalty, net, chose_strong = rule(chances)
    router, exploring, shadow = "", False, ""
    if applies:
        threshold = named_threshold(ctx, policy)
        if threshold is not None:
            router = ctx.request.router
            chose_strong = strong == weak or chances.win >= threshold
        elif strong != weak and explores(ctx.decision_id, policy.learning.explore_share):
            # Bounded: never below a critical lane's choice, never dearer than the cap.
            if chose_strong and not ctx.lane.spec.critical:
                chose_strong, exploring = False, True
            elif not chose_strong and extra_cost <= policy.learning.explore_max_usd:
                chose_strong, exploring = True, True
    elif learned is not None:
        _, shadow_net, shadow_strong = rule(learned)
        shadow = (
            f"{models[strong if shadow_strong else weak].id} "
            f"(p {learned.p_strong:.3f} vs {learned.p_weak:.3f}, net ${shadow_net:,.4f})"
        )
    return StrongOrWeak(
        strong_model=models[strong].id,
        weak_model=models[weak].id,
        p_strong=chances.p_strong,
        p_weak=chances.p_weak,
        strong_calibrated=chances.strong_calibrated,
        weak_calibrated=chances.weak_calibrated,
        strong_reports=chances.strong_reports,
        weak_reports=chances.weak_reports,
        cost_strong_usd=cost[strong],
        cost_weak_usd=cost[weak],
        value_usd=value_usd,
        uncertainty_penalty_usd=penalty,
        net_gain_usd=net,
        threshold_usd=threshold_usd,
        chose_strong=chose_strong,
        learned=chances.learned,
        win_probability=chances.win,
        router=router,
        exploring=exploring,
        shadow=shadow,
    )
