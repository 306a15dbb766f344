"""Prompt caching and local hardware in cost: reports' cache counts, the catalog's cache prices and
amortised hardware, Economics' cache share, the ledger's new columns, and Route's estimate."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import pytest

from clients import lane
from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.application.outcomes import CACHE_SHARE_REFRESH_S, Outcomes
from orxaq_grpc.client import RoutingClient
from orxaq_grpc.config.load import load_config
from orxaq_grpc.config.model import Config, amortised_usd_per_mtok
from orxaq_grpc.config.problems import ConfigError
from orxaq_grpc.outcomes.economics import EconomicsBook
from orxaq_grpc.outcomes.records import Outcome, ReportInput, ReportRecord
from orxaq_grpc.outcomes.validation import validate_report
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.routing.router import Router, expected_cost_usd, reported_cost_usd
from orxaq_grpc.routing.types import Decision, RouteRequest, Task
from orxaq_grpc.service.server import open_outcomes
from orxaq_grpc.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteStore
from tests.conftest import CONFIG_DIR, FakeClock, LoopbackServer, model
from tests.test_lane_client import fake_agent, lane_args
from tests.test_router import FixedGuards

NOW = 1_790_000_000.0


# -- pricing -------------------------------------------------------------------------------------


def test_a_report_is_priced_per_kind_of_input_token() -> None:
    cached = model("m", input_usd_per_mtok=4.0, output_usd_per_mtok=20.0)
    cached = dataclasses.replace(cached, cached_input_usd_per_mtok=0.2, cache_write_usd_per_mtok=5.0)
    # 100K input: 10K uncached, 80K cache reads, 10K cache writes; 5K output.
    assert reported_cost_usd(cached, 100_000, 5_000, 80_000, 10_000) == pytest.approx(
        (10_000 * 4.0 + 80_000 * 0.2 + 10_000 * 5.0 + 5_000 * 20.0) / 1e6
    )
    # No cache counts: all input at the input price, as before.
    assert reported_cost_usd(cached, 100_000, 5_000, 0, 0) == pytest.approx(
        expected_cost_usd(cached, 100_000, 5_000)
    )


def test_without_cache_prices_cached_input_is_priced_as_input() -> None:
    plain = model("m", input_usd_per_mtok=4.0, output_usd_per_mtok=20.0)
    assert (plain.cached_input_price, plain.cache_write_price) == (4.0, 4.0)
    assert reported_cost_usd(plain, 100_000, 5_000, 80_000, 10_000) == pytest.approx(
        expected_cost_usd(plain, 100_000, 5_000)
    )


def test_the_shipped_hosted_models_price_their_caches(shipped_config: Config) -> None:
    models = {m.id: m for m in shipped_config.models}
    opus = models["claude-opus-5-5"]
    assert (opus.cached_input_price, opus.cache_write_price) == (0.20, 5.00)
    terra = models["gpt-6.1-terra"]
    assert (terra.cached_input_price, terra.cache_write_price) == (0.05, terra.input_usd_per_mtok)
    for m in shipped_config.models:
        if m.origin == "hosted":
            assert m.cached_input_price < m.input_usd_per_mtok, m.id


# -- local models' amortised hardware ------------------------------------------------------------


def with_hardware(config_dir: Path) -> Path:
    """The shipped catalog with its local models' hardware figures switched on (they ship commented)."""
    catalog = config_dir / "catalog.toml"
    catalog.write_text(catalog.read_text().replace("# hardware_usd_per_hour = ", "hardware_usd_per_hour = "))
    return config_dir


def test_the_shipped_local_models_are_free_until_their_hardware_is_priced(
    shipped_config: Config, config_dir: Path
) -> None:
    assert all(
        m.hardware_usd_per_hour is None and m.output_usd_per_mtok == 0.0
        for m in shipped_config.models
        if m.origin == "local"
    )
    priced = load_config(with_hardware(config_dir))
    local = [m for m in priced.models if m.origin == "local"]
    assert local and all(m.hardware_usd_per_hour for m in local)
    for m in local:
        assert m.output_usd_per_mtok == pytest.approx(
            amortised_usd_per_mtok(m.hardware_usd_per_hour or 0.0, m.output_tokens_per_s)
        )
        assert expected_cost_usd(m, 10_000, 2_000) > 0
        assert reported_cost_usd(m, 10_000, 2_000, 0, 0) > 0
    # $0.18 an hour at 59.02 tokens a second: about $0.85 per 1M output tokens.
    gpt_oss = next(m for m in local if m.id == "gpt-oss-120b")
    assert gpt_oss.output_usd_per_mtok == pytest.approx(0.18 * 1e6 / (3600 * 59.02))


