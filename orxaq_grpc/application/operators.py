"""What operators do by hand: pause a lane, close a breaker, reload the config, enter or end
stop-loss. Every action goes to the ledger's journal (kind "operator") with who did it and why.

A pause or a close is written first and takes effect once durable, so the state never runs ahead of
the log: a restart restores the paused lanes from it, and every worker or replica sharing the ledger
follows the pauses, closes and reloads it finds there at its next check. A reload and a stop-loss
call are logged once their outcome is known (the new version or the refusal; changed or not).
"""

from __future__ import annotations

import enum
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from orxaq_grpc.outcomes.breakers import Breakers
from orxaq_grpc.outcomes.records import JournalEntry
from orxaq_grpc.scale.journal import decoded, to_payload, write_durably
from orxaq_grpc.store.base import Store

OPERATOR = "operator"  # the journal kind
SHOWN_ACTIONS = 20  # what Health shows
FOLLOWED_ACTIONS = 1_000  # read at start to restore the paused lanes; pauses are rare
NEWER_READ = 50  # read at each check for what other workers and replicas did


class Action(enum.Enum):
    STOP_LOSS_ENTER = "stop_loss_enter"
    STOP_LOSS_EXIT = "stop_loss_exit"
    RELOAD_CONFIG = "reload_config"
    CLOSE_BREAKER = "close_breaker"
    PAUSE_LANE = "pause_lane"
    RESUME_LANE = "resume_lane"


CHANGED, UNCHANGED = "changed", "unchanged"
REFUSED = "refused: "  # a reload's outcome starts so when refused; otherwise it is the new version


@dataclass(frozen=True, slots=True)
class OperatorAction:
    at: float
    who: str  # the operator credential's name; "" where no credentials are configured
    action: Action
    target: str  # a lane, "model:NAME" or "provider:NAME"; "" for the whole service
    note: str
    outcome: str  # CHANGED, UNCHANGED, the new config version or the refusal


def breaker_target(scope: str, name: str) -> str:
    return f"{scope}:{name}"


class Operators:
    """The paused lanes and the last operator actions, kept from and written to the journal."""

    def __init__(
        self,
        store: Store,
        breakers: Breakers,
        reload: Callable[[str], object],
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`reload(version)` reloads the config unless `version` is in force already: a reload
        another worker logged is followed here."""
        self._store = store
        self._breakers = breakers
        self._reload = reload
        self._clock = clock
        self._lock = threading.Lock()  # one action at a time, and the follow round between them
        self._paused: frozenset[str] = frozenset()  # replaced whole: Route reads it without the lock
        self._shown: deque[OperatorAction] = deque(maxlen=SHOWN_ACTIONS)
        self._newest = -math.inf  # the newest action applied here, by time

    def lane_paused(self, lane: str) -> bool:
        return lane in self._paused

    @property
    def paused(self) -> frozenset[str]:
        return self._paused

    def shown(self) -> tuple[OperatorAction, ...]:
        """The last actions, newest first."""
        with self._lock:
            return tuple(self._shown)

    def restore(self) -> None:
        """The paused lanes and last actions as the journal left them. Breakers start closed on a
        start, so the closes in it change nothing."""
        actions = self._read(FOLLOWED_ACTIONS)
        with self._lock:
            for action in reversed(actions):
                self._apply(action, closes=False, reloads=False)
            self._shown.extend(actions[:SHOWN_ACTIONS])

    def follow(self) -> None:
        """Applies what another worker or replica sharing the ledger did since the last look."""
        with self._lock:
            newer = [a for a in self._read(NEWER_READ) if a.at > self._newest]
            for action in reversed(newer):
                self._apply(action, closes=True, reloads=True)
                self._shown.appendleft(action)

    def pause_lane(self, who: str, lane: str, paused: bool, note: str) -> bool:
        """Pauses or resumes `lane` once logged; False when it already was so (logged as unchanged)."""
        with self._lock:
            changed = (lane in self._paused) != paused
            action = Action.PAUSE_LANE if paused else Action.RESUME_LANE
            self._commit(self._action(who, action, lane, note, CHANGED if changed else UNCHANGED))
            return changed

    def close_breaker(self, who: str, scope: str, name: str, note: str) -> bool:
        """Closes a circuit once logged; False when it was closed already (logged as unchanged)."""
        with self._lock:
            changed = not self._breakers.is_closed(scope, name)
            target = breaker_target(scope, name)
            self._commit(
                self._action(who, Action.CLOSE_BREAKER, target, note, CHANGED if changed else UNCHANGED)
            )
            return changed

    def record(self, who: str, action: Action, target: str, note: str, outcome: str) -> None:
        """Logs an action taken elsewhere (a reload, a stop-loss call) with its outcome."""
        with self._lock:
            self._commit(self._action(who, action, target, note, outcome))

    def _action(self, who: str, action: Action, target: str, note: str, outcome: str) -> OperatorAction:
        # Strictly after the newest known, so followers that compare times never skip it.
        at = max(self._clock(), math.nextafter(self._newest, math.inf))
        return OperatorAction(at, who, action, target, note, outcome)

    def _commit(self, action: OperatorAction) -> None:
        entry = JournalEntry(action.at, OPERATOR, action.action.value, to_payload(action))
        write_durably(self._store, entry, f"an operator's {action.action.value}")
        self._apply(action, closes=True, reloads=False)
        self._shown.appendleft(action)

    def _apply(self, action: OperatorAction, *, closes: bool, reloads: bool) -> None:
        self._newest = max(self._newest, action.at)
        kind = action.action
        if kind is Action.RELOAD_CONFIG and reloads and not action.outcome.startswith(REFUSED):
            self._reload(action.outcome)
        elif kind is Action.CLOSE_BREAKER and closes:
            # Whatever it was where it was closed: each worker keeps its own circuits.
            scope, _, name = action.target.partition(":")
            self._breakers.close(scope, name)
        elif kind is Action.PAUSE_LANE:  # the state asked for, changed here or not
            self._paused = self._paused | {action.target}
        elif kind is Action.RESUME_LANE:
            self._paused = self._paused - {action.target}

    def _read(self, limit: int) -> list[OperatorAction]:
        """The journal's operator actions, newest first."""
        return decoded(OperatorAction, self._store.journal(OPERATOR, limit))
