"""Decision ids: UUIDv7s in hex (RFC 9562): the time in milliseconds, then 74 random bits.

Time first, so the ledger's id index takes new ids at its right edge, not on a random page
each: on a ledger of 500,000 decisions that halved the insert's cost (47 to 21 µs). The
random bits still make an id unguessable, and spread the hash that picks exploring decisions.

Route needs one id per call. Reading the OS's randomness is a system call that releases the
GIL, and on a busy server every release lets another thread (the ledger writer) take it, so
the call waits to get it back: the random bits come from a pool filled by one read per `_POOL`.
"""

from __future__ import annotations

import os
import time

# The version (7) and RFC 9562 variant bits, over 80 random low bits under the 48-bit time.
_RANDOM = (1 << 80) - 1
_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_SET = (0x7000 << 64) | (0x8000 << 48)
_POOL = 256
_pool: list[int] = []


def new_decision_id() -> str:
    try:
        bits = _pool.pop()  # atomic under the GIL: threads never get the same bits
    except IndexError:
        _pool.extend(_random_bits(_POOL))  # two threads refilling at once only add more
        return new_decision_id()
    return _format(time.time_ns() // 1_000_000, bits)


def new_decision_ids(count: int) -> list[str]:
    """`count` ids from one read of the OS's randomness."""
    now_ms = time.time_ns() // 1_000_000
    return [_format(now_ms, bits) for bits in _random_bits(count)]


def _random_bits(count: int) -> list[int]:
    raw = os.urandom(10 * count)
    return [int.from_bytes(raw[at : at + 10]) for at in range(0, 10 * count, 10)]


def _format(now_ms: int, bits: int) -> str:
    return f"{(now_ms << 80 | bits & _RANDOM) & _CLEAR | _SET:032x}"
