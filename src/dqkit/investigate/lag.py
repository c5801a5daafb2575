"""How late events become available: from the warehouse (event time to load), from the exported
lag histogram where rows carry no load time, and per stage from spans (ingest, queue wait,
enrichment, wait for the load)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from dqkit import names as N
from dqkit.investigate.evidence import Evidence, enrich_unknown, open_evidence
from dqkit.investigate.spans import SpanData

_PCTS = """count(*) AS events,
           quantile_cont(lag_s, 0.5) AS p50_s, quantile_cont(lag_s, 0.95) AS p95_s, quantile_cont(lag_s, 0.99) AS p99_s"""
LAG_SCHEMA = {"events": pl.Int64, "p50_s": pl.Float64, "p95_s": pl.Float64, "p99_s": pl.Float64,
              "after_day_close": pl.Float64, "origin": pl.String}


def event_lag(warehouse: str | Path | Evidence, every: str = "hour", spans=None, source=None) -> pl.DataFrame:
    """Lag (``loaded_at - event_ts``) percentiles per ``every`` (``hour`` or ``day``) of event time,
    with the share of events loaded after their UTC day had closed.

    A source whose rows carry no load time gives the distribution of the exported
    ``analytics.pipeline.lag_seconds`` histogram instead (one row, ``origin = 'lag metric'``;
    pass ``spans`` so the metrics beside them are found), or no rows when neither exists.
    """
    if every not in ("hour", "day"):
        raise ValueError(f"every={every!r}: use 'hour' or 'day'")
    ev = warehouse if isinstance(warehouse, Evidence) else open_evidence(warehouse, spans, source)
    try:
        if ev.source.has("loaded_at"):
            return ev.sql(f"""
                SELECT date_trunc('{every}', event_ts) AS {every}, {_PCTS},
                       avg(CASE WHEN loaded_at >= date_trunc('day', event_ts) + INTERVAL 1 DAY THEN 1.0 ELSE 0.0 END) AS after_day_close,
                       'warehouse load times' AS origin
                FROM (SELECT event_ts, loaded_at, epoch(loaded_at) - epoch(event_ts) AS lag_s FROM ev_events
                      WHERE loaded_at IS NOT NULL AND event_ts IS NOT NULL)
                GROUP BY ALL ORDER BY 1
            """)
        from dqkit.investigate.metrics import histogram_quantiles

        q = histogram_quantiles(ev.con, N.M_LAG) if ev.metric_points else None
        schema = {every: pl.Datetime("us", "UTC"), **LAG_SCHEMA}
        if q is None:
            return pl.DataFrame(schema=schema)
        return pl.DataFrame([{every: None, "events": q["count"], "p50_s": q.get("p50"), "p95_s": q.get("p95"),
                              "p99_s": q.get("p99"), "after_day_close": None, "origin": "lag metric"}], schema=schema)
    finally:
        if not isinstance(warehouse, Evidence):
            ev.close()


_STAGE_SQL = f"""
WITH i AS (SELECT trace_id, start_ns, end_ns FROM spans WHERE name = '{N.INGEST}'),
p AS (SELECT trace_id, max(end_ns) AS end_ns FROM spans WHERE name = '{N.PUBLISH}' GROUP BY 1),
e AS (SELECT trace_id, span_id, start_ns, end_ns FROM spans WHERE name = '{N.ENRICH}'),
l AS (SELECT k.link_trace_id AS trace_id, min(s.start_ns) AS start_ns, max(s.end_ns) AS end_ns
      FROM span_links k JOIN spans s USING (trace_id, span_id) WHERE k.name = '{N.INSERT}' GROUP BY 1),
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

# Spans that are not part of a batch's trace (the reference article's per-event enrich spans,
# insert spans without links): the time each took, per hour it started in. Waits between stages
# cannot be known without a shared trace.
_OWN_SQL = f"""
SELECT date_trunc('hour', make_timestamptz(start_ns // 1000)) AS hour,
       CASE name WHEN '{N.ENRICH}' THEN 'enrich' WHEN '{N.INSERT}' THEN 'insert' END AS stage,
       count(*) AS batches, quantile_cont(d, 0.5) AS p50_s, quantile_cont(d, 0.95) AS p95_s, quantile_cont(d, 0.99) AS p99_s
FROM (SELECT name, start_ns, (end_ns - start_ns) / 1e9 AS d FROM spans WHERE name IN ({{names}}))
GROUP BY ALL ORDER BY hour, stage
"""


def stage_lag(spans: SpanData) -> pl.DataFrame:
    """Per hour of arrival and stage, percentiles of the time each batch spent there (seconds).

    Enrich and insert spans in traces of their own give their own durations per hour instead
    (stages ``enrich`` and ``insert``; ``batches`` then counts spans)."""
    con = spans.con
    linked = con.execute(f"SELECT count(*) FROM span_links WHERE name = '{N.INSERT}'").fetchall()[0][0] > 0
    per_batch = con.sql(_STAGE_SQL).pl()
    own = [f"'{N.ENRICH}'"] if enrich_unknown(con) else []
    if not linked:
        own.append(f"'{N.INSERT}'")
    if not own:
        return per_batch
    keep = per_batch.filter(pl.col("stage").is_in(["ingest"] + ([] if own[0] == f"'{N.ENRICH}'" else ["queue", "enrich"])))
    extra = con.sql(_OWN_SQL.replace("{names}", ", ".join(own))).pl()
    return pl.concat([keep, extra.cast(keep.schema)], how="vertical").sort("hour", "stage")
