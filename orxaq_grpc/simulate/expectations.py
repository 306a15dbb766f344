"""A scenario's expectations judged on the KPIs of its run (or of its [[compare]] runs side by side):
each one holds or says why not."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orxaq_grpc.simulate.scenario import Expectations, Versus


@dataclass(frozen=True, slots=True)
class Verdict:
    name: str
    holds: bool
    detail: str


def judge(expect: Expectations, k: dict[str, Any], open_s: float) -> list[Verdict]:
    verdicts: list[Verdict] = []
    if expect.max_overspend_estimates is not None:
        limit = expect.max_overspend_estimates
        for b in k["budgets"]:
            name = f"{b['scope']} {b['name']}".strip()
            verdicts.append(
                Verdict(
                    f"budget {name} is a cap",
                    b["overspend_estimates"] <= limit + 1e-9,
                    f"spent ${b['spent_usd']:.4f} of ${b['limit_usd']:.4f}, over by "
                    f"{b['overspend_estimates']:.2f} estimates (at most {limit:g})",
                )
            )
    if expect.min_scored_share is not None:
        share = k["decisions"]["scored_share"]
        verdicts.append(
            Verdict(
                "scored decisions",
                share >= expect.min_scored_share,
                f"{share:.1%} scored (at least {expect.min_scored_share:.0%})",
            )
        )
    stop_loss = k["stop_loss"]
    if expect.max_stop_loss_s is not None:
        verdicts.append(
            Verdict(
                "time in stop-loss",
                stop_loss["time_s"] <= expect.max_stop_loss_s,
                f"{stop_loss['time_s']:.0f} s (at most {expect.max_stop_loss_s:g})",
            )
        )
    episodes = stop_loss["episodes"]
    if expect.stop_loss_trigger:
        triggers = [e["trigger"] for e in episodes]
        verdicts.append(
            Verdict(
                f"stop-loss enters on {expect.stop_loss_trigger}",
                bool(triggers) and expect.stop_loss_trigger in triggers[0].split(","),
                f"entered on {', '.join(triggers) or 'nothing'}",
            )
        )
    if expect.stop_loss_ends_by_itself:
        ends = [e["exit"] or "still on" for e in episodes]
        verdicts.append(
            Verdict(
                "stop-loss ends by itself",
                bool(episodes) and all(end == "cool_off" for end in ends),
                f"{len(episodes)} episode(s), ended by {', '.join(ends) or '-'}",
            )
        )
    for o in k["outages"]:
        if expect.max_routed_around_s is not None and o["provider_wide"]:
            verdicts.append(
                Verdict(
                    f"outage of {o['target']} routed around",
                    o["routed_around_s"] <= expect.max_routed_around_s,
                    f"after {o['routed_around_s']:.1f} s (at most {expect.max_routed_around_s:g})",
                )
            )
        if expect.traffic_back_after_open_s:
            back, probe = o["traffic_back_s"], o["probe_latency_s"]
            verdicts.append(
                Verdict(
                    f"{o['target']} gets traffic back",
                    back is not None and back <= open_s + probe,
                    "never"
                    if back is None
                    else f"{back:.1f} s after the outage (open_s {open_s:g} s + probe {probe:.1f} s)",
                )
            )
    providers = {name: n for name, n in k["breaker_openings"].items() if name.startswith("provider ")}
    if expect.no_provider_breaker:
        verdicts.append(
            Verdict(
                "no provider circuit opens",
                not providers,
                ", ".join(f"{name} {n}x" for name, n in providers.items()) or "none opened",
            )
        )
    for provider in expect.providers_never_open:
        opened = providers.get(f"provider {provider}", 0)
        verdicts.append(Verdict(f"provider {provider} never opens", not opened, f"opened {opened}x"))
    if expect.stop_loss_only_after_a_fault:
        first_fault = min((f["start_s"] for f in k["faults"]), default=k["duration_s"])
        early = [e for e in episodes if e["entered_s"] < first_fault]
        verdicts.append(
            Verdict(
                "stop-loss only after a fault",
                not early,
                ", ".join(f"{e['trigger']} at {e['entered_s']:.0f} s" for e in early)
                + f" before {first_fault:g} s"
                if early
                else f"none before {first_fault:g} s",
            )
        )
    if "forgery" in k:
        verdicts += _forgery(expect, k["forgery"])
    if "replicas" in k:
        verdicts += _replicas(expect, k["replicas"])
    if "operator" in k:
        verdicts += _operator(expect, k["operator"])
    return verdicts


def _operator(expect: Expectations, o: dict[str, Any]) -> list[Verdict]:
    """An operator's pauses and closes (kpis.Operated)."""
    verdicts: list[Verdict] = []
    if expect.paused_lanes_pinned:
        for pause in o["pauses"]:
            verdicts += _pinned(pause, o["follow_s"])
        verdicts += _pauses_look_deliberate(o)
    if expect.closed_breakers_take_traffic:
        verdicts += [_took_traffic(close) for close in o["closes"]]
    return verdicts


