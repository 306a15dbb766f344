"""A decision's explanation: the rationale paragraph, the filter summary, and in explain mode the
scored candidates and the filtered models with why each was filtered.

Text only: nothing here changes which model is chosen (`router.py` decides).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from orxaq_grpc.config.model import LearningSettings, ModelSpec, Weights
from orxaq_grpc.routing.catalog import CompiledCatalog
from orxaq_grpc.routing.context import RequestContext, Scores
from orxaq_grpc.routing.types import (
    CandidateScore,
    FallbackReason,
    Filter,
    FilteredModel,
    Objective,
    Profile,
    Strategy,
    StrongOrWeak,
    enum_name,
)

# Enum members' and fixed texts, made once: `enum_name`, `.replace`, enum attribute reads and dict
# literals cost more per Route than the formatting they feed.
_OBJECTIVE_NAMES = {objective: enum_name(objective) for objective in Objective}
_PROFILE_NAMES = {profile: enum_name(profile) for profile in Profile}
_REASON_TEXTS = {reason: enum_name(reason).replace("_", " ") for reason in FallbackReason}
_FILTER_NAMES = {code.value: enum_name(code) for code in Filter}
_HOW_CHOSEN = {Strategy.REQUESTED: "requested and eligible", Strategy.STRONG_OR_WEAK: "strong-or-weak choice"}
_TOKENS_SOURCE = {True: "estimated", False: "given"}
_STATIC_FALLBACK = Strategy.STATIC_FALLBACK
_NO_FALLBACK = FallbackReason.NONE
_PREDICTED_QUALITY = ", predicted pass chance as the quality sub-score"


@dataclass(frozen=True, slots=True)
class _ModelTexts:
    """A model's figures as every rationale that chose it words them."""

    model: ModelSpec  # the texts' source: a rationale for another object formats its own
    prices: str  # "$input/$output per 1M"
    first_token: str  # ttft_s
    speed: str  # output_tokens_per_s

    @classmethod
    def of(cls, model: ModelSpec) -> _ModelTexts:
        prices = f"${model.input_usd_per_mtok:g}/${model.output_usd_per_mtok:g} per 1M"
        return cls(model, prices, f"{model.ttft_s:g}", f"{model.output_tokens_per_s:g}")


class _CatalogTexts:
    """The texts one config load repeats in every rationale: per model (by catalog index), each
    model's quality sub-score, and each configured weights' terms (by identity). A catalog is never
    changed once built (a reload builds another), so they stay true for its life."""

    __slots__ = ("models", "quality_scores", "weights")

    def __init__(self, catalog: CompiledCatalog) -> None:
        self.models = tuple(_ModelTexts.of(model) for model in catalog.models)
        self.quality_scores = tuple(f"{quality:.2f}" for quality in catalog.quality_score)
        self.weights = {id(w): (w, *_weight_texts(w)) for w in catalog.weights.values()}

    def model(self, index: int | None, model: ModelSpec) -> _ModelTexts:
        if index is not None and self.models[index].model is model:
            return self.models[index]
        return _ModelTexts.of(model)

    def weight_texts(self, weights: Weights) -> tuple[str, str, str]:
        """(cost, speed, quality): tuned weights are new objects per decision, formatted here."""
        found = self.weights.get(id(weights))
        if found is not None and found[0] is weights:
            return found[1], found[2], found[3]
        return _weight_texts(weights)


def _weight_texts(weights: Weights) -> tuple[str, str, str]:
    return f"{weights.cost:.2f}", f"{weights.speed:.2f}", f"{weights.quality:.2f}"


# Per live catalog: a reload's new catalog gets its own texts, and a catalog's go when it does.
_texts_by_catalog: weakref.WeakKeyDictionary[CompiledCatalog, _CatalogTexts] = weakref.WeakKeyDictionary()


def _catalog_texts(catalog: CompiledCatalog) -> _CatalogTexts:
    texts = _texts_by_catalog.get(catalog)
    if texts is None:
        texts = _texts_by_catalog[catalog] = _CatalogTexts(catalog)  # a race builds it twice: harmless
    return texts


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
    objective = ctx.objective
    texts = _catalog_texts(catalog)
    setting = (
        f"objective {_OBJECTIVE_NAMES[objective.objective]} ({objective.detail}), "
        f"profile {_PROFILE_NAMES[ctx.profile]}"
    )
    if strategy == _STATIC_FALLBACK:
        filtered = (
            f", {len(catalog.models) - scores.eligible} of {catalog.size} models filtered"
            if scores is not None
            else ""
        )
        chosen = f"Static fallback to {model.id} ({model.provider}): {_REASON_TEXTS[reason]}"
        head = f"{chosen}{filtered}; {setting}."
        figures = texts.model(catalog.index.get(model.id), model)
    else:
        index = catalog.index[model.id]
        assert scores is not None
        figures = texts.model(index, model)
        w_cost, w_speed, w_quality = texts.weight_texts(scores.weights)
        bias = ctx.lane.bias[index]
        penalty = scores.penalty[index]
        bias_text = f" + bias {bias:+.2f}" if bias else ""
        penalty_text = f" - context penalty {penalty:.3f}" if penalty else ""
        requested_text = (
            f" Requested {ctx.request.requested_model!r}: {_REASON_TEXTS[reason]}."
            if reason != _NO_FALLBACK
            else ""
        )
        comparison_text = " " + _comparison_text(comparison) if comparison is not None else ""
        head = (
            f"{model.id} ({model.provider}), {_HOW_CHOSEN.get(strategy, 'best score')} of {scores.eligible}"
            f" eligible; {setting}; "
            f"score {score:.3f} = cost {scores.cost_score[index]:.2f}x{w_cost}"
            f" + speed {scores.speed_score[index]:.2f}x{w_speed}"
            f" + quality {texts.quality_scores[index]}x{w_quality}"
            f"{bias_text}{penalty_text}.{requested_text}{comparison_text}"
        )
    # How the lane's observed cache share priced the input, when it did.
    cached_text = (
        f", {ctx.cache_share:.0%} of input as cache reads at ${model.cached_input_price:g} (the lane's share)"
        if ctx.cache_share
        else ""
    )
    return (
        f"{head} Expected cost ${cost:.4f} for {estimate.input_tokens} input "
        f"({_TOKENS_SOURCE[estimate.input_estimated]}) + {estimate.output_tokens} output tokens "
        f"({_TOKENS_SOURCE[estimate.output_estimated]}) at {figures.prices}{cached_text}; "
        f"expected latency {latency:.1f} s (first token {figures.first_token} s + "
        f"{estimate.output_tokens} tokens at {figures.speed} tok/s). "
        f"{_learning_text(ctx, learning, comparison)}"
    )


def _learning_text(ctx: RequestContext, learning: LearningSettings, comparison: StrongOrWeak | None) -> str:
    predicted = _PREDICTED_QUALITY if learning.applies and learning.quality_from_model else ""
    router = ctx.request.router
    if router and (comparison is None or not comparison.router):
        return (
            f"Success model: {learning.mode}{predicted}; {router} not used"
            " (it needs mode apply and a strong-or-weak choice)."
        )
    return f"Success model: {learning.mode}{predicted}."


def filter_summary(catalog: CompiledCatalog, ctx: RequestContext, scores: Scores | None) -> str:
    """`model:filter` for each of the lane's allowed models that a filter removed; empty unscored."""
    if scores is None:
        return ""
    status = scores.status
    models = catalog.models
    return ",".join([f"{models[i].id}:{_FILTER_NAMES[status[i]]}" for i in ctx.lane.allowed if status[i]])


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
