"""The autonomy loop end to end: a live loopback server, fake agents (scripts that succeed, fail
then succeed on an alternative, time out, print bad output, print usage), real git repositories and
worktrees, gates that pass and fail, dependencies, a stopped run resumed, bad queue files refused."""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc import cli
from orxaq_grpc.autonomy import loop
from orxaq_grpc.autonomy.journal import Journal
from orxaq_grpc.autonomy.queue import QueueError, load_queue
from orxaq_grpc.client import Connection, RoutingClient
from orxaq_grpc.config.load import load_config
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.routing.router import expected_cost_usd
from tests.conftest import CLI, CONFIG_DIR, REPO, LoopbackServer
from tests.test_lane_client import claude_usage, codex_usage

AGENT = """\
import json, os, pathlib, sys, time
model, task, plan_path, workdir = sys.argv[1:5]
home = pathlib.Path(plan_path).parent
step = json.loads(pathlib.Path(plan_path).read_text())[task]
runs = home / "runs" / task
runs.parent.mkdir(exist_ok=True)
run = len(runs.read_text()) if runs.exists() else 0
runs.write_text("x" * (run + 1))
(home / "runs" / (task + ".where")).write_text(json.dumps([os.getcwd(), workdir]))
print(f"agent: {task} on {model}, run {run}", file=sys.stderr)
if "marker" in step:  # written whole: the agent's pid
    pathlib.Path(step["marker"] + ".tmp").write_text(str(os.getpid()))
    pathlib.Path(step["marker"] + ".tmp").rename(step["marker"])
time.sleep(step.get("sleep", 0))
if run >= step.get("write_from", 0):
    for name in step.get("write", []):
        pathlib.Path(name).write_text(model)
print(step.get("stdout", ""), flush=True)
exits = step.get("exits", [0])
sys.exit(exits[min(run, len(exits) - 1)])
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LoopbackServer]:
    running = LoopbackServer(LiveRouter.from_directory(CONFIG_DIR), tmp_path / "data")
    yield running
    running.stop()


def git_repo(path: Path) -> Path:
    path.mkdir()
    for args in (
        ["init", "-q", "-b", "main"],
        ["config", "user.email", "t@example.com"],
        ["config", "user.name", "t"],
    ):
        subprocess.run(["git", *args], cwd=path, check=True)
    (path / "README").write_text("a repository\n")
    subprocess.run(["git", "add", "README"], cwd=path, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "first"], cwd=path, check=True)
    return path


def agent(tmp_path: Path) -> Path:
    script = tmp_path / "agent"
    script.write_text(f"#!{sys.executable}\n{AGENT}")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def write_queue(tmp_path: Path, plan: dict[str, dict[str, Any]], body: str, name: str = "queue.toml") -> Path:
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    plan_file = str(tmp_path / "plan.json")
    command = json.dumps([str(agent(tmp_path)), "{model}", "{task}", plan_file, "{workdir}"])
    lanes = "".join(
        f"[lanes.{lane}]\ncommand = {command}\n{extra}\n"
        for lane, extra in (
            ("codex", "rate_limited_exit_codes = [75]"),
            ("claude", ""),
            ("gemini", "timeout_s = 0.5"),
        )
    )
    path = tmp_path / name
    path.write_text(f"backoff_s = 0\n\n{lanes}\n{body}")
    return path


def runs(tmp_path: Path, task: str) -> int:
    counter = tmp_path / "runs" / task
    return len(counter.read_text()) if counter.exists() else 0


def run_loop(path: Path, address: str, *extra: str) -> tuple[int, list[dict[str, Any]]]:
    out = io.StringIO()
    queue = load_queue(path)
    code = loop.run(queue, Connection(address), out, io.StringIO(), *extra)  # type: ignore[arg-type]
    return code, [json.loads(line) for line in out.getvalue().splitlines()]


def economics(address: str) -> pb.Figures:
    with RoutingClient(address) as client:
        response = client.economics()
    return next(w for w in response.windows if w.window == "today").overall


def attempts(path: Path, task: str | None = None) -> list[dict[str, Any]]:
    journal = Journal(load_queue(path).state_dir)
    return [e for e in journal.entries() if e["event"] == "attempt" and task in (None, e["task"])]


def test_a_queue_runs_in_worktrees_with_gates_dependencies_and_every_kind_of_agent(
    server: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = git_repo(tmp_path / "repo")
    plan = {
        # succeeds at once, printing Codex's usage; its gate checks what it wrote
        "ok": {"write": ["ok.txt"], "stdout": codex_usage(20_000, 15_000, 900)},
        # rate limited on its first model, done on the alternative
        "flaky": {"exits": [75, 0], "stdout": "Retry-After: 1", "write": ["flaky.txt"]},
        # waits for ok; prints something that is no usage at all: the estimate is reported
        "garbled": {"stdout": '{"type": "turn.completed", "usage": {"input_tok'},
        # Claude's usage and cost; its gate fails on the first model (nothing written), passes on the next
        "gated": {
            "write": ["gate.ok"],
            "write_from": 1,
            "stdout": claude_usage(10, 9_000, 1_000, 700, 0.0421),
        },
        # times out (the gemini lane stops attempts at 0.5 s): one attempt only, so it fails
        "slow": {"sleep": 30},
        "after-slow": {},
    }
    body = f"""
