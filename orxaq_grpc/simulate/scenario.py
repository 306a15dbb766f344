"""The fleet simulator's scenario file (TOML): lanes and their tasks, hidden model truths, provider
faults over time, service events, the policy to try (or several, compared on the same traffic), and
how many replicas of the service the lanes reach.

Validated by pydantic models with bounds beside their fields; unknown fields are errors. A bad file
is refused with every problem at once, each naming the file, the dotted field and what is wrong,
the way `check-config` reports a bad config.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from orxaq_grpc.config.load import ConfigProblem
from orxaq_grpc.config.model import Config
from orxaq_grpc.outcomes.validation import MAX_REPORTED_COST_USD

NonNegative = Annotated[float, Field(ge=0)]
Share = Annotated[float, Field(ge=0, le=1)]
Overrides = dict[str, Any]  # merged into the config files: {"policy": {...}, "lanes": {...}}


class ScenarioError(Exception):
    """A scenario that cannot be run; `problems` lists every reason."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Range(_Strict):
    """A figure drawn uniformly from [lo, hi] per task; a bare number in the file means lo == hi."""

    lo: NonNegative
    hi: NonNegative

    @model_validator(mode="before")
    @classmethod
    def _from_number_or_pair(cls, data: Any) -> Any:
        if isinstance(data, int | float) and not isinstance(data, bool):
            return {"lo": data, "hi": data}
        if isinstance(data, list):
            if len(data) != 2:
                raise ValueError("give a number or a [lo, hi] pair")
            return {"lo": data[0], "hi": data[1]}
        return data

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.lo > self.hi:
            raise ValueError(f"lo {self.lo:g} is above hi {self.hi:g}")
        return self


class TaskMix(_Strict):
    """One kind of task a lane runs, drawn with probability weight / total weight."""

    kind: str = ""
    title: str = Field(min_length=1)
    prompt: str = ""
    weight: float = Field(default=1.0, gt=0)
    input_tokens: Range = Range(lo=20_000, hi=20_000)
    output_tokens: Range = Range(lo=2_000, hi=2_000)
    difficulty: Range | None = None  # absent: the service estimates it from the text
    value_usd: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _difficulty_is_a_score(self) -> TaskMix:
        if self.difficulty is not None and self.difficulty.hi > 100:
            raise ValueError(f"difficulty {self.difficulty.hi:g} is past 100")
        return self


class SimLane(_Strict):
    """A group of agents routing as one configured lane."""

    name: str = Field(min_length=1)
    lane: str = ""  # the configured lane they route as; default: name
    agents: int = Field(default=1, ge=1, le=1000)  # tasks in flight at once
    arrivals_per_min: float = Field(gt=0, le=60_000)  # Poisson arrivals; a busy lane queues them
    max_attempts: int = Field(default=3, ge=1, le=10)  # the chosen model, then its alternatives
    tasks: tuple[TaskMix, ...] = ()  # empty: the scenario's own task mix

    @property
    def routes_as(self) -> str:
        return self.lane or self.name


class ModelTruth(_Strict):
    """What a model really does, hidden from the service. Its chance that an answer passes validation
    is `kinds[task kind]`, else `pass_rate`, else catalog quality / 100; less `difficulty_slope` for
    hard tasks; a quality fault replaces it while it lasts."""

    pass_rate: Share | None = None
    kinds: dict[str, Share] = {}  # per task kind, e.g. { docs = 0.95, architecture = 0.30 }
    difficulty_slope: Share = 0.2  # the pass rate falls by this much from difficulty 50 to 100
    latency_factor: float = Field(default=1.0, gt=0, le=100)  # x the catalog's expected latency
    latency_spread: float = Field(default=0.25, ge=0, le=3)  # sigma of a log-normal around it
    cost_factor: float = Field(default=1.0, gt=0, le=100)  # actual cost / the service's estimate


