"""Gives the memory of a large request back to the system once it is done.

A 30 MB REST body becomes about 600 MB of Python objects while it is parsed
and converted. Python frees them, but glibc's allocator keeps the freed pages
in its arenas (one per thread that allocated), so the server kept much of it
after the request: measured 550 MB before four such requests at once, 2.5 GB
at the peak, 935 MB after. `malloc_trim` hands the free pages back to the
kernel (about 620-680 MB after).
"""

import ctypes
import ctypes.util
from typing import Callable, Optional

# Requests below this size leave too little behind to be worth a trim (a
# trim walks every arena: about a millisecond).
LARGE_REQUEST_BYTES = 1 << 20


def _load_malloc_trim() -> Optional[Callable[[int], int]]:
    name = ctypes.util.find_library('c')
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # Not glibc (musl, macOS): no trim.
        return None


_MALLOC_TRIM = _load_malloc_trim()


def release_after(request_bytes: int) -> None:
    """Returns freed memory to the system after a request of that size."""
    # Thread-safe: glibc locks each arena while it trims it.
    if request_bytes >= LARGE_REQUEST_BYTES and _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
