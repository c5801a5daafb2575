"""The queue between the ingestion endpoint and the consumers: one interface, two adapters.

* :class:`LogSink` / :class:`LogSource` (``--queue embedded``, the default): an append-only log
  of delivery lines in a folder, no server needed. A request is acknowledged only after its line
  is written and fsynced (lines of concurrent requests share one write and one fsync); the
  consumer's position is a committed-offset file it advances only after the warehouse commit.
* :mod:`dqkit.live.kafka` (``--queue kafka://HOST:PORT/TOPIC``): one record per request.

The log is segmented (``segment-<first byte offset>.ndjson``) so that consumed segments can be
deleted; each segment is plain NDJSON, so the log is also a sample ``dqkit replay`` reads.
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from dqkit.errors import ConfigError, InputError
from dqkit.live.envelope import Delivery
from dqkit.live.lines import Record


class QueueFull(Exception):
    """The queue cannot take the request now (answered with 503 and ``Retry-After``)."""

    def __init__(self, reason: str, retry_after_s: int = 1) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class RecordTooLarge(Exception):
    """The queue refuses a record this big (answered with 413: a retry cannot succeed)."""


@dataclass(frozen=True)
class Sent:
    """Where an acknowledged request's record is."""

    partition: int
    offset: int


class Sink(Protocol):
    """The endpoint's side of a queue."""

    system: str
    topic: str

    async def send(self, delivery: Delivery) -> Sent:
        """Hand ``delivery`` over durably; raises :class:`QueueFull` or ``OSError``."""

    def close(self) -> None:
        """Finish what was handed over, then release the queue."""


class Source(Protocol):
    """A consumer's side of a queue."""

    system: str
    topic: str

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Up to ``max_records`` records after the last ones polled (may be empty)."""

    def commit(self, records: list[Record]) -> None:
        """Mark ``records`` (and everything before them) done: call only after the warehouse commit."""

    def drained(self) -> bool:
        """Whether everything in the queue now has been polled (asked after an empty poll)."""

    def close(self) -> None:
        """Release the queue; records polled but not committed are delivered again to the next consumer."""


@dataclass(frozen=True)
class QueueSpec:
    """``--queue``: ``embedded`` (a log folder beside the warehouse), ``embedded:PATH``, or
    ``kafka://HOST:PORT[,HOST:PORT]/TOPIC``."""

    system: str
    path: Path | None = None
    bootstrap: str = ""
    topic: str = "analytics.deliveries"


def parse_queue(text: str, warehouse: Path) -> QueueSpec:
    """Parse ``--queue``; the embedded log defaults to ``<warehouse>.queue/``."""
    if text == "embedded":
        return QueueSpec("embedded", path=Path(str(warehouse) + ".queue"))
    if text.startswith("embedded:"):
        return QueueSpec("embedded", path=Path(text.removeprefix("embedded:")))
    if text.startswith("kafka://"):
        u = urlparse(text)
        topic = u.path.strip("/")
        if not u.netloc or not topic or "/" in topic:
            raise ConfigError(f"--queue {text!r}: a Kafka queue looks like kafka://HOST:PORT/TOPIC, e.g. kafka://127.0.0.1:9092/events")
        return QueueSpec("kafka", bootstrap=u.netloc, topic=topic)
    raise ConfigError(f"--queue {text!r}: use embedded, embedded:PATH or kafka://HOST:PORT/TOPIC")


def open_sink(spec: QueueSpec, **options) -> Sink:
    """The endpoint's writer for ``spec``: a :class:`~dqkit.live.kafka.KafkaSink` or a :class:`LogSink`."""
    if spec.system == "kafka":
        from dqkit.live.kafka import KafkaSink

        return KafkaSink(spec.bootstrap, spec.topic, **options)
    return LogSink(spec.path, **options)


