"""What a span and a metric point say about a decision, a report or a scale call.

Plain functions of the core's records, with no OpenTelemetry import: the names are
ours to keep stable. GenAI names follow the OpenTelemetry GenAI conventions; what
only a router knows sits under `orxaq.`. Enum values are lower-case names, the same
words the CLI and the monitor print.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from orxaq_grpc.outcomes.records import ReportRecord
from orxaq_grpc.routing.types import Decision
from orxaq_grpc.scale.types import ScaleDecision

AttributeValue = str | bool | int | float | tuple[str, ...]
Attributes = dict[str, AttributeValue]

# GenAI conventions.
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
TOKEN_TYPE = "gen_ai.token.type"

# The router's own.
LANE = "orxaq.lane"
DECISION_ID = "orxaq.decision.id"
OBJECTIVE = "orxaq.objective"
OBJECTIVE_RULE = "orxaq.objective.rule"
PROFILE = "orxaq.profile"
STRATEGY = "orxaq.strategy"
FALLBACK_REASON = "orxaq.fallback.reason"
ESTIMATED_COST = "orxaq.estimated_cost_usd"
ESTIMATED_INPUT_TOKENS = "orxaq.estimated_input_tokens"
ESTIMATED_OUTPUT_TOKENS = "orxaq.estimated_output_tokens"
CANDIDATES = "orxaq.candidates"
CONFIG_VERSION = "orxaq.config.version"
COST = "orxaq.cost_usd"
COST_EXACT = "orxaq.cost_exact"
OUTCOME = "orxaq.outcome"
VALIDATION_PASSED = "orxaq.validation_passed"
REPORT_NEW = "orxaq.report.new"
SCALE_TARGET = "orxaq.scale.target"
SCALE_ACTION = "orxaq.scale.action"
SCALE_NPV = "orxaq.scale.npv_usd"
SCALE_THRESHOLD = "orxaq.scale.min_npv_usd"
SCALE_BLOCKING = "orxaq.scale.blocking"
SCALE_PARALLEL_AGENTS = "orxaq.scale.allowed_parallel_agents"
SCALE_SUBAGENTS = "orxaq.scale.allowed_subagents_per_agent"
STOP_LOSS_ACTIVE = "orxaq.stop_loss.active"
LEARNING_MODE = "orxaq.learning.mode"
BATCH_REQUESTS = "orxaq.batch.requests"
BATCH_DECISIONS = "orxaq.batch.decisions"
BATCH_LANES = "orxaq.batch.lanes"
WIN_PROBABILITY = "orxaq.strong_or_weak.win_probability"
EXPLORING = "orxaq.strong_or_weak.exploring"


def word(value: enum.Enum) -> str:
    """NO_ELIGIBLE_CANDIDATE -> 'no_eligible_candidate': what operators read everywhere."""
    return value.name.lower()


def route_attributes(decision: Decision) -> Attributes:
    attributes: Attributes = {
        PROVIDER: decision.provider,
        REQUEST_MODEL: decision.model,
        LANE: decision.lane,
        DECISION_ID: decision.decision_id,
        OBJECTIVE: word(decision.objective),
        OBJECTIVE_RULE: word(decision.objective_rule),
        PROFILE: word(decision.profile),
        STRATEGY: word(decision.strategy),
        FALLBACK_REASON: word(decision.fallback_reason),
        ESTIMATED_COST: decision.estimated_cost_usd,
        ESTIMATED_INPUT_TOKENS: decision.input_tokens,
        ESTIMATED_OUTPUT_TOKENS: decision.output_tokens,
        CANDIDATES: decision.eligible_count,
        CONFIG_VERSION: decision.config_version,
        LEARNING_MODE: decision.learning,
    }
    if (comparison := decision.strong_or_weak) is not None:
        attributes[WIN_PROBABILITY] = comparison.win_probability
        attributes[EXPLORING] = comparison.exploring
    return attributes


def batch_attributes(decisions: Sequence[Decision], requests: int) -> Attributes:
    """A RouteBatch span: how many requests, how many decided (the rest were errors), which lanes."""
    attributes: Attributes = {
        BATCH_REQUESTS: requests,
        BATCH_DECISIONS: len(decisions),
        BATCH_LANES: tuple(sorted({d.lane for d in decisions})),
    }
    if decisions:
        attributes[CONFIG_VERSION] = decisions[0].config_version
    return attributes


def report_attributes(record: ReportRecord, new: bool) -> Attributes:
    return {
        PROVIDER: record.provider,
        RESPONSE_MODEL: record.model,
        LANE: record.lane,
        DECISION_ID: record.decision_id,
        INPUT_TOKENS: record.input_tokens,
        OUTPUT_TOKENS: record.output_tokens,
        COST: record.cost_usd,
        COST_EXACT: record.cost_exact,
        OUTCOME: word(record.outcome),
        VALIDATION_PASSED: record.validation_passed,
        REPORT_NEW: new,
    }


def scale_attributes(decision: ScaleDecision) -> Attributes:
    return {
        SCALE_TARGET: decision.target,
        SCALE_ACTION: word(decision.action),
        SCALE_NPV: decision.marginal_npv_usd,
        SCALE_THRESHOLD: decision.min_npv_threshold_usd,
        SCALE_BLOCKING: tuple(word(b.block) for b in decision.blocking),
        SCALE_PARALLEL_AGENTS: decision.allowed_parallel_agents,
        SCALE_SUBAGENTS: decision.allowed_subagents_per_agent,
        STOP_LOSS_ACTIVE: decision.stop_loss_active,
        CONFIG_VERSION: decision.config_version,
    }
