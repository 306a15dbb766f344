"""Server CPU per call: the sync grpc server against grpc.aio, both running the real Route.

Production serves on grpc.aio; this benchmark is what justified that choice, and it
re-checks it whenever the handlers or grpc change. Each server flavour runs in its own
subprocess (this script with ``--serve``) on 127.0.0.1: "asyncio" is the production
server itself, from `start_server`; "sync" is a `grpc.server` on a thread pool, built
here only as the comparison baseline, with the same services, options (`server_options`)
and `RoutingHandlers` behind a small sync adapter. This process is the client: it makes
a fixed number of calls per cell with a few in flight and reads the server's CPU time
(utime + stime from /proc/<pid>/stat) before and after each cell. The no-op baseline is
the grpc.health.v1 Health/Check on the same server, so Route / Check is what the Route
handler (decode, validate, score, encode) costs on top of a bare unary call. Design
bar: Route within 1.3x the server CPU per call of the no-op.

The calls of a cell are split over rounds, each on a fresh pair of server processes
(every flavour and RPC once per round, in alternating order), and pooled. A server's
CPU per call varies from one process to the next on this kind of machine, so the
asyncio-vs-sync verdict comes from a sign test over the rounds, not from one pair.

Run from the repository root (a full run takes about a minute on 2 cores):

    .venv/bin/python benchmarks/server.py
    .venv/bin/python benchmarks/server.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from orxaq.routing.v1 import routing_pb2, routing_pb2_grpc
from orxaq_grpc.application.outcomes import Outcomes
from orxaq_grpc.application.workflow import RoutingWorkflow
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.routing.validation import RequestInvalid
from orxaq_grpc.service.errors import invalid_argument
from orxaq_grpc.service.runtime import check_protobuf_backend
from orxaq_grpc.service.server import SERVICE_NAME, open_outcomes, server_options, start_server
from orxaq_grpc.service.servicer import RoutingHandlers
from orxaq_grpc.telemetry.export import configure

from cells import STOP_GRACE_S, Cell, checked_decision, connect, drive, measure, pooled, server_process

FLAVOURS = ("sync", "asyncio")
RPCS = ("Route", "Check")  # Check is grpc.health.v1 Health/Check, the no-op
BAR = 1.3
SIGNIFICANCE = 0.05  # one-sided sign test over the paired rounds
CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"

# --- server side: one flavour per subprocess -------------------------------------


# The sync flavour exists only as the comparison baseline for the production grpc.aio
# server: the sync twin of RoutingServicer and of start_server, nothing in production uses it.


class SyncRoutingServicer(routing_pb2_grpc.RoutingServiceServicer):
    """RoutingServicer on the sync server: same handlers, run on a pool thread."""

    def __init__(self, handlers: RoutingHandlers) -> None:
        self._handlers = handlers

    def Route(
        self, request: routing_pb2.RouteRequest, context: grpc.ServicerContext
    ) -> routing_pb2.RouteDecision:
        try:
            return self._handlers.route(request)
        except RequestInvalid as exc:
            context.abort_with_status(invalid_argument("RouteRequest", exc.violations))
            raise  # abort_with_status raises; this line is never reached

    def Health(
        self, request: routing_pb2.HealthRequest, context: grpc.ServicerContext
    ) -> routing_pb2.HealthResponse:
        return self._handlers.health(request)


def _start_sync_server(
    live: LiveRouter, outcomes: Outcomes, address: str, workers: int
) -> tuple[grpc.Server, health.HealthServicer, int]:
    """start_server on grpc.server: same services, options and health states."""
    server = grpc.server(
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rpc"), options=server_options(False)
    )
    handlers = RoutingHandlers(RoutingWorkflow(live, outcomes), str(outcomes.store.path.parent))
    routing_pb2_grpc.add_RoutingServiceServicer_to_server(SyncRoutingServicer(handlers), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    return server, health_servicer, port


def _stop_when_stdin_closes(stop: Callable[[], object]) -> None:
    """The parent stops a server by closing its stdin, which also happens if the parent dies."""

    def wait() -> None:
        # The raw fd, not sys.stdin: a thread blocked on a buffered stream's lock at exit is fatal.
        while os.read(sys.stdin.fileno(), 65536):  # only EOF matters; anything written is dropped
            pass
        stop()

    threading.Thread(target=wait, daemon=True).start()


def _announce(port: int) -> None:
    """The parent reads the bound port from the first line of stdout."""
    print(port, flush=True)


def _serve_sync(port: int, workers: int, config_dir: Path) -> None:
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # SIGINT: Ctrl-C when run by hand
        signal.signal(sig, lambda _s, _f: stopping.set())
    live = LiveRouter.from_directory(config_dir)
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as data_dir:
        outcomes = open_outcomes(live, Path(data_dir))
        server, health_servicer, bound = _start_sync_server(live, outcomes, f"127.0.0.1:{port}", workers)
        _stop_when_stdin_closes(stopping.set)
        _announce(bound)
        stopping.wait()
        health_servicer.enter_graceful_shutdown()
        server.stop(STOP_GRACE_S).wait()
        outcomes.store.close()


async def _serve_asyncio(port: int, config_dir: Path) -> None:
    """The production server, exactly as `start_server` builds it, telemetry included."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    live = LiveRouter.from_directory(config_dir)
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as data_dir:
        outcomes = open_outcomes(live, Path(data_dir))
        telemetry = configure()  # OTEL_* as in production: off unless set (benchmarks/tracing.py sets it)
        running = await start_server(live, outcomes, f"127.0.0.1:{port}", data_dir, telemetry=telemetry)
        _stop_when_stdin_closes(lambda: loop.call_soon_threadsafe(stopping.set))
        _announce(running.port)
        await stopping.wait()
        await running.stop(STOP_GRACE_S)
        outcomes.store.close()
        telemetry.shutdown()


