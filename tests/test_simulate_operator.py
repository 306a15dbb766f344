"""An operator's controls under the fleet simulator ([[events]] of kind operate): a lane paused during
an outage answers its static chain, reason lane_paused, on every replica until it is resumed, and
not after; the pause reads as deliberate, not as an unstable router; a circuit closed by hand gives
its model traffic back before the circuit would have. Two replicas share a Redis and a ledger: each
call reaches one of them and the other follows the ledger at its next check. On replicas that share
nothing the other never follows, and the expectations say so.

`config/scenarios/operator.toml` runs here shortened (just past the close at 902.5 s);
`benchmarks/fleet.py` runs it at full length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orxaq_grpc.config.load import load_config
from orxaq_grpc.simulate.scenario import ScenarioError, check_against, load_scenario, parse_assignments
from tests.conftest import CONFIG_DIR
from tests.test_simulate import failed, simulate_command
from tests.test_simulate_replicas import simulate as simulate_file
from tests.test_simulate_replicas import verdicts

SCENARIO = CONFIG_DIR / "scenarios" / "operator.toml"
SHORT = "duration_s=960"
PINNED = "lane codex pinned while paused at 392.5 s"
RESUMED = "lane codex routed as before once resumed at 662.5 s"
CLOSED = "model gpt-6-luna routed once closed at 902.5 s"


def simulate(*assignments: str, path: Path = SCENARIO) -> dict[str, Any]:
    return simulate_file(*assignments, path=path)


@pytest.fixture(scope="module")
def shared() -> dict[str, Any]:
    return simulate(SHORT)


def test_a_paused_lane_answers_its_static_chain_on_every_replica_until_resumed(
    shared: dict[str, Any],
) -> None:
    assert not failed(shared)
    assert {PINNED, RESUMED, CLOSED} <= set(verdicts(shared))
    calls = [(e["action"], e["target"], e["changed"], e["replica"]) for e in shared["events"]]
    assert calls == [  # each call to one replica, in turn
        ("pause_lane", "codex", True, 0),
        ("resume_lane", "codex", True, 1),
        ("close_breaker", "model:gpt-6-luna", True, 0),
    ]
    operator = shared["operator"]
    assert operator["follow_s"] == 5.0  # the stop-loss check interval: the other replica's next check
    (pause,) = operator["pauses"]
    assert (pause["paused_at_s"], pause["resumed_at_s"], pause["pinned_from_s"]) == (392.5, 662.5, 397.5)
    # Every codex decision from then to the resume: its static chain from the pin, reason lane_paused.
    assert pause["decisions"] > 50 and pause["pinned"] == pause["decisions"]
    assert pause["models"] == {"gpt-6.1-sol": pause["decisions"]} and not pause["not_pinned_first"]
    after = pause["after_resume"]
    assert after["from_s"] == 667.5 and after["decisions"] > 50 and after["lane_paused"] == 0
    reasons = shared["decisions"]["by_fallback_reason"]
    assert reasons["lane_paused"] >= pause["pinned"]
    assert set(reasons) == {"none", "lane_paused"}  # no disruptive fallback anywhere
    # Deliberate: not an unstable router, on any check from the pause on.
    assert operator["router_unstable_entered_s"] == [] and shared["stop_loss"]["episodes"] == []
    assert set(operator["overall_states"]) == {"healthy"}
    # The pause went to replica 0 and the resume to replica 1, and Routes alternate between them: each
    # followed the other's call from the ledger. They showed the same paused lanes at every check.
    replicas = shared["replicas"]
    assert replicas["checks_agreed"] == replicas["checks"] > 0


def test_a_circuit_closed_by_hand_takes_traffic_before_it_would_have_by_itself(
    shared: dict[str, Any],
) -> None:
    (close,) = shared["operator"]["closes"]
    assert close["state_before"] == "open" and close["changed"]
    assert close["routed_again_s"] is not None and close["routed_again_s"] < close["reopens_in_s"]
    assert verdicts(shared)[CLOSED]


def test_one_replica_applies_a_pause_at_once() -> None:
    kpis = simulate(SHORT, "service.replicas=1", "expect.replicas_agree=false")
    assert not failed(kpis)
    assert kpis["operator"]["follow_s"] == 0.0
    (pause,) = kpis["operator"]["pauses"]
    assert pause["pinned_from_s"] == 392.5 and pause["pinned"] == pause["decisions"] > 0
    assert pause["following"]["decisions"] == 0


def test_on_replicas_that_share_nothing_the_other_never_follows_and_the_expectations_say_so() -> None:
    kpis = simulate("duration_s=700", "events.2.at_s=690", "service.shared=false")
    held = verdicts(kpis)
    assert not held[PINNED] and not held[RESUMED]
    assert not held["replicas agree at the end"]
    (pause,) = kpis["operator"]["pauses"]
    assert 0 < pause["pinned"] < pause["decisions"]  # only the replica that got the call pinned it
    assert pause["not_pinned_first"] and all(d["reason"] != "lane_paused" for d in pause["not_pinned_first"])
    resume = kpis["events"][1]
    assert (resume["action"], resume["replica"], resume["changed"]) == ("resume_lane", 1, False)
    assert pause["after_resume"]["lane_paused"] > 0  # replica 0, which never heard the resume
    assert any(
        "paused_lanes: replica 0 ['codex'], replica 1 []" in d for d in kpis["replicas"]["differences"]
    )


BAD = """
name = "bad-operator"
duration_s = 600

