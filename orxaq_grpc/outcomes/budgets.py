"""Daily USD budgets (UTC days) overall, per lane and per provider, with reservations.

Route reserves a decision's estimated cost, the lane's Report settles it with the actual cost, and
reservations never reported expire after `reservation_ttl_s`. `try_reserve` checks and books under one
lock, so concurrent Routes cannot together overrun a budget. Plain Python, thread-safe.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from orxaq_grpc.config.model import BudgetSettings

DAY_S = 86400
SLACK_USD = 1e-9  # float sums drift; an exact fit must still fit


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
        share = (self.spent + self.reserved) / self.limit
        return BudgetView(
            scope=self.kind,
            name=self.name,
            limit_usd=self.limit,
            spent_usd=self.spent,
            reserved_usd=self.reserved,
            used_share=share,
            warning=share >= warn_at,
            exhausted=self.remaining <= 0,
        )


class Budgets:
    """Every configured budget, behind one lock. Scopes without a budget are not tracked at all."""

    def __init__(self, settings: BudgetSettings, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._overall = _Scope("overall", "", settings.daily_usd) if settings.daily_usd > 0 else None
        self._lanes = _scopes("lane", settings.lane_daily_usd)
        self._providers = _scopes("provider", settings.provider_daily_usd)
        self._reservations: dict[str, _Reservation] = {}  # insertion order is (nearly) age order
        self._day = _day_of(clock())
        # With no budget anywhere (the default) every call is a no-op: Route pays nothing for them.
        self.any = self._overall is not None or bool(self._lanes) or bool(self._providers)

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

    def reserve(self, decision_id: str, lane: str, provider: str, usd: float) -> None:
        """Reserves usd even past a budget: a static fallback the lane may still run."""
        if not self.any:
            return
        with self._lock:
            now = self._clock()
            self._sync(now)
            self._unbook(decision_id)
            self._book(decision_id, _Reservation(lane, provider, usd, now))

    def settle(
        self, decision_id: str, lane: str, provider: str, actual_usd: float, at: float | None = None
    ) -> None:
        """Replaces the decision's reservation (if still open) with its actual cost.

        The cost counts against the UTC day of `at` (default now) and only today is kept, so a ledger
        replayed on start adds nothing from earlier days.
        """
        if not self.any:
            return
        with self._lock:
            now = self._clock()
            self._sync(now)
            self._unbook(decision_id)
            if _day_of(now if at is None else at) < self._day:
                return
            for scope in self._applicable(lane, provider):
                scope.spent += actual_usd

    def expire(self) -> int:
        """Drops reservations older than reservation_ttl_s; returns how many."""
        with self._lock:
            return self._expire(self._clock())

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
        today = _day_of(now)
        if today > self._day:  # never back: a clock step back must not forget today's spend
            self._day = today
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
        """Books against every budget that applies; with none, there is nothing to keep."""
        scopes = list(self._applicable(reservation.lane, reservation.provider))
        if scopes:
            self._reservations[decision_id] = reservation
        for scope in scopes:
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


def _scopes(kind: str, limits: dict[str, float]) -> dict[str, _Scope]:
    """A scope per name with a positive limit; 0 means no budget."""
    return {name: _Scope(kind, name, limit) for name, limit in limits.items() if limit > 0}


def _day_of(unix_s: float) -> int:
    """The UTC day number: unix time has no leap seconds, so days are exactly DAY_S long."""
    return math.floor(unix_s / DAY_S)
