"""Detection states over a sliding window: idle, degraded, elevated_fallback, healthy.

Each state names the figure that put it there, so an operator sees why, not just what.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from orxaq_grpc.config.model import DetectionSettings
from orxaq_grpc.outcomes.economics import Breakdown, Figures

IDLE = "idle"
HEALTHY = "healthy"
ELEVATED_FALLBACK = "elevated_fallback"
DEGRADED = "degraded"
TROUBLED = frozenset({ELEVATED_FALLBACK, DEGRADED})  # what blocks growth and can mean an unstable router


@dataclass(frozen=True, slots=True)
class DetectionState:
    scope: str  # "overall", "lane" or "provider"
    name: str
    state: str
    reason: str
    decisions: int
    router_error_rate: float
    disruptive_fallback_rate: float


@dataclass(frozen=True, slots=True)
class Detection:
    overall: DetectionState
    lanes: tuple[DetectionState, ...]
    providers: tuple[DetectionState, ...]

    def states(self) -> tuple[tuple[str, str, str], ...]:
        """(scope, name, state) of everything: what a watcher compares for changes."""
        every = (self.overall, *self.lanes, *self.providers)
        return tuple((d.scope, d.name, d.state) for d in every)


def classify(
    scope: str, name: str, figures: Figures | None, settings: DetectionSettings, window_s: float | None = None
) -> DetectionState:
    """`window_s` is what the figures really cover (windows start on a minute boundary)."""
    window = f"{window_s if window_s is not None else settings.window_s:.0f} s"
    if figures is None or figures.counters.decisions == 0:
        return DetectionState(scope, name, IDLE, f"no decisions in the last {window}", 0, 0.0, 0.0)
    decisions = figures.counters.decisions
    errors = figures.router_error_rate
    disruptive = figures.disruptive_fallback_rate
    if errors >= settings.degraded_router_error_rate:
        state = DEGRADED
        reason = (
            f"router-error rate {errors:.3f} >= {settings.degraded_router_error_rate:g} "
            f"({figures.counters.router_errors} of {decisions} decisions in {window})"
        )
    elif disruptive >= settings.elevated_fallback_rate:
        state = ELEVATED_FALLBACK
        reason = (
            f"disruptive fallback rate {disruptive:.3f} >= {settings.elevated_fallback_rate:g} "
            f"({figures.counters.disruptive} of {decisions} decisions in {window})"
        )
    else:
        state = HEALTHY
        reason = (
            f"router-error rate {errors:.3f} < {settings.degraded_router_error_rate:g} and disruptive "
            f"fallback rate {disruptive:.3f} < {settings.elevated_fallback_rate:g} over {decisions} decisions"
        )
    return DetectionState(scope, name, state, reason, decisions, errors, disruptive)


def detect(
    window: Breakdown,
    settings: DetectionSettings,
    lanes: Iterable[str],
    providers: Iterable[str],
    now: float,
) -> Detection:
    """States for the overall service and every configured lane and provider."""
    span = now - window.since
    return Detection(
        overall=classify("overall", "overall", window.overall, settings, span),
        lanes=tuple(classify("lane", n, window.lanes.get(n), settings, span) for n in lanes),
        providers=tuple(classify("provider", n, window.providers.get(n), settings, span) for n in providers),
    )
