"""The autonomy loop over a task queue: discover, prepare, dry-run, run, status.

`run` goes in cycles until every task is finished or none is ready. Each cycle, per lane, it asks
Scale how many agents the lane may have (the ready tasks' count, their value and estimated cost)
and runs that many tasks at once (at least one); each task as `clients/lane.py` runs one (Route,
the agent, Report per attempt, the alternatives), with the task's gates after the agent, and more
rounds after a backoff until its attempts are spent. The journal (journal.py) records every step,
so a run stopped by SIGINT or SIGTERM (exit 130 or 143) or killed resumes where it was. `run` and
`prepare` hold an exclusive lock on `<state>/lock` (exit 2 when another holds it).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import json
import math
import os
import re
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any, TextIO, TypeVar

import grpc

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.autonomy.attempts import (
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    Abandoned,
    AgentRun,
    Attempt,
    LaneFault,
    ModelCallFailed,
    Processes,
    command_runner,
    missing_binary,
    run_process,
    run_task,
)
from orxaq_grpc.autonomy.journal import Journal, Progress
from orxaq_grpc.autonomy.queue import LaneEntry, Queue, Task
from orxaq_grpc.autonomy.worktrees import WorktreeError, ensure_worktree, worktree_path
from orxaq_grpc.client import CallFailed, Connection, RoutingClient

SERVICE_NAME = "orxaq.routing.v1.RoutingService"
EXIT_FAILED = 1
EXIT_BUSY = 2
LOCK_NAME = "lock"
OBSERVED_AT_LEAST = 3  # reported attempts of a lane before its own means stand in for the estimates
TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
CALL_TRIES = 5  # a transient Route or Report failure: tried again after 0.5 s, 1 s, 2 s, 4 s
CALL_RETRY_S = 0.5


def route_request(
    task: Task, lane: LaneEntry | None = None, progress: Progress | None = None
) -> pb.RouteRequest:
    """The task's RouteRequest, with the tokens one attempt (an agent session) is expected to take:
    the task's own `input_tokens`/`output_tokens`, else the lane's mean per reported attempt once the
    journal has OBSERVED_AT_LEAST of them, else the lane's `expected_*_tokens` (0: Route's estimate)."""
    request = pb.RouteRequest(
        lane=task.lane, task=pb.Task(id=task.id, kind=task.kind, title=task.title, prompt=task.prompt)
    )
    if task.value_usd is not None:
        request.task.value_usd = task.value_usd
    observed = progress.mean_tokens(task.lane, OBSERVED_AT_LEAST) if progress is not None else None
    expected = observed or ((lane.expected_input_tokens, lane.expected_output_tokens) if lane else (0, 0))
    request.task.input_tokens = task.input_tokens or expected[0]
    request.task.output_tokens = task.output_tokens or expected[1]
    return request


class Busy(Exception):
    """Another run or prepare holds the queue's state directory."""