def open_source(spec: QueueSpec, **options) -> Source:
    """A consumer's reader for ``spec``, from its committed offsets: a :class:`~dqkit.live.kafka.KafkaSource` or a :class:`LogSource`."""
    if spec.system == "kafka":
        from dqkit.live.kafka import KafkaSource

        return KafkaSource(spec.bootstrap, spec.topic, **options)
    return LogSource(spec.path, **options)


# -- the embedded log ---------------------------------------------------------------------
_SEGMENT = "segment-{:020d}.ndjson"
_COMMITTED = "committed"


def _segments(folder: Path) -> list[tuple[int, Path]]:
    out = []
    for p in folder.glob("segment-*.ndjson"):
        try:
            out.append((int(p.stem.removeprefix("segment-")), p))
        except ValueError:
            continue
    return sorted(out)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_committed(folder: Path) -> int:
    """The embedded log's committed offset (0 before the first commit)."""
    try:
        return int((folder / _COMMITTED).read_text().strip() or 0)
    except FileNotFoundError:
        return 0


class LogSink:
    """The embedded log's writer (one per log: a second server on the same folder is refused)."""

    system = "embedded"

    def __init__(self, folder: str | Path, segment_bytes: int = 64 << 20, max_backlog_bytes: int = 1 << 30,
                 max_pending: int = 10_000) -> None:
        self.folder = Path(folder)
        self.topic = self.folder.name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.max_backlog_bytes = max_backlog_bytes
        self._lock_fh = open(self.folder / "writer.lock", "w")  # noqa: SIM115 - held while serving
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_fh.close()
            raise InputError(f"queue log {str(self.folder)!r} is in use by another dqkit serve; stop it or pass another --queue") from None
        segs = _segments(self.folder)
        if not segs:
            segs = [(0, self.folder / _SEGMENT.format(0))]
            segs[0][1].touch()
            _fsync_dir(self.folder)
        self._base, path = segs[-1]
        self._fh = open(path, "r+b")  # noqa: SIM115
        self._cut_partial_line()
        self._fh.seek(0, os.SEEK_END)
        self.end = self._base + self._fh.tell()
        self._pending: queue.Queue = queue.Queue(maxsize=max_pending)
        self._committed = (0.0, read_committed(self.folder))
        self._thread = threading.Thread(target=self._write_loop, name="dqkit-log-writer", daemon=True)
        self._thread.start()

    def _cut_partial_line(self) -> None:
        """A crash in the middle of a write leaves part of a line that was never acknowledged: cut it."""
        size = self._fh.seek(0, os.SEEK_END)
        if not size:
            return
        keep, step = size, 1 << 16
        while keep > 0:
            start = max(0, keep - step)
            self._fh.seek(start)
            block = self._fh.read(keep - start)
            at = block.rfind(b"\n")
            if at >= 0:
                keep = start + at + 1
                break
            keep = start
        if keep < size:
            self._fh.truncate(keep)
            os.fsync(self._fh.fileno())

    def backlog_bytes(self) -> int:
        """Bytes written and not yet committed by the consumer (re-read at most twice a second)."""
        at, committed = self._committed
        if time.monotonic() - at > 0.5:
            committed = read_committed(self.folder)
            self._committed = (time.monotonic(), committed)
        return self.end - committed

    async def send(self, delivery: Delivery) -> Sent:
        """Queue ``delivery``'s line for the writer thread and wait until it is fsynced; :class:`QueueFull` when the backlog or the wait list is full."""
        if self.backlog_bytes() > self.max_backlog_bytes:
            raise QueueFull(f"the queue holds more than {self.max_backlog_bytes:,} bytes not yet loaded", 5)
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        try:
            self._pending.put_nowait((delivery.line, fut, loop))
        except queue.Full:
            raise QueueFull("too many requests waiting to be written") from None
        return await fut

    def _write_loop(self) -> None:
        while True:
            first = self._pending.get()
            if first is None:
                return
            items = [first]
            size = len(first[0])
            stop = False
            while size < (4 << 20):
                try:
                    item = self._pending.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                items.append(item)
                size += len(item[0]) + 1
            self._write(items)
            if stop:
                return

    def _write(self, items: list) -> None:
        at = self._fh.tell()
        data = b"".join(line + b"\n" for line, _, _ in items)
        try:
            self._fh.write(data)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except Exception as exc:  # noqa: BLE001 - every waiting request must get an answer
            # Nothing half-written stays: the log goes back to where this write began.
            try:
                self._fh.truncate(at)
                self._fh.seek(at)
            except OSError:
                pass
            for _, fut, loop in items:
                loop.call_soon_threadsafe(_fail, fut, exc)
            return
        offset = self._base + at
        for line, fut, loop in items:
            loop.call_soon_threadsafe(_resolve, fut, Sent(0, offset))
            offset += len(line) + 1
        self.end = offset
        if self._fh.tell() >= self.segment_bytes:
            self._roll()

    def _roll(self) -> None:
        self._fh.close()
        self._base = self.end
        path = self.folder / _SEGMENT.format(self._base)
        self._fh = open(path, "w+b")  # noqa: SIM115
        _fsync_dir(self.folder)

    def close(self) -> None:
        """Write and fsync every line already handed over, then release the file and the writer lock."""
        self._pending.put(None)
        self._thread.join()
        self._fh.close()
        self._lock_fh.close()


