"""Reads `catalog.toml`, `lanes.toml` and `policy.toml`, validates them by their schema
(`config/schema.py`) and builds the immutable `Config` (`config/model.py`) the service runs on.

Every problem is collected, not just the first, and each names its file, the dotted field and what
is wrong, so `orxaq-grpc check-config` can list them all.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from orxaq_grpc.config.model import (
    AccessSettings,
    AdaptiveWeightsSettings,
    BreakerSettings,
    BudgetSettings,
    CeilingSettings,
    Config,
    Credential,
    DetectionSettings,
    LaneSpec,
    LearningSettings,
    Limits,
    ModelSpec,
    Policy,
    ReportSettings,
    ScaleSettings,
    StopLossSettings,
    StrongOrWeakSettings,
    Weights,
    amortised_usd_per_mtok,
    token_digest,
)
from orxaq_grpc.config.problems import ConfigError, ConfigProblem, problems_of
from orxaq_grpc.config.schema import (
    MAX_AGENTS,
    CatalogFile,
    CredentialEntry,
    LaneEntry,
    LanesFile,
    ModelEntry,
    PolicyFile,
    WeightsTable,
)
from orxaq_grpc.config.tables import Known
from orxaq_grpc.vocabulary import Objective, Profile

__all__ = [
    "CATALOG_FILE",
    "CONFIG_FILES",
    "LANES_FILE",
    "MAX_AGENTS",
    "POLICY_FILE",
    "ConfigError",
    "ConfigProblem",
    "load_config",
]

CATALOG_FILE = "catalog.toml"
LANES_FILE = "lanes.toml"
POLICY_FILE = "policy.toml"
CONFIG_FILES = (CATALOG_FILE, LANES_FILE, POLICY_FILE)

File = TypeVar("File", CatalogFile, LanesFile, PolicyFile)


def load_config(directory: str | Path, replacing: Mapping[str, bytes] | None = None) -> Config:
    """Reads and validates a config directory; raises ConfigError listing every problem.

    `replacing` gives some files' content instead of what is on disk, so an edit can be checked
    in its directory's context before it is written."""
    root = Path(directory)
    tables, version = _read(root, replacing or {})
    problems: list[ConfigProblem] = []
    known = _known(tables)  # lanes name models, policy names lanes and providers

    def validate(schema: type[File], name: str) -> File | None:
        try:
            return schema.model_validate(tables[name], context=known)
        except ValidationError as exc:
            problems.extend(problems_of(str(root / name), exc))
            return None

    catalog = validate(CatalogFile, CATALOG_FILE)
    lanes = validate(LanesFile, LANES_FILE)
    policy = validate(PolicyFile, POLICY_FILE)
    access = _access(policy, root, problems) if policy is not None else None
    if catalog is None or lanes is None or policy is None or access is None:
        raise ConfigError(problems)
    built = _policy(policy, access)
    return Config(
        directory=root,
        version=version,
        models=tuple(sorted((_model(m, built.default_ttft_s) for m in catalog.models), key=lambda m: m.id)),
        lanes={lane_id: _lane(lane_id, lane) for lane_id, lane in lanes.lanes.items()},
        policy=built,
    )


def _read(directory: Path, replacing: Mapping[str, bytes]) -> tuple[dict[str, dict[str, Any]], str]:
    """The parsed files, and the config version: a hash of their content."""
    problems: list[ConfigProblem] = []
    tables: dict[str, dict[str, Any]] = {}
    digest = hashlib.sha256()
    for name in CONFIG_FILES:
        path = directory / name
        try:
            content = replacing[name] if name in replacing else path.read_bytes()
            tables[name] = tomllib.loads(content.decode("utf-8"))
        except FileNotFoundError:
            problems.append(ConfigProblem(str(path), "", "file not found"))
            continue
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            problems.append(ConfigProblem(str(path), "", f"cannot be read: {exc}"))
            continue
        digest.update(name.encode() + b"\0" + content + b"\0")
    if problems:
        raise ConfigError(problems)
    return tables, digest.hexdigest()[:16]


def _known(tables: dict[str, dict[str, Any]]) -> Known:
    """The names each file defines, read from it as given: a model whose price is wrong still
    exists, so a problem in one file hides none in another."""
    lanes = tables[LANES_FILE].get("lanes")
    lane_ids = frozenset(lanes) if isinstance(lanes, dict) else None
    entries = tables[CATALOG_FILE].get("models")
    if not isinstance(entries, list):
        return Known(lanes=lane_ids)
    models = [m for m in entries if isinstance(m, dict)]
    return Known(
        models={m["id"]: m.get("enabled") is not False for m in models if isinstance(m.get("id"), str)},
        providers=frozenset(m["provider"] for m in models if isinstance(m.get("provider"), str)),
        lanes=lane_ids,
    )


# A table whose fields are its dataclass's, by name, passes as it is (`model_dump`).


def _model(entry: ModelEntry, default_ttft_s: float) -> ModelSpec:
    output = entry.output_usd_per_mtok
    if entry.hardware_usd_per_hour is not None:
        output += amortised_usd_per_mtok(entry.hardware_usd_per_hour, entry.output_tokens_per_s)
    return ModelSpec(
        **entry.model_dump(exclude={"ttft_s", "capabilities", "output_usd_per_mtok"}),
        output_usd_per_mtok=output,
        ttft_s=default_ttft_s if entry.ttft_s is None else entry.ttft_s,
        capabilities=frozenset(entry.capabilities),
    )


