"""Stop-loss: four triggers over live economics, and a state that enters at once and leaves slowly.

Each trigger is read twice over: `holding` at its threshold (what enters stop-loss) and `clear`
past it by the hysteresis share of its margin (what lets it end). Stop-loss ends by itself only
after every trigger has been clear for the whole cool-off, the triggers that started it judged on
enough data, not merely unjudged; or at once by an operator. A trigger still holding when an
operator ends it is re-armed only after it has been seen clear, so the same unchanged condition
cannot flap the service back in. A stop-loss that starts again within one cool-off of ending by
itself (a fault that shows only while routing is scored) ends only by an operator, and so does an
operator's own.

`StopLoss` proposes transitions; the caller logs each one and applies it once it is durable.
"""

from __future__ import annotations

import enum
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from orxaq_grpc.config.model import StopLossSettings
from orxaq_grpc.outcomes.detection import TROUBLED


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
class BudgetSpend:
    """One daily budget and today's settled spend against it."""

    scope: str  # "overall", "lane codex", "provider openai"
    spent_usd: float
    limit_usd: float


@dataclass(frozen=True, slots=True)
class Inputs:
    budgets: tuple[BudgetSpend, ...]  # every configured daily budget
    recent: Sample
    baseline: Sample
    router_state: str  # the overall detection state
    decisions: int  # in the detection window
    # Disruptive fallbacks but budget refusals over the detection window: a budget that runs out is
    # the daily_spend trigger's business, and the budget doing its job, not an unstable router.
    unstable_fallback_rate: float


@dataclass(frozen=True, slots=True)
class Reading:
    trigger: str
    holding: bool  # at or past the threshold: enters stop-loss
    clear: bool  # back past the threshold by the hysteresis margin, or not judged
    figure: float
    threshold: float
    detail: str
    judged: bool = True  # False: off, or too little data to say


def read_triggers(inputs: Inputs, settings: StopLossSettings) -> tuple[Reading, ...]:
    return (
        _daily_spend(inputs, settings),
        _pass_rate(inputs, settings),
        _router_unstable(inputs, settings),
        _cycle_time(inputs, settings),
    )


def _off(trigger: Trigger, detail: str) -> Reading:
    return Reading(trigger.value, False, True, 0.0, 0.0, detail, judged=False)


