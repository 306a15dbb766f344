"""Runs the service: in this process, or as `--workers N` processes supervised from here.

One process serves on one event loop (`server.py`). N such processes on the same port
(SO_REUSEPORT) are the way Python gRPC servers use more than one core; the parent only
supervises them and forwards signals.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import cast

from orxaq_grpc.config.model import Config
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.service.runtime import check_protobuf_backend
from orxaq_grpc.service.server import LOG_FORMAT, _run
from orxaq_grpc.service.tls import ServerTls, exposure_problem
from orxaq_grpc.telemetry.export import TelemetryConfigError, TelemetrySettings

log = logging.getLogger(__name__)


def serve(
    config_dir: Path,
    data_dir: Path,
    address: str,
    workers: int,
    grace_s: float,
    drain_s: float,
    tls: ServerTls | None = None,
    insecure: bool = False,
    ledger: str | None = None,
    shared: str | None = None,
) -> None:
    """Runs the service in this process, or supervises `workers` processes on one port. Refuses
    (ExposureRefused) to listen beyond loopback without TLS and credentials unless `insecure`.
    `ledger`: a PostgreSQL URL or sqlite:DIR (store.open_store); None, SQLite under `data_dir`.
    `shared`: the Redis URL replicas (and workers) share budgets and counts through; None, nothing."""
    check_protobuf_backend()
    telemetry = TelemetrySettings.from_env(os.environ)  # a bad OTEL_* variable fails here, before any worker
    if workers > 1 and telemetry.metrics.exporter == "prometheus":
        raise TelemetryConfigError(
            "OTEL_METRICS_EXPORTER=prometheus: one process serves /metrics on one port; "
            "run one worker, or export OTLP to a collector"
        )
    live = LiveRouter.from_directory(config_dir)  # a bad config fails here, once, before any worker
    if problem := _exposed(address, tls, insecure)(live.current.config):
        raise ExposureRefused(problem)
    if tls is not None:
        tls.credentials()  # an unreadable file fails here, once, before any worker
    if workers == 1:
        live.refuse_when(_exposed(address, tls, insecure))
        asyncio.run(
            _run(live, data_dir, address, grace_s, drain_s, False, tls=tls, ledger=ledger, shared=shared)
        )
        return
    if shared is None and (problem := budgets_in_a_worker(live.current.config)):
        raise RuntimeError(problem)
    with _reserved_port(address) as port:
        # Spawned, not forked: gRPC's threads do not survive a fork.
        context = multiprocessing.get_context("spawn")
        children = [
            context.Process(
                target=_worker,
                args=(
                    config_dir,
                    data_dir,
                    port,
                    grace_s,
                    drain_s,
                    logging.getLogger().level,
                    tls,
                    insecure,
                    ledger,
                    shared,
                ),
                name=f"worker-{i}",
            )
            for i in range(workers)
        ]
        log.info("starting %d workers on %s", workers, port)
        _supervise(children)


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_FORWARDED = (*_STOP_SIGNALS, signal.SIGHUP)


class ExposureRefused(Exception):
    """Listening beyond loopback without TLS and credentials, and not told --insecure."""


def _exposed(address: str, tls: ServerTls | None, insecure: bool) -> Callable[[Config], str | None]:
    """The exposure check for a config: at start, and on every reload (one that drops the last
    credential while listening beyond loopback is refused)."""
    return lambda config: exposure_problem(address, tls, config.policy.access.enforced, insecure)


def budgets_in_a_worker(config: Config) -> str | None:
    """Without --shared each worker keeps its own reservations: N of them could spend N budgets, so
    a config with a budget is refused with several workers, at start and on every reload."""
    budgets = config.policy.budgets
    if budgets.daily_usd or any(budgets.lane_daily_usd.values()) or any(budgets.provider_daily_usd.values()):
        return "budgets need a single worker, or --shared: the workers share no budget state"
    return None


def _worker(
    config_dir: Path,
    data_dir: Path,
    address: str,
    grace_s: float,
    drain_s: float,
    log_level: int,
    tls: ServerTls | None,
    insecure: bool,
    ledger: str | None = None,
    shared: str | None = None,
) -> None:
    # The supervisor blocks these while it starts workers, and the mask survives exec.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
    logging.basicConfig(level=log_level, format=LOG_FORMAT.replace("%(name)s", "%(processName)s %(name)s"))
    live = LiveRouter.from_directory(config_dir)
    if shared is None:
        live.refuse_when(budgets_in_a_worker)
    live.refuse_when(_exposed(address, tls, insecure))
    asyncio.run(_run(live, data_dir, address, grace_s, drain_s, True, tls=tls, ledger=ledger, shared=shared))


def _supervise(children: Sequence[multiprocessing.process.BaseProcess]) -> None:
    """Starts the workers and forwards SIGTERM, SIGINT and SIGHUP to them. When one exits
    unasked, the others are stopped too and the parent fails, so whatever supervises the
    service restarts it whole rather than leaving it at part capacity."""
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = stopping or signum in _STOP_SIGNALS
        _signal_alive(children, signum)

    for signum in _FORWARDED:
        signal.signal(signum, forward)
    # A signal that arrives while workers start is held until all of them exist.
    signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
    try:
        for child in children:
            child.start()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)

    running = {child.sentinel: child for child in children}
    failed: list[str] = []
    while running:
        # wait() returns those of the objects it was given that are ready: here sentinels, ints.
        for sentinel in cast("list[int]", multiprocessing.connection.wait(list(running))):
            child = running.pop(sentinel)
            child.join()
            # A worker stopped by a forwarded signal before its handlers were in place
            # still stopped cleanly.
            clean = child.exitcode == 0 or (stopping and -(child.exitcode or 0) in _STOP_SIGNALS)
            if clean:
                continue
            failed.append(f"{child.name} (exit {child.exitcode})")
            if not stopping:
                log.error("%s exited unasked with %s; stopping the other workers", child.name, child.exitcode)
                stopping = True
                _signal_alive(children, signal.SIGTERM)
    if failed:
        raise RuntimeError(f"workers failed: {', '.join(failed)}")


def _signal_alive(children: Sequence[multiprocessing.process.BaseProcess], signum: int) -> None:
    for child in children:
        if child.pid is not None and child.is_alive():
            os.kill(child.pid, signum)


@contextmanager
def _reserved_port(address: str) -> Iterator[str]:
    """Binds the address with SO_REUSEPORT so port 0 becomes one concrete port that every
    worker can share, and holds it while they run. A fixed port is first bound without
    SO_REUSEPORT, so a port another server holds is refused instead of silently shared."""
    host, _, port = address.rpartition(":")
    bare_host = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare_host else socket.AF_INET
    if int(port) != 0:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT, not listeners
            try:
                probe.bind((bare_host, int(port)))
            except OSError as exc:
                raise OSError(f"cannot listen on {address}: {exc.strerror}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((bare_host, int(port)))
        yield f"{host}:{sock.getsockname()[1]}"
    finally:
        sock.close()
