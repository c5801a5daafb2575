"""Real SDKs (Segment's and RudderStack's Python libraries) posting to the endpoint on loopback,
with a retry after a 503, then consumed into a real warehouse: every event the SDKs sent lands
exactly once and the ledgers balance from spans and from the warehouse."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest
import uvicorn
from starlette.responses import JSONResponse

from dqkit.investigate.spans import load_spans
from dqkit.live.app import EndpointConfig, build_app
from dqkit.live.consumer import ConsumerConfig, consume
from dqkit.live.queues import LogSink, QueueSpec
from dqkit.live.trace import RequestSpans
from tests.conftest import Run, assert_balanced
from tests.live.conftest import free_port

WRITE_KEY = "wk-test"


class BusyFirst:
    """Answers the first ``n`` batch requests with 503 + Retry-After, as a full queue would."""

    def __init__(self, app, n: int = 1) -> None:
        self.app, self.n, self.requests = app, n, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/v1/batch":
            self.requests += 1
            if self.n > 0:
                self.n -= 1
                await JSONResponse({"success": False, "error": "busy"}, 503, headers={"Retry-After": "1"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


@pytest.fixture
def endpoint(tmp_path):
    """The endpoint on uvicorn in a thread, over an embedded log; yields (url, wrapper, tmp)."""
    sink = LogSink(tmp_path / "q")
    spans = RequestSpans(tmp_path / "tel", sink.system, sink.topic, interval_s=0.2)
    wrapper = BusyFirst(build_app(sink, EndpointConfig(write_key=WRITE_KEY), spans))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(wrapper, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", wrapper, tmp_path
    server.should_exit = True
    thread.join(10)
    sink.close()
    spans.close()


def drain(tmp) -> Run:
    stop = threading.Event()
    stop.set()  # consume what is queued, then stop
    consume(QueueSpec("embedded", path=tmp / "q"), tmp / "wh.duckdb", tmp / "tel", config=ConsumerConfig(poll_s=0.2, metrics_interval_s=0), stop=stop)
    return Run(None, tmp / "wh.duckdb", tmp / "tel")


def check(run: Run, expected_ids: set[str]) -> None:
    rows = run.sql("SELECT event_id FROM events")
    assert sorted(r[0] for r in rows) == sorted(expected_ids), "every event sent lands exactly once"
    assert run.sql("SELECT count(*) FROM rejected_events") == [(0,)]
    assert_balanced(run)
    # Each delivery's trace starts at the endpoint: POST -> send -> analytics.ingest_batch.
    sd = load_spans(run.telemetry)
    bad = sd.con.sql("""
        SELECT i.trace_id FROM spans i
        LEFT JOIN spans s ON s.trace_id = i.trace_id AND s.span_id = i.parent_span_id AND s.name LIKE 'send %'
        LEFT JOIN spans h ON h.trace_id = s.trace_id AND h.span_id = s.parent_span_id AND h.name = 'POST /v1/batch'
        WHERE i.name = 'analytics.ingest_batch' AND h.span_id IS NULL""").fetchall()
    assert bad == [], f"ingest spans not under the endpoint's spans: {bad}"
    # Metrics while running (every chunk here) and once more at the end, each a cumulative export.
    exports = [json.loads(x) for x in (run.telemetry / "metrics.jsonl").read_text().splitlines()]
    assert len(exports) >= 2
    names = {m["name"] for e in exports for rm in e["resourceMetrics"] for sm in rm["scopeMetrics"] for m in sm["metrics"]}
    assert "analytics.pipeline.lag_seconds" in names and "analytics.events.ingested" in names


def test_segment_sdk(endpoint):
    from segment.analytics.client import Client

    url, wrapper, tmp = endpoint
    errors = []
    client = Client(WRITE_KEY, host=url, gzip=True, max_retries=5, upload_size=10, upload_interval=0.1,
                    on_error=lambda e, batch: errors.append(e))
    ids = set()
    for n in range(25):
        mid = f"seg-{n}"
        ids.add(mid)
        client.track(f"user-{n % 4}", "Viewed Item", {"n": n}, context={"os": {"name": "iOS"}, "app": {"version": "5.2.0"}},
                     message_id=mid)
    client.identify("user-1", {"plan": "pro"}, message_id="seg-identify")
    ids.add("seg-identify")
    client.flush()
    client.join()
    assert errors == []
    assert wrapper.requests > wrapper.n + 1, "the SDK retried after the 503"
    check(drain(tmp), ids)


def test_rudderstack_sdk(endpoint):
    from rudderstack.analytics.client import Client

    logging.getLogger("rudderstack").setLevel(logging.CRITICAL)
    url, wrapper, tmp = endpoint
    errors = []
    client = Client(WRITE_KEY, host=url, gzip=True, max_retries=5, upload_size=10, upload_interval=0.1,
                    on_error=lambda e, batch: errors.append(e))
    ids = set()
    for n in range(25):
        mid = f"rs-{n}"
        ids.add(mid)
        client.track(f"user-{n % 4}", "Added To Cart", {"n": n}, message_id=mid)
    client.page("user-2", "Docs", "Home", message_id="rs-page")
    ids.add("rs-page")
    client.flush()
    client.join()
    assert errors == []
    assert wrapper.requests >= 2, "the SDK retried after the 503"
    check(drain(tmp), ids)
