"""The TypeScript lane client of clients/node, as a lane in another language gets it: generated from
protos/ by buf (the local protoc-gen-es from its node_modules), built with npm and tsc, and run against
a live server: the example prints a decision, the lane client reports every attempt it makes, over
plaintext on loopback and over TLS with a lane's token. Also `buf lint` on protos/, its exceptions in
buf.yaml.

Needs node 20 or later and npm (skipped without them, or with an older node: Debian bookworm's nodejs
is 18). .ci/run installs the client's packages (`npm ci --prefix clients/node`); without
node_modules, the build here runs `npm ci` first, and reuses them after.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.client import Connection, RoutingClient
from orxaq_grpc.config.model import token_digest
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.service.tls import ServerTls
from tests.certificates import make_certificates
from tests.conftest import CONFIG_DIR, REPO, LoopbackServer

NODE_CLIENT = REPO / "clients" / "node"
NODE, NPM = shutil.which("node"), shutil.which("npm")
NODE_MAJOR = 20  # the packages' least: clients/node/package.json's engines


def node_version() -> tuple[int, str]:
    """The node on PATH's major version and its `node --version` (0 when it tells none)."""
    assert NODE is not None
    shown = subprocess.run([NODE, "--version"], capture_output=True, text=True, timeout=30, check=False)
    found = re.match(r"v(\d+)\.", shown.stdout.strip())
    return (int(found.group(1)) if found else 0), shown.stdout.strip()


def node_missing() -> str:
    """Why clients/node cannot be built and run here, or ""."""
    if NODE is None or NPM is None:
        return (
            "node and npm are not on PATH: the TypeScript lane client in clients/node is built with npm "
            f"and runs on node >= {NODE_MAJOR} (.ci/run expects both on the machine)"
        )
    major, shown = node_version()
    if major < NODE_MAJOR:
        return (
            f"node {shown or '(no version)'} is older than {NODE_MAJOR}, which clients/node needs "
            f"(its engines; Debian bookworm's nodejs is 18): install node >= {NODE_MAJOR}"
        )
    return ""


CODEX_TOKEN = "codex-node-token-0123456789abcdef"
TITLE = "Fix the flaky scheduler test"
# Fails its first run (exit 3), succeeds after: a model that fails, then an alternative that passes.
FAILS_FIRST = """#!/bin/sh
echo "agent: working on $1"
if [ ! -e "$0.ran" ]; then : > "$0.ran"; echo "agent: tests still fail" >&2; exit 3; fi
echo "agent: done"
"""


def run(argv: Sequence[str], cwd: Path, timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False)


@pytest.fixture(scope="module")
def built() -> Path:
    """clients/node built: packages installed (kept when node_modules is as the lock says), the code
    generated from protos/ by buf, then compiled; its dist/ directory. Skips every test needing it
    when node or npm is missing, or node is too old."""
    if why := node_missing():
        pytest.skip(why)
    assert NPM is not None
    installed = NODE_CLIENT / "node_modules" / ".package-lock.json"  # npm's record of what it installed
    lock = NODE_CLIENT / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        result = run([NPM, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], NODE_CLIENT)
        assert result.returncode == 0, result.stdout + result.stderr
    result = run([NPM, "run", "build"], NODE_CLIENT)
    assert result.returncode == 0, result.stdout + result.stderr
    return NODE_CLIENT / "dist"


