"""Wires the gRPC server: RoutingService, grpc.health.v1, reflection, limits, signals."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from orxaq.routing.v1 import routing_pb2, routing_pb2_grpc
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.scoring import KIND as SCORING_KERNEL
from orxaq_grpc.service.runtime import check_protobuf_backend
from orxaq_grpc.service.servicer import RoutingHandlers, RoutingServicer

log = logging.getLogger(__name__)

SERVICE_NAME = routing_pb2.DESCRIPTOR.services_by_name["RoutingService"].full_name
# Prompts are capped well below this by policy (limits.max_prompt_bytes), so an
# oversized prompt gets a field violation rather than a transport error.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass
class RunningServer:
    server: grpc.Server
    health: health.HealthServicer
    port: int

    def stop(self, grace_s: float, drain_s: float = 0.0) -> None:
        """Reports NOT_SERVING, waits `drain_s` for balancers to notice, then lets
        in-flight calls finish for up to `grace_s`."""
        self.health.enter_graceful_shutdown()
        if drain_s > 0:
            threading.Event().wait(drain_s)
        self.server.stop(grace_s).wait()


def start_server(live: LiveRouter, address: str, workers: int) -> RunningServer:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Two servers must never share a port silently.
            ("grpc.so_reuseport", 0),
        ],
    )
    routing_pb2_grpc.add_RoutingServiceServicer_to_server(RoutingServicer(RoutingHandlers(live)), server)

    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME),
        server,
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    return RunningServer(server=server, health=health_servicer, port=port)


def serve(live: LiveRouter, address: str, workers: int, grace_s: float, drain_s: float) -> None:
    """Runs until SIGTERM or SIGINT; SIGHUP reloads the config (the last good one stays on error)."""
    check_protobuf_backend()
    # Handlers go in before the port opens: a signal that arrives early still drains.
    stopping = threading.Event()

    def on_stop(signum: int, _frame: object) -> None:
        log.info("%s received: draining", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, lambda _s, _f: threading.Thread(target=live.reload, daemon=True).start())
    running = start_server(live, address, workers)
    config = live.current.config
    host = address.rsplit(":", 1)[0]
    log.info(
        "serving %s on %s:%d (config %s version %s, %d models, %d lanes, %s kernel, %d workers)",
        SERVICE_NAME,
        host,
        running.port,
        config.directory,
        config.version,
        len(config.models),
        len(config.lanes),
        SCORING_KERNEL,
        workers,
    )
    if SCORING_KERNEL != "compiled":
        log.warning("the compiled scoring kernel is not in use; scoring runs on the pure-Python twin")

    stopping.wait()
    running.stop(grace_s, drain_s)
    log.info("stopped")
