"""Deduplication by event id, within a chunk and across everything seen in a bounded window.

Client retries resend a batch minutes or hours later, so a per-batch dedup (the reference
design's) misses them. The seen-id state covers ``window`` of replay time and is stored in the
warehouse with each committed chunk, so a later run sees the earlier run's ids.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
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


def _id_key(ids: pl.Expr) -> list[pl.Expr]:
    """An event id as two independent 64-bit hashes: 16 bytes in memory instead of the id's
    text, with a 2^-128 chance that two ids in the window collide. Never persisted (the
    warehouse keeps the ids themselves), so the hash needs to be stable within one process only."""
    return [ids.hash(seed=0x5EED).alias("h1"), ids.hash(seed=0xD0D0).alias("h2")]


_SEEN_SCHEMA = {"h1": pl.UInt64, "h2": pl.UInt64, "received_at": pl.Datetime("us", "UTC"), "ref": pl.UInt32}


class Deduplicator:
    """Remembers event ids for ``window`` of replay time.

    In memory each remembered id costs about 28 bytes (two hashes, its arrival time and a
    reference to the batch that brought it), so ten million ids take under 300 MB.
    """

    def __init__(self, window: timedelta = timedelta(days=7), state: Iterable[pl.DataFrame] = ()) -> None:
        """``state``: earlier ids (frames of :data:`STATE_SCHEMA`), read piece by piece."""
        self.window = window
        self._seen = pl.DataFrame(schema=_SEEN_SCHEMA)
        # Batches that brought remembered ids: ``ref`` is the row number here.
        self._batches = pl.DataFrame(schema={"batch_id": pl.String, "trace_id": pl.String})
        for piece in state:
            self._remember(piece)
        self._seen = self._seen.unique(["h1", "h2"], keep="first", maintain_order=True)

    @property
    def size(self) -> int:
        """Ids remembered now."""
        return self._seen.height

    def _remember(self, ids: pl.DataFrame) -> None:
        if ids.is_empty():
            return
        batches = ids.select("batch_id", "trace_id").unique(maintain_order=True).with_row_index("ref", offset=self._batches.height)
        self._batches = pl.concat([self._batches, batches.drop("ref")])
        new = ids.join(batches, on=["batch_id", "trace_id"], how="left", nulls_equal=True).select(
            *_id_key(pl.col("event_id")), pl.col("received_at").cast(pl.Datetime("us", "UTC")), pl.col("ref").cast(pl.UInt32))
        self._seen = pl.concat([self._seen, new]).rechunk()

    def _forget_before(self, cutoff) -> None:
        self._seen = self._seen.filter(pl.col("received_at") >= cutoff)
        if self._batches.height > 2 * max(self._seen.height, 1_000):
            # Drop batches no remembered id points to (amortised: only when most are stale).
            live = self._seen.get_column("ref").unique().sort()
            remap = pl.DataFrame({"ref": live, "new_ref": pl.int_range(live.len(), dtype=pl.UInt32, eager=True)})
            self._batches = self._batches[live.to_list()] if live.len() else self._batches.clear()
            self._seen = self._seen.join(remap, on="ref").drop("ref").rename({"new_ref": "ref"})

    def run(self, valid: pl.DataFrame, deliveries: pl.DataFrame) -> DedupResult:
        ordered = valid.sort("line_no", "event_index")
        first = ordered.select(pl.col("event_id").is_first_distinct()).to_series()
        earlier_in_chunk = (
            ordered.filter(first)
            .select("event_id", duplicate_of_batch=pl.col("batch_id"), duplicate_of_trace=pl.col("trace_id"))
        )
        in_chunk_dups = ordered.filter(~first).join(earlier_in_chunk, on="event_id", how="left")
        firsts = ordered.filter(first).with_columns(_id_key(pl.col("event_id")))
        joined = firsts.join(self._seen.select("h1", "h2", "ref"), on=["h1", "h2"], how="left", maintain_order="left")
        seen_before = joined.filter(pl.col("ref").is_not_null())
        refs = self._batches.with_row_index("ref").select(
            pl.col("ref").cast(pl.UInt32), duplicate_of_batch=pl.col("batch_id"), duplicate_of_trace=pl.col("trace_id"))
        seen_before = seen_before.join(refs, on="ref", how="left", maintain_order="left")
        unique = joined.filter(pl.col("ref").is_null()).drop("h1", "h2", "ref")
        duplicates = pl.concat([seen_before.drop("h1", "h2", "ref"), in_chunk_dups], how="vertical_relaxed")

        new_ids = unique.select(list(STATE_SCHEMA))
        self._remember(new_ids)
        if deliveries.get_column("received_at").drop_nulls().len():
            self._forget_before(pl.lit(deliveries.get_column("received_at").max()) - pl.lit(self.window))

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
