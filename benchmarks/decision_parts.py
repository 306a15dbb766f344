"""Where one routing decision's CPU goes, part by part, in this process (no gRPC).

The production pieces, as `start_server` builds them (the shipped config, a fresh SQLite ledger, the
compiled kernels), are called directly: each part of a Route's handler alone, many times over, on
the server benchmarks' Route request (`cells.ROUTE_REQUEST`: lane codex, a 2,048-character prompt);
then the whole handler, with the decision log and without it, and a RouteBatch of `--batch` distinct
tasks (`route_batch.task_set`) per decision. Parts run in alternating order over `--rounds` rounds,
each timed by this thread's CPU clock; medians are printed. The ledger's writer runs on its own
thread: its CPU is the process's less this thread's.

What this shows is the per-decision path that both bars of the design turn on (Route at 1.3x a
no-op RPC, RouteBatch at 20x Route's decisions per second): `server.py` and `route_batch.py` measure
the bars themselves, through a real server.

Run from the repository root (about a minute on 2 cores):

    .venv/bin/python benchmarks/decision_parts.py
    .venv/bin/python benchmarks/decision_parts.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from route_batch import bench_config, task_set

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.application.outcomes import Outcomes
from orxaq_grpc.application.workflow import RoutingWorkflow
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.service.convert import decision_to_proto, route_request_from_proto
from orxaq_grpc.service.server import open_outcomes
from orxaq_grpc.service.servicer import RoutingHandlers
from orxaq_grpc.telemetry.observer import Observer

from cells import ROUTE_REQUEST  # beside this script

# The parts that do not overlap (the estimate is part of the context). Alone, each runs with the
# caches to itself: their sum falls short of the whole handler by the glue between them and by what
# the whole's larger working set costs.
SUMMED = (
    "parse the request, serialize the answer",
    "request from protobuf",
    "validate",
    "context (estimate, objective, features)",
    "score (kernel call and its arguments)",
    "decide and word (Decision, rationale)",
    "count it (economics, breakers; no log)",
    "decision to protobuf",
)


def cpu_per_call(call: Callable[[], object], calls: int, settle: Callable[[], None]) -> tuple[float, float]:
    """(this thread's, the process's) CPU µs per call of `call`, made `calls` times, then `settle`d
    (the ledger's writer done with them: its CPU is the process's less this thread's)."""
    thread, process = time.thread_time(), time.process_time()
    for _ in range(calls):
        call()
    settle()
    return (
        (time.thread_time() - thread) / calls * 1e6,
        (time.process_time() - process) / calls * 1e6,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000, help="calls of each part a round (%(default)s)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds (default %(default)s)")
    parser.add_argument("--batch", type=int, default=1000, help="tasks in the RouteBatch (%(default)s)")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 300 calls: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.calls = 3, 300
    if min(args.calls, args.rounds, args.batch) < 1:
        parser.error("counts must be positive")

    with tempfile.TemporaryDirectory(prefix="bench-parts-") as directory:
        (Path(directory) / "config").mkdir()
        config = bench_config(Path(directory) / "config")  # lane rate ceilings out of the way
        live = LiveRouter.from_directory(str(config))
        outcomes = open_outcomes(live, Path(directory) / "data")
        try:
            measure(live, outcomes, args)
        finally:
            outcomes.close()


def measure(live: LiveRouter, outcomes: Outcomes, args: argparse.Namespace) -> None:
    observer = Observer(None)
    handlers = RoutingHandlers(RoutingWorkflow(live, outcomes, observer), "", observer)
    router = live.current
    wire = ROUTE_REQUEST.SerializeToString()
    request = route_request_from_proto(ROUTE_REQUEST)[0]
    context = router._context(request, outcomes, "parts")
    scores = router._score(context)
    decision = router._scored(context, scores)
    answer = decision_to_proto(decision)
    store = outcomes.store
    log_decision = store.record_decision
    batch = pb.RouteBatchRequest(requests=task_set(args.batch, 700)).SerializeToString()

    def without_log(call: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            store.record_decision = lambda record: None  # type: ignore[method-assign]
            try:
                return call()
            finally:
                store.record_decision = log_decision  # type: ignore[method-assign]

        return run

    def route() -> object:
        return handlers.route(pb.RouteRequest.FromString(wire)).SerializeToString()

    parts: dict[str, Callable[[], object]] = {
        "parse the request, serialize the answer": lambda: (
            pb.RouteRequest.FromString(wire),
            answer.SerializeToString(),
        ),
        "request from protobuf": lambda: route_request_from_proto(ROUTE_REQUEST),
        "validate": lambda: router.validate(request),
        "estimate (keyword scan, tokens)": lambda: router.resolver.estimate(request.task),
        "context (estimate, objective, features)": lambda: router._context(request, outcomes, "parts"),
        "score (kernel call and its arguments)": lambda: router._score(context),
        "decide and word (Decision, rationale)": lambda: router._scored(context, scores),
        "count it (economics, breakers; no log)": without_log(lambda: outcomes.record_decision(decision)),
        "decision to protobuf": lambda: decision_to_proto(decision),
        "Route handler, no decision log": without_log(route),
        "Route handler": route,
    }
    found: dict[str, list[tuple[float, float]]] = {name: [] for name in parts}
    batch_found: list[tuple[float, float]] = []
    names = list(parts)
    for index in range(args.rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            found[name].append(cpu_per_call(parts[name], args.calls, store.flush))
        thread, process = cpu_per_call(
            lambda: handlers.route_batch(pb.RouteBatchRequest.FromString(batch)).SerializeToString(),
            1,
            store.flush,
        )
        batch_found.append((thread / args.batch, process / args.batch))
        print(f"  round {index + 1} of {args.rounds} done", flush=True)

    handler = statistics.median(t for t, _ in found["Route handler"])
    print(f"\n{'part of one Route':42} {'µs (this thread)':>17} {'of the handler':>15}")
    summed = 0.0
    for name in names:
        median = statistics.median(t for t, _ in found[name])
        print(f"{name:42} {median:17.1f} {median / handler:15.0%}")
        if name in SUMMED:
            summed += median
            if name == SUMMED[-1]:
                print(f"{'  the parts above, summed':42} {summed:17.1f} {summed / handler:15.0%}")
    with_log = statistics.median(p for _, p in found["Route handler"])
    print(
        f"{'Route handler, with the writer thread':42} {with_log:17.1f}   "
        f"(the writer: {with_log - handler:.1f} µs a decision)"
    )
    print(
        f"\nRouteBatch of {args.batch} distinct tasks (prompts of 700 characters), per decision: "
        f"{statistics.median(t for t, _ in batch_found):.1f} µs on this thread, "
        f"{statistics.median(p for _, p in batch_found):.1f} µs with the writer thread"
    )


if __name__ == "__main__":
    main()
