"""A warehouse shaped like Segment's (or RudderStack's) warehouse destination, from client batches.

One ``tracks`` row per event, with Segment's column names and meanings: ``id`` (the message
id; Segment drops repeated ids, so client retries land once), ``event`` (the name as sent, even a
malformed one), ``user_id`` (NULL for logged-out users) and ``anonymous_id``, four times
(``original_timestamp`` from the device, ``sent_at``, ``received_at``, and ``timestamp``
corrected for the device clock as ``received_at - (sent_at - original_timestamp)``), the load
time ``uuid_ts`` (hourly syncs) and flattened ``context_*`` columns (``context_os_name`` is
``iOS``/``Android``, NULL on the web, where ``context_library_name`` is ``analytics.js``).

An optional :class:`LostSegment` removes a client segment's events in a window before load
(what a broken SDK release that never delivers looks like from the warehouse) and is returned
as a ground truth. Standalone: reads the native NDJSON batches without dqkit.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl

LOGGED_OUT_SHARE = 0.05
"""Share of users whose events carry only an anonymous id."""
_OS = {"ios": "iOS", "android": "Android"}
_LIBRARY = {"ios": "analytics-ios", "android": "analytics-android", "web": "analytics.js"}


@dataclass(frozen=True)
class LostSegment:
    """Events of ``platform``/``app_version`` with a device timestamp in [start, end) never arrive."""

    platform: str
    app_version: str
    start: datetime
    end: datetime


def _read_batches(path: Path) -> pl.DataFrame:
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    b = pl.read_ndjson(io.BytesIO(raw), infer_schema_length=None)
    return b.explode("events").unnest("client").unnest("events").select(
        "batch_id", "received_at", "platform", "app_version", "sdk_version",
        "event_id", "event_type", "user_id", "timestamp", "client_ip",
    )


def _hash_unit(col: str) -> pl.Expr:
    """A stable number in [0, 1) from a string column."""
    return (pl.col(col).hash(seed=42) % 1_000_000).cast(pl.Float64) / 1_000_000


def segment_tracks(events_path: Path, profiles_path: Path | None = None, lost: LostSegment | None = None) -> tuple[pl.DataFrame, dict | None]:
    """The ``tracks`` rows for a sample and, when ``lost`` is given, its ground truth."""
    ts = pl.col("timestamp").str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", strict=False, time_zone="UTC")
    ev = _read_batches(events_path).with_columns(
        received_at=pl.col("received_at").str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_zone="UTC"),
        original_timestamp=ts,
    )
    # Segment keeps the first copy of a message id.
    ev = ev.sort("received_at", maintain_order=True).unique("event_id", keep="first", maintain_order=True)
    latency = pl.duration(milliseconds=(50 + _hash_unit("batch_id") * 750).cast(pl.Int64))
    device = pl.coalesce(pl.col("user_id"), pl.col("batch_id"))
    ev = ev.with_columns(
        sent_at=pl.col("received_at") - latency,
        anonymous_id=pl.concat_str(pl.lit("anon-"), device.hash(seed=7).cast(pl.String).str.slice(0, 12)),
        logged_out=(_hash_unit("user_id") < LOGGED_OUT_SHARE).fill_null(True),
    )
    ev = ev.with_columns(
        timestamp=pl.coalesce(pl.col("received_at") - (pl.col("sent_at") - pl.col("original_timestamp")), pl.col("received_at")),
        uuid_ts=(pl.col("received_at") + pl.duration(minutes=10)).dt.truncate("1h") + pl.duration(hours=1, minutes=15),
    )
    if profiles_path is not None:
        prof = pl.read_parquet(profiles_path).select("user_id", pl.col("country").alias("context_location_country"))
        ev = ev.join(prof, on="user_id", how="left", maintain_order="left")
    else:
        ev = ev.with_columns(context_location_country=pl.lit(None, pl.String))

    truth = None
    if lost is not None:
        z = lambda t: t.astimezone(UTC).replace(tzinfo=None)
        hit = ((pl.col("platform") == lost.platform) & (pl.col("app_version") == lost.app_version)
               & (pl.col("original_timestamp") >= pl.lit(z(lost.start)).dt.replace_time_zone("UTC"))
               & (pl.col("original_timestamp") < pl.lit(z(lost.end)).dt.replace_time_zone("UTC")))
        gone = ev.filter(hit)
        who = pl.when(pl.col("logged_out")).then(pl.col("anonymous_id")).otherwise(pl.col("user_id"))
        on_day = lambda f: set(f.filter(pl.col("timestamp").dt.date() == lost.start.date()).select(who).to_series().to_list())
        before = on_day(ev)
        ev = ev.filter(~hit)
        absent = len(before - on_day(ev))
        iso = lambda t: t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        truth = {"stage": "client", "kind": "drop", "segment": {"platform": lost.platform, "app_version": lost.app_version},
                 "window": {"start": iso(lost.start), "end": iso(lost.end)}, "window_on": "event timestamp",
                 "events": gone.height,
                 "users": gone.select(who).n_unique(),
                 "users_absent": absent}  # users with no row at all that day (by ``timestamp``) because of it

    rows = ev.select(
        pl.col("event_id").alias("id"),
        pl.col("event_type").alias("event"),
        pl.col("event_type").alias("event_text"),
        pl.when(pl.col("logged_out")).then(None).otherwise(pl.col("user_id")).alias("user_id"),
        "anonymous_id", "timestamp", "original_timestamp", "sent_at", "received_at", "uuid_ts",
        pl.col("platform").replace_strict(_OS, default=None).alias("context_os_name"),
        pl.col("app_version").alias("context_app_version"),
        pl.col("platform").replace_strict(_LIBRARY, default="unknown").alias("context_library_name"),
        pl.col("sdk_version").alias("context_library_version"),
        pl.col("client_ip").alias("context_ip"),
        "context_location_country",
    )
    return rows, truth


def write_segment_warehouse(out: Path, events_path: Path, profiles_path: Path | None = None,
                            lost: LostSegment | None = None) -> dict:
    """Write ``out`` (DuckDB) with a ``tracks`` table; returns ``{"rows", "incidents"}``."""
    rows, truth = segment_tracks(events_path, profiles_path, lost)
    con = duckdb.connect(str(out))
    try:
        con.execute("CREATE TABLE tracks AS SELECT * FROM rows")
    finally:
        con.close()
    return {"rows": rows.height, "incidents": [truth] if truth else []}
