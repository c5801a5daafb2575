"""Render the reference design's spans to OTLP/JSON, column-wise, for every batch of a chunk at once.

One trace per delivery (client batch): ``analytics.ingest_batch`` with validate, dedup and
publish children; the consumer's ``analytics.enrich`` continues it from the message's
``traceparent``; each warehouse load is its own trace whose insert spans link back to every
batch they carried, with that batch's row count on the link.

No user id or IP address reaches an attribute: none of the columns read carries one, and the
one free text, an insert's error message, loses its quoted values (:func:`without_values`).

The renderers read per-batch and per-load frames by column name. The columns each one needs
are listed in :data:`INGEST_COLUMNS`, :data:`ENRICH_COLUMNS`, :data:`LOADS_COLUMNS`,
:data:`INSERTS_COLUMNS` and :data:`LINKS_COLUMNS`, and checked on entry: a frame that lacks one
raises :class:`~dqkit.errors.MissingColumnsError` naming them all.
"""

from __future__ import annotations

import threading

import duckdb
import polars as pl
import pyarrow as pa

from dqkit import names as n
from dqkit.errors import MissingColumnsError
from dqkit.otlp_json import (
    KIND_CONSUMER,
    KIND_INTERNAL,
    KIND_PRODUCER,
    KIND_SERVER,
    Attr,
    b,
    d,
    error_status,
    i,
    link_arrays,
    s,
    span,
    span_event,
)

# Every delivery gets a trace id and one span id per span of its trace (ingest and enrich
# sides); the order fixes which digest digits each id takes, so it must not change.
DELIVERY_SPAN_IDS = ("ingest", "validate", "dedup", "publish", "enrich", "profile", "geo", "session")

INGEST_COLUMNS = {
    "trace_id": "the delivery's trace id", "sid_ingest": "span id", "sid_validate": "span id",
    "sid_dedup": "span id", "sid_publish": "span id",
    "t_enter": "replay-clock ns: entered ingestion", "t_validated": "ns: validated",
    "t_deduped": "ns: deduplicated", "t_published": "ns: published",
    "batch_id": "client batch id", "format": "native, segment or flat", "received_at": "arrival (null: inferred)",
    "platform": "client platform", "app_version": "client app version", "sdk_version": "client SDK version",
    "received": "events in the batch", "invalid": "rejected by validation", "duplicate": "removed by dedup",
    "published": "events published to the queue", "sample_errors": "a few rejects, spread over the batch",
    "queue_partitions": "queue partitions the batch's events went to",
}
"""Columns of the per-batch frame that :func:`render_ingest_spans` reads."""

ENRICH_COLUMNS = {
    "ctx_trace": "trace id from the message's traceparent", "ctx_parent": "parent span id from it",
    "sid_enrich": "span id", "sid_profile": "span id", "sid_geo": "span id", "sid_session": "span id",
    "t_consumed": "replay-clock ns: consumed", "t_profiled": "ns: profiles added", "t_geo": "ns: geo-IP added",
    "t_enriched": "ns: sessions stitched", "published": "events the consumer received for the batch",
    "event_types": "the batch's event types, comma-separated", "profile_hits": "profile cache hits",
    "profile_misses": "profile cache misses", "profile_missing": "users without a profile",
    "profile_errors": "lookups an outage failed", "geo_resolved": "events with a country",
    "geo_errors": "events whose geo-IP record could not be read",
    "geo_country": "the batch's most common country", "sessions_new": "events that opened a session",
}
"""Columns of the per-batch frame that :func:`render_enrich_spans` reads."""

LOADS_COLUMNS = ("load_trace", "load_sid", "part_sid", "t_load", "t_part_end", "t_load_end", "rows", "loaded",
                 "dead_lettered", "partitions", "batches")
"""One row per warehouse load (:func:`render_load_spans`)."""
INSERTS_COLUMNS = ("load_trace", "load_sid", "insert_sid", "table", "rows", "success", "attempts", "duration_ms",
                   "t_start", "t_end", "error")
"""One row per table insert of a load (:func:`render_load_spans`)."""
LINKS_COLUMNS = ("insert_sid", "ctx_trace", "sid_enrich", "batch_id", "rows")
"""One row per (insert, delivery): the links from an insert to the batches it carried."""


