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
    if k["expectations"]:
        held = sum(v["holds"] for v in k["expectations"])
        lines.append("")
        lines.append(f"expectations  {held} of {len(k['expectations'])} hold")
        lines.extend(
            f"  {'holds' if v['holds'] else 'FAILS'}  {v['name']}: {v['detail']}" for v in k["expectations"]
        )
    return "\n".join(lines)


def plot(k: dict[str, Any], path: Path) -> None:
    """The run over simulated time: pass rate and static share, spend against the overall budget,
    stop-loss and open breakers; the scenario's faults are shaded in every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    faults = [(f"{f['kind']} {f['target']}", f["start_s"], f["end_s"]) for f in k["faults"]]
    bins = _binned(k["timeline"], k["duration_s"])
    minutes = [b["t"] / 60 for b in bins]
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    rates, spend, states = axes
    rates.plot(
        minutes, [_share(b["passed"], b["finished"]) for b in bins], label="pass rate of finished tasks"
    )
    rates.plot(
        minutes, [_share(b["static"], b["decisions"]) for b in bins], label="static share of decisions"
    )
    rates.set_ylim(-0.02, 1.02)
    rates.set_ylabel("share")
    samples = k["timeline"]
    sample_minutes = [s["t"] / 60 for s in samples]
    spend.plot(sample_minutes, [s["spend_usd"] for s in samples], label="spend (what providers charged)")
    overall = [b for b in k["budgets"] if b["scope"] == "overall"]
    if overall:
        spend.plot(sample_minutes, [s["committed_usd"] for s in samples], ls="--", label="settled + reserved")
        spend.axhline(overall[0]["limit_usd"], color="black", lw=1, label="overall daily budget")
    spend.set_ylabel("USD")
    states.fill_between(
        sample_minutes, [int(s["stop_loss"]) for s in samples], step="post", alpha=0.3, label="stop-loss on"
    )
    states.step(sample_minutes, [s["open_breakers"] for s in samples], where="post", label="open breakers")
    states.set_ylabel("count")
    states.set_xlabel("simulated minutes")
    for axis in axes:
        for _, start, end in faults:
            axis.axvspan(start / 60, end / 60, color="tab:red", alpha=0.08)
        axis.legend(loc="best", fontsize="small")
    if faults:
        rates.set_title(", ".join(f"{label} {start / 60:g}-{end / 60:g} min" for label, start, end in faults))
    fig.suptitle(f"{k['scenario']} (seed {k['seed']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _binned(samples: list[dict[str, Any]], duration_s: float, count: int = 120) -> list[dict[str, Any]]:
    """Samples summed into `count` equal bins of the run: per-check counts are too few to read."""
    width = duration_s / count
    bins = [
        {"t": (i + 0.5) * width, "decisions": 0, "static": 0, "passed": 0, "finished": 0}
        for i in range(count)
    ]
    for sample in samples:
        b = bins[min(count - 1, int(sample["t"] / width))]
        for key in ("decisions", "static", "passed", "finished"):
            b[key] += sample[key]
    return bins


def _share(part: float, whole: float) -> float:
    return part / whole if whole else float("nan")
