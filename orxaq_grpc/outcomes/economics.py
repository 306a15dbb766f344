"""Live economics: additive counters in time buckets, never lists of records.

Every decision and report lands in a per-minute bucket (kept a day: the last hour
and the detection window read them) and a per-hour bucket (kept 31 days: today,
7 d, 30 d and the hourly series read them), keyed by (lane, provider, model). The
number of buckets is bounded by time and by the catalog, so memory stays flat
however many reports arrive.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from orxaq_grpc.outcomes.records import DecisionRecord, ReportRecord
from orxaq_grpc.routing.types import FallbackReason

BUDGET_EXHAUSTED = FallbackReason.BUDGET_EXHAUSTED.value
MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
MINUTES_KEPT = DAY
HOURS_KEPT = 31 * DAY

_MINUTE_WINDOWS_UP_TO = 2 * HOUR

Key = tuple[str, str, str]  # (lane, provider, model)
GROUPS = ("providers", "lanes", "models")
_KEY_POSITION = {"lanes": 0, "providers": 1, "models": 2}


@dataclass(slots=True)
class Counters:
    """Sums over decisions and reports; every field adds."""

    decisions: int = 0
    fallbacks: int = 0
    disruptive: int = 0
    budget_fallbacks: int = (
        0  # disruptive ones of reason budget_exhausted: the budget at work, not the router
    )
    router_errors: int = 0
    estimated_tokens: int = 0
    estimated_cost_usd: float = 0.0
    reports: int = 0
    reported_tokens: int = 0
    reported_input_tokens: int = 0
    cached_input_tokens: int = 0  # of the reported input, read from a prompt cache
    cache_write_tokens: int = 0  # of the reported input, written to a prompt cache
    spend_usd: float = 0.0
    exact_spend_usd: float = 0.0
    failures: int = 0  # rate limits, timeouts, server errors
    validation_passed: int = 0
    first_time_passes: int = 0
    unknown_decisions: int = 0
    bounded_costs: int = 0  # reports whose cost was far above their estimate and counted at the bound
    latency_s: float = 0.0  # summed over reports: the mean is the cycle time stop-loss watches
    valued_decisions: int = 0  # decisions whose task carried value_usd
    value_usd: float = 0.0

    def add(self, other: Counters) -> None:
        # Spelled out: Economics adds thousands of these per call, and a getattr loop is 3x slower.
        self.decisions += other.decisions
        self.fallbacks += other.fallbacks
        self.disruptive += other.disruptive
        self.budget_fallbacks += other.budget_fallbacks
        self.router_errors += other.router_errors
        self.estimated_tokens += other.estimated_tokens
        self.estimated_cost_usd += other.estimated_cost_usd
        self.reports += other.reports
        self.reported_tokens += other.reported_tokens
        self.reported_input_tokens += other.reported_input_tokens
        self.cached_input_tokens += other.cached_input_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.spend_usd += other.spend_usd
        self.exact_spend_usd += other.exact_spend_usd
        self.failures += other.failures
        self.validation_passed += other.validation_passed
        self.first_time_passes += other.first_time_passes
        self.unknown_decisions += other.unknown_decisions
        self.bounded_costs += other.bounded_costs
        self.latency_s += other.latency_s
        self.valued_decisions += other.valued_decisions
        self.value_usd += other.value_usd

    def add_decision(self, record: DecisionRecord) -> None:
        self.decisions += 1
        self.fallbacks += record.fallback_reason != 0
        self.disruptive += record.disruptive
        self.budget_fallbacks += record.fallback_reason == BUDGET_EXHAUSTED
        self.router_errors += record.router_error
        self.estimated_tokens += record.estimated_input_tokens + record.estimated_output_tokens
        self.estimated_cost_usd += record.estimated_cost_usd
        if record.value_usd is not None:
            self.valued_decisions += 1
            self.value_usd += record.value_usd

    def add_report(self, record: ReportRecord) -> None:
        if not record.decision_known:
            # Nobody can tell it from a forgery: counted as such, and it moves no figure.
            self.unknown_decisions += 1
            return
        self.reports += 1
        self.reported_tokens += record.input_tokens + record.output_tokens
        self.reported_input_tokens += record.input_tokens
        self.cached_input_tokens += record.cached_input_tokens
        self.cache_write_tokens += record.cache_write_tokens
        self.spend_usd += record.cost_usd
        self.exact_spend_usd += record.cost_usd if record.cost_exact else 0.0
        self.failures += record.outcome.is_availability_failure
        self.validation_passed += record.validation_passed
        self.first_time_passes += record.first_time_pass
        self.latency_s += record.latency_s
        self.bounded_costs += record.cost_bounded


@dataclass(frozen=True, slots=True)
class Figures:
    """Counters with the rates and unit costs the dashboard shows."""

    counters: Counters
    blended_usd_per_mtok: float
    estimated_usd_per_mtok: float
    fallback_rate: float
    disruptive_fallback_rate: float
    unstable_fallback_rate: float  # disruptive but for budget refusals: what says the router is in trouble
    router_error_rate: float
    error_rate: float
    first_time_pass_rate: float
    acceptance_rate: float
    exact_spend_share: float
    cache_share: float  # cached input / reported input
    mean_cycle_time_s: float  # mean reported latency
    value_per_task_usd: float  # mean value_usd over decisions that carried one

    @classmethod
    def of(cls, c: Counters) -> Figures:
        return cls(
            counters=c,
            blended_usd_per_mtok=_ratio(c.spend_usd * 1e6, c.reported_tokens),
            estimated_usd_per_mtok=_ratio(c.estimated_cost_usd * 1e6, c.estimated_tokens),
            fallback_rate=_ratio(c.fallbacks, c.decisions),
            disruptive_fallback_rate=_ratio(c.disruptive, c.decisions),
            unstable_fallback_rate=_ratio(c.disruptive - c.budget_fallbacks, c.decisions),
            router_error_rate=_ratio(c.router_errors, c.decisions),
            error_rate=_ratio(c.failures, c.reports),
            first_time_pass_rate=_ratio(c.first_time_passes, c.reports),
            acceptance_rate=_ratio(c.validation_passed, c.reports),
            exact_spend_share=_ratio(c.exact_spend_usd, c.spend_usd),
            cache_share=_ratio(c.cached_input_tokens, c.reported_input_tokens),
            mean_cycle_time_s=_ratio(c.latency_s, c.reports),
            value_per_task_usd=_ratio(c.value_usd, c.valued_decisions),
        )


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


@dataclass(frozen=True, slots=True)
class Breakdown:
    """One window's figures overall and per provider, lane and model."""

    since: float
    overall: Figures
    providers: dict[str, Figures]
    lanes: dict[str, Figures]
    models: dict[str, Figures]


