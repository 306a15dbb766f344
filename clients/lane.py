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
refused, 127 (126) when the agent command is missing (not executable).

As a library: `run_task(client, request, call_model)` with `call_model(model, provider)` raising
`ModelCallFailed` to move on and `LaneFault` to stop at once.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.agents.usage import Usage, parse_usage
from orxaq_grpc.cli import DEFAULT_ADDRESS, ConnectionSettingsError, add_connection_arguments, connection_from
from orxaq_grpc.client import CallFailed, RoutingClient

R = TypeVar("R")

EXIT_REFUSED = 2
EXIT_NOT_EXECUTABLE = 126  # as a shell says it
EXIT_NOT_FOUND = 127
EXIT_TIMEOUT = 124  # as timeout(1) says it
EXIT_INTERRUPTED = 130


class ModelCallFailed(Exception):
    """The model call failed in a way another model might not: reported with `outcome` (a
    pb.Outcome) and the `usage` the agent printed, if any."""

    def __init__(
        self,
        why: str,
        outcome: pb.Outcome = pb.OUTCOME_SERVER_ERROR,
        usage: Usage | None = None,
        exit_code: int | None = None,
    ) -> None:
        super().__init__(why)
        self.outcome = outcome
        self.usage = usage
        self.exit_code = exit_code


class LaneFault(Exception):
    """The lane cannot run its agent at all (a missing or unexecutable binary): no model would do
    better, so `run_task` stops at once, and the model is not blamed for it."""

    def __init__(self, why: str, exit_code: int = EXIT_NOT_FOUND) -> None:
        super().__init__(why)
        self.exit_code = exit_code


@dataclass
class Attempt:
    """One model tried, under a decision of its own, and what was reported for it."""

    decision: pb.RouteDecision
    outcome: pb.Outcome  # OUTCOME_UNSPECIFIED for a lane fault (not reported)
    latency_s: float
    why: str = ""  # why it failed
    usage: Usage | None = None  # as the agent printed it
    exit_code: int | None = None
    report: pb.ReportRequest | None = None  # what was sent; None when nothing was
    ack: pb.ReportAck | None = None
    report_error: str = ""  # the Report call failed: the task's result stands regardless

    @property
    def model(self) -> str:
        return self.decision.model

    @property
    def estimated(self) -> bool:
        """The report carries the decision's estimated tokens: the agent printed no usage."""
        return self.report is not None and self.usage is None


@dataclass
class TaskRun(Generic[R]):
    decision: pb.RouteDecision  # the task's first decision
    result: R | None = None
    model: str = ""  # the model that succeeded, if any
    failures: list[tuple[str, str]] = field(default_factory=list)  # (model, why)
    attempts: list[Attempt] = field(default_factory=list)
    stopped: str = ""  # why the run stopped before trying every model, if it did


def run_task(
    client: RoutingClient,
    request: pb.RouteRequest,
    call_model: Callable[[str, str], R],
    max_attempts: int = 0,
    usage_of: Callable[[R], Usage | None] | None = None,
    report: bool = True,
    on_attempt: Callable[[Attempt], None] | None = None,
) -> TaskRun[R]:
    """Routes, then tries the chosen model and its alternatives in order, reporting each attempt.

    Report counts one outcome per decision (the decision id is its idempotency key), so each
    alternative is routed again as `requested_model`, which gives the attempt a decision to report
    against (and a provider, and a budget reservation of its own). When the service answers a model
    other than the one asked for (the alternative was filtered since: its circuit opened, the budget
    ran short), that model is tried if it has not been yet, and otherwise the alternative is passed
    over, its decision unreported (the service lets its reservation expire). A refused Route for an
    alternative stops the run.

    `max_attempts` caps the models tried (0: all of them). `call_model(model, provider)` returns the
    result, raises `ModelCallFailed` to move on, or `LaneFault` to stop at once; `usage_of(result)`
    gives the usage a successful call printed. Without usage, a report carries the decision's
    estimated tokens and no cost, which the service prices from its catalog and counts as not exact.
    `on_attempt(attempt)` hears of each attempt once it is reported.
    """
    decision = client.route(request)
    run: TaskRun[R] = TaskRun(decision=decision)
    queue = list(decision.alternatives)
    tried: set[str] = set()
    while True:
        if decision.model not in tried:  # else the service answered an alternative with a model tried
            tried.add(decision.model)
            attempt, returned, stop = _attempt(decision, call_model)
            if returned and usage_of is not None:
                attempt.usage = usage_of(returned[0])
            run.attempts.append(attempt)
            if attempt.outcome != pb.OUTCOME_UNSPECIFIED and report:
                _report(client, request.lane, attempt, first=len(run.attempts) == 1)
            if on_attempt is not None:
                on_attempt(attempt)
            if stop:
                run.stopped = attempt.why
                return run
            if returned:
                run.result, run.model = returned[0], decision.model
                return run
            run.failures.append((decision.model, attempt.why))
        queue = [m for m in queue if m not in tried]
        if not queue or (max_attempts and len(run.attempts) >= max_attempts):
            return run
        retry = pb.RouteRequest()
        retry.CopyFrom(request)
        retry.requested_model = queue.pop(0)
        try:
            decision = client.route(retry)
        except CallFailed as exc:
            run.stopped = f"route for {retry.requested_model} refused: {exc}"
            return run