def test_a_local_report_without_cost_books_the_amortised_cost(tmp_path: Path, config_dir: Path) -> None:
    clock = FakeClock(NOW)
    live = LiveRouter.from_directory(with_hardware(config_dir))
    outcomes = open_outcomes(live, tmp_path / "data", clock=clock)
    try:
        decision = route(live, outcomes, "local")
        assert decision.model in {m.id for m in live.current.config.models if m.origin == "local"}
        assert decision.estimated_cost_usd > 0
        record = book(outcomes, decision, input_tokens=10_000, output_tokens=2_000)
        assert record.cost_usd > 0 and not record.cost_exact
        assert outcomes.book.breakdown(NOW - 3600).overall.blended_usd_per_mtok > 0
    finally:
        outcomes.close()


@pytest.mark.parametrize(
    ("key", "value", "field", "problem"),
    [
        ("hardware_usd_per_hour", "0.5", "hardware_usd_per_hour", "is for local models"),
        ("cached_input_usd_per_mtok", "99.0", "cached_input_usd_per_mtok", "is above input_usd_per_mtok"),
        ("cache_write_usd_per_mtok", "-1", "cache_write_usd_per_mtok", "must be at least 0, got -1"),
    ],
)
def test_bad_cache_and_hardware_prices_are_refused_with_their_path(
    config_dir: Path, key: str, value: str, field: str, problem: str
) -> None:
    catalog = config_dir / "catalog.toml"
    text = catalog.read_text()
    first = text.index("[[models]]")  # the first model is hosted (gpt-6-astra)
    line = text.index("output_tokens_per_s", first)
    stripped = "\n".join(
        row for row in text[first:line].splitlines() if not row.startswith(key)
    )  # drop the model's own figure, if it has one
    catalog.write_text(text[:first] + stripped + f"\n{key} = {value}\n" + text[line:])
    with pytest.raises(ConfigError) as caught:
        load_config(config_dir)
    found = [p for p in caught.value.problems if p.field.endswith(field)]
    assert found and problem in found[0].problem, caught.value.problems
    assert found[0].field.startswith("models[0]")


# -- validation ----------------------------------------------------------------------------------


def report_input(**fields: object) -> ReportInput:
    values: dict[str, object] = {
        "decision_id": "d1",
        "lane": "claude",
        "provider": "anthropic",
        "model": "claude-opus-5-5",
        "input_tokens": 1_000,
        "output_tokens": 100,
        "latency_s": 1.0,
        "outcome": Outcome.SUCCESS,
        "retry_after_s": 0.0,
        "validation_passed": True,
        "first_time_pass": True,
        "cost_usd": None,
    }
    values.update(fields)
    return ReportInput(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"cached_input_tokens": 900, "cache_write_tokens": 100}, []),
        ({"cached_input_tokens": 1_001}, ["cached_input_tokens"]),
        ({"cache_write_tokens": 1_001}, ["cache_write_tokens"]),
        ({"cached_input_tokens": -1}, ["cached_input_tokens"]),
        ({"cache_write_tokens": -5}, ["cache_write_tokens"]),
        ({"cached_input_tokens": 600, "cache_write_tokens": 401}, ["cache_write_tokens"]),
        ({"input_tokens": -1, "cached_input_tokens": 0}, ["input_tokens"]),
    ],
)
def test_cache_counts_are_part_of_input_tokens(
    shipped_config: Config, fields: dict[str, int], expected: list[str]
) -> None:
    assert [v.field for v in validate_report(report_input(**fields), shipped_config)] == expected


def test_a_report_over_its_input_is_invalid_argument_naming_the_field(tmp_path: Path) -> None:
    server = LoopbackServer(LiveRouter.from_directory(CONFIG_DIR), tmp_path / "data")
    try:
        with RoutingClient(server.address) as client:
            decision = client.route(pb.RouteRequest(lane="claude", task=pb.Task(title="Review it")))
            request = pb.ReportRequest(
                decision_id=decision.decision_id,
                lane="claude",
                provider=decision.provider,
                model=decision.model,
                input_tokens=1_000,
                output_tokens=10,
                cached_input_tokens=800,
                cache_write_tokens=300,
                outcome=pb.OUTCOME_SUCCESS,
            )
            with pytest.raises(Exception) as caught:
                client.report(request)
            assert "cache_write_tokens" in str(caught.value)
            request.cache_write_tokens = 200
            ack = client.report(request)
            models = {m.id: m for m in LiveRouter.from_directory(CONFIG_DIR).current.config.models}
            assert ack.cost_usd == pytest.approx(
                reported_cost_usd(models[decision.model], 1_000, 10, 800, 200)
            )
    finally:
        server.stop()


# -- Economics -----------------------------------------------------------------------------------


