"""What an operator wants to know after a simulated run, gathered as it goes.

Spend is counted twice: what the simulated providers really charged (the truth), and what the
service says it settled and holds in reservations (its Health). Budgets are judged on the truth.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.config.model import BudgetSettings
from orxaq_grpc.outcomes.economics import DAY
from orxaq_grpc.simulate.scenario import Outage, Scenario
from orxaq_grpc.simulate.truth import CallResult

SCORED_STRATEGIES = ("scored", "strong_or_weak", "requested")


def _enum(value: int, enum: Any, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix).lower()


@dataclass
class _Episode:
    entered_s: float
    trigger: str
    exited_s: float | None = None
    exit: str = ""  # "cool_off" or "operator"


@dataclass
class _Sample:
    t: float
    decisions: int
    static: int
    passed: int
    finished: int
    spend_usd: float
    committed_usd: float  # the overall budget's settled + reserved, as the service says
    stop_loss: bool
    open_breakers: int


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
    _last_sample: tuple[int, int, int, int] = (0, 0, 0, 0)  # decisions, static, passed, finished
    _static: int = 0
    _decisions: int = 0
    # per outage fault: times of decisions routed into it, first healthy answer after it ended
    into_outage: defaultdict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    recovered: dict[int, tuple[float, float]] = field(default_factory=dict)  # (at, that call's latency)
    events: list[dict[str, Any]] = field(default_factory=list)

    # -- during the run ----------------------------------------------------------------

    def routed(self, t: float, decision: pb.RouteDecision, latency_s: float, outages: list[int]) -> None:
        strategy = _enum(decision.strategy, pb.Strategy, "STRATEGY_")
        self.decisions_by_strategy[strategy] += 1
        self.decisions_by_reason[_enum(decision.fallback_reason, pb.FallbackReason, "FALLBACK_REASON_")] += 1
        self.decisions_by_model[decision.model] += 1
        self.route_latencies_s.append(latency_s)
        self._decisions += 1
        self._static += strategy == "static_fallback"
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

    def charged(self, t: float, lane: str, provider: str, result: CallResult, healed: list[int]) -> None:
        self.attempts += 1
        self.outcomes[result.outcome] += 1
        self.spend_usd += result.cost_usd
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
        last_decisions, last_static, last_passed, last_finished = self._last_sample
        self.samples.append(
            _Sample(
                t=t,
                decisions=self._decisions - last_decisions,
                static=self._static - last_static,
                passed=self.passed - last_passed,
                finished=self.passed + self.failed - last_finished,
                spend_usd=self.spend_usd,
                committed_usd=committed,
                stop_loss=health.guardrails.stop_loss_active,
                open_breakers=sum(b.state != "closed" for b in health.breakers),
            )
        )
        self._last_sample = (self._decisions, self._static, self.passed, self.passed + self.failed)

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
        }

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


def _ratio(a: float, b: float) -> float:
    return round(a / b, 6) if b else 0.0


def _quantile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