def _attempt(
    decision: pb.RouteDecision, call_model: Callable[[str, str], R]
) -> tuple[Attempt, tuple[R] | None, bool]:
    """Runs one model: (the attempt, (the result,) on success, whether to stop at once)."""
    started = time.monotonic()
    try:
        result = call_model(decision.model, decision.provider)
    except ModelCallFailed as exc:
        latency = time.monotonic() - started
        return Attempt(decision, exc.outcome, latency, str(exc), exc.usage, exc.exit_code), None, False
    except LaneFault as exc:
        # The lane's own fault, not the model's: nothing is reported. A failure report would count
        # against the model (breakers, acceptance, learning) for a binary missing on this machine,
        # and a success report would be false; the decision stays unreported and its reservation
        # expires on the service's own clock.
        fault = Attempt(decision, pb.OUTCOME_UNSPECIFIED, time.monotonic() - started, str(exc))
        fault.exit_code = exc.exit_code
        return fault, None, True
    return Attempt(decision, pb.OUTCOME_SUCCESS, time.monotonic() - started), (result,), False


def _report(client: RoutingClient, lane: str, attempt: Attempt, first: bool) -> None:
    decision, usage = attempt.decision, attempt.usage
    request = pb.ReportRequest(
        decision_id=decision.decision_id,
        lane=lane,
        provider=decision.provider,
        model=decision.model,
        # The agent's own counts; total input, cache reads and writes included (the report has no
        # field for them yet), else the decision's estimate, priced by the service's catalog.
        input_tokens=usage.input_tokens if usage else decision.input_tokens,
        output_tokens=usage.output_tokens if usage else decision.output_tokens,
        latency_s=attempt.latency_s,
        outcome=attempt.outcome,
        validation_passed=attempt.outcome == pb.OUTCOME_SUCCESS,
        first_time_pass=first and attempt.outcome == pb.OUTCOME_SUCCESS,
    )
    if usage is not None and usage.cost_usd is not None:
        request.cost_usd = usage.cost_usd
    attempt.report = request
    try:
        attempt.ack = client.report(request)
    except CallFailed as exc:
        attempt.report_error = str(exc)


@dataclass(frozen=True)
class AgentRun:
    """A successful agent command: its exit status (0) and the usage it printed, if any."""

    exit_code: int
    usage: Usage | None


def _command_runner(template: Sequence[str], timeout_s: float = 0.0) -> Callable[[str, str], AgentRun]:
    def call(model: str, provider: str) -> AgentRun:
        argv = [part.replace("{model}", model).replace("{provider}", provider) for part in template]
        print(f"lane: running {' '.join(argv)}", file=sys.stderr, flush=True)
        code, stdout, timed_out = _run_teeing_stdout(argv, timeout_s)
        usage = parse_usage(stdout)
        if timed_out:
            raise ModelCallFailed(f"timed out after {timeout_s:g} s", pb.OUTCOME_TIMEOUT, usage, EXIT_TIMEOUT)
        if code in (EXIT_NOT_FOUND, EXIT_NOT_EXECUTABLE):
            # What a shell answers for a command it cannot find or run: the lane's setup, not the model.
            meaning = "command not found" if code == EXIT_NOT_FOUND else "command not executable"
            raise LaneFault(f"{argv[0]} exited {code}, a shell's {meaning!r}", code)
        if code != 0:
            # The model answered (usage printed) but the task failed: a bad output, which opens no
            # circuit. No usage: the agent got no answer from the model, a fault of its serving.
            outcome = pb.OUTCOME_BAD_OUTPUT if usage is not None else pb.OUTCOME_SERVER_ERROR
            exit_code = 128 - code if code < 0 else code  # killed by a signal: as a shell says it
            raise ModelCallFailed(f"exit status {exit_code}", outcome, usage, exit_code)
        return AgentRun(code, usage)

    return call


