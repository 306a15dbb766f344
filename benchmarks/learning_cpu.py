"""What the success model costs Route: server CPU per call with `[learning] mode` "apply" against "off".

Two production servers (`server.py --serve asyncio`, in subprocesses) run on copies of the shipped
config/ that differ in one line, `[learning] mode`. Each first gets the same warm-up: tasks routed
with a value_usd (so Route makes the strong-or-weak choice) and reported, whose validation passes
by task kind and by model ("docs" passes on the cheap model too, "architecture" mostly only on the
strong one). Reports are learned once they are SETTLE_S old, on the server's periodic tick
(`stop_loss.check_interval_s`), so the benchmark then waits for the apply server's Health
`learning.models` to count every reported outcome, both models of the measured comparison
included, and stops if it does not. Then it measures Route with a ~2 KB prompt and a value_usd
(the apply server hashes title and prompt into features and asks the model about the strong and
the weak model; the off server takes catalog quality or reported acceptance) and the no-op
(grpc.health.v1 Health/Check) on both, reading each server's CPU time from /proc/<pid>/stat.
Servers are started fresh every round (a round runs well under `[learning] save_interval_s`, so no
model save lands in a cell; the output says if one might have); cells are pooled over the rounds.

Bar (issue): Route with the success model on costs at most 1.25x the server CPU per call of
Route with it off. Exit 1 if the pooled ratio misses it.

Run from the repository root (--quick takes 30-45 s, the default about 2 minutes on 2 cores):

    .venv/bin/python benchmarks/learning_cpu.py
    .venv/bin/python benchmarks/learning_cpu.py --quick
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import sys
import tempfile
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc

from orxaq.routing.v1 import routing_pb2, routing_pb2_grpc
from orxaq_grpc import learning_kernel
from orxaq_grpc.application.learning import SETTLE_S

from cells import CALL_TIMEOUT_S, ROUTE_REQUEST, Cell, Server, connect, drive, measure, pooled, server_process

SERVER_SCRIPT = str(Path(__file__).resolve().parent / "server.py")
CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
MODES = ("off", "apply")
RPCS = ("Route", "Check")  # Check is grpc.health.v1 Health/Check, the no-op
BAR = 1.25
VALUE_USD = 5.0
# The measured Route: cells.py's request (lane codex, ~2 KB prompt) with a task value, so the
# strong-or-weak choice runs on every call.
VALUED_ROUTE = routing_pb2.RouteRequest()
VALUED_ROUTE.CopyFrom(ROUTE_REQUEST)
VALUED_ROUTE.task.value_usd = VALUE_USD

# --- the warm-up: routed and reported tasks --------------------------------------------

_AREAS = (
    "upload worker",
    "billing export",
    "search indexer",
    "session store",
    "job scheduler",
    "notification fan-out",
    "report renderer",
    "rate limiter",
)
_TASKS = {
    "docs": (
        "Document the {area} configuration",
        "Rewrite the {area} section of the operator guide: list every setting with its default, "
        "explain when to change it, and add an example for a small and a large deployment. Fix the "
        "broken links in the changelog entry for the {area} while you are there. ",
    ),
    "architecture": (
        "Split the {area} out of the monolith",
        "Design the {area} as its own service: define the API between it and the monolith, how its "
        "state migrates without downtime, how retries stay idempotent across the boundary, and how "
        "the two deploy independently. Write the design note and the first migration step. ",
    ),
}
# Chance validation passes, by task kind and by whether the lane called the cheap (weak) model.
_PASS_CHANCE = {
    ("docs", True): 0.90,
    ("docs", False): 0.95,
    ("architecture", True): 0.15,
    ("architecture", False): 0.80,
}
_VALUES_USD = (0.5, 50.0)  # the low value routes to the weak model, the high one to the strong


def _warmup_request(index: int) -> routing_pb2.RouteRequest:
    kind = ("docs", "architecture")[index % 2]
    title, paragraph = _TASKS[kind]
    area = _AREAS[index // 2 % len(_AREAS)]
    return routing_pb2.RouteRequest(
        lane=VALUED_ROUTE.lane,
        task=routing_pb2.Task(
            id=f"warmup-{index}",
            kind=kind,
            title=title.format(area=area),
            prompt=paragraph.format(area=area) * (1 + index % 3),
            value_usd=_VALUES_USD[index // 4 % 2],
        ),
    )


def _route_and_report(stub: routing_pb2_grpc.RoutingServiceStub, index: int) -> None:
    """One task, routed, and reported as the lane's validation judged it."""
    request = _warmup_request(index)
    decision = stub.Route(request, timeout=CALL_TIMEOUT_S)
    weak = decision.model == decision.strong_or_weak.weak_model
    chance = _PASS_CHANCE[request.task.kind, weak]
    passed = random.Random(index).random() < chance  # the same verdict for the same task on every server
    stub.Report(
        routing_pb2.ReportRequest(
            decision_id=decision.decision_id,
            lane=decision.lane,
            provider=decision.provider,
            model=decision.model,
            input_tokens=decision.input_tokens,
            output_tokens=decision.output_tokens,
            latency_s=decision.estimated_latency_s,
            outcome=routing_pb2.OUTCOME_SUCCESS,
            validation_passed=passed,
            first_time_pass=passed,
        ),
        timeout=CALL_TIMEOUT_S,
    )