class _Fault(_Strict):
    provider: str = ""
    model: str = ""  # neither: every model
    start_s: NonNegative = 0.0
    end_s: float | None = Field(default=None, gt=0)  # default: the end of the run

    @model_validator(mode="after")
    def _window(self) -> _Fault:
        if self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError(f"end_s {self.end_s:g} is not after start_s {self.start_s:g}")
        if self.provider and self.model:
            raise ValueError("name a provider or a model, not both")
        return self


class RateLimit(_Fault):
    kind: Literal["rate_limit"]
    share: Share  # of calls answered 429
    retry_after_s: float = Field(default=5.0, ge=0, le=86_400)


class Outage(_Fault):
    kind: Literal["outage"]
    share: Share = 1.0  # of calls that fail
    error: Literal["server_error", "timeout"] = "server_error"


class Slowdown(_Fault):
    kind: Literal["slowdown"]
    factor: float = Field(gt=0, le=100)  # latency x this


class QualityRegression(_Fault):
    kind: Literal["quality"]
    pass_rate: Share  # the model's pass rate while it lasts


class PriceChange(_Fault):
    kind: Literal["price"]
    factor: float = Field(gt=0, le=100)  # actual cost x this


Fault = Annotated[
    RateLimit | Outage | Slowdown | QualityRegression | PriceChange, Field(discriminator="kind")
]


class Restart(_Strict):
    kind: Literal["restart"]
    at_s: float = Field(gt=0)


class Reload(_Strict):
    kind: Literal["reload"]
    at_s: float = Field(gt=0)
    overrides: Overrides = Field(min_length=1)  # on top of the policy's, then SIGHUP's reload


NO_TOKEN, UNKNOWN_TOKEN, LANE_TOKEN = "none", "unknown", "lane:"


class Forge(_Strict):
    """An intruder's burst of calls at `at_s`, all in that one instant of simulated time (no lane
    acts in between, so whatever the service's books, budgets, breakers and stop-loss show moved
    across it, the intruder moved). It sends:

    - `unknown_reports` reports for decision ids the service never made, each claiming
      `claimed_cost_usd`; a third rate limited with the longest retry-after a report may carry, a
      third server errors, a third failed validation;
    - `cross_lane_reports` reports of real decisions of other lanes than its own (those still in
      flight first, newest first, then the newest already reported), with the same claims, naming
      the victim decision's lane, or, with a lane's stolen token, every other one its own lane;
    - with `scale_and_stop_loss`: SetStopLoss(active=false), a Scale of a lane (its own, or the
      scenario's first) by one agent for $1M a day of value, then SetStopLoss(active=true).

    `credential`: "none" (no token), "unknown" (a token the service never issued) or
    "lane:<lane id>" (that lane's token, stolen; with [access] off there is none to steal, and the
    intruder only names that lane as its own)."""

    kind: Literal["forge"]
    at_s: float = Field(gt=0)
    name: str = Field(default="", max_length=40)  # how the KPIs name it; default "events.<index>"
    credential: str = NO_TOKEN
    unknown_reports: int = Field(default=0, ge=0, le=10_000)
    cross_lane_reports: int = Field(default=0, ge=0, le=10_000)
    scale_and_stop_loss: bool = False
    claimed_cost_usd: float = Field(default=MAX_REPORTED_COST_USD, ge=0, le=MAX_REPORTED_COST_USD)

    @field_validator("credential")
    @classmethod
    def _a_credential(cls, value: str) -> str:
        if value in (NO_TOKEN, UNKNOWN_TOKEN) or (value.startswith(LANE_TOKEN) and value[len(LANE_TOKEN) :]):
            return value
        raise ValueError(f'{value!r} is not "none", "unknown" or "lane:<lane id>"')

    @model_validator(mode="after")
    def _does_something(self) -> Forge:
        if not (self.unknown_reports or self.cross_lane_reports or self.scale_and_stop_loss):
            raise ValueError(
                "the intruder sends nothing: give unknown_reports, cross_lane_reports or scale_and_stop_loss"
            )
        return self

    @property
    def lane(self) -> str:
        """The lane whose token it holds, or ""."""
        return self.credential.removeprefix(LANE_TOKEN) if self.credential.startswith(LANE_TOKEN) else ""


