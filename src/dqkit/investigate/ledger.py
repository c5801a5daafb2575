"""Per-batch ledgers (DESIGN section 6), once from spans alone and once from the warehouse alone.

Both have one row per ingest trace (a delivered client batch) with ``received, loaded,
invalid, duplicate, dead_lettered, in_flight``; where they disagree, the difference is
itself a finding (silent loss or over-count).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

LEDGER_COLUMNS = ["trace_id", "batch_id", "received", "loaded", "invalid", "duplicate", "dead_lettered", "in_flight"]

_SPAN_LEDGER = """
WITH ingest AS (
    SELECT trace_id, attrs['batch.id'] AS batch_id, attrs['batch.event_count']::BIGINT AS received,
           attrs['ingestion.accepted']::BIGINT AS accepted
    FROM spans WHERE name = 'analytics.ingest_batch'
),
validate AS (SELECT trace_id, attrs['validation.invalid_count']::BIGINT AS invalid FROM spans WHERE name = 'analytics.validate_batch'),
dedup AS (SELECT trace_id, attrs['dedup.duplicates_removed']::BIGINT AS duplicate FROM spans WHERE name = 'analytics.deduplicate'),
inserted AS (
    SELECT l.link_trace_id AS trace_id,
           sum(CASE WHEN s.attrs['insert.success'] = 'true' THEN l.attrs['insert.row_count']::BIGINT ELSE 0 END)::BIGINT AS loaded,
           sum(CASE WHEN s.attrs['insert.success'] = 'true' THEN 0 ELSE l.attrs['insert.row_count']::BIGINT END)::BIGINT AS dead_lettered
    FROM span_links l JOIN spans s USING (trace_id, span_id)
    WHERE l.name = 'analytics.warehouse.insert'
    GROUP BY ALL
)
SELECT i.trace_id, i.batch_id, i.received,
       coalesce(n.loaded, 0) AS loaded, coalesce(v.invalid, 0) AS invalid, coalesce(d.duplicate, 0) AS duplicate,
       coalesce(n.dead_lettered, 0) AS dead_lettered,
       (i.accepted - coalesce(n.loaded, 0) - coalesce(n.dead_lettered, 0))::BIGINT AS in_flight
FROM ingest i
LEFT JOIN validate v USING (trace_id) LEFT JOIN dedup d USING (trace_id) LEFT JOIN inserted n USING (trace_id)
ORDER BY i.trace_id
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


def span_ledger(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Per-batch ledger from the ``spans``/``span_links`` tables of :func:`load_spans`."""
    return con.sql(_SPAN_LEDGER).pl().select(LEDGER_COLUMNS)


def warehouse_ledger(warehouse: str | Path) -> pl.DataFrame:
    """Per-batch ledger from the warehouse tables alone (opened read-only)."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.sql(_WAREHOUSE_LEDGER).pl().select(LEDGER_COLUMNS)
    finally:
        con.close()


def unbalanced(ledger: pl.DataFrame) -> pl.DataFrame:
    """Rows where ``received`` is not the sum of where the events went."""
    return ledger.filter(
        pl.col("received") != pl.col("loaded") + pl.col("invalid") + pl.col("duplicate") + pl.col("dead_lettered") + pl.col("in_flight")
    )