@contextlib.contextmanager
def exclusive(state_dir: Path) -> Iterator[None]:
    """An exclusive flock on `<state>/lock`, its holder's pid written in it, or Busy at once."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise Busy(
                f"{path} is held by pid {holder}: a run or prepare of this queue is going on"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


_R = TypeVar("_R")
_Q = TypeVar("_Q")


class PatientClient(RoutingClient):
    """Route and Report tried again on a transient failure (UNAVAILABLE, DEADLINE_EXCEEDED), `tries`
    in all, the wait doubling from `retry_s`, unless `stop` is set; any other failure at once."""

    def __init__(
        self,
        connection: Connection,
        stop: threading.Event | None = None,
        tries: int = CALL_TRIES,
        retry_s: float = CALL_RETRY_S,
    ) -> None:
        super().__init__(connection)
        self._stop = stop or threading.Event()
        self._tries, self._retry_s = tries, retry_s

    def route(self, request: pb.RouteRequest) -> pb.RouteDecision:
        return self._patient(super().route, request)

    def report(self, request: pb.ReportRequest) -> pb.ReportAck:
        return self._patient(super().report, request)

    def _patient(self, call: Callable[[_Q], _R], request: _Q) -> _R:
        delay = self._retry_s
        for tried in range(1, self._tries + 1):
            try:
                return call(request)
            except CallFailed as exc:
                if exc.code not in TRANSIENT or tried >= self._tries or self._stop.wait(delay):
                    raise
            delay *= 2
        raise AssertionError("unreachable")


def _usd(value: float) -> str:
    return f"${value:,.4f}"


# discover


def discover(queue: Queue, out: TextIO, as_json: bool = False) -> int:
    progress = Journal(queue.state_dir).replay(t.id for t in queue.tasks)
    ready = queue.ready(progress.done, progress.finished)
    blocked = queue.blocked(progress.failed)
    if as_json:
        rows = [
            {
                "id": t.id,
                "lane": t.lane,
                "kind": t.kind,
                "title": t.title,
                "value_usd": t.value_usd,
                "depends_on": list(t.depends_on),
                "gates": list(t.gates),
            }
            for t in ready
        ]
        summary = {"ready": rows, "done": progress.done, "failed": progress.failed}
        print(json.dumps({**summary, "blocked": [t.id for t in blocked]}), file=out)
        return 0
    waiting = len(queue.tasks) - len(ready) - len(progress.finished) - len(blocked)
    print(
        f"{queue.path}: {len(queue.tasks)} tasks in {len(queue.lanes)} lanes: {len(ready)} ready, "
        f"{len(progress.done)} done, {len(progress.failed)} failed, {len(blocked)} blocked by a failure, "
        f"{waiting} waiting",
        file=out,
    )
    for t in ready:
        value = f"${t.value_usd:g}" if t.value_usd is not None else "-"
        gates = f"{len(t.gates)} gates" if t.gates else "no gates"
        print(f"  {t.id:<24} {t.lane:<10} {value:>8}  {gates:<9} {t.title}", file=out)
    return 0


# prepare


def prepare(queue: Queue, connection: Connection, out: TextIO, err: TextIO = sys.stderr) -> int:
    """Preflight: the service serving (and each lane), every agent command found, every task's
    gates (each one's program found), a worktree for each task naming a repository. Exit 1 when any
    check fails, 2 when a run or another prepare holds the queue."""
    try:
        with exclusive(queue.state_dir):
            return _prepare(queue, connection, out)
    except Busy as exc:
        print(f"autonomy: {exc}", file=err)
        return EXIT_BUSY


def _prepare(queue: Queue, connection: Connection, out: TextIO) -> int:
    failures = 0

    def check(ok: bool, text: str) -> None:
        nonlocal failures
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'}  {text}", file=out)

    for name, text in _serving(connection, [""] + [f"{SERVICE_NAME}/{lane}" for lane in queue.lanes]):
        check(text == "SERVING", f"service {connection.address} {name or 'overall'}: {text}")
    for lane, entry in queue.lanes.items():
        missing = missing_binary(entry.command)
        check(missing is None, f"lane {lane}: {missing or entry.command[0] + ' found'}")
    for t in queue.tasks:
        check(bool(t.gates), f"task {t.id}: " + (f"gates {list(t.gates)}" if t.gates else "no gates defined"))
    for t in queue.tasks:
        if t.repo is None:
            continue
        try:
            path, made = ensure_worktree(queue.state_dir, t)
        except WorktreeError as exc:
            check(False, f"task {t.id}: worktree: {exc}")
        else:
            check(True, f"task {t.id}: worktree {path} ({'created' if made else 'there'})")
    for t in queue.tasks:
        workdir = worktree_path(queue.state_dir, t) if t.repo is not None else queue.path.parent
        for gate in t.gates:
            if (why := missing_gate(gate, workdir)) is not None:
                check(False, f"task {t.id}: gate {gate!r}: {why}")
    print(f"{failures} check(s) failed" if failures else "ready to run", file=out)
    return EXIT_FAILED if failures else 0


SHELL_WORDS = frozenset(
    [
        "!",
        ".",
        ":",
        "[",
        "[[",
        "{",
        "(",
        "alias",
        "bg",
        "break",
        "case",
        "cd",
        "command",
        "continue",
        "echo",
        "eval",
        "exec",
        "exit",
        "export",
        "false",
        "fg",
        "for",
        "function",
        "getopts",
        "hash",
        "if",
        "kill",
        "printf",
        "pwd",
        "read",
        "readonly",
        "return",
        "set",
        "shift",
        "source",
        "test",
        "times",
        "trap",
        "true",
        "type",
        "ulimit",
        "umask",
        "unalias",
        "unset",
        "until",
        "wait",
        "while",
    ]
)
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*")


def missing_gate(gate: str, workdir: Path) -> str | None:
    """Why the gate's program cannot run (its first word, past any VAR=value), or None: a shell
    word, a path that exists (from the task's directory) or a program on PATH."""
    try:
        words = shlex.split(gate)
    except ValueError as exc:
        return f"cannot be read: {exc}"
    while words and _ASSIGNMENT.fullmatch(words[0]):
        words.pop(0)
    if not words or words[0] in SHELL_WORDS:
        return None
    program = words[0]
    if os.sep in program:
        return None if (workdir / program).exists() else f"{program}: not found"
    return None if shutil.which(program) is not None else f"{program}: command not found"


def _serving(connection: Connection, services: list[str]) -> list[tuple[str, str]]:
    """The grpc.health.v1 status of each service name, or why it could not be asked."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    found: list[tuple[str, str]] = []
    with connection.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in services:
            try:
                answer = stub.Check(
                    health_pb2.HealthCheckRequest(service=name),
                    timeout=5,
                    metadata=connection.metadata() or None,
                )
                status = str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))
            except grpc.RpcError as error:
                status = f"{error.code().name}: {error.details() or ''}".strip()
            found.append((name, status))
    return found


# dry-run


def dry_run(queue: Queue, connection: Connection, out: TextIO) -> int:
    """Routes every ready task and asks Scale per lane; no agent runs. Route has no dry mode: each
    decision reserves its estimate against the budgets until the service's reservation_ttl_s ends."""
    progress = Journal(queue.state_dir).replay(t.id for t in queue.tasks)
    ready = queue.ready(progress.done, progress.finished)
    with PatientClient(connection) as client:
        try:
            health = client.health()  # before the plan's own reservations count in it
        except CallFailed as exc:
            print(f"autonomy: Health: {exc}", file=out)
            return EXIT_FAILED
        print(f"{len(ready)} ready tasks; no agent runs", file=out)
        estimates: dict[str, pb.RouteDecision] = {}
        for t in ready:
            try:
                d = client.route(route_request(t, queue.lanes[t.lane], progress))
            except CallFailed as exc:
                print(f"  {t.id:<24} {t.lane:<10} refused: {exc}", file=out)
                continue
            estimates[t.id] = d
            reason = pb.FallbackReason.Name(d.fallback_reason).removeprefix("FALLBACK_REASON_").lower()
            print(
                f"  {t.id:<24} {t.lane:<10} {d.model:<28} {_usd(d.estimated_cost_usd):>10} "
                f"{d.estimated_latency_s:>7.1f} s  then {', '.join(d.alternatives) or '-'}"
                + ("" if d.fallback_reason == pb.FALLBACK_REASON_NONE else f" ({reason})"),
                file=out,
            )
        total = sum(d.estimated_cost_usd for d in estimates.values())
        print(f"expected cost {_usd(total)} for {len(estimates)} tasks", file=out)
        for lane in queue.lanes:
            lane_cost = sum(d.estimated_cost_usd for d in estimates.values() if d.lane == lane)
            if any(t.lane == lane for t in ready):
                print(f"  lane {lane}: {_usd(lane_cost)}", file=out)
        lanes_planned = {t.lane for t in ready}
        for b in health.budgets:
            if b.scope == "provider" or (b.scope == "lane" and b.name not in lanes_planned):
                continue
            plan = (
                total
                if b.scope == "overall"
                else sum(d.estimated_cost_usd for d in estimates.values() if d.lane == b.name)
            )
            room = b.limit_usd - b.spent_usd - b.reserved_usd
            verdict = "fits" if plan <= room else "OVER"
            print(
                f"budget {b.scope} {b.name}: limit {_usd(b.limit_usd)}, spent {_usd(b.spent_usd)}, reserved "
                f"{_usd(b.reserved_usd)}, room {_usd(room)}: the plan's {_usd(plan)} {verdict}",
                file=out,
            )
        if not any(b.scope in ("overall", "lane") for b in health.budgets):
            print("budgets: none set", file=out)
        if health.guardrails.stop_loss_active:
            print(f"stop-loss active ({health.guardrails.trigger}): static models, no scale-up", file=out)
        for lane, tasks in _by_lane(ready).items():
            want = _wanted(queue, lane, len(tasks))
            costs = [estimates[t.id].estimated_cost_usd for t in tasks if t.id in estimates]
            per_task = progress.mean_cost(lane, OBSERVED_AT_LEAST)
            if per_task is None:
                per_task = sum(costs) / len(costs) if costs else 0.0
            scale = _ask_scale(client, lane, 1, want, tasks, per_task, "dry-run")
            if isinstance(scale, str):
                print(f"scale {lane}: {scale}; 1 agent", file=out)
                continue
            print(f"scale {lane}: {_scale_text(scale)}", file=out)
    return 0


def _scale_text(d: pb.ScaleDecision) -> str:
    action = pb.ScaleAction.Name(d.action).removeprefix("SCALE_ACTION_").lower()
    blocks = [pb.ScaleBlock.Name(b.block).removeprefix("SCALE_BLOCK_").lower() for b in d.blocking]
    text = f"{action}: {d.allowed_parallel_agents} agents allowed ({d.current_parallel_agents} -> "
    text += f"{d.requested_parallel_agents} asked), marginal NPV {_usd(d.marginal_npv_usd)}"
    return text + (f", blocked by {', '.join(blocks)}" if blocks else "")


def _by_lane(tasks: list[Task]) -> dict[str, list[Task]]:
    lanes: dict[str, list[Task]] = {}
    for t in tasks:
        lanes.setdefault(t.lane, []).append(t)
    return lanes


def _wanted(queue: Queue, lane: str, ready: int) -> int:
    cap = queue.lanes[lane].max_agents
    return max(1, min(ready, cap) if cap else ready)


def _ask_scale(
    client: RoutingClient,
    lane: str,
    current: int,
    want: int,
    tasks: list[Task],
    cost_per_task: float,
    request_id: str,
) -> pb.ScaleDecision | str:
    """Scale's answer for `want` agents on the lane (the value of the extra tasks, their estimated
    cost, on day 0), or why it could not be asked."""
    request = pb.ScaleRequest(
        lane=lane,
        current_parallel_agents=current,
        requested_parallel_agents=want,
        request_id=request_id,
    )
    if want > current:
        extra = tasks[current:want]
        value = sum(t.value_usd or 0.0 for t in extra)
        request.value.once.usd = value
        request.cost.once.usd = cost_per_task * len(extra)
    try:
        return client.scale(request)
    except CallFailed as exc:
        return str(exc)


# run


@dataclass
class _Outcome:
    task: str
    result: str  # "done", "failed", "stopped", "lane_fault", "refused", "abandoned"
    attempts: int = 0


class Runner:
    def __init__(self, queue: Queue, connection: Connection, out: TextIO, err: TextIO) -> None:
        self.queue = queue
        self.connection = connection
        self.out, self.err = out, err
        self.journal = Journal(queue.state_dir)
        self.processes = Processes()
        self.stop = threading.Event()
        self.signal: int | None = None
        self.lock = threading.Lock()
        self.progress = Progress(known=frozenset(t.id for t in queue.tasks))
        self.paused: dict[str, str] = {}  # lane -> why it runs no more tasks this run
        self.agents: dict[str, int] = dict.fromkeys(queue.lanes, 1)

    def record(self, event: str, **fields: Any) -> None:
        with self.lock:
            entry = self.journal.append(event, **fields)
            self.progress.add(entry)

    def say(self, text: str) -> None:
        print(f"autonomy: {text}", file=self.err, flush=True)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is None:
            self.signal = signum
            self.say(f"{signal.Signals(signum).name}: stopping; running attempts are abandoned")
        self.stop.set()
        # Ending the processes waits for them (SIGTERM, then SIGKILL 3 s on): not in the handler.
        threading.Thread(target=self.processes.stop, name="autonomy-stop", daemon=True).start()

    def run(self, retry_failed: bool = False, max_cycles: int = 0) -> int:
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            return self._run(retry_failed, max_cycles)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def _run(self, retry_failed: bool, max_cycles: int) -> int:
        self.progress = self.journal.replay(t.id for t in self.queue.tasks)
        if retry_failed:
            for task in self.progress.failed:
                self.record("task_reopened", task=task)
        self.record("run", pid=os.getpid(), queue=str(self.queue.path), done=len(self.progress.done))
        cycle = int(self.progress.last_cycle["cycle"]) if self.progress.last_cycle else 0
        cycles = 0
        with PatientClient(self.connection, self.stop) as client:
            while not self.stop.is_set() and not (max_cycles and cycles >= max_cycles):
                ready = [
                    t
                    for t in self.queue.ready(self.progress.done, self.progress.finished)
                    if t.lane not in self.paused
                ]
                if not ready:
                    break
                cycle += 1
                cycles += 1
                self._cycle(client, cycle, ready)
        if self.signal is not None:
            self.record("stopped", signal=signal.Signals(self.signal).name)
            return 128 + self.signal
        ready = self.queue.ready(self.progress.done, self.progress.finished)
        for lane, why in self.paused.items():
            self.say(f"lane {lane} stopped: {why}")
        if len(self.progress.done) == len(self.queue.tasks):
            self.say("every task done")
            return 0
        failed, blocked = self.progress.failed, self.queue.blocked(self.progress.failed)
        self.say(
            f"{len(self.progress.done)} of {len(self.queue.tasks)} tasks done; {len(failed)} failed"
            + (f" ({', '.join(failed)})" if failed else "")
            + f", {len(blocked)} blocked by a failure, {len(ready)} ready but not run"
        )
        return EXIT_FAILED

    def _cycle(self, client: RoutingClient, cycle: int, ready: list[Task]) -> None:
        stop_loss = True  # unknown counts as active: no scale-up
        try:
            stop_loss = client.health().guardrails.stop_loss_active
        except CallFailed as exc:
            self.say(f"Health: {exc}; no scale-up this cycle")
        chosen: list[tuple[Task, pb.RouteDecision | None]] = []
        notes: dict[str, str] = {}
        shared = False  # a task without repo chosen: the next waits (they share the queue's directory)
        for lane, lane_tasks in _by_lane(ready).items():
            tasks, own_dir = [], shared
            for t in lane_tasks:
                if t.repo is None and own_dir:
                    continue
                own_dir = own_dir or t.repo is None
                tasks.append(t)
            if not tasks:
                continue
            if (missing := missing_binary(self.queue.lanes[lane].command)) is not None:
                self.paused[lane] = str(missing)  # before routing: nothing reserved for it
                self.record("task_stopped", task=tasks[0].id, lane=lane, why=str(missing))
                continue
            current = self.agents[lane]
            want = _wanted(self.queue, lane, len(tasks))
            if stop_loss:
                want = min(want, current)
            first: pb.RouteDecision | None = None
            per_task = 0.0
            # The extra tasks' cost: the lane's mean booked per attempt, else its first task's estimate.
            if want > current:
                try:
                    first = client.route(route_request(tasks[0], self.queue.lanes[lane], self.progress))
                    observed = self.progress.mean_cost(lane, OBSERVED_AT_LEAST)
                    per_task = first.estimated_cost_usd if observed is None else observed
                except CallFailed as exc:
                    self.paused[lane] = f"route refused: {exc}"
                    self.record("task_stopped", task=tasks[0].id, lane=lane, why=self.paused[lane])
                    continue
            scale = _ask_scale(client, lane, current, want, tasks, per_task, f"autonomy:cycle-{cycle}")
            if isinstance(scale, str):
                notes[lane] = f"scale: {scale}"
                allowed = min(current, want)
            else:
                allowed = scale.allowed_parallel_agents
                if scale.blocking:
                    notes[lane] = _scale_text(scale)
            allowed = max(1, min(allowed, want))
            self.agents[lane] = allowed
            chosen += [(t, first if i == 0 else None) for i, t in enumerate(tasks[:allowed])]
            shared = shared or any(t.repo is None for t in tasks[:allowed])
        if self.stop.is_set():
            chosen = []  # stopping already: start nothing
        before = (self.progress.reported, len(self.progress.done), len(self.progress.failed))
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(chosen))) as pool:
            futures = [pool.submit(self._task, client, t, d) for t, d in chosen]
            pending = set(futures)
            while pending:  # a short wait, so that a signal is handled at once
                _, pending = concurrent.futures.wait(pending, timeout=0.5)
        for future in futures:
            if (error := future.exception()) is not None:
                self.say(f"a task failed unexpectedly: {error!r}")
        p = self.progress
        line = {
            "cycle": cycle,
            "tasks_run": [t.id for t, _ in chosen],
            "done": len(p.done),
            "failed": len(p.failed),
            "remaining": len(self.queue.tasks) - len(p.finished),
            "done_this_cycle": len(p.done) - before[1],
            "failed_this_cycle": len(p.failed) - before[2],
            "attempts_this_cycle": p.reported - before[0],
            "spend_usd": round(p.spend_usd, 6),
            "pass_rate": None if p.pass_rate is None else round(p.pass_rate, 4),
            "agents": {lane: self.agents[lane] for lane in sorted({t.lane for t, _ in chosen})},
            "stop_loss": stop_loss,
        }
        if notes:
            line["scale_notes"] = notes
        if self.paused:
            line["lanes_stopped"] = dict(self.paused)
        if self.signal is not None:
            line["interrupted"] = signal.Signals(self.signal).name
        self.record("cycle", **line)
        print(json.dumps(line), file=self.out, flush=True)

    def _task(self, client: RoutingClient, task: Task, decision: pb.RouteDecision | None) -> _Outcome:
        try:
            return self._run_task(client, task, decision)
        except Exception as exc:  # finished, so that a fault of this machine does not loop forever
            if self.stop.is_set():
                self.record("task_stopped", task=task.id, lane=task.lane, why=f"shutdown: {exc!r}")
                return _Outcome(task.id, "stopped")
            self.record("task_finished", task=task.id, outcome="failed", why=f"error: {exc!r}")
            return _Outcome(task.id, "failed")

    def _run_task(self, client: RoutingClient, task: Task, decision: pb.RouteDecision | None) -> _Outcome:
        with self.lock:
            tried_before = self.progress.attempts.get(task.id, 0)
            lifetime_before = self.progress.lifetime.get(task.id, 0)
            request = route_request(task, self.queue.lanes[task.lane], self.progress)
        workdir = self.queue.path.parent.resolve()
        if task.repo is not None:
            try:
                workdir, _ = ensure_worktree(self.queue.state_dir, task)
            except WorktreeError as exc:
                if not self.stop.is_set():
                    self.record("task_finished", task=task.id, outcome="failed", why=f"worktree: {exc}")
                    return _Outcome(task.id, "failed")
            if self.stop.is_set():  # stopped while git made the worktree: the next run starts it
                self.record("task_stopped", task=task.id, lane=task.lane, why="shutdown")
                return _Outcome(task.id, "stopped")
        self.record(
            "task_started", task=task.id, lane=task.lane, tried_before=tried_before, workdir=str(workdir)
        )
        logs = self.queue.state_dir / "logs" / task.id
        logs.mkdir(parents=True, exist_ok=True)
        attempts = tried_before
        rounds = 0
        while attempts < task.max_attempts:
            current: dict[str, Any] = {}

            def call_model(model: str, provider: str, current: dict[str, Any] = current) -> AgentRun:
                current["model"] = model
                log_path = logs / f"attempt-{len(list(logs.glob('attempt-*.log'))) + 1}.log"
                current["log"] = str(log_path)
                with log_path.open("ab") as log:
                    return self._attempt(task, str(workdir), model, provider, log)

            def on_attempt(attempt: Attempt, current: dict[str, Any] = current) -> None:
                self._journal_attempt(task, attempt, str(current.get("log", "")))

            try:
                run = run_task(
                    client,
                    request,
                    call_model,
                    max_attempts=task.max_attempts - attempts,
                    usage_of=lambda agent: agent.usage,
                    on_attempt=on_attempt,
                    first_time=lifetime_before + attempts - tried_before == 0,  # reopens included
                    decision=decision if rounds == 0 else None,
                )
            except Abandoned:
                self.record("attempt_abandoned", task=task.id, model=current.get("model", ""))
                self.record("task_stopped", task=task.id, lane=task.lane, why="shutdown")
                return _Outcome(task.id, "abandoned", attempts - tried_before)
            except CallFailed as exc:
                self.paused.setdefault(task.lane, f"route refused: {exc}")
                self.record("task_stopped", task=task.id, lane=task.lane, why=f"route refused: {exc}")
                return _Outcome(task.id, "refused", attempts - tried_before)
            attempts += sum(1 for a in run.attempts if a.report is not None)
            if run.model:
                self.record("task_finished", task=task.id, outcome="done", model=run.model)
                return _Outcome(task.id, "done", attempts - tried_before)
            if run.attempts and run.attempts[-1].outcome == pb.OUTCOME_UNSPECIFIED:  # a lane fault
                self.paused[task.lane] = run.stopped
                self.record("task_stopped", task=task.id, lane=task.lane, why=run.stopped)
                return _Outcome(task.id, "lane_fault", attempts - tried_before)
            if attempts >= task.max_attempts or self.stop.is_set():
                break
            delay = min(self.queue.max_backoff_s, self.queue.backoff_s * 2**rounds)
            retry_after = max((a.retry_after_s for a in run.attempts), default=0.0)
            delay = max(delay, min(retry_after, self.queue.max_backoff_s))
            self.say(f"{task.id}: every model tried failed; round {rounds + 2} in {delay:g} s")
            rounds += 1
            if self.stop.wait(delay):
                break
        if self.stop.is_set() and attempts < task.max_attempts:
            self.record("task_stopped", task=task.id, lane=task.lane, why="shutdown")
            return _Outcome(task.id, "stopped", attempts - tried_before)
        self.record("task_finished", task=task.id, outcome="failed", attempts=attempts)
        return _Outcome(task.id, "failed", attempts - tried_before)

    def _attempt(self, task: Task, workdir: str, model: str, provider: str, log: IO[bytes]) -> AgentRun:
        """The agent, then each gate in the workdir: a gate failing is a bad output (the model
        answered; its work does not pass)."""
        lane = self.queue.lanes[task.lane]
        values = {"prompt": task.prompt, "title": task.title, "workdir": workdir, "task": task.id}

        def announce(argv: list[str]) -> None:
            log.write(f"autonomy: running {argv}\n".encode())
            log.flush()

        runner = command_runner(
            lane.command,
            lane.timeout_s,
            values=values,
            cwd=workdir,
            echo=log.write,
            stderr=log,
            processes=self.processes,
            rate_limited_exit_codes=lane.rate_limited_exit_codes,
            announce=announce,
        )
        agent = runner(model, provider)
        for gate in task.gates:
            log.write(f"autonomy: gate {gate}\n".encode())
            log.flush()
            code, _, timed_out = run_process(
                [gate],
                self.queue.gate_timeout_s,
                cwd=workdir,
                echo=log.write,
                stderr=log,
                processes=self.processes,
                shell=True,
            )
            if not timed_out and code in (EXIT_NOT_FOUND, EXIT_NOT_EXECUTABLE):
                # The gate cannot run here (the lane's setup): unreported, the lane stops, as for an agent.
                meaning = "command not found" if code == EXIT_NOT_FOUND else "command not executable"
                raise LaneFault(f"gate {gate!r} exited {code}, a shell's {meaning!r}", code)
            if timed_out or code != 0:
                why = (
                    f"timed out after {self.queue.gate_timeout_s:g} s" if timed_out else f"exit status {code}"
                )
                raise ModelCallFailed(
                    f"gate {gate!r} failed: {why}", pb.OUTCOME_BAD_OUTPUT, agent.usage, code
                )
        return agent

    def _journal_attempt(self, task: Task, attempt: Attempt, log: str) -> None:
        d, sent, ack = attempt.decision, attempt.report, attempt.ack
        outcome = pb.Outcome.Name(attempt.outcome).removeprefix("OUTCOME_").lower()
        fields: dict[str, Any] = {
            "task": task.id,
            "lane": task.lane,
            "model": d.model,
            "provider": d.provider,
            "decision_id": d.decision_id,
            "outcome": "lane_fault" if attempt.outcome == pb.OUTCOME_UNSPECIFIED else outcome,
            "why": attempt.why,
            "exit_code": attempt.exit_code,
            "latency_s": round(attempt.latency_s, 3),
            "estimated_cost_usd": d.estimated_cost_usd,
            "estimated_input_tokens": d.input_tokens,
            "estimated_output_tokens": d.output_tokens,
            "reported": sent is not None,
            "log": log,
        }
        if sent is not None:
            fields |= {
                "input_tokens": sent.input_tokens,
                "output_tokens": sent.output_tokens,
                "estimated": attempt.usage is None,
                "validation_passed": sent.validation_passed,
                "first_time_pass": sent.first_time_pass,
                "retry_after_s": sent.retry_after_s,
                "usage_source": attempt.usage.source if attempt.usage else None,
            }
        if ack is not None:
            fields |= {
                "cost_usd": ack.cost_usd,
                "cost_exact": ack.cost_exact,
                "cost_bounded": ack.cost_bounded,
            }
        if attempt.report_error:
            fields["report_error"] = attempt.report_error
        self.record("attempt", **fields)