def _require(frame: pl.DataFrame, needed, what: str) -> None:
    have = set(frame.columns)
    missing = [c for c in needed if c not in have]
    if missing:
        raise MissingColumnsError(what, missing)


class SpanIds:
    """Deterministic trace and span ids, as hex digests of many keys at once (DuckDB's sha256
    over a column, not a Python loop), so a replay of the same input gets the same ids.

    Holds one in-memory DuckDB connection, opened on first use; :meth:`close` it when done.
    """

    def __init__(self) -> None:
        """Ids are made on first use; nothing is opened yet."""
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()  # the main thread and the span writer both ask

    def _digests(self, keys: pl.Series, columns: dict[str, tuple[str, int, int]]) -> pl.DataFrame:
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
            out = pl.from_arrow(self._con.sql(f"SELECT {cols} FROM (SELECT {digests} FROM frame)").to_arrow_table())
        assert isinstance(out, pl.DataFrame)
        return out

    def delivery_ids(self, keys: list[str] | pl.Series) -> pl.DataFrame:
        """``delivery_key``, ``trace_id`` and ``sid_<span>`` for each of :data:`DELIVERY_SPAN_IDS`."""
        keys = pl.Series("delivery_key", keys, dtype=pl.String)
        return self._digests(keys, _DELIVERY_IDS).insert_column(0, keys)

    def load_ids(self, keys: list[str] | pl.Series) -> pl.DataFrame:
        """``load_trace``, ``load_sid`` and ``part_sid`` for warehouse loads keyed by text."""
        return self._digests(pl.Series(keys, dtype=pl.String), {
            "load_trace": ("dqkit.load", 0, 32), "load_sid": ("dqkit.load", 32, 16), "part_sid": ("dqkit.load", 48, 16)})

    def insert_span_ids(self, keys: list[str] | pl.Series) -> pl.Series:
        """Span ids for table inserts keyed by text."""
        return self._digests(pl.Series(keys, dtype=pl.String), {"insert_sid": ("dqkit.insert", 0, 16)}).get_column("insert_sid")

    def close(self) -> None:
        """Close the connection (a later call opens a new one)."""
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# A trace id and eight span ids per delivery from three digests (32 + 8 x 16 hex digits).
_DELIVERY_IDS = {
    "trace_id": ("dqkit.delivery.0", 0, 32),
    **{f"sid_{name}": (f"dqkit.delivery.{(k + 2) // 4}", (k + 2) % 4 * 16, 16) for k, name in enumerate(DELIVERY_SPAN_IDS)},
}


def delivery_trace_id(key: str) -> str:
    """The trace id :meth:`SpanIds.delivery_ids` gives ``key``, computed alone (the ingestion
    endpoint starts a delivery's trace with it before the pipeline sees the delivery)."""
    import hashlib

    salt, start, length = _DELIVERY_IDS["trace_id"]
    return hashlib.sha256(f"{salt}:{key}".encode()).hexdigest()[start:start + length]


def _span(frame: pl.DataFrame, name: str, trace: str, sid: str, parent: str | None, start: str, end: str, kind: int,
          *attributes: Attr, **extra: pl.Expr) -> pa.LargeStringArray:
    return span(frame, name, kind, pl.col(trace), pl.col(sid), pl.col(parent) if parent else None,
                pl.col(start), pl.col(end), list(attributes), **extra)


