"""Hands memory freed after a burst back to the system.

glibc's allocator keeps freed memory in its arenas for reuse: after a flood of large requests
(each read whole, parsed, refused) the process would hold hundreds of megabytes it no longer uses
until it exits. `malloc_trim` returns the free pages; it walks the heap, takes milliseconds when
there is something to give back and next to nothing otherwise, and runs off the event loop (ctypes
releases the GIL for the call). Where the C library has no malloc_trim (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_libc_name = ctypes.util.find_library("c")
_malloc_trim = getattr(ctypes.CDLL(_libc_name), "malloc_trim", None) if _libc_name else None


def release_free_memory() -> bool:
    """Returns the allocator's free memory to the system; whether any was returned."""
    if _malloc_trim is None:
        return False
    return bool(_malloc_trim(0))
