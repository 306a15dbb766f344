"""Task estimates and objective resolution.

Rules are tried in a fixed order and the first that decides is reported:
explicit objective, task kind, whole-word keyword, difficulty, input size, and
last the lane's default. A critical lane never resolves to cost_speed unless the
request asks for it explicitly.
"""

from __future__ import annotations

import math

from orxaq_grpc.config.model import LaneSpec, Policy
from orxaq_grpc.frozen import frozen
from orxaq_grpc.routing.types import Objective, ObjectiveRule, RouteRequest, Task
from orxaq_grpc.scoring import KeywordIndex, KeywordsFactory


@frozen
class TaskEstimate:
    input_tokens: int
    output_tokens: int
    input_estimated: bool
    output_estimated: bool
    difficulty: float
    difficulty_estimated: bool
    quality_keywords: tuple[str, ...]  # distinct whole-word matches, in order of appearance
    cost_speed_keywords: tuple[str, ...]
    keyword_field: str  # "title" or "prompt": where the first match was


@frozen
class ResolvedObjective:
    objective: Objective
    rule: ObjectiveRule
    detail: str


class WholeWords:
    """Finds which of a list of words or phrases occur as whole words, case-insensitively.

    "format" does not match inside "information": a neighbouring letter, digit or underscore
    disqualifies a hit, as `\\b` would. A phrase ("race condition") matches across any run of
    white space, line breaks included. The scoring module's keyword index does the search:
    compiled, one pass over the text.
    """

    def __init__(self, words: tuple[str, ...], index: KeywordsFactory = KeywordIndex) -> None:
        self._index = index(_normalized(words))

    def first_matches(self, text: str) -> list[tuple[int, str]]:
        """(position, word) of each word's first whole-word hit in `text`, already lower-cased;
        sorted."""
        return self._index.first_hits(text)


def _normalized(words: tuple[str, ...]) -> tuple[str, ...]:
    """Keywords as they are matched: lower-cased, words joined by single spaces, each once."""
    return tuple(dict.fromkeys(" ".join(w.lower().split()) for w in words))


