"""The ledger's two kinds of record: a routing decision and a lane's report of its outcome."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from orxaq_grpc.frozen import frozen
from orxaq_grpc.learning import TaskFeatures


class Outcome(enum.IntEnum):
    """How a task's model call ended; values equal the proto's Outcome numbers."""

    UNSPECIFIED = 0
    SUCCESS = 1
    RATE_LIMITED = 2
    TIMEOUT = 3
    SERVER_ERROR = 4
    BAD_OUTPUT = 5

    @property
    def is_availability_failure(self) -> bool:
        """Failures that say the model or provider cannot serve now: these trip breakers.
        Bad output is a quality problem, counted in pass rates instead."""
        return self in (Outcome.RATE_LIMITED, Outcome.TIMEOUT, Outcome.SERVER_ERROR)


@frozen
class DecisionRecord:
    decision_id: str
    at: float  # unix seconds, server clock
    lane: str
    provider: str
    model: str
    strategy: int  # routing.types.Strategy value; 0 with no model: refused (budget exhausted, policy "error")
    fallback_reason: int  # routing.types.FallbackReason value
    disruptive: bool
    router_error: bool
    estimated_input_tokens: int
    estimated_output_tokens: int
    estimated_cost_usd: float
    filtered: str = ""  # "model:filter,..." for the lane's models a filter removed
    value_usd: float | None = None  # what the task said it is worth, when it did
    task: TaskFeatures | None = None  # what the success model reads of the task; None when learning is off


@dataclass(frozen=True, slots=True)
class ReportRecord:
    decision_id: str
    at: float  # unix seconds, server clock
    lane: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    latency_s: float
    outcome: Outcome
    retry_after_s: float  # rate limits only; 0 when not given
    validation_passed: bool
    first_time_pass: bool
    cost_usd: float  # what the task cost: provider-reported when exact, else priced from the catalog
    cost_exact: bool  # True when the provider told the cost
    decision_known: bool  # False when no record of the decision exists here: it then moves nothing
    cost_bounded: bool = (
        False  # the lane's figure was far above the decision's estimate: cost_usd is the bound
    )
    claimed_cost_usd: float | None = None  # the lane's figure, when it was bounded
    cached_input_tokens: int = 0  # of input_tokens, read from a prompt cache
    cache_write_tokens: int = 0  # of input_tokens, written to a prompt cache


@dataclass(frozen=True, slots=True)
class ReportInput:
    """A lane's report as it arrives, before the service prices and stamps it."""

    decision_id: str
    lane: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    latency_s: float
    outcome: Outcome
    retry_after_s: float
    validation_passed: bool
    first_time_pass: bool
    cost_usd: float | None  # the provider's figure, when it gave one
    cached_input_tokens: int = 0  # of input_tokens, read from a prompt cache
    cache_write_tokens: int = 0  # of input_tokens, written to a prompt cache


@dataclass(frozen=True, slots=True)
class AbandonedRecord:
    """A decision that never reached its lane, as the other replicas hear of it: a half-open
    circuit's probe it took is free again everywhere (no report will come for it)."""

    decision_id: str
    model: str
    provider: str


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One guardrail event in the decision log: a Scale decision or a stop-loss transition,
    with everything it was decided on as JSON."""

    at: float
    kind: str  # "scale", "stop_loss"
    subject: str  # the lane or group scaled; the stop-loss transition ("enter" or "exit")
    payload: str  # JSON


@dataclass(frozen=True, slots=True)
class LedgerOutcome:
    """A committed report as the success model learns it: joined to its decision's task features."""

    position: int  # increases in commit order
    at: float
    model: str
    outcome: Outcome
    validation_passed: bool
    latency_s: float
    task: TaskFeatures | None  # None: the decision is unknown, or it was logged with learning off
