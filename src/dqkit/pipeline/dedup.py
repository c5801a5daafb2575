"""Deduplication by event id, within a chunk and across everything seen in a bounded window.

Client retries resend a batch minutes or hours later, so a per-batch dedup (the reference
design's) misses them. The seen-id state covers ``window`` of replay time. A later run reads
it back from the warehouse (the ids of the rows that got past dedup: loaded or dead-lettered),
so it sees the earlier run's ids.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

import polars as pl

STATE_SCHEMA = {
    "event_id": pl.String,
    "batch_id": pl.String,
    "trace_id": pl.String,
    "received_at": pl.Datetime("us", "UTC"),
}


@dataclass(frozen=True)
class DedupResult:
    """One chunk's valid events split into first sightings and duplicates."""

    unique: pl.DataFrame
    """Events whose id was not seen before (in this chunk or within the window), in input order."""
    duplicates: pl.DataFrame
    """Removed events, with ``duplicate_of_batch`` and ``duplicate_of_trace``."""
    per_delivery: pl.DataFrame
    """``delivery_key`` and :attr:`COUNTS` for every delivery."""

    COUNTS: ClassVar[tuple[str, ...]] = ("dedup_input", "duplicates_removed", "dedup_output")


def _id_key(ids: pl.Expr) -> list[pl.Expr]:
    """An event id as two independent 64-bit hashes: 16 bytes in memory instead of the id's
    text, with a 2^-128 chance that two ids in the window collide. Never persisted (the
    warehouse keeps the ids themselves), so the hash needs to be stable within one process only."""
    return [ids.hash(seed=0x5EED).alias("h1"), ids.hash(seed=0xD0D0).alias("h2")]


_SEEN_SCHEMA = {"h1": pl.UInt64, "h2": pl.UInt64, "received_at": pl.Datetime("us", "UTC"), "ref": pl.UInt32}


class _SortedRuns:
    """A set of id keys as a few runs sorted by ``h1`` (a small log-structured merge): a lookup
    is a binary search per run, an insert adds a run and merges runs of similar size. A chunk
    costs time in proportion to its own size, however many ids are remembered; rebuilding one
    hash table of every remembered id per chunk would grow with the window."""

    def __init__(self) -> None:
        self.runs: list[pl.DataFrame] = []

    @property
    def height(self) -> int:
        return sum(r.height for r in self.runs)

    max_run = 2_000_000
    """Runs stop merging at this size: merging is a copy, and bigger copies are memory peaks."""

    def add(self, rows: pl.DataFrame, cutoff: datetime | None) -> None:
        if rows.height:
            self.runs.append(rows.sort("h1"))
        while (len(self.runs) > 1 and self.runs[-2].height <= 2 * self.runs[-1].height
               and self.runs[-2].height + self.runs[-1].height <= self.max_run):
            newer, older = self.runs.pop(), self.runs.pop()
            if cutoff is not None:
                newer, older = (r.filter(pl.col("received_at") >= cutoff) for r in (newer, older))
            merged = pl.concat([older, newer]).sort("h1")
            if merged.height:
                self.runs.append(merged)

    def prune(self, cutoff: datetime) -> None:
        for i, run in enumerate(self.runs):  # one run at a time: never two copies of everything
            self.runs[i] = run.filter(pl.col("received_at") >= cutoff)
        self.runs = [r for r in self.runs if r.height]

    def find(self, keys: pl.DataFrame, cutoff: datetime | None) -> pl.Series:
        """``ref`` of each key's remembered entry at or after ``cutoff`` (null when none)."""
        found = pl.Series("ref", [None] * keys.height, dtype=pl.UInt32)
        h1, h2 = keys.get_column("h1"), keys.get_column("h2")
        for run in self.runs:
            at = run.get_column("h1").search_sorted(h1, side="left").clip(upper_bound=run.height - 1)
            hit = run.select(pl.all().gather(at))
            match = (hit.get_column("h1") == h1) & (hit.get_column("h2") == h2)
            if cutoff is not None:
                match = match & (hit.get_column("received_at") >= cutoff)
            found = found.zip_with(found.is_not_null() | ~match, hit.get_column("ref"))
        return found


