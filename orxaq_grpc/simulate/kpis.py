"""What an operator wants to know after a simulated run, gathered as it goes.

Spend is counted twice: what the simulated providers really charged (the truth), and what the
service says it settled and holds in reservations (its Health). Budgets are judged on the truth.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.config.model import BudgetSettings
from orxaq_grpc.outcomes.economics import DAY
from orxaq_grpc.simulate.scenario import CLOSE_BREAKER, Operate, Outage, Pause, Scenario
from orxaq_grpc.simulate.truth import CallResult

SCORED_STRATEGIES = ("scored", "strong_or_weak", "requested")
# The answers an intruder's calls are counted by (others, should any come, are counted too).
STATUSES = ("OK", "INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED")
FORGED_CALLS = ("unknown_report", "cross_lane_report", "set_stop_loss", "scale")


def _enum(value: int, enum: Any, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix).lower()


@dataclass
class _Episode:
    entered_s: float
    trigger: str
    exited_s: float | None = None
    exit: str = ""  # "cool_off" or "operator"


@dataclass
class _Kind:
    """One task kind's figures over the run."""

    finished: int = 0
    passed: int = 0
    spend_usd: float = 0.0
    strong: int = 0  # strong-or-weak decisions for it that chose the strong model
    weak: int = 0


@dataclass
class _Sample:
    t: float
    decisions: int
    static: int
    passed: int
    finished: int
    strong: int  # strong-or-weak decisions that chose the strong model ...
    weak: int  # ... and the weak one
    spend_usd: float
    committed_usd: float  # the overall budget's settled + reserved, as the service says
    stop_loss: bool
    open_breakers: int


@dataclass(frozen=True, slots=True)
class Books:
    """The service's own figures at one instant, as Health and Economics show them to an operator."""

    spend_usd: float  # booked from reports, over the Economics window that holds the whole run
    reports: int  # reports booked
    unknown_reports: int  # kept, for decisions the service never made, and booked nowhere
    budgets: dict[str, float]  # "overall", "lane codex": settled + reserved
    breakers: dict[
        str, tuple[str, int, float, int, int, int]
    ]  # "model x": state, openings, reopens in, counts
    stop_loss: tuple[bool, float, str]  # active, since, trigger

    def moved_budgets(self, after: Books) -> dict[str, float]:
        names = self.budgets.keys() | after.budgets.keys()
        moved = {name: after.budgets.get(name, 0.0) - self.budgets.get(name, 0.0) for name in names}
        return {name: round(usd, 6) for name, usd in sorted(moved.items()) if abs(usd) > 1e-9}

    def moved_breakers(self, after: Books) -> list[str]:
        """Breakers whose state, openings, open time or failure counts changed."""
        return sorted(name for name, view in after.breakers.items() if self.breakers.get(name) != view)

    def opened_breakers(self, after: Books) -> list[str]:
        return sorted(
            name
            for name, view in after.breakers.items()
            if view[1] > (self.breakers[name][1] if name in self.breakers else 0)
        )

    def stop_loss_change(self, after: Books) -> str:
        if after.stop_loss == self.stop_loss:
            return "unchanged"
        if after.stop_loss[0] and self.stop_loss[0]:
            return "entered again"
        return "entered" if after.stop_loss[0] else "ended"


@dataclass
class Intrusion:
    """One intruder's burst ([[events]] of kind forge): its calls by what each was and how the
    service answered it, what was taken into steering, and the service's books either side."""

    name: str
    at_s: float
    credential: str
    sent_token: bool  # whether it had a token to send
    answers: Counter[tuple[str, str]] = field(default_factory=Counter)  # (call, status)
    reasons: Counter[str] = field(default_factory=Counter)  # ErrorInfo reasons, fields refused
    accepted: Counter[str] = field(default_factory=Counter)  # by call
    kept_unknown: int = 0  # reports answered OK for decisions the service never made: booked nowhere
    duplicates: int = 0  # reports answered OK as already reported: changed nothing
    victims: int = 0  # real decisions of other lanes its cross-lane reports named ...
    in_flight_victims: int = 0  # ... of which not yet reported by their lane
    scale_actions: list[str] = field(default_factory=list)
    before: Books | None = None
    after: Books | None = None

    def answered(self, call: str, status: str, reason: str = "") -> None:
        self.answers[(call, status)] += 1
        if reason:
            self.reasons[reason] += 1

    def summary(self) -> dict[str, Any]:
        assert self.before is not None and self.after is not None
        before, after = self.before, self.after
        status = Counter(dict.fromkeys(STATUSES, 0))
        by_call: dict[str, dict[str, int]] = {}
        for (call, code), n in self.answers.items():
            status[code] += n
            by_call.setdefault(call, {})[code] = by_call.get(call, {}).get(code, 0) + n
        return {
            "name": self.name,
            "at_s": self.at_s,
            "credential": self.credential,
            "sent_token": self.sent_token,
            "calls": sum(self.answers.values()),
            "status": dict(status),
            "by_call": {call: by_call[call] for call in FORGED_CALLS if call in by_call},
            "reasons": dict(sorted(self.reasons.items())),
            "accepted": sum(self.accepted.values()),
            "accepted_by_call": {call: self.accepted[call] for call in FORGED_CALLS if self.accepted[call]},
            "kept_unknown": self.kept_unknown,
            "duplicates": self.duplicates,
            "victims": self.victims,
            "in_flight_victims": self.in_flight_victims,
            "scale_actions": self.scale_actions,
            # across the burst, from the service's own figures
            "reports_booked": after.reports - before.reports,
            "unknown_reports_kept": after.unknown_reports - before.unknown_reports,
            "spend_moved_usd": round(after.spend_usd - before.spend_usd, 6),
            "budgets_moved_usd": before.moved_budgets(after),
            "breakers_moved": before.moved_breakers(after),
            "breakers_opened": before.opened_breakers(after),
            "stop_loss": before.stop_loss_change(after),
        }


