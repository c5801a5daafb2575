"""The ingestion endpoint in-process: what it accepts, what it refuses (and that a refused request
leaves nothing in the queue), and what the accepted line looks like."""

from __future__ import annotations

import base64
import gzip
import json

import pytest
from starlette.testclient import TestClient

from dqkit.events import readers
from dqkit.live.app import EndpointConfig, build_app
from dqkit.live.envelope import delivery_key
from dqkit.live.queues import LogSink, LogSource
from dqkit.pipeline.span_writer import SpanIds, delivery_trace_id

SEG = {"batch": [{"type": "track", "event": "Viewed Item", "messageId": "m-1", "userId": "u-1",
                  "timestamp": "2026-12-01T10:00:00Z", "context": {"library": {"version": "2.4.0"}}}],
       "sentAt": "2026-12-01T10:00:01Z"}


@pytest.fixture
def endpoint(tmp_path):
    sinks = []

    def make(**cfg):
        sink = LogSink(tmp_path / "q", **{k: cfg.pop(k) for k in list(cfg) if k in ("max_backlog_bytes", "max_pending")})
        sinks.append(sink)
        client = TestClient(build_app(sink, EndpointConfig(**cfg)))
        client.folder = tmp_path / "q"
        return client

    yield make
    for s in sinks:
        s.close()


def lines(folder) -> list[bytes]:
    return [r.value for r in LogSource(folder).poll(1000, 0)]


def test_segment_batch_is_stamped_and_queued(endpoint):
    c = endpoint()
    r = c.post("/v1/batch", content=json.dumps({**SEG, "writeKey": "secret"}))
    assert r.status_code == 200 and r.json() == {"success": True}
    (line,) = lines(c.folder)
    doc = json.loads(line)
    assert "writeKey" not in doc, "the write key is a credential: it must not reach the queue"
    assert doc["receivedAt"].endswith("Z") and doc["batch"] == SEG["batch"]
    # The line parses into the pipeline's frames like a sample line does, arrival time included.
    d, e = readers.Parser().parse_bodies([line], [delivery_key(line)])
    assert d.get_column("received_at").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_list() == [doc["receivedAt"]]
    assert e.get_column("event_id").to_list() == ["m-1"] and e.get_column("event_type").to_list() == ["viewed_item"]


def test_each_call_and_the_native_batch(endpoint):
    c = endpoint()
    for kind in ("track", "identify", "page", "screen"):
        assert c.post(f"/v1/{kind}", json={"messageId": f"m-{kind}", "userId": "u", "event": "E",
                                           "timestamp": "2026-12-01T10:00:00Z"}).status_code == 200
    native = {"batch_id": "b1", "client": {"platform": "ios"}, "events": [{"event_id": "e1"}]}
    assert c.post("/batch", json=native).status_code == 200
    got = [json.loads(x) for x in lines(c.folder)]
    assert [g["batch"][0]["type"] for g in got[:4]] == ["track", "identify", "page", "screen"]
    assert got[4]["batch_id"] == "b1" and got[4]["received_at"].endswith("Z")
    stamps = [g.get("receivedAt") or g["received_at"] for g in got]
    assert stamps == sorted(stamps) and len(set(stamps)) == 5, "arrival stamps are strictly increasing"


