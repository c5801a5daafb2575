"""Spans rendered as spec-correct OTLP/JSON, column-wise.

Each kind of span (say, the ``analytics.ingest_batch`` spans of a whole chunk) is rendered by
one element-wise string join over its frame: Polars computes the value columns, and the
constant JSON text (keys, span name, kind) sits as literals between them. So a chunk's spans
become export text in one Arrow buffer per kind, with no per-span Python and no intermediate
string per attribute or per span record.

Output follows the OTLP specification and the Collector's file exporter: hex ids, int64 as
strings, integer enums. Untrusted strings are JSON-escaped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

_TEXT = pa.large_string()
KIND_INTERNAL, KIND_SERVER, KIND_PRODUCER, KIND_CONSUMER = 1, 2, 4, 5

# What JSON strings must escape: quote, backslash and the control characters.
_ESCAPE_FROM = ["\\", '"'] + [chr(c) for c in range(32)]
_ESCAPE_TO = ["\\\\", '\\"'] + [json.dumps(chr(c))[1:-1] for c in range(32)]


def escaped(expr: pl.Expr) -> pl.Expr:
    """The text of ``expr`` escaped for use inside a JSON string (quotes not added)."""
    return expr.cast(pl.String).str.replace_many(_ESCAPE_FROM, _ESCAPE_TO)


@dataclass(frozen=True)
class Attr:
    """One span attribute: an OTLP ``KeyValue`` whose value is an ``AnyValue`` ``field``."""

    key: str
    field: str
    value: pl.Expr | str | int | bool | float


def s(key: str, value: pl.Expr | str) -> Attr:
    """A string attribute (omitted where the value is null)."""
    return Attr(key, "stringValue", value)


def i(key: str, value: pl.Expr | int) -> Attr:
    """An int attribute (int64 written as a JSON string, per OTLP)."""
    return Attr(key, "intValue", value)


def b(key: str, value: pl.Expr | bool) -> Attr:
    """A bool attribute."""
    return Attr(key, "boolValue", value)


def d(key: str, value: pl.Expr | float) -> Attr:
    """A double attribute (non-finite values are omitted: JSON cannot carry them)."""
    return Attr(key, "doubleValue", value)


def _key_value(a: Attr) -> tuple[str, pl.Expr | None, str] | None:
    """(text before, value, text after) of one ``KeyValue``; the value expression is null
    where the attribute is to be left out. A constant is all text; ``None``: left out."""
    head = '{"key":' + json.dumps(a.key) + ',"value":{"' + a.field + '":'
    v = a.value
    if not isinstance(v, pl.Expr):
        if a.field == "doubleValue" and not math.isfinite(float(v)):  # type: ignore[arg-type]
            return None
        const = {"stringValue": str, "intValue": lambda x: str(int(x)), "boolValue": bool, "doubleValue": float}[a.field](v)
        return head + json.dumps(const) + "}}", None, ""
    if a.field == "stringValue":
        return head + '"', escaped(v), '"}}'
    if a.field == "intValue":
        return head + '"', v.cast(pl.Int64).cast(pl.String), '"}}'
    if a.field == "boolValue":
        return head, pl.when(v.cast(pl.Boolean)).then(pl.lit("true")).when(v.is_not_null()).then(pl.lit("false")), "}}"
    f = v.cast(pl.Float64)
    return head, pl.when(f.is_finite()).then(f.cast(pl.String)), "}}"


Piece = str | pl.Expr | list[Attr]
"""Literal text, a value that is never null, or an attribute list (an OTLP attribute array)."""


def render(frame: pl.DataFrame, *pieces: Piece) -> pa.LargeStringArray:
    """One JSON text per row of ``frame``: ``pieces`` concatenated.

    An attribute list becomes a JSON array without the attributes whose value is null. Their
    values are computed first, so attributes that are never null in this frame are inlined
    and only the others pay for the null handling. A null anywhere else is a bug upstream:
    it raises rather than losing the row.
    """
    values: dict[str, pl.Expr] = {}
    plan: list[Piece | list[tuple[str, str | None, str]]] = []
    for p in pieces:
        if not isinstance(p, list):
            plan.append(p)
            continue
        items = []
        for a in p:
            kv = _key_value(a)
            if kv is None:
                continue
            before, expr, after = kv
            name = None
            if expr is not None:
                name = f"__dqkit_v{len(values)}"
                values[name] = expr
            items.append((before, name, after))
        plan.append(items)
    if values:
        frame = frame.with_columns(**values)
        nulls = frame.select(pl.col(list(values)).null_count()).row(0, named=True)
    parts: list[str | pl.Expr] = []
    for p in plan:
        if not isinstance(p, list):
            parts.append(p)
            continue
        dense = [it for it in p if it[1] is None or not nulls[it[1]]]
        sparse = [it for it in p if it[1] is not None and nulls[it[1]]]
        parts.append("[")
        for n, (before, col, after) in enumerate(dense):
            parts += ["," if n else "", before] + ([pl.col(col), after] if col else [])
        if sparse:  # each is null where its value is, and concat_str leaves nulls out
            lead = "," if dense else ""
            parts.append(pl.concat_str([pl.concat_str([pl.lit(lead + before), pl.col(col), pl.lit(after)])
                                        for before, col, after in sparse],
                                       separator="" if dense else ",", ignore_nulls=True).fill_null(""))
        parts.append("]")
    merged: list[str | pl.Expr] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        elif not (isinstance(part, str) and not part):
            merged.append(part)
    # Polars computes the values; Arrow's element-wise join, twice as fast as concat_str here,
    # writes the text into one buffer that goes to the file as it is.
    exprs = {f"__dqkit_p{n}": e for n, e in enumerate(merged) if isinstance(e, pl.Expr)}
    table = frame.select(**exprs).to_arrow(compat_level=pl.CompatLevel.oldest())
    args = []
    for n, e in enumerate(merged):
        args.append(pa.scalar(e, _TEXT) if isinstance(e, str) else table.column(f"__dqkit_p{n}").combine_chunks().cast(_TEXT))
    out = pc.binary_join_element_wise(*args, pa.scalar("", _TEXT))
    if out.null_count:
        bad = frame.row(int(np.flatnonzero(out.is_null().to_numpy(zero_copy_only=False))[0]), named=True)
        raise ValueError(f"cannot render OTLP/JSON: a required value is null in {bad}")
    return out


def span(
    frame: pl.DataFrame, name: str, kind: int, trace_id: pl.Expr, span_id: pl.Expr, parent: pl.Expr | None,
    start_ns: pl.Expr, end_ns: pl.Expr, attributes: list[Attr], events: pl.Expr | None = None,
    links: pl.Expr | None = None, status: pl.Expr | None = None,
) -> pa.LargeStringArray:
    """One OTLP/JSON ``Span`` per row of ``frame``, each led by a comma: a run of spans is the
    body of a JSON array once its first byte is dropped, so :func:`export_text` frames them
    without copying. ``events``/``links``: rendered JSON arrays; ``status``: a rendered
    ``Status``. Where one of these or the parent is null (or not given) the field is left out,
    as the protobuf JSON mapping and the Collector do with defaults."""
    return render(
        frame, ',{"traceId":"', trace_id, '","spanId":"', span_id, '"', *_optional("parentSpanId", parent, quoted=True),
        ',"name":' + json.dumps(name) + ',"kind":' + str(int(kind)) + ',"startTimeUnixNano":"', start_ns.cast(pl.String),
        '","endTimeUnixNano":"', end_ns.cast(pl.String), '","attributes":', attributes,
        *_optional("events", events), *_optional("links", links), *_optional("status", status), "}",
    )


def _optional(key: str, value: pl.Expr | None, quoted: bool = False) -> list[Piece]:
    """``,"key":value`` where ``value`` is not null, nothing where it is."""
    if value is None:
        return []
    q = '"' if quoted else ""
    return [pl.concat_str([pl.lit(f',"{key}":{q}'), value, pl.lit(q)]).fill_null("")]


def link_arrays(frame: pl.DataFrame, by: str, trace_id: str, span_id: str, attributes: list[Attr]) -> pl.DataFrame:
    """Per value of ``by``: ``links``, the JSON array of its rows' ``Span.Link`` objects.

    Rows are sorted by group (hashes first: cheaper than comparing text) and rendered with the
    brackets and commas in place, so each group's array is already one contiguous slice of
    the rendered text: no group-by and no second copy.
    """
    if frame.is_empty():
        return pl.DataFrame(schema={by: frame.schema[by], "links": pl.String})
    rows = frame.sort(pl.col(by).hash(), by, pl.col(trace_id).hash(), trace_id)
    key = rows.get_column(by)
    first = (key != key.shift(1)).fill_null(True).to_numpy()
    last = np.append(first[1:], True)
    rows = rows.with_columns(__dqkit_first=pl.Series(first), __dqkit_last=pl.Series(last))
    text = render(rows, pl.when(pl.col("__dqkit_first")).then(pl.lit("[")).otherwise(pl.lit(",")),
                  '{"traceId":"', pl.col(trace_id), '","spanId":"', pl.col(span_id), '","attributes":', attributes, "}",
                  pl.when(pl.col("__dqkit_last")).then(pl.lit("]")).otherwise(pl.lit("")))
    offsets = np.frombuffer(text.buffers()[1], np.int64, len(text) + 1, text.offset * 8)
    starts = np.flatnonzero(first)
    arrays = pa.LargeStringArray.from_buffers(len(starts), pa.py_buffer(np.append(offsets[starts], offsets[-1])), text.buffers()[2])
    return pl.DataFrame({by: key.gather(starts), "links": pl.from_arrow(arrays)})


def span_event(frame: pl.DataFrame, name: str, time_ns: pl.Expr, attributes: list[Attr]) -> pa.LargeStringArray:
    """One ``Span.Event`` object per row."""
    return render(frame, '{"timeUnixNano":"', time_ns.cast(pl.String), '","name":' + json.dumps(name) + ',"attributes":',
                  attributes, "}")


def error_status(failed: pl.Expr, message: pl.Expr) -> pl.Expr:
    """A ``Status``: error with ``message`` where ``failed``, null (unset) elsewhere."""
    return pl.when(failed).then(pl.concat_str([pl.lit('{"code":2,"message":"'), escaped(message.fill_null("")), pl.lit('"}')]))


def _any_value(v: object) -> dict:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    return {"stringValue": str(v)}


def resource_json(attributes: dict[str, object]) -> str:
    """An OTLP/JSON ``Resource`` with ``attributes``."""
    return json.dumps({"attributes": [{"key": k, "value": _any_value(v)} for k, v in sorted(attributes.items())]})


@dataclass
class ExportText:
    """OTLP/JSON ``ExportTraceServiceRequest`` lines: ``segments`` written one after another
    are the lines, newlines included; ``spans`` is how many spans they hold. The segments are
    the request framing and views into the rendered spans' Arrow buffers, never copies."""

    segments: list[bytes | memoryview]
    spans: int

    def write(self, fh: BinaryIO) -> None:
        """Append the lines to a binary file."""
        fh.writelines(self.segments)

    def requests(self) -> list[dict]:
        """The requests, parsed (for exporters that need objects)."""
        text = b"".join(self.segments).decode("utf-8")
        return [json.loads(line) for line in text.split("\n") if line]  # not splitlines(): JSON text may hold U+2028


def export_text(spans: Sequence[pa.LargeStringArray], resource: dict[str, object], scope: tuple[str, str],
                per_line: int = 2_000) -> ExportText:
    """The export requests for rendered spans (:func:`span`): each array's spans, ``per_line``
    to a line."""
    head = ('{"resourceSpans":[{"resource":' + resource_json(resource) + ',"scopeSpans":[{"scope":' + json.dumps(
        {"name": scope[0], "version": scope[1]}) + ',"spans":[').encode()
    tail = b"]}]}]}\n"
    segments: list[bytes | memoryview] = []
    for arr in spans:
        if not len(arr):
            continue
        offsets = np.frombuffer(arr.buffers()[1], np.int64, len(arr) + 1, arr.offset * 8)
        data = memoryview(arr.buffers()[2])
        for start in range(0, len(arr), per_line):
            first = int(offsets[start])
            if data[first] != ord(","):
                raise ValueError("export_text takes spans rendered by span(), each led by a comma")
            segments += [head, data[first + 1:int(offsets[min(start + per_line, len(arr))])], tail]
    return ExportText(segments, sum(len(a) for a in spans))
