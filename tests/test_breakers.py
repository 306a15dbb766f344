"""Circuit breakers per model and provider, on a fake clock."""

from __future__ import annotations

import dataclasses
import gc
import sys
import types
from collections.abc import Mapping

import pytest

from orxaq_grpc.config.model import BreakerSettings
from orxaq_grpc.outcomes.breakers import Breakers, BreakerState
from orxaq_grpc.outcomes.records import Outcome
from tests.conftest import FakeClock

SETTINGS = BreakerSettings(
    consecutive_failures=5,
    failure_rate=0.5,
    window_s=300.0,
    min_reports=10,
    open_s=30.0,
    half_open_probes=1,
    max_retry_after_s=900.0,
)
OK, FAIL = Outcome.SUCCESS, Outcome.SERVER_ERROR
NONE: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


def make(clock: FakeClock, provider_models: Mapping[str, int] | None = None, **overrides: float) -> Breakers:
    return Breakers(
        dataclasses.replace(SETTINGS, **overrides), clock=clock, provider_models=provider_models or {}
    )


def feed(breakers: Breakers, outcomes: list[Outcome], model: str = "m1", provider: str = "p") -> None:
    for outcome in outcomes:
        breakers.record(model, provider, outcome)


def model_blocked(breakers: Breakers, model: str = "m1") -> bool:
    return model in breakers.blocked()[0]


def open_model(breakers: Breakers) -> None:
    """Opens m1's circuit only: m2's successes keep the provider's failure share low."""
    for _ in range(SETTINGS.consecutive_failures):
        breakers.record("m1", "p", FAIL)
        feed(breakers, [OK, OK], model="m2")
    assert breakers.blocked() == ({"m1"}, frozenset())


def test_opens_after_n_consecutive_failures_not_before(clock: FakeClock) -> None:
    breakers = make(clock, {"p": 1})  # one catalog model: its failures are the provider's, as before
    feed(breakers, [FAIL] * 4)
    assert breakers.blocked() == NONE
    assert breakers.record("m1", "p", Outcome.TIMEOUT) is True
    assert breakers.blocked() == ({"m1"}, {"p"})


def test_failure_rate_opens_exactly_at_threshold(clock: FakeClock) -> None:
    breakers = make(clock)
    feed(breakers, [OK, FAIL] * 4 + [OK])  # 4 of 9
    assert breakers.blocked() == NONE
    feed(breakers, [FAIL])  # 5 of 10: 0.5 with min_reports 10
    assert model_blocked(breakers)
    assert breakers.views()[0].reason == "failure rate 0.50 >= 0.50 over 300 s (10 reports)"


def test_failure_rate_needs_min_reports(clock: FakeClock) -> None:
    breakers = make(clock)
    feed(breakers, [FAIL, FAIL, OK] * 3)  # 6 of 9, but only 9 reports
    assert breakers.blocked() == NONE
    feed(breakers, [FAIL])  # the tenth report: 7 of 10
    assert model_blocked(breakers)


def test_failure_rate_below_threshold_stays_closed(clock: FakeClock) -> None:
    breakers = make(clock)
    feed(breakers, [OK] + [OK, FAIL] * 5)  # 5 of 11
    assert breakers.blocked() == NONE
    feed(breakers, [FAIL])  # 6 of 12: at the threshold
    assert model_blocked(breakers)


def test_success_resets_the_consecutive_count(clock: FakeClock) -> None:
    breakers = make(clock, min_reports=100)
    feed(breakers, [FAIL] * 4 + [OK] + [FAIL] * 4)
    assert breakers.blocked() == NONE
    assert breakers.views()[0].consecutive_failures == 4
    feed(breakers, [FAIL])
    assert model_blocked(breakers)


def test_bad_output_and_unspecified_neither_fail_nor_heal(clock: FakeClock) -> None:
    breakers = make(clock)
    assert breakers.record("m1", "p", Outcome.BAD_OUTPUT) is False
    assert breakers.views() == []  # ignored reports do not even create a breaker
    feed(breakers, [FAIL] * 4 + [Outcome.BAD_OUTPUT, Outcome.UNSPECIFIED] * 3 + [FAIL])
    assert model_blocked(breakers)
    clock.now += SETTINGS.open_s
    breakers.note_routed("m1", "p", "probe")
    assert breakers.record("m1", "p", Outcome.BAD_OUTPUT, decision_id="probe") is False
    assert breakers.views()[0].state is BreakerState.HALF_OPEN


