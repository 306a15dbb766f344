"""What a simulated model call really does: the hidden truths and the faults active at that moment.

The service never sees any of this except through Reports, exactly as with real providers.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from orxaq_grpc.config.model import Config, ModelSpec
from orxaq_grpc.simulate.scenario import (
    Fault,
    Outage,
    PriceChange,
    QualityRegression,
    RateLimit,
    Scenario,
    Slowdown,
)

RATE_LIMIT_LATENCY_S = 0.5  # a 429 comes back at once
SERVER_ERROR_LATENCY_S = 2.0


@dataclass(frozen=True, slots=True)
class CallResult:
    outcome: str  # "success", "rate_limited", "timeout", "server_error"
    latency_s: float
    cost_usd: float
    validation_passed: bool
    retry_after_s: float = 0.0


class Truths:
    def __init__(self, scenario: Scenario, config: Config) -> None:
        self._scenario = scenario
        self._models = {m.id: m for m in config.models}

    def affected(self, fault: Fault, model: str) -> bool:
        spec = self._models[model]
        return (not fault.model or fault.model == model) and (
            not fault.provider or fault.provider == spec.provider
        )

    def active(self, fault: Fault, t: float) -> bool:
        end = self._scenario.duration_s if fault.end_s is None else fault.end_s
        return fault.start_s <= t < end

    def call(
        self,
        rng: random.Random,
        model: str,
        t: float,
        kind: str,
        difficulty: float,
        estimated_cost_usd: float,
        expected_latency_s: float,
    ) -> CallResult:
        """One call to `model` at simulated second `t` (since the start of the run)."""
        truth = self._scenario.truth(model)
        spec = self._models[model]
        faults = [f for f in self._scenario.faults if self.active(f, t) and self.affected(f, model)]
        cost_factor = truth.cost_factor
        latency_factor = truth.latency_factor
        pass_rate = _pass_rate(
            spec, truth.pass_rate, truth.kinds.get(kind), truth.difficulty_slope, difficulty
        )
        # Draws happen in a fixed order whatever the faults, so one fault never reshuffles the rest.
        fails, limited, passes, spread = rng.random(), rng.random(), rng.random(), rng.gauss(0.0, 1.0)
        for fault in faults:
            match fault:
                case Outage() if fails < fault.share:
                    if fault.error == "timeout":
                        return CallResult("timeout", self._scenario.call_timeout_s, 0.0, False)
                    return CallResult("server_error", SERVER_ERROR_LATENCY_S, 0.0, False)
                case RateLimit() if limited < fault.share:
                    return CallResult("rate_limited", RATE_LIMIT_LATENCY_S, 0.0, False, fault.retry_after_s)
                case Slowdown():
                    latency_factor *= fault.factor
                case QualityRegression():
                    pass_rate = fault.pass_rate
                case PriceChange():
                    cost_factor *= fault.factor
        latency = expected_latency_s * latency_factor * math.exp(truth.latency_spread * spread)
        if latency >= self._scenario.call_timeout_s:
            return CallResult("timeout", self._scenario.call_timeout_s, 0.0, False)
        return CallResult("success", latency, estimated_cost_usd * cost_factor, passes < pass_rate)


def _pass_rate(
    spec: ModelSpec, base: float | None, for_kind: float | None, slope: float, difficulty: float
) -> float:
    rate = for_kind if for_kind is not None else base if base is not None else spec.quality / 100.0
    rate -= slope * max(0.0, difficulty - 50.0) / 50.0
    return min(1.0, max(0.0, rate))
