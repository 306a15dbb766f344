"""Objective weights tuned from observed acceptance and latency, within configured bounds.

The tuner hears every outcome the success model learns (so every worker sharing a ledger hears the
same ones), counts them per objective (the objective is one of the task's features), and once per
interval moves weight: to quality where too few pass, to speed where enough pass but too slowly.
Changes are journaled with their before and after; a restart resumes from the last one while the
configured weights are unchanged. Routing reads the tuned weights through the Guards; critical lanes
never get a quality weight below the configured one (`routing.catalog.floor_quality`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from orxaq_grpc.config.model import Config, Weights
from orxaq_grpc.outcomes.records import JournalEntry, LedgerOutcome, Outcome
from orxaq_grpc.store.base import Store
from orxaq_grpc.vocabulary import Objective

log = logging.getLogger(__name__)

WEIGHTS = "weights"  # journal kind
_OBJECTIVE_TAG = "objective="


@dataclass(slots=True)
class _Tally:
    outcomes: int = 0
    passes: int = 0
    latency_s: float = 0.0


def _as_dict(weights: dict[Objective, Weights]) -> dict[str, dict[str, float]]:
    return {objective.name.lower(): dataclasses.asdict(w) for objective, w in sorted(weights.items())}


def _from_dict(payload: dict[str, dict[str, float]]) -> dict[Objective, Weights]:
    return {Objective[name.upper()]: Weights(**w) for name, w in payload.items()}


def shifted(weights: Weights, to: str, step: float, low: float, high: float) -> Weights:
    """`step` of weight moved to `to` ("quality" or "speed") from the others (from cost alone when
    moving to speed, so quality never pays for speed), each weight kept within [low, high]."""
    values = dataclasses.asdict(weights)
    donors = ["cost", "speed"] if to == "quality" else ["cost"]
    gives = {donor: max(0.0, values[donor] - low) for donor in donors}
    spare = sum(gives.values())
    room = min(step, high - values[to], spare)
    if room <= 0:
        return weights
    values[to] += room
    for donor in donors:  # in proportion to what each can give
        values[donor] -= room * gives[donor] / spare
    return Weights(**values)


class AdaptiveWeights:
    def __init__(self, config: Config, store: Store, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._tallies: dict[Objective, _Tally] = {}
        self._configured = dict(config.policy.weights)
        self._current = dict(self._configured)
        self._tuned: dict[Objective, Weights] | None = None  # _current once it differs: Route reads this
        self._settings = config.policy.adaptive_weights
        self._next_round = clock() + self._settings.interval_s
        self._resume()

    def _resume(self) -> None:
        for entry in self._store.journal(WEIGHTS, 1):
            payload = json.loads(entry.payload)
            if _from_dict(payload["configured"]) == self._configured:
                self._current = _from_dict(payload["after"])
                self._tuned = dict(self._current)
                log.info("adaptive weights: resumed from the change of %s", entry.at)

    def reconfigure(self, config: Config) -> None:
        """A reload with other configured weights starts over from them."""
        with self._lock:
            self._settings = config.policy.adaptive_weights
            if dict(config.policy.weights) != self._configured:
                self._configured = dict(config.policy.weights)
                self._current = dict(self._configured)
                self._tuned = None
                self._tallies.clear()

    def current(self) -> dict[Objective, Weights] | None:
        """The tuned objective weights, or None while nothing differs from the config: kept whole on
        each change, so every Route reads it without comparing anything."""
        return self._tuned

    def observe(self, row: LedgerOutcome) -> None:
        if row.task is None or row.outcome not in (Outcome.SUCCESS, Outcome.BAD_OUTPUT):
            return
        tag = next((t for t in row.task.tags if t.startswith(_OBJECTIVE_TAG)), None)
        if tag is None or (name := tag.removeprefix(_OBJECTIVE_TAG).upper()) not in Objective.__members__:
            return
        with self._lock:
            tally = self._tallies.setdefault(Objective[name], _Tally())
            tally.outcomes += 1
            tally.passes += row.validation_passed
            tally.latency_s += row.latency_s

    def tick(self) -> None:
        """A round, when one is due: judges each objective with enough outcomes, then starts over."""
        settings = self._settings
        now = self._clock()
        if not settings.enabled or now < self._next_round:
            return
        self._next_round = now + settings.interval_s
        with self._lock:
            before = dict(self._current)
            reasons: list[str] = []
            for objective, tally in sorted(self._tallies.items()):
                if tally.outcomes < settings.min_reports:
                    continue
                pass_rate, latency = tally.passes / tally.outcomes, tally.latency_s / tally.outcomes
                figures = f"pass rate {pass_rate:.2f}, mean latency {latency:.1f} s over {tally.outcomes}"
                if pass_rate < settings.target_pass_rate:
                    to = "quality"
                elif latency > settings.target_latency_s:
                    to = "speed"
                else:
                    continue
                weights = shifted(
                    self._current[objective], to, settings.step, settings.min_weight, settings.max_weight
                )
                if weights != self._current[objective]:
                    self._current[objective] = weights
                    reasons.append(f"{objective.name.lower()}: towards {to} ({figures})")
            self._tallies.clear()
            if self._current == before:
                return
            after = dict(self._current)
            self._tuned = None if after == self._configured else after
        payload = {
            "configured": _as_dict(self._configured),
            "before": _as_dict(before),
            "after": _as_dict(after),
        }
        log.info(
            "adaptive weights: %s; before %s, after %s",
            "; ".join(reasons),
            payload["before"],
            payload["after"],
        )
        self._store.record_journal(JournalEntry(now, WEIGHTS, "; ".join(reasons), json.dumps(payload)))