def _pinned(p: dict[str, Any], follow_s: float) -> list[Verdict]:
    lane, paused_at = p["lane"], p["paused_at_s"]
    grace = f" + {follow_s:g} s for every replica to follow" if follow_s else ""
    models = ", ".join(f"{model} {n}" for model, n in p["models"].items())
    misses = "; ".join(
        f"{d['t']:.1f} s {d['strategy']} ({d['reason']}) {d['model']}" for d in p["not_pinned_first"]
    )
    to = "the end" if p["resumed_at_s"] is None else f"{p['resumed_at_s']:g} s"
    verdicts = [
        Verdict(
            f"lane {lane} pinned while paused at {paused_at:g} s",
            p["decisions"] > 0 and p["pinned"] == p["decisions"],
            f"{p['pinned']} of {p['decisions']} decisions from {paused_at:g} s{grace} to {to} "
            f"lane_paused on its static chain"
            + (f" ({models})" if models else "")
            + (f"; first not: {misses}" if misses else ""),
        )
    ]
    after = p["after_resume"]
    if after is not None:
        verdicts.append(
            Verdict(
                f"lane {lane} routed as before once resumed at {p['resumed_at_s']:g} s",
                after["decisions"] > 0 and after["lane_paused"] == 0,
                f"{after['lane_paused']} of {after['decisions']} decisions from {after['from_s']:g} s to "
                f"{after['to_s']:g} s lane_paused",
            )
        )
    return verdicts


def _pauses_look_deliberate(o: dict[str, Any]) -> list[Verdict]:
    """A paused lane's static decisions are deliberate: no stop-loss for an unstable router, and no
    overall detection state that says so, from the first pause on."""
    since, entered = o["since_first_pause_s"], o["router_unstable_entered_s"]
    states = o["overall_states"]
    alarmed = {state: n for state, n in states.items() if state in ("degraded", "elevated_fallback")}
    return [
        Verdict(
            "no stop-loss on router_unstable once a lane is paused",
            not entered,
            f"entered at {', '.join(f'{t:.0f} s' for t in entered)}"
            if entered
            else f"none from {since:g} s on",
        ),
        Verdict(
            "overall detection calm once a lane is paused",
            bool(states) and not alarmed,
            f"at the checks from {since:g} s on: " + ", ".join(f"{state} {n}" for state, n in states.items()),
        ),
    ]


def _took_traffic(c: dict[str, Any]) -> Verdict:
    """A model whose open circuit an operator closed is routed before the circuit would have let a
    probe through by itself: the close, not the circuit's own timer, gave it its traffic back."""
    name = f"model {c['model']} routed once closed at {c['at_s']:g} s"
    if c["state_before"] != "open":
        return Verdict(name, False, f"its circuit was {c['state_before']}, not open: nothing to judge")
    again, reopens_in = c["routed_again_s"], c["reopens_in_s"]
    return Verdict(
        name,
        again is not None and again < reopens_in,
        ("never routed again" if again is None else f"routed again {again:.1f} s after the close")
        + f" (its circuit would have let a probe through in {reopens_in:.1f} s)",
    )


def _replicas(expect: Expectations, r: dict[str, Any]) -> list[Verdict]:
    """Several replicas judged as one service (kpis.Replicated)."""
    verdicts: list[Verdict] = []
    count = r["count"]
    if expect.replicas_agree:
        first = r["by_replica"][0] if r["by_replica"] else None
        agreed = (
            f"{count} replicas: {first['decisions_today']} decisions, {first['reports_today']} reports, "
            f"${first['spend_today_usd']:.4f} today on each; open breakers "
            f"{', '.join(first['open_breakers']) or 'none'}; "
            f"stop-loss {'on' if first['stop_loss'] else 'off'}"
            if first is not None
            else ""
        )
        verdicts.append(
            Verdict(
                "replicas agree at the end", r["agree"], agreed if r["agree"] else "; ".join(r["differences"])
            )
        )
        checks, held = r["checks"], r["checks_agreed"]
        first_miss = r["first_disagreement"]
        verdicts.append(
            Verdict(
                "replicas agree at every check",
                checks > 0 and held == checks,
                f"{held} of {checks} stop-loss checks"
                + (
                    f"; first apart at {first_miss['t']:g} s: {'; '.join(first_miss['differences'])}"
                    if first_miss
                    else ""
                ),
            )
        )
    if expect.reports_known_on_any_replica:
        cross, unknown = r["cross_replica_reports"], r["unknown_reports"]
        verdicts.append(
            Verdict(
                "reports known on the replica they reach",
                cross > 0 and unknown == 0,
                f"{cross - unknown} of {cross} reports sent to another replica than the one that "
                "routed them were known there",
            )
        )
        reserved, in_flight = r["reserved_at_end_usd"], r["in_flight_estimates_usd"]
        verdicts.append(
            Verdict(
                "reports settle their reservation wherever they land",
                reserved is not None and abs(reserved - in_flight) <= 1e-6 * max(1.0, in_flight),
                "no overall budget: no reservation to judge"
                if reserved is None
                else f"${reserved:.4f} reserved at the end; the {r['in_flight_at_end']} decisions still in "
                f"flight estimated ${in_flight:.4f}",
            )
        )
    if expect.rate_limits_block_everywhere:
        reported, everywhere = r["rate_limits_reported"], r["rate_limits_blocked_everywhere"]
        missed = "; ".join(
            f"{m['model']} at {m['at_s']:g} s, routed by replica {m['routed_by']}, reported to "
            f"{m['reported_to']}: its circuit {', '.join(m['circuits'])}"
            for m in r["rate_limits_not_everywhere"]
        )
        verdicts.append(
            Verdict(
                "rate limits block their model on every replica",
                reported > 0 and everywhere == reported,
                f"{everywhere} of {reported} rate limits reported to one replica blocked the model on all "
                f"{count}" + (f" (first misses: {missed})" if missed else ""),
            )
        )
    return verdicts


