"""Report against Route over gRPC, and whether a million reports keep memory flat.

Report is the only RPC that waits for the disk: it is acknowledged once the ledger's group
commit (SQLite WAL, synchronous=FULL, one writer thread) has made it durable. This measures,
in one run:

1. Throughput over gRPC against one real server subprocess (`orxaq-grpc serve` on 127.0.0.1,
   a fresh data directory): Route calls/s and durable Report calls/s, each Report for a
   distinct decision a Route cell made, with the same calls in flight so group commit can
   batch. Route and Report cells alternate over a few rounds (the order flips every round)
   and are pooled; server CPU per call comes from /proc/<pid>/stat. Design bar: Report at
   least 0.7x Route's calls/s. After the server stops, the ledger's rows are counted
   against the acknowledged calls.
2. Memory flatness in this process, on the servicer's own path without the transport
   (a million reports over gRPC would take too long): per report, a decision recorded the
   way Route records it (fresh id, as in production), then `RoutingHandlers.prepare_report`
   (convert, validate, price), `Outcomes.write_report` (waited for in batches) and
   `Outcomes.apply_report`. RSS (VmRSS) and the economics book's counter sets after every
   tenth of the reports, the first tenth being the warm point. Design bar: RSS grows less
   than 10% from warm to the end, and counter sets grow with elapsed minutes, never with
   reports. The second half's RSS growth is the one to watch for a leak: the first tenth
   ends about when the bounded recent-decision map fills, and that map's table is rebuilt
   once more under churn a little later.

Run from the repository root (a full run takes about three minutes on 2 cores):

    .venv/bin/python benchmarks/report.py
    .venv/bin/python benchmarks/report.py --quick
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import itertools
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import grpc

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq.routing.v1 import routing_pb2_grpc
from orxaq_grpc.application.outcomes import RECENT_DECISIONS, Outcomes
from orxaq_grpc.application.workflow import RoutingWorkflow
from orxaq_grpc.routing.ids import new_decision_id
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.service.convert import route_request_from_proto
from orxaq_grpc.service.server import open_outcomes
from orxaq_grpc.service.servicer import RoutingHandlers
from orxaq_grpc.store.sqlite import FILE_NAME

from cells import Cell, pooled, process_cpu_s  # beside this script

REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO / "config"
RATIO_BAR = 0.7  # Report calls/s over Route calls/s, at least
RSS_GROWTH_BAR = 0.10  # RSS growth from warm to the end, at most, as a share of warm RSS
WARMUP_CALLS = 200  # per RPC, before any cell counts
ROUTED = 1_000  # decisions routed in-process; the reports' decisions are copies under fresh ids
WAIT_EVERY = 10_000  # in-process reports queued before waiting for their commits
CALL_TIMEOUT_S = 10.0
START_TIMEOUT_S = 30.0
COMMIT_TIMEOUT_S = 60.0
STOP_GRACE_S = 1.0
SERVING = re.compile(r"serving \S+ on 127\.0\.0\.1:(\d+)")

# Tasks over every lane, so decisions (and the economics book's keys) span several models.
# Token counts are given, as lanes usually know them; no prompt, so Route is at its cheapest
# and the Report/Route ratio errs on the strict side.
ROUTE_REQUESTS = tuple(
    pb.RouteRequest(
        lane=lane, task=pb.Task(kind=kind, title=title, input_tokens=tokens_in, output_tokens=tokens_out)
    )
    for lane, kind, title, tokens_in, tokens_out in (
        ("codex", "bugfix", "Fix chunk retry after a 503 from the storage backend", 30_000, 4_000),
        ("codex", "tests", "Add tests for the invoice rounding rules", 12_000, 3_000),
        ("codex", "security", "Review the token refresh flow", 60_000, 6_000),
        ("gemini", "feature", "Add CSV export to the usage report", 20_000, 5_000),
        ("gemini", "docs", "Document the retry settings", 8_000, 2_000),
        ("claude", "refactor", "Split the billing service", 42_000, 6_000),
        ("claude", "migration", "Migrate the sessions table to UUID keys", 90_000, 8_000),
        ("local", "lint", "Fix lint warnings in the CLI module", 6_000, 1_000),
    )
)


class Routed(Protocol):
    """What a report is built from: a RouteDecision message or the core's Decision."""

    @property
    def decision_id(self) -> str: ...
    @property
    def lane(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def estimated_latency_s(self) -> float: ...


def report_request(decision: Routed, index: int) -> pb.ReportRequest:
    """A successful task as a lane reports it: actual output and latency around the estimate,
    one in ten failing the lane's validation, one in five passing only after a retry."""
    spread = 0.7 + 0.1 * (index % 6)
    passed = index % 10 != 9
    return pb.ReportRequest(
        decision_id=decision.decision_id,
        lane=decision.lane,
        provider=decision.provider,
        model=decision.model,
        input_tokens=decision.input_tokens,
        output_tokens=int(decision.output_tokens * spread),
        latency_s=decision.estimated_latency_s * spread,
        outcome=pb.OUTCOME_SUCCESS,
        validation_passed=passed,
        first_time_pass=passed and index % 5 != 0,
    )


# --- 1. gRPC: one server subprocess, this process the client ------------------------------


def watch_log(stream: IO[str], tail: deque[str], ports: queue.SimpleQueue[int | None]) -> None:
    """Drains the server's log (a full pipe would stall the server), keeps its tail for error
    messages and passes on the port of the "serving ... on 127.0.0.1:<port>" line; None at EOF."""
    for line in stream:
        tail.append(line)
        if match := SERVING.search(line):
            ports.put(int(match[1]))
    ports.put(None)


@contextmanager
def server_process(data_dir: Path) -> Iterator[tuple[int, int]]:
    """Yields (pid, port) of `orxaq-grpc serve`; SIGTERM on the way out, error or not."""
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "orxaq_grpc.cli", "serve", "--address", "127.0.0.1:0"),
            *("--config", str(CONFIG_DIR), "--data-dir", str(data_dir), "--grace", str(STOP_GRACE_S)),
        ],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # Out of the terminal's process group: Ctrl-C reaches only this process, which then
        # stops the server itself instead of interrupting it mid-start-up.
        process_group=0,
    )
    tail: deque[str] = deque(maxlen=20)
    ports: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    assert process.stderr is not None
    threading.Thread(target=watch_log, args=(process.stderr, tail, ports), daemon=True).start()
    try:
        try:
            port = ports.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            port = None
        if port is None:
            raise RuntimeError(f"the server did not start listening:\n{''.join(tail)}")
        yield process.pid, port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_GRACE_S + 10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"the server exited with status {process.returncode}:\n{''.join(tail)}")


