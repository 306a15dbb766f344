"""Picks the scoring kernel and the keyword index: the compiled twins when they are built, else pure
Python.

`ORXAQ_NO_EXTENSIONS=1` forces the pure-Python twins (debugging, profiling, and the
tests that hold the two twins to the same answers).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Protocol, TypeAlias

from orxaq_grpc.kernel import KernelFactory


class Keywords(Protocol):
    """A built keyword list (`_scoring_py.KeywordIndex` documents the contract)."""

    def first_hits(self, text: str) -> list[tuple[int, str]]: ...


KeywordsFactory: TypeAlias = Callable[[Sequence[str]], Keywords]

CatalogKernel: KernelFactory
KeywordIndex: KeywordsFactory
KIND: str
if os.environ.get("ORXAQ_NO_EXTENSIONS"):
    from orxaq_grpc._scoring_py import KIND, CatalogKernel, KeywordIndex
else:
    try:
        from orxaq_grpc._scoring import KIND, CatalogKernel, KeywordIndex
    except ImportError:  # not built: the server warns and Health reports "python"
        from orxaq_grpc._scoring_py import KIND, CatalogKernel, KeywordIndex

__all__ = ["KIND", "CatalogKernel", "KeywordIndex", "Keywords", "KeywordsFactory"]
