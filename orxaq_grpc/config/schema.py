"""The three config files as pydantic models: each field's type, default and bounds beside it, and
the rules between fields (`_relations`) beside the table they belong to (see `config/tables.py`).

Strict where TOML is typed: a number is never a string or a boolean, a whole number is never 2.5, a
date is a TOML date. Unknown fields are errors. Names from the other files come as `Known`: lanes
name catalog models, policy names lanes and providers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, Strict, StrictBool, StrictFloat, StrictInt, StrictStr
from pydantic_core import PydanticCustomError

from orxaq_grpc.config.model import CapacityLimits
from orxaq_grpc.config.tables import RULE, Known, Problems, Table

MAX_CAPABILITIES = 64  # capabilities are a 64-bit mask in the kernel
# Sanity bounds: far beyond any real model, near enough that scores stay finite.
MAX_PRICE_USD_PER_MTOK = 10_000.0
MAX_HARDWARE_USD_PER_HOUR = 10_000.0
MIN_SPEED, MAX_SPEED = 0.1, 1_000_000.0  # output tokens per second
MAX_TTFT_S = 3_600.0
MAX_TOKENS = 1_000_000_000
MAX_AGENTS = 10_000
DAY_S = 86_400.0
_ID = re.compile(r"^[a-z0-9][a-z0-9._:/-]{0,127}$")

# TOML values as they come: a whole number is fine where a number is expected (55 for 55.0).
Number = StrictFloat
Whole = StrictInt
Flag = StrictBool
Text = StrictStr
Date = Annotated[dt.date, Strict()]  # a datetime is not a date here


def is_identifier(value: str) -> bool:
    """A name the config files accept for a lane, a model, a credential."""
    return bool(_ID.match(value))


def _identifier(value: str) -> str:
    if not is_identifier(value):
        raise PydanticCustomError(
            RULE, f"{value!r} must be lower-case letters, digits and . _ : / - (at most 128)"
        )
    return value


def _unique(values: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(values)) != len(values):
        raise PydanticCustomError(RULE, "has duplicate entries")
    return values


def _not_blank(words: tuple[str, ...]) -> tuple[str, ...]:
    if not all(word.strip() for word in words):
        raise PydanticCustomError(RULE, "keywords must not be blank")
    return words


Identifier = Annotated[Text, AfterValidator(_identifier)]
Names = Annotated[tuple[Text, ...], AfterValidator(_unique)]
Keywords = Annotated[Names, AfterValidator(_not_blank)]
Share = Annotated[Number, Field(gt=0, le=1)]  # of decisions, reports, a budget: above 0, at most 1
Ratio = Annotated[Number, Field(ge=0, le=1)]
Usd = Annotated[Number, Field(ge=0)]
Bias = Annotated[Number, Field(ge=-1, le=1)]
Count = Annotated[Whole, Field(ge=1)]
Agents = Annotated[Whole, Field(ge=1, le=MAX_AGENTS)]
Subagents = Annotated[Whole, Field(ge=0, le=MAX_AGENTS)]
MinuteWindow = Annotated[Number, Field(ge=60, le=7200)]  # counted in minute buckets
Origin = Literal["hosted", "local"]
ObjectiveName = Literal["cost_speed", "balanced", "quality"]  # Objective's members, lower-case
ProfileName = Literal["fast", "strong"]

# catalog.toml


class ModelEntry(Table):
    """One [[models]] table: a model, its list prices, speed and quality, and where each came from."""

    id: Identifier
    provider: Identifier
    origin: Origin
    input_usd_per_mtok: Number = Field(ge=0, le=MAX_PRICE_USD_PER_MTOK)
    output_usd_per_mtok: Number = Field(ge=0, le=MAX_PRICE_USD_PER_MTOK)
    # Prompt caching; absent: priced as input.
    cached_input_usd_per_mtok: Annotated[Number, Field(ge=0, le=MAX_PRICE_USD_PER_MTOK)] | None = None
    cache_write_usd_per_mtok: Annotated[Number, Field(ge=0, le=MAX_PRICE_USD_PER_MTOK)] | None = None
    # Local models: amortised hardware and power per hour, priced over output_tokens_per_s.
    hardware_usd_per_hour: Annotated[Number, Field(ge=0, le=MAX_HARDWARE_USD_PER_HOUR)] | None = None
    output_tokens_per_s: Number = Field(ge=MIN_SPEED, le=MAX_SPEED)
    ttft_s: Annotated[Number, Field(ge=0, le=MAX_TTFT_S)] | None = None  # None: estimates.default_ttft_s
    quality: Number = Field(ge=0, le=100)
    context_window: Whole = Field(ge=1, le=MAX_TOKENS)
    max_output_tokens: Whole = Field(ge=1, le=MAX_TOKENS)
    capabilities: Names = ()
    enabled: Flag = True
    price_source: Text
    price_date: Date
    speed_source: Text
    speed_date: Date
    quality_source: Text

    def _relations(self, known: Known) -> Problems:
        if (
            self._given("max_output_tokens", "context_window")
            and self.max_output_tokens > self.context_window
        ):
            yield ("max_output_tokens",), "is larger than context_window"
        if (
            self._given("cached_input_usd_per_mtok", "input_usd_per_mtok")
            and self.cached_input_usd_per_mtok is not None
            and self.cached_input_usd_per_mtok > self.input_usd_per_mtok
        ):
            yield ("cached_input_usd_per_mtok",), "is above input_usd_per_mtok: a cache read costs less"
        hardware = self._given("hardware_usd_per_hour", "origin") and self.hardware_usd_per_hour is not None
        if hardware and self.origin != "local":
            yield ("hardware_usd_per_hour",), "is for local models; a hosted model has list prices"


class CatalogFile(Table):
    models: tuple[ModelEntry, ...] = Field(min_length=1)

    def _relations(self, known: Known) -> Problems:
        if not self._given("models"):
            return
        seen: set[str] = set()
        for index, model in enumerate(self.models):
            if model.id in seen:
                yield ("models", index, "id"), f"{model.id!r} appears twice in the catalog"
            seen.add(model.id)
        capabilities = {c for model in self.models for c in model.capabilities}
        if len(capabilities) > MAX_CAPABILITIES:
            yield ("models",), f"{len(capabilities)} distinct capabilities; at most {MAX_CAPABILITIES}"


# lanes.toml


class LaneEntry(Table):
    """One [lanes.<id>] table."""

    description: Text = ""
    allowed_models: Names = Field(min_length=1)  # in the order the static chain tries them
    static_fallback: Text
    default_objective: ObjectiveName
    default_profile: ProfileName
    quality_floor: Number = Field(default=0.0, ge=0, le=100)
    critical: Flag = False
    enabled: Flag = True
    origin_bias: dict[Origin, Bias] = Field(default_factory=dict)
    model_bias: dict[str, Bias] = Field(default_factory=dict)

    def _relations(self, known: Known) -> Problems:
        if not self._given("allowed_models"):
            return
        allowed = self.allowed_models
        if known.models is not None:
            for name in allowed:
                if name not in known.models:
                    yield ("allowed_models",), f"{name!r} is not in the catalog"
        if self._given("static_fallback"):
            fallback = self.static_fallback
            if fallback not in allowed:
                yield ("static_fallback",), f"{fallback!r} is not in allowed_models"
            elif known.models is not None and not known.models.get(fallback, True):
                yield ("static_fallback",), f"{fallback!r} is disabled in the catalog"
        if self._given("model_bias"):
            for name in self.model_bias:
                if name not in allowed:
                    yield ("model_bias", name), f"{name!r} is not one of {', '.join(sorted(allowed))}"


class LanesFile(Table):
    lanes: dict[Identifier, LaneEntry] = Field(min_length=1)


# policy.toml


class Routing(Table):
    enabled: Flag  # false: every Route gets the lane's static fallback
    max_alternatives: Whole = Field(ge=0, le=32)


class WeightsTable(Table):
    cost: Number = Field(ge=0)
    speed: Number = Field(ge=0)
    quality: Number = Field(ge=0)

    def _relations(self, known: Known) -> Problems:
        if self._given("cost", "speed", "quality") and self.cost + self.speed + self.quality <= 0:
            yield (), "needs at least one weight above 0"


class ObjectiveWeights(Table):
    cost_speed: WeightsTable
    balanced: WeightsTable
    quality: WeightsTable


class ProfileMultipliers(Table):
    fast: WeightsTable  # favours cost and speed
    strong: WeightsTable  # favours quality


class ObjectiveRules(Table):
    cost_speed_kinds: Names
    quality_kinds: Names
    cost_speed_keywords: Keywords
    quality_keywords: Keywords
    quality_difficulty_at_least: Number = Field(ge=0, le=100)
    cost_speed_difficulty_at_most: Number = Field(ge=0, le=100)
    quality_input_tokens_at_least: Whole = Field(ge=1)
    keyword_scan_chars: Whole = Field(ge=0, le=4 * 1024 * 1024)

    def _relations(self, known: Known) -> Problems:
        if self._given("cost_speed_kinds", "quality_kinds"):
            for kind in _in_both(self.cost_speed_kinds, self.quality_kinds):
                yield ("quality_kinds",), f"{kind!r} is also in cost_speed_kinds"
        if self._given("cost_speed_keywords", "quality_keywords"):
            for word in _in_both(self.cost_speed_keywords, self.quality_keywords):
                yield ("quality_keywords",), f"{word!r} is also in cost_speed_keywords"
        at_most, at_least = "cost_speed_difficulty_at_most", "quality_difficulty_at_least"
        if (
            self._given(at_most, at_least)
            and self.cost_speed_difficulty_at_most >= self.quality_difficulty_at_least
        ):
            yield (at_most,), f"must be below {at_least}"


def _in_both(words: tuple[str, ...], others: tuple[str, ...]) -> list[str]:
    """Case-insensitively."""
    return sorted({w.lower() for w in words} & {w.lower() for w in others})


class Estimates(Table):
    chars_per_token: Number = Field(ge=0.5, le=100)
    default_output_tokens: Whole = Field(ge=1, le=MAX_TOKENS)
    default_ttft_s: Number = Field(ge=0, le=MAX_TTFT_S)
    price_floor_usd_per_mtok: Number = Field(gt=0, le=MAX_PRICE_USD_PER_MTOK)


class ContextRamp(Table):
    ramp_start: Ratio
    ramp_penalty: Number = Field(ge=0)


class RequestLimits(Table):
    max_prompt_bytes: Whole = Field(ge=1, le=3 * 1024 * 1024)
    max_title_chars: Count
    max_text_field_chars: Count
    max_labels: Whole = Field(ge=0)
    max_tokens: Whole = Field(ge=1, le=MAX_TOKENS)
    max_batch_items: Whole = Field(default=1000, ge=1, le=100_000)  # RouteBatch requests per call


class Detection(Table):
    window_s: MinuteWindow
    degraded_router_error_rate: Share
    elevated_fallback_rate: Share


class Breakers(Table):
    consecutive_failures: Count
    failure_rate: Share
    window_s: Number = Field(gt=0, le=DAY_S)
    min_reports: Count
    open_s: Number = Field(gt=0, le=DAY_S)
    half_open_probes: Count
    max_retry_after_s: Number = Field(gt=0, le=DAY_S)


class Budgets(Table):
    daily_usd: Usd  # 0: no budget
    lanes: dict[str, Usd] = Field(default_factory=dict)
    providers: dict[str, Usd] = Field(default_factory=dict)
    reservation_ttl_s: Number = Field(gt=0, le=7 * DAY_S)
    warn_at: Share
    on_exhausted: Literal["static_fallback", "error"]

    def _relations(self, known: Known) -> Problems:
        if known.lanes is not None and self._given("lanes"):
            for lane in self.lanes:
                if lane not in known.lanes:
                    yield ("lanes", lane), "is not a lane in lanes.toml"
        if known.providers is not None and self._given("providers"):
            for provider in self.providers:
                if provider not in known.providers:
                    yield ("providers", provider), "no model has it"


class StrongOrWeak(Table):
    threshold_usd: Usd
    uncertainty_ratio: Ratio
    calibrated_uncertainty_ratio: Ratio
    calibration_min_reports: Count
    calibration_window_s: Number = Field(ge=3600, le=30 * DAY_S)


_CAPACITY = (
    "max_parallel_agents",
    "max_subagents_per_agent",
    "baseline_parallel_agents",
    "baseline_subagents_per_agent",
)


def _capacity_problems(limits: CapacityLimits) -> Iterator[tuple[str, str]]:
    if limits.baseline_parallel_agents > limits.max_parallel_agents:
        yield "baseline_parallel_agents", "is above max_parallel_agents"
    if limits.baseline_subagents_per_agent > limits.max_subagents_per_agent:
        yield "baseline_subagents_per_agent", "is above max_subagents_per_agent"


class LaneCapacity(Table):
    """A [scale.lanes.<id>] table: the lane's own limits; a field left out takes [scale]'s."""

    max_parallel_agents: Agents | None = None
    max_subagents_per_agent: Subagents | None = None
    baseline_parallel_agents: Agents | None = None
    baseline_subagents_per_agent: Subagents | None = None

    def over(self, limits: CapacityLimits) -> CapacityLimits:
        return dataclasses.replace(limits, **self.model_dump(exclude_none=True))


class Scale(Table):
    discount_rate: Number = Field(gt=-1, le=10)
    min_npv_threshold_usd: Usd
    min_confidence: Ratio
    max_horizon_days: Number = Field(gt=0, le=36_500)
    max_parallel_agents: Agents
    max_subagents_per_agent: Subagents
    baseline_parallel_agents: Agents
    baseline_subagents_per_agent: Subagents
    lanes: dict[str, LaneCapacity] = Field(default_factory=dict)
    groups: dict[str, Annotated[Names, Field(min_length=1)]] = Field(default_factory=dict)
    health_window_s: MinuteWindow | None = None  # None: detection.window_s
    min_reports: Count
    max_error_rate: Share
    min_pass_rate: Ratio
    recent_decisions: Whole = Field(ge=1, le=1000)

    def capacity(self) -> CapacityLimits:
        """The limits of every lane without its own."""
        return CapacityLimits(
            max_parallel_agents=self.max_parallel_agents,
            max_subagents_per_agent=self.max_subagents_per_agent,
            baseline_parallel_agents=self.baseline_parallel_agents,
            baseline_subagents_per_agent=self.baseline_subagents_per_agent,
        )

    def _relations(self, known: Known) -> Problems:
        if self._given(*_CAPACITY):
            for field, problem in _capacity_problems(self.capacity()):
                yield (field,), problem
            if self._given("lanes"):
                for lane, own in self.lanes.items():
                    for field, problem in _capacity_problems(own.over(self.capacity())):
                        yield ("lanes", lane, field), problem
        if known.lanes is None:
            return
        if self._given("lanes"):
            for lane in self.lanes:
                if lane not in known.lanes:
                    yield ("lanes", lane), "is not a lane in lanes.toml"
        if self._given("groups"):
            for group, members in self.groups.items():
                if group in known.lanes:
                    yield ("groups", group), "is also a lane's id"
                for lane in members:
                    if lane not in known.lanes:
                        yield ("groups", group), f"{lane!r} is not a lane"


class StopLoss(Table):
    enabled: Flag
    check_interval_s: Number = Field(ge=0.05, le=3600)
    spend_over_budget_share: Number = Field(gt=0, le=10)
    recent_window_s: MinuteWindow
    baseline_window_s: Number = Field(ge=3600, le=30 * DAY_S)
    min_reports: Count
    pass_rate_drop: Share
    pass_rate_z: Number = Field(ge=0, le=10)
    fallback_rate: Share
    min_decisions: Count
    cycle_time_increase: Number = Field(gt=0, le=100)
    hysteresis: Number = Field(ge=0, le=0.9)
    cool_off_s: Number = Field(ge=0, le=7 * DAY_S)


class Ledger(Table):
    retention_days: Whole = Field(ge=1, le=3650)


class Reports(Table):
    max_cost_over_estimate: Number = Field(ge=1)
    min_bound_usd: Usd


class AdaptiveWeights(Table):
    enabled: Flag
    interval_s: Number = Field(ge=1, le=DAY_S)
    min_reports: Count
    target_pass_rate: Ratio
    target_latency_s: Number = Field(gt=0)
    step: Number = Field(gt=0, le=0.5)
    min_weight: Ratio
    max_weight: Share

    def _relations(self, known: Known) -> Problems:
        if self._given("min_weight", "max_weight") and self.min_weight > self.max_weight:
            yield ("min_weight",), "is above max_weight"


class Learning(Table):
    mode: Literal["off", "shadow", "apply"]
    feature_bits: Whole = Field(ge=10, le=22)
    prior_sd: Number = Field(gt=0, le=10)
    noise_sd: Number = Field(gt=0, le=10)
    max_text_chars: Whole = Field(ge=0, le=100_000)
    explore_share: Number = Field(ge=0, le=0.5)
    explore_max_usd: Usd
    quality_from_model: Flag
    save_interval_s: Number = Field(ge=1, le=DAY_S)


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class CredentialEntry(Table):
    """One [[access.credentials]] entry: a bearer token, held as its SHA-256 or read at each (re)load
    from a file or an environment variable, and what it may do."""

    name: Identifier  # who holds it: in logs and answers, never the token
    role: Literal["lane", "operator"]
    lane: Text = ""  # role lane: the lane it routes and reports for
    sha256: Text = ""  # hex SHA-256 of the token
    token_file: Text = ""  # a file holding the token (relative: to the config directory)
    token_env: Text = ""  # an environment variable holding the token

    def _relations(self, known: Known) -> Problems:
        if self._given("sha256", "token_file", "token_env"):
            sources = [name for name in ("sha256", "token_file", "token_env") if getattr(self, name)]
            if len(sources) != 1:
                yield (), "needs exactly one of sha256, token_file or token_env"
            if self.sha256 and not _SHA256.match(self.sha256):
                yield ("sha256",), "must be 64 lower-case hex digits (orxaq-grpc token prints one)"
        if self._given("role", "lane"):
            if self.role == "lane" and not self.lane:
                yield ("lane",), "a lane credential names its lane"
            elif self.role != "lane" and self.lane:
                yield ("lane",), f"only a lane credential names a lane, not an {self.role} one"
            elif self.lane and known.lanes is not None and self.lane not in known.lanes:
                yield ("lane",), f"{self.lane!r} is not in lanes.toml"


class Access(Table):
    reads: Literal["open", "token"]  # Health, WatchHealth, Economics, grpc.health.v1, reflection
    credentials: tuple[CredentialEntry, ...] = ()

    def _relations(self, known: Known) -> Problems:
        if not self._given("credentials"):
            return
        seen: dict[str, int] = {}
        for index, credential in enumerate(self.credentials):
            if (first := seen.setdefault(credential.name, index)) != index:
                yield ("credentials", index, "name"), f"{credential.name!r} is also credential {first}'s name"
        if self._given("reads") and self.reads == "token" and not self.credentials:
            yield ("reads",), "is token, but there are no credentials: nobody could read"


class Ceilings(Table):
    """Per server process; beyond a ceiling a call is RESOURCE_EXHAUSTED with a RetryInfo."""

    max_concurrent_rpcs: Whole = Field(ge=1, le=100_000)  # unary calls in flight
    max_watch_streams: Whole = Field(ge=0, le=100_000)  # open WatchHealth streams
    min_watch_heartbeat_s: Number = Field(ge=0.05, le=3600)  # the shortest heartbeat a stream may ask
    lane_requests_per_s: Number = Field(gt=0, le=1_000_000)  # Route and Report per lane, sustained
    lane_burst: Whole = Field(ge=1, le=10_000_000)  # ... and at once
    retry_after_s: Number = Field(gt=0, le=3600)  # RetryInfo when too many calls are in flight


class PolicyFile(Table):
    """policy.toml. Every field is required, but for budgets' and scale's tables of lanes, providers
    and groups, and scale.health_window_s."""

    routing: Routing
    weights: ObjectiveWeights
    profiles: ProfileMultipliers
    objective: ObjectiveRules
    estimates: Estimates
    context: ContextRamp
    limits: RequestLimits
    detection: Detection
    breakers: Breakers
    budgets: Budgets
    reports: Reports
    strong_or_weak: StrongOrWeak
    learning: Learning
    adaptive_weights: AdaptiveWeights
    scale: Scale
    stop_loss: StopLoss
    ledger: Ledger
    access: Access
    ceilings: Ceilings

    def _relations(self, known: Known) -> Problems:
        if not self._given("weights", "profiles"):
            return
        for profile, m in self.profiles:
            for objective, w in self.weights:
                if w.cost * m.cost + w.speed * m.speed + w.quality * m.quality <= 0:
                    yield ("profiles", profile), f"leaves objective {objective} with no weight above 0"
