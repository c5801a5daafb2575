"""Spans as data: build span records column-wise and write them as spec-correct OTLP/JSON.

A span record frame has one row per span (see :data:`SPAN_SCHEMA`). Attributes, span events and
links are kept as rendered OTLP/JSON arrays (text), built by the helpers below with Polars
string expressions — so turning a whole chunk's spans into ``ExportTraceServiceRequest`` lines
is string concatenation in Rust, not per-span Python. Output follows the OTLP specification
and the Collector's file exporter: hex ids, int64 as strings, integer enums. Untrusted strings
are escaped by Polars' JSON encoder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import polars as pl

SPAN_SCHEMA: dict[str, pl.DataType] = {
    "trace_id": pl.String,  # lower-case hex, as OTLP/JSON writes it
    "span_id": pl.String,
    "parent_span_id": pl.String,
    "name": pl.String,
    "kind": pl.Int32,  # OTLP SpanKind: 1 internal, 2 server, 4 producer, 5 consumer
    "start_ns": pl.Int64,
    "end_ns": pl.Int64,
    "status_code": pl.Int32,  # 0 unset, 1 ok, 2 error
    "status_message": pl.String,
    "attrs": pl.String,  # JSON array of KeyValue
    "events": pl.String,  # JSON array of Span.Event
    "links": pl.String,  # JSON array of Span.Link
}

KIND_INTERNAL, KIND_SERVER, KIND_PRODUCER, KIND_CONSUMER = 1, 2, 4, 5


def _lit(x: pl.Expr | str) -> pl.Expr:
    return pl.lit(x) if isinstance(x, str) else x


def cat(*parts: pl.Expr | str) -> pl.Expr:
    """Concatenate literal text and expressions; null if any expression is null."""
    return pl.concat_str([_lit(p) for p in parts])


def json_string(expr: pl.Expr) -> pl.Expr:
    """``expr`` as a quoted, escaped JSON string (null stays null)."""
    encoded = pl.struct(expr.cast(pl.String).alias("v")).struct.json_encode().str.slice(5).str.strip_suffix("}")
    return pl.when(expr.is_not_null()).then(encoded)


def _key(key: str) -> str:
    return '{"key":' + json.dumps(key) + ',"value":{'


def s(key: str, value: pl.Expr | str) -> pl.Expr:
    """A string attribute (omitted where the value is null)."""
    v = json_string(pl.lit(value)) if isinstance(value, str) else json_string(value)
    return cat(_key(key) + '"stringValue":', v, "}}")


def i(key: str, value: pl.Expr | int) -> pl.Expr:
    """An int attribute (int64 as a JSON string, per OTLP)."""
    v = pl.lit(value) if isinstance(value, int) else value
    return cat(_key(key) + '"intValue":"', v.cast(pl.Int64).cast(pl.String), '"}}')


def b(key: str, value: pl.Expr | bool) -> pl.Expr:
    """A bool attribute."""
    v = pl.lit(value) if isinstance(value, bool) else value
    text = pl.when(v.cast(pl.Boolean)).then(pl.lit("true")).when(v.is_not_null()).then(pl.lit("false"))
    return cat(_key(key) + '"boolValue":', text, "}}")


def d(key: str, value: pl.Expr | float) -> pl.Expr:
    """A double attribute (non-finite values are omitted: JSON cannot carry them)."""
    v = (pl.lit(value) if isinstance(value, float) else value).cast(pl.Float64)
    return cat(_key(key) + '"doubleValue":', pl.when(v.is_finite()).then(v.cast(pl.String)), "}}")


def attrs(*items: pl.Expr) -> pl.Expr:
    """A JSON array of the non-null attributes among ``items``."""
    return cat("[", pl.concat_str(list(items), separator=",", ignore_nulls=True).fill_null(""), "]").alias("attrs")


def link(trace_id: pl.Expr, span_id: pl.Expr, *items: pl.Expr) -> pl.Expr:
    """One link object (aggregate with ``str.join(",")`` and wrap in brackets)."""
    return cat('{"traceId":"', trace_id, '","spanId":"', span_id, '","attributes":', attrs(*items), "}")


def span_event(name: str, time_ns: pl.Expr, *items: pl.Expr) -> pl.Expr:
    """One span event object."""
    return cat('{"timeUnixNano":"', time_ns.cast(pl.String), '","name":' + json.dumps(name) + ',"attributes":',
               attrs(*items), "}")


def conform(frame: pl.DataFrame) -> pl.DataFrame:
    """Fill missing optional columns and order them as :data:`SPAN_SCHEMA`."""
    cols = []
    for name, dtype in SPAN_SCHEMA.items():
        cols.append(pl.col(name).cast(dtype) if name in frame.columns else pl.lit(None, dtype).alias(name))
    return frame.select(cols)


def empty_spans() -> pl.DataFrame:
    return pl.DataFrame(schema=SPAN_SCHEMA)


_SPAN_JSON = cat(
    '{"traceId":"', pl.col("trace_id"),
    '","spanId":"', pl.col("span_id"),
    '","parentSpanId":"', pl.col("parent_span_id").fill_null(""),
    '","name":', json_string(pl.col("name")),
    ',"kind":', pl.col("kind").fill_null(KIND_INTERNAL).cast(pl.String),
    ',"startTimeUnixNano":"', pl.col("start_ns").cast(pl.String),
    '","endTimeUnixNano":"', pl.col("end_ns").cast(pl.String),
    '","attributes":', pl.col("attrs").fill_null("[]"),
    ',"events":', pl.col("events").fill_null("[]"),
    ',"links":', pl.col("links").fill_null("[]"),
    ',"status":', pl.when(pl.col("status_code") == 2)
    .then(cat('{"code":2,"message":', json_string(pl.col("status_message").fill_null("")), "}"))
    .otherwise(cat('{"code":', pl.col("status_code").fill_null(0).cast(pl.String), "}")),
    "}",
)


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


def span_lines(spans: pl.DataFrame, resource: dict[str, object], scope: tuple[str, str], per_line: int = 2_000) -> Iterator[str]:
    """OTLP/JSON ``ExportTraceServiceRequest`` lines for a span record frame.

    Spans are rendered to JSON in one pass and joined a line at a time, so the text exists
    about once (a group-by over all of them held three copies)."""
    if spans.is_empty():
        return
    head = '{"resourceSpans":[{"resource":' + resource_json(resource) + ',"scopeSpans":[{"scope":' + json.dumps(
        {"name": scope[0], "version": scope[1]}
    ) + ',"spans":['
    rendered = conform(spans).select(_SPAN_JSON.alias("span")).get_column("span")
    for start in range(0, rendered.len(), per_line):
        yield head + rendered.slice(start, per_line).str.join(",").item() + "]}]}]}"
