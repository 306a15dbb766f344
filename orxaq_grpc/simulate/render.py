"""The KPIs of a simulated run as an operator reads them: a table, and a plot over time."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def kpi_table(k: dict[str, Any]) -> str:
    tasks, decisions, stop_loss = k["tasks"], k["decisions"], k["stop_loss"]
    lines = [
        f"scenario      {k['scenario']} (seed {k['seed']}, {k['duration_s']:g} s simulated in "
        f"{k['wall_s']:.1f} s, config {k['config_version']})",
        f"tasks         {tasks['arrived']} arrived: {tasks['passed']} passed, {tasks['failed']} failed, "
        f"{tasks['refused']} refused for budget, {tasks['unfinished']} unfinished; "
        f"{tasks['attempts']} model calls",
        f"pass rate     {tasks['pass_rate']:.1%}; cost per passed task "
        f"${tasks['cost_per_passed_task_usd']:.4f}; spend ${k['spend_usd']:.4f}",
        "calls         " + ", ".join(f"{name} {n}" for name, n in tasks["call_outcomes"].items()),
        f"decisions     {decisions['total']}: scored {decisions['scored_share']:.1%}, "
        f"static {decisions['static_share']:.1%}; "
        + ", ".join(f"{name} {n}" for name, n in decisions["by_strategy"].items()),
        "fallbacks     " + ", ".join(f"{name} {n}" for name, n in decisions["by_fallback_reason"].items()),
        f"stop-loss     {stop_loss['time_s']:.0f} s ({stop_loss['share']:.1%} of the run)"
        + "".join(
            f"; {e['trigger']} at {e['entered_s']:.0f} s"
            + (
                f", out by {e['exit'] or '?'} at {e['exited_s']:.0f} s"
                if e["exited_s"] is not None
                else ", still on"
            )
            for e in stop_loss["episodes"]
        ),
        "breakers      "
        + (", ".join(f"{name} opened {n}x" for name, n in k["breaker_openings"].items()) or "none opened"),
        f"route         p50 {k['route_latency_ms']['p50']:.2f} ms, "
        f"p99 {k['route_latency_ms']['p99']:.2f} ms, {k['decisions_per_s']:.0f} decisions/s",
    ]
    for o in k["outages"]:
        back = "never" if o["traffic_back_s"] is None else f"{o['traffic_back_s']:.1f} s after it ended"
        lines.append(
            f"outage        {o['target']} {o['start_s']:g}-{o['end_s']:g} s: routed around after "
            f"{o['routed_around_s']:.1f} s ({o['calls_into_outage']} calls into it), traffic back {back}"
        )
    for e in k["events"]:
        lines.append(
            f"event         {e['event']} at {e['at_s']:g} s" + (f": {e['config']}" if "config" in e else "")
        )
    if k["budgets"]:
        lines.append("")
        columns = ("limit", "spent", "peak held", "overspend")
        lines.append(f"{'budget':<20} " + " ".join(f"{c:>10}" for c in columns) + f" {'in estimates':>12}")
        for b in k["budgets"]:
            name = f"{b['scope']} {b['name']}".strip()
            figures = (b["limit_usd"], b["spent_usd"], b["peak_committed_usd"], b["overspend_usd"])
            lines.append(
                f"{name:<20} "
                + " ".join(f"{f:>10.4f}" for f in figures)
                + f" {b['overspend_estimates']:>12.2f}"
            )
    return "\n".join(lines)


def plot(k: dict[str, Any], path: Path) -> None:
    """Decisions and their static share, spend against the overall budget, stop-loss and open
    breakers over simulated time, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = k["timeline"]
    minutes = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    share = [s["static"] / s["decisions"] if s["decisions"] else 0.0 for s in samples]
    axes[0].plot(minutes, share, color="tab:red", label="static share of decisions")
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("static share")
    axes[0].legend(loc="upper right")
    axes[1].plot(minutes, [s["spend_usd"] for s in samples], label="spend (truth)")
    axes[1].plot(minutes, [s["committed_usd"] for s in samples], label="overall settled + reserved", ls="--")
    overall = [b for b in k["budgets"] if b["scope"] == "overall"]
    if overall:
        axes[1].axhline(overall[0]["limit_usd"], color="black", lw=1, label="overall daily budget")
    axes[1].set_ylabel("USD")
    axes[1].legend(loc="upper left")
    axes[2].fill_between(
        minutes, [int(s["stop_loss"]) for s in samples], step="post", alpha=0.3, label="stop-loss"
    )
    axes[2].step(
        minutes,
        [s["open_breakers"] for s in samples],
        where="post",
        color="tab:purple",
        label="open breakers",
    )
    axes[2].set_ylabel("count")
    axes[2].set_xlabel("simulated minutes")
    axes[2].legend(loc="upper right")
    fig.suptitle(f"{k['scenario']} (seed {k['seed']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