class ObjectiveResolver:
    """Built once per config load; cheap and thread-safe to call per request."""

    def __init__(self, policy: Policy, index: KeywordsFactory = KeywordIndex) -> None:
        self._policy = policy
        quality = _normalized(policy.quality_keywords)
        cost_speed = _normalized(policy.cost_speed_keywords)
        self._quality = frozenset(quality)
        self._cost_speed = frozenset(cost_speed)
        # One index for both lists: one pass over each text finds the hits of either.
        self._words = WholeWords(quality + cost_speed, index)

    def estimate(self, task: Task) -> TaskEstimate:
        policy = self._policy
        texts = (("title", task.title.lower()), ("prompt", task.prompt[: policy.keyword_scan_chars].lower()))
        fields = [(name, self._words.first_matches(text)) for name, text in texts]
        quality_hits, quality_field = _matches(fields, self._quality)
        cost_hits, cost_field = _matches(fields, self._cost_speed)

        input_tokens = task.input_tokens
        output_tokens = task.output_tokens
        if input_tokens == 0:
            chars = len(task.title) + len(task.prompt)
            input_tokens = min(policy.limits.max_tokens, max(1, math.ceil(chars / policy.chars_per_token)))
        if output_tokens == 0:
            output_tokens = policy.default_output_tokens

        if task.difficulty is not None:
            difficulty = task.difficulty
        else:
            difficulty = estimate_difficulty(input_tokens, len(quality_hits), len(cost_hits))
        return TaskEstimate(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            input_estimated=task.input_tokens == 0,
            output_estimated=task.output_tokens == 0,
            difficulty=difficulty,
            difficulty_estimated=task.difficulty is None,
            quality_keywords=quality_hits,
            cost_speed_keywords=cost_hits,
            keyword_field=quality_field or cost_field,
        )

    def resolve(self, request: RouteRequest, lane: LaneSpec, estimate: TaskEstimate) -> ResolvedObjective:
        if request.objective != Objective.UNSPECIFIED:
            return ResolvedObjective(request.objective, ObjectiveRule.EXPLICIT, "requested")
        resolved = self._resolve_from_task(request.task, lane, estimate)
        if lane.critical and resolved.objective == Objective.COST_SPEED:
            return ResolvedObjective(
                Objective.BALANCED,
                resolved.rule,
                f"{resolved.detail}; raised to balanced on critical lane {lane.id!r}",
            )
        return resolved

    def _resolve_from_task(self, task: Task, lane: LaneSpec, estimate: TaskEstimate) -> ResolvedObjective:
        policy = self._policy
        kind = task.kind.lower()
        if kind in policy.quality_kinds:
            return ResolvedObjective(Objective.QUALITY, ObjectiveRule.TASK_KIND, f"task kind {kind!r}")
        if kind in policy.cost_speed_kinds:
            return ResolvedObjective(Objective.COST_SPEED, ObjectiveRule.TASK_KIND, f"task kind {kind!r}")
        # Quality keywords win a tie: cheapness never overrides a risk signal.
        if estimate.quality_keywords:
            word = estimate.quality_keywords[0]
            return ResolvedObjective(
                Objective.QUALITY, ObjectiveRule.KEYWORD, f"keyword {word!r} in {estimate.keyword_field}"
            )
        if estimate.cost_speed_keywords:
            word = estimate.cost_speed_keywords[0]
            return ResolvedObjective(
                Objective.COST_SPEED, ObjectiveRule.KEYWORD, f"keyword {word!r} in {estimate.keyword_field}"
            )
        source = "estimated difficulty" if estimate.difficulty_estimated else "difficulty"
        if estimate.difficulty >= policy.quality_difficulty_at_least:
            return ResolvedObjective(
                Objective.QUALITY,
                ObjectiveRule.DIFFICULTY,
                f"{source} {estimate.difficulty:.0f} >= {policy.quality_difficulty_at_least:g}",
            )
        if estimate.difficulty <= policy.cost_speed_difficulty_at_most:
            return ResolvedObjective(
                Objective.COST_SPEED,
                ObjectiveRule.DIFFICULTY,
                f"{source} {estimate.difficulty:.0f} <= {policy.cost_speed_difficulty_at_most:g}",
            )
        if estimate.input_tokens >= policy.quality_input_tokens_at_least:
            return ResolvedObjective(
                Objective.QUALITY,
                ObjectiveRule.SIZE,
                f"{estimate.input_tokens} input tokens >= {policy.quality_input_tokens_at_least}",
            )
        return ResolvedObjective(
            lane.default_objective, ObjectiveRule.LANE_DEFAULT, f"lane {lane.id!r} default"
        )


def estimate_difficulty(input_tokens: int, quality_keywords: int, cost_speed_keywords: int) -> float:
    """A transparent 0-100 guess for callers that give none.

    Size says little about difficulty, so the guess starts in the middle band (35 for an
    empty task, 45 at 10k tokens, 55 at 100k) and only risk words move it far: each
    distinct quality keyword adds 10, each cost_speed keyword takes 5 away. A short task
    is therefore never called easy just for being short.
    """
    guess = 35.0 + 10.0 * math.log10(1.0 + input_tokens / 1000.0)
    guess += 10.0 * quality_keywords - 5.0 * cost_speed_keywords
    return min(100.0, max(0.0, guess))


def _matches(
    fields: list[tuple[str, list[tuple[int, str]]]], wanted: frozenset[str]
) -> tuple[tuple[str, ...], str]:
    """The distinct `wanted` words among (name, sorted hits) fields, each field's in order of
    appearance; and the name of the field the first one was found in."""
    found: dict[str, None] = {}
    first_field = ""
    for name, hits in fields:
        for _, word in hits:
            if word in wanted:
                found[word] = None
                first_field = first_field or name
    return tuple(found), first_field
