"""The ingest half of the pipeline: validate → deduplicate → publish, for a chunk at once.

What an HTTP endpoint does with a request's batches, and a replay with each chunk of a
sample: the result says, per delivery, what was received, rejected as invalid, removed as
duplicate and published to the queue, with the replay-clock time of each step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import polars as pl

from dqkit.events import schema as sch
from dqkit.pipeline import clock
from dqkit.pipeline.dedup import Deduplicator, DedupResult
from dqkit.pipeline.queue import Queue
from dqkit.pipeline.span_writer import SpanIds
from dqkit.pipeline.validate import ValidateResult, validate

STEPS = ("validate", "dedup", "publish")


@dataclass(frozen=True)
class IngestResult:
    """One chunk after the ingest half: validated, deduplicated and published."""

    batches: pl.DataFrame
    """One row per delivery, in input order: its fields, ids (``trace_id``, ``sid_*``),
    replay-clock times ``t_enter`` to ``t_published``, validation's and dedup's per-delivery
    columns, the queue's ``queue_partitions``, and :attr:`COUNTS`."""
    validated: ValidateResult
    deduped: DedupResult
    seconds: dict[str, float]
    """Measured seconds of each of :data:`STEPS`."""

    COUNTS: ClassVar[tuple[str, ...]] = ("received", "invalid", "duplicate", "published")


def ingest(deliveries: pl.DataFrame, events: pl.DataFrame, dedup: Deduplicator, queue: Queue, ids: SpanIds,
           limits: sch.ValidationLimits | None = None, watermark_ns: int | None = None) -> IngestResult:
    """Validate, deduplicate and publish one chunk's deliveries and their events.

    Args:
        deliveries: one row per delivery (``readers.RawChunk.deliveries``), none already loaded.
        events: their raw events (``readers.RawChunk.events``).
        dedup: the deduplicator (its seen-id state carries across chunks).
        queue: where accepted events are published, one message per delivery.
        ids: makes each delivery's trace and span ids.
        limits: what validation accepts.
        watermark_ns: the latest entry time so far (deliveries without one enter then).
    """
    seconds: dict[str, float] = {}
    deliveries = deliveries.sort("line_no").join(ids.delivery_ids(deliveries.get_column("delivery_key")),
                                                 on="delivery_key", how="left")
    deliveries = deliveries.with_columns(clock.entry_times(watermark_ns))
    events = events.join(deliveries.select("delivery_key", "trace_id"), on="delivery_key", how="left")
    t = time.perf_counter()
    v = validate(events, deliveries, limits)
    seconds["validate"] = time.perf_counter() - t
    t = time.perf_counter()
    dd = dedup.run(v.valid, deliveries)
    seconds["dedup"] = time.perf_counter() - t
    d = deliveries.join(v.per_delivery, on="delivery_key", how="left").join(dd.per_delivery, on="delivery_key", how="left")
    t = time.perf_counter()
    headers = d.select("delivery_key", traceparent=pl.format("00-{}-{}-01", pl.col("trace_id"), pl.col("sid_publish")))
    pub = queue.publish(dd.unique, headers)
    seconds["publish"] = time.perf_counter() - t
    d = d.join(pub, on="delivery_key", how="left").with_columns(
        received=pl.col("event_count"), invalid=pl.col("invalid_count"), duplicate=pl.col("duplicates_removed"),
        published=pl.col("queue_published"),
    )
    return IngestResult(clock.stamp_ingest(d, seconds), v, dd, seconds)