[[tasks]]
id = "ok"
lane = "codex"
title = "Fix the flaky scheduler test"
prompt = "make it pass"
value_usd = 50
gates = ["test -f ok.txt"]
repo = "{repo}"

[[tasks]]
id = "flaky"
lane = "codex"
title = "Add a docstring"
prompt = "document it"
value_usd = 50
gates = ["test -f flaky.txt"]
repo = "{repo}"

[[tasks]]
id = "garbled"
lane = "codex"
title = "Rename a variable"
prompt = "rename it"
depends_on = ["ok"]

[[tasks]]
id = "gated"
lane = "claude"
kind = "docs"
title = "Review the change"
prompt = "review it"
gates = ["true", "test -f gate.ok"]
repo = "{repo}"

[[tasks]]
id = "slow"
lane = "gemini"
title = "Something slow"
prompt = "take your time"
max_attempts = 1

[[tasks]]
id = "after-slow"
lane = "gemini"
title = "After the slow one"
prompt = "then this"
depends_on = ["slow"]
"""
    path = write_queue(tmp_path, plan, body)
    assert cli.main(["autonomy", "discover", "--queue", str(path)]) == 0
    listed = capsys.readouterr().out
    assert "4 ready, 0 done" in listed and "garbled" not in listed.split("\n", 1)[1]

    code, cycles = run_loop(path, server.address)
    assert code == 1  # slow failed, after-slow is blocked
    first = cycles[0]
    assert first["tasks_run"] == ["ok", "flaky", "gated", "slow"]
    assert first["agents"] == {"claude": 1, "codex": 2, "gemini": 1}  # Scale let codex grow to 2
    assert cycles[-1]["done"] == 4 and cycles[-1]["failed"] == 1 and cycles[-1]["remaining"] == 1
    assert [c["cycle"] for c in cycles] == list(range(1, len(cycles) + 1))

    flaky = attempts(path, "flaky")
    assert [a["outcome"] for a in flaky] == ["rate_limited", "success"]
    assert flaky[0]["retry_after_s"] == 1.0 and flaky[0]["model"] != flaky[1]["model"]
    assert not flaky[1]["first_time_pass"] and flaky[1]["validation_passed"]
    ok = attempts(path, "ok")
    assert len(ok) == 1 and ok[0]["first_time_pass"] and ok[0]["usage_source"] == "codex-jsonl"
    assert ok[0]["input_tokens"] == 20_000
    garbled = attempts(path, "garbled")
    assert len(garbled) == 1 and garbled[0]["outcome"] == "success" and garbled[0]["estimated"]
    gated = attempts(path, "gated")
    assert [a["outcome"] for a in gated] == ["bad_output", "success"]
    assert "test -f gate.ok" in gated[0]["why"] and not gated[0]["validation_passed"]
    assert gated[1]["cost_exact"] and gated[1]["cost_usd"] == pytest.approx(0.0421)
    slow = attempts(path, "slow")
    assert [(a["outcome"], a["exit_code"]) for a in slow] == [("timeout", 124)]
    assert runs(tmp_path, "after-slow") == 0

    # Each task with a repo ran in its own worktree, on its own branch; the repository is untouched.
    state = tmp_path / ".orxaq-autonomy"
    cwd, workdir = json.loads((tmp_path / "runs" / "ok.where").read_text())
    assert Path(cwd) == Path(workdir) == (state / "worktrees" / "ok").resolve()
    assert (state / "worktrees" / "ok" / "ok.txt").exists() and not (repo / "ok.txt").exists()
    branches = subprocess.run(
        ["git", "branch", "--list", "autonomy/*"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(b for b in branches if b != "+") == ["autonomy/flaky", "autonomy/gated", "autonomy/ok"]
    cwd, _ = json.loads((tmp_path / "runs" / "garbled.where").read_text())
    assert Path(cwd) == tmp_path.resolve()  # no repo: the queue's directory
    assert (state / "logs" / "gated" / "attempt-1.log").read_text().count("autonomy: gate") == 2

    # Every attempt reported: Economics shows them, the exact cost included.
    reported = attempts(path)
    figures = economics(server.address)
    assert figures.reports == len(reported) == 7
    assert figures.exact_spend_usd == pytest.approx(2 * 0.0421)  # the gate's failure cost the same
    assert figures.acceptance_rate == pytest.approx(4 / 7)

    assert cli.main(["autonomy", "status", "--queue", str(path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["done"], status["failed"], status["blocked"], status["ready"]) == (4, 1, 1, 0)
    assert status["attempts_reported"] == 7 and status["pass_rate"] == pytest.approx(4 / 7)
    assert status["spend_usd"] == pytest.approx(sum(a["cost_usd"] for a in reported), abs=1e-6)
    assert status["last_cycle"]["cycle"] == len(cycles)

    # Run again: nothing is ready, nothing is redone.
    code, again = run_loop(path, server.address)
    assert (code, again) == (1, [])
    assert [runs(tmp_path, t) for t in ("ok", "flaky", "garbled", "gated", "slow")] == [1, 2, 1, 2, 1]
    assert economics(server.address).reports == 7


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_run_resumes_without_redoing_finished_tasks(
    server: LoopbackServer, tmp_path: Path, sig: signal.Signals
) -> None:
    marker = tmp_path / "slow.started"
    plan = {"first": {}, "slow": {"sleep": 60, "marker": str(marker)}, "last": {}}
    body = """
