"""Where the catalog's prices and a price map disagree."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from orxaq_grpc.config.model import ModelSpec
from orxaq_grpc.prices.source import PRICE_FIELDS, PriceMap

__all__ = ["Difference", "PriceCheck", "check_prices"]

_SAME = 1e-9  # relative: prices that differ by less are the same figure written differently


@dataclass(frozen=True, slots=True)
class Difference:
    model: str
    field: str  # the catalog's field name
    catalog: float | None  # None: the catalog does not give it (priced as input)
    source: float
    key: str  # the map's entry

    @property
    def change(self) -> float | None:
        """Relative change from the catalog's figure; None when it had none (or zero)."""
        if not self.catalog:
            return None
        return self.source / self.catalog - 1.0


@dataclass(frozen=True, slots=True)
class PriceCheck:
    source: str
    differences: tuple[Difference, ...]
    agreeing: tuple[str, ...]  # hosted models whose every price the map confirms
    local: tuple[str, ...]  # no list price to check
    unknown: tuple[str, ...]  # hosted models the map does not have

    @property
    def drifting(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(d.model for d in self.differences))


def check_prices(models: Iterable[ModelSpec], price_map: PriceMap) -> PriceCheck:
    """Compares every hosted model's list prices with the map's. A price the map does not give is
    not a difference; one the catalog lacks but the map gives is (the catalog prices it as input)."""
    differences: list[Difference] = []
    agreeing: list[str] = []
    local: list[str] = []
    unknown: list[str] = []
    for model in sorted(models, key=lambda m: m.id):
        if model.origin == "local":
            local.append(model.id)
            continue
        entry = price_map.find(model.id, model.provider)
        if entry is None:
            unknown.append(model.id)
            continue
        found = [
            Difference(model.id, field, ours, theirs, entry.key)
            for field, _ in PRICE_FIELDS
            if (theirs := entry.prices[field]) is not None
            and not _same(ours := getattr(model, field), theirs)
        ]
        differences.extend(found)
        if not found:
            agreeing.append(model.id)
    return PriceCheck(price_map.label, tuple(differences), tuple(agreeing), tuple(local), tuple(unknown))


def _same(ours: float | None, theirs: float) -> bool:
    if ours is None:
        return False
    return abs(ours - theirs) <= _SAME * max(abs(ours), abs(theirs), 1e-12)
