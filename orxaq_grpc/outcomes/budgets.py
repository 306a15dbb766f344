"""Daily USD budgets (UTC days) overall, per lane and per provider, with reservations.

Route reserves a decision's estimated cost, the lane's Report settles it with the actual cost, and
reservations never reported expire after `reservation_ttl_s`. `try_reserve` checks and books under one
lock, so concurrent Routes cannot together overrun a budget. `update` applies reloaded settings at once;
`reserve(..., at=)` restores a reservation from the ledger on start. Plain Python, thread-safe.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from orxaq_grpc.config.model import BudgetSettings

DAY_S = 86400
SLACK_USD = 1e-9  # float sums drift; an exact fit must still fit

log = logging.getLogger(__name__)

ScopeKey = tuple[str, str]  # (kind, name): ("overall", ""), ("lane", "codex"), ("provider", "openai")


@dataclass(frozen=True, slots=True)
class BudgetView:
    """One budget as Health shows it."""

    scope: str  # "overall" | "lane" | "provider"
    name: str  # empty for overall
    limit_usd: float
    spent_usd: float
    reserved_usd: float
    used_share: float  # (spent + reserved) / limit
    warning: bool  # used_share >= warn_at
    exhausted: bool  # nothing left


@dataclass(frozen=True, slots=True)
class _Reservation:
    lane: str
    provider: str
    usd: float
    at: float


class _Scope:
    """One budget: today's spend and the open reservations that count against it."""

    def __init__(self, kind: str, name: str, limit: float) -> None:
        self.kind, self.name, self.limit = kind, name, limit
        self.spent = 0.0
        self.reserved = 0.0
        self.open_reservations = 0  # at zero, `reserved` is reset so float drift cannot pile up

    @property
    def remaining(self) -> float:
        return max(0.0, self.limit - self.spent - self.reserved)

    def book(self, usd: float) -> None:
        self.reserved += usd
        self.open_reservations += 1

    def release(self, usd: float) -> None:
        self.open_reservations -= 1
        self.reserved = self.reserved - usd if self.open_reservations else 0.0

    def view(self, warn_at: float) -> BudgetView:
        return budget_view((self.kind, self.name), self.limit, self.spent, self.reserved, warn_at)


def budget_view(scope: ScopeKey, limit: float, spent: float, reserved: float, warn_at: float) -> BudgetView:
    share = (spent + reserved) / limit
    return BudgetView(
        scope=scope[0],
        name=scope[1],
        limit_usd=limit,
        spent_usd=spent,
        reserved_usd=reserved,
        used_share=share,
        warning=share >= warn_at,
        exhausted=limit - spent - reserved <= 0,
    )


class BudgetBook(Protocol):
    """What routing, reports and guardrails ask of the budgets, whoever keeps them: this process
    (`Budgets`) or every replica together (`shared.SharedBudgets`)."""

    any: bool  # some budget is configured: with none, nothing is tracked
    shared: bool  # kept with other replicas: a replayed ledger's spend is theirs too (see `seed`)

    def update(self, settings: BudgetSettings, note: str = "") -> None: ...
    def headroom(self, lane: str) -> tuple[float, dict[str, float]]: ...
    def try_reserve(self, decision_id: str, lane: str, provider: str, usd: float) -> bool: ...
    def reserve(
        self, decision_id: str, lane: str, provider: str, usd: float, at: float | None = None
    ) -> None: ...
    def settle(
        self, decision_id: str, lane: str, provider: str, actual_usd: float, at: float | None = None
    ) -> None: ...
    def release(self, decision_id: str) -> None: ...
    def expire(self) -> int: ...
    def views(self) -> list[BudgetView]: ...
    def seed(self, spent_today: Mapping[ScopeKey, float]) -> bool:
        """Today's spend as a replayed ledger shows it, for budgets that did not settle the replay;
        True when taken."""
        ...