def node_env(address: str, **settings: str) -> dict[str, str]:
    """The environment without any ORXAQ_ setting of the machine's, then the address and `settings`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("ORXAQ_")}
    return {**env, "ORXAQ_ADDRESS": address, **settings}


def node(script: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert NODE is not None
    return subprocess.run(
        [NODE, str(script), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def today(client: RoutingClient) -> pb.EconomicsWindow:
    return next(w for w in client.economics().windows if w.window == "today")


def by_model(window: pb.EconomicsWindow) -> dict[str, pb.Figures]:
    return {named.name: named.figures for named in window.models}


@pytest.fixture
def address(tmp_path: Path) -> Iterator[str]:
    """A server of the test's own, so its Economics show that test's calls alone."""
    server = LoopbackServer(LiveRouter.from_directory(CONFIG_DIR), tmp_path / "data")
    yield server.address
    server.stop()


def agent(tmp_path: Path, text: str) -> Path:
    script = tmp_path / "agent"
    script.write_text(text)
    script.chmod(0o755)
    return script


def test_the_packages_say_the_node_they_need() -> None:
    package = json.loads((NODE_CLIENT / "package.json").read_text())
    assert package["engines"]["node"] == f">={NODE_MAJOR}"


def test_buf_lint_is_clean_on_the_protos(built: Path) -> None:
    buf = NODE_CLIENT / "node_modules" / ".bin" / "buf"
    result = run([str(buf), "lint"], REPO, timeout_s=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_the_generated_code_is_made_by_the_build_and_not_committed(built: Path) -> None:
    generated = NODE_CLIENT / "src" / "gen" / "orxaq" / "routing" / "v1" / "routing_pb.ts"
    assert "@generated by protoc-gen-es" in generated.read_text()
    assert (built / "lane.js").exists() and (built / "example.js").exists()
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: what is committed cannot be checked")
    for path in (generated, built / "lane.js", NODE_CLIENT / "node_modules"):
        ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=REPO, check=False)
        assert ignored.returncode == 0, f"{path} is not ignored by git"


def test_the_example_routes_a_task_and_prints_the_decision(built: Path, address: str) -> None:
    shown = node(built / "example.js", "--lane", "codex", "--title", TITLE, env=node_env(address))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    with RoutingClient(address) as client:
        # The same request to a server in the same state decides the same model (no budget is set).
        decision = client.route(pb.RouteRequest(lane="codex", task=pb.Task(title=TITLE)))
        assert lines[0].startswith("decision ") and lines[0] != f"decision {decision.decision_id}"
        assert lines[1] == f"model {decision.model} ({decision.provider})"
        strategy = pb.Strategy.Name(decision.strategy).removeprefix("STRATEGY_")
        assert lines[2] == f"strategy {strategy}, fallback NONE"
        assert lines[4] == f"alternatives {', '.join(decision.alternatives)}"
        assert today(client).overall.decisions == 2  # the example's and ours

    as_json = node(built / "example.js", "--lane", "codex", "--title", TITLE, "--json", env=node_env(address))
    assert as_json.returncode == 0, as_json.stderr
    assert f'"model":"{decision.model}"' in as_json.stdout and '"lane":"codex"' in as_json.stdout


def test_the_lane_client_falls_through_and_reports_every_attempt(
    built: Path, address: str, tmp_path: Path
) -> None:
    command = [str(agent(tmp_path, FAILS_FIRST)), "{model}"]
    ran = node(built / "lane.js", "--lane", "codex", "--title", TITLE, "--", *command, env=node_env(address))
    assert ran.returncode == 0, ran.stderr
    with RoutingClient(address) as client:
        window = today(client)
    assert window.overall.decisions == 2 and window.overall.reports == 2  # a decision per attempt
    models = by_model(window)
    working = [line for line in ran.stdout.splitlines() if line.startswith("agent: working on ")]
    first, second = (line.split()[-1] for line in working)
    assert f"lane: done on {second} (decision " in ran.stderr
    assert "server_error (exit status 3)" in ran.stderr and "priced from the catalog" in ran.stderr
    failed, passed = models[first], models[second]
    assert (failed.reports, failed.acceptance_rate, failed.first_time_pass_rate) == (1, 0.0, 0.0)
    assert failed.error_rate == 1.0  # no usage printed: a server error, as clients/lane.py counts it
    # It passed, but on the second attempt: validation passed, not a first-time pass.
    assert (passed.reports, passed.acceptance_rate, passed.first_time_pass_rate) == (1, 1.0, 0.0)
    assert window.overall.spend_usd > 0 and window.overall.exact_spend_share == 0.0


def test_the_lane_client_keeps_the_exit_code_and_stops_at_once_on_a_missing_agent(
    built: Path, address: str, tmp_path: Path
) -> None:
    lane = built / "lane.js"
    env = node_env(address)
    failing = node(lane, "--lane", "codex", "--max-attempts", "2", "--", "sh", "-c", "exit 3", env=env)
    assert failing.returncode == 3, failing.stderr
    assert "lane: every model tried failed" in failing.stderr

    missing = node(lane, "--lane", "codex", "--", str(tmp_path / "no-such-agent"), "{model}", env=env)
    assert missing.returncode == 127 and "command not found; nothing routed" in missing.stderr
    shell_127 = node(lane, "--lane", "codex", "--", "sh", "-c", "exit 127", env=env)
    assert shell_127.returncode == 127 and "not reported, no other model tried" in shell_127.stderr
    refused = node(lane, "--lane", "cobol", "--", "true", env=env)
    assert refused.returncode == 2 and "route refused: [invalid_argument]" in refused.stderr

    with RoutingClient(address) as client:
        overall = today(client).overall
    # Two decisions and reports for the failing agent; one decision, unreported, for the shell's 127.
    assert (overall.decisions, overall.reports, overall.acceptance_rate) == (3, 2, 0.0)


def test_over_tls_with_a_lane_token(built: Path, tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path / "certificates")
    config = tmp_path / "config"
    config.mkdir()
    for source in CONFIG_DIR.glob("*.toml"):
        (config / source.name).write_bytes(source.read_bytes())
    policy = config / "policy.toml"
    credential = (
        f'\n[[access.credentials]]\nname = "codex-runner"\nrole = "lane"\nlane = "codex"\n'
        f'sha256 = "{token_digest(CODEX_TOKEN).hex()}"\n'
    )
    policy.write_text(policy.read_text() + credential)
    tls = ServerTls(certificates.server.cert, certificates.server.key, None)
    server = LoopbackServer(LiveRouter.from_directory(config), tmp_path / "data", tls=tls)
    try:
        ca = str(certificates.ca)
        env = node_env(server.address, ORXAQ_TLS_CA=ca, ORXAQ_TOKEN=CODEX_TOKEN)
        routed = node(built / "example.js", "--lane", "codex", env=env)
        assert routed.returncode == 0, routed.stderr
        assert routed.stdout.startswith("decision ")

        without_token = node_env(server.address, ORXAQ_TLS_CA=ca)
        anonymous = node(built / "example.js", "--lane", "codex", env=without_token)
        assert anonymous.returncode == 2 and "[unauthenticated]" in anonymous.stderr
        plaintext = node(built / "example.js", "--lane", "codex", env=node_env(server.address))
        assert plaintext.returncode != 0  # a TLS server answers no plaintext call

        ran = node(built / "lane.js", "--lane", "codex", "--", "true", env=env)
        assert ran.returncode == 0, ran.stderr
        with RoutingClient(Connection(server.address, ca=certificates.ca.read_bytes())) as client:
            overall = today(client).overall  # reads are open
        assert (overall.decisions, overall.reports, overall.first_time_pass_rate) == (2, 1, 1.0)
    finally:
        server.stop()


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


def wait_for(path: Path, within_s: float = 30.0) -> int:
    deadline = time.monotonic() + within_s
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.05)
    return int(path.read_text())


def test_the_lane_client_ends_what_the_agent_leaves_and_a_timed_out_agent(
    built: Path, address: str, tmp_path: Path
) -> None:
    lane, env = built / "lane.js", node_env(address)
    left = tmp_path / "left.pid"
    started = time.monotonic()
    ran = node(lane, "--lane", "codex", "--", *sleeper(left, 33, "exit 0"), env=env)
    gone = ended(wait_for(left), within_s=0.5)  # first: it kills what it finds left
    assert ran.returncode == 0, ran.stderr
    assert gone
    assert time.monotonic() - started < 20

    slow = tmp_path / "slow.pid"
    command = sleeper(slow, 37, "wait; echo woke")
    timed_out = node(
        lane, "--lane", "codex", "--max-attempts", "1", "--timeout-s", "0.5", "--", *command, env=env
    )
    gone = ended(wait_for(slow), within_s=0.5)
    assert timed_out.returncode == 124, timed_out.stderr
    assert "woke" not in timed_out.stdout
    assert gone
    with RoutingClient(address) as client:
        assert today(client).overall.reports == 2


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_ends_the_agent_and_the_lane_client_reports_nothing(
    built: Path, address: str, tmp_path: Path, sig: signal.Signals, status: int
) -> None:
    assert NODE is not None
    pid_file = tmp_path / "pid"
    lane_process = subprocess.Popen(
        [NODE, str(built / "lane.js"), "--lane", "codex", "--", *sleeper(pid_file, 38, "wait")],
        env=node_env(address),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        pid = wait_for(pid_file)
        lane_process.send_signal(sig)
        _, err = lane_process.communicate(timeout=30)
    finally:
        lane_process.kill()
    gone = ended(pid, within_s=0.5)  # first: it kills what it finds left
    assert lane_process.returncode == status, err
    assert "the attempt is not reported" in err
    assert gone
    with RoutingClient(address) as client:
        overall = today(client).overall
    assert (overall.decisions, overall.reports) == (1, 0)