def drive(method: grpc.UnaryUnaryMultiCallable, requests: Sequence[Any], in_flight: int) -> list[Any]:
    """One call per request, `in_flight` at a time; answers in request order, the first failure
    raised. Futures rather than a thread per call: far less client CPU on a 2-core machine."""
    slots = threading.Semaphore(in_flight)
    answers: list[Any] = [None] * len(requests)
    failures: list[Exception] = []

    def settle(index: int, future: grpc.Future) -> None:  # on a gRPC thread
        try:
            answers[index] = future.result()
        except Exception as exc:  # raised again below, in the caller's thread
            failures.append(exc)
        finally:
            slots.release()

    for index, request in enumerate(requests):
        slots.acquire()
        if failures:
            slots.release()
            break
        method.future(request, timeout=CALL_TIMEOUT_S).add_done_callback(functools.partial(settle, index))
    for _ in range(in_flight):  # every call has settled once all the slots are back
        slots.acquire()
    if failures:
        raise failures[0]
    return answers


def measure(
    pid: int, method: grpc.UnaryUnaryMultiCallable, requests: Sequence[Any], in_flight: int
) -> tuple[Cell, list[Any]]:
    """One cell: the calls, their wall time, and server and client CPU around them."""
    server_before, client_before = process_cpu_s(pid), time.process_time()
    start = time.perf_counter()
    answers = drive(method, requests, in_flight)
    cell = Cell(
        calls=len(requests),
        wall_s=time.perf_counter() - start,
        server_cpu_s=process_cpu_s(pid) - server_before,
        client_cpu_s=time.process_time() - client_before,
    )
    return cell, answers


