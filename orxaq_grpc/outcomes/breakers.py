"""Circuit breakers per model and per provider, fed by the lanes' outcome reports.

A circuit opens on a run of availability failures or on a high failure share over a sliding window.
Faults are answered in proportion: a rate limit that says when to retry opens only its model's circuit,
at once and for exactly that long; rate limits never count for a provider (they say nothing about its
availability); and a provider's circuit opens only when, its worst model left out, the rest of its
models still fail (at least twice, at the failure_rate share), so one sick model cannot take its
siblings down with it.
After `open_s` (or the retry-after) a circuit turns half-open and lets a few decisions through as probes;
the first report of a probe then closes or re-opens it. Reports of tasks routed before (still in flight
when it opened) are counted but decide nothing. Plain Python, thread-safe.
"""

from __future__ import annotations

import enum
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from orxaq_grpc.config.model import BreakerSettings
from orxaq_grpc.outcomes.records import Outcome

WINDOW_BUCKETS = 30  # the failure-rate window is kept as this many time buckets: memory stays flat
# A provider's circuit opens only if, leaving out its worst model, its other models still show this
# many failures in the window, at the failure_rate share: one model in trouble is that model's.
PROVIDER_EVIDENCE_FAILURES = 2


BREAKER_SCOPES = ("model", "provider")


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerView:
    """One breaker as Health shows it; times are on the breakers' clock (monotonic by default)."""

    scope: str  # "model" | "provider"
    name: str
    state: BreakerState
    reason: str  # the figure that opened it; empty when closed
    opened_at: float | None
    reopens_at: float | None  # when a half-open probe becomes allowed; None when closed
    consecutive_failures: int
    window_reports: int
    window_failures: int
    openings: int  # how many times it opened, from closed or from half-open


class _Window:
    """Reports and failures over the last window_s, in fixed time buckets (a ring, reused in place).

    A provider's window also keeps them per model, bounded by its catalog models, to tell a
    provider in trouble from one model of it in trouble."""

    def __init__(self, window_s: float) -> None:
        self._width = window_s / WINDOW_BUCKETS
        self._ids = [-1] * WINDOW_BUCKETS  # which time bucket each slot holds
        self._reports = [0] * WINDOW_BUCKETS
        self._failures = [0] * WINDOW_BUCKETS
        self._by_model: list[dict[str, list[int]]] = [{} for _ in range(WINDOW_BUCKETS)]

    def add(self, now: float, failed: bool, model: str | None = None) -> None:
        bucket = math.floor(now / self._width)
        slot = bucket % WINDOW_BUCKETS
        if self._ids[slot] != bucket:
            self._ids[slot], self._reports[slot], self._failures[slot] = bucket, 0, 0
            self._by_model[slot].clear()
        self._reports[slot] += 1
        self._failures[slot] += failed
        if model is not None:
            tally = self._by_model[slot].setdefault(model, [0, 0])
            tally[0] += 1
            tally[1] += failed

    def counts(self, now: float) -> tuple[int, int]:
        """(reports, failures) in the buckets still inside the window."""
        oldest = math.floor(now / self._width) - WINDOW_BUCKETS + 1
        reports = failures = 0
        for bucket, in_bucket, failed in zip(self._ids, self._reports, self._failures, strict=True):
            if bucket >= oldest:
                reports += in_bucket
                failures += failed
        return reports, failures

    def counts_but_the_worst_model(self, now: float) -> tuple[int, int]:
        """(reports, failures) inside the window of every model but the one with the most failures."""
        oldest = math.floor(now / self._width) - WINDOW_BUCKETS + 1
        totals: dict[str, list[int]] = {}
        for bucket, models in zip(self._ids, self._by_model, strict=True):
            if bucket >= oldest:
                for model, (reports, failures) in models.items():
                    total = totals.setdefault(model, [0, 0])
                    total[0] += reports
                    total[1] += failures
        if totals:
            del totals[max(totals, key=lambda m: (totals[m][1], m))]
        return sum(t[0] for t in totals.values()), sum(t[1] for t in totals.values())

    def clear(self) -> None:
        self._ids = [-1] * WINDOW_BUCKETS


def _rate_limit_reason(retry_after_s: float) -> str:
    return f"rate limited: retry after {retry_after_s:g} s" if retry_after_s > 0 else ""