def run(
    queue: Queue,
    connection: Connection,
    out: TextIO,
    err: TextIO = sys.stderr,
    retry_failed: bool = False,
    max_cycles: int = 0,
) -> int:
    """Exit 2 at once when another run or prepare holds the queue's state directory."""
    try:
        with exclusive(queue.state_dir):
            return Runner(queue, connection, out, err).run(retry_failed, max_cycles)
    except Busy as exc:
        print(f"autonomy: {exc}", file=err)
        return EXIT_BUSY


# status


def status(queue: Queue, out: TextIO, as_json: bool = False) -> int:
    p = Journal(queue.state_dir).replay(t.id for t in queue.tasks)
    ready = queue.ready(p.done, p.finished)
    blocked = queue.blocked(p.failed)
    summary: dict[str, Any] = {
        "queue": str(queue.path),
        "journal": str(Journal(queue.state_dir).path),
        "tasks": len(queue.tasks),
        "done": len(p.done),
        "failed": len(p.failed),
        "blocked": len(blocked),
        "ready": len(ready),
        "waiting": len(queue.tasks) - len(p.finished) - len(ready) - len(blocked),
        "attempts_reported": p.reported,
        "attempts_abandoned": p.abandoned,
        "pass_rate": p.pass_rate,
        "first_time_passes": p.first_time,
        "estimated_reports": p.estimated_reports,
        "spend_usd": round(p.spend_usd, 6),
        "runs": p.runs,
        "last_cycle": {k: v for k, v in (p.last_cycle or {}).items() if k != "event"} or None,
        "last_stop": p.stops[-1] if p.stops else None,
    }
    if as_json:
        print(json.dumps(summary), file=out)
        return 0
    rate = "-" if p.pass_rate is None else f"{p.pass_rate:.0%}"
    print(
        f"{queue.path}: {summary['done']} of {summary['tasks']} tasks done, {summary['failed']} failed, "
        f"{summary['blocked']} blocked, {summary['ready']} ready, {summary['waiting']} waiting",
        file=out,
    )
    print(
        f"attempts reported {p.reported} (pass rate {rate}, {p.estimated_reports} with estimated tokens), "
        f"{p.abandoned} abandoned; spend reported {_usd(p.spend_usd)}; {p.runs} runs",
        file=out,
    )
    for task in queue.tasks:
        state = p.finished.get(task.id) or (
            "ready" if task in ready else "blocked" if task in blocked else "waiting"
        )
        model = f" on {p.models[task.id]}" if task.id in p.models else ""
        tries = p.attempts.get(task.id, 0)
        print(f"  {task.id:<24} {state:<8} {tries} attempts{model}", file=out)
    if p.last_cycle:
        print(f"last cycle: {json.dumps(summary['last_cycle'])}", file=out)
    if p.stops:
        print(f"last stop: {p.stops[-1].get('signal')} at {_when(p.stops[-1]['at'])}", file=out)
    return 0


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at)) if math.isfinite(at) else "?"
