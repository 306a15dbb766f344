"""What a lane does around each task: ask for a route, run the agent on the chosen model, report
each attempt's outcome, and fall through the decision's alternatives when a model call fails.

`run_task(client, request, call_model)` is the logic; `command_runner(template)` makes a
`call_model` that runs an agent command (its `{model}` and `{provider}` replaced per attempt) and
reads the usage it prints. `clients/lane.py` wraps one command with them; the autonomy loop
(orxaq_grpc.autonomy.loop) runs a queue of tasks with them.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Generic, TypeVar

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.agents.usage import Usage, parse_usage
from orxaq_grpc.client import CallFailed, RoutingClient

R = TypeVar("R")

EXIT_REFUSED = 2
EXIT_NOT_EXECUTABLE = 126  # as a shell says it
EXIT_NOT_FOUND = 127
EXIT_TIMEOUT = 124  # as timeout(1) says it
EXIT_INTERRUPTED = 130


class ModelCallFailed(Exception):
    """The model call failed in a way another model might not: reported with `outcome` (a
    pb.Outcome), the `usage` the agent printed, if any, and `retry_after_s` for a rate limit."""

    def __init__(
        self,
        why: str,
        outcome: pb.Outcome = pb.OUTCOME_SERVER_ERROR,
        usage: Usage | None = None,
        exit_code: int | None = None,
        retry_after_s: float = 0.0,
    ) -> None:
        super().__init__(why)
        self.outcome = outcome
        self.usage = usage
        self.exit_code = exit_code
        self.retry_after_s = retry_after_s


class LaneFault(Exception):
    """The lane cannot run its agent at all (a missing or unexecutable binary): no model would do
    better, so `run_task` stops at once, and the model is not blamed for it."""

    def __init__(self, why: str, exit_code: int = EXIT_NOT_FOUND) -> None:
        super().__init__(why)
        self.exit_code = exit_code


class Abandoned(Exception):
    """The attempt was stopped from outside (the lane is shutting down): `run_task` lets it
    through unreported; the decision's reservation expires on the service's own clock."""


@dataclass
class Attempt:
    """One model tried, under a decision of its own, and what was reported for it."""

    decision: pb.RouteDecision
    outcome: pb.Outcome  # OUTCOME_UNSPECIFIED for a lane fault (not reported)
    latency_s: float
    why: str = ""  # why it failed
    usage: Usage | None = None  # as the agent printed it
    exit_code: int | None = None
    retry_after_s: float = 0.0  # a rate limit's, when the agent said
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
    first_time: bool = True,
    decision: pb.RouteDecision | None = None,
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
    `on_attempt(attempt)` hears of each attempt once it is reported. `first_time` false: the task
    was tried before (an earlier round), so no attempt is a first-time pass. `decision`: the first
    decision, when the caller has routed the request already.
    """
    decision = client.route(request) if decision is None else decision
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
                _report(client, request.lane, attempt, first=first_time and len(run.attempts) == 1)
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
        failed = Attempt(decision, exc.outcome, latency, str(exc), exc.usage, exc.exit_code)
        failed.retry_after_s = exc.retry_after_s
        return failed, None, False
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
        # The agent's own counts; total input, cache reads and writes included (and reported apart
        # too, to be priced at the cache prices), else the decision's estimate, priced by the
        # service's catalog.
        input_tokens=usage.input_tokens if usage else decision.input_tokens,
        output_tokens=usage.output_tokens if usage else decision.output_tokens,
        latency_s=attempt.latency_s,
        outcome=attempt.outcome,
        retry_after_s=attempt.retry_after_s,
        validation_passed=attempt.outcome == pb.OUTCOME_SUCCESS,
        first_time_pass=first and attempt.outcome == pb.OUTCOME_SUCCESS,
    )
    if usage is not None:
        # Part of input_tokens; clamped so an untidy count cannot get the report refused.
        cached = min(max(usage.cached_input_tokens, 0), usage.input_tokens)
        request.cached_input_tokens = cached
        request.cache_write_tokens = min(max(usage.cache_write_tokens, 0), usage.input_tokens - cached)
        if usage.cost_usd is not None:
            request.cost_usd = usage.cost_usd
    attempt.report = request
    try:
        attempt.ack = client.report(request)
    except CallFailed as exc:
        attempt.report_error = str(exc)


