"""The fleet simulator: simulated lanes drive the real service over gRPC, in simulated time.

A discrete-event loop: task arrivals, model calls finishing, stop-loss checks and the scenario's
service events sit in one queue ordered by simulated time, and are handled one at a time, each
gRPC call awaited before the next event. So the same seed gives the same run, and an hour of
traffic takes as long as its calls do, not an hour.

A lane does what a real one does: Route, call the chosen model, Report what happened; when the
call fails it Routes again naming the decision's next alternative (a fresh decision, so its cost
is reserved like any other), up to its attempt limit. A Route refused for budget drops the task.

A scenario with [[compare]] runs its traffic once per entry, each on its own service, config, ledger
and clock, all in one event loop (one run's calls overlap another's waits): the same seed gives every
run the same tasks at the same instants and the same draws of the hidden truths, so the runs differ
only where their policies decide differently.

With [access] enabled each lane sends its own lane's token, and the simulator's own calls the
operator's. An intruder ([[events]] of kind forge, forge.py) acts in one instant among the lanes:
its forged reports name decision ids the service never made and real decisions of other lanes.

With [service] replicas of 2 or more (replicas.py), the lanes' Routes go to the replicas in turn and
each Report to the replica after the one that routed it; restarts and reloads reach every replica,
an intruder's calls each the next one. Shared replicas get a Redis of their own for the run, and
after every call the simulator waits until each replica has applied what the others published.

An operator ([[events]] of kind operate) pauses or resumes a lane or closes a model's circuit with
one call to one replica (each call to the next in turn); the other replicas follow the shared ledger
at their next check, as they do in production: the simulator does not carry the call to them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import logging
import math
import random
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.config.load import ConfigProblem
from orxaq_grpc.config.model import token_digest
from orxaq_grpc.simulate.expectations import judge, judge_versus
from orxaq_grpc.simulate.forge import Calls, Intruder, Metadata, bearer, read_books
from orxaq_grpc.simulate.kpis import Collector, Operated, Replicated, differences, versus
from orxaq_grpc.simulate.replicas import Replicas, circuit_state, redis_problems, view_of
from orxaq_grpc.simulate.scenario import (
    CLOSE_BREAKER,
    PAUSE_LANE,
    Forge,
    Operate,
    Outage,
    Reload,
    Restart,
    Scenario,
    ScenarioError,
    SimLane,
    TaskMix,
    Variant,
    check_against,
)
from orxaq_grpc.simulate.service import Layer, SimClock, SimService, write_config
from orxaq_grpc.simulate.truth import CallResult, Truths

log = logging.getLogger(__name__)

_OUTCOMES = {
    "success": pb.OUTCOME_SUCCESS,
    "rate_limited": pb.OUTCOME_RATE_LIMITED,
    "timeout": pb.OUTCOME_TIMEOUT,
    "server_error": pb.OUTCOME_SERVER_ERROR,
}
RPC_TIMEOUT_S = 30.0  # real seconds: a hung service fails the run rather than hanging it
RECENT_REPORTED = 1000  # reported decisions kept for intruders to name
BOOKS_WINDOW_S = 30 * 86_400.0  # the widest Economics window: the books of runs no longer than it
Progress = Callable[[float, "Collector"], None]


@dataclass
class _Lane:
    spec: SimLane
    rng: random.Random
    busy: int = 0
    waiting: deque[_Task] = field(default_factory=deque)
    serial: itertools.count[int] = field(default_factory=itertools.count)


@dataclass
class _Task:
    lane: _Lane
    id: str
    mix: TaskMix
    input_tokens: int
    output_tokens: int
    difficulty: float | None
    rng: random.Random
    tried: list[str] = field(default_factory=list)
    alternatives: list[str] = field(default_factory=list)


class Simulation:
    def __init__(
        self,
        scenario: Scenario,
        scenario_path: Path,
        workdir: Path,
        progress: Progress | None = None,
        variant: int | None = None,  # which of the scenario's [[compare]] runs this is
    ) -> None:
        self.scenario = scenario
        self.path = scenario_path
        self.config_dir = workdir / "config"
        self.data_dir = workdir / "data"
        self.clock = SimClock(scenario.start_unix)
        self._config_source = (scenario_path.parent / scenario.policy.config).resolve()
        self._layers: list[Layer] = [("policy.overrides", scenario.policy.overrides)]
        self.variant: Variant | None = None
        if variant is not None:
            self.variant = scenario.compare[variant]
            self._layers.append((f"compare.{variant}.overrides", self.variant.overrides))
        self.config = write_config(self._config_source, self.config_dir, self._layers, scenario_path)
        self._lane_tokens: dict[str, str] = {}
        self._operator: Metadata | None = None
        if scenario.access.enabled:
            self._layers.append(("access", self._credentials()))
            self.config = write_config(self._config_source, self.config_dir, self._layers, scenario_path)
        check_against(scenario, self.config, scenario_path)
        if problems := redis_problems(scenario, scenario_path):
            raise ScenarioError(problems)
        for i, event in enumerate(scenario.events):  # a reload's config is refused now, not mid-run
            if isinstance(event, Reload):
                layers = [*self._layers, (f"events.{i}.overrides", event.overrides)]
                write_config(self._config_source, workdir / f"reload-{i}", layers, scenario_path)
        self.truths = Truths(scenario, self.config)
        self.kpis = Collector(scenario, self.config.policy.breakers.open_s)
        self.kpis.budgets_in_force(0.0, self.config.policy.budgets)
        if self._lane_tokens:
            self.kpis.access = {
                "lane_tokens": sorted(self._lane_tokens),
                "operator_token": True,
                "reads": "open" if self.config.policy.access.reads_open else "token",
            }
        if scenario.service.replicas > 1:
            self.kpis.replicas = Replicated(scenario.service.replicas, scenario.service.shared)
        if scenario.operations():
            # One replica applies an operator's call at once; several take until their next check.
            several = scenario.service.replicas > 1
            follow_s = self.config.policy.stop_loss.check_interval_s if several else 0.0
            self.kpis.operated = Operated(scenario.pauses(), follow_s)
        self._operator_calls = itertools.count()  # which replica the next one goes to
        self._progress = progress
        self._queue: list[tuple[float, int, Callable[[], Any]]] = []
        self._order = itertools.count()
        self._lanes = [
            _Lane(spec, random.Random(f"{scenario.seed}:lane:{spec.name}")) for spec in scenario.lanes
        ]
        self._outages = [i for i, f in enumerate(scenario.faults) if isinstance(f, Outage)]
        # Decision ids from the seed, not uuid4: exploration picks decisions by a hash of their id,
        # so a run that explores is the same run again. One sequence over restarts: ids stay unique.
        ids = random.Random(f"{scenario.seed}:decision-ids")
        self._new_id = lambda: uuid.UUID(int=ids.getrandbits(128), version=4).hex
        self._replicas = Replicas(
            scenario, scenario_path, workdir, self.config_dir, self.data_dir, self.clock, self._new_id
        )
        self._routed_by: dict[str, int] = {}  # decision id: the replica that routed it
        # Real decisions an intruder may name: those in flight, and the last ones reported.
        self._in_flight: dict[str, pb.RouteDecision] = {}
        self._reported: deque[pb.RouteDecision] = deque(maxlen=RECENT_REPORTED)

    def _credentials(self) -> dict[str, Any]:
        """One token per lane of the config and one operator token, drawn from the seed; their
        SHA-256 as the policy's [[access.credentials]]."""
        rng = random.Random(f"{self.scenario.seed}:tokens")

        def token() -> str:
            return f"sim-{rng.getrandbits(192):048x}"

        self._lane_tokens = {lane: token() for lane in self.config.lanes}
        operator = token()
        self._operator = bearer(operator)
        entries = [
            {"name": f"sim-{lane}"[:128], "role": "lane", "lane": lane, "sha256": token_digest(t).hex()}
            for lane, t in self._lane_tokens.items()
        ]
        entries.append({"name": "sim-operator", "role": "operator", "sha256": token_digest(operator).hex()})
        access: dict[str, Any] = {"credentials": entries}
        if self.scenario.access.reads is not None:
            access["reads"] = self.scenario.access.reads
        return {"policy": {"access": access}}

    def _as_lane(self, lane: str) -> Metadata | None:
        token = self._lane_tokens.get(lane)
        return bearer(token) if token else None

    # -- the loop ---------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        await self._replicas.start()
        try:
            for lane in self._lanes:
                self._at(lane.rng.expovariate(lane.spec.arrivals_per_min / 60.0), self._arrive, lane)
            self._at(0.0, self._check)
            for i, event in enumerate(self.scenario.events):
                if isinstance(event, Forge):
                    self._at(event.at_s, self._intrude, i, event)
                elif isinstance(event, Operate):
                    self._at(event.at_s, self._operate, i, event)
                else:
                    self._at(event.at_s, self._service_event, event)
            while self._queue:
                t, _, handler = heapq.heappop(self._queue)
                if t > self.scenario.duration_s:
                    break
                self.clock.t = t
                await handler()
            self.clock.t = self.scenario.duration_s
            await self._check()
            version = self.service.live.current.config.version
            if self.kpis.intrusions and self.scenario.duration_s <= BOOKS_WINDOW_S:
                books = await read_books(self.service.stub, self._operator)
                self.kpis.booked_usd = books.spend_usd
            await self._last_look_at_replicas()
        finally:
            await self._replicas.stop()
        summary = self.kpis.summary(version, time.perf_counter() - started)
        verdicts = judge(self.scenario.expect, summary, self.config.policy.breakers.open_s)
        summary["expectations"] = [dataclasses.asdict(v) for v in verdicts]
        if self.variant is not None:
            summary["run"] = self.variant.name
        return summary

    def _at(self, t: float, handler: Callable[..., Any], *args: Any) -> None:
        heapq.heappush(self._queue, (t, next(self._order), lambda: handler(*args)))

    @property
    def service(self) -> SimService:
        """The first replica (the only one, unless [service] says more): the simulator's own looks."""
        return self._replicas.services[0]

    # -- lanes ------------------------------------------------------------------------

    async def _arrive(self, lane: _Lane) -> None:
        now = self.clock.t
        self._at(now + lane.rng.expovariate(lane.spec.arrivals_per_min / 60.0), self._arrive, lane)
        task = self._new_task(lane)
        self.kpis.arrived += 1
        if lane.busy < lane.spec.agents:
            lane.busy += 1
            await self._attempt(task, "")
        else:
            lane.waiting.append(task)

    def _new_task(self, lane: _Lane) -> _Task:
        rng = lane.rng
        mixes = self.scenario.tasks_of(lane.spec)
        mix = rng.choices(mixes, weights=[m.weight for m in mixes])[0]

        def draw(lo: float, hi: float) -> float:
            return rng.uniform(lo, hi)

        task_id = f"{lane.spec.name}-{next(lane.serial)}"
        return _Task(
            lane=lane,
            id=task_id,
            mix=mix,
            input_tokens=round(draw(mix.input_tokens.lo, mix.input_tokens.hi)),
            output_tokens=round(draw(mix.output_tokens.lo, mix.output_tokens.hi)),
            difficulty=draw(mix.difficulty.lo, mix.difficulty.hi) if mix.difficulty else None,
            rng=random.Random(f"{self.scenario.seed}:task:{task_id}"),
        )

    async def _attempt(self, task: _Task, requested: str) -> None:
        mix = task.mix
        request = pb.RouteRequest(
            lane=task.lane.spec.routes_as,
            requested_model=requested,
            task=pb.Task(
                id=task.id,
                kind=mix.kind,
                title=mix.title,
                prompt=mix.prompt,
                input_tokens=task.input_tokens,
                output_tokens=task.output_tokens,
                difficulty=task.difficulty,
                value_usd=mix.value_usd,
            ),
        )
        replica = self._replicas.next_route()
        service = self._replicas.services[replica]
        began = time.perf_counter()
        try:
            decision = await service.stub.Route(
                request, timeout=RPC_TIMEOUT_S, metadata=self._as_lane(request.lane)
            )
        except grpc.aio.AioRpcError as exc:
            spent = time.perf_counter() - began
            self.kpis.route_wall_s += spent
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise self._refused_by_service(task, "Route", exc) from None
            await self._replicas.settle()  # the refusal is counted, and published
            self._routed_on(replica)
            self.kpis.refused(spent)
            self.kpis.refused_tasks += 1
            self._free(task.lane)
            return
        spent = time.perf_counter() - began
        self.kpis.route_wall_s += spent
        await self._replicas.settle()
        self._routed_on(replica)
        now = self.clock.t
        into = [i for i in self._outages if self._in_outage(i, decision.model, now)]
        leaked = bool(into) and not await self._a_probe(service, decision)
        self.kpis.routed(now, decision, spent, into if leaked else [], task.mix.kind)
        self._in_flight[decision.decision_id] = decision
        self._routed_by[decision.decision_id] = replica
        task.tried.append(decision.model)
        task.alternatives = [m for m in decision.alternatives if m not in task.tried]
        result = self.truths.call(
            task.rng,
            decision.model,
            now,
            task.mix.kind,
            decision.difficulty,
            decision.estimated_cost_usd,
            decision.estimated_latency_s,
        )
        self._at(now + result.latency_s, self._finish, task, decision, result, now)

    def _in_outage(self, index: int, model: str, t: float) -> bool:
        fault = self.scenario.faults[index]
        return self.truths.active(fault, t) and self.truths.affected(fault, model)

    def _routed_on(self, replica: int) -> None:
        if self.kpis.replicas is not None:
            self.kpis.replicas.routes[replica] += 1

    async def _a_probe(self, service: SimService, decision: pb.RouteDecision) -> bool:
        """Whether a decision into an outage was a half-open circuit's probe (what breakers are
        for), rather than one that leaked past closed circuits. The Health of the replica that
        routed it says, as an operator sees it."""
        health = await service.stub.Health(pb.HealthRequest(), timeout=RPC_TIMEOUT_S, metadata=self._operator)
        mine = {("model", decision.model), ("provider", decision.provider)}
        return any((b.scope, b.name) in mine and b.state == "half_open" for b in health.breakers)

    async def _finish(
        self, task: _Task, decision: pb.RouteDecision, result: CallResult, routed_at: float
    ) -> None:
        now = self.clock.t
        passed = result.outcome == "success" and result.validation_passed
        healed = [  # outages whose models answer again: only calls made after they ended count
            i
            for i in self._outages
            if self.truths.affected(self.scenario.faults[i], decision.model)
            and routed_at >= (self.scenario.faults[i].end_s or self.scenario.duration_s)
        ]
        self.kpis.charged(now, decision.lane, decision.provider, result, healed, task.mix.kind)
        report = pb.ReportRequest(
            decision_id=decision.decision_id,
            lane=decision.lane,
            provider=decision.provider,
            model=decision.model,
            input_tokens=decision.input_tokens if result.outcome == "success" else 0,
            output_tokens=decision.output_tokens if result.outcome == "success" else 0,
            latency_s=result.latency_s,
            outcome=_OUTCOMES[result.outcome],
            retry_after_s=result.retry_after_s,
            validation_passed=result.validation_passed,
            first_time_pass=passed and len(task.tried) == 1,
            cost_usd=result.cost_usd,
        )
        routed_by = self._routed_by.pop(decision.decision_id)
        replica = self._replicas.reporter(routed_by)
        try:
            ack = await self._replicas.services[replica].stub.Report(
                report, timeout=RPC_TIMEOUT_S, metadata=self._as_lane(report.lane)
            )
        except grpc.aio.AioRpcError as exc:
            raise self._refused_by_service(task, "Report", exc) from None
        await self._replicas.settle()
        if self.kpis.replicas is not None:
            self.kpis.replicas.reported(now, replica, routed_by, decision.decision_id, ack.decision_known)
            if result.outcome == "rate_limited" and result.retry_after_s > 0:
                states = [
                    await circuit_state(service, self._operator, decision.model, decision.provider)
                    for service in self._replicas.services
                ]
                self.kpis.replicas.rate_limited(now, decision.model, routed_by, replica, states)
        self._reported.append(self._in_flight.pop(decision.decision_id))
        retry = result.outcome != "success" and task.alternatives
        if retry and len(task.tried) < task.lane.spec.max_attempts:
            await self._attempt(task, task.alternatives[0])
            return
        self.kpis.finished(task.mix.kind, passed)
        self._free(task.lane)

    def _free(self, lane: _Lane) -> None:
        """A task ended: the agent takes the next waiting task, if any (as an event of its own, so a
        long queue of refusals is a loop, not a recursion)."""
        if lane.waiting:
            self._at(self.clock.t, self._attempt, lane.waiting.popleft(), "")
        else:
            lane.busy -= 1

    def _refused_by_service(self, task: _Task, rpc: str, exc: grpc.aio.AioRpcError) -> ScenarioError:
        """The service refused what the scenario made a lane send: the scenario's fault, said so."""
        index = self.scenario.lanes.index(task.lane.spec)
        problem = f"the service refused a {rpc} of task {task.id}: {exc.code().name}: {exc.details()}"
        return ScenarioError([ConfigProblem(str(self.path), f"lanes.{index}", problem)])

    # -- the service ------------------------------------------------------------------

    async def _check(self) -> None:
        """What the server's own timer does every check_interval_s, on simulated time; then a look
        at Health for the figures."""
        for service in self._replicas.services:
            service.outcomes.check()
        health = await self.service.stub.Health(
            pb.HealthRequest(), timeout=RPC_TIMEOUT_S, metadata=self._operator
        )
        self.kpis.observed(self.clock.t, health)
        if self.kpis.replicas is not None:
            views = [await view_of(service, self._operator) for service in self._replicas.services]
            self.kpis.replicas.compared(self.clock.t, differences(views))
        if self._progress is not None:
            self._progress(self.clock.t, self.kpis)
        interval = self.service.live.current.config.policy.stop_loss.check_interval_s
        self._at(self.clock.t + interval, self._check)

    async def _service_event(self, event: Restart | Reload) -> None:
        now = self.clock.t
        if isinstance(event, Restart):
            health = await self.service.stub.Health(
                pb.HealthRequest(), timeout=RPC_TIMEOUT_S, metadata=self._operator
            )
            self.kpis.observed(now, health)
            self.kpis.restarted(now)
            await self._replicas.restart()
            return
        before = self.service.live.current.config.version
        index = self.scenario.events.index(event)
        layers = [*self._layers, (f"events.{index}.overrides", event.overrides)]
        intended = write_config(self._config_source, self.config_dir, layers, self.path)
        # Budgets are judged on the limits the scenario set, whether or not the service took them.
        self.kpis.budgets_in_force(now, intended.policy.budgets)
        reloaded = True
        for service in self._replicas.services:  # what SIGHUP runs, on every replica
            reloaded &= bool(await asyncio.to_thread(service.live.reload))
        after = self.service.live.current.config.version
        self.kpis.events.append(
            {"at_s": round(now, 3), "event": "reload", "applied": reloaded, "config": f"{before} -> {after}"}
        )

    async def _intrude(self, index: int, forge: Forge) -> None:
        """An intruder's burst, in this one instant: the service's books read before and after."""
        intruder = Intruder(index, forge, self.scenario, self.config, self._lane_tokens)
        record = intruder.record
        self.kpis.events.append({"at_s": round(self.clock.t, 3), "event": "forge", "name": record.name})
        # Several replicas: each of its calls (the books' readings too) to the next one in turn.
        stub: Calls = self._replicas.round_robin() if self._replicas.count > 1 else self.service.stub
        record.before = await read_books(stub, self._operator)
        victims = [(d, True) for d in reversed(self._in_flight.values())]
        victims += [(d, False) for d in reversed(self._reported)]
        await intruder.attack(stub, victims)
        record.after = await read_books(stub, self._operator)
        self.kpis.intrusions.append(record)

    async def _operate(self, index: int, call: Operate) -> None:
        """An operator's call to one replica, each call to the next in turn; the others follow it from
        the shared ledger at their next check (replicas sharing nothing never do)."""
        replica = next(self._operator_calls) % self._replicas.count
        service = self._replicas.services[replica]
        note = call.note or f"scenario {self.scenario.name}, events.{index}"
        circuit = ("", 0.0)
        stub, operator = service.stub, self._operator
        try:
            if call.action == CLOSE_BREAKER:
                circuit = self._circuit(service, "model", call.model)
                close = pb.CloseBreakerRequest(scope="model", name=call.model, note=note)
                answer = await stub.CloseBreaker(close, timeout=RPC_TIMEOUT_S, metadata=operator)
            else:
                pause = pb.PauseLaneRequest(lane=call.lane, paused=call.action == PAUSE_LANE, note=note)
                answer = await stub.PauseLane(pause, timeout=RPC_TIMEOUT_S, metadata=operator)
        except grpc.aio.AioRpcError as exc:
            problem = f"the service refused {call.action}: {exc.code().name}: {exc.details()}"
            raise ScenarioError([ConfigProblem(str(self.path), f"events.{index}", problem)]) from None
        await self._replicas.settle()
        self.kpis.operator_called(self.clock.t, call, replica, answer.changed, circuit)

    def _circuit(self, service: SimService, scope: str, name: str) -> tuple[str, float]:
        """A replica's circuit, read in process just before the call: its state and the simulated
        seconds until it would let a probe through."""
        view = service.outcomes.breakers.view_of(scope, name)
        if view is None:
            return "closed", 0.0
        reopens_at = view.reopens_at if view.reopens_at is not None else -math.inf
        return view.state.value, max(0.0, reopens_at - self.clock.monotonic())

    async def _last_look_at_replicas(self) -> None:
        """Every replica's views at the end, what each published and applied, and what is in flight."""
        figures = self.kpis.replicas
        if figures is None:
            return
        services = self._replicas.services
        figures.final = [await view_of(service, self._operator) for service in services]
        for service in services:
            if service.outcomes.shared is not None:
                status = service.outcomes.shared.status()
                figures.links.append({"published": status.published, "applied": status.applied})
        figures.in_flight = len(self._in_flight)
        figures.in_flight_usd = sum(d.estimated_cost_usd for d in self._in_flight.values())
        figures.exchange = self._replicas.exchange.summary()


def run_scenario(scenario: Scenario, scenario_path: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Runs one scenario on a fresh ledger in a temporary directory (in memory where the system
    has a tmpfs: the simulated fleet writes a ledger as fast as the service can take it). With
    [[compare]] runs: each of them, side by side, and the comparison."""
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(prefix="orxaq-sim-", dir=shm if shm.is_dir() else None) as workdir:
        if not scenario.compare:
            simulation = Simulation(scenario, scenario_path, Path(workdir), progress)
            return asyncio.run(simulation.run())
        return asyncio.run(_compare(scenario, scenario_path, Path(workdir), progress))


async def _compare(
    scenario: Scenario, scenario_path: Path, workdir: Path, progress: Progress | None
) -> dict[str, Any]:
    started = time.perf_counter()
    runs: list[Simulation] = []

    def slowest(_: float, __: Collector) -> None:
        """Progress is the run furthest behind."""
        if progress is not None:
            behind = min(runs, key=lambda run: run.clock.t)
            progress(behind.clock.t, behind.kpis)

    for i in range(len(scenario.compare)):
        runs.append(Simulation(scenario, scenario_path, workdir / f"run-{i}", slowest, variant=i))
    tasks = [asyncio.ensure_future(run.run()) for run in runs]
    try:
        summaries = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:  # one run failed: the others stop too, their services shut down
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    by_name = {variant.name: summary for variant, summary in zip(scenario.compare, summaries, strict=True)}
    baseline, candidate = scenario.versus_runs()
    side_by_side = versus(by_name, baseline, candidate)
    verdicts = [
        {**verdict, "name": f"{name}: {verdict['name']}"}
        for name, summary in by_name.items()
        for verdict in summary["expectations"]
    ]
    if scenario.expect.versus is not None:
        verdicts += [dataclasses.asdict(v) for v in judge_versus(scenario.expect.versus, side_by_side)]
    return {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "duration_s": scenario.duration_s,
        "compare": [{"name": v.name, "overrides": v.overrides} for v in scenario.compare],
        "runs": by_name,
        "versus": side_by_side,
        "expectations": verdicts,
        "wall_s": round(time.perf_counter() - started, 3),
    }
