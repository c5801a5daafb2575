"""The span loader reads any OTLP/JSON the specification allows, not only dqkit's own."""

import base64
import json

import pytest

from dqkit.errors import InputError
from dqkit.investigate.ledger import batch_ledger, table_ledger
from dqkit.investigate.spans import load_spans

TRACE = "5B8EFFF798038103D269B633813FC60C"
BIG = 1795168830000000001  # above 2**53: must survive exactly


def _span(**kw):
    s = {"traceId": TRACE, "spanId": "EEE19B7EC3C1B174", "parentSpanId": "", "name": "analytics.ingest_batch",
         "kind": "SPAN_KIND_SERVER", "startTimeUnixNano": BIG, "endTimeUnixNano": str(BIG + 500),
         "attributes": [{"key": "batch.id", "value": {"stringValue": "b-1"}},
                        {"key": "batch.event_count", "value": {"intValue": 3}},
                        {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}]}}}],
         "status": {"code": "STATUS_CODE_ERROR", "message": "boom"}, "someFutureField": {"x": 1}}
    s.update(kw)
    return s


def _request(spans, service="ingest", scope="analytics.ingestion"):
    return {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                               "scopeSpans": [{"scope": {"name": scope}, "spans": spans}]}]}


def test_edge_cases_of_the_otlp_json_encoding(tmp_path):
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(_request([_span()]), indent=2))
    b64 = lambda h: base64.b64encode(bytes.fromhex(h)).decode()  # noqa: E731
    lines = tmp_path / "lines.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in [
        _request([_span(traceId=b64("0af7651916cd43dd8448eb211c80319c"), spanId=b64("b7ad6b7169203331"),
                        parentSpanId=b64("00f067aa0ba902b7"), name="child", kind=5,
                        startTimeUnixNano="10", endTimeUnixNano="20", status={})]),
        _request([_span(traceId="", spanId="0000000000000001", name="no-trace"),
                  _span(traceId="00000000000000000000000000000000", spanId="0000000000000002", name="zero-trace"),
                  # Neither hex nor base64 of 16 bytes: 32 letters that are base64 of 24 bytes, 16 bytes
                  # of base64 one byte short, and text that is not base64 at all.
                  _span(traceId="zz" * 16, spanId="0000000000000003", name="24-byte-trace"),
                  _span(traceId=b64("0af7651916cd43dd8448eb211c8031"), spanId="0000000000000004", name="15-byte-trace"),
                  _span(traceId="not an id at all!", spanId="0000000000000005", name="text-trace"),
                  _span(spanId=b64("b7ad6b7169203331")[:-1] + "!", name="bad-span-id")]),
        {"resourceSpans": []},
    ]) + "\n")
    sd = load_spans([pretty, lines])
    rows = {r["name"]: r for r in sd.spans.iter_rows(named=True)}
    assert set(rows) == {"analytics.ingest_batch", "child"}
    assert sd.unusable_spans == 6
    top = rows["analytics.ingest_batch"]
    assert top["trace_id"] == TRACE.lower() and top["span_id"] == "eee19b7ec3c1b174"
    assert top["parent_span_id"] is None
    assert (top["start_ns"], top["end_ns"]) == (BIG, BIG + 500)
    assert (top["kind"], top["status_code"], top["status_message"]) == (2, 2, "boom")
    attrs = dict(top["attrs"])
    assert attrs["batch.event_count"] == "3" and attrs["batch.id"] == "b-1"
    assert json.loads(attrs["tags"]) == {"values": [{"stringValue": "a"}]}
    child = rows["child"]
    assert (child["trace_id"], child["span_id"], child["parent_span_id"]) == (
        "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "00f067aa0ba902b7")
    assert (child["kind"], child["status_code"]) == (5, 0)
    res = {r["resource_id"]: dict(r["attrs"]) for r in sd.resources.iter_rows(named=True)}
    assert {a["service.name"] for a in res.values()} == {"ingest"}
    flat = sd.flat("analytics.ingest_batch")
    assert flat["batch.id"].to_list() == ["b-1"]


def test_several_resources_and_scopes_in_one_request(tmp_path):
    doc = {"resourceSpans": [
        {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "a"}}]},
         "scopeSpans": [{"scope": {"name": "s1"}, "spans": [_span(spanId="0000000000000001", name="x")]},
                        {"scope": {"name": "s2"}, "spans": [_span(spanId="0000000000000002", name="y")]}]},
        {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "b"}}]},
         "scopeSpans": [{"scope": {"name": "empty"}, "spans": []},
                        {"scope": {"name": "s3"}, "spans": [_span(spanId="0000000000000003", name="z")]}]},
        {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "no spans"}}]}, "scopeSpans": []}]}
    f = tmp_path / "multi.json"
    f.write_text(json.dumps(doc))
    sd = load_spans(f)
    got = sd.con.sql("SELECT s.name, s.scope_name, r.attrs['service.name'] FROM spans s JOIN span_resources r "
                     "USING (resource_id) ORDER BY 1").fetchall()
    assert got == [("x", "s1", "a"), ("y", "s2", "a"), ("z", "s3", "b")]
    assert sd.resources.height == 2, "one row per resource that carries spans"


