"""Stop-loss: four triggers over live economics, and a state that enters at once and leaves slowly.

Each trigger is read twice over: `holding` at its threshold (what enters stop-loss) and `clear`
past it by the hysteresis share of its margin (what lets it end). Stop-loss ends by itself only
after every trigger has been clear for the whole cool-off, or at once by an operator; a trigger
still holding when an operator ends it is re-armed only after it has been clear once, so the
same unchanged condition cannot flap the service back in. An operator's own stop-loss ends only
by an operator.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from orxaq_grpc.config.model import StopLossSettings

UNSTABLE_STATES = frozenset({"degraded", "elevated_fallback"})


class Trigger(enum.StrEnum):
    DAILY_SPEND = "daily_spend"
    PASS_RATE = "pass_rate"
    ROUTER_UNSTABLE = "router_unstable"
    CYCLE_TIME = "cycle_time"


OPERATOR = "operator"
COOL_OFF = "cool_off"


@dataclass(frozen=True, slots=True)
class Sample:
    """Report figures over one window: what pass rate and cycle time are judged on."""

    since: float
    until: float
    reports: int
    pass_rate: float
    cycle_time_s: float  # mean reported latency
    valued_tasks: int  # decisions whose task carried value_usd
    value_per_task_usd: float


@dataclass(frozen=True, slots=True)
class Inputs:
    spend_today_usd: float
    daily_budget_usd: float  # 0: no overall daily budget
    recent: Sample
    baseline: Sample
    router_state: str  # the overall detection state
    decisions: int  # in the detection window
    disruptive_fallback_rate: float


@dataclass(frozen=True, slots=True)
class Reading:
    trigger: str
    holding: bool  # at or past the threshold: enters stop-loss
    clear: bool  # back past the threshold by the hysteresis margin: counts toward leaving
    figure: float
    threshold: float
    detail: str


def read_triggers(inputs: Inputs, settings: StopLossSettings) -> tuple[Reading, ...]:
    return (
        _daily_spend(inputs, settings),
        _pass_rate(inputs, settings),
        _router_unstable(inputs, settings),
        _cycle_time(inputs, settings),
    )


def _off(trigger: Trigger, detail: str) -> Reading:
    return Reading(trigger.value, False, True, 0.0, 0.0, detail)


def _daily_spend(inputs: Inputs, s: StopLossSettings) -> Reading:
    if inputs.daily_budget_usd <= 0:
        return _off(Trigger.DAILY_SPEND, "off: no overall daily budget")
    limit = inputs.daily_budget_usd * s.spend_over_budget_share
    spend = inputs.spend_today_usd
    return Reading(
        Trigger.DAILY_SPEND.value,
        holding=spend > limit,
        clear=spend <= limit * (1 - s.hysteresis),
        figure=spend,
        threshold=limit,
        detail=f"spent ${spend:,.2f} today; stop-loss over ${limit:,.2f} "
        f"({s.spend_over_budget_share:g} x the ${inputs.daily_budget_usd:,.2f} daily budget)",
    )


def _too_few(trigger: Trigger, inputs: Inputs, s: StopLossSettings) -> Reading | None:
    recent, baseline = inputs.recent, inputs.baseline
    if recent.reports < s.min_reports or baseline.reports < s.min_reports:
        return _off(
            trigger,
            f"not judged: {recent.reports} recent and {baseline.reports} baseline reports; needs "
            f"{s.min_reports} each",
        )
    return None


def _pass_rate(inputs: Inputs, s: StopLossSettings) -> Reading:
    if (off := _too_few(Trigger.PASS_RATE, inputs, s)) is not None:
        return off
    recent, baseline = inputs.recent.pass_rate, inputs.baseline.pass_rate
    threshold = baseline - s.pass_rate_drop
    return Reading(
        Trigger.PASS_RATE.value,
        holding=recent < threshold,
        clear=recent >= baseline - s.pass_rate_drop * (1 - s.hysteresis),
        figure=recent,
        threshold=threshold,
        detail=f"validation pass rate {recent:.1%} over {inputs.recent.reports} recent reports; "
        f"baseline {baseline:.1%} over {inputs.baseline.reports}, stop-loss below {threshold:.1%}",
    )


def _router_unstable(inputs: Inputs, s: StopLossSettings) -> Reading:
    if inputs.decisions < s.min_decisions:
        return _off(
            Trigger.ROUTER_UNSTABLE,
            f"not judged: {inputs.decisions} decisions in the detection window; needs {s.min_decisions}",
        )
    rate = inputs.disruptive_fallback_rate
    return Reading(
        Trigger.ROUTER_UNSTABLE.value,
        holding=inputs.router_state in UNSTABLE_STATES and rate >= s.fallback_rate,
        clear=rate < s.fallback_rate * (1 - s.hysteresis),
        figure=rate,
        threshold=s.fallback_rate,
        detail=f"router {inputs.router_state}, disruptive fallback rate {rate:.1%} over "
        f"{inputs.decisions} decisions; stop-loss at {s.fallback_rate:.1%}",
    )


def _cycle_time(inputs: Inputs, s: StopLossSettings) -> Reading:
    if (off := _too_few(Trigger.CYCLE_TIME, inputs, s)) is not None:
        return off
    recent, baseline = inputs.recent, inputs.baseline
    if baseline.cycle_time_s <= 0:
        return _off(Trigger.CYCLE_TIME, "not judged: the baseline cycle time is 0")
    ratio = recent.cycle_time_s / baseline.cycle_time_s
    value_ratio = 1.0  # no valued tasks on either side: no uplift to speak of
    if recent.valued_tasks and baseline.valued_tasks and baseline.value_per_task_usd > 0:
        value_ratio = recent.value_per_task_usd / baseline.value_per_task_usd
    increase = ratio - 1.0
    paid_for = value_ratio >= ratio  # value rose at least as much as the time did
    return Reading(
        Trigger.CYCLE_TIME.value,
        holding=increase >= s.cycle_time_increase and not paid_for,
        clear=increase < s.cycle_time_increase * (1 - s.hysteresis) or paid_for,
        figure=increase,
        threshold=s.cycle_time_increase,
        detail=f"mean cycle time {recent.cycle_time_s:.1f} s vs baseline {baseline.cycle_time_s:.1f} s "
        f"({increase:+.0%}), value per task x{value_ratio:.2f}; stop-loss at "
        f"+{s.cycle_time_increase:.0%} without matching value uplift",
    )


@dataclass(frozen=True, slots=True)
class StopLossEvent:
    """A transition, as the decision log keeps it."""

    at: float
    kind: str  # "enter" or "exit"
    trigger: (
        str  # enter: the triggers that held (comma-separated) or "operator"; exit: "cool_off" or "operator"
    )
    detail: str
    readings: tuple[Reading, ...]
    baseline: Sample | None  # the baseline stop-loss judged against (frozen while active)
    acknowledged: tuple[str, ...] = ()  # exit by operator: triggers still holding, re-armed once clear
    note: str = ""  # the operator's words


@dataclass(frozen=True, slots=True)
class StopLossView:
    active: bool
    since: float
    trigger: str
    reason: str
    clear_for_s: float  # how long every trigger has been clear (while active)
    exits_in_s: float | None  # the cool-off left; None when it cannot end by itself now
    readings: tuple[Reading, ...]
    baseline: Sample | None  # what the triggers are judged against (frozen at entry while active)
    acknowledged: tuple[str, ...]


class StopLoss:
    """Thread-safe; `active` is a plain attribute Route reads without the lock."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.active = False
        self._since = 0.0
        self._trigger = ""
        self._reason = ""
        self._baseline: Sample | None = None  # frozen at entry
        self._clear_since: float | None = None
        self._acknowledged: set[str] = set()
        self._readings: tuple[Reading, ...] = ()
        self._judged_against: Sample | None = None  # the baseline of the last evaluation
        self._settings: StopLossSettings | None = None

    def restore(self, last: StopLossEvent | None) -> None:
        """The state the last logged transition left. A cool-off starts over after a restart."""
        with self._lock:
            if last is None:
                return
            if last.kind == "enter":
                self.active = True
                self._since, self._trigger, self._reason = last.at, last.trigger, last.detail
                self._baseline = last.baseline
                self._readings = last.readings
            else:
                self._acknowledged = set(last.acknowledged)

    def baseline_for(self, fresh: Sample) -> Sample:
        """While active, stop-loss is judged against the baseline it entered with."""
        with self._lock:
            return self._baseline if self.active and self._baseline is not None else fresh

    def evaluate(
        self, readings: tuple[Reading, ...], baseline: Sample, settings: StopLossSettings
    ) -> StopLossEvent | None:
        """Applies one round of readings; returns the transition to log, if any."""
        now = self._clock()
        with self._lock:
            self._readings, self._settings, self._judged_against = readings, settings, baseline
            if not self.active:
                latest = {r.trigger: r for r in readings}
                self._acknowledged = {t for t in self._acknowledged if t in latest and not latest[t].clear}
                firing = [r for r in readings if r.holding and r.trigger not in self._acknowledged]
                if not firing or not settings.enabled:
                    return None
                trigger = ",".join(r.trigger for r in firing)
                detail = "; ".join(r.detail for r in firing)
                return self._enter(now, trigger, detail, readings, baseline, "")
            if self._trigger == OPERATOR:
                return None
            if not all(r.clear for r in readings):
                self._clear_since = None
                return None
            if self._clear_since is None:
                self._clear_since = now
            if now - self._clear_since < settings.cool_off_s:
                return None
            clear_for = now - self._clear_since
            detail = f"every trigger clear for {clear_for:.0f} s (cool-off {settings.cool_off_s:g} s)"
            return self._exit(now, COOL_OFF, detail, readings, ())

    def operator(
        self, active: bool, note: str, readings: tuple[Reading, ...], baseline: Sample
    ) -> StopLossEvent | None:
        """Enters or ends stop-loss by hand, given the triggers as they read now; None when it
        already is in that state."""
        now = self._clock()
        with self._lock:
            if active == self.active:
                return None
            self._readings, self._judged_against = readings, baseline
            if active:
                return self._enter(now, OPERATOR, "entered by an operator", readings, baseline, note)
            holding = tuple(r.trigger for r in readings if r.holding)
            return self._exit(now, OPERATOR, "ended by an operator", readings, holding, note)

    def _enter(
        self,
        now: float,
        trigger: str,
        detail: str,
        readings: tuple[Reading, ...],
        baseline: Sample | None,
        note: str,
    ) -> StopLossEvent:
        self.active = True
        self._since, self._trigger, self._reason = now, trigger, detail
        self._baseline, self._clear_since = baseline, None
        return StopLossEvent(now, "enter", trigger, detail, readings, baseline, note=note)

    def _exit(
        self,
        now: float,
        trigger: str,
        detail: str,
        readings: tuple[Reading, ...],
        acknowledged: tuple[str, ...],
        note: str = "",
    ) -> StopLossEvent:
        event = StopLossEvent(now, "exit", trigger, detail, readings, self._baseline, acknowledged, note)
        self.active = False
        self._since, self._trigger, self._reason = 0.0, "", ""
        self._baseline, self._clear_since = None, None
        self._acknowledged = set(acknowledged)
        return event

    def view(self) -> StopLossView:
        now = self._clock()
        with self._lock:
            clear_for = now - self._clear_since if self.active and self._clear_since is not None else 0.0
            exits_in = None
            if self.active and self._trigger != OPERATOR and self._clear_since is not None and self._settings:
                exits_in = max(0.0, self._settings.cool_off_s - clear_for)
            return StopLossView(
                active=self.active,
                since=self._since,
                trigger=self._trigger,
                reason=self._reason,
                clear_for_s=clear_for,
                exits_in_s=exits_in,
                readings=self._readings,
                baseline=self._baseline if self.active and self._baseline else self._judged_against,
                acknowledged=tuple(sorted(self._acknowledged)),
            )
