"""How late events become available: from the warehouse (event time to load) and per stage
from spans (ingest, queue wait, enrichment, wait for the load)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from dqkit.db import connect_read_only
from dqkit.investigate.spans import SpanData

_PCTS = """count(*) AS events,
           quantile_cont(lag_s, 0.5) AS p50_s, quantile_cont(lag_s, 0.95) AS p95_s, quantile_cont(lag_s, 0.99) AS p99_s"""


def event_lag(warehouse: str | Path, every: str = "hour") -> pl.DataFrame:
    """Lag (``loaded_at - event_ts``) percentiles per ``every`` (``hour`` or ``day``) of event time,
    with the share of events loaded after their UTC day had closed."""
    if every not in ("hour", "day"):
        raise ValueError(f"every={every!r}: use 'hour' or 'day'")
    con = connect_read_only(warehouse)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return con.sql(f"""
            SELECT date_trunc('{every}', event_ts) AS {every}, {_PCTS},
                   avg(CASE WHEN loaded_at >= date_trunc('day', event_ts) + INTERVAL 1 DAY THEN 1.0 ELSE 0.0 END) AS after_day_close
            FROM (SELECT event_ts, loaded_at, epoch(loaded_at) - epoch(event_ts) AS lag_s FROM events WHERE loaded_at IS NOT NULL)
            GROUP BY ALL ORDER BY 1
        """).pl()
    finally:
        con.close()


_STAGE_SQL = """
WITH i AS (SELECT trace_id, start_ns, end_ns FROM spans WHERE name = 'analytics.ingest_batch'),
p AS (SELECT trace_id, max(end_ns) AS end_ns FROM spans WHERE name = 'analytics.publish_to_queue' GROUP BY 1),
e AS (SELECT trace_id, span_id, start_ns, end_ns FROM spans WHERE name = 'analytics.enrich'),
l AS (SELECT k.link_trace_id AS trace_id, min(s.start_ns) AS start_ns, max(s.end_ns) AS end_ns
      FROM span_links k JOIN spans s USING (trace_id, span_id) WHERE k.name = 'analytics.warehouse.insert' GROUP BY 1),
per_batch AS (
    SELECT date_trunc('hour', make_timestamptz(i.start_ns // 1000)) AS hour,
           (i.end_ns - i.start_ns) / 1e9 AS ingest, (e.start_ns - p.end_ns) / 1e9 AS queue,
           (e.end_ns - e.start_ns) / 1e9 AS enrich, (l.start_ns - e.end_ns) / 1e9 AS load_wait,
           (l.end_ns - i.start_ns) / 1e9 AS total
    FROM i LEFT JOIN p USING (trace_id) LEFT JOIN e USING (trace_id) LEFT JOIN l USING (trace_id)
)
SELECT hour, stage, count(lag_s) AS batches,
       quantile_cont(lag_s, 0.5) AS p50_s, quantile_cont(lag_s, 0.95) AS p95_s, quantile_cont(lag_s, 0.99) AS p99_s
FROM (UNPIVOT per_batch ON ingest, queue, enrich, load_wait, total INTO NAME stage VALUE lag_s)
GROUP BY ALL ORDER BY hour, stage
"""


def stage_lag(spans: SpanData) -> pl.DataFrame:
    """Per hour of arrival and stage, percentiles of the time each batch spent there (seconds)."""
    return spans.con.sql(_STAGE_SQL).pl()