def _run_teeing_stdout(argv: Sequence[str], timeout_s: float) -> tuple[int, bytes, bool]:
    """Runs the agent with its stderr passed through and its stdout both passed through and kept:
    (exit status, stdout, whether it was stopped for the timeout)."""
    try:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE)
    except FileNotFoundError as exc:
        raise LaneFault(f"{argv[0]}: command not found ({exc.strerror})", EXIT_NOT_FOUND) from exc
    except OSError as exc:
        raise LaneFault(f"{argv[0]}: cannot run it ({exc.strerror})", EXIT_NOT_EXECUTABLE) from exc
    chunks: list[bytes] = []
    sink = getattr(sys.stdout, "buffer", None)

    def tee() -> None:
        passing = True  # until our own stdout is gone (a closed pipe): then only kept
        assert process.stdout is not None
        while chunk := os.read(process.stdout.fileno(), 65536):
            chunks.append(chunk)
            try:
                if passing and sink is not None:
                    sink.write(chunk)
                    sink.flush()
                elif passing:
                    sys.stdout.write(chunk.decode("utf-8", errors="replace"))
                    sys.stdout.flush()
            except (OSError, ValueError):
                passing = False

    reader = threading.Thread(target=tee, name="lane-stdout", daemon=True)
    sys.stdout.flush()
    reader.start()
    timed_out = False
    try:
        process.wait(timeout=timeout_s or None)
    except subprocess.TimeoutExpired:
        timed_out = True
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    except BaseException:  # interrupted: the agent must not outlive the lane
        process.kill()
        process.wait()
        raise
    reader.join(timeout=5)  # a grandchild may still hold the pipe: keep what came
    return process.returncode, b"".join(chunks), timed_out


def _missing_binary(command: Sequence[str]) -> LaneFault | None:
    """Before routing: the agent command's program, unless it is a template part."""
    program = command[0]
    if "{" in program or shutil.which(program) is not None:
        return None
    if os.path.sep in program and os.path.exists(program):
        return LaneFault(f"{program}: not executable", EXIT_NOT_EXECUTABLE)
    return LaneFault(f"{program}: command not found", EXIT_NOT_FOUND)


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
    if (missing := _missing_binary(command)) is not None:
        print(f"lane: {missing}; nothing routed", file=sys.stderr)
        return missing.exit_code
    request = pb.RouteRequest(lane=args.lane, task=pb.Task(id=args.task_id, kind=args.kind, title=args.title))
    with RoutingClient(connection) as client:
        try:
            run = run_task(
                client,
                request,
                _command_runner(command, args.timeout_s),
                args.max_attempts,
                usage_of=lambda agent: agent.usage,
                on_attempt=lambda attempt: print(f"lane: {_describe(attempt)}", file=sys.stderr, flush=True),
            )
        except CallFailed as exc:
            print(f"lane: route refused: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        except KeyboardInterrupt:
            print("lane: interrupted; the attempt is not reported", file=sys.stderr)
            return EXIT_INTERRUPTED
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


def _describe(attempt: Attempt) -> str:
    outcome = pb.Outcome.Name(attempt.outcome).removeprefix("OUTCOME_").lower()
    if attempt.outcome == pb.OUTCOME_UNSPECIFIED:
        outcome = "lane fault"
    text = f"{attempt.model}: {outcome}" + (f" ({attempt.why})" if attempt.why else "")
    text += f" in {attempt.latency_s:.1f} s"
    if attempt.report is None:
        return text + ", not reported"
    sent, usage = attempt.report, attempt.usage
    tokens = f"{sent.input_tokens} in / {sent.output_tokens} out tokens"
    if usage is None:
        origin = "estimated: the agent printed no usage"
    else:
        origin = f"from {usage.source}" + (", partial" if usage.partial else "")
        cache = [f"{usage.cached_input_tokens} cache read", f"{usage.cache_write_tokens} cache write"]
        cache = [part for part in cache if not part.startswith("0 ")]
        origin += f" (input: {', '.join(cache)})" if cache else ""
    text += f"; reported {tokens} {origin}"
    if attempt.report_error:
        return text + f", but the report failed: {attempt.report_error}"
    if attempt.ack is not None:
        exact = "exact" if attempt.ack.cost_exact else "priced from the catalog"
        text += f", ${attempt.ack.cost_usd:.4f} {exact}"
    return text


if __name__ == "__main__":
    sys.exit(main())
