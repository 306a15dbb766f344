"""Several replicas under the fleet simulator ([service] replicas): three replicas sharing a Redis
and a ledger must behave as one service. A budget race across them spends no more than one budget;
a report reaching another replica than the one that routed its decision is known there and settles
the reservation; a rate limit reported to one blocks the model on all; their Economics and Health
agree. The same traffic on replicas that share nothing breaks every one of these: the guardrail is
what holds, not the traffic.

`config/scenarios/replicas.toml` runs here shortened (the race reaches the cap at about 360 s);
`benchmarks/fleet.py` runs it at full length.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orxaq_grpc.simulate import replicas as replicas_module
from orxaq_grpc.simulate.engine import run_scenario
from orxaq_grpc.simulate.replicas import ReplicasOutOfStep, ThrowawayRedis
from orxaq_grpc.simulate.scenario import ScenarioError, load_scenario, parse_assignments
from tests.conftest import CLI, CONFIG_DIR

SCENARIO = CONFIG_DIR / "scenarios" / "replicas.toml"
SHORT = "duration_s=420"
WALL_CLOCK_FIGURES = ("route_latency_ms", "decisions_per_s", "wall_s")


def simulate(*assignments: str, path: Path = SCENARIO) -> dict[str, Any]:
    return run_scenario(load_scenario(path, parse_assignments(list(assignments))), path)


def verdicts(kpis: dict[str, Any]) -> dict[str, bool]:
    return {v["name"]: v["holds"] for v in kpis["expectations"]}


@pytest.fixture(scope="module")
def shared() -> dict[str, Any]:
    return simulate(SHORT)


@pytest.fixture(scope="module")
def alone() -> dict[str, Any]:
    return simulate(SHORT, "service.shared=false")


def test_three_shared_replicas_spend_one_budget_and_know_each_others_decisions(
    shared: dict[str, Any],
) -> None:
    held = verdicts(shared)
    budgets = {(b["scope"], b["name"]): b for b in shared["budgets"]}
    assert set(budgets) == {("overall", ""), ("lane", "codex"), ("provider", "anthropic")}
    assert all(held[f"budget {scope} {name}".strip() + " is a cap"] for scope, name in budgets)
    overall = budgets[("overall", "")]
    assert overall["spent_usd"] >= 0.95 * overall["limit_usd"]  # the race did reach the cap ...
    assert all(b["overspend_usd"] == 0.0 for b in budgets.values())  # ... and no replica passed it
    assert shared["tasks"]["refused"] > 0

    r = shared["replicas"]
    assert r["count"] == 3 and r["shared"]
    routes = [b["routes"] for b in r["by_replica"]]
    assert max(routes) - min(routes) <= 1 and sum(routes) == shared["decisions"]["total"]  # round robin
    assert all(b["reports"] > 0 for b in r["by_replica"])
    # Every report went to another replica than its decision's, and each was known there ...
    assert (
        r["cross_replica_reports"]
        == sum(b["reports"] for b in r["by_replica"])
        == shared["tasks"]["attempts"]
    )
    assert r["unknown_reports"] == 0 and held["reports known on the replica they reach"]
    # ... and settled the reservation the other replica made: what is held is what is in flight.
    assert r["in_flight_at_end"] > 0
    assert r["reserved_at_end_usd"] == pytest.approx(r["in_flight_estimates_usd"], abs=1e-6)
    assert held["reports settle their reservation wherever they land"]

    # Economics agree on every replica: the fleet's decisions, reports and spend, one budget.
    for b in r["by_replica"]:
        assert b["decisions_today"] == shared["decisions"]["total"]
        assert b["reports_today"] == shared["tasks"]["attempts"]
        assert b["unknown_reports_today"] == 0
        assert b["spend_today_usd"] == pytest.approx(shared["spend_usd"], abs=1e-6)
    for key in ("decisions_today", "reports_today", "spend_today_usd", "budgets", "stop_loss"):
        assert len({repr(b[key]) for b in r["by_replica"]}) == 1, key
    # Each replica applied every record the others published, and nothing else.
    published = sum(b["published"] for b in r["by_replica"])
    assert all(b["applied"] == published - b["published"] > 0 for b in r["by_replica"])
    assert r["exchange"]["waits"] > 0


def test_a_rate_limit_reported_to_one_replica_blocks_its_model_on_every_replica(
    shared: dict[str, Any],
) -> None:
    r = shared["replicas"]
    assert r["rate_limits_reported"] >= 5
    assert r["rate_limits_blocked_everywhere"] == r["rate_limits_reported"], r["rate_limits_not_everywhere"]
    assert r["checks_agreed"] == r["checks"], r["first_disagreement"]
    assert r["agree"], r["differences"]
    assert all(verdicts(shared).values())


def test_the_same_traffic_on_replicas_that_share_nothing_spends_the_budget_once_per_replica(
    alone: dict[str, Any],
) -> None:
    held = verdicts(alone)
    r = alone["replicas"]
    assert r["count"] == 3 and not r["shared"]
    broken = {name for name, holds in held.items() if not holds}
    assert broken >= {  # what holds on shared replicas fails here (codex stays under its $2 this short)
        "budget overall is a cap",
        "budget provider anthropic is a cap",
        "replicas agree at the end",
        "replicas agree at every check",
        "reports known on the replica they reach",
        "reports settle their reservation wherever they land",
        "rate limits block their model on every replica",
    }
    overall = next(b for b in alone["budgets"] if b["scope"] == "overall")
    # Each replica has its own $5: the fleet spends well past one budget (at full length, three),
    # hundreds of estimates over.
    assert overall["spent_usd"] > 1.5 * overall["limit_usd"]
    assert overall["overspend_estimates"] > 100
    # Reports reach a replica that never saw the decision: unknown, so nothing settles and no
    # rate limit blocks anything, anywhere.
    assert r["unknown_reports"] == r["cross_replica_reports"] > 0
    assert r["reserved_at_end_usd"] > r["in_flight_estimates_usd"] + overall["limit_usd"]
    assert r["rate_limits_reported"] > 0 and r["rate_limits_blocked_everywhere"] == 0
    assert not r["agree"]


def test_the_same_seed_gives_the_same_run_on_replicas() -> None:
    def deterministic(kpis: dict[str, Any]) -> dict[str, Any]:
        figures = {key: value for key, value in kpis.items() if key not in WALL_CLOCK_FIGURES}
        figures["replicas"] = {k: v for k, v in kpis["replicas"].items() if k != "exchange"}  # wall clock
        return figures

    first = simulate("duration_s=120")
    again = simulate("duration_s=120")
    assert first["replicas"]["cross_replica_reports"] > 50
    assert deterministic(first) == deterministic(again)


def test_restarts_reloads_and_intruders_reach_every_replica() -> None:
    restart = CONFIG_DIR / "scenarios" / "restart.toml"
    kpis = simulate("duration_s=300", "service.replicas=3", path=restart)
    assert all(verdicts(kpis).values())
    restarted, reloaded = kpis["events"]
    assert (restarted["event"], reloaded["event"]) == ("restart", "reload")
    assert reloaded["applied"]  # on every replica; the $8 -> $6 cut held across all three
    (overall,) = kpis["budgets"]
    assert overall["limit_usd"] == 6.0 and 5.7 <= overall["spent_usd"] <= 6.0 + 1e-6
    r = kpis["replicas"]
    assert r["agree"] and r["checks_agreed"] == r["checks"]
    # reports of decisions made before the restart, on replicas started after it: known too
    assert r["cross_replica_reports"] > 0 and r["unknown_reports"] == 0
    assert r["reserved_at_end_usd"] == pytest.approx(r["in_flight_estimates_usd"], abs=1e-6)

    forged = CONFIG_DIR / "scenarios" / "forged-reports.toml"
    kpis = simulate("duration_s=1300", "service.replicas=3", path=forged)
    assert all(verdicts(kpis).values()), [v for v in kpis["expectations"] if not v["holds"]]
    assert kpis["forgery"]["calls"] > 0 and kpis["forgery"]["accepted"] == 0
    assert kpis["replicas"]["agree"]


def test_shared_replicas_without_redis_server_are_refused_naming_the_file_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server on it
    scenario = load_scenario(SCENARIO)
    with pytest.raises(ScenarioError) as refused:
        run_scenario(scenario, SCENARIO)
    (problem,) = refused.value.problems
    assert (problem.path, problem.field) == (str(SCENARIO), "service.replicas")
    assert "redis-server is not on PATH: install redis-server" in problem.problem


def test_the_command_refuses_it_too(tmp_path: Path) -> None:
    run = subprocess.run(
        [*CLI, "simulate", str(SCENARIO), "--quiet", "--set", "duration_s=10"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PATH": str(tmp_path)},
        cwd=tmp_path,
    )
    assert run.returncode == 2
    assert f"{SCENARIO}: service.replicas: 3 replicas sharing state need a Redis" in run.stderr
    assert "install redis-server" in run.stderr and run.stdout == ""


def test_a_run_that_fails_stops_its_replicas_and_its_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    processes: list[subprocess.Popen[bytes] | None] = []
    start = ThrowawayRedis.start

    def keep(self: ThrowawayRedis) -> str:
        url = start(self)
        processes.append(self._process)
        return url

    monkeypatch.setattr(ThrowawayRedis, "start", keep)
    monkeypatch.setattr(replicas_module, "SETTLE_TIMEOUT_S", -1.0)  # the first wait fails the run
    with pytest.raises(ReplicasOutOfStep) as failed:
        simulate("duration_s=60")
    (problem,) = failed.value.problems
    assert problem.field == "service.replicas" and "did not apply one another's records" in problem.problem
    assert len(processes) == 1
    process = processes[0]
    assert process is not None and process.poll() is not None  # redis-server stopped


@pytest.mark.parametrize(
    ("assignments", "field", "text"),
    [
        (["service.replicas=1"], "expect.replicas_agree", "needs [service] replicas of 2 or more"),
        (["service.replicas=9"], "service.replicas", "less than or equal to 8"),
        (["service.replicas=0"], "service.replicas", "greater than or equal to 1"),
        (["service.sharing=true"], "service.sharing", "unknown field"),
    ],
)
def test_a_bad_service_table_is_refused(assignments: list[str], field: str, text: str) -> None:
    with pytest.raises(ScenarioError) as refused:
        load_scenario(SCENARIO, parse_assignments(assignments))
    problems = {p.field: p.problem for p in refused.value.problems}
    assert field in problems and text in problems[field]
