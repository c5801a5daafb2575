"""Read ahead on a background thread: the next item is produced while the caller uses this one.

For iterators whose work happens outside the GIL: the replay's sample reader (DuckDB parses
the next chunk) and the span loader (export blocks read ahead of the statement loading them).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")


class ReadAhead(Iterator[T]):
    """Read ahead on a background thread: the next chunk is parsed (by DuckDB, outside the GIL)
    while the pipeline works on this one. Reading starts at once, so the first chunk is parsed
    while the caller still sets up. At most ``depth`` parsed chunks wait, which bounds memory;
    an error in the reader is raised here, in order. Works for any iterator whose work happens
    outside the GIL (the sample reader and the span loader use it).

    :meth:`close` (or leaving a ``with`` block) stops the reader and closes ``chunks``; it runs
    by itself once the chunks are exhausted or the reader failed."""

    def __init__(self, chunks: Iterator[T], depth: int = 1) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._closed = False
        # The thread holds no reference to this object, so one a consumer drops is collected
        # and its __del__ releases the reader.
        self._thread = threading.Thread(target=_read_ahead, args=(chunks, self._q, self._stop),
                                        name="dqkit-reader", daemon=True)
        self._thread.start()

    def __next__(self) -> T:
        if self._closed:
            raise StopIteration
        item = self._q.get()
        if item is _READ_DONE:
            self.close()
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        return item

    def close(self) -> None:
        """Stop reading (after the chunk being parsed) and close the source."""
        if not self._closed:
            self._closed = True
            self._stop.set()
            self._thread.join()

    def __enter__(self) -> ReadAhead[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self._stop.set()


_READ_DONE = object()


def _read_ahead(chunks: Iterator, q: queue.Queue, stop: threading.Event) -> None:
    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for chunk in chunks:
            if not put(chunk):
                break
        else:
            put(_READ_DONE)
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
        put(exc)
    finally:
        close = getattr(chunks, "close", None)
        if close:
            close()