@dataclass(slots=True)
class _Buckets:
    width: float
    keep: float
    newest: float = 0.0  # the clock at the last write: what "older than kept" is measured from
    data: dict[float, dict[Key, Counters]] = field(default_factory=dict)

    def at(self, when: float, key: Key) -> Counters | None:
        """The counters for `key` in `when`'s bucket; None when that is older than kept
        (a replayed ledger must not build buckets the next prune would drop)."""
        start = when - when % self.width
        if start + self.width <= self.newest - self.keep:
            return None
        per_key = self.data.get(start)
        if per_key is None:
            per_key = self.data[start] = {}
        counters = per_key.get(key)
        if counters is None:
            counters = per_key[key] = Counters()
        return counters

    def align(self, since: float) -> float:
        """Windows start on a bucket boundary, so a window says exactly what it covers."""
        return since - since % self.width

    def snapshot(
        self, since: float, until: float = math.inf
    ) -> list[tuple[float, list[tuple[Key, Counters]]]]:
        """The buckets in [since, until) (aligned), as lists copied under the lock so the sums run
        without it (a counter updated meanwhile may be read mid-update: fine for a dashboard)."""
        return [
            (start, list(per_key.items())) for start, per_key in self.data.items() if since <= start < until
        ]

    def prune(self, now: float) -> None:
        for start in [s for s in self.data if s + self.width <= now - self.keep]:
            del self.data[start]


class EconomicsBook:
    """Thread-safe; written on every decision and durable report, read by Economics,
    Health and the detection states."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._minutes = _Buckets(MINUTE, MINUTES_KEPT)
        self._hours = _Buckets(HOUR, HOURS_KEPT)
        self._pruned_at = 0.0

    def add_decision(self, record: DecisionRecord) -> None:
        with self._lock:
            for counters in self._counters(record.at, (record.lane, record.provider, record.model)):
                counters.add_decision(record)

    def add_report(self, record: ReportRecord) -> None:
        with self._lock:
            for counters in self._counters(record.at, (record.lane, record.provider, record.model)):
                counters.add_report(record)

    def _counters(self, at: float, key: Key) -> list[Counters]:
        now = self._clock()
        self._minutes.newest = self._hours.newest = now
        self._prune(now)
        return [c for c in (self._minutes.at(at, key), self._hours.at(at, key)) if c is not None]

    def _prune(self, now: float) -> None:
        if now - self._pruned_at >= MINUTE:
            self._pruned_at = now
            self._minutes.prune(now)
            self._hours.prune(now)

    def breakdown(self, since: float, until: float = math.inf, groups: tuple[str, ...] = GROUPS) -> Breakdown:
        """Figures for everything from `since` (to `until`, if given): minute buckets for short
        windows (the last hour, detection), whole-hour buckets for the rest (today, 7 d, 30 d).
        Both ends are aligned down to the buckets' boundary. Only the `groups` asked for are summed
        (the others come back empty): most of the cost is in the per-name sums."""
        buckets = self._minutes if self._clock() - since <= _MINUTE_WINDOWS_UP_TO else self._hours
        since = buckets.align(since)
        if until != math.inf:
            until = buckets.align(until)
        with self._lock:  # only the copy is locked; Route and Report never wait for the sums
            snapshot = buckets.snapshot(since, until)
        overall = Counters()
        by: dict[str, dict[str, Counters]] = {group: {} for group in GROUPS}
        # The key's position of each group asked for: (lane, provider, model).
        wanted = [(by[group], _KEY_POSITION[group]) for group in groups]
        for _, per_key in snapshot:
            for key, counters in per_key:
                overall.add(counters)
                for sums, position in wanted:
                    if name := key[position]:  # a refused Route has a lane but no provider or model
                        sums.setdefault(name, Counters()).add(counters)
        return Breakdown(
            since=since,
            overall=Figures.of(overall),
            **{group: {n: Figures.of(c) for n, c in sorted(d.items())} for group, d in by.items()},
        )

    def hourly(self, hours: int) -> list[tuple[float, Figures]]:
        """The last `hours` UTC hours, oldest first, empty hours included."""
        now = self._clock()
        current = now - now % HOUR
        starts = [current - HOUR * i for i in range(hours - 1, -1, -1)]
        totals = {start: Counters() for start in starts}
        with self._lock:
            snapshot = self._hours.snapshot(starts[0])
        for start, per_key in snapshot:
            if start in totals:
                for _, counters in per_key:
                    totals[start].add(counters)
        return [(start, Figures.of(totals[start])) for start in starts]

    def bucket_count(self) -> int:
        """How many counter sets are held (what keeps memory flat)."""
        with self._lock:
            return sum(len(d) for d in self._minutes.data.values()) + sum(
                len(d) for d in self._hours.data.values()
            )
