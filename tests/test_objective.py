"""Objective resolution and the estimates it stands on."""

from __future__ import annotations

import dataclasses

import pytest

from orxaq_grpc.config.model import Config
from orxaq_grpc.routing.objective import ObjectiveResolver, estimate_difficulty
from orxaq_grpc.routing.types import Objective, ObjectiveRule, RouteRequest, Task


def resolve(config: Config, lane: str = "codex", **task: object) -> tuple[Objective, ObjectiveRule, str]:
    objective = task.pop("objective", Objective.UNSPECIFIED)
    resolver = ObjectiveResolver(config.policy)
    request = RouteRequest(lane=lane, task=Task(**task), objective=objective)  # type: ignore[arg-type]
    resolved = resolver.resolve(request, config.lanes[lane], resolver.estimate(request.task))
    return resolved.objective, resolved.rule, resolved.detail


def test_explicit_objective_wins_over_everything(shipped_config: Config) -> None:
    assert resolve(shipped_config, kind="docs", title="security review", objective=Objective.QUALITY)[:2] == (
        Objective.QUALITY,
        ObjectiveRule.EXPLICIT,
    )
    # Even on a critical lane an explicit cost_speed stands.
    assert resolve(shipped_config, "claude", objective=Objective.COST_SPEED)[0] == Objective.COST_SPEED


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("test", Objective.COST_SPEED), ("Docs", Objective.COST_SPEED), ("architecture", Objective.QUALITY)],
)
def test_task_kind(shipped_config: Config, kind: str, expected: Objective) -> None:
    objective, rule, detail = resolve(shipped_config, kind=kind, title="security")
    assert (objective, rule) == (expected, ObjectiveRule.TASK_KIND)
    assert kind.lower() in detail


def test_keywords_match_whole_words_only(shipped_config: Config) -> None:
    # "format" is a cost_speed keyword; "information" must not match it.
    objective, rule, _ = resolve(shipped_config, title="Collect information about the request flow")
    assert rule != ObjectiveRule.KEYWORD
    objective, rule, detail = resolve(shipped_config, title="Format the CHANGELOG")
    assert (objective, rule) == (Objective.COST_SPEED, ObjectiveRule.KEYWORD)
    assert "'format' in title" in detail
    _, rule, _ = resolve(shipped_config, title="reformat", prompt="misformatted, preformat")
    assert rule != ObjectiveRule.KEYWORD
    # ... and on the right: a keyword followed by more letters is another word.
    _, rule, _ = resolve(shipped_config, title="Fix the formatter", prompt="the designer panel, formats")
    assert rule != ObjectiveRule.KEYWORD
    objective, rule, detail = resolve(shipped_config, title="Fix the formatter", prompt="then format it.")
    assert (objective, rule) == (
        Objective.COST_SPEED,
        ObjectiveRule.KEYWORD,
    ) and "'format' in prompt" in detail


def test_multi_word_keyword_and_prompt_location(shipped_config: Config) -> None:
    objective, rule, detail = resolve(shipped_config, title="scheduler", prompt="a Race \n condition?")
    assert (objective, rule) == (Objective.QUALITY, ObjectiveRule.KEYWORD)  # any white space between
    objective, rule, detail = resolve(
        shipped_config, title="scheduler", prompt="race-condition, races condition"
    )
    assert rule != ObjectiveRule.KEYWORD  # a hyphen is not white space; "races" is another word
    objective, rule, detail = resolve(shipped_config, title="scheduler", prompt="fix the race condition.")
    assert (objective, rule) == (Objective.QUALITY, ObjectiveRule.KEYWORD)
    assert detail == "keyword 'race condition' in prompt"


def test_quality_keyword_beats_cost_speed_keyword(shipped_config: Config) -> None:
    objective, rule, detail = resolve(shipped_config, title="rename the authentication module")
    assert (objective, rule) == (Objective.QUALITY, ObjectiveRule.KEYWORD)
    assert "authentication" in detail


