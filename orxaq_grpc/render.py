"""Human-readable text for decisions, economics, health and guardrails, as the CLI prints them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from google.protobuf import json_format
from google.protobuf.message import Message

from orxaq.routing.v1 import routing_pb2 as pb

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper


def to_json(message: Message) -> str:
    return json_format.MessageToJson(message, preserving_proto_field_name=True)


def enum_word(enum_type: EnumTypeWrapper, value: int) -> str:
    """OBJECTIVE_COST_SPEED -> cost_speed, using the proto enum's own prefix; a value this
    client does not know yet (a newer server) prints as its number."""
    if value not in enum_type.values():
        return str(value)
    full = enum_type.Name(value)
    prefix = enum_type.DESCRIPTOR.values[0].name.removesuffix("UNSPECIFIED").removesuffix("NONE")
    return full.removeprefix(prefix).lower()


def decision_text(d: pb.RouteDecision) -> str:
    tokens = "estimated" if d.tokens_estimated else "given"
    difficulty = "estimated" if d.difficulty_estimated else "given"
    fallback = enum_word(pb.FallbackReason, d.fallback_reason)
    if d.fallback_reason:
        fallback += " (disruptive)" if d.fallback_disruptive else " (benign)"
    rows = [
        ("model", f"{d.model} ({d.provider})"),
        ("lane", d.lane),
        ("strategy", enum_word(pb.Strategy, d.strategy)),
        ("fallback", fallback),
        (
            "objective",
            f"{enum_word(pb.Objective, d.objective)} by {enum_word(pb.ObjectiveRule, d.objective_rule)}: "
            f"{d.objective_detail}",
        ),
        ("profile", enum_word(pb.Profile, d.profile)),
        ("score", f"{d.score:.4f} ({d.eligible_count} eligible)"),
        (
            "est. cost",
            f"${d.estimated_cost_usd:.6f} at ${d.input_usd_per_mtok:g} in / "
            f"${d.output_usd_per_mtok:g} out per 1M tokens",
        ),
        ("est. latency", f"{d.estimated_latency_s:.2f} s"),
        ("tokens", f"{d.input_tokens} in + {d.output_tokens} out ({tokens})"),
        ("difficulty", f"{d.difficulty:.0f} ({difficulty})"),
        ("alternatives", ", ".join(d.alternatives) or "-"),
        ("config", d.config_version),
        ("decision id", d.decision_id),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines += ["", d.rationale]
    if d.candidates:
        lines += [
            "",
            table(
                ("#", "model", "score", "cost", "speed", "quality", "bias", "penalty", "est. $", "est. s"),
                [
                    (
                        str(i + 1),
                        c.model,
                        f"{c.score:.4f}",
                        f"{c.cost_score:.3f}",
                        f"{c.speed_score:.3f}",
                        f"{c.quality_score:.3f}",
                        f"{c.bias:+.2f}",
                        f"{c.context_penalty:.3f}",
                        f"{c.estimated_cost_usd:.6f}",
                        f"{c.estimated_latency_s:.2f}",
                    )
                    for i, c in enumerate(d.candidates)
                ],
            ),
        ]
    if d.filtered:
        lines += [
            "",
            table(
                ("filtered", "by", "detail"),
                [(f.model, enum_word(pb.Filter, f.filter), f.detail) for f in d.filtered],
            ),
        ]
    return "\n".join(lines)


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def money(usd: float) -> str:
    sign, size = ("-" if usd < 0 else ""), abs(usd)
    return f"{sign}${size:,.4f}" if size < 100 else f"{sign}${size:,.2f}"


def share(value: float, of: int) -> str:
    """A rate as a percentage, or "-" when there was nothing to take it over (not a real 0.0%)."""
    return f"{value:.1%}" if of else "-"


def _figures_row(name: str, f: pb.Figures) -> tuple[str, ...]:
    return (
        name,
        f"{f.decisions}",
        f"{f.estimated_tokens:,}",
        f"{f.reports}",
        f"{f.reported_tokens:,}",
        money(f.spend_usd),
        f"{f.blended_usd_per_mtok:.3f}" if f.reported_tokens else "-",
        share(f.cache_share, f.reported_input_tokens),
        share(f.fallback_rate, f.decisions),
        share(f.router_error_rate, f.decisions),
        share(f.error_rate, f.reports),
        share(f.first_time_pass_rate, f.reports),
        share(f.acceptance_rate, f.reports),
    )


_FIGURES_HEADER = (
    "",
    "decisions",
    "est. tokens",
    "reports",
    "tokens",
    "spend",
    "$/1M",
    "cached",
    "fallback",
    "router err",
    "errors",
    "first-time",
    "accepted",
)


def economics_text(response: pb.EconomicsResponse, window_name: str) -> str:
    window = next(w for w in response.windows if w.window == window_name)
    o = window.overall
    lines = [
        f"{window_name}: {o.decisions} decisions, {o.reports} reports; spend {money(o.spend_usd)} "
        f"({o.exact_spend_share:.0%} exact), blended {o.blended_usd_per_mtok:.3f} $/1M over "
        f"{o.reported_tokens:,} reported tokens ({share(o.cache_share, o.reported_input_tokens)} of input "
        f"cached); estimated {o.estimated_tokens:,} tokens, "
        f"{money(o.estimated_cost_usd)}; {o.unknown_decision_reports} reports of unknown decisions",
    ]
    for title, groups in (("provider", window.providers), ("lane", window.lanes), ("model", window.models)):
        if groups:
            header = (title, *_FIGURES_HEADER[1:])
            lines += ["", table(header, [_figures_row(g.name, g.figures) for g in groups])]
    busy = [h for h in response.hourly if h.figures.decisions or h.figures.reports]
    if busy:
        rows = [
            (
                f"{int(h.hour_unix % 86400 // 3600):02d}:00 UTC",
                f"{h.figures.decisions}",
                f"{h.figures.reports}",
                money(h.figures.spend_usd),
                share(h.figures.disruptive_fallback_rate, h.figures.decisions),
            )
            for h in busy
        ]
        lines += ["", table(("hour", "decisions", "reports", "spend", "disruptive"), rows)]
    return "\n".join(lines)


def learning_line(learning: pb.Learning) -> str:
    """The success model's mode and what it has learned, per model (passes/outcomes), in one line."""
    learned = sum(m.outcomes for m in learning.models)
    detail = ", ".join(f"{m.model} {m.passes}/{m.outcomes}" for m in learning.models[:4])
    return f"success model {learning.mode}: {learned} outcomes learned" + (f" ({detail})" if detail else "")