@dataclass
class Replicated:
    """Several replicas ([service] replicas): where the lanes' calls went, whether reports reached a
    replica that knew their decision, whether each rate limit blocked its model on every replica,
    and whether the replicas' Economics and Health agreed, at each stop-loss check and at the end."""

    count: int
    shared: bool
    routes: list[int] = field(default_factory=list)  # Routes each replica answered (refusals too)
    reports: list[int] = field(default_factory=list)  # lanes' Reports each replica took
    cross_reports: int = 0  # reports sent to another replica than the one that routed them ...
    unknown: int = 0  # ... answered as for a decision the replica did not know
    unknown_first: list[dict[str, Any]] = field(default_factory=list)
    rate_limits: int = 0  # rate limits the lanes reported ...
    blocked_on: Counter[int] = field(default_factory=Counter)  # ... by how many replicas then blocked
    not_everywhere: list[dict[str, Any]] = field(default_factory=list)  # the first few that did not
    checks: int = 0  # stop-loss checks at which every replica's views were compared ...
    checks_agreed: int = 0
    first_disagreement: dict[str, Any] | None = None
    final: list[dict[str, Any]] = field(default_factory=list)  # each replica's views at the end
    links: list[dict[str, int]] = field(default_factory=list)  # records published and applied
    in_flight: int = 0  # decisions the lanes had not reported at the end, and their estimates
    in_flight_usd: float = 0.0
    exchange: dict[str, Any] = field(default_factory=dict)  # real time the records took to apply

    FIRST = 5  # examples kept of each kind of miss

    def __post_init__(self) -> None:
        self.routes = [0] * self.count
        self.reports = [0] * self.count

    def reported(self, t: float, replica: int, routed_by: int, decision_id: str, known: bool) -> None:
        self.reports[replica] += 1
        if replica == routed_by:
            return
        self.cross_reports += 1
        if not known:
            self.unknown += 1
            if len(self.unknown_first) < self.FIRST:
                self.unknown_first.append(
                    {
                        "at_s": round(t, 3),
                        "decision_id": decision_id,
                        "routed_by": routed_by,
                        "sent_to": replica,
                    }
                )

    def rate_limited(self, t: float, model: str, routed_by: int, reported_to: int, states: list[str]) -> None:
        """A lane's rate limit, and the model's circuit on each replica right after it."""
        self.rate_limits += 1
        blocking = [state == "open" for state in states]
        self.blocked_on[sum(blocking)] += 1
        if not all(blocking) and len(self.not_everywhere) < self.FIRST:
            self.not_everywhere.append(
                {
                    "at_s": round(t, 3),
                    "model": model,
                    "routed_by": routed_by,
                    "reported_to": reported_to,
                    "blocked_on": [i for i, b in enumerate(blocking) if b],
                    "circuits": states,
                }
            )

    def compared(self, t: float, found: list[str]) -> None:
        self.checks += 1
        if not found:
            self.checks_agreed += 1
        elif self.first_disagreement is None:
            self.first_disagreement = {"t": round(t, 3), "differences": found}

    def reserved_usd(self) -> float | None:
        """What the fleet holds reserved at the end under its overall budget (None: no such budget):
        one Redis' figure when shared, else each replica's own, summed."""
        held = [float(view["budgets"]["overall"][1]) for view in self.final if "overall" in view["budgets"]]
        if not held or len(held) < len(self.final):
            return None
        return held[0] if self.shared else sum(held)

    def summary(self, found: list[str]) -> dict[str, Any]:
        reserved = self.reserved_usd()
        return {
            "count": self.count,
            "shared": self.shared,
            "by_replica": [
                {
                    "replica": i,
                    "routes": self.routes[i],
                    "reports": self.reports[i],
                    "decisions_today": view["decisions"],
                    "reports_today": view["reports"],
                    "unknown_reports_today": view["unknown_reports"],
                    "spend_today_usd": view["spend_usd"],
                    "open_breakers": view["open_breakers"],
                    "budgets": view["budgets"],
                    "stop_loss": view["stop_loss"],
                    **(self.links[i] if i < len(self.links) else {}),
                }
                for i, view in enumerate(self.final)
            ],
            "agree": not found,
            "differences": found,
            "checks": self.checks,
            "checks_agreed": self.checks_agreed,
            "first_disagreement": self.first_disagreement,
            "cross_replica_reports": self.cross_reports,
            "unknown_reports": self.unknown,
            "unknown_first": self.unknown_first,
            "in_flight_at_end": self.in_flight,
            "in_flight_estimates_usd": round(self.in_flight_usd, 6),
            "reserved_at_end_usd": None if reserved is None else round(reserved, 6) + 0.0,  # never -0.0
            "rate_limits_reported": self.rate_limits,
            "rate_limits_blocked_on": {str(n): self.blocked_on[n] for n in sorted(self.blocked_on)},
            "rate_limits_blocked_everywhere": self.blocked_on[self.count],
            "rate_limits_not_everywhere": self.not_everywhere,
            "exchange": self.exchange,  # wall clock
        }


