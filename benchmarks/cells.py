"""What the server benchmarks share: the calls they make, server subprocesses, and a cell of
calls with the CPU time it cost."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orxaq.routing.v1 import routing_pb2, routing_pb2_grpc

CALL_TIMEOUT_S = 10.0
STOP_GRACE_S = 1.0

_PROMPT_PARAGRAPH = (
    "The upload worker retries failed chunk uploads, but when the storage backend answers "
    "503 the retry loop re-reads the chunk from the spool file after the cleanup job may "
    "already have removed it, so the job fails with FileNotFoundError instead of retrying. "
    "Keep the chunk bytes in memory for the duration of the retry loop, cap the backoff at "
    "thirty seconds, add a unit test that simulates two 503 answers followed by a 200, and "
    "make sure the existing progress callbacks still fire once per chunk. "
)
ROUTE_REQUEST = routing_pb2.RouteRequest(
    lane="codex",
    task=routing_pb2.Task(
        id="bench-1",
        title="Fix chunk retry after a 503 from the storage backend",
        prompt=(_PROMPT_PARAGRAPH * 5)[:2048],
    ),
)
# The no-op baseline: grpc.health.v1 Health/Check on the same server.
CHECK_REQUEST = health_pb2.HealthCheckRequest(service="")


@dataclass(frozen=True)
class Cell:
    calls: int
    wall_s: float
    server_cpu_s: float
    client_cpu_s: float

    @property
    def per_s(self) -> float:
        return self.calls / self.wall_s

    @property
    def server_us(self) -> float:
        return self.server_cpu_s / self.calls * 1e6

    @property
    def client_us(self) -> float:
        return self.client_cpu_s / self.calls * 1e6


def pooled(cells: Sequence[Cell]) -> Cell:
    return Cell(
        calls=sum(c.calls for c in cells),
        wall_s=sum(c.wall_s for c in cells),
        server_cpu_s=sum(c.server_cpu_s for c in cells),
        client_cpu_s=sum(c.client_cpu_s for c in cells),
    )


def process_cpu_s(pid: int) -> float:
    """utime + stime of every thread of `pid`, from /proc/<pid>/stat (fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    name: str
    pid: int
    calls: dict[str, Callable[[], object]]  # RPC name -> one blocking call


@contextmanager
def server_process(
    script: str, *args: str, env: Mapping[str, str] | None = None, stderr: IO[str] | None = None
) -> Iterator[tuple[int, int]]:
    """Runs `script --port 0 args...`, which prints its port on the first line and stops when its
    stdin closes; yields (pid, port) and stops it on the way out, error or not. Its stderr goes to
    `stderr` when given, else to this process's."""
    process = subprocess.Popen(
        [sys.executable, script, "--port", "0", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, **(env or {})},
        # Out of the terminal's process group: Ctrl-C reaches only this process, which then
        # stops the servers itself, instead of interrupting one mid-start-up.
        process_group=0,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(
                f"{' '.join(args)}: the server exited with status {process.wait()} before listening"
            )
        yield process.pid, int(line)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=STOP_GRACE_S + 10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def connect(
    stack: ExitStack,
    name: str,
    pid: int,
    port: int,
    route_request: routing_pb2.RouteRequest = ROUTE_REQUEST,
) -> Server:
    # Entered after the server process, so it closes first, cancelling any call in flight.
    channel = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{port}"))
    grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT_S)
    route = routing_pb2_grpc.RoutingServiceStub(channel).Route
    check = health_pb2_grpc.HealthStub(channel).Check
    return Server(
        name,
        pid,
        {
            "Route": functools.partial(route, route_request, timeout=CALL_TIMEOUT_S),
            "Check": functools.partial(check, CHECK_REQUEST, timeout=CALL_TIMEOUT_S),
        },
    )


def drive(pool: ThreadPoolExecutor, call: Callable[[], object], calls: int, concurrency: int) -> None:
    """Makes exactly `calls` calls, `concurrency` at a time; the first failure propagates."""

    def worker(count: int) -> None:
        for _ in range(count):
            call()

    shares = [calls // concurrency + (i < calls % concurrency) for i in range(concurrency)]
    for future in [pool.submit(worker, share) for share in shares if share]:
        future.result()


def measure(server: Server, rpc: str, pool: ThreadPoolExecutor, calls: int, concurrency: int) -> Cell:
    """A cell's calls, with the server CPU they cost until it went quiet (`settled`): work the
    server does after answering, such as the ledger's writer catching up, counts to this cell and
    not to the next one."""
    server_before, client_before, start = process_cpu_s(server.pid), time.process_time(), time.perf_counter()
    drive(pool, server.calls[rpc], calls, concurrency)
    wall_s = time.perf_counter() - start
    client_cpu_s = time.process_time() - client_before
    server_cpu_s, _ = settled(server.pid)
    return Cell(
        calls=calls, wall_s=wall_s, server_cpu_s=server_cpu_s - server_before, client_cpu_s=client_cpu_s
    )


# A server is quiet once it has used less than QUIET_SHARE of a CPU over the last QUIET_S: its idle
# threads still tick now and then, and /proc counts in 10 ms ticks, so one poll alone says little.
QUIET_S = 0.2
QUIET_SHARE = 0.25
_SETTLE_POLL_S = 0.02
_SETTLE_LIMIT_S = 60.0


def settled(pid: int) -> tuple[float, float]:
    """Waits until process `pid` has gone quiet; answers (its CPU seconds, the perf_counter time) as
    its quiet stretch began: the work it did after the caller's last answer is in them, the idle
    stretch that shows it was done is not."""
    samples: deque[tuple[float, float]] = deque([(time.perf_counter(), process_cpu_s(pid))])
    deadline = samples[0][0] + _SETTLE_LIMIT_S
    while True:
        time.sleep(_SETTLE_POLL_S)
        samples.append((time.perf_counter(), process_cpu_s(pid)))
        while samples[-1][0] - samples[1][0] >= QUIET_S:  # keep one sample at least QUIET_S old
            samples.popleft()
        (then, then_cpu), (now, now_cpu) = samples[0], samples[-1]
        if now - then >= QUIET_S and now_cpu - then_cpu < QUIET_SHARE * (now - then):
            return then_cpu, then
        if now > deadline:
            raise RuntimeError(f"server {pid} still busy {_SETTLE_LIMIT_S:g} s after its cell's last answer")


def checked_decision(server: Server) -> routing_pb2.RouteDecision:
    decision = server.calls["Route"]()
    assert isinstance(decision, routing_pb2.RouteDecision)
    if not decision.model:
        raise RuntimeError(f"{server.name}: Route answered without a model")
    return decision