def _forgery(expect: Expectations, f: dict[str, Any]) -> list[Verdict]:
    """The intruders' calls and what moved across their bursts (kpis.Collector._forgery)."""
    verdicts: list[Verdict] = []
    if expect.max_forgeries_accepted is not None:
        taken = ", ".join(f"{call} {n}" for call, n in f["accepted_by_call"].items())
        answers = ", ".join(f"{code} {n}" for code, n in f["status"].items() if n)
        verdicts.append(
            Verdict(
                "forgeries accepted",
                f["accepted"] <= expect.max_forgeries_accepted,
                f"{f['accepted']} of {f['calls']} intruder calls taken into steering"
                + (f" ({taken})" if taken else "")
                + f", at most {expect.max_forgeries_accepted}; answered {answers or 'nothing'}",
            )
        )
    if not expect.forgery_moves_nothing:
        return verdicts
    moved = f["reports_booked"] or f["spend_moved_usd"] > 1e-9 or f["budgets_moved"]
    verdicts.append(
        Verdict(
            "forgery moves no spend or budget",
            not moved,
            f"{f['reports_booked']} forged reports booked, ${f['spend_moved_usd']:.4f} of spend, "
            f"budgets moved: {', '.join(f['budgets_moved']) or 'none'}; "
            f"{f['kept_unknown']} kept as reports of unknown decisions",
        )
    )
    breakers, opened = f["breakers_moved"], f["breakers_opened"]
    verdicts.append(
        Verdict(
            "forgery moves no breaker",
            not breakers,
            f"moved {', '.join(breakers)}; opened {', '.join(opened) or 'none'}"
            if breakers
            else "none moved",
        )
    )
    verdicts.append(
        Verdict(
            "forgery does not steer stop-loss",
            not f["stop_loss_moved_by"],
            f"moved by {', '.join(f['stop_loss_moved_by'])}" if f["stop_loss_moved_by"] else "unchanged",
        )
    )
    books = f["books"]
    if books is not None:
        off = books["off_by_usd"]
        verdicts.append(
            Verdict(
                "the service's books match the providers' charges",
                abs(off) <= 1e-6 * max(1.0, books["providers_usd"]),
                f"booked ${books['service_usd']:.4f}, charged ${books['providers_usd']:.4f} "
                f"(off by ${off:+.4f})",
            )
        )
    return verdicts


def judge_versus(expect: Versus, k: dict[str, Any]) -> list[Verdict]:
    """The candidate against the baseline, on `kpis.versus` of their runs."""
    verdicts: list[Verdict] = []
    base, cand = k["baseline"], k["candidate"]
    b, c = k["totals"][base], k["totals"][cand]
    if expect.min_cost_per_pass_cut is not None:
        cut = -k["cost_per_pass_change"]
        verdicts.append(
            Verdict(
                f"{cand} cheaper per passed task than {base}",
                c["passed"] > 0 and b["passed"] > 0 and cut >= expect.min_cost_per_pass_cut - 1e-9,
                f"${c['cost_per_passed_task_usd']:.4f} against ${b['cost_per_passed_task_usd']:.4f}: "
                f"{cut:.1%} lower (at least {expect.min_cost_per_pass_cut:.0%})",
            )
        )
    if expect.min_pass_rate_gain is not None:
        gain = k["pass_rate_gain"]
        verdicts.append(
            Verdict(
                f"{cand} passes as often as {base}",
                c["finished"] > 0 and gain >= expect.min_pass_rate_gain - 1e-9,
                f"{c['pass_rate']:.1%} against {b['pass_rate']:.1%}: {100 * gain:+.1f} points "
                f"(at least {100 * expect.min_pass_rate_gain:+.1f})",
            )
        )
    return verdicts
