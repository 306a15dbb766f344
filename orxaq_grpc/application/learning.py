"""Keeps the success model in step with the ledger.

The model learns from the ledger, not from Report calls: every worker (and every replica) that shares a
ledger reads the same outcomes in the same order, so they all hold the same model, and a model lost
with its file is rebuilt by reading the ledger from the start. The file in the data directory only
saves that reading: it carries the ledger position it has learned up to.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from orxaq_grpc.config.model import Config, LearningSettings
from orxaq_grpc.learning import ModelShape, SuccessModel, Vector
from orxaq_grpc.outcomes.records import LedgerOutcome, Outcome
from orxaq_grpc.store import Store

log = logging.getLogger(__name__)

FILE_NAME = "success-model.zip"
BATCH = 2_000  # outcomes read per query while catching up
# A report is learned once it is this old: by then the decision it names is committed too, even when
# another worker logged it (decision-log entries linger up to a few tens of milliseconds).
SETTLE_S = 2.0
_QUALITY_OUTCOMES = (Outcome.SUCCESS, Outcome.BAD_OUTPUT)  # availability failures say nothing of quality


def shape_of(settings: LearningSettings) -> ModelShape:
    return ModelShape(settings.feature_bits, settings.prior_sd, settings.noise_sd)


def priors_of(config: Config) -> dict[str, float]:
    return {model.id: model.quality / 100.0 for model in config.models}


class Learner:
    """The success model and the ledger reader that feeds it. `catch_up` runs on one thread at a
    time (the guardrail ticker); Route threads call `model.predict` meanwhile."""

    def __init__(
        self,
        store: Store,
        config: Config,
        path: Path | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._path = path
        self._clock = clock
        self._settings = config.policy.learning
        self._lock = threading.Lock()  # one catch-up at a time
        self._listeners: list[Callable[[LedgerOutcome], None]] = []
        self._saved_position = -1
        self._saved_at = clock()
        self.model = self._open(shape_of(self._settings), priors_of(config))

    def _open(self, shape: ModelShape, priors: Mapping[str, float]) -> SuccessModel:
        if self._path is not None:
            try:
                loaded = SuccessModel.load(self._path, shape, priors)
            except ValueError as exc:
                log.warning("%s; rebuilding the success model from the ledger", exc)
                loaded = None
            if loaded is not None:
                self._saved_position = loaded.position
                return loaded
            log.info("success model: none saved with this shape; learning from the whole ledger")
        return SuccessModel(shape, priors)

    def on_outcome(self, listener: Callable[[LedgerOutcome], None]) -> None:
        """Hears every outcome the model learns, in ledger order, on the catching-up thread."""
        self._listeners.append(listener)

    def reconfigure(self, config: Config) -> None:
        """A reload: new priors; a new shape starts a new model, learned again from the ledger."""
        settings = config.policy.learning
        with self._lock:
            self._settings = settings
            if shape_of(settings) != self.model.shape:
                self.model = SuccessModel(shape_of(settings), priors_of(config))
                self._saved_position = -1
            else:
                self.model.set_priors(priors_of(config))

    def catch_up(self, limit: int | None = None) -> int:
        """Learns every settled outcome the model has not seen; returns how many it learned."""
        learned = 0
        with self._lock:
            model = self.model
            settled = self._clock() - SETTLE_S
            while limit is None or learned < limit:
                rows = self._store.outcomes_after(model.position, BATCH)
                for row in rows:
                    if row.at > settled:
                        return learned  # and the rest next time, in ledger order
                    if self._learn(model, row):
                        learned += 1
                    model.position = row.position
                if len(rows) < BATCH:
                    break
        return learned

    def _learn(self, model: SuccessModel, row: LedgerOutcome) -> bool:
        # A report without its decision's features (learning was off, or no such decision: a forged or
        # misdirected report) teaches nothing.
        if row.task is None or row.outcome not in _QUALITY_OUTCOMES:
            return False
        model.learn(row.model, Vector.of(row.task, model.dim), row.validation_passed)
        for listener in self._listeners:
            listener(row)
        return True

    def tick(self) -> None:
        """Catches up, and saves when the interval has passed and there is something new."""
        self.catch_up()
        if self._clock() - self._saved_at >= self._settings.save_interval_s:
            self.save()

    def save(self) -> None:
        with self._lock:
            self._saved_at = self._clock()
            if self._path is None or self.model.position == self._saved_position:
                return
            try:
                self.model.save(self._path)
            except OSError as exc:
                log.error("cannot save the success model to %s: %s", self._path, exc)
                return
            self._saved_position = self.model.position
