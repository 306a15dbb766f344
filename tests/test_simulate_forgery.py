"""Intruders among working lanes in the fleet simulator: the trust guardrails hold together with
the others, and the same attack without them is seen to steer the fleet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orxaq_grpc.config.load import load_config
from orxaq_grpc.simulate.scenario import ScenarioError, check_against, load_scenario
from tests.conftest import CONFIG_DIR
from tests.test_simulate import SCENARIOS, WALL_CLOCK_FIGURES, failed, simulate, simulate_command

SCENARIO = "forged-reports"
OPERATOR_CALLS = 3  # SetStopLoss(false), Scale, SetStopLoss(true)
CALLS = 50 + 20 + OPERATOR_CALLS  # each intruder's: unknown reports, cross-lane reports, operator calls


def intruders(kpis: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in kpis["forgery"]["intruders"]}


def answered(intruder: dict[str, Any]) -> dict[str, int]:
    return {code: n for code, n in intruder["status"].items() if n}


def test_intruders_are_refused_and_move_nothing_while_the_lanes_work() -> None:
    kpis = simulate(SCENARIO)
    assert not failed(kpis)
    assert len(kpis["expectations"]) == 11
    no_token, thief = intruders(kpis).values()

    assert no_token["calls"] == CALLS and answered(no_token) == {"UNAUTHENTICATED": CALLS}
    assert no_token["reasons"] == {"CREDENTIALS_MISSING": CALLS}
    # Codex's stolen token: its reports of decisions nobody made are kept, booked nowhere; other
    # lanes' decisions are refused whichever lane they name; operator calls need an operator.
    assert answered(thief) == {"OK": 50, "PERMISSION_DENIED": 20 + OPERATOR_CALLS}
    assert thief["reasons"] == {"OTHER_LANE": 10, "OTHER_LANES_DECISION": 10, "OPERATOR_REQUIRED": 3}
    assert thief["by_call"]["unknown_report"] == {"OK": 50} and thief["kept_unknown"] == 50
    assert thief["unknown_reports_kept"] == 50 and thief["reports_booked"] == 0
    for intruder in (no_token, thief):
        assert intruder["accepted"] == 0 and intruder["duplicates"] == 0
        assert (
            intruder["victims"] == 20 and intruder["in_flight_victims"] > 0
        )  # real decisions, some in flight
        assert intruder["spend_moved_usd"] == 0.0 and not intruder["budgets_moved_usd"]
        assert not intruder["breakers_moved"] and intruder["stop_loss"] == "unchanged"

    forgery = kpis["forgery"]
    assert forgery["status"] == {
        "OK": 50,
        "INVALID_ARGUMENT": 0,
        "UNAUTHENTICATED": CALLS,
        "PERMISSION_DENIED": 20 + OPERATOR_CALLS,
        "RESOURCE_EXHAUSTED": 0,
    }
    assert forgery["books"]["off_by_usd"] == 0.0 and forgery["books"]["providers_usd"] == kpis["spend_usd"]
    # The lanes worked throughout, with their own tokens, and the breakers had real faults to handle.
    assert kpis["access"]["lane_tokens"] == ["claude", "codex", "gemini", "local"]
    assert kpis["decisions"]["scored_share"] >= 0.95 and kpis["tasks"]["passed"] > 300
    assert kpis["tasks"]["call_outcomes"]["rate_limited"] > 0 and kpis["breaker_openings"]


def test_without_access_the_same_intruders_steer_the_fleet_and_the_expectations_say_so() -> None:
    kpis = simulate(SCENARIO, "access.enabled=false")
    assert "access" not in kpis
    failing = {v["name"] for v in kpis["expectations"] if not v["holds"]}
    assert failing == {
        "forgeries accepted",
        "forgery moves no spend or budget",
        "forgery moves no breaker",
        "forgery does not steer stop-loss",
        "the service's books match the providers' charges",
        "time in stop-loss",
        "scored decisions",
    }
    no_token, thief = intruders(kpis).values()
    assert answered(no_token) == {"OK": CALLS}
    # No token to steal: the thief names codex as its own, and a report of another lane's decision
    # naming codex is still INVALID_ARGUMENT on lane (a lane reports its own decisions).
    assert not thief["sent_token"]
    assert answered(thief) == {"OK": CALLS - 10, "INVALID_ARGUMENT": 10}
    assert thief["reasons"] == {"invalid lane": 10}
    for intruder in (no_token, thief):
        # Reports of decisions the service never made are kept but booked nowhere, by design.
        assert intruder["kept_unknown"] == 50 and intruder["unknown_reports_kept"] == 50
        assert (
            intruder["accepted_by_call"]["set_stop_loss"] == 2 and intruder["accepted_by_call"]["scale"] == 1
        )
        assert intruder["stop_loss"] != "unchanged"
    assert no_token["accepted_by_call"]["cross_lane_report"] == no_token["reports_booked"] > 0
    assert no_token["spend_moved_usd"] >= 5.0 * no_token["reports_booked"]  # each booked at its bound
    assert kpis["forgery"]["books"]["off_by_usd"] > 5.0


def test_an_unknown_token_is_unauthenticated_and_the_simulator_reads_with_its_operator_token() -> None:
    """Reads need a token too here: the simulator's own Health and Economics calls send the
    operator's. The same seed gives the same run, tokens and config version included."""
    assignments = ("duration_s=700", "events.0.credential=unknown", "events.1.at_s=650", "access.reads=token")
    kpis = simulate(SCENARIO, *assignments)
    assert not failed(kpis)
    assert kpis["access"]["reads"] == "token"
    unknown, thief = intruders(kpis).values()
    assert unknown["sent_token"] and answered(unknown) == {"UNAUTHENTICATED": CALLS}
    assert unknown["reasons"] == {"CREDENTIALS_UNKNOWN": CALLS}
    assert answered(thief) == {"OK": 50, "PERMISSION_DENIED": 20 + OPERATOR_CALLS}
    again = simulate(SCENARIO, *assignments)

    def deterministic(k: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in k.items() if key not in WALL_CLOCK_FIGURES}

    assert deterministic(kpis) == deterministic(again)


