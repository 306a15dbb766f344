"""The README's examples are what the service really answers: run them and compare."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import json_format

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.client import RoutingClient
from orxaq_grpc.config.load import load_config
from orxaq_grpc.routing.live import LiveRouter
from tests.conftest import CLI, CONFIG_DIR, REPO, LoopbackServer

README = (REPO / "README.md").read_text(encoding="utf-8")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LoopbackServer]:
    running = LoopbackServer(LiveRouter.from_directory(CONFIG_DIR), tmp_path / "data")
    yield running
    running.stop()


def console_block(command_start: str) -> tuple[str, list[str]]:
    """The command (continuation lines joined) and the output lines of the README's console block
    whose command starts with `command_start`."""
    start = README.index(f"$ {command_start}")
    block = README[start : README.index("```", start)].splitlines()
    command_lines = [block[0][2:]]
    while command_lines[-1].endswith("\\"):
        command_lines[-1] = command_lines[-1][:-1]
        command_lines.append(block[len(command_lines)])
    return " ".join(command_lines), block[len(command_lines) :]


def words(text: str) -> str:
    return " ".join(text.split())


def test_every_config_version_the_readme_shows_is_the_shipped_configs() -> None:
    shown = set(re.findall(r"config(?:Version\": \"|\s+)([0-9a-f]{16})", README))
    assert shown == {load_config(CONFIG_DIR).version}


def test_the_route_example_prints_what_the_readme_shows(server: LoopbackServer) -> None:
    command, shown = console_block(".venv/bin/orxaq-grpc route")
    argv = shlex.split(command)[1:]  # the installed script's arguments, run here as a module
    run = subprocess.run(
        [*CLI, *argv, "--address", server.address], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    printed = words(run.stdout)
    paragraph: list[str] = []
    for line in shown:
        if line.startswith("decision id") or line.strip() == "...":
            continue  # a fresh id every time; rows the README leaves out
        if line.strip():
            paragraph.append(line)
            continue
        if paragraph:  # the rationale is one line the README wraps: compare word for word
            assert words(" ".join(paragraph)) in printed
            paragraph = []
    if paragraph:
        assert words(" ".join(paragraph)) in printed


def test_the_json_route_example_is_the_decision_the_service_makes(server: LoopbackServer) -> None:
    command, shown = console_block("buf curl --protocol grpc --http2-prior-knowledge \\")
    request = json_format.Parse(re.search(r"-d '(\{.*\})'", command).group(1), pb.RouteRequest())  # type: ignore[union-attr]
    expected = json.loads("\n".join(shown))
    with RoutingClient(server.address) as client:
        answer = json.loads(json_format.MessageToJson(client.route(request)))
    rationale = expected.pop("rationale").removesuffix("...")
    assert answer.pop("rationale").startswith(rationale)
    expected.pop("decisionId")
    answer.pop("decisionId")
    assert answer == expected
