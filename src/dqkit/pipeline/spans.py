"""The reference design's spans, rendered to OTLP/JSON column-wise for every batch of a chunk at once.

One trace per delivery (client batch): ``analytics.ingest_batch`` with validate, dedup and
publish children; the consumer's ``analytics.enrich`` continues it from the message's
``traceparent``; each warehouse load is its own trace whose insert spans link back to every
batch they carried, with that batch's row count on the link.
"""

from __future__ import annotations

import hashlib
import threading

import duckdb
import polars as pl
import pyarrow as pa

from dqkit.otlp_json import (
    KIND_CONSUMER, KIND_INTERNAL, KIND_PRODUCER, KIND_SERVER, Attr, b, d, error_status, i, link_arrays, s, span, span_event,
)

INGEST_SPANS = ("ingest", "validate", "dedup", "publish", "enrich", "profile", "geo", "session")


class _Digests:
    """Hex digests of many keys at once (DuckDB's sha256 over a column, not a Python loop)."""

    def __init__(self) -> None:
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    def __call__(self, keys: pl.Series, columns: dict[str, tuple[str, int, int]]) -> pl.DataFrame:
        """Per key, ``name: (salt, start, length)`` columns: hex digits ``start`` to
        ``start + length`` of sha256(salt + ":" + key). One digest yields several ids."""
        frame = pl.DataFrame({"k": keys.cast(pl.String)})  # noqa: F841 - read by name in the SQL
        salts = sorted({salt for salt, _, _ in columns.values()})
        digests = ", ".join(f"sha256({_sql_str(salt + ':')} || k) AS d{n}" for n, salt in enumerate(salts))
        cols = ", ".join(f"substr(d{salts.index(salt)}, {start + 1}, {length}) AS {name}"
                         for name, (salt, start, length) in columns.items())
        with self._lock:
            if self._con is None:
                self._con = duckdb.connect()
            return pl.from_arrow(self._con.sql(f"SELECT {cols} FROM (SELECT {digests} FROM frame)").to_arrow_table())


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_digests = _Digests()

# A trace id and eight span ids per delivery from three digests (32 + 8 x 16 hex digits).
_DELIVERY_IDS = {
    "trace_id": ("dqkit.delivery.0", 0, 32),
    **{f"sid_{n}": (f"dqkit.delivery.{(i + 2) // 4}", (i + 2) % 4 * 16, 16) for i, n in enumerate(INGEST_SPANS)},
}


def delivery_trace_id(key: str) -> str:
    """The trace id :func:`delivery_ids` gives ``key``, computed alone (the ingestion endpoint
    starts a delivery's trace with it before the pipeline sees the delivery)."""
    salt, start, length = _DELIVERY_IDS["trace_id"]
    return hashlib.sha256(f"{salt}:{key}".encode()).hexdigest()[start:start + length]


def delivery_ids(keys: list[str] | pl.Series) -> pl.DataFrame:
    """Deterministic trace and span ids for deliveries (a replay of the same input gets the same ids)."""
    keys = pl.Series("delivery_key", keys, dtype=pl.String)
    return _digests(keys, _DELIVERY_IDS).insert_column(0, keys)


def load_ids(keys: list[str] | pl.Series) -> pl.DataFrame:
    """``load_trace``, ``load_sid`` and ``part_sid`` for warehouse loads keyed by text."""
    return _digests(pl.Series(keys, dtype=pl.String), {"load_trace": ("dqkit.load", 0, 32), "load_sid": ("dqkit.load", 32, 16),
                                                       "part_sid": ("dqkit.load", 48, 16)})


def insert_span_ids(keys: list[str] | pl.Series) -> pl.Series:
    """Span ids for table inserts keyed by text."""
    return _digests(pl.Series(keys, dtype=pl.String), {"insert_sid": ("dqkit.insert", 0, 16)}).get_column("insert_sid")


def _span(frame: pl.DataFrame, name: str, trace: str, sid: str, parent: str | None, start: str, end: str, kind: int,
          *attributes: Attr, **extra: pl.Expr) -> pa.LargeStringArray:
    return span(frame, name, kind, pl.col(trace), pl.col(sid), pl.col(parent) if parent else None,
                pl.col(start), pl.col(end), list(attributes), **extra)


