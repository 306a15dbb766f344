"""What each RPC does, as plain Python over core types: no grpc, no protobuf.

Route: validate, decide, record the decision, release its reservation if it cannot be delivered,
observe. Report: validate and price, write, count once durable. Scale and stop-loss: validate and
decide against one config snapshot. The edge converts messages to these calls and their results
(and exceptions) back; telemetry hears about what happened through an `Observer`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future
from typing import Protocol, TypeVar

from orxaq_grpc.application.operators import CHANGED, REFUSED, UNCHANGED, Action
from orxaq_grpc.application.outcomes import EconomicsView, HealthView, Outcomes
from orxaq_grpc.config.model import Config
from orxaq_grpc.outcomes.breakers import BREAKER_SCOPES, BreakerView
from orxaq_grpc.outcomes.records import ReportInput, ReportRecord
from orxaq_grpc.outcomes.validation import validate_report
from orxaq_grpc.routing.live import LiveRouter, Reloaded
from orxaq_grpc.routing.router import BudgetExhausted
from orxaq_grpc.routing.types import Decision, RouteRequest
from orxaq_grpc.scale.types import ScaleDecision, ScaleRequest
from orxaq_grpc.scale.validation import validate_scale_request
from orxaq_grpc.vocabulary import RequestInvalid, Violation

T = TypeVar("T")
R = TypeVar("R")
# RouteBatch decisions between two yields to the event loop (route_batch_steps): a few milliseconds.
BATCH_STEP = 100


class Observer(Protocol):
    """What the workflow tells telemetry (spans and metrics live above this layer)."""

    def routed(self, decision: Decision) -> None: ...

    def routed_batch(self, decisions: Sequence[Decision], requests: int) -> None:
        """A RouteBatch answered: `decisions` of its `requests` were decided (the rest were errors)."""
        ...

    def refused(self, refusal: BudgetExhausted) -> None: ...

    def counted_report(self, record: ReportRecord) -> None: ...

    def scaled(self, decision: ScaleDecision) -> None: ...


class Unobserved:
    """An Observer that hears nothing: no telemetry configured."""

    def routed(self, decision: Decision) -> None:
        pass

    def routed_batch(self, decisions: Sequence[Decision], requests: int) -> None:
        pass

    def refused(self, refusal: BudgetExhausted) -> None:
        pass

    def counted_report(self, record: ReportRecord) -> None:
        pass

    def scaled(self, decision: ScaleDecision) -> None:
        pass


class RoutingWorkflow:
    def __init__(self, live: LiveRouter, outcomes: Outcomes, observer: Observer | None = None) -> None:
        self.live = live
        self.outcomes = outcomes
        self.observer: Observer = observer or Unobserved()

    @property
    def config(self) -> Config:
        return self.live.current.config

    def route(self, request: RouteRequest, deliver: Callable[[Decision], T], wire: list[Violation]) -> T:
        """Decides, logs and counts; `deliver` builds the answer. Whatever keeps the answer from the
        lane after the decision reserved its cost (a failed log write, a failed conversion) frees
        that reservation. `wire` are problems the edge found decoding the request."""
        router = self.live.current  # one snapshot: a reload must not change the config mid-request
        if violations := merge_violations(wire, router.validate(request)):
            raise RequestInvalid(violations)
        try:
            decision = router.route(request, guards=self.outcomes)
        except BudgetExhausted as refusal:
            self.outcomes.record_refusal(refusal)  # a refused lane shows in economics and detection
            self.observer.refused(refusal)
            raise
        try:
            self.outcomes.record_decision(decision)
            answer = deliver(decision)
        except BaseException:
            self.outcomes.abandon([decision])  # the lane never got it: free what Route reserved
            raise
        self.observer.routed(decision)
        return answer

    def route_batch(
        self,
        requests: Sequence[tuple[RouteRequest, list[Violation]] | None],
        deliver: Callable[[Decision], T],
        answer: Callable[[list[T | Exception | None]], R],
    ) -> R:
        """Many requests (each with the problems the edge found decoding it; None for one the edge
        refused itself), each answered on its own: per request, in order, `deliver(decision)`, or the
        exception `route` would have raised for it alone (RequestInvalid, BudgetExhausted, StoreError,
        ...), or None; `answer` makes the reply of that list. Valid requests are decided against one
        config snapshot and logged, counted and observed as single Routes are; if `answer` fails,
        every decision's reservation is freed. The batch itself is refused (RequestInvalid naming
        `requests`) only when it is empty or over the policy's limits.max_batch_items."""
        steps = self.route_batch_steps(requests, deliver, answer)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                reply: R = done.value
                return reply

    def route_batch_steps(
        self,
        requests: Sequence[tuple[RouteRequest, list[Violation]] | None],
        deliver: Callable[[Decision], T],
        answer: Callable[[list[T | Exception | None]], R],
        every: int = BATCH_STEP,
    ) -> Generator[None, None, R]:
        """`route_batch` in steps: it yields after every `every` requests prepared and every `every`
        decisions, so an event loop can serve other calls in between (a batch's own snapshot and the
        guards it follows keep its decisions as they would be), and returns the reply. Closing it
        before the end frees every reservation its decisions made, as a failed `answer` does."""
        router = self.live.current  # one snapshot for the whole batch: a reload must not mix configs
        if problem := batch_size_problem(len(requests), router.config.policy.limits.max_batch_items):
            raise RequestInvalid([Violation("requests", problem)])
        answers: list[T | Exception | None] = [None] * len(requests)  # each filled below
        valid: list[int] = []
        routed: list[RouteRequest] = []
        for position, item in enumerate(requests):
            if item is None:
                continue
            request, wire = item
            if violations := merge_violations(wire, router.validate(request)):
                answers[position] = RequestInvalid(violations)
            else:
                valid.append(position)
                routed.append(request)
        decided: list[Decision] = []
        try:
            # Lazily: each decision is recorded (a half-open circuit's probe taken) before the next.
            positions = iter(valid)
            answered = 0
            for outcome in router.route_batch(routed, self.outcomes, pause_every=every):
                if outcome is None:  # a step of preparing the requests done
                    yield
                    continue
                answers[next(positions)] = self._answer(outcome, deliver, decided)
                answered += 1
                if answered % every == 0:
                    yield
            reply = answer(answers)
        except BaseException:
            self.outcomes.abandon(decided)  # the lane will never get them: free what they reserved
            raise
        self.observer.routed_batch(decided, len(requests))
        return reply

    def _answer(
        self, outcome: Decision | Exception, deliver: Callable[[Decision], T], decided: list[Decision]
    ) -> T | Exception:
        """One batch item's answer, logged and counted as `route` does."""
        if isinstance(outcome, BudgetExhausted):
            try:
                self.outcomes.record_refusal(outcome)
            except Exception as exc:  # the ledger refused: this item fails as a single Route would
                return exc
            self.observer.refused(outcome)
            return outcome
        if isinstance(outcome, Exception):
            return outcome
        try:
            self.outcomes.record_decision(outcome)
            answer = deliver(outcome)
        except Exception as exc:
            self.outcomes.abandon([outcome])
            return exc
        decided.append(outcome)
        return answer

    def prepare_report(self, report: ReportInput, wire: list[Violation]) -> ReportRecord:
        """Validates, stamps and prices a report; changes nothing yet."""
        if violations := merge_violations(wire, validate_report(report, self.config)):
            raise RequestInvalid(violations)
        return self.outcomes.prepare_report(report)

    def write_report(self, record: ReportRecord) -> Future[bool]:
        """Resolves True once durable and new, False for a decision already reported."""
        return self.outcomes.write_report(record)

    def count_report(self, record: ReportRecord) -> None:
        """A durable, new report: into economics, budgets and breakers, and telemetry."""
        self.outcomes.apply_report(record)
        self.observer.counted_report(record)

    def scale(self, request: ScaleRequest) -> tuple[ScaleDecision, Future[bool]]:
        """Decides and queues the decision for the log; answer once the future says it is durable."""
        config = self.config  # one snapshot: a reload must not move a group under it
        if violations := validate_scale_request(request, config):
            raise RequestInvalid(violations)
        return self.outcomes.guardrails.scale(request, config)

    def scaled(self, decision: ScaleDecision) -> None:
        """A Scale decision is durable and answered."""
        self.observer.scaled(decision)

    def set_stop_loss(self, active: bool, note: str, who: str = "") -> bool:
        """An operator's call; True when the state changed (it is in the log by then, with who)."""
        self._check_note(note, required=False)
        changed = self.outcomes.guardrails.set_stop_loss(active, note) is not None
        action = Action.STOP_LOSS_ENTER if active else Action.STOP_LOSS_EXIT
        self.outcomes.operators.record(who, action, "", note, CHANGED if changed else UNCHANGED)
        return changed

    def reload_config(self, note: str, who: str = "") -> Reloaded:
        """An operator's reload of the config directory, logged with its outcome."""
        self._check_note(note)
        reloaded = self.live.reload()
        outcome = reloaded.version if reloaded else REFUSED + reloaded.refusal
        self.outcomes.operators.record(who, Action.RELOAD_CONFIG, "", note, outcome)
        return reloaded

    def close_breaker(
        self, scope: str, name: str, note: str, who: str = ""
    ) -> tuple[bool, BreakerView | None]:
        """An operator closes a circuit: whether that changed it, and its state after (None: it has
        seen no report)."""
        config = self.config
        violations = self._note_violations(note)
        if scope not in BREAKER_SCOPES:
            violations.append(Violation("scope", f"is {scope!r}; one of {', '.join(BREAKER_SCOPES)}"))
        elif not name:
            violations.append(Violation("name", "is empty; a model or provider of the catalog"))
        elif name not in {m.id if scope == "model" else m.provider for m in config.models}:
            violations.append(Violation("name", f"no {scope} {name!r} in the catalog"))
        if violations:
            raise RequestInvalid(violations)
        changed = self.outcomes.operators.close_breaker(who, scope, name, note)
        return changed, self.outcomes.breakers.view_of(scope, name)

    def pause_lane(self, lane: str, paused: bool, note: str, who: str = "") -> bool:
        """An operator pauses a lane (its static chain) or resumes it; True when that changed."""
        violations = self._note_violations(note)
        if lane not in self.config.lanes:
            violations.insert(0, Violation("lane", f"no lane {lane!r} in the config"))
        if violations:
            raise RequestInvalid(violations)
        return self.outcomes.operators.pause_lane(who, lane, paused, note)

    def _check_note(self, note: str, required: bool = True) -> None:
        if violations := self._note_violations(note, required):
            raise RequestInvalid(violations)

    def _note_violations(self, note: str, required: bool = True) -> list[Violation]:
        """An operator's note says why, for the ledger: bounded like a task title."""
        limit = self.config.policy.limits.max_title_chars
        if len(note) > limit:
            return [Violation("note", f"is {len(note)} characters; at most {limit}")]
        if required and not note.strip():
            return [Violation("note", "is empty; say why, for the ledger")]
        return []

    def economics(self) -> EconomicsView:
        return self.outcomes.economics()

    def health(self) -> HealthView:
        return self.outcomes.health()


def batch_size_problem(count: int, limit: int) -> str | None:
    """What is wrong with a batch of `count` requests under a limit of `limit`, if anything."""
    if count == 0:
        return "has no requests; at least 1"
    if count > limit:
        return f"has {count} requests; at most {limit}"
    return None


def merge_violations(wire: list[Violation], core: list[Violation]) -> list[Violation]:
    """Wire problems (an enum number nobody knows) first; the core's view of the same field, which
    saw it as unset, adds nothing."""
    seen = {v.field for v in wire}
    return wire + [v for v in core if v.field not in seen]
