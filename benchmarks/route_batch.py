"""RouteBatch against single Route calls: decisions per second, and server CPU per decision.

One real server subprocess (the production server from `start_server`, as benchmarks/server.py runs
it, telemetry as OTEL_* says: off by default) on 127.0.0.1 and a fresh ledger, on a copy of the
shipped config whose per-lane rate ceilings are raised out of the way (at the shipped 1,000 requests
a second per lane the ceiling, not the server, would set the pace). This process is the client, with
the benchmarks' blocking grpc client machinery (`cells.py`):

- single: `Route` calls, `--concurrency` in flight (enough to keep the server busy), each call one
  task of the task set, round robin;
- batch: `RouteBatch` calls of `--batch` tasks each (1,000: the policy's limit), `--batch-concurrency`
  in flight, the same task set.

The task set is the same for both: distinct tasks over three lanes (titles, prompts of about
`--prompt-chars` characters, a fifth with a task kind, a seventh with a value for the strong-or-weak
choice, an eleventh with a cost cap); 1,000 of them must fit the server's receive limit (about 1.1 MiB
as shipped), which is why prompts are short. The cells alternate over `--rounds` rounds (the order
flips every round) and are pooled; server CPU comes from /proc/<pid>/stat. A cell lasts until the
server has gone quiet after its last answer: the ledger's writer can trail the answers (it does after
a batch), and decisions per second counts what the server sustains, decision log included; the rate
of answers alone is printed beside it. The design bar: RouteBatch of 1,000 tasks gives at least 20x
the decisions per second of single Routes. The ratio is measured in one run, on one server, so
machine noise moves both sides.

Run from the repository root (about a minute on 2 cores):

    .venv/bin/python benchmarks/route_batch.py
    .venv/bin/python benchmarks/route_batch.py --quick
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq.routing.v1 import routing_pb2_grpc
from orxaq_grpc.service.server import max_request_bytes

from cells import CALL_TIMEOUT_S, Cell, pooled, process_cpu_s, server_process, settled  # beside this script

REPO = Path(__file__).resolve().parent.parent
BAR = 20.0
SERVER = str(Path(__file__).resolve().parent / "server.py")

_SENTENCES = (
    "The upload worker retries failed chunk uploads, but when the storage backend answers 503 the "
    "retry loop re-reads the chunk from the spool file after the cleanup job may have removed it.",
    "Keep the chunk bytes in memory for the duration of the retry loop; cap the backoff at thirty seconds.",
    "Add a unit test that simulates two 503 answers followed by a 200, and check the progress callbacks.",
    "The scheduler drops jobs whose deadline falls inside a daylight saving transition; reproduce it.",
    "Document the new configuration keys in the operator guide and give an example for each of them.",
    "The billing export writes amounts as floats; switch to integer cents end to end and migrate the rows.",
    "Review the session token handling for timing leaks and make the comparison constant time.",
    "Split the payment service module into a client, a retry policy and the domain types.",
)
_TITLES = (
    "Fix chunk retry after a 503 (#{i})",
    "Handle DST in the scheduler, case {i}",
    "Document config keys, part {i}",
    "Move billing export to cents ({i})",
    "Review token comparison {i}",
    "Split the payment module, step {i}",
)
_KINDS = ("test", "docs", "refactor", "architecture", "bugfix")
_LANES = ("codex", "gemini", "claude")


def task_set(count: int, prompt_chars: int) -> list[pb.RouteRequest]:
    """Distinct route requests, the same for both sides of the comparison."""
    requests = []
    for i in range(count):
        sentences = [f"Task {i}."]
        j = i
        while sum(len(s) + 1 for s in sentences) < prompt_chars:
            sentences.append(_SENTENCES[j % len(_SENTENCES)])
            j += 3
        task = pb.Task(
            id=f"bench-{i}",
            title=_TITLES[i % len(_TITLES)].format(i=i),
            prompt=" ".join(sentences)[:prompt_chars],
        )
        if i % 5 == 0:
            task.kind = _KINDS[(i // 5) % len(_KINDS)]
        if i % 7 == 0:
            task.value_usd = 5.0 + i % 40
        request = pb.RouteRequest(lane=_LANES[i % len(_LANES)], task=task)
        if i % 11 == 0:
            request.constraints.max_cost_usd = 0.05
        requests.append(request)
    return requests


def bench_config(directory: Path) -> Path:
    """The shipped config with the per-lane rate ceilings out of the way."""
    for source in (REPO / "config").glob("*.toml"):
        text = source.read_text()
        if source.name == "policy.toml":
            text = text.replace("lane_requests_per_s = 1000.0", "lane_requests_per_s = 1000000.0")
            text = text.replace("lane_burst = 2000", "lane_burst = 10000000")
            assert "lane_burst = 10000000" in text, "policy.toml's [ceilings] changed: update this benchmark"
        (directory / source.name).write_text(text)
    return directory


def drive(pool: ThreadPoolExecutor, calls: list[Callable[[], object]], concurrency: int) -> None:
    """Makes every call of `calls`, `concurrency` at a time; the first failure propagates."""
    feed = iter(calls)
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                call = next(feed, None)
            if call is None:
                return
            call()

    for future in [pool.submit(worker) for _ in range(concurrency)]:
        future.result()


def thread_cpu_s(pid: int) -> tuple[float, float]:
    """(the main thread's CPU seconds, every other thread's) of process `pid`: the server's event loop
    runs on its main thread; the ledger's writer and gRPC's own threads are the others."""
    main = others = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:  # a thread that ended meanwhile
            continue
        cpu = (int(fields[11]) + int(fields[12])) / tick
        if task.name == str(pid):
            main += cpu
        else:
            others += cpu
    return main, others


@dataclass(frozen=True)
class Measured:
    cell: Cell  # wall time until the server was done: its ledger caught up with the cell's decisions
    answered_wall_s: float  # wall time until the last answer
    main_cpu_s: float  # the server's event loop thread
    other_cpu_s: float  # the server's other threads: the ledger writer, gRPC's


def measure(
    pid: int, pool: ThreadPoolExecutor, calls: list[Callable[[], object]], decisions: int, concurrency: int
) -> Measured:
    """A cell counted in decisions: `calls` that make `decisions` in all. The cell lasts until the
    server has gone quiet (`settled`), not just until the last answer: the ledger's writer may still
    be writing the cell's decisions, and that work is what the server can sustain."""
    main_before, others_before = thread_cpu_s(pid)
    server_before, client_before, start = process_cpu_s(pid), time.process_time(), time.perf_counter()
    drive(pool, calls, concurrency)
    answered_at = time.perf_counter()
    client_cpu_s = time.process_time() - client_before
    server_cpu_s, busy_until = settled(pid)
    main_after, others_after = thread_cpu_s(pid)
    cell = Cell(
        calls=decisions,
        wall_s=max(answered_at, busy_until) - start,
        server_cpu_s=server_cpu_s - server_before,
        client_cpu_s=client_cpu_s,
    )
    return Measured(cell, answered_at - start, main_after - main_before, others_after - others_before)