def test_retry_after_is_honoured_past_open_s(clock: FakeClock) -> None:
    breakers = make(clock)
    opened = clock.now
    assert breakers.record("m1", "p", Outcome.RATE_LIMITED, retry_after_s=90.0) is True
    assert breakers.blocked() == ({"m1"}, frozenset())
    assert [(v.scope, v.name) for v in breakers.views()] == [("model", "m1")]  # the provider never saw it
    view = breakers.views()[0]
    assert (view.reason, view.reopens_at) == ("rate limited: retry after 90 s", opened + 90.0)
    clock.now = opened + 89.9
    assert model_blocked(breakers)
    clock.now = opened + 90.0
    assert breakers.blocked() == NONE
    assert breakers.views()[0].state is BreakerState.HALF_OPEN


def test_a_rate_limit_blocks_its_model_for_exactly_the_retry_after_not_the_provider(clock: FakeClock) -> None:
    breakers = make(clock, {"p": 3})
    feed(breakers, [OK], model="m2")
    limited = clock.now
    assert breakers.record("m1", "p", Outcome.RATE_LIMITED, retry_after_s=5.0) is True
    assert breakers.blocked() == ({"m1"}, frozenset())  # m2, same provider, stays routable
    view = breakers.views()[0]
    assert (view.state, view.reopens_at) == (BreakerState.OPEN, limited + 5.0)  # not open_s
    clock.now = limited + 4.9
    assert model_blocked(breakers)
    clock.now = limited + 5.0
    assert breakers.blocked() == NONE
    breakers.note_routed("m1", "p", "probe")
    assert breakers.record("m1", "p", Outcome.RATE_LIMITED, 5.0, decision_id="probe") is True
    view = breakers.views()[0]  # the probe was rate limited again: open exactly 5 s more
    assert (view.state, view.reopens_at, view.openings) == (BreakerState.OPEN, clock.now + 5.0, 2)
    assert breakers.blocked() == ({"m1"}, frozenset())


def test_rate_limits_never_open_a_provider(clock: FakeClock) -> None:
    breakers = make(clock, {"p": 1})  # even one whose only model is the one limited
    feed(breakers, [Outcome.RATE_LIMITED] * 50)
    for i in range(50):
        breakers.record(f"m{i % 3}", "p", Outcome.RATE_LIMITED, retry_after_s=1.0)
        clock.now += 1.0
    assert "p" not in breakers.blocked()[1]
    assert all(v.scope == "model" for v in breakers.views())  # not even counted for the provider


def test_rate_limits_neither_fail_nor_heal_a_provider(clock: FakeClock) -> None:
    breakers = make(clock)
    limited = Outcome.RATE_LIMITED
    for model, outcome in [("m1", FAIL), ("m2", limited), ("m2", FAIL), ("m1", limited), ("m1", FAIL)]:
        breakers.record(model, "p", outcome)
    breakers.record("m2", "p", FAIL)
    assert breakers.blocked() == NONE
    provider = breakers.views()[-1]
    assert (provider.consecutive_failures, provider.window_reports) == (4, 4)  # the run goes on
    breakers.record("m1", "p", FAIL)
    assert breakers.blocked() == (frozenset(), {"p"})


def test_timeouts_on_one_model_open_it_not_its_provider(clock: FakeClock) -> None:
    breakers = make(clock, {"p": 3})
    feed(breakers, [Outcome.TIMEOUT] * 20)  # a run and a failure rate, both well past the thresholds
    assert breakers.blocked() == ({"m1"}, frozenset())
    provider = breakers.views()[-1]
    assert (provider.scope, provider.state, provider.openings) == ("provider", BreakerState.CLOSED, 0)
    assert (provider.consecutive_failures, provider.window_failures) == (20, 20)  # counted all the same
    assert not model_blocked(breakers, "m2")


