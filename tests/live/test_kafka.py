"""The Kafka path against a Kafka-protocol test broker: the endpoint produces (acks=all, one record
per request, traceparent header), one consumer loads while a second stands by, a killed loader is
replaced without losing or doubling anything, and each trace runs from the endpoint's request
span through the consumer process's ingest, enrich and load spans."""

from __future__ import annotations

import signal
import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from dqkit.investigate.spans import load_spans
from tests.conftest import Run, assert_balanced
from tests.live.conftest import Serve, consumer, native, post_all

EVENTS = 4


def topic_url(broker: str) -> tuple[str, str]:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    return topic, f"kafka://{broker}/{topic}"


def records(broker: str, topic: str, n: int) -> list:
    c = Consumer({"bootstrap.servers": broker, "group.id": f"check-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest"})
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    out, deadline = [], time.monotonic() + 15
    while len(out) < n and time.monotonic() < deadline:
        out += [m for m in c.consume(100, 0.2) if not m.error()]
    c.close()
    return out


def test_kafka_endpoint_two_consumers_and_trace_continuity(tmp_path, kafka_broker):
    topic, url = topic_url(kafka_broker)
    srv = Serve(tmp_path, queue=url, consumers=2)
    results = post_all(srv.url, [native(f"b{n}", EVENTS, user=f"u{n % 5}") for n in range(30)])
    assert all(code == 200 for _, code in results)
    # One record per request, keyed by user, with the W3C traceparent of the endpoint's send span.
    recs = records(kafka_broker, topic, 30)
    assert len(recs) == 30
    assert {m.key() for m in recs} == {f"u{n}".encode() for n in range(5)}
    assert all(dict(m.headers())["traceparent"].startswith(b"00-") for m in recs)
    assert len({m.partition() for m in recs}) > 1
    assert srv.stop() == 0
    log = (tmp_path / f"serve-{srv.port}.log").read_text()
    assert "standby" in log, log

    run = Run(None, srv.warehouse, srv.telemetry)
    assert run.sql("SELECT count(*) FROM events") == [(30 * EVENTS,)]
    assert_balanced(run)
    sd = load_spans(srv.telemetry)
    # Across processes: POST /batch and its send span (dqkit serve) -> analytics.ingest_batch, whose
    # parent came from the Kafka header -> analytics.enrich -> the load's insert span links back.
    chain = sd.con.sql("""
        SELECT count(DISTINCT i.trace_id),
               count(DISTINCT s.attrs['messaging.destination.partition.id']),
               bool_and(s.attrs['messaging.system'] = 'kafka' AND s.attrs['messaging.destination.name'] = ?
                        AND s.attrs['messaging.kafka.offset'] IS NOT NULL)
        FROM spans h
        JOIN spans s ON s.trace_id = h.trace_id AND s.parent_span_id = h.span_id AND s.kind = 4
        JOIN spans i ON i.trace_id = s.trace_id AND i.parent_span_id = s.span_id AND i.name = 'analytics.ingest_batch'
        JOIN spans p ON p.trace_id = i.trace_id AND p.parent_span_id = i.span_id AND p.name = 'analytics.publish_to_queue'
        JOIN spans e ON e.trace_id = p.trace_id AND e.parent_span_id = p.span_id AND e.name = 'analytics.enrich'
        JOIN span_links l ON l.link_trace_id = e.trace_id AND l.link_span_id = e.span_id AND l.name = 'analytics.warehouse.insert'
        WHERE h.name = 'POST /batch'""", params=[topic]).fetchall()[0]
    assert chain[0] == 30 and chain[1] > 1 and chain[2], chain
    # The consumer's batch receive spans: message counts, and a link to each record's send span
    # with its partition and offset.
    recv = sd.con.sql("""
        SELECT sum(try_cast(r.attrs['messaging.batch.message_count'] AS BIGINT)),
               (SELECT count(*) FROM span_links l JOIN spans s ON s.trace_id = l.link_trace_id AND s.span_id = l.link_span_id
                WHERE l.name LIKE 'receive %' AND s.kind = 4 AND l.attrs['messaging.kafka.offset'] IS NOT NULL
                  AND l.attrs['messaging.destination.partition.id'] = s.attrs['messaging.destination.partition.id']
                  AND l.attrs['messaging.kafka.offset'] = s.attrs['messaging.kafka.offset'])
        FROM spans r WHERE r.name = ? AND r.kind = 5 AND r.attrs['messaging.consumer.group.name'] = 'dqkit-loader'""",
        params=[f"receive {topic}"]).fetchall()[0]
    assert recv == (30, 30), recv


@pytest.mark.slow  # ~15 s: three processes and a takeover
def test_kafka_loader_killed_between_commits_standby_takes_over(tmp_path, kafka_broker):
    _, url = topic_url(kafka_broker)
    srv = Serve(tmp_path, queue=url, consumers=0)
    first = post_all(srv.url, [native(f"a{n}", EVENTS, user=f"u{n % 5}") for n in range(20)])
    loader = consumer(tmp_path, url, "loader.log", DQKIT_CONSUMER_CRASH_AFTER_COMMITS="1")
    time.sleep(1.0)
    standby = consumer(tmp_path, url, "standby.log")
    assert loader.wait(timeout=60) == -signal.SIGKILL  # after its warehouse commit, before the offsets
    second = post_all(srv.url, [native(f"b{n}", EVENTS, user=f"u{n % 5}") for n in range(20)])
    assert all(code == 200 for _, code in first + second)
    time.sleep(1.0)
    standby.send_signal(signal.SIGTERM)
    assert standby.wait(timeout=90) == 0
    assert srv.stop() == 0
    run = Run(None, srv.warehouse, srv.telemetry)
    assert run.sql("SELECT count(*), count(DISTINCT event_id) FROM events") == [(40 * EVENTS, 40 * EVENTS)]
    skipped = run.sql("SELECT sum(skipped_deliveries) FROM runs")[0][0]
    assert skipped > 0, "the loader's last chunk was redelivered to the standby and recognised"
    assert_balanced(run)


def test_kafka_record_over_the_size_limit_is_413_not_a_retry_forever(kafka_broker):
    from starlette.testclient import TestClient

    from dqkit.live.app import EndpointConfig, build_app
    from dqkit.live.kafka import KafkaSink

    topic, _ = topic_url(kafka_broker)
    sink = KafkaSink(kafka_broker, topic)
    try:
        c = TestClient(build_app(sink, EndpointConfig(max_body_bytes=4 << 20)))
        big = native("big", 1)
        big["events"][0]["properties"] = {"blob": "x" * (1_200_000)}
        r = c.post("/batch", json=big)
        assert r.status_code == 413 and "size limit" in r.json()["error"], r.text
        assert c.post("/batch", json=native("small", 2)).status_code == 200
    finally:
        sink.close()
    assert len(records(kafka_broker, topic, 1)) == 1
