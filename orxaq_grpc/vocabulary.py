"""The words every layer shares: objectives, profiles, filter codes, request violations.

The bottom of the house: it imports nothing of the project, so config, the kernel twins, routing,
outcomes and scale can all speak it without importing each other. Enum values equal the numbers of
the same-named enums in `protos/orxaq/routing/v1/routing.proto`.
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass


class Objective(enum.IntEnum):
    UNSPECIFIED = 0
    COST_SPEED = 1
    BALANCED = 2
    QUALITY = 3


class Profile(enum.IntEnum):
    UNSPECIFIED = 0
    FAST = 1
    STRONG = 2


class Filter(enum.IntEnum):
    """Why a candidate was not eligible; the kernel writes these codes."""

    UNSPECIFIED = 0
    ELIGIBLE = 0  # alias: on a candidate, 0 means no filter removed it
    NOT_ALLOWED = 1
    DISABLED = 2
    CONTEXT_WINDOW = 3
    OUTPUT_LIMIT = 4
    CAPABILITY = 5
    LANE_QUALITY_FLOOR = 6
    MIN_QUALITY = 7
    MAX_COST = 8
    MAX_LATENCY = 9
    CIRCUIT_OPEN = 10
    BUDGET = 11


# Members are few and `.name` is a slow descriptor (rationales ask per Route). Typed: IntEnum
# members of different enums with one number are equal, and must not share an entry.
@functools.lru_cache(maxsize=None, typed=True)
def enum_name(member: enum.Enum) -> str:
    """The lower-case name used in config files, logs and the CLI."""
    return member.name.lower()


@dataclass(frozen=True, slots=True)
class Violation:
    field: str
    description: str


class RequestInvalid(Exception):
    """Raised at the edge with every violation of one request."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))


class OtherLanesDecision(RequestInvalid):
    """A report naming another lane than the one its decision was routed on: an invalid argument
    from an open service, a permission denied to a lane that proved who it is."""


def range_problem(
    value: float, lo: float | None = None, hi: float | None = None, above: float | None = None
) -> str | None:
    """What is wrong with a number that must be finite and within bounds, if anything."""
    if not math.isfinite(value):
        return f"must be a finite number, got {value}"
    if lo is not None and value < lo:
        return f"must be at least {lo:g}, got {value:g}"
    if hi is not None and value > hi:
        return f"must be at most {hi:g}, got {value:g}"
    if above is not None and value <= above:
        return f"must be greater than {above:g}, got {value:g}"
    return None