class Budgets:
    """Every configured budget, behind one lock. With no budget anywhere nothing is tracked at all."""

    shared = False  # a replayed ledger settles into it like live reports

    def __init__(self, settings: BudgetSettings, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._reservations: dict[str, _Reservation] = {}  # insertion order is (nearly) age order
        # Today's settled spend per scope, budgeted or not, so a budget a reload adds starts from it
        # (kept here, under this lock, a report cannot slip between reading it and the update).
        self._spent_today: dict[ScopeKey, float] = {}
        self._day = day_of(clock())
        self._configure(settings)

    def _configure(self, settings: BudgetSettings) -> None:
        self._settings = settings
        self._overall = _Scope("overall", "", settings.daily_usd) if settings.daily_usd > 0 else None
        self._lanes = _scopes("lane", settings.lane_daily_usd)
        self._providers = _scopes("provider", settings.provider_daily_usd)
        # With no budget anywhere (the default) every call is a no-op: Route pays nothing for them.
        # Mutable: `update` may add the first budget or remove the last; read unlocked on the fast path.
        self.any = self._overall is not None or bool(self._lanes) or bool(self._providers)

    def update(self, settings: BudgetSettings, note: str = "") -> None:
        """Applies reloaded settings at once: limits, reservation_ttl_s and warn_at (on_exhausted is
        the router's, which follows the reload itself).

        The scopes are rebuilt from `settings` (0 means no budget), each starting from today's
        settled spend for it, which is tracked whether budgeted or not. Every open reservation is
        booked again into the new scopes, so a
        lowered limit refuses the next `try_reserve`. One WARNING line per changed limit, with `note`
        (e.g. "config a1b2 -> c3d4") appended; nothing when no limit changed.

        Caveats: reservations made while no budget at all was configured were not tracked, so they
        cannot count against a budget added later (today's settled spend does).
        """
        with self._lock:
            now = self._clock()
            self._sync(now)
            before = {(s.kind, s.name): s for s in self._all_scopes()}
            reservations, self._reservations = self._reservations, {}
            self._configure(settings)
            for scope in self._all_scopes():
                scope.spent = self._spent_today.get((scope.kind, scope.name), 0.0)
            if self.any:  # with no budget left, nothing settles them: keeping them would only go stale
                for decision_id, reservation in reservations.items():
                    self._book(decision_id, reservation)
                self._expire(now)
            after = {(s.kind, s.name): s.limit for s in self._all_scopes()}
        log_limit_changes({key: scope.limit for key, scope in before.items()}, after, note)

    def headroom(self, lane: str) -> tuple[float, dict[str, float]]:
        """What this lane may still spend: min(overall, lane) remaining, and each budgeted provider's."""
        if not self.any:
            return math.inf, {}
        with self._lock:
            self._sync(self._clock())
            left = min((s.remaining for s in self._lane_scopes(lane)), default=math.inf)
            return left, {name: scope.remaining for name, scope in self._providers.items()}

    def try_reserve(self, decision_id: str, lane: str, provider: str, usd: float) -> bool:
        """Reserves usd if it fits every budget that applies; otherwise reserves nothing, False.

        A decision id reserved again replaces its earlier reservation (if the new one fits).
        """
        if not self.any:
            return True
        with self._lock:
            now = self._clock()
            self._sync(now)
            earlier = self._unbook(decision_id)
            scopes = list(self._applicable(lane, provider))
            if all(usd <= s.remaining + SLACK_USD for s in scopes):
                self._book(decision_id, _Reservation(lane, provider, usd, now))
                return True
            if earlier is not None:
                self._book(decision_id, earlier)
            return False

    def reserve(
        self, decision_id: str, lane: str, provider: str, usd: float, at: float | None = None
    ) -> None:
        """Reserves usd even past a budget: a static fallback the lane may still run.

        `at` (default now) is when it was reserved: one restored from the ledger on start passes its
        decision's time, so it still expires reservation_ttl_s after the decision, not the restart.
        """
        if not self.any:
            return
        with self._lock:
            now = self._clock()
            self._sync(now)
            self._unbook(decision_id)
            self._book(decision_id, _Reservation(lane, provider, usd, now if at is None else at))

    def settle(
        self, decision_id: str, lane: str, provider: str, actual_usd: float, at: float | None = None
    ) -> None:
        """Replaces the decision's reservation (if still open) with its actual cost.

        The cost counts against the UTC day of `at` (default now) and only today is kept, so a ledger
        replayed on start adds nothing from earlier days.
        """
        with self._lock:
            now = self._clock()
            self._sync(now)
            self._unbook(decision_id)
            if day_of(now if at is None else at) < self._day:
                return
            for key in (("overall", ""), ("lane", lane), ("provider", provider)):
                self._spent_today[key] = self._spent_today.get(key, 0.0) + actual_usd
            for scope in self._applicable(lane, provider):
                scope.spent += actual_usd

    def release(self, decision_id: str) -> None:
        """Drops a decision's open reservation, if any: it was refused after all."""
        with self._lock:
            self._unbook(decision_id)

    def expire(self) -> int:
        """Drops reservations older than reservation_ttl_s; returns how many."""
        with self._lock:
            return self._expire(self._clock())

    def seed(self, spent_today: Mapping[ScopeKey, float]) -> bool:
        """Nothing to do: the replay settled every report here."""
        return False

    def open_reservations(self) -> dict[str, tuple[str, str, float, float]]:
        """Every open reservation: decision id -> (lane, provider, USD, when reserved)."""
        with self._lock:
            return {i: (r.lane, r.provider, r.usd, r.at) for i, r in self._reservations.items()}

    def views(self) -> list[BudgetView]:
        """Every configured budget: overall, then lanes and providers by name."""
        with self._lock:
            self._sync(self._clock())
            scopes = [self._overall] if self._overall else []
            scopes += [self._lanes[name] for name in sorted(self._lanes)]
            scopes += [self._providers[name] for name in sorted(self._providers)]
            return [scope.view(self._settings.warn_at) for scope in scopes]

    def _sync(self, now: float) -> None:
        """Starts a new day's spend at UTC midnight and drops expired reservations."""
        today = day_of(now)
        if today > self._day:  # never back: a clock step back must not forget today's spend
            self._day = today
            self._spent_today.clear()
            for scope in self._all_scopes():
                scope.spent = 0.0
        self._expire(now)

    def _expire(self, now: float) -> int:
        expired = 0
        cutoff = now - self._settings.reservation_ttl_s
        while self._reservations:
            decision_id, reservation = next(iter(self._reservations.items()))
            if reservation.at > cutoff:
                break
            self._unbook(decision_id)
            expired += 1
        return expired

    def _book(self, decision_id: str, reservation: _Reservation) -> None:
        """Books against every budget that applies. Kept even when none does (while any budget is
        configured), so a budget that `update` adds for its lane or provider counts it too."""
        if not self.any:  # `update` removed the last budget since the caller looked
            return
        self._reservations[decision_id] = reservation
        for scope in self._applicable(reservation.lane, reservation.provider):
            scope.book(reservation.usd)

    def _unbook(self, decision_id: str) -> _Reservation | None:
        reservation = self._reservations.pop(decision_id, None)
        if reservation is not None:
            for scope in self._applicable(reservation.lane, reservation.provider):
                scope.release(reservation.usd)
        return reservation

    def _lane_scopes(self, lane: str) -> Iterator[_Scope]:
        if self._overall:
            yield self._overall
        if lane in self._lanes:
            yield self._lanes[lane]

    def _applicable(self, lane: str, provider: str) -> Iterator[_Scope]:
        yield from self._lane_scopes(lane)
        if provider in self._providers:
            yield self._providers[provider]

    def _all_scopes(self) -> Iterator[_Scope]:
        if self._overall:
            yield self._overall
        yield from self._lanes.values()
        yield from self._providers.values()


def limits_of(settings: BudgetSettings) -> dict[ScopeKey, float]:
    """Every budget the settings configure (0 means none), by scope."""
    limits: dict[ScopeKey, float] = {}
    if settings.daily_usd > 0:
        limits["overall", ""] = settings.daily_usd
    limits.update({("lane", name): usd for name, usd in settings.lane_daily_usd.items() if usd > 0})
    limits.update({("provider", name): usd for name, usd in settings.provider_daily_usd.items() if usd > 0})
    return limits


def log_limit_changes(before: dict[ScopeKey, float], after: dict[ScopeKey, float], note: str) -> None:
    """One WARNING line per budget whose daily limit a reload changed, with `note` appended."""
    suffix = f" ({note})" if note else ""
    for kind, name in sorted(before.keys() | after.keys(), key=_scope_order):
        old, new = before.get((kind, name), 0.0), after.get((kind, name), 0.0)
        if old != new:
            label = f"{kind} {name}".strip()
            log.warning("budget %s: daily limit %s -> %s%s", label, _usd(old), _usd(new), suffix)


def _scopes(kind: str, limits: dict[str, float]) -> dict[str, _Scope]:
    """A scope per name with a positive limit; 0 means no budget."""
    return {name: _Scope(kind, name, limit) for name, limit in limits.items() if limit > 0}


def _scope_order(key: ScopeKey) -> tuple[int, str]:
    """Overall, then lanes, then providers, by name: the order of `views`."""
    return ("overall", "lane", "provider").index(key[0]), key[1]


def _usd(limit: float) -> str:
    if limit <= 0:
        return "none"
    return f"${limit:,.2f}" if round(limit, 2) == limit else f"${limit:,.6g}"


def day_of(unix_s: float) -> int:
    """The UTC day number: unix time has no leap seconds, so days are exactly DAY_S long."""
    return math.floor(unix_s / DAY_S)
