"""Several replicas of the service in one simulated run ([service] replicas): a throwaway Redis
between them, the lanes' calls spread over them, and the wait that keeps the run deterministic.

Shared replicas exchange what they count through Redis: each publishes its decisions and reports on
a stream, and the others' reader threads apply them to their own economics, breakers and decision
lookup, milliseconds of real time later. The simulated clock runs far faster than that, so after
every call that counts something the simulator waits (real time, at most SETTLE_TIMEOUT_S) until
every replica has applied everything the others published: the next call finds the fleet as one
process would, and the same seed gives the same run. Budgets need no wait: they live in Redis,
each reservation and settlement one atomic script.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.config.load import ConfigProblem
from orxaq_grpc.simulate.forge import Metadata
from orxaq_grpc.simulate.scenario import Scenario, ScenarioError
from orxaq_grpc.simulate.service import SimClock, SimService

SETTLE_TIMEOUT_S = 5.0  # real seconds the replicas may take to apply one another's records
SETTLE_POLL_S = 0.0002
REDIS_START_S = 10.0
REDIS_ATTEMPTS = 3  # a free port can be taken between finding it and redis-server binding it
RPC_TIMEOUT_S = 30.0
FIELD = "service.replicas"


class ReplicasOutOfStep(ScenarioError):
    """The replicas did not apply one another's records in time (or Redis went away mid-run)."""


def redis_problems(scenario: Scenario, path: Path) -> list[ConfigProblem]:
    """Why shared replicas cannot run here: no redis-server on PATH, or no redis package."""
    service = scenario.service
    if service.replicas < 2 or not service.shared:
        return []
    needs = f"{service.replicas} replicas sharing state need a Redis of their own"
    problems = []
    if shutil.which("redis-server") is None:
        problems.append(
            f"{needs}, and redis-server is not on PATH: install redis-server (Debian and Ubuntu: "
            "apt-get install redis-server; macOS: brew install redis), or set service.shared = false"
        )
    if importlib.util.find_spec("redis") is None:
        problems.append(f"{needs}, and the redis package is missing: pip install 'orxaq-grpc[redis]'")
    return [ConfigProblem(str(path), FIELD, problem) for problem in problems]


class ThrowawayRedis:
    """A `redis-server` for one run: a free loopback port, its files (none saved) in `directory`."""

    def __init__(self, directory: Path, path: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ScenarioError([ConfigProblem(str(path), FIELD, "redis-server is not on PATH")])
        self.binary = binary
        self.directory = directory
        self._path = path
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Starts it; its URL. A port taken meanwhile is tried again on another."""
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.directory / "redis.log"
        for _ in range(REDIS_ATTEMPTS):
            port = _free_port()
            self._process = subprocess.Popen(
                [
                    self.binary,
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--dir", str(self.directory),
                    "--logfile", str(log),
                    "--save", "",
                    "--appendonly", "no",
                    "--protected-mode", "yes",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            if _answers(self._process, port):
                self.url = f"redis://127.0.0.1:{port}/0"
                return self.url
            self.stop()
        tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
        said = f": {' / '.join(tail)}" if tail else ""
        raise ScenarioError(
            [ConfigProblem(str(self._path), FIELD, f"redis-server ({self.binary}) did not start{said}")]
        )

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(process: subprocess.Popen[bytes], port: int) -> bool:
    """Whether the redis-server on `port` answers PING before it exits or REDIS_START_S pass."""
    deadline = time.monotonic() + REDIS_START_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as connection:
                connection.sendall(b"PING\r\n")
                if connection.recv(16).startswith(b"+PONG"):
                    return True
        except OSError:
            time.sleep(0.02)
    return False


@dataclass
class Exchange:
    """How long the replicas took to apply one another's records: real time, not simulated."""

    waits: int = 0
    total_s: float = 0.0
    max_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "waits": self.waits,
            "mean_ms": round(1e3 * self.total_s / self.waits, 3) if self.waits else 0.0,
            "max_ms": round(1e3 * self.max_s, 3),
        }


