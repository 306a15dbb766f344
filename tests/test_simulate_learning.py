"""The learning scenario: hidden pass rates per task kind and model, and [[compare]] runs of the same
traffic side by side (learning off against apply), judged on cost per passed task and pass rate.

At test scale (an hour of traffic instead of four); `benchmarks/fleet.py` runs it as shipped.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orxaq_grpc.config.load import load_config
from orxaq_grpc.simulate.engine import run_scenario
from orxaq_grpc.simulate.scenario import ScenarioError, load_scenario, parse_assignments
from orxaq_grpc.simulate.truth import Truths
from tests.conftest import CLI, CONFIG_DIR

LEARNING = CONFIG_DIR / "scenarios" / "learning.toml"
WALL_CLOCK_FIGURES = ("route_latency_ms", "decisions_per_s", "wall_s")


def learning(*assignments: str) -> dict[str, Any]:
    return run_scenario(load_scenario(LEARNING, parse_assignments(list(assignments))), LEARNING)


def failed(kpis: dict[str, Any]) -> list[str]:
    return [f"{v['name']}: {v['detail']}" for v in kpis["expectations"] if not v["holds"]]


def test_learned_routing_is_a_quarter_cheaper_per_passed_task_at_an_equal_or_better_pass_rate() -> None:
    kpis = learning("duration_s=3600")
    assert not failed(kpis)
    assert [v["name"] for v in kpis["expectations"]] == [
        "learned cheaper per passed task than static",
        "learned passes as often as static",
    ]
    static, learned = kpis["runs"]["static"], kpis["runs"]["learned"]
    assert static["tasks"]["arrived"] == learned["tasks"]["arrived"] > 500  # the same traffic
    versus = kpis["versus"]
    assert versus["cost_per_pass_change"] <= -0.25 and versus["pass_rate_gain"] >= 0
    # Static: the catalog's constants, so (nearly) always the strong model; learned: the success model,
    # exploring 5%, sending mechanical work to the free local models.
    assert static["decisions"]["strong_or_weak"]["learned"] == 0
    assert static["decisions"]["strong_or_weak"]["exploring"] == 0
    choices = learned["decisions"]["strong_or_weak"]
    assert choices["learned"] == learned["decisions"]["total"] and choices["exploring"] > 0
    kinds = learned["tasks_by_kind"]
    assert list(kinds) == ["docs", "tests", "rename", "architecture", "concurrency"]
    assert kinds["docs"]["weak"] > kinds["docs"]["strong"]
    assert static["tasks_by_kind"]["docs"]["weak"] == 0
    # Over time: twelve windows of five minutes, each with both runs' figures.
    assert versus["window_s"] == 300 and len(versus["windows"]) == 12
    last = versus["windows"][-1]
    assert last["end_s"] == 3600 and last["learned"]["strong_share"] < last["static"]["strong_share"]
    assert last["learned"]["pass_rate_to_date"] == pytest.approx(learned["tasks"]["pass_rate"], abs=0.01)


def test_the_same_seed_gives_the_same_comparison_exploration_included() -> None:
    """Decision ids come from the seed: which decisions explore is the same on every run."""

    def deterministic(kpis: dict[str, Any]) -> dict[str, Any]:
        runs = {
            name: {key: value for key, value in run.items() if key not in WALL_CLOCK_FIGURES}
            for name, run in kpis["runs"].items()
        }
        return {**kpis, "runs": runs, "wall_s": None}

    first, again = learning("duration_s=900"), learning("duration_s=900")
    assert first["runs"]["learned"]["decisions"]["strong_or_weak"]["exploring"] > 0
    assert deterministic(first) == deterministic(again)


def test_the_command_shows_progress_prints_both_runs_side_by_side_and_plots_them(tmp_path: Path) -> None:
    out, picture = tmp_path / "kpis.json", tmp_path / "learning.png"
    run = subprocess.run(
        [
            *CLI,
            "simulate",
            str(LEARNING),
            "--set",
            "duration_s=600",
            "--json",
            str(out),
            "--plot",
            str(picture),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode in (0, 1), run.stderr  # ten minutes is too short to judge the bar
    assert "simulate: 300 of 600 s" in run.stderr and "simulate: 600 of 600 s" in run.stderr
    assert "-- run static: policy.learning.mode=off" in run.stdout
    assert "-- run learned: policy.learning.mode=apply" in run.stdout
    assert "side by side: learned against static" in run.stdout and "cost per passed task" in run.stdout
    assert "over time" in run.stdout and "by task kind" in run.stdout
    kpis = json.loads(out.read_text())
    assert set(kpis["runs"]) == {"static", "learned"} and kpis["versus"]["windows"]
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_model_answers_each_kind_at_its_hidden_pass_rate() -> None:
    scenario = load_scenario(
        LEARNING,
        parse_assignments(
            ["faults=[{kind = 'quality', model = 'gpt-oss-120b', start_s = 100, pass_rate = 0.5}]"]
        ),
    )
    truths = Truths(scenario, load_config(CONFIG_DIR))
    rng = random.Random(1)

    def share(kind: str, t: float = 0.0) -> float:
        calls = [truths.call(rng, "gpt-oss-120b", t, kind, 50.0, 0.1, 10.0) for _ in range(4000)]
        return sum(c.validation_passed for c in calls) / len(calls)

    assert share("rename") == pytest.approx(0.98, abs=0.015)
    assert share("architecture") == pytest.approx(0.30, abs=0.03)
    assert share("architecture", t=200) == pytest.approx(0.5, abs=0.03)  # a fault replaces it
    assert share("chore") == pytest.approx(0.615, abs=0.03)  # no rate for the kind: catalog quality


BAD_TRUTH = """
name = "bad-truth"
duration_s = 600