# --- client side: this process ------------------------------------------------------


def _server_ratios(numerators: list[Cell], denominators: list[Cell]) -> list[float]:
    """Server CPU per call of one cell over another, round by round."""
    return [n.server_us / d.server_us for n, d in zip(numerators, denominators, strict=True)]


def _report(rounds: dict[tuple[str, str], list[Cell]], args: argparse.Namespace) -> None:
    cells = {key: pooled(per_round) for key, per_round in rounds.items()}
    count = len(rounds["sync", "Route"])
    print(
        f"\n{cells['sync', 'Route'].calls} calls a cell over {count} rounds of fresh servers, "
        f"{args.concurrency} in flight, sync pool {args.workers} workers, {os.cpu_count()} CPUs, 127.0.0.1\n"
    )
    print(
        f"{'flavour':8} {'RPC':6} {'calls/s':>8} {'server CPU µs/call':>19} {'per round':>13} "
        f"{'client CPU µs/call':>19}"
    )
    for (flavour, rpc), cell in cells.items():
        spread = [c.server_us for c in rounds[flavour, rpc]]
        print(
            f"{flavour:8} {rpc:6} {cell.per_s:8.0f} {cell.server_us:19.0f} "
            f"{f'{min(spread):.0f}-{max(spread):.0f}':>13} {cell.client_us:19.0f}"
        )

    print(f"\nRoute / no-op (Health/Check) server CPU per call, bar {BAR}x:")
    for flavour in FLAVOURS:
        ratio = cells[flavour, "Route"].server_us / cells[flavour, "Check"].server_us
        spread = _server_ratios(rounds[flavour, "Route"], rounds[flavour, "Check"])
        print(
            f"  {flavour:8} {ratio:.2f}x (rounds {min(spread):.2f}-{max(spread):.2f}x), "
            f"{'within' if ratio <= BAR else 'over'} the bar"
        )

    sync, aio = cells["sync", "Route"], cells["asyncio", "Route"]
    print(
        f"\nRoute, asyncio vs sync: {aio.per_s / sync.per_s:.2f}x the calls/s, "
        f"{aio.server_us / sync.server_us:.2f}x the server CPU per call"
    )
    # Each round is a fresh pair of processes measured side by side, so a sign test over the
    # rounds tells a real difference from process-to-process and machine noise. Ties carry no sign.
    ratios = _server_ratios(rounds["asyncio", "Route"], rounds["sync", "Route"])
    winner, loser = ("asyncio", "sync") if aio.server_us < sync.server_us else ("sync", "asyncio")
    cheaper_rounds = sum(r < 1 if winner == "asyncio" else r > 1 for r in ratios)
    signed = sum(r != 1 for r in ratios)
    p_value = sum(math.comb(signed, k) for k in range(cheaper_rounds, signed + 1)) / 2**signed
    detail = (
        f"{winner} takes {1 - cells[winner, 'Route'].server_us / cells[loser, 'Route'].server_us:.0%} less "
        f"server CPU per Route call, {cells[winner, 'Route'].server_us:.0f} vs "
        f"{cells[loser, 'Route'].server_us:.0f} µs, cheaper in {cheaper_rounds} of {count} rounds "
        f"({count - signed} tied), "
        f"sign test p={p_value:.2g}"
    )
    if p_value < SIGNIFICANCE:
        print(f"Recommendation: the {winner} server ({detail}).")
    else:
        print(f"Recommendation: keep the asyncio server production already runs; no clear winner ({detail}).")