def _learned(stub: routing_pb2_grpc.RoutingServiceStub, mode: str) -> dict[str, tuple[int, int]]:
    """Model -> (outcomes, passes) the server's success model has learned, from Health; checks that
    the server runs the success model in `mode`."""
    learning = stub.Health(routing_pb2.HealthRequest(), timeout=CALL_TIMEOUT_S).learning
    if learning.mode != mode:
        raise RuntimeError(f"the {mode} server's Health says learning mode {learning.mode!r}")
    return {m.model: (m.outcomes, m.passes) for m in learning.models}


def _excerpt(decision: routing_pb2.RouteDecision) -> str:
    """The strong-or-weak sentence of a decision's rationale."""
    found = re.search(r"Task value .*?: (?:strong|weak)\.", decision.rationale)
    if found is None:
        raise RuntimeError(f"no strong-or-weak sentence in the rationale: {decision.rationale!r}")
    return found.group(0)


@dataclass(frozen=True)
class Warmed:
    """What the warm-up left on the servers, checked."""

    reported: int
    learned: dict[str, tuple[int, int]]  # the apply server's, from Health
    excerpts: dict[str, str]  # mode -> the measured Route's strong-or-weak sentence
    wait_s: float  # from the last report until the apply server had learned them all


def _warm_up(
    ports: dict[str, int], pool: ThreadPoolExecutor, tasks: int, concurrency: int, interval_s: float
) -> Warmed:
    """Routes and reports the same tasks on every server, waits until the apply server has learned
    them all, and checks that the measured Route then decides with the success model."""
    with ExitStack() as stack:  # its own channels, closed before anything is measured
        stubs = {
            mode: routing_pb2_grpc.RoutingServiceStub(
                stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{port}"))
            )
            for mode, port in ports.items()
        }
        chunk = -(-tasks // concurrency)
        for stub in stubs.values():

            def batch(start: int, stub: routing_pb2_grpc.RoutingServiceStub = stub) -> None:
                for index in range(start, min(start + chunk, tasks)):
                    _route_and_report(stub, index)

            for future in [pool.submit(batch, start) for start in range(0, tasks, chunk)]:
                future.result()

        reported = time.monotonic()
        deadline = reported + SETTLE_S + 2 * interval_s + 5.0
        while True:
            learned = _learned(stubs["apply"], "apply")
            if sum(n for n, _ in learned.values()) >= tasks:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the apply server learned {learned or 'nothing'} of {tasks} reported outcomes "
                    f"{time.monotonic() - reported:.0f} s after the last report (reports are learned "
                    f"{SETTLE_S:g} s old, on a tick every {interval_s:g} s)"
                )
            time.sleep(0.25)
        wait_s = time.monotonic() - reported
        if off := _learned(stubs["off"], "off"):
            raise RuntimeError(f"the off server's success model learned {off}")

        excerpts = {}
        for mode, stub in stubs.items():
            decision = stub.Route(VALUED_ROUTE, timeout=CALL_TIMEOUT_S)
            comparison = decision.strong_or_weak
            if decision.learning != mode or decision.strategy != routing_pb2.STRATEGY_STRONG_OR_WEAK:
                raise RuntimeError(
                    f"{mode}: Route answered learning {decision.learning!r}, "
                    f"{routing_pb2.Strategy.Name(decision.strategy)}"
                )
            if comparison.learned != (mode == "apply"):
                raise RuntimeError(f"{mode}: strong_or_weak.learned is {comparison.learned}")
            if mode == "apply":
                for model in (comparison.strong_model, comparison.weak_model):
                    if learned.get(model, (0, 0))[0] == 0:
                        raise RuntimeError(f"apply: the success model learned nothing about {model}")
                if min(comparison.strong_reports, comparison.weak_reports) == 0:
                    raise RuntimeError(f"apply: the decision did not use the learned outcomes: {comparison}")
            excerpts[mode] = _excerpt(decision)
        return Warmed(tasks, learned, excerpts, wait_s)