def health_text(h: pb.HealthResponse) -> str:
    lines = [
        f"{h.overall.state.upper()}: {h.overall.reason}",
        stop_loss_line(h.guardrails),
        learning_line(h.learning),
        f"config {h.config_version}, up {h.uptime_s:.0f} s, {h.scoring_kernel} kernel, pid {h.pid}"
        + (f", {h.trigger}" if h.trigger else ""),
        f"ledger {h.ledger.location}: {h.ledger.commits} commits, {h.ledger.queued} queued"
        + (
            f", {h.ledger.dropped_decisions} decision-log entries DROPPED"
            if h.ledger.dropped_decisions
            else ""
        ),
        "",
        table(("lane", "state"), [(lane.lane, lane.state) for lane in h.lanes]),
        "",
        table(("provider", "state", "why"), [(p.name, p.state, p.reason) for p in h.providers]),
    ]
    tripped = [b for b in h.breakers if b.state != "closed"]
    if tripped:
        rows = [
            (b.scope, b.name, b.state, b.reason, f"{b.reopens_in_s:.0f} s", str(b.openings)) for b in tripped
        ]
        lines += ["", table(("breaker", "name", "state", "why", "reopens in", "openings"), rows)]
    if h.budgets:
        rows = [
            (
                b.scope,
                b.name or "-",
                money(b.limit_usd),
                money(b.spent_usd),
                money(b.reserved_usd),
                f"{b.used_share:.0%}"
                + (" WARNING" if b.warning else "")
                + (" EXHAUSTED" if b.exhausted else ""),
            )
            for b in h.budgets
        ]
        lines += ["", table(("budget", "name", "limit", "spent", "reserved", "used"), rows)]
    return "\n".join(lines)


