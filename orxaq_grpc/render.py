"""Human-readable text for decisions, as the CLI prints them."""

from __future__ import annotations

from orxaq.routing.v1 import routing_pb2 as pb


def _name(enum_type, value: int) -> str:
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
    fallback = _name(pb.FallbackReason, d.fallback_reason)
    if d.fallback_reason:
        fallback += " (disruptive)" if d.fallback_disruptive else " (benign)"
    rows = [
        ("model", f"{d.model} ({d.provider})"),
        ("lane", d.lane),
        ("strategy", _name(pb.Strategy, d.strategy)),
        ("fallback", fallback),
        (
            "objective",
            f"{_name(pb.Objective, d.objective)} by {_name(pb.ObjectiveRule, d.objective_rule)}: "
            f"{d.objective_detail}",
        ),
        ("profile", _name(pb.Profile, d.profile)),
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
            _table(
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
            _table(
                ("filtered", "by", "detail"),
                [(f.model, _name(pb.Filter, f.filter), f.detail) for f in d.filtered],
            ),
        ]
    return "\n".join(lines)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )
