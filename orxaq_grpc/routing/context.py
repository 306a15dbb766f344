"""What the decision (`router.py`) and its explanation (`explain.py`) share about one request:
the live state that constrains routing, the request's context, and the kernel's scores."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from orxaq_grpc.config.model import Weights
from orxaq_grpc.kernel import Doubles
from orxaq_grpc.learning import SuccessModel, TaskFeatures, Vector
from orxaq_grpc.routing.catalog import LaneArrays
from orxaq_grpc.routing.objective import ResolvedObjective, TaskEstimate
from orxaq_grpc.routing.types import Objective, Profile, RouteRequest


class Guards(Protocol):
    """Live state that constrains routing: circuit breakers, daily budgets, stop-loss, and the
    acceptance lanes report per model."""

    def stop_loss_active(self) -> bool:
        """True: every decision is the lane's static chain (reason stop_loss_static)."""
        ...

    def lane_paused(self, lane: str) -> bool:
        """True: an operator paused the lane; its decisions are its static chain (reason lane_paused)."""
        ...

    def pass_rates(self) -> Mapping[str, tuple[int, int]]:
        """Per model (validation passes, reports) over the calibration window."""
        ...

    def success_model(self) -> SuccessModel | None:
        """The success model, when the policy has learning on."""
        ...

    def objective_weights(self) -> Mapping[Objective, Weights] | None:
        """Objective weights tuned from outcomes; None: the configured ones."""
        ...

    def blocked(self) -> tuple[frozenset[str], frozenset[str]]:
        """(models, providers) behind an open circuit right now."""
        ...

    def headroom(self, lane: str) -> tuple[float, dict[str, float]]:
        """USD left for the lane (overall and lane budgets) and per budgeted provider."""
        ...

    def try_reserve(self, decision_id: str, lane: str, provider: str, usd: float) -> bool:
        """Books usd against every budget that applies if it fits them all; False books nothing."""
        ...

    def cache_share(self, lane: str) -> float:
        """The share of the lane's reported input read from a prompt cache, recently; 0 with none."""
        ...


@dataclass(slots=True)
class RequestContext:
    """What every decision path shares about one request."""

    request: RouteRequest
    lane: LaneArrays
    estimate: TaskEstimate
    objective: ResolvedObjective
    profile: Profile
    decision_id: str
    guards: Guards | None
    cache_share: float = 0.0  # the lane's observed share of cached input: prices the expected input
    task: TaskFeatures | None = None  # with learning on
    _vector: Vector | None = None

    def vector(self, model: SuccessModel) -> Vector:
        """The task's feature vector, hashed once per request."""
        assert self.task is not None
        if self._vector is None or self._vector.dim != model.dim:
            self._vector = Vector.of(self.task, model.dim)
        return self._vector


@dataclass(slots=True)
class Scores:
    """One kernel call's outputs, indexed by catalog position."""

    status: bytearray
    cost: Doubles
    latency: Doubles
    cost_score: Doubles
    speed_score: Doubles
    penalty: Doubles
    score: Doubles
    ranked: list[int]  # eligible indices, best first (all of them when explaining)
    eligible: int
    weights: Weights  # the objective's, after the profile: what scored
    lane_headroom: float = math.inf
    provider_headroom: Doubles | None = None

    @property
    def budgeted(self) -> bool:
        return self.lane_headroom != math.inf or self.provider_headroom is not None

    def fits_budget(self, index: int, slot: int) -> bool:
        limit = self.lane_headroom
        if self.provider_headroom is not None:
            limit = min(limit, self.provider_headroom[slot])
        return self.cost[index] <= limit
