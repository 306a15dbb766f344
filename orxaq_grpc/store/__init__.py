"""The durable ledger behind Report: decisions and reports, grouped into few commits.

`Store` is what the service uses; `SqliteStore` is the embedded backend (one file per host).
"""

from orxaq_grpc.store.base import Store, StoreError, StoreStats
from orxaq_grpc.store.sqlite import SqliteStore

__all__ = ["SqliteStore", "Store", "StoreError", "StoreStats"]