def render_ingest_spans(batches: pl.DataFrame, queue_system: str, topic: str) -> list[pa.LargeStringArray]:
    """The ingest side's spans (ingest, validate, dedup, publish) of every batch in ``batches``.

    Args:
        batches: one row per delivery with the columns of :data:`INGEST_COLUMNS`.
        queue_system: the queue's ``messaging.system`` (e.g. ``embedded``).
        topic: the topic the batches were published to.

    Raises:
        MissingColumnsError: ``batches`` lacks a column of :data:`INGEST_COLUMNS`.
    """
    _require(batches, INGEST_COLUMNS, "render_ingest_spans: the per-batch frame")
    bt = batches
    client = (
        s(n.CLIENT_PLATFORM, pl.col("platform")), s(n.CLIENT_APP_VERSION, pl.col("app_version")),
        s(n.CLIENT_SDK_VERSION, pl.col("sdk_version")),
    )
    # A delivery that came through the ingestion endpoint carries the span that received it
    # (``parent_span_id``, from the queue record's ``traceparent``): the ingest span is its child.
    parent = "parent_span_id" if "parent_span_id" in bt.columns else None
    ingest = _span(
        bt, n.INGEST, "trace_id", "sid_ingest", parent, "t_enter", "t_published", KIND_SERVER,
        s(n.BATCH_ID, pl.col("batch_id")), i(n.BATCH_EVENT_COUNT, pl.col("received")), *client,
        i(n.INGESTION_ACCEPTED, pl.col("published")),
        i(n.INGESTION_REJECTED, pl.col("invalid") + pl.col("duplicate")),
        i(n.INGESTION_REJECTED_INVALID, pl.col("invalid")),
        i(n.INGESTION_REJECTED_DUPLICATE, pl.col("duplicate")),
        s(n.INPUT_FORMAT, pl.col("format")), b(n.CLOCK_INFERRED, pl.col("received_at").is_null()),
    )
    failures = span_event(bt, n.VALIDATION_FAILURES, pl.col("t_validated"),
                          [i(n.FAILURES_INVALID_COUNT, pl.col("invalid")), s(n.FAILURES_SAMPLE_ERRORS, pl.col("sample_errors"))])
    validate = _span(
        bt.with_columns(failures=pl.from_arrow(failures)), n.VALIDATE, "trace_id", "sid_validate", "sid_ingest", "t_enter",
        "t_validated", KIND_INTERNAL,
        i(n.VALID_COUNT, pl.col("received") - pl.col("invalid")),
        i(n.INVALID_COUNT, pl.col("invalid")),
        events=pl.when(pl.col("invalid") > 0).then(pl.concat_str([pl.lit("["), pl.col("failures"), pl.lit("]")])),
    )
    dedup = _span(
        bt, n.DEDUP, "trace_id", "sid_dedup", "sid_ingest", "t_validated", "t_deduped", KIND_INTERNAL,
        i(n.DEDUP_INPUT, pl.col("received") - pl.col("invalid")),
        i(n.DEDUP_REMOVED, pl.col("duplicate")),
        i(n.DEDUP_OUTPUT, pl.col("published")),
    )
    publish = _span(
        bt, n.PUBLISH, "trace_id", "sid_publish", "sid_ingest", "t_deduped", "t_published", KIND_PRODUCER,
        s(n.QUEUE_SYSTEM, queue_system), s(n.QUEUE_TOPIC, topic),
        i(n.QUEUE_PARTITIONS, pl.col("queue_partitions")), i(n.QUEUE_PUBLISHED, pl.col("published")),
        s(n.MESSAGING_SYSTEM, queue_system), s(n.MESSAGING_DESTINATION, topic),
        s(n.MESSAGING_OPERATION, "publish"),
    )
    return [ingest, validate, dedup, publish]


def render_enrich_spans(batches: pl.DataFrame, topic: str) -> list[pa.LargeStringArray]:
    """The consumer side's spans (enrich and its profile, geo-IP and session children).

    Only batches that published events get them. The trace context comes from each
    message's ``traceparent`` (``ctx_trace``, ``ctx_parent``), as a consumer would see it.

    Args:
        batches: one row per delivery with the columns of :data:`ENRICH_COLUMNS`.
        topic: the topic the events were consumed from.

    Raises:
        MissingColumnsError: ``batches`` lacks a column of :data:`ENRICH_COLUMNS`.
    """
    _require(batches, ENRICH_COLUMNS, "render_enrich_spans: the per-batch frame")
    bt = batches.filter(pl.col("published") > 0)
    enrich = _span(
        bt, n.ENRICH, "ctx_trace", "sid_enrich", "ctx_parent", "t_consumed", "t_enriched", KIND_CONSUMER,
        s(n.EVENT_TYPE, pl.col("event_types")), i(n.EVENT_COUNT, pl.col("published")),
        s(n.MESSAGING_DESTINATION, topic), s(n.MESSAGING_OPERATION, "process"),
    )
    profile = _span(
        bt, n.ENRICH_PROFILE, "ctx_trace", "sid_profile", "sid_enrich", "t_consumed", "t_profiled", KIND_INTERNAL,
        i(n.PROFILE_CACHE_HIT, pl.col("profile_hits")), i(n.PROFILE_CACHE_MISS, pl.col("profile_misses")),
        i(n.PROFILE_MISSING, pl.col("profile_missing")), i(n.PROFILE_ERRORS, pl.col("profile_errors")),
    )
    geo = _span(
        bt, n.ENRICH_GEO, "ctx_trace", "sid_geo", "sid_enrich", "t_profiled", "t_geo", KIND_INTERNAL,
        i(n.GEO_RESOLVED, pl.col("geo_resolved")), i(n.GEO_UNRESOLVED, pl.col("published") - pl.col("geo_resolved")),
        i(n.GEO_LOOKUP_ERRORS, pl.col("geo_errors")), s(n.GEO_COUNTRY, pl.col("geo_country")),
    )
    session = _span(
        bt, n.ENRICH_SESSION, "ctx_trace", "sid_session", "sid_enrich", "t_geo", "t_enriched", KIND_INTERNAL,
        i(n.SESSION_IS_NEW, pl.col("sessions_new")), i(n.SESSION_EVENT_COUNT, pl.col("published")),
    )
    return [enrich, profile, geo, session]