class _Circuit:
    """One breaker. Not locked: Breakers holds its lock around every call."""

    def __init__(
        self, scope: str, name: str, settings: BreakerSettings, needs_evidence: bool = False
    ) -> None:
        """`needs_evidence`: a provider's circuit of several models opens only on failures across them."""
        self.scope, self.name, self._settings = scope, name, settings
        self._needs_evidence = needs_evidence
        self.state = BreakerState.CLOSED
        self.reason = ""
        self.opened_at: float | None = None
        # While open: when it turns half-open. While half-open with every probe in flight: when a
        # lost probe may be replaced. Either way, the next time this circuit unblocks by itself.
        self.reopens_at: float | None = None
        self.probes_left = 0
        # The decisions routed as probes while half-open: only their reports decide it. Bounded: a
        # lost probe's replacement pushes out the oldest id.
        self.probes: deque[str] = deque(maxlen=settings.half_open_probes)
        self.consecutive_failures = 0
        self.openings = 0
        self.window = _Window(settings.window_s)

    @property
    def blocking(self) -> bool:
        """Route must not choose it: open, or half-open with every probe taken."""
        return self.state is BreakerState.OPEN or (
            self.state is BreakerState.HALF_OPEN and self.probes_left == 0
        )

    def record(
        self, now: float, failed: bool, retry_after_s: float, decision_id: str, model: str | None = None
    ) -> bool:
        """Counts one success or failure (of `model`, for a provider's circuit); True if the state changed."""
        self.window.add(now, failed, model)
        self.consecutive_failures = self.consecutive_failures + 1 if failed else 0
        if self.state is BreakerState.HALF_OPEN and decision_id and decision_id in self.probes:
            return self._settle_probe(now, failed, retry_after_s)
        if self.state is not BreakerState.CLOSED:  # open, or half-open and not a probe's report
            if retry_after_s > 0:
                self._extend(now, retry_after_s)
            return False
        reason = self._trip_reason(now, failed, retry_after_s)
        if reason:
            self._open(now, reason, retry_after_s)
        return bool(reason)

    def _settle_probe(self, now: float, failed: bool, retry_after_s: float) -> bool:
        """A probe's report decides: healed, or open again for a fresh open_s."""
        if failed:
            self._open(now, _rate_limit_reason(retry_after_s) or "half-open probe failed", retry_after_s)
        else:
            self.close()
        return True

    def _trip_reason(self, now: float, failed: bool, retry_after_s: float) -> str:
        """Why a closed circuit must open after this report; empty if it stays closed."""
        if not failed:
            return ""
        if retry_after_s > 0:
            return _rate_limit_reason(retry_after_s)
        if self.consecutive_failures >= self._settings.consecutive_failures:
            reason = f"{self.consecutive_failures} consecutive failures"
        else:
            reports, failures = self.window.counts(now)
            share = failures / reports
            if reports < self._settings.min_reports or share < self._settings.failure_rate:
                return ""
            reason = (
                f"failure rate {share:.2f} >= {self._settings.failure_rate:.2f} "
                f"over {self._settings.window_s:g} s ({reports} reports)"
            )
        if self._needs_evidence:  # judged on its other models: one model failing is that model's problem
            others, failed_others = self.window.counts_but_the_worst_model(now)
            if (
                failed_others < PROVIDER_EVIDENCE_FAILURES
                or failed_others < self._settings.failure_rate * others
            ):
                return ""
        return reason

    def _open(self, now: float, reason: str, retry_after_s: float) -> None:
        """Open for open_s, or for exactly the retry-after a rate limit gave: the provider said when."""
        self.state, self.reason, self.opened_at = BreakerState.OPEN, reason, now
        self.reopens_at = now + (retry_after_s if retry_after_s > 0 else self._settings.open_s)
        self.probes_left = 0
        self.probes.clear()
        self.openings += 1

    def _extend(self, now: float, retry_after_s: float) -> None:
        """A rate limit while open or half-open: no (new) probe until its retry-after has passed."""
        assert self.reopens_at is not None
        if now + retry_after_s > self.reopens_at:
            self.reopens_at = now + retry_after_s
            self.reason = _rate_limit_reason(retry_after_s)

    def close(self) -> None:
        """Healed: forget the failures that opened it, or the next one would trip it again."""
        self.state, self.reason, self.opened_at, self.reopens_at = BreakerState.CLOSED, "", None, None
        self.probes_left = self.consecutive_failures = 0
        self.probes.clear()
        self.window.clear()

    def tick(self, now: float) -> bool:
        """Applies what time alone changes; True if the state changed."""
        if not self.blocking or self.reopens_at is None or now < self.reopens_at:
            return False
        if self.state is BreakerState.OPEN:
            self.state, self.probes_left = BreakerState.HALF_OPEN, self._settings.half_open_probes
            return True
        self.probes_left = 1  # every probe was lost (no report within open_s): allow another
        return False

    def take_probe(self, now: float, decision_id: str) -> bool:
        """Route chose it while half-open: decision_id is a probe. True if that took the last probe
        (it now blocks until a probe's report, or until open_s without one)."""
        if self.state is not BreakerState.HALF_OPEN or self.probes_left == 0:
            return False
        self.probes_left -= 1
        self.probes.append(decision_id)
        if self.probes_left:
            return False
        # max: a rate limit reported meanwhile may already have set a later time
        assert self.reopens_at is not None
        self.reopens_at = max(self.reopens_at, now + self._settings.open_s)
        return True

    def give_back_probe(self, decision_id: str) -> bool:
        """A probe's decision never reached its lane (its call cancelled, its answer lost): no report
        will come for it, so its probe is free again at once. True if that unblocks the circuit."""
        if self.state is not BreakerState.HALF_OPEN or decision_id not in self.probes:
            return False
        self.probes.remove(decision_id)
        self.probes_left += 1
        return self.probes_left == 1

    def view(self, now: float) -> BreakerView:
        reports, failures = self.window.counts(now)
        return BreakerView(
            scope=self.scope,
            name=self.name,
            state=self.state,
            reason=self.reason,
            opened_at=self.opened_at,
            reopens_at=self.reopens_at,
            consecutive_failures=self.consecutive_failures,
            window_reports=reports,
            window_failures=failures,
            openings=self.openings,
        )


