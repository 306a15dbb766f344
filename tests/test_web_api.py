"""The web companion (`orxaq-grpc web`) as users run it, over HTTP, against a real routing service with
operator and lane credentials: the snapshot is what the RPCs say, the event stream follows the service,
operator actions pass only with the operator's token, bad bodies are named, the service's absence shows
and heals, and the page never listens beyond loopback unless told."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.client import Connection, RoutingClient
from orxaq_grpc.config.model import token_digest
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.web.rpc import as_json
from tests.conftest import CLI, CONFIG_DIR, LoopbackServer, ServerProcess, set_toml
from tests.redis_server import free_port
from tests.test_reports import report_for

T = TypeVar("T")
OPERATOR_TOKEN = "web-operator-token-0123456789abcdef"
LANE_TOKEN = "web-codex-token-0123456789abcdef"
WAIT_S = 30.0  # the longest any wait for the companion or the page lasts
_LISTENING = re.compile(r"on (http://127\.0\.0\.1:\d+)/")


def guarded_config(directory: Path) -> Path:
    """The shipped config with daily budgets, an operator credential and a codex lane credential."""
    directory.mkdir(parents=True)
    for source in CONFIG_DIR.glob("*.toml"):
        (directory / source.name).write_bytes(source.read_bytes())
    policy = directory / "policy.toml"
    set_toml(policy, "budgets", "daily_usd", "25.0")
    set_toml(policy, "budgets", "lanes", "{ codex = 5.0 }")
    policy.write_text(
        policy.read_text()
        + f"""
[[access.credentials]]
name = "web-supervisor"
role = "operator"
sha256 = "{token_digest(OPERATOR_TOKEN).hex()}"