@dataclass(frozen=True, slots=True)
class _LaneDecision:
    t: float
    strategy: str
    reason: str
    model: str

    @property
    def pinned(self) -> bool:
        """Answered as a paused lane is: its static chain, reason lane_paused."""
        return self.strategy == "static_fallback" and self.reason == "lane_paused"


@dataclass
class _Close:
    model: str
    at_s: float
    replica: int
    state: str  # the model's circuit on that replica just before the call
    reopens_in_s: float  # until, left alone, it would have let a probe through
    changed: bool
    routed_s: float | None = None  # the first decision for the model after the close


FIRST_MISSES = 5  # decisions kept of each kind of miss


@dataclass
class Operated:
    """An operator's calls ([[events]] of kind operate): every decision of a lane it pauses, the
    models whose circuits it closes and when they were next routed, and the overall detection state
    at each check. `follow_s`: how long after a call every replica is taken to have applied it."""

    pauses: list[Pause]
    follow_s: float
    decisions: defaultdict[str, list[_LaneDecision]] = field(default_factory=lambda: defaultdict(list))
    closes: list[_Close] = field(default_factory=list)
    overall: list[tuple[float, str]] = field(default_factory=list)  # (t, state) at each check

    def routed(self, t: float, lane: str, strategy: str, reason: str, model: str) -> None:
        if any(pause.lane == lane for pause in self.pauses):
            self.decisions[lane].append(_LaneDecision(t, strategy, reason, model))
        for close in self.closes:
            if close.model == model and close.routed_s is None:
                close.routed_s = t

    def summary(self, end_s: float, episodes: list[_Episode]) -> dict[str, Any]:
        since = min((pause.from_s for pause in self.pauses), default=end_s)
        return {
            "follow_s": self.follow_s,
            "pauses": [self._pause(pause, end_s) for pause in self.pauses],
            "closes": [
                {
                    "model": c.model,
                    "at_s": c.at_s,
                    "replica": c.replica,
                    "state_before": c.state,
                    "reopens_in_s": round(c.reopens_in_s, 3),
                    "changed": c.changed,
                    "routed_again_s": None if c.routed_s is None else round(c.routed_s - c.at_s, 3),
                }
                for c in self.closes
            ],
            # From the first pause on: what an unstable router would show.
            "since_first_pause_s": since,
            "router_unstable_entered_s": [
                e.entered_s
                for e in episodes
                if e.entered_s >= since and "router_unstable" in e.trigger.split(",")
            ],
            "overall_states": dict(sorted(Counter(state for t, state in self.overall if t >= since).items())),
        }

    def _pause(self, pause: Pause, end_s: float) -> dict[str, Any]:
        """The lane's decisions while every replica had the pause, in the grace it took them to
        follow, and after the resume (every replica following it) until its next pause."""
        to_s = end_s if pause.to_s is None else pause.to_s
        pinned_from = pause.from_s + self.follow_s
        decisions = self.decisions[pause.lane]
        during = [d for d in decisions if pinned_from <= d.t < to_s]
        following = [d for d in decisions if pause.from_s <= d.t < pinned_from]
        missed = [d for d in during if not d.pinned]
        return {
            "lane": pause.lane,
            "paused_at_s": pause.from_s,
            "resumed_at_s": pause.to_s,
            "pinned_from_s": pinned_from,
            "decisions": len(during),
            "pinned": len(during) - len(missed),
            "models": dict(Counter(d.model for d in during).most_common()),
            "not_pinned_first": [dataclasses.asdict(d) for d in missed[:FIRST_MISSES]],
            "following": {"decisions": len(following), "pinned": sum(d.pinned for d in following)},
            "after_resume": None if pause.to_s is None else self._after(pause, end_s),
        }

    def _after(self, pause: Pause, end_s: float) -> dict[str, Any]:
        assert pause.to_s is not None
        from_s = pause.to_s + self.follow_s
        later = [p.from_s for p in self.pauses if p.lane == pause.lane and p.from_s >= pause.to_s]
        to_s = min(later, default=end_s)
        after = [d for d in self.decisions[pause.lane] if from_s <= d.t < to_s]
        return {
            "from_s": from_s,
            "to_s": to_s,
            "decisions": len(after),
            "lane_paused": sum(d.reason == "lane_paused" for d in after),
        }