class Replicas:
    """The service replicas of one run: started and stopped together, on one Redis when shared."""

    def __init__(
        self,
        scenario: Scenario,
        path: Path,
        workdir: Path,
        config_dir: Path,
        data_dir: Path,
        clock: SimClock,
        new_id: Callable[[], str],
    ) -> None:
        service = scenario.service
        self.count = service.replicas
        self.shared = self.count > 1 and service.shared
        self._path = path
        self._config_dir = config_dir
        self._clock = clock
        self._new_id = new_id
        # Shared: one ledger, as replicas on one data dir. Alone: each its own ledger and books.
        self._data_dirs = [
            data_dir if self.shared or self.count == 1 else data_dir / f"replica-{i}"
            for i in range(self.count)
        ]
        self._redis = ThrowawayRedis(workdir / "redis", path) if self.shared else None
        self.services: list[SimService] = []
        self.exchange = Exchange()
        self._next_route = 0

    async def start(self) -> None:
        """Redis (for shared replicas), then every replica; all stopped again if one fails."""
        try:
            if self._redis is not None and not self._redis.url:
                await asyncio.to_thread(self._redis.start)
            await self._start_services()
        except BaseException:
            await self.stop()
            raise

    async def _start_services(self) -> None:
        url = self._redis.url if self._redis is not None else None
        for data_dir in self._data_dirs:
            self.services.append(
                await SimService.start(self._config_dir, data_dir, self._clock, self._new_id, shared=url)
            )

    async def restart(self) -> None:
        """A graceful stop of every replica and a new process of each (Redis stays up, as it would)."""
        await self._stop_services()
        try:
            await self._start_services()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Every replica, then Redis: each one stopped even when another's stop fails."""
        try:
            await self._stop_services()
        finally:
            if self._redis is not None:
                self._redis.stop()

    async def _stop_services(self) -> None:
        services, self.services = self.services, []
        failure: BaseException | None = None
        for service in services:
            try:
                await service.stop()
            except BaseException as exc:  # the others still stop; the first failure is raised
                failure = failure or exc
        if failure is not None:
            raise failure

    # -- where calls go ---------------------------------------------------------------

    def next_route(self) -> int:
        """The replica a Route goes to: each in turn, as a client's round_robin would."""
        index = self._next_route
        self._next_route = (index + 1) % self.count
        return index

    def reporter(self, routed_by: int) -> int:
        """The replica a Report goes to: the next one after the replica that routed it."""
        return (routed_by + 1) % self.count

    async def settle(self) -> None:
        """Waits until every replica has applied everything the others published (shared replicas)."""
        if not self.shared:
            return
        links = [service.outcomes.shared for service in self.services]
        started = time.perf_counter()
        while True:
            statuses = [link.status() for link in links if link is not None]
            published = sum(status.published for status in statuses)
            if all(s.pending == 0 and s.applied == published - s.published for s in statuses):
                break
            waited = time.perf_counter() - started
            if waited > SETTLE_TIMEOUT_S or not all(s.connected for s in statuses):
                state = "; ".join(
                    f"replica {i}: published {s.published}, {s.pending} waiting to be, applied {s.applied} "
                    f"of the others' {published - s.published}"
                    + ("" if s.connected else f", Redis away ({s.error})")
                    for i, s in enumerate(statuses)
                )
                raise ReplicasOutOfStep(
                    [
                        ConfigProblem(
                            str(self._path),
                            FIELD,
                            f"at {self._clock.t:.3f} s the replicas did not apply one another's records "
                            f"within {waited:.1f} s of real time ({state})",
                        )
                    ]
                )
            await asyncio.sleep(SETTLE_POLL_S)
        spent = time.perf_counter() - started
        self.exchange.waits += 1
        self.exchange.total_s += spent
        self.exchange.max_s = max(self.exchange.max_s, spent)

    def round_robin(self) -> RoundRobin:
        return RoundRobin(self)


class RoundRobin:
    """A client of every replica, as an intruder's: each call to the next replica in turn, the
    replicas settled after it. The stub's methods an intruder calls, with the same signatures."""

    def __init__(self, replicas: Replicas) -> None:
        self._replicas = replicas
        self._next = 0
        self.Report = self._spread("Report")
        self.Health = self._spread("Health")
        self.Economics = self._spread("Economics")
        self.Scale = self._spread("Scale")
        self.SetStopLoss = self._spread("SetStopLoss")

    def _spread(self, method: str) -> Callable[..., Any]:
        async def call(request: Any, **options: Any) -> Any:
            replicas = self._replicas
            index, self._next = self._next, (self._next + 1) % replicas.count
            try:
                return await getattr(replicas.services[index].stub, method)(request, **options)
            finally:
                await replicas.settle()

        return call


# -- what each replica shows ------------------------------------------------------------


async def view_of(service: SimService, metadata: Metadata | None) -> dict[str, Any]:
    """What a replica's Economics (today) and Health say that every replica must say alike."""
    stub = service.stub
    health = await stub.Health(pb.HealthRequest(), timeout=RPC_TIMEOUT_S, metadata=metadata)
    economics = await stub.Economics(pb.EconomicsRequest(), timeout=RPC_TIMEOUT_S, metadata=metadata)
    today = next(w for w in economics.windows if w.window == "today").overall
    return {
        "decisions": today.decisions,
        "reports": today.reports,
        "unknown_reports": today.unknown_decision_reports,
        "spend_usd": round(today.spend_usd, 9) + 0.0,  # + 0.0: never -0.0
        "open_breakers": sorted(f"{b.scope} {b.name}" for b in health.breakers if b.state == "open"),
        "budgets": {
            f"{b.scope} {b.name}".strip(): [round(b.spent_usd, 9) + 0.0, round(b.reserved_usd, 9) + 0.0]
            for b in health.budgets
        },
        "stop_loss": health.guardrails.stop_loss_active,
        "paused_lanes": sorted(lane.lane for lane in health.lanes if lane.paused),
    }


async def circuit_state(service: SimService, metadata: Metadata | None, model: str, provider: str) -> str:
    """A model's circuit as a replica's Health shows it: "open" (its own or its provider's circuit
    open: blocked), else its own state ("half_open", "closed")."""
    health = await service.stub.Health(pb.HealthRequest(), timeout=RPC_TIMEOUT_S, metadata=metadata)
    states: dict[tuple[str, str], str] = {(b.scope, b.name): b.state for b in health.breakers}
    if "open" in (states.get(("model", model)), states.get(("provider", provider))):
        return "open"
    return states.get(("model", model), "closed")
