"""An evaluation as people read it: a table of RouteLLM's figures, JSON, and the curves drawn."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from orxaq_grpc.evaluate.run import Evaluation

TARGETS = (0.5, 0.8, 0.95)  # CPT's recovered shares of the quality gap


def as_dict(e: Evaluation) -> dict[str, Any]:
    return {
        "strong": e.strong,
        "weak": e.weak,
        "train": e.train,
        "test": e.test,
        "strong_accuracy": e.strong_accuracy,
        "weak_accuracy": e.weak_accuracy,
        "routers": {
            c.name: {"apgr": _figure(c.apgr), **{f"cpt{round(t * 100)}": _figure(c.cpt(t)) for t in TARGETS}}
            for c in e.curves
        },
    }


def table(e: Evaluation) -> str:
    lines = [
        f"trained on {e.train} prompts, routed {e.test}: strong {e.strong} right on {e.strong_accuracy:.1%}, "
        f"weak {e.weak} on {e.weak_accuracy:.1%}",
        f"{'router':<16}{'APGR':>8}" + "".join(f"{f'CPT({t:.0%})':>11}" for t in TARGETS),
    ]
    if e.strong_accuracy == e.weak_accuracy:
        lines.append("(both models are equally accurate on the test part: there is no gap to recover)")
    for c in e.curves:
        lines.append(
            f"{c.name:<16}{_shown(c.apgr, '.3f'):>8}"
            + "".join(f"{_shown(c.cpt(t), '.1%'):>11}" for t in TARGETS)
        )
    return "\n".join(lines)


def _figure(value: float) -> float | None:
    """JSON has no NaN: an undefined figure is null."""
    return None if math.isnan(value) else value


def _shown(value: float, spec: str) -> str:
    return "-" if math.isnan(value) else format(value, spec)


def plot(e: Evaluation, path: Path) -> None:
    """PGR against the share of strong calls, one curve per router; PNG or SVG by the path's suffix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (pgr, accuracy) = plt.subplots(1, 2, figsize=(11, 4.5))
    for c in e.curves:
        label = f"{c.name} (APGR {c.apgr:.2f})"
        pgr.plot(c.shares, c.pgr, label=label)
        accuracy.plot(c.shares, c.accuracy, label=c.name)
    for target in TARGETS:
        pgr.axhline(target, color="grey", lw=0.6, ls=":")
    pgr.set_xlabel("share of calls to the strong model")
    pgr.set_ylabel("performance gap recovered")
    pgr.legend(loc="lower right", fontsize=8)
    accuracy.set_xlabel("share of calls to the strong model")
    accuracy.set_ylabel("accuracy on held-out prompts")
    accuracy.axhline(e.strong_accuracy, color="black", lw=0.8, ls="--", label=f"{e.strong} alone")
    accuracy.axhline(e.weak_accuracy, color="black", lw=0.8, ls=":", label=f"{e.weak} alone")
    accuracy.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{e.strong} vs {e.weak}: {e.train} prompts learned, {e.test} routed")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
