"""Shared fixtures: the shipped config, both kernel twins, small hand-made catalogs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from orxaq_grpc import _scoring_py
from orxaq_grpc.application.outcomes import Outcomes
from orxaq_grpc.config.load import load_config
from orxaq_grpc.config.model import Config, LaneSpec, ModelSpec
from orxaq_grpc.outcomes.records import Outcome, ReportInput
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.routing.router import Router
from orxaq_grpc.routing.types import Decision, Objective, Profile
from orxaq_grpc.service.server import open_outcomes, start_server
from orxaq_grpc.service.tls import ServerTls
from orxaq_grpc.telemetry.export import Telemetry
from tests.postgres_server import PostgresServer, find_bin_dir, running_server

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO / "config"


def report_success(outcomes: Outcomes, decision: Decision, cost_usd: float) -> bool:
    """The lane's report of a decision that went well, as the servicer takes it: prepared, durable,
    then counted; False (nothing counted) for a decision already reported."""
    record = outcomes.prepare_report(
        ReportInput(
            decision_id=decision.decision_id,
            lane=decision.lane,
            provider=decision.provider,
            model=decision.model,
            input_tokens=decision.input_tokens,
            output_tokens=decision.output_tokens,
            latency_s=1.0,
            outcome=Outcome.SUCCESS,
            retry_after_s=0.0,
            validation_passed=True,
            first_time_pass=True,
            cost_usd=cost_usd,
        )
    )
    if not outcomes.write_report(record).result(timeout=30):
        return False
    outcomes.apply_report(record)
    return True


class FakeClock:
    """A clock tests move by hand: `clock.now += 60`."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ORXAQ_NO_EXTENSIONS=1 runs the suite on the pure-Python twin alone, as a machine without the compiled
# kernel would serve; otherwise the build must have made the kernel, and a missing one fails here.
WITHOUT_EXTENSIONS = bool(os.environ.get("ORXAQ_NO_EXTENSIONS"))
KERNELS: dict[str, type] = {"python": _scoring_py.CatalogKernel}
if not WITHOUT_EXTENSIONS:
    from orxaq_grpc import _scoring

    KERNELS["compiled"] = _scoring.CatalogKernel
needs_compiled = pytest.mark.skipif(
    WITHOUT_EXTENSIONS, reason="ORXAQ_NO_EXTENSIONS=1: the compiled kernel is not used"
)


@pytest.fixture(scope="session")
def shipped_config() -> Config:
    return load_config(CONFIG_DIR)


@pytest.fixture(params=sorted(KERNELS))
def kernel(request: pytest.FixtureRequest) -> type:
    """Every test that scores runs once on each twin."""
    return KERNELS[request.param]


@pytest.fixture
def make_router(kernel: type) -> Callable[[Config], Router]:
    counter = iter(range(1_000_000))
    return lambda config: Router(config, new_id=lambda: f"d{next(counter)}", kernel=kernel)


def model(model_id: str, **fields: object) -> ModelSpec:
    """A catalog entry with plain defaults; tests override what they exercise."""
    values: dict[str, object] = {
        "id": model_id,
        "provider": "acme",
        "origin": "hosted",
        "input_usd_per_mtok": 1.0,
        "output_usd_per_mtok": 4.0,
        "output_tokens_per_s": 100.0,
        "ttft_s": 1.0,
        "quality": 70.0,
        "context_window": 200_000,
        "max_output_tokens": 32_000,
        "capabilities": frozenset({"tools"}),
        "enabled": True,
        "price_source": "test",
        "price_date": dt.date(2026, 11, 1),
        "speed_source": "test",
        "speed_date": dt.date(2026, 11, 1),
        "quality_source": "test",
    }
    values.update(fields)
    return ModelSpec(**values)  # type: ignore[arg-type]


def lane(lane_id: str, allowed: tuple[str, ...], **fields: object) -> LaneSpec:
    values: dict[str, object] = {
        "id": lane_id,
        "allowed_models": allowed,
        "static_fallback": allowed[0],
        "default_objective": Objective.BALANCED,
        "default_profile": Profile.FAST,
        "quality_floor": 0.0,
        "critical": False,
        "enabled": True,
        "model_bias": {},
        "origin_bias": {},
        "description": "",
    }
    values.update(fields)
    return LaneSpec(**values)  # type: ignore[arg-type]


