"""The Routing Monitor against a real server: one frame (`--once`), and the live view in a
pipe and on a terminal, stopped with Ctrl-C."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.client import RoutingClient
from orxaq_grpc.routing.live import LiveRouter
from tests.conftest import CLI, LoopbackServer, set_toml
from tests.test_reports import report_for

READ_S = 20.0


@pytest.fixture
def server(config_dir: Path, tmp_path: Path) -> Iterator[LoopbackServer]:
    set_toml(config_dir / "policy.toml", "budgets", "daily_usd", "25.0")
    running = LoopbackServer(LiveRouter.from_directory(config_dir), tmp_path / "data")
    yield running
    running.stop()


def monitor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "monitor", *args], capture_output=True, text=True, timeout=60, check=False)


def test_one_frame_shows_what_operators_follow(server: LoopbackServer) -> None:
    with RoutingClient(server.address) as client:
        codex = client.route(
            pb.RouteRequest(lane="codex", task=pb.Task(title="Fix a test", input_tokens=10_000))
        )
        ack = client.report(report_for(codex, outcome=pb.OUTCOME_TIMEOUT))
        claude = client.route(
            pb.RouteRequest(lane="claude", task=pb.Task(title="Design the split", input_tokens=40_000))
        )

    shown = monitor("--address", server.address, "--once")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "overall HEALTHY" in text
    assert "stop-loss off" in text
    assert "success model apply: 0 outcomes learned" in text  # reports are learned on the server's tick
    assert "economics (today): 2 decisions, est. tokens" in text
    assert f"spend ${ack.cost_usd:,.4f}" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.split()}
    # Per provider: share of routing, fallback and error rates, cost per 1M, spend.
    assert rows[codex.provider][1:5] == ["healthy", "50.0%", "0.0%", "100.0%"]
    blended = ack.cost_usd * 1e6 / (9_000 + 1_500)  # the reported tokens (report_for)
    assert f"${blended:.3f}/1M" in rows[codex.provider]
    # Per lane: decisions, fallback, disruptive, router errors, errors, spend, budget use.
    assert rows["codex"][1:7] == ["healthy", "1", "0.0%", "0.0%", "0.0%", "100.0%"]
    assert rows["claude"][2] == "1"
    assert "daily_spend" in rows  # the guardrails
    assert rows["overall"][1] == "-"  # the overall budget's row
    # The last decisions, newest first.
    decisions = [line for line in text.splitlines() if codex.model in line or claude.model in line]
    assert claude.model in decisions[-2] and codex.model in decisions[-1]

    with RoutingClient(server.address) as client:
        client.set_stop_loss(True, note="monitor test")
    assert "STOP-LOSS since" in monitor("--address", server.address, "--once").stdout


def test_once_fails_cleanly_without_a_service() -> None:
    shown = monitor("--address", "127.0.0.1:1", "--once")
    assert shown.returncode == 1
    assert "UNAVAILABLE" in shown.stderr and "Traceback" not in shown.stderr


def test_a_bad_refresh_is_refused() -> None:
    shown = monitor("--refresh", "0", "--once")
    assert shown.returncode == 2 and "--refresh" in shown.stderr


def _read_until(fd: int, marker: bytes, seen: bytearray) -> None:
    deadline = time.monotonic() + READ_S
    while marker not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no {marker!r} in {bytes(seen[-400:])!r}"
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the terminal closed
            chunk = b""
        assert chunk, f"output ended before {marker!r}"
        seen += chunk


def test_live_on_a_terminal_redraws_in_place_and_ctrl_c_restores_it(server: LoopbackServer) -> None:
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [*CLI, "monitor", "--address", server.address, "--refresh", "0.2"],
        stdin=terminal,
        stdout=terminal,
        stderr=subprocess.PIPE,
    )
    os.close(terminal)
    seen = bytearray()
    try:
        _read_until(controller, b"\x1b[?1049h", seen)  # the alternate screen
        _read_until(controller, b"no decisions yet", seen)
        with RoutingClient(server.address) as client:
            decision = client.route(pb.RouteRequest(lane="codex", task=pb.Task(title="Live")))
        _read_until(controller, decision.model.encode(), seen)
        assert seen.count(b"\x1b[H") >= 2  # each frame starts again from the top
        process.send_signal(signal.SIGINT)
        _read_until(controller, b"\x1b[?1049l", seen)  # the screen is given back
        assert process.wait(timeout=READ_S) == 0
        assert process.stderr is not None
        assert b"Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        os.close(controller)


def test_live_in_a_pipe_prints_frame_after_frame(server: LoopbackServer) -> None:
    process = subprocess.Popen(
        [*CLI, "monitor", "--address", server.address, "--refresh", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    seen = bytearray()
    try:
        _read_until(process.stdout.fileno(), b"routing monitor", seen)
        seen.clear()
        _read_until(process.stdout.fileno(), b"routing monitor", seen)  # a second frame
        assert b"\x1b[" not in seen  # no terminal control codes in a log
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=READ_S)
        assert process.returncode == 0
        assert b"Traceback" not in err
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
