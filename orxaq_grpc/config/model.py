"""The validated configuration, as immutable plain data."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from orxaq_grpc.routing.types import Objective, Profile


@dataclass(frozen=True, slots=True)
class ModelSpec:
    id: str
    provider: str
    origin: str  # "hosted" | "local"
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    output_tokens_per_s: float
    ttft_s: float  # the policy default when the catalog does not know it
    quality: float  # 0-100
    context_window: int
    max_output_tokens: int
    capabilities: frozenset[str]
    enabled: bool
    price_source: str
    price_date: dt.date
    speed_source: str
    speed_date: dt.date
    quality_source: str


@dataclass(frozen=True, slots=True)
class LaneSpec:
    id: str
    allowed_models: tuple[str, ...]  # in preference order for the static chain
    static_fallback: str
    default_objective: Objective
    default_profile: Profile
    quality_floor: float
    critical: bool  # resolved objectives never drop to cost_speed
    enabled: bool  # False pins the lane to its static fallback
    model_bias: dict[str, float]
    origin_bias: dict[str, float]
    description: str


@dataclass(frozen=True, slots=True)
class Weights:
    cost: float
    speed: float
    quality: float


@dataclass(frozen=True, slots=True)
class Limits:
    """Request sizes accepted by Route; bigger requests get INVALID_ARGUMENT."""

    max_prompt_bytes: int
    max_title_chars: int
    max_text_field_chars: int  # lane, task id, kind, model names, capabilities
    max_labels: int
    max_tokens: int  # per count, input or output


@dataclass(frozen=True, slots=True)
class DetectionSettings:
    """Lane, provider and overall states over a sliding window of decisions."""

    window_s: float
    degraded_router_error_rate: float  # at or above: degraded
    elevated_fallback_rate: float  # disruptive fallbacks at or above: elevated_fallback


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """Per model and per provider, from reported availability failures."""

    consecutive_failures: int  # this many in a row opens the circuit
    failure_rate: float  # or this share of failures ...
    window_s: float  # ... over this window ...
    min_reports: int  # ... once at least this many reports are in it
    open_s: float  # how long an open circuit stays open before a half-open probe
    half_open_probes: int  # decisions let through while half-open, until a report decides


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    """Daily USD budgets (UTC day); 0 means no budget at that level."""

    daily_usd: float
    lane_daily_usd: dict[str, float]
    provider_daily_usd: dict[str, float]
    reservation_ttl_s: float  # a Route's reservation that no Report settles expires after this
    warn_at: float  # share of a budget used at which Health warns
    on_exhausted: str  # "static_fallback" | "error"


@dataclass(frozen=True, slots=True)
class Policy:
    routing_enabled: bool
    max_alternatives: int
    weights: dict[Objective, Weights]
    profile_multipliers: dict[Profile, Weights]
    cost_speed_kinds: frozenset[str]
    quality_kinds: frozenset[str]
    cost_speed_keywords: tuple[str, ...]
    quality_keywords: tuple[str, ...]
    quality_difficulty_at_least: float
    cost_speed_difficulty_at_most: float
    quality_input_tokens_at_least: int
    keyword_scan_chars: int  # keywords are looked for in the title and this much of the prompt
    chars_per_token: float
    default_output_tokens: int
    default_ttft_s: float
    price_floor_usd_per_mtok: float
    context_ramp_start: float
    context_ramp_penalty: float
    limits: Limits
    detection: DetectionSettings
    breakers: BreakerSettings
    budgets: BudgetSettings
    ledger_retention_days: int


@dataclass(frozen=True, slots=True)
class Config:
    directory: Path
    version: str  # content hash of the config files
    models: tuple[ModelSpec, ...]  # sorted by id: index order is the last tie-break
    lanes: dict[str, LaneSpec]
    policy: Policy

    @property
    def capabilities(self) -> tuple[str, ...]:
        """Every capability some catalog model offers, sorted."""
        return tuple(sorted({c for m in self.models for c in m.capabilities}))
