"""Request validation: every problem, each with the contract's dotted field path.

The edge turns the violations into INVALID_ARGUMENT with google.rpc.BadRequest;
the router only ever sees requests that passed.
"""

from __future__ import annotations

from collections.abc import Collection

from orxaq_grpc.config.model import Config
from orxaq_grpc.routing.types import RouteRequest
from orxaq_grpc.vocabulary import RequestInvalid, Violation, range_problem

__all__ = ["RequestInvalid", "Violation", "parse_router", "range_problem", "validate_route_request"]

# RouteLLM's named routers: "router-<name>-<threshold>". The success model is the one router here.
ROUTERS = ("learned",)
_ROUTER_PREFIX = "router-"


def router_problem(name: str) -> str | None:
    """What is wrong with a named router, or None."""
    head, _, threshold = name.rpartition("-")
    router = head.removeprefix(_ROUTER_PREFIX)
    if not head.startswith(_ROUTER_PREFIX) or not router or not threshold:
        return f"{name[:64]!r} is not router-<name>-<threshold>, e.g. router-learned-0.55"
    if router not in ROUTERS:
        return f"unknown router {router[:64]!r}; known: {', '.join(ROUTERS)}"
    try:
        value = float(threshold)
    except ValueError:
        return f"threshold {threshold[:64]!r} is not a number"
    return range_problem(value, lo=0.0, hi=1.0)


def parse_router(name: str) -> float:
    """The threshold of a named router that passed validation."""
    return float(name.rpartition("-")[2])


def validate_route_request(
    request: RouteRequest, config: Config, capabilities: Collection[str]
) -> list[Violation]:
    """`capabilities` are those the catalog offers (the router keeps them as a set)."""
    limits = config.policy.limits
    out: list[Violation] = []

    def text(field: str, value: str, limit: int) -> None:
        if len(value) > limit:
            out.append(Violation(field, f"is {len(value)} characters; at most {limit}"))

    if not request.lane:
        out.append(Violation("lane", "is required"))
    elif len(request.lane) > limits.max_text_field_chars:
        text("lane", request.lane, limits.max_text_field_chars)
    elif request.lane not in config.lanes:
        known = ", ".join(sorted(config.lanes))
        out.append(Violation("lane", f"unknown lane {request.lane!r}; known lanes: {known}"))

    task = request.task
    text("task.id", task.id, limits.max_text_field_chars)
    text("task.kind", task.kind, limits.max_text_field_chars)
    text("task.title", task.title, limits.max_title_chars)
    # UTF-8 takes at most 4 bytes a character: only encode when it could matter.
    if len(task.prompt) * 4 > limits.max_prompt_bytes:
        # An ASCII string's length is its size (isascii() reads a flag): no megabyte copy to count it.
        size = (
            len(task.prompt) if task.prompt.isascii() else len(task.prompt.encode("utf-8", "surrogatepass"))
        )
        if size > limits.max_prompt_bytes:
            out.append(Violation("task.prompt", f"is {size} bytes; at most {limits.max_prompt_bytes}"))
    if len(task.labels) > limits.max_labels:
        out.append(Violation("task.labels", f"has {len(task.labels)} labels; at most {limits.max_labels}"))
    for i, label in enumerate(task.labels[: limits.max_labels]):
        text(f"task.labels[{i}]", label, limits.max_text_field_chars)
    for field, count in (
        ("task.input_tokens", task.input_tokens),
        ("task.output_tokens", task.output_tokens),
    ):
        if count < 0:
            out.append(Violation(field, f"must be 0 (estimate) or more, got {count}"))
        elif count > limits.max_tokens:
            out.append(Violation(field, f"is {count}; at most {limits.max_tokens}"))
    _number(out, "task.difficulty", task.difficulty, lo=0.0, hi=100.0)
    _number(out, "task.value_usd", task.value_usd, lo=0.0)

    text("requested_model", request.requested_model, limits.max_text_field_chars)
    if len(request.router) > limits.max_text_field_chars:  # the decision echoes it, twice
        text("router", request.router, limits.max_text_field_chars)
    elif request.router and (problem := router_problem(request.router)):
        out.append(Violation("router", problem))

    constraints = request.constraints
    _number(out, "constraints.max_cost_usd", constraints.max_cost_usd, above=0.0)
    _number(out, "constraints.min_quality", constraints.min_quality, lo=0.0, hi=100.0)
    _number(out, "constraints.max_latency_s", constraints.max_latency_s, above=0.0)
    required = constraints.required_capabilities
    if len(required) > len(capabilities):
        out.append(
            Violation(
                "constraints.required_capabilities",
                f"has {len(required)} entries; the catalog offers {len(capabilities)} capabilities",
            )
        )
        required = ()
    for i, capability in enumerate(required):
        if capability not in capabilities:
            out.append(
                Violation(
                    f"constraints.required_capabilities[{i}]",
                    f"unknown capability {capability[:64]!r}; known: {', '.join(sorted(capabilities))}",
                )
            )
    return out


def _number(
    out: list[Violation],
    field: str,
    value: float | None,
    lo: float | None = None,
    hi: float | None = None,
    above: float | None = None,
) -> None:
    if value is not None and (problem := range_problem(value, lo=lo, hi=hi, above=above)):
        out.append(Violation(field, problem))
