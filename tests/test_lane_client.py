"""The lane wrapper in clients/: route, run the agent, report every attempt, fall through the
alternatives; against a live loopback server, with fake agents that print each agent's usage."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients import lane
from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.agents.usage import parse_usage
from orxaq_grpc.client import RoutingClient
from orxaq_grpc.routing.live import LiveRouter
from tests.conftest import CONFIG_DIR, REPO, LoopbackServer

REQUEST = pb.RouteRequest(lane="codex", task=pb.Task(title="Fix the flaky scheduler test"))


@pytest.fixture
def address(tmp_path: Path) -> Iterator[str]:
    """A server of the test's own, so its Economics show that test's reports alone."""
    server = LoopbackServer(LiveRouter.from_directory(CONFIG_DIR), tmp_path / "data")
    yield server.address
    server.stop()


def overall(address: str) -> pb.Figures:
    with RoutingClient(address) as client:
        response = client.economics()
    return next(w for w in response.windows if w.window == "today").overall


def per_model(address: str) -> dict[str, pb.Figures]:
    with RoutingClient(address) as client:
        response = client.economics()
    window = next(w for w in response.windows if w.window == "today")
    return {named.name: named.figures for named in window.models}


def first_decision(address: str, request: pb.RouteRequest = REQUEST) -> pb.RouteDecision:
    """What the lane's own Route will answer: the same request to a server in the same state
    (its reservation is left to expire; no test here sets a budget)."""
    with RoutingClient(address) as client:
        return client.route(request)


# What each agent prints, in its documented shape (see tests/test_agent_usage.py).
def codex_usage(input_tokens: int, cached: int, output: int) -> str:
    usage = {"input_tokens": input_tokens, "cached_input_tokens": cached, "output_tokens": output}
    events = [{"type": "thread.started", "thread_id": "t1"}, {"type": "turn.started"}]
    events += [{"type": "turn.completed", "usage": usage}]
    return "\n".join(json.dumps(event) for event in events)


def claude_usage(uncached: int, cache_read: int, cache_write: int, output: int, cost: float) -> str:
    usage = {
        "input_tokens": uncached,
        "cache_read_input_tokens": cache_read,
        "cache_creation_input_tokens": cache_write,
        "output_tokens": output,
    }
    return json.dumps({"type": "result", "subtype": "success", "total_cost_usd": cost, "usage": usage})


def gemini_usage(prompt: int, cached: int, candidates: int, thoughts: int) -> str:
    tokens = {"prompt": prompt, "cached": cached, "candidates": candidates, "thoughts": thoughts, "tool": 0}
    return json.dumps({"response": "done", "stats": {"models": {"gemini-x": {"tokens": tokens}}}}, indent=2)


def fake_agent(tmp_path: Path, plan: dict[str, dict[str, object]], name: str = "agent") -> list[str]:
    """An executable agent command taking the model: per model (or "*"), what it prints on stdout
    ("usage"), how long it sleeps ("sleep") and its exit status ("exit", or "exits" by run, in the
    order it runs); it logs on both streams."""
    script = tmp_path / name
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, pathlib, sys, time\n"
        "model = sys.argv[1]\n"
        f"plan = json.loads({json.dumps(plan)!r})\n"
        'step = plan.get(model, plan.get("*", {}))\n'
        'print(f"agent: working on {model}", file=sys.stderr)\n'
        'print(f"agent log: {model} reading the repository", flush=True)\n'
        'time.sleep(step.get("sleep", 0))\n'
        f"runs = pathlib.Path({str(script) + '.runs'!r})\n"
        "run = len(runs.read_text()) if runs.exists() else 0\n"
        'runs.write_text("x" * (run + 1))\n'
        'if "usage" in step:\n'
        '    print(step["usage"], flush=True)\n'
        'sys.exit(step["exits"][run] if "exits" in step else step.get("exit", 0))\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return [str(script), "{model}"]


def lane_args(address: str, *extra: str, request: pb.RouteRequest = REQUEST) -> list[str]:
    return ["--address", address, "--lane", request.lane, "--title", request.task.title, *extra, "--"]


# The library


def test_falls_through_to_the_first_alternative_that_works(address: str) -> None:
    tried: list[tuple[str, str]] = []

    def call_model(model: str, provider: str) -> str:
        tried.append((model, provider))
        if len(tried) < 3:
            raise lane.ModelCallFailed("rate limited")
        return f"patched by {model}"

    with RoutingClient(address) as client:
        run = lane.run_task(client, REQUEST, call_model)
    decision = run.decision
    assert [model for model, _ in tried] == [decision.model, *decision.alternatives[:2]]
    assert all(provider for _, provider in tried)  # each attempt's own decision names it
    assert run.model == decision.alternatives[1]
    assert run.result == f"patched by {decision.alternatives[1]}"
    assert run.failures == [(decision.model, "rate limited"), (decision.alternatives[0], "rate limited")]
    # Every attempt reported under a decision of its own, the estimate standing in for usage.
    assert len({attempt.decision.decision_id for attempt in run.attempts}) == 3
    assert all(attempt.ack is not None and attempt.ack.decision_known for attempt in run.attempts)
    assert all(attempt.estimated for attempt in run.attempts)
    figures = overall(address)
    assert figures.reports == 3
    assert figures.acceptance_rate == pytest.approx(1 / 3)
    assert figures.first_time_pass_rate == 0.0
    assert figures.error_rate == pytest.approx(2 / 3)  # server errors, the library's default kind


def test_max_attempts_and_total_failure(address: str) -> None:
    def always_fails(model: str, provider: str) -> None:
        raise lane.ModelCallFailed("timeout", pb.OUTCOME_TIMEOUT)

    with RoutingClient(address) as client:
        run = lane.run_task(client, REQUEST, always_fails, max_attempts=2)
    assert run.model == "" and run.result is None
    assert len(run.failures) == 2
    assert [attempt.outcome for attempt in run.attempts] == [pb.OUTCOME_TIMEOUT] * 2
    assert overall(address).reports == 2


def test_a_lane_fault_stops_at_once_unreported(address: str) -> None:
    calls: list[str] = []

    def missing(model: str, provider: str) -> None:
        calls.append(model)
        raise lane.LaneFault("agent: command not found")

    with RoutingClient(address) as client:
        run = lane.run_task(client, REQUEST, missing)
    assert len(calls) == 1 and run.stopped == "agent: command not found"
    assert run.attempts[0].report is None and run.failures == []
    assert overall(address).reports == 0


def test_usage_of_a_successful_result_is_reported(address: str) -> None:
    printed = parse_usage(claude_usage(10, 9000, 1000, 800, cost=0.0421))
    claude = pb.RouteRequest(lane="claude", task=pb.Task(title="Review the change"))
    with RoutingClient(address) as client:
        run = lane.run_task(client, claude, lambda model, provider: "ok", usage_of=lambda _: printed)
    attempt = run.attempts[0]
    assert attempt.report is not None and attempt.report.first_time_pass
    assert (
        attempt.ack is not None and attempt.ack.cost_exact and attempt.ack.cost_usd == pytest.approx(0.0421)
    )
    figures = overall(address)
    assert figures.reported_tokens == 10 + 9000 + 1000 + 800
    assert figures.exact_spend_usd == pytest.approx(0.0421)


# The command


def test_a_failing_first_model_moves_to_the_alternative_and_both_are_reported(
    address: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    decision = first_decision(address)
    wanted = decision.alternatives[0]
    command = fake_agent(
        tmp_path,
        {
            decision.model: {"usage": codex_usage(30_000, 24_000, 500), "exit": 3},
            wanted: {"usage": codex_usage(41_200, 36_000, 3_900)},
        },
    )
    assert lane.main([*lane_args(address), *command]) == 0
    out, err = capfd.readouterr()  # the agent's own stderr is the process's
    assert f"agent log: {decision.model} reading the repository" in out  # passed through
    assert '"type": "turn.completed"' in out
    assert f"agent: working on {wanted}" in err
    assert f"lane: {decision.model}: bad_output (exit status 3)" in err
    assert "reported 30000 in / 500 out tokens from codex-jsonl" in err
    assert f"lane: done on {wanted}" in err

    figures = overall(address)
    assert figures.reports == 2
    assert figures.reported_tokens == 30_500 + 45_100
    assert figures.acceptance_rate == 0.5
    assert figures.first_time_pass_rate == 0.0
    assert figures.error_rate == 0.0  # the model answered: a bad output, not an availability fault
    assert figures.spend_usd > 0 and figures.exact_spend_usd == 0  # Codex states no cost: catalog-priced
    models = per_model(address)
    assert models[decision.model].reported_tokens == 30_500
    assert models[wanted].reported_tokens == 45_100 and models[wanted].acceptance_rate == 1.0


def test_claude_and_gemini_usage_reach_the_report(address: str, tmp_path: Path) -> None:
    claude = pb.RouteRequest(lane="claude", task=pb.Task(title="Review the change"))
    command = fake_agent(
        tmp_path, {"*": {"usage": claude_usage(12, 51_200, 4_100, 1_830, cost=0.0731)}}, "claude"
    )
    assert lane.main([*lane_args(address, request=claude), *command]) == 0
    figures = overall(address)
    assert (figures.reports, figures.reported_tokens) == (1, 12 + 51_200 + 4_100 + 1_830)
    assert figures.exact_spend_usd == pytest.approx(0.0731)
    assert figures.first_time_pass_rate == 1.0

    gemini = pb.RouteRequest(lane="gemini", task=pb.Task(title="Add a docstring"))
    command = fake_agent(tmp_path, {"*": {"usage": gemini_usage(24_939, 21_263, 20, 154)}}, "gemini")
    assert lane.main([*lane_args(address, request=gemini), *command]) == 0
    figures = overall(address)
    assert (figures.reports, figures.reported_tokens) == (2, 12 + 51_200 + 4_100 + 1_830 + 24_939 + 174)


def test_without_usage_the_estimate_is_reported_and_priced_by_the_catalog(
    address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    decision = first_decision(address)
    assert lane.main([*lane_args(address), *fake_agent(tmp_path, {"*": {}})]) == 0
    assert "estimated: the agent printed no usage" in capsys.readouterr().err
    figures = overall(address)
    assert figures.reports == 1
    assert figures.reported_tokens == decision.input_tokens + decision.output_tokens
    assert figures.exact_spend_usd == 0.0
    assert figures.spend_usd == pytest.approx(decision.estimated_cost_usd)


def test_the_agents_exit_code_is_kept(
    address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fails = fake_agent(tmp_path, {"*": {"exit": 3}})
    assert lane.main([*lane_args(address, "--max-attempts", "2"), *fails]) == 3
    err = capsys.readouterr().err
    assert err.count("server_error (exit status 3)") == 2  # no usage printed: no answer from the model
    assert "every model tried failed" in err
    figures = overall(address)
    assert (figures.reports, figures.acceptance_rate, figures.error_rate) == (2, 0.0, 1.0)

    # The last attempt's status: here the second's.
    mixed = fake_agent(tmp_path, {"*": {"exits": [3, 5]}}, "mixed")
    assert lane.main([*lane_args(address, "--max-attempts", "2"), *mixed]) == 5


def test_a_timeout_is_reported_as_one(address: str, tmp_path: Path) -> None:
    slow = fake_agent(tmp_path, {"*": {"sleep": 30}})
    assert lane.main([*lane_args(address, "--max-attempts", "1", "--timeout-s", "0.5"), *slow]) == 124
    figures = overall(address)
    assert (figures.reports, figures.error_rate) == (1, 1.0)


def test_a_missing_binary_stops_before_routing(
    address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lane.main([*lane_args(address), str(tmp_path / "no-such-agent"), "{model}"]) == 127
    assert "command not found; nothing routed" in capsys.readouterr().err
    not_executable = tmp_path / "agent.txt"
    not_executable.write_text("echo hi\n")
    assert lane.main([*lane_args(address), str(not_executable)]) == 126
    figures = overall(address)
    assert (figures.decisions, figures.reports) == (0, 0)


def test_a_shell_saying_command_not_found_stops_at_once_unreported(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    command = ["sh", "-c", 'exec no-such-agent-binary --model "$0"', "{model}"]
    assert lane.main([*lane_args(address), *command]) == 127
    err = capsys.readouterr().err
    assert err.count("lane: running") == 1  # no other model tried
    assert "not reported, no other model tried" in err
    figures = overall(address)
    assert (figures.decisions, figures.reports) == (1, 0)


def test_a_refused_route_is_status_2(address: str) -> None:
    assert lane.main(["--address", address, "--lane", "nope", "--", "true"]) == 2


def test_a_model_other_than_the_decisions_is_warned_of_and_the_decisions_reported(
    address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gemini = pb.RouteRequest(lane="gemini", task=pb.Task(title="Add a docstring"))
    decision = first_decision(address, gemini)
    command = fake_agent(tmp_path, {"*": {"usage": gemini_usage(1_000, 0, 20, 10)}}, "gemini")
    assert lane.main([*lane_args(address, request=gemini), *command]) == 0
    err = capsys.readouterr().err
    assert f"warning: the agent says it ran gemini-x, not {decision.model} as decided" in err
    assert per_model(address)[decision.model].reports == 1


# No process of the agent's outlives the lane: its process group is ended whole.

# Starts a process in the background, writes its pid to the file named by $0, then does `then`.
LEAVES_A_SLEEP = 'sleep {seconds} & echo $! > "$0"; {then}'


def sleeper(pid_file: Path, seconds: int, then: str) -> list[str]:
    return ["sh", "-c", LEAVES_A_SLEEP.format(seconds=seconds, then=then), str(pid_file)]


def running(pid: int) -> bool:
    """Whether the process runs: not gone, nor a zombie (an orphan's, which init may never reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            return stat_file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def ended(pid: int, within_s: float = 2.0) -> bool:
    deadline = time.monotonic() + within_s
    while running(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)  # not left behind by the test either
            return False
        time.sleep(0.05)
    return True


def wait_for(path: Path, within_s: float = 20.0) -> int:
    deadline = time.monotonic() + within_s
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.05)
    return int(path.read_text())