# --- the benchmark ---------------------------------------------------------------------


def _config_copy(root: Path, mode: str) -> Path:
    """The shipped config directory under `root`, with `[learning] mode` set to `mode`."""
    target = root / mode
    shutil.copytree(CONFIG_DIR, target)
    policy = target / "policy.toml"
    lines = policy.read_text().splitlines(keepends=True)
    section, edited = "", 0
    for i, line in enumerate(lines):
        if line.startswith("["):
            section = line.strip()
        elif section == "[learning]" and re.match(r"mode\s*=", line):
            lines[i] = f'mode = "{mode}"\n'
            edited += 1
    if edited != 1:
        raise RuntimeError(f"{policy}: expected one [learning] mode line, found {edited}")
    policy.write_text("".join(lines))
    if tomllib.loads(policy.read_text())["learning"]["mode"] != mode:
        raise RuntimeError(f"{policy}: [learning] mode did not become {mode!r}")
    return target


def _round(
    index: int,
    configs: dict[str, Path],
    pool: ThreadPoolExecutor,
    calls: int,
    args: argparse.Namespace,
    interval_s: float,
) -> tuple[dict[tuple[str, str], Cell], Warmed, float]:
    """One round on a fresh pair of servers; also returns how long they had run by its last cell."""
    with ExitStack() as stack:
        start = time.monotonic()
        started = {
            mode: stack.enter_context(
                server_process(SERVER_SCRIPT, "--serve", "asyncio", "--config", str(configs[mode]))
            )
            for mode in MODES
        }
        warmed = _warm_up(
            {mode: port for mode, (_, port) in started.items()},
            pool,
            args.tasks,
            args.concurrency,
            interval_s,
        )
        servers: dict[str, Server] = {
            mode: connect(stack, mode, pid, port, route_request=VALUED_ROUTE)
            for mode, (pid, port) in started.items()
        }
        for server in servers.values():
            for rpc in RPCS:  # the code paths of both RPCs, before any cell counts
                drive(pool, server.calls[rpc], args.warmup, args.concurrency)
        cells = [(mode, rpc) for mode in MODES for rpc in RPCS]
        measured = {
            (mode, rpc): measure(servers[mode], rpc, pool, calls, args.concurrency)
            for mode, rpc in cells[:: -1 if index % 2 else 1]  # no cell always goes first
        }
        return measured, warmed, time.monotonic() - start


