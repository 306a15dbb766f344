"""A decision's explanation: the rationale paragraph, the filter summary, and in explain mode the
scored candidates and the filtered models with why each was filtered.

Text only: nothing here changes which model is chosen (`router.py` decides).
"""

from __future__ import annotations

from orxaq_grpc.config.model import LearningSettings, ModelSpec
from orxaq_grpc.routing.catalog import CompiledCatalog
from orxaq_grpc.routing.context import RequestContext, Scores
from orxaq_grpc.routing.types import (
    CandidateScore,
    FallbackReason,
    Filter,
    FilteredModel,
    Strategy,
    StrongOrWeak,
    enum_name,
)


def rationale(
    catalog: CompiledCatalog,
    ctx: RequestContext,
    model: ModelSpec,
    strategy: Strategy,
    reason: FallbackReason,
    *,
    cost: float,
    latency: float,
    score: float,
    scores: Scores | None,
    comparison: StrongOrWeak | None,
    learning: LearningSettings,
) -> str:
    """One paragraph: what was chosen and how, the score's terms, the expected cost and latency."""
    estimate = ctx.estimate
    objective = f"objective {enum_name(ctx.objective.objective)} ({ctx.objective.detail})"
    profile = f"profile {enum_name(ctx.profile)}"
    if strategy == Strategy.STATIC_FALLBACK:
        head = f"Static fallback to {model.id} ({model.provider}): {enum_name(reason).replace('_', ' ')}"
        if scores is not None:
            head += f", {len(catalog.models) - scores.eligible} of {catalog.size} models filtered"
        head += f"; {objective}, {profile}."
    else:
        index = catalog.index[model.id]
        assert scores is not None
        weights = scores.weights
        how = {
            Strategy.REQUESTED: "requested and eligible",
            Strategy.STRONG_OR_WEAK: "strong-or-weak choice",
        }.get(strategy, "best score")
        head = (
            f"{model.id} ({model.provider}), {how} of {scores.eligible} eligible; "
            f"{objective}, {profile}; "
            f"score {score:.3f} = cost {scores.cost_score[index]:.2f}x{weights.cost:.2f}"
            f" + speed {scores.speed_score[index]:.2f}x{weights.speed:.2f}"
            f" + quality {catalog.quality_score[index]:.2f}x{weights.quality:.2f}"
        )
        bias = ctx.lane.bias[index]
        if bias:
            head += f" + bias {bias:+.2f}"
        if scores.penalty[index]:
            head += f" - context penalty {scores.penalty[index]:.3f}"
        head += "."
        if reason != FallbackReason.NONE:
            head += f" Requested {ctx.request.requested_model!r}: {enum_name(reason).replace('_', ' ')}."
        if comparison is not None:
            head += " " + _comparison_text(comparison)
    given = {True: "estimated", False: "given"}
    return (
        f"{head} Expected cost ${cost:.4f} for {estimate.input_tokens} input "
        f"({given[estimate.input_estimated]}) + {estimate.output_tokens} output tokens "
        f"({given[estimate.output_estimated]}) at ${model.input_usd_per_mtok:g}/"
        f"${model.output_usd_per_mtok:g} per 1M{_cached_text(ctx, model)}; expected latency {latency:.1f} s "
        f"(first token {model.ttft_s:g} s + {estimate.output_tokens} tokens at "
        f"{model.output_tokens_per_s:g} tok/s). {_learning_text(ctx, learning, comparison)}"
    )


def _cached_text(ctx: RequestContext, model: ModelSpec) -> str:
    """How the lane's observed cache share priced the input, when it did."""
    if not ctx.cache_share:
        return ""
    return (
        f", {ctx.cache_share:.0%} of input as cache reads at ${model.cached_input_price:g} (the lane's share)"
    )


def _learning_text(ctx: RequestContext, learning: LearningSettings, comparison: StrongOrWeak | None) -> str:
    text = f"Success model: {learning.mode}"
    if learning.applies and learning.quality_from_model:
        text += ", predicted pass chance as the quality sub-score"
    if ctx.request.router and (comparison is None or not comparison.router):
        text += f"; {ctx.request.router} not used (it needs mode apply and a strong-or-weak choice)"
    return text + "."