[policy]
config = "{config}"

[[tasks]]
title = "Add tests for the retry helper"

[[lanes]]
name = "codex"
arrivals_per_min = 5

[[events]]
kind = "operate"
at_s = 100
action = "pause_lane"

[[events]]
kind = "operate"
at_s = 50
action = "resume_lane"
lane = "local"

[[events]]
kind = "operate"
at_s = 200
action = "close_breaker"
lane = "codex"

[[events]]
kind = "operate"
at_s = 300
action = "pause_lane"
lane = "codex"
model = "gpt-6-luna"

[[events]]
kind = "operate"
at_s = 400
action = "pause_lane"
lane = "codex"

[expect]
paused_lanes_pinned = true
"""


def test_a_bad_operate_event_is_refused_with_its_path_field_and_problem(tmp_path: Path) -> None:
    path = tmp_path / "operator.toml"
    path.write_text(BAD.format(config=CONFIG_DIR))
    with pytest.raises(ScenarioError) as refused:
        load_scenario(path)
    assert {p.path for p in refused.value.problems} == {str(path)}
    assert {p.field: p.problem for p in refused.value.problems} == {
        "events.0.lane": "pause_lane needs a lane",
        "events.1.lane": "no pause_lane of 'local' before it to resume",
        "events.2.model": "close_breaker needs a model",
        "events.2.lane": "close_breaker takes no lane",
        "events.3.model": "pause_lane takes no model",
        "events.4.lane": "'codex' is paused already, by events.3",
    }

    no_events = BAD.format(config=CONFIG_DIR).split("[[events]]")[0]
    path.write_text(no_events + "[expect]\nclosed_breakers_take_traffic = true\n")
    with pytest.raises(ScenarioError) as nothing_to_judge:
        load_scenario(path)
    (problem,) = nothing_to_judge.value.problems
    assert problem.field == "expect.closed_breakers_take_traffic"
    assert problem.problem == 'no [[events]] of kind "operate" with action "close_breaker" to judge it on'


NOSUCH = "lane 'nosuch' is not in the config"


@pytest.mark.parametrize(
    ("assignments", "problems"),
    [
        (
            ["events.0.lane=nosuch", "events.1.lane=nosuch"],
            {"events.0.lane": NOSUCH, "events.1.lane": NOSUCH},
        ),
        (["events.2.model=nosuch"], {"events.2.model": "model 'nosuch' is not in the config"}),
        (["events.0.note=" + "x" * 1025], {"events.0.note": "is 1025 characters; at most 1024"}),
    ],
)
def test_names_the_config_does_not_have_are_refused(assignments: list[str], problems: dict[str, str]) -> None:
    scenario = load_scenario(SCENARIO, parse_assignments(assignments))
    with pytest.raises(ScenarioError) as refused:
        check_against(scenario, load_config(CONFIG_DIR), SCENARIO)
    assert {p.path for p in refused.value.problems} == {str(SCENARIO)}
    assert {p.field: p.problem for p in refused.value.problems} == problems


def test_an_unknown_action_and_a_resume_before_its_pause_are_refused() -> None:
    with pytest.raises(ScenarioError) as refused:
        load_scenario(SCENARIO, parse_assignments(["events.0.action=reboot"]))
    problems = {p.field: p.problem for p in refused.value.problems}
    assert "'pause_lane', 'resume_lane' or 'close_breaker'" in problems["events.0.action"]

    with pytest.raises(ScenarioError) as early:
        load_scenario(SCENARIO, parse_assignments(["events.1.at_s=300"]))
    assert {p.field: p.problem for p in early.value.problems} == {
        "events.1.lane": "no pause_lane of 'codex' before it to resume",
    }


def test_the_command_names_a_bad_lane_and_runs_nothing() -> None:
    result = simulate_command(str(SCENARIO), "--set", "events.0.lane=nosuch", "--set", "events.1.lane=nosuch")
    assert result.returncode == 2 and result.stdout == ""
    assert f"{SCENARIO}: events.0.lane: {NOSUCH}" in result.stderr
    assert f"{SCENARIO}: events.1.lane: {NOSUCH}" in result.stderr
