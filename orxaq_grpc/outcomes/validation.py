"""Report validation: every problem, each with the contract's field name."""

from __future__ import annotations

from orxaq_grpc.config.model import Config
from orxaq_grpc.outcomes.records import Outcome, ReportInput
from orxaq_grpc.vocabulary import Violation, range_problem

MAX_RETRY_AFTER_S = 86_400.0
MAX_REPORTED_COST_USD = 1_000_000.0
MAX_LATENCY_S = 7 * 86_400.0


def validate_report(report: ReportInput, config: Config) -> list[Violation]:
    limits = config.policy.limits
    out: list[Violation] = []

    def problem(field: str, text: str | None) -> None:
        if text:
            out.append(Violation(field, text))

    if not report.decision_id:
        problem("decision_id", "is required")
    elif len(report.decision_id) > limits.max_text_field_chars:
        size = len(report.decision_id)
        problem("decision_id", f"is {size} characters; at most {limits.max_text_field_chars}")
    if not report.lane:
        problem("lane", "is required")
    elif report.lane not in config.lanes:
        problem("lane", f"unknown lane {report.lane[:64]!r}; known lanes: {', '.join(sorted(config.lanes))}")
    model = next((m for m in config.models if m.id == report.model), None)
    if not report.model:
        problem("model", "is required")
    elif model is None:
        problem("model", f"unknown model {report.model[:64]!r}: report models from the catalog")
    elif report.provider != model.provider:
        problem("provider", f"{report.provider[:64]!r} is not {model.id}'s provider ({model.provider!r})")
    for field, count in (("input_tokens", report.input_tokens), ("output_tokens", report.output_tokens)):
        if count < 0 or count > limits.max_tokens:
            problem(field, f"must be between 0 and {limits.max_tokens}, got {count}")
    # Cache reads and writes are part of input_tokens (checked against it once it is valid).
    total = report.input_tokens if 0 <= report.input_tokens <= limits.max_tokens else None
    cached, written = report.cached_input_tokens, report.cache_write_tokens
    for field, count in (("cached_input_tokens", cached), ("cache_write_tokens", written)):
        if count < 0 or count > limits.max_tokens:
            problem(field, f"must be between 0 and {limits.max_tokens}, got {count}")
        elif total is not None and count > total:
            problem(field, f"is part of input_tokens: at most {total}, got {count}")
    if total is not None and 0 <= cached <= total and 0 <= written <= total < cached + written:
        problem(
            "cache_write_tokens",
            f"with cached_input_tokens ({cached}) is part of input_tokens: together at most "
            f"{total}, got {cached + written}",
        )
    problem("latency_s", range_problem(report.latency_s, lo=0.0, hi=MAX_LATENCY_S))
    if report.outcome == Outcome.UNSPECIFIED:
        problem("outcome", "is required: success or an error class")
    problem("retry_after_s", range_problem(report.retry_after_s, lo=0.0, hi=MAX_RETRY_AFTER_S))
    if report.retry_after_s and report.outcome != Outcome.RATE_LIMITED:
        problem("retry_after_s", "only a rate-limited outcome carries a retry-after")
    if report.cost_usd is not None:
        problem("cost_usd", range_problem(report.cost_usd, lo=0.0, hi=MAX_REPORTED_COST_USD))
    return out