PAUSE_LANE, RESUME_LANE, CLOSE_BREAKER = "pause_lane", "resume_lane", "close_breaker"


class Operate(_Strict):
    """An operator's call at `at_s`, over gRPC with the operator's token (with [access] on): PauseLane
    of `lane` (every decision of it then its static chain, reason lane_paused), the resume of a lane an
    earlier event paused, or CloseBreaker of `model`'s circuit. It reaches one replica; the others
    follow the shared ledger at their next check. `note` says why, for the ledger (default: the
    scenario and the event)."""

    kind: Literal["operate"]
    at_s: float = Field(gt=0)
    action: Literal["pause_lane", "resume_lane", "close_breaker"]
    lane: str = ""  # a configured lane, for pause_lane and resume_lane
    model: str = ""  # a catalog model, for close_breaker
    note: str = ""

    @property
    def target(self) -> str:
        """As the service's operator actions name it: the lane, or "model:NAME"."""
        return f"model:{self.model}" if self.action == CLOSE_BREAKER else self.lane


@dataclass(frozen=True, slots=True)
class Pause:
    """A lane paused by one event until the event that resumes it (None: to the end of the run)."""

    lane: str
    from_s: float
    to_s: float | None


Event = Annotated[Restart | Reload | Forge | Operate, Field(discriminator="kind")]


class AccessToTry(_Strict):
    """Credentials for the run. Enabled, the simulator makes one random token (drawn from the seed,
    so the same seed gives the same run) per lane of the config and one operator token, writes
    their SHA-256 into the run's policy as [[access.credentials]] (replacing any it has), and each
    simulated lane sends its own lane's token; the simulator's own Health and Economics calls send
    the operator's."""

    enabled: bool = False
    reads: Literal["open", "token"] | None = None  # default: the config's own


class Versus(_Strict):
    """One [[compare]] run (the candidate) against another (the baseline), on the same traffic."""

    baseline: str = ""  # a [[compare]] run's name; default the first
    candidate: str = ""  # default the last
    # The candidate's cost per passed task at least this share below the baseline's ...
    min_cost_per_pass_cut: float | None = Field(default=None, ge=-1, le=1)
    # ... at a pass rate at least the baseline's plus this (0: equal or better; -0.01: a point lower).
    min_pass_rate_gain: float | None = Field(default=None, ge=-1, le=1)


