"""Tune Polars' memory allocator for a replay: keep freed memory a little longer.

Polars' allocator (jemalloc) returns freed memory to the system after half a second. A replay
frees and allocates the same few hundred MB for every chunk, a second or two apart, and faulting
those pages in again cost up to a tenth of its CPU. Three seconds keeps them for the next chunk
(10 s held so much that a 10M-event replay peaked 4% higher) and still gives them back once
work stops; it saved 0.5-1 s of CPU per 200k events.

Polars reads ``_RJEM_MALLOC_CONF`` (after its own defaults) once, when it is first imported in a
process, so :func:`keep_freed_memory` helps only if it runs before that: the ``dqkit`` command
calls it first thing. A program that calls :func:`dqkit.replay` should call it (or set the
variable itself) before it imports Polars; called later it changes nothing.
"""

from __future__ import annotations

import os
import sys

VARIABLE = "_RJEM_MALLOC_CONF"
VALUE = "dirty_decay_ms:3000,muzzy_decay_ms:3000"


def keep_freed_memory() -> bool:
    """Set the allocator's decay for this process unless the user set it; ``True`` if it can
    still take effect (Polars not imported yet)."""
    os.environ.setdefault(VARIABLE, VALUE)
    return "polars" not in sys.modules
