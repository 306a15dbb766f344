"""What the service learns after routing, behind one object the edge calls.

Decisions are logged and counted as they are made. A report is priced, written to
the ledger, and applied to economics, budgets and breakers only once the ledger
says it is durable and new, so a duplicate or a failed write changes nothing.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, fields
from pathlib import Path

from orxaq_grpc.application import abandoned, unpublished
from orxaq_grpc.application.adaptive import AdaptiveWeights
from orxaq_grpc.application.learning import Learner
from orxaq_grpc.application.operators import OperatorAction, Operators
from orxaq_grpc.config.model import Config, Weights
from orxaq_grpc.learning import SuccessModel
from orxaq_grpc.outcomes.breakers import Breakers, BreakerView
from orxaq_grpc.outcomes.budgets import BudgetBook, Budgets, BudgetView, ScopeKey
from orxaq_grpc.outcomes.detection import Detection, detect
from orxaq_grpc.outcomes.economics import DAY, HOUR, Breakdown, EconomicsBook, Figures
from orxaq_grpc.outcomes.records import AbandonedRecord, DecisionRecord, ReportInput, ReportRecord
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.routing.router import BudgetExhausted, reported_cost_usd
from orxaq_grpc.routing.types import Decision, FallbackReason, Objective, Strategy
from orxaq_grpc.scale.guardrails import Guardrails, GuardrailView
from orxaq_grpc.shared import SharedBudgets, SharedLink, SharedStatus
from orxaq_grpc.shared.events import Shared
from orxaq_grpc.store.base import Store, StoreStats
from orxaq_grpc.vocabulary import OtherLanesDecision, Violation

log = logging.getLogger(__name__)

# Decisions remembered in memory to tell known from unknown reports without a disk read;
# older ones are looked up in the ledger. Bounded, so memory stays flat.
RECENT_DECISIONS = 100_000
# The last decisions Health shows operators.
SHOWN_DECISIONS = 20
REBUILD_DAYS = 31
# Route prices expected input at its lane's observed cache share, summed again at most this often.
CACHE_SHARE_REFRESH_S = 1.0
# What a stored report keeps of the lane's report as it came; the service adds the rest.
_CARRIED_REPORT_FIELDS = tuple(f.name for f in fields(ReportInput) if f.name != "cost_usd")


@dataclass(frozen=True, slots=True)
class EconomicsView:
    at: float
    windows: tuple[tuple[str, Breakdown], ...]  # last_hour, today, 7d, 30d
    hourly: tuple[tuple[float, Figures], ...]
    guardrails: GuardrailView


@dataclass(frozen=True, slots=True)
class LearningView:
    mode: str
    ledger_position: int  # the last report learned
    models: tuple[tuple[str, int, int], ...]  # (model, outcomes, passes) learned from


@dataclass(frozen=True, slots=True)
class HealthView:
    detection: Detection
    breakers: tuple[BreakerView, ...]
    budgets: tuple[BudgetView, ...]
    ledger: StoreStats
    guardrails: GuardrailView
    recent_decisions: tuple[DecisionRecord, ...] = ()  # newest first; not part of the fingerprint
    learning: LearningView | None = None
    shared: SharedStatus | None = None  # None: this replica shares nothing (no --shared)
    operator_actions: tuple[OperatorAction, ...] = ()  # newest first
    paused_lanes: frozenset[str] = frozenset()

    def fingerprint(self) -> tuple[object, ...]:
        """What a watcher compares: every state, not the figures that wobble under it."""
        return (
            self.guardrails.fingerprint(),
            self.detection.states(),
            tuple((b.scope, b.name, b.state) for b in self.breakers),
            tuple((b.scope, b.name, b.warning, b.exhausted) for b in self.budgets),
            self.shared is not None and self.shared.connected,
            self.paused_lanes,
            self.operator_actions[0].at if self.operator_actions else None,
        )


class Outcomes:
    """Implements the router's Guards (breakers, budgets, stop-loss, calibration) and owns the
    economics and the guardrails that read them."""

    def __init__(
        self,
        live: LiveRouter,
        store: Store,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        model_path: Path | None = None,
        shared: SharedLink | None = None,
    ) -> None:
        """`model_path` is where the success model is saved (None: rebuilt from the ledger on each start).
        `shared` links this replica to the others (budgets in Redis, each one's decisions and reports
        counted by all); `start_sharing` begins the exchange once the ledger is replayed.
        `clock` is wall time (days, windows, the ledger), `monotonic` the breakers' time; the fleet
        simulator passes its own simulated pair. Breaker settings are read once, here: changing them
        takes a restart. Prices, lanes, budget limits and detection thresholds follow config reloads."""
        self._live = live
        self.store = store
        self._clock = clock
        self.book = EconomicsBook(clock)
        self.breakers = Breakers(
            self.config.policy.breakers,
            monotonic,
            provider_models={
                p: sum(m.provider == p for m in self.config.models)
                for p in {m.provider for m in self.config.models}
            },
        )
        self._budgets_from = self.config  # the config the budget limits were last set from
        self.shared = shared
        settings = self._budgets_from.policy.budgets
        self.budgets: BudgetBook = (
            SharedBudgets(settings, shared, self.spent_today, clock, monotonic)
            if shared is not None
            else Budgets(settings, clock)
        )
        self.guardrails = Guardrails(lambda: self.config, self.book, self.budgets, store, clock)
        self.operators = Operators(store, self.breakers, self._follow_reload, clock)
        self._recent: OrderedDict[str, tuple[str, float]] = OrderedDict()  # id: (lane, estimated USD)
        self._reported: OrderedDict[str, None] = OrderedDict()  # decisions whose report is counted
        self._shown: deque[DecisionRecord] = deque(maxlen=SHOWN_DECISIONS)
        self._booked = 0  # reports booked: cache shares are summed again only after one
        self._cache_shares: tuple[dict[str, float], float, int] = ({}, -math.inf, 0)
        self.learner = Learner(store, self.config, model_path, clock)
        self.adaptive = AdaptiveWeights(self.config, store, clock)
        self.learner.on_outcome(self.adaptive.observe)
        live.on_reload(self._follow_budgets)
        live.on_reload(self.learner.reconfigure)
        live.on_reload(self.adaptive.reconfigure)

    def _follow_reload(self, version: str) -> None:
        """Another worker reloaded the config (an operator's call reaches one): this one does too."""
        if version != self.config.version:
            self._live.reload()

    def _follow_budgets(self, config: Config) -> None:
        """After a reload: the new budget limits apply at once, a new budget counting today's spend."""
        note = f"config {self._budgets_from.version} -> {config.version}"
        self.budgets.update(config.policy.budgets, note)
        self._budgets_from = config

    @property
    def config(self) -> Config:
        return self._live.current.config

    # -- Guards, for Router.route ------------------------------------------------------

    def blocked(self) -> tuple[frozenset[str], frozenset[str]]:
        return self.breakers.blocked()

    def headroom(self, lane: str) -> tuple[float, dict[str, float]]:
        return self.budgets.headroom(lane)

    def try_reserve(self, decision_id: str, lane: str, provider: str, usd: float) -> bool:
        return self.budgets.try_reserve(decision_id, lane, provider, usd)

    def stop_loss_active(self) -> bool:
        return self.guardrails.stop_loss.active

    def lane_paused(self, lane: str) -> bool:
        return self.operators.lane_paused(lane)

    def pass_rates(self) -> Mapping[str, tuple[int, int]]:
        return self.guardrails.pass_rates()

    def success_model(self) -> SuccessModel | None:
        return self.learner.model if self.config.policy.learning.learns else None

    def objective_weights(self) -> Mapping[Objective, Weights] | None:
        return self.adaptive.current() if self.config.policy.adaptive_weights.enabled else None

    def cache_share(self, lane: str) -> float:
        """The lane's cached share of reported input over the detection window: summed again at most
        every CACHE_SHARE_REFRESH_S, and only after a report was booked, so a Route costs a lookup."""
        now = self._clock()
        shares, at, booked = self._cache_shares
        if (booked != self._booked and now - at >= CACHE_SHARE_REFRESH_S) or now < at:
            booked = self._booked
            since = now - self.config.policy.detection.window_s
            lanes = self.book.breakdown(since, groups=("lanes",)).lanes
            shares = {name: f.cache_share for name, f in lanes.items() if f.cache_share}
            self._cache_shares = (shares, now, booked)
        return shares.get(lane, 0.0)

    def check(self) -> None:
        """The periodic round: stop-loss triggers, what other workers' operators did, and the success
        model catches up with the ledger."""
        self.guardrails.check()
        self.operators.follow()
        if self.config.policy.learning.learns:
            self.learner.tick()
            self.adaptive.tick()

    def close(self) -> None:
        """Saves what the success model learned, then drains and closes the ledger."""
        if self.config.policy.learning.learns:
            self.learner.save()
        if self.shared is not None:
            unpublished.keep(self.store, self.shared.close(), self._clock)
        self.store.close()

    # -- decisions and reports ---------------------------------------------------------

    def record_decision(self, decision: Decision) -> None:
        record = DecisionRecord(
            decision_id=decision.decision_id,
            at=self._clock(),
            lane=decision.lane,
            provider=decision.provider,
            model=decision.model,
            strategy=decision.strategy.value,
            fallback_reason=decision.fallback_reason.value,
            disruptive=decision.fallback_reason.disruptive,
            router_error=decision.fallback_reason == FallbackReason.ROUTER_ERROR,
            estimated_input_tokens=decision.input_tokens,
            estimated_output_tokens=decision.output_tokens,
            estimated_cost_usd=decision.estimated_cost_usd,
            filtered=decision.filter_summary,
            value_usd=decision.value_usd,
            task=decision.task,
        )
        self.store.record_decision(record)  # first: a closed store raises before anything is counted
        self.book.add_decision(record)
        self.breakers.note_routed(decision.model, decision.provider, decision.decision_id)
        self._remember(record)
        self._shown.appendleft(record)
        if self.shared is not None:
            self.shared.publish(record)

    def record_refusal(self, refusal: BudgetExhausted) -> None:
        """A Route refused for budget counts as a disruptive decision of its lane, with no model."""
        record = DecisionRecord(
            decision_id=refusal.decision_id,
            at=self._clock(),
            lane=refusal.lane,
            provider="",
            model="",
            strategy=Strategy.UNSPECIFIED.value,  # refused: no model was chosen
            fallback_reason=FallbackReason.BUDGET_EXHAUSTED.value,
            disruptive=True,
            router_error=False,
            estimated_input_tokens=refusal.input_tokens,
            estimated_output_tokens=refusal.output_tokens,
            estimated_cost_usd=0.0,
        )
        self.store.record_decision(record)
        self.book.add_decision(record)
        self._shown.appendleft(record)
        self.budgets.release(refusal.decision_id)  # a static answer tried first may have reserved
        if self.shared is not None:
            self.shared.publish(record)

    def abandon(self, decisions: Sequence[Decision]) -> None:
        """Decisions that never reached their lanes: frees the budget each reserved and gives back a
        half-open circuit's probe each took (no report will come for either), and journals them, so a
        restart does not book their reservations again."""
        for decision in decisions:
            self.budgets.settle(decision.decision_id, decision.lane, decision.provider, 0.0)
            self.breakers.note_abandoned(decision.model, decision.provider, decision.decision_id)
            if self.shared is not None:  # the others took its probe from the published decision
                self.shared.publish(AbandonedRecord(decision.decision_id, decision.model, decision.provider))
        abandoned.note(self.store, [decision.decision_id for decision in decisions], self._clock)

    def remembers(self, decision_id: str) -> bool:
        """Whether this decision is in memory: a report for it is prepared without asking the ledger
        or Redis (which may be slow: the caller then prepares it off the event loop)."""
        return decision_id in self._recent

    def _remember(self, decision: DecisionRecord) -> None:
        self._recent[decision.decision_id] = (decision.lane, decision.estimated_cost_usd)
        if len(self._recent) > RECENT_DECISIONS:
            self._recent.popitem(last=False)

    def prepare_report(self, report: ReportInput) -> ReportRecord:
        """Stamps, prices and classifies a validated report; changes nothing yet."""
        exact = report.cost_usd is not None
        if report.cost_usd is not None:
            cost = report.cost_usd
        else:
            catalog = self._live.current.catalog
            model = catalog.models[catalog.index[report.model]]
            cost = reported_cost_usd(
                model,
                report.input_tokens,
                report.output_tokens,
                report.cached_input_tokens,
                report.cache_write_tokens,
            )
        decided = self._recent.get(report.decision_id)
        if decided is None and self.shared is not None:
            decided = self._shared_decision(report.decision_id)
        if decided is None and (decision := self.store.find_decision(report.decision_id)) is not None:
            decided = (decision.lane, decision.estimated_cost_usd)
        claimed = None
        if decided is not None:
            lane, estimate = decided
            if lane != report.lane:
                # A lane reports its own decisions: another lane's budget must not pay for them.
                problem = f"decision {report.decision_id!r} was routed on lane {lane!r}, not {report.lane!r}"
                raise OtherLanesDecision([Violation("lane", problem)])
            bound = self.config.policy.reports.bound(estimate)
            if cost > bound:
                claimed, cost = cost, bound
                log.warning(
                    "report for decision %s (lane %s) claims $%.4f, over its bound $%.4f (estimate $%.4f): "
                    "counted at the bound",
                    report.decision_id,
                    report.lane,
                    claimed,
                    bound,
                    estimate,
                )
        return ReportRecord(
            **{name: getattr(report, name) for name in _CARRIED_REPORT_FIELDS},
            at=self._clock(),
            cost_usd=cost,
            cost_exact=exact,
            decision_known=decided is not None,
            cost_bounded=claimed is not None,
            claimed_cost_usd=claimed,
        )

    def write_report(self, record: ReportRecord) -> Future[bool]:
        """Resolves True once durable and new, False for a decision already reported."""
        return self.store.record_report(record)

    def apply_report(self, record: ReportRecord) -> None:
        """Counts a durable, new report: economics, the budget settlement, the breakers. A report for
        a decision this service has no record of (in memory or in the ledger) is kept in the ledger and
        counted as unknown, but moves no budget, breaker or stop-loss figure: nothing tells it from a
        forgery, and one forged report must not be able to stop the fleet."""
        if self.shared is not None:
            self.shared.publish(record)
        if not self._book(record):
            return
        if self.breakers.record(
            record.model, record.provider, record.outcome, record.retry_after_s, record.decision_id
        ):
            log.info("breakers changed after a %s report for %s", record.outcome.name.lower(), record.model)

    def _book(self, record: ReportRecord, settle: bool = True) -> bool:
        """Economics and (with `settle`) the budget settlement, as a report is counted live and on
        rebuild; False for a report of an unknown decision, which moves nothing more."""
        self.book.add_report(record)
        self._booked += 1
        self._reported[record.decision_id] = None
        if len(self._reported) > RECENT_DECISIONS:
            self._reported.popitem(last=False)
        if not record.decision_known:
            return False
        if settle:
            self.budgets.settle(
                record.decision_id, record.lane, record.provider, record.cost_usd, at=record.at
            )
        return True

    # -- the other replicas ------------------------------------------------------------

    def start_sharing(self, after: str) -> None:
        """Counts the other replicas' decisions and reports from stream position `after` on (read
        before the ledger was replayed: what the replay already counted is recognised and skipped)."""
        if self.shared is not None:
            self.shared.requeue(unpublished.take(self.store, self._clock))
            self.shared.start(self.apply_remote, after)

    def apply_remote(self, record: Shared) -> None:
        """Another replica's decision or counted report: into economics, detection, the decision
        lookup and the breakers; or a decision it abandoned: the probe it took given back. Budgets are
        not touched: that replica settled them in Redis."""
        if isinstance(record, AbandonedRecord):
            self.breakers.note_abandoned(record.model, record.provider, record.decision_id)
        elif isinstance(record, DecisionRecord):
            if record.decision_id in self._recent:
                return
            self.book.add_decision(record)
            if record.model:  # a half-open circuit's probe taken there is taken here too
                self.breakers.note_routed(record.model, record.provider, record.decision_id)
            self._remember(record)
            self._shown.appendleft(record)
        elif record.decision_id not in self._reported and self._book(record, settle=False):
            self.breakers.record(
                record.model, record.provider, record.outcome, record.retry_after_s, record.decision_id
            )

    def _shared_decision(self, decision_id: str) -> tuple[str, float] | None:
        """Another replica's decision whose record has not reached this one yet: its open reservation
        (written before the lane had the answer), else the lookup key it published."""
        assert self.shared is not None
        if (
            isinstance(self.budgets, SharedBudgets)
            and (reserved := self.budgets.reserved_for(decision_id)) is not None
        ):
            return reserved
        return self.shared.find_decision(decision_id)

    def spent_today(self) -> dict[ScopeKey, float]:
        """Today's settled spend per scope as the economics count it: overall, every lane, every provider."""
        now = self._clock()
        today = self.book.breakdown(now - now % DAY, groups=("lanes", "providers"))
        spent: dict[ScopeKey, float] = {("overall", ""): today.overall.counters.spend_usd}
        spent.update({("lane", name): f.counters.spend_usd for name, f in today.lanes.items()})
        spent.update({("provider", name): f.counters.spend_usd for name, f in today.providers.items()})
        return spent

    def rebuild(self) -> tuple[int, int]:
        """Replays the ledger's last 31 days into economics and today's spend into budgets, books
        again the reservations still open, restores the stop-loss state from the journal, and
        evaluates the triggers on what was replayed. Breakers start closed: a restart is a fresh look
        at providers."""
        now = self._clock()
        open_after = now - self.config.policy.budgets.reservation_ttl_s
        # Decisions that reserved, are within the TTL and have no report yet; only those are kept.
        unreported: dict[str, DecisionRecord] = {}
        decisions = reports = 0
        for record in self.store.replay(now - REBUILD_DAYS * DAY):
            if isinstance(record, DecisionRecord):
                self.book.add_decision(record)
                self._remember(record)  # the newest stay: reports for them need no disk read
                self._shown.appendleft(record)
                decisions += 1
                if record.at > open_after and record.model and record.estimated_cost_usd > 0:
                    unreported[record.decision_id] = record
            elif self._book(record, settle=not self.budgets.shared):
                unreported.pop(record.decision_id, None)  # replay is in time order: after its decision
                reports += 1
        for decision_id in abandoned.since(self.store, open_after):  # their lanes never got them
            unreported.pop(decision_id, None)
        self.budgets.seed(self.spent_today())  # shared budgets: today's spend, for a Redis without it
        self._restore_reservations(unreported.values())
        self.guardrails.restore()
        self.operators.restore()
        self.guardrails.check()
        return decisions, reports

    def _restore_reservations(self, decisions: Iterable[DecisionRecord]) -> None:
        """Books the unreported decisions' estimates again with their own time, so each still
        expires reservation_ttl_s after its decision: a restart must not free budget in flight."""
        if not self.budgets.any:
            return
        count, total = 0, 0.0
        for record in decisions:  # in time order, as the reservations expire
            self.budgets.reserve(
                record.decision_id, record.lane, record.provider, record.estimated_cost_usd, at=record.at
            )
            count += 1
            total += record.estimated_cost_usd
        log.info("budgets: restored %d open reservations from the ledger, $%.4f in all", count, total)

    # -- views ---------------------------------------------------------------------

    def detection(self) -> Detection:
        """The detection states alone (the lanes' health names follow them): no model breakdown."""
        config = self.config
        now = self._clock()
        window = self.book.breakdown(now - config.policy.detection.window_s, groups=("lanes", "providers"))
        providers = sorted({m.provider for m in config.models})
        return detect(window, config.policy.detection, config.lanes, providers, now)

    def health(self) -> HealthView:
        return HealthView(
            detection=self.detection(),
            breakers=tuple(self.breakers.views()),
            budgets=tuple(self.budgets.views()),
            ledger=self.store.stats(),
            guardrails=self.guardrails.view(),
            recent_decisions=tuple(self._shown),  # copied in C, under the GIL: safe beside appends
            learning=self.learning_view(),
            shared=self.shared.status() if self.shared is not None else None,
            operator_actions=self.operators.shown(),
            paused_lanes=self.operators.paused,
        )

    def learning_view(self) -> LearningView:
        model = self.learner.model
        return LearningView(
            mode=self.config.policy.learning.mode,
            ledger_position=model.position,
            models=tuple((name, n, passes) for name, (passes, n) in model.outcomes().items()),
        )

    def economics(self) -> EconomicsView:
        now = self._clock()
        today = now - now % DAY
        windows = (
            ("last_hour", now - HOUR),
            ("today", today),
            ("7d", now - 7 * DAY),
            ("30d", now - 30 * DAY),
        )
        return EconomicsView(
            at=now,
            windows=tuple((name, self.book.breakdown(since)) for name, since in windows),
            hourly=tuple(self.book.hourly(24)),
            guardrails=self.guardrails.view(),
        )