def checked_batch(response: pb.RouteBatchResponse, size: int) -> None:
    errors = [r.error for r in response.results if r.WhichOneof("outcome") == "error"]
    if len(response.results) != size or errors:
        raise RuntimeError(f"RouteBatch answered {len(response.results)} of {size}, errors: {errors[:3]}")


def _round(
    index: int,
    pid: int,
    stub: routing_pb2_grpc.RoutingServiceStub,
    pool: ThreadPoolExecutor,
    tasks: list[pb.RouteRequest],
    args: argparse.Namespace,
) -> dict[str, Measured]:
    singles = [functools.partial(stub.Route, t, timeout=CALL_TIMEOUT_S) for t in tasks]
    single_calls = list(itertools.islice(itertools.cycle(singles), args.single_calls))
    batch_request = pb.RouteBatchRequest(requests=tasks[: args.batch])

    def one_batch() -> None:
        checked_batch(stub.RouteBatch(batch_request, timeout=CALL_TIMEOUT_S * 10), args.batch)

    batch_calls = [one_batch] * args.batch_calls
    cells = {
        "single": lambda: measure(pid, pool, single_calls, len(single_calls), args.concurrency),
        "batch": lambda: measure(
            pid, pool, batch_calls, args.batch * len(batch_calls), args.batch_concurrency
        ),
    }
    order = ("single", "batch")[:: -1 if index % 2 else 1]  # every other round the other goes first
    return {name: cells[name]() for name in order}


