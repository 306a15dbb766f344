"""The fleet simulator drives the real service: the guardrails must hold together under it.

The shipped scenarios run here at small scale (shorter runs, via the same overrides `--set` takes);
`benchmarks/fleet.py` runs them at full scale.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orxaq_grpc.config.load import load_config
from orxaq_grpc.simulate.engine import run_scenario
from orxaq_grpc.simulate.scenario import ScenarioError, check_against, load_scenario, parse_assignments
from tests.conftest import CLI, CONFIG_DIR

SCENARIOS = CONFIG_DIR / "scenarios"
SHIPPED = sorted(SCENARIOS.glob("*.toml"))
WALL_CLOCK_FIGURES = ("route_latency_ms", "decisions_per_s", "wall_s")


def simulate(name: str, *assignments: str) -> dict[str, Any]:
    path = SCENARIOS / f"{name}.toml"
    return run_scenario(load_scenario(path, parse_assignments(list(assignments))), path)


def simulate_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "simulate", *args], capture_output=True, text=True, timeout=120, check=False)


def failed(kpis: dict[str, Any]) -> list[str]:
    return [f"{v['name']}: {v['detail']}" for v in kpis["expectations"] if not v["holds"]]


def test_the_issue_ships_every_named_scenario() -> None:
    names = {path.stem for path in SHIPPED}
    expected = {"budget-race", "restart", "rate-limit-noise", "provider-outage", "price-drift"}
    assert names >= expected | {"quality-regression", "slowdown"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_scenarios_are_valid_against_the_shipped_config(path: Path) -> None:
    scenario = load_scenario(path)
    check_against(scenario, load_config(CONFIG_DIR), path)
    assert scenario.expect != type(scenario.expect)()  # each says what must hold


@pytest.mark.parametrize("stop_loss", ["true", "false"])
@pytest.mark.parametrize("on_exhausted", ["static_fallback", "error"])
def test_a_budget_is_a_cap_with_or_without_stop_loss_and_either_exhaustion_policy(
    stop_loss: str, on_exhausted: str
) -> None:
    kpis = simulate(
        "budget-race",
        "duration_s=400",
        f"policy.overrides.policy.stop_loss.enabled={stop_loss}",
        f"policy.overrides.policy.budgets.on_exhausted={on_exhausted}",
    )
    assert not failed(kpis)
    budgets = {(b["scope"], b["name"]): b for b in kpis["budgets"]}
    assert set(budgets) == {("overall", ""), ("lane", "codex"), ("provider", "anthropic")}
    overall = budgets[("overall", "")]
    assert overall["spent_usd"] >= 0.95 * overall["limit_usd"]  # the race did reach the cap
    assert all(b["overspend_usd"] <= 1e-6 for b in budgets.values())
    assert kpis["tasks"]["refused"] > 0  # claude's lane has no zero-cost model: refused, not overspent
    stop_loss_on = kpis["stop_loss"]["episodes"]
    if stop_loss == "true":  # stop-loss entered on daily_spend and kept the cap while pinned
        assert stop_loss_on and stop_loss_on[0]["trigger"] == "daily_spend"
        assert kpis["decisions"]["by_fallback_reason"].get("stop_loss_static", 0) > 0
    else:
        assert not stop_loss_on


def test_a_budget_running_out_is_the_budget_at_work_not_an_unstable_router() -> None:
    """At the shipped threshold (100% of a budget) the cap holds, so daily_spend never fires; the
    refusals that follow are a third of all decisions, and still no stop-loss on router_unstable."""
    kpis = simulate(
        "budget-race",
        "duration_s=900",
        "policy.overrides.policy.stop_loss.spend_over_budget_share=1.0",
        "expect.max_stop_loss_s=0",
    )
    assert not failed(kpis)
    decisions = kpis["decisions"]
    assert decisions["by_fallback_reason"]["budget_exhausted"] > 0.3 * decisions["total"]


def test_reservations_survive_a_restart_and_a_reloaded_limit_applies_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO):
        kpis = simulate("restart", "duration_s=300")
    assert not failed(kpis)
    assert [e["event"] for e in kpis["events"]] == ["restart", "reload"]
    reload = kpis["events"][1]
    before, after = reload["config"].split(" -> ")
    assert before != after and after == kpis["config_version"]
    assert "budget overall: daily limit $8.00 -> $6.00" in caplog.text
    assert "restored" in caplog.text and "open reservations" in caplog.text
    (overall,) = kpis["budgets"]
    assert overall["limit_usd"] == 6.0 and 5.7 <= overall["spent_usd"] <= 6.0 + 1e-6
    # What the service held across the restart: the sample right after it holds what was open.
    at_restart = [s for s in kpis["timeline"] if s["t"] == 30.0]
    assert len(at_restart) == 2 and at_restart[1]["committed_usd"] == pytest.approx(
        at_restart[0]["committed_usd"]
    )
    assert at_restart[0]["committed_usd"] > at_restart[0]["spend_usd"] + 1.0  # reservations were open


@pytest.mark.parametrize(("share", "scored"), [(0.01, 0.95), (0.05, 0.90)])
def test_rate_limit_noise_blocks_models_for_their_retry_after_and_never_the_fleet(
    share: float, scored: float
) -> None:
    kpis = simulate("rate-limit-noise", f"faults.0.share={share}", f"expect.min_scored_share={scored}")
    assert not failed(kpis)
    assert kpis["tasks"]["call_outcomes"]["rate_limited"] > 0
    assert kpis["breaker_openings"]  # models were blocked ...
    assert all(name.startswith("model ") for name in kpis["breaker_openings"])  # ... never a provider
    assert kpis["stop_loss"]["time_s"] == 0


def test_a_provider_outage_is_routed_around_and_its_models_get_traffic_back() -> None:
    kpis = simulate("provider-outage")
    assert not failed(kpis)
    openai, one_model = kpis["outages"]
    assert openai["calls_into_outage"] > 0 and openai["routed_around_s"] <= 10
    assert openai["traffic_back_s"] is not None
    assert kpis["breaker_openings"].get("provider openai", 0) >= 1
    # one google model alone: blocked (and back after), its provider never
    assert kpis["breaker_openings"]["model gemini-3.5-flash-lite"] >= 1
    assert one_model["traffic_back_s"] is not None and "provider google" not in kpis["breaker_openings"]


def test_stop_loss_enters_on_a_quality_regression_and_ends_by_itself_after_the_model_recovers() -> None:
    """Shorter windows than the shipped policy's, so the run takes seconds."""
    kpis = simulate(
        "quality-regression",
        "duration_s=7200",
        "faults.0.start_s=1800",
        "faults.0.end_s=2700",
        "policy.overrides.policy.stop_loss.recent_window_s=900",
        "policy.overrides.policy.stop_loss.baseline_window_s=3600",
        "policy.overrides.policy.stop_loss.cool_off_s=600",
    )
    assert not failed(kpis)
    (episode,) = kpis["stop_loss"]["episodes"]
    assert 1800 < episode["entered_s"] < 2700
    assert episode["exit"] == "cool_off" and episode["exited_s"] > 2700
    assert kpis["decisions"]["by_fallback_reason"]["stop_loss_static"] > 0