[[tasks]]
id = "first"
lane = "codex"
title = "First"
prompt = "go"

[[tasks]]
id = "slow"
lane = "codex"
title = "Slow"
prompt = "go"
depends_on = ["first"]

[[tasks]]
id = "last"
lane = "claude"
title = "Last"
prompt = "go"
depends_on = ["slow"]
"""
    path = write_queue(tmp_path, plan, body)
    process = subprocess.Popen(
        [*CLI, "autonomy", "run", "--queue", str(path), "--address", server.address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(sig)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    lines = [json.loads(line) for line in out.splitlines()]
    events = [(e["event"], e.get("task")) for e in Journal(load_queue(path).state_dir).entries()]
    if sig == signal.SIGTERM:  # a clean stop: the agent ended, its attempt abandoned, the cycle said
        assert process.returncode == 143, err
        assert "SIGTERM: stopping" in err
        assert lines[-1]["interrupted"] == "SIGTERM" and lines[-1]["done"] == 1
        assert ("attempt_abandoned", "slow") in events and ("task_stopped", "slow") in events
        assert events[-1] == ("stopped", None)
    else:  # killed outright: the journal ends where it was, the agent is left running
        assert process.returncode == -signal.SIGKILL
        assert events[-1] == ("task_started", "slow") and lines[-1]["done"] == 1
        os.kill(int(marker.read_text()), signal.SIGKILL)
    assert economics(server.address).reports == 1  # the stopped attempt is not reported

    plan["slow"] = {}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    code, cycles = run_loop(path, server.address)
    assert code == 0
    assert [c["tasks_run"] for c in cycles] == [["slow"], ["last"]]
    assert cycles[0]["cycle"] == lines[-1]["cycle"] + 1  # numbering goes on
    assert (runs(tmp_path, "first"), runs(tmp_path, "slow"), runs(tmp_path, "last")) == (1, 2, 1)
    assert economics(server.address).reports == 3


def test_stop_loss_holds_each_lane_at_one_agent(server: LoopbackServer, tmp_path: Path) -> None:
    plan = {f"t{i}": {} for i in range(3)}
    body = "".join(
        f'[[tasks]]\nid = "t{i}"\nlane = "codex"\ntitle = "Task {i}"\nprompt = "go"\nvalue_usd = 100\n\n'
        for i in range(3)
    )
    path = write_queue(tmp_path, plan, body)
    with RoutingClient(server.address) as client:
        client.set_stop_loss(True, "test")
    code, cycles = run_loop(path, server.address)
    assert code == 0
    assert [(c["tasks_run"], c["agents"], c["stop_loss"]) for c in cycles] == [
        ([f"t{i}"], {"codex": 1}, True) for i in range(3)
    ]


def test_dry_run_routes_and_asks_scale_without_running_an_agent_and_prepare_checks(
    server: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = git_repo(tmp_path / "repo")
    body = f"""
