"""Plain data the routing core works on. No grpc, no protobuf.

Enum values equal the numbers of the same-named enums in
`protos/orxaq/routing/v1/routing.proto`, so the edge converts by value; a test
holds the two in step.
"""

from __future__ import annotations

import enum
from dataclasses import field

from orxaq_grpc.frozen import frozen
from orxaq_grpc.learning import TaskFeatures
from orxaq_grpc.vocabulary import Filter, Objective, Profile, enum_name

__all__ = [
    "CandidateScore",
    "Constraints",
    "Decision",
    "FallbackReason",
    "Filter",
    "FilteredModel",
    "Objective",
    "ObjectiveRule",
    "Profile",
    "RouteRequest",
    "Strategy",
    "StrongOrWeak",
    "Task",
    "enum_name",
]


class ObjectiveRule(enum.IntEnum):
    UNSPECIFIED = 0
    EXPLICIT = 1
    TASK_KIND = 2
    KEYWORD = 3
    DIFFICULTY = 4
    SIZE = 5
    LANE_DEFAULT = 6


class Strategy(enum.IntEnum):
    UNSPECIFIED = 0
    SCORED = 1
    REQUESTED = 2
    STATIC_FALLBACK = 3
    STRONG_OR_WEAK = 4


class FallbackReason(enum.IntEnum):
    NONE = 0
    REQUESTED_MODEL_NOT_ALLOWED = 1
    REQUESTED_MODEL_INELIGIBLE = 2
    ROUTING_DISABLED = 10
    LANE_DISABLED = 11
    NO_ELIGIBLE_CANDIDATE = 12
    ROUTER_ERROR = 13
    ALL_CANDIDATES_UNHEALTHY = 14
    BUDGET_EXHAUSTED = 15
    STOP_LOSS_STATIC = 16
    LANE_PAUSED = 17

    @property
    def disruptive(self) -> bool:
        """Benign reasons are a lane's request overridden; the rest signal trouble. Stop-loss
        static mode is a deliberate rollback, not trouble: counting it would keep the router
        looking unstable, and so keep stop-loss on, by its own doing. An operator's pause is
        deliberate too."""
        return self >= FallbackReason.ROUTING_DISABLED and self not in _DELIBERATE


_DELIBERATE = frozenset({FallbackReason.STOP_LOSS_STATIC, FallbackReason.LANE_PAUSED})


@frozen
class Task:
    id: str = ""
    kind: str = ""
    title: str = ""
    prompt: str = ""
    labels: tuple[str, ...] = ()
    input_tokens: int = 0  # 0: estimate
    output_tokens: int = 0  # 0: estimate
    difficulty: float | None = None
    value_usd: float | None = None


@frozen
class Constraints:
    max_cost_usd: float | None = None
    min_quality: float | None = None
    max_latency_s: float | None = None
    required_capabilities: tuple[str, ...] = ()


@frozen
class RouteRequest:
    lane: str
    task: Task = field(default_factory=Task)
    objective: Objective = Objective.UNSPECIFIED
    profile: Profile = Profile.UNSPECIFIED
    requested_model: str = ""
    constraints: Constraints = field(default_factory=Constraints)
    explain: bool = False
    router: str = ""  # RouteLLM's "router-<name>-<threshold>": strong when the win probability reaches it


@frozen
class CandidateScore:
    model: str
    provider: str
    score: float
    cost_score: float
    speed_score: float
    quality_score: float
    bias: float
    context_penalty: float
    estimated_cost_usd: float
    estimated_latency_s: float


@frozen
class FilteredModel:
    model: str
    filter: Filter
    detail: str


@frozen
class StrongOrWeak:
    """Route's economic comparison for a task with a value: the strong model wins only if
    value x (p_strong - p_weak) - (cost_strong - cost_weak) - penalty >= threshold."""

    strong_model: str
    weak_model: str
    p_strong: float  # chance the answer passes validation
    p_weak: float
    strong_calibrated: bool  # p from reported acceptance, not catalog quality
    weak_calibrated: bool
    strong_reports: int
    weak_reports: int
    cost_strong_usd: float
    cost_weak_usd: float
    value_usd: float
    uncertainty_penalty_usd: float
    net_gain_usd: float  # of the strong model over the weak one, after the penalty
    threshold_usd: float
    chose_strong: bool
    learned: bool = False  # p from the success model (reports counts its outcomes)
    win_probability: float = 0.5  # of strong over weak: 0.5 + (p_strong - p_weak) / 2
    router: str = ""  # the named router that decided instead of the NPV rule
    exploring: bool = False  # took the choice the rule did not make, to learn its outcome
    shadow: str = ""  # in shadow mode: what the success model would have chosen


@frozen
class Decision:
    decision_id: str
    model: str
    provider: str
    lane: str
    objective: Objective
    objective_rule: ObjectiveRule
    objective_detail: str
    profile: Profile
    strategy: Strategy
    fallback_reason: FallbackReason
    estimated_cost_usd: float
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    estimated_latency_s: float
    score: float
    alternatives: tuple[str, ...]
    config_version: str
    input_tokens: int
    output_tokens: int
    tokens_estimated: bool
    difficulty: float
    difficulty_estimated: bool
    eligible_count: int
    rationale: str
    candidates: tuple[CandidateScore, ...] = ()
    filtered: tuple[FilteredModel, ...] = ()
    filter_summary: str = ""  # "model:filter,..." over the lane's allowed models, for the decision log
    value_usd: float | None = None  # the task's, as given
    strong_or_weak: StrongOrWeak | None = None
    learning: str = "off"  # the success model's mode when deciding
    task: TaskFeatures | None = None  # what the success model reads of the task (logged with the decision)