@dataclass(frozen=True)
class AgentRun:
    """A successful agent command: its exit status (0), the usage it printed, if any, and its stdout."""

    exit_code: int
    usage: Usage | None
    stdout: bytes = b""


class Processes:
    """The processes a lane has running, so that a shutdown can stop them all: `stop()` ends each
    (its whole process group) and refuses new ones, which then raise `Abandoned`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self.stopping = False

    def add(self, process: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._running.add(process)
            stopping = self.stopping
        if stopping:
            end_group(process)

    def discard(self, process: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._running.discard(process)

    def stop(self) -> None:
        with self._lock:
            self.stopping = True
            running = list(self._running)
        for process in running:
            end_group(process)


GRACE_S = 3.0  # between the SIGTERM to an agent's process group and the SIGKILL


def end_group(process: subprocess.Popen[bytes], grace_s: float = GRACE_S) -> None:
    """Ends the process group `process` leads (it was started in a session of its own): SIGTERM to
    the group, then SIGKILL to whatever of it is left `grace_s` on; the leader is reaped. Also after
    the leader has exited, for what it left running in its group (its pid stays the group's id, not
    reused, while any member lives)."""
    if not _signal_group(process.pid, signal.SIGTERM):
        process.poll()
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        process.poll()  # a zombie leader would keep the group alive
        if not _group_alive(process.pid):
            return
        time.sleep(0.05)
    _signal_group(process.pid, signal.SIGKILL)
    process.wait()


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs. A member that died is a zombie, still in the
    group, until its parent reaps it; an orphan's parent, init, may never (PID 1 of a container
    often does not reap): so, where /proc tells, a group of zombies alone is over."""
    if not _signal_group(pgid, 0):
        return False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    group, seen = str(pgid).encode(), False
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()  # after the command's name
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == group:
            if fields[0] != b"Z":
                return True
            seen = True
    return not seen  # no member in sight (another /proc than ours): as kill(2) says


