"""Process memory tuning for the CLI.

glibc gives each thread that allocates its own malloc arena (up to 8 per core) and keeps the
memory freed there for reuse: a run with a few dozen download and upload threads, each passing
1 MiB buffers, holds tens of MB of RSS it no longer uses. Two arenas serve these threads as
fast here (the bytes move in the kernel and in hashlib, not in malloc) and cap that overhead.
"""

from __future__ import annotations

import ctypes
import sys
from contextlib import suppress

#: ``M_ARENA_MAX`` of glibc's ``mallopt``.
_M_ARENA_MAX = -8
#: What the CLI asks for (and its local Prefect API server gets as ``MALLOC_ARENA_MAX``).
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas of this process (threads started later share them); False
    where there is no glibc. Call it before starting threads."""
    if not sys.platform.startswith("linux"):
        return False
    with suppress(OSError, AttributeError, TypeError):
        # the process's own symbols: libc is loaded (no find_library, which runs ldconfig)
        return bool(ctypes.CDLL(None).mallopt(_M_ARENA_MAX, arenas))
    return False
