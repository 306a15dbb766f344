"""The durable ledger behind Report: decisions and reports, grouped into few commits.

`Store` is what the service uses; `SqliteStore` is the embedded backend (one file per host, the
default), `PostgresStore` the shared one (several replicas, psycopg 3 from the `postgresql` extra);
`open_store` picks one from a `--ledger` value.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from orxaq_grpc.store.base import NotConfirmed, Store, StoreError, StoreStats
from orxaq_grpc.store.postgres import PostgresStore, check_available, redact_dsn
from orxaq_grpc.store.sqlite import SqliteStore

__all__ = [
    "NotConfirmed",
    "PostgresStore",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreStats",
    "check_ledger",
    "open_store",
    "redact_dsn",
]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SQLITE_SCHEME = "sqlite:"
LEDGER_FORMS = "postgresql://..., postgres://... or sqlite:DIR (none: SQLite in the data directory)"


def _kind(ledger: str | None) -> str:
    """'sqlite' or 'postgresql'; StoreError (the value redacted) for anything else."""
    if not ledger:
        return "sqlite"
    lowered = ledger.lower()
    if lowered.startswith(POSTGRES_SCHEMES):
        return "postgresql"
    if lowered.startswith(SQLITE_SCHEME):
        if not _sqlite_directory(ledger):
            raise StoreError(f"ledger {ledger!r}: sqlite: needs a directory, e.g. sqlite:/var/lib/orxaq")
        return "sqlite"
    raise StoreError(f"ledger {redact_dsn(ledger)!r} is not one this build knows: {LEDGER_FORMS}")


def _sqlite_directory(ledger: str) -> str:
    """`sqlite:DIR` or `sqlite://DIR` (so sqlite:///var/lib/orxaq is /var/lib/orxaq)."""
    rest = ledger[len(SQLITE_SCHEME) :]
    return rest[2:] if rest.startswith("//") else rest


def check_ledger(ledger: str | None) -> None:
    """Refuses (StoreError) a `--ledger` value this build cannot open, before anything starts: an
    unknown form, or a PostgreSQL URL without psycopg installed (the message names the extra)."""
    if _kind(ledger) == "postgresql":
        check_available()


def open_store(
    ledger: str | None,
    data_dir: Path,
    retention_days: int,
    clock: Callable[[], float] = time.time,
) -> Store:
    """The ledger a `--ledger` value names: None or "" the embedded SQLite file under `data_dir`,
    `sqlite:DIR` one under DIR, a postgresql:// or postgres:// URL that PostgreSQL database."""
    kind = _kind(ledger)
    if kind == "postgresql":
        assert ledger is not None
        return PostgresStore(ledger, retention_days, clock=clock)
    directory = Path(_sqlite_directory(ledger)) if ledger else Path(data_dir)
    return SqliteStore(directory, retention_days, clock=clock)