@dataclass
class Collector:
    scenario: Scenario
    open_s: float  # the breakers' open time, for the outage figures
    decisions_by_strategy: Counter[str] = field(default_factory=Counter)
    decisions_by_reason: Counter[str] = field(default_factory=Counter)
    decisions_by_model: Counter[str] = field(default_factory=Counter)
    refusals: int = 0
    route_latencies_s: list[float] = field(default_factory=list)
    route_wall_s: float = 0.0
    arrived: int = 0
    passed: int = 0
    failed: int = 0
    refused_tasks: int = 0
    attempts: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    spend_usd: float = 0.0
    # (day, scope, name) -> USD really charged, and the sum and count of estimates
    spend: defaultdict[tuple[int, str, str], float] = field(default_factory=lambda: defaultdict(float))
    estimates: defaultdict[tuple[str, str], list[float]] = field(
        default_factory=lambda: defaultdict(lambda: [0.0, 0])
    )
    # From the configs the simulator itself wrote, not from what the service says: the limit in force
    # per budget now, the spend a limit started from when it was lowered below it that day, and per
    # budget the worst overspend seen (with that day's spend and limit).
    limits: dict[tuple[str, str], float] = field(default_factory=dict)
    ever_limited: dict[tuple[str, str], float] = field(default_factory=dict)
    floors: dict[tuple[int, str, str], float] = field(default_factory=dict)
    worst: dict[tuple[str, str], tuple[float, float, float]] = field(default_factory=dict)
    peak_committed: defaultdict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    service_spent: dict[tuple[str, str], float] = field(default_factory=dict)
    episodes: list[_Episode] = field(default_factory=list)
    stop_loss_s: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    openings: Counter[str] = field(default_factory=Counter)  # banked over restarts
    _live_openings: dict[str, int] = field(default_factory=dict)
    samples: list[_Sample] = field(default_factory=list)
    # decisions, static, passed, finished, strong, weak at the last sample
    _last_sample: tuple[int, ...] = (0, 0, 0, 0, 0, 0)
    _static: int = 0
    _decisions: int = 0
    strong_or_weak: Counter[str] = field(default_factory=Counter)  # strong, weak, exploring, learned
    kinds: defaultdict[str, _Kind] = field(default_factory=lambda: defaultdict(_Kind))
    # per outage fault: times of decisions routed into it, first healthy answer after it ended
    into_outage: defaultdict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    recovered: dict[int, tuple[float, float]] = field(default_factory=dict)  # (at, that call's latency)
    events: list[dict[str, Any]] = field(default_factory=list)
    intrusions: list[Intrusion] = field(default_factory=list)
    access: dict[str, Any] = field(default_factory=dict)  # the credentials the run made, when any
    booked_usd: float | None = None  # the service's books at the end (runs with intruders)
    replicas: Replicated | None = None  # with [service] replicas of 2 or more
    operated: Operated | None = None  # with [[events]] of kind operate

    # -- during the run ----------------------------------------------------------------

    def routed(
        self, t: float, decision: pb.RouteDecision, latency_s: float, outages: list[int], kind: str = ""
    ) -> None:
        strategy = _enum(decision.strategy, pb.Strategy, "STRATEGY_")
        self.decisions_by_strategy[strategy] += 1
        reason = _enum(decision.fallback_reason, pb.FallbackReason, "FALLBACK_REASON_")
        self.decisions_by_reason[reason] += 1
        self.decisions_by_model[decision.model] += 1
        if self.operated is not None:
            self.operated.routed(t, decision.lane, strategy, reason, decision.model)
        self.route_latencies_s.append(latency_s)
        self._decisions += 1
        self._static += strategy == "static_fallback"
        if decision.HasField("strong_or_weak"):
            choice = decision.strong_or_weak
            side = "strong" if choice.chose_strong else "weak"
            self.strong_or_weak[side] += 1
            self.strong_or_weak["exploring"] += choice.exploring
            self.strong_or_weak["learned"] += choice.learned
            if choice.chose_strong:
                self.kinds[kind].strong += 1
            else:
                self.kinds[kind].weak += 1
        for index in outages:
            self.into_outage[index].append(t)
        for scope, name in self._scopes(decision.lane, decision.provider):
            pair = self.estimates[(scope, name)]
            pair[0] += decision.estimated_cost_usd
            pair[1] += 1

    def refused(self, latency_s: float) -> None:
        self.refusals += 1
        self.decisions_by_strategy["refused"] += 1
        self.decisions_by_reason["budget_exhausted"] += 1
        self.route_latencies_s.append(latency_s)
        self._decisions += 1

    def budgets_in_force(self, t: float, settings: BudgetSettings) -> None:
        """The daily budgets of a config the service runs on from `t` (start, or an applied reload).
        A limit lowered below what is already spent that day cannot undo that spend: from then on,
        all further spend is over."""
        limits = {("overall", ""): settings.daily_usd}
        limits |= {("lane", name): usd for name, usd in settings.lane_daily_usd.items()}
        limits |= {("provider", name): usd for name, usd in settings.provider_daily_usd.items()}
        limits = {key: usd for key, usd in limits.items() if usd > 0}
        day = self._day(t)
        for key, usd in limits.items():
            if self.limits.get(key) != usd:
                self.floors[(day, *key)] = self.spend.get((day, *key), 0.0)
            self.ever_limited[key] = usd
        self.limits = limits

    def charged(
        self, t: float, lane: str, provider: str, result: CallResult, healed: list[int], kind: str = ""
    ) -> None:
        self.attempts += 1
        self.outcomes[result.outcome] += 1
        self.spend_usd += result.cost_usd
        self.kinds[kind].spend_usd += result.cost_usd
        day = self._day(t)
        for key in self._scopes(lane, provider):
            spent = self.spend[(day, *key)] = self.spend[(day, *key)] + result.cost_usd
            if (limit := self.limits.get(key)) is not None:
                over = spent - max(limit, self.floors.get((day, *key), 0.0))
                if key not in self.worst or over > self.worst[key][0]:
                    self.worst[key] = (over, spent, limit)
        if result.outcome == "success":
            for index in healed:
                self.recovered.setdefault(index, (t, result.latency_s))

    def finished(self, kind: str, passed: bool) -> None:
        """A task ended: its last call passed validation, or it gave up."""
        if passed:
            self.passed += 1
        else:
            self.failed += 1
        self.kinds[kind].finished += 1
        self.kinds[kind].passed += passed

    def observed(self, t: float, health: pb.HealthResponse) -> None:
        """One look at the service's Health, every stop-loss check."""
        committed = 0.0
        for b in health.budgets:
            key = (b.scope, b.name)
            self.peak_committed[key] = max(self.peak_committed[key], b.spent_usd + b.reserved_usd)
            self.service_spent[key] = b.spent_usd
            if b.scope == "overall":
                committed = b.spent_usd + b.reserved_usd
        self._live_openings = {f"{b.scope} {b.name}": b.openings for b in health.breakers}
        self._follow_stop_loss(t, health.guardrails)
        if self.operated is not None:
            self.operated.overall.append((t, health.overall.state))
        now = (
            self._decisions,
            self._static,
            self.passed,
            self.passed + self.failed,
            self.strong_or_weak["strong"],
            self.strong_or_weak["weak"],
        )
        decisions, static, passed, finished, strong, weak = (
            a - b for a, b in zip(now, self._last_sample, strict=True)
        )
        self.samples.append(
            _Sample(
                t=t,
                decisions=decisions,
                static=static,
                passed=passed,
                finished=finished,
                strong=strong,
                weak=weak,
                spend_usd=self.spend_usd,
                committed_usd=committed,
                stop_loss=health.guardrails.stop_loss_active,
                open_breakers=sum(b.state != "closed" for b in health.breakers),
            )
        )
        self._last_sample = now

    def operator_called(
        self, t: float, call: Operate, replica: int, changed: bool, circuit: tuple[str, float]
    ) -> None:
        """An operator's call the service answered; `circuit`: a closed model's circuit just before
        (its state, and the seconds until it would have let a probe through)."""
        self.events.append(
            {
                "at_s": round(t, 3),
                "event": "operate",
                "action": call.action,
                "target": call.target,
                "changed": changed,
                "replica": replica,
            }
        )
        if call.action == CLOSE_BREAKER and self.operated is not None:
            self.operated.closes.append(_Close(call.model, t, replica, *circuit, changed))

    def restarted(self, t: float) -> None:
        """The service is about to stop: breakers start closed in the next one."""
        self.openings.update(self._live_openings)
        self._live_openings = {}
        self.events.append({"at_s": round(t, 3), "event": "restart"})

    def _follow_stop_loss(self, t: float, guardrails: pb.Guardrails) -> None:
        current = self.episodes[-1] if self.episodes and self.episodes[-1].exited_s is None else None
        if current is not None:
            since = self.samples[-1].t if self.samples else 0.0
            self.stop_loss_s[current.trigger] += t - since
        if guardrails.stop_loss_active and current is None:
            self.episodes.append(_Episode(t, guardrails.trigger))
        elif not guardrails.stop_loss_active and current is not None:
            current.exited_s = t
            exits = [e for e in guardrails.events if e.kind == "exit"]
            current.exit = exits[0].trigger if exits else ""

    def _scopes(self, lane: str, provider: str) -> tuple[tuple[str, str], ...]:
        return (("overall", ""), ("lane", lane), ("provider", provider))

    def _day(self, t: float) -> int:
        return math.floor((self.scenario.start_unix + t) / DAY)

    # -- at the end ----------------------------------------------------------------------

    def summary(self, config_version: str, wall_s: float) -> dict[str, Any]:
        decisions = sum(self.decisions_by_strategy.values())
        scored = sum(self.decisions_by_strategy[s] for s in SCORED_STRATEGIES)
        finished = self.passed + self.failed
        latencies = sorted(self.route_latencies_s)
        self.openings.update(self._live_openings)
        self._live_openings = {}
        return {
            "scenario": self.scenario.name,
            "seed": self.scenario.seed,
            "duration_s": self.scenario.duration_s,
            "config_version": config_version,
            "tasks": {
                "arrived": self.arrived,
                "passed": self.passed,
                "failed": self.failed,
                "refused": self.refused_tasks,
                "unfinished": self.arrived - finished - self.refused_tasks,
                "pass_rate": _ratio(self.passed, finished),
                "cost_per_passed_task_usd": _ratio(self.spend_usd, self.passed),
                "attempts": self.attempts,
                "call_outcomes": dict(sorted(self.outcomes.items())),
            },
            "spend_usd": round(self.spend_usd, 6),
            "budgets": self._budgets(),
            "decisions": {
                "total": decisions,
                "scored_share": _ratio(scored, decisions),
                "static_share": _ratio(self.decisions_by_strategy["static_fallback"], decisions),
                "by_strategy": dict(sorted(self.decisions_by_strategy.items())),
                "by_fallback_reason": dict(sorted(self.decisions_by_reason.items())),
                "by_model": dict(self.decisions_by_model.most_common()),
                "strong_or_weak": {
                    key: self.strong_or_weak[key] for key in ("strong", "weak", "exploring", "learned")
                },
            },
            "tasks_by_kind": {
                kind: {
                    "finished": k.finished,
                    "passed": k.passed,
                    "pass_rate": _ratio(k.passed, k.finished),
                    "spend_usd": round(k.spend_usd, 6),
                    "cost_per_passed_task_usd": _ratio(k.spend_usd, k.passed),
                    "strong": k.strong,
                    "weak": k.weak,
                }
                for kind, k in sorted(self.kinds.items(), key=lambda item: self._kind_order(item[0]))
            },
            "stop_loss": {
                "time_s": round(sum(self.stop_loss_s.values()), 3),
                "share": _ratio(sum(self.stop_loss_s.values()), self.scenario.duration_s),
                "by_trigger_s": {k: round(v, 3) for k, v in sorted(self.stop_loss_s.items())},
                "episodes": [
                    {"entered_s": e.entered_s, "trigger": e.trigger, "exited_s": e.exited_s, "exit": e.exit}
                    for e in self.episodes
                ],
            },
            "breaker_openings": {k: v for k, v in sorted(self.openings.items()) if v},
            "faults": [
                {
                    "kind": f.kind,
                    "target": f.provider or f.model or "every model",
                    "start_s": f.start_s,
                    "end_s": self.scenario.duration_s if f.end_s is None else f.end_s,
                }
                for f in self.scenario.faults
            ],
            "outages": self._outages(),
            "events": self.events,
            "timeline": [
                {
                    "t": round(s.t, 3),
                    "decisions": s.decisions,
                    "static": s.static,
                    "passed": s.passed,
                    "finished": s.finished,
                    "strong": s.strong,
                    "weak": s.weak,
                    "spend_usd": round(s.spend_usd, 6),
                    "committed_usd": round(s.committed_usd, 6),
                    "stop_loss": s.stop_loss,
                    "open_breakers": s.open_breakers,
                }
                for s in self.samples
            ],
            "route_latency_ms": {
                "p50": round(_quantile(latencies, 0.50) * 1e3, 3),
                "p99": round(_quantile(latencies, 0.99) * 1e3, 3),
            },
            "decisions_per_s": round(decisions / self.route_wall_s, 1) if self.route_wall_s else 0.0,
            "wall_s": round(wall_s, 3),
            **({"access": self.access} if self.access else {}),
            **({"forgery": self._forgery()} if self.intrusions else {}),
            **({"replicas": self._replicas()} if self.replicas is not None else {}),
            **(
                {"operator": self.operated.summary(self.scenario.duration_s, self.episodes)}
                if self.operated is not None
                else {}
            ),
        }

    def _replicas(self) -> dict[str, Any]:
        assert self.replicas is not None
        final = self.replicas.final
        found = differences(final) if final else ["the replicas' views at the end were not read"]
        return self.replicas.summary(found)

    def _kind_order(self, kind: str) -> int:
        kinds = self.scenario.kinds()
        return kinds.index(kind) if kind in kinds else len(kinds)

    def _budgets(self) -> list[dict[str, Any]]:
        """Every budget any config of the run had: its worst moment, what the providers charged
        against the limit in force then; the service's own figures beside them."""
        rows = []
        for key in sorted(self.ever_limited, key=lambda k: (k[0] != "overall", k)):
            over, spent, limit = self.worst.get(key, (0.0, 0.0, self.ever_limited[key]))
            total, count = self.estimates[key]
            mean_estimate = total / count if count else 0.0
            over = max(0.0, over)
            rows.append(
                {
                    "scope": key[0],
                    "name": key[1],
                    "limit_usd": limit,  # in force at the worst moment
                    "spent_usd": round(spent, 6),  # that day, at that moment
                    "service_spent_usd": round(self.service_spent.get(key, 0.0), 6),
                    "peak_committed_usd": round(self.peak_committed[key], 6),
                    "overspend_usd": round(over, 6),
                    "overspend_estimates": round(over / mean_estimate, 3) if mean_estimate else 0.0,
                    "mean_estimate_usd": round(mean_estimate, 6),
                }
            )
        return rows

    def _forgery(self) -> dict[str, Any]:
        """Every intruder's figures, then over all of them: how their calls were answered, how many
        were taken into steering, what moved across their bursts; and the service's books at the
        end against what the providers charged (they differ by whatever forgery was booked)."""
        intruders = [intrusion.summary() for intrusion in self.intrusions]
        status = Counter(dict.fromkeys(STATUSES, 0))
        accepted: Counter[str] = Counter()
        for i in intruders:
            status.update(i["status"])
            accepted.update(i["accepted_by_call"])
        books = None
        if self.booked_usd is not None:
            books = {
                "service_usd": round(self.booked_usd, 6),
                "providers_usd": round(self.spend_usd, 6),
                "off_by_usd": round(self.booked_usd - self.spend_usd, 6),
            }
        return {
            "intruders": intruders,
            "calls": sum(i["calls"] for i in intruders),
            "status": dict(status),
            "accepted": sum(accepted.values()),
            "accepted_by_call": {call: accepted[call] for call in FORGED_CALLS if accepted[call]},
            "kept_unknown": sum(i["kept_unknown"] for i in intruders),
            "reports_booked": sum(i["reports_booked"] for i in intruders),
            "spend_moved_usd": round(sum(abs(i["spend_moved_usd"]) for i in intruders), 6),
            "budgets_moved": sorted({name for i in intruders for name in i["budgets_moved_usd"]}),
            "breakers_moved": sorted({name for i in intruders for name in i["breakers_moved"]}),
            "breakers_opened": sorted({name for i in intruders for name in i["breakers_opened"]}),
            "stop_loss_moved_by": [i["name"] for i in intruders if i["stop_loss"] != "unchanged"],
            "books": books,
        }

    def _outages(self) -> list[dict[str, Any]]:
        rows = []
        for index, fault in enumerate(self.scenario.faults):
            if not isinstance(fault, Outage):
                continue
            end = self.scenario.duration_s if fault.end_s is None else fault.end_s
            times = self.into_outage.get(index, [])
            back = self.recovered.get(index)
            rows.append(
                {
                    "fault": index,
                    "target": fault.provider or fault.model or "every model",
                    "provider_wide": not fault.model,
                    "start_s": fault.start_s,
                    "end_s": end,
                    # decisions into it that were no half-open probe, and when the last one was
                    "calls_into_outage": len(times),
                    "routed_around_s": round(times[-1] - fault.start_s, 3) if times else 0.0,
                    # the first healthy answer after it ended, and how long that call (the probe) took
                    "traffic_back_s": round(back[0] - end, 3) if back else None,
                    "probe_latency_s": round(back[1], 3) if back else None,
                }
            )
        return rows


