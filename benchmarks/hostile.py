"""The server under hostile load: what abusive callers cost it, against the design bars.

Each section starts the production server (`benchmarks/server.py --serve asyncio`: `start_server`
on the shipped config unless `--config` names another, or on a copy of it a section edits) in a
subprocess on 127.0.0.1, loads it in one hostile way, prints its progress and returns a few figures,
each with its bar. The final table lists every figure: measured, bar, and whether the bar holds
("-" for a figure given as information); the exit status is 1 when any bar fails.

Sections:

  oversized  Rounds of concurrent Route calls of 4 MiB each (the prompt alone far over policy,
             limits.max_prompt_bytes, 1 MiB shipped): every one is refused, by the transport
             (RESOURCE_EXHAUSTED, over the server's receive limit) or by policy (INVALID_ARGUMENT).
             The server's resident memory (VmRSS and VmHWM from /proc/<pid>/status) is read
             before, at its peak during the rounds, and about 5 s after the last. Bars: a peak under
             1 GiB, and memory back within 256 MiB of where it started.
  at-limit   The same with calls exactly at the server's receive limit (`max_request_bytes` of the
             policy), so each is read whole and refused by policy, naming task.prompt: what the
             handlers' side costs. Same bars.
  garbage    60,000 payloads (--garbage) sent as raw bytes over one connection, 256 at once or half of
             [ceilings] max_concurrent_rpcs if less (64 on the shipped policy), to every
             method of orxaq.routing.v1.RoutingService and grpc.health.v1.Health in turn, unary and
             server-streaming: random bytes, valid requests truncated, valid requests with a few
             bytes overwritten, and whole messages of another type (other requests, answers). A
             streaming call that gets a first message is cancelled there and counts as OK. The
             answers are counted per status code, and the server's stderr (its log: warnings and
             above, grpc's own lines, anything printed) is kept in a file. Bars: no UNKNOWN answer,
             no "Traceback" in the log, every payload answered (no deadline passed, no connection
             lost), and at most one line about refusals per kind (3 kinds: malformed requests,
             credentials, ceilings) per started minute of the run; the log's lines and bytes are
             reported.
  forged     Reports forged by callers that know the protocol, on two servers on a copy of the config
             with a $10 daily budget (so spend that counted would show in budgets and stop-loss) and
             stop-loss checked every second: one with credentials (a lane token for codex, one for
             claude, an operator token, as [[access.credentials]] entries by SHA-256) and one open
             (no credentials: every call below goes without a token). Sent, in this order: reports
             for decisions never made (cost_usd 1e6, and 70 rate limits with retry_after_s 86400)
             with each lane's stolen token, the operator's, an unknown one and none; cross-lane
             reports (claude's token reporting codex's real decisions, naming either lane; on the
             open server, naming claude); and Scale and SetStopLoss (entering stop-loss) with each
             lane token, an unknown token and none (not on the open server, where they are open by
             design). Economics (today) and Health are read with the operator token before the
             first step and after each (after the last, once two stop-loss checks have run).
             What "accepted" means:
             - a forged report: acknowledged as the report of a known decision (decision_known);
               or, over the forgeries, today's spend, today's count of known reports or the
               overall budget's spend moved, a circuit left the closed state, or stop-loss became
               active (by the end, with no operator call accepted). Acknowledged as an unknown
               decision (kept in the ledger, counted in unknown_decision_reports and nothing else)
               is not accepted: that is the documented answer.
             - a cross-lane report: answered OK; or one of those figures moved over the cross-lane
               step; or codex's own report of the same decision, sent afterwards, is answered as a
               duplicate (the cross-lane one was stored).
             - an operator call without an operator token: answered OK; or, by the end, stop-loss
               became active, a stop-loss event was added or a Scale decision was logged.
             Bars: 0 of each.
             Then, as information: codex's stolen token (on the open server, no token) reports rate
             limits (retry_after_s 86400) for 70 of codex's own real decisions, and one cost of $1e6
             for another. Nothing tells these from the lane's genuine reports: they may open that
             model's circuit, for at most breakers.max_retry_after_s (the bar on that row), and the
             cost counts at the policy's bound ([reports]). They are reported on a row of their own,
             not counted as forged reports accepted.
  watchers   Route latency, 2,000 calls (--route-calls) 4 in flight from this process after 200
             unmeasured ones, spread over every lane, first with no watcher and then with 1,000
             WatchHealth streams open (--watchers) at the shortest heartbeat policy allows
             ([ceilings] min_watch_heartbeat_s, 1.0 s shipped). The streams are opened from a
             separate process (this script with --watchers-child), so reading them costs this
             process nothing. Each run is on a fresh server, every other one timing Route with the
             watchers first (and without them once they closed); 3 runs (--watch-runs), and the
             bar, p99 with watchers <= 2x p99 without, is on the median run's ratio. A WatchHealth
             asking a heartbeat under the policy's is checked to be INVALID_ARGUMENT. As
             information: one run on a config copy with min_watch_heartbeat_s = 0.1 and the
             watchers at 0.1 s, and the load average (the machine may be shared).

By default all the calls of a memory round go over one connection, as one hostile client's would;
`--connections` spreads them. The client sends one shared payload as raw bytes (no serializer);
its own memory is not measured.

Run from the repository root (the full run sends 6 rounds of 768 calls a memory section, about
23 GiB over loopback; the whole run takes 2-3 minutes on 2 cores; --quick is a smoke run of well under
a minute):

    .venv/bin/python benchmarks/hostile.py
    .venv/bin/python benchmarks/hostile.py --quick
    .venv/bin/python benchmarks/hostile.py --section oversized --connections 16
    .venv/bin/python benchmarks/hostile.py --section watchers --watch-runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import math
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import grpc
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status

from orxaq.routing.v1 import routing_pb2, routing_pb2_grpc
from orxaq_grpc.config.load import load_config
from orxaq_grpc.config.model import token_digest
from orxaq_grpc.service.server import max_request_bytes

from cells import ROUTE_REQUEST, process_cpu_s, server_process

SERVER_SCRIPT = str(Path(__file__).resolve().parent / "server.py")
CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
ROUTING_SERVICE = routing_pb2.DESCRIPTOR.services_by_name["RoutingService"]
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"]
ROUTE_METHOD = f"/{ROUTING_SERVICE.full_name}/Route"
WATCH_METHOD = f"/{ROUTING_SERVICE.full_name}/WatchHealth"
MIB = 1024 * 1024

OVERSIZED_BYTES = 4 * MIB  # the whole serialized RouteRequest, framing aside
PEAK_BAR_MIB = 1024.0
SETTLED_BAR_MIB = 256.0  # how far above its starting point the memory may stay once the load is gone
SETTLE_S = 5.0
SAMPLE_EVERY_S = 0.02
CALL_TIMEOUT_S = 120.0

GARBAGE_PAYLOADS = 60_000
# At most this many at once, and at most half of [ceilings] max_concurrent_rpcs (128 shipped): the
# payloads are read and refused for what they are, not for the ceiling.
GARBAGE_IN_FLIGHT = 256
GARBAGE_TIMEOUT_S = 30.0
GARBAGE_SEED = 20_240_229
REFUSAL_KINDS = 3  # RefusalLog instances: malformed requests (wire.py), credentials, ceilings (gate.py)
UNANSWERED = frozenset({"DEADLINE_EXCEEDED", "UNAVAILABLE"})  # the call gave up, or the connection went

FORGED_PER_BATCH = 50  # forged reports of each kind but the rate limits
FORGED_RATE_LIMITS = 70
FORGED_CLAIM_USD = 1e6
FORGED_RETRY_AFTER_S = 86_400.0
FORGED_BUDGET_USD = 10.0
FORGED_CHECK_S = 1  # stop_loss.check_interval_s of the copy, so a trigger shows within seconds
RPC_TIMEOUT_S = 10.0

WATCHERS = 1000
WATCH_ROUTE_CALLS = 2000
WATCH_IN_FLIGHT = 4
WATCH_WARMUP_CALLS = 200
WATCH_RUNS = 3
WATCH_CONNECTIONS = 10  # the watcher process's streams, spread over this many connections
WATCH_SETTLE_S = 2.0  # once the streams are open, before Route is timed (the server's CPU is read over it)
WATCH_OPEN_TIMEOUT_S = 120.0
ATTACK_HEARTBEAT_S = 0.1
LATENCY_BAR = 2.0


# --- the figures ------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    name: str
    measured: str
    bar: str
    holds: bool | None  # None: information, no bar

    @property
    def verdict(self) -> str:
        return "-" if self.holds is None else "yes" if self.holds else "NO"


@dataclass(frozen=True)
class Section:
    name: str
    figures: tuple[Figure, ...]


def _table(sections: list[Section]) -> None:
    rows = [("figure", "measured", "bar", "holds")]
    rows += [(f"{s.name}: {f.name}", f.measured, f.bar, f.verdict) for s in sections for f in s.figures]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print()
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _counts(counter: collections.Counter[str]) -> str:
    return ", ".join(f"{n} {what}" for what, n in counter.most_common()) or "none"


# --- the server, its memory and its log -------------------------------------------------


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (the peak resident set) of `pid`, in MiB, from /proc/<pid>/status."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024  # kB
    return found


def reset_peak(pid: int) -> bool:
    """Resets VmHWM to the current VmRSS (Linux >= 4.0, needs the right to write the process's
    clear_refs); False where that is not allowed, and the peak then counts from the process start."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def load_average() -> float:
    """The 1-minute load average, from /proc/loadavg."""
    return float(Path("/proc/loadavg").read_text().split()[0])