class Client:
    """This process as the lanes: Route requests in rotation, decisions still to be reported."""

    def __init__(self, channel: grpc.Channel, in_flight: int) -> None:
        stub = routing_pb2_grpc.RoutingServiceStub(channel)
        self.route, self.report = stub.Route, stub.Report
        self.in_flight = in_flight
        self.unreported: deque[pb.RouteDecision] = deque()
        self.reported = 0

    def route_requests(self, count: int) -> list[pb.RouteRequest]:
        return [ROUTE_REQUESTS[i % len(ROUTE_REQUESTS)] for i in range(count)]

    def route_all(self, count: int) -> None:
        """Routes outside any cell: warm-up, and decisions for the first Report cells."""
        self.unreported.extend(drive(self.route, self.route_requests(count), self.in_flight))

    def report_requests(self, count: int) -> list[pb.ReportRequest]:
        """Reports for the oldest unreported decisions, each once; built before the clock starts."""
        requests = [report_request(self.unreported.popleft(), self.reported + i) for i in range(count)]
        self.reported += count
        return requests


def route_cell(client: Client, pid: int, calls: int) -> Cell:
    cell, decisions = measure(pid, client.route, client.route_requests(calls), client.in_flight)
    client.unreported.extend(decisions)  # the next Report cells' work
    return cell


def report_cell(client: Client, pid: int, calls: int) -> Cell:
    cell, acks = measure(pid, client.report, client.report_requests(calls), client.in_flight)
    check_acks(acks)
    return cell


def check_acks(acks: Sequence[pb.ReportAck]) -> None:
    if bad := [a.decision_id for a in acks if a.duplicate or not a.decision_known]:
        raise RuntimeError(f"{len(bad)} reports came back duplicate or for an unknown decision: {bad[:3]}")


def grpc_benchmark(calls: int, rounds: int, in_flight: int) -> None:
    with tempfile.TemporaryDirectory(prefix="orxaq-report-bench-") as tmp:
        data_dir = Path(tmp)
        with server_process(data_dir) as (pid, port), grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT_S)
            client = Client(channel, in_flight)
            # Enough decisions for two Report cells in a row (round 1 starts with Report),
            # plus the warm-up reports; the rounds' Route cells keep the supply up.
            client.route_all(calls + WARMUP_CALLS)
            check_acks(drive(client.report, client.report_requests(WARMUP_CALLS), in_flight))
            cells: dict[str, list[Cell]] = {"Route": [], "Report": []}
            for index in range(rounds):
                order = ("Route", "Report") if index % 2 == 0 else ("Report", "Route")
                for rpc in order:
                    run = route_cell if rpc == "Route" else report_cell
                    cells[rpc].append(run(client, pid, calls))
        routed = sum(c.calls for c in cells["Route"]) + calls + WARMUP_CALLS
        decisions, reports = ledger_rows(data_dir)
    print_grpc(cells, pid, in_flight, routed, client.reported, decisions, reports)


def ledger_rows(data_dir: Path) -> tuple[int, int]:
    """Rows in the stopped server's ledger: decisions, reports."""
    with closing(sqlite3.connect(f"{(data_dir / FILE_NAME).as_uri()}?mode=ro", uri=True)) as db:
        decisions = db.execute("SELECT count(*) FROM decisions").fetchone()[0]
        reports = db.execute("SELECT count(*) FROM reports").fetchone()[0]
    return decisions, reports


def print_grpc(
    cells: dict[str, list[Cell]],
    pid: int,
    in_flight: int,
    routed: int,
    reported: int,
    decisions: int,
    reports: int,
) -> None:
    route, report = pooled(cells["Route"]), pooled(cells["Report"])
    print(
        f"1. gRPC, one server process (pid {pid}) on 127.0.0.1: {cells['Route'][0].calls} calls a cell, "
        f"{len(cells['Route'])} rounds alternating Route and Report, {in_flight} in flight, "
        f"{os.cpu_count()} CPUs\n"
    )
    print(f"{'RPC':7} {'calls/s':>8} {'per round':>11} {'server CPU µs/call':>19} {'client CPU µs/call':>19}")
    for rpc, cell in (("Route", route), ("Report", report)):
        spread = [c.per_s for c in cells[rpc]]
        print(
            f"{rpc:7} {cell.per_s:8.0f} {f'{min(spread):.0f}-{max(spread):.0f}':>11} "
            f"{cell.server_us:19.0f} {cell.client_us:19.0f}"
        )
    ratio = report.per_s / route.per_s
    per_round = [p.per_s / r.per_s for p, r in zip(cells["Report"], cells["Route"], strict=True)]
    print(
        f"\nReport / Route calls/s: {ratio:.2f}x (rounds {min(per_round):.2f}-{max(per_round):.2f}x), "
        f"bar >= {RATIO_BAR}x: {'met' if ratio >= RATIO_BAR else 'NOT met'}"
    )
    print(f"Report / Route server CPU per call: {report.server_us / route.server_us:.2f}x")
    print(
        f"Ledger after SIGTERM: {reports} report rows for {reported} reports acknowledged, "
        f"{decisions} decision rows for {routed} Routes"
        f"{'' if (reports, decisions) == (reported, routed) else ' -- MISMATCH'}"
    )
    print("Group commits: not exposed over gRPC (SqliteStore.commits is in the server); part 2 counts them.")