def test_gzip_body(endpoint):
    c = endpoint()
    r = c.post("/v1/batch", content=gzip.compress(json.dumps(SEG).encode()), headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200
    text = json.dumps(SEG).encode()
    two_members = gzip.compress(text[:50]) + gzip.compress(text[50:])
    assert c.post("/v1/batch", content=two_members, headers={"Content-Encoding": "gzip"}).status_code == 200
    assert [json.loads(x)["batch"] for x in lines(c.folder)] == [SEG["batch"], SEG["batch"]]


@pytest.mark.parametrize("body, headers, status, reason", [
    (b"{not json", {}, 400, "not valid JSON"),
    (b'{"batch": [{"x": NaN}]}', {}, 400, "NaN is not a JSON value"),
    (b"\xff\xfe", {}, 400, "not"),
    (b"[1, 2]", {}, 400, "must be a JSON object"),
    (b'{"batch": {"type": "track"}}', {}, 400, "\"batch\" array"),
    (b"not gzip at all", {"Content-Encoding": "gzip"}, 400, "not valid gzip"),
    (gzip.compress(b'{"batch": []}', mtime=0)[:-12], {"Content-Encoding": "gzip"}, 400, "ends early"),
    (b'{"batch": []}', {"Content-Encoding": "br"}, 415, "not supported"),
])
def test_bad_requests_get_the_reason_and_leave_nothing(endpoint, body, headers, status, reason):
    c = endpoint()
    r = c.post("/v1/batch", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert reason in r.json()["error"]
    assert lines(c.folder) == []


def test_oversized_bodies_get_413(endpoint):
    c = endpoint(max_body_bytes=1000)
    big = json.dumps({"batch": [{"messageId": "m", "properties": {"x": "y" * 2000}}]}).encode()
    assert c.post("/v1/batch", content=big).status_code == 413
    # A small gzip body that decompresses past the limit (a gzip bomb) is refused too.
    bomb = gzip.compress(b'{"batch": [], "pad": "' + b"0" * 100_000 + b'"}')
    assert len(bomb) < 1000
    r = c.post("/v1/batch", content=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413 and "decompressed" in r.json()["error"]
    assert lines(c.folder) == []


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def test_write_key(endpoint):
    c = endpoint(write_key="wk-1")
    assert c.post("/v1/batch", json=SEG).status_code == 401
    r = c.post("/v1/batch", json=SEG, headers=basic("wrong"))
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    assert c.post("/v1/batch", json={**SEG, "writeKey": "wrong"}).status_code == 401
    assert lines(c.folder) == []
    assert c.post("/v1/batch", json=SEG, headers=basic("wk-1")).status_code == 200
    assert c.post("/v1/batch", json={**SEG, "writeKey": "wk-1"}).status_code == 200
    assert len(lines(c.folder)) == 2


def test_full_queue_gets_503_with_retry_after(endpoint):
    c = endpoint(max_backlog_bytes=100)
    assert c.post("/v1/batch", json=SEG).status_code == 200  # the backlog is now past 100 bytes
    r = c.post("/v1/batch", json=SEG)
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
    assert len(lines(c.folder)) == 1
    assert c.get("/health").json()["rejected"] == {"503": 1}


def test_draining_endpoint_refuses_with_503(endpoint):
    c = endpoint()
    c.app.state.draining = True
    r = c.post("/v1/batch", json=SEG)
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    assert c.get("/health").status_code == 503
    assert lines(c.folder) == []


def test_empty_batch_is_accepted(endpoint):
    c = endpoint()
    assert c.post("/v1/batch", json={"batch": []}).status_code == 200


def test_trace_id_is_the_pipelines():
    keys = ["a" * 32, "0123456789abcdef0123456789abcdef"]
    ids = SpanIds()
    assert [delivery_trace_id(k) for k in keys] == ids.delivery_ids(keys).get_column("trace_id").to_list()
    ids.close()


def test_write_failure_leaves_nothing_half_written(tmp_path, monkeypatch):
    sink = LogSink(tmp_path / "q")
    c = TestClient(build_app(sink))
    assert c.post("/v1/batch", json=SEG).status_code == 200
    real = sink._fh.write

    def failing(data):
        real(data[: len(data) // 2])  # part of the line reaches the file, then the disk fails
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sink._fh, "write", failing)
    r = c.post("/v1/batch", json=SEG)
    assert r.status_code == 503 and "Retry-After" in r.headers
    monkeypatch.setattr(sink._fh, "write", real)
    assert c.post("/v1/batch", json=SEG).status_code == 200
    sink.close()
    got = lines(tmp_path / "q")
    assert len(got) == 2 and all(json.loads(x)["batch"] == SEG["batch"] for x in got)