def record(decision_id: str, lane_id: str, model_id: str, input_tokens: int, cached: int) -> ReportRecord:
    return ReportRecord(
        decision_id=decision_id,
        at=NOW,
        lane=lane_id,
        provider="p",
        model=model_id,
        input_tokens=input_tokens,
        output_tokens=10,
        latency_s=1.0,
        outcome=Outcome.SUCCESS,
        retry_after_s=0.0,
        validation_passed=True,
        first_time_pass=True,
        cost_usd=0.01,
        cost_exact=False,
        decision_known=True,
        cached_input_tokens=cached,
        cache_write_tokens=input_tokens - cached - 1 if input_tokens > cached else 0,
    )


def test_economics_shows_the_cache_share_overall_and_per_lane_and_model() -> None:
    book = EconomicsBook(FakeClock(NOW))
    book.add_report(record("a", "claude", "opus", 1_000, 900))
    book.add_report(record("b", "claude", "sonnet", 1_000, 500))
    book.add_report(record("c", "codex", "terra", 2_000, 0))
    window = book.breakdown(NOW - 3600)
    assert window.overall.cache_share == pytest.approx(1_400 / 4_000)
    assert window.overall.counters.reported_input_tokens == 4_000
    assert window.overall.counters.cache_write_tokens == 99 + 499 + 1_999
    assert window.lanes["claude"].cache_share == pytest.approx(0.7)
    assert window.lanes["codex"].cache_share == 0.0
    assert window.models["opus"].cache_share == pytest.approx(0.9)
    assert window.providers["p"].cache_share == pytest.approx(0.35)


# -- the ledger ----------------------------------------------------------------------------------


def test_a_version_4_ledger_gains_the_cache_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "ledger.sqlite3") as db:
        for statement in (s for migration in MIGRATIONS[:4] for s in migration):
            db.execute(statement)
        db.execute(
            "INSERT INTO reports (decision_id, at, lane, provider, model, input_tokens, output_tokens, "
            "latency_s, outcome, retry_after_s, validation_passed, first_time_pass, cost_usd, cost_exact, "
            "decision_known, cost_bounded, claimed_cost_usd) "
            "VALUES ('old', ?, 'claude', 'anthropic', 'claude-opus-5-5', 100, 10, 1.0, 1, 0, 1, 1, 0.5, "
            "1, 1, 0, NULL)",
            (NOW,),
        )
        db.execute("PRAGMA user_version = 4")
    assert SCHEMA_VERSION == 5
    new = dataclasses.replace(record("new", "claude", "claude-opus-5-5", 1_000, 900), at=NOW + 1)
    with SqliteStore(tmp_path, 31, clock=FakeClock(NOW)) as store:
        assert store.record_report(new).result(timeout=5)
        replayed = [r for r in store.replay(0.0) if isinstance(r, ReportRecord)]
    assert [(r.decision_id, r.cached_input_tokens, r.cache_write_tokens) for r in replayed] == [
        ("old", 0, 0),
        ("new", 900, 99),
    ]
    assert replayed[1] == new
    with sqlite3.connect(tmp_path / "ledger.sqlite3") as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def route(live: LiveRouter, outcomes: Outcomes, lane_id: str = "claude") -> Decision:
    task = Task(title="Review the payment flow", input_tokens=40_000, output_tokens=2_000)
    decision = live.current.route(RouteRequest(lane=lane_id, task=task), guards=outcomes)
    outcomes.record_decision(decision)
    return decision


def book(
    outcomes: Outcomes,
    decision: Decision,
    input_tokens: int,
    output_tokens: int,
    cached: int = 0,
    written: int = 0,
) -> ReportRecord:
    record = outcomes.prepare_report(
        ReportInput(
            decision_id=decision.decision_id,
            lane=decision.lane,
            provider=decision.provider,
            model=decision.model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_s=1.0,
            outcome=Outcome.SUCCESS,
            retry_after_s=0.0,
            validation_passed=True,
            first_time_pass=True,
            cost_usd=None,
            cached_input_tokens=cached,
            cache_write_tokens=written,
        )
    )
    assert outcomes.write_report(record).result(timeout=30)
    outcomes.apply_report(record)
    return record


