"""Scale requests and decisions as plain data. Enum values equal the proto's numbers."""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CashFlow:
    day: float  # days after the decision; 0 is now
    usd: float


@dataclass(frozen=True, slots=True)
class Once:
    """One amount realised on one day."""

    usd: float
    day: float


@dataclass(frozen=True, slots=True)
class Daily:
    """The same amount at the end of each of `horizon_days` days: days 1, 2, ..., horizon_days."""

    usd_per_day: float
    horizon_days: int


@dataclass(frozen=True, slots=True)
class Schedule:
    flows: tuple[CashFlow, ...]


Flows = Once | Daily | Schedule


@dataclass(frozen=True, slots=True)
class PenaltyUsd:
    usd: float


@dataclass(frozen=True, slots=True)
class ConfidenceForm:
    """penalty = discounted value x uncertainty_ratio x (1 - confidence)."""

    uncertainty_ratio: float
    confidence: float


Uncertainty = PenaltyUsd | ConfidenceForm


class ScaleAction(enum.IntEnum):
    UNSPECIFIED = 0
    SCALE_UP = 1
    HOLD = 2
    SCALE_DOWN = 3
    FREEZE = 4


class ScaleBlock(enum.IntEnum):
    """Why capacity may not grow. Closed set."""

    UNSPECIFIED = 0
    NPV_NOT_POSITIVE = 1
    NPV_BELOW_THRESHOLD = 2
    LOW_CONFIDENCE = 3
    DAILY_BUDGET = 4
    MAX_PARALLEL_AGENTS = 5
    MAX_SUBAGENTS = 6
    ROUTER_UNHEALTHY = 7
    RELIABILITY = 8
    QUALITY = 9
    STOP_LOSS = 10


@dataclass(frozen=True, slots=True)
class ScaleRequest:
    lane: str = ""  # one lane, or ...
    group: str = ""  # ... a scaling group of lanes from policy
    current_parallel_agents: int = 0
    requested_parallel_agents: int = 0
    current_subagents_per_agent: int = 0
    requested_subagents_per_agent: int = 0
    value: Flows | None = None  # the extra capacity's expected value uplift
    cost: Flows | None = None  # its expected incremental cost
    uncertainty: Uncertainty | None = None  # None: no penalty
    discount_rate: float | None = None  # annual; None: policy default
    request_id: str = ""  # the caller's reference

    @property
    def target(self) -> str:
        return self.lane or self.group

    @property
    def grows(self) -> bool:
        return (
            self.requested_parallel_agents > self.current_parallel_agents
            or self.requested_subagents_per_agent > self.current_subagents_per_agent
        )


@dataclass(frozen=True, slots=True)
class Blocking:
    block: ScaleBlock
    detail: str


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    decision_id: str
    at: float
    target: str  # the lane or group asked about
    lanes: tuple[str, ...]
    action: ScaleAction
    current_parallel_agents: int
    requested_parallel_agents: int
    allowed_parallel_agents: int
    current_subagents_per_agent: int
    requested_subagents_per_agent: int
    allowed_subagents_per_agent: int
    marginal_npv_usd: float
    discounted_value_usd: float
    discounted_cost_usd: float
    uncertainty_penalty_usd: float
    discount_rate: float
    min_npv_threshold_usd: float
    projected_daily_spend_usd: float  # the tightest budget's projection; 0 without budgets
    daily_budget_usd: float  # that budget's limit; 0: no budget applies
    max_parallel_agents: int
    max_subagents_per_agent: int
    baseline_parallel_agents: int
    baseline_subagents_per_agent: int
    blocking: tuple[Blocking, ...]
    stop_loss_active: bool
    rationale: str
    config_version: str
    request_id: str
