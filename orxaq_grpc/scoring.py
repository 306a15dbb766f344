"""Picks the scoring kernel: the compiled twin when it is built, else pure Python.

`ORXAQ_NO_EXTENSIONS=1` forces the pure-Python twin (debugging, profiling, and the
tests that hold the two twins to the same answers).
"""

from __future__ import annotations

import os

from orxaq_grpc.kernel import KernelFactory

CatalogKernel: KernelFactory
KIND: str
if os.environ.get("ORXAQ_NO_EXTENSIONS"):
    from orxaq_grpc._scoring_py import KIND, CatalogKernel
else:
    try:
        from orxaq_grpc._scoring import KIND, CatalogKernel
    except ImportError:  # not built: the server warns and Health reports "python"
        from orxaq_grpc._scoring_py import KIND, CatalogKernel

__all__ = ["KIND", "CatalogKernel"]