def test_reference_design_shaped_spans(tmp_path):
    """Per-event enrich spans and insert spans without links, as the reference article emits."""
    ingest = _span(attributes=[{"key": "batch.id", "value": {"stringValue": "b-1"}},
                               {"key": "batch.event_count", "value": {"intValue": "4"}},
                               {"key": "ingestion.accepted", "value": {"intValue": "3"}},
                               {"key": "ingestion.rejected", "value": {"intValue": "1"}}], status={})
    validate = _span(spanId="0000000000000011", name="analytics.validate_batch", parentSpanId="EEE19B7EC3C1B174",
                     attributes=[{"key": "validation.invalid_count", "value": {"intValue": "1"}}], status={})
    enrich = [_span(traceId=f"{n:032x}", spanId="00000000000000a1", name="analytics.enrich", status={},
                    attributes=[{"key": "event.type", "value": {"stringValue": "view"}}]) for n in range(1, 4)]
    insert = _span(traceId="ff" * 16, spanId="00000000000000b1", name="analytics.warehouse.insert", status={},
                   attributes=[{"key": "table.name", "value": {"stringValue": "events_view"}},
                               {"key": "insert.row_count", "value": {"intValue": "3"}},
                               {"key": "insert.success", "value": {"boolValue": True}}])
    f = tmp_path / "ref.jsonl"
    f.write_text(json.dumps(_request([ingest, validate, *enrich, insert])) + "\n")
    sd = load_spans(f)
    led = batch_ledger(sd).row(0, named=True)
    assert (led["received"], led["invalid"], led["duplicate"], led["published"]) == (4, 1, 0, 3)
    assert led["loaded"] is None, "no per-batch links: loaded per batch is unknown, not zero"
    assert table_ledger(sd).select("table_name", "loaded").rows() == [("events_view", 3)]


def test_missing_or_bad_exports_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_spans(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("this is not json\n")
    with pytest.raises(InputError, match="not OTLP/JSON"):
        load_spans(bad)


def test_lines_are_read_whole_across_blocks(tmp_path, monkeypatch):
    """Blocks smaller than a request, blank and CRLF lines, bad UTF-8 and a missing final
    newline: every span is read once, with its own resource."""
    import dqkit.investigate.spans as spans_mod

    monkeypatch.setattr(spans_mod, "MAX_REQUEST_BYTES", 700)
    requests = [json.dumps(_request([_span(spanId=f"{n + 1:016x}", name=f"s{n}") for n in range(k * 3, k * 3 + 3)],
                                    service=f"svc{k}")) for k in range(6)]
    assert len(requests[0]) > 700, "a request must be longer than a block"
    body = ("\n\n".join(requests[:3]) + "\r\n   \n" + "\r\n".join(requests[3:5]) + "\n\n" + requests[5]).encode()
    body = body.replace(b'"s7"', b'"s7\xff"')  # a stray byte inside one span name
    f = tmp_path / "blocks.jsonl"
    f.write_bytes(body + b"\n" + json.dumps(_request([_span(spanId=f"{1:016x}", name="s0")])).encode())  # s0 again, no final newline
    sd = load_spans(f)
    got = sd.con.sql("SELECT s.name, r.attrs['service.name'] FROM spans s JOIN span_resources r USING (resource_id) "
                     "ORDER BY s.span_id").fetchall()
    assert [n for n, _ in got] == [f"s{n}" if n != 7 else "s7\ufffd" for n in range(18)]
    assert [svc for _, svc in got] == [f"svc{n // 3}" for n in range(18)]
    assert sd.con.sql("SELECT count(*) FROM span_resources").fetchall() == [(7,)]


def test_a_bad_file_among_several_is_named(tmp_path):
    good = tmp_path / "traces-1.jsonl"
    good.write_text(json.dumps(_request([_span()])) + "\n")
    bad = tmp_path / "traces-2.jsonl"
    bad.write_text(json.dumps(_request([_span(spanId=f"{2:016x}")])) + "\n{\"resourceSpans\": [\n")
    with pytest.raises(InputError, match=r"traces-2\.jsonl: not OTLP/JSON"):
        load_spans(tmp_path)
    assert load_spans(good).con.sql("SELECT count(*) FROM spans").fetchall() == [(1,)]


@pytest.mark.parametrize("where", ["span", "event", "link", "resource"])
def test_repeated_or_missing_attribute_keys_do_not_stop_a_load(tmp_path, where):
    """OTLP requires unique keys, but one span that breaks the rule must not make the export
    unreadable: a keyless attribute is dropped and a repeated key keeps its first value."""
    odd = [{"key": "a", "value": {"stringValue": "first"}}, {"value": {"stringValue": "keyless"}},
           {"key": "a", "value": {"stringValue": "second"}}, {"key": "b", "value": {"intValue": 2}}]
    plain = [{"key": "a", "value": {"stringValue": "first"}}, {"key": "b", "value": {"intValue": 2}}]
    attrs = {w: odd if w == where else plain for w in ["span", "event", "link", "resource"]}
    span = _span(attributes=attrs["span"], events=[{"name": "e", "timeUnixNano": "5", "attributes": attrs["event"]}],
                 links=[{"traceId": TRACE, "spanId": "0000000000000001", "attributes": attrs["link"]}])
    request = _request([span, _span(spanId="0000000000000002")])
    request["resourceSpans"][0]["resource"]["attributes"] = attrs["resource"]
    f = tmp_path / "odd.jsonl"
    f.write_text(json.dumps(request) + "\n")
    sd = load_spans(f)
    assert sd.con.sql("SELECT count(*) FROM spans").fetchall() == [(2,)]
    for table in ["spans", "span_events", "span_links", "span_resources"]:
        got = sd.con.sql(f"SELECT attrs FROM {table} WHERE map_contains(attrs, 'a')").fetchall()
        assert got == [({"a": "first", "b": "2"},)], table
