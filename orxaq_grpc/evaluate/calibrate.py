"""`orxaq-grpc calibrate --strong-share S`: the threshold of `router-learned-<threshold>` that would
have sent share S of recent traffic to the strong model (RouteLLM's calibrate_threshold).

Each recent decision's task, as its decision logged it, is scored by the success model as Route
scores a strong-or-weak choice on its lane: the lane's best-quality enabled model against its
cheapest for the decision's estimated tokens. The threshold is the win probability that S of
those tasks reach.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

from orxaq_grpc.config.model import Config, ModelSpec
from orxaq_grpc.learning import SuccessModel, Vector
from orxaq_grpc.outcomes.records import DecisionRecord
from orxaq_grpc.routing import strong_or_weak
from orxaq_grpc.routing.router import expected_cost_usd
from orxaq_grpc.routing.types import Filter
from orxaq_grpc.store import Store


@dataclass(frozen=True, slots=True)
class Calibration:
    threshold: float
    tasks: int  # recent tasks scored
    strong_share: float  # of them the threshold sends to the strong model (tied tasks go together)
    outcomes: int  # the success model has learned from

    @property
    def router(self) -> str:
        """The name, its threshold written to 5 decimals rounded so it keeps the same tasks in: down
        when some go to the strong model, up when none do."""
        rounded = (math.floor if self.strong_share > 0 else math.ceil)(self.threshold * 1e5) / 1e5
        return f"router-learned-{min(rounded, 1.0):.5f}"


def pair(config: Config, decision: DecisionRecord) -> tuple[ModelSpec, ModelSpec] | None:
    """The lane's strong and weak model for this decision's size, chosen as Route chooses them (every
    enabled allowed model eligible), or None when the lane is gone or has none."""
    lane = config.lanes.get(decision.lane)
    if lane is None:
        return None
    models = config.models  # catalog order, as the router's arrays
    allowed = [i for i, m in enumerate(models) if m.id in lane.allowed_models]
    status = bytearray(Filter.ELIGIBLE if m.enabled else Filter.DISABLED for m in models)
    tokens = decision.estimated_input_tokens, decision.estimated_output_tokens
    cost = array("d", (expected_cost_usd(m, *tokens) for m in models))
    strong, weak = strong_or_weak.pair(models, allowed, status, cost)
    return None if strong < 0 else (models[strong], models[weak])


def calibrate(
    store: Store, model: SuccessModel, config: Config, strong_share: float, recent: int
) -> Calibration:
    """Raises ValueError when no recent decision carries task features."""
    wins: list[float] = []
    for decision, task in store.recent_tasks(recent):
        models = pair(config, decision)
        if models is None:
            continue
        vector = Vector.of(task, model.dim)
        strong, weak = (model.predict(m.id, vector).p for m in models)
        wins.append(0.5 + (strong - weak) / 2)
    if not wins:
        raise ValueError("no recent decision carries task features (is learning on?)")
    # Tasks alike score alike: the threshold is the distinct win probability whose share of tasks at
    # or above it comes closest to the one asked for (a plain quantile would take a whole tie group in).
    wins.sort(reverse=True)
    threshold, sent = math.nextafter(wins[0], math.inf), 0
    for k, win in enumerate(wins, start=1):
        if k < len(wins) and wins[k] == win:
            continue  # the end of this tie group decides
        if abs(k / len(wins) - strong_share) < abs(sent / len(wins) - strong_share):
            threshold, sent = win, k
    outcomes = sum(n for _, n in model.outcomes().values())
    return Calibration(
        threshold=min(threshold, 1.0), tasks=len(wins), strong_share=sent / len(wins), outcomes=outcomes
    )