class Breakers:
    """Every model's and provider's breaker, behind one lock.

    `blocked()` runs on every Route, so its answer is cached until a report or a routed probe changes
    something, or the clock reaches the next time a circuit unblocks by itself.
    """

    def __init__(
        self,
        settings: BreakerSettings,
        clock: Callable[[], float] = time.monotonic,
        provider_models: Mapping[str, int] = MappingProxyType({}),
    ) -> None:
        """`provider_models`: how many catalog models each provider has; a provider not in it counts
        as having several."""
        self._settings = settings
        self._clock = clock
        self._provider_models = dict(provider_models)
        self._lock = threading.Lock()
        self._circuits: dict[tuple[str, str], _Circuit] = {}
        self._tripped: set[_Circuit] = set()  # not closed: the only ones time or probes can change
        self._blocked: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())
        self._next_tick = math.inf
        self._version = 0

    def record(
        self,
        model: str,
        provider: str,
        outcome: Outcome,
        retry_after_s: float = 0.0,
        decision_id: str = "",
    ) -> bool:
        """Feeds one report to the model's and the provider's breaker; True if either changed state.

        Bad output and unspecified outcomes say nothing about availability, so they neither fail
        nor heal a circuit. A rate limit with a retry-after opens the model's circuit for exactly that
        long; without one it is an ordinary failure of the model. Rate limits never reach the provider's
        circuit (providers limit each model on its own), and failures open a provider's circuit only once
        its other models fail too, its worst one left out (a one-model provider: as a model). A
        half-open circuit is decided only by the report of one of its probes (`decision_id` as passed
        to `note_routed`); any other report is counted but neither closes nor re-opens it (a
        retry-after may still delay the next probe).
        """
        if outcome is not Outcome.SUCCESS and not outcome.is_availability_failure:
            return False
        failed = outcome.is_availability_failure
        rate_limited = outcome is Outcome.RATE_LIMITED
        # A lane's retry-after is honoured up to the policy's cap: no report can close a model for a day.
        retry_after_s = min(retry_after_s, self._settings.max_retry_after_s) if rate_limited else 0.0
        with self._lock:
            now = self._advance()
            model_circuit = self._circuit("model", model)
            circuits = (
                [model_circuit] if rate_limited else [model_circuit, self._circuit("provider", provider)]
            )
            was_open = any(c in self._tripped for c in circuits)
            changed = model_circuit.record(now, failed, retry_after_s, decision_id)
            if not rate_limited:
                # The model circuit's own name string: the window keeps a reference, never a copy.
                changed |= circuits[1].record(now, failed, 0.0, decision_id, model_circuit.name)
            self._version += changed
            if changed or was_open:  # an open circuit's reopening time may have moved
                self._tripped.update(c for c in circuits if c.state is not BreakerState.CLOSED)
                self._tripped.difference_update(c for c in circuits if c.state is BreakerState.CLOSED)
                self._refresh()
            return changed

    def blocked(self) -> tuple[frozenset[str], frozenset[str]]:
        """(models, providers) Route must not choose now: open, or half-open with no probe left."""
        with self._lock:
            self._advance()
            return self._blocked

    def note_routed(self, model: str, provider: str, decision_id: str) -> None:
        """Route chose this model: the decision takes a probe from its model's and provider's half-open
        circuits, and its report will decide them."""
        with self._lock:
            now = self._advance()
            took_last = False
            for key in (("model", model), ("provider", provider)):
                circuit = self._circuits.get(key)
                took_last |= circuit is not None and circuit.take_probe(now, decision_id)
            if took_last:
                self._refresh()

    def note_abandoned(self, model: str, provider: str, decision_id: str) -> None:
        """A decision `note_routed` saw never reached its lane: a probe it took is given back, or the
        circuit would stay blocked until a lost probe may be replaced (open_s later)."""
        with self._lock:
            self._advance()
            freed = False
            for key in (("model", model), ("provider", provider)):
                circuit = self._circuits.get(key)
                freed |= circuit is not None and circuit.give_back_probe(decision_id)
            if freed:
                self._refresh()

    def close(self, scope: str, name: str) -> bool:
        """An operator closes a circuit by hand: its failures are forgotten, as when it heals. False
        when it was closed already (or has seen no report)."""
        with self._lock:
            self._advance()
            circuit = self._circuits.get((scope, name))
            if circuit is None or circuit.state is BreakerState.CLOSED:
                return False
            circuit.close()
            self._tripped.discard(circuit)
            self._version += 1
            self._refresh()
            return True

    def is_closed(self, scope: str, name: str) -> bool:
        with self._lock:
            self._advance()
            circuit = self._circuits.get((scope, name))
            return circuit is None or circuit.state is BreakerState.CLOSED

    def view_of(self, scope: str, name: str) -> BreakerView | None:
        """One breaker; None when it has seen no report."""
        with self._lock:
            now = self._advance()
            circuit = self._circuits.get((scope, name))
            return circuit.view(now) if circuit is not None else None

    def now(self) -> float:
        """The breakers' clock (monotonic, or the simulator's): what their times are on."""
        return self._clock()

    def views(self) -> list[BreakerView]:
        """Every breaker that has seen a report, by scope then name."""
        with self._lock:
            now = self._advance()
            return [self._circuits[key].view(now) for key in sorted(self._circuits)]

    @property
    def version(self) -> int:
        """Grows whenever a report or the passing of time changes some breaker's state."""
        with self._lock:
            self._advance()
            return self._version

    def _circuit(self, scope: str, name: str) -> _Circuit:
        circuit = self._circuits.get((scope, name))
        if circuit is None:
            # A provider not in the catalog counts as having several models.
            several = scope == "provider" and self._provider_models.get(name, 2) > 1
            circuit = self._circuits[(scope, name)] = _Circuit(scope, name, self._settings, several)
        return circuit

    def _advance(self) -> float:
        """Reads the clock and, once it reaches the next unblocking time, applies what time changed."""
        now = self._clock()
        if now >= self._next_tick:
            changed = [circuit.tick(now) for circuit in self._tripped]  # a list: every one must tick
            self._version += any(changed)
            self._refresh()
        return now

    def _refresh(self) -> None:
        """Recomputes the cached blocked sets and the next time one of them can change by itself."""
        blocking = [c for c in self._tripped if c.blocking]
        self._blocked = (
            frozenset(c.name for c in blocking if c.scope == "model"),
            frozenset(c.name for c in blocking if c.scope == "provider"),
        )
        self._next_tick = min((c.reopens_at for c in blocking if c.reopens_at is not None), default=math.inf)
