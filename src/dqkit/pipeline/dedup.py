"""Deduplication by event id, within a chunk and across everything seen in a bounded window.

Client retries resend a batch minutes or hours later, so a per-batch dedup (the reference
design's) misses them. The seen-id state covers ``window`` of replay time and is stored in the
warehouse with each committed chunk, so a later run sees the earlier run's ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import polars as pl

STATE_SCHEMA = {
    "event_id": pl.String,
    "batch_id": pl.String,
    "trace_id": pl.String,
    "received_at": pl.Datetime("us", "UTC"),
}


@dataclass
class DedupResult:
    unique: pl.DataFrame
    duplicates: pl.DataFrame
    """Removed events, with ``duplicate_of_batch`` and ``duplicate_of_trace``."""
    per_delivery: pl.DataFrame
    """``delivery_key, dedup_input, duplicates_removed, dedup_output``."""
    new_ids: pl.DataFrame
    """Ids first seen in this chunk (to persist with it)."""


@dataclass
class Deduplicator:
    """Remembers event ids for ``window`` of replay time."""

    window: timedelta = timedelta(days=7)
    seen: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=STATE_SCHEMA))

    def run(self, valid: pl.DataFrame, deliveries: pl.DataFrame) -> DedupResult:
        ordered = valid.sort("line_no", "event_index")
        first = ordered.select(pl.col("event_id").is_first_distinct()).to_series()
        earlier_in_chunk = (
            ordered.filter(first)
            .select("event_id", duplicate_of_batch=pl.col("batch_id"), duplicate_of_trace=pl.col("trace_id"))
        )
        in_chunk_dups = ordered.filter(~first).join(earlier_in_chunk, on="event_id", how="left")
        firsts = ordered.filter(first)
        state = self.seen.select(
            "event_id", duplicate_of_batch=pl.col("batch_id"), duplicate_of_trace=pl.col("trace_id")
        )
        seen_before = firsts.join(state, on="event_id", how="inner")
        unique = firsts.join(state, on="event_id", how="anti")
        duplicates = pl.concat([seen_before, in_chunk_dups], how="vertical_relaxed")

        new_ids = unique.select(list(STATE_SCHEMA))
        self.seen = pl.concat([self.seen, new_ids])
        if deliveries.get_column("received_at").drop_nulls().len():
            self.seen = self.seen.filter(
                pl.col("received_at") >= pl.lit(deliveries.get_column("received_at").max()) - pl.lit(self.window))

        counts_in = valid.group_by("delivery_key").agg(dedup_input=pl.len().cast(pl.Int64))
        counts_dup = duplicates.group_by("delivery_key").agg(duplicates_removed=pl.len().cast(pl.Int64))
        per_delivery = (
            deliveries.select("delivery_key")
            .join(counts_in, on="delivery_key", how="left")
            .join(counts_dup, on="delivery_key", how="left")
            .with_columns(pl.col("dedup_input", "duplicates_removed").fill_null(0))
            .with_columns(dedup_output=pl.col("dedup_input") - pl.col("duplicates_removed"))
        )
        return DedupResult(unique, duplicates, per_delivery, new_ids)
