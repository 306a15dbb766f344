"""The validated configuration, as immutable plain data."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from orxaq_grpc.vocabulary import Objective, Profile


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
    # Prompt-cache prices; None: priced as input (the provider prices no caching, or it is unknown).
    cached_input_usd_per_mtok: float | None = None
    cache_write_usd_per_mtok: float | None = None
    # A local model's amortised hardware and power; output_usd_per_mtok then includes
    # hardware_usd_per_hour spread over an hour of output at output_tokens_per_s.
    hardware_usd_per_hour: float | None = None

    @property
    def cached_input_price(self) -> float:
        """USD per 1M input tokens read from a prompt cache."""
        cached = self.cached_input_usd_per_mtok
        return self.input_usd_per_mtok if cached is None else cached

    @property
    def cache_write_price(self) -> float:
        """USD per 1M input tokens written to a prompt cache."""
        written = self.cache_write_usd_per_mtok
        return self.input_usd_per_mtok if written is None else written


def amortised_usd_per_mtok(hardware_usd_per_hour: float, output_tokens_per_s: float) -> float:
    """An hour of hardware and power spread over the output tokens it makes in that hour."""
    return hardware_usd_per_hour * 1e6 / (3600.0 * output_tokens_per_s)


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
    max_batch_items: int = 1000  # requests in one RouteBatch call


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
    max_retry_after_s: float  # a reported retry-after holds a model's circuit open at most this long


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
class CapacityLimits:
    """How many agents a lane may run at once, and subagents per agent; baseline is where
    stop-loss caps them."""

    max_parallel_agents: int
    max_subagents_per_agent: int
    baseline_parallel_agents: int
    baseline_subagents_per_agent: int

    def strictest(self, other: CapacityLimits) -> CapacityLimits:
        """A scaling group takes the smallest of each limit over its lanes."""
        return CapacityLimits(
            max_parallel_agents=min(self.max_parallel_agents, other.max_parallel_agents),
            max_subagents_per_agent=min(self.max_subagents_per_agent, other.max_subagents_per_agent),
            baseline_parallel_agents=min(self.baseline_parallel_agents, other.baseline_parallel_agents),
            baseline_subagents_per_agent=min(
                self.baseline_subagents_per_agent, other.baseline_subagents_per_agent
            ),
        )


@dataclass(frozen=True, slots=True)
class ScaleSettings:
    """The NPV capacity gate (DESIGN 5)."""

    discount_rate: float  # annual, when a request gives none
    min_npv_threshold_usd: float  # scale up only at or above this (and above 0)
    min_confidence: float  # the confidence form below this is "uncertain": no scale-up
    max_horizon_days: float  # cash flows further out are refused
    limits: CapacityLimits  # defaults for every lane
    lane_limits: dict[str, CapacityLimits]  # per-lane overrides, complete
    groups: dict[str, tuple[str, ...]]  # scaling groups: name -> lanes
    health_window_s: float  # error and pass rates the gate reads
    min_reports: int  # fewer reports in the window: rates are not judged
    max_error_rate: float  # reports with availability failures at or above: unreliable
    min_pass_rate: float  # validation pass rate below: quality not healthy
    recent_decisions: int  # how many Scale decisions Health and Economics show

    def limits_for(self, lanes: tuple[str, ...]) -> CapacityLimits:
        limits = [self.lane_limits.get(lane, self.limits) for lane in lanes]
        strictest = limits[0]
        for other in limits[1:]:
            strictest = strictest.strictest(other)
        return strictest


@dataclass(frozen=True, slots=True)
class StopLossSettings:
    """The four triggers of the plan's stop-loss, and how it ends."""

    enabled: bool
    check_interval_s: float  # how often the triggers are evaluated
    spend_over_budget_share: float  # today's settled spend over daily budget x this; off without a budget
    recent_window_s: float  # pass rate and cycle time now ...
    baseline_window_s: float  # ... against the window just before it
    min_reports: int  # in each window, before pass rate or cycle time is judged
    pass_rate_drop: float  # recent pass rate below baseline minus this ...
    pass_rate_z: float  # ... by at least this many standard errors of the difference (0: any)
    fallback_rate: float  # disruptive fallback rate over the detection window at or above
    min_decisions: int  # in the detection window, before the fallback rate is judged
    cycle_time_increase: float  # mean cycle time up by this fraction with no matching value uplift
    hysteresis: float  # share of each threshold's margin a figure must recover past to count as clear
    cool_off_s: float  # every condition clear this long: stop-loss ends by itself