def config_with(
    base: Config,
    models: list[ModelSpec],
    lanes: list[LaneSpec] | None = None,
    **policy: object,
) -> Config:
    """The shipped policy over a hand-made catalog (sorted by id, as the loader does)."""
    lanes = lanes or [lane("test", tuple(m.id for m in models))]
    return dataclasses.replace(
        base,
        models=tuple(sorted(models, key=lambda m: m.id)),
        lanes={spec.id: spec for spec in lanes},
        policy=dataclasses.replace(base.policy, **policy),
        version="test",
    )


@pytest.fixture
def config_dir(tmp_path: Path) -> Iterator[Path]:
    """A writable copy of the shipped config directory."""
    target = tmp_path / "config"
    target.mkdir()
    for source in CONFIG_DIR.glob("*.toml"):
        (target / source.name).write_bytes(source.read_bytes())
    yield target


def set_toml(path: Path, section: str, key: str, value: str) -> None:
    """Sets `key = value` (TOML source) in `[section]` of a config file copy, adding it if absent."""
    lines = path.read_text().splitlines()
    start = lines.index(f"[{section}]")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    for i in range(start + 1, end):
        if lines[i].split("=")[0].strip() == key:
            lines[i] = f"{key} = {value}"
            break
    else:
        lines.insert(start + 1, f"{key} = {value}")
    path.write_text("\n".join(lines) + "\n")


class LoopbackServer:
    """The production grpc.aio server on an event loop of its own thread, so tests
    can call it with plain blocking clients."""

    def __init__(
        self,
        live: LiveRouter,
        data_dir: Path,
        telemetry: Telemetry | None = None,
        tls: ServerTls | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-server", daemon=True)
        self._thread.start()
        self.outcomes = open_outcomes(live, data_dir)
        self.telemetry = telemetry
        self.running = self._call(
            start_server(live, self.outcomes, "127.0.0.1:0", str(data_dir), telemetry=telemetry, tls=tls)
        )
        self.address = f"127.0.0.1:{self.running.port}"

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def stop(self) -> None:
        """Idempotent: a test may stop its server before the fixture that started it does."""
        if self._loop.is_closed():
            return
        self._call(self.running.stop(grace_s=1.0))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
        self.outcomes.close()
        if self.telemetry is not None:
            self.telemetry.shutdown()


CLI = [sys.executable, "-m", "orxaq_grpc.cli"]
_SERVING = re.compile(r"serving \S+ on 127\.0\.0\.1:(\d+)")


class ServerProcess:
    """Starts `orxaq-grpc serve` on a free loopback port and reads the port from its log."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [*CLI, "serve", "--address", "127.0.0.1:0", *args],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own process group: kill() reaches the workers too
        )
        self.log: list[str] = []
        self.port = 0

    def wait_for_log(self, pattern: str) -> re.Match[str]:
        """Reads the log up to the first line matching `pattern` (the server logs as it goes;
        the test's own timeout bounds the wait)."""
        assert self.process.stderr is not None
        while line := self.process.stderr.readline():
            self.log.append(line)
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"log ended before {pattern!r}:\n" + "".join(self.log))

    def wait_until_serving(self) -> int:
        self.port = int(self.wait_for_log(_SERVING.pattern).group(1))
        return self.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def finish(self, timeout_s: float = 20.0) -> tuple[int, str]:
        """Exit code and the rest of the log."""
        _, rest = self.process.communicate(timeout=timeout_s)
        return self.process.returncode, "".join(self.log) + rest

    def kill(self) -> None:
        """SIGKILLs the server and every worker it started: a worker orphaned by a failed test
        would hold the log pipe open and hang the next read of it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.communicate()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[type[ServerProcess]]:
    """Servers whose ledger lives under the test's tmp dir unless a test names one."""
    started: list[ServerProcess] = []

    class Tracked(ServerProcess):
        def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
            super().__init__(*args, env={"ORXAQ_DATA_DIR": str(tmp_path / "data"), **(env or {})})
            started.append(self)

    yield Tracked
    for process in started:
        process.kill()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session, on loopback (tests/postgres_server.py)."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (Debian package postgresql; .ci/run installs it)")
    with running_server(bin_dir) as server:
        yield server


@pytest.fixture
def postgres_dsn(postgres: PostgresServer) -> Iterator[str]:
    """A fresh database on the session's server, dropped afterwards (the server started again
    first if the test left it stopped)."""
    dsn = postgres.create_database()
    yield dsn
    postgres.drop_database(dsn)
