"""What a lane runs around each task: ask for a route, run the agent on the chosen model,
and fall through the decision's alternatives when a model call fails.

As a command, wrapping any agent CLI; `{model}` and `{provider}` in the command are
replaced per attempt, and a non-zero exit moves on to the next alternative:

    python clients/lane.py --lane codex --title "Fix the flaky test" -- \\
        codex exec --model {model} "Fix the flaky test"

As a library: `run_task(client, request, call_model)` with `call_model(model, provider)`
raising `ModelCallFailed` to move on.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.cli import DEFAULT_ADDRESS, ConnectionSettingsError, add_connection_arguments, connection_from
from orxaq_grpc.client import CallFailed, RoutingClient

R = TypeVar("R")


class ModelCallFailed(Exception):
    """The model call failed in a way another model might not."""


@dataclass
class TaskRun(Generic[R]):
    decision: pb.RouteDecision
    result: R | None = None
    model: str = ""  # the model that succeeded, if any
    failures: list[tuple[str, str]] = field(default_factory=list)  # (model, why)


def run_task(
    client: RoutingClient,
    request: pb.RouteRequest,
    call_model: Callable[[str, str], R],
    max_attempts: int = 0,
) -> TaskRun[R]:
    """Routes once, then tries the chosen model and its alternatives in order.

    `max_attempts` caps the models tried (0: all of them). The decision names only the
    chosen model's provider; `call_model` gets "" for the alternatives'.
    """
    decision = client.route(request)
    candidates = [(decision.model, decision.provider)] + [(m, "") for m in decision.alternatives]
    if max_attempts:
        candidates = candidates[:max_attempts]
    run: TaskRun[R] = TaskRun(decision=decision)
    for model, provider in candidates:
        try:
            run.result = call_model(model, provider)
        except ModelCallFailed as exc:
            run.failures.append((model, str(exc)))
            continue
        run.model = model
        break
    return run


def _command_runner(template: Sequence[str]) -> Callable[[str, str], int]:
    def call(model: str, provider: str) -> int:
        argv = [part.replace("{model}", model).replace("{provider}", provider) for part in template]
        print(f"lane: running {' '.join(argv)}", file=sys.stderr)
        try:
            code = subprocess.run(argv, check=False).returncode
        except OSError as exc:  # the agent binary is missing or not executable
            raise ModelCallFailed(str(exc)) from exc
        if code != 0:
            raise ModelCallFailed(f"exit status {code}")
        return code

    return call


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--address", default=os.environ.get("ORXAQ_ADDRESS", DEFAULT_ADDRESS))
    add_connection_arguments(parser)  # TLS and the lane's token, as for orxaq-grpc
    parser.add_argument("--lane", required=True)
    parser.add_argument("--kind", default="")
    parser.add_argument("--title", default="")
    parser.add_argument("--task-id", default="")
    parser.add_argument("--max-attempts", type=int, default=0, help="models to try at most (0: all)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the agent command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the agent command after --")
    if args.max_attempts < 0:
        parser.error("--max-attempts must be 0 (all) or more")

    try:
        connection = connection_from(args)
    except ConnectionSettingsError as exc:
        parser.error(str(exc))
    request = pb.RouteRequest(lane=args.lane, task=pb.Task(id=args.task_id, kind=args.kind, title=args.title))
    with RoutingClient(connection) as client:
        try:
            run = run_task(client, request, _command_runner(command), args.max_attempts)
        except CallFailed as exc:
            print(f"lane: route refused: {exc}", file=sys.stderr)
            return 2
    for model, why in run.failures:
        print(f"lane: {model} failed: {why}", file=sys.stderr)
    if not run.model:
        print(f"lane: every model failed (decision {run.decision.decision_id})", file=sys.stderr)
        return 1
    print(f"lane: done on {run.model} (decision {run.decision.decision_id})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