def filter_summary(catalog: CompiledCatalog, ctx: RequestContext, scores: Scores | None) -> str:
    """`model:filter` for each of the lane's allowed models that a filter removed; empty unscored."""
    if scores is None:
        return ""
    status = scores.status
    models = catalog.models
    return ",".join(f"{models[i].id}:{enum_name(Filter(status[i]))}" for i in ctx.lane.allowed if status[i])


def candidates(catalog: CompiledCatalog, ctx: RequestContext, scores: Scores) -> tuple[CandidateScore, ...]:
    """Explain mode: every eligible model's score and its terms, best first."""
    models = catalog.models
    bias = ctx.lane.bias
    return tuple(
        CandidateScore(
            model=models[i].id,
            provider=models[i].provider,
            score=scores.score[i],
            cost_score=scores.cost_score[i],
            speed_score=scores.speed_score[i],
            quality_score=catalog.quality_score[i],
            bias=bias[i],
            context_penalty=scores.penalty[i],
            estimated_cost_usd=scores.cost[i],
            estimated_latency_s=scores.latency[i],
        )
        for i in scores.ranked
    )


def filtered(catalog: CompiledCatalog, ctx: RequestContext, scores: Scores) -> tuple[FilteredModel, ...]:
    """Explain mode: every model of the catalog a filter removed, in catalog order, with why."""
    models = catalog.models
    return tuple(
        FilteredModel(models[i].id, Filter(code), _filter_detail(catalog, ctx, scores, i, Filter(code)))
        for i, code in enumerate(scores.status)
        if code != Filter.ELIGIBLE
    )


def _filter_detail(
    catalog: CompiledCatalog, ctx: RequestContext, scores: Scores, index: int, code: Filter
) -> str:
    model = catalog.models[index]
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
        case Filter.CIRCUIT_OPEN:
            return f"circuit open for {model.id} or provider {model.provider}"
        case Filter.BUDGET:
            return f"expected ${scores.cost[index]:.4f} over the daily budget left"
    return enum_name(code)


def _source(c: StrongOrWeak, calibrated: bool, reports: int) -> str:
    if c.learned:
        return f"success model, {reports} outcomes"
    return f"acceptance over {reports} reports" if calibrated else "catalog quality"


def _comparison_text(c: StrongOrWeak) -> str:
    if c.strong_model == c.weak_model:
        both = "is both the strongest and the cheapest eligible"
        return f"Task value ${c.value_usd:,.2f}: {c.strong_model} {both}."
    verdict = "strong" if c.chose_strong else "weak"
    chances = (
        f"strong {c.strong_model} (p {c.p_strong:.3f}, {_source(c, c.strong_calibrated, c.strong_reports)})"
        f" vs weak {c.weak_model} (p {c.p_weak:.3f}, {_source(c, c.weak_calibrated, c.weak_reports)})"
    )
    if c.router:
        relation = ">=" if c.chose_strong else "<"
        return (
            f"{c.router}: {chances}: win probability {c.win_probability:.3f} {relation} threshold: {verdict}."
        )
    # Exploring inverts the rule's verdict: the relation shown is the rule's own.
    relation = ">=" if c.chose_strong != c.exploring else "<"
    text = (
        f"Task value ${c.value_usd:,.2f}: {chances}: ${c.value_usd:,.2f} x {c.p_strong - c.p_weak:+.3f}"
        f" - (${c.cost_strong_usd:.4f} - ${c.cost_weak_usd:.4f}) - penalty ${c.uncertainty_penalty_usd:.4f}"
        f" = ${c.net_gain_usd:,.4f} {relation} threshold ${c.threshold_usd:,.2f}: {verdict}."
    )
    if c.exploring:
        text += f" Exploring: took {verdict}, the choice the rule did not make, to learn its outcome."
    if c.shadow:
        text += f" Shadow: the success model would choose {c.shadow}."
    return text