def test_the_same_seed_gives_the_same_run_and_another_seed_another() -> None:
    def deterministic(kpis: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in kpis.items() if key not in WALL_CLOCK_FIGURES}

    first = simulate("rate-limit-noise", "duration_s=600", "faults.0.share=0.05")
    again = simulate("rate-limit-noise", "duration_s=600", "faults.0.share=0.05")
    other = simulate("rate-limit-noise", "duration_s=600", "faults.0.share=0.05", "seed=12")
    assert deterministic(first) == deterministic(again)
    assert deterministic(first)["tasks"] != deterministic(other)["tasks"]


BAD = """
name = "bad"
duration_s = 600
bogus = 1

[policy]
config = "{config}"

[[lanes]]
name = "nowhere"
arrivals_per_min = 5
tasks = [{{ title = "x", input_tokens = [10, 5] }}]

[[faults]]
kind = "rate_limit"
share = 1.5

[[faults]]
kind = "outage"
provider = "acme"
start_s = 300
end_s = 200
"""


def test_a_bad_scenario_is_refused_with_its_file_every_field_and_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD.format(config=CONFIG_DIR))
    with pytest.raises(ScenarioError) as refused:
        load_scenario(path)
    problems = {(p.path, p.field) for p in refused.value.problems}
    assert problems == {
        (str(path), "bogus"),
        (str(path), "lanes.0.tasks.0.input_tokens"),
        (str(path), "faults.0.share"),
        (str(path), "faults.1"),
    }
    text = str(refused.value)
    assert "unknown field" in text and "lo 10 is above hi 5" in text and "end_s 200 is not after" in text

    path.write_text(BAD.format(config=CONFIG_DIR).replace("bogus = 1\n", "").replace("[10, 5]", "[5, 10]"))
    scenario = load_scenario(path, parse_assignments(["faults.0.share=0.5", "faults.1.end_s=400"]))
    with pytest.raises(ScenarioError) as unknown:
        check_against(scenario, load_config(CONFIG_DIR), path)
    assert {p.field for p in unknown.value.problems} == {"lanes.0.lane", "faults.1.provider"}


