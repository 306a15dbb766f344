"""Wires the grpc.aio server: RoutingService, grpc.health.v1, reflection, limits, signals.

One process serves on one event loop; `workers.py` runs it, or N of them on one port.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection

from orxaq.routing.v1 import routing_pb2
from orxaq_grpc.application import unpublished
from orxaq_grpc.application.learning import FILE_NAME as LEARNER_FILE
from orxaq_grpc.application.outcomes import Outcomes
from orxaq_grpc.application.workflow import RoutingWorkflow
from orxaq_grpc.config.model import Limits
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.scale.validation import MAX_SCHEDULE_FLOWS
from orxaq_grpc.scoring import KIND as SCORING_KERNEL
from orxaq_grpc.service.gate import Gate
from orxaq_grpc.service.health import HealthServicer
from orxaq_grpc.service.interceptor import TelemetryInterceptor
from orxaq_grpc.service.memory import release_free_memory
from orxaq_grpc.service.servicer import RoutingHandlers, RoutingServicer
from orxaq_grpc.service.tls import ServerTls
from orxaq_grpc.service.wire import RefusalLog, register
from orxaq_grpc.shared import SharedLink, open_link
from orxaq_grpc.store import open_store
from orxaq_grpc.telemetry.export import Telemetry, configure
from orxaq_grpc.telemetry.metrics import RoutingMetrics
from orxaq_grpc.telemetry.observer import Observer

log = logging.getLogger(__name__)

SERVICE_NAME = routing_pb2.DESCRIPTOR.services_by_name["RoutingService"].full_name
# What the server sends at most.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# Room in a request beyond what `max_request_bytes` counts: tags, length prefixes, numbers, capabilities.
REQUEST_SLACK_BYTES = 64 * 1024
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def max_request_bytes(limits: Limits) -> int:
    """The largest request the transport takes: a RouteRequest at every limit of `limits` (the
    prompt, then the title, each label and text field at UTF-8's 4 bytes a character), or a
    ScaleRequest with every cash flow it may have, whichever is larger, plus slack. So a prompt
    over limits.max_prompt_bytes is still read and answered INVALID_ARGUMENT naming task.prompt,
    while a message well beyond any valid request is RESOURCE_EXHAUSTED before it is read whole."""
    text_field = 4 * limits.max_text_field_chars + 8
    route = limits.max_prompt_bytes + 4 * limits.max_title_chars + (limits.max_labels + 8) * text_field
    scale = 2 * MAX_SCHEDULE_FLOWS * 24  # value and cost, each (day, usd) flow 20 bytes on the wire
    return min(max(route, scale) + REQUEST_SLACK_BYTES, 2**31 - 1)


def server_options(reuse_port: bool, max_receive_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """`max_receive_bytes` is `max_request_bytes` of the policy at start. Options are fixed when the
    server starts: a reload that raises the request limits leaves the transport's limit where it was
    (a prompt between the two is RESOURCE_EXHAUSTED) until the next restart."""
    return [
        ("grpc.max_receive_message_length", max_receive_bytes),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        # No flow-control windows grown by bandwidth probing: on a fast link they grow to megabytes a
        # stream, taken in before an oversized message is refused (768 such calls at once, on the
        # receive limit above, still peaked at 1 GiB; benchmarks/hostile.py). Without it a stream's
        # window keeps its default size; a request within the limit is still read whole, if in more
        # round trips on a distant link.
        ("grpc.http2.bdp_probe", 0),
        # Off unless workers share the port on purpose: two servers must never share one by accident.
        ("grpc.so_reuseport", int(reuse_port)),
        # Pings find peers that vanished without a reset, so their WatchHealth streams end.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
    ]


@dataclass
class RunningServer:
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    handlers: RoutingHandlers
    port: int
    guardrails: asyncio.Task[None]
    gate: Gate
    refusal_logs: tuple[RefusalLog, ...] = ()

    async def stop(self, grace_s: float, drain_s: float = 0.0) -> None:
        """Reports NOT_SERVING, waits `drain_s` for balancers to notice, then lets
        in-flight calls finish for up to `grace_s`."""
        await self.health.enter_graceful_shutdown()
        if drain_s > 0:
            await asyncio.sleep(drain_s)
        self.handlers.stopping.set()  # watchers end now rather than at the end of the grace
        self.guardrails.cancel()
        await self.server.stop(grace_s)
        for refusals in self.refusal_logs:  # what the last period counted, told before the end
            refusals.flush(force=True)


async def start_server(
    live: LiveRouter,
    outcomes: Outcomes,
    address: str,
    data_dir: str = "",
    reuse_port: bool = False,
    telemetry: Telemetry | None = None,
    tick_guardrails: bool = True,
    tls: ServerTls | None = None,
) -> RunningServer:
    """Serves on `address`. `tick_guardrails=False` leaves the stop-loss checks to the caller (the
    fleet simulator runs them on its simulated clock)."""
    meter = telemetry.meter() if telemetry is not None else None
    metrics = RoutingMetrics(meter, outcomes.health) if meter is not None else None
    tracer = telemetry.tracer if telemetry is not None else None
    # Telemetry outermost, so refused calls are traced and counted too. With both signals off there
    # is no telemetry interceptor at all: tracing off costs nothing per call.
    gate = Gate(live)
    interceptors: list[grpc.aio.ServerInterceptor] = [gate]
    if tracer or metrics:
        interceptors.insert(0, TelemetryInterceptor(tracer, metrics.rpc_duration if metrics else None))
    options = server_options(reuse_port, max_request_bytes(live.current.config.policy.limits))
    server = grpc.aio.server(options=options, interceptors=interceptors)
    observer = Observer(metrics, traced=tracer is not None)
    handlers = RoutingHandlers(RoutingWorkflow(live, outcomes, observer), data_dir, observer)
    # Both services through wire.register: bytes that do not parse are INVALID_ARGUMENT, logged by count.
    refusals = RefusalLog()
    register(
        server, routing_pb2.DESCRIPTOR.services_by_name["RoutingService"], RoutingServicer(handlers), refusals
    )
    health_servicer = HealthServicer()  # with List, and a name per lane (service/health.py)
    register(server, health_pb2.DESCRIPTOR.services_by_name["Health"], health_servicer, refusals)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.update_lanes(outcomes)  # each lane's name is there from the first call
    logs = (refusals, gate.refusals, gate.exhausted)

    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    # Both raise RuntimeError when they cannot bind.
    port = server.add_secure_port(address, tls.credentials()) if tls else server.add_insecure_port(address)
    await server.start()
    health_servicer.follow_lanes(outcomes)
    ticker = asyncio.create_task(
        _check_guardrails(live, outcomes, logs) if tick_guardrails else _idle(), name="guardrails"
    )
    return RunningServer(
        server=server,
        health=health_servicer,
        handlers=handlers,
        port=port,
        guardrails=ticker,
        gate=gate,
        refusal_logs=logs,
    )


async def _idle() -> None:
    """The ticker's place when the caller runs the checks: waits to be cancelled on stop."""
    await asyncio.Event().wait()


async def _check_guardrails(live: LiveRouter, outcomes: Outcomes, logs: tuple[RefusalLog, ...]) -> None:
    """Evaluates the stop-loss triggers (and refreshes calibration) every check_interval_s, off the
    loop: the sums behind them take milliseconds. A failed round is logged and the next one runs.
    Each round also tells the refusals of a period that is over, and hands memory freed since the
    last round back to the system (service/memory.py)."""
    while True:
        await asyncio.sleep(live.current.config.policy.stop_loss.check_interval_s)
        try:
            await asyncio.to_thread(outcomes.check)
        except Exception:
            log.exception("evaluating the stop-loss triggers failed; trying again next round")
        for refusals in logs:
            refusals.flush()
        await asyncio.to_thread(release_free_memory)


def open_outcomes(
    live: LiveRouter,
    data_dir: Path,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    ledger: str | None = None,
    shared: str | None = None,
) -> Outcomes:
    """The ledger (`ledger`, a PostgreSQL URL or sqlite:DIR; by default SQLite under `data_dir`,
    created on first start) and economics rebuilt from it. The success model's file stays in
    `data_dir` either way. With `shared` (a Redis URL), budgets live in that Redis and the other
    replicas' decisions and reports are counted here from the moment the replay ends."""
    retention_days = live.current.config.policy.ledger_retention_days
    link = open_link(shared) if shared else None
    store = open_store(ledger, data_dir, retention_days, clock=clock)
    try:
        outcomes = Outcomes(live, store, clock, monotonic, model_path=data_dir / LEARNER_FILE, shared=link)
        after = _stream_position(link)
        decisions, reports = outcomes.rebuild()
        outcomes.start_sharing(after)
    except BaseException:
        if link is not None:  # what it took from the journal to publish goes back there
            unpublished.keep(store, link.close(timeout_s=0.0), clock)
        store.close()
        raise
    if link is not None:
        status = link.status()
        state = "connected" if status.connected else f"away ({status.error}): routing on local state"
        log.info("shared state: Redis %s, %s", status.location, state)
    # The location, never the ledger value itself: a PostgreSQL URL may hold a password.
    location = store.stats().location
    log.info("ledger %s: rebuilt from %d decisions and %d reports", location, decisions, reports)
    return outcomes


def _stream_position(link: SharedLink | None) -> str:
    """Where this replica starts reading the others' records (`SharedLink.start_position`)."""
    return "0-0" if link is None else link.start_position()


async def _run(
    live: LiveRouter,
    data_dir: Path,
    address: str,
    grace_s: float,
    drain_s: float,
    reuse_port: bool,
    tls: ServerTls | None = None,
    ledger: str | None = None,
    shared: str | None = None,
) -> None:
    """Serves until SIGTERM or SIGINT; SIGHUP reloads the config (the last good one stays on error)."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def on_stop(signum: signal.Signals) -> None:
        log.info("%s received: draining", signum.name)
        stopping.set()

    # Handlers go in before the port opens: a signal that arrives early still drains.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_stop, signum)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, live.reload))

    outcomes = open_outcomes(live, data_dir, ledger=ledger, shared=shared)
    telemetry = configure()
    log.info("telemetry: %s", telemetry.settings.describe())
    try:
        running = await start_server(live, outcomes, address, str(data_dir), reuse_port, telemetry, tls=tls)
        log.info("access: %s", _describe_access(live, tls))
        await _serve_until(stopping, running, live, address, grace_s, drain_s)
    finally:
        outcomes.close()  # everything acknowledged is already durable; this drains the decision log
        telemetry.shutdown()
    log.info("stopped")


def _describe_access(live: LiveRouter, tls: ServerTls | None) -> str:
    access = live.current.config.policy.access
    transport = "plaintext" if tls is None else "mutual TLS" if tls.mutual else "TLS"
    if not access.enforced:
        return f"{transport}, no credentials: every call is open"
    reads = "open" if access.reads_open else "token"
    return f"{transport}, {len(access.credentials)} credentials, reads {reads}"


async def _serve_until(
    stopping: asyncio.Event,
    running: RunningServer,
    live: LiveRouter,
    address: str,
    grace_s: float,
    drain_s: float,
) -> None:
    config = live.current.config
    log.info(
        "serving %s on %s:%d (config %s version %s, %d models, %d lanes, %s kernel)",
        SERVICE_NAME,
        address.rsplit(":", 1)[0],
        running.port,
        config.directory,
        config.version,
        len(config.models),
        len(config.lanes),
        SCORING_KERNEL,
    )
    if SCORING_KERNEL != "compiled":
        log.warning("the compiled scoring kernel is not in use; scoring runs on the pure-Python twin")
    await stopping.wait()
    await running.stop(grace_s, drain_s)
