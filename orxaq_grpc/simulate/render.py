"""The KPIs of a simulated run as an operator reads them: a table, and a plot over time. Runs
compared on the same traffic ([[compare]]) read side by side: totals, per task kind, and over time."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def kpi_table(k: dict[str, Any]) -> str:
    if "runs" in k:
        return _versus_table(k)
    return "\n".join(_run_lines(k) + _expectation_lines(k["expectations"]))


def _run_lines(k: dict[str, Any]) -> list[str]:
    tasks, decisions, stop_loss = k["tasks"], k["decisions"], k["stop_loss"]
    choices = decisions.get("strong_or_weak", {})
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
        *(
            [
                f"strong/weak   strong {choices['strong']}, weak {choices['weak']}; "
                f"{choices['exploring']} exploring, {choices['learned']} on the success model"
            ]
            if choices.get("strong") or choices.get("weak")
            else []
        ),
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
        if e["event"] == "operate":
            lines.append(
                f"operator      {e['action']} {e['target']} at {e['at_s']:g} s, on replica {e['replica']}"
                + ("" if e["changed"] else ": it changed nothing")
            )
        elif e["event"] != "forge":  # the intruder lines below say more
            lines.append(
                f"event         {e['event']} at {e['at_s']:g} s"
                + (f": {e['config']}" if "config" in e else "")
            )
    if operator := k.get("operator"):
        lines += _operator_lines(operator)
    if access := k.get("access"):
        lanes = ", ".join(access["lane_tokens"])
        lines.append(f"access        a token per lane ({lanes}) and an operator's; reads {access['reads']}")
    if forgery := k.get("forgery"):
        lines += _forgery_lines(forgery)
    if replicas := k.get("replicas"):
        lines += _replica_lines(replicas)
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
    return lines


def _forgery_lines(f: dict[str, Any]) -> list[str]:
    """Per intruder: how its calls were answered and what was taken in; what moved across its burst."""
    lines = []
    for i in f["intruders"]:
        answers = ", ".join(f"{code} {n}" for code, n in i["status"].items() if n)
        reasons = ", ".join(f"{reason} {n}" for reason, n in i["reasons"].items())
        token = "" if i["sent_token"] or i["credential"] == "none" else ", no token to send"
        lines += [
            f"intruder      {i['name']} ({i['credential']}{token}) at {i['at_s']:g} s: {i['calls']} calls, "
            + answers
            + (f" ({reasons})" if reasons else ""),
            f"              {i['accepted']} accepted into steering, {i['kept_unknown']} kept as unknown "
            f"decisions, {i['duplicates']} duplicates; moved: ${i['spend_moved_usd']:.4f} spend "
            f"({i['reports_booked']} reports booked), budgets {', '.join(i['budgets_moved_usd']) or 'none'}, "
            f"breakers {', '.join(i['breakers_moved']) or 'none'}, stop-loss {i['stop_loss']}",
        ]
    if f["books"] is not None:
        b = f["books"]
        lines.append(
            f"books         the service booked ${b['service_usd']:.4f}, the providers charged "
            f"${b['providers_usd']:.4f} (off by ${b['off_by_usd']:+.4f})"
        )
    return lines


def _operator_lines(o: dict[str, Any]) -> list[str]:
    """Each pause: the lane's decisions while paused, while the replicas followed, and after the
    resume; each close: when the model was routed again."""
    lines = []
    for p in o["pauses"]:
        to = "the end" if p["resumed_at_s"] is None else f"{p['resumed_at_s']:g} s"
        models = ", ".join(f"{model} {n}" for model, n in p["models"].items())
        following, after = p["following"], p["after_resume"]
        lines.append(
            f"paused        {p['lane']} from {p['paused_at_s']:g} s to {to}: {p['pinned']} of "
            f"{p['decisions']} decisions lane_paused on its static chain ({models or 'none'})"
            + (
                f"; {following['pinned']} of {following['decisions']} while the replicas followed"
                if o["follow_s"]
                else ""
            )
            + (f"; after: {after['lane_paused']} of {after['decisions']} lane_paused" if after else "")
        )
    for c in o["closes"]:
        again = c["routed_again_s"]
        lines.append(
            f"closed        model {c['model']} at {c['at_s']:g} s ({c['state_before']}, a probe in "
            f"{c['reopens_in_s']:.1f} s): "
            + ("never routed again" if again is None else f"routed again after {again:.1f} s")
        )
    return lines


def _replica_lines(r: dict[str, Any]) -> list[str]:
    """Where the calls went, reports and rate limits across replicas, and whether they agreed."""
    by_replica = r["by_replica"]
    how = "sharing a Redis and a ledger" if r["shared"] else "sharing nothing"
    everywhere, reported = r["rate_limits_blocked_everywhere"], r["rate_limits_reported"]
    exchange = r["exchange"]
    agreed = "alike at the end" if r["agree"] else "apart at the end: " + "; ".join(r["differences"])
    lines = [
        f"replicas      {r['count']}, {how}: Routes {', '.join(str(b['routes']) for b in by_replica)}; "
        f"Reports {', '.join(str(b['reports']) for b in by_replica)}",
        f"              {r['cross_replica_reports'] - r['unknown_reports']} of {r['cross_replica_reports']} "
        "reports on another replica than their decision's known there; "
        + (
            f"{everywhere} of {reported} rate limits blocked their model on every replica"
            if reported
            else "no rate limit reported"
        ),
        f"              Economics and Health alike at {r['checks_agreed']} of {r['checks']} checks, {agreed}",
    ]
    if exchange.get("waits"):
        lines.append(
            f"              records applied by every replica within {exchange['mean_ms']:.1f} ms "
            f"(mean), {exchange['max_ms']:.1f} ms (max), over {exchange['waits']} calls"
        )
    return lines


def _expectation_lines(expectations: list[dict[str, Any]]) -> list[str]:
    if not expectations:
        return []
    held = sum(v["holds"] for v in expectations)
    return [
        "",
        f"expectations  {held} of {len(expectations)} hold",
        *(f"  {'holds' if v['holds'] else 'FAILS'}  {v['name']}: {v['detail']}" for v in expectations),
    ]


def _versus_table(k: dict[str, Any]) -> str:
    """Each run's own figures, then the runs side by side: totals, per task kind, over time."""
    runs, v = k["runs"], k["versus"]
    names = list(runs)
    base, cand = v["baseline"], v["candidate"]
    lines = [
        f"scenario      {k['scenario']} (seed {k['seed']}, {k['duration_s']:g} s simulated; "
        f"{len(runs)} runs of the same traffic side by side in {k['wall_s']:.1f} s)",
    ]
    for variant in k["compare"]:
        lines += ["", f"-- run {variant['name']}: {_settings(variant['overrides']) or 'the policy as it is'}"]
        lines += _run_lines(runs[variant["name"]])[1:]
    width = max(12, *(len(name) + 2 for name in names))

    def row(label: str, cells: list[str], change: str = "") -> str:
        return (
            f"{label:<22}"
            + "".join(f"{cell:>{width}}" for cell in cells)
            + (f"   {change}" if change else "")
        )

    totals = v["totals"]
    lines += ["", f"side by side: {cand} against {base}", row("", names, "change")]
    lines.append(
        row(
            "pass rate",
            [f"{totals[n]['pass_rate']:.1%}" for n in names],
            f"{100 * v['pass_rate_gain']:+.1f} points",
        )
    )
    lines.append(
        row(
            "cost per passed task",
            [f"${totals[n]['cost_per_passed_task_usd']:.4f}" for n in names],
            f"{v['cost_per_pass_change']:+.1%}",
        )
    )
    lines.append(row("spend", [f"${totals[n]['spend_usd']:.2f}" for n in names]))
    lines.append(row("passed / finished", [f"{totals[n]['passed']}/{totals[n]['finished']}" for n in names]))
    lines.append(
        row("strong share", [f"{totals[n]['strong_share']:.0%}" for n in names], "of strong-or-weak")
    )

    def cells(f: dict[str, Any] | None) -> str:
        """Pass rate, cost per passed task and strong share; "-" where there is nothing to divide."""
        if f is None:
            return ""
        choices = f["strong"] + f["weak"]
        figures = (
            f"{f['pass_rate']:.1%}" if f["finished"] else "-",
            f"{f['cost_per_passed_task_usd']:.4f}" if f["passed"] else "-",
            f"{f['strong'] / choices:.0%}" if choices else "-",
        )
        return f"{figures[0]:>7} {figures[1]:>9} {figures[2]:>6}"

    heading = f"{'pass':>7} {'$/passed':>9} {'strong':>6}"
    lines += ["", f"{'by task kind':<22}" + "".join(f"   {n:<25}" for n in names)]
    lines.append(f"{'':<22}" + "".join(f"   {heading}" for _ in names))
    kinds = list(dict.fromkeys(kind for n in names for kind in runs[n]["tasks_by_kind"]))
    for kind in kinds:
        figures = [runs[n]["tasks_by_kind"].get(kind) for n in names]
        lines.append(f"{kind or '(no kind)':<22}" + "".join(f"   {cells(f):<25}" for f in figures))
    lines += ["", f"{'over time':<22}" + "".join(f"   {n:<25}" for n in names)]
    lines.append(f"{'(minutes)':<22}" + "".join(f"   {heading}" for _ in names))
    for w in v["windows"]:
        span = f"{w['start_s'] / 60:g}-{w['end_s'] / 60:g}"
        lines.append(f"{span:<22}" + "".join(f"   {cells(w[n]):<25}" for n in names))
    return "\n".join(line.rstrip() for line in lines + _expectation_lines(k["expectations"]))


