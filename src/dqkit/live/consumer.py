"""The consumer: queue records through the pipeline into the warehouse, then the queue offsets.

Per poll: the records become one chunk (:class:`dqkit.live.lines.LineParser`), which
:class:`dqkit.pipeline.run.Replay` processes and commits to the warehouse (``process`` +
``flush``); only then are the records' offsets committed. A crash between the two redelivers
records whose deliveries the warehouse already holds, and the pipeline skips them by delivery
key (and would drop their events by event id): effectively once.

DuckDB lets one process write a file, so one consumer is the *loader*: the first to open the
warehouse. Further consumers (``--consumers N``) are hot standbys that wait for the warehouse's
lock and take over, from the committed offsets, when the loader stops or dies. They add
availability, not throughput: the pipeline's dedup and session state live in the loader.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dqkit.errors import WarehouseBusyError
from dqkit.live.envelope import delivery_key
from dqkit.live.lines import LineParser
from dqkit.live.queues import QueueSpec, open_source
from dqkit.live.trace import ReceiveSpans
from dqkit.pipeline.span_writer import delivery_trace_id
from dqkit.telemetry import SCOPE

if TYPE_CHECKING:
    from dqkit.pipeline.result import RunCounts

log = logging.getLogger(__name__)

CRASH_ENV = "DQKIT_CONSUMER_CRASH_AFTER_COMMITS"
"""Fault injection for tests: the consumer kills itself (SIGKILL) right after this many
warehouse commits, before committing the queue offsets of the last one."""


@dataclass(frozen=True)
class ConsumerConfig:
    """Settings of one consumer."""

    max_records: int = 2_000
    """Records (client batches) taken into one chunk at most."""
    poll_s: float = 0.2
    """How long a poll waits for the first record."""
    linger_s: float = 0.05
    """After the first record, how long to wait for more to fill the chunk."""
    standby_poll_s: float = 0.5
    """How often a standby tries the warehouse's lock."""
    metrics_interval_s: float = 60.0
    """How often the run's metrics (cumulative) are written while it runs; also when it stops."""


@dataclass
class ConsumeResult:
    """What a consumer did: chunks and records committed, and its run's ledger and id (``None``/empty for a standby that never loaded)."""

    chunks: int = 0
    records: int = 0
    ledger: RunCounts | None = None
    run_id: str = ""


def _open_run(queue: QueueSpec, warehouse, telemetry, profiles, geoip, stop: threading.Event, poll_s: float):
    """The pipeline run, once this process holds the warehouse (a standby waits here). A standby
    told to stop still waits while records are left that no one committed (the loader may have
    stopped before the last requests came in), then takes over and drains them."""
    from dqkit.pipeline.run import Replay, ReplayConfig

    waited = False
    while True:
        try:
            run = Replay(warehouse, telemetry, profiles=profiles, geoip=geoip, config=ReplayConfig(clock="live"))
            if waited:
                log.warning("consumer %d took over the warehouse", os.getpid())
            return run
        except WarehouseBusyError:
            if not waited:
                log.info("consumer %d is a standby: another process writes %s", os.getpid(), warehouse)
            waited = True
            if stop.wait(poll_s) and _settled(queue):
                return None


def _settled(queue: QueueSpec) -> bool:
    """Whether every record in the queue has been committed."""
    source = open_source(queue)
    try:
        return source.drained()
    finally:
        source.close()


def consume(queue: QueueSpec, warehouse: str | Path, telemetry: str | Path, profiles=None, geoip=None,
            config: ConsumerConfig | None = None, stop: threading.Event | None = None,
            on_chunk=None) -> ConsumeResult:
    """Consume ``queue`` into ``warehouse`` until ``stop`` is set, then drain what is left.

    Args:
        queue: where the ingestion endpoint writes (:func:`dqkit.live.queues.parse_queue`).
        warehouse: the DuckDB file to load; one process at a time writes it, so a second
            consumer waits as a standby until it can.
        telemetry: folder for the run's spans and metrics, as for :func:`dqkit.pipeline.run.replay`.
        profiles: user profiles for enrichment, as for :func:`dqkit.pipeline.run.replay`.
        geoip: a ``.mmdb`` file or range tables, as for :func:`dqkit.pipeline.run.replay`.
        config: chunk size, poll and linger times, standby and metrics intervals.
        stop: set it (SIGTERM does, in ``dqkit consume``) to finish: the queue is read until
            empty, the last chunk committed, the run's spans and metrics flushed.
        on_chunk: called after each committed chunk with ``(records, ledger)``.
    """
    cfg = config or ConsumerConfig()
    stop = stop or threading.Event()
    crash_after = int(os.environ.get(CRASH_ENV, "0") or 0)
    out = ConsumeResult()
    run = _open_run(queue, warehouse, telemetry, profiles, geoip, stop, cfg.standby_poll_s)
    if run is None:  # stopped while standing by
        return out
    source = receive = None
    parser = LineParser()
    metrics_at = time.monotonic()
    try:
        source = open_source(queue)
        receive = ReceiveSpans(telemetry, source.system, source.topic, getattr(source, "group", None))
        while True:
            t_poll = time.time_ns()
            records = source.poll(cfg.max_records, cfg.poll_s)
            # Fewer, bigger chunks: each has a fixed cost (a parse query, a commit), which at a
            # trickle of requests would take the CPU from the endpoint.
            linger_until = time.monotonic() + cfg.linger_s
            while records and len(records) < cfg.max_records and time.monotonic() < linger_until:
                records += source.poll(cfg.max_records - len(records), max(0.0, linger_until - time.monotonic()))
            if not records:
                if stop.is_set() and source.drained():
                    break
                continue
            t_polled = time.time_ns()
            chunk = parser.parse(records, derive_context=source.system == "embedded")
            run.process(chunk)
            run.flush()  # the warehouse commit ...
            out.chunks += 1
            out.records += len(records)
            if crash_after and out.chunks >= crash_after:
                os.kill(os.getpid(), signal.SIGKILL)
            source.commit(records)  # ... and only then the queue's offsets
            receive.emit(_contexts(chunk, records), t_poll, t_polled)
            if time.monotonic() - metrics_at >= cfg.metrics_interval_s:
                _export_metrics(run)
                metrics_at = time.monotonic()
            if on_chunk:
                on_chunk(len(records), run.ledger)
    finally:
        if source is not None:
            source.close()
        if receive is not None:
            receive.close()
        result = run.close(f"live:{queue.system}:{source.topic if source else queue.topic}")
        out.ledger = result.ledger
        out.run_id = result.run_id
    return out


def _export_metrics(run) -> None:
    """The run's metrics so far, as one cumulative OTLP export (the run writes the last one when it closes)."""
    if run.metrics.start_ns:
        run.telemetry.emit_metrics(run.metrics.snapshot(time.time_ns(), dict(run.tcfg.resource), SCOPE))


def _contexts(chunk, records) -> list[tuple[str, str, int, int]]:
    """(trace id, send span id, partition, offset) of each record whose delivery names its sender."""
    parents = dict(zip(*chunk.deliveries.select("delivery_key", "parent_span_id").to_dict(as_series=False).values()))
    out = []
    for r in records:
        key = delivery_key(r.value.rstrip(b"\r\n"))
        if parents.get(key):
            out.append((delivery_trace_id(key), parents[key], r.partition, r.offset))
    return out