def test_timeouts_across_two_models_open_the_provider(clock: FakeClock) -> None:
    breakers = make(clock, {"p": 3})
    feed(breakers, [Outcome.TIMEOUT] * 3)
    assert breakers.record("m2", "p", Outcome.TIMEOUT) is False  # m1 aside, one failure: not yet
    assert breakers.record("m2", "p", Outcome.TIMEOUT) is True
    assert breakers.blocked() == (frozenset(), {"p"})
    assert breakers.views()[-1].reason == "5 consecutive failures"


def test_one_sick_model_and_a_siblings_stray_timeout_do_not_open_the_provider(clock: FakeClock) -> None:
    """Six failures of eleven is past the failure rate, but five of them are m1's: m2 fails one in five."""
    breakers = make(clock, {"p": 3})
    feed(breakers, [FAIL] * 5)
    feed(breakers, [OK] * 4 + [Outcome.TIMEOUT], model="m2")
    feed(breakers, [OK], model="m3")
    assert breakers.blocked() == ({"m1"}, frozenset())


def test_failure_rate_opens_the_provider_on_two_models_in_different_buckets(clock: FakeClock) -> None:
    breakers = make(clock, {"p": 3}, consecutive_failures=100)
    feed(breakers, [FAIL] * 6)
    feed(breakers, [OK] * 2, model="m3")  # 6 of 8 for the provider, all from m1
    assert breakers.blocked() == NONE
    clock.now += 50.0  # buckets are 10 s wide
    feed(breakers, [FAIL], model="m2")
    assert breakers.blocked() == NONE  # m1 aside: 1 failure of 3
    feed(breakers, [FAIL], model="m2")
    assert breakers.blocked() == (frozenset(), {"p"})  # m1 aside: 2 of 4
    assert breakers.views()[-1].reason.startswith("failure rate 0.80 >= 0.50")


def test_a_failure_out_of_the_window_is_no_evidence(clock: FakeClock) -> None:
    breakers = make(clock, {"p": 3})
    feed(breakers, [FAIL])
    clock.now += SETTINGS.window_s + 10.0  # aged out, and in another bucket's slot than m2's
    feed(breakers, [FAIL] * 5, model="m2")  # a run of 6 for the provider, but one model in the window
    assert breakers.blocked() == ({"m2"}, frozenset())
    feed(breakers, [FAIL], model="m3")  # with m1's old failure it would be two besides m2's
    assert breakers.blocked() == ({"m2"}, frozenset())
    feed(breakers, [FAIL], model="m3")
    assert breakers.blocked() == ({"m2"}, {"p"})


def test_a_provider_with_one_catalog_model_opens_as_before(clock: FakeClock) -> None:
    breakers = make(clock, {"p": 1, "q": 2})
    feed(breakers, [Outcome.TIMEOUT] * 5)
    feed(breakers, [Outcome.TIMEOUT] * 5, model="n1", provider="q")
    assert breakers.blocked() == ({"m1", "n1"}, {"p"})


def test_openings_counts_every_opening(clock: FakeClock) -> None:
    breakers = make(clock, {"p": 1})
    feed(breakers, [FAIL] * 5)
    assert [v.openings for v in breakers.views()] == [1, 1]  # model m1, provider p
    feed(breakers, [FAIL] * 5)  # already open: nothing more opens
    breakers.record("m1", "p", Outcome.RATE_LIMITED, retry_after_s=60.0)  # extends, does not open
    assert [v.openings for v in breakers.views()] == [1, 1]
    clock.now += 60.0
    breakers.note_routed("m1", "p", "probe-1")
    breakers.record("m1", "p", FAIL, decision_id="probe-1")  # half-open -> open
    assert [v.openings for v in breakers.views()] == [2, 2]
    clock.now += SETTINGS.open_s
    breakers.note_routed("m1", "p", "probe-2")
    breakers.record("m1", "p", OK, decision_id="probe-2")  # closes: the count stays
    assert [v.openings for v in breakers.views()] == [2, 2]
    breakers.record("m1", "p", Outcome.RATE_LIMITED, retry_after_s=5.0)  # closed -> open, model only
    assert [v.openings for v in breakers.views()] == [3, 2]


def test_rate_limit_while_open_extends_it(clock: FakeClock) -> None:
    breakers = make(clock)
    feed(breakers, [FAIL] * 5)
    clock.now += 20.0
    breakers.record("m1", "p", Outcome.RATE_LIMITED, retry_after_s=60.0)
    clock.now += 59.9
    assert model_blocked(breakers)
    clock.now += 0.1
    assert breakers.blocked() == NONE


