"""`orxaq-grpc calibrate --strong-share S`: the threshold of `router-learned-<threshold>` that would
have sent share S of recent traffic to the strong model (RouteLLM's calibrate_threshold).

Each recent decision's task, as its decision logged it, is scored by the success model as Route
scores a strong-or-weak choice on its lane: the lane's best-quality enabled model against its
cheapest for the decision's estimated tokens. The threshold is the win probability that S of
those tasks reach.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from orxaq_grpc.config.model import Config, ModelSpec
from orxaq_grpc.learning import SuccessModel, Vector
from orxaq_grpc.outcomes.records import DecisionRecord
from orxaq_grpc.routing.router import expected_cost_usd
from orxaq_grpc.store import Store


@dataclass(frozen=True, slots=True)
class Calibration:
    threshold: float
    tasks: int  # recent tasks scored
    strong_share: float  # of them the threshold sends to the strong model (ties can push it above)
    outcomes: int  # the success model has learned from

    @property
    def router(self) -> str:
        return f"router-learned-{self.threshold:.5f}"


def pair(config: Config, decision: DecisionRecord) -> tuple[ModelSpec, ModelSpec] | None:
    """The lane's strong and weak model for this decision's size, or None when the lane is gone."""
    lane = config.lanes.get(decision.lane)
    if lane is None:
        return None
    models = [m for m in config.models if m.id in lane.allowed_models and m.enabled]
    if not models:
        return None

    def cost(m: ModelSpec) -> float:
        return expected_cost_usd(m, decision.estimated_input_tokens, decision.estimated_output_tokens)

    strong = min(models, key=lambda m: (-m.quality, cost(m)))
    weak = min(models, key=lambda m: (cost(m), -m.quality))
    return strong, weak


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
    wins.sort(reverse=True)
    k = max(1, math.ceil(strong_share * len(wins)))
    threshold = wins[k - 1] if strong_share > 0 else math.nextafter(wins[0], math.inf)
    sent = sum(w >= threshold for w in wins)
    outcomes = sum(n for _, n in model.outcomes().values())
    return Calibration(
        threshold=min(threshold, 1.0), tasks=len(wins), strong_share=sent / len(wins), outcomes=outcomes
    )