class PeakSampler:
    """Samples a process's VmRSS on a thread while the load runs: a peak that VmHWM cannot
    give where it cannot be reset."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._stop = threading.Event()
        self.peak_mib = 0.0
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, memory_mib(self._pid)["VmRSS"])
            self._stop.wait(SAMPLE_EVERY_S)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def production_server(
    config: Path, log: IO[str] | None = None, env: dict[str, str] | None = None
) -> Iterator[tuple[int, int]]:
    """(pid, port) of the production grpc.aio server, stopped on the way out; its stderr goes to
    `log` when given."""
    args = ("--serve", "asyncio", "--config", str(config))
    with server_process(SERVER_SCRIPT, *args, env=env, stderr=log) as (pid, port):
        yield pid, port


def config_copy(source: Path, target: Path, edits: Iterable[tuple[str, str]] = (), append: str = "") -> Path:
    """`source`'s TOML files in `target`, policy.toml with each (old, new) replaced once and `append`
    added at its end."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.glob("*.toml"):
        (target / path.name).write_bytes(path.read_bytes())
    policy = target / "policy.toml"
    text = policy.read_text()
    for old, new in edits:
        if old not in text:
            raise ValueError(f"{policy}: no {old.strip()!r} to replace")
        text = text.replace(old, new, 1)
    policy.write_text(text + append)
    return target


@dataclass(frozen=True)
class ServerLog:
    lines: tuple[str, ...]
    size: int

    @classmethod
    def read(cls, path: Path) -> ServerLog:
        data = path.read_bytes()
        return cls(tuple(data.decode(errors="replace").splitlines()), len(data))

    @property
    def tracebacks(self) -> int:
        return sum("Traceback" in line for line in self.lines)

    @property
    def refusal_lines(self) -> int:
        return sum(line.startswith("refused ") for line in self.lines)


def print_log(server_log: ServerLog, most: int = 12) -> None:
    """The server's log, lines alike in their first words together: what it says, and how often."""
    print(
        f"  server log: {len(server_log.lines)} lines, {server_log.size} bytes, "
        f"{server_log.tracebacks} tracebacks, {server_log.refusal_lines} lines about refusals"
    )
    alike = collections.Counter(" ".join(line.split()[:7]) for line in server_log.lines)
    for start, n in alike.most_common(most):
        print(f"    {n:5} x | {start[:100]} ...")


# --- the client -------------------------------------------------------------------------


def sized_route_request(size: int) -> bytes:
    """A serialized RouteRequest of exactly `size` bytes (at least 64), nearly all of it the prompt."""

    def request(prompt: int, title: int) -> routing_pb2.RouteRequest:
        task = routing_pb2.Task(id="hostile", title="t" * title, prompt="x" * prompt)
        return routing_pb2.RouteRequest(lane="codex", task=task)

    prompt = size
    while (gap := size - request(prompt, 0).ByteSize()) < 3:
        prompt -= 3 - gap
    # The title takes the last few bytes: its tag and length prefix are 2 of them (an empty title
    # is not sent at all, so it takes at least 3). A length prefix around it may grow by one, and
    # then a prompt a byte shorter makes room.
    for shorter in range(4):
        for title in range(max(1, gap - 3 + shorter), gap - 1 + shorter):
            message = request(prompt - shorter, title)
            if message.ByteSize() == size:
                return message.SerializeToString()
    raise ValueError(f"no RouteRequest of exactly {size} bytes")


Caller = Callable[[bytes], "grpc.aio.UnaryUnaryCall[bytes, bytes]"]


async def _status(call: grpc.aio.UnaryUnaryCall[bytes, bytes]) -> str:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    return "OK"


async def _rounds(
    port: int, payload: bytes, rounds: int, concurrency: int, connections: int
) -> collections.Counter[str]:
    """`rounds` bursts of `concurrency` calls at once, spread over `connections` connections;
    the status codes they ended with."""
    # A local subchannel pool each: channels with the same target would otherwise share one connection.
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_send_message_length", -1)]
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(connections)]
    codes: collections.Counter[str] = collections.Counter()
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), CALL_TIMEOUT_S)
        # No serializers: the payload goes out as it is and the answer comes back as bytes.
        routes: list[Caller] = [channel.unary_unary(ROUTE_METHOD) for channel in channels]
        for index in range(rounds):
            start = time.perf_counter()
            calls = [routes[i % connections](payload, timeout=CALL_TIMEOUT_S) for i in range(concurrency)]
            counted = collections.Counter(await asyncio.gather(*(_status(call) for call in calls)))
            del calls
            codes.update(counted)
            summary = ", ".join(f"{n} {code}" for code, n in sorted(counted.items()))
            took = time.perf_counter() - start
            print(f"  round {index + 1}/{rounds}: {summary} in {took:.1f} s", flush=True)
    finally:
        for channel in channels:
            await channel.close()
    return codes


