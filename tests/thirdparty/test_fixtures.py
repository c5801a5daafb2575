"""The third-party fixtures are what they claim: a pipeline that is not dqkit's, Collector-format
OTLP/JSON, the article's warehouse shape and flaws, and ground truths that match the files."""

from __future__ import annotations

import ast
import base64
import json
import re
import tomllib
from collections import Counter
from pathlib import Path

import duckdb
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from tests.thirdparty.refpipeline import COLUMNS

HERE = Path(__file__).parent
HEX32, HEX16 = re.compile(r"^[0-9a-f]{32}$"), re.compile(r"^[0-9a-f]{16}$")


def _spans(telemetry: Path) -> list[dict]:
    out = []
    for line in (telemetry / "traces.jsonl").read_text().splitlines():
        for rs in json.loads(line)["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                out.extend(ss["spans"])
    return out


def _attrs(span: dict) -> dict:
    def val(v):
        (k, x), = v.items()
        return int(x) if k == "intValue" else x
    return {a["key"]: val(a["value"]) for a in span.get("attributes", [])}


def _sql(path: Path, q: str) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(q).fetchall()
    finally:
        con.close()


def _b64_ids(node) -> None:
    """Undo the hex ids so protobuf's generic JSON parser can check the rest of the structure."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str):
                node[k] = base64.b64encode(bytes.fromhex(v)).decode()
            else:
                _b64_ids(v)
    elif isinstance(node, list):
        for x in node:
            _b64_ids(x)


@pytest.fixture(scope="module")
def spans(reference_pipeline):
    return _spans(reference_pipeline.telemetry)


@pytest.mark.parametrize("module", ["refpipeline.py", "otlp_receiver.py", "segment_wh.py"])
def test_the_third_party_code_imports_no_dqkit(module):
    tree = ast.parse((HERE / module).read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert names and not [m for m in names if m.split(".")[0] in ("dqkit", "tests")]


def test_traces_are_collector_otlp_json(reference_pipeline):
    lines = (reference_pipeline.telemetry / "traces.jsonl").read_text().splitlines()
    assert len(lines) > 1, "one export request per line, many requests"
    for n, line in enumerate(lines):
        doc = json.loads(line)
        for rs in doc["resourceSpans"]:
            assert {"key": "service.name", "value": {"stringValue": "analytics-ingestion"}} in rs["resource"]["attributes"]
            for s in (s for ss in rs["scopeSpans"] for s in ss["spans"]):
                assert HEX32.match(s["traceId"]) and HEX16.match(s["spanId"]), s
                assert "parentSpanId" not in s or HEX16.match(s["parentSpanId"])
                assert isinstance(s["startTimeUnixNano"], str) and isinstance(s["endTimeUnixNano"], str)
                assert int(s["endTimeUnixNano"]) > int(s["startTimeUnixNano"])
                assert isinstance(s["kind"], int)
                for a in s.get("attributes", []):
                    if "intValue" in a["value"]:
                        assert isinstance(a["value"]["intValue"], str)
        if n < 5:  # the rest of the structure, by protobuf's parser (slow: a few lines suffice)
            _b64_ids(doc)
            json_format.ParseDict(doc, trace_service_pb2.ExportTraceServiceRequest())


def test_metrics_are_the_articles_five_with_counts_that_match(reference_pipeline):
    exp = reference_pipeline.expected
    lines = (reference_pipeline.telemetry / "metrics.jsonl").read_text().splitlines()
    last = {}
    for line in lines:
        doc = json.loads(line)
        _b64_ids(doc)  # exemplars carry span ids
        req = json_format.ParseDict(doc, metrics_service_pb2.ExportMetricsServiceRequest())
        for m in req.resource_metrics[0].scope_metrics[0].metrics:
            last[m.name] = m  # cumulative: the last export holds the totals
    assert set(last) == {"analytics.events.ingested", "analytics.events.rejected", "analytics.enrichment.latency_ms",
                         "analytics.pipeline.lag_seconds", "analytics.ingestion.batch_size"}
    assert sum(p.as_int for p in last["analytics.events.ingested"].sum.data_points) == exp["enriched"]
    rejected = {p.attributes[0].value.string_value: p.as_int for p in last["analytics.events.rejected"].sum.data_points}
    assert rejected.get("validation", 0) == exp["invalid"] and rejected.get("duplicate", 0) == exp["duplicate"]
    assert sum(p.count for p in last["analytics.ingestion.batch_size"].histogram.data_points) == exp["batches"]
    assert sum(p.count for p in last["analytics.pipeline.lag_seconds"].histogram.data_points) == exp["enriched"]
    assert sum(p.count for p in last["analytics.enrichment.latency_ms"].histogram.data_points) == exp["enriched"]


def test_span_counts_and_the_ledger_match_the_truth(reference_pipeline, spans):
    exp = reference_pipeline.expected
    assert Counter(s["name"] for s in spans) == Counter(exp["spans"])
    by = lambda name: [_attrs(s) for s in spans if s["name"] == name]
    assert sum(a["batch.event_count"] for a in by("analytics.ingest_batch")) == exp["received"]
    assert sum(a["validation.invalid_count"] for a in by("analytics.validate_batch")) == exp["invalid"]
    assert sum(a["dedup.duplicates_removed"] for a in by("analytics.deduplicate")) == exp["duplicate"]
    assert sum(a["queue.events_published"] for a in by("analytics.publish_to_queue")) == exp["enriched"]
    assert exp["received"] == exp["invalid"] + exp["duplicate"] + exp["enriched"]
    assert exp["enriched"] == exp["loaded"] + exp["failed_insert_rows"]
    tables = [r[0] for r in _sql(reference_pipeline.warehouse, "select table_name from information_schema.tables")]
    rows = sum(_sql(reference_pipeline.warehouse, f'select count(*) from "{t}"')[0][0] for t in tables)
    assert rows == exp["loaded"]


def test_each_enrichment_is_its_own_trace_and_loads_have_no_links(spans):
    enrich = [s for s in spans if s["name"] == "analytics.enrich"]
    assert enrich and all("parentSpanId" not in s for s in enrich)
    ingest_traces = {s["traceId"] for s in spans if s["name"] == "analytics.ingest_batch"}
    enrich_traces = [s["traceId"] for s in enrich]
    assert len(set(enrich_traces)) == len(enrich) and not ingest_traces & set(enrich_traces)
    children = [s for s in spans if s["name"].startswith("analytics.enrich.")]
    by_id = {s["spanId"]: s for s in enrich}
    assert all(by_id[c["parentSpanId"]]["traceId"] == c["traceId"] for c in children)
    assert all(_attrs(s)["event.user_id"].startswith("u_") for s in enrich)
    loads = [s for s in spans if s["name"].startswith("analytics.warehouse")]
    assert loads and not any(s.get("links") for s in loads)
    assert not {s["traceId"] for s in loads} & (ingest_traces | set(enrich_traces))


def test_spans_run_on_the_batches_clock(reference_pipeline, spans):
    """A batch is ingested at its received_at; a week of traffic spans a week of span time."""
    first = json.loads(__import__("gzip").open(reference_pipeline.sample, "rt").readline())
    ingest = next(s for s in spans if s["name"] == "analytics.ingest_batch" and _attrs(s)["batch.id"] == first["batch_id"])
    from datetime import datetime

    received = datetime.fromisoformat(first["received_at"])
    assert int(ingest["startTimeUnixNano"]) == int(received.timestamp() * 1e9)
    start = min(int(s["startTimeUnixNano"]) for s in spans)
    end = max(int(s["endTimeUnixNano"]) for s in spans)
    assert 6.5 * 86400 < (end - start) / 1e9 < 9 * 86400


def test_the_warehouse_has_the_articles_columns_only(reference_pipeline):
    wh = reference_pipeline.warehouse
    tables = {r[0] for r in _sql(wh, "select table_name from information_schema.tables")}
    assert tables and all(t.startswith("events_") for t in tables), tables
    assert {"events_view", "events_like", "events_session_start"} <= tables
    assert not _sql(wh, "select view_name from duckdb_views() where not internal")
    for t in tables:
        cols = _sql(wh, f"select column_name, data_type from information_schema.columns where table_name = '{t}' order by ordinal_position")
        assert [c for c, _ in cols] == list(COLUMNS), t
        assert dict(cols)["timestamp"] == "TIMESTAMP WITH TIME ZONE"


def test_failed_inserts_are_missing_from_the_table_but_counted_as_loaded(reference_pipeline, spans):
    exp = reference_pipeline.expected
    inserts = [(_attrs(s), int(s["startTimeUnixNano"])) for s in spans if s["name"] == "analytics.warehouse.insert"]
    failed = [a for a, _ in inserts if not a["insert.success"]]
    assert failed and {a["table.name"] for a in failed} == {reference_pipeline.incidents[2]["segment"]["table"]}
    assert sum(a["insert.row_count"] for a in failed) == exp["failed_insert_rows"] > 0
    table = reference_pipeline.incidents[2]["segment"]["table"]
    ok = sum(a["insert.row_count"] for a, _ in inserts if a["table.name"] == table and a["insert.success"])
    assert _sql(reference_pipeline.warehouse, f"select count(*) from {table}")[0][0] == ok
    total_loaded = sum(_attrs(s)["warehouse.total_loaded"] for s in spans if s["name"] == "analytics.warehouse_load")
    assert total_loaded == exp["reported_total_loaded"] == exp["loaded"] + exp["failed_insert_rows"]


def test_the_incident_truths_match_the_files(reference_pipeline, spans):
    run = reference_pipeline
    inc = {i["stage"]: i for i in run.incidents}
    assert set(inc) == {"validate", "enrich.geo_ip", "warehouse.insert"}
    assert all(i["events"] > 0 and 0 < i["users"] <= i["events"] for i in run.incidents)
    assert all(i["window"]["start"].startswith(str(run.day)) for i in run.incidents)
    ns = lambda t: int(__import__("datetime").datetime.fromisoformat(t).timestamp() * 1e9)

    # validate: the segment's events of the window never reach the warehouse; its batches show them.
    v = inc["validate"]
    tables = [r[0] for r in _sql(run.warehouse, "select table_name from information_schema.tables")]
    union = " union all ".join(f'select platform, app_version, "timestamp" from "{t}"' for t in tables)
    left = _sql(run.warehouse, f"select count(*) from ({union}) where platform = 'android' and app_version = '8.4.0' "
                               f"and \"timestamp\" >= '{v['window']['start']}' and \"timestamp\" < '{v['window']['end']}'")[0][0]
    assert left == 0
    trace_of = {s["traceId"]: _attrs(s) for s in spans if s["name"] == "analytics.ingest_batch"}
    seg_invalid = sum(_attrs(s)["validation.invalid_count"] for s in spans if s["name"] == "analytics.validate_batch"
                      and trace_of[s["traceId"]]["client.platform"] == "android" and trace_of[s["traceId"]]["client.app_version"] == "8.4.0")
    assert seg_invalid >= v["events"]

    # geo-IP: every unresolved lookup is in the outage window (the geo table covers all clients).
    g = inc["enrich.geo_ip"]
    lo, hi = ns(g["window"]["start"]), ns(g["window"]["end"])
    geo = [(_attrs(s)["geo.resolved"], int(s["startTimeUnixNano"])) for s in spans if s["name"] == "analytics.enrich.geo_ip"]
    assert sum(1 for ok, t in geo if not ok) == g["events"]
    assert all(lo <= t < hi for ok, t in geo if not ok)
    geo_union = " union all ".join(f'select geo_country from "{t}"' for t in tables)
    null_geo = _sql(run.warehouse, f"select count(*) from ({geo_union}) where geo_country is null")[0][0]
    assert null_geo == g["events"]  # the windows do not overlap: none of them was in a failed insert

    # insert: the failed inserts are the truth's rows, all inside the window, all for its table.
    w = inc["warehouse.insert"]
    lo, hi = ns(w["window"]["start"]), ns(w["window"]["end"])
    failed = [(a, t) for a, t in ((_attrs(s), int(s["startTimeUnixNano"])) for s in spans if s["name"] == "analytics.warehouse.insert")
              if not a["insert.success"]]
    assert sum(a["insert.row_count"] for a, _ in failed) == w["events"] and all(lo <= t < hi for _, t in failed)


def test_the_segment_warehouse_and_its_mapping(segment_warehouse):
    sw = segment_warehouse
    mapping = tomllib.loads(sw.mapping.read_text())
    assert mapping["events"]["tables"] == ["tracks"]
    exprs = {"event_type": mapping["events"]["event_type"], **mapping["columns"]}
    select = ", ".join(f"{e} as {k}" for k, e in exprs.items())
    rows = _sql(sw.warehouse, f"select count(*), count(distinct event_id), count(event_ts), count(user_id), "
                              f"count(distinct platform) from (select {select} from tracks)")[0]
    assert rows[0] == rows[1] == rows[2] == rows[3] == sw.expected["rows"] and rows[4] == 3
    (inc,) = sw.incidents
    canon = f"(select {select} from tracks)"
    seg = "platform = 'android' and app_version = '8.4.0'"
    win = f"event_ts >= '{inc['window']['start']}' and event_ts < '{inc['window']['end']}'"
    assert _sql(sw.warehouse, f"select count(*) from {canon} where {seg} and {win}")[0][0] == 0
    # The same window a week before: the platform had far more traffic than it has now.
    wk = lambda t: t.replace(str(sw.day), str(sw.baseline_day))
    android = "platform = 'android'"
    now = _sql(sw.warehouse, f"select count(*) from {canon} where {android} and {win}")[0][0]
    before = _sql(sw.warehouse, f"select count(*) from {canon} where {android} "
                                f"and event_ts >= '{wk(inc['window']['start'])}' and event_ts < '{wk(inc['window']['end'])}'")[0][0]
    assert now < 0.6 * before and inc["events"] >= 100 and inc["users"] >= 20
    dau = dict(_sql(sw.warehouse, f"select event_ts::date, count(distinct user_id) from {canon} group by 1"))
    assert set(dau) >= {sw.day, sw.baseline_day}
    assert 0 < inc["users_absent"] <= inc["users"]
