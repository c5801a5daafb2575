"""Spans as data: build span records column-wise and write them as spec-correct OTLP/JSON.

A span record frame has one row per span (see :data:`SPAN_SCHEMA`). Attributes are a list of
``{key, s, i, b, d}`` structs, exactly one of the value fields set. DuckDB turns a whole frame
into ``ExportTraceServiceRequest`` lines: hex ids, int64 as strings, integer enums — as the
OTLP specification and the Collector's file exporter write them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import duckdb
import polars as pl

ATTR = pl.Struct({"key": pl.String, "s": pl.String, "i": pl.Int64, "b": pl.Boolean, "d": pl.Float64})
LINK = pl.Struct({"trace_id": pl.String, "span_id": pl.String, "attrs": pl.List(ATTR)})
EVENT = pl.Struct({"name": pl.String, "time_ns": pl.Int64, "attrs": pl.List(ATTR)})

SPAN_SCHEMA: dict[str, pl.DataType] = {
    "trace_id": pl.String,
    "span_id": pl.String,
    "parent_span_id": pl.String,
    "name": pl.String,
    "kind": pl.Int32,  # OTLP SpanKind: 1 internal, 2 server, 4 producer, 5 consumer
    "start_ns": pl.Int64,
    "end_ns": pl.Int64,
    "status_code": pl.Int32,  # 0 unset, 1 ok, 2 error
    "status_message": pl.String,
    "attrs": pl.List(ATTR),
    "events": pl.List(EVENT),
    "links": pl.List(LINK),
}

KIND_INTERNAL, KIND_SERVER, KIND_PRODUCER, KIND_CONSUMER = 1, 2, 4, 5


def s(key: str, value: pl.Expr | str) -> pl.Expr:
    """A string attribute."""
    v = pl.lit(value) if isinstance(value, str) else value
    return pl.struct(key=pl.lit(key), s=v.cast(pl.String), i=pl.lit(None, pl.Int64), b=pl.lit(None, pl.Boolean), d=pl.lit(None, pl.Float64))


def i(key: str, value: pl.Expr | int) -> pl.Expr:
    """An int attribute."""
    v = pl.lit(value) if isinstance(value, int) else value
    return pl.struct(key=pl.lit(key), s=pl.lit(None, pl.String), i=v.cast(pl.Int64), b=pl.lit(None, pl.Boolean), d=pl.lit(None, pl.Float64))


def b(key: str, value: pl.Expr | bool) -> pl.Expr:
    """A bool attribute."""
    v = pl.lit(value) if isinstance(value, bool) else value
    return pl.struct(key=pl.lit(key), s=pl.lit(None, pl.String), i=pl.lit(None, pl.Int64), b=v.cast(pl.Boolean), d=pl.lit(None, pl.Float64))


def d(key: str, value: pl.Expr | float) -> pl.Expr:
    """A double attribute."""
    v = pl.lit(value) if isinstance(value, float) else value
    return pl.struct(key=pl.lit(key), s=pl.lit(None, pl.String), i=pl.lit(None, pl.Int64), b=pl.lit(None, pl.Boolean), d=v.cast(pl.Float64))


def attrs(*items: pl.Expr) -> pl.Expr:
    """A list-of-attributes column from :func:`s`, :func:`i`, :func:`b`, :func:`d` items."""
    return pl.concat_list([x.cast(ATTR) for x in items]).alias("attrs")


def empty_spans() -> pl.DataFrame:
    return pl.DataFrame(schema=SPAN_SCHEMA)


def conform(frame: pl.DataFrame) -> pl.DataFrame:
    """Fill missing optional columns and order them as :data:`SPAN_SCHEMA`."""
    cols = []
    for name, dtype in SPAN_SCHEMA.items():
        cols.append(pl.col(name).cast(dtype) if name in frame.columns else pl.lit(None, dtype).alias(name))
    return frame.select(cols)


_ATTR_JSON = """list_filter(list_transform(coalesce({col}, []), lambda a: CASE
    WHEN a.s IS NOT NULL THEN json_object('key', a.key, 'value', json_object('stringValue', a.s))
    WHEN a.i IS NOT NULL THEN json_object('key', a.key, 'value', json_object('intValue', a.i::VARCHAR))
    WHEN a.b IS NOT NULL THEN json_object('key', a.key, 'value', json_object('boolValue', a.b))
    WHEN a.d IS NOT NULL THEN json_object('key', a.key, 'value', json_object('doubleValue', a.d))
    END), lambda x: x IS NOT NULL)"""

_SPANS_SQL = f"""
SELECT (row_number() OVER () - 1) // $per_line AS line_no, json_object(
    'traceId', lower(trace_id), 'spanId', lower(span_id), 'parentSpanId', lower(coalesce(parent_span_id, '')),
    'name', name, 'kind', kind,
    'startTimeUnixNano', start_ns::VARCHAR, 'endTimeUnixNano', end_ns::VARCHAR,
    'attributes', {_ATTR_JSON.format(col='attrs')},
    'events', list_transform(coalesce(events, []), lambda e: json_object(
        'timeUnixNano', e.time_ns::VARCHAR, 'name', e.name,
        'attributes', {_ATTR_JSON.format(col='e.attrs')})),
    'links', list_transform(coalesce(links, []), lambda l: json_object(
        'traceId', lower(l.trace_id), 'spanId', lower(l.span_id),
        'attributes', {_ATTR_JSON.format(col='l.attrs')})),
    'status', CASE WHEN status_code = 2 THEN json_object('code', 2, 'message', coalesce(status_message, ''))
                   ELSE json_object('code', coalesce(status_code, 0)) END
) AS span
FROM spans
"""


def _any_value(v: object) -> dict:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    return {"stringValue": str(v)}


def resource_json(attributes: dict[str, object]) -> str:
    return json.dumps({"attributes": [{"key": k, "value": _any_value(v)} for k, v in sorted(attributes.items())]})


def span_lines(spans: pl.DataFrame, resource: dict[str, object], scope: tuple[str, str], per_line: int = 5_000) -> Iterable[str]:
    """OTLP/JSON ``ExportTraceServiceRequest`` lines for a span record frame."""
    if spans.is_empty():
        return []
    con = duckdb.connect()
    con.execute("SET threads = 1")
    con.register("spans", conform(spans).to_arrow())
    rows = con.sql(
        "SELECT string_agg(span::VARCHAR, ',' ORDER BY rn) FROM (SELECT row_number() OVER () AS rn, * FROM ("
        + _SPANS_SQL.replace("$per_line", str(int(per_line)))
        + ")) GROUP BY line_no ORDER BY line_no"
    ).fetchall()
    con.close()
    head = '{"resourceSpans":[{"resource":' + resource_json(resource) + ',"scopeSpans":[{"scope":' + json.dumps(
        {"name": scope[0], "version": scope[1]}
    ) + ',"spans":['
    return [head + body + "]}]}]}" for (body,) in rows]