def test_rate_limited_without_retry_after_is_a_plain_failure(clock: FakeClock) -> None:
    breakers = make(clock)
    feed(breakers, [Outcome.RATE_LIMITED] * 4)
    assert breakers.blocked() == NONE


def test_half_open_lets_exactly_the_probes_through_then_closes_on_success(clock: FakeClock) -> None:
    breakers = make(clock, half_open_probes=2)
    open_model(breakers)
    clock.now += SETTINGS.open_s
    assert breakers.blocked() == NONE
    breakers.note_routed("m1", "p", "probe-1")
    assert breakers.blocked() == NONE
    breakers.note_routed("m1", "p", "probe-2")
    assert model_blocked(breakers)  # both probes in flight
    assert breakers.record("m1", "p", OK, decision_id="probe-2") is True
    assert breakers.blocked() == NONE
    view = breakers.views()[0]
    assert (view.state, view.reason, view.reopens_at, view.window_reports) == (
        BreakerState.CLOSED,
        "",
        None,
        0,
    )


def test_half_open_failure_reopens_for_a_fresh_open_s(clock: FakeClock) -> None:
    breakers = make(clock)
    open_model(breakers)
    clock.now += SETTINGS.open_s + 7.0
    breakers.note_routed("m1", "p", "probe")
    assert breakers.record("m1", "p", Outcome.TIMEOUT, decision_id="probe") is True
    view = breakers.views()[0]
    assert (view.state, view.opened_at, view.reopens_at) == (
        BreakerState.OPEN,
        clock.now,
        clock.now + SETTINGS.open_s,
    )
    assert view.reason == "half-open probe failed"
    clock.now += SETTINGS.open_s - 0.1
    assert model_blocked(breakers)


def test_a_lost_probe_is_replaced_after_open_s(clock: FakeClock) -> None:
    breakers = make(clock)
    open_model(breakers)
    clock.now += SETTINGS.open_s
    breakers.note_routed("m1", "p", "lost")
    clock.now += SETTINGS.open_s - 0.1
    assert model_blocked(breakers)
    clock.now += 0.1
    assert not model_blocked(breakers)
    breakers.note_routed("m1", "p", "replacement")
    assert model_blocked(breakers)


def test_a_stale_success_while_half_open_does_not_close_it(clock: FakeClock) -> None:
    """A task routed before the circuit opened reports late: it proves nothing about the model now."""
    breakers = make(clock)
    open_model(breakers)
    clock.now += SETTINGS.open_s
    assert breakers.record("m1", "p", OK, decision_id="stale-1") is False  # before any probe
    assert breakers.record("m1", "p", OK) is False  # a report without a decision id
    assert breakers.views()[0].state is BreakerState.HALF_OPEN
    assert not model_blocked(breakers)  # the probe is still there to take
    breakers.note_routed("m1", "p", "probe")
    assert breakers.record("m1", "p", OK, decision_id="stale-2") is False  # while the probe is out
    view = breakers.views()[0]
    assert (view.state, view.consecutive_failures) == (BreakerState.HALF_OPEN, 0)  # counted all the same
    assert model_blocked(breakers)


def test_the_probes_success_closes_it(clock: FakeClock) -> None:
    breakers = make(clock)
    open_model(breakers)
    clock.now += SETTINGS.open_s
    breakers.note_routed("m1", "p", "probe")
    breakers.record("m1", "p", OK, decision_id="stale")
    assert breakers.record("m1", "p", OK, decision_id="probe") is True
    assert breakers.blocked() == NONE
    view = breakers.views()[0]
    assert (view.state, view.reason, view.reopens_at) == (BreakerState.CLOSED, "", None)


def test_a_stale_failure_while_half_open_is_counted_but_does_not_reopen(clock: FakeClock) -> None:
    breakers = make(clock)
    open_model(breakers)
    clock.now += SETTINGS.open_s
    breakers.note_routed("m1", "p", "probe")
    assert breakers.record("m1", "p", Outcome.TIMEOUT, decision_id="stale") is False
    view = breakers.views()[0]
    assert (view.state, view.consecutive_failures) == (
        BreakerState.HALF_OPEN,
        SETTINGS.consecutive_failures + 1,
    )
    assert breakers.record("m1", "p", FAIL, decision_id="probe") is True  # the probe's failure re-opens
    view = breakers.views()[0]
    assert (view.state, view.reason, view.reopens_at) == (
        BreakerState.OPEN,
        "half-open probe failed",
        clock.now + SETTINGS.open_s,
    )