def test_cache_priced_reports_rebuild_to_the_same_economics(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    live = LiveRouter.from_directory(CONFIG_DIR)
    outcomes = open_outcomes(live, tmp_path / "data", clock=clock)
    try:
        for cached, written in ((36_000, 2_000), (0, 0), (30_000, 0)):
            decision = route(live, outcomes)
            priced = book(outcomes, decision, 40_000, 2_000, cached, written)
            model = live.current.catalog.models[live.current.catalog.index[decision.model]]
            assert priced.cost_usd == pytest.approx(reported_cost_usd(model, 40_000, 2_000, cached, written))
        before = outcomes.book.breakdown(NOW - 3600)
    finally:
        outcomes.close()
    rebuilt = open_outcomes(live, tmp_path / "data", clock=clock)
    try:
        after = rebuilt.book.breakdown(NOW - 3600)
    finally:
        rebuilt.close()
    assert after == before
    assert after.overall.cache_share == pytest.approx(66_000 / 120_000)
    assert after.overall.counters.cache_write_tokens == 2_000


# -- Route's estimate ----------------------------------------------------------------------------


def test_routes_estimate_prices_expected_input_at_the_lanes_cache_share(
    shipped_config: Config, make_router: type[Router]
) -> None:
    router = make_router(shipped_config)  # type: ignore[operator]
    task = Task(title="Review the payment flow", input_tokens=40_000, output_tokens=2_000)
    request = RouteRequest(lane="claude", task=task, requested_model="claude-opus-5-5")
    cold = router.route(request, guards=FixedGuards())
    warm = router.route(request, guards=FixedGuards(cache_shares={"claude": 0.9}))
    opus = next(m for m in shipped_config.models if m.id == "claude-opus-5-5")
    assert cold.estimated_cost_usd == pytest.approx(expected_cost_usd(opus, 40_000, 2_000))
    assert warm.estimated_cost_usd == pytest.approx(
        (40_000 * 0.1 * 4.0 + 40_000 * 0.9 * 0.20 + 2_000 * 20.0) / 1e6
    )
    assert warm.estimated_cost_usd < cold.estimated_cost_usd
    assert "90% of input as cache reads at $0.2 (the lane's share)" in warm.rationale
    assert "cache reads" not in cold.rationale
    other = router.route(
        RouteRequest(lane="codex", task=task), guards=FixedGuards(cache_shares={"claude": 0.9})
    )
    assert other.estimated_cost_usd == pytest.approx(
        router.route(RouteRequest(lane="codex", task=task), guards=FixedGuards()).estimated_cost_usd
    )


def test_routes_estimate_falls_once_a_lanes_reports_show_a_high_cache_share(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    live = LiveRouter.from_directory(CONFIG_DIR)
    outcomes = open_outcomes(live, tmp_path / "data", clock=clock)
    try:
        first = route(live, outcomes)
        assert outcomes.cache_share("claude") == 0.0  # nothing reported yet
        book(outcomes, first, 40_000, 2_000, cached=36_000)
        second = route(live, outcomes)
        book(outcomes, second, 40_000, 2_000, cached=36_000)
        clock.now += CACHE_SHARE_REFRESH_S
        assert outcomes.cache_share("claude") == pytest.approx(0.9)
        assert outcomes.cache_share("codex") == 0.0
        later = route(live, outcomes)
        assert later.model == first.model
        assert later.estimated_cost_usd < first.estimated_cost_usd
        model = live.current.catalog.models[live.current.catalog.index[later.model]]
        assert later.estimated_cost_usd == pytest.approx(expected_cost_usd(model, 40_000, 2_000, 0.9))
    finally:
        outcomes.close()


# -- a lane client -------------------------------------------------------------------------------


def test_a_lane_run_printing_claude_cache_reads_books_the_cache_priced_cost(tmp_path: Path) -> None:
    """Claude usage without a cost: the report carries the cache reads and writes apart, and the
    service prices them at the catalog's cache prices."""
    usage = {
        "input_tokens": 12,
        "cache_read_input_tokens": 51_200,
        "cache_creation_input_tokens": 4_100,
        "output_tokens": 1_830,
    }
    printed = json.dumps({"type": "result", "subtype": "success", "usage": usage})
    server = LoopbackServer(LiveRouter.from_directory(CONFIG_DIR), tmp_path / "data")
    try:
        claude = pb.RouteRequest(lane="claude", task=pb.Task(title="Review the change"))
        command = fake_agent(tmp_path, {"*": {"usage": printed}}, "claude")
        assert lane.main([*lane_args(server.address, request=claude), *command]) == 0
        with RoutingClient(server.address) as client:
            window = next(w for w in client.economics().windows if w.window == "today")
        (named,) = window.models
        figures = named.figures
        model = next(m for m in load_config(CONFIG_DIR).models if m.id == named.name)
        inputs = 12 + 51_200 + 4_100
        assert (figures.reported_input_tokens, figures.cached_input_tokens) == (inputs, 51_200)
        assert figures.cache_write_tokens == 4_100
        assert figures.cache_share == pytest.approx(51_200 / inputs)
        assert figures.exact_spend_usd == 0.0
        assert figures.spend_usd == pytest.approx(reported_cost_usd(model, inputs, 1_830, 51_200, 4_100))
        assert figures.spend_usd < expected_cost_usd(model, inputs, 1_830)
    finally:
        server.stop()