def _bearer(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token is not None else ()


def _why(exc: grpc.RpcError) -> str:
    """The status code, with the ErrorInfo reason or the first BadRequest field when there is one."""
    code: str = exc.code().name  # type: ignore[attr-defined]
    try:
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    except ValueError:
        status = None
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return f"{code} {info.reason}"
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad) and bad.field_violations:
            return f"{code} on {bad.field_violations[0].field}"
    return code


class Rpc:
    """Blocking RoutingService calls over one connection, each with a bearer token or none."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = routing_pb2_grpc.RoutingServiceStub(channel)

    def __call__(self, method: str, request: Message, token: str | None) -> tuple[str, Any]:
        """("OK", the answer), or (the status and its reason, None)."""
        try:
            return "OK", getattr(self._stub, method)(request, metadata=_bearer(token), timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as exc:
            return _why(exc), None

    def answer(self, method: str, request: Message, token: str | None) -> Any:
        outcome, answer = self(method, request, token)
        if answer is None:
            raise RuntimeError(f"{method}: {outcome}")
        return answer


# --- the memory sections ----------------------------------------------------------------


def _memory_under_burst(name: str, payload: bytes, args: argparse.Namespace) -> Section:
    """Rounds of concurrent Route calls of `payload`, each to be refused: the server's memory
    before, at its peak, and SETTLE_S after."""
    print(
        f"\n{name}: {args.rounds} rounds of {args.concurrency} concurrent Route calls of "
        f"{len(payload) / MIB:.2f} MiB ({len(payload)} bytes) over {args.connections} connection(s)",
        flush=True,
    )
    with production_server(args.config) as (pid, port):
        before = memory_mib(pid)["VmRSS"]
        print(f"  server pid {pid}, RSS {before:.0f} MiB before", flush=True)
        hwm_reset = reset_peak(pid)
        with PeakSampler(pid) as sampler:
            codes = asyncio.run(_rounds(port, payload, args.rounds, args.concurrency, args.connections))
        # VmHWM counts every page, also those the sampler missed between two samples.
        peak = max(sampler.peak_mib, memory_mib(pid)["VmHWM"] if hwm_reset else 0.0)
        print(f"  peak RSS {peak:.0f} MiB; waiting {SETTLE_S:.0f} s", flush=True)
        time.sleep(SETTLE_S)
        after = memory_mib(pid)["VmRSS"]
        print(f"  RSS {after:.0f} MiB after", flush=True)
    refused = sum(n for code, n in codes.items() if code in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"))
    total = args.rounds * args.concurrency
    how = ", ".join(f"{n} {code}" for code, n in sorted(codes.items()))
    return Section(
        name,
        (
            Figure("calls refused", f"{refused} of {total} ({how})", "all", refused == total),
            Figure("peak RSS", f"{peak:.0f} MiB", f"< {PEAK_BAR_MIB:.0f} MiB", peak < PEAK_BAR_MIB),
            Figure(
                f"RSS {SETTLE_S:.0f} s after",
                f"{after:.0f} MiB (from {before:.0f})",
                f"< {before + SETTLED_BAR_MIB:.0f} MiB",
                after < before + SETTLED_BAR_MIB,
            ),
        ),
    )


def oversized(args: argparse.Namespace) -> Section:
    """Route calls of 4 MiB (or --message-bytes), far over policy."""
    return _memory_under_burst("oversized", sized_route_request(args.message_bytes), args)


def at_limit(args: argparse.Namespace) -> Section:
    """Route calls exactly at the server's receive limit, refused by policy once read."""
    limit = max_request_bytes(load_config(args.config).policy.limits)
    return _memory_under_burst("at-limit", sized_route_request(limit), args)


# --- garbage ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    path: str
    request: type[Message]
    streaming: bool


def served_methods() -> list[Method]:
    """Every method of RoutingService and grpc.health.v1.Health (none streams requests)."""
    return [
        Method(
            f"/{service.full_name}/{method.name}", GetMessageClass(method.input_type), method.server_streaming
        )
        for service in (ROUTING_SERVICE, HEALTH_SERVICE)
        for method in service.methods
    ]


def sample_messages() -> list[Message]:
    """A valid message of every request type (and a few answers): what garbage is cut from."""
    daily = routing_pb2.Flows(daily=routing_pb2.DailyFlow(usd_per_day=100.0, horizon_days=7))
    cost = routing_pb2.Flows(daily=routing_pb2.DailyFlow(usd_per_day=40.0, horizon_days=7))
    return [
        ROUTE_REQUEST,
        routing_pb2.ReportRequest(
            decision_id="garbage-0123456789",
            lane="codex",
            provider="openai",
            model="gpt-6.1-sol",
            input_tokens=9_000,
            output_tokens=1_500,
            latency_s=12.5,
            outcome=routing_pb2.OUTCOME_RATE_LIMITED,
            retry_after_s=600.0,
            cost_usd=0.06,
        ),
        routing_pb2.EconomicsRequest(),
        routing_pb2.HealthRequest(),
        routing_pb2.WatchHealthRequest(heartbeat_s=2.0),
        routing_pb2.ScaleRequest(
            lane="codex",
            current_parallel_agents=2,
            requested_parallel_agents=3,
            current_subagents_per_agent=1,
            requested_subagents_per_agent=1,
            value=daily,
            cost=cost,
            request_id="garbage",
        ),
        routing_pb2.SetStopLossRequest(active=False, note="garbage"),
        health_pb2.HealthCheckRequest(service=ROUTING_SERVICE.full_name),
        health_pb2.HealthListRequest(),
        routing_pb2.ReportAck(decision_id="garbage-1", decision_known=True, cost_usd=1.5),
        routing_pb2.Figures(decisions=12, reports=10, spend_usd=3.5, error_rate=0.1),
        health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING),
    ]


GARBAGE_KINDS = ("random bytes", "truncated", "overwritten", "another message")


