"""Picks the learning kernel: the compiled twin when it is built, else pure Python.

`ORXAQ_NO_EXTENSIONS=1` forces the pure-Python twin (debugging, profiling, and the
tests that hold the two twins to the same answers).
"""

from __future__ import annotations

import os

if os.environ.get("ORXAQ_NO_EXTENSIONS"):
    from orxaq_grpc._learning_py import KIND, capacity, features, linear, probability, update, vector
else:
    try:
        from orxaq_grpc._learning import KIND, capacity, features, linear, probability, update, vector
    except ImportError:  # not built: the pure-Python twin gives the same answers, slower
        from orxaq_grpc._learning_py import KIND, capacity, features, linear, probability, update, vector

__all__ = ["KIND", "capacity", "features", "linear", "probability", "update", "vector"]