def test_a_stale_rate_limit_while_half_open_delays_the_next_probe(clock: FakeClock) -> None:
    breakers = make(clock)
    open_model(breakers)
    clock.now += SETTINGS.open_s
    breakers.note_routed("m1", "p", "probe")
    limited = clock.now
    assert breakers.record("m1", "p", Outcome.RATE_LIMITED, 90.0, decision_id="stale") is False
    view = breakers.views()[0]
    assert (view.state, view.reason, view.reopens_at) == (
        BreakerState.HALF_OPEN,
        "rate limited: retry after 90 s",
        limited + 90.0,
    )
    clock.now = limited + SETTINGS.open_s  # the lost-probe time alone is no longer enough
    assert model_blocked(breakers)
    clock.now = limited + 90.0
    assert not model_blocked(breakers)
    breakers.note_routed("m1", "p", "replacement")
    assert breakers.views()[0].reopens_at == clock.now + SETTINGS.open_s


def test_a_rate_limit_before_the_last_probe_is_kept_by_take_probe(clock: FakeClock) -> None:
    breakers = make(clock)
    open_model(breakers)
    clock.now += SETTINGS.open_s
    breakers.record("m1", "p", Outcome.RATE_LIMITED, 90.0, decision_id="stale")
    breakers.note_routed("m1", "p", "probe")
    assert breakers.views()[0].reopens_at == clock.now + 90.0


def test_probe_ids_are_bounded_and_cleared(clock: FakeClock) -> None:
    breakers = make(clock, half_open_probes=2)
    open_model(breakers)
    circuit = breakers._circuits[("model", "m1")]
    clock.now += SETTINGS.open_s
    breakers.note_routed("m1", "p", "d0")
    breakers.note_routed("m1", "p", "d1")
    breakers.note_routed("m1", "p", "not-a-probe")  # blocked: Route would not have chosen it
    assert list(circuit.probes) == ["d0", "d1"]
    for i in range(2, 50):  # every probe lost, again and again
        clock.now += SETTINGS.open_s
        breakers.note_routed("m1", "p", f"d{i}")
        assert len(circuit.probes) == 2
    assert list(circuit.probes) == ["d48", "d49"]
    assert breakers.record("m1", "p", OK, decision_id="d0") is False  # long given up as lost
    assert breakers.record("m1", "p", FAIL, decision_id="d48") is True  # re-opens ...
    assert list(circuit.probes) == []  # ... and forgets its probes
    assert breakers.record("m1", "p", OK, decision_id="d49") is False  # open: nothing decides
    clock.now += SETTINGS.open_s
    breakers.note_routed("m1", "p", "e0")
    assert breakers.record("m1", "p", OK, decision_id="e0") is True  # closes ...
    assert list(circuit.probes) == []  # ... and forgets its probes
    breakers.note_routed("m1", "p", "closed")  # closed: no probe to take
    assert list(circuit.probes) == []


def test_provider_breaker_blocks_the_provider_model_breaker_one_model(clock: FakeClock) -> None:
    breakers = make(clock)
    for model in ("a", "b", "c", "d", "e"):  # one failure each: only the provider sees a run
        breakers.record(model, "p", FAIL)
    assert breakers.blocked() == (frozenset(), {"p"})
    open_model(make(clock))


def test_note_routed_takes_the_providers_probe_too(clock: FakeClock) -> None:
    breakers = make(clock)
    for model in ("a", "b", "c", "d", "e"):
        breakers.record(model, "p", FAIL)
    clock.now += SETTINGS.open_s
    assert breakers.blocked() == NONE
    breakers.note_routed("z", "p", "probe")  # a model with no breaker of its own
    assert breakers.blocked() == (frozenset(), {"p"})
    assert breakers.record("a", "p", OK, decision_id="routed-before") is False
    assert breakers.blocked() == (frozenset(), {"p"})
    assert breakers.record("z", "p", OK, decision_id="probe") is True
    assert breakers.blocked() == NONE