def _resolve(fut: asyncio.Future, value: Sent) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


class LogSource:
    """Reads the embedded log from its committed offset; :meth:`commit` moves that offset on."""

    system = "embedded"

    def __init__(self, folder: str | Path, read_bytes: int = 8 << 20) -> None:
        self.folder = Path(folder)
        self.topic = self.folder.name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.position = read_committed(self.folder)
        self.read_bytes = read_bytes

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Up to ``max_records`` whole lines after the position, waiting up to ``timeout_s`` for the first."""
        deadline = time.monotonic() + timeout_s
        while True:
            records = self._read(max_records)
            if records or time.monotonic() >= deadline:
                return records
            time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))

    def _read(self, max_records: int) -> list[Record]:
        segs = _segments(self.folder)
        for n, (base, path) in enumerate(segs):
            nxt = segs[n + 1][0] if n + 1 < len(segs) else None
            if nxt is not None and nxt <= self.position:
                continue
            # (a position before this segment: its own segment was deleted, so that data is gone)
            self.position = max(self.position, base)
            with open(path, "rb") as fh:
                fh.seek(self.position - base)
                block = fh.read(self.read_bytes)
            whole = block[:block.rfind(b"\n") + 1]
            if not whole:
                if nxt is not None and len(block) == 0:
                    self.position = nxt  # this segment is done; the next one follows
                    continue
                return []
            out: list[Record] = []
            at = self.position
            for line in whole.split(b"\n")[:-1]:
                end = at + len(line) + 1
                if line.strip():
                    out.append(Record(line, 0, at, end=end))
                at = end
                if len(out) >= max_records:
                    break
            self.position = at
            return out
        return []

    def commit(self, records: list[Record]) -> None:
        """Durably replace the committed offset with the end of ``records``, then delete the segments wholly before it."""
        if not records:
            return
        upto = max(r.end for r in records)
        tmp = self.folder / (_COMMITTED + ".tmp")
        with open(tmp, "w") as fh:
            fh.write(f"{upto}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.folder / _COMMITTED)
        _fsync_dir(self.folder)
        # Segments wholly before the committed offset are done with (never the last one: it is written).
        segs = _segments(self.folder)
        for (_, path), (nxt, _) in itertools.pairwise(segs):
            if nxt <= upto:
                path.unlink(missing_ok=True)

    def drained(self) -> bool:
        """No whole line after the position (a partial last line was never acknowledged)."""
        at = self.position
        try:
            return not self._read(1)
        finally:
            self.position = at

    def close(self) -> None:
        """Nothing to release: the log is opened per read and the position lives in the committed file."""