[policy]
config = "{config}"

[models.gpt-6-astra]
kinds = {{ docs = {rate}, architecture = 0.8 }}

[models.nosuch]
kinds = {{ docs = 0.9 }}

[[tasks]]
kind = "docs"
title = "Document the export flags"
value_usd = 2

[[lanes]]
name = "codex"
arrivals_per_min = 5
"""


def test_a_bad_pass_rate_is_refused_with_the_file_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad-truth.toml"
    path.write_text(BAD_TRUTH.format(config=CONFIG_DIR, rate=1.5))
    with pytest.raises(ScenarioError) as refused:
        load_scenario(path)
    (problem,) = refused.value.problems
    assert (problem.path, problem.field) == (str(path), "models.gpt-6-astra.kinds.docs")
    assert "less than or equal to 1" in problem.problem

    # A rate for a kind no task has (a typo would leave the catalog's quality in force) ...
    path.write_text(BAD_TRUTH.format(config=CONFIG_DIR, rate=0.9))
    with pytest.raises(ScenarioError) as refused:
        load_scenario(path)
    (problem,) = refused.value.problems
    assert (problem.path, problem.field) == (str(path), "models.gpt-6-astra.kinds.architecture")
    assert "no task has kind 'architecture'" in problem.problem

    # ... and one for a model the config does not have, before anything runs.
    path.write_text(BAD_TRUTH.format(config=CONFIG_DIR, rate=0.9).replace(", architecture = 0.8", ""))
    with pytest.raises(ScenarioError) as refused:
        run_scenario(load_scenario(path), path)
    (problem,) = refused.value.problems
    assert (problem.path, problem.field) == (str(path), "models.nosuch")
    assert "model 'nosuch' is not in the config" in problem.problem


def test_a_model_id_with_a_dot_unquoted_says_how_to_quote_it(tmp_path: Path) -> None:
    path = tmp_path / "dotted.toml"
    text = BAD_TRUTH.format(config=CONFIG_DIR, rate=0.9).replace(", architecture = 0.8", "")
    path.write_text(text.replace("[models.nosuch]", "[models.qwen3.6-27b]"))
    with pytest.raises(ScenarioError) as refused:
        load_scenario(path)
    (problem,) = refused.value.problems
    assert problem.field == "models.qwen3.6-27b"
    assert 'a model id with a dot needs quotes: [models."qwen3.6-27b"]' in problem.problem
    # --set takes the same quotes
    quoted = load_scenario(LEARNING, parse_assignments(['models."qwen3.6-27b".kinds.docs=0.5']))
    assert quoted.models["qwen3.6-27b"].kinds["docs"] == 0.5


@pytest.mark.parametrize(
    ("assignments", "field", "problem"),
    [
        (["compare=[{name = 'static'}]"], "compare", "one run compares with nothing"),
        (["compare=[{name = 'static'}, {name = 'static'}]"], "compare.1.name", "'static' is used twice"),
        (["compare=[]"], "expect.versus", "needs two or more [[compare]] runs"),
        (["expect.versus.baseline=nosuch"], "expect.versus.baseline", "'nosuch' is not a [[compare]] run"),
        (["expect.versus.candidate=static"], "expect.versus", "compares 'static' with itself"),
        (["expect.versus.min_pass_rate_gain=2"], "expect.versus.min_pass_rate_gain", "less than or equal"),
    ],
)
def test_a_comparison_that_names_no_runs_is_refused(assignments: list[str], field: str, problem: str) -> None:
    with pytest.raises(ScenarioError) as refused:
        load_scenario(LEARNING, parse_assignments(assignments))
    named = {p.field: p for p in refused.value.problems}
    assert named[field].path == str(LEARNING) and problem in named[field].problem


def test_a_run_whose_overrides_the_config_refuses_is_named_before_anything_runs() -> None:
    with pytest.raises(ScenarioError) as refused:
        learning("compare.1.overrides.policy.learning.mode=sometimes")
    (only,) = refused.value.problems
    assert only.field == "policy.overrides and compare.1.overrides"
    assert "learning.mode" in only.problem