def ingest_spans(d: pl.DataFrame, queue_system: str, topic: str) -> list[pa.LargeStringArray]:
    """Spans of the ingest side for every delivery in ``d`` (see ``run._deliveries_frame``)."""
    client = (
        s("client.platform", pl.col("platform")), s("client.app_version", pl.col("app_version")),
        s("client.sdk_version", pl.col("sdk_version")),
    )
    # A delivery that came through the ingestion endpoint carries the span that received it
    # (``parent_span_id``, from the queue record's ``traceparent``): the ingest span is its child.
    parent = "parent_span_id" if "parent_span_id" in d.columns else None
    ingest = _span(
        d, "analytics.ingest_batch", "trace_id", "sid_ingest", parent, "t_enter", "t_published", KIND_SERVER,
        s("batch.id", pl.col("batch_id")), i("batch.event_count", pl.col("received")), *client,
        i("ingestion.accepted", pl.col("published")),
        i("ingestion.rejected", pl.col("invalid") + pl.col("duplicate")),
        i("ingestion.rejected_invalid", pl.col("invalid")),
        i("ingestion.rejected_duplicate", pl.col("duplicate")),
        s("dqkit.input.format", pl.col("format")), b("dqkit.clock.inferred", pl.col("received_at").is_null()),
    )
    failures = span_event(d, "schema_validation_failures", pl.col("t_validated"),
                          [i("invalid_count", pl.col("invalid")), s("sample_errors", pl.col("sample_errors"))])
    validate = _span(
        d.with_columns(failures=pl.from_arrow(failures)), "analytics.validate_batch", "trace_id", "sid_validate", "sid_ingest", "t_enter",
        "t_validated", KIND_INTERNAL,
        i("validation.valid_count", pl.col("received") - pl.col("invalid")),
        i("validation.invalid_count", pl.col("invalid")),
        events=pl.when(pl.col("invalid") > 0).then(pl.concat_str([pl.lit("["), pl.col("failures"), pl.lit("]")])),
    )
    dedup = _span(
        d, "analytics.deduplicate", "trace_id", "sid_dedup", "sid_ingest", "t_validated", "t_deduped", KIND_INTERNAL,
        i("dedup.input_count", pl.col("received") - pl.col("invalid")),
        i("dedup.duplicates_removed", pl.col("duplicate")),
        i("dedup.output_count", pl.col("published")),
    )
    publish = _span(
        d, "analytics.publish_to_queue", "trace_id", "sid_publish", "sid_ingest", "t_deduped", "t_published", KIND_PRODUCER,
        s("queue.system", queue_system), s("queue.topic", topic),
        i("queue.partition_count", pl.col("queue_partitions")), i("queue.events_published", pl.col("published")),
        s("messaging.system", queue_system), s("messaging.destination.name", topic),
        s("messaging.operation.type", "publish"),
    )
    return [ingest, validate, dedup, publish]


def enrich_spans(d: pl.DataFrame, topic: str) -> list[pa.LargeStringArray]:
    """Consumer-side spans for deliveries that published events. ``d`` carries the trace
    context parsed from each message's ``traceparent`` (``ctx_trace``, ``ctx_parent``)."""
    d = d.filter(pl.col("published") > 0)
    enrich = _span(
        d, "analytics.enrich", "ctx_trace", "sid_enrich", "ctx_parent", "t_consumed", "t_enriched", KIND_CONSUMER,
        s("event.type", pl.col("event_types")), i("event.count", pl.col("published")),
        s("messaging.destination.name", topic), s("messaging.operation.type", "process"),
    )
    profile = _span(
        d, "analytics.enrich.user_profile", "ctx_trace", "sid_profile", "sid_enrich", "t_consumed", "t_profiled", KIND_INTERNAL,
        i("profile.cache_hit", pl.col("profile_hits")), i("profile.cache_miss", pl.col("profile_misses")),
        i("profile.missing", pl.col("profile_missing")), i("profile.errors", pl.col("profile_errors")),
    )
    geo = _span(
        d, "analytics.enrich.geo_ip", "ctx_trace", "sid_geo", "sid_enrich", "t_profiled", "t_geo", KIND_INTERNAL,
        i("geo.resolved", pl.col("geo_resolved")), i("geo.unresolved", pl.col("published") - pl.col("geo_resolved")),
        s("geo.country", pl.col("geo_country")),
    )
    session = _span(
        d, "analytics.enrich.session", "ctx_trace", "sid_session", "sid_enrich", "t_geo", "t_enriched", KIND_INTERNAL,
        i("session.is_new", pl.col("sessions_new")), i("session.event_count", pl.col("published")),
    )
    return [enrich, profile, geo, session]


def load_spans(loads: pl.DataFrame, inserts: pl.DataFrame, links: pl.DataFrame) -> list[pa.LargeStringArray]:
    """Spans of warehouse loads.

    ``loads``: one row per load (``load_trace, load_sid, part_sid, t_load, t_part_end, t_load_end,
    rows, loaded, dead_lettered, partitions``); ``inserts``: one row per table insert
    (``load_trace, load_sid, insert_sid, table, rows, success, attempts, duration_ms, t_start,
    t_end, error``); ``links``: one row per (insert, delivery) (``insert_sid, ctx_trace,
    sid_enrich, batch_id, rows``).
    """
    per_insert = link_arrays(links, "insert_sid", "ctx_trace", "sid_enrich",
                             [s("batch.id", pl.col("batch_id")), i("insert.row_count", pl.col("rows"))])
    per_load = link_arrays(links.join(inserts.select("insert_sid", "load_sid"), on="insert_sid").unique(["load_sid", "ctx_trace"]),
                           "load_sid", "ctx_trace", "sid_enrich", [s("batch.id", pl.col("batch_id"))])
    load = _span(
        loads.join(per_load, on="load_sid", how="left"),
        "analytics.warehouse_load", "load_trace", "load_sid", None, "t_load", "t_load_end", KIND_INTERNAL,
        i("batch.event_count", pl.col("rows")), i("warehouse.total_loaded", pl.col("loaded")),
        i("warehouse.dead_lettered", pl.col("dead_lettered")), i("batch.count", pl.col("batches")),
        links=pl.col("links"),
    )
    part = _span(
        loads, "analytics.warehouse.partition", "load_trace", "part_sid", "load_sid", "t_load", "t_part_end", KIND_INTERNAL,
        i("partitions.count", pl.col("partitions")),
    )
    insert = _span(
        inserts.join(per_insert, on="insert_sid", how="left"),
        "analytics.warehouse.insert", "load_trace", "insert_sid", "load_sid", "t_start", "t_end", KIND_INTERNAL,
        s("table.name", pl.col("table")), i("insert.row_count", pl.col("rows")),
        b("insert.success", pl.col("success")), d("insert.duration_ms", pl.col("duration_ms")),
        i("insert.attempts", pl.col("attempts")), s("db.system.name", "duckdb"),
        links=pl.col("links"), status=error_status(~pl.col("success"), pl.col("error")),
    )
    return [load, part, insert]