def test_views_sorted_with_reasons_and_version(clock: FakeClock) -> None:
    breakers = make(clock, {"p": 1})
    assert breakers.version == 0
    breakers.record("m2", "q", OK)
    feed(breakers, [FAIL] * 5)
    assert breakers.version == 1  # one report opened two breakers: one change of state
    views = breakers.views()
    assert [(v.scope, v.name) for v in views] == [
        ("model", "m1"),
        ("model", "m2"),
        ("provider", "p"),
        ("provider", "q"),
    ]
    m1 = views[0]
    assert (m1.state, m1.reason, m1.opened_at, m1.reopens_at) == (
        BreakerState.OPEN,
        "5 consecutive failures",
        clock.now,
        clock.now + SETTINGS.open_s,
    )
    assert (m1.consecutive_failures, m1.window_reports, m1.window_failures, m1.openings) == (5, 5, 5, 1)
    assert views[1].state is BreakerState.CLOSED and views[1].opened_at is None
    clock.now += SETTINGS.open_s
    assert breakers.version == 2  # time alone turned them half-open
    breakers.note_routed("m1", "p", "probe")
    breakers.record("m1", "p", OK, decision_id="probe")
    assert breakers.version == 3


def test_blocked_is_cached_until_something_changes(clock: FakeClock) -> None:
    breakers = make(clock)
    feed(breakers, [FAIL] * 5)
    first = breakers.blocked()
    clock.now += 1.0
    feed(breakers, [OK], model="m2", provider="q")
    assert breakers.blocked() is first


def test_window_buckets_age_out(clock: FakeClock) -> None:
    breakers = make(clock, consecutive_failures=100, min_reports=5)
    clock.now = 0.0
    feed(breakers, [FAIL] * 4)
    clock.now = 289.0  # buckets are 10 s wide: the first one is still in the window
    assert breakers.views()[0].window_failures == 4
    clock.now = 300.0
    assert (breakers.views()[0].window_reports, breakers.views()[0].window_failures) == (0, 0)
    feed(breakers, [FAIL])  # 1 of 1 in the window, under min_reports: the old ones no longer count
    assert breakers.blocked() == NONE


def deep_size(root: object) -> int:
    """Bytes held by everything reachable from root, classes and functions aside."""
    seen: set[int] = set()
    stack, total = [root], 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (type, types.ModuleType, types.FunctionType)):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def test_memory_stays_flat_however_many_reports(clock: FakeClock) -> None:
    breakers = make(clock, consecutive_failures=1_000_000, failure_rate=1.0)
    clock.now = 1e6  # bucket numbers past the small ints CPython shares, so sizes compare like for like

    def burst(count: int) -> None:
        for i in range(count):
            clock.now += 0.37
            breakers.record(f"m{i % 3}", "p", FAIL if i % 4 == 0 else OK)

    burst(1_000)  # every bucket of every breaker has been used once
    size = deep_size(breakers)
    burst(100_000)
    assert deep_size(breakers) == size
    provider = breakers.views()[-1]
    assert 290 / 0.37 <= provider.window_reports <= 300 / 0.37 + 1  # 29 to 30 buckets of reports


def test_a_probe_whose_decision_never_reached_its_lane_is_given_back_at_once(clock: FakeClock) -> None:
    """No report will come for a decision its lane never got: waiting open_s for it would keep a
    healthy model out for nothing."""
    breakers = make(clock, half_open_probes=2)
    open_model(breakers)
    clock.now += SETTINGS.open_s
    breakers.note_routed("m1", "p", "probe-1")
    breakers.note_routed("m1", "p", "undelivered")
    assert model_blocked(breakers)
    breakers.note_abandoned("m1", "p", "undelivered")
    assert not model_blocked(breakers)
    breakers.note_abandoned("m1", "p", "undelivered")  # twice, or a decision that took none: nothing
    breakers.note_abandoned("m1", "p", "never-a-probe")
    breakers.note_routed("m1", "p", "probe-3")
    assert model_blocked(breakers)  # still two probes at most
    assert breakers.record("m1", "p", OK, decision_id="probe-3") is True  # the new probe decides it
    assert breakers.blocked() == NONE