HEADER = """
name = "forges"
duration_s = 600

[policy]
config = "{config}"

[[tasks]]
title = "x"

[[lanes]]
name = "codex"
arrivals_per_min = 1
"""
BAD_FORGES = (
    HEADER
    + """
[[events]]
kind = "forge"
at_s = 60
credential = "root"
unknown_reports = -1

[[events]]
kind = "forge"
at_s = 120

[[events]]
kind = "forge"
at_s = 180
name = "thief"
credential = "lane:"
cross_lane_reports = 5
claimed_cost_usd = 2e6

[[events]]
kind = "forge"
at_s = 240
name = "thief"
credential = "lane:nosuch"
scale_and_stop_loss = true
forge_everything = true
"""
)


TWO_THIEVES = (
    HEADER
    + """
[[events]]
kind = "forge"
at_s = 60
name = "thief"
credential = "lane:codex"
cross_lane_reports = 5

[[events]]
kind = "forge"
at_s = 120
name = "{second}"
credential = "lane:nosuch"
unknown_reports = 5
"""
)


def test_a_bad_forge_event_is_refused_with_its_path_and_field(tmp_path: Path) -> None:
    path = tmp_path / "forges.toml"
    path.write_text(BAD_FORGES.format(config=CONFIG_DIR))
    with pytest.raises(ScenarioError) as refused:
        load_scenario(path)
    problems = {p.field: p.problem for p in refused.value.problems}
    assert {p.path for p in refused.value.problems} == {str(path)}
    assert set(problems) == {
        "events.0.credential",
        "events.0.unknown_reports",
        "events.1",
        "events.2.credential",
        "events.2.claimed_cost_usd",
        "events.3.forge_everything",
    }
    assert problems["events.0.credential"] == '\'root\' is not "none", "unknown" or "lane:<lane id>"'
    assert "greater than or equal to 0" in problems["events.0.unknown_reports"]
    assert problems["events.1"].startswith("the intruder sends nothing")
    assert problems["events.3.forge_everything"] == "unknown field"

    # Each field valid, the fields together not: one name for two intruders; then a lane the
    # config does not have.
    path.write_text(TWO_THIEVES.format(config=CONFIG_DIR, second="thief"))
    with pytest.raises(ScenarioError) as twice:
        load_scenario(path)
    (problem,) = twice.value.problems
    assert (problem.path, problem.field) == (str(path), "events.1.name")
    assert problem.problem == "'thief' is also events.0's name"
    path.write_text(TWO_THIEVES.format(config=CONFIG_DIR, second="other"))
    scenario = load_scenario(path)
    with pytest.raises(ScenarioError) as unknown_lane:
        check_against(scenario, load_config(CONFIG_DIR), path)
    (problem,) = unknown_lane.value.problems
    assert (problem.path, problem.field) == (str(path), "events.1.credential")
    assert problem.problem == "lane 'nosuch' is not in the config"


def test_the_command_names_a_bad_forge_field_and_runs_nothing() -> None:
    path = SCENARIOS / f"{SCENARIO}.toml"
    result = simulate_command(str(path), "--set", "events.1.credential=lane:nosuch")
    assert result.returncode == 2 and result.stdout == ""
    assert f"{path}: events.1.credential: lane 'nosuch' is not in the config" in result.stderr


def test_forgery_expectations_need_an_intruder(tmp_path: Path) -> None:
    path = tmp_path / "no-intruder.toml"
    path.write_text(
        HEADER.format(config=CONFIG_DIR)
        + "[expect]\nmax_forgeries_accepted = 0\nforgery_moves_nothing = true\n"
    )
    with pytest.raises(ScenarioError) as refused:
        load_scenario(path)
    assert {(p.path, p.field) for p in refused.value.problems} == {
        (str(path), "expect.max_forgeries_accepted"),
        (str(path), "expect.forgery_moves_nothing"),
    }