@dataclass(frozen=True, slots=True)
class StrongOrWeakSettings:
    """Route's economic choice between the best quality and the best cheap candidate."""

    threshold_usd: float  # the strong model wins when its net gain is at least this
    uncertainty_ratio: float  # penalty share of the value gain with catalog-quality probabilities
    calibrated_uncertainty_ratio: float  # ... with probabilities from reported acceptance
    calibration_min_reports: int  # a model's acceptance replaces its catalog quality from this many reports
    calibration_window_s: float


@dataclass(frozen=True, slots=True)
class LearningSettings:
    """The success model: what it learns from, and how far its predictions may steer."""

    mode: Literal["off", "shadow", "apply"]  # shadow: learns and predicts, decides as off
    feature_bits: int  # 2^bits hashed features per model
    prior_sd: float  # of each weight before any outcome
    noise_sd: float  # the probit's noise: larger learns more cautiously
    max_text_chars: int  # of title and prompt kept as features (and in the ledger)
    explore_share: float  # of strong-or-weak decisions that take the other choice, to learn its outcome
    explore_max_usd: float  # an exploring decision costs at most this above the rule's choice
    quality_from_model: bool  # the scored path's quality sub-score is the predicted pass chance
    save_interval_s: float  # how often the model is written to the data directory

    @property
    def learns(self) -> bool:
        return self.mode != "off"

    @property
    def applies(self) -> bool:
        return self.mode == "apply"


@dataclass(frozen=True, slots=True)
class ReportSettings:
    """How far a report is believed: a cost far above its decision's estimate is bounded."""

    max_cost_over_estimate: float  # a report's cost counts at most this many estimates ...
    min_bound_usd: float  # ... or this many USD, whichever is more

    def bound(self, estimate_usd: float) -> float:
        return max(self.max_cost_over_estimate * estimate_usd, self.min_bound_usd)


@dataclass(frozen=True, slots=True)
class AdaptiveWeightsSettings:
    """Objective weights tuned from the outcomes lanes report, within bounds."""

    enabled: bool
    interval_s: float  # between rounds
    min_reports: int  # an objective's outcomes in a round before it is judged
    target_pass_rate: float  # below it, weight moves to quality
    target_latency_s: float  # above it (and passing), weight moves to speed
    step: float  # of weight moved per round
    min_weight: float  # every weight stays within these
    max_weight: float


def token_digest(token: str) -> bytes:
    """What a credential keeps of a token: tokens are random, so a plain SHA-256 hides them."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class Credential:
    """A bearer token the service accepts, by its SHA-256 (the token itself is never kept)."""

    name: str  # who holds it, for logs and answers
    role: str  # "lane": Route and Report for `lane` only; "operator": every call
    lane: str  # "" unless a lane credential
    digest: bytes


@dataclass(frozen=True, slots=True)
class AccessSettings:
    reads_open: bool  # Health, WatchHealth, Economics, grpc.health.v1 and reflection need no token
    credentials: tuple[Credential, ...]

    @property
    def enforced(self) -> bool:
        """With no credentials the service answers whoever reaches it."""
        return bool(self.credentials)


@dataclass(frozen=True, slots=True)
class CeilingSettings:
    max_concurrent_rpcs: int
    max_watch_streams: int
    min_watch_heartbeat_s: float
    lane_requests_per_s: float
    lane_burst: int
    retry_after_s: float


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
    reports: ReportSettings
    scale: ScaleSettings
    stop_loss: StopLossSettings
    strong_or_weak: StrongOrWeakSettings
    learning: LearningSettings
    adaptive_weights: AdaptiveWeightsSettings
    ledger_retention_days: int
    access: AccessSettings
    ceilings: CeilingSettings


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
