"""`orxaq-grpc serve` as a real process: start-up, CLI calls, reload, graceful shutdown."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.client import CallFailed, RoutingClient
from tests.conftest import CLI, ServerProcess

T = TypeVar("T")


def health_status(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status


def test_cli_route_against_a_running_server(serve: type[ServerProcess]) -> None:
    server = serve()
    server.wait_until_serving()
    common = ["route", "--address", server.address, "--lane", "codex"]
    text = subprocess.run(
        [*CLI, *common, "--title", "Fix a typo in the README", "--explain"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(r"^model\s+\S+ \((openai|local)\)$", text, re.MULTILINE)
    assert re.search(r"^objective\s+cost_speed by keyword: keyword 'typo' in title$", text, re.MULTILINE)
    assert "filtered" in text and "not_allowed" in text

    as_json = json.loads(
        subprocess.run(
            [*CLI, *common, "--kind", "architecture", "--input-tokens", "20000", "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert as_json["objective"] == "OBJECTIVE_QUALITY"
    assert as_json["objective_rule"] == "OBJECTIVE_RULE_TASK_KIND"
    assert as_json["input_tokens"] == "20000"
    assert float(as_json["estimated_cost_usd"]) > 0

    bad = subprocess.run(
        [*CLI, "route", "--address", server.address, "--lane", "nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "lane: unknown lane 'nope'" in bad.stderr


def test_sigterm_drains_then_stops(serve: type[ServerProcess]) -> None:
    server = serve("--drain", "2", "--grace", "1")
    server.wait_until_serving()
    assert health_status(server.address) == health_pb2.HealthCheckResponse.SERVING
    server.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 1.5
    statuses = set()
    while time.monotonic() < deadline:
        statuses.add(health_status(server.address))
        time.sleep(0.1)
    assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses
    code, log = server.finish()
    assert code == 0
    assert "SIGTERM received: draining" in log and "stopped" in log


def test_workers_share_one_port_and_stop_together(serve: type[ServerProcess]) -> None:
    server = serve("--workers", "2")
    server.wait_until_serving()
    server.wait_for_log(rf"RoutingService on 127\.0\.0\.1:{server.port}")  # the second worker, too
    pids = set()
    for _ in range(50):  # the kernel spreads new connections over the workers
        with RoutingClient(server.address) as client:
            pids.add(client.health().pid)
            assert client.route(pb.RouteRequest(lane="local", task=pb.Task(title="x"))).model
        if len(pids) == 2:
            break
    assert len(pids) == 2 and server.process.pid not in pids
    server.process.send_signal(signal.SIGTERM)
    code, log = server.finish()
    assert code == 0, log
    assert log.count("SIGTERM received: draining") == 2
    assert log.count(f"RoutingService on 127.0.0.1:{server.port}") == 2


def test_workers_refuse_a_port_another_server_holds(serve: type[ServerProcess]) -> None:
    first = serve()
    first.wait_until_serving()
    result = subprocess.run(
        [*CLI, "serve", "--address", first.address, "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert f"cannot listen on {first.address}" in result.stderr


def test_a_worker_that_dies_stops_the_service(serve: type[ServerProcess]) -> None:
    server = serve("--workers", "2")
    server.wait_until_serving()
    server.wait_until_serving()  # both workers are up
    with RoutingClient(server.address) as client:
        victim = client.health().pid
    os.kill(victim, signal.SIGKILL)
    code, log = server.finish()
    assert code == 1
    assert "exited unasked with -9; stopping the other workers" in log
    assert "workers failed: worker-" in log


def test_cli_reports_local_errors_without_a_traceback(serve: type[ServerProcess], tmp_path: Path) -> None:
    server = serve()
    server.wait_until_serving()
    common = [*CLI, "route", "--address", server.address, "--lane", "codex"]
    missing = subprocess.run(
        [*common, "--prompt-file", str(tmp_path / "nope.txt")], capture_output=True, text=True, check=False
    )
    assert missing.returncode == 2 and "cannot read the prompt" in missing.stderr
    huge = subprocess.run([*common, "--input-tokens", "9" * 20], capture_output=True, text=True, check=False)
    assert huge.returncode == 2 and "Traceback" not in huge.stderr


def test_sigint_stops_cleanly(serve: type[ServerProcess]) -> None:
    server = serve()
    server.wait_until_serving()
    server.process.send_signal(signal.SIGINT)
    code, log = server.finish()
    assert code == 0, log
    assert "Traceback" not in log


def test_sighup_reloads_and_a_bad_config_keeps_the_last_good_one(
    serve: type[ServerProcess], config_dir: Path
) -> None:
    server = serve("--config", str(config_dir))
    server.wait_until_serving()
    with RoutingClient(server.address) as client:
        before = client.health().config_version

        lanes = config_dir / "lanes.toml"
        lanes.write_text(lanes.read_text().replace("quality_floor = 55", "quality_floor = 57", 1))
        server.process.send_signal(signal.SIGHUP)
        after = _wait_for(lambda: client.health().config_version, lambda v: v != before)

        lanes.write_text(
            lanes.read_text().replace('static_fallback = "gpt-6.1-sol"', 'static_fallback = "x"')
        )
        server.process.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert client.health().config_version == after
        # The server still routes on the last good config.
        assert client.route(pb.RouteRequest(lane="codex", task=pb.Task(title="x"))).config_version == after
    server.process.send_signal(signal.SIGTERM)
    code, log = server.finish()
    assert code == 0
    assert "config reloaded" in log
    assert "config reload refused" in log and "lanes.codex.static_fallback" in log


def _wait_for(read: Callable[[], T], done: Callable[[T], bool], timeout_s: float = 10.0) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = read()
        if done(value):
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached")


def test_bad_config_is_refused_at_start(config_dir: Path) -> None:
    (config_dir / "policy.toml").write_text("[routing]\nenabled = 3\n")
    result = subprocess.run(
        [*CLI, "serve", "--address", "127.0.0.1:0", "--config", str(config_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert f"{config_dir / 'policy.toml'}: routing.enabled: must be true or false, not int" in result.stderr


def test_refuses_the_pure_python_protobuf_backend() -> None:
    result = subprocess.run(
        [*CLI, "serve", "--address", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"},
    )
    assert result.returncode == 1
    assert "protobuf runs on its 'python' backend; orxaq-grpc needs 'upb'" in result.stderr


def test_sigkill_mid_report_load_loses_no_acknowledged_report(
    serve: type[ServerProcess], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    server = serve("--data-dir", str(data))
    server.wait_until_serving()
    acknowledged: list[str] = []
    failures: list[Exception] = []

    def report_forever(worker: int) -> None:
        with RoutingClient(server.address, timeout_s=5) as client:
            for i in range(100_000):
                request = _report(f"w{worker}-{i}")
                try:
                    client.report(request)
                except CallFailed:
                    return  # the server died under us
                except Exception as exc:
                    failures.append(exc)
                    return
                acknowledged.append(request.decision_id)

    threads = [threading.Thread(target=report_forever, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    while len(acknowledged) < 300 and all(t.is_alive() for t in threads):
        time.sleep(0.01)
    server.process.kill()  # SIGKILL: no drain, no flush
    for thread in threads:
        thread.join(timeout=30)
    assert not failures
    assert len(acknowledged) >= 300

    restarted = serve("--data-dir", str(data))
    restarted.wait_until_serving()
    with RoutingClient(restarted.address) as client:
        overall = next(w for w in client.economics().windows if w.window == "30d").overall
        reported = overall.reports + overall.unknown_decision_reports  # these decisions were never routed
        with sqlite3.connect(data / "ledger.sqlite3") as ledger:
            stored = ledger.execute("SELECT count(*) FROM reports").fetchone()[0]
        assert reported == stored >= len(acknowledged)  # all kept, none counted twice
        # Every acknowledged report is in the ledger: sending it again is a duplicate.
        for decision_id in acknowledged[:: max(1, len(acknowledged) // 200)]:
            assert client.report(_report(decision_id)).duplicate, decision_id


def _report(decision_id: str) -> pb.ReportRequest:
    return pb.ReportRequest(
        decision_id=decision_id,
        lane="codex",
        provider="openai",
        model="gpt-6-luna",
        input_tokens=1_000,
        output_tokens=200,
        latency_s=2.0,
        outcome=pb.OUTCOME_SUCCESS,
        validation_passed=True,
    )
