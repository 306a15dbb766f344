"""What a lane runs around each task: ask for a route, run the agent on the chosen model, report
each attempt's outcome, and fall through the decision's alternatives when a model call fails.

As a command, wrapping any agent CLI; `{model}` and `{provider}` in the command are replaced per
attempt, and a non-zero exit moves on to the next alternative:

    python clients/lane.py --lane codex --title "Fix the flaky test" -- \\
        codex exec --json --model {model} "Fix the flaky test"

The agent's stdout and stderr pass through; its stdout is also read for the usage it prints
(`codex exec --json`, `claude -p --output-format json|stream-json`, `gemini -p --output-format
json|stream-json`), which each attempt's report carries. Exit status: 0 when a model succeeded, the
last attempt's exit status when every model failed (124 for a timeout), 2 when the route was
refused, 127 (126) when the agent command is missing (not executable), 143 (130) on SIGTERM (SIGINT),
the attempt then not reported.

The agent runs in a process group of its own, ended whole (SIGTERM, then SIGKILL 3 s on) when the
lane is stopped by SIGTERM or SIGINT, when `--timeout-s` runs out, and when the agent exits, for
anything it left running.

As a library: `run_task(client, request, call_model)` with `call_model(model, provider)` raising
`ModelCallFailed` to move on and `LaneFault` to stop at once; it lives in
orxaq_grpc.autonomy.attempts, which the autonomy loop runs its tasks with too, and is re-exported here.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.autonomy.attempts import (
    EXIT_INTERRUPTED,
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    Abandoned,
    AgentRun,
    Attempt,
    LaneFault,
    ModelCallFailed,
    Processes,
    TaskRun,
    command_runner,
    describe,
    missing_binary,
    run_task,
)
from orxaq_grpc.cli import DEFAULT_ADDRESS, ConnectionSettingsError, add_connection_arguments, connection_from
from orxaq_grpc.client import CallFailed, RoutingClient

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_NOT_EXECUTABLE",
    "EXIT_NOT_FOUND",
    "EXIT_REFUSED",
    "EXIT_TIMEOUT",
    "AgentRun",
    "Attempt",
    "LaneFault",
    "ModelCallFailed",
    "TaskRun",
    "main",
    "run_task",
]


def _announce(argv: list[str]) -> None:
    print(f"lane: running {' '.join(argv)}", file=sys.stderr, flush=True)


def _on_attempt(attempt: Attempt) -> None:
    print(f"lane: {describe(attempt)}", file=sys.stderr, flush=True)
    stated = attempt.usage.model if attempt.usage is not None else None
    if stated and stated != attempt.model:
        # The agent ran another model than the decision's (Gemini CLI falling back to a flash model,
        # say): the report stays the decision's, the service knowing of no other.
        print(
            f"lane: warning: the agent says it ran {stated}, not {attempt.model} as decided; "
            f"reported as {attempt.model}",
            file=sys.stderr,
            flush=True,
        )


@contextmanager
def _stopped_by_signals(processes: Processes) -> Iterator[Callable[[], int | None]]:
    """SIGTERM and SIGINT stop the agent (its whole process group, in a thread: ending it waits)
    rather than the lane at once, so that none of it outlives the lane; the running attempt then
    raises `Abandoned`. Yields what tells the signal received, if any."""
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not received:
            received.append(signum)
            name = signal.Signals(signum).name
            print(f"lane: {name}: stopping the agent", file=sys.stderr, flush=True)
        threading.Thread(target=processes.stop, name="lane-stop", daemon=True).start()

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, on_signal)
    try:
        yield lambda: received[0] if received else None
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


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
    parser.add_argument(
        "--timeout-s", type=float, default=0.0, help="stop an attempt after this long, a timeout (0: none)"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the agent command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the agent command after --")
    if args.max_attempts < 0:
        parser.error("--max-attempts must be 0 (all) or more")
    if args.timeout_s < 0:
        parser.error("--timeout-s must be 0 (none) or more")

    try:
        connection = connection_from(args)
    except ConnectionSettingsError as exc:
        parser.error(str(exc))
    if (missing := missing_binary(command)) is not None:
        print(f"lane: {missing}; nothing routed", file=sys.stderr)
        return missing.exit_code
    request = pb.RouteRequest(lane=args.lane, task=pb.Task(id=args.task_id, kind=args.kind, title=args.title))
    processes = Processes()
    with RoutingClient(connection) as client, _stopped_by_signals(processes) as received:
        try:
            run = run_task(
                client,
                request,
                command_runner(command, args.timeout_s, announce=_announce, processes=processes),
                args.max_attempts,
                usage_of=lambda agent: agent.usage,
                on_attempt=_on_attempt,
            )
        except CallFailed as exc:
            if (signum := received()) is not None:
                print("lane: stopped before the agent ran", file=sys.stderr)
                return 128 + signum
            print(f"lane: route refused: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        except Abandoned:
            print("lane: interrupted; the attempt is not reported", file=sys.stderr)
            return 128 + (received() or signal.SIGTERM)
        except KeyboardInterrupt:  # no handler of ours (not the main thread)
            print("lane: interrupted; the attempt is not reported", file=sys.stderr)
            return EXIT_INTERRUPTED
        if (signum := received()) is not None:  # after the last attempt ended and was reported
            print(f"lane: stopped by {signal.Signals(signum).name}", file=sys.stderr)
            return 128 + signum
    last = run.attempts[-1]
    if run.model:
        print(f"lane: done on {run.model} (decision {last.decision.decision_id})", file=sys.stderr)
        return 0
    if last.outcome == pb.OUTCOME_UNSPECIFIED:  # a lane fault stopped it
        print(
            "lane: stopped at once, the agent cannot run here: not reported, no other model tried",
            file=sys.stderr,
        )
        return last.exit_code or EXIT_NOT_FOUND
    if run.stopped:
        print(f"lane: stopped: {run.stopped}", file=sys.stderr)
    print(f"lane: every model tried failed (decision {run.decision.decision_id})", file=sys.stderr)
    return last.exit_code or 1


if __name__ == "__main__":
    sys.exit(main())