# Window widths for figures over time: the narrowest that cuts the run into at most MAX_WINDOWS.
WINDOWS_S = (60, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400)
MAX_WINDOWS = 12


def window_s(duration_s: float) -> float:
    return next((w for w in WINDOWS_S if duration_s / w <= MAX_WINDOWS), duration_s / MAX_WINDOWS)


def versus(runs: dict[str, dict[str, Any]], baseline: str, candidate: str) -> dict[str, Any]:
    """Runs of the same traffic side by side: per run its totals and, per window of simulated time,
    pass rate and cost per passed task (of the tasks that ended in the window, the spend charged in
    it), each also to date; the candidate's change against the baseline."""
    duration = next(iter(runs.values()))["duration_s"]
    width = window_s(duration)
    count = math.ceil(duration / width - 1e-9)
    totals = {}
    for name, k in runs.items():
        tasks, choices = k["tasks"], k["decisions"]["strong_or_weak"]
        totals[name] = {
            "pass_rate": tasks["pass_rate"],
            "cost_per_passed_task_usd": tasks["cost_per_passed_task_usd"],
            "passed": tasks["passed"],
            "finished": tasks["passed"] + tasks["failed"],
            "spend_usd": k["spend_usd"],
            "strong_share": _ratio(choices["strong"], choices["strong"] + choices["weak"]),
        }
    windows = []
    for i in range(count):
        start, end = i * width, min(duration, (i + 1) * width)
        row: dict[str, Any] = {"start_s": start, "end_s": end}
        for name, k in runs.items():
            row[name] = _window(k["timeline"], start, end, last=i == count - 1)
        windows.append(row)
    base, cand = totals[baseline], totals[candidate]
    return {
        "baseline": baseline,
        "candidate": candidate,
        "totals": totals,
        # below 0: the candidate is cheaper per passed task (-0.25: a quarter cheaper)
        "cost_per_pass_change": _ratio(
            cand["cost_per_passed_task_usd"] - base["cost_per_passed_task_usd"],
            base["cost_per_passed_task_usd"],
        ),
        "pass_rate_gain": round(cand["pass_rate"] - base["pass_rate"], 6),
        "window_s": width,
        "windows": windows,
    }


