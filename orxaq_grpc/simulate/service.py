"""The real service, run in-process on a simulated clock, and the config directory it runs on.

Everything that decides is the service's own: the same server, servicer, Outcomes, breakers,
budgets, detection and stop-loss, reached over gRPC on loopback. Only time is simulated: the
ledger, the economics windows, budgets and breakers read the simulator's clock, and the
stop-loss checks run every `check_interval_s` of simulated time instead of on a timer.
"""

from __future__ import annotations

import shutil
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import tomli_w

from orxaq.routing.v1 import routing_pb2_grpc
from orxaq_grpc.application.outcomes import Outcomes
from orxaq_grpc.config.load import (
    CATALOG_FILE,
    LANES_FILE,
    POLICY_FILE,
    ConfigError,
    ConfigProblem,
    load_config,
)
from orxaq_grpc.config.model import Config
from orxaq_grpc.routing.live import LiveRouter
from orxaq_grpc.routing.router import Router
from orxaq_grpc.service.server import RunningServer, open_outcomes, start_server
from orxaq_grpc.simulate.scenario import Overrides, ScenarioError, merge_overrides

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


Layer = tuple[str, Overrides]  # where in the scenario the overrides are ("policy.overrides"), and them


def write_config(source: Path, target: Path, layers: Sequence[Layer], scenario_path: Path) -> Config:
    """Copies the three config files from `source` into `target` with `layers` of overrides merged
    in ({"policy": {...}, "lanes": {...}, "catalog": {"models": {id: {...}}}}) and loads them.
    A layer the config cannot take is refused with the scenario's path, where the layer is, and
    the config's own words."""

    def refused(field: str, problem: str) -> ScenarioError:
        return ScenarioError([ConfigProblem(str(scenario_path), field, problem)])

    target.mkdir(parents=True, exist_ok=True)
    for where, layer in layers:
        for key, patch in layer.items():
            if key not in _FILES:
                raise refused(f"{where}.{key}", f"is not a config file; use one of {', '.join(_FILES)}")
            if not isinstance(patch, dict):
                raise refused(f"{where}.{key}", "must be a table")
    for key, name in _FILES.items():
        path = source / name
        patches = [(where, layer[key]) for where, layer in layers if key in layer]
        try:
            if not patches:
                shutil.copyfile(path, target / name)
                continue
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise refused("policy.config", f"{path}: cannot be read: {exc}") from None
        for where, patch in patches:
            if key == "catalog":
                data = _patch_catalog(data, patch, f"{where}.catalog", refused)
            else:
                data = merge_overrides(data, patch)
        (target / name).write_text(tomli_w.dumps(data), encoding="utf-8")
    try:
        return load_config(target)
    except ConfigError as exc:
        where = " and ".join(where for where, _ in layers if _) or "policy.config"
        raise ScenarioError(
            [
                ConfigProblem(
                    str(scenario_path),
                    where,
                    f"{Path(p.path).name}: {p.field + ': ' if p.field else ''}{p.problem}",
                )
                for p in exc.problems
            ]
        ) from None


def _patch_catalog(
    data: dict[str, Any], patch: dict[str, Any], where: str, refused: Callable[[str, str], ScenarioError]
) -> dict[str, Any]:
    """Catalog models are an array; overrides name them by id, and only ids the catalog has."""
    by_id = patch.get("models", {})
    if not isinstance(by_id, dict) or not all(isinstance(v, dict) for v in by_id.values()):
        raise refused(f"{where}.models", "must be a table of models by id, each a table")
    known = {m.get("id") for m in data.get("models", [])}
    if unknown := sorted(set(by_id) - known):
        raise refused(f"{where}.models.{unknown[0]}", "is not a model of the catalog")
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
        self.stub = routing_pb2_grpc.RoutingServiceStub(channel)  # type: ignore[no-untyped-call]  # generated

    @classmethod
    async def start(
        cls,
        config_dir: Path,
        data_dir: Path,
        clock: SimClock,
        new_id: Callable[[], str] | None = None,
        shared: str | None = None,
    ) -> SimService:
        """`new_id` gives the decision ids (default: the router's own, random); `shared` is the Redis
        URL of replicas sharing state (serve --shared)."""
        config = load_config(config_dir)
        live = LiveRouter(Router(config) if new_id is None else Router(config, new_id=new_id))
        outcomes = open_outcomes(live, data_dir, clock.wall, clock.monotonic, shared=shared)
        try:
            running = await start_server(live, outcomes, "127.0.0.1:0", str(data_dir), tick_guardrails=False)
        except BaseException:
            outcomes.close()
            raise
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        return cls(live, outcomes, running, channel)

    async def stop(self) -> None:
        """A graceful stop, as SIGTERM gives: in-flight calls finish, the ledger drains."""
        await self.channel.close()
        await self.running.stop(grace_s=1.0)
        self.outcomes.close()