def test_a_background_process_the_agent_leaves_is_ended(address: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    code = lane.main([*lane_args(address), *sleeper(pid_file, 33, "exit 0")])
    gone = ended(wait_for(pid_file), within_s=0.5)  # first: it kills what it finds left
    assert code == 0
    assert gone
    assert time.monotonic() - started < 5  # not waiting on the pipe it held
    assert overall(address).reports == 1


def test_a_timeout_ends_the_agents_whole_process_group(address: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    command = sleeper(pid_file, 37, "wait; echo woke")
    code = lane.main([*lane_args(address, "--max-attempts", "1", "--timeout-s", "0.5"), *command])
    gone = ended(wait_for(pid_file), within_s=0.5)  # first: it kills what it finds left
    assert code == 124
    assert gone
    assert overall(address).reports == 1


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_ends_the_agent_and_the_attempt_is_not_reported(
    address: str, tmp_path: Path, sig: signal.Signals, status: int
) -> None:
    pid_file = tmp_path / "pid"
    command = sleeper(pid_file, 38, "wait")
    lane_process = subprocess.Popen(
        [sys.executable, "-m", "clients.lane", *lane_args(address), *command],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        pid = wait_for(pid_file)
        lane_process.send_signal(sig)
        _, err = lane_process.communicate(timeout=20)
    finally:
        lane_process.kill()
    gone = ended(pid, within_s=0.5)  # first: it kills what it finds left
    assert lane_process.returncode == status, err
    assert "the attempt is not reported" in err
    assert gone
    figures = overall(address)
    assert (figures.decisions, figures.reports) == (1, 0)
