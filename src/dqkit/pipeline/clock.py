"""The replay clock: a replay of last Tuesday produces last Tuesday's timeline.

A batch enters at its ``received_at``; each stage then takes its measured processing time
(amortized over the events a vectorized step handled) plus any injected delay; warehouse
loads run on a fixed cadence. All times here are integer nanoseconds since the epoch.
"""

from __future__ import annotations

import time

import polars as pl

MIN_STAGE_NS = 1_000  # a stage that did something took at least a microsecond


def entry_times(deliveries: pl.DataFrame, watermark_ns: int | None) -> pl.Expr:
    """When each delivery entered: its ``received_at``, or for unreadable or unstamped
    deliveries the previous delivery's time (the clock cannot go back)."""
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


def live_now() -> pl.Expr:
    """The live clock (``ReplayConfig.clock = "live"``): the real time now, in nanoseconds.
    Stages after it still add their measured times, so the spans show when each really ran."""
    return pl.lit(time.time_ns(), pl.Int64)
