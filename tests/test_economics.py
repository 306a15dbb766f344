"""Economics maths and detection thresholds against hand-computed figures."""

from __future__ import annotations

import pytest

from orxaq_grpc.config.model import DetectionSettings
from orxaq_grpc.outcomes.detection import classify
from orxaq_grpc.outcomes.economics import DAY, HOUR, Counters, EconomicsBook, Figures
from orxaq_grpc.outcomes.records import DecisionRecord, Outcome, ReportRecord
from orxaq_grpc.routing.types import FallbackReason
from tests.conftest import FakeClock

NOON = 1_763_726_400.0  # 2025-11-21 12:00:00 UTC


def decision(
    at: float, lane: str = "codex", provider: str = "openai", model: str = "m1", **kw: object
) -> DecisionRecord:
    values: dict[str, object] = {
        "decision_id": f"d{at}",
        "at": at,
        "lane": lane,
        "provider": provider,
        "model": model,
        "strategy": 1,
        "fallback_reason": 0,
        "disruptive": False,
        "router_error": False,
        "estimated_input_tokens": 1000,
        "estimated_output_tokens": 500,
        "estimated_cost_usd": 0.01,
    }
    values.update(kw)
    return DecisionRecord(**values)  # type: ignore[arg-type]


def report(
    at: float, lane: str = "codex", provider: str = "openai", model: str = "m1", **kw: object
) -> ReportRecord:
    values: dict[str, object] = {
        "decision_id": f"r{at}",
        "at": at,
        "lane": lane,
        "provider": provider,
        "model": model,
        "input_tokens": 3000,
        "output_tokens": 1000,
        "latency_s": 5.0,
        "outcome": Outcome.SUCCESS,
        "retry_after_s": 0.0,
        "validation_passed": True,
        "first_time_pass": True,
        "cost_usd": 0.02,
        "cost_exact": True,
        "decision_known": True,
    }
    values.update(kw)
    return ReportRecord(**values)  # type: ignore[arg-type]


def test_blended_cost_and_rates_match_hand_computed_figures() -> None:
    clock = FakeClock(NOON)
    book = EconomicsBook(clock)
    book.add_decision(decision(NOON - 60))
    book.add_decision(decision(NOON - 50, fallback_reason=1))  # benign
    book.add_decision(decision(NOON - 40, fallback_reason=13, disruptive=True, router_error=True))
    book.add_decision(decision(NOON - 30, fallback_reason=12, disruptive=True))
    # 4,000 tokens for $0.02 (exact), 2,000 for $0.03 (priced), a timeout; a report for an unknown
    # decision counts as one and in no other figure.
    book.add_report(report(NOON - 20))
    book.add_report(report(NOON - 15, cost_usd=1e6, outcome=Outcome.TIMEOUT, decision_known=False))
    book.add_report(
        report(
            NOON - 10,
            input_tokens=1500,
            output_tokens=500,
            cost_usd=0.03,
            cost_exact=False,
            outcome=Outcome.TIMEOUT,
            validation_passed=False,
            first_time_pass=False,
        )
    )
    f = book.breakdown(NOON - HOUR).overall
    c = f.counters
    assert (c.decisions, c.reports, c.estimated_tokens, c.reported_tokens) == (4, 2, 6000, 6000)
    assert f.blended_usd_per_mtok == pytest.approx(0.05 * 1e6 / 6000)  # 8.333 $/1M
    assert f.estimated_usd_per_mtok == pytest.approx(0.04 * 1e6 / 6000)
    assert f.fallback_rate == pytest.approx(3 / 4)
    assert f.disruptive_fallback_rate == pytest.approx(2 / 4)
    assert f.router_error_rate == pytest.approx(1 / 4)
    assert f.error_rate == pytest.approx(1 / 2)
    assert (f.acceptance_rate, f.first_time_pass_rate) == (pytest.approx(0.5), pytest.approx(0.5))
    assert f.exact_spend_share == pytest.approx(0.02 / 0.05)
    assert c.unknown_decisions == 1


def test_breakdowns_per_provider_lane_and_model() -> None:
    clock = FakeClock(NOON)
    book = EconomicsBook(clock)
    book.add_report(report(NOON - 5, lane="codex", provider="openai", model="m1", cost_usd=0.01))
    book.add_report(report(NOON - 5, lane="claude", provider="anthropic", model="m2", cost_usd=0.04))
    book.add_report(report(NOON - 5, lane="codex", provider="anthropic", model="m2", cost_usd=0.02))
    window = book.breakdown(NOON - HOUR)
    assert {n: f.counters.spend_usd for n, f in window.providers.items()} == {
        "anthropic": pytest.approx(0.06),
        "openai": pytest.approx(0.01),
    }
    assert {n: f.counters.reports for n, f in window.lanes.items()} == {"claude": 1, "codex": 2}
    assert window.models["m2"].blended_usd_per_mtok == pytest.approx(0.06 * 1e6 / 8000)