def _daily_spend(inputs: Inputs, s: StopLossSettings) -> Reading:
    """The budget most used, as a share of its limit, against spend_over_budget_share."""
    if not inputs.budgets:
        return _off(Trigger.DAILY_SPEND, "off: no daily budget")
    worst = max(inputs.budgets, key=lambda b: b.spent_usd / b.limit_usd)
    share = worst.spent_usd / worst.limit_usd
    return Reading(
        Trigger.DAILY_SPEND.value,
        holding=share > s.spend_over_budget_share,
        clear=share <= s.spend_over_budget_share * (1 - s.hysteresis),
        figure=share,
        threshold=s.spend_over_budget_share,
        detail=f"{worst.scope} spent ${worst.spent_usd:,.2f} today of a ${worst.limit_usd:,.2f} daily budget "
        f"({share:.0%}); stop-loss over {s.spend_over_budget_share:.0%}",
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
    # A drop on a few dozen reports is mostly noise (a lucky baseline of 30 reports is 7 points off
    # the truth): it must also stand pass_rate_z standard errors clear of it.
    margin = s.pass_rate_z * _standard_error(inputs.recent, inputs.baseline)
    significant = baseline - recent >= margin
    detail = (
        f"validation pass rate {recent:.1%} over {inputs.recent.reports} recent reports; "
        f"baseline {baseline:.1%} over {inputs.baseline.reports}, stop-loss below {threshold:.1%}"
    )
    if recent < threshold and not significant:
        detail += f" when the drop passes {margin:.1%} ({s.pass_rate_z:g} standard errors)"
    return Reading(
        Trigger.PASS_RATE.value,
        holding=recent < threshold and significant,
        clear=recent >= baseline - s.pass_rate_drop * (1 - s.hysteresis),
        figure=recent,
        threshold=threshold,
        detail=detail,
    )


def _standard_error(a: Sample, b: Sample) -> float:
    """Of the difference of two pass rates, pooled: how far apart two samples of one rate fall."""
    pooled = (a.pass_rate * a.reports + b.pass_rate * b.reports) / (a.reports + b.reports)
    return math.sqrt(pooled * (1 - pooled) * (1 / a.reports + 1 / b.reports))


def _router_unstable(inputs: Inputs, s: StopLossSettings) -> Reading:
    if inputs.decisions < s.min_decisions:
        return _off(
            Trigger.ROUTER_UNSTABLE,
            f"not judged: {inputs.decisions} decisions in the detection window; needs {s.min_decisions}",
        )
    rate = inputs.unstable_fallback_rate
    return Reading(
        Trigger.ROUTER_UNSTABLE.value,
        holding=inputs.router_state in TROUBLED and rate >= s.fallback_rate,
        clear=rate < s.fallback_rate * (1 - s.hysteresis),
        figure=rate,
        threshold=s.fallback_rate,
        detail=f"router {inputs.router_state}, disruptive fallback rate {rate:.1%} (budget refusals "
        f"aside) over {inputs.decisions} decisions; stop-loss at {s.fallback_rate:.1%}",
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
    operator_only: bool = False  # enter: only an operator can end this one


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
    operator_only: bool


class StopLoss:
    """Thread-safe; `active` is a plain attribute Route reads without the lock."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.active = False
        self._entered: StopLossEvent | None = None  # while active
        self._fired: frozenset[str] = frozenset()  # triggers that must be seen clear to leave
        self._clear_since: float | None = None
        self._acknowledged: set[str] = set()
        self._auto_exit_at = -float("inf")
        self._readings: tuple[Reading, ...] = ()
        self._judged_against: Sample | None = None  # the baseline of the last evaluation
        self._settings: StopLossSettings | None = None

    def apply(self, event: StopLossEvent) -> None:
        """Makes a logged transition (or, on start, the last one logged) the state."""
        with self._lock:
            if event.kind == "enter":
                self.active = True
                self._entered = event
                self._fired = frozenset(event.trigger.split(",")) - {OPERATOR}
                self._clear_since = None
                self._readings = self._readings or event.readings
            else:
                self.active = False
                self._entered = None
                self._clear_since = None
                self._acknowledged = set(event.acknowledged)
                if event.trigger == COOL_OFF:
                    self._auto_exit_at = event.at

    def baseline_for(self, fresh: Sample) -> Sample:
        """While active, stop-loss is judged against the baseline it entered with."""
        with self._lock:
            entered = self._entered
            return entered.baseline if entered is not None and entered.baseline is not None else fresh

    def evaluate(
        self, readings: tuple[Reading, ...], baseline: Sample, settings: StopLossSettings
    ) -> StopLossEvent | None:
        """Takes in one round of readings; the transition they call for, if any (not yet applied)."""
        now = self._clock()
        with self._lock:
            self._readings, self._settings, self._judged_against = readings, settings, baseline
            if not self.active:
                latest = {r.trigger: r for r in readings}
                self._acknowledged = {
                    t
                    for t in self._acknowledged
                    if not (t in latest and latest[t].judged and latest[t].clear)
                }
                firing = [r for r in readings if r.holding and r.trigger not in self._acknowledged]
                if not firing or not settings.enabled:
                    return None
                detail = "; ".join(r.detail for r in firing)
                relapse = now - self._auto_exit_at < settings.cool_off_s
                if relapse:
                    detail += "; back within one cool-off of ending by itself: ends only by an operator"
                trigger = ",".join(r.trigger for r in firing)
                return StopLossEvent(now, "enter", trigger, detail, readings, baseline, operator_only=relapse)
            entered = self._entered
            if entered is None or entered.operator_only or entered.trigger == OPERATOR:
                return None
            if not all(r.clear and (r.judged or r.trigger not in self._fired) for r in readings):
                self._clear_since = None
                return None
            if self._clear_since is None:
                self._clear_since = now
            clear_for = now - self._clear_since
            if clear_for < settings.cool_off_s:
                return None
            detail = f"every trigger clear for {clear_for:.0f} s (cool-off {settings.cool_off_s:g} s)"
            return StopLossEvent(now, "exit", COOL_OFF, detail, readings, entered.baseline)

    def operator(
        self, active: bool, note: str, readings: tuple[Reading, ...], baseline: Sample
    ) -> StopLossEvent | None:
        """An operator's transition, given the triggers as they read now (not yet applied); None
        when it already is in that state."""
        now = self._clock()
        with self._lock:
            if active == self.active:
                return None
            self._readings, self._judged_against = readings, baseline
            if active:
                return StopLossEvent(
                    now, "enter", OPERATOR, "entered by an operator", readings, baseline, note=note
                )
            holding = tuple(r.trigger for r in readings if r.holding)
            frozen = self._entered.baseline if self._entered is not None else baseline
            return StopLossEvent(
                now, "exit", OPERATOR, "ended by an operator", readings, frozen, holding, note
            )

    def view(self) -> StopLossView:
        now = self._clock()
        with self._lock:
            entered = self._entered
            clear_for = (
                now - self._clear_since if entered is not None and self._clear_since is not None else 0.0
            )
            manual = entered is not None and (entered.operator_only or entered.trigger == OPERATOR)
            exits_in = None
            if entered is not None and not manual and self._clear_since is not None and self._settings:
                exits_in = max(0.0, self._settings.cool_off_s - clear_for)
            return StopLossView(
                active=self.active,
                since=entered.at if entered else 0.0,
                trigger=entered.trigger if entered else "",
                reason=entered.detail if entered else "",
                clear_for_s=clear_for,
                exits_in_s=exits_in,
                readings=self._readings,
                baseline=entered.baseline if entered and entered.baseline else self._judged_against,
                acknowledged=tuple(sorted(self._acknowledged)),
                operator_only=manual,
            )
