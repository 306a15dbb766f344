"""The service's metrics, on the OpenTelemetry metrics SDK.

Counts are tallied as things happen (decisions, fallbacks, router errors, estimated and
reported tokens and spend, reports, scale decisions) and reported as cumulative counters when
a reader collects, as are detection states, breaker states, budgets and stop-loss, observed
from the live view. Attribute
sets are bounded by the config: lanes, providers, models and closed enums.

Names as Prometheus shows them, scraped from the service's own /metrics (the Python exporter) or
through a collector (its translation): dots become underscores, counters gain `_total`, a unit of
`s` gains `_seconds`, braced units add nothing. The two differ on a gauge of unit `1` (a collector
adds `_ratio`, the Python exporter nothing), so the budget's share is in `{share}`, an annotated 1:
`orxaq_budget_used` either way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any, NamedTuple, TypeVar

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from orxaq_grpc.application.outcomes import HealthView
from orxaq_grpc.outcomes.breakers import BreakerState
from orxaq_grpc.outcomes.detection import DEGRADED, ELEVATED_FALLBACK, HEALTHY, IDLE
from orxaq_grpc.outcomes.records import ReportRecord
from orxaq_grpc.routing.router import BudgetExhausted
from orxaq_grpc.routing.types import Decision, FallbackReason
from orxaq_grpc.scale.types import ScaleDecision
from orxaq_grpc.telemetry import attributes as a

T = TypeVar("T")
# A tally's key: attribute values in its attributes' order, an enum standing for its word.
Key = tuple[str | bool | Enum, ...]


class Instrument(NamedTuple):
    name: str
    unit: str
    description: str

    def __call__(self, create: Callable[..., T], **more: Any) -> T:
        return create(name=self.name, unit=self.unit, description=self.description, **more)


# Every instrument the service creates: the dashboard test reads these.
DECISIONS = Instrument("orxaq.route.decisions", "{decision}", "Route decisions, by lane, model and strategy")
FALLBACKS = Instrument("orxaq.route.fallbacks", "{decision}", "Decisions that fell back, by reason")
ROUTER_ERRORS = Instrument("orxaq.router.errors", "{error}", "Scoring failures and failed Route calls")
ESTIMATED_TOKENS = Instrument("orxaq.route.estimated_tokens", "{token}", "Tokens as estimated at routing")
ESTIMATED_COST = Instrument("orxaq.route.estimated_cost", "{USD}", "Cost as estimated at routing, in USD")
REPORTS = Instrument("orxaq.reports", "{report}", "Lane reports counted (durable and new), by outcome")
REPORTED_TOKENS = Instrument("orxaq.report.tokens", "{token}", "Tokens as reported by lanes")
SPEND = Instrument("orxaq.report.spend", "{USD}", "Spend as reported (or priced from the catalog), in USD")
SCALE_DECISIONS = Instrument("orxaq.scale.decisions", "{decision}", "Scale decisions, by action")
RPC_DURATION = Instrument("rpc.server.call.duration", "s", "Duration of incoming RPCs")
DETECTION_STATE = Instrument(
    "orxaq.detection.state", "{state}", "1 for the current detection state of each scope"
)
BREAKER_STATE = Instrument(
    "orxaq.breaker.state", "{state}", "1 for the current state of each circuit breaker"
)
BUDGET_REMAINING = Instrument(
    "orxaq.budget.remaining", "{USD}", "Daily budget left after spend and reservations"
)
BUDGET_USED = Instrument("orxaq.budget.used", "{share}", "Share of the daily budget spent or reserved")
STOP_LOSS = Instrument(
    "orxaq.stop_loss.active", "{state}", "1 while stop-loss holds routing on the static pins"
)
HISTOGRAMS = (RPC_DURATION,)
GAUGES = (DETECTION_STATE, BREAKER_STATE, BUDGET_REMAINING, BUDGET_USED, STOP_LOSS)

# Route answers in well under a millisecond; Scale and Economics take tens of milliseconds.
DURATION_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
DETECTION_STATES = (IDLE, HEALTHY, ELEVATED_FALLBACK, DEGRADED)
SCOPE, NAME, STATE, STAGE = "orxaq.scope", "orxaq.name", "orxaq.state", "orxaq.error.stage"
DISRUPTIVE = "orxaq.fallback.disruptive"
# Gauges read one view per collection, not one per instrument.
_VIEW_TTL_S = 1.0


class Tally:
    """Sums kept in a plain dict where things happen, reported as a cumulative counter when a
    reader collects. An add costs a dict update (well under a microsecond) where the SDK's
    synchronous counter costs about 10 µs; the service adds from its event loop only."""

    def __init__(self, *names: str) -> None:
        self._names = names
        self._sums: dict[Key, float] = {}

    def add(self, key: Key, amount: float = 1) -> None:
        self._sums[key] = self._sums.get(key, 0) + amount

    def observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        for key, value in self._sums.copy().items():  # copied in C, under the GIL: safe beside adds
            words = (a.word(v) if isinstance(v, Enum) else v for v in key)
            yield Observation(value, dict(zip(self._names, words, strict=True)))


_WHERE = (a.LANE, a.PROVIDER, a.REQUEST_MODEL)
# Each counter and the attributes its tally is keyed by, in key order.
_TALLIED = {
    DECISIONS: (*_WHERE, a.STRATEGY, a.OBJECTIVE),
    FALLBACKS: (a.LANE, a.PROVIDER, a.FALLBACK_REASON, DISRUPTIVE),
    ROUTER_ERRORS: (a.LANE, STAGE),
    ESTIMATED_TOKENS: (*_WHERE, a.TOKEN_TYPE),
    ESTIMATED_COST: _WHERE,
    REPORTS: (*_WHERE, a.OUTCOME),
    REPORTED_TOKENS: (*_WHERE, a.TOKEN_TYPE),
    SPEND: _WHERE,
    SCALE_DECISIONS: (a.SCALE_TARGET, a.SCALE_ACTION),
}
COUNTERS = tuple(_TALLIED)


class RoutingMetrics:
    """Tallies what the edge tells it; observes `health` when the reader collects."""

    def __init__(self, meter: Meter, health: Callable[[], HealthView]) -> None:
        self._health = health
        self._view_lock = threading.Lock()
        self._view: tuple[float, HealthView] | None = None
        self._tallies = {instrument: Tally(*keys) for instrument, keys in _TALLIED.items()}
        for instrument, tally in self._tallies.items():
            instrument(meter.create_observable_counter, callbacks=[tally.observe])
        # A histogram has no asynchronous form: this one is the SDK's (about 10 µs a call).
        self.rpc_duration = RPC_DURATION(
            meter.create_histogram, explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S
        )
        gauge = meter.create_observable_gauge
        DETECTION_STATE(gauge, callbacks=[self._observe_detection])
        BREAKER_STATE(gauge, callbacks=[self._observe_breakers])
        BUDGET_REMAINING(gauge, callbacks=[self._observe_budget_remaining])
        BUDGET_USED(gauge, callbacks=[self._observe_budget_used])
        STOP_LOSS(gauge, callbacks=[self._observe_stop_loss])

    # -- as things happen ------------------------------------------------------------------

    def decided(self, d: Decision) -> None:
        self._tallies[DECISIONS].add((d.lane, d.provider, d.model, d.strategy, d.objective))
        reason = d.fallback_reason
        if reason is not FallbackReason.NONE:
            self._tallies[FALLBACKS].add((d.lane, d.provider, reason, reason.disruptive))
            if reason is FallbackReason.ROUTER_ERROR:
                self._tallies[ROUTER_ERRORS].add((d.lane, "scoring"))
        self._tallies[ESTIMATED_TOKENS].add((d.lane, d.provider, d.model, "input"), d.input_tokens)
        self._tallies[ESTIMATED_TOKENS].add((d.lane, d.provider, d.model, "output"), d.output_tokens)
        self._tallies[ESTIMATED_COST].add((d.lane, d.provider, d.model), d.estimated_cost_usd)

    def refused(self, refusal: BudgetExhausted) -> None:
        """A Route refused for budget: a decision with no model, falling back for budget."""
        self._tallies[DECISIONS].add((refusal.lane, "", "", "refused", ""))
        reason = FallbackReason.BUDGET_EXHAUSTED
        self._tallies[FALLBACKS].add((refusal.lane, "", reason, reason.disruptive))

    def route_failed(self, lane: str) -> None:
        self._tallies[ROUTER_ERRORS].add((lane, "rpc"))

    def reported(self, r: ReportRecord) -> None:
        self._tallies[REPORTS].add((r.lane, r.provider, r.model, r.outcome))
        self._tallies[REPORTED_TOKENS].add((r.lane, r.provider, r.model, "input"), r.input_tokens)
        self._tallies[REPORTED_TOKENS].add((r.lane, r.provider, r.model, "output"), r.output_tokens)
        self._tallies[SPEND].add((r.lane, r.provider, r.model), r.cost_usd)

    def scaled(self, decision: ScaleDecision) -> None:
        self._tallies[SCALE_DECISIONS].add((decision.target, decision.action))

    # -- when a reader collects ------------------------------------------------------------

    def _current(self) -> HealthView:
        now = time.monotonic()
        with self._view_lock:
            if self._view is None or now - self._view[0] > _VIEW_TTL_S:
                self._view = (now, self._health())
            return self._view[1]

    def _observe_detection(self, _options: CallbackOptions) -> Iterable[Observation]:
        detection = self._current().detection
        for scope in (detection.overall, *detection.lanes, *detection.providers):
            for state in DETECTION_STATES:
                yield Observation(
                    int(scope.state == state), {SCOPE: scope.scope, NAME: scope.name, STATE: state}
                )

    def _observe_breakers(self, _options: CallbackOptions) -> Iterable[Observation]:
        for breaker in self._current().breakers:
            for state in BreakerState:
                where = {SCOPE: breaker.scope, NAME: breaker.name, STATE: state.value}
                yield Observation(int(breaker.state is state), where)

    def _observe_budget_remaining(self, _options: CallbackOptions) -> Iterable[Observation]:
        for budget in self._current().budgets:
            left = max(0.0, budget.limit_usd - budget.spent_usd - budget.reserved_usd)
            yield Observation(left, {SCOPE: budget.scope, NAME: budget.name})

    def _observe_budget_used(self, _options: CallbackOptions) -> Iterable[Observation]:
        for budget in self._current().budgets:
            yield Observation(budget.used_share, {SCOPE: budget.scope, NAME: budget.name})

    def _observe_stop_loss(self, _options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(int(self._current().guardrails.stop_loss.active))