def _benchmark(args: argparse.Namespace) -> None:
    tasks = task_set(max(args.batch, 1000), args.prompt_chars)
    size = pb.RouteBatchRequest(requests=tasks[: args.batch]).ByteSize()
    with tempfile.TemporaryDirectory(prefix="bench-batch-config-") as directory:
        config = bench_config(Path(directory))
        from orxaq_grpc.config.load import load_config

        limit = max_request_bytes(load_config(config).policy.limits)
        print(
            f"{args.batch} tasks a batch, {size:,} bytes (receive limit {limit:,}); prompts of "
            f"{args.prompt_chars} characters; {os.cpu_count()} CPUs, 127.0.0.1"
        )
        if size > limit:
            raise SystemExit("the batch is over the server's receive limit: shorter --prompt-chars")
        results: dict[str, list[Measured]] = {"single": [], "batch": []}
        with ExitStack() as stack:
            pid, port = stack.enter_context(
                server_process(SERVER, "--serve", "asyncio", "--config", str(config))
            )
            channel = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{port}"))
            grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT_S)
            stub = routing_pb2_grpc.RoutingServiceStub(channel)
            with ThreadPoolExecutor(
                max(args.concurrency, args.batch_concurrency), thread_name_prefix="client"
            ) as pool:
                # Warm both code paths before anything counts.
                drive(
                    pool,
                    [functools.partial(stub.Route, t, timeout=CALL_TIMEOUT_S) for t in tasks[:300]],
                    args.concurrency,
                )
                checked_batch(stub.RouteBatch(pb.RouteBatchRequest(requests=tasks[: args.batch])), args.batch)
                for index in range(args.rounds):
                    for name, measured in _round(index, pid, stub, pool, tasks, args).items():
                        results[name].append(measured)
                        cell = measured.cell
                        print(
                            f"  round {index + 1} {name:6} {cell.per_s:9.0f} decisions/s "
                            f"({cell.calls / measured.answered_wall_s:.0f} answered/s), server "
                            f"{cell.server_us:7.1f} µs CPU a decision",
                            flush=True,
                        )
    single, batch = (pooled([m.cell for m in results[name]]) for name in ("single", "batch"))
    ratios = [b.cell.per_s / s.cell.per_s for s, b in zip(results["single"], results["batch"], strict=True)]

    def split(name: str) -> str:
        decisions = sum(m.cell.calls for m in results[name])
        main = sum(m.main_cpu_s for m in results[name]) / decisions * 1e6
        others = sum(m.other_cpu_s for m in results[name]) / decisions * 1e6
        return f"event loop {main:.1f} + other threads (ledger writer, gRPC) {others:.1f}"

    print(
        f"\n{'':8} {'decisions/s':>12} {'server CPU µs/decision':>23} {'client CPU µs/decision':>23}\n"
        f"{'single':8} {single.per_s:12.0f} {single.server_us:23.1f} {single.client_us:23.1f}   "
        f"({args.concurrency} calls in flight)\n"
        f"{'batch':8} {batch.per_s:12.0f} {batch.server_us:23.1f} {batch.client_us:23.1f}   "
        f"({args.batch} tasks a call, {args.batch_concurrency} in flight)"
    )
    ratio = batch.per_s / single.per_s

    def answered_per_s(name: str) -> float:
        return sum(m.cell.calls for m in results[name]) / sum(m.answered_wall_s for m in results[name])

    print(
        f"answers alone (not waiting for the ledger): single {answered_per_s('single'):.0f}/s, "
        f"batch {answered_per_s('batch'):.0f}/s, "
        f"{answered_per_s('batch') / answered_per_s('single'):.1f}x"
    )
    print(
        f"\nRouteBatch / Route decisions per second: {ratio:.1f}x "
        f"(rounds {min(ratios):.1f}-{max(ratios):.1f}x), "
        f"{'meets' if ratio >= BAR else 'under'} the {BAR:g}x bar; server CPU per decision "
        f"{single.server_us / batch.server_us:.1f}x less in a batch"
    )
    print(f"server CPU µs a decision, single: {split('single')}")
    print(f"server CPU µs a decision, batch:  {split('batch')}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--batch", type=int, default=1000, help="tasks per RouteBatch call (default %(default)s)"
    )
    parser.add_argument(
        "--batch-calls", type=int, default=12, help="RouteBatch calls a round (default %(default)s)"
    )
    parser.add_argument(
        "--batch-concurrency", type=int, default=2, help="RouteBatch calls in flight (default %(default)s)"
    )
    parser.add_argument(
        "--single-calls", type=int, default=1500, help="Route calls a round (default %(default)s)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=16, help="Route calls in flight (default %(default)s)"
    )
    parser.add_argument(
        "--rounds", type=int, default=4, help="rounds, the cells alternating (default %(default)s)"
    )
    parser.add_argument(
        "--prompt-chars", type=int, default=700, help="each task's prompt (default %(default)s)"
    )
    parser.add_argument("--quick", action="store_true", help="2 rounds of a third the calls: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.batch_calls, args.single_calls = 2, 4, 500
    if (
        min(
            args.batch,
            args.batch_calls,
            args.batch_concurrency,
            args.single_calls,
            args.concurrency,
            args.rounds,
        )
        < 1
    ):
        parser.error("counts must be positive")
    try:
        _benchmark(args)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