def test_given_difficulty_thresholds_are_inclusive(shipped_config: Config) -> None:
    policy = shipped_config.policy
    hard = policy.quality_difficulty_at_least
    easy = policy.cost_speed_difficulty_at_most
    assert resolve(shipped_config, difficulty=hard)[:2] == (Objective.QUALITY, ObjectiveRule.DIFFICULTY)
    assert resolve(shipped_config, difficulty=hard - 0.01)[1] != ObjectiveRule.DIFFICULTY
    assert resolve(shipped_config, difficulty=easy)[:2] == (Objective.COST_SPEED, ObjectiveRule.DIFFICULTY)
    assert resolve(shipped_config, difficulty=easy + 0.01)[1] != ObjectiveRule.DIFFICULTY


def test_a_short_task_is_not_called_easy_for_being_short(shipped_config: Config) -> None:
    objective, rule, _ = resolve(shipped_config, title="Implement OAuth login")
    assert (objective, rule) == (shipped_config.lanes["codex"].default_objective, ObjectiveRule.LANE_DEFAULT)


def test_size_rule_then_lane_default(shipped_config: Config) -> None:
    threshold = shipped_config.policy.quality_input_tokens_at_least
    objective, rule, _ = resolve(shipped_config, difficulty=50, input_tokens=threshold)
    assert (objective, rule) == (Objective.QUALITY, ObjectiveRule.SIZE)
    objective, rule, detail = resolve(shipped_config, difficulty=50, input_tokens=threshold - 1)
    assert rule == ObjectiveRule.LANE_DEFAULT
    assert objective == shipped_config.lanes["codex"].default_objective
    assert "codex" in detail


def test_critical_lane_never_resolves_to_cost_speed(shipped_config: Config) -> None:
    assert shipped_config.lanes["claude"].critical
    objective, rule, detail = resolve(shipped_config, "claude", kind="lint")
    assert (objective, rule) == (Objective.BALANCED, ObjectiveRule.TASK_KIND)
    assert "critical" in detail


def test_token_estimates_are_chars_over_four_and_the_policy_default(shipped_config: Config) -> None:
    resolver = ObjectiveResolver(shipped_config.policy)
    estimate = resolver.estimate(Task(title="abcd", prompt="x" * 397))
    assert estimate.input_tokens == 101  # ceil(401 / 4)
    assert estimate.output_tokens == shipped_config.policy.default_output_tokens
    assert estimate.input_estimated and estimate.output_estimated
    given = resolver.estimate(Task(prompt="x" * 400, input_tokens=7, output_tokens=9))
    assert (given.input_tokens, given.output_tokens, given.input_estimated, given.output_estimated) == (
        7,
        9,
        False,
        False,
    )
    assert resolver.estimate(Task()).input_tokens == 1


def test_difficulty_estimate_grows_with_size_and_risk_words(shipped_config: Config) -> None:
    assert estimate_difficulty(0, 0, 0) == pytest.approx(35.0)
    assert estimate_difficulty(9_000, 0, 0) == pytest.approx(45.0)
    assert estimate_difficulty(99_000, 0, 0) == pytest.approx(55.0)
    assert estimate_difficulty(9_000, 2, 0) == pytest.approx(65.0)
    assert estimate_difficulty(0, 0, 8) == 0.0
    assert estimate_difficulty(10**9, 9, 0) == 100.0
    resolver = ObjectiveResolver(shipped_config.policy)
    estimate = resolver.estimate(Task(title="security", difficulty=12.5))
    assert (estimate.difficulty, estimate.difficulty_estimated) == (12.5, False)


def test_empty_keyword_lists_disable_the_keyword_rule(shipped_config: Config) -> None:
    policy = dataclasses.replace(shipped_config.policy, quality_keywords=(), cost_speed_keywords=())
    config = dataclasses.replace(shipped_config, policy=policy)
    assert resolve(config, title="security format")[1] != ObjectiveRule.KEYWORD


def test_keywords_are_looked_for_in_the_first_keyword_scan_chars_of_the_prompt(
    shipped_config: Config,
) -> None:
    cap = shipped_config.policy.keyword_scan_chars
    inside = "x" * (cap - len(" security")) + " security"
    beyond = "x" * cap + " security"
    assert resolve(shipped_config, prompt=inside, difficulty=50)[1] == ObjectiveRule.KEYWORD
    assert resolve(shipped_config, prompt=beyond, difficulty=50)[1] != ObjectiveRule.KEYWORD