def test_windows_cut_at_the_hour_the_day_and_the_week() -> None:
    clock = FakeClock(NOON)
    book = EconomicsBook(clock)
    for at, usd in (
        (NOON - 30 * 60, 1.0),
        (NOON - 3 * HOUR, 2.0),
        (NOON - 13 * HOUR, 4.0),
        (NOON - 8 * DAY, 8.0),
    ):
        book.add_report(report(at, cost_usd=usd))
    midnight = NOON - 12 * HOUR
    spend = {
        name: book.breakdown(since).overall.counters.spend_usd
        for name, since in (
            ("hour", NOON - HOUR),
            ("today", midnight),
            ("7d", NOON - 7 * DAY),
            ("30d", NOON - 30 * DAY),
        )
    }
    assert spend == {"hour": 1.0, "today": 3.0, "7d": 7.0, "30d": 15.0}


def test_hourly_series_has_every_hour_oldest_first() -> None:
    clock = FakeClock(NOON + 600)
    book = EconomicsBook(clock)
    book.add_report(report(NOON + 100, cost_usd=1.0))
    book.add_report(report(NOON - HOUR + 5, cost_usd=2.0))
    series = book.hourly(24)
    assert len(series) == 24
    assert series[-1][0] == NOON and series[0][0] == NOON - 23 * HOUR
    assert series[-1][1].counters.spend_usd == 1.0
    assert series[-2][1].counters.spend_usd == 2.0
    assert sum(f.counters.reports for _, f in series) == 2


def test_memory_is_bounded_by_time_and_catalog_not_by_reports() -> None:
    clock = FakeClock(NOON)
    book = EconomicsBook(clock)
    for i in range(20_000):
        clock.now = NOON + i * 0.5  # ~2.8 hours of reports, two a second
        book.add_report(report(clock.now, model=f"m{i % 4}"))
    # 10,000 s of reports: 4 keys in 167 minute buckets and 3 hour buckets, however many reports.
    assert book.bucket_count() == 4 * (167 + 3)
    clock.now += 40 * DAY
    book.add_report(report(clock.now))
    assert book.bucket_count() == 2  # everything older than the buckets keep was pruned


SETTINGS = DetectionSettings(window_s=900, degraded_router_error_rate=0.05, elevated_fallback_rate=0.20)


def state_of(decisions: int, router_errors: int, disruptive: int) -> str:
    counters = Counters(decisions=decisions, router_errors=router_errors, disruptive=disruptive)
    return classify("lane", "codex", Figures.of(counters), SETTINGS).state


def test_detection_thresholds_at_and_just_below_each_boundary() -> None:
    assert classify("lane", "codex", None, SETTINGS).state == "idle"
    assert state_of(0, 0, 0) == "idle"
    assert state_of(100, 5, 0) == "degraded"  # 0.05 exactly
    assert state_of(101, 5, 0) == "healthy"  # 0.0495
    assert state_of(100, 0, 20) == "elevated_fallback"  # 0.20 exactly
    assert state_of(101, 0, 20) == "healthy"  # 0.198
    assert state_of(100, 5, 20) == "degraded"  # degraded wins
    reason = classify("lane", "codex", Figures.of(Counters(decisions=40, router_errors=2)), SETTINGS).reason
    assert reason == "router-error rate 0.050 >= 0.05 (2 of 40 decisions in 900 s)"


def test_windows_start_on_a_bucket_boundary_and_say_so() -> None:
    now = NOON + 30 * 60  # 12:30
    book = EconomicsBook(FakeClock(now))
    book.add_report(report(now - 7 * DAY - 29 * 60, cost_usd=1.0))  # 12:01, seven days ago
    book.add_report(report(now - 7 * DAY - 31 * 60, cost_usd=2.0))  # 11:59, seven days ago
    week = book.breakdown(now - 7 * DAY)
    assert week.since == NOON - 7 * DAY  # the window covers the whole 12:00 hour, and says so
    assert week.overall.counters.spend_usd == 1.0


def test_replaying_an_old_ledger_builds_no_buckets_the_next_prune_would_drop() -> None:
    book = EconomicsBook(FakeClock(NOON))
    for minute in range(31 * 24 * 60):
        book.add_decision(decision(NOON - minute * 60.0))
    # A day of minutes and 31 days of hours, however old the replayed records were.
    assert book.bucket_count() <= 24 * 60 + 31 * 24 + 2


def test_budget_refusals_are_disruptive_but_do_not_make_the_router_look_unstable() -> None:
    """A lane refused for budget is disrupted (detection shows it), but the budget is doing its job:
    the figure stop-loss's router_unstable trigger reads leaves those refusals out."""
    book = EconomicsBook(FakeClock(1000.0))
    budget, unhealthy = FallbackReason.BUDGET_EXHAUSTED, FallbackReason.ALL_CANDIDATES_UNHEALTHY
    for i in range(6):
        book.add_decision(decision(1000.0 + i, decision_id=f"b{i}", fallback_reason=budget, disruptive=True))
    book.add_decision(decision(1007.0, decision_id="u", fallback_reason=unhealthy, disruptive=True))
    for i in range(3):
        book.add_decision(decision(1010.0 + i, decision_id=f"n{i}"))
    overall = book.breakdown(0.0).overall
    assert overall.counters.budget_fallbacks == 6
    assert overall.disruptive_fallback_rate == pytest.approx(0.7)
    assert overall.unstable_fallback_rate == pytest.approx(0.1)