[[access.credentials]]
name = "codex-runner"
role = "lane"
lane = "codex"
sha256 = "{token_digest(LANE_TOKEN).hex()}"
"""
    )
    return directory


def wait_until(probe: Callable[[], T | None], what: str, timeout_s: float = WAIT_S) -> T:
    """The first true answer of `probe`, asked again until `timeout_s` has passed."""
    done = threading.Event()
    deadline = threading.Timer(timeout_s, done.set)
    deadline.start()
    try:
        while not done.is_set():
            if answer := probe():
                return answer
            done.wait(0.1)
    finally:
        deadline.cancel()
    raise AssertionError(f"not within {timeout_s:g} s: {what}")


class Companion:
    """`orxaq-grpc web` in a process of its own on a free loopback port, found in its log."""

    def __init__(self, address: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [*CLI, "web", "--address", address, "--listen", "127.0.0.1:0", "--refresh-s", "0.2", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if k not in ("ORXAQ_TOKEN", "ORXAQ_TOKEN_FILE")},
            start_new_session=True,
        )
        self.log: list[str] = []
        assert self.process.stderr is not None
        while line := self.process.stderr.readline():
            self.log.append(line)
            if match := _LISTENING.search(line):
                self.url = match.group(1)
                break
        else:
            raise AssertionError("the companion stopped before it listened:\n" + "".join(self.log))
        # Its later lines are read as they come: a full pipe would block the companion's logging.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; its exit code."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise

    def snapshot(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/api/snapshot", timeout=WAIT_S) as answer:
            assert answer.headers["Content-Type"].startswith("application/json")
            return json.load(answer)  # type: ignore[no-any-return]

    def post(
        self,
        path: str,
        body: bytes | dict[str, Any],
        token: str | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=WAIT_S) as answer:
                return answer.status, json.load(answer)
        except urllib.error.HTTPError as refused:
            return refused.code, json.load(refused)


@dataclass
class Served:
    server: LoopbackServer
    config: Path
    companion: Companion

    def client(self, token: str | None = OPERATOR_TOKEN) -> RoutingClient:
        return RoutingClient(Connection(self.server.address, token=token))


@contextlib.contextmanager
def serving(root: Path) -> Iterator[Served]:
    """A guarded service on loopback and a companion following it, both stopped afterwards."""
    config = guarded_config(root / "config")
    server = LoopbackServer(LiveRouter.from_directory(config), root / "data")
    companion = None
    try:
        companion = Companion(server.address)
        yield Served(server, config, companion)
    finally:
        if companion is not None:
            assert companion.stop() == 0, "".join(companion.log)
        server.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("web")) as running:
        yield running


def traffic(
    client: RoutingClient, lanes: tuple[str, ...] = ("codex", "claude", "gemini")
) -> list[pb.RouteDecision]:
    """A decision per lane, each reported as a success."""
    decisions = []
    for lane in lanes:
        task = pb.Task(title=f"Fix the flaky test in {lane}", input_tokens=12_000, output_tokens=2_000)
        decision = client.route(pb.RouteRequest(lane=lane, task=task))
        client.report(report_for(decision))
        decisions.append(decision)
    return decisions


def steady_economics(economics: dict[str, Any]) -> dict[str, Any]:
    """Economics without what moves between two reads of the same state (the clock)."""
    windows = [{k: v for k, v in w.items() if k != "since_unix"} for w in economics["windows"]]
    return {"config_version": economics["config_version"], "windows": windows, "hourly": economics["hourly"]}


def steady_health(health: dict[str, Any]) -> dict[str, Any]:
    kept = ("config_version", "overall", "providers", "lanes", "budgets", "recent_decisions", "detection")
    breakers = [{k: v for k, v in b.items() if k != "reopens_in_s"} for b in health["breakers"]]
    return {**{k: health[k] for k in kept}, "breakers": breakers}


def test_the_snapshot_is_what_the_rpcs_say(served: Served) -> None:
    with served.client() as client:
        decisions = traffic(client)

        def same() -> bool:
            snapshot = served.companion.snapshot()
            if snapshot["health"] is None or snapshot["economics"] is None:
                return False
            economics, health = as_json(client.economics()), as_json(client.health())
            return steady_economics(snapshot["economics"]) == steady_economics(economics) and steady_health(
                snapshot["health"]
            ) == steady_health(health)

        wait_until(same, "the companion's snapshot to equal Economics and Health")
    snapshot = served.companion.snapshot()
    assert snapshot["service"]["reachable"] is True and snapshot["service"]["problem"] == ""
    assert snapshot["service"]["address"] == served.server.address
    seen = {d["decision_id"] for d in snapshot["health"]["recent_decisions"]}
    assert {d.decision_id for d in decisions} <= seen
    today = next(w for w in snapshot["economics"]["windows"] if w["window"] == "today")
    assert isinstance(today["overall"]["decisions"], int)  # 64-bit counts come as numbers


def read_event(stream: http.client.HTTPResponse) -> tuple[str, str]:
    """The next event of a text/event-stream (comments skipped): its name and data."""
    name, data = "message", []
    while True:
        line = stream.readline().decode()
        assert line, "the stream ended"
        line = line.rstrip("\n")
        if not line:
            if data:
                return name, "\n".join(data)
            continue
        field, _, value = line.partition(": ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)


def test_events_follow_the_service_and_a_closed_page_is_let_go(served: Served) -> None:
    host, port = served.companion.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=WAIT_S)
    connection.request("GET", "/events")
    stream = connection.getresponse()
    assert stream.status == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
    name, data = read_event(stream)
    assert name == "snapshot" and "health" in json.loads(data)
    wait_until(lambda: served.companion.snapshot()["service"]["pages"] >= 1, "the page to be counted")

    with served.client() as client:
        (decision,) = traffic(client, ("claude",))
    while True:  # each snapshot in turn, until one shows the new decision
        name, data = read_event(stream)
        health = json.loads(data)["health"]
        if decision.decision_id in {d["decision_id"] for d in health["recent_decisions"]}:
            break
    connection.close()
    wait_until(lambda: served.companion.snapshot()["service"]["pages"] == 0, "the closed page to be let go")


def stop_loss_active(served: Served) -> bool:
    with served.client() as client:
        return client.health().guardrails.stop_loss_active


@pytest.mark.parametrize(
    ("token", "status", "code"),
    [
        (None, 401, "UNAUTHENTICATED"),
        ("not-a-token", 401, "UNAUTHENTICATED"),
        (LANE_TOKEN, 403, "PERMISSION_DENIED"),
    ],
)
def test_an_action_without_the_operator_token_is_refused_and_changes_nothing(
    served: Served, token: str | None, status: int, code: str
) -> None:
    answered, body = served.companion.post("/api/stop-loss", {"active": True, "note": "no"}, token)
    assert (answered, body["ok"], body["code"]) == (status, False, code)
    assert body["message"]
    assert not stop_loss_active(served)


def test_an_authorization_that_is_not_bearer_is_refused_by_the_companion(served: Served) -> None:
    request = urllib.request.Request(
        served.companion.url + "/api/stop-loss",
        data=b'{"active": true}',
        headers={"Content-Type": "application/json", "Authorization": f"Basic {OPERATOR_TOKEN}"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=WAIT_S)
    assert refused.value.code == 401
    assert not stop_loss_active(served)


def test_the_operator_enters_and_ends_stop_loss_through_the_companion(served: Served) -> None:
    status, body = served.companion.post(
        "/api/stop-loss", {"active": True, "note": "web: provider incident"}, OPERATOR_TOKEN
    )
    assert status == 200 and body["ok"] is True, body
    assert body["result"]["changed"] is True and body["result"]["guardrails"]["stop_loss_active"] is True
    assert stop_loss_active(served)
    # Every page is sent the new state before the action is answered.
    assert served.companion.snapshot()["health"]["guardrails"]["stop_loss_active"] is True
    with served.client() as client:
        action = client.health().operator_actions[0]
    assert (action.who, action.action, action.note) == (
        "web-supervisor",
        "stop_loss_enter",
        "web: provider incident",
    )

    status, body = served.companion.post(
        "/api/stop-loss", {"active": False, "note": "web: resolved"}, OPERATOR_TOKEN
    )
    assert status == 200 and body["result"]["guardrails"]["stop_loss_active"] is False
    assert not stop_loss_active(served)
    assert served.companion.snapshot()["health"]["guardrails"]["stop_loss_active"] is False


def test_the_operator_pauses_and_resumes_a_lane(served: Served) -> None:
    status, body = served.companion.post(
        "/api/lanes/pause", {"lane": "gemini", "paused": True, "note": "web: maintenance"}, OPERATOR_TOKEN
    )
    assert status == 200 and body["result"]["lane"]["paused"] is True, body
    with served.client() as client:
        assert next(lane for lane in client.health().lanes if lane.lane == "gemini").paused
        decision = client.route(pb.RouteRequest(lane="gemini", task=pb.Task(title="Paused")))
        assert decision.fallback_reason == pb.FALLBACK_REASON_LANE_PAUSED
    status, body = served.companion.post(
        "/api/lanes/pause", {"lane": "gemini", "paused": False, "note": "web: back"}, OPERATOR_TOKEN
    )
    assert status == 200 and body["result"]["lane"]["paused"] is False
    status, body = served.companion.post(
        "/api/lanes/pause", {"lane": "no-such-lane", "paused": True, "note": "x"}, OPERATOR_TOKEN
    )
    assert status in (400, 404) and body["code"] in ("INVALID_ARGUMENT", "NOT_FOUND"), body


def test_the_operator_closes_an_open_breaker(served: Served) -> None:
    with served.client() as client:
        decision = client.route(pb.RouteRequest(lane="claude", task=pb.Task(title="Rate limited")))
        client.report(report_for(decision, outcome=pb.OUTCOME_RATE_LIMITED, retry_after_s=600.0))
        assert any(b.name == decision.model and b.state == "open" for b in client.health().breakers)
    status, body = served.companion.post(
        "/api/breakers/close",
        {"scope": "model", "name": decision.model, "note": "web: provider back"},
        OPERATOR_TOKEN,
    )
    assert status == 200 and body["result"]["changed"] is True, body
    with served.client() as client:
        breaker = next(b for b in client.health().breakers if b.scope == "model" and b.name == decision.model)
    assert breaker.state == "closed"


def test_the_operator_reloads_the_config_and_sees_a_refusal_named(served: Served) -> None:
    status, body = served.companion.post("/api/reload", {"note": "web: reload"}, OPERATOR_TOKEN)
    assert status == 200 and body["result"]["reloaded"] is True, body
    version = body["result"]["config_version"]
    lanes = served.config / "lanes.toml"
    good = lanes.read_text()
    lanes.write_text(good.replace('static_fallback = "gpt-6.1-sol"', 'static_fallback = "no-such-model"', 1))
    try:
        status, body = served.companion.post("/api/reload", {"note": "web: broken"}, OPERATOR_TOKEN)
    finally:
        lanes.write_text(good)
    assert status == 200 and body["result"]["reloaded"] is False, body
    assert body["result"]["config_version"] == version
    assert "lanes.toml" in body["result"]["refusal"] and "static_fallback" in body["result"]["refusal"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/stop-loss", b"not json", "body"),
        ("/api/stop-loss", b"[true]", "body"),
        ("/api/stop-loss", b"{}", "active"),
        ("/api/stop-loss", {"active": "yes"}, "active"),
        ("/api/stop-loss", {"active": 1}, "active"),
        ("/api/stop-loss", {"active": True, "note": 3}, "note"),
        ("/api/stop-loss", {"active": True, "why": "x"}, "why"),
        ("/api/reload", {"note": None}, "note"),
        ("/api/breakers/close", {"scope": "model"}, "name"),
        ("/api/breakers/close", {"scope": "model", "name": ["a"]}, "name"),
        ("/api/lanes/pause", {"lane": "codex", "paused": "no"}, "paused"),
    ],
)
def test_a_bad_body_is_refused_naming_the_field(
    served: Served, path: str, body: bytes | dict[str, Any], field: str
) -> None:
    status, answer = served.companion.post(path, body, OPERATOR_TOKEN)
    assert status == 400 and answer["ok"] is False and answer["code"] == "INVALID_ARGUMENT", answer
    assert answer["violations"][0][0] == field and answer["message"].startswith(field)
    assert not stop_loss_active(served)


def test_an_action_must_be_json_from_the_page_itself(served: Served) -> None:
    status, answer = served.companion.post(
        "/api/stop-loss", b'{"active": true}', OPERATOR_TOKEN, "text/plain"
    )
    assert status == 415 and answer["ok"] is False
    request = urllib.request.Request(
        served.companion.url + "/api/stop-loss",
        data=b'{"active": true}',
        headers={"Content-Type": "application/json", "Origin": "https://elsewhere.example"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=WAIT_S)
    assert refused.value.code == 403
    assert not stop_loss_active(served)


def test_only_requests_to_a_loopback_name_are_answered(served: Served) -> None:
    request = urllib.request.Request(
        served.companion.url + "/api/snapshot", headers={"Host": "rebound.example"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=WAIT_S)
    assert refused.value.code == 421
    localhost = served.companion.url.replace("127.0.0.1", "localhost")
    with urllib.request.urlopen(localhost + "/", timeout=WAIT_S) as page:
        assert b"Routing monitor" in page.read()
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]


def test_the_page_runbook_and_vendored_files_are_served(served: Served) -> None:
    for path, expected in (
        ("/", b'data-chart="spend"'),
        ("/runbook", b'id="service-unreachable"'),
        ("/static/app.js", b"EventSource"),
        ("/static/vendor/uplot/uPlot.iife.min.js", b"uPlot"),
    ):
        with urllib.request.urlopen(served.companion.url + path, timeout=WAIT_S) as answer:
            assert expected in answer.read(), path


@pytest.mark.parametrize(
    ("listen", "problem"),
    [
        ("0.0.0.0:8089", "--insecure"),
        ("[::]:8089", "--insecure"),
        (":8089", "--insecure"),
        ("8089", "HOST:PORT"),
    ],
)
def test_listening_beyond_loopback_needs_insecure(listen: str, problem: str) -> None:
    shown = subprocess.run(
        [*CLI, "web", "--listen", listen], capture_output=True, text=True, timeout=WAIT_S, check=False
    )
    assert shown.returncode == 2, shown.stderr
    assert problem in shown.stderr and "Traceback" not in shown.stderr


def test_a_service_that_goes_away_shows_and_is_followed_again(serve: type[ServerProcess]) -> None:
    address = f"127.0.0.1:{free_port()}"
    first = serve("--config", str(CONFIG_DIR), "--address", address)
    first.wait_until_serving()
    companion = Companion(address)
    try:
        wait_until(lambda: companion.snapshot()["service"]["reachable"], "the service to be reachable")
        os.killpg(first.process.pid, signal.SIGKILL)  # gone at once, as a crash (the fixture reaps it)
        first.process.wait()
        gone = wait_until(
            lambda: (s := companion.snapshot()["service"]) and not s["reachable"] and s,
            "the service to be missed",
        )
        assert "UNAVAILABLE" in gone["problem"] or "ended" in gone["problem"]
        assert companion.snapshot()["health"] is not None  # the last figures stay on the page
        serve("--config", str(CONFIG_DIR), "--address", address).wait_until_serving()
        wait_until(lambda: companion.snapshot()["service"]["reachable"], "the stream to be opened again")
    finally:
        assert companion.stop() == 0, "".join(companion.log)