# --- 2. memory: the report path in this process --------------------------------------------


@dataclass(frozen=True)
class Point:
    reports: int
    rss_kib: int
    buckets: int
    at: float  # time.time(): economics buckets follow the wall clock


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def point(outcomes: Outcomes, reports: int) -> Point:
    gc.collect()  # so when the cyclic collector last ran does not move the figure
    return Point(reports, rss_kib(), outcomes.book.bucket_count(), time.time())


def batch_sizes(total: int) -> Iterator[int]:
    """Batches of at most WAIT_EVERY that end exactly at every tenth of `total`."""
    tenths = [total * k // 10 for k in range(11)]
    for begin, end in itertools.pairwise(tenths):
        for start in range(begin, end, WAIT_EVERY):
            yield min(WAIT_EVERY, end - start)


def page_cache_text(ledger: Path) -> str:
    """The store sets no cache_size, so each of its connections (the writer, and the reader
    for decisions not in memory) has SQLite's default: a fixed cap, whatever the file's size."""
    with closing(sqlite3.connect(f"{ledger.as_uri()}?mode=ro", uri=True)) as db:
        cache_size = db.execute("PRAGMA cache_size").fetchone()[0]
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        checkpoint = db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    kib = -cache_size if cache_size < 0 else cache_size * page_size // 1024
    return (
        f"SQLite page cache: cache_size {cache_size} = at most {kib} KiB per connection whatever the "
        f"ledger's size (the store sets none; {page_size} B pages); WAL checkpointed every "
        f"{checkpoint} pages"
    )


def memory_benchmark(total: int) -> None:
    live = LiveRouter.from_directory(CONFIG_DIR)
    with tempfile.TemporaryDirectory(prefix="orxaq-report-bench-") as tmp:
        outcomes = open_outcomes(live, Path(tmp))
        try:
            push_reports(live, outcomes, RoutingHandlers(RoutingWorkflow(live, outcomes), tmp), total)
        finally:
            outcomes.store.close()


def push_reports(live: LiveRouter, outcomes: Outcomes, handlers: RoutingHandlers, total: int) -> None:
    started = time.time()
    router = live.current
    requests = [route_request_from_proto(message)[0] for message in ROUTE_REQUESTS]
    routed = []
    for i in range(ROUTED):
        decision = router.route(requests[i % len(requests)], guards=outcomes)
        outcomes.record_decision(decision)
        routed.append(decision)
    keys = len({(d.lane, d.provider, d.model) for d in routed})
    outcomes.store.flush()
    points = [point(outcomes, 0)]

    done, report_s, setup_s, commits = 0, 0.0, 0.0, 0
    for size in batch_sizes(total):
        start = time.perf_counter()
        # Fresh ids, each a decision recorded as Route records it: every report is a new ledger
        # row for a decision this server knows, and the bounded recent-decision map fills up.
        decisions = [
            dataclasses.replace(routed[(done + i) % ROUTED], decision_id=new_decision_id())
            for i in range(size)
        ]
        for decision in decisions:
            outcomes.record_decision(decision)
        messages = [report_request(d, done + i) for i, d in enumerate(decisions)]
        outcomes.store.flush()  # the reports below then wait for their own commits only
        middle = time.perf_counter()
        commits_before = outcomes.store.commits
        # The Report servicer's path: prepare, the durable write, then apply once new.
        pending = []
        for message in messages:
            record = handlers.prepare_report(message)
            pending.append((record, outcomes.write_report(record)))
        for record, future in pending:
            if not future.result(timeout=COMMIT_TIMEOUT_S) or not record.decision_known:
                raise RuntimeError(f"report {record.decision_id} was a duplicate or for an unknown decision")
            outcomes.apply_report(record)
        report_s += time.perf_counter() - middle
        setup_s += middle - start
        commits += outcomes.store.commits - commits_before
        done += size
        if done * 10 % total == 0:
            points.append(point(outcomes, done))
    print_memory(outcomes, points, keys, started, report_s, setup_s, commits)


def time_buckets(since: float, until: float) -> int:
    """Minute and hour buckets a run from `since` to `until` can have touched."""
    return int(until // 60) - int(since // 60) + 1 + int(until // 3600) - int(since // 3600) + 1


def print_memory(
    outcomes: Outcomes,
    points: list[Point],
    keys: int,
    started: float,
    report_s: float,
    setup_s: float,
    commits: int,
) -> None:
    warm, middle, end = points[1], points[5], points[-1]
    ledger = outcomes.store.path
    size_mib = sum(p.stat().st_size for p in ledger.parent.glob(f"{ledger.name}*")) / 2**20
    print(
        f"\n2. Memory, in-process: {end.reports:,} reports on the Report servicer's path, each for a "
        f"fresh decision recorded as Route records it (copies of {ROUTED:,} routed ones), "
        f"waited for in batches of at most {WAIT_EVERY:,}\n"
    )
    print(f"{'after reports':>13} {'RSS MiB':>8} {'counter sets':>13} {'bound: keys x time buckets':>27}")
    for p in points:
        bound = keys * time_buckets(started, p.at)
        print(f"{p.reports:13,} {p.rss_kib / 1024:8.1f} {p.buckets:13} {bound:27}")

    def growth(since: Point) -> str:
        kib = end.rss_kib - since.rss_kib
        return f"{kib / 1024:+.1f} MiB ({kib / since.rss_kib:+.1%})"

    share = (end.rss_kib - warm.rss_kib) / warm.rss_kib
    print(
        f"\nRSS growth from warm ({warm.reports:,}) to the end: {growth(warm)}, bar < {RSS_GROWTH_BAR:.0%}: "
        f"{'met' if share < RSS_GROWTH_BAR else 'NOT met'}; over the second half: {growth(middle)}"
    )
    if ROUTED + warm.reports < RECENT_DECISIONS:
        print(
            f"  (the recent-decision map still fills up to {RECENT_DECISIONS:,} decisions after the warm "
            f"point: too few reports to show flatness)"
        )
    within = all(p.buckets <= keys * time_buckets(started, p.at) for p in points)
    print(
        f"Economics counter sets: {warm.buckets} -> {end.buckets}: one per key (lane, provider, model; "
        f"{keys} here) per minute and hour touched, {'within' if within else 'OVER'} that bound: they "
        f"grow with wall-clock minutes (kept a day), not with reports"
    )
    print(
        f"Rate: {end.reports / report_s:,.0f} reports/s (prepare, durable write, apply; {report_s:.0f} s), "
        f"{commits:,} group commits ({end.reports / commits:.0f} reports each); recording and committing "
        f"the decisions and building the report messages took another {setup_s:.0f} s"
    )
    print(f"{page_cache_text(ledger)}; ledger now {size_mib:,.0f} MiB on disk")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=4000, help="gRPC calls per cell (default %(default)s)")
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds of a Route and a Report cell (default %(default)s)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=32, help="gRPC calls in flight (default %(default)s)"
    )
    parser.add_argument(
        "--reports", type=int, default=1_000_000, help="in-process reports (default %(default)s)"
    )
    parser.add_argument("--quick", action="store_true", help="500 calls a cell, 20,000 reports: a smoke run")
    args = parser.parse_args()
    calls = 500 if args.quick else args.calls
    reports = 20_000 if args.quick else args.reports
    if min(calls, args.rounds, args.concurrency) < 1 or reports < 10:
        parser.error("--calls, --rounds and --concurrency must be positive, --reports at least 10")
    try:
        grpc_benchmark(calls, args.rounds, args.concurrency)
        memory_benchmark(reports)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
