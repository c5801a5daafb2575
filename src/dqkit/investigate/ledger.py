"""Ledgers (DESIGN section 6): where each batch's events went, from spans alone or from the
warehouse alone.

The span ledger reads the reference design's span names. dqkit's per-batch form carries every
count, including per-batch loaded rows on the insert spans' links. A pipeline instrumented
exactly like the reference article (per-event ``analytics.enrich`` spans, insert spans without
links) still gives the ingest-side counts per batch, and loads per table and hour
(:func:`table_ledger`); its per-batch ``loaded`` is then unknown (NULL).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from dqkit.db import connect_read_only

LEDGER_COLUMNS = ["trace_id", "batch_id", "received", "loaded", "invalid", "duplicate", "dead_lettered", "in_flight"]
COUNTS = ["received", "invalid", "duplicate", "published", "enriched", "loaded", "dead_lettered", "in_flight"]
SEGMENTS = ["platform", "app_version", "sdk_version", "country"]

_INT = "try_cast(attrs['{}'] AS BIGINT)"

_SPAN_LEDGER = f"""
WITH ingest AS (
    SELECT trace_id, attrs['batch.id'] AS batch_id, start_ns,
           {_INT.format('batch.event_count')} AS received, {_INT.format('ingestion.accepted')} AS accepted,
           {_INT.format('ingestion.rejected')} AS rejected,
           coalesce(attrs['client.platform'], 'unknown') AS platform,
           coalesce(attrs['client.app_version'], 'unknown') AS app_version,
           coalesce(attrs['client.sdk_version'], 'unknown') AS sdk_version
    FROM spans WHERE name = 'analytics.ingest_batch'
),
stage AS (
    SELECT trace_id,
           sum({_INT.format('validation.invalid_count')}) FILTER (WHERE name = 'analytics.validate_batch') AS invalid,
           sum({_INT.format('dedup.duplicates_removed')}) FILTER (WHERE name = 'analytics.deduplicate') AS duplicate,
           sum({_INT.format('queue.events_published')}) FILTER (WHERE name = 'analytics.publish_to_queue') AS published,
           sum(coalesce({_INT.format('event.count')}, 1)) FILTER (WHERE name = 'analytics.enrich') AS enriched,
           any_value(attrs['geo.country']) FILTER (WHERE name = 'analytics.enrich.geo_ip') AS country
    FROM spans WHERE name IN ('analytics.validate_batch', 'analytics.deduplicate', 'analytics.publish_to_queue',
                              'analytics.enrich', 'analytics.enrich.geo_ip')
    GROUP BY trace_id
),
inserted AS (
    SELECT l.link_trace_id AS trace_id,
           sum(CASE WHEN s.attrs['insert.success'] = 'true' THEN try_cast(l.attrs['insert.row_count'] AS BIGINT) ELSE 0 END)::BIGINT AS loaded,
           sum(CASE WHEN s.attrs['insert.success'] = 'true' THEN 0 ELSE try_cast(l.attrs['insert.row_count'] AS BIGINT) END)::BIGINT AS dead_lettered
    FROM span_links l JOIN spans s USING (trace_id, span_id)
    WHERE l.name = 'analytics.warehouse.insert' AND s.name = 'analytics.warehouse.insert' AND l.attrs['insert.row_count'] IS NOT NULL
    GROUP BY ALL
),
-- Per-batch loads are known when insert spans carry per-batch links, or when nothing was inserted.
linked AS (
    SELECT (SELECT count(*) FROM inserted) > 0
        OR (SELECT count(*) FROM spans WHERE name = 'analytics.warehouse.insert') = 0 AS any_links
)
SELECT i.trace_id, i.batch_id, make_timestamptz(i.start_ns // 1000) AS received_at,
       i.platform, i.app_version, i.sdk_version, coalesce(s.country, 'unknown') AS country, i.received,
       coalesce(s.invalid, i.rejected - coalesce(s.duplicate, 0), 0)::BIGINT AS invalid,
       coalesce(s.duplicate, 0)::BIGINT AS duplicate,
       coalesce(s.published, i.accepted, i.received - coalesce(s.invalid, 0) - coalesce(s.duplicate, 0))::BIGINT AS published,
       coalesce(s.enriched, 0)::BIGINT AS enriched,
       CASE WHEN k.any_links THEN coalesce(n.loaded, 0) END::BIGINT AS loaded,
       CASE WHEN k.any_links THEN coalesce(n.dead_lettered, 0) END::BIGINT AS dead_lettered
FROM ingest i CROSS JOIN linked k
LEFT JOIN stage s USING (trace_id) LEFT JOIN inserted n USING (trace_id)
ORDER BY i.start_ns, i.trace_id
"""

_TABLE_LEDGER = """
SELECT attrs['table.name'] AS table_name, date_trunc('hour', make_timestamptz(start_ns // 1000)) AS hour,
       sum(CASE WHEN attrs['insert.success'] = 'false' THEN 0 ELSE try_cast(attrs['insert.row_count'] AS BIGINT) END)::BIGINT AS loaded,
       sum(CASE WHEN attrs['insert.success'] = 'false' THEN try_cast(attrs['insert.row_count'] AS BIGINT) ELSE 0 END)::BIGINT AS dead_lettered,
       count(*) AS inserts
FROM spans WHERE name = 'analytics.warehouse.insert'
GROUP BY ALL ORDER BY hour, table_name
"""

_WAREHOUSE_LEDGER = """
WITH loaded AS (SELECT trace_id, count(*) AS loaded FROM events GROUP BY trace_id),
rej AS (
    SELECT trace_id,
           count(*) FILTER (WHERE stage = 'validate') AS invalid,
           count(*) FILTER (WHERE stage = 'dedup') AS duplicate,
           count(*) FILTER (WHERE stage = 'warehouse.insert') AS dead_lettered
    FROM rejected_events GROUP BY trace_id
)
SELECT d.trace_id, d.batch_id, d.received, coalesce(l.loaded, 0) AS loaded, coalesce(r.invalid, 0) AS invalid,
       coalesce(r.duplicate, 0) AS duplicate, coalesce(r.dead_lettered, 0) AS dead_lettered, d.in_flight
FROM deliveries d LEFT JOIN loaded l USING (trace_id) LEFT JOIN rej r USING (trace_id)
ORDER BY d.trace_id
"""


def _con(spans) -> duckdb.DuckDBPyConnection:
    return spans.con if hasattr(spans, "con") else spans


def batch_ledger(spans) -> pl.DataFrame:
    """Per-batch counts by stage from spans: ``received, invalid, duplicate, published,
    enriched, loaded, dead_lettered, in_flight`` with the batch's time and client segment.
    ``in_flight`` is what was published and not (yet) accounted for by any insert."""
    led = _con(spans).sql(_SPAN_LEDGER).pl()
    return led.with_columns(
        in_flight=(pl.col("published") - pl.col("loaded") - pl.col("dead_lettered")).cast(pl.Int64)
    )


def span_ledger(spans) -> pl.DataFrame:
    """The accounting-identity columns of :func:`batch_ledger`, one row per batch."""
    return batch_ledger(spans).select(LEDGER_COLUMNS)


_EVENT_TYPE_LEDGER = """
SELECT l.link_trace_id AS trace_id, regexp_replace(s.attrs['table.name'], '^events_', '') AS event_type,
       sum(CASE WHEN s.attrs['insert.success'] = 'true' THEN try_cast(l.attrs['insert.row_count'] AS BIGINT) ELSE 0 END)::BIGINT AS loaded,
       sum(CASE WHEN s.attrs['insert.success'] = 'true' THEN 0 ELSE try_cast(l.attrs['insert.row_count'] AS BIGINT) END)::BIGINT AS dead_lettered
FROM span_links l JOIN spans s USING (trace_id, span_id)
WHERE l.name = 'analytics.warehouse.insert' AND s.name = 'analytics.warehouse.insert' AND l.attrs['insert.row_count'] IS NOT NULL
GROUP BY ALL
"""


def event_type_ledger(spans) -> pl.DataFrame:
    """Loaded and dead-lettered rows per batch and event type (from the insert spans' links),
    with the batch's time and segments, ready for :func:`rollup`."""
    per_type = _con(spans).sql(_EVENT_TYPE_LEDGER).pl()
    batches = batch_ledger(spans).select("trace_id", "batch_id", "received_at", *SEGMENTS)
    return per_type.join(batches, on="trace_id", how="left")


def table_ledger(spans) -> pl.DataFrame:
    """Rows loaded and dead-lettered per table and hour, from insert spans (needs no links)."""
    return _con(spans).sql(_TABLE_LEDGER).pl()


def rollup(ledger: pl.DataFrame, by: list[str] | None = None, every: str | None = "1h") -> pl.DataFrame:
    """Sum a batch ledger per time bucket (``every``, on ``received_at``) and segment columns."""
    keys = list(by or [])
    frame = ledger
    if every:
        frame = frame.with_columns(pl.col("received_at").dt.truncate(every).alias("hour"))
        keys = ["hour", *keys]
    counts = [c for c in COUNTS if c in frame.columns]
    return frame.group_by(keys).agg(pl.len().alias("batches"), *[pl.col(c).sum() for c in counts]).sort(keys)


def warehouse_ledger(warehouse: str | Path) -> pl.DataFrame:
    """Per-batch ledger from a dqkit warehouse alone (opened read-only)."""
    con = connect_read_only(warehouse)
    try:
        return con.sql(_WAREHOUSE_LEDGER).pl().select(LEDGER_COLUMNS)
    finally:
        con.close()


def unbalanced(ledger: pl.DataFrame) -> pl.DataFrame:
    """Rows where ``received`` is not the sum of where the events went."""
    return ledger.filter(
        pl.col("received") != pl.col("loaded") + pl.col("invalid") + pl.col("duplicate") + pl.col("dead_lettered") + pl.col("in_flight")
    )
