"""The replay clock: a replay of last Tuesday produces last Tuesday's timeline.

A batch enters at its ``received_at``; each stage then takes its measured processing time
(amortized over the events a vectorized step handled) plus any injected delay; warehouse
loads run on a fixed cadence. All times here are integer nanoseconds since the epoch.

The stamping functions add one ``t_<step>`` column per step to the per-batch frame, each
the previous one plus that step's share of the chunk's measured seconds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import polars as pl

MIN_STAGE_NS = 1_000  # a stage that did something took at least a microsecond


def entry_times(watermark_ns: int | None) -> pl.Expr:
    """``t_enter``: when each delivery entered, its ``received_at``, or for unreadable or
    unstamped deliveries the previous delivery's time (the clock cannot go back)."""
    ns = pl.col("received_at").dt.epoch("ns")
    filled = ns.forward_fill().backward_fill()
    return filled.fill_null(watermark_ns if watermark_ns is not None else 0).alias("t_enter")


def amortized(stage_seconds: float, share: pl.Expr) -> pl.Expr:
    """A stage's measured chunk time, apportioned by each batch's share of the events."""
    return pl.max_horizontal((share * stage_seconds * 1e9).round().cast(pl.Int64), pl.lit(MIN_STAGE_NS, pl.Int64))


def next_load(ready_ns: pl.Expr, interval_s: float) -> pl.Expr:
    """The first load at or after ``ready_ns`` on a cadence of ``interval_s``."""
    step = int(interval_s * 1e9)
    return ((ready_ns + step - 1) // step) * step


def stamp_ingest(batches: pl.DataFrame, seconds: Mapping[str, float]) -> pl.DataFrame:
    """Add ``t_validated, t_deduped, t_published`` after ``t_enter``.

    Each batch's share of a step's ``seconds`` is its share of the chunk's events
    (``event_count``).
    """
    total = max(int(batches.get_column("event_count").sum()), 1)
    share = pl.col("event_count") / total
    out = batches.with_columns(t_validated=pl.col("t_enter") + amortized(seconds.get("validate", 0), share))
    out = out.with_columns(t_deduped=pl.col("t_validated") + amortized(seconds.get("dedup", 0), share))
    return out.with_columns(t_published=pl.col("t_deduped") + amortized(seconds.get("publish", 0), share))


def consumed_at(ready_ns: pl.Expr, live: bool = False) -> pl.Expr:
    """``t_consumed``: when the consumer took each batch from the queue, ``ready_ns`` (published,
    plus any injected backlog). On the live clock it is now: the batch entered at its request's
    arrival (``received_at``), so the time it waited in the endpoint's queue (Kafka, or the
    embedded log) and for the consumer shows where the reference design's queue is, between
    publish and enrich (the ``queue`` stage of :func:`dqkit.investigate.lag.stage_lag`)."""
    return pl.max_horizontal(ready_ns, live_now()) if live else ready_ns


def stamp_enrich(batches: pl.DataFrame, seconds: Mapping[str, float], consumed: int, profile_delay: pl.Expr,
                 load_interval_s: float, live: bool = False) -> pl.DataFrame:
    """Add ``t_profiled, t_geo, t_enriched`` after ``t_consumed``, and ``t_load``, the load that
    takes the batch.

    Args:
        batches: per-delivery frame with ``t_consumed`` and ``published``.
        seconds: measured seconds of ``enrich.user_profile``, ``enrich.geo_ip``, ``enrich.session``.
        consumed: events the consumer enriched in this chunk (each batch's share is its ``published``).
        profile_delay: extra nanoseconds per batch for a slow profile service.
        load_interval_s: the warehouse load cadence.
        live: one load, now (the real clock), instead of the next on the cadence.
    """
    share = pl.col("published") / max(consumed, 1)
    out = batches.with_columns(t_profiled=pl.col("t_consumed") + amortized(seconds.get("enrich.user_profile", 0), share)
                               + profile_delay)
    out = out.with_columns(t_geo=pl.col("t_profiled") + amortized(seconds.get("enrich.geo_ip", 0), share))
    out = out.with_columns(t_enriched=pl.col("t_geo") + amortized(seconds.get("enrich.session", 0), share))
    if live:
        return out.with_columns(t_load=pl.max_horizontal(pl.col("t_enriched").max(), live_now()))
    return out.with_columns(t_load=next_load(pl.col("t_enriched"), load_interval_s))


def live_now() -> pl.Expr:
    """The live clock (``ReplayConfig.clock = "live"``): the real time now, in nanoseconds.
    Stages after it still add their measured times."""
    return pl.lit(live_now_ns(), pl.Int64)


def live_now_ns() -> int:
    """The live clock's time now, in nanoseconds since the epoch."""
    return time.time_ns()


def as_timestamp(ns: pl.Expr) -> pl.Expr:
    """Replay-clock nanoseconds as a UTC timestamp in microseconds (the warehouse's unit)."""
    return pl.from_epoch(ns, time_unit="ns").dt.cast_time_unit("us").dt.replace_time_zone("UTC")
