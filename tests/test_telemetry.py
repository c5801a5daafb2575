"""Telemetry: the reference design's spans and metrics, spec-correct OTLP/JSON, trace continuity,
OTLP export to a real loopback receiver, and a dead collector that never stalls the replay."""

import base64
import json
import time
from concurrent import futures

import grpc
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from dqkit.pipeline.run import replay
from dqkit.telemetry import TelemetryConfig
from tests.conftest import batch, event, write_lines


@pytest.fixture
def traced(tmp_path, run_sample):
    items = [
        batch("b-1", [event("e1", user="u_1"), event("e2", ts="bad"), event("e1", user="u_1")]),
        batch("b-2", [event("e3", etype="like", user="u_2", ip="2a00:1450:4001:82a::200e")], received="2026-11-20T10:00:30Z"),
    ]
    return run_sample(write_lines(tmp_path / "s.ndjson", items))


def _spans(run):
    out = []
    for line in (run.telemetry / "traces.jsonl").read_text().splitlines():
        for rs in json.loads(line)["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                out.extend(ss["spans"])
    return out


def _attrs(span):
    def val(v):
        (k, x), = v.items()
        return int(x) if k == "intValue" else x
    return {a["key"]: val(a["value"]) for a in span["attributes"]}


def test_every_design_span_and_attribute(traced):
    spans = _spans(traced)
    by_name = {}
    for s in spans:
        by_name.setdefault(s["name"], []).append(s)
    expected = {
        "analytics.ingest_batch": {"batch.id", "batch.event_count", "client.platform", "client.app_version",
                                   "client.sdk_version", "ingestion.accepted", "ingestion.rejected"},
        "analytics.validate_batch": {"validation.valid_count", "validation.invalid_count"},
        "analytics.deduplicate": {"dedup.input_count", "dedup.duplicates_removed", "dedup.output_count"},
        "analytics.publish_to_queue": {"queue.system", "queue.topic", "queue.partition_count", "queue.events_published"},
        "analytics.enrich": {"event.type"},
        "analytics.enrich.user_profile": {"profile.cache_hit"},
        "analytics.enrich.geo_ip": {"geo.resolved"},
        "analytics.enrich.session": {"session.is_new"},
        "analytics.warehouse_load": {"batch.event_count", "warehouse.total_loaded"},
        "analytics.warehouse.partition": {"partitions.count"},
        "analytics.warehouse.insert": {"table.name", "insert.row_count", "insert.success", "insert.duration_ms"},
    }
    for name, keys in expected.items():
        assert name in by_name, f"expected span {name}"
        for s in by_name[name]:
            assert keys <= set(_attrs(s)), f"{name} lacks {keys - set(_attrs(s))}"
    b1 = next(s for s in by_name["analytics.ingest_batch"] if _attrs(s)["batch.id"] == "b-1")
    a = _attrs(b1)
    assert (a["batch.event_count"], a["ingestion.accepted"], a["ingestion.rejected"]) == (3, 1, 2)
    assert (a["ingestion.rejected_invalid"], a["ingestion.rejected_duplicate"]) == (1, 1)
    assert a["client.platform"] == "ios"
    val = next(s for s in by_name["analytics.validate_batch"] if s["traceId"] == b1["traceId"])
    assert (_attrs(val)["validation.valid_count"], _attrs(val)["validation.invalid_count"]) == (2, 1)
    (ev,) = val["events"]
    assert ev["name"] == "schema_validation_failures"
    assert {x["key"]: x["value"] for x in ev["attributes"]}["sample_errors"]["stringValue"] == "e2: bad_timestamp"
    ded = next(s for s in by_name["analytics.deduplicate"] if s["traceId"] == b1["traceId"])
    assert (_attrs(ded)["dedup.input_count"], _attrs(ded)["dedup.duplicates_removed"], _attrs(ded)["dedup.output_count"]) == (2, 1, 1)
    inserts = {_attrs(s)["table.name"]: _attrs(s) for s in by_name["analytics.warehouse.insert"]}
    assert inserts["events_view"]["insert.row_count"] == 1 and inserts["events_like"]["insert.success"] is True
    loads = by_name["analytics.warehouse_load"]
    assert sum(_attrs(s)["warehouse.total_loaded"] for s in loads) == 2


def test_otlp_json_is_spec_correct_and_parses_with_opentelemetry_proto(traced):
    for line in (traced.telemetry / "traces.jsonl").read_text().splitlines():
        doc = json.loads(line)
        for rs in doc["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for s in ss["spans"]:
                    assert len(s["traceId"]) == 32 and int(s["traceId"], 16) and s["traceId"] == s["traceId"].lower()
                    assert len(s["spanId"]) == 16 and int(s["spanId"], 16)
                    assert isinstance(s["startTimeUnixNano"], str) and int(s["endTimeUnixNano"]) >= int(s["startTimeUnixNano"])
                    assert isinstance(s["kind"], int)
                    # protobuf's generic JSON mapping wants base64 bytes; convert to check the structure.
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in s:  # a root span has no parent field: defaults are left out
                            s[key] = base64.b64encode(bytes.fromhex(s[key])).decode()
                    for link in s.get("links", []):
                        for key in ("traceId", "spanId"):
                            link[key] = base64.b64encode(bytes.fromhex(link[key])).decode()
        req = json_format.ParseDict(doc, trace_service_pb2.ExportTraceServiceRequest())
        assert req.resource_spans[0].scope_spans[0].spans
    for line in (traced.telemetry / "metrics.jsonl").read_text().splitlines():
        req = json_format.Parse(line, metrics_service_pb2.ExportMetricsServiceRequest())
        names = {m.name for m in req.resource_metrics[0].scope_metrics[0].metrics}
        assert names == {"analytics.events.ingested", "analytics.events.rejected", "analytics.enrichment.latency_ms",
                         "analytics.pipeline.lag_seconds", "analytics.ingestion.batch_size"}
        lag = next(m for m in req.resource_metrics[0].scope_metrics[0].metrics if m.name == "analytics.pipeline.lag_seconds")
        assert sum(p.count for p in lag.histogram.data_points) == 2


def test_one_trace_runs_from_ingest_through_queue_to_load(traced):
    spans = _spans(traced)
    ingest = next(s for s in spans if s["name"] == "analytics.ingest_batch" and _attrs(s)["batch.id"] == "b-2")
    trace = [s for s in spans if s["traceId"] == ingest["traceId"]]
    publish = next(s for s in trace if s["name"] == "analytics.publish_to_queue")
    enrich = next(s for s in trace if s["name"] == "analytics.enrich")
    assert publish["kind"] == 4 and enrich["kind"] == 5
    assert enrich["parentSpanId"] == publish["spanId"], "the consumer continues the message's traceparent"
    assert {s["name"] for s in trace} >= {"analytics.validate_batch", "analytics.enrich.geo_ip", "analytics.enrich.session"}
    insert = next(s for s in spans if s["name"] == "analytics.warehouse.insert" and _attrs(s)["table.name"] == "events_like")
    assert [(lk["traceId"], lk["spanId"]) for lk in insert["links"]] == [(ingest["traceId"], enrich["spanId"])]
    assert int(enrich["startTimeUnixNano"]) >= int(publish["endTimeUnixNano"])
    # Replay clock: the batch entered at its received_at.
    assert int(ingest["startTimeUnixNano"]) == 1795168830_000_000_000


def test_no_raw_user_ids_or_ips_in_telemetry_whatever_path_they_take(tmp_path):
    """User ids and IPs fed through every path that makes an attribute, a span event, a status
    or a metric: profile fields equal to user ids, validation failures, duplicates, an address
    that resolves and one that does not, Segment's own id and address fields, and a real
    database error that quotes the user id it could not store."""
    import duckdb
    import polars as pl

    u1, u2, u3 = "uid-secret-0001", "uid-secret-0002", "uid-secret-0003"
    ip4, ip6, ip_none = "81.2.69.142", "2a00:1450:4001:82a::200e", "198.51.100.77"
    items = [
        batch("b-1", [event("e1", user=u1, ip=ip4), event("e2", user=u2, ip=ip6, ts="bad"), event("e1", user=u1, ip=ip4),
                      event("e3", etype="tap", user=u3, ip=ip_none)]),
        batch("b-2", [event("e4", user=u1 * 20, ip=ip4)], received="2026-11-20T10:00:30Z"),  # too long: rejected
        {"batch": [{"type": "track", "event": "Signed Up", "messageId": "m1", "userId": u2, "anonymousId": u3,
                    "timestamp": "2026-11-20T10:00:00Z", "context": {"ip": ip6}}], "sentAt": "2026-11-20T10:00:02Z"},
    ]
    sample = write_lines(tmp_path / "s.ndjson", items)
    profiles = tmp_path / "profiles.csv"  # profile values that are themselves user ids
    pl.DataFrame({"user_id": [u1, u2], "country": [u2, u3], "segment": [u3, u1],
                  "signup_date": ["2025-01-01", "2025-01-01"]}).write_csv(profiles)
    wh = tmp_path / "wh.duckdb"
    con = duckdb.connect(str(wh))  # a broken table: storing the user id fails with the id in the error
    from dqkit.pipeline.warehouse import EVENT_COLUMNS

    cols = {**EVENT_COLUMNS, "user_id": "INTEGER"}
    con.execute("CREATE TABLE events_tap (" + ", ".join(f"{c} {t}" for c, t in cols.items()) + ")")
    con.close()
    res = replay(sample, wh, tmp_path / "tel", profiles=profiles)
    assert (res.ledger.loaded, res.ledger.invalid, res.ledger.duplicate, res.ledger.dead_lettered) == (2, 2, 1, 1)

    text = (tmp_path / "tel" / "traces.jsonl").read_text() + (tmp_path / "tel" / "metrics.jsonl").read_text()
    for secret in (u1, u2, u3, ip4, ip6, ip_none, "uid-secret"):
        assert secret not in text, f"{secret!r} reached the telemetry"
    # Each path was taken: the insert error (its value blanked), the validation sample, geo-IP.
    spans = [sp for line in text.splitlines() if "resourceSpans" in line
             for rs in json.loads(line)["resourceSpans"] for ss in rs["scopeSpans"] for sp in ss["spans"]]
    (failed,) = [sp for sp in spans if sp.get("status", {}).get("code") == 2]
    assert "'…'" in failed["status"]["message"] and "INT32" in failed["status"]["message"]
    samples = [_attrs(e)["sample_errors"] for sp in spans for e in sp.get("events", [])]
    assert any("e2: bad_timestamp" in x for x in samples) and any("e4: wrong_type" in x for x in samples)
    assert {_attrs(sp).get("geo.country") for sp in spans if sp["name"] == "analytics.enrich.geo_ip"} >= {"GB", "IE"}
    # The warehouse, where user ids belong, has them, error text included.
    with duckdb.connect(str(wh), read_only=True) as con:
        assert u3 in con.execute("SELECT error FROM load_audit WHERE NOT success").fetchone()[0]


class _Receiver(trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self):
        self.spans = []
        self.metrics = []

    def Export(self, request, context):  # noqa: N802 - gRPC method name
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    self.spans.extend(ss.spans)
            return trace_service_pb2.ExportTraceServiceResponse()
        self.metrics.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


@pytest.fixture
def receiver():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    rec = _Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(rec, server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(rec, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield rec, port
    server.stop(0)


def test_otlp_grpc_export_reaches_a_loopback_receiver(tmp_path, receiver, monkeypatch):
    rec, port = receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "dqkit-test")
    sample = write_lines(tmp_path / "s.ndjson", [batch(f"b-{n}", [event(f"e{n}")]) for n in range(20)])
    res = replay(sample, tmp_path / "wh.duckdb", TelemetryConfig.from_env(tmp_path / "tel"))
    assert res.telemetry.spans_sent == res.telemetry.spans_written > 0
    assert res.telemetry.spans_not_exported == 0
    assert len(rec.spans) == res.telemetry.spans_sent
    assert {s.name for s in rec.spans} >= {"analytics.ingest_batch", "analytics.warehouse.insert"}
    assert rec.metrics, "metrics were exported too"


def test_dead_collector_never_stalls_the_replay(tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2")
    sample = write_lines(tmp_path / "s.ndjson", [batch(f"b-{n}", [event(f"e{n}")]) for n in range(20)])
    cfg = TelemetryConfig.from_env(tmp_path / "tel")
    t0 = time.perf_counter()
    res = replay(sample, tmp_path / "wh.duckdb", cfg)
    assert time.perf_counter() - t0 < 30
    assert res.ledger.loaded == 20
    assert res.telemetry.spans_sent == 0
    assert res.telemetry.spans_not_exported == res.telemetry.spans_written > 0
    assert (tmp_path / "tel" / "traces.jsonl").stat().st_size > 0