def _window(samples: list[dict[str, Any]], start: float, end: float, last: bool) -> dict[str, Any]:
    """One run's figures in [start, end) of simulated time (the run's final sample, at its very end,
    belongs to its last window), and to date at `end`."""

    def inside(t: float) -> bool:
        return start <= t < end or (last and t == end)

    sums = dict.fromkeys(("passed", "finished", "strong", "weak"), 0)
    spend_before = spend_to_date = 0.0
    passed_to_date = finished_to_date = 0
    for s in samples:
        if s["t"] < start:
            spend_before = s["spend_usd"]
        if s["t"] < end or inside(s["t"]):
            spend_to_date = s["spend_usd"]
            passed_to_date += s["passed"]
            finished_to_date += s["finished"]
        if inside(s["t"]):
            for key in sums:
                sums[key] += s[key]
    spend = spend_to_date - spend_before
    return {
        **sums,
        "spend_usd": round(spend, 6),
        "pass_rate": _ratio(sums["passed"], sums["finished"]),
        "cost_per_passed_task_usd": _ratio(spend, sums["passed"]),
        "strong_share": _ratio(sums["strong"], sums["strong"] + sums["weak"]),
        "pass_rate_to_date": _ratio(passed_to_date, finished_to_date),
        "cost_per_passed_task_to_date_usd": _ratio(spend_to_date, passed_to_date),
    }


def differences(views: list[dict[str, Any]]) -> list[str]:
    """Each figure the replicas do not show alike, with every replica's value."""
    found = []
    for key in views[0]:
        values = [view[key] for view in views]
        if any(value != values[0] for value in values):
            found.append(f"{key}: " + ", ".join(f"replica {i} {value}" for i, value in enumerate(values)))
    return found


def _ratio(a: float, b: float) -> float:
    return round(a / b, 6) if b else 0.0


def _quantile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