def _report(
    results: dict[tuple[str, str], list[Cell]],
    warmed: list[Warmed],
    lifetimes: list[float],
    save_s: float,
    load: tuple[float, float],
    args: argparse.Namespace,
) -> bool:
    cells = {key: pooled(per_round) for key, per_round in results.items()}
    rounds = len(warmed)
    first = warmed[0]
    learned = ", ".join(f"{model} {n} ({passes} passed)" for model, (n, passes) in first.learned.items())
    waits = [w.wait_s for w in warmed]
    print(
        f"\n{cells['off', 'Route'].calls} calls a cell over {rounds} rounds of fresh servers, "
        f"{args.concurrency} in flight, {os.cpu_count()} CPUs, 127.0.0.1; Route on lane "
        f"{VALUED_ROUTE.lane!r} with a {len(VALUED_ROUTE.task.prompt)}-char prompt and value_usd "
        f"${VALUE_USD:g}; learning kernel {learning_kernel.KIND}; 1-minute load average "
        f"{load[0]:.1f} at the start, {load[1]:.1f} at the end"
    )
    if max(lifetimes) >= save_s:
        print(
            f"Note: a round's servers ran up to {max(lifetimes):.0f} s, past [learning] save_interval_s "
            f"({save_s:g} s): the apply server's model save may have landed in a cell"
        )
    print(
        f"Warm-up each round: {first.reported} tasks routed and reported on both servers; the apply "
        f"server had learned them {min(waits):.1f}-{max(waits):.1f} s after the last report "
        f"(round 1: {learned})\n"
    )
    for mode in MODES:
        print(f"{mode:5} decision: {first.excerpts[mode]}")

    print(
        f"\n{'server':6} {'RPC':6} {'calls/s':>8} {'server CPU µs/call':>19} {'per round':>13} "
        f"{'client CPU µs/call':>19}"
    )
    for (mode, rpc), cell in cells.items():
        spread = [c.server_us for c in results[mode, rpc]]
        print(
            f"{mode:6} {rpc:6} {cell.per_s:8.0f} {cell.server_us:19.0f} "
            f"{f'{min(spread):.0f}-{max(spread):.0f}':>13} {cell.client_us:19.0f}"
        )

    def ratio(numerator: tuple[str, str], denominator: tuple[str, str]) -> tuple[float, list[float]]:
        per_round = [
            n.server_us / d.server_us for n, d in zip(results[numerator], results[denominator], strict=True)
        ]
        return cells[numerator].server_us / cells[denominator].server_us, per_round

    print("\nRoute / no-op (Health/Check) server CPU per call, same server:")
    for mode in MODES:
        value, spread = ratio((mode, "Route"), (mode, "Check"))
        print(f"  {mode:5} {value:.2f}x (rounds {min(spread):.2f}-{max(spread):.2f}x)")
    check, check_spread = ratio(("apply", "Check"), ("off", "Check"))
    print(
        f"No-op, apply / off server: {check:.2f}x (rounds {min(check_spread):.2f}-{max(check_spread):.2f}x), "
        "the process-to-process noise floor"
    )
    route, spread = ratio(("apply", "Route"), ("off", "Route"))
    extra = cells["apply", "Route"].server_us - cells["off", "Route"].server_us
    within = sum(r <= BAR for r in spread)
    passed = route <= BAR
    print(
        f"\nRoute, success model apply / off: {route:.2f}x the server CPU per call "
        f"({extra:+.0f} µs; rounds {min(spread):.2f}-{max(spread):.2f}x, {within} of {rounds} within), "
        f"bar {BAR}x: {'PASS' if passed else 'FAIL'}"
    )
    return passed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20000, help="calls per cell (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=8, help="rounds of fresh servers (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=8, help="calls in flight (default %(default)s)")
    parser.add_argument(
        "--tasks",
        type=int,
        default=240,
        help="warm-up tasks routed and reported on each server (default %(default)s)",
    )
    parser.add_argument(
        "--warmup", type=int, default=300, help="unmeasured calls of each RPC a round (default %(default)s)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="3000 calls a cell over 3 rounds, 120 tasks: a smoke run"
    )
    args = parser.parse_args()
    if args.quick:
        args.calls, args.rounds, args.tasks, args.warmup = 3000, 3, 120, 200
    if min(args.calls, args.rounds, args.concurrency, args.tasks) < 1 or args.rounds > args.calls:
        parser.error("--calls, --rounds, --concurrency and --tasks must be positive, rounds <= calls")
    policy = tomllib.loads((CONFIG_DIR / "policy.toml").read_text())
    interval_s = float(policy["stop_loss"]["check_interval_s"])
    save_s = float(policy["learning"]["save_interval_s"])
    load_before = os.getloadavg()[0]

    results: dict[tuple[str, str], list[Cell]] = {(m, rpc): [] for m in MODES for rpc in RPCS}
    warmed: list[Warmed] = []
    lifetimes: list[float] = []
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-learning-config-") as root,
            ThreadPoolExecutor(args.concurrency, thread_name_prefix="client") as pool,
        ):
            configs = {mode: _config_copy(Path(root), mode) for mode in MODES}
            for index in range(args.rounds):
                share = args.calls // args.rounds + (index < args.calls % args.rounds)
                measured, warm, lifetime = _round(index, configs, pool, share, args, interval_s)
                warmed.append(warm)
                lifetimes.append(lifetime)
                for key, cell in measured.items():
                    results[key].append(cell)
    except KeyboardInterrupt:
        sys.exit(130)
    load = (load_before, os.getloadavg()[0])
    if not _report(results, warmed, lifetimes, save_s, load, args):
        sys.exit(1)


if __name__ == "__main__":
    main()
