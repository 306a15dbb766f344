"""Every shipped fleet scenario at full scale, and whether each guardrail held.

The test suite runs the scenarios shortened; this runs them as shipped, plus the variants the
guarantees name: the budget race with stop-loss on and off, either exhaustion policy and the
shipped stop-loss threshold, and rate-limit noise at 1% and 5%. For each run it prints the KPIs
that decide (spend against budgets, scored share, time in stop-loss and its trigger, the outage
figures) and every expectation of the scenario file. A scenario that compares runs ([[compare]],
e.g. learning off against apply) prints a row per run and the candidate against the baseline.
Exit 1 if any expectation fails. Figures, not timings: the simulated clock makes every run's
decisions the same on every machine (the same seed gives the same run); only the wall-clock
columns vary.

Run from the repository root (about three minutes on 2 cores, the learning comparison
half a minute of it):

    .venv/bin/python benchmarks/fleet.py
    .venv/bin/python benchmarks/fleet.py --plots build/fleet   # a PNG of each run over time
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from orxaq_grpc.simulate.engine import run_scenario
from orxaq_grpc.simulate.render import plot
from orxaq_grpc.simulate.scenario import load_scenario, parse_assignments

SCENARIOS = Path(__file__).resolve().parent.parent / "config" / "scenarios"
BUDGETS = "policy.overrides.policy.budgets.on_exhausted"
STOP_LOSS = "policy.overrides.policy.stop_loss.enabled"
SHARE = "policy.overrides.policy.stop_loss.spend_over_budget_share"
RUNS: list[tuple[str, str, tuple[str, ...]]] = [
    ("budget-race", "stop-loss on, static_fallback", ()),
    ("budget-race", "stop-loss on, error", (f"{BUDGETS}=error",)),
    ("budget-race", "stop-loss off, static_fallback", (f"{STOP_LOSS}=false",)),
    ("budget-race", "stop-loss off, error", (f"{STOP_LOSS}=false", f"{BUDGETS}=error")),
    # The shipped threshold: the cap holds, so spend never passes 100%, and the refusals are the
    # budget at work: no stop-loss at all (not router_unstable).
    ("budget-race", "stop-loss at 100% of a budget", (f"{SHARE}=1.0", "expect.max_stop_loss_s=0")),
    ("restart", "", ()),
    ("rate-limit-noise", "1%", ()),
    ("rate-limit-noise", "5%", ("faults.0.share=0.05", "expect.min_scored_share=0.90")),
    ("provider-outage", "", ()),
    ("price-drift", "", ()),
    ("quality-regression", "", ()),
    ("slowdown", "", ()),
    ("forged-reports", "", ()),
    ("learning", "", ()),
    # Three replicas sharing a Redis and a ledger, round robin, each report to another replica.
    ("replicas", "", ()),
    # An operator pauses a lane and closes a circuit by hand, each call to one of two replicas.
    ("operator", "", ()),
]


def rows(name: str, variant: str, k: dict[str, Any]) -> list[str]:
    """One row per run; compared runs also the candidate against the baseline, and the wall time of
    all of them side by side."""
    if "runs" not in k:
        return [row(name, variant, k)]
    label = f"{name} ({variant})" if variant else name
    held = sum(v["holds"] for v in k["expectations"])
    v = k["versus"]
    return [
        *(row(label, run, kpis) for run, kpis in k["runs"].items()),
        f"{'':<4}{v['candidate']} against {v['baseline']}: cost per passed task "
        f"{v['cost_per_pass_change']:+.1%}, pass rate {100 * v['pass_rate_gain']:+.1f} points; "
        f"{held}/{len(k['expectations'])} held; {len(k['runs'])} runs in {k['wall_s']:.1f} s",
    ]


def row(name: str, variant: str, k: dict[str, Any]) -> str:
    stop_loss = k["stop_loss"]
    triggers = ",".join(sorted({e["trigger"] for e in stop_loss["episodes"]})) or "-"
    worst = max((b["overspend_estimates"] for b in k["budgets"]), default=0.0)
    held = sum(v["holds"] for v in k["expectations"])
    label = f"{name} ({variant})" if variant else name
    return (
        f"{label:<46} {k['decisions']['total']:>9} {k['decisions']['scored_share']:>7.1%} "
        f"{k['tasks']['pass_rate']:>6.1%} {k['tasks']['cost_per_passed_task_usd']:>9.4f} "
        f"{k['spend_usd']:>9.2f} {worst:>9.2f} {stop_loss['share']:>7.1%} {triggers:<16} "
        f"{held}/{len(k['expectations'])}  {k['wall_s']:>6.1f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--plots", type=Path, help="a directory for one PNG per run")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.ERROR
    )  # the service's own warnings (stop-loss entered, ...) are in the table
    if args.plots:
        args.plots.mkdir(parents=True, exist_ok=True)
    print(
        f"{'scenario':<46} {'decisions':>9} {'scored':>7} {'pass':>6} {'$/passed':>9} {'spend $':>9} "
        f"{'over est':>9} {'in s-l':>7} {'s-l trigger':<16} held  wall s"
    )
    failures = []
    for name, variant, assignments in RUNS:
        path = SCENARIOS / f"{name}.toml"
        kpis = run_scenario(load_scenario(path, parse_assignments(list(assignments))), path)
        print("\n".join(rows(name, variant, kpis)), flush=True)
        failures += [
            f"{name} {variant}: {v['name']}: {v['detail']}" for v in kpis["expectations"] if not v["holds"]
        ]
        if args.plots:
            slug = f"{name}-{variant}".strip("-").replace(" ", "").replace(",", "-").replace("%", "pct")
            plot(kpis, args.plots / f"{slug}.png")
    print()
    print(
        "every expectation holds" if not failures else "expectations that failed:\n  " + "\n  ".join(failures)
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
