"""RouteLLM's figures for a strong-or-weak router on per-prompt outcomes.

Sending the k prompts a router ranks highest to the strong model and the rest to the weak one gives
an accuracy for each strong-call share k/n. The performance gap recovered, PGR = (accuracy - weak's)
/ (strong's - weak's), drawn against the share, is the router's curve; APGR is the area under it
(random routing: 0.5), CPT(x) the smallest share of strong calls whose PGR reaches x.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Curve:
    name: str
    shares: tuple[float, ...]  # strong-call share, 0 to 1
    accuracy: tuple[float, ...]
    pgr: tuple[float, ...]

    @property
    def apgr(self) -> float:
        """Area under PGR over the share (trapezoids)."""
        area = 0.0
        for i in range(1, len(self.shares)):
            area += (self.shares[i] - self.shares[i - 1]) * (self.pgr[i] + self.pgr[i - 1]) / 2
        return area

    def cpt(self, target: float) -> float:
        """The smallest strong-call share whose PGR reaches `target` (1.0 when none does; NaN with
        no gap)."""
        if math.isnan(self.pgr[-1]):
            return math.nan
        for share, pgr in zip(self.shares, self.pgr, strict=True):
            if pgr >= target - 1e-12:
                return share
        return 1.0


def curve(name: str, order: Sequence[int], strong: Sequence[bool], weak: Sequence[bool]) -> Curve:
    """The curve of sending prompts to the strong model in `order` (indices, first = most deserving)."""
    n = len(strong)
    correct = sum(weak)
    weak_acc, strong_acc = correct / n, sum(strong) / n
    gap = strong_acc - weak_acc
    shares, accuracy = [0.0], [weak_acc]
    for k, index in enumerate(order, start=1):
        correct += strong[index] - weak[index]
        shares.append(k / n)
        accuracy.append(correct / n)
    return Curve(name, tuple(shares), tuple(accuracy), _pgr(accuracy, weak_acc, gap))


def _pgr(accuracy: Sequence[float], weak_acc: float, gap: float) -> tuple[float, ...]:
    """NaN throughout when both models are equally accurate: there is no gap to recover."""
    return tuple((a - weak_acc) / gap if gap else math.nan for a in accuracy)


def ranked(
    name: str, scores: Sequence[float], strong: Sequence[bool], weak: Sequence[bool], seed: int
) -> Curve:
    """A router's curve: highest score first, ties in a seeded random order."""
    tiebreak = random.Random(seed)
    keys = [tiebreak.random() for _ in scores]
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], keys[i]))
    return curve(name, order, strong, weak)


def oracle(strong: Sequence[bool], weak: Sequence[bool]) -> Curve:
    """Knows the outcomes: strong calls first where only the strong model is right, last where only
    the weak one is."""
    gain = [int(s) - int(w) for s, w in zip(strong, weak, strict=True)]
    return curve("oracle", sorted(range(len(gain)), key=lambda i: (-gain[i], i)), strong, weak)


def random_routing(strong: Sequence[bool], weak: Sequence[bool]) -> Curve:
    """Routing at random, in expectation: the straight line from weak to strong."""
    n = len(strong)
    weak_acc, strong_acc = sum(weak) / n, sum(strong) / n
    shares = tuple(k / n for k in range(n + 1))
    accuracy = tuple(weak_acc + s * (strong_acc - weak_acc) for s in shares)
    return Curve("random", shares, accuracy, _pgr(accuracy, weak_acc, strong_acc - weak_acc))