def _settings(overrides: dict[str, Any], prefix: str = "") -> str:
    """Overrides as the dotted assignments `--set` takes: policy.learning.mode=off."""
    parts = []
    for key, value in overrides.items():
        if isinstance(value, dict):
            parts.append(_settings(value, f"{prefix}{key}."))
        else:
            parts.append(f"{prefix}{key}={value}")
    return ", ".join(part for part in parts if part)


def plot(k: dict[str, Any], path: Path) -> None:
    """The run over simulated time: pass rate and static share, spend against the overall budget,
    stop-loss and open breakers; the scenario's faults are shaded in every panel, intruders marked.
    Compared runs: one curve per run of pass rate, cost per passed task and strong share, per window
    and to date."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "runs" in k:
        _plot_versus(k, path, plt)
        return

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
    intruders = [e["at_s"] / 60 for e in k["events"] if e["event"] == "forge"]
    operator = [e["at_s"] / 60 for e in k["events"] if e["event"] == "operate"]
    for axis in axes:
        for _, start, end in faults:
            axis.axvspan(start / 60, end / 60, color="tab:red", alpha=0.08)
        for i, at in enumerate(intruders):
            axis.axvline(at, color="tab:purple", ls=":", lw=1, label="intruder" if i == 0 else None)
        for i, at in enumerate(operator):
            axis.axvline(at, color="tab:green", ls="--", lw=1, label="operator" if i == 0 else None)
        axis.legend(loc="best", fontsize="small")
    if faults:
        rates.set_title(", ".join(f"{label} {start / 60:g}-{end / 60:g} min" for label, start, end in faults))
    fig.suptitle(f"{k['scenario']} (seed {k['seed']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_versus(k: dict[str, Any], path: Path, plt: Any) -> None:
    v = k["versus"]
    windows = v["windows"]
    minutes = [(w["start_s"] + w["end_s"]) / 120 for w in windows]
    ends = [w["end_s"] / 60 for w in windows]
    fig, (rates, costs, strong) = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    for i, name in enumerate(k["runs"]):
        color = f"C{i}"
        total = v["totals"][name]

        def series(key: str, run: str = name) -> list[float]:
            return [w[run][key] if w[run]["finished"] else float("nan") for w in windows]

        rates.plot(minutes, series("pass_rate"), color=color, marker="o", label=f"{name} per window")
        rates.plot(ends, series("pass_rate_to_date"), color=color, ls="--", label=f"{name} to date")
        costs.plot(
            minutes,
            [w[name]["cost_per_passed_task_usd"] if w[name]["passed"] else float("nan") for w in windows],
            color=color,
            marker="o",
            label=f"{name} per window (total ${total['cost_per_passed_task_usd']:.4f})",
        )
        costs.plot(
            ends, series("cost_per_passed_task_to_date_usd"), color=color, ls="--", label=f"{name} to date"
        )
        strong.plot(
            minutes,
            [
                w[name]["strong_share"] if w[name]["strong"] + w[name]["weak"] else float("nan")
                for w in windows
            ],
            color=color,
            marker="o",
            label=name,
        )
    rates.set_ylabel("pass rate")
    costs.set_ylabel("USD per passed task")
    costs.set_ylim(bottom=0)
    strong.set_ylabel("strong share of\nstrong-or-weak")
    strong.set_ylim(-0.02, 1.02)
    strong.set_xlabel(f"simulated minutes (windows of {v['window_s'] / 60:g} min)")
    for axis in (rates, costs, strong):
        axis.legend(loc="best", fontsize="small")
    rates.set_title(
        f"{v['candidate']} against {v['baseline']}: cost per passed task {v['cost_per_pass_change']:+.1%}, "
        f"pass rate {100 * v['pass_rate_gain']:+.1f} points"
    )
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
