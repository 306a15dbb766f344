"""Task estimates and objective resolution.

Rules are tried in a fixed order and the first that decides is reported:
explicit objective, task kind, whole-word keyword, difficulty, input size, and
last the lane's default. A critical lane never resolves to cost_speed unless the
request asks for it explicitly.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from orxaq_grpc.config.model import LaneSpec, Policy
from orxaq_grpc.routing.types import Objective, ObjectiveRule, RouteRequest, Task


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class ResolvedObjective:
    objective: Objective
    rule: ObjectiveRule
    detail: str


class WholeWords:
    """Finds which of a list of words or phrases occur as whole words, case-insensitively.

    `str.find` per keyword plus a boundary check is an order of magnitude cheaper than
    one alternation regex scanned position by position, and Route runs it on every
    prompt. "format" does not match inside "information": a neighbouring letter, digit
    or underscore disqualifies a hit, as `\\b` would. A phrase ("race condition") matches
    across any run of white space, line breaks included.
    """

    def __init__(self, words: tuple[str, ...]) -> None:
        keywords = tuple(dict.fromkeys(" ".join(w.lower().split()) for w in words))
        self._words = tuple((w, _token(w)) for w in keywords if " " not in w)
        # A regex only for phrases, starting with a literal so re can search for it quickly
        # (a leading look-behind would make it try every position); boundaries are checked below.
        self._phrases = tuple(
            (phrase, re.compile(r"\s+".join(map(re.escape, phrase.split()))), _tokens_of(phrase))
            for phrase in keywords
            if " " in phrase
        )

    def first_matches(self, text: str, tokens: Tokens = None) -> list[tuple[int, str]]:
        """(position, word) of each word's first whole-word hit in `text`, already lower-cased.
        `tokens`, the text's `word_tokens` when known, spares the search for a word that is none
        of them (a whole-word hit of a word made of word characters is one of the text's tokens)."""
        if not text:
            return []
        hits = []
        for phrase, pattern, parts in self._phrases:
            if tokens is not None and parts is not None and not parts <= tokens:
                continue
            for match in pattern.finditer(text):
                if _whole(text, match.start(), match.end()):
                    hits.append((match.start(), phrase))
                    break
        for word, token in self._words:
            if tokens is not None and token is not None and token not in tokens:
                continue
            at = text.find(word)
            while at != -1:
                if _whole(text, at, at + len(word)):
                    hits.append((at, word))
                    break
                at = text.find(word, at + 1)
        return hits


# The runs of word characters of an ASCII text, as bytes; None where not known (other text).
Tokens = frozenset[bytes] | None
# ASCII letters, digits and _ kept, every other byte made a space: split() then gives the runs.
_WORD_BYTES = bytes(c if chr(c).isalnum() or c == ord("_") else ord(" ") for c in range(128)) + b" " * 128


def word_tokens(text: str) -> Tokens:
    """The text's maximal runs of word characters (letters, digits, _), for an ASCII text: one
    C pass, where searching each keyword would scan the text once per keyword."""
    if not text.isascii():
        return None
    return frozenset(text.encode().translate(_WORD_BYTES).split())


def _token(word: str) -> bytes | None:
    """A keyword as the one token a whole-word hit of it is; None if it has other characters."""
    if word and word.isascii() and all(_is_word_char(c) for c in word):
        return word.encode()
    return None


def _tokens_of(phrase: str) -> frozenset[bytes] | None:
    parts = [_token(part) for part in phrase.split()]
    return None if any(part is None for part in parts) else frozenset(p for p in parts if p is not None)


def _whole(text: str, start: int, end: int) -> bool:
    """No letter, digit or underscore right before `start` or at `end`."""
    return not (start > 0 and _is_word_char(text[start - 1])) and not (
        end < len(text) and _is_word_char(text[end])
    )


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


class ObjectiveResolver:
    """Built once per config load; cheap and thread-safe to call per request."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._quality = WholeWords(policy.quality_keywords)
        self._cost_speed = WholeWords(policy.cost_speed_keywords)

    def estimate(self, task: Task) -> TaskEstimate:
        policy = self._policy
        texts = (("title", task.title.lower()), ("prompt", task.prompt[: policy.keyword_scan_chars].lower()))
        fields = tuple((name, text, word_tokens(text)) for name, text in texts)
        quality_hits, quality_field = _matches(self._quality, fields)
        cost_hits, cost_field = _matches(self._cost_speed, fields)

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


def _matches(words: WholeWords, fields: tuple[tuple[str, str, Tokens], ...]) -> tuple[tuple[str, ...], str]:
    """Distinct whole-word matches over (name, lower-cased text, its tokens) fields, each field's
    in order of appearance; and the name of the field the first one was found in."""
    found: dict[str, None] = {}
    first_field = ""
    for name, text, tokens in fields:
        hits = words.first_matches(text, tokens)
        for _, word in sorted(hits):
            found.setdefault(word, None)
        if hits and not first_field:
            first_field = name
    return tuple(found), first_field