def _signal_group(pgid: int, sig: int) -> bool:
    """Whether the group was there to signal."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal (it changed its user): not ours to end
        return sig == 0
    return True


_RETRY_AFTER = re.compile(rb"retry[-_ ]after\W{0,3}(\d+(?:\.\d+)?)", re.IGNORECASE)


def retry_after_of(output: bytes) -> float:
    """The last `Retry-After: N` (seconds) an agent printed, or 0."""
    found = _RETRY_AFTER.findall(output[-65536:])
    return float(found[-1]) if found else 0.0


def substitute(template: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """Each `{name}` of `values` replaced in each argument, in one pass (a value holding braces is
    left as it is; other braces too)."""
    pattern = re.compile("|".join(re.escape("{" + name + "}") for name in values))
    return [pattern.sub(lambda m: values[m.group(0)[1:-1]], part) if values else part for part in template]


def command_runner(
    template: Sequence[str],
    timeout_s: float = 0.0,
    *,
    values: Mapping[str, str] | None = None,
    cwd: str | None = None,
    echo: Callable[[bytes], object] | None = None,
    stderr: IO[bytes] | None = None,
    processes: Processes | None = None,
    rate_limited_exit_codes: Sequence[int] = (),
    announce: Callable[[list[str]], None] | None = None,
) -> Callable[[str, str], AgentRun]:
    """A `call_model` running the agent command: `{model}`, `{provider}` and each of `values`
    substituted; its stdout kept for the usage and handed to `echo` as it comes (default: passed
    through), its stderr to `stderr` (default: passed through). An exit status in
    `rate_limited_exit_codes` is a rate limit, its retry-after read from a `Retry-After: N` line."""

    def call(model: str, provider: str) -> AgentRun:
        argv = substitute(template, {**(values or {}), "model": model, "provider": provider})
        if announce is not None:
            announce(argv)
        code, stdout, timed_out = run_process(
            argv, timeout_s, cwd=cwd, echo=echo, stderr=stderr, processes=processes
        )
        usage = parse_usage(stdout)
        if timed_out:
            raise ModelCallFailed(f"timed out after {timeout_s:g} s", pb.OUTCOME_TIMEOUT, usage, EXIT_TIMEOUT)
        if code in (EXIT_NOT_FOUND, EXIT_NOT_EXECUTABLE):
            # What a shell answers for a command it cannot find or run: the lane's setup, not the model.
            meaning = "command not found" if code == EXIT_NOT_FOUND else "command not executable"
            raise LaneFault(f"{argv[0]} exited {code}, a shell's {meaning!r}", code)
        if code in rate_limited_exit_codes:
            raise ModelCallFailed(
                f"rate limited (exit status {code})",
                pb.OUTCOME_RATE_LIMITED,
                usage,
                code,
                retry_after_of(stdout),
            )
        if code != 0:
            # The model answered (usage printed) but the task failed: a bad output, which opens no
            # circuit. No usage: the agent got no answer from the model, a fault of its serving.
            outcome = pb.OUTCOME_BAD_OUTPUT if usage is not None else pb.OUTCOME_SERVER_ERROR
            exit_code = 128 - code if code < 0 else code  # killed by a signal: as a shell says it
            raise ModelCallFailed(f"exit status {exit_code}", outcome, usage, exit_code)
        return AgentRun(code, usage, stdout)

    return call


def _echo_stdout(chunk: bytes) -> None:
    sink = getattr(sys.stdout, "buffer", None)
    if sink is not None:
        sink.write(chunk)
        sink.flush()
    else:
        sys.stdout.write(chunk.decode("utf-8", errors="replace"))
        sys.stdout.flush()


def run_process(
    argv: Sequence[str],
    timeout_s: float = 0.0,
    *,
    cwd: str | None = None,
    echo: Callable[[bytes], object] | None = None,
    stderr: IO[bytes] | None = None,
    processes: Processes | None = None,
    shell: bool = False,
) -> tuple[int, bytes, bool]:
    """Runs a command with its stdout kept and handed to `echo` (default: passed through) and its
    stderr to `stderr` (default: passed through): (exit status, stdout, whether it was stopped for
    the timeout). It runs in a session and process group of its own, which a timeout or an
    interrupt ends whole (SIGTERM, then SIGKILL `GRACE_S` on), and which is ended once the command
    exits, for anything it left running. Under `processes`, a shutdown ends it too, which raises
    `Abandoned`."""
    try:
        process = subprocess.Popen(
            argv[0] if shell else argv,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=cwd,
            shell=shell,
            start_new_session=True,  # a process group of its own, ended whole
        )
    except FileNotFoundError as exc:
        raise LaneFault(f"{argv[0]}: command not found ({exc.strerror})", EXIT_NOT_FOUND) from exc
    except OSError as exc:
        raise LaneFault(f"{argv[0]}: cannot run it ({exc.strerror})", EXIT_NOT_EXECUTABLE) from exc
    if processes is not None:
        processes.add(process)
    chunks: list[bytes] = []
    show = echo or _echo_stdout

    def tee() -> None:
        passing = True  # until our own stdout is gone (a closed pipe): then only kept
        assert process.stdout is not None
        while chunk := os.read(process.stdout.fileno(), 65536):
            chunks.append(chunk)
            try:
                if passing:
                    show(chunk)
            except (OSError, ValueError):
                passing = False

    reader = threading.Thread(target=tee, name="lane-stdout", daemon=True)
    if echo is None:
        sys.stdout.flush()
    reader.start()
    timed_out = False
    try:
        process.wait(timeout=timeout_s or None)
    except subprocess.TimeoutExpired:
        timed_out = True
        end_group(process)
    except BaseException:  # interrupted: the agent must not outlive the lane
        end_group(process)
        raise
    finally:
        if processes is not None:
            processes.discard(process)
    end_group(process)  # what the agent left running in its group: it must not outlive the attempt
    reader.join(timeout=5)  # a grandchild may still hold the pipe: keep what came
    if processes is not None and processes.stopping:
        raise Abandoned(f"{argv[0]}: stopped by the lane's shutdown")
    return process.returncode, b"".join(chunks), timed_out


def missing_binary(command: Sequence[str]) -> LaneFault | None:
    """Before routing: the agent command's program, unless it is a template part."""
    program = command[0]
    if "{" in program or shutil.which(program) is not None:
        return None
    if os.path.sep in program and os.path.exists(program):
        return LaneFault(f"{program}: not executable", EXIT_NOT_EXECUTABLE)
    return LaneFault(f"{program}: command not found", EXIT_NOT_FOUND)


def describe(attempt: Attempt) -> str:
    """One line on an attempt: the model, how it ended, what was reported and booked."""
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
