"""Load OTLP/JSON metric exports (``metrics.jsonl``: one ExportMetricsServiceRequest per line, as
the Collector's file exporter writes them) into a DuckDB table of data points.

Sums and gauges keep their value; histograms keep count, sum, bounds and bucket counts. Both
temporalities are read: cumulative points (the SDK's default) are turned into per-interval
deltas by :func:`deltas`, so a counter's total and a histogram's distribution over any window
can be taken from either kind of export.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from dqkit.investigate.spans import _ATTRS

_POINT = {"attributes": _ATTRS, "startTimeUnixNano": "VARCHAR", "timeUnixNano": "VARCHAR", "asInt": "VARCHAR",
          "asDouble": "VARCHAR", "count": "VARCHAR", "sum": "VARCHAR", "bucketCounts": ["VARCHAR"],
          "explicitBounds": ["VARCHAR"]}
_METRIC = {"name": "VARCHAR", "unit": "VARCHAR",
           "sum": {"dataPoints": [_POINT], "aggregationTemporality": "VARCHAR", "isMonotonic": "BOOLEAN"},
           "gauge": {"dataPoints": [_POINT]},
           "histogram": {"dataPoints": [_POINT], "aggregationTemporality": "VARCHAR"}}
_REQUEST = {"resourceMetrics": [{"resource": {"attributes": _ATTRS}, "scopeMetrics": [{"metrics": [_METRIC]}]}]}

# 1 = delta, 2 = cumulative (OTLP's AggregationTemporality), as a number or a name.
_TEMPORALITY = "CASE WHEN t IN ('1', 'AGGREGATION_TEMPORALITY_DELTA') THEN 'delta' ELSE 'cumulative' END"


def metric_files(paths) -> list[Path]:
    """``metrics*.jsonl`` / ``metrics*.json`` files in the given telemetry folders (or the files given)."""
    items = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    out: list[Path] = []
    for p in items:
        if p.is_dir():
            out += sorted(f for f in p.glob("metrics*") if f.suffix in (".json", ".jsonl"))
        elif p.is_file() and p.name.startswith("metrics"):
            out.append(p)
        elif p.is_file() and p.parent.is_dir():
            out += sorted(f for f in p.parent.glob("metrics*") if f.suffix in (".json", ".jsonl"))
    return sorted(set(out))


def load_metrics(con: duckdb.DuckDBPyConnection, files: list[Path]) -> int:
    """Fill ``metric_points`` on ``con`` from ``files``; the number of points."""
    con.execute("""CREATE OR REPLACE TEMP TABLE metric_points (
        name VARCHAR, kind VARCHAR, temporality VARCHAR, attrs VARCHAR, start_ns BIGINT, time_ns BIGINT,
        value DOUBLE, count BIGINT, sum DOUBLE, bounds DOUBLE[], buckets BIGINT[])""")
    if not files:
        return 0
    structure = json.dumps(_REQUEST).replace("'", "''")
    for f in files:
        con.execute(f"""
        INSERT INTO metric_points
        WITH req AS (SELECT from_json(json, '{structure}') AS r
                     FROM read_json_objects('{str(f).replace("'", "''")}', format = 'auto')),
        m AS (SELECT unnest(sm.metrics) AS m FROM (
                SELECT unnest(rm.scopeMetrics) AS sm FROM (SELECT unnest(r.resourceMetrics) AS rm FROM req))),
        p AS (
            SELECT m.name, 'sum' AS kind, m.sum.aggregationTemporality AS t, unnest(m.sum.dataPoints) AS p FROM m WHERE m.sum IS NOT NULL
            UNION ALL SELECT m.name, 'gauge', '1', unnest(m.gauge.dataPoints) FROM m WHERE m.gauge IS NOT NULL
            UNION ALL SELECT m.name, 'histogram', m.histogram.aggregationTemporality, unnest(m.histogram.dataPoints)
                      FROM m WHERE m.histogram IS NOT NULL)
        SELECT name, kind, {_TEMPORALITY},
               coalesce(list_sort(list_transform(p.attributes, lambda a: a.key || '=' || coalesce(a.value.stringValue,
                        a.value.intValue, a.value.boolValue, a.value.doubleValue, ''))) :: VARCHAR, '[]'),
               try_cast(p.startTimeUnixNano AS BIGINT), try_cast(p.timeUnixNano AS BIGINT),
               coalesce(try_cast(p.asInt AS DOUBLE), try_cast(p.asDouble AS DOUBLE)),
               try_cast(p.count AS BIGINT), try_cast(p.sum AS DOUBLE),
               list_transform(p.explicitBounds, lambda b: try_cast(b AS DOUBLE)),
               list_transform(p.bucketCounts, lambda b: try_cast(b AS BIGINT))
        FROM p""")
    return con.execute("SELECT count(*) FROM metric_points").fetchall()[0][0]


DELTAS = """
-- One row per point and interval: cumulative points minus the one before of the same series.
CREATE OR REPLACE TEMP VIEW metric_deltas AS
WITH s AS (
    SELECT *, lag(value) OVER w AS prev_value, lag(count) OVER w AS prev_count, lag(sum) OVER w AS prev_sum,
           lag(buckets) OVER w AS prev_buckets
    FROM metric_points
    WINDOW w AS (PARTITION BY name, attrs, start_ns ORDER BY time_ns))
SELECT name, kind, attrs, time_ns,
       CASE WHEN temporality = 'cumulative' AND kind <> 'gauge' THEN value - coalesce(prev_value, 0) ELSE value END AS value,
       CASE WHEN temporality = 'cumulative' THEN count - coalesce(prev_count, 0) ELSE count END AS count,
       CASE WHEN temporality = 'cumulative' THEN sum - coalesce(prev_sum, 0) ELSE sum END AS sum,
       bounds,
       CASE WHEN temporality = 'cumulative' AND prev_buckets IS NOT NULL
            THEN list_transform(list_zip(buckets, prev_buckets), lambda z: z[1] - coalesce(z[2], 0)) ELSE buckets END AS buckets
FROM s
"""


def deltas(con: duckdb.DuckDBPyConnection) -> None:
    """Create the ``metric_deltas`` view over ``metric_points``."""
    con.execute(DELTAS)


def histogram_quantiles(con: duckdb.DuckDBPyConnection, name: str, qs=(0.5, 0.95, 0.99)) -> dict | None:
    """Quantiles of a histogram metric over all its points (linear within a bucket), or None."""
    rows = con.execute("""
        SELECT any_value(bounds), list_reduce(list(buckets), lambda a, b: list_transform(list_zip(a, b), lambda z: z[1] + z[2])),
               sum(count), sum(sum)
        FROM metric_deltas WHERE name = ? AND kind = 'histogram' AND buckets IS NOT NULL AND len(buckets) > 0
    """, [name]).fetchall()
    if not rows or rows[0][1] is None:
        return None
    bounds, buckets, count, total = rows[0]
    n = sum(buckets)
    if not n:
        return None
    out = {"count": int(n), "mean": (total or 0) / n}
    for q in qs:
        target, seen = q * n, 0
        for i, c in enumerate(buckets):
            if seen + c >= target and c:
                lo = bounds[i - 1] if i > 0 else 0.0
                hi = bounds[i] if i < len(bounds) else (bounds[-1] if bounds else 0.0)
                out[f"p{round(q * 100)}"] = lo + (hi - lo) * (target - seen) / c
                break
            seen += c
    return out


def counter_totals(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, float]:
    """A counter's total per attribute set."""
    return {a: v for a, v in con.execute(
        "SELECT attrs, sum(value) FROM metric_deltas WHERE name = ? AND kind = 'sum' GROUP BY 1 ORDER BY 1", [name]).fetchall()}
