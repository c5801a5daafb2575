"""The queue between ingest and enrichment, and its embedded implementation.

A message is one client batch's accepted events. It carries the W3C ``traceparent`` of the
batch's publish span, so the consumer's spans continue the batch's trace (OpenTelemetry
messaging conventions). A Kafka adapter implements :class:`Queue` with one record per event
keyed by user id and the same header.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

import polars as pl


@dataclass
class Delivered:
    """What a consumer receives: events plus the per-message headers."""

    events: pl.DataFrame
    """Events with a ``partition`` column and their message's ``delivery_key``."""
    headers: pl.DataFrame
    """One row per message: ``delivery_key, traceparent``."""


class Queue(Protocol):
    """What the pipeline needs of a queue: publish per-delivery messages, consume them."""

    system: str
    topic: str
    partitions: int

    def publish(self, events: pl.DataFrame, headers: pl.DataFrame) -> pl.DataFrame:
        """Publish each delivery's events as a message; return per-delivery
        ``delivery_key, queue_partitions, queue_published``."""

    def consume(self) -> Delivered | None:
        """Everything published and not yet consumed, or ``None`` when empty."""


class EmbeddedQueue:
    """An in-process queue with hash partitioning by user id; nothing leaves the process."""

    system = "embedded"

    def __init__(self, topic: str = "analytics.events", partitions: int = 12) -> None:
        self.topic = topic
        self.partitions = partitions
        self._pending: deque[Delivered] = deque()

    def publish(self, events: pl.DataFrame, headers: pl.DataFrame) -> pl.DataFrame:
        """Keep each delivery's events as one message, partitioned by user id (see :meth:`Queue.publish`)."""
        parted = events.with_columns(
            partition=(pl.col("user_id").hash(seed=0) % self.partitions).cast(pl.Int32)
        )
        self._pending.append(Delivered(parted, headers))
        return (
            headers.select("delivery_key")
            .join(
                parted.group_by("delivery_key").agg(
                    queue_partitions=pl.col("partition").n_unique().cast(pl.Int64),
                    queue_published=pl.len().cast(pl.Int64),
                ),
                on="delivery_key",
                how="left",
            )
            .with_columns(pl.col("queue_partitions", "queue_published").fill_null(0))
        )

    def consume(self) -> Delivered | None:
        """Everything published and not yet consumed, as one delivery; ``None`` when empty."""
        if not self._pending:
            return None
        parts = list(self._pending)
        self._pending.clear()
        return Delivered(
            pl.concat([p.events for p in parts], how="vertical_relaxed"),
            pl.concat([p.headers for p in parts], how="vertical_relaxed"),
        )
