"""Column-wise OTLP/JSON rendering: attributes left out where null, hostile text escaped, link
arrays grouped exactly, export lines cut and written byte for byte."""

import io
import json

import polars as pl
import pyarrow as pa
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from dqkit.otlp_json import KIND_SERVER, b, d, error_status, export_text, i, link_arrays, render, s, span

HOSTILE = ['quote " and \\ backslash', "new\nline\ttab\r\x00nul\x1fus", "é ü 中文 😀 \u2028\u2029", "", "plain"]


def _frame(n: int) -> pl.DataFrame:
    return pl.DataFrame({
        "trace": [f"{k:032x}" for k in range(1, n + 1)], "sid": [f"{k:016x}" for k in range(1, n + 1)],
        "parent": [None if k % 2 else f"{k + 100:016x}" for k in range(n)],
        "start": [1_795_168_830_000_000_001 + k for k in range(n)], "end": [1_795_168_830_000_000_500 + k for k in range(n)],
        "text": [HOSTILE[k % len(HOSTILE)] for k in range(n)],
        "maybe": [None if k % 3 == 0 else f"m{k}" for k in range(n)],
        "count": list(range(n)), "flag": [None if k % 4 == 0 else k % 2 == 0 for k in range(n)],
        "ms": [float("nan") if k == 1 else float("inf") if k == 2 else k / 3 for k in range(n)],
        "ok": [k != 3 for k in range(n)], "error": [None if k != 3 else 'boom "quoted"' for k in range(n)],
    })


def _render_spans(f: pl.DataFrame):
    return span(f, "analytics.test", KIND_SERVER, pl.col("trace"), pl.col("sid"), pl.col("parent"), pl.col("start"),
                pl.col("end"), [s("text", pl.col("text")), s("maybe", pl.col("maybe")), i("count", pl.col("count")),
                                i("big", 2**62 + 1), b("flag", pl.col("flag")), d("ms", pl.col("ms")), d("nan", float("nan")),
                                s("const", 'say "hi"')],
                status=error_status(~pl.col("ok"), pl.col("error")))


def test_spans_render_every_value_and_leave_out_only_the_null_ones():
    f = _frame(12)
    spans = [json.loads(x.removeprefix(",")) for x in _render_spans(f).to_pylist()]
    for row, sp in zip(f.iter_rows(named=True), spans, strict=True):
        got = {a["key"]: a["value"] for a in sp["attributes"]}
        want = {"text": {"stringValue": row["text"]}, "count": {"intValue": str(row["count"])},
                "big": {"intValue": str(2**62 + 1)}, "const": {"stringValue": 'say "hi"'}}
        if row["maybe"] is not None:
            want["maybe"] = {"stringValue": row["maybe"]}
        if row["flag"] is not None:
            want["flag"] = {"boolValue": row["flag"]}
        if row["ms"] == row["ms"] and abs(row["ms"]) != float("inf"):
            want["ms"] = {"doubleValue": pytest.approx(row["ms"])}
        assert got == want
        assert (sp["traceId"], sp["spanId"], sp.get("parentSpanId")) == (row["trace"], row["sid"], row["parent"])
        assert (sp["startTimeUnixNano"], sp["endTimeUnixNano"]) == (str(row["start"]), str(row["end"]))
        assert (sp["name"], sp["kind"]) == ("analytics.test", 2)
        assert "events" not in sp and "links" not in sp, "empty fields are left out, as the Collector does"
        assert sp.get("status") == (None if row["ok"] else {"code": 2, "message": 'boom "quoted"'})


def test_attribute_lists_where_every_value_may_be_null():
    f = pl.DataFrame({"a": [None, "x", None], "n": [None, None, 7]})
    arrays = [json.loads(x) for x in render(f, [s("a", pl.col("a")), i("n", pl.col("n"))]).to_pylist()]
    assert arrays == [[], [{"key": "a", "value": {"stringValue": "x"}}], [{"key": "n", "value": {"intValue": "7"}}]]


def test_a_null_where_a_value_is_required_raises_instead_of_dropping_the_span():
    f = _frame(3).with_columns(start=pl.Series([1, None, 3]))
    with pytest.raises(ValueError, match="required value is null"):
        _render_spans(f)


def test_export_lines_are_spec_requests_cut_per_line_and_written_byte_for_byte():
    f = _frame(7)
    text = export_text([_render_spans(f), _render_spans(f.head(2))], {"service.name": 'svc "x"', "n": 3}, ("scope", "1.0"),
                       per_line=3)
    buf = io.BytesIO()
    text.write(buf)
    lines = buf.getvalue().decode("utf-8").split("\n")
    assert lines.pop() == ""  # every line ends with a newline; U+2028 inside the text splits nothing
    assert text.spans == 9
    assert [len(json.loads(x)["resourceSpans"][0]["scopeSpans"][0]["spans"]) for x in lines] == [3, 3, 1, 2]
    assert [json.loads(x) for x in lines] == text.requests()
    for line in lines:  # the protobuf JSON mapping accepts each line as an ExportTraceServiceRequest
        req = json_format.Parse(line, trace_service_pb2.ExportTraceServiceRequest())
        assert req.resource_spans[0].resource.attributes[1].value.string_value == 'svc "x"'
    assert export_text([], {}, ("s", "1")).spans == 0
    with pytest.raises(ValueError, match="led by a comma"):  # framing without copies relies on it
        export_text([pa.array(['{"name":"x"}'], pa.large_string())], {}, ("s", "1"))


def test_link_arrays_hold_each_groups_rows_in_a_fixed_order():
    rows = pl.DataFrame({
        "group": ["g2", "g1", "g2", "g3", "g1", "g2"], "trace": [f"{k:032x}" for k in range(6)],
        "sid": [f"{k:016x}" for k in range(6)], "rows": [5, 6, 7, 8, 9, 10], "batch": ["b0", None, "b2", "b3", "b4", 'b"5'],
    })
    attrs = [s("batch.id", pl.col("batch")), i("insert.row_count", pl.col("rows"))]
    got = link_arrays(rows, "group", "trace", "sid", attrs)
    again = link_arrays(rows.reverse(), "group", "trace", "sid", attrs)
    assert got.sort("group").equals(again.sort("group"))  # same text whatever the input order
    arrays = {g: json.loads(t) for g, t in got.iter_rows()}
    assert sorted(arrays) == ["g1", "g2", "g3"]
    for g, links in arrays.items():
        want = rows.filter(pl.col("group") == g)
        assert sorted(lk["traceId"] for lk in links) == sorted(want["trace"])
        for lk in links:
            r = want.filter(pl.col("trace") == lk["traceId"]).row(0, named=True)
            a = {x["key"]: x["value"] for x in lk["attributes"]}
            assert a["insert.row_count"] == {"intValue": str(r["rows"])} and lk["spanId"] == r["sid"]
            assert a.get("batch.id") == (None if r["batch"] is None else {"stringValue": r["batch"]})
    assert link_arrays(rows.head(0), "group", "trace", "sid", attrs).is_empty()