class Deduplicator:
    """Remembers event ids for ``window`` of replay time.

    In memory each remembered id costs about 28 bytes (two hashes, its arrival time and a
    reference to the batch that brought it), so ten million ids take under 300 MB.
    """

    prune_floor = 100_000
    """Below twice this many remembered ids, expired ones are only skipped, not yet dropped."""

    def __init__(self, window: timedelta = timedelta(days=7), state: Iterable[pl.DataFrame] = ()) -> None:
        """``state``: earlier ids (frames of :data:`STATE_SCHEMA`), read piece by piece."""
        self.window = window
        self._seen = _SortedRuns()
        self._cutoff: datetime | None = None
        self._pruned_at = 0  # remembered ids at the last full prune
        # Batches that brought remembered ids: ``ref`` is the row number here.
        self._batches = pl.DataFrame(schema={"batch_id": pl.String, "trace_id": pl.String})
        for piece in state:
            if piece.height:
                self._remember(piece, piece.select(_id_key(pl.col("event_id"))))

    @property
    def size(self) -> int:
        """Ids remembered now (within the window)."""
        self._prune()
        return self._seen.height

    def _remember(self, ids: pl.DataFrame, keys: pl.DataFrame) -> None:
        """Remember ``ids`` (with their ``keys``). An id remembered twice is harmless: a lookup
        takes any entry inside the window, and merges drop entries older than it."""
        first = keys.select(pl.struct("h1", "h2").is_first_distinct()).to_series()
        ids, keys = ids.filter(first), keys.filter(first)
        if ids.is_empty():
            return
        batches = ids.select("batch_id", "trace_id").unique(maintain_order=True).with_row_index("ref", offset=self._batches.height)
        self._batches = pl.concat([self._batches, batches.drop("ref")], rechunk=False)
        refs = ids.join(batches, on=["batch_id", "trace_id"], how="left", nulls_equal=True, maintain_order="left")
        self._seen.add(keys.with_columns(
            refs.get_column("received_at").cast(pl.Datetime("us", "UTC")), refs.get_column("ref").cast(pl.UInt32)), self._cutoff)

    def _forget_before(self, cutoff: datetime) -> None:
        self._cutoff = cutoff if self._cutoff is None else max(self._cutoff, cutoff)
        if self._seen.height > 2 * max(self._pruned_at, self.prune_floor):  # amortised: a full prune when memory doubled
            self._prune()

    def _prune(self) -> None:
        """Drop expired ids, and the batches no remembered id points to any more."""
        if self._cutoff is None:
            return
        self._seen.prune(self._cutoff)
        self._pruned_at = self._seen.height
        if self._batches.height > 2 * max(self._seen.height, 1_000):
            refs = [r.get_column("ref") for r in self._seen.runs]
            live = pl.concat(refs).unique().sort() if refs else pl.Series("ref", [], pl.UInt32)
            remap = pl.DataFrame({"ref": live, "new_ref": pl.int_range(live.len(), dtype=pl.UInt32, eager=True)})
            self._batches = self._batches.select(pl.all().gather(live))
            self._seen.runs = [r.join(remap, on="ref", maintain_order="left").drop("ref").rename({"new_ref": "ref"})
                               for r in self._seen.runs]

    def run(self, valid: pl.DataFrame, deliveries: pl.DataFrame) -> DedupResult:
        """Split a chunk's ``valid`` events into first sightings and duplicates, and remember
        the first sightings' ids (``deliveries``' latest arrival moves the window on)."""
        # Events are wide (each keeps its raw text), so the order and the masks are worked out on
        # narrow columns and the wide frame is copied once, into ``unique``.
        in_order = valid.select(
            ((pl.col("line_no").diff() > 0) | ((pl.col("line_no").diff() == 0) & (pl.col("event_index").diff() > 0)))
            .fill_null(True).all()
        ).item()
        ordered = valid if in_order else valid.sort("line_no", "event_index")
        first = ordered.select(pl.col("event_id").is_first_distinct()).to_series()
        keys = ordered.select(_id_key(pl.col("event_id")))
        refs = self._seen.find(keys, self._cutoff)
        new = first & refs.is_null()
        earlier_in_chunk = ordered.select(
            "event_id", duplicate_of_batch=pl.col("batch_id"), duplicate_of_trace=pl.col("trace_id")).filter(first)
        in_chunk_dups = ordered.filter(~first).join(earlier_in_chunk, on="event_id", how="left")
        earlier = self._batches.select(pl.all().gather(refs.filter(first).drop_nulls()))
        seen_before = ordered.filter(first & refs.is_not_null()).with_columns(
            duplicate_of_batch=earlier.get_column("batch_id"), duplicate_of_trace=earlier.get_column("trace_id"))
        unique = ordered.filter(new)
        duplicates = pl.concat([seen_before, in_chunk_dups], how="vertical_relaxed")

        if deliveries.get_column("received_at").drop_nulls().len():
            self._forget_before(deliveries.get_column("received_at").max() - self.window)
        self._remember(unique.select(list(STATE_SCHEMA)), keys.filter(new))

        counts_in = valid.group_by("delivery_key").agg(dedup_input=pl.len().cast(pl.Int64))
        counts_dup = duplicates.group_by("delivery_key").agg(duplicates_removed=pl.len().cast(pl.Int64))
        per_delivery = (
            deliveries.select("delivery_key")
            .join(counts_in, on="delivery_key", how="left")
            .join(counts_dup, on="delivery_key", how="left")
            .with_columns(pl.col("dedup_input", "duplicates_removed").fill_null(0))
            .with_columns(dedup_output=pl.col("dedup_input") - pl.col("duplicates_removed"))
        )
        return DedupResult(unique, duplicates, per_delivery)
