"""What telemetry costs Route: server CPU per call with tracing off, 1% sampled and 100% sampled.

Four production servers (`server.py --serve asyncio`, in subprocesses) differ only in their
OTEL_* variables: no telemetry at all; metrics only (tracing off); metrics and traces sampled at
1% (`parentbased_traceidratio`); metrics and every call traced. All export over OTLP/gRPC to a
sink in this process (the collector's trace and metrics services, answering at once), so
building, batching and sending spans and metric points is counted in the server's CPU. Each
server also answers the no-op (grpc.health.v1 Health/Check, traced like everything else on it).
Servers are started fresh every round; cells are pooled over the rounds.

Bars (DESIGN §8, issue 5): Route within 1.3x the no-op with telemetry on and tracing off; within
2x with every call traced.

    .venv/bin/python benchmarks/tracing.py
    .venv/bin/python benchmarks/tracing.py --quick
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from cells import Cell, checked_decision, connect, drive, measure, pooled, server_process

SERVER_SCRIPT = str(Path(__file__).resolve().parent / "server.py")
RPCS = ("Route", "Check")
BARS = {"metrics, tracing off": 1.3, "traced 100%": 2.0}


def variants(endpoint: str) -> dict[str, dict[str, str]]:
    export = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",  # a point a second, not a minute: their cost shows
    }
    return {
        "no telemetry": {},
        "metrics, tracing off": {**export, "OTEL_TRACES_EXPORTER": "none"},
        "traced 1%": {
            **export,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.01",
        },
        "traced 100%": {**export, "OTEL_TRACES_SAMPLER": "parentbased_always_on"},
    }


class Sink(trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer):
    """Takes every export and counts the spans."""

    def __init__(self) -> None:
        self.spans = 0
        self.metric_exports = 0

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            self.spans += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
            return trace_service_pb2.ExportTraceServiceResponse()
        self.metric_exports += 1
        return metrics_service_pb2.ExportMetricsServiceResponse()


def _start_sink() -> tuple[grpc.Server, Sink, str]:
    sink = Sink()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="sink"))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(sink, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, sink, f"http://127.0.0.1:{port}"


def _round(
    index: int,
    settings: dict[str, dict[str, str]],
    pool: ThreadPoolExecutor,
    calls: int,
    warmup: int,
    concurrency: int,
) -> dict[tuple[str, str], Cell]:
    with ExitStack() as stack:
        servers = {}
        for name, env in settings.items():
            pid, port = stack.enter_context(server_process(SERVER_SCRIPT, "--serve", "asyncio", env=env))
            servers[name] = connect(stack, name, pid, port)
        for server in servers.values():
            checked_decision(server)
            for rpc in RPCS:
                drive(pool, server.calls[rpc], warmup, concurrency)
        cells = [(name, rpc) for name in settings for rpc in RPCS]
        return {
            (name, rpc): measure(servers[name], rpc, pool, calls, concurrency)
            for name, rpc in cells[:: -1 if index % 2 else 1]  # no cell always goes first
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=10000, help="calls per cell (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of fresh servers (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=8, help="calls in flight (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="1000 calls a cell over 2 rounds: a smoke run")
    args = parser.parse_args()
    calls, rounds = (1000, 2) if args.quick else (args.calls, args.rounds)
    if min(calls, rounds, args.concurrency) < 1 or rounds > calls:
        parser.error("--calls, --rounds and --concurrency must be positive, rounds <= calls")

    sink_server, sink, endpoint = _start_sink()
    settings = variants(endpoint)
    results: dict[tuple[str, str], list[Cell]] = {(n, rpc): [] for n in settings for rpc in RPCS}
    try:
        with ThreadPoolExecutor(args.concurrency, thread_name_prefix="client") as pool:
            for index in range(rounds):
                share = calls // rounds + (index < calls % rounds)
                for key, cell in _round(index, settings, pool, share, 200, args.concurrency).items():
                    results[key].append(cell)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        sink_server.stop(None)

    cells = {key: pooled(per_round) for key, per_round in results.items()}
    noop = cells["no telemetry", "Check"].server_us
    print(
        f"\n{calls} calls a cell over {rounds} rounds of fresh servers, {args.concurrency} in flight, "
        f"{os.cpu_count()} CPUs; the sink took {sink.spans:,} spans and {sink.metric_exports} metric exports,"
        " one a second\n"
    )
    header = ("Route µs", "no-op µs", "Route/no-op", "vs bare no-op", "vs bare Route")
    print(f"{'server (CPU per call)':22} " + " ".join(f"{h:>13}" for h in header))
    bare_route = cells["no telemetry", "Route"].server_us
    for name in settings:
        route, check = cells[name, "Route"].server_us, cells[name, "Check"].server_us
        print(
            f"{name:22} {route:13.0f} {check:13.0f} {route / check:12.2f}x {route / noop:12.2f}x "
            f"{route / bare_route:12.2f}x"
        )
    print()
    for name, bar in BARS.items():
        ratio = cells[name, "Route"].server_us / cells[name, "Check"].server_us
        verdict = "met" if ratio <= bar else "NOT met"
        print(f"{name}: Route {ratio:.2f}x the no-op on the same server, bar {bar}x: {verdict}")
    traced = cells["traced 100%", "Route"].server_us - cells["metrics, tracing off", "Route"].server_us
    sampled = cells["traced 1%", "Route"].server_us - cells["metrics, tracing off", "Route"].server_us
    metrics = cells["metrics, tracing off", "Route"].server_us - bare_route
    print(
        f"Per Route call: metrics add {metrics:.0f} µs, 1% sampling {sampled:.0f} µs, tracing every call "
        f"{traced:.0f} µs (span, attributes, batching and OTLP export)"
    )


if __name__ == "__main__":
    main()
