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

from dqkit import names as N
from dqkit.db import connect_read_only
from dqkit.investigate.evidence import define_span_relations, has_links

LEDGER_COLUMNS = ["trace_id", "batch_id", "received", "loaded", "invalid", "duplicate", "dead_lettered", "in_flight"]
COUNTS = ["received", "invalid", "duplicate", "published", "enriched", "loaded", "dead_lettered", "in_flight"]
SEGMENTS = ["platform", "app_version", "sdk_version", "country"]

_TABLE_LEDGER = """
SELECT table_name, date_trunc('hour', start_at) AS hour,
       sum(CASE WHEN success THEN row_count ELSE 0 END)::BIGINT AS loaded,
       sum(CASE WHEN success THEN 0 ELSE row_count END)::BIGINT AS dead_lettered,
       count(*) AS inserts
FROM ev_inserts GROUP BY ALL ORDER BY hour, table_name
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
    """The spans' connection, with the evidence layer's span relations defined on it."""
    con = spans.con if hasattr(spans, "con") else spans
    if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'ev_batches'").fetchall()[0][0]:
        define_span_relations(con)
    return con


def batch_ledger(spans) -> pl.DataFrame:
    """Per-batch counts by stage from spans: ``received, invalid, duplicate, published,
    enriched, loaded, dead_lettered, in_flight`` with the batch's time and client segment.
    ``in_flight`` is what was published and not (yet) accounted for by any insert."""
    led = _con(spans).sql("SELECT * FROM ev_batches").pl()
    # NULL where loads per batch are unknown (insert spans without links): never a made-up 0.
    return led.with_columns(
        in_flight=(pl.col("published") - pl.col("loaded") - pl.col("dead_lettered")).cast(pl.Int64)
    )


def span_ledger(spans) -> pl.DataFrame:
    """The accounting-identity columns of :func:`batch_ledger`, one row per batch."""
    return batch_ledger(spans).select(LEDGER_COLUMNS)


_EVENT_TYPE_LEDGER = f"""
SELECT l.link_trace_id AS trace_id, regexp_replace(s.attrs['{N.TABLE_NAME}'], '^events_', '') AS event_type,
       sum(CASE WHEN lower(s.attrs['{N.INSERT_SUCCESS}']) = 'true' THEN try_cast(l.attrs['{N.INSERT_ROW_COUNT}'] AS BIGINT) ELSE 0 END)::BIGINT AS loaded,
       sum(CASE WHEN lower(s.attrs['{N.INSERT_SUCCESS}']) = 'true' THEN 0 ELSE try_cast(l.attrs['{N.INSERT_ROW_COUNT}'] AS BIGINT) END)::BIGINT AS dead_lettered
FROM span_links l JOIN spans s USING (trace_id, span_id)
WHERE l.name = '{N.INSERT}' AND s.name = '{N.INSERT}' AND l.attrs['{N.INSERT_ROW_COUNT}'] IS NOT NULL
GROUP BY ALL
"""

# Without per-batch links, loads per event type are known per hour of the insert, from the table name.
_EVENT_TYPE_BY_HOUR = """
SELECT regexp_replace(table_name, '^events_', '') AS event_type, date_trunc('hour', start_at) AS received_at,
       sum(CASE WHEN success THEN row_count ELSE 0 END)::BIGINT AS loaded,
       sum(CASE WHEN success THEN 0 ELSE row_count END)::BIGINT AS dead_lettered
FROM ev_inserts GROUP BY ALL ORDER BY 2, 1
"""


def event_type_ledger(spans) -> pl.DataFrame:
    """Loaded and dead-lettered rows per batch and event type (from the insert spans' links),
    with the batch's time and segments, ready for :func:`rollup`."""
    con = _con(spans)
    if not has_links(con):
        # Rows are per hour of the insert, not per batch: segments of the client are unknown.
        return con.sql(_EVENT_TYPE_BY_HOUR).pl().with_columns(
            pl.lit(None, pl.String).alias("trace_id"), pl.lit(None, pl.String).alias("batch_id"),
            *[pl.lit(None, pl.String).alias(c) for c in SEGMENTS])
    per_type = con.sql(_EVENT_TYPE_LEDGER).pl()
    batches = batch_ledger(spans).select("trace_id", "batch_id", "received_at", *SEGMENTS)
    return per_type.join(batches, on="trace_id", how="left")


def table_ledger(spans) -> pl.DataFrame:
    """Rows loaded and dead-lettered (failed) per table and hour, from insert spans (needs no links).

    An insert span without ``insert.success = true`` is not counted as loaded."""
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
