"""Route's conversions field by field: the request's value classes are built positionally and the
answer's sub-messages spelled out, so a field added, moved or missed in `routing.types` shows here."""

from __future__ import annotations

import dataclasses

import pytest

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.routing.types import (
    CandidateScore,
    Constraints,
    Decision,
    FallbackReason,
    Filter,
    FilteredModel,
    Objective,
    ObjectiveRule,
    Profile,
    RouteRequest,
    Strategy,
    StrongOrWeak,
    Task,
)
from orxaq_grpc.service.convert import decision_to_proto, route_request_from_proto
from orxaq_grpc.vocabulary import Violation


def test_every_request_field_lands_on_its_own_field() -> None:
    # Every string distinct, every number distinct and set: a positional argument out of order shows.
    message = pb.RouteRequest(
        lane="lane",
        task=pb.Task(
            id="id",
            kind="kind",
            title="title",
            prompt="prompt",
            labels=["label-a", "label-b"],
            input_tokens=11,
            output_tokens=12,
            difficulty=0.25,
            value_usd=7.5,
        ),
        objective=pb.OBJECTIVE_QUALITY,
        profile=pb.PROFILE_STRONG,
        requested_model="requested",
        constraints=pb.Constraints(
            max_cost_usd=0.5, min_quality=0.75, max_latency_s=3.0, required_capabilities=["tools"]
        ),
        explain=True,
        router="router-mf-0.5",
    )
    request, violations = route_request_from_proto(message)
    assert violations == []
    assert request == RouteRequest(
        lane="lane",
        task=Task(
            id="id",
            kind="kind",
            title="title",
            prompt="prompt",
            labels=("label-a", "label-b"),
            input_tokens=11,
            output_tokens=12,
            difficulty=0.25,
            value_usd=7.5,
        ),
        objective=Objective.QUALITY,
        profile=Profile.STRONG,
        requested_model="requested",
        constraints=Constraints(
            max_cost_usd=0.5, min_quality=0.75, max_latency_s=3.0, required_capabilities=("tools",)
        ),
        explain=True,
        router="router-mf-0.5",
    )
    assert type(request.objective) is Objective and type(request.profile) is Profile


def test_unset_optionals_are_none_and_zero_ones_are_kept() -> None:
    request, _ = route_request_from_proto(pb.RouteRequest(lane="lane"))
    assert request == RouteRequest(lane="lane")
    assert request.task.labels == () and request.task.difficulty is None and request.task.value_usd is None

    zeros = pb.RouteRequest(
        lane="lane", task=pb.Task(difficulty=0.0, value_usd=0.0), constraints=pb.Constraints()
    )
    request, _ = route_request_from_proto(zeros)
    assert request.task.difficulty == 0.0 and request.task.value_usd == 0.0
    assert request.constraints == Constraints()


@pytest.mark.parametrize(
    ("objective", "profile", "expected"),
    [
        (99, 2, [Violation("objective", "unknown Objective value 99")]),
        (3, -3, [Violation("profile", "unknown Profile value -3")]),
        (
            42,
            7,
            [
                Violation("objective", "unknown Objective value 42"),
                Violation("profile", "unknown Profile value 7"),
            ],
        ),
    ],
)
def test_an_unknown_enum_number_is_a_violation(
    objective: int, profile: int, expected: list[Violation]
) -> None:
    message = pb.RouteRequest(lane="lane", objective=objective, profile=profile)  # type: ignore[arg-type]
    request, violations = route_request_from_proto(message)
    assert violations == expected
    assert request.objective is (Objective(objective) if objective in (0, 1, 2, 3) else Objective.UNSPECIFIED)
    assert request.profile is (Profile(profile) if profile in (0, 1, 2) else Profile.UNSPECIFIED)


PLAIN = Decision(
    decision_id="d",
    model="m",
    provider="p",
    lane="l",
    objective=Objective.BALANCED,
    objective_rule=ObjectiveRule.KEYWORD,
    objective_detail="detail",
    profile=Profile.FAST,
    strategy=Strategy.SCORED,
    fallback_reason=FallbackReason.NONE,
    estimated_cost_usd=0.01,
    input_usd_per_mtok=1.0,
    output_usd_per_mtok=2.0,
    estimated_latency_s=3.0,
    score=0.5,
    alternatives=("a", "b"),
    config_version="v",
    input_tokens=10,
    output_tokens=20,
    tokens_estimated=True,
    difficulty=0.3,
    difficulty_estimated=True,
    eligible_count=4,
    rationale="why",
)


def _decision(**fields: object) -> Decision:
    return dataclasses.replace(PLAIN, **fields)  # type: ignore[arg-type]


def _distinct_values(cls: type[object]) -> dict[str, object]:
    """A value for every field of a value class, each unlike the others and unlike the default."""
    values: dict[str, object] = {}
    for number, field in enumerate(dataclasses.fields(cls), start=1):  # type: ignore[arg-type]
        kind = field.type if isinstance(field.type, str) else field.type.__name__
        if kind == "str":
            values[field.name] = f"{field.name}-value"
        elif kind == "bool":
            values[field.name] = field.default is not True
        elif kind == "int":
            values[field.name] = number
        elif kind == "float":
            values[field.name] = number + 0.5
        elif kind == "Filter":
            values[field.name] = Filter(number % len(Filter) or 1)
        else:
            raise AssertionError(f"{cls.__name__}.{field.name}: no distinct value for {kind}")
    return values


def test_every_strong_or_weak_field_reaches_the_answer() -> None:
    values = _distinct_values(StrongOrWeak)
    answer = decision_to_proto(_decision(strong_or_weak=StrongOrWeak(**values)))  # type: ignore[arg-type]
    assert answer.HasField("strong_or_weak")
    assert {name: getattr(answer.strong_or_weak, name) for name in values} == values


def test_every_explained_candidate_and_filter_field_reaches_the_answer() -> None:
    candidate = _distinct_values(CandidateScore)
    filtered = _distinct_values(FilteredModel)
    answer = decision_to_proto(
        _decision(candidates=(CandidateScore(**candidate),) * 2, filtered=(FilteredModel(**filtered),))  # type: ignore[arg-type]
    )
    assert [{name: getattr(c, name) for name in candidate} for c in answer.candidates] == [candidate] * 2
    assert [{name: getattr(f, name) for name in filtered} for f in answer.filtered] == [filtered]


def test_plain_answers_carry_no_explanation() -> None:
    answer = decision_to_proto(_decision())
    assert not answer.candidates and not answer.filtered and not answer.HasField("strong_or_weak")


@pytest.mark.parametrize("reason", list(FallbackReason))
def test_fallback_disruptive_is_the_reasons_own_word(reason: FallbackReason) -> None:
    answer = decision_to_proto(_decision(fallback_reason=reason, strategy=Strategy.STATIC_FALLBACK))
    assert answer.fallback_reason == reason.value
    assert answer.fallback_disruptive is reason.disruptive


def test_enums_go_out_by_number() -> None:
    for objective in Objective:
        for rule in ObjectiveRule:
            answer = decision_to_proto(_decision(objective=objective, objective_rule=rule))
            assert (answer.objective, answer.objective_rule) == (objective.value, rule.value)
    for profile in Profile:
        for strategy in Strategy:
            answer = decision_to_proto(_decision(profile=profile, strategy=strategy))
            assert (answer.profile, answer.strategy) == (profile.value, strategy.value)
