"""The command line as a newcomer meets it: every option explained, no flag silently ignored."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orxaq_grpc.cli import _parser
from orxaq_grpc.client import RoutingClient
from orxaq_grpc.routing.live import LiveRouter
from tests.conftest import CLI, CONFIG_DIR, LoopbackServer


def commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_option_of_every_command_says_what_it_does(name: str) -> None:
    silent = [
        "/".join(action.option_strings) or action.dest
        for action in commands()[name]._actions
        if not action.help and action.dest != "help"
    ]
    assert silent == []


@pytest.fixture
def address(tmp_path: Path) -> Iterator[str]:
    server = LoopbackServer(LiveRouter.from_directory(CONFIG_DIR), tmp_path / "data")
    yield server.address
    server.stop()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, check=False)


def test_a_kind_the_policy_does_not_know_is_said_to_have_decided_nothing(address: str) -> None:
    typo = cli("route", "--address", address, "--lane", "codex", "--kind", "tset", "--title", "x")
    assert typo.returncode == 0
    assert "--kind 'tset' is none of the policy's task kinds" in typo.stderr
    known = cli("route", "--address", address, "--lane", "codex", "--kind", "test", "--title", "x")
    assert known.returncode == 0 and known.stderr == ""
    assert "by task_kind" in known.stdout


def test_economics_json_prints_the_named_window_or_every_one(address: str) -> None:
    cli("route", "--address", address, "--lane", "codex", "--title", "x")
    every = json.loads(cli("economics", "--address", address, "--json").stdout)
    assert [w["window"] for w in every["windows"]] == ["last_hour", "today", "7d", "30d"]
    one = json.loads(cli("economics", "--address", address, "--json", "--window", "7d").stdout)
    assert [w["window"] for w in one["windows"]] == ["7d"]
    assert one["windows"][0]["overall"]["decisions"] == "1"


def test_serve_refuses_prometheus_with_several_workers_before_starting_any(tmp_path: Path) -> None:
    run = subprocess.run(
        [*CLI, "serve", "--config", str(CONFIG_DIR), "--data-dir", str(tmp_path), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "OTEL_METRICS_EXPORTER": "prometheus"},
    )
    assert run.returncode == 2
    assert "OTEL_METRICS_EXPORTER=prometheus: one process serves /metrics on one port" in run.stderr
    assert not (tmp_path / "ledger.sqlite3").exists()  # nothing started


def test_the_operator_commands_pause_a_lane_close_a_breaker_and_reload_with_a_note(address: str) -> None:
    paused = cli("pause-lane", "codex", "--address", address, "--note", "incident 7")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == "lane codex: paused (static pin gpt-6.1-sol)"
    routed = cli("route", "--address", address, "--lane", "codex", "--title", "x", "--json")
    assert json.loads(routed.stdout)["fallback_reason"] == "FALLBACK_REASON_LANE_PAUSED"
    again = cli("pause-lane", "codex", "--address", address, "--note", "still", "--json")
    answer = json.loads(again.stdout)
    assert answer["lane"]["paused"] is True and not answer.get("changed", False)
    resumed = cli("resume-lane", "codex", "--address", address, "--note", "fixed")
    assert resumed.stdout.strip() == "lane codex: scored again"

    closed = cli("close-breaker", "model", "gpt-6-luna", "--address", address, "--note", "recovered")
    assert (closed.returncode, closed.stdout.strip()) == (0, "model gpt-6-luna: was closed already")
    reloaded = cli("reload", "--address", address, "--note", "new prices")
    assert reloaded.returncode == 0 and reloaded.stdout.startswith("reloaded: config ")

    nameless = cli("pause-lane", "nope", "--address", address, "--note", "x")
    assert nameless.returncode == 2 and "lane: no lane 'nope' in the config" in nameless.stderr
    assert cli("pause-lane", "codex", "--address", address).returncode == 2  # --note is required
    with RoutingClient(address) as client:
        actions = [(a.action, a.target, a.note) for a in client.health().operator_actions]
    assert actions[:4] == [
        ("reload_config", "", "new prices"),
        ("close_breaker", "model:gpt-6-luna", "recovered"),
        ("resume_lane", "codex", "fixed"),
        ("pause_lane", "codex", "still"),
    ]
