"""Daily budgets with reservations, on a fake clock (and real threads for the race)."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import math
import random
import sys
import threading

import pytest

from orxaq_grpc.config.model import BudgetSettings
from orxaq_grpc.outcomes.budgets import Budgets, BudgetView
from tests.conftest import FakeClock

NOON = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC).timestamp()
MIDNIGHT = dt.datetime(2026, 3, 11, tzinfo=dt.UTC).timestamp()
SETTINGS = BudgetSettings(
    daily_usd=10.0,
    lane_daily_usd={"codex": 4.0, "gemini": 0.0},  # 0: no budget for gemini
    provider_daily_usd={"openai": 3.0},
    reservation_ttl_s=600.0,
    warn_at=0.8,
    on_exhausted="static_fallback",
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOON)


@pytest.fixture
def budgets(clock: FakeClock) -> Budgets:
    return Budgets(SETTINGS, clock=clock)


def test_headroom_is_the_min_of_overall_and_lane_with_providers_apart(budgets: Budgets) -> None:
    assert budgets.headroom("codex") == (4.0, {"openai": 3.0})
    assert budgets.headroom("claude") == (10.0, {"openai": 3.0})  # no lane budget: overall
    budgets.reserve("d1", "claude", "anthropic", 7.0)
    assert budgets.headroom("codex") == (3.0, {"openai": 3.0})  # overall is now the tighter
    budgets.settle("d2", "codex", "openai", 1.0)
    assert budgets.headroom("codex") == (2.0, {"openai": 2.0})
    assert budgets.headroom("gemini") == (2.0, {"openai": 2.0})


def test_unlimited_scopes(clock: FakeClock) -> None:
    budgets = Budgets(
        dataclasses.replace(SETTINGS, daily_usd=0.0, lane_daily_usd={}, provider_daily_usd={}), clock
    )
    assert budgets.try_reserve("d1", "codex", "openai", 1e9) is True
    budgets.settle("d1", "codex", "openai", 1e9)
    assert budgets.headroom("codex") == (math.inf, {})
    assert budgets.views() == []


def test_try_reserve_refuses_what_does_not_fit_and_reserves_nothing(budgets: Budgets) -> None:
    assert budgets.try_reserve("d1", "codex", "anthropic", 4.5) is False  # lane: 4
    assert budgets.try_reserve("d2", "claude", "openai", 3.5) is False  # provider: 3
    assert budgets.headroom("codex") == (4.0, {"openai": 3.0})
    assert budgets.try_reserve("d3", "codex", "anthropic", 4.0) is True  # an exact fit fits
    assert budgets.try_reserve("d4", "codex", "anthropic", 0.01) is False
    assert budgets.headroom("claude") == (6.0, {"openai": 3.0})


def test_try_reserve_again_replaces_the_decisions_reservation(budgets: Budgets) -> None:
    assert budgets.try_reserve("d1", "codex", "openai", 2.0) is True
    assert budgets.try_reserve("d1", "codex", "openai", 2.5) is True
    assert budgets.headroom("codex") == (1.5, {"openai": 0.5})
    assert budgets.try_reserve("d1", "codex", "openai", 3.5) is False  # keeps the 2.5
    assert budgets.headroom("codex") == (1.5, {"openai": 0.5})


def test_settle_replaces_the_reservation_with_the_actual_cost_once(budgets: Budgets) -> None:
    budgets.reserve("d1", "codex", "openai", 1.0)
    budgets.reserve("d2", "codex", "openai", 0.5)
    budgets.settle("d1", "codex", "openai", 0.25)
    budgets.settle("d1", "codex", "openai", 0.25)  # releases nothing more; the cost counts again
    view = budgets.views()[1]
    assert (view.scope, view.name, view.spent_usd, view.reserved_usd) == ("lane", "codex", 0.5, 0.5)


def test_settle_for_an_unknown_decision_adds_spend(budgets: Budgets) -> None:
    budgets.settle("never-routed", "codex", "openai", 0.75)
    assert budgets.headroom("codex") == (3.25, {"openai": 2.25})


def test_reservations_expire_after_the_ttl(budgets: Budgets, clock: FakeClock) -> None:
    budgets.reserve("d1", "codex", "openai", 1.0)
    clock.now += 300.0
    budgets.reserve("d2", "codex", "openai", 1.0)
    clock.now = NOON + SETTINGS.reservation_ttl_s - 0.1
    assert budgets.expire() == 0
    clock.now = NOON + SETTINGS.reservation_ttl_s
    assert budgets.headroom("codex") == (3.0, {"openai": 2.0})  # d1 expired lazily
    assert budgets.expire() == 0
    clock.now += 300.0
    assert budgets.expire() == 1
    assert budgets.headroom("codex") == (4.0, {"openai": 3.0})
    budgets.settle("d1", "codex", "openai", 0.5)  # a late report still counts its cost
    assert budgets.headroom("codex") == (3.5, {"openai": 2.5})


def test_utc_midnight_resets_spend_but_keeps_open_reservations(clock: FakeClock) -> None:
    clock.now = MIDNIGHT - 60.0
    budgets = Budgets(SETTINGS, clock)
    budgets.settle("d1", "codex", "openai", 2.0)
    budgets.reserve("d2", "codex", "openai", 1.0)
    assert budgets.headroom("codex") == (1.0, {"openai": 0.0})
    clock.now = MIDNIGHT
    assert budgets.headroom("codex") == (3.0, {"openai": 2.0})
    budgets.settle("d2", "codex", "openai", 1.0, at=MIDNIGHT - 30.0)  # yesterday's cost
    assert budgets.headroom("codex") == (4.0, {"openai": 3.0})
    budgets.settle("d3", "codex", "openai", 1.0, at=MIDNIGHT + 1.0)
    assert budgets.headroom("codex") == (3.0, {"openai": 2.0})


def test_replaying_an_old_ledger_adds_nothing_to_today(budgets: Budgets) -> None:
    for day in range(1, 4):
        budgets.settle(f"old{day}", "codex", "openai", 5.0, at=NOON - day * 86400.0)
    assert budgets.headroom("codex") == (4.0, {"openai": 3.0})


def test_views_warn_exactly_at_warn_at(budgets: Budgets) -> None:
    step = 2.0**-7  # amounts exact in binary, so 8 of 10 is exactly 0.8
    budgets.settle("d1", "claude", "anthropic", 7.5)
    budgets.reserve("d2", "claude", "anthropic", 0.5 - step)
    assert not budgets.views()[0].warning  # 7.99 of 10
    budgets.reserve("d3", "codex", "openai", step)
    assert budgets.views() == [
        BudgetView("overall", "", 10.0, 7.5, 0.5, 0.8, warning=True, exhausted=False),
        BudgetView("lane", "codex", 4.0, 0.0, step, step / 4.0, warning=False, exhausted=False),
        BudgetView("provider", "openai", 3.0, 0.0, step, step / 3.0, warning=False, exhausted=False),
    ]


def test_unconditional_reserve_can_exhaust_a_budget(budgets: Budgets) -> None:
    budgets.reserve("fallback", "codex", "openai", 5.0)
    lane = budgets.views()[1]
    assert (lane.used_share, lane.warning, lane.exhausted) == (1.25, True, True)
    assert budgets.headroom("codex") == (0.0, {"openai": 0.0})


def race(limit: float, seed: int) -> tuple[list[float], BudgetView]:
    """8 lanes route and report against one tight overall budget until it runs out.

    Returns every spent + reserved above the limit seen after a reservation, and the final view.
    """
    settings = dataclasses.replace(SETTINGS, daily_usd=limit, lane_daily_usd={}, provider_daily_usd={})
    budgets = Budgets(settings, clock=lambda: NOON)
    start = threading.Barrier(8)
    overruns: list[float] = []

    def lane(worker: int) -> None:
        rng = random.Random(seed * 8 + worker)
        in_flight: collections.deque[tuple[str, float]] = collections.deque()
        start.wait()
        for i in range(200):
            estimate = rng.uniform(0.001, 0.01)
            if estimate <= budgets.headroom("codex")[0]:
                decision = f"{worker}-{i}"
                if budgets.try_reserve(decision, "codex", "openai", estimate):
                    in_flight.append((decision, estimate))
                    used = budgets.views()[0]
                    if used.spent_usd + used.reserved_usd > limit + 1e-9:
                        overruns.append(used.spent_usd + used.reserved_usd)
            if len(in_flight) > 2 or (in_flight and i % 5 == 0):  # a few tasks running at a time
                decision, actual = in_flight.popleft()
                budgets.settle(decision, "codex", "openai", actual)
        for decision, actual in in_flight:
            budgets.settle(decision, "codex", "openai", actual)

    threads = [threading.Thread(target=lane, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return overruns, budgets.views()[0]


def test_threads_racing_for_a_tight_budget_never_overrun_it() -> None:
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, so check-then-book races show
    try:
        for seed in range(20):  # each run races at the moment its budget runs out
            overruns, final = race(0.05, seed)
            assert overruns == []
            assert final.reserved_usd == 0.0
            assert 0.05 - 0.01 < final.spent_usd <= 0.05 + 1e-9  # used up, never past it
    finally:
        sys.setswitchinterval(switch_interval)


def test_no_budget_anywhere_makes_every_call_a_no_op(clock: FakeClock) -> None:
    unlimited = dataclasses.replace(
        SETTINGS, daily_usd=0.0, lane_daily_usd={"codex": 0.0}, provider_daily_usd={}
    )
    budgets = Budgets(unlimited, clock=clock)
    assert not budgets.any
    assert budgets.headroom("codex") == (math.inf, {})
    assert budgets.try_reserve("d1", "codex", "openai", 1e9)
    budgets.reserve("d2", "codex", "openai", 1e9)
    budgets.settle("d1", "codex", "openai", 5.0)
    assert budgets.views() == []
    assert Budgets(SETTINGS, clock=clock).any