def _round(
    index: int, pool: ThreadPoolExecutor, calls: int, warmup: int, args: argparse.Namespace
) -> dict[tuple[str, str], Cell]:
    """One round on a fresh pair of server processes: CPU per call varies more between
    processes than within one, so only new processes make the rounds independent samples."""
    with ExitStack() as stack:
        started = {
            flavour: stack.enter_context(
                server_process(__file__, "--serve", flavour, "--workers", str(args.workers))
            )
            for flavour in FLAVOURS
        }
        servers = {flavour: connect(stack, flavour, *started[flavour]) for flavour in FLAVOURS}
        for server in servers.values():
            decision = checked_decision(server)
            if index == 0:
                print(
                    f"{server.name}: Route chose {decision.model} "
                    f"({routing_pb2.Strategy.Name(decision.strategy)}, {decision.eligible_count} eligible)"
                )
            # Fills the sync worker pool and the code paths of both RPCs before any cell counts.
            for rpc in RPCS:
                drive(pool, server.calls[rpc], warmup, args.concurrency)
        cells = [(flavour, rpc) for flavour in FLAVOURS for rpc in RPCS]
        # Every other round runs the cells backwards, so no cell always goes first.
        return {
            (flavour, rpc): measure(servers[flavour], rpc, pool, calls, args.concurrency)
            for flavour, rpc in cells[:: -1 if index % 2 else 1]
        }


def _benchmark(args: argparse.Namespace) -> None:
    rounds = 5 if args.quick else args.rounds
    calls = 1200 if args.quick else args.calls
    warmup = 200 if args.quick else 400
    results: dict[tuple[str, str], list[Cell]] = {(f, rpc): [] for f in FLAVOURS for rpc in RPCS}
    with ThreadPoolExecutor(args.concurrency, thread_name_prefix="client") as pool:
        for index in range(rounds):
            share = calls // rounds + (index < calls % rounds)
            for key, cell in _round(index, pool, share, warmup, args).items():
                results[key].append(cell)
    _report(results, args)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20000, help="calls per cell (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=8, help="calls in flight (default %(default)s)")
    parser.add_argument("--workers", type=int, default=8, help="sync server pool size (default %(default)s)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=10,
        help="rounds, each on fresh servers, a cell is split over (default %(default)s)",
    )
    parser.add_argument("--quick", action="store_true", help="1200 calls a cell over 5 rounds: a smoke run")
    parser.add_argument(
        "--serve", choices=FLAVOURS, help="only run this server flavour (the benchmark's own use)"
    )
    parser.add_argument("--port", type=int, default=0, help="port for --serve; 0 picks a free one")
    parser.add_argument(
        "--config",
        type=Path,
        default=CONFIG_DIR,
        help="config directory for --serve (default: the shipped config/)",
    )
    args = parser.parse_args()

    if args.serve:
        check_protobuf_backend()
        if args.serve == "sync":
            _serve_sync(args.port, args.workers, args.config)
        else:
            asyncio.run(_serve_asyncio(args.port, args.config))
        return
    if min(args.calls, args.concurrency, args.workers, args.rounds) < 1 or args.rounds > args.calls:
        parser.error("--calls, --concurrency, --workers and --rounds must be positive, rounds <= calls")
    try:
        _benchmark(args)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