def garbage(methods: list[Method], rng: random.Random) -> Iterator[tuple[Method, str, bytes]]:
    """Endless (method, kind, payload): the methods in turn, each kind in turn for every method."""
    encoded = {type(m).DESCRIPTOR.full_name: m.SerializeToString() for m in sample_messages()}
    for index in itertools.count():
        method = methods[index % len(methods)]
        kind = GARBAGE_KINDS[index // len(methods) % len(GARBAGE_KINDS)]
        own = encoded.get(method.request.DESCRIPTOR.full_name, b"")
        if kind == "random bytes":
            payload = rng.randbytes(rng.randint(1, 512))
        elif kind == "truncated" and len(own) > 1:
            payload = own[: rng.randrange(1, len(own))]
        elif kind == "overwritten" and own:
            changed = bytearray(own)
            for _ in range(rng.randint(1, 8)):
                changed[rng.randrange(len(changed))] = rng.randrange(256)
            payload = bytes(changed)
        else:  # also for an empty request message, which has nothing to cut
            kind = "another message"
            name = method.request.DESCRIPTOR.full_name
            payload = rng.choice([data for other, data in encoded.items() if other != name])
        yield method, kind, payload


async def _answer(channel: grpc.aio.Channel, method: Method, payload: bytes) -> str:
    """The status a payload got; a stream that sends a first message is cancelled there: "OK"."""
    try:
        if not method.streaming:
            await channel.unary_unary(method.path)(payload, timeout=GARBAGE_TIMEOUT_S)
            return "OK"
        call = channel.unary_stream(method.path)(payload, timeout=GARBAGE_TIMEOUT_S)
        if await call.read() is grpc.aio.EOF:
            return (await call.code()).name
        call.cancel()
        return "OK"
    except grpc.aio.AioRpcError as exc:
        return exc.code().name


async def _send_garbage(
    port: int, payloads: Iterator[tuple[Method, str, bytes]], count: int, in_flight: int
) -> collections.Counter[tuple[str, str, str]]:
    """`count` payloads, `in_flight` at a time over one connection: (method, kind, status) counts."""
    codes: collections.Counter[tuple[str, str, str]] = collections.Counter()
    todo = itertools.islice(payloads, count)  # one generator, drawn from by every worker in turn
    step = max(1, count // 10)
    start = time.perf_counter()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await asyncio.wait_for(channel.channel_ready(), CALL_TIMEOUT_S)

        async def worker() -> None:
            for method, kind, payload in todo:
                codes[method.path, kind, await _answer(channel, method, payload)] += 1
                if (done := codes.total()) % step == 0:
                    took = time.perf_counter() - start
                    print(f"  {done} of {count} answered in {took:.1f} s ({done / took:.0f}/s)", flush=True)

        await asyncio.gather(*(worker() for _ in range(in_flight)))
    return codes


def garbage_section(args: argparse.Namespace) -> Section:
    """Garbage payloads to every method; the answers and what the server logged."""
    methods = served_methods()
    ceiling = load_config(args.config).policy.ceilings.max_concurrent_rpcs
    in_flight = max(1, min(GARBAGE_IN_FLIGHT, ceiling // 2))
    print(
        f"\ngarbage: {args.garbage} payloads to {len(methods)} methods, {in_flight} at once over one "
        f"connection (max_concurrent_rpcs {ceiling})",
        flush=True,
    )
    payloads = garbage(methods, random.Random(GARBAGE_SEED))
    with tempfile.TemporaryDirectory(prefix="hostile-") as scratch:
        log_path = Path(scratch) / "server.log"
        with log_path.open("w") as log, production_server(args.config, log=log) as (pid, port):
            print(f"  server pid {pid}, its stderr in {log_path}", flush=True)
            start = time.perf_counter()
            codes = asyncio.run(_send_garbage(port, payloads, args.garbage, in_flight))
            took = time.perf_counter() - start
        server_log = ServerLog.read(log_path)

    by_code: collections.Counter[str] = collections.Counter()
    by_method: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    by_kind: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for (path, kind, code), n in codes.items():
        by_code[code] += n
        by_method[path.rsplit("/", 1)[1] + (" (stream)" if "Watch" in path else "")][code] += n
        by_kind[kind][code] += n
    print(f"  {codes.total()} answered in {took:.1f} s: {_counts(by_code)}")
    for name, counted in by_method.items():
        print(f"    {name:22} {_counts(counted)}")
    for kind, counted in by_kind.items():
        print(f"    {kind:22} {_counts(counted)}")
    print_log(server_log)

    unknown = by_code["UNKNOWN"]
    unanswered = sum(by_code[code] for code in UNANSWERED)
    allowed_lines = REFUSAL_KINDS * (math.floor(took / 60) + 1)
    return Section(
        "garbage",
        (
            Figure(
                "garbage payloads sent",
                f"{codes.total()} to {len(methods)} methods in {took:.0f} s ({_counts(by_code)})",
                "every one answered",
                codes.total() == args.garbage and unanswered == 0,
            ),
            Figure("UNKNOWN answers", str(unknown), "0", unknown == 0),
            Figure("tracebacks logged", str(server_log.tracebacks), "0", server_log.tracebacks == 0),
            Figure(
                "log lines about refusals",
                f"{server_log.refusal_lines} (log: {len(server_log.lines)} lines, {server_log.size} bytes)",
                f"<= {allowed_lines} ({REFUSAL_KINDS} kinds x {math.floor(took / 60) + 1} min)",
                server_log.refusal_lines <= allowed_lines,
            ),
        ),
    )


# --- forged reports ---------------------------------------------------------------------


@dataclass(frozen=True)
class Tokens:
    codex: str | None
    claude: str | None
    operator: str | None

    @classmethod
    def fresh(cls) -> Tokens:
        return cls(*(f"hostile-{secrets.token_urlsafe(24)}" for _ in range(3)))

    def credentials_toml(self) -> str:
        entries = (
            ("codex-runner", "lane", "codex", self.codex),
            ("claude-runner", "lane", "claude", self.claude),
        )
        text = "".join(
            f'\n[[access.credentials]]\nname = "{name}"\nrole = "{role}"\nlane = "{lane}"\n'
            f'sha256 = "{token_digest(token or "").hex()}"\n'
            for name, role, lane, token in entries
        )
        operator = token_digest(self.operator or "").hex()
        return (
            text
            + f'\n[[access.credentials]]\nname = "supervisor"\nrole = "operator"\nsha256 = "{operator}"\n'
        )


OPEN_SERVICE = Tokens(None, None, None)


@dataclass(frozen=True)
class Books:
    """What a report that counted would move, read from Economics (today) and Health."""

    spend_usd: float
    known_reports: int
    unknown_reports: int
    budget_spent_usd: float
    circuits: tuple[tuple[str, str, str, float], ...]  # (scope, name, state, reopens_in_s), not closed
    stop_loss: bool
    stop_loss_events: int
    scale_decisions: int

    @classmethod
    def read(cls, rpc: Rpc, token: str | None) -> Books:
        economics = rpc.answer("Economics", routing_pb2.EconomicsRequest(), token)
        health = rpc.answer("Health", routing_pb2.HealthRequest(), token)
        today = next(w for w in economics.windows if w.window == "today").overall
        overall = next((b for b in health.budgets if b.scope == "overall"), None)
        return cls(
            spend_usd=today.spend_usd,
            known_reports=today.reports,
            unknown_reports=today.unknown_decision_reports,
            budget_spent_usd=overall.spent_usd if overall is not None else 0.0,
            circuits=tuple(
                (b.scope, b.name, b.state, b.reopens_in_s) for b in health.breakers if b.state != "closed"
            ),
            stop_loss=health.guardrails.stop_loss_active,
            stop_loss_events=len(health.guardrails.events),
            scale_decisions=len(health.guardrails.scale_decisions),
        )

    def moved(self, before: Books) -> list[str]:
        """What moved since `before` that a counted report or an operator call would move."""
        moved = []
        if self.spend_usd != before.spend_usd:
            moved.append(f"spend ${before.spend_usd:.2f} -> ${self.spend_usd:.2f}")
        if self.known_reports != before.known_reports:
            moved.append(f"known reports {before.known_reports} -> {self.known_reports}")
        if self.budget_spent_usd != before.budget_spent_usd:
            moved.append(f"budget spent ${before.budget_spent_usd:.2f} -> ${self.budget_spent_usd:.2f}")
        if opened := [c for c in self.circuits if c[:2] not in {b[:2] for b in before.circuits}]:
            moved.append(f"{len(opened)} circuit(s) no longer closed: {opened}")
        if self.stop_loss and not before.stop_loss:
            moved.append("stop-loss active")
        if self.stop_loss_events != before.stop_loss_events:
            moved.append(f"stop-loss events {before.stop_loss_events} -> {self.stop_loss_events}")
        if self.scale_decisions != before.scale_decisions:
            moved.append(f"scale decisions {before.scale_decisions} -> {self.scale_decisions}")
        return moved


def _report(decision_id: str, lane: str, provider: str, model: str, kind: str) -> routing_pb2.ReportRequest:
    """A report of `kind`: "cost" (success at FORGED_CLAIM_USD) or "rate limit" (a day's retry-after)."""
    fields: dict[str, Any] = (
        {"outcome": routing_pb2.OUTCOME_SUCCESS, "cost_usd": FORGED_CLAIM_USD, "validation_passed": True}
        if kind == "cost"
        else {"outcome": routing_pb2.OUTCOME_RATE_LIMITED, "retry_after_s": FORGED_RETRY_AFTER_S}
    )
    return routing_pb2.ReportRequest(
        decision_id=decision_id,
        lane=lane,
        provider=provider,
        model=model,
        input_tokens=9_000,
        output_tokens=1_500,
        latency_s=12.5,
        **fields,
    )


def _route_request(lane: str, index: int) -> routing_pb2.RouteRequest:
    # Small tasks: their reservations stay far under the budget.
    task = routing_pb2.Task(
        id=f"hostile-{index}", title="Fix the flaky test", input_tokens=200, output_tokens=200
    )
    return routing_pb2.RouteRequest(lane=lane, task=task)


@dataclass
class Sent:
    """Calls of one step and how they were answered."""

    answers: collections.Counter[str]
    accepted: int = 0  # what the step's own rule counts as accepted from the answers

    @property
    def total(self) -> int:
        return self.answers.total()


def _forge_reports(rpc: Rpc, plan: list[tuple[str, str | None, routing_pb2.RouteDecision, str, int]]) -> Sent:
    """Reports for decisions never made; accepted = acknowledged as a known decision's report."""
    sent = Sent(collections.Counter())
    for label, token, like, kind, count in plan:
        answers: collections.Counter[str] = collections.Counter()
        for i in range(count):
            decision_id = f"forged-{secrets.token_hex(6)}-{i}"
            outcome, ack = rpc(
                "Report", _report(decision_id, like.lane, like.provider, like.model, kind), token
            )
            if ack is not None:
                outcome = "OK, known decision" if ack.decision_known else "OK, unknown decision"
                sent.accepted += ack.decision_known or ack.duplicate
            answers[outcome] += 1
        what = (
            f"${FORGED_CLAIM_USD:.0e}" if kind == "cost" else f"rate limits of {FORGED_RETRY_AFTER_S:.0f} s"
        )
        print(f"  {count} forged reports, {what}, lane {like.lane}, {label}: {_counts(answers)}", flush=True)
        sent.answers.update(answers)
    return sent


def _cross_lane(
    rpc: Rpc, tokens: Tokens, victims: list[routing_pb2.RouteDecision], claude_like: routing_pb2.RouteDecision
) -> Sent:
    """codex's decisions reported by claude's token, naming claude's lane and then codex's (on an open
    service, naming claude's lane); accepted = answered OK."""
    namings = ["claude", "codex"] if tokens.claude is not None else ["claude"]
    sent = Sent(collections.Counter())
    for naming in namings:
        answers: collections.Counter[str] = collections.Counter()
        for i, decision in enumerate(victims):
            kind = "cost" if i % 2 else "rate limit"
            provider, model = (
                (claude_like.provider, claude_like.model)
                if naming == "claude"
                else (decision.provider, decision.model)
            )
            outcome, _ = rpc(
                "Report", _report(decision.decision_id, naming, provider, model, kind), tokens.claude
            )
            answers[outcome] += 1
        who = "claude's token" if tokens.claude is not None else "no token"
        print(
            f"  {len(victims)} of codex's decisions reported by {who} naming lane {naming}: "
            f"{_counts(answers)}",
            flush=True,
        )
        sent.answers.update(answers)
        sent.accepted += answers["OK"]
    return sent


def _operator_calls(rpc: Rpc, tokens: Tokens) -> Sent:
    """Scale and SetStopLoss (entering stop-loss) without an operator token; accepted = answered OK."""
    scale = sample_messages()[5]
    stop = routing_pb2.SetStopLossRequest(active=True, note="hostile: a lane says so")
    callers = {
        "codex's token": tokens.codex,
        "claude's token": tokens.claude,
        "an unknown token": f"hostile-unknown-{secrets.token_hex(8)}",
        "no token": None,
    }
    sent = Sent(collections.Counter())
    for label, token in callers.items():
        for method, request in (("Scale", scale), ("SetStopLoss", stop)):
            outcome, _ = rpc(method, request, token)
            print(f"  {method} with {label}: {outcome}", flush=True)
            sent.answers[outcome] += 1
            sent.accepted += outcome == "OK"
    return sent


@dataclass(frozen=True)
class Forged:
    forged: Sent
    forged_moved: list[str]
    cross: Sent
    cross_moved: list[str]
    operator: Sent | None
    operator_moved: list[str]
    own_circuits: tuple[tuple[str, str, str, float], ...]  # after the stolen token's own-lane reports
    own_answers: collections.Counter[str]
    duplicates: int  # codex's own reports answered as duplicates: the cross-lane report was stored
    bounded: str


def _forge(port: int, tokens: Tokens, batch: int) -> Forged:
    """Every step of the forged section on one server: with credentials, or open (OPEN_SERVICE)."""
    guarded = tokens.operator is not None
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=RPC_TIMEOUT_S)
        rpc = Rpc(channel)
        start = Books.read(rpc, tokens.operator)
        codex = [
            rpc.answer("Route", _route_request("codex", i), tokens.codex)
            for i in range(FORGED_RATE_LIMITS + 1)
        ]
        claude = rpc.answer("Route", _route_request("claude", 0), tokens.claude)
        victims, spare = codex[:FORGED_RATE_LIMITS], codex[-1]
        models = collections.Counter(d.model for d in codex)
        print(
            f"  {len(codex)} decisions for codex ({_counts(models)}), 1 for claude ({claude.model})",
            flush=True,
        )
        stolen = "stolen token" if guarded else "no token"
        plan: list[tuple[str, str | None, routing_pb2.RouteDecision, str, int]] = [
            (f"codex's {stolen}" if guarded else stolen, tokens.codex, spare, "cost", batch),
            (f"claude's {stolen}" if guarded else stolen, tokens.claude, claude, "cost", batch),
            (
                f"codex's {stolen}" if guarded else stolen,
                tokens.codex,
                spare,
                "rate limit",
                FORGED_RATE_LIMITS,
            ),
        ]
        if guarded:
            plan += [
                ("the operator's token", tokens.operator, spare, "cost", batch),
                ("an unknown token", f"hostile-unknown-{secrets.token_hex(8)}", spare, "rate limit", batch),
                ("no token", None, spare, "cost", batch),
            ]
        forged = _forge_reports(rpc, plan)
        after_forged = Books.read(rpc, tokens.operator)
        cross = _cross_lane(rpc, tokens, victims, claude)
        after_cross = Books.read(rpc, tokens.operator)
        operator = _operator_calls(rpc, tokens) if guarded else None
        wait_s = 2 * FORGED_CHECK_S + 0.5
        print(f"  waiting {wait_s:.1f} s: two stop-loss checks", flush=True)
        time.sleep(wait_s)
        settled = Books.read(rpc, tokens.operator)
        print(
            f"  unknown-decision reports counted: {settled.unknown_reports - start.unknown_reports}",
            flush=True,
        )
        # Stop-loss at the end, with no operator call accepted, is the forgeries' doing.
        operator_accepted = operator is not None and operator.accepted > 0
        forged_moved = after_forged.moved(start) + (
            ["stop-loss active after two checks"]
            if settled.stop_loss and not operator_accepted and not after_forged.stop_loss
            else []
        )
        cross_moved = after_cross.moved(after_forged)
        # What only an operator call moves: stop-loss, its events, the Scale decisions.
        operator_moved = [
            moved for moved in settled.moved(after_cross) if moved.startswith(("stop-loss", "scale"))
        ]

        # What a stolen lane token can do with its own lane's real decisions.
        own: collections.Counter[str] = collections.Counter()
        duplicates = 0
        for decision in victims:
            outcome, ack = rpc(
                "Report",
                _report(decision.decision_id, "codex", decision.provider, decision.model, "rate limit"),
                tokens.codex,
            )
            if ack is not None:
                duplicates += ack.duplicate
                outcome = "OK, duplicate" if ack.duplicate else "OK, new"
            own[outcome] += 1
        outcome, ack = rpc(
            "Report", _report(spare.decision_id, "codex", spare.provider, spare.model, "cost"), tokens.codex
        )
        bounded = (
            f"booked ${ack.cost_usd:.2f}{' (cost_bounded)' if ack.cost_bounded else ''}"
            if ack is not None
            else outcome
        )
        after_own = Books.read(rpc, tokens.operator)
        print(f"  {len(victims)} rate limits for codex's own decisions, {stolen}: {_counts(own)}", flush=True)
        print(f"  ${FORGED_CLAIM_USD:.0e} for codex's own decision: {bounded}", flush=True)
        for circuit in after_own.circuits:
            print(
                f"    circuit {circuit[0]} {circuit[1]}: {circuit[2]}, reopens in {circuit[3]:.0f} s",
                flush=True,
            )
        rerouted = rpc.answer("Route", _route_request("codex", 999), tokens.codex)
        print(f"  codex's next Route: {rerouted.model} (before: {spare.model})", flush=True)
    return Forged(
        forged=forged,
        forged_moved=forged_moved,
        cross=cross,
        cross_moved=cross_moved,
        operator=operator,
        operator_moved=operator_moved,
        own_circuits=after_own.circuits,
        own_answers=own,
        duplicates=duplicates,
        bounded=bounded,
    )


def forged_section(args: argparse.Namespace) -> Section:
    """Forged, cross-lane and operator calls, on a server with credentials and on an open one."""
    policy = load_config(args.config).policy
    cap_s = policy.breakers.max_retry_after_s
    edits = [
        ("daily_usd = 0\n", f"daily_usd = {FORGED_BUDGET_USD:g}\n"),
        (
            f"check_interval_s = {policy.stop_loss.check_interval_s:g}\n",
            f"check_interval_s = {FORGED_CHECK_S}\n",
        ),
    ]
    tokens = Tokens.fresh()
    results: dict[str, Forged] = {}
    with tempfile.TemporaryDirectory(prefix="hostile-") as scratch:
        for name, who in (("with credentials", tokens), ("open", OPEN_SERVICE)):
            append = who.credentials_toml() if who.operator is not None else ""
            config = config_copy(args.config, Path(scratch) / name.replace(" ", "-"), edits, append)
            print(f"\nforged: a server {name}, daily budget ${FORGED_BUDGET_USD:g}", flush=True)
            log_path = Path(scratch) / f"{name.replace(' ', '-')}.log"
            with log_path.open("w") as log, production_server(config, log=log) as (pid, port):
                print(f"  server pid {pid}", flush=True)
                results[name] = _forge(port, who, args.forged_batch)
            print_log(ServerLog.read(log_path))

    figures: list[Figure] = []
    for name, result in results.items():
        forged_accepted = result.forged.accepted + (len(result.forged_moved) > 0)
        figures.append(
            Figure(
                f"forged reports accepted ({name})",
                f"{result.forged.accepted} of {result.forged.total} ({_counts(result.forged.answers)}); "
                + (f"moved: {'; '.join(result.forged_moved)}" if result.forged_moved else "nothing moved"),
                "0",
                forged_accepted == 0,
            )
        )
        cross_accepted = result.cross.accepted + result.duplicates + (len(result.cross_moved) > 0)
        figures.append(
            Figure(
                f"cross-lane reports accepted ({name})",
                f"{result.cross.accepted + result.duplicates} of {result.cross.total} "
                f"({_counts(result.cross.answers)}; {result.duplicates} stored)"
                + (f"; moved: {'; '.join(result.cross_moved)}" if result.cross_moved else ""),
                "0",
                cross_accepted == 0,
            )
        )
        if result.operator is not None:
            operator_accepted = result.operator.accepted + (len(result.operator_moved) > 0)
            figures.append(
                Figure(
                    f"operator calls without an operator token accepted ({name})",
                    f"{result.operator.accepted} of {result.operator.total} "
                    f"({_counts(result.operator.answers)})"
                    + (f"; moved: {'; '.join(result.operator_moved)}" if result.operator_moved else ""),
                    "0",
                    operator_accepted == 0,
                )
            )
        longest = max((c[3] for c in result.own_circuits), default=0.0)
        circuits = ", ".join(f"{scope} {model}" for scope, model, _state, _s in result.own_circuits) or "none"
        figures.append(
            Figure(
                f"own-lane rate limits, {'stolen' if result.operator is not None else 'no'} token ({name})",
                f"{FORGED_RATE_LIMITS} rate limits opened {circuits} for {longest:.0f} s; "
                f"a $1e6 claim {result.bounded}",
                f"circuit <= max_retry_after_s {cap_s:g} s",
                longest <= cap_s,
            )
        )
    return Section("forged", tuple(figures))


# --- watchers ---------------------------------------------------------------------------


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


async def _route_latencies(
    port: int, lanes: list[str], calls: int, in_flight: int, warmup: int
) -> tuple[list[float], collections.Counter[str]]:
    """Seconds per Route call (`calls` of them, `in_flight` at once, after `warmup` unmeasured ones),
    the lanes in turn, and the status codes."""
    requests = [
        routing_pb2.RouteRequest(lane=lane, task=ROUTE_REQUEST.task).SerializeToString() for lane in lanes
    ]
    latencies: list[float] = []
    codes: collections.Counter[str] = collections.Counter()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await asyncio.wait_for(channel.channel_ready(), CALL_TIMEOUT_S)
        route = channel.unary_unary(ROUTE_METHOD)

        async def worker(count: int, offset: int, measured: bool) -> None:
            for i in range(count):
                start = time.perf_counter()
                try:
                    await route(requests[(i + offset) % len(requests)], timeout=RPC_TIMEOUT_S)
                    code = "OK"
                except grpc.aio.AioRpcError as exc:
                    code = exc.code().name
                if measured:
                    latencies.append(time.perf_counter() - start)
                    codes[code] += 1

        for count, measured in ((warmup, False), (calls, True)):
            shares = [count // in_flight + (i < count % in_flight) for i in range(in_flight)]
            await asyncio.gather(*(worker(share, i, measured) for i, share in enumerate(shares)))
    return latencies, codes


async def _watch(count: int, port: int, heartbeat_s: float) -> None:
    """The watcher process: `count` WatchHealth streams; one JSON line once each has its first
    message (or failed), another when stdin closes, then it stops."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
        for _ in range(min(WATCH_CONNECTIONS, count))
    ]
    watch = [channel.unary_stream(WATCH_METHOD) for channel in channels]
    request = routing_pb2.WatchHealthRequest(heartbeat_s=heartbeat_s).SerializeToString()
    opened = messages = 0
    refused: collections.Counter[str] = collections.Counter()
    dropped: collections.Counter[str] = collections.Counter()
    settled = asyncio.Event()

    async def one(index: int) -> None:
        nonlocal opened, messages
        first = True
        try:
            async for _ in watch[index % len(watch)](request):
                messages += 1
                if first:
                    first = False
                    opened += 1
                    if opened + refused.total() >= count:
                        settled.set()
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            (refused if first else dropped)[exc.code().name] += 1
            if first and opened + refused.total() >= count:
                settled.set()

    start = time.perf_counter()
    tasks = [asyncio.create_task(one(i)) for i in range(count)]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(settled.wait(), WATCH_OPEN_TIMEOUT_S)
    print(json.dumps({"open": opened, "refused": refused, "took_s": time.perf_counter() - start}), flush=True)
    at_ready = messages
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes it
    print(json.dumps({"messages": messages - at_ready, "dropped": dropped}), flush=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close()


@dataclass
class Watchers:
    pid: int
    ready: dict[str, Any]
    end: dict[str, Any] | None = None
    held_s: float = 0.0


@contextmanager
def watcher_process(port: int, count: int, heartbeat_s: float) -> Iterator[Watchers]:
    """This script with --watchers-child, once its streams are open; stopped on the way out."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--watchers-child", str(count), str(port), str(heartbeat_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        process_group=0,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(
                f"the watcher process exited with status {process.wait()} before its streams opened"
            )
        watchers = Watchers(process.pid, json.loads(line))
        start = time.perf_counter()
        yield watchers
        process.stdin.close()
        watchers.held_s = time.perf_counter() - start
        watchers.end = json.loads(process.stdout.readline() or "null")
    finally:
        if not process.stdin.closed:
            process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class WatchRun:
    without_s: float  # Route p99
    with_s: float
    heartbeat_s: float
    watchers_open: int
    refused: dict[str, int]
    messages_per_s: float
    idle_cpu: float  # the server's CPU share, in cores, with the watchers open and no Route
    child_cpu: float  # the watcher process's, while Route is timed
    load: tuple[float, float]
    codes: collections.Counter[str]
    floor_check: tuple[float, str] | None  # a heartbeat under policy's shortest, and its answer

    @property
    def ratio(self) -> float:
        return self.with_s / self.without_s


def _below_floor(port: int, config: Path) -> tuple[float, str]:
    """A WatchHealth asking half the policy's shortest heartbeat, and its answer."""
    below = load_config(config).policy.ceilings.min_watch_heartbeat_s / 2
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = routing_pb2.WatchHealthRequest(heartbeat_s=below).SerializeToString()
        stream = channel.unary_stream(WATCH_METHOD)(request, timeout=RPC_TIMEOUT_S)
        try:
            next(stream)
            answer = "OK"
        except grpc.RpcError as exc:
            answer = _why(exc)
        finally:
            stream.cancel()
    print(f"    WatchHealth at {below:g} s (policy's shortest {below * 2:g} s): {answer}", flush=True)
    return below, answer


def _watch_run(
    config: Path, heartbeat_s: float, args: argparse.Namespace, check_floor: bool, watchers_first: bool
) -> WatchRun:
    """Route p99 on a fresh server without watchers and with them, in that order or the other."""
    lanes = list(load_config(config).lanes)
    load_before = load_average()
    codes: collections.Counter[str] = collections.Counter()

    def timed(port: int, label: str) -> list[float]:
        latencies, answers = asyncio.run(
            _route_latencies(port, lanes, args.route_calls, WATCH_IN_FLIGHT, WATCH_WARMUP_CALLS)
        )
        codes.update(answers)
        median = statistics.median(latencies)
        print(
            f"    Route p99 {p99(latencies) * 1e3:.2f} ms {label} (median {median * 1e3:.2f} ms)", flush=True
        )
        return latencies

    with production_server(config) as (pid, port):
        floor_check = _below_floor(port, config) if check_floor else None
        if not watchers_first:
            without = timed(port, "without watchers")
        with watcher_process(port, args.watchers, heartbeat_s) as watchers:
            ready = watchers.ready
            print(
                f"    {ready['open']} watchers open at {heartbeat_s:g} s in {ready['took_s']:.1f} s"
                + (f", refused: {ready['refused']}" if ready["refused"] else ""),
                flush=True,
            )
            cpu, start = process_cpu_s(pid), time.perf_counter()
            time.sleep(WATCH_SETTLE_S)
            idle_cpu = (process_cpu_s(pid) - cpu) / (time.perf_counter() - start)
            child_cpu, start = process_cpu_s(watchers.pid), time.perf_counter()
            watched = timed(port, f"with {ready['open']} watchers")
            child_cpu = (process_cpu_s(watchers.pid) - child_cpu) / (time.perf_counter() - start)
        end = watchers.end or {}
        rate = end.get("messages", 0) / watchers.held_s if watchers.held_s else 0.0
        if watchers_first:
            without = timed(port, "without watchers (once they closed)")
    load_after = load_average()
    run = WatchRun(
        without_s=p99(without),
        with_s=p99(watched),
        heartbeat_s=heartbeat_s,
        watchers_open=ready["open"],
        refused=ready["refused"],
        messages_per_s=rate,
        idle_cpu=idle_cpu,
        child_cpu=child_cpu,
        load=(load_before, load_after),
        codes=codes,
        floor_check=floor_check,
    )
    print(
        f"    {run.ratio:.2f}x; the server took {idle_cpu:.2f} cores for the watchers alone, the watcher "
        f"process {child_cpu:.2f} while Route was timed; "
        f"{rate:.0f} messages/s to the watchers; dropped after opening: {end.get('dropped') or 'none'}; "
        f"load {load_before:.2f} -> {load_after:.2f}; Route answers: {_counts(codes)}",
        flush=True,
    )
    return run


def _spread(values: list[float], unit: str = "", scale: float = 1.0, digits: int = 2) -> str:
    low, high = min(values) * scale, max(values) * scale
    return f"{low:.{digits}f}{unit}" if len(values) == 1 else f"{low:.{digits}f}-{high:.{digits}f}{unit}"


def watchers_section(args: argparse.Namespace) -> Section:
    """Route p99 with and without 1,000 watchers; the 0.1 s heartbeat as information."""
    floor = load_config(args.config).policy.ceilings.min_watch_heartbeat_s
    print(
        f"\nwatchers: Route p99 over {args.route_calls} calls {WATCH_IN_FLIGHT} in flight, without and with "
        f"{args.watchers} WatchHealth streams at {floor:g} s from another process; {args.watch_runs} run(s)",
        flush=True,
    )
    runs = []
    for index in range(args.watch_runs):
        print(f"  run {index + 1}/{args.watch_runs} (load {load_average():.2f})", flush=True)
        runs.append(
            _watch_run(args.config, floor, args, check_floor=index == 0, watchers_first=index % 2 == 1)
        )
    print(
        f"  attack: {args.watchers} streams at {ATTACK_HEARTBEAT_S:g} s, "
        f"min_watch_heartbeat_s = {ATTACK_HEARTBEAT_S:g}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="hostile-") as scratch:
        config = config_copy(
            args.config,
            Path(scratch) / "config",
            [(f"min_watch_heartbeat_s = {floor!r}", f"min_watch_heartbeat_s = {ATTACK_HEARTBEAT_S!r}")],
        )
        attack = _watch_run(config, ATTACK_HEARTBEAT_S, args, check_floor=False, watchers_first=False)

    ratios = [run.ratio for run in runs]
    failed = sum((run.codes for run in runs), collections.Counter[str]())
    del failed["OK"]
    median = statistics.median(ratios)
    opened = min(run.watchers_open for run in runs)
    loads = [value for run in runs for value in run.load]
    below, floor_code = runs[0].floor_check or (0.0, "not checked")
    return Section(
        "watchers",
        (
            Figure(
                "Route p99 without watchers",
                f"{statistics.median(r.without_s for r in runs) * 1e3:.2f} ms "
                f"(runs {_spread([r.without_s for r in runs], ' ms', 1e3)})",
                "-",
                None,
            ),
            Figure(
                f"Route p99 with {args.watchers} watchers at {floor:g} s",
                f"{median:.2f}x in the median run (runs {_spread(ratios, 'x')}; "
                f"p99 {_spread([r.with_s for r in runs], ' ms', 1e3)}; {opened} open"
                + (f"; Route answered {_counts(failed)}" if failed else "")
                + ")",
                f"<= {LATENCY_BAR:g}x",
                median <= LATENCY_BAR and opened == args.watchers and not failed,
            ),
            Figure(
                f"WatchHealth at {below:g} s",
                floor_code,
                "INVALID_ARGUMENT",
                floor_code.startswith("INVALID_ARGUMENT"),
            ),
            Figure(
                f"Route p99 with {attack.watchers_open} watchers at {ATTACK_HEARTBEAT_S:g} s "
                f"(a copy, min_watch_heartbeat_s {ATTACK_HEARTBEAT_S:g})",
                f"{attack.with_s * 1e3:.2f} ms vs {attack.without_s * 1e3:.2f} ms: {attack.ratio:.2f}x; "
                f"server {attack.idle_cpu:.2f} cores idle; {attack.messages_per_s:.0f} msg/s",
                "information",
                None,
            ),
            Figure(
                "load average (1 min) during the runs",
                f"{min(loads):.2f}-{max(loads):.2f} on {os.cpu_count()} CPUs; at {floor:g} s the server took "
                f"{_spread([r.idle_cpu for r in runs], ' cores')} for the watchers alone",
                "information",
                None,
            ),
        ),
    )


SECTIONS: dict[str, Callable[[argparse.Namespace], Section]] = {
    "oversized": oversized,
    "at-limit": at_limit,
    "garbage": garbage_section,
    "forged": forged_section,
    "watchers": watchers_section,
}


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--watchers-child":  # the watcher process
        asyncio.run(_watch(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--section", choices=list(SECTIONS), action="append", help="run only this section (repeatable)"
    )
    parser.add_argument("--rounds", type=int, default=6, help="rounds a memory section (default %(default)s)")
    parser.add_argument(
        "--concurrency", type=int, default=768, help="calls at once a round (default %(default)s)"
    )
    parser.add_argument(
        "--connections", type=int, default=1, help="connections the calls share (default %(default)s)"
    )
    parser.add_argument(
        "--message-bytes",
        type=int,
        default=OVERSIZED_BYTES,
        help="oversized: serialized size of each RouteRequest (default %(default)s)",
    )
    parser.add_argument(
        "--garbage", type=int, default=GARBAGE_PAYLOADS, help="garbage: payloads sent (default %(default)s)"
    )
    parser.add_argument(
        "--forged-batch",
        type=int,
        default=FORGED_PER_BATCH,
        help="forged: reports of each forged kind but the rate limits (default %(default)s)",
    )
    parser.add_argument(
        "--watchers", type=int, default=WATCHERS, help="watchers: streams open (default %(default)s)"
    )
    parser.add_argument(
        "--route-calls",
        type=int,
        default=WATCH_ROUTE_CALLS,
        help="watchers: Route calls timed a phase (default %(default)s)",
    )
    parser.add_argument(
        "--watch-runs",
        type=int,
        default=WATCH_RUNS,
        help="watchers: runs, each on a fresh server (default %(default)s)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 2 rounds of 128 calls, 3,000 garbage payloads, 10 forged reports a kind, "
        "one watcher run of 500 calls",
    )
    parser.add_argument(
        "--config", type=Path, default=CONFIG_DIR, help="the server's config directory (default: config/)"
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.concurrency = 2, 128
        args.garbage, args.forged_batch = 3000, 10
        args.route_calls, args.watch_runs = 500, 1
    if min(args.rounds, args.concurrency, args.connections, args.garbage, args.forged_batch) < 1:
        parser.error("--rounds, --concurrency, --connections, --garbage and --forged-batch must be positive")
    if min(args.watchers, args.route_calls, args.watch_runs) < 1:
        parser.error("--watchers, --route-calls and --watch-runs must be positive")
    if args.message_bytes < 64:
        parser.error("--message-bytes must be at least 64")
    args.connections = min(args.connections, args.concurrency)
    print(f"{os.cpu_count()} CPUs, load {load_average():.2f}, 127.0.0.1, config {args.config}")
    try:
        sections = [SECTIONS[name](args) for name in args.section or SECTIONS]
    except KeyboardInterrupt:
        sys.exit(130)
    _table(sections)
    failed = [f"{s.name}: {f.name}" for s in sections for f in s.figures if f.holds is False]
    if failed:
        print(f"\n{len(failed)} bar(s) failed: {'; '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
