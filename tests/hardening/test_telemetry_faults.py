"""A slow or failing collector costs dropped, counted spans — never a slow or failed replay —
and no raw user id or IP address reaches any exported file."""

import gzip
import json
import time
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from dqkit.pipeline.run import replay
from dqkit.telemetry import TelemetryConfig
from tests.conftest import batch, event, write_lines


class _Bad(trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, mode):
        self.mode = mode
        self.calls = 0

    def Export(self, request, context):  # noqa: N802
        self.calls += 1
        if self.mode == "slow":
            time.sleep(3)
        else:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "collector says no")
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            return trace_service_pb2.ExportTraceServiceResponse()
        return metrics_service_pb2.ExportMetricsServiceResponse()


@pytest.fixture(params=["slow", "erroring"])
def bad_collector(request):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    svc = _Bad(request.param)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(svc, server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(svc, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield request.param, port, svc
    server.stop(0)


def test_a_bad_collector_never_slows_or_breaks_the_replay(tmp_path, bad_collector, monkeypatch):
    mode, port, svc = bad_collector
    sample = write_lines(tmp_path / "s.ndjson", [batch(f"b-{n}", [event(f"e{n}")]) for n in range(30)])
    t0 = time.perf_counter()
    base = replay(sample, tmp_path / "base.duckdb", TelemetryConfig.from_env(tmp_path / "base", env={}))
    baseline = time.perf_counter() - t0
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    cfg = TelemetryConfig.from_env(tmp_path / "tel")
    t0 = time.perf_counter()
    res = replay(sample, tmp_path / "wh.duckdb", cfg)
    took = time.perf_counter() - t0
    assert res.ledger.loaded == base.ledger.loaded == 30
    assert svc.calls >= 1, "the collector was really asked"
    assert res.telemetry.spans_sent == 0
    assert res.telemetry.spans_not_exported == res.telemetry.spans_written > 0, "every unsent span is counted"
    # Bounded by the shutdown wait, not by the collector: a generous margin on a noisy machine.
    assert took < baseline + cfg.shutdown_timeout_s + 5


def test_no_raw_user_ids_or_ips_in_any_exported_file(tmp_path):
    from dqkit.events.generator import SampleSpec, generate

    s = generate(tmp_path / "gen", SampleSpec(events=3_000, users=200, seed=2))
    replay(s.events_path, tmp_path / "wh.duckdb", tmp_path / "tel", profiles=s.profiles_path)
    users, ips = set(), set()
    for line in gzip.open(s.events_path, "rt"):
        for e in json.loads(line)["events"]:
            if e.get("user_id"):
                users.add(e["user_id"])
            ips.add(e["client_ip"])
    exported = "".join(p.read_text() for p in (tmp_path / "tel").iterdir())
    assert exported and len(users) > 100 and len(ips) > 100
    leaked = [x for x in users | ips if f'"{x}"' in exported or f"{x}," in exported]
    assert leaked == []
