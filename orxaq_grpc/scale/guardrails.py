"""Scale decisions and stop-loss over live economics, with their decision log.

Reads the economics book, budgets and detection the outcomes keep; writes every Scale decision
and stop-loss transition to the ledger's journal, and restores the stop-loss state from it on start.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass

from orxaq_grpc.config.model import Config
from orxaq_grpc.outcomes.budgets import BudgetBook
from orxaq_grpc.outcomes.detection import classify
from orxaq_grpc.outcomes.economics import DAY, EconomicsBook, Figures
from orxaq_grpc.outcomes.records import JournalEntry
from orxaq_grpc.routing.ids import new_decision_id
from orxaq_grpc.scale.gate import BudgetRoom, GateInputs, LaneCondition, decide
from orxaq_grpc.scale.journal import decoded, to_payload, write_durably
from orxaq_grpc.scale.stoploss import (
    BudgetSpend,
    Inputs,
    Sample,
    StopLoss,
    StopLossEvent,
    StopLossView,
    read_triggers,
)
from orxaq_grpc.scale.types import ScaleDecision, ScaleRequest
from orxaq_grpc.store.base import Store

log = logging.getLogger(__name__)

SCALE = "scale"
STOP_LOSS = "stop_loss"
RECENT_EVENTS = 20
CALIBRATION_EVERY_S = 60.0  # a model's acceptance moves slowly; a 30-day sum costs ~0.1 s


@dataclass(frozen=True, slots=True)
class GuardrailView:
    stop_loss: StopLossView
    events: tuple[StopLossEvent, ...]  # newest first
    scale_decisions: tuple[ScaleDecision, ...]  # newest first

    def fingerprint(self) -> tuple[bool, str]:
        return (self.stop_loss.active, self.stop_loss.trigger)


class Guardrails:
    def __init__(
        self,
        config: Callable[[], Config],
        book: EconomicsBook,
        budgets: BudgetBook,
        store: Store,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._book = book
        self._budgets = budgets
        self._store = store
        self._clock = clock
        self.stop_loss = StopLoss(clock)
        self._lock = threading.Lock()  # one evaluation at a time: the tick, Scale and operators
        self._shown = threading.Lock()  # the recent events and decisions Health shows
        self._calibration: dict[str, tuple[int, int]] = {}
        self._calibrated_at = -CALIBRATION_EVERY_S
        self._calibration_wanted = False  # set by the first Route with a value: until then, no sums
        self._events: deque[StopLossEvent] = deque(maxlen=RECENT_EVENTS)
        self._scales: deque[ScaleDecision] = deque(maxlen=config().policy.scale.recent_decisions)

    # -- for Route ------------------------------------------------------------------

    def pass_rates(self) -> Mapping[str, tuple[int, int]]:
        """Per model (validation passes, reports) over the calibration window, as of the last `check`
        (empty before the first: catalog quality stands in). Asking turns the refresh on."""
        self._calibration_wanted = True
        return self._calibration

    # -- start, tick ----------------------------------------------------------------

    def restore(self) -> None:
        """The stop-loss state and recent decisions as the journal left them."""
        events = decoded(StopLossEvent, self._store.journal(STOP_LOSS, RECENT_EVENTS))
        if events:
            self.stop_loss.apply(events[0])
        scales = decoded(ScaleDecision, self._store.journal(SCALE, self._scales.maxlen or 1))
        with self._shown:
            self._events.extend(events)
            self._scales.extend(scales)
        if self.stop_loss.active:
            view = self.stop_loss.view()
            log.warning("stop-loss is active since the last run (%s): routing to static pins", view.trigger)

    def check(self) -> StopLossEvent | None:
        """Follows transitions other workers logged, refreshes calibration when due and wanted, and
        evaluates the stop-loss triggers; the transition, if any."""
        with self._lock:
            self._follow_the_log()
            now = self._clock()
            if self._calibration_wanted and now - self._calibrated_at >= CALIBRATION_EVERY_S:
                self._calibrate(now)
            inputs = self._inputs(now)
            settings = self._config().policy.stop_loss
            event = self.stop_loss.evaluate(read_triggers(inputs, settings), inputs.baseline, settings)
            if event is not None:
                self._commit(event)  # a failed write changes nothing: the next round proposes it again
            return event

    def _follow_the_log(self) -> None:
        """Applies a transition another worker sharing this ledger logged (an operator's call reaches
        one worker; the others follow within a check interval)."""
        latest = decoded(StopLossEvent, self._store.journal(STOP_LOSS, 1))
        with self._shown:
            known = self._events[0] if self._events else None
        if latest and latest[0].at > (known.at if known is not None else -math.inf):
            self.stop_loss.apply(latest[0])
            with self._shown:
                self._events.appendleft(latest[0])
            log.info("stop-loss %s (%s) logged by another worker: applied", latest[0].kind, latest[0].trigger)

    def _calibrate(self, now: float) -> None:
        window = self._config().policy.strong_or_weak.calibration_window_s
        models = self._book.breakdown(now - window, groups=("models",)).models
        self._calibration = {
            name: (f.counters.validation_passed, f.counters.reports) for name, f in models.items()
        }
        self._calibrated_at = now

    # -- Scale and operators -----------------------------------------------------------

    def scale(self, request: ScaleRequest, config: Config) -> tuple[ScaleDecision, Future[bool]]:
        """Decides on a request validated against `config` after a fresh look at stop-loss; the
        future resolves once the decision is in the log."""
        self.check()
        settings = config.policy.scale
        lanes = (request.lane,) if request.lane else settings.groups[request.group]
        now = self._clock()
        view = self.stop_loss.view()
        inputs = GateInputs(
            lanes=self._lane_conditions(lanes, now),
            budgets=self._budget_rooms(lanes, now),
            stop_loss_active=view.active,
            stop_loss_reason=f"stop-loss since {view.trigger}: {view.reason}" if view.active else "",
        )
        decision = decide(
            request,
            lanes,
            settings,
            inputs,
            decision_id=new_decision_id(),
            at=now,
            config_version=config.version,
        )
        written = self._store.record_journal(JournalEntry(now, SCALE, decision.target, to_payload(decision)))

        def shown_once_durable(done: Future[bool]) -> None:
            if done.exception() is None:
                with self._shown:
                    self._scales.appendleft(decision)

        written.add_done_callback(shown_once_durable)
        return decision, written

    def set_stop_loss(self, active: bool, note: str) -> StopLossEvent | None:
        """An operator's call: enter or end stop-loss, once the transition is durable (StoreError
        and no change when it cannot be logged). None when it already is in that state."""
        with self._lock:
            inputs = self._inputs(self._clock())
            settings = self._config().policy.stop_loss
            event = self.stop_loss.operator(active, note, read_triggers(inputs, settings), inputs.baseline)
            if event is not None:
                self._commit(event)
            return event

    def _commit(self, event: StopLossEvent) -> None:
        """Logs a transition and applies it once durable: the state never runs ahead of the log,
        so a restart always comes back to what was last said."""
        entry = JournalEntry(event.at, STOP_LOSS, event.kind, to_payload(event))
        write_durably(self._store, entry, f"a stop-loss {event.kind}")
        self.stop_loss.apply(event)
        with self._shown:
            self._events.appendleft(event)
        level = logging.WARNING if event.kind == "enter" else logging.INFO
        log.log(level, "stop-loss %s (%s): %s", event.kind, event.trigger, event.detail)

    def view(self) -> GuardrailView:
        with self._shown:
            return GuardrailView(self.stop_loss.view(), tuple(self._events), tuple(self._scales))

    # -- what the gate and the triggers read --------------------------------------------

    def _inputs(self, now: float) -> Inputs:
        policy = self._config().policy
        s = policy.stop_loss
        split = now - s.recent_window_s
        recent = _sample(self._book.breakdown(split, groups=()).overall, split, now)
        fresh = _sample(
            self._book.breakdown(split - s.baseline_window_s, split, groups=()).overall,
            split - s.baseline_window_s,
            split,
        )
        window = self._book.breakdown(now - policy.detection.window_s, groups=())
        state = classify("overall", "overall", window.overall, policy.detection, now - window.since)
        budgets = tuple(
            BudgetSpend(f"{b.scope} {b.name}".strip(), b.spent_usd, b.limit_usd)
            for b in self._budgets.views()
        )
        return Inputs(
            budgets=budgets,
            recent=recent,
            baseline=self.stop_loss.baseline_for(fresh),
            router_state=state.state,
            decisions=window.overall.counters.decisions,
            unstable_fallback_rate=window.overall.unstable_fallback_rate,
        )

    def _lane_conditions(self, lanes: tuple[str, ...], now: float) -> tuple[LaneCondition, ...]:
        policy = self._config().policy
        window = self._book.breakdown(now - policy.scale.health_window_s, groups=("lanes",))
        conditions = []
        for lane in lanes:
            figures = window.lanes.get(lane)
            state = classify("lane", lane, figures, policy.detection, now - window.since)
            conditions.append(
                LaneCondition(
                    lane=lane,
                    state=state.state,
                    state_reason=state.reason,
                    reports=figures.counters.reports if figures else 0,
                    error_rate=figures.error_rate if figures else 0.0,
                    pass_rate=figures.acceptance_rate if figures else 0.0,
                )
            )
        return tuple(conditions)

    def _budget_rooms(self, lanes: tuple[str, ...], now: float) -> tuple[BudgetRoom, ...]:
        """Every daily budget over the target: overall, and each of its lanes' (the strictest wins).
        A budget's spend is today's spend and reservations, or the last 24 hours' if that is more."""
        views = [
            b
            for b in self._budgets.views()
            if b.scope == "overall" or (b.scope == "lane" and b.name in lanes)
        ]
        if not views:
            return ()
        trailing = self._book.breakdown(now - DAY, groups=("lanes",))
        rooms = []
        for b in views:
            figures = trailing.overall if b.scope == "overall" else trailing.lanes.get(b.name)
            last_day = figures.counters.spend_usd if figures else 0.0
            scope = "overall" if b.scope == "overall" else f"lane {b.name}"
            rooms.append(BudgetRoom(scope, b.limit_usd, max(b.spent_usd + b.reserved_usd, last_day)))
        return tuple(rooms)


def _sample(figures: Figures, since: float, until: float) -> Sample:
    c = figures.counters
    return Sample(
        since=since,
        until=until,
        reports=c.reports,
        pass_rate=figures.acceptance_rate,
        cycle_time_s=figures.mean_cycle_time_s,
        valued_tasks=c.valued_decisions,
        value_per_task_usd=figures.value_per_task_usd,
    )