def test_policy_overrides_the_config_refuses_are_named_and_nothing_runs() -> None:
    budget_race = str(SCENARIOS / "budget-race.toml")
    result = simulate_command(budget_race, "--set", "policy.overrides.policy.budgets.daily_usd=-1")
    assert result.returncode == 2
    assert "budget-race.toml: policy.overrides: policy.toml: budgets.daily_usd:" in result.stderr
    assert result.stdout == ""


def test_the_command_prints_kpis_writes_json_and_a_plot_and_fails_on_a_broken_expectation(
    tmp_path: Path,
) -> None:
    out, picture = tmp_path / "kpis.json", tmp_path / "run.png"
    restart = str(SCENARIOS / "restart.toml")
    run = simulate_command(restart, "--set", "duration_s=120", "--json", str(out), "--plot", str(picture))
    assert run.returncode == 0, run.stderr
    assert "expectations  1 of 1 hold" in run.stdout and "overall" in run.stdout
    assert f"KPIs as JSON in {out}" in run.stdout
    assert "simulate: 120 of 120 s" in run.stderr  # progress
    kpis = json.loads(out.read_text())
    assert kpis["scenario"] == "restart" and kpis["timeline"]
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    strict = simulate_command(
        restart,
        "--quiet",
        "--json",
        str(out),
        "--set",
        "duration_s=120",
        "--set",
        "expect.min_scored_share=1",
    )
    assert strict.returncode == 1
    assert "FAILS  scored decisions" in strict.stdout
    assert not json.loads(out.read_text())["expectations"][-1]["holds"]


def test_the_kpis_go_to_simulations_by_default(tmp_path: Path) -> None:
    run = subprocess.run(
        [*CLI, "simulate", str(SCENARIOS / "restart.toml"), "--quiet", "--set", "duration_s=60"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "simulations" / "restart-seed31.json").read_text())["scenario"] == "restart"


QUEUE = """
name = "queue"
duration_s = 600
[policy]
config = "{config}"
[policy.overrides.policy.budgets]
daily_usd = 0.1
[[tasks]]
title = "Split the billing service into modules"
input_tokens = 70000
output_tokens = 4000
[[lanes]]
name = "claude"
agents = 1
arrivals_per_min = 600
"""


def test_a_long_queue_of_refused_tasks_is_worked_off_and_the_cap_holds(tmp_path: Path) -> None:
    """One claude agent, ten tasks a second, 10 cents: thousands refused one after another."""
    path = tmp_path / "queue.toml"
    path.write_text(QUEUE.format(config=CONFIG_DIR))
    kpis = run_scenario(load_scenario(path), path)
    assert kpis["tasks"]["refused"] > 1000
    (overall,) = kpis["budgets"]
    assert overall["overspend_usd"] == 0.0 and overall["spent_usd"] <= 0.1


RELOADS = """
name = "reloads"
duration_s = 600
[policy]
config = "{config}"
[[tasks]]
title = "x"
[[lanes]]
name = "codex"
arrivals_per_min = 1
[[events]]
kind = "reload"
at_s = 60
overrides = {overrides}
"""


@pytest.mark.parametrize(
    ("overrides", "field", "problem"),
    [
        ("{ policy = { budgets = { daily_usd = -1 } } }", "events.0.overrides", "budgets.daily_usd: must be"),
        (
            "{ catalog = { models = { nosuch = { quality = 1 } } } }",
            "events.0.overrides.catalog.models.nosuch",
            "not a model",
        ),
        ("{ policy = 3 }", "events.0.overrides.policy", "must be a table"),
        ("{ polic = {} }", "events.0.overrides.polic", "is not a config file"),
    ],
)
def test_a_reload_the_config_would_refuse_is_named_before_the_run(
    tmp_path: Path, overrides: str, field: str, problem: str
) -> None:
    path = tmp_path / "reloads.toml"
    path.write_text(RELOADS.format(config=CONFIG_DIR, overrides=overrides))
    with pytest.raises(ScenarioError) as refused:
        run_scenario(load_scenario(path), path)
    (only,) = refused.value.problems
    assert (only.path, only.field) == (str(path), field) and problem in only.problem
