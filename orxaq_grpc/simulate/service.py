"""The real service, run in-process on a simulated clock, and the config directory it runs on.

Everything that decides is the service's own: the same server, servicer, Outcomes, breakers,
budgets, detection and stop-loss, reached over gRPC on loopback. Only time is simulated: the
ledger, the economics windows, budgets and breakers read the simulator's clock, and the
stop-loss checks run every `check_interval_s` of simulated time instead of on a timer.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path
from typing import Any

import grpc
import tomli_w

from orxaq.routing.v1 import routing_pb2_grpc
from orxaq_grpc.config.load import CATALOG_FILE, LANES_FILE, POLICY_FILE, ConfigError, load_config
from orxaq_grpc.config.model import Config
from orxaq_grpc.outcomes.tracker import Outcomes
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.service.server import RunningServer, open_outcomes, start_server
from orxaq_grpc.simulate.scenario import ConfigProblem, Overrides, ScenarioError, merge_overrides

_FILES = {"catalog": CATALOG_FILE, "lanes": LANES_FILE, "policy": POLICY_FILE}
# A monotonic reading far from 0, as real ones are: nothing may read 0 as "never".
_MONOTONIC_ORIGIN = 1_000_000.0


class SimClock:
    """Simulated seconds since the start of the run, as wall and monotonic time."""

    def __init__(self, start_unix: float) -> None:
        self.start_unix = start_unix
        self.t = 0.0

    def wall(self) -> float:
        return self.start_unix + self.t

    def monotonic(self) -> float:
        return _MONOTONIC_ORIGIN + self.t


def write_config(source: Path, target: Path, *layers: Overrides, scenario_path: Path) -> Config:
    """Copies the three config files from `source` into `target` with `layers` of overrides merged
    in ({"policy": {...}, "lanes": {...}, "catalog": {"models": {id: {...}}}}) and loads them.
    A layer that makes the config invalid is refused with the scenario's path and the config's
    own words."""
    target.mkdir(parents=True, exist_ok=True)
    for layer in layers:
        if unknown := sorted(set(layer) - set(_FILES)):
            raise ScenarioError(
                [ConfigProblem(str(scenario_path), "policy.overrides", f"unknown config file {unknown[0]!r}")]
            )
    for key, name in _FILES.items():
        path = source / name
        if not path.is_file():
            raise ScenarioError(
                [ConfigProblem(str(scenario_path), "policy.config", f"{path} does not exist")]
            )
        patches = [layer[key] for layer in layers if key in layer]
        if not patches:
            shutil.copyfile(path, target / name)
            continue
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        for patch in patches:
            data = _patch_catalog(data, patch) if key == "catalog" else merge_overrides(data, patch)
        (target / name).write_text(tomli_w.dumps(data), encoding="utf-8")
    try:
        return load_config(target)
    except ConfigError as exc:
        raise ScenarioError(
            [
                ConfigProblem(
                    str(scenario_path), "policy.overrides", f"{Path(p.path).name}: {p.field}: {p.problem}"
                )
                for p in exc.problems
            ]
        ) from None


def _patch_catalog(data: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Catalog models are an array; overrides name them by id."""
    by_id = patch.get("models", {})
    models = [
        merge_overrides(m, by_id[m["id"]]) if m.get("id") in by_id else m for m in data.get("models", [])
    ]
    return {**merge_overrides(data, {k: v for k, v in patch.items() if k != "models"}), "models": models}


class SimService:
    """One run of the service on the simulator's clock, and a client channel to it."""

    def __init__(
        self, live: LiveRouter, outcomes: Outcomes, running: RunningServer, channel: grpc.aio.Channel
    ):
        self.live = live
        self.outcomes = outcomes
        self.running = running
        self.channel = channel
        self.stub = routing_pb2_grpc.RoutingServiceStub(channel)

    @classmethod
    async def start(cls, config_dir: Path, data_dir: Path, clock: SimClock) -> SimService:
        live = LiveRouter.from_directory(config_dir)
        outcomes = open_outcomes(live, data_dir, clock.wall, clock.monotonic)
        running = await start_server(live, outcomes, "127.0.0.1:0", str(data_dir), tick_guardrails=False)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        return cls(live, outcomes, running, channel)

    async def stop(self) -> None:
        """A graceful stop, as SIGTERM gives: in-flight calls finish, the ledger drains."""
        await self.channel.close()
        await self.running.stop(grace_s=1.0)
        self.outcomes.store.close()