def _lane(lane_id: str, lane: LaneEntry) -> LaneSpec:
    return LaneSpec(
        id=lane_id,
        **lane.model_dump(exclude={"default_objective", "default_profile"}),
        default_objective=Objective[lane.default_objective.upper()],
        default_profile=Profile[lane.default_profile.upper()],
    )


def _weights(table: WeightsTable) -> Weights:
    return Weights(**table.model_dump())


# A token read from a file or the environment is at least this long: guessing it is out of reach.
MIN_TOKEN_CHARS = 16


def _access(policy: PolicyFile, root: Path, problems: list[ConfigProblem]) -> AccessSettings | None:
    """The credentials, each token read now from its file or variable (so a reload rotates it);
    None, with the problems added, when one cannot be read."""
    path = str(root / POLICY_FILE)
    credentials: list[Credential] = []
    found: list[ConfigProblem] = []
    for index, entry in enumerate(policy.access.credentials):
        where = f"access.credentials[{index}]"
        token, problem = _token(entry, root)
        if problem:
            found.append(ConfigProblem(path, f"{where}.{problem[0]}", problem[1]))
            continue
        digest = bytes.fromhex(entry.sha256) if entry.sha256 else token_digest(token)
        if clash := next((c.name for c in credentials if c.digest == digest), None):
            found.append(ConfigProblem(path, where, f"has the same token as credential {clash!r}"))
        credentials.append(Credential(name=entry.name, role=entry.role, lane=entry.lane, digest=digest))
    problems.extend(found)
    if found:
        return None
    return AccessSettings(reads_open=policy.access.reads == "open", credentials=tuple(credentials))


def _token(entry: CredentialEntry, root: Path) -> tuple[str, tuple[str, str] | None]:
    """The token of a file or variable credential ("" for a sha256 one), or (field, problem)."""
    if entry.token_file:
        try:
            token = (root / entry.token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            return "", ("token_file", f"cannot be read: {exc}")
        source = ("token_file", f"{root / entry.token_file} holds")
    elif entry.token_env:
        token = os.environ.get(entry.token_env, "").strip()
        source = ("token_env", f"${entry.token_env} holds")
    else:
        return "", None
    if len(token) < MIN_TOKEN_CHARS:
        return "", (source[0], f"{source[1]} {len(token)} characters; a token has at least {MIN_TOKEN_CHARS}")
    return token, None


def _policy(policy: PolicyFile, access: AccessSettings) -> Policy:
    objective, estimates, budgets, scale = policy.objective, policy.estimates, policy.budgets, policy.scale
    limits = scale.capacity()
    return Policy(
        routing_enabled=policy.routing.enabled,
        max_alternatives=policy.routing.max_alternatives,
        weights={Objective[name.upper()]: _weights(w) for name, w in policy.weights},
        profile_multipliers={Profile[name.upper()]: _weights(m) for name, m in policy.profiles},
        cost_speed_kinds=frozenset(k.lower() for k in objective.cost_speed_kinds),
        quality_kinds=frozenset(k.lower() for k in objective.quality_kinds),
        cost_speed_keywords=objective.cost_speed_keywords,
        quality_keywords=objective.quality_keywords,
        quality_difficulty_at_least=objective.quality_difficulty_at_least,
        cost_speed_difficulty_at_most=objective.cost_speed_difficulty_at_most,
        quality_input_tokens_at_least=objective.quality_input_tokens_at_least,
        keyword_scan_chars=objective.keyword_scan_chars,
        chars_per_token=estimates.chars_per_token,
        default_output_tokens=estimates.default_output_tokens,
        default_ttft_s=estimates.default_ttft_s,
        price_floor_usd_per_mtok=estimates.price_floor_usd_per_mtok,
        context_ramp_start=policy.context.ramp_start,
        context_ramp_penalty=policy.context.ramp_penalty,
        limits=Limits(**policy.limits.model_dump()),
        detection=DetectionSettings(**policy.detection.model_dump()),
        breakers=BreakerSettings(**policy.breakers.model_dump()),
        budgets=BudgetSettings(
            daily_usd=budgets.daily_usd,
            lane_daily_usd=dict(budgets.lanes),
            provider_daily_usd=dict(budgets.providers),
            reservation_ttl_s=budgets.reservation_ttl_s,
            warn_at=budgets.warn_at,
            on_exhausted=budgets.on_exhausted,
        ),
        scale=ScaleSettings(
            discount_rate=scale.discount_rate,
            min_npv_threshold_usd=scale.min_npv_threshold_usd,
            min_confidence=scale.min_confidence,
            max_horizon_days=scale.max_horizon_days,
            limits=limits,
            lane_limits={lane: own.over(limits) for lane, own in scale.lanes.items()},
            groups=dict(scale.groups),
            health_window_s=policy.detection.window_s
            if scale.health_window_s is None
            else scale.health_window_s,
            min_reports=scale.min_reports,
            max_error_rate=scale.max_error_rate,
            min_pass_rate=scale.min_pass_rate,
            recent_decisions=scale.recent_decisions,
        ),
        stop_loss=StopLossSettings(**policy.stop_loss.model_dump()),
        strong_or_weak=StrongOrWeakSettings(**policy.strong_or_weak.model_dump()),
        reports=ReportSettings(**policy.reports.model_dump()),
        learning=LearningSettings(**policy.learning.model_dump()),
        adaptive_weights=AdaptiveWeightsSettings(**policy.adaptive_weights.model_dump()),
        ledger_retention_days=policy.ledger.retention_days,
        access=access,
        ceilings=CeilingSettings(**policy.ceilings.model_dump()),
    )