class Expectations(_Strict):
    """What must hold at the end of the run; `simulate` exits 1 when any does not."""

    max_overspend_estimates: float | None = Field(default=None, ge=0)  # per budget, in request estimates
    min_scored_share: Share | None = None  # of decisions: scored, strong-or-weak or requested
    max_stop_loss_s: float | None = Field(default=None, ge=0)
    stop_loss_trigger: str = ""  # stop-loss must enter on this trigger ...
    stop_loss_ends_by_itself: bool = False  # ... and every episode end by its cool-off
    # After a provider's outage starts. One model's outage is found at that model's own pace (its
    # circuit needs `consecutive_failures` of its calls), so no bound of seconds fits every fleet.
    max_routed_around_s: float | None = Field(default=None, ge=0)
    traffic_back_after_open_s: bool = False  # within open_s plus the probe's call after it ends
    no_provider_breaker: bool = False  # no provider circuit ever opens ...
    providers_never_open: tuple[str, ...] = ()  # ... or none of these
    stop_loss_only_after_a_fault: bool = False  # no stop-loss enters before the first fault starts
    # Over the intruders' bursts ([[events]] of kind forge): at most this many of their calls taken
    # into steering (a report the service booked, an operator call it answered) ...
    max_forgeries_accepted: int | None = Field(default=None, ge=0)
    # ... and across every burst no spend, budget, breaker or stop-loss moved, and at the end the
    # service's books match what the providers charged.
    forgery_moves_nothing: bool = False
    # With [service] replicas of 2 or more: the replicas' Economics (today's decisions, reports and
    # spend) and Health (open breakers, budgets, stop-loss) the same on each, at every stop-loss
    # check and at the end ...
    replicas_agree: bool = False
    # ... every lane's report (sent to another replica than the one that routed it) known there,
    # and at the end the reservations held those of the decisions still in flight ...
    reports_known_on_any_replica: bool = False
    # ... and every rate limit reported to one replica blocking its model on all of them.
    rate_limits_block_everywhere: bool = False
    # Over the operator's calls ([[events]] of kind operate): every decision of a paused lane, from its
    # pause (plus, with several replicas, one stop-loss check interval: the others follow the shared
    # ledger at their next check) to its resume, lane_paused on its static chain; none after the resume
    # (the same grace); and from the first pause on, no stop-loss on router_unstable and the overall
    # detection state never degraded or elevated_fallback: a pause is deliberate, not an unstable router.
    paused_lanes_pinned: bool = False
    # Each model whose open circuit an operator closed is routed again before that circuit would have
    # let a probe through by itself.
    closed_breakers_take_traffic: bool = False
    versus: Versus | None = None  # with [[compare]]: one run against another


MAX_REPLICAS = 8


class ServiceToRun(_Strict):
    """How many replicas of the service the lanes reach. With two or more and `shared`, the
    simulator starts a throwaway `redis-server` (from PATH) for the run and every replica shares it
    (serve --shared) and one ledger: budgets reserved atomically in Redis, each replica's decisions
    and reports counted by all. Without `shared`, each replica is alone: its own ledger, budgets,
    economics and breakers (what N replicas without --shared would be). Either way each Route goes
    to the next replica in turn and its Report to the one after it."""

    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    shared: bool = True


class PolicyToTry(_Strict):
    config: str = "."  # a config directory, relative to the scenario file
    overrides: Overrides = {}


class Variant(_Strict):
    """One run of a comparison: the scenario's policy with these overrides on top."""

    name: str = Field(min_length=1, max_length=40)
    overrides: Overrides = {}  # like policy.overrides: {"policy": {"learning": {"mode": "off"}}}


