"""The router in service, swapped whole when the config is reloaded."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orxaq_grpc.config.load import ConfigError, load_config
from orxaq_grpc.config.model import Config
from orxaq_grpc.routing.router import Router

log = logging.getLogger(__name__)


class LiveRouter:
    """Holds the current Router. Readers take `current` once per request and use that
    snapshot throughout, so a reload never mixes two configs in one decision."""

    def __init__(self, router: Router) -> None:
        self.current = router
        self._reload_lock = threading.Lock()
        self._listeners: list[Callable[[Config], None]] = []
        self._vetoes: list[Callable[[Config], str | None]] = []

    def refuse_when(self, check: Callable[[Config], str | None]) -> None:
        """A reload whose config `check` finds a problem with (a message) is refused like an
        invalid one: what this process cannot honour, such as budgets in one of several workers."""
        with self._reload_lock:
            self._vetoes.append(check)

    def on_reload(self, callback: Callable[[Config], None]) -> None:
        """Calls `callback(new_config)` after each successful reload, once the new Router is in
        place. Callbacks run in the reloading thread, one reload at a time, in registration order;
        one that raises is logged and neither the reload nor the other callbacks are undone.
        Held for the LiveRouter's lifetime."""
        with self._reload_lock:
            self._listeners.append(callback)

    @classmethod
    def from_directory(cls, directory: str | Path) -> LiveRouter:
        return cls(Router(load_config(directory)))

    def reload(self) -> Reloaded:
        """Loads the config directory again; on any problem keeps the last good one (truthy when
        reloaded; the refusal says why not, each problem with its file and field)."""
        with self._reload_lock:
            directory = self.current.config.directory
            previous = self.current.config.version
            try:
                router = self.current.reconfigured(load_config(directory))
            except ConfigError as exc:
                log.error("config reload refused, keeping version %s:\n%s", previous, exc)
                return Reloaded(False, previous, previous, str(exc))
            except Exception as exc:
                log.exception("config reload failed, keeping version %s", previous)
                return Reloaded(False, previous, previous, f"loading {directory} failed: {exc!r}")
            if problems := [p for check in self._vetoes if (p := check(router.config))]:
                refusal = "; ".join(problems)
                log.error("config reload refused, keeping version %s: %s", previous, refusal)
                return Reloaded(False, previous, previous, refusal)
            self.current = router
            log.info("config reloaded from %s: version %s -> %s", directory, previous, router.config.version)
            for callback in self._listeners:
                try:
                    callback(router.config)
                except Exception:
                    log.exception("a config reload listener failed (%r); the reload stands", callback)
            return Reloaded(True, router.config.version, previous)


@dataclass(frozen=True, slots=True)
class Reloaded:
    """What a reload did: the version in force after it, the one before, and why it was refused."""

    reloaded: bool
    version: str
    previous_version: str
    refusal: str = ""

    def __bool__(self) -> bool:
        return self.reloaded
