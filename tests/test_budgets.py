"""Daily budgets with reservations, on a fake clock (and real threads for the race); reservations
restored from the ledger on restart, and limits that follow a config reload."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import logging
import math
import random
import sys
import threading
from pathlib import Path

import pytest

from orxaq_grpc.application.outcomes import Outcomes
from orxaq_grpc.config.model import BudgetSettings, Config
from orxaq_grpc.outcomes.budgets import Budgets, BudgetView
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.routing.router import Router
from orxaq_grpc.routing.types import Decision, RouteRequest, Task
from orxaq_grpc.service.workers import budgets_in_a_worker
from orxaq_grpc.store import SqliteStore
from tests.conftest import FakeClock, report_success, set_toml

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


# -- update: limits that follow a reload -------------------------------------------------

NO_BUDGETS = dataclasses.replace(SETTINGS, daily_usd=0.0, lane_daily_usd={}, provider_daily_usd={})


def test_update_lowering_the_overall_limit_refuses_at_once_and_raising_it_admits(budgets: Budgets) -> None:
    budgets.settle("d1", "claude", "anthropic", 3.0)
    assert budgets.try_reserve("d2", "claude", "anthropic", 2.0) is True
    budgets.update(dataclasses.replace(SETTINGS, daily_usd=5.0))
    assert budgets.try_reserve("d3", "claude", "anthropic", 0.5) is False  # 3 spent + 2 reserved of 5
    assert budgets.views()[0] == BudgetView("overall", "", 5.0, 3.0, 2.0, 1.0, warning=True, exhausted=True)
    budgets.update(dataclasses.replace(SETTINGS, daily_usd=6.0))
    assert budgets.try_reserve("d3", "claude", "anthropic", 0.5) is True
    assert budgets.headroom("claude") == (0.5, {"openai": 3.0})


def test_a_lane_budget_added_by_update_counts_todays_spend_and_the_lanes_open_reservations(
    budgets: Budgets,
) -> None:
    budgets.settle("d1", "claude", "anthropic", 1.0)  # no claude budget yet: only overall counts it
    budgets.reserve("d2", "claude", "anthropic", 0.75)
    budgets.reserve("d3", "codex", "anthropic", 0.5)  # another lane's: not the new budget's
    budgets.update(dataclasses.replace(SETTINGS, lane_daily_usd={"codex": 4.0, "claude": 2.0}))
    overall, claude, codex = budgets.views()[:3]
    assert (overall.spent_usd, overall.reserved_usd) == (1.0, 1.25)  # overall stayed: keeps its own spend
    assert (claude.name, claude.spent_usd, claude.reserved_usd) == ("claude", 1.0, 0.75)
    assert (codex.name, codex.spent_usd, codex.reserved_usd) == ("codex", 0.0, 0.5)  # stayed too
    assert budgets.headroom("claude") == (0.25, {"openai": 3.0})
    assert budgets.try_reserve("d4", "claude", "anthropic", 0.5) is False
    budgets.settle("d2", "claude", "anthropic", 0.5)  # the reservation was booked into the new scope
    assert budgets.headroom("claude") == (0.5, {"openai": 3.0})


def test_reservations_survive_an_update_and_still_settle_and_expire(
    budgets: Budgets, clock: FakeClock
) -> None:
    budgets.reserve("d1", "codex", "openai", 1.0)
    clock.now += 300.0
    budgets.reserve("d2", "codex", "openai", 0.5)
    budgets.update(dataclasses.replace(SETTINGS, daily_usd=20.0, provider_daily_usd={"openai": 2.0}))
    assert [(v.name, v.reserved_usd) for v in budgets.views()] == [("", 1.5), ("codex", 1.5), ("openai", 1.5)]
    budgets.settle("d2", "codex", "openai", 0.25)
    assert budgets.headroom("codex") == (2.75, {"openai": 0.75})  # 1.0 still reserved
    budgets.update(dataclasses.replace(SETTINGS, reservation_ttl_s=200.0))  # the TTL follows too
    assert [v.reserved_usd for v in budgets.views()] == [0.0, 0.0, 0.0]  # d1 is 300 s old


def test_a_first_budget_added_by_update_starts_from_todays_spend(clock: FakeClock) -> None:
    budgets = Budgets(NO_BUDGETS, clock)
    budgets.settle("d0", "codex", "openai", 3.0)  # today's spend is known with no budget anywhere
    assert budgets.try_reserve("d1", "codex", "openai", 5.0)  # not tracked: no budget anywhere
    budgets.update(dataclasses.replace(NO_BUDGETS, daily_usd=4.0))
    assert budgets.any
    assert budgets.views() == [BudgetView("overall", "", 4.0, 3.0, 0.0, 0.75, warning=False, exhausted=False)]
    assert budgets.try_reserve("d2", "codex", "openai", 1.5) is False
    budgets.update(NO_BUDGETS)
    assert not budgets.any
    assert budgets.views() == []
    assert budgets.headroom("codex") == (math.inf, {})


def test_update_logs_one_warning_per_changed_limit(
    budgets: Budgets, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="orxaq_grpc.outcomes.budgets"):
        budgets.update(dataclasses.replace(SETTINGS, warn_at=0.5, reservation_ttl_s=60.0), "config a -> b")
        assert caplog.records == []  # no limit changed
        changed = dataclasses.replace(
            SETTINGS, daily_usd=2.0, lane_daily_usd={"codex": 4.0, "claude": 1.5}, provider_daily_usd={}
        )
        budgets.update(changed, "config a1b2 -> c3d4")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "budget overall: daily limit $10.00 -> $2.00 (config a1b2 -> c3d4)"),
        (logging.WARNING, "budget lane claude: daily limit none -> $1.50 (config a1b2 -> c3d4)"),
        (logging.WARNING, "budget provider openai: daily limit $3.00 -> none (config a1b2 -> c3d4)"),
    ]


def test_reserve_at_an_earlier_time_expires_the_ttl_after_it(budgets: Budgets, clock: FakeClock) -> None:
    budgets.reserve("d1", "codex", "openai", 1.0, at=NOON - 500.0)
    assert budgets.headroom("codex") == (3.0, {"openai": 2.0})
    clock.now = NOON + 100.0  # 600 s after the reservation's own time
    assert budgets.headroom("codex") == (4.0, {"openai": 3.0})


# -- restarts and reloads through Outcomes ------------------------------------------------


def with_budgets(config: Config, **fields: object) -> Config:
    budgets = dataclasses.replace(config.policy.budgets, **fields)
    return dataclasses.replace(config, policy=dataclasses.replace(config.policy, budgets=budgets))


def route(live: LiveRouter, outcomes: Outcomes, output_tokens: int = 500) -> Decision:
    task = Task(title="Review the payment flow", input_tokens=2_000, output_tokens=output_tokens)
    decision = live.current.route(RouteRequest(lane="claude", task=task), guards=outcomes)
    outcomes.record_decision(decision)
    assert decision.model and decision.estimated_cost_usd > 0
    return decision


def report(outcomes: Outcomes, decision: Decision, cost_usd: float) -> None:
    assert report_success(outcomes, decision, cost_usd)


def overall(outcomes: Outcomes) -> BudgetView:
    return next(b for b in outcomes.budgets.views() if b.scope == "overall")


def test_open_reservations_survive_a_restart(
    shipped_config: Config, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = with_budgets(shipped_config, daily_usd=100.0, reservation_ttl_s=3600.0)
    clock = FakeClock(NOON)
    live = LiveRouter(Router(config))
    with SqliteStore(tmp_path, 31, clock=clock) as store:
        outcomes = Outcomes(live, store, clock)
        stale = route(live, outcomes)  # older than the TTL at the restart: not restored
        clock.now = NOON + 3000.0
        reported = route(live, outcomes)
        first = route(live, outcomes, output_tokens=600)
        second = route(live, outcomes, output_tokens=700)
        report(outcomes, reported, 0.01)
        before = overall(outcomes)
    assert before.reserved_usd == pytest.approx(
        stale.estimated_cost_usd + first.estimated_cost_usd + second.estimated_cost_usd
    )

    clock.now = NOON + 3700.0  # restarted: the stale decision is 3700 s old
    live = LiveRouter(Router(config))
    with SqliteStore(tmp_path, 31, clock=clock) as store:
        outcomes = Outcomes(live, store, clock)
        with caplog.at_level(logging.INFO, logger="orxaq_grpc.application.outcomes"):
            assert outcomes.rebuild() == (4, 1)
        expected = first.estimated_cost_usd + second.estimated_cost_usd
        after = overall(outcomes)
        assert after.spent_usd == pytest.approx(0.01)
        assert after.reserved_usd == pytest.approx(expected)
        assert f"restored 2 open reservations from the ledger, ${expected:.4f} in all" in caplog.text

        report(outcomes, first, 0.02)  # its report settles the restored reservation
        after = overall(outcomes)
        assert after.spent_usd == pytest.approx(0.03)
        assert after.reserved_usd == pytest.approx(second.estimated_cost_usd)

        clock.now = NOON + 3000.0 + 3600.0  # the TTL after the decision, not after the restart
        assert overall(outcomes).reserved_usd == 0.0


def test_a_decision_its_lane_never_got_holds_no_budget_after_a_restart(
    shipped_config: Config, tmp_path: Path
) -> None:
    """Abandoned (a batch cancelled before its answer): it is in the ledger without a report, as a
    decision in flight is, but the journal says no lane runs it, so a restart books it no reservation."""
    config = with_budgets(shipped_config, daily_usd=100.0, reservation_ttl_s=3600.0)
    clock = FakeClock(NOON)
    live = LiveRouter(Router(config))
    with SqliteStore(tmp_path, 31, clock=clock) as store:
        outcomes = Outcomes(live, store, clock)
        in_flight = route(live, outcomes)
        lost = [route(live, outcomes, output_tokens=600), route(live, outcomes, output_tokens=700)]
        outcomes.abandon(lost)
        assert overall(outcomes).reserved_usd == pytest.approx(in_flight.estimated_cost_usd)

    clock.now = NOON + 60.0
    live = LiveRouter(Router(config))
    with SqliteStore(tmp_path, 31, clock=clock) as store:
        outcomes = Outcomes(live, store, clock)
        assert outcomes.rebuild() == (3, 0)  # still three decisions made
        assert overall(outcomes).reserved_usd == pytest.approx(in_flight.estimated_cost_usd)


def test_a_reloaded_budget_limit_applies_to_the_next_reservation(
    config_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = LiveRouter.from_directory(config_dir)
    assert live.current.config.policy.budgets.daily_usd == 0
    with SqliteStore(tmp_path / "data", 31) as store:
        outcomes = Outcomes(live, store)
        report(outcomes, route(live, outcomes), 0.25)  # settled while no budget was configured
        open_decision = route(live, outcomes)  # not tracked: no budget anywhere
        set_toml(config_dir / "policy.toml", "budgets", "daily_usd", "1.0")
        before = live.current.config.version
        with caplog.at_level(logging.INFO):
            assert live.reload()
        after = live.current.config.version
        view = overall(outcomes)
        assert (view.limit_usd, view.spent_usd, view.reserved_usd) == (1.0, pytest.approx(0.25), 0.0)
        assert not outcomes.try_reserve("big", "claude", "anthropic", 0.8)
        assert outcomes.try_reserve("small", "claude", "anthropic", 0.7)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == [f"budget overall: daily limit none -> $1.00 (config {before} -> {after})"]
        assert open_decision.decision_id not in {"big", "small"}

        caplog.clear()
        set_toml(config_dir / "policy.toml", "budgets", "daily_usd", "0.5")
        with caplog.at_level(logging.INFO):
            assert live.reload()
        assert not outcomes.try_reserve("tiny", "claude", "anthropic", 0.01)  # 0.25 + 0.7 of 0.5
        assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
            f"budget overall: daily limit $1.00 -> $0.50 (config {after} -> {live.current.config.version})"
        ]


def test_a_failing_reload_listener_is_logged_and_the_reload_stands(
    config_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = LiveRouter.from_directory(config_dir)
    heard: list[str] = []

    def broken(config: Config) -> None:
        raise RuntimeError("boom")

    live.on_reload(broken)
    live.on_reload(lambda config: heard.append(config.version))
    set_toml(config_dir / "policy.toml", "budgets", "daily_usd", "3.0")
    with caplog.at_level(logging.ERROR, logger="orxaq_grpc.routing.live"):
        assert live.reload()
    assert heard == [live.current.config.version]
    assert live.current.config.policy.budgets.daily_usd == 3.0
    assert "a config reload listener failed" in caplog.text


def test_a_worker_refuses_a_reload_that_adds_a_budget(
    config_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With several workers each would keep its own reservations: a budget arriving by reload is
    refused there as it is at start, and the last good config stays."""
    live = LiveRouter.from_directory(config_dir)
    live.refuse_when(budgets_in_a_worker)
    version = live.current.config.version
    set_toml(config_dir / "policy.toml", "budgets", "daily_usd", "3.0")
    with caplog.at_level(logging.ERROR, logger="orxaq_grpc.routing.live"):
        assert not live.reload()
    assert live.current.config.version == version and live.current.config.policy.budgets.daily_usd == 0
    assert "budgets need a single worker" in caplog.text
