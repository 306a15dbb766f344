"""The lane wrapper in clients/: route once, then fall through the alternatives."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from clients import lane
from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.client import RoutingClient
from orxaq_grpc.routing.live import LiveRouter
from tests.conftest import CONFIG_DIR, LoopbackServer

REQUEST = pb.RouteRequest(lane="codex", task=pb.Task(title="Fix the flaky scheduler test"))


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = LoopbackServer(LiveRouter.from_directory(CONFIG_DIR), tmp_path_factory.mktemp("data"))
    yield server.address
    server.stop()


def test_falls_through_to_the_first_alternative_that_works(address: str) -> None:
    tried: list[str] = []

    def call_model(model: str, provider: str) -> str:
        tried.append(model)
        if len(tried) < 3:
            raise lane.ModelCallFailed("rate limited")
        return f"patched by {model}"

    with RoutingClient(address) as client:
        run = lane.run_task(client, REQUEST, call_model)
    decision = run.decision
    assert tried == [decision.model, *decision.alternatives[:2]]
    assert run.model == decision.alternatives[1]
    assert run.result == f"patched by {decision.alternatives[1]}"
    assert run.failures == [(decision.model, "rate limited"), (decision.alternatives[0], "rate limited")]


def test_max_attempts_and_total_failure(address: str) -> None:
    def always_fails(model: str, provider: str) -> None:
        raise lane.ModelCallFailed("timeout")

    with RoutingClient(address) as client:
        run = lane.run_task(client, REQUEST, always_fails, max_attempts=2)
    assert run.model == "" and run.result is None
    assert len(run.failures) == 2


def test_command_mode_substitutes_the_model_and_retries_on_failure(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with RoutingClient(address) as client:
        decision = client.route(REQUEST)
    wanted = decision.alternatives[0]
    succeed_only_on = f"import sys; sys.exit(0 if sys.argv[1] == {wanted!r} else 3)"
    args = ["--address", address, "--lane", "codex", "--title", REQUEST.task.title, "--"]
    assert lane.main([*args, sys.executable, "-c", succeed_only_on, "{model}"]) == 0
    err = capsys.readouterr().err
    assert f"lane: {decision.model} failed: exit status 3" in err
    assert f"lane: done on {wanted}" in err

    assert lane.main([*args, sys.executable, "-c", "raise SystemExit(1)"]) == 1
    assert lane.main(["--address", address, "--lane", "nope", "--", "true"]) == 2