def when(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix))


def stop_loss_line(g: pb.Guardrails) -> str:
    if not g.stop_loss_active:
        return "stop-loss off"
    line = f"STOP-LOSS since {when(g.since_unix)} ({g.trigger}): {g.reason}; routing to static pins"
    if g.exits_by_itself:
        line += f", ends in {g.exits_in_s:.0f} s unless a trigger holds again"
    return line


def scale_text(d: pb.ScaleDecision) -> str:
    rows = [
        ("decision", f"{enum_word(pb.ScaleAction, d.action)} {d.target} ({', '.join(d.lanes)})"),
        (
            "agents",
            f"{d.current_parallel_agents} -> {d.requested_parallel_agents} requested, "
            f"{d.allowed_parallel_agents} allowed (max {d.max_parallel_agents}, "
            f"baseline {d.baseline_parallel_agents})",
        ),
        (
            "subagents",
            f"{d.current_subagents_per_agent} -> {d.requested_subagents_per_agent} requested, "
            f"{d.allowed_subagents_per_agent} allowed (max {d.max_subagents_per_agent}, "
            f"baseline {d.baseline_subagents_per_agent})",
        ),
        (
            "marginal NPV",
            f"{money(d.marginal_npv_usd)} = value {money(d.discounted_value_usd)} - cost "
            f"{money(d.discounted_cost_usd)} - penalty {money(d.uncertainty_penalty_usd)} "
            f"(r = {d.discount_rate:.2%}); threshold {money(d.min_npv_threshold_usd)}",
        ),
        (
            "daily spend",
            f"{money(d.projected_daily_spend_usd)} projected of {money(d.daily_budget_usd)}"
            if d.daily_budget_usd
            else "no daily budget applies",
        ),
        ("stop-loss", "ACTIVE" if d.stop_loss_active else "off"),
        ("decision id", d.decision_id),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    if d.blocking:
        lines += [
            "",
            table(
                ("blocked by", "detail"), [(enum_word(pb.ScaleBlock, b.block), b.detail) for b in d.blocking]
            ),
        ]
    return "\n".join([*lines, "", d.rationale])


def guardrails_text(g: pb.Guardrails) -> str:
    lines = [stop_loss_line(g)]
    if g.acknowledged:
        lines.append(f"acknowledged by an operator, re-armed once clear: {', '.join(g.acknowledged)}")
    b = g.baseline
    lines.append(
        f"baseline {when(b.since_unix)} - {when(b.until_unix)}: pass rate {b.pass_rate:.1%}, cycle time "
        f"{b.cycle_time_s:.1f} s over {b.reports} reports"
    )
    if g.triggers:
        rows: list[tuple[str, ...]] = [  # reused below for tables with other column counts
            (t.trigger, "HOLDING" if t.holding else "clear" if t.clear else "recovering", t.detail)
            for t in g.triggers
        ]
        lines += ["", table(("trigger", "state", "reading"), rows)]
    if g.events:
        rows = [(when(e.at_unix), e.kind, e.trigger, e.note or e.detail) for e in g.events]
        lines += ["", table(("stop-loss event", "kind", "trigger", "detail"), rows)]
    if g.scale_decisions:
        rows = [
            (
                when(d.at_unix),
                d.target,
                enum_word(pb.ScaleAction, d.action),
                f"{d.allowed_parallel_agents}x{d.allowed_subagents_per_agent}",
                money(d.marginal_npv_usd),
                ", ".join(enum_word(pb.ScaleBlock, r.block) for r in d.blocking) or "-",
            )
            for d in g.scale_decisions
        ]
        lines += ["", table(("scale decision", "target", "action", "allowed", "NPV", "blocked by"), rows)]
    return "\n".join(lines)