def render_load_spans(loads: pl.DataFrame, inserts: pl.DataFrame, links: pl.DataFrame) -> list[pa.LargeStringArray]:
    """Spans of warehouse loads: the load, its partition step and one insert per table.

    Args:
        loads: one row per load, with :data:`LOADS_COLUMNS`.
        inserts: one row per table insert, with :data:`INSERTS_COLUMNS`.
        links: one row per (insert, delivery), with :data:`LINKS_COLUMNS`.

    Raises:
        MissingColumnsError: a frame lacks one of its columns.
    """
    _require(loads, LOADS_COLUMNS, "render_load_spans: the loads frame")
    _require(inserts, INSERTS_COLUMNS, "render_load_spans: the inserts frame")
    _require(links, LINKS_COLUMNS, "render_load_spans: the links frame")
    per_insert = link_arrays(links, "insert_sid", "ctx_trace", "sid_enrich",
                             [s(n.BATCH_ID, pl.col("batch_id")), i(n.INSERT_ROW_COUNT, pl.col("rows"))])
    per_load = link_arrays(links.join(inserts.select("insert_sid", "load_sid"), on="insert_sid").unique(["load_sid", "ctx_trace"]),
                           "load_sid", "ctx_trace", "sid_enrich", [s(n.BATCH_ID, pl.col("batch_id"))])
    load = _span(
        loads.join(per_load, on="load_sid", how="left"),
        n.LOAD, "load_trace", "load_sid", None, "t_load", "t_load_end", KIND_INTERNAL,
        i(n.BATCH_EVENT_COUNT, pl.col("rows")), i(n.TOTAL_LOADED, pl.col("loaded")),
        i(n.DEAD_LETTERED, pl.col("dead_lettered")), i(n.BATCH_COUNT, pl.col("batches")),
        links=pl.col("links"),
    )
    part = _span(
        loads, n.PARTITION, "load_trace", "part_sid", "load_sid", "t_load", "t_part_end", KIND_INTERNAL,
        i(n.PARTITIONS_COUNT, pl.col("partitions")),
    )
    insert = _span(
        inserts.join(per_insert, on="insert_sid", how="left"),
        n.INSERT, "load_trace", "insert_sid", "load_sid", "t_start", "t_end", KIND_INTERNAL,
        s(n.TABLE_NAME, pl.col("table")), i(n.INSERT_ROW_COUNT, pl.col("rows")),
        b(n.INSERT_SUCCESS, pl.col("success")), d(n.INSERT_DURATION_MS, pl.col("duration_ms")),
        i(n.INSERT_ATTEMPTS, pl.col("attempts")), s(n.DB_SYSTEM, "duckdb"),
        links=pl.col("links"), status=error_status(~pl.col("success"), without_values(pl.col("error"))),
    )
    return [load, part, insert]


def without_values(error: pl.Expr) -> pl.Expr:
    """An error message with its quoted literals blanked (``'…'``): a database error quotes the
    value it could not store, which may be a user id or an address, and telemetry carries none.
    The warehouse's ``load_audit`` keeps the whole message."""
    return error.str.replace_all(r"'(?:[^']|'')*'", "'…'")
