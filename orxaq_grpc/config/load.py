"""Loads and validates `catalog.toml`, `lanes.toml` and `policy.toml`.

Every problem is collected, not just the first, and each names its file, the
dotted field and what is wrong, so `orxaq-grpc check-config` can list them all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orxaq_grpc.config.model import (
    BreakerSettings,
    BudgetSettings,
    CapacityLimits,
    Config,
    DetectionSettings,
    LaneSpec,
    Limits,
    ModelSpec,
    Policy,
    ScaleSettings,
    StopLossSettings,
    StrongOrWeakSettings,
    Weights,
)
from orxaq_grpc.vocabulary import Objective, Profile, range_problem

CATALOG_FILE = "catalog.toml"
LANES_FILE = "lanes.toml"
POLICY_FILE = "policy.toml"
CONFIG_FILES = (CATALOG_FILE, LANES_FILE, POLICY_FILE)

ORIGINS = ("hosted", "local")
ON_EXHAUSTED = ("static_fallback", "error")
MAX_CAPABILITIES = 64  # capabilities are a 64-bit mask in the kernel
# Sanity bounds: far beyond any real model, near enough that scores stay finite.
MAX_PRICE_USD_PER_MTOK = 10_000.0
MIN_SPEED, MAX_SPEED = 0.1, 1_000_000.0  # output tokens per second
MAX_TTFT_S = 3_600.0
MAX_TOKENS = 1_000_000_000
_ID = re.compile(r"^[a-z0-9][a-z0-9._:/-]{0,127}$")
_OBJECTIVES = {
    "cost_speed": Objective.COST_SPEED,
    "balanced": Objective.BALANCED,
    "quality": Objective.QUALITY,
}
_PROFILES = {"fast": Profile.FAST, "strong": Profile.STRONG}


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    path: str
    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.field}: {self.problem}" if self.field else f"{self.path}: {self.problem}"


class ConfigError(Exception):
    """A config directory that cannot be used; `problems` lists every reason."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class _Section:
    """One TOML table being read; records problems instead of raising.

    `done()` reports keys nobody asked for, so a misspelt field is an error rather
    than a silently ignored setting.
    """

    def __init__(self, problems: list[ConfigProblem], path: str, prefix: str, data: Any) -> None:
        self._problems = problems
        self._path = path
        self._prefix = prefix
        self._seen: set[str] = set()
        if isinstance(data, dict):
            self._data = data
        else:
            self._data = {}
            self.problem("", f"must be a table, not {type(data).__name__}")

    def name(self, key: str) -> str:
        return f"{self._prefix}.{key}" if self._prefix and key else (self._prefix or key)

    def problem(self, key: str, text: str) -> None:
        self._problems.append(ConfigProblem(self._path, self.name(key), text))

    def has(self, key: str) -> bool:
        return key in self._data

    def fields(self) -> list[str]:
        return list(self._data)

    # object, not Any: a value is whatever the TOML holds, so each reader checks it before use.
    def _get(self, key: str, required: bool) -> object:
        self._seen.add(key)
        if key not in self._data:
            if required:
                self.problem(key, "is required")
            return None
        return self._data[key]

    def raw(self, key: str, required: bool = True) -> object:
        """The value as parsed, for shapes the typed readers do not cover."""
        return self._get(key, required)

    def nested(self, prefix: str, data: Any) -> _Section:
        """A section for a value found inside this one, e.g. an array entry."""
        return _Section(self._problems, self._path, self.name(prefix), data)

    def section(self, key: str, required: bool = True) -> _Section:
        value = self._get(key, required)
        return _Section(self._problems, self._path, self.name(key), {} if value is None else value)

    def string(self, key: str, default: str | None = None, choices: Iterable[str] | None = None) -> str:
        value = self._get(key, default is None)
        if value is None:
            return default or ""
        if not isinstance(value, str):
            self.problem(key, f"must be a string, not {type(value).__name__}")
            return default or ""
        if choices is not None and value not in choices:
            self.problem(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def identifier(self, key: str) -> str:
        value = self.string(key)
        if value and not _ID.match(value):
            self.problem(key, f"{value!r} must be lower-case letters, digits and . _ : / - (at most 128)")
        return value

    def number(
        self,
        key: str,
        default: float | None = None,
        lo: float | None = None,
        hi: float | None = None,
        above: float | None = None,
    ) -> float:
        value = self._get(key, default is None)
        if value is None:
            return default if default is not None else 0.0
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problem(key, f"must be a number, not {type(value).__name__}")
            return default if default is not None else 0.0
        value = float(value)
        if problem := range_problem(value, lo=lo, hi=hi, above=above):
            self.problem(key, problem)
        return value

    def integer(self, key: str, default: int | None = None, lo: int = 0, hi: int | None = None) -> int:
        value = self._get(key, default is None)
        if value is None:
            return default or 0
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(key, f"must be a whole number, not {type(value).__name__}")
            return default or 0
        if value < lo:
            self.problem(key, f"{value} is below the minimum {lo}")
        elif hi is not None and value > hi:
            self.problem(key, f"{value} is above the maximum {hi}")
        return value

    def boolean(self, key: str, default: bool | None = None) -> bool:
        value = self._get(key, default is None)
        if value is None:
            return bool(default)
        if not isinstance(value, bool):
            self.problem(key, f"must be true or false, not {type(value).__name__}")
            return bool(default)
        return value

    def date(self, key: str) -> dt.date:
        value = self._get(key, True)
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        if value is not None:
            self.problem(key, "must be a date such as 2026-11-01")
        return dt.date.min

    def strings(self, key: str, default: tuple[str, ...] | None = None) -> tuple[str, ...]:
        value = self._get(key, default is None)
        if value is None:
            return default or ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(key, "must be a list of strings")
            return default or ()
        if len(set(value)) != len(value):
            self.problem(key, "has duplicate entries")
        return tuple(value)

    def done(self) -> None:
        for key in self._data:
            if key not in self._seen:
                self.problem(key, "is not a known field")


def load_config(directory: str | Path) -> Config:
    """Reads and validates a config directory; raises ConfigError listing every problem."""
    directory = Path(directory)
    problems: list[ConfigProblem] = []
    raw: dict[str, dict[str, Any]] = {}
    digest = hashlib.sha256()
    for name in CONFIG_FILES:
        path = directory / name
        try:
            content = path.read_bytes()
            raw[name] = tomllib.loads(content.decode("utf-8"))
        except FileNotFoundError:
            problems.append(ConfigProblem(str(path), "", "file not found"))
            continue
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            problems.append(ConfigProblem(str(path), "", f"cannot be read: {exc}"))
            continue
        digest.update(name.encode() + b"\0" + content + b"\0")
    if problems:
        raise ConfigError(problems)

    policy = _read_policy(_Section(problems, str(directory / POLICY_FILE), "", raw[POLICY_FILE]))
    models = _read_catalog(_Section(problems, str(directory / CATALOG_FILE), "", raw[CATALOG_FILE]), policy)
    lanes = _read_lanes(_Section(problems, str(directory / LANES_FILE), "", raw[LANES_FILE]), models)
    _check_budget_names(policy, lanes, models, problems, str(directory / POLICY_FILE))
    _check_scale_names(policy, lanes, problems, str(directory / POLICY_FILE))
    if problems:
        raise ConfigError(problems)
    return Config(
        directory=directory,
        version=digest.hexdigest()[:16],
        models=tuple(sorted(models.values(), key=lambda m: m.id)),
        lanes=lanes,
        policy=policy,
    )


def _read_weights(section: _Section, keys: Iterable[str]) -> dict[str, Weights]:
    result = {}
    for key in keys:
        table = section.section(key)
        result[key] = Weights(
            cost=table.number("cost", lo=0.0),
            speed=table.number("speed", lo=0.0),
            quality=table.number("quality", lo=0.0),
        )
        if table.has("cost") and result[key].cost + result[key].speed + result[key].quality <= 0.0:
            table.problem("", "needs at least one weight above 0")
        table.done()
    section.done()
    return result


def _read_policy(root: _Section) -> Policy:
    routing = root.section("routing")
    routing_enabled = routing.boolean("enabled")
    max_alternatives = routing.integer("max_alternatives", lo=0, hi=32)
    routing.done()

    weights = _read_weights(root.section("weights"), _OBJECTIVES)
    multipliers = _read_weights(root.section("profiles"), _PROFILES)
    for profile, m in multipliers.items():
        for objective, w in weights.items():
            if w.cost * m.cost + w.speed * m.speed + w.quality * m.quality <= 0.0:
                root.problem(f"profiles.{profile}", f"leaves objective {objective} with no weight above 0")

    objective_section = root.section("objective")
    cost_speed_kinds = objective_section.strings("cost_speed_kinds")
    quality_kinds = objective_section.strings("quality_kinds")
    for kind in {k.lower() for k in cost_speed_kinds} & {k.lower() for k in quality_kinds}:
        objective_section.problem("quality_kinds", f"{kind!r} is also in cost_speed_kinds")
    cost_speed_keywords = objective_section.strings("cost_speed_keywords")
    quality_keywords = objective_section.strings("quality_keywords")
    keyword_lists = {"cost_speed_keywords": cost_speed_keywords, "quality_keywords": quality_keywords}
    for field, words in keyword_lists.items():
        if any(not word.strip() for word in words):
            objective_section.problem(field, "keywords must not be blank")
    for word in {w.lower() for w in cost_speed_keywords} & {w.lower() for w in quality_keywords}:
        objective_section.problem("quality_keywords", f"{word!r} is also in cost_speed_keywords")
    keyword_scan_chars = objective_section.integer("keyword_scan_chars", lo=0, hi=4 * 1024 * 1024)
    quality_difficulty = objective_section.number("quality_difficulty_at_least", lo=0, hi=100)
    cost_speed_difficulty = objective_section.number("cost_speed_difficulty_at_most", lo=0, hi=100)
    if cost_speed_difficulty >= quality_difficulty:
        objective_section.problem(
            "cost_speed_difficulty_at_most", "must be below quality_difficulty_at_least"
        )
    quality_tokens = objective_section.integer("quality_input_tokens_at_least", lo=1)
    objective_section.done()

    estimates = root.section("estimates")
    chars_per_token = estimates.number("chars_per_token", lo=0.5, hi=100.0)
    default_output_tokens = estimates.integer("default_output_tokens", lo=1, hi=MAX_TOKENS)
    default_ttft_s = estimates.number("default_ttft_s", lo=0.0, hi=MAX_TTFT_S)
    price_floor = estimates.number("price_floor_usd_per_mtok", above=0.0, hi=MAX_PRICE_USD_PER_MTOK)
    estimates.done()

    context = root.section("context")
    ramp_start = context.number("ramp_start", lo=0.0, hi=1.0)
    ramp_penalty = context.number("ramp_penalty", lo=0.0)
    context.done()

    limits_section = root.section("limits")
    limits = Limits(
        max_prompt_bytes=limits_section.integer("max_prompt_bytes", lo=1, hi=3 * 1024 * 1024),
        max_title_chars=limits_section.integer("max_title_chars", lo=1),
        max_text_field_chars=limits_section.integer("max_text_field_chars", lo=1),
        max_labels=limits_section.integer("max_labels", lo=0),
        max_tokens=limits_section.integer("max_tokens", lo=1, hi=MAX_TOKENS),
    )
    limits_section.done()

    detection_section = root.section("detection")
    detection = DetectionSettings(
        window_s=detection_section.number("window_s", lo=60.0, hi=7200.0),  # minute buckets
        degraded_router_error_rate=detection_section.number("degraded_router_error_rate", above=0.0, hi=1.0),
        elevated_fallback_rate=detection_section.number("elevated_fallback_rate", above=0.0, hi=1.0),
    )
    detection_section.done()

    breaker_section = root.section("breakers")
    breakers = BreakerSettings(
        consecutive_failures=breaker_section.integer("consecutive_failures", lo=1),
        failure_rate=breaker_section.number("failure_rate", above=0.0, hi=1.0),
        window_s=breaker_section.number("window_s", above=0.0, hi=86400.0),
        min_reports=breaker_section.integer("min_reports", lo=1),
        open_s=breaker_section.number("open_s", above=0.0, hi=86400.0),
        half_open_probes=breaker_section.integer("half_open_probes", lo=1),
    )
    breaker_section.done()

    budget_section = root.section("budgets")
    budgets = BudgetSettings(
        daily_usd=budget_section.number("daily_usd", lo=0.0),
        lane_daily_usd=_read_amounts(budget_section.section("lanes", required=False)),
        provider_daily_usd=_read_amounts(budget_section.section("providers", required=False)),
        reservation_ttl_s=budget_section.number("reservation_ttl_s", above=0.0, hi=7 * 86400.0),
        warn_at=budget_section.number("warn_at", above=0.0, hi=1.0),
        on_exhausted=budget_section.string("on_exhausted", choices=ON_EXHAUSTED),
    )
    budget_section.done()

    scale = _read_scale(root.section("scale"), detection.window_s)
    stop_loss = _read_stop_loss(root.section("stop_loss"))
    strong_or_weak = _read_strong_or_weak(root.section("strong_or_weak"))

    ledger = root.section("ledger")
    retention_days = ledger.integer("retention_days", lo=1, hi=3650)
    ledger.done()
    root.done()

    return Policy(
        routing_enabled=routing_enabled,
        max_alternatives=max_alternatives,
        weights={_OBJECTIVES[k]: w for k, w in weights.items()},
        profile_multipliers={_PROFILES[k]: w for k, w in multipliers.items()},
        cost_speed_kinds=frozenset(k.lower() for k in cost_speed_kinds),
        quality_kinds=frozenset(k.lower() for k in quality_kinds),
        cost_speed_keywords=cost_speed_keywords,
        quality_keywords=quality_keywords,
        quality_difficulty_at_least=quality_difficulty,
        cost_speed_difficulty_at_most=cost_speed_difficulty,
        quality_input_tokens_at_least=quality_tokens,
        keyword_scan_chars=keyword_scan_chars,
        chars_per_token=chars_per_token,
        default_output_tokens=default_output_tokens,
        default_ttft_s=default_ttft_s,
        price_floor_usd_per_mtok=price_floor,
        context_ramp_start=ramp_start,
        context_ramp_penalty=ramp_penalty,
        limits=limits,
        detection=detection,
        breakers=breakers,
        budgets=budgets,
        scale=scale,
        stop_loss=stop_loss,
        strong_or_weak=strong_or_weak,
        ledger_retention_days=retention_days,
    )


MAX_AGENTS = 10_000


def _read_limits(section: _Section, defaults: CapacityLimits | None) -> CapacityLimits:
    """Capacity limits; with `defaults` (a lane's override) every field is optional."""

    def count(key: str, lo: int) -> int:
        default = None if defaults is None else getattr(defaults, key)
        return section.integer(key, default=default, lo=lo, hi=MAX_AGENTS)

    limits = CapacityLimits(
        max_parallel_agents=count("max_parallel_agents", 1),
        max_subagents_per_agent=count("max_subagents_per_agent", 0),
        baseline_parallel_agents=count("baseline_parallel_agents", 1),
        baseline_subagents_per_agent=count("baseline_subagents_per_agent", 0),
    )
    if limits.baseline_parallel_agents > limits.max_parallel_agents:
        section.problem("baseline_parallel_agents", "is above max_parallel_agents")
    if limits.baseline_subagents_per_agent > limits.max_subagents_per_agent:
        section.problem("baseline_subagents_per_agent", "is above max_subagents_per_agent")
    return limits


def _read_scale(section: _Section, detection_window_s: float) -> ScaleSettings:
    limits = _read_limits(section, None)
    lanes_section = section.section("lanes", required=False)
    lane_limits = {}
    for lane in lanes_section.fields():
        override = lanes_section.section(lane)
        lane_limits[lane] = _read_limits(override, limits)
        override.done()
    lanes_section.done()
    groups_section = section.section("groups", required=False)
    groups = {}
    for group in groups_section.fields():
        members = groups_section.strings(group)
        if not members:
            groups_section.problem(group, "must name at least one lane")
        groups[group] = members
    groups_section.done()
    settings = ScaleSettings(
        discount_rate=section.number("discount_rate", above=-1.0, hi=10.0),
        min_npv_threshold_usd=section.number("min_npv_threshold_usd", lo=0.0),
        min_confidence=section.number("min_confidence", lo=0.0, hi=1.0),
        max_horizon_days=section.number("max_horizon_days", above=0.0, hi=36_500.0),
        limits=limits,
        lane_limits=lane_limits,
        groups=groups,
        health_window_s=section.number("health_window_s", default=detection_window_s, lo=60.0, hi=7200.0),
        min_reports=section.integer("min_reports", lo=1),
        max_error_rate=section.number("max_error_rate", above=0.0, hi=1.0),
        min_pass_rate=section.number("min_pass_rate", lo=0.0, hi=1.0),
        recent_decisions=section.integer("recent_decisions", lo=1, hi=1000),
    )
    section.done()
    return settings


def _read_stop_loss(section: _Section) -> StopLossSettings:
    settings = StopLossSettings(
        enabled=section.boolean("enabled"),
        check_interval_s=section.number("check_interval_s", lo=0.05, hi=3600.0),
        spend_over_budget_share=section.number("spend_over_budget_share", above=0.0, hi=10.0),
        recent_window_s=section.number("recent_window_s", lo=60.0, hi=7200.0),  # minute buckets
        baseline_window_s=section.number("baseline_window_s", lo=3600.0, hi=30 * 86400.0),
        min_reports=section.integer("min_reports", lo=1),
        pass_rate_drop=section.number("pass_rate_drop", above=0.0, hi=1.0),
        pass_rate_z=section.number("pass_rate_z", lo=0.0, hi=10.0),
        fallback_rate=section.number("fallback_rate", above=0.0, hi=1.0),
        min_decisions=section.integer("min_decisions", lo=1),
        cycle_time_increase=section.number("cycle_time_increase", above=0.0, hi=100.0),
        hysteresis=section.number("hysteresis", lo=0.0, hi=0.9),
        cool_off_s=section.number("cool_off_s", lo=0.0, hi=7 * 86400.0),
    )
    section.done()
    return settings


def _read_strong_or_weak(section: _Section) -> StrongOrWeakSettings:
    settings = StrongOrWeakSettings(
        threshold_usd=section.number("threshold_usd", lo=0.0),
        uncertainty_ratio=section.number("uncertainty_ratio", lo=0.0, hi=1.0),
        calibrated_uncertainty_ratio=section.number("calibrated_uncertainty_ratio", lo=0.0, hi=1.0),
        calibration_min_reports=section.integer("calibration_min_reports", lo=1),
        calibration_window_s=section.number("calibration_window_s", lo=3600.0, hi=30 * 86400.0),
    )
    section.done()
    return settings


def _check_budget_names(
    policy: Policy,
    lanes: dict[str, LaneSpec],
    models: dict[str, ModelSpec],
    problems: list[ConfigProblem],
    path: str,
) -> None:
    """Budgets name lanes and providers defined in the other files."""
    providers = {m.provider for m in models.values()}
    for lane in policy.budgets.lane_daily_usd:
        if lane not in lanes:
            problems.append(ConfigProblem(path, f"budgets.lanes.{lane}", "is not a lane in lanes.toml"))
    for provider in policy.budgets.provider_daily_usd:
        if provider not in providers:
            problems.append(ConfigProblem(path, f"budgets.providers.{provider}", "no model has it"))


def _check_scale_names(
    policy: Policy, lanes: dict[str, LaneSpec], problems: list[ConfigProblem], path: str
) -> None:
    """Scale overrides and groups name lanes from lanes.toml; a group is not also a lane's name."""
    scale = policy.scale
    for lane in scale.lane_limits:
        if lane not in lanes:
            problems.append(ConfigProblem(path, f"scale.lanes.{lane}", "is not a lane in lanes.toml"))
    for group, members in scale.groups.items():
        if group in lanes:
            problems.append(ConfigProblem(path, f"scale.groups.{group}", "is also a lane's id"))
        for lane in members:
            if lane not in lanes:
                problems.append(ConfigProblem(path, f"scale.groups.{group}", f"{lane!r} is not a lane"))


def _read_amounts(section: _Section) -> dict[str, float]:
    """A table of name = USD per day, e.g. a budget per lane."""
    return {name: section.number(name, lo=0.0) for name in section.fields()}


def _read_catalog(root: _Section, policy: Policy) -> dict[str, ModelSpec]:
    models: dict[str, ModelSpec] = {}
    entries = root.raw("models")
    root.done()
    if entries is None:
        return models
    if not isinstance(entries, list) or not entries:
        root.problem("models", "must be a non-empty array of [[models]] tables")
        return models
    capabilities: set[str] = set()
    for index, entry in enumerate(entries):
        m = root.nested(f"models[{index}]", entry)
        model_id = m.identifier("id")
        if model_id in models:
            m.problem("id", f"{model_id!r} appears twice in the catalog")
        ttft = m.number("ttft_s", default=-1.0)
        if m.has("ttft_s") and not 0 <= ttft <= MAX_TTFT_S:
            m.problem("ttft_s", f"must be between 0 and {MAX_TTFT_S:g}")
        spec = ModelSpec(
            id=model_id,
            provider=m.identifier("provider"),
            origin=m.string("origin", choices=ORIGINS),
            input_usd_per_mtok=m.number("input_usd_per_mtok", lo=0.0, hi=MAX_PRICE_USD_PER_MTOK),
            output_usd_per_mtok=m.number("output_usd_per_mtok", lo=0.0, hi=MAX_PRICE_USD_PER_MTOK),
            output_tokens_per_s=m.number("output_tokens_per_s", lo=MIN_SPEED, hi=MAX_SPEED),
            ttft_s=ttft if ttft >= 0 else policy.default_ttft_s,
            quality=m.number("quality", lo=0.0, hi=100.0),
            context_window=m.integer("context_window", lo=1, hi=MAX_TOKENS),
            max_output_tokens=m.integer("max_output_tokens", lo=1, hi=MAX_TOKENS),
            capabilities=frozenset(m.strings("capabilities", default=())),
            enabled=m.boolean("enabled", default=True),
            price_source=m.string("price_source"),
            price_date=m.date("price_date"),
            speed_source=m.string("speed_source"),
            speed_date=m.date("speed_date"),
            quality_source=m.string("quality_source"),
        )
        if spec.max_output_tokens > spec.context_window:
            m.problem("max_output_tokens", "is larger than context_window")
        m.done()
        capabilities |= spec.capabilities
        models[model_id] = spec
    if len(capabilities) > MAX_CAPABILITIES:
        root.problem("models", f"{len(capabilities)} distinct capabilities; at most {MAX_CAPABILITIES}")
    return models


def _read_lanes(root: _Section, models: dict[str, ModelSpec]) -> dict[str, LaneSpec]:
    lanes: dict[str, LaneSpec] = {}
    table = root.section("lanes")
    root.done()
    if not table.fields():
        table.problem("", "must define at least one lane")
    for lane_id in table.fields():
        s = table.section(lane_id)
        if not _ID.match(lane_id):
            s.problem("", "lane ids must be lower-case letters, digits and . _ : / -")
        allowed = s.strings("allowed_models")
        if not allowed:
            s.problem("allowed_models", "must name at least one model")
        for name in allowed:
            if name not in models:
                s.problem("allowed_models", f"{name!r} is not in the catalog")
        fallback = s.string("static_fallback")
        if fallback and fallback not in allowed:
            s.problem("static_fallback", f"{fallback!r} is not in allowed_models")
        elif fallback in models and not models[fallback].enabled:
            s.problem("static_fallback", f"{fallback!r} is disabled in the catalog")
        objective = s.string("default_objective", choices=_OBJECTIVES)
        profile = s.string("default_profile", choices=_PROFILES)
        model_bias = _read_bias(s.section("model_bias", required=False), allowed)
        origin_bias = _read_bias(s.section("origin_bias", required=False), ORIGINS)
        lanes[lane_id] = LaneSpec(
            id=lane_id,
            allowed_models=allowed,
            static_fallback=fallback,
            default_objective=_OBJECTIVES.get(objective, Objective.BALANCED),
            default_profile=_PROFILES.get(profile, Profile.FAST),
            quality_floor=s.number("quality_floor", default=0.0, lo=0.0, hi=100.0),
            critical=s.boolean("critical", default=False),
            enabled=s.boolean("enabled", default=True),
            model_bias=model_bias,
            origin_bias=origin_bias,
            description=s.string("description", default=""),
        )
        s.done()
    return lanes


def _read_bias(section: _Section, known: Iterable[str]) -> dict[str, float]:
    known = set(known)
    bias = {}
    for key in section.fields():
        if key not in known:
            section.problem(key, f"{key!r} is not one of {', '.join(sorted(known))}")
        bias[key] = section.number(key, lo=-1.0, hi=1.0)
    section.done()
    return bias
