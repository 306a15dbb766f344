"""`@frozen`: a value class the type checker holds read-only, built at the cost of a plain one.

A frozen dataclass sets each field through `object.__setattr__`, which makes building one 3-4x
slower; Route builds several per call. These classes are plain slotted dataclasses at run time
(hashed and compared by value, as frozen ones are), and frozen to mypy, which refuses any
assignment to a field, so nothing can change one after it is made without the checker saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, dataclass_transform

T = TypeVar("T")


@dataclass_transform(frozen_default=True)
def frozen(cls: type[T]) -> type[T]:
    return dataclass(slots=True, unsafe_hash=True)(cls)