class Scenario(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    seed: int = 1
    duration_s: float = Field(gt=0, le=31 * 86_400)
    start: dt.datetime = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)  # the simulated clock's first instant
    call_timeout_s: float = Field(default=120.0, gt=0, le=86_400)  # how long a timed-out call took
    policy: PolicyToTry = PolicyToTry()
    service: ServiceToRun = ServiceToRun()
    access: AccessToTry = AccessToTry()
    # Two or more runs of the same seeded traffic, one per entry, side by side; KPIs per run, over time.
    compare: tuple[Variant, ...] = ()
    tasks: tuple[TaskMix, ...] = ()  # every lane's task mix, unless the lane has its own
    lanes: tuple[SimLane, ...] = Field(min_length=1)
    models: dict[str, ModelTruth] = {}
    faults: tuple[Fault, ...] = ()
    events: tuple[Event, ...] = ()
    expect: Expectations = Expectations()

    @model_validator(mode="after")
    def _every_lane_has_tasks(self) -> Scenario:
        if not self.tasks and (bare := [lane.name for lane in self.lanes if not lane.tasks]):
            raise PydanticCustomError(
                "no_tasks",
                "lanes {bare} have no tasks of their own and the scenario gives none",
                {"bare": ", ".join(bare)},
            )
        return self

    def tasks_of(self, lane: SimLane) -> tuple[TaskMix, ...]:
        return lane.tasks or self.tasks

    @property
    def start_unix(self) -> float:
        start = self.start if self.start.tzinfo else self.start.replace(tzinfo=dt.UTC)
        return start.timestamp()

    def truth(self, model: str) -> ModelTruth:
        return self.models.get(model) or ModelTruth()

    def kinds(self) -> list[str]:
        """Every task kind the lanes run, in the order the file gives them."""
        mixes = [*self.tasks, *(mix for lane in self.lanes for mix in lane.tasks)]
        return list(dict.fromkeys(mix.kind for mix in mixes))

    def forges(self) -> list[tuple[int, Forge]]:
        """The intruders, with their index among the events."""
        return [(i, event) for i, event in enumerate(self.events) if isinstance(event, Forge)]

    def operations(self) -> list[tuple[int, Operate]]:
        """The operator's calls with their index among the events, in the order they run."""
        found = [(i, event) for i, event in enumerate(self.events) if isinstance(event, Operate)]
        return sorted(found, key=lambda item: (item[1].at_s, item[0]))

    def pauses(self) -> list[Pause]:
        """Each lane's pauses, from its pause_lane to the resume_lane after it, in time order."""
        paused: dict[str, float] = {}
        found = []
        for _, call in self.operations():
            if call.action == PAUSE_LANE:
                paused.setdefault(call.lane, call.at_s)
            elif call.action == RESUME_LANE and call.lane in paused:
                found.append(Pause(call.lane, paused.pop(call.lane), call.at_s))
        found += [Pause(lane, at_s, None) for lane, at_s in paused.items()]
        return sorted(found, key=lambda pause: (pause.from_s, pause.lane))

    def versus_runs(self) -> tuple[str, str]:
        """The baseline's and the candidate's names, for `expect.versus` (with [[compare]] runs)."""
        versus = self.expect.versus or Versus()
        return (
            versus.baseline or self.compare[0].name,
            versus.candidate or self.compare[-1].name,
        )


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Tables merge key by key, arrays of tables item by index ("faults.0.share"); anything else
    replaces."""
    merged = dict(base)
    for key, value in overrides.items():
        current = merged.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merged[key] = _merge(current, value)
        elif isinstance(value, dict) and isinstance(current, list) and all(k.isdigit() for k in value):
            items = list(current)
            for index, patch in value.items():
                at = int(index)
                if at < len(items) and isinstance(items[at], dict) and isinstance(patch, dict):
                    items[at] = _merge(items[at], patch)
                elif at < len(items):
                    items[at] = patch
                else:
                    raise ScenarioError(
                        [ConfigProblem("--set", f"{key}.{index}", f"{key} has {len(items)} items")]
                    )
            merged[key] = items
        else:
            merged[key] = value
    return merged


merge_overrides = _merge


def load_scenario(path: str | Path, overrides: dict[str, Any] | None = None) -> Scenario:
    """Reads and validates a scenario file; `overrides` (from the command line) merge over it."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError([ConfigProblem(str(path), "", exc.strerror or str(exc))]) from None
    except UnicodeDecodeError as exc:
        raise ScenarioError([ConfigProblem(str(path), "", f"not UTF-8 text: {exc}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError([ConfigProblem(str(path), "", f"not valid TOML: {exc}")]) from None
    if overrides:
        data = _merge(data, overrides)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(path, error) for error in exc.errors()]
        # A table whose items failed is also reported as too short: its items already say why.
        deeper = {p.field.rsplit(".", n)[0] for p in problems for n in range(1, p.field.count(".") + 1)}
        raise ScenarioError([p for p in problems if p.field not in deeper]) from None
    if problems := _inconsistencies(scenario, path):
        raise ScenarioError(problems)
    return scenario


def _inconsistencies(scenario: Scenario, path: Path) -> list[ConfigProblem]:
    """What each field allows but the fields together do not: truths for kinds no task has (a typo
    would silently leave the catalog's quality in force), and comparisons that name no run."""
    problems: list[ConfigProblem] = []

    def problem(field: str, text: str) -> None:
        problems.append(ConfigProblem(str(path), field, text))

    kinds = scenario.kinds()
    for model, truth in scenario.models.items():
        for kind in truth.kinds:
            if kind not in kinds:
                known = ", ".join(repr(k) for k in kinds)
                problem(f"models.{model}.kinds.{kind}", f"no task has kind {kind!r} (the tasks': {known})")
    names = [variant.name for variant in scenario.compare]
    for i, name in enumerate(names):
        if name in names[:i]:
            problem(f"compare.{i}.name", f"{name!r} is used twice")
    if len(names) == 1:
        problem("compare", "one run compares with nothing: give two or more")
    versus = scenario.expect.versus
    if versus is not None and len(names) < 2:
        problem("expect.versus", "needs two or more [[compare]] runs")
    elif versus is not None:
        for field in ("baseline", "candidate"):
            name = getattr(versus, field)
            if name and name not in names:
                problem(f"expect.versus.{field}", f"{name!r} is not a [[compare]] run ({', '.join(names)})")
        baseline, candidate = scenario.versus_runs()
        if baseline == candidate:
            problem("expect.versus", f"compares {baseline!r} with itself")
    forges = scenario.forges()
    expect = scenario.expect
    for field, given in (
        ("max_forgeries_accepted", expect.max_forgeries_accepted is not None),
        ("forgery_moves_nothing", expect.forgery_moves_nothing),
    ):
        if given and not forges:
            problem(f"expect.{field}", 'no [[events]] of kind "forge" to judge it on')
    actions = {call.action for _, call in scenario.operations()}
    for field, given, action in (
        ("paused_lanes_pinned", expect.paused_lanes_pinned, PAUSE_LANE),
        ("closed_breakers_take_traffic", expect.closed_breakers_take_traffic, CLOSE_BREAKER),
    ):
        if given and action not in actions:
            problem(
                f"expect.{field}", f'no [[events]] of kind "operate" with action "{action}" to judge it on'
            )
    for field, text in _operation_problems(scenario):
        problem(field, text)
    for field, given in (
        ("replicas_agree", expect.replicas_agree),
        ("reports_known_on_any_replica", expect.reports_known_on_any_replica),
        ("rate_limits_block_everywhere", expect.rate_limits_block_everywhere),
    ):
        if given and scenario.service.replicas < 2:
            problem(f"expect.{field}", "needs [service] replicas of 2 or more")
    named: dict[str, int] = {}
    for i, forge in forges:
        if forge.name and named.setdefault(forge.name, i) != i:
            problem(f"events.{i}.name", f"{forge.name!r} is also events.{named[forge.name]}'s name")
    return problems


def _operation_problems(scenario: Scenario) -> list[tuple[str, str]]:
    """Each operator call names what its action acts on, and nothing else; a lane is paused before it
    is resumed, and not paused twice over."""
    problems = []
    paused: dict[str, int] = {}  # lane: the event that paused it
    for i, call in scenario.operations():
        needs, not_for = ("model", "lane") if call.action == CLOSE_BREAKER else ("lane", "model")
        if not getattr(call, needs):
            problems.append((f"events.{i}.{needs}", f"{call.action} needs a {needs}"))
        if getattr(call, not_for):
            problems.append((f"events.{i}.{not_for}", f"{call.action} takes no {not_for}"))
        if not call.lane or call.action == CLOSE_BREAKER:
            continue
        if call.action == PAUSE_LANE and call.lane in paused:
            problems.append(
                (f"events.{i}.lane", f"{call.lane!r} is paused already, by events.{paused[call.lane]}")
            )
        elif call.action == RESUME_LANE and call.lane not in paused:
            problems.append((f"events.{i}.lane", f"no pause_lane of {call.lane!r} before it to resume"))
        if call.action == PAUSE_LANE:
            paused.setdefault(call.lane, i)
        else:
            paused.pop(call.lane, None)
    return problems


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """`field.path=value` pairs (values in TOML syntax; a bare word is a string) as nested tables. The
    path is a TOML dotted key: a part with a dot in it is quoted (`models."qwen3.6-27b".pass_rate=0.9`)."""
    merged: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or not key.strip():
            raise ScenarioError([ConfigProblem("--set", assignment, "expected FIELD=VALUE")])
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        table: dict[str, Any] = {}
        node = table
        *parents, leaf = _dotted(key.strip())
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        merged = _merge(merged, table)
    return merged


def _dotted(key: str) -> list[str]:
    """The parts of a dotted key, as TOML reads them (quotes keep a dot inside a part)."""
    try:
        node: Any = tomllib.loads(f"{key} = 0")
    except tomllib.TOMLDecodeError:
        return key.split(".")
    parts = []
    while isinstance(node, dict) and len(node) == 1:
        (part, node), *_ = node.items()
        parts.append(part)
    return parts


def _problem(path: Path, error: Any) -> ConfigProblem:
    # A discriminated union puts the chosen kind in the location ("faults.0.rate_limit.share"):
    # the file has no such level, so it is left out.
    loc = [str(part) for part in error["loc"] if part not in _KINDS]
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field"
        if len(loc) == 3 and loc[0] == "models":  # [models.qwen3.6-27b] is models.qwen3 in TOML
            model = f'models."{loc[1]}.{loc[2]}"'
            message += f"; a model id with a dot needs quotes: [{model}], or {model}.FIELD=... in --set"
    if error["type"] == "no_tasks":  # the scenario's own check: it is about its task mix
        loc = ["tasks"]
    return ConfigProblem(str(path), ".".join(loc), message)


_KINDS = {
    "rate_limit",
    "outage",
    "slowdown",
    "quality",
    "price",
    "restart",
    "reload",
    "forge",
    "operate",
    "function-after",
}


def check_against(scenario: Scenario, config: Config, path: str | Path) -> None:
    """Names that must exist in the policy's config: lanes, models and providers."""
    problems: list[ConfigProblem] = []
    models = {m.id for m in config.models}
    providers = {m.provider for m in config.models}

    def need(known: set[str] | dict[str, Any], name: str, field: str, what: str) -> None:
        if name and name not in known:
            problems.append(ConfigProblem(str(path), field, f"{what} {name!r} is not in the config"))

    names: set[str] = set()
    for i, lane in enumerate(scenario.lanes):
        need(config.lanes, lane.routes_as, f"lanes.{i}.lane", "lane")
        if lane.name in names:
            problems.append(ConfigProblem(str(path), f"lanes.{i}.name", f"{lane.name!r} is used twice"))
        names.add(lane.name)
    for name in scenario.models:
        need(models, name, f"models.{name}", "model")
    for i, fault in enumerate(scenario.faults):
        need(models, fault.model, f"faults.{i}.model", "model")
        need(providers, fault.provider, f"faults.{i}.provider", "provider")
        if fault.start_s >= scenario.duration_s:
            problems.append(
                ConfigProblem(
                    str(path),
                    f"faults.{i}.start_s",
                    f"is past the end of the run ({scenario.duration_s:g} s)",
                )
            )
    for i, event in enumerate(scenario.events):
        if isinstance(event, Forge):
            need(config.lanes, event.lane, f"events.{i}.credential", "lane")
        if isinstance(event, Operate):
            need(config.lanes, event.lane, f"events.{i}.lane", "lane")
            need(models, event.model, f"events.{i}.model", "model")
            if len(event.note) > (limit := config.policy.limits.max_title_chars):
                problems.append(
                    ConfigProblem(
                        str(path), f"events.{i}.note", f"is {len(event.note)} characters; at most {limit}"
                    )
                )
        if event.at_s >= scenario.duration_s:
            problems.append(
                ConfigProblem(
                    str(path), f"events.{i}.at_s", f"is past the end of the run ({scenario.duration_s:g} s)"
                )
            )
    if problems:
        raise ScenarioError(problems)