[[tasks]]
id = "a"
lane = "codex"
title = "Fix the flaky scheduler test"
prompt = "go"
value_usd = 100
gates = ["make test"]
repo = "{repo}"

[[tasks]]
id = "b"
lane = "codex"
title = "Add a docstring"
prompt = "go"
value_usd = 100

[[tasks]]
id = "c"
lane = "claude"
title = "Review"
prompt = "go"
depends_on = ["a"]
gates = ["true"]
"""
    path = write_queue(tmp_path, {"a": {}, "b": {}, "c": {}}, body)
    address = ["--address", server.address]
    assert cli.main(["autonomy", "dry-run", "--queue", str(path), *address]) == 0
    out = capsys.readouterr().out
    assert "2 ready tasks; no agent runs" in out
    assert "expected cost $" in out and "budgets: none set" in out
    assert "scale codex: scale_up: 2 agents allowed (1 -> 2 asked)" in out
    assert runs(tmp_path, "a") == runs(tmp_path, "b") == 0
    assert economics(server.address).decisions == 2  # Route has no dry mode: the decisions are real

    assert cli.main(["autonomy", "prepare", "--queue", str(path), *address]) == 1
    out = capsys.readouterr().out
    assert "ok    service" in out and f"ok    service {server.address} {loop.SERVICE_NAME}/claude" in out
    assert "ok    lane codex" in out
    assert "FAIL  task b: no gates defined" in out
    assert "ok    task a: worktree" in out and "(created)" in out
    assert (tmp_path / ".orxaq-autonomy" / "worktrees" / "a" / "README").exists()
    assert "1 check(s) failed" in out

    missing = tmp_path / "missing.toml"
    missing.write_text(path.read_text().replace(str(tmp_path / "agent"), str(tmp_path / "no-such-agent"), 1))
    assert cli.main(["autonomy", "prepare", "--queue", str(missing), *address]) == 1
    assert "FAIL  lane codex: " in capsys.readouterr().out


@pytest.mark.parametrize(
    ("tasks", "problem"),
    [
        (
            '[[tasks]]\nid = "a"\nlane = "codex"\ntitle = "A"\nprompt = "p"\n'
            '[[tasks]]\nid = "fix-flaky"\nlane = "codex"\ntitle = "B"\nprompt = "p"\ndepends_on = ["nope"]\n',
            "tasks[1] (fix-flaky).depends_on: 'nope' is not a task",
        ),
        (
            '[[tasks]]\nid = "a"\nlane = "codex"\ntitle = "A"\nprompt = "p"\ndepends_on = ["b"]\n'
            '[[tasks]]\nid = "b"\nlane = "codex"\ntitle = "B"\nprompt = "p"\ndepends_on = ["a"]\n',
            "tasks[0] (a).depends_on: a cycle: a -> b -> a",
        ),
        (
            '[[tasks]]\nid = "a"\nlane = "codex"\ntitle = "A"\nprompt = "p"\nvalue_usd = "lots"\n',
            "tasks[0] (a).value_usd: Input should be a valid number",
        ),
        (
            '[[tasks]]\nid = "a"\nlane = "nope"\ntitle = "A"\nprompt = "p"\n',
            "tasks[0] (a).lane: 'nope' is not a lane of the file",
        ),
        ('[[tasks]]\nid = "a"\nlane = "codex"\ntitle = "A"\n', "tasks[0] (a): give prompt or prompt_file"),
        (
            '[[tasks]]\nid = "a"\nlane = "codex"\ntitle = "A"\nprompt = "p"\ngate = ["make"]\n',
            "tasks[0] (a).gate: unknown field",
        ),
        (
            '[[tasks]]\nid = "a b"\nlane = "codex"\ntitle = "A"\nprompt = "p"\n',
            "tasks[0] (a b).id: String should match pattern",
        ),
    ],
)
def test_a_bad_queue_is_refused_with_path_task_and_field(
    tmp_path: Path, tasks: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_queue(tmp_path, {}, tasks)
    with pytest.raises(QueueError) as refused:
        load_queue(path)
    assert any(p.startswith(f"{path}: {problem}") for p in refused.value.problems), refused.value.problems
    assert cli.main(["autonomy", "discover", "--queue", str(path)]) == 2
    assert f"{path}: {problem}" in capsys.readouterr().err


def test_a_lane_without_model_placeholder_and_a_missing_queue_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "queue.toml"
    task = '[[tasks]]\nid = "a"\nlane = "codex"\ntitle = "A"\nprompt = "p"\n'
    path.write_text(f'[lanes.codex]\ncommand = ["agent"]\n{task}')
    with pytest.raises(QueueError, match=r"lanes\.codex\.command: has no \{model\}"):
        load_queue(path)
    with pytest.raises(QueueError, match="cannot be read"):
        load_queue(tmp_path / "nope.toml")


def test_a_missing_agent_stops_its_lane_before_anything_is_routed(
    server: LoopbackServer, tmp_path: Path
) -> None:
    body = '[[tasks]]\nid = "a"\nlane = "codex"\ntitle = "A"\nprompt = "p"\n'
    path = write_queue(tmp_path, {"a": {}}, body)
    path.write_text(path.read_text().replace(str(tmp_path / "agent"), str(tmp_path / "no-such-agent"), 1))
    code, cycles = run_loop(path, server.address)
    assert code == 1
    assert "no-such-agent: command not found" in cycles[0]["lanes_stopped"]["codex"]
    assert cycles[0]["tasks_run"] == []
    assert economics(server.address).decisions == 0


def test_rounds_back_off_for_a_rate_limits_retry_after(server: LoopbackServer, tmp_path: Path) -> None:
    plan = {"busy": {"exits": [75] * 8 + [0], "stdout": "error: 429\nRetry-After: 1"}}
    body = '[[tasks]]\nid = "busy"\nlane = "codex"\ntitle = "Busy"\nprompt = "p"\nmax_attempts = 9\n'
    path = write_queue(tmp_path, plan, body)
    code, cycles = run_loop(path, server.address)
    assert code == 0 and cycles[-1]["done"] == 1
    tried = attempts(path, "busy")
    assert [a["outcome"] for a in tried] == ["rate_limited"] * 8 + ["success"]
    models = [a["model"] for a in tried]
    round_size = models.index(models[0], 1)  # the first model again: a new round began
    assert set(models[:round_size]) == set(models[round_size : 2 * round_size])
    gaps = [later["at"] - later["latency_s"] - earlier["at"] for earlier, later in itertools.pairwise(tried)]
    assert gaps[round_size - 1] >= 0.9  # the retry-after, though backoff_s is 0
    assert max(gaps[: round_size - 1]) < 0.9  # within a round, the next model at once


def test_route_estimates_a_whole_agent_session_and_then_the_lanes_observed_mean(
    server: LoopbackServer, tmp_path: Path
) -> None:
    # A Claude session: 451,000 input tokens (cache reads and writes included), 30,000 out, $9.40.
    session = claude_usage(1_000, 400_000, 50_000, 30_000, 9.40)
    plan = {f"t{i}": {"stdout": session} for i in range(5)}
    body = "".join(
        f'[[tasks]]\nid = "t{i}"\nlane = "claude"\ntitle = "Task {i}"\nprompt = "go"\nvalue_usd = 100\n\n'
        for i in range(5)
    )
    path = write_queue(tmp_path, plan, body)
    lane = "[lanes.claude]\nexpected_input_tokens = 300000\nexpected_output_tokens = 20000\n"
    path.write_text(path.read_text().replace("[lanes.claude]\n", lane))
    code, cycles = run_loop(path, server.address)
    assert code == 0
    assert [c["tasks_run"] for c in cycles] == [[f"t{i}"] for i in range(5)]  # no repo: one at a time
    tried = attempts(path)
    assert [(a["estimated_input_tokens"], a["estimated_output_tokens"]) for a in tried] == [
        (300_000, 20_000)
    ] * 3 + [(451_000, 30_000)] * 2  # the lane's default, then its mean over 3 reported attempts
    assert tried[0]["estimated_cost_usd"] > 1.0  # a session, not one small call
    # Then priced at the lane's observed cache share (400,000 of 451,000 input tokens cache reads,
    # priced to the nearest 1%): the cheaper estimate the cached session really costs.
    share = round(400_000 / 451_000, 2)
    catalog = {m.id: m for m in load_config(CONFIG_DIR).models}
    for a in tried[1:]:
        tokens = (a["estimated_input_tokens"], a["estimated_output_tokens"])
        expected = expected_cost_usd(catalog[a["model"]], *tokens, share)
        assert a["estimated_cost_usd"] == pytest.approx(expected, abs=1e-6)
        assert expected < expected_cost_usd(catalog[a["model"]], *tokens)
    assert [(a["cost_usd"], a["cost_exact"], a["cost_bounded"]) for a in tried] == [(9.40, True, False)] * 5
    assert economics(server.address).spend_usd == pytest.approx(5 * 9.40)


def test_a_task_gives_its_own_token_estimate(tmp_path: Path) -> None:
    body = '[[tasks]]\nid = "a"\nlane = "codex"\ntitle = "A"\nprompt = "p"\ninput_tokens = 5000\n'
    queue = load_queue(write_queue(tmp_path, {}, body))
    request = loop.route_request(queue.tasks[0], queue.lanes["codex"])
    assert (request.task.input_tokens, request.task.output_tokens) == (5000, 0)


def test_a_second_run_or_prepare_on_the_queue_is_refused_naming_the_holder(
    server: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import fcntl

    body = '[[tasks]]\nid = "a"\nlane = "codex"\ntitle = "A"\nprompt = "p"\n'
    path = write_queue(tmp_path, {"a": {}}, body)
    lock = tmp_path / ".orxaq-autonomy" / "lock"
    lock.parent.mkdir()
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        for step in ("run", "prepare"):
            assert cli.main(["autonomy", step, "--queue", str(path), "--address", server.address]) == 2
            assert f"{lock} is held by pid 4242" in capsys.readouterr().err
    assert runs(tmp_path, "a") == 0
    code, _ = run_loop(path, server.address)  # released: it runs, its pid in the lock
    assert code == 0 and runs(tmp_path, "a") == 1
    assert lock.read_text().strip() == str(os.getpid())


def test_a_gate_that_cannot_run_stops_the_lane_unreported_and_prepare_finds_it(
    server: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = (
        '[[tasks]]\nid = "a"\nlane = "codex"\ntitle = "A"\nprompt = "p"\n'
        'gates = ["true", "no-such-gate-tool --check", "FOO=1 ./missing.sh"]\n'
    )
    path = write_queue(tmp_path, {"a": {}}, body)
    assert cli.main(["autonomy", "prepare", "--queue", str(path), "--address", server.address]) == 1
    out = capsys.readouterr().out
    assert "FAIL  task a: gate 'no-such-gate-tool --check': no-such-gate-tool: command not found" in out
    assert "FAIL  task a: gate 'FOO=1 ./missing.sh': ./missing.sh: not found" in out
    assert "gate 'true'" not in out and "2 check(s) failed" in out

    code, cycles = run_loop(path, server.address)
    assert code == 1
    assert "no-such-gate-tool --check' exited 127" in cycles[0]["lanes_stopped"]["codex"]
    assert [(a["outcome"], a["reported"]) for a in attempts(path)] == [("lane_fault", False)]
    events = [e["event"] for e in Journal(load_queue(path).state_dir).entries()]
    assert "task_stopped" in events and "task_finished" not in events
    assert economics(server.address).reports == 0
    assert cli.main(["autonomy", "status", "--queue", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ready"] == 1  # the next run tries it again


def test_a_reopened_task_is_no_first_time_pass(server: LoopbackServer, tmp_path: Path) -> None:
    plan = {"once": {"exits": [1, 0]}}
    body = '[[tasks]]\nid = "once"\nlane = "codex"\ntitle = "Once"\nprompt = "p"\nmax_attempts = 1\n'
    path = write_queue(tmp_path, plan, body)
    assert run_loop(path, server.address)[0] == 1
    code, _ = run_loop(path, server.address, False)
    assert code == 1  # failed stays failed without --retry-failed
    out = io.StringIO()
    assert loop.run(load_queue(path), Connection(server.address), out, io.StringIO(), retry_failed=True) == 0
    tried = attempts(path, "once")
    assert [(a["validation_passed"], a["first_time_pass"]) for a in tried] == [(False, False), (True, False)]
    assert Journal(load_queue(path).state_dir).replay().first_time == 0


def test_a_success_journaled_without_task_finished_counts_as_done(
    server: LoopbackServer, tmp_path: Path
) -> None:
    body = (
        '[[tasks]]\nid = "a"\nlane = "codex"\ntitle = "A"\nprompt = "p"\n\n'
        '[[tasks]]\nid = "b"\nlane = "codex"\ntitle = "B"\nprompt = "p"\ndepends_on = ["a"]\n'
    )
    path = write_queue(tmp_path, {"a": {}, "b": {}}, body)
    journal = Journal(load_queue(path).state_dir)
    journal.append("run", pid=1)
    journal.append("task_started", task="a", lane="codex", tried_before=0)
    journal.append("attempt", task="a", lane="codex", model="m", reported=True, validation_passed=True)
    # killed here, before task_finished
    code, cycles = run_loop(path, server.address)
    assert code == 0 and [c["tasks_run"] for c in cycles] == [["b"]]
    assert (runs(tmp_path, "a"), runs(tmp_path, "b")) == (0, 1)


def test_an_entry_after_a_cut_last_line_is_read(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append("run", pid=1)
    with journal.path.open("ab") as cut:
        cut.write(b'{"at": 1, "event": "task_sta')
    journal.append("run", pid=2)
    assert [e["pid"] for e in journal.entries()] == [1, 2]


def test_ctrl_c_while_git_makes_a_worktree_stops_the_task_unfailed(
    server: LoopbackServer, tmp_path: Path
) -> None:
    import shutil

    repo = git_repo(tmp_path / "repo")
    marker = tmp_path / "git.adding"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "git"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'case " $* " in *" worktree add "*) : > "{marker}"; sleep 2;; esac\n'
        f'exec {shutil.which("git")} "$@"\n'
    )
    wrapper.chmod(0o755)
    body = f'[[tasks]]\nid = "a"\nlane = "codex"\ntitle = "A"\nprompt = "p"\nrepo = "{repo}"\n'
    path = write_queue(tmp_path, {"a": {}}, body)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.Popen(
        [*CLI, "autonomy", "run", "--queue", str(path), "--address", server.address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends: to the whole foreground group
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    events = [(e["event"], e.get("task")) for e in Journal(load_queue(path).state_dir).entries()]
    assert ("task_stopped", "a") in events and ("task_finished", "a") not in events
    assert runs(tmp_path, "a") == 0
    code, _ = run_loop(path, server.address)  # the next run starts it, in the worktree git made
    assert code == 0 and runs(tmp_path, "a") == 1


def test_route_and_report_are_tried_again_on_a_transient_failure(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import grpc

    from orxaq_grpc.client import CallFailed

    class Failure(grpc.RpcError):
        def __init__(self, code: grpc.StatusCode) -> None:
            self._code = code

        def code(self) -> grpc.StatusCode:
            return self._code

        def details(self) -> str:
            return "down"

        def trailing_metadata(self) -> None:
            return None

    failures = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED]
    real = RoutingClient.route
    calls = []

    def flaky(self: RoutingClient, request: pb.RouteRequest) -> pb.RouteDecision:
        calls.append(request.lane)
        if failures:
            raise CallFailed(Failure(failures.pop(0)))
        return real(self, request)

    monkeypatch.setattr(RoutingClient, "route", flaky)
    request = pb.RouteRequest(lane="codex", task=pb.Task(title="t", prompt="p"))
    with loop.PatientClient(Connection(server.address), retry_s=0.01) as client:
        assert client.route(request).model
        assert len(calls) == 3
        failures[:] = [grpc.StatusCode.PERMISSION_DENIED]
        with pytest.raises(CallFailed, match="PERMISSION_DENIED"):
            client.route(request)
        assert len(calls) == 4  # a refusal at once
        failures[:] = [grpc.StatusCode.UNAVAILABLE] * 5
        with pytest.raises(CallFailed, match="UNAVAILABLE"):
            client.route(request)
        assert len(calls) == 9  # 5 tries in all


def test_status_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    body = "".join(
        f'[[tasks]]\nid = "t{i}"\nlane = "codex"\ntitle = "T"\nprompt = "p"\n\n' for i in range(3000)
    )
    path = write_queue(tmp_path, {}, body)
    process = subprocess.Popen(
        [*CLI, "autonomy", "status", "--queue", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.read(100)  # as `| head -c 100`
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err
