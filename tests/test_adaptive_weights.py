"""Objective weights tuned from observed acceptance and latency: bounded, journaled, never at a
critical lane's quality."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from orxaq_grpc.application.adaptive import WEIGHTS, AdaptiveWeights, shifted
from orxaq_grpc.config.model import Config, Weights
from orxaq_grpc.learning import task_features
from orxaq_grpc.outcomes.records import LedgerOutcome, Outcome
from orxaq_grpc.routing.catalog import floor_quality
from orxaq_grpc.routing.router import Router
from orxaq_grpc.routing.types import Objective, RouteRequest, Task
from orxaq_grpc.store import SqliteStore
from tests.conftest import FakeClock
from tests.test_router import FixedGuards


def tuned_config(config: Config, **fields: object) -> Config:
    settings = dataclasses.replace(
        config.policy.adaptive_weights, enabled=True, interval_s=60.0, min_reports=10, **fields
    )  # type: ignore[arg-type]
    return dataclasses.replace(config, policy=dataclasses.replace(config.policy, adaptive_weights=settings))


def outcome(position: int, objective: str, passed: bool, latency_s: float = 10.0) -> LedgerOutcome:
    task = task_features(
        title="t",
        prompt="p",
        kind="k",
        labels=(),
        lane="codex",
        objective=objective,
        input_tokens=1,
        output_tokens=1,
        max_text_chars=100,
    )
    result = Outcome.SUCCESS if passed else Outcome.BAD_OUTPUT
    return LedgerOutcome(position, 0.0, "m", result, passed, latency_s, task)


def test_shifting_moves_weight_within_bounds() -> None:
    w = Weights(cost=0.3, speed=0.3, quality=0.4)
    up = shifted(w, "quality", 0.1, 0.05, 0.8)
    assert up.quality == pytest.approx(0.5) and up.cost + up.speed == pytest.approx(0.5)
    assert up.cost == pytest.approx(up.speed)  # taken in proportion
    capped = shifted(Weights(0.1, 0.12, 0.78), "quality", 0.1, 0.05, 0.8)
    assert capped.quality == pytest.approx(0.8)
    floored = shifted(Weights(0.05, 0.05, 0.9), "quality", 0.1, 0.05, 0.95)
    assert floored == Weights(0.05, 0.05, 0.9)  # nothing left to give above the floor
    faster = shifted(w, "speed", 0.1, 0.05, 0.8)
    assert faster.speed == pytest.approx(0.4) and faster.quality == pytest.approx(0.4)  # never from quality


def test_a_critical_lane_keeps_its_configured_quality() -> None:
    configured = Weights(0.2, 0.2, 0.6)
    lowered = Weights(0.4, 0.3, 0.3)
    kept = floor_quality(lowered, configured)
    assert kept.quality == 0.6 and kept.cost + kept.speed + kept.quality == pytest.approx(1.0)
    raised = Weights(0.1, 0.1, 0.8)
    assert floor_quality(raised, configured) == raised


def test_low_acceptance_moves_weight_to_quality_and_is_journaled(
    tmp_path: Path, shipped_config: Config
) -> None:
    clock = FakeClock(1_000_000.0)
    config = tuned_config(shipped_config)
    with SqliteStore(tmp_path, 30, clock=clock) as store:
        tuner = AdaptiveWeights(config, store, clock)
        for i in range(20):
            tuner.observe(outcome(i, "balanced", passed=i % 2 == 0))  # 50% against a target of 80%
            tuner.observe(outcome(100 + i, "cost_speed", passed=True))
        tuner.observe(outcome(200, "quality", passed=False))  # too few to judge
        tuner.tick()
        assert tuner.current() is None  # not due yet
        clock.now += 61.0
        tuner.tick()
        current = tuner.current()
        assert current is not None
        before = config.policy.weights
        assert current[Objective.BALANCED].quality == pytest.approx(before[Objective.BALANCED].quality + 0.05)
        assert current[Objective.COST_SPEED] == before[Objective.COST_SPEED]
        assert current[Objective.QUALITY] == before[Objective.QUALITY]
        store.flush()
        (entry,) = store.journal(WEIGHTS, 5)
        payload = json.loads(entry.payload)
        assert payload["before"]["balanced"]["quality"] == pytest.approx(before[Objective.BALANCED].quality)
        assert payload["after"]["balanced"]["quality"] == pytest.approx(current[Objective.BALANCED].quality)
        assert "balanced: towards quality (pass rate 0.50" in entry.subject
        # A restart resumes from the journal.
        assert AdaptiveWeights(config, store, clock).current() == current
        # Another configured starting point starts over.
        moved = dict(config.policy.weights)
        moved[Objective.QUALITY] = Weights(0.1, 0.1, 0.8)
        other = dataclasses.replace(config, policy=dataclasses.replace(config.policy, weights=moved))
        assert AdaptiveWeights(other, store, clock).current() is None


def test_slow_but_passing_moves_weight_from_cost_to_speed(tmp_path: Path, shipped_config: Config) -> None:
    clock = FakeClock(1_000_000.0)
    config = tuned_config(shipped_config, target_latency_s=30.0)
    with SqliteStore(tmp_path, 30, clock=clock) as store:
        tuner = AdaptiveWeights(config, store, clock)
        for i in range(10):
            tuner.observe(outcome(i, "cost_speed", passed=True, latency_s=90.0))
        clock.now += 61.0
        tuner.tick()
        current = tuner.current()
        assert current is not None
        before = config.policy.weights[Objective.COST_SPEED]
        assert current[Objective.COST_SPEED].speed > before.speed
        assert current[Objective.COST_SPEED].quality == before.quality


def _quality_weight(rationale: str) -> float:
    found = re.search(r"\+ quality [0-9.]+x([0-9]+\.[0-9]+)", rationale)
    assert found is not None, rationale
    return float(found.group(1))


def test_routing_uses_tuned_weights_but_not_below_a_critical_lanes_quality(shipped_config: Config) -> None:
    router = Router(shipped_config)
    tuned = {o: Weights(0.7, 0.25, 0.05) for o in shipped_config.policy.weights}
    critical = next(lane for lane in shipped_config.lanes.values() if lane.critical)
    ordinary = next(lane for lane in shipped_config.lanes.values() if not lane.critical)
    task = Task(title="write the migration", input_tokens=5_000, output_tokens=1_000)
    for lane in (critical, ordinary):
        plain = router.route(RouteRequest(lane=lane.id, task=task), FixedGuards())
        adapted = router.route(RouteRequest(lane=lane.id, task=task), FixedGuards(tuned=tuned))
        if lane.critical:
            assert _quality_weight(adapted.rationale) == _quality_weight(plain.rationale)
        else:
            assert _quality_weight(adapted.rationale) < _quality_weight(plain.rationale)
